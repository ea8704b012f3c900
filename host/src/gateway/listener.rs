//! The accept loop: plain TCP or TLS, HTTP/1.1 and HTTP/2 on the same port (ALPN, or the
//! h2 preface on cleartext), the limits on slow and many clients, and graceful shutdown
//! that stops accepting, lets in-flight requests finish for up to the grace period, then
//! returns.
//!
//! What one client can hold, and for how long (`[server]` keys, [`ServerLimits`]):
//! - **A connection slot.** At most `max_connections` connections are served at once. At
//!   the cap the loop stops accepting until one closes, rather than accepting and closing:
//!   a legitimate client then waits in the kernel's backlog and is served as soon as a slot
//!   frees (every abusive holder is cut off by a timeout below), where accept-and-close
//!   would fail it outright and make the gateway spend a descriptor and a syscall per
//!   refusal. nginx does the same when `worker_connections` are used up. When the backlog
//!   overflows too, the kernel drops SYNs and clients retry.
//! - **The head.** `header_timeout` to finish the TLS handshake and to send a request head
//!   (hyper's HTTP/1 `header_read_timeout`); a slowloris client is disconnected. hyper
//!   starts that clock as soon as an HTTP/1 connection is ready for its next request, so it
//!   is also the keep-alive limit of an idle HTTP/1 connection when shorter than
//!   `idle_timeout`. The head may take `max_header_bytes` (431 beyond; HTTP/2 counts the
//!   decoded header list, each name and value plus 32 bytes).
//! - **Idleness.** A connection with no request in flight is closed after `idle_timeout`,
//!   and one that has not started a request within `header_timeout` of being accepted is
//!   closed then: hyper has no such clock for HTTP/2, nor for a connection that sends
//!   nothing at all (no HTTP/1 head, no h2 preface). A request is in flight from its head
//!   to the end of its response, so a long SSE stream is never idle.
//! - **HTTP/2.** `http2_max_concurrent_streams` streams at once (a client opening more gets
//!   `REFUSED_STREAM`), keep-alive pings every `http2_keepalive` with 20 s for the answer
//!   (a dead peer is dropped), hyper's defaults against rapid reset.
//! - **A buffered body.** `body_timeout`, applied where the body is read
//!   ([`super::body::collect_limited_within`]); a body streamed to the upstream is bounded
//!   by the route's `response_timeout_ms` instead, for as long as the upstream waits for it
//!   before answering.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::body::{Body, BoxError};
use super::tls::peer_certificate;
use super::{ConnInfo, Gateway};
use crate::config::model::ServerLimits;

/// How long an HTTP/2 keep-alive ping may go unanswered before the connection is dropped.
const KEEPALIVE_ACK_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `listener` until `shutdown` resolves, then drains for at most `grace`.
///
/// The limits are the site's when the loop starts: like `listen` and `tls`, they change
/// on restart, not on reload (the body deadline, read per request, changes on reload).
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let limits = Arc::new(gateway.site().limits.clone());
    let builder = Arc::new(http_builder(&limits));
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut last_warned: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // Under a flood the cap is reached again at every freed slot: say it once
                // a minute.
                if last_warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    last_warned = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached: not accepting until a connection closes"
                    );
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        // The semaphore is never closed; should it be, stop serving.
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let served = Served {
                    gateway: gateway.clone(),
                    builder: Arc::clone(&builder),
                    limits: Arc::clone(&limits),
                    watcher: graceful.watcher(),
                    _slot: slot,
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let conn = ConnInfo::new(Some(peer), None, acceptor.is_some());
                    match acceptor {
                        None => served.run(stream, conn).await,
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(
                                served.limits.header_timeout,
                                acceptor.accept(stream),
                            )
                            .await;
                            let tls_stream = match handshake {
                                Ok(Ok(s)) => s,
                                Ok(Err(error)) => {
                                    tracing::debug!(%peer, %error, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                            let client_cert = peer_certificate(tls_stream.get_ref().1);
                            let conn = ConnInfo { client_cert, ..conn };
                            served.run(tls_stream, conn).await;
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: draining in-flight requests"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?grace, "grace period over; closing remaining connections");
    }
}

/// The HTTP/1 and HTTP/2 settings every connection is served with.
fn http_builder(limits: &ServerLimits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper-util's builder has no `max_header_size`; the read buffer bounds the head the
        // same way (a head that does not fit is a 431), and bodies stream through it anyway.
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .keep_alive_interval(limits.http2_keepalive)
        .keep_alive_timeout(KEEPALIVE_ACK_TIMEOUT);
    builder
}

/// One accepted connection and what serving it needs; dropping it frees its slot.
struct Served {
    gateway: Arc<Gateway>,
    builder: Arc<Builder<TokioExecutor>>,
    limits: Arc<ServerLimits>,
    watcher: Watcher,
    _slot: OwnedSemaphorePermit,
}

impl Served {
    async fn run<S>(self, stream: S, conn: ConnInfo)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let conn = Arc::new(conn);
        let activity = Arc::new(Activity::default());
        let gateway = self.gateway;
        let in_service = Arc::clone(&activity);
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            let gateway = gateway.clone();
            let conn = conn.clone();
            let busy = Busy::begin(&in_service);
            async move {
                let request = request.map(super::body::boxed);
                let response = gateway.handle(request, &conn).await;
                Ok::<_, Infallible>(response.map(|body| Held { body, _busy: busy }))
            }
        });
        let connection = self.builder.serve_connection(TokioIo::new(stream), service);
        let served = self.watcher.watch(connection.into_owned());
        tokio::select! {
            result = served => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
            }
            // Dropping the connection closes it: nothing is in flight to lose.
            () = activity.idle(self.limits.header_timeout, self.limits.idle_timeout) => {
                tracing::debug!("closing an idle connection");
            }
        }
    }
}

/// Whether a connection has requests in flight, and since when it has had none.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    started: AtomicBool,
    idle_since: Mutex<Instant>,
    changed: Notify,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
            changed: Notify::new(),
        }
    }
}

impl Activity {
    /// Resolves when the connection should be closed for idleness: no request started
    /// within `first` of the connection, or none in flight for `idle`.
    async fn idle(&self, first: Duration, idle: Duration) {
        loop {
            let deadline = if self.in_flight.load(Ordering::Acquire) > 0 {
                None
            } else {
                let since = *self
                    .idle_since
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let wait = if self.started.load(Ordering::Acquire) {
                    idle
                } else {
                    first
                };
                Some(since + wait)
            };
            match deadline {
                Some(deadline) if Instant::now() >= deadline => return,
                Some(deadline) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = self.changed.notified() => {}
                    }
                }
                // `notify_one` keeps a permit when nobody waits, so a change between the
                // check above and this wait is not missed.
                None => self.changed.notified().await,
            }
        }
    }
}

/// One request in flight on a connection, from its head to the end of its response.
#[derive(Debug)]
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.started.store(true, Ordering::Release);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.changed.notify_one();
        Self(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self
                .0
                .idle_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        }
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request counted as in flight until it ends or is
/// dropped (an SSE stream can last for hours).
#[derive(Debug)]
struct Held {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Binds `addr` (helper for the CLI; tests bind port 0 themselves).
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
