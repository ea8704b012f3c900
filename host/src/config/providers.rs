//! Validation of `[providers.NAME]` tables. Built-in validators check their own settings
//! when they are built ([`super::assemble`]); this checks what the config layer owns: the
//! name, `on_deny`, and a Wasm provider's component, limits, secrets and instance mode.

use std::path::Path;
use std::time::Duration;

use super::error::{ConfigError, Reporter};
use super::model::{Provider, ProviderSettings, Server, WasmSettings};
use super::raw::{RawProvider, RawProviderSettings, RawWasm};
use crate::engine::OnDeny;
use crate::wasm::InstanceMode;

/// Longest accepted `limits.timeout_ms`.
const MAX_TIMEOUT_MS: u64 = 10_000;
/// Largest accepted `limits.memory_mib` (the runtime's per-instance ceiling).
const MAX_MEMORY_MIB: u64 = 256;

pub(crate) fn validate_provider(
    name: &str,
    raw: RawProvider,
    report: &Reporter,
    base_dir: &Path,
    server: &Server,
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
        RawProviderSettings::ApiKey(s) => ProviderSettings::ApiKey(s),
        RawProviderSettings::Jwt(s) => ProviderSettings::Jwt(s),
        RawProviderSettings::Mtls(s) => {
            if server.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
                return Err(report.invalid(
                    &key,
                    "an `mtls` provider needs client certificates: set `[server.tls]` with \
                     `client_ca` (and `client_auth = \"optional\"` or `\"required\"`)",
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
    let timeout = match raw.limits.timeout_ms {
        None => None,
        Some(ms @ 1..=MAX_TIMEOUT_MS) => Some(Duration::from_millis(ms)),
        Some(ms) => {
            return Err(report.invalid(
                format!("{key}.limits.timeout_ms"),
                format!(
                    "`{ms}` is out of range; use 1 to {MAX_TIMEOUT_MS} (a provider runs on the \
                     request path; the default is 20)"
                ),
            ));
        }
    };
    let memory_bytes = match raw.limits.memory_mib {
        None => None,
        Some(mib @ 1..=MAX_MEMORY_MIB) => usize::try_from(mib << 20).ok(),
        Some(mib) => {
            return Err(report.invalid(
                format!("{key}.limits.memory_mib"),
                format!("`{mib}` is out of range; use 1 to {MAX_MEMORY_MIB} (the default is 16)"),
            ));
        }
    };
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
        timeout,
        memory_bytes,
        instances,
    })
}
