//! What a token request may be given: `client_credentials`, and RFC 8693 token exchange in
//! delegation form (the user's token as subject, the client's own token as actor).
//!
//! - **Audience.** RFC 8707 `resource` (or RFC 8693 `audience`) names one route's resource
//!   URL; it becomes `aud`. Without one, a route's sibling token endpoint means that route,
//!   and otherwise a client allowed a single resource gets that one. A resource this
//!   gateway does not serve, or that the client may not use, is `invalid_target`.
//! - **Scopes.** `scope` absent: the client's scopes (RFC 6749 §3.3; the TypeScript SDK's
//!   client-credentials provider sends none). Present: what was asked and is allowed;
//!   nothing left is `invalid_scope`. For an exchange, also only what the subject holds.
//! - **Lifetime.** The client's (10 minutes by default); an exchanged token never outlives
//!   its subject token.

use serde_json::json;

use super::AuthorizationServer;
use super::clients::Client;
use super::endpoints::{Form, OAuthError};
use crate::verdict::Verdict;

/// RFC 8693 token type of an access token.
pub(super) const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// A token issued, as the endpoint answers it.
pub(super) struct Issued {
    pub(super) access_token: String,
    pub(super) expires_in: u64,
    pub(super) scope: String,
    pub(super) audience: String,
    pub(super) subject: String,
    /// `issued_token_type`, for an exchange.
    pub(super) exchanged: bool,
}

/// `grant_type=client_credentials`.
pub(super) fn client_credentials(
    server: &AuthorizationServer,
    client: &Client,
    form: &Form,
    sibling: Option<&str>,
    now: u64,
) -> Result<Issued, OAuthError> {
    if !client.client_credentials {
        return Err(OAuthError::unauthorized_client(
            "this client may not use `client_credentials`",
        ));
    }
    let audience = audience(server, client, form, sibling)?;
    let scopes = granted(form, &client.scopes, None)?;
    let grant = Grant {
        subject: &client.id,
        actor: None,
        audience: &audience,
        scopes: &scopes,
        lifetime: client.lifetime_secs,
        exchanged: false,
    };
    issue(server, client, grant, now)
}

/// `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`.
pub(super) async fn token_exchange(
    server: &AuthorizationServer,
    client: &Client,
    form: &Form,
    sibling: Option<&str>,
    now: u64,
) -> Result<Issued, OAuthError> {
    if !client.token_exchange {
        return Err(OAuthError::unauthorized_client(
            "this client may not use token exchange",
        ));
    }
    if let Some(wanted) = form.get("requested_token_type")
        && wanted != ACCESS_TOKEN_TYPE
        && wanted != JWT_TYPE
    {
        return Err(OAuthError::invalid_request(format!(
            "`requested_token_type` `{wanted}` is not issued here; ask for `{ACCESS_TOKEN_TYPE}`"
        )));
    }
    let subject_token = form
        .get("subject_token")
        .ok_or_else(|| OAuthError::invalid_request("`subject_token` is missing"))?;
    match form.get("subject_token_type") {
        Some(ACCESS_TOKEN_TYPE | JWT_TYPE | ID_TOKEN_TYPE) => {}
        Some(other) => {
            return Err(OAuthError::invalid_request(format!(
                "`subject_token_type` `{other}` is not accepted; send a JWT access or ID token"
            )));
        }
        None => {
            return Err(OAuthError::invalid_request(
                "`subject_token_type` is missing",
            ));
        }
    }
    // A token of this server is never a subject: exchanging a delegated token again would
    // drop its `act` chain (and the user's consent is the identity provider's to give).
    if unverified_claim(subject_token, "iss")
        .as_ref()
        .and_then(|v| v.as_str())
        == Some(server.issuer.as_str())
    {
        return Err(OAuthError::invalid_grant(
            "a token of this server cannot be a subject token; send the user's token from \
             the identity provider",
        ));
    }
    let mut subject = None;
    for (_, validator) in &server.subject_validators {
        match validator.check_token(subject_token, now).await {
            Verdict::Allow(identity) => {
                subject = Some(identity);
                break;
            }
            Verdict::Deny(denial) => {
                return Err(OAuthError::invalid_grant(format!(
                    "the subject token is refused: {}",
                    denial.reason
                )));
            }
            Verdict::Abstain => {}
        }
    }
    let subject = subject.ok_or_else(|| {
        OAuthError::invalid_grant("the subject token is not from an identity provider trusted here")
    })?;
    // `*` from a token is refused everywhere in the gateway (see `grants_wildcard`); read
    // here as "every scope" it would lift the user's limit off the client's scopes.
    if subject.scopes.iter().any(|s| s == "*") {
        return Err(OAuthError::invalid_grant(
            "the subject token claims the wildcard scope `*`, which no token may carry",
        ));
    }
    let subject_exp = unverified_claim(subject_token, "exp")
        .and_then(|v| v.as_u64())
        .unwrap_or(now);
    let actor = match (form.get("actor_token"), form.get("actor_token_type")) {
        (Some(actor), Some(ACCESS_TOKEN_TYPE | JWT_TYPE)) => {
            let Some((identity, owner)) = server.verify_own(actor, now).await else {
                return Err(OAuthError::invalid_grant(
                    "the actor token is not a valid, unrevoked token of this server",
                ));
            };
            if owner.id != client.id || identity.subject != client.id {
                return Err(OAuthError::unauthorized_client(
                    "the actor token must be this client's own (the client is the actor)",
                ));
            }
            let actor_exp = identity.claim("exp").and_then(|e| e.parse().ok());
            Some((client.id.as_str(), actor_exp.unwrap_or(now)))
        }
        (Some(_), _) => {
            return Err(OAuthError::invalid_request(format!(
                "`actor_token_type` must be `{ACCESS_TOKEN_TYPE}`"
            )));
        }
        (None, Some(_)) => {
            return Err(OAuthError::invalid_request(
                "`actor_token_type` without `actor_token`",
            ));
        }
        (None, None) if client.impersonation => None,
        (None, None) => {
            return Err(OAuthError::unauthorized_client(
                "delegation needs an `actor_token` (this client's own token); impersonation is \
                 not allowed for this client",
            ));
        }
    };
    let audience = audience(server, client, form, sibling)?;
    // The user's token must be meant for this exchange: for this server (its issuer), or
    // for the very resource the new token is for. A token the user gave one service is
    // not a token for every other service behind the gateway.
    let subject_audiences = match unverified_claim(subject_token, "aud") {
        Some(serde_json::Value::String(one)) => vec![one],
        Some(serde_json::Value::Array(many)) => many
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    if !subject_audiences
        .iter()
        .map(|a| a.trim_end_matches('/'))
        .any(|a| a == server.issuer || a == audience)
    {
        return Err(OAuthError::invalid_grant(format!(
            "the subject token's audience must be this server (`{}`) or `{audience}`",
            server.issuer
        )));
    }
    let scopes = granted(form, &client.scopes, Some(&subject.scopes))?;
    // Never longer than the user's token, nor than the agent's own.
    let actor_exp = actor.map_or(u64::MAX, |(_, exp)| exp);
    let lifetime = client
        .lifetime_secs
        .min(subject_exp.saturating_sub(now))
        .min(actor_exp.saturating_sub(now));
    let actor = actor.map(|(id, _)| id);
    if lifetime == 0 {
        return Err(OAuthError::invalid_grant("the subject token has expired"));
    }
    let grant = Grant {
        subject: &subject.subject,
        actor,
        audience: &audience,
        scopes: &scopes,
        lifetime,
        exchanged: true,
    };
    issue(server, client, grant, now)
}

/// The resource URL the token is for.
fn audience(
    server: &AuthorizationServer,
    client: &Client,
    form: &Form,
    sibling: Option<&str>,
) -> Result<String, OAuthError> {
    let resource = form.get("resource");
    let audience = form.get("audience");
    let asked = match (resource, audience) {
        (Some(r), Some(a)) if r.trim_end_matches('/') != a.trim_end_matches('/') => {
            return Err(OAuthError::invalid_target(
                "`resource` and `audience` name different targets",
            ));
        }
        (Some(r), _) | (None, Some(r)) => Some(r.trim_end_matches('/')),
        (None, None) => None,
    };
    let chosen = match asked {
        Some(asked) => {
            let Some(known) = server.resources.iter().find(|r| r.as_str() == asked) else {
                return Err(OAuthError::invalid_target(format!(
                    "`{asked}` is not a resource served here"
                )));
            };
            known.clone()
        }
        None => match (sibling, &client.resources) {
            (Some(route), _) => route.to_owned(),
            (None, Some(only)) if only.len() == 1 => only[0].clone(),
            _ => {
                return Err(OAuthError::invalid_target(
                    "name the resource the token is for (RFC 8707 `resource`)",
                ));
            }
        },
    };
    if !client.may_use(&chosen) {
        return Err(OAuthError::invalid_target(format!(
            "this client may not get tokens for `{chosen}`"
        )));
    }
    Ok(chosen)
}

/// The scopes to grant: asked ∩ allowed (∩ held by the subject).
fn granted(
    form: &Form,
    allowed: &[String],
    held: Option<&[String]>,
) -> Result<Vec<String>, OAuthError> {
    let permitted =
        |s: &str| allowed.iter().any(|a| a == s) && held.is_none_or(|h| h.iter().any(|x| x == s));
    let mut granted: Vec<String> = match form.get("scope") {
        Some(asked) => asked
            .split(' ')
            .filter(|s| !s.is_empty() && permitted(s))
            .map(str::to_owned)
            .collect(),
        None => allowed.iter().filter(|s| permitted(s)).cloned().collect(),
    };
    let mut seen = std::collections::HashSet::new();
    granted.retain(|s| seen.insert(s.clone()));
    if granted.is_empty() {
        return Err(OAuthError::invalid_scope(if held.is_some() {
            "none of the requested scopes is both allowed to this client and held by the user"
        } else {
            "none of the requested scopes may be granted to this client"
        }));
    }
    Ok(granted)
}

/// What one token says.
struct Grant<'a> {
    subject: &'a str,
    /// The delegate (`act.sub`), for a delegation exchange.
    actor: Option<&'a str>,
    audience: &'a str,
    scopes: &'a [String],
    lifetime: u64,
    /// Whether it comes from a token exchange (its answer names the issued token type).
    exchanged: bool,
}

fn issue(
    server: &AuthorizationServer,
    client: &Client,
    grant: Grant<'_>,
    now: u64,
) -> Result<Issued, OAuthError> {
    let Grant {
        subject,
        actor,
        audience,
        scopes,
        lifetime,
        exchanged,
    } = grant;
    let key = &server.keys[0];
    let exp = now + lifetime;
    let scope = scopes.join(" ");
    let mut claims = json!({
        "iss": server.issuer,
        "sub": subject,
        "aud": audience,
        "exp": exp,
        "iat": now,
        "jti": super::endpoints::random_id()?,
        "client_id": client.id,
        "scope": scope,
    });
    if let Some(actor) = actor {
        claims["act"] = json!({ "sub": actor });
    }
    let access_token = key
        .sign(super::ACCESS_TOKEN_TYP, &claims)
        .map_err(OAuthError::server_error)?;
    server.ledger.signed(key.kid(), key.public_jwk(), exp);
    Ok(Issued {
        access_token,
        expires_in: lifetime,
        scope,
        audience: audience.to_owned(),
        subject: subject.to_owned(),
        exchanged,
    })
}

/// A claim of a JWT, read without verifying it: only for a token already verified, or to
/// route one before verifying it.
fn unverified_claim(token: &str, name: &str) -> Option<serde_json::Value> {
    super::endpoints::unverified_claims(token)?.remove(name)
}
