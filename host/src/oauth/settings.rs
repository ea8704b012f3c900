//! `[authorization_server]` as written in config, and its validation into
//! [`AuthorizationServerSettings`]. Keys and client files are read when the server is built
//! ([`super::Authority::build`]), like every provider's secrets: at load, never per request.
//!
//! ```toml
//! [authorization_server]
//! issuer = "https://mcp.example.com"          # default: server.public_url
//! clients_file = "clients.toml"               # hot-reloaded
//! signing_key = "k2"                          # default: the first key
//! max_token_lifetime_secs = 3600
//! subject_token_providers = ["corp"]          # `jwt` providers trusted for RFC 8693
//!
//! [[authorization_server.keys]]
//! kid = "k2"
//! algorithm = "EdDSA"                         # or "ES256"
//! private_key = "file://keys/k2.pem"
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use super::clients_file::RawClient;
use crate::secret::SecretRef;

/// The default lifetime of an issued token (10 minutes).
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 600;
/// The default and the ceiling of `max_token_lifetime_secs`.
pub const DEFAULT_MAX_TOKEN_LIFETIME_SECS: u64 = 3600;
/// No setting may make a token live longer than a day.
pub const LIFETIME_CEILING_SECS: u64 = 86_400;
/// The shortest lifetime a client may set: a client refreshing 60 s before expiry (as the
/// MCP SDKs and conduit do) needs a token that outlives that margin.
pub const LIFETIME_FLOOR_SECS: u64 = 120;

/// `[authorization_server]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthorizationServer {
    /// The `iss` of issued tokens and the metadata's `issuer` (default `server.public_url`).
    pub issuer: Option<String>,
    /// Signing keys.
    #[serde(default)]
    pub keys: Vec<RawSigningKey>,
    /// The `kid` that signs new tokens (default: the first key).
    pub signing_key: Option<String>,
    /// A file of `[[clients]]`, relative to the config file, reloaded when it changes.
    pub clients_file: Option<String>,
    /// Clients written in the config itself.
    #[serde(default)]
    pub clients: Vec<RawClient>,
    /// Longest lifetime any client may be given, seconds (default 3600, at most 86400).
    pub max_token_lifetime_secs: Option<u64>,
    /// `jwt` providers whose tokens are accepted as RFC 8693 subject tokens.
    #[serde(default)]
    pub subject_token_providers: Vec<String>,
    /// Failed client authentications allowed per client and per source address in a minute
    /// before the endpoint answers 429 (default 10).
    pub max_failed_authentications: Option<u32>,
}

/// `[[authorization_server.keys]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigningKey {
    /// Key id, published in the JWKS and in every token's header.
    pub kid: String,
    /// `EdDSA` (Ed25519) or `ES256` (P-256).
    pub algorithm: String,
    /// PKCS#8 PEM private key, by reference (`file://` or `env://`).
    pub private_key: SecretRef,
}

/// The signature algorithms the server signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// Ed25519.
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
}

impl SigningAlgorithm {
    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
        }
    }
}

/// One signing key, validated (not yet read).
#[derive(Debug, Clone)]
pub struct SigningKeySettings {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub algorithm: SigningAlgorithm,
    /// Where the PKCS#8 PEM is.
    pub private_key: SecretRef,
}

/// `[authorization_server]`, validated.
#[derive(Debug, Clone)]
pub struct AuthorizationServerSettings {
    /// The issuer URL, without a trailing `/`.
    pub issuer: String,
    /// Keys, the signing one first.
    pub keys: Vec<SigningKeySettings>,
    /// The clients file, absolute.
    pub clients_file: Option<PathBuf>,
    /// Clients from the config itself, with the folder their relative paths start from.
    pub clients: Vec<RawClient>,
    /// The folder of the config file (relative `jwks_file`s of inline clients start there).
    pub base_dir: PathBuf,
    /// Longest lifetime any client may be given.
    pub max_token_lifetime_secs: u64,
    /// `jwt` providers trusted for subject tokens.
    pub subject_token_providers: Vec<String>,
    /// Failed authentications allowed per minute per client and per address.
    pub max_failed_authentications: u32,
}

/// Why `[authorization_server]` is invalid: the key (below `authorization_server.`) and the
/// reason with its fix.
#[derive(Debug)]
pub struct SettingsError {
    /// The key, below `authorization_server`.
    pub key: String,
    /// What is wrong and what to do.
    pub reason: String,
}

impl AuthorizationServerSettings {
    /// The files the server is built from, for the reloader to watch: the clients file,
    /// key files given as `file://`, and every client's `jwks_file` (the config's and, as
    /// far as the clients file can be read now, its own).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.clients_file.iter().cloned().collect();
        if let Some(path) = &self.clients_file
            && let Ok(file) = super::clients_file::read(path)
        {
            let dir = path.parent().unwrap_or(std::path::Path::new("."));
            files.extend(
                file.clients
                    .iter()
                    .filter_map(|c| c.jwks_file.as_ref())
                    .map(|f| dir.join(f)),
            );
        }
        for key in &self.keys {
            if let SecretRef::File(path) = &key.private_key {
                files.push(path.clone());
            }
        }
        for client in &self.clients {
            if let Some(file) = &client.jwks_file {
                files.push(self.base_dir.join(file));
            }
        }
        files
    }
}

impl RawAuthorizationServer {
    /// Validates the section. `public_url` is `server.public_url`, `listen` `server.listen`,
    /// `base_dir` the config file's folder.
    pub fn validate(
        &self,
        public_url: &str,
        listen: std::net::SocketAddr,
        base_dir: &std::path::Path,
    ) -> Result<AuthorizationServerSettings, SettingsError> {
        let error = |key: &str, reason: String| SettingsError {
            key: key.to_owned(),
            reason,
        };
        // Secrets and tokens cross the issuer and the endpoints, which are served under
        // `server.public_url`: both must be https (http only on loopback).
        let issuer = match &self.issuer {
            None => public_url,
            Some(issuer) => issuer.as_str(),
        };
        for (url, what) in [(issuer, "the issuer"), (public_url, "`server.public_url`")] {
            if let Err(reason) = check_public(url) {
                return Err(error(
                    "issuer",
                    format!("{what} `{url}` {reason}; the token endpoint is served there"),
                ));
            }
        }
        // `http://127.0.0.1` is only plain text on this machine if the listener is too.
        if public_url.starts_with("http://") && !listen.ip().is_loopback() {
            return Err(error(
                "issuer",
                format!(
                    "the gateway listens on {listen}, beyond loopback, and `server.public_url` \
                     `{public_url}` is plain http: client secrets would cross the network in \
                     clear; serve TLS (`[server.tls]`, or a proxy in front) and make the public \
                     URL https, or listen on loopback"
                ),
            ));
        }
        let issuer = issuer.trim_end_matches('/').to_owned();
        if self.keys.is_empty() {
            return Err(error(
                "keys",
                "no signing key; add `[[authorization_server.keys]]` with `kid`, `algorithm` and \
                 `private_key` (`portcullis signing-key new --kid k1 --out k1.pem` makes one)"
                    .into(),
            ));
        }
        let mut keys = Vec::with_capacity(self.keys.len());
        for (i, key) in self.keys.iter().enumerate() {
            let at = format!("keys[{i}]");
            if key.kid.is_empty()
                || key.kid.len() > 64
                || !key
                    .kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(error(
                    &format!("{at}.kid"),
                    format!(
                        "`{}` is not a plain label (1–64 of A-Z a-z 0-9 - _ .)",
                        key.kid
                    ),
                ));
            }
            if keys.iter().any(|k: &SigningKeySettings| k.kid == key.kid) {
                return Err(error(
                    &format!("{at}.kid"),
                    format!(
                        "`{}` is used by two keys; every kid must be unique",
                        key.kid
                    ),
                ));
            }
            let algorithm = match key.algorithm.as_str() {
                "EdDSA" => SigningAlgorithm::EdDSA,
                "ES256" => SigningAlgorithm::ES256,
                other => {
                    return Err(error(
                        &format!("{at}.algorithm"),
                        format!("`{other}` is not supported; use `EdDSA` or `ES256`"),
                    ));
                }
            };
            if key.private_key.is_literal() {
                return Err(error(
                    &format!("{at}.private_key"),
                    "a private key must not be pasted into the config; give a reference \
                     (`file:///path/key.pem` or `env://VAR`)"
                        .into(),
                ));
            }
            // A relative `file://` is relative to the config file, like every other path in it.
            let private_key = match &key.private_key {
                SecretRef::File(path) => SecretRef::File(base_dir.join(path)),
                other => other.clone(),
            };
            keys.push(SigningKeySettings {
                kid: key.kid.clone(),
                algorithm,
                private_key,
            });
        }
        if let Some(signing) = &self.signing_key {
            let Some(i) = keys.iter().position(|k| &k.kid == signing) else {
                return Err(error(
                    "signing_key",
                    format!("no key has kid `{signing}`; name one of the `keys`"),
                ));
            };
            let key = keys.remove(i);
            keys.insert(0, key);
        }
        let max_token_lifetime_secs = self
            .max_token_lifetime_secs
            .unwrap_or(DEFAULT_MAX_TOKEN_LIFETIME_SECS);
        if !(LIFETIME_FLOOR_SECS..=LIFETIME_CEILING_SECS).contains(&max_token_lifetime_secs) {
            return Err(error(
                "max_token_lifetime_secs",
                format!(
                    "{max_token_lifetime_secs} is outside {LIFETIME_FLOOR_SECS}..={LIFETIME_CEILING_SECS} seconds"
                ),
            ));
        }
        let max_failed_authentications = self.max_failed_authentications.unwrap_or(10);
        if max_failed_authentications == 0 {
            return Err(error(
                "max_failed_authentications",
                "0 would refuse every client; allow at least 1 failure a minute".into(),
            ));
        }
        Ok(AuthorizationServerSettings {
            issuer,
            keys,
            clients_file: self.clients_file.as_ref().map(|f| base_dir.join(f)),
            clients: self.clients.clone(),
            base_dir: base_dir.to_owned(),
            max_token_lifetime_secs,
            subject_token_providers: self.subject_token_providers.clone(),
            max_failed_authentications,
        })
    }
}

/// Whether `url` may carry client secrets and tokens: an https URL (http only on a
/// loopback address) without query or fragment (RFC 8414). `Err` says what is wrong.
fn check_public(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("is not a URL ({e})"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
        return Err("must be an https URL (http only on a loopback address)".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must have no query or fragment (RFC 8414)".into());
    }
    Ok(())
}
