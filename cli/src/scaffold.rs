//! `portcullis new`: scaffolds a provider crate from the templates in
//! `guest-providers/templates/`, which are embedded in the binary so an installed
//! `portcullis` scaffolds without the repository's templates at hand.
//!
//! The one thing the binary cannot carry is the SDK (`portcullis-sdk` is not on crates.io,
//! and its build script reads `wit/auth.wit` next to it), so the crate depends on it by
//! path: `--sdk PATH` (or `PORTCULLIS_SDK`), else the SDK of the checkout this binary was
//! built from, when it is still there. Nothing is written before the name, the target
//! directory and the SDK have all been checked.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use portcullis::wasm::ProviderKind;

/// One embedded template file: where it goes in the new crate, and its text.
struct Template {
    path: &'static str,
    text: &'static str,
}

macro_rules! template {
    ($kind:literal, $path:literal, $source:literal) => {
        Template {
            path: $path,
            text: include_str!(concat!(
                "../../guest-providers/templates/",
                $kind,
                "/",
                $source
            )),
        }
    };
}

const AUTHENTICATOR: &[Template] = &[
    template!("authenticator", "Cargo.toml", "Cargo.toml.tmpl"),
    template!("authenticator", "src/lib.rs", "src/lib.rs"),
    template!("authenticator", "README.md", "README.md"),
];

const AUTHORIZER: &[Template] = &[
    template!("authorizer", "Cargo.toml", "Cargo.toml.tmpl"),
    template!("authorizer", "src/lib.rs", "src/lib.rs"),
    template!("authorizer", "README.md", "README.md"),
];

/// The config table printed in the next steps, per kind.
const AUTHENTICATOR_CONFIG: &str =
    include_str!("../../guest-providers/templates/authenticator/provider.toml");
const AUTHORIZER_CONFIG: &str =
    include_str!("../../guest-providers/templates/authorizer/provider.toml");

/// The project's pinned toolchain, which also installs the `wasm32-wasip2` target: the crate
/// builds with the compiler the SDK is tested with.
const TOOLCHAIN: &str = include_str!("../../rust-toolchain.toml");

const GITIGNORE: &str = "/target\n";

/// The SDK of the checkout this binary was built from.
const BUILT_IN_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-providers/sdk");

/// What `portcullis new` is asked to do.
#[derive(Debug, Clone)]
pub struct NewProvider {
    /// The crate name (also the provider's and the component's name).
    pub name: String,
    /// Which world it targets.
    pub kind: ProviderKind,
    /// The directory to create the crate in (the crate is `<dir>/<name>`).
    pub dir: PathBuf,
    /// The SDK directory; `None` uses the checkout this binary was built from.
    pub sdk: Option<PathBuf>,
}

/// A crate written by [`scaffold`].
#[derive(Debug, Clone)]
pub struct Scaffolded {
    /// The crate's directory.
    pub dir: PathBuf,
    /// The provider's name.
    pub name: String,
    /// Which world it targets.
    pub kind: ProviderKind,
    /// The SDK directory the crate depends on (absolute).
    pub sdk: PathBuf,
    /// What to do next: build, install, configure.
    pub next_steps: String,
}

/// Why `portcullis new` refused.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a provider's crate, component and config name.
    #[error(
        "`{name}` cannot be a provider name: {why}; use lower-case letters, digits and single \
         dashes, starting with a letter (e.g. `acme-token`)"
    )]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The crate directory is already there.
    #[error("{} already exists; choose another name or --dir, or remove it", .0.display())]
    Exists(PathBuf),
    /// No SDK where it was looked for.
    #[error(
        "no Portcullis SDK at {}: {why}; pass --sdk PATH (or set PORTCULLIS_SDK) to the \
         `guest-providers/sdk` directory of a Portcullis checkout",
        path.display()
    )]
    NoSdk {
        /// Where the SDK was looked for.
        path: PathBuf,
        /// What was wrong there.
        why: String,
    },
    /// Writing the crate failed (and what was written is removed).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Words a crate cannot be named after (Rust keywords, and names that would shadow the
/// crates a provider uses).
const RESERVED: &[&str] = &[
    "abstract",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    "alloc",
    "core",
    "std",
    "test",
    "proc-macro",
    "serde",
    "serde-json",
    "portcullis",
    "portcullis-sdk",
];

/// The longest name accepted: it becomes a file name, a TOML key and a log tag.
const MAX_NAME: usize = 64;

/// Checks that `name` works as a crate name, a component file name (`<name>.wasm`) and a
/// bare TOML key (`[providers.<name>]`).
pub fn validate_name(name: &str) -> Result<(), ScaffoldError> {
    let bad = |why| {
        Err(ScaffoldError::BadName {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME {
        return bad("it is longer than 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("it may hold only lower-case ASCII letters, digits and `-`");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("it must start with a letter");
    }
    if name.ends_with('-') || name.contains("--") {
        return bad("dashes must separate words");
    }
    if RESERVED.contains(&name) {
        return bad("it is a Rust keyword or the name of a crate the provider uses");
    }
    Ok(())
}

/// `acme-token` → `AcmeToken`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Fills the `{{…}}` placeholders of a template.
fn render(text: &str, name: &str, kind: ProviderKind, sdk: &Path) -> String {
    // A TOML basic string, escaped by the TOML writer (paths may hold `"` or `\`).
    let sdk_toml = toml::Value::String(sdk.display().to_string()).to_string();
    text.replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
        .replace("{{Type}}", &type_name(name))
        .replace("{{ENV}}", &name.replace('-', "_").to_ascii_uppercase())
        .replace("{{kind}}", kind.as_str())
        .replace("{{sdk}}", &sdk_toml)
}

/// Finds and checks the SDK directory.
fn find_sdk(sdk: Option<&Path>) -> Result<PathBuf, ScaffoldError> {
    let path = sdk.map_or_else(|| PathBuf::from(BUILT_IN_SDK), Path::to_owned);
    let no_sdk = |why: String| ScaffoldError::NoSdk {
        path: path.clone(),
        why,
    };
    let manifest = std::fs::read_to_string(path.join("Cargo.toml")).map_err(|e| {
        no_sdk(match sdk {
            Some(_) => format!("cannot read its Cargo.toml ({e})"),
            None => {
                format!("the checkout this binary was built from has no SDK there any more ({e})")
            }
        })
    })?;
    let is_sdk = manifest
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("package")?.get("name")?.as_str().map(str::to_owned))
        .is_some_and(|name| name == "portcullis-sdk");
    if !is_sdk {
        return Err(no_sdk(
            "its Cargo.toml is not the `portcullis-sdk` package".into(),
        ));
    }
    std::fs::canonicalize(&path).map_err(|e| no_sdk(e.to_string()))
}

/// Writes the crate; on any failure removes what it wrote.
pub fn scaffold(request: &NewProvider) -> Result<Scaffolded, ScaffoldError> {
    validate_name(&request.name)?;
    let sdk = find_sdk(request.sdk.as_deref())?;
    let dir = request.dir.join(&request.name);
    if dir.symlink_metadata().is_ok() {
        return Err(ScaffoldError::Exists(dir));
    }
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ScaffoldError::Write { path, source }
    };
    std::fs::create_dir_all(&request.dir).map_err(write_error(&request.dir))?;
    // `create_dir`, not `_all`: if someone else created it since the check, refuse.
    std::fs::create_dir(&dir).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => ScaffoldError::Exists(dir.clone()),
        _ => ScaffoldError::Write {
            path: dir.clone(),
            source,
        },
    })?;
    write_files(&dir, request, &sdk).inspect_err(|_| {
        // Best effort: the error that matters is the one being returned.
        let _ = std::fs::remove_dir_all(&dir);
    })?;
    Ok(Scaffolded {
        next_steps: next_steps(&dir, &request.name, request.kind),
        dir,
        name: request.name.clone(),
        kind: request.kind,
        sdk,
    })
}

fn write_files(dir: &Path, request: &NewProvider, sdk: &Path) -> Result<(), ScaffoldError> {
    let templates = match request.kind {
        ProviderKind::Authenticator => AUTHENTICATOR,
        ProviderKind::Authorizer => AUTHORIZER,
    };
    let mut files: Vec<(PathBuf, String)> = templates
        .iter()
        .map(|t| {
            (
                dir.join(t.path),
                render(t.text, &request.name, request.kind, sdk),
            )
        })
        .collect();
    files.push((dir.join("rust-toolchain.toml"), TOOLCHAIN.to_owned()));
    files.push((dir.join(".gitignore"), GITIGNORE.to_owned()));
    // The SDK workspace's lock file pins the dependency versions the SDK is tested with, and
    // lets the first build run offline; cargo drops the entries this crate does not use.
    if let Some(lock) = sdk
        .parent()
        .and_then(|ws| std::fs::read_to_string(ws.join("Cargo.lock")).ok())
    {
        files.push((dir.join("Cargo.lock"), lock));
    }
    for (path, text) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ScaffoldError::Write {
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| ScaffoldError::Write { path, source })?;
    }
    Ok(())
}

/// The provider's `[providers.<name>]` table, as printed in the next steps.
pub fn config_snippet(name: &str, kind: ProviderKind) -> String {
    let template = match kind {
        ProviderKind::Authenticator => AUTHENTICATOR_CONFIG,
        ProviderKind::Authorizer => AUTHORIZER_CONFIG,
    };
    render(template, name, kind, Path::new(""))
}

fn next_steps(dir: &Path, name: &str, kind: ProviderKind) -> String {
    let crate_name = name.replace('-', "_");
    let (list, env) = match kind {
        ProviderKind::Authenticator => (
            "chain",
            format!(
                "\n     and export {}=<the token> for the gateway.",
                name.replace('-', "_").to_ascii_uppercase()
            ),
        ),
        ProviderKind::Authorizer => ("authorizers", String::new()),
    };
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "Created {kind} `{name}` in {dir}\n\n\
         Next steps:\n  \
         1. Test it and build the component:\n       \
            cd {dir}\n       \
            cargo test\n       \
            cargo build --release --target wasm32-wasip2\n  \
         2. Drop it into the gateway's providers directory (`server.providers_dir`):\n       \
            cp target/wasm32-wasip2/release/{crate_name}.wasm <providers_dir>/{name}.wasm\n  \
         3. Reference it in the config, and add \"{name}\" to a route's `{list}`{env}\n     \
            A running gateway reloads when the file or the config changes.\n\n",
        kind = kind.as_str(),
        dir = dir.display(),
    );
    for line in config_snippet(name, kind).lines() {
        let _ = writeln!(out, "     {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_crate_component_and_key_names_are_refused() {
        for (name, why) in [
            ("", "empty"),
            ("Acme", "lower-case"),
            ("acme_token", "lower-case"),
            ("acme token", "lower-case"),
            ("../escape", "lower-case"),
            ("2fa", "start with a letter"),
            ("-acme", "start with a letter"),
            ("acme-", "dashes"),
            ("acme--token", "dashes"),
            ("self", "keyword"),
            ("portcullis-sdk", "keyword"),
        ] {
            let error = validate_name(name).expect_err(name).to_string();
            assert!(
                error.contains(why),
                "{name:?}\nexpected: {why}\ngot: {error}"
            );
        }
        let long = "a".repeat(MAX_NAME + 1);
        assert!(validate_name(&long).is_err());
        for good in [
            "acme",
            "acme-token",
            "team2fa",
            "a-b-c",
            &"a".repeat(MAX_NAME),
        ] {
            validate_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn type_names_are_camel_case_of_the_words() {
        assert_eq!(type_name("acme-token"), "AcmeToken");
        assert_eq!(type_name("team2fa"), "Team2fa");
        assert_eq!(type_name("a-b-c"), "ABC");
    }

    #[test]
    fn every_placeholder_is_filled_and_the_sdk_path_is_toml_escaped() {
        let sdk = Path::new("/odd \"path\"\\sdk");
        for (kind, templates) in [
            (ProviderKind::Authenticator, AUTHENTICATOR),
            (ProviderKind::Authorizer, AUTHORIZER),
        ] {
            for template in templates {
                let text = render(template.text, "acme-token", kind, sdk);
                assert!(!text.contains("{{"), "{}: {text}", template.path);
                if template.path == "Cargo.toml" {
                    let parsed: toml::Table = text.parse().expect("the manifest is TOML");
                    let path = parsed["dependencies"]["portcullis-sdk"]["path"].as_str();
                    assert_eq!(path, Some("/odd \"path\"\\sdk"));
                }
            }
            assert!(!config_snippet("acme-token", kind).contains("{{"));
        }
    }

    #[test]
    fn an_existing_directory_is_never_touched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let existing = dir.path().join("acme");
        std::fs::create_dir(&existing).expect("mkdir");
        std::fs::write(existing.join("keep.txt"), "mine").expect("write");
        let error = scaffold(&NewProvider {
            name: "acme".into(),
            kind: ProviderKind::Authenticator,
            dir: dir.path().to_owned(),
            sdk: None,
        })
        .expect_err("an existing directory is refused");
        assert!(matches!(error, ScaffoldError::Exists(_)), "{error}");
        assert!(error.to_string().contains("already exists"), "{error}");
        let left: Vec<_> = std::fs::read_dir(&existing).expect("ls").collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn a_directory_that_is_not_the_sdk_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let not_sdk = dir.path().join("elsewhere");
        std::fs::create_dir(&not_sdk).expect("mkdir");
        std::fs::write(not_sdk.join("Cargo.toml"), "[package]\nname = \"other\"\n").expect("w");
        for sdk in [dir.path().join("missing"), not_sdk] {
            let error = scaffold(&NewProvider {
                name: "acme".into(),
                kind: ProviderKind::Authorizer,
                dir: dir.path().join("out"),
                sdk: Some(sdk.clone()),
            })
            .expect_err("not an SDK");
            let message = error.to_string();
            assert!(message.contains("pass --sdk"), "{message}");
            assert!(message.contains(&sdk.display().to_string()), "{message}");
        }
        assert!(!dir.path().join("out").exists());
    }
}
