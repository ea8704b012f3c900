//! The provider traits and the one path from a JSON config to a configured provider.

use serde::{Deserialize, de::DeserializeOwned};

use crate::{Denial, Host, Identity, Request, Verdict};

/// A provider that establishes who the caller is (WIT world `authenticator`).
///
/// One value is built per component instance by [`new`](Self::new) and then called once per
/// request. Calls take `&self`: keep per-instance state in a `Cell` if you need any, and
/// remember that instances may be thrown away or not reused at all.
pub trait Authenticator: Sized + 'static {
    /// The operator's config table, deserialized from the JSON the host passes.
    /// Use [`NoConfig`] when there is nothing to configure.
    type Config: DeserializeOwned;

    /// Builds the provider; an error refuses it and the message reaches the operator.
    /// Read granted secrets here, so that a missing or malformed one fails at load.
    fn new(config: Self::Config, host: &dyn Host) -> Result<Self, String>;

    /// Allows with the caller's identity, denies a bad credential of this provider's kind,
    /// or abstains when the request carries none.
    fn authenticate(&self, req: &dyn Request, host: &dyn Host) -> Verdict;
}

/// A provider that decides whether an authenticated caller may make this request (WIT world
/// `authorizer`).
pub trait Authorizer: Sized + 'static {
    /// The operator's config table, deserialized from the JSON the host passes.
    type Config: DeserializeOwned;

    /// Builds the provider; an error refuses it and the message reaches the operator.
    fn new(config: Self::Config, host: &dyn Host) -> Result<Self, String>;

    /// `Ok` lets the request through to the next authorizer; `Err` refuses it.
    fn authorize(
        &self,
        req: &dyn Request,
        caller: &Identity,
        host: &dyn Host,
    ) -> Result<(), Denial>;
}

/// The config of a provider that takes none: an empty table, and nothing else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// Parses a provider's JSON config. An empty string reads as `{}`.
///
/// This is what the export macros call, so a test that goes through it sees the errors an
/// operator would see.
pub fn parse_config<C: DeserializeOwned>(json: &str) -> Result<C, String> {
    let json = match json.trim() {
        "" => "{}",
        json => json,
    };
    serde_json::from_str(json).map_err(|e| format!("invalid config: {e}"))
}

/// Parses `json` and builds the authenticator, exactly as the component's `configure` does.
pub fn configure_authenticator<A: Authenticator>(json: &str, host: &dyn Host) -> Result<A, String> {
    A::new(parse_config(json)?, host)
}

/// Parses `json` and builds the authorizer, exactly as the component's `configure` does.
pub fn configure_authorizer<A: Authorizer>(json: &str, host: &dyn Host) -> Result<A, String> {
    A::new(parse_config(json)?, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        limit: u32,
    }

    #[test]
    fn empty_config_reads_as_an_empty_table() {
        assert_eq!(parse_config::<NoConfig>(""), Ok(NoConfig {}));
        assert_eq!(parse_config::<NoConfig>(" {} "), Ok(NoConfig {}));
    }

    #[test]
    fn no_config_rejects_unknown_keys() {
        let err = parse_config::<NoConfig>(r#"{"mode": 1}"#).unwrap_err();
        assert!(
            err.starts_with("invalid config: unknown field `mode`"),
            "got: {err}"
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = parse_config::<Sample>(r#"{"limit": "ten"}"#).unwrap_err();
        assert!(err.contains("invalid type: string \"ten\""), "got: {err}");
        assert_eq!(
            parse_config::<Sample>(r#"{"limit": 10}"#).map(|s| s.limit),
            Ok(10)
        );
    }
}
