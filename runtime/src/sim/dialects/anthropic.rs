//! Anthropic's Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens`.
//!
//! The key is read from `x-api-key` (an injected 401 quotes it, as OpenAI's path quotes the
//! bearer key). Answers are `providers::anthropic`'s translations of the OpenAI path's: a
//! message, the `event: NAME\ndata: JSON\n\n` stream ending in `message_stop` after `[DONE]`,
//! or `{"type":"error","error":{"type","message"}}` with the status (529 is
//! `overloaded_error`). `anthropic-version` is not checked.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{chat_request, error_response, json_response, reframe};
use crate::providers::anthropic::{self, StreamFromOpenAi};
use crate::sim::api;
use crate::sim::body::{self, SimBody};
use crate::sim::conn::ConnControl;
use crate::sim::reply::prompt_tokens;
use crate::sim::state::SimState;

/// The header Anthropic reads the API key from.
const KEY_HEADER: &str = "x-api-key";

/// `POST /v1/messages`.
pub async fn messages(
    request: Request<Incoming>,
    state: Arc<SimState>,
    conn: &ConnControl,
) -> Response<SimBody> {
    api::count_chat(&state);
    let key = api::header(&request, KEY_HEADER);
    let bytes = match api::receive(request, &state).await {
        Ok(bytes) => bytes,
        Err(err) => return error_response(body::error(&err), anthropic::error_body, conn),
    };
    let parsed = chat_request(&bytes, anthropic::request_to_openai);
    let requested = parsed.as_ref().ok().and_then(|r| r.model.as_deref());
    let model = state.response_model(requested).to_owned();
    let answer = api::answer_chat(parsed, key.as_deref(), Arc::clone(&state), conn).await;
    from_openai(answer, &model, conn)
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, N being the prompt tokens the
/// simulator would bill for the same conversation. Not a model call: no faults, no billing.
pub async fn count_tokens(request: Request<Incoming>, state: Arc<SimState>) -> Response<SimBody> {
    let counted = match api::receive(request, &state).await {
        Ok(bytes) => chat_request(&bytes, anthropic::count_tokens_request),
        Err(err) => Err(err),
    };
    match counted {
        Ok(r) => body::json(
            StatusCode::OK,
            &json!({"input_tokens": prompt_tokens(&r.messages)}),
        ),
        Err(err) => body::json(
            err.status(),
            &anthropic::error_body(err.status().as_u16(), &err.to_string()),
        ),
    }
}

/// The OpenAI path's answer → Anthropic's, for a stream naming `model`.
fn from_openai(answer: Response<SimBody>, model: &str, conn: &ConnControl) -> Response<SimBody> {
    if !answer.status().is_success() {
        return error_response(answer, anthropic::error_body, conn);
    }
    let (parts, old) = answer.into_parts();
    match old {
        SimBody::Stream(stream) => {
            let mut events = StreamFromOpenAi::new(model);
            let stream = reframe(stream, move |payload, out| {
                let translated = if payload == "[DONE]" {
                    events.finish()
                } else {
                    match serde_json::from_str::<Value>(payload) {
                        Ok(chunk) => events.push(&chunk),
                        Err(_) => Vec::new(),
                    }
                };
                for (name, data) in translated {
                    push_event(out, name, &data);
                }
            });
            Response::from_parts(parts, SimBody::Stream(stream))
        }
        full @ SimBody::Full(_) => json_response(
            Response::from_parts(parts, full),
            anthropic::response_from_openai,
        ),
    }
}

/// `event: <name>\ndata: <json>\n\n`, appended to `out`.
fn push_event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    super::push_data(out, data);
}

#[cfg(test)]
mod tests {
    use super::super::tests::{collect, conn, full_body, openai_stream};
    use super::*;
    use crate::sim::chat::{self, ChatRequest};
    use crate::sim::config::SimConfig;
    use crate::sim::error::ApiError;

    fn state() -> SimState {
        SimState::new(&SimConfig::default())
    }

    /// The OpenAI path's non-streamed answer to an Anthropic request.
    fn answer_to(anthropic_request: Value) -> Value {
        let state = state();
        let request = chat_request(
            anthropic_request.to_string().as_bytes(),
            anthropic::request_to_openai,
        )
        .expect("translates");
        let reply = chat::accept(&request, &state, Default::default());
        let response = from_openai(chat::respond(&request, &reply, &state), "m", &conn());
        assert_eq!(response.status(), StatusCode::OK);
        serde_json::from_slice(&full_body(response)).expect("JSON")
    }

    #[test]
    fn a_text_answer_is_an_anthropic_message() {
        let message = answer_to(
            json!({"model": "claude", "max_tokens": 50, "system": "be brief",
            "messages": [{"role": "user", "content": "hello"}]}),
        );
        assert_eq!(
            (&message["type"], &message["role"]),
            (&"message".into(), &"assistant".into())
        );
        assert!(
            message["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("msg_"))
        );
        assert_eq!(message["stop_reason"], "end_turn");
        let text = message["content"][0]["text"].as_str().unwrap_or_default();
        assert!(text.starts_with("sim reply to: hello. "), "{text}");
        assert!(
            message["usage"]["input_tokens"]
                .as_u64()
                .is_some_and(|n| n > 0)
        );
    }

    #[test]
    fn tools_are_answered_with_a_tool_use_block() {
        let message = answer_to(json!({"model": "claude", "max_tokens": 50,
            "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "find it"}]}));
        assert_eq!(message["stop_reason"], "tool_use");
        let block = &message["content"][0];
        assert_eq!(
            (&block["type"], &block["name"]),
            (&"tool_use".into(), &"lookup".into())
        );
        assert_eq!(block["input"], json!({"input": "find it"}));
        assert!(
            block["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("call_"))
        );
    }

    #[test]
    fn untranslatable_requests_are_anthropic_400s() {
        let err = chat_request(
            br#"{"model":"c","max_tokens":5,"top_k":3,"messages":[{"role":"user","content":"x"}]}"#,
            anthropic::request_to_openai,
        )
        .expect_err("top_k has no OpenAI equivalent");
        let response = from_openai(body::error(&err), "m", &conn());
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = serde_json::from_slice(&full_body(response)).expect("JSON");
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("top_k"))
        );
    }

    #[test]
    fn an_overload_is_a_529_overloaded_error() {
        let err = ApiError::Injected {
            status: 529,
            billed_tokens: 0,
        };
        let response = from_openai(body::error(&err), "m", &conn());
        assert_eq!(response.status().as_u16(), 529);
        let body: Value = serde_json::from_slice(&full_body(response)).expect("JSON");
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "overloaded_error");
    }

    #[tokio::test]
    async fn streams_become_events_and_a_cut_stays_a_cut() {
        let chunks = [
            r#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ];
        let whole = body::event_stream(openai_stream(&chunks, false));
        let (text, cut) = collect(from_openai(whole, "m", &conn())).await;
        assert!(cut.is_none());
        let names: Vec<&str> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.lines().next().unwrap_or("").trim_start_matches("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let cut_short = body::event_stream(openai_stream(&chunks[..2], true));
        let (text, cut) = collect(from_openai(cut_short, "m", &conn())).await;
        assert!(cut.is_some(), "the cut reaches the client");
        assert!(text.contains("content_block_delta") && !text.contains("message_stop"));
    }

    #[test]
    fn count_tokens_counts_the_translated_prompt() {
        let request = chat_request(
            br#"{"model":"c","system":"be brief","messages":[{"role":"user","content":"hello"}]}"#,
            anthropic::count_tokens_request,
        )
        .expect("translates");
        let openai = ChatRequest::parse(
            br#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello"}]}"#,
        )
        .expect("valid");
        assert_eq!(
            prompt_tokens(&request.messages),
            prompt_tokens(&openai.messages)
        );
    }
}
