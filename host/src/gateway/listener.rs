//! The accept loop: plain TCP or TLS, HTTP/1.1 and HTTP/2 on the same port (ALPN, or the
//! h2 preface on cleartext), and graceful shutdown that stops accepting, lets in-flight
//! requests finish for up to the grace period, then returns.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::tls::peer_certificate;
use super::{ConnInfo, Gateway};

/// How long a client has to finish the TLS handshake or send its request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head (request line and headers) accepted; larger ones get 431. It
/// fits the largest token the JWT validator reads (16 KiB) with room for the rest, like
/// nginx's default 4 × 8 KiB, where hyper's own default (~400 KiB) would let a client make
/// the gateway buffer, parse and forward headers no upstream expects.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Serves `listener` until `shutdown` resolves, then drains for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
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
                let gateway = gateway.clone();
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let conn = ConnInfo::new(Some(peer), None, acceptor.is_some());
                    match acceptor {
                        None => serve_connection(stream, conn, gateway, watcher).await,
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
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
                            serve_connection(tls_stream, conn, gateway, watcher).await;
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

async fn serve_connection<S>(
    stream: S,
    conn: ConnInfo,
    gateway: Arc<Gateway>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let gateway = gateway.clone();
        let conn = conn.clone();
        async move {
            let request = request.map(super::body::boxed);
            Ok::<_, Infallible>(gateway.handle(request, &conn).await)
        }
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        // hyper-util's builder has no `max_header_size`; the read buffer bounds the head the
        // same way (a head that does not fit is a 431), and bodies stream through it anyway.
        .max_buf_size(MAX_HEADER_BYTES);
    // HTTP/2 counts the decoded list (each name and value plus 32 bytes): the same budget.
    builder
        .http2()
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(error) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%error, "connection ended with an error");
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
