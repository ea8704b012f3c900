//! Host-side cryptography for providers, backed by `ring`: digests, MACs, constant-time
//! comparison and signature verification over DER or JWK public keys.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use subtle::ConstantTimeEq;

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// HMAC-SHA-256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, data);
    let mut out = [0; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Equality in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A signature algorithm the host verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// RSASSA-PKCS1-v1_5 SHA-256 (2048 to 8192 bits).
    Rs256,
    /// ECDSA P-256 SHA-256, fixed `r || s` signature.
    Es256,
    /// Ed25519.
    EdDsa,
}

/// A public key as a provider hands it over.
#[derive(Debug, Clone, Copy)]
pub enum PublicKeyInput<'a> {
    /// SubjectPublicKeyInfo DER (any algorithm) or raw 32-byte Ed25519.
    Der(&'a [u8]),
    /// One JWK as JSON.
    Jwk(&'a str),
}

/// Verifies `sig` over `msg`. `Ok(false)` for a bad signature, `Err` for a key that does not
/// parse for `alg`.
pub fn verify_signature(
    alg: SignatureAlgorithm,
    key: PublicKeyInput<'_>,
    msg: &[u8],
    sig: &[u8],
) -> Result<bool, String> {
    match key {
        PublicKeyInput::Der(der) => verify_der(alg, der, msg, sig),
        PublicKeyInput::Jwk(json) => verify_jwk(alg, json, msg, sig),
    }
}

fn verify_der(alg: SignatureAlgorithm, der: &[u8], msg: &[u8], sig: &[u8]) -> Result<bool, String> {
    if alg == SignatureAlgorithm::EdDsa && der.len() == 32 {
        return Ok(raw_verify(&signature::ED25519, der, msg, sig));
    }
    let spki = spki::SubjectPublicKeyInfoRef::try_from(der)
        .map_err(|e| format!("key is not SubjectPublicKeyInfo DER: {e}"))?;
    let key_bytes = spki
        .subject_public_key
        .as_bytes()
        .ok_or("key bit string has unused bits")?;
    let expected_oid = match alg {
        SignatureAlgorithm::Rs256 => "1.2.840.113549.1.1.1",
        SignatureAlgorithm::Es256 => "1.2.840.10045.2.1",
        SignatureAlgorithm::EdDsa => "1.3.101.112",
    };
    let oid = spki.algorithm.oid.to_string();
    if oid != expected_oid {
        return Err(format!("key algorithm {oid} does not match {alg:?}"));
    }
    Ok(match alg {
        SignatureAlgorithm::Rs256 => {
            raw_verify(&signature::RSA_PKCS1_2048_8192_SHA256, key_bytes, msg, sig)
        }
        SignatureAlgorithm::Es256 => {
            raw_verify(&signature::ECDSA_P256_SHA256_FIXED, key_bytes, msg, sig)
        }
        SignatureAlgorithm::EdDsa => raw_verify(&signature::ED25519, key_bytes, msg, sig),
    })
}

fn verify_jwk(alg: SignatureAlgorithm, json: &str, msg: &[u8], sig: &[u8]) -> Result<bool, String> {
    let jwk: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("JWK is not JSON: {e}"))?;
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let text = jwk
            .get(name)
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("JWK has no `{name}`"))?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| format!("JWK `{name}` is not base64url: {e}"))
    };
    let kty = jwk.get("kty").and_then(|v| v.as_str()).unwrap_or_default();
    match (alg, kty) {
        (SignatureAlgorithm::Rs256, "RSA") => {
            let key = RsaPublicKeyComponents {
                n: field("n")?,
                e: field("e")?,
            };
            Ok(key
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                .is_ok())
        }
        (SignatureAlgorithm::Es256, "EC") => {
            let (x, y) = (field("x")?, field("y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("JWK P-256 coordinates must be 32 bytes".into());
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Ok(raw_verify(
                &signature::ECDSA_P256_SHA256_FIXED,
                &point,
                msg,
                sig,
            ))
        }
        (SignatureAlgorithm::EdDsa, "OKP") => {
            Ok(raw_verify(&signature::ED25519, &field("x")?, msg, sig))
        }
        _ => Err(format!("JWK of kty `{kty}` cannot verify {alg:?}")),
    }
}

fn raw_verify(
    alg: &'static dyn signature::VerificationAlgorithm,
    key: &[u8],
    msg: &[u8],
    sig: &[u8],
) -> bool {
    UnparsedPublicKey::new(alg, key).verify(msg, sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn ed25519_verifies_raw_and_jwk_keys_and_rejects_tampering() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("generate");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse");
        let sig = pair.sign(b"msg");
        let raw = pair.public_key().as_ref();
        let alg = SignatureAlgorithm::EdDsa;
        assert_eq!(
            verify_signature(alg, PublicKeyInput::Der(raw), b"msg", sig.as_ref()),
            Ok(true)
        );
        assert_eq!(
            verify_signature(alg, PublicKeyInput::Der(raw), b"msG", sig.as_ref()),
            Ok(false)
        );
        let jwk = format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(raw)
        );
        assert_eq!(
            verify_signature(alg, PublicKeyInput::Jwk(&jwk), b"msg", sig.as_ref()),
            Ok(true)
        );
    }

    #[test]
    fn es256_verifies_with_jwk() {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("generate");
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("parse");
        let sig = pair.sign(&rng, b"msg").expect("sign");
        let point = pair.public_key().as_ref();
        let jwk = format!(
            r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..])
        );
        let es = SignatureAlgorithm::Es256;
        assert_eq!(
            verify_signature(es, PublicKeyInput::Jwk(&jwk), b"msg", sig.as_ref()),
            Ok(true)
        );
        assert_eq!(
            verify_signature(es, PublicKeyInput::Jwk(&jwk), b"other", sig.as_ref()),
            Ok(false)
        );
    }

    #[test]
    fn key_of_wrong_type_is_an_error_not_a_pass() {
        let jwk = r#"{"kty":"OKP","x":"AAAA"}"#;
        assert!(
            verify_signature(
                SignatureAlgorithm::Rs256,
                PublicKeyInput::Jwk(jwk),
                b"m",
                b"s"
            )
            .is_err()
        );
        assert!(
            verify_signature(
                SignatureAlgorithm::Rs256,
                PublicKeyInput::Der(b"junk"),
                b"m",
                b"s"
            )
            .is_err()
        );
    }
}
