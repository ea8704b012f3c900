//! Shared state for a fleet of gateways on Redis: `[shared] redis = "redis://…"`.
//!
//! Off by default: every replica keeps its state in its own memory. With one config line,
//! the state a replica alone cannot keep honest moves to one Redis all replicas share:
//!
//! | use | keys | when Redis is unreachable |
//! |---|---|---|
//! | Wasm providers' `cache-add` (replay windows) | `{prefix}cache:{provider}:{key}`, `SET NX PX` | **fails closed**: answers `false`, so a replay check treats the request as a replay (deny) |
//! | Wasm providers' `cache-get` / `cache-set` | the same keys, `GET` / `SET PX` | a miss / not stored (the provider recomputes) |
//! | rate-limit buckets | `{prefix}rl:{limit}…`, one Lua script (the same token bucket) | **fails open**: the request passes uncounted |
//! | API-key revocations (`portcullis keys revoke` publishes the key's hash) | `{prefix}revoked-keys:{provider}`, a set; `SISMEMBER` per API-key request | **fails closed**: the key is refused (503, as any provider error) |
//!
//! Every failure (a refused connection, an error reply, or no answer within `timeout_ms`)
//! counts in `portcullis_shared_state_errors_total{use}` (`use` is `cache`, `rate_limit`
//! or `revocation`) and is logged once per streak of failures, not once per request: a Redis
//! outage under load would otherwise flood the log. The connection is made on first use
//! and re-made by the client after a failure, so a gateway starts while Redis is down and
//! recovers when it is back, with no restart.
//!
//! Why these directions: a replay window that forgets, or a revocation not seen, is a bypass
//! (a captured signature accepted twice, a lost key still in use), so each fails closed like
//! every other provider failure (DESIGN §3); a rate limit is a guard for the upstream's
//! capacity, and refusing every request because the counter is away would turn a Redis
//! outage into a full outage.
//!
//! Each assembled site has its own [`SharedState`] (a reload makes a new connection and the
//! old one goes with the old site). With `[shared]` off nothing here runs: the rate limits
//! and the API-key provider check one `Option`, and the Wasm cache imports stay in memory
//! (they are async imports either way, so that a Redis round trip never blocks a thread).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::secret::{SecretRef, SecretString};

/// `prefix` when the config names none.
pub const DEFAULT_KEY_PREFIX: &str = "portcullis:";
/// `timeout_ms` when the config names none: a Redis on the same network answers in well
/// under a millisecond, and a Wasm provider's whole call budget is about 20 ms.
pub const DEFAULT_TIMEOUT_MS: u64 = 50;

/// `[shared]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShared {
    /// `redis://HOST:PORT/DB` (`rediss://` for TLS), or a secret reference holding one
    /// (`env://`, `file://`, `vault://`) when the URL carries a password.
    pub redis: String,
    /// Put before every key (default `portcullis:`), so fleets can share one Redis.
    pub key_prefix: Option<String>,
    /// How long one Redis command may take before it counts as a failure (default 50).
    pub timeout_ms: Option<u64>,
}

/// `[shared]`, checked.
#[derive(Debug, Clone)]
pub struct SharedSettings {
    /// The URL, or the reference to it.
    pub redis: SecretRef,
    /// Put before every key.
    pub key_prefix: String,
    /// The bound on one command.
    pub timeout: Duration,
}

impl RawShared {
    /// Checks the section; an error names the key and the reason.
    pub fn check(&self) -> Result<SharedSettings, (&'static str, String)> {
        let redis = if is_redis_url(&self.redis) {
            redis::Client::open(self.redis.as_str())
                .map_err(|e| ("redis", format!("not a Redis URL: {e}")))?;
            SecretRef::Literal(SecretString::new(&self.redis))
        } else {
            let reference = SecretRef::parse(&self.redis).map_err(|e| ("redis", e.to_string()))?;
            if reference.is_literal() {
                return Err((
                    "redis",
                    "write a `redis://HOST:PORT/DB` URL (`rediss://` for TLS), or a secret \
                     reference (`env://VAR`, `file://PATH`, `vault://…`) holding one"
                        .to_owned(),
                ));
            }
            reference
        };
        let key_prefix = self
            .key_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
        if key_prefix.is_empty()
            || key_prefix.len() > 64
            || key_prefix
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err((
                "key_prefix",
                format!(
                    "`{}` must be 1 to 64 bytes without spaces or control characters",
                    key_prefix.escape_debug()
                ),
            ));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=10_000).contains(&timeout_ms) {
            return Err((
                "timeout_ms",
                format!("{timeout_ms} is out of range; write 1 to 10000 milliseconds"),
            ));
        }
        Ok(SharedSettings {
            redis,
            key_prefix,
            timeout: Duration::from_millis(timeout_ms),
        })
    }
}

fn is_redis_url(s: &str) -> bool {
    s.starts_with("redis://") || s.starts_with("rediss://")
}

/// What a failure was counted against, the `use` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// The Wasm providers' cache.
    Cache,
    /// Rate-limit buckets.
    RateLimit,
    /// API-key revocations.
    Revocation,
}

impl Use {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Cache => "cache",
            Self::RateLimit => "rate_limit",
            Self::Revocation => "revocation",
        }
    }
}

/// Failures by [`Use`], since the process started; read by the metrics.
static ERRORS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// Whether a [`SharedState`] was ever made in this process, so the metric is present (at
/// zero) wherever `[shared]` is on.
static CONFIGURED: AtomicBool = AtomicBool::new(false);

/// Whether `[shared]` has been on in this process.
pub fn configured() -> bool {
    CONFIGURED.load(Ordering::Relaxed)
}

/// Failures of `use_` so far (the `portcullis_shared_state_errors_total` counter).
pub fn errors(use_: Use) -> u64 {
    ERRORS[use_ as usize].load(Ordering::Relaxed)
}

/// The one connection to the shared Redis of a gateway, made on first use.
pub struct SharedState {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    /// Whether the last command failed, so a streak of failures logs once.
    failing: AtomicBool,
}

/// Not the client: its connection info may hold the password.
impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A command that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer within `timeout_ms`.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// Takes `cost` tokens from the bucket at `KEYS[1]` if it holds them, refilling first.
/// ARGV: capacity, tokens per millisecond, cost. The clock is Redis's own (`TIME`), so
/// replicas with skewed clocks agree. Returns `{taken (0/1), tokens left ×1000}`.
const TAKE_SCRIPT: &str = r"
local capacity = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
if now > at then
  tokens = math.min(capacity, tokens + (now - at) * per_ms)
end
local taken = 0
if tokens >= cost then
  tokens = tokens - cost
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / per_ms) + 1000)
return {taken, math.floor(tokens * 1000)}
";

impl SharedState {
    /// A handle on the Redis of `settings`; connects on first use. Fails only when the
    /// reference cannot be read or is not a Redis URL.
    pub fn new(settings: &SharedSettings) -> Result<Arc<Self>, String> {
        let url = settings.redis.resolve().map_err(|e| e.to_string())?;
        if !is_redis_url(url.expose()) {
            return Err(format!(
                "`{}` does not hold a `redis://` or `rediss://` URL",
                settings.redis
            ));
        }
        let client = redis::Client::open(url.expose())
            .map_err(|e| format!("`{}` is not a Redis URL: {e}", settings.redis))?;
        CONFIGURED.store(true, Ordering::Relaxed);
        Ok(Arc::new(Self {
            client,
            connection: OnceCell::new(),
            prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            failing: AtomicBool::new(false),
        }))
    }

    /// The Redis key of a provider's cache entry: one namespace per provider. Provider
    /// names have no `:` (letters, digits, `-`, `_`), so no provider's keys can be spelled
    /// in another's namespace.
    fn cache_key(&self, provider: &str, key: &str) -> String {
        format!("{}cache:{provider}:{key}", self.prefix)
    }

    /// `cache-get`: `None` on a miss and on a failure.
    pub async fn cache_get(&self, provider: &str, key: &str) -> Option<Vec<u8>> {
        let key = self.cache_key(provider, key);
        self.run(Use::Cache, async |c| {
            redis::cmd("GET").arg(&key).query_async(c).await
        })
        .await
        .ok()
        .flatten()
    }

    /// `cache-set`: whether it stored.
    pub async fn cache_set(&self, provider: &str, key: &str, value: &[u8], ttl: Duration) -> bool {
        let key = self.cache_key(provider, key);
        let ms = ttl.as_millis().max(1);
        self.run(Use::Cache, async |c| {
            redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(u64::try_from(ms).unwrap_or(u64::MAX))
                .query_async::<()>(c)
                .await
        })
        .await
        .is_ok()
    }

    /// Removes a cache entry (a `cache-set` refused for its size leaves no older value).
    pub async fn cache_remove(&self, provider: &str, key: &str) {
        let key = self.cache_key(provider, key);
        let _ = self
            .run(Use::Cache, async |c| {
                redis::cmd("DEL").arg(&key).query_async::<()>(c).await
            })
            .await;
    }

    /// `cache-add` (`SET NX PX`): whether it stored; `false` on a failure, so a replay
    /// check fails closed.
    pub async fn cache_add(&self, provider: &str, key: &str, value: &[u8], ttl: Duration) -> bool {
        let key = self.cache_key(provider, key);
        let ms = ttl.as_millis().max(1);
        self.run(Use::Cache, async |c| {
            redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(u64::try_from(ms).unwrap_or(u64::MAX))
                .query_async::<Option<String>>(c)
                .await
        })
        .await
        .is_ok_and(|reply| reply.is_some())
    }

    /// The set of the API-key hashes revoked under `provider`.
    fn revoked_key(&self, provider: &str) -> String {
        format!("{}revoked-keys:{provider}", self.prefix)
    }

    /// Publishes the revocation of the key with `hash` (`sha256:<hex>`) of `provider`:
    /// every replica refuses it from its next request. Kept until removed by hand (`SREM`).
    pub async fn revoke_key(&self, provider: &str, hash: &str) -> Result<(), SharedError> {
        let set = self.revoked_key(provider);
        self.run(Use::Revocation, async |c| {
            redis::cmd("SADD")
                .arg(&set)
                .arg(hash)
                .query_async::<()>(c)
                .await
        })
        .await
    }

    /// Whether the key with `hash` of `provider` was revoked through the shared state.
    pub async fn is_key_revoked(&self, provider: &str, hash: &str) -> Result<bool, SharedError> {
        let set = self.revoked_key(provider);
        self.run(Use::Revocation, async |c| {
            redis::cmd("SISMEMBER")
                .arg(&set)
                .arg(hash)
                .query_async(c)
                .await
        })
        .await
    }

    /// Takes `cost` tokens from the shared bucket `key`: `Ok(Ok(()))` taken,
    /// `Ok(Err(tokens_left))` short, `Err` when Redis failed (the caller lets the request
    /// pass: rate limits fail open).
    pub async fn take_tokens(
        &self,
        key: &str,
        capacity: f64,
        per_second: f64,
        cost: f64,
    ) -> Result<Result<(), f64>, SharedError> {
        let key = format!("{}rl:{key}", self.prefix);
        let script = take_script();
        let (taken, left): (i64, i64) = self
            .run(Use::RateLimit, async |c| {
                script
                    .key(&key)
                    .arg(capacity)
                    .arg(per_second / 1000.0)
                    .arg(cost)
                    .invoke_async(c)
                    .await
            })
            .await?;
        #[expect(
            clippy::cast_precision_loss,
            reason = "thousandths of a token bounded by the burst"
        )]
        let left = left as f64 / 1000.0;
        Ok(if taken == 1 { Ok(()) } else { Err(left) })
    }

    /// Runs one command under the timeout, counting and logging failures.
    async fn run<T>(
        &self,
        use_: Use,
        command: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, SharedError> {
        let attempt = async {
            let connection = self
                .connection
                .get_or_try_init(|| {
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(self.timeout))
                        .set_number_of_retries(1);
                    ConnectionManager::new_with_config(self.client.clone(), config)
                })
                .await?;
            let mut connection = connection.clone();
            Ok::<T, SharedError>(command(&mut connection).await?)
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(SharedError::Timeout(self.timeout)),
        };
        match &result {
            Ok(_) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("shared state: redis answers again");
                }
            }
            Err(e) => {
                ERRORS[use_ as usize].fetch_add(1, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "shared state: redis failed ({e}); replay checks and key revocations fail closed, \
                         rate limits fail open, until it answers"
                    );
                }
            }
        }
        result
    }
}

fn take_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(TAKE_SCRIPT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(redis: &str) -> RawShared {
        RawShared {
            redis: redis.to_owned(),
            key_prefix: None,
            timeout_ms: None,
        }
    }

    #[test]
    fn a_url_or_a_reference_is_accepted_and_a_bare_word_is_not() {
        let s = raw("redis://127.0.0.1:6379/0").check().expect("url");
        assert_eq!(s.key_prefix, DEFAULT_KEY_PREFIX);
        assert_eq!(s.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
        raw("rediss://cache.internal:6380/1").check().expect("tls");
        raw("env://REDIS_URL").check().expect("reference");
        let (key, reason) = raw("localhost:6379").check().expect_err("bare");
        assert_eq!(key, "redis");
        assert!(reason.contains("redis://"), "{reason}");
        let (key, _) = raw("http://x").check().expect_err("scheme");
        assert_eq!(key, "redis");
    }

    #[test]
    fn bad_prefix_and_timeout_name_their_key() {
        let mut r = raw("redis://127.0.0.1/0");
        r.key_prefix = Some("a b".into());
        assert_eq!(r.check().expect_err("prefix").0, "key_prefix");
        r.key_prefix = None;
        r.timeout_ms = Some(0);
        assert_eq!(r.check().expect_err("timeout").0, "timeout_ms");
    }
}
