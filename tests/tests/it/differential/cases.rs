//! The differential suite's table: request variants, one class per way the gateway's reading
//! of a request could differ from an upstream's, each with the answer it must get.

use super::super::gateway_harness::{ADMIN_KEY, READER_KEY};

/// What a case must come to.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// A control: answered 2xx and the upstream ran exactly these `(kind, name)`.
    Runs(&'static [(&'static str, &'static str)]),
    /// A control for listings: answered 2xx with a listing that shows this entry.
    Lists(&'static str),
    /// The gateway itself refuses (4xx): nothing reaches the upstream.
    Refused,
    /// Either refused (by the gateway, or by the upstream before running anything), or the
    /// upstream ran only what the caller may run; in both cases no listing shows the caller
    /// what it may not use.
    Safe,
}

/// One request variant.
#[derive(Debug, Clone)]
pub struct Case {
    /// The class of differential (`charset`, `method`, `id`, …).
    pub class: &'static str,
    /// What the variant does.
    pub name: String,
    /// The caller's API key.
    pub key: &'static str,
    /// The HTTP method, spelled as sent.
    pub method: &'static str,
    /// `Content-Type`, or none at all.
    pub content_type: Option<&'static str>,
    /// Further headers (repeats kept).
    pub headers: Vec<(&'static str, &'static str)>,
    /// The body, byte for byte.
    pub body: Vec<u8>,
    /// What it must come to.
    pub expect: Expect,
}

impl Case {
    fn new(class: &'static str, name: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            class,
            name: name.into(),
            key: READER_KEY,
            method: "POST",
            content_type: Some("application/json"),
            headers: Vec::new(),
            body: body.into(),
            expect: Expect::Safe,
        }
    }

    fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }

    fn admin(mut self) -> Self {
        self.key = ADMIN_KEY;
        self
    }

    fn method(mut self, method: &'static str) -> Self {
        self.method = method;
        self
    }

    fn content_type(mut self, content_type: Option<&'static str>) -> Self {
        self.content_type = content_type;
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// `tools/call` of `name` (raw JSON string content: escapes are sent as written).
fn call(name: &str) -> String {
    let arguments = if name == "echo" {
        r#"{"text":"hi"}"#
    } else {
        "{}"
    };
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}","arguments":{arguments}}}}}"#
    )
}

/// `resources/read` of `uri` (raw JSON string content).
fn read(uri: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"{uri}"}}}}"#)
}

/// `prompts/get` of `name` (raw JSON string content).
fn prompt(name: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{{"name":"{name}"}}}}"#)
}

/// `method` (a listing) with `id` given as a raw JSON token.
fn list(method: &str, id: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{}}}}"#)
}

fn utf16(text: &str, big_endian: bool, bom: bool) -> Vec<u8> {
    let bom = bom.then_some(0xfeff_u16);
    bom.into_iter()
        .chain(text.encode_utf16())
        .flat_map(|unit| {
            if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            }
        })
        .collect()
}

fn utf32le(text: &str) -> Vec<u8> {
    text.chars()
        .flat_map(|c| u32::from(c).to_le_bytes())
        .collect()
}

/// Every case, controls first.
pub fn all() -> Vec<Case> {
    let mut cases = controls();
    cases.extend(charsets());
    cases.extend(methods());
    cases.extend(ids());
    cases.extend(duplicates());
    cases.extend(escapes());
    cases.extend(batches());
    cases.extend(uris());
    cases.extend(headers());
    cases.extend(content_types());
    cases
}

/// The plain requests, to show that each upstream runs what it is sent and that the
/// gateway's ordinary answers hold; without them every "refused" below could be an upstream
/// that runs nothing.
fn controls() -> Vec<Case> {
    use Expect::{Lists, Refused, Runs};
    vec![
        Case::new("control", "reader calls echo", call("echo")).expect(Runs(&[("tool", "echo")])),
        Case::new("control", "reader calls admin_reset", call("admin_reset")).expect(Refused),
        Case::new("control", "admin calls admin_reset", call("admin_reset"))
            .admin()
            .expect(Runs(&[("tool", "admin_reset")])),
        Case::new(
            "control",
            "reader reads file:///public/x",
            read("file:///public/x"),
        )
        .expect(Runs(&[("resource", "file:///public/x")])),
        Case::new(
            "control",
            "reader reads file:///secret/x",
            read("file:///secret/x"),
        )
        .expect(Refused),
        Case::new(
            "control",
            "admin reads file:///secret/x",
            read("file:///secret/x"),
        )
        .admin()
        .expect(Runs(&[("resource", "file:///secret/x")])),
        Case::new("control", "reader gets prompt greeting", prompt("greeting"))
            .expect(Runs(&[("prompt", "greeting")])),
        Case::new(
            "control",
            "reader gets prompt admin_prompt",
            prompt("admin_prompt"),
        )
        .expect(Refused),
        Case::new(
            "control",
            "admin gets prompt admin_prompt",
            prompt("admin_prompt"),
        )
        .admin()
        .expect(Runs(&[("prompt", "admin_prompt")])),
        Case::new(
            "control",
            "reader lists tools (id 1)",
            list("tools/list", "1"),
        )
        .expect(Lists("echo")),
        Case::new(
            "control",
            "reader lists resources",
            list("resources/list", "1"),
        )
        .expect(Lists("file:///public/x")),
        Case::new("control", "reader lists prompts", list("prompts/list", "1"))
            .expect(Lists("greeting")),
        Case::new("control", "charset=utf-8 echo", call("echo"))
            .content_type(Some("application/json; charset=utf-8"))
            .expect(Runs(&[("tool", "echo")])),
    ]
}

/// Bodies in other encodings than UTF-8: refused (415) on MCP routes, whatever the upstream
/// would decode them as.
fn charsets() -> Vec<Case> {
    use Expect::{Refused, Safe};
    let admin = call("admin_reset");
    let c = |name: &str, ct: &'static str, body: Vec<u8>| {
        Case::new("charset", name, body)
            .content_type(Some(ct))
            .expect(Refused)
    };
    vec![
        c(
            "utf-7, name admin+AF8-reset",
            "application/json; charset=utf-7",
            call("admin+AF8-reset").into(),
        ),
        c(
            "utf-7, whole name in base64",
            "application/json; charset=utf-7",
            call("+AGEAZABtAGkAbgBfAHIAZQBzAGUAdA-").into(),
        ),
        c(
            "utf-7 quoted and upper-case",
            "application/json; charset=\"UTF-7\"",
            call("admin+AF8-reset").into(),
        ),
        c(
            "utf-16le with BOM",
            "application/json; charset=utf-16le",
            utf16(&admin, false, true),
        ),
        c(
            "utf-16le without BOM",
            "application/json; charset=utf-16le",
            utf16(&admin, false, false),
        ),
        c(
            "utf-16be with BOM",
            "application/json; charset=utf-16be",
            utf16(&admin, true, true),
        ),
        c(
            "utf-16be without BOM",
            "application/json; charset=utf-16be",
            utf16(&admin, true, false),
        ),
        c(
            "utf-16 (BOM decides)",
            "application/json; charset=utf-16",
            utf16(&admin, false, true),
        ),
        c(
            "no charset, UTF-16LE body with BOM",
            "application/json",
            utf16(&admin, false, true),
        ),
        c(
            "utf-32le",
            "application/json; charset=utf-32le",
            utf32le(&admin),
        ),
        c(
            "latin1 label, echo with byte 0xE9",
            "application/json; charset=latin1",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"caf\xe9"}}}"#.to_vec(),
        ),
        c(
            "iso-8859-1 label, ASCII admin_reset",
            "application/json; charset=iso-8859-1",
            admin.clone().into(),
        ),
        Case::new("charset", "UTF-8 BOM, admin_reset", {
            let mut body = b"\xef\xbb\xbf".to_vec();
            body.extend_from_slice(admin.as_bytes());
            body
        })
        .expect(Safe),
        Case::new("charset", "UTF-8 BOM, echo", {
            let mut body = b"\xef\xbb\xbf".to_vec();
            body.extend_from_slice(call("echo").as_bytes());
            body
        })
        .expect(Safe),
        Case::new("encoding", "Content-Encoding: gzip, admin_reset", portcullis_tests::gzip::gzip(admin.as_bytes()))
            .header("content-encoding", "gzip"),
    ]
}

/// Method spellings: only `POST` is canonical; other spellings are refused, and a body on
/// any other method is judged too.
fn methods() -> Vec<Case> {
    use Expect::Refused;
    vec![
        Case::new("method", "post, admin_reset", call("admin_reset"))
            .method("post")
            .expect(Refused),
        Case::new("method", "Post, admin_reset", call("admin_reset"))
            .method("Post")
            .expect(Refused),
        Case::new("method", "post, echo", call("echo"))
            .method("post")
            .expect(Refused),
        Case::new("method", "post, tools/list", list("tools/list", "1"))
            .method("post")
            .expect(Refused),
        Case::new("method", "PUT, admin_reset", call("admin_reset")).method("PUT"),
        Case::new("method", "PATCH, admin_reset", call("admin_reset")).method("PATCH"),
    ]
}

/// Listing ids an upstream may echo in another form than the request's: the listing is
/// filtered whatever comes back (or the id is refused).
fn ids() -> Vec<Case> {
    [
        "3.0",
        "-0.0",
        "0",
        "1e0",
        "1E0",
        "30e-1",
        "\"3\"",
        "\"\\u0033\"",
        "3",
        "-1",
        "1.5",
        "9007199254740993",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "1e400",
        "null",
        "true",
        "{}",
        "[]",
    ]
    .into_iter()
    .map(|id| Case::new("id", format!("tools/list id {id}"), list("tools/list", id)))
    .chain([
        Case::new("id", "resources/list id 3.0", list("resources/list", "3.0")),
        Case::new("id", "prompts/list id 1e0", list("prompts/list", "1e0")),
    ])
    .collect()
}

/// Duplicate members, which parsers resolve first-wins or last-wins: refused anywhere.
fn duplicates() -> Vec<Case> {
    use Expect::Refused;
    let r = |name: &str, body: &str| Case::new("duplicate", name, body).expect(Refused);
    vec![
        r(
            "name echo then admin_reset",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"admin_reset","arguments":{"text":"hi"}}}"#,
        ),
        r(
            "name admin_reset then echo",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_reset","name":"echo","arguments":{"text":"hi"}}}"#,
        ),
        r(
            "name and na\\u006de",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","na\u006de":"admin_reset","arguments":{"text":"hi"}}}"#,
        ),
        r(
            "method tools/list then tools/call",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"admin_reset"}}"#,
        ),
        r(
            "params twice",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}},"params":{"name":"admin_reset"}}"#,
        ),
        r(
            "uri twice",
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///public/x","uri":"file:///secret/x"}}"#,
        ),
        r(
            "id twice on tools/list",
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/list","params":{}}"#,
        ),
        Case::new(
            "duplicate",
            "Name admin_reset beside name echo",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"admin_reset","name":"echo","arguments":{"text":"hi"}}}"#,
        ),
        Case::new(
            "duplicate",
            "Method tools/call, no method",
            r#"{"jsonrpc":"2.0","id":1,"Method":"tools/call","params":{"name":"admin_reset"}}"#,
        ),
    ]
}

/// Escapes and near-spellings of protected names.
fn escapes() -> Vec<Case> {
    let mut cases: Vec<Case> = [
        "admin\\u005freset",
        "\\u0061dmin_reset",
        "admin_reset\\u0000",
        "admin_reset\\ud800",
        "ADMIN_RESET",
        "Admin_reset",
        " admin_reset",
        "admin_reset ",
        "admin_reset\\n",
        "\u{ff41}dmin_reset",
        "\u{0430}dmin_reset",
        "admin\u{2010}reset",
    ]
    .into_iter()
    .map(|name| Case::new("escape", format!("tool {name}"), call(name)))
    .collect();
    cases.extend([
        Case::new(
            "escape",
            "method tools\\/call, admin_reset",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"admin_reset","arguments":{}}}"#,
        ),
        Case::new(
            "escape",
            "method tools\\u002fcall, admin_reset",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"admin_reset","arguments":{}}}"#,
        ),
        Case::new("escape", "prompt admin\\u005fprompt", prompt("admin\\u005fprompt")),
        Case::new("escape", "prompt ADMIN_PROMPT", prompt("ADMIN_PROMPT")),
        Case::new("escape", "uri file:\\/\\/\\/secret\\/x", read("file:\\/\\/\\/secret\\/x")),
    ]);
    cases
}

/// JSON-RPC batches (removed from MCP in 2025-06-18, still parsed by some SDKs).
fn batches() -> Vec<Case> {
    let b = |name: &str, body: String| Case::new("batch", name, body);
    vec![
        b(
            "[echo, admin_reset]",
            format!("[{},{}]", call("echo"), call("admin_reset").replace("\"id\":1", "\"id\":2")),
        ),
        b("[admin_reset]", format!("[{}]", call("admin_reset"))),
        b("[[admin_reset]]", format!("[[{}]]", call("admin_reset"))),
        b("[tools/list id 3.0]", format!("[{}]", list("tools/list", "3.0"))),
        b(
            "[tools/list id 1, tools/list id 1.0]",
            format!("[{},{}]", list("tools/list", "1"), list("tools/list", "1.0")),
        ),
        b(
            "[read FILE:///public/../secret/x]",
            format!("[{}]", read("FILE:///public/../secret/x")),
        ),
        b(
            "response-shaped entry that has a method",
            r#"[{"jsonrpc":"2.0","id":1,"result":{},"method":"tools/call","params":{"name":"admin_reset","arguments":{}}}]"#.into(),
        ),
        b(
            "[echo, notification admin_reset]",
            format!(
                "[{},{}]",
                call("echo"),
                r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"admin_reset","arguments":{}}}"#
            ),
        ),
    ]
}

/// Spellings of `file:///secret/x` (which a rule protects) that a server may resolve to it.
fn uris() -> Vec<Case> {
    [
        "FILE:///secret/x",
        "File:///secret/x",
        "file:///public/../secret/x",
        "file:///public/%2e%2e/secret/x",
        "file:///public/%2E%2E/secret/x",
        "file:///public/..%2Fsecret/x",
        "file:///secret%2Fx",
        "file:///%73ecret/x",
        "file:///secre%74/x",
        "file://localhost/secret/x",
        "file://LOCALHOST/secret/x",
        "file:///secret/./x",
        "file:///./secret/x",
        "file:////secret/x",
        "file:///secret//x",
        "file:///secret/x?",
        "file:///secret/x#top",
        "file:///secret/x/",
        "file:/secret/x",
        "file:///SECRET/x",
        "file:///public\\\\..\\\\secret\\\\x",
        " file:///secret/x",
        "file:///secret/x ",
        "file:///sec\\tret/x",
        "file:///sec\\nret/x",
    ]
    .into_iter()
    .map(|uri| Case::new("uri", format!("read {uri}"), read(uri)))
    .collect()
}

/// The 2026-07-28 transport's `Mcp-Method` / `Mcp-Name` headers, which servers may route
/// on: when they disagree with the body, the gateway refuses (400).
fn headers() -> Vec<Case> {
    use Expect::{Refused, Safe};
    let h = |name: &str, body: String| Case::new("header", name, body).expect(Refused);
    vec![
        h("body echo, Mcp-Name admin_reset", call("echo"))
            .header("mcp-method", "tools/call")
            .header("mcp-name", "admin_reset"),
        h("body echo, Mcp-Name admin_reset, 2026-07-28", call("echo"))
            .header("mcp-method", "tools/call")
            .header("mcp-name", "admin_reset")
            .header("mcp-protocol-version", "2026-07-28"),
        h("body echo, Mcp-Method tools/list", call("echo")).header("mcp-method", "tools/list"),
        h(
            "body tools/list, Mcp-Method tools/call",
            list("tools/list", "1"),
        )
        .header("mcp-method", "tools/call")
        .header("mcp-name", "admin_reset"),
        h(
            "body echo, Mcp-Name twice (echo, admin_reset)",
            call("echo"),
        )
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .header("mcp-name", "admin_reset"),
        h(
            "body read public, Mcp-Name secret",
            read("file:///public/x"),
        )
        .header("mcp-method", "resources/read")
        .header("mcp-name", "file:///secret/x"),
        h("body greeting, Mcp-Name admin_prompt", prompt("greeting"))
            .header("mcp-method", "prompts/get")
            .header("mcp-name", "admin_prompt"),
        Case::new(
            "header",
            "body echo, headers agree, 2026-07-28",
            call("echo"),
        )
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .header("mcp-protocol-version", "2026-07-28")
        .expect(Safe),
        Case::new(
            "header",
            "body admin_reset, Mcp-Name echo",
            call("admin_reset"),
        )
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .expect(Refused),
    ]
}

/// `Content-Type` variants around an `admin_reset` body.
fn content_types() -> Vec<Case> {
    let admin = call("admin_reset");
    let c = |name: &str, ct: Option<&'static str>| {
        Case::new("content-type", name, admin.clone()).content_type(ct)
    };
    vec![
        c("missing", None),
        c("text/plain", Some("text/plain")),
        c("application/json-seq", Some("application/json-seq")),
        c(
            "application/x-www-form-urlencoded",
            Some("application/x-www-form-urlencoded"),
        ),
        c("APPLICATION/JSON", Some("APPLICATION/JSON")),
        c(
            "application/json; charset=utf-8; charset=utf-7",
            Some("application/json; charset=utf-8; charset=utf-7"),
        ),
        Case::new("content-type", "missing, echo", call("echo")).content_type(None),
        Case::new(
            "content-type",
            "two headers, json then utf-7",
            call("admin+AF8-reset"),
        )
        .header("content-type", "application/json; charset=utf-7"),
        Case::new(
            "content-type",
            "two headers, utf-7 then json",
            call("admin+AF8-reset"),
        )
        .content_type(Some("application/json; charset=utf-7"))
        .header("content-type", "application/json"),
    ]
}
