//! Embedding: the engine as a `tower` layer in front of a Rust service's own handlers (axum,
//! hyper, anything that is a `tower::Service`), with no gateway process.
//!
//! [`AuthLayer`] wraps a service in an [`AuthService`]. Every request takes the gateway's own
//! path: the same [`Site`] (routes, with their chains and rules as [`config::assemble`] builds
//! them), then [`admit`] — the `Origin` check, the client address behind trusted proxies, the
//! request context with the MCP JSON-RPC body parsed (so per-tool rules apply), and the one
//! decision function, [`Policy::decide`](crate::engine::Policy::decide). Then:
//!
//! - **Allowed**: the caller's [`Identity`] and the [`AuthenticatedBy`] provider go into the
//!   request's extensions, and the identity also into the `x-portcullis-*` headers
//!   (client-sent copies removed, as for a gateway upstream, so a service written for the
//!   gateway works unchanged). The inner service gets the body intact: when the engine read
//!   it, the same bytes are handed on. MCP listings (`tools/list`, …) in its answer are
//!   filtered to what the caller may call, as the gateway filters an upstream's.
//! - **MCP sessions**: an `Mcp-Session-Id` is let through only to the caller whose request
//!   opened it on that route, as by the gateway (404 otherwise; a `DELETE` ends it).
//! - **Refused**: exactly the gateway's answer, from [`Rejection`]: the same status,
//!   `WWW-Authenticate` challenge and JSON body. The inner service is not called.
//! - `/.well-known/oauth-protected-resource[/…]` is answered by the layer, because its
//!   challenges point there. A path no route covers is refused with 404, and a path not in
//!   normal form with 400, as the gateway refuses them: nothing passes by accident. A public
//!   path is a route whose chain names an `anonymous` provider.
//!
//! The gateway's own endpoints (`/healthz`, `/readyz`, `/metrics`, forward-auth) belong to the
//! service here and are not served; [`AuthLayer::metrics`] holds the decision metrics to
//! expose. The credential headers stay on the request (the service is the resource, not a
//! separate upstream).
//!
//! **Configuration**: the gateway's TOML through [`config::load_embedded`] and
//! [`AuthLayer::from_config`] ([`AuthLayer::from_file`] does both), or in code with
//! [`Builder`]. Routes need no `upstream`; one that is present is ignored, so one file can
//! drive both the gateway and the layer. Of `[server]`, `public_url` (the resource the
//! challenges name), `trusted_proxies`, `allowed_origins`, `max_body_bytes` and
//! `providers_dir` apply (`listen` only through the default origin policy's loopback test).
//! The peer address and a verified client certificate come from a [`ConnInfo`] in the
//! request's extensions, which the server puts there (the `embed-axum` example does it from
//! axum's `ConnectInfo`); without one the engine sees no peer.
//!
//! **Reload**: the layer holds the site in an `ArcSwap`; [`AuthLayer::swap`] and
//! [`AuthLayer::reload`] replace it for every clone of the layer and every service made from
//! it. Requests in flight finish on the site they began with. A failed reload changes nothing.
//!
//! ```
//! use http::{Request, Response, StatusCode};
//! use portcullis::config::raw::RawProviderSettings;
//! use portcullis::embed::{AuthLayer, Body};
//! use portcullis::engine::api_key::{ApiKeyEntry, ApiKeySettings, hash_key};
//! use portcullis::engine::RuleSettings;
//! use portcullis::verdict::Identity;
//! use tower::{Layer as _, ServiceExt as _};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = AuthLayer::builder()
//!     .public_url("https://api.example.com")
//!     .provider(
//!         "keys",
//!         RawProviderSettings::ApiKey(ApiKeySettings {
//!             header: None, // `Authorization: Bearer <key>` and `X-API-Key: <key>`
//!             scheme: None,
//!             keys: vec![ApiKeyEntry::hashed("ci", hash_key("s3cret"), ["reports:read"])],
//!             keys_file: None,
//!         }),
//!     )
//!     .route("/reports", ["keys"])
//!     .rule(RuleSettings {
//!         path: Some("/reports".into()),
//!         scopes: vec!["reports:read".into()],
//!         ..Default::default()
//!     })
//!     .build()
//!     .await?;
//!
//! // Any `tower::Service` taking `Request<portcullis::embed::Body>`; here, one that greets.
//! let app = layer.layer(tower::service_fn(|request: Request<Body>| async move {
//!     let caller = request.extensions().get::<Identity>().expect("set by the layer");
//!     Ok::<_, std::convert::Infallible>(Response::new(format!("hello {}", caller.subject)))
//! }));
//!
//! let anonymous = Request::get("/reports").body(Body::default())?;
//! let refused = app.clone().oneshot(anonymous).await?;
//! assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
//! assert!(refused.headers()["www-authenticate"].to_str()?.starts_with("Bearer resource_metadata="));
//!
//! let signed = Request::get("/reports")
//!     .header("authorization", "Bearer s3cret")
//!     .body(Body::default())?;
//! assert_eq!(app.oneshot(signed).await?.status(), StatusCode::OK);
//! # Ok(())
//! # }
//! ```

mod builder;

use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

pub use self::builder::Builder;
use crate::config::{self, Config};
use crate::engine::BoxFuture;
use crate::gateway::Site;
use crate::gateway::admission::{Entry, admit, listing_filter};
use crate::gateway::body::boxed;
pub use crate::gateway::body::{Body, BoxError};
use crate::gateway::handler::metadata;
use crate::gateway::listing::filter_response;
use crate::gateway::proxy::{add_identity_headers, strip_identity_headers};
use crate::gateway::request::check_path;
use crate::gateway::sessions::SessionBindings;
pub use crate::gateway::{ConnInfo, Rejection};
use crate::load::{self, SiteError};
use crate::observability::Metrics;
use crate::verdict::Identity;
use crate::wasm::WasmRuntime;

/// The provider (or `a+b` group) that authenticated the caller; in the request's extensions
/// beside the [`Identity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedBy(pub String);

/// A `tower` layer that puts the Portcullis engine in front of a service. Cloning is cheap;
/// clones share the site, so a [`swap`](Self::swap) reaches all of them.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    site: ArcSwap<Site>,
    metrics: Arc<Metrics>,
    /// MCP sessions and the callers that opened them; kept across reloads.
    sessions: Arc<SessionBindings>,
    /// Kept for reloads and for its epoch ticker, which Wasm deadlines need.
    runtime: Option<WasmRuntime>,
}

impl AuthLayer {
    /// A layer deciding with `site` (built with [`Site::new`] from a config and its
    /// assembled providers). Wasm providers in it need their runtime kept alive by the
    /// caller; [`from_config`](Self::from_config) does that.
    pub fn new(site: Site) -> Self {
        Self::with_runtime(site, None)
    }

    fn with_runtime(site: Site, runtime: Option<WasmRuntime>) -> Self {
        Self {
            shared: Arc::new(Shared {
                site: ArcSwap::from_pointee(site),
                metrics: Arc::new(Metrics::new()),
                sessions: Arc::default(),
                runtime,
            }),
        }
    }

    /// Builds every provider of `config` (validated by [`config::load_embedded`] or
    /// [`config::load`]) exactly as the gateway does. `runtime` serves Wasm providers; when
    /// the config has some and none is given, a default runtime is started.
    pub async fn from_config(
        config: &Config,
        runtime: Option<&WasmRuntime>,
    ) -> Result<Self, SiteError> {
        let loaded = load::from_config(config.clone(), runtime.cloned()).await?;
        Ok(Self::with_runtime(loaded.site, loaded.runtime))
    }

    /// Reads the config file at `path` ([`config::load_embedded`]) and builds the layer.
    pub async fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, SiteError> {
        Self::from_config(&config::load_embedded(path.as_ref())?, None).await
    }

    /// Builds a layer in code.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Replaces the site; requests in flight finish on the old one.
    pub fn swap(&self, site: Site) {
        self.shared.site.store(Arc::new(site));
    }

    /// Rebuilds every provider of `config` (with the layer's Wasm runtime, if it has one)
    /// and swaps the result in. On error nothing changes and the current site keeps serving.
    pub async fn reload(&self, config: &Config) -> Result<(), SiteError> {
        if config::needs_wasm(config) && self.shared.runtime.is_none() {
            return Err(SiteError::Runtime(
                "this layer was built without Wasm providers, so it has no runtime for them; \
                 build it with `AuthLayer::from_config` and a runtime"
                    .into(),
            ));
        }
        let loaded = load::from_config(config.clone(), self.shared.runtime.clone()).await?;
        self.swap(loaded.site);
        Ok(())
    }

    /// The site deciding requests now.
    pub fn site(&self) -> Arc<Site> {
        self.shared.site.load_full()
    }

    /// Decision metrics (Prometheus), for the service to expose.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// A service behind the Portcullis engine (made by [`AuthLayer`]).
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthService<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // `self.inner` was driven ready by `poll_ready`: it serves this call, and a fresh clone
        // stays behind for the next `poll_ready` (tower's usual pattern for boxed futures).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(guard(self.shared.clone(), inner, request.map(boxed)))
    }
}

/// One request through the layer.
async fn guard<S, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    request: Request<Body>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let site = shared.site.load_full();
    let path = request.uri().path();
    if let Err(rejection) = check_path(path) {
        return Ok(rejection.into_response());
    }
    if let Some(answer) = metadata(&site, request.method(), path) {
        return Ok(answer);
    }
    let conn = request
        .extensions()
        .get::<ConnInfo>()
        .cloned()
        .unwrap_or_default();
    let (mut parts, body) = request.into_parts();
    let mut admitted = match admit(
        &site,
        Entry::Direct,
        &mut parts,
        Some(body),
        &conn,
        &shared.metrics,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(refused) => return Ok(refused.into_response()),
    };
    let session = match shared.sessions.presented(&admitted, &parts) {
        Ok(session) => session,
        Err(refusal) => return Ok(*refusal),
    };
    let listing = listing_filter(&admitted, &parts)
        .map(|filter| filter.recording_event_ids(shared.sessions.event_recorder(&admitted)));
    strip_identity_headers(&mut parts.headers);
    add_identity_headers(&mut parts.headers, &admitted.identity, &admitted.provider);
    parts
        .extensions
        .insert(AuthenticatedBy(admitted.provider.clone()));
    parts
        .extensions
        .insert::<Identity>(admitted.identity.clone());
    let body = std::mem::take(&mut admitted.body);
    let method = parts.method.clone();
    let response = call_inner(&mut inner, Request::from_parts(parts, body))
        .await?
        .map(boxed);
    shared
        .sessions
        .track(&admitted, &method, session.as_deref(), &response);
    let (response, reason) = match filter_response(response, listing).await {
        Ok(response) => (response, String::new()),
        Err(rejection) => {
            let reason = rejection.error_body().1;
            (rejection.into_response(), reason)
        }
    };
    admitted.audit(response.status(), &reason);
    Ok(response)
}

/// The inner service's future, boxed outside the `async fn`: held there unboxed, its
/// `Send`-ness would have to hold for every lifetime in `Body`'s error type, which rustc
/// cannot prove for a generic service (the same higher-ranked `Send` limit that
/// [`Gateway::handle`](crate::gateway::Gateway::handle) works around).
fn call_inner<S, ResBody>(
    inner: &mut S,
    request: Request<Body>,
) -> BoxFuture<'static, Result<Response<ResBody>, S::Error>>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    Box::pin(inner.call(request))
}

// The README's "Embedding in a Rust service" example is compiled here, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
