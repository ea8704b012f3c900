//! Review 14b: a second attack on the authorization server after the first review's fixes
//! (`attack_review14`), over real HTTP on port 0: hot-reloaded clients and their keys, the
//! delegation header `x-portcullis-actor`, the issuer's scheme, other spellings of the
//! server's paths, and the forward-auth check.
//!
//! Every test asserts the secure behaviour (what README.md and SECURITY.md promise, or what
//! the RFCs imply); the report lists which fail today and why.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis::engine::api_key::hash_key;
use portcullis_tests::eventually::eventually;
use portcullis_tests::upstream::RecordingUpstream;
use serde_json::{Value, json};

use portcullis_tests::oauth::{TestKey, now};

use crate::gateway_forward_auth::{readme_nginx, which};
use crate::gateway_harness::{Harness, send, start_with_upstream};
use crate::oauth_support::{access_token, basic, body, ping, post_form, replace, signing_key_file};

const SECRET: &str = "pcs_review14b-secret-of-agent-one-000000000";
const NEW_SECRET: &str = "pcs_review14b-new-secret-of-agent-one-00000";
const IDP: &str = "https://idp.test";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A hot-reloaded config (as `portcullis serve --config` runs it) whose clients live in
/// `clients.toml`, for route `/mcp` in front of `upstream`.
fn watched_config(dir: &Path, upstream: &str) -> PathBuf {
    let key = signing_key_file(dir);
    let config = dir.join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:9"

[authorization_server]
clients_file = "clients.toml"
# Polling for a reload must not lock the test's client out.
max_failed_authentications = 1000

[[authorization_server.keys]]
kid = "as-1"
algorithm = "EdDSA"
private_key = "file://{key}"

[providers.agents]
type = "issued"

[[routes]]
path = "/mcp"
upstream = "{upstream}"
chain = ["agents"]
"#,
            key = key.display()
        ),
    )
    .expect("write config");
    config
}

/// The resource URL of `/mcp` in [`watched_config`].
const WATCHED_RESOURCE: &str = "http://127.0.0.1:9/mcp";

/// Finding 1: SECURITY.md: a client cannot "keep using a token after … its client is revoked
/// or removed". Revoke (or remove) a client whose secret leaked, then register it again
/// under the same id with a new secret (and fewer scopes): every token issued before the
/// revocation works again, with the scopes it had, until it expires (up to a day). The
/// revocation is a lookup of the id in the current registry, not a fact remembered.
#[tokio::test]
async fn a_client_revoked_and_registered_again_does_not_revive_its_old_tokens() {
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = watched_config(dir.path(), &upstream.url);
    let clients = dir.path().join("clients.toml");
    let entry = |secret: &str, scopes: &str, revoked: bool| {
        format!(
            "[[clients]]\nid = \"agent-1\"\nsecret_hash = \"{}\"\nscopes = [{scopes}]\n\
             token_lifetime_secs = 3600\nrevoked = {revoked}\n",
            hash_key(secret)
        )
    };
    std::fs::write(&clients, entry(SECRET, r#""mcp:read", "admin""#, false)).expect("write");
    let served = crate::gateway_harness::serve_watched(config, None).await;
    let (token_url, mcp_url) = (
        format!("{}/oauth/token", served.base),
        format!("{}/mcp", served.base),
    );
    let token = |secret: &'static str| {
        let token_url = token_url.clone();
        async move {
            post_form(
                &token_url,
                Some(("agent-1", secret)),
                &[("grant_type", "client_credentials")],
            )
            .await
        }
    };
    // The leaked token: an hour, with `admin`.
    let leaked = access_token(&token(SECRET).await);
    assert_eq!(ping(&mcp_url, &leaked).await.status, 200);

    // The operator revokes agent-1: the leaked token is refused.
    replace(&clients, &entry(SECRET, r#""mcp:read", "admin""#, true));
    eventually("the leaked token refused after the revocation", || async {
        ping(&mcp_url, &leaked).await.status == 401
    })
    .await;

    // ...and registers agent-1 again with a new secret and only `mcp:read`.
    replace(&clients, &entry(NEW_SECRET, r#""mcp:read""#, false));
    eventually("the new registration in force", || async {
        token(NEW_SECRET).await.status == 200
    })
    .await;
    assert_eq!(token(SECRET).await.status, 401, "the old secret is gone");
    let reply = ping(&mcp_url, &leaked).await;
    assert_eq!(
        reply.status, 401,
        "a token issued before agent-1 was revoked (scope `mcp:read admin`) is accepted again \
         once an agent-1 with a new secret and fewer scopes is registered: {reply:?}"
    );
}

/// Finding 2: review 14's finding 7 fixed only delegation with an actor token. An
/// `impersonation = true` client exchanges a user's token without one and gets a token with
/// no `act` at all (the README says the new token carries `act: {"sub": "<client>"}`): a
/// user whose subject is a client id (`keyed` here, an IdP account anyone might name so)
/// then reaches the upstream exactly as the client `keyed` itself: same subject, scopes and
/// provider, and no `x-portcullis-actor`.
#[tokio::test]
async fn an_impersonated_user_does_not_pass_for_the_client_of_the_same_name() {
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signing_key_file(dir.path());
    let idp = TestKey::ed25519("idp-1");
    let config = format!(
        r#"
[server]
listen = "{{listen}}"
public_url = "{{gateway}}"

[authorization_server]
subject_token_providers = ["corp"]

[[authorization_server.keys]]
kid = "as-1"
algorithm = "EdDSA"
private_key = "file://{key}"

[[authorization_server.clients]]
id = "chatbot"
secret_hash = "{hash}"
scopes = ["mcp:read"]
grants = ["token-exchange"]
impersonation = true

[[authorization_server.clients]]
id = "keyed"
secret_hash = "{hash}"
scopes = ["mcp:read"]

[providers.agents]
type = "issued"

[providers.corp]
type = "jwt"
issuer = "{IDP}"
audience = "{{gateway}}/servers/a/mcp"
jwks = '{idp_jwks}'

[[routes]]
path = "/servers/a/mcp"
upstream = "{{upstream}}"
chain = ["agents", "corp"]
"#,
        key = key.display(),
        hash = hash_key(SECRET),
        idp_jwks = json!({ "keys": [idp.jwk] }),
    );
    let h = start_with_upstream(config, &upstream.url).await;
    let resource = format!("{}/servers/a/mcp", h.base);
    let token_url = format!("{}/oauth/token", h.base);
    let user = idp.sign(
        "idp-1",
        &json!({ "iss": IDP, "aud": resource, "sub": "keyed", "scope": "mcp:read",
                 "exp": now() + 300, "iat": now() }),
    );
    let impersonated = access_token(
        &post_form(
            &token_url,
            Some(("chatbot", SECRET)),
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", &user),
                ("subject_token_type", ACCESS),
                ("resource", &resource),
            ],
        )
        .await,
    );
    let own = access_token(
        &post_form(
            &token_url,
            Some(("keyed", SECRET)),
            &[
                ("grant_type", "client_credentials"),
                ("resource", &resource),
            ],
        )
        .await,
    );
    let seen_with = |token: String| {
        let (upstream, url) = (&upstream, format!("{}/servers/a/mcp", h.base));
        async move {
            let before = upstream.seen().len();
            let reply = ping(&url, &token).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            let seen = upstream.seen();
            let request = seen.get(before).expect("the upstream got the request");
            [
                "x-portcullis-subject",
                "x-portcullis-scopes",
                "x-portcullis-provider",
                "x-portcullis-actor",
                "x-portcullis-client",
            ]
            .map(|h| format!("{h}: {}", request.header(h).unwrap_or("-")))
            .join(", ")
        }
    };
    let as_impersonated = seen_with(impersonated).await;
    let as_keyed = seen_with(own).await;
    assert_ne!(
        as_impersonated, as_keyed,
        "`chatbot`, impersonating a user whose subject is `keyed`, reaches the upstream exactly \
         as the client `keyed` does"
    );
}

/// Finding 3: review 14's finding 6 holds the issuer to https, but the token, revocation
/// and introspection endpoints are built from `server.public_url`, not from the issuer. With
/// `issuer = "https://…"` and `public_url = "http://mcp.example.com"` the gateway starts and
/// its metadata sends every client's secret, assertion and token over plain http on a
/// public host.
#[tokio::test]
async fn an_https_issuer_never_advertises_plain_http_endpoints_on_a_public_host() {
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signing_key_file(dir.path());
    let config = format!(
        r#"
[server]
listen = "{{listen}}"
public_url = "http://mcp.example.com"

[authorization_server]
issuer = "https://mcp.example.com"

[[authorization_server.keys]]
kid = "as-1"
algorithm = "EdDSA"
private_key = "file://{key}"

[providers.agents]
type = "issued"

[[routes]]
path = "/mcp"
upstream = "{{upstream}}"
chain = ["agents"]
"#,
        key = key.display(),
    );
    let url = upstream.url.clone();
    let started = tokio::spawn(async move { start_with_upstream(config, &url).await }).await;
    let h: Harness = match started {
        Ok(harness) => harness,
        // Refusing the config at load is a secure outcome.
        Err(e) if e.is_panic() => return,
        Err(e) => panic!("{e}"),
    };
    let reply = h
        .request("GET", "/.well-known/oauth-authorization-server", &[], None)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let doc = body(&reply);
    let plain: Vec<String> = [
        "token_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
    ]
    .iter()
    .filter_map(|k| doc[*k].as_str())
    .filter(|u| u.starts_with("http://"))
    .map(str::to_owned)
    .collect();
    assert!(
        plain.is_empty(),
        "an https issuer on a public host advertises plain-http endpoints for secrets and \
         tokens: {plain:?}"
    );
}

/// A gateway with a public catch-all route `/` in front of `upstream` (review 14's finding 5
/// set-up), with `extra` in `[server]`.
fn catch_all_config(key: &Path, server_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
public_url = "{{gateway}}"
{server_extra}

[authorization_server]

[[authorization_server.keys]]
kid = "as-1"
algorithm = "EdDSA"
private_key = "file://{key}"

[[authorization_server.clients]]
id = "agent-1"
secret_hash = "{hash}"
scopes = ["mcp:read"]

[providers.agents]
type = "issued"

[providers.public]
type = "anonymous"

[[routes]]
path = "/servers/a/mcp"
upstream = "{{upstream}}"
chain = ["agents"]

[[routes]]
path = "/"
upstream = "{{upstream}}"
chain = ["public"]
mcp = false
"#,
        key = key.display(),
        hash = hash_key(SECRET),
    )
}

/// Finding 4: the first fix made `/oauth/token/` the server's, but the gateway itself refuses
/// paths "that an upstream ignoring case or trailing dots would route elsewhere" only when
/// a *route or rule* differs: `/OAuth/Token`, `/oauth/token.` and the sibling
/// `/servers/a/oauth/Token` go through the catch-all route to its upstream (ASP.NET Core,
/// Express and IIS serve them as `/oauth/token`), which receives the client's secret.
#[tokio::test]
async fn authorization_server_paths_in_another_case_or_with_a_dot_are_never_proxied() {
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signing_key_file(dir.path());
    let h = start_with_upstream(catch_all_config(&key, ""), &upstream.url).await;
    let mut proxied = Vec::new();
    for path in [
        "/OAuth/Token",
        "/oauth/token.",
        "/oauth/Token",
        "/servers/a/oauth/Token",
        "/oauth/revoke.",
    ] {
        let reply = post_form(
            &format!("{}{path}", h.base),
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "agent-1"),
                ("client_secret", SECRET),
            ],
        )
        .await;
        if reply.body == "upstream" {
            proxied.push(format!("POST {path}"));
        }
    }
    let leaked = upstream
        .seen()
        .iter()
        .filter(|s| String::from_utf8_lossy(&s.body).contains("client_secret"))
        .count();
    assert!(
        proxied.is_empty() && leaked == 0,
        "the catch-all upstream answered {proxied:?} and received {leaked} client secret(s)"
    );
}

/// Finding 5: behind forward-auth the proxy sends every request to the upstream once the
/// check says 200 (the README's nginx `location /`). Asked about `POST /oauth/token` (or a
/// sibling `…/oauth/token`), a path the gateway knows is its own authorization server's,
/// the check judges it by the catch-all route and answers 200, so the proxy hands the
/// client's secret (HTTP Basic here) to the upstream.
#[tokio::test]
async fn the_forward_auth_check_never_passes_a_token_request_to_an_upstream() {
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signing_key_file(dir.path());
    let server = "trusted_proxies = [\"127.0.0.1\"]\nforward_auth_proxy = \"nginx\"";
    let h = start_with_upstream(catch_all_config(&key, server), &upstream.url).await;
    let auth = basic("agent-1", SECRET);
    let mut passed = Vec::new();
    for uri in [
        "/oauth/token",
        "/servers/a/oauth/token",
        "/oauth/revoke",
        "/oauth/introspect",
    ] {
        let reply = h
            .request(
                "GET",
                "/check",
                &[
                    ("x-original-method", "POST"),
                    ("x-original-uri", uri),
                    ("x-forwarded-for", "203.0.113.9"),
                    ("authorization", &auth),
                ],
                None,
            )
            .await;
        if reply.status == 200 {
            passed.push(uri);
        }
    }
    assert!(
        passed.is_empty(),
        "the forward-auth check tells the proxy to pass these client-authenticated requests \
         (with the client's secret) to the upstream: {passed:?}"
    );
}

/// Finding 6: the `x-portcullis-actor` fix reaches only the gateway's own proxy. The
/// forward-auth check answers it, but the README's nginx snippet (run as written) copies
/// only `X-Portcullis-Subject`, `-Scopes` and `-Provider` and lets every other client header
/// through: an agent's delegated token reaches the upstream as the user alone, and a user
/// can add `X-Portcullis-Actor` to read as an agent's delegation (or blame an agent).
#[tokio::test]
async fn behind_the_readme_nginx_the_upstream_sees_only_the_real_actor() {
    let Some(nginx) = which("nginx") else {
        println!("skipped: `nginx` is not on PATH (CI installs `nginx-light` in .ci/run)");
        return;
    };
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signing_key_file(dir.path());
    let idp = TestKey::ed25519("idp-1");
    let config = format!(
        r#"
[server]
listen = "{{listen}}"
public_url = "{{gateway}}"
trusted_proxies = ["127.0.0.1"]
forward_auth_proxy = "nginx"

[authorization_server]
subject_token_providers = ["corp"]

[[authorization_server.keys]]
kid = "as-1"
algorithm = "EdDSA"
private_key = "file://{key}"

[[authorization_server.clients]]
id = "agent-1"
secret_hash = "{hash}"
scopes = ["mcp:read"]
grants = ["client_credentials", "token-exchange"]

[providers.agents]
type = "issued"

[providers.corp]
type = "jwt"
issuer = "{IDP}"
audience = "{{gateway}}/servers/a/mcp"
jwks = '{idp_jwks}'

[[routes]]
path = "/servers/a/mcp"
upstream = "{{upstream}}"
chain = ["agents", "corp"]
mcp = false
"#,
        key = key.display(),
        hash = hash_key(SECRET),
        idp_jwks = json!({ "keys": [idp.jwk] }),
    );
    let h = start_with_upstream(config, &upstream.url).await;
    let resource = format!("{}/servers/a/mcp", h.base);
    let token_url = format!("{}/oauth/token", h.base);
    let user = idp.sign(
        "idp-1",
        &json!({ "iss": IDP, "aud": resource, "sub": "alice", "scope": "mcp:read",
                 "exp": now() + 300, "iat": now() }),
    );
    let actor = access_token(
        &post_form(
            &token_url,
            Some(("agent-1", SECRET)),
            &[
                ("grant_type", "client_credentials"),
                ("resource", &resource),
            ],
        )
        .await,
    );
    let delegated = access_token(
        &post_form(
            &token_url,
            Some(("agent-1", SECRET)),
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", &user),
                ("subject_token_type", ACCESS),
                ("actor_token", &actor),
                ("actor_token_type", ACCESS),
                ("resource", &resource),
            ],
        )
        .await,
    );

    let (_nginx, port) = readme_nginx(&nginx, h.addr, &upstream.url).await;
    let through_nginx = |token: String, extra: Option<(&'static str, &'static str)>| {
        let (upstream, url) = (&upstream, format!("http://127.0.0.1:{port}/servers/a/mcp"));
        async move {
            let before = upstream.seen().len();
            let auth = format!("Bearer {token}");
            let mut headers = vec![("authorization", auth.as_str())];
            headers.extend(extra);
            let reply = send(&url, "GET", &headers, None).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            let seen = upstream.seen();
            let request = seen.get(before).expect("the upstream got the request");
            (
                request.header("x-portcullis-subject").map(str::to_owned),
                request.header("x-portcullis-actor").map(str::to_owned),
            )
        }
    };
    let delegated_seen = through_nginx(delegated, None).await;
    let forged_seen = through_nginx(user, Some(("x-portcullis-actor", "agent-1"))).await;
    assert!(
        delegated_seen == (Some("alice".into()), Some("agent-1".into()))
            && forged_seen == (Some("alice".into()), None),
        "through the README's nginx, agent-1's delegated token for alice reaches the upstream \
         as (subject, actor) = {delegated_seen:?}, and alice's own token with a client-sent \
         `X-Portcullis-Actor: agent-1` as {forged_seen:?}"
    );
}

/// Finding 7: README: "Keys, clients and the clients file reload like the rest of the
/// config". A `private_key_jwt` client whose key leaked has it removed from its `jwks_file`
/// (named in the clients file): the gateway never notices (only the clients file is
/// watched), keeps accepting assertions signed with the leaked key and refuses the new
/// one, until something else makes it reload.
#[tokio::test]
async fn a_key_removed_from_a_clients_jwks_file_stops_authenticating() {
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = watched_config(dir.path(), &upstream.url);
    let (leaked, next) = (TestKey::ed25519("k-old"), TestKey::ed25519("k-new"));
    let jwks_file = dir.path().join("keyed.jwks");
    std::fs::write(&jwks_file, json!({ "keys": [leaked.jwk] }).to_string()).expect("write");
    std::fs::write(
        dir.path().join("clients.toml"),
        "[[clients]]\nid = \"keyed\"\njwks_file = \"keyed.jwks\"\nscopes = [\"mcp:read\"]\n",
    )
    .expect("write");
    let served = crate::gateway_harness::serve_watched(config, None).await;
    let token_url = format!("{}/oauth/token", served.base);
    let mut n = 0;
    let mut with = |key: &TestKey, kid: &str| {
        n += 1;
        let jwt = key.sign(
            kid,
            &json!({ "iss": "keyed", "sub": "keyed", "aud": "http://127.0.0.1:9",
                     "exp": now() + 120, "jti": format!("a-{n}") }),
        );
        let token_url = token_url.clone();
        async move {
            post_form(
                &token_url,
                None,
                &[
                    ("grant_type", "client_credentials"),
                    ("resource", WATCHED_RESOURCE),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", &jwt),
                ],
            )
            .await
            .status
        }
    };
    assert_eq!(with(&leaked, "k-old").await, 200, "the first key works");

    // The client's operator replaces the leaked key with a new one.
    replace(&jwks_file, &json!({ "keys": [next.jwk] }).to_string());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut new_key = with(&next, "k-new").await;
    while new_key != 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        new_key = with(&next, "k-new").await;
    }
    let old_key = with(&leaked, "k-old").await;
    // Control: the new key file is good; rewriting the clients file (a comment added) reloads it.
    let clients = std::fs::read_to_string(dir.path().join("clients.toml")).expect("read");
    replace(
        &dir.path().join("clients.toml"),
        &format!("{clients}# touched\n"),
    );
    let mut reloaded = with(&next, "k-new").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while reloaded != 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        reloaded = with(&next, "k-new").await;
    }
    assert_eq!(
        reloaded, 200,
        "the new key works once the clients file is rewritten"
    );
    assert!(
        old_key == 401 && new_key == 200,
        "5 s after the leaked key was removed from `keyed.jwks`, an assertion signed with it \
         gets {old_key} and one signed with the new key {new_key}"
    );
}

/// A hot-reloaded config for route `/mcp` whose signing keys are `keys` (kid, key; the first
/// signs), an `impersonation` client `agent-1` and the IdP `corp` for subject tokens.
fn rotating_config(dir: &Path, upstream: &str, idp: &TestKey, keys: &[(&str, &TestKey)]) -> String {
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:9"

[authorization_server]
subject_token_providers = ["corp"]

[[authorization_server.clients]]
id = "agent-1"
secret_hash = "{hash}"
scopes = ["mcp:read"]
grants = ["token-exchange"]
impersonation = true

[providers.agents]
type = "issued"

[providers.corp]
type = "jwt"
issuer = "{IDP}"
audience = "http://127.0.0.1:9"
jwks = '{idp_jwks}'

[[routes]]
path = "/mcp"
upstream = "{upstream}"
chain = ["agents"]
"#,
        hash = hash_key(SECRET),
        idp_jwks = json!({ "keys": [idp.jwk] }),
    );
    for (kid, key) in keys {
        let file = dir.join(format!("{kid}.pem"));
        std::fs::write(&file, key.pem()).expect("write key");
        text.push_str(&format!(
            "\n[[authorization_server.keys]]\nkid = \"{kid}\"\nalgorithm = \"EdDSA\"\n\
             private_key = \"file://{}\"\n",
            file.display()
        ));
    }
    text
}

/// Finding 8: README: a signing key removed too early "stays published and accepted, from
/// memory, until the last token it signed expires". The memory is read only when a
/// configuration is built: the `issued` validators built then keep the removed key for as
/// long as that configuration serves, however long after its last token expired. A key
/// removed because it leaked keeps verifying whatever its holder forges (any subject, any
/// scope, any `exp`) until some later reload or a restart. Here its tokens live 8 s.
#[tokio::test]
async fn a_removed_signing_key_is_refused_once_its_last_token_has_expired() {
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (idp, k1, k2) = (
        TestKey::ed25519("idp-1"),
        TestKey::ed25519("k1"),
        TestKey::ed25519("k2"),
    );
    let config = dir.path().join("portcullis.toml");
    let write = |keys: &[(&str, &TestKey)]| rotating_config(dir.path(), &upstream.url, &idp, keys);
    std::fs::write(&config, write(&[("k1", &k1)])).expect("write config");
    let served = crate::gateway_harness::serve_watched(config.clone(), None).await;
    let (token_url, mcp_url) = (
        format!("{}/oauth/token", served.base),
        format!("{}/mcp", served.base),
    );
    // k1's only token: an exchange of a user token that expires in 8 s.
    let exchange = || {
        let token_url = token_url.clone();
        let user = idp.sign(
            "idp-1",
            &json!({ "iss": IDP, "aud": "http://127.0.0.1:9", "sub": "alice",
                     "scope": "mcp:read", "exp": now() + 8, "iat": now() }),
        );
        async move {
            post_form(
                &token_url,
                Some(("agent-1", SECRET)),
                &[
                    ("grant_type", EXCHANGE),
                    ("subject_token", &user),
                    ("subject_token_type", ACCESS),
                    ("resource", WATCHED_RESOURCE),
                ],
            )
            .await
        }
    };
    let last = access_token(&exchange().await);
    let until = now() + 8;
    // k1 leaked: the operator replaces it with k2 at once.
    replace(&config, &write(&[("k2", &k2)]));
    eventually("a token signed by k2", || async {
        let token = access_token(&exchange().await);
        let header = token.split('.').next().unwrap_or_default().to_owned();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap_or_default())
                .unwrap_or(Value::Null);
        header["kid"] == "k2"
    })
    .await;
    let bound = now() + 8;
    // What the holder of k1 makes: a day-long token with a subject of its choosing.
    let forged = || {
        k1.sign(
            "k1",
            &json!({ "iss": "http://127.0.0.1:9", "aud": WATCHED_RESOURCE, "sub": "root",
                     "client_id": "agent-1", "scope": "mcp:read", "jti": format!("f-{}", now()),
                     "iat": now(), "exp": now() + 86_400 }),
        )
    };
    assert!(
        now() < until,
        "the reload took longer than k1's last token lives"
    );
    assert_eq!(
        ping(&mcp_url, &last).await.status,
        200,
        "k1 is kept while its last token lives (the README's promise)"
    );
    // Every k1 token was issued before k2 took over, so all have expired by then.
    tokio::time::sleep(Duration::from_secs(bound + 1 - now())).await;
    assert_eq!(
        ping(&mcp_url, &last).await.status,
        401,
        "the last token expired"
    );
    let reply = ping(&mcp_url, &forged()).await;
    assert_eq!(
        reply.status, 401,
        "k1 was removed and its last token expired, yet a token forged with k1 (sub `root`, a \
         day long) is accepted: {reply:?}"
    );
}
