//! The integration test binary. Each module drives the real thing: real wasmtime instances
//! of real components, real HTTP servers on port 0.

mod api_key;
mod attack_headers;
mod attack_jwt;
mod attack_mcp;
mod attack_plugins;
mod attack_review13;
mod attack_review13b;
mod attack_review13c;
mod attack_review14;
mod chain;
mod config_ui;
mod differential;
mod embed;
mod faults;
mod gateway_cli;
mod gateway_forward_auth;
mod gateway_harness;
mod gateway_jwt;
mod gateway_limits;
mod gateway_mcp;
mod gateway_oauth;
mod gateway_tls;
mod gateway_upstream;
mod gateway_wasm;
mod jwks_faults;
mod jwt;
mod oauth_server;
mod reload;
mod scaffold;
mod soak;
mod wasm_examples;
mod wasm_languages;
mod wasm_loading;
mod wasm_sandbox;
