//! The JWT validator end to end: tokens signed with keys made here, key sets served by a
//! real HTTP server on 127.0.0.1, the validator called through the `Authenticator` trait.

pub(crate) mod keys;
pub(crate) mod server;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderValue, Method};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::context::RequestContext;
use portcullis::engine::Authenticator;
use portcullis::engine::jwt::{JwksFetchError, JwtSettings, JwtValidator};
use portcullis::verdict::{Denial, DenialKind, Verdict};
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use self::keys::{Signer, eddsa, es256, jwks, rs256, rsa_public};
use self::server::{JwksServer, Mode};

const AUD: &str = "https://mcp.example.com/mcp";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn claims(issuer: &str) -> Value {
    json!({
        "iss": issuer, "aud": AUD, "sub": "alice", "exp": now() + 300,
        "scope": "mcp:read mcp:write", "email": "alice@example.com",
    })
}

/// A validator for the server's issuer reading keys from its `/jwks`; `extra` overrides.
fn validator(server: &JwksServer, extra: Value) -> JwtValidator {
    let mut settings = json!({
        "issuer": server.base(),
        "audience": [AUD, "https://other.example.com"],
        "jwks_url": server.jwks_url(),
        "claims": ["email"],
    });
    for (k, v) in extra.as_object().expect("object") {
        settings[k] = v.clone();
    }
    if settings.get("discovery").is_some() {
        settings.as_object_mut().expect("object").remove("jwks_url");
    }
    let settings: JwtSettings = serde_json::from_value(settings).expect("settings");
    JwtValidator::new("corp-jwt", settings).expect("validator")
}

/// Runs the validator the way the chain does: a request context, the trait method.
async fn decide(v: &JwtValidator, token: &str) -> Verdict {
    let mut ctx = RequestContext::new(Method::POST, "/mcp");
    ctx.headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header value"),
    );
    v.authenticate(&Arc::new(ctx))
        .await
        .expect("no provider error")
}

async fn denied(v: &JwtValidator, token: &str) -> Denial {
    match decide(v, token).await {
        Verdict::Deny(d) => {
            assert!(
                !d.reason.contains(token),
                "the reason must not echo the token"
            );
            d
        }
        other => panic!("expected: a denial\ngot: {other:?}"),
    }
}

async fn assert_allowed(v: &JwtValidator, token: &str) {
    let verdict = decide(v, token).await;
    assert!(
        matches!(verdict, Verdict::Allow(_)),
        "expected: allow\ngot: {verdict:?}"
    );
}

#[tokio::test]
async fn valid_rs256_token_is_allowed_with_subject_scopes_and_claims() {
    let rsa = rs256("rsa-1");
    let server = JwksServer::start(jwks(&[&rsa])).await;
    let v = validator(&server, json!({}));
    let Verdict::Allow(id) = decide(&v, &rsa.sign(&claims(server.base()))).await else {
        panic!("expected allow");
    };
    assert_eq!(id.subject, "alice");
    assert_eq!(id.scopes, ["mcp:read", "mcp:write"]);
    assert_eq!(
        id.claims,
        [("email".to_owned(), "alice@example.com".to_owned())]
    );
    assert_eq!(server.jwks_hits(), 1);
}

#[tokio::test]
async fn valid_es256_and_eddsa_tokens_are_allowed() {
    let (ec, ed) = (es256("ec-1"), eddsa("ed-1"));
    let server = JwksServer::start(jwks(&[&ec, &ed])).await;
    let v = validator(&server, json!({}));
    for signer in [&ec, &ed] {
        let mut c = claims(server.base());
        c["scp"] = json!(["tools:call"]);
        c.as_object_mut().expect("object").remove("scope");
        let Verdict::Allow(id) = decide(&v, &signer.sign(&c)).await else {
            panic!("expected allow for {:?}", signer.alg);
        };
        assert_eq!(id.scopes, ["tools:call"]);
    }
    assert_eq!(
        server.jwks_hits(),
        1,
        "keys are cached, not fetched per request"
    );
}

#[tokio::test]
async fn expired_jwt_is_denied_with_invalid_token() {
    let ec = es256("k");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let v = validator(&server, json!({}));
    let mut c = claims(server.base());
    c["exp"] = json!(now() - 3600);
    let d = denied(&v, &ec.sign(&c)).await;
    assert_eq!(
        (d.kind, d.code_str()),
        (DenialKind::Unauthenticated, "invalid_token")
    );
    assert!(d.reason.contains("expired"), "{}", d.reason);
}

#[tokio::test]
async fn jwt_without_exp_is_denied() {
    let ec = es256("k");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let mut c = claims(server.base());
    c.as_object_mut().expect("object").remove("exp");
    let d = denied(&validator(&server, json!({})), &ec.sign(&c)).await;
    assert!(d.reason.contains("`exp`"), "{}", d.reason);
}

#[tokio::test]
async fn not_yet_valid_jwt_is_denied() {
    let ec = es256("k");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let mut c = claims(server.base());
    c["nbf"] = json!(now() + 3600);
    let d = denied(&validator(&server, json!({})), &ec.sign(&c)).await;
    assert!(d.reason.contains("not valid yet"), "{}", d.reason);
}

#[tokio::test]
async fn jwt_from_another_issuer_abstains_and_is_never_allowed() {
    let ec = es256("k");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let v = validator(&server, json!({}));
    let c = claims("https://someone-else.example.com");
    assert_eq!(decide(&v, &ec.sign(&c)).await, Verdict::Abstain);
    assert_eq!(
        server.jwks_hits(),
        0,
        "another issuer's token never touches our keys"
    );
}

#[tokio::test]
async fn jwt_naming_our_issuer_but_signed_by_another_key_is_denied() {
    let (ours, theirs) = (es256("k"), es256("k"));
    let server = JwksServer::start(jwks(&[&ours])).await;
    let d = denied(
        &validator(&server, json!({})),
        &theirs.sign(&claims(server.base())),
    )
    .await;
    assert_eq!(d.reason, "token signature does not verify");
}

#[tokio::test]
async fn wrong_audience_jwt_is_denied() {
    let ec = es256("k");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let mut c = claims(server.base());
    c["aud"] = json!(["https://elsewhere.example.com/mcp"]);
    let d = denied(&validator(&server, json!({})), &ec.sign(&c)).await;
    assert!(d.reason.contains("audience"), "{}", d.reason);
}

#[tokio::test]
async fn alg_none_jwt_is_denied_in_every_casing() {
    let ec = es256("k");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let v = validator(&server, json!({}));
    let body = URL_SAFE_NO_PAD.encode(claims(server.base()).to_string());
    for alg in ["none", "None", "NONE", "nONE"] {
        let head = URL_SAFE_NO_PAD.encode(json!({ "alg": alg, "typ": "JWT" }).to_string());
        for token in [format!("{head}.{body}."), format!("{head}.{body}.AAAA")] {
            let d = denied(&v, &token).await;
            assert!(d.reason.contains("none"), "{alg}: {}", d.reason);
        }
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_denied() {
    let rsa = rs256("rsa-1");
    let server = JwksServer::start(jwks(&[&rsa])).await;
    let v = validator(&server, json!({}));
    let public = rsa_public();
    let spki_pem = public.to_public_key_pem(LineEnding::LF).expect("pem");
    let pkcs1_pem = public.to_pkcs1_pem(LineEnding::LF).expect("pem");
    let spki_der = public.to_public_key_der().expect("der");
    let jwk_text = rsa.jwk.to_string();
    let secrets: [&[u8]; 4] = [
        spki_pem.as_bytes(),
        pkcs1_pem.as_bytes(),
        spki_der.as_bytes(),
        jwk_text.as_bytes(),
    ];
    for secret in secrets {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims(server.base()),
            &EncodingKey::from_secret(secret),
        )
        .expect("sign");
        let d = denied(&v, &token).await;
        assert_eq!(d.reason, "token algorithm is not allowed for this issuer");
    }
}

#[tokio::test]
async fn crit_header_is_denied() {
    let ec = es256("k");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let header = json!({ "alg": "ES256", "kid": "k", "crit": ["http://example.com/ext"] });
    let d = denied(
        &validator(&server, json!({})),
        &ec.sign_raw(&header, &claims(server.base())),
    )
    .await;
    assert!(d.reason.contains("crit"), "{}", d.reason);
}

#[tokio::test]
async fn jku_and_x5u_headers_are_ignored() {
    let (ours, attacker) = (es256("k"), es256("k"));
    let server = JwksServer::start(jwks(&[&ours])).await;
    let evil = JwksServer::start(jwks(&[&attacker])).await;
    let v = validator(&server, json!({}));
    for kid in ["k", "evil-kid"] {
        let header =
            json!({ "alg": "ES256", "kid": kid, "jku": evil.jwks_url(), "x5u": evil.jwks_url() });
        let verdict = decide(&v, &attacker.sign_raw(&header, &claims(server.base()))).await;
        assert!(matches!(verdict, Verdict::Deny(_)), "{kid}: {verdict:?}");
    }
    assert_eq!(
        evil.jwks_hits(),
        0,
        "a key URL in the token is never fetched"
    );
}

#[tokio::test]
async fn non_jwt_bearer_abstains() {
    let ec = es256("k");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let v = validator(&server, json!({}));
    for token in ["pk_live_0123456789", "a.b", "opaque.token.with.dots"] {
        assert_eq!(decide(&v, token).await, Verdict::Abstain, "{token}");
    }
    assert_eq!(server.jwks_hits(), 0);
}

#[tokio::test]
async fn unknown_kid_refetches_once_and_the_rotated_key_then_works() {
    let (old, new) = (es256("2024-01"), es256("2024-02"));
    let server = JwksServer::start(jwks(&[&old])).await;
    let v = validator(&server, json!({ "min_refetch_interval_secs": 0 }));
    assert_allowed(&v, &old.sign(&claims(server.base()))).await;
    assert_eq!(server.jwks_hits(), 1);

    server.set_jwks(jwks(&[&new]));
    assert_allowed(&v, &new.sign(&claims(server.base()))).await;
    assert_eq!(server.jwks_hits(), 2, "the unknown kid caused one fetch");
    assert_allowed(&v, &new.sign(&claims(server.base()))).await;
    assert_eq!(server.jwks_hits(), 2, "the new key is cached");

    let d = denied(&v, &old.sign(&claims(server.base()))).await;
    assert_eq!(
        d.code_str(),
        "invalid_token",
        "a key removed by rotation is no longer accepted"
    );
}

#[tokio::test]
async fn a_cached_token_is_refused_once_rotation_removes_its_key() {
    let (old, new) = (es256("2024-01"), es256("2024-02"));
    let server = JwksServer::start(jwks(&[&old])).await;
    let v = validator(&server, json!({ "min_refetch_interval_secs": 0 }));
    let token = old.sign(&claims(server.base()));
    assert_allowed(&v, &token).await;
    assert_allowed(&v, &token).await;
    assert_eq!(
        v.token_cache_stats().hits,
        1,
        "the same token again is answered from the verified-token cache"
    );

    server.set_jwks(jwks(&[&new]));
    // A token with the new kid makes the validator fetch the rotated set.
    assert_allowed(&v, &new.sign(&claims(server.base()))).await;
    assert_eq!(server.jwks_hits(), 2);
    let d = denied(&v, &token).await;
    assert_eq!(
        d.code_str(),
        "invalid_token",
        "the very bytes verified before are refused once their key is gone"
    );
}

fn random_kid_tokens(signer: &Signer, issuer: &str, count: usize) -> Vec<String> {
    let c = claims(issuer);
    (0..count)
        .map(|_| {
            let header =
                json!({ "alg": "ES256", "kid": format!("{:016x}", rand::random::<u64>()) });
            signer.sign_raw(&header, &c)
        })
        .collect()
}

async fn decide_all(v: &Arc<JwtValidator>, tokens: Vec<String>) -> Vec<Verdict> {
    let mut set = JoinSet::new();
    for token in tokens {
        let v = Arc::clone(v);
        set.spawn(async move { decide(&v, &token).await });
    }
    let mut verdicts = Vec::new();
    while let Some(verdict) = set.join_next().await {
        verdicts.push(verdict.expect("task"));
    }
    verdicts
}

#[tokio::test]
async fn flood_of_1000_random_kids_causes_at_most_two_fetches() {
    let ec = es256("real");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let v = Arc::new(validator(&server, json!({})));
    // Cold: the flood itself triggers the first fetch.
    let verdicts = decide_all(&v, random_kid_tokens(&ec, server.base(), 1000)).await;
    assert!(verdicts.iter().all(|d| matches!(d, Verdict::Deny(_))));
    // Warm: keys are loaded and the refetch window is closed.
    assert_allowed(&v, &ec.sign(&claims(server.base()))).await;
    let verdicts = decide_all(&v, random_kid_tokens(&ec, server.base(), 1000)).await;
    assert!(
        verdicts
            .iter()
            .all(|d| matches!(d, Verdict::Deny(d) if d.code_str() == "invalid_token"))
    );
    assert!(
        server.jwks_hits() <= 2,
        "expected: at most 2 fetches\ngot: {}",
        server.jwks_hits()
    );
    assert_eq!(v.fetch_stats().attempts as usize, server.jwks_hits());
}

#[tokio::test]
async fn concurrent_first_requests_share_one_fetch() {
    let ec = es256("k");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let v = Arc::new(validator(
        &server,
        json!({ "min_refetch_interval_secs": 0 }),
    ));
    let tokens = (0..50).map(|_| ec.sign(&claims(server.base()))).collect();
    let verdicts = decide_all(&v, tokens).await;
    assert!(verdicts.iter().all(|d| matches!(d, Verdict::Allow(_))));
    assert_eq!(server.jwks_hits(), 1);
}

#[tokio::test]
async fn jwks_server_down_keeps_last_good_keys() {
    let (ec, next) = (es256("k1"), es256("k2"));
    let server = JwksServer::start(jwks(&[&ec])).await;
    let v = validator(&server, json!({ "min_refetch_interval_secs": 0 }));
    assert_allowed(&v, &ec.sign(&claims(server.base()))).await;
    for mode in [Mode::Error, Mode::Close] {
        server.set_mode(mode);
        let err = v.refresh_keys().await.expect_err("server is down");
        assert!(
            !matches!(err, JwksFetchError::RateLimited),
            "{mode:?}: {err}"
        );
        assert_allowed(&v, &ec.sign(&claims(server.base()))).await;
        // A key we have never seen may exist: refuse as an outage, not as a bad token.
        let d = denied(&v, &next.sign(&claims(server.base()))).await;
        assert_eq!(d.kind, DenialKind::Unavailable, "{mode:?}");
    }
    let stats = v.fetch_stats();
    assert_eq!((stats.successes, stats.failures), (1, 4));
    server.set_jwks(jwks(&[&ec, &next]));
    server.set_mode(Mode::Up);
    assert_allowed(&v, &next.sign(&claims(server.base()))).await;
}

#[tokio::test]
async fn unreachable_jwks_on_first_use_fails_closed() {
    let ec = es256("k");
    let server = JwksServer::start(jwks(&[&ec])).await;
    server.set_mode(Mode::Error);
    let v = validator(&server, json!({}));
    let d = denied(&v, &ec.sign(&claims(server.base()))).await;
    assert_eq!(
        (d.kind, d.code_str()),
        (DenialKind::Unavailable, "temporarily_unavailable")
    );
    // Inside the refetch window the IdP is not asked again.
    let _ = denied(&v, &ec.sign(&claims(server.base()))).await;
    assert_eq!(server.jwks_hits(), 1);
}

#[tokio::test]
async fn slow_jwks_endpoint_times_out_and_fails_closed() {
    let ec = es256("k");
    let server = JwksServer::start(jwks(&[&ec])).await;
    server.set_mode(Mode::Hang);
    let v = validator(&server, json!({ "fetch_timeout_secs": 1 }));
    let started = Instant::now();
    let d = denied(&v, &ec.sign(&claims(server.base()))).await;
    assert_eq!(d.kind, DenialKind::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn oversized_jwks_is_refused_and_last_good_keys_kept() {
    let ec = es256("k");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let v = validator(&server, json!({}));
    assert_allowed(&v, &ec.sign(&claims(server.base()))).await;
    let padded = json!({ "keys": [ec.jwk], "padding": "x".repeat(1024 * 1024) });
    server.set_jwks(padded.to_string());
    let err = v.refresh_keys().await.expect_err("too large");
    assert!(matches!(err, JwksFetchError::TooLarge { .. }), "{err}");
    assert_allowed(&v, &ec.sign(&claims(server.base()))).await;
}

#[tokio::test]
async fn oidc_discovery_finds_the_jwks_and_validates_tokens() {
    let rsa = rs256("rsa-1");
    let server = JwksServer::start(jwks(&[&rsa])).await;
    let v = validator(&server, json!({ "discovery": true }));
    assert_allowed(&v, &rsa.sign(&claims(server.base()))).await;
    assert_allowed(&v, &rsa.sign(&claims(server.base()))).await;
    assert_eq!((server.discovery_hits(), server.jwks_hits()), (1, 1));
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let ec = es256("k");
    let server = JwksServer::start(jwks(&[&ec])).await;
    server.set_discovery_issuer("https://impostor.example.com");
    let v = validator(&server, json!({ "discovery": true }));
    let err = v.refresh_keys().await.expect_err("issuer mismatch");
    assert!(matches!(err, JwksFetchError::Discovery { .. }), "{err}");
    assert_eq!(server.jwks_hits(), 0);
    let d = denied(&v, &ec.sign(&claims(server.base()))).await;
    assert_eq!(d.kind, DenialKind::Unavailable);
}

#[tokio::test]
async fn refresh_keys_warms_the_cache_before_the_first_request() {
    let ec = es256("k");
    let server = JwksServer::start(jwks(&[&ec])).await;
    let v = validator(&server, json!({}));
    assert_eq!(v.refresh_keys().await.expect("fetch"), 1);
    assert_allowed(&v, &ec.sign(&claims(server.base()))).await;
    assert_eq!(server.jwks_hits(), 1);
}

#[tokio::test]
async fn no_store_cache_control_still_caches_keys_for_the_floor() {
    let ec = es256("k");
    let server = JwksServer::start(jwks(&[&ec])).await;
    server.set_cache_control("no-store, max-age=0");
    let v = validator(&server, json!({}));
    for _ in 0..5 {
        assert_allowed(&v, &ec.sign(&claims(server.base()))).await;
    }
    assert_eq!(
        server.jwks_hits(),
        1,
        "an IdP saying no-store must not cost a fetch per request"
    );
}
