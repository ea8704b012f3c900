//! Shared set-up for the gateway tests: a real gateway on port 0, configured from TOML
//! through the same `config::load_str` → `assemble` path as `portcullis serve`, in front of
//! the embedded demo MCP server (rmcp, Streamable HTTP) or a [`RecordingUpstream`]; and a
//! small raw HTTP client. Configs come from `portcullis_tests::config` ([`standard`] and
//! [`TestConfig`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis::config;
use portcullis::gateway::{Gateway, Site, serve};
use portcullis::observability::Metrics;
use portcullis_cli::demo::upstream::{DemoUpstream, spawn_demo_upstream};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use portcullis_tests::config::{
    ADMIN_KEY, NOSCOPE_KEY, READER_KEY, TestConfig, fill, standard,
};
pub use portcullis_tests::upstream::RecordingUpstream;

/// A running gateway (and, usually, the demo upstream behind it).
pub struct Harness {
    /// Where the gateway listens.
    pub addr: SocketAddr,
    /// `http://<addr>`.
    pub base: String,
    /// The gateway, for swapping sites.
    pub gateway: Arc<Gateway>,
    /// The demo upstream, when started.
    pub upstream: Option<DemoUpstream>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Starts the demo upstream and a gateway configured by `template` in front of it.
pub async fn start(template: impl std::fmt::Display) -> Harness {
    let upstream = spawn_demo_upstream().await.expect("demo upstream starts");
    let url = upstream.url.clone();
    let mut harness = start_with_upstream(template, &url).await;
    harness.upstream = Some(upstream);
    harness
}

/// Starts a gateway configured by `template` in front of `upstream_url`.
pub async fn start_with_upstream(template: impl std::fmt::Display, upstream_url: &str) -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let text = fill(template, addr, upstream_url);
    let config = config::load_str(&text, "<test config>", std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("test config is valid: {e}\n{text}"));
    let runtime = config::needs_wasm(&config).then(portcullis_tests::runtime);
    let assembled = config::assemble(&config, runtime, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("test config assembles: {e}"));
    let gateway = Gateway::new(Site::new(&config, assembled), Arc::new(Metrics::new()));
    let tls = config.server.tls.as_ref().map(|t| {
        portcullis::gateway::tls::server_config(t, &gateway)
            .unwrap_or_else(|e| panic!("test TLS: {e}"))
    });
    let (tx, task) = spawn_serve(listener, gateway.clone(), tls);
    Harness {
        addr,
        base: format!("http://{addr}"),
        gateway,
        upstream: None,
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// Serves `gateway` on `listener` in a task until the returned sender is used (or
/// dropped), then drains for at most 5 s.
pub fn spawn_serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(serve(
        listener,
        gateway,
        tls,
        async {
            let _ = rx.await;
        },
        Duration::from_secs(5),
    ));
    (tx, task)
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body as text.
    pub body: String,
}

impl Reply {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON-RPC messages in the body: the body itself when JSON, or each SSE `data:`.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        if self.body.trim_start().starts_with(['{', '[']) {
            return serde_json::from_str(&self.body).into_iter().collect();
        }
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .collect()
    }
}

impl Harness {
    /// Sends one request and reads the whole reply (10 s deadline).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        send(&format!("{}{path}", self.base), method, headers, body).await
    }

    /// An MCP POST with the usual MCP headers.
    pub async fn mcp_post(&self, key: Option<&str>, session: Option<&str>, body: &str) -> Reply {
        let session: Vec<(&str, &str)> = session
            .map(|session| {
                vec![
                    ("mcp-session-id", session),
                    ("mcp-protocol-version", "2025-06-18"),
                ]
            })
            .unwrap_or_default();
        self.mcp_post_with(key, &session, body).await
    }

    /// A forward-auth check as nginx asks it (`X-Original-Method`/`-URI`, the client
    /// `203.0.113.9`), with `key` as a bearer token when given.
    pub async fn nginx_check(&self, key: Option<&str>, method: &str, uri: &str) -> Reply {
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![
            ("x-original-method", method),
            ("x-original-uri", uri),
            ("x-forwarded-for", "203.0.113.9"),
        ];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth));
        }
        self.request("GET", "/check", &headers, None).await
    }

    /// An MCP POST with the usual MCP headers and `extra` ones.
    pub async fn mcp_post_with(
        &self,
        key: Option<&str>,
        extra: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth));
        }
        headers.extend_from_slice(extra);
        self.request("POST", "/mcp", &headers, Some(body)).await
    }

    /// Initializes an MCP session with `key`; returns the session id.
    pub async fn mcp_session(&self, key: &str) -> String {
        let init = self
            .mcp_post(
                Some(key),
                None,
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw-test","version":"0"}}}"#,
            )
            .await;
        assert_eq!(init.status, 200, "initialize: {}", init.body);
        let session = init
            .header("mcp-session-id")
            .expect("the session id passes back through the gateway")
            .to_owned();
        let ack = self
            .mcp_post(
                Some(key),
                Some(&session),
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            )
            .await;
        assert_eq!(ack.status, 202, "initialized: {}", ack.body);
        session
    }

    /// Opens a raw SSE `GET /mcp` with the reader key and reads until the first event
    /// arrives (10 s deadline); returns the connection and what was read.
    pub async fn open_event_stream(&self) -> (tokio::net::TcpStream, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let request = format!(
            "GET /mcp HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n\
             authorization: Bearer {READER_KEY}\r\n\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut seen = String::new();
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !seen.contains("notifications/message") {
            let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
                .await
                .expect("the stream starts within 10 s")
                .expect("read");
            assert!(n > 0, "stream ended before its first event: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
        (stream, seen)
    }

    /// Stops the gateway gracefully and waits for it (5 s deadline).
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(8), task)
                .await
                .expect("the gateway stops within its grace period")
                .expect("the gateway task does not panic");
        }
    }
}

/// Sends one request to `url` and reads the whole reply (10 s deadline).
pub async fn send(url: &str, method: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    send_with(HttpConnector::new(), url, method, headers, body).await
}

/// A GET from `local` (bound as the source address) to `url` (10 s deadline): a client
/// other than 127.0.0.1, for what the gateway answers only to some networks.
pub async fn send_from(local: std::net::IpAddr, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(local));
    send_with(connector, url, "GET", headers, None).await
}

async fn send_with(
    connector: HttpConnector,
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .expect("valid request");
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("the gateway answers within 10 s")
        .expect("the request is sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the body ends within 10 s")
        .expect("the body is readable")
        .to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// The text of the first content block of a `tools/call` result in `reply`.
pub fn tool_text(reply: &Reply) -> String {
    reply
        .messages()
        .iter()
        .find_map(|m| {
            m["result"]["content"][0]["text"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no tool result in: {}", reply.body))
}

/// What came back for a request written byte for byte over TCP.
#[derive(Debug)]
pub enum RawReply {
    /// A response: its status and the whole text (head and body, lossily decoded).
    Answered {
        /// Status.
        status: u16,
        /// Everything read.
        text: String,
    },
    /// The connection closed or was reset before a status line arrived.
    Closed(String),
}

/// Writes `request` as is to `addr` (while reading, so an early answer to a large request is
/// not lost) and reads until the gateway closes the connection (10 s deadline). Send
/// `Connection: close` in `request`.
pub async fn raw_request(addr: SocketAddr, request: Vec<u8>) -> RawReply {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        // The gateway may refuse before reading everything; a broken pipe is expected then.
        let _ = writer.write_all(&request).await;
        let _ = writer.flush().await;
        writer
    });
    let mut text = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut text))
        .await
        .expect("the gateway answers or closes within 10 s");
    drop(writing.await);
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    match (status, read) {
        (Some(status), _) => RawReply::Answered { status, text },
        (None, Err(error)) => RawReply::Closed(error.to_string()),
        (None, Ok(_)) => RawReply::Closed(format!("closed after {text:?}")),
    }
}

/// A gateway serving a config file with hot reload on (as `portcullis serve --config FILE`
/// does), on port 0.
pub struct Watched {
    /// `http://<addr>`.
    pub base: String,
    _reloading: portcullis::reload::Reloading,
    _shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Loads `config` (and `providers`, when given) the way `serve` does and serves it with the
/// config file and the providers directory watched.
pub async fn serve_watched(
    config: std::path::PathBuf,
    providers: Option<std::path::PathBuf>,
) -> Watched {
    use portcullis::load::{self, Source};
    use portcullis::reload::{DEBOUNCE, Reloader, Reloading};
    let source = Source {
        config,
        providers,
        listen: None,
    };
    let runtime = portcullis_tests::runtime().clone();
    let loaded = load::from_source(&source, Some(runtime))
        .await
        .unwrap_or_else(|e| panic!("the first config loads: {e}"));
    let reuse = loaded.reuse();
    let gateway = Gateway::new(loaded.site, Arc::new(Metrics::new()));
    let reloader = Reloader::new(gateway.clone(), source, reuse);
    let reloading = Reloading::watch(reloader, DEBOUNCE).expect("the watcher starts");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, task) = spawn_serve(listener, gateway, None);
    Watched {
        base: format!("http://{addr}"),
        _reloading: reloading,
        _shutdown: tx,
        task,
    }
}
