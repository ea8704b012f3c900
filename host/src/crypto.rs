//! Host-side cryptography for providers: digests and MACs (`ring`), constant-time
//! comparison, and signature verification over DER or JWK public keys (`jwk`, shared with
//! the `jwt` provider).

pub(crate) mod jwk;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use subtle::ConstantTimeEq;

use self::jwk::VerifyingKey;

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// `N` bytes from the system's random source; `None` when it fails.
pub(crate) fn random_bytes<const N: usize>() -> Option<[u8; N]> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0; N];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(bytes)
}

/// HMAC-SHA-256 of `data` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, data);
    let mut out = [0; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Equality in time that depends only on the lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A signature algorithm the host verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureAlgorithm {
    /// RSASSA-PKCS1-v1_5 SHA-256 (2048 to 8192 bits).
    Rs256,
    /// ECDSA P-256 SHA-256, fixed `r || s` signature.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl SignatureAlgorithm {
    /// The JWS algorithm of the same name.
    fn jws(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// A public key as a provider hands it over.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PublicKeyInput<'a> {
    /// SubjectPublicKeyInfo DER (any algorithm) or raw 32-byte Ed25519.
    Der(&'a [u8]),
    /// One JWK as JSON.
    Jwk(&'a str),
}

/// Verifies `sig` over `msg`. `Ok(false)` for a bad signature, `Err` for a key that does not
/// parse for `alg` or does not fit it. Both key forms go through `jwk::VerifyingKey`, the
/// path the `jwt` provider verifies with too.
pub(crate) fn verify_signature(
    alg: SignatureAlgorithm,
    key: PublicKeyInput<'_>,
    msg: &[u8],
    sig: &[u8],
) -> Result<bool, String> {
    let alg = alg.jws();
    let key = match key {
        PublicKeyInput::Der(der) => VerifyingKey::from_der(alg, der),
        PublicKeyInput::Jwk(json) => VerifyingKey::from_jwk_json(json),
    }
    .map_err(|e| e.to_string())?;
    key.verify(alg, msg, &URL_SAFE_NO_PAD.encode(sig))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

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
