//! Hot reload against a real gateway on port 0: real files in a temp dir, the real watcher,
//! the forward-auth endpoint asking the `version-probe` component which version answers.
//! Every wait is a poll with a deadline.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis_tests::{eventually, guests};

use crate::gateway_harness::{TestConfig, Watched, serve_watched};

/// The version-probe set-up as a config file for [`serve_watched`]: `/mcp`, checked
/// through forward-auth, answered by the `probe` provider running `component` (a name in
/// the providers directory, or a path).
pub fn probe_config(component: &str) -> TestConfig {
    TestConfig::for_file()
        .behind("envoy")
        .route("/mcp", &["probe"])
        .upstream("http://127.0.0.1:9/mcp")
        .wasm("probe", component)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A gateway serving `<dir>/portcullis.toml`, with `<dir>/providers/probe.wasm` watched.
struct Live {
    base: String,
    // Before `dir`: the gateway stops before its directory is removed.
    _served: Watched,
    dir: tempfile::TempDir,
    client: HttpClient,
}

impl Live {
    async fn start(component: &str) -> Self {
        Self::start_with(component, probe_config("probe")).await
    }

    async fn start_with(component: &str, config: TestConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("providers")).expect("providers dir");
        std::fs::copy(component, dir.path().join("providers/probe.wasm")).expect("copy");
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, config.to_string()).expect("write config");
        Self::serve(dir, path, None).await
    }

    async fn serve(dir: tempfile::TempDir, config: PathBuf, providers: Option<PathBuf>) -> Self {
        let served = serve_watched(config, providers).await;
        Self {
            base: served.base.clone(),
            _served: served,
            dir,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The version answering a forward-auth check of `/mcp`, or the status when refused.
    async fn version(&self) -> Result<String, u16> {
        version(&self.client, &self.base).await
    }

    async fn get(&self, path: &str) -> String {
        let request = http::Request::get(format!("{}{path}", self.base))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = self.client.request(request).await.expect("answer");
        let body = response.into_body().collect().await.expect("body");
        String::from_utf8_lossy(&body.to_bytes()).into_owned()
    }

    async fn readyz(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/readyz").await).expect("/readyz is JSON")
    }

    async fn wait_for_version(&self, want: &str) {
        eventually(&format!("version {want} to answer"), || async {
            self.version().await.as_deref() == Ok(want)
        })
        .await;
    }

    /// Waits for a rejected reload whose error contains `needle`; the old version must
    /// answer throughout.
    async fn wait_for_rejection(&self, needle: &str, serving: &str) {
        eventually(&format!("a reload rejected with `{needle}`"), || async {
            assert_eq!(self.version().await.as_deref(), Ok(serving));
            let ready = self.readyz().await;
            ready["reload"]["last_result"] == "failure"
                && ready["reload"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains(needle))
        })
        .await;
    }
}

async fn version(client: &HttpClient, base: &str) -> Result<String, u16> {
    let request = http::Request::get(format!("{base}/check/mcp"))
        .header("x-forwarded-for", "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| 0u16)?
        .map_err(|_| 1u16)?;
    let status = response.status().as_u16();
    let subject = response
        .headers()
        .get("x-portcullis-subject")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let _ = response.into_body().collect().await;
    match (status, subject) {
        (200, Some(subject)) => Ok(subject),
        (status, _) => Err(status),
    }
}

/// Writes `bytes` to `path` the way deploy tools do: a sibling temp file renamed over it.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).expect("read guest component")
}

fn reloads(metrics: &str, result: &str) -> u64 {
    let prefix = format!("portcullis_reloads_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn replacing_a_component_file_serves_the_new_version_within_a_bounded_poll() {
    let live = Live::start(guests::VERSION_PROBE).await;
    assert_eq!(live.version().await.as_deref(), Ok("v1"));
    let first = live.readyz().await;
    let v2 = read(guests::VERSION_PROBE_V2);
    // Overwritten in place, as `cp` does: the watcher sees the write in progress too.
    std::fs::write(live.path("providers/probe.wasm"), &v2).expect("overwrite");
    live.wait_for_version("v2").await;

    let ready = live.readyz().await;
    let probe = &ready["providers"][0];
    assert_eq!(probe["name"], "probe");
    assert_eq!(probe["sha256"], portcullis::wasm::content_hash(&v2));
    assert!(
        probe["loaded_at_unix_ms"].as_u64() >= first["providers"][0]["loaded_at_unix_ms"].as_u64(),
        "{ready}"
    );
    assert!(ready["generation"].as_u64() > Some(1), "{ready}");
    assert_eq!(ready["reload"]["last_result"], "success", "{ready}");
    assert!(reloads(&live.get("/metrics").await, "success") >= 1);
}

#[tokio::test]
async fn broken_components_and_configs_are_rejected_while_the_last_good_keeps_answering() {
    let live = Live::start(guests::VERSION_PROBE).await;
    assert_eq!(live.version().await.as_deref(), Ok("v1"));
    let wasm = live.path("providers/probe.wasm");
    let config = live.path("portcullis.toml");

    replace(&wasm, b"\0asm but not really");
    live.wait_for_rejection("is not a valid WebAssembly component", "v1")
        .await;

    replace(&wasm, &read(guests::WRONG_WORLD));
    live.wait_for_rejection("targets the wrong world", "v1")
        .await;

    // `configure` fails: a provider that traps while configuring.
    std::fs::copy(guests::HOSTILE, live.path("providers/hostile.wasm")).expect("copy");
    let hostile = probe_config("hostile").with(r#"config = { mode = "trap-in-configure" }"#);
    replace(&config, hostile.to_string().as_bytes());
    live.wait_for_rejection("refused its configuration", "v1")
        .await;

    replace(&config, b"[server\nlisten = ");
    live.wait_for_rejection(&format!("{}: not valid TOML", config.display()), "v1")
        .await;

    // A chain naming a component whose file is gone fails closed: the reload is refused.
    replace(&config, probe_config("probe").to_string().as_bytes());
    std::fs::remove_file(&wasm).expect("delete component");
    live.wait_for_rejection("does not exist", "v1").await;

    let ready = live.readyz().await;
    assert!(ready["reload"]["failures"].as_u64() >= Some(5), "{ready}");
    assert!(reloads(&live.get("/metrics").await, "failure") >= 5);

    // And a good component recovers.
    replace(&wasm, &read(guests::VERSION_PROBE_V2));
    live.wait_for_version("v2").await;
    assert_eq!(live.readyz().await["reload"]["last_result"], "success");
}

#[tokio::test]
async fn a_symlinked_providers_dir_retargeted_kubernetes_style_is_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (release, component) in [
        ("release-1", guests::VERSION_PROBE),
        ("release-2", guests::VERSION_PROBE_V2),
    ] {
        std::fs::create_dir(dir.path().join(release)).expect("release dir");
        std::fs::copy(component, dir.path().join(release).join("probe.wasm")).expect("copy");
    }
    let link = dir.path().join("providers");
    std::os::unix::fs::symlink("release-1", &link).expect("symlink");
    let config = dir.path().join("portcullis.toml");
    std::fs::write(&config, probe_config("probe").to_string()).expect("write config");
    let live = Live::serve(dir, config, Some(link.clone())).await;
    assert_eq!(live.version().await.as_deref(), Ok("v1"));

    // As the kubelet does: a new link beside the old, renamed over it.
    let tmp = live.path("providers.tmp");
    std::os::unix::fs::symlink("release-2", &tmp).expect("symlink");
    std::fs::rename(&tmp, &link).expect("swap the link");
    live.wait_for_version("v2").await;
}

#[tokio::test]
async fn fifty_swaps_under_concurrent_load_fail_no_request() {
    // What is tested is that swaps drop nothing. The call deadline is wall-clock time, and
    // with the rest of the suite compiling crates beside it a 2-core machine misses a 20 ms
    // deadline now and then with no swap at all; so this test gives calls a deadline it
    // cannot miss by starvation. (Instances created after a swap are configured under
    // `configure_timeout`, not under the call deadline, either way.)
    let config = probe_config("probe").with("limits = { timeout_ms = 2000 }");
    let live = Live::start_with(guests::VERSION_PROBE, config).await;
    assert_eq!(live.version().await.as_deref(), Ok("v1"));
    let wasm = live.path("providers/probe.wasm");
    let versions = [read(guests::VERSION_PROBE), read(guests::VERSION_PROBE_V2)];

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let stop = stop.clone();
        let base = live.base.clone();
        load.push(tokio::spawn(async move {
            let client: HttpClient =
                Client::builder(TokioExecutor::new()).build(HttpConnector::new());
            let (mut v1, mut v2, mut failed) = (0u64, 0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match version(&client, &base).await.as_deref() {
                    Ok("v1") => v1 += 1,
                    Ok("v2") => v2 += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (v1, v2, failed)
        }));
    }

    for swap in 0..50 {
        let (bytes, want) = if swap % 2 == 0 {
            (&versions[1], "v2")
        } else {
            (&versions[0], "v1")
        };
        replace(&wasm, bytes);
        live.wait_for_version(want).await;
    }
    stop.store(true, Ordering::Relaxed);

    let (mut v1, mut v2, mut failed) = (0, 0, Vec::new());
    for task in load {
        let (a, b, f) = task.await.expect("load task");
        v1 += a;
        v2 += b;
        failed.extend(f);
    }
    let metrics = live.get("/metrics").await;
    let wasm_failures: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("portcullis_wasm_failures_total"))
        .collect();
    assert!(
        failed.is_empty(),
        "expected: every request answered by v1 or v2\ngot: {} failures, first: {:?}, {wasm_failures:?}",
        failed.len(),
        failed.first()
    );
    assert!(v1 > 0 && v2 > 0, "both versions served: v1 {v1}, v2 {v2}");
    let ready = live.readyz().await;
    assert!(ready["reload"]["successes"].as_u64() >= Some(50), "{ready}");
    assert_eq!(ready["reload"]["failures"], 0, "{ready}");
}
