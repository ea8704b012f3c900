//! The Portcullis provider SDK: plain-Rust types and traits over the WIT contract
//! (`wit/auth.wit`), export macros that turn a type into a component, and a test kit that runs
//! the same provider natively.
//!
//! # Writing a provider
//!
//! ```
//! use portcullis_sdk::{Authenticator, Host, Identity, Request, Verdict};
//!
//! #[derive(serde::Deserialize)]
//! pub struct Config {
//!     header: String,
//! }
//!
//! pub struct TeamHeader {
//!     header: String,
//! }
//!
//! impl Authenticator for TeamHeader {
//!     type Config = Config;
//!
//!     fn new(config: Config, _host: &dyn Host) -> Result<Self, String> {
//!         Ok(Self { header: config.header })
//!     }
//!
//!     fn authenticate(&self, req: &dyn Request, _host: &dyn Host) -> Verdict {
//!         match req.header(&self.header) {
//!             Some(team) => Identity::new(team).with_scope("read").into(),
//!             None => Verdict::Abstain,
//!         }
//!     }
//! }
//!
//! portcullis_sdk::export_authenticator!(TeamHeader);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`: the crate's `cdylib` is the
//! component. On any other target the export macro expands to nothing, so the same crate
//! compiles and unit-tests natively with [`testing::FakeRequest`] and [`testing::FakeHost`].
//!
//! # How the export macros work
//!
//! A component must carry the type information of exactly one world, so this crate never
//! generates bindings itself. Its build script reads `wit/auth.wit` and writes, for each world,
//! a hidden `macro_rules!` whose body is `wit_bindgen::generate!` with the contract inlined.
//! [`export_authenticator!`] and [`export_authorizer!`] call that macro inside a private module
//! of the provider crate, then add the glue: `configure` parses the JSON config into
//! `Config` and keeps the instance; each call wraps the WIT `request` in a [`Request`], the
//! imports in a [`Host`], and converts the answer back.
//!
//! The generated code reaches wit-bindgen's runtime as `::portcullis_sdk::__private`, so a
//! provider must depend on this crate under its own name (no `package = …` rename). The
//! generated module is marked `#[expect(unsafe_code)]` (the canonical ABI needs it), so
//! provider crates can keep `unsafe_code = "deny"`.

mod encoding;
mod export;
mod host;
mod provider;
mod request;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod types;

pub use encoding::{base64_decode, base64url_decode, hex_decode, hex_encode};
pub use host::{Host, LogLevel, PublicKey, SignatureAlgorithm};
pub use provider::{
    Authenticator, Authorizer, NoConfig, configure_authenticator, configure_authorizer,
    parse_config,
};
pub use request::Request;
pub use types::{ClientCert, Denial, Identity, McpCall, McpMessage, McpTarget, Verdict};

// The WIT contract, embedded by build.rs in one bindings macro per world.
include!(concat!(env!("OUT_DIR"), "/wit_bindings.rs"));

/// What the export macros expand to needs; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use wit_bindgen;

    use crate::Denial;

    /// The answer when the host calls a provider before `configure` succeeded. It breaks the
    /// contract, so the status is neither 401 nor 403: the host treats it as a provider error.
    pub fn not_configured() -> Denial {
        Denial::new(
            500,
            "server_error",
            "provider called before configure succeeded",
        )
    }
}
