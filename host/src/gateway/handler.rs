//! One request through the gateway: public endpoints first, then route lookup, request
//! context, the engine's decision, and the upstream.

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response};

use super::body::{Body, full};
use super::listing::{Allow, ListingFilter};
use super::metadata::{WELL_KNOWN, respond};
use super::proxy::{add_identity_headers, buffered, upstream_headers};
use super::rejection::Rejection;
use super::request::{ContextParts, check_origin, check_path, client_addr, context, read_body};
use super::site::{LiveRoute, Site};
use super::{ConnInfo, forward_auth};
use crate::engine::{Decision, Outcome};
use crate::observability::Metrics;
use crate::observability::logging::{AuditRecord, audit};

/// Answers one request. Returns the metrics label of what served it and the response.
pub async fn handle(
    site: &Site,
    request: Request<Body>,
    conn: &ConnInfo,
    metrics: &Metrics,
) -> (String, Response<Body>) {
    let path = request.uri().path().to_owned();
    if let Err(rejection) = check_path(&path) {
        return ("-".into(), rejection.into_response());
    }
    match path.as_str() {
        "/healthz" => return ("/healthz".into(), text("ok\n", "text/plain")),
        "/readyz" => {
            return ("/readyz".into(), readiness(&site.readiness));
        }
        "/metrics" => {
            metrics.set_jwt_validators(site.jwt_validators.clone());
            return (
                "/metrics".into(),
                text(
                    metrics.encode(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
        }
        _ => {}
    }
    if let Some(suffix) = path.strip_prefix(WELL_KNOWN)
        && (suffix.is_empty() || suffix.starts_with('/'))
    {
        let response = match site.metadata(suffix) {
            Some(doc) => respond(request.method(), doc),
            None => Rejection::NotFound.into_response(),
        };
        return (WELL_KNOWN.into(), response);
    }
    if let Some(check) = &site.forward_auth_path
        && (path == *check || path.starts_with(&format!("{check}/")))
    {
        let response = forward_auth::check(site, request, conn, metrics).await;
        return (check.clone(), response);
    }
    let Some(route) = site.route(&path) else {
        return ("-".into(), Rejection::NotFound.into_response());
    };
    let response = proxy(site, route, request, conn, metrics).await;
    (route.label().to_owned(), response)
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
    let deny = |rejection: Rejection, reason: &str| {
        audit(&AuditRecord {
            route: route.label(),
            subject: None,
            provider: "-",
            verdict: "deny",
            reason,
            status: rejection.status().as_u16(),
            method: parts.method.as_str(),
            path: parts.uri.path(),
        });
        rejection.into_response()
    };
    if let Err(rejection) = check_origin(&parts.headers, &site.origins, &site.public_origin) {
        return deny(rejection, "origin not allowed");
    }
    let peer = client_addr(conn.peer, &parts.headers, &site.trusted_proxies);
    let (buffered_body, stream) = if parts.method == Method::POST && route.wants_body {
        match read_body(body, &parts.headers, site.max_body_bytes).await {
            Ok(bytes) => (Some(bytes), None),
            Err(rejection) => return deny(rejection, "request body refused"),
        }
    } else {
        (None, Some(body))
    };
    let ctx = context(
        ContextParts {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            peer,
            client_cert: conn.client_cert.clone(),
        },
        route.mcp,
        buffered_body.clone(),
    );
    let ctx = match ctx {
        Ok(ctx) => Arc::new(ctx),
        Err(rejection) => return deny(rejection, "malformed MCP body"),
    };
    let Outcome { decision, trace } = route.policy.decide(&ctx).await;
    metrics.decision(&trace);
    let (identity, provider) = match decision {
        Decision::Deny {
            denial,
            required_scopes,
        } => {
            let rejection = Rejection::from_denial(&denial, &required_scopes, &route.challenge);
            let decided_by = trace
                .steps
                .last()
                .map_or("-", |s| s.provider.as_str())
                .to_owned();
            audit(&AuditRecord {
                route: route.label(),
                subject: None,
                provider: &decided_by,
                verdict: "deny",
                reason: &denial.reason,
                status: rejection.status().as_u16(),
                method: parts.method.as_str(),
                path: parts.uri.path(),
            });
            return rejection.into_response();
        }
        Decision::Allow { identity, provider } => (identity, provider),
    };

    let listing = match (&buffered_body, route.mcp) {
        (Some(bytes), true) => {
            let rules = route.policy.rules.clone();
            let caller = identity.clone();
            let method = parts.method.clone();
            let path = parts.uri.path().to_owned();
            let allow: Allow =
                Arc::new(move |call| rules.allows_call(&caller, &method, &path, call));
            ListingFilter::for_request(bytes, allow)
        }
        _ => None,
    };
    let target = route
        .upstream
        .target(&route.path, parts.uri.path(), parts.uri.query());
    let original_host = parts.headers.get(http::header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let client_ip = peer.map(|p| p.ip());
    let client_ip_value = conn
        .peer_ip_value
        .as_ref()
        .filter(|_| client_ip.is_some() && client_ip == conn.peer.map(|p| p.ip()));
    upstream_headers(
        &mut parts.headers,
        &route.strip,
        client_ip,
        client_ip_value,
        original_host,
        conn.tls,
    );
    add_identity_headers(&mut parts.headers, &identity, &provider);
    let audit_path = parts.uri.path().to_owned();
    let method = parts.method.clone();
    parts.uri = target;
    parts.version = http::Version::HTTP_11;
    let body = match (buffered_body, stream) {
        (Some(bytes), _) => buffered(bytes),
        (None, Some(stream)) => stream,
        (None, None) => super::body::empty(),
    };
    let result = route
        .upstream
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
    audit(&AuditRecord {
        route: route.label(),
        subject: Some(&identity.subject),
        provider: &provider,
        verdict: "allow",
        reason: &reason,
        status: response.status().as_u16(),
        method: method.as_str(),
        path: &audit_path,
    });
    response
}
