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
    /// The value of claim `name`, if the identity carries it.
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether the identity holds `scope` (directly or through `*`).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == "*")
    }
}

/// The HTTP-level class of a denial.
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
    /// The class in words (the HTTP status is chosen from it by the gateway's
    /// [`Rejection`](crate::gateway::Rejection), in one place).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::BadRequest => "bad request",
            Self::Unavailable => "unavailable",
        }
    }
}

/// An OAuth error code (RFC 6749 §5.2, RFC 6750 §3.1), as a denial carries it and a refusal's
/// challenge and JSON body write it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `invalid_request`: the request is malformed.
    InvalidRequest,
    /// `invalid_token`: the credential is bad, expired or revoked.
    InvalidToken,
    /// `insufficient_scope`: the credential lacks a scope the request needs.
    InsufficientScope,
    /// `access_denied`: the caller is known and refused.
    AccessDenied,
    /// `temporarily_unavailable`: a provider failed (the request is refused, never allowed).
    TemporarilyUnavailable,
    /// A code a provider chose itself (a Wasm provider may name its own).
    Other(String),
}

impl ErrorCode {
    /// The code as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::AccessDenied => "access_denied",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::Other(code) => code,
        }
    }

    /// The code written `code`: a known one as its variant, any other as [`Other`](Self::Other).
    pub fn parse(code: &str) -> Self {
        [
            Self::InvalidRequest,
            Self::InvalidToken,
            Self::InsufficientScope,
            Self::AccessDenied,
            Self::TemporarilyUnavailable,
        ]
        .into_iter()
        .find(|known| known.as_str() == code)
        .unwrap_or_else(|| Self::Other(code.to_owned()))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The class of refusal.
    pub kind: DenialKind,
    /// The OAuth error code; `None` when the request simply had no credential (RFC 6750
    /// §3.1: the challenge then names no error).
    pub code: Option<ErrorCode>,
    /// Human-readable reason, free of credentials.
    pub reason: String,
}

impl Denial {
    /// The error code as written on the wire; empty when there is none.
    pub fn code_str(&self) -> &str {
        self.code.as_ref().map_or("", ErrorCode::as_str)
    }

    /// 401 `invalid_token`.
    pub fn invalid_token(reason: impl Into<String>) -> Self {
        Self {
            kind: DenialKind::Unauthenticated,
            code: Some(ErrorCode::InvalidToken),
            reason: reason.into(),
        }
    }

    /// 403 with `code`.
    pub fn forbidden(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            kind: DenialKind::Forbidden,
            code: Some(code),
            reason: reason.into(),
        }
    }

    /// 401 with no error code: the request carried no credential any provider recognised
    /// (RFC 6750 §3.1: the challenge then has no `error` attribute).
    pub fn missing_credentials() -> Self {
        Self {
            kind: DenialKind::Unauthenticated,
            code: None,
            reason: "no credentials".into(),
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(reason: impl Into<String>) -> Self {
        Self {
            kind: DenialKind::BadRequest,
            code: Some(ErrorCode::InvalidRequest),
            reason: reason.into(),
        }
    }

    /// 503 for a provider that failed: the request is refused, never allowed.
    pub fn provider_failed(reason: impl Into<String>) -> Self {
        Self {
            kind: DenialKind::Unavailable,
            code: Some(ErrorCode::TemporarilyUnavailable),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} ({code}): {}", self.kind.as_str(), self.reason),
            None => write!(f, "{}: {}", self.kind.as_str(), self.reason),
        }
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
