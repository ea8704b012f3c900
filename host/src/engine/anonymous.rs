//! The `anonymous` provider: allows every request as a fixed subject.
//!
//! It is the only way to run a route without credentials, and it has to be written into the
//! chain by name, so a public route is always a visible decision in the config. Put it last
//! in a chain to let unauthenticated callers in with reduced scopes (Oathkeeper's
//! "anonymous" authenticator); scope rules still apply to the identity it gives.

use std::sync::Arc;

use serde::Deserialize;

use super::{Authenticator, BoxFuture, ProviderError};
use crate::context::RequestContext;
use crate::verdict::{Identity, Verdict};

/// `[providers.NAME] type = "anonymous"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnonymousSettings {
    /// The subject given to every caller (default `anonymous`).
    #[serde(default = "default_subject")]
    pub subject: String,
    /// The scopes given to every caller (default none).
    #[serde(default)]
    pub scopes: Vec<String>,
}

fn default_subject() -> String {
    "anonymous".into()
}

/// Allows everyone as one identity.
#[derive(Debug)]
pub struct AnonymousProvider {
    name: String,
    identity: Identity,
}

impl AnonymousProvider {
    /// The provider `name` with `settings`.
    pub fn new(name: impl Into<String>, settings: AnonymousSettings) -> Self {
        Self {
            name: name.into(),
            identity: Identity {
                subject: settings.subject,
                scopes: settings.scopes,
                claims: vec![],
            },
        }
    }
}

impl Authenticator for AnonymousProvider {
    fn grants_wildcard(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn authenticate<'a>(
        &'a self,
        _request: &'a Arc<RequestContext>,
    ) -> BoxFuture<'a, Result<Verdict, ProviderError>> {
        Box::pin(std::future::ready(Ok(Verdict::Allow(
            self.identity.clone(),
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn allows_every_request_as_its_fixed_identity() {
        let settings: AnonymousSettings =
            serde_json::from_str(r#"{"scopes":["public"]}"#).expect("settings");
        let provider = AnonymousProvider::new("public", settings);
        let request = Arc::new(RequestContext::new(http::Method::GET, "/"));
        match provider.authenticate(&request).await.expect("answers") {
            Verdict::Allow(id) => {
                assert_eq!(
                    (id.subject.as_str(), id.scopes.as_slice()),
                    ("anonymous", &["public".to_owned()][..])
                )
            }
            other => panic!("expected: allow\ngot: {other:?}"),
        }
    }
}
