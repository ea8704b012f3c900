//! The authorization server (issue 14) with the OAuth clients that exist off the shelf, run
//! unmodified as child processes against a real gateway in front of the demo MCP server:
//! the Python `mcp` SDK's `ClientCredentialsOAuthProvider` and `PrivateKeyJWTOAuthProvider`,
//! the TypeScript SDK's `ClientCredentialsProvider` and `PrivateKeyJwtProvider`, and
//! datagrout-conduit in client-credentials mode and with its RFC 8693 `DelegatedProvider`,
//! and conduit with an API key (which it sends as `X-API-Key`).
//! The scripts in `tests/clients/` print one JSON line per HTTP exchange, listing and tool
//! call; the tests assert on those and on what the upstream's `whoami` tool saw (the identity
//! headers the gateway added), so every result comes from the real client and the real
//! gateway. The refusals are the ones a client can show: wrong secret and unknown client
//! (`invalid_client`), scope escalation (the step-up token still lacks the scope), resource
//! escalation (`invalid_target`) and a token for one route used at another (401).
//!
//! `cargo xtask upstreams` (run by `cargo xtask test`) installs the clients; when it cannot,
//! the tests print `skipped: …` (see `portcullis_tests::differential::installed`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use portcullis::engine::api_key::hash_key;
use portcullis_tests::differential::installed;
use portcullis_tests::eventually;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use rsa::pkcs8::PrivateKeyInfo;
use rsa::pkcs8::der::Encode as _;
use serde_json::{Value, json};

use crate::gateway_harness::{Harness, TestConfig, start};
use crate::jwt::keys::{Signer, eddsa, eddsa_from, es256_from, jwks};
use crate::jwt::server::JwksServer;

const ROUTE_A: &str = "/servers/a/mcp";
const ROUTE_B: &str = "/servers/b/mcp";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The clients the authorization server knows. Each secret client's secret is
/// [`Setup::secret`].
mod client {
    /// `mcp:read admin`, every route.
    pub const ADMIN: &str = "admin-agent";
    /// `mcp:read`, route a only.
    pub const READER: &str = "reader-agent";
    /// `private_key_jwt` with an Ed25519 key, `mcp:read`.
    pub const ED_SIGNER: &str = "ed-signer";
    /// `private_key_jwt` with a P-256 key, `mcp:read`.
    pub const EC_SIGNER: &str = "ec-signer";
    /// Client credentials and token exchange (as the actor), `mcp:read`.
    pub const DELEGATE: &str = "delegate-agent";
}

/// A gateway with the authorization server on, a user identity provider its `corp` provider
/// trusts, and the key files of the clients that sign their assertions.
struct Setup {
    harness: Harness,
    /// The user identity provider (for token exchange); serves the JWKS of [`Setup::user`].
    _idp: JwksServer,
    user: Signer,
    idp_issuer: String,
    /// The key of [`client::ED_SIGNER`], for assertions made by the test.
    ed_signer: Signer,
    secret: String,
    dir: tempfile::TempDir,
    library: Library,
    program: PathBuf,
    path: PathBuf,
}

impl Setup {
    /// The gateway, for running `library`; `None` when it is not installed.
    async fn start(library: Library) -> Option<Self> {
        let (program, path) = library.installed()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let signing_key = write_pem(dir.path(), "k1.pem", &ed25519_pkcs8());
        let ed_pkcs8 = ed25519_pkcs8();
        write_pem(dir.path(), "ed-signer.pem", &without_public_key(&ed_pkcs8));
        let ed_signer = eddsa_from("ed-signer", &ed_pkcs8);
        let ed_jwks = jwks(&[&ed_signer]);
        let ec_pkcs8 = p256_pkcs8();
        write_pem(dir.path(), "ec-signer.pem", &ec_pkcs8);
        let ec_jwks = jwks(&[&es256_from("ec-signer", &ec_pkcs8)]);
        let user = eddsa("corp-1");
        let idp = JwksServer::start(jwks(&[&user])).await;
        let idp_issuer = idp.base().to_owned();
        let secret = random_text();
        let hash = hash_key(&secret);
        let secret_client = |id: &str, scopes: &str, extra: &str| {
            format!(
                "[[authorization_server.clients]]\nid = {id:?}\nsecret_hash = {hash:?}\n\
                 scopes = {scopes}\n{extra}\n"
            )
        };
        let key_client = |id: &str, jwks: &str| {
            format!(
                "[[authorization_server.clients]]\nid = {id:?}\njwks = {jwks:?}\n\
                 scopes = [\"mcp:read\"]\n"
            )
        };
        let config = TestConfig::new()
            .route(ROUTE_A, &["agents"])
            .route(ROUTE_B, &["agents"])
            .provider("agents", "issued")
            .jwt("corp", &idp_issuer, &idp.jwks_url())
            .with(r#"audience = "{gateway}""#)
            .path_rule(ROUTE_A, &["mcp:read"])
            .path_rule(ROUTE_B, &["mcp:read"])
            .tool_rule("admin_*", &["admin"])
            .toml(&format!(
                // The challenge asks for `mcp:read` only, so that a client's first token
                // lacks `admin` and calling `admin_reset` needs a step-up.
                "[resource]\nscopes_supported = [\"mcp:read\"]\n\n\
                 [authorization_server]\nsigning_key = \"k1\"\n\
                 subject_token_providers = [\"corp\"]\n\n\
                 [[authorization_server.keys]]\nkid = \"k1\"\nalgorithm = \"EdDSA\"\n\
                 private_key = \"file://{}\"\n\n{}{}{}{}{}",
                signing_key.display(),
                secret_client(client::ADMIN, r#"["mcp:read", "admin"]"#, ""),
                secret_client(
                    client::READER,
                    r#"["mcp:read"]"#,
                    &format!("resources = [{ROUTE_A:?}]")
                ),
                secret_client(
                    client::DELEGATE,
                    r#"["mcp:read"]"#,
                    &format!(r#"grants = ["client_credentials", {TOKEN_EXCHANGE:?}]"#)
                ),
                key_client(client::ED_SIGNER, &ed_jwks),
                key_client(client::EC_SIGNER, &ec_jwks),
            ));
        Some(Self {
            harness: start(config).await,
            _idp: idp,
            user,
            idp_issuer,
            ed_signer,
            secret,
            dir,
            library,
            program,
            path,
        })
    }

    /// The MCP URL of `route`, which is also its resource.
    fn url(&self, route: &str) -> String {
        format!("{}{route}", self.harness.base)
    }

    /// The issuer: the gateway's public URL.
    fn issuer(&self) -> &str {
        &self.harness.base
    }

    /// The authorization server's RFC 8414 metadata, as any client fetches it.
    async fn metadata(&self) -> Value {
        let reply = self
            .harness
            .request("GET", "/.well-known/oauth-authorization-server", &[], None)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        serde_json::from_str(&reply.body).expect("metadata is JSON")
    }

    /// A user's token from the identity provider the `corp` provider trusts.
    fn user_token(&self, subject: &str) -> String {
        self.user.sign(&json!({
            "iss": self.idp_issuer, "aud": self.harness.base, "sub": subject,
            "scope": "mcp:read", "exp": now() + 300, "iat": now(),
        }))
    }

    fn key_file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Runs the script with `args` for `client_id` at `route`: with a client secret
    /// ([`Setup::secret`]) unless `args` name a `--private-key` or an `--assertion-env`, and
    /// with a user's token in `USER_TOKEN` for conduit's delegation.
    async fn run(&self, route: &str, client_id: &str, args: &[&str]) -> Run {
        self.run_with(route, client_id, args, &[]).await
    }

    /// [`Setup::run`] with more variables in the script's environment.
    async fn run_with(
        &self,
        route: &str,
        client_id: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Run {
        let mut all = vec![self.url(route), "--client-id".into(), client_id.into()];
        if self.library != Library::Conduit {
            all.extend(["--issuer".into(), self.issuer().into()]);
        }
        let signs = |a: &&str| a.starts_with("--private-key") || a.starts_with("--assertion-env");
        if !args.iter().any(signs) {
            all.extend(["--client-secret-env".into(), "CLIENT_SECRET".into()]);
        }
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let user = self.user_token("alice");
        let mut env = env.to_vec();
        env.extend([
            ("CLIENT_SECRET", self.secret.as_str()),
            ("USER_TOKEN", &user),
        ]);
        run(&self.program, &self.path, &all, &env).await
    }
}

/// A client library, driven by its script in `tests/clients/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Library {
    /// `python/mcp_sdk_client.py`: the Python `mcp` SDK's providers.
    PythonSdk,
    /// `python/conduit_client.py`: datagrout-conduit.
    Conduit,
    /// `node/client.mjs`: the TypeScript SDK's providers.
    TypeScriptSdk,
}

impl Library {
    /// The interpreter and the script to run, or `None` (after printing why) when xtask
    /// recorded why it could not install the client.
    fn installed(self) -> Option<(PathBuf, PathBuf)> {
        let python = || installed(&root().join("target/clients/venv/bin/python"));
        match self {
            Self::PythonSdk => Some((
                python()?,
                root().join("tests/clients/python/mcp_sdk_client.py"),
            )),
            Self::Conduit => Some((
                python()?,
                root().join("tests/clients/python/conduit_client.py"),
            )),
            Self::TypeScriptSdk => Some(("node".into(), node_script()?)),
        }
    }
}

/// `tests/clients/node/client.mjs`, copied once per test binary next to the TypeScript SDK's
/// `node_modules` (Node resolves packages next to the script; the source tree never holds a
/// `node_modules`).
fn node_script() -> Option<PathBuf> {
    let dir = root().join("target/differential/node");
    installed(&dir.join("node_modules/@modelcontextprotocol/sdk/package.json"))?;
    static COPIED: OnceLock<PathBuf> = OnceLock::new();
    Some(
        COPIED
            .get_or_init(|| {
                let script = dir.join("oauth-client.mjs");
                std::fs::copy(root().join("tests/clients/node/client.mjs"), &script)
                    .expect("copying client.mjs next to its node_modules");
                script
            })
            .clone(),
    )
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// 16 random bytes as hex: a secret, or a text no response could contain by chance.
fn random_text() -> String {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).expect("random");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ed25519_pkcs8() -> Vec<u8> {
    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .expect("keygen")
        .as_ref()
        .to_vec()
}

fn p256_pkcs8() -> Vec<u8> {
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .expect("keygen")
        .as_ref()
        .to_vec()
}

/// The PKCS#8 v1 document of the key in `pkcs8`: Python's `cryptography` refuses the v2
/// documents (with the public key) that ring writes for Ed25519 ("ASN.1 parsing error: extra
/// data").
fn without_public_key(pkcs8: &[u8]) -> Vec<u8> {
    let mut info = PrivateKeyInfo::try_from(pkcs8).expect("a PKCS#8 document");
    info.public_key = None;
    info.to_der().expect("DER")
}

/// Writes `pkcs8` (DER) as a PKCS#8 PEM file `name` in `dir`; returns its path.
fn write_pem(dir: &Path, name: &str, pkcs8: &[u8]) -> PathBuf {
    let pem = rcgen::KeyPair::try_from(pkcs8)
        .expect("a PKCS#8 key")
        .serialize_pem();
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("writing the key file");
    path
}

/// A client script that ran to its end: what it printed, and how it exited.
struct Run {
    events: Vec<Value>,
    status: ExitStatus,
    stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "exit: {}", self.status)?;
        for event in &self.events {
            writeln!(f, "{event}")?;
        }
        write!(f, "stderr:\n{}", self.stderr)
    }
}

impl Run {
    /// The events of one kind, in order.
    fn events(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == kind).collect()
    }

    /// The token requests (form posts), in order.
    fn token_requests(&self) -> Vec<&Value> {
        self.events("http")
            .into_iter()
            .filter(|e| e.get("form").is_some())
            .collect()
    }

    /// The tools listed.
    fn tools(&self) -> Vec<&str> {
        self.events("tools")
            .first()
            .and_then(|e| e["names"].as_array())
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// The result of calling `tool`: its text when it succeeded.
    fn text(&self, tool: &str) -> &str {
        let call = self.call(tool);
        assert_eq!(call["ok"], true, "calling {tool} failed:\n{self}");
        call["text"].as_str().unwrap_or_default()
    }

    fn call(&self, tool: &str) -> &Value {
        self.events("call")
            .into_iter()
            .find(|e| e["tool"] == tool)
            .unwrap_or_else(|| panic!("no call of {tool}:\n{self}"))
    }

    /// The identity header `name` the upstream's `whoami` tool saw.
    fn whoami(&self, name: &str) -> String {
        let headers: Value = serde_json::from_str(self.text("whoami"))
            .unwrap_or_else(|e| panic!("whoami answers JSON ({e}):\n{self}"));
        headers[name][0].as_str().unwrap_or_default().to_owned()
    }

    /// The client failed: exited non-zero with its `error` event; returns the error.
    fn failure(&self) -> &str {
        assert!(!self.status.success(), "expected a failure:\n{self}");
        self.events("error")
            .first()
            .and_then(|e| e["error"].as_str())
            .unwrap_or_else(|| panic!("no error event:\n{self}"))
    }

    fn succeeded(&self) {
        assert!(self.status.success(), "the client failed:\n{self}");
    }
}

/// Stops the client if the test gives up on it (by its own PID).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `program script args` with `env` to its end (30 s at most) and parses what it printed.
async fn run(program: &Path, script: &Path, args: &[String], env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let child = Command::new(program)
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        // No `__pycache__` in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    let mut running = Running(child);
    let what = format!("{} to finish", script.display());
    let status = eventually(&what, || {
        std::future::ready(match running.0.try_wait() {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err("still running".to_owned()),
            Err(e) => Err(e.to_string()),
        })
    })
    .await;
    let printed = std::fs::read_to_string(&stdout).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr).unwrap_or_default();
    let events = printed
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "{} printed {line:?}, not JSON ({e}); stderr:\n{stderr}",
                    script.display()
                )
            })
        })
        .collect();
    Run {
        events,
        status,
        stderr,
    }
}

fn echo(text: &str) -> String {
    format!("--call=echo={}", json!({ "text": text }))
}

/// The token request's form field `name`.
fn field<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    request["form"][name].as_str()
}

/// `library` as [`client::ADMIN`] echoes a text, calls `whoami` and `admin_reset` (which
/// needs `admin`), and each call does what it should; `None` when the client is not installed.
async fn admin_calls_every_tool(library: Library) -> Option<(Setup, Run)> {
    let setup = Setup::start(library).await?;
    let text = random_text();
    let run = setup
        .run(
            ROUTE_A,
            client::ADMIN,
            &[&echo(&text), "--call=whoami", "--call=admin_reset"],
        )
        .await;
    run.succeeded();
    assert_eq!(run.text("echo"), text, "{run}");
    assert_eq!(run.whoami("x-portcullis-subject"), client::ADMIN, "{run}");
    assert_eq!(run.text("admin_reset"), "demo state reset", "{run}");
    Some((setup, run))
}

#[tokio::test]
async fn python_sdk_client_credentials_discovers_gets_a_token_and_steps_up_to_the_union_of_scopes()
{
    let Some((setup, run)) = admin_calls_every_tool(Library::PythonSdk).await else {
        return;
    };
    let http = run.events("http");
    assert_eq!(
        (http[0]["url"].as_str(), http[0]["status"].as_u64()),
        (Some(setup.url(ROUTE_A).as_str()), Some(401)),
        "the first request has no token:\n{run}"
    );
    let metadata = setup.metadata().await;
    for document in [
        format!(
            "{}/.well-known/oauth-protected-resource{ROUTE_A}",
            setup.issuer()
        ),
        format!("{}/.well-known/oauth-authorization-server", setup.issuer()),
    ] {
        assert!(
            http.iter()
                .any(|e| e["url"] == document.as_str() && e["status"] == 200),
            "expected: the SDK read {document}\ngot:\n{run}"
        );
    }
    let tokens = run.token_requests();
    assert_eq!(tokens.len(), 2, "one token, then one step-up:\n{run}");
    for token in &tokens {
        assert_eq!(token["url"], metadata["token_endpoint"], "{run}");
        assert_eq!(token["status"], 200, "{run}");
        assert_eq!(
            token["authorization"], "Basic",
            "client_secret_basic:\n{run}"
        );
        assert_eq!(field(token, "grant_type"), Some("client_credentials"));
        assert_eq!(field(token, "resource"), Some(setup.url(ROUTE_A).as_str()));
        let claims = &token["token"]["claims"];
        assert_eq!(claims["aud"], setup.url(ROUTE_A), "{run}");
        assert_eq!(claims["iss"], setup.issuer(), "{run}");
        assert_eq!(claims["client_id"], client::ADMIN, "{run}");
        assert_eq!(token["token"]["header"]["typ"], "at+jwt", "{run}");
    }
    assert_eq!(
        field(tokens[0], "scope"),
        Some("mcp:read"),
        "the challenge's scope"
    );
    assert_eq!(tokens[0]["body"]["scope"], "mcp:read", "{run}");
    assert_eq!(
        field(tokens[1], "scope"),
        Some("mcp:read admin"),
        "the union of the scopes held and challenged:\n{run}"
    );
    assert_eq!(tokens[1]["body"]["scope"], "mcp:read admin", "{run}");
    assert!(
        http.iter().any(|e| e["status"] == 403
            && e["www_authenticate"]
                .as_str()
                .is_some_and(|c| c.contains("insufficient_scope"))),
        "the step-up answered a 403 insufficient_scope:\n{run}"
    );
    assert!(run.tools().contains(&"echo"), "{run}");
    assert_eq!(run.whoami("x-portcullis-scopes"), "mcp:read", "{run}");
}

#[tokio::test]
async fn python_sdk_scope_escalation_is_refused_and_the_call_fails() {
    let Some(setup) = Setup::start(Library::PythonSdk).await else {
        return;
    };
    let run = setup
        .run(
            ROUTE_A,
            client::READER,
            &[
                "--auth-method=client_secret_post",
                "--call=admin_reset",
                "--call=whoami",
            ],
        )
        .await;
    run.succeeded();
    let tokens = run.token_requests();
    assert_eq!(tokens.len(), 2, "one token, then one step-up:\n{run}");
    for token in &tokens {
        assert!(
            token.get("authorization").is_none(),
            "client_secret_post:\n{run}"
        );
        assert_eq!(field(token, "client_id"), Some(client::READER), "{run}");
        assert_eq!(field(token, "client_secret"), Some("<redacted>"), "{run}");
    }
    assert_eq!(field(tokens[1], "scope"), Some("mcp:read admin"), "{run}");
    assert_eq!(
        tokens[1]["body"]["scope"], "mcp:read",
        "asked ∩ allowed, never more:\n{run}"
    );
    let refused = run.call("admin_reset");
    assert_eq!(refused["ok"], false, "{run}");
    assert_eq!(run.whoami("x-portcullis-scopes"), "mcp:read", "{run}");
}

#[tokio::test]
async fn python_sdk_private_key_jwt_signs_an_assertion_for_the_issuer() {
    private_key_jwt_client_gets_a_token(Library::PythonSdk, client::ED_SIGNER, "EdDSA").await;
}

#[tokio::test]
async fn typescript_private_key_jwt_provider_signs_an_assertion_for_the_issuer() {
    private_key_jwt_client_gets_a_token(Library::TypeScriptSdk, client::EC_SIGNER, "ES256").await;
}

/// `library` authenticates as `client_id` (whose key file is `<client_id>.pem`) with an `alg`
/// assertion naming the issuer as audience, and its token works.
async fn private_key_jwt_client_gets_a_token(library: Library, client_id: &str, alg: &str) {
    let Some(setup) = Setup::start(library).await else {
        return;
    };
    let text = random_text();
    let key = setup.key_file(&format!("{client_id}.pem"));
    let run = setup
        .run(
            ROUTE_A,
            client_id,
            &[
                "--private-key",
                &key,
                &format!("--alg={alg}"),
                &echo(&text),
                "--call=whoami",
            ],
        )
        .await;
    run.succeeded();
    let tokens = run.token_requests();
    assert_eq!(tokens.len(), 1, "{run}");
    assert_eq!(
        field(tokens[0], "client_assertion_type"),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    let assertion = &tokens[0]["form"]["client_assertion"];
    assert_eq!(assertion["header"]["alg"], alg, "{run}");
    assert_eq!(assertion["claims"]["iss"], client_id, "{run}");
    assert_eq!(assertion["claims"]["sub"], client_id, "{run}");
    assert_eq!(assertion["claims"]["aud"], setup.issuer(), "{run}");
    assert_eq!(tokens[0]["status"], 200, "{run}");
    assert_eq!(run.text("echo"), text);
    assert_eq!(run.whoami("x-portcullis-subject"), client_id, "{run}");
}

#[tokio::test]
async fn python_sdk_replayed_or_expired_assertion_gets_invalid_client() {
    let Some(setup) = Setup::start(Library::PythonSdk).await else {
        return;
    };
    let assertion = |exp: u64| {
        setup.ed_signer.sign(&json!({
            "iss": client::ED_SIGNER, "sub": client::ED_SIGNER, "aud": setup.issuer(),
            "iat": now(), "exp": exp, "jti": random_text(),
        }))
    };
    // The SDK's `static_assertion_provider` sends the same assertion for every token
    // request: the step-up for `admin_reset` replays the one that got the first token, and
    // the SDK gives up with the token endpoint's answer.
    let once = assertion(now() + 120);
    let args = [
        "--assertion-env=ASSERTION",
        "--call=whoami",
        "--call=admin_reset",
    ];
    let run = setup
        .run_with(ROUTE_A, client::ED_SIGNER, &args, &[("ASSERTION", &once)])
        .await;
    assert!(run.failure().contains("invalid_client"), "{run}");
    assert_eq!(
        run.whoami("x-portcullis-subject"),
        client::ED_SIGNER,
        "{run}"
    );
    let tokens = run.token_requests();
    assert_eq!(tokens.len(), 2, "{run}");
    let jti = |t: &Value| t["form"]["client_assertion"]["claims"]["jti"].clone();
    assert_eq!(jti(tokens[0]), jti(tokens[1]), "the same assertion:\n{run}");
    assert_eq!(tokens[0]["status"], 200, "{run}");
    assert_eq!(
        (&tokens[1]["status"], &tokens[1]["body"]["error"]),
        (&json!(401), &json!("invalid_client")),
        "a replayed assertion:\n{run}"
    );

    let expired = assertion(now() - 60);
    for refused in [once, expired] {
        let run = setup
            .run_with(
                ROUTE_A,
                client::ED_SIGNER,
                &args,
                &[("ASSERTION", &refused)],
            )
            .await;
        assert!(run.failure().contains("invalid_client"), "{run}");
        let tokens = run.token_requests();
        assert!(!tokens.is_empty(), "{run}");
        assert!(tokens.iter().all(|t| t["status"] == 401), "{run}");
    }
}

#[tokio::test]
async fn python_sdk_wrong_secret_and_unknown_client_get_invalid_client_and_fail() {
    let Some(setup) = Setup::start(Library::PythonSdk).await else {
        return;
    };
    let wrong = Setup {
        secret: "not-the-secret".into(),
        ..setup
    };
    for client_id in [client::ADMIN, "no-such-agent"] {
        let run = wrong.run(ROUTE_A, client_id, &["--call=whoami"]).await;
        let error = run.failure();
        let tokens = run.token_requests();
        assert!(!tokens.is_empty(), "{run}");
        for token in tokens {
            assert_eq!(token["status"], 401, "{run}");
            assert_eq!(token["body"]["error"], "invalid_client", "{run}");
        }
        assert!(error.contains("invalid_client"), "{run}");
        assert!(run.events("call").is_empty(), "{run}");
    }
}

#[tokio::test]
async fn typescript_client_credentials_provider_gets_the_clients_scopes_without_asking() {
    let Some((setup, run)) = admin_calls_every_tool(Library::TypeScriptSdk).await else {
        return;
    };
    let metadata = setup.metadata().await;
    let tokens = run.token_requests();
    assert_eq!(tokens.len(), 1, "{run}");
    assert_eq!(tokens[0]["url"], metadata["token_endpoint"], "{run}");
    assert_eq!(tokens[0]["authorization"], "Basic", "{run}");
    assert_eq!(
        field(tokens[0], "scope"),
        None,
        "the SDK sends no scope:\n{run}"
    );
    assert_eq!(
        field(tokens[0], "resource"),
        Some(setup.url(ROUTE_A).as_str())
    );
    assert_eq!(
        tokens[0]["body"]["scope"], "mcp:read admin",
        "the client's scopes:\n{run}"
    );
}

#[tokio::test]
async fn typescript_client_is_refused_a_token_for_a_route_it_may_not_use() {
    let Some(setup) = Setup::start(Library::TypeScriptSdk).await else {
        return;
    };
    let run = setup.run(ROUTE_B, client::READER, &["--call=whoami"]).await;
    let error = run.failure();
    let tokens = run.token_requests();
    assert!(!tokens.is_empty(), "{run}");
    for token in tokens {
        assert_eq!(field(token, "resource"), Some(setup.url(ROUTE_B).as_str()));
        assert_eq!(token["status"], 400, "{run}");
        assert_eq!(token["body"]["error"], "invalid_target", "{run}");
    }
    assert!(run.events("call").is_empty(), "{error}\n{run}");
}

#[tokio::test]
async fn conduit_client_credentials_uses_its_derived_token_endpoint() {
    let Some(setup) = Setup::start(Library::Conduit).await else {
        return;
    };
    let text = random_text();
    let run = setup
        .run(ROUTE_A, client::ADMIN, &[&echo(&text), "--call=whoami"])
        .await;
    run.succeeded();
    assert!(run.tools().contains(&"echo"), "{run}");
    assert_eq!(run.text("echo"), text);
    assert_eq!(run.whoami("x-portcullis-subject"), client::ADMIN, "{run}");
    assert_eq!(run.whoami("x-portcullis-scopes"), "mcp:read admin", "{run}");
}

/// conduit's `auth={"api_key": …}` sends `X-API-Key`, which the `api_key` provider reads by
/// default; the header never reaches the upstream.
#[tokio::test]
async fn conduit_authenticates_with_an_api_key_in_x_api_key() {
    let Some((program, script)) = Library::Conduit.installed() else {
        return;
    };
    let harness = start(portcullis_tests::config::standard()).await;
    let text = random_text();
    let args: Vec<String> = [
        &format!("{}/mcp", harness.base),
        "--client-id=unused",
        "--client-secret-env=API_KEY",
        "--mode=api-key",
        &echo(&text),
        "--call=whoami",
    ]
    .map(|a| (*a).to_owned())
    .to_vec();
    let key = portcullis_tests::config::READER_KEY;
    let good = run(&program, &script, &args, &[("API_KEY", key)]).await;
    good.succeeded();
    assert_eq!(good.text("echo"), text);
    assert_eq!(good.whoami("x-portcullis-subject"), "reader", "{good}");
    assert_eq!(
        good.whoami("x-api-key"),
        "",
        "the key reached the upstream:\n{good}"
    );
    let bad = run(&program, &script, &args, &[("API_KEY", "not-a-key")]).await;
    assert!(bad.failure().contains("401"), "{bad}");
}

#[tokio::test]
async fn conduit_wrong_secret_gets_invalid_client_and_fails() {
    let Some(setup) = Setup::start(Library::Conduit).await else {
        return;
    };
    let wrong = Setup {
        secret: "not-the-secret".into(),
        ..setup
    };
    let run = wrong.run(ROUTE_A, client::ADMIN, &["--call=whoami"]).await;
    let error = run.failure();
    assert!(
        error.contains("401") && error.contains("invalid_client"),
        "{run}"
    );
}

#[tokio::test]
async fn conduit_delegation_names_the_user_as_subject_and_the_agent_as_actor() {
    let Some(setup) = Setup::start(Library::Conduit).await else {
        return;
    };
    let run = setup
        .run(
            ROUTE_A,
            client::DELEGATE,
            &[
                "--mode=delegation",
                "--subject-token-env=USER_TOKEN",
                "--call=whoami",
            ],
        )
        .await;
    run.succeeded();
    assert_eq!(run.whoami("x-portcullis-subject"), "alice", "{run}");
    let token = run.events("token");
    let claims = &token.first().unwrap_or_else(|| panic!("no token:\n{run}"))["token"]["claims"];
    assert_eq!(claims["sub"], "alice", "{run}");
    assert_eq!(claims["act"]["sub"], client::DELEGATE, "{run}");
    assert_eq!(claims["aud"], setup.url(ROUTE_A), "{run}");
}

#[tokio::test]
async fn conduit_token_for_one_route_is_refused_at_another() {
    let Some(setup) = Setup::start(Library::Conduit).await else {
        return;
    };
    // conduit's own override: the token comes from route a's endpoint, so it is for route a.
    let endpoint = format!("{}/servers/a/oauth/token", setup.issuer());
    let run = setup
        .run(
            ROUTE_B,
            client::ADMIN,
            &[&format!("--token-endpoint={endpoint}"), "--call=whoami"],
        )
        .await;
    let error = run.failure();
    assert!(
        error.contains("401") && error.contains(ROUTE_B),
        "conduit got its token, and route b refused it:\n{run}"
    );
}
