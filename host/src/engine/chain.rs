//! The authentication chain: providers in order, composite-style.
//!
//! - `allow` stops with an identity; `deny` stops with a denial; `abstain` moves on.
//! - A provider marked `on_deny = "next"` records its denial and lets the chain go on; if
//!   nothing later allows, that denial is the answer. Off by default, because a silent
//!   fall-through is how a misconfiguration becomes a bypass.
//! - An `all` group needs every member to allow (multi-factor). Its identity takes the
//!   subject of the first member, the union of all members' scopes (each factor vouches for
//!   its own grants) and all claims, the first member winning on a repeated claim name. If
//!   every member abstains, so does the group; if some allow and others abstain, the missing
//!   factor denies with 401.
//! - A provider error never allows: it denies with the chain's `on_error` status.
//! - When nobody allows, the answer is 401 without an error code (no credential) — unless
//!   the request carries `Authorization: Bearer …`: a bearer token that no provider takes
//!   (not a JWT, another issuer's) is an invalid token (RFC 6750 §3.1), as Envoy's
//!   `jwt_authn` answers, so the client learns that its token, not its lack of one, is the
//!   problem.

use std::sync::Arc;
use std::time::Instant;

use super::provider::Authenticator;
use super::trace::{Stage, StepOutcome, Trace};
use crate::context::RequestContext;
use crate::verdict::{Denial, DenialKind, ErrorCode, Identity, Verdict};

/// What happens after a provider denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDeny {
    /// Stop with the denial (default).
    #[default]
    Stop,
    /// Record the denial and try the next provider.
    Next,
}

/// One position in the chain.
#[derive(Debug, Clone)]
pub enum ChainEntry {
    /// A single provider.
    One {
        /// The provider.
        provider: Arc<dyn Authenticator>,
        /// What its denial does.
        on_deny: OnDeny,
    },
    /// Every member must allow.
    All {
        /// The members, in order.
        providers: Vec<Arc<dyn Authenticator>>,
    },
}

/// An authenticated caller and the provider (or group) that vouched for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The caller.
    pub identity: Identity,
    /// Name of the provider, or `a+b` for a group.
    pub provider: String,
}

/// The ordered chain.
#[derive(Debug, Clone)]
pub struct Chain {
    entries: Vec<ChainEntry>,
    on_error: DenialKind,
}

impl Chain {
    /// A chain of `entries`; a failing provider denies with `on_error` (401 or 503).
    pub fn new(entries: Vec<ChainEntry>, on_error: DenialKind) -> Self {
        Self { entries, on_error }
    }

    /// Runs the chain. Never returns `Ok` unless a provider (or a whole group) allowed.
    pub async fn authenticate(
        &self,
        request: &Arc<RequestContext>,
        trace: &mut Trace,
    ) -> Result<Authenticated, Denial> {
        let mut deferred: Option<Denial> = None;
        for entry in &self.entries {
            let (outcome, on_deny) = match entry {
                ChainEntry::One { provider, on_deny } => (
                    self.run_one(provider.as_ref(), request, trace).await,
                    *on_deny,
                ),
                ChainEntry::All { providers } => {
                    (self.run_all(providers, request, trace).await, OnDeny::Stop)
                }
            };
            match outcome {
                Step::Allow(authenticated) => return Ok(authenticated),
                Step::Abstain => {}
                Step::Deny(denial) if on_deny == OnDeny::Next => {
                    deferred.get_or_insert(denial);
                }
                Step::Deny(denial) => return Err(denial),
            }
        }
        Err(deferred.unwrap_or_else(|| nobody_accepted(request)))
    }

    async fn run_one(
        &self,
        provider: &dyn Authenticator,
        request: &Arc<RequestContext>,
        trace: &mut Trace,
    ) -> Step {
        let started = Instant::now();
        let name = provider.name();
        match provider.authenticate(request).await {
            Ok(Verdict::Allow(identity)) => {
                if let Some(reason) = scope_problem(&identity, provider.grants_wildcard()) {
                    trace.record(
                        Stage::Authenticate,
                        name,
                        StepOutcome::Deny,
                        &reason,
                        started,
                    );
                    return Step::Deny(Denial::invalid_token(reason));
                }
                // No reason on allow: the decision carries the identity, and formatting one
                // here would cost every allowed request an allocation.
                trace.record(Stage::Authenticate, name, StepOutcome::Allow, "", started);
                Step::Allow(Authenticated {
                    identity,
                    provider: name.to_owned(),
                })
            }
            Ok(Verdict::Deny(denial)) => {
                trace.record(
                    Stage::Authenticate,
                    name,
                    StepOutcome::Deny,
                    &denial.reason,
                    started,
                );
                Step::Deny(denial)
            }
            Ok(Verdict::Abstain) => {
                trace.record(Stage::Authenticate, name, StepOutcome::Abstain, "", started);
                Step::Abstain
            }
            Err(error) => {
                trace.record(
                    Stage::Authenticate,
                    name,
                    StepOutcome::Error,
                    &error.0,
                    started,
                );
                Step::Deny(Denial {
                    kind: self.on_error,
                    code: Some(if self.on_error == DenialKind::Unauthenticated {
                        ErrorCode::InvalidToken
                    } else {
                        ErrorCode::TemporarilyUnavailable
                    }),
                    reason: format!("provider `{name}` failed"),
                })
            }
        }
    }

    async fn run_all(
        &self,
        providers: &[Arc<dyn Authenticator>],
        request: &Arc<RequestContext>,
        trace: &mut Trace,
    ) -> Step {
        let mut allowed: Vec<Authenticated> = Vec::with_capacity(providers.len());
        let mut abstained: Vec<&str> = Vec::new();
        for provider in providers {
            match self.run_one(provider.as_ref(), request, trace).await {
                Step::Allow(a) => allowed.push(a),
                Step::Abstain => abstained.push(provider.name()),
                deny @ Step::Deny(_) => return deny,
            }
        }
        if allowed.is_empty() {
            return Step::Abstain;
        }
        if !abstained.is_empty() {
            return Step::Deny(Denial::invalid_token(format!(
                "missing factor: {}",
                abstained.join(", ")
            )));
        }
        let provider = allowed
            .iter()
            .map(|a| a.provider.as_str())
            .collect::<Vec<_>>()
            .join("+");
        let mut members = allowed.into_iter();
        let Some(first) = members.next() else {
            return Step::Abstain;
        };
        let mut identity = first.identity;
        for member in members {
            for scope in member.identity.scopes {
                if !identity.scopes.contains(&scope) {
                    identity.scopes.push(scope);
                }
            }
            for (key, value) in member.identity.claims {
                if !identity.claims.iter().any(|(k, _)| *k == key) {
                    identity.claims.push((key, value));
                }
            }
        }
        Step::Allow(Authenticated { identity, provider })
    }
}

/// Why an allowed identity's scopes cannot be used, or `None`.
///
/// Scopes reach the upstream space-separated (`x-portcullis-scopes`) and are matched one by
/// one, so a scope holding whitespace (`["mcp:read admin"]` in a JWT `scp` array) would be
/// one scope here and two there; an empty one or one with control characters is no scope at
/// all. The wildcard `*` counts only where the operator wrote it (see
/// [`Authenticator::grants_wildcard`]).
fn scope_problem(identity: &Identity, wildcard_allowed: bool) -> Option<String> {
    identity.scopes.iter().find_map(|scope| {
        if scope.is_empty() || scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some(format!(
                "the scope {scope:?} is empty or holds whitespace or control characters"
            ))
        } else if scope == "*" && !wildcard_allowed {
            Some("the scope `*` is reserved to scopes the operator configures".to_owned())
        } else {
            None
        }
    })
}

/// The denial when every provider abstained.
fn nobody_accepted(request: &RequestContext) -> Denial {
    let bearer = request
        .headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .any(|value| is_bearer(value.as_bytes()));
    if bearer {
        Denial::invalid_token("no provider of this route accepts the bearer token")
    } else {
        Denial::missing_credentials()
    }
}

/// Whether an `Authorization` value uses the `Bearer` scheme (any casing, any whitespace
/// after it, or nothing).
fn is_bearer(value: &[u8]) -> bool {
    const SCHEME: &[u8] = b"bearer";
    value.len() >= SCHEME.len()
        && value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME)
        && value
            .get(SCHEME.len())
            .is_none_or(|b| b.is_ascii_whitespace())
}

enum Step {
    Allow(Authenticated),
    Deny(Denial),
    Abstain,
}

#[cfg(test)]
mod tests {
    use super::{Identity, is_bearer, scope_problem};

    #[test]
    fn scopes_with_whitespace_and_credential_borne_wildcards_are_refused() {
        let with = |scopes: &[&str]| Identity {
            subject: "s".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            claims: vec![],
        };
        for bad in [
            &["mcp:read admin"][..],
            &["a\tb"],
            &[""],
            &["x\u{85}"],
            &["ok", "a\nb"],
        ] {
            assert!(scope_problem(&with(bad), true).is_some(), "{bad:?}");
        }
        assert!(scope_problem(&with(&["*"]), false).is_some());
        assert_eq!(scope_problem(&with(&["*"]), true), None);
        assert_eq!(scope_problem(&with(&["mcp:read", "admin"]), false), None);
    }

    #[test]
    fn bearer_scheme_is_recognised_in_any_casing_and_only_as_a_whole_word() {
        for value in ["Bearer x", "bearer x", "BEARER\tx", "Bearer", "Bearer  x"] {
            assert!(is_bearer(value.as_bytes()), "{value}");
        }
        for value in ["Basic x", "Bearerx", "Bear x", ""] {
            assert!(!is_bearer(value.as_bytes()), "{value}");
        }
    }
}
