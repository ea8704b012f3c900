//! Builds what a validated [`Config`] describes: one live provider per `[providers.NAME]`
//! (built-in validators, Wasm components compiled and configured) and one engine
//! [`Policy`] per route. Everything that can fail does so here, at load, never on a request.

use crate::identity::IdentityAuthority;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use super::error::{ConfigError, Reporter};
use super::model::{ChainItem, Config, ProviderSettings, Route, WasmSettings};
use crate::engine::anonymous::AnonymousProvider;
use crate::engine::api_key::{ApiKeyValidator, CredentialLocation};
use crate::engine::jwt::JwtValidator;
use crate::engine::mtls::MtlsValidator;
use crate::engine::{Authenticator, Authorizer, Chain, ChainEntry, OnDeny, Policy, Rules};
use crate::gateway::proxy::Upstream;
use crate::oauth::{AuthorizationServer, Ledger};
use crate::upstream::UpstreamAuth;
use crate::upstream::tls::client_config;
use crate::verdict::DenialKind;
use crate::wasm::{Grants, ProviderKind, WasmProvider, WasmRuntime};

/// A provider ready to run.
#[derive(Debug, Clone)]
pub struct BuiltProvider {
    /// Name in config.
    pub name: String,
    /// `type` in config.
    pub type_name: &'static str,
    /// What its denial does in a chain.
    pub on_deny: OnDeny,
    /// The provider.
    pub role: Role,
    /// For Wasm providers: the component file and its SHA-256.
    pub component: Option<(PathBuf, String)>,
    /// For JWT providers: the validator, for its key-fetch counters.
    pub jwt: Option<Arc<JwtValidator>>,
    /// For API-key providers: the validator, for its keys' last-used times.
    pub api_key: Option<Arc<ApiKeyValidator>>,
}

/// Which engine trait a provider fills.
#[derive(Debug, Clone)]
pub enum Role {
    /// Authenticates callers.
    Authenticator(Arc<dyn Authenticator>),
    /// Authorizes authenticated callers.
    Authorizer(Arc<dyn Authorizer>),
    /// Authenticates with this gateway's own tokens, bound to each route's resource when
    /// the route's policy is built.
    Issued,
}

/// Every provider of a config, built, and one policy per route (in `config.routes` order).
#[derive(Debug, Clone)]
pub struct Assembled {
    /// Providers by name.
    pub providers: BTreeMap<String, BuiltProvider>,
    /// One policy per route, same order as `config.routes`.
    pub policies: Vec<Policy>,
    /// The authorization server, when configured.
    pub authorization_server: Option<Arc<AuthorizationServer>>,
    /// The identity CA, when configured.
    pub identity: Option<Arc<IdentityAuthority>>,
    /// One upstream per route (`None` for an embedded config's), same order as
    /// `config.routes`: its TLS client and its credential built.
    pub upstreams: Vec<Option<Upstream>>,
    /// The fleet's Redis, when `[shared]` is on.
    pub shared: Option<Arc<crate::shared::SharedState>>,
}

/// Whether building `config` needs the Wasm runtime.
pub fn needs_wasm(config: &Config) -> bool {
    config
        .providers
        .values()
        .any(|p| matches!(p.settings, ProviderSettings::Wasm(_)))
}

/// Builds every provider and every route's policy. `runtime` is required when the config
/// has Wasm providers ([`needs_wasm`]).
pub async fn assemble(
    config: &Config,
    runtime: Option<&WasmRuntime>,
    ledger: &Arc<Ledger>,
) -> Result<Assembled, ConfigError> {
    let report = Reporter {
        file: config.source.clone(),
    };
    let authorization_server = config
        .authorization_server
        .as_ref()
        .map(|settings| {
            AuthorizationServer::build(config, settings, Arc::clone(ledger)).map(Arc::new)
        })
        .transpose()?;
    let identity = config
        .identity
        .as_ref()
        .map(|settings| {
            IdentityAuthority::build(settings.clone())
                .map(Arc::new)
                .map_err(|e| report.invalid("identity", e.to_string()))
        })
        .transpose()?;
    let shared = config
        .shared
        .as_ref()
        .map(crate::shared::SharedState::new)
        .transpose()
        .map_err(|reason| report.invalid("shared.redis", reason))?;
    let mut providers = BTreeMap::new();
    for (name, provider) in &config.providers {
        let key = format!("providers.{name}");
        let invalid = |e: &dyn std::fmt::Display| report.invalid(&key, e.to_string());
        let mut api_key = None;
        let (role, component, jwt) = match &provider.settings {
            ProviderSettings::Anonymous(s) => {
                let v = AnonymousProvider::new(name, s.clone());
                (Role::Authenticator(Arc::new(v)), None, None)
            }
            ProviderSettings::ApiKey(s) => {
                let v = Arc::new(
                    ApiKeyValidator::new(name, s.clone())
                        .map_err(|e| invalid(&e))?
                        .with_shared(shared.clone()),
                );
                api_key = Some(Arc::clone(&v));
                (Role::Authenticator(v), None, None)
            }
            ProviderSettings::Jwt(s) => {
                let v = Arc::new(JwtValidator::new(name, s.clone()).map_err(|e| invalid(&e))?);
                (Role::Authenticator(v.clone()), None, Some(v))
            }
            ProviderSettings::Mtls(s) => {
                let mut v = MtlsValidator::new(name, s.clone()).map_err(|e| invalid(&e))?;
                if let (Some(settings), Some(authority)) = (&config.identity, &identity) {
                    v = v.reserving(&settings.subject_prefix(), Arc::clone(&authority.registry));
                }
                (Role::Authenticator(Arc::new(v)), None, None)
            }
            ProviderSettings::Wasm(w) => {
                let Some(runtime) = runtime else {
                    return Err(report.invalid(&key, "a Wasm provider needs the Wasm runtime"));
                };
                let (role, hash) = wasm(name, w, runtime, &report, &key, shared.as_ref()).await?;
                (role, Some((w.component.clone(), hash)), None)
            }
            ProviderSettings::Issued => (Role::Issued, None, None),
        };
        providers.insert(
            name.clone(),
            BuiltProvider {
                name: name.clone(),
                type_name: provider.settings.type_name(),
                on_deny: provider.on_deny,
                role,
                component,
                jwt,
                api_key,
            },
        );
    }
    let policies = config
        .routes
        .iter()
        .map(|route| {
            let resource = format!("{}{}", config.server.public_url, route.path);
            let issued = Issued {
                server: authorization_server.as_ref(),
                resource: &resource,
            };
            policy(route, &providers, &issued, &report)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let upstreams = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, route)| upstream(i, route, config, authorization_server.as_ref(), &report))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Assembled {
        providers,
        policies,
        authorization_server,
        identity,
        upstreams,
        shared,
    })
}

/// Route `i`'s upstream: the TLS client configuration read and the credential's secrets
/// resolved now, so that neither can fail on a request.
fn upstream(
    i: usize,
    route: &Route,
    config: &Config,
    server: Option<&Arc<AuthorizationServer>>,
    report: &Reporter,
) -> Result<Option<Upstream>, ConfigError> {
    let Some(base) = route.upstream.clone() else {
        return Ok(None);
    };
    let tls = route
        .upstream_tls
        .as_ref()
        .map(|settings| client_config(Some(settings)))
        .transpose()
        .map_err(|e| report.invalid(format!("routes[{i}].upstream_tls"), e))?;
    let auth = route
        .upstream_auth
        .as_ref()
        .map(|checked| {
            let locations = route
                .chain
                .iter()
                .flat_map(|item| match item {
                    ChainItem::One(name) => std::slice::from_ref(name),
                    ChainItem::All(names) => names.as_slice(),
                })
                .filter_map(|name| {
                    let location = match &config.providers.get(name)?.settings {
                        ProviderSettings::Jwt(s) => CredentialLocation::from_settings(
                            s.header.as_deref(),
                            s.scheme.as_deref(),
                        )
                        .ok()?,
                        ProviderSettings::Issued => CredentialLocation::bearer(),
                        _ => return None,
                    };
                    Some((name.clone(), location))
                })
                .collect();
            UpstreamAuth::build(checked, locations, server).map(Arc::new)
        })
        .transpose()
        .map_err(|e| report.invalid(format!("routes[{i}].upstream_auth"), e))?;
    Ok(Some(
        Upstream::with_tls_versions(
            base,
            route.connect_timeout,
            route.response_timeout,
            tls,
            route
                .upstream_tls
                .as_ref()
                .and_then(|t| t.http2)
                .unwrap_or(true),
        )
        .with_auth(auth),
    ))
}

async fn wasm(
    name: &str,
    settings: &WasmSettings,
    runtime: &WasmRuntime,
    report: &Reporter,
    key: &str,
    shared: Option<&Arc<crate::shared::SharedState>>,
) -> Result<(Role, String), ConfigError> {
    if !settings.component.is_file() {
        return Err(report.invalid(
            format!("{key}.component"),
            format!(
                "`{}` does not exist; build the provider (`cargo build --target wasm32-wasip2 \
                 --release`) and copy its `.wasm` there, or fix `component`",
                settings.component.display()
            ),
        ));
    }
    let component = runtime
        .load_file(&settings.component)
        .map_err(|e| report.invalid(format!("{key}.component"), e.to_string()))?;
    let hash = component.content_hash.clone();
    let kind = component.kind;
    let mut secrets = HashMap::new();
    for (secret, reference) in &settings.secrets {
        let value = reference
            .resolve()
            .map_err(|e| report.invalid(format!("{key}.secrets.{secret}"), e.to_string()))?;
        secrets.insert(secret.clone(), value);
    }
    let grants = Grants::new(name, secrets, settings.body, settings.limits.clone())
        .with_shared(shared.cloned());
    let provider = WasmProvider::new(
        component,
        grants,
        settings.config_json.clone(),
        settings.instances,
    )
    .await
    .map_err(|e| report.invalid(key, e.to_string()))?;
    let provider = Arc::new(provider);
    let role = match kind {
        ProviderKind::Authenticator => Role::Authenticator(provider),
        ProviderKind::Authorizer => Role::Authorizer(provider),
    };
    Ok((role, hash))
}

/// What an `issued` provider on a route is bound to.
struct Issued<'a> {
    server: Option<&'a Arc<AuthorizationServer>>,
    /// The route's resource URL: the audience its tokens must name.
    resource: &'a str,
}

fn policy(
    route: &Route,
    providers: &BTreeMap<String, BuiltProvider>,
    issued: &Issued<'_>,
    report: &Reporter,
) -> Result<Policy, ConfigError> {
    let route_key = format!("routes[path = \"{}\"]", display(&route.path));
    let authenticator = |name: &str, key: &str| -> Result<Arc<dyn Authenticator>, ConfigError> {
        match providers.get(name).map(|p| &p.role) {
            Some(Role::Authenticator(a)) => Ok(a.clone()),
            Some(Role::Issued) => {
                let Some(server) = issued.server else {
                    return Err(report.invalid(key, "the authorization server is off"));
                };
                let validator = server
                    .route_validator(name, issued.resource)
                    .map_err(|e| report.invalid(key, e))?;
                Ok(Arc::new(validator))
            }
            Some(Role::Authorizer(_)) => Err(report.invalid(
                key,
                format!(
                    "`{name}` is an authorizer component (world `authorizer`); move it to \
                     `authorizers = [\"{name}\"]` or use an authenticator here"
                ),
            )),
            None => Err(report.invalid(key, format!("no provider is named `{name}`"))),
        }
    };
    let mut entries = Vec::with_capacity(route.chain.len());
    for item in &route.chain {
        let key = format!("{route_key}.chain");
        entries.push(match item {
            ChainItem::One(name) => ChainEntry::One {
                provider: authenticator(name, &key)?,
                on_deny: providers.get(name).map_or(OnDeny::Stop, |p| p.on_deny),
            },
            ChainItem::All(names) => ChainEntry::All {
                providers: names
                    .iter()
                    .map(|n| authenticator(n, &key))
                    .collect::<Result<_, _>>()?,
            },
        });
    }
    let mut authorizers: Vec<Arc<dyn Authorizer>> = Vec::new();
    for name in &route.authorizers {
        match providers.get(name).map(|p| &p.role) {
            Some(Role::Authorizer(a)) => authorizers.push(a.clone()),
            _ => {
                return Err(report.invalid(
                    format!("{route_key}.authorizers"),
                    format!(
                        "`{name}` is not an authorizer component (it exports `authenticate`); \
                         put it in `chain` instead"
                    ),
                ));
            }
        }
    }
    let (chain_error, authz_error) = if route.fail_unavailable {
        (DenialKind::Unavailable, DenialKind::Unavailable)
    } else {
        (DenialKind::Unauthenticated, DenialKind::Forbidden)
    };
    Ok(Policy {
        chain: Chain::new(entries, chain_error),
        rules: Rules::new(route.rules.clone()),
        authorizers,
        on_error: authz_error,
    })
}

fn display(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}
