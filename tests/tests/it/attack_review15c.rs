//! Review 15c: a third round of attacks on the agent-identity CA (`[identity]`): the store,
//! the listeners and registration. Each test is a finding: it fails against the code it was
//! written for, for the reason its doc comment gives.

use std::time::Duration;

use bytes::Bytes;
use portcullis_tests::oauth::TestKey;
use portcullis_tests::upstream::{RecordingUpstream, json as json_answer};

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
/// Fixed: a read of the store that has not returned for 10 s makes the store stale too.
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

/// The issuer of the registrars' tokens in [`jwt_registrar_gateway`].
const ISSUER: &str = "https://issuer.test";

/// A gateway whose registration route `/mcp` takes agents by certificate and registrars by
/// a JWT of [`ISSUER`] (signed by the returned key, its key set served by the returned
/// upstream), audience `https://localhost/mcp`.
async fn jwt_registrar_gateway() -> (IdentityGateway, TestKey, RecordingUpstream) {
    let key = TestKey::ed25519("k1");
    let jwks = Bytes::from(key.jwks().to_string());
    let idp =
        RecordingUpstream::answering(move |_| std::future::ready(json_answer(jwks.clone()))).await;
    let config = TestConfig::new()
        .server(r#"public_url = "https://localhost""#)
        .route("/mcp", &["agents", "registrars"])
        .provider("agents", "mtls")
        .jwt("registrars", ISSUER, &format!("{}/jwks", idp.url))
        .with(r#"audience = "https://localhost/mcp""#);
    let setup = IdentityGateway::start(config, "", "scopes = [\"mcp:read\"]", Some(&idp.url)).await;
    (setup, key, idp)
}

/// A registrar's token: subject `sub`, scopes `identity:register mcp:read`.
fn registrar_token(key: &TestKey, sub: &str) -> String {
    let now = portcullis_tests::oauth::now();
    key.sign(
        "k1",
        &serde_json::json!({
            "iss": ISSUER, "sub": sub, "aud": "https://localhost/mcp",
            "iat": now, "exp": now + 300, "scope": "identity:register mcp:read",
        }),
    )
}

/// A registrar subject that writes a line of its own: a line break, then a forged record.
fn forging_subject() -> String {
    format!("alice\n{}", crate::wasm_sandbox::FORGED)
}

/// The project's rule for untrusted text in logs (`log_text.rs`: "the subject [is chosen] by
/// a token's issuer … A line break in any of them would let its author write a line of
/// their choosing (a forged audit record) into a line-oriented log"; every such field goes
/// through `escape_control`) is kept by the audit line, but not by the registration's own
/// log line: `endpoints.rs` logs `tracing::info!(…, owner = %owner, …, "identity
/// registered")` with the registering caller's subject raw. A registrar whose token's `sub`
/// (an IdP-chosen, often user-influenced string) holds a line break and a JSON object gets
/// that object written as a line of its own in the text log — here a forged
/// `portcullis::audit` "allow" record for `admin`.
/// Fixed: the owner is escaped in the registration log line.
#[test]
fn a_registrars_subject_cannot_forge_a_log_line() {
    portcullis_tests::run_alone("attack_review15c::registration_log_forgery_in_this_process");
}

#[tokio::test]
#[ignore = "captures this thread's logs, which other tests' threads disturb: \
            a_registrars_subject_cannot_forge_a_log_line runs it alone"]
async fn registration_log_forgery_in_this_process() {
    let logs = crate::wasm_sandbox::capture_logs();
    let (setup, key, _idp) = jwt_registrar_gateway().await;
    let agent = Agent::new(setup.dir.path(), "forger");
    let token = registrar_token(&key, &forging_subject());
    let (status, body) = setup.register(&token, &agent.public_pem(), "forger").await;
    assert_eq!(status, 201, "the registrar registers: {body}");
    logs.assert_one_line_per_event();
}

/// `portcullis identity list` is the operator's view of who holds an identity (and so what
/// to revoke), but it prints each identity's owner — the registering caller's subject, from
/// its token — raw. A registrar whose `sub` holds a line break (or a carriage return, or a
/// terminal escape) writes rows of its choosing into that table: here a forged row claims an
/// identity `idn_forged` owned by `alice` and already revoked. The list must show one row
/// per identity, whatever the owners' subjects hold (escaped, as the audit line escapes
/// them).
/// Fixed: `identity list` escapes the owner.
#[tokio::test]
async fn a_registrars_subject_cannot_forge_rows_of_identity_list() {
    let (setup, key, _idp) = jwt_registrar_gateway().await;
    let agent = Agent::new(setup.dir.path(), "forger");
    let forged_row = format!(
        "{:<28} {:<20} {:<24} {:<64} {:<20} 2026-01-01T00:00:00Z",
        "idn_forged", "victim", "alice", "-", "-"
    );
    let token = registrar_token(&key, &format!("mallory\n{forged_row}\n"));
    let (status, body) = setup.register(&token, &agent.public_pem(), "forger").await;
    assert_eq!(status, 201, "the registrar registers: {body}");
    let list = crate::identity_support::portcullis_identity(&format!(
        "list --store {}",
        setup.store().display()
    ))
    .expect("list");
    assert_eq!(
        list.lines().count(),
        2,
        "one identity is on record, so the list is a header and one row; a registrar's \
         subject added rows of its own:\n{list}"
    );
}

/// Fixed: a reload that removes `[identity]` (or changes its CA) while the listener trusts
/// that CA is refused, naming the restart it takes; the last good site keeps the subjects
/// reserved.
///
/// Review 15b's fix keeps every subject the store has given reserved from other CAs' certificates
/// "whatever the template now" — but only while `[identity]` is configured: the reservation
/// is made by the `mtls` provider from the identity authority of the configuration being
/// served (`assemble.rs`: `reserving(…)` only when `[identity]` is on). A reload that takes
/// the identity CA out (README: "A reload takes every other `[identity]` key"; retiring the
/// agent CA, moving agents elsewhere) drops the reservation altogether, while everything
/// downstream still knows those subjects: the upstream's per-agent state, and the MCP
/// session bindings, which are kept across reloads and keyed by provider and subject. A
/// partner CA in `client_ca` then names a certificate `spiffe://localhost/agent/<id>` and
/// reaches the upstream with exactly the agent's `x-portcullis-subject` and
/// `x-portcullis-provider` — the impersonation review 15 closed, reopened by a reload.
#[tokio::test]
async fn after_the_identity_ca_is_reloaded_away_its_subjects_stay_reserved() {
    let upstream = RecordingUpstream::start().await;
    let partner_dir = tempfile::tempdir().expect("temp dir");
    let partner = portcullis::identity::ca::generate("Partner CA", &["partner.example".to_owned()])
        .expect("CA");
    let partner_pem = partner_dir.path().join("partner-ca.pem");
    std::fs::write(&partner_pem, &partner.ca_cert).expect("write");
    let tls = format!("client_ca = {:?}", partner_pem.display().to_string());
    let config = || {
        TestConfig::new()
            .server(r#"public_url = "https://localhost""#)
            .route("/mcp", &["agents", "registrars"])
            .http_route("/feed", &["agents"])
            .provider("agents", "mtls")
            .with("identity = \"san\"\nsan_type = \"uri\"\nscopes = { \"*\" = [\"mcp:read\"] }")
            .provider("registrars", "api_key")
            .with(&registrar_keys())
    };
    let setup = IdentityGateway::start(
        config(),
        &tls,
        "scopes = [\"mcp:read\"]",
        Some(&upstream.url),
    )
    .await;
    let (agent, id) = register(&setup, "victim").await;
    let subject = format!("spiffe://localhost/agent/{id}");
    let (status, text) = feed(&setup, &agent).await;
    assert_eq!(status, 200, "the agent calls: {text}");

    // The operator takes the identity CA out of the configuration; the gateway reloads.
    let d = setup.dir.path().display().to_string();
    let text = config().toml(&format!(
        "[server.tls]\ncert = \"{d}/server.pem\"\nkey = \"{d}/server.key\"\n{tls}\n"
    ));
    let text = crate::gateway_harness::fill(text, setup.harness.addr, &upstream.url);
    let file = setup.dir.path().join("reloaded.toml");
    std::fs::write(&file, &text).expect("write");
    let reloader = portcullis::reload::Reloader::new(
        setup.harness.gateway.clone(),
        portcullis::load::Source::file(&file),
        portcullis::load::Reuse::default(),
    );
    let outcome = reloader.reload(portcullis::reload::Trigger::Request).await;
    match &outcome {
        portcullis::reload::ReloadOutcome::Rejected { reason } => {
            assert!(reason.contains("takes a restart"), "{reason}");
        }
        other => panic!("the reload that retires the identity CA is refused, not {other:?}"),
    }

    // A partner certificate named as the agent.
    let partner_ca =
        portcullis::identity::Ca::from_pem(&partner.ca_cert, &partner.ca_key).expect("CA");
    let impostor = Agent::new(setup.dir.path(), "impostor");
    let key = portcullis::identity::public_key::parse(&impostor.public_pem()).expect("key");
    let leaf = partner_ca
        .issue(
            &key,
            "impostor",
            &subject,
            portcullis::identity::now(),
            3600,
        )
        .expect("issue");
    std::fs::write(&impostor.cert_file, &leaf.pem).expect("write");
    let (status, text) = feed(&setup, &impostor).await;

    let seen = upstream.seen();
    let as_agent = seen.first().expect("the agent's call");
    assert_eq!(
        as_agent.header("x-portcullis-subject"),
        Some(subject.as_str())
    );
    let as_partner = seen.get(1);
    assert!(
        as_partner.is_none_or(|s| s.header("x-portcullis-subject") != Some(subject.as_str())),
        "once the identity CA was reloaded away, a certificate of the partner CA reached the \
         upstream as the agent `{subject}` ({status}, provider {:?}, the agent's {:?}): {text}",
        as_partner.and_then(|s| s.header("x-portcullis-provider")),
        as_agent.header("x-portcullis-provider"),
    );
}
