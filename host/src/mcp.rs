//! MCP awareness: what a JSON-RPC request body asks the MCP server to do, and filtering of
//! `tools/list` (and resources/prompts listings) down to what a caller may use.
//!
//! Parsing is deliberately shallow: only `method` and the one `params` field that names the
//! target are read, so a hostile body costs one `serde_json` pass and nothing more.

use serde::Deserialize;
use serde_json::Value;

use crate::normal_form::resource_uri_problem;

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
    /// A member spelled in another case than the protocol's (`METHOD`, `Name`).
    #[error("member `{member}` is `{exact}` to case-insensitive upstreams; spell it `{exact}`")]
    CaseVariant {
        /// The member as sent.
        member: String,
        /// The protocol's spelling.
        exact: String,
    },
    /// A request id that upstreams could read as another id.
    #[error(
        "request id `{0}` is not canonical: use a string or an integer of at most 2^53-1 \
         (no fraction, exponent or `-0`), once per batch"
    )]
    Id(String),
    /// A resource URI that upstreams could resolve differently from its spelling.
    #[error("resource URI `{uri}` is not in normal form ({why})")]
    ResourceUri {
        /// The URI as sent.
        uri: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// An `Mcp-Method`, `Mcp-Name` or `Mcp-Param-*` header that does not mirror the body.
    #[error("header `{header}` does not match the body: {why}")]
    HeaderMismatch {
        /// The header.
        header: String,
        /// How it differs.
        why: String,
    },
}

#[derive(Deserialize)]
struct RawMessage {
    jsonrpc: Option<String>,
    method: Option<String>,
    #[serde(default)]
    params: Option<Value>,
}

/// Largest integer id every upstream reads exactly: JavaScript parses JSON numbers as
/// doubles, so a TypeScript-SDK server echoes `2^53 + 1` as `2^53`, and a listing answered
/// under the rounded id would escape the filter that waits for the original.
const MAX_SAFE_ID: u64 = (1 << 53) - 1;

/// Whether `id` is one that every upstream reads, and echoes, as itself: a string, or an
/// integer written without fraction or exponent within ±(2^53-1). `3.0`, `1e0` and `-0.0`
/// are the integer 3, 1 and 0 to rmcp (which echoes them so) but floats to serde_json.
fn canonical_id(id: &Value) -> bool {
    match id {
        Value::String(_) => true,
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_i64().map(i64::unsigned_abs))
            .is_some_and(|magnitude| magnitude <= MAX_SAFE_ID),
        _ => false,
    }
}

/// Parses an MCP POST body: one JSON-RPC message or a batch (array). Responses sent by the
/// client (messages without `method`) are skipped. An empty batch is an error.
pub fn parse_body(body: &[u8], session_id: Option<String>) -> Result<McpMessage, McpParseError> {
    parse_body_mirrored(body, session_id, &Mirrored::default())
}

/// [`parse_body`], and checks that the `Mcp-Method`, `Mcp-Name` and `Mcp-Param-*` headers
/// (`mirrored`) match the body they mirror.
pub fn parse_body_mirrored(
    body: &[u8],
    session_id: Option<String>,
    mirrored: &Mirrored,
) -> Result<McpMessage, McpParseError> {
    let UniqueKeys(value) =
        serde_json::from_slice(body).map_err(|e| McpParseError::Json(e.to_string()))?;
    let batch = value.is_array();
    let items = match value {
        Value::Array(items) if items.is_empty() => {
            return Err(McpParseError::Shape("empty batch"));
        }
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err(McpParseError::Shape("expected an object or an array")),
    };
    if !mirrored.is_empty() && batch {
        return Err(McpParseError::HeaderMismatch {
            header: "mcp-method".into(),
            why: "a batch cannot be mirrored in headers".into(),
        });
    }
    let mut calls = Vec::with_capacity(items.len());
    let mut ids: Vec<Value> = Vec::new();
    for item in items {
        if !item.is_object() {
            return Err(McpParseError::Shape("batch entries must be objects"));
        }
        refuse_near_misses(&item, MESSAGE_MEMBERS)?;
        if let Some(params) = item.get("params") {
            refuse_near_misses(params, TARGET_MEMBERS)?;
            if let Some(reference) = params.get("ref") {
                refuse_near_misses(reference, TARGET_MEMBERS)?;
            }
        }
        // Read before deserializing: `"id": null` must not look like a missing id.
        let id = item.get("id").cloned();
        let raw: RawMessage = serde_json::from_value(item)
            .map_err(|_| McpParseError::Shape("`method` and `jsonrpc` must be strings"))?;
        if raw.jsonrpc.as_deref() != Some("2.0") {
            return Err(McpParseError::Shape("`jsonrpc` must be \"2.0\""));
        }
        let Some(method) = raw.method else {
            mirrored.check(None, None, None)?;
            continue;
        };
        if let Some(id) = id {
            if !canonical_id(&id) || ids.contains(&id) {
                return Err(McpParseError::Id(id.to_string()));
            }
            ids.push(id);
        }
        let target = target_of(&method, raw.params.as_ref())?;
        if let McpTarget::Resource(uri) = &target
            && let Some(why) = if method == "completion/complete" {
                resource_uri_problem(&template_example(uri))
            } else {
                resource_uri_problem(uri)
            }
        {
            return Err(McpParseError::ResourceUri {
                uri: uri.clone(),
                why,
            });
        }
        let arguments = raw.params.as_ref().and_then(|p| p.get("arguments"));
        mirrored.check(Some(&method), target.name(), arguments)?;
        calls.push(McpCall { method, target });
    }
    Ok(McpMessage { session_id, calls })
}

/// The MCP request headers that mirror the body (MCP 2026-07-28 Streamable HTTP):
/// `Mcp-Method`, `Mcp-Name` and `Mcp-Param-{name}`. Servers may route on them, so an
/// intermediary that judged the body must make sure they say the same thing; the revision
/// asks for 400 on a mismatch.
///
/// `Mcp-Param-{name}` mirrors the tool argument that the tool's schema marks with
/// `x-mcp-header: {name}`. The gateway does not hold tool schemas, so it checks the header
/// against the top-level argument of that name (compared case-insensitively, as header names
/// are) when the call has one, and otherwise only that it decodes. No rule reads these
/// headers; the upstream, which knows the schema, must still check the rest itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirrored {
    method: Option<String>,
    name: Option<String>,
    params: Vec<(String, String)>,
}

impl Mirrored {
    /// Reads the mirrored headers. A repeated one, or one whose value cannot be read or
    /// decoded, is a mismatch.
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Self, McpParseError> {
        let mut mirrored = Self::default();
        for name in headers.keys() {
            let key = name.as_str();
            let slot = if key == "mcp-method" || key == "mcp-name" {
                None
            } else if let Some(param) = key.strip_prefix("mcp-param-") {
                Some(param)
            } else {
                continue;
            };
            let mismatch = |why: &str| McpParseError::HeaderMismatch {
                header: key.to_owned(),
                why: why.to_owned(),
            };
            let mut values = headers.get_all(name).iter();
            let value = values.next().ok_or_else(|| mismatch("empty"))?;
            if values.next().is_some() {
                return Err(mismatch("sent more than once"));
            }
            let value = decode_mirrored(value.as_bytes())
                .ok_or_else(|| mismatch("not visible ASCII, nor `=?base64?…?=` holding UTF-8"))?;
            match slot {
                None if key == "mcp-method" => mirrored.method = Some(value),
                None => mirrored.name = Some(value),
                Some(param) => mirrored.params.push((param.to_owned(), value)),
            }
        }
        Ok(mirrored)
    }

    fn is_empty(&self) -> bool {
        self.method.is_none() && self.name.is_none() && self.params.is_empty()
    }

    /// Checks one message's method, target name and tool arguments against the headers.
    fn check(
        &self,
        method: Option<&str>,
        name: Option<&str>,
        arguments: Option<&Value>,
    ) -> Result<(), McpParseError> {
        let mismatch = |header: &str, why: String| McpParseError::HeaderMismatch {
            header: header.to_owned(),
            why,
        };
        if let Some(header) = &self.method
            && Some(header.as_str()) != method
        {
            return Err(mismatch(
                "mcp-method",
                format!("it says `{header}`, the body `{}`", method.unwrap_or("")),
            ));
        }
        if let Some(header) = &self.name
            && Some(header.as_str()) != name
        {
            return Err(mismatch(
                "mcp-name",
                format!("it says `{header}`, the body `{}`", name.unwrap_or("")),
            ));
        }
        // A header names its argument with case and `-`/`_` folded: CGI, WSGI, Rack and PHP
        // servers read `Mcp-Param-Target-Region` and `Mcp-Param-target_region` as one
        // variable, so every argument either spelling could name must agree with it.
        let fold = |name: &str| name.to_ascii_lowercase().replace('_', "-");
        for (param, value) in &self.params {
            let wanted = fold(param);
            let named = arguments
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter(|(k, _)| fold(k) == wanted);
            for (_, argument) in named {
                let same = match argument {
                    Value::String(s) => s == value,
                    Value::Bool(b) => value == if *b { "true" } else { "false" },
                    Value::Number(n) => n.as_i64().is_some_and(|n| value == &n.to_string()),
                    _ => false,
                };
                if !same {
                    return Err(mismatch(
                        &format!("mcp-param-{param}"),
                        "it differs from the argument of that name".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A mirrored header's value: visible ASCII as is, or `=?base64?{base64}?=` holding UTF-8.
fn decode_mirrored(raw: &[u8]) -> Option<String> {
    use base64::Engine as _;
    let text = std::str::from_utf8(raw).ok()?;
    if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    match text
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(text.to_owned()),
    }
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
        let mut folded = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let UniqueKeys(value) = map.next_value()?;
            // Go's encoding/json (mcp-go) and System.Text.Json with web defaults (the C#
            // SDK's params) match member names case-insensitively, last one winning: to
            // them `{"name":"echo","Name":"admin_reset"}` names `admin_reset`.
            let key_folded = fold_case(&key);
            if !folded.insert(key_folded) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate member `{key}` (member names that differ only in case are \
                     duplicates to some upstreams)"
                )));
            }
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

/// A URI template (RFC 6570) with each `{…}` expression replaced by `x`: the URI it spells
/// for one expansion, checked in its place (its braces alone would fail the URL check).
fn template_example(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut in_expression = false;
    for c in template.chars() {
        match (c, in_expression) {
            ('{', false) => in_expression = true,
            ('}', true) => {
                in_expression = false;
                out.push('x');
            }
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    out
}

/// A member name under Unicode simple case folding, as Go's `bytes.EqualFold` compares
/// names (`K` KELVIN SIGN is `k`, `ſ` LONG S is `s`).
fn fold_case(name: &str) -> String {
    name.chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

/// Refuses a member whose name is not `wanted` but folds to it: a case-insensitive upstream
/// reads `"METHOD"` as the method, or `"Name"` as the tool, when the exact name is absent,
/// while this parser would see neither.
fn refuse_near_misses(object: &Value, wanted: &[&str]) -> Result<(), McpParseError> {
    let Some(members) = object.as_object() else {
        return Ok(());
    };
    for key in members.keys() {
        let key_folded = fold_case(key);
        if let Some(exact) = wanted
            .iter()
            .find(|w| **w != key.as_str() && fold_case(w) == key_folded)
        {
            return Err(McpParseError::CaseVariant {
                member: key.clone(),
                exact: (*exact).to_owned(),
            });
        }
    }
    Ok(())
}

/// Members of a JSON-RPC message the gateway reads or that upstreams dispatch on.
const MESSAGE_MEMBERS: &[&str] = &["jsonrpc", "id", "method", "params", "result", "error"];
/// Members of `params` that name what a call acts on.
const TARGET_MEMBERS: &[&str] = &["name", "uri", "arguments", "ref", "type"];

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
        // Completions reveal what a resource template or a prompt argument would take, so
        // they are judged as the resource or prompt they refer to.
        "completion/complete" => {
            let reference = params.and_then(|p| p.get("ref"));
            let text = |name: &'static str| {
                reference
                    .and_then(|r| r.get(name))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| McpParseError::MissingTarget {
                        method: method.to_owned(),
                        field: name,
                    })
            };
            match text("type")?.as_str() {
                "ref/resource" => McpTarget::Resource(text("uri")?),
                "ref/prompt" => McpTarget::Prompt(text("name")?),
                _ => {
                    return Err(McpParseError::MissingTarget {
                        method: method.to_owned(),
                        field: "ref.type",
                    });
                }
            }
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
    /// `resources/templates/list`: entries in `resourceTemplates`, named by `uriTemplate`.
    /// A template is judged as the resource URI it is spelled as (`file:///secret/{name}`
    /// matches a `file:///secret/*` rule); reading what it expands to is judged again.
    ResourceTemplates,
    /// `prompts/list`: entries in `prompts`, named by `name`.
    Prompts,
}

impl ListKind {
    /// The listing method's kind, if `method` is one.
    pub fn from_method(method: &str) -> Option<Self> {
        match method {
            "tools/list" => Some(Self::Tools),
            "resources/list" => Some(Self::Resources),
            "resources/templates/list" => Some(Self::ResourceTemplates),
            "prompts/list" => Some(Self::Prompts),
            _ => None,
        }
    }

    fn fields(self) -> (&'static str, &'static str) {
        match self {
            Self::Tools => ("tools", "name"),
            Self::Resources => ("resources", "uri"),
            Self::ResourceTemplates => ("resourceTemplates", "uriTemplate"),
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
            Self::Resources | Self::ResourceTemplates => McpCall {
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

/// The call each named entry of a listing response would be, in listing order: what
/// [`filter_listing`] asks `allowed` about, in the same order.
pub fn listed_calls(response: &Value, kind: ListKind) -> Vec<McpCall> {
    let (list_field, name_field) = kind.fields();
    response
        .get("result")
        .and_then(|r| r.get(list_field))
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter_map(|entry| entry.get(name_field).and_then(Value::as_str))
                .map(|name| kind.target(name))
                .collect()
        })
        .unwrap_or_default()
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
    fn ids_must_be_strings_or_safe_integers_and_unique_in_a_batch() {
        for id in [
            "3.0",
            "-0.0",
            "1e0",
            "9007199254740992",
            "-9007199254740992",
            "null",
            "true",
            "[1]",
            "{}",
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
            let error = parse(&body).expect_err(&body);
            assert!(matches!(error, McpParseError::Id(_)), "{id}: {error}");
        }
        for id in [
            "3",
            "-3",
            "0",
            "\"3\"",
            "\"3.0\"",
            "9007199254740991",
            "-9007199254740991",
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
            parse(&body).expect(&body);
        }
        let twice = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
        assert!(matches!(parse(twice), Err(McpParseError::Id(_))));
        let distinct = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":"1","method":"ping"}]"#;
        parse(distinct).expect("1 and \"1\" are different ids everywhere");
    }

    #[test]
    fn resource_uris_not_in_normal_form_are_refused() {
        for uri in [
            "FILE:///secret/x",
            "file:///public/../secret/x",
            "file:///%73ecret/x",
            "file://localhost/secret/x",
        ] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"{uri}"}}}}"#
            );
            assert!(
                matches!(parse(&body), Err(McpParseError::ResourceUri { .. })),
                "{uri}"
            );
        }
    }

    fn mirrored(pairs: &[(&str, &str)]) -> Result<Mirrored, McpParseError> {
        let mut headers = http::HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                http::HeaderValue::from_str(value).expect("value"),
            );
        }
        Mirrored::from_headers(&headers)
    }

    #[test]
    fn mirrored_headers_must_match_the_body() {
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"region":"eu","n":3}}}"#;
        let check = |pairs: &[(&str, &str)]| {
            mirrored(pairs).and_then(|m| parse_body_mirrored(call.as_bytes(), None, &m))
        };
        check(&[("mcp-method", "tools/call"), ("mcp-name", "echo")]).expect("matching");
        check(&[("mcp-name", "=?base64?ZWNobw==?=")]).expect("base64 form");
        check(&[("mcp-param-region", "eu"), ("mcp-param-n", "3")]).expect("params match");
        check(&[("mcp-param-unknown", "x")]).expect("no argument of that name to compare");
        for bad in [
            vec![("mcp-method", "tools/list")],
            vec![("mcp-name", "admin_reset")],
            vec![("mcp-name", "=?base64?YWRtaW5fcmVzZXQ=?=")],
            vec![("mcp-name", "=?base64?not base64?=")],
            vec![("mcp-name", "echo"), ("mcp-name", "echo")],
            vec![("mcp-param-region", "us")],
            vec![("mcp-param-n", "3.0")],
        ] {
            assert!(
                matches!(check(&bad), Err(McpParseError::HeaderMismatch { .. })),
                "{bad:?}"
            );
        }
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
        let m = mirrored(&[("mcp-method", "ping")]).expect("reads");
        assert!(parse_body_mirrored(batch.as_bytes(), None, &m).is_err());
        let listing = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let m = mirrored(&[("mcp-name", "echo")]).expect("reads");
        assert!(parse_body_mirrored(listing.as_bytes(), None, &m).is_err());
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
