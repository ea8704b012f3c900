//! Rate limits: `[[rate_limits]]`, token buckets per identity, route, MCP tool or client
//! address, checked after the chain and the rules allowed a request (an unauthenticated
//! flood is the listener's limits' to bound, and must not spend an identity's budget).
//!
//! ```toml
//! [[rate_limits]]
//! name = "per-agent"        # names the limit in headers and metrics
//! per = ["subject"]         # any of subject, route, tool, client_ip (default: subject)
//! route = "/mcp"            # only requests under this route path (default: all)
//! tool = "search_*"         # only `tools/call` of matching tools, one token per call
//! requests = 60             # tokens added per window…
//! window_secs = 60          # …of this many seconds (default 1)
//! burst = 10                # bucket size (default `requests`)
//! ```
//!
//! - A request over a limit is refused with **429**, `Retry-After` (whole seconds until a
//!   token is back) and the IETF `RateLimit-Policy` / `RateLimit` fields naming the limit;
//!   counted in `portcullis_rate_limited_total{route,limit}`. Nothing reaches the upstream.
//! - Every limit that applies takes its tokens; the first one short refuses the request
//!   (the tokens already taken by the others are not given back: a refused request still
//!   cost its caller, which is what a limit is for).
//! - Buckets live in the gateway's memory, kept across reloads ([`Buckets`]), at most
//!   [`MAX_BUCKETS`] (full buckets are forgotten first: a full bucket is the same as none).
//!   They are per replica, unless `[shared]` names a Redis: then every replica takes from
//!   the same buckets there (one Lua script runs the same token bucket atomically, on
//!   Redis's clock), and when Redis does not answer the request passes uncounted (rate
//!   limits fail open; see [`crate::shared`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::engine::glob_match;
use crate::engine::rules::path_has_prefix;
use crate::shared::SharedState;
use crate::verdict::Identity;

/// The most buckets kept in memory.
pub const MAX_BUCKETS: usize = 100_000;

/// `[[rate_limits]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// The limit's name.
    pub name: String,
    /// What a bucket is kept per.
    pub per: Option<Vec<String>>,
    /// A route path prefix.
    pub route: Option<String>,
    /// A tool name glob.
    pub tool: Option<String>,
    /// Tokens per window.
    pub requests: u64,
    /// The window, seconds.
    pub window_secs: Option<u64>,
    /// Bucket size.
    pub burst: Option<u64>,
}

/// One checked limit.
#[derive(Debug, Clone)]
pub struct Limit {
    name: String,
    by_subject: bool,
    by_route: bool,
    by_tool: bool,
    by_client: bool,
    route: Option<String>,
    tool: Option<String>,
    capacity: f64,
    per_second: f64,
    policy: String,
}

impl RateLimitSettings {
    /// Checks the settings; the error is the key and the reason.
    pub fn check(&self) -> Result<Limit, (&'static str, String)> {
        if self.name.trim().is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err((
                "name",
                format!(
                    "`{}` is not a limit name: letters, digits, `-`, `_` and `.`",
                    self.name
                ),
            ));
        }
        let (mut by_subject, mut by_route, mut by_tool, mut by_client) =
            (false, false, false, false);
        for part in self.per.clone().unwrap_or_else(|| vec!["subject".into()]) {
            match part.as_str() {
                "subject" => by_subject = true,
                "route" => by_route = true,
                "tool" => by_tool = true,
                "client_ip" => by_client = true,
                other => {
                    return Err((
                        "per",
                        format!(
                            "`{other}` is not a dimension; use `subject`, `route`, `tool` or \
                             `client_ip`"
                        ),
                    ));
                }
            }
        }
        if let Some(route) = &self.route
            && !route.starts_with('/')
        {
            return Err((
                "route",
                format!("`{route}` is not a path; write e.g. `/mcp`"),
            ));
        }
        if self.tool.as_deref().is_some_and(str::is_empty) {
            return Err((
                "tool",
                "is empty; name a tool or a glob like `search_*`".into(),
            ));
        }
        if self.requests == 0 {
            return Err((
                "requests",
                "`0` would refuse every request; remove the route from the chain instead".into(),
            ));
        }
        let window = self.window_secs.unwrap_or(1);
        if !(1..=86_400).contains(&window) {
            return Err(("window_secs", "must be 1 to 86400".into()));
        }
        let burst = self.burst.unwrap_or(self.requests);
        if burst == 0 {
            return Err(("burst", "`0` would refuse every request".into()));
        }
        #[expect(
            clippy::cast_precision_loss,
            reason = "request counts are far below 2^52"
        )]
        let (capacity, per_second) = (burst as f64, self.requests as f64 / window as f64);
        Ok(Limit {
            name: self.name.clone(),
            by_subject,
            by_route,
            by_tool,
            by_client,
            route: self.route.clone(),
            tool: self.tool.clone(),
            capacity,
            per_second,
            policy: format!("\"{}\";q={};w={window}", self.name, self.requests),
        })
    }
}

/// A request over a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// The limit's name.
    pub limit: String,
    /// Whole seconds until a token is back.
    pub retry_after: u64,
    /// `RateLimit-Policy`.
    pub policy: String,
    /// `RateLimit`.
    pub state: String,
}

/// The token buckets, kept across reloads.
#[derive(Debug, Default)]
pub struct Buckets {
    map: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A site's limits and the gateway's buckets.
#[derive(Debug, Clone, Default)]
pub struct RateLimits {
    limits: Vec<Limit>,
    buckets: Arc<Buckets>,
    shared: Option<Arc<SharedState>>,
}

/// What a request is, for the limits.
#[derive(Debug)]
pub struct Request<'a> {
    /// The route's path.
    pub route: &'a str,
    /// The request's path.
    pub path: &'a str,
    /// Who.
    pub identity: &'a Identity,
    /// The provider that admitted it (a subject is only the same caller under one).
    pub provider: &'a str,
    /// From where.
    pub client: Option<IpAddr>,
    /// The tools it calls (`tools/call`), one entry per call.
    pub tools: &'a [String],
}

impl RateLimits {
    /// `limits` with fresh buckets.
    pub fn new(limits: Vec<Limit>) -> Self {
        Self {
            limits,
            buckets: Arc::default(),
            shared: None,
        }
    }

    /// Keeps the buckets in the fleet's Redis rather than in this process.
    #[must_use]
    pub fn with_shared(mut self, shared: Option<Arc<SharedState>>) -> Self {
        self.shared = shared;
        self
    }

    /// Takes over `previous`'s buckets (a reload keeps what callers have spent).
    pub fn keep_buckets(&mut self, previous: &Self) {
        self.buckets = Arc::clone(&previous.buckets);
    }

    /// Whether any limit is configured.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Takes the tokens `request` costs, from Redis when `[shared]` is on and from this
    /// process's buckets otherwise; the first limit short refuses it.
    pub async fn check_shared(&self, request: &Request<'_>, now: Instant) -> Result<(), Exceeded> {
        let Some(shared) = &self.shared else {
            return self.check(request, now);
        };
        for limit in &self.limits {
            for (key, cost) in limit.keys(request) {
                match shared
                    .take_tokens(&key, limit.capacity, limit.per_second, cost)
                    .await
                {
                    Ok(Ok(())) | Err(_) => {}
                    Ok(Err(tokens)) => return Err(limit.exceeded(tokens, cost)),
                }
            }
        }
        Ok(())
    }

    /// Takes the tokens `request` costs from this process's buckets; the first limit short
    /// refuses it.
    pub fn check(&self, request: &Request<'_>, now: Instant) -> Result<(), Exceeded> {
        for limit in &self.limits {
            for (key, cost) in limit.keys(request) {
                self.buckets.take(limit, &key, cost, now)?;
            }
        }
        Ok(())
    }
}

impl Limit {
    /// The buckets `request` takes from under this limit and how many tokens from each:
    /// none when the limit does not apply.
    fn keys(&self, request: &Request<'_>) -> Vec<(String, f64)> {
        if self
            .route
            .as_deref()
            .is_some_and(|route| !path_has_prefix(request.path, route))
        {
            return Vec::new();
        }
        let calls: Vec<&str> = match &self.tool {
            Some(glob) => request
                .tools
                .iter()
                .map(String::as_str)
                .filter(|tool| glob_match(glob, tool))
                .collect(),
            None if self.by_tool => {
                if request.tools.is_empty() {
                    vec![""]
                } else {
                    request.tools.iter().map(String::as_str).collect()
                }
            }
            None => vec![""],
        };
        // Calls to the same bucket are taken together.
        let mut per_key: Vec<(String, f64)> = Vec::new();
        for tool in calls {
            let key = self.key(request, tool);
            match per_key.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n += 1.0,
                None => per_key.push((key, 1.0)),
            }
        }
        per_key
    }

    /// The refusal of `cost` tokens when the bucket holds `tokens`.
    fn exceeded(&self, tokens: f64, cost: f64) -> Exceeded {
        let wait = (cost.min(self.capacity) - tokens) / self.per_second;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a wait of at most a day's window, non-negative"
        )]
        let retry_after = Duration::from_secs_f64(wait.max(0.0)).as_secs_f64().ceil() as u64;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "tokens are between 0 and the burst"
        )]
        let remaining = tokens.floor().max(0.0) as u64;
        Exceeded {
            limit: self.name.clone(),
            retry_after: retry_after.max(1),
            policy: self.policy.clone(),
            state: format!("\"{}\";r={remaining};t={}", self.name, retry_after.max(1)),
        }
    }

    fn key(&self, request: &Request<'_>, tool: &str) -> String {
        let mut key = self.name.clone();
        let mut part = |on: bool, value: &str| {
            key.push('\u{0}');
            if on {
                key.push_str(value);
            }
        };
        part(
            self.by_subject,
            &format!("{}\u{1}{}", request.provider, request.identity.subject),
        );
        part(self.by_route, request.route);
        part(self.by_tool, tool);
        part(
            self.by_client,
            &request.client.map(|ip| ip.to_string()).unwrap_or_default(),
        );
        key
    }
}

impl Buckets {
    fn take(&self, limit: &Limit, key: &str, cost: f64, now: Instant) -> Result<(), Exceeded> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_BUCKETS && !map.contains_key(key) {
            forget_full(&mut map, limit, now);
        }
        let bucket = map.entry(key.to_owned()).or_insert(Bucket {
            tokens: limit.capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.per_second).min(limit.capacity);
        bucket.at = now;
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            return Ok(());
        }
        Err(limit.exceeded(bucket.tokens, cost))
    }
}

/// Makes room: buckets that would be full by now are the same as none; if none is, the
/// tenth least recently used go.
fn forget_full(map: &mut HashMap<String, Bucket>, limit: &Limit, now: Instant) {
    map.retain(|_, b| {
        b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * limit.per_second
            < limit.capacity
    });
    if map.len() >= MAX_BUCKETS {
        let mut by_age: Vec<(Instant, String)> =
            map.iter().map(|(k, b)| (b.at, k.clone())).collect();
        by_age.sort_unstable();
        for (_, key) in by_age.into_iter().take(MAX_BUCKETS / 10) {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(text: &str) -> Limit {
        toml::from_str::<RateLimitSettings>(text)
            .expect("parse")
            .check()
            .expect("valid")
    }

    fn identity(subject: &str) -> Identity {
        Identity {
            subject: subject.into(),
            scopes: vec![],
            claims: vec![],
        }
    }

    #[test]
    fn a_bucket_refuses_past_its_burst_and_refills_at_its_rate() {
        let limits = RateLimits::new(vec![limit(
            "name = \"l\"\nrequests = 2\nwindow_secs = 1\nburst = 3",
        )]);
        let who = identity("a");
        let request = Request {
            route: "/mcp",
            path: "/mcp",
            identity: &who,
            provider: "keys",
            client: None,
            tools: &[],
        };
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limits.check(&request, t0).is_ok());
        }
        let refused = limits.check(&request, t0).expect_err("over the burst");
        assert_eq!(refused.retry_after, 1);
        assert_eq!(refused.policy, "\"l\";q=2;w=1");
        // Half a second later one token is back (2 per second).
        assert!(
            limits
                .check(&request, t0 + Duration::from_millis(500))
                .is_ok()
        );
        // Another subject has its own bucket.
        let other = identity("b");
        let request_b = Request {
            identity: &other,
            ..request
        };
        assert!(limits.check(&request_b, t0).is_ok());
    }

    #[test]
    fn a_tool_limit_counts_each_matching_call() {
        let limits = RateLimits::new(vec![limit(
            "name = \"t\"\ntool = \"search_*\"\nrequests = 3\nwindow_secs = 60",
        )]);
        let who = identity("a");
        let tools = vec![
            "search_web".to_owned(),
            "search_docs".to_owned(),
            "echo".to_owned(),
        ];
        let request = Request {
            route: "/mcp",
            path: "/mcp",
            identity: &who,
            provider: "keys",
            client: None,
            tools: &tools,
        };
        let now = Instant::now();
        assert!(limits.check(&request, now).is_ok(), "two of three tokens");
        assert!(
            limits.check(&request, now).is_err(),
            "two more than the one left"
        );
        let none = Request {
            tools: &[],
            ..request
        };
        assert!(
            limits.check(&none, now).is_ok(),
            "no matching call costs nothing"
        );
    }

    #[test]
    fn bad_settings_name_their_key() {
        for (text, key) in [
            ("name = \"\"\nrequests = 1", "name"),
            ("name = \"a b\"\nrequests = 1", "name"),
            ("name = \"a\"\nrequests = 0", "requests"),
            ("name = \"a\"\nrequests = 1\nper = [\"user\"]", "per"),
            ("name = \"a\"\nrequests = 1\nwindow_secs = 0", "window_secs"),
            ("name = \"a\"\nrequests = 1\nroute = \"mcp\"", "route"),
        ] {
            let err = toml::from_str::<RateLimitSettings>(text)
                .expect("parse")
                .check()
                .expect_err(text);
            assert_eq!(err.0, key, "{text}");
        }
    }
}
