//! Adversarial review of issue 16 (the upstream side and secret references): each test shows
//! a bypass or a leak through the real path (a real gateway on port 0, real upstreams, a
//! Vault stand-in that records every path it is asked for) and fails until it is fixed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::rt::TokioExecutor;
use portcullis_tests::config::TestConfig;
use portcullis_tests::upstream::{Seen, answer, json};
use serde_json::{Value, json};

use crate::gateway_harness::{
    READER_KEY, RecordingUpstream, serve_watched, standard, start_with_upstream,
};

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// A Vault stand-in (KV v2 over plain HTTP on loopback): answers `GET /v1/{mount}/data/{path}`
/// from `secrets` (path after `/v1/` → the secret's data), 404 for anything else, and
/// records every request.
async fn fake_vault(secrets: Arc<Mutex<Vec<(String, Value)>>>) -> RecordingUpstream {
    RecordingUpstream::answering(move |seen: Seen| {
        let secrets = Arc::clone(&secrets);
        async move {
            let path = seen
                .target
                .strip_prefix("/v1/")
                .unwrap_or_default()
                .to_owned();
            let found = secrets
                .lock()
                .expect("lock")
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, data)| data.clone());
            match found {
                Some(data) => json(json!({ "data": { "data": data } }).to_string()),
                None => answer(404, r#"{"errors":[]}"#),
            }
        }
    })
    .await
}

/// A forward-auth gateway config whose `keys` provider takes each key from a reference
/// (`keys` is a TOML array body), with `[vault]` at `vault` refreshing every second.
fn vault_config(vault: &RecordingUpstream, dir: &std::path::Path, keys: &str) -> String {
    let token = dir.join("vault-token");
    std::fs::write(&token, "root-token-for-the-fake").expect("write token");
    TestConfig::for_file()
        .behind("envoy")
        .route("/mcp", &["keys"])
        .upstream("http://127.0.0.1:9/mcp")
        .provider("keys", "api_key")
        .with(&format!("keys = [{keys}]"))
        .toml(&format!(
            "[vault]\naddress = \"{}\"\ntoken = \"file://{}\"\nrefresh_secs = 1\ntimeout_ms = 1000\n",
            vault.url,
            token.display()
        ))
        .to_string()
}

/// The forward-auth answer for a request with `key`: the subject, or the status.
async fn check(base: &str, key: &str) -> Result<String, u16> {
    crate::secrets::check(&crate::secrets::client(), base, key).await
}

/// `vault://secret/app#f` is checked for `..` segments, but the URL it becomes is parsed by
/// a WHATWG URL parser, which reads `\` as `/` and drops tabs: `app\..\..\..\other\data\y`
/// and `app/.<TAB>./…` pass the check and read the secret `y` of the mount `other`. A
/// reference that names mount `secret` must never read another mount (or `sys/…`).
/// Fixed: every segment of a `vault://` mount and path must be letters, digits and
/// `-_.~@+=:,` (not `.` or `..`), the one spelling every URL parser keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_reference_with_backslash_or_tab_dot_segments_is_refused() {
    let secrets = Arc::new(Mutex::new(vec![
        (
            "secret/data/app".to_owned(),
            json!({ "ci": "key-in-the-secret-mount-01" }),
        ),
        (
            "other/data/y".to_owned(),
            json!({ "bs": "key-of-another-mount-0001", "tab": "key-of-another-mount-0002" }),
        ),
    ]));
    let vault = fake_vault(Arc::clone(&secrets)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // TOML basic strings: `\\` is one backslash, `\t` a tab.
    let keys = r#"{ name = "ci", key = "vault://secret/app#ci", scopes = ["mcp:read"] },
 { name = "bs", key = "vault://secret/app\\..\\..\\..\\other\\data\\y#bs", scopes = ["mcp:read"] },
 { name = "tab", key = "vault://secret/app/.\t./.\t./.\t./other/data/y#tab", scopes = ["mcp:read"] }"#;
    let text = vault_config(&vault, dir.path(), &keys.replace('\n', ""));
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, &text).expect("write config");

    let loaded = portcullis::load::from_source(&portcullis::load::Source::file(&path), None).await;
    let outside: Vec<String> = vault
        .seen()
        .iter()
        .map(|s| s.target.clone())
        .filter(|t| !t.starts_with("/v1/secret/"))
        .collect();
    if loaded.is_ok() {
        let served = serve_watched(path, None).await;
        for (key, name) in [
            ("key-of-another-mount-0001", "bs"),
            ("key-of-another-mount-0002", "tab"),
        ] {
            assert_eq!(
                check(&served.base, key).await,
                Err(401),
                "the `{name}` reference names mount `secret` but was read from mount `other` \
                 (Vault saw {outside:?}); its value is a key the gateway accepts"
            );
        }
    }
    assert!(
        outside.is_empty(),
        "references under `vault://secret/` made the gateway read {outside:?}"
    );
}

/// Revoking an API key in Vault by deleting its field: the next read answers without the
/// field, and the gateway keeps accepting the deleted key for as long as it runs (the
/// "last good value" meant for an unreachable Vault is also served for a secret Vault says
/// is gone). Only a changed value takes effect; a removed one never does.
/// Fixed: a secret Vault says is gone (404, or no such field) is not served from its last
/// good value; an API key whose secret is gone is refused (deleting it revokes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_deleted_from_vault_is_refused() {
    let (ci, other) = ("revoked-ci-key-000000000001", "steady-key-0000000000000002");
    let secrets = Arc::new(Mutex::new(vec![(
        "secret/data/gateway/keys".to_owned(),
        json!({ "ci": ci, "other": other }),
    )]));
    let vault = fake_vault(Arc::clone(&secrets)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = r#"{ name = "ci", key = "vault://secret/gateway/keys#ci", scopes = ["mcp:read"] }, { name = "other", key = "vault://secret/gateway/keys#other", scopes = ["mcp:read"] }"#;
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, vault_config(&vault, dir.path(), keys)).expect("write config");
    let served = serve_watched(path, None).await;
    assert_eq!(check(&served.base, ci).await, Ok("ci".into()));
    assert_eq!(check(&served.base, other).await, Ok("other".into()));

    // The operator revokes `ci`: a new version of the secret without it.
    secrets.lock().expect("lock")[0].1 = json!({ "other": other });
    let reads_before = vault.hits();
    // Several refreshes (every second) come and go.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while vault.hits() < reads_before + 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        vault.hits() >= reads_before + 3,
        "the gateway re-read Vault"
    );
    portcullis_tests::eventually::eventually(
        "the key deleted from Vault to be refused",
        || async { check(&served.base, ci).await == Err(401) },
    )
    .await;
    assert_eq!(check(&served.base, other).await, Ok("other".into()));
}

/// `upstream_auth` of type `header` sets `x-upstream-key`; the caller's `x-upstream-key` is
/// replaced, but its `x_upstream_key` reaches the upstream beside the gateway's. CGI, WSGI,
/// Rack and PHP upstreams read both as `HTTP_X_UPSTREAM_KEY` (the gateway strips such
/// look-alikes of the caller's credential headers and of its identity headers for this
/// reason, but not of the upstream credential's header), so the caller chooses the
/// credential the upstream sees.
/// Fixed: the upstream credential's header joins the route's strip list, look-alikes and all.
#[tokio::test]
async fn a_callers_underscore_spelling_of_the_upstream_credential_header_is_stripped() {
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
            &[
                ("x_upstream_key", "Key forged-by-the-caller"),
                ("X_UPSTREAM_KEY", "Key forged-by-the-caller"),
            ],
            LIST,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = upstream.seen();
    let folded: Vec<String> = seen[0]
        .headers
        .iter()
        .filter(|(name, _)| name.as_str().replace('_', "-") == "x-upstream-key")
        .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?")))
        .collect();
    assert_eq!(
        folded,
        ["x-upstream-key: Key upstream-secret-value"],
        "the upstream got a caller-chosen spelling of its credential header"
    );
}

/// A token endpoint that answers `expires_in` = i64::MAX: the gateway adds it to an
/// `Instant`, which panics. The caller's connection is dropped instead of the stated 503
/// (or a token with a capped lifetime), and as the failure is never recorded, every request
/// fetches (and panics) again: no `RETRY_AFTER`, the token endpoint is hammered.
/// Fixed: a token's lifetime is capped at 24 hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_answering_a_huge_expires_in_gets_a_token_kept_at_most_a_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&fetches);
    let tokens = RecordingUpstream::answering(move |_| {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async {
            json(
                json!({ "access_token": "tok-huge", "token_type": "Bearer", "expires_in": i64::MAX })
                    .to_string(),
            )
        }
    })
    .await;
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "gateway-client-secret").expect("write");
    let upstream = RecordingUpstream::start().await;
    let config = standard().on_route(
        "/mcp",
        &format!(
            "upstream_auth = {{ type = \"client_credentials\", token_url = \"{}/token\", \
             client_id = \"gw\", client_secret = \"file://{}\" }}",
            tokens.url,
            secret.display()
        ),
    );
    let h = Arc::new(start_with_upstream(config, &format!("{}/mcp", upstream.url)).await);
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let h = Arc::clone(&h);
        let call =
            tokio::spawn(async move { h.mcp_post(Some(READER_KEY), None, LIST).await.status });
        outcomes.push(match call.await {
            Ok(status) => format!("{status}"),
            Err(_) => "connection dropped".to_owned(),
        });
    }
    assert!(
        outcomes.iter().all(|o| o == "200" || o == "503"),
        "answers: {outcomes:?} (token endpoint asked {} times)",
        fetches.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert!(
        fetches.load(std::sync::atomic::Ordering::SeqCst) <= 1,
        "one answer, however odd its lifetime, is one fetch: asked {} times",
        fetches.load(std::sync::atomic::Ordering::SeqCst)
    );
}

/// The gateway's own credential for the upstream goes to a plain `http://` upstream that is
/// not on loopback: the static header (or the client-credentials token) crosses the network
/// in clear to whoever is on the path. The token endpoint and the Vault address refuse
/// exactly this ("plain `http://` only on a loopback address"); the upstream that receives
/// the resulting credential on every request does not.
/// Fixed: a config error, unless `upstream_auth.allow_plain_http = true`.
#[tokio::test]
async fn upstream_auth_to_a_plain_http_upstream_off_loopback_is_refused_unless_allowed() {
    let text = portcullis_tests::config::fill(
        standard().on_route(
            "/mcp",
            "upstream_auth = { type = \"header\", header = \"authorization\", value = \
             \"Bearer {secret}\", secret = \"env://UPSTREAM_TOKEN\" }",
        ),
        "127.0.0.1:1".parse().expect("addr"),
        "http://mcp.example.com/mcp",
    );
    let loaded = portcullis::config::load_str(&text, "t.toml", std::path::Path::new("."));
    assert!(
        loaded.is_err(),
        "a config that sends the upstream credential in clear to mcp.example.com loads"
    );
}

/// An upstream that answers `TRACE` as Apache httpd does by default (`TraceEnable On`):
/// the request it received, headers included, as a `message/http` body.
async fn tracing_upstream() -> RecordingUpstream {
    RecordingUpstream::answering(|seen: Seen| async move {
        if seen.method != "TRACE" {
            return answer(200, "ok");
        }
        let mut echo = format!("TRACE {} HTTP/1.1\r\n", seen.target);
        for (name, value) in &seen.headers {
            echo.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or("?")));
        }
        let mut reply = answer(200, echo);
        reply.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("message/http"),
        );
        reply
    })
    .await
}

/// A caller sends `TRACE` on a route whose upstream gets the gateway's own credential: the
/// gateway adds the credential (a static header from a secret, or the route's one
/// client-credentials token, shared by every caller) and passes the method on; an upstream
/// that answers TRACE echoes the request, and the caller reads the gateway's credential in
/// the body. Any caller the route admits then holds the upstream credential itself and can
/// use it without the gateway (no rules, no scopes, as any user).
/// Fixed: `TRACE`, `TRACK` and `CONNECT` are refused (405) before any route.
#[tokio::test]
async fn a_trace_request_is_refused_so_no_upstream_can_echo_the_gateways_credential() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("upstream-key");
    std::fs::write(&secret, "upstream-secret-value-77\n").expect("write");
    let upstream = tracing_upstream().await;
    let config = standard().http_route("/plain", &["keys"]).on_route(
        "/plain",
        &format!(
            "upstream_auth = {{ type = \"header\", header = \"x-api-key\", secret = \"file://{}\" }}",
            secret.display()
        ),
    );
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    let plain = h
        .request(
            "GET",
            "/plain/x",
            &[("authorization", &format!("Bearer {READER_KEY}"))],
            None,
        )
        .await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    let traced = h
        .request(
            "TRACE",
            "/plain/x",
            &[("authorization", &format!("Bearer {READER_KEY}"))],
            None,
        )
        .await;
    assert!(
        !traced.body.contains("upstream-secret-value-77"),
        "the caller read the gateway's upstream credential ({}):\n{}",
        traced.status,
        traced.body
    );
}

/// An HTTP/2-over-TLS upstream (a test CA, written to `dir`) that records the trailers of
/// every request it receives.
async fn trailer_recording_upstream(
    dir: &std::path::Path,
) -> (String, std::path::PathBuf, Arc<Mutex<Vec<http::HeaderMap>>>) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let generated =
        portcullis::identity::ca::generate("r16-upstream-ca", &["127.0.0.1".to_owned()])
            .expect("CA");
    let ca_file = dir.join("r16-upstream-ca.pem");
    std::fs::write(&ca_file, &generated.ca_cert).expect("write CA");
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(generated.server_cert.as_bytes())
            .collect::<Result<_, _>>()
            .expect("server cert");
    let key = PrivateKeyDer::from_pem_slice(generated.server_key.as_bytes()).expect("key");
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let trailers: Arc<Mutex<Vec<http::HeaderMap>>> = Arc::default();
    let record = Arc::clone(&trailers);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, record) = (acceptor.clone(), Arc::clone(&record));
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let record = Arc::clone(&record);
                        async move {
                            let collected = req.into_body().collect().await;
                            let trailers = collected
                                .ok()
                                .and_then(|c| c.trailers().cloned())
                                .unwrap_or_default();
                            record.lock().expect("lock").push(trailers);
                            Ok::<_, std::convert::Infallible>(answer(200, "ok"))
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, ca_file, trailers)
}

/// A caller streams a body (a plain route: bodies are not read) in chunked encoding and
/// ends it with trailer fields: `authorization` carrying its own bearer credential and
/// `x-api-key` carrying a credential of its choice. The gateway strips the caller's
/// credential headers and sets the upstream's `x-api-key`, but passes the trailers on,
/// and over HTTP/2 (what an `https://` upstream picks by ALPN) they reach the upstream:
/// the caller's token is passed through, and a caller-chosen value stands beside the
/// gateway's credential under its name.
/// Fixed: a streamed request body's trailers are dropped before the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_are_dropped_before_an_http2_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, ca_file, trailers) = trailer_recording_upstream(dir.path()).await;
    let secret = dir.path().join("upstream-key");
    std::fs::write(&secret, "upstream-secret-value\n").expect("write");
    let config = standard().http_route("/plain", &["keys"]).on_route(
        "/plain",
        &format!(
            "upstream_auth = {{ type = \"header\", header = \"x-api-key\", secret = \"file://{}\" }}\n\
             upstream_tls = {{ ca_bundle = {:?} }}",
            secret.display(),
            ca_file.display().to_string()
        ),
    );
    let h = start_with_upstream(config, &format!("{url}/mcp")).await;
    let request = format!(
        "POST /plain/upload HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {READER_KEY}\r\n\
         content-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n5\r\nhello\r\n0\r\nauthorization: Bearer {READER_KEY}\r\n\
         x-api-key: forged-by-the-caller\r\n\r\n",
        h.addr
    );
    let reply = crate::gateway_harness::raw_request(h.addr, request.into_bytes()).await;
    let crate::gateway_harness::RawReply::Answered { status, text } = reply else {
        panic!("no answer: {reply:?}");
    };
    assert_eq!(status, 200, "{text}");
    let seen = trailers.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "one request reached the upstream");
    assert!(
        seen[0].is_empty(),
        "trailer fields from the caller reached the upstream: {:?}",
        seen[0]
    );
}

/// Any caller can make the upstream answer 401 for a reason of its own (here a header the
/// upstream refuses; in life a bad session cookie, a resource the upstream guards with 401),
/// and the gateway takes every such 401 for a refusal of its shared client-credentials
/// token: it forgets the token every caller uses and fetches a new one, twice per request
/// (the retry's 401 forgets the fresh token too). One caller's loop becomes a token request
/// loop against the IdP, and every other caller's next request waits for a fetch (or gets
/// 503 once the IdP rate-limits the gateway's client).
/// Fixed: a refusal forgets the token at most once per `REFUSALS_APART` (5 s); a refused
/// token within that time is answered 502 without a new fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_callers_upstream_401s_cause_at_most_one_token_fetch_per_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&issued);
    let tokens = RecordingUpstream::answering(move |_| {
        let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        async move {
            json(
                json!({ "access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": 3600 })
                    .to_string(),
            )
        }
    })
    .await;
    let upstream = RecordingUpstream::answering(|seen: Seen| async move {
        if seen.header("x-poison").is_some() {
            answer(401, "not for you")
        } else {
            json(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#)
        }
    })
    .await;
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "gateway-client-secret").expect("write");
    let config = standard().on_route(
        "/mcp",
        &format!(
            "upstream_auth = {{ type = \"client_credentials\", token_url = \"{}/token\", \
             client_id = \"gw\", client_secret = \"file://{}\" }}",
            tokens.url,
            secret.display()
        ),
    );
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    assert_eq!(h.mcp_post(Some(READER_KEY), None, LIST).await.status, 200);
    assert_eq!(issued.load(std::sync::atomic::Ordering::SeqCst), 1);
    for _ in 0..20 {
        let reply = h
            .mcp_post_with(Some(READER_KEY), &[("x-poison", "1")], LIST)
            .await;
        assert_eq!(reply.status, 502, "{}", reply.body);
    }
    let fetched = issued.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        fetched <= 3,
        "20 requests from one caller made the gateway fetch the route's shared token {fetched} \
         times (the token was good all along)"
    );
}

/// Vault stops answering (it accepts connections, as a hung or overloaded server does).
/// The operator revokes a leaked API key the fast way, by removing it from the config file.
/// The reload that would drop it first waits for the periodic refresh (which holds the
/// one Vault lock while it times out on every secret path, one after another), then times
/// out on every path again itself before anything is swapped: the leaked key stays good for
/// (paths × `timeout_ms`) × 2, minutes with the default 5 s and a few dozen paths, although
/// nothing the change needs comes from Vault (the last good values serve either way).
/// Fixed: secrets are read in parallel under one timeout, and a load neither waits for a
/// refresh in flight nor reads a Vault known to be failing when every value has a last good
/// one. Shown with a Vault timeout (120 s) far beyond the wait's deadline (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_vault_does_not_delay_the_revocation_of_a_key_removed_from_the_config_file() {
    let hung = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hang = Arc::clone(&hung);
    let vault = RecordingUpstream::answering(move |seen: Seen| {
        let hang = Arc::clone(&hang);
        async move {
            if hang.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
            let path = seen
                .target
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            json(
                json!({ "data": { "data": { "key": format!("vault-key-of-{path}-0000000") } } })
                    .to_string(),
            )
        }
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let leaked = "leaked-key-000000000000000001";
    std::fs::write(dir.path().join("leaked"), leaked).expect("write");
    let vault_keys: Vec<String> = (1..=4)
        .map(|i| {
            format!(
                r#"{{ name = "k{i}", key = "vault://secret/p{i}#key", scopes = ["mcp:read"] }}"#
            )
        })
        .collect();
    let leaked_key = format!(
        r#"{{ name = "leaked", key = "file://{}", scopes = ["mcp:read"] }}"#,
        dir.path().join("leaked").display()
    );
    let with_leaked = format!("{leaked_key}, {}", vault_keys.join(", "));
    let path = dir.path().join("portcullis.toml");
    let write = |keys: &str| {
        let text = vault_config(&vault, dir.path(), keys)
            .replace("timeout_ms = 1000", "timeout_ms = 120000");
        std::fs::write(&path, text).expect("write config");
    };
    write(&with_leaked);
    let served = serve_watched(path.clone(), None).await;
    assert_eq!(check(&served.base, leaked).await, Ok("leaked".into()));
    assert_eq!(
        check(&served.base, "vault-key-of-p1-0000000").await,
        Ok("k1".into())
    );

    let before = vault.hits();
    hung.store(true, std::sync::atomic::Ordering::SeqCst);
    // A refresh is now waiting on the hung Vault (a request arrived and is not answered).
    vault.arrived(before + 1).await;
    write(&vault_keys.join(", "));
    portcullis_tests::eventually::eventually(
        "the key removed from the config file to be refused while Vault hangs",
        || async { check(&served.base, leaked).await != Ok("leaked".into()) },
    )
    .await;
    // The keys from Vault keep serving from their last good values meanwhile.
    assert_eq!(
        check(&served.base, "vault-key-of-p1-0000000").await,
        Ok("k1".into())
    );
}
