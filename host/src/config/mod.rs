//! The configuration file: TOML read in two stages.
//!
//! 1. [`parse_str`]: TOML syntax, `${VAR}` expansion of string values ([`expand`]), then
//!    the shape as serde types that refuse unknown keys ([`raw`]).
//! 2. Validation into the types the gateway runs with ([`model`]): every value checked,
//!    every error naming the file, the key path and the bad value, and the fix.
//!
//! [`load`] does both and is the one entry point for `serve`, `check` and `eval` (and for
//! reloading); [`load_embedded`] / [`load_str_embedded`] do the same for a tower layer
//! ([`crate::embed`]), where routes need no `upstream` ([`Purpose`]). [`assemble`] then
//! builds the providers: built-in validators, and Wasm components compiled and configured
//! by the runtime.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"
//! public_url = "https://mcp.example.com"
//!
//! [[routes]]
//! path = "/mcp"
//! upstream = "http://127.0.0.1:8000/mcp"
//! chain = ["keys"]
//!
//! [providers.keys]
//! type = "api_key"
//! keys = [{ name = "ci", hash = "sha256:…", scopes = ["mcp:read"] }]
//! ```

pub mod assemble;
mod error;
mod expand;
pub mod model;
mod providers;
pub mod raw;
pub(crate) mod rewrite;
mod validate;

use std::path::Path;

pub use assemble::{Assembled, BuiltProvider, assemble, needs_wasm};
pub use error::ConfigError;
pub use model::{Config, Purpose};
pub use validate::{DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES};

use self::error::Reporter;
use self::expand::{ExpandError, expand_value};
use self::raw::RawConfig;
use crate::secret::SecretRef;

/// Command-line settings that take precedence over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<std::net::SocketAddr>,
    /// `--providers`.
    pub providers_dir: Option<std::path::PathBuf>,
}

/// Reads and validates the config file at `path`. Relative paths inside it are taken from
/// the file's folder; `${VAR}` reads the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, &Overrides::default())
}

/// [`load`] with command-line overrides applied before validation.
pub fn load_with(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    load_file(path, overrides, Purpose::Gateway)
}

/// [`load`] for an embedded tower layer: routes may leave `upstream` out, and it is ignored
/// when present.
pub fn load_embedded(path: &Path) -> Result<Config, ConfigError> {
    load_file(path, &Overrides::default(), Purpose::Embedded)
}

fn load_file(path: &Path, overrides: &Overrides, purpose: Purpose) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    load_text(
        &text,
        &path.display().to_string(),
        base_dir,
        overrides,
        purpose,
    )
}

/// Validates config `text` named `source` in messages, with relative paths taken from
/// `base_dir` and `${VAR}` read from the process environment.
pub fn load_str(text: &str, source: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    load_str_with(text, source, base_dir, &Overrides::default())
}

/// [`load_str`] with command-line overrides.
pub fn load_str_with(
    text: &str,
    source: &str,
    base_dir: &Path,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    load_text(text, source, base_dir, overrides, Purpose::Gateway)
}

/// [`load_str`] for an embedded tower layer (see [`load_embedded`]).
pub fn load_str_embedded(text: &str, source: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    load_text(
        text,
        source,
        base_dir,
        &Overrides::default(),
        Purpose::Embedded,
    )
}

/// Stage two alone, on a [`RawConfig`] built in code (the embedding builder); `source` names
/// it in messages.
pub fn validate_raw(
    raw: RawConfig,
    source: &str,
    base_dir: &Path,
    purpose: Purpose,
) -> Result<Config, ConfigError> {
    validate::validate(raw, &reporter(source), base_dir, purpose)
}

fn load_text(
    text: &str,
    source: &str,
    base_dir: &Path,
    overrides: &Overrides,
    purpose: Purpose,
) -> Result<Config, ConfigError> {
    let value = expanded(text, source, &|var| std::env::var(var).ok())?;
    // Every secret reference parsed while the file is shaped and validated is recorded: the
    // loader reads the `vault://` ones and the reloader watches the `file://` ones.
    let (config, secret_refs) = crate::secret::collecting(|| {
        let mut raw: RawConfig = shaped(value.clone(), source)?;
        if let Some(listen) = overrides.listen {
            raw.server.listen = Some(listen.to_string());
        }
        if let Some(dir) = &overrides.providers_dir {
            raw.server.providers_dir = Some(dir.display().to_string());
        }
        validate::validate(raw, &reporter(source), base_dir, purpose)
    });
    let mut config = config?;
    if config.vault.is_none()
        && let Some(reference) = secret_refs
            .iter()
            .find(|r| matches!(r, SecretRef::Vault(_)))
    {
        let written = reference.to_string();
        return Err(ConfigError::Invalid {
            file: source.to_owned(),
            key: key_of(&value, &written).unwrap_or_else(|| "(top level)".to_owned()),
            message: format!(
                "`{written}` is a Vault reference, and the config has no `[vault]` section: \
                 add one with `address` and `token` (or `approle`)"
            ),
        });
    }
    config.secret_refs = secret_refs;
    Ok(config)
}

/// The key path of the first string value equal to `needle`.
fn key_of(value: &toml::Value, needle: &str) -> Option<String> {
    match value {
        toml::Value::String(s) => (s == needle).then(String::new),
        toml::Value::Table(table) => table
            .iter()
            .find_map(|(key, value)| key_of(value, needle).map(|rest| join_key(key, &rest))),
        toml::Value::Array(items) => items.iter().enumerate().find_map(|(i, value)| {
            key_of(value, needle).map(|rest| {
                if rest.is_empty() || rest.starts_with('[') {
                    format!("[{i}]{rest}")
                } else {
                    format!("[{i}].{rest}")
                }
            })
        }),
        _ => None,
    }
}

fn join_key(key: &str, rest: &str) -> String {
    if rest.is_empty() {
        key.to_owned()
    } else if rest.starts_with('[') {
        format!("{key}{rest}")
    } else {
        format!("{key}.{rest}")
    }
}

/// Stage one only: syntax, `${VAR}` expansion and shape. Used to check config snippets that
/// are not whole files (every section may be absent).
pub fn parse_str(text: &str, source: &str) -> Result<RawConfig, ConfigError> {
    parse_str_with(text, source, &|var| std::env::var(var).ok())
}

/// Stage one with an explicit variable lookup (tests pass their own environment).
pub fn parse_str_with(
    text: &str,
    source: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<RawConfig, ConfigError> {
    shaped(expanded(text, source, lookup)?, source)
}

/// Syntax and `${VAR}` expansion: the document before it is shaped.
fn expanded(
    text: &str,
    source: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<toml::Value, ConfigError> {
    let mut value = toml_value(text, source)?;
    expand_value(&mut value, &mut Vec::new(), lookup).map_err(|e| match e {
        ExpandError::Unset { key, var } => ConfigError::UnsetVariable {
            file: source.to_owned(),
            key,
            var,
        },
        ExpandError::Malformed { key } => ConfigError::Invalid {
            file: source.to_owned(),
            key,
            message: "has a malformed `${…}`: write `${VAR}`, `${VAR:-default}`, or `$${` for \
                      a literal `${`"
                .to_owned(),
        },
    })?;
    Ok(value)
}

/// A TOML document, or the syntax error with its line and column.
pub(crate) fn toml_value(text: &str, source: &str) -> Result<toml::Value, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            file: source.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
    Ok(toml::Value::Table(table))
}

/// `value` as `T`, or the shape error naming the key path (unknown key, wrong type, …).
pub(crate) fn shaped<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    source: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Shape {
            file: source.to_owned(),
            key: if key == "." {
                "(top level)".to_owned()
            } else {
                key
            },
            message: shape_message(&e.into_inner().to_string()),
        }
    })
}

/// The deserializer's message without the `in `…`` line `toml` appends: the key path is
/// already in front of it.
fn shape_message(message: &str) -> String {
    let message = message.trim_end();
    match message.rfind("\nin `") {
        Some(at) => message[..at].trim_end().to_owned(),
        None => message.to_owned(),
    }
}

fn reporter(source: &str) -> Reporter {
    Reporter {
        file: source.to_owned(),
    }
}
