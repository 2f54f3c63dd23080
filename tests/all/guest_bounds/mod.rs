//! Every guest bounded, through the real binary: what a stage returns is capped
//! (`sandbox.stage_output_max_bytes`), `count-tokens` and WASI random cannot hold an async
//! worker, an instance's memory is capped whole in either allocator, a guest's log lines are
//! escaped and counted, nothing one instance wrote is seen by the next in its pool slot, and
//! `weir check` never writes a guest's bytes to the terminal raw.
//! (`/healthz` latency while stages count tokens on 48 MiB is `stress::guests`.)

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::procs::{Proc, get, post, serve, serve_logged, sim, sim_requests};
use crate::wait;

mod components;

use components::{with_memories, with_version};

/// A route `model` whose one stage runs the chaos test program in `mode`, with more stage
/// `keys` (TOML lines) and more `config` entries. Unless `keys` sets them, the deadline and
/// memory cap are generous (the `huge-*` modes build tens of MB).
pub fn chaos(mode: &str, model: &str, keys: &str, config: &[(&str, &str)]) -> String {
    let config: String = config
        .iter()
        .map(|(key, value)| format!(", {key} = \"{value}\""))
        .collect();
    let mut keys = keys.to_string();
    for (key, default) in [("deadline_ms", "10000"), ("memory_limit_mib", "128")] {
        if !keys.contains(key) {
            keys.push_str(&format!("\n{key} = {default}"));
        }
    }
    format!(
        "[[routes]]\nmodel = \"{model}\"\ntargets = [\"up\"]\n[[routes.stages]]\n\
         name = \"chaos\"\npath = \"{path}\"\n{keys}\nconfig = {{ mode = \"{mode}\"{config} }}\n",
        path = weir_test_artifacts::CHAOS,
    )
}

/// A config with one `weir sim` target `up`, `[sandbox]` keys and `routes`.
pub fn config(up: &Proc, sandbox: &str, routes: &str) -> String {
    format!(
        "[server]\nmax_body_bytes = 4194304\n[sandbox]\npool_size = 16\n{sandbox}\n\
         [targets.up]\nbase_url = \"http://{up}/v1\"\ntimeout_ms = 10000\n{routes}",
        up = up.addr,
    )
}

pub fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn answer_text(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn a_stage_output_over_the_cap_fails_the_stage_under_its_policy() {
    let up = sim(&[]);
    let routes = [
        chaos("huge-output", "answer", "", &[]),
        chaos("huge-output", "rewrite", "", &[("fault_phase", "response")]),
        chaos("huge-id", "id", "", &[]),
        chaos("huge-id", "id-skipped", "on_error = \"skip\"", &[]),
        chaos("pass", "pass", "", &[]),
    ]
    .concat();
    let weir = serve(&config(&up, "stage_output_max_bytes = 65536", &routes));

    // A 40 MiB answer instead of the model's: refused, and the upstream never asked.
    let answer = post(weir.addr, "/v1/chat/completions", &chat("answer", "hi")).await;
    assert_eq!(answer.status, 500, "{} bytes", answer.body.len());
    let body = answer.json();
    assert_eq!(error_code(&body), "stage_output_too_large", "{body}");
    assert_eq!(body["error"]["type"], "stage_error");
    assert!(sim_requests(&up, 10).await.is_empty());

    // A response rewritten to 40 MiB, and one given a 40 MiB `id`: refused after the upstream
    // answered.
    for model in ["rewrite", "id"] {
        let answer = post(weir.addr, "/v1/chat/completions", &chat(model, "hi")).await;
        assert_eq!(answer.status, 500, "{model}: {} bytes", answer.body.len());
        assert_eq!(
            error_code(&answer.json()),
            "stage_output_too_large",
            "{model}"
        );
    }
    assert_eq!(sim_requests(&up, 10).await.len(), 2);

    // Under `on_error = "skip"` the stage is passed over: the upstream's answer, its own id.
    let answer = post(weir.addr, "/v1/chat/completions", &chat("id-skipped", "hi")).await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.len() < 64 << 10, "{} bytes", answer.body.len());
    let id = answer.json()["id"].as_str().unwrap_or("").to_string();
    assert!(id.len() < 128, "{id}");

    // A stage may always pass on what it was given: a 2 MiB prompt, over the 64 KiB cap.
    let prompt = "a".repeat(2 << 20);
    let answer = post(weir.addr, "/v1/chat/completions", &chat("pass", &prompt)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    // The upstream got it (the simulator keeps the first 64 KiB of a body, as text).
    let seen = sim_requests(&up, 10).await;
    assert_eq!(seen.len(), 4);
    assert!(seen[3]["body"].as_str().unwrap_or("").contains("aaaa"));
}

#[tokio::test]
async fn count_tokens_on_48_mib_answers_at_once_with_an_estimate() {
    let up = sim(&[]);
    let weir = serve(&config(
        &up,
        "",
        &chaos("count-tokens-huge", "count", "", &[]),
    ));
    let started = Instant::now();
    let answer = post(weir.addr, "/v1/chat/completions", &chat("count", "hi")).await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    // 48 MiB / 4; short text is still counted exactly.
    assert_eq!(
        answer_text(&answer.json()),
        "count-tokens-huge: 12582912; hello world: 2"
    );
    // Tokenizing 48 MiB of one word would take minutes; the estimate takes no time. The
    // bound is generous for a loaded machine (the guest builds and copies 48 MiB).
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn wasi_random_answers_are_capped() {
    let up = sim(&[]);
    let routes = chaos("random-huge", "huge", "", &[])
        + &chaos("random-huge", "small", "", &[("random_bytes", "65536")]);
    let weir = serve(&config(&up, "", &routes));
    let answer = post(weir.addr, "/v1/chat/completions", &chat("small", "hi")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(
        answer_text(&answer.json()),
        "random-huge: got 32 and 65536 bytes"
    );
    // 64 MiB (wasmtime-wasi's own limit) traps: a stage failure, not a worker held.
    let answer = post(weir.addr, "/v1/chat/completions", &chat("huge", "hi")).await;
    assert_eq!(answer.status, 500, "{:?}", answer.body);
    assert_eq!(error_code(&answer.json()), "trap");
    let answer = post(weir.addr, "/v1/chat/completions", &chat("small", "hi")).await;
    assert_eq!(answer.status, 200);
}

/// Every request gets a fresh instance, in a pool slot an earlier instance used: the slot's
/// memory must read zero again, whether the earlier one dirtied a few pages (zeroed in place)
/// or more than the host keeps resident (the rest given back to the kernel), under either
/// allocator, and in the copy-on-write lane (reset from the stage's image).
#[tokio::test]
async fn an_instance_never_sees_what_an_earlier_one_wrote() {
    let up = sim(&[]);
    let routes = chaos("residue", "all", "", &[])
        + &chaos("residue", "few", "", &[("residue_bytes", "65536")]);
    for sandbox in ["", "allocator = \"on-demand\"", "large_stage_mib = 0"] {
        let weir = serve(&config(&up, sandbox, &routes));
        for round in 0..12 {
            for model in ["all", "few"] {
                let answer = post(weir.addr, "/v1/chat/completions", &chat(model, "hi")).await;
                assert_eq!(answer.status, 200, "{:?}", answer.body);
                assert_eq!(
                    answer_text(&answer.json()),
                    "residue: 0 bytes left",
                    "{model}, round {round}, sandbox {sandbox:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_log_flood_is_cut_to_the_call_budget_and_cannot_forge_lines() {
    let up = sim(&[]);
    let dir = scratch_dir("log-flood");
    let log = dir.join("weir.log");
    let weir = serve_logged(
        &config(
            &up,
            "log_lines_per_call = 50",
            &chaos("log-flood", "flood", "", &[]),
        ),
        &[("RUST_LOG", "info")],
        &log,
    );
    let answer = post(weir.addr, "/v1/chat/completions", &chat("flood", "hi")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer_text(&answer.json()), "log-flood: 10000 lines sent");

    let text = wait::until("the dropped-lines report in the log", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        wait::check(
            text.contains("9950 guest log lines dropped"),
            text.lines().last().unwrap_or("").to_string(),
        )
        .map(|()| text)
    })
    .await;
    let flood: Vec<&str> = text.lines().filter(|l| l.contains("forged line")).collect();
    assert_eq!(flood.len(), 50, "{}", flood.join("\n"));
    // Each message stays on its own line, its newline, carriage return and escapes written
    // as escapes: no forged line, nothing a terminal would act on.
    assert!(
        !text.lines().any(|l| l.starts_with("2026-12-03T10:00:00")),
        "a forged line: {text}"
    );
    assert!(!text.contains('\u{1b}') && !text.contains('\r'));
    assert!(
        flood[0].contains(r"\n2026-12-03T10:00:00.000000Z  INFO weir::admin: forged line"),
        "{}",
        flood[0]
    );
    assert!(flood[0].contains(r"\r\u{1b}[2K\u{1b}]0;pwned\u{7}"));

    let metrics = get(weir.admin.unwrap(), "/metrics").await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains("weir_guest_log_lines_dropped_total{stage=\"chaos\"} 9950"),
        "{metrics}"
    );
}

#[test]
fn many_memories_are_capped_as_one_instance_under_on_demand() {
    let dir = scratch_dir("memories");
    // 16 memories of 64 MiB: each under the 64 MiB cap, 1 GiB together.
    let big = dir.join("chaos-16x64mib.wasm");
    std::fs::write(&big, with_memories(16, 64 << 20)).unwrap();
    // 16 memories of one page: far under the cap in bytes, over the count of memories.
    let many = dir.join("chaos-16x64kib.wasm");
    std::fs::write(&many, with_memories(16, 64 << 10)).unwrap();
    for file in [&big, &many] {
        // `weir check` runs the on-demand allocator.
        let (ok, stdout, stderr) = weir_check(file);
        assert!(!ok, "{} loaded: {stdout}", file.display());
        assert!(
            stderr.contains("describe() failed: memory_limit"),
            "{stderr}"
        );
    }

    // `weir serve` with the on-demand allocator refuses the stage at load; a normal stage
    // still runs under the same allocator.
    let up = sim(&[]);
    let stage = |path: &Path| {
        format!(
            "[[routes]]\nmodel = \"m\"\ntargets = [\"up\"]\n[[routes.stages]]\nname = \"s\"\n\
             path = \"{}\"\n",
            path.display()
        )
    };
    let stderr = serve_fails(&config(&up, "allocator = \"on-demand\"", &stage(&big)));
    assert!(stderr.contains("memory_limit"), "{stderr}");
    let weir = serve(&config(
        &up,
        "allocator = \"on-demand\"",
        &chaos("pass", "m", "", &[]),
    ));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answer = runtime.block_on(post(weir.addr, "/v1/chat/completions", &chat("m", "hi")));
    assert_eq!(answer.status, 200);

    // The pooling allocator gives each memory a slot of the cap: three 32 MiB memories fit
    // its slots and its count of four per component, but not the cap together.
    let pooled = dir.join("chaos-3x32mib.wasm");
    std::fs::write(&pooled, with_memories(3, 32 << 20)).unwrap();
    let stderr = serve_fails(&config(&up, "allocator = \"pooling\"", &stage(&pooled)));
    assert!(stderr.contains("memory_limit"), "{stderr}");
}

#[test]
fn weir_check_escapes_what_a_stage_says_about_itself() {
    let dir = scratch_dir("describe");
    // A version with an OSC sequence (sets the terminal title): refused, shown escaped.
    let osc = dir.join("chaos-osc.wasm");
    std::fs::write(&osc, with_version("\x1b]0;x\x07")).unwrap();
    let (ok, stdout, stderr) = weir_check(&osc);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains(r"\u{1b}]0;x\u{7}"),
        "the version is shown escaped: {stderr}"
    );
    assert!(!stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'));
    // A version that reorders what the terminal shows (a right-to-left override) is not a
    // control character: accepted, and printed escaped.
    let rlo = dir.join("chaos-rlo.wasm");
    std::fs::write(&rlo, with_version("\u{202e}txt.exe")).unwrap();
    let (ok, stdout, stderr) = weir_check(&rlo);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(r"ok: stage chaos \u{202e}txt.exe"),
        "{stdout}"
    );
    assert!(!stdout.contains('\u{202e}'));
}

/// A scratch directory of this test process.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-bounds-{}/{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `weir check <file>`: success, stdout, stderr.
fn weir_check(file: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("check")
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `weir serve` on `config`, which must fail at start-up: its stderr. Panics if it
/// starts listening instead, or has not exited within a minute.
fn serve_fails(config: &str) -> String {
    let path = crate::procs::scratch_config(config);
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("XDG_STATE_HOME", crate::procs::state_home())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (started, listening) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let line = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("listening"));
        if let Some(line) = line {
            let _ = started.send(line);
        }
    });
    // Checked every 20 ms, for a minute.
    let mut checks = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        checks += 1;
        if listening.try_recv().is_ok() || checks > 3000 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weir started (or hung) instead of refusing the config");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    stderr
}
