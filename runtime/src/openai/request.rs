//! Chat completion requests: client JSON → [`ChatRequest`] and back out for the upstream.

use serde_json::{Map, Value};

use super::{ApiError, extra_map, extra_string};
use crate::wit::{ChatRequest, Content, ContentPart, Message};

/// Parses a client's `/v1/chat/completions` body. Unknown fields go to `extra`.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|err| ApiError::invalid_json(&err))?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::invalid(
            "invalid_request",
            None,
            "the request body must be a JSON object",
        ));
    };
    let model = match obj.remove("model") {
        Some(Value::String(model)) if !model.is_empty() => model,
        Some(_) => return Err(expected("model", "a non-empty string")),
        None => return Err(missing("model")),
    };
    let messages = match obj.remove("messages") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| parse_message(i, item))
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(_)) => return Err(expected("messages", "a non-empty array")),
        Some(_) => return Err(expected("messages", "an array of messages")),
        None => return Err(missing("messages")),
    };
    let temperature = take_f64(&mut obj, "temperature")?;
    let top_p = take_f64(&mut obj, "top_p")?;
    let max_tokens = match take_u32(&mut obj, "max_tokens")? {
        Some(n) => Some(n),
        None => match obj.get("max_completion_tokens") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                as_u32(v)
                    .ok_or_else(|| expected("max_completion_tokens", "a non-negative integer"))?,
            ),
        },
    };
    let stream = match obj.remove("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(expected("stream", "a boolean")),
    };
    // OpenAI refuses a `stream_options` that is not an object (or an `include_usage` that
    // is not a boolean) with a 400; so does weir, instead of replacing it unseen. Its other
    // keys are a provider's own (vLLM's `continuous_usage_stats`) and go along.
    match obj.get("stream_options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(options)) => {
            if options
                .get("include_usage")
                .is_some_and(|v| !v.is_boolean() && !v.is_null())
            {
                return Err(expected("stream_options.include_usage", "a boolean"));
            }
        }
        Some(_) => return Err(expected("stream_options", "an object")),
    }
    let user = match obj.remove("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(expected("user", "a string")),
    };
    // `metadata` is modelled when it is an object of strings (OpenAI's shape); anything else
    // passes through untouched in `extra`.
    let metadata = match obj.get("metadata") {
        Some(Value::Object(map)) if map.values().all(Value::is_string) => {
            let pairs = map
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            obj.remove("metadata");
            pairs
        }
        _ => Vec::new(),
    };
    Ok(ChatRequest {
        model,
        messages,
        temperature,
        top_p,
        max_tokens,
        stream,
        user,
        metadata,
        extra: extra_string(obj),
    })
}

fn parse_message(index: usize, value: Value) -> Result<Message, ApiError> {
    let param = |field: &str| format!("messages[{index}].{field}");
    let Value::Object(mut obj) = value else {
        return Err(expected(&format!("messages[{index}]"), "an object"));
    };
    let role = match obj.remove("role") {
        Some(Value::String(role)) if !role.is_empty() => role,
        _ => return Err(expected(&param("role"), "a non-empty string")),
    };
    let content = match obj.remove("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(Content::Text(text)),
        Some(Value::Array(parts)) => Some(Content::Parts(
            parts
                .into_iter()
                .enumerate()
                .map(|(j, part)| parse_part(index, j, part))
                .collect::<Result<_, _>>()?,
        )),
        Some(_) => {
            return Err(expected(
                &param("content"),
                "a string, an array of parts or null",
            ));
        }
    };
    let name = match obj.remove("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name),
        Some(_) => return Err(expected(&param("name"), "a string")),
    };
    Ok(Message {
        role,
        content,
        name,
        extra: extra_string(obj),
    })
}

fn parse_part(index: usize, j: usize, value: Value) -> Result<ContentPart, ApiError> {
    let Value::Object(mut obj) = value else {
        return Err(expected(
            &format!("messages[{index}].content[{j}]"),
            "an object",
        ));
    };
    let kind = match obj.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => {
            return Err(expected(
                &format!("messages[{index}].content[{j}].type"),
                "a string",
            ));
        }
    };
    let text = if kind == "text" {
        match obj.remove("text") {
            Some(Value::String(text)) => Some(text),
            _ => {
                return Err(expected(
                    &format!("messages[{index}].content[{j}].text"),
                    "a string",
                ));
            }
        }
    } else {
        None
    };
    Ok(ContentPart {
        kind,
        text,
        extra: extra_string(obj),
    })
}

/// Renders a request as the JSON body sent upstream: `model` replaced by `model` when given,
/// and `stream_options.include_usage` forced on for streams so usage is never lost.
pub fn request_to_json(request: &ChatRequest, model: Option<&str>) -> Value {
    request_json(request, model, request.stream)
}

/// [`request_to_json`], asking for a stream when `stream` (a JSON request sent to a target
/// with `stream_json`, whose answer is assembled from the stream).
pub fn request_json(request: &ChatRequest, model: Option<&str>, stream: bool) -> Value {
    let mut obj = extra_map(&request.extra);
    obj.insert(
        "model".into(),
        Value::String(model.unwrap_or(&request.model).to_string()),
    );
    obj.insert(
        "messages".into(),
        Value::Array(request.messages.iter().map(message_to_json).collect()),
    );
    if let Some(t) = request.temperature {
        obj.insert("temperature".into(), f64_value(t));
    }
    if let Some(p) = request.top_p {
        obj.insert("top_p".into(), f64_value(p));
    }
    if let Some(n) = request.max_tokens {
        // Keep the client's spelling: `max_completion_tokens` stays in `extra` when used.
        if obj.contains_key("max_completion_tokens") {
            obj.insert("max_completion_tokens".into(), n.into());
        } else {
            obj.insert("max_tokens".into(), n.into());
        }
    }
    if stream {
        obj.insert("stream".into(), Value::Bool(true));
        // Whatever the client sent (`null`, a non-object, `include_usage: false`): weir's
        // cost needs the usage chunk; the client gets it only if it asked.
        let options = obj
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if !options.is_object() {
            *options = Value::Object(Map::new());
        }
        if let Value::Object(options) = options {
            options.insert("include_usage".into(), Value::Bool(true));
        }
    }
    if let Some(user) = &request.user {
        obj.insert("user".into(), Value::String(user.clone()));
    }
    if !request.metadata.is_empty() {
        let map = request
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        obj.insert("metadata".into(), Value::Object(map));
    }
    Value::Object(obj)
}

/// A message as OpenAI JSON.
pub(crate) fn message_to_json(message: &Message) -> Value {
    let mut obj = extra_map(&message.extra);
    obj.insert("role".into(), Value::String(message.role.clone()));
    let content = match &message.content {
        None => Value::Null,
        Some(Content::Text(text)) => Value::String(text.clone()),
        Some(Content::Parts(parts)) => Value::Array(
            parts
                .iter()
                .map(|part| {
                    let mut p = extra_map(&part.extra);
                    p.insert("type".into(), Value::String(part.kind.clone()));
                    if let Some(text) = &part.text {
                        p.insert("text".into(), Value::String(text.clone()));
                    }
                    Value::Object(p)
                })
                .collect(),
        ),
    };
    obj.insert("content".into(), content);
    if let Some(name) = &message.name {
        obj.insert("name".into(), Value::String(name.clone()));
    }
    Value::Object(obj)
}

fn f64_value(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn take_f64(obj: &mut Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(expected(key, "a number")),
    }
}

fn take_u32(obj: &mut Map<String, Value>, key: &str) -> Result<Option<u32>, ApiError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_u32(&v)
            .map(Some)
            .ok_or_else(|| expected(key, "a non-negative integer")),
    }
}

fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn expected(param: &str, what: &str) -> ApiError {
    ApiError::invalid(
        "invalid_type",
        Some(param),
        format!("`{param}` must be {what}"),
    )
}

fn missing(param: &str) -> ApiError {
    ApiError::invalid(
        "missing_required_parameter",
        Some(param),
        format!("missing required parameter: `{param}`"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_round_trip_verbatim() {
        let body = json!({
            "model": "demo",
            "messages": [
                {"role": "user", "content": "hi", "x_custom": 1},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "http://x"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1"}]}
            ],
            "temperature": 0.5,
            "max_completion_tokens": 20,
            "tools": [{"type": "function"}],
            "seed": 7,
            "metadata": {"team": "edge"}
        });
        let request = parse_request(body.to_string().as_bytes()).unwrap();
        assert_eq!(request.max_tokens, Some(20));
        assert_eq!(
            request.metadata,
            vec![("team".to_string(), "edge".to_string())]
        );
        let back = request_to_json(&request, None);
        assert_eq!(back, body);
    }

    #[test]
    fn bad_input_gets_a_precise_error() {
        assert_eq!(parse_request(b"{").unwrap_err().code, "invalid_json");
        assert_eq!(parse_request(b"[]").unwrap_err().code, "invalid_request");
        let err = parse_request(br#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("model"));
        let err = parse_request(br#"{"model":"m","messages":[{"role":"user","content":5}]}"#)
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].content"));
        let err = parse_request(br#"{"model":"m","messages":[{"content":"x"}],"max_tokens":-1}"#)
            .unwrap_err();
        assert_eq!(err.status, 400);
    }

    #[test]
    fn streams_always_ask_upstream_for_usage() {
        let request = parse_request(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#,
        )
        .unwrap();
        let upstream = request_to_json(&request, Some("real-model"));
        assert_eq!(upstream["model"], "real-model");
        assert_eq!(upstream["stream_options"]["include_usage"], true);
    }

    #[test]
    fn stream_options_of_the_wrong_shape_are_refused() {
        for (options, param) in [
            (json!(false), "stream_options"),
            (json!("x"), "stream_options"),
            (json!([]), "stream_options"),
            (
                json!({"include_usage": "yes"}),
                "stream_options.include_usage",
            ),
        ] {
            let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                              "stream": true, "stream_options": options});
            let err = parse_request(body.to_string().as_bytes()).unwrap_err();
            assert_eq!(
                (err.status, err.code.as_str()),
                (400, "invalid_type"),
                "{options}"
            );
            assert_eq!(err.param.as_deref(), Some(param), "{options}");
        }
    }

    #[test]
    fn no_stream_options_a_client_sends_stops_the_usage_chunk() {
        for options in [
            json!(null),
            json!({"include_usage": false}),
            json!({"include_usage": null, "other": 1}),
        ] {
            let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                              "stream": true, "stream_options": options});
            let request = parse_request(body.to_string().as_bytes()).unwrap();
            let upstream = request_to_json(&request, None);
            assert_eq!(
                upstream["stream_options"]["include_usage"], true,
                "{options}: {upstream}"
            );
            if options.is_object() {
                // The client's other options go along.
                let mut expected = options.as_object().unwrap().clone();
                expected.insert("include_usage".into(), json!(true));
                assert_eq!(upstream["stream_options"], Value::Object(expected));
            }
        }
        // A stage's request may carry anything there: weir's own options replace it.
        let mut request = parse_request(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#,
        )
        .unwrap();
        request.extra = r#"{"stream_options":"off"}"#.into();
        assert_eq!(
            request_to_json(&request, None)["stream_options"],
            json!({"include_usage": true})
        );
        // Not a stream: nothing is added.
        let request = parse_request(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":null}"#,
        )
        .unwrap();
        assert_eq!(
            request_to_json(&request, None)["stream_options"],
            json!(null)
        );
    }
}
