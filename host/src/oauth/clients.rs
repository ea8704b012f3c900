//! The client registry: every `[[clients]]` entry (the config's and the clients file's)
//! checked into a [`Client`] the token endpoint can authenticate and authorise.
//!
//! A client authenticates with a secret (`secret_hash`, compared as SHA-256 digests in
//! constant time: secrets are 256-bit random values made by `portcullis clients add`, so a
//! fast hash is enough, as for API keys) or with `private_key_jwt` (its `jwks` /
//! `jwks_file`), never both.

use std::collections::HashMap;
use std::path::Path;

use super::clients_file::{self, CLIENT_CREDENTIALS, RawClient, grant_type};
use super::settings::{DEFAULT_TOKEN_LIFETIME_SECS, LIFETIME_FLOOR_SECS};
use crate::config::ConfigError;
use crate::crypto::jwk::VerifyingKey;
use crate::crypto::{constant_time_eq, sha256};
use crate::engine::api_key::parse_hash;

/// How a client proves who it is.
#[derive(Debug)]
pub(crate) enum Credential {
    /// SHA-256 of its secret.
    Secret([u8; 32]),
    /// Public keys its assertions are signed with.
    Keys(Vec<VerifyingKey>),
}

/// One registered client, checked.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) id: String,
    pub(crate) credential: Credential,
    pub(crate) scopes: Vec<String>,
    /// Resource URLs it may get tokens for; `None`: every route's.
    pub(crate) resources: Option<Vec<String>>,
    pub(crate) lifetime_secs: u64,
    pub(crate) client_credentials: bool,
    pub(crate) token_exchange: bool,
    pub(crate) impersonation: bool,
    pub(crate) introspection: bool,
    pub(crate) revoked: bool,
}

impl Client {
    /// Whether `secret` is this client's secret.
    pub(crate) fn secret_matches(&self, secret: &str) -> bool {
        match &self.credential {
            Credential::Secret(hash) => constant_time_eq(&sha256(secret.as_bytes()), hash),
            Credential::Keys(_) => false,
        }
    }

    /// Whether the client may get a token for `resource` (a resource URL).
    pub(crate) fn may_use(&self, resource: &str) -> bool {
        self.resources
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|r| r == resource))
    }
}

/// Every client, by id.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    clients: HashMap<String, Client>,
}

/// What a client entry is checked against.
pub(crate) struct Checks<'a> {
    /// `server.public_url`, to turn route paths into resource URLs.
    pub(crate) public_url: &'a str,
    /// Every route path.
    pub(crate) routes: &'a [String],
    /// `max_token_lifetime_secs`.
    pub(crate) max_lifetime: u64,
}

impl Registry {
    /// The registry of the config's own clients (`config_file`, keys
    /// `authorization_server.clients[i]`) and those of `clients_file`.
    pub(crate) fn load(
        config_file: &str,
        inline: &[RawClient],
        base_dir: &Path,
        clients_file: Option<&Path>,
        checks: &Checks<'_>,
    ) -> Result<Self, ConfigError> {
        let mut registry = Self::default();
        for (i, raw) in inline.iter().enumerate() {
            let key = format!("authorization_server.clients[{i}]");
            registry.add(raw, config_file, &key, base_dir, checks)?;
        }
        if let Some(path) = clients_file {
            let file = path.display().to_string();
            let parsed = clients_file::read(path)?;
            let dir = path.parent().unwrap_or(Path::new("."));
            for (i, raw) in parsed.clients.iter().enumerate() {
                registry.add(raw, &file, &format!("clients[{i}]"), dir, checks)?;
            }
        }
        Ok(registry)
    }

    /// The client `id`, revoked or not.
    pub(crate) fn get(&self, id: &str) -> Option<&Client> {
        self.clients.get(id)
    }

    /// Every client.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Client> {
        self.clients.values()
    }

    /// How many clients there are.
    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }

    fn add(
        &mut self,
        raw: &RawClient,
        file: &str,
        key: &str,
        dir: &Path,
        checks: &Checks<'_>,
    ) -> Result<(), ConfigError> {
        let error = |field: &str, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            key: format!("{key}.{field}"),
            message,
        };
        let client = check(raw, dir, checks).map_err(|(field, message)| error(field, message))?;
        if self.clients.contains_key(&client.id) {
            return Err(error(
                "id",
                format!("client `{}` is registered twice", client.id),
            ));
        }
        self.clients.insert(client.id.clone(), client);
        Ok(())
    }
}

/// A plain label: what a client id must be (it lands in tokens, logs and metrics).
pub(crate) fn is_label(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

type FieldError = (&'static str, String);

/// The entry's own checks ([`RawClient::check`], shared with `portcullis clients`), then
/// what depends on the config: its routes, the lifetime bound, the keys it names.
fn check(raw: &RawClient, dir: &Path, checks: &Checks<'_>) -> Result<Client, FieldError> {
    raw.check()
        .map_err(|invalid| (invalid.field, invalid.message))?;
    let jwks = match (&raw.jwks, &raw.jwks_file) {
        (Some(json), _) => Some(parse_jwks(json).map_err(|e| ("jwks", e))?),
        (None, Some(file)) => {
            let path = dir.join(file);
            let json = std::fs::read_to_string(&path).map_err(|e| {
                (
                    "jwks_file",
                    format!("cannot read `{}`: {e}", path.display()),
                )
            })?;
            Some(parse_jwks(&json).map_err(|e| ("jwks_file", e))?)
        }
        (None, None) => None,
    };
    let credential = match (raw.secret_hash.as_deref().and_then(parse_hash), jwks) {
        (Some(hash), None) => Credential::Secret(hash),
        (None, Some(keys)) => Credential::Keys(keys),
        // `RawClient::check` refuses both and neither.
        _ => return Err(("secret_hash", "exactly one credential is needed".into())),
    };
    let resources = if raw.resources.is_empty() {
        None
    } else {
        let mut urls = Vec::with_capacity(raw.resources.len());
        for path in &raw.resources {
            let route = path.trim_end_matches('/');
            if !checks.routes.iter().any(|r| r == route) {
                return Err((
                    "resources",
                    format!("`{path}` is not a route path; name routes as in `[[routes]] path`"),
                ));
            }
            urls.push(format!("{}{route}", checks.public_url));
        }
        Some(urls)
    };
    let lifetime_secs = raw
        .token_lifetime_secs
        .unwrap_or(DEFAULT_TOKEN_LIFETIME_SECS);
    if lifetime_secs > checks.max_lifetime {
        return Err((
            "token_lifetime_secs",
            format!(
                "{lifetime_secs} is outside {LIFETIME_FLOOR_SECS}..={} seconds \
                 (`authorization_server.max_token_lifetime_secs`)",
                checks.max_lifetime
            ),
        ));
    }
    let grants = raw
        .grants
        .clone()
        .unwrap_or_else(|| vec![CLIENT_CREDENTIALS.to_owned()]);
    let mut client_credentials = false;
    let mut token_exchange = false;
    for grant in &grants {
        match grant_type(grant).map_err(|e| ("grants", e))? {
            CLIENT_CREDENTIALS => client_credentials = true,
            _ => token_exchange = true,
        }
    }
    Ok(Client {
        id: raw.id.clone(),
        credential,
        scopes: raw.scopes.clone(),
        resources,
        lifetime_secs,
        client_credentials,
        token_exchange,
        impersonation: raw.impersonation,
        introspection: raw.introspection,
        revoked: raw.revoked,
    })
}

fn parse_jwks(json: &str) -> Result<Vec<VerifyingKey>, String> {
    #[derive(serde::Deserialize)]
    struct Jwks {
        keys: Vec<serde_json::Value>,
    }
    let jwks: Jwks = serde_json::from_str(json)
        .map_err(|e| format!("not a JWKS (a JSON object with a `keys` array): {e}"))?;
    let mut keys = Vec::with_capacity(jwks.keys.len());
    for (i, jwk) in jwks.keys.into_iter().enumerate() {
        keys.push(VerifyingKey::from_jwk(jwk).map_err(|e| format!("key {i}: {e}"))?);
    }
    if keys.is_empty() {
        return Err("the JWKS has no keys".into());
    }
    Ok(keys)
}
