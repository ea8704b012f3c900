//! Shared support for the integration tests: paths of the guest components built by
//! `build.rs`, and small helpers.

/// Paths of the built guest components, one constant per `.wasm` file.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}
