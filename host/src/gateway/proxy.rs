//! The reverse proxy to a route's upstream: request and response header hygiene, timeouts,
//! and streaming.
//!
//! - Hop-by-hop headers (RFC 9110 §7.6.1, and any named in `Connection`) are dropped both
//!   ways; everything else, including every `Mcp-*` header, passes.
//! - Before the upstream: the route's credential headers are removed (no token
//!   passthrough), client-supplied `x-portcullis-*` headers (and `x_portcullis_*`
//!   look-alikes) are removed, then the identity
//!   is added as `x-portcullis-subject`, `x-portcullis-scopes` (space-separated) and
//!   `x-portcullis-provider`, `x-portcullis-client` (the OAuth client a token was issued to,
//!   its `client_id` claim) and `x-portcullis-actor` (for a delegated token, the RFC 8693
//!   `act.sub`): an agent acting for, or impersonating, a user never reads to the upstream as
//!   the user alone. The last two are always set, empty when the identity has none, so that
//!   a proxy copying them from the forward-auth answer also overwrites a client's copy.
//! - Client-sent forwarding headers (`Forwarded`, `X-Real-IP`, `X-Forwarded-Port`/
//!   `-Prefix`, URL and method overrides: the list is [`CLIENT_FORWARDING`]) are removed;
//!   `X-Forwarded-Host`/`-Proto` are the public URL's; `X-Forwarded-For` is the client's
//!   chain plus the peer only when the peer is a trusted proxy, else the peer alone.
//! - The upstream's own credential (`upstream_auth`, [`crate::upstream`]) is added last,
//!   replacing any header of its name; an `https://` upstream is reached over rustls
//!   ([`crate::upstream::tls`]), never in plain text.
//! - Connecting has a timeout, and so does waiting for the response headers; both answer
//!   504. A refused or broken connection, or a failed TLS handshake, answers 502; no
//!   credential for the upstream answers 503. Once headers arrive the body streams frame by
//!   frame with no total timeout (SSE streams are long-lived).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::body::{Body, full, without_trailers};
use super::listing::{ListingFilter, filter_response};
use super::rejection::Rejection;
use super::request::parse_hop;
use crate::upstream::tls::{client_config, tls_failure};
use crate::upstream::{Caller, Credential, UpstreamAuth};
use crate::verdict::Identity;

/// Identity header names. Anything starting with `x-portcullis-` from a client is dropped.
pub(crate) const SUBJECT_HEADER: &str = "x-portcullis-subject";
/// Scopes, space-separated.
pub(crate) const SCOPES_HEADER: &str = "x-portcullis-scopes";
/// The provider that authenticated the caller.
pub(crate) const PROVIDER_HEADER: &str = "x-portcullis-provider";
/// The actor of a delegated token (`act.sub`).
pub(crate) const ACTOR_HEADER: &str = "x-portcullis-actor";
/// The OAuth client a token was issued to (`client_id`).
pub(crate) const CLIENT_HEADER: &str = "x-portcullis-client";

// Header names as `HeaderName` constants: inserting by `&str` copies the name into a fresh
// allocation on every request, a constant does not.
const SUBJECT: HeaderName = HeaderName::from_static(SUBJECT_HEADER);
const SCOPES: HeaderName = HeaderName::from_static(SCOPES_HEADER);
const PROVIDER: HeaderName = HeaderName::from_static(PROVIDER_HEADER);
const ACTOR: HeaderName = HeaderName::from_static(ACTOR_HEADER);
const CLIENT: HeaderName = HeaderName::from_static(CLIENT_HEADER);
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

/// One route's upstream: its base URL, a keep-alive connection pool (over TLS for an
/// `https://` upstream: see [`crate::upstream::tls`]) and the credential presented there.
#[derive(Debug, Clone)]
pub struct Upstream {
    base: Uri,
    /// The upstream's own `Host`, built once: left to the client it is rebuilt per request.
    host: Option<HeaderValue>,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    response_timeout: Duration,
    auth: Option<Arc<UpstreamAuth>>,
}

/// Why an upstream request failed, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Could not connect.
    Connect,
    /// The TLS handshake failed (the upstream's certificate, most often).
    Tls,
    /// Connecting or waiting for headers took too long.
    Timeout,
    /// No credential for the upstream could be had.
    Credential,
    /// The upstream refused the gateway's credential.
    Refused,
    /// The connection broke.
    Other,
}

impl UpstreamFailure {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
            Self::Credential => "credential",
            Self::Refused => "refused",
            Self::Other => "other",
        }
    }
}

impl Upstream {
    /// A pool for `base` with the route's timeouts; an `https://` base is reached with the
    /// system's roots and no client certificate.
    pub fn new(base: Uri, connect_timeout: Duration, response_timeout: Duration) -> Self {
        let tls = (base.scheme_str() == Some("https"))
            .then(|| client_config(None).ok())
            .flatten();
        Self::with_tls(base, connect_timeout, response_timeout, tls)
    }

    /// A pool for `base` reached with `tls` when `base` is `https://` (a missing `tls`
    /// then fails every connection rather than fall back to plain text).
    pub fn with_tls(
        base: Uri,
        connect_timeout: Duration,
        response_timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        Self::with_tls_versions(base, connect_timeout, response_timeout, tls, true)
    }

    /// [`Upstream::with_tls`], offering HTTP/2 by ALPN only when `http2`.
    pub fn with_tls_versions(
        base: Uri,
        connect_timeout: Duration,
        response_timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
        http2: bool,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let https = base.scheme_str() == Some("https");
        let connector = match (https, tls) {
            (true, Some(tls)) if http2 => HttpsConnectorBuilder::new()
                .with_tls_config(Arc::unwrap_or_clone(tls))
                .https_only()
                .enable_http1()
                .enable_http2()
                .wrap_connector(connector),
            (true, Some(tls)) => HttpsConnectorBuilder::new()
                .with_tls_config(Arc::unwrap_or_clone(tls))
                .https_only()
                .enable_http1()
                .wrap_connector(connector),
            (true, None) => HttpsConnectorBuilder::new()
                .with_tls_config(no_roots())
                .https_only()
                .enable_http1()
                .wrap_connector(connector),
            // Plain http: the base's scheme is every target's, so nothing is ever sent over
            // TLS config here; the builder still wants one.
            (false, _) => HttpsConnectorBuilder::new()
                .with_tls_config(no_roots())
                .https_or_http()
                .enable_http1()
                .wrap_connector(connector),
        };
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
            auth: None,
        }
    }

    /// The same upstream, presenting `auth`.
    #[must_use]
    pub fn with_auth(mut self, auth: Option<Arc<UpstreamAuth>>) -> Self {
        self.auth = auth;
        self
    }

    /// The credential this upstream is given, if any.
    pub fn auth(&self) -> Option<&UpstreamAuth> {
        self.auth.as_deref()
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

    /// Sends `request` (whose URI is already the upstream target) with the upstream's
    /// credential and returns the upstream's response with hop-by-hop headers removed and
    /// listings filtered. `replay` is the request's whole body when it can be sent again
    /// (read whole, or none): a token the upstream answers 401 to is then replaced and the
    /// request sent once more. `caller` is what a token exchange needs.
    pub async fn send(
        &self,
        mut request: Request<Body>,
        listing: Option<ListingFilter>,
        replay: Option<Bytes>,
        caller: &Caller,
    ) -> Result<Response<Body>, (Rejection, UpstreamFailure)> {
        if let Some(host) = &self.host {
            request.headers_mut().insert(HOST, host.clone());
        }
        if replay.is_none() {
            // A streamed body: its trailers would reach an HTTP/2 upstream unjudged.
            request = request.map(without_trailers);
        }
        let Some(auth) = &self.auth else {
            let response = self.exchange(request).await?;
            return self.finish(response, listing).await;
        };
        let credential = self.credential(auth, caller).await?;
        credential.apply(request.headers_mut());
        // The parts to send again, kept only when there is a body to send again with.
        let again = replay.filter(|_| credential.refreshable()).map(|body| {
            let mut copy = Request::new(full(body));
            *copy.method_mut() = request.method().clone();
            *copy.uri_mut() = request.uri().clone();
            *copy.version_mut() = request.version();
            *copy.headers_mut() = request.headers().clone();
            copy
        });
        let mut response = self.exchange(request).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let fetch_again = auth.refused(&credential, caller);
            let Some(mut again) = again.filter(|_| fetch_again) else {
                return Err(refused_credential(auth));
            };
            tracing::info!(
                upstream = %self.base,
                kind = auth.kind(),
                "the upstream refused the gateway's token; fetching a new one and sending again"
            );
            let credential = self.credential(auth, caller).await?;
            credential.apply(again.headers_mut());
            response = self.exchange(again).await?;
            if response.status() == StatusCode::UNAUTHORIZED {
                auth.refused(&credential, caller);
                return Err(refused_credential(auth));
            }
        }
        self.finish(response, listing).await
    }

    async fn credential(
        &self,
        auth: &UpstreamAuth,
        caller: &Caller,
    ) -> Result<Credential, (Rejection, UpstreamFailure)> {
        auth.credential(caller).await.map_err(|error| {
            tracing::warn!(
                upstream = %self.base,
                kind = auth.kind(),
                %error,
                "no credential for the upstream; the request is refused, not sent without one"
            );
            (
                Rejection::Unavailable {
                    description: "the gateway could not obtain its credential for the \
                                  upstream; try again shortly"
                        .into(),
                },
                UpstreamFailure::Credential,
            )
        })
    }

    /// One round trip, bounded by the response timeout.
    async fn exchange(
        &self,
        request: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, (Rejection, UpstreamFailure)> {
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Err(_) => Err((
                Rejection::GatewayTimeout {
                    description: format!(
                        "the upstream did not answer within {} ms",
                        self.response_timeout.as_millis()
                    ),
                },
                UpstreamFailure::Timeout,
            )),
            Ok(Err(error)) => Err(classify(&error, &self.base)),
            Ok(Ok(response)) => Ok(response),
        }
    }

    async fn finish(
        &self,
        response: Response<hyper::body::Incoming>,
        listing: Option<ListingFilter>,
    ) -> Result<Response<Body>, (Rejection, UpstreamFailure)> {
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let response = Response::from_parts(parts, super::body::boxed(body));
        filter_response(response, listing)
            .await
            .map_err(|rejection| (rejection, UpstreamFailure::Other))
    }
}

fn refused_credential(auth: &UpstreamAuth) -> (Rejection, UpstreamFailure) {
    tracing::warn!(
        kind = auth.kind(),
        "the upstream refused the gateway's credential (401)"
    );
    (
        Rejection::BadGateway {
            description: "the upstream refused the gateway's credential".into(),
        },
        UpstreamFailure::Refused,
    )
}

/// A TLS configuration that trusts nothing: for connectors that must never complete a
/// handshake.
fn no_roots() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
}

fn classify(error: &hyper_util::client::legacy::Error, base: &Uri) -> (Rejection, UpstreamFailure) {
    if let Some(tls) = tls_failure(error) {
        tracing::warn!(upstream = %base, error = %tls, "TLS to the upstream failed");
        return (
            Rejection::BadGateway {
                description: "the upstream's TLS handshake failed (its certificate was \
                              refused, or it does not speak TLS)"
                    .into(),
            },
            UpstreamFailure::Tls,
        );
    }
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
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
pub(crate) fn strip_identity_headers(headers: &mut HeaderMap) {
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

/// The actor of a delegated identity (RFC 8693 `act.sub`): `act` is the claim's JSON, and
/// a delegation chain names the latest actor first.
pub(crate) fn actor_of(identity: &Identity) -> Option<String> {
    identity.claim("act").map(|act| {
        serde_json::from_str::<serde_json::Value>(act)
            .ok()
            .and_then(|v| v.get("sub").and_then(|s| s.as_str()).map(str::to_owned))
            .unwrap_or_else(|| act.to_owned())
    })
}

/// Adds the identity headers (after [`strip_identity_headers`]).
pub(crate) fn add_identity_headers(headers: &mut HeaderMap, identity: &Identity, provider: &str) {
    headers.insert(SUBJECT, header_value(&identity.subject));
    headers.insert(SCOPES, header_value(&identity.scopes.join(" ")));
    headers.insert(PROVIDER, header_value(provider));
    headers.insert(
        ACTOR,
        header_value(actor_of(identity).as_deref().unwrap_or_default()),
    );
    headers.insert(
        CLIENT,
        header_value(identity.claim("client_id").unwrap_or_default()),
    );
}

/// A header value for arbitrary text: visible ASCII and spaces pass; `%` and every other
/// byte are percent-encoded, so a subject can never inject a header or a line break.
pub(crate) fn header_value(text: &str) -> HeaderValue {
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

/// What the gateway says about itself and its client in `X-Forwarded-Host` and
/// `X-Forwarded-Proto`: the configured public URL's authority and scheme, built once per
/// configuration. Never the request's `Host`: an upstream behind a proxy builds its links
/// and redirects from `X-Forwarded-Host`, and a client-chosen one would poison them.
#[derive(Debug, Clone)]
pub struct ForwardedAs {
    host: Option<HeaderValue>,
    proto: HeaderValue,
}

impl ForwardedAs {
    /// The values for a gateway whose canonical URL is `public_url`.
    pub fn from_public_url(public_url: &str) -> Self {
        let uri: Option<Uri> = public_url.parse().ok();
        let host = uri
            .as_ref()
            .and_then(Uri::authority)
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        let proto = match uri.as_ref().and_then(Uri::scheme_str) {
            Some("https") => HeaderValue::from_static("https"),
            _ => HeaderValue::from_static("http"),
        };
        Self { host, proto }
    }
}

/// The TCP peer of a request, as the forwarding headers need it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer<'a> {
    /// Its address.
    pub ip: std::net::IpAddr,
    /// `ip` already rendered as a header value (once per connection).
    pub value: &'a HeaderValue,
    /// Whether it is in `server.trusted_proxies`, so that the `X-Forwarded-For` chain it
    /// sent is its own record of the hops before it.
    pub trusted: bool,
}

/// Client-sent headers that tell an upstream where the request came from, which host,
/// scheme, port or path prefix it was for, or which URL or method to run instead of the
/// one in the request line. Frameworks believe them behind a proxy (Spring's
/// `ForwardedHeaderFilter`, ASP.NET Core's `ForwardedHeaders`, Werkzeug's `ProxyFix`,
/// Rack, Symfony's trusted headers, Express `trust proxy`, the `request-ip` family), so
/// a client's copy would describe a request other than the one the gateway judged. Names
/// with `_` for `-` are removed too (see [`strip_client_forwarding`]).
///
/// - Addresses: `Forwarded` (RFC 7239), `X-Real-IP`, `X-Client-IP`, `Client-IP`,
///   `True-Client-IP` (Akamai), `CF-Connecting-IP` (Cloudflare), `Fastly-Client-IP`,
///   `X-Cluster-Client-IP`, `X-Forwarded`, `Forwarded-For`; and `X-Forwarded-For`, which
///   the gateway then writes itself.
/// - Host, scheme, port, prefix: `X-Forwarded-Port`, `X-Forwarded-Prefix` (Spring,
///   ASP.NET Core `PathBase`, Symfony, Traefik), `X-Forwarded-Server`, `X-Forwarded-Ssl`
///   and `X-Forwarded-Scheme` (Rack), `X-Url-Scheme`, `Front-End-Https` (IIS/OWA),
///   `X-Host` and `X-HTTP-Host-Override`; and `X-Forwarded-Host`/`-Proto`, which the
///   gateway then writes itself.
/// - URL and method overrides: `X-Original-URL` and `X-Rewrite-URL` (IIS URL Rewrite;
///   Symfony before CVE-2018-14773, Zend/Laminas, and the PHP apps built on them route by
///   them), `X-Forwarded-Uri` and `X-Forwarded-Method` (Traefik's forward-auth pair),
///   `X-HTTP-Method-Override`, `X-HTTP-Method` and `X-Method-Override` (Rack,
///   `method-override` for Express, Symfony and Laravel on POST, ASP.NET Web API and
///   OData: a POST the rules judged would run as a DELETE). Every `X-Original-*` name
///   goes as well ([`ORIGINAL_PREFIX`]): IIS, Azure Front Door, ASP.NET Core and
///   ingress-nginx use the family for the request before a rewrite.
const CLIENT_FORWARDING: [&str; 28] = [
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-forwarded",
    "forwarded-for",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-url-scheme",
    "front-end-https",
    "x-host",
    "x-http-host-override",
    "x-rewrite-url",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Whether a header that reached the forward-auth check is a `_` spelling of a forwarding
/// or method-override header (`X_HTTP_Method_Override`): no proxy writes one, so it is the
/// client's, and the README's proxy set-ups remove only the `-` spellings before the
/// upstream. The check cannot remove it, so it refuses.
pub(crate) fn is_client_override(name: &HeaderName) -> bool {
    name.as_str().as_bytes().contains(&b'_') && is_client_forwarding(name)
}

/// Every header starting with this is removed before the upstream (see
/// [`CLIENT_FORWARDING`]).
const ORIGINAL_PREFIX: &str = "x-original-";

/// Whether `name` is `wanted` with any `-` in `wanted` possibly spelled `_` (names are
/// lower-case): CGI, WSGI, Rack and PHP upstreams read both as one variable.
fn same_folding_underscore(name: &[u8], wanted: &[u8]) -> bool {
    name.len() == wanted.len()
        && name
            .iter()
            .zip(wanted)
            .all(|(&b, &w)| b == w || (b == b'_' && w == b'-'))
}

fn is_client_forwarding(name: &HeaderName) -> bool {
    let bytes = name.as_str().as_bytes();
    let prefix = ORIGINAL_PREFIX.as_bytes();
    (bytes.len() > prefix.len() && same_folding_underscore(&bytes[..prefix.len()], prefix))
        || CLIENT_FORWARDING
            .iter()
            .any(|wanted| same_folding_underscore(bytes, wanted.as_bytes()))
}

/// Removes every header in [`CLIENT_FORWARDING`] and every `X-Original-*`, also spelled
/// with `_` for `-`.
pub(crate) fn strip_client_forwarding(headers: &mut HeaderMap) {
    // Usually empty, and an empty `Vec` does not allocate.
    let theirs: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_client_forwarding(name))
        .cloned()
        .collect();
    for name in theirs {
        headers.remove(name);
    }
}

/// The `X-Forwarded-For` for the upstream: from a trusted proxy, the chain it sent (every
/// hop an IP address) followed by the proxy itself; from anyone else, the peer alone, so an
/// upstream reading the left-most entry cannot be handed an address the client chose. A
/// chain from a trusted proxy that does not parse is replaced by the peer, as
/// [`super::request::client_addr`] then believes the peer too.
fn forwarded_for(headers: &HeaderMap, peer: &Peer<'_>) -> HeaderValue {
    if !peer.trusted {
        return peer.value.clone();
    }
    // Hops are read as the engine reads them (`client_addr`): an address, with or without a
    // port, written back without it. What stands left of a hop that is not an address was
    // written by nobody the gateway trusts, so only what stands right of it is kept.
    let mut chain = String::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        let Ok(value) = value.to_str() else {
            return peer.value.clone();
        };
        for hop in value.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            match parse_hop(hop) {
                Some(ip) => {
                    chain.push_str(&ip.to_string());
                    chain.push_str(", ");
                }
                None => chain.clear(),
            }
        }
    }
    if chain.is_empty() {
        return peer.value.clone();
    }
    chain.push_str(&peer.ip.to_string());
    HeaderValue::from_str(&chain).unwrap_or_else(|_| peer.value.clone())
}

/// The MCP headers the gateway reads or checks against the body, by their exact names.
const MCP_HEADERS: [&str; 4] = [
    "mcp-session-id",
    "mcp-method",
    "mcp-name",
    "mcp-protocol-version",
];

/// Whether `name` spells, with `_` for some `-`, a header the gateway judges under its own
/// spelling: an MCP header (`Mcp_Session_Id`, `Mcp_Param_x`) or one of the route's
/// credential headers (`X_Api_Key`). CGI, WSGI, Rack and PHP upstreams read both spellings
/// as one variable, so the look-alike would run unjudged.
pub(crate) fn is_underscore_look_alike(name: &HeaderName, strip: &[HeaderName]) -> bool {
    const PARAM: &[u8] = b"mcp-param-";
    let bytes = name.as_str().as_bytes();
    if !bytes.contains(&b'_') {
        return false;
    }
    let param = bytes.len() > PARAM.len()
        && same_folding_underscore(&bytes[..PARAM.len()], PARAM)
        && !bytes.starts_with(PARAM);
    param
        || MCP_HEADERS
            .iter()
            .any(|wanted| same_folding_underscore(bytes, wanted.as_bytes()))
        || strip
            .iter()
            .any(|wanted| same_folding_underscore(bytes, wanted.as_str().as_bytes()))
}

/// Prepares the request headers for the upstream: hop-by-hop, the route's credential
/// headers, `_`-spelled look-alikes of MCP and credential headers, and client-sent identity
/// and forwarding headers removed; `X-Forwarded-For`
/// written from `peer` (removed when there is none, as for an in-process call), and
/// `X-Forwarded-Host`/`-Proto` set to the gateway's own.
pub(crate) fn upstream_headers(
    headers: &mut HeaderMap,
    strip: &[HeaderName],
    peer: Option<Peer<'_>>,
    forwarded_as: &ForwardedAs,
) {
    strip_hop_by_hop(headers);
    for name in strip {
        headers.remove(name);
    }
    // Usually empty, and an empty `Vec` does not allocate.
    let look_alikes: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_underscore_look_alike(name, strip))
        .cloned()
        .collect();
    for name in look_alikes {
        headers.remove(name);
    }
    strip_identity_headers(headers);
    let chain = peer.map(|peer| forwarded_for(headers, &peer));
    strip_client_forwarding(headers);
    // The upstream is addressed by its own authority (set when sending).
    headers.remove(HOST);
    if let Some(value) = chain {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if let Some(host) = &forwarded_as.host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    headers.insert(X_FORWARDED_PROTO, forwarded_as.proto.clone());
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
    fn client_forwarding_headers_and_their_underscore_spellings_are_stripped() {
        let mut h = HeaderMap::new();
        for name in [
            "forwarded",
            "x-real-ip",
            "x_real_ip",
            "x-forwarded-prefix",
            "x_forwarded_host",
            "x-original-url",
            "x_original_host",
            "x-rewrite-url",
            "x-http-method-override",
            "x-forwarded-for",
        ] {
            h.insert(HeaderName::from_static(name), "x".parse().expect("hv"));
        }
        h.insert("x-originalx", "kept".parse().expect("hv"));
        h.insert("x-forwarded", "x".parse().expect("hv"));
        h.insert("mcp-session-id", "kept".parse().expect("hv"));
        strip_client_forwarding(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["mcp-session-id", "x-originalx"]);
    }

    #[test]
    fn forwarded_for_keeps_the_chain_only_from_a_trusted_peer() {
        let value = HeaderValue::from_static("10.0.0.2");
        let peer = |trusted| Peer {
            ip: "10.0.0.2".parse().expect("ip"),
            value: &value,
            trusted,
        };
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "203.0.113.9".parse().expect("hv"));
        h.append(
            "x-forwarded-for",
            "198.51.100.1, 10.1.1.1".parse().expect("hv"),
        );
        assert_eq!(
            forwarded_for(&h, &peer(true)),
            "203.0.113.9, 198.51.100.1, 10.1.1.1, 10.0.0.2"
        );
        assert_eq!(forwarded_for(&h, &peer(false)), "10.0.0.2");
        h.insert("x-forwarded-for", "203.0.113.9, evil".parse().expect("hv"));
        assert_eq!(forwarded_for(&h, &peer(true)), "10.0.0.2");
        // Left of a hop that is not an address stands what nobody trusted wrote.
        h.insert(
            "x-forwarded-for",
            "evil, 203.0.113.9:5555, , [2001:db8::1]:443"
                .parse()
                .expect("hv"),
        );
        assert_eq!(
            forwarded_for(&h, &peer(true)),
            "203.0.113.9, 2001:db8::1, 10.0.0.2"
        );
    }

    #[test]
    fn forwarded_host_and_proto_come_from_the_public_url() {
        let ours = ForwardedAs::from_public_url("https://mcp.example.com:8443");
        let mut h = HeaderMap::new();
        h.insert("host", "evil.example".parse().expect("hv"));
        h.insert("x-forwarded-host", "evil.example".parse().expect("hv"));
        h.insert("x-forwarded-proto", "http".parse().expect("hv"));
        upstream_headers(&mut h, &[], None, &ours);
        assert_eq!(
            h.get("x-forwarded-host").expect("set"),
            "mcp.example.com:8443"
        );
        assert_eq!(h.get("x-forwarded-proto").expect("set"), "https");
        assert!(h.get("host").is_none() && h.get("x-forwarded-for").is_none());
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
