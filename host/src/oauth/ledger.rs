//! What the authorization server remembers across reloads (one [`Ledger`] per process,
//! handed from one site to the next by [`crate::load`]): revoked token ids, spent
//! `private_key_jwt` assertion ids, failed client authentications, and the public keys of
//! signing keys removed from config while tokens they signed may still be live.
//!
//! Everything here expires with the token or window it is about, and what a caller can make
//! grow is bounded so that one caller cannot spoil it for another:
//! - spent assertions are kept per client, at most [`MAX_ASSERTIONS_PER_CLIENT`] live ones
//!   each; a client past that is refused (fail closed) until its own assertions expire, and
//!   no other client is affected;
//! - failure counters hold at most [`MAX_ENTRIES`] keys; when full of live windows a new
//!   key is not counted (a sprayer of many ids or addresses is not throttled on the new
//!   ones, which guessing 256-bit secrets does not need), and no key is dropped early;
//! - revocations are made by authenticated clients only, for their own live tokens, and
//!   are never dropped before the token expires (that would reopen it); expired ones are
//!   swept when the map has doubled since the last sweep.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

/// Most failure-counter keys.
pub(crate) const MAX_ENTRIES: usize = 100_000;

/// Most live spent assertions one client may have: an assertion lives at most 11 minutes,
/// so this is 15 token requests a second, sustained, by one `private_key_jwt` client.
pub(crate) const MAX_ASSERTIONS_PER_CLIENT: usize = 10_000;

/// The window failed client authentications are counted in, seconds.
pub(crate) const FAILURE_WINDOW_SECS: u64 = 60;

/// What [`Ledger::spend_assertion`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spent {
    /// First use: recorded.
    Fresh,
    /// Used before (and still live).
    Replayed,
    /// The client has [`MAX_ASSERTIONS_PER_CLIENT`] live assertions already.
    OverQuota,
}

/// State that outlives a site. Cheap to share (`Arc`).
#[derive(Debug, Default)]
pub struct Ledger {
    /// Revoked token `jti` → its `exp`, and the size at which to sweep expired ones.
    revoked: Mutex<(HashMap<String, u64>, usize)>,
    /// Client → its spent assertions' `jti` → `exp`.
    assertions: Mutex<HashMap<String, HashMap<String, u64>>>,
    /// `client:<id>` / `addr:<ip>` → (window start, failures in it).
    failures: Mutex<HashMap<String, (u64, u32)>>,
    /// Public JWKs of keys that signed tokens: kid → (JWK, the last `exp` it signed).
    signed_with: Mutex<HashMap<String, (serde_json::Value, u64)>>,
    /// Which clients were registered and not revoked at the last build, and when each client
    /// last stopped being so.
    clients: Mutex<ClientHistory>,
}

#[derive(Debug, Default)]
struct ClientHistory {
    active: HashSet<String>,
    revoked_at: HashMap<String, u64>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the token `jti` (expiring at `exp`) is revoked.
    pub(crate) fn revoke(&self, jti: &str, exp: u64, now: u64) {
        let mut guard = lock(&self.revoked);
        let (revoked, sweep_at) = &mut *guard;
        if revoked.len() >= (*sweep_at).max(MAX_ENTRIES) {
            revoked.retain(|_, e| *e > now);
            *sweep_at = revoked.len() * 2;
        }
        revoked.insert(jti.to_owned(), exp);
    }

    /// Whether the token `jti` was revoked.
    pub(crate) fn is_revoked(&self, jti: &str) -> bool {
        lock(&self.revoked).0.contains_key(jti)
    }

    /// Records assertion `jti` of `client` as spent, unless it already was or the client has
    /// too many live ones (then it is refused: fail closed, for that client only).
    pub(crate) fn spend_assertion(&self, client: &str, jti: &str, exp: u64, now: u64) -> Spent {
        let mut all = lock(&self.assertions);
        let spent = all.entry(client.to_owned()).or_default();
        let live = |e: &u64| e.saturating_add(ASSERTION_GRACE_SECS) >= now;
        if spent.get(jti).is_some_and(live) {
            return Spent::Replayed;
        }
        if spent.len() >= MAX_ASSERTIONS_PER_CLIENT {
            spent.retain(|_, e| live(e));
            if spent.len() >= MAX_ASSERTIONS_PER_CLIENT {
                return Spent::OverQuota;
            }
        }
        spent.insert(jti.to_owned(), exp);
        Spent::Fresh
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
            if failures.len() >= MAX_ENTRIES {
                return;
            }
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

    /// The last `exp` the key `kid` signed, if it signed one this process remembers.
    pub(crate) fn signed_until(&self, kid: &str) -> Option<u64> {
        lock(&self.signed_with).get(kid).map(|(_, until)| *until)
    }

    /// Records a build's clients: `active` are registered and not revoked, `revoked` are
    /// registered with `revoked = true`. A client active before and not now (removed or
    /// revoked) is noted as revoked at `now`, as is a revoked client not noted yet, so that
    /// registering it again later does not revive the tokens it held.
    pub(crate) fn note_clients<'a>(
        &self,
        active: impl Iterator<Item = &'a str>,
        revoked: impl Iterator<Item = &'a str>,
        now: u64,
    ) {
        let mut history = lock(&self.clients);
        let active: HashSet<String> = active.map(str::to_owned).collect();
        let ClientHistory {
            active: before,
            revoked_at,
        } = &mut *history;
        for gone in before.difference(&active) {
            revoked_at.insert(gone.clone(), now);
        }
        for id in revoked {
            revoked_at.entry(id.to_owned()).or_insert(now);
        }
        // No token outlives the lifetime ceiling.
        revoked_at.retain(|_, at| *at + super::settings::LIFETIME_CEILING_SECS > now);
        *before = active;
    }

    /// When client `id` was last revoked or removed, within the lifetime ceiling.
    pub(crate) fn client_revoked_at(&self, id: &str) -> Option<u64> {
        lock(&self.clients).revoked_at.get(id).copied()
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
        assert_eq!(ledger.spend_assertion("a", "j1", 100, 50), Spent::Fresh);
        assert_eq!(ledger.spend_assertion("a", "j1", 100, 60), Spent::Replayed);
        assert_eq!(ledger.spend_assertion("b", "j1", 100, 60), Spent::Fresh);
    }

    #[test]
    fn a_client_full_of_assertions_does_not_refuse_another() {
        let ledger = Ledger::new();
        for i in 0..MAX_ASSERTIONS_PER_CLIENT {
            let jti = i.to_string();
            assert_eq!(
                ledger.spend_assertion("greedy", &jti, 1000, 500),
                Spent::Fresh
            );
        }
        let over = ledger.spend_assertion("greedy", "one-more", 1000, 500);
        assert_eq!(over, Spent::OverQuota);
        assert_eq!(
            ledger.spend_assertion("other", "first", 1000, 500),
            Spent::Fresh
        );
        // Once its assertions have expired the client is served again.
        assert_eq!(
            ledger.spend_assertion("greedy", "later", 2000, 1100),
            Spent::Fresh
        );
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
