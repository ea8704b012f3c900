//! Chains mixing built-in validators and Wasm providers, scope rules and Wasm authorizers,
//! through `Policy::decide`: the one decision function every front end calls.

use std::sync::Arc;

use portcullis::engine::api_key::{ApiKeySettings, ApiKeyValidator, hash_key};
use portcullis::engine::jwt::{JwtSettings, JwtValidator};
use portcullis::engine::{
    Authenticator, Chain, ChainEntry, Decision, OnDeny, Policy, Rule, RuleSettings, Rules,
    StepOutcome,
};
use portcullis::mcp::parse_body;
use portcullis::verdict::DenialKind;
use portcullis_tests::{ProviderSpec, guests, request};
use serde_json::json;

use crate::jwt::keys::{eddsa, jwks};

const AUD: &str = "https://mcp.example.com/mcp";
const ISS: &str = "https://idp.example.com";

fn api_keys(header: &str) -> Arc<dyn Authenticator> {
    let settings: ApiKeySettings = serde_json::from_value(json!({
        "header": header,
        "keys": [
            { "name": "ci", "hash": hash_key("ci-key-0123456789"), "scopes": ["mcp:read"] },
            { "name": "ops", "hash": hash_key("ops-key-0123456789"), "scopes": ["admin"] },
        ]
    }))
    .expect("settings");
    Arc::new(ApiKeyValidator::new("keys", settings).expect("valid keys"))
}

fn jwt_with(signer_jwks: String) -> Arc<dyn Authenticator> {
    let settings: JwtSettings = serde_json::from_value(json!({
        "issuer": ISS, "audience": AUD, "jwks": signer_jwks,
    }))
    .expect("settings");
    Arc::new(JwtValidator::new("corp-jwt", settings).expect("valid jwt settings"))
}

fn partner_credentials() -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, b"acme-secret");
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("acme:sha256:{hex}:mcp:read,partner\n")
}

async fn partner() -> Arc<dyn Authenticator> {
    Arc::new(
        ProviderSpec::new(guests::PARTNER_TOKEN)
            .secret("credentials", &partner_credentials())
            .ready()
            .await,
    )
}

fn one(provider: Arc<dyn Authenticator>) -> ChainEntry {
    ChainEntry::One {
        provider,
        on_deny: OnDeny::Stop,
    }
}

fn policy(entries: Vec<ChainEntry>) -> Policy {
    Policy {
        chain: Chain::new(entries, DenialKind::Unavailable),
        rules: Rules::default(),
        authorizers: vec![],
        on_error: DenialKind::Unavailable,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn subject(decision: &Decision) -> &str {
    match decision {
        Decision::Allow { identity, .. } => &identity.subject,
        Decision::Deny { denial, .. } => panic!("expected: allow\ngot: deny {denial}"),
    }
}

fn denial_kind(decision: &Decision) -> DenialKind {
    match decision {
        Decision::Deny { denial, .. } => denial.kind,
        Decision::Allow { identity, .. } => {
            panic!("expected: deny\ngot: allow {}", identity.subject)
        }
    }
}

#[tokio::test]
async fn abstaining_providers_pass_the_request_on() {
    let signer = eddsa("k1");
    let policy = policy(vec![
        one(jwt_with(jwks(&[&signer]))),
        one(api_keys("authorization")),
        one(partner().await),
    ]);
    // A partner token: not a JWT, not a Bearer key; the Wasm provider recognises it.
    let outcome = policy
        .decide(&request(
            "GET",
            "/mcp",
            &[("authorization", "partner-token acme:acme-secret")],
        ))
        .await;
    assert_eq!(subject(&outcome.decision), "acme");
    let steps: Vec<_> = outcome.trace.steps.iter().map(|s| s.outcome).collect();
    assert_eq!(
        steps,
        [
            StepOutcome::Abstain,
            StepOutcome::Abstain,
            StepOutcome::Allow
        ]
    );

    // A JWT and an API key share the Bearer header: the JWT validator takes JWTs only.
    let token = signer.sign(
        &json!({ "iss": ISS, "aud": AUD, "sub": "alice", "exp": now() + 60, "scope": "mcp:read" }),
    );
    let outcome = policy
        .decide(&request(
            "GET",
            "/mcp",
            &[("authorization", &format!("Bearer {token}"))],
        ))
        .await;
    assert_eq!(subject(&outcome.decision), "alice");
    let outcome = policy
        .decide(&request(
            "GET",
            "/mcp",
            &[("authorization", "Bearer ci-key-0123456789")],
        ))
        .await;
    assert_eq!(subject(&outcome.decision), "ci");
    assert_eq!(
        outcome.trace.steps[0].outcome,
        StepOutcome::Abstain,
        "JWT abstains on a key"
    );
}

#[tokio::test]
async fn a_denial_stops_the_chain() {
    let policy = policy(vec![one(api_keys("authorization")), one(partner().await)]);
    let outcome = policy
        .decide(&request(
            "GET",
            "/mcp",
            &[("authorization", "Bearer not-a-key")],
        ))
        .await;
    assert_eq!(denial_kind(&outcome.decision), DenialKind::Unauthenticated);
    assert_eq!(outcome.trace.steps.len(), 1, "the Wasm provider never ran");
}

#[tokio::test]
async fn on_deny_next_falls_through_only_where_configured() {
    let headers = [
        ("x-api-key", "wrong-key"),
        ("authorization", "partner-token acme:acme-secret"),
    ];
    let strict = policy(vec![one(api_keys("x-api-key")), one(partner().await)]);
    let outcome = strict.decide(&request("GET", "/mcp", &headers)).await;
    assert_eq!(denial_kind(&outcome.decision), DenialKind::Unauthenticated);

    let lenient = policy(vec![
        ChainEntry::One {
            provider: api_keys("x-api-key"),
            on_deny: OnDeny::Next,
        },
        one(partner().await),
    ]);
    let outcome = lenient.decide(&request("GET", "/mcp", &headers)).await;
    assert_eq!(subject(&outcome.decision), "acme");

    // Nothing after it allows: the recorded denial is the answer, not "no credentials".
    let outcome = lenient
        .decide(&request("GET", "/mcp", &[("x-api-key", "wrong-key")]))
        .await;
    match &outcome.decision {
        Decision::Deny { denial, .. } => assert_eq!(denial.code_str(), "invalid_token"),
        other => panic!("expected: deny\ngot: {other:?}"),
    }
}

#[tokio::test]
async fn an_all_group_needs_every_factor() {
    let policy = policy(vec![ChainEntry::All {
        providers: vec![api_keys("x-api-key"), partner().await],
    }]);
    let both = [
        ("x-api-key", "ops-key-0123456789"),
        ("authorization", "partner-token acme:acme-secret"),
    ];
    let outcome = policy.decide(&request("GET", "/mcp", &both)).await;
    match &outcome.decision {
        Decision::Allow { identity, provider } => {
            assert_eq!(identity.subject, "ops", "the first factor names the caller");
            assert_eq!(provider, "keys+partner-token");
            for scope in ["admin", "mcp:read", "partner"] {
                assert!(
                    identity.has_scope(scope),
                    "union of scopes: {:?}",
                    identity.scopes
                );
            }
        }
        other => panic!("expected: allow\ngot: {other:?}"),
    }
    let one_factor = policy
        .decide(&request(
            "GET",
            "/mcp",
            &[("x-api-key", "ops-key-0123456789")],
        ))
        .await;
    match &one_factor.decision {
        Decision::Deny { denial, .. } => {
            assert_eq!(denial.kind, DenialKind::Unauthenticated);
            assert!(
                denial.reason.contains("missing factor"),
                "{}",
                denial.reason
            );
        }
        other => panic!("expected: deny\ngot: {other:?}"),
    }
    let none = policy.decide(&request("GET", "/mcp", &[])).await;
    match &none.decision {
        Decision::Deny { denial, .. } => assert_eq!(denial.code_str(), "", "no credentials at all"),
        other => panic!("expected: deny\ngot: {other:?}"),
    }
}

#[tokio::test]
async fn a_trapping_wasm_provider_denies_and_never_falls_through() {
    let trapping: Arc<dyn Authenticator> = Arc::new(
        ProviderSpec::new(guests::HOSTILE)
            .config(json!({ "mode": "panic" }))
            .ready()
            .await,
    );
    // Even with on_deny = next and a valid key behind it, an error fails closed.
    let policy = policy(vec![
        ChainEntry::One {
            provider: trapping,
            on_deny: OnDeny::Stop,
        },
        one(api_keys("authorization")),
    ]);
    let outcome = policy
        .decide(&request(
            "GET",
            "/mcp",
            &[("authorization", "Bearer ci-key-0123456789")],
        ))
        .await;
    assert_eq!(denial_kind(&outcome.decision), DenialKind::Unavailable);
    assert_eq!(outcome.trace.steps[0].outcome, StepOutcome::Error);
    assert!(
        outcome.trace.steps[0].reason.contains("trapped"),
        "{}",
        outcome.trace
    );
}

fn mcp_post(body: &str, headers: &[(&str, &str)]) -> Arc<portcullis::context::RequestContext> {
    let mut ctx = (*request("POST", "/mcp", headers)).clone();
    ctx.mcp = Some(parse_body(body.as_bytes(), None).expect("valid MCP body"));
    Arc::new(ctx)
}

#[tokio::test]
async fn scope_rules_and_wasm_authorizers_guard_tools() {
    let rule = |settings: serde_json::Value| {
        Rule::new(serde_json::from_value::<RuleSettings>(settings).expect("rule")).expect("valid")
    };
    let tool_policy = ProviderSpec::new(guests::MCP_TOOL_POLICY)
        .config(json!({ "rules": [{ "tools": ["delete_*"], "scope": "admin" }] }))
        .ready()
        .await;
    let policy = Policy {
        chain: Chain::new(
            vec![one(api_keys("authorization"))],
            DenialKind::Unavailable,
        ),
        rules: Rules::new(vec![
            rule(json!({ "path": "/mcp", "scopes": ["mcp:read"] })),
            rule(
                json!({ "mcp_method": "tools/call", "tool": "admin_*", "scopes": ["admin", "mcp:read"] }),
            ),
        ]),
        authorizers: vec![Arc::new(tool_policy)],
        on_error: DenialKind::Unavailable,
    };
    let ci = [("authorization", "Bearer ci-key-0123456789")];
    let call = |tool: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#)
    };

    let allowed = policy.decide(&mcp_post(&call("echo"), &ci)).await;
    assert_eq!(subject(&allowed.decision), "ci");

    let admin_tool = policy.decide(&mcp_post(&call("admin_reset"), &ci)).await;
    match &admin_tool.decision {
        Decision::Deny {
            denial,
            required_scopes,
        } => {
            assert_eq!(
                (denial.kind, denial.code_str()),
                (DenialKind::Forbidden, "insufficient_scope")
            );
            assert_eq!(
                required_scopes,
                &["admin", "mcp:read"],
                "names every scope needed"
            );
        }
        other => panic!("expected: deny\ngot: {other:?}"),
    }

    // Passes the rules, refused by the Wasm authorizer.
    let delete = policy.decide(&mcp_post(&call("delete_user"), &ci)).await;
    assert_eq!(denial_kind(&delete.decision), DenialKind::Forbidden);
    assert_eq!(
        delete.trace.steps.last().map(|s| s.provider.as_str()),
        Some("mcp-tool-policy")
    );
}
