//! The commands behind `portcullis check`, `eval` and `hash-key`, the embedded demo
//! configuration served end to end, and swapping a running gateway's site.

use std::sync::Arc;
use std::time::Duration;

use portcullis::gateway::{Gateway, serve};
use portcullis::observability::Metrics;
use portcullis_cli::{self as cli, CheckArgs, EvalArgs, HashKeyArgs};

use crate::gateway_harness::{READER_KEY, fill, send, standard, start, tool_text};

fn write_config(dir: &std::path::Path, template: impl std::fmt::Display) -> std::path::PathBuf {
    let text = fill(
        template,
        "127.0.0.1:8080".parse().expect("addr"),
        "http://127.0.0.1:9/mcp",
    );
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test]
async fn check_accepts_a_good_config_and_names_what_is_wrong_in_a_bad_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), standard());
    let summary = cli::check(&CheckArgs {
        config: path.clone(),
        providers: None,
    })
    .await
    .expect("the standard config checks");
    assert!(summary.contains("OK"), "{summary}");
    assert!(summary.contains("keys (api_key)"), "{summary}");

    let bad = standard().on_route("/mcp", r#"chain = ["keys", "ghost"]"#);
    let path = write_config(dir.path(), bad);
    let error = cli::check(&CheckArgs {
        config: path.clone(),
        providers: None,
    })
    .await
    .expect_err("an unknown provider is refused");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("no provider is named `ghost`"),
        "{message}"
    );
}

#[tokio::test]
async fn check_compiles_wasm_components_and_reports_a_missing_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let template = standard().wasm("partner", "nowhere/partner-token.wasm");
    let path = write_config(dir.path(), template);
    let error = cli::check(&CheckArgs {
        config: path,
        providers: None,
    })
    .await
    .expect_err("a missing component is refused");
    assert!(
        error.to_string().contains("providers.partner.component"),
        "{error}"
    );
}

#[tokio::test]
async fn eval_prints_the_decision_the_answer_and_the_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), standard());
    let body = dir.path().join("call.json");
    std::fs::write(
        &body,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_reset"}}"#,
    )
    .expect("write body");
    let args = |headers: Vec<String>| EvalArgs {
        config: path.clone(),
        providers: None,
        method: "POST".into(),
        path: "/mcp".into(),
        headers,
        body: Some(body.clone()),
        peer: None,
    };
    let denied = cli::eval(&args(vec![format!("Authorization: Bearer {READER_KEY}")]))
        .await
        .expect("eval runs");
    assert!(!denied.allowed);
    assert!(denied.text.contains("answer   403"), "{}", denied.text);
    assert!(
        denied
            .text
            .contains("error=\"insufficient_scope\", scope=\"admin mcp:read\""),
        "{}",
        denied.text
    );
    assert!(denied.text.contains("authn   keys"), "{}", denied.text);
    assert!(
        !denied.text.contains(READER_KEY),
        "eval must not print credentials"
    );

    let anonymous = cli::eval(&args(vec![])).await.expect("eval runs");
    assert!(
        anonymous.text.contains("answer   401"),
        "{}",
        anonymous.text
    );
}

#[test]
fn hash_key_prints_the_sha256_form() {
    let hashed = cli::hash_key(&HashKeyArgs {
        key: Some("s3cret".into()),
        stdin: false,
    })
    .expect("hash");
    assert_eq!(
        hashed,
        "sha256:1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"
    );
}

#[tokio::test]
async fn embedded_demo_serves_mcp_with_the_printed_keys_and_wasm_providers() {
    let providers = tempfile::tempdir().expect("tempdir");
    for (from, to) in [
        (
            portcullis_tests::guests::PARTNER_TOKEN,
            "partner-token.wasm",
        ),
        (
            portcullis_tests::guests::MCP_TOOL_POLICY,
            "mcp-tool-policy.wasm",
        ),
    ] {
        std::fs::copy(from, providers.path().join(to)).expect("copy component");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let started = cli::start(
        None,
        Some(providers.path()),
        Some(addr),
        Some(portcullis_tests::runtime().clone()),
    )
    .await
    .expect("the demo loads");
    let (_upstream, setup) = started.demo.as_ref().expect("demo mode");
    let loaded = &started.loaded;
    assert!(setup.partner_token, "notes: {:?}", setup.notes);
    let banner = portcullis_cli::demo::banner(setup, &loaded.config.server.public_url, None);
    assert!(banner.contains("curl -s http://"), "{banner}");
    assert!(
        banner.contains(portcullis_cli::demo::DEMO_READ_KEY),
        "{banner}"
    );

    let tls_config = loaded
        .config
        .server
        .tls
        .clone()
        .expect("the demo runs TLS too");
    assert!(
        loaded.config.server.tls_listen.is_some(),
        "on a second listener"
    );
    let gateway = Gateway::new(started.loaded.site, Arc::new(Metrics::new()));
    let tls = portcullis::gateway::tls::server_config(&tls_config, &gateway).expect("TLS");
    let tls_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let tls_addr = tls_listener.local_addr().expect("addr");
    let banner = portcullis_cli::demo::banner(
        setup,
        &started.loaded.config.server.public_url,
        Some(tls_addr),
    );
    assert!(banner.contains("/identity/register"), "{banner}");
    let tls_task = tokio::spawn(serve(
        tls_listener,
        gateway.clone(),
        Some(tls),
        std::future::pending(),
        Duration::from_secs(1),
    ));
    let task = tokio::spawn(serve(
        listener,
        gateway,
        None,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    let url = format!("http://{addr}/mcp");
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    // The demo OAuth client, exactly as the banner tells a newcomer to ask.
    assert!(
        banner.contains("-d grant_type=client_credentials"),
        "{banner}"
    );
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!(
                "{}:{}",
                portcullis_cli::demo::DEMO_CLIENT_ID,
                setup.client_secret
            )
        )
    );
    let issued = send(
        &format!("http://{addr}/oauth/token"),
        "POST",
        &[
            ("authorization", &basic),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Some("grant_type=client_credentials"),
    )
    .await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    let issued: serde_json::Value = serde_json::from_str(&issued.body).expect("json");
    let token = issued["access_token"].as_str().expect("a token");
    for auth in [
        format!("Bearer {}", setup.read_key),
        format!("Bearer {token}"),
        "partner-token demo-partner:demo-secret".to_owned(),
    ] {
        let reply = send(
            &url,
            "POST",
            &[
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("authorization", &auth),
            ],
            Some(init),
        )
        .await;
        assert_eq!(reply.status, 200, "{auth}: {}", reply.body);
    }
    let anonymous = send(
        &url,
        "POST",
        &[("content-type", "application/json")],
        Some(init),
    )
    .await;
    assert_eq!(anonymous.status, 401);

    // An agent identity, as the banner shows it: register a key with the admin key, then
    // call over mTLS on the TLS listener.
    let dir = setup
        .identity_dir
        .clone()
        .expect("the demo runs the identity CA");
    let agent_key = rcgen::KeyPair::generate().expect("key");
    let agent_dir = tempfile::tempdir().expect("tempdir");
    let (key_file, cert_file) = (
        agent_dir.path().join("agent.key"),
        agent_dir.path().join("agent.pem"),
    );
    std::fs::write(&key_file, agent_key.serialize_pem()).expect("write");
    let base = format!("https://localhost:{}", tls_addr.port());
    let curl = |args: Vec<String>| {
        let mut command = std::process::Command::new("curl");
        command
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(dir.join("ca.pem"))
            .args(args);
        async move {
            let out = tokio::task::spawn_blocking(move || command.output())
                .await
                .expect("joined")
                .expect("curl runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let body =
        serde_json::json!({ "name": "demo-agent-1", "public_key_pem": agent_key.public_key_pem() });
    let answer = curl(vec![
        format!("{base}/identity/register"),
        "-H".into(),
        format!("Authorization: Bearer {}", setup.admin_key),
        "-H".into(),
        "Content-Type: application/json".into(),
        "-d".into(),
        body.to_string(),
    ])
    .await;
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    std::fs::write(
        &cert_file,
        answer["cert_pem"].as_str().expect("a certificate"),
    )
    .expect("write");
    let initialized = curl(vec![
        format!("{base}/mcp"),
        "--cert".into(),
        cert_file.display().to_string(),
        "--key".into(),
        key_file.display().to_string(),
        "-H".into(),
        "Content-Type: application/json".into(),
        "-H".into(),
        "Accept: application/json, text/event-stream".into(),
        "-d".into(),
        init.to_owned(),
    ])
    .await;
    assert!(initialized.contains("serverInfo"), "{initialized}");
    task.abort();
    tls_task.abort();
}

#[tokio::test]
async fn swapping_the_site_applies_to_new_requests() {
    let h = start(standard()).await;
    let session = h.mcp_session(READER_KEY).await;
    let whoami = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#;
    let before = h.mcp_post(Some(READER_KEY), Some(&session), whoami).await;
    assert_eq!(before.status, 200);
    assert!(tool_text(&before).contains("\"x-portcullis-subject\":[\"reader\"]"));

    // The same config with the reader key removed.
    let upstream = h.upstream.as_ref().expect("upstream").url.clone();
    let text = fill(
        standard().api_keys(&["admin", "noscope"]),
        h.addr,
        &upstream,
    );
    let config =
        portcullis::config::load_str(&text, "<swap>", std::path::Path::new(".")).expect("valid");
    let assembled = portcullis::config::assemble(&config, None, &Default::default())
        .await
        .expect("assembles");
    h.gateway
        .swap(portcullis::gateway::Site::new(&config, assembled));
    let after = h.mcp_post(Some(READER_KEY), Some(&session), whoami).await;
    assert_eq!(after.status, 401, "the new site no longer knows the key");
}
