//! The integration test binary. Each module drives the real thing: real wasmtime instances
//! of real components, real HTTP servers on port 0.

mod wasm_examples;
mod wasm_loading;
mod wasm_sandbox;
