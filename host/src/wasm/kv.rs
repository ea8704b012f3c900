//! The per-provider key-value cache behind `cache-get`, `cache-set` and `cache-add`.
//!
//! One cache per provider, shared by all of its instances and by no other provider. It lives
//! in the host, outside the instance's memory cap, so it is bounded on every axis a guest
//! controls ([`CacheLimits`]): the number of entries, the length of a key, the length of a
//! value and the total bytes held (keys, values and [`ENTRY_OVERHEAD`] per entry). A write
//! over a bound stores nothing, and the host's memory never grows past the total:
//!
//! - `cache-set` has no result in the WIT contract, which says an entry "may be evicted
//!   earlier when the provider exceeds its cache quota"; the guest sees the refusal as a miss
//!   on its next `cache-get`. A refused replacement also removes the old value, so a guest
//!   never reads back a value older than the one it last wrote.
//! - `cache-add` answers `false`. A provider that uses it for replay detection therefore
//!   fails closed (treats the request as a replay) rather than forgetting nonces it was asked
//!   to remember.
//!
//! When a write needs room, expired entries are purged first.
//!
//! With `[shared]` on, the imports use the fleet's Redis instead ([`crate::shared`]), with
//! the same key and value bounds: `cache-add` is `SET NX PX` under the provider's own
//! namespace, so a replay window holds across replicas. When Redis does not answer,
//! `cache-add` answers `false` (fail closed, as above) and `cache-get` misses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes charged per entry on top of its key and value: the map slot, the `String` and
/// `Vec` headers and the expiry, rounded up. Without it a guest could store a million empty
/// values for free.
pub const ENTRY_OVERHEAD: usize = 64;

/// The bounds of one provider's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most live entries.
    pub entries: usize,
    /// Longest key, in bytes.
    pub key_bytes: usize,
    /// Longest value, in bytes.
    pub value_bytes: usize,
    /// Most bytes held in all: keys, values and [`ENTRY_OVERHEAD`] per entry.
    pub total_bytes: usize,
}

impl CacheLimits {
    /// Whether a key this long is accepted.
    pub fn fits_key(&self, key: &str) -> bool {
        key.len() <= self.key_bytes
    }

    /// Whether an entry of this key and value is accepted.
    pub fn fits(&self, key: &str, value: &[u8]) -> bool {
        self.fits_key(key) && value.len() <= self.value_bytes
    }
}

/// A bounded TTL map.
#[derive(Debug)]
pub struct ProviderCache {
    inner: Mutex<Inner>,
    limits: CacheLimits,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Sum of [`cost`] over `entries`.
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Instant,
}

fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

impl ProviderCache {
    /// An empty cache bounded by `limits`.
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            inner: Mutex::default(),
            limits,
        }
    }

    /// The live value under `key`.
    pub fn get(&self, key: &str, now: Instant) -> Option<Vec<u8>> {
        if !self.limits.fits_key(key) {
            return None;
        }
        self.lock()
            .entries
            .get(key)
            .filter(|e| e.expires > now)
            .map(|e| e.value.clone())
    }

    /// Stores `value` under `key` for `ttl`, replacing any value. Returns whether it stored;
    /// when it did not, no value (old or new) is left under `key`.
    pub fn set(&self, key: String, value: Vec<u8>, ttl: Duration, now: Instant) -> bool {
        let mut inner = self.lock();
        inner.remove(&key);
        if !self.fits(&key, &value) || !inner.make_room(&self.limits, cost(&key, &value), now) {
            return false;
        }
        inner.insert(key, value, now + ttl);
        true
    }

    /// Stores `value` under `key` only if no live entry exists. Returns whether it stored.
    pub fn add(&self, key: String, value: Vec<u8>, ttl: Duration, now: Instant) -> bool {
        if !self.fits(&key, &value) {
            return false;
        }
        let mut inner = self.lock();
        match inner.entries.get(&key) {
            Some(e) if e.expires > now => return false,
            Some(_) => inner.remove(&key),
            None => {}
        }
        if !inner.make_room(&self.limits, cost(&key, &value), now) {
            return false;
        }
        inner.insert(key, value, now + ttl);
        true
    }

    /// Bytes held now: keys, values and [`ENTRY_OVERHEAD`] per entry (expired entries count
    /// until they are purged).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Entries held now (expired entries count until they are purged).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bounds in force.
    pub fn limits(&self) -> &CacheLimits {
        &self.limits
    }

    fn fits(&self, key: &str, value: &[u8]) -> bool {
        self.limits.fits(key, value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still
        // a valid map, so keep serving rather than turning one panic into many.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn remove(&mut self, key: &str) {
        if let Some((key, entry)) = self.entries.remove_entry(key) {
            self.bytes -= cost(&key, &entry.value);
        }
    }

    fn insert(&mut self, key: String, value: Vec<u8>, expires: Instant) {
        self.bytes += cost(&key, &value);
        self.entries.insert(key, Entry { value, expires });
    }

    /// Whether one more entry of `needed` bytes fits, after purging expired entries if not.
    fn make_room(&mut self, limits: &CacheLimits, needed: usize, now: Instant) -> bool {
        let fits = |inner: &Self| {
            inner.entries.len() < limits.entries
                && inner.bytes.saturating_add(needed) <= limits.total_bytes
        };
        if fits(self) {
            return true;
        }
        let mut freed = 0;
        self.entries.retain(|key, e| {
            let live = e.expires > now;
            if !live {
                freed += cost(key, &e.value);
            }
            live
        });
        self.bytes -= freed;
        fits(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn cache(entries: usize, value_bytes: usize) -> ProviderCache {
        ProviderCache::new(CacheLimits {
            entries,
            key_bytes: 64,
            value_bytes,
            total_bytes: 1 << 20,
        })
    }

    #[test]
    fn add_refuses_a_live_key_and_accepts_an_expired_one() {
        let cache = cache(10, 100);
        let t0 = Instant::now();
        assert!(cache.add("n".into(), vec![1], TTL, t0));
        assert!(!cache.add("n".into(), vec![2], TTL, t0));
        assert_eq!(cache.get("n", t0), Some(vec![1]));
        let later = t0 + TTL + Duration::from_millis(1);
        assert_eq!(cache.get("n", later), None);
        assert!(cache.add("n".into(), vec![3], TTL, later));
        assert_eq!(cache.bytes(), cost("n", &[3]));
    }

    #[test]
    fn a_full_cache_fails_closed_for_add() {
        let cache = cache(2, 100);
        let t0 = Instant::now();
        assert!(cache.add("a".into(), vec![], TTL, t0));
        assert!(cache.add("b".into(), vec![], TTL, t0));
        assert!(!cache.add("c".into(), vec![], TTL, t0));
        assert!(!cache.set("c".into(), vec![], TTL, t0));
        assert!(
            cache.set("a".into(), vec![9], TTL, t0),
            "replacing needs no extra entry"
        );
        let later = t0 + TTL + Duration::from_millis(1);
        assert!(
            cache.add("c".into(), vec![], TTL, later),
            "expired entries make room"
        );
    }

    #[test]
    fn oversized_keys_and_values_are_not_stored() {
        let cache = cache(10, 4);
        let now = Instant::now();
        assert!(!cache.set("k".into(), vec![0; 5], TTL, now));
        assert!(!cache.add("k".into(), vec![0; 5], TTL, now));
        let long = "k".repeat(65);
        assert!(!cache.set(long.clone(), vec![], TTL, now));
        assert!(!cache.add(long.clone(), vec![], TTL, now));
        assert_eq!(cache.get(&long, now), None);
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn total_bytes_are_never_exceeded_and_a_refused_replacement_leaves_no_stale_value() {
        let total = 10 * cost("k0", &[0; 100]);
        let cache = ProviderCache::new(CacheLimits {
            entries: 1000,
            key_bytes: 64,
            value_bytes: 1000,
            total_bytes: total,
        });
        let now = Instant::now();
        let stored = (0..100)
            .filter(|i| cache.add(format!("k{i}"), vec![0; 100], TTL, now))
            .count();
        assert!(stored <= 10, "stored {stored}");
        assert!(cache.bytes() <= total, "{} > {total}", cache.bytes());
        assert!(!cache.set("k0".into(), vec![0; 1000], TTL, now));
        assert_eq!(
            cache.get("k0", now),
            None,
            "no stale value after a refused set"
        );
        assert!(cache.bytes() <= total);
    }
}
