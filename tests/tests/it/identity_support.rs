//! What the identity-CA suites share: a TLS gateway with `[identity]` and the CA's files
//! ([`IdentityGateway`]), agents with their own keys ([`Agent`]), curl against it, an mTLS
//! connection kept open, and `portcullis identity …` run as `main` runs it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use bytes::Bytes;
use clap::Parser as _;
use portcullis::engine::api_key::hash_key;
use portcullis::identity::ca::generate;
use portcullis_cli::{Cli, Command, identity};
use serde_json::Value;

use crate::gateway_harness::{Harness, TestConfig, start, start_with_upstream};

/// A key with `identity:register` and `mcp:read`.
pub(crate) const REGISTRAR_KEY: &str = "test-registrar-key-0009";

/// The `keys = […]` line of an `api_key` provider holding [`REGISTRAR_KEY`].
pub(crate) fn registrar_keys() -> String {
    format!(
        r#"keys = [{{ name = "registrar", hash = "{}", scopes = ["identity:register", "mcp:read"] }}]"#,
        hash_key(REGISTRAR_KEY)
    )
}

/// A gateway on TLS with the identity CA on (registration through `/mcp`), and the folder
/// holding the CA (`ca.pem`, `ca.key`), the listener's certificate and the store.
pub(crate) struct IdentityGateway {
    pub(crate) harness: Harness,
    pub(crate) dir: tempfile::TempDir,
}

impl IdentityGateway {
    /// `config` with `[server.tls]` (plus `tls` lines) and `[identity]` (plus `identity`
    /// lines) added, in front of `upstream` (the demo MCP server when `None`).
    pub(crate) async fn start(
        config: TestConfig,
        tls: &str,
        identity: &str,
        upstream: Option<&str>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let generated = generate(
            "Test agent identity CA",
            &["localhost".to_owned(), "127.0.0.1".to_owned()],
        )
        .expect("CA");
        let d = dir.path();
        for (name, text) in [
            ("ca.pem", &generated.ca_cert),
            ("ca.key", &generated.ca_key),
            ("server.pem", &generated.server_cert),
            ("server.key", &generated.server_key),
        ] {
            std::fs::write(d.join(name), text).expect("write");
        }
        let config = config.toml(&format!(
            r#"[server.tls]
cert = "{d}/server.pem"
key = "{d}/server.key"
{tls}

[identity]
ca_cert = "file://{d}/ca.pem"
ca_key = "file://{d}/ca.key"
store = "{d}/identities.jsonl"
route = "/mcp"
{identity}
"#,
            d = d.display()
        ));
        let harness = match upstream {
            Some(url) => start_with_upstream(config, url).await,
            None => start(config).await,
        };
        Self { harness, dir }
    }

    pub(crate) fn base(&self) -> String {
        format!("https://localhost:{}", self.harness.addr.port())
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("{}/identity", self.base())
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn store(&self) -> PathBuf {
        self.path("identities.jsonl")
    }

    /// `curl` against the gateway, trusting the CA: the status and the body, or 0 and
    /// curl's error when the connection failed.
    pub(crate) async fn curl(&self, args: &[&str]) -> (u16, String) {
        let mut command = std::process::Command::new("curl");
        command
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(self.path("ca.pem"))
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .stdin(Stdio::null());
        let out = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("joined")
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        match code.trim().parse() {
            Ok(0) | Err(_) => (0, String::from_utf8_lossy(&out.stderr).into_owned()),
            Ok(code) => (code, body.to_owned()),
        }
    }

    /// Registers `public_key_pem` as `name` with `key` as the bearer token.
    pub(crate) async fn register(
        &self,
        key: &str,
        public_key_pem: &str,
        name: &str,
    ) -> (u16, String) {
        let body = serde_json::json!({ "public_key_pem": public_key_pem, "name": name });
        self.curl(&[
            "-H",
            &format!("Authorization: Bearer {key}"),
            "-H",
            "Content-Type: application/json",
            "--data",
            &body.to_string(),
            &format!("{}/register", self.endpoint()),
        ])
        .await
    }

    /// Waits until the gateway's own view of the store says `done` (it reads the store
    /// every second): the signal that a change written by the CLI or the test is in force.
    pub(crate) async fn until_read(
        &self,
        what: &str,
        done: impl Fn(&portcullis::identity::book::Book) -> bool,
    ) {
        portcullis_tests::eventually(what, || {
            let site = self.harness.gateway.site();
            let read = site
                .identity
                .as_ref()
                .is_some_and(|authority| authority.registry.read(&done));
            std::future::ready(if read {
                Ok(())
            } else {
                Err("not yet".to_owned())
            })
        })
        .await;
    }

    /// Waits until the gateway has read the revocation of `id`.
    pub(crate) async fn until_revoked(&self, id: &str) {
        self.until_read(
            &format!("the gateway reads the revocation of {id}"),
            |book| book.get(id).is_some_and(|i| i.revoked_at.is_some()),
        )
        .await;
    }

    /// An agent holding a certificate of the identity CA that the store records as issued
    /// two hours ago and expired a second ago (as if time had passed), once the gateway has
    /// read that record.
    pub(crate) async fn expired_agent(&self, name: &str) -> Agent {
        use portcullis::identity::book::{Event, Issued};
        let ca = portcullis::identity::Ca::from_pem(
            &std::fs::read_to_string(self.path("ca.pem")).expect("ca"),
            &std::fs::read_to_string(self.path("ca.key")).expect("key"),
        )
        .expect("CA");
        let agent = Agent::new(self.dir.path(), name);
        let key = portcullis::identity::public_key::parse(&agent.public_pem()).expect("key");
        let now = portcullis::identity::now();
        let (id, subject) = (
            format!("idn_{name}"),
            format!("spiffe://localhost/agent/idn_{name}"),
        );
        let leaf = ca.issue(&key, name, &subject, now, 3600).expect("issue");
        std::fs::write(&agent.cert_file, &leaf.pem).expect("write");
        portcullis::identity::Registry::open(&self.store())
            .expect("store")
            .transact(|_| {
                let event = Event::Issued(Issued {
                    id: id.clone(),
                    name: name.to_owned(),
                    owner: "registrar".into(),
                    subject,
                    scopes: vec!["mcp:read".into()],
                    fingerprint: leaf.fingerprint.clone(),
                    serial: leaf.serial.clone(),
                    at: now - 7200,
                    not_after: now - 1,
                    replaces: None,
                });
                Ok::<_, portcullis::identity::StoreError>((vec![event], ()))
            })
            .expect("recorded");
        self.until_read(&format!("the gateway reads {id}"), |book| {
            book.get(&id).is_some()
        })
        .await;
        agent
    }

    /// An HTTP/1.1 connection over mTLS with `agent`'s certificate, kept open.
    pub(crate) async fn connect(&self, agent: &Agent) -> Sender {
        mtls_connection(
            self.harness.addr,
            &self.path("ca.pem"),
            &agent.cert_file,
            &agent.key_file,
        )
        .await
    }
}

/// An agent's key pair made here, its private key written to `dir/NAME.key`; its
/// certificate goes to `dir/NAME.pem` ([`Agent::keep`]).
pub(crate) struct Agent {
    pub(crate) key: rcgen::KeyPair,
    pub(crate) key_file: PathBuf,
    pub(crate) cert_file: PathBuf,
}

impl Agent {
    pub(crate) fn new(dir: &Path, name: &str) -> Self {
        let key = rcgen::KeyPair::generate().expect("key");
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        Self {
            key,
            key_file,
            cert_file: dir.join(format!("{name}.pem")),
        }
    }

    pub(crate) fn public_pem(&self) -> String {
        self.key.public_key_pem()
    }

    /// Keeps the certificate of a registration or rotation answer.
    pub(crate) fn keep(&self, answer: &Value) {
        let pem = answer["cert_pem"].as_str().expect("cert_pem");
        std::fs::write(&self.cert_file, pem).expect("write cert");
    }
}

pub(crate) fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// `portcullis identity LINE`, as `main` runs it.
pub(crate) fn portcullis_identity(line: &str) -> Result<String, String> {
    let words = shlex::split(line).unwrap_or_else(|| panic!("not a command line: {line}"));
    let cli = Cli::try_parse_from(
        ["portcullis".to_owned(), "identity".to_owned()]
            .into_iter()
            .chain(words),
    )
    .map_err(|e| e.to_string())?;
    match cli.command {
        Some(Command::Identity(args)) => identity::run(&args).map_err(|e| format!("{e:#}")),
        other => panic!("not an identity command: {other:?}"),
    }
}

pub(crate) type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>;

/// An HTTP/1.1 connection over mTLS with `cert`/`key`, kept open.
pub(crate) async fn mtls_connection(
    addr: std::net::SocketAddr,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Sender {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).expect("ca"))
        .expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_file(cert).expect("cert")],
            PrivateKeyDer::from_pem_file(key).expect("key"),
        )
        .expect("client auth");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
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

/// A `GET path` on `sender`'s connection.
pub(crate) fn get(path: &str) -> http::Request<http_body_util::Empty<Bytes>> {
    http::Request::builder()
        .uri(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::new())
        .expect("request")
}
