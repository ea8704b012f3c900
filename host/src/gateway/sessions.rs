//! MCP sessions bound to the caller that opened them.
//!
//! An upstream issues `Mcp-Session-Id` in its answer to `initialize`; from then on the
//! session id is all it knows of the client. The MCP specification asks servers to bind
//! sessions to the user, since a session id that leaks (a log, a shared proxy) would
//! otherwise let anyone with their own valid credential act inside another caller's
//! session. Most upstreams do not, so the gateway does it for them:
//!
//! - A session id that an upstream hands out is recorded with the route and the caller
//!   (provider and subject) whose request opened it.
//! - A request that presents a session id is let through only when the id is recorded for
//!   the same route and caller. Any other (another caller's, or one this gateway never saw:
//!   issued before a restart, by another replica, or made up) is answered 404, the status
//!   the MCP transport defines for a session that no longer exists, so the client opens a
//!   new one; it does not tell a stolen id from an unknown one.
//! - A successful `DELETE` forgets the session.
//! - SSE event ids are handles on a stream too: an upstream whose event store is shared by
//!   every session replays, for `Last-Event-ID`, the stream that event belongs to. So the
//!   gateway records the id of every event it passes to a caller, and a `Last-Event-ID` is
//!   let through only to the caller that was sent that event; any other (or one it never
//!   passed on, or has forgotten: [`MAX_EVENTS`]) is answered 404, and the client starts a
//!   new stream.
//!
//! The gateway's proxy, its forward-auth check and the tower layer all check sessions
//! ([`SessionBindings::presented`]); the proxy and the layer, which see the answers, also
//! record them ([`SessionBindings::track`]). The forward-auth check never sees an answer,
//! so a session opened through the proxy in front of it is unknown to it and refused: MCP
//! upstreams with sessions are served through the gateway's own proxy (README).
//!
//! Bindings live in the [`super::Gateway`] (and the tower layer), so they survive reloads.
//! The table is bounded
//! ([`MAX_SESSIONS`]); when it is full, the binding idle the longest is dropped, and that
//! session's client is asked (by the 404) to start again, which is safe.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher as _, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::request::Parts;
use http::{Method, Response};

use super::admission::Admitted;
use super::body::Body;
use super::listing::EventIds;
use super::rejection::Rejection;
use super::request::session_id;

/// Most sessions remembered at once.
pub(crate) const MAX_SESSIONS: usize = 100_000;

/// Most SSE event ids remembered at once (the oldest is forgotten first).
pub(crate) const MAX_EVENTS: usize = 100_000;

/// Who opened a session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    route: String,
    provider: String,
    subject: String,
}

#[derive(Debug)]
struct Binding {
    owner: Owner,
    last_used: Instant,
}

/// The session table, and the SSE event ids passed to each caller.
#[derive(Debug, Default)]
pub(crate) struct SessionBindings {
    bindings: Mutex<HashMap<String, Binding>>,
    /// Event id → the caller it was sent to ([`SessionBindings::caller_key`]), oldest first.
    events: Mutex<EventTable>,
    /// Keys [`SessionBindings::caller_key`], so that no caller can aim at another's key.
    hasher: RandomState,
}

#[derive(Debug, Default)]
struct EventTable {
    owner: HashMap<String, u64>,
    order: VecDeque<String>,
}

impl SessionBindings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Binding>> {
        // A poisoned map is still a valid map of bindings.
        self.bindings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `Mcp-Session-Id` that an admitted request on an MCP route presents, when it is a
    /// session this caller opened on this route; `Ok(None)` on other routes and without one.
    /// Otherwise the complete refusal, audited: 400 for a repeated or unreadable id, 404 for
    /// another caller's or an unknown one. Checked after admission, so that only an
    /// authenticated caller can own a session and the 404 tells an anonymous prober nothing.
    pub(crate) fn presented(
        &self,
        admitted: &Admitted<'_>,
        request: &Parts,
    ) -> Result<Option<String>, Box<Response<Body>>> {
        let route = admitted.route;
        if !route.mcp {
            return Ok(None);
        }
        if let Some(refusal) = self.foreign_resumption(admitted, request) {
            return Err(Box::new(refusal));
        }
        let session = match session_id(&request.headers) {
            Ok(session) => session,
            Err(rejection) => {
                return Err(Box::new(
                    admitted.refuse(rejection, "unreadable Mcp-Session-Id"),
                ));
            }
        };
        match session {
            Some(session)
                if !self.owned_by(
                    session,
                    route.label(),
                    &admitted.provider,
                    &admitted.identity.subject,
                ) =>
            {
                Err(Box::new(admitted.refuse(
                    Rejection::SessionNotFound,
                    "MCP session not opened by this caller",
                )))
            }
            session => Ok(session.map(str::to_owned)),
        }
    }

    /// Records what a successful answer to an admitted request did to sessions: binds a
    /// session id it handed out to the caller, and forgets the `presented` session a `DELETE`
    /// ended.
    pub(crate) fn track(
        &self,
        admitted: &Admitted<'_>,
        method: &Method,
        presented: Option<&str>,
        response: &Response<Body>,
    ) {
        let route = admitted.route;
        if !route.mcp || !response.status().is_success() {
            return;
        }
        if method == Method::DELETE {
            if let Some(session) = presented {
                self.forget(session);
            }
            return;
        }
        let issued = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok());
        if let Some(issued) = issued
            && Some(issued) != presented
        {
            self.bind(
                issued,
                route.label(),
                &admitted.provider,
                &admitted.identity.subject,
            );
        }
    }

    /// The refusal for a `Last-Event-ID` that names an event this caller was not sent.
    fn foreign_resumption(
        &self,
        admitted: &Admitted<'_>,
        request: &Parts,
    ) -> Option<Response<Body>> {
        let mut ids = request.headers.get_all("last-event-id").iter();
        let first = ids.next()?;
        let caller = self.caller_key(admitted);
        let known = ids.next().is_none()
            && first
                .to_str()
                .is_ok_and(|id| self.lock_events().owner.get(id) == Some(&caller));
        (!known).then(|| {
            admitted.refuse(
                Rejection::SessionNotFound,
                "Last-Event-ID of a stream not sent to this caller",
            )
        })
    }

    /// A recorder of the SSE event ids passed to the caller of `admitted`.
    pub(crate) fn event_recorder(self: &Arc<Self>, admitted: &Admitted<'_>) -> EventIds {
        let caller = self.caller_key(admitted);
        let table = Arc::clone(self);
        Arc::new(move |id: &str| table.record_event(id, caller))
    }

    fn record_event(&self, id: &str, caller: u64) {
        let mut events = self.lock_events();
        // The first receiver keeps an id: an upstream that sends one id to two callers must
        // not let the second resume the first one's stream.
        if events.owner.contains_key(id) {
            return;
        }
        if events.order.len() >= MAX_EVENTS
            && let Some(oldest) = events.order.pop_front()
        {
            events.owner.remove(&oldest);
        }
        events.owner.insert(id.to_owned(), caller);
        events.order.push_back(id.to_owned());
    }

    /// The caller (route, provider, subject), as a keyed hash.
    fn caller_key(&self, admitted: &Admitted<'_>) -> u64 {
        self.hasher.hash_one((
            admitted.route.label(),
            &admitted.provider,
            &admitted.identity.subject,
        ))
    }

    fn lock_events(&self) -> std::sync::MutexGuard<'_, EventTable> {
        // A poisoned table is still a valid table.
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `session` belongs to this caller on this route (and marks it used).
    pub(crate) fn owned_by(
        &self,
        session: &str,
        route: &str,
        provider: &str,
        subject: &str,
    ) -> bool {
        let mut bindings = self.lock();
        match bindings.get_mut(session) {
            Some(binding)
                if binding.owner.route == route
                    && binding.owner.provider == provider
                    && binding.owner.subject == subject =>
            {
                binding.last_used = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Records that this caller opened `session` on this route. A session id already bound
    /// to someone else keeps its owner: an upstream that hands the same id to two callers
    /// must not make the second one its owner.
    pub(crate) fn bind(&self, session: &str, route: &str, provider: &str, subject: &str) {
        let mut bindings = self.lock();
        if bindings.contains_key(session) {
            return;
        }
        if bindings.len() >= MAX_SESSIONS
            && let Some(oldest) = bindings
                .iter()
                .min_by_key(|(_, b)| b.last_used)
                .map(|(id, _)| id.clone())
        {
            bindings.remove(&oldest);
        }
        bindings.insert(
            session.to_owned(),
            Binding {
                owner: Owner {
                    route: route.to_owned(),
                    provider: provider.to_owned(),
                    subject: subject.to_owned(),
                },
                last_used: Instant::now(),
            },
        );
    }

    /// Forgets `session`.
    pub(crate) fn forget(&self, session: &str) {
        self.lock().remove(session);
    }

    /// Whether no session is remembered.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_belongs_only_to_the_caller_and_route_that_opened_it() {
        let sessions = SessionBindings::default();
        sessions.bind("s1", "/mcp", "keys", "alice");
        assert!(sessions.owned_by("s1", "/mcp", "keys", "alice"));
        assert!(!sessions.owned_by("s1", "/mcp", "keys", "mallory"));
        assert!(!sessions.owned_by("s1", "/mcp", "jwt", "alice"));
        assert!(!sessions.owned_by("s1", "/other", "keys", "alice"));
        assert!(!sessions.owned_by("unknown", "/mcp", "keys", "alice"));
        sessions.bind("s1", "/mcp", "keys", "mallory");
        assert!(
            !sessions.owned_by("s1", "/mcp", "keys", "mallory"),
            "a second bind does not take the session over"
        );
        sessions.forget("s1");
        assert!(!sessions.owned_by("s1", "/mcp", "keys", "alice"));
        assert!(sessions.is_empty());
    }
}
