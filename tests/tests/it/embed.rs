//! The tower layer decides like the gateway: one TOML config (`standard()`) drives a real
//! gateway in front of an echo upstream and, through `config::load_str_embedded`, an axum
//! service behind `AuthLayer`, both served by real hyper servers on port 0. The same
//! requests must get the same status, challenge and refusal body, and on allow the same
//! identity (headers upstream, extensions in the service) and the body intact.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Extension;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::any;
use portcullis::config;
use portcullis::embed::{AuthLayer, AuthenticatedBy};
use portcullis::verdict::Identity;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::gateway_harness::{
    ADMIN_KEY, NOSCOPE_KEY, READER_KEY, Reply, fill, send, standard, start_with_upstream,
};

/// What a handler saw, as the echo answers it: who, and the body it got. A `tools/list`
/// body is answered with two tools, so that listing filtering can be compared too.
fn echo(subject: &str, scopes: &str, provider: &str, body: &str) -> axum::response::Response {
    if let Ok(request) = serde_json::from_str::<Value>(body)
        && request["method"] == "tools/list"
    {
        let listing = json!({
            "jsonrpc": "2.0",
            "id": request["id"],
            "result": { "tools": [{ "name": "echo" }, { "name": "admin_reset" }] },
        });
        return axum::Json(listing).into_response();
    }
    axum::Json(json!({
        "subject": subject,
        "scopes": scopes,
        "provider": provider,
        "body": body,
    }))
    .into_response()
}

/// The gateway's upstream: reads the identity from the `x-portcullis-*` headers.
async fn upstream_echo(headers: HeaderMap, body: String) -> axum::response::Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    echo(
        &header("x-portcullis-subject"),
        &header("x-portcullis-scopes"),
        &header("x-portcullis-provider"),
        &body,
    )
}

/// The embedded service's handler: reads the identity from the request's extensions.
async fn embedded_echo(
    Extension(caller): Extension<Identity>,
    Extension(AuthenticatedBy(provider)): Extension<AuthenticatedBy>,
    body: String,
) -> axum::response::Response {
    echo(&caller.subject, &caller.scopes.join(" "), &provider, &body)
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Option<&'static str>,
    status: u16,
}

fn case(
    name: &'static str,
    path: &'static str,
    key: Option<&str>,
    body: Option<&'static str>,
    status: u16,
) -> Case {
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        ("accept", "application/json, text/event-stream".to_owned()),
    ];
    if let Some(key) = key {
        headers.push(("authorization", format!("Bearer {key}")));
    }
    Case {
        name,
        method: if body.is_some() { "POST" } else { "GET" },
        path,
        headers,
        body,
        status,
    }
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
const CALL_ECHO: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
const CALL_ADMIN: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"admin_reset","arguments":{}}}"#;
const LIST_TOOLS: &str = r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#;

fn matrix() -> Vec<Case> {
    let mut cases = vec![
        case("no credential", "/mcp", None, Some(INITIALIZE), 401),
        case("bad key", "/mcp", Some("not-a-key"), Some(INITIALIZE), 401),
        case(
            "reader initializes",
            "/mcp",
            Some(READER_KEY),
            Some(INITIALIZE),
            200,
        ),
        case(
            "reader calls echo",
            "/mcp",
            Some(READER_KEY),
            Some(CALL_ECHO),
            200,
        ),
        case(
            "reader calls admin tool",
            "/mcp",
            Some(READER_KEY),
            Some(CALL_ADMIN),
            403,
        ),
        case(
            "admin calls admin tool",
            "/mcp",
            Some(ADMIN_KEY),
            Some(CALL_ADMIN),
            200,
        ),
        case(
            "no-scope key",
            "/mcp",
            Some(NOSCOPE_KEY),
            Some(CALL_ECHO),
            403,
        ),
        case(
            "reader lists tools",
            "/mcp",
            Some(READER_KEY),
            Some(LIST_TOOLS),
            200,
        ),
        case(
            "admin lists tools",
            "/mcp",
            Some(ADMIN_KEY),
            Some(LIST_TOOLS),
            200,
        ),
        case(
            "malformed JSON-RPC",
            "/mcp",
            Some(READER_KEY),
            Some("{not json"),
            400,
        ),
        case("reader GET", "/mcp", Some(READER_KEY), None, 200),
        case("GET without credential", "/mcp", None, None, 401),
        case("no route", "/elsewhere", Some(ADMIN_KEY), None, 404),
        case(
            "path not in normal form",
            "/mcp/../admin",
            Some(ADMIN_KEY),
            None,
            400,
        ),
        case(
            "metadata",
            "/.well-known/oauth-protected-resource/mcp",
            None,
            None,
            200,
        ),
    ];
    let mut smuggled = case(
        "smuggled identity",
        "/mcp",
        Some(READER_KEY),
        Some(CALL_ECHO),
        200,
    );
    smuggled
        .headers
        .push(("x-portcullis-subject", "admin".to_owned()));
    smuggled
        .headers
        .push(("x-portcullis-scopes", "admin mcp:read".to_owned()));
    cases.push(smuggled);
    let mut foreign = case(
        "foreign origin",
        "/mcp",
        Some(READER_KEY),
        Some(CALL_ECHO),
        403,
    );
    foreign
        .headers
        .push(("origin", "https://evil.example".to_owned()));
    cases.push(foreign);
    cases
}

async fn ask(base: &str, case: &Case) -> Reply {
    let headers: Vec<(&str, &str)> = case.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    send(
        &format!("{base}{}", case.path),
        case.method,
        &headers,
        case.body,
    )
    .await
}

/// What must be equal between the two answers.
fn observed(reply: &Reply) -> Value {
    let body: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
    json!({
        "status": reply.status,
        "www-authenticate": reply.header("www-authenticate"),
        "cache-control": reply.header("cache-control"),
        "body": body,
    })
}

#[tokio::test]
async fn tower_layer_allows_and_refuses_exactly_like_the_gateway() {
    let upstream = serve(Router::new().route("/mcp", any(upstream_echo))).await;
    let gateway = start_with_upstream(standard(), &format!("http://{upstream}/mcp")).await;
    // The very text the gateway runs with (same public URL, so the same challenges).
    let text = fill(standard(), gateway.addr, &format!("http://{upstream}/mcp"));
    let config = config::load_str_embedded(&text, "<test config>", std::path::Path::new("."))
        .expect("the gateway's config is valid for embedding");
    let layer = AuthLayer::from_config(&config, None)
        .await
        .expect("the layer builds");
    let service = serve(Router::new().route("/mcp", any(embedded_echo)).layer(layer)).await;
    let embedded = format!("http://{service}");

    let mut mismatches = Vec::new();
    for case in matrix() {
        let through_gateway = ask(&gateway.base, &case).await;
        let through_layer = ask(&embedded, &case).await;
        assert_eq!(
            through_gateway.status, case.status,
            "{}: the gateway answered {}",
            case.name, through_gateway.body
        );
        let (want, got) = (observed(&through_gateway), observed(&through_layer));
        if want != got {
            mismatches.push(format!(
                "{}:\n  expected (gateway): {want}\n  got (layer):        {got}",
                case.name
            ));
        }
        if case.status == 200 && case.path == "/mcp" && case.body != Some(LIST_TOOLS) {
            let seen: Value = serde_json::from_str(&through_layer.body).expect("echo JSON");
            assert_eq!(
                seen["body"].as_str(),
                Some(case.body.unwrap_or("")),
                "{}: the service got the body intact",
                case.name
            );
        }
    }
    assert!(mismatches.is_empty(), "\n{}", mismatches.join("\n\n"));
    gateway.stop().await;
}

#[tokio::test]
async fn tower_layer_identity_and_filtered_listing_are_what_the_rules_allow() {
    let upstream = serve(Router::new().route("/mcp", any(upstream_echo))).await;
    let gateway = start_with_upstream(standard(), &format!("http://{upstream}/mcp")).await;
    let text = fill(standard(), gateway.addr, &format!("http://{upstream}/mcp"));
    let config = config::load_str_embedded(&text, "<test config>", std::path::Path::new("."))
        .expect("valid for embedding");
    let layer = AuthLayer::from_config(&config, None).await.expect("builds");
    let base = format!(
        "http://{}",
        serve(Router::new().route("/mcp", any(embedded_echo)).layer(layer)).await
    );
    let reader = ask(
        &base,
        &case("", "/mcp", Some(READER_KEY), Some(CALL_ECHO), 200),
    )
    .await;
    let seen: Value = serde_json::from_str(&reader.body).expect("echo JSON");
    assert_eq!(
        (
            seen["subject"].as_str(),
            seen["scopes"].as_str(),
            seen["provider"].as_str()
        ),
        (Some("reader"), Some("mcp:read"), Some("keys"))
    );
    let listing = ask(
        &base,
        &case("", "/mcp", Some(READER_KEY), Some(LIST_TOOLS), 200),
    )
    .await;
    let tools: Vec<String> = serde_json::from_str::<Value>(&listing.body).expect("JSON")["result"]
        ["tools"]
        .as_array()
        .expect("a listing")
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(tools, ["echo"], "the reader is not shown the admin tool");
    let refused = ask(
        &base,
        &case("", "/mcp", Some(READER_KEY), Some(CALL_ADMIN), 403),
    )
    .await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.header("www-authenticate"),
        Some(
            format!(
                "Bearer error=\"insufficient_scope\", scope=\"admin mcp:read\", \
                 resource_metadata=\"http://{}/.well-known/oauth-protected-resource/mcp\"",
                gateway.addr
            )
            .as_str()
        )
    );
    gateway.stop().await;
}

#[tokio::test]
async fn swapping_the_layers_site_changes_decisions_for_services_already_built() {
    let addr: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    let load = |text: &str| {
        config::load_str_embedded(text, "<test config>", std::path::Path::new("."))
            .expect("valid for embedding")
    };
    let strict_text = fill(standard(), addr, "http://127.0.0.1:9/unused");
    let strict = load(&strict_text);
    let layer = AuthLayer::from_config(&strict, None).await.expect("builds");
    let base = format!(
        "http://{}",
        serve(
            Router::new()
                .route("/mcp", any(embedded_echo))
                .layer(layer.clone())
        )
        .await
    );
    let admin_call = case("", "/mcp", Some(READER_KEY), Some(CALL_ADMIN), 0);
    assert_eq!(ask(&base, &admin_call).await.status, 403);

    // The same config without the admin rule: the reader may now call the admin tool.
    let relaxed = strict_text.replace(
        "[[rules]]\nmcp_method = \"tools/call\"\ntool = \"admin_*\"\nscopes = [\"admin\"]\n",
        "",
    );
    assert_ne!(relaxed, strict_text, "the admin rule was removed");
    layer.reload(&load(&relaxed)).await.expect("reloads");
    assert_eq!(ask(&base, &admin_call).await.status, 200);

    // A config that does not assemble changes nothing.
    let broken = relaxed.replace(
        "{ name = \"reader\", hash = \"sha256:",
        "{ name = \"reader\", hash = \"sha256:zz",
    );
    assert!(layer.reload(&load(&broken)).await.is_err());
    assert_eq!(ask(&base, &admin_call).await.status, 200);
}
