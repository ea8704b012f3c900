//! API keys as `portcullis keys add|list|revoke` writes them: the `[[keys]]` entries of an
//! `api_key` provider's `keys_file`, their shape, and the file's safe rewrite.
//!
//! ```toml
//! [[keys]]
//! name = "agent-1"                       # the identity's subject
//! hash = "sha256:…"                      # only the hash is stored; the key is shown once
//! scopes = ["mcp:read"]
//! created = "2026-12-01T09:00:00Z"
//! expires_at = "2027-01-01T00:00:00Z"    # optional
//! revoked = true                         # `portcullis keys revoke` sets it…
//! revoked_at = "2026-12-02T10:00:00Z"    # …with when
//! revoked_reason = "laptop lost"         # …and, with --reason, why
//! ```
//!
//! The commands rewrite the file with `toml_edit`, so an operator's comments and layout
//! survive, under a lock, so two commands at once do not lose a change, and replace it
//! atomically, so the gateway's hot reload never reads half a file
//! ([`crate::config::rewrite`]). The gateway reloads the file when it changes and refuses
//! a bad one as a whole, keeping the last good keys.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, Value};

use super::{ApiKeyEntry, parse_hash};
use crate::config::{ConfigError, rewrite};
use crate::secret::SecretString;

/// The prefix of the keys `portcullis keys add` makes, so that a leaked one is recognisable
/// (secret scanners, logs).
pub const KEY_PREFIX: &str = "pck_";

/// A whole keys file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// `[[keys]]`.
    #[serde(default)]
    pub keys: Vec<RawKey>,
}

/// One `[[keys]]` entry, unchecked.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// Who the key belongs to: a plain label (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// `sha256:<64 hex>` of the key.
    pub hash: String,
    /// Scopes granted to callers presenting the key.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// When it was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// RFC 3339 instant from which the key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Refused, and reported as revoked rather than unknown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
    /// When it was revoked (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Why it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
}

/// One field of a key entry that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct InvalidField {
    /// The field (`name`, `hash`, …).
    pub field: &'static str,
    /// What is wrong with which value, and what to do.
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidField {
    InvalidField {
        field,
        message: message.into(),
    }
}

impl RawKey {
    /// Checks the entry alone, as the gateway reads it.
    pub fn check(&self) -> Result<(), InvalidField> {
        let label = (1..=64).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !label {
            return Err(invalid(
                "name",
                format!(
                    "{:?} is not a plain label: use 1 to 64 letters, digits, `.`, `_` or `-`",
                    self.name
                ),
            ));
        }
        if parse_hash(&self.hash).is_none() {
            return Err(invalid(
                "hash",
                format!(
                    "is not `sha256:` followed by 64 hex digits (got {} characters); \
                     `portcullis keys add` writes it",
                    self.hash.chars().count()
                ),
            ));
        }
        for scope in &self.scopes {
            if scope.is_empty() || scope.chars().any(|c| c.is_whitespace() || c == ',') {
                return Err(invalid(
                    "scopes",
                    format!("{scope:?} is not a scope: one token without whitespace or `,`"),
                ));
            }
        }
        for (field, value) in [
            ("created", &self.created),
            ("expires_at", &self.expires_at),
            ("revoked_at", &self.revoked_at),
        ] {
            if let Some(value) = value
                && OffsetDateTime::parse(value, &Rfc3339).is_err()
            {
                return Err(invalid(
                    field,
                    format!(
                        "{value:?} is not an RFC 3339 timestamp such as `2027-01-31T00:00:00Z`"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The entry as the validator takes it.
    pub fn to_entry(&self) -> ApiKeyEntry {
        ApiKeyEntry {
            name: self.name.clone(),
            hash: Some(self.hash.clone()),
            key: None,
            scopes: self.scopes.clone(),
            expires_at: self.expires_at.clone(),
            revoked: self.revoked,
        }
    }
}

impl KeysFile {
    /// Checks every entry, and that no two share a name or a hash. The error names the entry.
    pub fn check(&self) -> Result<(), (usize, InvalidField)> {
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        for (at, key) in self.keys.iter().enumerate() {
            key.check().map_err(|e| (at, e))?;
            if !names.insert(key.name.as_str()) {
                return Err((
                    at,
                    invalid(
                        "name",
                        format!("a key named `{}` is already in the file", key.name),
                    ),
                ));
            }
            if !hashes.insert(key.hash.to_ascii_lowercase()) {
                return Err((
                    at,
                    invalid(
                        "hash",
                        "another entry has the same hash: the same key twice",
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Parses and checks the text of a keys file; `source` names it in messages, which give the
/// key path (`keys[2].hash`) as config errors do.
pub fn parse(text: &str, source: &str) -> Result<KeysFile, ConfigError> {
    let file: KeysFile = crate::config::shaped(crate::config::toml_value(text, source)?, source)?;
    file.check().map_err(|(at, invalid)| ConfigError::Invalid {
        file: source.to_owned(),
        key: format!("keys[{at}].{}", invalid.field),
        message: invalid.message,
    })?;
    Ok(file)
}

/// Reads and checks a keys file.
pub fn read(path: &Path) -> Result<KeysFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// A new key: 32 bytes from the system's random source, base64url, after [`KEY_PREFIX`].
pub fn new_key() -> Result<SecretString, KeysFileError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeysFileError::Random)?;
    Ok(SecretString::new(format!(
        "{KEY_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(bytes)
    )))
}

/// `now` as the file writes instants: RFC 3339, whole seconds, UTC.
pub fn timestamp(now: OffsetDateTime) -> String {
    let now = now.to_offset(time::UtcOffset::UTC);
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&Rfc3339).unwrap_or_default()
}

/// The `expires_at` that `--expires` stands for at `now`: a lifetime (`30d`, `12h`, `90m`,
/// `2w`) or an RFC 3339 instant, which must be in the future.
pub fn expiry(value: &str, now: OffsetDateTime) -> Result<String, String> {
    let bad = || {
        format!(
            "`{value}` is neither a lifetime such as `30d`, `12h`, `90m` or `2w` nor an RFC 3339 \
             instant such as `2027-01-01T00:00:00Z`"
        )
    };
    let at = if let Ok(at) = OffsetDateTime::parse(value, &Rfc3339) {
        at
    } else {
        let split = value.len().saturating_sub(1);
        let (number, unit) = value.split_at_checked(split).ok_or_else(bad)?;
        let number: i64 = number.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(bad()),
        };
        let lifetime = number
            .checked_mul(seconds)
            .filter(|s| *s > 0)
            .ok_or_else(bad)?;
        now.checked_add(time::Duration::seconds(lifetime))
            .ok_or_else(bad)?
    };
    if at <= now {
        return Err(format!("`{value}` is not in the future"));
    }
    Ok(timestamp(at))
}

/// Why a keys file was not changed.
#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    /// The file as it is cannot be read or is not a valid keys file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The entry to add cannot be used.
    #[error("{file}: cannot add key `{name}`: {invalid}; the file is unchanged")]
    Refused {
        /// The file.
        file: String,
        /// The name asked for.
        name: String,
        /// Which field, and why.
        invalid: InvalidField,
    },
    /// No entry has the name.
    #[error("{file}: no key is named `{name}`; `portcullis keys list` shows them")]
    UnknownKey {
        /// The file.
        file: String,
        /// The name asked for.
        name: String,
    },
    /// Locking or writing the file failed; the old one is still in place.
    #[error("cannot write keys file `{}`: {source}; it is unchanged", file.display())]
    Write {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The system's random source failed.
    #[error("the system's random number generator failed; no key was made")]
    Random,
}

/// What [`revoke`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The key is revoked now.
    Now,
    /// It already was; the file is unchanged.
    Already,
}

/// The comment a new keys file starts with.
const NEW_FILE_HEADER: &str = "\
# API keys of a Portcullis `api_key` provider (its `keys_file`).
# Written by `portcullis keys add` and `portcullis keys revoke`, which keep comments and
# other entries; the gateway reloads the file when it changes. Keys are stored as hashes.

";

/// Adds `key` to the keys file at `path`, creating the file when it does not exist.
/// Refuses an entry that [`RawKey::check`] refuses or whose name or hash is taken.
pub fn add(path: &Path, key: &RawKey) -> Result<(), KeysFileError> {
    let source = path.display().to_string();
    let refused = |invalid| KeysFileError::Refused {
        file: source.clone(),
        name: key.name.clone(),
        invalid,
    };
    key.check().map_err(refused)?;
    edit(path, true, |current, doc| {
        if current.keys.iter().any(|k| k.name == key.name) {
            return Err(refused(invalid(
                "name",
                format!(
                    "a key named `{}` is already in the file; pick another name (or revoke it \
                     and add the replacement under a new name)",
                    key.name
                ),
            )));
        }
        let mut entry = to_table(key);
        match doc.get_mut("keys") {
            Some(Item::ArrayOfTables(tables)) => {
                entry.decor_mut().set_prefix("\n");
                tables.push(entry);
            }
            Some(Item::Value(Value::Array(inline))) => inline.push(entry.into_inline_table()),
            _ => {
                // A file without entries holds only comments, which toml_edit keeps as the
                // document's trailing text: they open the file, so they go first.
                let comments = doc.trailing().as_str().unwrap_or_default().to_owned();
                doc.set_trailing("");
                entry.decor_mut().set_prefix(comments);
                let mut tables = ArrayOfTables::new();
                tables.push(entry);
                doc.insert("keys", Item::ArrayOfTables(tables));
            }
        }
        Ok(())
    })
}

/// Sets `revoked = true` (with `revoked_at = now` and the reason, if any) on the key `name`.
pub fn revoke(
    path: &Path,
    name: &str,
    reason: Option<&str>,
    now: OffsetDateTime,
) -> Result<Revoked, KeysFileError> {
    let mut outcome = Revoked::Now;
    edit(path, false, |current, doc| {
        let Some(key) = current.keys.iter().find(|k| k.name == name) else {
            return Err(KeysFileError::UnknownKey {
                file: path.display().to_string(),
                name: name.to_owned(),
            });
        };
        if key.revoked {
            outcome = Revoked::Already;
            return Ok(());
        }
        let mut fields = vec![
            ("revoked", Value::from(true)),
            ("revoked_at", Value::from(timestamp(now))),
        ];
        if let Some(reason) = reason {
            fields.push(("revoked_reason", Value::from(reason)));
        }
        let is_it = |value: Option<&Value>| value.and_then(Value::as_str) == Some(name);
        match doc.get_mut("keys") {
            Some(Item::ArrayOfTables(tables)) => {
                for table in tables.iter_mut() {
                    if is_it(table.get("name").and_then(Item::as_value)) {
                        for (field, value) in &fields {
                            table.insert(field, Item::Value(value.clone()));
                        }
                    }
                }
            }
            Some(Item::Value(Value::Array(inline))) => {
                for entry in inline.iter_mut() {
                    if let Some(entry) = entry.as_inline_table_mut()
                        && is_it(entry.get("name"))
                    {
                        for (field, value) in &fields {
                            entry.insert(*field, value.clone());
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(outcome)
}

/// Under the file's lock: reads the file at `path` (an empty one when it is missing and
/// `create`), applies `change` to its document, checks the result as the gateway will read
/// it, and replaces the file. An unchanged document is not written.
fn edit(
    path: &Path,
    create: bool,
    change: impl FnOnce(&KeysFile, &mut DocumentMut) -> Result<(), KeysFileError>,
) -> Result<(), KeysFileError> {
    let source = path.display().to_string();
    let write_error = |source| KeysFileError::Write {
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
    // gateway, which would keep its last good keys until the file is fixed.
    parse(&new_text, &source)?;
    rewrite::write_atomically(path, &new_text).map_err(write_error)
}

/// `key` as a `[[keys]]` table, spelled by its `Serialize` impl so that the file and the
/// struct cannot disagree.
fn to_table(key: &RawKey) -> Table {
    // Serializing plain strings and booleans cannot fail; if it ever did, the empty table
    // would be caught by the check of the rewritten file (a missing `name`).
    let text = toml::to_string(key).unwrap_or_default();
    text.parse::<DocumentMut>()
        .map(|doc| doc.as_table().clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, secret: &str) -> RawKey {
        RawKey {
            name: name.to_owned(),
            hash: super::super::hash_key(secret),
            scopes: vec!["mcp:read".to_owned()],
            created: Some("2026-12-01T00:00:00Z".to_owned()),
            ..RawKey::default()
        }
    }

    #[test]
    fn keys_are_prefixed_base64url_of_32_bytes() {
        let secret = new_key().expect("random");
        let body = secret.expose().strip_prefix(KEY_PREFIX).expect("prefix");
        assert_eq!(URL_SAFE_NO_PAD.decode(body).expect("base64url").len(), 32);
        assert_ne!(new_key().expect("random"), secret);
    }

    #[test]
    fn expiry_takes_a_lifetime_or_a_future_instant() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("instant");
        assert_eq!(
            expiry("30d", now),
            Ok(timestamp(now + time::Duration::days(30)))
        );
        assert_eq!(
            expiry("90m", now),
            Ok(timestamp(now + time::Duration::minutes(90)))
        );
        assert_eq!(
            expiry("2030-01-01T00:00:00+01:00", now),
            Ok("2029-12-31T23:00:00Z".to_owned())
        );
        for bad in [
            "",
            "d",
            "30",
            "30x",
            "-1d",
            "0d",
            "2020-01-01T00:00:00Z",
            "soon",
        ] {
            assert!(expiry(bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parse_names_file_and_key_path() {
        let text = "[[keys]]\nname = \"a\"\nhash = \"sha256:00\"\n";
        let error = parse(text, "k.toml").expect_err("short hash").to_string();
        assert!(error.starts_with("k.toml: `keys[0].hash`:"), "{error}");
        let error = parse("[[keys]]\nname = \"a\"\nscope = []\n", "k.toml")
            .expect_err("unknown key")
            .to_string();
        assert!(error.starts_with("k.toml: `keys[0].scope`:"), "{error}");
    }

    #[test]
    fn add_keeps_comments_and_revoke_marks_the_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.toml");
        add(&path, &key("a", "ka")).expect("add to a new file");
        let first = std::fs::read_to_string(&path).expect("read");
        assert!(first.starts_with("# API keys"), "{first}");
        let edited = first.replace("[[keys]]", "# the first agent\n[[keys]]");
        std::fs::write(&path, &edited).expect("write");
        add(&path, &key("b", "kb")).expect("add a second");
        assert!(matches!(
            add(&path, &key("b", "kc")),
            Err(KeysFileError::Refused { .. })
        ));
        assert!(matches!(
            add(&path, &key("c", "ka")),
            Err(KeysFileError::Config(_))
        ));
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("instant");
        assert_eq!(
            revoke(&path, "a", Some("lost"), now).expect("revoke"),
            Revoked::Now
        );
        assert_eq!(
            revoke(&path, "a", None, now).expect("revoke"),
            Revoked::Already
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("# the first agent\n[[keys]]\n"), "{text}");
        let file = parse(&text, "k").expect("valid");
        assert!(file.keys[0].revoked);
        assert_eq!(file.keys[0].revoked_reason.as_deref(), Some("lost"));
        assert_eq!(
            file.keys[0].revoked_at.as_deref(),
            Some(timestamp(now).as_str())
        );
        assert!(!file.keys[1].revoked);
        assert!(matches!(
            revoke(&path, "zz", None, now),
            Err(KeysFileError::UnknownKey { .. })
        ));
    }
}
