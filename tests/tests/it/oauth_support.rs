//! What the authorization-server suites share: form bodies, HTTP Basic, token requests
//! (optionally from a chosen local address), MCP pings with a bearer token, signing-key
//! files and editor-style file replacement. Keys and JWTs are `portcullis_tests::oauth`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis_tests::oauth::TestKey;
use serde_json::Value;

use crate::gateway_harness::{Reply, send};

/// An MCP `ping`: answered without a session.
pub const PING: &str = r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#;

/// `pairs` as an `application/x-www-form-urlencoded` body.
pub fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The reply's JSON body (`null` when it is not JSON).
pub fn body(reply: &Reply) -> Value {
    serde_json::from_str(&reply.body).unwrap_or(Value::Null)
}

/// The `access_token` of a 200 token answer.
pub fn access_token(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "a token is issued: {}", reply.body);
    body(reply)["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// An `Authorization: Basic` value.
pub fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// `POST url` with a form body and, when given, HTTP Basic client credentials, from
/// `local` when given (any 127/8 address is this host's on Linux).
pub async fn post_form_from(
    local: Option<IpAddr>,
    url: &str,
    credentials: Option<(&str, &str)>,
    pairs: &[(&str, &str)],
) -> Reply {
    let mut connector = HttpConnector::new();
    connector.set_local_address(local);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let mut request = http::Request::builder()
        .method("POST")
        .uri(url)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some((id, secret)) = credentials {
        request = request.header("authorization", basic(id, secret));
    }
    let request = request
        .body(Full::new(Bytes::from(form(pairs))))
        .expect("valid request");
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("the gateway answers within 10 s")
        .expect("the request is sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("the body is readable")
        .to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// [`post_form_from`] this host's default address.
pub async fn post_form(
    url: &str,
    credentials: Option<(&str, &str)>,
    pairs: &[(&str, &str)],
) -> Reply {
    post_form_from(None, url, credentials, pairs).await
}

/// An MCP `ping` to `url` with `token` as bearer.
pub async fn ping(url: &str, token: &str) -> Reply {
    let auth = format!("Bearer {token}");
    send(
        url,
        "POST",
        &[
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("authorization", &auth),
        ],
        Some(PING),
    )
    .await
}

/// A fresh signing key written to `dir/as-1.pem`, for `private_key = "file://…"`.
pub fn signing_key_file(dir: &Path) -> PathBuf {
    let file = dir.join("as-1.pem");
    std::fs::write(&file, TestKey::ed25519("as-1").pem()).expect("write key");
    file
}

/// Writes `text` to `path` the way editors and `portcullis clients` do: a new file renamed
/// over the old one.
pub fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}
