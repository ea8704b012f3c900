//! Second adversarial review of issue 16 (the upstream side and secret references): each
//! test shows, through the real path (a real gateway on port 0, real upstreams, a Vault
//! stand-in, a token endpoint), something still wrong after the first round's fixes, and
//! fails until it is fixed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_tests::config::TestConfig;
use portcullis_tests::eventually::eventually;
use portcullis_tests::oauth::{TestKey, now};
use portcullis_tests::upstream::{Seen, answer, json};
use serde_json::{Value, json};

use crate::gateway_harness::{
    READER_KEY, RecordingUpstream, serve_watched, standard, start_with_upstream,
};

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// A Vault stand-in (KV v2 over plain HTTP on loopback): answers `GET /v1/{mount}/data/{path}`
/// from `secrets` (path after `/v1/` → the secret's data), 404 for anything else.
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

/// A forward-auth gateway config whose `keys` provider takes each key from a reference,
/// with `[vault]` at `vault` refreshing every second.
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

/// The operator revokes the API key `ci` by deleting its Vault field, while another secret
/// the config reads (`other`) cannot be read for now (here its field is not a string; in
/// life a policy change that answers 403 for one path, or a 500): a failure, not a
/// deletion. The refresh sees `ci` gone and asks for a reload; but the reload's
/// `SecretCache::prepare` finds Vault "known to be failing" (the `other` read) and every
/// reference "known" (the refresh never dropped `ci`'s last good value), so it takes the
/// fast path and serves the deleted key's last good value. Every refresh repeats this (a
/// full reload every `refresh_secs`), and the deleted key stays good for as long as any
/// other secret is unreadable: the README's "deleting a key's secret revokes it" does not
/// hold.
/// Fix: the fast path must not serve a reference the refresh found gone (drop gone values in
/// `refresh` too, or exclude them from `all_known`), and a changed value must not be
/// overwritten by the last good one either.
/// Fixed: a refresh keeps what it read (and drops what it found gone) as the last good
/// values, so the reload it asks for serves them even while another secret fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_deleted_from_vault_is_refused_while_another_secret_is_unreadable() {
    let (ci, other) = ("revoked-ci-key-000000000001", "steady-key-0000000000000002");
    let secrets = Arc::new(Mutex::new(vec![
        ("secret/data/gateway/ci".to_owned(), json!({ "key": ci })),
        (
            "secret/data/gateway/other".to_owned(),
            json!({ "key": other }),
        ),
    ]));
    let vault = fake_vault(Arc::clone(&secrets)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = r#"{ name = "ci", key = "vault://secret/gateway/ci#key", scopes = ["mcp:read"] }, { name = "other", key = "vault://secret/gateway/other#key", scopes = ["mcp:read"] }"#;
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, vault_config(&vault, dir.path(), keys)).expect("write config");
    let served = serve_watched(path, None).await;
    assert_eq!(check(&served.base, ci).await, Ok("ci".into()));
    assert_eq!(check(&served.base, other).await, Ok("other".into()));

    {
        let mut secrets = secrets.lock().expect("lock");
        // `other` is unreadable for now (not gone): its last good value keeps serving.
        secrets[1].1 = json!({ "key": 12345 });
        // `ci` is revoked: a new version of its secret without the field.
        secrets[0].1 = json!({});
    }
    eventually(
        "the API key whose Vault field was deleted to be refused (another secret being \
         unreadable meanwhile)",
        || async {
            match check(&served.base, ci).await {
                Err(401) => Ok(()),
                other => Err(format!(
                    "still {other:?} after {} Vault reads",
                    vault.hits()
                )),
            }
        },
    )
    .await;
    assert_eq!(check(&served.base, other).await, Ok("other".into()));
}

/// The same fast path overwrites a rotated value with the old one: the operator replaces the
/// leaked key `ci` in Vault while another secret is unreadable; the refresh sees the new
/// value and reloads, and the reload serves the last good (leaked) value again, since the
/// refresh never stored the new one. The leaked key stays good and the new one is refused,
/// for as long as the other secret stays unreadable.
/// Fixed: as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_in_vault_takes_effect_while_another_secret_is_unreadable() {
    let (leaked, rotated, other) = (
        "leaked-ci-key-0000000000001",
        "rotated-ci-key-000000000002",
        "steady-key-0000000000000003",
    );
    let secrets = Arc::new(Mutex::new(vec![
        (
            "secret/data/gateway/ci".to_owned(),
            json!({ "key": leaked }),
        ),
        (
            "secret/data/gateway/other".to_owned(),
            json!({ "key": other }),
        ),
    ]));
    let vault = fake_vault(Arc::clone(&secrets)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = r#"{ name = "ci", key = "vault://secret/gateway/ci#key", scopes = ["mcp:read"] }, { name = "other", key = "vault://secret/gateway/other#key", scopes = ["mcp:read"] }"#;
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, vault_config(&vault, dir.path(), keys)).expect("write config");
    let served = serve_watched(path, None).await;
    assert_eq!(check(&served.base, leaked).await, Ok("ci".into()));

    {
        let mut secrets = secrets.lock().expect("lock");
        secrets[1].1 = json!({ "key": 12345 });
        secrets[0].1 = json!({ "key": rotated });
    }
    eventually(
        "the rotated key to be accepted and the leaked one refused (another secret being \
         unreadable meanwhile)",
        || async {
            let (new, old) = (
                check(&served.base, rotated).await,
                check(&served.base, leaked).await,
            );
            if new == Ok("ci".into()) && old == Err(401) {
                Ok(())
            } else {
                Err(format!(
                    "rotated key: {new:?}, leaked key: {old:?} after {} Vault reads",
                    vault.hits()
                ))
            }
        },
    )
    .await;
}

/// A token endpoint that issues `tok-1` valid for `expires_in` seconds, then accepts every
/// later request and never answers it (a hung or overloaded IdP).
async fn hanging_token_endpoint(expires_in: u64) -> RecordingUpstream {
    let issued = Arc::new(AtomicUsize::new(0));
    RecordingUpstream::answering(move |_| {
        let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n > 1 {
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
            json(
                json!({ "access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": expires_in })
                    .to_string(),
            )
        }
    })
    .await
}

/// The route's client-credentials token `tok-1` is good for 20 s; from 10 s on the gateway
/// fetches its replacement, and the token endpoint hangs. README: "After a failed fetch no
/// new one is tried for 1 s; a token still valid meanwhile keeps being used". But while
/// the refresh is in flight every request waits on the slot's fetch lock (up to the token
/// `timeout_ms`, 10 s by default, 30 s here) although `tok-1` is still good for another
/// ten seconds: a hung IdP stalls every request on the route in every refresh window (and,
/// after each timeout, the next request starts another stalled fetch 1 s later). The
/// caller that waits the whole time is then sent on with `tok-1` even if it has expired
/// meanwhile (`usable` is taken before the fetch).
/// Fix: while a fetch is in flight (or when the token is only due for refresh), answer with
/// the still-valid token and let one fetch run in the background; re-check validity after
/// a failed fetch.
/// Fixed: a token due for replacement but still valid is used at once, and one fetch
/// runs in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_token_endpoint_does_not_stall_requests_while_the_token_is_still_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = hanging_token_endpoint(20).await;
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "gateway-client-secret").expect("write");
    let upstream = RecordingUpstream::start().await;
    let config = standard().on_route(
        "/mcp",
        &format!(
            "upstream_auth = {{ type = \"client_credentials\", token_url = \"{}/token\", \
             client_id = \"gw\", client_secret = \"file://{}\", timeout_ms = 30000 }}",
            tokens.url,
            secret.display()
        ),
    );
    let h = Arc::new(start_with_upstream(config, &format!("{}/mcp", upstream.url)).await);
    assert_eq!(h.mcp_post(Some(READER_KEY), None, LIST).await.status, 200);
    let first_fetch = std::time::Instant::now();
    assert_eq!(tokens.hits(), 1);

    // Requests keep coming; once the token is due for refresh (after 10 s) one of them
    // starts the fetch that hangs.
    let h2 = Arc::clone(&h);
    let traffic = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(100));
        loop {
            interval.tick().await;
            let h = Arc::clone(&h2);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(60),
                    h.request(
                        "POST",
                        "/mcp",
                        &[
                            ("content-type", "application/json"),
                            ("accept", "application/json, text/event-stream"),
                            ("authorization", &format!("Bearer {READER_KEY}")),
                        ],
                        Some(LIST),
                    ),
                )
                .await;
            });
        }
    });
    tokens.arrived(2).await;
    let valid_for = Duration::from_secs(20).saturating_sub(first_fetch.elapsed());
    assert!(
        valid_for > Duration::from_secs(5),
        "the refresh started with {valid_for:?} of tok-1 left; the machine is too slow for \
         this test"
    );
    // `tok-1` is good for several more seconds; a request now is answered with it.
    let probe = tokio::time::timeout(
        Duration::from_secs(8),
        h.mcp_post(Some(READER_KEY), None, LIST),
    )
    .await;
    traffic.abort();
    match probe {
        Ok(reply) => assert_eq!(reply.status, 200, "{}", reply.body),
        Err(_) => panic!(
            "a request waited more than 8 s for the hung token refresh although tok-1 was \
             still good for {valid_for:?}"
        ),
    }
}

/// A token endpoint that checks nothing and issues `tok-1`, `tok-2`, … for an hour, recording
/// each request's form.
async fn exchanging_token_endpoint() -> (RecordingUpstream, Arc<AtomicUsize>) {
    let issued = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&issued);
    let server = RecordingUpstream::answering(move |_| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            json(
                json!({ "access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": 3600 })
                    .to_string(),
            )
        }
    })
    .await;
    (server, issued)
}

fn form_field(seen: &Seen, key: &str) -> String {
    url::form_urlencoded::parse(&seen.body)
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A route admits callers with the IdP's JWTs (claims `act` kept, so a delegated token's
/// actor is known: the upstream gets `x-portcullis-actor`) and exchanges their identity
/// (`subject = "identity"`) for the upstream's token. Alice calls with her own token, then
/// an agent calls with a token delegated by alice (`act.sub = agent-7`). The statement the
/// gateway signs has no `act`, and the exchanged-token cache is keyed by provider, subject,
/// scopes and client only: the agent is handed the upstream token exchanged for alice
/// herself (no exchange happens for it), and the partner authorization server can never
/// tell an agent acting for alice from alice. The README's "an agent acting for, or
/// impersonating, a user never reads to the upstream as the user alone" does not hold on
/// the exchanged credential, which is what the upstream authorizes by.
/// Fix: put the `act` claim in the statement and in the cache key.
/// Fixed: the statement carries `act`, and the cache key the actor.
#[tokio::test]
async fn an_agent_acting_for_a_user_is_not_exchanged_as_the_user_herself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signing = TestKey::ed25519("gw-1");
    let key_file = dir.path().join("gw-1.pem");
    std::fs::write(&key_file, signing.pem()).expect("write key");
    let idp = TestKey::ed25519("idp-1");
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "gateway-client-secret").expect("write");
    let (tokens, issued) = exchanging_token_endpoint().await;
    let upstream = RecordingUpstream::start().await;
    let issuer = "https://idp.example.com";
    let config = standard()
        .on_route("/mcp", r#"chain = ["idp"]"#)
        .on_route(
            "/mcp",
            &format!(
                "upstream_auth = {{ type = \"token_exchange\", token_url = \"{}/token\", \
                 client_id = \"gw\", client_secret = \"file://{}\", subject = \"identity\", \
                 subject_audience = \"https://partner-as.example.com\" }}",
                tokens.url,
                secret.display()
            ),
        )
        .provider("idp", "jwt")
        .with(&format!("issuer = {issuer:?}"))
        .with(r#"audience = "{gateway}/mcp""#)
        .with(r#"algorithms = ["EdDSA"]"#)
        .with(&format!("jwks = '{}'", idp.jwks()))
        .with(r#"claims = ["act"]"#)
        .toml(&format!(
            "[authorization_server]\n[[authorization_server.keys]]\nkid = \"gw-1\"\n\
             algorithm = \"EdDSA\"\nprivate_key = \"file://{}\"\n",
            key_file.display()
        ));
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    let audience = format!("{}/mcp", h.base);
    let token = |act: Option<&str>| {
        let mut claims = json!({
            "iss": issuer, "aud": audience, "sub": "alice", "scope": "mcp:read",
            "iat": now(), "exp": now() + 600,
        });
        if let Some(actor) = act {
            claims["act"] = json!({ "sub": actor });
        }
        idp.sign("idp-1", &claims)
    };
    let post = |token: String| {
        let h = &h;
        async move {
            h.request(
                "POST",
                "/mcp",
                &[
                    ("content-type", "application/json"),
                    ("accept", "application/json, text/event-stream"),
                    ("authorization", &format!("Bearer {token}")),
                ],
                Some(LIST),
            )
            .await
        }
    };
    let own = post(token(None)).await;
    assert_eq!(own.status, 200, "{}", own.body);
    let delegated = post(token(Some("agent-7"))).await;
    assert_eq!(delegated.status, 200, "{}", delegated.body);

    let seen = upstream.seen();
    assert_eq!(
        seen[1].header("x-portcullis-actor"),
        Some("agent-7"),
        "the gateway knows the second caller is agent-7 acting for alice"
    );
    let upstream_tokens: Vec<&str> = seen
        .iter()
        .map(|s| s.header("authorization").unwrap_or_default())
        .collect();
    let statements: Vec<Value> = tokens
        .seen()
        .iter()
        .map(|s| portcullis_tests::oauth::claims(&form_field(s, "subject_token")))
        .collect();
    assert_eq!(
        issued.load(Ordering::SeqCst),
        2,
        "agent-7 acting for alice was given the upstream token exchanged for alice herself \
         (upstream saw {upstream_tokens:?}; statements signed: {statements:?})"
    );
    assert_eq!(
        statements[1]["act"]["sub"], "agent-7",
        "the statement of a delegated identity names its actor: {}",
        statements[1]
    );
}

/// An `upstream` URL with user info (`https://svc:password@host/…`) loads, and the gateway
/// sends the URL's whole authority as `Host`: the password in the config file (a literal
/// secret, which every other setting refuses) goes out in a header on every request, and
/// into the log lines that print the upstream (`upstream = %base`). `[vault].address`
/// refuses user info for this reason; `upstream` does not.
/// Fix: refuse user info in `upstream` at load (use `upstream_auth` for a credential).
/// Fixed: user information in an upstream URL is a config error.
#[tokio::test]
async fn an_upstream_url_with_user_info_is_refused_at_load() {
    let upstream = RecordingUpstream::start().await;
    let with_userinfo = upstream
        .url
        .replace("http://", "http://svc:upstream-password-42@");
    let text = portcullis_tests::config::fill(
        standard(),
        "127.0.0.1:0".parse().expect("addr"),
        &format!("{with_userinfo}/mcp"),
    );
    let loaded = portcullis::config::load_str(&text, "t.toml", std::path::Path::new("."));
    if loaded.is_ok() {
        let h = start_with_upstream(standard(), &format!("{with_userinfo}/mcp")).await;
        let reply = h.mcp_post(Some(READER_KEY), None, LIST).await;
        let host = upstream
            .seen()
            .first()
            .and_then(|s| s.header("host").map(str::to_owned));
        panic!(
            "an upstream URL with a password in it loads; the upstream got Host {host:?} \
             (answer {})",
            reply.status
        );
    }
}
