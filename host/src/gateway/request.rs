//! From an HTTP request to the engine's [`RequestContext`]: path hygiene, the client
//! address behind trusted proxies, the `Origin` check, and the MCP body.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::{HeaderMap, Method};
use ipnet::IpNet;

use super::body::{Body, CollectError, collect_limited_within};
use super::rejection::Rejection;
use super::site::Site;
use crate::config::model::OriginPolicy;
use crate::context::{ClientCert, RequestContext};
use crate::engine::rules::path_has_prefix;
use crate::mcp::{McpMessage, McpParseError, Mirrored, parse_body_mirrored};
use crate::normal_form::path_problem;

/// Refuses a path that is not in normal form (see [`path_problem`]). The gateway, its
/// rules and the upstream must all see the same path; a path that normalises differently in
/// each of them is how prefix rules are bypassed, so it is refused rather than normalised.
pub fn check_path(path: &str) -> Result<(), Rejection> {
    match path_problem(path) {
        None => Ok(()),
        Some(why) => Err(Rejection::InvalidRequest {
            description: format!("the request path is not in normal form ({why})"),
            metadata_url: None,
        }),
    }
}

/// A path as an upstream that ignores case and trailing dots reads it: ASP.NET Core and
/// Express route case-insensitively by default, and IIS drops a trailing `.` from a segment.
pub(crate) fn fold_path(path: &str) -> String {
    path.split('/')
        .map(|segment| segment.trim_end_matches('.').to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("/")
}

/// Refuses a path that an upstream ignoring case or trailing dots would route elsewhere than
/// this gateway: `/MCP` or `/mcp.` must not reach a public `/` route while `/mcp` is guarded,
/// nor escape a rule on `/mcp/admin` as `/mcp/Admin`. Routes and rules are compared folded
/// too, so a route written `/API` still serves `/API/x`. Paths already in lower case without
/// trailing dots cost one scan.
pub fn check_case_folding(site: &Site, path: &str) -> Result<(), Rejection> {
    // When routes and rules are all written in lower case without trailing dots, a path
    // that needs no folding reads the same both ways. Once one is written in capitals, even
    // an all-lower-case path can be what a case-blind upstream serves under it (`/api/x` is
    // its `/API/x`), so every path is compared.
    if !site.mixed_case_paths {
        let foldable = path.bytes().any(|b| b.is_ascii_uppercase())
            || path.ends_with('.')
            || path.contains("./");
        if !foldable {
            return Ok(());
        }
    }
    let folded = fold_path(path);
    if folded == path && !site.mixed_case_paths {
        return Ok(());
    }
    let literal = site.route(path).map(|r| r.path.as_str());
    let case_blind = site
        .routes
        .iter()
        .find(|r| r.path.is_empty() || path_has_prefix(&folded, &fold_path(&r.path)));
    let differs = literal != case_blind.map(|r| r.path.as_str())
        || case_blind.is_some_and(|r| r.policy.rules.path_rules_differ(path, &folded, fold_path));
    if differs {
        return Err(Rejection::InvalidRequest {
            description: format!(
                "the path reaches other rules when read without case or trailing dots \
                 (as `{folded}`); use the spelling the routes and rules are written in"
            ),
            metadata_url: None,
        });
    }
    Ok(())
}

/// Whether a body may be read as an HTML form (`application/x-www-form-urlencoded`), where a
/// `POST` can carry a `_method` override. Rack (every Rails app) reads a body without a
/// media type as a form too.
pub fn is_form(headers: &HeaderMap) -> bool {
    match headers.get(http::header::CONTENT_TYPE) {
        None => true,
        Some(value) => value.to_str().is_ok_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        }),
    }
}

/// Whether a form parameter name is `_method` as an upstream reads it: PHP (Laravel,
/// Symfony) turns `.`, ` ` and `[` in a top-level name into `_`.
fn is_method_override(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('_' | '.' | ' ' | '[')) && chars.as_str() == "method"
}

/// The method an upstream runs for a `POST` that carries a `_method` override, in the
/// query or in a form body (`form`): Rails (`Rack::MethodOverride`), Laravel, Symfony and
/// Express's `method-override` run `POST /items/1?_method=DELETE` as a `DELETE`. The gateway
/// judges it as that method, so a rule for `DELETE` holds; the request goes on as it came.
/// Overrides that disagree, or name no method, are refused. `None` when there is none.
pub fn overridden_method(
    method: &Method,
    query: Option<&str>,
    form: Option<&[u8]>,
) -> Result<Option<Method>, Rejection> {
    if method != Method::POST {
        return Ok(None);
    }
    let values = query
        .map(str::as_bytes)
        .into_iter()
        .chain(form)
        .flat_map(url::form_urlencoded::parse)
        .filter(|(name, _)| is_method_override(name))
        .map(|(_, value)| value.trim().to_ascii_uppercase());
    let mut chosen: Option<String> = None;
    for value in values {
        match &chosen {
            Some(earlier) if *earlier != value => {
                return Err(Rejection::InvalidRequest {
                    description: format!(
                        "`_method` names both `{earlier}` and `{value}`; send one override"
                    ),
                    metadata_url: None,
                });
            }
            _ => chosen = Some(value),
        }
    }
    chosen
        .map(|name| {
            Method::from_bytes(name.as_bytes()).map_err(|_| Rejection::InvalidRequest {
                description: format!("`_method` is `{name}`, which is not a method"),
                metadata_url: None,
            })
        })
        .transpose()
}

/// Refuses (400) a session of the HTTP+SSE transport: a session id in the query, which the
/// gateway cannot bind to its caller as it binds `Mcp-Session-Id`.
pub fn refuse_legacy_session(query: Option<&str>) -> Result<(), Rejection> {
    match legacy_session_parameter(query) {
        None => Ok(()),
        Some(name) => Err(Rejection::InvalidRequest {
            description: format!(
                "`{name}` in the query is a session of the HTTP+SSE transport, which this \
                 gateway cannot bind to its caller; serve this MCP server over Streamable \
                 HTTP (`Mcp-Session-Id`)"
            ),
            metadata_url: None,
        }),
    }
}

/// The name of a query parameter that carries a session of the HTTP+SSE transport
/// (`session_id` in the Python SDK, `sessionId` in the TypeScript SDK), if there is one.
fn legacy_session_parameter(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .map(|(name, _)| name)
        .find(|name| {
            let folded: String = name
                .chars()
                .filter(|c| *c != '_' && *c != '-')
                .flat_map(char::to_lowercase)
                .collect();
            folded == "sessionid"
        })
        .map(|name| name.into_owned())
}

/// Refuses a method spelled in anything but upper case. Methods are case-sensitive
/// (RFC 9110 §9.1), so hyper reads `post` as an extension method and the gateway's
/// `POST`-only handling would not apply, while ASP.NET Core, Express and others match
/// methods case-insensitively and run it as a POST.
pub fn check_method(method: &Method) -> Result<(), Rejection> {
    // `TRACE` makes an upstream (Apache's default) echo the request as it arrived, with the
    // credential the gateway added for the upstream; `CONNECT` asks for a tunnel the gateway
    // does not judge. Neither is ever passed on.
    if matches!(method.as_str(), "TRACE" | "TRACK" | "CONNECT") {
        return Err(Rejection::MethodNotAllowed {
            allow: "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        });
    }
    if method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Rejection::InvalidRequest {
            description: format!(
                "the method `{}` is not in upper case; methods are case-sensitive",
                method.as_str()
            ),
            metadata_url: None,
        });
    }
    Ok(())
}

/// Refuses an MCP body that the gateway and an upstream could decode differently: it must
/// be `Content-Type: application/json`, with no parameter but `charset=utf-8`, and no
/// `Content-Encoding` but `identity`. The gateway parses the bytes as UTF-8 JSON; Express's
/// `json()` decodes whatever charset is named (UTF-7 included, where `+AF8-` is `_`) and
/// inflates gzip, so any other label would have one body judged and another run.
pub fn check_mcp_media(headers: &HeaderMap) -> Result<(), Rejection> {
    let refuse = |why: String| {
        Err(Rejection::UnsupportedMediaType {
            description: format!("an MCP body must be UTF-8 `application/json`: {why}"),
        })
    };
    let mut types = headers.get_all(http::header::CONTENT_TYPE).iter();
    let (Some(content_type), None) = (types.next(), types.next()) else {
        return refuse("send exactly one `Content-Type: application/json`".into());
    };
    let Ok(content_type) = content_type.to_str() else {
        return refuse("the `Content-Type` is not readable".into());
    };
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return refuse(format!("`Content-Type` is `{essence}`"));
    }
    for parameter in parts {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if !(name.trim().eq_ignore_ascii_case("charset") && value.eq_ignore_ascii_case("utf-8")) {
            return refuse(format!(
                "the `Content-Type` parameter `{}` is not `charset=utf-8`",
                parameter.trim()
            ));
        }
    }
    match check_unencoded(headers) {
        Err(Rejection::UnsupportedMediaType { description }) => refuse(description),
        other => other,
    }
}

/// Refuses (415) a body in a content coding: the gateway judges bodies as sent, and an
/// upstream that inflates one (Express's body parsers do by default) would act on what the
/// gateway never read.
pub fn check_unencoded(headers: &HeaderMap) -> Result<(), Rejection> {
    for coding in headers.get_all(http::header::CONTENT_ENCODING) {
        let coding = coding.to_str().unwrap_or("?");
        if coding
            .split(',')
            .any(|c| !c.trim().eq_ignore_ascii_case("identity"))
        {
            return Err(Rejection::UnsupportedMediaType {
                description: format!(
                    "`Content-Encoding: {coding}` is not judged here; send the body as is"
                ),
            });
        }
    }
    Ok(())
}

/// The client's address: the TCP peer, or — when the peer is a trusted proxy — the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy (the left-most
/// when every hop is trusted).
///
/// Hops are read from the right, the side the trusted proxies wrote, so whatever a client
/// put on the left (`X-Forwarded-For: bogus`, which nginx's `$proxy_add_x_forwarded_for`
/// keeps) is never read once an untrusted hop is found. A hop may carry a port
/// (`203.0.113.7:5555`, `[2001:db8::1]:443`, as some proxies write it). A hop that cannot be
/// read before the client is found is a 400: falling back to the peer would make the
/// client the trusted proxy itself, which is what an address allow-list trusts.
pub fn client_addr(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> Result<Option<SocketAddr>, Rejection> {
    let Some(peer) = peer else {
        return Ok(None);
    };
    if !is_trusted(peer.ip(), trusted) {
        return Ok(Some(peer));
    }
    let unreadable = || Rejection::InvalidRequest {
        description: "`X-Forwarded-For` from a trusted proxy has a hop that is not an IP \
                      address"
            .into(),
        metadata_url: None,
    };
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().map_err(|_| unreadable()))
        .collect::<Result<_, _>>()?;
    let mut leftmost = None;
    for hop in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let hop = hop.trim();
        if hop.is_empty() {
            continue;
        }
        let ip = parse_hop(hop).ok_or_else(unreadable)?;
        if !is_trusted(ip, trusted) {
            return Ok(Some(SocketAddr::new(ip, 0)));
        }
        leftmost = Some(ip);
    }
    Ok(Some(leftmost.map_or(peer, |ip| SocketAddr::new(ip, 0))))
}

/// One `X-Forwarded-For` hop: an IP, optionally with a port (`[v6]:port` for IPv6).
pub(crate) fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|v6| v6.parse::<IpAddr>().ok())
}

/// Whether `ip` is in one of the trusted proxy networks.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    trusted.iter().any(|net| net.contains(&ip))
}

/// Checks a present `Origin` header against the policy. `public_origin` is the origin of the
/// configured public URL, always allowed.
pub fn check_origin(
    headers: &HeaderMap,
    policy: &OriginPolicy,
    public_origin: &str,
) -> Result<(), Rejection> {
    let Some(value) = headers.get(http::header::ORIGIN) else {
        return Ok(());
    };
    let origin = value.to_str().unwrap_or("").to_ascii_lowercase();
    let allowed = origin == public_origin
        || match policy {
            OriginPolicy::List(list) => list.contains(&origin),
            OriginPolicy::Default { loopback } => *loopback && is_loopback_origin(&origin),
        };
    if allowed {
        Ok(())
    } else {
        Err(Rejection::OriginNotAllowed {
            origin: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
    }
}

fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        rest.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Reads a body of at most `limit` bytes within `timeout`. Too large: 413; too slow: 408;
/// broken: 400.
pub async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, Rejection> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Rejection::PayloadTooLarge { limit });
    }
    let Ok(collected) = collect_limited_within(body, limit, timeout).await else {
        return Err(Rejection::RequestTimeout { timeout });
    };
    match collected {
        Ok(bytes) => Ok(bytes),
        Err(CollectError::TooLarge) => Err(Rejection::PayloadTooLarge { limit }),
        Err(CollectError::Broken(_)) => Err(Rejection::InvalidRequest {
            description: "the request body could not be read".into(),
            metadata_url: None,
        }),
    }
}

/// The parts of a request the engine sees.
#[derive(Debug)]
pub struct ContextParts<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path (already checked).
    pub path: &'a str,
    /// Query.
    pub query: Option<&'a str>,
    /// Headers, moved into the context (the gateway takes them back after the decision;
    /// see [`crate::gateway::admission`]).
    pub headers: HeaderMap,
    /// The client (after trusted-proxy resolution).
    pub peer: Option<SocketAddr>,
    /// Verified client certificate.
    pub client_cert: Option<ClientCert>,
}

/// The `Mcp-Session-Id`, if one was sent. Sent twice, or unreadable, it is a 400: the
/// gateway would bind and judge one while an upstream might read the other.
pub fn session_id(headers: &HeaderMap) -> Result<Option<&str>, Rejection> {
    let mut values = headers.get_all("mcp-session-id").iter();
    let (first, second) = (values.next(), values.next());
    match (first, second) {
        (None, _) => Ok(None),
        (Some(value), None) => value
            .to_str()
            .map(Some)
            .map_err(|_| Rejection::InvalidRequest {
                description: "the `Mcp-Session-Id` header is not visible ASCII".into(),
                metadata_url: None,
            }),
        (Some(_), Some(_)) => Err(Rejection::InvalidRequest {
            description: "`Mcp-Session-Id` is sent more than once".into(),
            metadata_url: None,
        }),
    }
}

/// Builds the engine's context. `body` is the buffered body of an MCP request (parsed here,
/// with the `Mcp-*` headers that mirror it: malformed JSON-RPC or a mismatch is a 400); MCP
/// requests without a body carry only the session id.
pub fn context(
    parts: ContextParts<'_>,
    mcp: bool,
    body: Option<Bytes>,
) -> Result<RequestContext, Rejection> {
    // Only MCP routes read the session id; elsewhere it is the upstream's own header.
    let session_id = match mcp {
        true => session_id(&parts.headers)?.map(str::to_owned),
        false => None,
    };
    let malformed = |e: McpParseError| Rejection::InvalidRequest {
        description: format!("the MCP request is malformed: {e}"),
        metadata_url: None,
    };
    let message = match (&body, mcp) {
        (Some(bytes), true) => {
            let mirrored = Mirrored::from_headers(&parts.headers).map_err(malformed)?;
            Some(parse_body_mirrored(bytes, session_id, &mirrored).map_err(malformed)?)
        }
        // Without a body there is no call for mirrored headers to disagree with, and nothing
        // for an upstream to run (forward-auth never sees bodies; see `forward_auth`).
        (None, true) => Some(McpMessage {
            session_id,
            calls: Vec::new(),
        }),
        (_, false) => None,
    };
    Ok(RequestContext {
        method: parts.method.clone(),
        path: parts.path.to_owned(),
        query: parts.query.map(str::to_owned),
        headers: parts.headers,
        peer: parts.peer,
        client_cert: parts.client_cert,
        mcp: message,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_reads_paths_as_case_blind_upstreams_do() {
        assert_eq!(fold_path("/mcp/x"), "/mcp/x");
        assert_eq!(fold_path("/MCP"), "/mcp");
        assert_eq!(fold_path("/mcp./Admin.."), "/mcp/admin");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("cidr")];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "203.0.113.9, 10.1.1.1".parse().expect("hv"),
        );
        let proxy: SocketAddr = "10.0.0.2:5000".parse().expect("addr");
        let stranger: SocketAddr = "198.51.100.1:5000".parse().expect("addr");
        let client = |peer, headers: &HeaderMap| {
            client_addr(Some(peer), headers, &trusted)
                .ok()
                .flatten()
                .map(|a| a.ip().to_string())
        };
        assert_eq!(client(proxy, &headers), Some("203.0.113.9".into()));
        assert_eq!(client(stranger, &headers), Some("198.51.100.1".into()));
        for (value, expected) in [
            // What nginx makes of a client's own `X-Forwarded-For: bogus`.
            ("bogus, 203.0.113.7", Some("203.0.113.7")),
            ("203.0.113.7:5555", Some("203.0.113.7")),
            ("[2001:db8::1]:443, 10.0.0.9", Some("2001:db8::1")),
            ("10.1.1.1, 10.2.2.2", Some("10.1.1.1")),
            ("203.0.113.7, bogus", None),
            ("bogus", None),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", value.parse().expect("hv"));
            assert_eq!(client(proxy, &headers).as_deref(), expected, "{value}");
        }
    }

    #[test]
    fn default_origin_policy_allows_loopback_only_on_loopback_listeners() {
        let mut headers = HeaderMap::new();
        headers.insert("origin", "http://localhost:3000".parse().expect("hv"));
        let public = "https://mcp.example.com";
        assert!(check_origin(&headers, &OriginPolicy::Default { loopback: true }, public).is_ok());
        assert!(
            check_origin(&headers, &OriginPolicy::Default { loopback: false }, public).is_err()
        );
        headers.insert("origin", "https://evil.example".parse().expect("hv"));
        assert!(check_origin(&headers, &OriginPolicy::Default { loopback: true }, public).is_err());
        headers.insert("origin", "https://MCP.example.com".parse().expect("hv"));
        assert!(check_origin(&headers, &OriginPolicy::Default { loopback: false }, public).is_ok());
    }
}
