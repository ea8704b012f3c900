//! What a provider's store holds, and the host side of every import: the `request`
//! resource, the `host` capability interface and a capability-free WASI.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{host, types};
use super::kv::{CacheLimits, ProviderCache};
use super::limits::Limits;
use crate::context::RequestContext;
use crate::crypto;
use crate::log_text::escape_control;
use crate::mcp::McpTarget;
use crate::secret::SecretString;
use crate::shared::SharedState;

/// Most core instances one provider instance may create; see [`StoreState::new`].
pub(crate) const MAX_CORE_INSTANCES: usize = 32;

/// What the operator granted one provider; shared by all of its instances.
#[derive(Debug)]
pub struct Grants {
    /// The provider's name in config, used to tag its log lines.
    pub provider: String,
    /// Secrets by the name the provider asks for.
    pub secrets: HashMap<String, SecretString>,
    /// Whether the provider may read the request body.
    pub body: bool,
    /// Sandbox limits.
    pub limits: Limits,
    /// The provider's own cache.
    pub cache: ProviderCache,
    /// The fleet's Redis, when `[shared]` is on: the cache lives there instead, under the
    /// provider's name.
    pub shared: Option<Arc<SharedState>>,
}

impl Grants {
    /// Grants for `provider` with these secrets, body access and limits.
    pub fn new(
        provider: impl Into<String>,
        secrets: HashMap<String, SecretString>,
        body: bool,
        limits: Limits,
    ) -> Self {
        let cache = ProviderCache::new(CacheLimits {
            entries: limits.max_cache_entries,
            key_bytes: limits.max_cache_key_bytes,
            value_bytes: limits.max_cache_value_bytes,
            total_bytes: limits.max_cache_bytes,
        });
        Self {
            provider: provider.into(),
            secrets,
            body,
            limits,
            cache,
            shared: None,
        }
    }

    /// Keeps the provider's cache in the fleet's Redis rather than in this process.
    #[must_use]
    pub fn with_shared(mut self, shared: Option<Arc<SharedState>>) -> Self {
        self.shared = shared;
        self
    }
}

/// The request as the guest sees it: a handle to the host's context, nothing copied.
#[derive(Debug)]
#[expect(
    unreachable_pub,
    reason = "the generated bindings re-export it with `pub use`"
)]
pub struct RequestHandle(pub Arc<RequestContext>);

/// The data of one provider instance's `Store`.
pub(crate) struct StoreState {
    pub(super) grants: Arc<Grants>,
    pub(super) table: ResourceTable,
    wasi: WasiCtx,
    pub(super) store_limits: StoreLimits,
    /// When the current call must end; checked on every epoch tick.
    pub(super) deadline: Instant,
    log_lines: u32,
}

impl StoreState {
    /// A fresh state with a WASI context that grants nothing: no preopened directories, no
    /// environment, no arguments, closed stdin, discarded stdout/stderr, no sockets and no
    /// name lookups. Only clocks and random numbers work, which the std runtime needs.
    pub(crate) fn new(grants: Arc<Grants>) -> Self {
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        // Counts of core instances, memories and tables are fixed by the component's
        // structure (nothing can create more at run time), so these only refuse odd
        // components; the memory cap is what bounds a running guest. A Rust component has 3
        // core instances; componentize-py links CPython from 14 (componentize-js: 3).
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(grants.limits.memory_bytes)
            .table_elements(100_000)
            .instances(MAX_CORE_INSTANCES)
            .memories(4)
            .tables(8)
            .trap_on_grow_failure(true)
            .build();
        Self {
            grants,
            table: ResourceTable::new(),
            wasi,
            store_limits,
            deadline: Instant::now(),
            log_lines: 0,
        }
    }

    /// Starts a call: sets its deadline and resets per-call counters.
    pub(super) fn begin_call(&mut self, timeout: Duration) {
        self.deadline = Instant::now() + timeout;
        self.log_lines = 0;
    }

    fn request(&self, handle: &Resource<RequestHandle>) -> wasmtime::Result<&RequestContext> {
        Ok(&self.table.get(handle)?.0)
    }
}

impl std::fmt::Debug for StoreState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreState")
            .field("provider", &self.grants.provider)
            .finish_non_exhaustive()
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for StoreState {}

impl types::HostRequest for StoreState {
    fn method(&mut self, req: Resource<RequestHandle>) -> wasmtime::Result<String> {
        Ok(self.request(&req)?.method.as_str().to_owned())
    }

    fn path(&mut self, req: Resource<RequestHandle>) -> wasmtime::Result<String> {
        Ok(self.request(&req)?.path.clone())
    }

    fn query(&mut self, req: Resource<RequestHandle>) -> wasmtime::Result<Option<String>> {
        Ok(self.request(&req)?.query.clone())
    }

    fn header(
        &mut self,
        req: Resource<RequestHandle>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.request(&req)?.header(&name).map(str::to_owned))
    }

    fn header_all(
        &mut self,
        req: Resource<RequestHandle>,
        name: String,
    ) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .request(&req)?
            .header_all(&name)
            .map(str::to_owned)
            .collect())
    }

    fn header_names(&mut self, req: Resource<RequestHandle>) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .request(&req)?
            .headers
            .keys()
            .map(|k| k.as_str().to_owned())
            .collect())
    }

    fn peer_addr(&mut self, req: Resource<RequestHandle>) -> wasmtime::Result<Option<String>> {
        Ok(self.request(&req)?.peer.map(|p| p.to_string()))
    }

    fn client_cert(
        &mut self,
        req: Resource<RequestHandle>,
    ) -> wasmtime::Result<Option<types::ClientCert>> {
        Ok(self
            .request(&req)?
            .client_cert
            .as_ref()
            .map(|c| types::ClientCert {
                subject: c.subject.clone(),
                sans: c.sans.clone(),
                sha256_fingerprint: c.sha256_fingerprint.clone(),
            }))
    }

    fn mcp(&mut self, req: Resource<RequestHandle>) -> wasmtime::Result<Option<types::McpMessage>> {
        Ok(self.request(&req)?.mcp.as_ref().map(|m| types::McpMessage {
            session_id: m.session_id.clone(),
            calls: m
                .calls
                .iter()
                .map(|c| types::McpCall {
                    method: c.method.clone(),
                    target: match &c.target {
                        McpTarget::None => types::McpTarget::None,
                        McpTarget::Tool(t) => types::McpTarget::Tool(t.clone()),
                        McpTarget::Resource(r) => types::McpTarget::Resource(r.clone()),
                        McpTarget::Prompt(p) => types::McpTarget::Prompt(p.clone()),
                    },
                })
                .collect(),
        }))
    }

    fn body(&mut self, req: Resource<RequestHandle>) -> wasmtime::Result<Option<Vec<u8>>> {
        if !self.grants.body {
            return Ok(None);
        }
        Ok(self.request(&req)?.body.as_ref().map(|b| b.to_vec()))
    }

    fn drop(&mut self, req: Resource<RequestHandle>) -> wasmtime::Result<()> {
        self.table.delete(req)?;
        Ok(())
    }
}

impl host::Host for StoreState {
    fn log(&mut self, level: host::LogLevel, message: String) -> wasmtime::Result<()> {
        self.log_lines += 1;
        let limits = &self.grants.limits;
        if self.log_lines > limits.max_log_lines_per_call {
            return Ok(());
        }
        let mut message = message;
        if message.len() > limits.max_log_line_bytes {
            let mut cut = limits.max_log_line_bytes;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        // The guest chooses every byte: a raw `\n` would start a line of its own choosing
        // (a forged audit record), an ESC would drive the operator's terminal.
        let message = escape_control(&message);
        let provider = self.grants.provider.as_str();
        match level {
            host::LogLevel::Trace => tracing::trace!(provider, "{message}"),
            host::LogLevel::Debug => tracing::debug!(provider, "{message}"),
            host::LogLevel::Info => tracing::info!(provider, "{message}"),
            host::LogLevel::Warn => tracing::warn!(provider, "{message}"),
            host::LogLevel::Error => tracing::error!(provider, "{message}"),
        }
        if self.log_lines == limits.max_log_lines_per_call {
            tracing::warn!(
                provider,
                "log limit reached; dropping further lines of this call"
            );
        }
        Ok(())
    }

    fn secret(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self
            .grants
            .secrets
            .get(&name)
            .map(|s| s.expose().to_owned()))
    }

    fn sha256(&mut self, data: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        Ok(crypto::sha256(&data).to_vec())
    }

    fn hmac_sha256(&mut self, key: Vec<u8>, data: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        Ok(crypto::hmac_sha256(&key, &data).to_vec())
    }

    fn constant_time_eq(&mut self, a: Vec<u8>, b: Vec<u8>) -> wasmtime::Result<bool> {
        Ok(crypto::constant_time_eq(&a, &b))
    }

    fn verify_signature(
        &mut self,
        algorithm: host::SignatureAlgorithm,
        key: host::PublicKey,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> wasmtime::Result<Result<bool, String>> {
        let alg = match algorithm {
            host::SignatureAlgorithm::Rs256 => crypto::SignatureAlgorithm::Rs256,
            host::SignatureAlgorithm::Es256 => crypto::SignatureAlgorithm::Es256,
            host::SignatureAlgorithm::EdDsa => crypto::SignatureAlgorithm::EdDsa,
        };
        let key = match &key {
            host::PublicKey::Der(der) => crypto::PublicKeyInput::Der(der),
            host::PublicKey::Jwk(jwk) => crypto::PublicKeyInput::Jwk(jwk),
        };
        Ok(crypto::verify_signature(alg, key, &message, &signature))
    }

    async fn cache_get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        if let Some(shared) = &self.grants.shared {
            if !self.grants.cache.limits().fits_key(&key) {
                return Ok(None);
            }
            return Ok(shared.cache_get(&self.grants.provider, &key).await);
        }
        Ok(self.grants.cache.get(&key, Instant::now()))
    }

    async fn cache_set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u32,
    ) -> wasmtime::Result<()> {
        let ttl = Duration::from_millis(ttl_ms.into());
        if let Some(shared) = &self.grants.shared {
            // The same per-entry bounds as in memory, and the same rule: a refused value
            // leaves no older one behind. The total is Redis's to bound (`maxmemory`), and
            // every entry expires.
            let limits = self.grants.cache.limits();
            if limits.fits(&key, &value) {
                shared
                    .cache_set(&self.grants.provider, &key, &value, ttl)
                    .await;
            } else if limits.fits_key(&key) {
                shared.cache_remove(&self.grants.provider, &key).await;
            }
            return Ok(());
        }
        self.grants.cache.set(key, value, ttl, Instant::now());
        Ok(())
    }

    async fn cache_add(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u32,
    ) -> wasmtime::Result<bool> {
        let ttl = Duration::from_millis(ttl_ms.into());
        if let Some(shared) = &self.grants.shared {
            return Ok(self.grants.cache.limits().fits(&key, &value)
                && shared
                    .cache_add(&self.grants.provider, &key, &value, ttl)
                    .await);
        }
        Ok(self.grants.cache.add(key, value, ttl, Instant::now()))
    }

    fn now_unix_ms(&mut self) -> wasmtime::Result<u64> {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }
}
