//! The JWT attack corpus, through the real gateway on port 0: two issuers, each a `jwt`
//! provider reading its keys from its own JWKS server over HTTP, in front of a
//! [`RecordingUpstream`] that counts what gets through. Every attack must be refused and
//! must never reach the upstream; valid tokens (the controls) must be let in, so the corpus
//! cannot pass by refusing everything.
//!
//! What "refused" means, case by case:
//! - a token that is presented and not accepted — bad signature, wrong algorithm, bad
//!   claims, not a JWT at all, another issuer's: 401 with
//!   `WWW-Authenticate: Bearer error="invalid_token", …, resource_metadata="…"`;
//! - a credential header that cannot be read (empty token, a space inside): 400
//!   `invalid_request` with its challenge (RFC 6750 §3.1);
//! - a token too large for the request head (over the gateway's 32 KiB head limit): 431
//!   before any parsing (or the connection reset while the client is still sending), the
//!   way nginx and Envoy refuse oversized headers. Tokens over the validator's own 16 KiB
//!   limit but inside the head limit get the 401.
//!
//! Every reply is also checked for the token and its signature: a refusal never echoes
//! them. The counts of cases per category are printed (`--nocapture`) and asserted.

mod corpus;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use self::corpus::{Case, Refusal, corpus};
use crate::gateway_harness::{
    Harness, RawReply, RecordingUpstream, TestConfig, raw_request, start_with_upstream,
};
use crate::jwt::keys::{Signer, es256, jwks, rs256};
use crate::jwt::server::JwksServer;

/// `/api` through two issuers' JWT providers, each for this gateway's `/api`.
fn config(a: &JwksServer, b: &JwksServer) -> TestConfig {
    TestConfig::new()
        .http_route("/api", &["issuer-a", "issuer-b"])
        .jwt("issuer-a", a.base(), &a.jwks_url())
        .with(r#"audience = "{gateway}/api""#)
        .jwt("issuer-b", b.base(), &b.jwks_url())
        .with(r#"audience = "{gateway}/api""#)
}

/// The world the corpus runs in.
struct World {
    h: Harness,
    upstream: RecordingUpstream,
    attacker: JwksServer,
    a_rsa: Signer,
    a_ec: Signer,
    b_ec: Signer,
    evil: Signer,
    iss_a: String,
    iss_b: String,
    aud: String,
    // Held so that the key servers live as long as the gateway.
    _servers: (JwksServer, JwksServer),
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

async fn world() -> World {
    let (a_rsa, a_ec, b_ec, evil) = (rs256("a-rsa"), es256("a-ec"), es256("b-ec"), es256("evil"));
    let server_a = JwksServer::start(jwks(&[&a_rsa, &a_ec])).await;
    let server_b = JwksServer::start(jwks(&[&b_ec])).await;
    let attacker = JwksServer::start(jwks(&[&evil])).await;
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(config(&server_a, &server_b), &upstream.url).await;
    World {
        aud: format!("{}/api", h.base),
        iss_a: server_a.base().to_owned(),
        iss_b: server_b.base().to_owned(),
        h,
        upstream,
        attacker,
        a_rsa,
        a_ec,
        b_ec,
        evil,
        _servers: (server_a, server_b),
    }
}

impl World {
    /// Claims that issuer A would sign for this resource.
    fn claims(&self) -> Value {
        json!({
            "iss": self.iss_a, "aud": self.aud, "sub": "alice", "scope": "mcp:read",
            "iat": now(), "exp": now() + 300,
        })
    }

    /// The valid claims with `changes` applied (`null` removes a claim).
    fn claims_with(&self, changes: Value) -> Value {
        let mut claims = self.claims();
        for (k, v) in changes.as_object().expect("object") {
            if v.is_null() {
                claims.as_object_mut().expect("object").remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    }

    /// The JSON text of the valid claims, for hand-made (duplicate-key) variants.
    fn claims_text_with(&self, extra_members: &str) -> String {
        let text = self.claims().to_string();
        format!("{}{extra_members}}}", &text[..text.len() - 1])
    }
}

/// Sends `token` as `Authorization: Bearer …` to `/api/data`; the status and whole text.
async fn send(w: &World, token: &str) -> (u16, String) {
    let request = format!(
        "GET /api/data HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
        w.h.addr
    );
    match raw_request(w.h.addr, request.into_bytes()).await {
        RawReply::Answered { status, text } => (status, text),
        RawReply::Closed(why) => (0, why),
    }
}

/// Why `reply` does not match `refusal`, if it does not.
fn mismatch(w: &World, case: &Case, status: u16, text: &str) -> Option<String> {
    let challenge = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("www-authenticate:")
                .then(|| l["www-authenticate:".len()..].trim().to_owned())
        })
        .unwrap_or_default();
    let metadata = format!(
        "resource_metadata=\"{}/.well-known/oauth-protected-resource/api\"",
        w.h.base
    );
    let problem = match case.refusal {
        Refusal::InvalidToken if status != 401 => format!("status {status}, expected 401"),
        Refusal::InvalidToken if !challenge.starts_with("Bearer error=\"invalid_token\"") => {
            format!("challenge `{challenge}`, expected invalid_token")
        }
        Refusal::InvalidRequest if status != 400 => format!("status {status}, expected 400"),
        Refusal::InvalidRequest if !challenge.starts_with("Bearer error=\"invalid_request\"") => {
            format!("challenge `{challenge}`, expected invalid_request")
        }
        Refusal::InvalidToken | Refusal::InvalidRequest if !challenge.contains(&metadata) => {
            format!("challenge `{challenge}` lacks {metadata}")
        }
        Refusal::HeadTooLarge if status != 431 && status != 0 => {
            format!("status {status}, expected 431 or a reset")
        }
        _ => String::new(),
    };
    if !problem.is_empty() {
        return Some(problem);
    }
    let signature = case.token.rsplit('.').next().unwrap_or("");
    for secret in [case.token.as_str(), signature] {
        if secret.len() >= 16 && text.contains(secret) {
            return Some("the reply echoes the token".into());
        }
    }
    None
}

#[tokio::test]
async fn jwt_attack_corpus_is_refused_with_401_and_never_reaches_the_upstream() {
    let w = world().await;

    // Controls: what the corpus perturbs is let in, so a refusal below is about the attack.
    let controls = [
        ("ES256 from issuer A", w.a_ec.sign(&w.claims())),
        ("RS256 from issuer A", w.a_rsa.sign(&w.claims())),
        (
            "ES256 from issuer B",
            w.b_ec.sign(&json!({
                "iss": w.iss_b, "aud": w.aud, "sub": "bob", "exp": now() + 300,
            })),
        ),
        (
            "aud array with ours",
            w.a_ec
                .sign(&w.claims_with(json!({ "aud": ["https://x.example", w.aud] }))),
        ),
    ];
    for (i, (name, token)) in controls.iter().enumerate() {
        let (status, text) = send(&w, token).await;
        assert_eq!(status, 200, "control `{name}` must be allowed: {text}");
        assert_eq!(
            w.upstream.hits(),
            i + 1,
            "control `{name}` reaches the upstream"
        );
        let seen = w.upstream.seen().pop().expect("recorded");
        assert!(
            seen.headers.get("authorization").is_none(),
            "the token reached the upstream"
        );
        assert!(
            seen.headers.get("x-portcullis-subject").is_some(),
            "{seen:?}"
        );
    }

    let cases = corpus(&w);
    let mut tried: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut allowed_by_mistake = 0;
    for case in &cases {
        *tried.entry(case.category).or_default() += 1;
        let before = w.upstream.hits();
        let (status, text) = send(&w, &case.token).await;
        if (200..300).contains(&status) || w.upstream.hits() != before {
            allowed_by_mistake += 1;
        }
        if w.upstream.hits() != before {
            failures.push(format!(
                "[{}] {}: reached the upstream",
                case.category, case.name
            ));
        } else if let Some(problem) = mismatch(&w, case, status, &text) {
            failures.push(format!("[{}] {}: {problem}", case.category, case.name));
        }
    }
    for (category, n) in &tried {
        println!("jwt corpus: {category}: {n} cases");
    }
    println!(
        "jwt corpus: {} attack cases, {} controls, {allowed_by_mistake} allowed by mistake",
        cases.len(),
        controls.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(allowed_by_mistake, 0);
    assert!(cases.len() >= 100, "the corpus shrank to {}", cases.len());
    assert_eq!(
        w.attacker.jwks_hits(),
        0,
        "a token made the gateway fetch the attacker's keys"
    );
    assert_eq!(w.attacker.discovery_hits(), 0);

    // Still serving after the corpus: nothing crashed or wedged.
    let (status, _) = send(&w, &controls[0].1).await;
    assert_eq!(
        status, 200,
        "the gateway still serves valid tokens after the corpus"
    );
}
