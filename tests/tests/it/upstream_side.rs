//! The upstream side of a route (issue 16): HTTPS upstreams over rustls with their own CA,
//! a client certificate and HTTP/2; and the credential the gateway presents there — a
//! header from a secret, one client-credentials token per route, and each caller's token
//! exchanged (RFC 8693) — against a real token endpoint that counts what it issues.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use portcullis::identity::ca::generate;
use portcullis_tests::differential::Upstream;
use portcullis_tests::oauth::{ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE, TestKey, now};
use portcullis_tests::upstream::{Seen, answer, json};
use rcgen::{CertificateParams, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::json;

use crate::gateway_harness::{
    ADMIN_KEY, READER_KEY, RecordingUpstream, Reply, standard, start_with_upstream,
};

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// A test CA with a server certificate for 127.0.0.1, written to `dir`.
struct TestPki {
    ca_file: std::path::PathBuf,
    server: Arc<rustls::ServerConfig>,
}

fn pki(dir: &Path, name: &str, client_ca: Option<&str>) -> TestPki {
    let generated = generate(name, &["127.0.0.1".to_owned()]).expect("CA");
    let ca_file = dir.join(format!("{name}.pem"));
    std::fs::write(&ca_file, &generated.ca_cert).expect("write CA");
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(generated.server_cert.as_bytes())
            .collect::<Result<_, _>>()
            .expect("server cert");
    let key = PrivateKeyDer::from_pem_slice(generated.server_key.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(cert.expect("client CA")).expect("add");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_single_cert(chain, key).expect("server config");
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TestPki {
        ca_file,
        server: Arc::new(server),
    }
}

fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

async fn tls_upstream(server: Arc<rustls::ServerConfig>) -> RecordingUpstream {
    RecordingUpstream::answering_tls(server, |seen: Seen| async move {
        json(format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[],"authorization":{:?}}}}}"#,
            seen.header("authorization").unwrap_or("")
        ))
    })
    .await
}

#[tokio::test]
async fn an_https_upstream_is_reached_over_tls_with_its_ca_bundle_over_http2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path(), "upstream-ca", None);
    let upstream = tls_upstream(pki.server.clone()).await;
    let config = standard().on_route(
        "/mcp",
        &format!(
            "upstream_tls = {{ ca_bundle = {} }}",
            toml_path(&pki.ca_file)
        ),
    );
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    for _ in 0..3 {
        let reply = h.mcp_post(Some(READER_KEY), None, LIST).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(upstream.connections(), 1, "one TLS connection, reused");
    for request in &seen {
        assert_eq!(request.version, http::Version::HTTP_2, "ALPN picked h2");
        assert_eq!(request.target, "/mcp");
        assert_eq!(request.body, LIST.as_bytes());
        // The caller's key never reaches the upstream.
        assert_eq!(request.header("authorization"), None);
        assert_eq!(request.header("x-portcullis-subject"), Some("reader"));
    }
    assert_eq!(
        seen[0].header("host"),
        Some(upstream.url.trim_start_matches("https://")),
        "Host is the upstream URL's authority"
    );
}

#[tokio::test]
async fn http2_can_be_turned_off_for_an_upstream_that_offers_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path(), "upstream-ca", None);
    let upstream = tls_upstream(pki.server.clone()).await;
    let config = standard().on_route(
        "/mcp",
        &format!(
            "upstream_tls = {{ ca_bundle = {}, http2 = false }}",
            toml_path(&pki.ca_file)
        ),
    );
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    assert_eq!(h.mcp_post(Some(READER_KEY), None, LIST).await.status, 200);
    assert_eq!(upstream.seen()[0].version, http::Version::HTTP_11);
}

#[tokio::test]
async fn the_python_mcp_sdk_server_is_reached_over_tls_and_runs_the_call_the_gateway_judged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let generated = generate("python-upstream-ca", &["127.0.0.1".to_owned()]).expect("CA");
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("server.pem"),
        dir.path().join("server.key"),
    );
    std::fs::write(&ca, &generated.ca_cert).expect("write");
    std::fs::write(&cert, &generated.server_cert).expect("write");
    std::fs::write(&key, &generated.server_key).expect("write");
    let Some(upstream) = Upstream::start_python_tls(&cert, &key).await else {
        return;
    };
    assert!(upstream.url.starts_with("https://"), "{}", upstream.url);
    let config = standard().on_route(
        "/mcp",
        &format!(
            "upstream_tls = {{ ca_bundle = {}, system_roots = false }}",
            toml_path(&ca)
        ),
    );
    let h = start_with_upstream(config, &upstream.url).await;
    let call = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"text":"over tls"}}}"#;
    let reply = h.mcp_post(Some(READER_KEY), None, call).await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, upstream.stderr());
    assert!(reply.body.contains("over tls"), "{}", reply.body);
    let ran: Vec<String> = upstream
        .executed()
        .iter()
        .filter(|e| e.kind == "tool")
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(ran, ["echo"]);
    // An admin tool the reader may not call is refused before the upstream.
    let admin = r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"admin_reset","arguments":{}}}"#;
    assert_eq!(h.mcp_post(Some(READER_KEY), None, admin).await.status, 403);
    assert_eq!(
        upstream
            .executed()
            .iter()
            .filter(|e| e.kind == "tool")
            .count(),
        1
    );
}

#[tokio::test]
async fn an_upstream_certificate_from_another_ca_is_a_502_and_the_request_never_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trusted = pki(dir.path(), "trusted-ca", None);
    let other = pki(dir.path(), "other-ca", None);
    let upstream = tls_upstream(other.server.clone()).await;
    let config = standard().on_route(
        "/mcp",
        &format!(
            "upstream_tls = {{ ca_bundle = {}, system_roots = false }}",
            toml_path(&trusted.ca_file)
        ),
    );
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    let reply = h.mcp_post(Some(READER_KEY), None, LIST).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(reply.body.contains("TLS"), "{}", reply.body);
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn an_https_upstream_that_speaks_plain_http_is_a_502_never_a_plaintext_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trusted = pki(dir.path(), "trusted-ca", None);
    let plain = RecordingUpstream::start().await;
    let https_url = plain.url.replace("http://", "https://");
    let config = standard().on_route(
        "/mcp",
        &format!(
            "upstream_tls = {{ ca_bundle = {} }}",
            toml_path(&trusted.ca_file)
        ),
    );
    let h = start_with_upstream(config, &format!("{https_url}/mcp")).await;
    let reply = h.mcp_post(Some(READER_KEY), None, LIST).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(plain.hits(), 0, "nothing was sent in plain text");
}

#[tokio::test]
async fn the_gateway_presents_its_client_certificate_to_an_upstream_that_requires_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The gateway's client certificate, from a CA the upstream trusts.
    let client_ca = generate("gateway-clients", &[]).expect("client CA");
    let ca_key = KeyPair::from_pem(&client_ca.ca_key).expect("CA key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&client_ca.ca_cert, ca_key).expect("issuer");
    let client_key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "portcullis-gateway");
    let client_cert = params.signed_by(&client_key, &issuer).expect("sign");
    std::fs::write(dir.path().join("client.pem"), client_cert.pem()).expect("write");
    std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).expect("write");
    let pki = pki(dir.path(), "upstream-ca", Some(&client_ca.ca_cert));
    let upstream = tls_upstream(pki.server.clone()).await;

    // Without the certificate, the upstream refuses the handshake: 502.
    let without = standard().on_route(
        "/mcp",
        &format!(
            "upstream_tls = {{ ca_bundle = {} }}",
            toml_path(&pki.ca_file)
        ),
    );
    let h = start_with_upstream(without, &format!("{}/mcp", upstream.url)).await;
    let reply = h.mcp_post(Some(READER_KEY), None, LIST).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(upstream.hits(), 0);

    let with = standard().on_route(
        "/mcp",
        &format!(
            "upstream_tls = {{ ca_bundle = {}, client_cert = {}, client_key = \"file://{}\" }}",
            toml_path(&pki.ca_file),
            toml_path(&dir.path().join("client.pem")),
            dir.path().join("client.key").display()
        ),
    );
    let h = start_with_upstream(with, &format!("{}/mcp", upstream.url)).await;
    let reply = h.mcp_post(Some(READER_KEY), None, LIST).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = upstream.seen();
    assert_eq!(
        seen[0].client_cert.as_deref(),
        Some(client_cert.der().as_ref()),
        "the upstream saw the gateway's certificate"
    );
}

#[tokio::test]
async fn a_header_credential_from_a_secret_replaces_whatever_the_caller_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("upstream-key");
    std::fs::write(&secret, "upstream-secret-value\n").expect("write");
    let upstream = RecordingUpstream::start().await;
    let config = standard().on_route(
        "/mcp",
        &format!(
            "upstream_auth = {{ type = \"header\", header = \"x-upstream-key\", value = \
             \"Key {{secret}}\", secret = \"file://{}\" }}",
            secret.display()
        ),
    );
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    let reply = h
        .mcp_post_with(
            Some(READER_KEY),
            &[("x-upstream-key", "Key forged-by-the-caller")],
            LIST,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = upstream.seen();
    let values: Vec<&str> = seen[0]
        .headers
        .get_all("x-upstream-key")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(values, ["Key upstream-secret-value"]);
    assert_eq!(seen[0].header("authorization"), None);
}

/// A token endpoint: counts what it issues (`tok-1`, `tok-2`, …, each `expires_in`
/// seconds), checks the gateway's client credentials, and records every request.
struct TokenServer {
    server: RecordingUpstream,
    issued: Arc<AtomicUsize>,
}

const CLIENT_ID: &str = "gateway-client";
const CLIENT_SECRET: &str = "gateway-client-secret-0001";

impl TokenServer {
    async fn start(expires_in: u64) -> Self {
        let issued = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&issued);
        let server = RecordingUpstream::answering(move |seen: Seen| {
            let count = Arc::clone(&count);
            async move {
                use base64::Engine as _;
                let basic = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
                );
                if seen.header("authorization") != Some(basic.as_str()) {
                    let mut reply = json(r#"{"error":"invalid_client"}"#);
                    *reply.status_mut() = http::StatusCode::UNAUTHORIZED;
                    return reply;
                }
                // Slow enough that concurrent callers overlap the fetch.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                json(
                    json!({
                        "access_token": format!("tok-{n}"),
                        "token_type": "bearer",
                        "expires_in": expires_in,
                    })
                    .to_string(),
                )
            }
        })
        .await;
        Self { server, issued }
    }

    fn url(&self) -> String {
        format!("{}/oauth/token", self.server.url)
    }

    fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    fn forms(&self) -> Vec<Vec<(String, String)>> {
        self.server
            .seen()
            .iter()
            .map(|s| {
                url::form_urlencoded::parse(&s.body)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .collect()
    }
}

fn secret_file(dir: &Path) -> String {
    let path = dir.join("client-secret");
    std::fs::write(&path, CLIENT_SECRET).expect("write");
    format!("file://{}", path.display())
}

fn client_credentials(tokens: &TokenServer, secret: &str) -> String {
    format!(
        "upstream_auth = {{ type = \"client_credentials\", token_url = {:?}, client_id = \
         {CLIENT_ID:?}, client_secret = {secret:?}, scope = \"mcp:tools\", resource = \
         \"https://upstream.example.com/mcp\" }}",
        tokens.url()
    )
}

#[tokio::test]
async fn concurrent_requests_share_one_client_credentials_fetch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = TokenServer::start(3600).await;
    let upstream = RecordingUpstream::start().await;
    let config = standard().on_route(
        "/mcp",
        &client_credentials(&tokens, &secret_file(dir.path())),
    );
    let h = Arc::new(start_with_upstream(config, &format!("{}/mcp", upstream.url)).await);
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let h = Arc::clone(&h);
            tokio::spawn(async move { h.mcp_post(Some(READER_KEY), None, LIST).await.status })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.expect("join"), 200);
    }
    assert_eq!(tokens.issued(), 1, "one fetch for 200 concurrent requests");
    assert!(
        upstream
            .seen()
            .iter()
            .all(|s| s.header("authorization") == Some("Bearer tok-1"))
    );
    let form = &tokens.forms()[0];
    for pair in [
        ("grant_type", "client_credentials"),
        ("scope", "mcp:tools"),
        ("resource", "https://upstream.example.com/mcp"),
    ] {
        assert!(
            form.contains(&(pair.0.to_owned(), pair.1.to_owned())),
            "{pair:?} in {form:?}"
        );
    }
}

#[tokio::test]
async fn a_token_is_fetched_again_before_it_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Two seconds: replaced one second before expiry (half its life, as it is short).
    let tokens = TokenServer::start(2).await;
    let upstream = RecordingUpstream::start().await;
    let config = standard().on_route(
        "/mcp",
        &client_credentials(&tokens, &secret_file(dir.path())),
    );
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    assert_eq!(h.mcp_post(Some(READER_KEY), None, LIST).await.status, 200);
    portcullis_tests::eventually::eventually("a second token", || async {
        let status = h.mcp_post(Some(READER_KEY), None, LIST).await.status;
        assert_eq!(status, 200);
        let last = upstream
            .seen()
            .last()
            .and_then(|s| s.header("authorization").map(str::to_owned));
        (last.as_deref() == Some("Bearer tok-2"))
            .then_some(())
            .ok_or(format!("{last:?}"))
    })
    .await;
    assert_eq!(tokens.issued(), 2);
}

#[tokio::test]
async fn an_upstream_401_replaces_the_token_and_sends_the_request_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = TokenServer::start(3600).await;
    // The upstream has rotated its keys: tok-1 is no longer good, tok-2 is.
    let upstream = RecordingUpstream::answering(|seen: Seen| async move {
        if seen.header("authorization") == Some("Bearer tok-1") {
            let mut reply = answer(401, "token revoked");
            reply.headers_mut().insert(
                "www-authenticate",
                http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            reply
        } else {
            json(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#)
        }
    })
    .await;
    let config = standard().on_route(
        "/mcp",
        &client_credentials(&tokens, &secret_file(dir.path())),
    );
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    let reply = h.mcp_post(Some(READER_KEY), None, LIST).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(tokens.issued(), 2);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].body,
        LIST.as_bytes(),
        "the body was sent again whole"
    );
    assert_eq!(seen[1].header("authorization"), Some("Bearer tok-2"));

    // An upstream that refuses every token: the caller gets 502, not the upstream's
    // challenge (which is about the gateway's credential), after one retry.
    let refusing = RecordingUpstream::answering(|_| async { answer(401, "no") }).await;
    let tokens = TokenServer::start(3600).await;
    let config = standard().on_route(
        "/mcp",
        &client_credentials(&tokens, &secret_file(dir.path())),
    );
    let h = start_with_upstream(config, &format!("{}/mcp", refusing.url)).await;
    let reply = h.mcp_post(Some(READER_KEY), None, LIST).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(reply.header("www-authenticate").is_none());
    assert_eq!(refusing.hits(), 2);
    assert_eq!(tokens.issued(), 2);
}

#[tokio::test]
async fn no_token_means_503_and_the_request_is_never_sent_without_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = TokenServer::start(3600).await;
    let upstream = RecordingUpstream::start().await;
    // The wrong secret: the token endpoint answers invalid_client.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-secret").expect("write");
    let config = standard().on_route(
        "/mcp",
        &client_credentials(&tokens, &format!("file://{}", wrong.display())),
    );
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    let reply = h.mcp_post(Some(READER_KEY), None, LIST).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        reply.body.contains("credential for the upstream"),
        "{}",
        reply.body
    );
    assert_eq!(upstream.hits(), 0);

    // A token endpoint that is down: the same.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}/token", listener.local_addr().expect("addr"));
    drop(listener);
    let config = standard().on_route(
        "/mcp",
        &format!(
            "upstream_auth = {{ type = \"client_credentials\", token_url = {dead:?}, \
             client_id = \"x\", client_secret = {:?} }}",
            secret_file(dir.path())
        ),
    );
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    let reply = h.mcp_post(Some(READER_KEY), None, LIST).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(upstream.hits(), 0);
}

/// A route whose callers bring an IdP's token, exchanged per caller for the upstream.
fn exchange_config(idp: &TestKey, tokens: &TokenServer, secret: &str, cache: usize) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
public_url = "{{gateway}}"

[providers.corp]
type = "jwt"
issuer = "https://idp.example.com"
audience = "{{gateway}}/mcp"
jwks = '{jwks}'

[[routes]]
path = "/mcp"
upstream = "{{upstream}}"
chain = ["corp"]
upstream_auth = {{ type = "token_exchange", token_url = {url:?}, client_id = {CLIENT_ID:?}, client_secret = {secret:?}, audience = "https://upstream.example.com", cache_size = {cache} }}
"#,
        jwks = json!({ "keys": [idp.jwk] }),
        url = tokens.url(),
    )
}

fn idp_token(idp: &TestKey, gateway: &str, sub: &str) -> String {
    idp.sign(
        "idp-1",
        &json!({
            "iss": "https://idp.example.com", "sub": sub, "aud": format!("{gateway}/mcp"),
            "iat": now(), "exp": now() + 600, "scope": "mcp:read",
        }),
    )
}

async fn call_with_token(h: &crate::gateway_harness::Harness, token: &str) -> Reply {
    h.mcp_post_with(None, &[("authorization", &format!("Bearer {token}"))], LIST)
        .await
}

#[tokio::test]
async fn each_callers_token_is_exchanged_once_and_cached_per_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idp = TestKey::ed25519("idp-1");
    let tokens = TokenServer::start(3600).await;
    let upstream = RecordingUpstream::start().await;
    let config = exchange_config(&idp, &tokens, &secret_file(dir.path()), 100);
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    let alice = idp_token(&idp, &h.base, "alice");
    let bob = idp_token(&idp, &h.base, "bob");
    for token in [&alice, &alice, &bob, &alice, &bob] {
        let reply = call_with_token(&h, token).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(tokens.issued(), 2, "one exchange per caller");
    let seen: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| s.header("authorization").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        seen,
        [
            "Bearer tok-1",
            "Bearer tok-1",
            "Bearer tok-2",
            "Bearer tok-1",
            "Bearer tok-2"
        ]
    );
    let forms = tokens.forms();
    let field = |form: &Vec<(String, String)>, key: &str| {
        form.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field(&forms[0], "grant_type"), TOKEN_EXCHANGE);
    assert_eq!(field(&forms[0], "subject_token"), alice);
    assert_eq!(field(&forms[0], "subject_token_type"), ACCESS_TOKEN_TYPE);
    assert_eq!(field(&forms[0], "audience"), "https://upstream.example.com");
    assert_eq!(field(&forms[1], "subject_token"), bob);
}

#[tokio::test]
async fn the_exchange_cache_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idp = TestKey::ed25519("idp-1");
    let tokens = TokenServer::start(3600).await;
    let upstream = RecordingUpstream::start().await;
    let config = exchange_config(&idp, &tokens, &secret_file(dir.path()), 10);
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    let callers: Vec<String> = (0..25)
        .map(|i| idp_token(&idp, &h.base, &format!("user-{i}")))
        .collect();
    for token in &callers {
        assert_eq!(call_with_token(&h, token).await.status, 200);
    }
    assert_eq!(tokens.issued(), 25);
    // The first caller was evicted long ago: exchanged again. The last is still cached.
    assert_eq!(call_with_token(&h, &callers[24]).await.status, 200);
    assert_eq!(tokens.issued(), 25);
    assert_eq!(call_with_token(&h, &callers[0]).await.status, 200);
    assert_eq!(tokens.issued(), 26);
}

#[tokio::test]
async fn a_token_exchange_route_refuses_at_load_a_chain_that_admits_callers_without_a_token() {
    let config = standard().on_route(
        "/mcp",
        "upstream_auth = { type = \"token_exchange\", token_url = \"https://idp.example/t\", \
         client_id = \"a\", client_secret = \"env://UNUSED\" }",
    );
    let text = portcullis_tests::config::fill(
        config,
        "127.0.0.1:1".parse().expect("addr"),
        "http://127.0.0.1:2/mcp",
    );
    let err = portcullis::config::load_str(&text, "t.toml", Path::new("."))
        .expect_err("an api_key chain has no token to exchange");
    let text = err.to_string();
    assert!(
        text.contains("routes[0].upstream_auth") && text.contains("`keys`"),
        "{text}"
    );
}

#[tokio::test]
async fn upstream_auth_and_tls_mistakes_are_config_errors_naming_the_key() {
    let cases: [(&str, &str, &str); 5] = [
        (
            "http://127.0.0.1:2/mcp",
            "upstream_tls = { ca_bundle = \"ca.pem\" }",
            "routes[0].upstream_tls",
        ),
        (
            "https://127.0.0.1:2/mcp",
            "upstream_tls = { client_cert = \"c.pem\" }",
            "routes[0].upstream_tls.client_key",
        ),
        (
            "http://127.0.0.1:2/mcp",
            "upstream_auth = { type = \"header\", header = \"authorization\", secret = \
             \"literal-secret\" }",
            "routes[0].upstream_auth.secret",
        ),
        (
            "http://127.0.0.1:2/mcp",
            "upstream_auth = { type = \"client_credentials\", token_url = \
             \"http://idp.example.com/t\", client_id = \"a\", client_secret = \"env://S\" }",
            "routes[0].upstream_auth.token_url",
        ),
        (
            "http://127.0.0.1:2/mcp",
            "upstream_auth = { type = \"bearer\", secret = \"env://S\" }",
            "routes[0]",
        ),
    ];
    for (upstream, line, key) in cases {
        let text = portcullis_tests::config::fill(
            standard().on_route("/mcp", line),
            "127.0.0.1:1".parse().expect("addr"),
            upstream,
        );
        let err = portcullis::config::load_str(&text, "t.toml", Path::new("/nonexistent"))
            .expect_err(line);
        assert!(err.to_string().contains(key), "{line}: {err}");
    }
    // A client key that cannot be read fails the load (assemble), naming the key.
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path(), "ca", None);
    let text = portcullis_tests::config::fill(
        standard().on_route(
            "/mcp",
            &format!(
                "upstream_tls = {{ ca_bundle = {}, client_cert = {}, client_key = \
                 \"file:///nonexistent/key.pem\" }}",
                toml_path(&pki.ca_file),
                toml_path(&pki.ca_file)
            ),
        ),
        "127.0.0.1:1".parse().expect("addr"),
        "https://127.0.0.1:2/mcp",
    );
    let config = portcullis::config::load_str(&text, "t.toml", Path::new(".")).expect("valid");
    let err = portcullis::config::assemble(&config, None, &Default::default())
        .await
        .expect_err("unreadable key");
    assert!(
        err.to_string().contains("routes[0].upstream_tls")
            && err.to_string().contains("client_key"),
        "{err}"
    );
}

#[test]
fn no_secret_or_token_reaches_the_logs() {
    portcullis_tests::run_alone("upstream_side::logs_in_this_process");
}

#[tokio::test]
#[ignore = "captures this thread's logs, which other tests' threads disturb: \
            no_secret_or_token_reaches_the_logs runs it alone"]
async fn logs_in_this_process() {
    let logs = crate::wasm_sandbox::capture_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = TokenServer::start(3600).await;
    // tok-1 is refused (logged: a new token is fetched), tok-2 works.
    let upstream = RecordingUpstream::answering(|seen: Seen| async move {
        if seen.header("authorization") == Some("Bearer tok-1") {
            answer(401, "no")
        } else {
            answer(200, "ok")
        }
    })
    .await;
    let config = standard()
        .on_route(
            "/mcp",
            &client_credentials(&tokens, &secret_file(dir.path())),
        )
        .http_route("/plain", &["keys"])
        .on_route(
            "/plain",
            &format!(
                "upstream_auth = {{ type = \"header\", header = \"x-api-key\", secret = \
                 \"file://{}\" }}",
                dir.path().join("client-secret").display()
            ),
        );
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    assert_eq!(h.mcp_post(Some(READER_KEY), None, LIST).await.status, 200);
    let plain = h
        .request(
            "GET",
            "/plain/x",
            &[("authorization", &format!("Bearer {READER_KEY}"))],
            None,
        )
        .await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    // And a token endpoint that refuses the gateway: logged as a failure.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "wrong-secret-value-7").expect("write");
    let refusing = TokenServer::start(3600).await;
    let config = standard().on_route(
        "/mcp",
        &client_credentials(&refusing, &format!("file://{}", wrong.display())),
    );
    let h2 = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    assert_eq!(h2.mcp_post(Some(READER_KEY), None, LIST).await.status, 503);

    let (text, json) = logs.assert_one_line_per_event();
    assert!(
        text.contains("could not fetch the upstream's token") && text.contains("invalid_client"),
        "the failure is logged with its OAuth error:\n{text}"
    );
    assert!(text.contains("refused the gateway's token"), "{text}");
    for output in [&text, &json] {
        for secret in [
            CLIENT_SECRET,
            "wrong-secret-value-7",
            "tok-1",
            "tok-2",
            READER_KEY,
        ] {
            assert!(
                !output.contains(secret),
                "`{secret}` is in the logs:\n{output}"
            );
        }
    }
}

#[tokio::test]
async fn an_identity_from_any_provider_is_exchanged_as_a_statement_signed_by_the_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signing = TestKey::ed25519("gw-1");
    let key_file = dir.path().join("gw-1.pem");
    std::fs::write(&key_file, signing.pem()).expect("write key");
    let tokens = TokenServer::start(3600).await;
    let upstream = RecordingUpstream::start().await;
    let config = standard()
        .on_route(
            "/mcp",
            &format!(
                "upstream_auth = {{ type = \"token_exchange\", token_url = {:?}, client_id = \
                 {CLIENT_ID:?}, client_secret = {:?}, subject = \"identity\", \
                 subject_audience = \"https://partner-as.example.com\" }}",
                tokens.url(),
                secret_file(dir.path())
            ),
        )
        .toml(&format!(
            "[authorization_server]\n[[authorization_server.keys]]\nkid = \"gw-1\"\n\
             algorithm = \"EdDSA\"\nprivate_key = \"file://{}\"\n",
            key_file.display()
        ));
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    for key in [READER_KEY, READER_KEY, ADMIN_KEY] {
        let reply = h.mcp_post(Some(key), None, LIST).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(tokens.issued(), 2, "one exchange per identity");
    let forms = tokens.forms();
    let field = |form: &Vec<(String, String)>, key: &str| {
        form.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        field(&forms[0], "subject_token_type"),
        "urn:ietf:params:oauth:token-type:jwt"
    );
    let statement = field(&forms[0], "subject_token");
    // Verified with the gateway's published key set, as the other server would.
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(
        &h.request("GET", "/.well-known/jwks.json", &[], None)
            .await
            .body,
    )
    .expect("JWKS");
    let jwk = jwks.find("gw-1").expect("the signing key is published");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["https://partner-as.example.com"]);
    validation.set_issuer(&[h.base.as_str()]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &statement,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key"),
        &validation,
    )
    .expect("the statement verifies")
    .claims;
    assert_eq!(claims["sub"], "reader");
    assert_eq!(claims["scope"], "mcp:read");
    assert_eq!(claims["portcullis_provider"], "keys");
    assert!(claims["exp"].as_u64().expect("exp") <= now() + 61);
    assert_eq!(
        portcullis_tests::oauth::claims(&field(&forms[1], "subject_token"))["sub"],
        "admin"
    );
    let seen: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| s.header("authorization").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(seen, ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]);
}
