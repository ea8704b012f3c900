//! The gateway when the upstream misbehaves: down (502), slow (504), and a client that
//! leaves in the middle of a stream (the upstream stream is released, nothing hangs).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt as _;
use portcullis_tests::eventually;
use portcullis_tests::upstream::{BoxError, answer};
use tokio::net::TcpListener;

use crate::gateway_harness::{READER_KEY, RecordingUpstream, standard, start_with_upstream};

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

#[tokio::test]
async fn upstream_down_gets_502_with_a_clear_body() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    drop(listener);
    let h = start_with_upstream(standard(), &dead).await;
    let started = Instant::now();
    let reply = h.mcp_post(Some(READER_KEY), None, LIST).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(reply.body.contains("unreachable"), "{}", reply.body);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn slow_upstream_gets_504_after_the_response_timeout() {
    let upstream = RecordingUpstream::answering(|_| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        answer(200, "late")
    })
    .await;
    let template = standard().on_route("/mcp", "response_timeout_ms = 200");
    let h = start_with_upstream(template, &format!("{}/mcp", upstream.url)).await;
    let started = Instant::now();
    let reply = h.mcp_post(Some(READER_KEY), None, LIST).await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert!(reply.body.contains("gateway_timeout"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn upstream_status_and_headers_pass_unchanged() {
    let upstream = RecordingUpstream::answering(|_| async {
        let mut r = answer(418, "{}");
        r.headers_mut()
            .insert("mcp-session-id", "abc".parse().expect("hv"));
        r.headers_mut().insert("x-custom", "1".parse().expect("hv"));
        r.headers_mut()
            .insert("connection", "x-custom".parse().expect("hv"));
        r
    })
    .await;
    let h = start_with_upstream(standard(), &format!("{}/mcp", upstream.url)).await;
    let reply = h.mcp_post(Some(READER_KEY), None, LIST).await;
    assert_eq!(reply.status, 418);
    assert_eq!(reply.header("mcp-session-id"), Some("abc"));
    assert_eq!(
        reply.header("x-custom"),
        None,
        "named in Connection: hop-by-hop"
    );
}

/// An endless SSE body that records when it is dropped.
struct Endless {
    dropped: Arc<AtomicBool>,
    tick: tokio::time::Interval,
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.tick.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n",
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[tokio::test]
async fn client_leaving_mid_stream_releases_the_upstream_stream() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let upstream = RecordingUpstream::answering(move |_| {
        let flag = flag.clone();
        async move {
            let body = Endless {
                dropped: flag,
                tick: tokio::time::interval(Duration::from_millis(20)),
            };
            let mut r = hyper::Response::new(body.boxed_unsync());
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().expect("hv"));
            r
        }
    })
    .await;
    let h = start_with_upstream(standard(), &format!("{}/mcp", upstream.url)).await;

    // A raw client that reads the start of the stream and then hangs up.
    let (stream, _) = h.open_event_stream().await;
    assert!(!dropped.load(Ordering::SeqCst));
    drop(stream);

    eventually(
        "the upstream stream released after the client left",
        || async { dropped.load(Ordering::SeqCst) },
    )
    .await;
    // The gateway is still serving, and shuts down promptly.
    assert_eq!(h.request("GET", "/healthz", &[], None).await.status, 200);
    h.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let upstream = RecordingUpstream::answering(|_| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        answer(200, "{}")
    })
    .await;
    let h = start_with_upstream(standard(), &format!("{}/mcp", upstream.url)).await;
    let target = format!("{}/mcp", h.base);
    let auth = format!("Bearer {READER_KEY}");
    let in_flight = tokio::spawn(async move {
        crate::gateway_harness::send(
            &target,
            "POST",
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            Some(LIST),
        )
        .await
    });
    // Shut down once the request is in flight: it has reached the upstream.
    upstream.arrived(1).await;
    let addr = h.addr;
    h.stop().await;
    let reply = in_flight.await.expect("request task");
    assert_eq!(
        reply.status, 200,
        "the in-flight request completes during the drain"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown"
    );
}
