//! Admission: from a request on a route to the engine's decision. The gateway's proxy and
//! the embedded tower layer ([`crate::embed`]) both call [`admit`], so one code path decides
//! for both: the `Origin` check, the client address behind trusted proxies, the body
//! buffered (MCP POSTs, and Wasm providers with `body = true`) and parsed,
//! [`Policy::decide`](crate::engine::Policy::decide), the decision metrics, and on a denial
//! the audit line and the [`Rejection`] answer.

use std::net::SocketAddr;
use std::sync::Arc;

use http::Response;
use http::request::Parts;
use http_body::Body as _;

use super::ConnInfo;
use super::body::{Body, full};
use super::listing::{Allow, ListingFilter};
use super::rejection::Rejection;
use super::request::{
    ContextParts, check_mcp_media, check_method, check_origin, client_addr, context, read_body,
};
use super::site::{LiveRoute, Site};
use crate::context::{ClientCert, RequestContext};
use crate::engine::{Decision, Outcome};
use crate::mcp::{McpCall, McpMessage};
use crate::observability::Metrics;
use crate::observability::logging::{AuditRecord, audit};
use crate::verdict::Identity;

/// A request the engine let through.
#[derive(Debug)]
pub struct Admitted {
    /// The caller.
    pub identity: Identity,
    /// The provider (or `a+b` group) that authenticated it.
    pub provider: String,
    /// The client address the engine saw (the peer, or the forwarded client behind a
    /// trusted proxy).
    pub peer: Option<SocketAddr>,
    /// The body to hand on, intact: the buffered bytes again, or the untouched stream.
    pub body: Body,
}

/// Decides one request that `route` serves. `Err` is the complete refusal, already audited.
pub async fn admit(
    site: &Site,
    route: &LiveRoute,
    parts: &mut Parts,
    body: Body,
    conn: &ConnInfo,
    metrics: &Metrics,
) -> Result<Admitted, Response<Body>> {
    let deny = |rejection: Rejection, provider: &str, reason: &str| {
        audit(&AuditRecord {
            route: route.label(),
            subject: None,
            provider,
            verdict: "deny",
            reason,
            status: rejection.status().as_u16(),
            method: parts.method.as_str(),
            path: parts.uri.path(),
        });
        rejection.into_response()
    };
    if let Err(rejection) = check_origin(&parts.headers, &site.origins, &site.public_origin) {
        return Err(deny(rejection, "-", "origin not allowed"));
    }
    if let Err(rejection) = check_method(&parts.method) {
        return Err(deny(rejection, "-", "method not in upper case"));
    }
    let peer = match client_addr(conn.peer, &parts.headers, &site.trusted_proxies) {
        Ok(peer) => peer,
        Err(rejection) => return Err(deny(rejection, "-", "unreadable X-Forwarded-For")),
    };
    // Every request with a body is read when the route needs bodies, whatever its method:
    // an upstream may act on the body of a `PUT` or a `DELETE` as readily as of a `POST`.
    let has_body = !body.is_end_stream();
    if has_body
        && route.mcp
        && let Err(rejection) = check_mcp_media(&parts.headers)
    {
        return Err(deny(rejection, "-", "MCP body media type refused"));
    }
    let (buffered, body) = if has_body && route.wants_body {
        match read_body(
            body,
            &parts.headers,
            site.max_body_bytes,
            site.limits.body_timeout,
        )
        .await
        {
            Ok(bytes) => (Some(bytes.clone()), full(bytes)),
            Err(rejection) => return Err(deny(rejection, "-", "request body refused")),
        }
    } else {
        (None, body)
    };
    let ctx = context(
        ContextParts {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            // Moved, not copied: the context is dropped before the upstream needs them.
            headers: std::mem::take(&mut parts.headers),
            peer,
            client_cert: conn.client_cert.clone(),
        },
        route.mcp,
        buffered,
    );
    let ctx = match ctx {
        Ok(ctx) => Arc::new(ctx),
        Err(rejection) => return Err(deny(rejection, "-", "malformed MCP body")),
    };
    let Outcome { decision, trace } = route.policy.decide(&ctx).await;
    // The headers go back to the request. A provider that still holds the context (a Wasm
    // call abandoned at its deadline) leaves a copy behind instead.
    parts.headers =
        Arc::try_unwrap(ctx).map_or_else(|shared| shared.headers.clone(), |ctx| ctx.headers);
    metrics.decision(&trace);
    match decision {
        Decision::Allow { identity, provider } => Ok(Admitted {
            identity,
            provider,
            peer,
            body,
        }),
        Decision::Deny {
            denial,
            required_scopes,
        } => {
            let rejection = Rejection::from_denial(&denial, &required_scopes, &route.challenge);
            let decided_by = trace.steps.last().map_or("-", |s| s.provider.as_str());
            Err(deny(rejection, decided_by, &denial.reason))
        }
    }
}

/// The filter for the listings (`tools/list`, …) in the answer to an admitted request on an
/// MCP route, whatever the request: entries the caller could not call are removed. `None`
/// on routes that are not MCP.
///
/// An entry is kept when the scope rules allow its call and so does every authorizer of
/// the route, asked with the listing request's context (`parts`, `peer`, `client_cert`)
/// holding that one call instead of the listing.
pub fn listing_filter(
    route: &LiveRoute,
    parts: &Parts,
    identity: &Identity,
    peer: Option<SocketAddr>,
    client_cert: Option<ClientCert>,
) -> Option<ListingFilter> {
    if !route.mcp {
        return None;
    }
    let rules = route.policy.rules.clone();
    let authorizers = route.policy.authorizers.clone();
    let caller = identity.clone();
    let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());
    let base = (!authorizers.is_empty()).then(|| RequestContext {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        peer,
        client_cert,
        mcp: None,
        body: None,
    });
    let session_id = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let allow: Allow = Arc::new(move |calls: Vec<McpCall>| {
        let (rules, authorizers, caller) = (rules.clone(), authorizers.clone(), caller.clone());
        let (method, path) = (method.clone(), path.clone());
        let (base, session_id) = (base.clone(), session_id.clone());
        Box::pin(async move {
            let mut verdicts = Vec::with_capacity(calls.len());
            for call in calls {
                let mut allowed = rules.allows_call(&caller, &method, &path, &call);
                if allowed && let Some(base) = &base {
                    let ctx = Arc::new(RequestContext {
                        mcp: Some(McpMessage {
                            session_id: session_id.clone(),
                            calls: vec![call],
                        }),
                        ..base.clone()
                    });
                    for authorizer in &authorizers {
                        if !matches!(authorizer.authorize(&ctx, &caller).await, Ok(Ok(()))) {
                            allowed = false;
                            break;
                        }
                    }
                }
                verdicts.push(allowed);
            }
            verdicts
        })
    });
    Some(ListingFilter::new(allow))
}
