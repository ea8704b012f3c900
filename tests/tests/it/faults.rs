//! Upstream faults that `gateway_upstream.rs` does not cover: an upstream that resets the
//! connection in the middle of a stream, one that accepts and hangs up without answering,
//! and a stream that lasts longer than the response timeout (which bounds only the wait
//! for headers: streams have no total timeout). Real sockets on 127.0.0.1 throughout.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::gateway_harness::{READER_KEY, send, standard, start_with_upstream};

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const EVENT: &str = "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n";

/// Reads an HTTP/1.1 request head from `stream` (bodies are not needed here).
async fn read_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// A raw upstream that answers every connection with the head of a chunked SSE response
/// and one event, then waits for a signal and resets the connection (RST, not FIN).
async fn resetting_upstream() -> (String, mpsc::UnboundedSender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    let (reset, mut resets) = mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            read_head(&mut stream).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                        transfer-encoding: chunked\r\n\r\n";
            let chunk = format!("{:x}\r\n{EVENT}\r\n", EVENT.len());
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(chunk.as_bytes()).await;
            if resets.recv().await.is_none() {
                return;
            }
            // Linger zero: closing sends RST, as a crashed or killed upstream would.
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    });
    (url, reset)
}

/// Reads until the gateway closes (EOF or error), within 10 s; returns what arrived.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut rest = String::new();
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = tokio::time::timeout_at(deadline.into(), stream.read(&mut buf))
            .await
            .expect("the gateway ends the client's stream within 10 s of the upstream reset");
        match read {
            Ok(0) | Err(_) => return rest,
            Ok(n) => rest.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
}

#[tokio::test]
async fn upstream_reset_mid_stream_cuts_the_client_stream_visibly_and_the_gateway_keeps_serving() {
    let (url, reset) = resetting_upstream().await;
    let h = start_with_upstream(standard(), &url).await;
    // Twenty streams cut one after another: each is seen as cut, none is left hanging.
    for round in 0..20 {
        let (mut stream, seen) = h.open_event_stream().await;
        assert!(
            seen.contains("transfer-encoding: chunked"),
            "round {round}: {seen}"
        );
        reset.send(()).expect("upstream alive");
        let rest = read_to_close(&mut stream).await;
        // A chunked body that ends cleanly ends with the zero-length chunk; a cut one must
        // not, or the client would take a truncated stream for a complete one.
        let whole = format!("{seen}{rest}");
        assert!(
            !whole.ends_with("\r\n0\r\n\r\n"),
            "round {round}: the cut stream looked complete: {whole:?}"
        );
    }
    // The gateway is up and its other paths answer.
    assert_eq!(h.request("GET", "/healthz", &[], None).await.status, 200);
    let denied = h.mcp_post(None, None, LIST).await;
    assert_eq!(denied.status, 401, "{}", denied.body);
    h.stop().await;
}

#[tokio::test]
async fn upstream_hanging_up_without_an_answer_gets_502() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            read_head(&mut stream).await;
            drop(stream);
        }
    });
    let h = start_with_upstream(standard(), &url).await;
    for _ in 0..5 {
        let started = Instant::now();
        let reply = h.mcp_post(Some(READER_KEY), None, LIST).await;
        assert_eq!(reply.status, 502, "{}", reply.body);
        assert!(reply.body.contains("bad_gateway"), "{}", reply.body);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(h.request("GET", "/healthz", &[], None).await.status, 200);
}

#[tokio::test]
async fn sse_stream_outlives_the_response_timeout_because_streams_have_no_total_timeout() {
    const EVENTS: usize = 8;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_head(&mut stream).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                let _ = stream.write_all(head.as_bytes()).await;
                // Events keep coming well past the 200 ms response timeout.
                for _ in 0..EVENTS {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let chunk = format!("{:x}\r\n{EVENT}\r\n", EVENT.len());
                    if stream.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = stream.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    let template = standard().on_route("/mcp", "response_timeout_ms = 200");
    let h = start_with_upstream(template, &url).await;
    let started = Instant::now();
    let auth = format!("Bearer {READER_KEY}");
    let reply = send(
        &format!("{}/mcp", h.base),
        "GET",
        &[("accept", "text/event-stream"), ("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.body.matches("notifications/message").count(),
        EVENTS,
        "every event arrives: {}",
        reply.body
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200 * 2),
        "the stream really did outlast the response timeout ({:?})",
        started.elapsed()
    );
}
