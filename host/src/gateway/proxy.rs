//! The reverse proxy to a route's upstream: request and response header hygiene, timeouts,
//! and streaming.
//!
//! - Hop-by-hop headers (RFC 9110 §7.6.1, and any named in `Connection`) are dropped both
//!   ways; everything else, including every `Mcp-*` header, passes.
//! - Before the upstream: the route's credential headers are removed (no token
//!   passthrough), client-supplied `x-portcullis-*` headers (and `x_portcullis_*`
//!   look-alikes) are removed, then the identity
//!   is added as `x-portcullis-subject`, `x-portcullis-scopes` (space-separated) and
//!   `x-portcullis-provider`.
//! - Connecting has a timeout, and so does waiting for the response headers; both answer
//!   504. A refused or broken connection answers 502. Once headers arrive the body streams
//!   frame by frame with no total timeout (SSE streams are long-lived).

use std::time::Duration;

use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::body::Body;
use super::listing::{ListingFilter, filter_response};
use super::rejection::Rejection;
use crate::verdict::Identity;

/// Identity header names. Anything starting with `x-portcullis-` from a client is dropped.
pub const SUBJECT_HEADER: &str = "x-portcullis-subject";
/// Scopes, space-separated.
pub const SCOPES_HEADER: &str = "x-portcullis-scopes";
/// The provider that authenticated the caller.
pub const PROVIDER_HEADER: &str = "x-portcullis-provider";

// Header names as `HeaderName` constants: inserting by `&str` copies the name into a fresh
// allocation on every request, a constant does not.
const SUBJECT: HeaderName = HeaderName::from_static(SUBJECT_HEADER);
const SCOPES: HeaderName = HeaderName::from_static(SCOPES_HEADER);
const PROVIDER: HeaderName = HeaderName::from_static(PROVIDER_HEADER);
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

const HOP_BY_HOP_COUNT: usize = 9;

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the legacy ones); `Connection` comes first. A
/// `static`, not a `const`: a `const` array is built and dropped again at every use.
static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// One route's upstream: its base URL and a keep-alive connection pool.
#[derive(Debug, Clone)]
pub struct Upstream {
    base: Uri,
    /// The upstream's own `Host`, built once: left to the client it is rebuilt per request.
    host: Option<HeaderValue>,
    client: Client<HttpConnector, Body>,
    response_timeout: Duration,
}

/// Why an upstream request failed, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Could not connect.
    Connect,
    /// Connecting or waiting for headers took too long.
    Timeout,
    /// The connection broke.
    Other,
}

impl UpstreamFailure {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }
}

impl Upstream {
    /// A pool for `base` with the route's timeouts.
    pub fn new(base: Uri, connect_timeout: Duration, response_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let host = base
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        Self {
            base,
            host,
            client,
            response_timeout,
        }
    }

    /// The upstream URI for a request path under `route_prefix`.
    pub fn target(&self, route_prefix: &str, path: &str, query: Option<&str>) -> Uri {
        let rest = path.strip_prefix(route_prefix).unwrap_or(path);
        let base_path = self.base.path().trim_end_matches('/');
        let mut target = format!("{base_path}{rest}");
        if target.is_empty() {
            target.push('/');
        } else if !target.starts_with('/') {
            target.insert(0, '/');
        }
        if let Some(q) = query {
            target.push('?');
            target.push_str(q);
        }
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = PathAndQuery::try_from(target).ok();
        Uri::from_parts(parts).unwrap_or_else(|_| self.base.clone())
    }

    /// Sends `request` (whose URI is already the upstream target) and returns the
    /// upstream's response with hop-by-hop headers removed and listings filtered.
    pub async fn send(
        &self,
        mut request: Request<Body>,
        listing: Option<ListingFilter>,
    ) -> Result<Response<Body>, (Rejection, UpstreamFailure)> {
        if let Some(host) = &self.host {
            request.headers_mut().insert(HOST, host.clone());
        }
        let sent = tokio::time::timeout(self.response_timeout, self.client.request(request)).await;
        let response = match sent {
            Err(_) => {
                return Err((
                    Rejection::GatewayTimeout {
                        description: format!(
                            "the upstream did not answer within {} ms",
                            self.response_timeout.as_millis()
                        ),
                    },
                    UpstreamFailure::Timeout,
                ));
            }
            Ok(Err(error)) => return Err(classify(&error)),
            Ok(Ok(response)) => response,
        };
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let response = Response::from_parts(parts, super::body::boxed(body));
        filter_response(response, listing)
            .await
            .map_err(|rejection| (rejection, UpstreamFailure::Other))
    }
}

fn classify(error: &hyper_util::client::legacy::Error) -> (Rejection, UpstreamFailure) {
    let timed_out = {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        let mut found = false;
        while let Some(e) = source {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
                || e.to_string().contains("timed out")
            {
                found = true;
                break;
            }
            source = e.source();
        }
        found
    };
    if timed_out {
        (
            Rejection::GatewayTimeout {
                description: "connecting to the upstream timed out".into(),
            },
            UpstreamFailure::Timeout,
        )
    } else if error.is_connect() {
        (
            Rejection::BadGateway {
                description: "the upstream MCP server is unreachable (connection refused or \
                              failed)"
                    .into(),
            },
            UpstreamFailure::Connect,
        )
    } else {
        (
            Rejection::BadGateway {
                description: "the connection to the upstream MCP server failed".into(),
            },
            UpstreamFailure::Other,
        )
    }
}

/// Removes hop-by-hop headers, including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the (few) names present finds which hop-by-hop ones to remove; most
    // messages carry none, or only `Connection: keep-alive`, and a removal per fixed name
    // would hash each of them on every request and response.
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[i] = true;
        }
    }
    if present[0] {
        // `Connection: keep-alive` / `close` name nothing beyond the fixed list, so only
        // other names are collected (and allocated).
        let named: Vec<HeaderName> = headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| {
                !name.eq_ignore_ascii_case("close")
                    && !HOP_BY_HOP
                        .iter()
                        .any(|fixed| name.eq_ignore_ascii_case(fixed.as_str()))
            })
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

/// Whether `name` is `x-portcullis-…` with `_` read as `-` (names are lower-case).
fn is_identity_header(name: &HeaderName) -> bool {
    const PREFIX: &[u8] = b"x-portcullis-";
    let name = name.as_str().as_bytes();
    name.len() >= PREFIX.len()
        && name
            .iter()
            .zip(PREFIX)
            .all(|(&b, &p)| b == p || (b == b'_' && p == b'-'))
}

/// Removes every client-supplied `x-portcullis-*` header, and its look-alikes with `_` for
/// `-` (`X_Portcullis_Subject`): CGI, WSGI, Rack and PHP upstreams read both spellings as
/// the same `HTTP_X_PORTCULLIS_SUBJECT` variable, so a forged one could shadow the real one.
pub fn strip_identity_headers(headers: &mut HeaderMap) {
    // Usually empty, and an empty `Vec` does not allocate.
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_identity_header(name))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

/// Adds the identity headers (after [`strip_identity_headers`]).
pub fn add_identity_headers(headers: &mut HeaderMap, identity: &Identity, provider: &str) {
    headers.insert(SUBJECT, header_value(&identity.subject));
    headers.insert(SCOPES, header_value(&identity.scopes.join(" ")));
    headers.insert(PROVIDER, header_value(provider));
}

/// A header value for arbitrary text: visible ASCII and spaces pass; `%` and every other
/// byte are percent-encoded, so a subject can never inject a header or a line break.
pub fn header_value(text: &str) -> HeaderValue {
    let safe = |byte: &u8| (0x20..0x7f).contains(byte) && *byte != b'%';
    if text.bytes().all(|b| safe(&b))
        && let Ok(value) = HeaderValue::from_str(text)
    {
        return value;
    }
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if safe(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Prepares the request headers for the upstream. `client_ip_value`, when given, is
/// `client_ip` already rendered as a header value.
pub fn upstream_headers(
    headers: &mut HeaderMap,
    strip: &[HeaderName],
    client_ip: Option<std::net::IpAddr>,
    client_ip_value: Option<&HeaderValue>,
    original_host: Option<HeaderValue>,
    tls: bool,
) {
    strip_hop_by_hop(headers);
    for name in strip {
        headers.remove(name);
    }
    strip_identity_headers(headers);
    // The upstream is addressed by its own authority; the client's `Host` goes along as
    // `X-Forwarded-Host`.
    headers.remove(HOST);
    if let Some(host) = original_host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    let previous = headers.get(&X_FORWARDED_FOR);
    if let (None, Some(value)) = (previous, client_ip_value) {
        headers.insert(X_FORWARDED_FOR, value.clone());
    } else if let Some(ip) = client_ip {
        let forwarded = match previous.and_then(|v| v.to_str().ok()) {
            Some(previous) => format!("{previous}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(base: &str) -> Upstream {
        Upstream::new(
            base.parse().expect("uri"),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn route_prefix_is_replaced_by_the_upstream_path() {
        let u = upstream("http://127.0.0.1:9/mcp");
        assert_eq!(u.target("/mcp", "/mcp", None), "http://127.0.0.1:9/mcp");
        assert_eq!(
            u.target("/mcp", "/mcp/x", Some("a=1")),
            "http://127.0.0.1:9/mcp/x?a=1"
        );
        let root = upstream("http://127.0.0.1:9");
        assert_eq!(root.target("/api", "/api", None), "http://127.0.0.1:9/");
        assert_eq!(root.target("", "/x/y", None), "http://127.0.0.1:9/x/y");
    }

    #[test]
    fn identity_values_cannot_inject_lines() {
        assert_eq!(header_value("a\r\nx: y"), "a%0D%0Ax: y");
        assert_eq!(header_value("Zoë 100%"), "Zo%C3%AB 100%25");
    }

    #[test]
    fn identity_headers_and_underscore_look_alikes_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("x-portcullis-subject", "admin".parse().expect("hv"));
        h.insert("x_portcullis_subject", "admin".parse().expect("hv"));
        h.insert("x-portcullis_scopes", "admin".parse().expect("hv"));
        h.insert("x-portcullisx", "kept".parse().expect("hv"));
        strip_identity_headers(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-portcullisx"));
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().expect("hv"));
        h.insert("x-secret", "1".parse().expect("hv"));
        h.insert("te", "trailers".parse().expect("hv"));
        h.insert("mcp-session-id", "s".parse().expect("hv"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("mcp-session-id"));
    }
}
