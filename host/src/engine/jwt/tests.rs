//! Validator tests with keys made here and static key sets; fetching over HTTP is tested
//! end to end in the `tests` crate.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use super::*;

const ISS: &str = "https://auth.example.com";
const AUD: &str = "https://mcp.example.com/mcp";
const NOW: u64 = 1_900_000_000;

struct Signer {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

fn es256(kid: &'static str) -> Signer {
    let rng = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("keygen");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("parse");
    let point = pair.public_key().as_ref();
    Signer {
        kid,
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }),
    }
}

fn eddsa(kid: &'static str) -> Signer {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse");
    Signer {
        kid,
        alg: Algorithm::EdDSA,
        key: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        }),
    }
}

fn claims() -> Value {
    json!({ "iss": ISS, "aud": AUD, "sub": "user-1", "exp": NOW + 300, "scope": "mcp:read mcp:write" })
}

fn sign(signer: &Signer, claims: &Value) -> String {
    let mut header = Header::new(signer.alg);
    header.kid = Some(signer.kid.into());
    jsonwebtoken::encode(&header, claims, &signer.key).expect("sign")
}

/// A token with a hand-written header, signed by `signer`.
fn sign_raw(signer: &Signer, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &signer.key, signer.alg).expect("sign");
    format!("{input}.{sig}")
}

fn settings(jwks: Value) -> JwtSettings {
    serde_json::from_value(json!({
        "issuer": ISS,
        "audience": AUD,
        "jwks": jwks.to_string(),
        "claims": ["email"],
    }))
    .expect("settings")
}

fn validator(signers: &[&Signer]) -> JwtValidator {
    let keys: Vec<Value> = signers.iter().map(|s| s.jwk.clone()).collect();
    JwtValidator::new("jwt", settings(json!({ "keys": keys }))).expect("validator")
}

fn validator_with_cache(signer: &Signer, token_cache_size: usize) -> JwtValidator {
    let mut settings = settings(json!({ "keys": [signer.jwk] }));
    settings.token_cache_size = token_cache_size;
    JwtValidator::new("jwt", settings).expect("validator")
}

async fn denial(v: &JwtValidator, token: &str) -> Denial {
    match v.check_token(token, NOW).await {
        Verdict::Deny(d) => d,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[tokio::test]
async fn valid_es256_and_eddsa_tokens_are_allowed_with_subject_and_scopes() {
    let (ec, ed) = (es256("ec-1"), eddsa("ed-1"));
    let v = validator(&[&ec, &ed]);
    for signer in [&ec, &ed] {
        let mut c = claims();
        c["email"] = json!("u@example.com");
        let Verdict::Allow(id) = v.check_token(&sign(signer, &c), NOW).await else {
            panic!("expected allow for {:?}", signer.alg);
        };
        assert_eq!(id.subject, "user-1");
        assert_eq!(id.scopes, ["mcp:read", "mcp:write"]);
        assert_eq!(
            id.claims,
            [("email".to_owned(), "u@example.com".to_owned())]
        );
    }
}

#[tokio::test]
async fn token_signed_by_another_key_with_the_same_kid_is_denied() {
    let (good, evil) = (es256("k"), es256("k"));
    let v = validator(&[&good]);
    let d = denial(&v, &sign(&evil, &claims())).await;
    assert_eq!(
        (d.code_str(), d.reason.as_str()),
        ("invalid_token", "token signature does not verify")
    );
}

#[tokio::test]
async fn non_jwt_credentials_and_other_issuers_abstain() {
    let ec = es256("k");
    let v = validator(&[&ec]);
    assert_eq!(
        v.check_token("pk_live_opaque_key", NOW).await,
        Verdict::Abstain
    );
    let mut c = claims();
    c["iss"] = json!("https://other.example.com");
    assert_eq!(v.check_token(&sign(&ec, &c), NOW).await, Verdict::Abstain);
}

#[tokio::test]
async fn token_without_iss_is_denied() {
    let ec = es256("k");
    let mut c = claims();
    c.as_object_mut().expect("object").remove("iss");
    let d = denial(&validator(&[&ec]), &sign(&ec, &c)).await;
    assert!(d.reason.contains("`iss`"), "{}", d.reason);
}

#[tokio::test]
async fn alg_none_is_denied_in_every_casing() {
    let ec = es256("k");
    let v = validator(&[&ec]);
    let body = URL_SAFE_NO_PAD.encode(claims().to_string());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let head = URL_SAFE_NO_PAD.encode(json!({ "alg": alg, "kid": "k" }).to_string());
        for token in [format!("{head}.{body}."), format!("{head}.{body}.c2ln")] {
            let d = denial(&v, &token).await;
            assert!(d.reason.contains("alg `none`"), "{alg}: {}", d.reason);
        }
    }
}

#[tokio::test]
async fn algorithm_outside_the_list_is_denied_even_with_a_valid_signature() {
    let ec = es256("k");
    let mut s = settings(json!({ "keys": [ec.jwk] }));
    s.algorithms = Some(vec![Algorithm::RS256]);
    let v = JwtValidator::new("jwt", s).expect("validator");
    let d = denial(&v, &sign(&ec, &claims())).await;
    assert_eq!(d.reason, "token algorithm is not allowed for this issuer");
}

#[tokio::test]
async fn crit_header_is_denied() {
    let ec = es256("k");
    let header = json!({ "alg": "ES256", "kid": "k", "crit": ["exp"], "exp": 1 });
    let d = denial(&validator(&[&ec]), &sign_raw(&ec, &header, &claims())).await;
    assert!(d.reason.contains("crit"), "{}", d.reason);
}

#[tokio::test]
async fn embedded_jwk_header_is_ignored() {
    let (good, evil) = (es256("k"), es256("k"));
    let header = json!({ "alg": "ES256", "kid": "k", "jwk": evil.jwk, "jku": "https://evil/jwks" });
    let d = denial(&validator(&[&good]), &sign_raw(&evil, &header, &claims())).await;
    assert_eq!(d.reason, "token signature does not verify");
}

#[tokio::test]
async fn missing_kid_uses_the_single_key_of_that_type() {
    let (ec, ed) = (es256("ec"), eddsa("ed"));
    let v = validator(&[&ec, &ed]);
    let token = sign_raw(&ec, &json!({ "alg": "ES256" }), &claims());
    assert!(matches!(
        v.check_token(&token, NOW).await,
        Verdict::Allow(_)
    ));
    let v = validator(&[&ec, &es256("ec-2")]);
    let d = denial(&v, &token).await;
    assert!(d.reason.contains("no `kid`"), "{}", d.reason);
}

#[tokio::test]
async fn a_repeated_token_is_answered_from_the_cache_and_its_expiry_still_applies() {
    let ec = es256("k");
    let v = validator(&[&ec]);
    let mut c = claims();
    c["exp"] = json!(NOW + 60);
    let token = sign(&ec, &c);
    let first = v.check_token(&token, NOW).await;
    assert!(matches!(first, Verdict::Allow(_)), "{first:?}");
    let again = v.check_token(&token, NOW + 1).await;
    assert_eq!(again, first, "the cached answer is the same identity");
    assert_eq!(
        v.token_cache_stats(),
        TokenCacheStats { hits: 1, misses: 1 }
    );
    // Past `exp` + leeway the cached token is refused with the full path's reason.
    match v.check_token(&token, NOW + 91).await {
        Verdict::Deny(d) => assert_eq!(d.reason, "token has expired"),
        other => panic!("an expired cached token must be refused, got {other:?}"),
    }
    assert_eq!(
        v.token_cache_stats().hits,
        2,
        "refused from the cache entry"
    );
}

#[tokio::test]
async fn refused_tokens_are_never_cached_and_the_cache_is_bounded() {
    let ec = es256("k");
    let other = es256("k");
    let v = validator_with_cache(&ec, 2);
    let forged = sign(&other, &claims());
    for _ in 0..3 {
        assert_eq!(
            denial(&v, &forged).await.reason,
            "token signature does not verify"
        );
    }
    assert_eq!(v.verified.len(), 0, "a refusal is not remembered");
    for sub in ["a", "b", "c", "d"] {
        let mut c = claims();
        c["sub"] = json!(sub);
        assert!(matches!(
            v.check_token(&sign(&ec, &c), NOW).await,
            Verdict::Allow(_)
        ));
        assert!(
            v.verified.len() <= 2,
            "never more than token_cache_size entries"
        );
    }
    assert_eq!(v.verified.len(), 2);
}

#[tokio::test]
async fn a_cache_size_of_zero_verifies_every_time() {
    let ec = es256("k");
    let v = validator_with_cache(&ec, 0);
    let token = sign(&ec, &claims());
    for _ in 0..3 {
        assert!(matches!(
            v.check_token(&token, NOW).await,
            Verdict::Allow(_)
        ));
    }
    assert_eq!(v.token_cache_stats().hits, 0);
    assert_eq!(v.verified.len(), 0);
}

#[tokio::test]
async fn expired_not_yet_valid_and_wrong_audience_are_denied() {
    let ec = es256("k");
    let v = validator(&[&ec]);
    let cases = [
        ("exp", json!(NOW - 31), "token has expired"),
        (
            "nbf",
            json!(NOW + 31),
            "token is not valid yet (`nbf` is in the future)",
        ),
        (
            "aud",
            json!("https://other/mcp"),
            "token audience does not include this resource",
        ),
    ];
    for (claim, value, reason) in cases {
        let mut c = claims();
        c[claim] = value;
        assert_eq!(denial(&v, &sign(&ec, &c)).await.reason, reason, "{claim}");
    }
    let mut c = claims();
    c["exp"] = json!(NOW - 29);
    assert!(
        matches!(v.check_token(&sign(&ec, &c), NOW).await, Verdict::Allow(_)),
        "within leeway"
    );
}

#[tokio::test]
async fn duplicate_claims_are_denied() {
    let ec = es256("k");
    let body = format!(
        r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{},"sub":"a","sub":"admin"}}"#,
        NOW + 60
    );
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({ "alg": "ES256", "kid": "k" }).to_string()),
        URL_SAFE_NO_PAD.encode(body)
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &ec.key, ec.alg).expect("sign");
    let d = denial(&validator(&[&ec]), &format!("{input}.{sig}")).await;
    assert!(d.reason.contains("duplicate"), "{}", d.reason);
}

#[tokio::test]
async fn oversized_token_is_denied_without_parsing() {
    let ec = es256("k");
    let mut c = claims();
    c["pad"] = json!("x".repeat(token::MAX_TOKEN_BYTES));
    let d = denial(&validator(&[&ec]), &sign(&ec, &c)).await;
    assert_eq!(d.reason, "token is larger than 16 KiB");
}

#[tokio::test]
async fn configured_scope_and_subject_claims_are_used() {
    let ec = es256("k");
    let mut s = settings(json!({ "keys": [ec.jwk] }));
    s.scope_claim = Some("roles".into());
    s.subject_claim = "client_id".into();
    let v = JwtValidator::new("jwt", s).expect("validator");
    let mut c = claims();
    c["roles"] = json!(["admin"]);
    c["client_id"] = json!("svc-7");
    let Verdict::Allow(id) = v.check_token(&sign(&ec, &c), NOW).await else {
        panic!("expected allow");
    };
    assert_eq!(
        (id.subject.as_str(), id.scopes),
        ("svc-7", vec!["admin".to_owned()])
    );
}

#[tokio::test]
async fn bearer_header_is_read_and_other_schemes_abstain() {
    let ec = es256("k");
    let v = validator(&[&ec]);
    let mut h = HeaderMap::new();
    h.insert("authorization", "Basic dTpw".parse().expect("value"));
    assert_eq!(v.check(&h).await, Verdict::Abstain);
    assert_eq!(v.check(&HeaderMap::new()).await, Verdict::Abstain);
}

fn hmac_settings(secret_file: &std::path::Path, algorithms: Option<Vec<Algorithm>>) -> JwtSettings {
    let mut s: JwtSettings = serde_json::from_value(json!({
        "issuer": ISS, "audience": [AUD],
        "shared_secret": format!("file://{}", secret_file.display()),
    }))
    .expect("settings");
    s.algorithms = algorithms;
    s
}

fn secret_file(secret: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hs-secret");
    std::fs::write(&path, secret).expect("write");
    (dir, path)
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

#[tokio::test]
async fn shared_secret_issuer_accepts_hs256_signed_with_that_secret_only() {
    let secret = "0123456789abcdef0123456789abcdef-hs";
    let (_dir, path) = secret_file(secret);
    let v = JwtValidator::new("hs", hmac_settings(&path, None)).expect("validator");
    assert!(matches!(
        v.check_token(&hs256(secret.as_bytes(), &claims()), NOW)
            .await,
        Verdict::Allow(_)
    ));
    let wrong = hs256(b"another-secret-another-secret-xx", &claims());
    assert_eq!(
        denial(&v, &wrong).await.reason,
        "token signature does not verify"
    );
    let ec = es256("k");
    assert_eq!(
        denial(&v, &sign(&ec, &claims())).await.reason,
        "token algorithm is not allowed for this issuer"
    );
}

#[tokio::test]
async fn hs256_is_denied_when_no_shared_secret_is_configured() {
    let ec = es256("k");
    let v = validator(&[&ec]);
    let jwk_bytes = ec.jwk.to_string();
    let d = denial(&v, &hs256(jwk_bytes.as_bytes(), &claims())).await;
    assert_eq!(d.reason, "token algorithm is not allowed for this issuer");
}

fn config_error(value: Value) -> String {
    let s: JwtSettings = serde_json::from_value(value).expect("settings parse");
    JwtValidator::new("corp", s)
        .expect_err("refused")
        .to_string()
}

#[test]
fn exactly_one_key_source_is_required() {
    let msg = config_error(json!({ "issuer": ISS, "audience": AUD }));
    assert!(
        msg.contains("exactly one key source") && msg.contains("none"),
        "{msg}"
    );
    let msg = config_error(json!({
        "issuer": ISS, "audience": AUD, "jwks_url": "https://a/jwks", "discovery": true
    }));
    assert!(msg.contains("`jwks_url`, `discovery`"), "{msg}");
}

#[test]
fn hmac_and_public_key_algorithms_never_mix() {
    let (_dir, path) = secret_file("0123456789abcdef0123456789abcdef");
    let s = hmac_settings(&path, Some(vec![Algorithm::HS256, Algorithm::RS256]));
    let msg = JwtValidator::new("corp", s).expect_err("mixed").to_string();
    assert!(
        msg.contains("RS256") && msg.contains("shared_secret"),
        "{msg}"
    );
    let msg = config_error(json!({
        "issuer": ISS, "audience": AUD, "jwks_url": "https://a/jwks", "algorithms": ["HS256"]
    }));
    assert!(
        msg.contains("HS256") && msg.contains("need `shared_secret`"),
        "{msg}"
    );
}

#[test]
fn short_or_literal_shared_secret_is_refused() {
    let (_dir, path) = secret_file("too-short");
    let msg = JwtValidator::new("corp", hmac_settings(&path, None))
        .expect_err("short")
        .to_string();
    assert!(msg.contains("at least 32"), "{msg}");
    let msg = config_error(json!({
        "issuer": ISS, "audience": AUD, "shared_secret": "0123456789abcdef0123456789abcdef"
    }));
    assert!(
        msg.contains("must be a reference") && !msg.contains("0123"),
        "{msg}"
    );
    let s: JwtSettings = serde_json::from_value(json!({
        "issuer": ISS, "audience": AUD, "shared_secret": "0123456789abcdef0123456789abcdef"
    }))
    .expect("settings");
    assert!(
        !format!("{s:?}").contains("0123"),
        "settings Debug shows the secret"
    );
}

#[test]
fn plain_http_key_urls_are_refused_unless_loopback() {
    let msg = config_error(
        json!({ "issuer": ISS, "audience": AUD, "jwks_url": "http://idp.example.com/jwks" }),
    );
    assert!(
        msg.contains("`jwks_url = \"http://idp.example.com/jwks\"`") && msg.contains("https"),
        "{msg}"
    );
    let msg = config_error(
        json!({ "issuer": "http://idp.example.com", "audience": AUD, "discovery": true }),
    );
    assert!(msg.contains("`issuer = "), "{msg}");
    for url in [
        "http://127.0.0.1:8080/jwks",
        "http://localhost/jwks",
        "http://[::1]:9/jwks",
    ] {
        let s: JwtSettings =
            serde_json::from_value(json!({ "issuer": ISS, "audience": AUD, "jwks_url": url }))
                .expect("settings");
        assert!(JwtValidator::new("corp", s).is_ok(), "{url}");
    }
}

#[test]
fn unusable_inline_jwks_names_the_setting() {
    let msg = config_error(json!({ "issuer": ISS, "audience": AUD, "jwks": "{\"keys\": []}" }));
    assert!(
        msg.contains("`jwks`") && msg.contains("no usable signature key"),
        "{msg}"
    );
}

#[test]
fn settings_reject_unknown_keys_and_bad_algorithms() {
    let err = serde_json::from_value::<JwtSettings>(json!({
        "issuer": ISS, "audience": AUD, "jwks_uri": "https://a"
    }))
    .expect_err("unknown key");
    assert!(err.to_string().contains("jwks_uri"), "{err}");
    let err = serde_json::from_value::<JwtSettings>(json!({
        "issuer": ISS, "audience": AUD, "algorithms": ["none"]
    }))
    .expect_err("bad algorithm");
    assert!(err.to_string().contains("none"), "{err}");
}

#[test]
fn empty_issuer_audience_and_huge_leeway_are_refused() {
    let msg = config_error(json!({ "issuer": "", "audience": AUD, "jwks_url": "https://a/j" }));
    assert!(msg.contains("`issuer` is empty"), "{msg}");
    let msg = config_error(json!({ "issuer": ISS, "audience": [], "jwks_url": "https://a/j" }));
    assert!(msg.contains("`audience` is empty"), "{msg}");
    let msg = config_error(json!({
        "issuer": ISS, "audience": AUD, "jwks_url": "https://a/j", "leeway_secs": 3600
    }));
    assert!(msg.contains("`leeway_secs = 3600`"), "{msg}");
    let msg = config_error(json!({
        "issuer": ISS, "audience": AUD, "jwks_url": "https://a/j", "token_cache_size": 2_000_000
    }));
    assert!(msg.contains("`token_cache_size = 2000000`"), "{msg}");
}
