//! Stage two: the validated configuration the gateway runs with. Every value here has been
//! checked; nothing is built yet (see [`super::assemble`] for the providers).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Uri};
use ipnet::IpNet;

use crate::engine::OnDeny;
use crate::engine::anonymous::AnonymousSettings;
use crate::engine::api_key::ApiKeySettings;
use crate::engine::jwt::JwtSettings;
use crate::engine::mtls::MtlsSettings;
use crate::engine::rules::Rule;
use crate::identity::IdentitySettings;
use crate::oauth::AuthorizationServerSettings;
use crate::secret::{SecretRef, VaultSettings};
use crate::wasm::{InstanceMode, Limits};

/// What a configuration is validated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `portcullis serve`, `check`, `eval`: every route proxies to its `upstream`, which is
    /// required.
    Gateway,
    /// A tower layer in a Rust service ([`crate::embed`]): routes guard the service's own
    /// handlers, so `upstream` may be left out, and is ignored when present (the same file
    /// can drive both).
    Embedded,
}

/// Where the gateway serves RFC 9728 protected-resource metadata (and, below it, each
/// route's document); no route may take it.
pub(crate) const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (a path, or `<embedded default>`), for messages.
    pub source: String,
    /// Listener and front-end settings.
    pub server: Server,
    /// Routes, longest path first.
    pub routes: Vec<Route>,
    /// Providers by name.
    pub providers: BTreeMap<String, Provider>,
    /// RFC 9728 metadata.
    pub resource: Resource,
    /// The authorization server, when on.
    pub authorization_server: Option<AuthorizationServerSettings>,
    /// The agent-identity CA, when on.
    pub identity: Option<IdentitySettings>,
    /// `[vault]`, when present.
    pub vault: Option<VaultSettings>,
    /// Every secret reference (not literal) written in the file, in order: what the loader
    /// reads from Vault and the reloader watches (see [`crate::secret`]). Empty for a config
    /// validated from a [`RawConfig`](super::raw::RawConfig) built in code.
    pub secret_refs: Vec<SecretRef>,
    /// `[[rate_limits]]`, checked.
    pub rate_limits: Vec<crate::gateway::rate_limit::Limit>,
    /// `[shared]`: state on Redis, when on.
    pub shared: Option<crate::shared::SharedSettings>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct Server {
    /// Listen address.
    pub listen: SocketAddr,
    /// Canonical public URL without a trailing `/`.
    pub public_url: String,
    /// TLS, when on: on `listen`, or on `tls_listen` when that is set.
    pub tls: Option<Tls>,
    /// A second listener, with TLS, beside a plain-HTTP `listen`.
    pub tls_listen: Option<SocketAddr>,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Allowed `Origin` values, lower-case `scheme://host[:port]`.
    pub allowed_origins: OriginPolicy,
    /// Which `Host` values are accepted.
    pub allowed_hosts: HostPolicy,
    /// CORS answers for the allowed origins.
    pub cors: Cors,
    /// Log line format.
    pub log_format: LogFormat,
    /// Directory of `.wasm` providers.
    pub providers_dir: PathBuf,
    /// The forward-auth endpoint, when on.
    pub forward_auth: Option<ForwardAuth>,
    /// Peers that get the full `/readyz` report.
    pub readyz_detail_networks: Vec<IpNet>,
    /// Largest request body buffered for the engine.
    pub max_body_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Limits on slow and many clients.
    pub limits: ServerLimits,
}

/// What one client may hold, and for how long (`[server]` `*_timeout_secs`,
/// `max_connections`, `max_header_bytes`, `http2_*`). The defaults are the ones a real
/// deployment does not reach by accident; the README's config reference gives the reason
/// for each, and [`crate::gateway::listener`] how each is enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time to finish the TLS handshake and send a request head; for HTTP/1 it also bounds
    /// the wait for the next request on a kept-alive connection (hyper starts the clock as
    /// soon as the connection is ready for a head), and until its first request, any
    /// connection (HTTP/2 included).
    pub header_timeout: Duration,
    /// Time to send a whole body that the gateway buffers for the engine.
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Largest HTTP/1 request head, and HTTP/2 header list, in bytes.
    pub max_header_bytes: usize,
    /// Streams one HTTP/2 connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// Interval of HTTP/2 keep-alive pings, when on.
    pub http2_keepalive: Option<Duration>,
}

/// The defaults, next to what nginx and Envoy do (the README repeats the reasons):
/// - `header_timeout` 10 s: nginx `client_header_timeout` is 60 s, hyper's 30 s; a head of
///   a few KiB takes milliseconds even on a poor link, and the clock also closes idle
///   HTTP/1 keep-alive connections (Node's `keepAliveTimeout` is 5 s).
/// - `body_timeout` 30 s: a buffered body is at most `max_body_bytes` (1 MiB by default),
///   which takes 8 s at 1 Mbit/s; nginx bounds each read by 60 s, which a trickle defeats.
/// - `idle_timeout` 60 s: nginx `keepalive_timeout` 75 s, `http2_idle_timeout` 3 min
///   before 1.19.7; Envoy's connection `idle_timeout` is 1 h.
/// - `max_connections` 10 000: ten times the 1 000 concurrent clients the gateway is
///   measured with. The descriptor limit must be higher still (each proxied request also
///   holds an upstream connection); under a default `ulimit -n` of 1 024 that limit is
///   reached first, and the accept loop backs off on its errors.
/// - `max_header_bytes` 32 KiB: fits the largest token the JWT validator reads (16 KiB)
///   with room for the rest, like nginx's 4 × 8 KiB (Envoy: 60 KiB); hyper's own ~400 KiB
///   would let a client make the gateway buffer, parse and forward heads no upstream
///   expects.
/// - `http2_max_concurrent_streams` 100: RFC 9113's recommended minimum, nginx 128,
///   hyper 200, Envoy unlimited unless configured (its hardening guide says 100).
/// - `http2_keepalive` 30 s: a dead peer is found within 50 s.
impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_header_bytes: 32 * 1024,
            http2_max_concurrent_streams: 100,
            http2_keepalive: Some(Duration::from_secs(30)),
        }
    }
}

/// The forward-auth endpoint (`server.forward_auth_path`, `server.forward_auth_proxy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuth {
    /// Its path, without a trailing `/`.
    pub path: String,
    /// The proxy that calls it.
    pub proxy: ForwardAuthProxy,
}

/// The proxy in front of a forward-auth deployment: one header family per deployment, so a
/// client cannot pick the family whose copy the proxy failed to overwrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardAuthProxy {
    /// nginx `auth_request`: `X-Original-Method`, `X-Original-URI`, `X-Forwarded-For`.
    Nginx,
    /// Traefik ForwardAuth: `X-Forwarded-Method`, `X-Forwarded-Uri`, `X-Forwarded-For`.
    Traefik,
    /// Caddy `forward_auth`: the same headers as Traefik.
    Caddy,
    /// Envoy `ext_authz` (HTTP service): the original method, `<path><original path>`, and
    /// `x-forwarded-for`.
    Envoy,
}

impl ForwardAuthProxy {
    /// The name written in config.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::Traefik => "traefik",
            Self::Caddy => "caddy",
            Self::Envoy => "envoy",
        }
    }
}

/// Which `Host` header values the gateway answers (DNS-rebinding protection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPolicy {
    /// Any.
    Any,
    /// These host names or addresses (lower case, no port).
    List(Vec<String>),
}

/// CORS for browser clients: what a preflight answers and what a response exposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Extra request headers allowed (lower case).
    pub allow_headers: Vec<String>,
    /// Extra response headers exposed (lower case).
    pub expose_headers: Vec<String>,
    /// Preflight cache lifetime, seconds.
    pub max_age_secs: u64,
}

impl Default for Cors {
    fn default() -> Self {
        Self {
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            max_age_secs: 600,
        }
    }
}

/// Which browser origins may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Exactly these (plus the public URL's origin).
    List(Vec<String>),
    /// Not configured: the public URL's origin, plus any `localhost` / loopback origin when
    /// the listener is on a loopback address.
    Default {
        /// Whether loopback origins are allowed.
        loopback: bool,
    },
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[server.tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// CA bundle for client certificates.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required.
    pub client_auth: ClientAuth,
    /// PEM CRLs for the CAs of `client_ca`.
    pub crls: Vec<PathBuf>,
}

/// Client-certificate policy when `client_ca` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Verified when presented; requests without one go on to the chain.
    Optional,
    /// The handshake fails without a valid client certificate.
    Required,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// Path prefix without a trailing `/` (`""` for the root route).
    pub path: String,
    /// Upstream base URL (`http://host:port/path`): always set for [`Purpose::Gateway`];
    /// `None` for [`Purpose::Embedded`], whose routes lead to the host service's handlers.
    pub upstream: Option<Uri>,
    /// Authentication chain.
    pub chain: Vec<ChainItem>,
    /// Authorizer provider names.
    pub authorizers: Vec<String>,
    /// Global rules followed by the route's own.
    pub rules: Vec<Rule>,
    /// Request headers removed before the upstream: the chain's credential headers (unless
    /// `forward_auth_headers`) and `strip_headers`.
    pub strip_headers: Vec<HeaderName>,
    /// Whether credential headers pass to the upstream.
    pub forward_auth_headers: bool,
    /// Whether bodies are MCP JSON-RPC.
    pub mcp: bool,
    /// Whether the forward-auth endpoint judges this route (forward-auth on, and the route
    /// not opted out).
    pub forward_auth: bool,
    /// Whether a failing provider answers 503 (`true`) or 401/403.
    pub fail_unavailable: bool,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Time to the upstream's response headers.
    pub response_timeout: Duration,
    /// TLS to an `https://` upstream (`None` for `http://`).
    pub upstream_tls: Option<crate::upstream::tls::UpstreamTlsSettings>,
    /// The credential presented to the upstream.
    pub upstream_auth: Option<crate::upstream::settings::Checked>,
}

/// One chain position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainItem {
    /// One provider.
    One(String),
    /// Every member must allow.
    All(Vec<String>),
}

/// `[providers.NAME]`.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Its name.
    pub name: String,
    /// What its denial does in a chain.
    pub on_deny: OnDeny,
    /// Type and settings.
    pub settings: ProviderSettings,
}

/// A provider's type and settings.
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    /// `anonymous`.
    Anonymous(AnonymousSettings),
    /// `api_key`.
    ApiKey(ApiKeySettings),
    /// `jwt`.
    Jwt(JwtSettings),
    /// `mtls`.
    Mtls(MtlsSettings),
    /// `wasm`.
    Wasm(WasmSettings),
    /// `issued`: tokens of this gateway's authorization server.
    Issued,
}

impl ProviderSettings {
    /// The `type` as written in config.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Anonymous(_) => "anonymous",
            Self::ApiKey(_) => "api_key",
            Self::Jwt(_) => "jwt",
            Self::Mtls(_) => "mtls",
            Self::Wasm(_) => "wasm",
            Self::Issued => "issued",
        }
    }
}

/// A `wasm` provider, validated.
#[derive(Debug, Clone)]
pub struct WasmSettings {
    /// The component file.
    pub component: PathBuf,
    /// The config table as JSON.
    pub config_json: String,
    /// Secret name → reference (resolved when the provider is built).
    pub secrets: BTreeMap<String, SecretRef>,
    /// Body access.
    pub body: bool,
    /// Headers carrying the provider's credential, removed before the upstream unless the
    /// route sets `forward_auth_headers`.
    pub credential_headers: Vec<HeaderName>,
    /// Sandbox limits: the defaults with the operator's `limits` applied.
    pub limits: Limits,
    /// Instance reuse.
    pub instances: InstanceMode,
}

/// `[resource]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    /// Authorization servers.
    pub authorization_servers: Vec<String>,
    /// Scopes this resource understands.
    pub scopes_supported: Vec<String>,
}
