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

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).expect("header value"));
    }
    map
}

#[test]
fn by_default_a_key_is_read_from_bearer_and_x_api_key() {
    let v = validator(vec![entry("ci", KEY), entry("other", "pk_other")]);
    let bearer_value = format!("Bearer {KEY}");
    for request in [
        headers(&[("x-api-key", KEY)]),
        headers(&[("authorization", &bearer_value), ("x-api-key", KEY)]),
        // Another scheme in `Authorization` is not ours: the `X-API-Key` decides.
        headers(&[("authorization", "Basic dXNlcjpwdw=="), ("x-api-key", KEY)]),
    ] {
        assert!(
            matches!(v.check(&request), Verdict::Allow(_)),
            "{request:?}"
        );
    }
    for request in [
        headers(&[("authorization", &bearer_value), ("x-api-key", "pk_other")]),
        headers(&[("authorization", &bearer_value), ("x-api-key", "")]),
        headers(&[("x-api-key", KEY), ("x-api-key", KEY)]),
    ] {
        let Verdict::Deny(denial) = v.check(&request) else {
            panic!("expected: deny for {request:?}");
        };
        assert_eq!(denial.kind, DenialKind::BadRequest, "{request:?}");
    }
}

#[test]
fn a_configured_header_is_the_only_one_read() {
    let mut s = settings(vec![entry("ci", KEY)]);
    s.header = Some("x-partner-key".into());
    assert_eq!(s.credential_locations().expect("valid").len(), 1);
    let v = ApiKeyValidator::new("keys", s).expect("valid");
    assert!(matches!(
        v.check(&headers(&[("x-api-key", KEY)])),
        Verdict::Abstain
    ));
    assert!(matches!(v.check(&bearer(KEY)), Verdict::Abstain));
    assert!(matches!(
        v.check(&headers(&[("x-partner-key", KEY)])),
        Verdict::Allow(_)
    ));
}

#[test]
fn keys_file_entries_join_the_inline_keys_and_a_bad_file_names_file_and_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.toml");
    std::fs::write(
        &path,
        format!(
            "[[keys]]\nname = \"agent\"\nhash = \"{}\"\nscopes = [\"a\"]\n",
            hash_key("pk_agent")
        ),
    )
    .expect("write");
    let mut s = settings(vec![entry("ci", KEY)]);
    s.keys_file = Some(path.clone());
    let v = ApiKeyValidator::new("keys", s.clone()).expect("valid");
    assert!(matches!(v.check(&bearer("pk_agent")), Verdict::Allow(id) if id.subject == "agent"));
    assert!(matches!(v.check(&bearer(KEY)), Verdict::Allow(_)));
    assert_eq!(v.last_used().count(), 2);

    std::fs::write(&path, "[[keys]]\nname = \"agent\"\nhash = \"sha256:12\"\n").expect("write");
    let error = ApiKeyValidator::new("keys", s.clone())
        .expect_err("bad hash")
        .to_string();
    assert!(
        error.contains("provider `keys`: `keys_file`:")
            && error.contains("keys.toml: `keys[0].hash`"),
        "{error}"
    );
    std::fs::remove_file(&path).expect("remove");
    assert!(
        ApiKeyValidator::new("keys", s).is_err(),
        "a missing keys file"
    );
    let empty = ApiKeySettings {
        keys_file: Some(path),
        ..ApiKeySettings::default()
    };
    std::fs::write(empty.keys_file.as_ref().expect("set"), "").expect("write");
    assert!(
        ApiKeyValidator::new("keys", empty).is_ok(),
        "an empty keys file"
    );
}

#[test]
fn last_use_is_recorded_and_carried_to_the_next_validator() {
    let v = validator(vec![entry("ci", KEY), entry("idle", "pk_idle")]);
    assert!(matches!(v.check_at(&bearer(KEY), 1_000), Verdict::Allow(_)));
    assert_eq!(v.last_used().collect::<Vec<_>>(), [("ci", 1_000)]);
    let next = validator(vec![entry("ci", KEY)]);
    next.carry_last_used(&v);
    assert_eq!(next.last_used().collect::<Vec<_>>(), [("ci", 1_000)]);
}
