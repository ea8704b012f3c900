//! A configured Wasm provider: instances of one component with one config, and the calls
//! into them under deadline, memory cap and output bounds.
//!
//! Instance lifecycle: every instance is configured once (`configure` with the operator's
//! JSON) before its first call. In [`InstanceMode::Pooled`] a healthy instance goes back to
//! an idle list after its call and is reused; in [`InstanceMode::Fresh`] every call gets a
//! new instance that is dropped afterwards. In both modes an instance whose call failed in
//! any way (trap, timeout, bad output) is dropped, never reused: after a trap wasmtime refuses
//! to re-enter it, and after a timeout its state is unknown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::Resource;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::{authenticator, authorizer, types};
use super::error::{CallError, LoadError};
use super::limits::Limits;
use super::runtime::{LoadedComponent, ProviderKind, ProviderPre};
use super::state::{Grants, RequestHandle, StoreState};
use crate::context::RequestContext;
use crate::verdict::{Denial, DenialKind, Identity, Verdict};

/// How instances are reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceMode {
    /// Reuse healthy instances, keeping at most `max_idle` of them between calls. State
    /// written by one call stays visible to later calls on the same instance.
    Pooled {
        /// Idle instances kept ready.
        max_idle: usize,
    },
    /// A new instance for every call: no state survives a call; costs tens of µs per call.
    Fresh,
}

impl Default for InstanceMode {
    fn default() -> Self {
        Self::Pooled { max_idle: 16 }
    }
}

/// A provider ready to answer calls.
#[derive(Debug)]
pub struct WasmProvider {
    component: LoadedComponent,
    grants: Arc<Grants>,
    config_json: String,
    mode: InstanceMode,
    idle: Mutex<Vec<Ready>>,
}

struct Ready {
    store: Store<StoreState>,
    exports: Exports,
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ready")
    }
}

enum Exports {
    Authenticator(authenticator::Authenticator),
    Authorizer(authorizer::Authorizer),
}

/// Raised from the epoch callback when a call passes its deadline.
#[derive(Debug)]
struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

impl WasmProvider {
    /// Configures `component` as provider `grants.provider`, with `config_json` passed to
    /// every instance's `configure`. The first instance is created now, so a configuration
    /// the provider rejects (or a provider that traps while configuring) fails here, at load,
    /// and not on the first request.
    pub async fn new(
        component: LoadedComponent,
        grants: Grants,
        config_json: String,
        mode: InstanceMode,
    ) -> Result<Self, LoadError> {
        let provider = Self {
            component,
            grants: Arc::new(grants),
            config_json,
            mode,
            idle: Mutex::new(Vec::new()),
        };
        let first = provider
            .instantiate()
            .await
            .map_err(|e| LoadError::Configure {
                name: provider.grants.provider.clone(),
                reason: e.to_string(),
            })?;
        provider.put_back(first);
        Ok(provider)
    }

    /// The provider's name in config.
    pub fn name(&self) -> &str {
        &self.grants.provider
    }

    /// Which world the component implements.
    pub fn kind(&self) -> ProviderKind {
        self.component.kind
    }

    /// SHA-256 of the component bytes.
    pub fn content_hash(&self) -> &str {
        &self.component.content_hash
    }

    /// The sandbox limits in force.
    pub fn limits(&self) -> &Limits {
        &self.grants.limits
    }

    /// Number of idle instances kept ready.
    pub fn idle_instances(&self) -> usize {
        self.lock_idle().len()
    }

    /// Asks an authenticator who the caller is.
    pub async fn authenticate(&self, request: &Arc<RequestContext>) -> Result<Verdict, CallError> {
        let mut ready = self.checkout().await?;
        let Ready { store, exports } = &mut ready;
        let Exports::Authenticator(exports) = exports else {
            return Err(self.bad_output("an authorizer was called as an authenticator".into()));
        };
        let outcome = self
            .guarded(store, self.grants.limits.timeout, async |store| {
                let handle = store
                    .data_mut()
                    .table
                    .push(RequestHandle(request.clone()))?;
                let borrowed = Resource::<RequestHandle>::new_borrow(handle.rep());
                let verdict = exports.call_authenticate(&mut *store, borrowed).await;
                store.data_mut().table.delete(handle)?;
                verdict
            })
            .await;
        let verdict = match outcome {
            Ok(v) => self.map_verdict(v),
            Err(e) => Err(e),
        };
        if verdict.is_ok() {
            self.put_back(ready);
        }
        verdict
    }

    /// Asks an authorizer whether `caller` may make `request`.
    pub async fn authorize(
        &self,
        request: &Arc<RequestContext>,
        caller: &Identity,
    ) -> Result<Result<(), Denial>, CallError> {
        let mut ready = self.checkout().await?;
        let Ready { store, exports } = &mut ready;
        let Exports::Authorizer(exports) = exports else {
            return Err(self.bad_output("an authenticator was called as an authorizer".into()));
        };
        let wit_caller = types::Identity {
            subject: caller.subject.clone(),
            scopes: caller.scopes.clone(),
            claims: caller.claims.clone(),
        };
        let outcome = self
            .guarded(store, self.grants.limits.timeout, async |store| {
                let handle = store
                    .data_mut()
                    .table
                    .push(RequestHandle(request.clone()))?;
                let borrowed = Resource::<RequestHandle>::new_borrow(handle.rep());
                let result = exports
                    .call_authorize(&mut *store, borrowed, &wit_caller)
                    .await;
                store.data_mut().table.delete(handle)?;
                result
            })
            .await;
        let result = match outcome {
            Ok(Ok(())) => Ok(Ok(())),
            Ok(Err(denial)) => self.map_denial(denial).map(Err),
            Err(e) => Err(e),
        };
        if result.is_ok() {
            self.put_back(ready);
        }
        result
    }

    /// Runs `call` on `store` with the provider's deadline, classifying failures.
    async fn guarded<R>(
        &self,
        store: &mut Store<StoreState>,
        timeout: Duration,
        call: impl AsyncFnOnce(&mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        store.data_mut().begin_call(timeout);
        store.set_epoch_deadline(1);
        // The epoch callback interrupts the guest at its deadline. No outer timer: every host
        // import is synchronous and bounded, so the guest is the only thing that can run
        // long, and a tokio timer per call would cost more than the rest of the call.
        call(store).await.map_err(|e| self.classify(e, timeout))
    }

    async fn checkout(&self) -> Result<Ready, CallError> {
        if let Some(ready) = self.lock_idle().pop() {
            return Ok(ready);
        }
        self.instantiate().await
    }

    fn put_back(&self, ready: Ready) {
        if let InstanceMode::Pooled { max_idle } = self.mode {
            let mut idle = self.lock_idle();
            if idle.len() < max_idle {
                idle.push(ready);
            }
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Ready>> {
        // Poisoning means a panic elsewhere while pushing or popping; the Vec is intact.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new instance, configured and ready for calls.
    async fn instantiate(&self) -> Result<Ready, CallError> {
        let mut store = Store::new(&self.component.engine, StoreState::new(self.grants.clone()));
        store.limiter(|state| &mut state.store_limits);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let pre = self.component.pre.clone();
        let config = self.config_json.clone();
        let exports = self
            .guarded(
                &mut store,
                self.grants.limits.configure_timeout,
                async |store| match &pre {
                    ProviderPre::Authenticator(pre) => {
                        let bindings = pre.instantiate_async(&mut *store).await?;
                        Ok(bindings
                            .call_configure(&mut *store, &config)
                            .await?
                            .map(|()| Exports::Authenticator(bindings)))
                    }
                    ProviderPre::Authorizer(pre) => {
                        let bindings = pre.instantiate_async(&mut *store).await?;
                        Ok(bindings
                            .call_configure(&mut *store, &config)
                            .await?
                            .map(|()| Exports::Authorizer(bindings)))
                    }
                },
            )
            .await?
            .map_err(|reason| CallError::BadOutput {
                provider: self.name().to_owned(),
                reason: format!("configure failed: {reason}"),
            })?;
        Ok(Ready { store, exports })
    }

    fn classify(&self, error: wasmtime::Error, timeout: Duration) -> CallError {
        let provider = self.name().to_owned();
        if error.downcast_ref::<DeadlineExceeded>().is_some() {
            return CallError::Timeout { provider, timeout };
        }
        let reason = match error.downcast_ref::<Trap>() {
            Some(Trap::StackOverflow) => "stack overflow (recursion too deep)".to_owned(),
            Some(Trap::UnreachableCodeReached) => {
                "unreachable code reached (a panic in the guest)".to_owned()
            }
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        };
        let lowered = format!("{error:#}");
        let reason = if lowered.contains("memory") && lowered.contains("grow") {
            format!(
                "memory limit of {} bytes reached ({reason})",
                self.grants.limits.memory_bytes
            )
        } else if lowered.contains("pooling") || lowered.contains("maximum concurrent") {
            return CallError::Unavailable { provider, reason };
        } else {
            reason
        };
        CallError::Trap { provider, reason }
    }

    fn bad_output(&self, reason: String) -> CallError {
        CallError::BadOutput {
            provider: self.name().to_owned(),
            reason,
        }
    }

    fn map_verdict(&self, verdict: types::Verdict) -> Result<Verdict, CallError> {
        match verdict {
            types::Verdict::Abstain => Ok(Verdict::Abstain),
            types::Verdict::Allow(id) => {
                let identity = Identity {
                    subject: id.subject,
                    scopes: id.scopes,
                    claims: id.claims,
                };
                self.grants
                    .limits
                    .check_identity(&identity)
                    .map_err(|reason| self.bad_output(reason))?;
                Ok(Verdict::Allow(identity))
            }
            types::Verdict::Deny(denial) => self.map_denial(denial).map(Verdict::Deny),
        }
    }

    fn map_denial(&self, denial: types::Denial) -> Result<Denial, CallError> {
        self.grants
            .limits
            .check_denial_text(&denial.code, &denial.reason)
            .map_err(|reason| self.bad_output(reason))?;
        let kind = match denial.status {
            401 => DenialKind::Unauthenticated,
            403 => DenialKind::Forbidden,
            other => {
                return Err(self.bad_output(format!("denial status {other} is not 401 or 403")));
            }
        };
        Ok(Denial {
            kind,
            code: denial.code,
            reason: denial.reason,
        })
    }
}
