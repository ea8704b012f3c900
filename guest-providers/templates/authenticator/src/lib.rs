//! `{{name}}`: a Portcullis authenticator, scaffolded by `portcullis new`.
//!
//! It answers for `Authorization: {{name}} <token>`. Another scheme, or no header, is not
//! its business: it abstains and the next provider in the chain tries. The token the
//! operator granted as the secret `token` is allowed as the configured subject; any other
//! token under this scheme is denied, and the chain stops there.

use portcullis_sdk::{Authenticator, Denial, Host, Identity, LogLevel, Request, Verdict};
use serde::Deserialize;

/// The `Authorization` scheme this provider answers for (compared case-insensitively).
const SCHEME: &str = "{{name}}";

/// The provider's `config` table from the gateway's config file, handed over as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who a caller with the right token is.
    pub subject: String,
    /// What that caller may do.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A configured instance: built once by `configure`, then asked once per request.
#[derive(Debug)]
pub struct {{Type}} {
    config: Config,
    token: String,
}

impl Authenticator for {{Type}} {
    type Config = Config;

    fn new(config: Config, host: &dyn Host) -> Result<Self, String> {
        let token = host
            .secret("token")
            .filter(|token| !token.is_empty())
            .ok_or("grant a non-empty secret named `token`: secrets = { token = \"env://…\" }")?;
        Ok(Self { config, token })
    }

    fn authenticate(&self, req: &dyn Request, host: &dyn Host) -> Verdict {
        let Some((scheme, token)) = req.header("authorization").and_then(|v| {
            v.split_once(' ')
                .map(|(scheme, token)| (scheme.to_owned(), token.trim().to_owned()))
        }) else {
            return Verdict::Abstain;
        };
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return Verdict::Abstain;
        }
        if host.constant_time_eq(token.as_bytes(), self.token.as_bytes()) {
            Identity::new(&self.config.subject)
                .with_scopes(self.config.scopes.iter().cloned())
                .into()
        } else {
            // Never log the token itself: logs are read by more people than secrets are.
            host.log(LogLevel::Info, "a `{{name}}` token did not match");
            Denial::invalid_token("unknown `{{name}}` token").into()
        }
    }
}

portcullis_sdk::export_authenticator!({{Type}});

#[cfg(test)]
mod tests {
    use portcullis_sdk::configure_authenticator;
    use portcullis_sdk::testing::{FakeHost, FakeRequest};

    use super::*;

    const CONFIG: &str = r#"{"subject": "partner", "scopes": ["mcp:read"]}"#;

    fn ask(authorization: Option<&str>) -> (Verdict, FakeHost) {
        let host = FakeHost::new().with_secret("token", "let-me-in");
        let provider: {{Type}} = configure_authenticator(CONFIG, &host).expect("configures");
        let mut req = FakeRequest::post("/mcp");
        if let Some(value) = authorization {
            req = req.header("Authorization", value);
        }
        (provider.authenticate(&req, &host), host)
    }

    #[test]
    fn the_granted_token_is_allowed_as_the_configured_subject() {
        let (verdict, _) = ask(Some("{{name}} let-me-in"));
        assert_eq!(
            verdict,
            Verdict::Allow(Identity::new("partner").with_scope("mcp:read"))
        );
    }

    #[test]
    fn another_token_under_this_scheme_is_denied_and_logged_without_the_token() {
        let (verdict, host) = ask(Some("{{name}} guess"));
        assert_eq!(verdict.denial().map(|d| d.status), Some(401));
        assert!(host.logged("did not match"));
        assert!(!host.logged("guess"));
    }

    #[test]
    fn other_schemes_and_no_header_abstain() {
        assert_eq!(ask(Some("Bearer let-me-in")).0, Verdict::Abstain);
        assert_eq!(ask(None).0, Verdict::Abstain);
    }

    #[test]
    fn configure_fails_without_the_token_secret() {
        let error = configure_authenticator::<{{Type}}>(CONFIG, &FakeHost::new()).unwrap_err();
        assert!(error.contains("`token`"), "{error}");
    }
}
