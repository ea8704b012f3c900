//! What drives a [`Reloader`]: a debounced watcher on the folders it names, SIGHUP, and the
//! periodic re-read of `vault://` secrets.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use notify_debouncer_full::notify::event::{AccessKind, AccessMode};
use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::task::JoinHandle;

use super::{Reloader, Trigger};

/// Quiet time after the last file event before a reload starts: long enough to coalesce an
/// editor's write-rename-chmod burst, short enough to keep write-to-serving under 250 ms.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// The running watcher (and SIGHUP listener); dropping it stops them.
#[derive(Debug)]
pub struct Reloading {
    reloader: Reloader,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Reloading {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Reloading {
    /// For `serve`: watches the files and listens for SIGHUP. A watcher that cannot start
    /// (inotify limits, say) is logged, and SIGHUP still reloads.
    pub fn start(reloader: Reloader, debounce: Duration) -> Self {
        let mut tasks = vec![spawn_secret_refresh(reloader.clone())];
        match spawn_watcher(reloader.clone(), debounce) {
            Ok(task) => tasks.push(task),
            Err(error) => tracing::error!(
                %error,
                "cannot watch the config and providers for changes; reload with SIGHUP"
            ),
        }
        #[cfg(unix)]
        match spawn_sighup(reloader.clone()) {
            Ok(task) => tasks.push(task),
            Err(error) => tracing::error!(%error, "cannot listen for SIGHUP"),
        }
        Self { reloader, tasks }
    }

    /// Watches the files and re-reads secrets, without a signal handler (tests run many
    /// gateways in one process).
    pub fn watch(
        reloader: Reloader,
        debounce: Duration,
    ) -> Result<Self, notify_debouncer_full::notify::Error> {
        let task = spawn_watcher(reloader.clone(), debounce)?;
        Ok(Self {
            tasks: vec![task, spawn_secret_refresh(reloader.clone())],
            reloader,
        })
    }

    /// The reloader being driven.
    pub fn reloader(&self) -> &Reloader {
        &self.reloader
    }
}

/// How often to look whether a config that reads Vault is serving, when none is.
const SECRET_IDLE: Duration = Duration::from_secs(1);

/// Re-reads the `vault://` secrets every `refresh_secs` of the serving config.
fn spawn_secret_refresh(reloader: Reloader) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match reloader.secrets_refresh_interval() {
                Some(every) => {
                    tokio::time::sleep(every).await;
                    reloader.refresh_secrets().await;
                }
                None => tokio::time::sleep(SECRET_IDLE).await,
            }
        }
    })
}

/// Reads carry no change; inotify reports `close(write)` as an access, and that one counts.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn spawn_watcher(
    reloader: Reloader,
    debounce: Duration,
) -> Result<JoinHandle<()>, notify_debouncer_full::notify::Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut debouncer =
        new_debouncer(
            debounce,
            None,
            move |result: DebounceEventResult| match result {
                Ok(events) => {
                    if events.iter().any(|e| is_change(&e.event.kind)) {
                        let _ = tx.send(());
                    }
                }
                Err(errors) => {
                    for error in errors {
                        tracing::warn!(%error, "file watcher error; checking for changes");
                    }
                    let _ = tx.send(());
                }
            },
        )?;
    let mut watched = BTreeSet::new();
    let wanted = reloader.watch_dirs();
    for dir in &wanted {
        debouncer.watch(dir, RecursiveMode::NonRecursive)?;
    }
    watched.extend(wanted);
    Ok(tokio::spawn(async move {
        while rx.recv().await.is_some() {
            while rx.try_recv().is_ok() {}
            reloader.reload_if_changed(Trigger::FileChange).await;
            let wanted = reloader.watch_dirs();
            sync_watches(&mut debouncer, &mut watched, wanted);
        }
    }))
}

/// Follows the folders of the current config (a retargeted symlink, a new providers dir).
fn sync_watches<W, C>(
    debouncer: &mut notify_debouncer_full::Debouncer<W, C>,
    watched: &mut BTreeSet<PathBuf>,
    wanted: BTreeSet<PathBuf>,
) where
    W: notify_debouncer_full::notify::Watcher,
    C: notify_debouncer_full::FileIdCache,
{
    for gone in watched.difference(&wanted) {
        // A folder that was deleted is no longer watched by the OS either.
        let _ = debouncer.unwatch(gone);
    }
    watched.retain(|dir| wanted.contains(dir));
    for dir in wanted {
        if !watched.contains(&dir) {
            match debouncer.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(dir);
                }
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "cannot watch folder");
                }
            }
        }
    }
}

#[cfg(unix)]
fn spawn_sighup(reloader: Reloader) -> std::io::Result<JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            reloader.reload(Trigger::Signal).await;
        }
    }))
}
