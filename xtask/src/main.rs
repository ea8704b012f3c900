//! Project tasks behind the README's two quickstart commands.
//!
//! - `cargo xtask run`: installs the `wasm32-wasip2` target if missing, builds the example
//!   providers and starts the gateway on its embedded default.
//! - `cargo xtask test`: installs the target if missing, then runs every check CI runs:
//!   formatting, clippy, the host workspace tests (which build the guests) and the guest
//!   workspace's native tests.
//! - `cargo xtask lang`: installs componentize-py and componentize-js (pinned) under
//!   `target/lang-tools/` and builds the Python and JavaScript providers (see `lang.rs`);
//!   `test` runs it first.
//! - `cargo xtask upstreams`: installs the differential suite's Python and Node MCP servers
//!   (pinned) under `target/differential/` and the OAuth clients the authorization-server
//!   tests drive under `target/clients/` (see `upstreams.rs`); `test` runs it first.
//! - `cargo xtask deploy-providers`: builds the example providers and copies the ones
//!   `deploy/kubernetes/` names into `deploy/kubernetes/providers/`, where its
//!   `configMapGenerator` reads them.
//! - `cargo xtask fuzz [target] [seconds]`: the `fuzz/` targets for longer (see
//!   [`fuzz`]); `cargo xtask test` runs each for a few seconds.
//! - `cargo xtask load` and `cargo xtask reload-bench`: the load benchmarks recorded in
//!   `BENCHMARKS.md`.

mod fuzz;
mod lang;
mod upstreams;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    let root = project_root();
    match task.as_str() {
        "run" => run(&root),
        "test" => test(&root),
        "guests" => build_guests(&root).map(drop),
        "deploy-providers" => deploy_providers(&root),
        "lang" => lang::build(&root).map(drop),
        "upstreams" => upstreams::install(&root).map(drop),
        "fuzz" => fuzz::long(&root, &std::env::args().skip(2).collect::<Vec<_>>()),
        "load" => load(&root, "run.sh"),
        "reload-bench" => load(&root, "reload.sh"),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 run     build the example providers and start the gateway on its demo config\n  \
                 test    run every test and check that CI runs\n  \
                 guests  build the guest providers for wasm32-wasip2\n  \
                 deploy-providers  build the example providers into deploy/kubernetes/providers/\n  \
                 lang    install componentize-py/-js and build the Python and JS providers\n  \
                 upstreams  install the Python and Node MCP servers and OAuth clients the tests drive\n  \
                 fuzz [target] [secs]  run the fuzz targets (nightly), 300 s each by default\n  \
                 load    load benchmark: gateway (auth off, API key, JWT, Wasm) vs nginx\n  \
                 reload-bench  hot-reload latency and throughput during swaps"
            );
            bail!("unknown task `{task}`")
        }
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Installs the `wasm32-wasip2` target when the pinned toolchain lacks it.
fn ensure_wasm_target(root: &Path) -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .current_dir(root)
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (is rustup installed?)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-wasip2")
    {
        return Ok(());
    }
    eprintln!("xtask: installing the wasm32-wasip2 target");
    cargo_like(root, "rustup", &["target", "add", "wasm32-wasip2"])
}

/// Builds every guest component; returns the directory holding the `.wasm` files.
fn build_guests(root: &Path) -> anyhow::Result<PathBuf> {
    ensure_wasm_target(root)?;
    let target_dir = root.join("target").join("guests");
    let manifest = root.join("guest-providers").join("Cargo.toml");
    cargo_like(
        root,
        "cargo",
        &[
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
            &manifest.to_string_lossy(),
            "--target-dir",
            &target_dir.to_string_lossy(),
        ],
    )?;
    Ok(target_dir.join("wasm32-wasip2").join("release"))
}

/// Copies the built examples `built/<crate_name>.wasm` into `dir` under the names a config's
/// `component` key gives them (`partner_token.wasm` → `partner-token.wasm`).
fn copy_examples(built: &Path, dir: &Path, examples: &[&str]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for example in examples {
        let from = built.join(format!("{example}.wasm"));
        let to = dir.join(format!("{}.wasm", example.replace('_', "-")));
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// The providers `deploy/kubernetes/configmap.yaml` names, where its kustomization's
/// `configMapGenerator` reads them.
fn deploy_providers(root: &Path) -> anyhow::Result<()> {
    let built = build_guests(root)?;
    let dir = root.join("deploy").join("kubernetes").join("providers");
    copy_examples(&built, &dir, &["partner_token", "mcp_tool_policy"])?;
    eprintln!("xtask: providers copied to {}", dir.display());
    Ok(())
}

fn run(root: &Path) -> anyhow::Result<()> {
    let built = build_guests(root)?;
    let providers = root.join("target").join("demo").join("providers");
    copy_examples(
        &built,
        &providers,
        &[
            "partner_token",
            "hmac_signature",
            "ip_allowlist",
            "mcp_tool_policy",
        ],
    )?;
    let extra: Vec<String> = std::env::args().skip(2).collect();
    let mut args = vec![
        "run".to_owned(),
        "--package".into(),
        "portcullis-cli".into(),
        "--".into(),
        "serve".into(),
        "--providers".into(),
        providers.to_string_lossy().into_owned(),
    ];
    args.extend(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cargo_like(root, "cargo", &args)
}

/// The load harnesses behind `BENCHMARKS.md`: guests (both probe versions, via the tests
/// crate's build script), a release build, then `tests/load/<script>`.
fn load(root: &Path, script: &str) -> anyhow::Result<()> {
    build_guests(root)?;
    cargo_like(
        root,
        "cargo",
        &["build", "--tests", "--package", "portcullis-tests"],
    )?;
    // One invocation for the binary and the harness's helpers: built separately, the two
    // package selections unify features differently and each rebuilds wasmtime and ring.
    cargo_like(
        root,
        "cargo",
        &[
            "build",
            "--release",
            "--package",
            "portcullis-cli",
            "--package",
            "portcullis-tests",
            "--bin",
            "portcullis",
            "--example",
            "bare_proxy",
            "--example",
            "verify_rs256",
        ],
    )?;
    let script = root.join("tests").join("load").join(script);
    cargo_like(root, "bash", &[&script.to_string_lossy()])
}

fn test(root: &Path) -> anyhow::Result<()> {
    ensure_wasm_target(root)?;
    let mut test_env = lang::build(root)?;
    test_env.extend(upstreams::install(root)?);
    let guest_manifest = root.join("guest-providers").join("Cargo.toml");
    let guest_manifest = guest_manifest.to_string_lossy();
    let guest_target = root.join("target").join("guests");
    let guest_target = guest_target.to_string_lossy();
    cargo_like(root, "cargo", &["fmt", "--all", "--check"])?;
    cargo_like(
        root,
        "cargo",
        &[
            "fmt",
            "--all",
            "--check",
            "--manifest-path",
            &guest_manifest,
        ],
    )?;
    cargo_like(
        root,
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    cargo_like(
        root,
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--manifest-path",
            &guest_manifest,
            "--target-dir",
            &guest_target,
            "--",
            "-D",
            "warnings",
        ],
    )?;
    cargo_like(
        root,
        "cargo",
        &[
            "test",
            "--workspace",
            "--manifest-path",
            &guest_manifest,
            "--target-dir",
            &guest_target,
        ],
    )?;
    cargo_like_with_env(root, "cargo", &["test", "--workspace"], &test_env)?;
    fuzz::smoke(root)?;
    Ok(())
}

fn cargo_like(root: &Path, program: &str, args: &[&str]) -> anyhow::Result<()> {
    cargo_like_with_env(root, program, args, &[])
}

fn cargo_like_with_env(
    root: &Path,
    program: &str,
    args: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<()> {
    eprintln!("xtask: {program} {}", args.join(" "));
    let status = Command::new(program)
        .current_dir(root)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
