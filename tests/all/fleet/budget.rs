//! Issue 17 acceptance (a): one key's budget shared by three nodes on one Redis. 600
//! requests round-robin over the nodes at concurrency 60: what `weir sim` billed never passes
//! the budget (bound 0 in `strict`), refusals are 429 `budget_exceeded`, the three nodes'
//! local ledgers sum to exactly the fleet's total in Redis, and no reservation is left
//! outstanding. Also: a reservation whose node never settles is charged in full at expiry
//! and corrected by a late settle (the scripts driven with `redis-cli`).

use std::sync::Arc;

use serde_json::Value;

use super::harness::{Fleet, RedisServer, state_table};
use crate::cost::{ask, chat, key};
use crate::procs::{Proc, get, sim};
use crate::wait::{check, until};

/// The key's daily budget, USD.
const BUDGET_USD: f64 = 0.50;
/// Pico-dollars per token: $50 per million in, $100 out (a call costs ~$0.002).
const IN: u64 = 50_000_000;
const OUT: u64 = 100_000_000;

fn config(up: &Proc, redis: &RedisServer, data_dir: &str, extra: &str) -> String {
    format!(
        "[server]\ndata_dir = \"{data_dir}\"\n\n\
         [targets.up]\nbase_url = \"http://{}/v1\"\nmodel = \"sim-a\"\ntimeout_ms = 10000\n\n\
         [[routes]]\nmodel = \"demo\"\ntargets = [\"up\"]\nqueue_size = 1000\nqueue_timeout_ms = 20000\n\n\
         [prices.\"sim-a\"]\ninput_per_mtok = 50.0\noutput_per_mtok = 100.0\n\n\
         [cost]\nrequest_log = \"{data_dir}/requests.jsonl\"\n\n{}\n{}",
        up.addr,
        key(
            "team",
            "sk-team",
            &format!("daily_budget_usd = {BUDGET_USD}")
        ),
        state_table(redis, extra),
    )
}

/// Today (UTC) as `YYYY-MM-DD`.
fn today() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    weir::cost::clock::date(weir::cost::day_of(now))
}

/// `HGETALL` of `key` as (field, value) pairs.
fn hgetall(redis: &RedisServer, key: &str) -> Vec<(String, String)> {
    let out = redis.cli(&["HGETALL", key]);
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .filter(|pair| pair.len() == 2)
        .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
        .collect()
}

/// The sum of the `field` numbers of the fleet's spend aggregate for today.
fn redis_spend(redis: &RedisServer, field: &str) -> u64 {
    let key = format!("t{}:{{spend}}:d:{}", redis.port, today());
    hgetall(redis, &key)
        .iter()
        .filter(|(f, _)| f.ends_with(&format!("\u{1f}{field}")))
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum()
}

/// (spent, reserved) nanodollars of the key's day window in Redis, and the reservations
/// recorded.
fn redis_budget(redis: &RedisServer) -> (u64, i64, u64) {
    let tag = format!("t{}:{{k:team}}", redis.port);
    let window = format!("{tag}:b:d:{}", today());
    let field = |f: &str| {
        redis
            .cli(&["HGET", window.as_str(), f])
            .parse::<i64>()
            .unwrap_or(0)
    };
    let outstanding = redis
        .cli(&["ZCARD", format!("{tag}:resv").as_str()])
        .parse::<u64>()
        .unwrap();
    (field("spent") as u64, field("reserved"), outstanding)
}

/// What the simulator billed, pico-dollars.
async fn billed(up: &Proc) -> (u64, u64) {
    let stats = get(up.addr, "/sim/stats").await.json();
    let b = &stats["billed"];
    let n = |f: &str| b[f].as_u64().unwrap();
    (
        n("requests"),
        n("prompt_tokens") * IN + n("completion_tokens") * OUT,
    )
}

/// Sends `n` requests round-robin over the fleet, `concurrency` at a time: (ok, refused).
async fn burst(fleet: &Fleet, n: usize, concurrency: usize) -> (u64, u64) {
    let addrs: Vec<_> = (0..fleet.nodes.len()).map(|i| fleet.addr(i)).collect();
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let addr = addrs[i % addrs.len()];
            let gate = gate.clone();
            tokio::spawn(async move {
                let _slot = gate.acquire_owned().await.unwrap();
                ask(
                    addr,
                    Some("sk-team"),
                    &chat(&format!("hello fleet {i:04}"), 16),
                )
                .await
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        let answer = task.await.unwrap();
        match answer.status.as_u16() {
            200 => ok += 1,
            429 => {
                refused += 1;
                let body = answer.json();
                assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
            }
            other => panic!("unexpected status {other}: {:?}", answer.body),
        }
    }
    (ok, refused)
}

/// Sends `n` distinct requests for key `team` to node 0, each answered 200.
async fn answered(fleet: &Fleet, n: usize) {
    for i in 0..n {
        let answer = ask(
            fleet.addr(0),
            Some("sk-team"),
            &chat(&format!("hi {i}"), 16),
        )
        .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
}

/// Stops node `i` gracefully (SIGTERM: it flushes its ledger and ships its spend).
fn stop(fleet: &mut Fleet, i: usize) {
    let pid = fleet.nodes[i].child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = fleet.nodes[i].child.wait().unwrap();
    assert!(exit.success(), "node {i} exited with {exit}");
}

/// The cost (pico-dollars) and calls in the ledger under `data_dir`.
fn local_ledger(data_dir: &std::path::Path) -> (u64, u64) {
    let ledger = weir::cost::Ledger::open(Some(data_dir), None).unwrap();
    let rows = ledger.rows(0, u32::MAX).unwrap();
    rows.iter().fold((0, 0), |(cost, calls), r| {
        (cost + r.cost_pico, calls + r.calls)
    })
}

/// The whole acceptance run in `mode` with `n` requests; returns (ok, refused).
async fn budget_holds(mode: &str, n: usize) -> (u64, u64) {
    let redis = RedisServer::start();
    let up = sim(&["--latency-ms", "20"]);
    let extra = format!(
        "budget_mode = \"{mode}\"\nexpected_nodes = 3\nlease_ttl_ms = 2000\ncommand_timeout_ms = 2000\n"
    );
    let mut fleet = Fleet::start(3, |_, data_dir| config(&up, &redis, data_dir, &extra));
    let data_dirs: Vec<_> = fleet
        .configs
        .iter()
        .map(|c| c.parent().unwrap().join("data"))
        .collect();
    let mut node_ids = Vec::new();
    for i in 0..3 {
        node_ids.push(fleet.state(i).await["node_id"].as_str().unwrap().to_owned());
    }
    let before = redis.cli(&["INFO", "commandstats"]);
    let started = tokio::time::Instant::now();
    let (ok, refused) = burst(&fleet, n, 60).await;
    let elapsed = started.elapsed();
    assert_eq!(ok + refused, n as u64);
    assert!(ok > 50 && refused > 0, "ok {ok}, refused {refused}");

    // What the provider billed never passes the budget (bound 0).
    let (billed_calls, billed) = billed(&up).await;
    let budget = (BUDGET_USD * 1e12) as u64;
    assert_eq!(billed_calls, ok, "every admitted call was billed once");
    assert!(
        billed <= budget,
        "{mode}: billed {billed} over budget {budget}"
    );

    // Every settle lands: nothing stays reserved in Redis.
    until("every fleet reservation to be settled", || async {
        let (_, reserved, outstanding) = redis_budget(&redis);
        check(
            reserved == 0 && outstanding == 0,
            format!("reserved {reserved}, outstanding {outstanding}"),
        )
    })
    .await;
    // The fleet's spend, read on any node, has every call once shipping caught up.
    let admin = fleet.nodes[1].admin.unwrap();
    let fleet_total: Value = until("the fleet's spend to hold every call", || async {
        let spend = get(admin, "/admin/spend").await.json();
        let calls = spend["total"]["calls"].as_u64().unwrap_or(0);
        check(calls == ok, spend.clone()).map(|_| spend)
    })
    .await;
    let mut per_node = 0;
    for id in &node_ids {
        let spend = get(admin, &format!("/admin/spend?node={id}")).await.json();
        per_node += spend["total"]["cost_pico_usd"].as_u64().unwrap();
    }
    // The key's live windows read as the fleet has them, on any node (second probe, P6: each
    // node showed its own share of the spend next to the fleet's budget); with `?node=`,
    // each node's own spend, which add up to the fleet's.
    let (spent_nanos, _, _) = redis_budget(&redis);
    let usd = |row: &Value, f: &str| row[f].as_f64().unwrap_or(f64::NAN);
    let team = |spend: &Value| {
        let keys = spend["keys"].as_array().cloned().unwrap_or_default();
        let row = keys.into_iter().find(|k| k["key"] == "team");
        row.unwrap_or_else(|| panic!("no key team in {spend}"))
    };
    let row = team(&get(admin, "/admin/spend").await.json());
    assert_eq!(row["scope"], "fleet", "{row}");
    assert!(
        (usd(&row, "spent_today_usd") - spent_nanos as f64 / 1e9).abs() < 1e-9,
        "{row} vs {spent_nanos} n$ spent in Redis"
    );
    assert_eq!(usd(&row, "reserved_usd"), 0.0, "{row}");
    let mut nodes_spent = 0.0;
    for id in &node_ids {
        let row = team(&get(admin, &format!("/admin/spend?node={id}")).await.json());
        assert_eq!(row["scope"], "node", "{row}");
        nodes_spent += usd(&row, "spent_today_usd");
    }
    assert!(
        (nodes_spent - spent_nanos as f64 / 1e9).abs() < 1e-9,
        "the nodes' spend {nodes_spent} vs the fleet's {spent_nanos} n$"
    );
    let commands = command_count(&redis.cli(&["INFO", "commandstats"])) - command_count(&before);
    eprintln!(
        "{mode}: {ok} ok, {refused} refused in {elapsed:?}; Redis commands per request {:.3} (incl. scripts' inner calls), billed ${:.6}",
        commands as f64 / n as f64,
        billed as f64 / 1e12
    );

    // The three nodes' local ledgers sum to exactly the fleet's total in Redis.
    for i in 0..3 {
        stop(&mut fleet, i);
    }
    let (mut local, mut local_calls) = (0, 0);
    for dir in &data_dirs {
        let (cost, calls) = local_ledger(dir);
        local += cost;
        local_calls += calls;
    }
    let redis_total = redis_spend(&redis, "cost");
    assert_eq!(local_calls, ok, "{}", unusual_entries(&data_dirs));
    assert_eq!(local, redis_total, "local ledgers vs Redis");
    assert_eq!(
        fleet_total["total"]["cost_pico_usd"].as_u64(),
        Some(redis_total)
    );
    assert_eq!(
        per_node, redis_total,
        "the nodes' shipped rows sum to the fleet's"
    );
    assert_eq!(
        local, billed,
        "what weir recorded is what the provider billed"
    );
    // The budget's spent (nanodollars, each settle rounded up) covers the ledgers.
    let (spent, reserved, outstanding) = redis_budget(&redis);
    assert_eq!((reserved, outstanding), (0, 0));
    assert!(
        spent * 1000 >= local && spent * 1000 < local + 1000 * ok,
        "budget spent {spent} n$ vs ledgers {local} p$"
    );
    (ok, refused)
}

/// The nodes' request-log lines other than a call fetched with measured usage (an estimated
/// charge, a coalesced answer, ...): what to look at when the ledgers count more calls than
/// answers.
fn unusual_entries(data_dirs: &[std::path::PathBuf]) -> String {
    let (mut unusual, mut lines) = (Vec::new(), 0);
    for dir in data_dirs {
        let log = std::fs::read_to_string(dir.join("requests.jsonl")).unwrap_or_default();
        for line in log.lines() {
            lines += 1;
            let entry: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            let fetched = entry["cache"] == "miss" || entry["cache"] == "bypass";
            if !fetched || entry["estimated"] != false {
                unusual.push(format!("{}: {line}", dir.display()));
            }
        }
    }
    format!(
        "{} of the {lines} ledger entries are other than a call fetched with measured usage; the first: {:#?}",
        unusual.len(),
        &unusual[..unusual.len().min(10)]
    )
}

/// Redis's count of commands run (`cmdstat_*:calls=N`).
fn command_count(info: &str) -> u64 {
    info.lines()
        .filter_map(|l| l.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_a_fleet_of_three_never_spends_past_a_shared_budget() {
    budget_holds("strict", 600).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_a_fleet_of_three_never_spends_past_a_shared_budget() {
    budget_holds("lease", 600).await;
}

#[tokio::test]
async fn an_unsettled_reservation_is_charged_in_full_at_expiry_and_corrected_by_a_late_settle() {
    let redis = RedisServer::start();
    let up = sim(&[]);
    // A node loads the scripts (one request through it).
    let mut fleet = Fleet::start(1, |_, data_dir| {
        config(&up, &redis, data_dir, "reservation_ttl_ms = 1000\n")
    });
    let answer = ask(fleet.addr(0), Some("sk-team"), &chat("hi", 16)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    until("the request's settle", || async {
        let (_, reserved, outstanding) = redis_budget(&redis);
        check(
            reserved == 0 && outstanding == 0,
            format!("{reserved} {outstanding}"),
        )
    })
    .await;
    stop(&mut fleet, 0);
    let (spent0, _, _) = redis_budget(&redis);
    let tag = format!("t{}:{{k:team}}", redis.port);
    let day = format!("{tag}:b:d:{}", today());
    let month = format!("{tag}:b:m:{}", &today()[..7]);
    let resv = format!("{tag}:resv");
    let amt = format!("{tag}:resv_amt");
    let reserve = |id: &str, amount: &str| {
        redis.cli(&[
            "EVAL",
            weir::state::budget::RESERVE_SOURCE,
            "4",
            day.as_str(),
            month.as_str(),
            resv.as_str(),
            amt.as_str(),
            amount,
            "500000000",
            "-1",
            id,
            "1000",
            day.as_str(),
            month.as_str(),
        ])
    };
    let settle = |id: &str, actual: &str| {
        redis.cli(&[
            "EVAL",
            weir::state::budget::SETTLE_SOURCE,
            "5",
            day.as_str(),
            month.as_str(),
            resv.as_str(),
            amt.as_str(),
            format!("{tag}:done:{id}").as_str(),
            id,
            actual,
            "1000",
            "late-node",
        ])
    };
    // A node reserves 5000 n$ and dies: reserved until the expiry.
    assert!(reserve("dead-node/1/0", "5000").starts_with('1'));
    assert_eq!(redis_budget(&redis).1, 5000);
    // After the expiry the next reserve (any node) reaps it, charged in full.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(reserve("live/1/0", "10").starts_with('1'));
    let (spent, reserved, _) = redis_budget(&redis);
    assert_eq!((spent, reserved), (spent0 + 5000, 10));
    // The dead node's late settle corrects the charge to the real cost, once.
    assert_eq!(settle("dead-node/1/0", "1200"), "1");
    assert_eq!(
        settle("dead-node/1/0", "1200"),
        "0",
        "a settle applies once"
    );
    assert_eq!(redis_budget(&redis).0, spent0 + 1200);
    // The live one settles normally; a release of a settled one changes nothing.
    assert_eq!(settle("live/1/0", "7"), "1");
    assert_eq!(settle("live/1/0", "0"), "0");
    let (spent, reserved, outstanding) = redis_budget(&redis);
    assert_eq!((spent, reserved), (spent0 + 1207, 0));
    // Only the reaped marker of the dead reservation was left, and its settle removed it.
    assert_eq!(outstanding, 0);
}

#[tokio::test]
async fn a_reserve_that_timed_out_and_was_refused_leaves_no_reservation_behind() {
    use weir::state::budget::{FleetBudget, Refusal};
    let redis = RedisServer::start();
    let settings: weir::config::StateSettings = toml::from_str(&format!(
        "backend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"t{}\"\ncommand_timeout_ms = 100\n\
         background_timeout_ms = 300\n[on_unavailable]\nbudgets = \"fail_closed\"\n",
        redis.url(),
        redis.port
    ))
    .expect("[state]");
    let shared = weir::state::Shared::open(&settings)
        .await
        .expect("Redis")
        .expect("a Redis backend");
    let budget = std::sync::Arc::new(FleetBudget::new(
        shared,
        "team",
        Some(weir::config::usd_to_pico(1.0)),
        None,
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let day = weir::cost::day_of(now);
    // Loads the script, then settles: nothing outstanding.
    let hold = budget
        .reserve(1_000_000, day, Default::default())
        .await
        .expect("reserved");
    budget.settle_arc(hold, 0);
    until("the release", || async {
        let (_, reserved, outstanding) = redis_budget(&redis);
        check(
            reserved == 0 && outstanding == 0,
            format!("{reserved} {outstanding}"),
        )
    })
    .await;
    // Redis stops answering: the reserve is sent, times out and is refused (fail_closed);
    // Redis makes the reservation once it runs again.
    redis.signal("-STOP");
    let refused = budget.reserve(1_000_000, day, Default::default()).await;
    assert!(matches!(refused, Err(Refusal::Unavailable)), "{refused:?}");
    redis.signal("-CONT");
    // Released by this node: nothing stays reserved to be charged in full at expiry.
    until("the unanswered reservation's release", || async {
        let (spent, reserved, outstanding) = redis_budget(&redis);
        check(
            reserved == 0 && outstanding == 0 && spent == 0,
            format!("{spent} {reserved} {outstanding}"),
        )
    })
    .await;
}

#[tokio::test]
async fn a_node_shutting_down_gives_back_its_budget_slice_and_rate_limit_permits() {
    let redis = RedisServer::start();
    let up = sim(&[]);
    let extra = "budget_mode = \"lease\"\nlease_ttl_ms = 600000\nrate_limit_lease_ms = 10000\n";
    let mut fleet = Fleet::start(1, |_, data_dir| {
        config(&up, &redis, data_dir, extra).replace(
            &format!("daily_budget_usd = {BUDGET_USD}"),
            &format!("daily_budget_usd = {BUDGET_USD}\nrpm = 1000"),
        )
    });
    answered(&fleet, 5).await;
    // While the node runs, it holds a slice (reserved in Redis) and leased permits.
    let (_, reserved, _) = redis_budget(&redis);
    assert!(reserved > 0, "no slice outstanding");
    let permits = format!("t{}:{{k:team}}:rl:rpm:n", redis.port);
    let leased: u64 = redis.cli(&["GET", &permits]).parse().unwrap();
    assert!(leased >= 5, "{leased} permits");
    // A graceful stop gives both back: nothing reserved, the permits down to the 5 used.
    stop(&mut fleet, 0);
    let (spent, reserved, outstanding) = redis_budget(&redis);
    assert_eq!((reserved, outstanding), (0, 0), "spent {spent}");
    assert!(spent > 0);
    assert_eq!(redis.cli(&["GET", &permits]), "5");
}

/// Waits until `redis` shows spend and no reservation outstanding.
async fn settled(redis: &RedisServer) {
    until("the settles", || async {
        let (spent, reserved, outstanding) = redis_budget(redis);
        check(
            spent > 0 && reserved == 0 && outstanding == 0,
            format!("{spent} {reserved} {outstanding}"),
        )
    })
    .await;
}

/// Six calls of key `team` over the two nodes of `fleet`, each answered, then settled in
/// `redis`.
async fn six_calls(fleet: &Fleet, redis: &RedisServer) {
    for i in 0..6 {
        let answer = ask(
            fleet.addr(i % 2),
            Some("sk-team"),
            &chat(&format!("hi {i}"), 16),
        )
        .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    settled(redis).await;
}

#[tokio::test]
async fn after_redis_comes_back_empty_the_nodes_put_their_spend_back() {
    let mut redis = RedisServer::start();
    let up = sim(&[]);
    let mut fleet = Fleet::start(2, |_, data_dir| config(&up, &redis, data_dir, ""));
    six_calls(&fleet, &redis).await;
    let (before, _, _) = redis_budget(&redis);
    // Redis dies and comes back without its data.
    redis.restart();
    assert_eq!(redis_budget(&redis).0, 0);
    // The nodes notice (within a health period) and put their own spend back, with no
    // request needed: the window holds what it held (to a nanodollar per call).
    until("the fleet's spend to be back", || async {
        let (spent, _, _) = redis_budget(&redis);
        check(
            spent + 6 >= before && spent <= before,
            format!("{spent} of {before}"),
        )
    })
    .await;
    for i in 0..2 {
        let answer = ask(fleet.addr(i), Some("sk-team"), &chat("again", 16)).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    settled(&redis).await;
    // Each node's part is its own field: the sum of the nodes' parts is the window's spend.
    let tag = format!("t{}:{{k:team}}", redis.port);
    let window = format!("{tag}:b:d:{}", today());
    let fields = hgetall(&redis, &window);
    let parts: u64 = fields
        .iter()
        .filter(|(field, _)| field.starts_with("n:"))
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum();
    let (spent, _, _) = redis_budget(&redis);
    assert_eq!(parts, spent, "{fields:?}");
    // And the window is the whole fleet's spend again: the nodes' ledgers (pico-dollars),
    // rounded up to nanodollars per call.
    let data_dirs: Vec<_> = fleet
        .configs
        .iter()
        .map(|c| c.parent().unwrap().join("data"))
        .collect();
    stop(&mut fleet, 0);
    stop(&mut fleet, 1);
    let (mut ledgers, mut calls) = (0, 0);
    for dir in &data_dirs {
        let (cost, n) = local_ledger(dir);
        ledgers += cost;
        calls += n;
    }
    assert!(
        spent >= ledgers / 1000 && spent <= ledgers / 1000 + calls,
        "Redis has {spent} n$, the ledgers {ledgers} p$ over {calls} calls"
    );
}

/// Calls admitted on the local share while Redis stalls have no reservation in Redis to
/// expire: their settles wait out an outage longer than `reservation_ttl_ms` and land, so
/// the key's window has all of the node's spend afterwards, not only what settled in time.
#[tokio::test]
async fn spend_admitted_locally_during_an_outage_longer_than_the_ttl_reaches_the_budget() {
    let redis = RedisServer::start();
    let up = sim(&[]);
    let fleet = Fleet::start(1, |_, data_dir| {
        config(&up, &redis, data_dir, "reservation_ttl_ms = 1000")
    });
    redis.signal("-STOP");
    answered(&fleet, 5).await;
    // Well past the ttl, at which a settle used to give up.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    redis.signal("-CONT");
    // What the sim billed is what the node's ledger has (usage as reported).
    let (calls, cost) = billed(&up).await;
    assert_eq!(calls, 5);
    until("the outage's spend in the budget window", || async {
        let (spent, _, _) = redis_budget(&redis);
        check(
            spent >= cost / 1000 && spent <= cost / 1000 + calls,
            format!("{spent} n$ for {cost} p$ over {calls} calls"),
        )
    })
    .await;
}

#[tokio::test]
async fn spend_a_node_could_not_ship_before_it_was_killed_ships_at_its_next_start() {
    let mut redis = RedisServer::start();
    let up = sim(&[]);
    let mut fleet = Fleet::start(1, |_, data_dir| config(&up, &redis, data_dir, ""));
    let data_dir = fleet.configs[0].parent().unwrap().join("data");
    // Redis goes away: the node keeps answering (budgets fail open) and cannot ship.
    redis.signal("-KILL");
    answered(&fleet, 5).await;
    // `/admin/spend` commits the ledger before it asks Redis (which fails).
    let admin = fleet.nodes[0].admin.unwrap();
    let _ = get(admin, "/admin/spend").await;
    // kill -9: nothing the node held in memory survives.
    fleet.nodes[0].child.kill().unwrap();
    fleet.nodes[0].child.wait().unwrap();
    let (cost, calls) = local_ledger(&data_dir);
    assert_eq!(calls, 5);
    assert!(cost > 0);
    redis.restart();
    assert_eq!(redis_spend(&redis, "cost"), 0);
    // The next start ships what the ledger's outbox kept, once.
    fleet.restart(0);
    until("the killed node's spend to reach Redis", || async {
        let shipped = (redis_spend(&redis, "calls"), redis_spend(&redis, "cost"));
        check(
            shipped == (calls, cost),
            format!("{shipped:?} of {:?}", (calls, cost)),
        )
    })
    .await;
    // The key's budget window has it too, with no request needed (the node puts its ledger's
    // spend back at start): without it another node could spend the same money again.
    until("the killed node's spend in the budget window", || async {
        let (spent, _, _) = redis_budget(&redis);
        check(
            spent >= cost / 1000 && spent <= cost / 1000 + calls,
            format!("{spent} n$ for {cost} p$ over {calls} calls"),
        )
    })
    .await;
    // And only once: a later batch does not repeat it.
    let answer = ask(fleet.addr(0), Some("sk-team"), &chat("again", 16)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    until("the new call to reach Redis", || async {
        let shipped = redis_spend(&redis, "calls");
        check(shipped == calls + 1, shipped)
    })
    .await;
}

/// In `strict` mode a miss of the shared cache sends its reservation in the same round trip
/// as the fleet's cache lookup; when the fleet has the answer, the reservation is withdrawn.
/// A key whose budget has no room left for another call's worst case still gets a fleet hit
/// (not refused, not charged), a new question is refused, and nothing stays reserved.
#[tokio::test]
async fn a_fleet_cache_hit_is_neither_charged_nor_refused_when_the_budget_has_no_room() {
    let redis = RedisServer::start();
    let up = sim(&[]);
    // A call's worst case: 1,000 completion tokens at $100 per million = $0.10, plus the
    // prompt; a call really costs well under $0.01. After one call, $0.102 has no room for
    // another worst case.
    let config = |_: usize, data_dir: &str| {
        format!(
            "[server]\ndata_dir = \"{data_dir}\"\n\n\
             [targets.up]\nbase_url = \"http://{}/v1\"\nmodel = \"sim-a\"\n\n\
             [[routes]]\nmodel = \"demo\"\ntargets = [\"up\"]\ncache = {{ ttl_ms = 60000 }}\n\n\
             [prices.\"sim-a\"]\ninput_per_mtok = 50.0\noutput_per_mtok = 100.0\n\n{}\n{}",
            up.addr,
            key("team", "sk-team", "daily_budget_usd = 0.102"),
            state_table(
                &redis,
                "budget_mode = \"strict\"\ncommand_timeout_ms = 2000\n"
            ),
        )
    };
    let fleet = Fleet::start(3, config);
    let question = |text: &str| {
        let mut body = chat(text, 1000);
        body["temperature"] = serde_json::json!(0);
        body
    };
    let miss = ask(fleet.addr(0), Some("sk-team"), &question("what is a weir?")).await;
    assert_eq!(miss.status, 200, "{:?}", miss.body);
    assert_eq!(miss.headers["x-weir-cache"], "miss");
    until("node 0's answer in the fleet's cache", || async {
        let hit = ask(fleet.addr(1), Some("sk-team"), &question("what is a weir?")).await;
        check(
            hit.status == 200 && hit.headers["x-weir-cache"] == "hit",
            format!("{} {:?}", hit.status, hit.headers.get("x-weir-cache")),
        )
    })
    .await;
    let spent_after_miss = until("the miss settled", || async {
        let (spent, reserved, outstanding) = redis_budget(&redis);
        check(
            spent > 0 && reserved == 0 && outstanding == 0,
            format!("spent {spent}, reserved {reserved}, outstanding {outstanding}"),
        )
        .map(|_| spent)
    })
    .await;
    let refused = ask(fleet.addr(2), Some("sk-team"), &question("a new question")).await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "budget_exceeded");
    for node in [1, 2] {
        let hit = ask(
            fleet.addr(node),
            Some("sk-team"),
            &question("what is a weir?"),
        )
        .await;
        assert_eq!(hit.status, 200, "node {node}: {:?}", hit.body);
        assert_eq!(hit.headers["x-weir-cache"], "hit", "node {node}");
        assert_eq!(hit.json()["usage"]["cost"], 0.0, "node {node}");
    }
    assert_eq!(get(up.addr, "/sim/stats").await.json()["requests"], 1);
    until("every withdrawn reservation released", || async {
        let (spent, reserved, outstanding) = redis_budget(&redis);
        check(
            spent == spent_after_miss && reserved == 0 && outstanding == 0,
            format!("spent {spent}, reserved {reserved}, outstanding {outstanding}"),
        )
    })
    .await;
}

/// Fourth probe, R1: Redis evicting under memory pressure (or an operator's `DEL`) took a
/// key's budget windows while the fleet's data token stayed, and the key got its whole budget
/// again, with no word in any log. A reservation that finds its window gone while the node
/// spent in it has every node put its spend back; a Redis that may evict is reported.
#[tokio::test]
async fn a_budget_window_redis_lost_is_put_back_by_every_node() {
    let redis = RedisServer::start();
    let up = sim(&[]);
    let fleet = Fleet::start(2, |_, data_dir| config(&up, &redis, data_dir, ""));
    six_calls(&fleet, &redis).await;
    let (before, _, _) = redis_budget(&redis);
    let tag = format!("t{}:{{k:team}}", redis.port);
    let month = &today()[..7];
    redis.cli(&[
        "DEL",
        &format!("{tag}:b:d:{}", today()),
        &format!("{tag}:b:m:{month}"),
    ]);
    // One node's next call finds the window gone: both nodes' spend comes back (the other
    // node makes no call), plus the call itself.
    let answer = ask(fleet.addr(0), Some("sk-team"), &chat("after", 16)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    until("the fleet's spend to be back", || async {
        let (spent, _, _) = redis_budget(&redis);
        check(
            spent > before,
            format!("{spent} of {before} and one more call"),
        )
    })
    .await;
    let (after, _, _) = redis_budget(&redis);
    assert!(
        after <= before * 2,
        "not counted twice: {after} after {before}"
    );

    // A window of the wrong type is that key's trouble alone: /admin/spend answers, with this
    // node's numbers for the key and why (fourth probe, R3: the whole answer was a 503).
    let window = format!("{tag}:b:d:{}", today());
    redis.cli(&["DEL", &window]);
    redis.cli(&["SET", &window, "garbage"]);
    let spend = get(fleet.nodes[0].admin.unwrap(), "/admin/spend").await;
    assert_eq!(spend.status, 200, "{:?}", spend.body);
    let row = &spend.json()["keys"][0];
    assert_eq!(row["scope"], "node", "{row}");
    assert!(
        row["fleet_error"].as_str().unwrap().contains("WRONGTYPE"),
        "{row}"
    );
    redis.cli(&["DEL", &window]);

    // A Redis that may evict keys, and a node id in use twice, are reported.
    redis.cli(&["CONFIG", "SET", "maxmemory", "1gb"]);
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let dup = Fleet::start(2, |_, data_dir| {
        config(&up, &redis, data_dir, "node_id = \"edge-1\"\n")
    });
    // (A node reads the policy at start, then every minute: the new nodes have it.)
    let state = until("the eviction policy and the shared node id", || async {
        let state = get(dup.nodes[0].admin.unwrap(), "/admin/state")
            .await
            .json();
        let seen = state["eviction"]["policy"] == "allkeys-lru" && state["node_id_taken"] == true;
        if seen { Ok(state) } else { Err(state) }
    })
    .await;
    assert_eq!(state["eviction"]["safe"], false, "{state}");
    let own = get(fleet.nodes[0].admin.unwrap(), "/admin/state")
        .await
        .json();
    assert_eq!(own["node_id_taken"], false, "{own}");
    assert_eq!(own["eviction"]["safe"], true, "read at its start: {own}");
}
