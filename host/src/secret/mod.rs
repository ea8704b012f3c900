//! Secrets: a string type that never prints, and [`SecretRef`], the one type every setting
//! uses for a secret given by reference (`env://VAR`, `file://path`, `vault://mount/path#field`),
//! parsed and resolved here and nowhere else. A new reference scheme is a variant of
//! [`SecretRef`] with its arm in [`SecretRef::parse`], [`SecretRef::resolve`] and the
//! `Display` impl. Any other `scheme://…` string is an error, never a literal: a typo in a
//! scheme (or a scheme this version does not know) must not become the secret's value.
//!
//! # How a `vault://` reference resolves synchronously
//!
//! Every setting resolves its secrets with the synchronous [`SecretRef::resolve`] while the
//! site is assembled ([`crate::config::assemble`]). Vault is a network call, so it is read
//! before that, in the loader:
//!
//! 1. Each [`VaultRef`] carries a shared cell for its value. While a config is parsed and
//!    validated ([`crate::config::load_with`] and the other text loaders), a thread-local
//!    collector (`collecting`) records every reference [`SecretRef::parse`] creates; the
//!    config keeps the list ([`crate::config::Config::secret_refs`]), so no settings type has
//!    to enumerate its secrets and a new setting with a `SecretRef` is covered by being one.
//! 2. [`crate::load::from_config`] hands that list to the [`SecretCache`], which reads every
//!    Vault reference (the `vault` module), fills the cells, and keeps the last good value of each
//!    reference. The cache lives in [`crate::load::Reuse`], so it outlives a reload.
//! 3. `resolve()` of a Vault reference returns its cell's value; a reference that was never
//!    read (a config built in code after parsing, and not loaded through the loader) is a
//!    [`SecretError::VaultUnread`], never an empty secret.
//!
//! The file references the collector records are also what the [reloader](crate::reload)
//! watches, so a changed secret file reloads like a changed component.

mod cache;
mod vault;

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

pub use self::cache::{SecretCache, SecretsError};
pub use self::vault::{RawAppRole, RawVault, VaultAuth, VaultError, VaultSettings};

use serde::{Deserialize, Deserializer};
use subtle::ConstantTimeEq;

/// A secret value. `Debug` and `Display` print `[redacted]`; equality runs in constant time
/// so that comparing a presented credential does not leak how many leading bytes matched.
#[derive(Clone, Default)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call sites are the only places a secret is exposed; keep them few.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl PartialEq for SecretString {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for SecretString {}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a secret comes from, as written in config: deserialized from a string, and printed
/// (`Debug`, `Display`) as that string for a reference, `[redacted]` for a literal, since a
/// literal where a reference was expected is a secret pasted by mistake.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `env://VAR`: the environment variable `VAR`.
    Env(String),
    /// `file:///path`: the file's contents, with one trailing newline removed.
    File(PathBuf),
    /// `vault://mount/path#field`: a KV v2 field in the `[vault]` server, read by the loader.
    Vault(VaultRef),
    /// Any other string: the value itself.
    Literal(SecretString),
}

/// A secret reference that could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The variable named by `env://` is not set or not UTF-8.
    #[error("environment variable `{0}` is not set (or not UTF-8); set it or change the reference")]
    MissingEnv(String),
    /// The file named by `file://` cannot be read.
    #[error("cannot read secret file `{path}`: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A `vault://` reference resolved before the loader read it from Vault.
    #[error("`{0}` has not been read from Vault: load the config through `load::from_config`")]
    VaultUnread(String),
    /// Vault answered that the secret or its field does not exist.
    #[error("`{reference}` does not exist in Vault ({why}); write it, or change the reference")]
    VaultGone {
        /// The reference.
        reference: String,
        /// Vault's answer.
        why: String,
    },
}

impl SecretError {
    /// Whether the secret is known not to exist (its file is gone, or Vault says there is no
    /// such secret or field), rather than unreadable for now. Deleting an API key's secret
    /// revokes the key.
    pub fn is_gone(&self) -> bool {
        match self {
            Self::VaultGone { .. } => true,
            Self::File { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            Self::MissingEnv(_) | Self::VaultUnread(_) => false,
        }
    }
}

/// A string that is not a secret reference although it looks like one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretRefError {
    /// `scheme://…` with a scheme other than `env`, `file` and `vault`.
    #[error(
        "unknown secret scheme `{0}://`: a secret is `env://VAR`, `file://PATH`, \
         `vault://MOUNT/PATH#FIELD`, or a literal without `://`"
    )]
    UnknownScheme(String),
    /// `vault://` without a mount, a path or a field, or with a segment in another spelling.
    #[error(
        "`{0}` is not a Vault reference: write `vault://MOUNT/PATH#FIELD`, each segment of \
         letters, digits and `-_.~@+=:,` (no `.` or `..` segment, no escapes)"
    )]
    MalformedVault(String),
}

/// `vault://mount/path#field`: the field `field` of the KV v2 secret `path` in the secrets
/// engine mounted at `mount` (its first segment). Equal references name the same field; the
/// value cell is shared by clones and filled by the [`SecretCache`].
#[derive(Clone)]
pub struct VaultRef {
    mount: String,
    path: String,
    field: String,
    value: Arc<RwLock<Option<Result<SecretString, String>>>>,
}

impl VaultRef {
    fn parse(reference: &str, rest: &str) -> Result<Self, SecretRefError> {
        let malformed = || SecretRefError::MalformedVault(reference.to_owned());
        let (location, field) = rest.split_once('#').ok_or_else(malformed)?;
        let (mount, path) = location.split_once('/').ok_or_else(malformed)?;
        let path = path.trim_matches('/');
        // Every segment in the one spelling a URL keeps as written: a `\\`, a tab or a
        // percent-escape would be read by the URL parser as `/` or a dot segment, and name
        // another mount.
        let segments_ok = |s: &str| s.split('/').all(is_plain_segment);
        if !is_plain_segment(mount) || !segments_ok(path) || field.is_empty() {
            return Err(malformed());
        }
        Ok(Self {
            mount: mount.to_owned(),
            path: path.to_owned(),
            field: field.to_owned(),
            value: Arc::default(),
        })
    }

    /// The secrets engine's mount (`secret` in `vault://secret/app#key`).
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// The secret's path under the mount (`app`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The field of the secret's data (`key`).
    pub fn field(&self) -> &str {
        &self.field
    }

    fn set(&self, value: SecretString) {
        *self.value.write().unwrap_or_else(|p| p.into_inner()) = Some(Ok(value));
    }

    /// Vault answered that the secret or its field does not exist (`why`).
    fn set_gone(&self, why: String) {
        *self.value.write().unwrap_or_else(|p| p.into_inner()) = Some(Err(why));
    }

    fn get(&self) -> Option<Result<SecretString, String>> {
        self.value.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A path segment of letters, digits and `-_.~@+=:,` that is not `.` or `..`: the spelling
/// every URL parser and Vault read the same way.
pub(crate) fn is_plain_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~@+=:,".contains(&b))
}

impl PartialEq for VaultRef {
    fn eq(&self, other: &Self) -> bool {
        (&self.mount, &self.path, &self.field) == (&other.mount, &other.path, &other.field)
    }
}

impl Eq for VaultRef {}

impl fmt::Display for VaultRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vault://{}/{}#{}", self.mount, self.path, self.field)
    }
}

impl fmt::Debug for VaultRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

thread_local! {
    /// The references parsed on this thread while [`collecting`] runs.
    static COLLECTED: RefCell<Option<Vec<SecretRef>>> = const { RefCell::new(None) };
}

/// Runs `f` and returns, with its result, every reference (not literal) that
/// [`SecretRef::parse`] created on this thread meanwhile. Nested calls each get their own.
pub(crate) fn collecting<T>(f: impl FnOnce() -> T) -> (T, Vec<SecretRef>) {
    let outer = COLLECTED.with(|c| c.replace(Some(Vec::new())));
    let result = f();
    let collected = COLLECTED.with(|c| c.replace(outer)).unwrap_or_default();
    (result, collected)
}

/// Whether `reference` starts with `scheme://`, scheme as RFC 3986 spells one; the scheme.
fn scheme_of(reference: &str) -> Option<&str> {
    let (scheme, _) = reference.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')))
    .then_some(scheme)
}

impl SecretRef {
    /// Parses a reference: `env://VAR`, `file:///abs/path` (or `file://rel/path`),
    /// `vault://mount/path#field`, or a literal (a string without a `scheme://` prefix).
    pub fn parse(reference: &str) -> Result<Self, SecretRefError> {
        let parsed = if let Some(var) = reference.strip_prefix("env://") {
            Self::Env(var.to_owned())
        } else if let Some(path) = reference.strip_prefix("file://") {
            Self::File(PathBuf::from(path))
        } else if let Some(rest) = reference.strip_prefix("vault://") {
            Self::Vault(VaultRef::parse(reference, rest)?)
        } else if let Some(scheme) = scheme_of(reference) {
            return Err(SecretRefError::UnknownScheme(scheme.to_owned()));
        } else {
            return Ok(Self::Literal(SecretString::new(reference)));
        };
        COLLECTED.with(|c| {
            if let Some(collected) = c.borrow_mut().as_mut() {
                collected.push(parsed.clone());
            }
        });
        Ok(parsed)
    }

    /// Whether this is the value itself rather than a reference. Settings that must keep
    /// secrets out of the config file refuse it, each with its own advice.
    pub fn is_literal(&self) -> bool {
        matches!(self, Self::Literal(_))
    }

    /// Reads the secret now.
    pub fn resolve(&self) -> Result<SecretString, SecretError> {
        match self {
            Self::Env(var) => std::env::var(var)
                .map(SecretString::new)
                .map_err(|_| SecretError::MissingEnv(var.clone())),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|s| {
                    let trimmed = s.strip_suffix('\n').unwrap_or(&s);
                    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
                    SecretString::new(trimmed)
                })
                .map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                }),
            Self::Vault(reference) => match reference.get() {
                Some(Ok(value)) => Ok(value),
                Some(Err(why)) => Err(SecretError::VaultGone {
                    reference: reference.to_string(),
                    why,
                }),
                None => Err(SecretError::VaultUnread(reference.to_string())),
            },
            Self::Literal(value) => Ok(value.clone()),
        }
    }
}

/// From the string as written: a `String` setting's errors, and an unknown scheme or a
/// malformed `vault://` reference (an `env://` or `file://` reference is checked when it is
/// resolved).
impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let reference = String::deserialize(deserializer)?;
        Self::parse(&reference).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(var) => write!(f, "env://{var}"),
            Self::File(path) => write!(f, "file://{}", path.display()),
            Self::Vault(reference) => fmt::Display::fmt(reference, f),
            Self::Literal(_) => f.write_str("[redacted]"),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(_) => f.write_str("[redacted]"),
            reference => fmt::Debug::fmt(&reference.to_string(), f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = SecretString::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
    }

    #[test]
    fn references_parse_by_scheme() {
        let parse = |s| SecretRef::parse(s).expect("parses");
        assert_eq!(parse("env://A"), SecretRef::Env("A".into()));
        assert_eq!(parse("file:///etc/x"), SecretRef::File("/etc/x".into()));
        assert_eq!(
            parse("plain"),
            SecretRef::Literal(SecretString::new("plain"))
        );
        // Not `scheme://`: still literals.
        for literal in ["1x://y", "x y://z", "pa:ss//word", "://x"] {
            assert!(parse(literal).is_literal(), "{literal}");
        }
    }

    #[test]
    fn vault_reference_names_mount_path_and_field() {
        let SecretRef::Vault(v) =
            SecretRef::parse("vault://secret/team/app#api-key").expect("parses")
        else {
            panic!("not a vault reference");
        };
        assert_eq!(
            (v.mount(), v.path(), v.field()),
            ("secret", "team/app", "api-key")
        );
        assert_eq!(v.to_string(), "vault://secret/team/app#api-key");
    }

    #[test]
    fn malformed_vault_references_are_errors() {
        for bad in [
            "vault://secret#f",
            "vault://secret/app",
            "vault://secret/app#",
            "vault:///app#f",
            "vault://secret//#f",
            "vault://secret/../x#f",
            "vault://secret/a?b#f",
            "vault://secret/app\\..\\..\\other#f",
            "vault://secret/app/.\t./x#f",
            "vault://secret/%2e%2e/x#f",
            "vault://sec ret/x#f",
        ] {
            let err = SecretRef::parse(bad).expect_err(bad);
            assert_eq!(err, SecretRefError::MalformedVault(bad.into()));
        }
    }

    #[test]
    fn unknown_scheme_is_an_error_naming_the_known_ones() {
        for (bad, scheme) in [
            ("vault2://x", "vault2"),
            ("ENV://A", "ENV"),
            ("s3+x.y-z://b", "s3+x.y-z"),
        ] {
            let err = SecretRef::parse(bad).expect_err(bad);
            assert_eq!(err, SecretRefError::UnknownScheme(scheme.into()));
            assert!(
                err.to_string().contains("vault://MOUNT/PATH#FIELD"),
                "{err}"
            );
        }
        let err = serde_json::from_str::<SecretRef>(r#""vault2://x""#).expect_err("unknown");
        assert!(
            err.to_string()
                .contains("unknown secret scheme `vault2://`"),
            "{err}"
        );
    }

    #[test]
    fn unread_vault_reference_does_not_resolve_and_a_filled_one_does() {
        let reference = SecretRef::parse("vault://secret/app#k").expect("parses");
        let err = reference.resolve().expect_err("unread");
        assert!(matches!(err, SecretError::VaultUnread(_)), "{err}");
        let SecretRef::Vault(v) = &reference else {
            unreachable!()
        };
        v.clone().set(SecretString::new("s3cret"));
        assert_eq!(reference.resolve().expect("filled").expose(), "s3cret");
    }

    #[test]
    fn collecting_records_references_but_not_literals() {
        let ((), refs) = collecting(|| {
            for s in ["env://A", "lit", "vault://secret/a#b"] {
                SecretRef::parse(s).expect("parses");
            }
        });
        assert_eq!(format!("{refs:?}"), r#"["env://A", "vault://secret/a#b"]"#);
        SecretRef::parse("env://B").expect("parses");
    }

    #[test]
    fn references_deserialize_from_strings_and_print_as_written() {
        let refs: Vec<SecretRef> =
            serde_json::from_str(r#"["env://A", "file:///etc/x", "hunter2"]"#).expect("parse");
        assert_eq!(
            format!("{refs:?}"),
            r#"["env://A", "file:///etc/x", [redacted]]"#
        );
        assert_eq!(refs[1].to_string(), "file:///etc/x");
        let err = serde_json::from_str::<SecretRef>("1").expect_err("not a string");
        assert!(err.to_string().contains("expected a string"), "{err}");
    }

    #[test]
    fn file_secret_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, "value\n").expect("write");
        let got = SecretRef::File(path).resolve().expect("resolve");
        assert_eq!(got.expose(), "value");
    }

    #[test]
    fn missing_env_names_the_variable() {
        let err = SecretRef::Env("PORTCULLIS_TEST_UNSET_VAR".into())
            .resolve()
            .expect_err("unset");
        assert!(err.to_string().contains("PORTCULLIS_TEST_UNSET_VAR"));
    }
}
