//! [`FakeRequest`]: a request built in a test.

use crate::{ClientCert, McpMessage, Request};

/// A request for tests. Starts as `GET /` with no headers, peer, body or MCP content.
///
/// The builder methods share their names with the [`Request`] accessors they set, so read a
/// `FakeRequest` through `&dyn Request` (which is what provider code takes anyway).
///
/// ```
/// use portcullis_sdk::testing::FakeRequest;
/// use portcullis_sdk::{McpCall, McpMessage, Request};
///
/// let req = FakeRequest::post("/mcp")
///     .header("Authorization", "partner-token acme:s3cret")
///     .peer("10.1.2.3:55012")
///     .mcp(McpMessage::single(McpCall::tool("search")));
/// let req: &dyn Request = &req; // the builder methods shadow the accessors
/// assert_eq!(req.method(), "POST");
/// ```
#[derive(Debug, Clone)]
pub struct FakeRequest {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    peer_addr: Option<String>,
    client_cert: Option<ClientCert>,
    mcp: Option<McpMessage>,
    body: Option<Vec<u8>>,
}

impl Default for FakeRequest {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRequest {
    /// `GET /`.
    pub fn new() -> Self {
        Self {
            method: "GET".into(),
            path: "/".into(),
            query: None,
            headers: Vec::new(),
            peer_addr: None,
            client_cert: None,
            mcp: None,
            body: None,
        }
    }

    /// `GET path`.
    pub fn get(path: &str) -> Self {
        Self::new().path(path)
    }

    /// `POST path`.
    pub fn post(path: &str) -> Self {
        Self::new().method("POST").path(path)
    }

    /// Sets the method; it is upper-cased as the host does.
    #[must_use]
    pub fn method(mut self, method: &str) -> Self {
        self.method = method.to_ascii_uppercase();
        self
    }

    /// Sets the path. A `?query` suffix becomes the query, as the host would split it.
    #[must_use]
    pub fn path(mut self, path: &str) -> Self {
        match path.split_once('?') {
            Some((path, query)) => {
                self.path = path.into();
                self.query = Some(query.into());
            }
            None => self.path = path.into(),
        }
        self
    }

    /// Sets the raw query string (without `?`).
    #[must_use]
    pub fn query(mut self, query: &str) -> Self {
        self.query = Some(query.into());
        self
    }

    /// Adds a header value; call again for a repeated header.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Sets the peer address, `ip:port` (`[v6]:port` for IPv6).
    #[must_use]
    pub fn peer(mut self, addr: &str) -> Self {
        self.peer_addr = Some(addr.into());
        self
    }

    /// Sets the verified client certificate.
    #[must_use]
    pub fn client_cert(mut self, cert: ClientCert) -> Self {
        self.client_cert = Some(cert);
        self
    }

    /// Sets the MCP content.
    #[must_use]
    pub fn mcp(mut self, message: McpMessage) -> Self {
        self.mcp = Some(message);
        self
    }

    /// Sets the body, as if the operator granted `body = true`.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }
}

impl Request for FakeRequest {
    fn method(&self) -> String {
        self.method.clone()
    }

    fn path(&self) -> String {
        self.path.clone()
    }

    fn query(&self) -> Option<String> {
        self.query.clone()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    }

    fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
            .collect()
    }

    fn header_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (name, _) in &self.headers {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    fn peer_addr(&self) -> Option<String> {
        self.peer_addr.clone()
    }

    fn client_cert(&self) -> Option<ClientCert> {
        self.client_cert.clone()
    }

    fn mcp(&self) -> Option<McpMessage> {
        self.mcp.clone()
    }

    fn body(&self) -> Option<Vec<u8>> {
        self.body.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_case_insensitive_and_keep_order() {
        let req = FakeRequest::new()
            .header("Accept", "a")
            .header("X-Many", "1")
            .header("x-many", "2");
        let req: &dyn Request = &req;
        assert_eq!(req.header("ACCEPT").as_deref(), Some("a"));
        assert_eq!(req.header_all("X-MANY"), ["1", "2"]);
        assert_eq!(req.header_names(), ["accept", "x-many"]);
        assert_eq!(req.header("missing"), None);
    }

    #[test]
    fn path_with_query_is_split() {
        let req = FakeRequest::get("/a/b?x=1&y=2");
        assert_eq!(Request::path(&req), "/a/b");
        assert_eq!(Request::query(&req).as_deref(), Some("x=1&y=2"));
        assert_eq!(Request::query(&FakeRequest::get("/")), None);
    }

    #[test]
    fn method_is_upper_case() {
        let req = FakeRequest::new().method("patch");
        assert_eq!(Request::method(&req), "PATCH");
    }
}
