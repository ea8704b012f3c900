//! The composition root: from a configuration to a [`Site`] that can serve — the config
//! validated, the Wasm runtime started when a provider needs one, every provider built
//! ([`config::assemble`]), and the site's routes, origins and metadata derived from both.
//!
//! Every way of starting the engine goes through here, so they cannot drift apart: the
//! `portcullis` binary's `serve`, `check` and `eval`, the [reloader](crate::reload), the
//! [tower layer](crate::embed) and the tests.
//!
//! - [`from_source`] reads a config file (with command-line overrides): the gateway, its
//!   reloads, `check` and `eval`.
//! - [`from_config`] starts from a [`Config`] already validated: the embedded demo (its TOML
//!   is text), the tower layer and its builder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{self, Config, ConfigError, Overrides};
use crate::gateway::Site;
use crate::oauth::Ledger;
use crate::secret::{SecretCache, SecretsError};
use crate::wasm::{RuntimeConfig, WasmRuntime};

/// Where a gateway's configuration comes from: the config file and the command-line
/// settings that take precedence over it. A reload repeats exactly this.
#[derive(Debug, Clone)]
pub struct Source {
    /// The config file.
    pub config: PathBuf,
    /// `--providers`: the directory of `.wasm` providers (overrides `server.providers_dir`).
    pub providers: Option<PathBuf>,
    /// `--listen` (overrides `server.listen`).
    pub listen: Option<SocketAddr>,
}

impl Source {
    /// The config file at `config`, with no overrides.
    pub fn file(config: impl Into<PathBuf>) -> Self {
        Self {
            config: config.into(),
            providers: None,
            listen: None,
        }
    }

    /// The overrides as the config loader takes them (a relative providers directory is
    /// made absolute: it was given relative to the working directory, not to the file).
    pub fn overrides(&self) -> Overrides {
        overrides(self.providers.as_deref(), self.listen)
    }
}

/// `--providers` and `--listen` as the config loader takes them.
pub fn overrides(providers: Option<&Path>, listen: Option<SocketAddr>) -> Overrides {
    Overrides {
        listen,
        providers_dir: providers.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_owned())),
    }
}

/// What one site hands to the next: the Wasm runtime (compiled components are cached in it),
/// the authorization server's [`Ledger`] (revocations and spent assertions must outlive
/// a reload) and the [`SecretCache`] (the last good Vault values, served while Vault is
/// down). `None` or a default starts fresh.
#[derive(Debug, Clone, Default)]
pub struct Reuse {
    /// The Wasm runtime; one is started when the config needs one and none is given.
    pub runtime: Option<WasmRuntime>,
    /// The authorization server's ledger.
    pub ledger: Arc<Ledger>,
    /// The last good values of `vault://` references.
    pub secrets: Arc<SecretCache>,
}

impl From<Option<WasmRuntime>> for Reuse {
    fn from(runtime: Option<WasmRuntime>) -> Self {
        Self {
            runtime,
            ledger: Arc::default(),
            secrets: Arc::default(),
        }
    }
}

/// A configuration and everything built from it.
#[derive(Debug)]
pub struct Loaded {
    /// The validated config.
    pub config: Config,
    /// The site to serve.
    pub site: Site,
    /// The Wasm runtime the providers run on, when the config needed one or one was given.
    /// Keep it for reloads (compiled components are cached in it) and for its epoch ticker,
    /// which Wasm deadlines need.
    pub runtime: Option<WasmRuntime>,
    /// The authorization server's ledger, to hand to the next site.
    pub ledger: Arc<Ledger>,
    /// The secret cache, to hand to the next site.
    pub secrets: Arc<SecretCache>,
}

impl Loaded {
    /// What to hand to the next site (a [`Reloader`](crate::reload::Reloader)).
    pub fn reuse(&self) -> Reuse {
        Reuse {
            runtime: self.runtime.clone(),
            ledger: self.ledger.clone(),
            secrets: self.secrets.clone(),
        }
    }
}

/// Why a configuration could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// The configuration is invalid, or a provider in it could not be built.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The config has Wasm providers and the Wasm runtime could not start.
    #[error("the Wasm runtime could not start: {0}")]
    Runtime(String),
    /// A `vault://` reference could not be read and has no last good value.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

/// Reads the config file of `source` and builds its site, reusing what `reuse` holds (a
/// Wasm runtime, or `None` to start one when the config has Wasm providers).
pub async fn from_source(source: &Source, reuse: impl Into<Reuse>) -> Result<Loaded, SiteError> {
    let config = config::load_with(&source.config, &source.overrides())?;
    from_config(config, reuse).await
}

/// Builds the site of a validated `config` (see [`from_source`] for `reuse`).
pub async fn from_config(config: Config, reuse: impl Into<Reuse>) -> Result<Loaded, SiteError> {
    let Reuse {
        runtime,
        ledger,
        secrets,
    } = reuse.into();
    // Vault is read before anything is built: settings resolve their secrets synchronously.
    secrets.prepare(&config).await?;
    let runtime = match runtime {
        Some(runtime) => Some(runtime),
        None if config::needs_wasm(&config) => Some(
            WasmRuntime::new(RuntimeConfig::default())
                .map_err(|e| SiteError::Runtime(format!("{e:#}")))?,
        ),
        None => None,
    };
    let assembled = config::assemble(&config, runtime.as_ref(), &ledger).await?;
    let site = Site::new(&config, assembled);
    Ok(Loaded {
        config,
        site,
        runtime,
        ledger,
        secrets,
    })
}
