//! `weir cost project` and `weir key` on the real binary: projected totals equal to the
//! pico-dollar arithmetic done by hand, with and without `--map`; malformed logs refused with
//! `file:line`; unpriced models reported, not dropped; a new key's hash is its blake3.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::procs::scratch_config;

/// Pico-dollars per token of `model-a`: $2 per million in, $0.50 cached, $8 out.
const A_IN: u64 = 2_000_000;
const A_CACHED: u64 = 500_000;
const A_OUT: u64 = 8_000_000;
/// Of `model-b`: $0.10 in (cached: the same, as no cached price is set), $0.40 out.
const B_IN: u64 = 100_000;
const B_OUT: u64 = 400_000;

/// A config with the two prices, and a target whose key variable is unset: projecting must
/// not need the production secrets.
const CONFIG: &str = r#"
[targets.upstream]
base_url = "http://127.0.0.1:9/v1"
api_key_env = "WEIR_COST_CLI_TEST_NEVER_SET"

[[routes]]
model = "chat"
targets = ["upstream"]

[prices.model-a]
input_per_mtok = 2.0
cached_input_per_mtok = 0.5
output_per_mtok = 8.0

[prices.model-b]
input_per_mtok = 0.1
output_per_mtok = 0.4
"#;

/// 2026-11-26T00:00:00Z, the start of a UTC day.
const DAY0: u64 = 1_795_651_200;
const DAY: u64 = 86_400;

/// The exit code, stdout and stderr of `weir <args>` with `stdin` written to its input.
fn weir(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `text` to a fresh file named after `name`.
fn traffic_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-cost-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.jsonl"));
    std::fs::write(&path, text).unwrap();
    path
}

/// One request-log line.
fn line(ts: u64, model: &str, tokens: (u64, u64, u64), cache: &str, cost_usd: f64) -> String {
    let (prompt, cached, completion) = tokens;
    json!({
        "ts": ts, "key": "team-a", "route": "chat", "model": model,
        "prompt_tokens": prompt, "cached_tokens": cached, "completion_tokens": completion,
        "cache": cache, "cost_usd": cost_usd, "estimated": false,
    })
    .to_string()
}

/// Six requests on three distinct UTC days (26th, 27th, 29th: a gap day is not counted),
/// misses, every kind of hit, a bypass, cached prompt tokens and a blank line.
fn mixed_traffic() -> String {
    [
        // Day 0. A miss with 200 of 1000 prompt tokens cached; logged at an older price.
        line(DAY0 + 10, "model-a", (1000, 200, 300), "miss", 0.005),
        // Day 0's last second: a hit.
        line(DAY0 + DAY - 1, "model-a", (1000, 0, 300), "hit", 0.0),
        String::new(),
        // Day 1.
        line(
            DAY0 + DAY + 5,
            "model-a",
            (500, 500, 100),
            "semantic-hit",
            0.0,
        ),
        line(
            DAY0 + DAY + 6,
            "model-b",
            (4000, 1000, 1000),
            "miss",
            0.0008,
        ),
        // Day 3.
        line(
            DAY0 + 3 * DAY + 7,
            "model-b",
            (4000, 0, 1000),
            "coalesced",
            0.0,
        ),
        line(
            DAY0 + 3 * DAY + 8,
            "model-a",
            (100, 0, 50),
            "bypass",
            0.0006,
        ),
    ]
    .join("\n")
        + "\n"
}

fn project_json(traffic: &Path, extra: &[&str]) -> Value {
    let config = scratch_config(CONFIG);
    let mut args = vec![
        "cost",
        "project",
        "--config",
        config.to_str().unwrap(),
        "--traffic",
        traffic.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = weir(&args, "");
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// Asserts the figures of one scenario, given its actual and without-cache totals.
fn assert_scenario(scenario: &Value, actual: u64, without_cache: u64, days: u64) {
    assert_eq!(scenario["actual_pico"], actual);
    assert_eq!(scenario["without_cache_pico"], without_cache);
    assert_eq!(scenario["saved_pico"], without_cache - actual);
    assert_eq!(scenario["daily_pico"], actual / days);
    assert_eq!(scenario["monthly_pico"], actual / days * 30);
    let share = (without_cache - actual) as f64 / without_cache as f64;
    let got = scenario["cache_saving_share"].as_f64().unwrap();
    assert!((got - share).abs() < 1e-12, "share {got}, expected {share}");
    let usd = scenario["actual_usd"].as_f64().unwrap();
    assert!(
        (usd - actual as f64 / 1e12).abs() < 1e-15,
        "actual_usd {usd}"
    );
}

#[test]
fn project_totals_equal_the_hand_computed_pico_dollars() {
    let traffic = traffic_file("mixed", &mixed_traffic());
    let out = project_json(&traffic, &[]);

    assert_eq!(out["requests"], 6);
    assert_eq!(out["cache_hits"], 3);
    assert_eq!(out["days"], 3, "distinct UTC days, not the span");
    assert_eq!(out["first_day"], "2026-11-26");
    assert_eq!(out["last_day"], "2026-11-29");
    assert_eq!(out["month_days"], 30);
    assert_eq!(out["mapped"], Value::Null);
    // The log's own cost_usd: $0.005 + $0.0008 + $0.0006.
    assert_eq!(
        out["recorded_pico"],
        5_000_000_000u64 + 800_000_000 + 600_000_000
    );

    // At current prices, line by line (fresh prompt, cached prompt, completion):
    let miss_a = 800 * A_IN + 200 * A_CACHED + 300 * A_OUT; // 4_100_000_000
    let hit_a = 1000 * A_IN + 300 * A_OUT; // 4_400_000_000, not paid
    let semantic_a = 500 * A_CACHED + 100 * A_OUT; // 1_050_000_000, not paid
    let miss_b = 3000 * B_IN + 1000 * B_IN + 1000 * B_OUT; // 800_000_000
    let coalesced_b = 4000 * B_IN + 1000 * B_OUT; // 800_000_000, not paid
    let bypass_a = 100 * A_IN + 50 * A_OUT; // 600_000_000
    let actual = miss_a + miss_b + bypass_a;
    let without_cache = actual + hit_a + semantic_a + coalesced_b;
    assert_eq!(actual, 5_500_000_000);
    assert_eq!(without_cache, 11_750_000_000);
    assert_scenario(&out["current"], actual, without_cache, 3);
    // $5.5e-3 over 3 days: 1_833_333_333 a day (rounded down), × 30.
    assert_eq!(out["current"]["monthly_pico"], 54_999_999_990u64);
    assert_eq!(out["current"]["unpriced"], json!([]));

    let models = out["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    let a = &models[0];
    assert_eq!(a["model"], "model-a");
    assert_eq!(
        (a["requests"].as_u64(), a["cache_hits"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(a["prompt_tokens"], 1000 + 1000 + 500 + 100);
    assert_eq!(a["cached_tokens"], 200 + 500);
    assert_eq!(a["completion_tokens"], 300 + 300 + 100 + 50);
    assert_eq!(a["current"]["priced"], true);
    assert_eq!(a["current"]["actual_pico"], miss_a + bypass_a);
    assert_eq!(
        a["current"]["without_cache_pico"],
        miss_a + hit_a + semantic_a + bypass_a
    );
    assert_eq!(a["mapped"], Value::Null);
    let b = &models[1];
    assert_eq!(b["model"], "model-b");
    assert_eq!(b["current"]["actual_pico"], miss_b);
    assert_eq!(b["current"]["without_cache_pico"], miss_b + coalesced_b);
}

#[test]
fn project_with_a_map_shows_both_price_sets() {
    let traffic = traffic_file("mapped", &mixed_traffic());
    let out = project_json(&traffic, &["--map", "model-a=model-b"]);

    assert_eq!(out["map"], json!({"model-a": "model-b"}));
    // The current figures do not move.
    assert_eq!(out["current"]["actual_pico"], 5_500_000_000u64);
    // Every line at model-b's prices (cached prompt tokens cost the input price there):
    let miss_a = 800 * B_IN + 200 * B_IN + 300 * B_OUT; // 220_000_000
    let hit_a = 1000 * B_IN + 300 * B_OUT; // 220_000_000, not paid
    let semantic_a = 500 * B_IN + 100 * B_OUT; // 90_000_000, not paid
    let miss_b = 4000 * B_IN + 1000 * B_OUT; // 800_000_000
    let coalesced_b = 4000 * B_IN + 1000 * B_OUT; // 800_000_000, not paid
    let bypass_a = 100 * B_IN + 50 * B_OUT; // 30_000_000
    let actual = miss_a + miss_b + bypass_a;
    let without_cache = actual + hit_a + semantic_a + coalesced_b;
    assert_eq!((actual, without_cache), (1_050_000_000, 2_160_000_000));
    assert_scenario(&out["mapped"], actual, without_cache, 3);
    assert_eq!(out["mapped"]["monthly_pico"], 10_500_000_000u64);

    let a = &out["models"][0];
    assert_eq!(a["mapped"]["priced_as"], "model-b");
    assert_eq!(a["mapped"]["actual_pico"], miss_a + bypass_a);
    assert_eq!(a["current"]["priced_as"], "model-a");
    assert_eq!(out["models"][1]["mapped"]["priced_as"], "model-b");

    // The table puts both next to each other.
    let config = scratch_config(CONFIG);
    let (code, stdout, stderr) = weir(
        &[
            "cost",
            "project",
            "--config",
            config.to_str().unwrap(),
            "--traffic",
            traffic.to_str().unwrap(),
            "--map",
            "model-a=model-b",
        ],
        "",
    );
    assert_eq!(code, 0, "{stderr}");
    let monthly = stdout
        .lines()
        .find(|l| l.contains("projected monthly"))
        .unwrap_or_default();
    assert!(monthly.contains("30-day month"), "{stdout}");
    // $0.054999999990 and $0.0105, to the micro-dollar.
    assert!(
        monthly.contains("$0.055000") && monthly.contains("$0.010500"),
        "{stdout}"
    );
    assert!(stdout.contains("model-a -> model-b"), "{stdout}");
    assert!(stdout.contains("53.2%"), "cache saving share: {stdout}");
}

#[test]
fn a_malformed_line_is_refused_with_its_file_and_line() {
    let config = scratch_config(CONFIG);
    let good = line(DAY0, "model-a", (10, 0, 10), "miss", 0.0);
    let cases = [
        (
            "missing-field",
            format!(
                "{good}\n\n{{\"ts\": 1, \"model\": \"model-a\", \"prompt_tokens\": 1, \"cache\": \"miss\"}}\n"
            ),
            ":3:",
            "missing field `completion_tokens`",
        ),
        (
            "not-json",
            format!("{good}\nnot json at all\n"),
            ":2:",
            "expected a JSON object",
        ),
        (
            "bad-cache",
            format!("{}\n", line(DAY0, "model-a", (1, 0, 1), "warm", 0.0)),
            ":1:",
            "cache: expected miss",
        ),
        (
            "negative-tokens",
            format!(
                "{good}\n{}\n",
                good.replace("\"prompt_tokens\":10", "\"prompt_tokens\":-1")
            ),
            ":2:",
            "prompt_tokens",
        ),
    ];
    for (name, text, at, what) in cases {
        let traffic = traffic_file(name, &text);
        let path = traffic.to_str().unwrap();
        let args = [
            "cost",
            "project",
            "-c",
            config.to_str().unwrap(),
            "--traffic",
            path,
        ];
        let (code, stdout, stderr) = weir(&args, "");
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(
            stdout.is_empty(),
            "{name}: nothing printed on stdout: {stdout}"
        );
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {path}{at}")),
            "{name}: names {path}{at}: {stderr}"
        );
        assert!(stderr.contains(what), "{name}: says {what:?}: {stderr}");
    }

    let missing = "/nonexistent/traffic.jsonl";
    let (code, _, stderr) = weir(
        &[
            "cost",
            "project",
            "-c",
            config.to_str().unwrap(),
            "--traffic",
            missing,
        ],
        "",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(missing) && stderr.contains("cannot read"),
        "{stderr}"
    );

    let bad_config = scratch_config("[prices.model-a]\ninput_per_mtok = \"two\"\n");
    let traffic = traffic_file("ok", &format!("{good}\n"));
    let (code, _, stderr) = weir(
        &[
            "cost",
            "project",
            "-c",
            bad_config.to_str().unwrap(),
            "--traffic",
            traffic.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(code, 2, "{stderr}");
    let at = format!("error: {}:2:", bad_config.display());
    assert!(
        stderr.starts_with(&at),
        "config errors name file:line:col: {stderr}"
    );
    assert!(stderr.contains("prices.model-a.input_per_mtok"), "{stderr}");
}

#[test]
fn unpriced_models_are_counted_and_reported_not_dropped() {
    let text = [
        line(DAY0, "model-b", (1000, 0, 1000), "miss", 0.0),
        line(DAY0 + 1, "mystery", (1000, 0, 1000), "miss", 0.0),
        line(DAY0 + 2, "mystery", (1000, 0, 1000), "hit", 0.0),
    ]
    .join("\n");
    let traffic = traffic_file("unpriced", &text);
    let config = scratch_config(CONFIG);
    let args = [
        "cost",
        "project",
        "-c",
        config.to_str().unwrap(),
        "--traffic",
        traffic.to_str().unwrap(),
        "--json",
        "--map",
        "model-b=model-c",
    ];
    let (code, stdout, stderr) = weir(&args, "");
    assert_eq!(code, 0, "a warning, not a failure: {stderr}");
    let out: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["requests"], 3, "unpriced lines still count as requests");
    let paid_b = 1000 * B_IN + 1000 * B_OUT;
    assert_eq!(out["current"]["actual_pico"], paid_b);
    assert_eq!(
        out["current"]["unpriced"],
        json!([{"model": "mystery", "requests": 2}])
    );
    // Mapped to a model without a price, model-b's line joins the unpriced ones.
    assert_eq!(out["mapped"]["actual_pico"], 0);
    assert_eq!(
        out["mapped"]["unpriced"],
        json!([{"model": "model-c", "requests": 1}, {"model": "mystery", "requests": 2}])
    );
    assert_eq!(out["models"][1]["current"]["priced"], false);
    assert!(
        stderr.contains("unpriced models") && stderr.contains("mystery (2 requests)"),
        "{stderr}"
    );
    assert!(stderr.contains("model-c (1 request)"), "{stderr}");
}

#[test]
fn key_new_prints_a_key_and_the_table_with_its_blake3_hash() {
    let (code, stdout, stderr) = weir(&["key", "new", "--name", "team-a"], "");
    assert_eq!(code, 0, "{stderr}");
    let mut lines = stdout.lines();
    let key = lines.next().unwrap();
    let random = key.strip_prefix("sk-weir-").unwrap();
    assert_eq!(random.len(), 40, "{key}");
    assert!(random.bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
    let expected = format!("blake3:{}", blake3::hash(key.as_bytes()).to_hex());
    assert!(stdout.contains("[[keys]]\nname = \"team-a\"\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("hash = \"{expected}\"")),
        "{stdout}"
    );
    assert!(
        stdout.contains("# daily_budget_usd = "),
        "limits as comments: {stdout}"
    );
    assert_eq!(
        stdout.matches(key).count(),
        1,
        "the key is printed once, never in the table"
    );

    // `weir key hash` agrees, whitespace around the key ignored.
    let (code, hashed, stderr) = weir(&["key", "hash"], &format!("  {key}\n"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(hashed.trim(), expected);

    let (code, _, stderr) = weir(&["key", "new", "--name", "Team A"], "");
    assert_eq!(code, 2, "an invalid name is refused: {stderr}");
    let (code, _, stderr) = weir(&["key", "hash"], "\n");
    assert_eq!(code, 2, "an empty key is refused: {stderr}");
}
