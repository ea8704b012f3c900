//! The embedded default: what `portcullis serve` runs with no config file. It starts the
//! demo MCP server ([`upstream`]) on a free loopback port and builds a configuration in
//! front of it — as TOML text, loaded through the same [`portcullis::config::load_str`] as any
//! file, so the demo exercises exactly the code operators run:
//!
//! - route `/mcp` → the demo upstream;
//! - provider `demo-keys` (`api_key`): a reader key (`mcp:read`) and an admin key
//!   (`mcp:read admin`), fixed and printed at start when listening on loopback, random
//!   otherwise;
//! - provider `partner-token` (Wasm) from the providers directory, when present, with the
//!   demo credential `demo-partner:demo-secret`; `mcp-tool-policy` as an authorizer, when
//!   present;
//! - rules: `/mcp` needs `mcp:read`; `tools/call` of `admin_*` needs `admin`;
//! - the authorization server, with one client `demo-agent` (`mcp:read`) whose secret is
//!   printed at start (fixed on loopback, random otherwise), and the `issued` provider in
//!   the chain, so an OAuth client works in the first minute. Its signing key is made at
//!   start and written to a private folder under the system temp dir (a key is only ever
//!   given by reference), removed when the demo stops; off loopback the server is off
//!   (it would take secrets over plain http).

pub mod upstream;

use std::net::SocketAddr;
use std::path::Path;

use portcullis::engine::api_key::hash_key;

/// The reader key used on loopback.
pub const DEMO_READ_KEY: &str = "demo-key-reader";
/// The admin key used on loopback.
pub const DEMO_ADMIN_KEY: &str = "demo-key-admin";
/// The demo OAuth client's id.
pub const DEMO_CLIENT_ID: &str = "demo-agent";
/// The demo OAuth client's secret on loopback.
pub const DEMO_CLIENT_SECRET: &str = "demo-agent-secret";

/// The partner-token credential of the demo (`<id>:<secret>`).
pub const DEMO_PARTNER: (&str, &str) = ("demo-partner", "demo-secret");

/// What the demo configuration contains, for the start-up banner.
#[derive(Debug, Clone)]
pub struct DemoSetup {
    /// The configuration, as TOML.
    pub config_toml: String,
    /// Key with `mcp:read`.
    pub read_key: String,
    /// Key with `mcp:read admin`.
    pub admin_key: String,
    /// The OAuth client's secret.
    pub client_secret: String,
    /// The private folder holding the signing key, removed when the last copy of the
    /// setup is dropped (when the demo stops).
    pub signing_key_dir: Option<std::sync::Arc<KeyDir>>,
    /// The identity CA's folder (`ca.pem`, `ca.key`, the listener's certificate, the
    /// store), when the demo runs it: the same folder as the signing key's.
    pub identity_dir: Option<std::path::PathBuf>,
    /// Whether the partner-token provider is in the chain.
    pub partner_token: bool,
    /// Wasm providers found but not used, and why.
    pub notes: Vec<String>,
}

/// Builds the demo configuration for a gateway on `listen` in front of `upstream_url`,
/// taking example providers from `providers_dir` when it exists.
pub fn demo_setup(listen: SocketAddr, upstream_url: &str, providers_dir: &Path) -> DemoSetup {
    let (read_key, admin_key, client_secret) = if listen.ip().is_loopback() {
        (
            DEMO_READ_KEY.to_owned(),
            DEMO_ADMIN_KEY.to_owned(),
            DEMO_CLIENT_SECRET.to_owned(),
        )
    } else {
        (random_key(), random_key(), random_key())
    };
    let mut notes = Vec::new();
    let has = |name: &str| providers_dir.join(format!("{name}.wasm")).is_file();
    let partner_token = has("partner-token");
    let tool_policy = has("mcp-tool-policy");
    if !providers_dir.is_dir() {
        notes.push(format!(
            "providers directory `{}` not found: running without Wasm providers (build them \
             with `cargo xtask run`, or pass `--providers DIR`)",
            providers_dir.display()
        ));
    } else {
        for (name, used) in [
            ("partner-token", partner_token),
            ("mcp-tool-policy", tool_policy),
        ] {
            if !used {
                notes.push(format!(
                    "`{name}.wasm` not in `{}`: skipped",
                    providers_dir.display()
                ));
            }
        }
    }
    let mut chain = vec!["\"demo-keys\""];
    let signing_key = match listen
        .ip()
        .is_loopback()
        .then(write_signing_key)
        .transpose()
    {
        Ok(None) => {
            notes.push(
                "the authorization server is off: beyond loopback it needs https (a config \
                 with `[server.tls]` or an https public URL behind a proxy)"
                    .into(),
            );
            None
        }
        Ok(Some(path)) => {
            // First: it abstains on anything that is not a JWT, where the key provider
            // would refuse a token as an unknown key.
            chain.insert(0, "\"demo-agents\"");
            Some(path)
        }
        Err(e) => {
            notes.push(format!(
                "the authorization server is off: no signing key ({e})"
            ));
            None
        }
    };
    // The identity CA, in the same folder: agents register a key with the admin key and
    // call over mTLS on a second, TLS listener.
    let identity = signing_key
        .as_deref()
        .and_then(Path::parent)
        .map(|dir| write_identity_ca(dir).map(|()| dir.to_owned()))
        .transpose()
        .unwrap_or_else(|e| {
            notes.push(format!("the identity CA is off: {e}"));
            None
        });
    if identity.is_some() {
        // First of all: it abstains without a client certificate.
        chain.insert(0, "\"demo-identities\"");
    }
    if partner_token {
        chain.push("\"partner-token\"");
    }
    let mut toml = format!(
        r#"# Embedded demo configuration (portcullis serve without --config).
[server]
listen = {listen}
public_url = {public_url}
providers_dir = {dir}

[[routes]]
path = "/mcp"
upstream = {upstream}
chain = [{chain}]
authorizers = [{authorizers}]

[providers.demo-keys]
type = "api_key"
keys = [
  {{ name = "demo-reader", hash = "{read_hash}", scopes = ["mcp:read"] }},
  {{ name = "demo-admin", hash = "{admin_hash}", scopes = ["mcp:read", "admin", "identity:register"] }},
]

[[rules]]
path = "/mcp"
scopes = ["mcp:read"]

[[rules]]
mcp_method = "tools/call"
tool = "admin_*"
scopes = ["admin"]

[resource]
scopes_supported = ["mcp:read", "admin"]
"#,
        listen = quote(&listen.to_string()),
        public_url = quote(&demo_public_url(listen)),
        dir = quote(&providers_dir.display().to_string()),
        upstream = quote(upstream_url),
        chain = chain.join(", "),
        authorizers = if tool_policy {
            "\"mcp-tool-policy\""
        } else {
            ""
        },
        read_hash = hash_key(&read_key),
        admin_hash = hash_key(&admin_key),
    );
    if partner_token {
        let (id, secret) = DEMO_PARTNER;
        let line = format!("{id}:{}:mcp:read", hash_key(secret));
        toml.push_str(&format!(
            r#"
[providers.partner-token]
type = "wasm"
component = "partner-token"
config = {{ scheme = "partner-token" }}
secrets = {{ credentials = {line} }}
"#,
            line = quote(&line)
        ));
    }
    if let Some(key) = &signing_key {
        toml.push_str(&format!(
            r#"
[authorization_server]

[[authorization_server.keys]]
kid = "demo-1"
algorithm = "EdDSA"
private_key = {key}

[[authorization_server.clients]]
id = "{DEMO_CLIENT_ID}"
secret_hash = "{secret_hash}"
scopes = ["mcp:read"]

[providers.demo-agents]
type = "issued"
"#,
            key = quote(&format!("file://{}", key.display())),
            secret_hash = hash_key(&client_secret),
        ));
    }
    if let Some(dir) = &identity {
        let file = |name: &str| quote(&dir.join(name).display().to_string());
        let reference = |name: &str| quote(&format!("file://{}", dir.join(name).display()));
        toml.push_str(&format!(
            r#"
[server.tls]
cert = {cert}
key = {key}

[identity]
ca_cert = {ca_cert}
ca_key = {ca_key}
store = {store}
route = "/mcp"
scopes = ["mcp:read"]

[providers.demo-identities]
type = "mtls"
"#,
            cert = file("server.pem"),
            key = file("server.key"),
            ca_cert = reference("ca.pem"),
            ca_key = reference("ca.key"),
            store = file("identities.jsonl"),
        ));
        // `[server]` is the first table: its keys go before any other.
        toml = toml.replacen(
            "providers_dir = ",
            &format!(
                "tls_listen = {}\nproviders_dir = ",
                quote(&SocketAddr::new(listen.ip(), 0).to_string())
            ),
            1,
        );
    }
    if tool_policy {
        toml.push_str(
            r#"
[providers.mcp-tool-policy]
type = "wasm"
component = "mcp-tool-policy"
config = { rules = [{ tools = ["admin_*"], scope = "admin" }] }
"#,
        );
    }
    DemoSetup {
        config_toml: toml,
        read_key,
        admin_key,
        client_secret,
        signing_key_dir: signing_key
            .as_deref()
            .and_then(Path::parent)
            .map(|dir| std::sync::Arc::new(KeyDir(dir.to_owned()))),
        identity_dir: identity,
        partner_token,
        notes,
    }
}

/// Writes the demo's identity CA and its listener certificate (for `localhost` and
/// `127.0.0.1`) into `dir`, keys owner-only.
fn write_identity_ca(dir: &Path) -> Result<(), String> {
    let generated = portcullis::identity::ca::generate(
        "Portcullis demo identity CA",
        &["localhost".to_owned(), "127.0.0.1".to_owned()],
    )
    .map_err(|e| e.to_string())?;
    crate::identity::write_ca(dir, &generated).map_err(|e| e.to_string())
}

/// The demo's private key folder; removed (with the key) when dropped.
#[derive(Debug)]
pub struct KeyDir(std::path::PathBuf);

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes the demo's Ed25519 signing key and writes it, PKCS#8 PEM, mode 0600, into a new
/// folder (mode 0700) under the system temp dir. Returns the file.
fn write_signing_key() -> std::io::Result<std::path::PathBuf> {
    use base64::Engine as _;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| std::io::Error::other("the system random source failed"))?;
    let mut suffix = [0u8; 8];
    ring::rand::SecureRandom::fill(&rng, &mut suffix)
        .map_err(|_| std::io::Error::other("the system random source failed"))?;
    let dir = std::env::temp_dir().join(format!("portcullis-demo-{}", hex::encode(suffix)));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir)?;
    let body = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let path = dir.join("signing-key.pem");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(&path)?, pem.as_bytes())?;
    Ok(path)
}

/// The banner printed at start: keys, a `curl` line and an MCP client line.
pub fn banner(setup: &DemoSetup, public_url: &str, tls: Option<SocketAddr>) -> String {
    let mcp = format!("{public_url}/mcp");
    let mut out = format!(
        "\nPortcullis demo gateway on {public_url} (embedded config; see `portcullis serve --help`)\n\
         \n  reader key (mcp:read):       {read}\n  admin key  (mcp:read admin identity:register): {admin}\n",
        read = setup.read_key,
        admin = setup.admin_key,
    );
    if setup.partner_token {
        let (id, secret) = DEMO_PARTNER;
        out.push_str(&format!(
            "  partner token (Wasm):        Authorization: partner-token {id}:{secret}\n"
        ));
    }
    if setup.config_toml.contains("[authorization_server]") {
        out.push_str(&format!(
            "  OAuth client (mcp:read):     {DEMO_CLIENT_ID} / {secret}\n\
             \n  Get a token (client credentials, 10 minutes):\n    \
             curl -s -u {DEMO_CLIENT_ID}:{secret} -d grant_type=client_credentials {public_url}/oauth/token\n",
            secret = setup.client_secret,
        ));
    }
    out.push_str(&format!(
        "\nTry it:\n  curl -s {mcp} -H 'Authorization: Bearer {read}' \\\n    \
         -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\\n    \
         -d '{INITIALIZE}'\n\
         \n  MCP client: npx @modelcontextprotocol/inspector --transport http --server-url {mcp} \\\n    \
         --header 'Authorization: Bearer {read}'\n\
         \n  Without a key you get 401 and a WWW-Authenticate challenge; metadata at\n  \
         {public_url}/.well-known/oauth-protected-resource/mcp\n",
        read = setup.read_key,
    ));
    if let (Some(dir), Some(tls)) = (&setup.identity_dir, tls) {
        let base = format!("https://localhost:{}", tls.port());
        let ca = dir.join("ca.pem");
        let ca = ca.display();
        out.push_str(&format!(
            "\n  Agent identity (a certificate from the demo CA, then mTLS on {base}):\n    \
             openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out agent.key\n    \
             curl -s --cacert {ca} {base}/identity/register -H 'Authorization: Bearer {admin}' \\\n      \
             -H 'Content-Type: application/json' -d \"{{\\\"name\\\":\\\"my-agent\\\",\\\"public_key_pem\\\":\\\"$(openssl pkey -in agent.key -pubout | awk '{{printf \"%s\\\\n\", $0}}')\\\"}}\" \\\n      \
             | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"cert_pem\"])' > agent.pem\n    \
             curl -s --cacert {ca} --cert agent.pem --key agent.key {base}/mcp \\\n      \
             -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -d '{init}'\n    \
             portcullis identity list --store {store}\n",
            admin = setup.admin_key,
            init = INITIALIZE,
            store = dir.join("identities.jsonl").display(),
        ));
    }
    for note in &setup.notes {
        out.push_str(&format!("\nnote: {note}"));
    }
    out.push('\n');
    out
}

/// The `initialize` request the banner's `curl` lines send.
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"0"}}}"#;

/// The demo's public URL: the listen address, with an unspecified IP shown as loopback.
pub fn demo_public_url(listen: SocketAddr) -> String {
    let mut shown = listen;
    if shown.ip().is_unspecified() {
        shown.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{shown}")
}

fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn random_key() -> String {
    let mut bytes = [0u8; 24];
    // The system RNG failing is not recoverable in any useful way; fall back to the clock so
    // the demo still starts with a key nobody else knows in advance.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes[..16].copy_from_slice(&nanos.to_le_bytes());
    }
    format!("demo-key-{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_is_a_valid_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let setup = demo_setup(
            "127.0.0.1:8080".parse().expect("addr"),
            "http://127.0.0.1:9999/mcp",
            dir.path(),
        );
        let config = portcullis::config::load_str(&setup.config_toml, "<demo>", dir.path())
            .unwrap_or_else(|e| panic!("demo config invalid: {e}\n{}", setup.config_toml));
        assert_eq!(config.routes.len(), 1);
        assert_eq!(setup.read_key, DEMO_READ_KEY);
    }

    #[test]
    fn demo_keys_are_random_off_loopback() {
        let setup = demo_setup(
            "0.0.0.0:8080".parse().expect("addr"),
            "http://127.0.0.1:9999/mcp",
            Path::new("/nonexistent"),
        );
        assert_ne!(setup.read_key, DEMO_READ_KEY);
        assert!(setup.read_key.starts_with("demo-key-"));
    }
}
