use super::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Made with `openssl req -x509 -subj "/C=US/O=Acme, Inc./OU=Platform+OU=R&D/CN=client-a"
/// -multivalue-rdn -addext "subjectAltName=email:a@acme.test,DNS:client-a.example.com,
/// URI:spiffe://acme.test/client-a,IP:10.0.0.1,IP:::1"`.
const CERT_A: &str = concat!(
    "MIICZDCCAgqgAwIBAgIUA/B0h7PzH+v/vRzkQ8kLt6+Q9UAwCgYIKoZIzj0EAwIwVDELMAkGA1UEBhMCVVMxEzARBgNVBAoMCkFj",
    "bWUsIEluYy4xHTAKBgNVBAsMA1ImRDAPBgNVBAsMCFBsYXRmb3JtMREwDwYDVQQDDAhjbGllbnQtYTAgFw0yNjExMjIyMTIzNDVa",
    "GA8yMTI2MTAyOTIxMjM0NVowVDELMAkGA1UEBhMCVVMxEzARBgNVBAoMCkFjbWUsIEluYy4xHTAKBgNVBAsMA1ImRDAPBgNVBAsM",
    "CFBsYXRmb3JtMREwDwYDVQQDDAhjbGllbnQtYTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABEabvzqgVQG4ko+fyTwobULAgT8x",
    "YXg2G5rEwQnLVe0CI6zm55XO4+UL1bK2fFot1Zc6MRqPZ4mZ8p1HM9LviB6jgbcwgbQwHQYDVR0OBBYEFAPGFWSroorYOin4QPPz",
    "QHsXpQQcMB8GA1UdIwQYMBaAFAPGFWSroorYOin4QPPzQHsXpQQcMA8GA1UdEwEB/wQFMAMBAf8wYQYDVR0RBFowWIELYUBhY21l",
    "LnRlc3SCFGNsaWVudC1hLmV4YW1wbGUuY29thhtzcGlmZmU6Ly9hY21lLnRlc3QvY2xpZW50LWGHBAoAAAGHEAAAAAAAAAAAAAAA",
    "AAAAAAEwCgYIKoZIzj0EAwIDSAAwRQIgInC6Eh4iwoHpE7k26pXdRs2ZgfAurGIxArqA/eJmmEsCIQDkx9yRJbVPzt2BUjL1LDBL",
    "Fp37VYNY00/K86YWLhfjoQ==",
);

/// Subject `O=NoName Org`, no SAN extension.
const CERT_B: &str = concat!(
    "MIIBgDCCASegAwIBAgIUDaWPIGY0CKr/vtYQKhoT0okhm6gwCgYIKoZIzj0EAwIwFTETMBEGA1UECgwKTm9OYW1lIE9yZzAgFw0y",
    "NjExMjIyMTIzNDVaGA8yMTI2MTAyOTIxMjM0NVowFTETMBEGA1UECgwKTm9OYW1lIE9yZzBZMBMGByqGSM49AgEGCCqGSM49AwEH",
    "A0IABBfxqslNKukuSPj9EJj2t0XC5Qz4jYT2eIfZAv8TmD7kGaYdPioN5WW4P+qiqS+sfKq6J4GV75DsaBU+Xar2Jq6jUzBRMB0G",
    "A1UdDgQWBBQX4tOf3VD53H8veqfrv/F0gRCWIzAfBgNVHSMEGDAWgBQX4tOf3VD53H8veqfrv/F0gRCWIzAPBgNVHRMBAf8EBTAD",
    "AQH/MAoGCCqGSM49BAMCA0cAMEQCICgm4Wb/xl//+3k5k2jkUkR1mC88Ioz4zjL8wTlG+dCVAiBKtE4NngsSv2T9Nw0MfiAerzvx",
    "SeX8Eg5kM2cQcIQL2w==",
);

fn cert(b64: &str) -> ClientCert {
    let der = STANDARD.decode(b64).expect("base64");
    client_cert_from_der(&der).expect("parses")
}

fn validator(settings: serde_json::Value) -> MtlsValidator {
    MtlsValidator::new(
        "clients",
        serde_json::from_value(settings).expect("settings"),
    )
    .expect("validator")
}

#[test]
fn der_certificate_is_described_in_rfc4514_with_typed_sans() {
    let a = cert(CERT_A);
    assert_eq!(
        a.subject,
        "CN=client-a,OU=R&D+OU=Platform,O=Acme\\, Inc.,C=US"
    );
    assert_eq!(a.common_name.as_deref(), Some("client-a"));
    assert_eq!(
        a.sans,
        [
            "email:a@acme.test",
            "DNS:client-a.example.com",
            "URI:spiffe://acme.test/client-a",
            "IP:10.0.0.1",
            "IP:::1",
        ]
    );
    assert_eq!(
        a.sha256_fingerprint,
        "c326812da3111441ab755d8e18a2cf0d79bfb358ae09faec48d8f2a3095aee5c"
    );
}

#[test]
fn garbage_and_trailing_bytes_are_refused() {
    assert!(matches!(
        client_cert_from_der(b"nope"),
        Err(CertParseError::Der(_))
    ));
    let mut der = STANDARD.decode(CERT_B).expect("base64");
    der.push(0);
    assert!(matches!(
        client_cert_from_der(&der),
        Err(CertParseError::TrailingBytes)
    ));
}

#[test]
fn rfc4514_escapes_special_characters() {
    let mut out = String::new();
    escape_value(" #a+b;c<d>\"e\\ ", &mut out);
    assert_eq!(out, "\\ #a\\+b\\;c\\<d\\>\\\"e\\\\\\ ");
    let mut out = String::new();
    escape_value("#x", &mut out);
    assert_eq!(out, "\\#x");
}

#[test]
fn no_client_certificate_abstains() {
    assert_eq!(
        validator(serde_json::json!({})).check(None),
        Verdict::Abstain
    );
}

#[test]
fn common_name_is_the_default_identity_with_mapped_scopes() {
    let v = validator(serde_json::json!({
        "scopes": { "client-a": ["mcp:read"], "*": ["mcp:ping"] }
    }));
    let Verdict::Allow(id) = v.check(Some(&cert(CERT_A))) else {
        panic!("expected allow");
    };
    assert_eq!(
        (id.subject.as_str(), id.scopes),
        ("client-a", vec!["mcp:read".to_owned()])
    );
    assert!(id.claims.iter().any(|(k, _)| k == "cert_sha256"));
}

#[test]
fn unlisted_subject_gets_the_wildcard_scopes_or_none() {
    let mut c = cert(CERT_A);
    c.common_name = Some("client-z".into());
    let v = validator(serde_json::json!({ "scopes": { "client-a": ["x"], "*": ["mcp:ping"] } }));
    assert!(matches!(v.check(Some(&c)), Verdict::Allow(id) if id.scopes == ["mcp:ping"]));
    let v = validator(serde_json::json!({ "scopes": { "client-a": ["x"] } }));
    assert!(matches!(v.check(Some(&c)), Verdict::Allow(id) if id.scopes.is_empty()));
}

#[test]
fn san_identity_takes_the_first_dns_or_uri_or_the_configured_type() {
    let a = cert(CERT_A);
    let v = validator(serde_json::json!({ "identity": "san" }));
    assert!(
        matches!(v.check(Some(&a)), Verdict::Allow(id) if id.subject == "client-a.example.com")
    );
    let v = validator(serde_json::json!({ "identity": "san", "san_type": "uri" }));
    assert!(
        matches!(v.check(Some(&a)), Verdict::Allow(id) if id.subject == "spiffe://acme.test/client-a")
    );
    let v = validator(serde_json::json!({ "identity": "san", "san_type": "ip" }));
    assert!(matches!(v.check(Some(&a)), Verdict::Allow(id) if id.subject == "10.0.0.1"));
}

#[test]
fn certificate_without_the_identity_field_is_denied() {
    let b = cert(CERT_B);
    assert_eq!(b.common_name, None);
    assert!(b.sans.is_empty());
    for settings in [
        serde_json::json!({}),
        serde_json::json!({ "identity": "san" }),
    ] {
        let Verdict::Deny(d) = validator(settings).check(Some(&b)) else {
            panic!("expected deny");
        };
        assert_eq!(d.code_str(), "invalid_token");
    }
}

#[test]
fn subject_outside_the_allow_list_is_forbidden() {
    let v = validator(serde_json::json!({ "allowed_subjects": ["client-b"] }));
    let Verdict::Deny(d) = v.check(Some(&cert(CERT_A))) else {
        panic!("expected deny");
    };
    assert_eq!(d.kind, crate::verdict::DenialKind::Forbidden);
    let v = validator(serde_json::json!({ "allowed_subjects": ["client-a"] }));
    assert!(matches!(v.check(Some(&cert(CERT_A))), Verdict::Allow(_)));
}

#[test]
fn inconsistent_settings_are_refused() {
    let bad = |value| {
        MtlsValidator::new("clients", serde_json::from_value(value).expect("settings"))
            .expect_err("refused")
            .to_string()
    };
    assert!(bad(serde_json::json!({ "san_type": "dns" })).contains("`san_type`"));
    assert!(bad(serde_json::json!({ "allowed_subjects": [] })).contains("`allowed_subjects`"));
    let err = serde_json::from_value::<MtlsSettings>(serde_json::json!({ "identity": "dn" }))
        .expect_err("unknown variant");
    assert!(err.to_string().contains("dn"), "{err}");
}
