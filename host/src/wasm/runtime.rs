//! The shared wasmtime engine: component model, pooling allocation, epoch interruption,
//! one linker with the host imports and a capability-free WASI, and component loading.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::artifacts::{ArtifactCache, ComponentSource, content_hash};
use super::bindings::{authenticator, authorizer};
use super::error::LoadError;
use super::state::StoreState;

/// Most compiled components kept in memory; past it the map is cleared (and refilled by the
/// next loads), which bounds memory when many distinct versions come and go.
const MAX_COMPILED: usize = 128;

/// How often the epoch advances; deadlines are checked at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Engine-wide settings; per-provider limits live in [`super::Limits`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Most provider instances alive at once across all providers (pool slots).
    pub max_instances: u32,
    /// Ceiling on any one instance's linear memory; per-provider caps must not exceed it.
    pub max_memory_bytes: usize,
    /// Where compiled artifacts are cached; `None` compiles every time.
    pub artifact_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_instances: 1000,
            max_memory_bytes: 256 << 20,
            artifact_dir: None,
        }
    }
}

/// The two worlds a provider can implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Exports `authenticate`.
    Authenticator,
    /// Exports `authorize`.
    Authorizer,
}

impl ProviderKind {
    /// Both, in the order they are listed to a user.
    pub const ALL: [Self; 2] = [Self::Authenticator, Self::Authorizer];

    /// `authenticator` or `authorizer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authenticator => "authenticator",
            Self::Authorizer => "authorizer",
        }
    }
}

impl std::str::FromStr for ProviderKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| {
                format!("`{name}` is not a provider kind: use authenticator or authorizer")
            })
    }
}

/// A compiled, linked component ready to be instantiated for one world.
#[derive(Clone)]
pub(crate) enum ProviderPre {
    /// An authenticator.
    Authenticator(authenticator::AuthenticatorPre<StoreState>),
    /// An authorizer.
    Authorizer(authorizer::AuthorizerPre<StoreState>),
}

impl std::fmt::Debug for ProviderPre {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Authenticator(_) => "ProviderPre::Authenticator",
            Self::Authorizer(_) => "ProviderPre::Authorizer",
        })
    }
}

/// A component loaded from disk: compiled, type-checked against its world, pre-instantiated.
#[derive(Debug, Clone)]
pub struct LoadedComponent {
    /// Name (the file stem).
    pub name: String,
    /// Lower-case hex SHA-256 of the component bytes.
    pub content_hash: String,
    /// Which world it implements.
    pub kind: ProviderKind,
    /// Whether the native code was compiled now or came from a cache.
    pub source: ComponentSource,
    pub(super) pre: ProviderPre,
    pub(super) engine: Engine,
}

/// The Wasm provider runtime: one per process.
#[derive(Clone, Debug)]
pub struct WasmRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<StoreState>,
    artifacts: Option<ArtifactCache>,
    /// Components compiled by this runtime, by content hash: a reload recompiles only the
    /// components whose bytes changed. Bounded by [`MAX_COMPILED`].
    compiled: std::sync::Mutex<std::collections::HashMap<String, Component>>,
    config: RuntimeConfig,
    ticker_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl WasmRuntime {
    /// Builds the engine, the linker and the epoch ticker thread.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let engine = Engine::new(&engine_config(&config))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Both worlds import the same `types` and `host` interfaces, so one linker serves both.
        authenticator::Authenticator::add_to_linker::<StoreState, HasSelf<StoreState>>(
            &mut linker,
            |state| state,
        )?;
        let artifacts = match &config.artifact_dir {
            Some(dir) => Some(ArtifactCache::open(dir, &engine).map_err(|e| {
                anyhow::anyhow!("cannot use artifact cache `{}`: {e}", dir.display())
            })?),
            None => None,
        };
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                artifacts,
                compiled: std::sync::Mutex::default(),
                config,
                ticker_stop,
            }),
        })
    }

    /// The runtime's settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Loads the component at `path`, named after its file stem.
    pub fn load_file(&self, path: &Path) -> Result<LoadedComponent, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.load_bytes(&name, &bytes)
    }

    /// Loads a component from its bytes: compile (or take from the artifact cache), detect
    /// its world, check its imports against the linker and pre-instantiate it.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<LoadedComponent, LoadError> {
        let engine = &self.inner.engine;
        let hash = content_hash(bytes);
        let compile_error = |e: wasmtime::Error| LoadError::Compile {
            name: name.to_owned(),
            reason: format!("{e:#}"),
        };
        let known = self.lock_compiled().get(&hash).cloned();
        let (component, source) = match (known, &self.inner.artifacts) {
            (Some(component), _) => (component, ComponentSource::Cached),
            (None, Some(cache)) => cache.load(engine, bytes, &hash).map_err(compile_error)?,
            (None, None) => (
                Component::new(engine, bytes).map_err(compile_error)?,
                ComponentSource::Compiled,
            ),
        };
        {
            let mut compiled = self.lock_compiled();
            if compiled.len() >= MAX_COMPILED {
                compiled.clear();
            }
            compiled.insert(hash.clone(), component.clone());
        }
        let kind = detect_kind(engine, name, &component)?;
        let link_error = |e: wasmtime::Error| LoadError::Link {
            name: name.to_owned(),
            reason: format!("{e:#}"),
        };
        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(link_error)?;
        let pre = match kind {
            ProviderKind::Authenticator => ProviderPre::Authenticator(
                authenticator::AuthenticatorPre::new(instance_pre).map_err(link_error)?,
            ),
            ProviderKind::Authorizer => ProviderPre::Authorizer(
                authorizer::AuthorizerPre::new(instance_pre).map_err(link_error)?,
            ),
        };
        Ok(LoadedComponent {
            name: name.to_owned(),
            content_hash: hash,
            kind,
            source,
            pre,
            engine: engine.clone(),
        })
    }

    fn lock_compiled(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Component>> {
        // A poisoned map is still a valid map of compiled components.
        self.inner
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Loads every `*.wasm` file in `dir`, each result keyed by file stem, in name order.
    /// One bad file does not stop the others from loading.
    pub fn load_dir(
        &self,
        dir: &Path,
    ) -> std::io::Result<Vec<(String, Result<LoadedComponent, LoadError>)>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "wasm") && p.is_file())
            .collect();
        paths.sort();
        Ok(paths
            .into_iter()
            .map(|path| {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let loaded = self.load_file(&path);
                (name, loaded)
            })
            .collect())
    }
}

fn engine_config(config: &RuntimeConfig) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    // Core instances are only counted by the pool (nothing is reserved per slot), so allow
    // for componentize-py components, which link CPython from 14 core instances each; a
    // Rust or componentize-js component has 3. Memories and tables are reserved per slot,
    // and every component here defines at most one memory and two tables.
    pool.total_component_instances(config.max_instances)
        .total_core_instances(config.max_instances.saturating_mul(16))
        .total_memories(config.max_instances.saturating_mul(2))
        .total_tables(config.max_instances.saturating_mul(4))
        .total_stacks(config.max_instances)
        .max_memory_size(config.max_memory_bytes)
        .max_memories_per_component(4)
        .max_tables_per_component(16)
        .table_elements(100_000)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20);
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(512 << 10)
        .async_stack_size(1 << 20)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    wasm
}

/// Advances the engine's epoch every [`EPOCH_TICK`] so that running guests reach their
/// deadline checks. Stops when the runtime is dropped.
fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("portcullis-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(drop)
}

fn detect_kind(
    engine: &Engine,
    name: &str,
    component: &Component,
) -> Result<ProviderKind, LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
    let exports_func = |wanted: &str| {
        ty.exports(engine)
            .any(|(n, item)| n == wanted && matches!(item.ty, ComponentItem::ComponentFunc(_)))
    };
    match (exports_func("authenticate"), exports_func("authorize")) {
        (true, false) => Ok(ProviderKind::Authenticator),
        (false, true) => Ok(ProviderKind::Authorizer),
        _ => Err(LoadError::WrongWorld {
            name: name.to_owned(),
            exports,
        }),
    }
}
