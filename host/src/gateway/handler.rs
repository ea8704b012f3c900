//! One request through the gateway: public endpoints first, then route lookup, request
//! context, the engine's decision, and the upstream.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response};

use super::admission::{Entry, admit, listing_filter};
use super::body::{Body, full};
use super::metadata::{WELL_KNOWN, respond};
use super::proxy::{Peer, add_identity_headers, upstream_headers};
use super::rejection::Rejection;
use super::request::{check_path, client_addr, is_trusted};
use super::sessions::SessionBindings;
use super::site::{LiveRoute, Site};
use super::{ConnInfo, cors, forward_auth};
use crate::oauth;
use crate::observability::Metrics;

/// Answers one request. Returns the metrics label of what served it and the response.
pub(crate) async fn handle<'s>(
    site: &'s Site,
    request: Request<Body>,
    conn: &ConnInfo,
    metrics: &Metrics,
    sessions: &Arc<SessionBindings>,
) -> (&'s str, Response<Body>) {
    let path = request.uri().path();
    if let Err(rejection) = check_path(path) {
        return ("-", rejection.into_response());
    }
    match path {
        "/healthz" => return ("/healthz", text("ok\n", "text/plain")),
        "/readyz" => return ("/readyz", readiness(site, conn, &site.readiness.render())),
        _ => {}
    }
    // A proxy asking the forward-auth endpoint names the host it serves, which is its
    // business (it routes many); only a trusted proxy is answered there at all.
    let asked_by_proxy = site.forward_auth.as_ref().is_some_and(|endpoint| {
        path.strip_prefix(endpoint.path.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }) && conn
        .peer
        .is_some_and(|peer| is_trusted(peer.ip(), &site.trusted_proxies));
    if !asked_by_proxy && let Err(rejection) = cors::check_host(&request, &site.hosts) {
        return ("-", rejection.into_response());
    }
    if path.starts_with(WELL_KNOWN) {
        // Public documents, answered to any origin (`*`).
        return dispatch(site, request, conn, metrics, sessions).await;
    }
    let origin = cors::allowed_origin(site, request.headers());
    if let Some(origin) = &origin
        && cors::is_preflight(&request)
    {
        let served = site.route(path).map(|route| ("-", route.mcp)).or_else(|| {
            let own = site
                .authorization_server
                .as_ref()
                .is_some_and(|server| oauth::endpoint(server, path).is_some())
                || site
                    .identity
                    .as_ref()
                    .is_some_and(|authority| authority.endpoint(path).is_some());
            own.then_some(("-", false))
        });
        if let Some((label, mcp)) = served {
            return (label, cors::preflight(site, origin, mcp));
        }
    }
    let (label, mut response) = dispatch(site, request, conn, metrics, sessions).await;
    if let Some(origin) = origin {
        cors::decorate(site, &mut response, origin);
    }
    (label, response)
}

/// Everything after the host and CORS checks.
async fn dispatch<'s>(
    site: &'s Site,
    request: Request<Body>,
    conn: &ConnInfo,
    metrics: &Metrics,
    sessions: &Arc<SessionBindings>,
) -> (&'s str, Response<Body>) {
    let path = request.uri().path();
    if path == "/metrics" {
        metrics.set_jwt_validators(site.jwt_validators.clone());
        metrics.set_api_key_validators(site.api_key_validators.clone());
        return (
            "/metrics",
            text(
                metrics.encode(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
    }
    if let Some(response) = metadata(site, request.method(), path) {
        return (WELL_KNOWN, response);
    }
    if let Some(server) = &site.authorization_server
        && let Some(endpoint) = oauth::endpoint(server, path)
    {
        let client = match client_addr(conn.peer, request.headers(), &site.trusted_proxies) {
            Ok(client) => client.map(|c| c.ip()),
            Err(rejection) => return (endpoint.label(), rejection.into_response()),
        };
        let response = oauth::serve(
            server,
            endpoint,
            request,
            client,
            &site.public_url,
            site.limits.body_timeout,
            metrics,
        )
        .await;
        return (endpoint.label(), response);
    }
    if let Some(authority) = &site.identity
        && let Some(endpoint) = authority.endpoint(path)
    {
        let response =
            crate::identity::serve(site, authority, endpoint, request, conn, metrics).await;
        return (endpoint.label(), response);
    }
    if let Some(endpoint) = &site.forward_auth
        && path
            .strip_prefix(endpoint.path.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    {
        let response = forward_auth::check(site, endpoint, request, conn, metrics, sessions).await;
        return (endpoint.path.as_str(), response);
    }
    proxy(site, request, conn, metrics, sessions).await
}

/// The answer for an RFC 9728 metadata path (`/.well-known/oauth-protected-resource[/…]`),
/// or `None` for any other path. Served without authentication, by the gateway and by the
/// tower layer alike, since their challenges point there.
pub(crate) fn metadata(site: &Site, method: &Method, path: &str) -> Option<Response<Body>> {
    let suffix = path.strip_prefix(WELL_KNOWN)?;
    if !(suffix.is_empty() || suffix.starts_with('/')) {
        return None;
    }
    Some(match site.metadata(suffix) {
        Some(doc) => respond(method, doc),
        None => Rejection::NotFound.into_response(),
    })
}

/// The `/readyz` answer. `report` (each provider's component path and hash, reload errors
/// with file paths) goes only to callers in `server.readyz_detail_networks` (loopback by
/// default): it maps the deployment for whoever asks. Anyone else — a load balancer's probe
/// included — learns only that the gateway is ready, which it is whenever it answers: it
/// serves only once a configuration has loaded, and keeps the last good one when a reload
/// fails.
pub(super) fn readiness(site: &Site, conn: &ConnInfo, report: &Bytes) -> Response<Body> {
    let detail = conn
        .peer
        .is_some_and(|peer| is_trusted(peer.ip(), &site.readyz_detail_networks));
    if detail {
        text(report.clone(), "application/json")
    } else {
        text(Bytes::from_static(b"{\"ready\":true}"), "application/json")
    }
}

fn text(body: impl Into<Bytes>, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body.into()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An admitted request to its route's upstream, and the answer back. Returns the route's
/// label (`-` when no route served it) and the answer.
async fn proxy<'s>(
    site: &'s Site,
    request: Request<Body>,
    conn: &ConnInfo,
    metrics: &Metrics,
    sessions: &Arc<SessionBindings>,
) -> (&'s str, Response<Body>) {
    let (mut parts, body) = request.into_parts();
    let mut admitted = match admit(site, Entry::Direct, &mut parts, Some(body), conn, metrics).await
    {
        Ok(admitted) => admitted,
        Err(refused) => {
            let label = refused.route.map_or("-", LiveRoute::label);
            return (label, refused.into_response());
        }
    };
    let route = admitted.route;
    let Some(upstream) = &route.upstream else {
        // Only a site built from an embedded config lacks upstreams, and the gateway is
        // never given one; should it be, refuse rather than guess.
        let rejection = Rejection::BadGateway {
            description: "this route has no upstream (its config was validated for embedding)"
                .into(),
        };
        return (route.label(), admitted.refuse(rejection, "no upstream"));
    };
    let session = match sessions.presented(&admitted, &parts) {
        Ok(session) => session,
        Err(refusal) => return (route.label(), *refusal),
    };
    let method = parts.method.clone();
    let listing = listing_filter(&admitted, &parts)
        .map(|filter| filter.recording_event_ids(sessions.event_recorder(&admitted)));
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
    // What a token exchange sends is read before the caller's credentials are stripped.
    let caller = upstream
        .auth()
        .map(|auth| auth.caller(&admitted.identity, &admitted.provider, &parts.headers))
        .unwrap_or_default();
    upstream_headers(
        &mut parts.headers,
        &route.strip,
        forwarding_peer,
        &site.forwarded_as,
    );
    add_identity_headers(&mut parts.headers, &admitted.identity, &admitted.provider);
    if listing.is_some() {
        // Listings are filtered as they pass; a compressed one could not be read.
        parts
            .headers
            .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    parts.uri = target;
    parts.version = http::Version::HTTP_11;
    let (response, reason) = match upstream
        .send(
            Request::from_parts(parts, std::mem::take(&mut admitted.body)),
            listing,
            admitted.replay.take(),
            &caller,
        )
        .await
    {
        Ok(response) => {
            sessions.track(&admitted, &method, session.as_deref(), &response);
            (response, String::new())
        }
        Err((rejection, failure)) => {
            metrics.upstream_error(route.label(), failure.label());
            let reason = rejection.error_body().1;
            (rejection.into_response(), reason)
        }
    };
    admitted.audit(response.status(), &reason);
    (route.label(), response)
}
