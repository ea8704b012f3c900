//! The generated bindings for the `portcullis:auth` worlds: the only `bindgen!` calls.
//!
//! `authenticator` generates the shared `types` and `host` interfaces; `authorizer` reuses
//! them through `with`, so both worlds share one set of Rust types and one host impl.

pub(crate) mod authenticator {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "portcullis:auth/authenticator",
        // The cache is a Redis round trip when `[shared]` is on: awaited, not blocking a
        // runtime thread.
        imports: {
            "portcullis:auth/host.cache-get": async | trappable,
            "portcullis:auth/host.cache-set": async | trappable,
            "portcullis:auth/host.cache-add": async | trappable,
            default: trappable,
        },
        exports: { default: async },
        with: {
            "portcullis:auth/types.request": crate::wasm::state::RequestHandle,
        },
    });
}

pub(crate) mod authorizer {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "portcullis:auth/authorizer",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "portcullis:auth/types": super::authenticator::portcullis::auth::types,
            "portcullis:auth/host": super::authenticator::portcullis::auth::host,
        },
    });
}

pub(crate) use authenticator::portcullis::auth::{host, types};
