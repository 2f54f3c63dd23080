//! The [`Stage`] trait and the glue that carries one value of it through a request.
//!
//! The value is `S::default()` when `on-request` starts. When it returns, the glue serialises
//! the value (serde, postcard) into the state the host keeps for the request, and the instance goes
//! back to the pool; `on-response` and `on-response-chunk` run on a fresh instance with the
//! value deserialised from that state. So `self` survives between the phases of one request
//! even though no instance does.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::exports::weir::stage0_2_0::handler::{ChunkDone, RequestDone};
use crate::{
    ChatRequest, ChatResponse, RequestContext, RequestOutcome, StageError, StageInfo, TextDelta,
};

/// A pipeline stage. Implement it on a `Default` type and export it with
/// [`export_stage!`](crate::export_stage).
///
/// Every phase defaults to pass-through, so a stage implements only what it needs and says
/// which phases it implements in [`Stage::info`]; the host never calls a phase that `info`
/// does not list. The type derives `Serialize` and `Deserialize` (serde, with its `derive`
/// feature): `self` travels from `on_request` to `on_response` as bytes through the host
/// (postcard, which is not self-describing: `#[serde(skip)]` works, `skip_serializing_if`
/// does not; [`testing::round_trip`](crate::testing::round_trip) checks a value survives).
///
/// ```no_run
/// use weir_sdk::{ChatRequest, ChatResponse, RequestContext, Stage, StageError, StageInfo};
///
/// /// Appends a footer to every answer.
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
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
pub trait Stage: Default + Serialize + DeserializeOwned + 'static {
    /// Who the stage is and which phases it implements. Called once when the host loads the
    /// component; it must not call [`llm::complete`](crate::llm::complete).
    fn info() -> StageInfo;

    /// Every key this stage's config table may have. `Some`: when the host loads a config
    /// that sets any other key for this stage (a misspelling), it refuses it, naming the config
    /// file, line and key, instead of the stage silently ignoring it. `None` (the default):
    /// any key is accepted.
    ///
    /// ```
    /// # #[derive(Default, serde::Serialize, serde::Deserialize)] struct Greeter;
    /// # impl weir_sdk::Stage for Greeter {
    /// # fn info() -> weir_sdk::StageInfo { weir_sdk::StageInfo::new("g", "1").on_request() }
    /// const CONFIG_KEYS: Option<&'static [&'static str]> = Some(&["greeting", "suffix"]);
    /// # }
    /// ```
    const CONFIG_KEYS: Option<&'static [&'static str]> = None;

    /// The phases this impl implements, set by [`#[weir_sdk::stage]`](crate::stage) on the
    /// impl block (not by hand): `describe` adds them to what [`Stage::info`] lists.
    #[doc(hidden)]
    const IMPLEMENTED_PHASES: Option<crate::Phases> = None;

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

    /// The response phase on a whole answer (a streamed one is buffered for it unless the
    /// stage implements [`on_response_chunk`](Self::on_response_chunk)), on the value the
    /// request phase of this request left. `request` is what this stage passed on in its
    /// request phase.
    fn on_response(
        &mut self,
        ctx: &RequestContext,
        request: &ChatRequest,
        response: ChatResponse,
    ) -> Result<ChatResponse, StageError> {
        let _ = (ctx, request);
        Ok(response)
    }

    /// The response phase on one chunk of a streamed answer (listed with
    /// [`StageInfo::on_response_chunk`]): `deltas` has the new text of each choice. Return the
    /// text to send now; text held back (in `self`) must be returned at the latest with the
    /// delta whose `last` is set. The default passes every delta through.
    fn on_response_chunk(
        &mut self,
        ctx: &RequestContext,
        deltas: Vec<TextDelta>,
    ) -> Result<Vec<TextDelta>, StageError> {
        let _ = ctx;
        Ok(deltas)
    }
}

/// The state bytes of `stage`: none for a stage type with no fields (nothing to carry),
/// postcard otherwise (compact, and much less code in the component than JSON), whether or
/// not a phase follows (asking [`Stage::info`] would run the author's `info` on every
/// request).
pub(crate) fn save<S: Stage>(stage: &S) -> Result<Vec<u8>, StageError> {
    if std::mem::size_of::<S>() == 0 {
        return Ok(Vec::new());
    }
    postcard::to_allocvec(stage)
        .map_err(|err| StageError::fail(format!("cannot save the stage state: {err}")))
}

/// The stage value `state` holds; `S::default()` when it is empty (no request phase ran).
pub(crate) fn load<S: Stage>(state: &[u8]) -> Result<S, StageError> {
    // A stage type with no fields has nothing to read (and links no decoder).
    if std::mem::size_of::<S>() == 0 || state.is_empty() {
        return Ok(S::default());
    }
    postcard::from_bytes(state)
        .map_err(|err| StageError::fail(format!("cannot read the stage state: {err}")))
}

/// Export glue for `describe`.
pub fn describe<S: Stage>() -> StageInfo {
    if let Some(keys) = S::CONFIG_KEYS {
        let keys: Vec<String> = keys.iter().map(|key| key.to_string()).collect();
        crate::bindings::weir::stage0_1_0::host::config_keys(&keys);
    }
    let mut info = S::info();
    if let Some(phases) = S::IMPLEMENTED_PHASES {
        info.phases |= phases;
    }
    info
}

/// Export glue for `on-request`.
pub fn on_request<S: Stage>(
    ctx: RequestContext,
    request: ChatRequest,
) -> Result<RequestDone, StageError> {
    let mut stage = S::default();
    let outcome = stage.on_request(&ctx, request)?;
    let state = match outcome {
        RequestOutcome::Next(_) => save(&stage)?,
        RequestOutcome::Respond(_) => Vec::new(),
    };
    Ok(RequestDone { outcome, state })
}

/// Export glue for `on-response`.
pub fn on_response<S: Stage>(
    ctx: RequestContext,
    state: Vec<u8>,
    request: ChatRequest,
    response: ChatResponse,
) -> Result<ChatResponse, StageError> {
    load::<S>(&state)?.on_response(&ctx, &request, response)
}

/// Export glue for `on-response-chunk`.
pub fn on_response_chunk<S: Stage>(
    ctx: RequestContext,
    state: Vec<u8>,
    deltas: Vec<TextDelta>,
) -> Result<ChunkDone, StageError> {
    let mut stage = load::<S>(&state)?;
    let deltas = stage.on_response_chunk(&ctx, deltas)?;
    let state = save(&stage)?;
    Ok(ChunkDone { deltas, state })
}

#[cfg(test)]
mod tests {
    use crate::{
        ChatRequest, Phases, RequestContext, RequestOutcome, Stage, StageError, StageInfo,
        TextDelta,
    };

    #[derive(Default, serde::Serialize, serde::Deserialize)]
    struct Inferred;

    #[crate::stage]
    impl Stage for Inferred {
        fn info() -> StageInfo {
            StageInfo::new("inferred", "1")
        }

        fn on_request(
            &mut self,
            _ctx: &RequestContext,
            request: ChatRequest,
        ) -> Result<RequestOutcome, StageError> {
            // A function nested in a method is not a phase.
            fn on_response() {}
            on_response();
            Ok(RequestOutcome::Next(request))
        }

        fn on_response_chunk(
            &mut self,
            _ctx: &RequestContext,
            deltas: Vec<TextDelta>,
        ) -> Result<Vec<TextDelta>, StageError> {
            Ok(deltas)
        }
    }

    #[derive(Default, serde::Serialize, serde::Deserialize)]
    struct Listed;

    impl Stage for Listed {
        fn info() -> StageInfo {
            StageInfo::new("listed", "1").on_response()
        }
    }

    #[test]
    fn the_phases_are_the_methods_the_impl_defines() {
        assert_eq!(
            super::describe::<Inferred>().phases,
            Phases::REQUEST | Phases::RESPONSE_CHUNK
        );
        // Without the attribute, what `info` lists.
        assert_eq!(super::describe::<Listed>().phases, Phases::RESPONSE);
    }
}
