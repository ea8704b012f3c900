//! A response to a caller authenticated by an identity-CA certificate, ended as soon as that
//! certificate stops being good: a stream that began before a revocation (an MCP event
//! stream, a long tool answer) must not outlive it. The certificate is judged again every
//! [`CHECK_EVERY`], also while the upstream is quiet; when it fails, the body ends with an
//! error (HTTP/1: the connection is closed; HTTP/2: the stream is reset).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::{IdentityAuthority, now};
use crate::context::ClientCert;
use crate::gateway::{Body, BoxError};

/// How often an answer in flight judges its caller's certificate again. With the store
/// read every [`super::registry::REFRESH_EVERY`], a revocation ends a stream within
/// their sum.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

/// `body`, ended when `cert` stops being good in `authority`'s store.
pub fn while_vouched(body: Body, authority: Arc<IdentityAuthority>, cert: ClientCert) -> Body {
    http_body_util::BodyExt::boxed_unsync(WhileVouched {
        inner: body,
        authority,
        cert,
        check: Box::pin(tokio::time::sleep(CHECK_EVERY)),
    })
}

struct WhileVouched {
    inner: Body,
    authority: Arc<IdentityAuthority>,
    cert: ClientCert,
    check: Pin<Box<Sleep>>,
}

impl HttpBody for WhileVouched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        while this.check.as_mut().poll(cx).is_ready() {
            if let Err(refusal) = this.authority.judge(&this.cert, now()) {
                tracing::info!(
                    reason = refusal.as_str(),
                    fingerprint = %this.cert.sha256_fingerprint,
                    "answer in flight ended: its client certificate is no longer good"
                );
                return Poll::Ready(Some(Err(refusal.as_str().into())));
            }
            this.check.as_mut().reset(Instant::now() + CHECK_EVERY);
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
