//! The issued-identities store: an append-only journal of JSON lines ([`Event`]s) and the
//! [`Book`] replayed from it, shared by the endpoints, the TLS listener and admission.
//!
//! - **Crash-safe.** Every change is one `write` of whole lines under an exclusive `flock`,
//!   then `fsync`, before anyone is told it happened. A writer killed mid-line leaves a tail
//!   without its newline: readers never take a line that has not ended, and the next writer
//!   (holding the lock, so no write is in progress) cuts it off. No state is half-written.
//! - **Several writers.** The gateway (registrations, rotations) and `portcullis identity
//!   revoke` append to the same file; each decides under the lock after reading every line
//!   written before it, so a quota or a rotation is judged against the whole store.
//! - **Live.** [`Registry::refresh`] reads what others appended (or everything again when the
//!   file was replaced); the gateway runs it every [`REFRESH_EVERY`], so a revocation
//!   written by the CLI is honoured within that bound, on every connection.
//! - **Fail closed.** A line that cannot be read, or contradicts the ones before it, stops
//!   the store where it is: the load fails (naming the file and line), or a refresh keeps
//!   the last good book and says so in the log.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use super::book::{Book, Event, Inconsistent};

/// How often the gateway reads lines others appended (revocations from the CLI).
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// How long the store may fail to be read before its book stops counting: a revocation
/// written meanwhile could not be seen, so every certificate of the CA is refused.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// The store cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on the journal.
    #[error("identity store `{}`: {source}", path.display())]
    Io {
        /// The journal.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line that is not an event, or that contradicts the ones before it.
    #[error("identity store `{}`, line {line}: {reason}; restore the file from a backup or remove the line", path.display())]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// The line, from 1.
        line: u64,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Default)]
struct State {
    book: Book,
    /// Bytes of the journal read so far (whole lines only).
    offset: u64,
    /// Lines read so far.
    lines: u64,
    /// `(dev, inode)` of the file read, to notice a replaced file.
    file: Option<(u64, u64)>,
}

/// The journal at one path and its book.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    state: RwLock<State>,
    /// Serialises this process's writers (the `flock` serialises processes).
    writer: Mutex<()>,
    /// Since when every read of the journal has failed, if the last one did.
    failing_since: Mutex<Option<std::time::Instant>>,
    /// Since when a read of the journal has been going on, if one is (a hung mount, a
    /// FIFO in the store's place, a writer stuck holding the lock).
    reading_since: Mutex<Option<std::time::Instant>>,
}

impl Registry {
    /// Opens the journal at `path` (a missing file is an empty store) and reads it whole.
    pub fn open(path: &Path) -> Result<Arc<Self>, StoreError> {
        let registry = Self {
            path: path.to_owned(),
            state: RwLock::default(),
            writer: Mutex::new(()),
            failing_since: Mutex::new(None),
            reading_since: Mutex::new(None),
        };
        registry.refresh()?;
        Ok(Arc::new(registry))
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the book as of the last read.
    pub fn read<T>(&self, f: impl FnOnce(&Book) -> T) -> T {
        f(&self
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .book)
    }

    /// Whether the journal has not been read for longer than [`STALE_AFTER`]: every read
    /// failed since, or one has not returned.
    pub fn is_stale(&self) -> bool {
        let old = |since: &Mutex<Option<std::time::Instant>>| {
            since
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some_and(|since| since.elapsed() > STALE_AFTER)
        };
        old(&self.failing_since) || old(&self.reading_since)
    }

    /// Reads what was appended since the last read (everything, when the file was
    /// replaced). Returns whether anything changed. On error nothing changes.
    pub fn refresh(&self) -> Result<bool, StoreError> {
        self.reading_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(std::time::Instant::now);
        let result = self.read_new();
        *self
            .reading_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        let mut failing = self
            .failing_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &result {
            Ok(_) => *failing = None,
            Err(_) => {
                failing.get_or_insert_with(std::time::Instant::now);
            }
        }
        result
    }

    fn read_new(&self) -> Result<bool, StoreError> {
        // Not while this process writes: the book changes under one writer at a time.
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
                let changed = state.file.is_some() || !state.book.is_empty();
                *state = State::default();
                return Ok(changed);
            }
            Err(source) => return Err(self.io(source)),
        };
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        self.catch_up(&file, &mut state).map(|(changed, _)| changed)
    }

    /// Reads `file` from where `state` stopped (from the start when it is another file or
    /// shorter than what was read); returns whether anything changed and the length of an
    /// unfinished last line.
    fn catch_up(&self, mut file: &File, state: &mut State) -> Result<(bool, u64), StoreError> {
        let meta = file.metadata().map_err(|e| self.io(e))?;
        let id = (meta.dev(), meta.ino());
        let continuing = state.file == Some(id) && meta.len() >= state.offset;
        let start = if continuing { state.offset } else { 0 };
        file.seek(SeekFrom::Start(start)).map_err(|e| self.io(e))?;
        let mut bytes = Vec::new();
        file.take(meta.len().saturating_sub(start))
            .read_to_end(&mut bytes)
            .map_err(|e| self.io(e))?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let unfinished = (bytes.len() - complete) as u64;
        if continuing && complete == 0 {
            return Ok((false, unfinished));
        }
        // Applied to a copy: a line that cannot be read leaves the book as it was.
        let (mut book, mut lines) = if continuing {
            (state.book.clone(), state.lines)
        } else {
            (Book::default(), 0)
        };
        for line in bytes[..complete].split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            lines += 1;
            let event: Event = serde_json::from_slice(line).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                line: lines,
                reason: format!("not an identity event: {e}"),
            })?;
            book.apply(&event)
                .map_err(|Inconsistent(reason)| StoreError::Corrupt {
                    path: self.path.clone(),
                    line: lines,
                    reason,
                })?;
        }
        *state = State {
            book,
            offset: start + complete as u64,
            lines,
            file: Some(id),
        };
        Ok((true, unfinished))
    }

    /// Appends the events `decide` makes from the whole store, as one crash-safe write, and
    /// applies them. `decide` runs under the store's lock, after every line written before.
    pub fn transact<T, E>(
        &self,
        decide: impl FnOnce(&Book) -> Result<(Vec<Event>, T), E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let created = !self.path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        file.lock().map_err(|e| self.io(e))?;
        if created {
            sync_parent(&self.path).map_err(|e| self.io(e))?;
        }
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            let (_, unfinished) = self.catch_up(&file, &mut state)?;
            if unfinished > 0 {
                // A writer died mid-line (nobody else writes while we hold the lock).
                file.set_len(state.offset).map_err(|e| self.io(e))?;
            }
        }
        // Readers (every handshake and request) are held up only while the book changes,
        // not while the line is signed, written and synced: this process's writers and
        // refreshes wait on `writer`, so the book cannot change in between.
        let (events, value, applied, text) = {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            let (events, value) = decide(&state.book)?;
            if events.is_empty() {
                return Ok(value);
            }
            let line = state.lines + 1;
            let corrupt = |Inconsistent(reason)| StoreError::Corrupt {
                path: self.path.clone(),
                line,
                reason,
            };
            // One event (every registration, rotation, revocation) is checked against the
            // book as it is and applied once written; several are applied to a copy first.
            let applied = match events.as_slice() {
                [event] => {
                    state.book.check(event).map_err(corrupt)?;
                    None
                }
                _ => {
                    let mut book = state.book.clone();
                    for event in &events {
                        book.apply(event).map_err(corrupt)?;
                    }
                    Some(book)
                }
            };
            let mut text = Vec::new();
            for event in &events {
                serde_json::to_writer(&mut text, event).map_err(|e| self.io(e.into()))?;
                text.push(b'\n');
            }
            (events, value, applied, text)
        };
        (&file).write_all(&text).map_err(|e| self.io(e))?;
        file.sync_data().map_err(|e| self.io(e))?;
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        match applied {
            Some(book) => state.book = book,
            None => {
                for event in &events {
                    // Checked above against this very book; nothing changed it since.
                    let _ = state.book.apply(event);
                }
            }
        }
        state.offset += text.len() as u64;
        state.lines += events.len() as u64;
        Ok(value)
    }

    /// Refreshes every [`REFRESH_EVERY`] on the current Tokio runtime until the registry is
    /// dropped. A refresh that fails keeps the last good book and logs why, once per change
    /// of reason.
    pub fn keep_fresh(self: &Arc<Self>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        handle.spawn(async move {
            let mut last_error = String::new();
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                let Some(registry) = weak.upgrade() else { return };
                let mut reading = tokio::task::spawn_blocking(move || registry.refresh());
                let joined = match tokio::time::timeout(STALE_AFTER, &mut reading).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        tracing::error!(
                            "the identity store has not answered a read for {}s: every \
                             certificate of the identity CA is refused until it does",
                            STALE_AFTER.as_secs()
                        );
                        reading.await
                    }
                };
                match joined {
                    Ok(Ok(_)) => last_error.clear(),
                    Ok(Err(error)) => {
                        let text = error.to_string();
                        if text != last_error {
                            tracing::error!(%error, "identity store not refreshed; the last good one stays in force for {}s, then every certificate of the identity CA is refused until it can be read", STALE_AFTER.as_secs());
                            last_error = text;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// Makes a new file's directory entry durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}
