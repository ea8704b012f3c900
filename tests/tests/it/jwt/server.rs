//! A real JWKS / OIDC discovery server on 127.0.0.1:0 for the JWT tests: serves whatever
//! key set the test puts in it, counts requests, and can be taken down (HTTP 500, closed
//! connections, or a hang).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve the documents.
    Up,
    /// Answer every request with 500.
    Error,
    /// Drop connections without answering.
    Close,
    /// Never answer.
    Hang,
}

#[derive(Debug)]
struct State {
    base: String,
    jwks: Mutex<String>,
    cache_control: Mutex<Option<String>>,
    discovery_issuer: Mutex<Option<String>>,
    mode: Mutex<Mode>,
    jwks_hits: AtomicUsize,
    discovery_hits: AtomicUsize,
}

/// The running server; stops when dropped.
#[derive(Debug)]
pub struct JwksServer {
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Starts serving `jwks` at `/jwks`, and discovery at `/.well-known/openid-configuration`
    /// naming the server's own base URL as the issuer.
    pub async fn start(jwks: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr: SocketAddr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            base: format!("http://{addr}"),
            jwks: Mutex::new(jwks),
            cache_control: Mutex::new(None),
            discovery_issuer: Mutex::new(None),
            mode: Mutex::new(Mode::Up),
            jwks_hits: AtomicUsize::new(0),
            discovery_hits: AtomicUsize::new(0),
        });
        let serving = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&serving);
                connections.spawn(async move {
                    let service = service_fn(move |req| answer(Arc::clone(&state), req));
                    // Errors here are the `Close` mode and clients going away.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self { state, task }
    }

    /// `http://127.0.0.1:PORT`: also the issuer that discovery names.
    pub fn base(&self) -> &str {
        &self.state.base
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.state.base)
    }

    /// Replaces the served key set.
    pub fn set_jwks(&self, jwks: String) {
        *self.state.jwks.lock().expect("lock") = jwks;
    }

    /// Sends `Cache-Control: value` with the key set.
    pub fn set_cache_control(&self, value: &str) {
        *self.state.cache_control.lock().expect("lock") = Some(value.to_owned());
    }

    /// Makes discovery name another issuer.
    pub fn set_discovery_issuer(&self, issuer: &str) {
        *self.state.discovery_issuer.lock().expect("lock") = Some(issuer.to_owned());
    }

    /// Changes how the server answers.
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().expect("lock") = mode;
    }

    /// Requests for `/jwks` so far (in every mode).
    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    /// Requests for the discovery document so far.
    pub fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The service error that makes hyper drop the connection without an answer.
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed on purpose")
    }
}

impl std::error::Error for Closed {}

async fn answer(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Closed> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/jwks" => state.jwks_hits.fetch_add(1, Ordering::SeqCst),
        "/.well-known/openid-configuration" => state.discovery_hits.fetch_add(1, Ordering::SeqCst),
        _ => 0,
    };
    let mode = *state.mode.lock().expect("lock");
    match mode {
        Mode::Up => {}
        Mode::Error => {
            return Ok(reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "down".into(),
                None,
            ));
        }
        Mode::Close => return Err(Closed),
        Mode::Hang => std::future::pending::<()>().await,
    }
    Ok(match path.as_str() {
        "/jwks" => {
            let body = state.jwks.lock().expect("lock").clone();
            let cache = state.cache_control.lock().expect("lock").clone();
            reply(StatusCode::OK, body, cache)
        }
        "/.well-known/openid-configuration" => {
            let issuer = state
                .discovery_issuer
                .lock()
                .expect("lock")
                .clone()
                .unwrap_or_else(|| state.base.clone());
            let doc = serde_json::json!({
                "issuer": issuer,
                "jwks_uri": format!("{}/jwks", state.base),
                "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
            });
            reply(StatusCode::OK, doc.to_string(), None)
        }
        _ => reply(StatusCode::NOT_FOUND, "not found".into(), None),
    })
}

fn reply(status: StatusCode, body: String, cache_control: Option<String>) -> Response<Full<Bytes>> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(value) = cache_control {
        builder = builder.header("cache-control", value);
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}
