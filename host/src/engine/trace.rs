//! The decision trace: which provider said what, why, and how long it took.
//!
//! Reasons come from providers' denials and errors, which by contract never contain a
//! credential; the trace itself never records header values.

use std::fmt;
use std::time::Instant;

/// Which part of the decision a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The authentication chain.
    Authenticate,
    /// The scope rules.
    Scopes,
    /// A Wasm (or other) authorizer.
    Authorize,
}

/// What one step concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Allowed (or, for scopes and authorizers, passed).
    Allow,
    /// Denied.
    Deny,
    /// Had nothing to say.
    Abstain,
    /// Failed; treated as a denial.
    Error,
}

impl StepOutcome {
    /// Lower-case label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Abstain => "abstain",
            Self::Error => "error",
        }
    }
}

/// One provider's contribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    /// Stage.
    pub stage: Stage,
    /// Provider name (or `rules` for the scope rules).
    pub provider: String,
    /// Outcome.
    pub outcome: StepOutcome,
    /// Why, free of credentials.
    pub reason: String,
    /// Time spent, in microseconds.
    pub micros: u64,
}

/// All steps of one decision, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// The steps.
    pub steps: Vec<TraceStep>,
}

impl Trace {
    /// Records a step that started at `started`.
    pub fn record(
        &mut self,
        stage: Stage,
        provider: &str,
        outcome: StepOutcome,
        reason: impl Into<String>,
        started: Instant,
    ) {
        self.steps.push(TraceStep {
            stage,
            provider: provider.to_owned(),
            outcome,
            reason: reason.into(),
            micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        });
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            let stage = match step.stage {
                Stage::Authenticate => "authn",
                Stage::Scopes => "scopes",
                Stage::Authorize => "authz",
            };
            writeln!(
                f,
                "{stage:<7} {:<20} {:<8} {:>7}µs  {}",
                step.provider,
                step.outcome.as_str(),
                step.micros,
                step.reason
            )?;
        }
        Ok(())
    }
}
