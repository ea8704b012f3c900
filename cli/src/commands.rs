//! The command line: `serve` (default), `check`, `eval`, `hash-key` and `new`, each a function
//! here, and `clients` and `signing-key` from their own modules; `main.rs` only parses
//! arguments and maps the result to an exit code. A
//! config becomes a site through the library's composition root ([`portcullis::load`]);
//! the embedded demo is the one thing added here.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand};
use http::{HeaderName, HeaderValue, Method};

use portcullis::config;
use portcullis::gateway::admission::{Entry, admit};
use portcullis::gateway::body::full;
use portcullis::gateway::{ConnInfo, Gateway, listener, tls};
use portcullis::load::{self, Loaded, SiteError, Source};
use portcullis::observability::Metrics;
use portcullis::reload;
use portcullis::wasm::{ProviderKind, WasmRuntime};

use crate::clients::ClientsArgs;
use crate::demo::{self, upstream::DemoUpstream};
use crate::logging::init_logging;
use crate::scaffold::{self, NewProvider, ScaffoldError};
use crate::signing_key::{SigningKeyArgs, SigningKeyError};

/// Auth gateway for MCP servers, with auth providers as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about,
    long_about = "Portcullis sits in front of MCP servers (and other HTTP APIs) and lets in \
                  exactly the right callers: API keys, JWTs, client certificates and custom \
                  WebAssembly providers, chained; scope rules per route and tool; OAuth \
                  resource-server challenges and metadata; a forward-auth endpoint.\n\n\
                  Run without arguments to start the embedded demo on 127.0.0.1:8080."
)]
pub struct Cli {
    /// What to do (default: `serve`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (default). Without --config, runs the embedded demo: a demo MCP
    /// server, demo API keys printed at start, and the example Wasm providers.
    Serve(ServeArgs),
    /// Validate a config file and compile every Wasm component it names; exits non-zero
    /// with the reason when something is wrong.
    Check(CheckArgs),
    /// Run one described request through the engine and print the decision, the HTTP
    /// answer the gateway would give, and the trace. Exit code: 0 allowed, 1 denied.
    Eval(EvalArgs),
    /// Print the `sha256:<hex>` form of an API key, for `hash = "…"` in config.
    HashKey(HashKeyArgs),
    /// Create a provider crate that builds to a Wasm component and passes its own tests.
    #[command(long_about = NEW_ABOUT)]
    New(NewArgs),
    /// API keys in an `api_key` provider's keys file: `add` (prints the key once), `list`,
    /// `revoke`.
    Keys(crate::keys::KeysArgs),
    /// The authorization server's OAuth clients: `add` (prints the secret once), `list`,
    /// `revoke`, in its clients file.
    Clients(ClientsArgs),
    /// The authorization server's token-signing keys: `new` writes one.
    SigningKey(SigningKeyArgs),
    /// The agent-identity CA: `init` writes a CA and a listener certificate, `list` and
    /// `revoke` work on its store of issued identities.
    Identity(crate::identity::IdentityArgs),
}

const NEW_ABOUT: &str = "Create a provider crate that builds to a Wasm component and passes \
its own tests.\n\n\
Writes <DIR>/<NAME>/: Cargo.toml (its own workspace, depending on the Portcullis SDK by \
path), src/lib.rs (a working provider with native tests), README.md, rust-toolchain.toml \
and .gitignore. Then prints the next steps: `cargo test`, `cargo build --release --target \
wasm32-wasip2`, copying the component into the gateway's providers directory, and the \
config table that turns it on. An existing directory is never overwritten.\n\n\
The SDK is not published: the crate depends on it by path, from --sdk, or the SDK of the \
checkout this binary was built from.";

/// `serve`.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Config file (TOML). Without it, the embedded demo configuration runs.
    #[arg(long, short, env = "PORTCULLIS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of `.wasm` providers (overrides `server.providers_dir`).
    #[arg(long, value_name = "DIR")]
    pub providers: Option<PathBuf>,
    /// Address to listen on (overrides `server.listen`; default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

/// `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Config file (TOML).
    #[arg(long, short, env = "PORTCULLIS_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Directory of `.wasm` providers (overrides `server.providers_dir`).
    #[arg(long, value_name = "DIR")]
    pub providers: Option<PathBuf>,
}

/// `eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Config file (TOML).
    #[arg(long, short, env = "PORTCULLIS_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Directory of `.wasm` providers (overrides `server.providers_dir`).
    #[arg(long, value_name = "DIR")]
    pub providers: Option<PathBuf>,
    /// HTTP method, in upper case as the gateway requires.
    #[arg(long, short, default_value = "POST")]
    pub method: String,
    /// Request path, with an optional query (`/mcp?x=1`).
    #[arg(long, short)]
    pub path: String,
    /// A request header, `Name: value`; repeat for more.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// File holding the request body (an MCP JSON-RPC message); `-` reads stdin. Sent as
    /// `Content-Type: application/json` unless a `--header` names another.
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,
    /// Client address the request comes from.
    #[arg(long, value_name = "ADDR")]
    pub peer: Option<SocketAddr>,
}

/// `hash-key`.
#[derive(Debug, Args)]
pub struct HashKeyArgs {
    /// The key. Prefer --stdin: a key on the command line lands in shell history.
    #[arg(conflicts_with = "stdin", required_unless_present = "stdin")]
    pub key: Option<String>,
    /// Read the key from standard input (one trailing newline is ignored).
    #[arg(long)]
    pub stdin: bool,
}

/// `new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The provider's name: lower-case letters, digits and single dashes, starting with a
    /// letter (`acme-token`). It names the crate, the component and the config table.
    pub name: String,
    /// Which world the provider targets.
    #[arg(
        long,
        default_value = "authenticator",
        value_parser = clap::builder::PossibleValuesParser::new(
            ProviderKind::ALL.map(ProviderKind::as_str)
        )
        .try_map(|name| name.parse::<ProviderKind>()),
    )]
    pub kind: ProviderKind,
    /// Where to create the crate's directory (default: the current directory).
    #[arg(long, value_name = "PATH", default_value = ".")]
    pub dir: PathBuf,
    /// The SDK (`guest-providers/sdk` of a Portcullis checkout) to depend on
    /// [default: the SDK of the checkout this binary was built from].
    #[arg(long, env = "PORTCULLIS_SDK", value_name = "PATH")]
    pub sdk: Option<PathBuf>,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration is unusable, or its site could not be built.
    #[error(transparent)]
    Site(#[from] SiteError),
    /// TLS settings are unusable.
    #[error("{source}: check `[server.tls]` in {file}")]
    Tls {
        /// The config file.
        file: String,
        /// Why.
        source: tls::TlsError,
    },
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr}: {source}; pick another with --listen")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The demo upstream could not start.
    #[error("the demo MCP server could not start: {0}")]
    Demo(std::io::Error),
    /// `new` refused.
    #[error(transparent)]
    Scaffold(#[from] ScaffoldError),
    /// `clients` refused, or the clients file is unusable.
    #[error(transparent)]
    Clients(#[from] portcullis::oauth::clients_file::ClientsFileError),
    /// `keys` refused, or the keys file is unusable.
    #[error(transparent)]
    Keys(#[from] portcullis::engine::api_key::keys_file::KeysFileError),
    /// `signing-key` refused.
    #[error(transparent)]
    SigningKey(#[from] SigningKeyError),
    /// An argument is malformed.
    #[error("{0}")]
    Usage(String),
    /// Reading an input failed.
    #[error("cannot read {what}: {source}")]
    Input {
        /// What was being read.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A configuration brought up, and the demo upstream when it is the embedded default.
#[derive(Debug)]
pub struct Started {
    /// The config and its site.
    pub loaded: Loaded,
    /// The demo upstream, when running the embedded default (kept alive with the site).
    pub demo: Option<(DemoUpstream, demo::DemoSetup)>,
}

/// Loads `config` (or the embedded demo when `None`) through the composition root, on
/// `runtime` when given.
pub async fn start(
    config: Option<&Path>,
    providers: Option<&Path>,
    listen: Option<SocketAddr>,
    runtime: Option<WasmRuntime>,
) -> Result<Started, CliError> {
    if let Some(config) = config {
        let source = Source {
            config: config.to_owned(),
            providers: providers.map(Path::to_owned),
            listen,
        };
        let loaded = load::from_source(&source, runtime).await?;
        return Ok(Started { loaded, demo: None });
    }
    let listen = listen.unwrap_or_else(|| {
        config::DEFAULT_LISTEN
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
    });
    let providers_dir = load::overrides(providers, None)
        .providers_dir
        .unwrap_or_else(|| PathBuf::from("providers"));
    let upstream = demo::upstream::spawn_demo_upstream()
        .await
        .map_err(CliError::Demo)?;
    let setup = demo::demo_setup(listen, &upstream.url, &providers_dir);
    let config = config::load_str(&setup.config_toml, "<embedded demo config>", Path::new("."))
        .map_err(SiteError::from)?;
    let loaded = load::from_config(config, runtime).await?;
    Ok(Started {
        loaded,
        demo: Some((upstream, setup)),
    })
}

/// `serve`: runs until Ctrl-C or SIGTERM, then drains.
pub async fn serve(args: &ServeArgs) -> Result<(), CliError> {
    let Started { loaded, demo } = start(
        args.config.as_deref(),
        args.providers.as_deref(),
        args.listen,
        None,
    )
    .await?;
    let server = &loaded.config.server;
    // A second initialisation (tests, embedding) keeps the first subscriber.
    let _ = init_logging(server.log_format);
    let metrics = Arc::new(Metrics::new());
    let reuse = loaded.reuse();
    let gateway = Gateway::new(loaded.site, metrics);
    let tls = server
        .tls
        .as_ref()
        .map(|t| tls::server_config(t, &gateway))
        .transpose()
        .map_err(|source| CliError::Tls {
            file: loaded.config.source.clone(),
            source,
        })?;
    let bind = |addr| async move {
        listener::bind(addr)
            .await
            .map_err(|source| CliError::Bind { addr, source })
    };
    let listener = bind(server.listen).await?;
    // With `tls_listen`, `listen` stays plain and the second listener speaks TLS.
    let (tls, tls_listener) = match server.tls_listen {
        Some(addr) => (None, Some((bind(addr).await?, tls))),
        None => (tls, None),
    };
    let tls_addr = tls_listener.as_ref().and_then(|(l, _)| l.local_addr().ok());
    // The embedded demo has no file to watch; a config file is watched, with its components.
    let _reloading = args.config.as_ref().map(|path| {
        let source = Source {
            config: path.clone(),
            providers: args.providers.clone(),
            listen: args.listen,
        };
        let reloader = reload::Reloader::new(gateway.clone(), source, reuse.clone());
        reload::Reloading::start(reloader, reload::DEBOUNCE)
    });
    tracing::info!(
        listen = %server.listen,
        public_url = %server.public_url,
        routes = loaded.config.routes.len(),
        providers = loaded.config.providers.len(),
        tls = tls.is_some(),
        tls_listen = ?tls_addr,
        "portcullis listening"
    );
    if let Some((upstream, setup)) = &demo {
        tracing::info!(upstream = %upstream.url, "embedded demo MCP server running");
        println!("{}", demo::banner(setup, &server.public_url, tls_addr));
    }
    // One signal stops every listener.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        listener::shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let grace = server.shutdown_grace;
    let second = tls_listener.map(|(tls_listener, tls)| {
        tokio::spawn(listener::serve(
            tls_listener,
            gateway.clone(),
            tls,
            until_stopped(stopped.clone()),
            grace,
        ))
    });
    listener::serve(listener, gateway, tls, until_stopped(stopped), grace).await;
    if let Some(second) = second {
        let _ = second.await;
    }
    Ok(())
}

/// `check`: a one-paragraph summary when the config is good.
pub async fn check(args: &CheckArgs) -> Result<String, CliError> {
    let loaded = start(Some(&args.config), args.providers.as_deref(), None, None)
        .await?
        .loaded;
    let Loaded { config, site, .. } = loaded;
    let gateway = Gateway::new(site, Arc::new(Metrics::new()));
    if let Some(tls) = &config.server.tls {
        tls::server_config(tls, &gateway).map_err(|source| CliError::Tls {
            file: config.source.clone(),
            source,
        })?;
    }
    let site = gateway.site();
    let providers: Vec<String> = config
        .providers
        .values()
        .map(|p| format!("{} ({})", p.name, p.settings.type_name()))
        .collect();
    let routes: Vec<String> = site.routes.iter().map(|r| r.label().to_owned()).collect();
    Ok(format!(
        "{}: OK — {} route(s) [{}], {} provider(s) [{}]",
        config.source,
        routes.len(),
        routes.join(", "),
        providers.len(),
        providers.join(", ")
    ))
}

/// The result of `eval`: the report to print and whether the request was allowed.
#[derive(Debug, Clone)]
pub struct EvalReport {
    /// Human-readable report.
    pub text: String,
    /// Whether the engine allowed the request.
    pub allowed: bool,
}

/// `eval`: one request through the engine.
pub async fn eval(args: &EvalArgs) -> Result<EvalReport, CliError> {
    let loaded = start(Some(&args.config), args.providers.as_deref(), None, None)
        .await?
        .loaded;
    // Taken as written: the gateway refuses a method not in upper case, and so does eval.
    let method = Method::from_bytes(args.method.as_bytes())
        .map_err(|_| CliError::Usage(format!("`{}` is not an HTTP method", args.method)))?;
    let mut headers = http::HeaderMap::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| CliError::Usage(format!("header `{header}` is not `Name: value`")))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| CliError::Usage(format!("`{name}` is not a header name")))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| CliError::Usage(format!("the value of `{name}` is not a header value")))?;
        headers.append(name, value);
    }
    let body = match &args.body {
        None => None,
        Some(path) if path == Path::new("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|source| CliError::Input {
                    what: "stdin".into(),
                    source,
                })?;
            Some(bytes::Bytes::from(buf))
        }
        Some(path) => Some(bytes::Bytes::from(std::fs::read(path).map_err(
            |source| CliError::Input {
                what: path.display().to_string(),
                source,
            },
        )?)),
    };
    // A body given without a media type is the MCP JSON it usually is.
    if body.is_some() && !headers.contains_key(http::header::CONTENT_TYPE) {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let uri = args
        .path
        .parse::<http::Uri>()
        .ok()
        .filter(|uri| uri.scheme().is_none() && args.path.starts_with('/'))
        .ok_or_else(|| CliError::Usage(format!("`{}` is not a path (`/…`)", args.path)))?;
    let mut request = http::Request::new(());
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let (mut parts, ()) = request.into_parts();
    let conn = ConnInfo::new(args.peer, None, false);
    let body = body.map(full);
    let site = &loaded.site;
    let decided = admit(
        site,
        Entry::Direct,
        &mut parts,
        body,
        &conn,
        &Metrics::new(),
    )
    .await;
    let mut out = format!("request  {method} {}\n", args.path);
    let route = match &decided {
        Ok(admitted) => Some(admitted.route),
        Err(refused) => refused.route,
    };
    if let Some(route) = route {
        out.push_str(&format!("route    {}\n", route.label()));
    }
    let (allowed, trace) = match decided {
        Ok(admitted) => {
            out.push_str(&format!(
                "decision allow — subject `{}` via `{}`, scopes [{}]\n",
                admitted.identity.subject,
                admitted.provider,
                admitted.identity.scopes.join(" ")
            ));
            out.push_str(
                "answer   proxied to the upstream with x-portcullis-subject/scopes/provider\n",
            );
            (true, Some(admitted.trace))
        }
        Err(refused) => {
            if refused.trace.is_some() {
                out.push_str(&format!("decision deny — {}\n", refused.reason));
            }
            out.push_str(&format!("answer   {}\n", refused.rejection.status()));
            if let Some(challenge) = refused.rejection.challenge() {
                out.push_str(&format!("         WWW-Authenticate: {challenge}\n"));
            }
            let (error, description) = refused.rejection.error_body();
            out.push_str(&format!("         {error}: {description}\n"));
            (false, refused.trace)
        }
    };
    if let Some(trace) = trace {
        out.push_str("trace\n");
        for line in trace.to_string().lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    Ok(EvalReport { text: out, allowed })
}

/// `hash-key`.
pub fn hash_key(args: &HashKeyArgs) -> Result<String, CliError> {
    let key = match (&args.key, args.stdin) {
        (Some(key), false) => key.clone(),
        _ => {
            let mut buf = String::new();
            std::io::stdin()
                .read_to_string(&mut buf)
                .map_err(|source| CliError::Input {
                    what: "stdin".into(),
                    source,
                })?;
            let trimmed = buf.strip_suffix('\n').unwrap_or(&buf);
            trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned()
        }
    };
    if key.is_empty() {
        return Err(CliError::Usage("the key is empty".into()));
    }
    Ok(portcullis::engine::api_key::hash_key(&key))
}

/// `new`: writes the crate and returns what to do next.
pub fn new_provider(args: &NewArgs) -> Result<String, CliError> {
    let done = scaffold::scaffold(&NewProvider {
        name: args.name.clone(),
        kind: args.kind,
        dir: args.dir.clone(),
        sdk: args.sdk.clone(),
    })?;
    Ok(done.next_steps)
}
