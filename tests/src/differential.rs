//! The differential suite's upstreams: one MCP server per SDK (rmcp, the Python `mcp`
//! package, the TypeScript `@modelcontextprotocol/sdk` on express), each serving the same
//! tools, resources and prompts and reporting what it *executed*, so a test can compare that
//! with what the gateway authorized (`tests/it/differential.rs`).
//!
//! What each server records: one [`Executed`] of kind `http` per request it receives (so a
//! refusal by the gateway, where nothing arrives, is told from one by the upstream), and one
//! per handler that ran: the kind and name of the
//! handler (the tool it dispatched, the resource it read, the prompt it served), what the
//! request asked for, the JSON-RPC id as that SDK parsed it, and the `Mcp-Method` /
//! `Mcp-Name` headers it saw. The rmcp server runs in-process; the Python and Node ones are
//! child processes that append JSON lines to a file, started on port 0 and killed on drop.
//!
//! `cargo xtask upstreams` (run by `cargo xtask test`) installs the pinned Python and Node
//! packages under `target/differential/`; when it cannot, it sets [`SKIP_ENV`] to the reason
//! and the tests that need them print `skipped: …` instead of failing.

mod rmcp_server;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Set by xtask to why the Python or Node upstream could not be installed.
pub const SKIP_ENV: &str = "PORTCULLIS_UPSTREAMS_SKIP";

/// One handler run by an upstream, or one HTTP request it received.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Executed {
    /// `rmcp`, `python` or `node`.
    pub server: String,
    /// `tool`, `resource` or `prompt`; `http` for a request received (before any parsing).
    pub kind: String,
    /// The handler that ran: the tool or prompt name, or the resource's own URI; for `http`,
    /// the method as received.
    pub name: String,
    /// The name or URI the request asked for, as the SDK handed it over; for `http`, the
    /// `Content-Type`.
    pub requested: Option<String>,
    /// The JSON-RPC id as the SDK parsed it.
    pub id: serde_json::Value,
    /// The `Mcp-Method` header the server saw.
    pub mcp_method: Option<String>,
    /// The `Mcp-Name` header the server saw.
    pub mcp_name: Option<String>,
}

impl std::fmt::Display for Executed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} (id {}", self.kind, self.name, self.id)?;
        for (header, value) in [
            ("Mcp-Method", &self.mcp_method),
            ("Mcp-Name", &self.mcp_name),
        ] {
            if let Some(value) = value {
                write!(f, ", saw {header}: {value}")?;
            }
        }
        f.write_str(")")
    }
}

/// The SDK an upstream is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sdk {
    /// rmcp (Rust), in-process.
    Rmcp,
    /// The Python `mcp` package's `MCPServer` (FastMCP) on uvicorn.
    Python,
    /// The TypeScript SDK's `McpServer` on express.
    TypeScript,
}

impl Sdk {
    /// Every SDK, in table order.
    pub const ALL: [Self; 3] = [Self::Rmcp, Self::Python, Self::TypeScript];

    /// The short name used in tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Rmcp => "rmcp",
            Self::Python => "python",
            Self::TypeScript => "typescript",
        }
    }
}

/// A running upstream; stops when dropped.
pub struct Upstream {
    /// Its SDK.
    pub sdk: Sdk,
    /// Its MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    log: Log,
    running: Running,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("sdk", &self.sdk)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

enum Log {
    Memory(Arc<Mutex<Vec<Executed>>>),
    File(PathBuf),
}

enum Running {
    Task(tokio::task::JoinHandle<()>),
    Process {
        child: Child,
        stderr: PathBuf,
        _dir: tempfile::TempDir,
    },
}

impl Drop for Running {
    fn drop(&mut self) {
        match self {
            Self::Task(task) => task.abort(),
            Self::Process { child, .. } => {
                // Killed by its own PID, never by name.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Upstream {
    /// Starts the upstream for `sdk`, or returns `None` after printing `skipped: …` when xtask
    /// recorded why its packages are not installed. Panics when they are simply missing: a
    /// test never skips silently.
    pub async fn start(sdk: Sdk) -> Option<Self> {
        match sdk {
            Sdk::Rmcp => {
                let (url, log, task) = rmcp_server::spawn().await;
                Some(Self {
                    sdk,
                    url,
                    log: Log::Memory(log),
                    running: Running::Task(task),
                })
            }
            Sdk::Python => {
                let python = installed(&root().join("target/differential/venv/bin/python"))?;
                let script = root().join("tests/upstreams/python/server.py");
                Some(spawn_process(sdk, Command::new(python).arg(script)).await)
            }
            Sdk::TypeScript => {
                let dir = root().join("target/differential/node");
                installed(&dir.join("node_modules/@modelcontextprotocol/sdk/package.json"))?;
                // Node resolves packages next to the script, so the script runs from the
                // installed copy (the source tree never holds a `node_modules`).
                let script = dir.join("server.mjs");
                std::fs::copy(root().join("tests/upstreams/node/server.mjs"), &script)
                    .expect("copying server.mjs next to its node_modules");
                Some(spawn_process(sdk, Command::new("node").arg(script)).await)
            }
        }
    }

    /// The Python SDK's server over TLS with the PEM certificate `cert` and key `key`
    /// (`None`, printing why, when it is not installed); its URL is `https://…`.
    pub async fn start_python_tls(cert: &Path, key: &Path) -> Option<Self> {
        let python = installed(&root().join("target/differential/venv/bin/python"))?;
        let script = root().join("tests/upstreams/python/server.py");
        let mut command = Command::new(python);
        command
            .arg(script)
            .env("PORTCULLIS_TLS_CERT", cert)
            .env("PORTCULLIS_TLS_KEY", key);
        let mut upstream = spawn_process(Sdk::Python, &mut command).await;
        upstream.url = upstream.url.replacen("http://", "https://", 1);
        Some(upstream)
    }

    /// Everything the upstream executed so far, in order.
    pub fn executed(&self) -> Vec<Executed> {
        match &self.log {
            Log::Memory(log) => log.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            Log::File(path) => std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(|line| {
                    serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("{}: bad record {line:?}: {e}", path.display()))
                })
                .collect(),
        }
    }

    /// What the upstream wrote to stderr so far (empty for the in-process one).
    pub fn stderr(&self) -> String {
        match &self.running {
            Running::Process { stderr, .. } => std::fs::read_to_string(stderr).unwrap_or_default(),
            Running::Task(_) => String::new(),
        }
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
}

/// `path` (an installed upstream, or an OAuth client of `tests/it/oauth_clients.rs`) when it
/// exists; `None` (printing why) when xtask recorded a reason it could not install it; a
/// panic otherwise.
pub fn installed(path: &Path) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_owned());
    }
    match std::env::var(SKIP_ENV) {
        Ok(reason) => {
            println!("skipped: {} is not installed: {reason}", path.display());
            None
        }
        Err(_) => panic!(
            "{} is missing: run `cargo xtask upstreams` (or `cargo xtask test`), which installs \
             the pinned Python and Node MCP SDKs and clients under target/",
            path.display()
        ),
    }
}

/// Starts `command` with a fresh executed-log and waits (60 s at most) for its
/// `listening <port>` line.
async fn spawn_process(sdk: Sdk, command: &mut Command) -> Upstream {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("executed.jsonl");
    let stderr = dir.path().join("stderr.txt");
    let mut child = command
        .env("PORTCULLIS_EXECUTED_LOG", &log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("starting the {} upstream: {e}", sdk.label()));
    let stdout = child.stdout.take().expect("piped stdout");
    let running = Running::Process {
        child,
        stderr: stderr.clone(),
        _dir: dir,
    };
    let first_line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(60), first_line)
        .await
        .unwrap_or_else(|_| panic!("the {} upstream did not start within 60 s", sdk.label()))
        .expect("reader task")
        .unwrap_or_default();
    let port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "the {} upstream printed {line:?} instead of `listening <port>`; stderr:\n{}",
                sdk.label(),
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        });
    Upstream {
        sdk,
        url: format!("http://127.0.0.1:{port}/mcp"),
        log: Log::File(log),
        running,
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct RawResponse {
    /// Status.
    pub status: u16,
    /// Body as text (lossy).
    pub body: String,
}

/// Sends `body` byte for byte with `method` (any spelling) and `headers` (repeats kept) to
/// `url`, and reads the whole reply (10 s deadline each).
pub async fn send_bytes(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> RawResponse {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let method = http::Method::from_bytes(method.as_bytes()).expect("a valid method token");
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .expect("valid request");
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("an answer within 10 s")
        .expect("the request is sent");
    let status = response.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the body ends within 10 s")
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    RawResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}
