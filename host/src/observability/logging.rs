//! The audit line: one per decision, built by the gateway's admission (which subscriber writes
//! it is the application's choice; the `portcullis` binary installs one in text or JSON).
//!
//! The audit line is one `INFO` event per decision on the `portcullis::audit` target with
//! the route, subject, provider, verdict, reason and status. It never carries a credential:
//! reasons come from denials, which by contract name no token, and no header value is
//! logged anywhere in the gateway.
//!
//! Every text field goes through [`escape_control`]: much of it is chosen by the client,
//! a token's issuer or a Wasm provider.

use crate::log_text::escape_control;

/// One decision, as the audit log records it.
#[derive(Debug, Clone, Copy)]
pub struct AuditRecord<'a> {
    /// Route path prefix (or the forward-auth path).
    pub route: &'a str,
    /// Authenticated subject, if any.
    pub subject: Option<&'a str>,
    /// Provider that decided (or `-`).
    pub provider: &'a str,
    /// Whether the request was let through.
    pub verdict: AuditVerdict,
    /// Why, free of credentials.
    pub reason: &'a str,
    /// HTTP status answered (or that the upstream will answer, for allows: 0 until known).
    pub status: u16,
    /// HTTP method.
    pub method: &'a str,
    /// Request path.
    pub path: &'a str,
}

/// An audit line's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditVerdict {
    /// Let through (the status says how it was answered).
    Allow,
    /// Refused.
    Deny,
}

impl AuditVerdict {
    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// Whether audit lines are written at all (`RUST_LOG` may turn them off), so a caller can
/// skip gathering what only the audit line needs.
pub fn audit_enabled() -> bool {
    tracing::enabled!(target: "portcullis::audit", tracing::Level::INFO)
}

/// Writes the audit line for one decision. Every text field is escaped with
/// [`escape_control`].
pub fn audit(record: &AuditRecord<'_>) {
    tracing::info!(
        target: "portcullis::audit",
        route = &*escape_control(record.route),
        method = &*escape_control(record.method),
        path = &*escape_control(record.path),
        subject = &*escape_control(record.subject.unwrap_or("-")),
        provider = &*escape_control(record.provider),
        verdict = record.verdict.as_str(),
        reason = &*escape_control(record.reason),
        status = record.status,
        "decision"
    );
}
