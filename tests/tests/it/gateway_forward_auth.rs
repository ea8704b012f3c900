//! The forward-auth endpoint as nginx `auth_request`, Traefik, Caddy and Envoy call it, and
//! — when `nginx` is installed — behind a real nginx.

use crate::gateway_harness::{READER_KEY, STANDARD, start};

fn trusting_loopback() -> String {
    STANDARD.replace(
        "public_url = \"{gateway}\"",
        "public_url = \"{gateway}\"\ntrusted_proxies = [\"127.0.0.0/8\"]",
    )
}

#[tokio::test]
async fn forward_auth_allows_with_identity_headers_from_a_trusted_proxy() {
    let h = start(&trusting_loopback()).await;
    let auth = format!("Bearer {READER_KEY}");
    let reply = h
        .request(
            "GET",
            "/check",
            &[
                ("x-forwarded-method", "POST"),
                ("x-forwarded-uri", "/mcp"),
                ("x-forwarded-host", "mcp.example.com"),
                ("authorization", &auth),
            ],
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-portcullis-subject"), Some("reader"));
    assert_eq!(reply.header("x-portcullis-scopes"), Some("mcp:read"));
    assert_eq!(reply.header("x-portcullis-provider"), Some("keys"));
}

#[tokio::test]
async fn forward_auth_challenges_and_refuses() {
    let h = start(&trusting_loopback()).await;
    let none = h
        .request("GET", "/check", &[("x-original-uri", "/mcp")], None)
        .await;
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header("www-authenticate").expect("challenge"),
        format!(
            "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:read\"",
            h.base
        )
    );
    let auth = format!("Bearer {READER_KEY}");
    let no_route = h
        .request(
            "GET",
            "/check",
            &[("x-forwarded-uri", "/elsewhere"), ("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(no_route.status, 403);
    let traversal = h
        .request(
            "GET",
            "/check",
            &[
                ("x-forwarded-uri", "/mcp/../admin"),
                ("authorization", &auth),
            ],
            None,
        )
        .await;
    assert_eq!(traversal.status, 400);
}

#[tokio::test]
async fn forwarded_headers_from_untrusted_peers_are_ignored() {
    // No trusted proxies: the check request itself is the original, so `/check` is not
    // under `/mcp` and is refused — a client cannot pick the route it is checked against.
    let h = start(STANDARD).await;
    let auth = format!("Bearer {READER_KEY}");
    let reply = h
        .request(
            "GET",
            "/check",
            &[("x-forwarded-uri", "/mcp"), ("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    // Envoy ext_authz style: the original path follows the check path.
    let envoy = h
        .request("POST", "/check/mcp", &[("authorization", &auth)], None)
        .await;
    assert_eq!(envoy.status, 200, "{}", envoy.body);
}

#[tokio::test]
async fn nginx_auth_request_fronts_the_upstream() {
    let Some(nginx) = which("nginx") else {
        println!("skipped: `nginx` is not on PATH (CI installs it from Debian's packages)");
        return;
    };
    let h = start(&trusting_loopback()).await;
    let upstream = h.upstream.as_ref().expect("demo upstream").addr;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = format!(
        r#"
worker_processes 1;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location = /_auth {{
      internal;
      proxy_pass http://{gateway}/check;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
    }}
    location /mcp {{
      auth_request /_auth;
      auth_request_set $subject $upstream_http_x_portcullis_subject;
      proxy_set_header X-Portcullis-Subject $subject;
      proxy_set_header Authorization "";
      proxy_pass http://{upstream};
      proxy_http_version 1.1;
      proxy_buffering off;
    }}
  }}
}}
"#,
        dir = dir.path().display(),
        gateway = h.addr,
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write conf");
    let child = std::process::Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .arg("-g")
        // One process, so that killing it leaves no orphaned worker holding our stdout.
        .arg("daemon off; master_process off;")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nginx starts");
    let _nginx = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "nginx did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    let refused =
        crate::gateway_harness::send(&format!("{base}/mcp"), "POST", &headers, Some(init)).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let auth = format!("Bearer {READER_KEY}");
    let mut with_key = headers.to_vec();
    with_key.push(("authorization", &auth));
    let allowed =
        crate::gateway_harness::send(&format!("{base}/mcp"), "POST", &with_key, Some(init)).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
}

/// Stops the nginx child when the test ends, pass or fail.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}
