//! Review 13b: a second attack on the one decision path after review 13's fixes, through the
//! reverse proxy, the forward-auth check and the listing filter.
//!
//! Every test asserts the behaviour the README and SECURITY.md promise; the report lists which
//! fail today.

use crate::gateway_harness::{ADMIN_KEY, READER_KEY, TestConfig, standard, start_with_upstream};
use portcullis_tests::upstream::{RecordingUpstream, Seen, answer};

// ---------------------------------------------------------------------------------------
// Method overrides outside the headers: `_method` in the query and in a form body.
// ---------------------------------------------------------------------------------------

/// A plain HTTP route `/api` where any key may read and write, but `DELETE` needs `admin`.
pub(crate) fn delete_needs_admin() -> TestConfig {
    TestConfig::new()
        .http_route("/api", &["keys"])
        .api_keys(&["reader", "admin"])
        .rule("path = \"/api\"\nmethods = [\"DELETE\"]", &["admin"])
}

/// Whether the upstream received a request, from the reader, that a framework's method
/// override runs as a `DELETE`: `_method=DELETE` in the query (Symfony and Laravel with
/// method override on, Express `method-override('_method')`) or in a form body (Rails'
/// default `Rack::MethodOverride`, Laravel's and Symfony's forms).
fn overridden_deletes(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.header("x-portcullis-subject") == Some("reader"))
        .filter(|s| {
            let query = s.target.split_once('?').map_or("", |(_, q)| q);
            let body = String::from_utf8_lossy(&s.body);
            [query, body.as_ref()].iter().any(|text| {
                text.split('&')
                    .any(|pair| pair.eq_ignore_ascii_case("_method=DELETE"))
            })
        })
        .map(|s| format!("{} {}", s.method, s.target))
        .collect()
}

/// The gateway removes `X-HTTP-Method-Override` and its kin because "a POST the rules judged
/// would run as a DELETE" (README, SECURITY.md: a client cannot choose the method an upstream
/// believes). `POST /api/items/1?_method=DELETE` is the same override in the query string,
/// which Symfony (`http_method_override`), Laravel and Express's `method-override('_method')`
/// believe: the reader, refused a `DELETE`, must not get one run as a `POST`.
#[tokio::test]
async fn a_query_method_override_does_not_run_a_delete_the_rules_forbid() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(delete_needs_admin(), &upstream.url).await;
    let auth = format!("Bearer {READER_KEY}");
    let direct = h
        .request("DELETE", "/api/items/1", &[("authorization", &auth)], None)
        .await;
    assert_eq!(direct.status, 403, "the rule holds as written: {direct:?}");
    let admin = format!("Bearer {ADMIN_KEY}");
    let allowed = h
        .request("DELETE", "/api/items/1", &[("authorization", &admin)], None)
        .await;
    assert_eq!(allowed.status, 200, "{allowed:?}");

    let overridden = h
        .request(
            "POST",
            "/api/items/1?_method=DELETE",
            &[("authorization", &auth)],
            None,
        )
        .await;
    let ran = overridden_deletes(&upstream.seen());
    assert!(
        ran.is_empty(),
        "the reader's POST reached the upstream ({}) as {ran:?}, which a method-override \
         framework runs as the DELETE the rules refused",
        overridden.status
    );
}

/// The same override in an `application/x-www-form-urlencoded` body: Rails has
/// `Rack::MethodOverride` in its default middleware and runs `POST` with `_method=delete` as
/// `DELETE` (so do Laravel and Symfony forms). The gateway does not read bodies on HTTP
/// routes, so it judges a `POST`; the reader must not get the `DELETE` run.
#[tokio::test]
async fn a_form_body_method_override_does_not_run_a_delete_the_rules_forbid() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(delete_needs_admin(), &upstream.url).await;
    let auth = format!("Bearer {READER_KEY}");
    let overridden = h
        .request(
            "POST",
            "/api/items/1",
            &[
                ("authorization", &auth),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            Some("_method=DELETE"),
        )
        .await;
    let ran = overridden_deletes(&upstream.seen());
    assert!(
        ran.is_empty(),
        "the reader's form POST reached the upstream ({}) as {ran:?}, which Rails' default \
         Rack::MethodOverride runs as the DELETE the rules refused",
        overridden.status
    );
}

// ---------------------------------------------------------------------------------------
// SSE listings whose lines end in a lone CR.
// ---------------------------------------------------------------------------------------

/// An SSE event stream may end its lines with CR, LF or CRLF (WHATWG HTML §9.2.5; the
/// `eventsource-parser` the TypeScript SDK uses splits on all three). The gateway splits
/// event lines on LF only, so in `event: message\rdata: {listing}` it sees one `event:` line
/// and no data, and passes the listing on unfiltered, while the client reads a `data:` line
/// holding every tool. The reader (no `admin`) must not be shown `admin_reset`.
#[tokio::test]
async fn an_sse_listing_with_cr_line_ends_is_still_filtered() {
    let upstream = RecordingUpstream::answering(|_| async {
        let listing = r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"admin_reset","inputSchema":{"type":"object"}},{"name":"echo","inputSchema":{"type":"object"}}]}}"#;
        let mut response = answer(200, format!("event: message\rdata: {listing}\r\r"));
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
    // The stream as an SSE client reads it: lines end at CR, LF or CRLF.
    let shown: Vec<&str> = reply
        .body
        .split(['\r', '\n'])
        .filter_map(|line| line.strip_prefix("data:"))
        .collect();
    assert!(
        reply.status != 200 || !shown.iter().any(|data| data.contains("admin_reset")),
        "the reader was shown `admin_reset` ({}): {shown:?}",
        reply.status
    );
}

// ---------------------------------------------------------------------------------------
// `Mcp-Param-*` with `_` and `-` swapped inside the parameter name.
// ---------------------------------------------------------------------------------------

/// `Mcp-Param-{name}` is checked against the argument of that name, compared
/// case-insensitively "as header names are"; `Mcp-Param-Target-Region: us` beside
/// `"target_region": "eu"` is not compared at all (no argument is spelled `target-region`),
/// though a CGI, WSGI, Rack or PHP upstream reads the header as
/// `HTTP_MCP_PARAM_TARGET_REGION`, the very argument's header. Review 13 removed `_`
/// look-alikes of the `Mcp-Param-` prefix; the name after it must be read the same way:
/// refused (400, as for `Mcp-Param-Target_Region: us`, which is compared) or removed.
#[tokio::test]
async fn an_mcp_param_spelled_with_dashes_for_underscores_is_checked_against_the_argument() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(standard(), &upstream.url).await;
    let body = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"target_region":"eu"}}}"#;
    let send_with = |name: &'static str| {
        let h = &h;
        async move {
            h.mcp_post_with(Some(READER_KEY), &[(name, "us")], body)
                .await
        }
    };
    let exact = send_with("mcp-param-target_region").await;
    assert_eq!(
        exact.status, 400,
        "the exact spelling is compared: {exact:?}"
    );
    let dashed = send_with("mcp-param-target-region").await;
    let carried: Vec<String> = upstream
        .seen()
        .iter()
        .flat_map(|s| {
            s.headers
                .iter()
                .filter(|(n, v)| {
                    n.as_str().replace('-', "_") == "mcp_param_target_region" && *v == "us"
                })
                .map(|(n, _)| n.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        carried.is_empty(),
        "`{carried:?}: us` reached the upstream ({}) beside `\"target_region\": \"eu\"`",
        dashed.status
    );
}

// ---------------------------------------------------------------------------------------
// Config: routes and rules that can never serve or apply are accepted.
// ---------------------------------------------------------------------------------------

/// Whether the gateway loads `template` (placeholders filled for a fixed address).
fn loads(template: &TestConfig) -> bool {
    let addr: std::net::SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    let text = crate::gateway_harness::fill(template, addr, "http://127.0.0.1:9");
    portcullis::config::load_str(&text, "<test config>", std::path::Path::new(".")).is_ok()
}

/// A route's own rule is only ever asked about paths under the route. `path = "/admin"` on
/// the route `/api` (written as if relative to the route, meaning `/api/admin`) covers no
/// request the route serves: the rule is silently dead and `/api/admin` is served with the
/// route's scopes only — the same dead-rule class review 13 closed for rule paths in no
/// normal form. Such a rule must be refused at load.
#[tokio::test]
async fn a_route_rule_outside_its_route_is_refused_at_load() {
    let config = TestConfig::new()
        .http_route("/api", &["keys"])
        .with(r#"rules = [{ path = "/admin", scopes = ["admin"] }]"#)
        .api_keys(&["reader", "admin"]);
    assert!(
        !loads(&config),
        "a rule on route `/api` for `/admin` was accepted; it applies to no request"
    );
    // Sanity: the same rule written under the route loads.
    let fine = TestConfig::new()
        .http_route("/api", &["keys"])
        .with(r#"rules = [{ path = "/api/admin", scopes = ["admin"] }]"#)
        .api_keys(&["reader", "admin"]);
    assert!(loads(&fine), "a rule under its route loads");
}

/// The forward-auth endpoint answers every path under `forward_auth_path` (`/check`,
/// `/check/…`) before any route is looked up, and `/healthz`, `/readyz` and `/metrics` are
/// answered by the gateway itself: a route at one of those paths never serves them (its
/// upstream is never reached, its chain never asked). Such a route is silently dead, and
/// must be refused at load.
#[tokio::test]
async fn routes_shadowed_by_the_gateways_own_endpoints_are_refused_at_load() {
    let mut accepted = Vec::new();
    for path in [
        "/check",
        "/check/reports",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        let config = TestConfig::new()
            .behind("nginx")
            .http_route("/api", &["keys"])
            .http_route(path, &["keys"])
            .api_keys(&["reader"]);
        if loads(&config) {
            accepted.push(path);
        }
    }
    assert!(
        accepted.is_empty(),
        "routes the gateway never routes to were accepted: {accepted:?}"
    );
}

// ---------------------------------------------------------------------------------------
// MCP sessions of the HTTP+SSE transport (2024-11-05): the id is in the query.
// ---------------------------------------------------------------------------------------

/// An upstream speaking the HTTP+SSE transport (Python SDK `SseServerTransport`, FastMCP's
/// `sse_app`, still served beside Streamable HTTP by many servers): `GET …/sse` opens the
/// session's stream and names the endpoint for its messages, `…/messages/?session_id=<id>`;
/// every message posted there acts in that session, whose answers go to its stream.
async fn legacy_sse_upstream() -> RecordingUpstream {
    RecordingUpstream::answering(|seen| async move {
        if seen.method == "GET" && seen.target.ends_with("/sse") {
            let subject = seen.header("x-portcullis-subject").unwrap_or("").to_owned();
            let mut response = answer(
                200,
                format!("event: endpoint\ndata: /mcp/messages/?session_id=legacy-of-{subject}\n\n"),
            );
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
            return response;
        }
        answer(202, "Accepted")
    })
    .await
}

/// README: "MCP sessions are bound to the caller that opened them … a request presenting it
/// is let through only for that same caller". The admin opens an HTTP+SSE session through the
/// gateway and is handed `/mcp/messages/?session_id=legacy-of-admin`; the reader, who learnt
/// the id (a log, a shared proxy — the leak the binding is for), posts a call there. The
/// upstream would run it in the admin's session; it must not reach the upstream (404, as for
/// another caller's `Mcp-Session-Id`).
#[tokio::test]
async fn an_http_sse_session_id_in_the_query_is_bound_to_its_caller() {
    let upstream = legacy_sse_upstream().await;
    let h = start_with_upstream(standard(), &upstream.url).await;
    let admin = format!("Bearer {ADMIN_KEY}");
    let opened = h
        .request(
            "GET",
            "/mcp/sse",
            &[("authorization", &admin), ("accept", "text/event-stream")],
            None,
        )
        .await;
    assert_eq!(opened.status, 200, "{opened:?}");
    assert!(
        opened.body.contains("session_id=legacy-of-admin"),
        "{opened:?}"
    );

    let reader = format!("Bearer {READER_KEY}");
    let hijack = h
        .request(
            "POST",
            "/mcp/messages/?session_id=legacy-of-admin",
            &[
                ("authorization", &reader),
                ("content-type", "application/json"),
            ],
            Some(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#),
        )
        .await;
    let carried: Vec<String> = upstream
        .seen()
        .iter()
        .filter(|s| s.header("x-portcullis-subject") == Some("reader"))
        .filter(|s| s.target.contains("session_id=legacy-of-admin"))
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    assert!(
        carried.is_empty(),
        "the reader's call reached the upstream ({}) in the admin's session: {carried:?}",
        hijack.status
    );
}

// ---------------------------------------------------------------------------------------
// Streamable HTTP resumption: `Last-Event-ID` names another caller's stream.
// ---------------------------------------------------------------------------------------

/// An upstream with resumable streams and one event store for every session (the Python
/// SDK's `StreamableHTTPSessionManager(event_store=…)`, any Redis-backed store shared by
/// replicas): `initialize` opens `session-of-<subject>`, a call answers on an SSE stream
/// whose events carry `id: evt-of-<subject>`, and a `GET` with `Last-Event-ID` replays the
/// stream that event belongs to — found by the event id alone.
async fn resumable_upstream() -> RecordingUpstream {
    RecordingUpstream::answering(|seen| async move {
        let subject = seen.header("x-portcullis-subject").unwrap_or("").to_owned();
        let body = String::from_utf8_lossy(&seen.body).into_owned();
        let sse = |text: String| {
            let mut response = answer(200, text);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
            response
        };
        if body.contains("\"initialize\"") {
            return portcullis_tests::upstream::session_opened(&subject);
        }
        if let Some(last) = seen.header("last-event-id") {
            let owner = last.trim_start_matches("evt-of-");
            return sse(format!(
                "id: {last}\ndata: {{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\"secret of {owner}\"}}]}}}}\n\n"
            ));
        }
        sse(format!(
            "id: evt-of-{subject}\ndata: {{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\"secret of {subject}\"}}]}}}}\n\n"
        ))
    })
    .await
}

/// Sessions are bound to their caller so that a leaked id lets nobody else into the session
/// (README). An SSE event id is the same kind of handle: the admin's call answers with
/// `id: evt-of-admin`; the reader, in a session of its own, sends `GET` with
/// `Last-Event-ID: evt-of-admin`, and an upstream whose event store is shared replays the
/// admin's stream to the reader. An event id must be let through only on the session (and so
/// to the caller) whose stream carried it: the reader's resumption must not reach the
/// upstream.
#[tokio::test]
async fn a_last_event_id_from_another_callers_stream_is_not_resumed() {
    let upstream = resumable_upstream().await;
    let h = start_with_upstream(standard(), &upstream.url).await;
    const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    const CALL: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
    let admin = h.mcp_post(Some(ADMIN_KEY), None, INITIALIZE).await;
    let admin_session = admin.header("mcp-session-id").expect("issued").to_owned();
    let call = h
        .mcp_post(Some(ADMIN_KEY), Some(&admin_session), CALL)
        .await;
    assert!(call.body.contains("id: evt-of-admin"), "{call:?}");

    let reader = h.mcp_post(Some(READER_KEY), None, INITIALIZE).await;
    let reader_session = reader.header("mcp-session-id").expect("issued").to_owned();
    assert_eq!(reader_session, "session-of-reader");
    let auth = format!("Bearer {READER_KEY}");
    let resumed = h
        .request(
            "GET",
            "/mcp",
            &[
                ("authorization", &auth),
                ("accept", "text/event-stream"),
                ("mcp-session-id", &reader_session),
                ("mcp-protocol-version", "2025-06-18"),
                ("last-event-id", "evt-of-admin"),
            ],
            None,
        )
        .await;
    assert!(
        !resumed.body.contains("secret of admin"),
        "the reader resumed the admin's stream ({}): {}",
        resumed.status,
        resumed.body
    );
}

// ---------------------------------------------------------------------------------------
// Forward-auth: `_`-spelled MCP headers the check cannot remove.
// ---------------------------------------------------------------------------------------

/// Review 13 removes `Mcp_Session_Id` (and the other `_` look-alikes) before the gateway's own
/// upstream, since CGI, WSGI, Rack and PHP servers read it as the session id. The forward-auth
/// check removes nothing: the proxy in front forwards the client's headers as they came (Envoy
/// by default, `headers_with_underscores_action: ALLOW`; Traefik and Caddy too). So the check
/// must not answer 200 for a request carrying a look-alike it cannot judge: here the reader
/// presents the admin's session as `Mcp_Session_Id`, which the proxy (answering 404 for the
/// dash spelling) would hand to the upstream.
#[tokio::test]
async fn forward_auth_does_not_pass_an_underscore_spelled_session_id() {
    let config = TestConfig::new()
        .behind("envoy")
        .route("/mcp", &["keys"])
        .api_keys(&["reader", "admin"])
        .path_rule("/mcp", &["mcp:read"]);
    let h = crate::gateway_harness::start(config).await;
    let session = h.mcp_session(ADMIN_KEY).await;
    let reader = format!("Bearer {READER_KEY}");
    let check = |name: &'static str| {
        let (h, reader, session) = (&h, reader.clone(), session.clone());
        async move {
            h.request(
                "POST",
                "/check/mcp",
                &[
                    ("authorization", &reader),
                    ("x-forwarded-for", "127.0.0.1"),
                    ("content-type", "application/json"),
                    (name, &session),
                    ("mcp-protocol-version", "2025-06-18"),
                ],
                None,
            )
            .await
        }
    };
    let dashed = check("mcp-session-id").await;
    assert_eq!(dashed.status, 404, "the check binds sessions: {dashed:?}");
    let underscored = check("mcp_session_id").await;
    assert_ne!(
        underscored.status, 200,
        "the check let the reader through with the admin's session as `Mcp_Session_Id`, which \
         the proxy in front forwards to the upstream: {underscored:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Forward-auth as the README deploys it behind Envoy and Traefik.
// ---------------------------------------------------------------------------------------

/// The README's fenced block that starts with a line containing `marker`.
fn readme_snippet(marker: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme
        .find(marker)
        .unwrap_or_else(|| panic!("README has `{marker}`"));
    let rest = &readme[start..];
    let end = rest.find("```").unwrap_or(rest.len());
    rest[..end].to_ascii_lowercase()
}

/// Review 13 made the check refuse an `Mcp-Session-Id` another caller opened — but the check
/// can only refuse what it is sent. The README's Envoy snippet sends the check only
/// `Authorization`, `Host`, the method and path, `X-Forwarded-For` and `Origin`
/// (`allowed_headers`); the Traefik one only `Authorization` and `Origin`
/// (`authRequestHeaders`). Deployed as written, the check never sees a session id, answers 200
/// for the reader, and the proxy forwards the admin's `Mcp-Session-Id` to the upstream. Each
/// snippet must send the check `Mcp-Session-Id`.
#[test]
fn readme_envoy_and_traefik_snippets_send_the_mcp_session_id_to_the_check() {
    let mut missing = Vec::new();
    for (proxy, marker) in [
        ("envoy", "- name: envoy.filters.http.ext_authz"),
        ("traefik", "http:\n  middlewares:\n    portcullis:"),
    ] {
        if !readme_snippet(marker).contains("mcp-session-id") {
            missing.push(proxy);
        }
    }
    assert!(
        missing.is_empty(),
        "the README's {missing:?} forward-auth snippets never send `Mcp-Session-Id` to the \
         check, so the session binding is not applied behind them"
    );
}

/// The Caddy snippet removes client copies of the identity headers "also spelled with `_`,
/// one CGI variable to WSGI, Rack and PHP", and the credential and every URL or method
/// override; nginx drops `_` names by default and clears the overrides. The Envoy and Traefik
/// snippets only override the dash-spelled `x-portcullis-*` with the check's answer: a
/// client's `X_Portcullis_Subject: admin` reaches the upstream beside the real
/// `X-Portcullis-Subject` (Envoy allows `_` names by default, Traefik too), as do
/// `X-HTTP-Method-Override` and the bearer token. Each snippet must remove them.
#[test]
fn readme_envoy_and_traefik_snippets_remove_forged_identity_look_alikes_and_overrides() {
    let mut open = Vec::new();
    for (proxy, marker) in [
        ("envoy", "- name: envoy.filters.http.ext_authz"),
        ("traefik", "http:\n  middlewares:\n    portcullis:"),
    ] {
        let snippet = readme_snippet(marker);
        for needed in ["x_portcullis", "x-http-method-override"] {
            if !snippet.contains(needed) {
                open.push(format!("{proxy}: {needed}"));
            }
        }
    }
    assert!(
        open.is_empty(),
        "the README's forward-auth snippets let these client headers through to the \
         upstream: {open:?}"
    );
}
