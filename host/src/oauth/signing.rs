//! The server's signing keys: PKCS#8 PEM private keys read through their secret reference,
//! their public halves as JWKs, and compact JWS signing (`ring`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::json;

use super::settings::{SigningAlgorithm, SigningKeySettings};

/// A private key that signs tokens.
pub(crate) struct SigningKey {
    kid: String,
    algorithm: SigningAlgorithm,
    pair: Pair,
    rng: SystemRandom,
}

enum Pair {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads and parses the key `settings` names. The error says what to fix, never the key.
    pub(crate) fn load(settings: &SigningKeySettings) -> Result<Self, String> {
        let pem = settings.private_key.resolve().map_err(|e| e.to_string())?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.expose().as_bytes()).map_err(|_| {
            format!(
                "{} is not a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`); make one \
                 with `portcullis signing-key new`",
                settings.private_key
            )
        })?;
        let rng = SystemRandom::new();
        let pair = match settings.algorithm {
            SigningAlgorithm::EdDSA => {
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
                    .map(Pair::Ed25519)
                    .map_err(|e| format!("{} is not an Ed25519 key ({e})", settings.private_key))?
            }
            SigningAlgorithm::ES256 => EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                der.secret_pkcs8_der(),
                &rng,
            )
            .map(Pair::P256)
            .map_err(|e| format!("{} is not a P-256 key ({e})", settings.private_key))?,
        };
        Ok(Self {
            kid: settings.kid.clone(),
            algorithm: settings.algorithm,
            pair,
            rng,
        })
    }

    /// The key id.
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (`use: sig`, `alg` and `kid` set).
    pub(crate) fn public_jwk(&self) -> serde_json::Value {
        match &self.pair {
            Pair::Ed25519(pair) => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
                "use": "sig",
                "alg": "EdDSA",
                "kid": self.kid,
            }),
            Pair::P256(pair) => {
                // Uncompressed point: 0x04 || X (32) || Y (32).
                let point = pair.public_key().as_ref();
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                    "use": "sig",
                    "alg": "ES256",
                    "kid": self.kid,
                })
            }
        }
    }

    /// A compact JWS of `claims` with header `{alg, kid, typ}`.
    pub(crate) fn sign(&self, typ: &str, claims: &serde_json::Value) -> Result<String, String> {
        let header = json!({ "alg": self.algorithm.name(), "kid": self.kid, "typ": typ });
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = match &self.pair {
            Pair::Ed25519(pair) => pair.sign(token.as_bytes()).as_ref().to_vec(),
            Pair::P256(pair) => pair
                .sign(&self.rng, token.as_bytes())
                .map_err(|_| "the ECDSA signature failed".to_owned())?
                .as_ref()
                .to_vec(),
        };
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }
}
