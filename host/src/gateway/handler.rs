//! One request through the gateway: public endpoints first, then route lookup, request
//! context, the engine's decision, and the upstream.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response};

use super::admission::{Admitted, admit, listing_filter};
use super::body::{Body, full};
use super::metadata::{WELL_KNOWN, respond};
use super::proxy::{Peer, add_identity_headers, upstream_headers};
use super::rejection::Rejection;
use super::request::{check_path, is_trusted};
use super::site::{LiveRoute, Site};
use super::{ConnInfo, forward_auth};
use crate::observability::Metrics;
use crate::observability::logging::{AuditRecord, audit, audit_enabled};

/// Answers one request. Returns the metrics label of what served it and the response.
pub async fn handle<'s>(
    site: &'s Site,
    request: Request<Body>,
    conn: &ConnInfo,
    metrics: &Metrics,
) -> (&'s str, Response<Body>) {
    let path = request.uri().path();
    if let Err(rejection) = check_path(path) {
        return ("-", rejection.into_response());
    }
    match path {
        "/healthz" => return ("/healthz", text("ok\n", "text/plain")),
        "/readyz" => {
            return ("/readyz", readiness(&site.readiness));
        }
        "/metrics" => {
            metrics.set_jwt_validators(site.jwt_validators.clone());
            return (
                "/metrics",
                text(
                    metrics.encode(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
        }
        _ => {}
    }
    if let Some(response) = metadata(site, request.method(), path) {
        return (WELL_KNOWN, response);
    }
    if let Some(check) = &site.forward_auth_path
        && path
            .strip_prefix(check.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    {
        let response = forward_auth::check(site, request, conn, metrics).await;
        return (check.as_str(), response);
    }
    let Some(route) = site.route(path) else {
        return ("-", Rejection::NotFound.into_response());
    };
    let response = proxy(site, route, request, conn, metrics).await;
    (route.label(), response)
}

/// The answer for an RFC 9728 metadata path (`/.well-known/oauth-protected-resource[/…]`),
/// or `None` for any other path. Served without authentication, by the gateway and by the
/// tower layer alike, since their challenges point there.
pub fn metadata(site: &Site, method: &Method, path: &str) -> Option<Response<Body>> {
    let suffix = path.strip_prefix(WELL_KNOWN)?;
    if !(suffix.is_empty() || suffix.starts_with('/')) {
        return None;
    }
    Some(match site.metadata(suffix) {
        Some(doc) => respond(method, doc),
        None => Rejection::NotFound.into_response(),
    })
}

/// The `/readyz` answer with `body`.
pub(super) fn readiness(body: &Bytes) -> Response<Body> {
    text(body.clone(), "application/json")
}

fn text(body: impl Into<Bytes>, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body.into()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn proxy(
    site: &Site,
    route: &LiveRoute,
    request: Request<Body>,
    conn: &ConnInfo,
    metrics: &Metrics,
) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    let Some(upstream) = &route.upstream else {
        // Only a site built from an embedded config lacks upstreams, and the gateway is never
        // given one; should it be, refuse rather than guess.
        return Rejection::BadGateway {
            description: "this route has no upstream (its config was validated for embedding)"
                .into(),
        }
        .into_response();
    };
    let Admitted {
        identity,
        provider,
        buffered: buffered_body,
        body,
        ..
    } = match admit(site, route, &mut parts, body, conn, metrics).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };

    let listing = listing_filter(route, &parts, &identity, buffered_body.as_ref());
    let target = upstream.target(&route.path, parts.uri.path(), parts.uri.query());
    // The TCP peer, not the client the engine resolved behind a trusted proxy: the
    // forwarding headers record hops, and this hop is the peer.
    let forwarding_peer = conn
        .peer
        .zip(conn.peer_ip_value.as_ref())
        .map(|(p, value)| Peer {
            ip: p.ip(),
            value,
            trusted: is_trusted(p.ip(), &site.trusted_proxies),
        });
    upstream_headers(
        &mut parts.headers,
        &route.strip,
        forwarding_peer,
        &site.forwarded_as,
    );
    add_identity_headers(&mut parts.headers, &identity, &provider);
    // Kept for the audit line only, so only when it is written.
    let audited = audit_enabled().then(|| (parts.uri.path().to_owned(), parts.method.clone()));
    parts.uri = target;
    parts.version = http::Version::HTTP_11;
    let result = upstream
        .send(Request::from_parts(parts, body), listing)
        .await;
    let (response, reason) = match result {
        Ok(response) => (response, String::new()),
        Err((rejection, failure)) => {
            metrics.upstream_error(route.label(), failure.label());
            let reason = rejection.error_body().1;
            (rejection.into_response(), reason)
        }
    };
    if let Some((path, method)) = audited {
        audit(&AuditRecord {
            route: route.label(),
            subject: Some(&identity.subject),
            provider: &provider,
            verdict: "allow",
            reason: &reason,
            status: response.status().as_u16(),
            method: method.as_str(),
            path: &path,
        });
    }
    response
}
