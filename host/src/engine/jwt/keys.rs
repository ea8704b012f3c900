//! An issuer's verification keys: a JWKS parsed once into [`VerifyingKey`]s indexed by
//! `kid`, the shared-secret key for HS* issuers, and the choice of a key for one token.
//!
//! Which key fits which algorithm, and which JWKs are refused (`oct`, encryption keys,
//! coordinates of the wrong size), is decided by `crypto::jwk`, the verification path
//! guests use too; a refused key is skipped, so a key set fetched from an IdP can never turn
//! into an HMAC secret.

use std::collections::HashMap;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::crypto::jwk::{KeyKind, VerifyingKey};

/// The keys of one issuer.
#[derive(Debug, Default)]
pub(super) struct KeySet {
    keys: Vec<VerifyingKey>,
    by_kid: HashMap<String, Vec<usize>>,
}

/// The outcome of looking for a token's key.
#[derive(Debug)]
pub(super) enum Lookup<'a> {
    Found(&'a VerifyingKey),
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
            match VerifyingKey::from_jwk(value) {
                Ok(key) => set.push(key),
                Err(why) => tracing::debug!(%why, "skipping a JWKS key"),
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
        set.push(VerifyingKey::shared_secret(secret));
        set
    }

    fn push(&mut self, key: VerifyingKey) {
        if let Some(kid) = key.kid() {
            self.by_kid
                .entry(kid.to_owned())
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
            && only.kind() == KeyKind::Hmac
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
            matches!(s.find(Some("e1"), Algorithm::ES256), Lookup::Found(k) if k.kind() == KeyKind::EcP256)
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
