//! Errors of the Wasm provider runtime. Every one of them denies the request it happened in.

use std::path::PathBuf;
use std::time::Duration;

/// A component that could not be turned into a provider.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read component `{path}`: {source}")]
    Read {
        /// The component file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a valid component (or not a component at all).
    #[error(
        "`{name}` is not a valid WebAssembly component ({reason}); build it with \
         `cargo build --target wasm32-wasip2` against the portcullis:auth WIT"
    )]
    Compile {
        /// Provider or file name.
        name: String,
        /// The compiler's message.
        reason: String,
    },
    /// The component exports neither world's functions.
    #[error(
        "`{name}` targets the wrong world: it exports {exports:?}, but a provider must export \
         `authenticate` (world portcullis:auth/authenticator) or `authorize` \
         (world portcullis:auth/authorizer)"
    )]
    WrongWorld {
        /// Provider or file name.
        name: String,
        /// What it does export.
        exports: Vec<String>,
    },
    /// The component's imports or exports do not match what the host provides.
    #[error(
        "`{name}` cannot be linked: {reason}. Providers may import only portcullis:auth \
         (types, host) and WASI; rebuild it against the WIT shipped with this gateway"
    )]
    Link {
        /// Provider or file name.
        name: String,
        /// The linker's message.
        reason: String,
    },
    /// `configure` returned an error or the first instance failed to start.
    #[error("`{name}` refused its configuration: {reason}")]
    Configure {
        /// Provider name.
        name: String,
        /// The provider's own message, or the trap.
        reason: String,
    },
    /// The operator asked for a world this component does not implement.
    #[error("`{name}` is an {actual} but is used as an {expected}")]
    KindMismatch {
        /// Provider name.
        name: String,
        /// Kind required by the config.
        expected: &'static str,
        /// Kind the component implements.
        actual: &'static str,
    },
}

/// A call into a provider that did not produce a usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The call ran past its deadline and was interrupted.
    #[error("provider `{provider}` timed out after {timeout:?}")]
    Timeout {
        /// Provider name.
        provider: String,
        /// The deadline it had.
        timeout: Duration,
    },
    /// The guest trapped: panic, out-of-bounds, memory cap, stack overflow, …
    #[error("provider `{provider}` trapped: {reason}")]
    Trap {
        /// Provider name.
        provider: String,
        /// The trap message.
        reason: String,
    },
    /// The guest returned something outside the contract or over the limits.
    #[error("provider `{provider}` returned an invalid result: {reason}")]
    BadOutput {
        /// Provider name.
        provider: String,
        /// What was wrong.
        reason: String,
    },
    /// No instance could be created (e.g. the instance pool is exhausted).
    #[error("provider `{provider}` has no instance available: {reason}")]
    Unavailable {
        /// Provider name.
        provider: String,
        /// Why.
        reason: String,
    },
}

impl CallError {
    /// A short machine-friendly label for metrics: `timeout`, `trap`, `bad_output`,
    /// `unavailable`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::Trap { .. } => "trap",
            Self::BadOutput { .. } => "bad_output",
            Self::Unavailable { .. } => "unavailable",
        }
    }
}
