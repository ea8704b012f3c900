//! A test kit that runs provider logic natively, without a Wasm runtime: a [`FakeRequest`]
//! built in one expression and a [`FakeHost`] with real crypto (`ring`), an in-memory cache
//! on a settable clock, granted secrets and captured log lines.
//!
//! ```
//! use portcullis_sdk::testing::{FakeHost, FakeRequest};
//! use portcullis_sdk::{Host, Request};
//!
//! let host = FakeHost::new().with_secret("keys", "k1:hunter2");
//! let req = FakeRequest::post("/mcp").header("X-Team", "blue");
//! let req: &dyn Request = &req;
//! assert_eq!(req.header("x-team").as_deref(), Some("blue"));
//! assert_eq!(host.secret("keys").as_deref(), Some("k1:hunter2"));
//! ```
//!
//! Native only: a component gets its capabilities from the host.

mod host;
mod request;
mod signature;

pub use host::FakeHost;
pub use request::FakeRequest;
