//! The gateway: an HTTP front end over the engine.
//!
//! - [`Gateway`] holds the current [`Site`] (swapped whole on reload) and the metrics, and
//!   answers requests with [`Gateway::handle`], which tests call without binding a port.
//! - [`listener`] accepts connections (HTTP/1.1 and HTTP/2, optionally TLS with client
//!   certificates) and drains them on shutdown.
//! - `handler` runs one request: public endpoints (RFC 9728 metadata, health, metrics, the
//!   forward-auth check), then [`admission`] (the one decision path, shared by the proxy,
//!   forward-auth, the tower layer in [`crate::embed`] and `portcullis eval`), MCP session
//!   binding (`sessions`) and the `proxy` to the upstream.
//! - [`Rejection`] is the one place where refusals get their status and challenge.
//!
//! Origin policy: a present `Origin` header must be the public URL's origin or one listed
//! in `server.allowed_origins`. Without that list, a gateway listening on a loopback
//! address also accepts `localhost` / loopback origins (local MCP clients and inspectors
//! run there); one listening elsewhere accepts only the public origin. Requests without
//! `Origin` (non-browser clients) are not affected.

pub mod admission;
pub mod body;
pub mod cors;
mod forward_auth;
pub(crate) mod handler;
pub mod listener;
pub(crate) mod listing;
mod metadata;
pub(crate) mod proxy;
pub mod rate_limit;
pub mod readiness;
mod rejection;
// Public for the fuzz targets (`fuzz/fuzz_targets/request_context.rs`), not an API.
#[doc(hidden)]
pub mod request;
pub(crate) mod sessions;
mod site;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use http::{Request, Response};

pub use self::body::{Body, BoxError};
pub use self::listener::serve;
pub use self::readiness::Readiness;
pub use self::rejection::ChallengeInfo;
pub use self::rejection::Rejection;
use self::sessions::SessionBindings;
pub use self::site::{LiveRoute, Site};
use crate::context::ClientCert;
use crate::engine::BoxFuture;
use crate::observability::Metrics;

/// What the listener knows about a connection.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: Option<SocketAddr>,
    /// The client certificate verified during the TLS handshake.
    pub client_cert: Option<ClientCert>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The peer's IP as a header value, rendered once per connection for
    /// `X-Forwarded-For` (see [`ConnInfo::new`]).
    pub peer_ip_value: Option<http::HeaderValue>,
}

impl ConnInfo {
    /// A connection from `peer`.
    pub fn new(peer: Option<SocketAddr>, client_cert: Option<ClientCert>, tls: bool) -> Self {
        let peer_ip_value =
            peer.and_then(|p| http::HeaderValue::from_str(&p.ip().to_string()).ok());
        Self {
            peer,
            client_cert,
            tls,
            peer_ip_value,
        }
    }
}

/// The running gateway.
#[derive(Debug)]
pub struct Gateway {
    site: ArcSwap<Site>,
    metrics: Arc<Metrics>,
    /// `/readyz` when a [`crate::reload::Reloader`] reports on reloads; else the site's own.
    readiness: ArcSwapOption<Bytes>,
    /// MCP sessions and the callers that opened them; kept across reloads.
    sessions: Arc<SessionBindings>,
    /// The subject of the identity CA the TLS listener trusts, once it is built
    /// ([`tls::server_config`]).
    listener_identity_ca: std::sync::OnceLock<String>,
}

impl Gateway {
    /// A gateway serving `site`.
    pub fn new(site: Site, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            site: ArcSwap::from_pointee(site),
            metrics,
            readiness: ArcSwapOption::empty(),
            sessions: Arc::default(),
            listener_identity_ca: std::sync::OnceLock::new(),
        })
    }

    /// Replaces the site; requests in flight finish on the old one.
    pub fn swap(&self, mut site: Site) {
        let previous = self.site.load();
        // What callers have spent, and when each key was last used, outlive the
        // configuration.
        site.rate_limits.keep_buckets(&previous.rate_limits);
        for validator in &site.api_key_validators {
            if let Some(old) = previous
                .api_key_validators
                .iter()
                .find(|old| old.provider() == validator.provider())
            {
                validator.carry_last_used(old);
            }
        }
        self.site.store(Arc::new(site));
    }

    /// Replaces the `/readyz` report (the reloader adds load times and reload errors to
    /// the site's own report, and must update it when a reload fails and nothing is swapped).
    pub fn set_readiness(&self, report: &Readiness) {
        self.readiness.store(Some(Arc::new(report.render())));
    }

    /// The site being served.
    pub fn site(&self) -> Arc<Site> {
        self.site.load_full()
    }

    /// `cert` as the identity CA sees it now ([`crate::identity::vouch`]).
    pub fn vouch(
        &self,
        site: &Site,
        cert: ClientCert,
    ) -> Result<ClientCert, crate::identity::Refusal> {
        crate::identity::vouch(
            site.identity.as_deref(),
            self.listener_identity_ca.get().map(String::as_str),
            cert,
            crate::identity::now(),
        )
    }

    /// The subject of the identity CA the listener trusts, once it is built.
    pub fn listener_identity_ca(&self) -> Option<&str> {
        self.listener_identity_ca.get().map(String::as_str)
    }

    /// Records the subject of the identity CA the listener trusts.
    pub fn set_listener_identity_ca(&self, subject: &str) {
        let _ = self.listener_identity_ca.set(subject.to_owned());
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Answers one request.
    ///
    /// The future is boxed as `Send` here, where every lifetime is concrete: spawned
    /// connection tasks otherwise hit rustc's higher-ranked `Send` inference limits.
    pub fn handle<'a>(
        &'a self,
        request: Request<Body>,
        conn: &'a ConnInfo,
    ) -> BoxFuture<'a, Response<Body>> {
        Box::pin(async move {
            let site = self.site.load_full();
            // A certificate of the identity CA counts only while the store vouches for it:
            // one revoked or replaced since the handshake is refused here, on every path.
            // The request line, for the audit line of a refused certificate (mTLS callers only).
            let line = conn
                .client_cert
                .as_ref()
                .filter(|_| crate::observability::logging::audit_enabled())
                .map(|_| (request.method().clone(), request.uri().path().to_owned()));
            let refused = |refusal: crate::identity::Refusal| {
                self.metrics.identity("request", refusal.label());
                let response = Rejection::InvalidToken {
                    description: refusal.as_str().to_owned(),
                    metadata_url: metadata::metadata_url(&site.public_url, ""),
                }
                .into_response();
                if let Some((method, path)) = &line {
                    crate::observability::audit(&crate::observability::logging::AuditRecord {
                        route: "-",
                        subject: None,
                        provider: "identity-certificate",
                        verdict: crate::observability::logging::AuditVerdict::Deny,
                        reason: refusal.as_str(),
                        status: response.status().as_u16(),
                        method: method.as_str(),
                        path,
                    });
                }
                self.metrics.request("-", response.status().as_u16());
                response
            };
            let vouched;
            let conn = match &conn.client_cert {
                Some(cert) => match self.vouch(&site, cert.clone()) {
                    Ok(cert) => {
                        vouched = ConnInfo {
                            client_cert: Some(cert),
                            ..conn.clone()
                        };
                        &vouched
                    }
                    Err(refusal) => return refused(refusal),
                },
                None => conn,
            };
            // An identity-CA caller's body and answer count only while its certificate does:
            // an upload still streaming, an answer that arrives or streams after a
            // revocation, are cut off (`identity::guard`).
            // A rotation's own answer is exempt from the answer's checks: it replaces the
            // very certificate that asked.
            let rotation = site.identity.as_ref().is_some_and(|authority| {
                authority.endpoint(request.uri().path()) == Some(crate::identity::Endpoint::Rotate)
            });
            let guarded = conn
                .client_cert
                .as_ref()
                .filter(|c| c.issued.is_some())
                .zip(site.identity.as_ref());
            let request = match guarded {
                Some((cert, authority)) => request.map(|body| {
                    crate::identity::guard::while_vouched(body, Arc::clone(authority), cert.clone())
                }),
                None => request,
            };
            let readiness = (request.uri().path() == "/readyz")
                .then(|| self.readiness.load_full())
                .flatten();
            let (label, mut response) = match readiness {
                Some(report) => ("/readyz", handler::readiness(&site, conn, &report)),
                None => handler::handle(&site, request, conn, &self.metrics, &self.sessions).await,
            };
            if let Some((cert, authority)) = guarded.filter(|_| !rotation) {
                // Judged again now that the answer is here: it may have taken longer than
                // the certificate.
                if let Err(refusal) = authority.judge(cert, crate::identity::now()) {
                    return refused(refusal);
                }
                let body = std::mem::replace(response.body_mut(), body::empty());
                *response.body_mut() = crate::identity::guard::while_vouched(
                    body,
                    Arc::clone(authority),
                    cert.clone(),
                );
            }
            self.metrics.request(label, response.status().as_u16());
            response
        })
    }
}
