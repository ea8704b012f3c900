//! A configured Wasm provider: instances of one component with one config, and the calls
//! into them under deadline, memory cap and output bounds.
//!
//! Deadlines: every call into a guest, and every instance creation (instantiation plus
//! `configure`), runs under two clocks. Epoch interruption stops a guest that computes past
//! its deadline, and yields to the executor every tick so it cannot starve other requests.
//! It cannot stop a guest that *waits*: `std::thread::sleep`, Python's `time.sleep` or a JS
//! timer is a WASI `poll` on a clock, an async host call during which no guest code runs and
//! no epoch check happens. So the call's future also runs under `tokio::time::timeout`.
//! Dropping a wasmtime `call_async` future is supported: wasmtime resumes the suspended
//! fiber with a "future dropped" error, which unwinds the guest stack as a trap before the
//! drop returns, and leaves the store safe to drop (`Config::epoch_interruption` documents
//! this pairing for guests blocked in async host calls). The store is then dropped with its
//! instance, never reused, and the call fails as [`CallError::Timeout`].
//!
//! Concurrency: each provider admits at most [`Limits::max_concurrent_calls`] calls at once.
//! A call over the cap waits for a slot until its own deadline and then fails closed as
//! [`CallError::Unavailable`], so one slow provider holds at most that many of the
//! runtime's instance slots and other providers keep theirs.
//!
//! Instance lifecycle: every instance is configured once (`configure` with the operator's
//! JSON) before its first call. In [`InstanceMode::Pooled`] a healthy instance goes back to
//! an idle list after its call and is reused; in [`InstanceMode::Fresh`] every call gets a
//! new instance that is dropped afterwards. In both modes an instance whose call failed in
//! any way (trap, timeout, bad output) is dropped, never reused: after a trap wasmtime refuses
//! to re-enter it, and after a timeout its state is unknown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::component::Resource;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::{authenticator, authorizer, types};
use super::error::{CallError, LoadError};
use super::limits::Limits;
use super::runtime::{LoadedComponent, ProviderKind, ProviderPre};
use super::state::{Grants, RequestHandle, StoreState};
use crate::context::RequestContext;
use crate::log_text::escape_control;
use crate::verdict::{Denial, DenialKind, ErrorCode, Identity, Verdict};

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
    /// One permit per call allowed to run at once ([`Limits::max_concurrent_calls`]).
    slots: Semaphore,
    /// The number of permits `slots` was created with.
    cap: usize,
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
    /// the provider rejects (or a provider that traps while configuring, or takes longer than
    /// [`Limits::configure_timeout`]) fails here, at load, and not on the first request.
    pub async fn new(
        component: LoadedComponent,
        grants: Grants,
        config_json: String,
        mode: InstanceMode,
    ) -> Result<Self, LoadError> {
        let cap = grants
            .limits
            .max_concurrent_calls
            .min(Semaphore::MAX_PERMITS);
        let provider = Self {
            component,
            slots: Semaphore::new(cap),
            cap,
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

    /// Calls running now (or creating their instance).
    pub fn calls_in_flight(&self) -> usize {
        self.cap.saturating_sub(self.slots.available_permits())
    }

    /// The provider's cache, shared by its instances.
    pub fn cache(&self) -> &super::kv::ProviderCache {
        &self.grants.cache
    }

    /// Asks an authenticator who the caller is.
    pub async fn authenticate(&self, request: &Arc<RequestContext>) -> Result<Verdict, CallError> {
        let (_slot, budget) = self.admit().await?;
        let mut ready = self.checkout().await?;
        let Ready { store, exports } = &mut ready;
        let Exports::Authenticator(exports) = exports else {
            return Err(self.bad_output("an authorizer was called as an authenticator".into()));
        };
        let outcome = self
            .guarded(store, budget, async |store| {
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
        let (_slot, budget) = self.admit().await?;
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
            .guarded(store, budget, async |store| {
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

    /// Waits for a call slot, at most the call's deadline ([`Limits::timeout`]). Returns the
    /// slot and what is left of the deadline for the call itself.
    async fn admit(&self) -> Result<(SemaphorePermit<'_>, Duration), CallError> {
        let timeout = self.grants.limits.timeout;
        if let Ok(slot) = self.slots.try_acquire() {
            return Ok((slot, timeout));
        }
        let queued = Instant::now();
        match tokio::time::timeout(timeout, self.slots.acquire()).await {
            Ok(Ok(slot)) => Ok((slot, timeout.saturating_sub(queued.elapsed()))),
            // `Err(Elapsed)`, or `Ok(Err(Closed))`, which cannot happen: the semaphore is
            // never closed. Either way, no slot: fail closed.
            _ => Err(CallError::Unavailable {
                provider: self.name().to_owned(),
                reason: format!(
                    "{} calls already running (its `limits.max_concurrent_calls`); none ended \
                     within the {timeout:?} deadline",
                    self.grants.limits.max_concurrent_calls
                ),
            }),
        }
    }

    /// Runs `call` on `store` under the deadline `timeout`, classifying failures. On
    /// `Err`, the caller drops the store: after a timeout the guest was cut off mid-call.
    async fn guarded<R>(
        &self,
        store: &mut Store<StoreState>,
        timeout: Duration,
        call: impl AsyncFnOnce(&mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        store.data_mut().begin_call(timeout);
        store.set_epoch_deadline(1);
        // Two clocks (see the module docs): the epoch callback stops a guest computing past
        // its deadline, the timer one waiting in an async host call (a WASI clock `poll`),
        // which runs no guest code and so reaches no epoch check.
        match tokio::time::timeout(timeout, call(&mut *store)).await {
            Ok(result) => result.map_err(|e| self.classify(e, timeout)),
            Err(_elapsed) => Err(CallError::Timeout {
                provider: self.name().to_owned(),
                timeout,
            }),
        }
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
                // The guest's own text, which reaches logs and the CLI: one line, no controls.
                reason: format!("configure failed: {}", escape_control(&reason)),
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
            // May quote the guest (a backtrace names its functions), and reaches logs.
            None => escape_control(&format!("{error:#}")).into_owned(),
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
            // A 401 without a code is "no credential of mine", as the built-in providers say it.
            code: (!denial.code.is_empty()).then(|| ErrorCode::parse(&denial.code)),
            reason: denial.reason,
        })
    }
}
