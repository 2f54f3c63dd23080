//! Google's Gemini API: `POST /v1beta/models/{model}:generateContent` and
//! `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`.
//!
//! The model comes from the path and streaming from the method in it (a stream always reports
//! usage, as Gemini's do). The key is read from `x-goog-api-key`, else the `key` query
//! parameter. Answers are `providers::gemini`'s translations of the OpenAI path's: a
//! `GenerateContentResponse`, one `data: JSON\n\n` event per OpenAI chunk that carries
//! something (no `[DONE]`: a Gemini stream just ends), or `{"error":{"code","message",
//! "status"}}`. `streamGenerateContent` without `alt=sse` would be a JSON array on Gemini;
//! the simulator answers it 400 so a client that forgot `alt=sse` sees it.
//!
//! Gemini sends a function call whole, while the OpenAI stream sends its arguments in pieces:
//! the pieces are gathered ([`ToolCalls`]) and the whole call rides on the choice's finish
//! chunk.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::Value;

use super::{chat_request, error_response, json_response, push_data, query_param, reframe};
use crate::providers::gemini as translate;
use crate::sim::api;
use crate::sim::body::{self, SimBody};
use crate::sim::conn::ConnControl;
use crate::sim::error::ApiError;
use crate::sim::state::SimState;

/// The header Gemini reads the API key from.
const KEY_HEADER: &str = "x-goog-api-key";

/// `POST /v1beta/models/{model}:generateContent` (`stream` false) or
/// `:streamGenerateContent` (`stream` true).
pub async fn gemini(
    request: Request<Incoming>,
    state: Arc<SimState>,
    conn: &ConnControl,
    model: String,
    stream: bool,
) -> Response<SimBody> {
    api::count_chat(&state);
    let query = request.uri().query().map(str::to_owned);
    let key = api::header(&request, KEY_HEADER).or_else(|| query_param(query.as_deref(), "key"));
    let bytes = match api::receive(request, &state).await {
        Ok(bytes) => bytes,
        Err(err) => return error_response(body::error(&err), translate::error_body, conn),
    };
    if stream && query_param(query.as_deref(), "alt").as_deref() != Some("sse") {
        let err = ApiError::InvalidRequest(
            "the simulator streams only server-sent events: add ?alt=sse".into(),
        );
        return error_response(body::error(&err), translate::error_body, conn);
    }
    let parsed = chat_request(&bytes, |gemini| {
        let mut openai = translate::request_to_openai(gemini, &model)?;
        if stream && let Some(object) = openai.as_object_mut() {
            object.insert("stream".into(), true.into());
            object.insert(
                "stream_options".into(),
                serde_json::json!({"include_usage": true}),
            );
        }
        Ok(openai)
    });
    let answer = api::answer_chat(parsed, key.as_deref(), state, conn).await;
    from_openai(answer, conn)
}

/// The OpenAI path's answer → Gemini's.
fn from_openai(answer: Response<SimBody>, conn: &ConnControl) -> Response<SimBody> {
    if !answer.status().is_success() {
        return error_response(answer, translate::error_body, conn);
    }
    let (parts, old) = answer.into_parts();
    match old {
        SimBody::Stream(stream) => {
            let mut calls = ToolCalls::default();
            let stream = reframe(stream, move |payload, out| {
                let Ok(mut chunk) = serde_json::from_str::<Value>(payload) else {
                    // `[DONE]`: a Gemini stream just ends.
                    return;
                };
                calls.gather(&mut chunk);
                if let Some(event) = translate::chunk_from_openai(&chunk) {
                    push_data(out, &event);
                }
            });
            Response::from_parts(parts, SimBody::Stream(stream))
        }
        full @ SimBody::Full(_) => json_response(
            Response::from_parts(parts, full),
            translate::response_from_openai,
        ),
    }
}

/// The tool calls of a stream being gathered, by choice and call index.
#[derive(Debug, Default)]
struct ToolCalls {
    /// Each call as its first chunk had it, with the argument pieces appended so far.
    pending: BTreeMap<(u64, u64), Value>,
}

impl ToolCalls {
    /// Takes the tool-call pieces out of `chunk`'s choices, and puts the whole calls of a
    /// choice back on its finish chunk.
    fn gather(&mut self, chunk: &mut Value) {
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            return;
        };
        for choice in choices {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let pieces = choice
                .get_mut("delta")
                .and_then(Value::as_object_mut)
                .and_then(|delta| delta.remove("tool_calls"));
            if let Some(Value::Array(pieces)) = pieces {
                for piece in pieces {
                    self.add(index, piece);
                }
            }
            let finished = choice.get("finish_reason").is_some_and(|r| !r.is_null());
            if finished {
                let whole: Vec<Value> = self.take(index);
                if let (false, Some(delta)) = (whole.is_empty(), choice.get_mut("delta")) {
                    delta["tool_calls"] = Value::Array(whole);
                }
            }
        }
    }

    /// One piece of a call of choice `choice`.
    fn add(&mut self, choice: u64, piece: Value) {
        let call = piece.get("index").and_then(Value::as_u64).unwrap_or(0);
        let arguments = |v: &Value| {
            v.get("function")
                .and_then(|f| f.get("arguments"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        match self.pending.get_mut(&(choice, call)) {
            None => {
                self.pending.insert((choice, call), piece);
            }
            Some(whole) => {
                let more = arguments(&piece).unwrap_or_default();
                let mut joined = arguments(whole).unwrap_or_default();
                joined.push_str(&more);
                if let Some(function) = whole.get_mut("function").and_then(Value::as_object_mut) {
                    function.insert("arguments".into(), joined.into());
                }
            }
        }
    }

    /// The whole calls of choice `choice`, in call order, forgotten.
    fn take(&mut self, choice: u64) -> Vec<Value> {
        let keys: Vec<(u64, u64)> = self
            .pending
            .range((choice, 0)..=(choice, u64::MAX))
            .map(|(key, _)| *key)
            .collect();
        keys.iter()
            .filter_map(|key| self.pending.remove(key))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{collect, conn, full_body, openai_stream};
    use super::*;
    use crate::sim::chat;
    use crate::sim::config::SimConfig;
    use http::StatusCode;
    use serde_json::json;

    fn answer_to(gemini: Value) -> Value {
        let state = SimState::new(&SimConfig::default());
        let request = chat_request(gemini.to_string().as_bytes(), |g| {
            translate::request_to_openai(g, "gemini-test")
        })
        .expect("translates");
        let reply = chat::accept(&request, &state, Default::default());
        let response = from_openai(chat::respond(&request, &reply, &state), &conn());
        assert_eq!(response.status(), StatusCode::OK);
        serde_json::from_slice(&full_body(response)).expect("JSON")
    }

    #[test]
    fn a_text_answer_is_a_generate_content_response() {
        let answer =
            answer_to(json!({"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}));
        let candidate = &answer["candidates"][0];
        assert_eq!(candidate["finishReason"], "STOP");
        assert_eq!(candidate["content"]["role"], "model");
        let text = candidate["content"]["parts"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(text.starts_with("sim reply to: hello. "), "{text}");
        assert_eq!(answer["modelVersion"], "gemini-test");
        assert!(
            answer["usageMetadata"]["promptTokenCount"]
                .as_u64()
                .is_some_and(|n| n > 0)
        );
    }

    #[test]
    fn tools_are_answered_with_a_function_call() {
        let answer = answer_to(json!({
            "contents": [{"role": "user", "parts": [{"text": "find it"}]}],
            "tools": [{"functionDeclarations": [{"name": "lookup"}]}],
        }));
        let call = &answer["candidates"][0]["content"]["parts"][0]["functionCall"];
        assert_eq!(call["name"], "lookup");
        assert_eq!(call["args"], json!({"input": "find it"}));
    }

    #[test]
    fn errors_are_google_shaped() {
        let err = ApiError::RateLimited { retry_after_s: 2 };
        let response = from_openai(body::error(&err), &conn());
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "2");
        let body: Value = serde_json::from_slice(&full_body(response)).expect("JSON");
        assert_eq!(body["error"]["code"], 429);
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
    }

    #[tokio::test]
    async fn a_streamed_tool_call_arrives_whole_on_the_finish_event() {
        let chunks = [
            r#"{"id":"c","model":"g","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}"#,
            r#"{"id":"c","model":"g","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"lookup","arguments":""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","model":"g","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"input\""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","model":"g","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":\"x\"}"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","model":"g","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"c","model":"g","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#,
            "[DONE]",
        ];
        let response = from_openai(body::event_stream(openai_stream(&chunks, false)), &conn());
        let (text, cut) = collect(response).await;
        assert!(cut.is_none());
        let events: Vec<Value> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.trim_start_matches("data: ")).expect("JSON event"))
            .collect();
        assert_eq!(
            events.len(),
            2,
            "the finish event and the usage event: {events:?}"
        );
        let candidate = &events[0]["candidates"][0];
        assert_eq!(candidate["finishReason"], "STOP");
        let call = &candidate["content"]["parts"][0]["functionCall"];
        assert_eq!(call["args"], json!({"input": "x"}));
        assert_eq!(
            (&call["id"], &call["name"]),
            (&"call_1".into(), &"lookup".into())
        );
        assert_eq!(events[1]["usageMetadata"]["totalTokenCount"], 8);
        assert!(!text.contains("[DONE]"));
    }
}
