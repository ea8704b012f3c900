//! End to end through the gateway with a real MCP client (rmcp, Streamable HTTP) and the
//! real demo MCP server behind it.

use rmcp::RoleClient;
use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

use crate::gateway_harness::{ADMIN_KEY, Harness, READER_KEY, standard, start, tool_text};

async fn client(h: &Harness, key: &str) -> RunningService<RoleClient, ClientConfig> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", h.base)).auth_header(key),
    );
    ClientConfig::default()
        .serve(transport)
        .await
        .expect("the MCP client initializes through the gateway")
}

fn names(tools: &[rmcp::model::Tool]) -> Vec<String> {
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn mcp_client_lists_only_the_tools_its_key_may_call() {
    let h = start(standard()).await;
    let reader = client(&h, READER_KEY).await;
    let tools = reader.list_all_tools().await.expect("tools/list");
    assert_eq!(
        names(&tools),
        ["add", "echo", "whoami"],
        "admin_* is hidden from readers"
    );
    let admin = client(&h, ADMIN_KEY).await;
    let tools = admin.list_all_tools().await.expect("tools/list");
    assert_eq!(names(&tools), ["add", "admin_reset", "echo", "whoami"]);
    let _ = reader.cancel().await;
    let _ = admin.cancel().await;
}

#[tokio::test]
async fn mcp_client_calls_tools_and_admin_tools_need_admin() {
    let h = start(standard()).await;
    let reader = client(&h, READER_KEY).await;
    let args = serde_json::json!({"a": 2, "b": 40});
    let result = reader
        .call_tool(
            CallToolRequestParams::new("add")
                .with_arguments(args.as_object().cloned().expect("object")),
        )
        .await
        .expect("tools/call add");
    let text = result.content[0].as_text().expect("text").text.clone();
    assert_eq!(text, "42");
    let refused = reader
        .call_tool(CallToolRequestParams::new("admin_reset"))
        .await;
    assert!(refused.is_err(), "a reader must not call admin_reset");

    let admin = client(&h, ADMIN_KEY).await;
    let done = admin
        .call_tool(CallToolRequestParams::new("admin_reset"))
        .await
        .expect("admin may call admin_reset");
    assert_eq!(
        done.content[0].as_text().expect("text").text,
        "demo state reset"
    );
    let _ = admin.cancel().await;
}

#[tokio::test]
async fn mcp_client_without_credentials_is_refused() {
    let h = start(standard()).await;
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", h.base)),
    );
    let refused = ClientConfig::default().serve(transport).await;
    assert!(refused.is_err(), "initialize without a key must fail");
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", h.base))
            .auth_header("not-a-key"),
    );
    assert!(ClientConfig::default().serve(transport).await.is_err());
}

#[tokio::test]
async fn session_id_round_trips_and_delete_ends_the_session() {
    let h = start(standard()).await;
    let session = h.mcp_session(READER_KEY).await;
    let call = h
        .mcp_post(
            Some(READER_KEY),
            Some(&session),
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#,
        )
        .await;
    assert_eq!(call.status, 200, "{}", call.body);
    assert_eq!(
        call.header("content-type"),
        Some("text/event-stream"),
        "the upstream's SSE answer streams through"
    );
    let seen: serde_json::Value = serde_json::from_str(&tool_text(&call)).expect("whoami json");
    assert_eq!(seen["mcp-session-id"][0], session.as_str());

    let auth = format!("Bearer {READER_KEY}");
    let delete = h
        .request(
            "DELETE",
            "/mcp",
            &[("authorization", &auth), ("mcp-session-id", &session)],
            None,
        )
        .await;
    assert!(
        (200..300).contains(&delete.status),
        "DELETE reaches the upstream: {} {}",
        delete.status,
        delete.body
    );
    let after = h
        .mcp_post(
            Some(READER_KEY),
            Some(&session),
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
        )
        .await;
    assert_eq!(
        after.status, 404,
        "the upstream's status for an ended session passes unchanged"
    );
}

#[tokio::test]
async fn a_session_id_does_not_replace_authentication() {
    let h = start(standard()).await;
    let session = h.mcp_session(READER_KEY).await;
    let reply = h
        .mcp_post(
            None,
            Some(&session),
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        )
        .await;
    assert_eq!(reply.status, 401, "{}", reply.body);
}

#[tokio::test]
async fn credentials_never_reach_the_upstream_only_the_identity_does() {
    let h = start(standard()).await;
    let session = h.mcp_session(READER_KEY).await;
    let auth = format!("Bearer {READER_KEY}");
    let call = h
        .request(
            "POST",
            "/mcp",
            &[
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "2025-06-18"),
                ("authorization", &auth),
                ("x-portcullis-subject", "admin"),
                ("x-portcullis-scopes", "admin"),
                ("x-portcullis-anything", "forged"),
                ("proxy-authorization", "Basic c2VjcmV0"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "dropped"),
            ],
            Some(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#),
        )
        .await;
    assert_eq!(call.status, 200, "{}", call.body);
    let text = tool_text(&call);
    let seen: serde_json::Value = serde_json::from_str(&text).expect("whoami json");
    assert!(
        !text.contains(READER_KEY),
        "the key reached the upstream: {text}"
    );
    for absent in [
        "authorization",
        "proxy-authorization",
        "x-portcullis-anything",
        "x-hop",
    ] {
        assert!(
            seen.get(absent).is_none(),
            "`{absent}` reached the upstream: {text}"
        );
    }
    assert_eq!(seen["x-portcullis-subject"], serde_json::json!(["reader"]));
    assert_eq!(seen["x-portcullis-scopes"], serde_json::json!(["mcp:read"]));
    assert_eq!(seen["x-portcullis-provider"], serde_json::json!(["keys"]));
}

#[tokio::test]
async fn raw_tools_list_over_sse_is_filtered_per_request_id() {
    let h = start(standard()).await;
    let session = h.mcp_session(READER_KEY).await;
    let list = h
        .mcp_post(
            Some(READER_KEY),
            Some(&session),
            r#"{"jsonrpc":"2.0","id":"list-1","method":"tools/list"}"#,
        )
        .await;
    assert_eq!(list.status, 200);
    let messages = list.messages();
    let listing = messages
        .iter()
        .find(|m| m["id"] == "list-1")
        .unwrap_or_else(|| panic!("no listing in {}", list.body));
    let tools: Vec<&str> = listing["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(tools.contains(&"echo"));
    assert!(!tools.contains(&"admin_reset"), "got {tools:?}");
}
