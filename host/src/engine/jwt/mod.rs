//! The built-in JWT validator: signed access tokens from one issuer, on `jsonwebtoken`.
//!
//! One provider trusts one issuer. The token's (unverified) `iss` routes it: a JWT from
//! another issuer makes this provider abstain, so several `jwt` providers in one chain each
//! check their own issuer's tokens against their own keys, and keys are never tried across
//! issuers. A credential that is not a JWT at all also abstains, so API keys and JWTs can
//! share `Authorization: Bearer`.
//!
//! For this issuer's tokens the rules are strict: `alg` must be in the configured list
//! (asymmetric by default; HS* only with a shared secret, and then only HS*), `none` and
//! `crit` are refused, `jku`/`x5u`/`x5c`/`jwk` headers are ignored, the key must fit the
//! algorithm, and `exp`, `iss` and `aud` are required. A refused token is `invalid_token`
//! (401) with a fixed reason; when the issuer's keys cannot be fetched at all, the provider
//! fails closed with 503. The token never appears in a reason, log or trace.
//!
//! - `settings`: config keys and their validation;
//! - `token`: shape, refusal reasons and key-independent claim checks;
//! - `parse`: strict header and claims parsing;
//! - `keys`: an issuer's key set (keys parsed and verified by `crypto::jwk`, the path guests
//!   share) and the choice of a key for a token;
//! - `jwks`: remote key sets, their cache and refetch policy;
//! - `verified`: the cache of tokens already verified, so a repeated token costs a hash.

mod jwks;
mod keys;
mod parse;
mod settings;
mod token;
mod verified;

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use jsonwebtoken::Algorithm;

pub use self::jwks::{
    JwksFetchError, JwksFetchStats, MAX_DOCUMENT_BYTES, TTL_CEILING, TTL_DEFAULT, TTL_FLOOR,
    ttl_from_cache_control,
};
use self::jwks::{RemoteKeys, RemoteSource};
pub use self::keys::JwksError;
use self::keys::{KeySet, Lookup};
use self::parse::Alg;
use self::settings::KeySourceSetting;
pub(crate) use self::settings::fetchable;
pub use self::settings::{Audience, JwtConfigError, JwtSettings};
use self::token::{ScopeClaim, TokenError};
use self::verified::{Cached, VerifiedTokens};
pub use self::verified::{DEFAULT_TOKEN_CACHE_SIZE, TokenCacheStats};
use crate::context::RequestContext;
use crate::engine::api_key::{CredentialLocation, Presented, invalid_request};
use crate::engine::{Authenticator, BoxFuture, ProviderError};
use crate::verdict::{Denial, Identity, Verdict};

/// Validates JWTs of one issuer.
pub struct JwtValidator {
    name: String,
    location: CredentialLocation,
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway_secs: u64,
    scope_claim: ScopeClaim,
    subject_claim: String,
    copied_claims: Vec<String>,
    /// Every claim the validator reads; the others are skipped while parsing.
    wanted_claims: Vec<String>,
    keys: Keys,
    verified: VerifiedTokens,
}

enum Keys {
    /// From `jwks`, `jwks_file` or `shared_secret`: parsed once at load.
    Static(KeySet),
    /// From `jwks_url` or discovery: cached and refetched.
    Remote(Arc<RemoteKeys>),
}

impl JwtValidator {
    /// Builds the validator of provider `name`. Inline and file key sets and the shared
    /// secret are read and parsed now; remote key sets on first use (or at
    /// [`Self::refresh_keys`]).
    pub fn new(name: impl Into<String>, settings: JwtSettings) -> Result<Self, JwtConfigError> {
        let name = name.into();
        let checked = settings.check(&name)?;
        let remote = |source| {
            RemoteKeys::new(
                settings.issuer.clone(),
                source,
                checked.fetch_timeout,
                checked.min_refetch_interval,
            )
            .map(|keys| Keys::Remote(Arc::new(keys)))
            .map_err(|source| JwtConfigError::HttpClient {
                provider: name.clone(),
                source,
            })
        };
        let keys = match &checked.source {
            KeySourceSetting::Static { key, json } => Keys::Static(
                KeySet::from_jwks(json).map_err(|source| JwtConfigError::Jwks {
                    provider: name.clone(),
                    key,
                    source,
                })?,
            ),
            KeySourceSetting::SharedSecret(secret) => Keys::Static(KeySet::shared_secret(secret)),
            KeySourceSetting::Url(url) => remote(RemoteSource::Jwks(url.clone()))?,
            KeySourceSetting::Discovery(url) => remote(RemoteSource::Discovery(url.clone()))?,
        };
        let scope_claim = settings
            .scope_claim
            .map_or(ScopeClaim::Standard, ScopeClaim::Named);
        let mut wanted_claims: Vec<String> = ["iss", "exp", "nbf", "aud"].map(String::from).into();
        wanted_claims.push(settings.subject_claim.clone());
        match &scope_claim {
            ScopeClaim::Standard => wanted_claims.extend(["scope".into(), "scp".into()]),
            ScopeClaim::Named(name) => wanted_claims.push(name.clone()),
        }
        wanted_claims.extend(settings.claims.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        wanted_claims.retain(|name| seen.insert(name.clone()));
        Ok(Self {
            location: checked.location,
            issuer: settings.issuer,
            audiences: settings.audience.0,
            algorithms: checked.algorithms,
            leeway_secs: settings.leeway_secs,
            scope_claim,
            subject_claim: settings.subject_claim,
            copied_claims: settings.claims,
            wanted_claims,
            keys,
            verified: VerifiedTokens::new(settings.token_cache_size),
            name,
        })
    }

    /// The issuer this provider trusts.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Fetches the remote key set now (waiting for a fetch in progress), e.g. to warm the
    /// cache at start-up. Returns the number of usable keys; static key sets return theirs.
    pub async fn refresh_keys(&self) -> Result<usize, JwksFetchError> {
        match &self.keys {
            Keys::Static(set) => Ok(set.len()),
            Keys::Remote(remote) => remote.refresh().await,
        }
    }

    /// Verified-token cache counters.
    pub fn token_cache_stats(&self) -> TokenCacheStats {
        self.verified.stats()
    }

    /// Key-set fetch counters (all zero for static key sets).
    pub fn fetch_stats(&self) -> JwksFetchStats {
        match &self.keys {
            Keys::Static(_) => JwksFetchStats::default(),
            Keys::Remote(remote) => remote.stats(),
        }
    }

    /// The decision for a request with these headers, now.
    pub async fn check(&self, headers: &HeaderMap) -> Verdict {
        let token = match self.location.find(headers) {
            Presented::Absent => return Verdict::Abstain,
            Presented::Malformed(reason) => return Verdict::Deny(invalid_request(reason)),
            Presented::Credential(token) => token,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.check_token(token, now).await
    }

    /// The decision for `token` (without its scheme) at `now` (Unix seconds).
    pub async fn check_token(&self, token: &str, now: u64) -> Verdict {
        match self.verify(token, now).await {
            Ok(Some(identity)) => Verdict::Allow(identity),
            Ok(None) => Verdict::Abstain,
            Err(Refusal::Token(error)) => {
                tracing::debug!(provider = %self.name, reason = %error, "JWT refused");
                Verdict::Deny(Denial::invalid_token(error.to_string()))
            }
            Err(Refusal::KeysUnavailable) => {
                // The failed fetch itself was logged as a warning, once per attempt.
                tracing::debug!(provider = %self.name, "JWT refused: the issuer's keys are unavailable");
                Verdict::Deny(Denial::provider_failed(
                    "the issuer's signing keys are unavailable",
                ))
            }
        }
    }

    /// `Ok(None)`: not this provider's token (not a JWT, or another issuer's).
    async fn verify(&self, token: &str, now: u64) -> Result<Option<Identity>, Refusal> {
        let Some(parts) = token::split(token) else {
            return Ok(None);
        };
        if token.len() > token::MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge.into());
        }
        let digest = match self
            .verified
            .lookup(token, self.key_generation(), now, self.leeway_secs)
        {
            Cached::Valid(identity) => return Ok(Some(identity)),
            Cached::Refused(error) => return Err(error.into()),
            Cached::Unknown(digest) => digest,
        };
        let header = parse::parse_header(parts.header)?;
        let claims = parse::parse_claims(parts.payload, &self.wanted_claims)?;
        match token::issuer(&claims) {
            None => return Err(TokenError::MissingIssuer.into()),
            Some(iss) if iss != self.issuer => return Ok(None),
            Some(_) => {}
        }
        let alg = match header.alg {
            Alg::None => return Err(TokenError::Unsigned.into()),
            Alg::Known(alg) if self.algorithms.contains(&alg) => alg,
            Alg::Known(_) | Alg::Unknown => return Err(TokenError::AlgorithmNotAllowed.into()),
        };
        if parts.signature.is_empty() {
            return Err(TokenError::BadSignature.into());
        }
        // `generation` is that of the keys the signature was checked with (read before
        // them, so a fetch landing meanwhile can only make the cache entry stale early).
        let (verified, generation) = match &self.keys {
            Keys::Static(set) => (verify_with(set, header.kid.as_deref(), alg, &parts)?, 0),
            Keys::Remote(remote) => {
                self.verify_remote(remote, header.kid.as_deref(), alg, &parts)
                    .await?
            }
        };
        if !verified {
            return Err(TokenError::BadSignature.into());
        }
        let validity = token::check_times(&claims, now, self.leeway_secs)?;
        token::check_audience(&claims, &self.audiences)?;
        let subject = token::subject(&claims, &self.subject_claim)?;
        let scopes = token::scopes(&claims, &self.scope_claim);
        let claims = self
            .copied_claims
            .iter()
            .filter_map(|name| {
                claims
                    .get(name)
                    .map(|v| (name.clone(), token::claim_text(v)))
            })
            .collect();
        let identity = Identity {
            subject,
            scopes,
            claims,
        };
        if let Some(digest) = digest {
            self.verified.insert(
                digest,
                &identity,
                validity,
                generation,
                now,
                self.leeway_secs,
            );
        }
        Ok(Some(identity))
    }

    /// Changes whenever the keys may have: never for static keys, on every fetch for
    /// remote ones.
    fn key_generation(&self) -> u64 {
        match &self.keys {
            Keys::Static(_) => 0,
            Keys::Remote(remote) => remote.generation(),
        }
    }

    async fn verify_remote(
        &self,
        remote: &Arc<RemoteKeys>,
        kid: Option<&str>,
        alg: Algorithm,
        parts: &token::Parts<'_>,
    ) -> Result<(bool, u64), Refusal> {
        let generation = remote.generation();
        let snapshot = remote.snapshot();
        remote.refresh_if_stale(&snapshot, Instant::now());
        match verify_with(&snapshot.keys, kid, alg, parts) {
            Err(Refusal::Token(TokenError::UnknownKey)) => {}
            done => return done.map(|verified| (verified, generation)),
        }
        let fetched = remote.refetch(generation).await;
        let generation = remote.generation();
        let snapshot = remote.snapshot();
        match verify_with(&snapshot.keys, kid, alg, parts).map(|verified| (verified, generation)) {
            Err(Refusal::Token(TokenError::UnknownKey)) => match fetched {
                // Never loaded, or the fetch meant to find this key failed: the key may well
                // exist, so this is an outage (503), not a bad token.
                Err(JwksFetchError::RateLimited) if snapshot.fresh_until.is_some() => {
                    Err(TokenError::UnknownKey.into())
                }
                Err(_) => Err(Refusal::KeysUnavailable),
                Ok(()) if snapshot.fresh_until.is_none() => Err(Refusal::KeysUnavailable),
                Ok(()) => Err(TokenError::UnknownKey.into()),
            },
            done => done,
        }
    }
}

/// Verifies the signature with the key the set picks for `kid` and `alg`.
fn verify_with(
    set: &KeySet,
    kid: Option<&str>,
    alg: Algorithm,
    parts: &token::Parts<'_>,
) -> Result<bool, Refusal> {
    match set.find(kid, alg) {
        // The set found a key that fits `alg`, so `verify` has no key error to report.
        Lookup::Found(key) => Ok(key
            .verify(alg, parts.signing_input.as_bytes(), parts.signature)
            .unwrap_or(false)),
        Lookup::Unknown => Err(TokenError::UnknownKey.into()),
        Lookup::Ambiguous => Err(TokenError::AmbiguousKey.into()),
    }
}

enum Refusal {
    Token(TokenError),
    KeysUnavailable,
}

impl From<TokenError> for Refusal {
    fn from(error: TokenError) -> Self {
        Self::Token(error)
    }
}

impl fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = match &self.keys {
            Keys::Static(set) => format!("static ({} keys)", set.len()),
            Keys::Remote(_) => "remote".to_owned(),
        };
        f.debug_struct("JwtValidator")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("algorithms", &self.algorithms)
            .field("location", &self.location)
            .field("keys", &keys)
            .finish_non_exhaustive()
    }
}

impl Authenticator for JwtValidator {
    fn name(&self) -> &str {
        &self.name
    }

    fn authenticate<'a>(
        &'a self,
        request: &'a Arc<RequestContext>,
    ) -> BoxFuture<'a, Result<Verdict, ProviderError>> {
        Box::pin(async move { Ok(self.check(&request.headers).await) })
    }
}

#[cfg(test)]
mod tests;
