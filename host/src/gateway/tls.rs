//! TLS for the listener (rustls with the `ring` provider): the server certificate, and
//! client certificates verified against `client_ca` (with its CRLs) and the identity CA
//! when mTLS is on. A verified client
//! certificate is described by [`client_cert_from_der`] and handed to the engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};

use super::Gateway;
use crate::config::model::{ClientAuth, Tls};
use crate::context::ClientCert;
use crate::engine::mtls::client_cert_from_der;
use crate::identity::Refusal;

/// TLS settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("`{}`: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the combination.
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

/// Builds the rustls server configuration, advertising `h2` and `http/1.1`.
///
/// Client certificates are asked for when `client_ca` is set or `gateway` serves an
/// identity CA ([`crate::identity`]), whose certificate joins the roots. CRLs from
/// `server.tls.crls` are checked for every chain (read here: they change on restart). A
/// certificate of the identity CA must also be vouched for by the store at the handshake
/// (and again on each request, [`Gateway::handle`]); the listener remembers which CA it
/// trusts so that one dropped from the configuration stops counting.
pub fn server_config(
    tls: &Tls,
    gateway: &Arc<Gateway>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| TlsError::Pem {
        path: tls.key.clone(),
        reason: format!("no usable private key: {e}"),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &tls.client_ca {
        for cert in certificates(ca)? {
            roots.add(cert).map_err(|e| TlsError::Pem {
                path: ca.clone(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
    }
    let identity = gateway.site().identity.clone();
    if let Some(authority) = &identity {
        roots
            .add(authority.ca.cert_der.clone())
            .map_err(|e| TlsError::Rustls(format!("the identity CA certificate: {e}")))?;
    }
    let builder = if roots.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut crls = Vec::new();
        for path in &tls.crls {
            let read = CertificateRevocationListDer::pem_file_iter(path)
                .and_then(|items| items.collect::<Result<Vec<_>, _>>())
                .map_err(|e| TlsError::Pem {
                    path: path.clone(),
                    reason: format!("not a PEM CRL: {e}"),
                })?;
            if read.is_empty() {
                return Err(TlsError::Pem {
                    path: path.clone(),
                    reason: "holds no PEM CRL (`-----BEGIN X509 CRL-----`)".into(),
                });
            }
            crls.extend(read);
        }
        // A CRL speaks for the CA that issued it; a CA without one in `crls` (the identity
        // CA, whose revocations are its store's, among them) is not revocation-checked.
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .with_crls(crls)
            .allow_unknown_revocation_status();
        let verifier = match tls.client_auth {
            ClientAuth::Optional => verifier.allow_unauthenticated(),
            ClientAuth::Required => verifier,
        };
        let verifier = verifier
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        match identity {
            None => builder.with_client_cert_verifier(verifier),
            Some(authority) => {
                gateway.set_listener_identity_ca(&authority.ca.subject);
                builder.with_client_cert_verifier(Arc::new(IdentityVerifier {
                    inner: verifier,
                    gateway: Arc::clone(gateway),
                    ca_subject: authority.ca.subject.clone(),
                }))
            }
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The web-PKI verifier, then the identity store for certificates of the identity CA.
#[derive(Debug)]
struct IdentityVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    gateway: Arc<Gateway>,
    ca_subject: String,
}

impl ClientCertVerifier for IdentityVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = client_cert_from_der(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if cert.issuer != self.ca_subject {
            return Ok(verified);
        }
        let site = self.gateway.site();
        match self.gateway.vouch(&site, cert) {
            Ok(_) => Ok(verified),
            Err(refusal) => {
                self.gateway
                    .metrics()
                    .identity("handshake", refusal.label());
                tracing::info!(
                    reason = refusal.as_str(),
                    "client certificate refused at the TLS handshake"
                );
                Err(rustls::Error::InvalidCertificate(match refusal {
                    Refusal::Expired => CertificateError::Expired,
                    Refusal::Revoked | Refusal::Replaced => CertificateError::Revoked,
                    Refusal::Unknown | Refusal::StoreUnavailable => {
                        CertificateError::ApplicationVerificationFailure
                    }
                }))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            reason: "holds no PEM certificate".into(),
        });
    }
    Ok(certs)
}

/// The engine's description of the verified peer certificate, if one was presented.
pub fn peer_certificate(connection: &rustls::ServerConnection) -> Option<ClientCert> {
    let der = connection.peer_certificates()?.first()?;
    match client_cert_from_der(der) {
        Ok(cert) => Some(cert),
        Err(error) => {
            // rustls verified it, so this is an unusual certificate rather than an attack;
            // the request goes on without a certificate identity.
            tracing::warn!(%error, "verified client certificate could not be described");
            None
        }
    }
}
