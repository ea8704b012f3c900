//! The per-provider key-value cache behind `cache-get`, `cache-set` and `cache-add`.
//!
//! One cache per provider, shared by all of its instances and by no other provider. It is
//! bounded: when full, expired entries are purged first; if it is still full, `cache-set`
//! stores nothing and `cache-add` answers `false`. A provider that uses `cache-add` for replay
//! detection therefore fails closed (treats the request as a replay) rather than forgetting
//! nonces it was asked to remember.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A bounded TTL map.
#[derive(Debug)]
pub struct ProviderCache {
    entries: Mutex<HashMap<String, Entry>>,
    max_entries: usize,
    max_value_bytes: usize,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Instant,
}

impl ProviderCache {
    /// An empty cache holding at most `max_entries` values of at most `max_value_bytes`.
    pub fn new(max_entries: usize, max_value_bytes: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max_entries,
            max_value_bytes,
        }
    }

    /// The live value under `key`.
    pub fn get(&self, key: &str, now: Instant) -> Option<Vec<u8>> {
        let entries = self.lock();
        entries
            .get(key)
            .filter(|e| e.expires > now)
            .map(|e| e.value.clone())
    }

    /// Stores `value` under `key` for `ttl`, replacing any value. Returns whether it stored.
    pub fn set(&self, key: String, value: Vec<u8>, ttl: Duration, now: Instant) -> bool {
        if value.len() > self.max_value_bytes {
            return false;
        }
        let mut entries = self.lock();
        if !entries.contains_key(&key) && !Self::make_room(&mut entries, self.max_entries, now) {
            return false;
        }
        entries.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
            },
        );
        true
    }

    /// Stores `value` under `key` only if no live entry exists. Returns whether it stored.
    pub fn add(&self, key: String, value: Vec<u8>, ttl: Duration, now: Instant) -> bool {
        if value.len() > self.max_value_bytes {
            return false;
        }
        let mut entries = self.lock();
        match entries.get(&key) {
            Some(e) if e.expires > now => return false,
            Some(_) => {}
            None => {
                if !Self::make_room(&mut entries, self.max_entries, now) {
                    return false;
                }
            }
        }
        entries.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
            },
        );
        true
    }

    fn make_room(entries: &mut HashMap<String, Entry>, max: usize, now: Instant) -> bool {
        if entries.len() < max {
            return true;
        }
        entries.retain(|_, e| e.expires > now);
        entries.len() < max
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still
        // a valid map, so keep serving rather than turning one panic into many.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn add_refuses_a_live_key_and_accepts_an_expired_one() {
        let cache = ProviderCache::new(10, 100);
        let t0 = Instant::now();
        assert!(cache.add("n".into(), vec![1], TTL, t0));
        assert!(!cache.add("n".into(), vec![2], TTL, t0));
        assert_eq!(cache.get("n", t0), Some(vec![1]));
        let later = t0 + TTL + Duration::from_millis(1);
        assert_eq!(cache.get("n", later), None);
        assert!(cache.add("n".into(), vec![3], TTL, later));
    }

    #[test]
    fn a_full_cache_fails_closed_for_add() {
        let cache = ProviderCache::new(2, 100);
        let t0 = Instant::now();
        assert!(cache.add("a".into(), vec![], TTL, t0));
        assert!(cache.add("b".into(), vec![], TTL, t0));
        assert!(!cache.add("c".into(), vec![], TTL, t0));
        assert!(!cache.set("c".into(), vec![], TTL, t0));
        assert!(
            cache.set("a".into(), vec![9], TTL, t0),
            "replacing needs no room"
        );
        let later = t0 + TTL + Duration::from_millis(1);
        assert!(
            cache.add("c".into(), vec![], TTL, later),
            "expired entries make room"
        );
    }

    #[test]
    fn oversized_values_are_not_stored() {
        let cache = ProviderCache::new(10, 4);
        assert!(!cache.set("k".into(), vec![0; 5], TTL, Instant::now()));
    }
}
