//! The `/readyz` report, typed: what a [`Site`](super::Site) says about itself (each provider,
//! its component and hash), and what a [reloader](crate::reload) adds (load times, the site
//! generation, the reload record). Rendered to JSON only when answered.

use serde::Serialize;

/// The full `/readyz` report (given only to `server.readyz_detail_networks`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// Always `ready`: the gateway answers only once a configuration has loaded.
    pub status: &'static str,
    /// Every provider of the serving configuration.
    pub providers: Vec<ProviderStatus>,
    /// Which configuration is serving (the first is 1); set by a reloader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// What reloading has done; set by a reloader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadStatus>,
    /// The secret stores the config reads (present when it has `vault://` references).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretsStatus>,
}

/// The secret stores' state. A stale store leaves the gateway ready: it keeps serving with
/// the last good values (which were valid when read), and taking every replica out of
/// rotation at once because the secret store is down would turn a Vault outage into a
/// gateway outage. `stale` and `portcullis_secrets_stale` are what to alert on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SecretsStatus {
    /// Vault (or OpenBao).
    pub vault: VaultStatus,
}

/// The last reads of every `vault://` reference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VaultStatus {
    /// Whether the last read of every reference succeeded.
    pub ok: bool,
    /// Whether some value served is a last good value that the last read could not confirm.
    pub stale: bool,
    /// Why the last failed read failed (it names the reference and the address).
    pub last_error: Option<String>,
    /// When every reference was last read.
    pub last_success_unix_ms: Option<u64>,
    /// When a read last failed.
    pub last_failure_unix_ms: Option<u64>,
}

/// One provider in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderStatus {
    /// Its name in the config.
    pub name: String,
    /// Its `type` in the config.
    #[serde(rename = "type")]
    pub type_name: &'static str,
    /// For a Wasm provider, the component file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// For a Wasm provider, the component's SHA-256 (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// When this component (this hash) was first loaded, in Unix milliseconds; set by a
    /// reloader, kept across reloads while the hash is unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded_at_unix_ms: Option<u64>,
}

/// The reload record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadStatus {
    /// Reloads that swapped a new site in.
    pub successes: u64,
    /// Reloads that were rejected.
    pub failures: u64,
    /// `success` or `failure`, once a reload was attempted.
    pub last_result: Option<&'static str>,
    /// When the last reload was attempted.
    pub last_attempt_unix_ms: Option<u64>,
    /// Why the last rejected reload was rejected (it names the file).
    pub last_error: Option<String>,
    /// When that was.
    pub last_error_unix_ms: Option<u64>,
}

impl Readiness {
    /// The report as JSON.
    pub fn render(&self) -> bytes::Bytes {
        // Plain data with string keys: serialising it cannot fail.
        serde_json::to_vec(self).map_or_else(|_| bytes::Bytes::new(), bytes::Bytes::from)
    }
}
