//! `weir loadtest` through the real binary: a short scenario with a fault window whose report
//! agrees with the sim's own counts, a gate that cannot hold (exit 1, named), scenario errors
//! (exit 2, file:line:key), open-loop latency against a closed loop over a stall, and the
//! HTML report rendered in headless Chromium.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A loopback port free right now (the scenario's processes bind it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-loadtest-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `weir loadtest SCENARIO --out DIR --quiet`.
fn loadtest(scenario: &Path, out: &Path) -> Output {
    loadtest_with(scenario, out, &["--quiet"])
}

/// `weir loadtest SCENARIO --out DIR` with `flags`.
fn loadtest_with(scenario: &Path, out: &Path, flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("loadtest")
        .args(flags)
        .arg("--out")
        .arg(out)
        .arg(scenario)
        .env("XDG_STATE_HOME", out.join("state"))
        .output()
        .expect("weir loadtest runs")
}

fn report(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json written");
    serde_json::from_str(&text).expect("report.json is JSON")
}

fn u(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a count: {value}"))
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_fault_window_shows_in_the_report_and_its_counts_match_the_sims() {
    let dir = scratch("window");
    let (weir, admin, sim) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.join("weir.toml"),
        format!(
            r#"
[server]
listen = "127.0.0.1:{weir}"
admin_listen = "127.0.0.1:{admin}"

[targets.primary]
base_url = "http://127.0.0.1:{sim}/v1"
model = "sim-large"

[[routes]]
model = "demo"
targets = ["primary"]
max_attempts = 1

[prices]
sim-large = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("scenario.toml"),
        format!(
            r#"
name = "window"
about = "the only upstream answers 503 for two seconds"
duration_s = 6

[weir]
config = "weir.toml"

[sims.primary]
listen = "127.0.0.1:{sim}"
faults = {{ latency_ms = 5 }}

[traffic]
rate = 40
stream_fraction = 0.25

[[timeline]]
at_s = 2
for_s = 2
sim = "primary"
faults = {{ error_rate = 1.0, error_status = 503 }}

[gates]
error_rate_max = 0.6
p99_ms_max = 5000
"#
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let output = loadtest_with(&dir.join("scenario.toml"), &out, &[]);
    assert!(output.status.success(), "{}", text(&output));
    // A progress line a second while it runs: elapsed, sent and rate, errors, p99 so far.
    let progress = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = progress
        .lines()
        .filter(|l| l.contains("p99 so far"))
        .collect();
    assert!(lines.len() >= 4, "{progress}");
    assert!(
        lines[0].contains("s] sent ") && lines[0].contains("errors"),
        "{progress}"
    );
    let report = report(&out);
    let totals = &report["totals"];
    let (sent, ok, errors) = (u(&totals["sent"]), u(&totals["ok"]), u(&totals["errors"]));
    assert!((220..=260).contains(&sent), "40/s for 6 s: {sent}");
    assert_eq!(sent, ok + errors);
    assert_eq!(u(&totals["not_sent"]), 0);

    // The sim's own counts: every request it answered well is one the client saw succeed, and
    // every error it injected reached the client (one attempt, no fallback); the rest of the
    // client's errors are weir refusing without calling it (its breaker open).
    let stats = &report["sims"]["primary"];
    let received = u(&stats["chat_completions"]);
    let injected = u(&stats["faults"]["errors"]);
    assert!(injected > 0, "the window injected errors: {stats}");
    assert_eq!(ok, received - injected, "{stats}");
    assert!(
        errors >= injected,
        "{errors} client errors < {injected} injected"
    );
    assert_eq!(
        sent,
        received + (errors - injected),
        "sent = received + refused"
    );
    assert!(u(&stats["streams"]) <= u(&totals["streams"]), "{stats}");

    // The errors fall in (or just after) the window, and the window is recorded.
    for second in report["series"].as_array().unwrap() {
        let t = u(&second["t"]);
        if !(2..=4).contains(&t) {
            assert_eq!(
                u(&second["errors"]),
                0,
                "errors outside the window: {second}"
            );
        }
    }
    let event = &report["events"][0];
    assert_eq!(event["result"], "ok");
    let (at, until) = (
        event["at_s"].as_f64().unwrap(),
        event["until_s"].as_f64().unwrap(),
    );
    assert!(
        (1.9..2.5).contains(&at) && (3.9..4.5).contains(&until),
        "{event}"
    );
    assert!(report["passed"].as_bool().unwrap());
    assert!(
        !report["scrapes"].as_array().unwrap().is_empty(),
        "weir was scraped"
    );
    let cost = totals["cost_usd"].as_f64().expect("spend scraped");
    assert!(cost > 0.0, "{totals}");
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 6);
    assert!(
        html.contains("class=\"window\""),
        "the fault window is shaded"
    );
}

#[test]
fn an_impossible_gate_fails_the_run_with_exit_code_1_and_is_named() {
    let dir = scratch("gate");
    let sim = free_port();
    // The sim itself is the endpoint: `url` mode starts nothing but the sims.
    let scenario = format!(
        r#"
name = "impossible"
duration_s = 2

[weir]
url = "http://127.0.0.1:{sim}"

[sims.upstream]
listen = "127.0.0.1:{sim}"
faults = {{ latency_ms = 2 }}

[traffic]
rate = 20
model = "m"

[gates]
error_rate_max = 0.0
p99_ms_max = 0.001
"#
    );
    std::fs::write(dir.join("scenario.toml"), &scenario).unwrap();
    let out = dir.join("out");
    let output = loadtest(&dir.join("scenario.toml"), &out);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("gate p99_ms_max did not hold"),
        "{}",
        text(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("gate error_rate_max: passed"), "{stdout}");
    assert!(stdout.contains("gate p99_ms_max: FAILED"), "{stdout}");
    let report = report(&out);
    assert_eq!(report["passed"], false);
    assert_eq!(u(&report["totals"]["errors"]), 0);

    // A scenario error: exit 2, file:line:column: key.
    std::fs::write(
        dir.join("bad.toml"),
        scenario.replace("rate = 20", "rate = 20\nrat = 3"),
    )
    .unwrap();
    let output = loadtest(&dir.join("bad.toml"), &out);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml:14:1: traffic: unknown field `rat`"),
        "{stderr}"
    );
}

#[test]
fn open_loop_latency_counts_the_queue_a_stall_builds_and_a_closed_loop_hides_it() {
    let run = |arrival: &str| -> Value {
        let dir = scratch(&format!("stall-{arrival}"));
        let sim = free_port();
        let rate = if arrival == "closed" { "" } else { "rate = 40" };
        std::fs::write(
            dir.join("scenario.toml"),
            format!(
                r#"
name = "stall {arrival}"
duration_s = 5
[weir]
url = "http://127.0.0.1:{sim}"
[sims.upstream]
listen = "127.0.0.1:{sim}"
faults = {{ latency_ms = 100 }}
[traffic]
arrival = "{arrival}"
{rate}
max_in_flight = 5
model = "m"
[[timeline]]
at_s = 1
for_s = 1
sim = "upstream"
faults = {{ latency_ms = 1000 }}
"#
            ),
        )
        .unwrap();
        let out = dir.join("out");
        let output = loadtest(&dir.join("scenario.toml"), &out);
        assert!(output.status.success(), "{}", text(&output));
        report(&out)
    };
    let open = run("constant");
    let closed = run("closed");
    assert_eq!(open["mode"], "open");
    assert_eq!(closed["mode"], "closed");
    let p = |r: &Value, q: &str| r["totals"]["latency_ms"][q].as_f64().unwrap();
    // Five users at 100 ms serve 50/s; the 1 s stall queues the 40/s arriving meanwhile, and
    // each of them waits for it: the open loop's p99 is over the stall itself and its p90
    // several times the closed loop's, whose users simply stopped sending during the stall.
    assert!(p(&open, "p99") >= 1000.0, "open p99 {}", p(&open, "p99"));
    assert!(
        p(&open, "p90") > 2.0 * p(&closed, "p90"),
        "open p90 {} vs closed p90 {}",
        p(&open, "p90"),
        p(&closed, "p90")
    );
    assert!(
        p(&closed, "p90") < 1000.0,
        "closed p90 {}",
        p(&closed, "p90")
    );
}

/// The HTML report opens in headless Chromium with no network, and every chart lays out with
/// its lines drawn.
#[test]
fn the_html_report_renders_in_headless_chromium() {
    let dir = scratch("chromium");
    let sim = free_port();
    std::fs::write(
        dir.join("scenario.toml"),
        format!(
            r#"
name = "render"
duration_s = 3
[weir]
url = "http://127.0.0.1:{sim}"
[sims.upstream]
listen = "127.0.0.1:{sim}"
[traffic]
rate = 20
model = "m"
[[timeline]]
at_s = 1
for_s = 1
sim = "upstream"
faults = {{ error_rate = 0.5 }}
"#
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let output = loadtest(&dir.join("scenario.toml"), &out);
    assert!(output.status.success(), "{}", text(&output));
    let page = format!("file://{}", out.join("report.html").display());
    let profile = dir.join("profile");
    let dom = crate::browser::dump(&page, &profile, (900, 1600));
    let dom_text = dom.dom;
    assert!(
        !dom.log.contains("Uncaught"),
        "the report's script failed:\n{}",
        dom.log
    );
    assert!(
        dom_text.contains("charts: 6 of 6 laid out"),
        "{dom_text}\n{}",
        dom.log
    );
    // Every chart has a size once laid out; throughput, latency, errors and cache draw their
    // lines; spend and breakers have no data here (the endpoint is not weir) and say so.
    let rendered: Vec<(u32, u32, u32)> = dom_text
        .split("data-rendered=\"")
        .skip(1)
        .map(|rest| {
            let value = &rest[..rest.find('"').unwrap()];
            let (size, lines) = value.split_once(" lines=").unwrap();
            let (w, h) = size.split_once('x').unwrap();
            (
                w.parse().unwrap(),
                h.parse().unwrap(),
                lines.parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(rendered.len(), 6, "{dom_text}");
    assert!(
        rendered.iter().all(|(w, h, _)| *w > 300 && *h > 80),
        "{rendered:?}"
    );
    let lines: Vec<u32> = rendered.iter().map(|r| r.2).collect();
    assert_eq!(lines, vec![3, 3, 1, 1, 0, 0], "{dom_text}");
    assert_eq!(dom_text.matches("no data").count(), 2);
    crate::browser::screenshot(
        &page,
        &profile,
        (900, 1600),
        &dir.join("report.png"),
        20_000,
    );
}

/// A fleet of two nodes behind the client's round-robin: one is SIGKILLed for two seconds
/// and restarted; the other takes its share meanwhile (a refused connection goes to the next
/// node, as a load balancer would send it), so only requests the killed node was serving at
/// that instant can fail.
#[test]
fn a_fleet_node_killed_mid_run_is_routed_around_and_restarted() {
    let dir = scratch("fleet");
    let sim = free_port();
    for node in ["a", "b"] {
        let (listen, admin) = (free_port(), free_port());
        std::fs::write(
            dir.join(format!("{node}.toml")),
            format!(
                r#"
[server]
listen = "127.0.0.1:{listen}"
admin_listen = "127.0.0.1:{admin}"
[targets.primary]
base_url = "http://127.0.0.1:{sim}/v1"
[[routes]]
model = "demo"
targets = ["primary"]
"#
            ),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("scenario.toml"),
        format!(
            r#"
name = "fleet"
duration_s = 6
[weir]
nodes = {{ a = "a.toml", b = "b.toml" }}
[sims.primary]
listen = "127.0.0.1:{sim}"
faults = {{ latency_ms = 5 }}
[traffic]
rate = 40
[[timeline]]
at_s = 1.5
for_s = 2
kill = "a"
[gates]
error_rate_max = 0.05
"#
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let output = loadtest(&dir.join("scenario.toml"), &out);
    assert!(output.status.success(), "{}", text(&output));
    let report = report(&out);
    let totals = &report["totals"];
    let (sent, ok) = (u(&totals["sent"]), u(&totals["ok"]));
    assert!(sent >= 200, "{totals}");
    assert!(
        ok + 3 >= sent,
        "at most the requests in flight on the killed node fail: {totals}"
    );
    let event = &report["events"][0];
    assert_eq!(event["result"], "ok", "{event}");
    assert_eq!(event["label"], "kill a for 2s");
    assert!(event["until_s"].as_f64().unwrap() >= 3.4, "{event}");
    // Both nodes answered the final admin scrape: `a` came back.
    for node in ["a", "b"] {
        let targets = &report["weir"][node]["targets"];
        assert!(
            !targets.is_null() && targets.get("error").is_none(),
            "{}",
            report["weir"]
        );
    }
    let breakers = report["scrapes"][0]["breakers"].as_object().unwrap();
    assert!(
        breakers.contains_key("a/primary") && breakers.contains_key("b/primary"),
        "{breakers:?}"
    );
    // Every answer came from the sim; a request cut by the kill may have reached it too.
    let received = u(&report["sims"]["primary"]["chat_completions"]);
    assert!(
        (ok..=sent).contains(&received),
        "{received} received, {ok} ok, {sent} sent"
    );
    assert!(
        std::fs::metadata(out.join("weir-a.log")).is_ok()
            && std::fs::metadata(out.join("weir-b.log")).is_ok()
    );
}
