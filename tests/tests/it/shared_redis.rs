//! Shared state for a fleet on Redis (issue 17): two gateways in this process, configured
//! alike, sharing one real `redis-server` started by the test on a free loopback port. A
//! signature accepted by one replica is a replay at the other; a rate limit counts requests
//! at both; an API key revoked through Redis is refused by both; with Redis killed, replay
//! checks and revocations fail closed and rate limits fail open (counted in the metric),
//! and all work again once Redis is back on the same port.
//!
//! Skipped, with the reason printed, where `redis-server` is not installed (the Debian
//! package `redis-server`).

use std::process::{Child, Command, Stdio};

use portcullis_tests::eventually::eventually;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::gateway_forward_auth::which;
use crate::gateway_harness::{
    ADMIN_KEY, Harness, READER_KEY, RecordingUpstream, TestConfig, standard, start_with_upstream,
};

/// A `redis-server` of this test's own, stopped by its PID when dropped.
struct Redis {
    binary: std::path::PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts one on a free port, or `None` (with the reason printed) when not installed.
    async fn start() -> Option<Self> {
        let Some(binary) = which("redis-server") else {
            println!("skipped: redis-server is not installed (Debian package `redis-server`)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self {
            binary,
            port,
            child: None,
        };
        redis.restart().await;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server on the same port (its data gone: nothing is saved) and waits until
    /// it answers `PING`.
    async fn restart(&mut self) {
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let port = self.port;
        eventually("redis-server answers PING", || async move {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| e.to_string())?;
            stream
                .write_all(b"PING\r\n")
                .await
                .map_err(|e| e.to_string())?;
            let mut reply = [0; 7];
            stream
                .read_exact(&mut reply)
                .await
                .map_err(|e| e.to_string())?;
            if &reply == b"+PONG\r\n" {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&reply).into_owned())
            }
        })
        .await;
    }

    /// Kills the server (by its PID) and waits for it to be gone.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill redis-server");
            child.wait().expect("redis-server exits");
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `[shared]` on `redis`, with a timeout that a busy two-core machine does not reach.
fn shared(redis: &Redis) -> String {
    format!("[shared]\nredis = {:?}\ntimeout_ms = 2000\n", redis.url())
}

/// The standard config (`/mcp` behind API keys), plus `/signed` (not MCP) behind the
/// hmac-signature component, `/open` (not MCP) open to anyone and limited to `requests` in
/// all, and `[shared]`. The limit is on a route without API keys, whose revocation check
/// fails closed: only there can a limit be seen failing open.
fn fleet_config(redis: &Redis, requests: u32) -> TestConfig {
    standard()
        .http_route("/open", &["anon"])
        .provider("anon", "anonymous")
        .http_route("/signed", &["sig"])
        .wasm("sig", portcullis_tests::guests::HMAC_SIGNATURE)
        .with(r#"config = { max_skew_secs = 60, scopes = ["partner"] }"#)
        .with(r#"secrets = { keys = "k1:shared-key" }"#)
        .with("body = true")
        // A Redis round trip is spent inside the call's deadline: room for a busy machine.
        .with("limits = { timeout_ms = 2000 }")
        .toml(&format!(
            "[[rate_limits]]\nname = \"open\"\nroute = \"/open\"\nrequests = {requests}\nwindow_secs = 3600\n"
        ))
        .toml(&shared(redis))
}

/// Two replicas of `config` in front of one upstream.
async fn fleet(config: TestConfig) -> (Harness, Harness, RecordingUpstream) {
    let upstream = RecordingUpstream::start().await;
    let a = start_with_upstream(config.clone(), &upstream.url).await;
    let b = start_with_upstream(config, &upstream.url).await;
    (a, b, upstream)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The headers of a request to `/signed` with `body`, signed now under `k1`.
fn signature(body: &str) -> Vec<(&'static str, String)> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        .to_string();
    let digest = hex(ring::digest::digest(&ring::digest::SHA256, body.as_bytes()).as_ref());
    let signing = format!("POST\n/signed\n{ts}\n{digest}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"shared-key");
    let sig = hex(ring::hmac::sign(&key, signing.as_bytes()).as_ref());
    vec![
        ("x-signature-key-id", "k1".to_owned()),
        ("x-signature-timestamp", ts),
        ("x-signature", sig),
    ]
}

async fn send_signed(h: &Harness, signed: &[(&'static str, String)], body: &str) -> u16 {
    let headers: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.request("POST", "/signed", &headers, Some(body))
        .await
        .status
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// The value of `portcullis_shared_state_errors_total{use="…"}` in `metrics`.
fn shared_errors(metrics: &str, use_: &str) -> Option<u64> {
    let prefix = format!("portcullis_shared_state_errors_total{{use=\"{use_}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_signature_accepted_by_one_replica_is_refused_as_a_replay_by_the_other() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let (a, b, upstream) = fleet(fleet_config(&redis, 100)).await;
    let body = r#"{"n":1}"#;
    let signed = signature(body);
    assert_eq!(send_signed(&a, &signed, body).await, 200);
    assert_eq!(
        send_signed(&b, &signed, body).await,
        401,
        "the replay at the other replica"
    );
    assert_eq!(send_signed(&a, &signed, body).await, 401);
    // And the other way round.
    let body = r#"{"n":2}"#;
    let signed = signature(body);
    assert_eq!(send_signed(&b, &signed, body).await, 200);
    assert_eq!(send_signed(&a, &signed, body).await, 401);
    assert_eq!(
        upstream.hits(),
        2,
        "each signature reached the upstream once"
    );
}

async fn open(h: &Harness) -> crate::gateway_harness::Reply {
    h.request("GET", "/open", &[], None).await
}

#[tokio::test]
async fn a_rate_limit_counts_the_requests_of_both_replicas_together() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let (a, b, upstream) = fleet(fleet_config(&redis, 4)).await;
    for i in 0..4 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let reply = open(replica).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.body);
    }
    for replica in [&a, &b] {
        let refused = open(replica).await;
        assert_eq!(
            refused.status, 429,
            "4 in all, not 4 each: {}",
            refused.body
        );
        assert!(
            refused
                .header("ratelimit")
                .is_some_and(|v| v.starts_with("\"open\";r=0;t=")),
            "{:?}",
            refused.header("ratelimit")
        );
    }
    assert_eq!(upstream.hits(), 4);
}

/// Publishes the revocation of `key` of the `keys` provider, as `portcullis keys revoke`
/// does when the config has `[shared]`.
async fn revoke_in_redis(redis: &Redis, key: &str) {
    let settings = portcullis::shared::RawShared {
        redis: redis.url(),
        key_prefix: None,
        timeout_ms: Some(2000),
    }
    .check()
    .expect("valid");
    portcullis::shared::SharedState::new(&settings)
        .expect("a Redis URL")
        .revoke_key("keys", &portcullis::engine::api_key::hash_key(key))
        .await
        .expect("published");
}

#[tokio::test]
async fn a_key_revoked_through_redis_is_refused_by_both_replicas_on_their_next_request() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let (a, b, _upstream) = fleet(fleet_config(&redis, 100)).await;
    for replica in [&a, &b] {
        assert_eq!(
            replica.mcp_post(Some(READER_KEY), None, LIST).await.status,
            200
        );
    }
    revoke_in_redis(&redis, READER_KEY).await;
    for replica in [&a, &b] {
        let refused = replica.mcp_post(Some(READER_KEY), None, LIST).await;
        assert_eq!(refused.status, 401, "{}", refused.body);
        // Another key of the same provider still works.
        assert_eq!(
            replica.mcp_post(Some(ADMIN_KEY), None, LIST).await.status,
            200
        );
    }
}

#[tokio::test]
async fn with_redis_down_replays_and_revocations_fail_closed_and_rate_limits_open_until_it_is_back()
{
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let (a, b, _upstream) = fleet(fleet_config(&redis, 2)).await;
    for replica in [&a, &b] {
        assert_eq!(open(replica).await.status, 200);
        assert_eq!(
            replica.mcp_post(Some(ADMIN_KEY), None, LIST).await.status,
            200
        );
    }
    assert_eq!(open(&a).await.status, 429, "the shared bucket is spent");

    redis.stop();
    // Rate limits fail open: the spent bucket lets requests through, at both replicas.
    for replica in [&a, &b, &a] {
        let reply = open(replica).await;
        assert_eq!(reply.status, 200, "fails open: {}", reply.body);
    }
    // Replay checks fail closed: a fresh, valid signature is refused.
    let body = r#"{"n":"while down"}"#;
    assert_eq!(send_signed(&b, &signature(body), body).await, 401);
    // Revocations fail closed: a valid key is refused while its status is unknown.
    for replica in [&a, &b] {
        let refused = replica.mcp_post(Some(ADMIN_KEY), None, LIST).await;
        assert!(
            refused.status == 503,
            "expected: 503 (the provider errs)\ngot: {} {}",
            refused.status,
            refused.body
        );
    }
    let metrics = a.request("GET", "/metrics", &[], None).await.body;
    for use_ in ["rate_limit", "cache", "revocation"] {
        assert!(
            shared_errors(&metrics, use_).is_some_and(|n| n > 0),
            "expected: portcullis_shared_state_errors_total{{use=\"{use_}\"}} > 0\ngot:\n{metrics}"
        );
    }

    redis.restart().await;
    // Back on the same port (empty: nothing was saved), each replica reconnects by itself.
    let mut n = 0;
    for replica in [&a, &b] {
        eventually("a fresh signature is accepted again", || {
            n += 1;
            let body = format!(r#"{{"n":{n}}}"#);
            async move { send_signed(replica, &signature(&body), &body).await == 200 }
        })
        .await;
    }
    let body = r#"{"n":"after"}"#;
    let signed = signature(body);
    assert_eq!(send_signed(&b, &signed, body).await, 200);
    assert_eq!(
        send_signed(&a, &signed, body).await,
        401,
        "replays are caught again"
    );
    for replica in [&a, &b] {
        eventually("keys are accepted again", || async {
            replica.mcp_post(Some(ADMIN_KEY), None, LIST).await.status == 200
        })
        .await;
    }
    // Counted again: the fresh bucket (2 tokens) runs out.
    eventually("the shared limit refuses again", || async {
        let reply = open(&b).await;
        if reply.status == 429 {
            Ok(())
        } else {
            Err(format!("{} {}", reply.status, reply.body))
        }
    })
    .await;
    assert_eq!(open(&a).await.status, 429);
}

/// Runs `portcullis keys ARGS…` as `main` does: what it prints, or its error message.
fn keys_command(args: &[&str]) -> Result<String, String> {
    use clap::Parser as _;
    let cli = portcullis_cli::Cli::try_parse_from(["portcullis", "keys"].iter().chain(args))
        .map_err(|e| e.to_string())?;
    match cli.command {
        Some(portcullis_cli::Command::Keys(args)) => {
            portcullis_cli::keys::run(&args).map_err(|e| format!("{e:#}"))
        }
        other => panic!("not a keys command: {other:?}"),
    }
}

#[tokio::test]
async fn keys_revoke_publishes_the_revocation_when_the_config_has_shared_state() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:9\"\n\n\
             [providers.keys]\ntype = \"api_key\"\nkeys_file = \"keys.toml\"\n\n\
             [[routes]]\npath = \"/mcp\"\nupstream = \"http://127.0.0.1:9/mcp\"\n\
             chain = [\"keys\"]\n\n{}",
            shared(&redis)
        ),
    )
    .expect("write config");
    let c = config.to_str().expect("UTF-8 path");
    for name in ["agent-1", "agent-2"] {
        keys_command(&["add", name, "-c", c, "--scopes", "mcp:read"]).expect("added");
    }
    let out = keys_command(&["revoke", "agent-1", "-c", c]).expect("revoked");
    assert!(out.contains("published to the shared Redis"), "{out}");
    let file = portcullis::engine::api_key::keys_file::read(&dir.path().join("keys.toml"))
        .expect("keys file");
    let hash = |name: &str| {
        file.keys
            .iter()
            .find(|k| k.name == name)
            .map(|k| k.hash.clone())
            .expect("key in the file")
    };
    let settings = portcullis::shared::RawShared {
        redis: redis.url(),
        key_prefix: None,
        timeout_ms: Some(2000),
    }
    .check()
    .expect("valid");
    let state = portcullis::shared::SharedState::new(&settings).expect("a Redis URL");
    assert!(
        state
            .is_key_revoked("keys", &hash("agent-1"))
            .await
            .expect("read")
    );
    assert!(
        !state
            .is_key_revoked("keys", &hash("agent-2"))
            .await
            .expect("read")
    );

    // With Redis down the file is still changed, and the command says what was not done.
    redis.stop();
    let error = keys_command(&["revoke", "agent-2", "-c", c]).expect_err("not published");
    assert!(
        error.contains("not published to the shared Redis"),
        "{error}"
    );
    let file = portcullis::engine::api_key::keys_file::read(&dir.path().join("keys.toml"))
        .expect("keys file");
    assert!(file.keys.iter().any(|k| k.name == "agent-2" && k.revoked));
}

#[tokio::test]
async fn the_shared_cache_keeps_providers_apart_honours_ttls_and_add_is_set_if_absent() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let settings = portcullis::shared::RawShared {
        redis: redis.url(),
        key_prefix: Some("fleet-a:".into()),
        timeout_ms: Some(2000),
    }
    .check()
    .expect("valid");
    let state = portcullis::shared::SharedState::new(&settings).expect("a Redis URL");
    let long = std::time::Duration::from_secs(60);
    assert!(state.cache_add("p1", "nonce", b"1", long).await);
    assert!(!state.cache_add("p1", "nonce", b"2", long).await, "NX");
    assert!(
        state.cache_add("p2", "nonce", b"3", long).await,
        "another provider's namespace"
    );
    assert_eq!(
        state.cache_get("p1", "nonce").await.as_deref(),
        Some(&b"1"[..])
    );
    assert!(state.cache_set("p1", "k", b"v", long).await);
    assert_eq!(state.cache_get("p1", "k").await.as_deref(), Some(&b"v"[..]));
    state.cache_remove("p1", "k").await;
    assert_eq!(state.cache_get("p1", "k").await, None);
    // A short TTL lapses, after which the key can be added again.
    let short = std::time::Duration::from_millis(50);
    assert!(state.cache_add("p1", "brief", b"x", short).await);
    eventually("the entry expires", || async {
        state.cache_get("p1", "brief").await.is_none()
    })
    .await;
    assert!(state.cache_add("p1", "brief", b"y", short).await);

    // The token bucket script: the burst, then refused, then refilled at its rate.
    for _ in 0..2 {
        assert!(matches!(
            state.take_tokens("b", 2.0, 20.0, 1.0).await,
            Ok(Ok(()))
        ));
    }
    match state.take_tokens("b", 2.0, 20.0, 1.0).await {
        Ok(Err(left)) => assert!((0.0..1.0).contains(&left), "{left}"),
        other => panic!("expected: short\ngot: {other:?}"),
    }
    eventually("a token is back", || async {
        matches!(state.take_tokens("b", 2.0, 20.0, 1.0).await, Ok(Ok(())))
    })
    .await;

    redis.stop();
    assert!(
        !state.cache_add("p1", "fresh", b"1", long).await,
        "fails closed"
    );
    assert!(state.take_tokens("b", 2.0, 20.0, 1.0).await.is_err());
    assert_eq!(state.cache_get("p1", "nonce").await, None, "a miss");
}
