//! Verifying keys: a JWK (or a DER public key, or an HMAC secret) turned into a
//! `jsonwebtoken` [`DecodingKey`] that verifies only the algorithms it fits. This is the one
//! signature-verification path: the `jwt` provider's key sets and the guests'
//! `verify-signature` host function both build a [`VerifyingKey`] here and call
//! [`VerifyingKey::verify`].
//!
//! A key verifies only an algorithm it fits: its `kty` (and curve) must match the
//! algorithm's family, and its `alg`, when the JWK states one, must equal the algorithm asked
//! for. Symmetric (`oct`) JWKs and keys marked for another use (`use`, `key_ops`) are refused,
//! so a key set fetched from an IdP, or a JWK a guest hands over, never turns into an HMAC
//! secret. Guests get the same checks as the `jwt` provider: a key a guest was handed by a
//! third party deserves no more trust than one in an IdP's key set.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

/// What kind of key this is, which decides the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
    Hmac,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::EcP256 => alg == ES256,
            Self::EcP384 => alg == ES384,
            Self::Ed25519 => alg == EdDSA,
            Self::Hmac => matches!(alg, HS256 | HS384 | HS512),
        }
    }
}

/// A key that cannot be used. Messages never include key material.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    /// The JWK text is not JSON.
    #[error("JWK is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// The JWK's `kty` or `crv` is not one `jsonwebtoken` knows, or a parameter is missing.
    #[error("unsupported key type or curve, or a missing key parameter")]
    Unsupported,
    /// A known curve that no supported algorithm uses (P-521, X25519, …).
    #[error("unsupported curve {0:?}")]
    UnsupportedCurve(EllipticCurve),
    /// `kty: "oct"`.
    #[error("symmetric keys are never taken from a JWK")]
    Symmetric,
    /// `use` is not `sig`.
    #[error("key is not for signatures (`use`)")]
    NotForSignatures,
    /// `key_ops` does not list `verify`.
    #[error("key is not for verification (`key_ops`)")]
    NotForVerification,
    /// An EC or OKP coordinate does not have its curve's size.
    #[error("key coordinates do not have the curve's size")]
    CoordinateSize,
    /// An Ed25519 key of small order: signatures "verify" under it without a private key.
    #[error("the Ed25519 key is a point of small order, under which anyone can sign")]
    WeakKey,
    /// The JWK's `alg` is an encryption algorithm.
    #[error("key `alg` is not a signature algorithm")]
    NotSignatureAlgorithm,
    /// The JWK's `alg` is of another family than its key type.
    #[error("key `alg` does not match its key type")]
    AlgorithmMismatch,
    /// `jsonwebtoken` cannot decode the key parameters.
    #[error("key parameters do not decode")]
    Undecodable,
    /// The key exists but does not fit the algorithm asked for.
    #[error("a {kind:?} key{} cannot verify {requested:?}", stated_alg(.alg))]
    Unfit {
        /// The key's kind.
        kind: KeyKind,
        /// The `alg` the JWK states, if any.
        alg: Option<Algorithm>,
        /// The algorithm asked for.
        requested: Algorithm,
    },
    /// A DER key that is not SubjectPublicKeyInfo.
    #[error("key is not SubjectPublicKeyInfo DER: {0}")]
    NotSpki(String),
    /// A DER key of another algorithm than the one asked for.
    #[error("key algorithm {oid} does not match {requested:?}")]
    DerAlgorithm {
        /// The key's algorithm OID.
        oid: String,
        /// The algorithm asked for.
        requested: Algorithm,
    },
}

fn stated_alg(alg: &Option<Algorithm>) -> String {
    alg.map(|a| format!(" (`alg` {a:?})")).unwrap_or_default()
}

/// One key, ready to verify the algorithms it fits.
pub(crate) struct VerifyingKey {
    kid: Option<String>,
    kind: KeyKind,
    /// The JWK's `alg`, when it names one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material: for HS* it is the shared secret.
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// A JWK given as JSON text.
    pub(crate) fn from_jwk_json(json: &str) -> Result<Self, KeyError> {
        Self::from_jwk(serde_json::from_str(json).map_err(KeyError::NotJson)?)
    }

    /// A JWK, as one entry of a JWKS `keys` array.
    pub(crate) fn from_jwk(value: serde_json::Value) -> Result<Self, KeyError> {
        let jwk: Jwk = serde_json::from_value(value).map_err(|_| KeyError::Unsupported)?;
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            return Err(KeyError::NotForSignatures);
        }
        if let Some(ops) = &jwk.common.key_operations
            && !ops.contains(&KeyOperations::Verify)
        {
            return Err(KeyError::NotForVerification);
        }
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyKind::Rsa,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => KeyKind::EcP256,
                EllipticCurve::P384 => KeyKind::EcP384,
                _ => return Err(KeyError::UnsupportedCurve(p.curve.clone())),
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                KeyKind::Ed25519
            }
            AlgorithmParameters::OctetKeyPair(p) => {
                return Err(KeyError::UnsupportedCurve(p.curve.clone()));
            }
            AlgorithmParameters::OctetKey(_) => return Err(KeyError::Symmetric),
        };
        // `DecodingKey::from_jwk` takes any base64 as a coordinate and only a signature check
        // would fail later, so a JWKS of malformed keys would parse and replace the last good
        // keys. A coordinate must have its curve's size.
        let coordinates_fit = match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(p) => {
                let size = if kind == KeyKind::EcP256 { 32 } else { 48 };
                decoded_len(&p.x) == Some(size) && decoded_len(&p.y) == Some(size)
            }
            AlgorithmParameters::OctetKeyPair(p) => decoded_len(&p.x) == Some(32),
            _ => true,
        };
        if !coordinates_fit {
            return Err(KeyError::CoordinateSize);
        }
        if let AlgorithmParameters::OctetKeyPair(p) = &jwk.algorithm {
            let x = URL_SAFE_NO_PAD
                .decode(&p.x)
                .map_err(|_| KeyError::CoordinateSize)?;
            refuse_small_order(&x)?;
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(alg) => Some(signing_algorithm(alg).ok_or(KeyError::NotSignatureAlgorithm)?),
        };
        if alg.is_some_and(|a| !kind.fits(a)) {
            return Err(KeyError::AlgorithmMismatch);
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| KeyError::Undecodable)?;
        Ok(Self {
            kid: jwk.common.key_id,
            kind,
            alg,
            key,
        })
    }

    /// A public key for `alg` as SubjectPublicKeyInfo DER, or, for EdDSA, the raw 32 bytes.
    pub(crate) fn from_der(alg: Algorithm, der: &[u8]) -> Result<Self, KeyError> {
        let key = |kind, key| Self {
            kid: None,
            kind,
            alg: None,
            key,
        };
        if alg == Algorithm::EdDSA && der.len() == 32 {
            refuse_small_order(der)?;
            return Ok(key(KeyKind::Ed25519, DecodingKey::from_ed_der(der)));
        }
        let spki = spki::SubjectPublicKeyInfoRef::try_from(der)
            .map_err(|e| KeyError::NotSpki(e.to_string()))?;
        let bytes = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| KeyError::NotSpki("key bit string has unused bits".into()))?;
        let (kind, expected_oid) = match alg {
            Algorithm::ES256 => (KeyKind::EcP256, "1.2.840.10045.2.1"),
            Algorithm::ES384 => (KeyKind::EcP384, "1.2.840.10045.2.1"),
            Algorithm::EdDSA => (KeyKind::Ed25519, "1.3.101.112"),
            // The RSA algorithms; HS* lands here too and is refused by `fits` below.
            _ => (KeyKind::Rsa, "1.2.840.113549.1.1.1"),
        };
        let oid = spki.algorithm.oid.to_string();
        if oid != expected_oid || !kind.fits(alg) {
            return Err(KeyError::DerAlgorithm {
                oid,
                requested: alg,
            });
        }
        // For these three `jsonwebtoken` hands the bytes to `ring` as they are: the PKCS#1
        // `RSAPublicKey`, the uncompressed EC point, the raw Ed25519 key.
        if kind == KeyKind::Ed25519 {
            refuse_small_order(bytes)?;
        }
        let decoding = match kind {
            KeyKind::Rsa => DecodingKey::from_rsa_der(bytes),
            KeyKind::Ed25519 => DecodingKey::from_ed_der(bytes),
            _ => DecodingKey::from_ec_der(bytes),
        };
        Ok(key(kind, decoding))
    }

    /// The single key of an HS* issuer.
    pub(crate) fn shared_secret(secret: &[u8]) -> Self {
        Self {
            kid: None,
            kind: KeyKind::Hmac,
            alg: None,
            key: DecodingKey::from_secret(secret),
        }
    }

    /// The JWK's `kid`.
    pub(crate) fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// What kind of key this is.
    pub(crate) fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Whether this key may verify `alg`: its kind fits, and its `alg`, if stated, is `alg`.
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }

    /// Whether `signature` (base64url, as in a JWS) is `alg`'s signature of `message` under
    /// this key. `Err` when the key does not fit `alg`; `Ok(false)` for a bad signature.
    pub(crate) fn verify(
        &self,
        alg: Algorithm,
        message: &[u8],
        signature: &str,
    ) -> Result<bool, KeyError> {
        if !self.accepts(alg) {
            return Err(KeyError::Unfit {
                kind: self.kind,
                alg: self.alg,
                requested: alg,
            });
        }
        // An error here is a signature that is not base64url: not a valid signature.
        Ok(jsonwebtoken::crypto::verify(signature, message, &self.key, alg).unwrap_or(false))
    }
}

/// The encodings of the Ed25519 points of small order (the identity, and points of order 2,
/// 4 and 8, with their non-canonical spellings), compared without the sign bit, as
/// libsodium's `has_small_order` does. A signature made without any private key (`R` the
/// identity, `S` zero) verifies under such a "public key" with `ring`'s cofactorless
/// check, so a JWK holding one would let anyone sign as its owner.
const SMALL_ORDER: [[u8; 32]; 7] = [
    [0; 32],
    {
        let mut one = [0; 32];
        one[0] = 1;
        one
    },
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
    // p - 1, p and p + 1: non-canonical spellings of order-2, -4 and -1 points.
    {
        let mut p = [0xff; 32];
        p[0] = 0xec;
        p[31] = 0x7f;
        p
    },
    {
        let mut p = [0xff; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        p
    },
    {
        let mut p = [0xff; 32];
        p[0] = 0xee;
        p[31] = 0x7f;
        p
    },
];

/// Refuses an Ed25519 public key of small order (see [`SMALL_ORDER`]).
fn refuse_small_order(key: &[u8]) -> Result<(), KeyError> {
    let Ok(key) = <[u8; 32]>::try_from(key) else {
        return Err(KeyError::CoordinateSize);
    };
    if is_small_order_ed25519(&key) {
        return Err(KeyError::WeakKey);
    }
    Ok(())
}

/// Whether an Ed25519 public key is of small order (see [`SMALL_ORDER`]): no key to trust,
/// in a JWK or in a certificate.
pub(crate) fn is_small_order_ed25519(key: &[u8; 32]) -> bool {
    let mut masked = *key;
    masked[31] &= 0x7f;
    SMALL_ORDER.contains(&masked)
}

/// Length of a base64url (unpadded) value once decoded.
fn decoded_len(value: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(value).ok().map(|bytes| bytes.len())
}

fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        KeyAlgorithm::RSA1_5 | KeyAlgorithm::RSA_OAEP | KeyAlgorithm::RSA_OAEP_256 => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // RFC 7517 appendix A.1 public keys.
    const EC_X: &str = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4";
    const EC_Y: &str = "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM";

    fn ec() -> serde_json::Value {
        json!({ "kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y })
    }

    #[test]
    fn key_for_another_use_is_refused() {
        let mut enc = ec();
        enc["use"] = json!("enc");
        assert!(matches!(
            VerifyingKey::from_jwk(enc),
            Err(KeyError::NotForSignatures)
        ));
        let mut wrap = ec();
        wrap["key_ops"] = json!(["wrapKey"]);
        assert!(matches!(
            VerifyingKey::from_jwk(wrap),
            Err(KeyError::NotForVerification)
        ));
    }

    #[test]
    fn stated_alg_narrows_the_key_to_that_algorithm() {
        let mut rsa = json!({ "kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "PS256" });
        let key = VerifyingKey::from_jwk(rsa.clone()).expect("parses");
        assert!(key.accepts(Algorithm::PS256));
        let err = key.verify(Algorithm::RS256, b"m", "AA").expect_err("unfit");
        assert!(err.to_string().contains("PS256"), "{err}");
        rsa["alg"] = json!("ES256");
        assert!(matches!(
            VerifyingKey::from_jwk(rsa),
            Err(KeyError::AlgorithmMismatch)
        ));
    }

    #[test]
    fn curve_decides_the_algorithm() {
        let mut p384 = ec();
        p384["crv"] = json!("P-384");
        assert!(matches!(
            VerifyingKey::from_jwk(p384),
            Err(KeyError::CoordinateSize)
        ));
        let key = VerifyingKey::from_jwk(ec()).expect("parses");
        assert_eq!(key.kind(), KeyKind::EcP256);
        assert!(key.verify(Algorithm::ES384, b"m", "AA").is_err());
        assert!(!key.verify(Algorithm::ES256, b"m", "AA").expect("fits"));
    }

    #[test]
    fn small_order_ed25519_keys_are_refused() {
        let identity = {
            let mut x = [0u8; 32];
            x[0] = 1;
            URL_SAFE_NO_PAD.encode(x)
        };
        let jwk = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": identity });
        assert!(matches!(
            VerifyingKey::from_jwk(jwk),
            Err(KeyError::WeakKey)
        ));
        let mut high_bit = [0u8; 32];
        high_bit[0] = 1;
        high_bit[31] = 0x80;
        assert!(matches!(
            VerifyingKey::from_der(Algorithm::EdDSA, &high_bit),
            Err(KeyError::WeakKey)
        ));
        // A real key passes.
        let real = URL_SAFE_NO_PAD.encode([
            0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64,
            0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68,
            0xf7, 0x07, 0x51, 0x1a,
        ]);
        let jwk = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": real });
        assert!(VerifyingKey::from_jwk(jwk).is_ok());
    }

    #[test]
    fn symmetric_jwk_is_refused() {
        let oct = json!({ "kty": "oct", "k": "c2VjcmV0" });
        assert!(matches!(
            VerifyingKey::from_jwk(oct),
            Err(KeyError::Symmetric)
        ));
    }
}
