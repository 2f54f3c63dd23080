//! Background jobs through the real binary against `weir sim`: a full queue answering 429
//! with `Retry-After`, retries into `dead` and the retry endpoint, a 4xx that fails at once,
//! idempotency keys, cancel, bad input, and callbacks redelivered until the receiver answers
//! 2xx, with their signature checked here (where callbacks may go is `callbacks`' concern).
//! 500 jobs through three `kill -9`s are in `stress::jobs`; listings of thousands, the
//! per-key bound and retention in `growth`.

mod growth;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::procs::{Proc, call, get, post, scratch_config, serve, serve_file_with_env, sim};
use crate::sim::client::Answer;
use crate::wait;

/// Longest any test waits for jobs to get somewhere (a bound against hangs, not a timing
/// assertion).
pub(crate) const PATIENCE: Duration = Duration::from_secs(120);

pub(crate) fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-jobs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// One route `demo` over `up`, taking jobs, with `[jobs]` set to `jobs` and `route` under the
/// route.
pub(crate) fn config(up: &Proc, dir: &std::path::Path, jobs: &str, route: &str) -> String {
    format!(
        "[server]\ndata_dir = \"{}\"\n\n[jobs]\n{jobs}\n\n[targets.up]\nbase_url = \"http://{}/v1\"\n\
         model = \"sim-a\"\ntimeout_ms = 10000\n\n[[routes]]\nmodel = \"demo\"\ntargets = [\"up\"]\n{route}\n",
        dir.display(),
        up.addr
    )
}

pub(crate) fn chat(text: &str) -> Value {
    json!({"model": "demo", "messages": [{"role": "user", "content": text}]})
}

async fn job(addr: SocketAddr, id: &str) -> Value {
    let answer = get(addr, &format!("/v1/jobs/{id}")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.json()
}

/// Polls job `id` until `done` holds for it.
async fn until(addr: SocketAddr, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    wait::until_within(PATIENCE, &format!("job {id}"), || async {
        let job = job(addr, id).await;
        if done(&job) { Ok(job) } else { Err(job) }
    })
    .await
}

fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |job| job["status"] == status
}

pub(crate) async fn sim_calls(up: &Proc) -> u64 {
    get(up.addr, "/sim/stats").await.json()["chat_completions"]
        .as_u64()
        .unwrap()
}

fn error_code(answer: &Answer) -> String {
    answer.json()["error"]["code"]
        .as_str()
        .unwrap_or("-")
        .to_string()
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after_and_drops_nothing_it_accepted() {
    let up = sim(&["--latency-ms", "1000"]);
    let dir = data_dir("full");
    let weir = serve(&config(
        &up,
        &dir,
        "workers = 1\nmax_queued = 3",
        "jobs = { concurrency = 1 }",
    ));
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for i in 0..10 {
        let answer = post(weir.addr, "/v1/jobs", &chat(&format!("full {i}"))).await;
        match answer.status.as_u16() {
            202 => accepted.push(answer.json()["id"].as_str().unwrap().to_string()),
            429 => {
                refused += 1;
                assert_eq!(error_code(&answer), "queue_full");
                assert_eq!(answer.json()["error"]["type"], "rate_limit_error");
                let retry_after: u64 = answer.headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=600).contains(&retry_after), "{retry_after}");
            }
            other => panic!("unexpected {other}: {:?}", answer.body),
        }
    }
    assert!(accepted.len() >= 3, "{accepted:?}");
    assert!(refused >= 1, "a queue bounded at 3 took all 10 jobs");
    for id in &accepted {
        until(weir.addr, id, status_is("succeeded")).await;
    }
    assert_eq!(sim_calls(&up).await, accepted.len() as u64);
    // Drained: there is room again.
    let answer = post(weir.addr, "/v1/jobs", &chat("after")).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failing_upstream_makes_a_job_dead_with_every_attempt_and_retry_revives_it() {
    let up = sim(&["--error-rate", "1.0", "--error-status", "503"]);
    let dir = data_dir("dead");
    let weir = serve(&config(
        &up,
        &dir,
        "max_attempts = 3\nbackoff_base_ms = 20\nbackoff_max_ms = 80",
        "max_attempts = 1\njobs = { concurrency = 2 }",
    ));
    let id = post(weir.addr, "/v1/jobs", &chat("doomed")).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dead = until(weir.addr, &id, status_is("dead")).await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    let log = dead["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 3);
    for attempt in log {
        assert_eq!(attempt["status"], 502, "{attempt}");
        let error = attempt["error"].as_str().unwrap();
        assert!(error.contains("all_targets_failed"), "{error}");
        assert!(attempt["finished_at_ms"].as_u64() >= attempt["started_at_ms"].as_u64());
    }
    assert_eq!(dead["response"]["error"]["code"], "all_targets_failed");
    assert_eq!(sim_calls(&up).await, 3);

    // Only a dead job can be retried; once the upstream is back, a retry succeeds.
    let answer = post(up.addr, "/sim/faults", &json!({})).await;
    assert_eq!(answer.status, 200);
    let answer = call(
        weir.addr,
        Method::POST,
        &format!("/v1/jobs/{id}/retry"),
        &[],
        None,
    )
    .await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let done = until(weir.addr, &id, status_is("succeeded")).await;
    assert_eq!(done["attempts"], 4, "the history is kept: {done}");
    assert_eq!(done["response"]["object"], "chat.completion");
    let again = call(
        weir.addr,
        Method::POST,
        &format!("/v1/jobs/{id}/retry"),
        &[],
        None,
    )
    .await;
    assert_eq!(again.status, 409);
    assert_eq!(error_code(&again), "job_conflict");

    // A 4xx from the upstream is the request's fault: failed at once, no retry.
    let answer = post(
        up.addr,
        "/sim/faults",
        &json!({"error_rate": 1.0, "error_status": 400}),
    )
    .await;
    assert_eq!(answer.status, 200);
    let id = post(weir.addr, "/v1/jobs", &chat("malformed")).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = until(weir.addr, &id, status_is("failed")).await;
    assert_eq!(failed["attempts"], 1, "{failed}");
    assert_eq!(failed["response_status"], 400);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn idempotency_keys_cancel_and_bad_input() {
    let up = sim(&["--latency-ms", "1500"]);
    let dir = data_dir("idem");
    let weir = serve(&config(
        &up,
        &dir,
        "workers = 1",
        "jobs = { concurrency = 1 }",
    ));
    let addr = weir.addr;
    let mut body = chat("once");
    body["idempotency_key"] = json!("order-42");
    body["stream"] = json!(true);
    let first = post(addr, "/v1/jobs", &body).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    let again = post(addr, "/v1/jobs", &body).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    let id = first.json()["id"].as_str().unwrap().to_string();
    assert_eq!(again.json()["id"], id.as_str());
    assert_eq!(again.json()["idempotency_key"], "order-42");
    until(addr, &id, status_is("running")).await;

    // The worker is busy: the next job waits, and can be cancelled.
    let queued = post(addr, "/v1/jobs", &chat("never")).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let delete = |id: String| async move {
        call(addr, Method::DELETE, &format!("/v1/jobs/{id}"), &[], None).await
    };
    let cancelled = delete(queued.clone()).await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(cancelled.json()["status"], "cancelled");
    assert_eq!(job(addr, &queued).await["status"], "cancelled");
    assert_eq!(delete(queued.clone()).await.status, 409);
    let running = delete(id.clone()).await;
    assert_eq!(running.status, 409);
    assert!(
        running.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("running")
    );

    // Bad input: OpenAI-shaped errors, nothing queued.
    let bad = |body: Value, status: u16, code: &'static str| async move {
        let answer = post(addr, "/v1/jobs", &body).await;
        assert_eq!(answer.status, status, "{:?}", answer.body);
        assert_eq!(error_code(&answer), code);
        assert!(answer.json()["error"]["message"].is_string());
    };
    let mut b = chat("x");
    b["priority"] = json!(42);
    bad(b, 400, "invalid_priority").await;
    let mut b = chat("x");
    b["callback_url"] = json!("http://127.0.0.1:1/hook");
    bad(b, 400, "callbacks_not_configured").await;
    let mut b = chat("x");
    b["idempotency_key"] = json!(7);
    bad(b, 400, "invalid_idempotency_key").await;
    let mut b = chat("x");
    b["model"] = json!("nope");
    bad(b, 404, "model_not_found").await;
    bad(
        json!({"model": "demo", "messages": []}),
        400,
        "invalid_type",
    )
    .await;
    bad(json!([1, 2]), 400, "invalid_request").await;
    let raw = call(
        addr,
        Method::POST,
        "/v1/jobs",
        &[],
        Some(Bytes::from_static(b"{not json")),
    )
    .await;
    assert_eq!(
        (raw.status.as_u16(), error_code(&raw)),
        (400, "invalid_json".into())
    );
    let soon = call(
        addr,
        Method::POST,
        "/v1/jobs",
        &[("x-weir-deadline-ms", "soon")],
        Some(Bytes::from(chat("x").to_string())),
    )
    .await;
    assert_eq!(
        (soon.status.as_u16(), error_code(&soon)),
        (400, "invalid_deadline".into())
    );
    let missing = get(addr, "/v1/jobs/job_nope").await;
    assert_eq!(
        (missing.status.as_u16(), error_code(&missing)),
        (404, "job_not_found".into())
    );
    let filter = get(addr, "/v1/jobs?status=done").await;
    assert_eq!(
        (filter.status.as_u16(), error_code(&filter)),
        (400, "invalid_status".into())
    );
    let method = call(addr, Method::PUT, "/v1/jobs", &[], None).await;
    assert_eq!(method.status, 405);

    let done = until(addr, &id, status_is("succeeded")).await;
    assert_eq!(
        done["response"]["object"], "chat.completion",
        "never streamed: {done}"
    );
    let listed = get(addr, "/v1/jobs?status=cancelled").await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["id"], queued.as_str());
    // The cancelled job never ran; the idempotent one ran once.
    assert_eq!(sim_calls(&up).await, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the callback receiver saw: each delivery's signature header and body.
type Deliveries = Arc<Mutex<Vec<(Option<String>, Bytes)>>>;

/// A loopback HTTP receiver that answers 500 to the first `failures` deliveries, then 200.
async fn receiver(failures: usize) -> (SocketAddr, Deliveries) {
    use http_body_util::{BodyExt, Full};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Deliveries = Arc::default();
    let deliveries = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let seen = seen.clone();
                async move {
                    let signature = request
                        .headers()
                        .get("x-weir-signature")
                        .map(|v| v.to_str().unwrap().to_string());
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push((signature, body));
                        seen.len()
                    };
                    let status = if n <= failures { 500 } else { 200 };
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from_static(b"{}")))
                            .unwrap(),
                    )
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (addr, deliveries)
}

#[tokio::test]
async fn a_callback_is_redelivered_until_the_receiver_answers_2xx_and_its_signature_verifies() {
    const SECRET: &str = "whsec-test-0123456789";
    let up = sim(&[]);
    let dir = data_dir("callback");
    let (hook, deliveries) = receiver(2).await;
    let path = scratch_config(&config(
        &up,
        &dir,
        "callback_secret_env = \"WEIR_TEST_CALLBACK_SECRET\"\nbackoff_base_ms = 20\n\
         backoff_max_ms = 100\ncallback_max_attempts = 5\ncallback_allow_private = true",
        "jobs = { concurrency = 2 }",
    ));
    let weir = serve_file_with_env(&path, &[("WEIR_TEST_CALLBACK_SECRET", SECRET)]);
    let mut body = chat("call me back");
    body["callback_url"] = json!(format!("http://{hook}/hook"));
    let answer = post(weir.addr, "/v1/jobs", &body).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let id = answer.json()["id"].as_str().unwrap().to_string();
    let delivered = until(weir.addr, &id, |job| {
        job["callback"]["state"] == "delivered"
    })
    .await;
    assert_eq!(delivered["status"], "succeeded");
    assert_eq!(delivered["callback"]["attempts"], 3, "{delivered}");
    // The class of the last failure (the 500s), not its detail.
    assert_eq!(delivered["callback"]["last_error"], "status 5xx");

    let seen = deliveries.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "two failures, then the delivery that took");
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (signature, body) in &seen {
        // `t=<unix seconds>,v1=<hex of HMAC-SHA256(secret, "<t>.<body>")>`
        let (t, v1) = signature
            .as_deref()
            .and_then(|s| s.strip_prefix("t="))
            .and_then(|s| s.split_once(",v1="))
            .unwrap();
        assert!(now_s.abs_diff(t.parse().unwrap()) < 300, "{t} vs {now_s}");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(v1, hex);
        let result: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(result["id"], id.as_str());
        assert_eq!(result["status"], "succeeded");
        assert_eq!(result["response"]["object"], "chat.completion");
    }
    // The signature covers the exact bytes and the timestamp: one byte of the body changed,
    // or another timestamp, no longer verifies.
    let (signature, body) = &seen[2];
    let (t, expected) = signature
        .as_deref()
        .and_then(|s| s.strip_prefix("t="))
        .and_then(|s| s.split_once(",v1="))
        .unwrap();
    let bytes: Vec<u8> = (0..expected.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&expected[i..i + 2], 16).unwrap())
        .collect();
    let verifies = |t: &str, body: &[u8]| {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        mac.verify_slice(&bytes).is_ok()
    };
    assert!(verifies(t, body));
    let mut tampered = body.to_vec();
    tampered[0] ^= 1;
    assert!(!verifies(t, &tampered));
    let later = (t.parse::<u64>().unwrap() + 600).to_string();
    assert!(!verifies(&later, body));

    // Only allow-listed hosts and, with the opt-in, private addresses (a documentation
    // address is never a receiver).
    let mut body = chat("elsewhere");
    body["callback_url"] = json!("http://192.0.2.10/hook");
    let refused = post(weir.addr, "/v1/jobs", &body).await;
    assert_eq!(refused.status, 400);
    assert_eq!(error_code(&refused), "invalid_callback_url");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn with_keys_a_job_runs_as_its_key_and_only_that_key_sees_it() {
    let up = sim(&[]);
    let dir = data_dir("keys");
    let key = |name: &str, secret: &str| {
        let hash = blake3::Hash::from(weir::config::hash_key(secret)).to_hex();
        format!("[[keys]]\nname = \"{name}\"\nhash = \"blake3:{hash}\"\n")
    };
    let text = format!(
        "{}\n{}\n{}",
        config(&up, &dir, "workers = 2", "jobs = { concurrency = 2 }"),
        key("alpha", "sk-alpha"),
        key("beta", "sk-beta")
    );
    let weir = serve(&text);
    let as_key = |secret: &'static str| [("authorization", format!("Bearer {secret}"))];
    let send = |method: Method, path: String, secret: Option<&'static str>, body: Option<Value>| {
        let addr = weir.addr;
        async move {
            let auth = secret.map(as_key);
            let headers: Vec<(&str, &str)> = auth
                .iter()
                .flatten()
                .map(|(n, v)| (*n, v.as_str()))
                .collect();
            call(
                addr,
                method,
                &path,
                &headers,
                body.map(|b| Bytes::from(b.to_string())),
            )
            .await
        }
    };
    let anonymous = send(Method::POST, "/v1/jobs".into(), None, Some(chat("hi"))).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(error_code(&anonymous), "invalid_api_key");
    let submitted = send(
        Method::POST,
        "/v1/jobs".into(),
        Some("sk-alpha"),
        Some(chat("hi")),
    )
    .await;
    assert_eq!(submitted.status, 202, "{:?}", submitted.body);
    let id = submitted.json()["id"].as_str().unwrap().to_string();
    // Another key neither sees nor lists it.
    let other = send(Method::GET, format!("/v1/jobs/{id}"), Some("sk-beta"), None).await;
    assert_eq!(
        (other.status.as_u16(), error_code(&other)),
        (404, "job_not_found".into())
    );
    let listed = send(Method::GET, "/v1/jobs".into(), Some("sk-beta"), None).await;
    assert_eq!(listed.json()["data"].as_array().unwrap().len(), 0);
    // Its own key sees it succeed, run as that key (the spend is the key's).
    let done = wait::until_within(PATIENCE, "the job to succeed", || async {
        let job = send(
            Method::GET,
            format!("/v1/jobs/{id}"),
            Some("sk-alpha"),
            None,
        )
        .await;
        assert_eq!(job.status, 200);
        let job = job.json();
        if job["status"] == "succeeded" {
            Ok(job)
        } else {
            Err(job)
        }
    })
    .await;
    assert_eq!(done["response"]["object"], "chat.completion");
    let spend = get(weir.admin.unwrap(), "/admin/spend?group_by=key")
        .await
        .json();
    let rows = spend["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{spend}");
    assert_eq!(rows[0]["key"], "alpha");
    // The key itself is nowhere in the job store.
    let stored = std::fs::read(dir.join("jobs.redb")).unwrap();
    assert!(!stored.windows(8).any(|w| w == b"sk-alpha"));
    let _ = std::fs::remove_dir_all(&dir);
}
