//! Filtering `tools/list`, `resources/list`, `resources/templates/list` and `prompts/list`
//! responses down to what the caller may use, so clients are not shown tools they would be
//! refused.
//!
//! An entry stays only when the call it names would be allowed: every scope rule that
//! applies to it is satisfied, and every authorizer of the route (Wasm policies such as
//! `mcp-tool-policy`) allows it, asked once per listed entry with the listing request's
//! context and that one call; an authorizer that fails hides the entry (fail closed).
//!
//! Every JSON-RPC response on an MCP route is looked at, whatever the request was: a listing
//! is recognised by its shape (`result.tools`, `result.resources`,
//! `result.resourceTemplates`, `result.prompts`), not by the id of the request that asked
//! for it. Matching ids would trust the upstream to answer each id on the stream of the
//! request that used it, and rmcp and the Python SDK route an answer to the stream that
//! used the id last: a `ping` sent with the id of a concurrent `tools/list` would receive
//! the listing unfiltered. A JSON response is filtered whole; an SSE response is filtered
//! event by event as it streams (an event is held only until its blank line arrives and its
//! entries are judged). A listing that cannot be parsed — JSON that serde refuses, such as a
//! lone surrogate escape — is not passed through unfiltered: the answer is a 502, or the
//! stream ends with an error. Nor is a compressed answer: the gateway asks MCP upstreams for
//! `Accept-Encoding: identity`, and an answer in another content coding is a 502.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::Response;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http_body::{Frame, SizeHint};
use serde_json::Value;

use super::body::{Body, BoxError, collect_limited, full};
use super::rejection::Rejection;
use crate::engine::BoxFuture;
use crate::mcp::{ListKind, McpCall, filter_listing, listed_calls};

/// Filters the listings in a successful `response` (from the upstream, or from the service
/// behind the tower layer) with `filter`: JSON whole, SSE event by event. A JSON listing
/// that cannot be read or parsed is a 502, never passed on unfiltered.
pub(crate) async fn filter_response(
    response: Response<Body>,
    filter: Option<ListingFilter>,
) -> Result<Response<Body>, Rejection> {
    let (mut parts, body) = response.into_parts();
    let Some(filter) = filter.filter(|_| parts.status.is_success()) else {
        return Ok(Response::from_parts(parts, body));
    };
    // A compressed listing cannot be judged; the gateway asks MCP upstreams for `identity`
    // (`Accept-Encoding`), so an encoded answer here is refused rather than passed on.
    let encoded = parts
        .headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .any(|coding| !coding.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(Rejection::BadGateway {
            description: "the upstream answered an MCP request in a content coding; the \
                          gateway filters listings only in plain text (it asks for `identity`)"
                .into(),
        });
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("text/event-stream") {
        parts.headers.remove(CONTENT_LENGTH);
        let body = Body::new(SseFilterBody::new(body, filter));
        Ok(Response::from_parts(parts, body))
    } else if content_type.starts_with("application/json") {
        let bytes = collect_limited(body, MAX_LISTING_BYTES)
            .await
            .map_err(|_| Rejection::BadGateway {
                description: "the upstream's listing could not be read".into(),
            })?;
        let filtered = filter
            .filter_json(&bytes)
            .await
            .map_err(|_| Rejection::BadGateway {
                description: "the upstream's listing is not valid JSON".into(),
            })?;
        parts.headers.remove(CONTENT_LENGTH);
        Ok(Response::from_parts(parts, full(filtered)))
    } else {
        Ok(Response::from_parts(parts, body))
    }
}

/// Largest SSE event (or JSON listing) held for filtering.
pub(crate) const MAX_LISTING_BYTES: usize = 16 << 20;

/// Decides which listed entries stay: given the calls they name, one verdict per call, in
/// order.
pub(crate) type Allow = Arc<dyn Fn(Vec<McpCall>) -> BoxFuture<'static, Vec<bool>> + Send + Sync>;

/// The caller's permission check, applied to every listing in a response.
#[derive(Clone)]
pub struct ListingFilter {
    allow: Allow,
    /// Told the `id` of every SSE event passed on, so that only its receiver may resume
    /// from it ([`super::sessions`]).
    event_ids: Option<EventIds>,
}

/// Records the id of an SSE event passed to the caller.
pub(crate) type EventIds = Arc<dyn Fn(&str) + Send + Sync>;

impl std::fmt::Debug for ListingFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListingFilter").finish_non_exhaustive()
    }
}

/// The `result` members that hold a listing, and their kinds.
const LISTING_FIELDS: [(&str, ListKind); 4] = [
    ("tools", ListKind::Tools),
    ("resources", ListKind::Resources),
    ("resourceTemplates", ListKind::ResourceTemplates),
    ("prompts", ListKind::Prompts),
];

/// Whether `bytes` could hold a listing: one of the listing member names, quoted. An
/// upstream is trusted for its content (it does not hide its own keys behind `\u`
/// escapes), so bytes without any of them need no parse.
fn may_hold_listing(bytes: &[u8]) -> bool {
    LISTING_FIELDS.iter().any(|(field, _)| {
        let quoted = format!("\"{field}\"");
        bytes.windows(quoted.len()).any(|w| w == quoted.as_bytes())
    })
}

impl ListingFilter {
    /// A filter that asks `allow` about every listed entry.
    pub fn new(allow: Allow) -> Self {
        Self {
            allow,
            event_ids: None,
        }
    }

    /// The same filter, telling `record` the id of every SSE event it passes on.
    pub(crate) fn recording_event_ids(self, record: EventIds) -> Self {
        Self {
            event_ids: Some(record),
            ..self
        }
    }

    /// The listing responses in one JSON-RPC message (or a batch), with their kinds.
    fn listings<'v>(&self, value: &'v mut Value) -> Vec<(&'v mut Value, ListKind)> {
        let items: Vec<&mut Value> = match value {
            Value::Array(items) => items.iter_mut().collect(),
            object @ Value::Object(_) => vec![object],
            _ => Vec::new(),
        };
        items
            .into_iter()
            .filter_map(|item| {
                let result = item.get("result")?;
                let kind = LISTING_FIELDS
                    .iter()
                    .find(|(field, _)| result.get(*field).is_some_and(Value::is_array))
                    .map(|(_, kind)| *kind)?;
                Some((item, kind))
            })
            .collect()
    }

    /// Filters one JSON-RPC message (or a batch) in place; returns whether it changed.
    pub async fn filter_value(&self, value: &mut Value) -> bool {
        let mut listings = self.listings(value);
        if listings.is_empty() {
            return false;
        }
        let calls: Vec<McpCall> = listings
            .iter()
            .flat_map(|(item, kind)| listed_calls(item, *kind))
            .collect();
        let verdicts = if calls.is_empty() {
            Vec::new()
        } else {
            (self.allow)(calls).await
        };
        // A missing verdict hides its entry (fail closed).
        let mut verdicts = verdicts.into_iter();
        let mut removed = 0;
        for (item, kind) in &mut listings {
            removed += filter_listing(item, *kind, |_| verdicts.next().unwrap_or(false));
        }
        removed > 0
    }

    /// Filters a complete JSON body. Unparseable JSON is an error (fail closed).
    pub async fn filter_json(&self, body: &[u8]) -> Result<Bytes, BoxError> {
        if !may_hold_listing(body) {
            return Ok(Bytes::copy_from_slice(body));
        }
        let mut value: Value = serde_json::from_slice(body)?;
        if self.filter_value(&mut value).await {
            Ok(Bytes::from(serde_json::to_vec(&value)?))
        } else {
            Ok(Bytes::copy_from_slice(body))
        }
    }

    /// The JSON-RPC message in one SSE event block (without its blank line), when the event
    /// carries one that answers a listing call.
    fn listing_event(&self, event: &[u8]) -> Result<Option<Value>, BoxError> {
        let text = std::str::from_utf8(event)?;
        let mut data = String::new();
        let mut has_data = false;
        for line in text.lines() {
            if let Some(value) = line.strip_prefix("data:") {
                if has_data {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
                has_data = true;
            }
        }
        if !has_data || !may_hold_listing(data.as_bytes()) {
            return Ok(None);
        }
        let Ok(mut value) = serde_json::from_str::<Value>(&data) else {
            return Err(
                "an SSE event that may hold a listing is not JSON this gateway reads".into(),
            );
        };
        Ok((!self.listings(&mut value).is_empty()).then_some(value))
    }

    /// Filters one SSE event that [`Self::listing_event`] found to hold `value`: the event
    /// with its data lines replaced by the filtered message.
    /// `block` is the event with its separator, which starts at `end`.
    async fn filter_event(
        self,
        block: Bytes,
        end: usize,
        mut value: Value,
    ) -> Result<Bytes, BoxError> {
        if !self.filter_value(&mut value).await {
            return Ok(block);
        }
        let event = block.slice(..end);
        let text = std::str::from_utf8(&event)?;
        let mut out = Vec::with_capacity(event.len());
        let mut wrote_data = false;
        for line in text.lines() {
            if line.starts_with("data:") {
                if !wrote_data {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(&serde_json::to_vec(&value)?);
                    out.push(b'\n');
                    wrote_data = true;
                }
            } else {
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
        }
        out.push(b'\n');
        Ok(Bytes::from(out))
    }
}

/// An SSE body whose listing events are filtered as they pass.
pub(crate) struct SseFilterBody {
    inner: Body,
    filter: ListingFilter,
    pending: BytesMut,
    ready: VecDeque<Bytes>,
    /// The listing event being judged; events behind it wait in `pending`, in order.
    judging: Option<BoxFuture<'static, Result<Bytes, BoxError>>>,
    /// The last byte taken was a CR, so an LF that follows belongs to the same line end.
    after_cr: bool,
    /// Bytes of the stream taken so far, up to 3: a UTF-8 byte-order mark at its very start
    /// is dropped, as SSE clients drop it.
    seen: usize,
    done: bool,
}

impl std::fmt::Debug for SseFilterBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseFilterBody")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl SseFilterBody {
    /// Wraps an upstream SSE body.
    pub(crate) fn new(inner: Body, filter: ListingFilter) -> Self {
        Self {
            inner,
            filter,
            pending: BytesMut::new(),
            ready: VecDeque::new(),
            judging: None,
            after_cr: false,
            seen: 0,
            done: false,
        }
    }

    /// Appends upstream bytes to `pending` with every line end as one LF. SSE ends a line
    /// with CRLF, LF or a lone CR alike; judged with LF alone, an event written with CRs
    /// would be one line that is not `data:` and pass unfiltered, while the client reads
    /// its data. The stream goes on with LF line ends, which every SSE client reads the same.
    fn take_bytes(&mut self, data: &[u8]) {
        self.pending.reserve(data.len());
        for &byte in data {
            const BOM: [u8; 3] = [0xef, 0xbb, 0xbf];
            if self.seen < BOM.len() {
                self.seen += 1;
                if byte == BOM[self.seen - 1] && self.pending.len() == self.seen - 1 {
                    self.pending.extend_from_slice(&[byte]);
                    if self.seen == BOM.len() {
                        self.pending.clear();
                    }
                    continue;
                }
                self.seen = BOM.len();
            }
            match byte {
                b'\r' => self.pending.extend_from_slice(b"\n"),
                b'\n' if self.after_cr => {}
                _ => self.pending.extend_from_slice(&[byte]),
            }
            self.after_cr = byte == b'\r';
        }
    }

    /// Moves complete events from `pending` to `ready` until one needs judging, which then
    /// becomes `judging`.
    fn drain_events(&mut self) -> Result<(), BoxError> {
        while self.judging.is_none() {
            let Some((end, sep)) = event_end(&self.pending) else {
                break;
            };
            let block = self.pending.split_to(end + sep).freeze();
            self.take_event(block, end)?;
        }
        if self.pending.len() > MAX_LISTING_BYTES {
            return Err("an SSE event from the upstream is too large to filter".into());
        }
        Ok(())
    }

    /// Passes `block` on, or starts judging it when it answers a listing call. `end` is
    /// where its blank-line separator starts.
    fn take_event(&mut self, block: Bytes, end: usize) -> Result<(), BoxError> {
        if let Some(record) = &self.filter.event_ids
            && let Some(id) = event_id(&block[..end])
        {
            record(id);
        }
        match self.filter.listing_event(&block[..end])? {
            Some(value) => {
                let filter = self.filter.clone();
                self.judging = Some(Box::pin(filter.filter_event(block, end, value)));
            }
            None => self.ready.push_back(block),
        }
        Ok(())
    }
}

/// The `id` an SSE event sets (the last `id:` line; SSE ignores one holding NUL).
fn event_id(event: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(event).ok()?;
    text.split('\n')
        .filter_map(|line| line.strip_prefix("id:"))
        .map(|value| value.strip_prefix(' ').unwrap_or(value))
        .rfind(|value| !value.contains('\0'))
}

/// Position of the end of the first event and the length of its separator (line ends are
/// LF by then: [`SseFilterBody::take_bytes`]).
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    find(buf, b"\n\n").map(|i| (i + 1, 1))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl http_body::Body for SseFilterBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(chunk) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if let Some(judging) = self.judging.as_mut() {
                let filtered = match judging.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(filtered) => filtered,
                };
                self.judging = None;
                self.ready.push_back(filtered?);
                self.drain_events()?;
                continue;
            }
            if self.done {
                if self.pending.is_empty() {
                    return Poll::Ready(None);
                }
                // A last event without its blank line: filter it all the same.
                let rest = self.pending.split().freeze();
                let end = rest.len();
                self.take_event(rest, end)?;
                continue;
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => self.done = true,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.take_bytes(&data);
                        self.drain_events()?;
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.ready.is_empty() && self.pending.is_empty() && self.judging.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::McpTarget;
    use http_body_util::BodyExt as _;

    fn no_admin() -> Allow {
        Arc::new(|calls: Vec<McpCall>| {
            let verdicts = calls
                .iter()
                .map(|call| !matches!(&call.target, McpTarget::Tool(t) if t.starts_with("admin_")))
                .collect();
            Box::pin(async move { verdicts })
        })
    }

    #[tokio::test]
    async fn listings_are_found_by_shape_whatever_their_id_and_unreadable_ones_fail() {
        let filter = ListingFilter::new(no_admin());
        let answer = br#"{"jsonrpc":"2.0","id":"anything","result":{"tools":[{"name":"admin_reset"},{"name":"echo"}]}}"#;
        let out = filter.filter_json(answer).await.expect("filtered");
        assert!(!String::from_utf8_lossy(&out).contains("admin_reset"));
        let plain = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"admin_reset"}]}}"#;
        assert_eq!(filter.filter_json(plain).await.expect("passes"), &plain[..]);
        let lone_surrogate = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"admin_reset\",\"description\":\"\\ud800\"}]}}\n\n";
        let body = SseFilterBody::new(full(Bytes::from(lone_surrogate)), filter);
        assert!(
            body.collect().await.is_err(),
            "fails closed, never unfiltered"
        );
    }

    #[tokio::test]
    async fn sse_listing_is_filtered_across_chunk_boundaries() {
        let filter = ListingFilter::new(no_admin());
        let event = "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"tools\":[{\"name\":\"echo\"},{\"name\":\"admin_reset\"}]}}\n\n";
        let other = "data: {\"jsonrpc\":\"2.0\",\"id\":8,\"result\":{\"tools\":[{\"name\":\"admin_x\"}]}}\n\n";
        let whole = format!("{event}{other}");
        let (a, b) = whole.split_at(40);
        let inner = Chunks(vec![Bytes::from(b.to_owned()), Bytes::from(a.to_owned())]);
        let body = SseFilterBody::new(super::super::body::boxed(inner), filter);
        let out = body.collect().await.expect("body").to_bytes();
        let out = String::from_utf8(out.to_vec()).expect("utf8");
        assert!(out.starts_with("id: 1\ndata: "), "got: {out}");
        assert!(!out.contains("admin_reset"), "got: {out}");
        assert!(
            !out.contains("admin_x"),
            "every listing is filtered, whatever its id: {out}"
        );
    }

    #[tokio::test]
    async fn sse_events_keep_their_order_while_a_listing_is_judged_asynchronously() {
        let slow: Allow = Arc::new(|calls: Vec<McpCall>| {
            Box::pin(async move {
                tokio::task::yield_now().await;
                calls
                    .iter()
                    .map(|c| c.target != McpTarget::Tool("admin_reset".into()))
                    .collect()
            })
        });
        let filter = ListingFilter::new(slow);
        let events = [
            "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"admin_reset\"},{\"name\":\"echo\"}]}}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"resourceTemplates\":[{\"uriTemplate\":\"file:///{x}\"},{\"name\":\"nameless\"}]}}",
        ];
        let inner = Chunks(
            events
                .iter()
                .rev()
                .map(|e| Bytes::from(e.to_string()))
                .collect(),
        );
        let body = SseFilterBody::new(super::super::body::boxed(inner), filter);
        let out = body.collect().await.expect("body").to_bytes();
        let out = String::from_utf8(out.to_vec()).expect("utf8");
        let echo = out.find("echo").expect("echo stays");
        let progress = out.find("progress").expect("other events pass");
        let template = out.find("file:///{x}").expect("allowed template stays");
        assert!(echo < progress && progress < template, "order kept: {out}");
        assert!(!out.contains("admin_reset"), "got: {out}");
        assert!(!out.contains("nameless"), "nameless entries go: {out}");
    }

    /// A body yielding fixed chunks (stored in reverse), one per poll.
    struct Chunks(Vec<Bytes>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop().map(|b| Ok(Frame::data(b))))
        }
    }
}
