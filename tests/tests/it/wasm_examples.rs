//! The example providers through a real wasmtime instance: each allows, denies and abstains
//! on the requests it should.

use std::sync::Arc;

use portcullis::context::RequestContext;
use portcullis::mcp::{McpCall, McpMessage, McpTarget};
use portcullis::verdict::{DenialKind, Identity, Verdict};
use portcullis_tests::{ProviderSpec, guests, request};
use serde_json::json;

fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn partner_credentials() -> String {
    format!(
        "# id:sha256:<hex>:scopes\nacme:sha256:{}:mcp:read\nglobex:sha256:{}:\n",
        sha256_hex(b"acme-secret"),
        sha256_hex(b"globex-secret")
    )
}

fn identity(scopes: &[&str]) -> Identity {
    Identity {
        subject: "caller".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        claims: vec![],
    }
}

#[tokio::test]
async fn partner_token_allows_denies_and_abstains() {
    let provider = ProviderSpec::new(guests::PARTNER_TOKEN)
        .secret("credentials", &partner_credentials())
        .ready()
        .await;
    let call = |auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let req = request("GET", "/mcp", &headers);
        let provider = &provider;
        async move { provider.authenticate(&req).await.expect("answers") }
    };

    match call(Some("partner-token acme:acme-secret")).await {
        Verdict::Allow(id) => {
            assert_eq!(id.subject, "acme");
            assert_eq!(id.scopes, ["mcp:read"]);
        }
        other => panic!("expected: allow\ngot: {other:?}"),
    }
    match call(Some("Partner-Token acme:Xq7-not-the-secret")).await {
        Verdict::Deny(d) => {
            assert_eq!(
                (d.kind, d.code_str()),
                (DenialKind::Unauthenticated, "invalid_token")
            );
            assert!(
                !d.reason.contains("Xq7"),
                "a denial never echoes the secret: {}",
                d.reason
            );
        }
        other => panic!("expected: deny\ngot: {other:?}"),
    }
    assert!(matches!(
        call(Some("partner-token nobody:x")).await,
        Verdict::Deny(_)
    ));
    assert_eq!(call(Some("Bearer abc")).await, Verdict::Abstain);
    assert_eq!(call(None).await, Verdict::Abstain);
}

#[tokio::test]
async fn partner_token_without_its_secret_refuses_to_load() {
    let err = ProviderSpec::new(guests::PARTNER_TOKEN)
        .build()
        .await
        .expect_err("no credentials granted");
    assert!(err.to_string().contains("credentials"), "got: {err}");
}

fn signed(method: &str, path: &str, body: &[u8], key: &[u8], ts: u64) -> Arc<RequestContext> {
    let signing = format!("{method}\n{path}\n{ts}\n{}", sha256_hex(body));
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
        signing.as_bytes(),
    );
    let sig = hex(tag.as_ref());
    let ts = ts.to_string();
    let mut ctx = (*request(
        method,
        path,
        &[
            ("x-signature-key-id", "k1"),
            ("x-signature-timestamp", &ts),
            ("x-signature", &sig),
        ],
    ))
    .clone();
    ctx.body = Some(bytes::Bytes::copy_from_slice(body));
    Arc::new(ctx)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test]
async fn hmac_signature_allows_once_and_denies_replays_skew_and_tampering() {
    let provider = ProviderSpec::new(guests::HMAC_SIGNATURE)
        .config(json!({ "max_skew_secs": 60, "scopes": ["partner"] }))
        .secret("keys", "k1:shared-key")
        .body()
        .ready()
        .await;
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let good = signed("POST", "/mcp", body, b"shared-key", now_secs());
    match provider.authenticate(&good).await.expect("answers") {
        Verdict::Allow(id) => assert_eq!(
            (id.subject.as_str(), id.scopes.as_slice()),
            ("k1", &["partner".to_owned()][..])
        ),
        other => panic!("expected: allow\ngot: {other:?}"),
    }
    let replay = provider.authenticate(&good).await.expect("answers");
    assert!(
        matches!(&replay, Verdict::Deny(d) if d.reason.contains("already used")),
        "{replay:?}"
    );

    let stale = signed("POST", "/mcp", body, b"shared-key", now_secs() - 3600);
    assert!(matches!(
        provider.authenticate(&stale).await.expect("answers"),
        Verdict::Deny(_)
    ));

    let mut tampered = (*signed("POST", "/mcp", body, b"shared-key", now_secs() + 1)).clone();
    tampered.body = Some(bytes::Bytes::from_static(b"{}"));
    let tampered = Arc::new(tampered);
    assert!(matches!(
        provider.authenticate(&tampered).await.expect("answers"),
        Verdict::Deny(_)
    ));

    let wrong_key = signed("POST", "/mcp", body, b"other-key", now_secs() + 2);
    assert!(matches!(
        provider.authenticate(&wrong_key).await.expect("answers"),
        Verdict::Deny(_)
    ));

    let unsigned = request("POST", "/mcp", &[]);
    assert_eq!(
        provider.authenticate(&unsigned).await.expect("answers"),
        Verdict::Abstain
    );
}

fn from_peer(peer: &str) -> Arc<RequestContext> {
    let mut ctx = (*request("GET", "/mcp", &[])).clone();
    ctx.peer = Some(peer.parse().expect("socket address"));
    Arc::new(ctx)
}

#[tokio::test]
async fn ip_allowlist_admits_networks_and_their_required_scopes() {
    let provider = ProviderSpec::new(guests::IP_ALLOWLIST)
        .config(json!({ "networks": [
            { "cidr": "127.0.0.0/8" },
            { "cidr": "10.0.0.0/8", "required_scopes": ["internal"] },
            { "cidr": "2001:db8::/32" }
        ]}))
        .ready()
        .await;
    let nobody = identity(&[]);
    let internal = identity(&["internal"]);
    assert_eq!(
        provider
            .authorize(&from_peer("127.0.0.1:5000"), &nobody)
            .await
            .expect("answers"),
        Ok(())
    );
    assert_eq!(
        provider
            .authorize(&from_peer("[2001:db8::1]:443"), &nobody)
            .await
            .expect("answers"),
        Ok(())
    );
    assert_eq!(
        provider
            .authorize(&from_peer("10.1.2.3:5000"), &internal)
            .await
            .expect("answers"),
        Ok(())
    );
    let denied = provider
        .authorize(&from_peer("10.1.2.3:5000"), &nobody)
        .await
        .expect("answers")
        .expect_err("needs the internal scope");
    assert_eq!(denied.kind, DenialKind::Forbidden);
    assert!(
        provider
            .authorize(&from_peer("192.0.2.1:5000"), &internal)
            .await
            .expect("answers")
            .is_err()
    );
}

#[tokio::test]
async fn ip_allowlist_refuses_a_bad_cidr_at_load() {
    let err = ProviderSpec::new(guests::IP_ALLOWLIST)
        .config(json!({ "networks": [{ "cidr": "10.0.0.1/8" }] }))
        .build()
        .await
        .expect_err("host bits set");
    assert!(err.to_string().contains("10.0.0.1/8"), "got: {err}");
}

fn tool_call(tools: &[&str]) -> Arc<RequestContext> {
    let mut ctx = (*request("POST", "/mcp", &[])).clone();
    ctx.mcp = Some(McpMessage {
        session_id: None,
        calls: tools
            .iter()
            .map(|t| McpCall {
                method: "tools/call".into(),
                target: McpTarget::Tool((*t).into()),
            })
            .collect(),
    });
    Arc::new(ctx)
}

#[tokio::test]
async fn mcp_tool_policy_guards_matching_tools_only() {
    let provider = ProviderSpec::new(guests::MCP_TOOL_POLICY)
        .config(json!({ "rules": [{ "tools": ["admin_*"], "scope": "admin" }] }))
        .ready()
        .await;
    let user = identity(&["mcp:read"]);
    let admin = identity(&["admin"]);
    assert_eq!(
        provider
            .authorize(&tool_call(&["echo"]), &user)
            .await
            .expect("answers"),
        Ok(())
    );
    let denied = provider
        .authorize(&tool_call(&["echo", "admin_reset"]), &user)
        .await
        .expect("answers")
        .expect_err("admin tool in the batch");
    assert_eq!(
        (denied.kind, denied.code_str()),
        (DenialKind::Forbidden, "insufficient_scope")
    );
    assert_eq!(
        provider
            .authorize(&tool_call(&["admin_reset"]), &admin)
            .await
            .expect("answers"),
        Ok(())
    );
    assert_eq!(
        provider
            .authorize(&request("GET", "/mcp", &[]), &user)
            .await
            .expect("answers"),
        Ok(())
    );
}

#[tokio::test]
async fn mcp_tool_policy_time_window_denies_outside_hours() {
    // A one-hour window that excludes the current UTC hour.
    let hour = (now_secs() / 3600 % 24) as u32;
    let from = (hour + 2) % 24;
    let provider = ProviderSpec::new(guests::MCP_TOOL_POLICY)
        .config(json!({ "rules": [{ "tools": ["deploy"], "scope": "ops",
                                     "hours_utc": { "from": from, "to": (from + 1) % 24 } }] }))
        .ready()
        .await;
    let ops = identity(&["ops"]);
    let denied = provider
        .authorize(&tool_call(&["deploy"]), &ops)
        .await
        .expect("answers")
        .expect_err("outside the window");
    assert_eq!(denied.code_str(), "access_denied");
}

#[tokio::test]
async fn the_request_handle_shows_method_path_headers_and_peer() {
    let provider = ProviderSpec::new(guests::HOSTILE)
        .config(json!({ "mode": "echo" }))
        .ready()
        .await;
    let mut ctx = (*request("PATCH", "/a/b?x=1", &[("X-Echo", "hello")])).clone();
    ctx.peer = Some("192.0.2.7:4242".parse().expect("addr"));
    match provider
        .authenticate(&Arc::new(ctx))
        .await
        .expect("answers")
    {
        Verdict::Allow(id) => {
            let claims: std::collections::HashMap<_, _> = id.claims.into_iter().collect();
            assert_eq!(claims.get("method").map(String::as_str), Some("PATCH"));
            assert_eq!(claims.get("path").map(String::as_str), Some("/a/b"));
            assert_eq!(claims.get("query").map(String::as_str), Some("x=1"));
            assert_eq!(claims.get("x-echo").map(String::as_str), Some("hello"));
            assert_eq!(
                claims.get("peer-addr").map(String::as_str),
                Some("192.0.2.7:4242")
            );
        }
        other => panic!("expected: allow\ngot: {other:?}"),
    }
}
