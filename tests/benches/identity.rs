//! The identity CA's costs, each beside a baseline from the same run:
//!
//! - `register`: one registration through the gateway's whole handler (`Gateway::handle`, no
//!   socket: API-key authentication, the JSON body, the P-256 key check, the certificate
//!   signed, the store line written and `fsync`ed) against the bare signature of the same
//!   certificate (`Ca::issue`) and against appending and `fsync`ing one line of the same
//!   size to a file on the same disk (the store's floor).
//! - `handshake`: a whole mTLS handshake in memory (rustls client and server, TLS 1.3,
//!   P-256) with the identity CA on and a store of 10 000 identities, against the same
//!   handshake with the CA as a plain `client_ca` (no store): the difference is the
//!   revocation check per handshake. Also the check alone (`Gateway::vouch`).
//!
//! Run: `cargo bench -p portcullis-tests --bench identity`.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::engine::api_key::hash_key;
use portcullis::engine::mtls::client_cert_from_der;
use portcullis::gateway::{ConnInfo, Gateway, Site};
use portcullis::identity::book::{Event, Issued};
use portcullis::identity::ca::generate;
use portcullis::identity::{Ca, Registry, StoreError, now, public_key};
use portcullis::observability::Metrics;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const KEY: &str = "bench-registrar-key-0000";
const STORE_SIZE: usize = 10_000;

fn gateway(rt: &tokio::runtime::Runtime, dir: &std::path::Path, identity: bool) -> Arc<Gateway> {
    let d = dir.display();
    let (tls_extra, identity_section) = if identity {
        (
            String::new(),
            format!(
                r#"
[identity]
ca_cert = "file://{d}/ca.pem"
ca_key = "file://{d}/ca.key"
store = "{d}/identities.jsonl"
route = "/mcp"
scopes = ["mcp:read"]
max_per_caller = 4000000000
"#
            ),
        )
    } else {
        (format!("client_ca = \"{d}/ca.pem\"\n"), String::new())
    };
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "https://localhost"

[server.tls]
cert = "{d}/server.pem"
key = "{d}/server.key"
{tls_extra}
[[routes]]
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"
chain = ["agents", "keys"]

[providers.agents]
type = "mtls"
on_deny = "next"

[providers.keys]
type = "api_key"
keys = [{{ name = "registrar", hash = "{hash}", scopes = ["identity:register", "mcp:read"] }}]
{identity_section}"#,
        hash = hash_key(KEY),
    );
    let config = portcullis::config::load_str(&text, "<bench>", dir).expect("the config loads");
    let assembled = rt
        .block_on(portcullis::config::assemble(
            &config,
            None,
            &Default::default(),
        ))
        .expect("assembles");
    Gateway::new(Site::new(&config, assembled), Arc::new(Metrics::new()))
}

fn handshake(server: &Arc<rustls::ServerConfig>, client: &Arc<rustls::ClientConfig>) {
    let name = ServerName::try_from("localhost").expect("name");
    let mut c = rustls::ClientConnection::new(client.clone(), name).expect("client");
    let mut s = rustls::ServerConnection::new(server.clone()).expect("server");
    let mut buffer = Vec::new();
    while c.is_handshaking() || s.is_handshaking() {
        buffer.clear();
        while c.wants_write() {
            c.write_tls(&mut buffer).expect("write");
        }
        s.read_tls(&mut buffer.as_slice()).expect("read");
        s.process_new_packets().expect("server accepts");
        buffer.clear();
        while s.wants_write() {
            s.write_tls(&mut buffer).expect("write");
        }
        c.read_tls(&mut buffer.as_slice()).expect("read");
        c.process_new_packets().expect("client accepts");
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let generated = generate("Bench CA", &["localhost".to_owned()]).expect("CA");
    for (name, text) in [
        ("ca.pem", &generated.ca_cert),
        ("ca.key", &generated.ca_key),
        ("server.pem", &generated.server_cert),
        ("server.key", &generated.server_key),
    ] {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let ca = Ca::from_pem(&generated.ca_cert, &generated.ca_key).expect("CA");
    let agent = rcgen::KeyPair::generate().expect("key");
    let agent_key = public_key::parse(&agent.public_key_pem()).expect("key");
    // The store: 10 000 identities, the last one the agent's.
    let leaf = ca
        .issue(
            &agent_key,
            "agent",
            "spiffe://localhost/agent/idn_bench",
            now(),
            86_400,
        )
        .expect("issue");
    let registry = Registry::open(&dir.path().join("identities.jsonl")).expect("store");
    registry
        .transact(|_| {
            let mut events: Vec<Event> = (0..STORE_SIZE - 1)
                .map(|i| {
                    Event::Issued(Issued {
                        id: format!("idn_{i:024}"),
                        name: "filler".into(),
                        owner: "registrar".into(),
                        subject: format!("spiffe://localhost/agent/idn_{i:024}"),
                        scopes: vec!["mcp:read".into()],
                        fingerprint: format!("{i:064x}"),
                        serial: "01".into(),
                        at: now(),
                        not_after: now() + 86_400,
                        replaces: None,
                    })
                })
                .collect();
            events.push(Event::Issued(Issued {
                id: "idn_bench".into(),
                name: "agent".into(),
                owner: "registrar".into(),
                subject: "spiffe://localhost/agent/idn_bench".into(),
                scopes: vec!["mcp:read".into()],
                fingerprint: leaf.fingerprint.clone(),
                serial: leaf.serial.clone(),
                at: now(),
                not_after: leaf.not_after,
                replaces: None,
            }));
            Ok::<_, StoreError>((events, ()))
        })
        .expect("store written");
    drop(registry);

    let with_identity = gateway(&rt, dir.path(), true);
    let plain = gateway(&rt, dir.path(), false);
    let tls = |g: &Arc<Gateway>, config: &str| {
        let config = portcullis::config::load_str(
            &format!(
                "[server]\npublic_url = \"https://localhost\"\n[server.tls]\ncert = \"{d}/server.pem\"\nkey = \"{d}/server.key\"\n{config}\n[[routes]]\npath = \"/\"\nupstream = \"http://127.0.0.1:9/\"\nchain = [\"a\"]\n[providers.a]\ntype = \"anonymous\"\n",
                d = dir.path().display()
            ),
            "<bench tls>",
            dir.path(),
        )
        .expect("tls config");
        portcullis::gateway::tls::server_config(config.server.tls.as_ref().expect("tls"), g)
            .expect("server config")
    };
    let server_identity = tls(&with_identity, "");
    let server_plain = tls(
        &plain,
        &format!("client_ca = \"{}/ca.pem\"", dir.path().display()),
    );
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(generated.ca_cert.as_bytes()).expect("ca"))
        .expect("root");
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(leaf.pem.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(agent.serialize_pem().as_bytes()).expect("key"),
        )
        .expect("client auth"),
    );

    let mut group = c.benchmark_group("handshake");
    group.bench_function("mTLS handshake, CA as plain client_ca (baseline)", |b| {
        b.iter(|| handshake(&server_plain, &client))
    });
    group.bench_function(
        "mTLS handshake, identity CA with a 10 000-identity store",
        |b| b.iter(|| handshake(&server_identity, &client)),
    );
    let der = CertificateDer::from_pem_slice(leaf.pem.as_bytes()).expect("cert");
    let described = client_cert_from_der(&der).expect("parses");
    let site = with_identity.site();
    assert!(
        with_identity
            .vouch(&site, described.clone())
            .expect("vouched")
            .issued
            .is_some()
    );
    group.bench_function("revocation check alone (Gateway::vouch)", |b| {
        b.iter(|| with_identity.vouch(&site, described.clone()))
    });
    group.finish();

    let mut group = c.benchmark_group("register");
    let line = std::fs::read_to_string(dir.path().join("identities.jsonl"))
        .expect("store")
        .lines()
        .last()
        .expect("a line")
        .to_owned()
        + "\n";
    let floor = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("fsync-floor.jsonl"))
        .expect("open");
    group.bench_function("append and fsync one store line (the store's floor)", |b| {
        b.iter(|| {
            std::io::Write::write_all(&mut &floor, line.as_bytes()).expect("write");
            floor.sync_data().expect("fsync");
        })
    });
    group.bench_function("bare certificate signature (baseline)", |b| {
        b.iter(|| {
            ca.issue(
                &agent_key,
                "agent",
                "spiffe://localhost/agent/idn_x",
                now(),
                86_400,
            )
        })
    });
    let conn = ConnInfo::new(Some("127.0.0.1:40000".parse().expect("addr")), None, true);
    let body = serde_json::json!({ "public_key_pem": agent.public_key_pem(), "name": "agent" })
        .to_string();
    group.bench_function(
        "registration through the gateway (store fsync included)",
        |b| {
            b.to_async(&rt).iter(|| async {
                let request = http::Request::post("/identity/register")
                    .header("authorization", format!("Bearer {KEY}"))
                    .header("content-type", "application/json")
                    .body(portcullis::gateway::body::full(body.clone()))
                    .expect("request");
                let response = with_identity.handle(request, &conn).await;
                assert_eq!(response.status(), 201);
            })
        },
    );
    group.finish();
}

criterion_group!(identity, benches);
criterion_main!(identity);
