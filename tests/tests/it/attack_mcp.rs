//! What is authorized is what runs (DESIGN.md §13): MCP requests spelled so that an upstream
//! could read them differently from the gateway — body charsets, method spellings, JSON-RPC
//! id forms, resource URI forms, mirrored `Mcp-*` headers, sessions presented by another
//! caller, double-encoded paths, scopes that split in two — each through the real gateway in
//! front of the real rmcp demo server or a recording upstream. Every case is refused, or
//! reaches the upstream only as the request that was judged.

use crate::gateway_harness::{
    ADMIN_KEY, READER_KEY, RecordingUpstream, Reply, TestConfig, standard, start,
    start_with_upstream, tool_text,
};

const ADMIN_RESET: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"admin_reset","arguments":{}}}"#;

fn names(reply: &Reply) -> Vec<String> {
    reply
        .messages()
        .iter()
        .flat_map(|m| m["result"]["tools"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

/// Posts `body` to `/mcp` with `key`, a session and these extra headers (no default
/// `Content-Type`: the cases set their own).
async fn post(
    h: &crate::gateway_harness::Harness,
    method: &str,
    key: &str,
    session: Option<&str>,
    extra: &[(&str, &str)],
    body: &str,
) -> Reply {
    let auth = format!("Bearer {key}");
    let mut headers = vec![
        ("accept", "application/json, text/event-stream"),
        ("authorization", auth.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    if let Some(session) = session {
        headers.push(("mcp-session-id", session));
    }
    headers.extend_from_slice(extra);
    h.request(method, "/mcp", &headers, Some(body)).await
}

/// One request variant: its name, its headers and its body.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn mcp_bodies_in_any_charset_but_utf8_are_refused_with_415() {
    let h = start(standard()).await;
    let session = h.mcp_session(READER_KEY).await;
    // Express's json() decodes UTF-7, where `+AF8-` is `_`: the TypeScript SDK would run
    // `admin_reset` while the gateway judged a tool named `admin+AF8-reset`.
    let utf7 = ADMIN_RESET.replace("admin_reset", "admin+AF8-reset");
    let cases: [Case<'_>; 9] = [
        (
            "utf-7",
            &[("content-type", "application/json; charset=utf-7")],
            &utf7,
        ),
        (
            "utf-16",
            &[("content-type", "application/json; charset=utf-16")],
            ADMIN_RESET,
        ),
        (
            "latin1",
            &[("content-type", "application/json;charset=ISO-8859-1")],
            ADMIN_RESET,
        ),
        ("text/plain", &[("content-type", "text/plain")], ADMIN_RESET),
        ("no content type", &[], ADMIN_RESET),
        (
            "json-seq",
            &[("content-type", "application/json-seq")],
            ADMIN_RESET,
        ),
        (
            "two content types",
            &[
                ("content-type", "application/json"),
                ("content-type", "text/plain"),
            ],
            ADMIN_RESET,
        ),
        (
            "gzip",
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            ADMIN_RESET,
        ),
        (
            "extra parameter",
            &[("content-type", "application/json; charset=utf-8; x=1")],
            ADMIN_RESET,
        ),
    ];
    for (name, headers, body) in cases {
        let reply = post(&h, "POST", READER_KEY, Some(&session), headers, body).await;
        assert_eq!(reply.status, 415, "{name}: expected 415, got: {reply:?}");
        assert!(
            reply.body.contains("unsupported_media_type"),
            "{name}: {}",
            reply.body
        );
    }
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON; charset=\"UTF-8\"",
    ] {
        let echo = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
        let reply = post(
            &h,
            "POST",
            READER_KEY,
            Some(&session),
            &[("content-type", content_type)],
            echo,
        )
        .await;
        assert_eq!(reply.status, 200, "{content_type}: {}", reply.body);
        assert_eq!(tool_text(&reply), "hi");
    }
}

#[tokio::test]
async fn methods_not_in_upper_case_are_refused_and_bodies_are_judged_whatever_the_method() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(standard(), &upstream.url).await;
    let json = [("content-type", "application/json")];
    for method in ["post", "Post", "pOST", "delete", "get"] {
        let reply = post(&h, method, READER_KEY, None, &json, ADMIN_RESET).await;
        assert_eq!(reply.status, 400, "{method}: {reply:?}");
    }
    // A body on a PUT or DELETE is read and judged like a POST's.
    for method in ["PUT", "DELETE", "PATCH"] {
        let reply = post(&h, method, READER_KEY, None, &json, ADMIN_RESET).await;
        assert_eq!(reply.status, 403, "{method}: {reply:?}");
    }
    assert_eq!(upstream.hits(), 0, "{:?}", upstream.seen());
    let allowed = post(&h, "POST", ADMIN_KEY, None, &json, ADMIN_RESET).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn listing_ids_that_upstreams_echo_in_another_form_are_refused() {
    let h = start(standard()).await;
    let session = h.mcp_session(READER_KEY).await;
    // rmcp reads `3.0` as the integer 3 and answers under `"id":3`, which a filter waiting
    // for `3.0` would not recognise: the listing would pass unfiltered.
    for id in ["3.0", "-0.0", "1e0", "9007199254740993", "null"] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
        let reply = h.mcp_post(Some(READER_KEY), Some(&session), &body).await;
        assert_eq!(reply.status, 400, "id {id}: {reply:?}");
        assert!(
            !reply.body.contains("admin_reset"),
            "id {id}: {}",
            reply.body
        );
    }
    for id in ["3", "-3", "\"3.0\"", "9007199254740991"] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
        let reply = h.mcp_post(Some(READER_KEY), Some(&session), &body).await;
        assert_eq!(reply.status, 200, "id {id}: {reply:?}");
        let listed = names(&reply);
        assert!(listed.contains(&"echo".to_owned()), "id {id}: {listed:?}");
        assert!(
            !listed.contains(&"admin_reset".to_owned()),
            "id {id}: {listed:?}"
        );
    }
}

#[tokio::test]
async fn mirrored_mcp_headers_must_say_what_the_body_says() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(standard(), &upstream.url).await;
    let echo = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#;
    let json = ("content-type", "application/json");
    let refused: [&[(&str, &str)]; 6] = [
        &[
            json,
            ("mcp-method", "tools/call"),
            ("mcp-name", "admin_reset"),
        ],
        &[json, ("mcp-name", "=?base64?YWRtaW5fcmVzZXQ=?=")],
        &[json, ("mcp-method", "tools/list")],
        &[json, ("mcp-name", "echo"), ("mcp-name", "admin_reset")],
        &[json, ("mcp-param-text", "y")],
        &[json, ("mcp-name", "=?base64?%%%?=")],
    ];
    for headers in refused {
        let reply = post(&h, "POST", READER_KEY, None, headers, echo).await;
        assert_eq!(reply.status, 400, "{headers:?}: {reply:?}");
    }
    assert_eq!(upstream.hits(), 0, "{:?}", upstream.seen());
    let agreeing = post(
        &h,
        "POST",
        READER_KEY,
        None,
        &[
            json,
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?ZWNobw==?="),
            ("mcp-param-text", "x"),
        ],
        echo,
    )
    .await;
    assert_eq!(agreeing.status, 200, "{agreeing:?}");
    assert_eq!(upstream.hits(), 1);
}

/// The standard config (reader and admin keys, `/mcp` needs `mcp:read`) with a rule guarding
/// `file:///secret/*`.
fn resources_config() -> TestConfig {
    standard().rule(r#"resource = "file:///secret/*""#, &["admin"])
}

#[tokio::test]
async fn resource_uris_are_judged_only_in_their_one_spelling() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(resources_config(), &upstream.url).await;
    let read = |uri: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"{uri}"}}}}"#
        )
    };
    let json = [("content-type", "application/json")];
    for uri in [
        "FILE:///secret/x",
        "file:///public/../secret/x",
        "file:///public/./../secret/x",
        "file:///secret%2Fx",
        "file:///%73ecret/x",
        "file:///public/%252e%252e/secret/x",
        "file://localhost/secret/x",
        "file:////secret/x",
        "file:///secret\\\\x",
        "file:/secret/x",
        "file:secret/x",
    ] {
        let reply = post(&h, "POST", READER_KEY, None, &json, &read(uri)).await;
        assert_eq!(reply.status, 400, "{uri}: {reply:?}");
    }
    let secret = post(
        &h,
        "POST",
        READER_KEY,
        None,
        &json,
        &read("file:///secret/x"),
    )
    .await;
    assert_eq!(secret.status, 403, "{secret:?}");
    assert_eq!(upstream.hits(), 0, "{:?}", upstream.seen());
    let public = post(
        &h,
        "POST",
        READER_KEY,
        None,
        &json,
        &read("file:///public/x"),
    )
    .await;
    assert_eq!(public.status, 200, "{public:?}");
    let admin = post(
        &h,
        "POST",
        ADMIN_KEY,
        None,
        &json,
        &read("file:///secret/x"),
    )
    .await;
    assert_eq!(admin.status, 200, "{admin:?}");
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn a_session_serves_only_the_caller_that_opened_it() {
    let h = start(standard()).await;
    let admins = h.mcp_session(ADMIN_KEY).await;
    let list = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#;
    let own = h.mcp_post(Some(ADMIN_KEY), Some(&admins), list).await;
    assert_eq!(own.status, 200, "{own:?}");
    // The reader holds a valid key of its own, and the admin's session id.
    let borrowed = h.mcp_post(Some(READER_KEY), Some(&admins), list).await;
    assert_eq!(borrowed.status, 404, "{borrowed:?}");
    assert!(
        borrowed.body.contains("session_not_found"),
        "{}",
        borrowed.body
    );
    let made_up = h
        .mcp_post(Some(READER_KEY), Some("not-a-session"), list)
        .await;
    assert_eq!(made_up.status, 404, "{made_up:?}");
    let twice = h
        .request(
            "POST",
            "/mcp",
            &[
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("authorization", &format!("Bearer {ADMIN_KEY}")),
                ("mcp-session-id", &admins),
                ("mcp-session-id", "other"),
            ],
            Some(list),
        )
        .await;
    assert_eq!(twice.status, 400, "{twice:?}");
    // Deleting by another caller is refused; by the owner it ends the session here too.
    let auth = |key: &str| format!("Bearer {key}");
    let delete = |key: &'static str| {
        let session = admins.clone();
        let h = &h;
        async move {
            h.request(
                "DELETE",
                "/mcp",
                &[
                    ("authorization", &auth(key)),
                    ("mcp-session-id", &session),
                    ("mcp-protocol-version", "2025-06-18"),
                ],
                None,
            )
            .await
        }
    };
    assert_eq!(delete(READER_KEY).await.status, 404);
    let ended = delete(ADMIN_KEY).await;
    assert!(ended.status < 300, "{ended:?}");
    let after = h.mcp_post(Some(ADMIN_KEY), Some(&admins), list).await;
    assert_eq!(after.status, 404, "{after:?}");
}

#[tokio::test]
async fn double_encoded_paths_are_refused() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(standard(), &upstream.url).await;
    let auth = format!("Bearer {READER_KEY}");
    for path in ["/mcp/%252e%252e/admin", "/mcp/%252fadmin", "/mcp/%2561dmin"] {
        let reply = h
            .request("GET", path, &[("authorization", &auth)], None)
            .await;
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
    }
    assert_eq!(upstream.hits(), 0);
}

/// `/mcp` with API keys and the `mcp-tool-policy` authorizer: `add` needs `math`, which
/// only the admin has.
fn with_tool_policy() -> TestConfig {
    TestConfig::new()
        .route("/mcp", &["keys"])
        .with(r#"authorizers = ["tool-policy"]"#)
        .provider("keys", "api_key")
        .with(
            r#"keys = [{ name = "reader", hash = "{reader}", scopes = ["mcp:read"] }, { name = "admin", hash = "{admin}", scopes = ["mcp:read", "admin", "math"] }]"#,
        )
        .wasm("tool-policy", portcullis_tests::guests::MCP_TOOL_POLICY)
        .with(r#"config = { rules = [{ tools = ["add"], scope = "math" }] }"#)
        .with("limits = { timeout_ms = 1000 }")
        .tool_rule("admin_*", &["admin"])
}

#[tokio::test]
async fn listings_hide_what_a_wasm_authorizer_would_refuse() {
    let h = start(with_tool_policy()).await;
    let list = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;
    let reader = h.mcp_session(READER_KEY).await;
    let listed = names(&h.mcp_post(Some(READER_KEY), Some(&reader), list).await);
    assert!(listed.contains(&"echo".to_owned()), "{listed:?}");
    assert!(
        !listed.contains(&"add".to_owned()),
        "the authorizer refuses `add` to the reader, so it is not listed: {listed:?}"
    );
    assert!(!listed.contains(&"admin_reset".to_owned()), "{listed:?}");
    let call = r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}"#;
    let refused = h.mcp_post(Some(READER_KEY), Some(&reader), call).await;
    assert_eq!(refused.status, 403, "listing and call agree: {refused:?}");
    let admin = h.mcp_session(ADMIN_KEY).await;
    let listed = names(&h.mcp_post(Some(ADMIN_KEY), Some(&admin), list).await);
    for tool in ["echo", "add", "admin_reset"] {
        assert!(listed.contains(&tool.to_owned()), "{tool}: {listed:?}");
    }
}

#[tokio::test]
async fn member_names_that_differ_only_in_case_are_refused() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(standard(), &upstream.url).await;
    let json = [("content-type", "application/json")];
    // Go's encoding/json (mcp-go) and the C# SDK's params read member names without
    // regard to case, the last one winning.
    for body in [
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","Name":"admin_reset","arguments":{}}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"ping","Method":"tools/call","params":{"name":"admin_reset"}}"#,
        r#"{"jsonrpc":"2.0","id":4,"METHOD":"tools/call","params":{"name":"admin_reset"}}"#,
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"NAME":"admin_reset","arguments":{}}}"#,
        r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"echo","arguments":{"Region":"us","region":"eu"}}}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"\u{17f}\u{212a}\":1,\"sk\":2}}",
    ] {
        let reply = post(&h, "POST", READER_KEY, None, &json, body).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
    }
    assert_eq!(upstream.hits(), 0, "{:?}", upstream.seen());
}

#[tokio::test]
async fn completions_are_judged_as_the_resource_or_prompt_they_refer_to() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(resources_config(), &upstream.url).await;
    let json = [("content-type", "application/json")];
    let complete = |uri: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{{"ref":{{"type":"ref/resource","uri":"{uri}"}},"argument":{{"name":"name","value":""}}}}}}"#
        )
    };
    let secret = post(
        &h,
        "POST",
        READER_KEY,
        None,
        &json,
        &complete("file:///secret/{name}"),
    )
    .await;
    assert_eq!(secret.status, 403, "{secret:?}");
    let spelled = post(
        &h,
        "POST",
        READER_KEY,
        None,
        &json,
        &complete("file:secret/{name}"),
    )
    .await;
    assert_eq!(spelled.status, 400, "{spelled:?}");
    assert_eq!(upstream.hits(), 0);
    let public = post(
        &h,
        "POST",
        READER_KEY,
        None,
        &json,
        &complete("file:///public/{name}"),
    )
    .await;
    assert_eq!(public.status, 200, "{public:?}");
}

/// `/mcp` and `/api` (admin scope under `/api/admin`) with API keys, and everything else
/// public.
fn case_blind() -> TestConfig {
    TestConfig::new()
        .route("/mcp", &["keys"])
        .route("/api", &["keys"])
        .with("mcp = false")
        .with(r#"rules = [{ path = "/api/admin", scopes = ["admin"] }]"#)
        .route("/", &["public"])
        .with("mcp = false")
        .provider("public", "anonymous")
        .api_keys(&["reader"])
}

#[tokio::test]
async fn paths_that_case_blind_upstreams_route_elsewhere_are_refused() {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(case_blind(), &upstream.url).await;
    let json = ("content-type", "application/json");
    // Express and ASP.NET Core route `/MCP` to their `/mcp` handler; IIS drops the dot.
    for path in [
        "/MCP",
        "/Mcp/x",
        "/mcp.",
        "/mcp./x",
        "/API/x",
        "/api/ADMIN/x",
        "/api/admin.",
    ] {
        let reply = h.request("POST", path, &[json], Some(ADMIN_RESET)).await;
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
    }
    assert_eq!(upstream.hits(), 0, "{:?}", upstream.seen());
    let auth = format!("Bearer {READER_KEY}");
    let api = h
        .request("GET", "/api/x", &[("authorization", &auth)], None)
        .await;
    assert_eq!(api.status, 200, "{api:?}");
    let admin = h
        .request("GET", "/api/admin/x", &[("authorization", &auth)], None)
        .await;
    assert_eq!(admin.status, 403, "{admin:?}");
    let public = h.request("GET", "/Readme.txt", &[], None).await;
    assert_eq!(public.status, 200, "same route either way: {public:?}");
}
