//! Verified tokens: a bounded cache of tokens that passed every check, so that a client
//! presenting the same access token on each request (MCP clients do, for a whole session)
//! pays for one signature verification, not one per request. Envoy's `jwt_authn` does the
//! same (`jwt_cache_config`).
//!
//! What makes a hit as safe as a full check:
//! - The key is the SHA-256 of the whole token, so a hit is the same bytes, signature
//!   included; the cache never holds a token.
//! - An entry stays usable only while the key set it was verified with is current: each
//!   entry records the key-set generation, and any key-set fetch (successful or not)
//!   moves the generation on, so a key removed by rotation takes its tokens with it.
//! - `exp` and `nbf` are checked against the clock on every hit; issuer, audience and
//!   algorithm are the validator's fixed settings, already checked for these bytes.
//! - Only allowed tokens are stored. Refusals always take the full path, so an attacker
//!   cannot fill the cache, and what it holds is bounded by `capacity` (at capacity,
//!   expired and stale entries are dropped first, then an arbitrary one).
//! - `token_cache_size = 0` turns it off.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use ring::digest::{SHA256, digest};

use super::token::{TokenError, Validity};
use crate::verdict::Identity;

/// Default number of entries (`token_cache_size`).
pub const DEFAULT_TOKEN_CACHE_SIZE: usize = 1024;

type TokenDigest = [u8; 32];

#[derive(Debug)]
struct Entry {
    identity: Identity,
    validity: Validity,
    generation: u64,
}

/// Hit and miss counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCacheStats {
    /// Tokens answered from the cache.
    pub hits: u64,
    /// Lookups that had to verify the token (absent, stale, or the cache is off).
    pub misses: u64,
}

/// The cache of one validator.
#[derive(Debug)]
pub(super) struct VerifiedTokens {
    capacity: usize,
    entries: RwLock<HashMap<TokenDigest, Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The outcome of a lookup.
pub(super) enum Cached {
    /// Verified before with the current keys, and valid now.
    Valid(Identity),
    /// Verified before with the current keys, but outside its validity window now.
    Refused(TokenError),
    /// Not known: verify it.
    Unknown(Option<TokenDigest>),
}

impl VerifiedTokens {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: RwLock::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Looks `token` up for the key-set `generation` at `now` (Unix seconds).
    pub(super) fn lookup(&self, token: &str, generation: u64, now: u64, leeway: u64) -> Cached {
        if self.capacity == 0 {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Cached::Unknown(None);
        }
        let key = token_digest(token);
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        match entries.get(&key) {
            Some(entry) if entry.generation == generation => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                match entry.validity.check(now, leeway) {
                    Ok(()) => Cached::Valid(entry.identity.clone()),
                    Err(error) => Cached::Refused(error),
                }
            }
            _ => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                Cached::Unknown(Some(key))
            }
        }
    }

    /// Stores a token that passed every check with the keys of `generation`.
    pub(super) fn insert(
        &self,
        key: TokenDigest,
        identity: &Identity,
        validity: Validity,
        generation: u64,
        now: u64,
        leeway: u64,
    ) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries
                .retain(|_, e| e.generation == generation && e.validity.check(now, leeway).is_ok());
            if entries.len() >= self.capacity
                && let Some(victim) = entries.keys().next().copied()
            {
                entries.remove(&victim);
            }
        }
        entries.insert(
            key,
            Entry {
                identity: identity.clone(),
                validity,
                generation,
            },
        );
    }

    pub(super) fn stats(&self) -> TokenCacheStats {
        TokenCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

fn token_digest(token: &str) -> TokenDigest {
    let mut key = [0; 32];
    key.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    key
}
