//! The request context: everything the engine and its providers may know about one request.
//!
//! Front ends (the gateway, forward-auth, `eval`, the tower layer) build a [`RequestContext`]
//! once per request; providers read it through borrowed accessors, so nothing is copied per
//! provider.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::mcp::McpMessage;

/// One incoming request, as seen by the auth engine.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// HTTP method.
    pub method: Method,
    /// Path without the query, exactly as received.
    pub path: String,
    /// Raw query string without the `?`.
    pub query: Option<String>,
    /// Request headers, in received order for repeated names.
    pub headers: HeaderMap,
    /// The TCP peer (or the forwarded client when the peer is a trusted proxy).
    pub peer: Option<SocketAddr>,
    /// The client certificate the listener verified, if any.
    pub client_cert: Option<ClientCert>,
    /// The parsed MCP JSON-RPC content, when this is an MCP request.
    pub mcp: Option<McpMessage>,
    /// The body, when some provider needs it (capped by the front end).
    pub body: Option<Bytes>,
}

impl RequestContext {
    /// A context for `method path` with no headers, peer, certificate or body.
    pub fn new(method: Method, path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (path_and_query.to_owned(), None),
        };
        Self {
            method,
            path,
            query,
            headers: HeaderMap::new(),
            peer: None,
            client_cert: None,
            mcp: None,
            body: None,
        }
    }

    /// The first value of header `name` if it is present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every UTF-8 value of header `name`, in received order.
    pub fn header_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .get_all(name)
            .into_iter()
            .filter_map(|v| v.to_str().ok())
    }
}

/// A client certificate verified by the TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// Subject distinguished name, RFC 4514 form.
    pub subject: String,
    /// The certificate's common name, when it has one.
    pub common_name: Option<String>,
    /// Subject alternative names (DNS, URI, e-mail, IP) as strings.
    pub sans: Vec<String>,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub sha256_fingerprint: String,
    /// Issuer distinguished name, RFC 4514 form.
    pub issuer: String,
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
    /// The identity, when this gateway's identity CA issued the certificate and vouches for
    /// it now (filled in by admission, [`crate::identity::vouch`]).
    pub issued: Option<IssuedIdentity>,
}

/// An identity this gateway's CA issued, in good standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedIdentity {
    /// Its id (`idn_…`).
    pub id: String,
    /// Its label.
    pub name: String,
    /// The subject of the caller that registered it.
    pub owner: String,
    /// Its URI SAN, the subject it authenticates as.
    pub subject: String,
    /// Its scopes now: those recorded at registration that `[identity] scopes` still has.
    pub scopes: Vec<String>,
    /// Whether this is its current certificate (not one a rotation replaced).
    pub current: bool,
}
