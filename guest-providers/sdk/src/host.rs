//! The [`Host`] trait: the capabilities the host grants a provider (WIT interface `host`).

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something is off but the provider carries on.
    Warn,
    /// Something failed.
    Error,
}

/// A signature algorithm the host can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys or larger.
    Rs256,
    /// ECDSA P-256 with SHA-256; the signature is the fixed-size `r || s` form used by JWS.
    Es256,
    /// Ed25519.
    EdDsa,
}

/// A public key, in one of the forms IdPs publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicKey<'a> {
    /// DER: SubjectPublicKeyInfo for RS256 and ES256, or the raw 32 bytes for Ed25519.
    Der(&'a [u8]),
    /// One JSON Web Key (RFC 7517), as a JSON object.
    Jwk(&'a str),
}

/// Capabilities the host grants a provider; nothing else is reachable from inside.
///
/// In a component every method is an import call; in tests it is a
/// [`FakeHost`](crate::testing::FakeHost). The trait is object safe so that provider code
/// takes `&dyn Host` and needs no generics.
pub trait Host {
    /// Writes a line to the host's log, tagged with the provider's name. Never log a credential.
    fn log(&self, level: LogLevel, message: &str);

    /// The secret granted under `name`, or `None` when nothing by that name was granted.
    fn secret(&self, name: &str) -> Option<String>;

    /// SHA-256 of `data` (32 bytes).
    fn sha256(&self, data: &[u8]) -> Vec<u8>;

    /// HMAC-SHA-256 of `data` under `key` (32 bytes).
    fn hmac_sha256(&self, key: &[u8], data: &[u8]) -> Vec<u8>;

    /// Whether `a` and `b` are equal, in time that depends only on their lengths.
    fn constant_time_eq(&self, a: &[u8], b: &[u8]) -> bool;

    /// Whether `signature` is a valid signature of `message` under `key`; an error when the
    /// key cannot be parsed for `algorithm`.
    fn verify_signature(
        &self,
        algorithm: SignatureAlgorithm,
        key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, String>;

    /// The value cached under `key`, if present and not expired. The cache is shared by
    /// every instance of this provider and by no other provider.
    fn cache_get(&self, key: &str) -> Option<Vec<u8>>;

    /// Caches `value` under `key` for `ttl_ms`, replacing any previous value.
    fn cache_set(&self, key: &str, value: &[u8], ttl_ms: u32);

    /// Caches `value` under `key` only if no live entry exists; returns whether it stored.
    /// Atomic across instances: use it to detect replays.
    fn cache_add(&self, key: &str, value: &[u8], ttl_ms: u32) -> bool;

    /// Wall-clock time in milliseconds since the Unix epoch.
    fn now_unix_ms(&self) -> u64;
}
