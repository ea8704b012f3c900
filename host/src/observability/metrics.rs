//! Prometheus metrics, served at `/metrics` in the text exposition format.
//!
//! | metric | labels |
//! |---|---|
//! | `portcullis_requests_total` | `route`, `status` |
//! | `portcullis_decisions_total` | `provider`, `verdict` (`allow`, `deny`, `abstain`, `error`) |
//! | `portcullis_provider_duration_seconds` | `provider` |
//! | `portcullis_wasm_failures_total` | `provider`, `kind` (`trap`, `timeout`, `unavailable`, `other`) |
//! | `portcullis_rate_limited_total` | `route`, `limit` |
//! | `portcullis_upstream_errors_total` | `route`, `kind` (`connect`, `tls`, `timeout`, `credential`, `refused`, `other`) |
//! | `portcullis_jwks_fetches_total` | `provider`, `result` (`success`, `failure`) |
//! | `portcullis_jwt_token_cache_total` | `provider`, `result` (`hit`, `miss`) |
//! | `portcullis_reloads_total` | `result` (`success`, `failure`) |
//! | `portcullis_secret_refreshes_total` | `source` (`vault`), `result` (`success`, `failure`) |
//! | `portcullis_shared_state_errors_total` | `use` (`cache`, `rate_limit`, `revocation`): Redis commands of `[shared]` that failed or timed out (see [`crate::shared`]) |
//! | `portcullis_secrets_stale` | (gauge: 1 while a last good secret value is served unconfirmed) |
//! | `portcullis_api_key_last_used_seconds` | `provider`, `key` (gauge: Unix seconds of the key's last successful authentication; keys unused since start are absent) |

use std::sync::{Arc, Mutex, OnceLock, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap;

use crate::engine::api_key::ApiKeyValidator;
use crate::engine::jwt::JwtValidator;
use crate::engine::{StepOutcome, Trace};
use crate::secret::SecretCache;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    provider: String,
    verdict: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    provider: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    route: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimitLabels {
    route: String,
    limit: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OAuthLabels {
    endpoint: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JwksLabels {
    provider: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

type HistogramFamily = Family<ProviderLabels, Histogram, fn() -> Histogram>;

/// A [`StepOutcome`]'s place in [`ProviderHandles::decisions`].
fn outcome_slot(outcome: StepOutcome) -> usize {
    match outcome {
        StepOutcome::Allow => 0,
        StepOutcome::Deny => 1,
        StepOutcome::Abstain => 2,
        StepOutcome::Error => 3,
    }
}

/// Statuses 100 to 599 have a resolved counter slot each.
const STATUS_SLOTS: usize = 500;

/// One route's request counters, resolved from the family on first use. A request then
/// costs one lookup by route name with a fast hasher (labels come from config, not from
/// clients) instead of allocating label strings and SipHash-ing them in the family.
#[derive(Debug)]
struct RouteHandles {
    statuses: Box<[OnceLock<Counter>]>,
}

impl Default for RouteHandles {
    fn default() -> Self {
        Self {
            statuses: (0..STATUS_SLOTS).map(|_| OnceLock::new()).collect(),
        }
    }
}

/// One provider's decision counters (by [`StepOutcome`]) and latency histogram, resolved
/// on first use like [`RouteHandles`]. Unused label sets stay out of the exposition.
#[derive(Debug, Default)]
struct ProviderHandles {
    decisions: [OnceLock<Counter>; 4],
    latency: OnceLock<Histogram>,
}

/// The gateway's metrics. One per process; shared by every configuration it runs.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    latency: HistogramFamily,
    wasm_failures: Family<KindLabels, Counter>,
    upstream_errors: Family<UpstreamLabels, Counter>,
    rate_limited: Family<RateLimitLabels, Counter>,
    jwks: Arc<JwksCollector>,
    api_keys: Arc<ApiKeysCollector>,
    secrets: Arc<SecretsCollector>,
    reloads: Family<ReloadLabels, Counter>,
    oauth: Family<OAuthLabels, Counter>,
    identity: Family<OAuthLabels, Counter>,
    routes: RwLock<FxHashMap<String, Box<RouteHandles>>>,
    providers: RwLock<FxHashMap<String, Box<ProviderHandles>>>,
}

fn latency_histogram() -> Histogram {
    // 1 µs to ~1 s: built-in validators sit at the bottom, remote JWKS fetches at the top.
    Histogram::new(exponential_buckets(1e-6, 4.0, 11))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Provider verdicts, by provider and verdict",
            decisions.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "provider_duration_seconds",
            "Time spent in each provider per request",
            latency.clone(),
        );
        let wasm_failures = Family::<KindLabels, Counter>::default();
        registry.register(
            "wasm_failures",
            "Wasm provider calls that trapped, timed out or failed otherwise",
            wasm_failures.clone(),
        );
        let rate_limited = Family::<RateLimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit",
            rate_limited.clone(),
        );
        let upstream_errors = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream requests that failed to connect, timed out or broke",
            upstream_errors.clone(),
        );
        let jwks = Arc::new(JwksCollector::default());
        registry.register_collector(Box::new(jwks.clone()));
        let api_keys = Arc::new(ApiKeysCollector::default());
        registry.register_collector(Box::new(api_keys.clone()));
        let secrets = Arc::new(SecretsCollector::default());
        registry.register_collector(Box::new(secrets.clone()));
        registry.register_collector(Box::new(SharedStateCollector));
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "reloads",
            "Reloads of the config and its components, by result",
            reloads.clone(),
        );
        let oauth = Family::<OAuthLabels, Counter>::default();
        registry.register(
            "oauth_requests",
            "Authorization-server requests, by endpoint and result (`ok` or the OAuth error)",
            oauth.clone(),
        );
        let identity = Family::<OAuthLabels, Counter>::default();
        registry.register(
            "identity_requests",
            "Identity CA requests (register, rotate, ca.pem) and client certificates it refused \
             (endpoint `handshake` or `request`), by result",
            identity.clone(),
        );
        Self {
            registry,
            requests,
            decisions,
            latency,
            wasm_failures,
            upstream_errors,
            rate_limited,
            jwks,
            api_keys,
            secrets,
            reloads,
            oauth,
            identity,
            routes: RwLock::default(),
            providers: RwLock::default(),
        }
    }

    /// Counts one reload attempt that was swapped in (`true`) or rejected (`false`).
    pub fn reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Counts one answered request.
    pub fn request(&self, route: &str, status: u16) {
        let counter = || {
            self.requests
                .get_or_create(&RequestLabels {
                    route: route.to_owned(),
                    status,
                })
                .clone()
        };
        let slot = usize::from(status.wrapping_sub(100));
        if slot >= STATUS_SLOTS {
            // Not an HTTP status hyper would send; counted the slow way.
            counter().inc();
            return;
        }
        self.with_handles(&self.routes, route, |counters: &RouteHandles| {
            counters.statuses[slot].get_or_init(counter).inc();
        });
    }

    /// Counts each step of a decision and its latency.
    pub fn decision(&self, trace: &Trace) {
        for step in &trace.steps {
            let provider = step.provider.as_str();
            self.with_handles(&self.providers, provider, |handles: &ProviderHandles| {
                let verdict = step.outcome;
                handles.decisions[outcome_slot(verdict)]
                    .get_or_init(|| {
                        self.decisions
                            .get_or_create(&DecisionLabels {
                                provider: provider.to_owned(),
                                verdict: verdict.as_str(),
                            })
                            .clone()
                    })
                    .inc();
                // Precision loss is irrelevant at microsecond scale.
                #[expect(clippy::cast_precision_loss, reason = "microseconds fit in f64")]
                let seconds = step.micros as f64 / 1e6;
                handles
                    .latency
                    .get_or_init(|| {
                        self.latency
                            .get_or_create(&ProviderLabels {
                                provider: provider.to_owned(),
                            })
                            .clone()
                    })
                    .observe(seconds);
            });
            if step.outcome == StepOutcome::Error {
                // The runtime's errors read "provider `x` timed out …" / "… trapped: …" /
                // "… has no instance available: …" (pool exhausted or concurrency cap hit).
                let kind = if step.reason.contains("timed out") {
                    "timeout"
                } else if step.reason.contains("trapped") {
                    "trap"
                } else if step.reason.contains("no instance available") {
                    "unavailable"
                } else {
                    "other"
                };
                self.wasm_failures
                    .get_or_create(&KindLabels {
                        provider: provider.to_owned(),
                        kind,
                    })
                    .inc();
            }
        }
    }

    /// Runs `f` with the resolved handles of `label`, creating them on first use.
    fn with_handles<H: Default>(
        &self,
        map: &RwLock<FxHashMap<String, Box<H>>>,
        label: &str,
        f: impl FnOnce(&H),
    ) {
        if let Some(handles) = map.read().unwrap_or_else(|p| p.into_inner()).get(label) {
            return f(handles);
        }
        let mut map = map.write().unwrap_or_else(|p| p.into_inner());
        f(map.entry(label.to_owned()).or_default());
    }

    /// Counts one authorization-server request at `endpoint` with `result` (`ok` or the
    /// OAuth error code).
    pub fn oauth(&self, endpoint: &'static str, result: &'static str) {
        self.oauth
            .get_or_create(&OAuthLabels { endpoint, result })
            .inc();
    }

    /// Counts one identity-CA event at `endpoint` (`register`, `rotate`, `ca.pem`, or
    /// `handshake`/`request` for a refused certificate) with `result`.
    pub fn identity(&self, endpoint: &'static str, result: &'static str) {
        self.identity
            .get_or_create(&OAuthLabels { endpoint, result })
            .inc();
    }

    /// Counts a failed upstream request (`connect`, `timeout` or `other`).
    pub fn rate_limited(&self, route: &str, limit: &str) {
        self.rate_limited
            .get_or_create(&RateLimitLabels {
                route: route.to_owned(),
                limit: limit.to_owned(),
            })
            .inc();
    }

    /// Counts an upstream failure of `kind` on `route`.
    pub fn upstream_error(&self, route: &str, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamLabels {
                route: route.to_owned(),
                kind,
            })
            .inc();
    }

    /// Replaces the JWT validators whose key-fetch counters are exported.
    pub fn set_jwt_validators(&self, validators: Vec<(String, Arc<JwtValidator>)>) {
        *self
            .jwks
            .validators
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = validators;
    }

    /// Replaces the API-key validators whose keys' last-used times are exported.
    pub fn set_api_key_validators(&self, validators: Vec<Arc<ApiKeyValidator>>) {
        *self
            .api_keys
            .validators
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = validators;
    }

    /// The secret cache whose reads are exported.
    pub fn set_secrets(&self, cache: Arc<SecretCache>) {
        *self.secrets.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(cache);
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One counter family read from every JWT validator: `counts` gives each `result` label
/// and its value.
fn encode_validator_counters(
    encoder: &mut DescriptorEncoder,
    validators: &[(String, Arc<JwtValidator>)],
    name: &str,
    help: &str,
    counts: impl Fn(&JwtValidator) -> [(&'static str, u64); 2],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (provider, validator) in validators {
        for (result, value) in counts(validator) {
            let labels = JwksLabels {
                provider: provider.clone(),
                result,
            };
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// Reads the JWT validators' own counters at scrape time.
#[derive(Debug, Default)]
struct JwksCollector {
    validators: Mutex<Vec<(String, Arc<JwtValidator>)>>,
}

impl Collector for JwksCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let validators = self
            .validators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // The registry adds the `portcullis_` prefix to collectors' names too.
        encode_validator_counters(
            &mut encoder,
            &validators,
            "jwks_fetches",
            "JWKS and discovery fetches, by provider and result",
            |v| {
                let stats = v.fetch_stats();
                [("success", stats.successes), ("failure", stats.failures)]
            },
        )?;
        encode_validator_counters(
            &mut encoder,
            &validators,
            "jwt_token_cache",
            "JWTs answered from the verified-token cache (hit) or verified (miss), by provider",
            |v| {
                let stats = v.token_cache_stats();
                [("hit", stats.hits), ("miss", stats.misses)]
            },
        )?;
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    provider: String,
    key: String,
}

/// Reads the API-key validators' last-used times at scrape time: the hot path only stores
/// an integer, and nothing is kept for keys that are gone.
#[derive(Debug, Default)]
struct ApiKeysCollector {
    validators: Mutex<Vec<Arc<ApiKeyValidator>>>,
}

impl Collector for ApiKeysCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let validators = self
            .validators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut family = encoder.encode_descriptor(
            "api_key_last_used_seconds",
            "Unix time of each API key's last successful authentication, by provider and key",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for validator in &validators {
            for (key, at) in validator.last_used() {
                let labels = KeyLabels {
                    provider: validator.provider().to_owned(),
                    key: key.to_owned(),
                };
                ConstGauge::new(at).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SecretLabels {
    source: &'static str,
    result: &'static str,
}

/// `portcullis_shared_state_errors_total`, read from [`crate::shared`]'s counters; present
/// once a `[shared]` Redis has been configured in this process.
#[derive(Debug)]
struct SharedStateCollector;

impl Collector for SharedStateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use crate::shared::{Use, configured, errors};
        if !configured() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "shared_state_errors",
            "Redis commands of the shared state that failed or timed out, by use",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for use_ in [Use::Cache, Use::RateLimit, Use::Revocation] {
            let labels = [("use", use_.label())];
            ConstCounter::new(errors(use_)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Reads the secret cache's counters at scrape time; silent until Vault was read.
#[derive(Debug, Default)]
struct SecretsCollector {
    cache: Mutex<Option<Arc<SecretCache>>>,
}

impl Collector for SecretsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(cache) = cache else {
            return Ok(());
        };
        let (successes, failures, stale) = cache.counts();
        if successes + failures == 0 {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "secret_refreshes",
            "Reads of every secret reference from a secret store, by source and result",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (result, value) in [("success", successes), ("failure", failures)] {
            let labels = SecretLabels {
                source: "vault",
                result,
            };
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        let gauge = encoder.encode_descriptor(
            "secrets_stale",
            "1 while a secret value is a last good value the secret store did not confirm",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(stale)).encode(gauge)?;
        Ok(())
    }
}
