//! Hostile Wasm plugins through the real gateway: whatever a provider tries (escaping the
//! sandbox, spinning, trapping, asking for secrets it was not granted), the request is
//! refused, nothing is allowed by mistake, and the gateway keeps serving other routes.
//! The engine-level behaviour of each misbehaviour is in `wasm_sandbox.rs`; these tests are
//! about the HTTP answer and the gateway staying up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use portcullis_tests::eventually;
use tokio::task::JoinSet;

use crate::gateway_harness::{Harness, READER_KEY, Reply, TestConfig, send, start};
use crate::reload::probe_config;

/// Every hostile mode on its own route, next to an API-key route to the demo MCP server.
/// Hostile routes are checked through forward-auth (`/check/<route>`), whose 200 carries the
/// identity headers, and proxied to the demo upstream otherwise.
fn hostile() -> TestConfig {
    let hostile = portcullis_tests::guests::HOSTILE;
    let mode = |mode: &str| format!("config = {{ mode = {mode:?} }}");
    let needs_secret =
        |path: &str| format!(r#"rules = [{{ path = {path:?}, scopes = ["secret:present"] }}]"#);
    TestConfig::new()
        .behind("envoy")
        .route("/mcp", &["keys"])
        .route("/file", &["file"])
        .route("/socket", &["socket"])
        .route("/env", &["env"])
        .route("/hostcalls", &["hostcalls"])
        .route("/loop", &["loop"])
        .route("/loop-deny", &["loop"])
        .with(r#"on_error = "deny""#)
        .route("/secret", &["secret"])
        .with(&needs_secret("/secret"))
        .route("/granted", &["granted"])
        .with(&needs_secret("/granted"))
        .route("/every", &["every"])
        .route("/sleep", &["sleep"])
        .route("/sleep-deny", &["sleep"])
        .with(r#"on_error = "deny""#)
        .route("/who", &["who"])
        .api_keys(&["reader"])
        .wasm("file", hostile)
        .with(&mode("read-file"))
        .wasm("socket", hostile)
        .with(&mode("open-socket"))
        .wasm("env", hostile)
        .with(&mode("read-env"))
        .wasm("hostcalls", hostile)
        .with(&mode("host-call-loop"))
        .with("limits = { timeout_ms = 50 }")
        .wasm("loop", hostile)
        .with(&mode("loop"))
        .with("limits = { timeout_ms = 3000 }")
        .wasm("secret", hostile)
        .with(r#"config = { mode = "ungranted-secret", secret = "db_password" }"#)
        .with(r#"secrets = { other = "not-the-one-asked-for" }"#)
        .wasm("granted", hostile)
        .with(r#"config = { mode = "ungranted-secret", secret = "db_password" }"#)
        .with(r#"secrets = { db_password = "s3cret" }"#)
        .wasm("every", hostile)
        .with(r#"config = { mode = "trap-every", n = 10 }"#)
        .wasm("sleep", hostile)
        .with(r#"config = { mode = "sleep", ms = 30000 }"#)
        .with("limits = { timeout_ms = 50 }")
        .wasm("who", hostile)
        .with(&mode("subject-from-header"))
        .path_rule("/mcp", &["mcp:read"])
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"attack-test","version":"0"}}}"#;

async fn hostile_gateway() -> Harness {
    start(hostile()).await
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
        hostile().on_provider("env", r#"config = { mode = "trap-in-configure" }"#),
        "127.0.0.1:1".parse().expect("addr"),
        "http://127.0.0.1:9/mcp",
    );
    let config = portcullis::config::load_str(&text, "<test config>", std::path::Path::new("."))
        .expect("the file itself is valid");
    let error = portcullis::config::assemble(
        &config,
        Some(portcullis_tests::runtime()),
        &Default::default(),
    )
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

/// Generous bound on a request whose provider sleeps 30 s against a 50 ms deadline: proves
/// "cut off", not a speed.
const CUT_OFF: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_plugin_sleeping_in_a_host_wait_fails_closed_at_its_deadline_and_the_next_request_works()
{
    let h = hostile_gateway().await;
    let sleepy = [
        ("x-sleep", "1"),
        ("accept", "text/event-stream"),
        ("x-forwarded-for", "127.0.0.1"),
    ];
    for (route, want) in [("/sleep", 503), ("/sleep-deny", 401)] {
        for path in [format!("/check{route}"), route.to_owned()] {
            let started = Instant::now();
            let reply = h.request("GET", &path, &sleepy, None).await;
            let took = started.elapsed();
            assert_not_allowed(&reply, &path);
            assert_eq!(reply.status, want, "{path}: {}", reply.body);
            assert!(took < CUT_OFF, "{path}: answered after {took:?}");
        }
    }
    // Without `x-sleep` the provider answers at once: the cut-off instances were replaced.
    let reply = check(&h, "/sleep").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-portcullis-subject"), Some("hostile-slept"));
    api_key_route_answers(&h).await;
}

#[tokio::test]
async fn a_plugin_sleeping_in_configure_refuses_the_config_within_its_configure_timeout() {
    let text = crate::gateway_harness::fill(
        hostile()
            .on_provider(
                "env",
                r#"config = { mode = "sleep-in-configure", ms = 30000 }"#,
            )
            .on_provider("env", "limits = { configure_timeout_ms = 200 }"),
        "127.0.0.1:1".parse().expect("addr"),
        "http://127.0.0.1:9/mcp",
    );
    let config = portcullis::config::load_str(&text, "<test config>", std::path::Path::new("."))
        .expect("the file itself is valid");
    let started = Instant::now();
    let error = tokio::time::timeout(
        Duration::from_secs(20),
        portcullis::config::assemble(
            &config,
            Some(portcullis_tests::runtime()),
            &Default::default(),
        ),
    )
    .await
    .expect("expected: the load is refused\ngot: still configuring after 20 s")
    .expect_err("a provider whose configure sleeps past its deadline must not load");
    let took = started.elapsed();
    let message = error.to_string();
    assert!(
        message.contains("`env` refused its configuration") && message.contains("timed out"),
        "expected: the error names provider `env` and the timeout\ngot: {message}"
    );
    assert!(took < CUT_OFF, "refused after {took:?}");
}

#[tokio::test]
async fn a_reload_bringing_a_plugin_that_sleeps_in_configure_keeps_the_running_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portcullis.toml");
    let probe = probe_config(portcullis_tests::guests::VERSION_PROBE);
    std::fs::write(&path, probe.to_string()).expect("write config");
    let served = crate::gateway_harness::serve_watched(path.clone(), None).await;
    let version = async || {
        let reply = send(
            &format!("{}/check/mcp", served.base),
            "GET",
            &[("x-forwarded-for", "127.0.0.1")],
            None,
        )
        .await;
        reply.header("x-portcullis-subject").map(str::to_owned)
    };
    assert_eq!(version().await.as_deref(), Some("v1"));

    let sleepy = probe_config(portcullis_tests::guests::HOSTILE)
        .with(r#"config = { mode = "sleep-in-configure", ms = 30000 }"#)
        .with("limits = { configure_timeout_ms = 200 }");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, sleepy.to_string()).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");

    // The reload is refused for the timeout, and v1 answers throughout.
    let error = eventually("the reload is refused", || async {
        assert_eq!(
            version().await.as_deref(),
            Some("v1"),
            "the old config serves"
        );
        let ready: serde_json::Value = serde_json::from_str(
            &send(&format!("{}/readyz", served.base), "GET", &[], None)
                .await
                .body,
        )
        .expect("/readyz is JSON");
        match ready["reload"]["last_error"].as_str() {
            Some(error) if ready["reload"]["last_result"] == "failure" => Ok(error.to_owned()),
            _ => Err(ready),
        }
    })
    .await;
    assert!(
        error.contains("refused its configuration") && error.contains("timed out"),
        "{error}"
    );
    assert_eq!(version().await.as_deref(), Some("v1"));
}

/// Plain HTTP routes through the `ok` mode of the hostile component: `/declared` and
/// `/passthrough` (which keeps credential headers) through a provider that declares
/// `X-Test` a credential header, `/undeclared` through one that does not.
fn stripped() -> TestConfig {
    let hostile = portcullis_tests::guests::HOSTILE;
    TestConfig::new()
        .route("/declared", &["declared"])
        .with("mcp = false")
        .route("/undeclared", &["undeclared"])
        .with("mcp = false")
        .route("/passthrough", &["declared"])
        .with("mcp = false")
        .with("forward_auth_headers = true")
        .wasm("declared", hostile)
        .with(r#"config = { mode = "ok" }"#)
        .with(r#"credential_headers = ["X-Test"]"#)
        .wasm("undeclared", hostile)
        .with(r#"config = { mode = "ok" }"#)
}

#[tokio::test]
async fn credential_headers_a_plugin_declares_never_reach_the_upstream() {
    let upstream = crate::gateway_harness::RecordingUpstream::start().await;
    let h = crate::gateway_harness::start_with_upstream(stripped(), &upstream.url).await;
    // `ok` mode authenticates whoever sends `x-test`: here, the credential.
    let headers = [
        ("x-test", "partner-secret-token"),
        ("X-TEST", "second-copy"),
        ("x-other", "kept"),
    ];
    for route in ["/declared", "/undeclared", "/passthrough"] {
        let reply = h.request("GET", route, &headers, None).await;
        assert_eq!(reply.status, 200, "{route}: {}", reply.body);
        assert_eq!(reply.body, "upstream", "{route}");
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let credential = |i: usize| seen[i].headers.get_all("x-test").iter().count();
    assert_eq!(
        credential(0),
        0,
        "declared: the credential reached the upstream: {:?}",
        seen[0].headers
    );
    assert_eq!(
        seen[0].headers.get("x-other").map(|v| v.as_bytes()),
        Some(&b"kept"[..])
    );
    assert_eq!(
        seen[0]
            .headers
            .get("x-portcullis-subject")
            .map(|v| v.as_bytes()),
        Some(&b"hostile-ok"[..])
    );
    // The control: without the declaration it passes (operators had to list it in the
    // route's `strip_headers`), and `forward_auth_headers` opts back in.
    assert_eq!(credential(1), 2, "undeclared: {:?}", seen[1].headers);
    assert_eq!(
        credential(2),
        2,
        "forward_auth_headers: {:?}",
        seen[2].headers
    );
}

#[test]
fn a_client_chosen_subject_or_path_cannot_forge_an_audit_line() {
    portcullis_tests::run_alone("attack_plugins::audit_line_forgery_in_this_process");
}

#[tokio::test]
#[ignore = "captures this thread's logs, which other tests' threads disturb: \
            a_client_chosen_subject_or_path_cannot_forge_an_audit_line runs it alone"]
async fn audit_line_forgery_in_this_process() {
    let logs = crate::wasm_sandbox::capture_logs();
    let h = hostile_gateway().await;
    let forged = crate::wasm_sandbox::FORGED;
    // The provider percent-decodes the header into its subject, as one that maps a client's
    // input to a name might: the client chooses every byte of the subject.
    for separator in [
        "%0A",
        "%0D%0A",
        "%09",
        "%E2%80%A8",
        "%E2%80%A9",
        "%C2%85",
        "%1B%5B2K%0D",
        "%E2%80%AE",
    ] {
        let subject = format!("alice{separator}{}", forged.replace('"', "%22"));
        let reply = check_with(&h, "/who", &[("x-echo", &subject)]).await;
        assert_eq!(reply.status, 200, "{separator}: {}", reply.body);
        let reply = h
            .request(
                "GET",
                "/who",
                &[("x-echo", &subject), ("accept", "text/event-stream")],
                None,
            )
            .await;
        assert_ne!(reply.status, 500, "{separator}: {}", reply.body);
    }
    // A path with raw non-ASCII bytes (a UTF-8 line separator and NEL), sent byte for byte:
    // answered or refused, its audit line (if any) stays one line.
    for raw_path in [&b"/who/a\xe2\x80\xa8b"[..], &b"/mcp/a\xc2\x85b"[..]] {
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(raw_path);
        request
            .extend_from_slice(b" HTTP/1.1\r\nhost: x\r\nx-echo: bob\r\nconnection: close\r\n\r\n");
        let _ = crate::gateway_harness::raw_request(h.addr, request).await;
    }
    let (text, json) = logs.assert_one_line_per_event();
    let audits = text
        .lines()
        .filter(|l| l.contains("portcullis::audit"))
        .count();
    assert!(
        audits >= 16,
        "expected: an audit line per request\ngot:\n{text}"
    );
    // Escaped by the gateway (`\u{2028}`, `\t`); each format then quotes the backslash.
    for output in [&text, &json] {
        for escaped in [
            r"alice\\n",
            r"alice\\u{2028}",
            r"alice\\t",
            r"alice\\u{202e}",
        ] {
            assert!(output.contains(escaped), "expected {escaped} in:\n{output}");
        }
    }
}

/// A forward-auth check of `route` with extra headers, as Envoy sends it.
async fn check_with(h: &Harness, route: &str, headers: &[(&str, &str)]) -> Reply {
    let mut headers = headers.to_vec();
    headers.push(("x-forwarded-for", "127.0.0.1"));
    h.request("GET", &format!("/check{route}"), &headers, None)
        .await
}
