//! `portcullis clients add|list|revoke`: the OAuth clients of the authorization server, kept
//! in its clients file (`authorization_server.clients_file`). The file's format, checks and
//! safe rewrite are the library's ([`portcullis::oauth::clients_file`]); this module finds
//! the file, turns arguments into an entry and words the answers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use portcullis::engine::api_key::hash_key;
use portcullis::oauth::clients_file::{
    self, CLIENT_CREDENTIALS, RawClient, Revoked, TOKEN_EXCHANGE,
};
use portcullis::oauth::settings::{DEFAULT_MAX_TOKEN_LIFETIME_SECS, DEFAULT_TOKEN_LIFETIME_SECS};

use crate::commands::CliError;

/// `clients`.
#[derive(Debug, Args)]
pub struct ClientsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ClientsCommand,
    /// The clients file [default: `authorization_server.clients_file` of --config].
    #[arg(long, global = true, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The config whose `authorization_server.clients_file` names the clients file.
    #[arg(
        long,
        short,
        global = true,
        env = "PORTCULLIS_CONFIG",
        value_name = "FILE",
        default_value = "portcullis.toml"
    )]
    pub config: PathBuf,
}

/// `clients` commands.
#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Add a client and print its id and secret, once: only the secret's hash is stored.
    /// With --jwks-file the client authenticates with `private_key_jwt` and gets no secret.
    /// A clients file that does not exist yet is created.
    Add(AddClientArgs),
    /// List the clients: id, scopes, resources, grants, authentication, revoked.
    List,
    /// Revoke a client: its credentials are refused and its tokens stop working.
    Revoke {
        /// The client's id.
        name: String,
    },
}

/// `clients add`.
#[derive(Debug, Args)]
pub struct AddClientArgs {
    /// The client id: 1 to 64 letters, digits, `.`, `_` or `-`.
    pub name: String,
    /// Scopes the client may be given, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, value_name = "SCOPE,…")]
    pub scopes: Vec<String>,
    /// Route paths it may get tokens for, comma-separated [default: every route].
    #[arg(long, value_delimiter = ',', value_name = "PATH,…")]
    pub resources: Vec<String>,
    /// Lifetime of its tokens in seconds [default: 600].
    #[arg(long, value_name = "SECS")]
    pub lifetime: Option<u64>,
    /// Grants it may use, comma-separated: `client_credentials`, `token-exchange`
    /// [default: client_credentials].
    #[arg(long, value_delimiter = ',', value_name = "GRANT,…")]
    pub grants: Vec<String>,
    /// It may exchange a user's token without an actor token (act as the user, not for).
    #[arg(long)]
    pub impersonation: bool,
    /// It may call the introspection endpoint.
    #[arg(long)]
    pub introspection: bool,
    /// A JWKS file of its public keys: the client authenticates with `private_key_jwt`
    /// and no secret is made.
    #[arg(long, value_name = "FILE")]
    pub jwks_file: Option<PathBuf>,
}

/// Runs a `clients` command; returns what to print.
pub fn run(args: &ClientsArgs) -> Result<String, CliError> {
    let target = find_clients_file(args)?;
    let file = &target.file;
    match &args.command {
        ClientsCommand::Add(add) => add_client(&target, add),
        ClientsCommand::List => list(file),
        ClientsCommand::Revoke { name } => Ok(match clients_file::revoke(file, name)? {
            Revoked::Now => format!(
                "client `{name}` revoked in {}: its credentials are refused and the tokens \
                 issued to it stop working once the gateway has reloaded the file\n",
                file.display()
            ),
            Revoked::Already => format!(
                "client `{name}` was already revoked in {}; the file is unchanged\n",
                file.display()
            ),
        }),
    }
}

/// The clients file, and what its config says about the entries when it was found
/// through one.
#[derive(Debug)]
struct Target {
    file: PathBuf,
    config: Option<ConfigFacts>,
}

/// What the gateway checks a client entry against besides the entry itself: an id unique
/// with the config's own clients, a resource that is a route, a lifetime within
/// `max_token_lifetime_secs`. Checked at `add` too,
/// since the gateway refuses a clients file with a bad entry as a whole (and keeps serving
/// the last good one), which would leave the new client silently unknown.
#[derive(Debug)]
struct ConfigFacts {
    source: String,
    routes: Vec<String>,
    /// `authorization_server.clients[].id`: one registry holds them and the file's.
    inline_ids: Vec<String>,
    max_lifetime: u64,
}

/// `--file`, else the config's `authorization_server.clients_file`, relative to the
/// config's folder as the gateway reads it. Only the keys needed are read: the commands
/// must work on any config the running gateway would load.
fn find_clients_file(args: &ClientsArgs) -> Result<Target, CliError> {
    #[derive(serde::Deserialize)]
    struct Config {
        authorization_server: Option<AuthorizationServer>,
        #[serde(default)]
        routes: Vec<Route>,
    }
    #[derive(serde::Deserialize)]
    struct AuthorizationServer {
        clients_file: Option<String>,
        max_token_lifetime_secs: Option<u64>,
        #[serde(default)]
        clients: Vec<Named>,
    }
    #[derive(serde::Deserialize)]
    struct Named {
        id: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Route {
        path: Option<String>,
    }

    if let Some(file) = &args.file {
        return Ok(Target {
            file: file.clone(),
            config: None,
        });
    }
    let config = &args.config;
    let text = std::fs::read_to_string(config).map_err(|source| CliError::Input {
        what: format!(
            "config file `{}` (name the clients file with --file, or the config with --config)",
            config.display()
        ),
        source,
    })?;
    let parsed: Config = toml::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "{}: cannot read `authorization_server.clients_file`: {}",
            config.display(),
            e.message()
        ))
    })?;
    let server = parsed.authorization_server.unwrap_or(AuthorizationServer {
        clients_file: None,
        max_token_lifetime_secs: None,
        clients: Vec::new(),
    });
    let name = server.clients_file.ok_or_else(|| {
        CliError::Usage(format!(
            "{} has no `authorization_server.clients_file`: add `clients_file = \
             \"clients.toml\"` to `[authorization_server]`, or name the file with --file",
            config.display()
        ))
    })?;
    Ok(Target {
        file: config.parent().unwrap_or(Path::new("")).join(name),
        config: Some(ConfigFacts {
            source: config.display().to_string(),
            routes: parsed.routes.into_iter().filter_map(|r| r.path).collect(),
            inline_ids: server.clients.into_iter().filter_map(|c| c.id).collect(),
            max_lifetime: server
                .max_token_lifetime_secs
                .unwrap_or(DEFAULT_MAX_TOKEN_LIFETIME_SECS),
        }),
    })
}

/// The checks of [`ConfigFacts`], worded for the command line.
fn check_against_config(facts: &ConfigFacts, args: &AddClientArgs) -> Result<(), CliError> {
    if facts.inline_ids.contains(&args.name) {
        return Err(CliError::Usage(format!(
            "a client named `{}` is already in `authorization_server.clients` of {}; pick \
             another name",
            args.name, facts.source
        )));
    }
    for resource in &args.resources {
        if !facts
            .routes
            .iter()
            .any(|route| route == resource.trim_end_matches('/'))
        {
            return Err(CliError::Usage(format!(
                "--resources: `{resource}` is not a route of {} (its routes: {})",
                facts.source,
                facts.routes.join(", ")
            )));
        }
    }
    let lifetime = args.lifetime.unwrap_or(DEFAULT_TOKEN_LIFETIME_SECS);
    if lifetime > facts.max_lifetime {
        return Err(CliError::Usage(format!(
            "--lifetime: {lifetime} seconds is more than the {} that \
             `authorization_server.max_token_lifetime_secs` of {} allows",
            facts.max_lifetime, facts.source
        )));
    }
    Ok(())
}

fn add_client(target: &Target, args: &AddClientArgs) -> Result<String, CliError> {
    let file = target.file.as_path();
    if let Some(facts) = &target.config {
        check_against_config(facts, args)?;
    }
    let grants = if args.grants.is_empty() {
        None
    } else {
        let mut grants = Vec::new();
        for name in &args.grants {
            let grant = clients_file::grant_type(name).map_err(CliError::Usage)?;
            if !grants.contains(&grant) {
                grants.push(grant);
            }
        }
        Some(grants.into_iter().map(str::to_owned).collect())
    };
    let mut client = RawClient {
        id: args.name.clone(),
        scopes: args.scopes.clone(),
        resources: args.resources.clone(),
        token_lifetime_secs: args.lifetime,
        grants,
        impersonation: args.impersonation,
        introspection: args.introspection,
        ..RawClient::default()
    };
    let mut out = format!("client_id      {}\n", client.id);
    if let Some(jwks) = &args.jwks_file {
        check_jwks_file(jwks)?;
        client.jwks_file = Some(relative_to_folder_of(file, jwks)?);
        clients_file::add(file, &client)?;
        let _ = writeln!(
            out,
            "auth           private_key_jwt, with the public keys in {}\n\nAdded to {}.",
            jwks.display(),
            file.display()
        );
    } else {
        let secret = clients_file::new_secret()?;
        client.secret_hash = Some(hash_key(secret.expose()));
        clients_file::add(file, &client)?;
        let _ = writeln!(
            out,
            "client_secret  {}\n\nAdded to {}. The secret is not stored, only its hash: copy \
             it now, it cannot be shown again.",
            secret.expose(),
            file.display()
        );
    }
    Ok(out)
}

/// A JWKS file is checked now, so that a typo fails here rather than at the gateway's
/// next reload.
fn check_jwks_file(path: &Path) -> Result<(), CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Input {
        what: format!("JWKS file `{}`", path.display()),
        source,
    })?;
    let keys = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|jwks| jwks.get("keys")?.as_array().map(Vec::len));
    match keys {
        Some(1..) => Ok(()),
        _ => Err(CliError::Usage(format!(
            "{} is not a JWKS: expected a JSON object `{{\"keys\": [...]}}` with at least one \
             public key",
            path.display()
        ))),
    }
}

/// `path` as the clients file names it: relative to the clients file's folder (the gateway
/// resolves it from there) when it lies inside it, else absolute.
fn relative_to_folder_of(file: &Path, path: &Path) -> Result<String, CliError> {
    let absolute = |p: &Path| {
        std::path::absolute(p).map_err(|source| CliError::Input {
            what: format!("the path `{}`", p.display()),
            source,
        })
    };
    let path = absolute(path)?;
    let folder = absolute(file)?.parent().map(Path::to_owned);
    let shown = match folder.as_deref().and_then(|f| path.strip_prefix(f).ok()) {
        Some(inside) => inside,
        None => &path,
    };
    Ok(shown.display().to_string())
}

fn list(file: &Path) -> Result<String, CliError> {
    if !file.exists() {
        return Ok(format!(
            "no clients: {} does not exist yet (`portcullis clients add` creates it)\n",
            file.display()
        ));
    }
    let clients = clients_file::read(file)
        .map_err(clients_file::ClientsFileError::from)?
        .clients;
    if clients.is_empty() {
        return Ok(format!("no clients in {}\n", file.display()));
    }
    let header = ["ID", "SCOPES", "RESOURCES", "GRANTS", "AUTH", "REVOKED"].map(str::to_owned);
    let rows: Vec<[String; 6]> = std::iter::once(header)
        .chain(clients.iter().map(|client| {
            let grants = match &client.grants {
                None => CLIENT_CREDENTIALS.to_owned(),
                Some(grants) => grants
                    .iter()
                    .map(|g| {
                        if g == TOKEN_EXCHANGE {
                            "token-exchange"
                        } else {
                            g
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            };
            let auth = if client.secret_hash.is_some() {
                "client_secret"
            } else {
                "private_key_jwt"
            };
            [
                client.id.clone(),
                client.scopes.join(","),
                if client.resources.is_empty() {
                    "(every route)".to_owned()
                } else {
                    client.resources.join(",")
                },
                grants,
                auth.to_owned(),
                if client.revoked { "yes" } else { "no" }.to_owned(),
            ]
        }))
        .collect();
    let widths: Vec<usize> = (0..6)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out)
}
