//! The corpus itself: each attack a named, categorised token with the refusal it must get.
//! Tokens are made here with the test binary's keys; nothing is read from disk.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{Value, json};

use super::{World, now};
use crate::jwt::keys::{rsa_public, sign_raw};

/// How an attack must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// 401 `invalid_token`.
    InvalidToken,
    /// 400 `invalid_request`.
    InvalidRequest,
    /// 431, or the connection reset before the head was read.
    HeadTooLarge,
}

pub(super) struct Case {
    pub category: &'static str,
    pub name: String,
    pub token: String,
    pub refusal: Refusal,
}

/// `header.payload.signature` over already-encoded segments, signed with `key` as `alg`.
fn sign_segments(key: &EncodingKey, alg: Algorithm, header: &str, payload: &str) -> String {
    let input = format!("{header}.{payload}");
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).expect("sign");
    format!("{input}.{sig}")
}

fn b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

/// A P-256 public key as SubjectPublicKeyInfo DER, rebuilt from its JWK.
fn ec_spki_der(jwk: &Value) -> Vec<u8> {
    const P256_SPKI_PREFIX: [u8; 27] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
    ];
    let coordinate = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(jwk[name].as_str().expect("coordinate"))
            .expect("base64url")
    };
    [
        P256_SPKI_PREFIX.as_slice(),
        &coordinate("x"),
        &coordinate("y"),
    ]
    .concat()
}

/// `json` in padded base64url, with spaces added until the encoding needs `=`.
fn padded(json: &str) -> String {
    let mut text = json.to_owned();
    while text.len().is_multiple_of(3) {
        text.push(' ');
    }
    let encoded = URL_SAFE.encode(&text);
    assert!(encoded.ends_with('='), "{encoded}");
    encoded
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

pub(super) fn corpus(w: &World) -> Vec<Case> {
    use Refusal::{HeadTooLarge, InvalidRequest, InvalidToken};
    let mut cases = Vec::new();
    let mut add = |category: &'static str, name: &str, token: String, refusal: Refusal| {
        cases.push(Case {
            category,
            name: name.to_owned(),
            token,
            refusal,
        });
    };
    let good = w.a_ec.sign(&w.claims());
    let good_sig = good.rsplit('.').next().expect("signature").to_owned();
    let valid_payload = b64(&w.claims().to_string());

    // alg: none, every casing, with and without a signature.
    for casing in ["none", "None", "NONE", "nOnE"] {
        let header = b64(&json!({ "alg": casing, "typ": "JWT" }).to_string());
        add(
            "alg none",
            &format!("alg `{casing}`, empty signature"),
            format!("{header}.{valid_payload}."),
            InvalidToken,
        );
        add(
            "alg none",
            &format!("alg `{casing}`, a real ES256 signature"),
            format!("{header}.{valid_payload}.{good_sig}"),
            InvalidToken,
        );
        add(
            "alg none",
            &format!("alg `{casing}`, no signature segment"),
            format!("{header}.{valid_payload}"),
            InvalidToken,
        );
    }

    // HMAC signed with a public key, as bytes a confused verifier might use as the secret.
    let rsa = rsa_public();
    let ec_der = ec_spki_der(&w.a_ec.jwk);
    let public_keys: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "RSA PKCS#1 PEM",
            "a-rsa",
            rsa.to_pkcs1_pem(LineEnding::LF).expect("pem").into_bytes(),
        ),
        (
            "RSA SPKI PEM",
            "a-rsa",
            rsa.to_public_key_pem(LineEnding::LF)
                .expect("pem")
                .into_bytes(),
        ),
        (
            "RSA PKCS#1 DER",
            "a-rsa",
            rsa.to_pkcs1_der().expect("der").as_bytes().to_vec(),
        ),
        (
            "RSA SPKI DER",
            "a-rsa",
            rsa.to_public_key_der().expect("der").as_bytes().to_vec(),
        ),
        (
            "EC SPKI PEM",
            "a-ec",
            pem("PUBLIC KEY", &ec_der).into_bytes(),
        ),
        ("EC SPKI DER", "a-ec", ec_der.clone()),
        (
            "RSA JWK JSON",
            "a-rsa",
            w.a_rsa.jwk.to_string().into_bytes(),
        ),
    ];
    for (alg, name) in [
        (Algorithm::HS256, "HS256"),
        (Algorithm::HS384, "HS384"),
        (Algorithm::HS512, "HS512"),
    ] {
        for (what, kid, secret) in &public_keys {
            let header = json!({ "alg": name, "kid": kid, "typ": "JWT" });
            let token = sign_raw(&EncodingKey::from_secret(secret), alg, &header, &w.claims());
            add(
                "key confusion",
                &format!("{name} keyed with the {what} public key"),
                token,
                InvalidToken,
            );
        }
    }
    let header = json!({ "alg": "RS256", "kid": "a-ec" });
    add(
        "key confusion",
        "RS256 naming the EC key's kid",
        sign_raw(&w.a_rsa.key, Algorithm::RS256, &header, &w.claims()),
        InvalidToken,
    );
    let header = json!({ "alg": "ES256", "kid": "a-rsa" });
    add(
        "key confusion",
        "ES256 naming the RSA key's kid",
        sign_raw(&w.a_ec.key, Algorithm::ES256, &header, &w.claims()),
        InvalidToken,
    );
    let header = json!({ "alg": "ES999", "kid": "a-ec" });
    add(
        "key confusion",
        "unknown alg `ES999`",
        sign_segments(
            &w.a_ec.key,
            Algorithm::ES256,
            &b64(&header.to_string()),
            &valid_payload,
        ),
        InvalidToken,
    );
    let header = json!({ "alg": 256, "kid": "a-ec" });
    add(
        "key confusion",
        "alg is a number",
        sign_segments(
            &w.a_ec.key,
            Algorithm::ES256,
            &b64(&header.to_string()),
            &valid_payload,
        ),
        InvalidToken,
    );

    // Keys of the other issuer, or of nobody.
    add(
        "kid/issuer",
        "iss A, kid of issuer B's key, signed by B",
        w.b_ec
            .sign_raw(&json!({ "alg": "ES256", "kid": "b-ec" }), &w.claims()),
        InvalidToken,
    );
    add(
        "kid/issuer",
        "iss A, no kid, signed by B",
        w.b_ec.sign_raw(&json!({ "alg": "ES256" }), &w.claims()),
        InvalidToken,
    );
    let for_b = w.claims_with(json!({ "iss": w.iss_b }));
    add(
        "kid/issuer",
        "iss B, kid of issuer A's key, signed by A",
        w.a_ec.sign(&for_b),
        InvalidToken,
    );
    add(
        "kid/issuer",
        "kid is a path traversal",
        w.a_ec.sign_raw(
            &json!({ "alg": "ES256", "kid": "../../../../dev/null" }),
            &w.claims(),
        ),
        InvalidToken,
    );
    add(
        "kid/issuer",
        "unknown kid signed by an attacker",
        w.evil.sign(&w.claims()),
        InvalidToken,
    );

    // Keys offered by the token itself must never be fetched or used.
    let jku = w.attacker.jwks_url();
    add(
        "token-supplied keys",
        "jku at the attacker's JWKS",
        w.evil.sign_raw(
            &json!({ "alg": "ES256", "kid": "evil", "jku": jku }),
            &w.claims(),
        ),
        InvalidToken,
    );
    add(
        "token-supplied keys",
        "x5u at the attacker's server",
        w.evil.sign_raw(
            &json!({ "alg": "ES256", "kid": "evil", "x5u": jku }),
            &w.claims(),
        ),
        InvalidToken,
    );
    add(
        "token-supplied keys",
        "jku with a trusted kid",
        w.evil.sign_raw(
            &json!({ "alg": "ES256", "kid": "a-ec", "jku": jku }),
            &w.claims(),
        ),
        InvalidToken,
    );
    add(
        "token-supplied keys",
        "embedded jwk",
        w.evil
            .sign_raw(&json!({ "alg": "ES256", "jwk": w.evil.jwk }), &w.claims()),
        InvalidToken,
    );

    // crit
    add(
        "crit",
        "crit naming exp",
        w.a_ec.sign_raw(
            &json!({ "alg": "ES256", "kid": "a-ec", "crit": ["exp"], "exp": now() + 300 }),
            &w.claims(),
        ),
        InvalidToken,
    );
    add(
        "crit",
        "empty crit",
        w.a_ec.sign_raw(
            &json!({ "alg": "ES256", "kid": "a-ec", "crit": [] }),
            &w.claims(),
        ),
        InvalidToken,
    );
    add(
        "crit",
        "crit with b64 false",
        w.a_ec.sign_raw(
            &json!({ "alg": "ES256", "kid": "a-ec", "crit": ["b64"], "b64": false }),
            &w.claims(),
        ),
        InvalidToken,
    );

    // Claims, validly signed by issuer A.
    let signed = |changes: Value| w.a_ec.sign(&w.claims_with(changes));
    add(
        "claims",
        "expired an hour ago",
        signed(json!({ "exp": now() - 3600 })),
        InvalidToken,
    );
    add(
        "claims",
        "expired beyond the 30 s leeway",
        signed(json!({ "exp": now() - 60 })),
        InvalidToken,
    );
    add(
        "claims",
        "not valid for an hour (nbf)",
        signed(json!({ "nbf": now() + 3600 })),
        InvalidToken,
    );
    add(
        "claims",
        "no exp",
        signed(json!({ "exp": null })),
        InvalidToken,
    );
    add(
        "claims",
        "exp is a string",
        signed(json!({ "exp": (now() + 300).to_string() })),
        InvalidToken,
    );
    add(
        "claims",
        "wrong iss",
        signed(json!({ "iss": "https://evil.example" })),
        InvalidToken,
    );
    add(
        "claims",
        "iss with a trailing slash",
        signed(json!({ "iss": format!("{}/", w.iss_a) })),
        InvalidToken,
    );
    add(
        "claims",
        "no iss",
        signed(json!({ "iss": null })),
        InvalidToken,
    );
    add(
        "claims",
        "wrong aud",
        signed(json!({ "aud": "https://other.example/api" })),
        InvalidToken,
    );
    add(
        "claims",
        "aud is the gateway, not the resource",
        signed(json!({ "aud": w.h.base })),
        InvalidToken,
    );
    add(
        "claims",
        "aud array without ours",
        signed(json!({ "aud": ["https://a.example", "https://b.example"] })),
        InvalidToken,
    );
    add(
        "claims",
        "empty aud array",
        signed(json!({ "aud": [] })),
        InvalidToken,
    );
    add(
        "claims",
        "no aud",
        signed(json!({ "aud": null })),
        InvalidToken,
    );
    add(
        "claims",
        "no sub",
        signed(json!({ "sub": null })),
        InvalidToken,
    );

    // Size.
    add(
        "oversized",
        "20 KB payload (over the 16 KiB token limit)",
        signed(json!({ "pad": "x".repeat(20_000) })),
        InvalidToken,
    );
    add(
        "oversized",
        "20 KB header",
        w.a_ec.sign_raw(
            &json!({ "alg": "ES256", "kid": "a-ec", "pad": "x".repeat(20_000) }),
            &w.claims(),
        ),
        InvalidToken,
    );
    add(
        "oversized",
        "100 KB payload",
        signed(json!({ "pad": "x".repeat(100_000) })),
        HeadTooLarge,
    );
    add(
        "oversized",
        "100 KB header",
        w.a_ec.sign_raw(
            &json!({ "alg": "ES256", "kid": "a-ec", "pad": "x".repeat(100_000) }),
            &w.claims(),
        ),
        HeadTooLarge,
    );
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    // Nesting in a claim nobody reads is skipped without recursion (an issuer may sign such
    // a token and it is then valid); forged ones must still fail on the signature, not on
    // the stack.
    add(
        "oversized",
        "forged payload nested 5000 deep",
        sign_segments(
            &w.evil.key,
            Algorithm::ES256,
            &b64(&json!({ "alg": "ES256", "kid": "a-ec" }).to_string()),
            &b64(&w.claims_text_with(&format!(",\"deep\":{deep}"))),
        ),
        InvalidToken,
    );
    add(
        "oversized",
        "forged header nested 5000 deep",
        sign_segments(
            &w.evil.key,
            Algorithm::ES256,
            &b64(&format!(r#"{{"alg":"ES256","kid":"a-ec","deep":{deep}}}"#)),
            &b64(&w.claims().to_string()),
        ),
        InvalidToken,
    );

    // Encoding.
    let header_json = json!({ "alg": "ES256", "kid": "a-ec" }).to_string();
    let claims_json = w.claims().to_string();
    let [good_h, good_p, good_s]: [&str; 3] = good
        .split('.')
        .collect::<Vec<_>>()
        .try_into()
        .expect("three segments");
    add(
        "base64",
        "padded header (`=`)",
        sign_segments(
            &w.a_ec.key,
            Algorithm::ES256,
            &padded(&header_json),
            &valid_payload,
        ),
        InvalidToken,
    );
    add(
        "base64",
        "padded payload (`=`)",
        sign_segments(&w.a_ec.key, Algorithm::ES256, good_h, &padded(&claims_json)),
        InvalidToken,
    );
    add(
        "base64",
        "padded signature (`==`)",
        format!("{good}=="),
        InvalidToken,
    );
    // A claim chosen so that standard and url-safe base64 differ (`+`, `/`).
    let odd = w.claims_text_with(",\"x\":\"???>>>\"");
    assert_ne!(
        STANDARD_NO_PAD.encode(&odd),
        URL_SAFE_NO_PAD.encode(&odd),
        "the claim must need `+` or `/`"
    );
    add(
        "base64",
        "payload in standard base64 (`+`, `/`), signed as sent",
        sign_segments(
            &w.a_ec.key,
            Algorithm::ES256,
            good_h,
            &STANDARD_NO_PAD.encode(&odd),
        ),
        InvalidToken,
    );
    add(
        "base64",
        "signature in standard base64",
        format!(
            "{good_h}.{good_p}.{}",
            good_s.replace('-', "+").replace('_', "/") + "+/"
        ),
        InvalidToken,
    );
    add(
        "base64",
        "invalid character in the signature",
        format!("{good_h}.{good_p}.{}!", &good_s[..good_s.len() - 1]),
        InvalidToken,
    );
    add(
        "base64",
        "invalid character in the payload",
        format!("{good_h}.{}$.{good_s}", &good_p[..good_p.len() - 1]),
        InvalidToken,
    );
    add(
        "base64",
        "payload with one stray base64 character",
        sign_segments(
            &w.a_ec.key,
            Algorithm::ES256,
            good_h,
            &format!("{valid_payload}A"),
        ),
        InvalidToken,
    );

    // JSON.
    let a_ec_raw = |header: &str, payload: &str| {
        sign_segments(&w.a_ec.key, Algorithm::ES256, &b64(header), &b64(payload))
    };
    add(
        "json",
        "header is not JSON",
        a_ec_raw("not json", &claims_json),
        InvalidToken,
    );
    add(
        "json",
        "header is a JSON array",
        a_ec_raw(r#"["ES256"]"#, &claims_json),
        InvalidToken,
    );
    add(
        "json",
        "header is truncated",
        a_ec_raw(r#"{"alg":"ES256","kid":"a-ec""#, &claims_json),
        InvalidToken,
    );
    add(
        "json",
        "header has trailing garbage",
        a_ec_raw(&format!("{header_json}x"), &claims_json),
        InvalidToken,
    );
    add(
        "json",
        "header has no alg",
        a_ec_raw(r#"{"kid":"a-ec"}"#, &claims_json),
        InvalidToken,
    );
    add(
        "json",
        "payload is not JSON",
        a_ec_raw(&header_json, "not json"),
        InvalidToken,
    );
    add(
        "json",
        "payload is a JSON string",
        a_ec_raw(&header_json, r#""alice""#),
        InvalidToken,
    );
    add(
        "json",
        "payload has trailing garbage",
        a_ec_raw(&header_json, &format!("{claims_json}x")),
        InvalidToken,
    );
    add(
        "json",
        "payload is invalid UTF-8",
        sign_segments(
            &w.a_ec.key,
            Algorithm::ES256,
            &b64(&header_json),
            &URL_SAFE_NO_PAD.encode([b"{\"sub\":\"".as_slice(), &[0xff, 0xfe], b"\"}"].concat()),
        ),
        InvalidToken,
    );

    // Duplicate members: parsers disagree on which copy wins.
    add(
        "duplicate keys",
        "two alg (none, then ES256)",
        a_ec_raw(r#"{"alg":"none","kid":"a-ec","alg":"ES256"}"#, &claims_json),
        InvalidToken,
    );
    add(
        "duplicate keys",
        "two alg (ES256, then none)",
        a_ec_raw(r#"{"alg":"ES256","kid":"a-ec","alg":"none"}"#, &claims_json),
        InvalidToken,
    );
    add(
        "duplicate keys",
        "two alg (ES256, then HS256)",
        a_ec_raw(
            r#"{"alg":"ES256","kid":"a-ec","alg":"HS256"}"#,
            &claims_json,
        ),
        InvalidToken,
    );
    add(
        "duplicate keys",
        "two kid",
        a_ec_raw(r#"{"alg":"ES256","kid":"b-ec","kid":"a-ec"}"#, &claims_json),
        InvalidToken,
    );
    add(
        "duplicate keys",
        "two sub",
        a_ec_raw(&header_json, &w.claims_text_with(",\"sub\":\"admin\"")),
        InvalidToken,
    );
    add(
        "duplicate keys",
        "two exp (the second in the past)",
        a_ec_raw(
            &header_json,
            &w.claims_text_with(&format!(",\"exp\":{}", now() - 3600)),
        ),
        InvalidToken,
    );
    add(
        "duplicate keys",
        "two iss",
        a_ec_raw(
            &header_json,
            &w.claims_text_with(",\"iss\":\"https://evil.example\""),
        ),
        InvalidToken,
    );
    add(
        "duplicate keys",
        "two aud",
        a_ec_raw(
            &header_json,
            &w.claims_text_with(",\"aud\":\"https://other.example\""),
        ),
        InvalidToken,
    );
    add(
        "duplicate keys",
        "two scope",
        a_ec_raw(&header_json, &w.claims_text_with(",\"scope\":\"admin\"")),
        InvalidToken,
    );

    // Structure.
    add(
        "structure",
        "signature stripped (`a.b.`)",
        format!("{good_h}.{good_p}."),
        InvalidToken,
    );
    add(
        "structure",
        "signature segment removed (`a.b`)",
        format!("{good_h}.{good_p}"),
        InvalidToken,
    );
    let other = w
        .a_ec
        .sign(&w.claims_with(json!({ "sub": "mallory", "scope": "admin" })));
    let other_p = other.split('.').nth(1).expect("payload");
    add(
        "structure",
        "payload swapped between two valid tokens",
        format!("{good_h}.{other_p}.{good_s}"),
        InvalidToken,
    );
    let rsa_token = w.a_rsa.sign(&w.claims());
    let (rsa_h, rsa_s) = (
        rsa_token.split('.').next().expect("header"),
        rsa_token.rsplit('.').next().expect("signature"),
    );
    add(
        "structure",
        "RS256 header and signature around another payload",
        format!("{rsa_h}.{other_p}.{rsa_s}"),
        InvalidToken,
    );
    add(
        "structure",
        "extra fourth segment",
        format!("{good}.{good_s}"),
        InvalidToken,
    );
    add(
        "structure",
        "five segments (JWE shape)",
        format!("{good_h}.{good_p}.{good_s}.{good_s}.{good_s}"),
        InvalidToken,
    );
    add("structure", "leading dot", format!(".{good}"), InvalidToken);
    add("structure", "only dots", "..".to_owned(), InvalidToken);
    add(
        "structure",
        "a single segment",
        good_p.to_owned(),
        InvalidToken,
    );
    add("structure", "empty token", String::new(), InvalidRequest);
    add(
        "structure",
        "a space inside the token",
        format!("{good_h}.{good_p} .{good_s}"),
        InvalidRequest,
    );
    cases
}
