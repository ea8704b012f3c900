//! `{{name}}`: a Portcullis authorizer, scaffolded by `portcullis new`.
//!
//! It runs after a caller is authenticated and the scope rules passed. An MCP `tools/call`
//! whose tool name starts with `tool_prefix` needs the caller to hold `scope`; every other
//! request is fine by this provider.

use portcullis_sdk::{Authorizer, Denial, Host, Identity, LogLevel, Request};
use serde::Deserialize;

/// The provider's `config` table from the gateway's config file, handed over as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Tools whose names start with this are guarded.
    pub tool_prefix: String,
    /// The scope a caller needs to call them.
    pub scope: String,
}

/// A configured instance: built once by `configure`, then asked once per request.
#[derive(Debug)]
pub struct {{Type}} {
    config: Config,
}

impl Authorizer for {{Type}} {
    type Config = Config;

    fn new(config: Config, _host: &dyn Host) -> Result<Self, String> {
        if config.tool_prefix.is_empty() {
            return Err("`tool_prefix` is empty: it would guard every tool".into());
        }
        Ok(Self { config })
    }

    fn authorize(
        &self,
        req: &dyn Request,
        caller: &Identity,
        host: &dyn Host,
    ) -> Result<(), Denial> {
        let Some(message) = req.mcp() else {
            return Ok(());
        };
        for tool in message.tool_names() {
            if tool.starts_with(&self.config.tool_prefix) && !caller.has_scope(&self.config.scope) {
                host.log(
                    LogLevel::Info,
                    &format!("`{}` may not call `{tool}`", caller.subject),
                );
                return Err(Denial::insufficient_scope(format!(
                    "tool `{tool}` needs scope `{}`",
                    self.config.scope
                )));
            }
        }
        Ok(())
    }
}

portcullis_sdk::export_authorizer!({{Type}});

#[cfg(test)]
mod tests {
    use portcullis_sdk::testing::{FakeHost, FakeRequest};
    use portcullis_sdk::{McpCall, McpMessage, configure_authorizer};

    use super::*;

    const CONFIG: &str = r#"{"tool_prefix": "admin_", "scope": "admin"}"#;

    fn call(tool: &str, caller: &Identity) -> Result<(), Denial> {
        let host = FakeHost::new();
        let provider: {{Type}} = configure_authorizer(CONFIG, &host).expect("configures");
        let req = FakeRequest::post("/mcp").mcp(McpMessage::single(McpCall::tool(tool)));
        provider.authorize(&req, caller, &host)
    }

    #[test]
    fn a_guarded_tool_needs_the_scope() {
        let denial = call("admin_reset", &Identity::new("ann").with_scope("mcp:read")).unwrap_err();
        assert_eq!(
            (denial.status, denial.code.as_str()),
            (403, "insufficient_scope")
        );
        assert_eq!(
            call("admin_reset", &Identity::new("bob").with_scope("admin")),
            Ok(())
        );
    }

    #[test]
    fn other_tools_and_other_requests_pass() {
        assert_eq!(call("search", &Identity::new("ann")), Ok(()));
        let host = FakeHost::new();
        let provider: {{Type}} = configure_authorizer(CONFIG, &host).expect("configures");
        let plain = FakeRequest::get("/health");
        assert_eq!(
            provider.authorize(&plain, &Identity::new("ann"), &host),
            Ok(())
        );
    }

    #[test]
    fn an_empty_prefix_is_refused_at_configure() {
        let config = r#"{"tool_prefix": "", "scope": "admin"}"#;
        let error = configure_authorizer::<{{Type}}>(config, &FakeHost::new()).unwrap_err();
        assert!(error.contains("tool_prefix"), "{error}");
    }
}
