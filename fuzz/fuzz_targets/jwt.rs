//! JWT validation (`portcullis::engine::jwt::JwtValidator`) with one RS256 key configured
//! inline: no network, a fixed clock.
//!
//! The input is either a whole token (any bytes that are UTF-8), or, after a leading `!`, an
//! edit of the one valid token: members of its header or payload JSON set or removed, its
//! signature replaced, truncated or bit-flipped, any segment swapped for raw text, text
//! appended.
//!
//! Invariants: nothing panics; the validator never waits on anything (the keys are static);
//! and nothing but the original valid token is ever allowed: the private key was thrown
//! away after signing it, and RS256 (PKCS #1 v1.5) has exactly one valid signature per
//! message, so any other allowed token would be a forgery. (The corpus's other tokens
//! signed with that key each fail a claim check; those named `foreign_key_*` are signed
//! with a second throwaway key the validator does not know.)

#![no_main]

use std::future::Future;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use portcullis::engine::jwt::{JwtSettings, JwtValidator};
use portcullis::verdict::Verdict;
use serde_json::{Map, Value, json};

/// The public half of a throwaway RSA key; the private half no longer exists.
const JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"fuzz-rs256","use":"sig","alg":"RS256","n":"0oTzgSZsgLXwnijNmnHIH1gVLNugPJYhWOBky4OEPEnF2A0D_I_ZDnbldOVAwua79K2JuWsshXXORUKkLjLVg7HKwEDonTYmL_PvFdJtXvysIePqKoR-92rvvgLm-uPD2ic2qSpoqUEV_qoAgr34r_HMSJxC7bL4PBRrCzh3kld0GAHmrPExQFabLzl0zemUzmmKuu91Jct6TzBkkTJ-m3U9mj-hAhTLWrpvfCVt1ZjxzIZ7K1eguvAlXxhyqKD5ruQQQVmUotk77yGoKxQ51lOHIMG3-nW4Td5pOO0SARz3-ZdnegiczKTi5AqyRfnDUFlapdMQLf5oi94QK3h2ZQ","e":"AQAB"}]}"#;

/// The one token that must be allowed: `kid` `fuzz-rs256`, issuer and audience below, valid
/// from `NOW - 60` to `NOW + 300`.
const VALID: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZ1enotcnMyNTYiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJodHRwczovL21jcC5leGFtcGxlLmNvbS9tY3AiLCJlbWFpbCI6InVAZXhhbXBsZS5jb20iLCJleHAiOjE5MDAwMDAzMDAsImlzcyI6Imh0dHBzOi8vYXV0aC5leGFtcGxlLmNvbSIsIm5iZiI6MTg5OTk5OTk0MCwic2NvcGUiOiJtY3A6cmVhZCBtY3A6d3JpdGUiLCJzdWIiOiJ1c2VyLTEifQ.FgoGnkj9tBS049qu9-DP5kMf87mjInD5h78e60FQX-Boj0GhMAKU4g3C8_V8PaZq6iVDswgjh-8GSjr4HdjdyexhqUjHroH1omhj2kuBcnpEjd3tNtFz96pG6huyCvia5K1PwLAHoagdpDn8KB4Nnj-eePLRGEmT3GRAdfGCEkdsJFtm46s1eRx3W-WekvQhp-WeDTduelk0CXQFEZ4JRAVKsDhVPGTIMiU2oPbUn37w-iGJtrOu-9PetuACLcVjY1wLGOWCD6tc1S67NJ6IHM6BTxe-tlAsd_2tMR-i9qXPq1x6DIjfEEegm5owg65rHEwMsWlTdIBASnO8XgmEuw";

const NOW: u64 = 1_900_000_000;

static VALIDATOR: LazyLock<JwtValidator> = LazyLock::new(|| {
    let settings: JwtSettings = serde_json::from_value(json!({
        "issuer": "https://auth.example.com",
        "audience": "https://mcp.example.com/mcp",
        "jwks": JWKS,
        "claims": ["email"],
    }))
    .expect("settings");
    let validator = JwtValidator::new("fuzz-jwt", settings).expect("validator");
    assert!(
        matches!(check(&validator, VALID), Verdict::Allow(_)),
        "the valid token must be allowed, or this target tests nothing"
    );
    validator
});

/// Runs `check_token` to completion without a runtime: with a static key set it never
/// waits, and if it ever did that would be a finding too.
fn check(validator: &JwtValidator, token: &str) -> Verdict {
    let mut future = std::pin::pin!(validator.check_token(token, NOW));
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(verdict) => verdict,
        Poll::Pending => panic!("a static key set made the validator wait"),
    }
}

#[derive(Arbitrary, Debug)]
struct Edit<'a> {
    header: Vec<(Key<'a>, Val<'a>)>,
    payload: Vec<(Key<'a>, Val<'a>)>,
    header_raw: Option<&'a str>,
    payload_raw: Option<&'a str>,
    signature: Signature<'a>,
    suffix: &'a str,
}

/// Header and claim names the validator reads, so the fuzzer need not guess them.
#[derive(Arbitrary, Debug)]
enum Key<'a> {
    Alg,
    Kid,
    Typ,
    Crit,
    Jku,
    Jwk,
    Iss,
    Aud,
    Exp,
    Nbf,
    Sub,
    Scope,
    Scp,
    Other(&'a str),
}

#[derive(Arbitrary, Debug)]
enum Val<'a> {
    Remove,
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    List(Vec<&'a str>),
    Object,
}

#[derive(Arbitrary, Debug)]
enum Signature<'a> {
    Keep,
    Bytes(&'a [u8]),
    Truncate(u16),
    Flip { at: u16, bit: u8 },
    Raw(&'a str),
}

fuzz_target!(|data: &[u8]| {
    let validator = &*VALIDATOR;
    let token = match data.strip_prefix(b"!") {
        Some(rest) => match Edit::arbitrary_take_rest(Unstructured::new(rest)) {
            Ok(edit) => edited(&edit),
            Err(_) => return,
        },
        None => match std::str::from_utf8(data) {
            Ok(token) => token.to_owned(),
            Err(_) => return,
        },
    };
    let verdict = check(validator, &token);
    if let Verdict::Allow(identity) = &verdict {
        assert_eq!(token, VALID, "a token other than the valid one was allowed");
        assert_eq!(identity.subject, "user-1");
    }
});

/// The valid token with `edit` applied.
fn edited(edit: &Edit<'_>) -> String {
    let mut parts = VALID.split('.');
    let (header, payload, signature) = (
        parts.next().expect("header"),
        parts.next().expect("payload"),
        parts.next().expect("signature"),
    );
    let header = segment(header, &edit.header, edit.header_raw);
    let payload = segment(payload, &edit.payload, edit.payload_raw);
    let signature = match &edit.signature {
        Signature::Keep => signature.to_owned(),
        Signature::Bytes(bytes) => URL_SAFE_NO_PAD.encode(bytes),
        Signature::Truncate(len) => signature[..usize::from(*len).min(signature.len())].to_owned(),
        Signature::Flip { at, bit } => {
            let mut bytes = URL_SAFE_NO_PAD.decode(signature).expect("signature");
            let at = usize::from(*at) % bytes.len();
            bytes[at] ^= 1 << (bit % 8);
            URL_SAFE_NO_PAD.encode(bytes)
        }
        Signature::Raw(text) => (*text).to_owned(),
    };
    format!("{header}.{payload}.{signature}{}", edit.suffix)
}

/// One JSON segment: kept byte for byte when there is nothing to change, else decoded,
/// edited and re-encoded; `raw` replaces it outright.
fn segment(original: &str, edits: &[(Key<'_>, Val<'_>)], raw: Option<&str>) -> String {
    if let Some(raw) = raw {
        return raw.to_owned();
    }
    if edits.is_empty() {
        return original.to_owned();
    }
    let bytes = URL_SAFE_NO_PAD.decode(original).expect("segment");
    let mut object: Map<String, Value> = serde_json::from_slice(&bytes).expect("json");
    for (key, val) in edits {
        let key = match key {
            Key::Alg => "alg",
            Key::Kid => "kid",
            Key::Typ => "typ",
            Key::Crit => "crit",
            Key::Jku => "jku",
            Key::Jwk => "jwk",
            Key::Iss => "iss",
            Key::Aud => "aud",
            Key::Exp => "exp",
            Key::Nbf => "nbf",
            Key::Sub => "sub",
            Key::Scope => "scope",
            Key::Scp => "scp",
            Key::Other(name) => name,
        };
        let value = match val {
            Val::Remove => {
                object.remove(key);
                continue;
            }
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(n) => json!(n),
            Val::Float(f) => json!(f),
            Val::Str(s) => json!(s),
            Val::List(items) => json!(items),
            Val::Object => json!({}),
        };
        object.insert(key.to_owned(), value);
    }
    URL_SAFE_NO_PAD.encode(Value::Object(object).to_string())
}
