//! `mcp-tool-policy`: guards MCP `tools/call` requests by tool-name pattern, requiring a
//! scope and optionally a UTC time window. See README.md for the contract.

use portcullis_sdk::{Authorizer, Denial, Host, Identity, Request};
use serde::Deserialize;

/// The operator's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Every rule whose patterns match a called tool applies to that call.
    pub rules: Vec<Rule>,
}

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Tool-name patterns: `*` matches any run of characters, `?` exactly one.
    pub tools: Vec<String>,
    /// The scope a caller must hold (`*` holds every scope).
    pub scope: String,
    /// When set, calls are allowed only inside this window.
    #[serde(default)]
    pub hours_utc: Option<Hours>,
}

/// A window of whole UTC hours, `from` included, `to` excluded. It wraps past midnight
/// when `from > to` (`{from = 22, to = 6}` is the night shift).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hours {
    /// First hour of the window, 0 to 23.
    pub from: u8,
    /// First hour after the window, 0 to 24.
    pub to: u8,
}

impl Hours {
    fn contains(self, hour: u8) -> bool {
        if self.from < self.to {
            (self.from..self.to).contains(&hour)
        } else {
            hour >= self.from || hour < self.to
        }
    }
}

/// A configured provider.
#[derive(Debug)]
pub struct McpToolPolicy {
    rules: Vec<Rule>,
}

impl Authorizer for McpToolPolicy {
    type Config = Config;

    fn new(config: Config, _host: &dyn Host) -> Result<Self, String> {
        if config.rules.is_empty() {
            return Err("`rules` is empty: the policy would guard nothing".into());
        }
        for (index, rule) in config.rules.iter().enumerate() {
            let bad = |why: String| format!("rules[{index}]: {why}");
            if rule.tools.is_empty() || rule.tools.iter().any(String::is_empty) {
                return Err(bad(
                    "`tools` must list at least one non-empty pattern".into()
                ));
            }
            if rule.scope.is_empty() {
                return Err(bad("`scope` is empty".into()));
            }
            if let Some(Hours { from, to }) = rule.hours_utc
                && (from > 23 || to > 24 || from == to)
            {
                return Err(bad(format!(
                    "invalid hours_utc {{from = {from}, to = {to}}}: from must be 0 to 23, \
                     to 0 to 24, and they must differ"
                )));
            }
        }
        Ok(Self {
            rules: config.rules,
        })
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
            for rule in self.rules.iter().filter(|rule| rule.matches(tool)) {
                if !caller.has_scope(&rule.scope) {
                    return Err(Denial::insufficient_scope(format!(
                        "tool `{tool}` needs scope `{}`",
                        rule.scope
                    )));
                }
                if let Some(hours) = rule.hours_utc {
                    let hour = utc_hour(host.now_unix_ms());
                    if !hours.contains(hour) {
                        return Err(Denial::access_denied(format!(
                            "tool `{tool}` may be called only from {:02}:00 to {:02}:00 UTC",
                            hours.from, hours.to
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Rule {
    fn matches(&self, tool: &str) -> bool {
        self.tools.iter().any(|pattern| glob_match(pattern, tool))
    }
}

fn utc_hour(unix_ms: u64) -> u8 {
    // Below 24, so the cast keeps every bit.
    (unix_ms / 1000 % 86_400 / 3600) as u8
}

/// Matches `text` against `pattern`, where `*` is any run of characters (also none) and `?`
/// exactly one character. Linear backtracking to the last `*`, so no pattern is exponential.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                last_star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match last_star {
                // Let the last `*` swallow one more character and retry.
                Some((star_p, star_t)) => {
                    last_star = Some((star_p, star_t + 1));
                    p = star_p + 1;
                    t = star_t + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

portcullis_sdk::export_authorizer!(McpToolPolicy);

#[cfg(test)]
mod tests {
    use portcullis_sdk::testing::{FakeHost, FakeRequest};
    use portcullis_sdk::{McpCall, McpMessage, McpTarget, configure_authorizer};

    use super::*;

    const CONFIG: &str = r#"{"rules": [
        {"tools": ["admin_*", "delete_?"], "scope": "admin"},
        {"tools": ["deploy"], "scope": "ops", "hours_utc": {"from": 8, "to": 18}}
    ]}"#;

    /// 2024-01-01 at `hour`:30 UTC.
    fn at_hour(hour: u64) -> FakeHost {
        FakeHost::new().with_now_unix_ms((1_704_067_200 + hour * 3600 + 1800) * 1000)
    }

    fn authorize(calls: Vec<McpCall>, scopes: &[&str], host: &FakeHost) -> Result<(), Denial> {
        let provider: McpToolPolicy = configure_authorizer(CONFIG, host).unwrap();
        let message = McpMessage {
            session_id: Some("s1".into()),
            calls,
        };
        let req = FakeRequest::post("/mcp").mcp(message);
        provider.authorize(
            &req,
            &Identity::new("bob").with_scopes(scopes.iter().copied()),
            host,
        )
    }

    #[test]
    fn guarded_tool_needs_the_scope() {
        let host = at_hour(12);
        assert_eq!(
            authorize(vec![McpCall::tool("admin_reset")], &["admin"], &host),
            Ok(())
        );
        assert_eq!(
            authorize(vec![McpCall::tool("admin_reset")], &["*"], &host),
            Ok(())
        );
        assert_eq!(
            authorize(vec![McpCall::tool("admin_reset")], &["read"], &host),
            Err(Denial::insufficient_scope(
                "tool `admin_reset` needs scope `admin`"
            ))
        );
    }

    #[test]
    fn every_call_of_a_batch_is_checked() {
        let host = at_hour(12);
        let batch = vec![McpCall::tool("search"), McpCall::tool("delete_x")];
        let denial = authorize(batch, &["read"], &host).unwrap_err();
        assert_eq!(denial.code, "insufficient_scope");
        assert_eq!(denial.status, 403);
    }

    #[test]
    fn unguarded_tools_and_other_methods_pass() {
        let host = at_hour(3);
        let calls = vec![
            McpCall::tool("search"),
            McpCall::tool("delete_many"),
            McpCall::new("tools/list", McpTarget::None),
            McpCall::new("prompts/get", McpTarget::Prompt("admin_prompt".into())),
        ];
        assert_eq!(authorize(calls, &[], &host), Ok(()));
        let provider: McpToolPolicy = configure_authorizer(CONFIG, &host).unwrap();
        let not_mcp = FakeRequest::get("/health");
        assert_eq!(
            provider.authorize(&not_mcp, &Identity::new("x"), &host),
            Ok(())
        );
    }

    #[test]
    fn time_window_is_enforced_in_utc() {
        let deploy = || vec![McpCall::tool("deploy")];
        assert_eq!(authorize(deploy(), &["ops"], &at_hour(8)), Ok(()));
        assert_eq!(authorize(deploy(), &["ops"], &at_hour(17)), Ok(()));
        assert_eq!(
            authorize(deploy(), &["ops"], &at_hour(18)),
            Err(Denial::access_denied(
                "tool `deploy` may be called only from 08:00 to 18:00 UTC"
            ))
        );
        assert!(authorize(deploy(), &["ops"], &at_hour(7)).is_err());
        let denial = authorize(deploy(), &["read"], &at_hour(12)).unwrap_err();
        assert_eq!(
            denial.code, "insufficient_scope",
            "scope is checked before time"
        );
    }

    #[test]
    fn window_may_wrap_midnight() {
        let night = Hours { from: 22, to: 6 };
        assert!(night.contains(23) && night.contains(0) && night.contains(5));
        assert!(!night.contains(6) && !night.contains(21));
        let all_day = Hours { from: 0, to: 24 };
        assert!((0..24).all(|hour| all_day.contains(hour)));
    }

    #[test]
    fn glob_supports_star_and_question_mark() {
        assert!(glob_match("admin_*", "admin_"));
        assert!(glob_match("admin_*", "admin_reset_all"));
        assert!(glob_match("*_user", "delete_user"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(glob_match("?", "é"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("admin_*", "superadmin_x"));
        assert!(!glob_match("delete_?", "delete_ab"));
        assert!(!glob_match("a*b", "a"));
        assert!(!glob_match("deploy", "deploy2"));
        assert!(
            !glob_match(&"*a".repeat(20), &"a".repeat(19)),
            "terminates quickly"
        );
    }

    #[test]
    fn config_errors_name_the_rule() {
        let host = FakeHost::new();
        for (config, expected) in [
            (
                r#"{"rules": [{"tools": [], "scope": "a"}]}"#,
                "rules[0]: `tools` must list",
            ),
            (
                r#"{"rules": [{"tools": ["x"], "scope": "a"}, {"tools": ["y"], "scope": ""}]}"#,
                "rules[1]: `scope` is empty",
            ),
            (
                r#"{"rules": [{"tools": ["x"], "scope": "a", "hours_utc": {"from": 9, "to": 9}}]}"#,
                "rules[0]: invalid hours_utc {from = 9, to = 9}",
            ),
            (
                r#"{"rules": [{"tools": ["x"]}]}"#,
                "invalid config: missing field `scope`",
            ),
            (r#"{"rules": []}"#, "`rules` is empty"),
        ] {
            let err = configure_authorizer::<McpToolPolicy>(config, &host).unwrap_err();
            assert!(
                err.starts_with(expected),
                "expected: {expected}\ngot: {err}"
            );
        }
    }
}
