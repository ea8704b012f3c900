//! `portcullis clients add|list|revoke` and `portcullis signing-key new`: each command line
//! parsed by the binary's own parser and run by the function its `main` calls, on files in a
//! temp dir; then a gateway serving what they wrote, its token endpoint following the
//! clients file as the commands change it.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Parser as _;
use portcullis::engine::api_key::hash_key;
use portcullis::oauth::clients_file::{self, SECRET_PREFIX, TOKEN_EXCHANGE};
use portcullis_cli::{Cli, Command, clients, signing_key};
use portcullis_tests::eventually;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};

use crate::gateway_harness::{Reply, send, serve_watched};

/// Runs the shell-quoted command line `portcullis LINE` as `main` does: what it prints,
/// or its error message.
fn portcullis(line: &str) -> Result<String, String> {
    let words = shlex::split(line).unwrap_or_else(|| panic!("not a command line: {line}"));
    let cli = Cli::try_parse_from(std::iter::once("portcullis".to_owned()).chain(words))
        .map_err(|e| e.to_string())?;
    match cli.command {
        Some(Command::Clients(args)) => clients::run(&args).map_err(|e| format!("{e:#}")),
        Some(Command::SigningKey(args)) => signing_key::run(&args).map_err(|e| format!("{e:#}")),
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

/// The value printed after `label` at the start of a line (`client_secret  pcs_…`).
fn printed(out: &str, label: &str) -> String {
    out.lines()
        .find_map(|line| line.strip_prefix(label))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("expected: a `{label}` line\ngot: {out}"))
}

/// The `[[authorization_server.keys]]` table `signing-key new` printed.
fn keys_table(out: &str) -> String {
    out.lines()
        .skip_while(|l| !l.starts_with("[[authorization_server.keys]]"))
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn add_prints_a_secret_once_and_stores_only_its_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("clients.toml");
    let out = ok(&format!(
        "clients add agent-1 --file {} --scopes mcp:read,mcp:tools --resources /servers/a/mcp \
         --lifetime 300 --grants client_credentials,token-exchange --impersonation \
         --introspection",
        file.display()
    ));
    assert_eq!(printed(&out, "client_id"), "agent-1");
    let secret = printed(&out, "client_secret");
    assert!(secret.starts_with(SECRET_PREFIX), "{out}");
    assert!(out.contains("not stored"), "{out}");

    let text = std::fs::read_to_string(&file).expect("the file was created");
    assert!(
        !text.contains(&secret),
        "the secret is never written\n{text}"
    );
    let parsed = clients_file::read(&file).expect("the written file parses");
    let client = &parsed.clients[0];
    assert_eq!(client.secret_hash, Some(hash_key(&secret)));
    assert_eq!(client.scopes, ["mcp:read", "mcp:tools"]);
    assert_eq!(client.resources, ["/servers/a/mcp"]);
    assert_eq!(client.token_lifetime_secs, Some(300));
    assert_eq!(
        client.grants,
        Some(vec![
            "client_credentials".to_owned(),
            TOKEN_EXCHANGE.to_owned()
        ])
    );
    assert!(client.impersonation && client.introspection && !client.revoked);
    #[cfg(unix)]
    assert_eq!(
        mode(&file),
        0o600,
        "the file holds secret hashes: owner-only"
    );
}

#[test]
fn list_shows_every_client_but_never_a_hash_and_revoke_marks_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("clients.toml");
    let f = file.display();
    assert!(ok(&format!("clients list --file {f}")).contains("does not exist yet"));
    ok(&format!("clients add reader --file {f} --scopes mcp:read"));
    let jwks = dir.path().join("signer.jwks.json");
    std::fs::write(
        &jwks,
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
    )
    .expect("write jwks");
    let out = ok(&format!(
        "clients add signer --file {f} --scopes mcp:read --grants token-exchange --jwks-file {}",
        jwks.display()
    ));
    assert!(
        !out.contains("client_secret"),
        "private_key_jwt: no secret\n{out}"
    );
    let parsed = clients_file::read(&file).expect("parses");
    assert_eq!(parsed.clients[1].secret_hash, None);
    assert_eq!(
        parsed.clients[1].jwks_file.as_deref(),
        Some("signer.jwks.json"),
        "a JWKS beside the clients file is named relative to it"
    );

    let listed = ok(&format!("clients list --file {f}"));
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["ID", "SCOPES", "RESOURCES", "GRANTS", "AUTH", "REVOKED"],
            vec![
                "reader",
                "mcp:read",
                "(every",
                "route)",
                "client_credentials",
                "client_secret",
                "no"
            ],
            vec![
                "signer",
                "mcp:read",
                "(every",
                "route)",
                "token-exchange",
                "private_key_jwt",
                "no"
            ],
        ],
        "{listed}"
    );
    assert!(!listed.contains("sha256"), "{listed}");

    assert!(ok(&format!("clients revoke reader --file {f}")).contains("revoked"));
    let parsed = clients_file::read(&file).expect("parses");
    assert!(parsed.clients[0].revoked && !parsed.clients[1].revoked);
    let listed = ok(&format!("clients list --file {f}"));
    assert!(
        listed.lines().nth(1).is_some_and(|l| l.ends_with("yes")),
        "{listed}"
    );
    let again = ok(&format!("clients revoke reader --file {f}"));
    assert!(again.contains("already revoked"), "{again}");
    let unknown = refused(&format!("clients revoke ghost --file {f}"));
    assert!(unknown.contains("no client is named `ghost`"), "{unknown}");
}

/// Refused additions to a file holding `first`: the arguments, and what the message says.
const REFUSED: &[(&str, &str)] = &[
    (
        "first --scopes x",
        "a client named `first` is already in the file",
    ),
    ("bad/name --scopes x", "is not a plain label"),
    ("'bad name' --scopes x", "is not a plain label"),
    ("x", "--scopes"),
    ("n --scopes 'mcp:read admin'", "is not a scope"),
    ("n --scopes a,,b", "is not a scope"),
    ("n --scopes '*'", "`*` is never issued"),
    (
        "n --scopes x --grants password",
        "unknown grant \"password\"",
    ),
    ("n --scopes x --grants authorization_code", "unknown grant"),
    (
        "n --scopes x --resources servers/a/mcp",
        "is not a route path",
    ),
    (
        "n --scopes x --lifetime 5",
        "is outside 120..=86400 seconds",
    ),
    (
        "n --scopes x --jwks-file /nonexistent/k.json",
        "cannot read JWKS file",
    ),
];

#[test]
fn bad_or_duplicate_clients_are_refused_with_the_reason_and_the_file_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("clients.toml");
    ok(&format!(
        "clients add first --file {} --scopes x",
        file.display()
    ));
    let before = std::fs::read(&file).expect("read");
    for (args, reason) in REFUSED {
        let error = refused(&format!("clients add --file {} {args}", file.display()));
        assert!(
            error.contains(reason),
            "`{args}`\nexpected: an error saying {reason:?}\ngot: {error}"
        );
        assert_eq!(
            std::fs::read(&file).expect("read"),
            before,
            "`{args}` changed the file"
        );
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["clients.toml"], "no temporary file is left behind");
}

#[test]
fn comments_layout_and_other_entries_survive_add_and_revoke() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("clients.toml");
    let original = format!(
        "# Agents of the platform team. Ask #platform before adding one.\n\
         \n\
         [[clients]]\n\
         id = \"old-agent\"   # the 2025 pilot\n\
         secret_hash = \"{}\"\n\
         scopes = [ \"mcp:read\" ]  # read-only\n",
        hash_key("pilot")
    );
    std::fs::write(&file, &original).expect("write");
    let f = file.display();
    ok(&format!(
        "clients add new-agent --file {f} --scopes mcp:read"
    ));
    let added = std::fs::read_to_string(&file).expect("read");
    assert!(
        added.starts_with(&original) && added.contains("id = \"new-agent\""),
        "expected: the old text as written, then the new entry\ngot: {added}"
    );
    ok(&format!("clients revoke old-agent --file {f}"));
    let revoked = std::fs::read_to_string(&file).expect("read");
    let expected = original.replace("# read-only\n", "# read-only\nrevoked = true\n");
    assert!(
        revoked.starts_with(&expected) && revoked.ends_with(&added[original.len()..]),
        "expected: `revoked = true` added to the entry, the rest as written\ngot: {revoked}"
    );
}

#[test]
fn the_clients_file_is_found_through_the_config_and_checked_against_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        "[server]\npublic_url = \"http://127.0.0.1:9\"\n\n\
         [authorization_server]\nclients_file = \"oauth/clients.toml\"\n\
         max_token_lifetime_secs = 900\n\
         clients = [{ id = \"inline\", secret_hash = \"sha256:00\", scopes = [] }]\n\n\
         [[routes]]\npath = \"/servers/a/mcp\"\nupstream = \"http://127.0.0.1:9/mcp\"\n",
    )
    .expect("write config");
    std::fs::create_dir(dir.path().join("oauth")).expect("mkdir");
    let c = config.display();
    ok(&format!(
        "clients add a --config {c} --scopes x --resources /servers/a/mcp"
    ));
    let parsed = clients_file::read(&dir.path().join("oauth/clients.toml")).expect("written");
    assert_eq!(parsed.clients[0].id, "a");
    assert!(ok(&format!("clients list -c {c}")).contains("/servers/a/mcp"));

    for (args, reason) in [
        (
            "b --resources /servers/b/mcp",
            "`/servers/b/mcp` is not a route of",
        ),
        ("b --lifetime 1200", "more than the 900"),
        ("inline", "already in `authorization_server.clients`"),
    ] {
        let error = refused(&format!("clients add --config {c} --scopes x {args}"));
        assert!(error.contains(reason), "expected: {reason:?}\ngot: {error}");
    }

    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, "[server]\n").expect("write");
    let error = refused(&format!("clients list --config {}", bare.display()));
    assert!(
        error.contains("has no `authorization_server.clients_file`") && error.contains("--file"),
        "{error}"
    );
}

/// The DER inside the one PEM block of `pem`, labelled `label`.
fn pem_der(pem: &str, label: &str) -> Vec<u8> {
    let body: String = pem
        .strip_prefix(&format!("-----BEGIN {label}-----\n"))
        .and_then(|rest| rest.strip_suffix(&format!("-----END {label}-----\n")))
        .unwrap_or_else(|| panic!("expected: one {label} PEM block\ngot: {pem}"))
        .lines()
        .collect();
    STANDARD.decode(body).expect("base64")
}

#[test]
fn signing_key_new_writes_a_pkcs8_key_ring_loads_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (algorithm, kid) in [("EdDSA", "k1"), ("ES256", "k2")] {
        let file = dir.path().join(format!("{kid}.pem"));
        let out = ok(&format!(
            "signing-key new --kid {kid} --algorithm {algorithm} --out {}",
            file.display()
        ));
        let pem = std::fs::read_to_string(&file).expect("written");
        let der = pem_der(&pem, "PRIVATE KEY");
        let public_len = if algorithm == "EdDSA" {
            let pair = Ed25519KeyPair::from_pkcs8(&der).expect("an Ed25519 PKCS#8 key");
            pair.public_key().as_ref().len()
        } else {
            let pair = EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &der,
                &SystemRandom::new(),
            )
            .expect("a P-256 PKCS#8 key");
            pair.public_key().as_ref().len()
        };
        assert_eq!(public_len, if algorithm == "EdDSA" { 32 } else { 65 });
        #[cfg(unix)]
        assert_eq!(mode(&file), 0o600);

        // The printed table goes into the config as it stands.
        let table: toml::Table = keys_table(&out).parse().expect("the table is TOML");
        let key = &table["authorization_server"]["keys"][0];
        assert_eq!(key["kid"].as_str(), Some(kid));
        assert_eq!(key["algorithm"].as_str(), Some(algorithm));
        let reference = key["private_key"].as_str().expect("private_key");
        let named = PathBuf::from(
            reference
                .strip_prefix("file://")
                .expect("a file:// reference"),
        );
        assert_eq!(std::fs::read_to_string(named).expect("names the file"), pem);

        let error = refused(&format!(
            "signing-key new --kid other --out {}",
            file.display()
        ));
        assert!(error.contains("already exists"), "{error}");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), pem);
    }
    let error = refused("signing-key new --kid 'a b' --out x.pem");
    assert!(error.contains("not a plain label"), "{error}");
}

/// A `client_credentials` token request for the `/mcp` route, with HTTP Basic client
/// authentication.
async fn token(base: &str, id: &str, secret: &str) -> Reply {
    let basic = STANDARD.encode(format!("{id}:{secret}"));
    send(
        &format!("{base}/oauth/token"),
        "POST",
        &[
            ("authorization", &format!("Basic {basic}")),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Some("grant_type=client_credentials&resource=http%3A%2F%2F127.0.0.1%3A9%2Fmcp"),
    )
    .await
}

/// A token answer with `status`, or what came instead.
fn answered(reply: &Reply, status: u16) -> Result<(), String> {
    if reply.status == status {
        Ok(())
    } else {
        Err(format!("{} {}", reply.status, reply.body))
    }
}

#[tokio::test]
async fn the_gateway_issues_tokens_to_clients_the_cli_adds_and_stops_when_it_revokes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("k1.pem");
    let keys = keys_table(&ok(&format!(
        "signing-key new --kid k1 --out {}",
        key.display()
    )));
    let config = dir.path().join("portcullis.toml");
    // Waiting for a reload means asking until the answer changes: failed authentications
    // must not lock the test's address out meanwhile.
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:9\"\n\n\
             [authorization_server]\nclients_file = \"clients.toml\"\n\
             max_failed_authentications = 100000\n\n\
             {keys}\n\
             [providers.agents]\ntype = \"issued\"\n\n\
             [[routes]]\npath = \"/mcp\"\nupstream = \"http://127.0.0.1:9/mcp\"\n\
             chain = [\"agents\"]\n"
        ),
    )
    .expect("write config");
    let c = config.display();
    let added = ok(&format!(
        "clients add agent-1 -c {c} --scopes mcp:read --resources /mcp"
    ));
    let secret = printed(&added, "client_secret");

    let gateway = serve_watched(config.clone(), None).await;
    let base = gateway.base.clone();
    let issued = token(&base, "agent-1", &secret).await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    let body: serde_json::Value = serde_json::from_str(&issued.body).expect("JSON");
    assert_eq!(body["scope"], "mcp:read");
    let access_token = body["access_token"].as_str().expect("a token").to_owned();
    let wrong = token(&base, "agent-1", "pcs_not-the-secret").await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);

    // A client added while the gateway runs is served after the reload its rewrite causes.
    let second = ok(&format!("clients add agent-2 -c {c} --scopes mcp:read"));
    let second_secret = printed(&second, "client_secret");
    eventually("the client added at run time to get a token", || async {
        answered(&token(&base, "agent-2", &second_secret).await, 200)
    })
    .await;

    // The upstream is closed: a token the route takes gets as far as a 502.
    let call = || async {
        send(
            &format!("{base}/mcp"),
            "POST",
            &[
                ("authorization", &format!("Bearer {access_token}")),
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
            ],
            Some(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
        )
        .await
    };
    let admitted = call().await;
    assert_eq!(
        admitted.status, 502,
        "the issued token is taken: {}",
        admitted.body
    );

    ok(&format!("clients revoke agent-1 -c {c}"));
    eventually("the revoked client to be refused a token", || async {
        answered(&token(&base, "agent-1", &secret).await, 401)
    })
    .await;
    let refused = call().await;
    assert_eq!(
        refused.status, 401,
        "its tokens stop working: {}",
        refused.body
    );
    let other = token(&base, "agent-2", &second_secret).await;
    assert_eq!(
        other.status, 200,
        "the other client is unaffected: {}",
        other.body
    );
}
