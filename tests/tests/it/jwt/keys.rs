//! Signing keys made in the test: one RSA-2048 key per test binary (generating it is slow),
//! fresh EC P-256 and Ed25519 keys from ring, each with its public JWK.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};

/// A private key, its algorithm and its public JWK.
pub struct Signer {
    pub kid: String,
    pub alg: Algorithm,
    pub key: EncodingKey,
    pub jwk: Value,
}

impl Signer {
    /// A token over `claims` with header `{alg, kid}`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign")
    }

    /// A token with a hand-written header (for members `jsonwebtoken::Header` lacks).
    pub fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        sign_raw(&self.key, self.alg, header, claims)
    }
}

/// Signs `header.claims` with `key` as `alg`, whatever the header says.
pub fn sign_raw(key: &EncodingKey, alg: Algorithm, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).expect("sign");
    format!("{input}.{sig}")
}

/// The test binary's RSA key.
pub fn rsa_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA keygen"))
}

/// The public half of [`rsa_key`].
pub fn rsa_public() -> RsaPublicKey {
    rsa_key().to_public_key()
}

/// RS256 with the binary's RSA key.
pub fn rs256(kid: &str) -> Signer {
    let key = rsa_key();
    let der = key.to_pkcs1_der().expect("PKCS#1 DER");
    Signer {
        kid: kid.to_owned(),
        alg: Algorithm::RS256,
        key: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk: json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        }),
    }
}

/// A fresh ES256 key.
pub fn es256(kid: &str) -> Signer {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .expect("keygen");
    es256_from(kid, pkcs8.as_ref())
}

/// The ES256 key in `pkcs8` (DER).
pub fn es256_from(kid: &str, pkcs8: &[u8]) -> Signer {
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8,
        &SystemRandom::new(),
    )
    .expect("parse");
    let point = pair.public_key().as_ref();
    Signer {
        kid: kid.to_owned(),
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_der(pkcs8),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }),
    }
}

/// A fresh Ed25519 key.
pub fn eddsa(kid: &str) -> Signer {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
    eddsa_from(kid, pkcs8.as_ref())
}

/// The Ed25519 key in `pkcs8` (DER).
pub fn eddsa_from(kid: &str, pkcs8: &[u8]) -> Signer {
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8).expect("parse");
    Signer {
        kid: kid.to_owned(),
        alg: Algorithm::EdDSA,
        key: EncodingKey::from_ed_der(pkcs8),
        jwk: json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        }),
    }
}

/// A JWKS document with these signers' public keys.
pub fn jwks(signers: &[&Signer]) -> String {
    let keys: Vec<&Value> = signers.iter().map(|s| &s.jwk).collect();
    json!({ "keys": keys }).to_string()
}
