//! `example-rust`: the example stage of weir's polyglot suite, written with `weir-sdk`.
//!
//! Every language's `example-<lang>` stage (this one, `examples/stages/python` and
//! `examples/stages/js`) behaves the same, so one black-box test suite checks them all.
//!
//! Request phase, on the text of the last `user` message (its plain text, or its text parts
//! concatenated with nothing between them):
//!
//! - contains `forbidden` (any case): reject 403 `forbidden_word`;
//! - starts with `/count`: answer `count: <n>`, a counter kept in the stage cache for 60 s;
//! - starts with `/summarize `: ask `summary_model` for a one-line summary of the rest and
//!   answer `summary: ...`; a failed call is passed on as a rejection with its status and code;
//! - is `/search`: query the granted service `search` (a Chroma v2 query of one vector for
//!   one result) and answer `search: <status> <first passage>`, or `search: error <kind>`;
//! - is `/spin`: compute forever (the host's fuel or deadline stops it);
//! - is `/hog`: allocate 1 MiB chunks forever (the host's memory cap stops it);
//! - anything else: put the `greeting` system message first, log `greeted <request id>`,
//!   continue.
//!
//! Response phase: if the request was greeted, append `suffix` to every plain-text choice.
//!
//! Config (all optional): `greeting` (default `Be brief.`), `suffix` (default ` [checked]`),
//! `summary_model` (default: the request's own model).
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p example-stage
//! weir check target/wasm32-wasip2/release/example_stage.wasm
//! ```

use std::hint::black_box;

/// The query `/search` sends to the `search` service: a Chroma v2 query path.
const SEARCH_PATH: &str =
    "/api/v2/tenants/default_tenant/databases/default_database/collections/docs/query";

use weir_sdk::{
    ChatRequest, ChatResponse, Content, Message, RequestContext, RequestOutcome, Stage, StageError,
    StageInfo,
};

/// The stage's per-request state (a fresh value for every request).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Example {
    /// Set in the request phase when the request was greeted, read in the response phase.
    greeted: bool,
}

/// The text of the last `user` message: its plain text, or its text parts concatenated with
/// nothing between them; `""` when there is none.
fn last_user_text(request: &ChatRequest) -> String {
    let Some(message) = request.messages.iter().rev().find(|m| m.role == "user") else {
        return String::new();
    };
    match &message.content {
        None => String::new(),
        Some(Content::Text(text)) => text.clone(),
        Some(Content::Parts(parts)) => parts.iter().filter_map(|p| p.text.as_deref()).collect(),
    }
}

/// The counter stored in the cache: a UTF-8 decimal (ASCII digits only); 0 when absent or
/// unparsable.
fn count_from(raw: Option<Vec<u8>>) -> u64 {
    raw.as_deref()
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

/// A one-choice assistant answer with `text`, as this stage responds on its own (no usage).
fn answer(id: &str, model: &str, text: String) -> ChatResponse {
    let mut response = ChatResponse::from_text(model, text);
    response.id = id.to_string();
    response.usage = None;
    response
}

// The phases are inferred from the methods below (on_request, on_response), as in the Python
// and JavaScript SDKs.
#[weir_sdk::stage]
impl Stage for Example {
    // A misspelled key (`greting`) is refused when the host loads the config.
    const CONFIG_KEYS: Option<&'static [&'static str]> =
        Some(&["greeting", "suffix", "summary_model"]);

    fn info() -> StageInfo {
        StageInfo::new("example-rust", "0.1.0")
    }

    fn on_request(
        &mut self,
        ctx: &RequestContext,
        mut request: ChatRequest,
    ) -> Result<RequestOutcome, StageError> {
        let text = last_user_text(&request);

        if text.to_lowercase().contains("forbidden") {
            return Err(StageError::reject(
                403,
                "forbidden_word",
                "the word 'forbidden' is not allowed",
            ));
        }

        if text.starts_with("/count") {
            let n = count_from(weir_sdk::cache::get("count")) + 1;
            weir_sdk::cache::set("count", n.to_string().as_bytes(), Some(60));
            let response = answer("example-count", &request.model, format!("count: {n}"));
            return Ok(RequestOutcome::Respond(response));
        }

        if let Some(rest) = text.strip_prefix("/summarize ") {
            let model =
                weir_sdk::config::get("summary_model").unwrap_or_else(|| request.model.clone());
            let question = ChatRequest::new(
                &model,
                vec![
                    Message::system("Summarize in one line."),
                    Message::user(rest),
                ],
            );
            let summary = match weir_sdk::llm::complete(&question) {
                Ok(reply) => reply.text(),
                Err(err) => return Err(StageError::reject(err.status, &err.code, err.message)),
            };
            let response = answer(
                "example-summary",
                &request.model,
                format!("summary: {summary}"),
            );
            return Ok(RequestOutcome::Respond(response));
        }

        if text == "/search" {
            let query = serde_json::json!({"query_embeddings": [[1.0]], "n_results": 1});
            let said = match weir_sdk::service::post_json("search", SEARCH_PATH, &query) {
                Ok(answer) => {
                    let hits: serde_json::Value = answer.json().unwrap_or_default();
                    let first = hits["documents"][0][0].as_str().unwrap_or("");
                    format!("search: {} {first}", answer.status)
                }
                Err(err) => format!("search: error {}", err.kind()),
            };
            let response = answer("example-search", &request.model, said);
            return Ok(RequestOutcome::Respond(response));
        }

        if text == "/spin" {
            // Pure computation, no host calls: the host's fuel or deadline must stop it.
            let mut x: u32 = 1;
            loop {
                x = black_box(x.wrapping_mul(1_103_515_245).wrapping_add(12_345));
            }
        }

        if text == "/hog" {
            // ~1 MiB at a time, written (a byte in every 64 KiB Wasm page) and kept: the host's
            // memory cap must stop it.
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            loop {
                let tag = chunks.len() as u8;
                let mut chunk = vec![0u8; 1 << 20];
                for byte in chunk.iter_mut().step_by(1 << 16) {
                    *byte = tag;
                }
                chunks.push(black_box(chunk));
                black_box(&mut chunks);
            }
        }

        let greeting = weir_sdk::config::get("greeting").unwrap_or_else(|| "Be brief.".to_string());
        request.messages.insert(0, Message::system(greeting));
        weir_sdk::info!("greeted {}", ctx.request_id);
        self.greeted = true;
        Ok(RequestOutcome::Next(request))
    }

    fn on_response(
        &mut self,
        _ctx: &RequestContext,
        _request: &ChatRequest,
        mut response: ChatResponse,
    ) -> Result<ChatResponse, StageError> {
        if self.greeted {
            let suffix =
                weir_sdk::config::get("suffix").unwrap_or_else(|| " [checked]".to_string());
            for choice in &mut response.choices {
                if let Some(Content::Text(text)) = &mut choice.message.content {
                    text.push_str(&suffix);
                }
            }
        }
        Ok(response)
    }
}

weir_sdk::export_stage!(Example);
