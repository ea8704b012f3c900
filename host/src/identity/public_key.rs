//! The public key an agent registers: one PEM `PUBLIC KEY` (SubjectPublicKeyInfo), and only
//! the kinds worth certifying — RSA of 2048 bits or more, ECDSA on P-256 or P-384, Ed25519.
//! The private key never comes here.

use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The largest PEM accepted (an RSA-8192 key is about 1.5 KB).
pub const MAX_PEM_BYTES: usize = 8 * 1024;

const RSA: &str = "1.2.840.113549.1.1.1";
const EC: &str = "1.2.840.10045.2.1";
const ED25519: &str = "1.3.101.112";
const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";

/// A public key fit to certify.
#[derive(Debug, Clone)]
pub struct AgentKey {
    /// The subjectPublicKey bits.
    key: Vec<u8>,
    algorithm: &'static rcgen::SignatureAlgorithm,
    /// `RSA-3072`, `P-256`, `Ed25519`: for logs and answers.
    pub kind: String,
}

/// Why a key is refused; the message says what would be accepted.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not one PEM `PUBLIC KEY` block.
    #[error("`public_key_pem` is not one PEM `PUBLIC KEY` block (SubjectPublicKeyInfo): {0}")]
    NotPem(String),
    /// A key kind that is not certified.
    #[error(
        "{0} keys are not certified; use ECDSA P-256 or P-384, Ed25519, or RSA of at least 2048 bits"
    )]
    Unsupported(String),
    /// An RSA key that is too short.
    #[error("an RSA key of {0} bits is too weak; use at least 2048 bits (or ECDSA P-256)")]
    WeakRsa(usize),
    /// A malformed key.
    #[error("the public key is malformed: {0}")]
    Malformed(&'static str),
}

impl rcgen::PublicKeyData for AgentKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

/// Reads and vets `pem`.
pub fn parse(pem: &str) -> Result<AgentKey, KeyError> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(KeyError::NotPem(format!(
            "longer than {MAX_PEM_BYTES} bytes"
        )));
    }
    let (rest, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| KeyError::NotPem(e.to_string()))?;
    if block.label != "PUBLIC KEY" {
        return Err(KeyError::NotPem(format!(
            "the block is `{}`; send the public key, never the private key or a certificate",
            block.label
        )));
    }
    if rest.iter().any(|b| !b.is_ascii_whitespace()) {
        return Err(KeyError::NotPem("text follows the block".into()));
    }
    let (rest, spki) = SubjectPublicKeyInfo::from_der(&block.contents)
        .map_err(|e| KeyError::NotPem(e.to_string()))?;
    if !rest.is_empty() {
        return Err(KeyError::NotPem("bytes follow the key's DER".into()));
    }
    let oid = spki.algorithm.algorithm.to_id_string();
    let bits = spki.subject_public_key.data.to_vec();
    let (algorithm, kind) = match oid.as_str() {
        RSA => {
            let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
                return Err(KeyError::Malformed("not an RSA public key"));
            };
            let size = rsa.key_size();
            if size < 2048 {
                return Err(KeyError::WeakRsa(size));
            }
            if size > 8192 {
                return Err(KeyError::Unsupported(format!("RSA-{size}")));
            }
            if rsa.exponent.last().is_none_or(|b| b & 1 == 0) || rsa.exponent == [1] {
                return Err(KeyError::Malformed(
                    "the RSA exponent is not odd and greater than 1",
                ));
            }
            if has_small_factor(rsa.modulus) {
                return Err(KeyError::Malformed(
                    "the RSA modulus has a small factor (it is even, or divisible by a prime \
                     below 752): anyone could factor it",
                ));
            }
            (&PKCS_RSA_SHA256, format!("RSA-{size}"))
        }
        EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            let (algorithm, kind, length, agreement) = match curve.as_str() {
                P256 => (
                    &PKCS_ECDSA_P256_SHA256,
                    "P-256",
                    65,
                    &ring::agreement::ECDH_P256,
                ),
                P384 => (
                    &PKCS_ECDSA_P384_SHA384,
                    "P-384",
                    97,
                    &ring::agreement::ECDH_P384,
                ),
                other => {
                    return Err(KeyError::Unsupported(format!(
                        "ECDSA on the curve `{other}`"
                    )));
                }
            };
            if bits.len() != length || bits[0] != 4 || !on_curve(agreement, &bits) {
                return Err(KeyError::Malformed(
                    "the point is not an uncompressed point of its curve",
                ));
            }
            (algorithm, kind.to_owned())
        }
        ED25519 => {
            if spki.algorithm.parameters.is_some() {
                return Err(KeyError::Malformed("Ed25519 keys carry no parameters"));
            }
            let Ok(key) = <[u8; 32]>::try_from(bits.as_slice()) else {
                return Err(KeyError::Malformed("an Ed25519 key is 32 bytes"));
            };
            if crate::crypto::jwk::is_small_order_ed25519(&key) {
                return Err(KeyError::Malformed("the Ed25519 key is of small order"));
            }
            (&PKCS_ED25519, "Ed25519".to_owned())
        }
        other => return Err(KeyError::Unsupported(format!("`{other}`"))),
    };
    Ok(AgentKey {
        key: bits,
        algorithm,
        kind,
    })
}

/// Whether `point` is a valid public point of the curve: `ring` validates a peer's point
/// (on the curve, not the identity) before any key agreement, so one agreement with a
/// throw-away key is the check.
fn on_curve(algorithm: &'static ring::agreement::Algorithm, point: &[u8]) -> bool {
    let rng = ring::rand::SystemRandom::new();
    let Ok(ours) = ring::agreement::EphemeralPrivateKey::generate(algorithm, &rng) else {
        return false;
    };
    let peer = ring::agreement::UnparsedPublicKey::new(algorithm, point);
    ring::agreement::agree_ephemeral(ours, &peer, |_| ()).is_ok()
}

/// Whether the big-endian `modulus` is even or divisible by an odd prime below 752 (the
/// CA/Browser Forum's baseline requirement 6.1.6 for the keys a CA certifies).
fn has_small_factor(modulus: &[u8]) -> bool {
    if modulus.last().is_none_or(|b| b & 1 == 0) {
        return true;
    }
    (3u32..752)
        .filter(|&p| (2..p).take_while(|d| d * d <= p).all(|d| p % d != 0))
        .any(|p| {
            modulus
                .iter()
                .fold(0u32, |rest, &byte| (rest * 256 + u32::from(byte)) % p)
                == 0
        })
}
