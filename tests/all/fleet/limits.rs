//! Fleet-wide rate limits (issue 17, acceptance (b)): a target's RPM shared by three nodes on
//! one redis-server keeps the provider under its limit in every 60-second window (the sim
//! has a real `rpm_limit` and never answers one 429), a key's RPM holds across nodes, and
//! while Redis is away each node falls back to its share (limit / `expected_nodes`) or, with
//! `fail_closed`, refuses with 503 `state_unavailable`, then goes back to the shared limit.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::harness::{Fleet, RedisServer, state_table};
use crate::procs::{Proc, get, post, sim};
use crate::sim::client::Answer;
use crate::wait::{check, until, until_within};

/// A node's config: one target `up` on `sim` with `target_limits`, route `demo`, `extra`
/// (keys, `[state]`).
fn config(data_dir: &str, up: &Proc, target_limits: &str, extra: &str) -> String {
    format!(
        "[server]\ndata_dir = \"{data_dir}\"\n\n[targets.up]\nbase_url = \"http://{}/v1\"\n{target_limits}\n\n[[routes]]\nmodel = \"demo\"\ntargets = [\"up\"]\n\n{extra}\n",
        up.addr
    )
}

fn chat(i: usize) -> Value {
    json!({"model": "demo", "max_tokens": 8,
           "messages": [{"role": "user", "content": format!("request {i}")}]})
}

/// `/sim/stats`.
async fn sim_stats(up: &Proc) -> Value {
    get(up.addr, "/sim/stats").await.json()
}

/// `n` requests spread round-robin over `addrs`, the i-th sent at `i * spacing` from now
/// (all in flight at once when it is zero); with `secret`, as that key.
async fn spread(
    addrs: &[SocketAddr],
    n: usize,
    spacing: Duration,
    secret: Option<&str>,
) -> Vec<Answer> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let addr = addrs[i % addrs.len()];
            let auth = secret.map(|s| format!("Bearer {s}"));
            let at = start + spacing * i as u32;
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let headers: Vec<(&str, &str)> = auth
                    .as_deref()
                    .map(|a| vec![("authorization", a)])
                    .unwrap_or_default();
                crate::procs::call(
                    addr,
                    http::Method::POST,
                    "/v1/chat/completions",
                    &headers,
                    Some(bytes::Bytes::from(chat(i).to_string())),
                )
                .await
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(n);
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    answers
}

/// (answers 200, answers 429 `rate_limit_exceeded` with a `Retry-After` of 1..=60 s);
/// panics on any other answer.
fn tally(answers: &[Answer]) -> (usize, usize) {
    let (mut ok, mut limited) = (0, 0);
    for answer in answers {
        match answer.status.as_u16() {
            200 => ok += 1,
            429 => {
                let body = answer.json();
                assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
                let retry: u64 = answer
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("a 429 without Retry-After: {body}"));
                assert!((1..=60).contains(&retry), "Retry-After {retry}");
                limited += 1;
            }
            other => panic!("unexpected answer {other}: {:?}", answer.body),
        }
    }
    (ok, limited)
}

/// The `[state]` of the tests: three expected nodes, and a request-lane deadline loose
/// enough for a loaded 2-core machine (a Redis call past it falls back to the node's share,
/// which is the degraded bound, not the one under test).
fn state(redis: &RedisServer, extra: &str) -> String {
    state_table(
        redis,
        &format!("expected_nodes = 3\ncommand_timeout_ms = 500\n{extra}"),
    )
}

#[tokio::test]
async fn a_target_rpm_shared_by_three_nodes_keeps_the_provider_under_it_in_any_minute() {
    let (ok, limited, _) = target_rpm_over_three_nodes("").await;
    assert_eq!(ok, 120);
    assert_eq!(limited, 480);
}

#[tokio::test]
async fn leased_permits_keep_the_provider_under_the_target_rpm_in_fewer_redis_calls() {
    let (ok, limited, leases) = target_rpm_over_three_nodes("rate_limit_lease_ms = 1000").await;
    // Permits leased and unused at the end are lost for this minute: at most one lease of
    // 120 / (4 × 3) = 10 per node.
    assert!((90..=120).contains(&ok), "{ok} admitted");
    assert_eq!(ok + limited, 600);
    assert!(
        leases < ok as u64,
        "{leases} leases in the log for {ok} admissions: permits were not leased"
    );
}

/// 600 requests in about 20 s, round-robin over three nodes sharing a target RPM of 120 on
/// a sim that refuses beyond 120 per minute, with `lease` in `[state]`: asserts the
/// provider never refused one nor saw more than 120 in a minute, and returns (admitted,
/// refused, entries in the target's log).
async fn target_rpm_over_three_nodes(lease: &str) -> (usize, usize, u64) {
    let redis = RedisServer::start();
    // The provider account: 120 requests per minute, refused beyond with 429.
    let up = sim(&["--rpm-limit", "120"]);
    let fleet = Fleet::start(3, |_, data_dir| {
        config(data_dir, &up, "rpm = 120", &state(&redis, lease))
    });
    let addrs: Vec<SocketAddr> = (0..3).map(|i| fleet.addr(i)).collect();
    // 600 requests in about 20 s, round-robin over the nodes.
    let started = Instant::now();
    let answers = spread(&addrs, 600, Duration::from_millis(33), None).await;
    let took = started.elapsed();
    let (ok, limited) = tally(&answers);
    let stats = sim_stats(&up).await;
    assert_eq!(
        stats["rpm"]["limited"], 0,
        "the provider refused requests: {stats}"
    );
    assert_eq!(stats["faults"]["rate_limited"], 0, "{stats}");
    let max = stats["rpm"]["max_received_in_60s"].as_u64().unwrap();
    assert!(max <= 120, "the provider saw {max} in one minute: {stats}");
    // Everything happened within one window: the fleet used at most its minute.
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert_eq!(stats["requests"], ok as u64, "{stats}");
    let log = redis.cli(&["ZCARD", &format!("t{}:{{t:up}}:rl:rpm", redis.port)]);
    (ok, limited, log.parse().expect("ZCARD"))
}

#[tokio::test]
async fn without_shared_state_three_nodes_send_three_times_the_target_rpm() {
    // The contrast that shows the test above can fail: the same fleet on the local backend
    // enforces the limit per node.
    let up = sim(&["--rpm-limit", "120"]);
    let fleet = Fleet::start(3, |_, data_dir| config(data_dir, &up, "rpm = 120", ""));
    let addrs: Vec<SocketAddr> = (0..3).map(|i| fleet.addr(i)).collect();
    let _ = spread(&addrs, 450, Duration::from_millis(5), None).await;
    let stats = sim_stats(&up).await;
    let max = stats["rpm"]["max_received_in_60s"].as_u64().unwrap();
    assert!(max > 120, "{stats}");
    assert!(stats["rpm"]["limited"].as_u64().unwrap() > 0, "{stats}");
}

/// A `[[keys]]` entry.
fn key(limits: &str) -> String {
    let hash = blake3::Hash::from(weir::config::hash_key("sk-team")).to_hex();
    format!("[[keys]]\nname = \"team\"\nhash = \"blake3:{hash}\"\n{limits}\n")
}

#[tokio::test]
async fn a_key_rpm_holds_across_nodes() {
    let redis = RedisServer::start();
    let up = sim(&[]);
    let extra = key("rpm = 30") + &state(&redis, "");
    let fleet = Fleet::start(3, |_, data_dir| config(data_dir, &up, "", &extra));
    let addrs: Vec<SocketAddr> = (0..3).map(|i| fleet.addr(i)).collect();
    let answers = spread(&addrs, 90, Duration::from_millis(10), Some("sk-team")).await;
    let (ok, limited) = tally(&answers);
    assert_eq!((ok, limited), (30, 60));
    assert_eq!(sim_stats(&up).await["requests"], 30);
    let log = format!("t{}:{{k:team}}:rl:rpm", redis.port);
    assert_eq!(redis.cli(&["ZCARD", &log]), "30");
}

/// A key's fleet-wide admission is a Redis round trip that the request phase does not wait
/// for; what the stages send out does. A stage that calls `complete()` on every request and
/// answers with what came of it (the chaos program's `complete` mode): an admitted request
/// makes one upstream call (the stage's), a refused one none though its stage had started,
/// and a refused request is answered 429 though its stage answered it.
#[tokio::test]
async fn a_request_its_key_refuses_sends_nothing_upstream_though_its_stages_ran_meanwhile() {
    let redis = RedisServer::start();
    let up = sim(&[]);
    let stage = format!(
        "[[routes.stages]]\nname = \"chaos\"\npath = \"{}\"\nconfig = {{ mode = \"complete\" }}\n\n",
        weir_test_artifacts::CHAOS
    );
    let (_fleet, addrs) = six_of_eighteen(&redis, &up, &stage).await;
    assert_eq!(
        sim_stats(&up).await["requests"],
        6,
        "one call per admitted request"
    );
    let log = format!("t{}:{{k:team}}:rl:rpm", redis.port);
    assert_eq!(redis.cli(&["ZCARD", &log]), "6");

    // Every node had a refusal from the fleet, whose wait (the first admission's age out of
    // the window, about a minute) has not passed: 9 more requests are refused without a
    // script call each (the script calls left are the nodes' spend shipping).
    let scripts = || {
        let info = redis.cli(&["INFO", "commandstats"]);
        info.lines()
            .find(|l| l.starts_with("cmdstat_evalsha:"))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = scripts();
    let answers = spread(&addrs, 9, Duration::ZERO, Some("sk-team")).await;
    assert_eq!(tally(&answers), (0, 9));
    let calls = scripts() - before;
    assert!(calls <= 3, "{calls} script calls for 9 refused requests");
    assert_eq!(sim_stats(&up).await["requests"], 6);

    // Redis loses its data (the log with it): the nodes forget the refusal once they notice
    // (within 500 ms), not when its wait of about a minute is over.
    redis.cli(&["FLUSHALL"]);
    until_within(
        Duration::from_secs(20),
        "node 0 to admit the key again",
        || async {
            let answers = spread(&addrs[..1], 1, Duration::ZERO, Some("sk-team")).await;
            check(answers[0].status == 200, answers[0].status)
        },
    )
    .await;
}

/// The same for a stage's service call: the stage of every request calls its search
/// service (weir's `services` import), and a request its key refuses reaches no service
/// (`service::Service::call` waits for the key's admission, like an LLM call).
#[tokio::test]
async fn a_request_its_key_refuses_reaches_no_service_though_its_stage_ran_meanwhile() {
    let redis = RedisServer::start();
    let up = sim(&[]);
    let search = sim(&[]);
    let stage = format!(
        "[[routes.stages]]\nname = \"probe\"\npath = \"{}\"\nservices = [\"search\"]\n\
         deadline_ms = 5000\n\n[routes.stages.config]\nmode = \"http\"\ntransport = \"import\"\n\
         method = \"POST\"\nurl = \"http://search{}\"\n\
         body = '{{\"query_embeddings\": [[1.0, 0.0]], \"n_results\": 2}}'\n\n\
         [services.search]\nurls = [\"http://{}\"]\n\n",
        weir_test_artifacts::OUTBOUND,
        crate::services::query_path("c1"),
        search.addr,
    );
    let (_fleet, _addrs) = six_of_eighteen(&redis, &up, &stage).await;
    assert_eq!(
        crate::services::searches(&search).await,
        6,
        "one search per admitted request"
    );
}

/// Three nodes with `stage` on the route and key `team` at 6 RPM for the fleet; 18 requests
/// at once spread over them: 6 admitted, 12 refused. The nodes and their addresses.
async fn six_of_eighteen(redis: &RedisServer, up: &Proc, stage: &str) -> (Fleet, Vec<SocketAddr>) {
    let extra = format!("{stage}{}{}", key("rpm = 6"), state(redis, ""));
    let fleet = Fleet::start(3, |_, data_dir| config(data_dir, up, "", &extra));
    let addrs: Vec<SocketAddr> = (0..3).map(|i| fleet.addr(i)).collect();
    let answers = spread(&addrs, 18, Duration::ZERO, Some("sk-team")).await;
    assert_eq!(tally(&answers), (6, 12));
    (fleet, addrs)
}

/// A node's counter `series` (its name and labels as `/metrics` prints them), 0 when it has
/// not been counted yet.
async fn counter(node: &Proc, series: &str) -> u64 {
    let text = get(node.admin.expect("admin"), "/metrics").await.body;
    let text = String::from_utf8_lossy(&text).into_owned();
    text.lines()
        .find(|l| l.split(' ').next() == Some(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// With a strict budget and a target RPM without leases, the target's admission goes to
/// Redis with the call's reservation, before the budget has answered, and is given back
/// when no call follows: a fleet cache hit, a budget refusal. The target's log ends with
/// exactly the calls the provider saw; a key refused once sends no admission ahead again
/// until a call of it is admitted.
#[tokio::test]
async fn a_targets_admission_sent_with_the_reservation_is_given_back_when_no_call_follows() {
    let redis = RedisServer::start();
    let up = sim(&[]);
    // A call's worst case is $0.10 (1,000 completion tokens at $100 per million), a real
    // one well under $0.01: after one call, $0.102 has no room for another.
    let extra = format!(
        "[routes.cache]\nttl_ms = 60000\n\n[prices.\"sim-a\"]\ninput_per_mtok = 50.0\noutput_per_mtok = 100.0\n\n{}\n{}",
        crate::cost::key("team", "sk-team", "daily_budget_usd = 0.102"),
        state(&redis, "budget_mode = \"strict\""),
    );
    let fleet = Fleet::start(3, |_, data_dir| {
        config(data_dir, &up, "model = \"sim-a\"\nrpm = 100", &extra)
    });
    let question = |text: &str| {
        let mut body = crate::cost::chat(text, 1000);
        body["temperature"] = json!(0);
        body
    };
    let ask = |node: usize, text: &'static str| {
        let addr = fleet.addr(node);
        let body = question(text);
        async move { crate::cost::ask(addr, Some("sk-team"), &body).await }
    };
    let miss = ask(0, "what is a weir?").await;
    assert_eq!(miss.status, 200, "{:?}", miss.body);
    assert_eq!(miss.headers["x-weir-cache"], "miss");
    until(
        "node 0's answer in the fleet's cache, on node 1",
        || async {
            let hit = ask(1, "what is a weir?").await;
            check(
                hit.status == 200 && hit.headers["x-weir-cache"] == "hit",
                format!("{} {:?}", hit.status, hit.headers.get("x-weir-cache")),
            )
        },
    )
    .await;
    // The fleet's hits on node 1 took the target's admission and gave it back.
    until(
        "node 1 to give back what its hits were admitted",
        || async {
            let returned = counter(&fleet.nodes[1], "weir_state_permits_returned_total").await;
            check(returned >= 1, returned)
        },
    )
    .await;
    // Node 2 only sees refusals: the first sends the admission ahead (the budget's answer
    // is not known yet) and gives it back; the next four wait for the key's answer.
    for _ in 0..5 {
        let refused = ask(2, "a new question").await;
        assert_eq!(refused.status, 429, "{:?}", refused.body);
        assert_eq!(refused.json()["error"]["code"], "budget_exceeded");
    }
    let log = format!("t{}:{{t:up}}:rl:rpm", redis.port);
    let total = format!("{log}:n");
    until(
        "the target's log to hold the provider's calls only",
        || async {
            let calls = sim_stats(&up).await["requests"].as_u64().unwrap();
            let logged: u64 = redis.cli(&["ZCARD", &log]).parse().unwrap();
            let counted: u64 = redis.cli(&["GET", &total]).parse().unwrap_or(0);
            check(
                calls == 1 && logged == 1 && counted == 1,
                format!("{calls} calls, {logged} admissions logged, {counted} counted"),
            )
        },
    )
    .await;
    assert_eq!(
        counter(&fleet.nodes[2], "weir_state_permits_returned_total").await,
        1,
        "only the first refusal of the key sent an admission ahead"
    );
    assert_eq!(
        counter(&fleet.nodes[0], "weir_state_permits_returned_total").await,
        0,
        "the miss's call went out on the admission sent ahead"
    );
}

/// `weir_state_fallbacks_total{feature="rate_limits"}` of a node.
async fn fallbacks(node: &Proc) -> u64 {
    counter(node, r#"weir_state_fallbacks_total{feature="rate_limits"}"#).await
}

#[tokio::test]
async fn while_redis_is_away_a_node_keeps_its_share_then_the_fleet_limit_is_back() {
    let redis = RedisServer::start();
    let up = sim(&[]);
    // 30 per minute for the fleet: 10 for a node on its own.
    let extra = key("rpm = 30") + &state(&redis, "breaker_failures = 1");
    let fleet = Fleet::start(1, |_, data_dir| config(data_dir, &up, "", &extra));
    let node = fleet.addr(0);
    redis.signal("-STOP");
    let answers = spread(&[node], 15, Duration::from_millis(20), Some("sk-team")).await;
    redis.signal("-CONT");
    let (ok, limited) = tally(&answers);
    assert_eq!(
        (ok, limited),
        (10, 5),
        "the node's share while Redis is away"
    );
    assert!(fallbacks(&fleet.nodes[0]).await >= 15);
    until("Redis to be available again", || async {
        let state = fleet.state(0).await;
        check(state["available"] == true, state)
    })
    .await;
    // Back on the shared limit: admissions are logged in Redis again. (The calls that timed
    // out while Redis was stopped ran when it resumed, before the ping that closed the
    // breaker: they count in the log too, which refuses more, never less.)
    let log = format!("t{}:{{k:team}}:rl:rpm", redis.port);
    let before: u64 = redis.cli(&["ZCARD", &log]).parse().unwrap();
    let answers = spread(&[node], 1, Duration::ZERO, Some("sk-team")).await;
    assert_eq!(tally(&answers), (1, 0));
    let after: u64 = redis.cli(&["ZCARD", &log]).parse().unwrap();
    assert_eq!(after, before + 1);
}

#[tokio::test]
async fn with_fail_closed_a_node_refuses_while_redis_is_away() {
    let redis = RedisServer::start();
    let up = sim(&[]);
    let policy = "breaker_failures = 1\n[state.on_unavailable]\nrate_limits = \"fail_closed\"";
    let fleet = Fleet::start(1, |_, data_dir| {
        config(data_dir, &up, "rpm = 100", &state(&redis, policy))
    });
    let node = fleet.addr(0);
    assert_eq!(
        post(node, "/v1/chat/completions", &chat(0)).await.status,
        200
    );
    redis.signal("-STOP");
    let refused = post(node, "/v1/chat/completions", &chat(1)).await;
    redis.signal("-CONT");
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "state_unavailable");
    assert_eq!(sim_stats(&up).await["requests"], 1);
    until("the target limit to be shared again", || async {
        let answer = post(node, "/v1/chat/completions", &chat(2)).await;
        check(answer.status == 200, answer.status)
    })
    .await;
}

/// The limits of `tag` as seen by node `node` on `redis` (the script called directly).
async fn fleet_limits(
    redis: &RedisServer,
    node: &str,
    tag: &str,
    rpm: Option<u32>,
    tpm: Option<u32>,
) -> std::sync::Arc<weir::state::limits::FleetLimits> {
    leased_limits(redis, node, tag, rpm, tpm, "").await
}

/// [`fleet_limits`] with `extra` in `[state]`.
async fn leased_limits(
    redis: &RedisServer,
    node: &str,
    tag: &str,
    rpm: Option<u32>,
    tpm: Option<u32>,
    extra: &str,
) -> std::sync::Arc<weir::state::limits::FleetLimits> {
    let settings: weir::config::StateSettings = toml::from_str(&format!(
        "backend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"w\"\nnode_id = \"{node}\"\ncommand_timeout_ms = 5000\n{extra}\n",
        redis.url()
    ))
    .expect("[state]");
    let shared = weir::state::Shared::open(&settings)
        .await
        .expect("Redis")
        .expect("a Redis backend");
    let limits = weir::state::limits::FleetLimits::new(&shared, tag, rpm, tpm);
    std::sync::Arc::new(limits.expect("limits"))
}

#[tokio::test]
async fn the_window_admits_exactly_its_limit_from_concurrent_nodes() {
    use weir::state::limits::{Refused, Which};
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(fleet_limits(&redis, &format!("n{i}"), "t:acct", Some(50), Some(1000)).await);
    }
    // 120 requests of 10 tokens at once from three nodes: exactly the 50 of the minute pass.
    let tasks: Vec<_> = (0..120)
        .map(|i| {
            let node = nodes[i % 3].clone();
            tokio::spawn(async move { node.take(10).await })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => admitted += 1,
            Err(Refused::Limited {
                which: Which::Rpm,
                per_minute: 50,
                wait,
            }) => assert!(
                wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
                "{wait:?}"
            ),
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(admitted, 50);
    assert_eq!(redis.cli(&["ZCARD", "w:{t:acct}:rl:rpm"]), "50");
    assert_eq!(redis.cli(&["GET", "w:{t:acct}:rl:tpm:n"]), "500");

    // A key's TPM: checked before a call, debited after it with what it used.
    let key = fleet_limits(&redis, "n0", "k:team", None, Some(100)).await;
    assert_eq!(key.check(60).await, Ok(()));
    key.debit(90);
    until("the debit to land", || async {
        let total = redis.cli(&["GET", "w:{k:team}:rl:tpm:n"]);
        check(total == "90", total)
    })
    .await;
    assert_eq!(key.check(10).await, Ok(()));
    let refused = key.check(11).await;
    assert!(
        matches!(
            refused,
            Err(Refused::Limited {
                which: Which::Tpm,
                per_minute: 100,
                ..
            })
        ),
        "{refused:?}"
    );
    // A debit larger than the limit weighs the limit.
    key.debit(u64::from(u32::MAX) * 4);
    until("the second debit to land", || async {
        let total = redis.cli(&["GET", "w:{k:team}:rl:tpm:n"]);
        check(total == "190", total)
    })
    .await;
}

#[tokio::test]
async fn a_keys_debits_of_one_batch_are_one_call_and_a_lost_log_does_not_refuse_for_ever() {
    let redis = RedisServer::start();
    // Five debits at once (within `DEBIT_BATCH`): one entry in the log, the sum in the total.
    let key = fleet_limits(&redis, "n0", "k:batch", None, Some(1000)).await;
    for tokens in [10, 20, 30, 40, 50] {
        key.debit(tokens);
    }
    until("the batch to land", || async {
        let total = redis.cli(&["GET", "w:{k:batch}:rl:tpm:n"]);
        check(total == "150", total)
    })
    .await;
    assert_eq!(redis.cli(&["ZCARD", "w:{k:batch}:rl:tpm"]), "1");
    // A debit after the batch went out (it landed) starts the next one.
    key.debit(7);
    until("the next batch to land", || async {
        let total = redis.cli(&["GET", "w:{k:batch}:rl:tpm:n"]);
        check(total == "157", total)
    })
    .await;
    assert_eq!(redis.cli(&["ZCARD", "w:{k:batch}:rl:tpm"]), "2");
    assert_eq!(key.check(843).await, Ok(()));
    assert!(key.check(844).await.is_err());
    // At shutdown, a batch still summing goes out at once.
    key.debit(3);
    key.give_back().await;
    assert_eq!(redis.cli(&["GET", "w:{k:batch}:rl:tpm:n"]), "160");

    // A total whose log is gone (evicted, say) is checked against the log when it would
    // refuse: the empty log admits, and the total starts again from what it holds.
    let lost = fleet_limits(&redis, "n0", "k:lost", Some(3), None).await;
    redis.cli(&["SET", "w:{k:lost}:rl:rpm:n", "3", "PX", "60000"]);
    assert_eq!(lost.take_request().await, Ok(()));
    assert_eq!(redis.cli(&["GET", "w:{k:lost}:rl:rpm:n"]), "1");
    assert_eq!(redis.cli(&["ZCARD", "w:{k:lost}:rl:rpm"]), "1");
}

#[tokio::test]
async fn entries_that_left_the_window_never_refuse_and_are_swept_away() {
    let redis = RedisServer::start();
    let now_ms = || -> u64 {
        let time = redis.cli(&["TIME"]);
        let mut parts = time.lines().map(|l| l.trim().parse::<u64>().expect("TIME"));
        let (secs, micros) = (parts.next().unwrap(), parts.next().unwrap());
        secs * 1000 + micros / 1000
    };
    // Five admissions two minutes old, not pruned yet: their total still says 5.
    let stale = |log: &str, total: &str, n: u32| {
        let old = (now_ms() - 120_000).to_string();
        for i in 0..n {
            redis.cli(&["ZADD", log, &old, &format!("1:old{i}")]);
        }
        redis.cli(&["SET", total, &n.to_string(), "PX", "60000"]);
    };
    // At its limit on them, a key still admits: a call the total would refuse prunes first.
    let full = fleet_limits(&redis, "n0", "k:full", Some(5), None).await;
    stale("w:{k:full}:rl:rpm", "w:{k:full}:rl:rpm:n", 5);
    assert_eq!(full.take_request().await, Ok(()));
    assert_eq!(redis.cli(&["GET", "w:{k:full}:rl:rpm:n"]), "1");
    assert_eq!(redis.cli(&["ZCARD", "w:{k:full}:rl:rpm"]), "1");
    // Far from its limit, they stay until a sweep (one call in 16): after 300 calls they are
    // gone ((15/16)^300 < 1e-8 that none swept), and the total counts exactly the 300.
    let roomy = fleet_limits(&redis, "n0", "k:roomy", Some(1_000_000), None).await;
    stale("w:{k:roomy}:rl:rpm", "w:{k:roomy}:rl:rpm:n", 50);
    for _ in 0..300 {
        assert_eq!(roomy.take_request().await, Ok(()));
    }
    let cutoff = (now_ms() - 60_000).to_string();
    let left = redis.cli(&["ZCOUNT", "w:{k:roomy}:rl:rpm", "-inf", &cutoff]);
    assert_eq!(
        left, "0",
        "entries that left the window are still in the log"
    );
    assert_eq!(redis.cli(&["GET", "w:{k:roomy}:rl:rpm:n"]), "300");
}

#[tokio::test]
async fn leases_never_let_the_window_hold_more_than_the_limit_and_give_back_what_was_unused() {
    use weir::state::limits::{Refused, Which};
    let redis = RedisServer::start();
    let lease = "expected_nodes = 3\nrate_limit_lease_ms = 300";
    let mut nodes = Vec::new();
    for i in 0..3 {
        let node = format!("n{i}");
        nodes.push(leased_limits(&redis, &node, "t:acct", Some(48), Some(100_000), lease).await);
    }
    let total = || -> u64 {
        redis
            .cli(&["GET", "w:{t:acct}:rl:rpm:n"])
            .parse()
            .unwrap_or(0)
    };
    // Waves of concurrent requests from three nodes: the log never holds more than 48, and
    // no more than 48 are admitted in the minute.
    let mut admitted = 0;
    for _ in 0..6 {
        let tasks: Vec<_> = (0..30)
            .map(|i| {
                let node = nodes[i % 3].clone();
                tokio::spawn(async move { node.take(10).await })
            })
            .collect();
        for task in tasks {
            match task.await.expect("task") {
                Ok(()) => admitted += 1,
                Err(Refused::Limited {
                    which: Which::Rpm,
                    per_minute: 48,
                    wait,
                }) => assert!(wait <= Duration::from_secs(61), "{wait:?}"),
                Err(other) => panic!("{other:?}"),
            }
        }
        assert!(total() <= 48, "the window holds {}", total());
        // Let the leases end, so the next wave renews them (and gives back the unused).
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    // Leases of at most 48 / (4 × 3) = 4 permits: at most 3 × 4 leased and unused at a time,
    // and the unused go back at the next lease.
    assert!((36..=48).contains(&admitted), "{admitted} admitted");
    // Fewer log entries than admissions: admissions were leased, not one call each.
    let entries: u64 = redis.cli(&["ZCARD", "w:{t:acct}:rl:rpm"]).parse().unwrap();
    assert!(
        entries < admitted as u64,
        "{entries} entries for {admitted}"
    );

    // A key's TPM on a lease: checked against the lease, debited from it, the rest debited
    // in Redis; the fleet's total counts every token used.
    let key = leased_limits(&redis, "n0", "k:team", None, Some(100), lease).await;
    assert_eq!(key.check(10).await, Ok(()));
    key.debit(30);
    until("the debit beyond the lease to land", || async {
        let total = redis.cli(&["GET", "w:{k:team}:rl:tpm:n"]);
        check(total == "30", total)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(key.check(70).await, Ok(()));
    assert_eq!(redis.cli(&["GET", "w:{k:team}:rl:tpm:n"]), "100");
    let refused = key.check(71).await;
    assert!(
        matches!(
            refused,
            Err(Refused::Limited {
                which: Which::Tpm,
                ..
            })
        ),
        "{refused:?}"
    );
    // A call weighing more than the whole limit weighs the limit, as without leases: it is
    // admitted on an empty window, not refused forever.
    let big = leased_limits(&redis, "n0", "t:big", None, Some(100), lease).await;
    assert_eq!(big.take(5000).await, Ok(()));
    assert_eq!(redis.cli(&["GET", "w:{t:big}:rl:tpm:n"]), "100");
}
