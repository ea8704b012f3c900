//! One route's policy and the decision function: chain, then scope rules, then authorizers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use super::chain::Chain;
use super::provider::Authorizer;
use super::rules::{Rules, missing_scopes};
use super::trace::{Stage, StepOutcome, Trace};
use crate::context::RequestContext;
use crate::verdict::{Denial, DenialKind, ErrorCode, Identity};

/// What the engine decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the request through as `identity`.
    Allow {
        /// The caller.
        identity: Identity,
        /// The provider (or `a+b` group) that authenticated it.
        provider: String,
    },
    /// Refuse it.
    Deny {
        /// Why, and with what status class.
        denial: Denial,
        /// Every scope the request needs (for the challenge's `scope` attribute).
        required_scopes: Vec<String>,
    },
}

/// A decision and how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// The steps that led to it.
    pub trace: Trace,
}

/// Everything that decides requests on one route.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The authentication chain.
    pub chain: Chain,
    /// The scope rules.
    pub rules: Rules,
    /// Authorizers run after the rules, in order; all must pass.
    pub authorizers: Vec<Arc<dyn Authorizer>>,
    /// How a failing authorizer denies (403 or 503).
    pub on_error: DenialKind,
}

impl Policy {
    /// Decides one request. Never allows unless the chain authenticated the caller, the
    /// caller holds every required scope, and every authorizer passed.
    pub async fn decide(&self, request: &Arc<RequestContext>) -> Outcome {
        self.decide_needing(request, self.rules.required_scopes(request))
            .await
    }

    /// Decides one request that needs `needed` instead of what the rules say: the chain,
    /// then those scopes, then every authorizer. The gateway's own endpoints that a route's
    /// callers use (identity registration) are judged this way.
    pub async fn decide_needing(
        &self,
        request: &Arc<RequestContext>,
        needed: BTreeSet<String>,
    ) -> Outcome {
        let mut trace = Trace::default();
        // The list of needed scopes is only copied out when denying: the allow path stays
        // free of that allocation.
        let deny = |denial: Denial, trace: Trace| Outcome {
            decision: Decision::Deny {
                denial,
                required_scopes: needed.iter().cloned().collect(),
            },
            trace,
        };

        let authenticated = match self.chain.authenticate(request, &mut trace).await {
            Ok(a) => a,
            Err(denial) => return deny(denial, trace),
        };

        let started = Instant::now();
        let missing = missing_scopes(&authenticated.identity, &needed);
        if !missing.is_empty() {
            let reason = format!("missing scope(s): {}", missing.join(" "));
            trace.record(Stage::Scopes, "rules", StepOutcome::Deny, &reason, started);
            return deny(
                Denial::forbidden(ErrorCode::InsufficientScope, reason),
                trace,
            );
        }
        if !self.rules.is_empty() {
            trace.record(Stage::Scopes, "rules", StepOutcome::Allow, "", started);
        }

        for authorizer in &self.authorizers {
            let started = Instant::now();
            let name = authorizer.name();
            match authorizer.authorize(request, &authenticated.identity).await {
                Ok(Ok(())) => {
                    trace.record(Stage::Authorize, name, StepOutcome::Allow, "", started);
                }
                Ok(Err(denial)) => {
                    trace.record(
                        Stage::Authorize,
                        name,
                        StepOutcome::Deny,
                        &denial.reason,
                        started,
                    );
                    return deny(denial, trace);
                }
                Err(error) => {
                    trace.record(
                        Stage::Authorize,
                        name,
                        StepOutcome::Error,
                        &error.0,
                        started,
                    );
                    let denial = Denial {
                        kind: self.on_error,
                        code: Some(if self.on_error == DenialKind::Forbidden {
                            ErrorCode::AccessDenied
                        } else {
                            ErrorCode::TemporarilyUnavailable
                        }),
                        reason: format!("authorizer `{name}` failed"),
                    };
                    return deny(denial, trace);
                }
            }
        }

        Outcome {
            decision: Decision::Allow {
                identity: authenticated.identity,
                provider: authenticated.provider,
            },
            trace,
        }
    }
}
