//! Wasm provider cost: the partner-token provider with a ready (pooled) instance, with a
//! fresh instance per call, and its native twin (the same Rust logic called directly through
//! the SDK's test kit, with the same `ring` crypto); plus component compile and cached load.
//!
//! Run: `cargo bench -p portcullis-tests --bench wasm_provider`.

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::wasm::{InstanceMode, RuntimeConfig, WasmRuntime};
use portcullis_sdk::testing::{FakeHost, FakeRequest};
use portcullis_sdk::{Authenticator as _, Request};
use portcullis_tests::{ProviderSpec, guests, request};

fn credentials() -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, b"acme-secret");
    let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("acme:sha256:{hex}:mcp:read\n")
}

fn verdicts(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let pooled = rt.block_on(
        ProviderSpec::new(guests::PARTNER_TOKEN)
            .secret("credentials", &credentials())
            .mode(InstanceMode::Pooled { max_idle: 4 })
            .ready(),
    );
    let fresh = rt.block_on(
        ProviderSpec::new(guests::PARTNER_TOKEN)
            .secret("credentials", &credentials())
            .mode(InstanceMode::Fresh)
            .ready(),
    );
    let req = request(
        "POST",
        "/mcp",
        &[
            ("authorization", "partner-token acme:acme-secret"),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2025-06-18"),
            ("user-agent", "bench"),
        ],
    );
    let host = FakeHost::new().with_secret("credentials", &credentials());
    let native: partner_token::PartnerToken =
        portcullis_sdk::configure_authenticator("{}", &host).expect("native twin configures");
    let native_req = FakeRequest::post("/mcp")
        .header("authorization", "partner-token acme:acme-secret")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("user-agent", "bench");

    let mut group = c.benchmark_group("partner_token");
    group.bench_function("ready_instance", |b| {
        b.to_async(&rt)
            .iter(|| async { pooled.authenticate(&req).await.expect("verdict") })
    });
    group.bench_function("fresh_instance", |b| {
        b.to_async(&rt)
            .iter(|| async { fresh.authenticate(&req).await.expect("verdict") })
    });
    group.bench_function("native_twin", |b| {
        b.iter(|| native.authenticate(&native_req as &dyn Request, &host))
    });
    group.finish();
}

fn loading(c: &mut Criterion) {
    let bytes = std::fs::read(guests::PARTNER_TOKEN).expect("component built");
    let mut group = c.benchmark_group("component_load");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let uncached = WasmRuntime::new(RuntimeConfig {
        max_instances: 10,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    group.bench_function("compile", |b| {
        b.iter(|| uncached.load_bytes("partner-token", &bytes).expect("loads"))
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let cached = WasmRuntime::new(RuntimeConfig {
        max_instances: 10,
        artifact_dir: Some(dir.path().to_owned()),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    cached
        .load_file(Path::new(guests::PARTNER_TOKEN))
        .expect("warms the cache");
    group.bench_function("cached_artifact", |b| {
        b.iter(|| cached.load_bytes("partner-token", &bytes).expect("loads"))
    });
    group.finish();
}

criterion_group!(benches, verdicts, loading);
criterion_main!(benches);
