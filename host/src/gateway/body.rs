//! The one body type the gateway sends and forwards: a boxed stream of `Bytes` frames, and
//! reading one whole within a size limit and, for request bodies from clients, a deadline.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full};

/// Errors carried by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every request and response body the gateway handles.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes any body whose errors convert to [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// `body` with its trailers dropped: a request's trailers are headers the caller sends
/// after the body, where none of the gateway's header rules (credential stripping, the
/// upstream's credential, identity headers) would apply. HTTP/2 upstreams receive them.
pub fn without_trailers(body: Body) -> Body {
    WithoutTrailers(body).boxed_unsync()
}

struct WithoutTrailers(Body);

impl http_body::Body for WithoutTrailers {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        loop {
            match std::task::ready!(std::pin::Pin::new(&mut self.0).poll_frame(cx)) {
                Some(Ok(frame)) if frame.is_trailers() => {}
                other => return std::task::Poll::Ready(other),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// Why [`collect_limited`] stopped.
#[derive(Debug)]
pub enum CollectError {
    /// More than the limit arrived.
    TooLarge,
    /// The body failed.
    Broken(BoxError),
}

/// [`collect_limited_within`]'s deadline passed before the body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimedOut;

/// Reads a whole body of at most `limit` bytes.
///
/// Written out rather than `Limited::collect` because that future's `Into<BoxError>` bound
/// on an erased lifetime defeats rustc's `Send` inference inside the spawned handlers.
pub async fn collect_limited(mut body: Body, limit: usize) -> Result<Bytes, CollectError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(CollectError::Broken)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(CollectError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Reads a whole body of at most `limit` bytes that must end within `timeout`: the outer
/// `Err` is the deadline, the inner result is [`collect_limited`]'s.
///
/// For request bodies the gateway buffers: the size limit bounds the memory one request
/// holds, this deadline how long it holds it. A per-read timeout (nginx's
/// `client_body_timeout`) would not do: a client trickling one byte a second never
/// trips it, and keeps a buffer and a connection for as long as it likes.
pub async fn collect_limited_within(
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Result<Bytes, CollectError>, BodyTimedOut> {
    tokio::time::timeout(timeout, collect_limited(body, limit))
        .await
        .map_err(|_| BodyTimedOut)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A body whose next frame never comes: a client that stopped sending.
    struct Stalled;

    impl http_body::Body for Stalled {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_that_never_ends_times_out() {
        let result = collect_limited_within(boxed(Stalled), 1024, Duration::from_millis(20)).await;
        assert_eq!(result.err(), Some(BodyTimedOut));
    }

    #[tokio::test]
    async fn a_complete_body_is_read_within_its_deadline() {
        let result = collect_limited_within(full("hello"), 1024, Duration::from_secs(5)).await;
        assert_eq!(
            result.ok().and_then(Result::ok),
            Some(Bytes::from_static(b"hello"))
        );
    }
}
