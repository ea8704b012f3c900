//! Hot reload: the config file and the Wasm components it names are watched, and a change
//! rebuilds the whole [`Site`](crate::gateway::Site) off the request path; it is swapped in
//! only when everything in it loads.
//!
//! - **One validation path.** A reload runs [`load::from_source`] — `config::load` then
//!   `config::assemble` — exactly what start-up and `portcullis check` run: every component
//!   is compiled, checked against its world, linked and `configure`d. It runs on a blocking
//!   thread, never on a request's task.
//! - **Atomic, keep-last-good.** Only a site that loaded completely is swapped in
//!   ([`Gateway::swap`]); requests in flight finish on the site they started with. A bad
//!   component (does not compile, wrong world, `configure` fails), a bad config, or a chain
//!   naming a component file that is gone is rejected: one `error` log line naming the file
//!   and the reason, `portcullis_reloads_total{result="failure"}`, and `/readyz` shows the
//!   error; the last good site (which holds its compiled components in memory) keeps serving.
//!   The config has no per-provider "skip when missing" flag, so deleting a component that a
//!   chain names is a failed reload: restore the file or remove the provider from the config.
//! - **What is watched.** Directories, not files, so editors' and `mv`'s rename-into-place
//!   and Kubernetes ConfigMap `..data` symlink swaps are seen: the folder holding the config
//!   file and the folder its resolved target is in, the providers directory (resolved) and
//!   its parent (a retargeted `providers` symlink), and the folders of every component the
//!   config names. The set is recomputed after every attempt, so a retargeted symlink is
//!   followed.
//! - **Writes in progress.** Events are debounced ([`DEBOUNCE`]). An attempt that fails while
//!   its inputs change under it (a file still being written) is retried, up to
//!   [`MAX_ATTEMPTS`] times; any later write starts a new attempt anyway.
//! - **No-op changes.** The inputs are fingerprinted (SHA-256 of the config file and of every
//!   component it names); an event that leaves the fingerprint as it was at the last attempt
//!   does nothing. SIGHUP always reloads.
//! - **What a reload does not change.** The listener: `server.listen`, `server.tls`,
//!   `server.log_format` and `server.shutdown_grace` take effect on restart (a reload that
//!   changes the address or TLS logs a warning). Every provider is rebuilt, so JWT validators
//!   fetch their keys again and Wasm provider caches start empty.
//! - **Secrets.** The files of `file://` secret references are watched and fingerprinted
//!   like components. `vault://` values are read on every reload and every `refresh_secs`
//!   ([`Reloader::refresh_secrets`], driven by [`Reloading`]); a changed value reloads
//!   (trigger `secret change`), an unchanged one does nothing, and a failed read keeps the
//!   last good values (see [`crate::secret`]).
//! - **Status.** `/readyz` is the site's report (each provider, its component and `sha256`)
//!   plus `loaded_at_unix_ms` per provider (kept across reloads while a component's hash
//!   is unchanged), the site `generation`, and `reload`: counts, `last_result`,
//!   `last_error` and their times.

mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use self::watch::{DEBOUNCE, Reloading};
use crate::config::{self, model::ProviderSettings};
use crate::gateway::Gateway;
use crate::gateway::readiness::{Readiness, ReloadStatus};
use crate::load::{self, Loaded, Reuse, Source};
use crate::secret::{SecretCache, SecretRef};

/// Attempts per trigger when the inputs keep changing while an attempt fails.
pub const MAX_ATTEMPTS: u32 = 3;

/// Pause before retrying an attempt whose inputs changed under it.
const RETRY_DELAY: Duration = Duration::from_millis(100);

/// What asked for a reload (it names the attempt in logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A watched file or folder changed.
    FileChange,
    /// The process got SIGHUP.
    Signal,
    /// A caller of [`Reloader::reload`].
    Request,
    /// A `vault://` value changed (the periodic re-read).
    SecretChange,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::FileChange => "file change",
            Self::Signal => "SIGHUP",
            Self::Request => "request",
            Self::SecretChange => "secret change",
        }
    }
}

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Nothing the config depends on changed since the last attempt.
    Unchanged,
    /// A new site is serving.
    Swapped {
        /// Its generation (the first site is 1).
        generation: u64,
    },
    /// Rejected; the last good site keeps serving.
    Rejected {
        /// Why, naming the file.
        reason: String,
    },
}

/// Rebuilds and swaps a gateway's site. Cheap to clone; reloads run one at a time.
#[derive(Debug, Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    gateway: Arc<Gateway>,
    source: Source,
    /// The runtime and ledger every site is built with.
    reuse: Mutex<Reuse>,
    state: tokio::sync::Mutex<State>,
    watch_dirs: Mutex<BTreeSet<PathBuf>>,
}

#[derive(Debug)]
struct State {
    /// Fingerprint of the inputs of the last attempt, good or bad.
    attempted: String,
    /// Folders of the last good config.
    good_dirs: BTreeSet<PathBuf>,
    /// `server.listen` and whether TLS is on, as started.
    started: Option<(SocketAddr, bool)>,
    generation: u64,
    /// Provider name → (component hash, when that hash was loaded).
    loaded_at: BTreeMap<String, (Option<String>, u64)>,
    /// The serving site's own readiness report.
    site_ready: Readiness,
    successes: u64,
    failures: u64,
    last_result: Option<&'static str>,
    last_attempt: Option<u64>,
    last_error: Option<(String, u64)>,
}

impl Reloader {
    /// A reloader for `gateway`, whose current site was loaded from `source` with `reuse`
    /// (its runtime, or `None` to create one on the first reload that needs it, and the
    /// authorization server's ledger: pass [`Loaded::ledger`] so revocations survive).
    pub fn new(gateway: Arc<Gateway>, source: Source, reuse: impl Into<Reuse>) -> Self {
        let inputs = inputs(&source);
        let site_ready = gateway.site().readiness.clone();
        let now = now_ms();
        let loaded_at = provider_hashes(&site_ready)
            .into_iter()
            .map(|(name, hash)| (name, (hash, now)))
            .collect();
        let state = State {
            attempted: inputs.fingerprint,
            good_dirs: inputs.dirs.clone(),
            started: inputs.server,
            generation: 1,
            loaded_at,
            site_ready,
            successes: 0,
            failures: 0,
            last_result: None,
            last_attempt: None,
            last_error: None,
        };
        let reuse = reuse.into();
        gateway.metrics().set_secrets(reuse.secrets.clone());
        publish(&gateway, &state, &reuse.secrets);
        Self {
            inner: Arc::new(Inner {
                gateway,
                source,
                reuse: Mutex::new(reuse),
                watch_dirs: Mutex::new(inputs.dirs),
                state: tokio::sync::Mutex::new(state),
            }),
        }
    }

    /// Reloads now, changed or not (SIGHUP).
    pub async fn reload(&self, trigger: Trigger) -> ReloadOutcome {
        self.run(trigger, true).await
    }

    /// Reloads when the config file or a component it names changed since the last attempt.
    pub async fn reload_if_changed(&self, trigger: Trigger) -> ReloadOutcome {
        self.run(trigger, false).await
    }

    /// Re-reads every `vault://` value the serving config holds, and reloads when one
    /// changed; a failed read keeps the last good values and shows in `/readyz`.
    pub async fn refresh_secrets(&self) -> Option<ReloadOutcome> {
        let secrets = self.secrets();
        if secrets.refresh().await {
            return Some(self.reload(Trigger::SecretChange).await);
        }
        let state = self.inner.state.lock().await;
        publish(&self.inner.gateway, &state, &secrets);
        None
    }

    /// How often to re-read Vault, while the serving config reads it.
    pub fn secrets_refresh_interval(&self) -> Option<Duration> {
        self.secrets().refresh_interval()
    }

    fn secrets(&self) -> Arc<SecretCache> {
        lock(&self.inner.reuse).secrets.clone()
    }

    /// The folders to watch now.
    pub fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        lock(&self.inner.watch_dirs).clone()
    }

    async fn run(&self, trigger: Trigger, force: bool) -> ReloadOutcome {
        let mut state = self.inner.state.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let before = self.inputs().await;
            if !force && attempt == 1 && before.fingerprint == state.attempted {
                return ReloadOutcome::Unchanged;
            }
            match self.load().await {
                Ok(loaded) => return self.accept(&mut state, before, loaded, trigger),
                Err(reason) => {
                    if attempt < MAX_ATTEMPTS {
                        tokio::time::sleep(RETRY_DELAY).await;
                        if self.inputs().await.fingerprint != before.fingerprint {
                            tracing::debug!(%reason, "inputs changed during a failed reload; retrying");
                            continue;
                        }
                    }
                    return self.reject(&mut state, before, reason, trigger);
                }
            }
        }
    }

    async fn inputs(&self) -> Inputs {
        let source = self.inner.source.clone();
        tokio::task::spawn_blocking(move || inputs(&source))
            .await
            .unwrap_or_else(|_| Inputs::unreadable())
    }

    /// The shared validation path, on a blocking thread: compiling components is CPU work
    /// that must not hold up a runtime worker serving requests.
    async fn load(&self) -> Result<Loaded, String> {
        let source = self.inner.source.clone();
        let reuse = lock(&self.inner.reuse).clone();
        let handle = tokio::runtime::Handle::current();
        let joined =
            tokio::task::spawn_blocking(move || handle.block_on(load::from_source(&source, reuse)))
                .await;
        match joined {
            Ok(Ok(loaded)) => {
                // The listener's roots hold the identity CA it started with: retiring or
                // replacing that CA by a reload would leave its agents' subjects up for
                // grabs (and the new CA untrusted). It takes a restart.
                if let Some(trusted) = self.inner.gateway.listener_identity_ca() {
                    let serves = loaded.site.identity.as_ref().map(|a| a.ca.subject.as_str());
                    if serves != Some(trusted) {
                        return Err(format!(
                            "{}: `[identity]`: the TLS listener trusts the identity CA `{trusted}`; \
                             removing `[identity]` or changing `ca_cert` takes a restart",
                            loaded.config.source
                        ));
                    }
                }
                Ok(loaded)
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(error) => Err(format!("the reload task failed: {error}")),
        }
    }

    fn accept(
        &self,
        state: &mut State,
        inputs: Inputs,
        loaded: Loaded,
        trigger: Trigger,
    ) -> ReloadOutcome {
        let Loaded {
            config,
            site,
            runtime,
            ledger: _,
            secrets: _,
        } = loaded;
        if let Some(runtime) = runtime {
            lock(&self.inner.reuse).runtime.get_or_insert(runtime);
        }
        let server = (config.server.listen, config.server.tls.is_some());
        if state.started.is_some_and(|started| started != server) {
            tracing::warn!(
                config = %config.source,
                "`server.listen` and `server.tls` changed; they take effect on restart"
            );
        }
        let site_ready = site.readiness.clone();
        self.inner.gateway.swap(site);
        let now = now_ms();
        let mut changed = Vec::new();
        let loaded_at = provider_hashes(&site_ready)
            .into_iter()
            .map(|(name, hash)| {
                let at = match state.loaded_at.get(&name) {
                    Some((old, at)) if hash.is_some() && *old == hash => *at,
                    _ => {
                        if hash.is_some() {
                            changed.push(name.clone());
                        }
                        now
                    }
                };
                (name, (hash, at))
            })
            .collect();
        state.loaded_at = loaded_at;
        state.site_ready = site_ready;
        state.generation += 1;
        state.successes += 1;
        state.last_result = Some("success");
        state.last_attempt = Some(now);
        state.attempted = inputs.fingerprint;
        state.good_dirs = inputs.dirs;
        *lock(&self.inner.watch_dirs) = state.good_dirs.clone();
        self.inner.gateway.metrics().reload(true);
        publish(&self.inner.gateway, state, &self.secrets());
        tracing::info!(
            trigger = trigger.as_str(),
            config = %config.source,
            generation = state.generation,
            components_changed = %changed.join(", "),
            "reloaded: the new configuration is serving"
        );
        ReloadOutcome::Swapped {
            generation: state.generation,
        }
    }

    fn reject(
        &self,
        state: &mut State,
        inputs: Inputs,
        reason: String,
        trigger: Trigger,
    ) -> ReloadOutcome {
        let now = now_ms();
        state.failures += 1;
        state.last_result = Some("failure");
        state.last_attempt = Some(now);
        state.last_error = Some((reason.clone(), now));
        state.attempted = inputs.fingerprint;
        // Keep watching the last good config's folders, and the new ones so a fix is seen.
        *lock(&self.inner.watch_dirs) = state.good_dirs.union(&inputs.dirs).cloned().collect();
        self.inner.gateway.metrics().reload(false);
        publish(&self.inner.gateway, state, &self.secrets());
        tracing::error!(
            trigger = trigger.as_str(),
            config = %self.inner.source.config.display(),
            error = %reason,
            "reload rejected; the last good configuration keeps serving"
        );
        ReloadOutcome::Rejected { reason }
    }
}

/// What a reload reads, fingerprinted, and the folders it lives in.
#[derive(Debug)]
struct Inputs {
    fingerprint: String,
    dirs: BTreeSet<PathBuf>,
    server: Option<(SocketAddr, bool)>,
}

impl Inputs {
    fn unreadable() -> Self {
        Self {
            fingerprint: String::new(),
            dirs: BTreeSet::new(),
            server: None,
        }
    }
}

/// Reads the config file and every component it names. A config that does not validate
/// contributes only its own bytes (its components are unknown until it is fixed).
fn inputs(source: &Source) -> Inputs {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut dirs = BTreeSet::new();
    let config_path = std::path::absolute(&source.config).unwrap_or_else(|_| source.config.clone());
    feed(&mut digest, &config_path);
    add_dirs_of(&mut dirs, &config_path);
    let overrides = source.overrides();
    let mut server = None;
    if let Ok(config) = config::load_with(&config_path, &overrides) {
        server = Some((config.server.listen, config.server.tls.is_some()));
        let providers_dir = &config.server.providers_dir;
        add_dir(&mut dirs, providers_dir);
        if let Some(parent) = providers_dir.parent() {
            add_dir(&mut dirs, parent);
        }
        for provider in config.providers.values() {
            match &provider.settings {
                ProviderSettings::Wasm(wasm) => {
                    feed(&mut digest, &wasm.component);
                    add_dirs_of(&mut dirs, &wasm.component);
                }
                ProviderSettings::ApiKey(keys) => {
                    if let Some(file) = &keys.keys_file {
                        feed(&mut digest, file);
                        add_dirs_of(&mut dirs, file);
                    }
                }
                _ => {}
            }
        }
        for file in config
            .authorization_server
            .iter()
            .flat_map(|section| section.watched_files())
        {
            feed(&mut digest, &file);
            add_dirs_of(&mut dirs, &file);
        }
        // Secret files, as written (relative to the working directory) and, for the
        // settings that take them from the config's folder, from there.
        for reference in &config.secret_refs {
            if let SecretRef::File(path) = reference {
                let base_dir = config_path.parent().unwrap_or(Path::new("."));
                for file in [path.clone(), base_dir.join(path)] {
                    feed(&mut digest, &file);
                    add_dirs_of(&mut dirs, &file);
                }
            }
        }
    }
    Inputs {
        fingerprint: hex::encode(digest.finish()),
        dirs,
        server,
    }
}

fn feed(digest: &mut ring::digest::Context, path: &Path) {
    digest.update(path.as_os_str().as_encoded_bytes());
    match std::fs::read(path) {
        Ok(bytes) => {
            digest.update(&(bytes.len() as u64).to_le_bytes());
            digest.update(&bytes);
        }
        Err(error) => digest.update(format!("unreadable: {:?}", error.kind()).as_bytes()),
    }
}

/// The resolved folder a file is named from, and the resolved folder of its target (they
/// differ for a symlink such as a ConfigMap's `config.toml -> ..data/config.toml`).
fn add_dirs_of(dirs: &mut BTreeSet<PathBuf>, file: &Path) {
    if let Some(parent) = file.parent() {
        add_dir(dirs, parent);
    }
    if let Ok(real) = file.canonicalize()
        && let Some(parent) = real.parent()
    {
        add_dir(dirs, parent);
    }
}

/// Adds `dir` resolved: one folder reached by two spellings must be watched once.
fn add_dir(dirs: &mut BTreeSet<PathBuf>, dir: &Path) {
    if let Ok(real) = dir.canonicalize()
        && real.is_dir()
    {
        dirs.insert(real);
    }
}

/// Sets `/readyz`: the site's report with load times, the reload record and the secret
/// stores' state.
fn publish(gateway: &Gateway, state: &State, secrets: &SecretCache) {
    let mut report = state.site_ready.clone();
    for provider in &mut report.providers {
        provider.loaded_at_unix_ms = state.loaded_at.get(&provider.name).map(|(_, at)| *at);
    }
    report.generation = Some(state.generation);
    report.reload = Some(ReloadStatus {
        successes: state.successes,
        failures: state.failures,
        last_result: state.last_result,
        last_attempt_unix_ms: state.last_attempt,
        last_error: state.last_error.as_ref().map(|(e, _)| e.clone()),
        last_error_unix_ms: state.last_error.as_ref().map(|(_, at)| *at),
    });
    report.secrets = secrets.status();
    gateway.set_readiness(&report);
}

/// `(name, sha256)` of every provider in a site's readiness report.
fn provider_hashes(site_ready: &Readiness) -> Vec<(String, Option<String>)> {
    site_ready
        .providers
        .iter()
        .map(|p| (p.name.clone(), p.sha256.clone()))
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
