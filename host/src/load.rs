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

use crate::config::{self, Config, ConfigError, Overrides};
use crate::gateway::Site;
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
}

/// Reads the config file of `source` and builds its site. `runtime` serves Wasm providers;
/// one is started when the config has some and none is given.
pub async fn from_source(
    source: &Source,
    runtime: Option<WasmRuntime>,
) -> Result<Loaded, SiteError> {
    let config = config::load_with(&source.config, &source.overrides())?;
    from_config(config, runtime).await
}

/// Builds the site of a validated `config` (see [`from_source`] for `runtime`).
pub async fn from_config(
    config: Config,
    runtime: Option<WasmRuntime>,
) -> Result<Loaded, SiteError> {
    let runtime = match runtime {
        Some(runtime) => Some(runtime),
        None if config::needs_wasm(&config) => Some(
            WasmRuntime::new(RuntimeConfig::default())
                .map_err(|e| SiteError::Runtime(format!("{e:#}")))?,
        ),
        None => None,
    };
    let assembled = config::assemble(&config, runtime.as_ref()).await?;
    let site = Site::new(&config, assembled);
    Ok(Loaded {
        config,
        site,
        runtime,
    })
}
