//! Hostile Wasm plugins through the real gateway: whatever a provider tries (escaping the
//! sandbox, spinning, trapping, asking for secrets it was not granted), the request is
//! refused, nothing is allowed by mistake, and the gateway keeps serving other routes.
//! The engine-level behaviour of each misbehaviour is in `wasm_sandbox.rs`; these tests are
//! about the HTTP answer and the gateway staying up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::gateway_harness::{Harness, READER_KEY, Reply, send, start};

/// Every hostile mode on its own route, next to an API-key route to the demo MCP server.
/// Hostile routes are checked through forward-auth (`/check/<route>`), whose 200 carries the
/// identity headers, and proxied to the demo upstream otherwise.
const HOSTILE: &str = r#"
[server]
listen = "{listen}"
public_url = "{gateway}"
trusted_proxies = ["127.0.0.1"]
forward_auth_proxy = "envoy"

[[routes]]
path = "/mcp"
upstream = "{upstream}"
chain = ["keys"]

[[routes]]
path = "/file"
upstream = "{upstream}"
chain = ["file"]

[[routes]]
path = "/socket"
upstream = "{upstream}"
chain = ["socket"]

[[routes]]
path = "/env"
upstream = "{upstream}"
chain = ["env"]

[[routes]]
path = "/hostcalls"
upstream = "{upstream}"
chain = ["hostcalls"]

[[routes]]
path = "/loop"
upstream = "{upstream}"
chain = ["loop"]

[[routes]]
path = "/loop-deny"
upstream = "{upstream}"
chain = ["loop"]
on_error = "deny"

[[routes]]
path = "/secret"
upstream = "{upstream}"
chain = ["secret"]
rules = [{ path = "/secret", scopes = ["secret:present"] }]

[[routes]]
path = "/granted"
upstream = "{upstream}"
chain = ["granted"]
rules = [{ path = "/granted", scopes = ["secret:present"] }]

[[routes]]
path = "/every"
upstream = "{upstream}"
chain = ["every"]

[providers.keys]
type = "api_key"
keys = [{ name = "reader", hash = "{reader}", scopes = ["mcp:read"] }]

[providers.file]
type = "wasm"
component = "{hostile}"
config = { mode = "read-file" }

[providers.socket]
type = "wasm"
component = "{hostile}"
config = { mode = "open-socket" }

[providers.env]
type = "wasm"
component = "{hostile}"
config = { mode = "read-env" }

[providers.hostcalls]
type = "wasm"
component = "{hostile}"
config = { mode = "host-call-loop" }
limits = { timeout_ms = 50 }

[providers.loop]
type = "wasm"
component = "{hostile}"
config = { mode = "loop" }
limits = { timeout_ms = 3000 }

[providers.secret]
type = "wasm"
component = "{hostile}"
config = { mode = "ungranted-secret", secret = "db_password" }
secrets = { other = "not-the-one-asked-for" }

[providers.granted]
type = "wasm"
component = "{hostile}"
config = { mode = "ungranted-secret", secret = "db_password" }
secrets = { db_password = "s3cret" }

[providers.every]
type = "wasm"
component = "{hostile}"
config = { mode = "trap-every", n = 10 }

[[rules]]
path = "/mcp"
scopes = ["mcp:read"]
"#;

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"attack-test","version":"0"}}}"#;

async fn hostile_gateway() -> Harness {
    start(&HOSTILE.replace("{hostile}", portcullis_tests::guests::HOSTILE)).await
}

/// A forward-auth check of `route` as Envoy sends it: the same engine decision as a
/// proxied request.
async fn check(h: &Harness, route: &str) -> Reply {
    h.request(
        "GET",
        &format!("/check{route}"),
        &[("x-forwarded-for", "127.0.0.1")],
        None,
    )
    .await
}

/// A proxied request to `route` (a GET, so the MCP body parser is not involved).
async fn proxied(h: &Harness, route: &str) -> Reply {
    h.request("GET", route, &[("accept", "text/event-stream")], None)
        .await
}

fn assert_not_allowed(reply: &Reply, what: &str) {
    assert!(
        reply.header("x-portcullis-subject").is_none() && !(200..300).contains(&reply.status),
        "{what}: expected a refusal\ngot: {} {:?} {}",
        reply.status,
        reply.headers,
        reply.body
    );
}

/// The API-key route still answers with a real MCP `initialize` from the upstream.
async fn api_key_route_answers(h: &Harness) {
    let reply = h.mcp_post(Some(READER_KEY), None, INITIALIZE).await;
    assert_eq!(reply.status, 200, "the API-key route: {}", reply.body);
}

#[tokio::test]
async fn sandbox_escape_attempts_are_refused_and_the_guest_reports_every_failure() {
    let h = hostile_gateway().await;
    for (route, attempts) in [
        ("/file", &["read /etc/passwd", "list /"][..]),
        (
            "/socket",
            &["tcp connect 127.0.0.1:80", "udp bind 0.0.0.0:0"][..],
        ),
        ("/env", &["env: no variables", "args: no arguments"][..]),
    ] {
        for reply in [check(&h, route).await, proxied(&h, route).await] {
            assert_not_allowed(&reply, route);
            // The guest's own verdict: it tried, everything failed, it denied.
            assert_eq!(reply.status, 403, "{route}: {}", reply.body);
            let body: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON body");
            assert_eq!(body["error"], "sandbox_held", "{route}: {body}");
            let description = body["error_description"].as_str().unwrap_or_default();
            for attempt in attempts {
                assert!(
                    description.contains(attempt),
                    "{route}: expected the guest to report `{attempt}` failing\ngot: {description}"
                );
            }
            assert!(!description.contains("ESCAPED"), "{description}");
        }
    }
    api_key_route_answers(&h).await;
}

#[tokio::test]
async fn host_import_called_in_a_tight_loop_times_out_as_503() {
    let h = hostile_gateway().await;
    for reply in [
        check(&h, "/hostcalls").await,
        proxied(&h, "/hostcalls").await,
    ] {
        assert_not_allowed(&reply, "/hostcalls");
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(
            reply.body.contains("temporarily_unavailable")
                && reply.body.contains("provider `hostcalls` failed"),
            "{}",
            reply.body
        );
    }
    api_key_route_answers(&h).await;
}

#[tokio::test]
async fn ungranted_secret_is_not_handed_out_so_the_scope_rule_refuses() {
    let h = hostile_gateway().await;
    // Asked for `db_password`, granted only `other`: the guest got nothing, says so in its
    // scopes, and the route's rule wanting `secret:present` refuses it.
    let refused = check(&h, "/secret").await;
    assert_not_allowed(&refused, "/secret");
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("insufficient_scope"),
        "{}",
        refused.body
    );
    let proxied_refusal = proxied(&h, "/secret").await;
    assert_eq!(proxied_refusal.status, 403, "{}", proxied_refusal.body);

    // The control: the same component granted that secret does get it.
    let granted = check(&h, "/granted").await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    assert_eq!(
        granted.header("x-portcullis-scopes"),
        Some("secret:present")
    );
    assert!(
        !granted.body.contains("s3cret") && !format!("{:?}", granted.headers).contains("s3cret")
    );
}

#[tokio::test]
async fn trap_in_configure_refuses_the_config_naming_the_provider() {
    let text = crate::gateway_harness::fill(
        &HOSTILE
            .replace("{hostile}", portcullis_tests::guests::HOSTILE)
            .replace("mode = \"read-env\"", "mode = \"trap-in-configure\""),
        "127.0.0.1:1".parse().expect("addr"),
        "http://127.0.0.1:9/mcp",
    );
    let config = portcullis::config::load_str(&text, "<test config>", std::path::Path::new("."))
        .expect("the file itself is valid");
    let error = portcullis::config::assemble(&config, Some(portcullis_tests::runtime()))
        .await
        .expect_err("a provider that traps in configure must not load");
    let message = error.to_string();
    assert!(
        message.contains("`env` refused its configuration") && message.contains("trap"),
        "expected: the error names provider `env` and the trap\ngot: {message}"
    );
}

#[tokio::test]
async fn provider_trapping_every_tenth_call_allows_the_other_nine_and_replaces_the_instance() {
    let h = hostile_gateway().await;
    // Sequential calls share one pooled instance. Its counter traps on call 10; if that
    // instance were reused, wasmtime would refuse to enter it again and every later call
    // would fail. A fresh instance restarts the count, so exactly every tenth call fails.
    let mut refused = Vec::new();
    for call in 1..=30 {
        let reply = check(&h, "/every").await;
        match reply.status {
            200 => assert_eq!(
                reply.header("x-portcullis-subject"),
                Some("hostile-trap-every")
            ),
            503 => refused.push(call),
            other => panic!(
                "call {call}: expected 200 or 503\ngot: {other} {}",
                reply.body
            ),
        }
    }
    assert_eq!(refused, vec![10, 20, 30], "calls refused");
    // The proxied path fails closed the same way on the next trap.
    for call in 31..=40 {
        let reply = proxied(&h, "/every").await;
        if call == 40 {
            assert_eq!(reply.status, 503, "{}", reply.body);
        } else {
            assert_ne!(reply.status, 503, "call {call}: {}", reply.body);
        }
    }
    api_key_route_answers(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_to_a_looping_plugin_fail_closed_while_another_route_answers() {
    let h = Arc::new(hostile_gateway().await);
    const LOOPERS: usize = 50;
    // Liveness, not speed: the deadline is 3 s per call; this bound is generous.
    const BOUND: Duration = Duration::from_secs(30);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut loopers = JoinSet::new();
    for i in 0..LOOPERS {
        let (h, in_flight) = (h.clone(), in_flight.clone());
        // Half on the default `on_error` (503), half on the route that denies (401).
        let route = if i % 2 == 0 { "/loop" } else { "/loop-deny" };
        in_flight.fetch_add(1, Ordering::SeqCst);
        loopers.spawn(async move {
            let started = Instant::now();
            let url = format!("{}{route}", h.base);
            let reply = tokio::time::timeout(
                BOUND,
                send(&url, "GET", &[("accept", "text/event-stream")], None),
            )
            .await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            (route, reply, started.elapsed())
        });
    }

    // Meanwhile the API-key route keeps answering: count answers that completed while
    // every looper was still in flight.
    let mut answered_during = 0;
    let deadline = Instant::now() + BOUND;
    while in_flight.load(Ordering::SeqCst) == LOOPERS && Instant::now() < deadline {
        let reply = h.mcp_post(Some(READER_KEY), None, INITIALIZE).await;
        assert_eq!(reply.status, 200, "the API-key route: {}", reply.body);
        if in_flight.load(Ordering::SeqCst) == LOOPERS {
            answered_during += 1;
        }
    }
    assert!(
        answered_during >= 1,
        "expected: the API-key route answers while {LOOPERS} loopers are in flight\ngot: \
         {answered_during} answers"
    );

    let mut statuses = std::collections::BTreeMap::new();
    while let Some(joined) = loopers.join_next().await {
        let (route, reply, took) = joined.expect("looper task");
        let reply = reply.unwrap_or_else(|_| panic!("{route}: no answer within {BOUND:?}"));
        assert_not_allowed(&reply, route);
        let want = if route == "/loop" { 503 } else { 401 };
        assert_eq!(reply.status, want, "{route} after {took:?}: {}", reply.body);
        *statuses.entry(reply.status).or_insert(0) += 1;
    }
    assert_eq!(statuses.values().sum::<usize>(), LOOPERS, "{statuses:?}");
    api_key_route_answers(&h).await;
    assert_eq!(h.request("GET", "/healthz", &[], None).await.status, 200);
}
