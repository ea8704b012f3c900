//! Log set-up (text or JSON lines through `tracing`) and the audit line.
//!
//! The audit line is one `INFO` event per decision on the `portcullis::audit` target with
//! the route, subject, provider, verdict, reason and status. It never carries a credential:
//! reasons come from denials, which by contract name no token, and no header value is
//! logged anywhere in the gateway.

use tracing_subscriber::EnvFilter;

use crate::config::model::LogFormat;

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), in `format`.
/// Returns an error when a subscriber is already installed.
pub fn init_logging(format: LogFormat) -> Result<(), tracing_subscriber::util::TryInitError> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_target(true))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init(),
    }
}

/// Logs to stderr, filtered by `RUST_LOG`, only when `RUST_LOG` is set: for commands whose
/// stdout is their report (`eval`), so a provider's `log` lines can be seen while debugging.
pub fn init_stderr_logging_from_env() {
    use tracing_subscriber::util::SubscriberInitExt as _;
    let Ok(filter) = EnvFilter::try_from_default_env() else {
        return;
    };
    // A second initialisation (tests, embedding) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .finish()
        .try_init();
}

/// One decision, as the audit log records it.
#[derive(Debug, Clone, Copy)]
pub struct AuditRecord<'a> {
    /// Route path prefix (or the forward-auth path).
    pub route: &'a str,
    /// Authenticated subject, if any.
    pub subject: Option<&'a str>,
    /// Provider that decided (or `-`).
    pub provider: &'a str,
    /// `allow` or `deny`.
    pub verdict: &'a str,
    /// Why, free of credentials.
    pub reason: &'a str,
    /// HTTP status answered (or that the upstream will answer, for allows: 0 until known).
    pub status: u16,
    /// HTTP method.
    pub method: &'a str,
    /// Request path.
    pub path: &'a str,
}

/// Whether audit lines are written at all (`RUST_LOG` may turn them off), so a caller can
/// skip gathering what only the audit line needs.
pub fn audit_enabled() -> bool {
    tracing::enabled!(target: "portcullis::audit", tracing::Level::INFO)
}

/// Writes the audit line for one decision.
pub fn audit(record: &AuditRecord<'_>) {
    tracing::info!(
        target: "portcullis::audit",
        route = record.route,
        method = record.method,
        path = record.path,
        subject = record.subject.unwrap_or("-"),
        provider = record.provider,
        verdict = record.verdict,
        reason = record.reason,
        status = record.status,
        "decision"
    );
}
