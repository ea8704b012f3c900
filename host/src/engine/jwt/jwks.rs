//! Remote key sets: fetching a JWKS (from `jwks_url`, or through OIDC discovery), caching
//! the parsed keys of one issuer, and refetching them.
//!
//! - The cache lives for the response's `Cache-Control: max-age`, clamped to
//!   [`TTL_FLOOR`]..=[`TTL_CEILING`], or [`TTL_DEFAULT`] without one. A stale set keeps
//!   serving while one background task refreshes it.
//! - An unknown `kid` triggers a refetch that is single-flight (requests that arrive while a
//!   fetch runs wait for it and share its result) and rate-limited (no fetch starts within
//!   `min_refetch_interval` of the previous attempt), so a flood of random `kid`s costs the
//!   IdP at most one request per interval.
//! - A failed fetch (error status, timeout, oversized or unparsable answer) keeps the last
//!   good keys and logs a warning.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::keys::{JwksError, KeySet};
use super::settings::fetchable;

/// Shortest cache lifetime, whatever the IdP says.
pub const TTL_FLOOR: Duration = Duration::from_secs(60);
/// Longest cache lifetime, whatever the IdP says.
pub const TTL_CEILING: Duration = Duration::from_secs(24 * 60 * 60);
/// Cache lifetime when the IdP sends no `max-age`.
pub const TTL_DEFAULT: Duration = Duration::from_secs(300);
/// Largest JWKS or discovery document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Counters of key-set fetches (discovery requests are part of the fetch they serve).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JwksFetchStats {
    /// Fetches started.
    pub attempts: u64,
    /// Fetches that replaced the key set.
    pub successes: u64,
    /// Fetches that failed; the previous keys were kept.
    pub failures: u64,
}

/// Why a key set could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum JwksFetchError {
    /// The request failed (connection, TLS, timeout, redirect policy).
    #[error("request to {url} failed: {reason}")]
    Request {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered with a non-success status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The document is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("{url} sent more than 1 MiB")]
    TooLarge {
        /// The URL.
        url: String,
    },
    /// The document is not a usable JWKS.
    #[error("{url} is {source}")]
    Jwks {
        /// The URL.
        url: String,
        /// What is wrong.
        source: JwksError,
    },
    /// The discovery document is unusable.
    #[error("discovery document {url}: {reason}")]
    Discovery {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The previous attempt was too recent.
    #[error("the previous key-set fetch was less than `min_refetch_interval_secs` ago")]
    RateLimited,
}

/// Where a remote key set is fetched from.
#[derive(Debug, Clone)]
pub(super) enum RemoteSource {
    Jwks(reqwest::Url),
    Discovery(reqwest::Url),
}

/// A key set and how long it may be used before it is refreshed.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    pub keys: KeySet,
    /// `None` until the first successful fetch.
    pub fresh_until: Option<Instant>,
}

/// The cached keys of one issuer and the machinery that refreshes them.
#[derive(Debug)]
pub(super) struct RemoteKeys {
    issuer: String,
    source: RemoteSource,
    client: reqwest::Client,
    current: RwLock<Arc<Snapshot>>,
    /// Held for the whole of a fetch (single flight); holds the discovered `jwks_uri`.
    fetch_lock: tokio::sync::Mutex<Option<reqwest::Url>>,
    /// Bumped when a fetch ends, successful or not.
    generation: AtomicU64,
    epoch: Instant,
    /// Milliseconds from `epoch` to the start of the last attempt; `u64::MAX` for never.
    last_attempt_ms: AtomicU64,
    refreshing: AtomicBool,
    min_interval: Duration,
    attempts: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

impl RemoteKeys {
    pub(super) fn new(
        issuer: String,
        source: RemoteSource,
        timeout: Duration,
        min_interval: Duration,
    ) -> Result<Self, reqwest::Error> {
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= 3 {
                attempt.error("more than 3 redirects")
            } else if fetchable(attempt.url()).is_err() {
                attempt.error("redirect to a URL that is not https")
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(redirects)
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            issuer,
            source,
            client,
            current: RwLock::default(),
            fetch_lock: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            epoch: Instant::now(),
            last_attempt_ms: AtomicU64::new(u64::MAX),
            refreshing: AtomicBool::new(false),
            min_interval,
            attempts: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// The keys in use now.
    pub(super) fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Changes whenever a fetch ends; pass it to [`Self::refetch`].
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(super) fn stats(&self) -> JwksFetchStats {
        JwksFetchStats {
            attempts: self.attempts.load(Ordering::Relaxed),
            successes: self.successes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Fetches again because a key was missing from the set seen at `seen_generation`.
    /// Returns at once if a fetch ended since (its result is at least as new), and refuses
    /// to start one within `min_refetch_interval` of the previous attempt.
    pub(super) async fn refetch(&self, seen_generation: u64) -> Result<(), JwksFetchError> {
        let mut discovered = self.fetch_lock.lock().await;
        if self.generation() != seen_generation {
            return Ok(());
        }
        if self.rate_limited(Instant::now()) {
            return Err(JwksFetchError::RateLimited);
        }
        self.fetch_locked(&mut discovered).await.map(drop)
    }

    /// Fetches now, waiting for a fetch in progress first; ignores the rate limit. For
    /// warming the cache at start-up and for operators.
    pub(super) async fn refresh(&self) -> Result<usize, JwksFetchError> {
        let mut discovered = self.fetch_lock.lock().await;
        self.fetch_locked(&mut discovered).await
    }

    /// Starts a background refresh when `snapshot` is past its lifetime, unless one is
    /// running or the rate limit forbids it. Requests never wait for this.
    pub(super) fn refresh_if_stale(self: &Arc<Self>, snapshot: &Snapshot, now: Instant) {
        let stale = snapshot.fresh_until.is_some_and(|until| now >= until);
        if !stale || self.rate_limited(now) || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.refreshing.store(false, Ordering::Release);
            return;
        };
        let this = Arc::clone(self);
        runtime.spawn(async move {
            let seen = this.generation();
            // Failures are logged and counted inside; the stale keys keep serving.
            let _ = this.refetch(seen).await;
            this.refreshing.store(false, Ordering::Release);
        });
    }

    fn rate_limited(&self, now: Instant) -> bool {
        let last = self.last_attempt_ms.load(Ordering::Acquire);
        last != u64::MAX
            && self.millis(now).saturating_sub(last) < self.min_interval.as_millis() as u64
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1)
    }

    async fn fetch_locked(
        &self,
        discovered: &mut Option<reqwest::Url>,
    ) -> Result<usize, JwksFetchError> {
        self.last_attempt_ms
            .store(self.millis(Instant::now()), Ordering::Release);
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let result = self.fetch_keys(discovered).await;
        let outcome = match result {
            Ok((keys, ttl)) => {
                let count = keys.len();
                let snapshot = Arc::new(Snapshot {
                    keys,
                    fresh_until: Some(Instant::now() + ttl),
                });
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = snapshot;
                self.successes.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(issuer = %self.issuer, keys = count, ttl_secs = ttl.as_secs(), "fetched the issuer's key set");
                Ok(count)
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                // The discovered URL may be what changed; look it up again next time.
                *discovered = None;
                tracing::warn!(issuer = %self.issuer, %error, "key-set fetch failed; keeping the last good keys");
                Err(error)
            }
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    async fn fetch_keys(
        &self,
        discovered: &mut Option<reqwest::Url>,
    ) -> Result<(KeySet, Duration), JwksFetchError> {
        let url = match (&self.source, discovered.as_ref()) {
            (RemoteSource::Jwks(url), _) => url.clone(),
            (RemoteSource::Discovery(_), Some(url)) => url.clone(),
            (RemoteSource::Discovery(config_url), None) => {
                let url = self.discover(config_url).await?;
                *discovered = Some(url.clone());
                url
            }
        };
        let (body, cache_control) = self.get(&url).await?;
        let keys = KeySet::from_jwks(&body).map_err(|source| JwksFetchError::Jwks {
            url: url.to_string(),
            source,
        })?;
        Ok((keys, ttl_from_cache_control(cache_control.as_deref())))
    }

    async fn discover(&self, config_url: &reqwest::Url) -> Result<reqwest::Url, JwksFetchError> {
        let bad = |reason| JwksFetchError::Discovery {
            url: config_url.to_string(),
            reason,
        };
        let (body, _) = self.get(config_url).await?;
        let doc: DiscoveryDocument = serde_json::from_slice(&body)
            .map_err(|_| bad("not JSON with `issuer` and `jwks_uri`"))?;
        if doc.issuer != self.issuer {
            return Err(bad("its `issuer` is not the configured issuer"));
        }
        let url = reqwest::Url::parse(&doc.jwks_uri).map_err(|_| bad("`jwks_uri` is not a URL"))?;
        fetchable(&url).map_err(|_| bad("`jwks_uri` is not https"))?;
        Ok(url)
    }

    /// GETs `url`, refusing error statuses and bodies over [`MAX_DOCUMENT_BYTES`].
    async fn get(&self, url: &reqwest::Url) -> Result<(Vec<u8>, Option<String>), JwksFetchError> {
        let request_failed = |e: reqwest::Error| JwksFetchError::Request {
            url: url.to_string(),
            reason: e.without_url().to_string(),
        };
        let mut response = self
            .client
            .get(url.clone())
            .header(
                http::header::ACCEPT,
                "application/json, application/jwk-set+json",
            )
            .send()
            .await
            .map_err(request_failed)?;
        let status = response.status();
        if !status.is_success() {
            return Err(JwksFetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let too_large = || JwksFetchError::TooLarge {
            url: url.to_string(),
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(too_large());
        }
        let cache_control = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_failed)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, cache_control))
    }
}

/// The cache lifetime a `Cache-Control` header asks for, within the floor and ceiling.
/// `no-cache` / `no-store` mean "as short as allowed"; `s-maxage` is for shared caches and
/// is ignored.
pub fn ttl_from_cache_control(value: Option<&str>) -> Duration {
    let Some(value) = value else {
        return TTL_DEFAULT;
    };
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        match directive.split_once('=') {
            Some((name, secs)) if name.trim().eq_ignore_ascii_case("max-age") => {
                max_age = secs.trim().trim_matches('"').parse::<u64>().ok();
            }
            None if directive.eq_ignore_ascii_case("no-cache")
                || directive.eq_ignore_ascii_case("no-store") =>
            {
                return TTL_FLOOR;
            }
            _ => {}
        }
    }
    max_age.map_or(TTL_DEFAULT, |secs| {
        Duration::from_secs(secs).clamp(TTL_FLOOR, TTL_CEILING)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_defaults_to_five_minutes_without_max_age() {
        assert_eq!(ttl_from_cache_control(None), TTL_DEFAULT);
        assert_eq!(ttl_from_cache_control(Some("public")), TTL_DEFAULT);
        assert_eq!(ttl_from_cache_control(Some("max-age=soon")), TTL_DEFAULT);
    }

    #[test]
    fn ttl_follows_max_age_within_floor_and_ceiling() {
        let secs = |s| Duration::from_secs(s);
        assert_eq!(
            ttl_from_cache_control(Some("public, max-age=3600")),
            secs(3600)
        );
        assert_eq!(ttl_from_cache_control(Some("Max-Age=\"900\"")), secs(900));
        assert_eq!(ttl_from_cache_control(Some("max-age=5")), TTL_FLOOR);
        assert_eq!(ttl_from_cache_control(Some("max-age=0")), TTL_FLOOR);
        assert_eq!(
            ttl_from_cache_control(Some("max-age=31536000")),
            TTL_CEILING
        );
        assert_eq!(
            ttl_from_cache_control(Some("s-maxage=9000, max-age=120")),
            secs(120)
        );
    }

    #[test]
    fn no_store_uses_the_floor() {
        assert_eq!(ttl_from_cache_control(Some("no-store")), TTL_FLOOR);
        assert_eq!(
            ttl_from_cache_control(Some("max-age=600, no-cache")),
            TTL_FLOOR
        );
    }

    fn remote(min_interval: Duration) -> RemoteKeys {
        let url = reqwest::Url::parse("http://127.0.0.1:9/jwks").expect("url");
        RemoteKeys::new(
            "https://issuer".into(),
            RemoteSource::Jwks(url),
            Duration::from_secs(1),
            min_interval,
        )
        .expect("client")
    }

    #[test]
    fn rate_limit_counts_from_the_last_attempt() {
        let keys = remote(Duration::from_secs(10));
        let now = Instant::now();
        assert!(!keys.rate_limited(now), "never fetched");
        keys.last_attempt_ms
            .store(keys.millis(now), Ordering::Release);
        assert!(keys.rate_limited(now + Duration::from_secs(9)));
        assert!(!keys.rate_limited(now + Duration::from_secs(10)));
        assert!(!remote(Duration::ZERO).rate_limited(now));
    }

    #[tokio::test]
    async fn failed_fetch_keeps_the_previous_keys_and_counts() {
        // Port 9 (discard) on loopback: nothing listens, the connection is refused.
        let keys = remote(Duration::ZERO);
        let before = keys.snapshot();
        let err = keys.refresh().await.expect_err("nothing listens");
        assert!(matches!(err, JwksFetchError::Request { .. }), "{err}");
        assert!(Arc::ptr_eq(&before, &keys.snapshot()));
        assert_eq!(
            keys.stats(),
            JwksFetchStats {
                attempts: 1,
                successes: 0,
                failures: 1
            }
        );
        assert_eq!(keys.generation(), 1);
    }

    #[tokio::test]
    async fn refetch_after_another_fetch_ended_does_not_fetch_again() {
        let keys = remote(Duration::ZERO);
        let seen = keys.generation();
        let _ = keys.refresh().await;
        keys.refetch(seen).await.expect("joins the finished fetch");
        assert_eq!(keys.stats().attempts, 1);
    }

    #[tokio::test]
    async fn refetch_inside_the_interval_is_refused_without_a_request() {
        let keys = remote(Duration::from_secs(3600));
        let _ = keys.refresh().await;
        let err = keys
            .refetch(keys.generation())
            .await
            .expect_err("rate limited");
        assert!(matches!(err, JwksFetchError::RateLimited));
        assert_eq!(keys.stats().attempts, 1);
    }
}
