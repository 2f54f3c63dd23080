//! Chat completion responses: upstream JSON → [`ChatResponse`] and back out for the client.

use serde_json::{Map, Value};

use super::request::message_to_json;
use super::{extra_map, extra_string};
use crate::wit::{ChatResponse, Choice, Content, Message, Usage};

/// Parses an upstream `chat.completion` body; `None` when it is not one.
pub fn parse_response(body: &[u8]) -> Option<ChatResponse> {
    parse_response_value(serde_json::from_slice::<Value>(body).ok()?)
}

/// [`parse_response`] of a body already parsed (a translated provider answer).
pub fn parse_response_value(value: Value) -> Option<ChatResponse> {
    let Value::Object(mut obj) = value else {
        return None;
    };
    let choices = match obj.remove("choices") {
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| parse_choice(i, item))
            .collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    let id = take_string(&mut obj, "id").unwrap_or_default();
    let model = take_string(&mut obj, "model").unwrap_or_default();
    let created = obj.remove("created").and_then(|v| v.as_u64()).unwrap_or(0);
    let usage = obj.remove("usage").and_then(|v| parse_usage(&v));
    obj.remove("object");
    Some(ChatResponse {
        id,
        model,
        created,
        choices,
        usage,
        extra: extra_string(obj),
    })
}

fn parse_choice(position: usize, value: Value) -> Option<Choice> {
    let Value::Object(mut obj) = value else {
        return None;
    };
    let index = obj
        .remove("index")
        .and_then(|v| v.as_u64())
        .and_then(|i| u32::try_from(i).ok())
        .unwrap_or(position as u32);
    let message = match obj.remove("message") {
        Some(Value::Object(m)) if tool_calls_ok(&m) => parse_message(m),
        _ => return None,
    };
    let finish_reason = match obj.remove("finish_reason") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    Some(Choice {
        index,
        message,
        finish_reason,
        extra: extra_string(obj),
    })
}

/// Whether a message's `tool_calls`, if any, are calls a client can act on: a list of objects,
/// each a function call with a non-empty string name and string arguments (or a call of
/// another named type), its id a string when given. A numeric name, object arguments or a
/// stray string were passed on as a 200, and the Anthropic and Responses fronts made them
/// calls of a tool named "" (third probe, A5); now the answer is a broken reply.
fn tool_calls_ok(message: &Map<String, Value>) -> bool {
    let call_ok = |call: &Value| {
        let Some(call) = call.as_object() else {
            return false;
        };
        let id_ok = call.get("id").is_none_or(Value::is_string);
        let kind = call
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("function");
        let body_ok = match (kind, call.get("function")) {
            ("function", Some(function)) => {
                function["name"].as_str().is_some_and(|n| !n.is_empty())
                    && function["arguments"].is_string()
            }
            ("function", None) => false,
            (_, _) => call.get(kind).is_some_and(Value::is_object),
        };
        id_ok && body_ok
    };
    match message.get("tool_calls") {
        None | Some(Value::Null) => true,
        Some(Value::Array(calls)) => calls.iter().all(call_ok),
        Some(_) => false,
    }
}

fn parse_message(mut obj: Map<String, Value>) -> Message {
    let role = take_string(&mut obj, "role").unwrap_or_else(|| "assistant".to_string());
    let content = match obj.remove("content") {
        Some(Value::String(text)) => Some(Content::Text(text)),
        Some(other @ Value::Array(_)) => {
            // Rare for responses; keep it verbatim rather than guess.
            obj.insert("content".into(), other);
            None
        }
        _ => None,
    };
    let name = take_string(&mut obj, "name");
    Message {
        role,
        content,
        name,
        extra: extra_string(obj),
    }
}

/// Reads OpenAI `usage` (`prompt_tokens`, `completion_tokens`, `total_tokens`,
/// `prompt_tokens_details.cached_tokens`).
pub fn parse_usage(value: &Value) -> Option<Usage> {
    let obj = value.as_object()?;
    let get = |k: &str| {
        obj.get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let prompt_tokens = get("prompt_tokens")?;
    let completion_tokens = get("completion_tokens").unwrap_or(0);
    Some(Usage {
        prompt_tokens,
        completion_tokens,
        // Numbers from an upstream are untrusted: `u32::MAX` prompt tokens must not overflow.
        total_tokens: get("total_tokens")
            .unwrap_or_else(|| prompt_tokens.saturating_add(completion_tokens)),
        cached_tokens: obj
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
            .min(prompt_tokens),
    })
}

/// Of the prompt tokens of an OpenAI `usage`, those written to the provider's prompt cache
/// (`prompt_tokens_details.cache_creation_tokens`, what weir's Anthropic translation puts
/// there; 0 when absent). They are billed at the cache-write price, which the WIT `usage` has
/// no field for, so they travel beside it.
pub fn parse_cache_writes(value: &Value) -> u32 {
    value
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cache_creation_tokens"))
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

pub(crate) fn usage_to_json(usage: &Usage) -> Value {
    let mut value = serde_json::json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    });
    if usage.cached_tokens > 0 {
        value["prompt_tokens_details"] =
            serde_json::json!({ "cached_tokens": usage.cached_tokens });
    }
    value
}

/// Renders a response as the client's `chat.completion` JSON.
pub fn response_to_json(response: &ChatResponse) -> Value {
    let mut obj = extra_map(&response.extra);
    obj.insert("id".into(), Value::String(response.id.clone()));
    obj.insert("object".into(), Value::String("chat.completion".into()));
    obj.insert("created".into(), response.created.into());
    obj.insert("model".into(), Value::String(response.model.clone()));
    obj.insert(
        "choices".into(),
        Value::Array(
            response
                .choices
                .iter()
                .map(|choice| {
                    let mut c = extra_map(&choice.extra);
                    c.insert("index".into(), choice.index.into());
                    c.insert("message".into(), message_to_json(&choice.message));
                    c.insert(
                        "finish_reason".into(),
                        choice
                            .finish_reason
                            .clone()
                            .map(Value::String)
                            .unwrap_or(Value::Null),
                    );
                    Value::Object(c)
                })
                .collect(),
        ),
    );
    if let Some(usage) = &response.usage {
        obj.insert("usage".into(), usage_to_json(usage));
    }
    Value::Object(obj)
}

fn take_string(obj: &mut Map<String, Value>, key: &str) -> Option<String> {
    match obj.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_response_round_trips() {
        let body = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "refusal": null},
                          "finish_reason": "stop", "logprobs": null}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            "system_fingerprint": "fp"
        });
        let response = parse_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(response_to_json(&response), body);
    }

    #[test]
    fn tool_calls_a_client_cannot_act_on_make_the_answer_broken() {
        let with = |calls: Value| {
            let body = json!({
                "id": "c", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "finish_reason": "tool_calls",
                             "message": {"role": "assistant", "content": null, "tool_calls": calls}}],
            });
            parse_response(body.to_string().as_bytes())
        };
        let good = json!({"id": "t1", "type": "function",
                          "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}});
        let custom = json!({"id": "t2", "type": "custom", "custom": {"name": "sh", "input": "ls"}});
        assert!(with(json!([good, custom])).is_some());
        assert!(with(json!([])).is_some());
        for bad in [
            json!([{"id": null, "type": "function", "function": {"name": "f", "arguments": "{}"}}]),
            json!([{"id": "t", "type": "function", "function": {"name": 5, "arguments": "{}"}}]),
            json!([{"id": "t", "type": "function", "function": {"name": "", "arguments": "{}"}}]),
            json!([{"id": "t", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]),
            json!([{"id": "t", "type": "function"}]),
            json!(["garbage"]),
            json!("garbage"),
        ] {
            assert!(with(bad.clone()).is_none(), "{bad}");
        }
    }

    #[test]
    fn absurd_usage_saturates_instead_of_overflowing() {
        let max = u64::from(u32::MAX);
        for usage in [
            json!({"prompt_tokens": max, "completion_tokens": 1}),
            json!({"prompt_tokens": max, "completion_tokens": max, "total_tokens": 5}),
        ] {
            let parsed = parse_usage(&usage).unwrap();
            assert_eq!(parsed.prompt_tokens, u32::MAX);
        }
        let parsed = parse_usage(&json!({"prompt_tokens": max, "completion_tokens": 1})).unwrap();
        assert_eq!(parsed.total_tokens, u32::MAX);
        // Beyond u32 a count is not believed at all.
        assert!(parse_usage(&json!({"prompt_tokens": max + 1})).is_none());
    }
}
