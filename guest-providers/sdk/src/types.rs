//! Plain-Rust mirrors of the data records in the WIT `types` interface.

use std::fmt;

/// Who the caller is, as established by an authenticator (WIT `identity`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// A stable identifier of the caller, e.g. a client id or user id.
    pub subject: String,
    /// The scopes the caller holds; `*` holds every scope.
    pub scopes: Vec<String>,
    /// Extra facts about the caller, in order; a name may repeat.
    pub claims: Vec<(String, String)>,
}

impl Identity {
    /// An identity with no scopes and no claims.
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            ..Self::default()
        }
    }

    /// Adds one scope.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Adds scopes.
    #[must_use]
    pub fn with_scopes<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Adds one claim.
    #[must_use]
    pub fn with_claim(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.claims.push((name.into(), value.into()));
        self
    }

    /// Whether the caller holds `scope`, directly or through `*`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|held| held == scope || held == "*")
    }

    /// The first value of the claim `name`.
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims
            .iter()
            .find(|(claim, _)| claim == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Why a request is refused (WIT `denial`).
///
/// `status` is 401 (the credential is missing or bad) or 403 (valid, but not allowed); the
/// host treats any other value as a provider error. `reason` may reach the client: never put
/// a credential in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// 401 or 403.
    pub status: u16,
    /// An OAuth error code, sent in the `WWW-Authenticate` challenge.
    pub code: String,
    /// A human-readable reason for logs and the decision trace.
    pub reason: String,
}

impl Denial {
    /// A denial with any status and code.
    pub fn new(status: u16, code: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            reason: reason.into(),
        }
    }

    /// 401 with the given code.
    pub fn unauthorized(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(401, code, reason)
    }

    /// 401 `invalid_token`: the credential is malformed, unknown, expired or forged.
    pub fn invalid_token(reason: impl Into<String>) -> Self {
        Self::unauthorized("invalid_token", reason)
    }

    /// 401 `invalid_request`: the credential is incomplete (e.g. a required header is missing).
    pub fn invalid_request(reason: impl Into<String>) -> Self {
        Self::unauthorized("invalid_request", reason)
    }

    /// 403 with the given code.
    pub fn forbidden(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(403, code, reason)
    }

    /// 403 `insufficient_scope`: the caller lacks a scope this request needs.
    pub fn insufficient_scope(reason: impl Into<String>) -> Self {
        Self::forbidden("insufficient_scope", reason)
    }

    /// 403 `access_denied`: the caller may not make this request for another reason.
    pub fn access_denied(reason: impl Into<String>) -> Self {
        Self::forbidden("access_denied", reason)
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.reason)
    }
}

impl std::error::Error for Denial {}

/// The answer of an authenticator (WIT `verdict`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The credential is valid; this is the caller.
    Allow(Identity),
    /// The credential was for this provider and it is bad.
    Deny(Denial),
    /// There is no credential of this provider's kind; the next provider tries.
    Abstain,
}

impl Verdict {
    /// The identity, when allowed.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Self::Allow(identity) => Some(identity),
            _ => None,
        }
    }

    /// The denial, when denied.
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            Self::Deny(denial) => Some(denial),
            _ => None,
        }
    }
}

impl From<Identity> for Verdict {
    fn from(identity: Identity) -> Self {
        Self::Allow(identity)
    }
}

impl From<Denial> for Verdict {
    fn from(denial: Denial) -> Self {
        Self::Deny(denial)
    }
}

/// Lets an authenticator check a credential with `?` once it knows the credential is its own.
impl From<Result<Identity, Denial>> for Verdict {
    fn from(result: Result<Identity, Denial>) -> Self {
        match result {
            Ok(identity) => Self::Allow(identity),
            Err(denial) => Self::Deny(denial),
        }
    }
}

/// A client certificate that the listener verified (WIT `client-cert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject distinguished name, RFC 4514 form.
    pub subject: String,
    /// DNS, URI, e-mail and IP subject alternative names.
    pub sans: Vec<String>,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub sha256_fingerprint: String,
}

/// What one JSON-RPC message of an MCP request acts on (WIT `mcp-target`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpTarget {
    /// The method names no tool, resource or prompt (e.g. `initialize`, `tools/list`).
    None,
    /// `tools/call`: the tool's name.
    Tool(String),
    /// `resources/read`, `resources/subscribe`, …: the resource URI.
    Resource(String),
    /// `prompts/get`: the prompt's name.
    Prompt(String),
}

/// One JSON-RPC message of an MCP request (WIT `mcp-call`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpCall {
    /// The JSON-RPC method, e.g. `tools/call`.
    pub method: String,
    /// What the method acts on.
    pub target: McpTarget,
}

impl McpCall {
    /// A call of `method` on `target`.
    pub fn new(method: impl Into<String>, target: McpTarget) -> Self {
        Self {
            method: method.into(),
            target,
        }
    }

    /// A `tools/call` of `tool`.
    pub fn tool(tool: impl Into<String>) -> Self {
        Self::new("tools/call", McpTarget::Tool(tool.into()))
    }

    /// The tool's name, when this is a `tools/call`.
    pub fn tool_name(&self) -> Option<&str> {
        match &self.target {
            McpTarget::Tool(name) if self.method == "tools/call" => Some(name),
            _ => None,
        }
    }
}

/// The MCP content of a request: one call, or several for a batch (WIT `mcp-message`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct McpMessage {
    /// The `Mcp-Session-Id` header, if the client sent one.
    pub session_id: Option<String>,
    /// The calls, in body order.
    pub calls: Vec<McpCall>,
}

impl McpMessage {
    /// A message of one call.
    pub fn single(call: McpCall) -> Self {
        Self {
            session_id: None,
            calls: vec![call],
        }
    }

    /// The names of the tools that the message calls, in body order.
    pub fn tool_names(&self) -> impl Iterator<Item = &str> {
        self.calls.iter().filter_map(McpCall::tool_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_scope_holds_every_scope() {
        let admin = Identity::new("root").with_scope("*");
        assert!(admin.has_scope("anything"));
        let reader = Identity::new("r").with_scopes(["read", "list"]);
        assert!(reader.has_scope("list"));
        assert!(!reader.has_scope("write"));
    }

    #[test]
    fn claim_returns_the_first_value() {
        let id = Identity::new("a")
            .with_claim("tenant", "one")
            .with_claim("tenant", "two");
        assert_eq!(id.claim("tenant"), Some("one"));
        assert_eq!(id.claim("email"), None);
    }

    #[test]
    fn denial_constructors_choose_status_and_code() {
        assert_eq!(
            Denial::invalid_token("bad"),
            Denial::new(401, "invalid_token", "bad")
        );
        assert_eq!(Denial::insufficient_scope("x").status, 403);
        assert_eq!(Denial::access_denied("x").code, "access_denied");
        assert_eq!(
            Denial::forbidden("c", "r").to_string(),
            "403 c: r",
            "Display is status, code and reason"
        );
    }

    #[test]
    fn result_converts_to_verdict() {
        let allowed: Verdict = Ok(Identity::new("a")).into();
        assert_eq!(allowed.identity().map(|i| i.subject.as_str()), Some("a"));
        let denied: Verdict = Err(Denial::invalid_token("no")).into();
        assert_eq!(denied.denial().map(|d| d.status), Some(401));
    }

    #[test]
    fn only_tools_call_names_a_tool() {
        let message = McpMessage {
            session_id: None,
            calls: vec![
                McpCall::tool("search"),
                McpCall::new("prompts/get", McpTarget::Prompt("p".into())),
                McpCall::new("tools/list", McpTarget::Tool("odd".into())),
            ],
        };
        assert_eq!(message.tool_names().collect::<Vec<_>>(), ["search"]);
    }
}
