//! Stage one: the config file's shape as serde types. Unknown keys are refused everywhere
//! (`deny_unknown_fields`), so a typo is an error rather than a silently ignored setting.
//! Nothing here checks values; [`super::validate`] does.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::engine::RuleSettings;
use crate::engine::anonymous::AnonymousSettings;
use crate::engine::api_key::ApiKeySettings;
use crate::engine::jwt::JwtSettings;
use crate::engine::mtls::MtlsSettings;
use crate::identity::RawIdentity;
use crate::oauth::RawAuthorizationServer;
use crate::secret::{RawVault, SecretRef};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`.
    #[serde(default)]
    pub server: RawServer,
    /// `[[routes]]`.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// `[providers.NAME]`.
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    /// `[[rules]]`: rules for every route.
    #[serde(default)]
    pub rules: Vec<RuleSettings>,
    /// `[[rate_limits]]`.
    #[serde(default)]
    pub rate_limits: Vec<crate::gateway::rate_limit::RateLimitSettings>,
    /// `[resource]`: the RFC 9728 metadata.
    #[serde(default)]
    pub resource: RawResource,
    /// `[authorization_server]`: the OAuth authorization server, off when absent.
    #[serde(default)]
    pub authorization_server: Option<RawAuthorizationServer>,
    /// `[identity]`: the agent-identity CA, off when absent.
    #[serde(default)]
    pub identity: Option<RawIdentity>,
    /// `[vault]`: the Vault (or OpenBao) server `vault://` references read from.
    #[serde(default)]
    pub vault: Option<RawVault>,
    /// `[shared]`: state shared by replicas on Redis, off when absent.
    #[serde(default)]
    pub shared: Option<crate::shared::RawShared>,
}

/// `[server.cors]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Request headers a browser may send, besides the MCP and credential headers.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers a browser script may read, besides `Mcp-Session-Id`,
    /// `Mcp-Protocol-Version` and `WWW-Authenticate`.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight answer (default 600).
    pub max_age_secs: Option<u64>,
}

/// `[server]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// `host:port` to listen on (default `127.0.0.1:8080`).
    pub listen: Option<String>,
    /// Canonical public URL; the resource identifier of RFC 9728.
    pub public_url: Option<String>,
    /// `[server.tls]`.
    pub tls: Option<RawTls>,
    /// A second, TLS listener; with it `listen` stays plain HTTP.
    pub tls_listen: Option<String>,
    /// CIDRs whose `X-Forwarded-*` headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Browser origins allowed to call; absent means the default (see the gateway docs).
    pub allowed_origins: Option<Vec<String>>,
    /// `Host` values accepted (DNS-rebinding protection); default on a loopback listener:
    /// loopback names and the public URL's host.
    pub allowed_hosts: Option<Vec<String>>,
    /// CORS for browser clients.
    pub cors: Option<RawCors>,
    /// `text` (default) or `json`.
    pub log_format: Option<String>,
    /// Directory of `.wasm` providers (relative to the config file).
    pub providers_dir: Option<String>,
    /// Path of the forward-auth endpoint (default `/check` when `forward_auth_proxy` is set).
    pub forward_auth_path: Option<String>,
    /// The proxy that calls the forward-auth endpoint: `nginx`, `traefik`, `caddy` or `envoy`.
    /// Turns forward-auth on, and fixes which headers describe the original request.
    pub forward_auth_proxy: Option<String>,
    /// CIDRs whose callers get the full `/readyz` report (default loopback); everyone else
    /// gets `{"ready":true}`.
    pub readyz_detail_networks: Option<Vec<String>>,
    /// Largest MCP request body buffered for the engine, in bytes (default 1 MiB).
    pub max_body_bytes: Option<u64>,
    /// Seconds that shutdown waits for in-flight requests (default 30).
    pub shutdown_grace_secs: Option<u64>,
    /// Seconds to finish the TLS handshake and send a request head (default 10).
    pub header_timeout_secs: Option<u64>,
    /// Seconds to send a request body the gateway buffers (default 30).
    pub body_timeout_secs: Option<u64>,
    /// Seconds a connection may stay open with no request in flight (default 60).
    pub idle_timeout_secs: Option<u64>,
    /// Connections served at once; beyond it, accepting pauses (default 10 000).
    pub max_connections: Option<u64>,
    /// Largest request head (HTTP/1) or header list (HTTP/2), in bytes (default 32 KiB).
    pub max_header_bytes: Option<u64>,
    /// Streams one HTTP/2 connection may have open at once (default 100).
    pub http2_max_concurrent_streams: Option<u64>,
    /// Seconds between HTTP/2 keep-alive pings on a quiet connection (default 30; 0: off).
    pub http2_keepalive_secs: Option<u64>,
}

/// `[server.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// PEM CA bundle for client certificates; turns on mTLS.
    pub client_ca: Option<String>,
    /// `optional` (default) or `required`.
    pub client_auth: Option<String>,
    /// PEM CRLs for the CAs of `client_ca` (read at start).
    #[serde(default)]
    pub crls: Vec<String>,
}

/// `[[routes]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Path prefix, segment-wise.
    pub path: String,
    /// Upstream URL; the route's prefix is replaced by its path. Required by the gateway;
    /// an embedded layer ([`crate::embed`]) serves its own handlers and ignores it.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Authentication chain: provider names, or `{ all = [..] }` groups.
    #[serde(default)]
    pub chain: Vec<RawChainEntry>,
    /// Wasm authorizers run after the scope rules.
    #[serde(default)]
    pub authorizers: Vec<String>,
    /// Rules for this route only, added to the global ones.
    #[serde(default)]
    pub rules: Vec<RuleSettings>,
    /// More request headers to remove before the upstream.
    #[serde(default)]
    pub strip_headers: Vec<String>,
    /// Pass the credential headers to the upstream (off by default: no token passthrough).
    #[serde(default)]
    pub forward_auth_headers: bool,
    /// Whether bodies are MCP JSON-RPC (default true).
    pub mcp: Option<bool>,
    /// Whether the forward-auth endpoint judges this route (default true when forward-auth is
    /// on); `false` leaves it to the gateway as reverse proxy.
    pub forward_auth: Option<bool>,
    /// `unavailable` (default, 503) or `deny` (401/403) when a provider fails.
    pub on_error: Option<String>,
    /// Upstream connect timeout, ms (default 5000).
    pub connect_timeout_ms: Option<u64>,
    /// Time to the upstream's response headers, ms (default 30000). Streams have no total
    /// timeout.
    pub response_timeout_ms: Option<u64>,
    /// TLS to an `https://` upstream.
    pub upstream_tls: Option<crate::upstream::tls::UpstreamTlsSettings>,
    /// The credential the gateway presents to the upstream.
    pub upstream_auth: Option<crate::upstream::settings::UpstreamAuthSettings>,
}

/// One chain position.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a provider name, or a group `{ all = [\"a\", \"b\"] }`"
)]
pub enum RawChainEntry {
    /// A provider name.
    One(String),
    /// A group whose members must all allow.
    All(RawAll),
}

/// `{ all = ["a", "b"] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAll {
    /// Members.
    pub all: Vec<String>,
}

/// `[providers.NAME]`: `type`, the shared `on_deny`, and the type's own settings.
#[derive(Debug, Clone)]
pub struct RawProvider {
    /// `stop` (default) or `next`.
    pub on_deny: Option<String>,
    /// The settings for this type.
    pub settings: RawProviderSettings,
}

/// The type-specific part of a provider table, tagged by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RawProviderSettings {
    /// Allows everyone as one identity (an explicit public route).
    Anonymous(AnonymousSettings),
    /// Built-in API keys.
    ApiKey(ApiKeySettings),
    /// Built-in JWT validation.
    Jwt(JwtSettings),
    /// Built-in client-certificate identity.
    Mtls(MtlsSettings),
    /// A WebAssembly component.
    Wasm(RawWasm),
    /// This gateway's own authorization server's tokens.
    Issued(IssuedSettings),
}

/// A `type = "issued"` provider: no settings; the server's keys, issuer and clients, and
/// the route's resource as audience, say everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuedSettings {}

/// The `on_deny` key is common to every provider type, so it is split off before the
/// type's own table (which refuses unknown keys) sees the rest.
#[derive(Debug, Deserialize)]
struct ProviderTable {
    #[serde(default)]
    on_deny: Option<String>,
    #[serde(flatten)]
    settings: RawProviderSettings,
}

impl<'de> Deserialize<'de> for RawProvider {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = ProviderTable::deserialize(deserializer)?;
        Ok(Self {
            on_deny: table.on_deny,
            settings: table.settings,
        })
    }
}

/// A `type = "wasm"` provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWasm {
    /// Component name in the providers directory, or a path to a `.wasm` file.
    pub component: String,
    /// Passed to the component's `configure` as JSON.
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// Secret name → `env://VAR`, `file://path`, `vault://mount/path#field` or a literal.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretRef>,
    /// Whether the provider may read the request body.
    #[serde(default)]
    pub body: bool,
    /// Request headers that carry this provider's credential: removed before the upstream,
    /// as the built-in providers' credential headers are.
    #[serde(default)]
    pub credential_headers: Vec<String>,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// `pooled` (default) or `fresh`.
    pub instances: Option<String>,
}

/// `limits = { timeout_ms, configure_timeout_ms, memory_mib, max_concurrent_calls,
/// cache_entries, cache_key_bytes, cache_value_bytes, cache_mib }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Deadline per call, ms.
    pub timeout_ms: Option<u64>,
    /// Deadline for creating and configuring an instance, ms.
    pub configure_timeout_ms: Option<u64>,
    /// Memory cap per instance, MiB.
    pub memory_mib: Option<u64>,
    /// Most calls running at once.
    pub max_concurrent_calls: Option<u64>,
    /// Most entries in the provider's cache.
    pub cache_entries: Option<u64>,
    /// Longest cache key, bytes.
    pub cache_key_bytes: Option<u64>,
    /// Longest cache value, bytes.
    pub cache_value_bytes: Option<u64>,
    /// Most bytes the provider's cache holds, MiB.
    pub cache_mib: Option<u64>,
}

/// `[resource]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    /// Authorization servers clients should get tokens from.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Scopes this resource understands.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
}
