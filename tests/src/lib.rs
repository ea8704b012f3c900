//! Shared support for the integration tests: paths of the guest components built by
//! `build.rs`, one Wasm runtime per test binary, request builders, gateway configs
//! ([`config`]), the one way to wait for something ([`eventually`]) and the one fake
//! upstream ([`upstream`]).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use portcullis::context::RequestContext;
use portcullis::secret::SecretString;
use portcullis::wasm::{
    Grants, InstanceMode, Limits, LoadedComponent, RuntimeConfig, WasmProvider, WasmRuntime,
};

pub mod config;
pub mod differential;
pub mod eventually;
pub mod gzip;
pub mod oauth;
pub mod upstream;

pub use eventually::eventually;

/// Paths of the built guest components, one constant per `.wasm` file.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// Components written in Python and JavaScript. `cargo xtask test` (through `cargo xtask
/// lang`) installs their pinned tool chains and builds them into `target/guests-lang/`; when a
/// tool cannot be installed it sets [`lang::SKIP_ENV`] to the reason.
pub mod lang {
    /// Set by xtask to why the other-language components could not be built.
    pub const SKIP_ENV: &str = "PORTCULLIS_LANG_GUESTS_SKIP";

    /// The path of `target/guests-lang/<file>`, or `None` (after printing why) when xtask
    /// recorded a reason it could not build it. Panics when the file is simply missing: a test
    /// never skips silently.
    pub fn guest(file: &str) -> Option<&'static str> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ has a parent");
        let path = root.join("target").join("guests-lang").join(file);
        if path.is_file() {
            return Some(String::leak(path.display().to_string()));
        }
        match std::env::var(SKIP_ENV) {
            Ok(reason) => {
                println!("skipped: {} is not built: {reason}", path.display());
                None
            }
            Err(_) => panic!(
                "{} is missing: run `cargo xtask lang` (or `cargo xtask test`), which installs \
                 componentize-py and componentize-js and builds it",
                path.display()
            ),
        }
    }
}

/// The runtime shared by every test in this binary (engines reserve address space, so one
/// per binary rather than one per test).
pub fn runtime() -> &'static WasmRuntime {
    static RUNTIME: OnceLock<WasmRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        WasmRuntime::new(RuntimeConfig {
            max_instances: 200,
            ..RuntimeConfig::default()
        })
        .expect("the wasm runtime starts")
    })
}

/// Loads (and caches per binary) the component at `path`.
pub fn component(path: &str) -> LoadedComponent {
    static LOADED: OnceLock<std::sync::Mutex<HashMap<String, LoadedComponent>>> = OnceLock::new();
    let cache = LOADED.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    cache
        .entry(path.to_owned())
        .or_insert_with(|| {
            runtime()
                .load_file(std::path::Path::new(path))
                .unwrap_or_else(|e| panic!("loading {path}: {e}"))
        })
        .clone()
}

/// A provider builder with test-friendly defaults.
#[derive(Debug)]
pub struct ProviderSpec {
    /// Component path.
    pub path: &'static str,
    /// Name in config.
    pub name: String,
    /// JSON config.
    pub config: serde_json::Value,
    /// Granted secrets.
    pub secrets: HashMap<String, SecretString>,
    /// Body access.
    pub body: bool,
    /// Limits.
    pub limits: Limits,
    /// Instance mode.
    pub mode: InstanceMode,
}

impl ProviderSpec {
    /// A provider from `path` named after it, with an empty config.
    pub fn new(path: &'static str) -> Self {
        let name = std::path::Path::new(path)
            .file_stem()
            .map(|s| s.to_string_lossy().replace('_', "-"))
            .unwrap_or_default();
        Self {
            path,
            name,
            config: serde_json::json!({}),
            secrets: HashMap::new(),
            body: false,
            limits: Limits::default(),
            mode: InstanceMode::default(),
        }
    }

    /// Sets the JSON config.
    pub fn config(mut self, config: serde_json::Value) -> Self {
        self.config = config;
        self
    }

    /// Grants a secret.
    pub fn secret(mut self, name: &str, value: &str) -> Self {
        self.secrets.insert(name.into(), SecretString::new(value));
        self
    }

    /// Grants body access.
    pub fn body(mut self) -> Self {
        self.body = true;
        self
    }

    /// Changes the limits.
    pub fn limits(mut self, f: impl FnOnce(&mut Limits)) -> Self {
        f(&mut self.limits);
        self
    }

    /// Sets the instance mode.
    pub fn mode(mut self, mode: InstanceMode) -> Self {
        self.mode = mode;
        self
    }

    /// Loads and configures the provider.
    pub async fn build(self) -> Result<WasmProvider, portcullis::wasm::LoadError> {
        let grants = Grants::new(self.name, self.secrets, self.body, self.limits);
        WasmProvider::new(
            component(self.path),
            grants,
            self.config.to_string(),
            self.mode,
        )
        .await
    }

    /// Loads and configures the provider, panicking with the reason on failure.
    pub async fn ready(self) -> WasmProvider {
        let path = self.path;
        self.build()
            .await
            .unwrap_or_else(|e| panic!("provider {path} should load: {e}"))
    }
}

/// A request for `method path` with `headers`.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Arc<RequestContext> {
    let method = http::Method::from_bytes(method.as_bytes()).expect("valid method");
    let mut ctx = RequestContext::new(method, path);
    for (name, value) in headers {
        ctx.headers.append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            http::HeaderValue::from_str(value).expect("valid header value"),
        );
    }
    Arc::new(ctx)
}

/// Runs the ignored test `name` (its full path) of this test binary in a process of its
/// own, and fails unless it ran and passed: for tests that read or measure process-wide
/// state (log capture, resident memory). Returns what it printed.
pub fn run_alone(name: &str) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = std::process::Command::new(exe)
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name} failed ({})\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("1 passed"),
        "expected: {name} ran\ngot: {stdout}"
    );
    stdout
}
