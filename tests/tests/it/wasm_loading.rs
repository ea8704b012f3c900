//! Loading components: worlds, imports, the artifact cache, directories.

use portcullis::wasm::{ComponentSource, LoadError, ProviderKind, RuntimeConfig, WasmRuntime};
use portcullis_tests::{guests, runtime};

#[test]
fn a_component_for_the_wrong_world_is_refused_at_load() {
    let err = runtime()
        .load_file(std::path::Path::new(guests::WRONG_WORLD))
        .expect_err("a CLI command is not a provider");
    assert!(matches!(err, LoadError::WrongWorld { .. }), "got: {err}");
    assert!(err.to_string().contains("wrong world"), "got: {err}");
}

#[test]
fn a_component_importing_an_ungranted_capability_is_refused_at_load() {
    let err = runtime()
        .load_file(std::path::Path::new(guests::UNGRANTED_IMPORT))
        .expect_err("imports something the host does not provide");
    assert!(matches!(err, LoadError::Link { .. }), "got: {err}");
    assert!(err.to_string().contains("evil:net"), "got: {err}");
}

#[test]
fn garbage_bytes_are_refused_with_a_clear_error() {
    let err = runtime()
        .load_bytes("garbage", b"\0asm not really")
        .expect_err("not a component");
    assert!(matches!(err, LoadError::Compile { .. }), "got: {err}");
}

#[test]
fn worlds_are_detected() {
    let rt = runtime();
    let kind = |path: &str| {
        rt.load_file(std::path::Path::new(path))
            .expect("loads")
            .kind
    };
    assert_eq!(kind(guests::PARTNER_TOKEN), ProviderKind::Authenticator);
    assert_eq!(kind(guests::IP_ALLOWLIST), ProviderKind::Authorizer);
    assert_eq!(kind(guests::MCP_TOOL_POLICY), ProviderKind::Authorizer);
}

#[test]
fn compiled_artifacts_are_cached_on_disk_by_content_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || RuntimeConfig {
        max_instances: 10,
        artifact_dir: Some(dir.path().join("cache")),
        ..RuntimeConfig::default()
    };
    let first = WasmRuntime::new(config()).expect("runtime");
    let loaded = first
        .load_file(std::path::Path::new(guests::PARTNER_TOKEN))
        .expect("loads");
    assert_eq!(loaded.source, ComponentSource::Compiled);
    drop(first);
    let second = WasmRuntime::new(config()).expect("runtime");
    let again = second
        .load_file(std::path::Path::new(guests::PARTNER_TOKEN))
        .expect("loads");
    assert_eq!(again.source, ComponentSource::Cached);
    assert_eq!(again.content_hash, loaded.content_hash);
    let artifacts: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .expect("cache dir exists")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    assert!(
        artifacts[0].starts_with(&loaded.content_hash),
        "{artifacts:?}"
    );
}

#[test]
fn a_damaged_cached_artifact_is_recompiled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let config = || RuntimeConfig {
        max_instances: 10,
        artifact_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    };
    let rt = WasmRuntime::new(config()).expect("runtime");
    rt.load_file(std::path::Path::new(guests::PARTNER_TOKEN))
        .expect("loads");
    drop(rt);
    for entry in std::fs::read_dir(&cache).expect("dir") {
        std::fs::write(entry.expect("entry").path(), b"not an artifact").expect("overwrite");
    }
    // A new runtime: the old one also remembers what it compiled, in memory.
    let rt = WasmRuntime::new(config()).expect("runtime");
    let again = rt
        .load_file(std::path::Path::new(guests::PARTNER_TOKEN))
        .expect("recompiles");
    assert_eq!(again.source, ComponentSource::Compiled);
}

#[test]
fn a_runtime_compiles_each_distinct_component_once() {
    let rt = WasmRuntime::new(RuntimeConfig {
        max_instances: 10,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let bytes = std::fs::read(guests::IP_ALLOWLIST).expect("built");
    assert_eq!(
        rt.load_bytes("a", &bytes).expect("loads").source,
        ComponentSource::Compiled
    );
    assert_eq!(
        rt.load_bytes("b", &bytes).expect("loads").source,
        ComponentSource::Cached
    );
}

#[test]
fn a_directory_loads_every_component_and_reports_each_bad_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(guests::PARTNER_TOKEN, dir.path().join("partner-token.wasm")).expect("copy");
    std::fs::copy(guests::WRONG_WORLD, dir.path().join("cli.wasm")).expect("copy");
    std::fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
    let loaded = runtime().load_dir(dir.path()).expect("dir reads");
    let summary: Vec<(String, bool)> = loaded
        .iter()
        .map(|(name, result)| (name.clone(), result.is_ok()))
        .collect();
    assert_eq!(
        summary,
        [
            ("cli".to_owned(), false),
            ("partner-token".to_owned(), true)
        ]
    );
}
