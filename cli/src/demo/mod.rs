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
//! - rules: `/mcp` needs `mcp:read`; `tools/call` of `admin_*` needs `admin`.

pub mod upstream;

use std::net::SocketAddr;
use std::path::Path;

use portcullis::engine::api_key::hash_key;

/// The reader key used on loopback.
pub const DEMO_READ_KEY: &str = "demo-key-reader";
/// The admin key used on loopback.
pub const DEMO_ADMIN_KEY: &str = "demo-key-admin";
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
    /// Whether the partner-token provider is in the chain.
    pub partner_token: bool,
    /// Wasm providers found but not used, and why.
    pub notes: Vec<String>,
}

/// Builds the demo configuration for a gateway on `listen` in front of `upstream_url`,
/// taking example providers from `providers_dir` when it exists.
pub fn demo_setup(listen: SocketAddr, upstream_url: &str, providers_dir: &Path) -> DemoSetup {
    let (read_key, admin_key) = if listen.ip().is_loopback() {
        (DEMO_READ_KEY.to_owned(), DEMO_ADMIN_KEY.to_owned())
    } else {
        (random_key(), random_key())
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
  {{ name = "demo-admin", hash = "{admin_hash}", scopes = ["mcp:read", "admin"] }},
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
        partner_token,
        notes,
    }
}

/// The banner printed at start: keys, a `curl` line and an MCP client line.
pub fn banner(setup: &DemoSetup, public_url: &str) -> String {
    let mcp = format!("{public_url}/mcp");
    let mut out = format!(
        "\nPortcullis demo gateway on {public_url} (embedded config; see `portcullis serve --help`)\n\
         \n  reader key (mcp:read):       {read}\n  admin key  (mcp:read admin): {admin}\n",
        read = setup.read_key,
        admin = setup.admin_key,
    );
    if setup.partner_token {
        let (id, secret) = DEMO_PARTNER;
        out.push_str(&format!(
            "  partner token (Wasm):        Authorization: partner-token {id}:{secret}\n"
        ));
    }
    out.push_str(&format!(
        "\nTry it:\n  curl -s {mcp} -H 'Authorization: Bearer {read}' \\\n    \
         -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\\n    \
         -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{{}},\"clientInfo\":{{\"name\":\"curl\",\"version\":\"0\"}}}}}}'\n\
         \n  MCP client: npx @modelcontextprotocol/inspector --transport http --server-url {mcp} \\\n    \
         --header 'Authorization: Bearer {read}'\n\
         \n  Without a key you get 401 and a WWW-Authenticate challenge; metadata at\n  \
         {public_url}/.well-known/oauth-protected-resource/mcp\n",
        read = setup.read_key,
    ));
    for note in &setup.notes {
        out.push_str(&format!("\nnote: {note}"));
    }
    out.push('\n');
    out
}

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
