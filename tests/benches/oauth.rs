//! The authorization server's costs, each beside a baseline from the same run:
//!
//! - `issue`: one `client_credentials` token through the gateway's whole handler
//!   (`Gateway::handle`, no socket: form parsing, Basic client authentication, claims,
//!   Ed25519 signature, audit line off) against a bare `ring` Ed25519 signature of a
//!   token-sized message.
//! - `validate`: the same issued token decided on a route whose chain is the `issued`
//!   provider, and by a policy whose chain is a `jwt` validator holding the server's JWKS
//!   (built directly: config refuses a `jwt` provider for the gateway's own issuer): first
//!   sight of a token (a pool of 4 096 tokens cycled, more than either verified-token cache
//!   holds) and a repeated token (cache hit).
//!
//! Run: `cargo bench -p portcullis-tests --bench oauth`.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt as _;
use portcullis::engine::api_key::hash_key;
use portcullis::engine::jwt::{JwtSettings, JwtValidator};
use portcullis::engine::{Chain, ChainEntry, OnDeny, Policy, Rules};
use portcullis::gateway::{ConnInfo, Gateway, Site};
use portcullis::observability::Metrics;
use portcullis::verdict::DenialKind;
use portcullis_tests::oauth::TestKey;
use portcullis_tests::request;
use ring::signature::Ed25519KeyPair;

const PUBLIC: &str = "http://127.0.0.1:9";
const SECRET: &str = "pcs_bench-secret-0000000000000000000000000";
const POOL: usize = 4096;

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::ed25519("k1");
    let pair = Ed25519KeyPair::from_pkcs8(&key.pkcs8).expect("parse");
    let key_file = dir.path().join("k1.pem");
    std::fs::write(&key_file, key.pem()).expect("write");
    let jwks = key.jwks();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "{PUBLIC}"

[authorization_server]
max_token_lifetime_secs = 86400

[[authorization_server.keys]]
kid = "k1"
algorithm = "EdDSA"
private_key = "file://{key}"

[[authorization_server.clients]]
id = "bench"
secret_hash = "{hash}"
scopes = ["mcp:read"]
token_lifetime_secs = 86400

[providers.issued]
type = "issued"

[[routes]]
path = "/a"
upstream = "http://127.0.0.1:9/a"
chain = ["issued"]
mcp = false
"#,
        key = key_file.display(),
        hash = hash_key(SECRET),
    );
    let config =
        portcullis::config::load_str(&text, "<bench>", dir.path()).expect("the config loads");
    let assembled = rt
        .block_on(portcullis::config::assemble(
            &config,
            None,
            &Default::default(),
        ))
        .expect("assembles");
    let gateway = Gateway::new(Site::new(&config, assembled), Arc::new(Metrics::new()));
    let conn = ConnInfo::new(Some("127.0.0.1:40000".parse().expect("addr")), None, false);
    let basic = format!("Basic {}", STANDARD.encode(format!("bench:{SECRET}")));
    let token_request = || {
        http::Request::post("/oauth/token")
            .header("authorization", &basic)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(portcullis::gateway::body::full(format!(
                "grant_type=client_credentials&resource={PUBLIC}/a"
            )))
            .expect("request")
    };
    let issue = || async {
        let response = gateway.handle(token_request(), &conn).await;
        assert_eq!(response.status(), 200);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        body["access_token"].as_str().expect("token").to_owned()
    };

    let mut group = c.benchmark_group("issue");
    let message = rt.block_on(issue());
    let message = message.rsplit_once('.').expect("jws").0.as_bytes().to_vec();
    group.bench_function("bare Ed25519 signature (baseline)", |b| {
        b.iter(|| pair.sign(&message))
    });
    group.bench_function("client_credentials through the token endpoint", |b| {
        b.to_async(&rt).iter(issue)
    });
    group.finish();

    let pool: Vec<String> = (0..POOL).map(|_| rt.block_on(issue())).collect();
    let contexts = |route: &str| {
        pool.iter()
            .map(|token| {
                request(
                    "GET",
                    route,
                    &[("authorization", &format!("Bearer {token}"))],
                )
            })
            .collect::<Vec<_>>()
    };
    let site = gateway.site();
    let route = |path: &str| site.routes.iter().find(|r| r.path == path).expect("route");
    let issued = &route("/a").policy;
    let settings: JwtSettings = serde_json::from_value(serde_json::json!({
        "issuer": PUBLIC, "audience": format!("{PUBLIC}/a"), "jwks": jwks.to_string(),
    }))
    .expect("settings");
    let jwt = Policy {
        chain: Chain::new(
            vec![ChainEntry::One {
                provider: Arc::new(JwtValidator::new("jwt", settings).expect("validator")),
                on_deny: OnDeny::Stop,
            }],
            DenialKind::Unauthenticated,
        ),
        rules: Rules::default(),
        authorizers: vec![],
        on_error: DenialKind::Forbidden,
    };
    let ctxs = contexts("/a");
    for policy in [issued, &jwt] {
        let outcome = rt.block_on(policy.decide(&ctxs[0]));
        assert!(
            matches!(outcome.decision, portcullis::engine::Decision::Allow { .. }),
            "{:?}",
            outcome.decision
        );
    }
    let mut group = c.benchmark_group("validate");
    for (name, policy) in [("issued provider", issued), ("jwt provider", &jwt)] {
        let mut next = 0;
        group.bench_function(format!("{name}, first sight of a token"), |b| {
            b.to_async(&rt).iter(|| {
                next = (next + 1) % POOL;
                policy.decide(&ctxs[next])
            })
        });
        group.bench_function(format!("{name}, repeated token"), |b| {
            b.to_async(&rt).iter(|| policy.decide(&ctxs[0]))
        });
    }
    group.finish();
}

criterion_group!(oauth, benches);
criterion_main!(oauth);
