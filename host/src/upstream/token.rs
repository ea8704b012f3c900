//! Tokens for an upstream from an OAuth token endpoint: the request (client credentials or
//! RFC 8693 token exchange), and the caches that keep them.
//!
//! - **One token per route** ([`SharedToken`]): used until [`REFRESH_AHEAD`] (or half its
//!   lifetime, for short-lived tokens) before it expires, then fetched again. Fetches are
//!   single-flight: callers arriving while one runs wait for its answer, so any number of
//!   concurrent requests cause one fetch. A failed fetch is not retried for
//!   [`RETRY_AFTER`]; meanwhile a token still valid keeps being used and callers without
//!   one are refused at once (503), never sent on without a credential.
//! - **One token per caller** ([`ExchangedTokens`]): keyed by the SHA-256 of the caller's
//!   token (the chain verified it on this very request, so a revoked or expired caller
//!   token never reaches the cache), single-flight per key, bounded: when full, expired
//!   entries go first, then the tenth that expires soonest.
//! - **Refused by the upstream.** [`SharedToken::refused`] and [`ExchangedTokens::refused`]
//!   forget a token the upstream answered 401 to, only if it is still the current one, so
//!   a burst of 401s causes one new fetch, and at most once per [`REFUSALS_APART`].
//! - The token endpoint's answer must be JSON with `access_token`, `token_type` `Bearer`
//!   (any case) and, if present, a positive `expires_in`; without `expires_in` a token is
//!   kept for [`DEFAULT_LIFETIME`], and never longer than [`MAX_LIFETIME`]. Error answers
//!   are logged with their `error` code only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use serde::Deserialize;

use super::settings::{ACCESS_TOKEN_TYPE, CheckedEndpoint, ClientAuthMethod};
use crate::secret::SecretString;

/// How long before expiry a token is replaced.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(60);
/// How long after a failed fetch no new fetch is tried.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// A token's lifetime when the endpoint states none.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// The longest a token is kept, whatever the endpoint states.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// At most one token is forgotten because the upstream refused it per this interval: a
/// caller who makes the upstream answer 401 for reasons of its own cannot turn its requests
/// into a stream of token requests.
pub const REFUSALS_APART: Duration = Duration::from_secs(5);
/// The longest answer read from a token endpoint.
const MAX_ANSWER: usize = 64 * 1024;

/// A token, ready to send.
#[derive(Debug)]
pub struct Token {
    /// `Bearer <token>`, marked sensitive.
    pub header: HeaderValue,
    /// When it stops being valid.
    expires_at: Instant,
    /// When it is replaced.
    refresh_at: Instant,
}

impl Token {
    fn fresh(&self, now: Instant) -> bool {
        now < self.refresh_at
    }

    fn valid(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

/// Why no token could be had. The text names the endpoint and the cause, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub String);

/// A token endpoint and the client the gateway is there.
#[derive(Debug)]
pub struct TokenEndpoint {
    url: reqwest::Url,
    client_id: String,
    client_secret: SecretString,
    method: ClientAuthMethod,
    params: Vec<(&'static str, String)>,
    http: reqwest::Client,
}

impl TokenEndpoint {
    /// Reads the secret and the CA bundle now.
    pub fn build(endpoint: &CheckedEndpoint) -> Result<Self, String> {
        let client_secret = endpoint
            .client_secret
            .resolve()
            .map_err(|e| format!("`client_secret`: {e}"))?;
        let mut http = reqwest::Client::builder()
            .timeout(endpoint.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(endpoint.url.scheme() == "https");
        if let Some(bundle) = &endpoint.ca_bundle {
            let certs = crate::gateway::tls::certificates(bundle)
                .map_err(|e| format!("`ca_bundle`: {e}"))?;
            for cert in certs {
                let cert = reqwest::Certificate::from_der(&cert)
                    .map_err(|e| format!("`ca_bundle` `{}`: {e}", bundle.display()))?;
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Self {
            url: endpoint.url.clone(),
            client_id: endpoint.client_id.clone(),
            client_secret,
            method: endpoint.method,
            params: endpoint.params.clone(),
            http: http.build().map_err(|e| e.to_string())?,
        })
    }

    /// The client-credentials grant.
    pub async fn client_credentials(&self) -> Result<Token, TokenError> {
        self.request(&[("grant_type", "client_credentials")]).await
    }

    /// RFC 8693 token exchange of `subject_token`, of the RFC 8693 type `token_type`.
    pub async fn exchange(
        &self,
        subject_token: &str,
        token_type: &str,
    ) -> Result<Token, TokenError> {
        self.request(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject_token),
            ("subject_token_type", token_type),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
        ])
        .await
    }

    async fn request(&self, grant: &[(&str, &str)]) -> Result<Token, TokenError> {
        let fail = |what: String| TokenError(format!("token endpoint `{}`: {what}", self.url));
        let mut form: Vec<(&str, &str)> = grant.to_vec();
        form.extend(self.params.iter().map(|(k, v)| (*k, v.as_str())));
        let mut request = self.http.post(self.url.clone());
        match self.method {
            ClientAuthMethod::Basic => {
                // RFC 6749 §2.3.1: each part form-encoded before Basic.
                let encode = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                request = request.basic_auth(
                    encode(&self.client_id),
                    Some(encode(self.client_secret.expose())),
                );
            }
            ClientAuthMethod::Post => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", self.client_secret.expose()));
            }
        }
        let started = Instant::now();
        let response = request
            .header(http::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| fail(describe(&e)))?;
        let status = response.status();
        let body = read_limited(response)
            .await
            .map_err(|e| fail(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            let code = serde_json::from_slice::<ErrorAnswer>(&body)
                .ok()
                .and_then(|e| e.error)
                .unwrap_or_else(|| "no OAuth error code".into());
            return Err(fail(format!("answered {status} ({code})")));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|_| fail("answered with something other than a token response".into()))?;
        if !answer.token_type.eq_ignore_ascii_case("bearer") {
            return Err(fail(format!(
                "issued a `{}` token; only Bearer tokens can be sent",
                answer.token_type
            )));
        }
        let lifetime = match answer.expires_in {
            None => DEFAULT_LIFETIME,
            Some(s) if s > 0 => Duration::from_secs(s.unsigned_abs()).min(MAX_LIFETIME),
            Some(_) => return Err(fail("issued a token that has already expired".into())),
        };
        let mut header = HeaderValue::from_str(&format!("Bearer {}", answer.access_token))
            .map_err(|_| fail("issued a token that cannot be sent in a header".into()))?;
        header.set_sensitive(true);
        let expires_at = started + lifetime;
        Ok(Token {
            header,
            expires_at,
            refresh_at: expires_at - REFRESH_AHEAD.min(lifetime / 2),
        })
    }
}

fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "unreachable".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(format!("longer than {MAX_ANSWER} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    token_type: String,
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: Option<String>,
}

/// One token kept and fetched single-flight.
#[derive(Debug, Default)]
struct Slot {
    current: ArcSwapOption<Token>,
    /// Held while fetching; the time of the last failure, if any.
    fetching: tokio::sync::Mutex<Option<(Instant, TokenError)>>,
    /// Whether a refresh ahead of expiry runs in the background.
    refreshing: std::sync::atomic::AtomicBool,
    /// When a refusal last made this slot forget its token.
    last_refusal: Mutex<Option<Instant>>,
}

impl Slot {
    /// The token: the current one while fresh; while only due for replacement, still the
    /// current one, with one fetch started in the background (a slow or hung token
    /// endpoint never holds a request that has a valid token); with none valid, the
    /// answer of one fetch that every caller waits for.
    async fn get<F, Fut>(self: &Arc<Self>, fetch: F) -> Result<Arc<Token>, TokenError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, TokenError>> + Send + 'static,
    {
        let now = Instant::now();
        if let Some(token) = self.current.load_full() {
            if token.fresh(now) {
                return Ok(token);
            }
            if token.valid(now) {
                if !self
                    .refreshing
                    .swap(true, std::sync::atomic::Ordering::AcqRel)
                {
                    let slot = Arc::clone(self);
                    let fetching = fetch();
                    tokio::spawn(async move {
                        let mut failed = slot.fetching.lock().await;
                        let backing_off = failed
                            .as_ref()
                            .is_some_and(|(at, _)| at.elapsed() < RETRY_AFTER);
                        let replaced = slot
                            .current
                            .load()
                            .as_ref()
                            .is_some_and(|t| t.fresh(Instant::now()));
                        if !backing_off && !replaced {
                            slot.store(fetching.await, &mut failed);
                        }
                        drop(failed);
                        slot.refreshing
                            .store(false, std::sync::atomic::Ordering::Release);
                    });
                }
                return Ok(token);
            }
        }
        let mut failed = self.fetching.lock().await;
        if let Some(token) = self.current.load_full()
            && token.valid(Instant::now())
        {
            return Ok(token);
        }
        if let Some((at, error)) = &*failed
            && at.elapsed() < RETRY_AFTER
        {
            return Err(error.clone());
        }
        self.store(fetch().await, &mut failed);
        match self.current.load_full() {
            Some(token) if token.valid(Instant::now()) => Ok(token),
            _ => Err(failed
                .as_ref()
                .map_or_else(|| TokenError("no token".into()), |(_, e)| e.clone())),
        }
    }

    /// Keeps what a fetch gave: the token, or the failure (logged) and its time.
    fn store(
        &self,
        fetched: Result<Token, TokenError>,
        failed: &mut Option<(Instant, TokenError)>,
    ) {
        match fetched {
            Ok(token) => {
                self.current.store(Some(Arc::new(token)));
                *failed = None;
            }
            Err(error) => {
                tracing::warn!(%error, "could not fetch the upstream's token");
                *failed = Some((Instant::now(), error));
            }
        }
    }

    /// `token` was refused: forget it unless a refusal already did so less than
    /// [`REFUSALS_APART`] ago. Whether the request may be sent again (with the token that
    /// replaced it, or one to be fetched).
    fn refused(&self, token: &Arc<Token>) -> bool {
        let current = self.current.load_full();
        if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, token)) {
            // Already replaced: the retry takes the new one.
            return current.is_some();
        }
        let now = Instant::now();
        let mut last = self
            .last_refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| now.duration_since(at) < REFUSALS_APART) {
            return false;
        }
        *last = Some(now);
        self.current.rcu(|current| match current {
            Some(c) if Arc::ptr_eq(c, token) => None,
            other => other.clone(),
        });
        true
    }
}

/// A route's one client-credentials token.
#[derive(Debug)]
pub struct SharedToken {
    endpoint: Arc<TokenEndpoint>,
    slot: Arc<Slot>,
}

impl SharedToken {
    /// A cache for `endpoint`'s token; nothing is fetched until the first request.
    pub fn new(endpoint: TokenEndpoint) -> Self {
        Self {
            endpoint: Arc::new(endpoint),
            slot: Arc::default(),
        }
    }

    /// The token, fetched when there is none fresh.
    pub async fn get(&self) -> Result<Arc<Token>, TokenError> {
        let endpoint = Arc::clone(&self.endpoint);
        self.slot
            .get(|| async move { endpoint.client_credentials().await })
            .await
    }

    /// The upstream answered 401 to `token`: forget it (see [`REFUSALS_APART`]). Whether
    /// the request may be sent again.
    pub fn refused(&self, token: &Arc<Token>) -> bool {
        self.slot.refused(token)
    }
}

/// Callers' tokens exchanged, keyed by the SHA-256 of the caller's token.
#[derive(Debug)]
pub struct ExchangedTokens {
    endpoint: Arc<TokenEndpoint>,
    capacity: usize,
    slots: Mutex<HashMap<[u8; 32], Arc<Slot>>>,
}

/// The cache key of a caller's token.
pub type CallerKey = [u8; 32];

impl ExchangedTokens {
    /// An empty cache of at most `capacity` callers.
    pub fn new(endpoint: TokenEndpoint, capacity: usize) -> Self {
        Self {
            endpoint: Arc::new(endpoint),
            capacity,
            slots: Mutex::default(),
        }
    }

    /// The key of a caller known by `parts` (the caller's token, or the facts of its
    /// identity), each part length-prefixed so that no two lists share a key.
    pub fn key(parts: &[&str]) -> CallerKey {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        for part in parts {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part.as_bytes());
        }
        let mut key = [0; 32];
        key.copy_from_slice(context.finish().as_ref());
        key
    }

    /// The token for the caller `key`, exchanged when there is none fresh for the subject
    /// token `subject` makes (it is made only then) of the RFC 8693 type `token_type`.
    pub async fn get<F>(
        &self,
        key: CallerKey,
        subject: F,
        token_type: &'static str,
    ) -> Result<Arc<Token>, TokenError>
    where
        F: FnOnce() -> Result<String, TokenError>,
    {
        let slot = self.slot(key);
        let endpoint = Arc::clone(&self.endpoint);
        slot.get(|| {
            let subject_token = subject();
            async move { endpoint.exchange(&subject_token?, token_type).await }
        })
        .await
    }

    /// The upstream answered 401 to `token`, exchanged for the caller `key`: forget it (see
    /// [`REFUSALS_APART`]). Whether the request may be sent again.
    pub fn refused(&self, key: &CallerKey, token: &Arc<Token>) -> bool {
        let slot = self.lock().get(key).cloned();
        slot.is_some_and(|slot| slot.refused(token))
    }

    /// How many callers are cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CallerKey, Arc<Slot>>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn slot(&self, key: CallerKey) -> Arc<Slot> {
        let mut slots = self.lock();
        if let Some(slot) = slots.get(&key) {
            return Arc::clone(slot);
        }
        if slots.len() >= self.capacity {
            evict(&mut slots, self.capacity);
        }
        Arc::clone(slots.entry(key).or_default())
    }
}

/// Makes room: drops expired (or never filled) entries, then, if still full, the tenth of
/// the capacity that expires soonest. Entries being fetched stay.
fn evict(slots: &mut HashMap<CallerKey, Arc<Slot>>, capacity: usize) {
    let now = Instant::now();
    let busy = |slot: &Arc<Slot>| Arc::strong_count(slot) > 1;
    slots
        .retain(|_, slot| busy(slot) || slot.current.load().as_ref().is_some_and(|t| t.valid(now)));
    if slots.len() < capacity {
        return;
    }
    let mut by_expiry: Vec<(Instant, CallerKey)> = slots
        .iter()
        .filter(|(_, slot)| !busy(slot))
        .filter_map(|(key, slot)| Some((slot.current.load().as_ref()?.expires_at, *key)))
        .collect();
    by_expiry.sort_unstable();
    let drop = (capacity / 10).max(1);
    for (_, key) in by_expiry.into_iter().take(drop) {
        slots.remove(&key);
    }
}
