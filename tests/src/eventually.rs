//! Waiting for something that happens in the background (a reload, a refetch, a stream
//! released): one poll with one generous deadline, failing with what never happened and
//! what was seen instead. Where the code under test can signal, tests wait for the signal
//! (see [`crate::upstream::RecordingUpstream::arrived`]) rather than poll.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How long [`eventually`] waits: far above anything a busy two-core machine needs (a
/// component compile, a JWKS refetch), so that it bounds hangs without timing anything.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Between two looks.
const INTERVAL: Duration = Duration::from_millis(20);

/// What one look found: done (with a value), or not yet (with what it saw instead).
pub trait Look {
    /// What a look that found it gives back.
    type Value;
    /// `Ok` when done, or `Err` with what was seen.
    fn done(self) -> Result<Self::Value, String>;
}

impl Look for bool {
    type Value = ();
    fn done(self) -> Result<(), String> {
        if self { Ok(()) } else { Err("not yet".into()) }
    }
}

impl<T, E: Display> Look for Result<T, E> {
    type Value = T;
    fn done(self) -> Result<T, String> {
        self.map_err(|seen| seen.to_string())
    }
}

/// Looks with `look` until it is done, and returns what it found; panics after
/// [`DEADLINE`] with `expected: <what>` and the last thing seen.
pub async fn eventually<F, Fut>(what: &str, mut look: F) -> <Fut::Output as Look>::Value
where
    F: FnMut() -> Fut,
    Fut: Future<Output: Look>,
{
    let started = Instant::now();
    loop {
        match look().await.done() {
            Ok(value) => return value,
            Err(seen) => assert!(
                started.elapsed() < DEADLINE,
                "expected: {what} within {DEADLINE:?}\ngot: {seen}"
            ),
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
