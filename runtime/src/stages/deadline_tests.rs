//! The per-call deadline on paused time: a guest that loops for ever is stopped by the epoch
//! callback exactly when its deadline passes, never before, and not by the tokio timeout
//! behind it (which waits [`super::instance`]'s two grace ticks longer).
//!
//! The epoch ticker is a real thread and the tokio clock is paused: real time passing makes
//! the guest yield at every tick but moves no deadline; only `tokio::time::advance` does.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{CallLimits, SandboxSettings};
use crate::host_api::{CallScope, HostContext, HostServices, NoLlm, StageIdentity};
use crate::sandbox::Sandbox;
use crate::wit::{ChatRequest, RequestContext};

use super::{FailureKind, LoadedStage};

/// Lets the guest run a while in real time: after each yield of this task the scheduler
/// polls the guest (which yields back at every epoch tick) many times over, tens of ticks,
/// before it comes back here.
async fn let_run(yields: u32) {
    for _ in 0..yields {
        tokio::task::yield_now().await;
    }
}

/// The shared one-message request (see `ChatRequest::hi`).
fn request() -> ChatRequest {
    ChatRequest::hi("m")
}

#[tokio::test]
async fn a_looping_guest_is_stopped_by_the_epoch_callback_exactly_at_its_deadline() {
    loop_until_the_deadline(false).await;
}

/// The epoch ticker sleeps while no store is alive (`sandbox/ticker.rs`): the first call after
/// an idle spell must be stopped just as exactly.
#[tokio::test]
async fn a_guest_started_while_the_ticker_sleeps_is_stopped_exactly_at_its_deadline() {
    loop_until_the_deadline(true).await;
}

/// Runs the chaos stage's endless loop with a 50 ms deadline on paused time; `after_idle`
/// first waits (real time) until the epoch ticker has gone to sleep.
async fn loop_until_the_deadline(after_idle: bool) {
    let settings = SandboxSettings {
        pool_size: 2,
        epoch_tick: Duration::from_millis(1),
        ..SandboxSettings::default()
    };
    let sandbox = Sandbox::new(settings).unwrap();
    let services = Arc::new(HostServices::new(Arc::new(NoLlm), 4096));
    let path = Path::new(weir_test_artifacts::CHAOS);
    let stage = LoadedStage::load(&sandbox, &services, path).await.unwrap();
    let host = HostContext {
        stage: Arc::new(StageIdentity {
            name: "chaos".into(),
            label: stage.label("chaos").into(),
            config: BTreeMap::from([("mode".to_string(), "loop".to_string())]),
            max_llm_calls: crate::config::DEFAULT_STAGE_LLM_CALLS,
            services: Default::default(),
        }),
        services,
        request_id: "r1".into(),
        route: "test".into(),
        scope: CallScope::Request(crate::cost::Meter::new(None)),
    };
    let deadline = Duration::from_millis(50);
    let limits = CallLimits {
        fuel: None,
        deadline,
        ..CallLimits::default()
    };

    if after_idle {
        // Loading ran `describe` in a store of its own; with that gone, the ticker parks after
        // its idle ticks (1 ms each here).
        for _ in 0..2000 {
            if sandbox.ticker_parked() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(sandbox.ticker_parked(), "the ticker never went to sleep");
    }
    tokio::time::pause();
    let mut instance = stage.instantiate(&sandbox, host, &limits).await.unwrap();
    let call = tokio::spawn(async move {
        let ctx = RequestContext {
            request_id: "r1".into(),
            route: "test".into(),
            stage: "chaos".into(),
        };
        let started = Instant::now();
        let result = instance.on_request(&ctx, &request()).await;
        (result.err(), started.elapsed())
    });
    // Real time passes, the clock does not: the guest yields at every tick and goes on.
    let_run(3).await;
    assert!(!call.is_finished(), "stopped with no time passed");
    tokio::time::advance(deadline - Duration::from_millis(1)).await;
    let_run(3).await;
    assert!(!call.is_finished(), "stopped a millisecond early");
    tokio::time::advance(Duration::from_millis(1)).await;
    // The next tick stops it (bounded, in case it does not).
    for _ in 0..100 {
        if call.is_finished() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(call.is_finished(), "still running past its deadline");
    let (failure, elapsed) = call.await.unwrap();
    let failure = failure.expect("the loop never returns");
    assert_eq!(failure.kind, FailureKind::DeadlineExceeded, "{failure:?}");
    // Exactly the deadline: the tokio timeout, two ticks later, cannot have fired.
    assert_eq!(elapsed, deadline);
}
