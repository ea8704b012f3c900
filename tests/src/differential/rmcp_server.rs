//! The rmcp upstream: a hand-written `ServerHandler` on rmcp's Streamable HTTP service
//! (stateless, JSON responses), in-process on 127.0.0.1:0.
//!
//! Tools and prompts are dispatched by exact name, as rmcp's routers do. Resources are
//! resolved the way a server that maps `file://` URIs onto files does: scheme and
//! `localhost` host case-insensitively, the path percent-decoded and its `.`/`..`/empty
//! segments resolved. That is the permissive end of what real servers do, and the reason a
//! gateway must match resource rules on the same canonical form or refuse the others.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, ListPromptsResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, Prompt, PromptMessage, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, Role, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use tokio::net::TcpListener;

use super::Executed;

type Log = Arc<Mutex<Vec<Executed>>>;

#[derive(Clone)]
struct Recorder {
    log: Log,
}

impl Recorder {
    fn record(
        &self,
        kind: &str,
        name: &str,
        requested: &str,
        context: &RequestContext<RoleServer>,
    ) {
        let header = |name: &str| {
            context
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.headers.get(name))
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let executed = Executed {
            server: "rmcp".into(),
            kind: kind.into(),
            name: name.into(),
            requested: Some(requested.into()),
            id: context.id.clone().into_json_value(),
            mcp_method: header("mcp-method"),
            mcp_name: header("mcp-name"),
        };
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(executed);
    }
}

const RESOURCES: [&str; 2] = ["file:///public/x", "file:///secret/x"];
const PROMPTS: [&str; 2] = ["greeting", "admin_prompt"];

impl ServerHandler for Recorder {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_prompts()
                .enable_resources()
                .enable_tools()
                .build(),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let object =
            |schema: serde_json::Value| Arc::new(schema.as_object().cloned().unwrap_or_default());
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new(
                "echo",
                "Echo the given text back",
                object(serde_json::json!({
                    "type": "object",
                    "properties": {"text": {"type": "string"}},
                })),
            ),
            Tool::new(
                "admin_reset",
                "Reset everything (admin only)",
                object(serde_json::json!({"type": "object"})),
            ),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let text = match &*request.name {
            "echo" => request
                .arguments
                .as_ref()
                .and_then(|a| a.get("text"))
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            "admin_reset" => "reset".to_owned(),
            other => {
                return Err(McpError::invalid_params(
                    format!("unknown tool `{other}`"),
                    None,
                ));
            }
        };
        self.record("tool", &request.name, &request.name, &context);
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text(text),
        ])))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(
            RESOURCES
                .iter()
                .map(|uri| Resource::new(*uri, *uri))
                .collect(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let resolved = resolve_file_uri(&request.uri);
        let Some(uri) = RESOURCES.iter().find(|r| Some(**r) == resolved.as_deref()) else {
            return Err(McpError::resource_not_found(
                format!("no resource `{}`", request.uri),
                None,
            ));
        };
        self.record("resource", uri, &request.uri, &context);
        Ok(ReadResourceResponse::Complete(ReadResourceResult::new(
            vec![ResourceContents::text(*uri, request.uri.clone())],
        )))
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(
            PROMPTS
                .iter()
                .map(|name| Prompt::new(*name, None::<String>, None))
                .collect(),
        ))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let Some(name) = PROMPTS.iter().find(|p| **p == request.name) else {
            return Err(McpError::invalid_params(
                format!("unknown prompt `{}`", request.name),
                None,
            ));
        };
        self.record("prompt", name, &request.name, &context);
        Ok(GetPromptResponse::Complete(GetPromptResult::new(vec![
            PromptMessage::new_text(Role::User, *name),
        ])))
    }
}

/// `file:///a/b` for every spelling a file-backed server would open as `/a/b`; `None` for
/// anything that is not a local file URI.
fn resolve_file_uri(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once(':')?;
    if !scheme.eq_ignore_ascii_case("file") {
        return None;
    }
    let rest = rest.strip_prefix("//")?;
    let (host, path) = rest.split_at(rest.find('/')?);
    if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
        return None;
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let decoded = percent_decode(path)?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    Some(format!("file:///{}", segments.join("/")))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Serves the recorder on 127.0.0.1:0; returns its MCP URL, its log and the serving task.
pub async fn spawn() -> (String, Log, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let log: Log = Arc::default();
    let recorder = Recorder {
        log: Arc::clone(&log),
    };
    let service: StreamableHttpService<Recorder, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(recorder.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true),
    );
    let reached = Arc::clone(&log);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service.clone();
            let reached = Arc::clone(&reached);
            tokio::spawn(async move {
                let svc = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let service = service.clone();
                    let content_type = request
                        .headers()
                        .get(http::header::CONTENT_TYPE)
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                    reached
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Executed {
                            server: "rmcp".into(),
                            kind: "http".into(),
                            name: request.method().to_string(),
                            requested: content_type,
                            id: serde_json::Value::Null,
                            mcp_method: None,
                            mcp_name: None,
                        });
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
                // Errors are clients going away.
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}/mcp"), log, task)
}
