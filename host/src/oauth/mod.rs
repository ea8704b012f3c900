//! The OAuth 2.1 authorization server for machine clients, off unless
//! `[authorization_server]` is configured. It issues short-lived JWT access tokens
//! (RFC 9068 `at+jwt`) that the gateway's own `issued` provider verifies in process.
//!
//! - `settings`: the config section and its validation;
//! - `clients_file` / `clients`: the client registry (config and a hot-reloaded file);
//! - `signing`: the private keys, their JWKs, JWS signing;
//! - `ledger`: what outlives a reload (revocations, spent assertions, failed logins,
//!   retired keys);
//! - `client_auth`: `client_secret_basic`, `client_secret_post`, `private_key_jwt`;
//! - `grants`: `client_credentials` and RFC 8693 token exchange (delegation);
//! - `endpoints`: the HTTP side — token, revocation (RFC 7009), introspection (RFC 7662),
//!   RFC 8414 metadata and the JWKS.
//!
//! One [`AuthorizationServer`] is built per site, from the config, at load. Decisions on
//! what a client may get are all here; the gateway only routes the endpoints to it.

mod client_auth;
pub(crate) mod clients;
pub mod clients_file;
mod endpoints;
mod grants;
pub mod ledger;
pub mod settings;
mod signing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::json;

use self::clients::{Checks, Registry};
pub(crate) use self::endpoints::{endpoint, serve};
pub use self::ledger::Ledger;
pub use self::settings::{AuthorizationServerSettings, RawAuthorizationServer};
use self::signing::SigningKey;
use crate::config::ConfigError;
use crate::config::model::{Config, ProviderSettings};
use crate::context::RequestContext;
use crate::engine::api_key::{CredentialLocation, Presented};
use crate::engine::jwt::{JwtSettings, JwtValidator};
use crate::engine::{Authenticator, BoxFuture, ProviderError};
use crate::verdict::{Denial, Identity, Verdict};

/// The token endpoint's path.
pub const TOKEN_PATH: &str = "/oauth/token";
/// RFC 7009 revocation.
pub const REVOCATION_PATH: &str = "/oauth/revoke";
/// RFC 7662 introspection.
pub const INTROSPECTION_PATH: &str = "/oauth/introspect";
/// The authorization endpoint (advertised; the code flow is not served yet).
pub const AUTHORIZATION_PATH: &str = "/oauth/authorize";
/// The key set.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// RFC 8414 metadata.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// Every fixed path the server answers; no route may be one of them or lie under one.
pub const RESERVED_PATHS: [&str; 6] = [
    TOKEN_PATH,
    REVOCATION_PATH,
    INTROSPECTION_PATH,
    AUTHORIZATION_PATH,
    JWKS_PATH,
    METADATA_PATH,
];

/// The life of an identity assertion made for a token exchange at another server.
pub const IDENTITY_ASSERTION_SECS: u64 = 60;

/// The JWS `typ` of issued access tokens (RFC 9068).
const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The claims copied from an issued token into the identity it proves.
const IDENTITY_CLAIMS: [&str; 5] = ["client_id", "act", "jti", "exp", "iat"];

/// What [`AuthorizationServer::still_valid`] reads of a verified token.
#[derive(Debug)]
struct TokenFacts<'a> {
    /// The token itself: its header's `kid` is read only when a removed key is still
    /// published (rarely), as JSON parsing is most of the cost of a repeated token.
    token: &'a str,
    jti: Option<&'a str>,
    client_id: Option<&'a str>,
    iat: Option<u64>,
    exp: Option<u64>,
}

impl<'a> TokenFacts<'a> {
    /// The facts of `token`, verified into `identity`.
    fn of(token: &'a str, identity: &'a Identity) -> Self {
        let claim = |name: &str| identity.claim(name);
        let number = |name: &str| claim(name).and_then(|v| v.parse().ok());
        Self {
            token,
            jti: claim("jti"),
            client_id: claim("client_id"),
            iat: number("iat"),
            exp: number("exp"),
        }
    }

    /// The `kid` of the token's header.
    fn kid(&self) -> Option<String> {
        use base64::Engine as _;
        let header = self.token.split('.').next()?;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .ok()?;
        let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
        header.get("kid")?.as_str().map(str::to_owned)
    }
}

/// One configuration's authorization server.
pub struct AuthorizationServer {
    issuer: String,
    /// The key that signs, first, then the others still published.
    keys: Vec<SigningKey>,
    clients: Registry,
    ledger: Arc<Ledger>,
    max_failed: u32,
    /// Whether the key set still holds keys removed from config (see [`Ledger`]).
    keeps_removed_keys: bool,
    /// Every route's resource URL.
    resources: Vec<String>,
    /// A route's sibling token endpoint (`/servers/a/oauth/token`) → that route's resource.
    siblings: HashMap<String, String>,
    /// `jwt` providers trusted for subject tokens.
    subject_validators: Vec<(String, JwtValidator)>,
    /// Verifies this server's tokens for any of its resources (actor tokens, revocation,
    /// introspection).
    own_tokens: JwtValidator,
    /// The key set this server's tokens verify with (JSON).
    jwks_json: String,
    jwks: Bytes,
    metadata: Bytes,
    /// Paths the metadata is served at.
    metadata_paths: Vec<String>,
}

impl std::fmt::Debug for AuthorizationServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationServer")
            .field("issuer", &self.issuer)
            .field("keys", &self.keys)
            .field("clients", &self.clients.len())
            .finish_non_exhaustive()
    }
}

impl AuthorizationServer {
    /// Builds the server of `config` (which must have `[authorization_server]`): reads the
    /// keys and the clients file. `ledger` is the process's, carried across reloads.
    pub fn build(
        config: &Config,
        settings: &AuthorizationServerSettings,
        ledger: Arc<Ledger>,
    ) -> Result<Self, ConfigError> {
        let at = |key: String, message: String| ConfigError::Invalid {
            file: config.source.clone(),
            key: format!("authorization_server.{key}"),
            message,
        };
        let keys = settings
            .keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                SigningKey::load(key).map_err(|e| at(format!("keys[{i}].private_key"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let public_url = &config.server.public_url;
        let routes: Vec<String> = config.routes.iter().map(|r| r.path.clone()).collect();
        let clients = Registry::load(
            &config.source,
            &settings.clients,
            &settings.base_dir,
            settings.clients_file.as_deref(),
            &Checks {
                public_url,
                routes: &routes,
                max_lifetime: settings.max_token_lifetime_secs,
            },
        )?;
        let now = now();
        ledger.note_clients(
            clients.all().filter(|c| !c.revoked).map(|c| c.id.as_str()),
            clients.all().filter(|c| c.revoked).map(|c| c.id.as_str()),
            now,
        );
        let resources: Vec<String> = routes.iter().map(|p| format!("{public_url}{p}")).collect();
        let siblings = routes
            .iter()
            .filter_map(|path| {
                let parent = path.strip_suffix("/mcp")?;
                Some((
                    format!("{parent}{TOKEN_PATH}"),
                    format!("{public_url}{path}"),
                ))
            })
            .collect();
        let mut subject_validators = Vec::new();
        for (i, name) in settings.subject_token_providers.iter().enumerate() {
            let key = format!("subject_token_providers[{i}]");
            match config.providers.get(name).map(|p| &p.settings) {
                Some(ProviderSettings::Jwt(jwt)) => subject_validators.push((
                    name.clone(),
                    JwtValidator::new(name.clone(), jwt.clone())
                        .map_err(|e| at(key, e.to_string()))?,
                )),
                Some(_) => return Err(at(key, format!("`{name}` is not a `jwt` provider"))),
                None => return Err(at(key, format!("no provider is named `{name}`"))),
            }
        }
        let mut keeps_removed_keys = false;
        let mut jwks_keys: Vec<serde_json::Value> =
            keys.iter().map(|k| k.public_jwk().clone()).collect();
        for (kid, jwk) in ledger.live_signers(now) {
            if !keys.iter().any(|k| k.kid() == kid) {
                jwks_keys.push(jwk);
                keeps_removed_keys = true;
            }
        }
        let jwks_json = json!({ "keys": jwks_keys }).to_string();
        let own_tokens = own_validator(
            "authorization_server",
            &settings.issuer,
            &resources,
            &jwks_json,
        )
        .map_err(|e| at("keys".into(), e))?;
        let issuer_path = url::Url::parse(&settings.issuer)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let mut metadata_paths = vec![METADATA_PATH.to_owned()];
        if !issuer_path.is_empty() {
            metadata_paths.push(format!("{METADATA_PATH}{issuer_path}"));
        }
        let mut server = Self {
            issuer: settings.issuer.clone(),
            keys,
            clients,
            ledger,
            max_failed: settings.max_failed_authentications,
            keeps_removed_keys,
            resources,
            siblings,
            subject_validators,
            own_tokens,
            jwks: Bytes::from(jwks_json.clone()),
            jwks_json,
            metadata: Bytes::new(),
            metadata_paths,
        };
        server.metadata =
            endpoints::metadata_document(&server, public_url, &config.resource.scopes_supported);
        Ok(server)
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A statement of `identity`, admitted by `provider`, signed with the current key for
    /// the authorization server `audience` to exchange (RFC 8693 `subject_token` of type
    /// `urn:ietf:params:oauth:token-type:jwt`): `iss` this issuer, `sub` the subject,
    /// `scope` what it holds, `portcullis_provider` which provider vouched for it, `act`
    /// for an agent acting for the subject, and a life of [`IDENTITY_ASSERTION_SECS`]. That server verifies it with this issuer's JWKS.
    pub(crate) fn assert_identity(
        &self,
        identity: &Identity,
        provider: &str,
        audience: &str,
    ) -> Result<String, String> {
        let key = &self.keys[0];
        let now = now();
        let exp = now + IDENTITY_ASSERTION_SECS;
        let mut claims = json!({
            "iss": self.issuer,
            "sub": identity.subject,
            "aud": audience,
            "iat": now,
            "exp": exp,
            "jti": endpoints::random_id()
                .map_err(|_| "the system random source failed".to_owned())?,
            "scope": identity.scopes.join(" "),
            "portcullis_provider": provider,
        });
        if let Some(client) = identity.claim("client_id") {
            claims["client_id"] = json!(client);
        }
        // An agent acting for a user is stated as that: the other server must never take
        // it for the user herself.
        if let Some(actor) = crate::gateway::proxy::actor_of(identity) {
            claims["act"] = json!({ "sub": actor });
        }
        let token = key.sign("JWT", &claims)?;
        self.ledger.signed(key.kid(), key.public_jwk(), exp);
        Ok(token)
    }

    /// The validator of an `issued` provider on the route whose resource URL is
    /// `resource`: this server's tokens for that resource only, not revoked, from a client
    /// that is still registered.
    pub(crate) fn route_validator(
        self: &Arc<Self>,
        provider: &str,
        resource: &str,
    ) -> Result<IssuedValidator, String> {
        let inner = own_validator(
            provider,
            &self.issuer,
            &[resource.to_owned()],
            &self.jwks_json,
        )?;
        Ok(IssuedValidator {
            name: provider.to_owned(),
            inner,
            resource: resource.to_owned(),
            server: Arc::clone(self),
        })
    }

    /// A token of this server for any of its resources that is still good
    /// ([`Self::still_valid`]): its identity, and its client as configured now.
    pub(crate) async fn verify_own(
        &self,
        token: &str,
        now: u64,
    ) -> Option<(Identity, &clients::Client)> {
        let Verdict::Allow(identity) = self.own_tokens.check_token(token, now).await else {
            return None;
        };
        let client = self.still_valid(&TokenFacts::of(token, &identity))?;
        Some((identity, client))
    }

    /// A verified token's identity as its client is configured now, at `resource`: `None`
    /// when the client may no longer use the resource, or no longer has the grant the token
    /// came from (token exchange; impersonation for a token without an actor); else the
    /// identity with only the scopes the client still has.
    pub(crate) fn as_configured_now(
        mut identity: Identity,
        owner: &clients::Client,
        resource: &str,
    ) -> Option<Identity> {
        if !owner.may_use(resource) {
            return None;
        }
        if identity.subject != owner.id
            && (!owner.token_exchange || (identity.claim("act").is_none() && !owner.impersonation))
        {
            return None;
        }
        identity.scopes.retain(|s| owner.scopes.contains(s));
        Some(identity)
    }

    /// Whether `path`, read without case, trailing dots or a trailing `/`, is one of this
    /// server's paths.
    pub(crate) fn owns(&self, path: &str) -> bool {
        let folded = crate::gateway::request::fold_path(path);
        let folded = folded
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(&folded);
        RESERVED_PATHS.contains(&folded)
            || self
                .metadata_paths
                .iter()
                .any(|p| p.to_ascii_lowercase() == folded)
            || self
                .siblings
                .keys()
                .any(|p| p.to_ascii_lowercase() == folded)
    }

    /// The client of a verified token of this server, if the token is still good: not
    /// revoked; its client registered, not revoked, and not revoked at any time after the
    /// token was issued (a client revoked and registered again does not revive its old
    /// tokens); and, for a key removed from config, no later than the last token that key
    /// really signed.
    fn still_valid(&self, token: &TokenFacts<'_>) -> Option<&clients::Client> {
        let client = token.client_id.and_then(|id| self.clients.get(id))?;
        let fresh = token.jti.is_some_and(|jti| !self.ledger.is_revoked(jti))
            && !client.revoked
            && self
                .ledger
                .client_revoked_at(&client.id)
                .is_none_or(|at| token.iat.is_some_and(|iat| iat > at));
        // The validators know only the configured keys and the removed ones still live; a
        // token signed by a removed key must expire no later than what that key signed.
        let signed = !self.keeps_removed_keys
            || match token.kid().as_deref() {
                Some(kid) if self.keys.iter().any(|k| k.kid() == kid) => true,
                Some(kid) => self
                    .ledger
                    .signed_until(kid)
                    .is_some_and(|until| token.exp.is_some_and(|exp| exp <= until)),
                None => false,
            };
        (fresh && signed).then_some(client)
    }
}

/// A JWT validator for this server's own tokens: the strict path of the `jwt` provider,
/// with this server's keys, issuer and the given audiences, and no clock leeway (the
/// clock is this process's own).
fn own_validator(
    name: &str,
    issuer: &str,
    audiences: &[String],
    jwks_json: &str,
) -> Result<JwtValidator, String> {
    let settings: JwtSettings = serde_json::from_value(json!({
        "issuer": issuer,
        "audience": audiences,
        "algorithms": ["EdDSA", "ES256"],
        "jwks": jwks_json,
        "leeway_secs": 0,
        "claims": IDENTITY_CLAIMS,
    }))
    .map_err(|e| e.to_string())?;
    JwtValidator::new(name, settings).map_err(|e| e.to_string())
}

/// The `issued` provider on one route.
#[derive(Debug)]
pub(crate) struct IssuedValidator {
    name: String,
    inner: JwtValidator,
    /// The route's resource URL.
    resource: String,
    server: Arc<AuthorizationServer>,
}

impl Authenticator for IssuedValidator {
    fn name(&self) -> &str {
        &self.name
    }

    fn authenticate<'a>(
        &'a self,
        request: &'a Arc<RequestContext>,
    ) -> BoxFuture<'a, Result<Verdict, ProviderError>> {
        Box::pin(async move {
            let verdict = self.inner.check(&request.headers).await;
            let Verdict::Allow(identity) = verdict else {
                return Ok(verdict);
            };
            // `inner` allowed, so the bearer credential is there and is this token.
            let token = match CredentialLocation::default().find(&request.headers) {
                Presented::Credential(token) => token,
                _ => "",
            };
            let facts = TokenFacts::of(token, &identity);
            let Some(client) = self.server.still_valid(&facts) else {
                return Ok(Verdict::Deny(Denial::invalid_token(
                    "the token was revoked",
                )));
            };
            // The client as configured now: one narrowed since the token was issued gets
            // no more than it has now.
            let Some(mut identity) =
                AuthorizationServer::as_configured_now(identity, client, &self.resource)
            else {
                return Ok(Verdict::Deny(Denial::invalid_token(
                    "the token's client may no longer use this resource or grant",
                )));
            };
            identity
                .claims
                .retain(|(k, _)| !matches!(k.as_str(), "jti" | "exp" | "iat"));
            Ok(Verdict::Allow(identity))
        })
    }
}

/// Now, in Unix seconds.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
