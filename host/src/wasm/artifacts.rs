//! The on-disk cache of compiled components, keyed by content hash and engine build.
//!
//! Compiling a component takes 50 ms for a small Rust provider and seconds for a Python
//! or JavaScript one, so each distinct component is compiled once per engine build and the
//! native artifact is kept on disk. Loading an artifact maps native code into the process, so
//! the cache directory must be writable only by the gateway's own user: unlike the providers
//! directory, whatever is in it runs outside the sandbox. The host creates it with mode 0700.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::crypto::sha256;

/// Where compiled artifacts live.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_tag: String,
}

/// Where a component's native code came from: compiled now, or a cached artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentSource {
    /// Compiled now (and stored, when a cache is configured).
    Compiled,
    /// Taken from this runtime's memory or from the on-disk artifact cache.
    Cached,
}

impl ArtifactCache {
    /// A cache in `dir` for artifacts of `engine`; creates the directory (mode 0700).
    pub(crate) fn open(dir: impl Into<PathBuf>, engine: &Engine) -> std::io::Result<Self> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            engine_tag: format!("{:016x}", hasher.finish()),
        })
    }

    fn path_for(&self, content_hash: &str) -> PathBuf {
        self.dir
            .join(format!("{content_hash}-{}.cwasm", self.engine_tag))
    }

    /// The component for `bytes`: from the cache when present and loadable, else compiled
    /// and stored. A damaged artifact is recompiled and replaced.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        content_hash: &str,
    ) -> wasmtime::Result<(Component, ComponentSource)> {
        let path = self.path_for(content_hash);
        if path.exists() {
            match deserialize_trusted(engine, &path) {
                Ok(component) => return Ok((component, ComponentSource::Cached)),
                Err(e) => tracing::warn!(
                    artifact = %path.display(),
                    "cached artifact is unusable, recompiling: {e}"
                ),
            }
        }
        let serialized = engine.precompile_component(bytes)?;
        if let Err(e) = write_atomically(&path, &serialized) {
            tracing::warn!(artifact = %path.display(), "cannot store compiled artifact: {e}");
        }
        Ok((
            deserialize_own_bytes(engine, &serialized)?,
            ComponentSource::Compiled,
        ))
    }
}

/// Lower-case hex SHA-256 of a component's bytes: its identity for caching and status.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}

#[expect(
    unsafe_code,
    reason = "loading native code is unsafe by nature; the file was written by this host \
              (named by content hash and engine build) into a directory only this user can write"
)]
fn deserialize_trusted(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: see the module docs: the artifact cache is private to the gateway user and its
    // files are produced by `Engine::precompile_component` of a compatible engine.
    unsafe { Component::deserialize_file(engine, path) }
}

#[expect(
    unsafe_code,
    reason = "the bytes come from Engine::precompile_component of this very engine"
)]
fn deserialize_own_bytes(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: produced a moment ago by `precompile_component` on the same engine.
    unsafe { Component::deserialize(engine, bytes) }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(bytes)?;
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, path)
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let path = dir.join(name);
    let file = std::fs::File::create_new(&path)?;
    Ok((path, file))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
