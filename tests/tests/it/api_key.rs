//! The API-key validator end to end, through the `Authenticator` trait: every key source
//! (hash, env, file) and every credential location (Bearer, X-API-Key, a custom scheme).

use std::process::Command;
use std::sync::Arc;

use http::{HeaderValue, Method};
use portcullis::context::RequestContext;
use portcullis::engine::Authenticator;
use portcullis::engine::api_key::{ApiKeySettings, ApiKeyValidator, hash_key};
use portcullis::verdict::{DenialKind, Verdict};
use serde_json::{Value, json};

const KEY: &str = "pcl_test_6b1f0e0c9a7d4b2e";

fn validator(settings: Value) -> ApiKeyValidator {
    let settings: ApiKeySettings = serde_json::from_value(settings).expect("settings");
    ApiKeyValidator::new("keys", settings).expect("validator")
}

fn one_key(entry: Value) -> ApiKeyValidator {
    validator(json!({ "keys": [entry] }))
}

async fn decide(v: &ApiKeyValidator, headers: &[(&'static str, &str)]) -> Verdict {
    let mut ctx = RequestContext::new(Method::POST, "/mcp");
    for (name, value) in headers {
        ctx.headers
            .append(*name, HeaderValue::from_str(value).expect("header value"));
    }
    v.authenticate(&Arc::new(ctx))
        .await
        .expect("no provider error")
}

async fn bearer(v: &ApiKeyValidator, key: &str) -> Verdict {
    decide(v, &[("authorization", &format!("Bearer {key}"))]).await
}

fn assert_invalid_token(verdict: &Verdict, reason_part: &str) {
    match verdict {
        Verdict::Deny(d) => {
            assert_eq!(
                (d.kind, d.code_str()),
                (DenialKind::Unauthenticated, "invalid_token")
            );
            assert!(
                d.reason.contains(reason_part),
                "expected: {reason_part}\ngot: {}",
                d.reason
            );
            assert!(
                !d.reason.contains(KEY),
                "the reason must not contain the key"
            );
        }
        other => panic!("expected: invalid_token\ngot: {other:?}"),
    }
}

#[tokio::test]
async fn right_key_is_allowed_as_its_name_with_its_scopes() {
    let v = one_key(json!({ "name": "ci", "hash": hash_key(KEY), "scopes": ["mcp:read"] }));
    let Verdict::Allow(id) = bearer(&v, KEY).await else {
        panic!("expected allow");
    };
    assert_eq!(id.subject, "ci");
    assert_eq!(id.scopes, ["mcp:read"]);
    assert_eq!(id.claims, [("key_name".to_owned(), "ci".to_owned())]);
}

#[tokio::test]
async fn wrong_key_is_denied_with_invalid_token() {
    let v = one_key(json!({ "name": "ci", "hash": hash_key(KEY) }));
    assert_invalid_token(&bearer(&v, "pcl_test_wrong").await, "unknown");
    let almost = &KEY[..KEY.len() - 1];
    assert_invalid_token(&bearer(&v, almost).await, "unknown");
}

#[tokio::test]
async fn expired_key_is_denied_as_expired() {
    let v = one_key(json!({
        "name": "ci", "hash": hash_key(KEY), "expires_at": "2020-01-01T00:00:00Z"
    }));
    assert_invalid_token(&bearer(&v, KEY).await, "expired");
    let v = one_key(json!({
        "name": "ci", "hash": hash_key(KEY), "expires_at": "2999-01-01T00:00:00+01:00"
    }));
    assert!(matches!(bearer(&v, KEY).await, Verdict::Allow(_)));
}

#[tokio::test]
async fn revoked_key_is_denied_as_revoked() {
    let v = one_key(json!({ "name": "ci", "hash": hash_key(KEY), "revoked": true }));
    assert_invalid_token(&bearer(&v, KEY).await, "revoked");
}

#[tokio::test]
async fn key_from_a_file_is_hashed_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ops.key");
    std::fs::write(&path, format!("{KEY}\n")).expect("write key file");
    let v = one_key(json!({ "name": "ops", "key": format!("file://{}", path.display()) }));
    // The file is read once, at load: later changes need a reload.
    std::fs::remove_file(&path).expect("remove");
    assert!(matches!(bearer(&v, KEY).await, Verdict::Allow(id) if id.subject == "ops"));
}

/// Setting a variable is `unsafe` in a multi-threaded test binary, so the test runs itself
/// as a child process with the variable in its environment.
const ENV_VAR: &str = "PORTCULLIS_IT_API_KEY_FROM_ENV_7F3A";

#[tokio::test]
async fn key_from_an_environment_variable_is_hashed_at_load() {
    if let Ok(key) = std::env::var(ENV_VAR) {
        let v = one_key(json!({ "name": "env-key", "key": format!("env://{ENV_VAR}") }));
        assert!(matches!(bearer(&v, &key).await, Verdict::Allow(id) if id.subject == "env-key"));
        assert_invalid_token(&bearer(&v, "not-the-env-key").await, "unknown");
        return;
    }
    // libtest names tests by module path without the crate name.
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    let name = format!("{module}::key_from_an_environment_variable_is_hashed_at_load");
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", &name, "--test-threads=1"])
        .env(ENV_VAR, KEY)
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "expected: the child run to pass one test\ngot: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn missing_environment_variable_is_a_config_error_naming_it() {
    let settings: ApiKeySettings = serde_json::from_value(json!({
        "keys": [{ "name": "ci", "key": "env://PORTCULLIS_IT_SURELY_UNSET_VAR" }]
    }))
    .expect("settings");
    let err = ApiKeyValidator::new("keys", settings).expect_err("unset variable");
    assert!(
        err.to_string().contains("PORTCULLIS_IT_SURELY_UNSET_VAR"),
        "{err}"
    );
}

#[tokio::test]
async fn plaintext_key_in_config_is_refused() {
    let settings: ApiKeySettings =
        serde_json::from_value(json!({ "keys": [{ "name": "ci", "key": KEY }] }))
            .expect("settings");
    let msg = ApiKeyValidator::new("keys", settings)
        .expect_err("literal")
        .to_string();
    assert!(
        msg.contains("env://") && msg.contains("hash") && !msg.contains(KEY),
        "{msg}"
    );
}

#[tokio::test]
async fn x_api_key_header_carries_the_whole_key() {
    let v = validator(
        json!({ "header": "X-API-Key", "keys": [{ "name": "ci", "hash": hash_key(KEY) }] }),
    );
    assert!(matches!(
        decide(&v, &[("x-api-key", KEY)]).await,
        Verdict::Allow(_)
    ));
    assert_eq!(
        bearer(&v, KEY).await,
        Verdict::Abstain,
        "Authorization is not read"
    );
    assert_eq!(decide(&v, &[]).await, Verdict::Abstain);
}

#[tokio::test]
async fn custom_scheme_matches_case_insensitively() {
    let v = validator(json!({
        "scheme": "partner-token", "keys": [{ "name": "acme", "hash": hash_key("acme:s3cret") }]
    }));
    for value in ["partner-token acme:s3cret", "Partner-Token acme:s3cret"] {
        let verdict = decide(&v, &[("authorization", value)]).await;
        assert!(
            matches!(verdict, Verdict::Allow(ref id) if id.subject == "acme"),
            "{value}"
        );
    }
    assert_eq!(bearer(&v, "acme:s3cret").await, Verdict::Abstain);
}

#[tokio::test]
async fn bearer_is_the_default_and_other_schemes_abstain() {
    let v = one_key(json!({ "name": "ci", "hash": hash_key(KEY) }));
    assert!(matches!(
        decide(&v, &[("authorization", &format!("bearer {KEY}"))]).await,
        Verdict::Allow(_)
    ));
    assert_eq!(
        decide(&v, &[("authorization", "Basic Y2k6cHc=")]).await,
        Verdict::Abstain
    );
    assert_eq!(decide(&v, &[]).await, Verdict::Abstain);
}

#[tokio::test]
async fn two_authorization_headers_are_a_bad_request() {
    let v = one_key(json!({ "name": "ci", "hash": hash_key(KEY) }));
    let header = format!("Bearer {KEY}");
    let verdict = decide(
        &v,
        &[
            ("authorization", &header),
            ("authorization", "Bearer other"),
        ],
    )
    .await;
    assert!(
        matches!(verdict, Verdict::Deny(ref d) if d.kind == DenialKind::BadRequest),
        "{verdict:?}"
    );
}
