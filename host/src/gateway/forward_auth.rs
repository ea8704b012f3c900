//! The forward-auth endpoint (`server.forward_auth_path`, `/check` by default): the proxy in
//! front of an upstream asks it whether to let a request through — nginx `auth_request`,
//! Traefik ForwardAuth, Caddy `forward_auth`, Envoy `ext_authz` (HTTP service).
//!
//! **Off unless configured, and only for the proxy.** `server.forward_auth_proxy` names the
//! proxy and turns the endpoint on; it answers only peers in `server.trusted_proxies` (anyone
//! else gets 403). The endpoint believes its caller's description of the request and tells
//! whether a credential is good: from anyone but the proxy it would be a credential oracle.
//!
//! **One header family per deployment.** A proxy passes the client's own headers into the
//! check and overwrites only the ones it sets itself, so a header that another proxy would
//! have set is whatever the client wrote. The gateway therefore reads exactly the family of
//! the configured proxy:
//!
//! | `forward_auth_proxy` | method | path and query | client address |
//! |---|---|---|---|
//! | `nginx` | `X-Original-Method` | `X-Original-URI` | last `X-Forwarded-For` entry |
//! | `traefik`, `caddy` | `X-Forwarded-Method` | `X-Forwarded-Uri` | last `X-Forwarded-For` entry |
//! | `envoy` | the check request's | after the check path (`path_prefix`) | last `X-Forwarded-For` entry |
//!
//! - A describing header of another family (`X-Forwarded-Uri` behind nginx, `X-Original-URI`
//!   behind Traefik, Caddy or Envoy) can only come from the client, passed on by the proxy:
//!   the check is refused (403, which every proxy passes on to the client) rather than
//!   judged, since the client is trying to describe the request itself. No legitimate client
//!   sends them.
//! - Every header of the family is required, exactly once: missing means the proxy is not
//!   set up as the README shows (judging the check request instead would judge the wrong
//!   request), and a second line means one copy came from the client (400).
//! - The client address is the last `X-Forwarded-For` entry, the one the proxy wrote: nginx
//!   sets the header to `$remote_addr` (README snippet), Traefik with `trustForwardHeader:
//!   false` and Caddy set it to their peer, Envoy with `use_remote_address: true` appends its
//!   peer. Earlier entries are what the client claimed and are not read.
//! - The method must be spelled in upper case (`post` is refused: upstreams that match
//!   methods case-insensitively would run what a rule for `POST` did not judge); the URI must
//!   be a path (`/…`) in the normal form proxied requests need ([`check_path`]).
//!
//! **What is judged.** The route is chosen by the original path; a route set
//! `forward_auth = false` is refused (403). No body reaches this endpoint, so a route whose
//! decision reads the body (MCP rules, authorizers on MCP routes, providers granted `body`) is
//! a config error when forward-auth can reach it; an MCP request is judged as one without
//! calls, which is also what a Wasm authenticator's `mcp()` shows here. The TLS client
//! certificate of this connection is the proxy's, not the client's, so none is given to the
//! chain (an `mtls` provider denies): otherwise every request the proxy forwards would carry
//! the proxy's identity.
//!
//! **MCP sessions.** A request presenting an `Mcp-Session-Id` on an MCP route is let
//! through only in a session its caller opened through the gateway's own proxy, as the proxy
//! judges it ([`SessionBindings::presented`]). The check never sees the upstream's answers,
//! so it cannot bind the sessions opened behind the proxy in front of it: such a request is
//! answered 404. Serve MCP upstreams that use sessions through the gateway's proxy
//! (`forward_auth = false` on the route), or stateless ones through forward-auth.
//!
//! Answers: 200 with the identity headers; 401 with the challenge; 403 (also for a stranger
//! and for another family's header); 400 for a request the check cannot describe
//! unambiguously (nginx turns it into a 500 for the client); 503 when a provider failed.

use std::net::{IpAddr, SocketAddr};

use http::request::Parts;
use http::{Method, Request, Response, StatusCode};

use super::ConnInfo;
use super::admission::{Entry, admit, refuse_unrouted};
use super::body::{Body, empty};
use super::proxy::{add_identity_headers, is_client_override, is_underscore_look_alike};
use super::rejection::Rejection;
use super::request::{check_path, is_trusted};
use super::sessions::SessionBindings;
use super::site::Site;
use crate::config::model::{ForwardAuth, ForwardAuthProxy};
use crate::observability::Metrics;
use crate::verdict::ErrorCode;

/// Every header a proxy family uses to describe the original method or URI.
const DESCRIBING: [&str; 4] = [
    "x-original-method",
    "x-original-uri",
    "x-forwarded-method",
    "x-forwarded-uri",
];

/// Answers one forward-auth check for `endpoint`.
pub(crate) async fn check(
    site: &Site,
    endpoint: &ForwardAuth,
    request: Request<Body>,
    conn: &ConnInfo,
    metrics: &Metrics,
    sessions: &SessionBindings,
) -> Response<Body> {
    let (parts, _body) = request.into_parts();
    let label = endpoint.path.as_str();
    let from_proxy = conn
        .peer
        .is_some_and(|p| is_trusted(p.ip(), &site.trusted_proxies));
    if !from_proxy {
        let rejection = Rejection::Forbidden {
            code: ErrorCode::AccessDenied,
            description: "the forward-auth endpoint answers only the proxies listed in \
                          `server.trusted_proxies`"
                .into(),
        };
        let reason = "forward-auth caller is not a trusted proxy";
        return refuse_unrouted(label, rejection, reason, &parts.method, parts.uri.path());
    }
    let original = match original(endpoint, &parts) {
        Ok(original) => original,
        Err(rejection) => {
            let reason = "original request not described unambiguously";
            return refuse_unrouted(label, rejection, reason, &parts.method, parts.uri.path());
        }
    };
    // The original request as the proxy described it, with the check request's headers
    // (the client's, passed on by the proxy).
    let target = match original.target() {
        Ok(uri) => uri,
        Err(rejection) => {
            let reason = "original request not described unambiguously";
            return refuse_unrouted(label, rejection, reason, &parts.method, parts.uri.path());
        }
    };
    let mut described = Request::new(());
    *described.method_mut() = original.method;
    *described.uri_mut() = target;
    *described.headers_mut() = parts.headers;
    let (mut described, ()) = described.into_parts();
    // The TLS client certificate of this connection is the proxy's, not the client's.
    let client = ConnInfo::new(Some(SocketAddr::new(original.client, 0)), None, conn.tls);
    let entry = Entry::ForwardAuth { path: label };
    match admit(site, entry, &mut described, None, &client, metrics).await {
        Ok(admitted) => {
            // The check cannot remove a header before the upstream, as the proxy does: a
            // `_` spelling of an MCP or credential header would reach it unjudged.
            if let Some(name) = described.headers.keys().find(|name| {
                is_underscore_look_alike(name, &admitted.route.strip) || is_client_override(name)
            }) {
                let rejection = Rejection::InvalidRequest {
                    description: format!(
                        "`{name}` is a `_` spelling of a header the gateway judges or removes \
                         under its own name; upstreams that read `_` as `-` would act on it, \
                         and the check cannot remove it"
                    ),
                    metadata_url: None,
                };
                return admitted.refuse(rejection, "underscore look-alike header");
            }
            if let Err(refusal) = sessions.presented(&admitted, &described) {
                return *refusal;
            }
            admitted.audit(StatusCode::OK, "");
            let mut response = Response::new(empty());
            *response.status_mut() = StatusCode::OK;
            add_identity_headers(
                response.headers_mut(),
                &admitted.identity,
                &admitted.provider,
            );
            response
        }
        Err(refused) => refused.into_response(),
    }
}

/// The request the proxy is about to let through, as its header family describes it.
#[derive(Debug, PartialEq, Eq)]
struct Original {
    method: Method,
    /// Checked with [`check_path`].
    path: String,
    query: Option<String>,
    /// The last `X-Forwarded-For` entry.
    client: IpAddr,
}

impl Original {
    /// The path and query as a request target.
    fn target(&self) -> Result<http::Uri, Rejection> {
        let target = match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        };
        target.parse().map_err(|_| Rejection::InvalidRequest {
            description: format!("the original URI `{target}` is not a request target"),
            metadata_url: None,
        })
    }
}

/// Reads the original request from `parts` the way `endpoint.proxy` describes it (see the
/// module docs). Every ambiguity is a 400: a fallback would judge another request than the
/// one the proxy lets through.
fn original(endpoint: &ForwardAuth, parts: &Parts) -> Result<Original, Rejection> {
    let proxy = endpoint.proxy;
    let bad = |description: String| Rejection::InvalidRequest {
        description,
        metadata_url: None,
    };
    let (method_header, uri_header) = match proxy {
        ForwardAuthProxy::Nginx => (Some("x-original-method"), Some("x-original-uri")),
        ForwardAuthProxy::Traefik | ForwardAuthProxy::Caddy => {
            (Some("x-forwarded-method"), Some("x-forwarded-uri"))
        }
        ForwardAuthProxy::Envoy => (None, None),
    };
    let foreign = DESCRIBING.into_iter().find(|name| {
        Some(*name) != method_header
            && Some(*name) != uri_header
            && parts.headers.contains_key(*name)
    });
    if let Some(foreign) = foreign {
        return Err(Rejection::Forbidden {
            code: ErrorCode::AccessDenied,
            description: format!(
                "`{foreign}` is not a header {} sends to the forward-auth check (the gateway is \
             set up with `forward_auth_proxy = \"{}\"`): it came from the client, so the \
             request is not judged",
                proxy_name(proxy),
                proxy.name()
            ),
        });
    }
    let one = |name: &str| -> Result<&str, Rejection> {
        let mut values = parts.headers.get_all(name).iter();
        let Some(value) = values.next() else {
            return Err(bad(format!(
                "`{name}` is missing: {} must set it on the forward-auth check (see the \
                 README's forward-auth section)",
                proxy_name(proxy)
            )));
        };
        if values.next().is_some() {
            return Err(bad(format!(
                "`{name}` is given more than once: one copy came from the client"
            )));
        }
        value
            .to_str()
            .map_err(|_| bad(format!("`{name}` is not readable (not visible ASCII)")))
    };
    let (method, target) = match (method_header, uri_header) {
        (Some(method_header), Some(uri_header)) => {
            let method = one(method_header)?;
            (
                method_of(method, method_header)?,
                one(uri_header)?.to_owned(),
            )
        }
        _ => {
            // Envoy sends the original method, and `<path_prefix><original path>`.
            let rest = parts
                .uri
                .path()
                .strip_prefix(endpoint.path.as_str())
                .filter(|rest| rest.starts_with('/'))
                .ok_or_else(|| {
                    bad(format!(
                        "Envoy sends `{}<original path>`; `{}` names no original path (set \
                         the ext_authz `path_prefix` to `{}`)",
                        endpoint.path,
                        parts.uri.path(),
                        endpoint.path
                    ))
                })?;
            let target = match parts.uri.query() {
                Some(query) => format!("{rest}?{query}"),
                None => rest.to_owned(),
            };
            (method_of(parts.method.as_str(), "the method")?, target)
        }
    };
    if !target.starts_with('/') {
        return Err(bad(format!(
            "the original URI must be a path (`/…`), not `{target}`"
        )));
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target, None),
    };
    check_path(&path)?;
    let forwarded_for = one("x-forwarded-for")?;
    let last = forwarded_for.rsplit(',').next().unwrap_or("").trim();
    let client = last.parse::<IpAddr>().map_err(|_| {
        bad(format!(
            "the last `x-forwarded-for` entry, `{last}`, is not an IP address (the proxy \
             writes its peer's address there)"
        ))
    })?;
    Ok(Original {
        method,
        path,
        query,
        client,
    })
}

/// An original method, refused unless it is an upper-case token.
fn method_of(text: &str, header: &str) -> Result<Method, Rejection> {
    let canonical = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
    if !canonical {
        return Err(Rejection::InvalidRequest {
            description: format!(
                "{header} `{text}` is not a method in canonical (upper-case) spelling"
            ),
            metadata_url: None,
        });
    }
    Method::from_bytes(text.as_bytes()).map_err(|_| Rejection::InvalidRequest {
        description: format!("{header} `{text}` is not a method"),
        metadata_url: None,
    })
}

fn proxy_name(proxy: ForwardAuthProxy) -> &'static str {
    match proxy {
        ForwardAuthProxy::Nginx => "nginx",
        ForwardAuthProxy::Traefik => "Traefik",
        ForwardAuthProxy::Caddy => "Caddy",
        ForwardAuthProxy::Envoy => "Envoy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(proxy: ForwardAuthProxy) -> ForwardAuth {
        ForwardAuth {
            path: "/check".into(),
            proxy,
        }
    }

    fn parts(method: &str, uri: &str, headers: &[(&str, &[u8])]) -> Parts {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, http::HeaderValue::from_bytes(value).expect("hv"));
        }
        request.body(()).expect("request").into_parts().0
    }

    fn read(proxy: ForwardAuthProxy, parts: &Parts) -> Result<(String, String, String), String> {
        original(&endpoint(proxy), parts)
            .map(|o| {
                let target = match o.query {
                    Some(q) => format!("{}?{q}", o.path),
                    None => o.path,
                };
                (o.method.to_string(), target, o.client.to_string())
            })
            .map_err(|r| r.error_body().1)
    }

    #[test]
    fn each_proxy_reads_only_its_own_family() {
        let nginx = parts(
            "GET",
            "/check",
            &[
                ("x-original-method", b"POST"),
                ("x-original-uri", b"/admin/x?a=b"),
                ("x-forwarded-for", b"203.0.113.9"),
            ],
        );
        assert_eq!(
            read(ForwardAuthProxy::Nginx, &nginx),
            Ok(("POST".into(), "/admin/x?a=b".into(), "203.0.113.9".into()))
        );
        for other in [
            ForwardAuthProxy::Traefik,
            ForwardAuthProxy::Caddy,
            ForwardAuthProxy::Envoy,
        ] {
            assert!(
                read(other, &nginx).is_err(),
                "{other:?} must not read nginx's"
            );
        }
        let traefik = parts(
            "GET",
            "/check",
            &[
                ("x-forwarded-method", b"DELETE"),
                ("x-forwarded-uri", b"/mcp"),
                ("x-forwarded-for", b"2001:db8::1"),
            ],
        );
        for proxy in [ForwardAuthProxy::Traefik, ForwardAuthProxy::Caddy] {
            assert_eq!(
                read(proxy, &traefik),
                Ok(("DELETE".into(), "/mcp".into(), "2001:db8::1".into()))
            );
        }
        assert!(read(ForwardAuthProxy::Nginx, &traefik).is_err());
        let envoy = parts(
            "POST",
            "/check/mcp?x=1",
            &[("x-forwarded-for", b"198.51.100.7, 203.0.113.9")],
        );
        assert_eq!(
            read(ForwardAuthProxy::Envoy, &envoy),
            Ok(("POST".into(), "/mcp?x=1".into(), "203.0.113.9".into()))
        );
    }

    #[test]
    fn another_familys_describing_header_is_refused() {
        let spoofed = parts(
            "GET",
            "/check",
            &[
                ("x-original-method", b"GET"),
                ("x-original-uri", b"/admin/secret"),
                ("x-forwarded-uri", b"/public/x"),
                ("x-forwarded-for", b"203.0.113.9"),
            ],
        );
        let error = read(ForwardAuthProxy::Nginx, &spoofed).expect_err("refused");
        assert!(error.contains("`x-forwarded-uri`"), "{error}");
        let spoofed = parts(
            "GET",
            "/check/admin",
            &[
                ("x-original-uri", b"/public"),
                ("x-forwarded-for", b"203.0.113.9"),
            ],
        );
        assert!(read(ForwardAuthProxy::Envoy, &spoofed).is_err());
    }

    #[test]
    fn missing_repeated_or_unreadable_family_headers_are_refused() {
        let cases: [&[(&str, &[u8])]; 7] = [
            &[
                ("x-original-uri", b"/admin"),
                ("x-forwarded-for", b"203.0.113.9"),
            ],
            &[("x-original-method", b"GET"), ("x-original-uri", b"/admin")],
            &[
                ("x-original-method", b"GET"),
                ("x-original-uri", b"/admin"),
                ("x-original-uri", b"/public"),
                ("x-forwarded-for", b"203.0.113.9"),
            ],
            &[
                ("x-original-method", b"GET"),
                ("x-original-uri", b"/admin/\xff"),
                ("x-forwarded-for", b"203.0.113.9"),
            ],
            &[
                ("x-original-method", b"get"),
                ("x-original-uri", b"/admin"),
                ("x-forwarded-for", b"203.0.113.9"),
            ],
            &[
                ("x-original-method", b"GET"),
                ("x-original-uri", b"http://evil.example/public"),
                ("x-forwarded-for", b"203.0.113.9"),
            ],
            &[
                ("x-original-method", b"GET"),
                ("x-original-uri", b"/admin"),
                ("x-forwarded-for", b"203.0.113.9, unknown"),
            ],
        ];
        for headers in cases {
            let request = parts("GET", "/check", headers);
            assert!(
                read(ForwardAuthProxy::Nginx, &request).is_err(),
                "{headers:?} should be refused"
            );
        }
    }

    #[test]
    fn envoy_needs_an_original_path_after_the_check_path() {
        let headers: &[(&str, &[u8])] = &[("x-forwarded-for", b"203.0.113.9")];
        assert!(read(ForwardAuthProxy::Envoy, &parts("GET", "/check", headers)).is_err());
        assert!(
            read(
                ForwardAuthProxy::Envoy,
                &parts("GET", "/check/public/../admin", headers)
            )
            .is_err()
        );
    }
}
