//! What the authorization server remembers across reloads (one [`Ledger`] per process,
//! handed from one site to the next by [`crate::load`]): revoked token ids, spent
//! `private_key_jwt` assertion ids, failed client authentications, and the public keys of
//! signing keys removed from config while tokens they signed may still be live.
//!
//! Everything here expires with the token or window it is about, and every map is bounded:
//! when one is full of live entries, the operation that needs a new entry fails closed (an
//! assertion is refused, a failed authentication counts as over the limit), never open.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Most entries in each map.
pub(crate) const MAX_ENTRIES: usize = 100_000;

/// The window failed client authentications are counted in, seconds.
pub(crate) const FAILURE_WINDOW_SECS: u64 = 60;

/// State that outlives a site. Cheap to share (`Arc`).
#[derive(Debug, Default)]
pub struct Ledger {
    /// Revoked token `jti` → its `exp`.
    revoked: Mutex<HashMap<String, u64>>,
    /// Spent assertion `(client, jti)` → its `exp`.
    assertions: Mutex<HashMap<(String, String), u64>>,
    /// `client:<id>` / `addr:<ip>` → (window start, failures in it).
    failures: Mutex<HashMap<String, (u64, u32)>>,
    /// Public JWKs of keys that signed tokens: kid → (JWK, last use + max lifetime).
    signed_with: Mutex<HashMap<String, (serde_json::Value, u64)>>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the token `jti` (expiring at `exp`) is revoked.
    pub(crate) fn revoke(&self, jti: &str, exp: u64, now: u64) {
        let mut revoked = lock(&self.revoked);
        if revoked.len() >= MAX_ENTRIES {
            revoked.retain(|_, e| *e > now);
        }
        // Beyond the bound the entry is still recorded: dropping a revocation would reopen
        // a token, and revocations are made by authenticated clients only.
        revoked.insert(jti.to_owned(), exp);
    }

    /// Whether the token `jti` was revoked.
    pub(crate) fn is_revoked(&self, jti: &str) -> bool {
        lock(&self.revoked).contains_key(jti)
    }

    /// Records assertion `jti` of `client` as spent. `false` when it was already spent, or
    /// when the map is full of live assertions (fail closed).
    pub(crate) fn spend_assertion(&self, client: &str, jti: &str, exp: u64, now: u64) -> bool {
        let mut spent = lock(&self.assertions);
        let key = (client.to_owned(), jti.to_owned());
        if spent
            .get(&key)
            .is_some_and(|e| *e + ASSERTION_GRACE_SECS >= now)
        {
            return false;
        }
        if spent.len() >= MAX_ENTRIES {
            spent.retain(|_, e| *e + ASSERTION_GRACE_SECS >= now);
            if spent.len() >= MAX_ENTRIES {
                return false;
            }
        }
        spent.insert(key, exp);
        true
    }

    /// Whether `key` (`client:<id>`, `addr:<ip>`) is over `limit` failures in the current
    /// window; returns the seconds until the window ends when it is.
    pub(crate) fn blocked(&self, key: &str, limit: u32, now: u64) -> Option<u64> {
        let failures = lock(&self.failures);
        match failures.get(key) {
            Some((start, count)) if now < start + FAILURE_WINDOW_SECS && *count >= limit => {
                Some(start + FAILURE_WINDOW_SECS - now)
            }
            _ => None,
        }
    }

    /// Counts one failed authentication against `key`.
    pub(crate) fn fail(&self, key: &str, now: u64) {
        let mut failures = lock(&self.failures);
        if failures.len() >= MAX_ENTRIES && !failures.contains_key(key) {
            failures.retain(|_, (start, _)| now < *start + FAILURE_WINDOW_SECS);
        }
        let entry = failures.entry(key.to_owned()).or_insert((now, 0));
        if now >= entry.0 + FAILURE_WINDOW_SECS {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Records that the key `kid` (public half `jwk`) signed a token valid until `until`.
    pub(crate) fn signed(&self, kid: &str, jwk: &serde_json::Value, until: u64) {
        let mut signed = lock(&self.signed_with);
        match signed.get_mut(kid) {
            Some(entry) if entry.0 == *jwk => entry.1 = entry.1.max(until),
            _ => {
                signed.insert(kid.to_owned(), (jwk.clone(), until));
            }
        }
    }

    /// Public JWKs of keys that signed tokens still valid at `now`, by kid.
    pub(crate) fn live_signers(&self, now: u64) -> Vec<(String, serde_json::Value)> {
        let mut signed = lock(&self.signed_with);
        signed.retain(|_, (_, until)| *until > now);
        signed
            .iter()
            .map(|(kid, (jwk, _))| (kid.clone(), jwk.clone()))
            .collect()
    }
}

/// How long past its `exp` a spent assertion is remembered: the clock skew allowed on it.
const ASSERTION_GRACE_SECS: u64 = 60;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assertion_is_spent_once() {
        let ledger = Ledger::new();
        assert!(ledger.spend_assertion("a", "j1", 100, 50));
        assert!(!ledger.spend_assertion("a", "j1", 100, 60));
        assert!(ledger.spend_assertion("b", "j1", 100, 60));
    }

    #[test]
    fn failures_block_within_the_window_only() {
        let ledger = Ledger::new();
        for _ in 0..3 {
            ledger.fail("client:a", 1000);
        }
        assert_eq!(ledger.blocked("client:a", 3, 1010), Some(50));
        assert_eq!(ledger.blocked("client:a", 4, 1010), None);
        assert_eq!(ledger.blocked("client:a", 3, 1060), None);
    }
}
