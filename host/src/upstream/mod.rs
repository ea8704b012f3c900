//! The upstream side of a route: how the gateway reaches the upstream ([`tls`]) and the
//! credential it presents there ([`UpstreamAuth`], from `[routes.upstream_auth]`).
//!
//! The caller's own credential never reaches the upstream (it is stripped first); the
//! upstream's credential is added after, overwriting any header of the same name the
//! caller sent. Three kinds:
//!
//! - `header`: a static header built from a secret once per load (a secret that changes is
//!   picked up by the reload it causes).
//! - `client_credentials`: one token per route ([`token::SharedToken`]).
//! - `token_exchange`: one token per caller (RFC 8693, [`token::ExchangedTokens`]), from
//!   either of two subject tokens:
//!   - `subject = "caller_token"` (default): the caller's bearer token, the one the chain's
//!     `jwt` or `issued` provider verified on this request. Every provider of such a
//!     route's chain must read a bearer token; a chain that could admit a caller by API key
//!     or certificate has no token to exchange and is refused at load.
//!   - `subject = "identity"`: a statement of the identity the chain produced (any
//!     provider), signed by the gateway's own authorization server
//!     (`AuthorizationServer::assert_identity`), which the upstream's authorization
//!     server trusts through this gateway's JWKS. Cached per subject, scopes and provider.
//!
//! When no credential can be had the request is answered 503 and never sent without one.
//! When the upstream answers 401 to a token, the token is forgotten and, if the request
//! can be sent again (its body was read whole or it has none), it is sent once more with a
//! new token; otherwise, and when the second answer is 401 too, the caller gets 502: the
//! upstream's challenge is about the gateway's credential, not the caller's.
//!
//! These apply when the gateway proxies. A proxy that asks the forward-auth endpoint
//! reaches the upstream itself and brings its own credential.

pub mod settings;
pub mod tls;
pub mod token;

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use self::settings::{ACCESS_TOKEN_TYPE, Checked, ExchangeSubject};
use self::token::{CallerKey, ExchangedTokens, SharedToken, Token, TokenEndpoint, TokenError};
use crate::engine::api_key::{CredentialLocation, Presented};
use crate::oauth::AuthorizationServer;
use crate::verdict::Identity;

/// RFC 8693 token type of a JWT (an identity statement).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A route's credential for its upstream.
#[derive(Debug)]
pub enum UpstreamAuth {
    /// A fixed header.
    Header {
        /// Its name.
        name: HeaderName,
        /// Its value, marked sensitive.
        value: HeaderValue,
    },
    /// One client-credentials token.
    ClientCredentials(SharedToken),
    /// Each caller's token exchanged.
    TokenExchange {
        /// The cache.
        tokens: ExchangedTokens,
        /// What is exchanged.
        subject: Subject,
    },
}

/// What a token exchange sends, built.
#[derive(Debug)]
pub enum Subject {
    /// The caller's bearer token: where each chain provider reads it, by provider name.
    CallerToken(Vec<(String, CredentialLocation)>),
    /// A statement of the identity, signed by `server` for `audience`.
    Identity {
        /// The gateway's authorization server.
        server: Arc<AuthorizationServer>,
        /// The statement's `aud`.
        audience: String,
    },
}

/// The credential for one request, to add to it and, should the upstream refuse it, to
/// report back with [`UpstreamAuth::refused`].
#[derive(Debug)]
pub struct Credential {
    name: HeaderName,
    value: HeaderValue,
    token: Option<Arc<Token>>,
}

impl Credential {
    /// Sets the header on `headers`, replacing any the caller sent.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(self.name.clone(), self.value.clone());
    }

    /// Whether a refusal could be answered with another one (a token, not a fixed header):
    /// only then is a request kept to be sent again.
    pub fn refreshable(&self) -> bool {
        self.token.is_some()
    }
}

/// Who the caller is, as a token exchange needs it: read before the caller's credentials
/// are stripped. Empty for the other kinds.
#[derive(Debug, Default)]
pub struct Caller(Option<(CallerKey, CallerSubject)>);

#[derive(Debug)]
enum CallerSubject {
    /// The bearer token the chain verified.
    Token(String),
    /// The identity and the provider that admitted it.
    Identity(Identity, String),
}

impl UpstreamAuth {
    /// Builds `checked`, reading its secrets now. `locations` are the credential locations
    /// of the route's bearer-token providers and `server` the gateway's authorization
    /// server (token exchange only).
    pub fn build(
        checked: &Checked,
        locations: Vec<(String, CredentialLocation)>,
        server: Option<&Arc<AuthorizationServer>>,
    ) -> Result<Self, String> {
        match checked {
            Checked::Header {
                name,
                around,
                secret,
            } => {
                let secret = secret.resolve().map_err(|e| format!("`secret`: {e}"))?;
                let text = format!("{}{}{}", around.0, secret.expose(), around.1);
                let mut value = HeaderValue::from_str(&text).map_err(|_| {
                    "`secret`: its value cannot be sent in a header (a line break or a \
                     control character)"
                        .to_owned()
                })?;
                value.set_sensitive(true);
                Ok(Self::Header {
                    name: name.clone(),
                    value,
                })
            }
            Checked::Token {
                exchange: false,
                endpoint,
                ..
            } => Ok(Self::ClientCredentials(SharedToken::new(
                TokenEndpoint::build(endpoint)?,
            ))),
            Checked::Token {
                exchange: true,
                endpoint,
                cache_size,
                subject,
            } => {
                let subject = match subject {
                    ExchangeSubject::CallerToken => Subject::CallerToken(locations),
                    ExchangeSubject::Identity { audience } => Subject::Identity {
                        server: Arc::clone(
                            server
                                .ok_or("`subject = \"identity\"` needs `[authorization_server]`")?,
                        ),
                        audience: audience.clone(),
                    },
                };
                Ok(Self::TokenExchange {
                    tokens: ExchangedTokens::new(TokenEndpoint::build(endpoint)?, *cache_size),
                    subject,
                })
            }
        }
    }

    /// Who the caller is, when this route exchanges: the bearer token read from where the
    /// provider that admitted the caller (`provider`, or the first bearer reader of an
    /// `a+b` group) found it, or the `identity` it produced.
    pub fn caller(&self, identity: &Identity, provider: &str, headers: &HeaderMap) -> Caller {
        let Self::TokenExchange { subject, .. } = self else {
            return Caller(None);
        };
        match subject {
            Subject::CallerToken(locations) => {
                let token = provider.split('+').find_map(|member| {
                    let (_, location) = locations.iter().find(|(name, _)| name == member)?;
                    match location.find(headers) {
                        Presented::Credential(token) => Some(token.to_owned()),
                        _ => None,
                    }
                });
                Caller(token.map(|token| {
                    let key = ExchangedTokens::key(&["token", &token]);
                    (key, CallerSubject::Token(token))
                }))
            }
            Subject::Identity { .. } => {
                let mut scopes: Vec<&str> = identity.scopes.iter().map(String::as_str).collect();
                scopes.sort_unstable();
                let scopes = scopes.join(" ");
                let client = identity.claim("client_id").unwrap_or_default();
                let actor = crate::gateway::proxy::actor_of(identity).unwrap_or_default();
                let key = ExchangedTokens::key(&[
                    "identity",
                    provider,
                    &identity.subject,
                    &scopes,
                    client,
                    &actor,
                ]);
                Caller(Some((
                    key,
                    CallerSubject::Identity(identity.clone(), provider.to_owned()),
                )))
            }
        }
    }

    /// The credential for this request.
    pub async fn credential(&self, caller: &Caller) -> Result<Credential, TokenError> {
        let bearer = |token: Arc<Token>| Credential {
            name: http::header::AUTHORIZATION,
            value: token.header.clone(),
            token: Some(token),
        };
        match self {
            Self::Header { name, value } => Ok(Credential {
                name: name.clone(),
                value: value.clone(),
                token: None,
            }),
            Self::ClientCredentials(shared) => shared.get().await.map(bearer),
            Self::TokenExchange { tokens, subject } => {
                let Some((key, who)) = &caller.0 else {
                    return Err(TokenError(
                        "the caller presented no bearer token to exchange for the upstream".into(),
                    ));
                };
                let (make, token_type): (
                    Box<dyn FnOnce() -> Result<String, TokenError> + Send>,
                    _,
                ) = match (who, subject) {
                    (CallerSubject::Token(token), _) => {
                        let token = token.clone();
                        (Box::new(move || Ok(token)), ACCESS_TOKEN_TYPE)
                    }
                    (
                        CallerSubject::Identity(identity, provider),
                        Subject::Identity { server, audience },
                    ) => (
                        Box::new(move || {
                            server
                                .assert_identity(identity, provider, audience)
                                .map_err(|e| TokenError(format!("signing the identity: {e}")))
                        }),
                        JWT_TOKEN_TYPE,
                    ),
                    (CallerSubject::Identity(..), Subject::CallerToken(_)) => {
                        return Err(TokenError("no caller token".into()));
                    }
                };
                tokens.get(*key, make, token_type).await.map(bearer)
            }
        }
    }

    /// The upstream answered 401 to `credential`: forget its token. Returns whether a new
    /// one may be fetched (a static header would only be refused again).
    pub fn refused(&self, credential: &Credential, caller: &Caller) -> bool {
        let Some(token) = &credential.token else {
            return false;
        };
        match self {
            Self::Header { .. } => false,
            Self::ClientCredentials(shared) => shared.refused(token),
            Self::TokenExchange { tokens, .. } => caller
                .0
                .as_ref()
                .is_some_and(|(key, _)| tokens.refused(key, token)),
        }
    }

    /// The header the credential goes in: the caller's copy, and its look-alike spellings
    /// (`x_api_key` for `x-api-key`), are stripped before it is added.
    pub fn header_name(&self) -> &HeaderName {
        match self {
            Self::Header { name, .. } => name,
            Self::ClientCredentials(_) | Self::TokenExchange { .. } => &http::header::AUTHORIZATION,
        }
    }

    /// The `type` as configured, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Header { .. } => "header",
            Self::ClientCredentials(_) => "client_credentials",
            Self::TokenExchange { .. } => "token_exchange",
        }
    }
}
