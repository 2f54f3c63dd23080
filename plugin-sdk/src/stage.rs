//! The [`Stage`] trait and the glue that keeps one value of it per instance.
//!
//! The host creates a fresh component instance for every request, so a `thread_local` slot in
//! the guest lives exactly as long as one request: it is filled with `S::default()` at the
//! first phase and read again by the second.

use std::any::Any;
use std::cell::RefCell;

use crate::{ChatRequest, ChatResponse, RequestContext, RequestOutcome, StageError, StageInfo};

/// A pipeline stage. Implement it on a `Default` type and export it with
/// [`export_stage!`](crate::export_stage).
///
/// Both phases default to pass-through, so a stage implements only what it needs and says
/// which phases it implements in [`Stage::info`]; the host never calls a phase that `info`
/// does not list.
///
/// ```no_run
/// use weir_sdk::{ChatRequest, ChatResponse, RequestContext, Stage, StageError, StageInfo};
///
/// /// Appends a footer to every answer.
/// #[derive(Default)]
/// struct Footer;
///
/// impl Stage for Footer {
///     fn info() -> StageInfo {
///         StageInfo::new("footer", "0.1.0").on_response()
///     }
///
///     fn on_response(
///         &mut self,
///         _ctx: &RequestContext,
///         _request: &ChatRequest,
///         mut response: ChatResponse,
///     ) -> Result<ChatResponse, StageError> {
///         for choice in &mut response.choices {
///             let text = choice.message.text();
///             choice.message.set_text(format!("{text}\n-- answered by weir"));
///         }
///         Ok(response)
///     }
/// }
/// weir_sdk::export_stage!(Footer);
/// ```
pub trait Stage: Default + 'static {
    /// Who the stage is and which phases it implements. Called once when the host loads the
    /// component; it must not call [`llm::complete`](crate::llm::complete).
    fn info() -> StageInfo;

    /// Every key this stage's config table may have. `Some`: when the host loads a config
    /// that sets any other key for this stage (a misspelling), it refuses it, naming the config
    /// file, line and key, instead of the stage silently ignoring it. `None` (the default):
    /// any key is accepted.
    ///
    /// ```
    /// # #[derive(Default)] struct Greeter;
    /// # impl weir_sdk::Stage for Greeter {
    /// # fn info() -> weir_sdk::StageInfo { weir_sdk::StageInfo::new("g", "1").on_request() }
    /// const CONFIG_KEYS: Option<&'static [&'static str]> = Some(&["greeting", "suffix"]);
    /// # }
    /// ```
    const CONFIG_KEYS: Option<&'static [&'static str]> = None;

    /// The request phase: return [`RequestOutcome::Next`] with the (possibly rewritten)
    /// request, [`RequestOutcome::Respond`] to answer without calling the model, or an error.
    fn on_request(
        &mut self,
        ctx: &RequestContext,
        request: ChatRequest,
    ) -> Result<RequestOutcome, StageError> {
        let _ = ctx;
        Ok(RequestOutcome::Next(request))
    }

    /// The response phase, on the same value as the request phase of this request.
    /// `request` is what this stage passed on in its request phase.
    fn on_response(
        &mut self,
        ctx: &RequestContext,
        request: &ChatRequest,
        response: ChatResponse,
    ) -> Result<ChatResponse, StageError> {
        let _ = (ctx, request);
        Ok(response)
    }
}

thread_local! {
    /// The stage value of the current instance (= the current request).
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

fn with_state<S: Stage, R>(f: impl FnOnce(&mut S) -> R) -> R {
    STATE.with(|slot| {
        let mut slot = slot.borrow_mut();
        let value = slot.get_or_insert_with(|| Box::new(S::default()));
        let stage = match value.downcast_mut::<S>() {
            Some(stage) => stage,
            None => {
                // Only one stage type is exported per component, so this cannot happen; if it
                // did, start from a fresh value rather than trap.
                *value = Box::new(S::default());
                value.downcast_mut::<S>().unwrap_or_else(|| unreachable!())
            }
        };
        f(stage)
    })
}

/// Export glue for `describe`.
pub fn describe<S: Stage>() -> StageInfo {
    if let Some(keys) = S::CONFIG_KEYS {
        let keys: Vec<String> = keys.iter().map(|key| key.to_string()).collect();
        crate::bindings::weir::stage::host::config_keys(&keys);
    }
    S::info()
}

/// Export glue for `on-request`.
pub fn on_request<S: Stage>(
    ctx: RequestContext,
    request: ChatRequest,
) -> Result<RequestOutcome, StageError> {
    with_state::<S, _>(|stage| stage.on_request(&ctx, request))
}

/// Export glue for `on-response`.
pub fn on_response<S: Stage>(
    ctx: RequestContext,
    request: ChatRequest,
    response: ChatResponse,
) -> Result<ChatResponse, StageError> {
    with_state::<S, _>(|stage| stage.on_response(&ctx, &request, response))
}
