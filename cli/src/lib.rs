//! The `portcullis` binary's own code, kept out of the library so that a service embedding
//! [`portcullis`] compiles no argument parser, no allocator choice and no MCP server:
//!
//! - [`commands`]: `serve` (default), `check`, `eval`, `hash-key` and `new`, each a function;
//!   `main.rs` only parses arguments and maps the result to an exit code.
//! - [`keys`]: API keys of an `api_key` provider (`keys add|list|revoke`).
//! - [`clients`] and [`signing_key`]: the authorization server's OAuth clients and
//!   signing keys (`clients add|list|revoke`, `signing-key new`).
//! - [`demo`]: the embedded default (a demo MCP server and its configuration).
//! - [`scaffold`]: `portcullis new`, a provider crate from the embedded templates.
//! - [`logging`]: the log subscriber (text or JSON lines).

pub mod clients;
pub mod commands;
pub mod demo;
pub mod identity;
pub mod keys;
pub mod logging;
pub mod scaffold;
pub mod signing_key;

pub use commands::*;
