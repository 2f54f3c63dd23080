//! `hello-stage`: the smallest useful weir stage, built on `weir-sdk`.
//!
//! It greets: the request phase adds a system message (`greeting` from the stage config,
//! default "Say hello to the user."), and the response phase logs how many choices came back.
//!
//! Build it and check it:
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p hello-stage
//! cargo run -p weir -- check target/wasm32-wasip2/release/hello_stage.wasm
//! ```

use weir_sdk::{
    ChatRequest, ChatResponse, Message, RequestContext, RequestOutcome, Stage, StageError,
    StageInfo,
};

/// The stage's per-request state (a fresh value for every request).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Hello {
    /// Set in the request phase, read in the response phase of the same request.
    greeted: bool,
}

// `#[weir_sdk::stage]`: the phases are the methods this impl defines (on_request and
// on_response), so `info` need not list them.
#[weir_sdk::stage]
impl Stage for Hello {
    fn info() -> StageInfo {
        StageInfo::new("hello-stage", env!("CARGO_PKG_VERSION"))
    }

    fn on_request(
        &mut self,
        ctx: &RequestContext,
        mut request: ChatRequest,
    ) -> Result<RequestOutcome, StageError> {
        let greeting = weir_sdk::config::get("greeting")
            .unwrap_or_else(|| "Say hello to the user.".to_string());
        request.messages.insert(0, Message::system(greeting));
        self.greeted = true;
        weir_sdk::debug!("greeted request {}", ctx.request_id);
        Ok(RequestOutcome::Next(request))
    }

    fn on_response(
        &mut self,
        _ctx: &RequestContext,
        _request: &ChatRequest,
        response: ChatResponse,
    ) -> Result<ChatResponse, StageError> {
        weir_sdk::info!(
            "{} choice(s) back; greeted in request phase: {}",
            response.choices.len(),
            self.greeted
        );
        Ok(response)
    }
}

weir_sdk::export_stage!(Hello);
