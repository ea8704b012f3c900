//! One immutable, ready-to-serve configuration of the gateway: the routes with their
//! policies and upstream pools, the metadata documents, the [readiness report](Readiness). A reload
//! builds a new [`Site`] and swaps it in whole; requests in flight keep the one they began
//! with.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderName;
use ipnet::IpNet;

use super::metadata::{document, metadata_url};
use super::proxy::{ForwardedAs, Upstream};
use super::readiness::{ProviderStatus, Readiness};
use super::rejection::ChallengeInfo;
use crate::config::model::{
    ChainItem, ForwardAuth, OriginPolicy, ProviderSettings, Route, ServerLimits,
};
use crate::config::{Assembled, Config};
use crate::engine::Policy;
use crate::engine::api_key::{ApiKeyValidator, CredentialLocation};
use crate::engine::jwt::JwtValidator;
use crate::engine::rules::path_has_prefix;
use crate::identity::IdentityAuthority;
use crate::oauth::AuthorizationServer;

/// A route ready to serve.
#[derive(Debug)]
pub struct LiveRoute {
    /// Path prefix (`""` for the root).
    pub path: String,
    /// The decision function.
    pub policy: Policy,
    /// The upstream pool; `None` only in a site built from an embedded config
    /// ([`crate::config::Purpose::Embedded`]), which the gateway never serves.
    pub upstream: Option<Upstream>,
    /// Headers removed before the upstream.
    pub strip: Vec<HeaderName>,
    /// Whether bodies are MCP JSON-RPC.
    pub mcp: bool,
    /// Whether POST bodies are buffered for the engine.
    pub wants_body: bool,
    /// Whether the forward-auth endpoint judges this route.
    pub forward_auth: bool,
    /// Where challenges point.
    pub challenge: ChallengeInfo,
    /// The route's RFC 9728 document.
    pub metadata: Bytes,
}

impl LiveRoute {
    /// The label used in metrics and logs.
    pub fn label(&self) -> &str {
        if self.path.is_empty() {
            "/"
        } else {
            &self.path
        }
    }
}

/// Everything one configuration serves.
#[derive(Debug)]
pub struct Site {
    /// Canonical public URL.
    pub public_url: String,
    /// Lower-case origin of the public URL.
    pub public_origin: String,
    /// Trusted proxy networks.
    pub trusted_proxies: Vec<IpNet>,
    /// Origin policy.
    pub origins: OriginPolicy,
    /// Which hosts it answers to.
    pub hosts: crate::config::model::HostPolicy,
    /// CORS answers.
    pub cors: super::cors::CorsHeaders,
    /// `[[rate_limits]]` and their buckets.
    pub rate_limits: super::rate_limit::RateLimits,
    /// The forward-auth endpoint, when on.
    pub forward_auth: Option<ForwardAuth>,
    /// Peers that get the full `/readyz` report.
    pub readyz_detail_networks: Vec<IpNet>,
    /// Request-body buffering limit.
    pub max_body_bytes: usize,
    /// Limits on slow and many clients: the listener reads them when it starts, the
    /// body deadline is read per request.
    pub limits: ServerLimits,
    /// `X-Forwarded-Host`/`-Proto` for upstreams, from the public URL.
    pub forwarded_as: ForwardedAs,
    /// Routes, longest prefix first.
    pub routes: Vec<LiveRoute>,
    /// Whether a route or rule path is spelled with capitals or a segment ending in `.`, so
    /// that every request path must be compared case-blind
    /// ([`check_case_folding`](super::request::check_case_folding)).
    pub mixed_case_paths: bool,
    /// Metadata for the public URL itself.
    pub root_metadata: Bytes,
    /// The site's own `/readyz` report.
    pub readiness: Readiness,
    /// JWT validators, for metrics.
    pub jwt_validators: Vec<(String, Arc<JwtValidator>)>,
    /// API-key validators, for their keys' last-used times.
    pub api_key_validators: Vec<Arc<ApiKeyValidator>>,
    /// The authorization server, when on: its endpoints are answered before any route.
    pub authorization_server: Option<Arc<AuthorizationServer>>,
    /// The identity CA, when on: its endpoints are answered before any route, and it
    /// vouches for the certificates it issued.
    pub identity: Option<Arc<IdentityAuthority>>,
}

impl Site {
    /// Builds the site from a validated config and its assembled providers.
    pub fn new(config: &Config, assembled: Assembled) -> Self {
        let public_url = config.server.public_url.clone();
        let routes: Vec<LiveRoute> = config
            .routes
            .iter()
            .zip(assembled.policies)
            .zip(assembled.upstreams)
            .map(|((route, policy), upstream)| live_route(config, route, policy, upstream))
            .collect();
        let readiness = Readiness {
            status: "ready",
            providers: assembled
                .providers
                .values()
                .map(|p| ProviderStatus {
                    name: p.name.clone(),
                    type_name: p.type_name,
                    component: p
                        .component
                        .as_ref()
                        .map(|(path, _)| path.display().to_string()),
                    sha256: p.component.as_ref().map(|(_, hash)| hash.clone()),
                    loaded_at_unix_ms: None,
                })
                .collect(),
            ..Readiness::default()
        };
        let jwt_validators = assembled
            .providers
            .values()
            .filter_map(|p| p.jwt.clone().map(|v| (p.name.clone(), v)))
            .collect();
        let api_key_validators = assembled
            .providers
            .values()
            .filter_map(|p| p.api_key.clone())
            .collect();
        Self {
            public_origin: origin_of(&public_url),
            root_metadata: document(&public_url, &config.resource),
            forwarded_as: ForwardedAs::from_public_url(&public_url),
            public_url,
            trusted_proxies: config.server.trusted_proxies.clone(),
            origins: config.server.allowed_origins.clone(),
            hosts: config.server.allowed_hosts.clone(),
            cors: super::cors::CorsHeaders::new(&config.server.cors),
            rate_limits: super::rate_limit::RateLimits::new(config.rate_limits.clone())
                .with_shared(assembled.shared.clone()),
            forward_auth: config.server.forward_auth.clone(),
            readyz_detail_networks: config.server.readyz_detail_networks.clone(),
            max_body_bytes: config.server.max_body_bytes,
            mixed_case_paths: routes.iter().any(|r| {
                std::iter::once(r.path.as_str())
                    .chain(r.policy.rules.path_prefixes())
                    .any(|p| p.bytes().any(|b| b.is_ascii_uppercase()) || p.contains('.'))
            }),
            limits: config.server.limits.clone(),
            routes,
            readiness,
            jwt_validators,
            api_key_validators,
            authorization_server: assembled.authorization_server,
            identity: assembled.identity,
        }
    }

    /// The route serving `path`: the longest matching prefix.
    pub fn route(&self, path: &str) -> Option<&LiveRoute> {
        self.routes
            .iter()
            .find(|r| r.path.is_empty() || path_has_prefix(path, &r.path))
    }

    /// The metadata document served at `well_known_suffix` (after
    /// `/.well-known/oauth-protected-resource`).
    pub fn metadata(&self, suffix: &str) -> Option<&Bytes> {
        if suffix.is_empty() || suffix == "/" {
            return Some(
                self.routes
                    .iter()
                    .find(|r| r.path.is_empty())
                    .map_or(&self.root_metadata, |r| &r.metadata),
            );
        }
        let suffix = suffix.trim_end_matches('/');
        self.routes
            .iter()
            .find(|r| r.path == suffix)
            .map(|r| &r.metadata)
    }
}

fn live_route(
    config: &Config,
    route: &Route,
    policy: Policy,
    upstream: Option<Upstream>,
) -> LiveRoute {
    let public_url = &config.server.public_url;
    let resource_url = format!("{public_url}{}", route.path);
    let names: Vec<&String> = route
        .chain
        .iter()
        .flat_map(|item| match item {
            ChainItem::One(name) => std::slice::from_ref(name).iter(),
            ChainItem::All(names) => names.iter(),
        })
        .chain(route.authorizers.iter())
        .collect();
    let mut strip: Vec<HeaderName> = route.strip_headers.clone();
    if !route.forward_auth_headers {
        strip.push(http::header::AUTHORIZATION);
        for name in &names {
            let locations = match config.providers.get(*name).map(|p| &p.settings) {
                Some(ProviderSettings::ApiKey(s)) => s.credential_locations(),
                Some(ProviderSettings::Jwt(s)) => {
                    CredentialLocation::from_settings(s.header.as_deref(), s.scheme.as_deref())
                        .map(|location| vec![location])
                }
                Some(ProviderSettings::Wasm(w)) => {
                    for header in &w.credential_headers {
                        if !strip.contains(header) {
                            strip.push(header.clone());
                        }
                    }
                    continue;
                }
                _ => continue,
            };
            for location in locations.into_iter().flatten() {
                if !strip.contains(location.header()) {
                    strip.push(location.header().clone());
                }
            }
        }
    }
    if let Some(auth) = upstream.as_ref().and_then(Upstream::auth)
        && !strip.contains(auth.header_name())
    {
        strip.push(auth.header_name().clone());
    }
    let wants_body = route.mcp
        || names.iter().any(|name| {
            matches!(
                config.providers.get(*name).map(|p| &p.settings),
                Some(ProviderSettings::Wasm(w)) if w.body
            )
        });
    let default_scopes = config.resource.scopes_supported.clone();
    LiveRoute {
        path: route.path.clone(),
        policy,
        upstream,
        strip,
        mcp: route.mcp,
        wants_body,
        forward_auth: route.forward_auth,
        challenge: ChallengeInfo {
            metadata_url: metadata_url(public_url, &route.path),
            default_scopes,
        },
        metadata: document(&resource_url, &config.resource),
    }
}

/// `scheme://host[:port]` of a URL, lower-case.
fn origin_of(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    match lower.find("://") {
        Some(i) => {
            let after = &lower[i + 3..];
            let end = after.find('/').unwrap_or(after.len());
            lower[..i + 3 + end].to_owned()
        }
        None => lower,
    }
}
