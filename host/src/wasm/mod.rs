//! The Wasm provider runtime: loads components built against the `portcullis:auth` WIT,
//! runs them sandboxed, and maps their answers to the engine's types.
//!
//! - [`WasmRuntime`] owns the wasmtime engine (component model, pooling allocator, epoch
//!   interruption), the linker and the compiled-artifact cache; it turns a `.wasm` file into a
//!   [`LoadedComponent`] (compiled once, type-checked against its world, pre-instantiated).
//! - [`WasmProvider`] is a loaded component plus the operator's config, grants and limits;
//!   it owns the instances and makes the calls.
//!
//! The sandbox: a guest sees the request through a resource handle, the `host` capability
//! interface filtered by its grants, and a WASI that has no files, environment, arguments or
//! network. Every call, and every instance creation, has a wall-clock deadline that holds
//! whatever the guest does: epoch interruption (checked every millisecond, yielding to the
//! async executor in between so a spinning guest cannot starve other requests) for a guest
//! that computes, and a timer on the whole call for one that waits in a host call (a WASI
//! clock `poll`); see [`WasmProvider`]. Each provider also has a cap on calls at once, a
//! memory cap, a bounded stack and a bounded host-side cache. Any failure is a
//! [`CallError`], which the chain turns into a denial.

mod artifacts;
mod bindings;
mod error;
mod kv;
mod limits;
mod provider;
mod runtime;
mod state;

pub use artifacts::{ComponentSource, content_hash};
pub use error::{CallError, LoadError};
pub use kv::{CacheLimits, ENTRY_OVERHEAD, ProviderCache};
pub use limits::Limits;
pub use provider::{InstanceMode, WasmProvider};
pub use runtime::{EPOCH_TICK, LoadedComponent, ProviderKind, RuntimeConfig, WasmRuntime};
pub use state::Grants;
