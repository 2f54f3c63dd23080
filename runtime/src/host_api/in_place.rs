//! `log`, `count-tokens` and `services.call` as the linker serves them: reading the guest's
//! arguments where they lie in guest memory instead of having them copied into the host first.
//!
//! `services.call` and `complete-all` take their batch as a [`WasmList`] and check its length
//! before lifting a single request: a batch over [`MAX_BATCH`] (more calls than an instance
//! may make at all) traps, so a guest cannot have the host copy a million tiny requests, and
//! answer each. A `complete-all` over [`MAX_FAN_OUT`] but within that is refused call by call
//! (`too_many_calls`), as before, without lifting its requests.
//!
//! The generated bindings lift every `string` argument into a host `String` before the import
//! runs: a copy into a fresh host allocation of up to the guest's whole memory, on the async
//! worker, where no deadline reaches. For a 48 MiB `count-tokens` argument that held a worker
//! for about 40 ms (measured, debug build), only for the text to be answered with an estimate.
//! These definitions shadow the generated ones in the linker and take the argument as a
//! [`WasmStr`]: `log` takes its line from the call's budget before reading anything and
//! copies at most the line's cap; `count-tokens` copies only text it will tokenize (at most
//! [`STAGE_COUNT_MAX_BYTES`]). What is read is validated as UTF-8 where it lies, as the
//! generated lift would (invalid UTF-8 traps, as it did).

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmList, WasmStr};

use super::fan_out::{self, MAX_FAN_OUT};
use super::guest_log;
use crate::cost::tokens::{STAGE_COUNT_MAX_BYTES, count_for_stage, estimate};
use crate::sandbox::StageState;
use crate::service::MAX_CALLS_PER_INSTANCE;
use crate::wit::v2::weir::stage0_2_0::services::ServiceRequest;
use crate::wit::weir::stage0_1_0::host::Host as _;
use crate::wit::{ChatRequest, LogLevel};

/// The instance the 0.2 service import is defined in.
const SERVICES: &str = "weir:stage/services@0.2.0";

/// Most requests one `services.call` or `complete-all` batch may carry: as many as an instance
/// may make service calls at all.
pub const MAX_BATCH: usize = MAX_CALLS_PER_INSTANCE as usize;

/// The instance the host imports are defined in.
const HOST: &str = "weir:stage/host@0.1.0";

/// Longest model name `count-tokens` reads; a longer one counts as a model tiktoken does not
/// know (`gpt-4o`), as any unknown name does.
const MODEL_MAX_BYTES: usize = 256;

/// Defines `log`, `count-tokens` and `complete-all` in `linker` over the generated ones (call
/// after the bindings' `add_to_linker`), and `services.call`.
pub fn define(linker: &mut Linker<StageState>) -> wasmtime::Result<()> {
    linker.instance(SERVICES)?.func_wrap_async(
        "call",
        |mut store: StoreContextMut<'_, StageState>, (batch,): (WasmList<ServiceRequest>,)| {
            Box::new(async move {
                if batch.len() > MAX_BATCH {
                    wasmtime::bail!(
                        "services.call: a batch of {} requests; at most {MAX_BATCH}",
                        batch.len()
                    );
                }
                let requests = batch
                    .iter(&mut store)?
                    .collect::<wasmtime::Result<Vec<_>>>()?;
                let state = store.data_mut();
                // The call in progress bounds every service call it makes.
                state.hooks.deadline = state.deadline;
                Ok((crate::service::call_all(&mut state.hooks, requests).await,))
            })
        },
    )?;
    linker.allow_shadowing(true);
    let mut host = linker.instance(HOST)?;
    host.func_wrap(
        "log",
        |store: StoreContextMut<'_, StageState>, (level, message): (LogLevel, WasmStr)| {
            log(store, level, &message)
        },
    )?;
    host.func_wrap_async(
        "count-tokens",
        |store: StoreContextMut<'_, StageState>, (model, text): (WasmStr, WasmStr)| {
            let read = read_count(&store, &model, &text);
            Box::new(async move {
                let tokens = match read? {
                    Count::Done(tokens) => tokens,
                    Count::Tokenize { model, text } => count_for_stage(model, text).await,
                };
                Ok((tokens,))
            })
        },
    )?;
    host.func_wrap_async(
        "complete-all",
        |mut store: StoreContextMut<'_, StageState>,
         (batch, deadline_ms): (WasmList<ChatRequest>, Option<u32>)| {
            Box::new(async move {
                let n = batch.len();
                if n > MAX_BATCH {
                    wasmtime::bail!("complete-all: a batch of {n} requests; at most {MAX_BATCH}");
                }
                if n > MAX_FAN_OUT {
                    return Ok((fan_out::too_many(n),));
                }
                let requests = batch
                    .iter(&mut store)?
                    .collect::<wasmtime::Result<Vec<_>>>()?;
                let state = store.data_mut();
                Ok((state.complete_all(requests, deadline_ms).await,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// `log`: nothing is read once the call's lines are spent.
fn log(
    mut store: StoreContextMut<'_, StageState>,
    level: LogLevel,
    message: &WasmStr,
) -> wasmtime::Result<()> {
    if !store.data_mut().log.admit() {
        return Ok(());
    }
    let message = message.to_str(&store)?;
    guest_log::write(&store.data().host, level, &message);
    Ok(())
}

/// What `count-tokens` does with its arguments.
enum Count {
    /// Answered without tokenizing (the text is over the cap).
    Done(u32),
    /// Tokenize this copy of the text.
    Tokenize {
        /// The model name (empty when it was too long to be a model's).
        model: String,
        /// The text, at most [`STAGE_COUNT_MAX_BYTES`].
        text: String,
    },
}

/// Reads `count-tokens`' arguments, copying only what will be tokenized.
fn read_count(
    store: &StoreContextMut<'_, StageState>,
    model: &WasmStr,
    text: &WasmStr,
) -> wasmtime::Result<Count> {
    let text = text.to_str(store)?;
    if text.len() > STAGE_COUNT_MAX_BYTES {
        return Ok(Count::Done(estimate(text.len())));
    }
    let model = model.to_str(store)?;
    let model = if model.len() > MODEL_MAX_BYTES {
        String::new()
    } else {
        model.into_owned()
    };
    Ok(Count::Tokenize {
        model,
        text: text.into_owned(),
    })
}
