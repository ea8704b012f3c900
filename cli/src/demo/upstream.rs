//! The embedded demo MCP server (rmcp, Streamable HTTP) that the default configuration
//! fronts. Its tools:
//!
//! - `echo { text }`: returns `text`;
//! - `add { a, b }`: returns `a + b`;
//! - `whoami`: returns the HTTP request headers it received, as JSON — proof that no
//!   credential reaches the upstream, only the `x-portcullis-*` identity;
//! - `admin_reset`: needs the `admin` scope (by the demo's rule).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};
use tokio::net::TcpListener;

/// Arguments of `echo`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct EchoArgs {
    /// The text to return.
    pub text: String,
}

/// Arguments of `add`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct AddArgs {
    /// Left operand.
    pub a: i64,
    /// Right operand.
    pub b: i64,
}

/// The demo MCP server.
#[derive(Debug, Clone)]
pub struct DemoServer {
    tool_router: ToolRouter<Self>,
}

impl Default for DemoServer {
    fn default() -> Self {
        Self {
            tool_router: Self::tool_router(),
        }
    }
}

#[tool_router]
impl DemoServer {
    /// Returns its input.
    #[tool(description = "Echo the given text back")]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    /// Adds two integers.
    #[tool(description = "Add two integers")]
    fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        a.saturating_add(b).to_string()
    }

    /// The request headers as the server saw them.
    #[tool(description = "Show the HTTP request headers this server received")]
    fn whoami(&self, Extension(parts): Extension<http::request::Parts>) -> String {
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in &parts.headers {
            headers
                .entry(name.as_str().to_owned())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        serde_json::to_string(&headers).unwrap_or_default()
    }

    /// Pretends to reset something; admin only.
    #[tool(description = "Reset the demo state (admin only)")]
    fn admin_reset(&self) -> String {
        "demo state reset".to_owned()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for DemoServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_instructions("Portcullis demo MCP server: echo, add, whoami, admin_reset")
    }
}

/// Serves the demo MCP server at `/mcp` on `listener` until the task is dropped or aborted.
pub async fn serve_demo_upstream(listener: TcpListener) {
    let service: StreamableHttpService<DemoServer, LocalSessionManager> =
        StreamableHttpService::new(
            || Ok(DemoServer::default()),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default(),
        );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = service.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let service = service.clone();
                async move {
                    if request.uri().path() != "/mcp" {
                        let mut not_found = hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"not found"))
                                .map_err(|never| match never {})
                                .boxed(),
                        );
                        *not_found.status_mut() = http::StatusCode::NOT_FOUND;
                        return Ok::<_, Infallible>(not_found);
                    }
                    Ok(service.handle(request).await)
                }
            });
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A running demo upstream; stops when dropped.
#[derive(Debug)]
pub struct DemoUpstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Its MCP endpoint, `http://<addr>/mcp`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DemoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `127.0.0.1:0` and serves the demo upstream in a task.
pub async fn spawn_demo_upstream() -> std::io::Result<DemoUpstream> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(serve_demo_upstream(listener));
    Ok(DemoUpstream {
        addr,
        url: format!("http://{addr}/mcp"),
        task,
    })
}
