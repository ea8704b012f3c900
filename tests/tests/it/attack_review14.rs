//! Review 14: an attack on the authorization server (`[authorization_server]`, the `issued`
//! provider and their dispatch), over real HTTP like `oauth_server`.
//!
//! Every test asserts the secure behaviour (what the README promises, or what the RFCs and
//! the gateway's own rules for bearer tokens imply); the report lists which fail today.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis::engine::api_key::hash_key;
use portcullis_tests::upstream::RecordingUpstream;
use serde_json::{Value, json};

use portcullis_tests::oauth::{TestKey, claims, now};

use crate::gateway_harness::{Harness, Reply, start, start_with_upstream};
use crate::oauth_support::{body, form};

const SECRET: &str = "pcs_review14-secret-of-agent-one-0000000000";
const IDP: &str = "https://idp.test";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"review14","version":"0"}}}"#;

/// A gateway with an authorization server and two MCP routes: `/servers/a/mcp` takes its
/// tokens and the IdP's (`corp`, whose users' tokens are minted for that route and are also
/// the subject tokens of delegation), `/servers/b/mcp` only its own. Clients: `agent-1`
/// (secret; every route; may exchange), `keyed` and `keyed-2` (`private_key_jwt`).
struct Server {
    harness: Harness,
    idp: TestKey,
    keyed: TestKey,
    keyed2: TestKey,
    _dir: tempfile::TempDir,
}

async fn server() -> Server {
    server_with(None).await
}

/// [`server`], in front of `upstream` instead of the demo MCP server.
async fn server_with(upstream: Option<&str>) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let signing = TestKey::ed25519("as-1");
    let key_file = dir.path().join("as-1.pem");
    std::fs::write(&key_file, signing.pem()).expect("write key");
    let idp = TestKey::ed25519("idp-1");
    let keyed = TestKey::ed25519("keyed-key");
    let keyed2 = TestKey::ed25519("keyed-2-key");
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
grants = ["client_credentials", "{EXCHANGE}"]

[[authorization_server.clients]]
id = "keyed"
jwks = '{keyed_jwks}'
scopes = ["mcp:read"]

[[authorization_server.clients]]
id = "keyed-2"
jwks = '{keyed2_jwks}'
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
        keyed_jwks = json!({ "keys": [keyed.jwk] }),
        keyed2_jwks = json!({ "keys": [keyed2.jwk] }),
        idp_jwks = json!({ "keys": [idp.jwk] }),
    );
    Server {
        harness: match upstream {
            Some(url) => start_with_upstream(config, url).await,
            None => start(config).await,
        },
        idp,
        keyed,
        keyed2,
        _dir: dir,
    }
}

impl Server {
    fn resource(&self, route: &str) -> String {
        format!("{}{route}", self.harness.base)
    }

    async fn post(&self, path: &str, basic: Option<(&str, &str)>, pairs: &[(&str, &str)]) -> Reply {
        let auth = basic
            .map(|(id, secret)| format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))));
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth));
        }
        self.harness
            .request("POST", path, &headers, Some(&form(pairs)))
            .await
    }

    /// agent-1's own token for `route` (the actor token of a delegation).
    async fn actor_token(&self, route: &str) -> String {
        let resource = self.resource(route);
        let reply = self
            .post(
                "/oauth/token",
                Some(("agent-1", SECRET)),
                &[
                    ("grant_type", "client_credentials"),
                    ("resource", &resource),
                ],
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        body(&reply)["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    /// agent-1 exchanges `subject` (with its own actor token) for a token for `route`.
    async fn exchange(&self, subject: &str, route: &str) -> Reply {
        let actor = self.actor_token(route).await;
        let resource = self.resource(route);
        self.post(
            "/oauth/token",
            Some(("agent-1", SECRET)),
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", subject),
                ("subject_token_type", ACCESS),
                ("actor_token", &actor),
                ("actor_token_type", ACCESS),
                ("resource", &resource),
            ],
        )
        .await
    }

    /// A user's token from the IdP.
    fn user_token(&self, sub: &str, scope: &str, aud: Value) -> String {
        self.idp.sign(
            "idp-1",
            &json!({ "iss": IDP, "aud": aud, "sub": sub, "scope": scope,
                     "exp": now() + 300, "iat": now() }),
        )
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
}

/// A `private_key_jwt` assertion of `client` signed with `key`.
fn assertion(key: &TestKey, kid: &str, client: &str, aud: &str, jti: &str) -> String {
    key.sign(
        kid,
        &json!({ "iss": client, "sub": client, "aud": aud, "exp": now() + 300, "jti": jti }),
    )
}

/// `keyed-2` asks for a token for `/servers/a/mcp` with a fresh assertion (id `jti`).
async fn keyed2_token(s: &Server, jti: &str) -> Reply {
    let jwt = assertion(&s.keyed2, "keyed-2-key", "keyed-2", &s.harness.base, jti);
    let resource = s.resource("/servers/a/mcp");
    s.post(
        "/oauth/token",
        None,
        &[
            ("grant_type", "client_credentials"),
            ("resource", &resource),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &jwt),
        ],
    )
    .await
}

/// Finding 1: The gateway refuses a bearer token whose scope is `*` ("one token minted with
/// `scope: "*"` by any trusted issuer would otherwise pass every rule"), but token exchange
/// reads `*` among the user's scopes as "the user holds every scope": the delegated token
/// gets every scope of the client, `admin` included, which the user never held.
#[tokio::test]
async fn a_star_scope_in_the_subject_token_grants_no_scope_the_user_lacks() {
    let s = server().await;
    let user = s.user_token("alice", "mcp:read *", json!(s.resource("/servers/a/mcp")));
    let direct = s.initialize("/servers/a/mcp", &user).await;
    assert_eq!(
        direct.status, 401,
        "the gateway itself refuses a token with `*`: {direct:?}"
    );
    let reply = s.exchange(&user, "/servers/a/mcp").await;
    let scope = body(&reply)["scope"].as_str().unwrap_or("").to_owned();
    assert!(
        reply.status != 200 || !scope.split(' ').any(|s| s == "admin"),
        "alice's token (refused at every route for its `*`) was exchanged for a delegated token \
         with scope `{scope}`: `*` counted as every scope, so the intersection \"what the client \
         may have and the user holds\" gave `admin`, which alice does not hold ({})",
        reply.body
    );
}

/// Finding 2: A user's token minted for `/servers/a/mcp` only (refused at `/servers/b/mcp`) is
/// exchanged by an agent for a token acting as that user at `/servers/b/mcp`: delegation
/// drops the audience restriction of the user's token, so a token for one route becomes a
/// token for another (RFC 8707: a token for one resource must not be usable at another).
#[tokio::test]
async fn a_user_token_for_one_route_is_not_exchanged_for_another_route() {
    let s = server().await;
    let user = s.user_token("alice", "mcp:read", json!(s.resource("/servers/a/mcp")));
    assert_eq!(s.initialize("/servers/a/mcp", &user).await.status, 200);
    let at_b = s.initialize("/servers/b/mcp", &user).await;
    assert_eq!(
        at_b.status, 401,
        "alice's token is for /servers/a only: {at_b:?}"
    );
    let reply = s.exchange(&user, "/servers/b/mcp").await;
    let works_at_b = if reply.status == 200 {
        let token = body(&reply)["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let c = claims(&token);
        format!(
            "sub={} aud={} act={}; initialize at /servers/b/mcp -> {}",
            c["sub"],
            c["aud"],
            c["act"],
            s.initialize("/servers/b/mcp", &token).await.status
        )
    } else {
        String::new()
    };
    assert_ne!(
        reply.status, 200,
        "alice's token for /servers/a/mcp was exchanged for a token acting as alice at \
         /servers/b/mcp: {works_at_b}"
    );
}

/// Finding 3: One client spends the whole table of spent assertion ids (100 000 entries, shared by
/// every client) with its own valid assertions, at the revocation endpoint (no token is
/// even signed). While that table is full, every `private_key_jwt` client is refused with
/// `invalid_client` (and the refusals count toward its lockout): one keyed client locks all
/// the others out for the assertions' lifetime, and can do so again and again.
#[tokio::test]
async fn one_client_cannot_fill_the_spent_assertion_table_for_every_other_client() {
    const FLOOD: usize = 100_000;
    const WORKERS: usize = 32;
    let s = server().await;
    let base = s.harness.base.clone();
    let key = Arc::new(TestKey {
        pkcs8: s.keyed.pkcs8.clone(),
        jwk: s.keyed.jwk.clone(),
    });
    let before = keyed2_token(&s, "control-1").await;
    assert_eq!(before.status, 200, "keyed-2 works: {}", before.body);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let (client, key, base) = (client.clone(), Arc::clone(&key), base.clone());
        workers.spawn(async move {
            let mut accepted = 0usize;
            for i in (w..FLOOD).step_by(WORKERS) {
                let jwt = assertion(&key, "keyed-key", "keyed", &base, &format!("flood-{i}"));
                let request = http::Request::post(format!("{base}/oauth/revoke"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(form(&[
                        ("token", "not-a-token"),
                        ("client_assertion_type", JWT_BEARER),
                        ("client_assertion", &jwt),
                    ]))))
                    .expect("request");
                let response = client.request(request).await.expect("sent");
                let status = response.status();
                let _ = response.into_body().collect().await;
                accepted += usize::from(status == 200);
            }
            accepted
        });
    }
    let mut accepted = 0;
    while let Some(done) = workers.join_next().await {
        accepted += done.expect("worker");
    }

    let reply = keyed2_token(&s, "victim-1").await;
    assert_eq!(
        reply.status, 200,
        "keyed-2's fresh, valid assertion is refused after `keyed` spent {accepted} of its own \
         (one table of 100 000 spent ids for every client together): {}",
        reply.body
    );
}

/// Finding 4: The loader takes a client JWKS whose Ed25519 key is the identity point (`x` =
/// `AQAA…A`, a small-order key). Its "signature" `R` = identity, `S` = 0 verifies for every
/// message, so anyone authenticates as that client without any private key.
#[tokio::test]
async fn a_degenerate_client_key_does_not_let_anyone_authenticate_as_the_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signing = TestKey::ed25519("as-1");
    let key_file = dir.path().join("as-1.pem");
    std::fs::write(&key_file, signing.pem()).expect("write key");
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak_jwks = json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "kid": "weak-key",
                                      "x": URL_SAFE_NO_PAD.encode(identity) }] });
    let config = format!(
        r#"
[server]
listen = "{{listen}}"
public_url = "{{gateway}}"

[authorization_server]

[[authorization_server.keys]]
kid = "as-1"
algorithm = "EdDSA"
private_key = "file://{key}"

[[authorization_server.clients]]
id = "weak"
jwks = '{weak_jwks}'
scopes = ["mcp:read"]

[providers.agents]
type = "issued"

[[routes]]
path = "/servers/a/mcp"
upstream = "{{upstream}}"
chain = ["agents"]
"#,
        key = key_file.display(),
    );
    let started = tokio::spawn(async move { start(config).await }).await;
    let harness = match started {
        Ok(harness) => harness,
        // Refusing the key at load is the secure outcome.
        Err(e) if e.is_panic() => return,
        Err(e) => panic!("{e}"),
    };
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"weak-key"}"#);
    let payload = URL_SAFE_NO_PAD.encode(
        json!({ "iss": "weak", "sub": "weak", "aud": harness.base, "exp": now() + 60,
                "jti": "forged-1" })
        .to_string(),
    );
    let signature = URL_SAFE_NO_PAD.encode(
        identity
            .iter()
            .chain(&[0u8; 32])
            .copied()
            .collect::<Vec<_>>(),
    );
    let forged = format!("{header}.{payload}.{signature}");
    let resource = format!("{}/servers/a/mcp", harness.base);
    let reply = harness
        .request(
            "POST",
            "/oauth/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(&form(&[
                ("grant_type", "client_credentials"),
                ("resource", &resource),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &forged),
            ])),
        )
        .await;
    assert_eq!(
        reply.status, 401,
        "an assertion nobody signed (R = identity, S = 0) authenticated as `weak`: {}",
        reply.body
    );
}

/// Finding 5: "No route may take these paths": with a public catch-all route, the server's paths in
/// another spelling (a trailing `/`) are proxied to that route's upstream, which receives a
/// client's secret posted there and can answer the authorization-server metadata (naming
/// its own token endpoint) for a client that asks with a trailing `/`.
#[tokio::test]
async fn authorization_server_paths_are_never_proxied_in_another_spelling() {
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let signing = TestKey::ed25519("as-1");
    let key_file = dir.path().join("as-1.pem");
    std::fs::write(&key_file, signing.pem()).expect("write key");
    let config = format!(
        r#"
[server]
listen = "{{listen}}"
public_url = "{{gateway}}"

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
        key = key_file.display(),
        hash = hash_key(SECRET),
    );
    let h = start_with_upstream(config, &upstream.url).await;
    let secret_form = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "agent-1"),
        ("client_secret", SECRET),
    ]);
    let mut proxied = Vec::new();
    for path in ["/oauth/token/", "/servers/a/oauth/token/", "/oauth/revoke/"] {
        let reply = h
            .request(
                "POST",
                path,
                &[("content-type", "application/x-www-form-urlencoded")],
                Some(&secret_form),
            )
            .await;
        if reply.body == "upstream" {
            proxied.push(format!("POST {path}"));
        }
    }
    for path in [
        "/.well-known/oauth-authorization-server/",
        "/.well-known/jwks.json/",
    ] {
        let reply = h.request("GET", path, &[], None).await;
        if reply.body == "upstream" {
            proxied.push(format!("GET {path}"));
        }
    }
    let leaked = upstream
        .seen()
        .iter()
        .filter(|s| String::from_utf8_lossy(&s.body).contains("client_secret"))
        .count();
    assert!(
        proxied.is_empty() && leaked == 0,
        "the upstream answered {proxied:?} and received {leaked} client secret(s)"
    );
}

/// Finding 6: `issuer = "http://mcp.example.com"` is refused ("must be an https URL (http only on a
/// loopback address)"), but leaving `issuer` out with `public_url = "http://mcp.example.com"`
/// gives the very same issuer and is taken: the server then asks clients to send their
/// secrets and assertions, and hands out bearer tokens, in clear text on a public host.
#[test]
fn an_authorization_server_on_a_plain_http_public_host_is_refused() {
    let config = |issuer: &str| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://mcp.example.com"

[authorization_server]
{issuer}

[[authorization_server.keys]]
kid = "k1"
algorithm = "EdDSA"
private_key = "env://REVIEW14_UNUSED_KEY"

[providers.agents]
type = "issued"

[[routes]]
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"
chain = ["agents"]
"#
        )
    };
    let load =
        |text: String| portcullis::config::load_str(&text, "<review14>", std::path::Path::new("."));
    let explicit = load(config(r#"issuer = "http://mcp.example.com""#));
    assert!(
        explicit
            .as_ref()
            .is_err_and(|e| e.to_string().contains("https")),
        "an explicit http issuer is refused: {explicit:?}"
    );
    let implicit = load(config(""));
    assert!(
        implicit.is_err(),
        "the same http issuer, taken from `server.public_url`, is accepted; the authorization \
         server is on at http://mcp.example.com"
    );
}

/// Finding 7: Delegation keeps the user's subject, and the upstream sees only
/// `x-portcullis-subject`, `-scopes` and `-provider`: a user whose subject is a client id
/// (`keyed` here) delegated to `agent-1` reaches the upstream exactly as the client `keyed`
/// itself does. `agent-1` gets a token the upstream cannot tell from another client's own
/// (the `act` claim never reaches it).
#[tokio::test]
async fn a_delegated_token_does_not_pass_for_another_clients_own_token() {
    const PING: &str = r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#;
    let upstream = RecordingUpstream::start().await;
    let s = server_with(Some(&upstream.url)).await;
    let user = s.user_token("keyed", "mcp:read", json!(s.resource("/servers/a/mcp")));
    let delegated = s.exchange(&user, "/servers/a/mcp").await;
    let own = keyed_token(&s).await;
    let seen_with = |token: String| {
        let s = &s;
        let upstream = &upstream;
        async move {
            let before = upstream.seen().len();
            let auth = format!("Bearer {token}");
            let reply = s
                .harness
                .request(
                    "POST",
                    "/servers/a/mcp",
                    &[
                        ("content-type", "application/json"),
                        ("accept", "application/json, text/event-stream"),
                        ("authorization", &auth),
                    ],
                    Some(PING),
                )
                .await;
            assert_eq!(reply.status, 200, "{reply:?}");
            let seen = upstream.seen();
            let request = seen.get(before).expect("the upstream got the request");
            [
                "x-portcullis-subject",
                "x-portcullis-scopes",
                "x-portcullis-provider",
                "x-portcullis-actor",
            ]
            .map(|h| format!("{h}: {}", request.header(h).unwrap_or("-")))
            .join(", ")
        }
    };
    assert_eq!(delegated.status, 200, "{}", delegated.body);
    let delegated = body(&delegated)["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let as_delegated = seen_with(delegated).await;
    let as_keyed = seen_with(own).await;
    assert_ne!(
        as_delegated, as_keyed,
        "agent-1, acting for a user whose subject is `keyed`, reaches the upstream exactly as the \
         client `keyed` does"
    );
}

/// `keyed`'s own client-credentials token for `/servers/a/mcp`.
async fn keyed_token(s: &Server) -> String {
    let jwt = assertion(&s.keyed, "keyed-key", "keyed", &s.harness.base, "own-1");
    let resource = s.resource("/servers/a/mcp");
    let reply = s
        .post(
            "/oauth/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("resource", &resource),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &jwt),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    body(&reply)["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}
