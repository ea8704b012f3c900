//! Gateway configs for tests: the standard config every gateway suite starts from, a builder
//! that adds to it (or to a bare `[server]`) only what a test is about, and the placeholders
//! the harness fills in when it knows its ports.
//!
//! A built config is TOML with placeholders, filled by [`fill`]: `{listen}` and `{gateway}`
//! (the gateway's address and URL), `{upstream}` (the upstream's URL), and `{reader}`,
//! `{admin}`, `{noscope}` (the hashes of [`READER_KEY`], [`ADMIN_KEY`], [`NOSCOPE_KEY`]).
//! Tables come out in a fixed order (server, routes, providers, rules, resource, raw TOML),
//! so a test may add them in the order that reads best.

use std::fmt;
use std::net::SocketAddr;

use portcullis::engine::api_key::hash_key;

/// Key with `mcp:read`.
pub const READER_KEY: &str = "test-reader-key-0001";
/// Key with `mcp:read admin`.
pub const ADMIN_KEY: &str = "test-admin-key-0002";
/// Key with no scopes.
pub const NOSCOPE_KEY: &str = "test-noscope-key-0003";

/// The standard keys: name, hash placeholder, scopes.
const KEYS: [(&str, &str, &str); 3] = [
    ("reader", "{reader}", r#"["mcp:read"]"#),
    ("admin", "{admin}", r#"["mcp:read", "admin"]"#),
    ("noscope", "{noscope}", "[]"),
];

/// Fills the placeholders of a config template for a gateway on `addr` in front of
/// `upstream`.
pub fn fill(template: impl fmt::Display, addr: SocketAddr, upstream: &str) -> String {
    template
        .to_string()
        .replace("{listen}", &addr.to_string())
        .replace("{gateway}", &format!("http://{addr}"))
        .replace("{upstream}", upstream)
        .replace("{reader}", &hash_key(READER_KEY))
        .replace("{admin}", &hash_key(ADMIN_KEY))
        .replace("{noscope}", &hash_key(NOSCOPE_KEY))
}

/// The standard test configuration: one MCP route `/mcp` to `{upstream}` behind the `keys`
/// provider (the three standard keys), `mcp:read` to use it, `admin` to call `admin_*`
/// tools, and protected-resource metadata naming `https://auth.example.com`.
pub fn standard() -> TestConfig {
    TestConfig::new()
        .route("/mcp", &["keys"])
        .api_keys(&["reader", "admin", "noscope"])
        .path_rule("/mcp", &["mcp:read"])
        .tool_rule("admin_*", &["admin"])
        .table(
            Order::Resource,
            "[resource]",
            &[
                r#"authorization_servers = ["https://auth.example.com"]"#,
                r#"scopes_supported = ["mcp:read", "admin"]"#,
            ],
        )
}

/// Where a table goes in the rendered text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Order {
    Server,
    Route,
    Provider,
    Rule,
    Resource,
}

/// One TOML table: its header and its `key = value` lines.
#[derive(Debug, Clone)]
struct Table {
    order: Order,
    header: String,
    lines: Vec<String>,
}

impl Table {
    /// Sets each `key = value` line of `lines` (one value a line): replaces the line with
    /// the same key, or adds it.
    fn set(&mut self, lines: &str) {
        let key = |l: &str| l.split('=').next().unwrap_or_default().trim().to_owned();
        for line in lines.lines().filter(|l| !l.trim().is_empty()) {
            match self.lines.iter_mut().find(|l| key(l) == key(line)) {
                Some(existing) => line.clone_into(existing),
                None => self.lines.push(line.to_owned()),
            }
        }
    }
}

/// A gateway config under construction. Each method adds a table; [`TestConfig::with`]
/// sets lines in the table added last. Renders (through `Display`) to TOML with
/// placeholders.
#[derive(Debug, Clone)]
#[must_use]
pub struct TestConfig {
    tables: Vec<Table>,
    raw: String,
}

impl Default for TestConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl TestConfig {
    /// A `[server]` listening on `{listen}` whose public URL is `{gateway}`, and nothing else.
    pub fn new() -> Self {
        Self {
            tables: Vec::new(),
            raw: String::new(),
        }
        .table(
            Order::Server,
            "[server]",
            &[
                r#"listen = "{listen}""#,
                r#"public_url = "{gateway}""#,
                // Tests send made-up `Host` values on purpose (`gateway.test`, spoofing
                // cases); the host allow-list has tests of its own (`browser.rs`).
                r#"allowed_hosts = ["*"]"#,
            ],
        )
    }

    /// A `[server]` for a config file that `serve_watched` loads itself (it binds its own
    /// port): port 0, and a public URL nobody calls.
    pub fn for_file() -> Self {
        Self::new()
            .server(r#"listen = "127.0.0.1:0""#)
            .server(r#"public_url = "http://127.0.0.1:9""#)
    }

    fn table(mut self, order: Order, header: &str, lines: &[&str]) -> Self {
        let mut table = Table {
            order,
            header: header.to_owned(),
            lines: Vec::new(),
        };
        for line in lines {
            table.set(line);
        }
        self.tables.push(table);
        self
    }

    /// Sets `line` (`key = value`, or several such lines, each value on its line) in the
    /// table added last.
    pub fn with(mut self, line: &str) -> Self {
        self.tables
            .last_mut()
            .expect("a config has its [server]")
            .set(line);
        self
    }

    /// Sets `line` (or several lines) in `[server]`.
    pub fn server(mut self, line: &str) -> Self {
        self.tables
            .iter_mut()
            .find(|t| t.order == Order::Server)
            .expect("a config has its [server]")
            .set(line);
        self
    }

    /// Forward-auth on, for a `proxy` on 127.0.0.1 (`trusted_proxies` and
    /// `forward_auth_proxy`).
    pub fn behind(self, proxy: &str) -> Self {
        self.server(r#"trusted_proxies = ["127.0.0.1"]"#)
            .server(&format!("forward_auth_proxy = {proxy:?}"))
    }

    /// An MCP route at `path` to `{upstream}`, through `chain`.
    pub fn route(self, path: &str, chain: &[&str]) -> Self {
        self.table(
            Order::Route,
            "[[routes]]",
            &[
                &format!("path = {path:?}"),
                r#"upstream = "{upstream}""#,
                &format!("chain = {chain:?}"),
            ],
        )
    }

    /// A plain HTTP route (`mcp = false`) at `path` to `{upstream}<path>`, through `chain`.
    pub fn http_route(self, path: &str, chain: &[&str]) -> Self {
        self.route(path, chain)
            .with(&format!(r#"upstream = "{{upstream}}{path}""#))
            .with("mcp = false")
    }

    /// Points every route at `url` in place of the `{upstream}` placeholder: for a config
    /// file that no harness fills in.
    pub fn upstream(mut self, url: &str) -> Self {
        for table in self.tables.iter_mut().filter(|t| t.order == Order::Route) {
            for line in &mut table.lines {
                *line = line.replace("{upstream}", url);
            }
        }
        self
    }

    /// Sets `line` in the route at `path`.
    pub fn on_route(mut self, path: &str, line: &str) -> Self {
        let path_line = format!("path = {path:?}");
        self.tables
            .iter_mut()
            .find(|t| t.order == Order::Route && t.lines.contains(&path_line))
            .unwrap_or_else(|| panic!("no route at {path}"))
            .set(line);
        self
    }

    /// Sets `line` in the provider `name`.
    pub fn on_provider(mut self, name: &str, line: &str) -> Self {
        let header = format!("[providers.{name}]");
        self.tables
            .iter_mut()
            .find(|t| t.header == header)
            .unwrap_or_else(|| panic!("no provider {name}"))
            .set(line);
        self
    }

    /// A provider `name` of `kind` (`type = "kind"`); its settings follow with
    /// [`TestConfig::with`].
    pub fn provider(self, name: &str, kind: &str) -> Self {
        self.table(
            Order::Provider,
            &format!("[providers.{name}]"),
            &[&format!("type = {kind:?}")],
        )
    }

    /// A Wasm provider `name` running the component at `component`.
    pub fn wasm(self, name: &str, component: &str) -> Self {
        self.provider(name, "wasm")
            .with(&format!("component = {component:?}"))
    }

    /// A JWT provider `name` trusting `issuer`, with keys from `jwks_url`; its `audience`
    /// follows with [`TestConfig::with`].
    pub fn jwt(self, name: &str, issuer: &str, jwks_url: &str) -> Self {
        self.provider(name, "jwt")
            .with(&format!("issuer = {issuer:?}"))
            .with(&format!("jwks_url = {jwks_url:?}"))
    }

    /// The `keys` API-key provider with those of the standard keys named in `names`
    /// (`reader`, `admin`, `noscope`), in place of the one already there.
    pub fn api_keys(mut self, names: &[&str]) -> Self {
        self.tables.retain(|t| t.header != "[providers.keys]");
        let keys: Vec<String> = names
            .iter()
            .map(|name| {
                let (name, hash, scopes) = KEYS
                    .iter()
                    .find(|(n, ..)| n == name)
                    .unwrap_or_else(|| panic!("no standard key {name}"));
                format!(r#"{{ name = "{name}", hash = "{hash}", scopes = {scopes} }}"#)
            })
            .collect();
        self.provider("keys", "api_key")
            .with(&format!("keys = [{}]", keys.join(", ")))
    }

    /// A rule: requests for `target` (a `key = value` line, or several) need `scopes`.
    pub fn rule(self, target: &str, scopes: &[&str]) -> Self {
        self.table(Order::Rule, "[[rules]]", &[])
            .with(target)
            .with(&format!("scopes = {scopes:?}"))
    }

    /// A rule: paths under `path` need `scopes`.
    pub fn path_rule(self, path: &str, scopes: &[&str]) -> Self {
        self.rule(&format!("path = {path:?}"), scopes)
    }

    /// A rule: calling a tool matching `tool` needs `scopes`.
    pub fn tool_rule(self, tool: &str, scopes: &[&str]) -> Self {
        self.rule(
            &format!("mcp_method = \"tools/call\"\ntool = {tool:?}"),
            scopes,
        )
    }

    /// Raw TOML, put after every table: for what the builder has no words for.
    pub fn toml(mut self, text: &str) -> Self {
        self.raw.push('\n');
        self.raw.push_str(text);
        self
    }
}

impl fmt::Display for TestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut tables: Vec<&Table> = self.tables.iter().collect();
        tables.sort_by_key(|t| t.order);
        for table in tables {
            writeln!(f, "\n{}", table.header)?;
            for line in &table.lines {
                writeln!(f, "{line}")?;
            }
        }
        f.write_str(&self.raw)
    }
}
