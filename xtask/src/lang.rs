//! The providers written in other languages: installs their pinned tool chains under
//! `target/lang-tools/` and builds them into `target/guests-lang/`.
//!
//! - Python: a venv with `componentize-py` at the version pinned in
//!   `guest-providers/python/requirements.txt`.
//! - JavaScript: `npm ci` of `guest-providers/js/partner-token/package-lock.json` (which pins
//!   `@bytecodealliance/componentize-js`), run in a copy under `target/` so that the source
//!   tree never holds a `node_modules`.
//!
//! Each component is built by its own `build.sh` (the same script a provider author runs),
//! with the tool's path in `COMPONENTIZE_PY` / `COMPONENTIZE_JS`, and only when an input is
//! newer than the output. A tool that cannot be installed (no network, no `python3` or
//! `npm`) is not an error: its components are left out and the reason is returned, which
//! `test` passes to the tests in [`SKIP_ENV`] so they skip saying why. A component that
//! fails to build with an installed tool is an error.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context as _, bail};

/// The variable that tells the tests why some of these components were not built
/// (`portcullis_tests::lang::SKIP_ENV`).
pub const SKIP_ENV: &str = "PORTCULLIS_LANG_GUESTS_SKIP";

/// One component: its source directory, its output file and the tool that builds it.
struct Guest {
    dir: &'static str,
    output: &'static str,
    tool: Tool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Python,
    Js,
}

const GUESTS: &[Guest] = &[
    Guest {
        dir: "guest-providers/python/partner-token",
        output: "partner_token_py.wasm",
        tool: Tool::Python,
    },
    Guest {
        dir: "guest-providers/python/sandbox-probe",
        output: "sandbox_probe_py.wasm",
        tool: Tool::Python,
    },
    Guest {
        dir: "guest-providers/python/sleeper",
        output: "sleeper_py.wasm",
        tool: Tool::Python,
    },
    Guest {
        dir: "guest-providers/js/partner-token",
        output: "partner_token_js.wasm",
        tool: Tool::Js,
    },
    Guest {
        dir: "guest-providers/js/sleeper",
        output: "sleeper_js.wasm",
        tool: Tool::Js,
    },
];

/// Installs the tools and builds every component. Returns the environment for the test
/// run: `SKIP_ENV` with the reasons when a tool could not be installed, else nothing.
pub fn build(root: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
    let tools = root.join("target").join("lang-tools");
    let out = root.join("target").join("guests-lang");
    std::fs::create_dir_all(&out)?;
    let mut skipped = Vec::new();
    for tool in [Tool::Python, Tool::Js] {
        let installed = match tool {
            Tool::Python => install_componentize_py(root, &tools),
            Tool::Js => install_componentize_js(root, &tools),
        };
        let installed = match installed {
            Ok(found) => found,
            Err(e) if e.is::<Unavailable>() => {
                let reason = format!("{e:#}");
                eprintln!(
                    "xtask: skipping the {} providers: {reason}",
                    tool.language()
                );
                skipped.push(format!("{} tool not installed: {reason}", tool.language()));
                continue;
            }
            Err(e) => return Err(e),
        };
        for guest in GUESTS.iter().filter(|g| g.tool == tool) {
            build_guest(root, guest, &out.join(guest.output), &installed)?;
        }
    }
    Ok(if skipped.is_empty() {
        Vec::new()
    } else {
        vec![(SKIP_ENV, skipped.join("; "))]
    })
}

/// An install step failed for a reason outside the project (no network, no `python3` or
/// `npm`): the components it would build are skipped, with this as the reason.
#[derive(Debug)]
pub(crate) struct Unavailable(String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// An installed tool: the variable `build.sh` reads its path from, the path, and a stamp
/// file written after the install (newer than any component built with an older tool).
struct Installed {
    var: &'static str,
    tool: PathBuf,
    stamp: PathBuf,
}

impl Tool {
    fn language(self) -> &'static str {
        match self {
            Self::Python => "Python",
            Self::Js => "JavaScript",
        }
    }
}

/// A venv under `tools/venv` with the pinned componentize-py; reinstalled only when the pin
/// changes.
fn install_componentize_py(root: &Path, tools: &Path) -> anyhow::Result<Installed> {
    let requirements = root.join("guest-providers/python/requirements.txt");
    let pinned = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let venv = tools.join("venv");
    let stamp = venv.join("portcullis-requirements.txt");
    let tool = venv.join("bin").join("componentize-py");
    let installed = Installed {
        var: "COMPONENTIZE_PY",
        tool,
        stamp,
    };
    if installed.is_current(&pinned) {
        return Ok(installed);
    }
    eprintln!("xtask: installing componentize-py into {}", venv.display());
    pip_venv(&venv, &requirements)?;
    std::fs::write(&installed.stamp, pinned)?;
    Ok(installed)
}

/// `npm ci` of the JS provider's lockfile in `tools/js`; rerun only when the lockfile
/// changes.
fn install_componentize_js(root: &Path, tools: &Path) -> anyhow::Result<Installed> {
    let source = root.join("guest-providers/js/partner-token");
    let dir = tools.join("js");
    std::fs::create_dir_all(&dir)?;
    let lock = std::fs::read_to_string(source.join("package-lock.json"))
        .context("reading guest-providers/js/partner-token/package-lock.json")?;
    let tool = dir.join("node_modules/.bin/componentize-js");
    let stamp = dir.join("node_modules/portcullis-package-lock.json");
    let installed = Installed {
        var: "COMPONENTIZE_JS",
        tool,
        stamp,
    };
    if installed.is_current(&lock) {
        return Ok(installed);
    }
    eprintln!("xtask: installing componentize-js into {}", dir.display());
    npm_ci(&source, &dir)?;
    std::fs::write(&installed.stamp, lock)?;
    Ok(installed)
}

/// A Python venv at `venv` with the pinned `requirements` installed into it.
pub(crate) fn pip_venv(venv: &Path, requirements: &Path) -> anyhow::Result<()> {
    run_quiet(
        Command::new("python3").arg("-m").arg("venv").arg(venv),
        "python3 -m venv (is Python 3 with venv installed?)",
        &[],
    )?;
    run_quiet(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(requirements),
        &format!("pip install -r {}", requirements.display()),
        &[],
    )
}

/// `npm ci` in `dir` of the `package.json` and `package-lock.json` copied from `source` (so
/// that the source tree never holds a `node_modules`).
pub(crate) fn npm_ci(source: &Path, dir: &Path) -> anyhow::Result<()> {
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(source.join(file), dir.join(file))
            .with_context(|| format!("copying {file} to {}", dir.display()))?;
    }
    run_quiet(
        Command::new("npm").current_dir(dir).args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ]),
        "npm ci (is Node.js with npm installed?)",
        // The lockfile does not match package.json: a defect to fix, not a missing tool.
        &["EUSAGE"],
    )
}

impl Installed {
    /// Whether the tool is there and was installed from `pin` (the requirements or lockfile).
    fn is_current(&self, pin: &str) -> bool {
        self.tool.is_file() && std::fs::read_to_string(&self.stamp).ok().as_deref() == Some(pin)
    }
}

/// Runs `build.sh <output>` in the guest's directory unless the output is newer than every
/// input (its sources, the WIT contract and the tool's install).
fn build_guest(
    root: &Path,
    guest: &Guest,
    output: &Path,
    installed: &Installed,
) -> anyhow::Result<()> {
    let dir = root.join(guest.dir);
    let inputs = [dir.clone(), root.join("wit"), installed.stamp.clone()];
    if let Ok(built) = std::fs::metadata(output).and_then(|m| m.modified())
        && inputs.iter().all(|input| newest(input) <= built)
    {
        return Ok(());
    }
    eprintln!("xtask: building {}", output.display());
    let status = Command::new("bash")
        .current_dir(&dir)
        .arg("build.sh")
        .arg(output)
        .env(installed.var, &installed.tool)
        .stdin(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {}/build.sh", guest.dir))?;
    if !status.success() {
        bail!("`{}/build.sh` failed ({status})", guest.dir);
    }
    Ok(())
}

/// The latest modification time of `path` or anything under it (skipping `node_modules`
/// and Python caches, which are not inputs).
fn newest(path: &Path) -> SystemTime {
    let own = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let Ok(entries) = std::fs::read_dir(path) else {
        return own;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != "node_modules" && e.file_name() != "__pycache__")
        .map(|e| newest(&e.path()))
        .fold(own, SystemTime::max)
}

/// Runs an install step with no stdin. A failure is [`Unavailable`] (the tests skip),
/// unless its output contains one of `defects`, which mark a fault of the project (the
/// task fails). The error carries the step's last line of output.
pub(crate) fn run_quiet(cmd: &mut Command, what: &str, defects: &[&str]) -> anyhow::Result<()> {
    let output = match cmd.stdin(std::process::Stdio::null()).output() {
        Ok(output) => output,
        Err(e) => return Err(Unavailable(format!("{what}: cannot start it: {e}")).into()),
    };
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.contains("A complete log"))
        .unwrap_or("no output");
    let message = format!("{what} failed ({}): {last}", output.status);
    if defects.iter().any(|d| stderr.contains(d)) {
        bail!("{message}\n{stderr}");
    }
    Err(Unavailable(message).into())
}
