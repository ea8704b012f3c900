//! Providers written in Python (componentize-py) and JavaScript (componentize-js) against the
//! same `authenticator` world: they give the same verdicts as the Rust partner-token on the
//! same requests, refuse the same bad configs, and a Python guest cannot reach files, sockets,
//! name lookup or the environment through the host's capability-free WASI. A Python guest in
//! `time.sleep` and a JS guest awaiting `setTimeout` (both a WASI clock `poll`, where no epoch
//! check fires) are cut off at their deadline like a Rust one.
//!
//! The components are built by `cargo xtask lang` into `target/guests-lang/`; see
//! [`portcullis_tests::lang::guest`] for when these tests skip (with a printed reason) or fail.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use portcullis::secret::SecretString;
use portcullis::verdict::{DenialKind, Verdict};
use portcullis::wasm::{
    CallError, ComponentSource, Grants, InstanceMode, Limits, LoadError, RuntimeConfig,
    WasmProvider, WasmRuntime,
};
use portcullis_tests::{ProviderSpec, guests, lang, request};
use serde_json::{Value, json};

/// sha256("s3cret") for `acme`, sha256("o:ther") upper case for `globex` (no scopes).
const CREDENTIALS: &str = "\
# partners
acme:sha256:1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0:mcp:read,mcp:write

globex:sha256:873A8C46ADFE0675C6882947888021C6CD3049D71E2715D70634D599C4854E62:
";

/// The three implementations of partner-token; `None` when xtask could not build the
/// other-language ones (the reason is printed).
fn implementations() -> Option<[&'static str; 3]> {
    Some([
        guests::PARTNER_TOKEN,
        lang::guest("partner_token_py.wasm")?,
        lang::guest("partner_token_js.wasm")?,
    ])
}

/// Every provider here runs under the default memory cap (16 MiB), enough to load and answer
/// these few calls (a pooled CPython instance outgrows it over thousands of calls, so the
/// READMEs advise 64 MiB for Python). The call deadline is raised from 20 ms because these tests check
/// answers, not speed, on a machine that may be busy compiling (`BENCHMARKS.md` has the
/// per-call costs).
fn spec(path: &'static str, config: Value, credentials: Option<&str>) -> ProviderSpec {
    let spec = ProviderSpec::new(path)
        .config(config)
        .limits(|l| l.timeout = Duration::from_secs(1));
    match credentials {
        Some(text) => spec.secret("credentials", text),
        None => spec,
    }
}

async fn provider(path: &'static str, config: Value) -> WasmProvider {
    spec(path, config, Some(CREDENTIALS)).ready().await
}

/// One row: the `Authorization` headers sent and the verdict every implementation must give.
struct Case {
    name: &'static str,
    headers: &'static [&'static str],
    expected: Expected,
}

#[derive(Debug, PartialEq)]
enum Expected {
    Allow {
        subject: &'static str,
        scopes: &'static [&'static str],
    },
    Deny(&'static str),
    Abstain,
}

const WRONG: Expected = Expected::Deny("unknown partner or wrong secret");
const MALFORMED: Expected = Expected::Deny("malformed partner token: expected <id>:<secret>");
const ACME: Expected = Expected::Allow {
    subject: "acme",
    scopes: &["mcp:read", "mcp:write"],
};

const CASES: &[Case] = &[
    Case {
        name: "good token",
        headers: &["partner-token acme:s3cret"],
        expected: ACME,
    },
    Case {
        name: "secret with a colon, upper-case hash, no scopes",
        headers: &["partner-token globex:o:ther"],
        expected: Expected::Allow {
            subject: "globex",
            scopes: &[],
        },
    },
    Case {
        name: "scheme in another case",
        headers: &["PARTNER-Token acme:s3cret"],
        expected: ACME,
    },
    Case {
        name: "surrounding and inner spaces",
        headers: &["  partner-token    acme:s3cret  "],
        expected: ACME,
    },
    Case {
        name: "our scheme in a later header",
        headers: &["Bearer abc", "partner-token acme:s3cret"],
        expected: ACME,
    },
    Case {
        name: "bad secret",
        headers: &["partner-token acme:nope"],
        expected: WRONG,
    },
    Case {
        name: "unknown partner",
        headers: &["partner-token who:s3cret"],
        expected: WRONG,
    },
    Case {
        name: "secret of another partner",
        headers: &["partner-token globex:s3cret"],
        expected: WRONG,
    },
    Case {
        name: "first header of our scheme decides",
        headers: &["partner-token acme:nope", "partner-token acme:s3cret"],
        expected: WRONG,
    },
    Case {
        name: "missing header",
        headers: &[],
        expected: Expected::Abstain,
    },
    Case {
        name: "other scheme",
        headers: &["Bearer partner-token"],
        expected: Expected::Abstain,
    },
    Case {
        name: "scheme as a prefix of a longer word",
        headers: &["partner-tokens acme:s3cret"],
        expected: Expected::Abstain,
    },
    Case {
        name: "tab instead of a space",
        headers: &["partner-token\tacme:s3cret"],
        expected: Expected::Abstain,
    },
    Case {
        name: "scheme alone",
        headers: &["partner-token"],
        expected: MALFORMED,
    },
    Case {
        name: "no colon",
        headers: &["partner-token acme"],
        expected: MALFORMED,
    },
    Case {
        name: "empty id",
        headers: &["partner-token :s3cret"],
        expected: MALFORMED,
    },
    Case {
        name: "empty secret",
        headers: &["partner-token acme:"],
        expected: MALFORMED,
    },
];

fn observed(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Allow(id) => format!("allow {} {:?} {:?}", id.subject, id.scopes, id.claims),
        Verdict::Deny(d) => format!("deny {:?} {} {}", d.kind, d.code_str(), d.reason),
        Verdict::Abstain => "abstain".into(),
    }
}

fn assert_expected(path: &str, case: &Case, verdict: &Verdict) {
    let ok = match (&case.expected, verdict) {
        (Expected::Allow { subject, scopes }, Verdict::Allow(id)) => {
            id.subject == *subject
                && id.scopes == *scopes
                && id.claims == [("client_id".to_owned(), (*subject).to_owned())]
        }
        (Expected::Deny(reason), Verdict::Deny(d)) => {
            d.kind == DenialKind::Unauthenticated
                && d.code_str() == "invalid_token"
                && d.reason == *reason
        }
        (Expected::Abstain, Verdict::Abstain) => true,
        _ => false,
    };
    assert!(
        ok,
        "{path}, case `{}`\nexpected: {:?}\ngot: {}",
        case.name,
        case.expected,
        observed(verdict)
    );
}

#[tokio::test]
async fn python_and_js_partner_tokens_give_the_rust_verdicts() {
    let Some(paths) = implementations() else {
        return;
    };
    for path in paths {
        let provider = provider(path, json!({})).await;
        for case in CASES {
            let headers: Vec<(&str, &str)> =
                case.headers.iter().map(|h| ("authorization", *h)).collect();
            let verdict = provider
                .authenticate(&request("POST", "/mcp", &headers))
                .await
                .unwrap_or_else(|e| panic!("{path}, case `{}`: {e}", case.name));
            assert_expected(path, case, &verdict);
        }
    }
}

#[tokio::test]
async fn python_and_js_honour_a_configured_scheme_like_rust() {
    let Some(paths) = implementations() else {
        return;
    };
    for path in paths {
        let provider = provider(path, json!({ "scheme": "Acme" })).await;
        let ours = request("GET", "/", &[("authorization", "acme acme:s3cret")]);
        let default = request(
            "GET",
            "/",
            &[("authorization", "partner-token acme:s3cret")],
        );
        let ours = provider.authenticate(&ours).await.expect("verdict");
        assert!(
            matches!(&ours, Verdict::Allow(id) if id.subject == "acme"),
            "{path}\nexpected: allow acme\ngot: {}",
            observed(&ours)
        );
        let default = provider.authenticate(&default).await.expect("verdict");
        assert!(
            matches!(default, Verdict::Abstain),
            "{path}\nexpected: abstain\ngot: {}",
            observed(&default)
        );
    }
}

/// The provider's own message, after the host's prefix (which names the provider).
async fn configure_error(path: &'static str, config: Value, credentials: Option<&str>) -> String {
    match spec(path, config, credentials).build().await {
        Err(LoadError::Configure { reason, .. }) => match reason.split_once("configure failed: ") {
            Some((_, message)) => message.to_owned(),
            None => panic!("{path}: expected `configure failed: …`, got: {reason}"),
        },
        Err(other) => panic!("{path}: expected a configure error, got: {other}"),
        Ok(_) => panic!("{path}: expected a configure error, but the provider loaded"),
    }
}

#[tokio::test]
async fn python_and_js_refuse_the_configs_rust_refuses_with_the_same_message() {
    let Some(paths) = implementations() else {
        return;
    };
    let acme = CREDENTIALS.lines().nth(1).expect("the acme line");
    let twice = format!("{acme}\n{acme}");
    let cases: [(Value, Option<&str>); 7] = [
        (json!({}), None),
        (json!({}), Some("# nobody\n\n")),
        (json!({}), Some("a:sha256:abcd:x")),
        (json!({}), Some("# c\n\nb:md5:00:x")),
        (json!({}), Some(":sha256:00")),
        (json!({}), Some(&twice)),
        (json!({ "scheme": "two words" }), Some(CREDENTIALS)),
    ];
    for (config, credentials) in cases {
        let rust = configure_error(guests::PARTNER_TOKEN, config.clone(), credentials).await;
        for path in &paths[1..] {
            let other = configure_error(path, config.clone(), credentials).await;
            assert_eq!(
                other, rust,
                "{path}, config {config}, credentials {credentials:?}"
            );
        }
    }
    // serde adds the position (`at line 1 column 9`); the rest of the message is the same.
    for path in paths {
        let reason = configure_error(path, json!({ "schema": "x" }), Some(CREDENTIALS)).await;
        assert!(
            reason.contains("invalid config: unknown field `schema`, expected `scheme`"),
            "{path}\ngot: {reason}"
        );
    }
}

#[tokio::test]
async fn pooled_python_and_js_instances_are_reused_across_calls() {
    let Some(paths) = implementations() else {
        return;
    };
    for path in &paths[1..] {
        let provider = spec(path, json!({}), Some(CREDENTIALS))
            .mode(InstanceMode::Pooled { max_idle: 2 })
            .ready()
            .await;
        let req = request(
            "GET",
            "/",
            &[("authorization", "partner-token acme:s3cret")],
        );
        for _ in 0..20 {
            let verdict = provider.authenticate(&req).await.expect("verdict");
            assert!(matches!(verdict, Verdict::Allow(_)), "{path}: {verdict:?}");
            assert_eq!(
                provider.idle_instances(),
                1,
                "{path}: one instance serves all"
            );
        }
    }
}

#[tokio::test]
async fn a_python_guest_cannot_open_files_sockets_or_read_the_environment() {
    let Some(probe) = lang::guest("sandbox_probe_py.wasm") else {
        return;
    };
    let provider = spec(probe, json!({}), None).ready().await;
    let verdict = provider
        .authenticate(&request("GET", "/", &[]))
        .await
        .expect("the probe answers: every attempt fails inside the guest");
    let Verdict::Deny(denial) = verdict else {
        panic!("expected: deny sandbox_held\ngot: {}", observed(&verdict));
    };
    assert_eq!(
        denial.code_str(),
        "sandbox_held",
        "reason: {}",
        denial.reason
    );
    let attempts: Vec<&str> = denial.reason.split("; ").collect();
    for what in [
        "open /etc/passwd",
        "list /",
        "list .",
        "tcp connect 127.0.0.1:80",
        "udp send 127.0.0.1:53",
        "resolve localhost",
        "environment",
    ] {
        let attempt = attempts
            .iter()
            .find(|a| a.starts_with(&format!("{what}: ")))
            .unwrap_or_else(|| panic!("no outcome for `{what}` in: {}", denial.reason));
        // Each failure is a Python exception raised from a WASI error code, not a missing
        // module or function: the call reached the host and the host refused it.
        assert!(
            !attempt.contains("ModuleNotFoundError") && !attempt.contains("AttributeError"),
            "`{what}` did not reach the host: {attempt}"
        );
    }
}

#[tokio::test]
async fn python_and_js_are_compiled_once_then_loaded_from_the_artifact_cache() {
    let Some(paths) = implementations() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The production pool settings (only fewer slots): a runtime restarted on a warm cache
    // loads these components without compiling them, and they answer.
    let config = || RuntimeConfig {
        max_instances: 10,
        artifact_dir: Some(dir.path().join("cache")),
        ..RuntimeConfig::default()
    };
    for path in &paths[1..] {
        let path = Path::new(path);
        let first = WasmRuntime::new(config()).expect("runtime");
        let compiled = first.load_file(path).expect("compiles");
        assert_eq!(
            compiled.source,
            ComponentSource::Compiled,
            "{}",
            path.display()
        );
        drop(first);
        let restarted = WasmRuntime::new(config()).expect("runtime");
        let cached = restarted.load_file(path).expect("loads");
        assert_eq!(cached.source, ComponentSource::Cached, "{}", path.display());
        let secrets = HashMap::from([("credentials".to_owned(), SecretString::new(CREDENTIALS))]);
        let limits = Limits {
            timeout: Duration::from_secs(1),
            ..Limits::default()
        };
        let provider = WasmProvider::new(
            cached,
            Grants::new("partner", secrets, false, limits),
            "{}".into(),
            InstanceMode::default(),
        )
        .await
        .expect("configures");
        let req = request(
            "GET",
            "/",
            &[("authorization", "partner-token acme:s3cret")],
        );
        let verdict = provider.authenticate(&req).await.expect("verdict");
        assert!(
            matches!(&verdict, Verdict::Allow(id) if id.subject == "acme"),
            "{}: {}",
            path.display(),
            observed(&verdict)
        );
    }
}

/// The sleepers: a Python guest in `time.sleep`, a JS guest awaiting `setTimeout`. Each
/// waits in a WASI `poll` on a monotonic clock, where no epoch check fires.
fn sleepers() -> Option<[(&'static str, &'static str); 2]> {
    Some([
        (lang::guest("sleeper_py.wasm")?, "py-slept"),
        (lang::guest("sleeper_js.wasm")?, "js-slept"),
    ])
}

/// Generous: proves a 30 s sleep was cut off, on a machine that may be busy compiling.
const CUT_OFF: Duration = Duration::from_secs(5);

#[tokio::test]
async fn python_and_js_guests_sleeping_in_a_host_wait_are_cut_off_and_replaced() {
    let Some(sleepers) = sleepers() else { return };
    for (path, subject) in sleepers {
        let provider = ProviderSpec::new(path)
            .config(json!({ "ms": 30_000 }))
            .limits(|l| {
                // Answering is quick; the deadline is raised from 20 ms only because a busy
                // machine may be slow to create the replacement instance's first answer.
                l.timeout = Duration::from_millis(200);
                l.configure_timeout = Duration::from_secs(10);
                l.memory_bytes = 64 << 20;
            })
            .ready()
            .await;
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(20),
            provider.authenticate(&request("GET", "/", &[("x-sleep", "1")])),
        )
        .await
        .unwrap_or_else(|_| panic!("{path}: still sleeping after 20 s"));
        let took = started.elapsed();
        assert!(
            matches!(outcome, Err(CallError::Timeout { .. })),
            "{path}\nexpected: timeout\ngot: {outcome:?}"
        );
        assert!(took < CUT_OFF, "{path}: cut off after {took:?}");
        assert_eq!(
            provider.idle_instances(),
            0,
            "{path}: the instance is dropped"
        );
        match provider.authenticate(&request("GET", "/", &[])).await {
            Ok(Verdict::Allow(id)) => assert_eq!(id.subject, subject, "{path}"),
            other => panic!("{path}\nexpected: allow from a new instance\ngot: {other:?}"),
        }
    }
}

#[tokio::test]
async fn python_and_js_guests_sleeping_in_configure_are_refused_within_the_configure_timeout() {
    let Some(sleepers) = sleepers() else { return };
    for (path, _) in sleepers {
        // Compile first (seconds for these components): the bound is on configuring.
        portcullis_tests::component(path);
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(30),
            ProviderSpec::new(path)
                .config(json!({ "ms": 30_000, "where": "configure" }))
                .limits(|l| {
                    l.configure_timeout = Duration::from_secs(2);
                    l.memory_bytes = 64 << 20;
                })
                .build(),
        )
        .await
        .unwrap_or_else(|_| panic!("{path}: still configuring after 30 s"));
        let took = started.elapsed();
        match outcome {
            Err(LoadError::Configure { reason, .. }) => {
                assert!(reason.contains("timed out"), "{path}: {reason}")
            }
            other => panic!("{path}\nexpected: configure timed out\ngot: {other:?}"),
        }
        assert!(
            took < Duration::from_secs(10),
            "{path}: refused after {took:?}"
        );
    }
}
