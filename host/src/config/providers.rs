//! Validation of `[providers.NAME]` tables. Built-in validators check their own settings
//! when they are built ([`super::assemble`]); this checks what the config layer owns: the
//! name, `on_deny`, and a Wasm provider's component, limits, secrets, credential headers and
//! instance mode.

use std::path::Path;
use std::time::Duration;

use http::HeaderName;

use super::error::{ConfigError, Reporter};
use super::model::{Provider, ProviderSettings, Server, WasmSettings};
use super::raw::{RawLimits, RawProvider, RawProviderSettings, RawWasm};
use crate::engine::OnDeny;
use crate::wasm::{InstanceMode, Limits};

/// Longest accepted `limits.timeout_ms`.
const MAX_TIMEOUT_MS: u64 = 10_000;
/// Longest accepted `limits.configure_timeout_ms`.
const MAX_CONFIGURE_TIMEOUT_MS: u64 = 60_000;
/// Largest accepted `limits.memory_mib` (the runtime's per-instance ceiling).
const MAX_MEMORY_MIB: u64 = 256;
/// Largest accepted `limits.max_concurrent_calls` (the runtime's instance pool).
const MAX_CONCURRENT_CALLS: u64 = 1000;
/// Largest accepted `limits.cache_entries`.
const MAX_CACHE_ENTRIES: u64 = 10_000_000;
/// Largest accepted `limits.cache_key_bytes`.
const MAX_CACHE_KEY_BYTES: u64 = 64 << 10;
/// Largest accepted `limits.cache_value_bytes`.
const MAX_CACHE_VALUE_BYTES: u64 = 16 << 20;
/// Largest accepted `limits.cache_mib`.
const MAX_CACHE_MIB: u64 = 4096;

pub(crate) fn validate_provider(
    name: &str,
    raw: RawProvider,
    report: &Reporter,
    base_dir: &Path,
    server: &Server,
    identity_ca: bool,
) -> Result<Provider, ConfigError> {
    let key = format!("providers.{name}");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(report.invalid(
            &key,
            format!("`{name}` is not a provider name; use letters, digits, `-` and `_`"),
        ));
    }
    let on_deny = match raw.on_deny.as_deref() {
        None | Some("stop") => OnDeny::Stop,
        Some("next") => OnDeny::Next,
        Some(other) => {
            return Err(report.invalid(
                format!("{key}.on_deny"),
                format!(
                    "`{other}` is not a deny policy; use `stop` (default: a denial is final) or \
                     `next` (try the next provider)"
                ),
            ));
        }
    };
    let settings = match raw.settings {
        RawProviderSettings::Anonymous(s) => ProviderSettings::Anonymous(s),
        RawProviderSettings::ApiKey(mut s) => {
            s.keys_file = s.keys_file.map(|file| base_dir.join(file));
            ProviderSettings::ApiKey(s)
        }
        RawProviderSettings::Jwt(s) => ProviderSettings::Jwt(s),
        RawProviderSettings::Issued(_) => ProviderSettings::Issued,
        RawProviderSettings::Mtls(s) => {
            if server.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) && !identity_ca {
                return Err(report.invalid(
                    &key,
                    "an `mtls` provider needs client certificates: set `[server.tls]` with \
                     `client_ca` (and `client_auth = \"optional\"` or `\"required\"`), or \
                     `[identity]` for certificates of the gateway's own CA",
                ));
            }
            ProviderSettings::Mtls(s)
        }
        RawProviderSettings::Wasm(w) => {
            ProviderSettings::Wasm(wasm(&key, w, report, base_dir, &server.providers_dir)?)
        }
    };
    Ok(Provider {
        name: name.to_owned(),
        on_deny,
        settings,
    })
}

fn wasm(
    key: &str,
    raw: RawWasm,
    report: &Reporter,
    base_dir: &Path,
    providers_dir: &Path,
) -> Result<WasmSettings, ConfigError> {
    let component = if raw.component.is_empty() {
        return Err(report.invalid(
            format!("{key}.component"),
            "is empty; name a component in the providers directory (`partner-token`) or a \
             `.wasm` path",
        ));
    } else if raw.component.ends_with(".wasm") || raw.component.contains('/') {
        base_dir.join(&raw.component)
    } else {
        providers_dir.join(format!("{}.wasm", raw.component))
    };
    let config_json = match raw.config {
        None => "{}".to_owned(),
        Some(table) => serde_json::to_string(&table).map_err(|e| {
            report.invalid(
                format!("{key}.config"),
                format!("cannot be passed to the provider as JSON: {e}"),
            )
        })?,
    };
    let limits = limits(key, &raw.limits, report)?;
    let credential_headers = raw
        .credential_headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            HeaderName::from_bytes(h.trim().as_bytes()).map_err(|_| {
                report.invalid(
                    format!("{key}.credential_headers[{i}]"),
                    format!(
                        "`{h}` is not a valid HTTP header name; list the headers this provider \
                         reads its credential from, e.g. `[\"x-partner-token\"]`"
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let instances = match raw.instances.as_deref() {
        None | Some("pooled") => InstanceMode::default(),
        Some("fresh") => InstanceMode::Fresh,
        Some(other) => {
            return Err(report.invalid(
                format!("{key}.instances"),
                format!(
                    "`{other}` is not an instance mode; use `pooled` (reuse instances, default) \
                     or `fresh` (a new instance per request)"
                ),
            ));
        }
    };
    Ok(WasmSettings {
        component,
        config_json,
        secrets: raw.secrets,
        body: raw.body,
        credential_headers,
        limits,
        instances,
    })
}

/// The defaults with the operator's `limits = { … }` applied, each value range-checked.
fn limits(key: &str, raw: &RawLimits, report: &Reporter) -> Result<Limits, ConfigError> {
    let mut limits = Limits::default();
    let range = |name: &str, value: Option<u64>, max: u64, hint: &str| match value {
        Some(v) if !(1..=max).contains(&v) => Err(report.invalid(
            format!("{key}.limits.{name}"),
            format!("`{v}` is out of range; use 1 to {max} ({hint})"),
        )),
        other => Ok(other),
    };
    let bytes = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    if let Some(ms) = range(
        "timeout_ms",
        raw.timeout_ms,
        MAX_TIMEOUT_MS,
        "a provider runs on the request path; the default is 20",
    )? {
        limits.timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = range(
        "configure_timeout_ms",
        raw.configure_timeout_ms,
        MAX_CONFIGURE_TIMEOUT_MS,
        "creating an instance can happen on the request path; the default is 1000",
    )? {
        limits.configure_timeout = Duration::from_millis(ms);
    }
    if let Some(mib) = range(
        "memory_mib",
        raw.memory_mib,
        MAX_MEMORY_MIB,
        "the default is 16",
    )? {
        limits.memory_bytes = bytes(mib << 20);
    }
    if let Some(n) = range(
        "max_concurrent_calls",
        raw.max_concurrent_calls,
        MAX_CONCURRENT_CALLS,
        "calls over it wait until their deadline, then fail closed; the default is 64",
    )? {
        limits.max_concurrent_calls = bytes(n);
    }
    if let Some(n) = range(
        "cache_entries",
        raw.cache_entries,
        MAX_CACHE_ENTRIES,
        "the default is 100000",
    )? {
        limits.max_cache_entries = bytes(n);
    }
    if let Some(n) = range(
        "cache_key_bytes",
        raw.cache_key_bytes,
        MAX_CACHE_KEY_BYTES,
        "the default is 512",
    )? {
        limits.max_cache_key_bytes = bytes(n);
    }
    if let Some(n) = range(
        "cache_value_bytes",
        raw.cache_value_bytes,
        MAX_CACHE_VALUE_BYTES,
        "the default is 65536",
    )? {
        limits.max_cache_value_bytes = bytes(n);
    }
    if let Some(mib) = range(
        "cache_mib",
        raw.cache_mib,
        MAX_CACHE_MIB,
        "the cache lives in the gateway's own memory; the default is 16",
    )? {
        limits.max_cache_bytes = bytes(mib << 20);
    }
    Ok(limits)
}
