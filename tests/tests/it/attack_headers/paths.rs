//! Path tricks against path rules and a public (anonymous) route: each refused with 400, or
//! judged as the path every server would read, never a more privileged one.

use super::{bearer, case, config, gateway, raw, run};
use crate::gateway_harness::{ADMIN_KEY, READER_KEY};

/// The path an upstream that decodes once, drops `;…` parameters, folds `//` and resolves
/// dot segments would route `target` to: the most generous reading of it.
fn upstream_view(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let mut decoded = Vec::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    let decoded = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment.split(';').next().unwrap_or("") {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

#[tokio::test]
async fn path_tricks_are_refused_or_judged_as_the_normalised_path() {
    let (h, upstream) = gateway(config()).await;
    let reader = bearer(READER_KEY);
    let anon = |target: &'static [u8]| raw("GET", target, &[]);
    let as_reader = |target: &'static [u8]| raw("GET", target, &[&reader]);
    let cases = vec![
        case(
            "paths, anonymous",
            "/public/x (allowed)",
            anon(b"/public/x"),
            &[200],
        ),
        case("paths, anonymous", "/admin", anon(b"/admin"), &[401]),
        case(
            "paths, anonymous",
            "/public/../admin",
            anon(b"/public/../admin"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/public/%2e%2e/admin",
            anon(b"/public/%2e%2e/admin"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/public/%2E%2E/admin",
            anon(b"/public/%2E%2E/admin"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/public/.%2e/admin",
            anon(b"/public/.%2e/admin"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/public/..%2Fadmin",
            anon(b"/public/..%2Fadmin"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/public%2Fadmin",
            anon(b"/public%2Fadmin"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/public%2f..%2fadmin",
            anon(b"/public%2f..%2fadmin"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/public/..%5Cadmin",
            anon(b"/public/..%5Cadmin"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/public/..\\admin",
            anon(b"/public/..\\admin"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/public/..;/admin",
            anon(b"/public/..;/admin"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/public;x/../admin",
            anon(b"/public;x/../admin"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/admin;jsessionid=x",
            anon(b"/admin;jsessionid=x"),
            &[400],
        ),
        case("paths, anonymous", "//admin", anon(b"//admin"), &[400]),
        case(
            "paths, anonymous",
            "/public//admin",
            anon(b"/public//admin"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/public/./x",
            anon(b"/public/./x"),
            &[400],
        ),
        case("paths, anonymous", "/%61dmin", anon(b"/%61dmin"), &[400]),
        case(
            "paths, anonymous",
            "/public/%00/x",
            anon(b"/public/%00/x"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/ADMIN (a case-blind upstream reads the admin route: refused)",
            anon(b"/ADMIN"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/Admin/x (a case-blind upstream reads the admin route: refused)",
            anon(b"/Admin/x"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/admin. (a case-blind or dot-dropping upstream reads the admin route: refused)",
            anon(b"/admin."),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/admin../x (a case-blind or dot-dropping upstream reads the admin route: refused)",
            anon(b"/admin../x"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/admin%20 (another path; no route)",
            anon(b"/admin%20"),
            &[404],
        ),
        case(
            "paths, anonymous",
            "/admin#frag: fragment dropped, /admin judged",
            anon(b"/admin#frag"),
            &[401],
        ),
        case(
            "paths, anonymous",
            "/public#/../admin: fragment dropped (allowed as /public)",
            anon(b"/public#/../admin"),
            &[200],
        ),
        case(
            "paths, anonymous",
            "/public/x?/../../admin: query is not path (allowed)",
            anon(b"/public/x?/../../admin"),
            &[200],
        ),
        case(
            "paths, anonymous",
            "/public/%252e%252e/admin: an upstream decoding twice reads `..` (refused)",
            anon(b"/public/%252e%252e/admin"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "/public/%ff: opaque (allowed)",
            anon(b"/public/%ff"),
            &[200],
        ),
        case(
            "paths, anonymous",
            "/admin/../public (refused even downhill)",
            anon(b"/admin/../public"),
            &[400],
        ),
        case(
            "paths, anonymous",
            "absolute-form http://evil.example/admin",
            anon(b"http://evil.example/admin"),
            &[401],
        ),
        case("paths, anonymous", "asterisk-form *", anon(b"*"), &[400]),
        case(
            "paths, anonymous",
            "no leading slash",
            anon(b"admin"),
            &[400],
        ),
        case(
            "paths, reader",
            "/api/x (allowed)",
            as_reader(b"/api/x"),
            &[200],
        ),
        case(
            "paths, reader",
            "/api/admin",
            as_reader(b"/api/admin"),
            &[403],
        ),
        case(
            "paths, reader",
            "/api/admin/",
            as_reader(b"/api/admin/"),
            &[403],
        ),
        case(
            "paths, reader",
            "/api/admin/x?y",
            as_reader(b"/api/admin/x?y"),
            &[403],
        ),
        case(
            "paths, reader",
            "/api/admin;x",
            as_reader(b"/api/admin;x"),
            &[400],
        ),
        case(
            "paths, reader",
            "/api/x/../admin",
            as_reader(b"/api/x/../admin"),
            &[400],
        ),
        case(
            "paths, reader",
            "/api/./admin",
            as_reader(b"/api/./admin"),
            &[400],
        ),
        case(
            "paths, reader",
            "/api//admin",
            as_reader(b"/api//admin"),
            &[400],
        ),
        case(
            "paths, reader",
            "/api/%61dmin",
            as_reader(b"/api/%61dmin"),
            &[400],
        ),
        case(
            "paths, reader",
            "/api/admin%2fx",
            as_reader(b"/api/admin%2fx"),
            &[400],
        ),
        case(
            "paths, reader",
            "/api/admin#x: fragment dropped, /api/admin judged",
            as_reader(b"/api/admin#x"),
            &[403],
        ),
        case(
            "paths, reader",
            "/API/admin (a case-blind or dot-dropping upstream reads the admin route: refused)",
            as_reader(b"/API/admin"),
            &[400],
        ),
        case(
            "paths, reader",
            "/api/Admin: a case-blind upstream reads the admin rule's path (refused)",
            as_reader(b"/api/Admin"),
            &[400],
        ),
        case(
            "paths, reader",
            "/api/admin.: an upstream dropping the dot reads the admin rule's path (refused)",
            as_reader(b"/api/admin."),
            &[400],
        ),
        case(
            "paths, admin",
            "/admin with the admin key (allowed)",
            raw("GET", b"/admin", &[&bearer(ADMIN_KEY)]),
            &[200],
        ),
    ];
    let (failures, mistakes) = run(&h, &upstream, &cases, true).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(mistakes, 0);
    // What the allowed ones sent on: an upstream reading paths as generously as any server
    // does still never lands the anonymous or reader requests on an admin path.
    let seen = upstream.seen();
    assert_eq!(
        seen.len(),
        cases.iter().filter(|c| c.expected == [200]).count()
    );
    for request in &seen {
        let view = upstream_view(&request.target);
        let subject = request
            .headers
            .get("x-portcullis-subject")
            .map(|v| v.as_bytes());
        let privileged = view == "/admin"
            || view.starts_with("/admin/")
            || view == "/api/admin"
            || view.starts_with("/api/admin/");
        assert!(
            !privileged || subject == Some(b"admin".as_slice()),
            "{} {} (read as {view}) reached the upstream as {subject:?}",
            request.method,
            request.target
        );
    }
}
