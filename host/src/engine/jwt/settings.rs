//! The `jwt` provider's settings as written in config, and their validation into what the
//! validator runs with.
//!
//! ```toml
//! [providers.corp-jwt]
//! type = "jwt"
//! issuer = "https://auth.example.com"
//! audience = "https://mcp.example.com/mcp"      # or a list
//! discovery = true                               # or jwks / jwks_file / jwks_url / shared_secret
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::engine::api_key::{CredentialLocation, LocationError};
use crate::engine::jwt::keys::JwksError;
use crate::secret::{SecretError, SecretRef};

/// Algorithms accepted by default: every asymmetric one `jsonwebtoken` verifies.
pub(super) const ASYMMETRIC_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The largest `token_cache_size` accepted.
pub(crate) const MAX_TOKEN_CACHE_SIZE: usize = 1_000_000;

const HMAC_ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// The `[providers.NAME]` table of a `jwt` provider (without its `type` key). One provider
/// trusts one issuer; put several `jwt` providers in a chain for several issuers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// The `iss` this provider trusts, exactly as the tokens carry it.
    pub issuer: String,
    /// Accepted `aud` values: one string or a list; the token must name at least one.
    pub audience: Audience,
    /// Accepted `alg` values. Default: RS256/384/512, PS256/384/512, ES256/384 and EdDSA;
    /// with `shared_secret`: HS256/384/512, and then only those.
    #[serde(default)]
    pub algorithms: Option<Vec<Algorithm>>,
    /// Key source: an inline JWKS document (JSON).
    #[serde(default)]
    pub jwks: Option<String>,
    /// Key source: a JWKS file, read at load.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Key source: a JWKS URL (https, or http on a loopback address), cached.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Key source: OIDC discovery from `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    /// Key source: an `env://` or `file://` reference to an HMAC secret of at least 32
    /// bytes; tokens must then be HS*, never anything else.
    #[serde(default)]
    pub shared_secret: Option<SecretRef>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (default 30, at most 600).
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Claim holding the scopes. Default: `scope` (space-separated), else `scp` (array or
    /// space-separated).
    #[serde(default)]
    pub scope_claim: Option<String>,
    /// Claim holding the subject (default `sub`).
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Claims copied into the identity's claims.
    #[serde(default)]
    pub claims: Vec<String>,
    /// Header carrying the token (default `authorization`).
    #[serde(default)]
    pub header: Option<String>,
    /// Auth scheme before the token (default `Bearer` on `authorization`, else none).
    #[serde(default)]
    pub scheme: Option<String>,
    /// Least time between two fetches of the key set, in seconds (default 10); an unknown
    /// `kid` inside this window is refused without asking the IdP.
    #[serde(default = "default_min_refetch")]
    pub min_refetch_interval_secs: u64,
    /// Timeout of one key-set or discovery request, in seconds (default 5).
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_secs: u64,
    /// How many verified tokens to remember, so a repeated token skips the signature check
    /// (default 1024; 0 turns the cache off). See the `verified` module for why a hit is as
    /// strict as a full check.
    #[serde(default = "default_token_cache_size")]
    pub token_cache_size: usize,
}

fn default_leeway() -> u64 {
    30
}
fn default_subject_claim() -> String {
    "sub".into()
}
fn default_min_refetch() -> u64 {
    10
}
fn default_fetch_timeout() -> u64 {
    5
}
fn default_token_cache_size() -> usize {
    super::verified::DEFAULT_TOKEN_CACHE_SIZE
}

/// One audience or several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience(pub Vec<String>);

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AudienceVisitor;
        impl<'de> Visitor<'de> for AudienceVisitor {
            type Value = Audience;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Audience, E> {
                Ok(Audience(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Audience, A::Error> {
                let mut all = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    all.push(item);
                }
                Ok(Audience(all))
            }
        }
        deserializer.deserialize_any(AudienceVisitor)
    }
}

/// A `jwt` provider's settings that cannot be used. Messages name the provider and the
/// setting, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    /// `issuer` is empty.
    #[error("provider `{0}`: `issuer` is empty; set it to the `iss` your tokens carry")]
    EmptyIssuer(String),
    /// `audience` is empty.
    #[error(
        "provider `{0}`: `audience` is empty; set it to this resource's URL (the `aud` tokens carry)"
    )]
    EmptyAudience(String),
    /// Not exactly one key source.
    #[error(
        "provider `{provider}`: set exactly one key source: `jwks`, `jwks_file`, `jwks_url`, \
         `discovery = true` or `shared_secret` (found {found})"
    )]
    KeySource {
        /// The provider.
        provider: String,
        /// The sources set, or `none`.
        found: String,
    },
    /// `algorithms` mixes HMAC and public-key algorithms, or lists HS* without a secret.
    #[error("provider `{provider}`: `algorithms` lists `{algorithm:?}`; {fix}")]
    Algorithm {
        /// The provider.
        provider: String,
        /// The offending algorithm.
        algorithm: Algorithm,
        /// What to do.
        fix: &'static str,
    },
    /// `algorithms` is an empty list.
    #[error("provider `{0}`: `algorithms` is empty; remove it for the default or list some")]
    NoAlgorithms(String),
    /// `token_cache_size` is too large.
    #[error(
        "provider `{provider}`: `token_cache_size = {value}` is above {MAX_TOKEN_CACHE_SIZE}; \
         a few thousand covers the tokens in use at once (0 turns the cache off)"
    )]
    TokenCacheSize {
        /// The provider.
        provider: String,
        /// The bad value.
        value: usize,
    },
    /// `leeway_secs` is too large.
    #[error("provider `{provider}`: `leeway_secs = {value}` is above 600; fix the clocks instead")]
    Leeway {
        /// The provider.
        provider: String,
        /// The bad value.
        value: u64,
    },
    /// `fetch_timeout_secs` is zero.
    #[error("provider `{0}`: `fetch_timeout_secs` must be at least 1")]
    FetchTimeout(String),
    /// A URL (`jwks_url`, or `issuer` with discovery) is unusable.
    #[error("provider `{provider}`: `{key} = \"{value}\"` {reason}")]
    Url {
        /// The provider.
        provider: String,
        /// The setting.
        key: &'static str,
        /// The bad value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `jwks` or `jwks_file` is not a usable JWKS.
    #[error("provider `{provider}`: `{key}` is {source}")]
    Jwks {
        /// The provider.
        provider: String,
        /// `jwks` or `jwks_file`.
        key: &'static str,
        /// What is wrong.
        source: JwksError,
    },
    /// `jwks_file` cannot be read.
    #[error("provider `{provider}`: cannot read `jwks_file = \"{}\"`: {source}", path.display())]
    JwksFile {
        /// The provider.
        provider: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `shared_secret` is a literal.
    #[error(
        "provider `{0}`: `shared_secret` must be a reference: put the secret in an environment \
         variable or a file and write `shared_secret = \"env://VAR\"` or `\"file:///path\"`"
    )]
    LiteralSecret(String),
    /// `shared_secret` cannot be read.
    #[error("provider `{provider}`: `shared_secret`: {source}")]
    Secret {
        /// The provider.
        provider: String,
        /// Why.
        source: SecretError,
    },
    /// `shared_secret` is shorter than 32 bytes.
    #[error(
        "provider `{provider}`: `shared_secret` is {length} bytes; HMAC secrets need at least 32"
    )]
    ShortSecret {
        /// The provider.
        provider: String,
        /// Its length.
        length: usize,
    },
    /// `header` or `scheme` is unusable.
    #[error("provider `{provider}`: {source}")]
    Location {
        /// The provider.
        provider: String,
        /// What is wrong.
        source: LocationError,
    },
    /// `subject_claim` or `scope_claim` is empty.
    #[error("provider `{provider}`: `{key}` is empty; name a claim or remove the setting")]
    EmptyClaim {
        /// The provider.
        provider: String,
        /// The setting.
        key: &'static str,
    },
    /// The HTTP client cannot be built.
    #[error("provider `{provider}`: cannot build the HTTP client for key fetches: {source}")]
    HttpClient {
        /// The provider.
        provider: String,
        /// Why.
        source: reqwest::Error,
    },
}

/// Where the keys come from, validated.
#[derive(Debug)]
pub(super) enum KeySourceSetting {
    Static { key: &'static str, json: Vec<u8> },
    SharedSecret(Vec<u8>),
    Url(reqwest::Url),
    Discovery(reqwest::Url),
}

/// Settings checked and resolved; what `JwtValidator::new` builds from.
#[derive(Debug)]
pub(super) struct Checked {
    pub location: CredentialLocation,
    pub algorithms: Vec<Algorithm>,
    pub source: KeySourceSetting,
    pub min_refetch_interval: Duration,
    pub fetch_timeout: Duration,
}

impl JwtSettings {
    /// Validates everything but the key set's content.
    pub(super) fn check(&self, provider: &str) -> Result<Checked, JwtConfigError> {
        let p = || provider.to_owned();
        if self.issuer.trim().is_empty() {
            return Err(JwtConfigError::EmptyIssuer(p()));
        }
        if self.audience.0.iter().all(|a| a.trim().is_empty()) {
            return Err(JwtConfigError::EmptyAudience(p()));
        }
        if self.leeway_secs > 600 {
            return Err(JwtConfigError::Leeway {
                provider: p(),
                value: self.leeway_secs,
            });
        }
        if self.token_cache_size > MAX_TOKEN_CACHE_SIZE {
            return Err(JwtConfigError::TokenCacheSize {
                provider: p(),
                value: self.token_cache_size,
            });
        }
        if self.fetch_timeout_secs == 0 {
            return Err(JwtConfigError::FetchTimeout(p()));
        }
        for (key, value) in [
            ("subject_claim", Some(&self.subject_claim)),
            ("scope_claim", self.scope_claim.as_ref()),
        ] {
            if value.is_some_and(|v| v.is_empty()) {
                return Err(JwtConfigError::EmptyClaim { provider: p(), key });
            }
        }
        let location =
            CredentialLocation::from_settings(self.header.as_deref(), self.scheme.as_deref())
                .map_err(|source| JwtConfigError::Location {
                    provider: p(),
                    source,
                })?;
        let source = self.key_source(provider)?;
        let hmac = matches!(source, KeySourceSetting::SharedSecret(_));
        let algorithms = match &self.algorithms {
            None if hmac => HMAC_ALGORITHMS.to_vec(),
            None => ASYMMETRIC_ALGORITHMS.to_vec(),
            Some(list) if list.is_empty() => return Err(JwtConfigError::NoAlgorithms(p())),
            Some(list) => list.clone(),
        };
        if let Some(&algorithm) = algorithms
            .iter()
            .find(|a| HMAC_ALGORITHMS.contains(a) != hmac)
        {
            let fix = if hmac {
                "with `shared_secret` only HS256/HS384/HS512 are accepted: an issuer signs \
                 either with a shared secret or with public keys, never both"
            } else {
                "HMAC algorithms need `shared_secret` (and then exclude every other algorithm)"
            };
            return Err(JwtConfigError::Algorithm {
                provider: p(),
                algorithm,
                fix,
            });
        }
        Ok(Checked {
            location,
            algorithms,
            source,
            min_refetch_interval: Duration::from_secs(self.min_refetch_interval_secs),
            fetch_timeout: Duration::from_secs(self.fetch_timeout_secs),
        })
    }

    fn key_source(&self, provider: &str) -> Result<KeySourceSetting, JwtConfigError> {
        let p = || provider.to_owned();
        let set: Vec<&str> = [
            ("jwks", self.jwks.is_some()),
            ("jwks_file", self.jwks_file.is_some()),
            ("jwks_url", self.jwks_url.is_some()),
            ("discovery", self.discovery),
            ("shared_secret", self.shared_secret.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        if set.len() != 1 {
            let found = if set.is_empty() {
                "none".to_owned()
            } else {
                set.iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(JwtConfigError::KeySource {
                provider: p(),
                found,
            });
        }
        if let Some(json) = &self.jwks {
            return Ok(KeySourceSetting::Static {
                key: "jwks",
                json: json.clone().into_bytes(),
            });
        }
        if let Some(path) = &self.jwks_file {
            let json = std::fs::read(path).map_err(|source| JwtConfigError::JwksFile {
                provider: p(),
                path: path.clone(),
                source,
            })?;
            return Ok(KeySourceSetting::Static {
                key: "jwks_file",
                json,
            });
        }
        if let Some(url) = &self.jwks_url {
            return fetch_url(provider, "jwks_url", url).map(KeySourceSetting::Url);
        }
        if self.discovery {
            let base = self.issuer.trim_end_matches('/');
            let url = format!("{base}/.well-known/openid-configuration");
            fetch_url(provider, "issuer", &self.issuer)?;
            return fetch_url(provider, "issuer", &url).map(KeySourceSetting::Discovery);
        }
        // The one source left is `shared_secret`.
        let reference = match &self.shared_secret {
            Some(reference) if !reference.is_literal() => reference,
            _ => return Err(JwtConfigError::LiteralSecret(p())),
        };
        let secret = reference
            .resolve()
            .map_err(|source| JwtConfigError::Secret {
                provider: p(),
                source,
            })?;
        let bytes = secret.expose().as_bytes().to_vec();
        if bytes.len() < 32 {
            return Err(JwtConfigError::ShortSecret {
                provider: p(),
                length: bytes.len(),
            });
        }
        Ok(KeySourceSetting::SharedSecret(bytes))
    }
}

/// Parses a URL keys may be fetched from (see [`fetchable`]).
pub(super) fn fetch_url(
    provider: &str,
    key: &'static str,
    value: &str,
) -> Result<reqwest::Url, JwtConfigError> {
    let bad = |reason| JwtConfigError::Url {
        provider: provider.to_owned(),
        key,
        value: value.to_owned(),
        reason,
    };
    let url = reqwest::Url::parse(value).map_err(|_| bad("is not an absolute URL"))?;
    fetchable(&url).map_err(bad)?;
    Ok(url)
}

/// Keys are fetched over https only, or over plain http from a loopback address (an IdP on
/// the same host, and tests): a key set read over a network in clear text can be swapped.
pub(crate) fn fetchable(url: &reqwest::Url) -> Result<(), &'static str> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err("must use https (plain http is accepted only for loopback addresses)"),
        _ => Err("must be an https URL"),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
