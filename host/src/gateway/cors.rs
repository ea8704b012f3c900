//! Browser clients: CORS for the allowed origins, and the `Host` allow-list that keeps a
//! gateway on loopback from being reached through DNS rebinding.
//!
//! - **Which origins.** The ones `check_origin` admits: the public URL's, those in
//!   `server.allowed_origins`, and loopback ones on a loopback listener. A request from any
//!   other origin is refused (403) before the chain runs, preflight or not.
//! - **Preflight.** An `OPTIONS` with `Origin` and `Access-Control-Request-Method` to a route,
//!   the token endpoint or the identity endpoints is answered by the gateway itself (204),
//!   without credentials and without running the chain: it says which methods and request
//!   headers a browser may use (the MCP and credential headers, plus
//!   `server.cors.allow_headers`) and for how long (`max_age_secs`). Nothing reaches the
//!   upstream. Credentials mode (`Access-Control-Allow-Credentials`) is never granted:
//!   MCP clients send their token in `Authorization`, not in cookies.
//! - **Responses.** Every answer to an allowed origin, refusals included (a browser must be
//!   able to read a 401's `WWW-Authenticate` to start OAuth), carries
//!   `Access-Control-Allow-Origin` (that origin, never `*`), `Vary: Origin` and
//!   `Access-Control-Expose-Headers` for `Mcp-Session-Id`, `Mcp-Protocol-Version`,
//!   `WWW-Authenticate` and `server.cors.expose_headers`.
//! - **Host.** On a loopback listener, `Host` (or HTTP/2 `:authority`) must be a loopback
//!   name or address or the public URL's host, unless `server.allowed_hosts` says otherwise;
//!   elsewhere any host is answered unless `server.allowed_hosts` is set. A web page that
//!   rebinds its own name to 127.0.0.1 sends its own name as `Host` and gets 421.
//!   `/healthz` and `/readyz` are exempt: orchestrators probe by address. So is the
//!   forward-auth endpoint when a trusted proxy asks it: the host it names is the one the
//!   proxy serves.

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, HOST,
    ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use super::body::{Body, empty};
use super::rejection::Rejection;
use super::request::check_origin;
use super::site::Site;
use crate::config::model::{Cors, HostPolicy};

/// Request headers every preflight allows: MCP's, the credential headers, and the body's.
const ALLOW_HEADERS: &str = "authorization, content-type, accept, mcp-session-id, mcp-protocol-version, last-event-id, \
     x-api-key";
/// Response headers every answer exposes.
const EXPOSE_HEADERS: &str = "mcp-session-id, mcp-protocol-version, www-authenticate";
/// Methods a browser may use on an MCP route (Streamable HTTP) and on the other endpoints.
const MCP_METHODS: &str = "GET, POST, DELETE, OPTIONS";
const HTTP_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// The CORS answers of one site, built once.
#[derive(Debug, Clone)]
pub struct CorsHeaders {
    allow_headers: HeaderValue,
    expose_headers: HeaderValue,
    max_age: HeaderValue,
}

impl CorsHeaders {
    /// From `server.cors`.
    pub fn new(cors: &Cors) -> Self {
        let join = |fixed: &str, extra: &[String]| {
            let mut text = fixed.to_owned();
            for name in extra {
                text.push_str(", ");
                text.push_str(name);
            }
            HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
        };
        Self {
            allow_headers: join(ALLOW_HEADERS, &cors.allow_headers),
            expose_headers: join(EXPOSE_HEADERS, &cors.expose_headers),
            max_age: HeaderValue::from(cors.max_age_secs),
        }
    }
}

/// The request's `Origin`, when it has one and the site allows it.
pub(crate) fn allowed_origin(site: &Site, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(ORIGIN)?;
    check_origin(headers, &site.origins, &site.public_origin)
        .is_ok()
        .then(|| origin.clone())
}

/// Whether `request` is a CORS preflight.
pub(crate) fn is_preflight<B>(request: &Request<B>) -> bool {
    request.method() == Method::OPTIONS
        && request.headers().contains_key(ORIGIN)
        && request
            .headers()
            .contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The preflight answer for `origin` (already allowed); `mcp` when the path is an MCP
/// route.
pub(crate) fn preflight(site: &Site, origin: &HeaderValue, mcp: bool) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(if mcp { MCP_METHODS } else { HTTP_METHODS }),
    );
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        site.cors.allow_headers.clone(),
    );
    headers.insert(ACCESS_CONTROL_MAX_AGE, site.cors.max_age.clone());
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.append(
        VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    response
}

/// Adds the CORS headers for `origin` (already allowed) to an answer.
pub(crate) fn decorate(site: &Site, response: &mut Response<Body>, origin: HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        site.cors.expose_headers.clone(),
    );
    headers.append(VARY, HeaderValue::from_static("origin"));
}

/// Refuses a request whose host the site does not answer to.
pub(crate) fn check_host<B>(request: &Request<B>, policy: &HostPolicy) -> Result<(), Rejection> {
    let HostPolicy::List(allowed) = policy else {
        return Ok(());
    };
    let sent = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    let host = host_of(&sent);
    let matches = |pattern: &String| match pattern.strip_prefix("*.") {
        Some(parent) => host
            .strip_suffix(parent)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => *pattern == host,
    };
    if !host.is_empty() && allowed.iter().any(matches) {
        Ok(())
    } else {
        Err(Rejection::HostNotAllowed {
            host: sent.chars().take(200).collect(),
        })
    }
}

/// The host of a `Host` value, lower case, without port or one trailing dot.
fn host_of(value: &str) -> String {
    let lower = value.trim().to_ascii_lowercase();
    let host = if lower.starts_with('[') {
        lower
            .split_inclusive(']')
            .next()
            .unwrap_or_default()
            .to_owned()
    } else {
        lower.split(':').next().unwrap_or_default().to_owned()
    };
    host.strip_suffix('.').map(str::to_owned).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_host(host: &str) -> Request<()> {
        Request::builder()
            .uri("/mcp")
            .header(HOST, host)
            .body(())
            .expect("request")
    }

    #[test]
    fn hosts_match_by_name_without_port_and_subdomains_only_by_wildcard() {
        let policy = HostPolicy::List(vec![
            "localhost".into(),
            "[::1]".into(),
            "*.example.com".into(),
        ]);
        for ok in [
            "localhost:8080",
            "LOCALHOST.",
            "[::1]:80",
            "a.example.com",
            "b.a.example.com",
        ] {
            assert!(check_host(&with_host(ok), &policy).is_ok(), "{ok}");
        }
        for bad in [
            "example.com",
            "evil.com",
            "localhost.evil.com",
            "aexample.com",
            "",
            "[::2]",
        ] {
            assert!(check_host(&with_host(bad), &policy).is_err(), "{bad}");
        }
        assert!(check_host(&with_host("evil.com"), &HostPolicy::Any).is_ok());
    }
}
