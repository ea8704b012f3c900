//! The differential suite: the request each real MCP upstream *executed* is the request the
//! gateway authorized. Three upstreams (rmcp, the Python `mcp` SDK, the TypeScript SDK on
//! express; see `portcullis_tests::differential`) stand behind the real gateway, and every
//! variant in [`cases`] is sent through it by a caller with only `mcp:read`. For each, the
//! gateway refused it (4xx, and the upstream ran nothing), or the upstream ran only what that
//! caller may run and no listing showed it what it may not use. Where the issue decided that
//! the gateway itself refuses (a charset other than UTF-8, a method spelled other than `POST`,
//! duplicate members, `Mcp-*` headers that disagree with the body), a refusal by the upstream
//! does not count: the request must not reach it. Controls (plain requests,
//! and an admin doing what only an admin may) show each upstream really runs what it is
//! sent, so a "refused" is never an upstream that runs nothing.
//!
//! Each test prints its table (`--nocapture`): class, variant, status, what ran, verdict.

mod cases;

use portcullis_tests::differential::{Executed, Sdk, Upstream, send_bytes};
use serde_json::Value;

use self::cases::{Case, Expect};
use super::gateway_harness::{ADMIN_KEY, TestConfig, start_with_upstream};

/// Reader: `mcp:read`. Admin: `mcp:read admin`. Only admins may call `admin_reset`, read
/// under `file:///secret/`, or get `admin_*` prompts.
fn config() -> TestConfig {
    TestConfig::new()
        .route("/mcp", &["keys"])
        .api_keys(&["reader", "admin"])
        .path_rule("/mcp", &["mcp:read"])
        .tool_rule("admin_reset", &["admin"])
        .rule(r#"resource = "file:///secret/*""#, &["admin"])
        .rule(r#"prompt = "admin_*""#, &["admin"])
}

/// Whether the caller holding `key` may use the tool, resource or prompt `name`.
fn may_use(key: &str, kind: &str, name: &str) -> bool {
    let protected = matches!(
        (kind, name),
        ("tool", "admin_reset") | ("resource", "file:///secret/x") | ("prompt", "admin_prompt")
    );
    key == ADMIN_KEY || !protected
}

/// The JSON-RPC messages in a reply: the body when JSON, or each SSE `data:`.
fn messages(body: &str) -> Vec<Value> {
    if let Ok(value) = serde_json::from_str::<Value>(body) {
        return match value {
            Value::Array(items) => items,
            other => vec![other],
        };
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect()
}

/// Every `(kind, name)` listed in the reply's listings.
fn listed(body: &str) -> Vec<(&'static str, String)> {
    let mut entries = Vec::new();
    for message in messages(body) {
        for (field, kind, key) in [
            ("tools", "tool", "name"),
            ("resources", "resource", "uri"),
            ("prompts", "prompt", "name"),
        ] {
            let items = message["result"][field]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for item in items {
                let name = item[key].as_str().unwrap_or("<unnamed>").to_owned();
                entries.push((kind, name));
            }
        }
    }
    entries
}

/// What one case came to: `Ok(summary)` or `Err(what went wrong)`. `records` is what the
/// upstream logged for this request: `http` when the request reached it, then each handler
/// it ran.
fn judge(case: &Case, status: u16, body: &str, records: &[Executed]) -> Result<String, String> {
    let reached = records.iter().any(|e| e.kind == "http");
    let ran: Vec<&Executed> = records.iter().filter(|e| e.kind != "http").collect();
    let ran_text = if ran.is_empty() {
        "nothing".to_owned()
    } else {
        ran.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if ran.iter().any(|e| !may_use(case.key, &e.kind, &e.name)) {
        return Err(format!("WRONGLY ALLOWED: the upstream ran {ran_text}"));
    }
    let entries = listed(body);
    let leaked: Vec<_> = entries
        .iter()
        .filter(|(kind, name)| !may_use(case.key, kind, name))
        .map(|(kind, name)| format!("{kind} {name}"))
        .collect();
    if !leaked.is_empty() {
        return Err(format!("WRONGLY LISTED: {}", leaked.join(", ")));
    }
    let refused = (400..500).contains(&status);
    if refused && !ran.is_empty() {
        return Err(format!(
            "refused with {status}, yet the upstream ran {ran_text}"
        ));
    }
    let by = if reached {
        "the upstream"
    } else {
        "the gateway"
    };
    let excerpt = || body.chars().take(160).collect::<String>();
    match case.expect {
        Expect::Runs(expected) => {
            let got: Vec<_> = ran
                .iter()
                .map(|e| (e.kind.as_str(), e.name.as_str()))
                .collect();
            if (200..300).contains(&status) && got == expected {
                Ok(format!("ran {ran_text}"))
            } else {
                Err(format!(
                    "expected: 2xx running {expected:?}; got: {status}, ran {ran_text}: {}",
                    excerpt()
                ))
            }
        }
        Expect::Lists(entry) => {
            if (200..300).contains(&status) && entries.iter().any(|(_, name)| name == entry) {
                Ok(format!("listed {} entries", entries.len()))
            } else {
                Err(format!(
                    "expected: 2xx listing {entry}; got: {status}: {}",
                    excerpt()
                ))
            }
        }
        Expect::Refused if refused && !reached => Ok("refused by the gateway".into()),
        Expect::Refused => Err(format!(
            "expected: refused by the gateway (4xx, nothing sent upstream); got: {status} \
             from {by}, which ran {ran_text}"
        )),
        Expect::Safe if refused => Ok(format!("refused by {by}")),
        Expect::Safe => Ok(format!("{status}, the upstream ran {ran_text}")),
    }
}

/// Runs every case against `sdk`'s upstream behind a gateway, prints the table, and fails
/// listing every case that went wrong.
async fn suite(sdk: Sdk) {
    let Some(upstream) = Upstream::start(sdk).await else {
        return;
    };
    let gateway = start_with_upstream(config(), &upstream.url).await;
    let url = format!("{}/mcp", gateway.base);
    let mut failures = Vec::new();
    let cases = cases::all();
    println!(
        "differential suite, upstream {}: {} cases",
        sdk.label(),
        cases.len()
    );
    for case in &cases {
        let authorization = format!("Bearer {}", case.key);
        let mut headers = vec![
            ("authorization", authorization.as_str()),
            ("accept", "application/json, text/event-stream"),
        ];
        if !case
            .headers
            .iter()
            .any(|(n, _)| *n == "mcp-protocol-version")
        {
            headers.push(("mcp-protocol-version", "2025-06-18"));
        }
        if let Some(content_type) = case.content_type {
            headers.push(("content-type", content_type));
        }
        headers.extend(case.headers.iter().copied());
        let before = upstream.executed().len();
        let reply = send_bytes(&url, case.method, &headers, case.body.clone()).await;
        let ran = upstream.executed().split_off(before);
        let verdict = judge(case, reply.status, &reply.body, &ran);
        let (mark, text) = match &verdict {
            Ok(text) => ("pass", text),
            Err(text) => ("FAIL", text),
        };
        println!(
            "| {} | {} | {} | {} | {mark}: {text} |",
            sdk.label(),
            case.class,
            case.name,
            reply.status
        );
        if verdict.is_err() {
            failures.push(format!("{} / {}: {text}", case.class, case.name));
        }
    }
    let passed = cases.len() - failures.len();
    println!(
        "differential suite, upstream {}: {passed} passed, {} failed",
        sdk.label(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "upstream {}: {} of {} cases went wrong:\n{}\nupstream stderr:\n{}",
        sdk.label(),
        failures.len(),
        cases.len(),
        failures.join("\n"),
        upstream.stderr()
    );
}

#[tokio::test]
async fn rmcp_upstream_runs_only_what_the_gateway_authorized() {
    suite(Sdk::Rmcp).await;
}

#[tokio::test]
async fn python_sdk_upstream_runs_only_what_the_gateway_authorized() {
    suite(Sdk::Python).await;
}

#[tokio::test]
async fn typescript_sdk_upstream_runs_only_what_the_gateway_authorized() {
    suite(Sdk::TypeScript).await;
}
