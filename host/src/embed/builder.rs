//! [`Builder`]: an embedded layer's configuration written in code. It fills the same raw
//! config types the TOML file is read into, then runs the same validation
//! ([`config::validate_raw`]) and assembly, so a mistake gets the same error as in a file.

use std::path::PathBuf;

use super::AuthLayer;
use crate::config::raw::{RawChainEntry, RawConfig, RawProvider, RawProviderSettings, RawRoute};
use crate::config::{self, Purpose};
use crate::engine::RuleSettings;
use crate::load::SiteError;
use crate::wasm::WasmRuntime;

/// Builds an [`AuthLayer`] in code; see the [module docs](super) for an example.
#[derive(Debug, Default)]
pub struct Builder {
    raw: RawConfig,
    base_dir: Option<PathBuf>,
    runtime: Option<WasmRuntime>,
}

impl Builder {
    /// The service's canonical public URL: the resource named in challenges and metadata
    /// (`server.public_url`). Default `http://127.0.0.1:8080`.
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.raw.server.public_url = Some(url.into());
        self
    }

    /// Adds provider `name` (`[providers.NAME]`); a denial by it stops the chain.
    pub fn provider(mut self, name: impl Into<String>, settings: RawProviderSettings) -> Self {
        self.raw.providers.insert(
            name.into(),
            RawProvider {
                on_deny: None,
                settings,
            },
        );
        self
    }

    /// Guards the path prefix `path` (segment-wise) with `chain`, providers tried in order.
    /// Request bodies are not parsed: use [`mcp_route`](Self::mcp_route) for MCP endpoints.
    pub fn route(self, path: &str, chain: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.add_route(path, chain, false)
    }

    /// Guards the MCP endpoint under `path` with `chain`: JSON-RPC bodies are parsed, so
    /// rules on `mcp_method`, `tool`, `resource` and `prompt` apply, and listings are
    /// filtered.
    pub fn mcp_route(self, path: &str, chain: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.add_route(path, chain, true)
    }

    fn add_route(
        mut self,
        path: &str,
        chain: impl IntoIterator<Item = impl Into<String>>,
        mcp: bool,
    ) -> Self {
        self.raw.routes.push(RawRoute {
            path: path.to_owned(),
            chain: chain
                .into_iter()
                .map(|name| RawChainEntry::One(name.into()))
                .collect(),
            mcp: Some(mcp),
            ..RawRoute::default()
        });
        self
    }

    /// Adds a scope rule for every route (`[[rules]]`).
    pub fn rule(mut self, rule: RuleSettings) -> Self {
        self.raw.rules.push(rule);
        self
    }

    /// Where relative paths (Wasm components, the providers directory) are taken from;
    /// default the current directory.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// The runtime for Wasm providers (default: one is started if a provider needs it).
    pub fn wasm_runtime(mut self, runtime: WasmRuntime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Validates everything and builds the providers. Errors read as for a config file,
    /// with `<embedded builder>` as the file.
    pub async fn build(self) -> Result<AuthLayer, SiteError> {
        let base_dir = self.base_dir.unwrap_or_else(|| PathBuf::from("."));
        let config =
            config::validate_raw(self.raw, "<embedded builder>", &base_dir, Purpose::Embedded)?;
        AuthLayer::from_config(&config, self.runtime.as_ref()).await
    }
}
