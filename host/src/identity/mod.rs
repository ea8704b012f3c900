//! Agent identity: a built-in CA that issues, rotates and revokes client certificates, and
//! the judgement of every certificate it signed, at the TLS handshake and on every request.
//!
//! The flow (what `datagrout-conduit`'s `register_identity` / `rotate_identity` speak):
//! 1. The agent makes a key pair and `POST`s the public key to `<path>/register` with a
//!    credential the chain of `[identity] route` accepts (a bearer token or an API key)
//!    holding `register_scope`. It gets a certificate: CN its name, a URI SAN from the
//!    `uri_san` template (`spiffe://{trust_domain}/agent/{id}`), client authentication only,
//!    `cert_lifetime_secs` long, with `ca_cert_pem` — the CA it also uses to verify the
//!    gateway (`portcullis identity init --server-name …` makes a listener certificate that
//!    chains to it).
//! 2. From then on the certificate is the credential: an `mtls` provider names the caller by
//!    its URI SAN and gives it the scopes recorded at registration (those of `[identity]
//!    scopes` the registering caller held, still in `scopes` now).
//! 3. Before it expires the agent `POST`s a new public key to `<path>/rotate` over mTLS with
//!    its current certificate, no token: same identity, new certificate; the old one keeps
//!    working for `rotation_overlap_secs`, then is refused.
//! 4. `portcullis identity revoke ID` ends it: every certificate of the identity is refused
//!    at the next handshake and on open connections within [`registry::REFRESH_EVERY`].
//!
//! Fail closed: a certificate that names the identity CA as issuer is accepted only while
//! the store has it on record in good standing ([`vouch`]); one the store does not
//! know (another gateway's, a restored CA key's, a store that was replaced) is refused.
//! Certificates of other CAs (`server.tls.client_ca`) are untouched, and honour CRLs from
//! `server.tls.crls`.

pub mod book;
pub mod ca;
mod endpoints;
pub mod guard;
pub mod public_key;
pub mod registry;
pub mod settings;

use std::sync::Arc;

pub use self::book::Refusal;
pub use self::ca::Ca;
pub(crate) use self::endpoints::serve;
pub use self::registry::{Registry, StoreError};
pub use self::settings::{IdentitySettings, RawIdentity};
use crate::context::{ClientCert, IssuedIdentity};

/// The endpoints below `[identity] path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST <path>/register`.
    Register,
    /// `POST <path>/rotate`.
    Rotate,
    /// `GET <path>/ca.pem`.
    CaPem,
}

impl Endpoint {
    /// The label in metrics and audit lines.
    pub fn label(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Rotate => "rotate",
            Self::CaPem => "ca.pem",
        }
    }
}

/// The identity CA of one configuration: settings, CA, store.
#[derive(Debug)]
pub struct IdentityAuthority {
    /// The validated section.
    pub settings: IdentitySettings,
    /// The CA.
    pub ca: Ca,
    /// The store.
    pub registry: Arc<Registry>,
}

/// `[identity]` could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The CA.
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IdentityAuthority {
    /// Reads the CA and opens the store (kept fresh while the authority lives).
    pub fn build(settings: IdentitySettings) -> Result<Self, BuildError> {
        let ca = Ca::load(&settings.ca_cert, &settings.ca_key)?;
        let registry = Registry::open(&settings.store)?;
        registry.keep_fresh();
        Ok(Self {
            settings,
            ca,
            registry,
        })
    }

    /// The endpoint `path` is, when it is exactly one.
    pub fn endpoint(&self, path: &str) -> Option<Endpoint> {
        let rest = path.strip_prefix(self.settings.path.as_str())?;
        Some(match rest {
            "/register" => Endpoint::Register,
            "/rotate" => Endpoint::Rotate,
            "/ca.pem" => Endpoint::CaPem,
            _ => return None,
        })
    }

    /// Whether `path`, read as an upstream might (case-blind, dots, a trailing slash), is
    /// at or below `[identity] path`: such paths are never proxied.
    pub fn owns(&self, path: &str) -> bool {
        let folded = crate::gateway::request::fold_path(path);
        let base = self.settings.path.to_ascii_lowercase();
        crate::engine::rules::path_has_prefix(&folded, &base)
    }

    /// The certificate's identity when it is the CA's and in good standing now.
    pub(crate) fn judge(&self, cert: &ClientCert, now: i64) -> Result<IssuedIdentity, Refusal> {
        if self.registry.is_stale() {
            return Err(Refusal::StoreUnavailable);
        }
        let overlap = i64::try_from(self.settings.rotation_overlap_secs).unwrap_or(i64::MAX);
        self.registry.read(|book| {
            let identity = book.judge(&cert.sha256_fingerprint, now, overlap)?;
            let current = identity
                .current()
                .is_some_and(|c| c.fingerprint == cert.sha256_fingerprint);
            Ok(IssuedIdentity {
                id: identity.id.clone(),
                name: identity.name.clone(),
                owner: identity.owner.clone(),
                subject: identity.subject.clone(),
                scopes: identity
                    .scopes
                    .iter()
                    .filter(|s| self.settings.scopes.contains(s))
                    .cloned()
                    .collect(),
                current,
            })
        })
    }
}

/// `cert` with its identity filled in when `authority`'s CA issued it and it is in good
/// standing now; a refusal when that CA issued it and it is not; `cert` unchanged when
/// another CA did. `listener_ca` is the subject of the identity CA the TLS listener was
/// started trusting: a certificate it signed is refused when the configuration being served
/// no longer runs that CA (nothing vouches for it any more).
pub fn vouch(
    authority: Option<&IdentityAuthority>,
    listener_ca: Option<&str>,
    mut cert: ClientCert,
    now: i64,
) -> Result<ClientCert, Refusal> {
    match authority {
        Some(authority) if authority.ca.subject == cert.issuer => {
            cert.issued = Some(authority.judge(&cert, now)?);
            Ok(cert)
        }
        _ if listener_ca == Some(cert.issuer.as_str()) => Err(Refusal::Unknown),
        _ => Ok(cert),
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
