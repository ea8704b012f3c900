//! `portcullis::mcp::parse_body` and `filter_listing` on arbitrary bytes.
//!
//! Invariants: nothing panics; a body that parses says exactly what a plain reading of the
//! same JSON says (the calls in order, each target the named `params` field), and a tool,
//! prompt or resource it names occurs in the body; a filtered listing keeps exactly the
//! named entries the predicate allows, in order, and reports how many it removed.
//!
//! Differential: a body the gateway accepts is also valid for a second, independent JSON
//! reader ([`strict_json`]: RFC 8259 plus no duplicate member names anywhere), and that
//! reader finds the same methods and targets. Where two JSON parsers could disagree, the
//! gateway must refuse rather than pick a reading.

#![no_main]

mod strict_json;

use libfuzzer_sys::fuzz_target;
use portcullis::mcp::{ListKind, McpCall, McpTarget, filter_listing, parse_body};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let parsed = parse_body(data, Some("session".into()));
    let json: Option<Value> = serde_json::from_slice(data).ok();
    match (&parsed, &json) {
        (Ok(message), Some(value)) => {
            assert_eq!(message.session_id.as_deref(), Some("session"));
            assert_eq!(message.calls, expected_calls(value), "input: {value}");
            for call in &message.calls {
                if let Some(name) = call.target.name() {
                    assert!(
                        occurs(data, name),
                        "target {name:?} does not occur in the body"
                    );
                }
            }
        }
        (Ok(_), None) => panic!("parse_body accepted a body serde_json refuses"),
        (Err(error), _) => assert!(!error.to_string().is_empty()),
    }
    if let Ok(message) = &parsed {
        let Some(strict) = strict_json::parse(data) else {
            panic!(
                "parse_body accepted a body the strict reader refuses: {:?}",
                String::from_utf8_lossy(data)
            );
        };
        assert_eq!(
            message.calls,
            strict_calls(&strict),
            "the two readings differ on {:?}",
            String::from_utf8_lossy(data)
        );
    }
    if let Some(value) = json {
        check_listing(&value, data.first().copied().unwrap_or(0));
    }
});

/// The calls a plain reading of a well-formed body finds: requests and notifications in
/// order, responses skipped.
fn expected_calls(value: &Value) -> Vec<McpCall> {
    let items = match value {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    items
        .iter()
        .filter_map(|item| {
            assert_eq!(item["jsonrpc"], "2.0", "accepted without jsonrpc 2.0");
            let method = item
                .get("method")?
                .as_str()
                .expect("accepted a non-string method");
            let field = |name: &str| {
                item["params"][name]
                    .as_str()
                    .expect("accepted a call without its target")
                    .to_owned()
            };
            let target = match method {
                "tools/call" => McpTarget::Tool(field("name")),
                "prompts/get" => McpTarget::Prompt(field("name")),
                "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                    McpTarget::Resource(field("uri"))
                }
                _ => McpTarget::None,
            };
            Some(McpCall {
                method: method.to_owned(),
                target,
            })
        })
        .collect()
}

/// The calls the strict reader finds, by the JSON-RPC rules alone: requests and
/// notifications in order, responses (no `method`) skipped.
fn strict_calls(value: &strict_json::Json) -> Vec<McpCall> {
    use strict_json::Json;
    let items: Vec<&Json> = match value {
        Json::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    items
        .into_iter()
        .filter_map(|item| {
            assert_eq!(
                item.get("jsonrpc"),
                Some(&Json::String("2.0".into())),
                "accepted without jsonrpc 2.0"
            );
            let method = match item.get("method")? {
                Json::String(method) => method.clone(),
                // A null method is no method (a response); no upstream runs a method `null`.
                Json::Null => return None,
                other => panic!("accepted the method {other:?}"),
            };
            let field = |name: &str| match item.get("params").and_then(|p| p.get(name)) {
                Some(Json::String(value)) => value.clone(),
                other => panic!("accepted `{method}` with params.{name} = {other:?}"),
            };
            let target = match method.as_str() {
                "tools/call" => McpTarget::Tool(field("name")),
                "prompts/get" => McpTarget::Prompt(field("name")),
                "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                    McpTarget::Resource(field("uri"))
                }
                _ => McpTarget::None,
            };
            Some(McpCall { method, target })
        })
        .collect()
}

/// Whether `name` is in the body: literally, or JSON-escaped when the body uses escapes.
fn occurs(data: &[u8], name: &str) -> bool {
    let needle = name.as_bytes();
    data.contains(&b'\\') || needle.is_empty() || data.windows(needle.len()).any(|w| w == needle)
}

/// Filters every listing kind with a predicate picked by `seed` and checks the result
/// against a plain filter of the same entries.
fn check_listing(value: &Value, seed: u8) {
    for (kind, list, field) in [
        (ListKind::Tools, "tools", "name"),
        (ListKind::Resources, "resources", "uri"),
        (ListKind::Prompts, "prompts", "name"),
    ] {
        let allow = |name: &str| (name.len() + usize::from(seed)).is_multiple_of(2);
        let mut filtered = value.clone();
        let removed = filter_listing(&mut filtered, kind, |call| {
            assert_eq!(call, &kind.target(call.target.name().expect("named")));
            allow(call.target.name().expect("named"))
        });
        let Some(before) = value
            .get("result")
            .and_then(|r| r.get(list))
            .and_then(Value::as_array)
        else {
            assert_eq!(removed, 0);
            assert_eq!(&filtered, value, "a response without a listing was changed");
            continue;
        };
        let kept: Vec<Value> = before
            .iter()
            .filter(|entry| entry.get(field).and_then(Value::as_str).is_some_and(allow))
            .cloned()
            .collect();
        assert_eq!(removed, before.len() - kept.len());
        let mut expected = value.clone();
        expected["result"][list] = Value::Array(kept);
        assert_eq!(filtered, expected, "only the listing may change");
    }
}
