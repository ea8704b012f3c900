//! Review 13c: a third attack, on the second review's fixes (`_method` overrides judged as the
//! method they name) and around them.
//!
//! Every test asserts the behaviour the README and SECURITY.md promise; the report lists which
//! fail today.

use std::io::Write as _;

use crate::attack_review13b::delete_needs_admin;
use crate::gateway_harness::{READER_KEY, RawReply, TestConfig, raw_request, start_with_upstream};
use portcullis_tests::upstream::{RecordingUpstream, Seen};

/// The reader's requests the upstream received.
fn from_reader(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.header("x-portcullis-subject") == Some("reader"))
        .map(|s| {
            format!(
                "{} {} body={:?} content-type={:?} content-encoding={:?}",
                s.method,
                s.target,
                String::from_utf8_lossy(&s.body),
                s.header("content-type"),
                s.header("content-encoding"),
            )
        })
        .collect()
}

/// Rack (every Rails app: `Rack::MethodOverride` is in the default middleware) reads the body
/// of a `POST` that has no `Content-Type` as a form (`Rack::Request#form_data?` is true for
/// "POST with no media type"), so `POST /api/items/1` with the body `_method=DELETE` and no
/// `Content-Type` runs as a `DELETE`. The gateway reads form bodies only when they are labelled
/// `application/x-www-form-urlencoded`, so it judges a `POST` and lets the reader through.
#[tokio::test]
async fn an_unlabelled_form_body_method_override_does_not_run_a_delete_the_rules_forbid() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(delete_needs_admin(), &upstream.url).await;
    let auth = format!("Bearer {READER_KEY}");
    let direct = h
        .request("DELETE", "/api/items/1", &[("authorization", &auth)], None)
        .await;
    assert_eq!(direct.status, 403, "the rule holds as written: {direct:?}");

    let overridden = h
        .request(
            "POST",
            "/api/items/1",
            &[("authorization", &auth)],
            Some("_method=DELETE"),
        )
        .await;
    let ran: Vec<String> = from_reader(&upstream.seen())
        .into_iter()
        .filter(|s| s.contains("_method=DELETE"))
        .collect();
    assert!(
        ran.is_empty(),
        "the reader's POST without Content-Type reached the upstream ({}) as {ran:?}; \
         Rack reads such a body as a form and Rack::MethodOverride runs the DELETE the rules \
         refused",
        overridden.status
    );
}

/// PHP turns `.` (and inner spaces) in a query or form field name into `_` when it fills
/// `$_GET` and `$_POST`, so Laravel (which turns method override on) and Symfony with
/// `http_method_override` read `POST /api/items/1?.method=DELETE` as `_method=DELETE` and run a
/// `DELETE`. The gateway looks only for a field spelled `_method`.
#[tokio::test]
async fn a_php_spelled_method_override_does_not_run_a_delete_the_rules_forbid() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(delete_needs_admin(), &upstream.url).await;
    let auth = format!("Bearer {READER_KEY}");
    let in_query = h
        .request(
            "POST",
            "/api/items/1?.method=DELETE",
            &[("authorization", &auth)],
            None,
        )
        .await;
    let in_form = h
        .request(
            "POST",
            "/api/items/1",
            &[
                ("authorization", &auth),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            Some(".method=DELETE"),
        )
        .await;
    let ran: Vec<String> = from_reader(&upstream.seen())
        .into_iter()
        .filter(|s| s.contains(".method=DELETE"))
        .collect();
    assert!(
        ran.is_empty(),
        "the reader's POSTs reached the upstream (query: {}, form: {}) as {ran:?}; PHP reads \
         `.method` as `_method` and Laravel runs the DELETE the rules refused",
        in_query.status,
        in_form.status
    );
}

/// Forward-auth (nginx family): the proxy describes `POST /api/items/1?_method=DELETE`, or
/// its PHP spelling `?.method=DELETE`; the check must not answer 200 for the reader, since an
/// upstream behind nginx runs it as the `DELETE` the rules refuse (403 for the plain one).
#[tokio::test]
async fn forward_auth_does_not_admit_a_method_override_in_either_spelling() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(delete_needs_admin().behind("nginx"), &upstream.url).await;
    let check =
        |method: &'static str, uri: &'static str| h.nginx_check(Some(READER_KEY), method, uri);
    let direct = check("DELETE", "/api/items/1").await;
    assert_eq!(direct.status, 403, "{direct:?}");
    let underscore = check("POST", "/api/items/1?_method=DELETE").await;
    assert_ne!(underscore.status, 200, "{underscore:?}");
    let dotted = check("POST", "/api/items/1?.method=DELETE").await;
    assert_ne!(
        dotted.status, 200,
        "the check let the reader's POST ?.method=DELETE through: {dotted:?}"
    );
}

/// Express's `body-parser` `urlencoded()` inflates a gzip or deflate body by default
/// (`inflate: true`), and `method-override` with a body getter (`req.body._method`, its
/// README's own example) then runs the `DELETE`. The gateway reads the form body as it came,
/// compressed, finds no `_method`, and lets the reader's `POST` through. An encoded form body
/// must be refused (as encoded MCP bodies are) or read decoded.
#[tokio::test]
async fn a_gzip_form_body_method_override_does_not_run_a_delete_the_rules_forbid() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(delete_needs_admin(), &upstream.url).await;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(b"_method=DELETE").expect("gzip");
    let body = encoder.finish().expect("gzip");
    let mut request = format!(
        "POST /api/items/1 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {READER_KEY}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Encoding: gzip\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        h.addr,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let reply = raw_request(h.addr, request).await;
    let status = match &reply {
        RawReply::Answered { status, .. } => Some(*status),
        RawReply::Closed(_) => None,
    };
    let ran: Vec<String> = from_reader(&upstream.seen())
        .into_iter()
        .filter(|s| s.contains("POST") && s.contains("gzip"))
        .collect();
    assert!(
        ran.is_empty(),
        "the reader's gzip form POST reached the upstream ({status:?}) as {ran:?}; Express \
         inflates it and runs the `_method=DELETE` inside as the DELETE the rules refused"
    );
}

/// A plain HTTP route `/api` where any key may read, but `POST` (creating) needs `admin`.
fn post_needs_admin() -> TestConfig {
    TestConfig::new()
        .http_route("/api", &["keys"])
        .api_keys(&["reader", "admin"])
        .rule("path = \"/api\"\nmethods = [\"POST\"]", &["admin"])
}

/// The second review's fix judges a `POST` carrying `_method` as the method it names, and only
/// as that. Most upstreams (Go, axum, FastAPI, Spring, MCP servers) do not honour `_method`
/// and run the `POST` as it came. So `POST /api/items?_method=GET`, judged as a `GET` the
/// reader may make, creates an item the `POST` rule keeps for `admin`. Both the method in the
/// request line and the one the override names must be allowed.
#[tokio::test]
async fn a_method_override_naming_an_allowed_method_does_not_let_a_forbidden_post_through() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(post_needs_admin(), &upstream.url).await;
    let auth = format!("Bearer {READER_KEY}");
    let direct = h
        .request(
            "POST",
            "/api/items",
            &[("authorization", &auth)],
            Some("{}"),
        )
        .await;
    assert_eq!(direct.status, 403, "the rule holds as written: {direct:?}");

    let overridden = h
        .request(
            "POST",
            "/api/items?_method=GET",
            &[("authorization", &auth)],
            Some("{\"name\":\"created by the reader\"}"),
        )
        .await;
    let head = h
        .request(
            "POST",
            "/api/items?_method=HEAD",
            &[("authorization", &auth)],
            Some("{\"name\":\"created by the reader\"}"),
        )
        .await;
    let ran: Vec<String> = from_reader(&upstream.seen())
        .into_iter()
        .filter(|s| s.starts_with("POST "))
        .collect();
    assert!(
        ran.is_empty(),
        "the reader's POSTs (?_method=GET: {}, ?_method=HEAD: {}) reached the upstream as \
         {ran:?}; an upstream that ignores `_method` runs the POST the rules refused",
        overridden.status,
        head.status
    );
}

/// The same through forward-auth: the check answers 403 for the reader's `POST` and must not
/// answer 200 for `POST /api/items?_method=GET`, which an upstream that ignores `_method`
/// runs as the `POST`.
#[tokio::test]
async fn forward_auth_does_not_admit_a_forbidden_post_with_an_allowed_method_override() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(post_needs_admin().behind("nginx"), &upstream.url).await;
    let check =
        |method: &'static str, uri: &'static str| h.nginx_check(Some(READER_KEY), method, uri);
    let direct = check("POST", "/api/items").await;
    assert_eq!(direct.status, 403, "{direct:?}");
    let overridden = check("POST", "/api/items?_method=GET").await;
    assert_ne!(
        overridden.status, 200,
        "the check let the reader's POST ?_method=GET through: {overridden:?}"
    );
}

/// On an MCP route, a tool rule written for `POST` (the only method that carries calls) keeps
/// `admin_*` tools for `admin`. `POST /mcp?_method=GET` with the same `tools/call` body is
/// judged as a `GET`, which the rule does not cover, and reaches the MCP server (which ignores
/// `_method`) as the call the rule refused.
#[tokio::test]
async fn a_method_override_does_not_let_a_forbidden_mcp_tool_call_through() {
    let upstream = RecordingUpstream::start().await;
    let config = TestConfig::new()
        .route("/mcp", &["keys"])
        .api_keys(&["reader", "admin"])
        .path_rule("/mcp", &["mcp:read"])
        .rule(
            "methods = [\"POST\"]\nmcp_method = \"tools/call\"\ntool = \"admin_*\"",
            &["admin"],
        );
    let h = start_with_upstream(config, &upstream.url).await;
    let auth = format!("Bearer {READER_KEY}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"admin_reset","arguments":{}}}"#;
    let direct = h.request("POST", "/mcp", &headers, Some(call)).await;
    assert_eq!(direct.status, 403, "the rule holds as written: {direct:?}");
    for target in ["/mcp?_method=GET", "/mcp?_method=HEAD", "/mcp?_method=PUT"] {
        let overridden = h.request("POST", target, &headers, Some(call)).await;
        let ran: Vec<String> = from_reader(&upstream.seen())
            .into_iter()
            .filter(|s| s.contains("admin_reset"))
            .collect();
        assert!(
            ran.is_empty(),
            "the reader's POST {target} ({}) reached the MCP server as {ran:?}: the call to \
             admin_reset the POST rule refused",
            overridden.status
        );
    }
}

/// `eval` judges a request as the gateway does (README). On an MCP route the gateway answers
/// 400 to a `session_id` (HTTP+SSE) session in the query (SECURITY.md: "on MCP routes such a
/// request is refused (400)"), after the chain allowed it; `eval` stops at the chain and
/// reports an allow that the gateway never gives.
#[tokio::test]
async fn eval_refuses_a_legacy_session_id_in_the_query_as_the_gateway_does() {
    crate::attack_review13::eval_answers_as_the_gateway("POST", "/mcp?session_id=4f2a", 400).await;
}

/// Whether the gateway loads `template` (placeholders filled for a fixed address).
fn loads(template: &TestConfig) -> bool {
    let addr: std::net::SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    let text = crate::gateway_harness::fill(template, addr, "http://127.0.0.1:9");
    portcullis::config::load_str(&text, "<test config>", std::path::Path::new(".")).is_ok()
}

/// A route with `mcp = false` never reads MCP calls, so its own rule on a tool
/// (`tool = "admin_*"`) applies to no request: the tool is served with the route's scopes
/// only. Review 13b refused route rules that can never apply; this one is still accepted.
#[tokio::test]
async fn an_mcp_rule_on_a_route_that_reads_no_mcp_is_refused_at_load() {
    let config = TestConfig::new()
        .http_route("/api", &["keys"])
        .with(r#"rules = [{ tool = "admin_*", scopes = ["admin"] }]"#)
        .api_keys(&["reader", "admin"]);
    assert!(
        !loads(&config),
        "a `tool` rule on the non-MCP route `/api` was accepted; it applies to no request"
    );
}

/// MCP calls are only ever read from a `POST` body, and listings are judged as the `POST` that
/// would make each call: a tool rule limited to `methods = ["GET"]` (or `DELETE`) applies to
/// no call and no listing entry, silently.
#[tokio::test]
async fn an_mcp_rule_for_methods_that_carry_no_calls_is_refused_at_load() {
    let config = TestConfig::new()
        .route("/mcp", &["keys"])
        .with(r#"rules = [{ methods = ["GET"], tool = "admin_*", scopes = ["admin"] }]"#)
        .api_keys(&["reader", "admin"]);
    assert!(
        !loads(&config),
        "a `tool` rule for `GET` on `/mcp` was accepted; no GET carries a tool call"
    );
}

/// A route's rule for paths that a more specific route takes (`/api/admin` on `/api` while
/// the route `/api/admin` exists) is never asked: `/api/admin/...` goes to the other route,
/// served with its scopes only.
#[tokio::test]
async fn a_route_rule_for_paths_another_route_takes_is_refused_at_load() {
    let config = TestConfig::new()
        .http_route("/api", &["keys"])
        .with(r#"rules = [{ path = "/api/admin", scopes = ["admin"] }]"#)
        .http_route("/api/admin", &["keys"])
        .api_keys(&["reader", "admin"]);
    assert!(
        !loads(&config),
        "route `/api`'s rule for `/api/admin` was accepted while the route `/api/admin` takes \
         every such request; it applies to none"
    );
}

/// An SSE stream may begin with a byte order mark, which every SSE reader drops (WHATWG HTML
/// §9.2.5: "a single U+FEFF BYTE ORDER MARK character at the start of the stream is
/// ignored"; the `eventsource-parser` the TypeScript SDK uses strips it). The gateway reads
/// the first line as `\u{feff}data: …`, which is not a `data:` line, and passes the listing on
/// unfiltered: the reader (no `admin`) is shown `admin_reset`.
#[tokio::test]
async fn an_sse_listing_after_a_byte_order_mark_is_still_filtered() {
    use crate::gateway_harness::standard;
    use portcullis_tests::upstream::answer;
    let upstream = RecordingUpstream::answering(|_| async {
        let listing = r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"admin_reset","inputSchema":{"type":"object"}},{"name":"echo","inputSchema":{"type":"object"}}]}}"#;
        let mut response = answer(200, format!("\u{feff}data: {listing}\n\n"));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        response
    })
    .await;
    let h = start_with_upstream(standard(), &upstream.url).await;
    let reply = h
        .mcp_post(
            Some(READER_KEY),
            None,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#,
        )
        .await;
    // The stream as an SSE client reads it: one leading BOM dropped.
    let body = reply.body.strip_prefix('\u{feff}').unwrap_or(&reply.body);
    let shown: Vec<&str> = body
        .split(['\r', '\n'])
        .filter_map(|line| line.strip_prefix("data:"))
        .collect();
    assert!(
        reply.status != 200 || !shown.iter().any(|data| data.contains("admin_reset")),
        "the reader was shown `admin_reset` ({}): {shown:?}",
        reply.status
    );
}

/// Review 13 made the certificate of a trusted proxy's connection stop authenticating the
/// clients it forwards, but only when the proxy names a client in `X-Forwarded-For`: nginx's
/// `proxy_pass` sends none unless told to (`proxy_set_header X-Forwarded-For …`), nor do
/// HAProxy without `option forwardfor` or many mesh sidecars. Then the gateway takes the
/// proxy's own certificate (SECURITY.md: "behind a trusted proxy it is the proxy's own") for
/// every client's, and every request the proxy forwards is authenticated as the proxy.
#[tokio::test]
async fn a_trusted_proxys_certificate_is_not_taken_for_clients_it_forwards_without_xff() {
    use crate::gateway_tls::{config as tls_config, connect, get_with, pki};
    let pki = pki();
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(
        tls_config(&pki, "optional").server(r#"trusted_proxies = ["127.0.0.1"]"#),
        &upstream.url,
    )
    .await;
    let stream = connect(&h, &pki, true).await.expect("mTLS handshake");
    let (_, status, headers) = get_with(stream, "/mcp", &[]).await.expect("request");
    assert_eq!(
        status,
        401,
        "a request from the trusted proxy, naming no client, was authenticated by the proxy's \
         own certificate ({:?}); upstream saw subject {:?}",
        headers.get("x-portcullis-subject"),
        upstream
            .seen()
            .last()
            .and_then(|s| s.header("x-portcullis-subject").map(str::to_owned))
    );
}

/// Forward-auth behind Envoy (which passes headers with `_` by default): the README's Envoy
/// snippet removes `X-HTTP-Method-Override` and its kin before the upstream, and the check
/// refuses `_` spellings of the MCP and credential headers it cannot remove (review 13b). It
/// does not refuse `X_HTTP_Method_Override: DELETE`, which Rack and PHP read as
/// `HTTP_X_HTTP_METHOD_OVERRIDE` (the proxy path removes it for that reason): the check says
/// 200 to the reader's `POST`, and the upstream runs the `DELETE` the rules refuse.
#[tokio::test]
async fn forward_auth_does_not_admit_an_underscore_spelled_method_override() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(delete_needs_admin().behind("envoy"), &upstream.url).await;
    let auth = format!("Bearer {READER_KEY}");
    let check = |method: &'static str, extra: Option<(&'static str, &'static str)>| {
        let (h, auth) = (&h, auth.clone());
        async move {
            let mut headers = vec![
                ("authorization", auth.as_str()),
                ("x-forwarded-for", "127.0.0.1"),
            ];
            headers.extend(extra);
            h.request(method, "/check/api/items/1", &headers, None)
                .await
        }
    };
    let direct = check("DELETE", None).await;
    assert_eq!(direct.status, 403, "{direct:?}");
    let underscored = check("POST", Some(("x_http_method_override", "DELETE"))).await;
    assert_ne!(
        underscored.status, 200,
        "the check let the reader's POST with `X_HTTP_Method_Override: DELETE` through: \
         {underscored:?}"
    );
}
