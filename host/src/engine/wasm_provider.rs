//! Wasm providers in the chain: a [`WasmProvider`] is an [`Authenticator`] or an
//! [`Authorizer`] like any built-in validator.

use std::sync::Arc;

use super::provider::{Authenticator, Authorizer, BoxFuture, ProviderError};
use crate::context::RequestContext;
use crate::verdict::{Denial, Identity, Verdict};
use crate::wasm::WasmProvider;

impl Authenticator for WasmProvider {
    fn name(&self) -> &str {
        WasmProvider::name(self)
    }

    fn authenticate<'a>(
        &'a self,
        request: &'a Arc<RequestContext>,
    ) -> BoxFuture<'a, Result<Verdict, ProviderError>> {
        Box::pin(async move { Ok(WasmProvider::authenticate(self, request).await?) })
    }
}

impl Authorizer for WasmProvider {
    fn name(&self) -> &str {
        WasmProvider::name(self)
    }

    fn authorize<'a>(
        &'a self,
        request: &'a Arc<RequestContext>,
        caller: &'a Identity,
    ) -> BoxFuture<'a, Result<Result<(), Denial>, ProviderError>> {
        Box::pin(async move { Ok(WasmProvider::authorize(self, request, caller).await?) })
    }
}
