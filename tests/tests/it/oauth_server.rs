//! The authorization server over real HTTP: a gateway on port 0 with
//! `[authorization_server]`, in front of the demo MCP server, its tokens checked by the
//! `issued` provider on two routes. Each test speaks the wire protocol itself (form bodies,
//! Basic auth, signed assertions), so every refusal the RFCs define is asserted exactly;
//! the off-the-shelf clients are driven in `oauth_clients`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use portcullis::engine::api_key::hash_key;
use serde_json::{Value, json};

use portcullis_tests::oauth::{TestKey, claims, now};

use crate::gateway_harness::{Harness, Reply, start};
use crate::oauth_support::replace;

const SECRET: &str = "pcs_test-secret-of-agent-one-000000000000";
const OTHER_SECRET: &str = "pcs_test-secret-of-agent-two-000000000000";
/// A request the demo server answers without a session.
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"oauth-test","version":"0"}}}"#;
const IDP: &str = "https://idp.test";
const IDP_AUDIENCE: &str = "https://agents.test";

/// A gateway whose authorization server signs with a fresh key, and its keys.
struct Server {
    harness: Harness,
    signing: TestKey,
    agent_key: TestKey,
    idp: TestKey,
    _dir: tempfile::TempDir,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let signing = TestKey::ed25519("as-1");
    let key_file = dir.path().join("as-1.pem");
    std::fs::write(&key_file, signing.pem()).expect("write key");
    let agent_key = TestKey::ed25519("agent-key");
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
id = "agent-1"
secret_hash = "{hash}"
scopes = ["mcp:read", "admin"]
resources = ["/servers/a/mcp"]
grants = ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]
introspection = true

[[authorization_server.clients]]
id = "agent-2"
secret_hash = "{other}"
scopes = ["mcp:read"]
grants = ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]

[[authorization_server.clients]]
id = "keyed"
jwks = '{jwks}'
scopes = ["mcp:read"]

[providers.agents]
type = "issued"

[providers.corp]
type = "jwt"
issuer = "{IDP}"
audience = "{IDP_AUDIENCE}"
jwks = '{idp_jwks}'

[[routes]]
path = "/servers/a/mcp"
upstream = "{{upstream}}"
chain = ["agents"]

[[routes]]
path = "/servers/b/mcp"
upstream = "{{upstream}}"
chain = ["agents"]

[[rules]]
path = "/servers"
scopes = ["mcp:read"]
"#,
        key = key_file.display(),
        hash = hash_key(SECRET),
        other = hash_key(OTHER_SECRET),
        jwks = json!({ "keys": [agent_key.jwk] }),
        idp_jwks = json!({ "keys": [idp.jwk] }),
    );
    Server {
        harness: start(config).await,
        signing,
        agent_key,
        idp,
        _dir: dir,
    }
}

impl Server {
    fn resource(&self, route: &str) -> String {
        format!("{}{route}", self.harness.base)
    }

    /// POSTs `form` to `path` with `client:secret` as HTTP Basic when given.
    async fn post(&self, path: &str, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> Reply {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let auth = basic
            .map(|(id, secret)| format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))));
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth));
        }
        self.harness
            .request("POST", path, &headers, Some(&body))
            .await
    }

    async fn token(&self, form: &[(&str, &str)]) -> Reply {
        self.post("/oauth/token", Some(("agent-1", SECRET)), form)
            .await
    }

    async fn client_token(&self, resource: &str) -> String {
        let resource = self.resource(resource);
        let reply = self
            .token(&[
                ("grant_type", "client_credentials"),
                ("resource", &resource),
            ])
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        access_token(&reply)
    }

    async fn initialize(&self, route: &str, token: &str) -> Reply {
        let auth = format!("Bearer {token}");
        self.harness
            .request(
                "POST",
                route,
                &[
                    ("content-type", "application/json"),
                    ("accept", "application/json, text/event-stream"),
                    ("authorization", &auth),
                ],
                Some(INITIALIZE),
            )
            .await
    }

    /// An RFC 8693 exchange by agent-1 for /servers/a/mcp.
    async fn exchange(&self, subject: &str, actor: Option<&str>) -> Reply {
        const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
        let resource = self.resource("/servers/a/mcp");
        let mut form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject),
            ("subject_token_type", ACCESS),
            ("resource", &resource),
        ];
        if let Some(actor) = actor {
            form.extend([("actor_token", actor), ("actor_token_type", ACCESS)]);
        }
        self.token(&form).await
    }

    fn user_token(&self, sub: &str, scope: &str, lifetime: u64) -> String {
        self.idp.sign("idp-1",
            &json!({ "iss": IDP, "aud": [IDP_AUDIENCE, &self.harness.base], "sub": sub, "scope": scope,
                     "exp": now() + lifetime, "iat": now() }),
        )
    }
}

fn access_token(reply: &Reply) -> String {
    let body: Value = serde_json::from_str(&reply.body).expect("json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

fn error(reply: &Reply) -> String {
    let body: Value = serde_json::from_str(&reply.body).expect("an RFC 6749 error body");
    body["error"].as_str().expect("error").to_owned()
}

#[tokio::test]
async fn discovery_documents_name_the_server_and_its_keys() {
    let s = server().await;
    let base = &s.harness.base;
    let meta = s
        .harness
        .request("GET", "/.well-known/oauth-authorization-server", &[], None)
        .await;
    assert_eq!(meta.status, 200);
    let meta: Value = serde_json::from_str(&meta.body).expect("json");
    assert_eq!(meta["issuer"], json!(base));
    assert_eq!(meta["token_endpoint"], json!(format!("{base}/oauth/token")));
    assert_eq!(
        meta["jwks_uri"],
        json!(format!("{base}/.well-known/jwks.json"))
    );
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .expect("grants")
            .contains(&json!("client_credentials"))
    );
    let jwks = s
        .harness
        .request("GET", "/.well-known/jwks.json", &[], None)
        .await;
    let jwks: Value = serde_json::from_str(&jwks.body).expect("json");
    assert_eq!(jwks["keys"][0]["kid"], "as-1");
    assert_eq!(jwks["keys"][0]["x"], s.signing.jwk["x"]);
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "no private part is published"
    );
    let prm = s
        .harness
        .request(
            "GET",
            "/.well-known/oauth-protected-resource/servers/a/mcp",
            &[],
            None,
        )
        .await;
    let prm: Value = serde_json::from_str(&prm.body).expect("json");
    assert_eq!(prm["authorization_servers"], json!([base]));
}

#[tokio::test]
async fn client_credentials_token_works_at_its_route_only() {
    let s = server().await;
    let reply = s
        .token(&[
            ("grant_type", "client_credentials"),
            ("resource", &s.resource("/servers/a/mcp")),
        ])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body: Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["scope"], "mcp:read admin");
    let token = access_token(&reply);
    let c = claims(&token);
    assert_eq!(c["sub"], "agent-1");
    assert_eq!(c["aud"], json!(s.resource("/servers/a/mcp")));
    assert_eq!(c["client_id"], "agent-1");
    assert_eq!(s.initialize("/servers/a/mcp", &token).await.status, 200);
    let elsewhere = s.initialize("/servers/b/mcp", &token).await;
    assert_eq!(
        elsewhere.status, 401,
        "a token for /servers/a is refused at /servers/b"
    );
    assert!(
        elsewhere
            .header("www-authenticate")
            .expect("challenge")
            .contains("invalid_token")
    );
}

#[tokio::test]
async fn the_sibling_endpoint_of_a_route_issues_for_that_route() {
    let s = server().await;
    // client_secret_post, no `resource`, no `scope`: conduit's request.
    let reply = s
        .post(
            "/servers/b/oauth/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "agent-2"),
                ("client_secret", OTHER_SECRET),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = access_token(&reply);
    assert_eq!(claims(&token)["aud"], json!(s.resource("/servers/b/mcp")));
    assert_eq!(s.initialize("/servers/b/mcp", &token).await.status, 200);
    // agent-1 may use /servers/a only: its sibling endpoint for /servers/b refuses.
    let refused = s
        .post(
            "/servers/b/oauth/token",
            Some(("agent-1", SECRET)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(
        (refused.status, error(&refused).as_str()),
        (400, "invalid_target")
    );
}

#[tokio::test]
async fn bad_client_credentials_are_401_and_read_alike() {
    let s = server().await;
    let form = [("grant_type", "client_credentials")];
    let wrong = s
        .post("/oauth/token", Some(("agent-1", "nope")), &form)
        .await;
    let unknown = s.post("/oauth/token", Some(("ghost", "nope")), &form).await;
    for reply in [&wrong, &unknown] {
        assert_eq!(reply.status, 401);
        assert_eq!(error(reply), "invalid_client");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Basic realm=\"portcullis\"")
        );
    }
    assert_eq!(
        wrong.body, unknown.body,
        "an unknown client reads like a wrong secret"
    );
    let none = s.post("/oauth/token", None, &form).await;
    assert_eq!(
        (none.status, error(&none).as_str()),
        (401, "invalid_client")
    );
}

#[tokio::test]
async fn failed_authentications_are_rate_limited() {
    let s = server().await;
    let form = [("grant_type", "client_credentials")];
    for _ in 0..10 {
        let reply = s
            .post("/oauth/token", Some(("agent-2", "guess")), &form)
            .await;
        assert_eq!(reply.status, 401);
    }
    let limited = s
        .post("/oauth/token", Some(("agent-2", OTHER_SECRET)), &form)
        .await;
    assert_eq!(
        limited.status, 429,
        "even the right secret waits out the window"
    );
    let wait: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("secs");
    assert!((1..=60).contains(&wait));
}

#[tokio::test]
async fn scope_and_resource_escalation_are_refused() {
    let s = server().await;
    let a = s.resource("/servers/a/mcp");
    let narrowed = s
        .token(&[
            ("grant_type", "client_credentials"),
            ("resource", &a),
            ("scope", "mcp:read root"),
        ])
        .await;
    assert_eq!(narrowed.status, 200);
    assert_eq!(claims(&access_token(&narrowed))["scope"], "mcp:read");
    let none = s
        .token(&[
            ("grant_type", "client_credentials"),
            ("resource", &a),
            ("scope", "root"),
        ])
        .await;
    assert_eq!((none.status, error(&none).as_str()), (400, "invalid_scope"));
    let other = s
        .token(&[
            ("grant_type", "client_credentials"),
            ("resource", &s.resource("/servers/b/mcp")),
        ])
        .await;
    assert_eq!(
        (other.status, error(&other).as_str()),
        (400, "invalid_target")
    );
    let foreign = s
        .token(&[
            ("grant_type", "client_credentials"),
            ("resource", "https://evil.example/mcp"),
        ])
        .await;
    assert_eq!(
        (foreign.status, error(&foreign).as_str()),
        (400, "invalid_target")
    );
    let twice = s
        .token(&[
            ("grant_type", "client_credentials"),
            ("resource", &a),
            ("resource", &a),
        ])
        .await;
    assert_eq!(
        (twice.status, error(&twice).as_str()),
        (400, "invalid_request")
    );
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_refused() {
    let s = server().await;
    let token = s.client_token("/servers/a/mcp").await;
    assert_eq!(s.initialize("/servers/a/mcp", &token).await.status, 200);
    // Another client cannot revoke it (RFC 7009 answers 200 all the same).
    let foreign = s
        .post(
            "/oauth/revoke",
            Some(("agent-2", OTHER_SECRET)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(foreign.status, 200);
    assert_eq!(s.initialize("/servers/a/mcp", &token).await.status, 200);
    let revoked = s
        .post(
            "/oauth/revoke",
            Some(("agent-1", SECRET)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(s.initialize("/servers/a/mcp", &token).await.status, 401);
    let introspected = s
        .post(
            "/oauth/introspect",
            Some(("agent-1", SECRET)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(introspected.body, r#"{"active":false}"#);
    // A token signed with the server's own key but expired.
    let expired = s.signing.sign(
        "as-1",
        &json!({ "iss": s.harness.base, "sub": "agent-1", "aud": s.resource("/servers/a/mcp"),
                 "exp": now() - 5, "iat": now() - 700, "jti": "old", "client_id": "agent-1",
                 "scope": "mcp:read" }),
    );
    assert_eq!(s.initialize("/servers/a/mcp", &expired).await.status, 401);
}

#[tokio::test]
async fn introspection_reports_active_tokens_to_allowed_clients() {
    let s = server().await;
    let token = s.client_token("/servers/a/mcp").await;
    let reply = s
        .post(
            "/oauth/introspect",
            Some(("agent-1", SECRET)),
            &[("token", &token)],
        )
        .await;
    let body: Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(body["active"], true);
    assert_eq!(body["client_id"], "agent-1");
    assert_eq!(body["scope"], "mcp:read admin");
    let denied = s
        .post(
            "/oauth/introspect",
            Some(("agent-2", OTHER_SECRET)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(
        (denied.status, error(&denied).as_str()),
        (400, "unauthorized_client")
    );
}

#[tokio::test]
async fn private_key_jwt_assertions_are_single_use() {
    let s = server().await;
    let assertion = s.agent_key.sign(
        "agent-key",
        &json!({ "iss": "keyed", "sub": "keyed", "aud": s.harness.base, "exp": now() + 60,
                 "jti": "assertion-1" }),
    );
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", &s.resource("/servers/b/mcp")),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", &assertion),
    ];
    let first = s.post("/oauth/token", None, &form).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(claims(&access_token(&first))["sub"], "keyed");
    let replayed = s.post("/oauth/token", None, &form).await;
    assert_eq!(
        (replayed.status, error(&replayed).as_str()),
        (401, "invalid_client")
    );
    // Signed by another key (the IdP's), claiming to be `keyed`.
    let forged = s.idp.sign(
        "agent-key",
        &json!({ "iss": "keyed", "sub": "keyed", "aud": s.harness.base, "exp": now() + 60,
                 "jti": "assertion-2" }),
    );
    let mut form = form;
    form[3].1 = &forged;
    let reply = s.post("/oauth/token", None, &form).await;
    assert_eq!(
        (reply.status, error(&reply).as_str()),
        (401, "invalid_client")
    );
    // The secret-holding client cannot switch to an assertion, nor the keyed one to a secret.
    let secret = s
        .post("/oauth/token", Some(("keyed", "anything")), &form[..2])
        .await;
    assert_eq!(secret.status, 401);
}

#[tokio::test]
async fn token_exchange_delegates_to_the_client_as_actor() {
    let s = server().await;
    let actor = s.client_token("/servers/a/mcp").await;
    let user = s.user_token("alice", "mcp:read", 300);
    let reply = s.exchange(&user, Some(&actor)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body: Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["scope"], "mcp:read", "only what the user holds");
    let token = access_token(&reply);
    let c = claims(&token);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["act"], json!({ "sub": "agent-1" }));
    assert!(
        c["exp"].as_u64().expect("exp") <= now() + 300,
        "never outlives the user's token"
    );
    assert_eq!(s.initialize("/servers/a/mcp", &token).await.status, 200);

    // Without an actor: impersonation, not allowed for agent-1.
    let alone = s.exchange(&user, None).await;
    assert_eq!(
        (alone.status, error(&alone).as_str()),
        (400, "unauthorized_client")
    );
    // Another client's token as actor.
    let other = s
        .post(
            "/servers/a/oauth/token",
            Some(("agent-2", OTHER_SECRET)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let other = access_token(&other);
    let stolen = s.exchange(&user, Some(&other)).await;
    assert_eq!(
        (stolen.status, error(&stolen).as_str()),
        (400, "unauthorized_client")
    );
    // A subject token from nobody the config trusts, or forged.
    let forged = s.agent_key.sign(
        "idp-1",
        &json!({ "iss": IDP, "aud": IDP_AUDIENCE, "sub": "root", "scope": "mcp:read admin",
                 "exp": now() + 300 }),
    );
    let refused = s.exchange(&forged, Some(&actor)).await;
    assert_eq!(
        (refused.status, error(&refused).as_str()),
        (400, "invalid_grant")
    );
    let own = s.exchange(&actor, Some(&actor)).await;
    assert_eq!((own.status, error(&own).as_str()), (400, "invalid_grant"));
}

#[tokio::test]
async fn endpoints_refuse_what_rfc_6749_refuses() {
    let s = server().await;
    let get = s.harness.request("GET", "/oauth/token", &[], None).await;
    assert_eq!(get.status, 405);
    let json_body = s
        .harness
        .request(
            "POST",
            "/oauth/token",
            &[("content-type", "application/json")],
            Some("{}"),
        )
        .await;
    assert_eq!(
        (json_body.status, error(&json_body).as_str()),
        (400, "invalid_request")
    );
    let grant = s.token(&[("grant_type", "password")]).await;
    assert_eq!(
        (grant.status, error(&grant).as_str()),
        (400, "unsupported_grant_type")
    );
    let both = s
        .post(
            "/oauth/token",
            Some(("agent-1", SECRET)),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "agent-1"),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!(
        (both.status, error(&both).as_str()),
        (400, "invalid_request")
    );
}

/// A config file with an authorization server whose clients live in `clients.toml`, in
/// front of the demo upstream, with the signing keys given as `(kid, key)`.
fn watched_config(dir: &std::path::Path, upstream: &str, keys: &[(&str, &TestKey)]) -> String {
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:9"

[authorization_server]
clients_file = "clients.toml"

[providers.agents]
type = "issued"

[[routes]]
path = "/mcp"
upstream = "{upstream}"
chain = ["agents"]
"#
    );
    for (kid, key) in keys {
        let file = dir.join(format!("{kid}.pem"));
        std::fs::write(&file, key.pem()).expect("write key");
        text.push_str(&format!(
            "\n[[authorization_server.keys]]\nkid = \"{kid}\"\nalgorithm = \"EdDSA\"\nprivate_key = \"file://{kid}.pem\"\n"
        ));
    }
    text
}

fn clients_file(revoked: bool) -> String {
    format!(
        "[[clients]]\nid = \"agent-1\"\nsecret_hash = \"{}\"\nscopes = [\"mcp:read\"]\nrevoked = {revoked}\n\n\
         [[clients]]\nid = \"agent-2\"\nsecret_hash = \"{}\"\nscopes = [\"mcp:read\"]\n",
        hash_key(SECRET),
        hash_key(OTHER_SECRET)
    )
}

async fn watched_token(base: &str, id: &str, secret: &str) -> Reply {
    let basic = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
    crate::gateway_harness::send(
        &format!("{base}/oauth/token"),
        "POST",
        &[
            ("authorization", &basic),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Some("grant_type=client_credentials"),
    )
    .await
}

async fn watched_call(base: &str, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    crate::gateway_harness::send(
        &format!("{base}/mcp"),
        "POST",
        &[
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("authorization", &auth),
        ],
        Some(INITIALIZE),
    )
    .await
    .status
}

#[tokio::test]
async fn clients_and_keys_reload_live_and_retired_keys_keep_their_tokens() {
    use portcullis_tests::eventually::eventually;
    let upstream = portcullis_cli::demo::upstream::spawn_demo_upstream()
        .await
        .expect("demo upstream");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("portcullis.toml");
    let clients = dir.path().join("clients.toml");
    let k1 = TestKey::ed25519("k1");
    let k2 = TestKey::ed25519("k2");
    std::fs::write(&clients, clients_file(false)).expect("write clients");
    std::fs::write(
        &config,
        watched_config(dir.path(), &upstream.url, &[("k1", &k1)]),
    )
    .expect("write config");
    let served = crate::gateway_harness::serve_watched(config.clone(), None).await;
    let base = served.base.clone();

    let reply = watched_token(&base, "agent-1", SECRET).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let old = access_token(&reply);
    assert_eq!(watched_call(&base, &old).await, 200);

    // Rotation done too early: k2 replaces k1 at once. k1 stays published and accepted
    // until the tokens it signed expire.
    replace(
        &config,
        &watched_config(dir.path(), &upstream.url, &[("k2", &k2)]),
    );
    let fresh = eventually("a token signed by k2", || async {
        let reply = watched_token(&base, "agent-2", OTHER_SECRET).await;
        let token = access_token(&reply);
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().expect("header"))
                .expect("b64"),
        )
        .expect("json");
        if header["kid"] == "k2" {
            Ok(token)
        } else {
            Err(header.to_string())
        }
    })
    .await;
    assert_eq!(watched_call(&base, &fresh).await, 200);
    assert_eq!(
        watched_call(&base, &old).await,
        200,
        "k1's token outlives k1's removal"
    );
    let jwks =
        crate::gateway_harness::send(&format!("{base}/.well-known/jwks.json"), "GET", &[], None)
            .await;
    let kids: Vec<Value> = serde_json::from_str::<Value>(&jwks.body).expect("json")["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert_eq!(kids, [json!("k2"), json!("k1")]);

    // Revoking the client in the clients file: its tokens and its secret stop working.
    replace(&clients, &clients_file(true));
    eventually("agent-1's token refused", || async {
        watched_call(&base, &old).await == 401
    })
    .await;
    assert_eq!(watched_token(&base, "agent-1", SECRET).await.status, 401);
    assert_eq!(
        watched_call(&base, &fresh).await,
        200,
        "agent-2 is unaffected"
    );

    // A broken clients file is refused; the last good server keeps issuing.
    replace(&clients, "[[clients]]\nid = \"agent-2\"\n");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let still = watched_token(&base, "agent-2", OTHER_SECRET).await;
    assert_eq!(still.status, 200, "{}", still.body);
}

#[tokio::test]
async fn unusable_clients_and_keys_are_refused_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::ed25519("k1");
    let key_file = dir.path().join("k1.pem");
    std::fs::write(&key_file, key.pem()).expect("write");
    std::fs::write(dir.path().join("not-a-key.pem"), "hello").expect("write");
    let case = |keys: &str, client: &str| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:9"

[authorization_server]
{keys}

[[authorization_server.clients]]
{client}

[[routes]]
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"
chain = ["agents"]

[providers.agents]
type = "issued"
"#
        )
    };
    let good_key = format!(
        "[[authorization_server.keys]]\nkid = \"k1\"\nalgorithm = \"EdDSA\"\nprivate_key = \"file://{}\"",
        key_file.display()
    );
    let good_client = format!(
        "id = \"a\"\nsecret_hash = \"{}\"\nscopes = [\"mcp:read\"]",
        hash_key(SECRET)
    );
    let cases = [
        (
            good_key.replace("k1.pem", "not-a-key.pem"),
            good_client.clone(),
            "is not a PKCS#8 PEM private key",
        ),
        (
            good_key.replace("EdDSA", "ES256"),
            good_client.clone(),
            "is not a P-256 key",
        ),
        (
            good_key.clone(),
            "id = \"a\"\nscopes = [\"x\"]".to_owned(),
            "exactly one of a secret",
        ),
        (
            good_key.clone(),
            good_client.replace("mcp:read", "*"),
            "`*` is never issued",
        ),
        (
            good_key.clone(),
            format!("{good_client}\nresources = [\"/elsewhere\"]"),
            "`/elsewhere` is not a route path",
        ),
        (
            good_key.clone(),
            format!("{good_client}\ntoken_lifetime_secs = 5000"),
            "5000 is outside 120..=3600 seconds",
        ),
        (
            good_key.clone(),
            format!("{good_client}\ngrants = [\"password\"]"),
            "unknown grant \"password\"",
        ),
        (
            good_key.clone(),
            good_client.replace("id = \"a\"", "id = \"a b\""),
            "is not a plain label",
        ),
        (
            good_key.clone(),
            format!("{good_client}\njwks = '{}'", json!({ "keys": [key.jwk] })),
            "exactly one of a secret",
        ),
        (
            good_key.clone(),
            "id = \"a\"\njwks = '{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}'".to_owned(),
            "key 0",
        ),
    ];
    for (keys, client, expected) in cases {
        let text = case(&keys, &client);
        let config = portcullis::config::load_str(&text, "<case>", dir.path())
            .unwrap_or_else(|e| panic!("stage one accepts it: {e}\n{text}"));
        let error = portcullis::config::assemble(&config, None, &Default::default())
            .await
            .expect_err(expected)
            .to_string();
        assert!(
            error.contains(expected),
            "expected `{expected}` in: {error}"
        );
        assert!(
            error.contains("authorization_server"),
            "names the key: {error}"
        );
    }
}
