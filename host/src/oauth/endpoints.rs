//! The authorization server's HTTP endpoints: which paths are its, the form bodies they
//! read, their JSON answers (RFC 6749 §5 errors included), and the audit line of each.
//!
//! The gateway's handler asks [`endpoint`] before any route: the paths here are the
//! server's whenever it is on, and no route can take them (config validation refuses a
//! route at or under a reserved path). A route's sibling token endpoint
//! (`/servers/a/mcp` → `/servers/a/oauth/token`) may lie under another route's prefix; it
//! is still answered here and never proxied.

use std::collections::HashMap;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use serde_json::json;

use super::grants::{self, ACCESS_TOKEN_TYPE};
use super::{
    AUTHORIZATION_PATH, AuthorizationServer, INTROSPECTION_PATH, JWKS_PATH, REVOCATION_PATH,
    TOKEN_PATH, client_auth, now,
};
use crate::gateway::Body;
use crate::gateway::body::{empty, full};
use crate::gateway::request::read_body;
use crate::observability::logging::{AuditRecord, AuditVerdict};
use crate::observability::{Metrics, audit};
use crate::verdict::Verdict;

/// The largest form body read (a subject token is at most 16 KiB).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// One of the server's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint<'s> {
    /// `/oauth/token`, or a route's sibling (`Some(resource)` of that route).
    Token(Option<&'s str>),
    Revocation,
    Introspection,
    Authorization,
    Jwks,
    Metadata,
}

impl Endpoint<'_> {
    /// The label of the endpoint in metrics and audit lines.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Token(_) => TOKEN_PATH,
            Self::Revocation => REVOCATION_PATH,
            Self::Introspection => INTROSPECTION_PATH,
            Self::Authorization => AUTHORIZATION_PATH,
            Self::Jwks => JWKS_PATH,
            Self::Metadata => super::METADATA_PATH,
        }
    }
}

/// The endpoint `path` is, if it is one of the server's.
pub(crate) fn endpoint<'s>(server: &'s AuthorizationServer, path: &str) -> Option<Endpoint<'s>> {
    // `/oauth/token/` is the token endpoint too: a proxy or upstream that ignores a trailing
    // slash must never receive a client's secret through a catch-all route.
    let path = match path.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped,
        _ => path,
    };
    Some(match path {
        // `/oauth/token` is also the sibling of a route `/mcp`.
        TOKEN_PATH => Endpoint::Token(server.siblings.get(TOKEN_PATH).map(String::as_str)),
        REVOCATION_PATH => Endpoint::Revocation,
        INTROSPECTION_PATH => Endpoint::Introspection,
        AUTHORIZATION_PATH => Endpoint::Authorization,
        JWKS_PATH => Endpoint::Jwks,
        _ if server.metadata_paths.iter().any(|p| p == path) => Endpoint::Metadata,
        _ => return server.siblings.get(path).map(|r| Endpoint::Token(Some(r))),
    })
}

/// Answers one request to `endpoint`. `client` is the client address as the gateway
/// resolved it (behind trusted proxies).
pub(crate) async fn serve(
    server: &AuthorizationServer,
    endpoint: Endpoint<'_>,
    request: Request<Body>,
    client: Option<IpAddr>,
    public_url: &str,
    body_timeout: std::time::Duration,
    metrics: &Metrics,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let document = |bytes: &Bytes, cache: &'static str| match parts.method {
        Method::GET | Method::HEAD => {
            let mut response = Response::new(if parts.method == Method::GET {
                full(bytes.clone())
            } else {
                empty()
            });
            let h = response.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
            h.insert(
                http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            response
        }
        _ => method_not_allowed("GET, HEAD"),
    };
    match endpoint {
        Endpoint::Metadata => return document(&server.metadata, "max-age=300"),
        Endpoint::Jwks => return document(&server.jwks, "max-age=300"),
        Endpoint::Authorization => {
            return OAuthError {
                code: "unsupported_response_type",
                description: "this server issues tokens to machine clients only \
                              (client credentials, token exchange); the authorization code \
                              flow is not enabled"
                    .into(),
                status: StatusCode::BAD_REQUEST,
                retry_after: None,
            }
            .into_response();
        }
        Endpoint::Token(_) | Endpoint::Revocation | Endpoint::Introspection => {}
    }
    if parts.method != Method::POST {
        return method_not_allowed("POST");
    }
    let endpoint_url = format!("{public_url}{}", parts.uri.path());
    let form = match read_form(body, &parts.headers, body_timeout).await {
        Ok(form) => form,
        Err(error) => {
            audit_refusal(endpoint, &parts.method, &parts.uri, None, &error, metrics);
            return error.into_response();
        }
    };
    let now = now();
    let client = match client_auth::authenticate(
        server,
        &parts.headers,
        &form,
        client,
        &endpoint_url,
        now,
    ) {
        Ok(client) => client,
        Err(error) => {
            audit_refusal(
                endpoint,
                &parts.method,
                &parts.uri,
                // Only an id that could be registered is echoed into the audit line.
                form.get("client_id")
                    .filter(|id| super::clients::is_label(id)),
                &error,
                metrics,
            );
            return error.into_response();
        }
    };
    let answer = match endpoint {
        Endpoint::Token(sibling) => token(server, client, &form, sibling, now).await,
        Endpoint::Revocation => revoke(server, client, &form, now).await,
        _ => introspect(server, client, &form, now).await,
    };
    match answer {
        Ok((body, reason)) => {
            metrics.oauth(endpoint.label(), "ok");
            audit(&AuditRecord {
                route: endpoint.label(),
                subject: Some(&client.id),
                provider: "authorization_server",
                verdict: AuditVerdict::Allow,
                reason: &reason,
                status: 200,
                method: parts.method.as_str(),
                path: parts.uri.path(),
            });
            json_response(StatusCode::OK, &body)
        }
        Err(error) => {
            audit_refusal(
                endpoint,
                &parts.method,
                &parts.uri,
                Some(&client.id),
                &error,
                metrics,
            );
            error.into_response()
        }
    }
}

async fn token(
    server: &AuthorizationServer,
    client: &super::clients::Client,
    form: &Form,
    sibling: Option<&str>,
    now: u64,
) -> Result<(serde_json::Value, String), OAuthError> {
    let issued = match form.get("grant_type") {
        Some(super::clients_file::CLIENT_CREDENTIALS) => {
            grants::client_credentials(server, client, form, sibling, now)?
        }
        Some(super::clients_file::TOKEN_EXCHANGE) => {
            grants::token_exchange(server, client, form, sibling, now).await?
        }
        Some(other) => {
            return Err(OAuthError {
                code: "unsupported_grant_type",
                description: format!(
                    "`{other}` is not supported; use `client_credentials` or token exchange"
                ),
                status: StatusCode::BAD_REQUEST,
                retry_after: None,
            });
        }
        None => return Err(OAuthError::invalid_request("`grant_type` is missing")),
    };
    let mut body = json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    });
    if issued.exchanged {
        body["issued_token_type"] = json!(ACCESS_TOKEN_TYPE);
    }
    let reason = format!(
        "issued {} token: sub={} aud={} scope={} expires_in={}",
        if issued.exchanged {
            "exchanged"
        } else {
            "client_credentials"
        },
        issued.subject,
        issued.audience,
        issued.scope,
        issued.expires_in
    );
    Ok((body, reason))
}

/// RFC 7009: a token of this server, issued to this client, is revoked until it expires.
/// The answer is 200 whatever the token was (§2.2), so a caller learns nothing from it.
async fn revoke(
    server: &AuthorizationServer,
    client: &super::clients::Client,
    form: &Form,
    now: u64,
) -> Result<(serde_json::Value, String), OAuthError> {
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("`token` is missing"))?;
    let reason = match server.own_tokens.check_token(token, now).await {
        Verdict::Allow(identity) => {
            let claim = |name: &str| identity.claim(name);
            match (claim("client_id"), claim("jti"), claim("exp")) {
                (Some(owner), Some(jti), Some(exp)) if owner == client.id => {
                    server
                        .ledger
                        .revoke(jti, exp.parse().unwrap_or(u64::MAX), now);
                    format!("revoked token {jti}")
                }
                _ => "revocation of another client's token ignored".to_owned(),
            }
        }
        _ => "revocation of a token that is not valid here ignored".to_owned(),
    };
    Ok((json!({}), reason))
}

/// RFC 7662, for clients allowed it: whether a token of this server is active now, and its
/// claims when it is.
async fn introspect(
    server: &AuthorizationServer,
    client: &super::clients::Client,
    form: &Form,
    now: u64,
) -> Result<(serde_json::Value, String), OAuthError> {
    if !client.introspection {
        return Err(OAuthError::unauthorized_client(
            "this client may not introspect tokens (`introspection = true` allows it)",
        ));
    }
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("`token` is missing"))?;
    let inactive = (
        json!({ "active": false }),
        "introspected: inactive".to_owned(),
    );
    let Some((identity, owner)) = server.verify_own(token, now).await else {
        return Ok(inactive);
    };
    let claims = unverified_claims(token).unwrap_or_default();
    // A resource server sees the tokens for its own resources (the client's `resources`),
    // not every client's tokens for every route; and a token as its client is now.
    let audience = claims
        .get("aud")
        .and_then(|a| a.as_str())
        .unwrap_or_default();
    if !client.may_use(audience) {
        return Ok(inactive);
    }
    let Some(identity) = AuthorizationServer::as_configured_now(identity, owner, audience) else {
        return Ok(inactive);
    };
    let mut body = json!({ "active": true, "token_type": "Bearer" });
    for name in [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "jti",
        "client_id",
        "scope",
        "act",
    ] {
        if let Some(value) = claims.get(name) {
            body[name] = value.clone();
        }
    }
    body["scope"] = json!(identity.scopes.join(" "));
    Ok((
        body,
        format!("introspected: active, sub={}", identity.subject),
    ))
}

/// The claims of a JWT, not verified: only for a token already verified.
pub(super) fn unverified_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// RFC 8414 metadata, built once per site.
/// `scopes` are the resource's (`[resource] scopes_supported`), never the clients': which
/// scopes some client holds is not for every caller to read.
pub(super) fn metadata_document(
    server: &AuthorizationServer,
    public_url: &str,
    scopes: &[String],
) -> Bytes {
    let url = |path: &str| format!("{public_url}{path}");
    let auth_methods = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ];
    let doc = json!({
        "issuer": server.issuer,
        "authorization_endpoint": url(AUTHORIZATION_PATH),
        "token_endpoint": url(TOKEN_PATH),
        "jwks_uri": url(JWKS_PATH),
        "scopes_supported": scopes,
        "response_types_supported": [],
        "grant_types_supported": ["client_credentials", super::clients_file::TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported":
            ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"],
        "revocation_endpoint": url(REVOCATION_PATH),
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint": url(INTROSPECTION_PATH),
        "introspection_endpoint_auth_methods_supported": auth_methods,
    });
    Bytes::from(doc.to_string())
}

/// A form body: each parameter once (RFC 6749 §3.2: a repeated parameter is an error).
#[derive(Debug, Default)]
pub(crate) struct Form(HashMap<String, String>);

impl Form {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn parse(bytes: &[u8]) -> Result<Self, OAuthError> {
        let mut map = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(bytes) {
            if map
                .insert(name.clone().into_owned(), value.into_owned())
                .is_some()
            {
                return Err(OAuthError::invalid_request(format!(
                    "`{name}` is given more than once"
                )));
            }
        }
        Ok(Self(map))
    }
}

async fn read_form(
    body: Body,
    headers: &http::HeaderMap,
    timeout: std::time::Duration,
) -> Result<Form, OAuthError> {
    let media = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if media.as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "the body must be `application/x-www-form-urlencoded`",
        ));
    }
    if headers.contains_key(http::header::CONTENT_ENCODING) {
        return Err(OAuthError::invalid_request(
            "encoded bodies are not accepted",
        ));
    }
    let bytes = read_body(body, headers, MAX_FORM_BYTES, timeout)
        .await
        .map_err(|r| OAuthError::invalid_request(r.error_body().1))?;
    Form::parse(&bytes)
}

/// An RFC 6749 §5.2 error.
#[derive(Debug)]
pub(crate) struct OAuthError {
    code: &'static str,
    description: String,
    status: StatusCode,
    retry_after: Option<u64>,
}

impl OAuthError {
    fn new(code: &'static str, status: StatusCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            status,
            retry_after: None,
        }
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", StatusCode::BAD_REQUEST, description)
    }

    /// 401 with a `Basic` challenge. The description the client sees is fixed, so that it
    /// cannot tell an unknown client from a wrong secret; `reason` goes to the audit line.
    pub(crate) fn invalid_client(reason: impl Into<String>) -> Self {
        Self::new("invalid_client", StatusCode::UNAUTHORIZED, reason)
    }

    pub(crate) fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", StatusCode::BAD_REQUEST, description)
    }

    pub(crate) fn unauthorized_client(description: impl Into<String>) -> Self {
        Self::new("unauthorized_client", StatusCode::BAD_REQUEST, description)
    }

    pub(crate) fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new("invalid_scope", StatusCode::BAD_REQUEST, description)
    }

    pub(crate) fn invalid_target(description: impl Into<String>) -> Self {
        Self::new("invalid_target", StatusCode::BAD_REQUEST, description)
    }

    pub(crate) fn server_error(description: impl Into<String>) -> Self {
        Self::new(
            "server_error",
            StatusCode::INTERNAL_SERVER_ERROR,
            description,
        )
    }

    /// 429 for a client that authenticated but asks too fast (RFC 8628's `slow_down`).
    pub(crate) fn slow_down(description: impl Into<String>) -> Self {
        Self {
            retry_after: Some(super::ledger::FAILURE_WINDOW_SECS),
            ..Self::new("slow_down", StatusCode::TOO_MANY_REQUESTS, description)
        }
    }

    /// 429: too many failed authentications from this client or address.
    pub(crate) fn too_many_failures(wait: u64) -> Self {
        Self {
            retry_after: Some(wait.max(1)),
            ..Self::new(
                "invalid_client",
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed client authentications",
            )
        }
    }

    fn public_description(&self) -> &str {
        if self.code == "invalid_client" && self.status == StatusCode::UNAUTHORIZED {
            "client authentication failed"
        } else {
            &self.description
        }
    }

    fn into_response(self) -> Response<Body> {
        let body = json!({ "error": self.code, "error_description": self.public_description() });
        let mut response = json_response(self.status, &body);
        let h = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"portcullis\""),
            );
        }
        if let Some(wait) = self.retry_after {
            h.insert(RETRY_AFTER, HeaderValue::from(wait));
        }
        response
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn audit_refusal(
    endpoint: Endpoint<'_>,
    method: &Method,
    uri: &http::Uri,
    client: Option<&str>,
    error: &OAuthError,
    metrics: &Metrics,
) {
    metrics.oauth(endpoint.label(), error.code);
    let reason = format!("{}: {}", error.code, error.description);
    audit(&AuditRecord {
        route: endpoint.label(),
        subject: client,
        provider: "authorization_server",
        verdict: AuditVerdict::Deny,
        reason: &reason,
        status: error.status.as_u16(),
        method: method.as_str(),
        path: uri.path(),
    });
}

/// A random identifier (128 bits, base64url) for a token's `jti`.
pub(super) fn random_id() -> Result<String, OAuthError> {
    use base64::Engine as _;
    let bytes = crate::crypto::random_bytes::<16>()
        .ok_or_else(|| OAuthError::server_error("the system random source failed"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
