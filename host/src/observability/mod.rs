//! What the gateway tells operators: Prometheus metrics ([`metrics`]), log set-up and the
//! audit line written once per decision ([`logging`]).

pub mod logging;
pub mod metrics;

pub use logging::{audit, init_logging, init_stderr_logging_from_env};
pub use metrics::Metrics;
