//! The [`Request`] trait: what a provider may read of the incoming request.

use crate::{ClientCert, McpMessage};

/// The incoming HTTP request (WIT resource `request`).
///
/// Each method is one call into the host, which copies only what was asked for: read what
/// the decision needs, once. In a component this wraps the host's resource; in tests it is a
/// [`FakeRequest`](crate::testing::FakeRequest).
pub trait Request {
    /// The HTTP method in upper case, e.g. `POST`.
    fn method(&self) -> String;
    /// The path, without the query string, exactly as received (not decoded).
    fn path(&self) -> String;
    /// The raw query string without the leading `?`, if there was one.
    fn query(&self) -> Option<String>;
    /// The first value of the header `name` (case-insensitive), if present and valid UTF-8.
    fn header(&self, name: &str) -> Option<String>;
    /// Every value of the header `name` (case-insensitive), in the order received.
    fn header_all(&self, name: &str) -> Vec<String>;
    /// The names of all headers present, lower case, each once.
    fn header_names(&self) -> Vec<String>;
    /// The address of the TCP peer (or trusted forwarded client), `ip:port`.
    fn peer_addr(&self) -> Option<String>;
    /// The client certificate, when the listener verified one (mTLS).
    fn client_cert(&self) -> Option<ClientCert>;
    /// The MCP call carried in the body, when this is an MCP JSON-RPC request.
    fn mcp(&self) -> Option<McpMessage>;
    /// The raw body, only when the operator set `body = true` for this provider.
    fn body(&self) -> Option<Vec<u8>>;
}
