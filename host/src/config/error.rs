//! Why a configuration was refused. Every message names the file, the key path
//! (`providers.corp-jwt.audience`) and, where there is one, the bad value, then the fix.

use std::path::PathBuf;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file `{}`: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML. The message carries the line and column.
    #[error("{file}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message.
        message: String,
    },
    /// A `${VAR}` names a variable that is not set.
    #[error(
        "{file}: `{key}`: environment variable `{var}` is not set; set it, or write \
         `${{{var}:-default}}` to give a default"
    )]
    UnsetVariable {
        /// The file.
        file: String,
        /// The key whose value names the variable.
        key: String,
        /// The variable.
        var: String,
    },
    /// A key or value does not fit the schema: an unknown key, a wrong type, a missing key.
    #[error("{file}: `{key}`: {message}")]
    Shape {
        /// The file.
        file: String,
        /// Where, as a dotted path.
        key: String,
        /// The deserializer's message.
        message: String,
    },
    /// A value is well-formed but cannot be used.
    #[error("{file}: `{key}`: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// Where, as a dotted path.
        key: String,
        /// What is wrong with which value, and what to do.
        message: String,
    },
}

impl ConfigError {
    /// The key path the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::UnsetVariable { key, .. }
            | Self::Shape { key, .. }
            | Self::Invalid { key, .. } => Some(key),
            Self::Read { .. } | Self::Syntax { .. } => None,
        }
    }
}

/// Builds [`ConfigError::Invalid`] for one file.
#[derive(Debug, Clone)]
pub(crate) struct Reporter {
    pub(crate) file: String,
}

impl Reporter {
    pub(crate) fn invalid(
        &self,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            key: key.into(),
            message: message.into(),
        }
    }
}
