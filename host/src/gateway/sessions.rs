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
//!
//! Bindings live in the [`super::Gateway`], so they survive reloads. The table is bounded
//! ([`MAX_SESSIONS`]); when it is full, the binding idle the longest is dropped, and that
//! session's client is asked (by the 404) to start again, which is safe.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Most sessions remembered at once.
pub(crate) const MAX_SESSIONS: usize = 100_000;

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

/// The session table.
#[derive(Debug, Default)]
pub(crate) struct SessionBindings {
    bindings: Mutex<HashMap<String, Binding>>,
}

impl SessionBindings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Binding>> {
        // A poisoned map is still a valid map of bindings.
        self.bindings.lock().unwrap_or_else(|p| p.into_inner())
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
