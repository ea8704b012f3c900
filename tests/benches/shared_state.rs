//! Rate-limit check cost, local buckets against the same token bucket in a real
//! `redis-server` on loopback (`[shared]`): the price of one Redis round trip per request.
//! Skipped, with the reason printed, when `redis-server` is not installed.
//!
//! Run: `cargo bench -p portcullis-tests --bench shared_state`.

use std::io::{Read as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::gateway::rate_limit::{RateLimitSettings, RateLimits, Request};
use portcullis::shared::{RawShared, SharedState};
use portcullis::verdict::Identity;

/// A `redis-server` on a free loopback port, killed by its PID when dropped.
struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis() -> Option<Redis> {
    let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file());
    let Some(binary) = binary else {
        println!("skipped: redis-server is not installed (Debian package `redis-server`)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let redis = Redis(child, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pong = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.write_all(b"PING\r\n")?;
            let mut reply = [0; 7];
            s.read_exact(&mut reply)?;
            Ok(reply == *b"+PONG\r\n")
        });
        if pong.is_ok_and(|p| p) {
            return Some(redis);
        }
        assert!(
            Instant::now() < deadline,
            "redis-server never answered PING"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn limits() -> RateLimits {
    // Never short: the bench measures taking a token, not refusing.
    let limit = RateLimitSettings {
        name: "bench".into(),
        per: None,
        route: None,
        tool: None,
        requests: 1_000_000_000,
        window_secs: Some(1),
        burst: None,
    }
    .check()
    .expect("valid limit");
    RateLimits::new(vec![limit])
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let identity = Identity {
        subject: "agent-1".into(),
        scopes: vec![],
        claims: vec![],
    };
    let request = Request {
        route: "/mcp",
        path: "/mcp",
        identity: &identity,
        provider: "keys",
        client: None,
        tools: &[],
    };
    let mut group = c.benchmark_group("rate_limit_check");
    let local = limits();
    group.bench_function("local", |b| {
        b.to_async(&runtime).iter(|| async {
            local
                .check_shared(&request, Instant::now())
                .await
                .expect("a token")
        });
    });
    if let Some(redis) = redis() {
        let settings = RawShared {
            redis: format!("redis://127.0.0.1:{}/0", redis.1),
            key_prefix: None,
            timeout_ms: Some(1000),
        }
        .check()
        .expect("valid");
        let shared = limits().with_shared(Some(SharedState::new(&settings).expect("URL")));
        group.bench_function("redis", |b| {
            b.to_async(&runtime).iter(|| async {
                shared
                    .check_shared(&request, Instant::now())
                    .await
                    .expect("a token")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
