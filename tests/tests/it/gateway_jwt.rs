//! The gateway with a JWT provider whose keys come from a real JWKS endpoint over HTTP: an
//! ES256 token for this gateway's resource is let in; one for another audience is not.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_tests::upstream::json;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

use crate::gateway_harness::{RecordingUpstream, TestConfig, start};

const ISSUER: &str = "https://issuer.test";

/// `/mcp` takes ES256 tokens from [`ISSUER`] for this gateway's `/mcp`, keys from
/// `jwks_url`.
fn jwt_config(jwks_url: &str) -> TestConfig {
    TestConfig::new()
        .route("/mcp", &["corp-jwt"])
        .jwt("corp-jwt", ISSUER, jwks_url)
        .with(r#"audience = "{gateway}/mcp""#)
        .path_rule("/mcp", &["mcp:read"])
}

struct Signer {
    pkcs8: Vec<u8>,
    jwk: serde_json::Value,
}

fn signer() -> Signer {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .expect("generate")
        .as_ref()
        .to_vec();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).expect("parse");
    let point = pair.public_key().as_ref();
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "k1",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    Signer { pkcs8, jwk }
}

impl Signer {
    fn token(&self, audience: &str, scope: &str) -> String {
        self.token_with(audience, "scope", serde_json::json!(scope))
    }

    /// A token whose scopes are `scopes` in claim `claim` (`scope` or `scp`).
    fn token_with(&self, audience: &str, claim: &str, scopes: serde_json::Value) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        let mut claims = serde_json::json!({
            "iss": ISSUER, "sub": "alice", "aud": audience,
            "iat": now, "exp": now + 300,
        });
        claims[claim] = scopes;
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(&self.pkcs8))
            .expect("sign")
    }
}

/// An upstream answering every request with `signer`'s key set; keys at `<url>/jwks`.
async fn jwks_server(signer: &Signer) -> RecordingUpstream {
    let jwks = Bytes::from(serde_json::json!({ "keys": [signer.jwk] }).to_string());
    RecordingUpstream::answering(move |_| std::future::ready(json(jwks.clone()))).await
}

#[tokio::test]
async fn jwt_from_a_remote_jwks_is_accepted_only_for_this_resource() {
    let signer = signer();
    let jwks = jwks_server(&signer).await;
    let h = start(jwt_config(&format!("{}/jwks", jwks.url))).await;
    let resource = format!("{}/mcp", h.base);
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;

    let good = signer.token(&resource, "mcp:read");
    let ok = h.mcp_post(Some(&good), None, init).await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    let elsewhere = signer.token("https://other.example/mcp", "mcp:read");
    let refused = h.mcp_post(Some(&elsewhere), None, init).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(
        refused
            .header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer error=\"invalid_token\"")),
        "{:?}",
        refused.headers
    );

    let unscoped = signer.token(&resource, "profile");
    let forbidden = h.mcp_post(Some(&unscoped), None, init).await;
    assert_eq!(forbidden.status, 403);

    // The same token again: answered from the verified-token cache, same answer.
    let again = h.mcp_post(Some(&good), None, init).await;
    assert_eq!(again.status, 200, "{}", again.body);

    let metrics = h.request("GET", "/metrics", &[], None).await.body;
    // Whole lines: a substring match also passed for a doubled `portcullis_` prefix.
    for line in [
        r#"portcullis_jwks_fetches_total{provider="corp-jwt",result="success"} 1"#,
        r#"portcullis_jwt_token_cache_total{provider="corp-jwt",result="hit"} 1"#,
        r#"portcullis_jwt_token_cache_total{provider="corp-jwt",result="miss"} 3"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }
}

#[tokio::test]
async fn token_scopes_that_split_in_two_or_claim_everything_are_refused() {
    let signer = signer();
    let jwks = jwks_server(&signer).await;
    let config = jwt_config(&format!("{}/jwks", jwks.url)).tool_rule("admin_*", &["admin"]);
    let h = start(config).await;
    let resource = format!("{}/mcp", h.base);
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_reset","arguments":{}}}"#;
    // One `scp` member holding a space would be two scopes to the upstream reading
    // `x-portcullis-scopes`; `*` from an issuer would pass every rule.
    for scopes in [
        serde_json::json!(["mcp:read admin"]),
        serde_json::json!(["mcp:read", "admin\tx"]),
        serde_json::json!(["*"]),
        serde_json::json!(["mcp:read", "*"]),
    ] {
        let token = signer.token_with(&resource, "scp", scopes.clone());
        let reply = h.mcp_post(Some(&token), None, call).await;
        assert_eq!(reply.status, 401, "{scopes}: {reply:?}");
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|c| c.starts_with("Bearer error=\"invalid_token\"")),
            "{scopes}: {:?}",
            reply.headers
        );
    }
    let plain = signer.token_with(&resource, "scp", serde_json::json!(["mcp:read"]));
    assert_eq!(h.mcp_post(Some(&plain), None, call).await.status, 403);
}
