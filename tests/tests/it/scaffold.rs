//! `portcullis new` for real, and the provider author's guide (`docs/providers.md`) run as a
//! script.
//!
//! How the guide stays honest: [`the_provider_guide_runs_from_scaffold_to_a_hot_reloaded_provider`]
//! walks `docs/providers.md` top to bottom in a temp dir and fails on any code block it
//! cannot check:
//! - a `sh` block is run line by line: `portcullis …` is parsed by the binary's own clap
//!   definition and run through the same library functions as `main.rs` (`serve` starts the
//!   real gateway with its config watcher, on a free port instead of 8080), `cargo` is run
//!   for real, `cd`/`mkdir`/`cp` act on the walkthrough dir, and `curl` is sent to that
//!   gateway. A trailing `# 200` (curl) or `# allow`/`# deny` (eval) is the expected result;
//!   curl polls for it with a deadline, because the gateway reloads in the background;
//! - a block after `<!-- file: PATH -->` must equal the file the steps produced (so the
//!   provider shown is exactly what `portcullis new` writes, and that file was just
//!   compiled and tested);
//! - a block after `<!-- write: PATH -->` is written there (a config the gateway then loads,
//!   through the real config loader and hot reload);
//! - a block after `<!-- stdout -->` must equal what the previous command printed, with
//!   microsecond timings masked and the walkthrough dir shown as `./`;
//! - any other block fails the test.
//!
//! Build cost: the generated crates build with `target/` symlinked to the guest
//! workspace's `target/guests`, whose dependencies (serde, ring, the SDK's) are already
//! built by `tests/build.rs` with the same profile and lock file, so only the SDK and the
//! new crate compile. Each crate's build and test time is printed (`--nocapture`).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser as _;
use portcullis::mcp::{McpCall, McpMessage, McpTarget};
use portcullis::verdict::{DenialKind, Identity, Verdict};
use portcullis::wasm::ProviderKind;
use portcullis::wasm::{Grants, InstanceMode, Limits, WasmProvider};
use portcullis::{config, secret::SecretString};
use portcullis_cli::{self as cli, Cli, NewArgs};
use portcullis_tests::request;

use crate::gateway_harness::{Watched, send, serve_watched};

/// Long enough for a cold component compile and a reload on a busy two-core machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// Cargo builds of generated crates share one target dir; running them one at a time keeps
/// them from waiting on each other's lock with a clock running.
static CARGO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Runs `cargo args` in `dir` (a generated crate), with `dir/target` pointing at the shared
/// guest target dir. Returns stdout and stderr; panics with them when cargo fails.
fn cargo(dir: &Path, args: &[String]) -> String {
    let target = dir.join("target");
    if target.symlink_metadata().is_err() {
        let shared = repo_root().join("target").join("guests");
        std::fs::create_dir_all(&shared).expect("shared target dir");
        std::os::unix::fs::symlink(&shared, &target).expect("symlink target/");
    }
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(dir).args(args);
    // The outer build's settings are for the host workspace, not this crate.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        command.env_remove(var);
    }
    let started = Instant::now();
    let output = command.output().expect("cargo runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "`cargo {}` in {} failed:\n{text}",
        args.join(" "),
        dir.display()
    );
    eprintln!(
        "scaffold: `cargo {}` in {} took {:.1} s",
        args.join(" "),
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    text
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Lines with trailing space removed and `123µs` tokens masked, column widths ignored.
fn masked(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| {
            let indent = line.len() - line.trim_start().len();
            let words: Vec<&str> = line
                .split_whitespace()
                .map(|word| match word.strip_suffix("µs") {
                    Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => "Nµs",
                    _ => word,
                })
                .collect();
            format!("{}{}", " ".repeat(indent), words.join(" "))
        })
        .collect()
}

/// A gateway started by the guide's `portcullis serve`.
/// The state of a walk through the guide.
struct Walk {
    root: PathBuf,
    cwd: PathBuf,
    stdout: Option<String>,
    served: Option<Watched>,
    /// Every command run, for the check that the guide still does what it promises.
    ran: Vec<String>,
}

impl Walk {
    fn path(&self, relative: &Path) -> PathBuf {
        normalize(&self.cwd.join(relative))
    }

    /// Runs one line of a `sh` block (`line_no` for messages).
    async fn run(&mut self, line: &str, line_no: usize) {
        let (command, expect) = match line.split_once(" #") {
            Some((command, expect)) => (command.trim(), Some(expect.trim())),
            None => (line.trim(), None),
        };
        let words = shlex::split(command)
            .unwrap_or_else(|| panic!("docs/providers.md:{line_no}: cannot split `{command}`"));
        let Some(program) = words.first() else {
            return;
        };
        self.ran.push(format!(
            "{program} {}",
            words.get(1).map_or("", String::as_str)
        ));
        let at = format!("docs/providers.md:{line_no}: `{command}`");
        match program.as_str() {
            "cd" => {
                self.cwd = self.path(Path::new(&words[1]));
                assert!(self.cwd.is_dir(), "{at}: no such directory");
            }
            "mkdir" => {
                for dir in words[1..].iter().filter(|w| !w.starts_with('-')) {
                    std::fs::create_dir_all(self.path(Path::new(dir))).expect("mkdir");
                }
            }
            "cp" => {
                let (from, to) = (
                    self.path(Path::new(&words[1])),
                    self.path(Path::new(&words[2])),
                );
                std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("{at}: {e}"));
            }
            "cargo" => {
                let _one_at_a_time = CARGO.lock().await;
                let dir = self.cwd.clone();
                let args = words[1..].to_vec();
                tokio::task::spawn_blocking(move || cargo(&dir, &args))
                    .await
                    .expect("cargo thread");
            }
            "portcullis" => self.portcullis(&words, expect, &at).await,
            "curl" => self.curl(&words[1..], expect, &at).await,
            other => panic!(
                "{at}: the guide runs `{other}`, which this test cannot run; teach `Walk::run` \
                 or change the guide"
            ),
        }
    }

    async fn portcullis(&mut self, words: &[String], expect: Option<&str>, at: &str) {
        let cli = Cli::try_parse_from(words).unwrap_or_else(|e| panic!("{at}: {e}"));
        let command = cli
            .command
            .unwrap_or_else(|| panic!("{at}: name a command"));
        match command {
            cli::Command::New(mut args) => {
                args.dir = self.path(&args.dir);
                let printed = cli::new_provider(&args).unwrap_or_else(|e| panic!("{at}: {e}"));
                // The binary prints the directory as given; here it was made absolute.
                let prefix = format!("{}/", self.cwd.display());
                self.stdout = Some(printed.replace(&prefix, "./"));
            }
            cli::Command::Check(mut args) => {
                args.config = self.path(&args.config);
                let summary = cli::check(&args)
                    .await
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
                self.stdout = Some(summary);
            }
            cli::Command::Eval(mut args) => {
                args.config = self.path(&args.config);
                let report = cli::eval(&args)
                    .await
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
                let expected = match expect {
                    Some("allow") => true,
                    Some("deny") => false,
                    other => panic!("{at}: end an eval with `# allow` or `# deny`, not {other:?}"),
                };
                assert_eq!(report.allowed, expected, "{at}:\n{}", report.text);
                self.stdout = Some(report.text);
            }
            cli::Command::Serve(args) => {
                let config = self.path(args.config.as_deref().expect("serve --config"));
                self.served = Some(serve_watched(config, None).await);
                self.stdout = None;
            }
            other => panic!("{at}: this test does not run {other:?}; teach `Walk::portcullis`"),
        }
    }

    async fn curl(&mut self, args: &[String], expect: Option<&str>, at: &str) {
        let expected: u16 = expect
            .and_then(|e| e.parse().ok())
            .unwrap_or_else(|| panic!("{at}: end a curl with the expected status, `# 200`"));
        let base = &self
            .served
            .as_ref()
            .unwrap_or_else(|| panic!("{at}: no gateway is running; `portcullis serve` first"))
            .base;
        let mut headers = Vec::new();
        let mut url = None;
        let mut words = args.iter();
        while let Some(word) = words.next() {
            match word.as_str() {
                "-i" | "-s" => {}
                "-H" => {
                    let header = words.next().expect("-H takes a header");
                    let (name, value) = header.split_once(':').expect("-H 'Name: value'");
                    headers.push((name.trim().to_owned(), value.trim().to_owned()));
                }
                other if other.starts_with("http://127.0.0.1:8080") => {
                    url = Some(other.replacen("http://127.0.0.1:8080", base, 1));
                }
                other => panic!("{at}: this test does not know curl's `{other}`"),
            }
        }
        let url = url.unwrap_or_else(|| panic!("{at}: no http://127.0.0.1:8080 URL"));
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let started = Instant::now();
        loop {
            let reply = send(&url, "GET", &headers, None).await;
            if reply.status == expected {
                self.stdout = Some(reply.body);
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{at}\nexpected: {expected}\ngot: {} {}",
                reply.status,
                reply.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_provider_guide_runs_from_scaffold_to_a_hot_reloaded_provider() {
    let guide_path = repo_root().join("docs").join("providers.md");
    let guide = std::fs::read_to_string(&guide_path).expect("docs/providers.md");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("tempdir path");
    let mut walk = Walk {
        cwd: root.clone(),
        root,
        stdout: None,
        served: None,
        ran: Vec::new(),
    };
    let mut marker: Option<String> = None;
    let mut lines = guide.lines().enumerate();
    let mut blocks = 0;
    while let Some((index, line)) = lines.next() {
        let line_no = index + 1;
        if let Some(comment) = line
            .strip_prefix("<!-- ")
            .and_then(|l| l.strip_suffix(" -->"))
        {
            marker = Some(comment.to_owned());
            continue;
        }
        let Some(lang) = line.strip_prefix("```") else {
            if !line.trim().is_empty() {
                marker = None;
            }
            continue;
        };
        blocks += 1;
        let body: Vec<&str> = lines
            .by_ref()
            .map(|(_, l)| l)
            .take_while(|l| *l != "```")
            .collect();
        let text = body.join("\n") + "\n";
        let at = format!("docs/providers.md:{line_no} (```{lang})");
        match (marker.take(), lang) {
            (None, "sh") => {
                for (offset, command) in body.iter().enumerate() {
                    walk.run(command, line_no + 1 + offset).await;
                }
            }
            (Some(m), _) if m.starts_with("file: ") => {
                let path = walk.root.join(&m["file: ".len()..]);
                let actual = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{at}: {}: {e}", path.display()));
                assert!(
                    actual == text,
                    "{at} differs from {}:\nexpected (the file):\n{actual}\ngot (the guide):\n{text}",
                    path.display()
                );
            }
            (Some(m), _) if m.starts_with("write: ") => {
                std::fs::write(walk.root.join(&m["write: ".len()..]), &text).expect("write");
            }
            (Some(m), _) if m == "stdout" => {
                let printed = walk
                    .stdout
                    .as_deref()
                    .unwrap_or_else(|| panic!("{at}: the previous command printed nothing"));
                assert_eq!(
                    masked(&text),
                    masked(printed),
                    "{at}: expected (the guide) vs got (the command)"
                );
            }
            (marker, _) => panic!(
                "{at}: a block this test cannot check (marker {marker:?}); mark it or make it `sh`"
            ),
        }
    }

    // The guide still walks the whole way: scaffold, test, build, serve, hot reload, eval.
    for step in [
        "portcullis new",
        "cargo test",
        "cargo build",
        "portcullis serve",
        "cp acme-token/target/wasm32-wasip2/release/acme_token.wasm",
        "curl -i",
        "portcullis eval",
    ] {
        assert!(
            walk.ran.iter().any(|ran| ran.starts_with(step)),
            "the guide no longer runs `{step}`; ran: {:?}",
            walk.ran
        );
    }
    assert!(blocks >= 10, "the guide lost its code blocks ({blocks})");

    // What the guide says about the answer: the identity reaches the upstream headers.
    let served = walk.served.as_ref().expect("the guide started a gateway");
    let reply = send(
        &format!("{}/check/mcp", served.base),
        "GET",
        &[
            ("authorization", "acme-token let-me-in"),
            ("x-forwarded-for", "127.0.0.1"),
        ],
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-portcullis-subject"), Some("partner"));
    assert_eq!(reply.header("x-portcullis-provider"), Some("acme-token"));
}

/// Scaffolds `name` of `kind` into `dir`, runs its tests and builds its component.
async fn scaffold_and_build(dir: &Path, name: &str, kind: ProviderKind) -> PathBuf {
    let printed = cli::new_provider(&NewArgs {
        name: name.into(),
        kind,
        dir: dir.to_owned(),
        sdk: None,
    })
    .expect("scaffolds");
    assert!(
        printed.contains("cargo build --release --target wasm32-wasip2"),
        "{printed}"
    );
    let crate_dir = dir.join(name);
    let _one_at_a_time = CARGO.lock().await;
    let test_dir = crate_dir.clone();
    let tested = tokio::task::spawn_blocking(move || cargo(&test_dir, &strings(&["test"])))
        .await
        .expect("cargo thread");
    let passed: usize = tested
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(
        passed >= 3,
        "the scaffolded tests ran ({passed} passed):\n{tested}"
    );
    let build_dir = crate_dir.clone();
    tokio::task::spawn_blocking(move || {
        cargo(
            &build_dir,
            &strings(&["build", "--release", "--target", "wasm32-wasip2"]),
        )
    })
    .await
    .expect("cargo thread");
    crate_dir
        .join("target/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

async fn provider(path: &Path, name: &str, config: &str, secrets: &[(&str, &str)]) -> WasmProvider {
    let component = portcullis_tests::runtime()
        .load_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let secrets: HashMap<String, SecretString> = secrets
        .iter()
        .map(|(k, v)| ((*k).to_owned(), SecretString::new(*v)))
        .collect();
    let grants = Grants::new(name, secrets, false, Limits::default());
    WasmProvider::new(
        component,
        grants,
        config.to_owned(),
        InstanceMode::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{name} configures: {e}"))
}

/// The printed config table, inside a config that uses it, through the config loader.
fn printed_table_loads(name: &str, kind: ProviderKind, providers: &Path) {
    let (chain, authorizers) = match kind {
        ProviderKind::Authenticator => (format!("\"{name}\""), String::new()),
        ProviderKind::Authorizer => ("\"anyone\"".into(), format!("authorizers = [\"{name}\"]")),
    };
    let text = format!(
        "[server]\npublic_url = \"http://127.0.0.1:8080\"\nproviders_dir = {providers:?}\n\n\
         [[routes]]\npath = \"/mcp\"\nupstream = \"http://127.0.0.1:9/mcp\"\n\
         chain = [{chain}]\n{authorizers}\n\n\
         [providers.anyone]\ntype = \"anonymous\"\n\n{}",
        portcullis_cli::scaffold::config_snippet(name, kind)
    );
    config::load_str(&text, "<printed table>", providers)
        .unwrap_or_else(|e| panic!("the table `portcullis new` prints loads: {e}\n{text}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scaffolded_authenticator_builds_and_allows_denies_and_abstains_in_the_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "scaffolded-authn";
    let wasm = scaffold_and_build(dir.path(), name, ProviderKind::Authenticator).await;
    printed_table_loads(name, ProviderKind::Authenticator, dir.path());
    let provider = provider(
        &wasm,
        name,
        r#"{"subject": "partner", "scopes": ["mcp:read"]}"#,
        &[("token", "let-me-in")],
    )
    .await;
    let ask = |auth: Option<&'static str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let req = request("POST", "/mcp", &headers);
        let provider = &provider;
        async move { provider.authenticate(&req).await.expect("answers") }
    };
    match ask(Some("scaffolded-authn let-me-in")).await {
        Verdict::Allow(id) => assert_eq!(
            (id.subject.as_str(), id.scopes),
            ("partner", vec!["mcp:read".to_owned()])
        ),
        other => panic!("expected: allow\ngot: {other:?}"),
    }
    match ask(Some("Scaffolded-Authn guess")).await {
        Verdict::Deny(d) => assert_eq!(
            (d.kind, d.code_str()),
            (DenialKind::Unauthenticated, "invalid_token")
        ),
        other => panic!("expected: deny\ngot: {other:?}"),
    }
    assert!(matches!(
        ask(Some("Bearer let-me-in")).await,
        Verdict::Abstain
    ));
    assert!(matches!(ask(None).await, Verdict::Abstain));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scaffolded_authorizer_builds_and_guards_tools_in_the_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "scaffolded-authz";
    let wasm = scaffold_and_build(dir.path(), name, ProviderKind::Authorizer).await;
    printed_table_loads(name, ProviderKind::Authorizer, dir.path());
    let provider = provider(
        &wasm,
        name,
        r#"{"tool_prefix": "admin_", "scope": "admin"}"#,
        &[],
    )
    .await;
    let call = |tool: &str| {
        let mut ctx = (*request("POST", "/mcp", &[])).clone();
        ctx.mcp = Some(McpMessage {
            session_id: None,
            calls: vec![McpCall {
                method: "tools/call".into(),
                target: McpTarget::Tool(tool.into()),
            }],
        });
        Arc::new(ctx)
    };
    let caller = |scopes: &[&str]| Identity {
        subject: "ann".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        claims: vec![],
    };
    let denied = provider
        .authorize(&call("admin_reset"), &caller(&["mcp:read"]))
        .await
        .expect("answers")
        .expect_err("a guarded tool without the scope is denied");
    assert_eq!(
        (denied.kind, denied.code_str()),
        (DenialKind::Forbidden, "insufficient_scope")
    );
    assert_eq!(
        provider
            .authorize(&call("admin_reset"), &caller(&["admin"]))
            .await
            .expect("answers"),
        Ok(())
    );
    assert_eq!(
        provider
            .authorize(&call("search"), &caller(&[]))
            .await
            .expect("answers"),
        Ok(())
    );
}

#[test]
fn new_refuses_bad_names_and_existing_directories_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let new = |name: &str| {
        cli::new_provider(&NewArgs {
            name: name.into(),
            kind: ProviderKind::Authenticator,
            dir: dir.path().to_owned(),
            sdk: None,
        })
    };
    for bad in ["Acme", "acme_token", "9lives", "acme-", "../up", "self"] {
        let error = new(bad).expect_err(bad).to_string();
        assert!(
            error.contains(&format!("`{bad}` cannot be a provider name"))
                && error.contains("e.g. `acme-token`"),
            "expected: the name and the fix\ngot: {error}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("ls").count(),
        0,
        "nothing is written"
    );

    std::fs::create_dir(dir.path().join("taken")).expect("mkdir");
    let error = new("taken").expect_err("an existing directory").to_string();
    assert!(error.contains("taken already exists"), "{error}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("taken"))
            .expect("ls")
            .count(),
        0
    );

    let error = cli::new_provider(&NewArgs {
        name: "acme".into(),
        kind: ProviderKind::Authenticator,
        dir: dir.path().to_owned(),
        sdk: Some(dir.path().join("no-sdk-here")),
    })
    .expect_err("no SDK there")
    .to_string();
    assert!(
        error.contains("no-sdk-here") && error.contains("pass --sdk PATH"),
        "{error}"
    );
    assert!(!dir.path().join("acme").exists());
}

#[test]
fn new_help_explains_the_command() {
    let help = Cli::try_parse_from(["portcullis", "new", "--help"])
        .expect_err("--help stops parsing")
        .to_string();
    for needle in [
        "Usage: portcullis new [OPTIONS] <NAME>",
        "authenticator",
        "authorizer",
        "--dir <PATH>",
        "--sdk <PATH>",
        "PORTCULLIS_SDK",
        "cargo build --release --target",
        "never overwritten",
    ] {
        assert!(help.contains(needle), "expected: {needle}\ngot:\n{help}");
    }
}
