//! Verification keys: a JWKS parsed once into `jsonwebtoken` [`DecodingKey`]s indexed by
//! `kid`, the shared-secret key for HS* issuers, and the choice of a key for one token.
//!
//! A key is used only for an algorithm it fits: its `kty` (and curve) must match the
//! algorithm's family, and its `alg`, when the JWKS states one, must equal the token's.
//! Symmetric (`oct`) keys in a JWKS and keys marked for encryption are dropped, so a key set
//! fetched from an IdP can never turn into an HMAC secret.

use std::collections::HashMap;
use std::fmt;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// What kind of key this is, which decides the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
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

/// One parsed verification key.
pub(super) struct VerifyKey {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The JWK's `alg`, when it names one.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl VerifyKey {
    fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material: for HS* it is the shared secret.
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The keys of one issuer.
#[derive(Debug, Default)]
pub(super) struct KeySet {
    keys: Vec<VerifyKey>,
    by_kid: HashMap<String, Vec<usize>>,
}

/// The outcome of looking for a token's key.
#[derive(Debug)]
pub(super) enum Lookup<'a> {
    Found(&'a VerifyKey),
    /// No key has this `kid` (or, without a `kid`, none fits the algorithm).
    Unknown,
    /// The token has no `kid` and more than one key fits.
    Ambiguous,
}

/// A key set that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The document is not a JWKS.
    #[error("not a JWKS (a JSON object with a `keys` array): {0}")]
    NotJwks(#[from] serde_json::Error),
    /// No key in the set can verify a JWS signature.
    #[error(
        "no usable signature key among its {total} keys (RSA, EC P-256/P-384 and Ed25519 are supported; `oct` and encryption keys are ignored)"
    )]
    NoUsableKeys {
        /// How many keys the document had.
        total: usize,
    },
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Parses a JWKS document, skipping keys that cannot verify a signature.
    pub(super) fn from_jwks(json: &[u8]) -> Result<Self, JwksError> {
        let raw: RawJwks = serde_json::from_slice(json)?;
        let total = raw.keys.len();
        let mut set = Self::default();
        for value in raw.keys {
            match parse_jwk(value) {
                Ok(key) => set.push(key),
                Err(why) => tracing::debug!(why, "skipping a JWKS key"),
            }
        }
        if set.keys.is_empty() {
            return Err(JwksError::NoUsableKeys { total });
        }
        Ok(set)
    }

    /// The single key of an HS* issuer.
    pub(super) fn shared_secret(secret: &[u8]) -> Self {
        let mut set = Self::default();
        set.push(VerifyKey {
            kid: None,
            kind: KeyKind::Hmac,
            alg: None,
            key: DecodingKey::from_secret(secret),
        });
        set
    }

    fn push(&mut self, key: VerifyKey) {
        if let Some(kid) = &key.kid {
            self.by_kid
                .entry(kid.clone())
                .or_default()
                .push(self.keys.len());
        }
        self.keys.push(key);
    }

    /// Number of usable keys.
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Chooses the key for a token with `kid` and `alg`. With a `kid`, only keys of that id
    /// are candidates. Without one, the key must be the only key that fits `alg`, except for
    /// a shared-secret issuer, whose single key ignores `kid`.
    pub(super) fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        if let [only] = self.keys.as_slice()
            && only.kind == KeyKind::Hmac
        {
            return if only.accepts(alg) {
                Lookup::Found(only)
            } else {
                Lookup::Unknown
            };
        }
        match kid {
            Some(kid) => self
                .by_kid
                .get(kid)
                .into_iter()
                .flatten()
                .map(|&i| &self.keys[i])
                .find(|k| k.accepts(alg))
                .map_or(Lookup::Unknown, Lookup::Found),
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.accepts(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Lookup::Found(key),
                    (None, _) => Lookup::Unknown,
                    (Some(_), Some(_)) => Lookup::Ambiguous,
                }
            }
        }
    }
}

fn parse_jwk(value: serde_json::Value) -> Result<VerifyKey, &'static str> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|_| "unsupported key type or curve")?;
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return Err("key is not for signatures (`use`)");
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("key is not for verification (`key_ops`)");
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::EcP256,
            EllipticCurve::P384 => KeyKind::EcP384,
            _ => return Err("unsupported elliptic curve"),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        AlgorithmParameters::OctetKeyPair(_) => return Err("unsupported OKP curve"),
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric keys are never taken from a JWKS");
        }
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
        return Err("key coordinates do not have the curve's size");
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => Some(signing_algorithm(alg).ok_or("key `alg` is not a signature algorithm")?),
    };
    if alg.is_some_and(|a| !kind.fits(a)) {
        return Err("key `alg` does not match its key type");
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "key parameters do not decode")?;
    Ok(VerifyKey {
        kid: jwk.common.key_id,
        kind,
        alg,
        key,
    })
}

/// Length of a base64url (unpadded) value once decoded.
fn decoded_len(value: &str) -> Option<usize> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .ok()
        .map(|bytes| bytes.len())
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
    const RSA_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

    fn set(keys: serde_json::Value) -> Result<KeySet, JwksError> {
        KeySet::from_jwks(json!({ "keys": keys }).to_string().as_bytes())
    }

    fn ec(kid: &str) -> serde_json::Value {
        json!({ "kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y, "kid": kid })
    }

    fn rsa(kid: &str) -> serde_json::Value {
        json!({ "kty": "RSA", "n": RSA_N, "e": "AQAB", "alg": "RS256", "kid": kid })
    }

    #[test]
    fn keys_are_found_by_kid_and_algorithm() {
        let s = set(json!([ec("e1"), rsa("r1")])).expect("parses");
        assert!(
            matches!(s.find(Some("e1"), Algorithm::ES256), Lookup::Found(k) if k.kind == KeyKind::EcP256)
        );
        assert!(matches!(
            s.find(Some("r1"), Algorithm::RS256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            s.find(Some("nope"), Algorithm::RS256),
            Lookup::Unknown
        ));
    }

    #[test]
    fn key_is_refused_for_an_algorithm_of_another_family_or_alg() {
        let s = set(json!([ec("e1"), rsa("r1")])).expect("parses");
        assert!(matches!(
            s.find(Some("e1"), Algorithm::RS256),
            Lookup::Unknown
        ));
        assert!(matches!(
            s.find(Some("e1"), Algorithm::ES384),
            Lookup::Unknown
        ));
        // `alg: RS256` on the JWK rules out the other RSA algorithms.
        assert!(matches!(
            s.find(Some("r1"), Algorithm::PS256),
            Lookup::Unknown
        ));
        assert!(matches!(
            s.find(Some("r1"), Algorithm::HS256),
            Lookup::Unknown
        ));
    }

    #[test]
    fn missing_kid_uses_the_only_fitting_key() {
        let s = set(json!([ec("e1"), rsa("r1")])).expect("parses");
        assert!(matches!(s.find(None, Algorithm::ES256), Lookup::Found(_)));
        let s = set(json!([ec("e1"), ec("e2")])).expect("parses");
        assert!(matches!(s.find(None, Algorithm::ES256), Lookup::Ambiguous));
        assert!(matches!(s.find(None, Algorithm::EdDSA), Lookup::Unknown));
    }

    #[test]
    fn symmetric_and_encryption_keys_are_dropped() {
        let oct = json!({ "kty": "oct", "k": "c2VjcmV0", "kid": "h" });
        let mut enc = rsa("enc");
        enc["use"] = json!("enc");
        enc["alg"] = json!("RSA-OAEP");
        let err = set(json!([oct, enc])).expect_err("nothing usable");
        assert!(matches!(err, JwksError::NoUsableKeys { total: 2 }), "{err}");
        let s = set(json!([{ "kty": "oct", "k": "c2VjcmV0", "kid": "h" }, ec("e1")])).expect("ok");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn unsupported_keys_are_skipped_not_fatal() {
        let odd = json!({ "kty": "EC", "crv": "secp256k1", "x": EC_X, "y": EC_Y, "kid": "k" });
        let es512 = json!({ "kty": "EC", "crv": "P-521", "x": EC_X, "y": EC_Y, "alg": "ES512" });
        let s = set(json!([odd, es512, ec("e1")])).expect("parses");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn keys_with_coordinates_of_the_wrong_size_are_dropped() {
        let short = json!({ "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "bad" });
        let p384 = json!({ "kty": "EC", "crv": "P-384", "x": EC_X, "y": EC_Y, "kid": "bad" });
        let okp = json!({ "kty": "OKP", "crv": "Ed25519", "x": "AA", "kid": "bad" });
        assert!(matches!(
            set(json!([short.clone(), p384.clone(), okp.clone()])),
            Err(JwksError::NoUsableKeys { total: 3 })
        ));
        let s = set(json!([short, p384, okp, ec("e1")])).expect("parses");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn jwk_alg_must_match_its_key_type() {
        let mut wrong = ec("e1");
        wrong["alg"] = json!("RS256");
        assert!(set(json!([wrong])).is_err());
    }

    #[test]
    fn not_a_jwks_is_an_error() {
        assert!(matches!(
            KeySet::from_jwks(b"[]"),
            Err(JwksError::NotJwks(_))
        ));
        assert!(matches!(
            KeySet::from_jwks(b"{\"keys\":[]}"),
            Err(JwksError::NoUsableKeys { .. })
        ));
    }

    #[test]
    fn shared_secret_set_fits_only_hmac_and_ignores_kid() {
        let s = KeySet::shared_secret(b"0123456789abcdef0123456789abcdef");
        assert!(matches!(
            s.find(Some("any"), Algorithm::HS256),
            Lookup::Found(_)
        ));
        assert!(matches!(s.find(None, Algorithm::HS512), Lookup::Found(_)));
        assert!(matches!(s.find(None, Algorithm::RS256), Lookup::Unknown));
        assert!(!format!("{:?}", s).contains("0123"));
    }
}
