//! OAuth clients as written by operators: the `[[clients]]` entries of a clients file (and
//! of `[[authorization_server.clients]]` in the main config), their shape, and the file's
//! safe rewrite for `portcullis clients add|revoke`.
//!
//! ```toml
//! [[clients]]
//! id = "agent-1"
//! secret_hash = "sha256:…"          # client_secret_basic / client_secret_post
//! # jwks = '{"keys":[…]}' or jwks_file = "agent-1.jwks.json"   # private_key_jwt
//! scopes = ["mcp:read", "mcp:tools"]
//! resources = ["/mcp"]               # route paths; default: every route
//! token_lifetime_secs = 600          # default 600
//! grants = ["client_credentials"]    # and/or "urn:ietf:params:oauth:grant-type:token-exchange"
//! impersonation = false              # token exchange without an actor token
//! introspection = false              # may call the introspection endpoint
//! revoked = false                    # `portcullis clients revoke` sets it
//! ```

use serde::{Deserialize, Serialize};

/// The RFC 8693 grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The client-credentials grant type.
pub const CLIENT_CREDENTIALS: &str = "client_credentials";

/// A whole clients file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsFile {
    /// `[[clients]]`.
    #[serde(default)]
    pub clients: Vec<RawClient>,
}

/// One `[[clients]]` entry, unchecked.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    /// The `client_id`: a plain label (letters, digits, `-`, `_`, `.`).
    pub id: String,
    /// `sha256:<64 hex>` of the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// Inline JWKS (JSON) of the client's public keys, for `private_key_jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// A JWKS file, for `private_key_jwt` (relative to the file that names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    /// Scopes the client may be given.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Route paths whose resource the client may get tokens for; empty: every route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Lifetime of its tokens, seconds (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_lifetime_secs: Option<u64>,
    /// Grant types it may use (default `["client_credentials"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<String>>,
    /// Whether it may exchange a subject token without an actor token (impersonation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub impersonation: bool,
    /// Whether it may call the introspection endpoint.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub introspection: bool,
    /// Revoked: its secret and keys are refused and the tokens issued to it stop working.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}
