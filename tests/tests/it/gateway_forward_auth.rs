//! Forward-auth as deployments use it: the README's own nginx and Caddy snippets run in front
//! of a [`RecordingUpstream`] with the gateway as their check, and clients that spoof every
//! header a proxy family uses (`X-Forwarded-Uri`/`-Method`/`-For`, `X-Original-*`,
//! `X-Portcullis-*`) trying to reach a protected path through a public one. Also: the check
//! and `/readyz` as seen from an untrusted peer (a client bound to 127.0.0.2), and routes
//! whose decision needs the body, which forward-auth cannot judge.
//!
//! nginx and Caddy come from Debian packages (`nginx-light`, `caddy`), installed by
//! `.ci/run`; without them their tests print `skipped: …` and pass.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portcullis::gateway::readiness::{Readiness, ReloadStatus};

use crate::gateway_harness::{
    ADMIN_KEY, Harness, READER_KEY, RecordingUpstream, TestConfig, send, send_from, standard,
    start, start_with_upstream,
};

/// Four routes behind a forward-auth proxy: `/admin` (the `admin` scope), `/public`
/// (anyone), `/office` (anyone, but only from 203.0.113.0/24, judged by the `ip-allowlist`
/// authorizer on the client address) and `/mcp` (MCP, path rules only), for the
/// `forward_auth_proxy` `proxy`.
fn behind(proxy: &str) -> TestConfig {
    TestConfig::new()
        .behind(proxy)
        .http_route("/admin", &["keys"])
        .http_route("/public", &["anyone"])
        .http_route("/office", &["anyone"])
        .with(r#"authorizers = ["office-network"]"#)
        .route("/mcp", &["keys"])
        .with(r#"upstream = "{upstream}/mcp""#)
        .api_keys(&["reader", "admin"])
        .provider("anyone", "anonymous")
        .wasm("office-network", portcullis_tests::guests::IP_ALLOWLIST)
        .with(r#"config = { networks = [{ cidr = "203.0.113.0/24" }] }"#)
        .path_rule("/admin", &["admin"])
        .path_rule("/mcp", &["mcp:read"])
}

async fn gateway_behind(proxy: &str) -> (Harness, RecordingUpstream) {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(behind(proxy), &upstream.url).await;
    (h, upstream)
}

/// One request a client sends to the proxy, and the status it must get through nginx and
/// through Caddy.
struct Attempt {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    nginx: u16,
    caddy: u16,
}

/// The spoofing table both real proxies are run through: every header either family uses
/// is spoofed. A proxy overwrites its own family (the spoof is judged as the real path: 401);
/// the other family's header can only be the client's, and the gateway refuses the check
/// (403). Nothing but the last two, legitimate, requests may reach the upstream.
fn spoofing_attempts() -> Vec<Attempt> {
    let admin = format!("Bearer {ADMIN_KEY}");
    let reader = format!("Bearer {READER_KEY}");
    let attempt = |name, path, headers: &[(&'static str, &str)], nginx, caddy| Attempt {
        name,
        path,
        headers: headers.iter().map(|(n, v)| (*n, (*v).to_owned())).collect(),
        nginx,
        caddy,
    };
    vec![
        attempt("no credential", "/admin/secret", &[], 401, 401),
        attempt(
            "X-Forwarded-Uri/-Method name the public path",
            "/admin/secret",
            &[
                ("x-forwarded-uri", "/public/x"),
                ("x-forwarded-method", "GET"),
            ],
            403,
            401,
        ),
        attempt(
            "X-Original-URI/-Method name the public path",
            "/admin/secret",
            &[
                ("x-original-uri", "/public/x"),
                ("x-original-method", "GET"),
            ],
            401,
            403,
        ),
        attempt(
            "both families name the public path",
            "/admin/secret",
            &[
                ("x-original-uri", "/public/x"),
                ("x-original-method", "GET"),
                ("x-forwarded-uri", "/public/x"),
                ("x-forwarded-method", "GET"),
            ],
            403,
            403,
        ),
        attempt(
            "an Envoy header names the public path",
            "/admin/secret",
            &[("x-envoy-original-path", "/public/x")],
            401,
            401,
        ),
        attempt(
            "forged identity headers",
            "/admin/secret",
            &[
                ("x-portcullis-subject", "admin"),
                ("x-portcullis-scopes", "admin"),
                ("x-portcullis-provider", "keys"),
            ],
            401,
            401,
        ),
        attempt(
            "reader key, the public path in both families",
            "/admin/secret",
            &[
                ("authorization", &reader),
                ("x-original-uri", "/public/x"),
                ("x-forwarded-uri", "/public/x"),
            ],
            403,
            403,
        ),
        attempt(
            "X-Forwarded-For from the office network",
            "/office/x",
            &[("x-forwarded-for", "203.0.113.9")],
            403,
            403,
        ),
        attempt(
            "X-Forwarded-For twice, from the office network",
            "/office/x",
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-for", "203.0.113.10"),
            ],
            403,
            403,
        ),
        attempt(
            "X-Real-IP from the office network",
            "/office/x",
            &[("x-real-ip", "203.0.113.9")],
            403,
            403,
        ),
        attempt("the public path itself", "/public/x", &[], 200, 200),
        attempt(
            "the public path with URL, method and identity overrides for the upstream",
            "/public/x",
            &[
                ("x-original-url", "/admin/secret"),
                ("x-rewrite-url", "/admin/secret"),
                ("x-http-method-override", "DELETE"),
                ("x-http-method", "DELETE"),
                ("x-method-override", "DELETE"),
                ("forwarded", "for=10.0.0.1;host=admin.internal"),
                ("x_portcullis_subject", "admin"),
                ("x_portcullis_scopes", "admin"),
            ],
            200,
            200,
        ),
        attempt(
            "admin key, forged scopes",
            "/admin/secret",
            &[("authorization", &admin), ("x-portcullis-scopes", "forged")],
            200,
            200,
        ),
    ]
}

/// Runs `attempts` through the proxy at `base` expecting `expected(attempt)`. Returns the
/// failures and the number of requests wrongly allowed (an upstream hit not expected).
async fn run_through_proxy(
    base: &str,
    upstream: &RecordingUpstream,
    attempts: &[Attempt],
    expected: fn(&Attempt) -> u16,
) -> (Vec<String>, usize) {
    let mut failures = Vec::new();
    let mut wrongly_allowed = 0;
    for attempt in attempts {
        let expected = expected(attempt);
        let before = upstream.hits();
        let headers: Vec<(&str, &str)> = attempt
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .collect();
        let reply = send(&format!("{base}{}", attempt.path), "GET", &headers, None).await;
        let reached = upstream.hits() != before;
        if reached && expected != 200 {
            wrongly_allowed += 1;
        }
        if reply.status != expected || reached != (expected == 200) {
            failures.push(format!(
                "{}: expected: {expected} (upstream reached: {})\n  got: {} (upstream \
                 reached: {reached}) {}",
                attempt.name,
                expected == 200,
                reply.status,
                reply.body
            ));
        }
    }
    (failures, wrongly_allowed)
}

/// What reached the upstream for the legitimate attempts: the identity the proxy set.
fn assert_identity_from_the_check(upstream: &RecordingUpstream) {
    let seen = upstream.seen();
    let admin = seen
        .iter()
        .find(|s| s.target == "/admin/secret")
        .expect("the admin request reached the upstream");
    let header = |name: &str| admin.headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("x-portcullis-subject"), Some("admin"));
    assert_eq!(
        header("x-portcullis-scopes"),
        Some("mcp:read admin"),
        "the check's scopes replace the client's forged ones"
    );
    assert_eq!(
        admin.headers.get_all("x-portcullis-scopes").iter().count(),
        1
    );
    // What the gateway judged is what runs: no credential, no override an upstream framework
    // would believe instead of the judged request, no identity but the check's.
    for request in &seen {
        for name in [
            "authorization",
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "forwarded",
            "x_portcullis_subject",
            "x_portcullis_scopes",
        ] {
            assert!(
                request.headers.get(name).is_none(),
                "`{name}` reached the upstream: {:?}",
                request.headers
            );
        }
    }
    assert!(
        seen.iter()
            .all(|s| s.target == "/admin/secret" || s.target == "/public/x"),
        "only the two legitimate requests reach the upstream: {:?}",
        seen.iter().map(|s| &s.target).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn nginx_from_the_readme_never_serves_a_protected_path_to_spoofed_headers() {
    let Some(nginx) = which("nginx") else {
        println!("skipped: `nginx` is not on PATH (CI installs `nginx-light` in .ci/run)");
        return;
    };
    let (h, upstream) = gateway_behind("nginx").await;
    let (_nginx, port) = readme_nginx(&nginx, h.addr, &upstream.url).await;
    let base = format!("http://127.0.0.1:{port}");
    let attempts = spoofing_attempts();
    let (failures, wrongly_allowed) =
        run_through_proxy(&base, &upstream, &attempts, |a| a.nginx).await;
    println!(
        "forward-auth behind nginx: {} cases, {wrongly_allowed} wrongly allowed",
        attempts.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert_eq!(wrongly_allowed, 0);
    assert_identity_from_the_check(&upstream);
}

#[tokio::test]
async fn caddy_from_the_readme_never_serves_a_protected_path_to_spoofed_headers() {
    let Some(caddy) = which("caddy") else {
        println!("skipped: `caddy` is not on PATH (CI installs it in .ci/run)");
        return;
    };
    let (h, upstream) = gateway_behind("caddy").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_caddy, port) = Proxy::on_free_port(|port| {
        let site = readme_block("caddyfile")
            .replace("mcp.example.com", &format!("http://127.0.0.1:{port}"))
            .replace("127.0.0.1:8080", &h.addr.to_string())
            .replace("127.0.0.1:8000", upstream.url.trim_start_matches("http://"));
        let caddyfile = format!("{{\n\tadmin off\n\tauto_https off\n}}\n{site}");
        let path = dir.path().join("Caddyfile");
        std::fs::write(&path, caddyfile).expect("write Caddyfile");
        let mut command = Command::new(&caddy);
        command
            .arg("run")
            .arg("--adapter")
            .arg("caddyfile")
            .arg("--config")
            .arg(&path)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path());
        (command, dir.path().join("caddy.log"))
    })
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let attempts = spoofing_attempts();
    let (failures, wrongly_allowed) =
        run_through_proxy(&base, &upstream, &attempts, |a| a.caddy).await;
    println!(
        "forward-auth behind Caddy: {} cases, {wrongly_allowed} wrongly allowed",
        attempts.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert_eq!(wrongly_allowed, 0);
    assert_identity_from_the_check(&upstream);
}

/// `(forward_auth_proxy, method, path, headers, expected status)`.
type FamilyCase<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, &'a str)>, u16);

#[tokio::test]
async fn each_proxy_family_is_read_alone_and_ambiguity_is_refused() {
    // The check requests a Traefik or an Envoy would send (neither is a Debian package), with
    // the client's spoofed copies they pass on; the peer (127.0.0.1) is the trusted proxy.
    let admin = format!("Bearer {ADMIN_KEY}");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let table: [FamilyCase<'_>; 17] = [
        (
            "traefik",
            "GET",
            "/check",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/public/x"),
                ("x-forwarded-for", "198.51.100.1"),
            ],
            200,
        ),
        (
            "traefik",
            "GET",
            "/check",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/admin/x"),
                ("x-forwarded-for", "198.51.100.1"),
            ],
            401,
        ),
        (
            "traefik",
            "GET",
            "/check",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/admin/x"),
                ("x-original-uri", "/public/x"),
                ("x-forwarded-for", "198.51.100.1"),
            ],
            403,
        ),
        (
            "traefik",
            "GET",
            "/check",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/admin/x"),
                ("x-forwarded-uri", "/public/x"),
                ("x-forwarded-for", "198.51.100.1"),
            ],
            400,
        ),
        (
            "traefik",
            "GET",
            "/check",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-method", "POST"),
                ("x-forwarded-uri", "/public/x"),
                ("x-forwarded-for", "198.51.100.1"),
            ],
            400,
        ),
        (
            "traefik",
            "GET",
            "/check",
            vec![
                ("x-forwarded-method", "get"),
                ("x-forwarded-uri", "/public/x"),
                ("x-forwarded-for", "198.51.100.1"),
            ],
            400,
        ),
        (
            "traefik",
            "GET",
            "/check",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/public/x"),
            ],
            400,
        ),
        (
            "traefik",
            "GET",
            "/check",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/office/x"),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-for", "198.51.100.1"),
            ],
            400,
        ),
        (
            "traefik",
            "GET",
            "/check",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/office/x"),
                ("x-forwarded-for", "203.0.113.9, 198.51.100.1"),
            ],
            403,
        ),
        (
            "traefik",
            "GET",
            "/check",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/office/x"),
                ("x-forwarded-for", "198.51.100.1, 203.0.113.9"),
            ],
            200,
        ),
        (
            "envoy",
            "GET",
            "/check/public/x",
            vec![("x-forwarded-for", "198.51.100.1")],
            200,
        ),
        (
            "envoy",
            "GET",
            "/check/admin/x",
            vec![("x-forwarded-for", "198.51.100.1")],
            401,
        ),
        (
            "envoy",
            "GET",
            "/check/admin/x",
            vec![
                ("x-forwarded-uri", "/public/x"),
                ("x-forwarded-for", "198.51.100.1"),
            ],
            403,
        ),
        (
            "envoy",
            "GET",
            "/check/admin/x",
            vec![
                ("x-original-uri", "/public/x"),
                ("x-forwarded-for", "198.51.100.1"),
            ],
            403,
        ),
        (
            "envoy",
            "GET",
            "/check",
            vec![("x-forwarded-for", "198.51.100.1")],
            400,
        ),
        (
            "envoy",
            "GET",
            "/check/admin/x",
            vec![("authorization", admin.as_str())],
            400,
        ),
        (
            "envoy",
            "GET",
            "/check/admin/x",
            vec![
                ("authorization", admin.as_str()),
                ("x-forwarded-for", "198.51.100.1"),
            ],
            200,
        ),
    ];
    let mut gateways = BTreeMap::new();
    for proxy in ["traefik", "envoy"] {
        gateways.insert(proxy, gateway_behind(proxy).await);
    }
    let mut wrongly_allowed = 0;
    for (proxy, method, path, headers, expected) in &table {
        *counts.entry(*proxy).or_default() += 1;
        let (h, upstream) = &gateways[proxy];
        let reply = h.request(method, path, headers, None).await;
        if (200..300).contains(&reply.status) && *expected != 200 {
            wrongly_allowed += 1;
        }
        if reply.status != *expected {
            failures.push(format!(
                "[{proxy}] {method} {path} {headers:?}\n  expected: {expected}\n  got: {} {}",
                reply.status, reply.body
            ));
        }
        assert_eq!(upstream.hits(), 0, "a check never reaches the upstream");
    }
    println!("forward-auth families: {counts:?}, {wrongly_allowed} wrongly allowed");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert_eq!(wrongly_allowed, 0);
}

#[tokio::test]
async fn the_check_answers_only_trusted_proxies() {
    let (h, upstream) = gateway_behind("envoy").await;
    let reader = format!("Bearer {READER_KEY}");
    let from_stranger = [
        ("/check/public/x", vec![("x-forwarded-for", "127.0.0.1")]),
        ("/check/mcp", vec![("authorization", reader.as_str())]),
        (
            "/check/mcp",
            vec![
                ("authorization", "Bearer guess"),
                ("x-forwarded-for", "127.0.0.1"),
            ],
        ),
    ];
    for (path, headers) in &from_stranger {
        let reply = send_from(STRANGER, &format!("{}{path}", h.base), headers).await;
        assert_eq!(
            reply.status, 403,
            "{path} from an untrusted peer\nexpected: 403\ngot: {} {}",
            reply.status, reply.body
        );
        assert!(reply.header("x-portcullis-subject").is_none());
        assert!(
            reply.header("www-authenticate").is_none(),
            "no challenge: a stranger learns nothing about its credential"
        );
    }
    let from_proxy = h
        .request(
            "POST",
            "/check/mcp",
            &[("authorization", &reader), ("x-forwarded-for", "127.0.0.1")],
            None,
        )
        .await;
    assert_eq!(from_proxy.status, 200, "{}", from_proxy.body);
    assert_eq!(from_proxy.header("x-portcullis-subject"), Some("reader"));
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn readyz_gives_detail_only_to_its_networks() {
    let h = start(standard().server(r#"readyz_detail_networks = ["127.0.0.1"]"#)).await;
    let inside = h.request("GET", "/readyz", &[], None).await;
    assert_eq!(inside.status, 200);
    assert!(inside.body.contains("\"providers\""), "{}", inside.body);
    let outside = send_from(STRANGER, &format!("{}/readyz", h.base), &[]).await;
    assert_eq!(
        (outside.status, outside.body.as_str()),
        (200, r#"{"ready":true}"#)
    );
    // The reloader's report (reload errors name files) takes the same gate.
    h.gateway.set_readiness(&Readiness {
        status: "ready",
        reload: Some(ReloadStatus {
            last_error: Some("/etc/portcullis/portcullis.toml: bad".into()),
            ..ReloadStatus::default()
        }),
        ..Readiness::default()
    });
    let outside = send_from(STRANGER, &format!("{}/readyz", h.base), &[]).await;
    assert_eq!(
        (outside.status, outside.body.as_str()),
        (200, r#"{"ready":true}"#)
    );
    let inside = h.request("GET", "/readyz", &[], None).await;
    assert!(inside.body.contains("last_error"), "{}", inside.body);
}

#[tokio::test]
async fn readyz_detail_defaults_to_loopback() {
    let h = start(standard()).await;
    let local = send_from(STRANGER, &format!("{}/readyz", h.base), &[]).await;
    assert!(
        local.body.contains("\"providers\""),
        "127.0.0.2 is loopback: {}",
        local.body
    );
}

#[tokio::test]
async fn routes_whose_decision_needs_the_body_are_not_judged_through_forward_auth() {
    let with_forward_auth = standard().behind("envoy");
    // Behind forward-auth, `tools/call admin_reset` would be judged without its body: refused
    // at load, naming the route and the rule.
    let text = crate::gateway_harness::fill(
        &with_forward_auth,
        "127.0.0.1:9".parse().expect("addr"),
        "http://127.0.0.1:9/mcp",
    );
    let error = portcullis::config::load_str(&text, "<test config>", Path::new("."))
        .expect_err("a tool rule on a forward-auth route is refused")
        .to_string();
    assert!(
        error.contains("`rules[1]`")
            && error.contains("route `/mcp`")
            && error.contains("tool = \"admin_*\"")
            && error.contains("forward_auth = false"),
        "{error}"
    );
    // Marked `forward_auth = false`: the check refuses it, and the gateway as reverse proxy
    // judges the tool call.
    let opted_out = with_forward_auth.on_route("/mcp", "forward_auth = false");
    let h = start(opted_out).await;
    let reader = format!("Bearer {READER_KEY}");
    let check = h
        .request(
            "POST",
            "/check/mcp",
            &[("authorization", &reader), ("x-forwarded-for", "127.0.0.1")],
            None,
        )
        .await;
    assert_eq!(check.status, 403, "{}", check.body);
    let session = h.mcp_session(READER_KEY).await;
    let call = h
        .mcp_post(
            Some(READER_KEY),
            Some(&session),
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"admin_reset","arguments":{}}}"#,
        )
        .await;
    assert_eq!(call.status, 403, "{}", call.body);
}

/// A loopback address other than the trusted 127.0.0.1.
const STRANGER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// The README's first ```` ```{lang} ```` block.
pub(crate) fn readme_block(lang: &str) -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(readme).expect("README.md");
    let fence = format!("```{lang}\n");
    let start = text
        .find(&fence)
        .unwrap_or_else(|| panic!("the README lost its {lang} snippet"))
        + fence.len();
    let end = start + text[start..].find("```").expect("the block ends");
    text[start..end].to_owned()
}

pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `nginx` with the README's snippet in front of the gateway at `gateway` and the upstream
/// at `upstream`, on a free port of its own (returned), stopped when the proxy is dropped.
pub(crate) async fn readme_nginx(
    nginx: &Path,
    gateway: SocketAddr,
    upstream: &str,
) -> (Proxy, u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    let locations = readme_block("nginx")
        .replace("127.0.0.1:8080", &gateway.to_string())
        .replace("127.0.0.1:8000", upstream.trim_start_matches("http://"));
    let (mut proxy, port) = Proxy::on_free_port(|port| {
        let conf = format!(
            r#"
worker_processes 1;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
{locations}
  }}
}}
"#,
            dir = dir.path().display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write conf");
        let mut command = Command::new(nginx);
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-g")
            // One process, so that killing it leaves no orphaned worker behind.
            .arg("daemon off; master_process off;");
        (command, dir.path().join("stderr.log"))
    })
    .await;
    proxy.1 = Some(dir);
    (proxy, port)
}

/// A proxy process, stopped by its PID when the test ends, pass or fail (with the folder
/// of its config, removed after it).
pub(crate) struct Proxy(Child, Option<tempfile::TempDir>);

impl Proxy {
    /// Starts the proxy that `start` makes for a port (its command, and the file its
    /// stderr goes to) on a free port, and waits until it accepts there. A port that
    /// another process took between being chosen and being bound is chosen again.
    pub(crate) async fn on_free_port(
        mut start: impl FnMut(u16) -> (Command, PathBuf),
    ) -> (Self, u16) {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let (command, log) = start(port);
            match Self::spawn(command, port, &log).await {
                Ok(proxy) => return (proxy, port),
                Err(text) if text.to_ascii_lowercase().contains("address already in use") => {
                    last = text;
                }
                Err(text) => panic!("the proxy did not start: {text}"),
            }
        }
        panic!("the proxy found no free port in five tries: {last}")
    }

    /// Starts `command` (its stderr into `log`) and waits until it accepts on `port`; on
    /// failure, its exit and its log.
    async fn spawn(mut command: Command, port: u16, log: &Path) -> Result<Self, String> {
        let stderr = std::fs::File::create(log).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("the proxy starts");
        let mut proxy = Self(child, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            let exited = proxy.0.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                return Err(format!(
                    "{exited:?}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(proxy)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}
