//! Engine decision cost: an API-key decision; JWT RS256 and ES256 decisions against a bare
//! `ring` signature verify of the same token with the key already decoded; a three-provider
//! chain (JWT abstains, API key abstains, the Wasm partner-token provider allows).
//!
//! Run: `cargo bench -p portcullis-tests --bench engine`.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::engine::api_key::{ApiKeySettings, ApiKeyValidator, hash_key};
use portcullis::engine::jwt::{JwtSettings, JwtValidator};
use portcullis::engine::{Authenticator, Chain, ChainEntry, OnDeny, Policy, Rules};
use portcullis::verdict::{DenialKind, Verdict};
use portcullis_tests::{ProviderSpec, guests, request};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::json;

const ISS: &str = "https://idp.example.com";
const AUD: &str = "https://mcp.example.com/mcp";

struct Token {
    jwt: String,
    jwk: serde_json::Value,
}

fn claims() -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    json!({ "iss": ISS, "aud": AUD, "sub": "alice", "exp": now + 3600, "scope": "mcp:read mcp:write" })
}

fn rs256() -> (Token, Vec<u8>, Vec<u8>) {
    let mut rng = rand::thread_rng();
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("rsa key");
    let der = key.to_pkcs1_der().expect("der");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa".into());
    let jwt = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_rsa_der(der.as_bytes()),
    )
    .expect("sign");
    let (n, e) = (key.n().to_bytes_be(), key.e().to_bytes_be());
    let jwk = json!({ "kty": "RSA", "kid": "rsa", "alg": "RS256", "use": "sig",
                      "n": URL_SAFE_NO_PAD.encode(&n), "e": URL_SAFE_NO_PAD.encode(&e) });
    (Token { jwt, jwk }, n, e)
}

fn es256() -> (Token, Vec<u8>) {
    let rng = SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("ec key");
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("parse");
    let point = pair.public_key().as_ref().to_vec();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec".into());
    let jwt = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_ec_der(pkcs8.as_ref()),
    )
    .expect("sign");
    let jwk = json!({ "kty": "EC", "crv": "P-256", "kid": "ec", "alg": "ES256", "use": "sig",
                      "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]) });
    (Token { jwt, jwk }, point)
}

fn split(jwt: &str) -> (Vec<u8>, Vec<u8>) {
    let (input, sig) = jwt.rsplit_once('.').expect("three parts");
    (
        input.as_bytes().to_vec(),
        URL_SAFE_NO_PAD.decode(sig).expect("base64url"),
    )
}

fn jwt_validator(jwks: serde_json::Value) -> JwtValidator {
    let settings: JwtSettings = serde_json::from_value(json!({
        "issuer": ISS, "audience": AUD, "jwks": jwks.to_string(),
    }))
    .expect("settings");
    JwtValidator::new("corp-jwt", settings).expect("validator")
}

fn api_keys() -> ApiKeyValidator {
    let settings: ApiKeySettings = serde_json::from_value(json!({
        "keys": [{ "name": "ci", "hash": hash_key("ci-key-0123456789abcdef"), "scopes": ["mcp:read"] }]
    }))
    .expect("settings");
    ApiKeyValidator::new("keys", settings).expect("validator")
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");

    let keys = api_keys();
    let key_req = request(
        "POST",
        "/mcp",
        &[("authorization", "Bearer ci-key-0123456789abcdef")],
    );
    c.bench_function("api_key/decision", |b| {
        b.iter(|| {
            let verdict = keys.check(&key_req.headers);
            debug_assert!(matches!(verdict, Verdict::Allow(_)));
            verdict
        })
    });

    let (rsa_token, n, e) = rs256();
    let (ec_token, point) = es256();
    let validator = jwt_validator(json!({ "keys": [rsa_token.jwk.clone(), ec_token.jwk.clone()] }));
    let mut group = c.benchmark_group("jwt");
    for (name, token) in [("rs256", &rsa_token.jwt), ("es256", &ec_token.jwt)] {
        let req = request(
            "POST",
            "/mcp",
            &[("authorization", &format!("Bearer {token}"))],
        );
        assert!(matches!(
            rt.block_on(validator.authenticate(&req)).expect("verdict"),
            Verdict::Allow(_)
        ));
        group.bench_function(format!("{name}/decision"), |b| {
            b.to_async(&rt)
                .iter(|| async { validator.authenticate(&req).await.expect("verdict") })
        });
    }
    let (rsa_input, rsa_sig) = split(&rsa_token.jwt);
    let rsa_key = signature::RsaPublicKeyComponents {
        n: n.clone(),
        e: e.clone(),
    };
    group.bench_function("rs256/bare_ring_verify", |b| {
        b.iter(|| {
            rsa_key
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, &rsa_input, &rsa_sig)
                .expect("valid")
        })
    });
    let (ec_input, ec_sig) = split(&ec_token.jwt);
    let ec_key =
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point.clone());
    group.bench_function("es256/bare_ring_verify", |b| {
        b.iter(|| ec_key.verify(&ec_input, &ec_sig).expect("valid"))
    });
    group.finish();

    let digest = ring::digest::digest(&ring::digest::SHA256, b"acme-secret");
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let partner = rt.block_on(
        ProviderSpec::new(guests::PARTNER_TOKEN)
            .secret("credentials", &format!("acme:sha256:{hex}:mcp:read\n"))
            .ready(),
    );
    let one = |provider: Arc<dyn Authenticator>| ChainEntry::One {
        provider,
        on_deny: OnDeny::Stop,
    };
    let policy = Policy {
        chain: Chain::new(
            vec![
                one(Arc::new(jwt_validator(
                    json!({ "keys": [rsa_token.jwk.clone()] }),
                ))),
                one(Arc::new(api_keys())),
                one(Arc::new(partner)),
            ],
            DenialKind::Unavailable,
        ),
        rules: Rules::default(),
        authorizers: vec![],
        on_error: DenialKind::Unavailable,
    };
    let partner_req = request(
        "POST",
        "/mcp",
        &[("authorization", "partner-token acme:acme-secret")],
    );
    c.bench_function("chain/three_providers_wasm_allows", |b| {
        b.to_async(&rt)
            .iter(|| async { policy.decide(&partner_req).await })
    });
}

criterion_group!(engine, benches);
criterion_main!(engine);
