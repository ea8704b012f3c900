//! Client authentication at the token, revocation and introspection endpoints:
//! `client_secret_basic` (RFC 6749 §2.3.1), `client_secret_post`, and `private_key_jwt`
//! (RFC 7523 §2.2, OpenID Connect Core §9).
//!
//! Exactly one method per request; a client registered with keys cannot use a secret and
//! the reverse. Failures are counted per client id and per source address (the client
//! address as the gateway resolves it behind trusted proxies); past the limit the endpoint
//! answers 429 without checking the credential, so guessing costs a minute per few tries.
//! Every failure reads the same to the caller (`invalid_client`), whether the client is
//! unknown, revoked or gave a wrong secret; the audit line says which.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::HeaderMap;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::AuthorizationServer;
use super::clients::{Client, Credential};
use super::endpoints::{Form, OAuthError};
use super::ledger::Spent;

/// The assertion type of `private_key_jwt`.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The longest an assertion may be valid for, seconds ahead of now.
const MAX_ASSERTION_LIFETIME_SECS: u64 = 600;
/// Clock skew allowed on an assertion's `exp`, `nbf` and `iat`.
const ASSERTION_LEEWAY_SECS: u64 = 60;
/// The largest assertion read.
const MAX_ASSERTION_BYTES: usize = 8 * 1024;

/// Authenticates the client of a request. `endpoint_url` is the URL the request was sent
/// to (an assertion may name it as its audience).
pub(super) fn authenticate<'s>(
    server: &'s AuthorizationServer,
    headers: &HeaderMap,
    form: &Form,
    address: Option<IpAddr>,
    endpoint_url: &str,
    now: u64,
) -> Result<&'s Client, OAuthError> {
    let presented = presented(headers, form)?;
    let address = address.map_or_else(|| "-".to_owned(), |a| a.to_string());
    let id = presented.client_id();
    // A client id that cannot be registered is refused before anything is kept of it (an
    // attacker's 60 KiB id must not become a counter key); it counts against the address.
    let keys: Vec<String> = if super::clients::is_label(id) {
        // Per client *from* an address: one address cannot lock a client out for everyone
        // else (client ids are not secret; they are in every token), and the address
        // counter below still slows a guesser down across clients.
        vec![format!("client:{id}@{address}"), format!("addr:{address}")]
    } else {
        vec![format!("addr:{address}")]
    };
    if let Some(wait) = keys
        .iter()
        .filter_map(|k| server.ledger.blocked(k, server.max_failed, now))
        .max()
    {
        return Err(OAuthError::too_many_failures(wait));
    }
    // A client that authenticated but has too many live assertions is told to slow down,
    // and it is not a failed authentication: it must not lock out its address's neighbours.
    const BUSY: &str = "too many live client assertions";
    let checked = if super::clients::is_label(id) {
        check(server, &presented, endpoint_url, now)
    } else {
        Err("the client id is not a registrable label".to_owned())
    };
    match checked {
        Ok(client) => Ok(client),
        Err(reason) if reason.starts_with(BUSY) => Err(OAuthError::slow_down(reason)),
        Err(reason) => {
            for key in &keys {
                server.ledger.fail(key, now);
            }
            Err(OAuthError::invalid_client(reason))
        }
    }
}

/// A credential as the request carries it.
enum Presented {
    Secret { id: String, secret: String },
    Assertion { id: String, assertion: String },
}

impl Presented {
    fn client_id(&self) -> &str {
        match self {
            Self::Secret { id, .. } | Self::Assertion { id, .. } => id,
        }
    }
}

fn presented(headers: &HeaderMap, form: &Form) -> Result<Presented, OAuthError> {
    let basic = basic_credentials(headers)?;
    let post = form.get("client_secret");
    let assertion = form.get("client_assertion");
    let methods = usize::from(basic.is_some())
        + usize::from(post.is_some())
        + usize::from(assertion.is_some());
    if methods > 1 {
        return Err(OAuthError::invalid_request(
            "use exactly one client authentication method",
        ));
    }
    let form_id = form.get("client_id");
    if let Some((id, secret)) = basic {
        if form_id.is_some_and(|f| f != id) {
            return Err(OAuthError::invalid_request(
                "`client_id` in the body differs from the one in `Authorization`",
            ));
        }
        return Ok(Presented::Secret { id, secret });
    }
    if let Some(secret) = post {
        let Some(id) = form_id else {
            return Err(OAuthError::invalid_request(
                "`client_secret` without `client_id`",
            ));
        };
        return Ok(Presented::Secret {
            id: id.to_owned(),
            secret: secret.to_owned(),
        });
    }
    if let Some(assertion) = assertion {
        if form.get("client_assertion_type") != Some(JWT_BEARER) {
            return Err(OAuthError::invalid_request(format!(
                "`client_assertion_type` must be `{JWT_BEARER}`"
            )));
        }
        let id = match form_id {
            Some(id) => id.to_owned(),
            None => unverified_issuer(assertion).ok_or_else(|| {
                OAuthError::invalid_client("the client assertion names no issuer")
            })?,
        };
        return Ok(Presented::Assertion {
            id,
            assertion: assertion.to_owned(),
        });
    }
    Err(OAuthError::invalid_client(
        "no client authentication (use HTTP Basic, `client_secret`, or `client_assertion`)",
    ))
}

/// `Authorization: Basic` credentials, each form-urlencoded as RFC 6749 §2.3.1 requires.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one `Authorization` header",
        ));
    }
    let bad = || OAuthError::invalid_client("unreadable HTTP Basic credentials");
    let value = value.to_str().map_err(|_| bad())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(bad());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "the token endpoint takes HTTP Basic client credentials, not a bearer token",
        ));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    // Each part is `application/x-www-form-urlencoded` (RFC 6749 §2.3.1): `+` is a space.
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(std::borrow::Cow::into_owned)
            .map_err(|_| bad())
    };
    Ok(Some((decode(id)?, decode(secret)?)))
}

fn check<'s>(
    server: &'s AuthorizationServer,
    presented: &Presented,
    endpoint_url: &str,
    now: u64,
) -> Result<&'s Client, String> {
    let id = presented.client_id();
    let Some(client) = server.clients.get(id) else {
        return Err(format!("unknown client `{id}`"));
    };
    if client.revoked {
        return Err(format!("client `{id}` is revoked"));
    }
    match (presented, &client.credential) {
        (Presented::Secret { secret, .. }, Credential::Secret(_)) => {
            if client.secret_matches(secret) {
                Ok(client)
            } else {
                Err(format!("wrong secret for client `{id}`"))
            }
        }
        (Presented::Assertion { assertion, .. }, Credential::Keys(keys)) => {
            verify_assertion(server, client, keys, assertion, endpoint_url, now).map(|()| client)
        }
        (Presented::Secret { .. }, Credential::Keys(_)) => Err(format!(
            "client `{id}` authenticates with `private_key_jwt`, not a secret"
        )),
        (Presented::Assertion { .. }, Credential::Secret(_)) => Err(format!(
            "client `{id}` authenticates with a secret, not `private_key_jwt`"
        )),
    }
}

#[derive(Deserialize)]
struct AssertionHeader {
    alg: Algorithm,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    jti: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

fn unverified_issuer(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let claims: AssertionClaims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.iss
}

fn verify_assertion(
    server: &AuthorizationServer,
    client: &Client,
    keys: &[crate::crypto::jwk::VerifyingKey],
    assertion: &str,
    endpoint_url: &str,
    now: u64,
) -> Result<(), String> {
    if assertion.len() > MAX_ASSERTION_BYTES {
        return Err("the client assertion is too large".into());
    }
    let mut parts = assertion.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the client assertion is not a signed JWT".into());
    };
    let header: AssertionHeader = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or("the client assertion's header is unreadable (or its `alg` unsupported)")?;
    if header.crit.is_some() {
        return Err("the client assertion has `crit` headers, which are not supported".into());
    }
    let candidates: Vec<_> = keys
        .iter()
        .filter(|k| k.accepts(header.alg))
        .filter(|k| header.kid.is_none() || k.kid() == header.kid.as_deref())
        .collect();
    if candidates.is_empty() {
        return Err("no registered key of the client fits the assertion's `kid` and `alg`".into());
    }
    // Without a `kid` every key that fits is tried: the MCP SDKs send none, and a client
    // rotating its key has two registered. Each is the client's own key, so trying all of
    // them grants nothing another key would not.
    let signing_input = &assertion[..header_len(assertion, payload)];
    if !candidates.iter().any(|key| {
        key.verify(header.alg, signing_input.as_bytes(), signature)
            .unwrap_or(false)
    }) {
        return Err("the client assertion's signature does not verify".into());
    }
    let claims: AssertionClaims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or("the client assertion's claims are unreadable")?;
    if claims.iss.as_deref() != Some(&client.id) || claims.sub.as_deref() != Some(&client.id) {
        return Err("the client assertion's `iss` and `sub` must both be the client id".into());
    }
    let audiences = match claims.aud {
        Some(Audience::One(a)) => vec![a],
        Some(Audience::Many(a)) => a,
        None => Vec::new(),
    };
    let token_url = format!("{}{}", server.issuer, super::TOKEN_PATH);
    let accepted = [server.issuer.as_str(), token_url.as_str(), endpoint_url];
    if !audiences
        .iter()
        .any(|a| accepted.contains(&a.trim_end_matches('/')))
    {
        return Err(format!(
            "the client assertion's `aud` must be the issuer (`{}`) or the token endpoint",
            server.issuer
        ));
    }
    let Some(exp) = claims.exp else {
        return Err("the client assertion has no `exp`".into());
    };
    if exp.saturating_add(ASSERTION_LEEWAY_SECS) < now {
        return Err("the client assertion has expired".into());
    }
    if exp > now + MAX_ASSERTION_LIFETIME_SECS + ASSERTION_LEEWAY_SECS {
        return Err(format!(
            "the client assertion is valid for more than {MAX_ASSERTION_LIFETIME_SECS} seconds"
        ));
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now + ASSERTION_LEEWAY_SECS)
        || claims
            .iat
            .is_some_and(|iat| iat > now + ASSERTION_LEEWAY_SECS)
    {
        return Err("the client assertion is not valid yet".into());
    }
    let Some(jti) = claims.jti.filter(|j| !j.is_empty() && j.len() <= 256) else {
        return Err("the client assertion has no `jti` (it must be single-use)".into());
    };
    match server.ledger.spend_assertion(&client.id, &jti, exp, now) {
        Spent::Fresh => Ok(()),
        Spent::Replayed => Err("the client assertion was already used (replayed `jti`)".into()),
        Spent::OverQuota => Err(format!(
            "too many live client assertions for `{}`; give them shorter lifetimes or send fewer",
            client.id
        )),
    }
}

/// The length of `header.payload` in `assertion`.
fn header_len(assertion: &str, payload: &str) -> usize {
    assertion.find('.').map_or(0, |i| i + 1 + payload.len())
}
