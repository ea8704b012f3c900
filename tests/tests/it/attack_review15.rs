//! Review 15: attacks on the agent-identity CA (`[identity]`). Each test is a finding: it
//! fails against the code it was written for, for the reason its doc comment gives.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use portcullis::identity::ca::generate;
use portcullis_tests::upstream::RecordingUpstream;

use crate::gateway_harness::TestConfig;
use crate::identity_support::{
    Agent, IdentityGateway, REGISTRAR_KEY, json, mtls_connection, portcullis_identity,
    registrar_keys,
};

/// The gateway of this suite: `/mcp` (the registration route: agents by certificate, the
/// registrar by key) and `/feed`, a plain HTTP route that only agents reach, in front of
/// `upstream`; identities may get `mcp:read`.
struct Setup;

impl Setup {
    async fn start(upstream: &str, extra: &str) -> IdentityGateway {
        Self::start_with(upstream, "", "", extra, |c| c).await
    }

    /// [`Setup::start`] with `tls` lines added to `[server.tls]` and `agents` to the `mtls`
    /// provider.
    async fn start_with(
        upstream: &str,
        tls: &str,
        agents: &str,
        extra: &str,
        more: impl FnOnce(TestConfig) -> TestConfig,
    ) -> IdentityGateway {
        let config = TestConfig::new()
            .server(r#"public_url = "https://localhost""#)
            .route("/mcp", &["agents", "registrars"])
            .http_route("/feed", &["agents"])
            .provider("agents", "mtls")
            .with(agents)
            .provider("registrars", "api_key")
            .with(&registrar_keys());
        let identity = format!("scopes = [\"mcp:read\"]\n{extra}");
        IdentityGateway::start(more(config), tls, &identity, Some(upstream)).await
    }
}

/// A body that sends `tick\n` every 100 ms, forever: a feed, an SSE stream.
struct Ticks(tokio::time::Interval);

impl http_body::Body for Ticks {
    type Data = Bytes;
    type Error = portcullis_tests::upstream::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.0.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
                b"tick\n",
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// An upstream whose every answer is an endless [`Ticks`] stream.
async fn ticking_upstream() -> RecordingUpstream {
    RecordingUpstream::answering(|_| async {
        let mut response = http::Response::new(
            Ticks(tokio::time::interval(Duration::from_millis(100))).boxed_unsync(),
        );
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        response
    })
    .await
}

/// Revocation is promised to reach open connections within a second
/// (`identity/mod.rs`: "every certificate of the identity is refused at the next handshake
/// and on open connections within `REFRESH_EVERY`"; the CLI prints "the gateway refuses its
/// certificates within a second, on new and open connections"). The store is consulted only
/// when a request starts ([`Gateway::handle`]), so a response that is still streaming when the
/// identity is revoked — an MCP `GET` event stream, a long tool answer, a feed — keeps flowing
/// to the revoked agent with no bound at all. Here an agent opens a streamed `GET /feed`, is
/// revoked, and three seconds later (three times the stated bound) is still receiving data,
/// while a new request on the very same connection is already refused with 401.
/// Fixed: an answer to an identity-CA caller is judged again every half second while it
/// streams (`identity::guard`), and ends once the certificate is no longer good.
#[tokio::test]
async fn a_response_streaming_when_its_identity_is_revoked_is_cut_off() {
    let upstream = ticking_upstream().await;
    let setup = Setup::start(&upstream.url, "").await;
    let agent = Agent::new(setup.dir.path(), "agent");
    let (status, body) = setup
        .register(REGISTRAR_KEY, &agent.key.public_key_pem(), "feeder")
        .await;
    assert_eq!(status, 201, "{body}");
    let answer = json(&body);
    agent.keep(&answer);
    let id = answer["id"].as_str().expect("id").to_owned();

    let ca = setup.path("ca.pem");
    let mut streaming =
        mtls_connection(setup.harness.addr, &ca, &agent.cert_file, &agent.key_file).await;
    let mut fresh =
        mtls_connection(setup.harness.addr, &ca, &agent.cert_file, &agent.key_file).await;
    let request = |path: &str| {
        http::Request::builder()
            .uri(path)
            .header("host", "localhost")
            .body(http_body_util::Empty::new())
            .expect("request")
    };
    let response = streaming
        .send_request(request("/feed"))
        .await
        .expect("answered");
    assert_eq!(response.status(), 200, "the live agent reads the feed");
    let mut feed = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), feed.frame())
        .await
        .expect("the feed starts");
    assert!(first.is_some(), "the feed starts");

    portcullis_identity(&format!(
        "revoke {id} --reason compromised --store {}",
        setup.store().display()
    ))
    .expect("revoke");
    let revoked_at = tokio::time::Instant::now();

    // Keep draining while the bound passes, as a client would.
    let bound = revoked_at + Duration::from_secs(3);
    let mut ended = false;
    while tokio::time::Instant::now() < bound {
        match tokio::time::timeout_at(bound, feed.frame()).await {
            Err(_) => break,
            Ok(None | Some(Err(_))) => {
                ended = true;
                break;
            }
            Ok(Some(Ok(_))) => {}
        }
    }
    // The same certificate on a new request is refused: the revocation has been read.
    let refused = fresh
        .send_request(request("/feed"))
        .await
        .expect("answered");
    assert_eq!(
        refused.status(),
        401,
        "a new request with the revoked certificate is refused"
    );
    let still_flowing = if ended {
        false
    } else {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), feed.frame()).await,
            Ok(Some(Ok(_)))
        )
    };
    assert!(
        !still_flowing,
        "three seconds after `portcullis identity revoke {id}` (the promise is one), the \
         revoked agent's open stream still delivers data from the upstream"
    );
}

/// DER: `tag`, its length, `content`.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).expect("short"));
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | u8::try_from(bytes.len()).expect("length of length"));
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A PEM `PUBLIC KEY` (SubjectPublicKeyInfo) of `algorithm` (its DER) and `key` (the bits).
fn spki_pem(algorithm: &[u8], key: &[u8]) -> String {
    let mut bits = vec![0];
    bits.extend_from_slice(key);
    let mut content = algorithm.to_vec();
    content.extend(der(0x03, &bits));
    let spki = der(0x30, &content);
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

/// The key checks (`identity/public_key.rs`) promise "only the kinds worth certifying" and
/// answer "the point is not an uncompressed point of its curve" — but they only look at the
/// length and the `04` prefix, never whether the point is on the curve. A real P-256 key with
/// one byte of `y` changed is no P-256 public key at all (nobody holds its private key; it is
/// what invalid-curve attacks feed a verifier), yet the CA signs a certificate for it and the
/// store records a live identity.
/// Fixed: the point is validated (a key agreement with a throw-away key) before signing.
#[tokio::test]
async fn a_p256_point_that_is_not_on_the_curve_is_refused() {
    let upstream = RecordingUpstream::start().await;
    let setup = Setup::start(&upstream.url, "").await;
    let real = rcgen::KeyPair::generate().expect("P-256 key");
    let mut point = real.public_key_raw().to_vec();
    assert_eq!(point.len(), 65, "an uncompressed P-256 point");
    point[64] ^= 0x01;
    // id-ecPublicKey, prime256v1.
    let algorithm = der(
        0x30,
        &[
            der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
            der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
        ]
        .concat(),
    );
    let pem = spki_pem(&algorithm, &point);
    let (status, body) = setup.register(REGISTRAR_KEY, &pem, "off-curve").await;
    assert_eq!(
        status, 400,
        "a P-256 \"key\" off the curve must be refused, not certified: {body}"
    );
}

/// RSA keys are vetted for size and for an odd exponent, but not the modulus: an even
/// modulus (the CA/Browser Forum's baseline requirements, 6.1.6: "the modulus SHALL be odd,
/// not the power of a prime, and have no factors smaller than 752") is a key anyone can
/// factor at a glance. `n = 2^2048 - 2` (2048 bits, even) with `e = 65537` is certified as
/// an `RSA-2048` agent key.
/// Fixed: a modulus that is even or has a prime factor below 752 is refused (BR 6.1.6).
#[tokio::test]
async fn an_rsa_key_with_an_even_modulus_is_refused() {
    let upstream = RecordingUpstream::start().await;
    let setup = Setup::start(&upstream.url, "").await;
    let mut modulus = vec![0x00];
    modulus.extend(std::iter::repeat_n(0xff, 255));
    modulus.push(0xfe);
    let rsa_public_key = der(
        0x30,
        &[der(0x02, &modulus), der(0x02, &[0x01, 0x00, 0x01])].concat(),
    );
    // rsaEncryption, NULL.
    let algorithm = der(
        0x30,
        &[
            der(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            vec![0x05, 0x00],
        ]
        .concat(),
    );
    let pem = spki_pem(&algorithm, &rsa_public_key);
    let parsed = portcullis::identity::public_key::parse(&pem);
    assert!(
        parsed.is_err(),
        "an RSA key with an even modulus passes the key checks as {:?}",
        parsed.map(|k| k.kind)
    );
    let (status, body) = setup.register(REGISTRAR_KEY, &pem, "even-modulus").await;
    assert_eq!(status, 400, "an even RSA modulus must be refused: {body}");
}

/// The identity CA owns the subjects it issues (`spiffe://{trust_domain}/agent/{id}`), but
/// nothing reserves them: a certificate of another CA the listener trusts
/// (`server.tls.client_ca`, e.g. a partner's) that carries an agent's SPIFFE ID as its CN (or
/// URI SAN, with `identity = "san"`) is named by the same `mtls` provider exactly as that
/// agent. The upstream gets the same `x-portcullis-subject` and `x-portcullis-provider` for
/// the partner as for the agent (and MCP sessions, bound to provider and subject, cannot
/// tell them apart); only the issuing CA, which the gateway ignores for foreign
/// certificates, differs. A certificate from a CA other than the identity CA must never
/// authenticate as one of the identity CA's subjects.
/// Fixed: with `[identity]` on, an `mtls` provider refuses certificates of other CAs whose
/// subject starts with the identity CA's (`spiffe://<trust domain>/agent/`).
#[tokio::test]
async fn another_client_cas_certificate_cannot_authenticate_as_an_agent() {
    let upstream = RecordingUpstream::start().await;
    let partner_dir = tempfile::tempdir().expect("temp dir");
    let partner = generate("Partner CA", &["partner.example".to_owned()]).expect("CA");
    let partner_pem = partner_dir.path().join("partner-ca.pem");
    std::fs::write(&partner_pem, &partner.ca_cert).expect("write");
    let setup = Setup::start_with(
        &upstream.url,
        &format!("client_ca = {:?}", partner_pem.display().to_string()),
        r#"scopes = { "*" = ["mcp:read"] }"#,
        "",
        |c| c,
    )
    .await;

    let agent = Agent::new(setup.dir.path(), "agent");
    let (status, body) = setup
        .register(REGISTRAR_KEY, &agent.key.public_key_pem(), "victim")
        .await;
    assert_eq!(status, 201, "{body}");
    let answer = json(&body);
    agent.keep(&answer);
    let subject = answer["subject"].as_str().expect("subject").to_owned();

    // The partner mints itself a certificate named as the agent.
    let partner_ca =
        portcullis::identity::Ca::from_pem(&partner.ca_cert, &partner.ca_key).expect("CA");
    let impostor = Agent::new(setup.dir.path(), "impostor");
    let key = portcullis::identity::public_key::parse(&impostor.key.public_key_pem()).expect("key");
    let leaf = partner_ca
        .issue(&key, &subject, &subject, portcullis::identity::now(), 3600)
        .expect("issue");
    std::fs::write(&impostor.cert_file, &leaf.pem).expect("write");

    let url = format!("https://localhost:{}/feed", setup.harness.addr.port());
    let setup = &setup;
    let call = |who: &Agent| {
        let (cert, key) = (
            who.cert_file.display().to_string(),
            who.key_file.display().to_string(),
        );
        let url = url.clone();
        async move { setup.curl(&["--cert", &cert, "--key", &key, &url]).await }
    };
    let (status, text) = call(&agent).await;
    assert_eq!(status, 200, "the agent itself: {text}");
    let (status, text) = call(&impostor).await;
    let seen = upstream.seen();
    let as_agent = seen.first().expect("the agent's call");
    let as_partner = seen.get(1);
    assert_eq!(
        as_agent.header("x-portcullis-subject"),
        Some(subject.as_str())
    );
    assert!(
        as_partner.is_none_or(|s| s.header("x-portcullis-subject") != Some(subject.as_str())),
        "a certificate of the partner CA reached the upstream as the agent `{subject}` \
         ({status}, provider {:?}): {text}",
        as_partner.and_then(|s| s.header("x-portcullis-provider"))
    );
}

/// Registration runs only the `[identity] route`'s chain (`endpoints.rs`:
/// `route.policy.chain.authenticate`), never the route's authorizers. Here `/mcp` takes the
/// registrar's key only from the office network (an `ip-allowlist` authorizer,
/// 203.0.113.0/24): from anywhere else the key is refused on `/mcp` with 403. Yet the same
/// key, from the same refused address, gets a 30-day certificate at `/identity/register`,
/// which then reaches `/feed` (an agents' route) from that address. The route's policy
/// refuses this caller, so it must not be able to mint an identity through the route.
/// Fixed: registration is judged by the route's policy (chain, registration scope,
/// authorizers), only its path rules left out.
#[tokio::test]
async fn registration_runs_the_routes_authorizers() {
    let upstream = RecordingUpstream::start().await;
    let setup = Setup::start_with(&upstream.url, "", "", "", |c| {
        c.on_route("/mcp", r#"authorizers = ["office-network"]"#)
            .wasm("office-network", portcullis_tests::guests::IP_ALLOWLIST)
            .with(r#"config = { networks = [{ cidr = "203.0.113.0/24" }] }"#)
    })
    .await;
    let mcp = format!("https://localhost:{}/mcp", setup.harness.addr.port());
    let (status, text) = setup
        .curl(&[
            "-H",
            &format!("Authorization: Bearer {REGISTRAR_KEY}"),
            "-H",
            "Content-Type: application/json",
            "-H",
            "Accept: application/json, text/event-stream",
            "--data",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            &mcp,
        ])
        .await;
    assert_eq!(
        status, 403,
        "the route refuses the registrar's key outside the office: {text}"
    );

    let agent = Agent::new(setup.dir.path(), "agent");
    let (status, body) = setup
        .register(REGISTRAR_KEY, &agent.key.public_key_pem(), "outsider")
        .await;
    let feed = if status == 201 {
        agent.keep(&json(&body));
        let url = format!("https://localhost:{}/feed", setup.harness.addr.port());
        let cert = agent.cert_file.display().to_string();
        let key = agent.key_file.display().to_string();
        setup.curl(&["--cert", &cert, "--key", &key, &url]).await.0
    } else {
        0
    };
    assert_ne!(
        status, 201,
        "a caller the `/mcp` route refuses (its authorizer) got an identity through it, whose \
         certificate then reaches `/feed` from the refused address (status {feed}): {body}"
    );
}
