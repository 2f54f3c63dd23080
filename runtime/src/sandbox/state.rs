//! The data of one stage `Store` (= one stage instance for one request), and the one way to
//! build and arm such a store.

use tokio::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::ticker::Live;
use super::{CallLimiter, CapturedOutput, Sandbox};
use crate::config::CallLimits;
use crate::host_api::{HostContext, LogBudget};
use crate::service::ServiceHooks;

/// Longest `wasi:random` `get-random-bytes` / `get-insecure-random-bytes` answer, bytes; a
/// longer request traps. wasmtime-wasi generates the bytes inline on the async worker, where
/// no deadline reaches: its own limit of 64 MiB held a worker for 0.4-0.5 s (measured, debug
/// build), 64 KiB takes 0.2-0.3 ms. A guest needs a few dozen bytes for a key or a nonce, and
/// may call again for more.
pub const RANDOM_MAX_BYTES: u64 = 64 << 10;

/// Most WASI resources (streams, pollables, `wasi:http` fields, requests, bodies) one
/// instance may hold at once; past it, creating one more traps. wasmtime's default is a
/// million, and each `wasi:http` fields resource holds up to [`HTTP_FIELDS_MAX_BYTES`] of host
/// memory copied from the guest, so a stage creating them in a loop could grow the host far
/// past its own memory cap: this bounds one instance to about 1024 × 8 KiB = 8 MiB of them.
pub const RESOURCES_MAX: usize = 1024;

/// Largest `wasi:http` header set (fields) one resource may hold, bytes of its in-memory form
/// (wasmtime-wasi-http's default is 128 KiB); a larger one is an error the guest sees.
pub const HTTP_FIELDS_MAX_BYTES: usize = 8 << 10;

/// Everything a stage instance may touch, owned by its `Store`.
pub struct StageState {
    /// WASI with no preopens, env, args, sockets or name lookup; stdio captured.
    wasi: WasiCtx,
    /// WASI resources of this instance.
    table: ResourceTable,
    /// Memory/table caps and the record of refused grows.
    pub(crate) limiter: CallLimiter,
    /// Wall-clock deadline of the call in progress.
    pub(crate) deadline: Instant,
    /// What the host API needs: stage identity, config, services, request identity.
    pub(crate) host: HostContext,
    /// The guest's stdout + stderr, drained into the log after each call.
    pub(crate) output: CapturedOutput,
    /// The guest log lines the call in progress may still write.
    pub(crate) log: LogBudget,
    /// `wasi:http`'s own state (field-size limits).
    http: WasiHttpCtx,
    /// Where `wasi:http` requests go: the stage's granted services, nothing else.
    pub(crate) hooks: ServiceHooks,
    /// What `retry-response` asked during the call in progress (read and cleared by the
    /// pipeline after `on-response`).
    pub(crate) retry: Option<RetryAsk>,
    /// The config keys `describe` declared (`config-keys`), if it did.
    pub(crate) config_keys: Option<DeclaredKeys>,
    /// Keeps the epoch ticker awake while this store exists.
    _live: Live,
}

/// Most config keys a stage may declare.
pub const CONFIG_KEYS_MAX: usize = 256;
/// Longest config key a stage may declare, bytes.
pub const CONFIG_KEY_MAX_BYTES: usize = 128;

/// The config keys a stage declared in `describe` (`config-keys`), or why they are unusable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeclaredKeys {
    /// Every key the stage's config table may have.
    Keys(std::collections::BTreeSet<String>),
    /// Over [`CONFIG_KEYS_MAX`] keys or a key over [`CONFIG_KEY_MAX_BYTES`]: `describe` fails.
    Invalid(String),
}

impl DeclaredKeys {
    /// Checks what the guest declared against the bounds.
    pub fn new(keys: Vec<String>) -> DeclaredKeys {
        if keys.len() > CONFIG_KEYS_MAX {
            return DeclaredKeys::Invalid(format!(
                "config-keys declared {} keys; at most {CONFIG_KEYS_MAX}",
                keys.len()
            ));
        }
        if let Some(key) = keys
            .iter()
            .find(|k| k.is_empty() || k.len() > CONFIG_KEY_MAX_BYTES)
        {
            return DeclaredKeys::Invalid(format!(
                "config-keys declared a key of {} bytes; each must be 1..={CONFIG_KEY_MAX_BYTES}",
                key.len()
            ));
        }
        DeclaredKeys::Keys(keys.into_iter().collect())
    }
}

/// A response-phase stage's request to ask the model again (`retry-response`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryAsk {
    /// Why the answer is not acceptable (for the log and the client's final error).
    pub reason: String,
    /// What to tell the model, appended as a user message.
    pub feedback: Option<String>,
}

impl WasiHttpView for StageState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // The call in progress bounds every service call it makes.
        self.hooks.deadline = self.deadline;
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl WasiView for StageState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl Sandbox {
    /// A fresh store for one stage instance: locked-down WASI (random answers capped at
    /// [`RANDOM_MAX_BYTES`], at most [`RESOURCES_MAX`] resources, `wasi:http` fields of at most
    /// [`HTTP_FIELDS_MAX_BYTES`]), a memory cap, captured output, a log-line budget and the epoch
    /// callback that enforces the deadline. Call [`arm`] before every call into
    /// the guest (a fresh store has no fuel). `engine` is the stage's lane's.
    pub fn new_store(
        &self,
        engine: &wasmtime::Engine,
        host: HostContext,
        limits: &CallLimits,
    ) -> Store<StageState> {
        let output = CapturedOutput::new(self.settings().output_max_bytes);
        let wasi = WasiCtx::builder()
            .stdout(output.clone())
            .stderr(output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(RANDOM_MAX_BYTES)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(RESOURCES_MAX);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(HTTP_FIELDS_MAX_BYTES);
        let state = StageState {
            wasi,
            table,
            limiter: CallLimiter::new(
                limits.memory_bytes,
                super::ComponentCounts::of(self.settings()),
            ),
            deadline: Instant::now() + limits.deadline,
            hooks: ServiceHooks::new(&host),
            host,
            output,
            log: LogBudget::new(self.settings().log_lines_per_call),
            http,
            retry: None,
            config_keys: None,
            _live: self.enter_ticker(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(on_epoch_deadline);
        store
    }
}

/// Gives the store a fresh fuel budget and deadline for the next call into the guest.
pub fn arm(store: &mut Store<StageState>, limits: &CallLimits, fuel_metering: bool) {
    if fuel_metering {
        // `set_fuel` fails only when fuel metering is off, which was just checked.
        let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
    }
    let state = store.data_mut();
    state.deadline = Instant::now() + limits.deadline;
    // Lines dropped before (reported by the caller when that call ended) are not this call's.
    state.log.end_call();
    // Wake the callback at the next tick; it yields to tokio until the deadline passes.
    store.set_epoch_deadline(1);
}

/// Runs at each epoch tick while guest code is executing: yield to the executor (so a busy
/// guest never pins a worker thread) until the call's deadline, then trap.
///
/// The yield is tokio's own ([`tokio::task::yield_now`]), not wasmtime's plain self-wake: tokio
/// defers a task that yields this way until the worker has polled the I/O driver. A self-woken
/// task is run again at once, and a worker whose tasks are all busy guests then checks for I/O
/// only every 61 polls (its `event_interval`), 61 ticks of guest code: two looping stages held
/// `/healthz` (p99) at about 230 ms on two cores (measured).
fn on_epoch_deadline(
    store: wasmtime::StoreContextMut<'_, StageState>,
) -> wasmtime::Result<UpdateDeadline> {
    if Instant::now() >= store.data().deadline {
        Err(Trap::Interrupt.into())
    } else {
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_config_keys_are_bounded() {
        let keys = |n: usize, len: usize| (0..n).map(|i| format!("{i:0len$}")).collect();
        assert!(matches!(
            DeclaredKeys::new(keys(CONFIG_KEYS_MAX, CONFIG_KEY_MAX_BYTES)),
            DeclaredKeys::Keys(set) if set.len() == CONFIG_KEYS_MAX
        ));
        assert!(matches!(
            DeclaredKeys::new(keys(CONFIG_KEYS_MAX + 1, 4)),
            DeclaredKeys::Invalid(reason) if reason.contains("257 keys")
        ));
        assert!(matches!(
            DeclaredKeys::new(keys(1, CONFIG_KEY_MAX_BYTES + 1)),
            DeclaredKeys::Invalid(reason) if reason.contains("129 bytes")
        ));
        assert!(matches!(
            DeclaredKeys::new(vec![String::new()]),
            DeclaredKeys::Invalid(_)
        ));
        assert_eq!(
            DeclaredKeys::new(Vec::new()),
            DeclaredKeys::Keys(Default::default())
        );
    }
}
