//! Review 13: the decision path refactored into `admission::admit`, attacked through each of
//! its entry points — the reverse proxy, the forward-auth check, the tower layer and
//! `portcullis eval` — looking for a request one of them lets through (or judges) otherwise
//! than the gateway's proxy does.
//!
//! Every test asserts the behaviour the README and SECURITY.md promise; the report lists which
//! fail today.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Extension;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::any;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis::config;
use portcullis::embed::AuthLayer;
use portcullis::verdict::Identity;
use portcullis_cli::{self as cli, EvalArgs};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::gateway_harness::{
    ADMIN_KEY, READER_KEY, TestConfig, fill, send, standard, start, start_with_upstream,
};

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
const CALL_ECHO: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
const LIST_TOOLS: &str = r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#;

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

// ---------------------------------------------------------------------------------------
// Forward-auth: MCP sessions are not bound to their caller.
// ---------------------------------------------------------------------------------------

/// An MCP route judged through forward-auth (path rules only, which the config accepts):
/// the admin opens a session through the gateway, and the reader presents the admin's
/// session id. The gateway's proxy answers 404 (README: "MCP sessions are bound to the
/// caller that opened them"); the forward-auth check for the very same request must not
/// tell the proxy in front to let it through.
#[tokio::test]
async fn forward_auth_check_refuses_an_mcp_session_another_caller_opened() {
    let config = TestConfig::new()
        .behind("envoy")
        .route("/mcp", &["keys"])
        .api_keys(&["reader", "admin"])
        .path_rule("/mcp", &["mcp:read"]);
    let h = start(config).await;
    let session = h.mcp_session(ADMIN_KEY).await;

    // Through the gateway's own proxy: refused, the session is the admin's.
    let proxied = h
        .mcp_post(Some(READER_KEY), Some(&session), CALL_ECHO)
        .await;
    assert_eq!(
        proxied.status, 404,
        "the proxy binds sessions: {}",
        proxied.body
    );

    // The same request as Envoy's ext_authz describes it to the check.
    let reader = format!("Bearer {READER_KEY}");
    let check = h
        .request(
            "POST",
            "/check/mcp",
            &[
                ("authorization", &reader),
                ("x-forwarded-for", "127.0.0.1"),
                ("content-type", "application/json"),
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "2025-06-18"),
            ],
            None,
        )
        .await;
    assert_ne!(
        check.status, 200,
        "forward-auth let the reader into the admin's MCP session (the proxy in front would \
         forward it to the upstream); the gateway's proxy answers 404 for it\n{}",
        check.body
    );
    assert!(check.header("x-portcullis-subject").is_none());
}

/// The same with a session id that no upstream behind this gateway ever issued: the proxy
/// answers 404 `session_not_found`, the check 200.
#[tokio::test]
async fn forward_auth_check_refuses_a_made_up_mcp_session() {
    let config = TestConfig::new()
        .behind("nginx")
        .route("/mcp", &["keys"])
        .api_keys(&["reader", "admin"])
        .path_rule("/mcp", &["mcp:read"]);
    let h = start(config).await;
    let proxied = h
        .mcp_post(Some(READER_KEY), Some("made-up-session"), CALL_ECHO)
        .await;
    assert_eq!(proxied.status, 404, "{}", proxied.body);
    let reader = format!("Bearer {READER_KEY}");
    let check = h
        .request(
            "GET",
            "/check",
            &[
                ("authorization", &reader),
                ("x-original-method", "POST"),
                ("x-original-uri", "/mcp"),
                ("x-forwarded-for", "127.0.0.1"),
                ("mcp-session-id", "made-up-session"),
            ],
            None,
        )
        .await;
    assert_eq!(
        check.status, proxied.status,
        "forward-auth and the proxy judge the same request differently: {}",
        check.body
    );
}

// ---------------------------------------------------------------------------------------
// Tower layer: MCP sessions are not bound to their caller.
// ---------------------------------------------------------------------------------------

/// An MCP server that issues `session-of-<subject>` on `initialize` and otherwise answers
/// with who called and in which session. `subject` is how the server learns the caller.
fn session_answer(subject: &str, headers: &HeaderMap, body: &str) -> axum::response::Response {
    let request: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if request["method"] == "initialize" {
        let mut response = axum::Json(json!({
            "jsonrpc": "2.0", "id": request["id"], "result": {"protocolVersion": "2025-06-18"}
        }))
        .into_response();
        response.headers_mut().insert(
            "mcp-session-id",
            format!("session-of-{subject}").parse().expect("hv"),
        );
        return response;
    }
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    axum::Json(json!({
        "jsonrpc": "2.0", "id": request["id"],
        "result": {"content": [{"type": "text", "text": format!("{subject} in {session}")}]}
    }))
    .into_response()
}

async fn upstream_session(headers: HeaderMap, body: String) -> axum::response::Response {
    let subject = headers
        .get("x-portcullis-subject")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    session_answer(&subject, &headers, &body)
}

async fn embedded_session(
    Extension(caller): Extension<Identity>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    session_answer(&caller.subject, &headers, &body)
}

fn mcp_headers(key: &str, session: Option<&str>) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        ("accept", "application/json, text/event-stream".to_owned()),
        ("authorization", format!("Bearer {key}")),
    ];
    if let Some(session) = session {
        headers.push(("mcp-session-id", session.to_owned()));
    }
    headers
}

async fn post(
    base: &str,
    key: &str,
    session: Option<&str>,
    body: &str,
) -> crate::gateway_harness::Reply {
    let headers = mcp_headers(key, session);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    send(&format!("{base}/mcp"), "POST", &headers, Some(body)).await
}

/// One config drives the gateway and the layer (as `embed.rs` does). The admin opens a
/// session; the reader presents it. The gateway answers 404; the layer must too ("the
/// tower layer decides like the gateway").
#[tokio::test]
async fn tower_layer_refuses_an_mcp_session_another_caller_opened() {
    let upstream = serve(Router::new().route("/mcp", any(upstream_session))).await;
    let gateway = start_with_upstream(standard(), &format!("http://{upstream}/mcp")).await;
    let text = fill(standard(), gateway.addr, &format!("http://{upstream}/mcp"));
    let config = config::load_str_embedded(&text, "<test config>", std::path::Path::new("."))
        .expect("valid for embedding");
    let layer = AuthLayer::from_config(&config, None).await.expect("builds");
    let embedded = format!(
        "http://{}",
        serve(
            Router::new()
                .route("/mcp", any(embedded_session))
                .layer(layer)
        )
        .await
    );

    let mut answers = Vec::new();
    for base in [&gateway.base, &embedded] {
        let init = post(base, ADMIN_KEY, None, INITIALIZE).await;
        assert_eq!(init.status, 200, "{}", init.body);
        let session = init
            .header("mcp-session-id")
            .expect("the session id comes back")
            .to_owned();
        assert_eq!(session, "session-of-admin");
        let stolen = post(base, READER_KEY, Some(&session), CALL_ECHO).await;
        answers.push((stolen.status, stolen.body));
    }
    let (through_gateway, through_layer) = (&answers[0], &answers[1]);
    assert_eq!(through_gateway.0, 404, "{}", through_gateway.1);
    assert_eq!(
        through_layer.0, 404,
        "the tower layer let the reader into the admin's session: {}",
        through_layer.1
    );
    gateway.stop().await;
}

// ---------------------------------------------------------------------------------------
// Proxy: a compressed listing passes unfiltered.
// ---------------------------------------------------------------------------------------

/// An MCP upstream that compresses its answers when the client accepts gzip (as one behind
/// compression middleware does: Express `compression()`, tower-http's `CompressionLayer`).
async fn compressing_upstream(headers: HeaderMap, body: String) -> axum::response::Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let listing = serde_json::to_vec(&json!({
        "jsonrpc": "2.0",
        "id": request["id"],
        "result": { "tools": [{ "name": "echo" }, { "name": "admin_reset" }] },
    }))
    .expect("json");
    let gzip = headers
        .get("accept-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    if !gzip {
        return ([("content-type", "application/json")], listing).into_response();
    }
    (
        [
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        portcullis_tests::gzip::gzip(&listing),
    )
        .into_response()
}

/// Sends `body` to `url` and returns the status, headers and raw body bytes.
async fn raw_post(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, HeaderMap, Bytes) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut request = http::Request::builder().method("POST").uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("answers in time")
        .expect("sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, bytes)
}

/// The names of the tools in a listing answer, decoded as the client decodes it.
fn listed_tools(headers: &HeaderMap, body: &[u8]) -> Vec<String> {
    let gzipped = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let plain = if gzipped {
        portcullis_tests::gzip::gunzip(body)
    } else {
        body.to_vec()
    };
    let value: Value = serde_json::from_slice(&plain).expect("a JSON listing");
    value["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

/// The reader (no `admin`) lists tools. Uncompressed, the gateway hides `admin_reset`
/// (README: listings are filtered to what the caller may call). With `Accept-Encoding:
/// gzip` — a header the client chooses and the gateway passes on — the upstream compresses
/// the answer, the listing's member name is no longer in the bytes, and the gateway must
/// still not show `admin_reset` (filter it, or refuse the answer with 502).
#[tokio::test]
async fn a_gzip_listing_from_the_upstream_is_still_filtered() {
    let upstream = serve(Router::new().route("/mcp", any(compressing_upstream))).await;
    let h = start_with_upstream(standard(), &format!("http://{upstream}/mcp")).await;
    let auth = format!("Bearer {READER_KEY}");
    let url = format!("{}/mcp", h.base);
    let base_headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];

    let (status, headers, body) = raw_post(&url, &base_headers, LIST_TOOLS).await;
    assert_eq!(status, 200);
    assert_eq!(
        listed_tools(&headers, &body),
        ["echo"],
        "filtered when plain"
    );

    let mut gzip_headers = base_headers.to_vec();
    gzip_headers.push(("accept-encoding", "gzip"));
    let (status, headers, body) = raw_post(&url, &gzip_headers, LIST_TOOLS).await;
    if status == 200 {
        let tools = listed_tools(&headers, &body);
        assert!(
            !tools.iter().any(|t| t == "admin_reset"),
            "the reader was shown `admin_reset` in a gzip-encoded listing: {tools:?}"
        );
    } else {
        assert_eq!(status, 502, "refused, as an unreadable listing is");
    }
    h.stop().await;
}

/// An upstream that compresses whatever the request asked for: the gateway asked for
/// `identity`, cannot read the listing, and refuses it rather than pass it on.
#[tokio::test]
async fn a_listing_compressed_unasked_is_refused() {
    let always_gzip = |headers: HeaderMap, body: String| async move {
        let mut headers = headers;
        headers.insert("accept-encoding", http::HeaderValue::from_static("gzip"));
        compressing_upstream(headers, body).await
    };
    let upstream = serve(Router::new().route("/mcp", any(always_gzip))).await;
    let h = start_with_upstream(standard(), &format!("http://{upstream}/mcp")).await;
    let auth = format!("Bearer {READER_KEY}");
    let (status, _, body) = raw_post(
        &format!("{}/mcp", h.base),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ],
        LIST_TOOLS,
    )
    .await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    h.stop().await;
}

// ---------------------------------------------------------------------------------------
// `portcullis eval`: judged as the gateway judges it.
// ---------------------------------------------------------------------------------------

/// `eval --method post`: the gateway refuses a method not in upper case with 400 (SECURITY.md:
/// "methods not in upper case … (400)"); eval reads it as `POST` and reports an allow.
#[tokio::test]
async fn eval_refuses_a_lower_case_method_as_the_gateway_does() {
    eval_answers_as_the_gateway("post", "/mcp", 400).await;
}

/// Sends an MCP call (`echo`, as the reader) as `method path` to a gateway on the standard
/// config and through `portcullis eval` on the same config, and checks that both answer
/// `status`.
pub(crate) async fn eval_answers_as_the_gateway(method: &str, path: &str, status: u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = fill(
        standard(),
        "127.0.0.1:8080".parse().expect("addr"),
        "http://127.0.0.1:9/mcp",
    );
    let config = dir.path().join("portcullis.toml");
    std::fs::write(&config, &text).expect("config");
    let body = dir.path().join("call.json");
    std::fs::write(&body, CALL_ECHO).expect("body");

    let h = start(standard()).await;
    let gateway = h
        .request(
            method,
            path,
            &[
                ("authorization", &format!("Bearer {READER_KEY}")),
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
            ],
            Some(CALL_ECHO),
        )
        .await;
    assert_eq!(gateway.status, status, "{}", gateway.body);

    let report = cli::eval(&EvalArgs {
        config,
        providers: None,
        method: method.into(),
        path: path.into(),
        headers: vec![
            format!("Authorization: Bearer {READER_KEY}"),
            "Content-Type: application/json".into(),
        ],
        body: Some(body),
        peer: None,
    })
    .await
    .expect("eval runs");
    assert!(
        !report.allowed && report.text.contains(&format!("answer   {status}")),
        "eval does not give the gateway's {status} for `{method} {path}`:\n{}",
        report.text
    );
    h.stop().await;
}

// ---------------------------------------------------------------------------------------
// Proxy: a listing on the GET stream is judged as if its calls were GETs.
// ---------------------------------------------------------------------------------------

/// The listing every answer of this upstream carries: on `GET /mcp` as an SSE event (a
/// resumed stream replaying a `tools/list` answer, `Last-Event-ID`), on `POST` as JSON.
async fn listing_on_every_stream(method: http::Method) -> axum::response::Response {
    let listing = json!({
        "jsonrpc": "2.0",
        "id": 4,
        "result": { "tools": [{ "name": "echo" }, { "name": "admin_reset" }] },
    });
    if method == http::Method::GET {
        let event = format!("id: 1\nevent: message\ndata: {listing}\n\n");
        return ([("content-type", "text/event-stream")], event).into_response();
    }
    axum::Json(listing).into_response()
}

/// A tool rule written for the only method a tool call can have (`methods = ["POST"]`):
/// the reader may not call `admin_reset`. The `tools/list` answer on a POST is filtered;
/// the same answer on the GET stream must be too (README: "entries the caller could not
/// call are removed") — the call it names would be a POST, which the rule covers.
#[tokio::test]
async fn a_listing_on_the_get_stream_hides_tools_a_post_only_rule_forbids() {
    let upstream = serve(Router::new().route("/mcp", any(listing_on_every_stream))).await;
    let config = TestConfig::new()
        .route("/mcp", &["keys"])
        .api_keys(&["reader", "admin"])
        .path_rule("/mcp", &["mcp:read"])
        .rule(
            "methods = [\"POST\"]\nmcp_method = \"tools/call\"\ntool = \"admin_*\"",
            &["admin"],
        );
    let h = start_with_upstream(config, &format!("http://{upstream}/mcp")).await;
    let auth = format!("Bearer {READER_KEY}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    // The rule holds for the call itself...
    let call = h
        .request(
            "POST",
            "/mcp",
            &headers,
            Some(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"admin_reset","arguments":{}}}"#),
        )
        .await;
    assert_eq!(call.status, 403, "{}", call.body);
    // ...and for the listing answered on the POST.
    let posted = h.request("POST", "/mcp", &headers, Some(LIST_TOOLS)).await;
    let names = |reply: &crate::gateway_harness::Reply| -> Vec<String> {
        reply
            .messages()
            .iter()
            .flat_map(|m| m["result"]["tools"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(names(&posted), ["echo"], "{}", posted.body);
    // The same listing on the GET stream.
    let streamed = h
        .request(
            "GET",
            "/mcp",
            &[
                ("authorization", auth.as_str()),
                ("accept", "text/event-stream"),
            ],
            None,
        )
        .await;
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    assert_eq!(
        names(&streamed),
        ["echo"],
        "the reader was shown `admin_reset` on the GET stream: {}",
        streamed.body
    );
    h.stop().await;
}

// ---------------------------------------------------------------------------------------
// Proxy: `_` spellings of the MCP headers the gateway binds or checks.
// ---------------------------------------------------------------------------------------

/// Whether `name` reads as `wanted` to an upstream that folds `_` into `-` (CGI, WSGI,
/// Rack, PHP: both are `HTTP_MCP_SESSION_ID`), as SECURITY.md already treats identity and
/// forwarding headers.
fn folds_to(name: &http::HeaderName, wanted: &str) -> bool {
    name.as_str().replace('_', "-") == wanted
}

/// An upstream that opens `session-of-<subject>` on `initialize` and otherwise answers 200.
async fn recording_sessions() -> portcullis_tests::upstream::RecordingUpstream {
    portcullis_tests::upstream::RecordingUpstream::answering(|seen| async move {
        let body = String::from_utf8_lossy(&seen.body).into_owned();
        if body.contains("\"initialize\"") {
            let subject = seen.header("x-portcullis-subject").unwrap_or("").to_owned();
            return portcullis_tests::upstream::session_opened(&subject);
        }
        portcullis_tests::upstream::json(r#"{"jsonrpc":"2.0","id":2,"result":{}}"#)
    })
    .await
}

/// The admin opens a session; the reader presents it as `Mcp_Session_Id`. With the dash
/// spelling the gateway answers 404; the `_` spelling must not carry the admin's session to
/// the upstream either (refused, or removed), since a Rack, PHP or CGI MCP server reads it
/// as the session id.
#[tokio::test]
async fn an_underscore_spelled_session_id_does_not_carry_another_callers_session() {
    let upstream = recording_sessions().await;
    let h = start_with_upstream(standard(), &upstream.url).await;
    let init = post(&h.base, ADMIN_KEY, None, INITIALIZE).await;
    assert_eq!(init.status, 200, "{}", init.body);
    let session = init.header("mcp-session-id").expect("issued").to_owned();
    assert_eq!(session, "session-of-admin");

    let dashed = post(&h.base, READER_KEY, Some(&session), CALL_ECHO).await;
    assert_eq!(dashed.status, 404, "{}", dashed.body);

    let underscored = h
        .mcp_post_with(Some(READER_KEY), &[("mcp_session_id", &session)], CALL_ECHO)
        .await;
    let carried: Vec<String> = upstream
        .seen()
        .iter()
        .filter(|s| s.header("x-portcullis-subject") == Some("reader"))
        .flat_map(|s| {
            s.headers
                .iter()
                .filter(|(n, _)| folds_to(n, "mcp-session-id"))
                .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        carried.is_empty(),
        "the reader's request reached the upstream ({}) carrying the admin's session as {carried:?}",
        underscored.status
    );
}

/// `Mcp-Name: admin_reset` on a body calling `echo` is refused (400: the mirrored header
/// disagrees with the body). `Mcp_Name: admin_reset`, which a CGI-style upstream reads as
/// the same header, must not reach the upstream unchecked either.
#[tokio::test]
async fn an_underscore_spelled_mcp_name_is_checked_like_mcp_name() {
    let upstream = recording_sessions().await;
    let h = start_with_upstream(standard(), &upstream.url).await;
    let send_with = |name: &'static str| {
        let h = &h;
        async move {
            h.mcp_post_with(Some(READER_KEY), &[(name, "admin_reset")], CALL_ECHO)
                .await
        }
    };
    let dashed = send_with("mcp-name").await;
    assert_eq!(dashed.status, 400, "{}", dashed.body);
    let underscored = send_with("mcp_name").await;
    let carried = upstream
        .seen()
        .iter()
        .any(|s| s.headers.keys().any(|n| folds_to(n, "mcp-name")));
    assert!(
        !carried,
        "`Mcp_Name: admin_reset` reached the upstream ({}) beside a body calling `echo`",
        underscored.status
    );
}

// ---------------------------------------------------------------------------------------
// Every entry point: case-blind reading of routes and rules written in capitals.
// ---------------------------------------------------------------------------------------

/// The mirror of `attack_mcp::case_blind`: routes and rules written in capitals (the
/// spelling of an ASP.NET Core or Express app behind the gateway), everything else public.
/// `/API` needs a key, `/API/Admin` the `admin` scope, `/api/Reports` (a rule on a
/// lower-case route) the `admin` scope too.
fn capitals() -> TestConfig {
    TestConfig::new()
        .route("/API", &["keys"])
        .with("mcp = false")
        .with(r#"rules = [{ path = "/API/Admin", scopes = ["admin"] }]"#)
        .route("/api2", &["keys"])
        .with("mcp = false")
        .with(r#"rules = [{ path = "/api2/Reports", scopes = ["admin"] }]"#)
        .route("/", &["public"])
        .with("mcp = false")
        .provider("public", "anonymous")
        .api_keys(&["reader"])
}

/// An all-lower-case path needs no folding, but it is exactly what a case-blind upstream
/// routes to a capitalised route or rule: `/api/x` is the upstream's `/API/x`, which needs
/// a key; `/api2/reports` is its `/api2/Reports`, which needs `admin`. SECURITY.md: "a path
/// whose case-folded … reading reaches another route or another rule than its literal
/// reading is refused with 400". Today the lower-case spelling skips the capitalised route
/// (public `/` serves it) and the capitalised rule.
#[tokio::test]
async fn lower_case_paths_do_not_escape_routes_and_rules_written_in_capitals() {
    let upstream = portcullis_tests::upstream::RecordingUpstream::start().await;
    let h = start_with_upstream(capitals(), &upstream.url).await;
    let auth = format!("Bearer {READER_KEY}");
    // The spellings as written are judged by them.
    let anonymous = h.request("GET", "/API/x", &[], None).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let reports = h
        .request("GET", "/api2/Reports", &[("authorization", &auth)], None)
        .await;
    assert_eq!(reports.status, 403, "{reports:?}");
    let before = upstream.hits();
    let mut wrong = Vec::new();
    for (path, key) in [
        ("/api/x", None),
        ("/api/admin/x", None),
        ("/api/admin/x", Some(auth.as_str())),
        ("/api2/reports", Some(auth.as_str())),
    ] {
        let headers: Vec<(&str, &str)> = key.map(|k| ("authorization", k)).into_iter().collect();
        let reply = h.request("GET", path, &headers, None).await;
        if reply.status != 400 {
            wrong.push(format!("{path} (key: {}): {}", key.is_some(), reply.status));
        }
    }
    assert!(
        wrong.is_empty(),
        "lower-case spellings of capitalised routes and rules were not refused: {wrong:?}"
    );
    assert_eq!(upstream.hits(), before, "{:?}", upstream.seen());
}

// ---------------------------------------------------------------------------------------
// Proxy: `HEAD` is a `GET` to every upstream framework.
// ---------------------------------------------------------------------------------------

/// A rule for `GET` on `/api/reports` (the `admin` scope). `HEAD` runs the same handler in
/// axum, Express, Flask, Rails and ASP.NET Core (RFC 9110 §9.3.2: the same answer without the
/// content), so the reader must not get past the rule by asking with `HEAD`.
#[tokio::test]
async fn head_is_judged_by_the_rules_for_get() {
    let upstream = portcullis_tests::upstream::RecordingUpstream::start().await;
    let config = TestConfig::new()
        .http_route("/api", &["keys"])
        .api_keys(&["reader"])
        .rule("path = \"/api/reports\"\nmethods = [\"GET\"]", &["admin"]);
    let h = start_with_upstream(config, &upstream.url).await;
    let auth = format!("Bearer {READER_KEY}");
    let get = h
        .request("GET", "/api/reports", &[("authorization", &auth)], None)
        .await;
    assert_eq!(get.status, 403, "{get:?}");
    let head = h
        .request("HEAD", "/api/reports", &[("authorization", &auth)], None)
        .await;
    assert_eq!(
        head.status,
        403,
        "HEAD ran the GET handler the rule guards (upstream saw {:?})",
        upstream
            .seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.target))
            .collect::<Vec<_>>()
    );
}

/// The same escape through the forward-auth check (nginx family): the proxy in front asks
/// about `/api/admin/x`, which its case-blind upstream serves as `/API/Admin/x`.
#[tokio::test]
async fn forward_auth_does_not_let_lower_case_paths_escape_capitalised_routes() {
    let upstream = portcullis_tests::upstream::RecordingUpstream::start().await;
    let h = start_with_upstream(capitals().behind("nginx"), &upstream.url).await;
    let check = |uri: &'static str| h.nginx_check(None, "GET", uri);
    assert_eq!(check("/API/Admin/x").await.status, 401, "as written");
    assert_eq!(check("/API/admin/x").await.status, 400, "mixed spelling");
    let lower = check("/api/admin/x").await;
    assert_eq!(
        lower.status, 400,
        "the check let an anonymous caller to the upstream's /API/Admin/x: {lower:?}"
    );
    assert_eq!(upstream.hits(), 0);
}

// ---------------------------------------------------------------------------------------
// Config: rule paths no request can match are accepted.
// ---------------------------------------------------------------------------------------

/// A rule's `path` is a segment-wise prefix matched against paths in normal form. A rule
/// path with a glob (`/api/admin/*`, the syntax of `tool` and `resource` beside it), or one
/// not in normal form (`/api/%61dmin`, `/api//admin`, `/api/./admin`, `/api/admin;v=1`),
/// covers no request the gateway lets in (the glob only a literal `*` segment): the rule is silently dead and `/api/admin` is
/// served with the route's scopes only. Such a rule must be refused at load, as route paths
/// with percent-encoded or `.` segments are.
#[tokio::test]
async fn rule_paths_that_no_request_can_match_are_refused_at_load() {
    let addr: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    let mut accepted = Vec::new();
    for path in [
        "/api/admin/*",
        "/api/%61dmin",
        "/api//admin",
        "/api/./admin",
        "/api/admin;v=1",
    ] {
        let template = TestConfig::new()
            .http_route("/api", &["keys"])
            .api_keys(&["reader"])
            .path_rule(path, &["admin"]);
        let text = fill(template, addr, "http://127.0.0.1:9");
        if config::load_str(&text, "<test config>", std::path::Path::new(".")).is_ok() {
            accepted.push(path);
        }
    }
    assert!(
        accepted.is_empty(),
        "rule paths that cover no request were accepted: {accepted:?} (with `path = \
         \"/api/admin/*\"` the reader reached /api/admin/users with the route's scopes only)"
    );
}

// ---------------------------------------------------------------------------------------
// Proxy: behind a trusted proxy, the TLS client certificate is the proxy's.
// ---------------------------------------------------------------------------------------

/// A TLS-terminating proxy in `trusted_proxies` connects to the gateway with its own client
/// certificate (a mesh or an internal CA issues one to every service) and forwards a
/// client's request, naming the client in `X-Forwarded-For`. The forward-auth check never
/// takes the proxy's certificate for the client's (`gateway_tls.rs`); the proxied request
/// must not either — else every client the proxy forwards is authenticated as the proxy.
#[tokio::test]
async fn a_trusted_proxys_certificate_is_not_taken_for_the_forwarded_clients() {
    use crate::gateway_tls::{config as tls_config, connect, get_with, pki};
    let pki = pki();
    let upstream = portcullis_tests::upstream::RecordingUpstream::start().await;
    let h = start_with_upstream(
        tls_config(&pki, "optional").server(r#"trusted_proxies = ["127.0.0.1"]"#),
        &upstream.url,
    )
    .await;
    let stream = connect(&h, &pki, true).await.expect("mTLS handshake");
    let (_, status, headers) = get_with(stream, "/mcp", &[("x-forwarded-for", "203.0.113.9")])
        .await
        .expect("request");
    assert_eq!(
        status,
        401,
        "the client 203.0.113.9, forwarded by the proxy, was authenticated as the proxy's \
         certificate ({:?}); upstream saw subject {:?}",
        headers.get("x-portcullis-subject"),
        upstream
            .seen()
            .last()
            .and_then(|s| s.header("x-portcullis-subject").map(str::to_owned))
    );
}
