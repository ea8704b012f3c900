//! The identity endpoints: `POST <path>/register` (authenticated by the chain of
//! `[identity] route`, which must give `register_scope`), `POST <path>/rotate` (authenticated
//! by the current certificate over mTLS, nothing else), `GET <path>/ca.pem`. Errors are the
//! gateway's own ([`Rejection`]: status, JSON body, `WWW-Authenticate` pointing at the
//! route's metadata); every answer is counted in `portcullis_identity_requests_total` and
//! audited, never with the key or the token.

use std::sync::Arc;

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::book::{Event, Issued};
use super::ca::rfc3339;
use super::settings::fill;
use super::{Endpoint, IdentityAuthority, now, public_key};
use crate::context::ClientCert;
use crate::engine::Decision;
use crate::gateway::body::full;
use crate::gateway::request::{
    ContextParts, check_origin, client_addr, context, is_trusted, read_body,
};
use crate::gateway::{Body, ConnInfo, Rejection, Site};
use crate::log_text::escape_control;
use crate::observability::logging::{AuditRecord, AuditVerdict};
use crate::observability::{Metrics, audit};
use crate::verdict::{ErrorCode, Identity};

/// The largest body read: a public key and a name.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// `{"public_key_pem", "name"}`.
#[derive(Debug, Deserialize)]
struct KeyRequest {
    public_key_pem: String,
    name: String,
}

/// A refusal, with what the audit line says.
struct Refused {
    rejection: Rejection,
    reason: String,
    subject: Option<String>,
    result: &'static str,
}

fn refused(rejection: Rejection, result: &'static str, reason: impl Into<String>) -> Box<Refused> {
    Box::new(Refused {
        rejection,
        reason: reason.into(),
        subject: None,
        result,
    })
}

fn bad_request(description: impl Into<String>) -> Rejection {
    Rejection::InvalidRequest {
        description: description.into(),
        metadata_url: None,
    }
}

/// Answers one request to `endpoint`.
pub(crate) async fn serve(
    site: &Site,
    authority: &Arc<IdentityAuthority>,
    endpoint: Endpoint,
    request: Request<Body>,
    conn: &ConnInfo,
    metrics: &Metrics,
) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    let outcome = match endpoint {
        Endpoint::CaPem => ca_pem(authority, &parts.method),
        Endpoint::Register => register(site, authority, &mut parts, body, conn).await,
        Endpoint::Rotate => rotate(site, authority, &mut parts, body, conn).await,
    };
    let label = endpoint.label();
    match outcome {
        Ok((response, subject)) => {
            metrics.identity(label, "ok");
            if endpoint != Endpoint::CaPem {
                record(
                    authority,
                    endpoint,
                    &parts,
                    subject.as_deref(),
                    AuditVerdict::Allow,
                    "",
                    response.status(),
                );
            }
            response
        }
        Err(refusal) => {
            let refusal = *refusal;
            metrics.identity(label, refusal.result);
            let status = refusal.rejection.status();
            record(
                authority,
                endpoint,
                &parts,
                refusal.subject.as_deref(),
                AuditVerdict::Deny,
                &refusal.reason,
                status,
            );
            refusal.rejection.into_response()
        }
    }
}

fn record(
    authority: &IdentityAuthority,
    endpoint: Endpoint,
    parts: &Parts,
    subject: Option<&str>,
    verdict: AuditVerdict,
    reason: &str,
    status: StatusCode,
) {
    audit(&AuditRecord {
        route: &authority.settings.path,
        subject,
        provider: match endpoint {
            Endpoint::Rotate => "identity-certificate",
            _ => "identity",
        },
        verdict,
        reason,
        status: status.as_u16(),
        method: parts.method.as_str(),
        path: parts.uri.path(),
    });
}

type Answer = Result<(Response<Body>, Option<String>), Box<Refused>>;

fn ca_pem(authority: &IdentityAuthority, method: &Method) -> Answer {
    if method != Method::GET && method != Method::HEAD {
        return Err(refused(
            Rejection::MethodNotAllowed { allow: "GET, HEAD" },
            "method_not_allowed",
            "method not allowed",
        ));
    }
    let body = if method == Method::GET {
        full(authority.ca.cert_pem.clone())
    } else {
        crate::gateway::body::empty()
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-pem-file"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    Ok((response, None))
}

/// The body of a `POST`, read whole (bounded) before anything is judged: answering a
/// request whose body is still arriving makes HTTP/2 clients see a reset stream instead of
/// the answer.
async fn read_post(site: &Site, parts: &Parts, body: Body) -> Result<bytes::Bytes, Box<Refused>> {
    if parts.method != Method::POST {
        return Err(refused(
            Rejection::MethodNotAllowed { allow: "POST" },
            "method_not_allowed",
            "method not allowed",
        ));
    }
    read_body(
        body,
        &parts.headers,
        MAX_BODY_BYTES,
        site.limits.body_timeout,
    )
    .await
    .map_err(|r| refused(r, "invalid_request", "body refused"))
}

/// The checks both `POST`s share once the caller is known: origin, media type, JSON, name.
fn key_request(site: &Site, parts: &Parts, bytes: &[u8]) -> Result<KeyRequest, Box<Refused>> {
    check_origin(&parts.headers, &site.origins, &site.public_origin)
        .map_err(|r| refused(r, "origin_not_allowed", "origin not allowed"))?;
    let media = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if media.as_deref() != Some("application/json")
        || parts.headers.contains_key(http::header::CONTENT_ENCODING)
    {
        return Err(refused(
            Rejection::UnsupportedMediaType {
                description: "the body must be `application/json`, not encoded".into(),
            },
            "invalid_request",
            "body media type refused",
        ));
    }
    let request: KeyRequest = serde_json::from_slice(bytes).map_err(|e| {
        refused(
            bad_request(format!(
                "the body must be `{{\"public_key_pem\": \"…\", \"name\": \"…\"}}`: {e}"
            )),
            "invalid_request",
            "body not a key request",
        )
    })?;
    if !crate::oauth::clients::is_label(&request.name) {
        return Err(refused(
            bad_request("`name` must be a plain label: 1 to 64 letters, digits, `-`, `_` or `.`"),
            "invalid_request",
            "name not a label",
        ));
    }
    Ok(request)
}

fn parse_key(request: &KeyRequest) -> Result<public_key::AgentKey, Box<Refused>> {
    public_key::parse(&request.public_key_pem).map_err(|e| {
        refused(
            bad_request(e.to_string()),
            "invalid_key",
            format!("key refused: {e}"),
        )
    })
}

/// The connection's certificate as admission would see it: never a trusted proxy's. The
/// gateway has already vouched for it ([`super::vouch`]) before any endpoint runs.
fn client_certificate(site: &Site, conn: &ConnInfo) -> Option<ClientCert> {
    let from_proxy = conn
        .peer
        .is_some_and(|p| is_trusted(p.ip(), &site.trusted_proxies));
    conn.client_cert.clone().filter(|_| !from_proxy)
}

async fn register(
    site: &Site,
    authority: &Arc<IdentityAuthority>,
    parts: &mut Parts,
    body: Body,
    conn: &ConnInfo,
) -> Answer {
    let settings = &authority.settings;
    let Some(route) = site.routes.iter().find(|r| r.path == settings.route) else {
        let rejection = Rejection::Unavailable {
            description: "the route that authenticates registrations is not configured".into(),
        };
        return Err(refused(
            rejection,
            "temporarily_unavailable",
            "no registration route",
        ));
    };
    let bytes = read_post(site, parts, body).await?;
    let peer = client_addr(conn.peer, &parts.headers, &site.trusted_proxies)
        .map_err(|r| refused(r, "invalid_request", "unreadable X-Forwarded-For"))?;
    let client_cert = client_certificate(site, conn);
    let ctx = context(
        ContextParts {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: std::mem::take(&mut parts.headers),
            peer,
            client_cert,
        },
        false,
        None,
    )
    .map_err(|r| refused(r, "invalid_request", "request refused"))?;
    let ctx = Arc::new(ctx);
    let required = [settings.register_scope.clone()];
    // The route's whole policy but its path rules: its chain, the registration scope, and
    // every authorizer (an address allow-list, a Wasm policy) that guards the route.
    let outcome = route
        .policy
        .decide_needing(&ctx, required.iter().cloned().collect())
        .await;
    parts.headers =
        Arc::try_unwrap(ctx).map_or_else(|shared| shared.headers.clone(), |ctx| ctx.headers);
    let caller = match outcome.decision {
        Decision::Allow { identity, .. } => identity,
        Decision::Deny {
            denial,
            required_scopes,
        } => {
            let rejection = Rejection::from_denial(&denial, &required_scopes, &route.challenge);
            let result = match rejection.status() {
                StatusCode::UNAUTHORIZED => "unauthenticated",
                _ if denial.code == Some(ErrorCode::InsufficientScope) => "insufficient_scope",
                _ => "denied",
            };
            return Err(refused(rejection, result, denial.reason));
        }
    };
    let owner = caller.subject.clone();
    let with_subject = |mut r: Box<Refused>| {
        r.subject = Some(owner.clone());
        r
    };
    let request = key_request(site, parts, &bytes).map_err(with_subject)?;
    let key = parse_key(&request).map_err(with_subject)?;
    let scopes = granted_scopes(&caller, &settings.scopes);
    let id = new_id().map_err(with_subject)?;
    let subject = fill(
        &settings.uri_san,
        &settings.trust_domain,
        &id,
        &request.name,
    );
    let at = now();
    let max = settings.max_per_caller;
    let leaf = {
        let (authority, key, name) = (Arc::clone(authority), key.clone(), request.name.clone());
        let (id, owner, subject, scopes) =
            (id.clone(), owner.clone(), subject.clone(), scopes.clone());
        off_the_runtime(move || {
            let settings = &authority.settings;
            authority.registry.transact(|book| {
                if book.held_by(&owner) >= max {
                    return Err(Issue::Quota);
                }
                let leaf = authority
                    .ca
                    .issue(&key, &name, &subject, at, settings.cert_lifetime_secs)
                    .map_err(|e| Issue::Failed(e.to_string()))?;
                let event = Event::Issued(Issued {
                    id,
                    name,
                    owner,
                    subject,
                    scopes,
                    fingerprint: leaf.fingerprint.clone(),
                    serial: leaf.serial.clone(),
                    at,
                    not_after: leaf.not_after,
                    replaces: None,
                });
                Ok((vec![event], leaf))
            })
        })
        .await
    };
    let leaf = leaf.map_err(|e| with_subject(e.refusal(max)))?;
    tracing::info!(
        id = %id,
        name = %request.name,
        owner = %escape_control(&owner),
        key = %key.kind,
        fingerprint = %leaf.fingerprint,
        "identity registered"
    );
    let answer = json!({
        "id": id,
        "name": request.name,
        "cert_pem": leaf.pem,
        "ca_cert_pem": authority.ca.cert_pem,
        "fingerprint": leaf.fingerprint,
        "registered_at": rfc3339(at),
        "valid_until": rfc3339(leaf.not_after),
        "subject": subject,
        "scopes": scopes,
    });
    Ok((json_response(StatusCode::CREATED, &answer), Some(owner)))
}

async fn rotate(
    site: &Site,
    authority: &Arc<IdentityAuthority>,
    parts: &mut Parts,
    body: Body,
    conn: &ConnInfo,
) -> Answer {
    let settings = &authority.settings;
    let bytes = read_post(site, parts, body).await?;
    let cert = match client_certificate(site, conn) {
        None => {
            return Err(refused(
                Rejection::Forbidden {
                    code: ErrorCode::AccessDenied,
                    description:
                        "rotation is authenticated by the current certificate: connect over TLS \
                                  with it (mTLS); a token is not accepted here"
                            .into(),
                },
                "unauthenticated",
                "no client certificate",
            ));
        }
        Some(cert) => cert,
    };
    let Some(issued) = cert.issued.clone() else {
        return Err(refused(
            Rejection::Forbidden {
                code: ErrorCode::AccessDenied,
                description: "the client certificate was not issued by this gateway's identity CA"
                    .into(),
            },
            "foreign_certificate",
            "certificate of another CA",
        ));
    };
    let with_subject = |mut r: Box<Refused>| {
        r.subject = Some(issued.subject.clone());
        r
    };
    let request = key_request(site, parts, &bytes).map_err(with_subject)?;
    let key = parse_key(&request).map_err(with_subject)?;
    let at = now();
    let overlap = i64::try_from(settings.rotation_overlap_secs).unwrap_or(i64::MAX);
    let leaf = {
        let (authority, key, name) = (Arc::clone(authority), key.clone(), request.name.clone());
        let fingerprint = cert.sha256_fingerprint.clone();
        off_the_runtime(move || {
            let settings = &authority.settings;
            authority.registry.transact(|book| {
                // Judged again under the store's lock: a revocation or another rotation may
                // have landed since the handshake.
                let identity = book
                    .judge(&fingerprint, at, overlap)
                    .map_err(Issue::Refused)?;
                if identity.current().map(|c| c.fingerprint.as_str()) != Some(fingerprint.as_str())
                {
                    return Err(Issue::Refused(super::Refusal::Replaced));
                }
                let leaf = authority
                    .ca
                    .issue(
                        &key,
                        &name,
                        &identity.subject,
                        at,
                        settings.cert_lifetime_secs,
                    )
                    .map_err(|e| Issue::Failed(e.to_string()))?;
                let event = Event::Issued(Issued {
                    id: identity.id.clone(),
                    name,
                    owner: identity.owner.clone(),
                    subject: identity.subject.clone(),
                    scopes: identity.scopes.clone(),
                    fingerprint: leaf.fingerprint.clone(),
                    serial: leaf.serial.clone(),
                    at,
                    not_after: leaf.not_after,
                    replaces: Some(fingerprint.clone()),
                });
                Ok((vec![event], (leaf, identity.registered_at)))
            })
        })
        .await
    };
    let (leaf, registered_at) =
        leaf.map_err(|e| with_subject(e.refusal(settings.max_per_caller)))?;
    tracing::info!(id = %issued.id, name = %request.name, key = %key.kind, replaced = %cert.sha256_fingerprint, fingerprint = %leaf.fingerprint, "identity rotated");
    let answer = json!({
        "id": issued.id,
        "name": request.name,
        "cert_pem": leaf.pem,
        "ca_cert_pem": authority.ca.cert_pem,
        "fingerprint": leaf.fingerprint,
        "registered_at": rfc3339(registered_at),
        "valid_until": rfc3339(leaf.not_after),
        "subject": issued.subject,
        "scopes": issued.scopes,
    });
    Ok((json_response(StatusCode::OK, &answer), Some(issued.subject)))
}

/// Runs a store transaction on the blocking pool: it takes a file lock and waits for an
/// `fsync`, which must not hold up a runtime thread (and the requests queued on it).
async fn off_the_runtime<T: Send + 'static>(
    transaction: impl FnOnce() -> Result<T, Issue> + Send + 'static,
) -> Result<T, Issue> {
    tokio::task::spawn_blocking(transaction)
        .await
        .unwrap_or_else(|_| Err(Issue::Failed("the store transaction did not finish".into())))
}

/// Why a store transaction issued nothing.
enum Issue {
    Quota,
    Refused(super::Refusal),
    Failed(String),
    Store(super::StoreError),
}

impl From<super::StoreError> for Issue {
    fn from(error: super::StoreError) -> Self {
        Self::Store(error)
    }
}

impl Issue {
    fn refusal(self, max: u32) -> Box<Refused> {
        match self {
            Self::Quota => refused(
                Rejection::Forbidden {
                    code: ErrorCode::AccessDenied,
                    description: format!(
                        "this caller already holds {max} identities, the most it may; revoke one \
                         (`portcullis identity revoke ID`) before registering another"
                    ),
                },
                "quota_exceeded",
                "identity quota reached",
            ),
            Self::Refused(refusal) => refused(
                Rejection::Forbidden {
                    code: ErrorCode::AccessDenied,
                    description: refusal.as_str().into(),
                },
                refusal.label(),
                refusal.as_str(),
            ),
            Self::Failed(reason) => {
                tracing::error!(%reason, "identity CA could not sign");
                refused(
                    Rejection::Unavailable {
                        description: "the identity CA could not sign; try again later".into(),
                    },
                    "temporarily_unavailable",
                    "signing failed",
                )
            }
            Self::Store(error) => {
                tracing::error!(%error, "identity store could not be written");
                refused(
                    Rejection::Unavailable {
                        description: "the identity store could not be written; try again later"
                            .into(),
                    },
                    "temporarily_unavailable",
                    "store failed",
                )
            }
        }
    }
}

/// The scopes an identity gets: each of `[identity] scopes` the registering caller holds.
fn granted_scopes(caller: &Identity, offered: &[String]) -> Vec<String> {
    offered
        .iter()
        .filter(|s| caller.has_scope(s))
        .cloned()
        .collect()
}

fn new_id() -> Result<String, Box<Refused>> {
    crate::crypto::random_bytes::<12>()
        .map(|bytes| format!("idn_{}", hex::encode(bytes)))
        .ok_or_else(|| {
            refused(
                Rejection::Unavailable {
                    description: "the system random source failed".into(),
                },
                "temporarily_unavailable",
                "random source failed",
            )
        })
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
