//! Header and path abuse through the real gateway on port 0, written byte for byte over TCP
//! (clients refuse to send most of it), in front of a [`RecordingUpstream`] that shows what
//! got through. Every table counts its cases and the requests let in by mistake (must be 0).
//!
//! Decisions, as an nginx or Envoy user would expect them:
//! - **Credential header.** `Authorization` twice is 400 whatever the copies say (two
//!   parties picking different copies is request smuggling). The scheme is
//!   case-insensitive (`bearer`, `BEARER`: RFC 9110 §11.1). Exactly one space separates it
//!   from the token: two spaces, or a space inside the token, is 400 `invalid_request`;
//!   `Bearer<TAB>token` is not a Bearer credential this gateway reads and is 401
//!   `invalid_token`. Trailing and leading whitespace is not part of a field value
//!   (RFC 9110 §5.5) and is ignored. Non-ASCII bytes in the credential are 400.
//! - **Head size.** The request line and headers together may take 32 KiB (nginx's default
//!   4 × 8 KiB; Envoy's 60 KiB); more, or over 100 header lines, is 431 and the connection
//!   closes (a client still writing may see a reset instead).
//! - **Malformed framing** (a NUL, a bare CR, a vertical tab or a non-token byte in a header
//!   name, obs-fold line continuations, a non-UTF-8 request target): 400 from the HTTP parser.
//!   Non-UTF-8 bytes in other header values are opaque and pass (as in nginx); a non-ASCII
//!   `Origin` is not an allowed origin (403).
//! - **Identity headers.** Anything named `x-portcullis-*`, or spelled with `_` for `-`
//!   (`X_Portcullis_Subject`, which CGI-style upstreams read as the same variable), is
//!   removed before the upstream, on authenticated and anonymous routes alike. The gateway
//!   sets `X-Forwarded-Proto` and `X-Forwarded-Host` itself (from the public URL) and
//!   writes `X-Forwarded-For` (the peer alone, unless it is a trusted proxy); the other
//!   forwarding headers are `gateway_limits.rs`'s.
//! - **Forward-auth.** The check answers only trusted proxies (403 for anyone else), and
//!   reads only the configured proxy's header family: another family's describing header is
//!   the client's (403); a missing, repeated or unreadable one of its own is 400, never a
//!   fallback to the check path.
//! - **Paths.** A path that different servers would normalise differently is refused with
//!   400 rather than normalised: `.`/`..` segments (also percent-encoded), `//`, encoded
//!   `/` `\` `.` NUL and unreserved characters, a backslash, and `;` path parameters (which
//!   Tomcat, Jetty and Spring drop, so `/public/..;/admin` would climb out of a public
//!   route). A `#` fragment is dropped by the HTTP parser and the rest judged. Matching is
//!   case-sensitive and literal otherwise, as nginx `location` and Envoy `prefix` are:
//!   `/ADMIN`, `/admin.` and `/api/Admin` are other paths than `/admin` and `/api/admin`. An
//!   upstream that folds case or strips trailing dots (Windows, IIS) must not sit behind a
//!   more permissive route than its paths need.

mod forward_auth;
mod paths;

use std::collections::BTreeMap;

use crate::gateway_harness::{
    ADMIN_KEY, Harness, READER_KEY, RawReply, RecordingUpstream, TestConfig, raw_request,
    start_with_upstream,
};

/// Plain HTTP routes: `/admin` (the `admin` scope), `/public` (anyone) and `/api` (API
/// keys; `admin` under `/api/admin`).
fn config() -> TestConfig {
    TestConfig::new()
        .http_route("/admin", &["keys"])
        .http_route("/public", &["anon"])
        .http_route("/api", &["keys"])
        .api_keys(&["reader", "admin"])
        .provider("anon", "anonymous")
        .path_rule("/admin", &["admin"])
        .path_rule("/api/admin", &["admin"])
}

async fn gateway(config: TestConfig) -> (Harness, RecordingUpstream) {
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(config, &upstream.url).await;
    (h, upstream)
}

/// [`config`] with forward-auth on for `proxy`, answering the proxies in `trusted`.
fn forward_auth_behind(proxy: &str, trusted: &str) -> TestConfig {
    config()
        .behind(proxy)
        .server(&format!("trusted_proxies = [{trusted:?}]"))
}

/// A raw request: `target` and extra header lines (bytes, each without its CRLF).
fn raw(method: &str, target: &[u8], headers: &[&[u8]]) -> Vec<u8> {
    let mut out = [
        method.as_bytes(),
        b" ",
        target,
        b" HTTP/1.1\r\nHost: gateway.test\r\n",
    ]
    .concat();
    for header in headers {
        out.extend_from_slice(header);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

fn bearer(key: &str) -> Vec<u8> {
    format!("Authorization: Bearer {key}").into_bytes()
}

/// One table row: a request, and the statuses that are right for it. `0` stands for "the
/// connection was closed or reset before an answer".
struct Case {
    category: &'static str,
    name: String,
    request: Vec<u8>,
    expected: &'static [u16],
}

/// Runs `cases`; returns the failures and the requests let in by mistake (a 2xx, or an
/// upstream hit, where neither is expected), and prints the counts per category. With
/// `proxied`, an allowed request must reach the upstream; without (forward-auth), nothing
/// may.
async fn run(
    h: &Harness,
    upstream: &RecordingUpstream,
    cases: &[Case],
    proxied: bool,
) -> (Vec<String>, usize) {
    let mut tried: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut allowed_by_mistake = 0;
    for case in cases {
        *tried.entry(case.category).or_default() += 1;
        let before = upstream.hits();
        let (status, text) = match raw_request(h.addr, case.request.clone()).await {
            RawReply::Answered { status, text } => (status, text),
            RawReply::Closed(why) => (0, why),
        };
        let reached = upstream.hits() != before;
        let allowed_expected = case.expected.iter().any(|s| (200..300).contains(s));
        if ((200..300).contains(&status) && !allowed_expected)
            || (reached && !(proxied && allowed_expected))
        {
            allowed_by_mistake += 1;
        }
        if !case.expected.contains(&status) {
            let head = text.lines().next().unwrap_or("");
            failures.push(format!(
                "[{}] {}\n  expected: one of {:?}\n  got: {status} ({head})",
                case.category, case.name, case.expected
            ));
        } else if reached != (proxied && allowed_expected) {
            failures.push(format!(
                "[{}] {}: upstream reached: {reached}",
                case.category, case.name
            ));
        }
    }
    for (category, n) in &tried {
        println!("header abuse: {category}: {n} cases");
    }
    println!(
        "header abuse: {} cases, {allowed_by_mistake} allowed by mistake",
        cases.len()
    );
    (failures, allowed_by_mistake)
}

fn case(category: &'static str, name: &str, request: Vec<u8>, expected: &'static [u16]) -> Case {
    Case {
        category,
        name: name.to_owned(),
        request,
        expected,
    }
}

#[tokio::test]
async fn credential_header_abuse_is_refused_and_never_reaches_the_upstream() {
    let (h, upstream) = gateway(config()).await;
    let reader = bearer(READER_KEY);
    let admin = bearer(ADMIN_KEY);
    let wrong = bearer("not-a-key-at-all");
    let get = |headers: &[&[u8]]| raw("GET", b"/api/data", headers);
    let big = vec![b'a'; 64 * 1024];
    let big_junk = [b"X-Junk: ".as_slice(), &big].concat();
    let big_auth = [b"Authorization: Bearer ".as_slice(), &big].concat();
    let just_fits = [b"X-Junk: ".as_slice(), &vec![b'a'; 30 * 1024]].concat();
    let many: Vec<Vec<u8>> = (0..150)
        .map(|i| format!("X-H{i}: v").into_bytes())
        .collect();
    let many: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
    let many = [many.as_slice(), &[reader.as_slice()]].concat();
    let with_key = |extra: &[u8]| get(&[reader.as_slice(), extra]);
    let cases = vec![
        case(
            "duplicate Authorization",
            "valid then invalid",
            get(&[&reader, &wrong]),
            &[400],
        ),
        case(
            "duplicate Authorization",
            "invalid then valid",
            get(&[&wrong, &reader]),
            &[400],
        ),
        case(
            "duplicate Authorization",
            "reader then admin",
            get(&[&reader, &admin]),
            &[400],
        ),
        case(
            "duplicate Authorization",
            "valid then Basic",
            get(&[&reader, b"Authorization: Basic dXNlcjpwdw=="]),
            &[400],
        ),
        case(
            "duplicate Authorization",
            "Basic then valid",
            get(&[b"Authorization: Basic dXNlcjpwdw==", &reader]),
            &[400],
        ),
        case(
            "scheme and whitespace",
            "lower-case `bearer` (allowed)",
            get(&[format!("Authorization: bearer {READER_KEY}").as_bytes()]),
            &[200],
        ),
        case(
            "scheme and whitespace",
            "upper-case `BEARER` (allowed)",
            get(&[format!("Authorization: BEARER {READER_KEY}").as_bytes()]),
            &[200],
        ),
        case(
            "scheme and whitespace",
            "trailing whitespace is not part of the value (allowed)",
            get(&[format!("Authorization: Bearer {READER_KEY} \t ").as_bytes()]),
            &[200],
        ),
        case(
            "scheme and whitespace",
            "leading whitespace is not part of the value (allowed)",
            get(&[format!("Authorization:  \tBearer {READER_KEY}").as_bytes()]),
            &[200],
        ),
        case(
            "scheme and whitespace",
            "two spaces after the scheme",
            get(&[format!("Authorization: Bearer  {READER_KEY}").as_bytes()]),
            &[400],
        ),
        case(
            "scheme and whitespace",
            "tab after the scheme",
            get(&[format!("Authorization: Bearer\t{READER_KEY}").as_bytes()]),
            &[401],
        ),
        case(
            "scheme and whitespace",
            "space inside the key",
            get(&[format!("Authorization: Bearer {READER_KEY} x").as_bytes()]),
            &[400],
        ),
        case(
            "scheme and whitespace",
            "empty bearer",
            get(&[b"Authorization: Bearer "]),
            &[400],
        ),
        case(
            "scheme and whitespace",
            "`Bearer` alone",
            get(&[b"Authorization: Bearer"]),
            &[400],
        ),
        case(
            "scheme and whitespace",
            "`Bearer` glued to the key",
            get(&[format!("Authorization: Bearer{READER_KEY}").as_bytes()]),
            &[401],
        ),
        case(
            "scheme and whitespace",
            "empty Authorization",
            get(&[b"Authorization:"]),
            &[401],
        ),
        case(
            "scheme and whitespace",
            "obs-fold continuation line",
            get(&[
                b"Authorization: Bearer",
                format!(" {READER_KEY}").as_bytes(),
            ]),
            &[400],
        ),
        case(
            "scheme and whitespace",
            "vertical tab after the scheme",
            get(&[format!("Authorization: Bearer\x0b{READER_KEY}").as_bytes()]),
            &[400],
        ),
        case(
            "non-UTF-8 and control bytes",
            "Authorization is 0xFF 0xFE",
            get(&[b"Authorization: Bearer \xff\xfe"]),
            &[400],
        ),
        case(
            "non-UTF-8 and control bytes",
            "valid key followed by 0xFF",
            get(&[[reader.as_slice(), b"\xff"].concat().as_slice()]),
            &[400],
        ),
        case(
            "non-UTF-8 and control bytes",
            "Latin-1 scheme",
            get(&[b"Authorization: B\xe9arer x"]),
            &[401],
        ),
        case(
            "non-UTF-8 and control bytes",
            "NUL in Authorization",
            get(&[b"Authorization: Bearer a\x00b"]),
            &[400],
        ),
        case(
            "non-UTF-8 and control bytes",
            "bare CR in Authorization",
            get(&[b"Authorization: Bearer a\rb"]),
            &[400],
        ),
        case(
            "non-UTF-8 and control bytes",
            "0xFF in a header name",
            get(&[&reader, b"X-\xff: 1"]),
            &[400],
        ),
        case(
            "non-UTF-8 and control bytes",
            "non-UTF-8 Origin",
            with_key(b"Origin: http://\xff.example"),
            &[403],
        ),
        case(
            "non-UTF-8 and control bytes",
            "opaque non-UTF-8 in another header (allowed)",
            with_key(b"X-Junk: \xff\xfe\x80"),
            &[200],
        ),
        case(
            "non-UTF-8 and control bytes",
            "non-UTF-8 request target",
            raw("GET", b"/api/\xff", &[&reader]),
            &[400],
        ),
        case(
            "size",
            "64 KiB X-Junk with a valid key",
            with_key(&big_junk),
            &[431, 0],
        ),
        case(
            "size",
            "64 KiB X-Junk without a key",
            get(&[&big_junk]),
            &[431, 0],
        ),
        case("size", "64 KiB Authorization", get(&[&big_auth]), &[431, 0]),
        case("size", "150 header lines", get(&many), &[431, 0]),
        case(
            "size",
            "30 KiB header with a valid key (allowed)",
            with_key(&just_fits),
            &[200],
        ),
    ];
    let (failures, mistakes) = run(&h, &upstream, &cases, true).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(mistakes, 0);
    let after = h
        .request(
            "GET",
            "/api/data",
            &[("authorization", &format!("Bearer {READER_KEY}"))],
            None,
        )
        .await;
    assert_eq!(
        after.status, 200,
        "the gateway still serves after the abuse"
    );
}

#[tokio::test]
async fn forged_identity_and_forwarding_headers_never_reach_the_upstream() {
    let (h, upstream) = gateway(config()).await;
    let forged: [&[u8]; 8] = [
        b"X-Portcullis-Subject: admin",
        b"X-PORTCULLIS-SCOPES: admin",
        b"x-portcullis-provider: forged",
        b"X_Portcullis_Subject: admin",
        b"x_portcullis_scopes: admin",
        b"X-Portcullis_Subject: admin",
        b"X-Forwarded-Proto: https",
        b"X-Forwarded-Host: evil.example",
    ];
    let reader = bearer(READER_KEY);
    for (target, subject, scopes, credential) in [
        (
            b"/api/data".as_slice(),
            "reader",
            "mcp:read",
            Some(reader.as_slice()),
        ),
        (b"/public/page".as_slice(), "anonymous", "", None),
    ] {
        let mut headers: Vec<&[u8]> = forged.to_vec();
        headers.push(b"X-Forwarded-For: 10.9.9.9");
        headers.extend(credential);
        match raw_request(h.addr, raw("GET", target, &headers)).await {
            RawReply::Answered { status: 200, .. } => {}
            other => panic!("expected: 200\ngot: {other:?}"),
        }
        let seen = upstream
            .seen()
            .pop()
            .expect("the request reached the upstream");
        let values = |name: &str| -> Vec<String> {
            seen.headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect()
        };
        assert_eq!(values("x-portcullis-subject"), [subject], "{seen:?}");
        assert_eq!(values("x-portcullis-scopes"), [scopes], "{seen:?}");
        for name in seen.headers.keys() {
            assert!(
                !name.as_str().contains('_'),
                "look-alike `{name}` reached the upstream"
            );
        }
        assert_eq!(values("x-forwarded-proto"), ["http"]);
        assert_eq!(values("x-forwarded-host"), [h.addr.to_string()]);
        let forwarded_for = values("x-forwarded-for").join(",");
        assert!(
            forwarded_for.ends_with("127.0.0.1"),
            "the last hop must be the real peer: {forwarded_for}"
        );
        assert!(
            values("authorization").is_empty(),
            "the credential reached the upstream"
        );
    }
    assert_eq!(upstream.hits(), 2);
}
