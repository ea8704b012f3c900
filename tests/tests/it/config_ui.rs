//! Config UI tests: every file in `tests/config/invalid/` is refused with the text in its
//! `.err` file; every file in `tests/config/valid/` loads; every ```toml block of the
//! README passes the first stage (blocks tagged ```toml,ignore are skipped).

use std::path::{Path, PathBuf};

fn config_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(sub)
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

#[test]
fn every_invalid_config_is_refused_with_its_expected_message() {
    let dir = config_dir("invalid");
    let mut failures = Vec::new();
    let cases = files(&dir, "toml");
    assert!(cases.len() >= 20, "the invalid folder lost its cases");
    for case in &cases {
        let expected_path = case.with_extension("err");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} has no .err file", case.display()));
        let expected = expected.trim();
        match portcullis::config::load(case) {
            Ok(_) => failures.push(format!(
                "{}: loaded, but should fail with\n  expected: {expected}",
                case.display()
            )),
            Err(error) => {
                let got = error.to_string();
                if !got.contains(expected) {
                    failures.push(format!(
                        "{}:\n  expected: {expected}\n  got:      {got}",
                        case.display()
                    ));
                } else if !got.contains(&case.display().to_string()) {
                    failures.push(format!(
                        "{}: the message does not name the file\n  got: {got}",
                        case.display()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn every_valid_config_loads() {
    for case in files(&config_dir("valid"), "toml") {
        if let Err(error) = portcullis::config::load(&case) {
            panic!("{} should load: {error}", case.display());
        }
    }
}

#[test]
fn every_readme_toml_snippet_parses() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).expect("README.md exists");
    let mut in_block = false;
    let mut block = String::new();
    let mut start = 0;
    let mut checked = 0;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if !in_block && trimmed == "```toml" {
            in_block = true;
            block.clear();
            start = i + 1;
        } else if in_block && trimmed.starts_with("```") {
            in_block = false;
            let source = format!("README.md:{start}");
            // Snippets may use variables they do not define; give every `${…}` a value.
            portcullis::config::parse_str_with(&block, &source, &|_| Some("x".into()))
                .unwrap_or_else(|e| panic!("README snippet at line {start} does not parse: {e}"));
            checked += 1;
        } else if in_block {
            block.push_str(line);
            block.push('\n');
        }
    }
    assert!(
        checked > 0,
        "README.md has no ```toml snippet; the config reference lost its example"
    );
}
