//! What the gateway tells operators: Prometheus metrics ([`metrics`]), the
//! audit line written once per decision ([`logging`]).

pub mod logging;
pub mod metrics;

pub use logging::audit;
pub use metrics::Metrics;
