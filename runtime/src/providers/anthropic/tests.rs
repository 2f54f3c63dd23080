//! Tests of the Anthropic translation: golden files, round trips, untranslatable fields and
//! fuzzing.

use super::stream::CUT_SHORT;
use super::*;
use crate::providers::translate::{ToOpenAiStream, Untranslatable};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

// ---- helpers ------------------------------------------------------------------------

fn golden(text: &str) -> Value {
    serde_json::from_str(text).expect("golden file is JSON")
}

/// `created` is the current time; goldens hold 0.
fn zero_created(mut value: Value) -> Value {
    if let Some(o) = value.as_object_mut()
        && o.contains_key("created")
    {
        o.insert("created".into(), json!(0));
    }
    value
}

/// Runs Anthropic stream events through [`StreamToOpenAi`]: chunks as JSON, `[DONE]` as a
/// string.
fn run_stream(events: &[Value]) -> Vec<Value> {
    let mut stream = StreamToOpenAi::new();
    let mut out = Vec::new();
    for event in events {
        for payload in stream.push(&event.to_string()).expect("event translates") {
            out.push(match payload.as_str() {
                "[DONE]" => json!("[DONE]"),
                _ => zero_created(serde_json::from_str(&payload).expect("chunk is JSON")),
            });
        }
    }
    assert_eq!(stream.finish(), Ok(vec![]));
    out
}

fn front_events(stream: &mut StreamFromOpenAi, chunks: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend(
            stream
                .push(chunk)
                .into_iter()
                .map(|(e, d)| json!({"event": e, "data": d})),
        );
    }
    out.extend(
        stream
            .finish()
            .into_iter()
            .map(|(e, d)| json!({"event": e, "data": d})),
    );
    out
}

fn param_of(result: Result<Value, Untranslatable>) -> String {
    result.expect_err("untranslatable").param
}

fn user(content: Value) -> Value {
    json!({"role": "user", "content": content})
}

/// A minimal OpenAI request with `extra` fields merged in.
fn openai_with(extra: Value) -> Value {
    let mut request = json!({"model": "m", "messages": [user(json!("hi"))], "max_tokens": 10});
    if let (Some(r), Some(e)) = (request.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    request
}

/// A minimal Anthropic request with `extra` fields merged in.
fn anthropic_with(extra: Value) -> Value {
    openai_with(extra)
}

// ---- golden files ---------------------------------------------------------------------

const REQUEST_GOLDENS: &[&str] = &[
    include_str!("golden/request_plain_text.json"),
    include_str!("golden/request_multi_turn_system.json"),
    include_str!("golden/request_tools.json"),
    include_str!("golden/request_images.json"),
    include_str!("golden/request_json_schema.json"),
];

const RESPONSE_GOLDENS: &[&str] = &[
    include_str!("golden/response_text.json"),
    include_str!("golden/response_tool_use.json"),
    include_str!("golden/response_cached_usage.json"),
];

const STREAM_GOLDENS: &[&str] = &[
    include_str!("golden/stream_text.json"),
    include_str!("golden/stream_tool_use.json"),
];

const FRONT_REQUEST_GOLDENS: &[&str] = &[
    include_str!("golden/front_request.json"),
    include_str!("golden/front_request_output_format.json"),
];

#[test]
fn openai_requests_become_the_golden_anthropic_requests() {
    for text in REQUEST_GOLDENS {
        let g = golden(text);
        let model = g["model"].as_str().expect("model");
        let got = request_from_openai(&g["openai"], model).expect("translates");
        assert_eq!(got, g["anthropic"], "{}", g["_doc"]);
        if g["round_trip"] == json!(true) {
            assert_eq!(
                request_to_openai(&got),
                Ok(g["openai"].clone()),
                "{}",
                g["_doc"]
            );
        }
    }
}

#[test]
fn anthropic_messages_become_the_golden_openai_completions() {
    for text in RESPONSE_GOLDENS {
        let g = golden(text);
        let got = response_to_openai(&g["anthropic"]).expect("translates");
        assert_eq!(zero_created(got), g["openai"], "{}", g["_doc"]);
        if g["round_trip"] == json!(true) {
            assert_eq!(
                response_from_openai(&g["openai"]),
                g["anthropic"],
                "{}",
                g["_doc"]
            );
        }
    }
}

#[test]
fn anthropic_streams_become_the_golden_openai_chunks_event_by_event() {
    for text in STREAM_GOLDENS {
        let g = golden(text);
        let events = g["events"].as_array().expect("events");
        assert_eq!(json!(run_stream(events)), g["chunks"], "{}", g["_doc"]);
    }
}

#[test]
fn anthropic_client_requests_become_the_golden_openai_requests() {
    for text in FRONT_REQUEST_GOLDENS {
        let g = golden(text);
        assert_eq!(
            request_to_openai(&g["anthropic"]),
            Ok(g["openai"].clone()),
            "{}",
            g["_doc"]
        );
    }
}

#[test]
fn an_openai_completion_becomes_the_golden_anthropic_message() {
    let g = golden(include_str!("golden/front_response.json"));
    assert_eq!(response_from_openai(&g["openai"]), g["anthropic"]);
}

#[test]
fn openai_chunks_become_the_golden_anthropic_events() {
    let g = golden(include_str!("golden/front_stream.json"));
    let mut stream = StreamFromOpenAi::new(g["model"].as_str().expect("model"));
    let chunks = g["chunks"].as_array().expect("chunks");
    assert_eq!(json!(front_events(&mut stream, chunks)), g["events"]);
}

#[test]
fn error_bodies_carry_the_anthropic_error_type_for_each_status() {
    let g = golden(include_str!("golden/errors.json"));
    for case in g["cases"].as_array().expect("cases") {
        let status = u16::try_from(case["status"].as_u64().expect("status")).expect("u16");
        let message = case["message"].as_str().expect("message");
        assert_eq!(error_body(status, message), case["body"], "status {status}");
    }
}

// ---- round trips ------------------------------------------------------------------------

/// OpenAI requests every field of which Anthropic can carry, in the shape the front
/// produces.
fn representable_requests() -> Vec<Value> {
    let weather = json!({"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": true}});
    vec![
        json!({"model": "m", "messages": [user(json!("Hello"))], "max_tokens": 5}),
        json!({"model": "m", "max_tokens": 100, "temperature": 0, "top_p": 0.5,
        "stop": ["a", "b"], "user": "u-1", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [
            {"role": "system", "content": "Be kind."},
            user(json!("Hi")),
            {"role": "assistant", "content": "Hello!"},
            user(json!([{"type": "text", "text": "Cached", "cache_control": {"type": "ephemeral"}}])),
        ]}),
        json!({"model": "m", "max_tokens": 100,
            "messages": [
                {"role": "system", "content": [
                    {"type": "text", "text": "one"},
                    {"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}}]},
                user(json!("weather?")),
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "t2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "no city"}], "is_error": true},
                user(json!([{"type": "text", "text": "thanks"}])),
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "t3", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
                {"role": "tool", "tool_call_id": "t3", "content": "rain", "is_error": false},
            ],
            "tools": [weather.clone()],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false}),
        json!({"model": "m", "max_tokens": 1, "messages": [user(json!("x"))],
            "tools": [weather], "tool_choice": "required"}),
        json!({"model": "m", "max_tokens": 1, "messages": [user(json!("x"))], "tool_choice": "none"}),
        json!({"model": "m", "max_tokens": 1, "messages": [user(json!([
                {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg=="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.gif"}, "cache_control": {"type": "ephemeral"}}]))],
            "response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}}}}),
    ]
}

#[test]
fn representable_openai_requests_survive_a_round_trip_through_anthropic() {
    for request in representable_requests() {
        let anthropic = request_from_openai(&request, "m").expect("translates");
        assert_eq!(
            request_to_openai(&anthropic),
            Ok(request.clone()),
            "via {anthropic}"
        );
    }
}

#[test]
fn completions_survive_a_round_trip_through_anthropic_messages() {
    let completion = json!({
        "id": "msg_1", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":[1,2]}"}}]}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57,
            "prompt_tokens_details": {"cached_tokens": 20, "cache_creation_tokens": 10}}});
    let message = response_from_openai(&completion);
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 20, "cache_read_input_tokens": 20,
        "cache_creation_input_tokens": 10, "output_tokens": 7})
    );
    let back = response_to_openai(&message).expect("translates");
    assert_eq!(zero_created(back), completion);
}

#[test]
fn a_stream_survives_a_round_trip_through_anthropic_events() {
    let g = golden(include_str!("golden/front_stream.json"));
    let events: Vec<Value> = g["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["data"].clone())
        .collect();
    let chunks = run_stream(&events);
    let mut text = String::new();
    let mut arguments = BTreeMap::<u64, String>::new();
    let mut finish = Value::Null;
    for chunk in chunks.iter().filter(|c| c.is_object()) {
        let Some(choice) = chunk["choices"].get(0) else {
            assert_eq!(chunk["usage"]["prompt_tokens"], json!(120));
            assert_eq!(chunk["usage"]["completion_tokens"], json!(45));
            assert_eq!(
                chunk["usage"]["prompt_tokens_details"]["cached_tokens"],
                json!(100)
            );
            continue;
        };
        text.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let k = call["index"].as_u64().expect("index");
            let piece = call["function"]["arguments"].as_str().unwrap_or("");
            arguments.entry(k).or_default().push_str(piece);
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    assert_eq!(text, "Let me check.");
    assert_eq!(
        arguments.get(&0).map(String::as_str),
        Some("{\"location\":\"Paris\"}")
    );
    assert_eq!(
        arguments.get(&1).map(String::as_str),
        Some("{\"location\":\"Rome\"}")
    );
    assert_eq!(finish, json!("tool_calls"));
    assert_eq!(chunks.last(), Some(&json!("[DONE]")));
}

// ---- behind: requests ---------------------------------------------------------------------

#[test]
fn a_request_without_max_tokens_gets_the_default() {
    let request = json!({"model": "x", "messages": [user(json!("hi"))]});
    let anthropic = request_from_openai(&request, "claude").expect("translates");
    assert_eq!(anthropic["max_tokens"], json!(DEFAULT_MAX_TOKENS));
    assert_eq!(anthropic["model"], json!("claude"));
}

#[test]
fn max_completion_tokens_wins_over_max_tokens() {
    let request = openai_with(json!({"max_completion_tokens": 77}));
    assert_eq!(
        request_from_openai(&request, "m").expect("ok")["max_tokens"],
        json!(77)
    );
}

#[test]
fn a_stop_string_becomes_one_stop_sequence() {
    let request = openai_with(json!({"stop": "END"}));
    assert_eq!(
        request_from_openai(&request, "m").expect("ok")["stop_sequences"],
        json!(["END"])
    );
}

#[test]
fn openai_fields_anthropic_lacks_are_untranslatable_by_name() {
    let cases = [
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("top_logprobs", json!(3)),
        ("seed", json!(7)),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(-1)),
        ("logit_bias", json!({"50256": -100})),
        ("audio", json!({"voice": "alloy"})),
        ("modalities", json!(["text", "audio"])),
        ("prediction", json!({"type": "content", "content": "x"})),
        ("store", json!(true)),
        ("reasoning_effort", json!("high")),
    ];
    for (key, value) in cases {
        let request = openai_with(json!({ key: value }));
        assert_eq!(param_of(request_from_openai(&request, "m")), key);
    }
}

#[test]
fn openai_fields_at_their_defaults_are_accepted() {
    let request = openai_with(json!({"n": 1, "logprobs": false, "presence_penalty": 0,
        "frequency_penalty": 0.0, "logit_bias": {}, "seed": null, "top_logprobs": 0}));
    assert!(request_from_openai(&request, "m").is_ok());
}

#[test]
fn a_temperature_above_one_is_untranslatable() {
    let request = openai_with(json!({"temperature": 1.5}));
    let error = request_from_openai(&request, "m").expect_err("out of range");
    assert_eq!(error.param, "temperature");
    assert!(error.message.contains("0 to 1"));
}

#[test]
fn tool_arguments_that_are_not_a_json_object_are_untranslatable_by_path() {
    for arguments in ["{not json", "[1,2]", "\"text\""] {
        let request = openai_with(json!({"messages": [user(json!("hi")),
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": arguments}}]}]}));
        assert_eq!(
            param_of(request_from_openai(&request, "m")),
            "messages[1].tool_calls[0].function.arguments"
        );
    }
}

#[test]
fn empty_tool_arguments_are_the_empty_object() {
    let request = openai_with(json!({"messages": [user(json!("hi")),
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}]}]}));
    let anthropic = request_from_openai(&request, "m").expect("ok");
    assert_eq!(
        anthropic["messages"][1]["content"],
        json!([{"type": "tool_use", "id": "a", "name": "f", "input": {}}])
    );
}

#[test]
fn content_parts_anthropic_lacks_are_untranslatable_by_path() {
    let audio = json!({"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}});
    let request =
        openai_with(json!({"messages": [user(json!([{"type": "text", "text": "hi"}, audio]))]}));
    let error = request_from_openai(&request, "m").expect_err("audio");
    assert_eq!(error.param, "messages[0].content[1]");
    assert!(error.message.contains("input_audio"));
}

#[test]
fn images_in_system_or_assistant_messages_are_untranslatable() {
    let image = json!({"type": "image_url", "image_url": {"url": "https://x/y.png"}});
    let request = openai_with(
        json!({"messages": [{"role": "system", "content": [image]}, user(json!("hi"))]}),
    );
    assert_eq!(
        param_of(request_from_openai(&request, "m")),
        "messages[0].content[0]"
    );
}

#[test]
fn image_urls_that_are_neither_http_nor_base64_are_untranslatable() {
    for url in [
        "file:///etc/passwd",
        "data:image/png,rawbytes",
        "ftp://x/y.png",
    ] {
        let part = json!({"type": "image_url", "image_url": {"url": url}});
        let request = openai_with(json!({"messages": [user(json!([part]))]}));
        assert_eq!(
            param_of(request_from_openai(&request, "m")),
            "messages[0].content[0].image_url.url"
        );
    }
}

#[test]
fn the_image_detail_hint_is_ignored() {
    let part =
        json!({"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "high"}});
    let request = openai_with(json!({"messages": [user(json!([part]))]}));
    let anthropic = request_from_openai(&request, "m").expect("ok");
    assert_eq!(
        anthropic["messages"][0]["content"],
        json!([{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}])
    );
}

#[test]
fn message_names_and_unknown_message_fields_are_untranslatable() {
    let named =
        openai_with(json!({"messages": [{"role": "user", "content": "hi", "name": "bob"}]}));
    assert_eq!(
        param_of(request_from_openai(&named, "m")),
        "messages[0].name"
    );
    let audio = openai_with(json!({"messages": [user(json!("hi")),
        {"role": "assistant", "content": "x", "audio": {"id": "a"}}]}));
    assert_eq!(
        param_of(request_from_openai(&audio, "m")),
        "messages[1].audio"
    );
    let role =
        openai_with(json!({"messages": [{"role": "function", "content": "x", "name": "f"}]}));
    assert_eq!(
        param_of(request_from_openai(&role, "m")),
        "messages[0].role"
    );
}

#[test]
fn a_tool_result_becomes_a_user_tool_result_block_merged_with_the_next_user_turn() {
    let request = openai_with(json!({"messages": [
        {"role": "tool", "tool_call_id": "t", "content": "42"},
        user(json!("next"))]}));
    let anthropic = request_from_openai(&request, "m").expect("ok");
    assert_eq!(
        anthropic["messages"],
        json!([{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": "42"},
        {"type": "text", "text": "next"}]}])
    );
}

#[test]
fn a_tool_message_without_tool_call_id_is_untranslatable() {
    let request = openai_with(json!({"messages": [{"role": "tool", "content": "42"}]}));
    assert_eq!(
        param_of(request_from_openai(&request, "m")),
        "messages[0].tool_call_id"
    );
}

#[test]
fn one_plain_system_message_becomes_a_system_string() {
    let request = openai_with(
        json!({"messages": [{"role": "developer", "content": "rules"}, user(json!("hi"))]}),
    );
    assert_eq!(
        request_from_openai(&request, "m").expect("ok")["system"],
        json!("rules")
    );
}

#[test]
fn tool_choices_map_to_anthropic_tool_choices() {
    let cases = [
        (json!({"tool_choice": "auto"}), json!({"type": "auto"})),
        (json!({"tool_choice": "none"}), json!({"type": "none"})),
        (json!({"tool_choice": "required"}), json!({"type": "any"})),
        (
            json!({"tool_choice": {"type": "function", "function": {"name": "f"}}}),
            json!({"type": "tool", "name": "f"}),
        ),
        (
            json!({"parallel_tool_calls": false}),
            json!({"type": "auto", "disable_parallel_tool_use": true}),
        ),
        (
            json!({"tool_choice": "required", "parallel_tool_calls": false}),
            json!({"type": "any", "disable_parallel_tool_use": true}),
        ),
        (
            json!({"tool_choice": "none", "parallel_tool_calls": false}),
            json!({"type": "none"}),
        ),
    ];
    for (fields, expected) in cases {
        let anthropic = request_from_openai(&openai_with(fields.clone()), "m").expect("ok");
        assert_eq!(anthropic["tool_choice"], expected, "{fields}");
    }
    let parallel = request_from_openai(&openai_with(json!({"parallel_tool_calls": true})), "m");
    assert_eq!(parallel.expect("ok").get("tool_choice"), None);
}

#[test]
fn a_tool_without_parameters_gets_an_empty_object_schema() {
    let request =
        openai_with(json!({"tools": [{"type": "function", "function": {"name": "now"}}]}));
    assert_eq!(
        request_from_openai(&request, "m").expect("ok")["tools"],
        json!([{"name": "now", "input_schema": {"type": "object", "properties": {}}}])
    );
}

#[test]
fn non_function_tools_are_untranslatable() {
    let request = openai_with(json!({"tools": [{"type": "custom", "custom": {"name": "x"}}]}));
    assert_eq!(
        param_of(request_from_openai(&request, "m")),
        "tools[0].type"
    );
}

#[test]
fn json_mode_becomes_an_object_schema_and_text_format_nothing() {
    let json_mode = request_from_openai(
        &openai_with(json!({"response_format": {"type": "json_object"}})),
        "m",
    );
    assert_eq!(
        json_mode.expect("ok")["output_format"],
        json!({"type": "json_schema", "schema": {"type": "object"}})
    );
    let text = request_from_openai(
        &openai_with(json!({"response_format": {"type": "text"}})),
        "m",
    );
    assert_eq!(text.expect("ok").get("output_format"), None);
}

#[test]
fn stream_options_and_metadata_are_ignored() {
    let request = openai_with(
        json!({"stream": true, "stream_options": {"include_usage": true},
        "metadata": {"team": "a"}}),
    );
    let anthropic = request_from_openai(&request, "m").expect("ok");
    assert_eq!(anthropic.get("metadata"), None);
    assert_eq!(anthropic.get("stream_options"), None);
    assert_eq!(anthropic["stream"], json!(true));
}

#[test]
fn a_request_that_is_not_an_object_or_lacks_messages_is_untranslatable() {
    assert_eq!(param_of(request_from_openai(&json!([1]), "m")), "body");
    assert_eq!(
        param_of(request_from_openai(&json!({"model": "m"}), "m")),
        "messages"
    );
}

// ---- behind: responses -------------------------------------------------------------------

#[test]
fn stop_reasons_map_to_finish_reasons() {
    let cases = [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "stop"),
    ];
    for (anthropic, openai) in cases {
        let message = json!({"id": "msg_1", "model": "c", "content": [], "stop_reason": anthropic,
            "usage": {"input_tokens": 1, "output_tokens": 1}});
        let completion = response_to_openai(&message).expect("ok");
        assert_eq!(
            completion["choices"][0]["finish_reason"],
            json!(openai),
            "{anthropic}"
        );
    }
}

#[test]
fn thinking_blocks_are_skipped_and_only_tool_calls_leave_content_null() {
    let message = json!({"id": "msg_1", "model": "c", "stop_reason": "tool_use", "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "s"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}]});
    let completion = response_to_openai(&message).expect("ok");
    assert_eq!(completion["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(
        completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        json!("{\"a\":1}")
    );
}

#[test]
fn an_anthropic_error_body_or_a_non_message_is_an_error() {
    let error =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    assert_eq!(
        response_to_openai(&error),
        Err("overloaded_error: Overloaded".to_string())
    );
    assert!(response_to_openai(&json!("x")).is_err());
    assert!(response_to_openai(&json!({"id": "x"})).is_err());
}

#[test]
fn the_created_time_is_now() {
    let message = json!({"id": "msg_1", "model": "c", "content": []});
    let created = response_to_openai(&message).expect("ok")["created"]
        .as_u64()
        .expect("u64");
    assert!(created > 1_700_000_000);
}

// ---- behind: streams -----------------------------------------------------------------------

fn start_event() -> String {
    json!({"type": "message_start", "message": {"id": "msg_s", "model": "c", "content": [],
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 2, "output_tokens": 1}}})
    .to_string()
}

#[test]
fn an_error_event_breaks_the_stream_with_its_message() {
    let mut stream = StreamToOpenAi::new();
    stream.push(&start_event()).expect("start");
    let error =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let result = stream.push(&error.to_string());
    assert!(result.expect_err("error").contains("Overloaded"));
}

#[test]
fn a_stream_ending_before_message_stop_is_cut_short() {
    let mut stream = StreamToOpenAi::new();
    stream.push(&start_event()).expect("start");
    assert_eq!(stream.finish(), Err(CUT_SHORT.to_string()));
}

#[test]
fn pushes_after_message_stop_yield_nothing() {
    let mut stream = StreamToOpenAi::new();
    stream.push(&start_event()).expect("start");
    let end = stream.push(r#"{"type":"message_stop"}"#).expect("stop");
    assert_eq!(end.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(stream.push(r#"{"type":"message_stop"}"#), Ok(vec![]));
    assert_eq!(stream.push("garbage"), Ok(vec![]));
}

#[test]
fn payloads_that_are_not_anthropic_events_are_errors() {
    let mut stream = StreamToOpenAi::new();
    assert!(stream.push("not json").is_err());
    assert!(stream.push("{}").is_err());
    assert!(
        stream
            .push(r#"{"type":"content_block_delta","index":0}"#)
            .is_err()
    );
}

#[test]
fn thinking_and_server_tool_blocks_and_unknown_events_are_skipped() {
    let mut stream = StreamToOpenAi::new();
    stream.push(&start_event()).expect("start");
    for event in [
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"q\""}}),
        json!({"type": "ping"}),
        json!({"type": "some_future_event"}),
    ] {
        assert_eq!(stream.push(&event.to_string()), Ok(vec![]), "{event}");
    }
}

#[test]
fn the_usage_chunk_combines_start_input_and_delta_output_with_cache_counts() {
    let mut stream = StreamToOpenAi::new();
    stream.push(&start_event()).expect("start");
    stream
        .push(r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":30}}"#)
        .expect("delta");
    let end = stream.push(r#"{"type":"message_stop"}"#).expect("stop");
    let usage: Value = serde_json::from_str(end.first().expect("usage chunk")).expect("json");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 17, "completion_tokens": 30, "total_tokens": 47,
        "prompt_tokens_details": {"cached_tokens": 5, "cache_creation_tokens": 2}})
    );
}

// ---- front: requests --------------------------------------------------------------------

#[test]
fn anthropic_fields_openai_lacks_are_untranslatable_by_name() {
    let cases = [
        ("top_k", json!(5)),
        (
            "thinking",
            json!({"type": "enabled", "budget_tokens": 2048}),
        ),
        ("container", json!("c")),
        ("mcp_servers", json!([])),
        ("context_management", json!({})),
    ];
    for (key, value) in cases {
        let request = anthropic_with(json!({ key: value }));
        assert_eq!(param_of(request_to_openai(&request)), key);
    }
}

#[test]
fn disabled_thinking_and_service_tier_are_accepted() {
    let request =
        anthropic_with(json!({"thinking": {"type": "disabled"}, "service_tier": "standard_only"}));
    let openai = request_to_openai(&request).expect("ok");
    assert_eq!(openai.get("thinking"), None);
    assert_eq!(openai.get("service_tier"), None);
}

#[test]
fn model_messages_and_max_tokens_are_required() {
    for key in ["model", "messages", "max_tokens"] {
        let mut request = anthropic_with(json!({}));
        if let Some(r) = request.as_object_mut() {
            r.remove(key);
        }
        let error = request_to_openai(&request).expect_err("required");
        assert_eq!(
            (error.param.as_str(), error.message.as_str()),
            (key, "field required")
        );
    }
    assert_eq!(
        param_of(request_to_openai(&anthropic_with(
            json!({"max_tokens": "10"})
        ))),
        "max_tokens"
    );
    assert_eq!(
        param_of(request_to_openai(&anthropic_with(json!({"model": 3})))),
        "model"
    );
    assert_eq!(
        param_of(request_to_openai(&anthropic_with(json!({"messages": {}})))),
        "messages"
    );
}

#[test]
fn count_tokens_needs_no_max_tokens() {
    let request = json!({"model": "c", "system": "s", "messages": [user(json!("hi"))]});
    let openai = count_tokens_request(&request).expect("ok");
    assert_eq!(
        openai,
        json!({"model": "c", "messages": [
        {"role": "system", "content": "s"}, user(json!("hi"))]})
    );
    assert_eq!(
        param_of(count_tokens_request(&json!({"messages": []}))),
        "model"
    );
}

#[test]
fn document_and_thinking_blocks_are_untranslatable_naming_the_block() {
    let document = json!({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}});
    let request = anthropic_with(
        json!({"messages": [user(json!([{"type": "text", "text": "read"}, document]))]}),
    );
    let error = request_to_openai(&request).expect_err("document");
    assert_eq!(error.param, "messages[0].content[1]");
    assert!(error.message.contains("document"));
    let thinking = json!({"type": "thinking", "thinking": "hmm", "signature": "s"});
    let request = anthropic_with(json!({"messages": [user(json!("q")),
        {"role": "assistant", "content": [thinking, {"type": "text", "text": "a"}]}]}));
    let error = request_to_openai(&request).expect_err("thinking");
    assert_eq!(error.param, "messages[1].content[0]");
    assert!(error.message.contains("thinking"));
}

#[test]
fn tool_results_come_before_the_rest_of_their_user_turn() {
    let request = anthropic_with(json!({"messages": [user(json!([
        {"type": "text", "text": "first"},
        {"type": "tool_result", "tool_use_id": "t", "content": "r", "cache_control": {"type": "ephemeral"}}]))]}));
    let openai = request_to_openai(&request).expect("ok");
    assert_eq!(
        openai["messages"],
        json!([
        {"role": "tool", "tool_call_id": "t", "content": "r"},
        user(json!([{"type": "text", "text": "first"}]))])
    );
}

#[test]
fn server_tools_and_unknown_tool_fields_are_untranslatable() {
    let search =
        anthropic_with(json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}));
    assert_eq!(param_of(request_to_openai(&search)), "tools[0].type");
    let examples = anthropic_with(
        json!({"tools": [{"name": "f", "input_schema": {"type": "object"},
        "input_examples": [{}]}]}),
    );
    assert_eq!(
        param_of(request_to_openai(&examples)),
        "tools[0].input_examples"
    );
}

#[test]
fn metadata_user_id_becomes_user_and_other_metadata_is_untranslatable() {
    let ok = request_to_openai(&anthropic_with(json!({"metadata": {"user_id": "u"}}))).expect("ok");
    assert_eq!(ok["user"], json!("u"));
    let other = anthropic_with(json!({"metadata": {"team": "a"}}));
    assert_eq!(param_of(request_to_openai(&other)), "metadata.team");
}

#[test]
fn the_ga_output_config_format_is_read_like_output_format() {
    let schema = json!({"type": "object", "properties": {}});
    let request = anthropic_with(
        json!({"output_config": {"format": {"type": "json_schema", "schema": schema}}}),
    );
    assert_eq!(
        request_to_openai(&request).expect("ok")["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}})
    );
    let effort = anthropic_with(json!({"output_config": {"effort": "low"}}));
    assert_eq!(param_of(request_to_openai(&effort)), "output_config.effort");
}

#[test]
fn a_file_image_source_is_untranslatable() {
    let image = json!({"type": "image", "source": {"type": "file", "file_id": "f"}});
    let request = anthropic_with(json!({"messages": [user(json!([image]))]}));
    assert_eq!(
        param_of(request_to_openai(&request)),
        "messages[0].content[0].source.type"
    );
}

// ---- front: responses and streams ---------------------------------------------------------

#[test]
fn finish_reasons_map_back_to_stop_reasons() {
    for (finish, stop) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ] {
        let completion = json!({"id": "msg_x", "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "a"}, "finish_reason": finish}]});
        let message = response_from_openai(&completion);
        assert_eq!(message["stop_reason"], json!(stop));
        assert_eq!(message["id"], json!("msg_x"));
    }
}

#[test]
fn an_openai_refusal_becomes_text() {
    let completion = json!({"id": "c", "choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}}]});
    assert_eq!(
        response_from_openai(&completion)["content"],
        json!([{"type": "text", "text": "I can't help with that."}])
    );
}

#[test]
fn an_empty_front_stream_still_starts_and_stops_the_message() {
    let mut stream = StreamFromOpenAi::new("c");
    let names: Vec<&str> = stream.finish().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
    assert_eq!(stream.finish(), vec![]);
}

#[test]
fn a_front_stream_error_is_an_error_event_and_ends_the_stream() {
    let mut stream = StreamFromOpenAi::new("c");
    stream.push(&json!({"id": "x", "choices": [{"index": 0, "delta": {"content": "hi"}}]}));
    let (name, data) = stream.error("overloaded_error", "Overloaded");
    assert_eq!(name, "error");
    assert_eq!(
        data,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    assert_eq!(stream.finish(), vec![]);
    assert_eq!(
        stream.push(&json!({"choices": [{"index": 0, "delta": {"content": "more"}}]})),
        vec![]
    );
}

#[test]
fn text_after_a_tool_call_opens_a_new_text_block() {
    let mut stream = StreamFromOpenAi::new("c");
    let chunks = [
        json!({"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "t", "function": {"name": "f", "arguments": "{}"}}]}}]}),
        json!({"id": "x", "choices": [{"index": 0, "delta": {"content": "done"}}]}),
    ];
    let events = front_events(&mut stream, &chunks);
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[4]["data"]["index"], json!(1));
    assert_eq!(events[7]["data"]["delta"]["stop_reason"], json!("end_turn"));
}

// ---- fuzz --------------------------------------------------------------------------------

/// Keys the translations look for, so arbitrary trees reach deep into them.
const KEYS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "id",
    "image_url",
    "url",
    "tool_call_id",
    "tools",
    "tool_choice",
    "parameters",
    "response_format",
    "json_schema",
    "schema",
    "stop",
    "max_tokens",
    "temperature",
    "top_p",
    "user",
    "stream",
    "choices",
    "delta",
    "message",
    "usage",
    "index",
    "content_block",
    "partial_json",
    "stop_reason",
    "finish_reason",
    "source",
    "media_type",
    "data",
    "input",
    "tool_use_id",
    "system",
    "is_error",
    "cache_control",
    "metadata",
    "user_id",
    "thinking",
    "output_format",
    "output_config",
    "format",
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "cached_tokens",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "stop_sequences",
    "disable_parallel_tool_use",
    "parallel_tool_calls",
    "input_schema",
    "description",
    "strict",
    "refusal",
    "error",
    "n",
];

/// String values the translations branch on.
const WORDS: &[&str] = &[
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "text",
    "image_url",
    "image",
    "tool_use",
    "tool_result",
    "function",
    "base64",
    "url",
    "auto",
    "none",
    "required",
    "any",
    "json_schema",
    "json_object",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
    "text_delta",
    "input_json_delta",
    "thinking_delta",
    "end_turn",
    "tool_calls",
    "data:image/png;base64,AAAA",
    "https://x/y.png",
    "{\"a\":1}",
    "{",
    "",
    "disabled",
    "enabled",
    "custom",
    "msg_1",
    "[DONE]",
];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (0u64..5).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    let key = prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(String::from),
        1 => any::<String>(),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// OpenAI messages of every role with plausible (and odd) content, so requests get past
/// validation and reach the deep translations.
fn arb_message() -> impl Strategy<Value = Value> {
    const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];
    const URLS: &[&str] = &["data:image/png;base64,AAAA", "https://x/y.png", "data:,x"];
    const ARGUMENTS: &[&str] = &["{}", "{\"a\":[1,{\"b\":null}]}", "", "[1]"];
    let text = prop_oneof![
        any::<String>(),
        prop::sample::select(WORDS).prop_map(String::from)
    ];
    let part = prop_oneof![
        text.clone()
            .prop_map(|t| json!({"type": "text", "text": t})),
        text.clone().prop_map(
            |t| json!({"type": "text", "text": t, "cache_control": {"type": "ephemeral"}})
        ),
        prop::sample::select(URLS)
            .prop_map(|u| json!({"type": "image_url", "image_url": {"url": u}})),
    ];
    let content = prop_oneof![
        text.clone().prop_map(Value::from),
        prop::collection::vec(part, 0..3).prop_map(Value::Array),
        Just(Value::Null),
    ];
    let call = (text.clone(), text.clone(), prop::sample::select(ARGUMENTS)).prop_map(
        |(id, name, arguments)| {
            json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
        },
    );
    (
        prop::sample::select(ROLES),
        content,
        prop::collection::vec(call, 0..3),
        text,
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(role, content, calls, id, is_error)| {
            let mut message = json!({"role": role, "content": content});
            if role == "assistant" && !calls.is_empty() {
                message["tool_calls"] = json!(calls);
            }
            if role == "tool" {
                message["tool_call_id"] = json!(id);
                if let Some(is_error) = is_error {
                    message["is_error"] = json!(is_error);
                }
            }
            message
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn request_translations_never_panic(value in arb_json()) {
        if let Ok(anthropic) = request_from_openai(&value, "m") {
            // Whatever goes behind can be read back in front.
            prop_assert!(request_to_openai(&anthropic).is_ok(), "{anthropic}");
        }
        let _ = request_to_openai(&value);
        let _ = count_tokens_request(&value);
    }

    #[test]
    fn whatever_goes_behind_is_accepted_in_front(
        messages in prop::collection::vec(arb_message(), 0..6),
        temperature in prop::option::of(0.0f64..=1.0),
    ) {
        let request = json!({"model": "m", "messages": messages, "max_tokens": 5,
            "temperature": temperature, "tool_choice": "auto"});
        if let Ok(anthropic) = request_from_openai(&request, "m") {
            let openai = request_to_openai(&anthropic);
            prop_assert!(openai.is_ok(), "{anthropic} -> {openai:?}");
        }
    }

    #[test]
    fn response_translations_never_panic(value in arb_json()) {
        let _ = response_to_openai(&value);
        let message = response_from_openai(&value);
        prop_assert!(response_to_openai(&message).is_ok());
    }

    #[test]
    fn the_front_stream_never_panics(chunks in prop::collection::vec(arb_json(), 0..8)) {
        let mut stream = StreamFromOpenAi::new("m");
        for chunk in &chunks {
            let _ = stream.push(chunk);
        }
        let events = stream.finish();
        prop_assert_eq!(events.last().map(|(name, _)| *name), Some("message_stop"));
        let _ = stream.error("api_error", "x");
    }

    #[test]
    fn the_behind_stream_never_panics_on_strings(payloads in prop::collection::vec(any::<String>(), 0..6)) {
        let mut stream = StreamToOpenAi::new();
        for payload in &payloads {
            let _ = stream.push(payload);
        }
        let _ = stream.finish();
    }

    #[test]
    fn the_behind_stream_never_panics_on_json(
        events in prop::collection::vec((prop::sample::select(WORDS), arb_json()), 0..10)
    ) {
        let mut stream = StreamToOpenAi::new();
        for (kind, body) in &events {
            let mut event = body.clone();
            if let Some(o) = event.as_object_mut() {
                o.insert("type".into(), json!(kind));
            }
            let _ = stream.push(&event.to_string());
            let _ = stream.push(&body.to_string());
        }
        let _ = stream.finish();
    }

    #[test]
    fn error_bodies_never_panic(status in any::<u16>(), message in any::<String>()) {
        let body = error_body(status, &message);
        prop_assert_eq!(&body["error"]["message"], &json!(message));
    }
}
