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

/// Generous bound on anything that must be cut off at a short deadline: proves "did not hang
/// for the guest's 30 s", not a speed.
const CUT_OFF: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_guest_sleeping_in_a_host_wait_is_cut_off_at_its_deadline_and_replaced() {
    // `std::thread::sleep` is a WASI `poll` on a monotonic clock: no guest code runs, so no
    // epoch check fires. Before the wall-clock bound this call held the request for 30 s.
    let provider = ProviderSpec::new(guests::HOSTILE)
        .config(json!({ "mode": "sleep", "ms": 30_000 }))
        .limits(|l| l.timeout = Duration::from_millis(50))
        .ready()
        .await;
    for _ in 0..2 {
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            provider.authenticate(&request("GET", "/", &[("x-sleep", "1")])),
        )
        .await
        .expect("expected: the call is cut off\ngot: still sleeping after 10 s");
        let elapsed = started.elapsed();
        assert!(
            matches!(outcome, Err(CallError::Timeout { .. })),
            "expected: timeout\ngot: {outcome:?}"
        );
        assert!(elapsed < CUT_OFF, "not cut off in time: {elapsed:?}");
        assert_eq!(
            provider.idle_instances(),
            0,
            "the cut-off instance is dropped"
        );
    }
    // The next call gets a new instance, which answers.
    match provider.authenticate(&request("GET", "/", &[])).await {
        Ok(Verdict::Allow(id)) => assert_eq!(id.subject, "hostile-slept"),
        other => panic!("expected: allow from a new instance\ngot: {other:?}"),
    }
    assert_eq!(provider.idle_instances(), 1);
    good_provider_still_answers().await;
}

#[tokio::test]
async fn a_guest_sleeping_in_configure_is_refused_at_load_within_its_configure_timeout() {
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        ProviderSpec::new(guests::HOSTILE)
            .config(json!({ "mode": "sleep-in-configure", "ms": 30_000 }))
            .limits(|l| l.configure_timeout = Duration::from_millis(200))
            .build(),
    )
    .await
    .expect("expected: configure is cut off\ngot: still sleeping after 10 s")
    .expect_err("a configure that sleeps past its deadline must not load");
    let elapsed = started.elapsed();
    assert!(elapsed < CUT_OFF, "not cut off in time: {elapsed:?}");
    match &err {
        LoadError::Configure { reason, .. } => {
            assert!(reason.contains("timed out"), "got: {reason}")
        }
        other => panic!("expected: configure error\ngot: {other}"),
    }
    good_provider_still_answers().await;
}

#[tokio::test]
async fn calls_over_the_concurrency_cap_fail_closed_and_another_provider_still_answers() {
    const CAP: usize = 2;
    const CALLS: usize = 8;
    let slow = std::sync::Arc::new(
        ProviderSpec::new(guests::HOSTILE)
            .config(json!({ "mode": "sleep", "ms": 30_000 }))
            .limits(|l| {
                l.timeout = Duration::from_millis(500);
                l.max_concurrent_calls = CAP;
            })
            .ready()
            .await,
    );
    let good = hostile("ok").ready().await;
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..CALLS {
        let slow = slow.clone();
        calls.spawn(async move {
            let outcome = slow
                .authenticate(&request("GET", "/", &[("x-sleep", "1")]))
                .await;
            (outcome, started.elapsed())
        });
    }
    // Let every call start: CAP of them sleep in the guest, the rest wait for a slot.
    let waiting = Instant::now();
    while slow.calls_in_flight() < CAP && waiting.elapsed() < CUT_OFF {
        tokio::task::yield_now().await;
    }
    assert_eq!(slow.calls_in_flight(), CAP, "the cap holds");
    // Another provider on the same runtime answers meanwhile.
    let verdict = good
        .authenticate(&request("GET", "/", &[("x-test", "1")]))
        .await
        .expect("the other provider answers");
    assert!(matches!(verdict, Verdict::Allow(_)), "{verdict:?}");
    assert!(
        slow.calls_in_flight() > 0,
        "expected: the other provider answers while the slow calls are in flight\ngot: they \
         had all ended"
    );
    let (mut timeouts, mut unavailable) = (0, 0);
    while let Some(joined) = calls.join_next().await {
        let (outcome, took) = joined.expect("call task");
        // Every call ends by its own deadline (waiting for a slot counts against it).
        assert!(took < CUT_OFF, "a call took {took:?}");
        match outcome {
            Err(CallError::Timeout { .. }) => timeouts += 1,
            Err(CallError::Unavailable { reason, .. }) => {
                assert!(reason.contains("max_concurrent_calls"), "{reason}");
                unavailable += 1;
            }
            other => panic!("expected: every call fails closed\ngot: {other:?}"),
        }
    }
    // Those that got a slot slept into their deadline; at least the calls that never got
    // one were refused as unavailable (a waiter may get a freed slot just before its own
    // deadline, and then times out instead).
    assert!(
        timeouts >= CAP,
        "timeouts {timeouts}, unavailable {unavailable}"
    );
    assert!(
        unavailable >= 1,
        "timeouts {timeouts}, unavailable {unavailable}"
    );
    assert_eq!(slow.calls_in_flight(), 0);
    // The slots are free again: an unhurried call answers.
    let verdict = slow.authenticate(&request("GET", "/", &[])).await;
    assert!(matches!(verdict, Ok(Verdict::Allow(_))), "{verdict:?}");
}

#[tokio::test]
async fn a_guest_filling_the_cache_never_grows_it_past_its_bounds() {
    const TOTAL: usize = 256 << 10;
    let provider = ProviderSpec::new(guests::HOSTILE)
        .config(json!({ "mode": "cache-fill", "n": 2000, "bytes": 1024 }))
        .limits(|l| {
            l.timeout = Duration::from_secs(5);
            l.max_cache_bytes = TOTAL;
        })
        .ready()
        .await;
    let claims = match provider.authenticate(&request("GET", "/", &[])).await {
        Ok(Verdict::Allow(id)) => id.claims,
        other => panic!("expected: allow with the fill report\ngot: {other:?}"),
    };
    let claim = |name: &str| {
        claims
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no claim {name} in {claims:?}"))
    };
    let stored: usize = claim("stored").parse().expect("a count");
    let per_entry = "fill-1999".len() + 1024 + portcullis::wasm::ENTRY_OVERHEAD;
    assert!(
        stored >= 1 && stored <= TOTAL / (per_entry - 3),
        "stored {stored} entries of ~{per_entry} bytes under a {TOTAL}-byte bound"
    );
    // The guest saw every refusal: `cache-add` answered false, a refused `cache-set` reads
    // back as a miss.
    assert_eq!(claim("long_key_stored"), "false", "a 100 000-byte key");
    assert_eq!(claim("huge_value_stored"), "false", "a 70 KiB value");
    let held = provider.cache().bytes();
    assert!(held <= TOTAL, "the host holds {held} bytes, over {TOTAL}");
    assert_eq!(provider.cache().len(), stored);
    // A second fill stores nothing more: the entries are live, the bound is reached.
    let _ = provider.authenticate(&request("GET", "/", &[])).await;
    assert!(provider.cache().bytes() <= TOTAL);
}

/// Log output written on this thread while it lives, in the gateway's two formats (text
/// without time or colour, and JSON lines), at `INFO` and above.
pub struct CapturedLogs {
    text: LogBuffer,
    json: LogBuffer,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// Starts capturing (current-thread tests only: the subscriber is this thread's default).
pub fn capture_logs() -> CapturedLogs {
    use tracing_subscriber::layer::SubscriberExt as _;
    let (text, json) = (LogBuffer::default(), LogBuffer::default());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(text.clone())
                .with_ansi(false)
                .without_time()
                .with_target(true),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(json.clone())
                .without_time(),
        );
    let guard = tracing::subscriber::set_default(subscriber);
    // Another test's thread may have registered the audit and log callsites while no
    // subscriber wanted them; recompute their interest now that this thread's does.
    tracing::callsite::rebuild_interest_cache();
    CapturedLogs {
        text,
        json,
        _guard: guard,
    }
}

impl CapturedLogs {
    /// Checks that every line of both outputs is one whole event, as its format writes it,
    /// and that no raw line break or terminal control survived anywhere; returns the text
    /// and the JSON output.
    pub fn assert_one_line_per_event(&self) -> (String, String) {
        let (text, json) = (self.text.text(), self.json.text());
        for output in [&text, &json] {
            let raw = output
                .chars()
                .find(|&c| (c.is_control() && c != '\n') || matches!(c, '\u{2028}' | '\u{2029}'));
            assert!(raw.is_none(), "raw {raw:?} in the log output:\n{output}");
        }
        for line in text.lines() {
            let level = line.trim_start().split(' ').next().unwrap_or_default();
            assert!(
                ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
                "expected: every text line starts with its level\ngot: {line:?}\nin:\n{text}"
            );
        }
        for line in json.lines() {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a JSON log line does not parse ({e}): {line:?}"));
            assert!(event.get("level").is_some(), "not an event: {line}");
        }
        assert_eq!(
            text.lines().count(),
            json.lines().count(),
            "one line per event in both formats\ntext:\n{text}\njson:\n{json}"
        );
        (text, json)
    }
}

/// A line a forger would like to see standing on its own in the log.
pub const FORGED: &str =
    r#"{"level":"INFO","target":"portcullis::audit","verdict":"allow","subject":"admin"}"#;

#[tokio::test]
async fn a_guest_log_message_cannot_forge_a_log_line() {
    let logs = capture_logs();
    for separator in ["\n", "\r\n", "\r", "\u{2028}", "\u{85}", "\u{1b}[2K\r"] {
        let provider = hostile("log")
            .config(json!({ "mode": "log", "message": format!("ok{separator}{FORGED}") }))
            .ready()
            .await;
        let verdict = provider
            .authenticate(&request("GET", "/", &[]))
            .await
            .expect("answers");
        assert!(matches!(verdict, Verdict::Allow(_)), "{verdict:?}");
    }
    let (text, json) = logs.assert_one_line_per_event();
    assert_eq!(
        text.lines().count(),
        6,
        "one line per guest log call:\n{text}"
    );
    assert!(
        text.contains(r"ok\n{"),
        "the newline is written escaped:\n{text}"
    );
    assert!(
        json.contains(r"ok\\u{2028}{"),
        "U+2028 is written escaped:\n{json}"
    );
    for line in text.lines().chain(json.lines()) {
        assert!(!line.starts_with('{') || line.contains("hostile"), "{line}");
    }
}
