//! From an HTTP request to the engine's [`RequestContext`]: path hygiene, the client
//! address behind trusted proxies, the `Origin` check, and the MCP body.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::{HeaderMap, Method};
use ipnet::IpNet;

use super::body::{Body, CollectError, collect_limited};
use super::rejection::Rejection;
use crate::config::model::OriginPolicy;
use crate::context::{ClientCert, RequestContext};
use crate::mcp::{McpMessage, parse_body};

/// Refuses a path that is not in normal form: not starting with `/`, an empty (`//`), `.`
/// or `..` segment, a backslash, a `;` path parameter, a `#` fragment, or a percent-encoded
/// `/`, `.`, `\` or NUL. The gateway, its rules and the upstream must all see the same path;
/// a path that normalises differently in each of them is how prefix rules are bypassed, so
/// it is refused rather than normalised.
pub fn check_path(path: &str) -> Result<(), Rejection> {
    let bad = |why: &str| {
        Err(Rejection::InvalidRequest {
            description: format!("the request path is not in normal form ({why})"),
            metadata_url: None,
        })
    };
    if !path.starts_with('/') {
        return bad("it must start with `/`");
    }
    if path.contains('\\') {
        return bad("backslash");
    }
    // Tomcat, Jetty and Spring drop `;…` from each segment before routing, so `/admin;x`
    // is their `/admin` but not under this gateway's `/admin` rules, and `/public/..;/admin`
    // climbs out of a public route. Matrix parameters are rare enough to refuse outright.
    if path.contains(';') {
        return bad("`;` path parameter");
    }
    // hyper drops a fragment from the request line; one can only arrive in a forwarded URI
    // (forward-auth), where the proxy would route without it.
    if path.contains('#') {
        return bad("`#` fragment");
    }
    // Checked byte-wise rather than on a lower-cased copy: this runs on every request.
    let encoded_forbidden = path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_lowercase()),
                (b'2', b'f' | b'e') | (b'5', b'c') | (b'0', b'0')
            )
    });
    if encoded_forbidden {
        return bad("percent-encoded `/`, `.`, `\\` or NUL");
    }
    // RFC 3986 §6.2.2.2: unreserved characters are never percent-encoded in normal form. An
    // upstream that decodes `/%61dmin` to `/admin` would otherwise dodge an `/admin` rule.
    if has_encoded_unreserved(path) {
        return bad("percent-encoded letter, digit, `-`, `_` or `~`");
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        match segment {
            "." | ".." => return bad("`.` or `..` segment"),
            // A trailing `/` is an empty last segment and is fine; `//` anywhere else is not.
            "" if segments.peek().is_some() => return bad("empty segment `//`"),
            _ => {}
        }
    }
    Ok(())
}

fn has_encoded_unreserved(path: &str) -> bool {
    path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && std::str::from_utf8(&w[1..])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'~'))
    })
}

/// The client's address: the TCP peer, or — when the peer is a trusted proxy — the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_addr(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> Option<SocketAddr> {
    let peer = peer?;
    if !is_trusted(peer.ip(), trusted) {
        return Some(peer);
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return Some(peer);
        };
        for hop in value.split(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                // One unparseable hop makes the whole chain untrustworthy.
                Err(_) => return Some(peer),
            }
        }
    }
    let client = hops
        .iter()
        .rev()
        .find(|ip| !is_trusted(**ip, trusted))
        .or(hops.first())
        .copied();
    Some(client.map_or(peer, |ip| SocketAddr::new(ip, 0)))
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

/// Reads a body of at most `limit` bytes. Too large: 413; broken: 400.
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, Rejection> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Rejection::PayloadTooLarge { limit });
    }
    match collect_limited(body, limit).await {
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

/// Builds the engine's context. `mcp_body` is the buffered body of an MCP POST (parsed
/// here: malformed JSON-RPC is a 400); MCP GETs and DELETEs carry only the session id.
pub fn context(
    parts: ContextParts<'_>,
    mcp: bool,
    body: Option<Bytes>,
) -> Result<RequestContext, Rejection> {
    let session_id = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let message = match (&body, mcp) {
        (Some(bytes), true) => {
            Some(
                parse_body(bytes, session_id).map_err(|e| Rejection::InvalidRequest {
                    description: format!("the MCP request body is malformed: {e}"),
                    metadata_url: None,
                })?,
            )
        }
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
    fn non_normal_paths_are_refused() {
        for path in [
            "/mcp/../admin",
            "/mcp/./x",
            "/mcp//x",
            "//mcp",
            "/mcp%2fadmin",
            "/%61dmin",
            "/mcp/%7Euser",
            "/mcp/%2E%2E/x",
            "/mcp\\x",
            "mcp",
            "/mcp/..",
            "/mcp;x",
            "/public/..;/admin",
            "/mcp#x",
        ] {
            assert!(check_path(path).is_err(), "{path} should be refused");
        }
        for path in ["/", "/mcp", "/mcp/", "/mcp/a%20b", "/a.b/..c"] {
            assert!(check_path(path).is_ok(), "{path} should pass");
        }
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
        assert_eq!(
            client_addr(Some(proxy), &headers, &trusted).map(|a| a.ip()),
            Some("203.0.113.9".parse().expect("ip"))
        );
        assert_eq!(
            client_addr(Some(stranger), &headers, &trusted),
            Some(stranger)
        );
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
