//! Job callbacks through the real binary against `weir sim`: where a callback may go (never
//! weir's own listeners, private addresses only with `callback_allow_private`, names checked
//! after DNS), what a failed delivery shows the submitter, and the timestamped signature.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::procs::{Proc, get, post, scratch_config, serve_file_with_env, sim};
use crate::sim::client::Answer;
use crate::wait;

const SECRET: &str = "whsec-callbacks-0123456789";
const SECRET_ENV: &str = "WEIR_TEST_CALLBACK_SECRET";
/// Longest any test waits for a job or a callback (a bound against hangs, not a timing
/// assertion).
const PATIENCE: Duration = Duration::from_secs(120);

/// weir over `up` with one route `demo` taking jobs, callbacks signed with [`SECRET`], and
/// `jobs` added to `[jobs]`.
fn weir(up: &Proc, jobs: &str) -> Proc {
    let config = format!(
        "[jobs]\ncallback_secret_env = \"{SECRET_ENV}\"\nbackoff_base_ms = 20\n\
         backoff_max_ms = 100\n{jobs}\n\n[targets.up]\nbase_url = \"http://{}/v1\"\n\
         model = \"sim-a\"\n\n[[routes]]\nmodel = \"demo\"\ntargets = [\"up\"]\n\
         jobs = {{ concurrency = 2 }}\n",
        up.addr
    );
    serve_file_with_env(&scratch_config(&config), &[(SECRET_ENV, SECRET)])
}

async fn submit(weir: &Proc, callback_url: &str) -> Answer {
    let body = json!({
        "model": "demo",
        "messages": [{"role": "user", "content": "call me back"}],
        "callback_url": callback_url,
    });
    post(weir.addr, "/v1/jobs", &body).await
}

/// Asserts `answer` is a 400 `invalid_callback_url` whose message contains `says`.
fn refused(answer: &Answer, says: &str) {
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    let body = answer.json();
    assert_eq!(body["error"]["code"], "invalid_callback_url", "{body}");
    assert_eq!(body["error"]["param"], "callback_url", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(says), "{message}");
}

/// Polls job `id` until `done` holds for it.
async fn until(weir: &Proc, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    wait::until_within(PATIENCE, &format!("job {id}"), || async {
        let answer = get(weir.addr, &format!("/v1/jobs/{id}")).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let job = answer.json();
        if done(&job) { Ok(job) } else { Err(job) }
    })
    .await
}

/// Reloads so far: `weir_reloads_total` (all outcomes; a reload that changes nothing is not
/// counted there) and `/admin/stages`' `reloads.attempted` (every reload, whatever it did).
async fn reloads(weir: &Proc) -> (f64, u64) {
    let admin = weir.admin.unwrap();
    let metrics = get(admin, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let total = std::str::from_utf8(&metrics.body)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("weir_reloads_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let stages = get(admin, "/admin/stages").await.json();
    (total, stages["reloads"]["attempted"].as_u64().unwrap())
}

/// What the receiver saw: each delivery's signature header and body.
type Seen = Arc<Mutex<Vec<(String, Bytes)>>>;

/// A loopback callback receiver answering 200, counting the connections it accepted.
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Seen,
    connections: Arc<AtomicUsize>,
}

pub(crate) async fn receiver() -> Receiver {
    use http_body_util::{BodyExt, Full};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let connections = Arc::new(AtomicUsize::new(0));
    let (log, count) = (seen.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let log = log.clone();
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let log = log.clone();
                async move {
                    let signature = request
                        .headers()
                        .get("x-weir-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    log.lock().unwrap().push((signature, body));
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"{}"),
                    )))
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    Receiver {
        addr,
        seen,
        connections,
    }
}

impl Receiver {
    /// Connections accepted before now: one of our own is accepted after any made earlier
    /// (in order), then not counted.
    async fn connections_made(&self) -> usize {
        let before = self.connections.load(Ordering::SeqCst);
        let _probe = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        wait::until_within(PATIENCE, "the probe to be accepted", || async {
            let now = self.connections.load(Ordering::SeqCst);
            wait::check(now != before, format!("{now} connections"))
        })
        .await;
        self.connections.load(Ordering::SeqCst) - 1
    }
}

/// `(t, v1)` of a `t=<unix seconds>,v1=<hex>` signature.
fn parts(signature: &str) -> (u64, &str) {
    let (t, v1) = signature
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
        .unwrap_or_else(|| panic!("not a t=..,v1=.. signature: {signature:?}"));
    (t.parse().unwrap(), v1)
}

/// Whether `v1` is HMAC-SHA256(SECRET, "<t>.<body>"), checked in constant time.
fn verifies(t: u64, v1: &str, body: &[u8]) -> bool {
    let Some(bytes) = (0..v1.len())
        .step_by(2)
        .map(|i| {
            v1.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

#[tokio::test]
async fn a_callback_to_weir_s_own_listeners_is_refused_at_submission_even_with_the_opt_in() {
    let up = sim(&[]);
    let weir = weir(&up, "callback_allow_private = true");
    let admin = weir.admin.unwrap();
    let before = reloads(&weir).await;
    for url in [
        format!("http://{admin}/admin/reload"),
        format!("http://{}/v1/jobs", weir.addr),
        format!("http://[::ffff:127.0.0.1]:{}/admin/reload", admin.port()),
        // A name is checked on what it resolves to.
        format!("http://localhost:{}/admin/reload", admin.port()),
    ] {
        refused(&submit(&weir, &url).await, "weir's own listeners");
    }
    // Nothing was queued, so nothing can be delivered later.
    let listing = get(weir.addr, "/v1/jobs").await.json();
    assert_eq!(listing["data"], json!([]), "{listing}");
    assert_eq!(reloads(&weir).await, before);
    // The counters do see a POST /admin/reload: the assertion above could fail.
    let reload = crate::procs::call(admin, http::Method::POST, "/admin/reload", &[], None).await;
    assert_eq!(reload.status, 200, "{:?}", reload.body);
    assert_eq!(reloads(&weir).await.1, before.1 + 1);
}

#[tokio::test]
async fn without_the_opt_in_a_loopback_receiver_is_refused_at_submission() {
    let up = sim(&[]);
    let hook = receiver().await;
    let weir = weir(&up, "");
    refused(
        &submit(&weir, &format!("http://{}/hook", hook.addr)).await,
        "callback_allow_private",
    );
    refused(
        &submit(
            &weir,
            &format!("http://localhost:{}/hook", hook.addr.port()),
        )
        .await,
        "callback_allow_hosts",
    );
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://[::1]/hook",
    ] {
        refused(&submit(&weir, url).await, "address");
    }
    assert_eq!(hook.connections_made().await, 0);
}

#[tokio::test]
async fn a_listed_name_that_resolves_to_loopback_is_refused_without_the_opt_in() {
    let up = sim(&[]);
    let hook = receiver().await;
    let weir = weir(&up, "callback_allow_hosts = [\"localhost\"]");
    let answer = submit(
        &weir,
        &format!("http://localhost:{}/hook", hook.addr.port()),
    )
    .await;
    // Past the host gate (it is listed), refused on the address it resolved to.
    refused(&answer, "loopback");
    refused(&answer, "callback_allow_private");
    assert_eq!(hook.connections_made().await, 0);
}

#[tokio::test]
async fn with_the_opt_in_a_loopback_callback_is_delivered_with_a_timestamped_signature() {
    let up = sim(&[]);
    let hook = receiver().await;
    let weir = weir(&up, "callback_allow_private = true");
    let answer = submit(&weir, &format!("http://{}/hook", hook.addr)).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let id = answer.json()["id"].as_str().unwrap().to_string();
    let job = until(&weir, &id, |job| job["callback"]["state"] == "delivered").await;
    assert_eq!(job["callback"]["last_error"], Value::Null, "{job}");

    let seen = hook.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (signature, body) = &seen[0];
    let (t, v1) = parts(signature);
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // A receiver's replay window: the timestamp is recent.
    assert!(now_s.abs_diff(t) < 300, "t={t}, now={now_s}");
    assert!(verifies(t, v1, body), "{signature}");
    // Replayed under another timestamp, or with another body, it no longer verifies.
    assert!(!verifies(t + 1, v1, body));
    assert!(!verifies(t, v1, b"{}"));
    let result: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(result["id"], id.as_str());
    assert_eq!(result["status"], "succeeded");
}

#[tokio::test]
async fn a_callback_to_a_closed_port_shows_a_generic_error() {
    let up = sim(&[]);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let weir = weir(
        &up,
        "callback_allow_private = true\ncallback_max_attempts = 2",
    );
    let answer = submit(&weir, &format!("http://{closed}/hook")).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let id = answer.json()["id"].as_str().unwrap().to_string();
    let job = until(&weir, &id, |job| job["callback"]["state"] == "failed").await;
    assert_eq!(job["callback"]["attempts"], 2, "{job}");
    assert_eq!(job["callback"]["last_error"], "unreachable", "{job}");
    let shown = job.to_string().to_lowercase();
    for detail in [
        "connection refused",
        "os error",
        "tcp connect",
        "connect error",
    ] {
        assert!(!shown.contains(detail), "{detail}: {job}");
    }
}
