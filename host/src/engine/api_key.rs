//! The built-in API-key validator: keys configured as SHA-256 hashes (or as `env://` /
//! `file://` references hashed at load), looked up by the hash of the presented key and
//! confirmed with a constant-time comparison.
//!
//! ```toml
//! [providers.keys]
//! type = "api_key"
//! header = "x-api-key"            # default `authorization` with scheme `Bearer`
//! keys = [
//!   { name = "ci", hash = "sha256:…", scopes = ["mcp:read"], expires_at = "2027-01-01T00:00:00Z" },
//!   { name = "ops", key = "env://OPS_API_KEY", scopes = ["*"] },
//!   { name = "old", hash = "sha256:…", revoked = true },
//! ]
//! ```
//!
//! Only digests are kept in memory. Storing a key's plaintext in the config is refused: a
//! config file is copied, diffed and pasted into tickets far more often than a secret store.

mod location;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use serde::Deserialize;

pub use self::location::{CredentialLocation, LocationError, Presented, invalid_request};
use crate::context::RequestContext;
use crate::crypto::{constant_time_eq, sha256};
use crate::engine::{Authenticator, BoxFuture, ProviderError};
use crate::secret::{SecretError, SecretRef};
use crate::verdict::{Denial, Identity, Verdict};

/// The `[providers.NAME]` table of an `api_key` provider (without its `type` key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// Header that carries the key; default `authorization`.
    #[serde(default)]
    pub header: Option<String>,
    /// Auth scheme before the key; default `Bearer` on `authorization`, none on any other
    /// header. `""` reads the whole header value as the key.
    #[serde(default)]
    pub scheme: Option<String>,
    /// The accepted keys.
    pub keys: Vec<ApiKeyEntry>,
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
    /// `keys` is empty.
    #[error("provider `{provider}`: `keys` is empty; add at least one `{{ name = …, hash = … }}`")]
    NoKeys {
        /// The provider.
        provider: String,
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
    by_digest: HashMap<[u8; 32], usize>,
    keys: Vec<StoredKey>,
}

struct StoredKey {
    digest: [u8; 32],
    identity: Identity,
    /// Unix seconds from which the key is refused.
    expires_at: Option<i64>,
    revoked: bool,
}

impl ApiKeyValidator {
    /// Builds the validator of provider `name`, resolving `env://` / `file://` keys now.
    pub fn new(
        name: impl Into<String>,
        settings: ApiKeySettings,
    ) -> Result<Self, ApiKeyConfigError> {
        let provider = name.into();
        let location = CredentialLocation::from_settings(
            settings.header.as_deref(),
            settings.scheme.as_deref(),
        )
        .map_err(|source| ApiKeyConfigError::Location {
            provider: provider.clone(),
            source,
        })?;
        if settings.keys.is_empty() {
            return Err(ApiKeyConfigError::NoKeys { provider });
        }
        let mut by_digest = HashMap::with_capacity(settings.keys.len());
        let mut keys: Vec<StoredKey> = Vec::with_capacity(settings.keys.len());
        for (index, entry) in settings.keys.into_iter().enumerate() {
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
            by_digest,
            keys,
        })
    }

    /// Where this validator reads keys from.
    pub fn location(&self) -> &CredentialLocation {
        &self.location
    }

    /// The decision for a request with these headers, now.
    pub fn check(&self, headers: &HeaderMap) -> Verdict {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.check_at(headers, now)
    }

    /// The decision for a request with these headers at `now` (Unix seconds).
    pub fn check_at(&self, headers: &HeaderMap, now: i64) -> Verdict {
        let presented = match self.location.find(headers) {
            Presented::Absent => return Verdict::Abstain,
            Presented::Malformed(reason) => return Verdict::Deny(invalid_request(reason)),
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
            return Verdict::Deny(Denial::invalid_token("unknown API key"));
        };
        if key.revoked {
            return Verdict::Deny(Denial::invalid_token("API key is revoked"));
        }
        if key.expires_at.is_some_and(|at| now >= at) {
            return Verdict::Deny(Denial::invalid_token("API key has expired"));
        }
        Verdict::Allow(key.identity.clone())
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
        let verdict = self.check(&request.headers);
        Box::pin(std::future::ready(Ok(verdict)))
    }
}

#[cfg(test)]
mod tests;
