//! Acceptance (c): the response cache shared by three nodes on one Redis. An answer fetched
//! on node A is a hit on B and C; identical concurrent misses spread over the nodes make one
//! upstream call; a stopped Redis or a corrupted entry is a miss, never an error; an
//! invalidation removes the shared entries too.

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::harness::{Fleet, RedisServer, state_table};
use crate::procs::{Proc, call, get, post, sim};
use crate::sim::client::Answer;
use crate::wait::{check, until};

/// Node `i`'s config: `cached` on `up` with a 60 s cache, on `redis`. The Redis deadline is
/// generous: a loaded 2-core machine must not turn a Redis read into a miss in these tests.
fn config(up: &Proc, redis: &RedisServer) -> impl Fn(usize, &str) -> String {
    let target = format!("http://{}/v1", up.addr);
    let state = state_table(redis, "command_timeout_ms = 500\nbreaker_failures = 3\n");
    move |_, data_dir| {
        format!(
            "[server]\ndata_dir = \"{data_dir}\"\n\n[targets.up]\nbase_url = \"{target}\"\n\n\
             [[routes]]\nmodel = \"cached\"\ntargets = [\"up\"]\nmax_attempts = 1\n\
             cache = {{ ttl_ms = 60000 }}\n\n{state}"
        )
    }
}

fn chat(text: &str) -> Value {
    json!({"model": "cached", "temperature": 0, "messages": [{"role": "user", "content": text}]})
}

/// Upstream calls the simulator received.
async fn received(sim: &Proc) -> u64 {
    get(sim.addr, "/sim/stats").await.json()["requests"]
        .as_u64()
        .unwrap()
}

fn cache_header(answer: &Answer) -> String {
    answer
        .headers
        .get("x-weir-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The shared entries in `redis` (not the leases).
fn entries(redis: &RedisServer) -> Vec<String> {
    let pattern = format!("t{}:{{c:*", redis.port);
    redis
        .cli(&["--scan", "--pattern", &pattern])
        .lines()
        .filter(|k| !k.is_empty() && !k.ends_with(":lease"))
        .map(str::to_owned)
        .collect()
}

/// Waits until `redis` holds the shared entry of `answer` (`x-weir-cache-key`; the fill is
/// written off the request path) and returns its Redis key.
async fn until_stored(redis: &RedisServer, answer: &Answer) -> String {
    let hex = answer.headers["x-weir-cache-key"]
        .to_str()
        .unwrap()
        .to_owned();
    until("the shared entry to be written", || async {
        let found = entries(redis);
        match found.iter().find(|k| k.ends_with(&format!(":{hex}"))) {
            Some(key) => Ok(key.clone()),
            None => Err(format!("{hex} not in {found:?}")),
        }
    })
    .await
}

#[tokio::test]
async fn an_answer_fetched_on_one_node_is_a_hit_on_the_others_and_identical_misses_make_one_call() {
    let redis = RedisServer::start();
    let up = sim(&["--latency-ms", "500"]);
    let fleet = Fleet::start(3, config(&up, &redis));

    let miss = post(
        fleet.addr(0),
        "/v1/chat/completions",
        &chat("what is a weir?"),
    )
    .await;
    assert_eq!(miss.status, 200, "{:?}", miss.body);
    assert_eq!(cache_header(&miss), "miss");
    until_stored(&redis, &miss).await;
    for node in [1, 2] {
        let hit = post(
            fleet.addr(node),
            "/v1/chat/completions",
            &chat("what is a weir?"),
        )
        .await;
        assert_eq!(hit.status, 200, "node {node}: {:?}", hit.body);
        assert_eq!(cache_header(&hit), "hit", "node {node}");
        assert_eq!(hit.body, miss.body, "node {node} serves node 0's answer");
    }
    assert_eq!(received(&up).await, 1, "one upstream call for three nodes");

    // 90 identical concurrent requests of a new prompt, round-robin over the three nodes.
    let addrs: Vec<_> = (0..3).map(|i| fleet.addr(i)).collect();
    let tasks: Vec<_> = (0..90)
        .map(|i| {
            let addr = addrs[i % 3];
            tokio::spawn(async move {
                let answer = post(addr, "/v1/chat/completions", &chat("a stampede")).await;
                (i % 3, answer)
            })
        })
        .collect();
    let mut seen = Vec::new();
    let mut bodies = Vec::new();
    let mut last = None;
    for task in tasks {
        let (node, answer) = task.await.unwrap();
        assert_eq!(answer.status, 200, "node {node}: {:?}", answer.body);
        seen.push((node, cache_header(&answer)));
        bodies.push(answer.json()["choices"][0]["message"]["content"].clone());
        last = Some(answer);
    }
    assert_eq!(
        received(&up).await,
        2,
        "90 identical requests on three nodes make exactly one upstream call: {seen:?}"
    );
    let misses = seen.iter().filter(|(_, c)| c == "miss").count();
    assert_eq!(misses, 1, "{seen:?}");
    assert!(
        seen.iter()
            .all(|(_, c)| ["miss", "hit", "coalesced"].contains(&c.as_str())),
        "{seen:?}"
    );
    assert!(bodies.iter().all(|b| *b == bodies[0]), "one answer for all");
    until_stored(&redis, &last.unwrap()).await;

    // Invalidation on one node removes the fleet's entries of the route.
    let admin = fleet.nodes[0].admin.unwrap();
    let removed = call(
        admin,
        Method::DELETE,
        "/admin/cache?route=cached",
        &[],
        None,
    )
    .await;
    assert_eq!(removed.status, 200);
    assert_eq!(removed.json()["removed"]["shared"], 2, "{:?}", removed.body);
    assert!(entries(&redis).is_empty());
    // The node that invalidated fetches it again (the other nodes' memory tiers keep their
    // copies until the TTL: an invalidation is per node for memory and disk).
    let again = post(fleet.addr(0), "/v1/chat/completions", &chat("a stampede")).await;
    assert_eq!(cache_header(&again), "miss");
    assert_eq!(received(&up).await, 3);
}

#[tokio::test]
async fn a_leader_slower_than_its_lease_keeps_it_and_the_other_nodes_wait_for_its_answer() {
    let redis = RedisServer::start();
    let up = sim(&["--latency-ms", "4000"]);
    let target = format!("http://{}/v1", up.addr);
    // A 1.5 s lease on a 4 s call: only its renewal keeps the other nodes waiting (renewed
    // after 0.5 s, looked at every 0.25 s: a node stalled for 0.75 s would still keep it).
    let state = state_table(
        &redis,
        "command_timeout_ms = 500\ncache_flight_lease_ms = 1500\ncache_flight_wait_ms = 20000\n",
    );
    let fleet = Fleet::start(3, move |_, data_dir| {
        format!(
            "[server]\ndata_dir = \"{data_dir}\"\n\n[targets.up]\nbase_url = \"{target}\"\n\n\
             [[routes]]\nmodel = \"cached\"\ntargets = [\"up\"]\nmax_attempts = 1\n\
             cache = {{ ttl_ms = 60000 }}\n\n{state}"
        )
    });
    let leader = fleet.addr(0);
    let first =
        tokio::spawn(
            async move { post(leader, "/v1/chat/completions", &chat("a slow answer")).await },
        );
    // The others ask once the leader's lease would have run out.
    until("the leader's upstream call", || async {
        match received(&up).await {
            0 => Err("none yet"),
            _ => Ok(()),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let others: Vec<_> = [1, 2]
        .into_iter()
        .map(|node| {
            let addr = fleet.addr(node);
            tokio::spawn(
                async move { post(addr, "/v1/chat/completions", &chat("a slow answer")).await },
            )
        })
        .collect();
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(cache_header(&first), "miss");
    for (node, other) in others.into_iter().enumerate() {
        let other = other.await.unwrap();
        assert_eq!(other.status, 200, "node {}: {:?}", node + 1, other.body);
        assert_eq!(
            other.body,
            first.body,
            "node {} shares the leader's answer",
            node + 1
        );
    }
    assert_eq!(
        received(&up).await,
        1,
        "the renewed lease kept the other nodes from calling upstream themselves"
    );
}

/// Second probe, P4: nodes waiting for a leader whose call failed took the lease one after
/// another, so the third node's client waited out three failures (6, 12, 18 s). The failed
/// leader now lets them go: both waiting nodes call upstream at once, side by side.
#[tokio::test]
async fn a_failed_leader_lets_the_waiting_nodes_call_at_once_not_one_after_another() {
    let redis = RedisServer::start();
    // Every call fails, after 3 s.
    let up = sim(&[
        "--latency-ms",
        "3000",
        "--error-rate",
        "1.0",
        "--error-status",
        "503",
    ]);
    let fleet = Fleet::start(3, config(&up, &redis));
    let ask = |node: usize| {
        let addr = fleet.addr(node);
        tokio::spawn(
            async move { post(addr, "/v1/chat/completions", &chat("a failing answer")).await },
        )
    };
    let leader = ask(0);
    until("the leader's upstream call", || async {
        let n = received(&up).await;
        check(n == 1, format!("{n} calls"))
    })
    .await;
    // Both find the leader's lease and wait for it.
    let others = [ask(1), ask(2)];
    let first = leader.await.unwrap();
    assert_eq!(first.status, 502, "{:?}", first.body);
    until("the waiting nodes' own calls", || async {
        let n = received(&up).await;
        check(n == 3, format!("{n} calls"))
    })
    .await;
    // Each of their calls takes 3 s: had one waited for the other's failure, it would have
    // answered before the other's call began.
    assert!(
        others.iter().all(|other| !other.is_finished()),
        "both waiting nodes called together once the leader failed"
    );
    for (node, other) in others.into_iter().enumerate() {
        let other = other.await.unwrap();
        assert_eq!(other.status, 502, "node {}: {:?}", node + 1, other.body);
    }
    assert_eq!(received(&up).await, 3, "one call per node, none repeated");
}

#[tokio::test]
async fn a_stopped_redis_or_a_corrupted_entry_is_a_miss_not_an_error() {
    let redis = RedisServer::start();
    let up = sim(&[]);
    let fleet = Fleet::start(2, config(&up, &redis));

    // A corrupted entry: a miss on the node that reads it, then replaced by a good one.
    let first = post(fleet.addr(0), "/v1/chat/completions", &chat("corrupt me")).await;
    assert_eq!(first.status, 200);
    let key = until_stored(&redis, &first).await;
    assert_eq!(redis.cli(&["SET", &key, "garbage"]), "OK");
    let read = post(fleet.addr(1), "/v1/chat/completions", &chat("corrupt me")).await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    assert_eq!(
        cache_header(&read),
        "miss",
        "a corrupted entry is not served"
    );
    assert_eq!(received(&up).await, 2);
    until("the corrupted entry to be replaced", || async {
        let value = redis.cli(&["GET", &key]);
        check(value.starts_with("wc1"), value)
    })
    .await;

    // An entry of the wrong type (a list): a miss too, and replaced by a good one.
    let first = post(fleet.addr(0), "/v1/chat/completions", &chat("a list")).await;
    assert_eq!(first.status, 200);
    let key = until_stored(&redis, &first).await;
    redis.cli(&["DEL", &key]);
    assert_eq!(redis.cli(&["RPUSH", &key, "not", "an", "entry"]), "3");
    let errors = |state: Value| state["calls"]["errors"].as_u64();
    let errors_before = errors(fleet.state(1).await);
    let read = post(fleet.addr(1), "/v1/chat/completions", &chat("a list")).await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    assert_eq!(cache_header(&read), "miss", "a list is not served");
    assert_eq!(
        errors(fleet.state(1).await),
        errors_before,
        "the script refuses a list itself: no Redis error"
    );
    assert_eq!(received(&up).await, 4);
    until("the list to be replaced", || async {
        check(
            redis.cli(&["TYPE", &key]) == "string",
            redis.cli(&["TYPE", &key]),
        )
    })
    .await;

    // Redis stopped: every request still succeeds (as a miss) within a generous bound.
    redis.signal("-STOP");
    for (i, text) in ["stopped one", "stopped two", "stopped three"]
        .into_iter()
        .enumerate()
    {
        for node in 0..2 {
            let start = Instant::now();
            let answer = post(fleet.addr(node), "/v1/chat/completions", &chat(text)).await;
            assert_eq!(
                answer.status, 200,
                "request {i} on node {node}: {:?}",
                answer.body
            );
            assert_eq!(cache_header(&answer), "miss", "request {i} on node {node}");
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "request {i} on node {node} waited {:?} on a stopped Redis",
                start.elapsed()
            );
        }
    }
    assert_eq!(
        received(&up).await,
        10,
        "each node fetched each prompt itself"
    );
    redis.signal("-CONT");

    // Recovery: the shared tier works again.
    for node in 0..2 {
        until("the node to see Redis again", || async {
            let state = fleet.state(node).await;
            check(state["available"] == true, state)
        })
        .await;
    }
    let fetched = post(
        fleet.addr(0),
        "/v1/chat/completions",
        &chat("after the pause"),
    )
    .await;
    assert_eq!(cache_header(&fetched), "miss");
    until_stored(&redis, &fetched).await;
    let hit = post(
        fleet.addr(1),
        "/v1/chat/completions",
        &chat("after the pause"),
    )
    .await;
    assert_eq!(cache_header(&hit), "hit");
    assert_eq!(received(&up).await, 11);
}
