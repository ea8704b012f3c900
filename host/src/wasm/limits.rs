//! Per-provider sandbox limits and the bounds on what a provider may return.

use std::time::Duration;

use crate::verdict::Identity;

/// Resource limits for one provider's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline for one `authenticate` or `authorize` call.
    pub timeout: Duration,
    /// Wall-clock deadline for creating an instance and running its `configure`. Separate
    /// from `timeout` because a new instance may be needed on the request path (a cold pool
    /// right after a reload, or fresh mode), and configuring can legitimately take longer
    /// than answering (parsing a credentials file, building tables).
    pub configure_timeout: Duration,
    /// Cap on the linear memory of one instance, in bytes.
    pub memory_bytes: usize,
    /// Longest accepted subject, in bytes.
    pub max_subject_bytes: usize,
    /// Most scopes accepted in one identity.
    pub max_scopes: usize,
    /// Most claims accepted in one identity.
    pub max_claims: usize,
    /// Longest accepted scope, claim key, claim value, denial code or reason, in bytes.
    pub max_string_bytes: usize,
    /// Most log lines one call may write; further lines are dropped.
    pub max_log_lines_per_call: u32,
    /// Longest log line, in bytes; longer lines are truncated.
    pub max_log_line_bytes: usize,
    /// Most calls into this provider running at once (queued calls wait for a slot until
    /// their deadline, then fail closed); keeps one slow provider from taking every instance
    /// slot of the runtime's pool.
    pub max_concurrent_calls: usize,
    /// Most live entries in the provider's cache.
    pub max_cache_entries: usize,
    /// Longest key accepted by the provider's cache, in bytes.
    pub max_cache_key_bytes: usize,
    /// Largest value stored in the provider's cache, in bytes.
    pub max_cache_value_bytes: usize,
    /// Most bytes the provider's cache holds in all (keys, values and a fixed per-entry
    /// overhead): the cache lives in the host, outside the instance's memory cap.
    pub max_cache_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(20),
            configure_timeout: Duration::from_secs(1),
            memory_bytes: 16 << 20,
            max_subject_bytes: 1024,
            max_scopes: 256,
            max_claims: 64,
            max_string_bytes: 4096,
            max_log_lines_per_call: 32,
            max_log_line_bytes: 1024,
            max_concurrent_calls: 64,
            max_cache_entries: 100_000,
            max_cache_key_bytes: 512,
            max_cache_value_bytes: 64 << 10,
            max_cache_bytes: 16 << 20,
        }
    }
}

impl Limits {
    /// Checks an identity returned by a provider against these limits.
    pub fn check_identity(&self, identity: &Identity) -> Result<(), String> {
        if identity.subject.is_empty() {
            return Err("identity has an empty subject".into());
        }
        check_len("subject", &identity.subject, self.max_subject_bytes)?;
        if identity.scopes.len() > self.max_scopes {
            return Err(format!(
                "identity has {} scopes, more than the limit of {}",
                identity.scopes.len(),
                self.max_scopes
            ));
        }
        for scope in &identity.scopes {
            check_len("scope", scope, self.max_string_bytes)?;
        }
        if identity.claims.len() > self.max_claims {
            return Err(format!(
                "identity has {} claims, more than the limit of {}",
                identity.claims.len(),
                self.max_claims
            ));
        }
        for (key, value) in &identity.claims {
            check_len("claim name", key, self.max_string_bytes)?;
            check_len("claim value", value, self.max_string_bytes)?;
        }
        Ok(())
    }

    /// Checks a denial's free-text fields.
    pub fn check_denial_text(&self, code: &str, reason: &str) -> Result<(), String> {
        check_len("denial code", code, self.max_string_bytes)?;
        check_len("denial reason", reason, self.max_string_bytes)
    }
}

fn check_len(what: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        Err(format!(
            "{what} is {} bytes, more than the limit of {max}",
            value.len()
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(subject: &str) -> Identity {
        Identity {
            subject: subject.into(),
            scopes: vec![],
            claims: vec![],
        }
    }

    #[test]
    fn oversized_subject_is_refused() {
        let limits = Limits::default();
        let err = limits
            .check_identity(&identity(&"x".repeat(1025)))
            .expect_err("too long");
        assert!(err.contains("subject is 1025 bytes"), "got: {err}");
    }

    #[test]
    fn empty_subject_is_refused() {
        assert!(Limits::default().check_identity(&identity("")).is_err());
    }

    #[test]
    fn too_many_scopes_are_refused() {
        let mut id = identity("a");
        id.scopes = vec!["s".into(); 257];
        assert!(Limits::default().check_identity(&id).is_err());
    }
}
