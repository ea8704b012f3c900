//! Serves the example on `127.0.0.1:3000` (or the address in `EMBED_AXUM_LISTEN`), guarded
//! by `portcullis.toml` (or the file named by the first argument).

use std::net::SocketAddr;

use anyhow::Context as _;
use portcullis::embed::AuthLayer;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = std::env::args_os()
        .nth(1)
        .map_or_else(embed_axum::config_path, Into::into);
    let auth = AuthLayer::from_file(&config).await?;
    let listen = std::env::var("EMBED_AXUM_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = embed_axum::app(auth).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).await?;
    Ok(())
}
