//! Tests of the Responses translation: golden files, refusals, streams and fuzzing.

use super::response::set;
use super::*;
use crate::providers::translate::Untranslatable;
use proptest::prelude::*;
use serde_json::{Value, json};

/// A golden file, parsed.
fn golden(text: &str) -> Value {
    serde_json::from_str(text).expect("golden files are JSON")
}

/// Checks a request golden: `request` translates to exactly `openai`.
fn check_request(text: &str) {
    let case = golden(text);
    assert_eq!(request_to_openai(&case["request"]).unwrap(), case["openai"]);
}

/// Checks a response golden: `openai` (answering `request`) becomes exactly `response`.
fn check_response(text: &str) {
    let case = golden(text);
    let response = response_from_openai(&case["openai"], &case["request"]);
    assert_eq!(response, case["response"]);
}

/// Runs a whole stream: `start`, one `push` per chunk, then `finish`.
fn run_stream(request: &Value, id: &str, created_at: u64, chunks: &[Value]) -> Vec<Value> {
    let mut stream = StreamFromOpenAi::new(request, id, created_at);
    let mut events = stream.start();
    for chunk in chunks {
        events.extend(stream.push(chunk));
    }
    events.extend(stream.finish());
    events
        .into_iter()
        .map(|(event, data)| json!({"event": event, "data": data}))
        .collect()
}

/// Checks a stream golden: `chunks` make exactly `events`, chunk by chunk.
fn check_stream(text: &str) {
    let case = golden(text);
    let chunks = case["chunks"].as_array().unwrap();
    let id = case["id"].as_str().unwrap();
    let created_at = case["created_at"].as_u64().unwrap();
    let events = run_stream(&case["request"], id, created_at, chunks);
    assert_eq!(Value::Array(events), case["events"]);
}

/// The request of a simple text conversation.
fn hello() -> Value {
    json!({"model": "gpt-4.1", "input": "Hi"})
}

/// `hello()` with `key` set to `value`.
fn hello_with(key: &str, value: Value) -> Value {
    let mut request = hello();
    set(&mut request, key, value);
    request
}

/// The error translating `request`.
fn refusal(request: &Value) -> Untranslatable {
    request_to_openai(request).unwrap_err()
}

// --- goldens ---

#[test]
fn a_plain_string_input_becomes_one_user_message() {
    check_request(include_str!("golden/request_plain_string.json"));
}

#[test]
fn a_multi_turn_input_keeps_its_roles_after_the_instructions() {
    check_request(include_str!("golden/request_multi_turn.json"));
}

#[test]
fn function_calls_and_outputs_become_tool_calls_and_tool_messages() {
    check_request(include_str!("golden/request_function_tools.json"));
}

#[test]
fn an_input_image_with_a_data_url_becomes_an_image_url_part() {
    check_request(include_str!("golden/request_input_image.json"));
}

#[test]
fn a_json_schema_text_format_becomes_a_json_schema_response_format() {
    check_request(include_str!("golden/request_json_schema.json"));
}

#[test]
fn a_text_answer_becomes_a_completed_response_echoing_the_request() {
    check_response(include_str!("golden/response_text.json"));
}

#[test]
fn a_tool_call_answer_becomes_function_call_items() {
    check_response(include_str!("golden/response_tool_calls.json"));
}

#[test]
fn cached_tokens_are_reported_and_a_length_stop_is_incomplete() {
    check_response(include_str!("golden/response_cached_usage.json"));
}

#[test]
fn a_text_stream_becomes_the_exact_text_events() {
    check_stream(include_str!("golden/stream_text.json"));
}

#[test]
fn a_tool_call_stream_becomes_the_exact_function_call_events() {
    check_stream(include_str!("golden/stream_tool_calls.json"));
}

#[test]
fn store_backed_and_unsupported_features_are_refused_naming_the_field() {
    let cases = golden(include_str!("golden/refusals.json"));
    for case in cases.as_array().unwrap() {
        let error = refusal(&case["request"]);
        assert_eq!(json!(error.param), case["param"], "{case}");
        assert_eq!(json!(error.message), case["message"], "{case}");
    }
}

// --- request behaviour ---

#[test]
fn store_false_and_null_optional_fields_are_accepted() {
    let request = json!({
        "model": "gpt-4.1", "input": "Hi", "store": false, "background": false,
        "previous_response_id": null, "include": null, "reasoning": {"effort": null, "summary": null},
        "temperature": null, "metadata": {"a": "b"}, "prompt_cache_key": "k",
        "stream_options": {"include_obfuscation": false}, "service_tier": "auto",
    });
    assert_eq!(
        request_to_openai(&request).unwrap(),
        json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hi"}]})
    );
}

#[test]
fn the_store_refusal_tells_the_client_to_send_the_whole_conversation() {
    let error = refusal(&hello_with("store", json!(true)));
    assert_eq!(error.param, "store");
    assert!(
        error
            .message
            .contains("send the whole conversation in `input`")
    );
}

#[test]
fn a_function_call_after_an_assistant_message_joins_that_message() {
    let request = hello_with(
        "input",
        json!([
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Let me check."},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
        ]),
    );
    let messages = &request_to_openai(&request).unwrap()["messages"];
    assert_eq!(messages.as_array().unwrap().len(), 2);
    assert_eq!(messages[1]["content"], json!("Let me check."));
    assert_eq!(messages[1]["tool_calls"][0]["id"], json!("c1"));
}

#[test]
fn a_function_call_after_a_tool_output_starts_a_new_assistant_message() {
    let call = json!({"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"});
    let output = json!({"type": "function_call_output", "call_id": "c1", "output": "ok"});
    let request = hello_with("input", json!([call, output, call]));
    let messages = &request_to_openai(&request).unwrap()["messages"];
    let roles: Vec<_> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].clone())
        .collect();
    assert_eq!(
        roles,
        vec![json!("assistant"), json!("tool"), json!("assistant")]
    );
}

#[test]
fn json_object_mode_becomes_a_json_object_response_format() {
    let request = hello_with("text", json!({"format": {"type": "json_object"}}));
    let chat = request_to_openai(&request).unwrap();
    assert_eq!(chat["response_format"], json!({"type": "json_object"}));
}

#[test]
fn plain_text_format_adds_no_response_format() {
    let request = hello_with("text", json!({"format": {"type": "text"}}));
    assert!(
        request_to_openai(&request)
            .unwrap()
            .get("response_format")
            .is_none()
    );
}

#[test]
fn user_becomes_chat_user_and_a_conflicting_safety_identifier_is_refused() {
    let chat = request_to_openai(&hello_with("user", json!("u1"))).unwrap();
    assert_eq!(chat["user"], json!("u1"));
    let mut both = hello_with("user", json!("u1"));
    set(&mut both, "safety_identifier", json!("u2"));
    assert_eq!(refusal(&both).param, "safety_identifier");
}

#[test]
fn tool_choice_modes_pass_through_and_other_choices_are_refused() {
    for mode in ["auto", "none", "required"] {
        let chat = request_to_openai(&hello_with("tool_choice", json!(mode))).unwrap();
        assert_eq!(chat["tool_choice"], json!(mode));
    }
    let hosted = hello_with("tool_choice", json!({"type": "web_search_preview"}));
    assert_eq!(refusal(&hosted).param, "tool_choice");
}

#[test]
fn an_image_file_id_is_refused_naming_its_path() {
    let request = hello_with(
        "input",
        json!([{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]),
    );
    assert_eq!(refusal(&request).param, "input[0].content[0].file_id");
}

#[test]
fn reasoning_items_and_item_references_are_refused() {
    let reasoning = hello_with("input", json!([{"type": "reasoning", "summary": []}]));
    assert_eq!(refusal(&reasoning).param, "input[0].type");
    let reference = hello_with("input", json!([{"type": "item_reference", "id": "msg_1"}]));
    assert_eq!(refusal(&reference).param, "input[0]");
}

#[test]
fn wrong_typed_scalars_are_refused_naming_the_field() {
    for (key, value) in [
        ("temperature", json!("hot")),
        ("max_output_tokens", json!(-1)),
        ("stream", json!("yes")),
        ("instructions", json!(3)),
        ("metadata", json!("tags")),
    ] {
        assert_eq!(refusal(&hello_with(key, value)).param, key);
    }
}

// --- response behaviour ---

#[test]
fn a_content_filter_stop_is_incomplete_with_that_reason() {
    let chat = json!({"id": "chatcmpl-1", "choices": [{"message": {"content": "x"}, "finish_reason": "content_filter"}]});
    let response = response_from_openai(&chat, &hello());
    assert_eq!(response["status"], json!("incomplete"));
    assert_eq!(
        response["incomplete_details"],
        json!({"reason": "content_filter"})
    );
}

#[test]
fn a_response_id_that_already_has_the_prefix_is_kept() {
    let chat = json!({"id": "resp_abc", "choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]});
    let response = response_from_openai(&chat, &hello());
    assert_eq!(response["id"], json!("resp_abc"));
    assert_eq!(response["output"][0]["id"], json!("msg_abc"));
}

#[test]
fn a_refusal_becomes_a_refusal_content_part() {
    let chat = json!({"id": "chatcmpl-1", "choices": [{"message": {"content": null, "refusal": "No."}, "finish_reason": "stop"}]});
    let response = response_from_openai(&chat, &hello());
    assert_eq!(
        response["output"][0]["content"],
        json!([{"type": "refusal", "refusal": "No."}])
    );
}

#[test]
fn the_response_has_every_field_the_sdk_requires() {
    let response = response_from_openai(&json!({}), &hello());
    for key in [
        "id",
        "created_at",
        "model",
        "object",
        "output",
        "parallel_tool_calls",
        "tool_choice",
        "tools",
        "error",
        "incomplete_details",
        "instructions",
        "metadata",
        "temperature",
        "top_p",
    ] {
        assert!(response.get(key).is_some(), "{key}");
    }
    assert!(response.get("output_text").is_none());
    assert_eq!(response["store"], json!(false));
}

// --- stream behaviour ---

#[test]
fn a_stream_cut_by_length_ends_with_response_incomplete() {
    let chunk = json!({"choices": [{"delta": {"content": "abc"}, "finish_reason": "length"}]});
    let events = run_stream(&hello(), "chatcmpl-x", 1, &[chunk]);
    let last = events.last().unwrap();
    assert_eq!(last["event"], json!("response.incomplete"));
    assert_eq!(
        last["data"]["response"]["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
}

#[test]
fn an_error_emits_error_then_response_failed_and_ends_the_stream() {
    let mut stream = StreamFromOpenAi::new(&hello(), "chatcmpl-x", 1);
    let started = stream.start();
    assert_eq!(started.len(), 2);
    let events = stream.error("upstream_error", "the upstream closed the connection");
    let names: Vec<_> = events.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, vec!["error", "response.failed"]);
    assert_eq!(
        events[0].1,
        json!({"type": "error", "sequence_number": 2, "code": "upstream_error",
               "message": "the upstream closed the connection", "param": null})
    );
    let failed = &events[1].1["response"];
    assert_eq!(failed["status"], json!("failed"));
    assert_eq!(
        failed["error"],
        json!({"code": "upstream_error", "message": "the upstream closed the connection"})
    );
    assert!(
        stream
            .push(&json!({"choices": [{"delta": {"content": "late"}}]}))
            .is_empty()
    );
    assert!(stream.finish().is_empty());
}

#[test]
fn an_empty_stream_still_completes_with_an_empty_message() {
    let events = run_stream(&hello(), "chatcmpl-x", 1, &[]);
    let last = events.last().unwrap();
    assert_eq!(last["event"], json!("response.completed"));
    assert_eq!(
        last["data"]["response"]["output"][0]["content"][0]["text"],
        json!("")
    );
}

#[test]
fn text_then_a_tool_call_get_output_indexes_in_order_of_appearance() {
    let chunks = [
        json!({"choices": [{"delta": {"content": "Checking."}}]}),
        json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "w", "arguments": "{}"}}]}}]}),
    ];
    let events = run_stream(&hello(), "chatcmpl-x", 1, &chunks);
    let output = &events.last().unwrap()["data"]["response"]["output"];
    assert_eq!(output[0]["type"], json!("message"));
    assert_eq!(output[1]["type"], json!("function_call"));
    let sequence: Vec<_> = events
        .iter()
        .map(|e| e["data"]["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(sequence, (0..sequence.len() as u64).collect::<Vec<_>>());
}

// --- fuzz ---

/// Keys the translation looks for, so generated objects hit real code paths with wrong types.
const KEYS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "role",
    "content",
    "type",
    "text",
    "image_url",
    "detail",
    "call_id",
    "name",
    "arguments",
    "output",
    "tools",
    "tool_choice",
    "format",
    "schema",
    "strict",
    "parameters",
    "description",
    "user",
    "safety_identifier",
    "temperature",
    "top_p",
    "max_output_tokens",
    "stream",
    "store",
    "reasoning",
    "truncation",
    "include",
    "metadata",
    "id",
    "choices",
    "delta",
    "message",
    "tool_calls",
    "function",
    "index",
    "finish_reason",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "prompt_tokens_details",
    "cached_tokens",
    "refusal",
    "created",
    "file_id",
];

/// Strings that are also meaningful values (`type`s, roles, finish reasons).
const WORDS: &[&str] = &[
    "message",
    "function_call",
    "function_call_output",
    "input_text",
    "output_text",
    "input_image",
    "input_file",
    "function",
    "json_schema",
    "json_object",
    "text",
    "user",
    "assistant",
    "system",
    "developer",
    "auto",
    "none",
    "required",
    "length",
    "stop",
    "content_filter",
    "disabled",
    "resp_",
    "chatcmpl-",
    "",
];

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        prop::sample::select(WORDS).prop_map(|w| json!(w)),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![prop::sample::select(KEYS).prop_map(str::to_owned), ".{0,6}"];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// A value that is usually a short string (a plausible field) and sometimes anything.
fn stringish() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(|w| json!(w)),
        2 => ".{0,6}".prop_map(Value::String),
        1 => arbitrary_json(),
    ]
}

/// An object with `fields`, each present or not, with plausible or arbitrary values.
fn shaped<const N: usize>(
    fields: [(&'static str, BoxedStrategy<Value>); N],
) -> impl Strategy<Value = Value> {
    let fields: Vec<_> = fields
        .into_iter()
        .map(|(key, value)| prop::option::of(value).prop_map(move |value| (key, value)))
        .collect();
    fields.prop_map(|fields| {
        Value::Object(
            fields
                .into_iter()
                .filter_map(|(key, value)| Some((key.to_owned(), value?)))
                .collect(),
        )
    })
}

/// A Responses request with the real structure and plausible-or-wrong values.
fn shaped_request() -> impl Strategy<Value = Value> {
    let part = shaped([
        ("type", stringish().boxed()),
        ("text", stringish().boxed()),
        ("image_url", stringish().boxed()),
        ("detail", stringish().boxed()),
    ]);
    let item = shaped([
        ("type", stringish().boxed()),
        ("role", stringish().boxed()),
        (
            "content",
            prop_oneof![
                stringish(),
                prop::collection::vec(part, 0..3).prop_map(Value::Array)
            ]
            .boxed(),
        ),
        ("call_id", stringish().boxed()),
        ("name", stringish().boxed()),
        ("arguments", stringish().boxed()),
        ("output", stringish().boxed()),
    ]);
    let tool = shaped([
        ("type", stringish().boxed()),
        ("name", stringish().boxed()),
        ("parameters", arbitrary_json().boxed()),
        ("strict", arbitrary_json().boxed()),
    ]);
    let format = shaped([
        ("type", stringish().boxed()),
        ("name", stringish().boxed()),
        ("schema", arbitrary_json().boxed()),
    ]);
    shaped([
        ("model", stringish().boxed()),
        (
            "input",
            prop_oneof![
                stringish(),
                prop::collection::vec(item, 0..5).prop_map(Value::Array)
            ]
            .boxed(),
        ),
        ("instructions", stringish().boxed()),
        (
            "tools",
            prop::collection::vec(tool, 0..3)
                .prop_map(Value::Array)
                .boxed(),
        ),
        ("tool_choice", stringish().boxed()),
        (
            "text",
            format.prop_map(|format| json!({"format": format})).boxed(),
        ),
        ("temperature", arbitrary_json().boxed()),
        ("store", arbitrary_json().boxed()),
    ])
}

/// A chat chunk with the real structure and plausible-or-wrong values.
fn shaped_chunk() -> impl Strategy<Value = Value> {
    let index = prop_oneof![3 => (0u64..3).prop_map(|n| json!(n)), 1 => arbitrary_json()];
    let function = shaped([
        ("name", stringish().boxed()),
        ("arguments", stringish().boxed()),
    ]);
    let call = shaped([
        ("index", index.boxed()),
        ("id", stringish().boxed()),
        ("function", function.boxed()),
    ]);
    let delta = shaped([
        ("content", stringish().boxed()),
        ("refusal", stringish().boxed()),
        (
            "tool_calls",
            prop::collection::vec(call, 0..3)
                .prop_map(Value::Array)
                .boxed(),
        ),
    ]);
    let choice = shaped([
        ("delta", delta.boxed()),
        ("finish_reason", stringish().boxed()),
    ]);
    shaped([
        ("model", stringish().boxed()),
        ("usage", arbitrary_json().boxed()),
        (
            "choices",
            prop::collection::vec(choice, 0..2)
                .prop_map(Value::Array)
                .boxed(),
        ),
    ])
}

proptest! {
    #[test]
    fn request_to_openai_never_panics(value in arbitrary_json()) {
        let _ = request_to_openai(&value);
    }

    #[test]
    fn a_shaped_request_never_panics(value in shaped_request()) {
        let _ = request_to_openai(&value);
    }

    #[test]
    fn a_shaped_stream_never_panics(
        request in shaped_request(),
        chunks in prop::collection::vec(shaped_chunk(), 0..8),
    ) {
        let mut stream = StreamFromOpenAi::new(&request, "chatcmpl-f", 0);
        let mut events = stream.start();
        for chunk in &chunks {
            events.extend(stream.push(chunk));
        }
        events.extend(stream.finish());
        let last = events.last().map(|(name, _)| *name);
        prop_assert!(matches!(last, Some("response.completed" | "response.incomplete")));
    }

    #[test]
    fn response_from_openai_never_panics(openai in arbitrary_json(), request in arbitrary_json()) {
        let response = response_from_openai(&openai, &request);
        prop_assert!(response.is_object());
    }

    #[test]
    fn the_stream_never_panics(
        request in arbitrary_json(),
        id in ".{0,12}",
        created_at in any::<u64>(),
        chunks in prop::collection::vec(arbitrary_json(), 0..6),
        raw in prop::collection::vec(".{0,24}", 0..4),
        fail in any::<bool>(),
    ) {
        let mut stream = StreamFromOpenAi::new(&request, &id, created_at);
        let mut events = stream.start();
        for chunk in &chunks {
            events.extend(stream.push(chunk));
        }
        for text in &raw {
            let chunk = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()));
            events.extend(stream.push(&chunk));
        }
        events.extend(if fail { stream.error("code", "message") } else { stream.finish() });
        for (position, (name, data)) in events.iter().enumerate() {
            prop_assert_eq!(&data["type"], &json!(name));
            prop_assert_eq!(&data["sequence_number"], &json!(position));
        }
    }
}
