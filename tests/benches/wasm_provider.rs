//! Wasm provider cost: the partner-token provider with a ready (pooled) instance, with a
//! fresh instance per call, and its native twin (the same Rust logic called directly through
//! the SDK's test kit, with the same `ring` crypto); plus component compile and cached load.
//!
//! The same provider written in Python (componentize-py) and JavaScript (componentize-js) is
//! measured beside the Rust component in the `languages` and `component_load` groups; those
//! need `cargo xtask lang` first and are skipped, saying so, when it could not build them.
//!
//! Run: `cargo bench -p portcullis-tests --bench wasm_provider`.

use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use portcullis::wasm::{InstanceMode, RuntimeConfig, WasmRuntime};
use portcullis_sdk::testing::{FakeHost, FakeRequest};
use portcullis_sdk::{Authenticator as _, Request};
use portcullis_tests::{ProviderSpec, guests, lang, request};

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

/// The partner-token components in Rust, Python and JavaScript; a language whose component
/// xtask could not build is left out (the reason is printed).
fn implementations() -> Vec<(&'static str, &'static str)> {
    let mut found = vec![("rust", guests::PARTNER_TOKEN)];
    for (language, file) in [
        ("python", "partner_token_py.wasm"),
        ("js", "partner_token_js.wasm"),
    ] {
        if let Some(path) = lang::guest(file) {
            found.push((language, path));
        }
    }
    found
}

/// Per-call cost on a ready (pooled) instance, same request and credentials for all three.
fn languages(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
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
    let mut group = c.benchmark_group("languages");
    for (language, path) in implementations() {
        let provider = rt.block_on(
            ProviderSpec::new(path)
                .secret("credentials", &credentials())
                .mode(InstanceMode::Pooled { max_idle: 4 })
                // A preempted call on a busy machine must not abort the run: this measures
                // cost, and the 20 ms default deadline is not what is under test.
                // 64 MiB: a pooled CPython instance's heap grows past the 16 MiB default over
                // many calls (see BENCHMARKS.md); the same cap for all three.
                .limits(|l| {
                    l.timeout = Duration::from_secs(1);
                    l.memory_bytes = 64 << 20;
                })
                .ready(),
        );
        group.bench_function(format!("{language}_ready_instance"), |b| {
            b.to_async(&rt)
                .iter(|| async { provider.authenticate(&req).await.expect("verdict") })
        });
    }
    group.finish();
}

/// Compile (Cranelift, no cache) and load from the on-disk artifact cache, per language.
/// Each iteration loads into a new runtime, created untimed: a runtime remembers what it
/// compiled, so reusing one would measure that memo instead.
fn loading(c: &mut Criterion) {
    let mut group = c.benchmark_group("component_load");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = |artifact_dir: Option<&Path>| {
        WasmRuntime::new(RuntimeConfig {
            max_instances: 10,
            artifact_dir: artifact_dir.map(Path::to_owned),
            ..RuntimeConfig::default()
        })
        .expect("runtime")
    };
    for (language, path) in implementations() {
        let bytes = std::fs::read(path).expect("component built");
        group.bench_function(format!("{language}_compile"), |b| {
            b.iter_batched_ref(
                || runtime(None),
                |fresh| fresh.load_bytes(language, &bytes).expect("loads"),
                BatchSize::PerIteration,
            )
        });
        runtime(Some(dir.path()))
            .load_bytes(language, &bytes)
            .expect("warms the cache");
        // A new runtime on a warm cache directory: what a restarted gateway pays.
        group.bench_function(format!("{language}_cached_artifact"), |b| {
            b.iter_batched_ref(
                || runtime(Some(dir.path())),
                |restarted| restarted.load_bytes(language, &bytes).expect("loads"),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, verdicts, languages, loading);
criterion_main!(benches);
