//! One stage in the sandbox: every limit ends as a stage failure of the right kind, WASI
//! grants nothing, and the host keeps serving afterwards.

use std::sync::Arc;
use std::time::Duration;

use weir::config::{CallLimits, SandboxSettings};
use weir::host_api::NoLlm;
use weir::stages::FailureKind;

use crate::support::{TestHost, chaos, relaxed, user};

/// Runs a pass-through stage and checks the host still answers normally.
async fn host_still_serves(host: &TestHost) {
    let outcome = host.run(&[chaos("pass")], user("still there?")).await;
    assert_eq!(outcome.text(), "echo: still there?");
}

async fn failure_kind(host: &TestHost, spec: crate::support::Spec) -> (FailureKind, Duration) {
    let outcome = host.run(&[spec], user("hi")).await;
    let kind = outcome.err().kind();
    let elapsed = outcome.runs.last().expect("the stage ran").elapsed;
    (kind, elapsed)
}

/// Exactly when the deadline stops the guest is `stages::deadline_tests`' concern (paused
/// time); here, with real time, only that it is the deadline that stops it, not too early,
/// and within a bound that holds on a loaded machine (a loop nothing stopped would run on).
#[tokio::test]
async fn looping_stage_hits_its_deadline() {
    let tick = Duration::from_millis(20);
    let host = TestHost::new(
        SandboxSettings {
            pool_size: 8,
            epoch_tick: tick,
            ..SandboxSettings::default()
        },
        Arc::new(NoLlm),
    );
    let deadline = Duration::from_millis(50);
    let limits = CallLimits {
        fuel: None,
        deadline,
        ..CallLimits::default()
    };
    let (kind, elapsed) = failure_kind(&host, chaos("loop").limits(limits)).await;
    assert_eq!(kind, FailureKind::DeadlineExceeded);
    assert!(elapsed >= deadline, "stopped early: {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(5),
        "stopped {elapsed:?} after start"
    );
    host_still_serves(&host).await;
}

#[tokio::test]
async fn looping_stage_with_a_fuel_budget_runs_out_of_fuel() {
    let host = TestHost::shared().await;
    let limits = CallLimits {
        fuel: Some(5_000_000),
        ..relaxed()
    };
    let (kind, _) = failure_kind(host, chaos("loop").limits(limits)).await;
    assert_eq!(kind, FailureKind::FuelExhausted);
    host_still_serves(host).await;
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_cap() {
    let host = TestHost::shared().await;
    let limits = CallLimits {
        memory_bytes: 16 << 20,
        ..relaxed()
    };
    let (kind, _) = failure_kind(host, chaos("memory").limits(limits)).await;
    assert_eq!(kind, FailureKind::MemoryLimit);
    host_still_serves(host).await;
}

#[tokio::test]
async fn unbounded_recursion_and_panic_are_traps() {
    let host = TestHost::shared().await;
    let (kind, _) = failure_kind(host, chaos("recursion").limits(relaxed())).await;
    assert_eq!(kind, FailureKind::Trap);
    host_still_serves(host).await;
    let (kind, _) = failure_kind(host, chaos("panic")).await;
    assert_eq!(kind, FailureKind::Trap);
    host_still_serves(host).await;
}

#[tokio::test]
async fn a_failure_in_the_response_phase_is_classified_too() {
    let host = TestHost::shared().await;
    let spec = chaos("loop")
        .config("fault_phase", "response")
        .limits(CallLimits {
            fuel: Some(5_000_000),
            ..relaxed()
        });
    let outcome = host.run(&[spec], user("hi")).await;
    assert_eq!(outcome.err().kind(), FailureKind::FuelExhausted);
    assert!(
        outcome.upstream.is_some(),
        "the request phase passed the request on"
    );
    host_still_serves(host).await;
}

#[tokio::test]
async fn a_huge_log_line_is_cut_and_the_call_succeeds() {
    let host = TestHost::shared().await;
    let outcome = host
        .run(&[chaos("huge-log").limits(relaxed())], user("log"))
        .await;
    assert_eq!(outcome.text(), "echo: log");
}

#[tokio::test]
async fn guest_stdout_goes_to_the_log_not_the_host_stdout() {
    let host = TestHost::shared().await;
    let outcome = host.run(&[chaos("stdout")], user("print")).await;
    assert_eq!(outcome.text(), "echo: print");
}

#[tokio::test]
async fn guest_cannot_read_files() {
    let host = TestHost::shared().await;
    let text = host.run(&[chaos("read-file")], user("x")).await.text();
    assert!(text.starts_with("read-file: error:"), "{text}");
}

#[tokio::test]
async fn guest_cannot_open_sockets() {
    let host = TestHost::shared().await;
    let text = host.run(&[chaos("socket")], user("x")).await.text();
    assert!(text.starts_with("socket: error:"), "{text}");
}

const CANARY: &str = "weir-host-secret-3f1c";

#[tokio::test]
async fn guest_cannot_see_host_env() {
    if std::env::var("WEIR_CANARY").is_err() {
        // Re-run this test in a child process whose environment holds the canary (setting it
        // here would race the other test threads).
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["sandbox::guest_cannot_see_host_env", "--exact", "--quiet"])
            .env("WEIR_CANARY", CANARY)
            .status()
            .unwrap();
        assert!(status.success(), "the child test failed");
        return;
    }
    assert_eq!(std::env::var("WEIR_CANARY").as_deref(), Ok(CANARY));
    let host = TestHost::shared().await;
    let text = host.run(&[chaos("env")], user("x")).await.text();
    assert_eq!(text, "env: WEIR_CANARY=<unset>; vars=0");
}

#[tokio::test]
async fn stage_llm_calls_get_a_guest_visible_error_when_no_llm_is_wired() {
    let host = TestHost::shared().await;
    let text = host.run(&[chaos("complete")], user("x")).await.text();
    assert!(
        text.starts_with("complete: error: 503 llm_unavailable"),
        "{text}"
    );
}

#[tokio::test]
async fn stage_cache_survives_across_requests() {
    let host = TestHost::shared().await;
    let spec = chaos("cache");
    let first = host
        .run(std::slice::from_ref(&spec), user("x"))
        .await
        .text();
    let second = host.run(&[spec], user("x")).await.text();
    let before = |t: &str| {
        t.trim_start_matches("cache: before=")
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(before(&second), before(&first) + 1);
}
