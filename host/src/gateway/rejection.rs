//! Every refusal the gateway answers, as one type. The status code, the
//! `WWW-Authenticate` challenge and the JSON body of each case are chosen here and nowhere
//! else (RFC 6750 §3, RFC 9728 §5.1, MCP authorization).
//!
//! | case | status | challenge |
//! |---|---|---|
//! | no credential | 401 | `Bearer resource_metadata="…", scope="…"` |
//! | bad credential | 401 | `Bearer error="invalid_token", error_description="…", resource_metadata="…"` |
//! | missing scope | 403 | `Bearer error="insufficient_scope", scope="…", resource_metadata="…"` |
//! | malformed request | 400 | `Bearer error="invalid_request", error_description="…", resource_metadata="…"` (only for credential problems) |
//! | other refusals | 403, 404, 405, 408, 413, 415, 502, 503, 504 | none |
//!
//! Every body is `{"error": "…", "error_description": "…"}`.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use super::body::{Body, full};
use crate::verdict::{Denial, DenialKind, ErrorCode};

/// What a challenge points the client at: the route's metadata document and the scopes to
/// ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeInfo {
    /// URL of the RFC 9728 metadata document for the resource.
    pub metadata_url: String,
    /// Scopes a client should request when it has nothing more specific.
    pub default_scopes: Vec<String>,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No provider recognised a credential (401, no `error` attribute).
    MissingCredentials {
        /// Scopes the request needs (or the resource's defaults).
        scopes: Vec<String>,
        /// Where the metadata lives.
        metadata_url: String,
    },
    /// A credential was presented and refused (401 `invalid_token`).
    InvalidToken {
        /// Why.
        description: String,
        /// Where the metadata lives.
        metadata_url: String,
    },
    /// The caller lacks scopes (403 `insufficient_scope`).
    InsufficientScope {
        /// Every scope the request needs.
        scopes: Vec<String>,
        /// Why.
        description: String,
        /// Where the metadata lives.
        metadata_url: String,
    },
    /// The request is malformed (400 `invalid_request`); `metadata_url` is set when the
    /// problem is the credential, to add a challenge.
    InvalidRequest {
        /// Why.
        description: String,
        /// Where the metadata lives, for credential problems.
        metadata_url: Option<String>,
    },
    /// The caller is known but refused by a policy (403).
    Forbidden {
        /// The OAuth error code (`access_denied`, or a provider's own).
        code: ErrorCode,
        /// Why.
        description: String,
    },
    /// A present `Origin` is not allowed (403).
    OriginNotAllowed {
        /// The origin.
        origin: String,
    },
    /// A rate limit is spent (429).
    TooManyRequests(super::rate_limit::Exceeded),
    /// The `Host` is not one this gateway answers to (421): DNS rebinding, or a wrong name.
    HostNotAllowed {
        /// The host as sent.
        host: String,
    },
    /// A provider failed; failing closed (503).
    Unavailable {
        /// Why.
        description: String,
    },
    /// No route serves the path (404).
    NotFound,
    /// The `Mcp-Session-Id` is not a session this caller opened on this route (404, as the
    /// MCP transport answers for a session that no longer exists).
    SessionNotFound,
    /// The method is not served here (405).
    MethodNotAllowed {
        /// Allowed methods, for the `Allow` header.
        allow: &'static str,
    },
    /// The body is in a media type, charset or content coding the gateway does not judge
    /// (415): an MCP body must be `application/json` in UTF-8, as sent.
    UnsupportedMediaType {
        /// Why.
        description: String,
    },
    /// The client did not finish sending a body the gateway buffers before the deadline
    /// (408, `server.body_timeout_secs`).
    RequestTimeout {
        /// The deadline.
        timeout: std::time::Duration,
    },
    /// The body is larger than the buffering limit (413).
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The upstream could not be reached or broke (502).
    BadGateway {
        /// Why.
        description: String,
    },
    /// The upstream did not answer in time (504).
    GatewayTimeout {
        /// Why.
        description: String,
    },
}

impl Rejection {
    /// The refusal for an engine denial. `required` is every scope the request needs.
    pub fn from_denial(denial: &Denial, required: &[String], info: &ChallengeInfo) -> Self {
        let metadata_url = info.metadata_url.clone();
        match denial.kind {
            DenialKind::Unauthenticated if denial.code.is_none() => Self::MissingCredentials {
                scopes: if required.is_empty() {
                    info.default_scopes.clone()
                } else {
                    required.to_vec()
                },
                metadata_url,
            },
            // RFC 6750 defines one code for a refused credential; whatever code a provider
            // chose, the challenge says `invalid_token` so that every client understands it.
            DenialKind::Unauthenticated => Self::InvalidToken {
                description: denial.reason.clone(),
                metadata_url,
            },
            DenialKind::Forbidden if denial.code == Some(ErrorCode::InsufficientScope) => {
                Self::InsufficientScope {
                    scopes: required.to_vec(),
                    description: denial.reason.clone(),
                    metadata_url,
                }
            }
            DenialKind::Forbidden => Self::Forbidden {
                code: denial.code.clone().unwrap_or(ErrorCode::AccessDenied),
                description: denial.reason.clone(),
            },
            DenialKind::BadRequest => Self::InvalidRequest {
                description: denial.reason.clone(),
                metadata_url: Some(metadata_url),
            },
            DenialKind::Unavailable => Self::Unavailable {
                description: denial.reason.clone(),
            },
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingCredentials { .. } | Self::InvalidToken { .. } => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope { .. }
            | Self::Forbidden { .. }
            | Self::OriginNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::HostNotAllowed { .. } => StatusCode::MISDIRECTED_REQUEST,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound | Self::SessionNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `WWW-Authenticate` value, for the cases that carry one.
    pub fn challenge(&self) -> Option<String> {
        match self {
            Self::MissingCredentials {
                scopes,
                metadata_url,
            } => {
                let mut value = format!("Bearer resource_metadata=\"{}\"", quoted(metadata_url));
                if !scopes.is_empty() {
                    value.push_str(&format!(", scope=\"{}\"", quoted(&scopes.join(" "))));
                }
                Some(value)
            }
            Self::InvalidToken {
                description,
                metadata_url,
            } => Some(format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\", resource_metadata=\"{}\"",
                quoted(description),
                quoted(metadata_url)
            )),
            Self::InsufficientScope {
                scopes,
                metadata_url,
                ..
            } => Some(format!(
                "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\"",
                quoted(&scopes.join(" ")),
                quoted(metadata_url)
            )),
            Self::InvalidRequest {
                description,
                metadata_url: Some(metadata_url),
            } => Some(format!(
                "Bearer error=\"invalid_request\", error_description=\"{}\", resource_metadata=\"{}\"",
                quoted(description),
                quoted(metadata_url)
            )),
            _ => None,
        }
    }

    /// `(error, error_description)` of the JSON body.
    pub fn error_body(&self) -> (String, String) {
        let (error, description): (&str, String) = match self {
            Self::MissingCredentials { .. } => (
                "unauthorized",
                "this resource needs credentials; see WWW-Authenticate".into(),
            ),
            Self::InvalidToken { description, .. } => ("invalid_token", description.clone()),
            Self::InsufficientScope { description, .. } => {
                ("insufficient_scope", description.clone())
            }
            Self::InvalidRequest { description, .. } => ("invalid_request", description.clone()),
            Self::Forbidden { code, description } => (code.as_str(), description.clone()),
            Self::OriginNotAllowed { origin } => (
                "forbidden_origin",
                format!("origin `{origin}` is not allowed to call this gateway"),
            ),
            Self::TooManyRequests(exceeded) => (
                "rate_limited",
                format!(
                    "the rate limit `{}` is spent; try again in {} s",
                    exceeded.limit, exceeded.retry_after
                ),
            ),
            Self::HostNotAllowed { host } => (
                "misdirected_request",
                format!(
                    "this gateway does not answer to the host `{host}` (see `server.allowed_hosts`)"
                ),
            ),
            Self::Unavailable { description } => ("temporarily_unavailable", description.clone()),
            Self::NotFound => ("not_found", "no route serves this path".into()),
            Self::SessionNotFound => (
                "session_not_found",
                "no MCP session with this id was opened by this caller here; start a new one \
                 with `initialize`"
                    .into(),
            ),
            Self::MethodNotAllowed { allow } => (
                "method_not_allowed",
                format!("this endpoint answers {allow}"),
            ),
            Self::RequestTimeout { timeout } => (
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs_f64()
                ),
            ),
            Self::PayloadTooLarge { limit } => (
                "request_too_large",
                format!("the request body is larger than {limit} bytes"),
            ),
            Self::UnsupportedMediaType { description } => {
                ("unsupported_media_type", description.clone())
            }
            Self::BadGateway { description } => ("bad_gateway", description.clone()),
            Self::GatewayTimeout { description } => ("gateway_timeout", description.clone()),
        };
        (error.to_owned(), description)
    }

    /// The complete response.
    pub fn into_response(self) -> Response<Body> {
        let (error, description) = self.error_body();
        let body = serde_json::json!({ "error": error, "error_description": description });
        let mut response = Response::new(full(Bytes::from(body.to_string())));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        if let Some(challenge) = self.challenge()
            && let Ok(value) = HeaderValue::from_str(&challenge)
        {
            headers.insert(WWW_AUTHENTICATE, value);
        }
        if let Self::MethodNotAllowed { allow } = self {
            headers.insert(http::header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Self::TooManyRequests(exceeded) = &self {
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(exceeded.retry_after),
            );
            for (name, value) in [
                ("ratelimit-policy", &exceeded.policy),
                ("ratelimit", &exceeded.state),
            ] {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.insert(http::HeaderName::from_static(name), value);
                }
            }
        }
        response
    }
}

/// Makes `text` safe inside a quoted challenge attribute. RFC 6750 §3 allows only
/// `%x20-21 / %x23-5B / %x5D-7E` in `error_description` and `scope`, so `"` and `\` become
/// `'` and `/`, and anything else outside printable ASCII becomes `?`.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ChallengeInfo {
        ChallengeInfo {
            metadata_url: "https://gw.test/.well-known/oauth-protected-resource/mcp".into(),
            default_scopes: vec!["mcp:read".into()],
        }
    }

    #[test]
    fn missing_credentials_challenge_names_metadata_and_scopes() {
        let r = Rejection::from_denial(&Denial::missing_credentials(), &[], &info());
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.challenge().as_deref(),
            Some(
                "Bearer resource_metadata=\"https://gw.test/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:read\""
            )
        );
    }

    #[test]
    fn descriptions_cannot_break_out_of_the_quoted_string() {
        let r = Rejection::from_denial(&Denial::invalid_token("bad \"x\"\\\n"), &[], &info());
        let challenge = r.challenge().expect("has a challenge");
        assert!(
            challenge.contains("error_description=\"bad 'x'/?\""),
            "got: {challenge}"
        );
    }

    #[test]
    fn provider_codes_map_to_rfc_6750_codes() {
        let denial = Denial {
            kind: DenialKind::Unauthenticated,
            code: Some(ErrorCode::parse("expired")),
            reason: "r".into(),
        };
        let r = Rejection::from_denial(&denial, &[], &info());
        assert!(matches!(r, Rejection::InvalidToken { .. }));
        let scope = Rejection::from_denial(
            &Denial::forbidden(ErrorCode::InsufficientScope, "missing admin"),
            &["admin".into(), "mcp:read".into()],
            &info(),
        );
        assert_eq!(scope.status(), StatusCode::FORBIDDEN);
        assert!(scope.challenge().is_some_and(|c| {
            c.starts_with("Bearer error=\"insufficient_scope\", scope=\"admin mcp:read\"")
        }));
    }
}
