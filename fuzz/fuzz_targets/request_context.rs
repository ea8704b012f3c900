//! The gateway's request checks and context builder (`portcullis::gateway::request`) on an
//! arbitrary method, target, headers, peer, trusted proxies and body, in the order the
//! handler runs them.
//!
//! Invariants: nothing panics; a path `check_path` accepts is in the normal form it promises
//! (starts with `/`; no `.`/`..` segment, no `//`, no backslash; no percent-encoded `/`,
//! `.`, `\`, NUL or unreserved character); the client address is the peer unless the peer
//! is a trusted proxy, and then an address the peer or `X-Forwarded-For` named; the context
//! carries the request as given, with the MCP body parsed exactly as `parse_body_mirrored`
//! does with the request's `Mcp-*` headers.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::Arbitrary;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use portcullis::config::model::OriginPolicy;
use portcullis::context::RequestContext;
use portcullis::gateway::Rejection;
use portcullis::gateway::request::{
    ContextParts, check_origin, check_path, client_addr, context, session_id,
};
use portcullis::mcp::{Mirrored, parse_body_mirrored};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: &'a [u8],
    /// A request target (`/path?query`), parsed by `http` as the server would.
    target: &'a str,
    headers: Vec<(Name<'a>, &'a [u8])>,
    peer: Option<(Ip, u16)>,
    trusted: Vec<(Ip, u8)>,
    origins: Option<Vec<&'a str>>,
    loopback: bool,
    mcp: bool,
    body: Option<&'a [u8]>,
}

/// Header names the checks read, so the fuzzer need not guess them.
#[derive(Arbitrary, Debug)]
enum Name<'a> {
    Origin,
    ForwardedFor,
    SessionId,
    Authorization,
    Other(&'a [u8]),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ip {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl From<Ip> for IpAddr {
    fn from(ip: Ip) -> Self {
        match ip {
            Ip::V4(b) => Ipv4Addr::from(b).into(),
            Ip::V6(b) => Ipv6Addr::from(b).into(),
        }
    }
}

fuzz_target!(|input: Input<'_>| {
    let raw_check = check_path(input.target);
    if raw_check.is_ok() {
        assert_normal(input.target);
    }
    let Ok(uri) = Uri::try_from(input.target) else {
        return;
    };
    let path = uri.path();
    if check_path(path).is_err() {
        return;
    }
    assert_normal(path);

    let method = Method::from_bytes(input.method).unwrap_or(Method::POST);
    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        let name = match name {
            Name::Origin => http::header::ORIGIN,
            Name::ForwardedFor => HeaderName::from_static("x-forwarded-for"),
            Name::SessionId => HeaderName::from_static("mcp-session-id"),
            Name::Authorization => http::header::AUTHORIZATION,
            Name::Other(bytes) => match HeaderName::from_bytes(bytes) {
                Ok(name) => name,
                Err(_) => continue,
            },
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }

    let policy = match &input.origins {
        Some(list) => OriginPolicy::List(list.iter().map(|o| o.to_ascii_lowercase()).collect()),
        None => OriginPolicy::Default {
            loopback: input.loopback,
        },
    };
    if let Err(rejection) = check_origin(&headers, &policy, "https://mcp.example.com") {
        assert!(
            headers.contains_key(http::header::ORIGIN),
            "refused without an Origin"
        );
        assert!(matches!(rejection, Rejection::OriginNotAllowed { .. }));
    }

    let trusted: Vec<IpNet> = input
        .trusted
        .iter()
        .filter_map(|(ip, prefix)| IpNet::new(IpAddr::from(*ip), *prefix).ok())
        .collect();
    let peer = input
        .peer
        .map(|(ip, port)| SocketAddr::new(ip.into(), port));
    let client = match client_addr(peer, &headers, &trusted) {
        Ok(client) => client,
        Err(rejection) => {
            // Only an unreadable hop from a trusted proxy is refused, never an untrusted
            // peer's header.
            let peer = peer.expect("no peer, nothing to refuse");
            assert!(
                is_trusted(peer, &trusted),
                "an untrusted peer's header was read"
            );
            assert!(matches!(rejection, Rejection::InvalidRequest { .. }));
            return;
        }
    };
    check_client(peer, client, &headers, &trusted);

    let body = input.body.map(Bytes::copy_from_slice);
    let built = context(
        ContextParts {
            method: &method,
            path,
            query: uri.query(),
            headers: headers.clone(),
            peer: client,
            client_cert: None,
        },
        input.mcp,
        body.clone(),
    );
    // What the context should hold, from the request as given: the one session id (a
    // repeated or unreadable one is refused), the mirrored `Mcp-*` headers and the body.
    let session = match input.mcp {
        true => session_id(&headers).map(|s| s.map(str::to_owned)),
        false => Ok(None),
    };
    let expected = session.map_err(drop).and_then(|session| {
        let mcp = match (&body, input.mcp) {
            (_, false) => None,
            (None, true) => Some(Ok(None)),
            (Some(bytes), true) => Some(
                Mirrored::from_headers(&headers)
                    .and_then(|m| parse_body_mirrored(bytes, session.clone(), &m))
                    .map(Some)
                    .map_err(drop),
            ),
        };
        Ok((session, mcp))
    });
    match built {
        Ok(ctx) => {
            assert_eq!(ctx.method, method);
            assert_eq!(ctx.path, path);
            assert_eq!(ctx.query.as_deref(), uri.query());
            assert_eq!(ctx.headers, headers);
            assert_eq!(ctx.peer, client);
            assert_eq!(ctx.body, body);
            let (session, mcp) = expected.expect("a context was built from a refused request");
            match (&ctx.mcp, mcp) {
                (None, None) => {}
                (Some(m), Some(Ok(None))) => {
                    assert!(m.calls.is_empty());
                    assert_eq!(m.session_id, session);
                }
                (Some(m), Some(Ok(Some(parsed)))) => assert_eq!(m, &parsed),
                other => panic!("MCP content does not match the request: {other:?}"),
            }
            let rebuilt = match ctx.query.as_deref() {
                Some(q) => RequestContext::new(method.clone(), &format!("{path}?{q}")),
                None => RequestContext::new(method.clone(), path),
            };
            assert_eq!((rebuilt.path, rebuilt.query), (ctx.path, ctx.query));
        }
        Err(rejection) => {
            assert!(input.mcp, "a non-MCP request was refused");
            assert!(
                matches!(expected, Err(()) | Ok((_, Some(Err(()))))),
                "a well-formed MCP request was refused"
            );
            assert!(matches!(rejection, Rejection::InvalidRequest { .. }));
        }
    }
});

fn is_trusted(peer: SocketAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| {
        net.contains(&peer.ip())
            || match peer.ip() {
                IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| net.contains(&IpAddr::V4(v4))),
                IpAddr::V4(_) => false,
            }
    })
}

/// What `check_path` promises of a path it accepts, checked independently of its code.
fn assert_normal(path: &str) {
    assert!(path.starts_with('/'), "{path:?}: not absolute");
    assert!(!path.contains('\\'), "{path:?}: backslash");
    assert!(!path.contains("//"), "{path:?}: empty segment");
    for segment in path.split('/') {
        assert!(segment != "." && segment != "..", "{path:?}: dot segment");
    }
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let hex = |at: usize| bytes.get(at).and_then(|b| char::from(*b).to_digit(16));
        if let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) {
            let decoded = char::from((hi * 16 + lo) as u8);
            assert!(
                !(decoded.is_ascii_alphanumeric()
                    || matches!(decoded, '-' | '.' | '_' | '~' | '/' | '\\' | '\0')),
                "{path:?}: percent-encoded {decoded:?}"
            );
        }
    }
}

fn check_client(
    peer: Option<SocketAddr>,
    client: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &[IpNet],
) {
    let Some(peer) = peer else {
        assert_eq!(client, None);
        return;
    };
    let client = client.expect("a peer always yields a client");
    let peer_trusted = is_trusted(peer, trusted);
    if !peer_trusted || client == peer {
        assert_eq!(
            client, peer,
            "an untrusted peer's X-Forwarded-For was believed"
        );
        return;
    }
    let named = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| {
            let hop = hop.trim();
            hop.parse::<IpAddr>()
                .ok()
                .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
                .or_else(|| {
                    hop.strip_prefix('[')
                        .and_then(|h| h.strip_suffix(']'))
                        .and_then(|h| h.parse().ok())
                })
        })
        .any(|ip| ip == client.ip());
    assert!(named, "client {client} named by nobody");
}
