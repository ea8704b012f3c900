//! Browser clients (issue 17): CORS preflights answered by the gateway without running the
//! chain, the CORS headers on every answer to an allowed origin (401 challenges included),
//! and the `Host` allow-list that keeps a loopback gateway out of reach of DNS rebinding.

use portcullis_tests::config::TestConfig;

use crate::gateway_harness::{READER_KEY, RecordingUpstream, standard, start_with_upstream};

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const APP: &str = "https://app.example.com";

/// The standard config with `app.example.com` allowed, and the default host list (the
/// test configs opt out of it).
fn browser_config() -> TestConfig {
    browser_config_allowing(&[])
}

/// [`browser_config`] with `more` origins allowed besides `app.example.com`.
pub(crate) fn browser_config_allowing(more: &[&str]) -> TestConfig {
    let origins: Vec<&str> = std::iter::once(APP).chain(more.iter().copied()).collect();
    standard()
        .server(&format!("allowed_origins = {origins:?}"))
        .server(r#"allowed_hosts = ["localhost", "127.0.0.1"]"#)
        .toml(
            "[server.cors]\nallow_headers = [\"x-trace-id\"]\nexpose_headers = [\"x-request-id\"]\n\
             max_age_secs = 120",
        )
}

#[tokio::test]
async fn a_preflight_is_answered_by_the_gateway_and_never_reaches_the_upstream() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(browser_config(), &format!("{}/mcp", upstream.url)).await;
    let reply = h
        .request(
            "OPTIONS",
            "/mcp",
            &[
                ("origin", APP),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization, content-type, mcp-session-id",
                ),
            ],
            None,
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
    let methods = reply
        .header("access-control-allow-methods")
        .unwrap_or_default();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let headers = reply
        .header("access-control-allow-headers")
        .unwrap_or_default();
    for name in [
        "authorization",
        "mcp-session-id",
        "mcp-protocol-version",
        "x-trace-id",
    ] {
        assert!(headers.contains(name), "{name} in {headers}");
    }
    assert_eq!(reply.header("access-control-max-age"), Some("120"));
    assert!(reply.header("access-control-allow-credentials").is_none());
    assert_eq!(upstream.hits(), 0, "a preflight is the gateway's to answer");

    // Another origin's preflight is refused before anything else.
    let reply = h
        .request(
            "OPTIONS",
            "/mcp",
            &[
                ("origin", "https://evil.example.com"),
                ("access-control-request-method", "POST"),
            ],
            None,
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.header("access-control-allow-origin").is_none());
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn answers_to_an_allowed_origin_carry_cors_headers_challenges_included() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(browser_config(), &format!("{}/mcp", upstream.url)).await;
    let origin = [("origin", APP)];
    let challenged = h.mcp_post_with(None, &origin, LIST).await;
    assert_eq!(challenged.status, 401);
    assert_eq!(challenged.header("access-control-allow-origin"), Some(APP));
    let exposed = challenged
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_owned();
    for name in ["www-authenticate", "mcp-session-id", "x-request-id"] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }
    assert!(challenged.header("www-authenticate").is_some());
    let allowed = h.mcp_post_with(Some(READER_KEY), &origin, LIST).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(allowed.header("access-control-allow-origin"), Some(APP));
    assert!(
        allowed
            .header("vary")
            .is_some_and(|v| v.to_ascii_lowercase().contains("origin"))
    );
    // Without an Origin (not a browser), no CORS headers.
    let plain = h.mcp_post(Some(READER_KEY), None, LIST).await;
    assert!(plain.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_rebound_host_gets_421_on_a_loopback_gateway_and_probes_still_answer() {
    let upstream = RecordingUpstream::start().await;
    // The default list of a loopback listener: no `allowed_hosts` at all.
    let config = standard().server(r#"allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]"#);
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    let rebound = h
        .mcp_post_with(Some(READER_KEY), &[("host", "attacker.example:8080")], LIST)
        .await;
    assert_eq!(rebound.status, 421, "{}", rebound.body);
    assert_eq!(upstream.hits(), 0);
    for probe in ["/healthz", "/readyz"] {
        let reply = h
            .request("GET", probe, &[("host", "10.1.2.3:8080")], None)
            .await;
        assert_eq!(reply.status, 200, "{probe}");
    }
    assert_eq!(
        h.mcp_post_with(Some(READER_KEY), &[("host", "localhost:1234")], LIST)
            .await
            .status,
        200
    );
}

#[test]
fn the_default_host_list_on_loopback_is_loopback_and_the_public_host() {
    use portcullis::config::model::HostPolicy;
    let text = |server: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"https://mcp.example.com\"\n\
             {server}\n[providers.open]\ntype = \"anonymous\"\n[[routes]]\npath = \"/\"\n\
             upstream = \"http://127.0.0.1:9/\"\nchain = [\"open\"]\n"
        )
    };
    let load = |server: &str| {
        portcullis::config::load_str(&text(server), "t.toml", std::path::Path::new("."))
            .expect("valid")
            .server
            .allowed_hosts
    };
    assert_eq!(
        load(""),
        HostPolicy::List(vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "[::1]".into(),
            "mcp.example.com".into()
        ])
    );
    assert_eq!(load("allowed_hosts = [\"*\"]"), HostPolicy::Any);
    let err = portcullis::config::load_str(
        &text("allowed_hosts = [\"https://x.example\"]"),
        "t.toml",
        std::path::Path::new("."),
    )
    .expect_err("a URL is not a host");
    assert!(err.to_string().contains("server.allowed_hosts[0]"), "{err}");
}

#[tokio::test]
async fn a_trusted_proxy_asking_forward_auth_for_a_host_of_its_own_is_answered() {
    let upstream = RecordingUpstream::start().await;
    let config = TestConfig::new()
        .behind("nginx")
        .http_route("/api", &["keys"])
        .api_keys(&["reader"])
        .server(r#"allowed_hosts = ["localhost", "127.0.0.1"]"#);
    let h = start_with_upstream(config, &upstream.url).await;
    let auth = format!("Bearer {READER_KEY}");
    let check = h
        .request(
            "GET",
            "/check",
            &[
                ("host", "tenant-a.example.com"),
                ("x-original-method", "GET"),
                ("x-original-uri", "/api/x"),
                ("x-forwarded-for", "203.0.113.9"),
                ("authorization", &auth),
            ],
            None,
        )
        .await;
    assert_eq!(check.status, 200, "{}", check.body);
    // The same host on a proxied route is still refused.
    let direct = h
        .request(
            "GET",
            "/api/x",
            &[("host", "tenant-a.example.com"), ("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(direct.status, 421, "{}", direct.body);
}
