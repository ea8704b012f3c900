//! Rate limits (issue 17) through the real gateway: 429 with `Retry-After` and the
//! `RateLimit` fields, one bucket per subject, tool limits counted per call, nothing sent
//! upstream once spent, the metric, and buckets kept across a reload.

use std::sync::Arc;

use crate::gateway_harness::{
    ADMIN_KEY, READER_KEY, RecordingUpstream, standard, start_with_upstream,
};

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

fn call(tool: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
    )
}

#[tokio::test]
async fn a_spent_limit_is_429_with_retry_after_per_subject_and_nothing_reaches_the_upstream() {
    let upstream = RecordingUpstream::start().await;
    let config = standard()
        .toml("[[rate_limits]]\nname = \"per-caller\"\nrequests = 3\nwindow_secs = 3600\n");
    let h = start_with_upstream(config, &format!("{}/mcp", upstream.url)).await;
    for _ in 0..3 {
        assert_eq!(h.mcp_post(Some(READER_KEY), None, LIST).await.status, 200);
    }
    let refused = h.mcp_post(Some(READER_KEY), None, LIST).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let retry: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=1200).contains(&retry), "{retry}");
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"per-caller\";q=3;w=3600")
    );
    assert!(
        refused
            .header("ratelimit")
            .is_some_and(|v| v.starts_with("\"per-caller\";r=0;t=")),
        "{:?}",
        refused.header("ratelimit")
    );
    assert!(refused.body.contains("rate_limited"), "{}", refused.body);
    assert_eq!(
        upstream.hits(),
        3,
        "the refused request never left the gateway"
    );
    // Another caller has its own bucket.
    assert_eq!(h.mcp_post(Some(ADMIN_KEY), None, LIST).await.status, 200);
    // An unauthenticated request is refused by the chain, and spends nothing.
    assert_eq!(h.mcp_post(None, None, LIST).await.status, 401);
    let metrics = h.request("GET", "/metrics", &[], None).await.body;
    assert!(
        metrics.contains("portcullis_rate_limited_total{route=\"/mcp\",limit=\"per-caller\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_tool_limit_counts_calls_of_that_tool_only() {
    let upstream = RecordingUpstream::start().await;
    let config = standard().toml(
        "[[rate_limits]]\nname = \"echo\"\ntool = \"echo\"\nrequests = 2\nwindow_secs = 3600\n",
    );
    let h = Arc::new(start_with_upstream(config, &format!("{}/mcp", upstream.url)).await);
    for _ in 0..2 {
        assert_eq!(
            h.mcp_post(Some(READER_KEY), None, &call("echo"))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        h.mcp_post(Some(READER_KEY), None, &call("echo"))
            .await
            .status,
        429
    );
    // Other tools and other methods are not limited by it.
    assert_eq!(
        h.mcp_post(Some(READER_KEY), None, &call("add"))
            .await
            .status,
        200
    );
    assert_eq!(h.mcp_post(Some(READER_KEY), None, LIST).await.status, 200);
}

#[tokio::test]
async fn a_reload_keeps_what_callers_have_spent() {
    let upstream = RecordingUpstream::start().await;
    let text = standard()
        .toml("[[rate_limits]]\nname = \"per-caller\"\nrequests = 2\nwindow_secs = 3600\n");
    let h = start_with_upstream(text.clone(), &format!("{}/mcp", upstream.url)).await;
    for _ in 0..2 {
        assert_eq!(h.mcp_post(Some(READER_KEY), None, LIST).await.status, 200);
    }
    // The same configuration loaded again and swapped in, as a reload does.
    let config = portcullis::config::load_str(
        &portcullis_tests::config::fill(text, h.addr, &format!("{}/mcp", upstream.url)),
        "<test config>",
        std::path::Path::new("."),
    )
    .expect("valid");
    let assembled = portcullis::config::assemble(&config, None, &Default::default())
        .await
        .expect("assembles");
    h.gateway
        .swap(portcullis::gateway::Site::new(&config, assembled));
    assert_eq!(h.mcp_post(Some(READER_KEY), None, LIST).await.status, 429);
}

#[test]
fn rate_limit_mistakes_are_config_errors_naming_the_key() {
    let base = standard().to_string();
    for (extra, key) in [
        (
            "[[rate_limits]]\nname = \"a\"\nrequests = 0\n",
            "rate_limits[0].requests",
        ),
        (
            "[[rate_limits]]\nname = \"a\"\nrequests = 1\n[[rate_limits]]\nname = \"a\"\nrequests = 2\n",
            "rate_limits[1].name",
        ),
        (
            "[[rate_limits]]\nname = \"a\"\nrequests = 1\nroute = \"/elsewhere\"\n",
            "rate_limits[0].route",
        ),
        (
            "[[rate_limits]]\nname = \"a\"\nrequests = 1\nper = [\"ip\"]\n",
            "rate_limits[0].per",
        ),
    ] {
        let text = portcullis_tests::config::fill(
            format!("{base}\n{extra}"),
            "127.0.0.1:1".parse().expect("addr"),
            "http://127.0.0.1:2/mcp",
        );
        let err = portcullis::config::load_str(&text, "t.toml", std::path::Path::new("."))
            .expect_err(extra);
        assert!(err.to_string().contains(key), "{extra}: {err}");
    }
}
