//! What a stage can ask of the host about the model's response, from `on_response`.
//!
//! Today that is one thing: [`retry`], "this answer is not acceptable, ask the model again".
//! The host owns the loop (not the stage) because only the host can re-run the LLM step with
//! the route's fallbacks, budget and deadline, and re-run the response phase of every stage on
//! the new answer; a stage calling [`llm::complete`](crate::llm::complete) itself would skip
//! the stages after it and bill outside the route's limit on retries.
//!
//! ```no_run
//! use weir_sdk::{ChatRequest, ChatResponse, RequestContext, Stage, StageError, StageInfo};
//!
//! /// Insists on an answer that mentions the order number.
//! #[derive(Default, serde::Serialize, serde::Deserialize)]
//! struct MustCite;
//!
//! impl Stage for MustCite {
//!     fn info() -> StageInfo {
//!         StageInfo::new("must-cite", "0.1.0").on_response()
//!     }
//!
//!     fn on_response(
//!         &mut self,
//!         _ctx: &RequestContext,
//!         _request: &ChatRequest,
//!         response: ChatResponse,
//!     ) -> Result<ChatResponse, StageError> {
//!         if !response.text().contains("#") {
//!             weir_sdk::response::retry(
//!                 "the answer cites no order number",
//!                 Some("Your answer must cite the order number, as #12345."),
//!             );
//!         }
//!         Ok(response)
//!     }
//! }
//! weir_sdk::export_stage!(MustCite);
//! ```

/// Rejects the response this `on_response` is looking at and asks the host to re-ask the model.
///
/// The host discards whatever this `on_response` returns (return the response unchanged), asks
/// the model again on the conversation followed by the refused answer and `feedback`, when
/// given, as a user message (say what was wrong and what to answer instead), and runs the
/// response phase again, this stage included, on the new answer. The retries are bounded by
/// the route's `max_output_retries`, its deadline and its budget; past them the client gets
/// 502 `invalid_model_output` with `reason` as the message, so write `reason` for the client
/// and the log (what was wrong, not what to do) and keep it short: the host keeps at most 2 KiB
/// of it, and 16 KiB of `feedback`.
///
/// Returns at once: the retry happens after `on_response` returns. When it is called more than
/// once in one `on_response`, the last call wins. Outside `on_response` it does nothing (a
/// stage that judges answers lists no `on_response_chunk`, so it sees a stream whole).
pub fn retry(reason: &str, feedback: Option<&str>) {
    crate::bindings::weir::stage0_1_0::host::retry_response(reason, feedback);
}
