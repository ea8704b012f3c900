//! The `[vault]` section and its client: HashiCorp Vault / OpenBao KV v2 read over HTTP(S),
//! authenticated by a token or an AppRole login.
//!
//! - A secret is `GET {address}/v1/{mount}/data/{path}` with `X-Vault-Token` (and
//!   `X-Vault-Namespace` when set); the value is the string at `.data.data.{field}`.
//! - The token and the AppRole credentials are `env://` or `file://` references only: a
//!   literal would put the key to every secret in the config file, and a `vault://` one
//!   would need Vault to log in to Vault.
//! - AppRole logs in with `POST {address}/v1/auth/{mount}/login` and keeps the token until
//!   its lease is nearly over or Vault answers 403, then logs in again (once per read).
//! - Redirects are not followed: `X-Vault-Token` is not a header an HTTP client strips when
//!   a redirect leaves the host.
//! - `http://` is allowed only to a loopback address (a dev server beside the gateway);
//!   anything else is `https://`, with the system roots and `ca_bundle` when given.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{SecretRef, SecretString};

/// `refresh_secs` when not set.
pub(super) const DEFAULT_REFRESH: Duration = Duration::from_secs(60);

/// `timeout_ms` when not set.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Leeway before a login token's lease ends at which it is renewed by a new login.
const LEASE_LEEWAY: Duration = Duration::from_secs(5);

/// `[vault]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVault {
    /// `https://vault.example:8200` (`http://` on loopback only).
    pub address: String,
    /// The token, `env://` or `file://`.
    pub token: Option<SecretRef>,
    /// AppRole credentials, instead of `token`.
    pub approle: Option<RawAppRole>,
    /// PEM CA bundle for TLS to Vault (relative to the config file).
    pub ca_bundle: Option<String>,
    /// The Vault Enterprise / OpenBao namespace.
    pub namespace: Option<String>,
    /// Seconds between re-reads of every value (default 60).
    pub refresh_secs: Option<u64>,
    /// Deadline of one request to Vault, ms (default 5000).
    pub timeout_ms: Option<u64>,
}

/// `approle = { role_id, secret_id, mount }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppRole {
    /// The role id, `env://` or `file://`.
    pub role_id: SecretRef,
    /// The secret id, `env://` or `file://`.
    pub secret_id: SecretRef,
    /// Where the AppRole auth method is mounted (default `approle`).
    pub mount: Option<String>,
}

/// `[vault]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSettings {
    /// The address without a trailing `/`.
    pub address: String,
    /// How the gateway logs in.
    pub auth: VaultAuth,
    /// Extra roots for TLS to Vault.
    pub ca_bundle: Option<PathBuf>,
    /// `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// Between re-reads.
    pub refresh: Duration,
    /// Per request.
    pub timeout: Duration,
}

/// How the gateway authenticates to Vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// A token given by reference.
    Token(SecretRef),
    /// An AppRole login.
    AppRole {
        /// The role id.
        role_id: SecretRef,
        /// The secret id.
        secret_id: SecretRef,
        /// The auth method's mount.
        mount: String,
    },
}

/// A key below `vault` and what is wrong with it.
#[derive(Debug)]
pub struct VaultSettingsError {
    /// The key, below `vault`.
    pub key: &'static str,
    /// What is wrong and what to do.
    pub reason: String,
}

fn error(key: &'static str, reason: impl Into<String>) -> VaultSettingsError {
    VaultSettingsError {
        key,
        reason: reason.into(),
    }
}

impl RawVault {
    /// Checks every value; relative paths are taken from `base_dir`.
    pub fn validate(&self, base_dir: &Path) -> Result<VaultSettings, VaultSettingsError> {
        let url = url::Url::parse(&self.address)
            .map_err(|e| error("address", format!("`{}` is not a URL ({e})", self.address)))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(error(
                    "address",
                    format!(
                        "`{}` is plain HTTP to a host that is not loopback: the token would \
                         cross the network in clear; use `https://`",
                        self.address
                    ),
                ));
            }
            _ => {
                return Err(error(
                    "address",
                    format!("`{}` is not an `https://` URL", self.address),
                ));
            }
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(error(
                "address",
                format!(
                    "`{}` has a query, a fragment or user info; give the server's base URL",
                    self.address
                ),
            ));
        }
        let by_reference = |key: &'static str, r: &SecretRef| match r {
            SecretRef::Env(_) | SecretRef::File(_) => Ok(absolute(r, base_dir)),
            _ => Err(error(
                key,
                "must be `env://VAR` or `file://PATH`: a literal would put the key to every \
                 secret in the config file",
            )),
        };
        let auth = match (&self.token, &self.approle) {
            (Some(token), None) => VaultAuth::Token(by_reference("token", token)?),
            (None, Some(approle)) => {
                let mount = approle
                    .mount
                    .clone()
                    .unwrap_or_else(|| "approle".to_owned());
                if !mount.split('/').all(super::is_plain_segment) {
                    return Err(error(
                        "approle.mount",
                        format!("`{mount}` is not an auth mount path"),
                    ));
                }
                VaultAuth::AppRole {
                    role_id: by_reference("approle.role_id", &approle.role_id)?,
                    secret_id: by_reference("approle.secret_id", &approle.secret_id)?,
                    mount,
                }
            }
            (Some(_), Some(_)) => {
                return Err(error("token", "give `token` or `approle`, not both"));
            }
            (None, None) => {
                return Err(error(
                    "token",
                    "is missing: give `token = \"env://VAULT_TOKEN\"` or `approle = { role_id \
                     = …, secret_id = … }`",
                ));
            }
        };
        let refresh = match self.refresh_secs {
            None => DEFAULT_REFRESH,
            Some(0) => return Err(error("refresh_secs", "must be at least 1")),
            Some(secs) => Duration::from_secs(secs),
        };
        let timeout = match self.timeout_ms {
            None => DEFAULT_TIMEOUT,
            Some(0) => return Err(error("timeout_ms", "must be at least 1")),
            Some(ms) => Duration::from_millis(ms),
        };
        let ca_bundle = self.ca_bundle.as_ref().map(|p| base_dir.join(p));
        if let Some(path) = &ca_bundle {
            let pem = std::fs::read(path).map_err(|e| {
                error(
                    "ca_bundle",
                    format!("cannot read `{}`: {e}", path.display()),
                )
            })?;
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                error(
                    "ca_bundle",
                    format!("`{}` is not a PEM bundle: {e}", path.display()),
                )
            })?;
        }
        Ok(VaultSettings {
            address: self.address.trim_end_matches('/').to_owned(),
            auth,
            ca_bundle,
            namespace: self.namespace.clone().filter(|n| !n.is_empty()),
            refresh,
            timeout,
        })
    }
}

/// A relative `file://` credential is taken from the config file's folder.
fn absolute(reference: &SecretRef, base_dir: &Path) -> SecretRef {
    match reference {
        SecretRef::File(p) if p.is_relative() => SecretRef::File(base_dir.join(p)),
        other => other.clone(),
    }
}

/// Why Vault did not give a value. Never holds a token or a secret value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VaultError {
    /// The HTTP client could not be built (the CA bundle).
    #[error("cannot set up TLS to Vault: {0}")]
    Client(String),
    /// A credential reference did not resolve.
    #[error("cannot read the Vault credential: {0}")]
    Credential(String),
    /// No answer: connection refused, TLS failure, timeout.
    #[error("Vault is unreachable: {0}")]
    Unreachable(String),
    /// An answer other than 200.
    #[error("Vault answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Vault's `errors`, or the body's start.
        message: String,
    },
    /// A 200 without the expected JSON.
    #[error("Vault's answer is not a KV v2 secret: {0}")]
    Body(String),
    /// The secret has no such field.
    #[error("the secret has no field `{0}`")]
    MissingField(String),
    /// The field is not a string.
    #[error("the field `{0}` is not a string")]
    NotString(String),
}

impl VaultError {
    /// Whether Vault answered that the secret or the field does not exist: a definite
    /// answer, unlike an outage.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            Self::MissingField(_) | Self::Status { status: 404, .. }
        )
    }
}

/// A token from a login, and when to log in again.
#[derive(Debug, Clone)]
pub(super) struct Login {
    token: SecretString,
    renew_at: Option<Instant>,
}

/// One set of reads against one [`VaultSettings`].
#[derive(Debug)]
pub(super) struct Client<'a> {
    settings: &'a VaultSettings,
    http: reqwest::Client,
}

impl<'a> Client<'a> {
    pub(super) fn new(settings: &'a VaultSettings) -> Result<Self, VaultError> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &settings.ca_bundle {
            let pem = std::fs::read(path).map_err(|e| {
                VaultError::Client(format!("cannot read `{}`: {e}", path.display()))
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| VaultError::Client(format!("`{}`: {e}", path.display())))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| VaultError::Client(e.to_string()))?;
        Ok(Self { settings, http })
    }

    /// The token to send: the configured one, or `login`'s when still good, else a new login
    /// stored there.
    pub(super) async fn token(
        &self,
        login: &mut Option<Login>,
    ) -> Result<SecretString, VaultError> {
        match &self.settings.auth {
            VaultAuth::Token(reference) => reference
                .resolve()
                .map_err(|e| VaultError::Credential(e.to_string())),
            VaultAuth::AppRole { .. } => {
                if let Some(current) = login
                    && current.renew_at.is_none_or(|at| Instant::now() < at)
                {
                    return Ok(current.token.clone());
                }
                let fresh = self.login().await?;
                let token = fresh.token.clone();
                *login = Some(fresh);
                Ok(token)
            }
        }
    }

    async fn login(&self) -> Result<Login, VaultError> {
        let VaultAuth::AppRole {
            role_id,
            secret_id,
            mount,
        } = &self.settings.auth
        else {
            return Err(VaultError::Credential("no AppRole is configured".into()));
        };
        let credential = |r: &SecretRef| {
            r.resolve()
                .map_err(|e| VaultError::Credential(e.to_string()))
        };
        let body = serde_json::json!({
            "role_id": credential(role_id)?.expose(),
            "secret_id": credential(secret_id)?.expose(),
        });
        let url = format!("{}/v1/auth/{mount}/login", self.settings.address);
        let answer: LoginAnswer = self.send(self.http.post(url).json(&body)).await?;
        let lease = Duration::from_secs(answer.auth.lease_duration);
        Ok(Login {
            token: SecretString::new(answer.auth.client_token),
            // A lease of 0 never ends (a root token's).
            renew_at: (!lease.is_zero())
                .then(|| Instant::now() + lease.saturating_sub(LEASE_LEEWAY)),
        })
    }

    /// The data of the KV v2 secret `mount/path`; with AppRole, a 403 logs in once more
    /// (the token was revoked or its lease cut short) and reads again.
    pub(super) async fn read(
        &self,
        login: &mut Option<Login>,
        mount: &str,
        path: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, VaultError> {
        let token = self.token(login).await?;
        match self.read_with(&token, mount, path).await {
            Err(VaultError::Status { status: 403, .. })
                if matches!(self.settings.auth, VaultAuth::AppRole { .. }) =>
            {
                *login = None;
                let token = self.token(login).await?;
                self.read_with(&token, mount, path).await
            }
            other => other,
        }
    }

    pub(super) async fn read_with(
        &self,
        token: &SecretString,
        mount: &str,
        path: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, VaultError> {
        let url = format!("{}/v1/{mount}/data/{path}", self.settings.address);
        let request = self.http.get(url).header("x-vault-token", token.expose());
        let answer: KvAnswer = self.send(request).await?;
        Ok(answer.data.data)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> Result<T, VaultError> {
        if let Some(namespace) = &self.settings.namespace {
            request = request.header("x-vault-namespace", namespace);
        }
        let response = request
            .send()
            .await
            .map_err(|e| VaultError::Unreachable(error_chain(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| VaultError::Unreachable(error_chain(&e)))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorsAnswer>(&body)
                .map(|e| e.errors.join("; "))
                .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into());
            return Err(VaultError::Status {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| VaultError::Body(e.to_string()))
    }
}

/// The field of a secret's data, as a string.
pub(super) fn field(
    data: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<SecretString, VaultError> {
    match data.get(field) {
        Some(serde_json::Value::String(value)) => Ok(SecretString::new(value.as_str())),
        Some(_) => Err(VaultError::NotString(field.to_owned())),
        None => Err(VaultError::MissingField(field.to_owned())),
    }
}

/// An error and its causes on one line (reqwest's top level says only "error sending
/// request"; the cause says "connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[derive(Deserialize)]
struct KvAnswer {
    data: KvData,
}

#[derive(Deserialize)]
struct KvData {
    data: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct LoginAnswer {
    auth: LoginAuth,
}

#[derive(Deserialize)]
struct LoginAuth {
    client_token: String,
    #[serde(default)]
    lease_duration: u64,
}

#[derive(Deserialize)]
struct ErrorsAnswer {
    errors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawVault {
        toml::from_str(text).expect("shape")
    }

    #[test]
    fn plain_http_is_allowed_only_to_loopback() {
        let base = Path::new("/etc/portcullis");
        let ok = raw("address = \"http://127.0.0.1:8200/\"\ntoken = \"env://T\"");
        let settings = ok.validate(base).expect("loopback");
        assert_eq!(settings.address, "http://127.0.0.1:8200");
        assert_eq!(settings.refresh, DEFAULT_REFRESH);
        let bad = raw("address = \"http://vault.example:8200\"\ntoken = \"env://T\"");
        let err = bad.validate(base).expect_err("plain http");
        assert_eq!(err.key, "address");
    }

    #[test]
    fn credentials_must_be_references() {
        let base = Path::new("/etc/portcullis");
        let err = raw("address = \"https://v\"\ntoken = \"hunter2\"")
            .validate(base)
            .expect_err("literal token");
        assert_eq!(err.key, "token");
        let err = raw(
            "address = \"https://v\"\napprole = { role_id = \"env://R\", secret_id = \"vault://secret/x#y\" }",
        )
        .validate(base)
        .expect_err("vault secret id");
        assert_eq!(err.key, "approle.secret_id");
        let settings = raw(
            "address = \"https://v\"\napprole = { role_id = \"env://R\", secret_id = \"file://sid\" }",
        )
        .validate(base)
        .expect("approle");
        assert_eq!(
            settings.auth,
            VaultAuth::AppRole {
                role_id: SecretRef::Env("R".into()),
                secret_id: SecretRef::File("/etc/portcullis/sid".into()),
                mount: "approle".into(),
            }
        );
        let err = raw("address = \"https://v\"")
            .validate(base)
            .expect_err("no auth");
        assert_eq!(err.key, "token");
    }

    #[test]
    fn a_field_must_be_a_string() {
        let data: serde_json::Map<_, _> =
            serde_json::from_str(r#"{"s": "v", "n": 1}"#).expect("json");
        assert_eq!(field(&data, "s").expect("string").expose(), "v");
        assert!(matches!(field(&data, "n"), Err(VaultError::NotString(_))));
        assert!(matches!(
            field(&data, "x"),
            Err(VaultError::MissingField(_))
        ));
    }
}
