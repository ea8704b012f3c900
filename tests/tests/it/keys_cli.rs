//! `portcullis keys add|list|revoke` and the `api_key` provider's `keys_file`: each command
//! line parsed by the binary's own parser and run by the function its `main` calls, on files
//! in a temp dir; then a gateway with hot reload on, following the keys file as the commands
//! change it, reading keys from `Authorization: Bearer` and `X-API-Key`, and stripping both
//! before the upstream.

use std::path::Path;

use clap::Parser as _;
use portcullis::engine::api_key::hash_key;
use portcullis::engine::api_key::keys_file::{self, KEY_PREFIX};
use portcullis_cli::{Cli, Command, keys};
use portcullis_tests::eventually;
use portcullis_tests::upstream::RecordingUpstream;

use crate::gateway_harness::{Reply, send, serve_watched};

/// Runs the shell-quoted command line `portcullis LINE` as `main` does: what it prints, or
/// its error message.
fn portcullis(line: &str) -> Result<String, String> {
    let words = shlex::split(line).unwrap_or_else(|| panic!("not a command line: {line}"));
    let cli = Cli::try_parse_from(std::iter::once("portcullis".to_owned()).chain(words))
        .map_err(|e| e.to_string())?;
    match cli.command {
        Some(Command::Keys(args)) => keys::run(&args).map_err(|e| format!("{e:#}")),
        other => panic!("not a command of this suite: {other:?}"),
    }
}

fn ok(line: &str) -> String {
    portcullis(line).unwrap_or_else(|e| panic!("expected: `{line}` to succeed\ngot: {e}"))
}

fn refused(line: &str) -> String {
    portcullis(line)
        .err()
        .unwrap_or_else(|| panic!("expected: `{line}` to be refused"))
}

/// The value printed after `label` at the start of a line (`key      pck_…`).
fn printed(out: &str, label: &str) -> String {
    out.lines()
        .find_map(|line| line.strip_prefix(label))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("expected: a `{label}` line\ngot: {out}"))
}

/// A gateway config whose `/mcp` route goes to `upstream` through an `api_key` provider
/// reading `keys.toml` beside it.
fn write_config(dir: &Path, upstream: &str) -> std::path::PathBuf {
    let config = dir.join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:9\"\n\n\
             [providers.keys]\ntype = \"api_key\"\nkeys_file = \"keys.toml\"\n\n\
             [[routes]]\npath = \"/mcp\"\nupstream = \"{upstream}/mcp\"\nchain = [\"keys\"]\n"
        ),
    )
    .expect("write config");
    config
}

async fn call(base: &str, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    all.extend_from_slice(headers);
    send(
        &format!("{base}/mcp"),
        "POST",
        &all,
        Some(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
    )
    .await
}

async fn with_bearer(base: &str, key: &str) -> Reply {
    call(base, &[("authorization", &format!("Bearer {key}"))]).await
}

fn answered(reply: &Reply, status: u16) -> Result<(), String> {
    if reply.status == status {
        Ok(())
    } else {
        Err(format!("{} {}", reply.status, reply.body))
    }
}

#[test]
fn add_prints_a_key_once_and_list_never_shows_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keys.toml");
    let f = file.display();
    let out = ok(&format!(
        "keys add agent-1 --file {f} --scopes mcp:read,mcp:tools --expires 2099-01-01T00:00:00Z"
    ));
    assert_eq!(printed(&out, "name"), "agent-1");
    let key = printed(&out, "key");
    assert!(key.starts_with(KEY_PREFIX), "{out}");
    assert_eq!(printed(&out, "expires"), "2099-01-01T00:00:00Z");
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(!text.contains(&key), "the key itself is stored:\n{text}");
    assert!(text.contains(&hash_key(&key)), "{text}");
    let stored = &keys_file::read(&file).expect("valid").keys[0];
    assert_eq!(stored.scopes, ["mcp:read", "mcp:tools"]);
    assert!(stored.created.is_some());

    let second = printed(
        &ok(&format!(
            "keys add agent-2 --file {f} --scopes a --expires 30d"
        )),
        "key",
    );
    assert_ne!(second, key);
    let error = refused(&format!("keys add agent-1 --file {f} --scopes a"));
    assert!(error.contains("already in the file"), "{error}");
    let error = refused(&format!(
        "keys add agent-3 --file {f} --scopes a --expires 2020-01-01T00:00:00Z"
    ));
    assert!(
        error.contains("--expires") && error.contains("not in the future"),
        "{error}"
    );
    assert!(refused(&format!("keys add 'a b' --file {f} --scopes a")).contains("plain label"));

    ok(&format!(
        "keys revoke agent-2 --file {f} --reason 'laptop lost'"
    ));
    let listed = ok(&format!("keys list --file {f}"));
    for secret in [&key, &second] {
        assert!(
            !listed.contains(secret.as_str()),
            "a key is listed:\n{listed}"
        );
    }
    assert!(!listed.contains("sha256:"), "a hash is listed:\n{listed}");
    let lines: Vec<&str> = listed.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("EXPIRES"),
        "{listed}"
    );
    assert!(
        lines[1].starts_with("agent-1") && lines[1].contains("mcp:read,mcp:tools"),
        "{listed}"
    );
    assert!(lines[1].ends_with("no"), "{listed}");
    assert!(
        lines[2].starts_with("agent-2") && lines[2].contains("(laptop lost)"),
        "{listed}"
    );
    let again = ok(&format!("keys revoke agent-2 --file {f}"));
    assert!(again.contains("already revoked"), "{again}");
    assert!(refused(&format!("keys revoke nobody --file {f}")).contains("no key is named"));
}

#[test]
fn the_keys_file_is_found_through_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "http://127.0.0.1:9");
    let c = config.display();
    ok(&format!("keys add agent-1 -c {c} --scopes mcp:read"));
    assert!(dir.path().join("keys.toml").exists());
    assert!(ok(&format!("keys list -c {c}")).contains("agent-1"));

    let mut text = std::fs::read_to_string(&config).expect("read");
    text.push_str("\n[providers.more]\ntype = \"api_key\"\nkeys_file = \"more.toml\"\n");
    std::fs::write(&config, text).expect("write");
    let error = refused(&format!("keys list -c {c}"));
    assert!(
        error.contains("--provider") && error.contains("keys, more"),
        "{error}"
    );
    ok(&format!("keys add other -c {c} --provider more --scopes a"));
    assert!(ok(&format!("keys list -c {c} --provider more")).contains("other"));
}

#[test]
fn concurrent_adds_all_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keys.toml");
    let names: Vec<String> = (0..8).map(|i| format!("agent-{i}")).collect();
    std::thread::scope(|scope| {
        for name in &names {
            let file = &file;
            scope.spawn(move || {
                ok(&format!(
                    "keys add {name} --file {} --scopes a",
                    file.display()
                ))
            });
        }
    });
    let stored: Vec<String> = keys_file::read(&file)
        .expect("valid")
        .keys
        .into_iter()
        .map(|k| k.name)
        .collect();
    for name in &names {
        assert!(
            stored.contains(name),
            "expected: {name} in the file\ngot: {stored:?}"
        );
    }
    assert_eq!(stored.len(), names.len(), "{stored:?}");
}

#[tokio::test]
async fn the_gateway_follows_the_keys_file_the_cli_writes() {
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &upstream.url);
    let c = config.display();
    let first = printed(
        &ok(&format!("keys add agent-1 -c {c} --scopes mcp:read")),
        "key",
    );
    let gateway = serve_watched(config.clone(), None).await;
    let base = gateway.base.clone();
    answered(&with_bearer(&base, &first).await, 200).expect("the first key works");

    // Added while the gateway runs: served after the reload its rewrite causes.
    let second = printed(
        &ok(&format!("keys add agent-2 -c {c} --scopes mcp:read")),
        "key",
    );
    eventually("the key added at run time to be accepted", || async {
        answered(&with_bearer(&base, &second).await, 200)
    })
    .await;

    // `X-API-Key` works too, and neither header reaches the upstream.
    let before = upstream.hits();
    answered(&call(&base, &[("x-api-key", &second)]).await, 200).expect("X-API-Key");
    answered(
        &call(
            &base,
            &[
                ("x-api-key", &second),
                ("authorization", &format!("Bearer {second}")),
            ],
        )
        .await,
        200,
    )
    .expect("the same key in both headers");
    let seen = upstream.seen();
    assert_eq!(seen.len(), before + 2);
    for request in &seen {
        assert_eq!(
            request.header("authorization"),
            None,
            "{:?}",
            request.headers
        );
        assert_eq!(request.header("x-api-key"), None, "{:?}", request.headers);
    }
    // Two different keys: refused as malformed, whichever one is good.
    let both = call(
        &base,
        &[
            ("x-api-key", &second),
            ("authorization", &format!("Bearer {first}")),
        ],
    )
    .await;
    assert_eq!(both.status, 400, "{}", both.body);
    let both = call(
        &base,
        &[
            ("x-api-key", "pck_unknown"),
            ("authorization", &format!("Bearer {first}")),
        ],
    )
    .await;
    assert_eq!(both.status, 400, "{}", both.body);
    assert_eq!(
        upstream.hits(),
        before + 2,
        "a refused request reached the upstream"
    );

    // Last use, per key, in the metrics.
    let metrics = send(&format!("{base}/metrics"), "GET", &[], None).await;
    assert!(
        metrics
            .body
            .contains(r#"portcullis_api_key_last_used_seconds{provider="keys",key="agent-2"}"#),
        "{}",
        metrics.body
    );

    // Revoked: refused once the gateway has reloaded.
    ok(&format!("keys revoke agent-1 -c {c} --reason test"));
    eventually("the revoked key to be refused", || async {
        answered(&with_bearer(&base, &first).await, 401)
    })
    .await;
    // The reload kept agent-2's last use.
    let metrics = send(&format!("{base}/metrics"), "GET", &[], None).await;
    assert!(
        metrics.body.contains(r#"key="agent-2""#),
        "{}",
        metrics.body
    );

    // A bad file is refused as a whole, naming the file, the entry and the field; the last
    // good keys keep serving.
    let keys = dir.path().join("keys.toml");
    let good = std::fs::read_to_string(&keys).expect("read");
    std::fs::write(
        &keys,
        good.replacen("hash = \"sha256:", "hash = \"sha256:zz", 1),
    )
    .expect("write");
    eventually("the bad keys file to be rejected", || async {
        let ready = send(&format!("{base}/readyz"), "GET", &[], None).await;
        if ready.body.contains("keys.toml: `keys[0].hash`") {
            Ok(())
        } else {
            Err(ready.body)
        }
    })
    .await;
    answered(&with_bearer(&base, &second).await, 200).expect("the last good keys serve");
    answered(&with_bearer(&base, &first).await, 401).expect("and the revocation holds");
}

#[tokio::test]
async fn expired_keys_are_refused() {
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &upstream.url);
    std::fs::write(
        dir.path().join("keys.toml"),
        format!(
            "[[keys]]\nname = \"old\"\nhash = \"{}\"\nscopes = []\nexpires_at = \"2020-01-01T00:00:00Z\"\n",
            hash_key("pck_old")
        ),
    )
    .expect("write keys");
    let fresh = printed(
        &ok(&format!(
            "keys add fresh -c {} --scopes a --expires 1h",
            config.display()
        )),
        "key",
    );
    let gateway = serve_watched(config, None).await;
    let expired = with_bearer(&gateway.base, "pck_old").await;
    assert_eq!(expired.status, 401, "{}", expired.body);
    answered(&with_bearer(&gateway.base, &fresh).await, 200).expect("an unexpired key works");
}

#[test]
fn the_readme_keys_file_example_is_a_valid_keys_file() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README");
    let section = &readme[readme.find("### Managing API keys").expect("the section")..];
    let block = section
        .split("```toml,ignore\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the keys file example");
    let file = keys_file::parse(block, "README.md").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.keys[0].name, "agent-1");
}
