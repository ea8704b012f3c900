//! Slow, many and lying clients through the real listener on port 0: what one client can
//! hold (a connection slot, a head or body half sent, an idle connection, HTTP/2 streams)
//! and for how long, and the forwarding headers a client must not be able to choose.
//!
//! The timeouts are configured short (1–2 s) so that the tests prove the limits hold; the
//! bounds asserted are generous (they prove "cut off, not hung", never a speed). Decisions:
//! - **Connection cap.** At `max_connections` the gateway stops accepting; connections
//!   beyond it wait in the kernel's backlog and are served once a slot frees, while the
//!   connections it has keep being served.
//! - **Heads and idleness.** A head not finished within `header_timeout_secs`, a
//!   connection that sends nothing (no HTTP/1 head, no h2 preface, or a preface and no
//!   stream), and a connection with no request in flight for `idle_timeout_secs`, are
//!   closed.
//! - **Bodies.** A body the gateway buffers (MCP routes) must arrive whole within
//!   `body_timeout_secs`: 408, and the upstream never sees the request.
//! - **HTTP/2.** Streams beyond `http2_max_concurrent_streams` are refused with
//!   `RST_STREAM(REFUSED_STREAM)`, even from a client that ignores the setting.
//! - **Forwarding headers.** `Forwarded`, `X-Real-IP` and the other client-address, host,
//!   scheme, port, prefix, URL-override and method-override headers a framework might
//!   believe never reach the upstream as sent (also spelled with `_`); `X-Forwarded-Host`
//!   and `-Proto` are the public URL's; `X-Forwarded-For` is the peer alone, or, from a
//!   trusted proxy, the chain it sent plus itself.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::gateway_harness::{
    Harness, READER_KEY, RawReply, RecordingUpstream, TestConfig, raw_request, start_with_upstream,
};

/// A generous bound for "the gateway reacted": far above every configured timeout.
const BOUND: Duration = Duration::from_secs(15);

/// A gateway with `server` lines added to `[server]`: `/api` (API keys) and `/public`
/// (anonymous) stream to `{upstream}`; `/mcp` (API keys) buffers and parses its bodies.
fn config(server: &str) -> TestConfig {
    TestConfig::new()
        .server(server)
        .http_route("/api", &["keys"])
        .http_route("/public", &["anon"])
        .with("response_timeout_ms = 30000")
        .route("/mcp", &["keys"])
        .with(r#"upstream = "{upstream}/mcp""#)
        .api_keys(&["reader"])
        .provider("anon", "anonymous")
}

async fn gateway(server: &str) -> (Harness, RecordingUpstream) {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(config(server), &upstream.url).await;
    (h, upstream)
}

/// Reads (and ignores) whatever comes until the gateway closes the connection; `Err` when
/// it is still open after [`BOUND`].
async fn closed_by_gateway(reader: &mut (impl tokio::io::AsyncRead + Unpin)) -> Result<(), String> {
    let mut buf = [0_u8; 4096];
    let deadline = Instant::now() + BOUND;
    loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {BOUND:?}")),
            Ok(Ok(0) | Err(_)) => return Ok(()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Connects and writes `first`, then one byte of `trickle` every 200 ms (a slowloris
/// client) until the gateway closes the connection; returns whether it did within
/// [`BOUND`], and what it answered before closing.
async fn slow_client(addr: SocketAddr, first: &[u8], trickle: &[u8]) -> Result<String, String> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(first).await.expect("first bytes");
    let trickle = trickle.to_vec();
    let writing = tokio::spawn(async move {
        for byte in trickle {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
        }
        // Everything sent: hold the connection open without another byte.
        std::future::pending::<()>().await;
    });
    let mut text = Vec::new();
    let deadline = Instant::now() + BOUND;
    let outcome = loop {
        let mut buf = [0_u8; 4096];
        match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Err(_) => break Err(format!("still open after {BOUND:?}")),
            Ok(Ok(0) | Err(_)) => break Ok(String::from_utf8_lossy(&text).into_owned()),
            Ok(Ok(n)) => text.extend_from_slice(&buf[..n]),
        }
    };
    writing.abort();
    outcome
}

#[tokio::test]
async fn slowloris_heads_and_silent_connections_are_cut_off_after_the_header_timeout() {
    let (h, upstream) = gateway("header_timeout_secs = 1\nidle_timeout_secs = 60").await;
    let endless_header = vec![b'a'; 200];
    let cases: [(&str, &[u8], &[u8]); 4] = [
        ("a connection that sends nothing", b"", b""),
        (
            "a head that stops half-way",
            b"GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nX-Slow: ",
            b"",
        ),
        (
            "a head trickled a byte every 200 ms",
            b"GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nX-Slow: ",
            &endless_header,
        ),
        (
            "an HTTP/2 preface and nothing after",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"",
        ),
    ];
    let mut failures = Vec::new();
    for (name, first, trickle) in cases {
        if let Err(why) = slow_client(h.addr, first, trickle).await {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        upstream.hits(),
        0,
        "no half-sent request reached the upstream"
    );
    let after = h.request("GET", "/public/after", &[], None).await;
    assert_eq!(after.status, 200, "the gateway still serves");
}

#[tokio::test]
async fn a_buffered_body_that_does_not_arrive_in_time_is_408() {
    let (h, upstream) = gateway("body_timeout_secs = 1").await;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer {READER_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    );
    let trickled = vec![b' '; 200];
    let cases: [(&str, &[u8]); 2] = [
        ("a body trickled a byte every 200 ms", &trickled),
        ("a body that never comes", b""),
    ];
    let mut failures = Vec::new();
    for (name, trickle) in cases {
        match slow_client(h.addr, head.as_bytes(), trickle).await {
            Ok(text) if text.starts_with("HTTP/1.1 408") => {}
            Ok(text) => failures.push(format!("{name}:\nexpected: 408\ngot: {text:?}")),
            Err(why) => failures.push(format!("{name}: {why}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(upstream.hits(), 0, "a refused body reached the upstream");
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let whole = h.mcp_post(Some(READER_KEY), None, list).await;
    assert_eq!(
        whole.status, 200,
        "a whole body is still served: {}",
        whole.body
    );
}

/// One HTTP/1 connection to `addr`, for sending several requests on it.
async fn connection(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// `GET /api/<what>` with the reader key on `sender`; the status.
async fn get_api(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    what: &str,
) -> u16 {
    let request = http::Request::get(format!("/api/{what}"))
        .header("host", "gateway.test")
        .header("authorization", format!("Bearer {READER_KEY}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = tokio::time::timeout(BOUND, async {
        sender.ready().await.expect("the connection is open");
        sender.send_request(request).await.expect("an answer")
    })
    .await
    .expect("answered in time");
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

#[tokio::test]
async fn over_the_connection_cap_clients_wait_while_the_gateway_keeps_serving_its_own() {
    const CAP: usize = 4;
    const ABUSERS: usize = 6;
    let (h, upstream) = gateway(&format!(
        "max_connections = {CAP}\nheader_timeout_secs = 2\nidle_timeout_secs = 60"
    ))
    .await;
    // A client already connected holds one slot.
    let mut legit = connection(h.addr).await;
    assert_eq!(get_api(&mut legit, "first").await, 200);
    // Slowloris clients take the other slots; the rest wait in the backlog.
    let started = Instant::now();
    let mut abusers = Vec::new();
    for _ in 0..ABUSERS {
        let mut stream = TcpStream::connect(h.addr)
            .await
            .expect("the kernel accepts");
        abusers.push(tokio::spawn(async move {
            // Written into the socket even before the gateway accepts it.
            let _ = stream
                .write_all(b"GET /api/x HTTP/1.1\r\nHost: a\r\n")
                .await;
            let closed = closed_by_gateway(&mut stream).await;
            (closed, Instant::now())
        }));
    }
    // While every slot is held, the connection the gateway has is served, again and again.
    for i in 0..3 {
        assert_eq!(
            get_api(&mut legit, &format!("again-{i}")).await,
            200,
            "a served connection is served while the cap is reached"
        );
    }
    // A new client beyond the cap waits in the backlog and is served once slots free up.
    let mut newcomer = tokio::time::timeout(BOUND, connection(h.addr))
        .await
        .expect("connected");
    assert_eq!(get_api(&mut newcomer, "newcomer").await, 200);
    let answered = Instant::now();
    let mut first_closed = None::<Instant>;
    for abuser in abusers {
        let (closed, at) = abuser.await.expect("abuser task");
        closed.unwrap_or_else(|why| panic!("an abusive connection was not cut off: {why}"));
        first_closed = Some(first_closed.map_or(at, |t| t.min(at)));
    }
    let first_closed = first_closed.expect("abusers ran");
    // The newcomer got in only after a slot freed (with slack for scheduling; uncapped, it
    // would be answered at once, 2 s before any abuser is cut off).
    assert!(
        first_closed <= answered + Duration::from_millis(500),
        "the newcomer was answered {:?} after the start, before any abusive connection \
         was cut off ({:?}): the cap did not hold",
        answered - started,
        first_closed - started,
    );
    assert_eq!(
        upstream.hits(),
        5,
        "every legitimate request reached the upstream"
    );
}

/// An HTTP/2 frame: length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const REFUSED_STREAM: u32 = 0x7;

/// A GET of `path` as an HPACK block of literals (no Huffman, no table changes).
fn get_block(authority: &str, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http (static table)
    for (index, value) in [(0x04_u8, path), (0x01, authority)] {
        block.push(index); // literal without indexing, name from the static table
        block.push(u8::try_from(value.len()).expect("short value"));
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// Reads one frame: `(type, flags, stream, payload)`.
async fn read_frame(stream: &mut TcpStream) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0_u8; 9];
    stream.read_exact(&mut head).await?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let id = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).await?;
    Ok((head[3], head[4], id, payload))
}

#[tokio::test]
async fn http2_streams_beyond_the_limit_are_refused_even_from_a_client_that_ignores_it() {
    // An upstream that never answers.
    let upstream = RecordingUpstream::answering(|_| std::future::pending()).await;
    let h = start_with_upstream(config("http2_max_concurrent_streams = 2"), &upstream.url).await;
    let mut stream = TcpStream::connect(h.addr).await.expect("connect");
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    stream
        .write_all(&frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    let outcome = tokio::time::timeout(BOUND, async {
        let mut advertised = None;
        let mut opened = false;
        loop {
            let (kind, flags, id, payload) = read_frame(&mut stream).await.expect("a frame");
            if kind == SETTINGS && flags & 1 == 0 {
                for setting in payload.chunks_exact(6) {
                    if setting[..2] == [0, 3] {
                        advertised = Some(u32::from_be_bytes([
                            setting[2], setting[3], setting[4], setting[5],
                        ]));
                    }
                }
                stream
                    .write_all(&frame(SETTINGS, 1, 0, &[]))
                    .await
                    .expect("ack");
            }
            if !opened {
                opened = true;
                // Three streams at once; the first two wait on the silent upstream.
                let block = get_block(&h.addr.to_string(), "/public/slow");
                for id in [1, 3, 5] {
                    stream
                        .write_all(&frame(HEADERS, 0x5, id, &block))
                        .await
                        .expect("headers");
                }
            }
            match kind {
                RST_STREAM => {
                    let code = u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"));
                    return (
                        advertised,
                        format!("RST_STREAM on stream {id}, code {code}"),
                        id,
                        code,
                    );
                }
                GOAWAY => {
                    let code = u32::from_be_bytes(payload[4..8].try_into().expect("4 bytes"));
                    return (advertised, format!("GOAWAY, code {code}"), 0, code);
                }
                _ => {}
            }
        }
    })
    .await;
    let (advertised, what, id, code) =
        outcome.expect("the third stream is refused in time, not left waiting");
    assert_eq!(advertised, Some(2), "SETTINGS_MAX_CONCURRENT_STREAMS");
    assert_eq!(
        (id, code),
        (5, REFUSED_STREAM),
        "expected: RST_STREAM(REFUSED_STREAM) on stream 5\ngot: {what}"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (h, upstream) = gateway("idle_timeout_secs = 1\nheader_timeout_secs = 5").await;
    // HTTP/1: one request, then silence.
    let mut stream = TcpStream::connect(h.addr).await.expect("connect");
    stream
        .write_all(b"GET /public/once HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        .await
        .expect("request");
    closed_by_gateway(&mut stream)
        .await
        .unwrap_or_else(|why| panic!("an idle HTTP/1 connection: {why}"));
    // HTTP/2: one stream answered, then silence (hyper has no idle clock for HTTP/2).
    let mut stream = TcpStream::connect(h.addr).await.expect("connect");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    hello.extend(frame(
        HEADERS,
        0x5,
        1,
        &get_block(&h.addr.to_string(), "/public/once"),
    ));
    stream.write_all(&hello).await.expect("h2 request");
    let answered = tokio::time::timeout(BOUND, async {
        loop {
            let (kind, flags, id, _) = read_frame(&mut stream).await?;
            if kind == SETTINGS && flags & 1 == 0 {
                stream.write_all(&frame(SETTINGS, 1, 0, &[])).await?;
            }
            // DATA or HEADERS with END_STREAM on stream 1: the response is complete.
            if id == 1 && matches!(kind, 0x0 | HEADERS) && flags & 1 == 1 {
                return Ok::<_, std::io::Error>(());
            }
        }
    })
    .await;
    assert!(
        matches!(answered, Ok(Ok(()))),
        "the HTTP/2 request was answered: {answered:?}"
    );
    closed_by_gateway(&mut stream)
        .await
        .unwrap_or_else(|why| panic!("an idle HTTP/2 connection: {why}"));
    assert_eq!(upstream.hits(), 2);
}

// ---------------------------------------------------------------------------------------
// Forwarding headers.

/// `(header line as the client sends it, header the upstream must not see as sent)`.
/// `X-Forwarded-For`, `-Host` and `-Proto` are rewritten rather than removed; every other
/// name must be absent.
const SPOOFED: &[(&str, &str)] = &[
    (
        "Forwarded: for=203.0.113.66;host=evil.example;proto=https",
        "forwarded",
    ),
    ("X-Real-IP: 203.0.113.66", "x-real-ip"),
    ("X_Real_IP: 203.0.113.66", "x_real_ip"),
    ("X-Forwarded-For: 203.0.113.66", "x-forwarded-for"),
    ("X_Forwarded_For: 203.0.113.66", "x_forwarded_for"),
    ("X-Forwarded-Host: evil.example", "x-forwarded-host"),
    ("X_Forwarded_Host: evil.example", "x_forwarded_host"),
    ("X-Forwarded-Proto: https", "x-forwarded-proto"),
    ("X-Forwarded-Port: 443", "x-forwarded-port"),
    ("X-Forwarded-Prefix: /admin", "x-forwarded-prefix"),
    ("X-Forwarded-Server: evil.example", "x-forwarded-server"),
    ("X-Forwarded-Ssl: on", "x-forwarded-ssl"),
    ("X-Forwarded-Scheme: https", "x-forwarded-scheme"),
    ("X-Url-Scheme: https", "x-url-scheme"),
    ("Front-End-Https: on", "front-end-https"),
    ("X-Host: evil.example", "x-host"),
    ("X-HTTP-Host-Override: evil.example", "x-http-host-override"),
    ("X-Original-URL: /admin/secret", "x-original-url"),
    ("X-Original-URI: /admin/secret", "x-original-uri"),
    ("X-Original-Host: evil.example", "x-original-host"),
    ("X_Original_URL: /admin/secret", "x_original_url"),
    ("X-Rewrite-URL: /admin/secret", "x-rewrite-url"),
    ("X-Forwarded-Uri: /admin/secret", "x-forwarded-uri"),
    ("X-Forwarded-Method: DELETE", "x-forwarded-method"),
    ("X-HTTP-Method-Override: DELETE", "x-http-method-override"),
    ("X-HTTP-Method: DELETE", "x-http-method"),
    ("X-Method-Override: DELETE", "x-method-override"),
    ("X-Client-IP: 203.0.113.66", "x-client-ip"),
    ("Client-IP: 203.0.113.66", "client-ip"),
    ("True-Client-IP: 203.0.113.66", "true-client-ip"),
    ("CF-Connecting-IP: 203.0.113.66", "cf-connecting-ip"),
    ("Fastly-Client-IP: 203.0.113.66", "fastly-client-ip"),
    ("X-Cluster-Client-IP: 203.0.113.66", "x-cluster-client-ip"),
    ("X-Forwarded: for=203.0.113.66", "x-forwarded"),
    ("Forwarded-For: 203.0.113.66", "forwarded-for"),
];

/// What the gateway itself writes, for a gateway at `addr` seen from 127.0.0.1.
fn ours(name: &str, addr: SocketAddr) -> Option<String> {
    match name {
        "x-forwarded-for" => Some("127.0.0.1".into()),
        "x-forwarded-host" => Some(addr.to_string()),
        "x-forwarded-proto" => Some("http".into()),
        _ => None,
    }
}

fn raw_get(path: &str, extra: &[&str]) -> Vec<u8> {
    let mut out = format!(
        "GET {path} HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {READER_KEY}\r\n"
    );
    for line in extra {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

#[tokio::test]
async fn spoofed_forwarding_headers_from_an_untrusted_client_never_reach_the_upstream_as_sent() {
    let (h, upstream) = gateway("").await;
    let mut mistakes = Vec::new();
    for (line, name) in SPOOFED {
        match raw_request(h.addr, raw_get("/api/data", &[line])).await {
            RawReply::Answered { status: 200, .. } => {}
            other => panic!("{line}:\nexpected: 200\ngot: {other:?}"),
        }
        let seen = upstream
            .seen()
            .pop()
            .expect("the request reached the upstream");
        let values: Vec<String> = seen
            .headers
            .get_all(*name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let expected: Vec<String> = ours(name, h.addr).into_iter().collect();
        if values != expected {
            mistakes.push(format!(
                "{line}\n  expected: {expected:?}\n  got: {values:?}"
            ));
        }
        // Nothing the client sent under another spelling either.
        let sent_value = line.split_once(": ").map_or("", |(_, v)| v);
        for (other, value) in &seen.headers {
            if value.as_bytes() == sent_value.as_bytes() && ours(other.as_str(), h.addr).is_none() {
                mistakes.push(format!("{line}\n  reached the upstream as `{other}`"));
            }
        }
    }
    assert_eq!(upstream.hits(), SPOOFED.len());
    assert!(
        mistakes.is_empty(),
        "{} of {} spoofed headers reached the upstream:\n{}",
        mistakes.len(),
        SPOOFED.len(),
        mistakes.join("\n")
    );
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_is_appended_to_and_nothing_else_is_believed() {
    let (h, upstream) = gateway(r#"trusted_proxies = ["127.0.0.0/8"]"#).await;
    // `(X-Forwarded-For lines the proxy sends, what the upstream must see)`.
    let cases: [(&[&str], &str); 3] = [
        (&["X-Forwarded-For: 203.0.113.9"], "203.0.113.9, 127.0.0.1"),
        (
            &[
                "X-Forwarded-For: 203.0.113.9, 10.1.1.1",
                "X-Forwarded-For: 10.2.2.2",
            ],
            "203.0.113.9, 10.1.1.1, 10.2.2.2, 127.0.0.1",
        ),
        (&[], "127.0.0.1"),
    ];
    for (lines, expected) in cases {
        let mut extra = lines.to_vec();
        // Believed from nobody, trusted or not.
        extra.extend(["X-Real-IP: 203.0.113.66", "Forwarded: for=203.0.113.66"]);
        extra.push("X-Forwarded-Host: evil.example");
        match raw_request(h.addr, raw_get("/api/data", &extra)).await {
            RawReply::Answered { status: 200, .. } => {}
            other => panic!("{lines:?}:\nexpected: 200\ngot: {other:?}"),
        }
        let seen = upstream
            .seen()
            .pop()
            .expect("the request reached the upstream");
        let forwarded_for: Vec<_> = seen.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(forwarded_for, [expected], "{lines:?}");
        assert!(seen.headers.get("x-real-ip").is_none(), "{seen:?}");
        assert!(seen.headers.get("forwarded").is_none(), "{seen:?}");
        assert_eq!(
            seen.headers.get("x-forwarded-host").map(|v| v.as_bytes()),
            Some(h.addr.to_string().as_bytes()),
        );
    }
    // A chain whose last hop (the one the trusted proxy wrote) does not parse names no
    // client: refused, never judged as the proxy's own address.
    let before = upstream.hits();
    let bad = raw_get("/api/data", &["X-Forwarded-For: 203.0.113.9, evil"]);
    match raw_request(h.addr, bad).await {
        RawReply::Answered { status: 400, .. } => {}
        other => panic!("unparseable chain:\nexpected: 400\ngot: {other:?}"),
    }
    assert_eq!(upstream.hits(), before);
}
