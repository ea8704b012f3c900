//! Scope rules: which scopes a request needs, from its path, HTTP method and MCP calls.
//!
//! Every rule that applies to a request adds its scopes to the set the caller must hold; the
//! caller needs all of them (`*` holds every scope). A missing scope is answered with the
//! full set needed, so a client can request a token that covers the whole operation at once.

use std::collections::BTreeSet;

use http::Method;
use serde::Deserialize;

use super::glob::glob_match;
use crate::context::RequestContext;
use crate::mcp::{McpCall, McpTarget};
use crate::normal_form::path_problem;
use crate::verdict::Identity;

/// One rule as written in config (`[[rules]]` or `[[routes.rules]]`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// Applies under this path prefix (segment-wise: `/mcp` covers `/mcp` and `/mcp/x`, not
    /// `/mcpx`). Absent: every path.
    #[serde(default)]
    pub path: Option<String>,
    /// Applies to these HTTP methods. Absent or empty: every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Applies to MCP calls of this JSON-RPC method (glob), e.g. `tools/call`.
    #[serde(default)]
    pub mcp_method: Option<String>,
    /// Applies to `tools/call` of tools matching this glob.
    #[serde(default)]
    pub tool: Option<String>,
    /// Applies to resource calls on URIs matching this glob.
    #[serde(default)]
    pub resource: Option<String>,
    /// Applies to `prompts/get` of prompts matching this glob.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Scopes the caller must all hold.
    pub scopes: Vec<String>,
}

/// A rule that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Not an HTTP method.
    #[error("`methods` has `{0}`, which is not an HTTP method")]
    BadMethod(String),
    /// The path prefix does not start with `/`.
    #[error("`path` is `{0}`, but a path prefix must start with `/`")]
    BadPath(String),
    /// The path prefix is not in the normal form request paths must have, so no request
    /// could ever match it.
    #[error(
        "`path` is `{path}`, which no request can match ({why}); write the prefix as requests \
         spell it, e.g. `/mcp/admin`"
    )]
    PathNotNormal {
        /// The path as written.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A rule on MCP calls limited to methods that carry none (every call is a `POST`).
    #[error(
        "a rule on MCP calls (`tool`, `resource`, `prompt` or `mcp_method`) applies only to \
         `POST`, which carries every call; `methods` has no `POST`, so it would never apply"
    )]
    McpRuleWithoutPost,
    /// More than one of `tool`, `resource` and `prompt`.
    #[error("a rule may name only one of `tool`, `resource` and `prompt`")]
    SeveralTargets,
    /// No scopes.
    #[error("`scopes` is empty; a rule must require at least one scope")]
    NoScopes,
}

/// What kind of MCP target a rule names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TargetPattern {
    Any,
    Tool(String),
    Resource(String),
    Prompt(String),
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    path: Option<String>,
    methods: Vec<Method>,
    mcp_method: Option<String>,
    target: TargetPattern,
    scopes: Vec<String>,
}

impl Rule {
    /// Validates a rule from config.
    pub fn new(settings: RuleSettings) -> Result<Self, RuleError> {
        if let Some(path) = &settings.path {
            if !path.starts_with('/') {
                return Err(RuleError::BadPath(path.clone()));
            }
            // A rule path is a segment-wise prefix of paths in normal form (requests in any
            // other form are refused before rules run): a path that is not in normal form, or
            // a glob, would be a rule that silently never applies.
            let why = if path.contains('*') {
                Some("a rule `path` is a prefix, not a glob: `/mcp/admin` covers `/mcp/admin/x`")
            } else {
                path_problem(path)
            };
            if let Some(why) = why {
                return Err(RuleError::PathNotNormal {
                    path: path.clone(),
                    why,
                });
            }
        }
        let methods = settings
            .methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| RuleError::BadMethod(m.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let target = match (settings.tool, settings.resource, settings.prompt) {
            (None, None, None) => TargetPattern::Any,
            (Some(t), None, None) => TargetPattern::Tool(t),
            (None, Some(r), None) => TargetPattern::Resource(r),
            (None, None, Some(p)) => TargetPattern::Prompt(p),
            _ => return Err(RuleError::SeveralTargets),
        };
        if settings.scopes.is_empty() {
            return Err(RuleError::NoScopes);
        }
        let mcp_rule = settings.mcp_method.is_some() || target != TargetPattern::Any;
        if mcp_rule && !methods.is_empty() && !methods.contains(&Method::POST) {
            return Err(RuleError::McpRuleWithoutPost);
        }
        Ok(Self {
            path: settings.path.map(|p| p.trim_end_matches('/').to_owned()),
            methods,
            mcp_method: settings.mcp_method,
            target,
            scopes: settings.scopes,
        })
    }

    fn is_mcp_rule(&self) -> bool {
        self.mcp_method.is_some() || self.target != TargetPattern::Any
    }

    fn applies_to_http(&self, method: &Method, path: &str) -> bool {
        let path_ok = match &self.path {
            None => true,
            Some(prefix) => path_has_prefix(path, prefix),
        };
        // `HEAD` runs the `GET` handler in every upstream framework (RFC 9110 §9.3.2), so a
        // rule for `GET` judges it too.
        path_ok
            && (self.methods.is_empty()
                || self.methods.contains(method)
                || (method == Method::HEAD && self.methods.contains(&Method::GET)))
    }

    fn applies_to_call(&self, call: &McpCall) -> bool {
        if let Some(pattern) = &self.mcp_method
            && !glob_match(pattern, &call.method)
        {
            return false;
        }
        match (&self.target, &call.target) {
            (TargetPattern::Any, _) => true,
            (TargetPattern::Tool(p), McpTarget::Tool(t)) => glob_match(p, t),
            (TargetPattern::Resource(p), McpTarget::Resource(r)) => glob_match(p, r),
            (TargetPattern::Prompt(p), McpTarget::Prompt(n)) => glob_match(p, n),
            _ => false,
        }
    }
}

/// Segment-wise prefix match: `/mcp` covers `/mcp`, `/mcp/` and `/mcp/x`, not `/mcpx`.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// An ordered set of rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Rules from validated parts.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules' path prefixes.
    pub fn path_prefixes(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().filter_map(|rule| rule.path.as_deref())
    }

    /// Whether some rule's path prefix covers `path` but not `folded` read against the folded
    /// prefix, or the other way round; `fold` is how both were folded.
    pub fn path_rules_differ(
        &self,
        path: &str,
        folded: &str,
        fold: impl Fn(&str) -> String,
    ) -> bool {
        self.rules.iter().any(|rule| {
            rule.path.as_deref().is_some_and(|prefix| {
                path_has_prefix(path, prefix) != path_has_prefix(folded, &fold(prefix))
            })
        })
    }

    /// Every scope the request needs, sorted.
    pub fn required_scopes(&self, request: &RequestContext) -> BTreeSet<String> {
        let calls = request
            .mcp
            .as_ref()
            .map(|m| m.calls.as_slice())
            .unwrap_or(&[]);
        let mut needed = BTreeSet::new();
        for rule in &self.rules {
            if !rule.applies_to_http(&request.method, &request.path) {
                continue;
            }
            let applies = if rule.is_mcp_rule() {
                calls.iter().any(|call| rule.applies_to_call(call))
            } else {
                true
            };
            if applies {
                needed.extend(rule.scopes.iter().cloned());
            }
        }
        needed
    }

    /// Whether `caller` may make `call` on `path` (for filtering listings): every MCP rule
    /// that applies to the call must be satisfied.
    pub fn allows_call(
        &self,
        caller: &Identity,
        method: &Method,
        path: &str,
        call: &McpCall,
    ) -> bool {
        self.rules
            .iter()
            .filter(|r| {
                r.is_mcp_rule() && r.applies_to_http(method, path) && r.applies_to_call(call)
            })
            .all(|r| r.scopes.iter().all(|s| caller.has_scope(s)))
    }
}

/// The scopes in `needed` that `caller` lacks.
pub fn missing_scopes<'a>(caller: &Identity, needed: &'a BTreeSet<String>) -> Vec<&'a str> {
    needed
        .iter()
        .filter(|s| !caller.has_scope(s))
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::McpMessage;

    fn rule(toml_like: RuleSettings) -> Rule {
        Rule::new(toml_like).expect("valid rule")
    }

    fn settings(scopes: &[&str]) -> RuleSettings {
        RuleSettings {
            path: None,
            methods: vec![],
            mcp_method: None,
            tool: None,
            resource: None,
            prompt: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn mcp_request(calls: Vec<McpCall>) -> RequestContext {
        let mut ctx = RequestContext::new(Method::POST, "/mcp");
        ctx.mcp = Some(McpMessage {
            session_id: None,
            calls,
        });
        ctx
    }

    fn tool_call(name: &str) -> McpCall {
        McpCall {
            method: "tools/call".into(),
            target: McpTarget::Tool(name.into()),
        }
    }

    #[test]
    fn path_prefix_is_segment_wise() {
        assert!(path_has_prefix("/mcp", "/mcp"));
        assert!(path_has_prefix("/mcp/x", "/mcp/"));
        assert!(!path_has_prefix("/mcpx", "/mcp"));
        assert!(path_has_prefix("/anything", "/"));
    }

    #[test]
    fn tool_rule_applies_only_to_matching_tools_and_batches_need_the_union() {
        let rules = Rules::new(vec![
            rule(RuleSettings {
                mcp_method: Some("tools/call".into()),
                tool: Some("admin_*".into()),
                ..settings(&["admin"])
            }),
            rule(RuleSettings {
                path: Some("/mcp".into()),
                ..settings(&["mcp:read"])
            }),
        ]);
        let plain = mcp_request(vec![tool_call("echo")]);
        assert_eq!(
            rules.required_scopes(&plain),
            BTreeSet::from(["mcp:read".to_owned()])
        );
        let batch = mcp_request(vec![tool_call("echo"), tool_call("admin_reset")]);
        assert_eq!(
            rules.required_scopes(&batch),
            BTreeSet::from(["admin".to_owned(), "mcp:read".to_owned()])
        );
    }

    #[test]
    fn method_rules_match_http_methods() {
        let rules = Rules::new(vec![rule(RuleSettings {
            methods: vec!["delete".into()],
            ..settings(&["admin"])
        })]);
        assert!(
            rules
                .required_scopes(&RequestContext::new(Method::GET, "/x"))
                .is_empty()
        );
        assert_eq!(
            rules
                .required_scopes(&RequestContext::new(Method::DELETE, "/x"))
                .len(),
            1
        );
    }

    #[test]
    fn star_scope_satisfies_everything_and_listing_check_uses_mcp_rules() {
        let rules = Rules::new(vec![rule(RuleSettings {
            tool: Some("admin_*".into()),
            ..settings(&["admin"])
        })]);
        let admin = Identity {
            subject: "a".into(),
            scopes: vec!["*".into()],
            claims: vec![],
        };
        let user = Identity {
            subject: "u".into(),
            scopes: vec!["mcp:read".into()],
            claims: vec![],
        };
        let call = tool_call("admin_reset");
        assert!(rules.allows_call(&admin, &Method::POST, "/mcp", &call));
        assert!(!rules.allows_call(&user, &Method::POST, "/mcp", &call));
        assert!(rules.allows_call(&user, &Method::POST, "/mcp", &tool_call("echo")));
    }

    #[test]
    fn invalid_rules_are_refused_with_the_reason() {
        assert_eq!(Rule::new(settings(&[])), Err(RuleError::NoScopes));
        assert_eq!(
            Rule::new(RuleSettings {
                path: Some("mcp".into()),
                ..settings(&["a"])
            }),
            Err(RuleError::BadPath("mcp".into()))
        );
        assert_eq!(
            Rule::new(RuleSettings {
                tool: Some("a".into()),
                prompt: Some("b".into()),
                ..settings(&["a"])
            }),
            Err(RuleError::SeveralTargets)
        );
    }
}
