//! The forward-auth endpoint (`/check` by default) for nginx `auth_request`, Traefik
//! ForwardAuth, Caddy `forward_auth` and Envoy `ext_authz` (HTTP).
//!
//! The original request is described by `X-Forwarded-Method` / `X-Forwarded-Uri` /
//! `X-Forwarded-Host` (Traefik, Caddy) or `X-Original-Method` / `X-Original-URI` (nginx),
//! believed only when the TCP peer is a trusted proxy; otherwise the check request itself is
//! the original (Envoy sends the original method and `/check/<original path>`). The route is
//! chosen by the original path. No body reaches this endpoint, so MCP tool rules cannot be
//! enforced here; path, method and identity rules are.
//!
//! Answers: 200 with the identity headers; 401 with the challenge; 403; 400 for a malformed
//! request; 503 when a provider failed.

use std::sync::Arc;

use http::{HeaderMap, Method, Request, Response, StatusCode};

use super::ConnInfo;
use super::body::{Body, empty};
use super::proxy::add_identity_headers;
use super::rejection::Rejection;
use super::request::{ContextParts, check_origin, check_path, client_addr, context, is_trusted};
use super::site::Site;
use crate::engine::{Decision, Outcome};
use crate::observability::Metrics;
use crate::observability::logging::{AuditRecord, audit};

/// Answers one forward-auth check.
pub async fn check(
    site: &Site,
    request: Request<Body>,
    conn: &ConnInfo,
    metrics: &Metrics,
) -> Response<Body> {
    let (parts, _body) = request.into_parts();
    let check_path_prefix = site.forward_auth_path.as_deref().unwrap_or("/check");
    let trusted = conn
        .peer
        .is_some_and(|p| is_trusted(p.ip(), &site.trusted_proxies));
    let (method, uri) = match original(
        &parts.method,
        parts.uri.path(),
        parts.uri.query(),
        &parts.headers,
        trusted,
        check_path_prefix,
    ) {
        Ok(original) => original,
        Err(rejection) => {
            audit(&AuditRecord {
                route: check_path_prefix,
                subject: None,
                provider: "-",
                verdict: "deny",
                reason: "unreadable forwarded method or URI",
                status: rejection.status().as_u16(),
                method: parts.method.as_str(),
                path: parts.uri.path(),
            });
            return rejection.into_response();
        }
    };
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (uri, None),
    };
    let deny = |rejection: Rejection, reason: &str, route: &str| {
        audit(&AuditRecord {
            route,
            subject: None,
            provider: "-",
            verdict: "deny",
            reason,
            status: rejection.status().as_u16(),
            method: method.as_str(),
            path: &path,
        });
        rejection.into_response()
    };
    if let Err(rejection) = check_path(&path) {
        return deny(rejection, "path not in normal form", check_path_prefix);
    }
    let Some(route) = site.route(&path) else {
        return deny(
            Rejection::Forbidden {
                code: "access_denied".into(),
                description: "no route covers this path".into(),
            },
            "no route",
            check_path_prefix,
        );
    };
    if let Err(rejection) = check_origin(&parts.headers, &site.origins, &site.public_origin) {
        return deny(rejection, "origin not allowed", route.label());
    }
    let peer = match client_addr(conn.peer, &parts.headers, &site.trusted_proxies) {
        Ok(peer) => peer,
        Err(rejection) => return deny(rejection, "unreadable X-Forwarded-For", route.label()),
    };
    let ctx = context(
        ContextParts {
            method: &method,
            path: &path,
            query: query.as_deref(),
            headers: parts.headers.clone(),
            peer,
            client_cert: conn.client_cert.clone(),
        },
        route.mcp,
        None,
    );
    let ctx = match ctx {
        Ok(ctx) => Arc::new(ctx),
        Err(rejection) => return deny(rejection, "malformed request", route.label()),
    };
    let Outcome { decision, trace } = route.policy.decide(&ctx).await;
    metrics.decision(&trace);
    match decision {
        Decision::Allow { identity, provider } => {
            audit(&AuditRecord {
                route: route.label(),
                subject: Some(&identity.subject),
                provider: &provider,
                verdict: "allow",
                reason: "",
                status: 200,
                method: method.as_str(),
                path: &path,
            });
            let mut response = Response::new(empty());
            *response.status_mut() = StatusCode::OK;
            add_identity_headers(response.headers_mut(), &identity, &provider);
            response
        }
        Decision::Deny {
            denial,
            required_scopes,
        } => {
            let rejection = Rejection::from_denial(&denial, &required_scopes, &route.challenge);
            let provider = trace.steps.last().map_or("-", |s| s.provider.as_str());
            audit(&AuditRecord {
                route: route.label(),
                subject: None,
                provider,
                verdict: "deny",
                reason: &denial.reason,
                status: rejection.status().as_u16(),
                method: method.as_str(),
                path: &path,
            });
            rejection.into_response()
        }
    }
}

/// The original method and URI (path and query). A forwarded method or URI that a trusted
/// proxy sent but that cannot be read (not ASCII, not a method) is a 400: falling back to the
/// check request's own method and path would judge a different request than the one the
/// proxy is about to let through.
fn original(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    trusted: bool,
    check_path: &str,
) -> Result<(Method, String), Rejection> {
    let unreadable = |what: &str| Rejection::InvalidRequest {
        description: format!("the forwarded {what} is not readable"),
        metadata_url: None,
    };
    let header = |names: [&str; 2]| -> Result<Option<&str>, ()> {
        match names.iter().find_map(|n| headers.get(*n)) {
            None => Ok(None),
            Some(value) => value.to_str().map(Some).map_err(|_| ()),
        }
    };
    let (forwarded_method, forwarded_uri) = if trusted {
        let method = header(["x-forwarded-method", "x-original-method"])
            .map_err(|()| unreadable("method"))?
            .map(|m| Method::from_bytes(m.as_bytes()).map_err(|_| unreadable("method")))
            .transpose()?;
        let uri = header(["x-forwarded-uri", "x-original-uri"])
            .map_err(|()| unreadable("URI"))?
            .map(str::to_owned);
        (method, uri)
    } else {
        (None, None)
    };
    let uri = forwarded_uri.unwrap_or_else(|| {
        // Envoy ext_authz sends `<check path><original path>`.
        let original = match path.strip_prefix(check_path) {
            Some(rest) if rest.starts_with('/') => rest,
            _ => path,
        };
        match query {
            Some(q) => format!("{original}?{q}"),
            None => original.to_owned(),
        }
    });
    Ok((forwarded_method.unwrap_or_else(|| method.clone()), uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_headers_count_only_from_trusted_peers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-uri", "/mcp?x=1".parse().expect("hv"));
        headers.insert("x-forwarded-method", "DELETE".parse().expect("hv"));
        let (m, uri) =
            original(&Method::GET, "/check", None, &headers, true, "/check").expect("readable");
        assert_eq!((m, uri.as_str()), (Method::DELETE, "/mcp?x=1"));
        let (m, uri) =
            original(&Method::GET, "/check", None, &headers, false, "/check").expect("readable");
        assert_eq!((m, uri.as_str()), (Method::GET, "/check"));
    }

    #[test]
    fn unreadable_forwarded_uri_or_method_from_a_trusted_proxy_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-original-uri",
            http::HeaderValue::from_bytes(b"/admin/\xff").expect("obs-text is a valid value"),
        );
        assert!(original(&Method::GET, "/check", None, &headers, true, "/check").is_err());
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-method", "GE T".parse().expect("hv"));
        assert!(original(&Method::GET, "/check", None, &headers, true, "/check").is_err());
    }

    #[test]
    fn envoy_style_path_suffix_is_the_original_path() {
        let headers = HeaderMap::new();
        let (m, uri) = original(
            &Method::POST,
            "/check/mcp",
            Some("a=b"),
            &headers,
            false,
            "/check",
        )
        .expect("readable");
        assert_eq!((m, uri.as_str()), (Method::POST, "/mcp?a=b"));
    }
}
