//! Portcullis: an authentication and authorization gateway for MCP servers and HTTP APIs
//! whose custom auth logic runs as sandboxed WebAssembly components.
//!
//! # Architecture
//!
//! - [`context`]: the [`RequestContext`](context::RequestContext) every provider reads.
//! - [`verdict`]: identities, denials and verdicts.
//! - [`wasm`]: the sandboxed runtime for providers written against `wit/auth.wit`.
//! - [`crypto`] and [`secret`]: host-side crypto offered to providers, and secret handling.
//! - [`mcp`]: what an MCP JSON-RPC body asks for.

pub mod context;
pub mod crypto;
pub mod engine;
pub mod mcp;
pub mod secret;
pub mod verdict;
pub mod wasm;
