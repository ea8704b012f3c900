//! MCP awareness: what a JSON-RPC request body asks the MCP server to do, and filtering of
//! `tools/list` (and resources/prompts listings) down to what a caller may use.
//!
//! Parsing is deliberately shallow: only `method` and the one `params` field that names the
//! target are read, so a hostile body costs one `serde_json` pass and nothing more.

use serde::Deserialize;
use serde_json::Value;

/// What one JSON-RPC message acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpTarget {
    /// The method names no tool, resource or prompt.
    None,
    /// `tools/call`: the tool name.
    Tool(String),
    /// `resources/read` and friends: the resource URI.
    Resource(String),
    /// `prompts/get`: the prompt name.
    Prompt(String),
}

impl McpTarget {
    /// The target's name or URI, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::None => None,
            Self::Tool(s) | Self::Resource(s) | Self::Prompt(s) => Some(s),
        }
    }
}

/// One JSON-RPC request or notification in an MCP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpCall {
    /// The JSON-RPC method.
    pub method: String,
    /// What it acts on.
    pub target: McpTarget,
}

/// The MCP content of one HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct McpMessage {
    /// The `Mcp-Session-Id` header, when present.
    pub session_id: Option<String>,
    /// The calls in body order (one, or several for a batch).
    pub calls: Vec<McpCall>,
}

/// A body that claims to be MCP JSON-RPC but is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpParseError {
    /// Not JSON at all.
    #[error("body is not valid JSON: {0}")]
    Json(String),
    /// JSON, but not a JSON-RPC message or batch.
    #[error("body is not a JSON-RPC message: {0}")]
    Shape(&'static str),
    /// A method that needs a target is missing it.
    #[error("`{method}` needs `params.{field}` as a string")]
    MissingTarget {
        /// The JSON-RPC method.
        method: String,
        /// The missing field.
        field: &'static str,
    },
}

#[derive(Deserialize)]
struct RawMessage {
    jsonrpc: Option<String>,
    method: Option<String>,
    #[serde(default)]
    params: Option<Value>,
}

/// Parses an MCP POST body: one JSON-RPC message or a batch (array). Responses sent by the
/// client (messages without `method`) are skipped. An empty batch is an error.
pub fn parse_body(body: &[u8], session_id: Option<String>) -> Result<McpMessage, McpParseError> {
    let UniqueKeys(value) =
        serde_json::from_slice(body).map_err(|e| McpParseError::Json(e.to_string()))?;
    let items = match value {
        Value::Array(items) if items.is_empty() => {
            return Err(McpParseError::Shape("empty batch"));
        }
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err(McpParseError::Shape("expected an object or an array")),
    };
    let mut calls = Vec::with_capacity(items.len());
    for item in items {
        if !item.is_object() {
            return Err(McpParseError::Shape("batch entries must be objects"));
        }
        let raw: RawMessage = serde_json::from_value(item)
            .map_err(|_| McpParseError::Shape("`method` and `jsonrpc` must be strings"))?;
        if raw.jsonrpc.as_deref() != Some("2.0") {
            return Err(McpParseError::Shape("`jsonrpc` must be \"2.0\""));
        }
        let Some(method) = raw.method else {
            continue;
        };
        let target = target_of(&method, raw.params.as_ref())?;
        calls.push(McpCall { method, target });
    }
    Ok(McpMessage { session_id, calls })
}

/// A JSON value whose objects have no duplicate member names.
///
/// JSON leaves duplicates undefined: serde_json keeps the last, some parsers keep the first.
/// Were they accepted, `{"name":"admin_reset","name":"echo"}` would be authorized as `echo`
/// here and run as `admin_reset` by a first-wins upstream, so a body with a duplicate
/// anywhere is refused (as JWT headers and claims are).
struct UniqueKeys(Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let UniqueKeys(value) = map.next_value()?;
            if members.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate member `{key}`"
                )));
            }
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

fn target_of(method: &str, params: Option<&Value>) -> Result<McpTarget, McpParseError> {
    let field = |name: &'static str| -> Result<String, McpParseError> {
        params
            .and_then(|p| p.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| McpParseError::MissingTarget {
                method: method.to_owned(),
                field: name,
            })
    };
    Ok(match method {
        "tools/call" => McpTarget::Tool(field("name")?),
        "prompts/get" => McpTarget::Prompt(field("name")?),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            McpTarget::Resource(field("uri")?)
        }
        _ => McpTarget::None,
    })
}

/// Which listing a `*/list` result is, and the field that names each entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list`: entries in `tools`, named by `name`.
    Tools,
    /// `resources/list`: entries in `resources`, named by `uri`.
    Resources,
    /// `prompts/list`: entries in `prompts`, named by `name`.
    Prompts,
}

impl ListKind {
    /// The listing method's kind, if `method` is one.
    pub fn from_method(method: &str) -> Option<Self> {
        match method {
            "tools/list" => Some(Self::Tools),
            "resources/list" => Some(Self::Resources),
            "prompts/list" => Some(Self::Prompts),
            _ => None,
        }
    }

    fn fields(self) -> (&'static str, &'static str) {
        match self {
            Self::Tools => ("tools", "name"),
            Self::Resources => ("resources", "uri"),
            Self::Prompts => ("prompts", "name"),
        }
    }

    /// The target a call on one listed entry would have, for asking the rules.
    pub fn target(self, name: &str) -> McpCall {
        match self {
            Self::Tools => McpCall {
                method: "tools/call".into(),
                target: McpTarget::Tool(name.into()),
            },
            Self::Resources => McpCall {
                method: "resources/read".into(),
                target: McpTarget::Resource(name.into()),
            },
            Self::Prompts => McpCall {
                method: "prompts/get".into(),
                target: McpTarget::Prompt(name.into()),
            },
        }
    }
}

/// Removes from a JSON-RPC response to a listing every entry for which `allowed` says no.
/// Works on one response object; entries without a name are removed (fail closed).
/// Returns how many entries were removed.
pub fn filter_listing(
    response: &mut Value,
    kind: ListKind,
    mut allowed: impl FnMut(&McpCall) -> bool,
) -> usize {
    let (list_field, name_field) = kind.fields();
    let Some(entries) = response
        .get_mut("result")
        .and_then(|r| r.get_mut(list_field))
        .and_then(Value::as_array_mut)
    else {
        return 0;
    };
    let before = entries.len();
    entries.retain(|entry| {
        entry
            .get(name_field)
            .and_then(Value::as_str)
            .is_some_and(|name| allowed(&kind.target(name)))
    });
    before - entries.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: &str) -> Result<McpMessage, McpParseError> {
        parse_body(body.as_bytes(), None)
    }

    #[test]
    fn duplicate_members_anywhere_are_refused() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_reset","name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_reset","na\u006de":"echo"}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/list","method":"tools/call","params":{"name":"x"}}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":{"b":1,"b":2}}}]"#,
        ] {
            let error = parse(body).expect_err(body);
            assert!(error.to_string().contains("duplicate member"), "{error}");
        }
        parse(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":{"b":1},"b":[1.5,-2,null,true]}}"#)
            .expect("distinct members at every level are fine");
    }

    #[test]
    fn tools_call_names_its_tool() {
        let msg = parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#)
            .expect("valid");
        assert_eq!(
            msg.calls,
            vec![McpCall {
                method: "tools/call".into(),
                target: McpTarget::Tool("echo".into())
            }]
        );
    }

    #[test]
    fn batch_lists_every_request_and_skips_responses() {
        let msg = parse(
            r#"[{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}},
                {"jsonrpc":"2.0","id":7,"result":{}},
                {"jsonrpc":"2.0","method":"notifications/initialized"},
                {"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"p"}}]"#,
        )
        .expect("valid");
        let targets: Vec<_> = msg.calls.iter().map(|c| c.target.clone()).collect();
        assert_eq!(
            targets,
            vec![
                McpTarget::Resource("file:///a".into()),
                McpTarget::None,
                McpTarget::Prompt("p".into())
            ]
        );
    }

    #[test]
    fn tools_call_without_a_name_is_malformed() {
        let err = parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#)
            .expect_err("no name");
        assert!(matches!(
            err,
            McpParseError::MissingTarget { field: "name", .. }
        ));
    }

    #[test]
    fn non_json_rpc_bodies_are_malformed() {
        assert!(parse("not json").is_err());
        assert!(parse("[]").is_err());
        assert!(parse("42").is_err());
        assert!(
            parse(r#"{"method":"tools/list"}"#).is_err(),
            "jsonrpc missing"
        );
        assert!(parse(r#"{"jsonrpc":"2.0","method":7}"#).is_err());
    }

    #[test]
    fn listing_filter_removes_what_is_not_allowed_and_nameless_entries() {
        let mut response = json!({"jsonrpc":"2.0","id":1,"result":{"tools":[
            {"name":"echo"},{"name":"admin_reset"},{"description":"no name"}]}});
        let removed = filter_listing(&mut response, ListKind::Tools, |call| {
            call.target != McpTarget::Tool("admin_reset".into())
        });
        assert_eq!(removed, 2);
        assert_eq!(response["result"]["tools"], json!([{"name":"echo"}]));
    }
}
