//! The fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer): a bounded smoke run of each for
//! `cargo xtask test`, and `cargo xtask fuzz [target] [seconds]` for longer runs.
//!
//! The targets need a nightly toolchain; without one they are skipped with a printed
//! reason. `cargo-fuzz` is installed when missing. All targets are built once, without
//! AddressSanitizer (the host crate forbids `unsafe`; see `fuzz/README.md`), into
//! `fuzz/target` so that they never contend for the root target dir's lock.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::cargo_like;

/// Every target, in the order the smoke run takes them.
const TARGETS: [&str; 4] = ["mcp_body", "request_context", "jwt", "config"];
/// Seconds per target in `cargo xtask test`.
const SMOKE_SECS: u64 = 10;
/// Seconds per target for `cargo xtask fuzz` without an explicit duration.
const LONG_SECS: u64 = 300;
/// Build flags shared by `build` and `run`, so that `run` reuses the build.
const BUILD_FLAGS: [&str; 4] = ["--sanitizer", "none", "--codegen-units", "16"];

/// `cargo xtask test`'s step: the fuzz crate's formatting, then every target for a few
/// seconds from its committed corpus.
pub fn smoke(root: &Path) -> anyhow::Result<()> {
    let manifest = root.join("fuzz").join("Cargo.toml");
    cargo_like(
        root,
        "cargo",
        &[
            "fmt",
            "--check",
            "--manifest-path",
            &manifest.to_string_lossy(),
        ],
    )?;
    if !ready(root)? {
        return Ok(());
    }
    build(root)?;
    for target in TARGETS {
        run_target(root, target, SMOKE_SECS)?;
    }
    Ok(())
}

/// `cargo xtask fuzz [target] [seconds]`.
pub fn long(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let targets: Vec<&str> = match args.first().map(String::as_str) {
        None | Some("all") => TARGETS.to_vec(),
        Some(name) if TARGETS.contains(&name) => vec![name],
        Some(name) => bail!("unknown fuzz target `{name}`; the targets are {TARGETS:?}"),
    };
    let secs = match args.get(1) {
        Some(secs) => secs
            .parse()
            .with_context(|| format!("`{secs}` is not a number of seconds"))?,
        None => LONG_SECS,
    };
    if !ready(root)? {
        bail!("cannot fuzz without a nightly toolchain (see above)");
    }
    build(root)?;
    for target in targets {
        run_target(root, target, secs)?;
    }
    Ok(())
}

/// Whether nightly is there (printing why not) and cargo-fuzz is installed.
fn ready(root: &Path) -> anyhow::Result<bool> {
    let nightly = Command::new("rustup")
        .current_dir(root)
        .args(["run", "nightly", "rustc", "--version"])
        .output();
    if !nightly.is_ok_and(|out| out.status.success()) {
        eprintln!(
            "xtask: SKIPPING the fuzz smoke run: no nightly toolchain (libFuzzer needs one); \
             install it with `rustup toolchain install nightly --profile minimal`"
        );
        return Ok(false);
    }
    let installed = Command::new("cargo")
        .current_dir(root)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !installed {
        eprintln!("xtask: installing cargo-fuzz");
        cargo_like(root, "cargo", &["install", "cargo-fuzz", "--locked"])?;
    }
    Ok(true)
}

fn target_dir(root: &Path) -> String {
    root.join("fuzz")
        .join("target")
        .to_string_lossy()
        .into_owned()
}

fn build(root: &Path) -> anyhow::Result<()> {
    let target_dir = target_dir(root);
    let mut args = vec!["+nightly", "fuzz", "build"];
    args.extend(BUILD_FLAGS);
    args.extend(["--target-dir", &target_dir]);
    cargo_like(root, "cargo", &args)
}

/// Runs `target` for `secs` seconds from its committed corpus. New inputs go to a scratch
/// folder (listed first, so libFuzzer writes there), never into `fuzz/corpus`; crashes go
/// to `fuzz/artifacts/<target>/`.
fn run_target(root: &Path, target: &str, secs: u64) -> anyhow::Result<()> {
    let target_dir = target_dir(root);
    let scratch = root
        .join("fuzz")
        .join("target")
        .join("scratch")
        .join(target);
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let scratch = scratch.to_string_lossy().into_owned();
    let corpus = root.join("fuzz").join("corpus").join(target);
    let corpus = corpus.to_string_lossy().into_owned();
    let max_time = format!("-max_total_time={secs}");
    let mut args = vec!["+nightly", "fuzz", "run"];
    args.extend(BUILD_FLAGS);
    args.extend(["--target-dir", &target_dir, target, &scratch, &corpus, "--"]);
    args.extend([
        &max_time,
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
    ]);
    cargo_like(root, "cargo", &args).with_context(|| {
        format!("fuzz target `{target}` failed; the input is in fuzz/artifacts/{target}/")
    })
}
