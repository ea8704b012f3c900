//! The provider traits: one for authenticators, one for authorizers. Built-in validators
//! (API key, JWT, mTLS) and Wasm providers all implement them, so the chain treats them alike.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::context::RequestContext;
use crate::verdict::{Denial, Identity, Verdict};

/// A boxed, sendable future: what the object-safe provider traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A provider that could not produce a verdict. The chain never allows on an error: it
/// denies (fails closed) and records the error in the trace.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ProviderError(pub String);

impl From<crate::wasm::CallError> for ProviderError {
    fn from(e: crate::wasm::CallError) -> Self {
        Self(e.to_string())
    }
}

/// Establishes who the caller is.
pub trait Authenticator: Send + Sync + Debug {
    /// The provider's name in config (for traces, logs and metrics).
    fn name(&self) -> &str;

    /// `Allow` with an identity, `Deny` when the credential is for this provider and bad,
    /// `Abstain` when there is no credential of this provider's kind.
    fn authenticate<'a>(
        &'a self,
        request: &'a Arc<RequestContext>,
    ) -> BoxFuture<'a, Result<Verdict, ProviderError>>;

    /// Whether the scopes this provider grants are written by the operator in config (API
    /// keys, mTLS identities, anonymous access), so that the wildcard scope `*` in them
    /// means "every scope". Scopes that arrive in a credential (a JWT, a Wasm provider's
    /// identity) are the issuer's word, and `*` from there is refused: one token minted
    /// with `scope: "*"` by any trusted issuer would otherwise pass every rule.
    fn grants_wildcard(&self) -> bool {
        false
    }
}

/// Decides whether an authenticated caller may make this request.
pub trait Authorizer: Send + Sync + Debug {
    /// The provider's name in config.
    fn name(&self) -> &str;

    /// `Ok(Ok(()))` to let the request through, `Ok(Err(denial))` to refuse it.
    fn authorize<'a>(
        &'a self,
        request: &'a Arc<RequestContext>,
        caller: &'a Identity,
    ) -> BoxFuture<'a, Result<Result<(), Denial>, ProviderError>>;
}
