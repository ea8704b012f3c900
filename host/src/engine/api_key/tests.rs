use http::HeaderValue;

use super::*;
use crate::verdict::DenialKind;

const KEY: &str = "pk_live_4f9a7c1e2b";

fn settings(toml_keys: Vec<ApiKeyEntry>) -> ApiKeySettings {
    ApiKeySettings {
        header: None,
        scheme: None,
        keys: toml_keys,
        keys_file: None,
    }
}

fn entry(name: &str, plaintext: &str) -> ApiKeyEntry {
    ApiKeyEntry {
        name: name.into(),
        hash: Some(hash_key(plaintext)),
        key: None,
        scopes: vec!["mcp:read".into()],
        expires_at: None,
        revoked: false,
    }
}

fn bearer(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {value}")).expect("header value"),
    );
    h
}

fn validator(entries: Vec<ApiKeyEntry>) -> ApiKeyValidator {
    ApiKeyValidator::new("keys", settings(entries)).expect("valid settings")
}

#[test]
fn hash_key_prints_sha256_hex() {
    assert_eq!(
        hash_key("abc"),
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn right_key_is_allowed_with_name_and_scopes() {
    let v = validator(vec![entry("ci", KEY)]);
    let Verdict::Allow(id) = v.check(&bearer(KEY)) else {
        panic!("expected allow");
    };
    assert_eq!(id.subject, "ci");
    assert_eq!(id.scopes, vec!["mcp:read".to_owned()]);
    assert_eq!(id.claims, vec![("key_name".to_owned(), "ci".to_owned())]);
}

#[test]
fn unknown_key_is_denied_with_invalid_token() {
    let v = validator(vec![entry("ci", KEY)]);
    let Verdict::Deny(d) = v.check(&bearer("pk_live_other")) else {
        panic!("expected deny");
    };
    assert_eq!(d.code_str(), "invalid_token");
    assert!(!d.reason.contains("pk_live"), "{}", d.reason);
}

#[test]
fn missing_header_or_other_scheme_abstains() {
    let v = validator(vec![entry("ci", KEY)]);
    assert_eq!(v.check(&HeaderMap::new()), Verdict::Abstain);
    let mut h = HeaderMap::new();
    h.insert("authorization", HeaderValue::from_static("Basic dTpw"));
    assert_eq!(v.check(&h), Verdict::Abstain);
}

#[test]
fn malformed_bearer_is_a_bad_request() {
    let v = validator(vec![entry("ci", KEY)]);
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer  two spaces"),
    );
    let Verdict::Deny(d) = v.check(&h) else {
        panic!("expected deny");
    };
    assert_eq!(
        (d.kind, d.code_str()),
        (DenialKind::BadRequest, "invalid_request")
    );
}

#[test]
fn expired_key_is_denied_and_reason_says_expired() {
    let mut e = entry("ci", KEY);
    e.expires_at = Some("2030-01-01T00:00:00Z".into());
    let v = validator(vec![e]);
    let at = parse_rfc3339("2030-01-01T00:00:00Z").expect("timestamp");
    assert!(matches!(
        v.check_at(&bearer(KEY), at - 1),
        Verdict::Allow(_)
    ));
    let Verdict::Deny(d) = v.check_at(&bearer(KEY), at) else {
        panic!("expected deny at expiry");
    };
    assert_eq!(d.code_str(), "invalid_token");
    assert!(d.reason.contains("expired"), "{}", d.reason);
}

#[test]
fn expiry_honours_the_utc_offset() {
    assert_eq!(
        parse_rfc3339("2030-01-01T02:00:00+02:00"),
        parse_rfc3339("2030-01-01T00:00:00Z")
    );
    assert_eq!(parse_rfc3339("2030-01-01"), None);
    assert_eq!(parse_rfc3339("2030-01-01 00:00:00"), None);
}

#[test]
fn revoked_key_is_denied_as_revoked() {
    let mut e = entry("ci", KEY);
    e.revoked = true;
    let Verdict::Deny(d) = validator(vec![e]).check(&bearer(KEY)) else {
        panic!("expected deny");
    };
    assert!(d.reason.contains("revoked"), "{}", d.reason);
}

#[test]
fn uppercase_hex_hash_is_accepted() {
    let mut e = entry("ci", KEY);
    e.hash = Some(format!(
        "sha256:{}",
        hash_key(KEY).trim_start_matches("sha256:").to_uppercase()
    ));
    assert!(matches!(
        validator(vec![e]).check(&bearer(KEY)),
        Verdict::Allow(_)
    ));
}

#[test]
fn literal_plaintext_key_is_refused_without_echoing_it() {
    let mut e = entry("ci", KEY);
    e.hash = None;
    e.key = Some(SecretRef::parse(KEY).expect("a reference"));
    let err = ApiKeyValidator::new("keys", settings(vec![e])).expect_err("literal refused");
    let msg = err.to_string();
    assert!(msg.contains("env://") && msg.contains("hash"), "{msg}");
    assert!(!msg.contains(KEY), "{msg}");
}

#[test]
fn key_from_file_is_hashed_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key");
    std::fs::write(&path, format!("{KEY}\n")).expect("write");
    let mut e = entry("ops", "unused");
    e.hash = None;
    e.key = Some(SecretRef::parse(&format!("file://{}", path.display())).expect("a reference"));
    assert!(matches!(
        validator(vec![e]).check(&bearer(KEY)),
        Verdict::Allow(_)
    ));
}

#[test]
fn bad_hash_names_the_key_but_not_the_value() {
    let mut e = entry("ci", KEY);
    e.hash = Some(KEY.into());
    let msg = ApiKeyValidator::new("keys", settings(vec![e]))
        .expect_err("bad hash")
        .to_string();
    assert!(msg.contains("key `ci`") && msg.contains("`hash`"), "{msg}");
    assert!(!msg.contains(KEY), "{msg}");
}

#[test]
fn both_or_neither_key_source_is_refused() {
    let mut both = entry("ci", KEY);
    both.key = Some(SecretRef::parse("env://X").expect("a reference"));
    let mut neither = entry("ci", KEY);
    neither.hash = None;
    for e in [both, neither] {
        let err = ApiKeyValidator::new("keys", settings(vec![e])).expect_err("refused");
        assert!(matches!(err, ApiKeyConfigError::KeySource { .. }), "{err}");
    }
}

#[test]
fn duplicate_names_and_keys_are_refused() {
    let err = ApiKeyValidator::new("keys", settings(vec![entry("a", "k1"), entry("a", "k2")]))
        .expect_err("duplicate name");
    assert!(
        matches!(err, ApiKeyConfigError::DuplicateName { .. }),
        "{err}"
    );
    let err = ApiKeyValidator::new("keys", settings(vec![entry("a", "k1"), entry("b", "k1")]))
        .expect_err("duplicate key");
    assert!(err.to_string().contains("`a` and `b`"), "{err}");
}

#[test]
fn bad_expiry_names_the_value() {
    let mut e = entry("ci", KEY);
    e.expires_at = Some("tomorrow".into());
    let msg = ApiKeyValidator::new("keys", settings(vec![e]))
        .expect_err("bad expiry")
        .to_string();
    assert!(msg.contains("`expires_at = \"tomorrow\"`"), "{msg}");
}

#[test]
fn settings_reject_unknown_fields() {
    let err = serde_json::from_value::<ApiKeySettings>(serde_json::json!({
        "keys": [{ "name": "ci", "hash": hash_key(KEY), "scope": ["x"] }]
    }))
    .expect_err("unknown field");
    assert!(err.to_string().contains("scope"), "{err}");
}

#[test]
fn debug_output_never_shows_a_literal_key() {
    let mut e = entry("ci", KEY);
    e.key = Some(SecretRef::parse(KEY).expect("a reference"));
    assert!(!format!("{e:?}").contains(KEY));
    e.key = None;
    e.hash = Some(KEY.into());
    assert!(!format!("{e:?}").contains(KEY));
}
