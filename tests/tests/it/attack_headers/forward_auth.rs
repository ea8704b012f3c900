//! Forward-auth under abuse: forwarded headers from strangers, and unreadable or abnormal
//! forwarded URIs from a trusted proxy.

use super::{CONFIG, bearer, case, gateway, raw, run, trusting_loopback};
use crate::gateway_harness::READER_KEY;

#[tokio::test]
async fn forward_auth_ignores_forwarded_headers_from_untrusted_peers() {
    let (h, upstream) = gateway(CONFIG).await;
    let reader = bearer(READER_KEY);
    let cases = vec![
        case(
            "forward-auth, untrusted",
            "X-Original-URI naming a public path: /check is judged",
            raw("GET", b"/check", &[b"X-Original-URI: /public/x"]),
            &[403],
        ),
        case(
            "forward-auth, untrusted",
            "X-Forwarded-Uri naming a public path: /check is judged",
            raw("GET", b"/check", &[b"X-Forwarded-Uri: /public/x"]),
            &[403],
        ),
        case(
            "forward-auth, untrusted",
            "Envoy-style /check/admin with a public X-Forwarded-Uri",
            raw("GET", b"/check/admin", &[b"X-Forwarded-Uri: /public/x"]),
            &[401],
        ),
        case(
            "forward-auth, untrusted",
            "reader on /check/api/admin, forwarded as /api/x",
            raw(
                "GET",
                b"/check/api/admin",
                &[
                    &reader,
                    b"X-Forwarded-Uri: /api/x",
                    b"X-Forwarded-Method: GET",
                ],
            ),
            &[403],
        ),
        case(
            "forward-auth, untrusted",
            "X-Forwarded-For from a stranger changes nothing",
            raw("GET", b"/check/admin", &[b"X-Forwarded-For: 127.0.0.1"]),
            &[401],
        ),
        case(
            "forward-auth, untrusted",
            "Envoy-style traversal /check/public/../admin",
            raw("GET", b"/check/public/../admin", &[]),
            &[400],
        ),
        case(
            "forward-auth, untrusted",
            "Envoy-style /check/public/x is judged as /public/x (allowed)",
            raw("GET", b"/check/public/x", &[b"X-Forwarded-Uri: /admin"]),
            &[200],
        ),
    ];
    let (failures, mistakes) = run(&h, &upstream, &cases, false).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(mistakes, 0);
    assert_eq!(upstream.hits(), 0, "forward-auth never proxies");
}

#[tokio::test]
async fn forward_auth_refuses_unreadable_or_abnormal_uris_from_a_trusted_proxy() {
    let (h, upstream) = gateway(&trusting_loopback()).await;
    let check = |headers: &[&[u8]]| raw("GET", b"/check", headers);
    let cases = vec![
        case(
            "forward-auth, trusted",
            "non-UTF-8 X-Original-URI",
            check(&[b"X-Original-URI: /admin/\xff"]),
            &[400],
        ),
        case(
            "forward-auth, trusted",
            "unparseable X-Forwarded-Method",
            check(&[b"X-Forwarded-Method: GE T", b"X-Forwarded-Uri: /admin"]),
            &[400],
        ),
        case(
            "forward-auth, trusted",
            "fragment in X-Forwarded-Uri",
            check(&[b"X-Forwarded-Uri: /admin#x"]),
            &[400],
        ),
        case(
            "forward-auth, trusted",
            "`..;` in X-Forwarded-Uri",
            check(&[b"X-Forwarded-Uri: /public/..;/admin"]),
            &[400],
        ),
        case(
            "forward-auth, trusted",
            "`;` parameter in X-Forwarded-Uri",
            check(&[b"X-Forwarded-Uri: /admin;x"]),
            &[400],
        ),
        case(
            "forward-auth, trusted",
            "absolute URI in X-Forwarded-Uri",
            check(&[b"X-Forwarded-Uri: http://evil.example/public"]),
            &[400],
        ),
        case(
            "forward-auth, trusted",
            "X-Original-URI /admin without a key",
            check(&[b"X-Original-URI: /admin"]),
            &[401],
        ),
        case(
            "forward-auth, trusted",
            "X-Original-URI /public/x (allowed)",
            check(&[b"X-Original-URI: /public/x"]),
            &[200],
        ),
    ];
    let (failures, mistakes) = run(&h, &upstream, &cases, false).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(mistakes, 0);
}
