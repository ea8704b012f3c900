//! The built-in API-key validator: keys configured as SHA-256 hashes (or as `env://` /
//! `file://` references hashed at load), looked up by the hash of the presented key and
//! confirmed with a constant-time comparison.
//!
//! ```toml
//! [providers.keys]
//! type = "api_key"
//! # header = "x-api-key"          # default: `Authorization: Bearer` and `X-API-Key`
//! keys_file = "keys.toml"         # `portcullis keys add|revoke`, reloaded live
//! keys = [
//!   { name = "ci", hash = "sha256:…", scopes = ["mcp:read"], expires_at = "2027-01-01T00:00:00Z" },
//!   { name = "ops", key = "env://OPS_API_KEY", scopes = ["*"] },
//!   { name = "old", hash = "sha256:…", revoked = true },
//! ]
//! ```
//!
//! Without `header` and `scheme`, a key is read from `Authorization: Bearer <key>` and from
//! `X-API-Key: <key>` (clients such as datagrout-conduit send the latter); a request with
//! both must carry the same key in both, or it is refused as malformed rather than decided
//! by one of them.
//!
//! Only digests are kept in memory. Storing a key's plaintext in the config is refused: a
//! config file is copied, diffed and pasted into tickets far more often than a secret store.

pub mod keys_file;
mod location;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use serde::Deserialize;

pub use self::location::{CredentialLocation, LocationError, Presented, invalid_request};
use crate::context::RequestContext;
use crate::crypto::{constant_time_eq, sha256};
use crate::engine::{Authenticator, BoxFuture, ProviderError};
use crate::secret::{SecretError, SecretRef};
use crate::shared::SharedState;
use crate::verdict::{Denial, Identity, Verdict};

/// The `[providers.NAME]` table of an `api_key` provider (without its `type` key).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// Header that carries the key; default: `authorization` (scheme `Bearer`) and
    /// `x-api-key` (no scheme).
    #[serde(default)]
    pub header: Option<String>,
    /// Auth scheme before the key; default `Bearer` on `authorization`, none on any other
    /// header. `""` reads the whole header value as the key.
    #[serde(default)]
    pub scheme: Option<String>,
    /// The accepted keys written in the config.
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
    /// A keys file ([`keys_file`]) with more, relative to the config file's folder (the
    /// config layer makes it absolute); reloaded when it changes.
    #[serde(default)]
    pub keys_file: Option<PathBuf>,
}

/// The header that carries a key besides `Authorization: Bearer` when `header` and
/// `scheme` are not set.
pub const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

impl ApiKeySettings {
    /// Every place a key is read from: `header`/`scheme` when either is set, else
    /// `Authorization: Bearer` and `X-API-Key`. The gateway strips them all before the
    /// upstream.
    pub fn credential_locations(&self) -> Result<Vec<CredentialLocation>, LocationError> {
        let configured =
            CredentialLocation::from_settings(self.header.as_deref(), self.scheme.as_deref())?;
        if self.header.is_some() || self.scheme.is_some() {
            return Ok(vec![configured]);
        }
        Ok(vec![
            configured,
            CredentialLocation::from_settings(Some(X_API_KEY.as_str()), None)?,
        ])
    }
}

/// One accepted key: exactly one of `hash` or `key`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// Who the key belongs to; becomes the identity's subject. Unique within the provider.
    pub name: String,
    /// `sha256:<64 hex digits>`, as printed by `portcullis hash-key`.
    #[serde(default)]
    pub hash: Option<String>,
    /// `env://VAR` or `file://path` holding the plaintext key, hashed at load.
    #[serde(default)]
    pub key: Option<SecretRef>,
    /// Scopes granted to callers presenting this key.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// RFC 3339 instant after which the key is refused (`2027-01-31T00:00:00Z`).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Refuse this key (kept so that its use is reported as revoked, not unknown).
    #[serde(default)]
    pub revoked: bool,
}

impl ApiKeyEntry {
    /// A key known by its `sha256:` hash (as [`hash_key`] or `portcullis hash-key` prints
    /// it), for settings built in code.
    pub fn hashed(
        name: impl Into<String>,
        hash: impl Into<String>,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            hash: Some(hash.into()),
            key: None,
            scopes: scopes.into_iter().map(Into::into).collect(),
            expires_at: None,
            revoked: false,
        }
    }
}

impl fmt::Debug for ApiKeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `key` prints as `SecretRef` does: a literal there is a plaintext key put there by
        // mistake, never printed. Likewise a `hash` that is not one is probably a key.
        let hash = self.hash.as_deref().map(|h| {
            if parse_hash(h).is_some() {
                h
            } else {
                "[redacted]"
            }
        });
        f.debug_struct("ApiKeyEntry")
            .field("name", &self.name)
            .field("hash", &hash)
            .field("key", &self.key)
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// An `api_key` provider's settings that cannot be used. Messages name the provider, the key
/// entry and the setting, never a key.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyConfigError {
    /// `header` or `scheme` is invalid.
    #[error("provider `{provider}`: {source}")]
    Location {
        /// The provider.
        provider: String,
        /// What is wrong.
        source: LocationError,
    },
    /// Neither `keys` nor `keys_file` is set.
    #[error(
        "provider `{provider}`: `keys` is empty and there is no `keys_file`; add at least one \
         `{{ name = …, hash = … }}`, or `keys_file = \"keys.toml\"` for `portcullis keys add`"
    )]
    NoKeys {
        /// The provider.
        provider: String,
    },
    /// The keys file cannot be read or is invalid; the error names the file, the entry and
    /// the field.
    #[error("provider `{provider}`: `keys_file`: {source}")]
    KeysFile {
        /// The provider.
        provider: String,
        /// Why.
        source: crate::config::ConfigError,
    },
    /// A key has an empty `name`.
    #[error("provider `{provider}`: key #{index} has an empty `name`; every key needs one")]
    EmptyName {
        /// The provider.
        provider: String,
        /// Position of the entry in `keys`, from 1.
        index: usize,
    },
    /// Two entries share a name.
    #[error("provider `{provider}`: two keys are named `{key}`; names must be unique")]
    DuplicateName {
        /// The provider.
        provider: String,
        /// The name.
        key: String,
    },
    /// Neither or both of `hash` and `key` are set.
    #[error(
        "provider `{provider}`: key `{key}`: set exactly one of `hash = \"sha256:…\"` or \
         `key = \"env://VAR\"` / `key = \"file://path\"`"
    )]
    KeySource {
        /// The provider.
        provider: String,
        /// The entry's name.
        key: String,
    },
    /// `key` holds a plaintext key instead of a reference.
    #[error(
        "provider `{provider}`: key `{key}`: `key` must be a reference, not the key itself; \
         put the key in an environment variable or a file and write `key = \"env://VAR\"` or \
         `key = \"file:///path\"`, or store only its hash (`portcullis hash-key`) as `hash`"
    )]
    LiteralKey {
        /// The provider.
        provider: String,
        /// The entry's name.
        key: String,
    },
    /// `hash` is not `sha256:` and 64 hex digits.
    #[error(
        "provider `{provider}`: key `{key}`: `hash` is not `sha256:` followed by 64 hex digits \
         (got {length} characters); compute it with `portcullis hash-key`"
    )]
    BadHash {
        /// The provider.
        provider: String,
        /// The entry's name.
        key: String,
        /// Length of the bad value (the value itself may be a misplaced key).
        length: usize,
    },
    /// The reference in `key` cannot be read.
    #[error("provider `{provider}`: key `{key}`: {source}")]
    Secret {
        /// The provider.
        provider: String,
        /// The entry's name.
        key: String,
        /// Why it could not be read.
        source: SecretError,
    },
    /// The reference in `key` resolves to an empty string.
    #[error("provider `{provider}`: key `{key}`: `key` refers to an empty value")]
    EmptyKey {
        /// The provider.
        provider: String,
        /// The entry's name.
        key: String,
    },
    /// Two entries hold the same key.
    #[error("provider `{provider}`: keys `{first}` and `{second}` are the same key")]
    DuplicateKey {
        /// The provider.
        provider: String,
        /// The first entry's name.
        first: String,
        /// The second entry's name.
        second: String,
    },
    /// `expires_at` is not an RFC 3339 timestamp.
    #[error(
        "provider `{provider}`: key `{key}`: `expires_at = \"{value}\"` is not an RFC 3339 \
         timestamp such as `2027-01-31T00:00:00Z`"
    )]
    BadExpiry {
        /// The provider.
        provider: String,
        /// The entry's name.
        key: String,
        /// The bad value.
        value: String,
    },
}

/// The `sha256:<hex>` form of a key, as written in `hash = …` (and printed by `hash-key`).
pub fn hash_key(plaintext: &str) -> String {
    format!("sha256:{}", hex::encode(sha256(plaintext.as_bytes())))
}

/// Validates API keys against the configured digests.
pub struct ApiKeyValidator {
    name: String,
    location: CredentialLocation,
    /// `X-API-Key`, read besides `location` when neither `header` nor `scheme` is set.
    also: Option<CredentialLocation>,
    by_digest: HashMap<[u8; 32], usize>,
    keys: Vec<StoredKey>,
    /// The fleet's Redis, when `[shared]` is on: revocations published there by
    /// `portcullis keys revoke` are refused by every replica on the next request.
    shared: Option<Arc<SharedState>>,
}

struct StoredKey {
    digest: [u8; 32],
    identity: Identity,
    /// Unix seconds from which the key is refused.
    expires_at: Option<i64>,
    revoked: bool,
    /// Unix seconds of the last request it authenticated; 0: none since the gateway
    /// started. One relaxed store per allowed request: the metric needs no ordering.
    last_used: AtomicI64,
}

impl ApiKeyValidator {
    /// Builds the validator of provider `name`, resolving `env://` / `file://` keys now.
    pub fn new(
        name: impl Into<String>,
        settings: ApiKeySettings,
    ) -> Result<Self, ApiKeyConfigError> {
        let provider = name.into();
        let mut locations = settings
            .credential_locations()
            .map_err(|source| ApiKeyConfigError::Location {
                provider: provider.clone(),
                source,
            })?
            .into_iter();
        let location = locations.next().unwrap_or_default();
        let also = locations.next();
        let mut entries = settings.keys;
        match &settings.keys_file {
            Some(path) => {
                let file = keys_file::read(path).map_err(|source| ApiKeyConfigError::KeysFile {
                    provider: provider.clone(),
                    source,
                })?;
                entries.extend(file.keys.iter().map(keys_file::RawKey::to_entry));
            }
            None if entries.is_empty() => return Err(ApiKeyConfigError::NoKeys { provider }),
            None => {}
        }
        let mut by_digest = HashMap::with_capacity(entries.len());
        let mut keys: Vec<StoredKey> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.into_iter().enumerate() {
            let stored = match stored_key(&provider, index + 1, entry) {
                Ok(stored) => stored,
                // Deleting a key's secret (its file, or its Vault field) revokes the key.
                Err(ApiKeyConfigError::Secret {
                    provider: _,
                    key,
                    source,
                }) if source.is_gone() => {
                    tracing::warn!(
                        provider = %provider,
                        key = %key,
                        reason = %source,
                        "an API key's secret no longer exists; the key is refused"
                    );
                    continue;
                }
                Err(error) => return Err(error),
            };
            let name = &stored.identity.subject;
            if keys.iter().any(|k| &k.identity.subject == name) {
                return Err(ApiKeyConfigError::DuplicateName {
                    provider,
                    key: name.clone(),
                });
            }
            if let Some(&other) = by_digest.get(&stored.digest) {
                let first: &StoredKey = &keys[other];
                return Err(ApiKeyConfigError::DuplicateKey {
                    first: first.identity.subject.clone(),
                    second: name.clone(),
                    provider,
                });
            }
            by_digest.insert(stored.digest, keys.len());
            keys.push(stored);
        }
        Ok(Self {
            name: provider,
            location,
            also,
            by_digest,
            keys,
            shared: None,
        })
    }

    /// Also refuses the keys revoked in the fleet's Redis; when Redis does not answer, a
    /// key is refused too (revocations fail closed).
    #[must_use]
    pub fn with_shared(mut self, shared: Option<Arc<SharedState>>) -> Self {
        self.shared = shared;
        self
    }

    /// Where this validator reads keys from (the first place, when it reads two).
    pub fn location(&self) -> &CredentialLocation {
        &self.location
    }

    /// The provider's name.
    pub fn provider(&self) -> &str {
        &self.name
    }

    /// Each key's name and the Unix seconds of the last request it authenticated, for
    /// keys used since the gateway started.
    pub fn last_used(&self) -> impl Iterator<Item = (&str, i64)> {
        self.keys.iter().filter_map(|k| {
            let at = k.last_used.load(Ordering::Relaxed);
            (at > 0).then_some((k.identity.subject.as_str(), at))
        })
    }

    /// Takes over `previous`'s last-used times for the keys both have (by name), so that a
    /// reload (a `keys add`) does not make every key look unused.
    pub fn carry_last_used(&self, previous: &Self) {
        for (name, at) in previous.last_used() {
            if let Some(key) = self.keys.iter().find(|k| k.identity.subject == name) {
                key.last_used.fetch_max(at, Ordering::Relaxed);
            }
        }
    }

    /// The decision for a request with these headers, now.
    pub fn check(&self, headers: &HeaderMap) -> Verdict {
        self.check_at(headers, Self::now())
    }

    /// The decision for a request with these headers at `now` (Unix seconds).
    pub fn check_at(&self, headers: &HeaderMap, now: i64) -> Verdict {
        self.decide(headers, now).0
    }

    /// The decision, and on `Allow` the key's digest.
    fn decide(&self, headers: &HeaderMap, now: i64) -> (Verdict, Option<[u8; 32]>) {
        let mut presented = self.location.find(headers);
        if let Some(also) = &self.also {
            presented = match (presented, also.find(headers)) {
                (Presented::Absent, other) | (other, Presented::Absent) => other,
                (Presented::Malformed(reason), _) | (_, Presented::Malformed(reason)) => {
                    Presented::Malformed(reason)
                }
                (Presented::Credential(a), Presented::Credential(b)) if a == b => {
                    Presented::Credential(a)
                }
                (Presented::Credential(_), Presented::Credential(_)) => Presented::Malformed(
                    "`Authorization` and `X-API-Key` carry different credentials",
                ),
            };
        }
        let presented = match presented {
            Presented::Absent => return (Verdict::Abstain, None),
            Presented::Malformed(reason) => {
                return (Verdict::Deny(invalid_request(reason)), None);
            }
            Presented::Credential(credential) => credential,
        };
        let digest = sha256(presented.as_bytes());
        // The map finds the candidate; the constant-time comparison is what accepts it, so a
        // hash-map implementation detail can never turn into a timing oracle on the digest.
        let Some(key) = self
            .by_digest
            .get(&digest)
            .map(|&i| &self.keys[i])
            .filter(|k| constant_time_eq(&k.digest, &digest))
        else {
            return (
                Verdict::Deny(Denial::invalid_token("unknown API key")),
                None,
            );
        };
        if key.revoked {
            return (
                Verdict::Deny(Denial::invalid_token("API key is revoked")),
                None,
            );
        }
        if key.expires_at.is_some_and(|at| now >= at) {
            return (
                Verdict::Deny(Denial::invalid_token("API key has expired")),
                None,
            );
        }
        // Whole seconds: a store only when the second changes keeps the cache line shared
        // between cores under load.
        if key.last_used.load(Ordering::Relaxed) != now {
            key.last_used.store(now, Ordering::Relaxed);
        }
        (Verdict::Allow(key.identity.clone()), Some(key.digest))
    }

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

fn stored_key(
    provider: &str,
    index: usize,
    entry: ApiKeyEntry,
) -> Result<StoredKey, ApiKeyConfigError> {
    let name = entry.name;
    if name.trim().is_empty() {
        return Err(ApiKeyConfigError::EmptyName {
            provider: provider.to_owned(),
            index,
        });
    }
    let err_key = || (provider.to_owned(), name.clone());
    let digest = match (entry.hash, entry.key) {
        (Some(hash), None) => parse_hash(&hash).ok_or_else(|| {
            let (provider, key) = err_key();
            ApiKeyConfigError::BadHash {
                provider,
                key,
                length: hash.chars().count(),
            }
        })?,
        (None, Some(reference)) => {
            if reference.is_literal() {
                let (provider, key) = err_key();
                return Err(ApiKeyConfigError::LiteralKey { provider, key });
            }
            let secret = reference.resolve().map_err(|source| {
                let (provider, key) = err_key();
                ApiKeyConfigError::Secret {
                    provider,
                    key,
                    source,
                }
            })?;
            if secret.expose().is_empty() {
                let (provider, key) = err_key();
                return Err(ApiKeyConfigError::EmptyKey { provider, key });
            }
            sha256(secret.expose().as_bytes())
        }
        _ => {
            let (provider, key) = err_key();
            return Err(ApiKeyConfigError::KeySource { provider, key });
        }
    };
    let expires_at = match entry.expires_at {
        None => None,
        Some(value) => Some(parse_rfc3339(&value).ok_or_else(|| {
            let (provider, key) = err_key();
            ApiKeyConfigError::BadExpiry {
                provider,
                key,
                value,
            }
        })?),
    };
    Ok(StoredKey {
        digest,
        identity: Identity {
            subject: name.clone(),
            scopes: entry.scopes,
            claims: vec![("key_name".to_owned(), name)],
        },
        expires_at,
        revoked: entry.revoked,
        last_used: AtomicI64::new(0),
    })
}

/// `sha256:<64 hex>` (either case) to the digest.
pub(crate) fn parse_hash(value: &str) -> Option<[u8; 32]> {
    let hex_digits = value.strip_prefix("sha256:")?;
    let mut digest = [0; 32];
    hex::decode_to_slice(hex_digits, &mut digest).ok()?;
    Some(digest)
}

/// An RFC 3339 timestamp to Unix seconds.
fn parse_rfc3339(value: &str) -> Option<i64> {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

impl fmt::Debug for ApiKeyValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyValidator")
            .field("name", &self.name)
            .field("location", &self.location)
            .field("also", &self.also)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Authenticator for ApiKeyValidator {
    fn grants_wildcard(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn authenticate<'a>(
        &'a self,
        request: &'a Arc<RequestContext>,
    ) -> BoxFuture<'a, Result<Verdict, ProviderError>> {
        let (verdict, digest) = self.decide(&request.headers, Self::now());
        let (Some(shared), Verdict::Allow(_), Some(digest)) = (&self.shared, &verdict, digest)
        else {
            return Box::pin(std::future::ready(Ok(verdict)));
        };
        Box::pin(async move {
            let hash = format!("sha256:{}", hex::encode(digest));
            match shared.is_key_revoked(&self.name, &hash).await {
                Ok(false) => Ok(verdict),
                Ok(true) => Ok(Verdict::Deny(Denial::invalid_token("API key is revoked"))),
                Err(e) => Err(ProviderError(format!(
                    "cannot read key revocations from the shared state ({e}); refusing"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests;
