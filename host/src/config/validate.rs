//! Stage two: checks every value of a [`RawConfig`] and builds the [`Config`] the gateway
//! runs with. Each check names the key and the bad value, and says what to write instead.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, Uri};
use ipnet::IpNet;

use super::error::{ConfigError, Reporter};
use super::model::{
    ChainItem, ClientAuth, Config, Cors, ForwardAuth, ForwardAuthProxy, HostPolicy, LogFormat,
    OriginPolicy, Provider, ProviderSettings, Purpose, Resource, Route, Server, ServerLimits, Tls,
};
use super::providers::validate_provider;
use super::raw::{RawChainEntry, RawConfig, RawResource, RawRoute, RawServer, RawTls};
use crate::engine::RuleSettings;
use crate::engine::rules::{Rule, path_has_prefix};
use crate::normal_form::path_problem;
use crate::upstream::settings::{Checked, ExchangeSubject};
use crate::upstream::tls::UpstreamTlsSettings;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default largest buffered request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// Validates `raw` for `purpose`; relative paths are taken from `base_dir` (the config
/// file's folder).
pub(crate) fn validate(
    raw: RawConfig,
    report: &Reporter,
    base_dir: &Path,
    purpose: Purpose,
) -> Result<Config, ConfigError> {
    let server = server(&raw.server, report, base_dir)?;
    if let Some(tls) = &raw.server.tls
        && tls.client_auth.is_some()
        && tls.client_ca.is_none()
        && raw.identity.is_none()
    {
        return Err(report.invalid(
            "server.tls.client_auth",
            "is set but `client_ca` is not; add `client_ca = \"ca.pem\"` (the CA bundle that \
             signs client certificates), or `[identity]` for certificates of the gateway's own CA",
        ));
    }
    let identity = identity(&raw, &server, report, base_dir, purpose)?;
    let authorization_server = raw
        .authorization_server
        .as_ref()
        .map(|section| {
            section
                .validate(&server.public_url, server.listen, base_dir)
                .map_err(|e| report.invalid(format!("authorization_server.{}", e.key), e.reason))
        })
        .transpose()?;
    if authorization_server.is_some() && purpose == Purpose::Embedded {
        return Err(report.invalid(
            "authorization_server",
            "the authorization server is served by the gateway (`portcullis serve`), not by a              tower layer; remove the section from the embedded config",
        ));
    }
    let mut providers = BTreeMap::new();
    for (name, provider) in raw.providers {
        let validated = validate_provider(
            &name,
            provider,
            report,
            base_dir,
            &server,
            identity.is_some(),
        )?;
        providers.insert(name, validated);
    }
    if raw.routes.is_empty() {
        return Err(report.invalid(
            "routes",
            "no route is configured; add a `[[routes]]` table with `path`, `upstream` and `chain`",
        ));
    }
    // With the authorization server on, the token endpoint beside each `…/mcp` route is its.
    let sibling_endpoints: Vec<String> = if authorization_server.is_some() {
        raw.routes
            .iter()
            .filter_map(|r| r.path.trim_end_matches('/').strip_suffix("/mcp"))
            .map(|parent| format!("{parent}{}", crate::oauth::TOKEN_PATH))
            .collect()
    } else {
        Vec::new()
    };
    let global_rules = rules(&raw.rules, "rules", report)?;
    let mut all_rule_scopes: BTreeSet<String> = scopes_of(&raw.rules);
    let mut routes: Vec<Route> = Vec::with_capacity(raw.routes.len());
    for (i, raw_route) in raw.routes.iter().enumerate() {
        all_rule_scopes.extend(scopes_of(&raw_route.rules));
        let mut route = route(i, raw_route, &global_rules, &providers, report, purpose)?;
        let around = Around {
            providers: &providers,
            has_authorization_server: authorization_server.is_some(),
            public_url: &server.public_url,
            base_dir,
        };
        upstream_side(i, raw_route, &mut route, &around, report)?;
        route.forward_auth &= server.forward_auth.is_some();
        if let Some(forward_auth) = &server.forward_auth
            && route.forward_auth
        {
            judgeable_from_headers(
                i,
                raw_route,
                &raw.rules,
                &route,
                &providers,
                forward_auth,
                report,
            )?;
        }
        let endpoint = own_endpoint(&route.path, server.forward_auth.as_ref()).or_else(|| {
            authorization_server
                .as_ref()
                .filter(|_| {
                    crate::oauth::RESERVED_PATHS
                        .iter()
                        .copied()
                        .chain(sibling_endpoints.iter().map(String::as_str))
                        .any(|reserved| path_has_prefix(&route.path, reserved))
                })
                .map(|_| "the authorization server, `[authorization_server]`")
        });
        if let Some(endpoint) = endpoint {
            return Err(report.invalid(
                format!("routes[{i}].path"),
                format!(
                    "`{}` is answered by the gateway itself ({endpoint}), so this route would \
                     never serve it; choose another path",
                    display_path(&route.path),
                ),
            ));
        }
        if let Some(other) = routes.iter().find(|r| r.path == route.path) {
            let upstream = other
                .upstream
                .as_ref()
                .map(|u| format!(" (upstream `{u}`)"))
                .unwrap_or_default();
            return Err(report.invalid(
                format!("routes[{i}].path"),
                format!(
                    "`{}` is already the path of another route{upstream}; give each route its \
                     own path",
                    display_path(&other.path),
                ),
            ));
        }
        routes.push(route);
    }
    // A route's rule for paths that a more specific route takes is never asked.
    for (i, raw_route) in raw.routes.iter().enumerate() {
        let route_path = &routes[i].path;
        for (j, rule) in raw_route.rules.iter().enumerate() {
            let Some(rule_path) = rule.path.as_deref() else {
                continue;
            };
            let taken = routes.iter().find(|other| {
                other.path.len() > route_path.len()
                    && path_has_prefix(&other.path, route_path)
                    && path_has_prefix(rule_path, &other.path)
            });
            if let Some(other) = taken {
                return Err(report.invalid(
                    format!("routes[{i}].rules[{j}].path"),
                    format!(
                        "`{rule_path}` is served by the route `{}`, so this route's rule would \
                         never apply; move the rule to that route",
                        display_path(&other.path)
                    ),
                ));
            }
        }
    }
    check_jwt_audiences(&routes, &providers, &server, report)?;
    // Longest prefix first, so the most specific route wins.
    routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
    let mut resource = resource(raw.resource, all_rule_scopes, report)?;
    // A `jwt` provider trusting this server's own tokens would skip what only `issued`
    // checks: revocation, the client as configured now, one route per token.
    if let Some(section) = &authorization_server
        && let Some((name, _)) = providers.iter().find(|(_, p)| {
            matches!(&p.settings, ProviderSettings::Jwt(jwt)
                if jwt.issuer.trim_end_matches('/') == section.issuer)
        })
    {
        return Err(report.invalid(
            format!("providers.{name}.issuer"),
            format!(
                "`{}` is this gateway's own authorization server; check its tokens with a \
                 provider of `type = \"issued\"` (revocation, one route per token), not `jwt`",
                section.issuer
            ),
        ));
    }
    if let Some(section) = &authorization_server {
        if !resource.authorization_servers.contains(&section.issuer) {
            resource
                .authorization_servers
                .insert(0, section.issuer.clone());
        }
    } else if let Some((name, _)) = providers
        .iter()
        .find(|(_, p)| matches!(p.settings, ProviderSettings::Issued))
    {
        return Err(report.invalid(
            format!("providers.{name}"),
            "an `issued` provider checks tokens of this gateway's own authorization server, \
             which is off; add `[authorization_server]` or use a `jwt` provider",
        ));
    }
    let vault = raw
        .vault
        .as_ref()
        .map(|section| section.validate(base_dir))
        .transpose()
        .map_err(|e| report.invalid(format!("vault.{}", e.key), e.reason))?;
    let mut rate_limits = Vec::with_capacity(raw.rate_limits.len());
    for (i, limit) in raw.rate_limits.iter().enumerate() {
        if raw.rate_limits[..i].iter().any(|l| l.name == limit.name) {
            return Err(report.invalid(
                format!("rate_limits[{i}].name"),
                format!(
                    "`{}` names another limit too; names must differ",
                    limit.name
                ),
            ));
        }
        if let Some(route) = &limit.route
            && !routes
                .iter()
                .any(|r| path_has_prefix(route, &r.path) || path_has_prefix(&r.path, route))
        {
            return Err(report.invalid(
                format!("rate_limits[{i}].route"),
                format!("`{route}` is under no route, so the limit would never apply"),
            ));
        }
        rate_limits.push(
            limit.check().map_err(|(key, reason)| {
                report.invalid(format!("rate_limits[{i}].{key}"), reason)
            })?,
        );
    }
    let shared = raw
        .shared
        .as_ref()
        .map(crate::shared::RawShared::check)
        .transpose()
        .map_err(|(key, reason)| report.invalid(format!("shared.{key}"), reason))?;
    Ok(Config {
        source: report.file.clone(),
        server,
        routes,
        providers,
        resource,
        authorization_server,
        identity,
        vault,
        secret_refs: Vec::new(),
        rate_limits,
        shared,
    })
}

/// `[identity]`: its own checks, then what depends on the rest of the config — TLS on (a
/// rotation is authenticated by the certificate), the registration route, and its path
/// kept from every route.
fn identity(
    raw: &RawConfig,
    server: &Server,
    report: &Reporter,
    base_dir: &Path,
    purpose: Purpose,
) -> Result<Option<crate::identity::IdentitySettings>, ConfigError> {
    let Some(section) = &raw.identity else {
        return Ok(None);
    };
    let mut settings = section
        .validate(&server.public_url, base_dir)
        .map_err(|e| report.invalid(format!("identity.{}", e.key), e.reason))?;
    if purpose == Purpose::Embedded {
        return Err(report.invalid(
            "identity",
            "the identity CA is served by the gateway (`portcullis serve`), not by a tower \
             layer; remove the section from the embedded config",
        ));
    }
    if server.tls.is_none() {
        return Err(report.invalid(
            "identity",
            "needs `[server.tls]`: agents rotate their certificates over mTLS, and use them on \
             a TLS listener; `portcullis identity init --server-name HOST` writes a listener \
             certificate beside the CA",
        ));
    }
    let wanted = settings.route.trim_end_matches('/').to_owned();
    let Some(route) = raw
        .routes
        .iter()
        .find(|r| r.path.trim_end_matches('/') == wanted)
    else {
        return Err(report.invalid(
            "identity.route",
            format!(
                "`{}` is not the `path` of any `[[routes]]`; name the route whose chain \
                 authenticates registrations",
                settings.route
            ),
        ));
    };
    settings.route = route.path.trim_end_matches('/').to_owned();
    for (i, route) in raw.routes.iter().enumerate() {
        if path_has_prefix(route.path.trim_end_matches('/'), &settings.path) {
            return Err(report.invalid(
                format!("routes[{i}].path"),
                format!(
                    "`{}` is answered by the gateway's identity CA (`identity.path = \"{}\"`), \
                     so this route would never serve it; choose another path",
                    route.path, settings.path
                ),
            ));
        }
    }
    let taken = [
        crate::config::model::WELL_KNOWN,
        "/.well-known",
        "/oauth",
        "/healthz",
        "/readyz",
        "/metrics",
    ];
    let forward_auth = server.forward_auth.as_ref().map(|f| f.path.as_str());
    if let Some(other) = taken
        .into_iter()
        .chain(forward_auth)
        .find(|p| path_has_prefix(&settings.path, p) || path_has_prefix(p, &settings.path))
    {
        return Err(report.invalid(
            "identity.path",
            format!("`{}` overlaps `{other}`, which the gateway answers itself; choose another path such as `/identity`", settings.path),
        ));
    }
    Ok(Some(settings))
}

fn server(raw: &RawServer, report: &Reporter, base_dir: &Path) -> Result<Server, ConfigError> {
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        report.invalid(
            "server.listen",
            format!(
                "`{listen_text}` is not an `ip:port` address; write e.g. `127.0.0.1:8080` or \
                 `0.0.0.0:8080` (names such as `localhost` are not resolved)"
            ),
        )
    })?;
    let tls_listen = raw
        .tls_listen
        .as_deref()
        .map(|text| {
            let addr: SocketAddr = text.parse().map_err(|_| {
                report.invalid(
                    "server.tls_listen",
                    format!("`{text}` is not an `ip:port` address; write e.g. `127.0.0.1:8443`"),
                )
            })?;
            if raw.tls.is_none() {
                return Err(report.invalid(
                    "server.tls_listen",
                    "is set but `[server.tls]` is not: the second listener needs its certificate",
                ));
            }
            if addr == listen && addr.port() != 0 {
                return Err(report.invalid(
                    "server.tls_listen",
                    format!("`{addr}` is `listen` too; give the TLS listener its own port"),
                ));
            }
            Ok(addr)
        })
        .transpose()?;
    // Every listener on loopback: only then may the public URL be derived, and loopback
    // origins be let in by default.
    let loopback_only =
        listen.ip().is_loopback() && tls_listen.is_none_or(|addr| addr.ip().is_loopback());
    let public_url = match &raw.public_url {
        Some(url) => public_url(url, report)?,
        None if loopback_only => {
            let scheme = if raw.tls.is_some() && tls_listen.is_none() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{listen}")
        }
        None => {
            return Err(report.invalid(
                "server.public_url",
                format!(
                    "is required when listening beyond loopback (`{}`): it is the resource \
                     identifier clients and tokens use, e.g. `https://mcp.example.com`",
                    tls_listen
                        .filter(|_| listen.ip().is_loopback())
                        .unwrap_or(listen)
                ),
            ));
        }
    };
    let tls = raw
        .tls
        .as_ref()
        .map(|tls| self::tls(tls, report, base_dir))
        .transpose()?;
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .enumerate()
        .map(|(i, cidr)| parse_cidr(cidr, &format!("server.trusted_proxies[{i}]"), report))
        .collect::<Result<Vec<_>, _>>()?;
    let allowed_origins = match &raw.allowed_origins {
        None => OriginPolicy::Default {
            loopback: loopback_only,
        },
        Some(list) => OriginPolicy::List(
            list.iter()
                .enumerate()
                .map(|(i, o)| origin(o, &format!("server.allowed_origins[{i}]"), report))
                .collect::<Result<_, _>>()?,
        ),
    };
    let allowed_hosts = match &raw.allowed_hosts {
        None if loopback_only => {
            let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
                .map(str::to_owned)
                .to_vec();
            if let Some(host) = url::Url::parse(&public_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
                && !hosts.contains(&host)
            {
                hosts.push(host);
            }
            HostPolicy::List(hosts)
        }
        None => HostPolicy::Any,
        Some(list) if list.iter().any(|h| h == "*") => HostPolicy::Any,
        Some(list) => HostPolicy::List(
            list.iter()
                .enumerate()
                .map(|(i, h)| host_name(h, &format!("server.allowed_hosts[{i}]"), report))
                .collect::<Result<_, _>>()?,
        ),
    };
    let cors = match &raw.cors {
        None => Cors::default(),
        Some(c) => {
            let names = |list: &[String], key: &str| {
                list.iter()
                    .enumerate()
                    .map(|(i, h)| {
                        HeaderName::from_bytes(h.trim().as_bytes())
                            .map(|n| n.as_str().to_owned())
                            .map_err(|_| {
                                report.invalid(
                                    format!("server.cors.{key}[{i}]"),
                                    format!("`{h}` is not an HTTP header name"),
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            Cors {
                allow_headers: names(&c.allow_headers, "allow_headers")?,
                expose_headers: names(&c.expose_headers, "expose_headers")?,
                max_age_secs: c.max_age_secs.unwrap_or(600).min(86_400),
            }
        }
    };
    let log_format = match raw.log_format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(report.invalid(
                "server.log_format",
                format!("`{other}` is not a log format; use `text` or `json`"),
            ));
        }
    };
    let forward_auth = forward_auth(raw, &trusted_proxies, report)?;
    let readyz_detail_networks = match &raw.readyz_detail_networks {
        None => vec![
            IpNet::V4(ipnet::Ipv4Net::new_assert(
                std::net::Ipv4Addr::new(127, 0, 0, 0),
                8,
            )),
            IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
        ],
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, cidr)| {
                parse_cidr(cidr, &format!("server.readyz_detail_networks[{i}]"), report)
            })
            .collect::<Result<_, _>>()?,
    };
    let max_body_bytes = match raw.max_body_bytes {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(0) => {
            return Err(report.invalid(
                "server.max_body_bytes",
                "`0` would refuse every MCP request; use e.g. `1048576` (1 MiB)",
            ));
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    Ok(Server {
        listen,
        public_url,
        tls,
        tls_listen,
        trusted_proxies,
        allowed_origins,
        allowed_hosts,
        cors,
        log_format,
        providers_dir: base_dir.join(raw.providers_dir.as_deref().unwrap_or("providers")),
        forward_auth,
        readyz_detail_networks,
        max_body_bytes,
        shutdown_grace: Duration::from_secs(raw.shutdown_grace_secs.unwrap_or(30)),
        limits: limits(raw, report)?,
    })
}

/// A `server.allowed_hosts` entry: a host name or an IP address (`[…]` for IPv6), no port,
/// no scheme; `*.example.com` allows the subdomains.
fn host_name(text: &str, key: &str, report: &Reporter) -> Result<String, ConfigError> {
    let lower = text.trim().to_ascii_lowercase();
    let bare = lower.strip_prefix("*.").unwrap_or(&lower);
    let ok = !bare.is_empty()
        && (bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            || (bare.starts_with('[')
                && bare.ends_with(']')
                && bare[1..bare.len() - 1]
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok()));
    if ok {
        Ok(lower)
    } else {
        Err(report.invalid(
            key,
            format!(
                "`{text}` is not a host: write a name (`mcp.example.com`, `*.example.com`) or \
                 an address (`127.0.0.1`, `[::1]`), without scheme or port"
            ),
        ))
    }
}

/// The longest timeout accepted: a day. Beyond it a timeout protects nothing, and a huge
/// one would overflow the clock arithmetic.
const MAX_TIMEOUT_SECS: u64 = 86_400;

/// `[server]`'s limits on slow and many clients; see [`ServerLimits`] for what each bounds.
fn limits(raw: &RawServer, report: &Reporter) -> Result<ServerLimits, ConfigError> {
    let default = ServerLimits::default();
    let timeout = |value: Option<u64>, key: &str, default: Duration, example: u64| match value {
        None => Ok(default),
        Some(0) => Err(report.invalid(
            key,
            format!("`0` would cut off every client; use e.g. `{example}`"),
        )),
        Some(n) if n > MAX_TIMEOUT_SECS => Err(report.invalid(
            key,
            format!("`{n}` is more than a day ({MAX_TIMEOUT_SECS}); use e.g. `{example}`"),
        )),
        Some(n) => Ok(Duration::from_secs(n)),
    };
    let header_timeout = timeout(
        raw.header_timeout_secs,
        "server.header_timeout_secs",
        default.header_timeout,
        10,
    )?;
    let body_timeout = timeout(
        raw.body_timeout_secs,
        "server.body_timeout_secs",
        default.body_timeout,
        30,
    )?;
    let idle_timeout = timeout(
        raw.idle_timeout_secs,
        "server.idle_timeout_secs",
        default.idle_timeout,
        60,
    )?;
    let max_connections = match raw.max_connections {
        None => default.max_connections,
        Some(0) => {
            return Err(report.invalid(
                "server.max_connections",
                "`0` would never accept a connection; use e.g. `10000`",
            ));
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    // hyper's read buffer cannot be smaller than 8 KiB (it panics), and HTTP/2 states the
    // list size as a u32; above 1 MiB a header block is an attack, not a token.
    let max_header_bytes = match raw.max_header_bytes {
        None => default.max_header_bytes,
        Some(n @ 8_192..=1_048_576) => usize::try_from(n).unwrap_or(usize::MAX),
        Some(n) => {
            return Err(report.invalid(
                "server.max_header_bytes",
                format!(
                    "`{n}` is outside 8192..=1048576 bytes; use e.g. `32768` (32 KiB, room for \
                     the largest token the JWT validator reads)"
                ),
            ));
        }
    };
    let http2_max_concurrent_streams = match raw.http2_max_concurrent_streams {
        None => default.http2_max_concurrent_streams,
        Some(n @ 1..=10_000) => u32::try_from(n).unwrap_or(u32::MAX),
        Some(n) => {
            return Err(report.invalid(
                "server.http2_max_concurrent_streams",
                format!("`{n}` is outside 1..=10000; use e.g. `100` (RFC 9113's minimum advice)"),
            ));
        }
    };
    let http2_keepalive = match raw.http2_keepalive_secs {
        None => default.http2_keepalive,
        Some(0) => None,
        Some(n) if n > MAX_TIMEOUT_SECS => {
            return Err(report.invalid(
                "server.http2_keepalive_secs",
                format!("`{n}` is more than a day; use e.g. `30`, or `0` to turn pings off"),
            ));
        }
        Some(n) => Some(Duration::from_secs(n)),
    };
    Ok(ServerLimits {
        header_timeout,
        body_timeout,
        idle_timeout,
        max_connections,
        max_header_bytes,
        http2_max_concurrent_streams,
        http2_keepalive,
    })
}

/// `forward_auth_proxy` turns forward-auth on; the endpoint is never on by default, since it
/// answers questions about credentials and believes its caller's headers.
fn forward_auth(
    raw: &RawServer,
    trusted_proxies: &[IpNet],
    report: &Reporter,
) -> Result<Option<ForwardAuth>, ConfigError> {
    const NAMED: &str = "`forward_auth_proxy = \"nginx\"` (or `\"traefik\"`, `\"caddy\"`, \
                         `\"envoy\"`: the proxy that calls the endpoint)";
    let proxy = match raw.forward_auth_proxy.as_deref() {
        None => None,
        Some("nginx") => Some(ForwardAuthProxy::Nginx),
        Some("traefik") => Some(ForwardAuthProxy::Traefik),
        Some("caddy") => Some(ForwardAuthProxy::Caddy),
        Some("envoy") => Some(ForwardAuthProxy::Envoy),
        Some(other) => {
            return Err(report.invalid(
                "server.forward_auth_proxy",
                format!(
                    "`{other}` is not a forward-auth proxy; use `nginx`, `traefik`, `caddy` or \
                     `envoy` (each sends the original request in its own headers, and only \
                     that proxy's are read)"
                ),
            ));
        }
    };
    let key = "server.forward_auth_path";
    let path = match raw.forward_auth_path.as_deref() {
        None => None,
        Some("") => Some(None),
        Some(text) => {
            let path = route_path(text, key, report)?;
            if path.is_empty() {
                return Err(report.invalid(
                    key,
                    format!("`{text}` would hide every route; use e.g. `/check`"),
                ));
            }
            Some(Some(path))
        }
    };
    let (proxy, path) = match (proxy, path) {
        (None, None | Some(None)) => return Ok(None),
        (None, Some(Some(path))) => {
            return Err(report.invalid(
                key,
                format!(
                    "`{path}` turns the forward-auth endpoint on, but no proxy is named; add \
                     {NAMED} to `[server]`, or remove `forward_auth_path`"
                ),
            ));
        }
        (Some(proxy), Some(None)) => {
            return Err(report.invalid(
                key,
                format!(
                    "`\"\"` turns forward-auth off, but `forward_auth_proxy = \"{}\"` turns it \
                     on; remove one of the two",
                    proxy.name()
                ),
            ));
        }
        (Some(proxy), path) => (proxy, path.flatten()),
    };
    if trusted_proxies.is_empty() {
        return Err(report.invalid(
            "server.trusted_proxies",
            format!(
                "is empty, but forward-auth (`forward_auth_proxy = \"{}\"`) answers only the \
                 proxy that calls it; add the proxy's address, e.g. \
                 `trusted_proxies = [\"127.0.0.1\"]`",
                proxy.name()
            ),
        ));
    }
    Ok(Some(ForwardAuth {
        path: path.unwrap_or_else(|| "/check".to_owned()),
        proxy,
    }))
}

/// A route judged through forward-auth is judged from the request head alone: no proxy sends
/// the body to the check (nginx cannot; Traefik, Caddy and Envoy do not by default). So a
/// route whose decision reads the body — MCP rules, authorizers reading the MCP call, a
/// provider granted `body` — would let every body through unjudged, and is refused.
fn judgeable_from_headers(
    i: usize,
    raw: &RawRoute,
    global_rules: &[RuleSettings],
    route: &Route,
    providers: &BTreeMap<String, Provider>,
    forward_auth: &ForwardAuth,
    report: &Reporter,
) -> Result<(), ConfigError> {
    let refuse = |key: String, what: String| {
        report.invalid(
            key,
            format!(
                "route `{}` is judged through forward-auth (`forward_auth_proxy = \"{}\"`), \
                 where the proxy sends the request head but never its body; {what}, so every \
                 request body would pass unjudged. Let the gateway proxy this route itself (send \
                 it to the gateway instead of through the proxy's auth check) and set \
                 `forward_auth = false` on `routes[{i}]`",
                display_path(&route.path),
                forward_auth.proxy.name(),
            ),
        )
    };
    if route.mcp {
        let rules = global_rules
            .iter()
            .enumerate()
            .map(|(k, r)| (format!("rules[{k}]"), r))
            .chain(
                raw.rules
                    .iter()
                    .enumerate()
                    .map(|(k, r)| (format!("routes[{i}].rules[{k}]"), r)),
            );
        for (key, rule) in rules {
            let covers_route = rule
                .path
                .as_deref()
                .is_none_or(|p| path_has_prefix(&route.path, p) || path_has_prefix(p, &route.path));
            let target = [
                ("tool", &rule.tool),
                ("resource", &rule.resource),
                ("prompt", &rule.prompt),
                ("mcp_method", &rule.mcp_method),
            ]
            .into_iter()
            .find_map(|(name, value)| value.as_ref().map(|v| format!("{name} = \"{v}\"")));
            if covers_route && let Some(target) = target {
                return Err(refuse(
                    key,
                    format!("this rule (`{target}`) matches the MCP call in the body"),
                ));
            }
        }
        if let Some(name) = route.authorizers.first() {
            return Err(refuse(
                format!("routes[{i}].authorizers[0]"),
                format!("the authorizer `{name}` judges the MCP call in the body"),
            ));
        }
    }
    let chain = raw
        .chain
        .iter()
        .enumerate()
        .flat_map(|(j, entry)| match entry {
            RawChainEntry::One(name) => vec![(format!("routes[{i}].chain[{j}]"), name)],
            RawChainEntry::All(group) => group
                .all
                .iter()
                .map(|name| (format!("routes[{i}].chain[{j}].all"), name))
                .collect(),
        });
    let authorizers = raw
        .authorizers
        .iter()
        .enumerate()
        .map(|(j, name)| (format!("routes[{i}].authorizers[{j}]"), name));
    for (key, name) in chain.chain(authorizers) {
        if let Some(ProviderSettings::Wasm(wasm)) = providers.get(name).map(|p| &p.settings)
            && wasm.body
        {
            return Err(refuse(
                key,
                format!("the provider `{name}` has `body = true`"),
            ));
        }
    }
    Ok(())
}

fn public_url(url: &str, report: &Reporter) -> Result<String, ConfigError> {
    let bad = |why: &str| {
        report.invalid(
            "server.public_url",
            format!(
                "`{url}` {why}; write the canonical URL clients use, e.g. \
                 `https://mcp.example.com`"
            ),
        )
    };
    let uri: Uri = url.parse().map_err(|_| bad("is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("must start with `https://` (or `http://`)")),
    }
    if uri.authority().is_none() {
        return Err(bad("has no host"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn tls(raw: &RawTls, report: &Reporter, base_dir: &Path) -> Result<Tls, ConfigError> {
    let client_auth = match raw.client_auth.as_deref() {
        None | Some("optional") => ClientAuth::Optional,
        Some("required") => ClientAuth::Required,
        Some(other) => {
            return Err(report.invalid(
                "server.tls.client_auth",
                format!(
                    "`{other}` is not a client-certificate policy; use `optional` or `required`"
                ),
            ));
        }
    };
    if !raw.crls.is_empty() && raw.client_ca.is_none() {
        return Err(report.invalid(
            "server.tls.crls",
            "is set but `client_ca` is not; CRLs are for the CAs of `client_ca` (the identity \
             CA's revocations are its store's)",
        ));
    }
    Ok(Tls {
        cert: base_dir.join(&raw.cert),
        key: base_dir.join(&raw.key),
        client_ca: raw.client_ca.as_ref().map(|p| base_dir.join(p)),
        client_auth,
        crls: raw.crls.iter().map(|p| base_dir.join(p)).collect(),
    })
}

fn parse_cidr(text: &str, key: &str, report: &Reporter) -> Result<IpNet, ConfigError> {
    if let Ok(net) = text.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(report.invalid(
                key,
                format!(
                    "`{text}` has host bits set; did you mean `{}`?",
                    net.trunc()
                ),
            ));
        }
        return Ok(net);
    }
    text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        report.invalid(
            key,
            format!("`{text}` is not an IP address or CIDR such as `10.0.0.0/8` or `::1`"),
        )
    })
}

/// Normalises an origin to lower-case `scheme://host[:port]`.
fn origin(text: &str, key: &str, report: &Reporter) -> Result<String, ConfigError> {
    let bad = |why: &str| {
        report.invalid(
            key,
            format!("`{text}` {why}; write an origin such as `https://app.example.com`"),
        )
    };
    if text == "*" {
        return Err(bad(
            "would let every web page call the gateway with the user's credentials",
        ));
    }
    let uri: Uri = text.parse().map_err(|_| bad("is not an origin"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(bad("needs `http://` or `https://` and a host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("must not have a path"));
    }
    Ok(text.trim_end_matches('/').to_ascii_lowercase())
}

/// A route (or endpoint) path: starts with `/`, no empty, `.` or `..` segment; returned
/// without its trailing `/`.
fn route_path(path: &str, key: &str, report: &Reporter) -> Result<String, ConfigError> {
    let trimmed = path.trim_end_matches('/');
    let bad_segment = trimmed
        .split('/')
        .skip(1)
        .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('%'));
    // A prefix that no request in normal form can have is a route that silently never
    // serves, leaving its paths to a broader route (a public `/`).
    let dead = path.contains('*') || (path.starts_with('/') && path_problem(path).is_some());
    if !path.starts_with('/') || bad_segment || dead || path.contains(['?', '#', ' ']) {
        return Err(report.invalid(
            key,
            format!(
                "`{path}` is not a path prefix: it must start with `/` and have no empty, `.`, \
                 `..` or percent-encoded segments, no `;`, `\\` or `*` (a prefix, not a glob), \
                 e.g. `/mcp`"
            ),
        ));
    }
    Ok(trimmed.to_owned())
}

/// The gateway endpoint that answers `route_path` before any route is looked up, if one
/// does: the health and metrics endpoints, RFC 9728 metadata, the forward-auth check.
fn own_endpoint(route_path: &str, forward_auth: Option<&ForwardAuth>) -> Option<&'static str> {
    if matches!(route_path, "/healthz" | "/readyz" | "/metrics") {
        return Some("a health or metrics endpoint");
    }
    if path_has_prefix(route_path, super::model::WELL_KNOWN) {
        return Some("the RFC 9728 metadata");
    }
    forward_auth
        .filter(|endpoint| path_has_prefix(route_path, &endpoint.path))
        .map(|_| "the forward-auth check, `server.forward_auth_path`")
}

fn display_path(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

fn route(
    i: usize,
    raw: &RawRoute,
    global_rules: &[Rule],
    providers: &BTreeMap<String, Provider>,
    report: &Reporter,
    purpose: Purpose,
) -> Result<Route, ConfigError> {
    let key = |field: &str| format!("routes[{i}].{field}");
    let path = route_path(&raw.path, &key("path"), report)?;
    let upstream = match (purpose, &raw.upstream) {
        (Purpose::Gateway, Some(text)) => Some(upstream(text, &key("upstream"), report)?),
        (Purpose::Gateway, None) => {
            return Err(report.invalid(
                key("upstream"),
                "is missing; name the server this route proxies to, e.g. \
                 `upstream = \"http://127.0.0.1:8000/mcp\"` (only a config for an embedded \
                 tower layer may leave it out)",
            ));
        }
        // The layer hands allowed requests to the service it wraps; an upstream written for
        // the gateway is not used (nor checked) there.
        (Purpose::Embedded, _) => None,
    };
    if raw.chain.is_empty() {
        return Err(report.invalid(
            key("chain"),
            "is empty; list the providers that authenticate this route, e.g. \
             `chain = [\"keys\"]`",
        ));
    }
    let mut chain = Vec::with_capacity(raw.chain.len());
    for (j, entry) in raw.chain.iter().enumerate() {
        let entry_key = key(&format!("chain[{j}]"));
        let item = match entry {
            RawChainEntry::One(name) => {
                authenticator(name, &entry_key, providers, report)?;
                ChainItem::One(name.clone())
            }
            RawChainEntry::All(group) => {
                if group.all.len() < 2 {
                    return Err(report.invalid(
                        format!("{entry_key}.all"),
                        "an `all` group needs at least two providers; write a single provider \
                         as a plain name",
                    ));
                }
                for name in &group.all {
                    authenticator(name, &format!("{entry_key}.all"), providers, report)?;
                }
                ChainItem::All(group.all.clone())
            }
        };
        chain.push(item);
    }
    for (j, name) in raw.authorizers.iter().enumerate() {
        let k = key(&format!("authorizers[{j}]"));
        match providers.get(name).map(|p| p.settings.type_name()) {
            Some("wasm") => {}
            Some(other) => {
                return Err(report.invalid(
                    k,
                    format!(
                        "`{name}` is an `{other}` provider, which authenticates; only `wasm` \
                         providers built for the authorizer world can be authorizers"
                    ),
                ));
            }
            None => return Err(unknown_provider(name, &k, providers, report)),
        }
    }
    // A route's own rules are asked only about paths under the route: one written outside
    // it (`path = "/admin"` on `/api`, meant as relative) would never apply; nor would one
    // naming MCP calls on a route that reads no MCP.
    for (j, rule) in raw.rules.iter().enumerate() {
        let mcp_target = [&rule.tool, &rule.resource, &rule.prompt, &rule.mcp_method]
            .into_iter()
            .any(Option::is_some);
        if mcp_target && !raw.mcp.unwrap_or(true) {
            return Err(report.invalid(
                key(&format!("rules[{j}]")),
                "names MCP calls (`tool`, `resource`, `prompt` or `mcp_method`) on a route with \
                 `mcp = false`, which reads no MCP, so the rule would never apply; remove \
                 `mcp = false` or the rule",
            ));
        }
        if let Some(rule_path) = rule.path.as_deref()
            && !path.is_empty()
            && !path_has_prefix(rule_path, &path)
        {
            return Err(report.invalid(
                key(&format!("rules[{j}].path")),
                format!(
                    "`{rule_path}` is outside this route (`{path}`), so the rule would never \
                     apply: rule paths are absolute, e.g. `{path}{rule_path}`"
                ),
            ));
        }
    }
    let mut rules = global_rules.to_vec();
    rules.extend(self::rules(&raw.rules, &key("rules"), report)?);
    let strip_headers = raw
        .strip_headers
        .iter()
        .enumerate()
        .map(|(j, h)| {
            HeaderName::from_bytes(h.trim().as_bytes()).map_err(|_| {
                report.invalid(
                    key(&format!("strip_headers[{j}]")),
                    format!("`{h}` is not a valid HTTP header name"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let fail_unavailable = match raw.on_error.as_deref() {
        None | Some("unavailable") => true,
        Some("deny") => false,
        Some(other) => {
            return Err(report.invalid(
                key("on_error"),
                format!(
                    "`{other}` is not a failure policy; use `unavailable` (503, default) or \
                     `deny` (401/403)"
                ),
            ));
        }
    };
    Ok(Route {
        path,
        upstream,
        chain,
        authorizers: raw.authorizers.clone(),
        rules,
        strip_headers,
        forward_auth_headers: raw.forward_auth_headers,
        mcp: raw.mcp.unwrap_or(true),
        // Narrowed to whether forward-auth is on once `[server]` is known.
        forward_auth: raw.forward_auth.unwrap_or(true),
        fail_unavailable,
        connect_timeout: millis(
            raw.connect_timeout_ms,
            5_000,
            &key("connect_timeout_ms"),
            report,
        )?,
        response_timeout: millis(
            raw.response_timeout_ms,
            30_000,
            &key("response_timeout_ms"),
            report,
        )?,
        // Checked by `upstream_side` once the file's folder is known.
        upstream_tls: None,
        upstream_auth: None,
    })
}

/// What a route's upstream side is checked against.
#[derive(Clone, Copy)]
struct Around<'a> {
    providers: &'a BTreeMap<String, Provider>,
    has_authorization_server: bool,
    public_url: &'a str,
    base_dir: &'a Path,
}

/// Whether `host` (a URL's) is a loopback name or address.
fn is_loopback_host(host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `upstream_tls` and `upstream_auth` of route `i`: TLS settings only for an `https://`
/// upstream, and a credential only where the caller's cannot also pass, and, for a token
/// exchange, only behind providers that read a bearer token.
fn upstream_side(
    i: usize,
    raw: &RawRoute,
    route: &mut Route,
    around: &Around<'_>,
    report: &Reporter,
) -> Result<(), ConfigError> {
    let Around {
        providers,
        has_authorization_server,
        public_url,
        base_dir,
    } = *around;
    let key = |field: &str| format!("routes[{i}].{field}");
    let Some(upstream) = &route.upstream else {
        // An embedded layer has no upstream: its own handlers need no credential.
        return Ok(());
    };
    let https = upstream.scheme_str() == Some("https");
    match &raw.upstream_tls {
        Some(_) if !https => {
            return Err(report.invalid(
                key("upstream_tls"),
                "applies to an `https://` upstream only; this one is `http://`",
            ));
        }
        Some(tls) => {
            let tls = tls.clone().validated(base_dir).map_err(|(field, reason)| {
                report.invalid(key(&format!("upstream_tls.{field}")), reason)
            })?;
            route.upstream_tls = Some(tls);
        }
        None if https => route.upstream_tls = Some(UpstreamTlsSettings::default()),
        None => {}
    }
    let Some(auth) = &raw.upstream_auth else {
        return Ok(());
    };
    if raw.forward_auth_headers {
        return Err(report.invalid(
            key("upstream_auth"),
            "cannot be combined with `forward_auth_headers = true`: the upstream would get \
             the caller's credential and the gateway's; choose one",
        ));
    }
    if !https && !auth.allows_plain_http() && !is_loopback_host(upstream.host()) {
        return Err(report.invalid(
            key("upstream"),
            "is plain `http://` off loopback and the route has `upstream_auth`: the upstream's \
             credential would cross the network in clear text. Use `https://`, or set \
             `upstream_auth.allow_plain_http = true` for a network that encrypts by itself (a \
             service mesh)",
        ));
    }
    let checked = auth.check(base_dir).map_err(|(field, reason)| {
        report.invalid(key(&format!("upstream_auth.{field}")), reason)
    })?;
    if let Checked::Token {
        subject: ExchangeSubject::Identity { audience },
        ..
    } = &checked
        && audience.starts_with(public_url)
    {
        return Err(report.invalid(
            key("upstream_auth.subject_audience"),
            format!(
                "`{audience}` is this gateway: a statement addressed to it could stand in for \
                 a token at its own routes. Name the upstream's authorization server"
            ),
        ));
    }
    if let Checked::Token {
        subject: ExchangeSubject::Identity { .. },
        ..
    } = &checked
        && !has_authorization_server
    {
        return Err(report.invalid(
            key("upstream_auth.subject"),
            "`identity` statements are signed by the gateway's authorization server; \
             configure `[authorization_server]` (its keys sign them), or use \
             `subject = \"caller_token\"`",
        ));
    }
    if let Checked::Token {
        exchange: true,
        subject: ExchangeSubject::CallerToken,
        ..
    } = &checked
    {
        let bearer = |name: &String| {
            matches!(
                providers.get(name).map(|p| &p.settings),
                Some(ProviderSettings::Jwt(_) | ProviderSettings::Issued)
            )
        };
        for item in &route.chain {
            // A group admits only when every member does, so one bearer reader is enough.
            let (name, reads_bearer) = match item {
                ChainItem::One(name) => (name, bearer(name)),
                ChainItem::All(names) => (&names[0], names.iter().any(bearer)),
            };
            if !reads_bearer {
                return Err(report.invalid(
                    key("upstream_auth"),
                    format!(
                        "a token exchange needs the caller's bearer token, and chain provider \
                         `{name}` admits callers without one; use only `jwt` or `issued` \
                         providers on this route, or `subject = \"identity\"`"
                    ),
                ));
            }
        }
    }
    route.upstream_auth = Some(checked);
    Ok(())
}

fn millis(
    value: Option<u64>,
    default: u64,
    key: &str,
    report: &Reporter,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(Duration::from_millis(default)),
        Some(0) => Err(report.invalid(
            key,
            format!("`0` would fail every request; use a positive number (default {default})"),
        )),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

fn upstream(text: &str, key: &str, report: &Reporter) -> Result<Uri, ConfigError> {
    let uri: Uri = text.parse().map_err(|_| {
        report.invalid(
            key,
            format!("`{text}` is not a URL; write e.g. `http://127.0.0.1:8000/mcp`"),
        )
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(report.invalid(
            key,
            format!(
                "`{text}` must start with `http://` or `https://`, e.g. \
                 `https://mcp.example.com/mcp`"
            ),
        ));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(report.invalid(
            key,
            format!(
                "`{text}` has user information (`user:password@`): a secret in the config \
                 file, and sent as part of `Host`. Give the upstream its credential with \
                 `upstream_auth` (a secret by reference)"
            ),
        ));
    }
    if uri.authority().is_none() || uri.query().is_some() {
        return Err(report.invalid(
            key,
            format!("`{text}` needs a host and no query, e.g. `http://127.0.0.1:8000/mcp`"),
        ));
    }
    Ok(uri)
}

fn authenticator(
    name: &str,
    key: &str,
    providers: &BTreeMap<String, Provider>,
    report: &Reporter,
) -> Result<(), ConfigError> {
    if providers.contains_key(name) {
        Ok(())
    } else {
        Err(unknown_provider(name, key, providers, report))
    }
}

fn unknown_provider(
    name: &str,
    key: &str,
    providers: &BTreeMap<String, Provider>,
    report: &Reporter,
) -> ConfigError {
    let known: Vec<&str> = providers.keys().map(String::as_str).collect();
    let known = if known.is_empty() {
        "none is defined".to_owned()
    } else {
        format!("defined: {}", known.join(", "))
    };
    report.invalid(
        key,
        format!("no provider is named `{name}` ({known}); add a `[providers.{name}]` table"),
    )
}

fn rules(raw: &[RuleSettings], key: &str, report: &Reporter) -> Result<Vec<Rule>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, settings)| {
            Rule::new(settings.clone())
                .map_err(|e| report.invalid(format!("{key}[{i}]"), e.to_string()))
        })
        .collect()
}

fn scopes_of(rules: &[RuleSettings]) -> BTreeSet<String> {
    rules
        .iter()
        .flat_map(|r| r.scopes.iter().cloned())
        .collect()
}

fn resource(
    raw: RawResource,
    rule_scopes: BTreeSet<String>,
    report: &Reporter,
) -> Result<Resource, ConfigError> {
    for (i, server) in raw.authorization_servers.iter().enumerate() {
        let ok = server.parse::<Uri>().ok().is_some_and(|u| {
            matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some()
        });
        if !ok {
            return Err(report.invalid(
                format!("resource.authorization_servers[{i}]"),
                format!("`{server}` is not an issuer URL such as `https://auth.example.com`"),
            ));
        }
    }
    let scopes_supported = if raw.scopes_supported.is_empty() {
        rule_scopes.into_iter().filter(|s| s != "*").collect()
    } else {
        raw.scopes_supported
    };
    Ok(Resource {
        authorization_servers: raw.authorization_servers,
        scopes_supported,
    })
}

/// RFC 8707 / MCP: a token is for one resource. A JWT provider on a route must accept the
/// route's resource URL (or the bare public URL) as audience, or tokens minted for this
/// gateway would be refused — and tokens for other services could be accepted.
fn check_jwt_audiences(
    routes: &[Route],
    providers: &BTreeMap<String, Provider>,
    server: &Server,
    report: &Reporter,
) -> Result<(), ConfigError> {
    for route in routes {
        let resource = format!("{}{}", server.public_url, route.path);
        let names = route.chain.iter().flat_map(|item| match item {
            ChainItem::One(name) => std::slice::from_ref(name).iter(),
            ChainItem::All(names) => names.iter(),
        });
        for name in names {
            let Some(ProviderSettings::Jwt(jwt)) = providers.get(name).map(|p| &p.settings) else {
                continue;
            };
            let accepted = jwt.audience.0.iter().any(|a| {
                a.trim_end_matches('/') == resource || a.trim_end_matches('/') == server.public_url
            });
            if !accepted {
                return Err(report.invalid(
                    format!("providers.{name}.audience"),
                    format!(
                        "{:?} does not include this gateway's resource `{resource}` (route `{}`); \
                         tokens must be minted for the resource they are used at: add \
                         `audience = \"{resource}\"`",
                        jwt.audience.0,
                        display_path(&route.path),
                    ),
                ));
            }
        }
    }
    Ok(())
}
