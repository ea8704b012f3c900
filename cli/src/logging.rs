//! The log subscriber the binary installs: `RUST_LOG` filters, text or JSON lines. (The
//! library only emits `tracing` events; an embedding service installs its own subscriber.)

use portcullis::config::model::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), in `format`.
/// Returns an error when a subscriber is already installed.
pub fn init_logging(format: LogFormat) -> Result<(), tracing_subscriber::util::TryInitError> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_target(true))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init(),
    }
}

/// Logs to stderr, filtered by `RUST_LOG`, only when `RUST_LOG` is set: for commands whose
/// stdout is their report (`eval`), so a provider's `log` lines can be seen while debugging.
pub fn init_stderr_logging_from_env() {
    use tracing_subscriber::util::SubscriberInitExt as _;
    let Ok(filter) = EnvFilter::try_from_default_env() else {
        return;
    };
    // A second initialisation (tests, embedding) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .finish()
        .try_init();
}
