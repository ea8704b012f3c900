//! The JWKS endpoint misbehaving behind a real gateway: down at start, down after keys were
//! fetched, slower than the fetch timeout, serving garbage, and rotating keys while clients
//! keep calling. The IdP is a real HTTP server on 127.0.0.1:0 (`jwt/server.rs`).
//!
//! The invariant throughout: nothing is allowed that should not be, every request is
//! answered within a bound, and an outage answers 503 (the token may be good; the gateway
//! cannot tell) while a bad token answers 401.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portcullis_tests::eventually;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::gateway_harness::{Harness, READER_KEY, Reply, TestConfig, send, start};
use crate::jwt::keys::{Signer, es256, jwks};
use crate::jwt::server::{JwksServer, Mode};

/// `/mcp` takes JWTs from the IdP; `/keys` takes API keys and never needs the IdP.
fn config(server: &JwksServer, refetch_secs: u64) -> TestConfig {
    TestConfig::new()
        .behind("envoy")
        .route("/mcp", &["corp-jwt"])
        .route("/keys", &["keys"])
        .jwt("corp-jwt", server.base(), &server.jwks_url())
        .with(r#"audience = "{gateway}/mcp""#)
        .with(&format!("min_refetch_interval_secs = {refetch_secs}"))
        .with("fetch_timeout_secs = 1")
        .api_keys(&["reader"])
        .path_rule("/mcp", &["mcp:read"])
}

/// Generous bound on any one answer: the fetch timeout is 1 s.
const BOUND: Duration = Duration::from_secs(5);

async fn gateway(server: &JwksServer, refetch_secs: u64) -> Harness {
    start(config(server, refetch_secs)).await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A token for this gateway's `/mcp`, with `mcp:read`.
fn token(signer: &Signer, h: &Harness, server: &JwksServer) -> String {
    signer.sign(&claims(h, server, now() + 300, "/mcp"))
}

fn claims(h: &Harness, server: &JwksServer, exp: u64, resource: &str) -> Value {
    json!({
        "iss": server.base(), "aud": format!("{}{resource}", h.base), "sub": "alice",
        "scope": "mcp:read", "iat": now(), "exp": exp,
    })
}

/// A forward-auth check of `/mcp` with `token`: the gateway's decision without the
/// upstream, answered within [`BOUND`].
async fn check(h: &Harness, token: &str) -> (Reply, Duration) {
    let started = Instant::now();
    let auth = format!("Bearer {token}");
    let reply = tokio::time::timeout(
        BOUND,
        send(
            &format!("{}/check/mcp", h.base),
            "GET",
            &[("authorization", &auth), ("x-forwarded-for", "127.0.0.1")],
            None,
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("expected: an answer within {BOUND:?}\ngot: none"));
    (reply, started.elapsed())
}

async fn status(h: &Harness, token: &str) -> u16 {
    check(h, token).await.0.status
}

/// Waits until `token` gets `want`.
async fn poll_status(h: &Harness, token: &str, want: u16, what: &str) {
    eventually(&format!("{what} ({want})"), || async {
        match status(h, token).await {
            got if got == want => Ok(()),
            got => Err(got),
        }
    })
    .await;
}

fn fetch_failures(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("portcullis_jwks_fetches_total")
                && l.contains("provider=\"corp-jwt\"")
                && l.contains("result=\"failure\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn jwks_down_at_start_answers_503_naming_the_cause_and_recovers_when_it_returns() {
    let signer = es256("k1");
    let server = JwksServer::start(jwks(&[&signer])).await;
    server.set_mode(Mode::Error);
    let h = gateway(&server, 1).await;

    // The gateway starts and reports ready: readiness is about this process, and routes
    // that do not need the IdP (API keys here) serve normally during its outage.
    let ready = h.request("GET", "/readyz", &[], None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let (reply, took) = check(&h, &token(&signer, &h, &server)).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        reply.body.contains("temporarily_unavailable")
            && reply.body.contains("signing keys are unavailable"),
        "expected: the cause in the answer\ngot: {}",
        reply.body
    );
    assert!(reply.header("x-portcullis-subject").is_none());
    assert!(took < BOUND);
    // A request without a token is still a plain 401 challenge, not an outage.
    assert_eq!(
        h.request(
            "GET",
            "/check/mcp",
            &[("x-forwarded-for", "127.0.0.1")],
            None
        )
        .await
        .status,
        401
    );
    let keys = h
        .request(
            "GET",
            "/check/keys",
            &[
                ("authorization", &format!("Bearer {READER_KEY}")),
                ("x-forwarded-for", "127.0.0.1"),
            ],
            None,
        )
        .await;
    assert_eq!(keys.status, 200, "{}", keys.body);
    assert!(fetch_failures(&h.request("GET", "/metrics", &[], None).await.body) >= 1);

    server.set_mode(Mode::Up);
    poll_status(
        &h,
        &token(&signer, &h, &server),
        200,
        "the token allowed once the IdP is back",
    )
    .await;
}

#[tokio::test]
async fn jwks_down_after_keys_were_fetched_keeps_the_last_good_keys() {
    let (signer, unpublished) = (es256("k1"), es256("k2"));
    let attacker = es256("k1");
    let server = JwksServer::start(jwks(&[&signer])).await;
    let h = gateway(&server, 0).await;
    assert_eq!(status(&h, &token(&signer, &h, &server)).await, 200);

    for mode in [Mode::Error, Mode::Close, Mode::Hang] {
        server.set_mode(mode);
        let hits = server.jwks_hits();
        // A kid the gateway has never seen makes it ask the IdP, which fails: an outage.
        let (reply, took) = check(&h, &token(&unpublished, &h, &server)).await;
        assert_eq!(reply.status, 503, "{mode:?}: {}", reply.body);
        assert!(took < BOUND, "{mode:?}: {took:?}");
        assert!(server.jwks_hits() > hits, "{mode:?}: the IdP was asked");
        // The keys fetched before the outage keep working...
        assert_eq!(
            status(&h, &token(&signer, &h, &server)).await,
            200,
            "{mode:?}"
        );
        // ...and still tell a forgery using a known kid from the real thing.
        assert_eq!(
            status(&h, &token(&attacker, &h, &server)).await,
            401,
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn jwks_slower_than_the_fetch_timeout_never_hangs_requests() {
    let signer = es256("k1");
    let server = JwksServer::start(jwks(&[&signer])).await;
    server.set_mode(Mode::Hang);
    let h = Arc::new(gateway(&server, 0).await);
    // Twenty clients at once against an IdP that never answers: each is answered within
    // the bound (one fetch times out after 1 s; the others share it or fail fast).
    let mut clients = JoinSet::new();
    for _ in 0..20 {
        let (h, token) = (h.clone(), token(&signer, &h, &server));
        clients.spawn(async move { check(&h, &token).await });
    }
    // Meanwhile the API-key route answers.
    let keys = h
        .request(
            "GET",
            "/check/keys",
            &[
                ("authorization", &format!("Bearer {READER_KEY}")),
                ("x-forwarded-for", "127.0.0.1"),
            ],
            None,
        )
        .await;
    assert_eq!(keys.status, 200, "{}", keys.body);
    while let Some(joined) = clients.join_next().await {
        let (reply, took) = joined.expect("client task");
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(took < BOUND, "{took:?}");
    }
}

#[tokio::test]
async fn garbage_from_the_jwks_endpoint_keeps_the_last_good_keys() {
    let (signer, unpublished) = (es256("k1"), es256("k2"));
    let server = JwksServer::start(jwks(&[&signer])).await;
    let h = gateway(&server, 0).await;
    assert_eq!(status(&h, &token(&signer, &h, &server)).await, 200);
    let garbage = [
        "not json at all".to_owned(),
        "<html><body>502 Bad Gateway</body></html>".to_owned(),
        json!({ "keys": "k2" }).to_string(),
        json!({ "keys": [] }).to_string(),
        json!({ "keys": [{ "kty": "EC", "crv": "P-256", "kid": "k2", "x": "AA", "y": "AA" }] })
            .to_string(),
        json!({ "keys": [{ "kty": "oct", "kid": "k2", "k": "c2VjcmV0" }] }).to_string(),
    ];
    for (i, body) in garbage.iter().enumerate() {
        server.set_jwks(body.clone());
        let failures = fetch_failures(&h.request("GET", "/metrics", &[], None).await.body);
        let hits = server.jwks_hits();
        let (reply, _) = check(&h, &token(&unpublished, &h, &server)).await;
        assert!(server.jwks_hits() > hits, "garbage {i}: the IdP was asked");
        assert!(
            matches!(reply.status, 401 | 503),
            "garbage {i}: expected a refusal\ngot: {} {}",
            reply.status,
            reply.body
        );
        assert_eq!(
            fetch_failures(&h.request("GET", "/metrics", &[], None).await.body),
            failures + 1,
            "garbage {i} counts as a failed fetch"
        );
        assert_eq!(
            status(&h, &token(&signer, &h, &server)).await,
            200,
            "garbage {i}: the last good keys keep working"
        );
    }
}

/// What a client in the rotation test sends, and whether it may ever be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// Signed by the key being retired.
    Old,
    /// Signed by the key being introduced.
    New,
    /// Signed by an attacker's key under the new kid.
    ForgedNewKid,
    /// Signed by an attacker's key under a random kid (also makes the gateway refetch).
    ForgedRandomKid,
    /// Signed by the old key, expired.
    Expired,
    /// Signed by the new key, for another resource.
    WrongAudience,
}

impl Class {
    const ALL: [Self; 6] = [
        Self::Old,
        Self::New,
        Self::ForgedNewKid,
        Self::ForgedRandomKid,
        Self::Expired,
        Self::WrongAudience,
    ];

    fn may_be_allowed(self) -> bool {
        matches!(self, Self::Old | Self::New)
    }
}

struct Keys {
    old: Signer,
    new: Signer,
    attacker_new_kid: Signer,
    attacker: Signer,
}

fn rotation_token(keys: &Keys, class: Class, h: &Harness, server: &JwksServer) -> String {
    let valid = claims(h, server, now() + 300, "/mcp");
    match class {
        Class::Old => keys.old.sign(&valid),
        Class::New => keys.new.sign(&valid),
        Class::ForgedNewKid => keys.attacker_new_kid.sign(&valid),
        Class::ForgedRandomKid => keys.attacker.sign_raw(
            &json!({ "alg": "ES256", "kid": format!("{:016x}", rand::random::<u64>()) }),
            &valid,
        ),
        Class::Expired => keys.old.sign(&claims(h, server, now() - 3600, "/mcp")),
        Class::WrongAudience => keys.new.sign(&claims(h, server, now() + 300, "/other")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_under_load_allows_nothing_by_mistake_and_never_answers_5xx() {
    let keys = Arc::new(Keys {
        old: es256("old"),
        new: es256("new"),
        attacker_new_kid: es256("new"),
        attacker: es256("attacker"),
    });
    let server = Arc::new(JwksServer::start(jwks(&[&keys.old])).await);
    let h = Arc::new(gateway(&server, 1).await);
    assert_eq!(
        status(&h, &rotation_token(&keys, Class::Old, &h, &server)).await,
        200
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = JoinSet::new();
    for client in 0..12 {
        let class = Class::ALL[client % Class::ALL.len()];
        let (h, server, keys, stop) = (h.clone(), server.clone(), keys.clone(), stop.clone());
        clients.spawn(async move {
            let mut seen: BTreeMap<u16, u64> = BTreeMap::new();
            while !stop.load(Ordering::SeqCst) {
                let token = rotation_token(&keys, class, &h, &server);
                let (reply, took) = check(&h, &token).await;
                assert!(took < BOUND, "{class:?}: {took:?}");
                if reply.status == 200 {
                    assert!(
                        class.may_be_allowed(),
                        "allowed by mistake: {class:?} got 200 ({:?})",
                        reply.headers
                    );
                }
                *seen.entry(reply.status).or_default() += 1;
            }
            (class, seen)
        });
    }

    // Publish the new key next to the old one: new-kid tokens are accepted once the
    // gateway refetches (an unknown kid triggers that, at most once a second).
    server.set_jwks(jwks(&[&keys.old, &keys.new]));
    poll_status(
        &h,
        &rotation_token(&keys, Class::New, &h, &server),
        200,
        "new key accepted",
    )
    .await;
    // Retire the old key: after the next refetch (random kids keep triggering one), the
    // old kid is gone and its tokens are refused as bad tokens, not as an outage.
    server.set_jwks(jwks(&[&keys.new]));
    poll_status(
        &h,
        &rotation_token(&keys, Class::Old, &h, &server),
        401,
        "old key retired",
    )
    .await;
    assert_eq!(
        status(&h, &rotation_token(&keys, Class::New, &h, &server)).await,
        200
    );
    stop.store(true, Ordering::SeqCst);

    let mut totals: BTreeMap<Class, BTreeMap<u16, u64>> = BTreeMap::new();
    while let Some(joined) = clients.join_next().await {
        let (class, seen) = joined.expect("a client found a decision it must not see");
        let entry = totals.entry(class).or_default();
        for (status, count) in seen {
            *entry.entry(status).or_default() += count;
        }
    }
    let all: u64 = totals.values().flat_map(|s| s.values()).sum();
    let server_errors: u64 = totals
        .values()
        .flat_map(|s| s.iter())
        .filter(|(status, _)| **status >= 500)
        .map(|(_, count)| count)
        .sum();
    assert_eq!(server_errors, 0, "expected: no 5xx\ngot: {totals:?}");
    assert!(all > 0 && totals.len() == Class::ALL.len(), "{totals:?}");
    println!("rotation under load: {all} requests, by class and status: {totals:?}");
}
