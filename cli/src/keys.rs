//! `portcullis keys add|list|revoke`: the API keys of an `api_key` provider, kept in its
//! keys file (`keys_file`). The file's format, checks and safe rewrite are the library's
//! ([`portcullis::engine::api_key::keys_file`]); this module finds the file, turns
//! arguments into an entry and words the answers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use portcullis::engine::api_key::hash_key;
use portcullis::engine::api_key::keys_file::{self, KeysFileError, RawKey, Revoked};
use time::OffsetDateTime;

use crate::commands::CliError;

/// `keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,
    /// The keys file [default: the `keys_file` of the config's `api_key` provider].
    #[arg(long, global = true, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The `api_key` provider whose `keys_file` to use, when the config has several.
    #[arg(long, global = true, value_name = "NAME")]
    pub provider: Option<String>,
    /// The config that names the keys file.
    #[arg(
        long,
        short,
        global = true,
        env = "PORTCULLIS_CONFIG",
        value_name = "FILE",
        default_value = "portcullis.toml"
    )]
    pub config: PathBuf,
}

/// `keys` commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key and print it, once: only its hash is stored. A keys file that does not
    /// exist yet is created.
    Add(AddKeyArgs),
    /// List the keys (never a key): name, scopes, created, expires, revoked.
    List,
    /// Revoke a key: it is refused once the gateway has reloaded the file, and, when the
    /// config (`--config`) has `[shared]`, by every replica from its next request.
    Revoke {
        /// The key's name.
        name: String,
        /// Why, kept in the file.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `keys add`.
#[derive(Debug, Args)]
pub struct AddKeyArgs {
    /// The key's name, the caller's subject: 1 to 64 letters, digits, `.`, `_` or `-`.
    pub name: String,
    /// Scopes the key grants, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, value_name = "SCOPE,…")]
    pub scopes: Vec<String>,
    /// When it stops working: a lifetime (`30d`, `12h`, `90m`, `2w`) or an RFC 3339 instant
    /// (`2027-01-01T00:00:00Z`) [default: never].
    #[arg(long, value_name = "WHEN")]
    pub expires: Option<String>,
}

/// Runs a `keys` command; returns what to print.
pub fn run(args: &KeysArgs) -> Result<String, CliError> {
    let Target {
        file,
        provider,
        shared,
    } = find_keys_file(args)?;
    let now = OffsetDateTime::now_utc();
    match &args.command {
        KeysCommand::Add(add) => {
            let expires_at = add
                .expires
                .as_deref()
                .map(|value| keys_file::expiry(value, now))
                .transpose()
                .map_err(|e| CliError::Usage(format!("--expires: {e}")))?;
            let key = keys_file::new_key()?;
            let entry = RawKey {
                name: add.name.clone(),
                hash: hash_key(key.expose()),
                scopes: add.scopes.clone(),
                created: Some(keys_file::timestamp(now)),
                expires_at: expires_at.clone(),
                ..RawKey::default()
            };
            keys_file::add(&file, &entry)?;
            let mut out = format!("name     {}\nkey      {}\n", entry.name, key.expose());
            let _ = writeln!(
                out,
                "expires  {}\n\nAdded to {}. The key is not stored, only its hash: copy it now, \
                 it cannot be shown again. Send it as `Authorization: Bearer <key>` or \
                 `X-API-Key: <key>`.",
                expires_at.as_deref().unwrap_or("never"),
                file.display()
            );
            Ok(out)
        }
        KeysCommand::List => list(&file),
        KeysCommand::Revoke { name, reason } => {
            let mut out = match keys_file::revoke(&file, name, reason.as_deref(), now)? {
                Revoked::Now => format!(
                    "key `{name}` revoked in {}: it is refused once the gateway has reloaded \
                     the file\n",
                    file.display()
                ),
                Revoked::Already => format!(
                    "key `{name}` was already revoked in {}; the file is unchanged\n",
                    file.display()
                ),
            };
            // Published again when already revoked: the first publication may have failed.
            if let (Some(shared), Some(provider)) = (shared, provider) {
                publish_revocation(&file, name, &provider, &shared)?;
                let _ = writeln!(
                    out,
                    "published to the shared Redis: every replica refuses it from its next \
                     request"
                );
            }
            Ok(out)
        }
    }
}

/// Adds the hash of key `name` to the fleet's revoked keys in Redis (`[shared]`).
fn publish_revocation(
    file: &Path,
    name: &str,
    provider: &str,
    shared: &portcullis::shared::RawShared,
) -> Result<(), CliError> {
    let failed = |why: String| {
        CliError::Usage(format!(
            "key `{name}` is revoked in {}, but not published to the shared Redis ({why}); \
             run the command again once Redis answers, or replicas refuse it only once they \
             reload the file",
            file.display()
        ))
    };
    let keys = keys_file::read(file).map_err(|e| failed(e.to_string()))?;
    let hash = keys
        .keys
        .iter()
        .find(|k| k.name == name)
        .map(|k| k.hash.to_ascii_lowercase())
        .ok_or_else(|| failed(format!("no key `{name}` in the file")))?;
    let settings = shared
        .check()
        .map_err(|(key, reason)| failed(format!("`shared.{key}`: {reason}")))?;
    let state = portcullis::shared::SharedState::new(&settings).map_err(failed)?;
    // On a thread of its own: `run` is called from inside the binary's runtime (and from
    // tests'), where a runtime cannot be blocked on.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime
                    .block_on(state.revoke_key(provider, &hash))
                    .map_err(|e| e.to_string())
            })
            .join()
            .unwrap_or_else(|_| Err("the publishing thread panicked".to_owned()))
    })
    .map_err(failed)
}

/// Where a `keys` command works: the file, and with `--config`, the provider it belongs to
/// and the config's `[shared]` section (a revocation is published there too).
struct Target {
    file: PathBuf,
    provider: Option<String>,
    shared: Option<portcullis::shared::RawShared>,
}

/// `--file`, else the `keys_file` of the config's `api_key` provider (`--provider`, or the
/// only one with a `keys_file`), relative to the config's folder as the gateway reads it.
/// Only the keys needed are read: the commands must work on any config the running gateway
/// would load.
fn find_keys_file(args: &KeysArgs) -> Result<Target, CliError> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        providers: std::collections::BTreeMap<String, Provider>,
        shared: Option<portcullis::shared::RawShared>,
    }
    #[derive(serde::Deserialize)]
    struct Provider {
        #[serde(rename = "type")]
        kind: Option<String>,
        keys_file: Option<String>,
    }

    if let Some(file) = &args.file {
        return Ok(Target {
            file: file.clone(),
            provider: None,
            shared: None,
        });
    }
    let config = &args.config;
    let text = std::fs::read_to_string(config).map_err(|source| CliError::Input {
        what: format!(
            "config file `{}` (name the keys file with --file, or the config with --config)",
            config.display()
        ),
        source,
    })?;
    let parsed: Config = toml::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "{}: cannot read `providers`: {}",
            config.display(),
            e.message()
        ))
    })?;
    let with_file: Vec<(String, String)> = parsed
        .providers
        .into_iter()
        .filter(|(_, p)| p.kind.as_deref() == Some("api_key"))
        .filter_map(|(name, p)| p.keys_file.map(|file| (name, file)))
        .collect();
    let chosen = match (&args.provider, with_file.as_slice()) {
        (Some(wanted), _) => with_file
            .iter()
            .find(|(name, _)| name == wanted)
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "{} has no `api_key` provider `{wanted}` with a `keys_file`",
                    config.display()
                ))
            })?,
        (None, [only]) => only,
        (None, []) => {
            return Err(CliError::Usage(format!(
                "{} has no `api_key` provider with a `keys_file`: add `keys_file = \
                 \"keys.toml\"` to one, or name the file with --file",
                config.display()
            )));
        }
        (None, several) => {
            let names: Vec<&str> = several.iter().map(|(name, _)| name.as_str()).collect();
            return Err(CliError::Usage(format!(
                "{} has several `api_key` providers with a `keys_file` ({}); choose one with \
                 --provider",
                config.display(),
                names.join(", ")
            )));
        }
    };
    Ok(Target {
        file: config.parent().unwrap_or(Path::new("")).join(&chosen.1),
        provider: Some(chosen.0.clone()),
        shared: parsed.shared,
    })
}

fn list(file: &Path) -> Result<String, CliError> {
    if !file.exists() {
        return Ok(format!(
            "no keys: {} does not exist yet (`portcullis keys add` creates it)\n",
            file.display()
        ));
    }
    let keys = keys_file::read(file).map_err(KeysFileError::from)?.keys;
    if keys.is_empty() {
        return Ok(format!("no keys in {}\n", file.display()));
    }
    let header = ["NAME", "SCOPES", "CREATED", "EXPIRES", "REVOKED"].map(str::to_owned);
    let rows: Vec<[String; 5]> = std::iter::once(header)
        .chain(keys.iter().map(|key| {
            let revoked = match (key.revoked, &key.revoked_at, &key.revoked_reason) {
                (false, _, _) => "no".to_owned(),
                (true, at, reason) => {
                    let mut text = at.clone().unwrap_or_else(|| "yes".to_owned());
                    if let Some(reason) = reason {
                        let _ = write!(text, " ({reason})");
                    }
                    text
                }
            };
            [
                key.name.clone(),
                key.scopes.join(","),
                key.created.clone().unwrap_or_else(|| "-".to_owned()),
                key.expires_at.clone().unwrap_or_else(|| "never".to_owned()),
                revoked,
            ]
        }))
        .collect();
    let widths: Vec<usize> = (0..5)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out)
}
