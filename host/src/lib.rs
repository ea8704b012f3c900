//! Portcullis: an authentication and authorization gateway for MCP servers and HTTP APIs
//! whose custom auth logic runs as sandboxed WebAssembly components.
//!
//! # Architecture
//!
//! - [`context`]: the [`RequestContext`](context::RequestContext) every provider reads.
//! - [`verdict`]: identities, denials and verdicts.
//! - [`wasm`]: the sandboxed runtime for providers written against `wit/auth.wit`.
//! - [`secret`]: secret references and their resolution (host-side crypto for providers
//!   is crate-private).
//! - [`mcp`]: what an MCP JSON-RPC body asks for.
//! - `normal_form` (internal): the one spelling of a path or resource URI that rules and upstreams
//!   read alike.
//! - [`config`]: the TOML configuration, validated, and the providers built from it.
//! - [`gateway`]: the HTTP front end — listener, reverse proxy, OAuth resource-server
//!   challenges and metadata, forward-auth — over the engine.
//! - [`embed`]: the engine as a `tower` layer in front of a Rust service's own handlers,
//!   deciding through the gateway's own admission path.
//! - [`observability`]: metrics and the audit line (untrusted text in it escaped by the
//!   internal `log_text`).
//! - [`load`]: the composition root, from a config to a site that serves; every way of
//!   starting the engine (the binary, reloads, the tower layer, tests) goes through it.
//! - [`reload`]: hot reload of the config file and the Wasm components it names.
//! - [`shared`]: state shared by a fleet of replicas on Redis (`[shared]`), off by default.
//!
//! The `portcullis` binary (its commands, the embedded demo, the provider scaffold) is the
//! `portcullis-cli` crate, so a service embedding this library compiles none of it.

#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod context;
pub(crate) mod crypto;
pub mod embed;
pub mod engine;
pub mod gateway;
pub mod identity;
pub mod load;
pub mod log_text;
pub mod mcp;
pub(crate) mod normal_form;
pub mod oauth;
pub mod observability;
pub mod reload;
pub mod secret;
pub mod shared;
pub mod upstream;
pub mod verdict;
pub mod wasm;
