//! OAuth clients as written by operators: the `[[clients]]` entries of a clients file (and
//! of `[[authorization_server.clients]]` in the main config), their shape, and the file's
//! safe rewrite for `portcullis clients add|revoke`.
//!
//! ```toml
//! [[clients]]
//! id = "agent-1"
//! secret_hash = "sha256:…"          # client_secret_basic / client_secret_post
//! # jwks = '{"keys":[…]}' or jwks_file = "agent-1.jwks.json"   # private_key_jwt
//! scopes = ["mcp:read", "mcp:tools"]
//! resources = ["/mcp"]               # route paths; default: every route
//! token_lifetime_secs = 600          # default 600
//! grants = ["client_credentials"]    # and/or "urn:ietf:params:oauth:grant-type:token-exchange"
//! impersonation = false              # token exchange without an actor token
//! introspection = false              # may call the introspection endpoint
//! revoked = false                    # `portcullis clients revoke` sets it
//! ```
//!
//! The commands rewrite the file with `toml_edit`, so an operator's comments and layout
//! survive, under a lock, so two commands at once do not lose a change, and replace it
//! atomically, so the gateway's hot reload never reads half a file
//! ([`crate::config::rewrite`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, Value};

use super::clients::is_label;
use super::settings::{LIFETIME_CEILING_SECS, LIFETIME_FLOOR_SECS};
use crate::config::{ConfigError, rewrite};
use crate::engine::api_key::parse_hash;
use crate::secret::SecretString;

/// The RFC 8693 grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The client-credentials grant type.
pub const CLIENT_CREDENTIALS: &str = "client_credentials";

/// A whole clients file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsFile {
    /// `[[clients]]`.
    #[serde(default)]
    pub clients: Vec<RawClient>,
}

/// One `[[clients]]` entry, unchecked.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    /// The `client_id`: a plain label (letters, digits, `-`, `_`, `.`).
    pub id: String,
    /// `sha256:<64 hex>` of the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// Inline JWKS (JSON) of the client's public keys, for `private_key_jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// A JWKS file, for `private_key_jwt` (relative to the file that names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    /// Scopes the client may be given.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Route paths whose resource the client may get tokens for; empty: every route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Lifetime of its tokens, seconds (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_lifetime_secs: Option<u64>,
    /// Grant types it may use (default `["client_credentials"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<String>>,
    /// Whether it may exchange a subject token without an actor token (impersonation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub impersonation: bool,
    /// Whether it may call the introspection endpoint.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub introspection: bool,
    /// Revoked: its secret and keys are refused and the tokens issued to it stop working.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

impl RawClient {
    /// Checks what can be checked of the entry alone (its id, credentials, scopes, resources,
    /// grants and lifetime); what depends on the rest of the config (routes, the lifetime
    /// bound, JWKS contents) is the authorization server's to check. Never stricter than the
    /// server: `clients list` and `revoke` must work on any file it accepts.
    pub fn check(&self) -> Result<(), InvalidField> {
        check_label(&self.id).map_err(|message| InvalidField::new("id", message))?;
        if let Some(hash) = &self.secret_hash
            && parse_hash(hash).is_none()
        {
            return Err(InvalidField::new(
                "secret_hash",
                "is not `sha256:` followed by 64 hex digits (`portcullis clients add` writes it)",
            ));
        }
        if self.jwks.is_some() && self.jwks_file.is_some() {
            return Err(InvalidField::new(
                "jwks_file",
                "set `jwks` or `jwks_file`, not both",
            ));
        }
        let keys = self.jwks.is_some() || self.jwks_file.is_some();
        if self.secret_hash.is_some() == keys {
            return Err(InvalidField::new(
                "secret_hash",
                "a client authenticates with exactly one of a secret (`secret_hash`) or keys \
                 (`jwks` / `jwks_file`, for private_key_jwt)",
            ));
        }
        for scope in &self.scopes {
            if scope.is_empty() || scope.chars().any(char::is_whitespace) || scope == "*" {
                return Err(InvalidField::new(
                    "scopes",
                    format!(
                        "{scope:?} is not a scope: a scope is one token without whitespace, \
                         and `*` is never issued"
                    ),
                ));
            }
        }
        for resource in &self.resources {
            if !resource.starts_with('/') || resource.chars().any(char::is_whitespace) {
                return Err(InvalidField::new(
                    "resources",
                    format!("{resource:?} is not a route path such as `/servers/a/mcp`"),
                ));
            }
        }
        for grant in self.grants.iter().flatten() {
            grant_type(grant).map_err(|message| InvalidField::new("grants", message))?;
        }
        if let Some(secs) = self.token_lifetime_secs
            && !(LIFETIME_FLOOR_SECS..=LIFETIME_CEILING_SECS).contains(&secs)
        {
            return Err(InvalidField::new(
                "token_lifetime_secs",
                format!(
                    "{secs} is outside {LIFETIME_FLOOR_SECS}..={LIFETIME_CEILING_SECS} seconds \
                     (and `authorization_server.max_token_lifetime_secs` bounds it further)"
                ),
            ));
        }
        Ok(())
    }
}

/// One field of a client entry that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct InvalidField {
    /// The field (`id`, `scopes`, …).
    pub field: &'static str,
    /// What is wrong with which value, and what to do.
    pub message: String,
}

impl InvalidField {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Whether `value` is a plain label: 1–64 letters, digits, `.`, `_` or `-`, as client ids
/// must be (they land in tokens, logs and metrics); key ids are held to the same.
pub fn check_label(value: &str) -> Result<(), String> {
    if is_label(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a plain label: use 1 to 64 letters, digits, `.`, `_` or `-`"
        ))
    }
}

/// The grant type a grant name stands for: the two grant types, and `token-exchange` for
/// the RFC 8693 one (its URN is long to type).
pub fn grant_type(name: &str) -> Result<&'static str, String> {
    match name {
        CLIENT_CREDENTIALS => Ok(CLIENT_CREDENTIALS),
        TOKEN_EXCHANGE | "token-exchange" => Ok(TOKEN_EXCHANGE),
        _ => Err(format!(
            "unknown grant {name:?}: the grants are `{CLIENT_CREDENTIALS}` and \
             `token-exchange` (`{TOKEN_EXCHANGE}`)"
        )),
    }
}

impl ClientsFile {
    /// Checks every entry, and that no two share an id. The error names the entry.
    pub fn check(&self) -> Result<(), (usize, InvalidField)> {
        let mut seen = HashSet::new();
        for (at, client) in self.clients.iter().enumerate() {
            client.check().map_err(|invalid| (at, invalid))?;
            if !seen.insert(client.id.as_str()) {
                return Err((
                    at,
                    InvalidField::new(
                        "id",
                        format!("a client named `{}` is already in the file", client.id),
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Parses and checks the text of a clients file; `source` names it in messages, which give
/// the key path (`clients[2].scopes`) as config errors do.
pub fn parse(text: &str, source: &str) -> Result<ClientsFile, ConfigError> {
    let file: ClientsFile =
        crate::config::shaped(crate::config::toml_value(text, source)?, source)?;
    file.check().map_err(|(at, invalid)| ConfigError::Invalid {
        file: source.to_owned(),
        key: format!("clients[{at}].{}", invalid.field),
        message: invalid.message,
    })?;
    Ok(file)
}

/// Reads and checks a clients file.
pub fn read(path: &Path) -> Result<ClientsFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// A new client secret: 32 bytes from the system's random source, base64url, after
/// [`SECRET_PREFIX`] so that a leaked one is recognisable (secret scanners, logs).
pub fn new_secret() -> Result<SecretString, ClientsFileError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ClientsFileError::Random)?;
    Ok(SecretString::new(format!(
        "{SECRET_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(bytes)
    )))
}

/// The prefix of the client secrets `portcullis clients add` makes.
pub const SECRET_PREFIX: &str = "pcs_";

/// Why a clients file was not changed.
#[derive(Debug, thiserror::Error)]
pub enum ClientsFileError {
    /// The file as it is cannot be read or is not a valid clients file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The entry to add cannot be used.
    #[error("{file}: cannot add client `{id}`: {invalid}; the file is unchanged")]
    Refused {
        /// The file.
        file: String,
        /// The id asked for.
        id: String,
        /// Which field, and why.
        invalid: InvalidField,
    },
    /// No entry has the id.
    #[error("{file}: no client is named `{id}`; `portcullis clients list` shows them")]
    UnknownClient {
        /// The file.
        file: String,
        /// The id asked for.
        id: String,
    },
    /// Writing the new file failed; the old one is still in place.
    #[error("cannot write clients file `{}`: {source}; it is unchanged", file.display())]
    Write {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The system's random source failed.
    #[error("the system's random number generator failed; no secret was made")]
    Random,
}

/// What [`revoke`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The client is revoked now.
    Now,
    /// It already was; the file is unchanged.
    Already,
}

/// The comment a new clients file starts with.
const NEW_FILE_HEADER: &str = "\
# OAuth clients of the Portcullis authorization server (`authorization_server.clients_file`).
# Written by `portcullis clients add` and `portcullis clients revoke`, which keep comments and
# other entries; the gateway reloads the file when it changes. Secrets are stored as hashes.

";

/// Adds `client` to the clients file at `path`, creating the file when it does not exist.
/// Refuses an entry that [`RawClient::check`] refuses or whose id is taken.
pub fn add(path: &Path, client: &RawClient) -> Result<(), ClientsFileError> {
    let source = path.display().to_string();
    let refused = |invalid| ClientsFileError::Refused {
        file: source.clone(),
        id: client.id.clone(),
        invalid,
    };
    client.check().map_err(refused)?;
    edit(path, true, |current, doc| {
        if current.clients.iter().any(|c| c.id == client.id) {
            return Err(refused(InvalidField::new(
                "id",
                format!(
                    "a client named `{}` is already in the file; pick another name",
                    client.id
                ),
            )));
        }
        let mut entry = to_table(client);
        match doc.get_mut("clients") {
            Some(Item::ArrayOfTables(tables)) => {
                entry.decor_mut().set_prefix("\n");
                tables.push(entry);
            }
            Some(Item::Value(Value::Array(inline))) => inline.push(entry.into_inline_table()),
            _ => {
                // A file without entries holds only comments, which toml_edit keeps as
                // the document's trailing text: they open the file, so they go before the
                // first entry rather than after it.
                let comments = doc.trailing().as_str().unwrap_or_default().to_owned();
                doc.set_trailing("");
                entry.decor_mut().set_prefix(comments);
                let mut tables = ArrayOfTables::new();
                tables.push(entry);
                doc.insert("clients", Item::ArrayOfTables(tables));
            }
        }
        Ok(())
    })
}

/// Sets `revoked = true` on the client `id`.
pub fn revoke(path: &Path, id: &str) -> Result<Revoked, ClientsFileError> {
    let mut outcome = Revoked::Now;
    edit(path, false, |current, doc| {
        let Some(client) = current.clients.iter().find(|c| c.id == id) else {
            return Err(ClientsFileError::UnknownClient {
                file: path.display().to_string(),
                id: id.to_owned(),
            });
        };
        if client.revoked {
            outcome = Revoked::Already;
            return Ok(());
        }
        let is_it = |value: Option<&Value>| value.and_then(Value::as_str) == Some(id);
        match doc.get_mut("clients") {
            Some(Item::ArrayOfTables(tables)) => {
                for table in tables.iter_mut() {
                    if is_it(table.get("id").and_then(Item::as_value)) {
                        table.insert("revoked", toml_edit::value(true));
                    }
                }
            }
            Some(Item::Value(Value::Array(inline))) => {
                for entry in inline.iter_mut() {
                    if let Some(entry) = entry.as_inline_table_mut()
                        && is_it(entry.get("id"))
                    {
                        entry.insert("revoked", Value::from(true));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(outcome)
}

/// Reads the file at `path` (an empty one when it is missing and `create`), applies
/// `change` to its document, checks the result as the gateway will read it, and replaces
/// the file. An unchanged document is not written.
fn edit(
    path: &Path,
    create: bool,
    change: impl FnOnce(&ClientsFile, &mut DocumentMut) -> Result<(), ClientsFileError>,
) -> Result<(), ClientsFileError> {
    let source = path.display().to_string();
    let write_error = |source| ClientsFileError::Write {
        file: path.to_owned(),
        source,
    };
    let _lock = rewrite::lock(path).map_err(write_error)?;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if create && error.kind() == std::io::ErrorKind::NotFound => {
            NEW_FILE_HEADER.to_owned()
        }
        Err(source) => {
            return Err(ConfigError::Read {
                file: path.to_owned(),
                source,
            }
            .into());
        }
    };
    let current = parse(&text, &source)?;
    let mut doc: DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| ConfigError::Syntax {
                file: source.clone(),
                message: e.to_string().trim_end().to_owned(),
            })?;
    change(&current, &mut doc)?;
    let new_text = doc.to_string();
    if new_text == text {
        return Ok(());
    }
    // The rewrite must read back as the change meant; a slip here must not reach the
    // gateway, which would keep its last good clients until the file is fixed.
    parse(&new_text, &source)?;
    rewrite::write_atomically(path, &new_text).map_err(write_error)
}

/// `client` as a `[[clients]]` table, spelled by its `Serialize` impl (field order, omitted
/// defaults) so that the file and the struct cannot disagree.
fn to_table(client: &RawClient) -> Table {
    // Serializing plain strings, numbers and booleans cannot fail; if it ever did, the empty
    // table would be caught by the check of the rewritten file (a missing `id`).
    let text = toml::to_string(client).unwrap_or_default();
    text.parse::<DocumentMut>()
        .map(|doc| doc.as_table().clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str) -> RawClient {
        RawClient {
            id: id.to_owned(),
            secret_hash: Some(crate::engine::api_key::hash_key("s")),
            scopes: vec!["mcp:read".to_owned()],
            ..RawClient::default()
        }
    }

    #[test]
    fn labels_are_letters_digits_dot_underscore_dash_up_to_64() {
        for good in ["a", "agent-1", "A.b_c", &"x".repeat(64)] {
            assert_eq!(check_label(good), Ok(()), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", "a:b", &"x".repeat(65)] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entry_check_names_the_field() {
        let field = |c: RawClient| c.check().map_err(|e| e.field);
        assert_eq!(field(client("a")), Ok(()));
        let mut c = client("a");
        c.scopes = vec!["mcp:read admin".into()];
        assert_eq!(field(c), Err("scopes"));
        let mut c = client("a");
        c.grants = Some(vec!["password".into()]);
        assert_eq!(field(c), Err("grants"));
        let mut c = client("a");
        c.grants = Some(vec![TOKEN_EXCHANGE.into(), "token-exchange".into()]);
        assert_eq!(field(c), Ok(()));
        let mut c = client("a");
        c.secret_hash = None;
        assert_eq!(field(c), Err("secret_hash"));
        let mut c = client("a");
        c.resources = vec!["servers/a/mcp".into()];
        assert_eq!(field(c), Err("resources"));
    }

    #[test]
    fn parse_names_file_and_key_path() {
        let text = "[[clients]]\nid = \"a\"\nsecret_hash = \"sha256:00\"\nscopes = []\n";
        let error = parse(text, "c.toml").expect_err("short hash").to_string();
        assert!(
            error.starts_with("c.toml: `clients[0].secret_hash`:"),
            "{error}"
        );
        let error = parse("[[clients]]\nid = \"a\"\nscope = []\n", "c.toml")
            .expect_err("unknown key")
            .to_string();
        assert!(error.starts_with("c.toml: `clients[0].scope`:"), "{error}");
    }

    #[test]
    fn secrets_are_prefixed_base64url_of_32_bytes() {
        let secret = new_secret().expect("random");
        let body = secret.expose().strip_prefix(SECRET_PREFIX).expect("prefix");
        assert_eq!(URL_SAFE_NO_PAD.decode(body).expect("base64url").len(), 32);
        assert_ne!(new_secret().expect("random"), secret);
    }

    #[test]
    fn add_keeps_comments_and_revoke_marks_the_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("clients.toml");
        add(&path, &client("a")).expect("add to a new file");
        let first = std::fs::read_to_string(&path).expect("read");
        assert!(first.starts_with("# OAuth clients"), "{first}");
        let edited = first.replace(
            "[[clients]]",
            "# the first agent\n[[clients]] # inline note",
        );
        std::fs::write(&path, &edited).expect("write");
        add(&path, &client("b")).expect("add a second");
        assert!(matches!(
            add(&path, &client("b")),
            Err(ClientsFileError::Refused { .. })
        ));
        assert_eq!(revoke(&path, "a").expect("revoke"), Revoked::Now);
        assert_eq!(revoke(&path, "a").expect("revoke"), Revoked::Already);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with(&edited[..edited.find("[[clients]]").expect("entry")]));
        assert!(
            text.contains("# the first agent\n[[clients]] # inline note\n"),
            "{text}"
        );
        let file = parse(&text, "c").expect("valid");
        let ids: Vec<_> = file
            .clients
            .iter()
            .map(|c| (c.id.as_str(), c.revoked))
            .collect();
        assert_eq!(ids, [("a", true), ("b", false)], "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn add_to_an_inline_array_and_revoke_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("clients.toml");
        std::fs::write(&path, "clients = [] # none yet\n").expect("write");
        add(&path, &client("a")).expect("add");
        revoke(&path, "a").expect("revoke");
        let file = read(&path).expect("valid");
        assert!(file.clients[0].revoked);
        assert!(matches!(
            revoke(&path, "zz"),
            Err(ClientsFileError::UnknownClient { .. })
        ));
    }
}
