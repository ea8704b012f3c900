//! Forward-auth under abuse: checks from strangers, another proxy family's headers, and
//! missing, repeated, unreadable or abnormal headers of the configured family.

use super::{bearer, case, config, forward_auth_behind, gateway, raw, run};
use crate::gateway_harness::{ADMIN_KEY, READER_KEY};

const XFF: &[u8] = b"X-Forwarded-For: 198.51.100.1";

#[tokio::test]
async fn forward_auth_answers_no_stranger() {
    // 127.0.0.1 (this test) is not among the trusted proxies.
    let (h, upstream) = gateway(forward_auth_behind("envoy", "10.0.0.0/8")).await;
    let reader = bearer(READER_KEY);
    let cases = vec![
        case(
            "forward-auth, stranger",
            "Envoy-style check of a public path",
            raw("GET", b"/check/public/x", &[XFF]),
            &[403],
        ),
        case(
            "forward-auth, stranger",
            "a key probed through the check (the oracle)",
            raw("GET", b"/check/api/x", &[&reader, XFF]),
            &[403],
        ),
        case(
            "forward-auth, stranger",
            "X-Forwarded-For naming a trusted proxy",
            raw("GET", b"/check/public/x", &[b"X-Forwarded-For: 10.0.0.1"]),
            &[403],
        ),
        case(
            "forward-auth, stranger",
            "X-Original-URI naming a public path",
            raw("GET", b"/check", &[b"X-Original-URI: /public/x", XFF]),
            &[403],
        ),
    ];
    let (failures, mistakes) = run(&h, &upstream, &cases, false).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(mistakes, 0);
    assert_eq!(upstream.hits(), 0, "forward-auth never proxies");
}

#[tokio::test]
async fn forward_auth_off_by_default_is_no_endpoint() {
    let (h, upstream) = gateway(config()).await;
    let cases = vec![
        case(
            "forward-auth, off",
            "Envoy-style check",
            raw("GET", b"/check/public/x", &[XFF]),
            &[404],
        ),
        case(
            "forward-auth, off",
            "nginx-style check",
            raw("GET", b"/check", &[b"X-Original-URI: /public/x", XFF]),
            &[404],
        ),
    ];
    let (failures, mistakes) = run(&h, &upstream, &cases, false).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(mistakes, 0);
}

#[tokio::test]
async fn forward_auth_behind_nginx_reads_only_nginx_headers() {
    let (h, upstream) = gateway(forward_auth_behind("nginx", "127.0.0.1")).await;
    let admin = bearer(ADMIN_KEY);
    let check = |headers: &[&[u8]]| raw("GET", b"/check", headers);
    let method = b"X-Original-Method: GET".as_slice();
    let cases = vec![
        case(
            "forward-auth, nginx, other family",
            "X-Forwarded-Uri naming a public path",
            check(&[
                method,
                b"X-Original-URI: /admin",
                b"X-Forwarded-Uri: /public/x",
                XFF,
            ]),
            &[403],
        ),
        case(
            "forward-auth, nginx, other family",
            "X-Forwarded-Method",
            check(&[
                method,
                b"X-Original-URI: /admin",
                b"X-Forwarded-Method: GET",
                XFF,
            ]),
            &[403],
        ),
        case(
            "forward-auth, nginx, other family",
            "only X-Forwarded-Uri, with an admin key",
            check(&[&admin, b"X-Forwarded-Uri: /admin", XFF]),
            &[403],
        ),
        case(
            "forward-auth, nginx, ambiguous",
            "X-Original-URI twice",
            check(&[
                method,
                b"X-Original-URI: /admin",
                b"X-Original-URI: /public/x",
                XFF,
            ]),
            &[400],
        ),
        case(
            "forward-auth, nginx, ambiguous",
            "X-Original-Method twice",
            check(&[
                method,
                b"X-Original-Method: POST",
                b"X-Original-URI: /public/x",
                XFF,
            ]),
            &[400],
        ),
        case(
            "forward-auth, nginx, ambiguous",
            "X-Forwarded-For twice",
            check(&[
                method,
                b"X-Original-URI: /public/x",
                XFF,
                b"X-Forwarded-For: 10.0.0.1",
            ]),
            &[400],
        ),
        case(
            "forward-auth, nginx, missing",
            "no X-Original-URI: /check is not judged instead",
            check(&[method, XFF]),
            &[400],
        ),
        case(
            "forward-auth, nginx, missing",
            "no X-Original-Method",
            check(&[b"X-Original-URI: /public/x", XFF]),
            &[400],
        ),
        case(
            "forward-auth, nginx, missing",
            "no X-Forwarded-For",
            check(&[method, b"X-Original-URI: /public/x"]),
            &[400],
        ),
        case(
            "forward-auth, nginx, unreadable",
            "non-UTF-8 X-Original-URI",
            check(&[method, b"X-Original-URI: /admin/\xff", XFF]),
            &[400],
        ),
        case(
            "forward-auth, nginx, unreadable",
            "unparseable X-Original-Method",
            check(&[b"X-Original-Method: GE T", b"X-Original-URI: /admin", XFF]),
            &[400],
        ),
        case(
            "forward-auth, nginx, unreadable",
            "lower-case X-Original-Method",
            check(&[b"X-Original-Method: get", b"X-Original-URI: /public/x", XFF]),
            &[400],
        ),
        case(
            "forward-auth, nginx, unreadable",
            "X-Forwarded-For ending in `unknown`",
            check(&[
                method,
                b"X-Original-URI: /public/x",
                b"X-Forwarded-For: 10.0.0.1, unknown",
            ]),
            &[400],
        ),
        case(
            "forward-auth, nginx, abnormal URI",
            "fragment",
            check(&[method, b"X-Original-URI: /admin#x", XFF]),
            &[400],
        ),
        case(
            "forward-auth, nginx, abnormal URI",
            "`..;`",
            check(&[method, b"X-Original-URI: /public/..;/admin", XFF]),
            &[400],
        ),
        case(
            "forward-auth, nginx, abnormal URI",
            "`;` parameter",
            check(&[method, b"X-Original-URI: /admin;x", XFF]),
            &[400],
        ),
        case(
            "forward-auth, nginx, abnormal URI",
            "absolute URI",
            check(&[method, b"X-Original-URI: http://evil.example/public", XFF]),
            &[400],
        ),
        case(
            "forward-auth, nginx, abnormal URI",
            "`..` segment",
            check(&[method, b"X-Original-URI: /public/../admin", XFF]),
            &[400],
        ),
        case(
            "forward-auth, nginx, judged",
            "Envoy-style suffix is not the original: X-Original-URI /admin is",
            raw(
                "GET",
                b"/check/public/x",
                &[method, b"X-Original-URI: /admin", XFF],
            ),
            &[401],
        ),
        case(
            "forward-auth, nginx, judged",
            "X-Original-URI /admin without a key",
            check(&[method, b"X-Original-URI: /admin", XFF]),
            &[401],
        ),
        case(
            "forward-auth, nginx, judged",
            "X-Original-URI /public/x",
            check(&[method, b"X-Original-URI: /public/x", XFF]),
            &[200],
        ),
        case(
            "forward-auth, nginx, judged",
            "admin key on X-Original-URI /admin",
            check(&[&admin, method, b"X-Original-URI: /admin", XFF]),
            &[200],
        ),
    ];
    let (failures, mistakes) = run(&h, &upstream, &cases, false).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(mistakes, 0);
}

#[tokio::test]
async fn forward_auth_behind_envoy_reads_the_check_path_and_nothing_else() {
    let (h, upstream) = gateway(forward_auth_behind("envoy", "127.0.0.1")).await;
    let reader = bearer(READER_KEY);
    let cases = vec![
        case(
            "forward-auth, envoy, other family",
            "/check/admin with X-Forwarded-Uri naming a public path",
            raw(
                "GET",
                b"/check/admin",
                &[b"X-Forwarded-Uri: /public/x", XFF],
            ),
            &[403],
        ),
        case(
            "forward-auth, envoy, other family",
            "/check/admin with X-Original-URI naming a public path",
            raw("GET", b"/check/admin", &[b"X-Original-URI: /public/x", XFF]),
            &[403],
        ),
        case(
            "forward-auth, envoy, ambiguous",
            "no original path after /check",
            raw("GET", b"/check", &[XFF]),
            &[400],
        ),
        case(
            "forward-auth, envoy, ambiguous",
            "lower-case method",
            raw("get", b"/check/public/x", &[XFF]),
            &[400],
        ),
        case(
            "forward-auth, envoy, missing",
            "no X-Forwarded-For",
            raw("GET", b"/check/public/x", &[]),
            &[400],
        ),
        case(
            "forward-auth, envoy, abnormal URI",
            "traversal /check/public/../admin",
            raw("GET", b"/check/public/../admin", &[XFF]),
            &[400],
        ),
        case(
            "forward-auth, envoy, judged",
            "reader on /check/api/admin",
            raw("GET", b"/check/api/admin", &[&reader, XFF]),
            &[403],
        ),
        case(
            "forward-auth, envoy, judged",
            "/check/admin without a key",
            raw("GET", b"/check/admin", &[XFF]),
            &[401],
        ),
        case(
            "forward-auth, envoy, judged",
            "/check/public/x",
            raw("GET", b"/check/public/x", &[XFF]),
            &[200],
        ),
    ];
    let (failures, mistakes) = run(&h, &upstream, &cases, false).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(mistakes, 0);
}
