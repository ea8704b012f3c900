//! Admission: the one decision path. Every HTTP entry point — the gateway's proxy, the
//! forward-auth check, the tower layer ([`crate::embed`]) and `portcullis eval` — hands its
//! request to [`admit`], which takes it from a path to the engine's verdict:
//!
//! 1. the path in normal form, the same route whichever way an upstream folds case, and the
//!    route serving it (none: 404; 403 for forward-auth, which proxies pass on);
//! 2. for forward-auth, whether the route is judged there at all;
//! 3. the `Origin` check, the method's spelling, the client address (behind trusted
//!    proxies, or as the forward-auth proxy describes it);
//! 4. the body, when the entry point has one and the route needs it: media type, size and
//!    time limits, the MCP JSON-RPC message parsed;
//! 5. the method an upstream will run: a `POST` with a `_method` override (query or form
//!    body) must be allowed both as sent and as the method it names;
//! 6. [`Policy::decide`](crate::engine::Policy::decide), and the decision metrics.
//!
//! A refusal is audited here, and an admitted request is audited through
//! [`Admitted::audit`] once its answer is known: the audit line is built in this module
//! only ([`audit_line`]). The entry points differ only in what they have, which [`Entry`]
//! says.

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body::Body as _;

use super::ConnInfo;
use super::body::{Body, empty, full};
use super::listing::{Allow, ListingFilter};
use super::rate_limit::Request as RateLimited;
use super::rejection::Rejection;
use super::request::{
    ContextParts, check_case_folding, check_mcp_media, check_method, check_origin, check_path,
    check_unencoded, client_addr, context, is_form, is_trusted, overridden_method, read_body,
    refuse_legacy_session,
};
use super::site::{LiveRoute, Site};
use crate::context::{ClientCert, RequestContext};
use crate::engine::{Decision, Outcome, Trace};
use crate::mcp::{McpCall, McpMessage};
use crate::observability::Metrics;
use crate::observability::logging::{AuditRecord, AuditVerdict, audit, audit_enabled};
use crate::verdict::{ErrorCode, Identity};

/// Which entry point is asking, and so what it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// The request itself reached this process — the gateway's proxy, a service behind the
    /// tower layer, `portcullis eval`: the body is here, the client address is the
    /// connection's peer (or the forwarded client behind a trusted proxy), the client
    /// certificate the connection's.
    Direct,
    /// The forward-auth check at `path`: the proxy in front keeps the body, and has described
    /// the original request; the connection's peer is the client the proxy named, and no
    /// client certificate is the client's. Only routes with `forward_auth` on are judged.
    ForwardAuth {
        /// The forward-auth endpoint's path (names refusals made before a route is known).
        path: &'a str,
    },
}

/// A request the engine let through.
#[derive(Debug)]
pub struct Admitted<'s> {
    /// The route serving it.
    pub route: &'s LiveRoute,
    /// The caller.
    pub identity: Identity,
    /// The provider (or `a+b` group) that authenticated it.
    pub provider: String,
    /// The client address the engine saw (the peer, or the forwarded client behind a
    /// trusted proxy).
    pub peer: Option<SocketAddr>,
    /// The client's TLS certificate the engine saw (none behind a proxy).
    pub client_cert: Option<ClientCert>,
    /// The body to hand on, intact: the buffered bytes again, or the untouched stream.
    pub body: Body,
    /// The whole body again, when it was read whole or there is none: what lets the
    /// request be sent to the upstream a second time (with a new upstream token).
    pub replay: Option<Bytes>,
    /// How the chain and the rules came to the decision.
    pub trace: Trace,
    /// The request line for the audit line (kept only when audit lines are written).
    line: Option<(Method, String)>,
}

/// A request the engine refused; already audited.
#[derive(Debug)]
pub struct Refused<'s> {
    /// The refusal, which renders the answer.
    pub rejection: Rejection,
    /// The route that would have served it, when one was found.
    pub route: Option<&'s LiveRoute>,
    /// Why, free of credentials (the audit line's reason).
    pub reason: String,
    /// How the chain and the rules came to a denial, when the policy was asked.
    pub trace: Option<Trace>,
}

impl Refused<'_> {
    /// The answer: status, challenge and JSON error body.
    pub fn into_response(self) -> Response<Body> {
        self.rejection.into_response()
    }
}

impl Admitted<'_> {
    /// Writes the audit line for this admitted request once its answer is known: `status`
    /// is what the caller got, `reason` why it was not a success, when it was not.
    pub fn audit(&self, status: StatusCode, reason: &str) {
        self.record(AuditVerdict::Allow, status, reason);
    }

    /// Refuses this admitted caller after all (a check that needs the identity, such as
    /// the MCP session's owner): audited with the caller, answered with `rejection`.
    pub fn refuse(&self, rejection: Rejection, reason: &str) -> Response<Body> {
        self.record(AuditVerdict::Deny, rejection.status(), reason);
        rejection.into_response()
    }

    fn record(&self, verdict: AuditVerdict, status: StatusCode, reason: &str) {
        if let Some((method, path)) = &self.line {
            audit(&audit_line(
                self.route.label(),
                Some(&self.identity.subject),
                &self.provider,
                verdict,
                reason,
                status,
                method,
                path,
            ));
        }
    }
}

/// Refuses a request before it reaches admission (the forward-auth endpoint's own checks on
/// its caller): audited under `label`, answered with `rejection`.
pub fn refuse_unrouted(
    label: &str,
    rejection: Rejection,
    reason: &str,
    method: &Method,
    path: &str,
) -> Response<Body> {
    audit(&audit_line(
        label,
        None,
        "-",
        AuditVerdict::Deny,
        reason,
        rejection.status(),
        method,
        path,
    ));
    rejection.into_response()
}

/// The one place an audit record is built.
#[expect(
    clippy::too_many_arguments,
    reason = "the audit record's fields, named at each call"
)]
fn audit_line<'a>(
    route: &'a str,
    subject: Option<&'a str>,
    provider: &'a str,
    verdict: AuditVerdict,
    reason: &'a str,
    status: StatusCode,
    method: &'a Method,
    path: &'a str,
) -> AuditRecord<'a> {
    AuditRecord {
        route,
        subject,
        provider,
        verdict,
        reason,
        status: status.as_u16(),
        method: method.as_str(),
        path,
    }
}

/// Decides one request. `parts` describes it (for forward-auth, the original request the
/// proxy described); `body` is `None` when the entry point does not have it. The headers are
/// lent to the engine and put back. `Err` is the complete refusal, already audited.
pub async fn admit<'s>(
    site: &'s Site,
    entry: Entry<'_>,
    parts: &mut Parts,
    body: Option<Body>,
    conn: &ConnInfo,
    metrics: &Metrics,
) -> Result<Admitted<'s>, Refused<'s>> {
    let unrouted = match entry {
        Entry::ForwardAuth { path } => path,
        Entry::Direct => "-",
    };
    let refuse = |rejection: Rejection,
                  route: Option<&'s LiveRoute>,
                  provider: &str,
                  reason: &str,
                  trace: Option<Trace>| {
        audit(&audit_line(
            route.map_or(unrouted, LiveRoute::label),
            None,
            provider,
            AuditVerdict::Deny,
            reason,
            rejection.status(),
            &parts.method,
            parts.uri.path(),
        ));
        Refused {
            rejection,
            route,
            reason: reason.to_owned(),
            trace,
        }
    };
    let path = parts.uri.path();
    if let Err(rejection) = check_path(path) {
        return Err(refuse(
            rejection,
            None,
            "-",
            "path not in normal form",
            None,
        ));
    }
    if let Err(rejection) = check_case_folding(site, path) {
        let reason = "path routed elsewhere when read case-blind";
        return Err(refuse(rejection, None, "-", reason, None));
    }
    // The authorization server's paths are never an upstream's, in any spelling an upstream
    // might read as theirs (`/OAuth/Token`, `/oauth/token.`): a client's secret must not
    // leave the gateway. The exact spellings are answered before admission; forward-auth
    // is told to send them to the gateway.
    if let Some(server) = &site.authorization_server
        && server.owns(path)
    {
        let (rejection, reason) = match entry {
            Entry::ForwardAuth { .. } => (
                Rejection::Forbidden {
                    code: ErrorCode::AccessDenied,
                    description: "this path belongs to the gateway's authorization server;                                   route it to the gateway, not to an upstream"
                        .into(),
                },
                "authorization-server path described to forward-auth",
            ),
            Entry::Direct => (
                Rejection::InvalidRequest {
                    description: "this is another spelling of an authorization-server path;                                   use the exact one"
                        .into(),
                    metadata_url: None,
                },
                "authorization-server path in another spelling",
            ),
        };
        return Err(refuse(rejection, None, "-", reason, None));
    }
    // The identity CA's paths likewise: a key or a token sent to them stays here.
    if let Some(authority) = &site.identity
        && authority.owns(path)
    {
        let (rejection, reason) = match entry {
            Entry::ForwardAuth { .. } => (
                Rejection::Forbidden {
                    code: ErrorCode::AccessDenied,
                    description: "this path belongs to the gateway's identity CA; route it to \
                                  the gateway, not to an upstream"
                        .into(),
                },
                "identity-CA path described to forward-auth",
            ),
            Entry::Direct => (
                Rejection::NotFound,
                "identity-CA path that is none of its endpoints",
            ),
        };
        return Err(refuse(rejection, None, "-", reason, None));
    }
    let Some(route) = site.route(path) else {
        let rejection = match entry {
            Entry::ForwardAuth { .. } => Rejection::Forbidden {
                code: ErrorCode::AccessDenied,
                description: "no route covers this path".into(),
            },
            Entry::Direct => Rejection::NotFound,
        };
        return Err(refuse(rejection, None, "-", "no route", None));
    };
    if let Entry::ForwardAuth { .. } = entry
        && !route.forward_auth
    {
        let rejection = Rejection::Forbidden {
            code: ErrorCode::AccessDenied,
            description: "this route is not judged through forward-auth \
                              (`forward_auth = false`); the gateway proxies it itself"
                .into(),
        };
        let reason = "route not served through forward-auth";
        return Err(refuse(rejection, Some(route), "-", reason, None));
    }
    if let Err(rejection) = check_origin(&parts.headers, &site.origins, &site.public_origin) {
        return Err(refuse(
            rejection,
            Some(route),
            "-",
            "origin not allowed",
            None,
        ));
    }
    if let Err(rejection) = check_method(&parts.method) {
        let reason = "method not in upper case";
        return Err(refuse(rejection, Some(route), "-", reason, None));
    }
    let (peer, client_cert) = match entry {
        Entry::ForwardAuth { .. } => (conn.peer, None),
        Entry::Direct => match client_addr(conn.peer, &parts.headers, &site.trusted_proxies) {
            // A certificate a trusted proxy presents is the proxy's own, whether or not it
            // names the client it forwards: it is never taken for a client's.
            Ok(peer) => {
                let from_proxy = conn
                    .peer
                    .is_some_and(|p| is_trusted(p.ip(), &site.trusted_proxies));
                (peer, conn.client_cert.clone().filter(|_| !from_proxy))
            }
            Err(rejection) => {
                let reason = "unreadable X-Forwarded-For";
                return Err(refuse(rejection, Some(route), "-", reason, None));
            }
        },
    };
    if route.mcp
        && let Err(rejection) = refuse_legacy_session(parts.uri.query())
    {
        let reason = "HTTP+SSE session id in the query";
        return Err(refuse(rejection, Some(route), "-", reason, None));
    }
    // Every request with a body is read when the route needs bodies, whatever its method:
    // an upstream may act on the body of a `PUT` or a `DELETE` as readily as of a `POST`.
    let body = body.unwrap_or_else(empty);
    let has_body = !body.is_end_stream();
    if has_body
        && route.mcp
        && let Err(rejection) = check_mcp_media(&parts.headers)
    {
        let reason = "MCP body media type refused";
        return Err(refuse(rejection, Some(route), "-", reason, None));
    }
    // A form `POST` is read too, wherever it goes: a `_method` in it is what an upstream runs.
    let form = parts.method == Method::POST && is_form(&parts.headers);
    if has_body
        && form
        && let Err(rejection) = check_unencoded(&parts.headers)
    {
        let reason = "encoded form body refused";
        return Err(refuse(rejection, Some(route), "-", reason, None));
    }
    let (buffered, body) = if has_body && (route.wants_body || form) {
        match read_body(
            body,
            &parts.headers,
            site.max_body_bytes,
            site.limits.body_timeout,
        )
        .await
        {
            Ok(bytes) => (Some(bytes.clone()), full(bytes)),
            Err(rejection) => {
                let reason = "request body refused";
                return Err(refuse(rejection, Some(route), "-", reason, None));
            }
        }
    } else {
        (None, body)
    };
    let form_bytes = buffered.as_deref().filter(|_| form);
    // With a `_method` override, the request must be allowed as sent and as the method it
    // names: upstreams that honour the override run the latter, all others the former.
    let mut methods = vec![parts.method.clone()];
    match overridden_method(&parts.method, parts.uri.query(), form_bytes) {
        Ok(Some(overridden)) if overridden != parts.method => methods.push(overridden),
        Ok(_) => {}
        Err(rejection) => {
            let reason = "unreadable method override";
            return Err(refuse(rejection, Some(route), "-", reason, None));
        }
    }
    let replay = if has_body {
        buffered.clone()
    } else {
        Some(Bytes::new())
    };
    let body_for_engine = buffered.filter(|_| route.wants_body);
    let mut allowed = None;
    // The tools a request calls, for the rate limits that count tool calls.
    let mut tools: Option<Vec<String>> = None;
    for method in &methods {
        let ctx = context(
            ContextParts {
                method,
                path: parts.uri.path(),
                query: parts.uri.query(),
                // Moved, not copied: the context is dropped before the upstream needs them.
                headers: std::mem::take(&mut parts.headers),
                peer,
                client_cert: client_cert.clone(),
            },
            route.mcp,
            body_for_engine.clone(),
        );
        let ctx = match ctx {
            Ok(ctx) => Arc::new(ctx),
            Err(rejection) => {
                let reason = "malformed MCP body";
                return Err(refuse(rejection, Some(route), "-", reason, None));
            }
        };
        if tools.is_none() && !site.rate_limits.is_empty() {
            tools = Some(
                ctx.mcp
                    .iter()
                    .flat_map(|m| &m.calls)
                    .filter(|call| call.method == "tools/call")
                    .filter_map(|call| call.target.name().map(str::to_owned))
                    .collect(),
            );
        }
        let Outcome { decision, trace } = route.policy.decide(&ctx).await;
        // The headers go back to the request. A provider that still holds the context (a
        // Wasm call abandoned at its deadline) leaves a copy behind instead.
        parts.headers =
            Arc::try_unwrap(ctx).map_or_else(|shared| shared.headers.clone(), |ctx| ctx.headers);
        metrics.decision(&trace);
        match decision {
            Decision::Allow { identity, provider } => {
                allowed.get_or_insert((identity, provider, trace));
            }
            Decision::Deny {
                denial,
                required_scopes,
            } => {
                let rejection = Rejection::from_denial(&denial, &required_scopes, &route.challenge);
                let decided_by = trace
                    .steps
                    .last()
                    .map_or_else(|| "-".to_owned(), |s| s.provider.clone());
                return Err(refuse(
                    rejection,
                    Some(route),
                    &decided_by,
                    &denial.reason,
                    Some(trace),
                ));
            }
        }
    }
    let Some((identity, provider, trace)) = allowed else {
        // `methods` is never empty; refuse rather than assume.
        let rejection = Rejection::Unavailable {
            description: "no decision was made".into(),
        };
        return Err(refuse(rejection, Some(route), "-", "no decision", None));
    };
    if !site.rate_limits.is_empty() {
        let request = RateLimited {
            route: &route.path,
            path: parts.uri.path(),
            identity: &identity,
            provider: &provider,
            client: peer.map(|p| p.ip()),
            tools: tools.as_deref().unwrap_or_default(),
        };
        if let Err(exceeded) = site
            .rate_limits
            .check_shared(&request, std::time::Instant::now())
            .await
        {
            metrics.rate_limited(route.label(), &exceeded.limit);
            let reason = format!("rate limit `{}` spent", exceeded.limit);
            return Err(refuse(
                Rejection::TooManyRequests(exceeded),
                Some(route),
                &provider,
                &reason,
                Some(trace),
            ));
        }
    }
    Ok(Admitted {
        route,
        identity,
        provider,
        peer,
        client_cert,
        body,
        replay,
        trace,
        line: audit_enabled().then(|| (parts.method.clone(), parts.uri.path().to_owned())),
    })
}

/// The filter for the listings (`tools/list`, …) in the answer to an admitted request on an
/// MCP route, whatever the request: entries the caller could not call are removed. `None`
/// on routes that are not MCP.
///
/// An entry is kept when the scope rules allow its call and so does every authorizer of
/// the route, asked with the listing request's context (`parts`, and the client address and
/// certificate it was admitted with) holding that one call instead of the listing, as the `POST` that would
/// make the call.
pub fn listing_filter(admitted: &Admitted<'_>, parts: &Parts) -> Option<ListingFilter> {
    let route = admitted.route;
    if !route.mcp {
        return None;
    }
    let rules = route.policy.rules.clone();
    let authorizers = route.policy.authorizers.clone();
    let caller = admitted.identity.clone();
    // Each entry is judged as the call it offers: a POST on this path (Streamable HTTP
    // sends every call as a POST), whichever request the listing came back on — a listing
    // on the GET stream must not show a tool that a POST-only rule forbids.
    let (method, path) = (Method::POST, parts.uri.path().to_owned());
    let base = (!authorizers.is_empty()).then(|| RequestContext {
        method: Method::POST,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        peer: admitted.peer,
        client_cert: admitted.client_cert.clone(),
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
