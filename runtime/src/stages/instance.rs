//! One stage instance serving one request: a fresh `Store` from the stage's `StagePre`, armed
//! with fuel and a deadline before every call, and torn down when its last phase has run.

use std::sync::Arc;

use tokio::time::timeout;
use wasmtime::Store;

use crate::config::CallLimits;
use crate::host_api::{HostContext, log_line};
use crate::sandbox::{Reaper, Sandbox, StageState, arm};
use crate::wit::{
    ChatRequest, ChatResponse, Phases, RequestContext, RequestOutcome, StageBindings, StageError,
    StageInfo, v2,
};

use super::loaded::{Contract, StagePre};
use super::{FailureKind, LoadedStage, StageFailure};

/// An instance's export handles, by contract.
enum Bindings {
    /// A 0.1 component.
    V1(StageBindings),
    /// A 0.2 component.
    V2(v2::Stage),
}

/// What `on-request` decided, and (0.2) the state it handed over for the response phase.
#[derive(Debug)]
pub struct RequestPhase {
    /// Continue or answer.
    pub outcome: RequestOutcome,
    /// `Some` for a 0.2 stage: the bytes its response phase gets back (the instance is free to
    /// go). `None` for a 0.1 stage, whose state lives in its instance.
    pub state: Option<Vec<u8>>,
}

/// Epoch ticks the tokio timeout waits beyond the deadline, so that in guest code the epoch
/// trap fires first; the tokio timeout catches host calls, which epochs do not interrupt.
const TIMEOUT_GRACE_TICKS: u32 = 2;

/// A live instance of a stage for one request.
pub struct StageInstance {
    /// The instance's store (its memory, fuel, deadline, host context).
    store: Store<StageState>,
    /// The instance's export handles.
    bindings: Bindings,
    /// Limits re-armed before every call.
    limits: CallLimits,
    /// Whether the engine meters fuel.
    fuel_metering: bool,
    /// The tokio timeout backing the deadline.
    hard_timeout: std::time::Duration,
    /// `name@abcd1234`, for failures and logs.
    label: Arc<str>,
}

/// How long an instantiation waits, in 1 ms steps, for a slot when the pool is full: a burst of
/// requests all in their request phase at once fills it for microseconds, and that is not a
/// reason to shed (a pool still full after this is).
const POOL_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

impl LoadedStage {
    /// Creates a fresh instance for one request (microseconds with the pooling allocator). A
    /// full pool is waited on for up to [`POOL_WAIT`] before the request is shed.
    pub async fn instantiate(
        &self,
        sandbox: &Sandbox,
        host: HostContext,
        limits: &CallLimits,
    ) -> Result<StageInstance, StageFailure> {
        let waited = tokio::time::Instant::now();
        loop {
            match self.instantiate_once(sandbox, host.clone(), limits).await {
                Err(failure)
                    if failure.kind == FailureKind::PoolExhausted
                        && waited.elapsed() < POOL_WAIT =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                result => return result,
            }
        }
    }

    async fn instantiate_once(
        &self,
        sandbox: &Sandbox,
        host: HostContext,
        limits: &CallLimits,
    ) -> Result<StageInstance, StageFailure> {
        let label = host.stage.label.clone();
        let mut store = sandbox.new_store(self.pre.engine(), host, limits);
        let fuel_metering = sandbox.settings().fuel_metering;
        arm(&mut store, limits, fuel_metering);
        let hard_timeout = limits.deadline + sandbox.settings().epoch_tick * TIMEOUT_GRACE_TICKS;
        let instantiated = match &self.pre {
            StagePre::V1(pre) => timeout(hard_timeout, pre.instantiate_async(&mut store))
                .await
                .map(|r| r.map(Bindings::V1)),
            StagePre::V2(pre) => timeout(hard_timeout, pre.instantiate_async(&mut store))
                .await
                .map(|r| r.map(Bindings::V2)),
        };
        report_dropped_lines(&mut store, &label);
        match instantiated {
            Ok(Ok(bindings)) => Ok(StageInstance {
                store,
                bindings,
                limits: *limits,
                fuel_metering,
                hard_timeout,
                label,
            }),
            Ok(Err(err)) => Err(StageFailure::from_call(&label, store.data(), &err)),
            Err(_) => Err(deadline(&label)),
        }
    }
}

impl StageInstance {
    /// Calls `describe`: the stage's info in 0.1's terms (see [`LoadedStage::contract`]) and
    /// its contract.
    pub async fn describe(&mut self) -> Result<(StageInfo, Contract), StageFailure> {
        self.prepare();
        match &self.bindings {
            Bindings::V1(bindings) => {
                let call = bindings.call_describe(&mut self.store);
                let result = timeout(self.hard_timeout, call).await;
                self.finish(result).map(|info| (info, Contract::V1))
            }
            Bindings::V2(bindings) => {
                let call = bindings
                    .weir_stage0_2_0_handler()
                    .call_describe(&mut self.store);
                let result = timeout(self.hard_timeout, call).await;
                self.finish(result).map(from_v2)
            }
        }
    }

    /// Calls `on-request`.
    pub async fn on_request(
        &mut self,
        ctx: &RequestContext,
        request: &ChatRequest,
    ) -> Result<Result<RequestPhase, StageError>, StageFailure> {
        self.prepare();
        match &self.bindings {
            Bindings::V1(bindings) => {
                let call = bindings.call_on_request(&mut self.store, ctx, request);
                let result = timeout(self.hard_timeout, call).await;
                self.finish(result).map(|r| {
                    r.map(|outcome| RequestPhase {
                        outcome,
                        state: None,
                    })
                })
            }
            Bindings::V2(bindings) => {
                let handler = bindings.weir_stage0_2_0_handler();
                let call = handler.call_on_request(&mut self.store, ctx, request);
                let result = timeout(self.hard_timeout, call).await;
                self.finish(result).map(|r| {
                    r.map(|done| RequestPhase {
                        outcome: done.outcome,
                        state: Some(done.state),
                    })
                })
            }
        }
    }

    /// Calls `on-response`; `state` is what the stage's `on-request` handed over (0.2; a 0.1
    /// stage keeps its own and ignores it).
    pub async fn on_response(
        &mut self,
        ctx: &RequestContext,
        state: &[u8],
        request: &ChatRequest,
        response: &ChatResponse,
    ) -> Result<Result<ChatResponse, StageError>, StageFailure> {
        self.prepare();
        match &self.bindings {
            Bindings::V1(bindings) => {
                let call = bindings.call_on_response(&mut self.store, ctx, request, response);
                let result = timeout(self.hard_timeout, call).await;
                self.finish(result)
            }
            Bindings::V2(bindings) => {
                let handler = bindings.weir_stage0_2_0_handler();
                let call = handler.call_on_response(&mut self.store, ctx, state, request, response);
                let result = timeout(self.hard_timeout, call).await;
                self.finish(result)
            }
        }
    }

    /// Calls `on-response-chunk` (0.2 only: a 0.1 stage has none, and the call fails).
    pub async fn on_response_chunk(
        &mut self,
        ctx: &RequestContext,
        state: &[u8],
        deltas: &[v2::TextDelta],
    ) -> Result<Result<v2::ChunkDone, StageError>, StageFailure> {
        self.prepare();
        let Bindings::V2(bindings) = &self.bindings else {
            return Err(StageFailure::new(
                &self.label,
                FailureKind::Failed,
                "a weir:stage@0.1.0 stage has no on-response-chunk",
            ));
        };
        let handler = bindings.weir_stage0_2_0_handler();
        let call = handler.call_on_response_chunk(&mut self.store, ctx, state, deltas);
        let result = timeout(self.hard_timeout, call).await;
        self.finish(result)
    }

    /// What the last `on-response` asked with `retry-response`, taken out (`None` when it did
    /// not ask). Cleared before every call, so an ask from another phase never counts.
    pub fn take_retry(&mut self) -> Option<crate::sandbox::RetryAsk> {
        self.store.data_mut().retry.take()
    }

    /// The config keys `describe` declared (`config-keys`), taken out.
    pub fn take_config_keys(&mut self) -> Option<crate::sandbox::DeclaredKeys> {
        self.store.data_mut().config_keys.take()
    }

    /// Fuel left from the last call's budget (`None` when unmetered).
    pub fn fuel_remaining(&self) -> Option<u64> {
        if self.fuel_metering {
            self.store.get_fuel().ok()
        } else {
            None
        }
    }

    /// The fuel budget each call starts with.
    pub fn fuel_budget(&self) -> Option<u64> {
        self.fuel_metering
            .then(|| self.limits.fuel.unwrap_or(u64::MAX))
    }

    /// Releases the instance to `reaper`, which drops its store inline or on its thread.
    pub fn release(self, reaper: &Reaper) {
        reaper.reap(self.store);
    }

    fn prepare(&mut self) {
        arm(&mut self.store, &self.limits, self.fuel_metering);
        self.store.data_mut().retry = None;
    }

    fn finish<T>(
        &mut self,
        result: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, StageFailure> {
        self.drain_output();
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(StageFailure::from_call(
                &self.label,
                self.store.data(),
                &err,
            )),
            Err(_) => Err(deadline(&self.label)),
        }
    }

    /// Moves what the guest printed into the host log, one event per line (escaped like a
    /// guest log line), and reports the log lines the call dropped.
    fn drain_output(&mut self) {
        report_dropped_lines(&mut self.store, &self.label);
        let output = self.store.data().output.take();
        if output.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&output);
        let stage = &*self.label;
        let request_id = &*self.store.data().host.request_id;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let line = log_line(line, usize::MAX);
            tracing::info!(target: "weir::guest::stdout", stage, request_id, "{line}");
        }
    }
}

/// Ends the log budget of the call that just ran: the lines it dropped (over
/// `sandbox.log_lines_per_call`) become one log line and a metric.
fn report_dropped_lines(store: &mut Store<StageState>, label: &str) {
    let state = store.data_mut();
    let dropped = state.log.end_call();
    if dropped == 0 {
        return;
    }
    let request_id = &*state.host.request_id;
    tracing::warn!(
        target: "weir::guest",
        stage = label,
        request_id,
        dropped,
        "{dropped} guest log lines dropped (over sandbox.log_lines_per_call)"
    );
    crate::telemetry::guest_log_dropped(&state.host.stage.name, dropped);
}

fn deadline(label: &str) -> StageFailure {
    StageFailure::new(
        label,
        FailureKind::DeadlineExceeded,
        "the call did not finish before its deadline",
    )
}

/// A 0.2 `stage-info` in 0.1's terms, with the contract that says which response hooks it has.
fn from_v2(info: v2::StageInfo) -> (StageInfo, Contract) {
    let whole = info.phases.contains(v2::Phases::RESPONSE);
    let chunks = info.phases.contains(v2::Phases::RESPONSE_CHUNK);
    let mut phases = Phases::empty();
    if info.phases.contains(v2::Phases::REQUEST) {
        phases |= Phases::REQUEST;
    }
    if whole || chunks {
        phases |= Phases::RESPONSE;
    }
    let converted = StageInfo {
        name: info.name,
        version: info.version,
        phases,
        deterministic: info.deterministic,
        needs_full_response: whole && !chunks,
    };
    (converted, Contract::V2 { whole, chunks })
}
