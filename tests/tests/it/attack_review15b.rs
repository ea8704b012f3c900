//! Review 15b: a second round of attacks on the agent-identity CA (`[identity]`), the streaming
//! guard and the second TLS listener. Each test is a finding: it fails against the code it
//! was written for, for the reason its doc comment gives.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use portcullis::identity::ca::generate;
use portcullis_tests::upstream::{RecordingUpstream, answer};

use crate::gateway_harness::{TestConfig, fill};
use crate::identity_support::{
    Agent, IdentityGateway, REGISTRAR_KEY, json, portcullis_identity, registrar_keys,
};

/// `/mcp` (the registration route: agents by certificate, the registrar by key) and `/feed`,
/// a plain HTTP route only agents reach, in front of `upstream`; identities may get
/// `mcp:read`. `agents` are lines for the `mtls` provider, `extra` for `[identity]`.
fn config(agents: &str) -> TestConfig {
    TestConfig::new()
        .server(r#"public_url = "https://localhost""#)
        .route("/mcp", &["agents", "registrars"])
        .http_route("/feed", &["agents"])
        .provider("agents", "mtls")
        .with(agents)
        .provider("registrars", "api_key")
        .with(&registrar_keys())
}

async fn start(upstream: &str, tls: &str, agents: &str, extra: &str) -> IdentityGateway {
    let identity = format!("scopes = [\"mcp:read\"]\n{extra}");
    IdentityGateway::start(config(agents), tls, &identity, Some(upstream)).await
}

/// Registers a new agent `name`; returns it and its id and subject.
async fn register(setup: &IdentityGateway, name: &str) -> (Agent, String, String) {
    let agent = Agent::new(setup.dir.path(), name);
    let (status, body) = setup
        .register(REGISTRAR_KEY, &agent.public_pem(), name)
        .await;
    assert_eq!(status, 201, "{body}");
    let answer = json(&body);
    agent.keep(&answer);
    let id = answer["id"].as_str().expect("id").to_owned();
    let subject = answer["subject"].as_str().expect("subject").to_owned();
    (agent, id, subject)
}

/// Revokes `id` with the CLI, then waits until the gateway refuses `agent`'s certificate on
/// a new connection (refused at the handshake, or `GET /identity/ca.pem` refused with 401),
/// and half a second more: the revocation is in force everywhere.
async fn revoke_and_wait(setup: &IdentityGateway, agent: &Agent, id: &str) {
    portcullis_identity(&format!(
        "revoke {id} --reason compromised --store {}",
        setup.store().display()
    ))
    .expect("revoke");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        // Refused at the handshake (an alert), or on the request (401).
        let mut probe = setup.connect(agent).await;
        let status = match probe
            .send_request(crate::identity_support::get("/identity/ca.pem"))
            .await
        {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        };
        if status == 0 || status == 401 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revocation never took effect (still {status})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
}

/// A request body fed from a channel: the client decides when each chunk goes.
struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Fed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
    }
}

/// An HTTP/1.1 mTLS connection as `agent` whose requests carry a [`Fed`] body.
async fn fed_connection(
    setup: &IdentityGateway,
    agent: &Agent,
) -> hyper::client::conn::http1::SendRequest<Fed> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(setup.path("ca.pem")).expect("ca"))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_file(&agent.cert_file).expect("cert")],
            PrivateKeyDer::from_pem_file(&agent.key_file).expect("key"),
        )
        .expect("client auth");
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(setup.harness.addr)
        .await
        .expect("connect");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("http/1.1");
    tokio::spawn(conn);
    sender
}

/// The guard (`identity::guard`) watches only the *answer*, and only once the upstream has
/// started it; a request body the gateway streams to the upstream (on every route that does
/// not buffer bodies: `mcp = false` without a body-reading provider) is never judged again. Here an agent starts a `POST /feed` upload with its certificate in good standing,
/// is revoked (`portcullis identity revoke`; new requests with the certificate are refused
/// with 401 from then on), and a second later sends the rest of the body: the gateway
/// passes it on, the upstream receives and acts on every byte the revoked agent sent after
/// its revocation, and answers it. Revocation is promised to reach open connections within a
/// second; a request body is as much "in flight" as an answer (an upload, a bidirectional
/// HTTP/2 stream), and must stop reaching the upstream once its certificate is no longer good.
/// Fixed: an identity-CA caller's request body is guarded like its answer.
#[tokio::test]
async fn a_request_body_still_streaming_when_its_identity_is_revoked_is_cut_off() {
    let upstream = RecordingUpstream::answering(|seen| async move { answer(200, seen.body) }).await;
    let setup = start(&upstream.url, "", "", "").await;
    let (agent, id, _) = register(&setup, "uploader").await;

    let mut uploading = fed_connection(&setup, &agent).await;
    let (feed, body) = tokio::sync::mpsc::channel(4);
    let request = http::Request::builder()
        .method("POST")
        .uri("/feed")
        .header("host", "localhost")
        .header("content-type", "application/octet-stream")
        .body(Fed(body))
        .expect("request");
    let in_flight = tokio::spawn(async move { uploading.send_request(request).await });
    feed.send(Bytes::from_static(b"sent-while-good;"))
        .await
        .expect("first chunk");

    revoke_and_wait(&setup, &agent, &id).await;

    // The revoked agent goes on uploading.
    let _ = feed
        .send(Bytes::from_static(b"sent-after-revocation"))
        .await;
    drop(feed);
    let answer = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the upload ends")
        .expect("joined");
    let echoed = match answer {
        Ok(response) => {
            let status = response.status();
            let body = response.into_body().collect().await.map(|c| c.to_bytes());
            format!("{status} {body:?}")
        }
        Err(error) => format!("error: {error}"),
    };
    let reached = upstream
        .seen()
        .iter()
        .any(|s| s.body.windows(21).any(|w| w == b"sent-after-revocation"));
    assert!(
        !reached,
        "bytes a revoked agent sent after `portcullis identity revoke {id}` took effect reached \
         the upstream, which answered them (the agent got: {echoed})"
    );
}

/// The guard starts judging an answer only when the upstream has begun it, and then only
/// after its first [`CHECK_EVERY`](portcullis::identity::guard::CHECK_EVERY) (its timer is
/// armed when the answer is wrapped, its first tick half a second later). An answer that the
/// upstream takes a while to produce — the "long tool answer" the guard is there to stop —
/// and then sends whole is therefore delivered in full, with a 200, to an agent revoked
/// while the upstream was working: nothing between the request's start and the answer's
/// first half second looks at the store again. Here the upstream is still working when the
/// agent is revoked; only once the revocation is in force (new requests with the
/// certificate refused) does it answer, and the revoked agent receives the complete answer.
/// Fixed: the certificate is judged again when the answer arrives (401 instead).
#[tokio::test]
async fn an_answer_finished_after_its_identity_is_revoked_is_refused() {
    // The upstream works until the test says the revocation is in force (then answers whole).
    let (finish, finished) = tokio::sync::watch::channel(false);
    let upstream = RecordingUpstream::answering(move |_| {
        let mut finished = finished.clone();
        async move {
            let _ = finished.wait_for(|done| *done).await;
            answer(200, "the long tool answer")
        }
    })
    .await;
    let setup = start(&upstream.url, "", "", "").await;
    let (agent, id, _) = register(&setup, "slow-caller").await;

    let mut waiting = setup.connect(&agent).await;
    let in_flight = tokio::spawn(async move {
        let response = waiting
            .send_request(crate::identity_support::get("/feed"))
            .await?;
        let status = response.status();
        let body = response.into_body().collect().await.map(|c| c.to_bytes());
        Ok::<_, hyper::Error>((status, body))
    });
    upstream.arrived(1).await;
    let started = tokio::time::Instant::now();
    revoke_and_wait(&setup, &agent, &id).await;
    let revoked_after = started.elapsed();
    finish.send(true).expect("the upstream waits");

    let outcome = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the answer ends")
        .expect("joined");
    let delivered = matches!(
        &outcome,
        Ok((status, Ok(body))) if *status == 200 && body.as_ref() == b"the long tool answer"
    );
    assert!(
        !delivered,
        "an agent revoked while the upstream worked (the revocation in force on new requests \
         {revoked_after:?} into the call, before the upstream answered) still got the whole \
         answer: {outcome:?}"
    );
}

/// The reserved-subject check (`mtls.rs`, `reserving`) compares the certificate's subject
/// with the identity CA's prefix as written, case-blind; but the upstream does not read the
/// subject as written. `x-portcullis-subject` carries it verbatim, spaces included
/// (`proxy::header_value` lets spaces through), and an HTTP parser strips a header value's
/// leading whitespace. So a certificate of another CA the listener trusts
/// (`server.tls.client_ca`, a partner's) whose CN is an agent's SPIFFE ID behind a space,
/// `" spiffe://localhost/agent/idn_…"`, is not refused as a reserved subject, and the
/// upstream receives it as exactly the agent's `x-portcullis-subject` (and the same
/// `x-portcullis-provider`): the partner acts as the agent (review 15's impersonation, one
/// space away).
/// Fixed: subjects with surrounding whitespace or control characters are refused.
#[tokio::test]
async fn a_partner_certificate_naming_an_agent_behind_a_space_is_refused() {
    let upstream = RecordingUpstream::start().await;
    let partner_dir = tempfile::tempdir().expect("temp dir");
    let partner = generate("Partner CA", &["partner.example".to_owned()]).expect("CA");
    let partner_pem = partner_dir.path().join("partner-ca.pem");
    std::fs::write(&partner_pem, &partner.ca_cert).expect("write");
    let setup = start(
        &upstream.url,
        &format!("client_ca = {:?}", partner_pem.display().to_string()),
        r#"scopes = { "*" = ["mcp:read"] }"#,
        "",
    )
    .await;
    let (agent, _, subject) = register(&setup, "victim").await;

    // The partner mints itself a certificate named as the agent, behind a space.
    let partner_ca =
        portcullis::identity::Ca::from_pem(&partner.ca_cert, &partner.ca_key).expect("CA");
    let impostor = Agent::new(setup.dir.path(), "impostor");
    let key = portcullis::identity::public_key::parse(&impostor.public_pem()).expect("key");
    let spaced = format!(" {subject}");
    let leaf = partner_ca
        .issue(
            &key,
            &spaced,
            "spiffe://partner.example/impostor",
            portcullis::identity::now(),
            3600,
        )
        .expect("issue");
    std::fs::write(&impostor.cert_file, &leaf.pem).expect("write");

    let url = format!("https://localhost:{}/feed", setup.harness.addr.port());
    let call = |who: &Agent| {
        let (cert, key) = (
            who.cert_file.display().to_string(),
            who.key_file.display().to_string(),
        );
        let url = url.clone();
        let setup = &setup;
        async move { setup.curl(&["--cert", &cert, "--key", &key, &url]).await }
    };
    let (status, text) = call(&agent).await;
    assert_eq!(status, 200, "the agent itself: {text}");
    let (status, text) = call(&impostor).await;
    let seen = upstream.seen();
    let as_agent = seen.first().expect("the agent's call");
    assert_eq!(
        as_agent.header("x-portcullis-subject"),
        Some(subject.as_str())
    );
    let as_partner = seen.get(1);
    assert!(
        as_partner.is_none_or(|s| s.header("x-portcullis-subject") != Some(subject.as_str())),
        "a certificate of the partner CA (CN {spaced:?}) reached the upstream as the agent \
         `{subject}` ({status}, provider {:?} as the agent's {:?}): {text}",
        as_partner.and_then(|s| s.header("x-portcullis-provider")),
        as_agent.header("x-portcullis-provider"),
    );
}

/// The reserved prefix is computed from the `uri_san` and `trust_domain` being served now,
/// but the identities are judged by the store, whatever subject they were given. A reload
/// that changes `trust_domain` (or `uri_san`, or `server.public_url`, which the trust domain
/// defaults to — README: "A reload takes every other `[identity]` key") leaves every
/// identity already issued working, under its old subject, and no longer reserved: a
/// certificate of another CA (`client_ca`) naming an existing agent's SPIFFE ID then
/// authenticates, through the same `mtls` provider, as that agent — same
/// `x-portcullis-subject`, same provider, so the same MCP sessions — which review 15's fix
/// was to stop. Here the agent registers under `old.example`, the trust domain is moved to
/// `new.example` by a reload, the agent still calls as `spiffe://old.example/agent/…`, and a
/// partner certificate with that URI SAN is taken for it.
/// Fixed: every subject the store has given stays reserved, whatever the template now.
#[tokio::test]
async fn after_a_trust_domain_change_old_agents_subjects_stay_reserved() {
    let upstream = RecordingUpstream::start().await;
    let partner_dir = tempfile::tempdir().expect("temp dir");
    let partner = generate("Partner CA", &["partner.example".to_owned()]).expect("CA");
    let partner_pem = partner_dir.path().join("partner-ca.pem");
    std::fs::write(&partner_pem, &partner.ca_cert).expect("write");
    let tls = format!("client_ca = {:?}", partner_pem.display().to_string());
    let agents = "identity = \"san\"\nsan_type = \"uri\"\nscopes = { \"*\" = [\"mcp:read\"] }";
    let setup = start(
        &upstream.url,
        &tls,
        agents,
        r#"trust_domain = "old.example""#,
    )
    .await;
    let (agent, _, subject) = register(&setup, "victim").await;
    assert!(
        subject.starts_with("spiffe://old.example/agent/"),
        "{subject}"
    );

    // The operator moves the trust domain; the gateway reloads.
    let d = setup.dir.path().display().to_string();
    let text = config(agents).toml(&format!(
        r#"[server.tls]
cert = "{d}/server.pem"
key = "{d}/server.key"
{tls}

[identity]
ca_cert = "file://{d}/ca.pem"
ca_key = "file://{d}/ca.key"
store = "{d}/identities.jsonl"
route = "/mcp"
scopes = ["mcp:read"]
trust_domain = "new.example"
"#
    ));
    let text = fill(text, setup.harness.addr, &upstream.url);
    let reloaded = portcullis::config::load_str(&text, "<reloaded>", std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("the reloaded config is valid: {e}\n{text}"));
    let assembled = portcullis::config::assemble(&reloaded, None, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("assembles: {e}"));
    setup
        .harness
        .gateway
        .swap(portcullis::gateway::Site::new(&reloaded, assembled));

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

    let url = format!("https://localhost:{}/feed", setup.harness.addr.port());
    let call = |who: &Agent| {
        let (cert, key) = (
            who.cert_file.display().to_string(),
            who.key_file.display().to_string(),
        );
        let url = url.clone();
        let setup = &setup;
        async move { setup.curl(&["--cert", &cert, "--key", &key, &url]).await }
    };
    let (status, text) = call(&agent).await;
    assert_eq!(
        status, 200,
        "the agent still works after the reload: {text}"
    );
    let (status, text) = call(&impostor).await;
    let seen = upstream.seen();
    let as_agent = seen.first().expect("the agent's call");
    assert_eq!(
        as_agent.header("x-portcullis-subject"),
        Some(subject.as_str())
    );
    let as_partner = seen.get(1);
    assert!(
        as_partner.is_none_or(|s| s.header("x-portcullis-subject") != Some(subject.as_str())),
        "after the trust-domain reload, a certificate of the partner CA reached the upstream \
         as the still-valid agent `{subject}` ({status}, provider {:?}): {text}",
        as_partner.and_then(|s| s.header("x-portcullis-provider")),
    );
}

/// The origin policy's loopback allowance is decided by `server.listen` alone
/// (`validate.rs`: `loopback: listen.ip().is_loopback()`), and the gateway cannot tell its
/// two listeners apart. With `tls_listen` — the README's way to serve agents' mTLS beside a
/// local plain listener — the TLS listener on a public address inherits the plain one's
/// loopback allowance: a browser page on any `http://localhost:*` origin (the README: "one
/// listening elsewhere accepts only the public origin") is let through on the public
/// listener. The same gateway with its TLS listener as `listen` refuses that origin (403);
/// with a loopback `listen` beside it, the request arriving over TLS from a remote peer is
/// proxied (and `public_url` was not even required, though the TLS listener is public).
/// Fixed: loopback origins (and a derived public URL) only when every listener is on loopback.
#[tokio::test]
async fn a_public_tls_listen_refuses_loopback_origins() {
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let generated = generate("Listener CA", &["mcp.example.com".to_owned()]).expect("CA");
    let d = dir.path();
    std::fs::write(d.join("server.pem"), &generated.server_cert).expect("write");
    std::fs::write(d.join("server.key"), &generated.server_key).expect("write");
    let with_server = |server: &str| {
        format!(
            r#"[server]
{server}
public_url = "https://mcp.example.com"

[server.tls]
cert = "{d}/server.pem"
key = "{d}/server.key"

[[routes]]
path = "/api"
upstream = "{upstream}/api"
chain = ["keys"]
mcp = false

[providers.keys]
type = "api_key"
keys = [{{ name = "reader", hash = "{hash}", scopes = ["mcp:read"] }}]
"#,
            d = d.display(),
            upstream = upstream.url,
            hash = portcullis::engine::api_key::hash_key("reader-key-0001"),
        )
    };
    let status_for = |server: &'static str| {
        let text = with_server(server);
        async move {
            let config = portcullis::config::load_str(&text, "<test>", std::path::Path::new("."))
                .unwrap_or_else(|e| panic!("valid: {e}\n{text}"));
            let assembled = portcullis::config::assemble(&config, None, &Default::default())
                .await
                .expect("assembles");
            let gateway = portcullis::gateway::Gateway::new(
                portcullis::gateway::Site::new(&config, assembled),
                Arc::new(portcullis::observability::Metrics::new()),
            );
            // A browser elsewhere on the internet, over TLS.
            let conn = portcullis::gateway::ConnInfo::new(
                Some("198.51.100.7:50123".parse().expect("addr")),
                None,
                true,
            );
            let request = http::Request::builder()
                .method("POST")
                .uri("/api/transfer")
                .header("host", "mcp.example.com")
                .header("origin", "http://localhost:5173")
                .header("authorization", "Bearer reader-key-0001")
                .body(portcullis::gateway::body::full("{}"))
                .expect("request");
            gateway.handle(request, &conn).await.status().as_u16()
        }
    };
    let only_tls = status_for(r#"listen = "0.0.0.0:8443""#).await;
    assert_eq!(
        only_tls, 403,
        "a public TLS listener refuses a loopback origin"
    );
    let beside_loopback =
        status_for("listen = \"127.0.0.1:8080\"\ntls_listen = \"0.0.0.0:8443\"").await;
    assert_eq!(
        beside_loopback,
        403,
        "the same public TLS listener, as `tls_listen` beside a loopback `listen`, let a \
         `http://localhost:5173` page through to the upstream ({} request(s) proxied)",
        upstream.hits()
    );
}
