//! What a provider or the whole engine concludes about a request.

use std::fmt;

/// Who the caller is, as established by an authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Stable identifier of the caller.
    pub subject: String,
    /// Scopes held; `*` holds every scope.
    pub scopes: Vec<String>,
    /// Extra facts (tenant, e-mail, client id, …).
    pub claims: Vec<(String, String)>,
}

impl Identity {
    /// Whether the identity holds `scope` (directly or through `*`).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == "*")
    }
}

/// The HTTP-level class of a denial; the status code is chosen from it in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialKind {
    /// The credential is missing or bad (401).
    Unauthenticated,
    /// The caller is known but not allowed (403).
    Forbidden,
    /// The request is malformed (400).
    BadRequest,
    /// A provider failed; failing closed (503).
    Unavailable,
}

impl DenialKind {
    /// The HTTP status for this kind of denial.
    pub fn status(self) -> u16 {
        match self {
            Self::Unauthenticated => 401,
            Self::Forbidden => 403,
            Self::BadRequest => 400,
            Self::Unavailable => 503,
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The class of refusal.
    pub kind: DenialKind,
    /// OAuth error code (`invalid_token`, `insufficient_scope`, `invalid_request`, …);
    /// empty when the request simply had no credential.
    pub code: String,
    /// Human-readable reason, free of credentials.
    pub reason: String,
}

impl Denial {
    /// 401 `invalid_token`.
    pub fn invalid_token(reason: impl Into<String>) -> Self {
        Self {
            kind: DenialKind::Unauthenticated,
            code: "invalid_token".into(),
            reason: reason.into(),
        }
    }

    /// 403 with `code`.
    pub fn forbidden(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            kind: DenialKind::Forbidden,
            code: code.into(),
            reason: reason.into(),
        }
    }

    /// 401 with no error code: the request carried no credential any provider recognised
    /// (RFC 6750 §3.1: the challenge then has no `error` attribute).
    pub fn missing_credentials() -> Self {
        Self {
            kind: DenialKind::Unauthenticated,
            code: String::new(),
            reason: "no credentials".into(),
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(reason: impl Into<String>) -> Self {
        Self {
            kind: DenialKind::BadRequest,
            code: "invalid_request".into(),
            reason: reason.into(),
        }
    }

    /// 503 for a provider that failed: the request is refused, never allowed.
    pub fn provider_failed(reason: impl Into<String>) -> Self {
        Self {
            kind: DenialKind::Unavailable,
            code: "temporarily_unavailable".into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind.status(), self.code, self.reason)
    }
}

/// An authenticator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This is the caller; stop.
    Allow(Identity),
    /// The credential was for this provider and it is bad; stop.
    Deny(Denial),
    /// No credential of this provider's kind; try the next.
    Abstain,
}
