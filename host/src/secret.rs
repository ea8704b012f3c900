//! Secrets: a string type that never prints, and [`SecretRef`], the one type every setting
//! uses for a secret given by reference (`env://VAR`, `file://path`), parsed and resolved
//! here and nowhere else. A new reference scheme is a variant of [`SecretRef`] with its arm
//! in [`SecretRef::parse`], [`SecretRef::resolve`] and the `Display` impl.

use std::fmt;
use std::path::PathBuf;

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
}

impl SecretRef {
    /// Parses a reference: `env://VAR`, `file:///abs/path` (or `file://rel/path`), or a literal.
    pub fn parse(reference: &str) -> Self {
        if let Some(var) = reference.strip_prefix("env://") {
            Self::Env(var.to_owned())
        } else if let Some(path) = reference.strip_prefix("file://") {
            Self::File(PathBuf::from(path))
        } else {
            Self::Literal(SecretString::new(reference))
        }
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
            Self::Literal(value) => Ok(value.clone()),
        }
    }
}

impl From<&str> for SecretRef {
    fn from(reference: &str) -> Self {
        Self::parse(reference)
    }
}

impl From<String> for SecretRef {
    fn from(reference: String) -> Self {
        Self::parse(&reference)
    }
}

/// From the string as written; the same errors as a `String` setting (a reference parses
/// whatever its text, and is checked when it is resolved).
impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|reference| Self::parse(&reference))
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(var) => write!(f, "env://{var}"),
            Self::File(path) => write!(f, "file://{}", path.display()),
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
        assert_eq!(SecretRef::parse("env://A"), SecretRef::Env("A".into()));
        assert_eq!(
            SecretRef::parse("file:///etc/x"),
            SecretRef::File("/etc/x".into())
        );
        assert_eq!(
            SecretRef::parse("plain"),
            SecretRef::Literal(SecretString::new("plain"))
        );
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
