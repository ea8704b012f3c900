//! `[routes.upstream_auth]`: the credential the gateway presents to a route's upstream,
//! as written and checked. Building it (reading secrets, the HTTP client) is
//! [`super::UpstreamAuth::build`].
//!
//! ```toml
//! # a static header from a secret; `{secret}` is replaced by its value
//! upstream_auth = { type = "header", header = "authorization", value = "Bearer {secret}",
//!                   secret = "vault://secret/github#token" }
//! # one client-credentials token for the route, shared by every caller
//! upstream_auth = { type = "client_credentials", token_url = "https://idp/oauth/token",
//!                   client_id = "portcullis", client_secret = "env://UPSTREAM_SECRET",
//!                   scope = "mcp:read" }
//! # RFC 8693: each caller's token exchanged for one the upstream accepts
//! upstream_auth = { type = "token_exchange", token_url = "https://idp/oauth/token",
//!                   client_id = "portcullis", client_secret = "file:///run/secret",
//!                   audience = "https://upstream.example.com" }
//! ```
//!
//! The placeholder is `{secret}`, not `${secret}`: `${…}` is environment expansion in
//! every config string, applied when the file is read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::secret::SecretRef;

/// The placeholder in a `header` credential's `value`.
pub const PLACEHOLDER: &str = "{secret}";

/// RFC 8693 token type of an OAuth access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// `upstream_auth`, tagged by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UpstreamAuthSettings {
    /// A header whose value holds a secret.
    Header(HeaderSettings),
    /// One token for the route from the client-credentials grant.
    ClientCredentials(TokenSettings),
    /// Each caller's token exchanged (RFC 8693).
    TokenExchange(TokenSettings),
}

/// `type = "header"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSettings {
    /// The header's name.
    pub header: String,
    /// Its value, with `{secret}` where the secret goes (default `{secret}`).
    pub value: Option<String>,
    /// The secret, by reference.
    pub secret: SecretRef,
    /// Send it to an `http://` upstream off loopback (default false).
    #[serde(default)]
    pub allow_plain_http: bool,
}

/// `type = "client_credentials"` and `type = "token_exchange"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// The token endpoint (https; http only on loopback).
    pub token_url: String,
    /// The gateway's client id there.
    pub client_id: String,
    /// Its secret, by reference.
    pub client_secret: SecretRef,
    /// `client_secret_basic` (default) or `client_secret_post`.
    pub auth_method: Option<String>,
    /// `scope` to ask for (space-separated).
    pub scope: Option<String>,
    /// `audience` to ask for.
    pub audience: Option<String>,
    /// RFC 8707 `resource` to ask for.
    pub resource: Option<String>,
    /// PEM CA bundle for the token endpoint (relative to the config file).
    pub ca_bundle: Option<PathBuf>,
    /// Time for one token request, ms (default 10000).
    pub timeout_ms: Option<u64>,
    /// Exchange only: the most callers' tokens kept (default 10000).
    pub cache_size: Option<usize>,
    /// Exchange only: what is exchanged, `caller_token` (default: the bearer token the
    /// chain verified) or `identity` (a statement of the caller's identity signed by this
    /// gateway's authorization server, for any chain).
    pub subject: Option<String>,
    /// Exchange only, with `subject = "identity"`: the statement's `aud` (default the
    /// `token_url`).
    pub subject_audience: Option<String>,
    /// Send the token to an `http://` upstream off loopback (default false).
    #[serde(default)]
    pub allow_plain_http: bool,
}

/// What a token exchange sends as its `subject_token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeSubject {
    /// The caller's bearer token, as the chain verified it.
    CallerToken,
    /// A statement of the caller's identity signed by the gateway's authorization server,
    /// with this `aud`.
    Identity {
        /// The statement's audience.
        audience: String,
    },
}

/// How the gateway authenticates to the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-encoded id and secret.
    Basic,
    /// `client_id` and `client_secret` in the form.
    Post,
}

/// A checked `upstream_auth`.
#[derive(Debug, Clone)]
pub enum Checked {
    /// `type = "header"`.
    Header {
        /// The header.
        name: HeaderName,
        /// Text before and after `{secret}`.
        around: (String, String),
        /// The secret.
        secret: SecretRef,
    },
    /// A token grant.
    Token {
        /// Whether each caller's token is exchanged (else one client-credentials token).
        exchange: bool,
        /// The endpoint and what to ask.
        endpoint: CheckedEndpoint,
        /// Exchange only: the cache bound.
        cache_size: usize,
        /// Exchange only: what is exchanged.
        subject: ExchangeSubject,
    },
}

/// A checked token endpoint.
#[derive(Debug, Clone)]
pub struct CheckedEndpoint {
    /// Where.
    pub url: reqwest::Url,
    /// The client id.
    pub client_id: String,
    /// The secret.
    pub client_secret: SecretRef,
    /// How it is presented.
    pub method: ClientAuthMethod,
    /// `scope`, `audience`, `resource` as given.
    pub params: Vec<(&'static str, String)>,
    /// Extra CA certificates.
    pub ca_bundle: Option<PathBuf>,
    /// Per-request time.
    pub timeout: Duration,
}

/// Headers the credential may not be put in: they frame the message, name the host, or
/// carry the gateway's own identity to the upstream.
fn reserved(name: &HeaderName) -> bool {
    use http::header::*;
    [
        HOST,
        CONTENT_LENGTH,
        CONTENT_TYPE,
        TRANSFER_ENCODING,
        CONNECTION,
        TE,
        UPGRADE,
        COOKIE,
    ]
    .contains(name)
        || name.as_str().starts_with("x-portcullis-")
        || name.as_str().starts_with("x-forwarded-")
        || name.as_str().starts_with("mcp-")
}

impl UpstreamAuthSettings {
    /// Whether the credential may go to an `http://` upstream off loopback.
    pub fn allows_plain_http(&self) -> bool {
        match self {
            Self::Header(h) => h.allow_plain_http,
            Self::ClientCredentials(t) | Self::TokenExchange(t) => t.allow_plain_http,
        }
    }

    /// Checks the settings; `base_dir` anchors relative paths. The error is the key under
    /// `upstream_auth` and the reason.
    pub fn check(&self, base_dir: &Path) -> Result<Checked, (&'static str, String)> {
        match self {
            Self::Header(h) => {
                let name = HeaderName::from_bytes(h.header.trim().as_bytes())
                    .map_err(|_| ("header", format!("`{}` is not a header name", h.header)))?;
                if reserved(&name) {
                    return Err((
                        "header",
                        format!(
                            "`{name}` is managed by the gateway or frames the request; name \
                             the header the upstream reads its credential from"
                        ),
                    ));
                }
                let value = h.value.clone().unwrap_or_else(|| PLACEHOLDER.to_owned());
                let Some((before, after)) = value.split_once(PLACEHOLDER) else {
                    return Err((
                        "value",
                        format!("`{value}` has no `{PLACEHOLDER}`; write e.g. `Bearer {{secret}}`"),
                    ));
                };
                if after.contains(PLACEHOLDER) {
                    return Err(("value", format!("`{PLACEHOLDER}` may appear once")));
                }
                if HeaderValue::from_str(&value.replace(PLACEHOLDER, "x")).is_err() {
                    return Err(("value", "is not a valid header value".into()));
                }
                let secret = anchored(referenced(&h.secret, "secret")?, base_dir);
                Ok(Checked::Header {
                    name,
                    around: (before.to_owned(), after.to_owned()),
                    secret,
                })
            }
            Self::ClientCredentials(t) | Self::TokenExchange(t) => {
                let exchange = matches!(self, Self::TokenExchange(_));
                if !exchange {
                    for (key, set) in [
                        ("cache_size", t.cache_size.is_some()),
                        ("subject", t.subject.is_some()),
                        ("subject_audience", t.subject_audience.is_some()),
                    ] {
                        if set {
                            return Err((
                                key,
                                "applies to `token_exchange` only: a client-credentials token \
                                 is one per route, for no caller in particular"
                                    .into(),
                            ));
                        }
                    }
                }
                let subject = match (t.subject.as_deref(), &t.subject_audience) {
                    (None | Some("caller_token"), None) => ExchangeSubject::CallerToken,
                    (None | Some("caller_token"), Some(_)) => {
                        return Err((
                            "subject_audience",
                            "applies to `subject = \"identity\"` only".into(),
                        ));
                    }
                    (Some("identity"), audience) => ExchangeSubject::Identity {
                        audience: audience.clone().unwrap_or_else(|| t.token_url.clone()),
                    },
                    (Some(other), _) => {
                        return Err((
                            "subject",
                            format!(
                                "`{other}` is not a subject; use `caller_token` (default) or \
                                 `identity`"
                            ),
                        ));
                    }
                };
                let url = reqwest::Url::parse(&t.token_url)
                    .map_err(|_| ("token_url", format!("`{}` is not a URL", t.token_url)))?;
                crate::engine::jwt::fetchable(&url)
                    .map_err(|reason| ("token_url", format!("`{}` {reason}", t.token_url)))?;
                if t.client_id.is_empty() {
                    return Err(("client_id", "is empty".into()));
                }
                let method = match t.auth_method.as_deref() {
                    None | Some("client_secret_basic") => ClientAuthMethod::Basic,
                    Some("client_secret_post") => ClientAuthMethod::Post,
                    Some(other) => {
                        return Err((
                            "auth_method",
                            format!(
                                "`{other}` is not supported; use `client_secret_basic` \
                                 (default) or `client_secret_post`"
                            ),
                        ));
                    }
                };
                let mut params = Vec::new();
                for (key, value) in [
                    ("scope", &t.scope),
                    ("audience", &t.audience),
                    ("resource", &t.resource),
                ] {
                    if let Some(value) = value {
                        if value.trim().is_empty() {
                            return Err((key, "is empty; remove it or give a value".into()));
                        }
                        params.push((key, value.clone()));
                    }
                }
                if let Some(resource) = &t.resource
                    && reqwest::Url::parse(resource).is_err()
                {
                    return Err((
                        "resource",
                        format!("`{resource}` is not an absolute URI (RFC 8707)"),
                    ));
                }
                let timeout = match t.timeout_ms {
                    None => Duration::from_secs(10),
                    Some(0) => return Err(("timeout_ms", "`0` would fail every fetch".into())),
                    Some(ms) => Duration::from_millis(ms),
                };
                let cache_size = match t.cache_size {
                    None => 10_000,
                    Some(0) => return Err(("cache_size", "`0` would keep no token".into())),
                    Some(n) => n,
                };
                Ok(Checked::Token {
                    exchange,
                    endpoint: CheckedEndpoint {
                        url,
                        client_id: t.client_id.clone(),
                        client_secret: anchored(
                            referenced(&t.client_secret, "client_secret")?,
                            base_dir,
                        ),
                        method,
                        params,
                        ca_bundle: t.ca_bundle.as_ref().map(|p| base_dir.join(p)),
                        timeout,
                    },
                    cache_size,
                    subject,
                })
            }
        }
    }
}

fn referenced<'a>(
    secret: &'a SecretRef,
    key: &'static str,
) -> Result<&'a SecretRef, (&'static str, String)> {
    if secret.is_literal() {
        Err((
            key,
            "is a literal value; give it by reference (`env://VAR`, `file:///path` or \
             `vault://mount/path#field`) so the secret stays out of the config file"
                .into(),
        ))
    } else {
        Ok(secret)
    }
}

fn anchored(secret: &SecretRef, base_dir: &Path) -> SecretRef {
    match secret {
        SecretRef::File(path) if path.is_relative() => SecretRef::File(base_dir.join(path)),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Checked, String> {
        let settings: UpstreamAuthSettings =
            toml::from_str(text).map_err(|e| e.message().to_owned())?;
        settings
            .check(Path::new("/etc/portcullis"))
            .map_err(|(key, reason)| format!("{key}: {reason}"))
    }

    #[test]
    fn a_header_credential_splits_around_its_placeholder() {
        let Checked::Header { name, around, .. } = parse(
            "type = \"header\"\nheader = \"Authorization\"\nvalue = \"Bearer {secret}\"\n\
             secret = \"env://T\"",
        )
        .expect("valid") else {
            panic!("not a header")
        };
        assert_eq!(name, "authorization");
        assert_eq!(around, ("Bearer ".to_owned(), String::new()));
    }

    #[test]
    fn bad_settings_name_their_key() {
        let cases = [
            (
                "type = \"header\"\nheader = \"x\"\nvalue = \"k\"\nsecret = \"env://T\"",
                "value",
            ),
            (
                "type = \"header\"\nheader = \"host\"\nsecret = \"env://T\"",
                "header",
            ),
            (
                "type = \"header\"\nheader = \"x-portcullis-subject\"\nsecret = \"env://T\"",
                "header",
            ),
            (
                "type = \"header\"\nheader = \"x\"\nsecret = \"hunter2\"",
                "secret",
            ),
            (
                "type = \"client_credentials\"\ntoken_url = \"http://idp.example/t\"\n\
                 client_id = \"a\"\nclient_secret = \"env://S\"",
                "token_url",
            ),
            (
                "type = \"client_credentials\"\ntoken_url = \"https://idp.example/t\"\n\
                 client_id = \"a\"\nclient_secret = \"env://S\"\ncache_size = 3",
                "cache_size",
            ),
            (
                "type = \"client_credentials\"\ntoken_url = \"https://idp.example/t\"\n\
                 client_id = \"a\"\nclient_secret = \"env://S\"\nsubject = \"identity\"",
                "subject",
            ),
            (
                "type = \"token_exchange\"\ntoken_url = \"https://idp.example/t\"\n\
                 client_id = \"a\"\nclient_secret = \"env://S\"\nsubject = \"user\"",
                "subject",
            ),
            (
                "type = \"token_exchange\"\ntoken_url = \"https://idp.example/t\"\n\
                 client_id = \"a\"\nclient_secret = \"env://S\"\nsubject_audience = \"x\"",
                "subject_audience",
            ),
            (
                "type = \"token_exchange\"\ntoken_url = \"https://idp.example/t\"\n\
                 client_id = \"a\"\nclient_secret = \"env://S\"\nauth_method = \"jwt\"",
                "auth_method",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.starts_with(key), "{text}: {err}");
        }
        let err = parse("type = \"header\"\nheader = \"x\"\nsecret = \"env://T\"\nextra = 1")
            .expect_err("unknown key");
        assert!(err.contains("extra"), "{err}");
    }
}
