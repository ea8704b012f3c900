//! The upstream side's costs (issue 16), each case beside the plain upstream in the same run:
//!
//! - a real gateway (`config::load_str` → `assemble` → `Gateway::new`, served on
//!   127.0.0.1:0 exactly as `portcullis serve` does) with one route, an `anonymous` chain and
//!   `mcp = false`, in front of a small hyper upstream answering a 36-byte JSON body;
//! - the same upstream behind tokio-rustls with a test CA (`identity::ca::generate`, a P-256
//!   server certificate for 127.0.0.1), offering `h2` and `http/1.1` by ALPN (the gateway
//!   then speaks HTTP/2 to it) or `http/1.1` only (TLS alone, the same HTTP as plain);
//! - the plain upstream with `upstream_auth = { type = "client_credentials" }` against a
//!   local token endpoint issuing one day-long token (so every measured request takes the
//!   cached token), and with a static `header` credential (the same injection path without
//!   the token cache);
//! - the client talking to the plain and TLS upstreams directly (no gateway), for scale.
//!
//! Criterion groups: `parts` (the copy of the request head kept for a retry after a 401),
//! `latency` (one request at a time over one keep-alive HTTP/1.1 connection to the gateway:
//! time per request) and `throughput` (32 keep-alive connections with one request in flight
//! each, as `wrk -c32` does: time per request, printed also as requests/s). Then the same
//! measurements interleaved (see [`interleaved`]): the table BENCHMARKS.md gives. Client,
//! gateway and upstream share one 2-worker tokio runtime and the machine's two cores.
//!
//! Run: `cargo bench --workspace --bench upstream`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::gateway::{Gateway, Site, serve};
use portcullis::observability::Metrics;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
const TOKEN: &str = "bench-upstream-token-0123456789abcdef";
const BEARER: &str = "Bearer bench-upstream-token-0123456789abcdef";
const CONNECTIONS: usize = 32;

/// What the upstreams and the token endpoint saw.
#[derive(Default)]
struct Counts {
    requests: AtomicUsize,
    with_token: AtomicUsize,
    with_header: AtomicUsize,
    over_http2: AtomicUsize,
    token_fetches: AtomicUsize,
    /// The first request that arrived with the injected token, as the upstream saw it.
    sent_with_token: std::sync::OnceLock<http::request::Parts>,
}

/// A hyper server on 127.0.0.1:0 (over TLS with `tls`), answering as `token_endpoint`
/// says: the token endpoint's JSON, or the upstream's `BODY`.
async fn server(
    tls: Option<Arc<rustls::ServerConfig>>,
    counts: Arc<Counts>,
    token_endpoint: bool,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr().expect("addr"));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).expect("nodelay");
            let counts = Arc::clone(&counts);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let counts = Arc::clone(&counts);
                        async move {
                            let auth = req.headers().get("authorization").cloned();
                            if auth.is_some() && counts.sent_with_token.get().is_none() {
                                let mut parts = http::Request::new(()).into_parts().0;
                                parts.method = req.method().clone();
                                parts.uri = req.uri().clone();
                                parts.headers = req.headers().clone();
                                let _ = counts.sent_with_token.set(parts);
                            }
                            let injected = req.headers().contains_key("x-upstream-key");
                            if req.version() == http::Version::HTTP_2 {
                                counts.over_http2.fetch_add(1, Ordering::Relaxed);
                            }
                            let _ = req.into_body().collect().await;
                            let body = if token_endpoint {
                                counts.token_fetches.fetch_add(1, Ordering::Relaxed);
                                format!(
                                    r#"{{"access_token":"{TOKEN}","token_type":"Bearer","expires_in":86400}}"#
                                )
                            } else {
                                counts.requests.fetch_add(1, Ordering::Relaxed);
                                if auth.as_ref().is_some_and(|a| a == BEARER) {
                                    counts.with_token.fetch_add(1, Ordering::Relaxed);
                                }
                                if injected {
                                    counts.with_header.fetch_add(1, Ordering::Relaxed);
                                }
                                BODY.to_owned()
                            };
                            let mut response = http::Response::new(Full::new(Bytes::from(body)));
                            response.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, Infallible>(response)
                        }
                    },
                );
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    url
}

/// The upstream's TLS server configuration with `alpn`.
fn server_tls(
    generated: &portcullis::identity::ca::Generated,
    alpn: &[&[u8]],
) -> Arc<rustls::ServerConfig> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(generated.server_cert.as_bytes())
            .collect::<Result<_, _>>()
            .expect("server cert");
    let key = PrivateKeyDer::from_pem_slice(generated.server_key.as_bytes()).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A gateway serving one route `/api` to `upstream`, with `extra` route lines; its URL.
async fn gateway(upstream: &str, extra: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let text = format!(
        r#"
[server]
listen = "{addr}"
public_url = "http://{addr}"

[[routes]]
path = "/api"
upstream = "{upstream}"
mcp = false
chain = ["p"]
{extra}

[providers.p]
type = "anonymous"
scopes = ["api"]
"#
    );
    let config = portcullis::config::load_str(&text, "<bench>", std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("the config loads: {e}\n{text}"));
    let assembled = portcullis::config::assemble(&config, None, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("the config assembles: {e}"));
    let gateway = Gateway::new(Site::new(&config, assembled), Arc::new(Metrics::new()));
    tokio::spawn(serve(
        listener,
        gateway,
        None,
        std::future::pending::<()>(),
        Duration::from_secs(1),
    ));
    format!("http://{addr}")
}

/// A client connection: HTTP/1.1, or HTTP/2 when TLS's ALPN picked it.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Self::H1(s) => s.is_closed(),
            Self::H2(s) => s.is_closed(),
        }
    }
}

/// One keep-alive connection to `base` (plain or, with `tls`, over TLS; HTTP/2 when the
/// server picks it by ALPN).
async fn connect(base: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Sender {
    let authority = base.split_once("://").expect("scheme").1.to_owned();
    let stream = TcpStream::connect(&authority).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let Some(tls) = tls else {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        return Sender::H1(sender);
    };
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
        .connect(name, stream)
        .await
        .expect("TLS");
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        return Sender::H2(sender);
    }
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    Sender::H1(sender)
}

/// One GET of `/api/x` on `sender`, read whole; the status.
async fn get(sender: &mut Sender, authority: &str) -> u16 {
    let response = match sender {
        Sender::H1(sender) => {
            sender.ready().await.expect("ready");
            let request = http::Request::get("/api/x")
                .header(http::header::HOST, authority)
                .body(Empty::new())
                .expect("request");
            sender.send_request(request).await.expect("response")
        }
        Sender::H2(sender) => {
            sender.ready().await.expect("ready");
            let request = http::Request::get(format!("https://{authority}/api/x"))
                .body(Empty::new())
                .expect("request");
            sender.send_request(request).await.expect("response")
        }
    };
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body.len(), BODY.len());
    status
}

/// A case: where the client connects, and how.
struct Case {
    name: &'static str,
    base: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let counts = Arc::new(Counts::default());

    let generated =
        portcullis::identity::ca::generate("bench-upstream-ca", &["127.0.0.1".to_owned()])
            .expect("CA");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &generated.ca_cert).expect("write CA");
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "bench-client-secret").expect("write");
    let key = dir.path().join("upstream-key");
    std::fs::write(&key, "bench-upstream-key").expect("write");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(generated.ca_cert.as_bytes()) {
        roots.add(cert.expect("CA")).expect("add");
    }
    let client_tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );

    let mut client_tls_h2 = Arc::unwrap_or_clone(Arc::clone(&client_tls));
    client_tls_h2.alpn_protocols = vec![b"h2".to_vec()];
    let client_tls_h2 = Arc::new(client_tls_h2);

    let cases = rt.block_on(async {
        let plain = server(None, Arc::clone(&counts), false).await;
        let tls_h2 = server(
            Some(server_tls(&generated, &[b"h2", b"http/1.1"])),
            Arc::clone(&counts),
            false,
        )
        .await;
        let tls_h1 = server(
            Some(server_tls(&generated, &[b"http/1.1"])),
            Arc::clone(&counts),
            false,
        )
        .await;
        let tokens = server(None, Arc::clone(&counts), true).await;
        let upstream_tls = format!(
            "upstream_tls = {{ ca_bundle = {:?}, system_roots = false }}",
            ca_file.display().to_string()
        );
        let client_credentials = format!(
            "upstream_auth = {{ type = \"client_credentials\", token_url = \"{tokens}/token\", \
             client_id = \"bench\", client_secret = \"file://{}\", scope = \"mcp:tools\" }}",
            secret.display()
        );
        let header = format!(
            "upstream_auth = {{ type = \"header\", header = \"x-upstream-key\", value = \
             \"Key {{secret}}\", secret = \"file://{}\" }}",
            key.display()
        );
        vec![
            Case {
                name: "direct to the plain upstream (no gateway)",
                base: plain.clone(),
                tls: None,
            },
            Case {
                name: "direct to the TLS upstream, HTTP/1.1 (no gateway)",
                base: tls_h1.clone(),
                tls: Some(Arc::clone(&client_tls)),
            },
            Case {
                name: "direct to the TLS upstream, HTTP/2 (no gateway)",
                base: tls_h2.clone(),
                tls: Some(Arc::clone(&client_tls_h2)),
            },
            Case {
                name: "gateway, plain upstream (baseline)",
                base: gateway(&plain, "").await,
                tls: None,
            },
            Case {
                name: "gateway, https upstream, h2 by ALPN",
                base: gateway(&tls_h2, &upstream_tls).await,
                tls: None,
            },
            Case {
                name: "gateway, https upstream, http/1.1 only",
                base: gateway(&tls_h1, &upstream_tls).await,
                tls: None,
            },
            Case {
                name: "gateway, plain upstream, client_credentials",
                base: gateway(&plain, &client_credentials).await,
                tls: None,
            },
            Case {
                name: "gateway, plain upstream, header credential",
                base: gateway(&plain, &header).await,
                tls: None,
            },
        ]
    });

    // Every case answers 200; the credentials arrive (and HTTP/2 where ALPN offers it);
    // one token fetch in all.
    rt.block_on(async {
        for case in &cases {
            let authority = case.base.split_once("://").expect("scheme").1;
            let mut sender = connect(&case.base, case.tls.as_ref()).await;
            let before = (
                counts.with_token.load(Ordering::Relaxed),
                counts.with_header.load(Ordering::Relaxed),
                counts.over_http2.load(Ordering::Relaxed),
            );
            for _ in 0..3 {
                assert_eq!(get(&mut sender, authority).await, 200, "{}", case.name);
            }
            let after = (
                counts.with_token.load(Ordering::Relaxed),
                counts.with_header.load(Ordering::Relaxed),
                counts.over_http2.load(Ordering::Relaxed),
            );
            let expected = match case.name {
                n if n.contains("client_credentials") => (before.0 + 3, before.1, before.2),
                n if n.contains("header credential") => (before.0, before.1 + 3, before.2),
                n if n.contains("h2 by ALPN") || n.contains("HTTP/2") => {
                    (before.0, before.1, before.2 + 3)
                }
                _ => before,
            };
            assert_eq!(after, expected, "{}", case.name);
        }
    });

    // Per case: one connection for the latency group, 32 for the throughput group.
    let mut conns: Vec<Conns> = rt.block_on(async {
        let mut all = Vec::new();
        for case in &cases {
            let mut pool = Vec::new();
            for _ in 0..CONNECTIONS {
                pool.push(Some(connect(&case.base, case.tls.as_ref()).await));
            }
            all.push(Conns {
                base: case.base.clone(),
                tls: case.tls.clone(),
                authority: case.base.split_once("://").expect("scheme").1.into(),
                one: connect(&case.base, case.tls.as_ref()).await,
                pool,
            });
        }
        all
    });

    // What a request with `upstream_auth` costs beyond a header insert: `Upstream::send`
    // copies the request's method, URI and headers before sending, to send again after a
    // 401 (kept for a token, never used for a static header).
    let sent = counts
        .sent_with_token
        .get()
        .expect("a request arrived with the token");
    let mut group = c.benchmark_group("parts");
    group.bench_function(
        format!(
            "copy of the upstream request's head ({} headers), as for a retry",
            sent.headers.len()
        ),
        |b| {
            b.iter(|| {
                let mut copy = http::Request::new(Bytes::new());
                *copy.method_mut() = sent.method.clone();
                *copy.uri_mut() = sent.uri.clone();
                *copy.headers_mut() = sent.headers.clone();
                copy
            })
        },
    );
    group.finish();

    let mut group = c.benchmark_group("latency");
    group.measurement_time(Duration::from_secs(6));
    for (case, conns) in cases.iter().zip(&mut conns) {
        group.bench_function(case.name, |b| {
            b.iter_custom(|iters| rt.block_on(sequential(conns, iters)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("throughput");
    group.measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Elements(1));
    for (case, conns) in cases.iter().zip(&mut conns) {
        group.bench_function(case.name, |b| {
            b.iter_custom(|iters| rt.block_on(concurrent(conns, iters)))
        });
    }
    group.finish();

    interleaved(&rt, &cases, &mut conns);

    assert_eq!(
        counts.token_fetches.load(Ordering::Relaxed),
        1,
        "one token for the whole run"
    );
    eprintln!(
        "upstream requests: {}; token fetches: {}",
        counts.requests.load(Ordering::Relaxed),
        counts.token_fetches.load(Ordering::Relaxed)
    );
}

/// A case's open connections to where its client talks.
struct Conns {
    base: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    authority: Arc<str>,
    one: Sender,
    pool: Vec<Option<Sender>>,
}

impl Conns {
    /// Opens again, untimed, the connections the gateway closed while they sat idle (its
    /// `header_timeout` is the keep-alive limit), e.g. during the other cases.
    async fn reopen(&mut self) {
        if self.one.is_closed() {
            self.one = connect(&self.base, self.tls.as_ref()).await;
        }
        for slot in &mut self.pool {
            if slot.as_ref().is_none_or(Sender::is_closed) {
                *slot = Some(connect(&self.base, self.tls.as_ref()).await);
            }
        }
    }
}

/// `iters` requests one after the other on one connection.
async fn sequential(conns: &mut Conns, iters: u64) -> Duration {
    conns.reopen().await;
    let started = Instant::now();
    for _ in 0..iters {
        get(&mut conns.one, &conns.authority).await;
    }
    started.elapsed()
}

/// `iters` requests spread over the 32 connections, one in flight on each.
async fn concurrent(conns: &mut Conns, iters: u64) -> Duration {
    conns.reopen().await;
    let n = usize::try_from(iters).expect("iters");
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .pool
        .iter_mut()
        .enumerate()
        .map(|(i, slot)| {
            let mut sender = slot.take().expect("sender");
            let authority = Arc::clone(&conns.authority);
            let count = n / CONNECTIONS + usize::from(i < n % CONNECTIONS);
            tokio::spawn(async move {
                for _ in 0..count {
                    get(&mut sender, &authority).await;
                }
                sender
            })
        })
        .collect();
    for (slot, task) in conns.pool.iter_mut().zip(tasks) {
        *slot = Some(task.await.expect("join"));
    }
    started.elapsed()
}

/// The same measurements in rounds, every case once per round in turn, so that a change in
/// the machine's other load during the run falls on all cases alike; each case's ratio to
/// the baseline is taken within each round, and the medians over rounds are printed as a
/// Markdown table. `UPSTREAM_ROUNDS` rounds (default 30; 0 skips this), each case
/// `UPSTREAM_SEQUENTIAL` (default 2 000) requests one at a time and `UPSTREAM_CONCURRENT`
/// (default 8 000) over the 32 connections.
fn interleaved(rt: &tokio::runtime::Runtime, cases: &[Case], conns: &mut [Conns]) {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let test_mode = std::env::args().any(|a| a == "--test");
    let rounds = if test_mode {
        1
    } else {
        env("UPSTREAM_ROUNDS", 30)
    };
    let (one, many) = if test_mode {
        (10, 64)
    } else {
        (
            env("UPSTREAM_SEQUENTIAL", 2000),
            env("UPSTREAM_CONCURRENT", 8000),
        )
    };
    if rounds == 0 {
        return;
    }
    let baseline = cases
        .iter()
        .position(|c| c.name.contains("(baseline)"))
        .expect("a baseline");
    // Per case, per round: µs per request one at a time; requests/s over 32 connections.
    let mut latency = vec![Vec::new(); cases.len()];
    let mut rate = vec![Vec::new(); cases.len()];
    let mut cpu = vec![Vec::new(); cases.len()];
    rt.block_on(async {
        for _ in 0..rounds {
            for (i, conns) in conns.iter_mut().enumerate() {
                let t = sequential(conns, one).await;
                latency[i].push(t.as_secs_f64() * 1e6 / one as f64);
                let before = cpu_seconds();
                let t = concurrent(conns, many).await;
                cpu[i].push((cpu_seconds() - before) * 1e6 / many as f64);
                rate[i].push(many as f64 / t.as_secs_f64());
            }
        }
    });
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratios = |series: &[Vec<f64>], i: usize| {
        median(
            series[i]
                .iter()
                .zip(&series[baseline])
                .map(|(a, b)| a / b)
                .collect(),
        )
    };
    println!();
    println!(
        "Interleaved: {rounds} rounds; per round and case {one} requests one at a time, then \
         {many} over {CONNECTIONS} connections. Medians over rounds; ratios taken per round."
    );
    println!();
    println!(
        "| case | latency µs/request | vs baseline | added µs | requests/s (32 conn.) | vs baseline \
         | process CPU µs/request (32 conn.; client, gateway and upstream) | added |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, case) in cases.iter().enumerate() {
        let added = median(
            latency[i]
                .iter()
                .zip(&latency[baseline])
                .map(|(a, b)| a - b)
                .collect(),
        );
        let added_cpu = median(
            cpu[i]
                .iter()
                .zip(&cpu[baseline])
                .map(|(a, b)| a - b)
                .collect(),
        );
        println!(
            "| {} | {:.1} | {:.2}× | {:+.1} | {:.0} | {:.2}× | {:.1} | {:+.1} |",
            case.name,
            median(latency[i].clone()),
            ratios(&latency, i),
            added,
            median(rate[i].clone()),
            ratios(&rate, i),
            median(cpu[i].clone()),
            added_cpu,
        );
    }
}

/// The CPU time this process's threads have run so far, in seconds: the sum of each live
/// thread's `/proc/self/task/*/schedstat` (nanoseconds; the runtime's threads live for the
/// whole run). Finer than `utime`/`stime`, which count 10 ms ticks.
fn cpu_seconds() -> f64 {
    let mut nanos = 0u64;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = task.expect("task").path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            nanos += text
                .split(' ')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    nanos as f64 / 1e9
}

criterion_group!(upstream, benches);
criterion_main!(upstream);
