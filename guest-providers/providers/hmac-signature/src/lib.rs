//! `hmac-signature`: authenticates requests signed with HMAC-SHA256 under a shared key, within
//! a clock-skew limit, each signature accepted once. See README.md for the contract.

use std::collections::HashMap;

use portcullis_sdk::{
    Authenticator, Denial, Host, Identity, LogLevel, Request, Verdict, hex_decode, hex_encode,
};
use serde::Deserialize;

/// The secret that holds the keys, `key_id:secret` per line.
pub const KEYS_SECRET: &str = "keys";
/// The header naming the key, a line of the `keys` secret.
pub const KEY_ID_HEADER: &str = "x-signature-key-id";
/// The header with the signing time, unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";
/// The header with the hex HMAC-SHA256 of the signing string.
pub const SIGNATURE_HEADER: &str = "x-signature";

/// The largest skew accepted in config: one day. It also keeps the replay TTL in a `u32`.
const MAX_SKEW_LIMIT_SECS: u32 = 86_400;

/// The operator's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How far the signed timestamp may be from the host's clock, either way.
    #[serde(default = "default_max_skew_secs")]
    pub max_skew_secs: u32,
    /// Scopes given to every caller with a valid signature.
    #[serde(default)]
    pub scopes: Vec<String>,
}

fn default_max_skew_secs() -> u32 {
    300
}

/// A configured provider.
#[derive(Debug)]
pub struct HmacSignature {
    keys: HashMap<String, Vec<u8>>,
    max_skew_secs: u32,
    scopes: Vec<String>,
}

impl Authenticator for HmacSignature {
    type Config = Config;

    fn new(config: Config, host: &dyn Host) -> Result<Self, String> {
        if !(1..=MAX_SKEW_LIMIT_SECS).contains(&config.max_skew_secs) {
            return Err(format!(
                "invalid max_skew_secs {}: must be between 1 and {MAX_SKEW_LIMIT_SECS}",
                config.max_skew_secs
            ));
        }
        let keys = host
            .secret(KEYS_SECRET)
            .ok_or_else(|| format!("the secret `{KEYS_SECRET}` is not granted to this provider"))?;
        Ok(Self {
            keys: parse_keys(&keys)?,
            max_skew_secs: config.max_skew_secs,
            scopes: config.scopes,
        })
    }

    fn authenticate(&self, req: &dyn Request, host: &dyn Host) -> Verdict {
        let key_id = req.header(KEY_ID_HEADER);
        let timestamp = req.header(TIMESTAMP_HEADER);
        let signature = req.header(SIGNATURE_HEADER);
        match (key_id, timestamp, signature) {
            (None, None, None) => Verdict::Abstain,
            (Some(key_id), Some(timestamp), Some(signature)) => self
                .check(req, host, &key_id, &timestamp, &signature)
                .into(),
            _ => Denial::invalid_request(format!(
                "a signed request needs all of {KEY_ID_HEADER}, {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}"
            ))
            .into(),
        }
    }
}

impl HmacSignature {
    fn check(
        &self,
        req: &dyn Request,
        host: &dyn Host,
        key_id: &str,
        timestamp: &str,
        signature: &str,
    ) -> Result<Identity, Denial> {
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| Denial::invalid_token("unknown signature key id"))?;
        let signed_at: i64 = timestamp
            .parse()
            .map_err(|_| Denial::invalid_token("the signature timestamp is not unix seconds"))?;
        let now = i64::try_from(host.now_unix_ms() / 1000).unwrap_or(i64::MAX);
        if now.abs_diff(signed_at) > u64::from(self.max_skew_secs) {
            return Err(Denial::invalid_token(
                "the signature timestamp is outside the allowed clock skew",
            ));
        }
        let presented = hex_decode(signature)
            .filter(|mac| mac.len() == 32)
            .ok_or_else(|| Denial::invalid_token("the signature is not 64 hex digits"))?;
        let expected = host.hmac_sha256(key, signing_string(req, host, timestamp).as_bytes());
        if !host.constant_time_eq(&presented, &expected) {
            return Err(Denial::invalid_token(
                "the signature does not match the request",
            ));
        }
        // Only a verified signature enters the cache, so forgeries cannot fill it. It stays
        // for two skews: by then its timestamp is out of the window anyway.
        let ttl_ms = self.max_skew_secs * 2 * 1000;
        if !host.cache_add(&format!("sig:{}", hex_encode(&presented)), b"", ttl_ms) {
            host.log(
                LogLevel::Warn,
                &format!("replayed signature for key `{key_id}`"),
            );
            return Err(Denial::invalid_token("the signature was already used"));
        }
        Ok(Identity::new(key_id)
            .with_scopes(self.scopes.iter().cloned())
            .with_claim("key_id", key_id))
    }
}

/// `METHOD \n target \n timestamp \n hex(sha256(body))`, where the target is the path plus
/// `?query` when the request has a query string. A missing body hashes as empty.
pub fn signing_string(req: &dyn Request, host: &dyn Host, timestamp: &str) -> String {
    let mut target = req.path();
    if let Some(query) = req.query() {
        target.push('?');
        target.push_str(&query);
    }
    let body_hash = hex_encode(&host.sha256(&req.body().unwrap_or_default()));
    format!("{}\n{target}\n{timestamp}\n{body_hash}", req.method())
}

/// Parses the `keys` secret: `key_id:secret` per line (the secret is the rest of the line, as
/// UTF-8 bytes); blank lines and `#` comments are skipped. Errors name the line, never its
/// content.
fn parse_keys(text: &str) -> Result<HashMap<String, Vec<u8>>, String> {
    let mut keys = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("secret `{KEYS_SECRET}`, line {}: {why}", index + 1);
        let (id, secret) = line
            .split_once(':')
            .ok_or_else(|| bad("expected `key_id:secret`"))?;
        if id.is_empty() || id.contains(char::is_whitespace) {
            return Err(bad("the key id is empty or contains whitespace"));
        }
        if secret.is_empty() {
            return Err(bad("the key is empty"));
        }
        if keys
            .insert(id.to_owned(), secret.as_bytes().to_vec())
            .is_some()
        {
            return Err(bad("the key id is listed twice"));
        }
    }
    if keys.is_empty() {
        return Err(format!("secret `{KEYS_SECRET}` lists no keys"));
    }
    Ok(keys)
}

portcullis_sdk::export_authenticator!(HmacSignature);

#[cfg(test)]
mod tests {
    use portcullis_sdk::configure_authenticator;
    use portcullis_sdk::testing::{FakeHost, FakeRequest};

    use super::*;

    const NOW_SECS: u64 = 1_704_067_200;

    fn host() -> FakeHost {
        FakeHost::new()
            .with_secret(KEYS_SECRET, "# keys\nk1:topsecret\nk2:other:key")
            .with_now_unix_ms(NOW_SECS * 1000)
    }

    fn provider(host: &FakeHost) -> HmacSignature {
        configure_authenticator(r#"{"scopes": ["signed"]}"#, host).unwrap()
    }

    /// Signs `req` the way a client would, independently of `signing_string`.
    fn signed(req: FakeRequest, key_id: &str, key: &str, timestamp: u64) -> FakeRequest {
        let host = FakeHost::new();
        let view: &dyn Request = &req;
        let mut target = view.path();
        if let Some(query) = view.query() {
            target = format!("{target}?{query}");
        }
        let body_hash = hex_encode(&host.sha256(&view.body().unwrap_or_default()));
        let text = format!("{}\n{target}\n{timestamp}\n{body_hash}", view.method());
        let mac = hex_encode(&host.hmac_sha256(key.as_bytes(), text.as_bytes()));
        req.header("X-Signature-Key-Id", key_id)
            .header("X-Signature-Timestamp", &timestamp.to_string())
            .header("X-Signature", &mac)
    }

    fn sample() -> FakeRequest {
        FakeRequest::post("/mcp?session=1").body(r#"{"jsonrpc":"2.0"}"#)
    }

    #[test]
    fn valid_signature_is_allowed_once() {
        let host = host();
        let provider = provider(&host);
        let req = signed(sample(), "k1", "topsecret", NOW_SECS - 10);
        let expected = Identity::new("k1")
            .with_scope("signed")
            .with_claim("key_id", "k1");
        assert_eq!(provider.authenticate(&req, &host), Verdict::Allow(expected));

        let replay = provider.authenticate(&req, &host);
        assert_eq!(
            replay,
            Verdict::Deny(Denial::invalid_token("the signature was already used"))
        );
        assert!(host.logged("replayed signature for key `k1`"));
    }

    #[test]
    fn key_may_contain_colons_and_signature_may_be_upper_case() {
        let host = host();
        let req = signed(sample(), "k2", "other:key", NOW_SECS);
        assert!(
            provider(&host)
                .authenticate(&req, &host)
                .identity()
                .is_some()
        );

        let req = signed(FakeRequest::get("/x"), "k1", "topsecret", NOW_SECS);
        let view: &dyn Request = &req;
        let upper = view.header(SIGNATURE_HEADER).unwrap().to_ascii_uppercase();
        let req = FakeRequest::get("/x")
            .header(KEY_ID_HEADER, "k1")
            .header(TIMESTAMP_HEADER, &NOW_SECS.to_string())
            .header(SIGNATURE_HEADER, &upper);
        assert!(
            provider(&host)
                .authenticate(&req, &host)
                .identity()
                .is_some()
        );
    }

    #[test]
    fn unsigned_request_abstains() {
        let host = host();
        let req = FakeRequest::get("/").header("authorization", "Bearer x");
        assert_eq!(provider(&host).authenticate(&req, &host), Verdict::Abstain);
    }

    #[test]
    fn incomplete_headers_are_denied() {
        let host = host();
        let req = FakeRequest::get("/").header(SIGNATURE_HEADER, "00");
        let verdict = provider(&host).authenticate(&req, &host);
        assert_eq!(
            verdict.denial().map(|d| d.code.as_str()),
            Some("invalid_request")
        );
    }

    #[test]
    fn tampered_request_is_denied() {
        let host = host();
        let provider = provider(&host);
        let mismatch = Verdict::Deny(Denial::invalid_token(
            "the signature does not match the request",
        ));
        let good = signed(sample(), "k1", "topsecret", NOW_SECS);
        let view: &dyn Request = &good;
        let headers = |req: FakeRequest| {
            req.header(KEY_ID_HEADER, "k1")
                .header(TIMESTAMP_HEADER, &view.header(TIMESTAMP_HEADER).unwrap())
                .header(SIGNATURE_HEADER, &view.header(SIGNATURE_HEADER).unwrap())
        };
        for tampered in [
            FakeRequest::post("/mcp?session=2").body(r#"{"jsonrpc":"2.0"}"#),
            FakeRequest::post("/mcp?session=1").body(r#"{"jsonrpc":"2.1"}"#),
            FakeRequest::post("/other?session=1").body(r#"{"jsonrpc":"2.0"}"#),
            FakeRequest::new()
                .method("PUT")
                .path("/mcp?session=1")
                .body(r#"{"jsonrpc":"2.0"}"#),
        ] {
            assert_eq!(provider.authenticate(&headers(tampered), &host), mismatch);
        }
        let wrong_key = signed(sample(), "k1", "guess", NOW_SECS);
        assert_eq!(provider.authenticate(&wrong_key, &host), mismatch);
    }

    #[test]
    fn timestamps_outside_the_skew_are_denied() {
        let host = host();
        let provider = provider(&host);
        for timestamp in [NOW_SECS - 301, NOW_SECS + 301] {
            let req = signed(sample(), "k1", "topsecret", timestamp);
            let verdict = provider.authenticate(&req, &host);
            let reason = verdict.denial().map(|d| d.reason.as_str());
            assert_eq!(
                reason,
                Some("the signature timestamp is outside the allowed clock skew")
            );
        }
        let req = signed(sample(), "k1", "topsecret", NOW_SECS + 300);
        assert!(provider.authenticate(&req, &host).identity().is_some());
    }

    #[test]
    fn replay_window_outlasts_the_skew() {
        let host = host();
        let provider = provider(&host);
        let req = signed(sample(), "k1", "topsecret", NOW_SECS + 300);
        assert!(provider.authenticate(&req, &host).identity().is_some());
        // Still inside the skew 599 s later, and still remembered.
        host.advance_ms(599_000);
        assert!(provider.authenticate(&req, &host).denial().is_some());
    }

    #[test]
    fn unknown_key_and_garbage_are_denied() {
        let host = host();
        let provider = provider(&host);
        let unknown = signed(sample(), "k9", "topsecret", NOW_SECS);
        assert_eq!(
            provider.authenticate(&unknown, &host),
            Verdict::Deny(Denial::invalid_token("unknown signature key id"))
        );
        let req = FakeRequest::get("/")
            .header(KEY_ID_HEADER, "k1")
            .header(TIMESTAMP_HEADER, "yesterday")
            .header(SIGNATURE_HEADER, "00");
        assert_eq!(
            provider
                .authenticate(&req, &host)
                .denial()
                .map(|d| d.status),
            Some(401)
        );
        let req = FakeRequest::get("/")
            .header(KEY_ID_HEADER, "k1")
            .header(TIMESTAMP_HEADER, &NOW_SECS.to_string())
            .header(SIGNATURE_HEADER, "not-hex");
        let verdict = provider.authenticate(&req, &host);
        assert_eq!(
            verdict.denial().map(|d| d.reason.as_str()),
            Some("the signature is not 64 hex digits")
        );
    }

    #[test]
    fn config_errors_are_reported() {
        let err = configure_authenticator::<HmacSignature>("{}", &FakeHost::new()).unwrap_err();
        assert_eq!(err, "the secret `keys` is not granted to this provider");
        let err = configure_authenticator::<HmacSignature>(r#"{"max_skew_secs": 0}"#, &host())
            .unwrap_err();
        assert!(err.starts_with("invalid max_skew_secs 0"), "got: {err}");
        let bad = FakeHost::new().with_secret(KEYS_SECRET, "k1:a\nnocolon-secretvalue");
        let err = configure_authenticator::<HmacSignature>("{}", &bad).unwrap_err();
        assert_eq!(err, "secret `keys`, line 2: expected `key_id:secret`");
    }
}
