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
        Self::serve(respond, true).await
    }

    /// Like [`RecordingUpstream::answering`], but only counts requests, keeping none: for
    /// long runs that measure the process's memory.
    pub async fn counting<F, Fut>(respond: F) -> Self
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = http::Response<Body>> + Send + 'static,
    {
        Self::serve(respond, false).await
    }

    async fn serve<F, Fut>(respond: F, keep: bool) -> Self
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = http::Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (arrived, arrivals) = watch::channel(0);
        let shared = Arc::new((respond, Arc::clone(&seen), arrived));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move {
                            let (respond, log, arrived) = &*shared;
                            let seen = record(req).await;
                            if keep {
                                log.lock().expect("lock").push(seen.clone());
                            }
                            arrived.send_modify(|n| *n += 1);
                            Ok::<_, Infallible>(respond(seen).await)
                        }
                    });
                    // Errors are clients going away.
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url,
            seen,
            arrivals,
            task,
        }
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
    }
}
