//! The identity CA end to end: a TLS gateway with `[identity]`, agents registering public keys
//! with a token, calling MCP tools with the certificate they got, rotating it over mTLS, and
//! refused once revoked — driven by `datagrout-conduit` unmodified and by curl with `--cert`,
//! plus every refusal the issue lists (no token, no scope, weak or garbage keys, a revoked,
//! replaced, expired or unknown certificate, one from another CA), and the store's
//! crash safety.

use std::future::Future;
use std::path::Path;
use std::process::Stdio;

use portcullis::engine::api_key::hash_key;
use portcullis::identity::Registry;
use portcullis::identity::book::{Event, Issued};
use portcullis::identity::ca::generate;
use portcullis_tests::differential::installed;
use portcullis_tests::eventually;
use serde_json::Value;

use crate::gateway_harness::TestConfig;
use crate::identity_support::{
    Agent, IdentityGateway, REGISTRAR_KEY, Sender, get, json, portcullis_identity, registrar_keys,
};

/// The gateway of this suite: `/mcp` to the demo MCP server behind `agents` (certificates),
/// `tokens` (the authorization server's, when `more` turns it on), `registrars`
/// ([`REGISTRAR_KEY`]) and `keys` (the standard reader key); identities may get `mcp:read`
/// and `mcp:write`.
type Setup = IdentityGateway;

impl IdentityGateway {
    async fn standard(extra: &str) -> Self {
        Self::standard_with(extra, "").await
    }

    /// [`IdentityGateway::standard`] with more TOML after the `[identity]` section.
    async fn standard_with(extra: &str, more: &str) -> Self {
        let chain: &[&str] = if more.contains("[authorization_server]") {
            &["agents", "tokens", "registrars", "keys"]
        } else {
            &["agents", "registrars", "keys"]
        };
        let config = TestConfig::new()
            .server(r#"public_url = "https://localhost""#)
            .route("/mcp", chain)
            .provider("agents", "mtls")
            .provider("registrars", "api_key")
            .with(r#"on_deny = "next""#)
            .with(&registrar_keys())
            .api_keys(&["reader"])
            .path_rule("/mcp", &["mcp:read"]);
        let identity = format!("scopes = [\"mcp:read\", \"mcp:write\"]\n{extra}\n{more}");
        Self::start(config, "", &identity, None).await
    }

    /// Rotates `agent`'s identity over mTLS with its certificate, to `public_key_pem`.
    async fn rotate(&self, agent: &Agent, public_key_pem: &str) -> (u16, String) {
        let body = serde_json::json!({ "public_key_pem": public_key_pem, "name": "rotator" });
        self.curl(&[
            "--cert",
            &agent.cert_file.display().to_string(),
            "--key",
            &agent.key_file.display().to_string(),
            "-H",
            "Content-Type: application/json",
            "--data",
            &body.to_string(),
            &format!("{}/rotate", self.endpoint()),
        ])
        .await
    }

    /// Opens an MCP session over mTLS with the agent's `cert`/`key` files and calls
    /// `whoami` in it: the status of the first refusal, or 200 and the tool's answer.
    async fn whoami_with(&self, cert: &Path, key: &Path) -> (u16, String) {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let url = format!("{}/mcp", self.base());
        let post = |body: &'static str, session: Option<String>| {
            let (cert, key, url) = (cert.clone(), key.clone(), url.clone());
            async move {
                let mut args = vec![
                    "-i".to_owned(),
                    "--cert".to_owned(),
                    cert,
                    "--key".to_owned(),
                    key,
                    "-H".to_owned(),
                    "Content-Type: application/json".to_owned(),
                    "-H".to_owned(),
                    "Accept: application/json, text/event-stream".to_owned(),
                ];
                if let Some(session) = session {
                    args.extend(["-H".to_owned(), format!("Mcp-Session-Id: {session}")]);
                }
                args.extend(["--data".to_owned(), body.to_owned(), url]);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                self.curl(&args).await
            }
        };
        let (status, text) = post(INITIALIZE, None).await;
        if status != 200 {
            return (status, text);
        }
        let session = text
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("mcp-session-id")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no session id: {text}"));
        let _ = post(INITIALIZED, Some(session.clone())).await;
        post(WHOAMI, Some(session)).await
    }
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
const WHOAMI: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#;

/// Waits until `call` answers `status` (a revocation is read within a second).
async fn until_status<F, Fut>(what: &str, status: u16, call: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (u16, String)>,
{
    eventually(what, || {
        let answer = call();
        async move {
            let (got, body) = answer.await;
            if got == status {
                Ok(())
            } else {
                Err(format!("{got}: {body}"))
            }
        }
    })
    .await;
}

#[tokio::test]
async fn curl_registers_with_a_key_then_calls_with_the_certificate_until_revoked() {
    let setup = Setup::standard("").await;
    let agent = Agent::new(setup.dir.path(), "agent");
    let (status, body) = setup
        .register(REGISTRAR_KEY, &agent.public_pem(), "build-bot")
        .await;
    assert_eq!(status, 201, "{body}");
    let answer = json(&body);
    agent.keep(&answer);
    let id = answer["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("idn_"), "{answer}");
    let subject = format!("spiffe://localhost/agent/{id}");
    assert_eq!(answer["subject"], subject.as_str());
    assert_eq!(answer["name"], "build-bot");
    // The caller held `mcp:read` but not `mcp:write`: the identity gets only the former.
    assert_eq!(answer["scopes"], serde_json::json!(["mcp:read"]));
    assert_eq!(
        answer["ca_cert_pem"].as_str(),
        Some(
            std::fs::read_to_string(setup.path("ca.pem"))
                .expect("ca")
                .as_str()
        )
    );
    let (status, ca) = setup.curl(&[&format!("{}/ca.pem", setup.endpoint())]).await;
    assert_eq!(status, 200);
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");

    let (status, text) = setup.whoami_with(&agent.cert_file, &agent.key_file).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains(&subject),
        "the upstream sees the SPIFFE subject: {text}"
    );

    let listed =
        portcullis_identity(&format!("list --store {}", setup.store().display())).expect("list");
    assert!(
        listed.contains(&id) && listed.contains("build-bot"),
        "{listed}"
    );
    let revoked = portcullis_identity(&format!(
        "revoke {id} --reason decommissioned --store {}",
        setup.store().display()
    ))
    .expect("revoke");
    assert!(revoked.contains("Revoked"), "{revoked}");
    until_status("the revoked certificate is refused", 0, || {
        setup.whoami_with(&agent.cert_file, &agent.key_file)
    })
    .await;
    let listed =
        portcullis_identity(&format!("list --store {}", setup.store().display())).expect("list");
    assert!(!listed.contains(" no\n"), "shown revoked: {listed}");
}

#[tokio::test]
async fn an_open_connection_stops_counting_once_its_certificate_is_revoked() {
    let setup = Setup::standard("").await;
    let agent = Agent::new(setup.dir.path(), "agent");
    let (status, body) = setup
        .register(REGISTRAR_KEY, &agent.public_pem(), "a")
        .await;
    assert_eq!(status, 201, "{body}");
    let answer = json(&body);
    agent.keep(&answer);
    let id = answer["id"].as_str().expect("id").to_owned();
    // One TLS connection, kept alive: the handshake happened before the revocation.
    let mut sender = setup.connect(&agent).await;
    let first = status_of(&mut sender, "/mcp").await;
    assert_ne!(first, 401, "the live certificate is accepted");
    portcullis_identity(&format!("revoke {id} --store {}", setup.store().display()))
        .expect("revoke");
    setup.until_revoked(&id).await;
    let after = status_of(&mut sender, "/mcp").await;
    assert_eq!(
        after, 401,
        "a revoked certificate is refused on its open connection"
    );
}

#[tokio::test]
async fn rotation_with_the_certificate_gives_a_new_one_and_the_old_stops_after_the_overlap() {
    let setup = Setup::standard("rotation_overlap_secs = 10").await;
    let first = Agent::new(setup.dir.path(), "first");
    let (status, body) = setup
        .register(REGISTRAR_KEY, &first.public_pem(), "rotator")
        .await;
    assert_eq!(status, 201, "{body}");
    let registered = json(&body);
    first.keep(&registered);
    let second = Agent::new(setup.dir.path(), "second");
    // Without a certificate, a token does not rotate.
    let (status, body) = setup
        .curl(&[
            "-H",
            &format!("Authorization: Bearer {REGISTRAR_KEY}"),
            "-H",
            "Content-Type: application/json",
            "--data",
            &serde_json::json!({ "public_key_pem": second.public_pem(), "name": "x" }).to_string(),
            &format!("{}/rotate", setup.endpoint()),
        ])
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = setup.rotate(&first, &second.public_pem()).await;
    assert_eq!(status, 200, "{body}");
    let rotated = json(&body);
    second.keep(&rotated);
    assert_eq!(rotated["id"], registered["id"], "same identity");
    assert_ne!(rotated["fingerprint"], registered["fingerprint"]);
    assert_eq!(rotated["subject"], registered["subject"]);
    let (status, _) = setup.whoami_with(&second.cert_file, &second.key_file).await;
    assert_eq!(status, 200, "the new certificate works");
    // The replaced one may not rotate again (no forks), but still calls within the overlap.
    let third = Agent::new(setup.dir.path(), "third");
    let (status, body) = setup.rotate(&first, &third.public_pem()).await;
    assert_eq!(status, 403, "a replaced certificate cannot rotate: {body}");
    until_status(
        "the replaced certificate is refused after the overlap",
        0,
        || setup.whoami_with(&first.cert_file, &first.key_file),
    )
    .await;
    let (status, _) = setup.whoami_with(&second.cert_file, &second.key_file).await;
    assert_eq!(status, 200, "the current certificate still works");
}

#[tokio::test]
async fn registration_refuses_missing_tokens_scopes_weak_keys_bad_names_and_the_quota() {
    let setup = Setup::standard("max_per_caller = 2").await;
    let agent = Agent::new(setup.dir.path(), "agent");
    let url = format!("{}/register", setup.endpoint());
    let body = serde_json::json!({ "public_key_pem": agent.public_pem(), "name": "n" }).to_string();

    let (status, text) = setup
        .curl(&[
            "-i",
            "-H",
            "Content-Type: application/json",
            "--data",
            &body,
            &url,
        ])
        .await;
    assert_eq!(status, 401, "no token: {text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{text}"
    );

    let (status, text) = setup
        .register(crate::gateway_harness::READER_KEY, &agent.public_pem(), "n")
        .await;
    assert_eq!(status, 403, "a token without `identity:register`: {text}");
    assert!(text.contains("insufficient_scope"), "{text}");

    let (status, text) = setup.register("not-a-key", &agent.public_pem(), "n").await;
    assert_eq!(status, 401, "an unknown key: {text}");

    let rsa_1024 = openssl_public(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
    ]);
    let p521 = openssl_public(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-521",
    ]);
    let secp256k1 = openssl_public(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:secp256k1",
    ]);
    let rsa_2048 = openssl_public(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
    ]);
    let ed25519 = openssl_public(&["genpkey", "-algorithm", "ED25519"]);
    for (what, pem, needle) in [
        ("RSA-1024", rsa_1024.as_str(), "too weak"),
        ("P-521", p521.as_str(), "not certified"),
        ("secp256k1", secp256k1.as_str(), "not certified"),
        (
            "garbage",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "PUBLIC KEY",
        ),
        (
            "a private key",
            &agent.key.serialize_pem(),
            "never the private key",
        ),
        ("not PEM", "hello", "PUBLIC KEY"),
    ] {
        let (status, text) = setup.register(REGISTRAR_KEY, pem, "n").await;
        assert_eq!(status, 400, "{what}: {text}");
        assert!(text.contains(needle), "{what}: {text}");
    }
    for name in ["", "has space", "../x", &"x".repeat(65)] {
        let (status, text) = setup
            .register(REGISTRAR_KEY, &agent.public_pem(), name)
            .await;
        assert_eq!(status, 400, "name {name:?}: {text}");
    }
    let (status, text) = setup
        .curl(&[
            "-H",
            &format!("Authorization: Bearer {REGISTRAR_KEY}"),
            "-H",
            "Content-Type: text/plain",
            "--data",
            &body,
            &url,
        ])
        .await;
    assert_eq!(status, 415, "{text}");
    // Strong keys of the other kinds are certified, up to the quota.
    for pem in [&rsa_2048, &ed25519] {
        let (status, text) = setup.register(REGISTRAR_KEY, pem, "ok").await;
        assert_eq!(status, 201, "{text}");
    }
    let (status, text) = setup
        .register(REGISTRAR_KEY, &agent.public_pem(), "third")
        .await;
    assert_eq!(status, 403, "over the quota: {text}");
    assert!(text.contains("already holds 2"), "{text}");
    // Nothing refused was recorded.
    let store = std::fs::read_to_string(setup.store()).expect("store");
    assert_eq!(store.lines().count(), 2, "{store}");
}

#[tokio::test]
async fn certificates_the_store_does_not_vouch_for_are_refused_at_the_handshake() {
    let setup = Setup::standard("").await;
    let d = setup.dir.path();
    // Signed with the CA's own key, but never registered (a leaked CA key, another gateway).
    let ca = portcullis::identity::Ca::from_pem(
        &std::fs::read_to_string(setup.path("ca.pem")).expect("ca"),
        &std::fs::read_to_string(setup.path("ca.key")).expect("key"),
    )
    .expect("CA loads");
    let stray = Agent::new(d, "stray");
    let key = portcullis::identity::public_key::parse(&stray.public_pem()).expect("key");
    let now = portcullis::identity::now();
    let leaf = ca
        .issue(
            &key,
            "stray",
            "spiffe://localhost/agent/idn_stray",
            now,
            3600,
        )
        .expect("issue");
    std::fs::write(&stray.cert_file, &leaf.pem).expect("write");
    let (status, text) = setup.whoami_with(&stray.cert_file, &stray.key_file).await;
    assert_eq!(status, 0, "an unregistered certificate of the CA: {text}");

    // A certificate on record but past its notAfter (the store says when), once the
    // gateway has read that record: refused as expired, not as unknown.
    let expired = setup.expired_agent("expired").await;
    let (status, text) = setup
        .whoami_with(&expired.cert_file, &expired.key_file)
        .await;
    assert_eq!(status, 0, "the expired certificate: {text}");
    let (_, metrics) = setup.curl(&[&format!("{}/metrics", setup.base())]).await;
    assert!(
        metrics.contains(r#"endpoint="handshake",result="expired""#),
        "{metrics}"
    );

    // A certificate from a CA the gateway does not trust at all.
    let other = generate("Another CA", &["localhost".to_owned()]).expect("CA");
    let other_ca = portcullis::identity::Ca::from_pem(&other.ca_cert, &other.ca_key).expect("CA");
    let foreign = Agent::new(d, "foreign");
    let key = portcullis::identity::public_key::parse(&foreign.public_pem()).expect("key");
    let leaf = other_ca
        .issue(
            &key,
            "foreign",
            "spiffe://localhost/agent/idn_foreign",
            now,
            3600,
        )
        .expect("issue");
    std::fs::write(&foreign.cert_file, &leaf.pem).expect("write");
    let (status, text) = setup
        .whoami_with(&foreign.cert_file, &foreign.key_file)
        .await;
    assert_eq!(status, 0, "a certificate of another CA: {text}");
}

#[test]
fn a_write_cut_off_mid_line_is_never_read_and_the_next_writer_cuts_it_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("identities.jsonl");
    let issued = |id: &str, fingerprint: &str| {
        Event::Issued(Issued {
            id: id.into(),
            name: "n".into(),
            owner: "o".into(),
            subject: format!("spiffe://t/agent/{id}"),
            scopes: vec![],
            fingerprint: fingerprint.into(),
            serial: "01".into(),
            at: 0,
            not_after: i64::MAX,
            replaces: None,
        })
    };
    let registry = Registry::open(&path).expect("opens");
    registry
        .transact(|_| Ok::<_, portcullis::identity::StoreError>((vec![issued("idn_a", "aa")], ())))
        .expect("written");
    // A writer killed in the middle of its line.
    let mut text = std::fs::read(&path).expect("read");
    text.extend_from_slice(br#"{"event":"issued","id":"idn_b","na"#);
    std::fs::write(&path, &text).expect("write");
    let reader = Registry::open(&path).expect("a torn tail is not an error");
    assert_eq!(
        reader.read(|b| b.len()),
        1,
        "the unfinished line is not read"
    );
    reader
        .transact(|book| {
            assert!(book.get("idn_b").is_none());
            Ok::<_, portcullis::identity::StoreError>((vec![issued("idn_c", "cc")], ()))
        })
        .expect("written");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 2, "the torn line was cut off: {text}");
    assert!(text.ends_with('\n'));
    let again = Registry::open(&path).expect("opens");
    assert!(again.read(|b| b.get("idn_a").is_some() && b.get("idn_c").is_some()));
    // A complete line that is not an event stops the store, naming the line: a registry
    // opened before keeps the book it had; one opened now is refused.
    std::fs::write(&path, format!("{text}not json\n")).expect("write");
    let error = again.refresh().expect_err("a corrupt line is refused");
    assert!(error.to_string().contains("line 3"), "{error}");
    assert_eq!(again.read(|b| b.len()), 2, "the last good book stays");
    let error = Registry::open(&path).expect_err("a corrupt line is refused");
    assert!(error.to_string().contains("line 3"), "{error}");
}

#[tokio::test]
async fn conduit_registers_calls_over_mtls_rotates_and_is_refused_once_revoked() {
    let Some(python) = installed(&root().join("target/clients/venv/bin/python")) else {
        return;
    };
    let setup = Setup::standard("rotation_overlap_secs = 0").await;
    let agent_dir = setup.path("conduit");
    let script = root().join("tests/clients/python/conduit_identity.py");
    let ca = setup.path("ca.pem");
    let run = |step: &'static str, extra: Vec<String>| {
        let mut args = vec![
            script.display().to_string(),
            step.to_owned(),
            "--endpoint".to_owned(),
            setup.endpoint(),
            "--dir".to_owned(),
            agent_dir.display().to_string(),
            "--url".to_owned(),
            format!("{}/mcp", setup.base()),
        ];
        args.extend(extra);
        let (python, ca) = (python.clone(), ca.clone());
        async move {
            let mut command = std::process::Command::new(&python);
            command
                .args(&args)
                .env("REGISTRATION_TOKEN", REGISTRAR_KEY)
                // conduit registers over its default HTTPS client (the system's roots):
                // the operator's CA is what the agent's machine trusts for that first call.
                .env("SSL_CERT_FILE", &ca)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .stdin(Stdio::null());
            let out = tokio::task::spawn_blocking(move || command.output())
                .await
                .expect("joined")
                .expect("python runs");
            let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(json)
                .collect();
            (
                out.status.success(),
                events,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (ok, events, stderr) = run("register", vec![]).await;
    assert!(ok, "{events:?}\n{stderr}");
    let id = events[0]["id"].as_str().expect("id").to_owned();
    let subject = format!("spiffe://localhost/agent/{id}");

    let whoami = vec!["--call=whoami".to_owned()];
    let (ok, events, stderr) = run("call", whoami.clone()).await;
    assert!(ok, "{events:?}\n{stderr}");
    let call = events
        .iter()
        .find(|e| e["event"] == "call")
        .expect("a call");
    assert_eq!(call["ok"], true, "{events:?}");
    assert!(
        call["text"].as_str().unwrap_or_default().contains(&subject),
        "{events:?}"
    );

    let (ok, events, stderr) = run("rotate", vec![]).await;
    assert!(ok, "{events:?}\n{stderr}");
    assert_eq!(events[0]["id"], id.as_str(), "rotation keeps the identity");
    let (ok, events, stderr) = run("call", whoami.clone()).await;
    assert!(ok, "the rotated certificate calls: {events:?}\n{stderr}");

    portcullis_identity(&format!("revoke {id} --store {}", setup.store().display()))
        .expect("revoke");
    setup.until_revoked(&id).await;
    let (ok, events, _) = run("call", whoami).await;
    assert!(!ok, "a revoked identity cannot call: {events:?}");
}

async fn status_of(sender: &mut Sender, path: &str) -> u16 {
    let response = sender.send_request(get(path)).await.expect("answered");
    let status = response.status().as_u16();
    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
    status
}

/// The authorization server with one client, `bootstrap-agent` (secret
/// [`CLIENT_SECRET`]), allowed `identity:register` and `mcp:read`; its tokens are checked by
/// the `tokens` provider. `dir` holds the signing key.
fn oauth(dir: &Path) -> String {
    let key = portcullis_tests::oauth::TestKey::ed25519("k1");
    let file = dir.join("k1.pem");
    std::fs::write(&file, key.pem()).expect("write key");
    format!(
        r#"
[authorization_server]

[[authorization_server.keys]]
kid = "k1"
algorithm = "EdDSA"
private_key = "file://{file}"

[[authorization_server.clients]]
id = "bootstrap-agent"
secret_hash = "{hash}"
scopes = ["identity:register", "mcp:read"]

[providers.tokens]
type = "issued"
on_deny = "next"
"#,
        file = file.display(),
        hash = hash_key(CLIENT_SECRET),
    )
}

const CLIENT_SECRET: &str = "pcs_test-bootstrap-secret-00000000000000";

#[tokio::test]
async fn conduit_bootstraps_with_a_token_from_the_gateways_own_authorization_server() {
    let Some(python) = installed(&root().join("target/clients/venv/bin/python")) else {
        return;
    };
    let keys = tempfile::tempdir().expect("temp dir");
    let setup = Setup::standard_with("", &oauth(keys.path())).await;
    let agent_dir = setup.path("conduit");
    let ca = setup.path("ca.pem");
    let script = root().join("tests/clients/python/conduit_identity.py");
    let step = |step: &str, extra: &[&str]| {
        let mut command = std::process::Command::new(&python);
        command
            .arg(&script)
            .args([step, "--endpoint", &setup.endpoint(), "--dir"])
            .arg(&agent_dir)
            .args(["--url", &format!("{}/mcp", setup.base())])
            .args(extra)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("SSL_CERT_FILE", &ca)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null());
        async move {
            let out = tokio::task::spawn_blocking(move || command.output())
                .await
                .expect("joined")
                .expect("python runs");
            let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(json)
                .collect();
            (
                out.status.success(),
                events,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (ok, events, stderr) = step("register-oauth", &["--client-id", "bootstrap-agent"]).await;
    assert!(ok, "{events:?}\n{stderr}");
    let id = events[0]["id"].as_str().expect("id").to_owned();
    let (ok, events, stderr) = step("call", &["--call=whoami"]).await;
    assert!(ok, "{events:?}\n{stderr}");
    let call = events
        .iter()
        .find(|e| e["event"] == "call")
        .expect("a call");
    let text = call["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("spiffe://localhost/agent/{id}")),
        "{events:?}"
    );
    // The owner of the identity is the OAuth client that registered it.
    let listed =
        portcullis_identity(&format!("list --store {}", setup.store().display())).expect("list");
    assert!(listed.contains("bootstrap-agent"), "{listed}");
}

fn openssl_public(genpkey: &[&str]) -> String {
    let private = std::process::Command::new("openssl")
        .args(genpkey)
        .output()
        .expect("openssl runs");
    assert!(
        private.status.success(),
        "{}",
        String::from_utf8_lossy(&private.stderr)
    );
    let mut child = std::process::Command::new("openssl")
        .args(["pkey", "-pubout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&private.stdout)
        .expect("write");
    let out = child.wait_with_output().expect("openssl finishes");
    String::from_utf8(out.stdout).expect("PEM")
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
}

/// A partner CA in `client_ca`, its CRL in `crls`: the partner certificate the CRL lists is
/// refused at the handshake, the other one and the identity CA's certificates (which no CRL
/// covers: their revocations are the store's) still work.
#[tokio::test]
async fn crls_refuse_the_partner_certificates_they_list_and_leave_identities_alone() {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
        KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber, date_time_ymd,
    };
    let partner = tempfile::tempdir().expect("temp dir");
    let p = partner.path();
    let ca_key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
        .distinguished_name
        .push(DnType::CommonName, "Partner CA");
    let ca_cert = params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(params, &ca_key);
    let leaf = |name: &str, serial: u8| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(vec![serial]));
        let cert = params.signed_by(&key, &issuer).expect("leaf");
        std::fs::write(p.join(format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(p.join(format!("{name}.key")), key.serialize_pem()).expect("write");
    };
    leaf("partner-good", 1);
    leaf("partner-revoked", 2);
    let crl = CertificateRevocationListParams {
        this_update: date_time_ymd(2020, 1, 1),
        next_update: date_time_ymd(2100, 1, 1),
        crl_number: SerialNumber::from(vec![1]),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(vec![2]),
            revocation_time: date_time_ymd(2021, 1, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .expect("CRL");
    std::fs::write(p.join("partner-ca.pem"), ca_cert.pem()).expect("write");
    std::fs::write(p.join("partner.crl.pem"), crl.pem().expect("pem")).expect("write");

    let config = TestConfig::new()
        .server(r#"public_url = "https://localhost""#)
        .route("/mcp", &["agents", "registrars"])
        .provider("agents", "mtls")
        .with(r#"scopes = { "*" = ["mcp:read"] }"#)
        .provider("registrars", "api_key")
        .with(&registrar_keys())
        .path_rule("/mcp", &["mcp:read"]);
    let tls = format!(
        "client_ca = \"{p}/partner-ca.pem\"\ncrls = [\"{p}/partner.crl.pem\"]",
        p = p.display()
    );
    let setup = IdentityGateway::start(config, &tls, r#"scopes = ["mcp:read"]"#, None).await;
    let agent = Agent::new(setup.dir.path(), "agent");
    let (status, body) = setup
        .register(REGISTRAR_KEY, &agent.public_pem(), "agent")
        .await;
    assert_eq!(status, 201, "{body}");
    agent.keep(&json(&body));
    let (status, text) = setup.whoami_with(&agent.cert_file, &agent.key_file).await;
    assert_eq!(status, 200, "an identity, which no CRL covers: {text}");
    let (status, text) = setup
        .whoami_with(&p.join("partner-good.pem"), &p.join("partner-good.key"))
        .await;
    assert_eq!(
        status, 200,
        "a partner certificate the CRL does not list: {text}"
    );
    assert!(text.contains("partner-good"), "{text}");
    let (status, text) = setup
        .whoami_with(
            &p.join("partner-revoked.pem"),
            &p.join("partner-revoked.key"),
        )
        .await;
    assert_eq!(status, 0, "the partner certificate the CRL lists: {text}");
}

/// Rotation is authenticated by a certificate in good standing only: a revoked one and an
/// expired one are refused at the handshake, before any rotation; and the metrics count the
/// registrations and the refusals.
#[tokio::test]
async fn rotation_with_a_revoked_or_expired_certificate_is_refused_and_counted() {
    let setup = Setup::standard("").await;
    let agent = Agent::new(setup.dir.path(), "agent");
    let (status, body) = setup
        .register(REGISTRAR_KEY, &agent.public_pem(), "doomed")
        .await;
    assert_eq!(status, 201, "{body}");
    let answer = json(&body);
    agent.keep(&answer);
    let id = answer["id"].as_str().expect("id").to_owned();
    let next_pem = Agent::new(setup.dir.path(), "next").public_pem();
    portcullis_identity(&format!("revoke {id} --store {}", setup.store().display()))
        .expect("revoke");
    // Once the gateway has read the revocation (within a second) the handshake refuses it;
    // before that, the rotation endpoint does (403), judging under the store's lock.
    setup.until_revoked(&id).await;
    let (status, text) = setup.rotate(&agent, &next_pem).await;
    assert_eq!(status, 0, "rotation with the revoked certificate: {text}");

    // An identity whose certificate the store says has expired.
    let old = setup.expired_agent("old").await;
    let (status, text) = setup.rotate(&old, &next_pem).await;
    assert_eq!(status, 0, "rotation with the expired certificate: {text}");

    let (status, metrics) = setup.curl(&[&format!("{}/metrics", setup.base())]).await;
    assert_eq!(status, 200, "{metrics}");
    for line in [
        r#"portcullis_identity_requests_total{endpoint="register",result="ok"} 1"#,
        r#"portcullis_identity_requests_total{endpoint="handshake",result="revoked"}"#,
        r#"portcullis_identity_requests_total{endpoint="handshake",result="expired"}"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
}

/// `portcullis identity init` writes a CA and a listener certificate that a gateway serves
/// with the config it prints, keys owner-only, and never overwrites them.
#[tokio::test]
async fn identity_init_writes_a_ca_the_printed_config_serves() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_dir = dir.path().join("ca");
    let printed = portcullis_identity(&format!(
        "init --dir {} --server-name localhost,127.0.0.1",
        ca_dir.display()
    ))
    .expect("init");
    for (file, mode) in [
        ("ca.key", 0o600),
        ("server.key", 0o600),
        ("ca.pem", 0o644),
        ("server.pem", 0o644),
    ] {
        let meta = std::fs::metadata(ca_dir.join(file)).expect(file);
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    let again = portcullis_identity(&format!("init --dir {}", ca_dir.display()))
        .expect_err("never over an existing CA");
    assert!(again.contains("already exists"), "{again}");
    // The printed tables, under a server and a route, make a gateway that serves them.
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\npath = \"/mcp\"\nupstream = \"http://127.0.0.1:9/mcp\"\nchain = [\"agents\"]\n\n[providers.agents]\ntype = \"mtls\"\n\n{printed}"
    );
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("Wrote") && !l.starts_with("Keep"))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = portcullis::config::load_str(&text, "<printed>", dir.path())
        .unwrap_or_else(|e| panic!("the printed config loads: {e}\n{text}"));
    let assembled = portcullis::config::assemble(&config, None, &Default::default())
        .await
        .expect("the CA loads");
    let identity = assembled.identity.expect("identity on");
    assert!(
        identity.ca.subject.contains("Portcullis agent identity CA"),
        "{}",
        identity.ca.subject
    );
}

/// Registrations and certificates refused on a request are audit lines, without the key or
/// the certificate.
#[test]
fn registrations_and_refused_certificates_are_audited() {
    portcullis_tests::run_alone("identity::audit_lines_in_this_process");
}

#[tokio::test]
#[ignore = "captures this thread's logs, which other tests' threads disturb: \
            registrations_and_refused_certificates_are_audited runs it alone"]
async fn audit_lines_in_this_process() {
    let logs = crate::wasm_sandbox::capture_logs();
    let setup = Setup::standard("").await;
    let agent = Agent::new(setup.dir.path(), "audited");
    let (status, body) = setup
        .register(REGISTRAR_KEY, &agent.public_pem(), "audited")
        .await;
    assert_eq!(status, 201, "{body}");
    let answer = json(&body);
    agent.keep(&answer);
    let id = answer["id"].as_str().expect("id").to_owned();
    let mut sender = setup.connect(&agent).await;
    assert_ne!(status_of(&mut sender, "/mcp").await, 401);
    portcullis_identity(&format!("revoke {id} --store {}", setup.store().display()))
        .expect("revoke");
    setup.until_revoked(&id).await;
    assert_eq!(status_of(&mut sender, "/mcp").await, 401);
    let (_, json_lines) = logs.assert_one_line_per_event();
    let audits: Vec<Value> = json_lines
        .lines()
        .map(json)
        .filter(|e| e["target"] == "portcullis::audit")
        .collect();
    let registered = audits
        .iter()
        .find(|e| e["provider"] == "identity" && e["path"] == "/identity/register")
        .unwrap_or_else(|| panic!("a registration line in {audits:#?}"));
    assert_eq!(registered["verdict"], "allow", "{registered}");
    assert_eq!(registered["subject"], "registrar", "{registered}");
    let refused = audits
        .iter()
        .find(|e| e["provider"] == "identity-certificate")
        .unwrap_or_else(|| panic!("a refused-certificate line in {audits:#?}"));
    assert_eq!(refused["verdict"], "deny", "{refused}");
    assert_eq!(refused["status"], 401, "{refused}");
    let pem_body = agent.public_pem();
    let key_line = pem_body.lines().nth(1).expect("a key line");
    assert!(!json_lines.contains(key_line), "the key is never logged");
    assert!(
        !json_lines.contains(REGISTRAR_KEY),
        "the token is never logged"
    );
}

/// Other spellings of the identity CA's paths — case, a trailing `/` or `.`, dot segments,
/// an encoded `/` — that an upstream behind a catch-all route might read as them are never
/// proxied: a key or a token sent to them stays at the gateway.
#[tokio::test]
async fn other_spellings_of_the_identity_paths_never_reach_an_upstream() {
    let upstream = portcullis_tests::upstream::RecordingUpstream::start().await;
    let config = TestConfig::new()
        .server(r#"public_url = "https://localhost""#)
        .route("/mcp", &["agents", "registrars"])
        .http_route("/", &["open"])
        .provider("open", "anonymous")
        .with(r#"subject = "anyone""#)
        .provider("agents", "mtls")
        .provider("registrars", "api_key")
        .with(&registrar_keys());
    let setup =
        IdentityGateway::start(config, "", r#"scopes = ["mcp:read"]"#, Some(&upstream.url)).await;
    let (status, _) = setup.curl(&[&format!("{}/elsewhere", setup.base())]).await;
    assert_eq!(status, 200, "the catch-all route proxies other paths");
    let before = upstream.seen().len();
    let agent = Agent::new(setup.dir.path(), "agent");
    let body = serde_json::json!({ "public_key_pem": agent.public_pem(), "name": "n" }).to_string();
    for path in [
        "/Identity/register",
        "/IDENTITY/ca.pem",
        "/identity/register/",
        "/identity/register.",
        "/identity./register",
        "/identity/./register",
        "/identity/x/../register",
        "/identity%2Fregister",
        "/identity/%72egister",
        "/identity/other",
        "/identity",
    ] {
        let (status, text) = setup
            .curl(&[
                // HTTP/1.1: curl 7.88 reports an HTTP/2 answer that comes before it has sent
                // the whole body as a framing error, without the status.
                "--http1.1",
                "--path-as-is",
                "-H",
                &format!("Authorization: Bearer {REGISTRAR_KEY}"),
                "-H",
                "Content-Type: application/json",
                "--data",
                &body,
                &format!("{}{path}", setup.base()),
            ])
            .await;
        assert!([400, 403, 404].contains(&status), "{path}: {status} {text}");
    }
    assert_eq!(
        upstream.seen().len(),
        before,
        "no spelling of an identity path reached the upstream: {:?}",
        upstream
            .seen()
            .iter()
            .skip(before)
            .map(|s| s.target.clone())
            .collect::<Vec<_>>()
    );
}
