//! The last good value of every `vault://` reference, kept across reloads, and the state of
//! the reads that fill it (for `/readyz` and the metrics).
//!
//! - **At load** ([`SecretCache::prepare`], from [`crate::load::from_config`]): every
//!   reference the config holds is read. A reference Vault cannot give now is served from
//!   its last good value, and the store is marked stale; a reference with no last good value
//!   fails the load with an error naming it, the address and the cause. So Vault down at
//!   start is a failed start, and Vault down later is last good values and a warning.
//! - **On an interval** ([`SecretCache::refresh`], every `refresh_secs`, by the reloader's
//!   task): the same reads, compared with what the serving site holds. A change asks for a
//!   reload, which reads again and swaps the site in as any reload does.
//! - A warning is logged once per streak of failed reads, and an info line when Vault
//!   answers again. Neither holds a value or a token ([`super::vault::VaultError`] never
//!   does).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::vault::{self, Client, Login, VaultError};
use super::{SecretRef, SecretString, VaultRef, VaultSettings};
use crate::config::Config;
use crate::gateway::readiness::{SecretsStatus, VaultStatus};

/// A load that needs a Vault value it cannot get.
#[derive(Debug, thiserror::Error)]
#[error("{config}: cannot read `{reference}` from Vault at {address}: {cause}")]
pub struct SecretsError {
    /// The config file.
    pub config: String,
    /// The reference.
    pub reference: String,
    /// `[vault].address`.
    pub address: String,
    /// Why.
    pub cause: VaultError,
}

/// See the module docs. One per gateway, in [`crate::load::Reuse`].
#[derive(Debug, Default)]
pub struct SecretCache {
    /// One set of reads at a time: a login is shared, and a refresh racing a reload would
    /// compare against values half replaced.
    reading: tokio::sync::Mutex<Option<Login>>,
    state: Mutex<State>,
    successes: AtomicU64,
    failures: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Reference (as written) → last good value.
    values: HashMap<String, SecretString>,
    /// The settings and references of the last config loaded, which the refresh reads.
    current: Option<(VaultSettings, Vec<VaultRef>)>,
    /// The settings the login in `reading` was made with.
    login_for: Option<VaultSettings>,
    status: VaultStatus,
    /// Whether the current failure streak was logged.
    warned: bool,
    /// References Vault said are gone, once logged.
    gone: std::collections::HashSet<String>,
}

impl State {
    /// Whether `reference` was logged as gone; it is from now on.
    fn gone_logged(&mut self, reference: &str) -> bool {
        !self.gone.insert(reference.to_owned())
    }
}

/// What a set of reads gave: the values read, and the first failure.
struct Reads {
    values: BTreeMap<String, SecretString>,
    failures: Vec<(String, VaultError)>,
}

impl SecretCache {
    /// Reads every `vault://` reference of `config` and fills it (see the module docs).
    pub async fn prepare(&self, config: &Config) -> Result<(), SecretsError> {
        let refs: Vec<VaultRef> = config
            .secret_refs
            .iter()
            .filter_map(|r| match r {
                SecretRef::Vault(v) => Some(v.clone()),
                _ => None,
            })
            .collect();
        let Some(settings) = config.vault.clone().filter(|_| !refs.is_empty()) else {
            self.lock().current = None;
            return Ok(());
        };
        // While Vault is known to be failing, or a refresh is reading it right now, a load
        // does not wait for it: the last good values serve (the refresh keeps reading, and
        // a change it finds reloads again), so a reload that revokes something takes
        // effect at once.
        let reading = self.reading.try_lock();
        {
            let mut state = self.lock();
            let failing = !state.status.ok && state.status.last_failure_unix_ms.is_some();
            let all_known = refs
                .iter()
                .all(|r| state.values.contains_key(&r.to_string()));
            let same = state.current.as_ref().map(|c| &c.0) == Some(&settings);
            if (failing || reading.is_err()) && all_known && same {
                state.current = Some((settings.clone(), refs.clone()));
                for reference in &refs {
                    if let Some(value) = state.values.get(&reference.to_string()) {
                        reference.set(value.clone());
                    }
                }
                return Ok(());
            }
        }
        let login = match reading {
            Ok(login) => login,
            Err(_) => self.reading.lock().await,
        };
        let reads = self.read_all(login, &settings, &refs).await;
        let mut state = self.lock();
        state.current = Some((settings.clone(), refs.clone()));
        state.values.extend(reads.values.clone());
        for reference in reads.values.keys() {
            state.gone.remove(reference);
        }
        // A secret Vault says is gone is gone: its last good value is not served (deleting
        // an API key's secret revokes it), and what uses it decides at assembly.
        for (reference, cause) in reads.failures.iter().filter(|(_, e)| e.is_gone()) {
            let was_served = state.values.remove(reference).is_some();
            let first = !state.gone_logged(reference);
            if was_served || first {
                tracing::warn!(
                    reference = %reference,
                    cause = %cause,
                    "a Vault secret no longer exists; what used it is refused (an API key \
                     that used it is revoked)"
                );
            }
            if let Some(r) = refs.iter().find(|r| r.to_string() == *reference) {
                r.set_gone(cause.to_string());
            }
        }
        // A failed reference with a last good value is served stale; one without fails.
        if let Some((reference, cause)) = reads
            .failures
            .iter()
            .filter(|(_, cause)| !cause.is_gone())
            .find(|(reference, _)| !state.values.contains_key(reference))
        {
            let error = SecretsError {
                config: config.source.clone(),
                reference: reference.clone(),
                address: settings.address.clone(),
                cause: cause.clone(),
            };
            self.failed(&mut state, &settings, error.to_string());
            return Err(error);
        }
        for reference in &refs {
            if let Some(value) = state.values.get(&reference.to_string()) {
                reference.set(value.clone());
            }
        }
        self.record(&mut state, &settings, &reads);
        Ok(())
    }

    /// Reads every reference of the config loaded last; `true` when a value differs from
    /// the one serving (the caller reloads). A failure is recorded and changes nothing.
    pub async fn refresh(&self) -> bool {
        let Some((settings, refs)) = self.lock().current.clone() else {
            return false;
        };
        let login = self.reading.lock().await;
        let reads = self.read_all(login, &settings, &refs).await;
        let mut state = self.lock();
        let changed = reads
            .values
            .iter()
            .any(|(reference, value)| state.values.get(reference) != Some(value))
            || reads
                .failures
                .iter()
                .any(|(reference, cause)| cause.is_gone() && state.values.contains_key(reference));
        // What this refresh read is the last good value from now on, and what it found
        // gone is no longer one: the reload it asks for may serve them without reading
        // again (while another secret fails to read, say).
        state.values.extend(reads.values.clone());
        for (reference, cause) in &reads.failures {
            if cause.is_gone() {
                state.values.remove(reference);
            }
        }
        self.record(&mut state, &settings, &reads);
        changed
    }

    /// How often to refresh, while the config loaded last reads Vault.
    pub fn refresh_interval(&self) -> Option<Duration> {
        self.lock().current.as_ref().map(|(s, _)| s.refresh)
    }

    /// The state for `/readyz`, once Vault was read.
    pub fn status(&self) -> Option<SecretsStatus> {
        let state = self.lock();
        let read = state.status.last_success_unix_ms.is_some()
            || state.status.last_failure_unix_ms.is_some();
        read.then(|| SecretsStatus {
            vault: state.status.clone(),
        })
    }

    /// `(successes, failures, stale)` of the sets of reads, for the metrics.
    pub fn counts(&self) -> (u64, u64, bool) {
        (
            self.successes.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
            self.lock().status.stale,
        )
    }

    async fn read_all(
        &self,
        mut login: tokio::sync::MutexGuard<'_, Option<Login>>,
        settings: &VaultSettings,
        refs: &[VaultRef],
    ) -> Reads {
        {
            let mut state = self.lock();
            if state.login_for.as_ref() != Some(settings) {
                *login = None;
                state.login_for = Some(settings.clone());
            }
        }
        let mut reads = Reads {
            values: BTreeMap::new(),
            failures: Vec::new(),
        };
        let client = match Client::new(settings) {
            Ok(client) => client,
            Err(error) => {
                for reference in refs {
                    reads.failures.push((reference.to_string(), error.clone()));
                }
                return reads;
            }
        };
        // One read per secret, however many of its fields are referenced.
        let mut secrets: BTreeMap<(&str, &str), Vec<&VaultRef>> = BTreeMap::new();
        for reference in refs {
            secrets
                .entry((reference.mount(), reference.path()))
                .or_default()
                .push(reference);
        }
        // Every secret at once, so a Vault that accepts and never answers costs one
        // timeout, not one per secret; a 403 (an AppRole token cut short) logs in again and
        // reads those once more.
        let token = client.token(&mut login).await;
        let first: Vec<_> = match &token {
            Ok(token) => {
                futures_util::future::join_all(
                    secrets
                        .keys()
                        .map(|(mount, path)| client.read_with(token, mount, path)),
                )
                .await
            }
            Err(error) => secrets.keys().map(|_| Err(error.clone())).collect(),
        };
        for (((mount, path), fields), data) in secrets.into_iter().zip(first) {
            let data = match data {
                Err(VaultError::Status { status: 403, .. }) if token.is_ok() => {
                    client.read(&mut login, mount, path).await
                }
                other => other,
            };
            for reference in fields {
                let value = data
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|data| vault::field(data, reference.field()));
                match value {
                    Ok(value) => {
                        reads.values.insert(reference.to_string(), value);
                    }
                    Err(error) => reads.failures.push((reference.to_string(), error)),
                }
            }
        }
        reads
    }

    fn record(&self, state: &mut State, settings: &VaultSettings, reads: &Reads) {
        // A secret Vault says is gone is an answer, not an outage.
        match reads.failures.iter().find(|(_, cause)| !cause.is_gone()) {
            None => {
                self.successes.fetch_add(1, Ordering::Relaxed);
                if state.warned {
                    tracing::info!(
                        address = %settings.address,
                        "Vault answers again; secrets are current"
                    );
                }
                state.warned = false;
                state.status.ok = true;
                state.status.stale = false;
                state.status.last_success_unix_ms = Some(now_ms());
            }
            Some((reference, cause)) => {
                let error = format!(
                    "cannot read `{reference}` from Vault at {}: {cause}",
                    settings.address
                );
                self.failed(state, settings, error);
            }
        }
    }

    fn failed(&self, state: &mut State, settings: &VaultSettings, error: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if !state.warned {
            tracing::warn!(
                address = %settings.address,
                %error,
                "Vault read failed; the last good secret values keep serving"
            );
        }
        state.warned = true;
        state.status.ok = false;
        state.status.stale = !state.values.is_empty();
        state.status.last_error = Some(error);
        state.status.last_failure_unix_ms = Some(now_ms());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
