//! The gateway with a Wasm provider in the chain: the partner-token example component
//! authenticates MCP clients end to end.

use crate::gateway_harness::{READER_KEY, TestConfig, start, tool_text};

/// `/mcp` through API keys, then the partner-token component (which knows `acme`).
fn partner_config() -> TestConfig {
    let acme = portcullis::engine::api_key::hash_key("s3cret");
    TestConfig::new()
        .route("/mcp", &["keys", "partner"])
        .api_keys(&["reader"])
        .wasm("partner", portcullis_tests::guests::PARTNER_TOKEN)
        .with(r#"config = { scheme = "partner-token" }"#)
        .with(&format!(
            r#"secrets = {{ credentials = "acme:{acme}:mcp:read" }}"#
        ))
        .with("limits = { timeout_ms = 50, memory_mib = 16 }")
        .path_rule("/mcp", &["mcp:read"])
}

#[tokio::test]
async fn partner_token_wasm_provider_authenticates_through_the_gateway() {
    let h = start(partner_config()).await;
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    let headers = |auth: &'static str| {
        vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("authorization", auth),
        ]
    };
    let ok = h
        .request(
            "POST",
            "/mcp",
            &headers("partner-token acme:s3cret"),
            Some(init),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let session = ok.header("mcp-session-id").expect("session").to_owned();

    let bad = h
        .request(
            "POST",
            "/mcp",
            &headers("partner-token acme:wrong"),
            Some(init),
        )
        .await;
    assert_eq!(bad.status, 401);
    assert!(
        bad.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer error=\"invalid_token\"")),
        "{:?}",
        bad.headers
    );

    // The API key still works in the same chain, and the upstream sees the Wasm identity.
    let mut call_headers = headers("partner-token acme:s3cret");
    call_headers.push(("mcp-session-id", &session));
    call_headers.push(("mcp-protocol-version", "2025-06-18"));
    let _ = h
        .request(
            "POST",
            "/mcp",
            &call_headers,
            Some(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
        )
        .await;
    let who = h
        .request(
            "POST",
            "/mcp",
            &call_headers,
            Some(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#),
        )
        .await;
    let seen: serde_json::Value = serde_json::from_str(&tool_text(&who)).expect("json");
    assert_eq!(seen["x-portcullis-subject"], serde_json::json!(["acme"]));
    assert_eq!(
        seen["x-portcullis-provider"],
        serde_json::json!(["partner"])
    );
    assert!(seen.get("authorization").is_none());
    let _ = h.mcp_session(READER_KEY).await;
}
