//! Review 14c: a third attack on the authorization server after the fixes of reviews 14 and
//! 14b, over real HTTP on port 0: introspection after a client is narrowed, the failure
//! limiter and the embedded demo, the demo off loopback, `portcullis clients revoke` on a
//! file the gateway (another user) watches, and memory kept per unauthenticated request.
//!
//! Every test asserts the secure behaviour (what README.md and SECURITY.md promise, or what
//! the RFCs imply); the report lists which fail today and why.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::engine::api_key::hash_key;
use portcullis::gateway::{Gateway, serve};
use portcullis::observability::Metrics;
use portcullis_tests::eventually::eventually;
use portcullis_tests::upstream::RecordingUpstream;

use crate::oauth_support::{
    access_token, body, ping, post_form, post_form_from, replace, signing_key_file,
};

const SECRET: &str = "pcs_review14c-secret-of-agent-one-000000000";
const RS_SECRET: &str = "pcs_review14c-secret-of-the-resource-server";

/// Finding 1: README: "A client narrowed since (fewer `scopes`, other `resources`) gets no
/// more than it has now", and a revoked client's tokens are inactive at introspection. The
/// `issued` provider applies the narrowing, but `/oauth/introspect` answers with the token
/// as it was issued: `active: true` with a scope the client has lost, and `active: true`
/// for a resource the client may no longer use. A resource server that relies on RFC 7662
/// (the reason the endpoint exists) grants what the operator took away.
#[tokio::test]
async fn introspection_answers_for_the_client_as_it_is_now() {
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signing_key_file(dir.path());
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:9"

[authorization_server]
clients_file = "clients.toml"
max_failed_authentications = 1000

[[authorization_server.keys]]
kid = "as-1"
algorithm = "EdDSA"
private_key = "file://{key}"

[providers.agents]
type = "issued"

[[routes]]
path = "/a/mcp"
upstream = "{upstream}"
chain = ["agents"]

[[routes]]
path = "/b/mcp"
upstream = "{upstream}"
chain = ["agents"]
"#,
            key = key.display(),
            upstream = upstream.url,
        ),
    )
    .expect("write config");
    let clients = dir.path().join("clients.toml");
    let entries = |scopes: &str, resources: &str| {
        format!(
            "[[clients]]\nid = \"agent-1\"\nsecret_hash = \"{}\"\nscopes = [{scopes}]\n\
             resources = [{resources}]\ntoken_lifetime_secs = 3600\n\n\
             [[clients]]\nid = \"rs\"\nsecret_hash = \"{}\"\nscopes = [\"mcp:read\"]\n\
             introspection = true\n",
            hash_key(SECRET),
            hash_key(RS_SECRET),
        )
    };
    std::fs::write(
        &clients,
        entries(r#""mcp:read", "admin""#, r#""/a/mcp", "/b/mcp""#),
    )
    .expect("write clients");
    let served = crate::gateway_harness::serve_watched(config, None).await;
    let token_url = format!("{}/oauth/token", served.base);
    let introspect_url = format!("{}/oauth/introspect", served.base);
    let token_for = |route: &'static str| {
        let token_url = token_url.clone();
        async move {
            post_form(
                &token_url,
                Some(("agent-1", SECRET)),
                &[
                    ("grant_type", "client_credentials"),
                    ("resource", &format!("http://127.0.0.1:9{route}")),
                ],
            )
            .await
        }
    };
    let introspect = |token: String| {
        let introspect_url = introspect_url.clone();
        async move {
            body(
                &post_form(
                    &introspect_url,
                    Some(("rs", RS_SECRET)),
                    &[("token", &token)],
                )
                .await,
            )
        }
    };
    let admin_on_a = access_token(&token_for("/a/mcp").await);
    let on_b = access_token(&token_for("/b/mcp").await);
    let before = introspect(admin_on_a.clone()).await;
    assert_eq!(before["active"], true, "{before}");
    assert_eq!(before["scope"], "mcp:read admin", "{before}");

    // The operator takes `admin` and the route `/b/mcp` away from agent-1.
    replace(&clients, &entries(r#""mcp:read""#, r#""/a/mcp""#));
    eventually("agent-1 narrowed", || async {
        token_for("/b/mcp").await.status == 400
    })
    .await;
    let b_url = format!("{}/b/mcp", served.base);
    assert_eq!(
        ping(&b_url, &on_b).await.status,
        401,
        "the `issued` provider follows the narrowing"
    );

    let a_now = introspect(admin_on_a).await;
    let b_now = introspect(on_b).await;
    let scope = a_now["scope"].as_str().unwrap_or_default();
    let admin_reported = a_now["active"] == true && scope.split(' ').any(|s| s == "admin");
    let b_reported = b_now["active"] == true;
    assert!(
        !admin_reported && !b_reported,
        "after `admin` and `/b/mcp` were taken from agent-1 (the gateway itself now grants \
         its old tokens only `mcp:read`, and refuses the one for `/b/mcp` with 401), \
         introspection still answers: for the `/a/mcp` token {a_now}; for the `/b/mcp` \
         token {b_now}"
    );
}

/// Starts the embedded demo (`portcullis serve` with no config) on `listener`.
async fn demo_on(
    listener: tokio::net::TcpListener,
    listen: SocketAddr,
) -> (
    portcullis_cli::demo::DemoSetup,
    portcullis_cli::demo::upstream::DemoUpstream,
    tokio::task::JoinHandle<()>,
) {
    let providers = tempfile::tempdir().expect("tempdir");
    let started = portcullis_cli::start(
        None,
        Some(providers.path()),
        Some(listen),
        Some(portcullis_tests::runtime().clone()),
    )
    .await
    .expect("the demo loads");
    let (upstream, setup) = started.demo.expect("demo mode");
    let gateway = Gateway::new(started.loaded.site, Arc::new(Metrics::new()));
    let task = tokio::spawn(serve(
        listener,
        gateway,
        None,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    (setup, upstream, task)
}

/// Finding 2: the failure limiter counts per client id from every address, before the
/// credential is looked at. Ten requests a minute with `demo-agent` and any wrong secret,
/// from any address, keep the demo client (and likewise any client whose id is known: ids
/// are not secret, they are in every token) out for good: its right secret, from its own
/// address, gets 429. The limiter meant to stop guessing is a lock anyone can turn.
#[tokio::test]
async fn one_address_cannot_lock_the_demo_client_out_everywhere() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (setup, _upstream, task) = demo_on(listener, addr).await;
    let token_url = format!("http://{addr}/oauth/token");
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 66));
    for _ in 0..10 {
        let reply = post_form_from(
            Some(attacker),
            &token_url,
            Some((portcullis_cli::demo::DEMO_CLIENT_ID, "a-wrong-guess")),
            &[("grant_type", "client_credentials")],
        )
        .await;
        assert_eq!(reply.status, 401, "{reply:?}");
    }
    let agent = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));
    let reply = post_form_from(
        Some(agent),
        &token_url,
        Some((portcullis_cli::demo::DEMO_CLIENT_ID, &setup.client_secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    task.abort();
    assert_eq!(
        reply.status, 200,
        "the demo client, with its right secret from its own address, is locked out by ten \
         wrong guesses sent from another address: {reply:?}"
    );
}

/// This host's address on its default route, if it has one (nothing is sent).
fn non_loopback_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("203.0.113.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// Finding 3: README: the issuer and `server.public_url` "must be `https`, or `http` on a
/// loopback address: client secrets and tokens cross them". The check reads only the URL,
/// never where the server listens: `portcullis serve --listen 0.0.0.0:8080` (the demo, no
/// config) names itself `http://127.0.0.1:8080`, passes, and serves the token endpoint in
/// plain HTTP on every interface, taking the demo client's (random) secret from the network
/// and handing tokens back in the clear. (A config with `listen = "0.0.0.0:8080"` and
/// `public_url = "http://localhost:8080"` passes the same way.)
#[tokio::test]
async fn the_demo_off_loopback_never_takes_client_secrets_in_plain_http_from_the_network() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let listen = SocketAddr::from(([0, 0, 0, 0], port));
    let (setup, _upstream, task) = demo_on(listener, listen).await;
    let Some(ip) = non_loopback_address() else {
        task.abort();
        assert!(
            !setup.config_toml.contains("[authorization_server]"),
            "the demo on 0.0.0.0 without TLS runs the authorization server in plain HTTP"
        );
        return;
    };
    let token_url = format!("http://{}/oauth/token", SocketAddr::new(ip, port));
    let reply = post_form_from(
        Some(ip),
        &token_url,
        Some((portcullis_cli::demo::DEMO_CLIENT_ID, &setup.client_secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    task.abort();
    assert_ne!(
        reply.status, 200,
        "the demo on 0.0.0.0 took a client secret over plain HTTP from {ip} (not loopback) \
         and issued a token in the clear: {}",
        reply.body
    );
}

/// A gateway process, stopped by its PID when the test ends, pass or fail.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Finding 4: `portcullis clients revoke` replaces the clients file with a new one, mode
/// 0600, owned by whoever ran the command — not the file's owner. The usual deployment runs
/// the gateway as its own user and the operator as root (`sudo portcullis clients revoke`):
/// the gateway can no longer read its clients file, every reload fails, and it keeps
/// serving the last good clients — the revoked one included — while the command said
/// "revoked". (Run as root, where the test can start the gateway as another user.)
#[tokio::test]
async fn clients_revoke_run_by_root_takes_effect_at_a_gateway_running_as_its_own_user() {
    use std::os::unix::fs::PermissionsExt as _;
    let setpriv = Path::new("/usr/bin/setpriv");
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("portcullis")));
    // `/proc/self` belongs to the process's effective user.
    let root =
        std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    let (true, true, Some(binary)) = (root, setpriv.is_file(), binary.filter(|b| b.is_file()))
    else {
        eprintln!("skipped: needs root, setpriv and target/debug/portcullis");
        return;
    };
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let key = signing_key_file(dir.path());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let port = free_port();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[authorization_server]
clients_file = "clients.toml"
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
            key = key.display(),
            upstream = upstream.url,
        ),
    )
    .expect("write config");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    // The gateway's own file: its user (nobody here) owns it, owner-only.
    let clients = dir.path().join("clients.toml");
    std::fs::write(
        &clients,
        format!(
            "[[clients]]\nid = \"agent-1\"\nsecret_hash = \"{}\"\nscopes = [\"mcp:read\"]\n",
            hash_key(SECRET)
        ),
    )
    .expect("write clients");
    std::os::unix::fs::chown(&clients, Some(65534), Some(65534)).expect("chown");
    std::fs::set_permissions(&clients, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let log = dir.path().join("gateway.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let mut command = Command::new(setpriv);
    command
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&binary)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file);
    let mut gateway = Process(command.spawn().expect("the gateway starts"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        let exited = gateway.0.try_wait().ok().flatten();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "the gateway did not start ({exited:?}): {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token_url = format!("http://{addr}/oauth/token");
    let token = || async {
        post_form(
            &token_url,
            Some(("agent-1", SECRET)),
            &[("grant_type", "client_credentials")],
        )
        .await
    };
    assert_eq!(token().await.status, 200, "agent-1 gets tokens");

    // The operator revokes agent-1 as root, as the command line the README gives.
    let cli = <portcullis_cli::Cli as clap::Parser>::try_parse_from([
        "portcullis",
        "clients",
        "revoke",
        "agent-1",
        "--config",
        config.to_str().expect("utf-8 path"),
    ])
    .expect("parses");
    let Some(portcullis_cli::Command::Clients(args)) = cli.command else {
        panic!("not the clients command");
    };
    let said = portcullis_cli::clients::run(&args).expect("revoke succeeds");
    assert!(said.contains("revoked"), "{said}");

    let started = Instant::now();
    let mut last = token().await;
    while last.status == 200 && started.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = token().await;
    }
    let meta = std::fs::metadata(&clients).expect("stat");
    assert_eq!(
        last.status,
        401,
        "`clients revoke` said agent-1 is revoked, yet the gateway (running as its own user) \
         still issues it tokens 8 s later: the rewritten file is owned by uid {} with mode \
         {:o}, which the gateway cannot read, so every reload fails and the last good \
         clients (agent-1 unrevoked) stay in force. Gateway log: {}",
        std::os::unix::fs::MetadataExt::uid(&meta),
        meta.permissions().mode() & 0o777,
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .rev()
            .find(|l| l.contains("reload"))
            .unwrap_or_default()
    );
}

/// The resident memory of this process (the gateway runs in it), in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Finding 5: SECURITY/ledger: "what a caller can make grow is bounded". The failure
/// counters are bounded in number (100 000 keys) but not in size: the key is `client:` and
/// the client id exactly as presented, never checked to be a label first, so one
/// unauthenticated request with a 60 KiB `client_id` pins 60 KiB until the table is full —
/// up to ~6 GB for the table's 100 000 keys. Ten failed requests per address and minute
/// suffice; here 100 loopback addresses × 10 requests keep ~60 MB alive.
#[tokio::test]
async fn failed_logins_with_huge_client_ids_do_not_pin_memory() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_setup, _upstream, task) = demo_on(listener, addr).await;
    let token_url = format!("http://{addr}/oauth/token");
    // Each request carries 60 KiB: in the client id, or (the control) in a parameter
    // nothing keeps.
    let send_batch = |from: u8, to: u8, in_id: bool| {
        let token_url = token_url.clone();
        async move {
            for host in from..to {
                let ip = IpAddr::V4(Ipv4Addr::new(127, 1, host, 1));
                for n in 0..10u32 {
                    let padding = "x".repeat(60 * 1024);
                    // Distinct ids, so that each is a new key.
                    let id = if in_id {
                        format!("{host}-{n}-{padding}")
                    } else {
                        format!("{host}-{n}")
                    };
                    let pad = if in_id { String::new() } else { padding };
                    let reply = post_form_from(
                        Some(ip),
                        &token_url,
                        None,
                        &[
                            ("grant_type", "client_credentials"),
                            ("client_id", &id),
                            ("client_secret", "wrong"),
                            ("pad", &pad),
                        ],
                    )
                    .await;
                    assert_eq!(reply.status, 401, "{}", reply.body);
                }
            }
        }
    };
    // Warm up the allocator and the connection paths, then measure the control and the
    // attack.
    send_batch(200, 210, false).await;
    let start = resident_bytes();
    send_batch(0, 100, false).await;
    let control = resident_bytes().saturating_sub(start);
    let before = resident_bytes();
    send_batch(100, 200, true).await;
    let grown = resident_bytes().saturating_sub(before);
    task.abort();
    let mib = |b: u64| b / (1024 * 1024);
    assert!(
        grown < control + 20 * 1024 * 1024,
        "1 000 failed, unauthenticated token requests with 60 KiB client ids left the process \
         {} MiB bigger (the same requests with the 60 KiB in another parameter: {} MiB): \
         every id is kept whole as a failure-counter key",
        mib(grown),
        mib(control)
    );
}
