//! Requests in flight are not bounded by the stage instance pool: a 0.2 stage hands its state
//! to the host when `on-request` returns, so 2,000 requests wait on a slow model through the
//! demo pipeline with 64 instances, and each costs the host kilobytes while it waits.

use std::time::Duration;

use serde_json::json;

use crate::listener::rss_kib;
use crate::procs::{post, serve, sim};

/// Requests sent at once.
const IN_FLIGHT: usize = 2_000;

#[tokio::test]
async fn two_thousand_requests_wait_on_a_slow_model_with_a_pool_of_64_instances() {
    let upstream = sim(&["--latency-ms", "2000"]);
    let weir = serve(&format!(
        r#"
[sandbox]
pool_size = 64
[targets.up]
base_url = "http://{up}/v1"
max_concurrency = 4096
timeout_ms = 30000
[[routes]]
model = "demo"
targets = ["up"]
[[routes.stages]]
name = "prompt-guard"
path = "{guard}"
[[routes.stages]]
name = "pii-redact"
path = "{pii}"
[[routes.stages]]
name = "system-prompt"
path = "{system}"
config = {{ prompt = "Be brief." }}
"#,
        up = upstream.addr,
        guard = weir_test_artifacts::PROMPT_GUARD,
        pii = weir_test_artifacts::PII_REDACT,
        system = weir_test_artifacts::SYSTEM_PROMPT,
    ));
    let pid = weir.child.id();
    // Warm: the first requests build connections and caches.
    for _ in 0..3 {
        let body = json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(
            post(weir.addr, "/v1/chat/completions", &body).await.status,
            200
        );
    }
    let idle = rss_kib(pid);

    let mut tasks = Vec::with_capacity(IN_FLIGHT);
    for i in 0..IN_FLIGHT {
        let addr = weir.addr;
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": "demo", "messages": [{"role": "user",
                "content": format!("I am user{i}@example.com, request {i}")}]});
            let answer = post(addr, "/v1/chat/completions", &body).await;
            (i, answer)
        }));
    }
    // Halfway through the upstream's 2 s, every request is waiting on it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let busy = rss_kib(pid);

    let mut refused = Vec::new();
    for task in tasks {
        let (i, answer) = task.await.unwrap();
        if answer.status != 200 {
            refused.push((
                answer.status,
                String::from_utf8_lossy(&answer.body).into_owned(),
            ));
            continue;
        }
        let text = answer.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            text.contains(&format!("user{i}@example.com")) && !text.contains("[EMAIL_"),
            "request {i}: {text}"
        );
    }
    let per_request = busy.saturating_sub(idle) as f64 / IN_FLIGHT as f64;
    eprintln!(
        "{IN_FLIGHT} in flight with pool_size 64: RSS idle {idle} KiB, busy {busy} KiB, \
         {per_request:.1} KiB per request in flight"
    );
    assert!(
        refused.is_empty(),
        "{} of {IN_FLIGHT} refused, first: {:?}",
        refused.len(),
        refused.first()
    );
}
