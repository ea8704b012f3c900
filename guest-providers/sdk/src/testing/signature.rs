//! Signature verification for [`FakeHost`](super::FakeHost): the WIT key forms (DER
//! SubjectPublicKeyInfo, raw Ed25519, JWK) parsed into what `ring` verifies.
//!
//! Mirrors the contract of `verify-signature`: `Err` when the key cannot be parsed for the
//! algorithm, `Ok(false)` when it parses but the signature does not verify.

use ring::signature::{self as ring_sig, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value;

use crate::{PublicKey, SignatureAlgorithm, base64url_decode};

const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

/// A key in the form `ring` takes for each algorithm.
enum Key {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed SEC1 point, `04 || x || y`.
    P256(Vec<u8>),
    Ed25519(Vec<u8>),
}

pub(super) fn verify(
    algorithm: SignatureAlgorithm,
    key: PublicKey<'_>,
    message: &[u8],
    signature: &[u8],
) -> Result<bool, String> {
    let key = match key {
        PublicKey::Der(der) => key_from_der(algorithm, der)?,
        PublicKey::Jwk(jwk) => key_from_jwk(algorithm, jwk)?,
    };
    let verified = match key {
        Key::Rsa { n, e } => RsaPublicKeyComponents { n, e }
            .verify(&ring_sig::RSA_PKCS1_2048_8192_SHA256, message, signature)
            .is_ok(),
        Key::P256(point) => UnparsedPublicKey::new(&ring_sig::ECDSA_P256_SHA256_FIXED, point)
            .verify(message, signature)
            .is_ok(),
        Key::Ed25519(raw) => UnparsedPublicKey::new(&ring_sig::ED25519, raw)
            .verify(message, signature)
            .is_ok(),
    };
    Ok(verified)
}

fn key_from_der(algorithm: SignatureAlgorithm, der: &[u8]) -> Result<Key, String> {
    // Ed25519 keys are usually handed over raw; a SubjectPublicKeyInfo is accepted as well.
    if algorithm == SignatureAlgorithm::EdDsa && der.len() == 32 {
        return Ok(Key::Ed25519(der.to_vec()));
    }
    let spki = parse_spki(der)?;
    match algorithm {
        SignatureAlgorithm::Rs256 if spki.algorithm == OID_RSA_ENCRYPTION => {
            let mut rsa_key = read_tlv(spki.key, TAG_SEQUENCE)?.0;
            let n = read_integer(&mut rsa_key)?;
            let e = read_integer(&mut rsa_key)?;
            rsa_key_from_components(n, e)
        }
        SignatureAlgorithm::Es256 if spki.algorithm == OID_EC_PUBLIC_KEY => {
            if spki.parameter != Some(OID_P256) {
                return Err("the EC key is not on curve P-256".into());
            }
            p256_key_from_point(spki.key.to_vec())
        }
        SignatureAlgorithm::EdDsa if spki.algorithm == OID_ED25519 => {
            ed25519_key(spki.key.to_vec())
        }
        _ => Err(format!("the DER key is not a {algorithm:?} key")),
    }
}

fn key_from_jwk(algorithm: SignatureAlgorithm, jwk: &str) -> Result<Key, String> {
    let jwk: Value = serde_json::from_str(jwk).map_err(|e| format!("the JWK is not JSON: {e}"))?;
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    let bytes = |name: &str| {
        field(name)
            .and_then(base64url_decode)
            .ok_or_else(|| format!("the JWK has no base64url `{name}`"))
    };
    let expected_alg = match algorithm {
        SignatureAlgorithm::Rs256 => "RS256",
        SignatureAlgorithm::Es256 => "ES256",
        SignatureAlgorithm::EdDsa => "EdDSA",
    };
    if let Some(alg) = field("alg").filter(|&alg| alg != expected_alg) {
        return Err(format!("the JWK is for `{alg}`, not `{expected_alg}`"));
    }
    // As the host refuses them: a key marked for another use is not a verification key.
    if field("use").is_some_and(|key_use| key_use != "sig") {
        return Err("the JWK is not for signatures (`use`)".into());
    }
    if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array)
        && !ops.iter().any(|op| op.as_str() == Some("verify"))
    {
        return Err("the JWK is not for verification (`key_ops`)".into());
    }
    match (algorithm, field("kty"), field("crv")) {
        (SignatureAlgorithm::Rs256, Some("RSA"), _) => {
            rsa_key_from_components(&bytes("n")?, &bytes("e")?)
        }
        (SignatureAlgorithm::Es256, Some("EC"), Some("P-256")) => {
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("the P-256 JWK coordinates are not 32 bytes".into());
            }
            p256_key_from_point([&[0x04][..], &x, &y].concat())
        }
        (SignatureAlgorithm::EdDsa, Some("OKP"), Some("Ed25519")) => ed25519_key(bytes("x")?),
        (_, kty, crv) => Err(format!(
            "a JWK with kty {kty:?} and crv {crv:?} is not a {algorithm:?} key"
        )),
    }
}

fn rsa_key_from_components(n: &[u8], e: &[u8]) -> Result<Key, String> {
    let strip = |bytes: &[u8]| -> Vec<u8> {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        bytes[start..].to_vec()
    };
    let (n, e) = (strip(n), strip(e));
    if n.len() * 8 < 2048 {
        return Err(format!(
            "the RSA key has {} bits, fewer than 2048",
            n.len() * 8
        ));
    }
    if e.is_empty() {
        return Err("the RSA exponent is zero".into());
    }
    Ok(Key::Rsa { n, e })
}

fn p256_key_from_point(point: Vec<u8>) -> Result<Key, String> {
    if point.len() != 65 || point[0] != 0x04 {
        return Err("the P-256 key is not an uncompressed point".into());
    }
    Ok(Key::P256(point))
}

fn ed25519_key(raw: Vec<u8>) -> Result<Key, String> {
    if raw.len() != 32 {
        return Err(format!("the Ed25519 key has {} bytes, not 32", raw.len()));
    }
    Ok(Key::Ed25519(raw))
}

/// The parts of a SubjectPublicKeyInfo that select and carry the key.
struct Spki<'a> {
    /// The algorithm OID.
    algorithm: &'a [u8],
    /// The algorithm parameter, when it is an OID (the curve of an EC key).
    parameter: Option<&'a [u8]>,
    /// The contents of the key BIT STRING.
    key: &'a [u8],
}

fn parse_spki(der: &[u8]) -> Result<Spki<'_>, String> {
    let (spki, rest) = read_tlv(der, TAG_SEQUENCE)?;
    if !rest.is_empty() {
        return Err("trailing bytes after the SubjectPublicKeyInfo".into());
    }
    let (algorithm_id, spki) = read_tlv(spki, TAG_SEQUENCE)?;
    let (algorithm, parameters) = read_tlv(algorithm_id, TAG_OID)?;
    let parameter = read_tlv(parameters, TAG_OID).ok().map(|(oid, _)| oid);
    match read_tlv(spki, TAG_BIT_STRING)?.0 {
        [0, key @ ..] => Ok(Spki {
            algorithm,
            parameter,
            key,
        }),
        _ => Err("the key BIT STRING has unused bits".into()),
    }
}

fn read_integer<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let (value, rest) = read_tlv(input, TAG_INTEGER)?;
    *input = rest;
    Ok(value)
}

/// Reads one DER element with the expected tag; returns its contents and what follows it.
fn read_tlv(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), String> {
    let malformed = || format!("malformed DER: expected tag {tag:#04x}");
    let (&actual, rest) = input.split_first().ok_or_else(malformed)?;
    if actual != tag {
        return Err(malformed());
    }
    let (&first, mut rest) = rest.split_first().ok_or_else(malformed)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(malformed());
        }
        let (len_bytes, after) = rest.split_at(count);
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b))
    };
    if rest.len() < len {
        return Err(malformed());
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};

    use super::*;

    const RSA_PKCS1: &[u8] = include_bytes!("testdata/test-only-rsa2048.pkcs1.der");
    const RSA_SPKI: &[u8] = include_bytes!("testdata/test-only-rsa2048.spki.der");
    /// SubjectPublicKeyInfo header of a P-256 key; the 65-byte point follows.
    const P256_SPKI_PREFIX: &[u8] = &[
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    /// SubjectPublicKeyInfo header of an Ed25519 key; the 32 raw bytes follow.
    const ED25519_SPKI_PREFIX: &[u8] = &[
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];

    fn b64url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }

    fn rsa_signature(message: &[u8]) -> Vec<u8> {
        let pair = RsaKeyPair::from_der(RSA_PKCS1).unwrap();
        let mut signature = vec![0; pair.public().modulus_len()];
        pair.sign(
            &ring_sig::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            message,
            &mut signature,
        )
        .unwrap();
        signature
    }

    fn p256_pair() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let alg = &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap()
    }

    fn ed25519_pair() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    #[test]
    fn rs256_verifies_with_spki_and_jwk() {
        let signature = rsa_signature(b"msg");
        let der = PublicKey::Der(RSA_SPKI);
        assert_eq!(
            verify(SignatureAlgorithm::Rs256, der, b"msg", &signature),
            Ok(true)
        );
        assert_eq!(
            verify(SignatureAlgorithm::Rs256, der, b"other", &signature),
            Ok(false)
        );

        let spki = parse_spki(RSA_SPKI).unwrap();
        let mut rsa_key = read_tlv(spki.key, TAG_SEQUENCE).unwrap().0;
        let n = read_integer(&mut rsa_key).unwrap();
        let e = read_integer(&mut rsa_key).unwrap();
        let jwk = format!(
            r#"{{"kty":"RSA","alg":"RS256","n":"{}","e":"{}"}}"#,
            b64url(n),
            b64url(e)
        );
        let jwk = PublicKey::Jwk(&jwk);
        assert_eq!(
            verify(SignatureAlgorithm::Rs256, jwk, b"msg", &signature),
            Ok(true)
        );
    }

    #[test]
    fn es256_verifies_with_spki_and_jwk() {
        let pair = p256_pair();
        let signature = pair.sign(&SystemRandom::new(), b"msg").unwrap();
        let point = pair.public_key().as_ref();
        let spki = [P256_SPKI_PREFIX, point].concat();
        let der = PublicKey::Der(&spki);
        assert_eq!(
            verify(SignatureAlgorithm::Es256, der, b"msg", signature.as_ref()),
            Ok(true)
        );
        assert_eq!(
            verify(SignatureAlgorithm::Es256, der, b"x", signature.as_ref()),
            Ok(false)
        );

        let jwk = format!(
            r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{}"}}"#,
            b64url(&point[1..33]),
            b64url(&point[33..])
        );
        let jwk = PublicKey::Jwk(&jwk);
        assert_eq!(
            verify(SignatureAlgorithm::Es256, jwk, b"msg", signature.as_ref()),
            Ok(true)
        );
    }

    #[test]
    fn eddsa_verifies_with_raw_spki_and_jwk() {
        let pair = ed25519_pair();
        let signature = pair.sign(b"msg");
        let raw = pair.public_key().as_ref();
        let spki = [ED25519_SPKI_PREFIX, raw].concat();
        let jwk = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{}"}}"#, b64url(raw));
        for key in [
            PublicKey::Der(raw),
            PublicKey::Der(&spki),
            PublicKey::Jwk(&jwk),
        ] {
            assert_eq!(
                verify(SignatureAlgorithm::EdDsa, key, b"msg", signature.as_ref()),
                Ok(true),
                "{key:?}"
            );
            assert_eq!(
                verify(SignatureAlgorithm::EdDsa, key, b"x", signature.as_ref()),
                Ok(false)
            );
        }
    }

    #[test]
    fn a_key_of_another_algorithm_is_an_error() {
        let err = verify(
            SignatureAlgorithm::Es256,
            PublicKey::Der(RSA_SPKI),
            b"m",
            b"s",
        );
        assert_eq!(err, Err("the DER key is not a Es256 key".into()));
        let jwk = PublicKey::Jwk(r#"{"kty":"EC","crv":"P-256","alg":"ES256"}"#);
        let err = verify(SignatureAlgorithm::Rs256, jwk, b"m", b"s").unwrap_err();
        assert!(err.contains("not `RS256`"), "got: {err}");
    }

    #[test]
    fn a_jwk_marked_for_another_use_is_an_error_as_in_the_host() {
        let pair = ed25519_pair();
        let signature = pair.sign(b"msg");
        let x = b64url(pair.public_key().as_ref());
        for (marking, want) in [
            (r#""use":"enc""#, "`use`"),
            (r#""key_ops":["encrypt"]"#, "`key_ops`"),
        ] {
            let jwk = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}",{marking}}}"#);
            let err = verify(
                SignatureAlgorithm::EdDsa,
                PublicKey::Jwk(&jwk),
                b"msg",
                signature.as_ref(),
            )
            .unwrap_err();
            assert!(err.contains(want), "{marking}: {err}");
        }
        let jwk = format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}","use":"sig","key_ops":["verify"]}}"#
        );
        assert_eq!(
            verify(
                SignatureAlgorithm::EdDsa,
                PublicKey::Jwk(&jwk),
                b"msg",
                signature.as_ref()
            ),
            Ok(true)
        );
    }

    #[test]
    fn garbage_keys_are_errors() {
        for key in [
            PublicKey::Der(b"not der"),
            PublicKey::Der(&[0x30, 0x05, 0x01]),
            PublicKey::Jwk("{"),
            PublicKey::Jwk(r#"{"kty":"RSA","n":"!!","e":"AQAB"}"#),
            PublicKey::Jwk(r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#),
        ] {
            assert!(
                verify(SignatureAlgorithm::Rs256, key, b"m", b"s").is_err(),
                "{key:?}"
            );
        }
    }
}
