//! Hostile and buggy guests: every failure is an error (which the chain turns into a denial),
//! the failed instance is discarded, and the host keeps serving.

use std::time::{Duration, Instant};

use portcullis::verdict::Verdict;
use portcullis::wasm::{CallError, InstanceMode, LoadError};
use portcullis_tests::{ProviderSpec, guests, request};
use serde_json::json;

fn hostile(mode: &str) -> ProviderSpec {
    ProviderSpec::new(guests::HOSTILE).config(json!({ "mode": mode }))
}

/// After any failure, a well-behaved provider on the same runtime still answers.
async fn good_provider_still_answers() {
    let good = hostile("ok").ready().await;
    let verdict = good
        .authenticate(&request("GET", "/", &[("x-test", "1")]))
        .await
        .expect("the good provider answers");
    match verdict {
        Verdict::Allow(id) => assert_eq!(id.subject, "hostile-ok"),
        other => panic!("expected: allow\ngot: {other:?}"),
    }
}

#[tokio::test]
async fn infinite_loop_is_stopped_at_its_deadline() {
    let provider = hostile("loop")
        .limits(|l| l.timeout = Duration::from_millis(50))
        .ready()
        .await;
    for _ in 0..2 {
        let started = Instant::now();
        let err = provider
            .authenticate(&request("GET", "/", &[]))
            .await
            .expect_err("a loop never answers");
        let elapsed = started.elapsed();
        assert!(matches!(err, CallError::Timeout { .. }), "got: {err}");
        assert!(
            elapsed >= Duration::from_millis(50),
            "stopped early: {elapsed:?}"
        );
        // Generous bound: this asserts "interrupted", not a speed target.
        assert!(
            elapsed < Duration::from_secs(2),
            "not interrupted: {elapsed:?}"
        );
    }
    assert_eq!(
        provider.idle_instances(),
        0,
        "timed-out instances are discarded"
    );
    good_provider_still_answers().await;
}

#[tokio::test]
async fn host_import_in_a_tight_loop_is_stopped_at_its_deadline() {
    let provider = hostile("host-call-loop")
        .limits(|l| l.timeout = Duration::from_millis(30))
        .ready()
        .await;
    let err = provider
        .authenticate(&request("GET", "/", &[]))
        .await
        .expect_err("never answers");
    assert!(matches!(err, CallError::Timeout { .. }), "got: {err}");
    good_provider_still_answers().await;
}

#[tokio::test]
async fn a_looping_guest_does_not_starve_other_requests() {
    let looping = std::sync::Arc::new(
        hostile("loop")
            // Long enough that the good call cannot plausibly take as long, even on a loaded
            // machine: the assertion is about ordering, not speed.
            .limits(|l| l.timeout = Duration::from_secs(2))
            .ready()
            .await,
    );
    let good = hostile("ok").ready().await;
    let mut spinners = Vec::new();
    for _ in 0..8 {
        let looping = looping.clone();
        spinners.push(tokio::spawn(async move {
            looping.authenticate(&request("GET", "/", &[])).await
        }));
    }
    tokio::task::yield_now().await;
    // The good call completes while the spinners are still spinning: the loops yield to the
    // executor every epoch tick instead of holding a worker thread for their whole deadline.
    let verdict = good
        .authenticate(&request("GET", "/", &[("x-test", "1")]))
        .await
        .expect("answers");
    assert!(matches!(verdict, Verdict::Allow(_)));
    let unfinished = spinners.iter().filter(|s| !s.is_finished()).count();
    assert!(
        unfinished > 0,
        "the good call should not have waited for every spinner"
    );
    for spinner in spinners {
        let result = spinner.await.expect("task joins");
        assert!(matches!(result, Err(CallError::Timeout { .. })));
    }
}

#[tokio::test]
async fn memory_bomb_traps_at_the_cap() {
    let provider = hostile("memory-bomb")
        .limits(|l| {
            l.memory_bytes = 8 << 20;
            // Generous: on a loaded machine touching 8 MiB can take longer than 20 ms.
            l.timeout = Duration::from_secs(5);
        })
        .ready()
        .await;
    let err = provider
        .authenticate(&request("GET", "/", &[]))
        .await
        .expect_err("the bomb cannot fit");
    match &err {
        CallError::Trap { reason, .. } => assert!(
            reason.contains("memory limit of 8388608 bytes"),
            "expected: memory limit\ngot: {reason}"
        ),
        other => panic!("expected: trap\ngot: {other}"),
    }
    good_provider_still_answers().await;
}

#[tokio::test]
async fn deep_recursion_traps() {
    let provider = hostile("recursion").ready().await;
    let err = provider
        .authenticate(&request("GET", "/", &[]))
        .await
        .expect_err("recursion overflows");
    // Rust guests keep their stack in linear memory, so running off it is an out-of-bounds
    // access; frames on the wasm stack itself hit `max_wasm_stack`. Either is a trap.
    match &err {
        CallError::Trap { reason, .. } => assert!(
            reason.contains("stack overflow") || reason.contains("out of bounds"),
            "got: {reason}"
        ),
        other => panic!("expected: trap\ngot: {other}"),
    }
    good_provider_still_answers().await;
}

#[tokio::test]
async fn panic_traps_and_the_instance_is_not_reused() {
    let provider = hostile("panic").ready().await;
    for _ in 0..3 {
        let err = provider
            .authenticate(&request("GET", "/", &[]))
            .await
            .expect_err("panics trap");
        assert!(matches!(err, CallError::Trap { .. }), "got: {err}");
        assert_eq!(provider.idle_instances(), 0);
    }
    good_provider_still_answers().await;
}

/// Runs a mode that returns an oversized identity and gives back the error.
async fn oversized_output(mode: &str) -> CallError {
    // A generous deadline and memory: these tests are about the output bounds.
    let provider = hostile(mode)
        .limits(|l| {
            l.memory_bytes = 64 << 20;
            l.timeout = Duration::from_secs(5);
        })
        .ready()
        .await;
    let err = provider
        .authenticate(&request("GET", "/", &[]))
        .await
        .expect_err("over the limit");
    good_provider_still_answers().await;
    err
}

#[tokio::test]
async fn ten_megabyte_subject_is_refused() {
    match oversized_output("huge-subject").await {
        CallError::BadOutput { reason, .. } => assert!(reason.contains("subject is"), "{reason}"),
        other => panic!("expected: bad output\ngot: {other}"),
    }
}

#[tokio::test]
async fn hundred_thousand_scopes_are_refused() {
    match oversized_output("huge-scopes").await {
        CallError::BadOutput { reason, .. } => assert!(reason.contains("scopes"), "{reason}"),
        other => panic!("expected: bad output\ngot: {other}"),
    }
}

#[tokio::test]
async fn trap_in_configure_refuses_the_provider_at_load() {
    let err = hostile("trap-in-configure")
        .build()
        .await
        .expect_err("configure traps");
    assert!(matches!(err, LoadError::Configure { .. }), "got: {err}");
    good_provider_still_answers().await;
}

#[tokio::test]
async fn a_trapped_pooled_instance_is_replaced_and_others_keep_working() {
    let provider = hostile("trap-every")
        .config(json!({ "mode": "trap-every", "n": 3 }))
        .mode(InstanceMode::Pooled { max_idle: 1 })
        .ready()
        .await;
    let mut outcomes = Vec::new();
    for _ in 0..7 {
        outcomes.push(
            match provider.authenticate(&request("GET", "/", &[])).await {
                Ok(Verdict::Allow(id)) => id
                    .claims
                    .iter()
                    .find(|(k, _)| k == "calls")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
                Ok(other) => panic!("unexpected verdict {other:?}"),
                Err(CallError::Trap { .. }) => "trap".into(),
                Err(other) => panic!("unexpected error {other}"),
            },
        );
    }
    // One pooled instance counts its calls; the third traps; a new instance starts from 1.
    assert_eq!(outcomes, ["1", "2", "trap", "1", "2", "trap", "1"]);
}

#[tokio::test]
async fn fresh_mode_gives_every_call_a_new_instance() {
    let provider = hostile("trap-every")
        .config(json!({ "mode": "trap-every", "n": 100 }))
        .mode(InstanceMode::Fresh)
        .ready()
        .await;
    for _ in 0..3 {
        match provider.authenticate(&request("GET", "/", &[])).await {
            Ok(Verdict::Allow(id)) => {
                assert!(id.claims.contains(&("calls".into(), "1".into())), "{id:?}")
            }
            other => panic!("expected: allow with calls=1\ngot: {other:?}"),
        }
    }
    assert_eq!(provider.idle_instances(), 0);
}

async fn assert_no_escape(mode: &str) {
    let provider = hostile(mode).ready().await;
    match provider.authenticate(&request("GET", "/", &[])).await {
        Ok(Verdict::Deny(denial)) => {
            assert!(
                !denial.reason.contains("ESCAPED"),
                "{mode}: {}",
                denial.reason
            )
        }
        Ok(Verdict::Allow(id)) => panic!("{mode}: the guest escaped the sandbox: {}", id.subject),
        other => panic!("{mode}: expected a denial listing the failed attempts, got {other:?}"),
    }
}

#[tokio::test]
async fn guests_cannot_read_files() {
    assert_no_escape("read-file").await;
}

#[tokio::test]
async fn guests_cannot_open_sockets() {
    assert_no_escape("open-socket").await;
}

#[tokio::test]
async fn guests_see_no_environment_or_arguments() {
    let marker = "PORTCULLIS_TEST_MARKER_SHOULD_NOT_LEAK";
    // SAFETY-free: only this test reads it, and the guest must not see it anyway.
    assert!(std::env::var(marker).is_err());
    assert_no_escape("read-env").await;
}

#[tokio::test]
async fn a_provider_sees_only_the_secrets_it_was_granted() {
    let claim_of = |verdict: Verdict| match verdict {
        Verdict::Allow(id) => id
            .claims
            .into_iter()
            .find(|(k, _)| k == "secret_present")
            .map(|(_, v)| v),
        other => panic!("expected: allow\ngot: {other:?}"),
    };
    let config = json!({ "mode": "ungranted-secret", "secret": "db_password" });
    let without = ProviderSpec::new(guests::HOSTILE)
        .config(config.clone())
        .secret("other", "value")
        .ready()
        .await;
    let verdict = without
        .authenticate(&request("GET", "/", &[]))
        .await
        .expect("answers");
    assert_eq!(claim_of(verdict).as_deref(), Some("false"));

    let with = ProviderSpec::new(guests::HOSTILE)
        .config(config)
        .secret("db_password", "s3cret")
        .ready()
        .await;
    let verdict = with
        .authenticate(&request("GET", "/", &[]))
        .await
        .expect("answers");
    assert_eq!(claim_of(verdict).as_deref(), Some("true"));
}
