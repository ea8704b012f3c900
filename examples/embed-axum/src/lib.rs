//! An axum service with the Portcullis engine in front of its own routes, as a `tower`
//! layer: no gateway process. See `README.md`; `main.rs` serves [`app`] on
//! `127.0.0.1:3000` with `portcullis.toml`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Extension, Request};
use axum::routing::get;
use axum::{Json, Router};
use portcullis::embed::{AuthLayer, AuthenticatedBy, ConnInfo};
use portcullis::verdict::Identity;
use serde_json::{Value, json};

/// The service: `/public/hello` for anyone, `/api/whoami` with `api:read`, `/api/admin`
/// with `admin` (the scopes are in the config's rules, not here), all behind `auth`.
pub fn app(auth: AuthLayer) -> Router {
    Router::new()
        .route("/public/hello", get(hello))
        .route("/api/whoami", get(whoami))
        .route("/api/admin", get(admin))
        .layer(auth)
        // Outermost, so it runs first: hands the layer the peer address, which trusted-proxy
        // rules and address-based providers read.
        .layer(axum::middleware::map_request(peer))
}

/// The config shipped with the example, next to `Cargo.toml`.
pub fn config_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("portcullis.toml")
}

async fn hello(Extension(caller): Extension<Identity>) -> String {
    format!("hello, {}\n", caller.subject)
}

async fn whoami(
    Extension(caller): Extension<Identity>,
    Extension(AuthenticatedBy(provider)): Extension<AuthenticatedBy>,
) -> Json<Value> {
    Json(json!({ "subject": caller.subject, "scopes": caller.scopes, "provider": provider }))
}

async fn admin(Extension(caller): Extension<Identity>) -> String {
    format!("admin area, welcome {}\n", caller.subject)
}

async fn peer(mut request: Request) -> Request {
    let addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    request.extensions_mut().insert(ConnInfo {
        peer: addr,
        ..ConnInfo::default()
    });
    request
}
