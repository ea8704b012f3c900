//! Review 15c: a third round of attacks on the agent-identity CA (`[identity]`): the store,
//! the listeners and registration. Each test is a finding: it fails against the code it was
//! written for, for the reason its doc comment gives.

use std::time::Duration;

use portcullis_tests::upstream::RecordingUpstream;

use crate::gateway_harness::TestConfig;
use crate::identity_support::{Agent, IdentityGateway, REGISTRAR_KEY, json, registrar_keys};

/// `/mcp` (the registration route: agents by certificate, the registrar by key) and `/feed`,
/// a plain HTTP route only agents reach, in front of `upstream`; identities may get
/// `mcp:read`. `extra` are lines for `[identity]`.
async fn start(upstream: &str, extra: &str) -> IdentityGateway {
    let config = TestConfig::new()
        .server(r#"public_url = "https://localhost""#)
        .route("/mcp", &["agents", "registrars"])
        .http_route("/feed", &["agents"])
        .provider("agents", "mtls")
        .provider("registrars", "api_key")
        .with(&registrar_keys());
    let identity = format!("scopes = [\"mcp:read\"]\n{extra}");
    IdentityGateway::start(config, "", &identity, Some(upstream)).await
}

/// Registers a new agent `name`; returns it and its id.
async fn register(setup: &IdentityGateway, name: &str) -> (Agent, String) {
    let agent = Agent::new(setup.dir.path(), name);
    let (status, body) = setup
        .register(REGISTRAR_KEY, &agent.public_pem(), name)
        .await;
    assert_eq!(status, 201, "{body}");
    let answer = json(&body);
    agent.keep(&answer);
    (agent, answer["id"].as_str().expect("id").to_owned())
}

/// `GET /feed` as `agent` over a new mTLS connection: the status, or 0 when refused at the
/// handshake.
async fn feed(setup: &IdentityGateway, agent: &Agent) -> (u16, String) {
    let url = format!("{}/feed", setup.base());
    setup
        .curl(&[
            "--cert",
            &agent.cert_file.display().to_string(),
            "--key",
            &agent.key_file.display().to_string(),
            &url,
        ])
        .await
}

/// The store's fail-closed promise (README: "When the store cannot be read, the last good
/// book serves for 10 seconds; after that every certificate of the identity CA is refused
/// until the store can be read again") is kept only for reads that *fail*: the staleness
/// clock (`Registry::failing_since`) starts when `refresh` returns an error, and the refresh
/// loop (`keep_fresh`) waits for each refresh before the next. A read that never returns —
/// a hung network or FUSE mount, or, as here, the store replaced by a FIFO (`open` waits for
/// a writer that never comes) — starts no clock: the refresh task is stuck for good, no
/// error is ever logged, and the last book stays in force forever. Here the store is made
/// unreadable that way and, 13 seconds later (past the 10-second bound and a refresh), the
/// agent's certificate is still accepted; any revocation written meanwhile (elsewhere, or
/// once the mount recovers) could never be seen either, since the loop never runs again.
#[tokio::test]
async fn a_store_whose_read_never_returns_still_goes_stale() {
    let upstream = RecordingUpstream::start().await;
    let setup = start(&upstream.url, "").await;
    let (agent, _) = register(&setup, "hung-store").await;
    let (status, text) = feed(&setup, &agent).await;
    assert_eq!(status, 200, "the agent calls: {text}");

    // The store becomes a file whose reads hang (a FIFO with no writer).
    let store = setup.store();
    let fifo = setup.path("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo");
    std::fs::rename(&fifo, &store).expect("the FIFO replaces the store");

    tokio::time::sleep(Duration::from_secs(13)).await;
    let (status, text) = feed(&setup, &agent).await;

    // Let the stuck read go (a writer opens the FIFO), so that the runtime can stop.
    release(&store);
    assert_ne!(
        status, 200,
        "13 s after the store stopped answering reads, the identity CA's certificate is \
         still accepted (the last good book never goes stale): {text}"
    );
}

/// Opens the FIFO at `path` for writing (without waiting: a reader blocked in `open` is let
/// go), removes it, and closes it.
fn release(path: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt as _;
    const O_NONBLOCK: i32 = 0o4000;
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(O_NONBLOCK)
        .open(path);
    let _ = std::fs::remove_file(path);
    drop(writer);
}
