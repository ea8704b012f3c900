//! OAuth resource-server conformance (RFC 6750, RFC 9728, MCP authorization): the exact
//! challenge of every refusal, the metadata documents, CORS, `Origin` checks and request
//! hygiene, on a real gateway.

use crate::gateway_harness::{NOSCOPE_KEY, READER_KEY, standard, start};

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

#[tokio::test]
async fn missing_credentials_get_401_with_metadata_and_scope() {
    let h = start(standard()).await;
    let reply = h.mcp_post(None, None, LIST).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate").expect("challenge"),
        format!(
            "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:read\"",
            h.base
        )
    );
    let body: serde_json::Value = serde_json::from_str(&reply.body).expect("json body");
    assert_eq!(body["error"], "unauthorized");
    assert!(body["error_description"].is_string());
}

#[tokio::test]
async fn invalid_credentials_get_401_invalid_token() {
    let h = start(standard()).await;
    let reply = h.mcp_post(Some("wrong-key"), None, LIST).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate").expect("challenge"),
        format!(
            "Bearer error=\"invalid_token\", error_description=\"unknown API key\", resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            h.base
        )
    );
    assert_eq!(
        reply.body,
        r#"{"error":"invalid_token","error_description":"unknown API key"}"#
    );
}

#[tokio::test]
async fn missing_scope_gets_403_insufficient_scope_with_every_needed_scope() {
    let h = start(standard()).await;
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_reset","arguments":{}}}"#;
    let reply = h.mcp_post(Some(READER_KEY), None, call).await;
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.header("www-authenticate").expect("challenge"),
        format!(
            "Bearer error=\"insufficient_scope\", scope=\"admin mcp:read\", resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            h.base
        )
    );
    let none = h.mcp_post(Some(NOSCOPE_KEY), None, LIST).await;
    assert_eq!(none.status, 403);
    assert!(
        none.header("www-authenticate")
            .is_some_and(|c| c.contains("scope=\"mcp:read\"")),
        "{:?}",
        none.headers
    );
}

#[tokio::test]
async fn malformed_requests_get_400_invalid_request() {
    let h = start(standard()).await;
    let not_json = h.mcp_post(Some(READER_KEY), None, "{not json").await;
    assert_eq!(not_json.status, 400);
    assert!(
        not_json.body.contains("\"error\":\"invalid_request\""),
        "{}",
        not_json.body
    );
    let twice = h
        .request(
            "POST",
            "/mcp",
            &[
                ("content-type", "application/json"),
                ("authorization", "Bearer a"),
                ("authorization", "Bearer b"),
            ],
            Some(LIST),
        )
        .await;
    assert_eq!(twice.status, 400);
    assert!(
        twice
            .header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer error=\"invalid_request\"")),
        "{:?}",
        twice.headers
    );
}

#[tokio::test]
async fn metadata_documents_are_served_byte_for_byte_without_auth_and_with_cors() {
    let h = start(standard()).await;
    let route = h
        .request(
            "GET",
            "/.well-known/oauth-protected-resource/mcp",
            &[("host", "evil.example")],
            None,
        )
        .await;
    assert_eq!(route.status, 200);
    assert_eq!(
        route.body,
        format!(
            r#"{{"resource":"{}/mcp","authorization_servers":["https://auth.example.com"],"scopes_supported":["mcp:read","admin"],"bearer_methods_supported":["header"]}}"#,
            h.base
        ),
        "the resource comes from config, never from the Host header"
    );
    assert_eq!(route.header("access-control-allow-origin"), Some("*"));
    assert_eq!(route.header("content-type"), Some("application/json"));

    let root = h
        .request("GET", "/.well-known/oauth-protected-resource", &[], None)
        .await;
    assert_eq!(root.status, 200);
    assert_eq!(
        root.body,
        format!(
            r#"{{"resource":"{}","authorization_servers":["https://auth.example.com"],"scopes_supported":["mcp:read","admin"],"bearer_methods_supported":["header"]}}"#,
            h.base
        )
    );

    let preflight = h
        .request(
            "OPTIONS",
            "/.well-known/oauth-protected-resource/mcp",
            &[
                ("origin", "https://elsewhere.example"),
                ("access-control-request-method", "GET"),
            ],
            None,
        )
        .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert!(
        preflight
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("GET"))
    );
    let unknown = h
        .request(
            "GET",
            "/.well-known/oauth-protected-resource/nope",
            &[],
            None,
        )
        .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn disallowed_origin_is_refused_with_403() {
    let h = start(standard()).await;
    let auth = format!("Bearer {READER_KEY}");
    let evil = h
        .request(
            "POST",
            "/mcp",
            &[
                ("origin", "https://evil.example"),
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(LIST),
        )
        .await;
    assert_eq!(evil.status, 403);
    assert!(evil.body.contains("forbidden_origin"), "{}", evil.body);
    // The gateway listens on loopback and sets no list: local tools' origins are allowed.
    let local = h
        .request(
            "POST",
            "/mcp",
            &[
                ("origin", "http://localhost:6274"),
                ("content-type", "application/json"),
            ],
            Some(LIST),
        )
        .await;
    assert_eq!(
        local.status, 401,
        "passes the origin check, then needs a key"
    );
}

#[tokio::test]
async fn non_normalised_paths_are_refused_with_400() {
    let h = start(standard()).await;
    for path in [
        "/mcp/../admin",
        "/mcp/%2e%2e/x",
        "/mcp%2Fx",
        "//mcp",
        "/mcp/./x",
    ] {
        let reply = h.request("GET", path, &[], None).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert!(reply.body.contains("invalid_request"));
    }
}

#[tokio::test]
async fn oversized_mcp_body_gets_413() {
    let h = start(standard().server("max_body_bytes = 64")).await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"pad":"{}"}}}}"#,
        "x".repeat(200)
    );
    let reply = h.mcp_post(Some(READER_KEY), None, &big).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
}

#[tokio::test]
async fn health_readiness_and_metrics_are_public() {
    let h = start(standard()).await;
    assert_eq!(h.request("GET", "/healthz", &[], None).await.status, 200);
    let ready = h.request("GET", "/readyz", &[], None).await;
    assert_eq!(ready.status, 200);
    assert!(ready.body.contains(r#""name":"keys""#), "{}", ready.body);
    let _ = h.mcp_post(None, None, LIST).await;
    let _ = h.mcp_post(Some(READER_KEY), None, LIST).await;
    let metrics = h.request("GET", "/metrics", &[], None).await.body;
    for needle in [
        r#"portcullis_requests_total{route="/mcp",status="401"} 1"#,
        r#"portcullis_decisions_total{provider="keys",verdict="abstain"} 1"#,
        r#"portcullis_decisions_total{provider="keys",verdict="allow"} 1"#,
        "portcullis_provider_duration_seconds_bucket",
    ] {
        assert!(
            metrics.contains(needle),
            "missing `{needle}` in:\n{metrics}"
        );
    }
}
