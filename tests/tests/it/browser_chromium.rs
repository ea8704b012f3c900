//! Browser clients in a real browser (issue 17): headless Chromium loads a page from one
//! origin (a small server started here, `http://localhost:PAGE`) whose script calls the
//! gateway on another (`http://127.0.0.1:GATEWAY`) with `fetch()`, as a browser-based MCP
//! client does. `Authorization` and `Accept: application/json, text/event-stream` make every
//! call non-simple, so Chromium sends a real preflight first and enforces the answers itself:
//! what the script can read (the exposed headers, a 401's `WWW-Authenticate`) and whether
//! `fetch()` rejects is the browser's verdict, not the test's reading of headers.
//!
//! The script reports what it saw by POSTing JSON to its own origin's `/report` (same
//! origin, no CORS involved), which the test awaits with a deadline while watching that
//! Chromium is still running. Chromium comes from the Debian package `chromium`, which
//! `.ci/run` installs; without it these tests print `skipped: …` and pass.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::{get, post};
use portcullis_tests::eventually::DEADLINE;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::browser::browser_config_allowing;
use crate::gateway_forward_auth::which;
use crate::gateway_harness::{READER_KEY, RecordingUpstream, start, start_with_upstream};

/// The page's script: initialize an MCP session without a key (a 401 challenge) and with
/// one, then `notifications/initialized` and `tools/list` in that session, reporting for
/// each call what the browser let it see, or why `fetch()` rejected.
const SCRIPT: &str = r#"
const MCP = GATEWAY + "/mcp";
const INIT = {jsonrpc: "2.0", id: 1, method: "initialize", params: {
  protocolVersion: "2025-06-18", capabilities: {},
  clientInfo: {name: "chromium-test", version: "0"}}};
async function call(key, session, message) {
  const headers = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
  };
  if (key) headers["Authorization"] = "Bearer " + key;
  if (session) {
    headers["Mcp-Session-Id"] = session;
    headers["Mcp-Protocol-Version"] = "2025-06-18";
  }
  try {
    const r = await fetch(MCP, {method: "POST", headers, body: JSON.stringify(message)});
    return {
      status: r.status,
      session: r.headers.get("Mcp-Session-Id"),
      challenge: r.headers.get("WWW-Authenticate"),
      vary: r.headers.get("Vary"),
      body: await r.text(),
    };
  } catch (e) {
    return {error: String(e)};
  }
}
async function run() {
  const report = {origin: location.origin};
  report.anonymous = await call(null, null, INIT);
  report.initialize = await call(KEY, null, INIT);
  const session = report.initialize.session;
  if (session) {
    report.initialized = await call(KEY, session,
      {jsonrpc: "2.0", method: "notifications/initialized"});
    report.list = await call(KEY, session, {jsonrpc: "2.0", id: 2, method: "tools/list"});
  }
  return report;
}
run()
  .catch(e => ({script_error: String(e)}))
  .then(report => fetch("/report", {method: "POST", body: JSON.stringify(report)}));
"#;

/// The page server: `/` serves the page, `/report` takes what its script saw.
struct PageServer {
    port: u16,
    reports: mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PageServer {
    /// Binds 127.0.0.1:0; the page is served once [`PageServer::serve`] knows the gateway.
    async fn bind() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        (listener, port)
    }

    /// Serves the page calling `gateway` with `key` on `listener`.
    fn serve(listener: TcpListener, gateway: &str, key: &str) -> Self {
        let port = listener.local_addr().expect("addr").port();
        let page = format!(
            "<!doctype html><html><head><title>mcp</title></head><body><script>\n\
             const GATEWAY = {};\nconst KEY = {};\n{SCRIPT}</script></body></html>",
            serde_json::to_string(gateway).expect("json"),
            serde_json::to_string(key).expect("json"),
        );
        let (tx, reports) = mpsc::unbounded_channel();
        let app = Router::new()
            .route("/", get(move || async move { Html(page) }))
            .route(
                "/report",
                post(
                    |State(tx): State<mpsc::UnboundedSender<String>>, body: String| async move {
                        let _ = tx.send(body);
                    },
                ),
            )
            .with_state(tx);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            port,
            reports,
            task,
        }
    }
}

/// A headless Chromium with a profile of its own, killed (by PID) when dropped.
struct Chromium {
    child: Child,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn open(program: &Path, url: &str) -> Self {
        let profile = tempfile::tempdir().expect("tempdir");
        let log = profile.path().join("chromium.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = Command::new(program)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                &format!("--user-data-dir={}", profile.path().display()),
                url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", program.display()));
        Self {
            child,
            log,
            _profile: profile,
        }
    }

    /// The end of Chromium's log, for a failure message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Chromium {
    /// Kills the browser process by its PID; its renderer and zygote processes notice and
    /// exit on their own.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Loads `http://{page_host}:PORT/` in Chromium, its script calling `gateway` with `key`,
/// and returns the script's report (within [`DEADLINE`]).
async fn run_page(
    chromium: &Path,
    listener: TcpListener,
    page_host: &str,
    gateway: &str,
    key: &str,
) -> Value {
    let mut page = PageServer::serve(listener, gateway, key);
    let mut browser = Chromium::open(chromium, &format!("http://{page_host}:{}/", page.port));
    let started = Instant::now();
    let report = loop {
        match tokio::time::timeout(Duration::from_millis(100), page.reports.recv()).await {
            Ok(Some(report)) => break report,
            Ok(None) => unreachable!("the page server holds the sender"),
            Err(_) => {}
        }
        if let Ok(Some(status)) = browser.child.try_wait() {
            panic!(
                "chromium exited ({status}) before the page reported\n{}",
                browser.log_tail()
            );
        }
        assert!(
            started.elapsed() < DEADLINE,
            "expected: the page's report within {DEADLINE:?}\nchromium log:\n{}",
            browser.log_tail()
        );
    };
    drop(browser);
    serde_json::from_str(&report).unwrap_or_else(|e| panic!("report is JSON: {e}: {report}"))
}

fn chromium() -> Option<PathBuf> {
    let found = which("chromium");
    if found.is_none() {
        println!("skipped: `chromium` is not on PATH (CI installs the Debian package in .ci/run)");
    }
    found
}

/// An allowed origin: the preflights pass, the 401 challenge's `WWW-Authenticate` is
/// readable, and a keyed client initializes a session (its `Mcp-Session-Id` readable),
/// sends it back (another preflight, for `Mcp-Session-Id`) and lists the demo's tools.
/// A header the gateway sends but does not expose (`Vary`) stays hidden from the script.
#[tokio::test]
async fn chromium_on_an_allowed_origin_calls_an_mcp_route_and_reads_the_exposed_headers() {
    let Some(chromium) = chromium() else { return };
    let (listener, port) = PageServer::bind().await;
    let page_origin = format!("http://localhost:{port}");
    let h = start(browser_config_allowing(&[&page_origin])).await;
    let report = run_page(&chromium, listener, "localhost", &h.base, READER_KEY).await;
    println!("chromium report: {report:#}");
    assert_eq!(report["origin"], page_origin.as_str(), "{report:#}");

    let anonymous = &report["anonymous"];
    assert_eq!(anonymous["status"], 401, "{report:#}");
    let challenge = anonymous["challenge"].as_str().unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "the script reads the 401's WWW-Authenticate: {report:#}"
    );
    assert_eq!(
        anonymous["vary"],
        Value::Null,
        "a header not exposed stays hidden from the script: {report:#}"
    );

    let initialize = &report["initialize"];
    assert_eq!(initialize["status"], 200, "{report:#}");
    let session = initialize["session"].as_str().unwrap_or_default();
    assert!(
        !session.is_empty(),
        "the script reads Mcp-Session-Id: {report:#}"
    );
    assert!(
        initialize["body"]
            .as_str()
            .is_some_and(|b| b.contains("serverInfo")),
        "{report:#}"
    );
    assert_eq!(report["initialized"]["status"], 202, "{report:#}");
    let list = &report["list"];
    assert_eq!(list["status"], 200, "{report:#}");
    assert!(
        list["body"]
            .as_str()
            .is_some_and(|b| b.contains("\"tools\"")),
        "{report:#}"
    );

    // Chromium did send preflights, and the gateway answered them itself.
    let metrics = h.request("GET", "/metrics", &[], None).await.body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_requests_total{") && l.contains("status=\"204\"")),
        "preflights answered 204:\n{metrics}"
    );
}

/// A disallowed origin (`127.0.0.1:PAGE`, while only `localhost:PAGE` is allowed): the
/// gateway refuses the preflight, so Chromium rejects `fetch()` without sending the POST,
/// keyed or not, and nothing reaches the upstream.
#[tokio::test]
async fn chromium_on_a_disallowed_origin_is_blocked_and_nothing_reaches_the_upstream() {
    let Some(chromium) = chromium() else { return };
    let upstream = RecordingUpstream::start().await;
    let (listener, port) = PageServer::bind().await;
    let allowed = format!("http://localhost:{port}");
    let h = start_with_upstream(
        browser_config_allowing(&[&allowed]),
        &format!("{}/mcp", upstream.url),
    )
    .await;
    let report = run_page(&chromium, listener, "127.0.0.1", &h.base, READER_KEY).await;
    println!("chromium report: {report:#}");
    assert_eq!(
        report["origin"],
        format!("http://127.0.0.1:{port}").as_str()
    );
    for call in ["anonymous", "initialize"] {
        let error = report[call]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("TypeError"),
            "{call}: fetch() rejects: {report:#}"
        );
    }
    assert_eq!(report["initialize"]["session"], Value::Null);
    assert_eq!(upstream.hits(), 0, "nothing reaches the upstream");

    // The browser did reach the gateway: its preflights were refused there (403).
    let metrics = h.request("GET", "/metrics", &[], None).await.body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_requests_total{") && l.contains("status=\"403\"")),
        "preflights refused 403:\n{metrics}"
    );
}
