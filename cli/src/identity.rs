//! `portcullis identity init|list|revoke`: the agent-identity CA's material and its store.
//! `init` writes a new CA and a listener certificate it signed; `list` and `revoke` work on
//! the store (`[identity] store`), which the running gateway reads again within a second —
//! a revocation needs no restart and no reload. The store's format and its crash-safe,
//! locked append are the library's ([`portcullis::identity::registry`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use portcullis::identity::book::{Event, Revoked};
use portcullis::identity::ca::{self, rfc3339};
use portcullis::identity::{Registry, StoreError};
use portcullis::log_text::escape_control;

use crate::commands::CliError;
use crate::signing_key::write_new_private;

/// `identity`.
#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: IdentityCommand,
    /// The identity store (default: `[identity] store` of the config, or `identities.jsonl`
    /// beside it).
    #[arg(long, global = true, value_name = "FILE")]
    pub store: Option<PathBuf>,
    /// The gateway's config file, to find the store.
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

/// `identity` commands.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Write a new identity CA (`ca.pem`, `ca.key`) and a listener certificate it signed
    /// (`server.pem`, `server.key`) into DIR; keys are owner-only and never overwritten.
    Init {
        /// The folder to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Host names and IP addresses the listener certificate is for.
        #[arg(
            long = "server-name",
            value_delimiter = ',',
            value_name = "NAME,…",
            default_value = "localhost,127.0.0.1"
        )]
        server_names: Vec<String>,
        /// The CA's common name.
        #[arg(long, default_value = "Portcullis agent identity CA")]
        name: String,
    },
    /// Every identity: id, name, owner, current fingerprint, valid until, revoked.
    List,
    /// Revoke an identity and every certificate it has; the gateway refuses them within a
    /// second, on new and open connections.
    Revoke {
        /// The identity's id (`idn_…`).
        id: String,
        /// Why (kept in the store).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// Runs an `identity` command; returns what to print.
pub fn run(args: &IdentityArgs) -> Result<String, CliError> {
    match &args.command {
        IdentityCommand::Init {
            dir,
            server_names,
            name,
        } => init(dir, server_names, name),
        IdentityCommand::List => list(&store(args)?),
        IdentityCommand::Revoke { id, reason } => revoke(&store(args)?, id, reason),
    }
}

fn init(dir: &Path, server_names: &[String], name: &str) -> Result<String, CliError> {
    let generated = ca::generate(name, server_names).map_err(|e| CliError::Usage(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|source| CliError::Input {
        what: format!("folder `{}`", dir.display()),
        source,
    })?;
    write_ca(dir, &generated)?;
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let d = dir.display();
    Ok(format!(
        "Wrote a new identity CA and a listener certificate for {names} to {d}.\n\
         Keep ca.key secret: whoever has it can mint agent identities.\n\n\
         [server.tls]\n\
         cert = \"{d}/server.pem\"\n\
         key = \"{d}/server.key\"\n\n\
         [identity]\n\
         ca_cert = \"file://{d}/ca.pem\"\n\
         ca_key = \"file://{d}/ca.key\"\n\
         route = \"/mcp\"                      # whose chain authenticates registrations\n\
         scopes = [\"mcp:read\"]               # what an identity may get\n",
        names = server_names.join(", "),
    ))
}

/// Writes a generated CA and its listener certificate into `dir` (which exists): keys
/// owner-only, certificates world-readable, none over an existing file. `init` and the
/// embedded demo both write theirs here.
pub(crate) fn write_ca(dir: &Path, generated: &ca::Generated) -> Result<(), CliError> {
    let files = [
        ("ca.key", &generated.ca_key),
        ("server.key", &generated.server_key),
        ("ca.pem", &generated.ca_cert),
        ("server.pem", &generated.server_cert),
    ];
    if let Some((file, _)) = files.iter().find(|(f, _)| dir.join(f).exists()) {
        return Err(CliError::Usage(format!(
            "{} already exists: a CA is never overwritten; pick another --dir",
            dir.join(file).display()
        )));
    }
    for (file, text) in files {
        write_new_private(&dir.join(file), text.as_bytes())?;
    }
    for public in ["ca.pem", "server.pem"] {
        set_mode(&dir.join(public), 0o644);
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// The store: `--store`, else the config's `[identity] store` (relative to the config).
fn store(args: &IdentityArgs) -> Result<PathBuf, CliError> {
    #[derive(serde::Deserialize)]
    struct Config {
        identity: Option<Identity>,
    }
    #[derive(serde::Deserialize)]
    struct Identity {
        store: Option<String>,
    }
    if let Some(store) = &args.store {
        return Ok(store.clone());
    }
    let config = &args.config;
    let text = std::fs::read_to_string(config).map_err(|source| CliError::Input {
        what: format!(
            "config file `{}` (name the store with --store, or the config with --config)",
            config.display()
        ),
        source,
    })?;
    let parsed: Config = toml::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "{}: cannot read `[identity]`: {}",
            config.display(),
            e.message()
        ))
    })?;
    let Some(identity) = parsed.identity else {
        return Err(CliError::Usage(format!(
            "{} has no `[identity]` section: the identity CA is off there; name the store \
             with --store",
            config.display()
        )));
    };
    let name = identity
        .store
        .unwrap_or_else(|| "identities.jsonl".to_owned());
    Ok(config.parent().unwrap_or(Path::new("")).join(name))
}

fn open(store: &Path) -> Result<std::sync::Arc<Registry>, CliError> {
    Registry::open(store).map_err(|e| CliError::Usage(e.to_string()))
}

fn list(store: &Path) -> Result<String, CliError> {
    if !store.exists() {
        return Ok(format!(
            "{} does not exist yet: no identity has been registered\n",
            store.display()
        ));
    }
    let registry = open(store)?;
    let mut identities = registry.read(|book| book.iter().cloned().collect::<Vec<_>>());
    identities.sort_by(|a, b| a.registered_at.cmp(&b.registered_at).then(a.id.cmp(&b.id)));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:<20} {:<24} {:<64} {:<20} REVOKED",
        "ID", "NAME", "OWNER", "FINGERPRINT", "VALID UNTIL"
    );
    for identity in identities {
        let current = identity.current();
        let _ = writeln!(
            out,
            "{:<28} {:<20} {:<24} {:<64} {:<20} {}",
            identity.id,
            identity.name,
            escape_control(&identity.owner),
            current.map_or("-", |c| c.fingerprint.as_str()),
            current.map_or_else(|| "-".to_owned(), |c| rfc3339(c.not_after)),
            identity.revoked_at.map_or_else(|| "no".to_owned(), rfc3339),
        );
    }
    Ok(out)
}

/// Why a revocation wrote nothing.
enum NotRevoked {
    Unknown,
    Store(StoreError),
}

impl From<StoreError> for NotRevoked {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

fn revoke(store: &Path, id: &str, reason: &str) -> Result<String, CliError> {
    if !store.exists() {
        return Err(CliError::Usage(format!(
            "{} does not exist: no identity has been registered there",
            store.display()
        )));
    }
    let registry = open(store)?;
    let at = portcullis::identity::now();
    let outcome = registry.transact(|book| match book.get(id) {
        None => Err(NotRevoked::Unknown),
        Some(identity) if identity.revoked_at.is_some() => Ok((Vec::new(), false)),
        Some(_) => Ok((
            vec![Event::Revoked(Revoked {
                id: id.to_owned(),
                at,
                reason: reason.to_owned(),
            })],
            true,
        )),
    });
    match outcome {
        Ok(true) => Ok(format!(
            "Revoked {id}: the gateway refuses its certificates within a second, on new and open connections.\n"
        )),
        Ok(false) => Ok(format!("{id} was already revoked.\n")),
        Err(NotRevoked::Unknown) => Err(CliError::Usage(format!(
            "no identity `{id}` in {}; `portcullis identity list` shows them",
            store.display()
        ))),
        Err(NotRevoked::Store(error)) => Err(CliError::Usage(error.to_string())),
    }
}
