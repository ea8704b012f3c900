//! The config loader (`portcullis::config::load_str`, and stage one alone through
//! `parse_str_with`) on arbitrary UTF-8.
//!
//! Invariants: nothing panics; every error displays as a non-empty message that names the
//! source it was given; stage one with an empty environment agrees with itself on a second
//! run (no hidden state).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use portcullis::config::{ConfigError, load_str, parse_str_with};

/// A folder that does not exist, so relative file names in a config resolve to nothing.
const BASE_DIR: &str = "/nonexistent/portcullis-fuzz";

fuzz_target!(|text: &str| {
    let no_env = |_: &str| None;
    let first = parse_str_with(text, "fuzz.toml", &no_env);
    let second = parse_str_with(text, "fuzz.toml", &no_env);
    assert_eq!(first.is_ok(), second.is_ok());
    if let (Err(a), Err(b)) = (&first, &second) {
        assert_eq!(a.to_string(), b.to_string());
        check(a);
    }
    if let Err(error) = load_str(text, "fuzz.toml", Path::new(BASE_DIR)) {
        check(&error);
    }
});

fn check(error: &ConfigError) {
    if let ConfigError::Shape { message, .. } | ConfigError::Invalid { message, .. } = error {
        assert!(!message.trim().is_empty(), "no reason given: {error:?}");
    }
    let message = error.to_string();
    assert!(!message.trim().is_empty(), "an empty error message");
    assert!(
        message.contains("fuzz.toml"),
        "the error does not name its file: {message}"
    );
}
