//! The decision engine: a request context goes in; a decision and a trace come out.
//!
//! No HTTP server lives here. The gateway, forward-auth, `eval` and the tower layer all call
//! [`Policy::decide`]: the authentication [`Chain`], then the scope [`Rules`], then the
//! authorizers. Built-in validators ([`api_key`], [`jwt`], [`mtls`]) and Wasm providers all
//! implement the same [`Authenticator`] / [`Authorizer`] traits.

pub mod anonymous;
pub mod api_key;
pub mod chain;
mod glob;
pub mod jwt;
pub mod mtls;
pub mod policy;
mod provider;
pub mod rules;
pub mod trace;
mod wasm_provider;

pub use chain::{Chain, ChainEntry, OnDeny};
pub use glob::glob_match;
pub use policy::{Decision, Outcome, Policy};
pub use provider::{Authenticator, Authorizer, BoxFuture, ProviderError};
pub use rules::{Rule, RuleSettings, Rules};
pub use trace::{Stage, StepOutcome, Trace, TraceStep};
