//! The identity CA: its certificate and key, read once at load, and the certificates it
//! signs — client certificates for agents ([`Ca::issue`]), and, for `portcullis identity
//! init`, the CA itself and a server certificate for the gateway's own listener
//! ([`generate`]), so that agents that trust the CA (as `datagrout-conduit` does with the
//! `ca_cert_pem` it is given) can verify the gateway too.

use rcgen::PublicKeyData as _;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use time::OffsetDateTime;

use super::public_key::AgentKey;
use crate::engine::mtls::client_cert_from_der;
use crate::secret::SecretRef;

/// Leaves start this long before they are issued, for clocks a little behind.
const BACKDATE_SECS: i64 = 60;

/// The CA cannot be read or cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A reference could not be resolved.
    #[error("`{key}`: {reason}")]
    Read {
        /// `ca_cert` or `ca_key`.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// Signing failed.
    #[error("the identity CA could not sign: {0}")]
    Sign(String),
}

/// The CA, ready to sign.
pub struct Ca {
    /// The certificate, PEM, as handed to agents.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// Its subject, RFC 4514: the issuer of every certificate it signs.
    pub subject: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// What one issued certificate is.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// PEM.
    pub pem: String,
    /// SHA-256 of the DER, lower-case hex.
    pub fingerprint: String,
    /// Serial number, hex.
    pub serial: String,
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
}

impl Ca {
    /// Reads the CA from its references and checks that the key is the certificate's.
    pub fn load(cert: &SecretRef, key: &SecretRef) -> Result<Self, CaError> {
        let cert_pem = cert.resolve().map_err(|e| CaError::Read {
            key: "ca_cert",
            reason: e.to_string(),
        })?;
        let key_pem = key.resolve().map_err(|e| CaError::Read {
            key: "ca_key",
            reason: e.to_string(),
        })?;
        Self::from_pem(cert_pem.expose(), key_pem.expose())
    }

    /// The CA from its PEM certificate and PKCS#8 PEM key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let read = |key, reason: String| CaError::Read { key, reason };
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| read("ca_cert", format!("not a PEM certificate: {e}")))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| read("ca_key", format!("not a PKCS#8 PEM private key: {e}")))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| read("ca_cert", format!("not an X.509 certificate: {e}")))?;
        if !parsed.is_ca() {
            return Err(read(
                "ca_cert",
                "is not a CA certificate (no basicConstraints CA:TRUE)".into(),
            ));
        }
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(read(
                "ca_key",
                "is not the key of `ca_cert`; give the pair `portcullis identity init` wrote"
                    .into(),
            ));
        }
        let subject = client_cert_from_der(&cert_der)
            .map_err(|e| read("ca_cert", e.to_string()))?
            .subject;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| read("ca_cert", format!("cannot sign with it: {e}")))?;
        Ok(Self {
            cert_pem: cert_pem.trim_end().to_owned() + "\n",
            cert_der,
            subject,
            issuer,
        })
    }

    /// Signs a client certificate for `key`: CN `name`, URI SAN `subject`, client
    /// authentication only, valid from a minute ago for `lifetime_secs`.
    pub fn issue(
        &self,
        key: &AgentKey,
        name: &str,
        subject: &str,
        now: i64,
        lifetime_secs: u64,
    ) -> Result<Leaf, CaError> {
        let sign = |e: rcgen::Error| CaError::Sign(e.to_string());
        let mut params = CertificateParams::default();
        let serial = serial()?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let uri = Ia5String::try_from(subject.to_owned()).map_err(sign)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let not_after = now.saturating_add(i64::try_from(lifetime_secs).unwrap_or(i64::MAX));
        params.not_before = at(now - BACKDATE_SECS)?;
        params.not_after = at(not_after)?;
        let cert = params.signed_by(key, &self.issuer).map_err(sign)?;
        Ok(Leaf {
            pem: cert.pem(),
            fingerprint: hex::encode(crate::crypto::sha256(cert.der())),
            serial: hex::encode(serial),
            not_after,
        })
    }
}

/// A new CA and a server certificate it signed, all PEM: what `portcullis identity init`
/// writes.
#[derive(Debug)]
pub struct Generated {
    /// The CA certificate.
    pub ca_cert: String,
    /// The CA's PKCS#8 key.
    pub ca_key: String,
    /// A server certificate for `server_names` (DNS names or IP addresses).
    pub server_cert: String,
    /// Its key.
    pub server_key: String,
}

/// Makes a new ECDSA P-256 CA named `common_name` (valid ten years) and a server
/// certificate for `server_names` (valid 397 days).
pub fn generate(common_name: &str, server_names: &[String]) -> Result<Generated, CaError> {
    let sign = |e: rcgen::Error| CaError::Sign(e.to_string());
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let ca_key = KeyPair::generate().map_err(sign)?;
    let mut params = CertificateParams::default();
    params.serial_number = Some(SerialNumber::from_slice(&serial()?));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Portcullis");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = at(now - BACKDATE_SECS)?;
    params.not_after = at(now + 10 * 365 * 86_400)?;
    let ca_cert = params.self_signed(&ca_key).map_err(sign)?;
    let issuer = Issuer::new(params, &ca_key);
    let server_key = KeyPair::generate().map_err(sign)?;
    let mut server = CertificateParams::new(server_names.to_vec()).map_err(sign)?;
    server.serial_number = Some(SerialNumber::from_slice(&serial()?));
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        server_names.first().map_or("portcullis", String::as_str),
    );
    server.distinguished_name = dn;
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    server.not_before = at(now - BACKDATE_SECS)?;
    server.not_after = at(now + 397 * 86_400)?;
    let server_cert = server.signed_by(&server_key, &issuer).map_err(sign)?;
    Ok(Generated {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
    })
}

/// A positive 128-bit serial number.
fn serial() -> Result<[u8; 16], CaError> {
    let mut bytes = crate::crypto::random_bytes::<16>()
        .ok_or_else(|| CaError::Sign("the system random source failed".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(bytes)
}

fn at(unix: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| CaError::Sign(e.to_string()))
}

/// RFC 3339 (UTC, seconds) for a Unix time.
pub fn rfc3339(unix: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix.to_string(),
    }
}
