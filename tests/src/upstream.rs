//! The one fake upstream of the test suites: a real hyper server on 127.0.0.1:0 that records
//! every request it receives (method, target, headers, body), answers as the test says, and
//! lets a test wait for a request to arrive instead of sleeping. Upstreams that misbehave
//! below HTTP (resets, hang-ups) are raw sockets in their own tests; real MCP servers are
//! `portcullis::demo::upstream` and the differential suite's SDK servers.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The error type of a streamed answer's body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// An answer's body: whole or streamed.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Headers.
    pub headers: http::HeaderMap,
    /// The whole body (empty when the sender went away before it ended).
    pub body: Bytes,
    /// The HTTP version it came in.
    pub version: http::Version,
    /// The client certificate presented over TLS (DER), if any.
    pub client_cert: Option<Vec<u8>>,
}

impl Seen {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `status` with `body` as its whole body.
pub fn answer(status: u16, body: impl Into<Bytes>) -> http::Response<Body> {
    let mut response = http::Response::new(
        Full::new(body.into())
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = http::StatusCode::from_u16(status).expect("a valid status");
    response
}

/// `200` with `body` as JSON.
pub fn json(body: impl Into<Bytes>) -> http::Response<Body> {
    let mut response = answer(200, body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// The answer to `initialize` from an MCP server that opens the session
/// `session-of-<subject>` (a server that tells callers apart, for session tests).
pub fn session_opened(subject: &str) -> http::Response<Body> {
    let mut response =
        json(r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18"}}"#);
    response.headers_mut().insert(
        "mcp-session-id",
        http::HeaderValue::from_str(&format!("session-of-{subject}")).expect("a header value"),
    );
    response
}

/// A recording upstream; stops accepting when dropped.
#[derive(Debug)]
pub struct RecordingUpstream {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    arrivals: watch::Receiver<usize>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingUpstream {
    /// An upstream that answers every request `200 upstream`.
    pub async fn start() -> Self {
        Self::answering(|_| async { answer(200, "upstream") }).await
    }

    /// An upstream that answers each request with what `respond` makes of it (after the
    /// request, body included, is recorded).
    pub async fn answering<F, Fut>(respond: F) -> Self
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = http::Response<Body>> + Send + 'static,
    {
        Self::serve(respond, true, None).await
    }

    /// Like [`RecordingUpstream::answering`], over TLS with `tls` (HTTP/1.1 or HTTP/2, as
    /// its ALPN list allows); the URL is `https://127.0.0.1:PORT`.
    pub async fn answering_tls<F, Fut>(tls: Arc<rustls::ServerConfig>, respond: F) -> Self
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = http::Response<Body>> + Send + 'static,
    {
        Self::serve(respond, true, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    /// Like [`RecordingUpstream::answering`], but only counts requests, keeping none: for
    /// long runs that measure the process's memory.
    pub async fn counting<F, Fut>(respond: F) -> Self
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = http::Response<Body>> + Send + 'static,
    {
        Self::serve(respond, false, None).await
    }

    async fn serve<F, Fut>(respond: F, keep: bool, tls: Option<tokio_rustls::TlsAcceptor>) -> Self
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = http::Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().expect("addr"));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (arrived, arrivals) = watch::channel(0);
        let shared = Arc::new((respond, Arc::clone(&seen), arrived));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let shared = Arc::clone(&shared);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let serve = |client_cert: Option<Vec<u8>>| {
                        hyper::service::service_fn(move |req| {
                            let shared = Arc::clone(&shared);
                            let client_cert = client_cert.clone();
                            async move {
                                let (respond, log, arrived) = &*shared;
                                let mut seen = record(req).await;
                                seen.client_cert = client_cert;
                                if keep {
                                    log.lock().expect("lock").push(seen.clone());
                                }
                                arrived.send_modify(|n| *n += 1);
                                Ok::<_, Infallible>(respond(seen).await)
                            }
                        })
                    };
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    // Errors are clients going away (or failing the handshake).
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), serve(None))
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| c.to_vec());
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), serve(cert))
                                .await;
                        }
                    }
                });
            }
        });
        Self {
            url,
            seen,
            arrivals,
            connections,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        *self.arrivals.borrow()
    }

    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Waits until `n` requests in all have arrived (30 s deadline).
    pub async fn arrived(&self, n: usize) {
        let mut arrivals = self.arrivals.clone();
        tokio::time::timeout(Duration::from_secs(30), arrivals.wait_for(|got| *got >= n))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "expected: {n} requests at the upstream within 30 s\ngot: {}",
                    self.hits()
                )
            })
            .expect("the upstream is running");
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads `req` whole into a [`Seen`].
async fn record(req: http::Request<hyper::body::Incoming>) -> Seen {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    Seen {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map_or_else(String::new, ToString::to_string),
        headers: parts.headers,
        body,
        version: parts.version,
        client_cert: None,
    }
}
