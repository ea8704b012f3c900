//! The example as its README describes it: `portcullis.toml` through the layer, the app on a
//! real hyper server on port 0.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis::embed::AuthLayer;

async fn start() -> SocketAddr {
    let auth = AuthLayer::from_file(embed_axum::config_path())
        .await
        .expect("the example's config builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = embed_axum::app(auth).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn get(addr: SocketAddr, path: &str, key: Option<&str>) -> (u16, Option<String>, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = http::Request::get(format!("http://{addr}{path}"));
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = client
        .request(request.body(Empty::new()).expect("request"))
        .await
        .expect("the service answers");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        challenge,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn public_route_needs_no_credential() {
    let addr = start().await;
    assert_eq!(
        get(addr, "/public/hello", None).await,
        (200, None, "hello, anonymous\n".to_owned())
    );
}

#[tokio::test]
async fn scoped_route_challenges_without_a_key_and_names_the_caller_with_one() {
    let addr = start().await;
    let (status, challenge, _) = get(addr, "/api/whoami", None).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge.as_deref(),
        Some(
            "Bearer resource_metadata=\"http://127.0.0.1:3000/.well-known/oauth-protected-resource/api\", scope=\"api:read\""
        )
    );
    let (status, _, body) = get(addr, "/api/whoami", Some("embed-reader-key")).await;
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        seen,
        serde_json::json!({ "subject": "reader", "scopes": ["api:read"], "provider": "keys" })
    );
}

#[tokio::test]
async fn admin_route_refuses_the_reader_and_admits_the_admin() {
    let addr = start().await;
    let (status, challenge, _) = get(addr, "/api/admin", Some("embed-reader-key")).await;
    assert_eq!(status, 403);
    assert!(
        challenge.as_deref().is_some_and(
            |c| c.starts_with("Bearer error=\"insufficient_scope\", scope=\"admin api:read\"")
        ),
        "got: {challenge:?}"
    );
    assert_eq!(
        get(addr, "/api/admin", Some("embed-admin-key")).await,
        (200, None, "admin area, welcome admin\n".to_owned())
    );
    let (status, _, _) = get(addr, "/api/admin", Some("wrong-key")).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn paths_outside_every_route_are_refused() {
    let addr = start().await;
    // The layer's refusal, not axum's empty 404: the request never reached the router.
    let (status, _, body) = get(addr, "/elsewhere", Some("embed-admin-key")).await;
    assert_eq!(status, 404);
    assert!(body.contains("no route serves this path"), "got: {body}");
}
