//! [`FakeHost`]: the host capabilities for native tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ring::{digest, hmac};

use super::signature;
use crate::{Host, LogLevel, PublicKey, SignatureAlgorithm};

/// 2024-01-01T00:00:00Z, so that tests do not depend on the machine's clock.
const DEFAULT_NOW_UNIX_MS: u64 = 1_704_067_200_000;

/// Host capabilities for native tests: granted secrets, real crypto, a cache that honours
/// TTLs on a clock the test controls, and captured log lines.
///
/// ```
/// use portcullis_sdk::testing::FakeHost;
/// use portcullis_sdk::Host;
///
/// let host = FakeHost::new().with_now_unix_ms(1_000);
/// assert!(host.cache_add("nonce", b"", 500));
/// assert!(!host.cache_add("nonce", b"", 500));
/// host.advance_ms(500);
/// assert!(host.cache_add("nonce", b"", 500), "the entry expired");
/// ```
///
/// It is `Send + Sync`, so a benchmark may share one across threads.
#[derive(Debug)]
pub struct FakeHost {
    secrets: HashMap<String, String>,
    now_unix_ms: AtomicU64,
    cache: Mutex<HashMap<String, CacheEntry>>,
    logs: Mutex<Vec<(LogLevel, String)>>,
}

#[derive(Debug)]
struct CacheEntry {
    value: Vec<u8>,
    expires_at_ms: u64,
}

impl Default for FakeHost {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeHost {
    /// No secrets, an empty cache, and the clock at 2024-01-01T00:00:00Z.
    pub fn new() -> Self {
        Self {
            secrets: HashMap::new(),
            now_unix_ms: AtomicU64::new(DEFAULT_NOW_UNIX_MS),
            cache: Mutex::new(HashMap::new()),
            logs: Mutex::new(Vec::new()),
        }
    }

    /// Grants a secret under `name`.
    #[must_use]
    pub fn with_secret(mut self, name: &str, value: &str) -> Self {
        self.secrets.insert(name.into(), value.into());
        self
    }

    /// Sets the clock.
    #[must_use]
    pub fn with_now_unix_ms(self, now: u64) -> Self {
        self.set_now_unix_ms(now);
        self
    }

    /// Moves the clock to `now`.
    pub fn set_now_unix_ms(&self, now: u64) {
        self.now_unix_ms.store(now, Ordering::SeqCst);
    }

    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: u64) {
        self.now_unix_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Every line logged so far, in order.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        lock(&self.logs).clone()
    }

    /// Whether any line logged so far contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        lock(&self.logs)
            .iter()
            .any(|(_, line)| line.contains(needle))
    }

    /// Empties the cache, as a host restart would.
    pub fn clear_cache(&self) {
        lock(&self.cache).clear();
    }

    fn now(&self) -> u64 {
        self.now_unix_ms.load(Ordering::SeqCst)
    }
}

/// A panic in one test thread must not hide the state from the assertions that follow.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Host for FakeHost {
    fn log(&self, level: LogLevel, message: &str) {
        lock(&self.logs).push((level, message.to_owned()));
    }

    fn secret(&self, name: &str) -> Option<String> {
        self.secrets.get(name).cloned()
    }

    fn sha256(&self, data: &[u8]) -> Vec<u8> {
        digest::digest(&digest::SHA256, data).as_ref().to_vec()
    }

    fn hmac_sha256(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        hmac::sign(&key, data).as_ref().to_vec()
    }

    fn constant_time_eq(&self, a: &[u8], b: &[u8]) -> bool {
        // The contract allows the length to leak, like the host's own comparison.
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    fn verify_signature(
        &self,
        algorithm: SignatureAlgorithm,
        key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, String> {
        signature::verify(algorithm, key, message, signature)
    }

    fn cache_get(&self, key: &str) -> Option<Vec<u8>> {
        let now = self.now();
        lock(&self.cache)
            .get(key)
            .filter(|entry| entry.expires_at_ms > now)
            .map(|entry| entry.value.clone())
    }

    fn cache_set(&self, key: &str, value: &[u8], ttl_ms: u32) {
        let entry = CacheEntry {
            value: value.to_vec(),
            expires_at_ms: self.now().saturating_add(u64::from(ttl_ms)),
        };
        lock(&self.cache).insert(key.to_owned(), entry);
    }

    fn cache_add(&self, key: &str, value: &[u8], ttl_ms: u32) -> bool {
        let now = self.now();
        let mut cache = lock(&self.cache);
        if cache
            .get(key)
            .is_some_and(|entry| entry.expires_at_ms > now)
        {
            return false;
        }
        let entry = CacheEntry {
            value: value.to_vec(),
            expires_at_ms: now.saturating_add(u64::from(ttl_ms)),
        };
        cache.insert(key.to_owned(), entry);
        true
    }

    fn now_unix_ms(&self) -> u64 {
        self.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex_encode;

    #[test]
    fn only_granted_secrets_are_visible() {
        let host = FakeHost::new().with_secret("keys", "v");
        assert_eq!(host.secret("keys").as_deref(), Some("v"));
        assert_eq!(host.secret("other"), None);
    }

    #[test]
    fn sha256_and_hmac_match_known_vectors() {
        let host = FakeHost::new();
        assert_eq!(
            hex_encode(&host.sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 4231 test case 2.
        assert_eq!(
            hex_encode(&host.hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        let host = FakeHost::new();
        assert!(host.constant_time_eq(b"abc", b"abc"));
        assert!(!host.constant_time_eq(b"abc", b"abd"));
        assert!(!host.constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn cache_entries_expire_on_the_fake_clock() {
        let host = FakeHost::new().with_now_unix_ms(10_000);
        host.cache_set("k", b"v", 1_000);
        host.advance_ms(999);
        assert_eq!(host.cache_get("k").as_deref(), Some(&b"v"[..]));
        host.advance_ms(1);
        assert_eq!(host.cache_get("k"), None);
    }

    #[test]
    fn cache_add_refuses_a_live_key_only() {
        let host = FakeHost::new();
        assert!(host.cache_add("nonce", b"1", 100));
        assert!(!host.cache_add("nonce", b"2", 100));
        assert_eq!(host.cache_get("nonce").as_deref(), Some(&b"1"[..]));
        host.advance_ms(100);
        assert!(host.cache_add("nonce", b"3", 100));
        host.clear_cache();
        assert_eq!(host.cache_get("nonce"), None);
    }

    #[test]
    fn logs_are_captured_in_order() {
        let host = FakeHost::new();
        host.log(LogLevel::Info, "one");
        host.log(LogLevel::Warn, "two");
        assert_eq!(
            host.logs(),
            [
                (LogLevel::Info, "one".into()),
                (LogLevel::Warn, "two".into())
            ]
        );
        assert!(host.logged("tw"));
    }

    #[test]
    fn clock_is_settable() {
        let host = FakeHost::new();
        assert_eq!(host.now_unix_ms(), DEFAULT_NOW_UNIX_MS);
        host.set_now_unix_ms(5);
        host.advance_ms(2);
        assert_eq!(host.now_unix_ms(), 7);
    }
}
