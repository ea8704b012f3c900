//! The load harness's floor: a reverse proxy with nothing but the HTTP stack Portcullis is
//! built on (hyper-util's auto server and legacy pooled client on a multi-thread tokio
//! runtime). The distance between this and nginx is the stack's; the distance between the
//! gateway with auth off and this is Portcullis's own per-request work.
//!
//! `bare_proxy <listen> <upstream base URL>`, e.g. `bare_proxy 127.0.0.1:18189 http://127.0.0.1:18181`.

use std::time::Duration;

use http::Request;
use http::uri::{PathAndQuery, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:18189".into());
    let upstream: Uri = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:18181".into())
        .parse()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector);
    // Experiment switch: the gateway's per-request timers (header read timeout, response
    // timeout).
    let timers = std::env::var_os("BARE_TIMERS").is_some();
    let listener = TcpListener::bind(&listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut request: Request<Incoming>| {
                let client = client.clone();
                let mut parts = upstream.clone().into_parts();
                parts.path_and_query = request
                    .uri()
                    .path_and_query()
                    .cloned()
                    .or_else(|| Some(PathAndQuery::from_static("/")));
                async move {
                    *request.uri_mut() = Uri::from_parts(parts)?;
                    request.headers_mut().remove(http::header::HOST);
                    let response = if timers {
                        tokio::time::timeout(Duration::from_secs(30), client.request(request))
                            .await??
                    } else {
                        client.request(request).await?
                    };
                    Ok::<_, anyhow::Error>(response)
                }
            });
            let mut builder = Builder::new(TokioExecutor::new());
            if timers {
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10));
            }
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
