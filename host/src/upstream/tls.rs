//! TLS to an `https://` upstream: `[routes.upstream_tls]` and the rustls client
//! configuration built from it.
//!
//! - **Roots.** The system's trust store (`rustls-native-certs`: the platform store, or the
//!   file `SSL_CERT_FILE` names) plus the route's `ca_bundle`, when given. With
//!   `system_roots = false` only the bundle is trusted: the right choice for an upstream
//!   behind a private CA, since then no public CA can stand in for it.
//! - **Client certificate.** `client_cert` (PEM chain, a path) and `client_key` (PEM, by
//!   secret reference) present a certificate to the upstream (mTLS).
//! - **Names.** The upstream URL's host is the SNI name and the name the certificate must
//!   carry (an IP address needs an IP SAN); `Host` is the URL's authority.
//! - **Protocols.** ALPN offers `h2` and `http/1.1` (only `http/1.1` with `http2 = false`);
//!   HTTP/2 is used when the upstream picks it. An `https://` upstream is only ever reached over TLS: the connector refuses a plain
//!   connection, and a certificate error is a 502 with a log line naming what failed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Deserialize;

use crate::gateway::tls::certificates;
use crate::secret::SecretRef;

/// `[routes.upstream_tls]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSettings {
    /// PEM file of CA certificates trusted for this upstream (relative to the config file).
    pub ca_bundle: Option<PathBuf>,
    /// Whether the system's roots are trusted too (default `true`).
    pub system_roots: Option<bool>,
    /// PEM certificate chain presented to the upstream.
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM), by reference (`file://`, `env://`, `vault://`).
    pub client_key: Option<SecretRef>,
    /// Whether HTTP/2 is offered by ALPN (default `true`): on a fast network HTTP/1.1 costs
    /// the gateway less (`BENCHMARKS.md`, "Upstream side").
    pub http2: Option<bool>,
}

impl UpstreamTlsSettings {
    /// Checks the combination and makes paths absolute against `base_dir`; the error is the
    /// key under `upstream_tls` and the reason.
    pub fn validated(mut self, base_dir: &Path) -> Result<Self, (&'static str, String)> {
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => {
                return Err((
                    "client_key",
                    "`client_cert` needs its key: set `client_key` (e.g. \
                     `file:///etc/portcullis/upstream.key`)"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    "client_cert",
                    "`client_key` needs its certificate: set `client_cert`".into(),
                ));
            }
            _ => {}
        }
        if let Some(key) = &self.client_key
            && key.is_literal()
        {
            return Err((
                "client_key",
                "is a literal value; give the key by reference (`file://…`, `env://…` or \
                 `vault://…`), never in the config file"
                    .into(),
            ));
        }
        if self.system_roots == Some(false) && self.ca_bundle.is_none() {
            return Err((
                "system_roots",
                "`false` with no `ca_bundle` would trust no certificate; set `ca_bundle`".into(),
            ));
        }
        for path in [&mut self.ca_bundle, &mut self.client_cert]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = base_dir.join(&*path);
            }
        }
        if let Some(SecretRef::File(path)) = &mut self.client_key
            && path.is_relative()
        {
            *path = base_dir.join(&*path);
        }
        Ok(self)
    }
}

/// The rustls client configuration for an upstream: `settings` (or the defaults). Reads
/// the files and the key now.
pub fn client_config(
    settings: Option<&UpstreamTlsSettings>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let default = UpstreamTlsSettings::default();
    let settings = settings.unwrap_or(&default);
    let mut roots = if settings.system_roots.unwrap_or(true) {
        system_roots().clone()
    } else {
        RootCertStore::empty()
    };
    if let Some(bundle) = &settings.ca_bundle {
        for cert in certificates(bundle).map_err(|e| format!("`ca_bundle`: {e}"))? {
            roots
                .add(cert)
                .map_err(|e| format!("`ca_bundle` `{}`: not a CA: {e}", bundle.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(
            "no trusted roots: the system store is empty and no `ca_bundle` is set; \
                    set `ca_bundle`"
                .into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert).map_err(|e| format!("`client_cert`: {e}"))?;
            let pem = key.resolve().map_err(|e| format!("`client_key`: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(pem.expose().as_bytes())
                .map_err(|e| format!("`client_key` holds no usable PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("`client_cert` and `client_key` do not fit: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    // ALPN (`h2`, `http/1.1`) is the connector's to set.
    Ok(Arc::new(config))
}

/// The system's roots, read once per process (a few hundred certificates; unreadable
/// entries are skipped, as every TLS client does).
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::debug!(%error, "a system root certificate could not be read");
        }
        let mut roots = RootCertStore::empty();
        let (_, unusable) = roots.add_parsable_certificates(found.certs);
        if unusable > 0 {
            tracing::debug!(unusable, "system root certificates skipped");
        }
        roots
    })
}

/// The TLS failure inside a connection error, when there is one: rustls's own error, which
/// the upstream client hides inside `io::Error`s wrapping `io::Error`s (whose `source`
/// skips the wrapped error, so each is opened with `get_ref`).
pub fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(rustls) = e.downcast_ref::<rustls::Error>() {
            return Some(rustls.to_string());
        }
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => None,
            },
            None => e.source(),
        };
    }
    None
}
