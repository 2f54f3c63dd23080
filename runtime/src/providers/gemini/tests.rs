use proptest::prelude::*;
use serde_json::{Value, json};

use super::response::{finish_reason_to_openai, response_to_openai_at, usage_to_openai};
use super::*;
use crate::providers::translate::ToOpenAiStream;

/// A golden file, parsed.
fn golden(text: &str) -> Value {
    serde_json::from_str(text).expect("golden files are JSON")
}

/// Asserts that the OpenAI request in `case.request.openai` becomes `case.request.gemini`.
fn assert_request_golden(case: &Value) {
    let request = &case["request"];
    let gemini = request_from_openai(&request["openai"]).expect("translates");
    assert_eq!(gemini, request["gemini"]);
}

/// Asserts that the Gemini response in `case.response.gemini` becomes `case.response.openai`.
fn assert_response_golden(case: &Value) {
    let response = &case["response"];
    let model = response["model"].as_str().expect("golden names the model");
    let openai = response_to_openai_at(&response["gemini"], model, 0).expect("translates");
    assert_eq!(openai, response["openai"]);
}

/// Pushes each of `events` (serialized) through a stream with `created` fixed at 0.
fn stream_chunks(model: &str, events: &[Value]) -> (StreamToOpenAi, Vec<Vec<Value>>) {
    let mut stream = StreamToOpenAi::new(model);
    stream.created = 0;
    let chunks = events
        .iter()
        .map(|event| parse_chunks(stream.push(&event.to_string()).expect("pushes")))
        .collect();
    (stream, chunks)
}

/// Chunk payloads as JSON (`[DONE]` as a JSON string).
fn parse_chunks(payloads: Vec<String>) -> Vec<Value> {
    payloads
        .into_iter()
        .map(|p| serde_json::from_str(&p).unwrap_or(Value::String(p)))
        .collect()
}

/// The `param` of the error `request_from_openai` gives.
fn rejected_param(request: Value) -> String {
    request_from_openai(&request)
        .expect_err("untranslatable")
        .param
}

/// The `param` of the error `request_to_openai` gives.
fn sim_rejected_param(request: Value) -> String {
    request_to_openai(&request, "m")
        .expect_err("untranslatable")
        .param
}

// ---- goldens ----

#[test]
fn plain_text_translates_both_ways() {
    let case = golden(include_str!("golden/plain_text.json"));
    assert_request_golden(&case);
    assert_response_golden(&case);
}

#[test]
fn system_prompts_go_to_the_system_instruction_and_turns_alternate() {
    assert_request_golden(&golden(include_str!("golden/multi_turn_system.json")));
}

#[test]
fn tool_calls_and_results_become_function_calls_and_responses() {
    let case = golden(include_str!("golden/tools.json"));
    assert_request_golden(&case);
    assert_response_golden(&case);
}

#[test]
fn images_become_inline_data_or_file_data() {
    assert_request_golden(&golden(include_str!("golden/images.json")));
}

#[test]
fn a_json_schema_becomes_a_response_json_schema() {
    assert_request_golden(&golden(include_str!("golden/json_mode.json")));
}

#[test]
fn cached_tokens_are_reported_inside_prompt_tokens() {
    assert_response_golden(&golden(include_str!("golden/cached_usage.json")));
}

#[test]
fn a_stream_becomes_openai_chunks_event_by_event() {
    let case = golden(include_str!("golden/stream.json"));
    let model = case["model"].as_str().expect("model");
    let events = case["events"].as_array().expect("events");
    let (mut stream, chunks) = stream_chunks(model, events);
    let expected: Vec<Vec<Value>> = serde_json::from_value(case["chunks"].clone()).expect("chunks");
    assert_eq!(chunks, expected);
    let finish = parse_chunks(stream.finish().expect("finishes"));
    assert_eq!(Value::Array(finish), case["finish"]);
}

#[test]
fn openai_chunks_become_gemini_stream_payloads() {
    let case = golden(include_str!("golden/chunk_from_openai.json"));
    for step in case["chunks"].as_array().expect("chunks") {
        let payload = chunk_from_openai(&step["input"]).unwrap_or(Value::Null);
        assert_eq!(payload, step["expected"], "for {}", step["input"]);
    }
}

#[test]
fn error_bodies_name_googles_status() {
    let case = golden(include_str!("golden/error_body.json"));
    for step in case["cases"].as_array().expect("cases") {
        let status = step["status"].as_u64().and_then(|s| u16::try_from(s).ok());
        let body = error_body(
            status.expect("status"),
            step["message"].as_str().expect("message"),
        );
        assert_eq!(body, step["expected"]);
    }
}

#[test]
fn a_native_gemini_request_becomes_an_openai_request() {
    let case = golden(include_str!("golden/sim_request.json"));
    let model = case["model"].as_str().expect("model");
    assert_eq!(
        request_to_openai(&case["gemini"], model).expect("translates"),
        case["openai"]
    );
}

#[test]
fn an_openai_answer_becomes_a_gemini_response() {
    let case = golden(include_str!("golden/sim_response.json"));
    assert_eq!(response_from_openai(&case["openai"]), case["gemini"]);
}

// ---- round trips ----

#[test]
fn a_request_round_trip_through_gemini_loses_nothing_representable() {
    let original = json!({
        "model": "gemini-2.5-pro",
        "messages": [
            { "role": "system", "content": "Be terse." },
            { "role": "system", "content": "Use metric units." },
            { "role": "user", "content": [
                { "type": "text", "text": "What is this, and the weather there?" },
                { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA" } },
                { "type": "image_url", "image_url": { "url": "https://example.com/a.jpeg" } }
            ] },
            { "role": "assistant", "content": "Checking.", "tool_calls": [
                { "id": "call_x", "type": "function",
                  "function": { "name": "weather", "arguments": "{\"city\":\"Oslo\"}" } },
                { "id": "call_y", "type": "function",
                  "function": { "name": "weather", "arguments": "{}" } }
            ] },
            { "role": "tool", "tool_call_id": "call_x", "content": "{\"temp\":3}" },
            { "role": "tool", "tool_call_id": "call_y", "content": "unknown city" },
            { "role": "user", "content": "Thanks" },
            { "role": "assistant", "content": "You're welcome." },
            { "role": "user", "content": "{\"content\":\"looks like JSON\"}" }
        ],
        "tools": [{ "type": "function", "function": {
            "name": "weather", "description": "Weather now",
            "parameters": { "type": "object", "properties": { "city": { "type": "string" } } }
        } }],
        "tool_choice": { "type": "function", "function": { "name": "weather" } },
        "temperature": 0.2,
        "top_p": 0.8,
        "max_completion_tokens": 300,
        "stop": ["###", "END"],
        "n": 2,
        "seed": 11,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logprobs": true,
        "top_logprobs": 2,
        "response_format": { "type": "json_schema",
            "json_schema": { "name": "response", "schema": { "type": "object" } } }
    });
    let gemini = request_from_openai(&original).expect("to Gemini");
    let back = request_to_openai(&gemini, "gemini-2.5-pro").expect("back to OpenAI");
    assert_eq!(back, original);
}

#[test]
fn a_tool_result_shaped_like_the_content_wrapper_round_trips_as_its_text() {
    let original = json!({
        "model": "m",
        "messages": [
            { "role": "assistant", "content": null, "tool_calls": [
                { "id": "c1", "type": "function", "function": { "name": "f", "arguments": "{}" } }
            ] },
            { "role": "tool", "tool_call_id": "c1", "content": "{\"content\":\"x\"}" }
        ]
    });
    let gemini = request_from_openai(&original).expect("to Gemini");
    assert_eq!(
        gemini["contents"][1]["parts"][0]["functionResponse"]["response"],
        json!({ "content": "{\"content\":\"x\"}" })
    );
    assert_eq!(request_to_openai(&gemini, "m").expect("back"), original);
}

#[test]
fn an_answer_round_trip_through_gemini_keeps_choices_and_usage() {
    let case = golden(include_str!("golden/sim_response.json"));
    let original = &case["openai"];
    let gemini = response_from_openai(original);
    let back = response_to_openai_at(&gemini, "ignored", 1).expect("back");
    assert_eq!(back, *original);
}

#[test]
fn a_stream_round_trip_through_gemini_payloads_keeps_the_text_and_finish() {
    let openai_chunks = [
        json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
               "choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}),
        json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
               "choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}),
        json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
               "choices":[{"index":0,"delta":{},"finish_reason":"length"}]}),
        json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],
               "usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}),
    ];
    let payloads: Vec<Value> = openai_chunks.iter().filter_map(chunk_from_openai).collect();
    let (mut stream, chunks) = stream_chunks("m", &payloads);
    let mut all: Vec<Value> = chunks.into_iter().flatten().collect();
    all.extend(parse_chunks(stream.finish().expect("finishes")));
    let envelope = |choices: Value| json!({"id":"c","object":"chat.completion.chunk","created":0,"model":"m","choices":choices});
    let mut usage = envelope(json!([]));
    usage["usage"] = json!({"prompt_tokens":1,"completion_tokens":2,"total_tokens":3});
    assert_eq!(
        all,
        vec![
            envelope(
                json!([{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}])
            ),
            envelope(json!([{"index":0,"delta":{"content":"Hi"},"finish_reason":null}])),
            envelope(json!([{"index":0,"delta":{},"finish_reason":"length"}])),
            usage,
            json!("[DONE]"),
        ]
    );
}

// ---- request details ----

#[test]
fn json_object_asks_for_json_and_text_asks_for_nothing() {
    let request = |format: Value| json!({"messages":[{"role":"user","content":"x"}],"response_format":format});
    let json_mode = request_from_openai(&request(json!({"type":"json_object"}))).expect("json");
    assert_eq!(
        json_mode["generationConfig"],
        json!({"responseMimeType":"application/json"})
    );
    let text = request_from_openai(&request(json!({"type":"text"}))).expect("text");
    assert_eq!(text.get("generationConfig"), None);
}

#[test]
fn tool_choices_map_to_function_calling_modes() {
    let cases = [
        (json!("auto"), json!({"mode":"AUTO"})),
        (json!("none"), json!({"mode":"NONE"})),
        (json!("required"), json!({"mode":"ANY"})),
        (
            json!({"type":"function","function":{"name":"f"}}),
            json!({"mode":"ANY","allowedFunctionNames":["f"]}),
        ),
    ];
    for (choice, mode) in cases {
        let request = json!({"messages":[{"role":"user","content":"x"}],"tool_choice":choice});
        let gemini = request_from_openai(&request).expect("translates");
        assert_eq!(gemini["toolConfig"], json!({"functionCallingConfig": mode}));
        let back = request_to_openai(&gemini, "m").expect("back");
        assert_eq!(back["tool_choice"], choice);
    }
}

#[test]
fn null_fields_count_as_absent() {
    let request = json!({
        "messages":[{"role":"user","content":"x","name":null}],
        "temperature":null,"logit_bias":null,"tools":null
    });
    let gemini = request_from_openai(&request).expect("translates");
    assert_eq!(
        gemini,
        json!({"contents":[{"role":"user","parts":[{"text":"x"}]}]})
    );
}

#[test]
fn untranslatable_requests_name_the_field() {
    let user = json!({"role":"user","content":"x"});
    let call = |arguments: &str| {
        json!({"role":"assistant","content":null,"tool_calls":[
            {"id":"c1","type":"function","function":{"name":"f","arguments":arguments}}]})
    };
    let image =
        |url: &str| json!({"role":"user","content":[{"type":"image_url","image_url":{"url":url}}]});
    let cases = [
        (json!([1]), "body"),
        (json!({}), "messages"),
        (
            json!({"messages":[{"role":"system","content":"x"}]}),
            "messages",
        ),
        (
            json!({"messages":[user],"logit_bias":{"1":2}}),
            "logit_bias",
        ),
        (json!({"messages":[user],"audio":{"voice":"x"}}), "audio"),
        (
            json!({"messages":[user],"modalities":["text","audio"]}),
            "modalities",
        ),
        (
            json!({"messages":[user],"prediction":{"type":"content"}}),
            "prediction",
        ),
        (
            json!({"messages":[user],"reasoning_effort":"low"}),
            "reasoning_effort",
        ),
        (
            json!({"messages":[user,{"role":"user","content":"y","name":"bob"}]}),
            "messages[1].name",
        ),
        (
            json!({"messages":[{"role":"critic","content":"x"}]}),
            "messages[0].role",
        ),
        (
            json!({"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"input_audio","input_audio":{}}]}]}),
            "messages[0].content[1]",
        ),
        (
            json!({"messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x/a.png"}}]}]}),
            "messages[0].content[0]",
        ),
        (
            json!({"messages":[image("https://example.com/a.gif")]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"messages":[image("https://example.com/image")]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"messages":[image("http://example.com/a.png")]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"messages":[image("data:image/png,AAAA")]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"messages":[user,call("[1,2]")]}),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            json!({"messages":[user,call("not json")]}),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            json!({"messages":[user,call("{}"),{"role":"tool","tool_call_id":"c2","content":"r"}]}),
            "messages[2].tool_call_id",
        ),
        (
            json!({"messages":[user],"tools":[{"type":"code_interpreter"}]}),
            "tools[0].type",
        ),
        (
            json!({"messages":[user],"tool_choice":"any"}),
            "tool_choice",
        ),
        (
            json!({"messages":[user],"response_format":{"type":"yaml"}}),
            "response_format.type",
        ),
        (json!({"messages":[user],"seed":5_000_000_000_i64}), "seed"),
        (
            json!({"messages":[user],"temperature":"hot"}),
            "temperature",
        ),
        (json!({"messages":[user],"max_tokens":-1}), "max_tokens"),
        (json!({"messages":[user],"stop":[1]}), "stop[0]"),
    ];
    for (request, param) in cases {
        assert_eq!(rejected_param(request.clone()), param, "for {request}");
    }
}

#[test]
fn untranslatable_gemini_requests_name_the_field() {
    let user = json!({"role":"user","parts":[{"text":"x"}]});
    let cases = [
        (json!("x"), "body"),
        (json!({}), "contents"),
        (
            json!({"contents":[user],"safetySettings":[]}),
            "safetySettings",
        ),
        (
            json!({"contents":[user],"cached_content":"c"}),
            "cached_content",
        ),
        (
            json!({"contents":[user],"generationConfig":{"topK":3}}),
            "generationConfig.topK",
        ),
        (
            json!({"contents":[user],"generationConfig":{"thinkingConfig":{"thinkingBudget":0}}}),
            "generationConfig.thinkingConfig",
        ),
        (
            json!({"contents":[user],"generationConfig":{"responseModalities":["IMAGE"]}}),
            "generationConfig.responseModalities",
        ),
        (
            json!({"contents":[user],"generationConfig":{"responseMimeType":"text/x.enum"}}),
            "generationConfig.responseMimeType",
        ),
        (
            json!({"contents":[user],"tools":[{"googleSearch":{}}]}),
            "tools[0].googleSearch",
        ),
        (
            json!({"contents":[user],"toolConfig":{"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["a","b"]}}}),
            "toolConfig.functionCallingConfig.allowedFunctionNames",
        ),
        (
            json!({"contents":[user],"toolConfig":{"functionCallingConfig":{"mode":"VALIDATED"}}}),
            "toolConfig.functionCallingConfig.mode",
        ),
        (
            json!({"contents":[{"role":"user","parts":[{"executableCode":{}}]}]}),
            "contents[0].parts[0]",
        ),
        (
            json!({"contents":[{"role":"user","parts":[{"inlineData":{"mimeType":"audio/wav","data":"AA"}}]}]}),
            "contents[0].parts[0].inlineData.mimeType",
        ),
        (
            json!({"contents":[{"role":"user","parts":[{"functionResponse":{"name":"f","response":{}}}]}]}),
            "contents[0].parts[0].functionResponse",
        ),
        (
            json!({"contents":[{"role":"user","parts":[{"functionResponse":{"name":"f","id":"z","response":{}}}]}]}),
            "contents[0].parts[0].functionResponse.id",
        ),
        (
            json!({"contents":[{"role":"model","parts":[{"functionCall":{"name":"f","args":[1]}}]}]}),
            "contents[0].parts[0].functionCall.args",
        ),
        (
            json!({"contents":[{"role":"system","parts":[]}]}),
            "contents[0].role",
        ),
    ];
    for (request, param) in cases {
        assert_eq!(sim_rejected_param(request.clone()), param, "for {request}");
    }
}

#[test]
fn a_function_response_without_an_id_answers_the_earliest_open_call_of_its_name() {
    let request = json!({"contents":[
        {"role":"model","parts":[
            {"functionCall":{"name":"f","args":{"n":1}}},
            {"functionCall":{"name":"f","args":{"n":2}}}
        ]},
        {"role":"user","parts":[
            {"functionResponse":{"name":"f","response":{"content":"one"}}},
            {"functionResponse":{"name":"f","response":{"content":"two"}}}
        ]}
    ]});
    let openai = request_to_openai(&request, "m").expect("translates");
    assert_eq!(
        openai["messages"][1],
        json!({"role":"tool","tool_call_id":"call_0","content":"one"})
    );
    assert_eq!(
        openai["messages"][2],
        json!({"role":"tool","tool_call_id":"call_1","content":"two"})
    );
}

// ---- response details ----

#[test]
fn finish_reasons_map_to_openai() {
    let cases = [
        ("STOP", false, "stop"),
        ("STOP", true, "tool_calls"),
        ("MAX_TOKENS", false, "length"),
        ("SAFETY", false, "content_filter"),
        ("RECITATION", false, "content_filter"),
        ("BLOCKLIST", false, "content_filter"),
        ("PROHIBITED_CONTENT", false, "content_filter"),
        ("SPII", false, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", true, "stop"),
        ("OTHER", false, "stop"),
    ];
    for (reason, had_calls, expected) in cases {
        assert_eq!(
            finish_reason_to_openai(reason, had_calls),
            expected,
            "for {reason}"
        );
    }
}

#[test]
fn a_blocked_prompt_becomes_one_content_filtered_choice() {
    let response = json!({"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":4,"totalTokenCount":4}});
    let openai = response_to_openai_at(&response, "m", 0).expect("translates");
    assert_eq!(
        openai["choices"],
        json!([{"index":0,"message":{"role":"assistant","content":null},"logprobs":null,"finish_reason":"content_filter"}])
    );
    assert_eq!(
        openai["usage"],
        json!({"prompt_tokens":4,"completion_tokens":0,"total_tokens":4})
    );
}

#[test]
fn a_blocked_prompt_in_a_stream_finishes_with_content_filter() {
    let (mut stream, chunks) = stream_chunks(
        "m",
        &[json!({"promptFeedback":{"blockReason":"OTHER"},"responseId":"b"})],
    );
    let reasons: Vec<&Value> = chunks[0]
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .collect();
    assert_eq!(reasons, vec![&Value::Null, &json!("content_filter")]);
    assert_eq!(
        stream.finish().expect("finishes"),
        vec!["[DONE]".to_string()]
    );
}

#[test]
fn a_response_without_candidates_or_block_reason_is_an_error() {
    assert!(response_to_openai(&json!({"usageMetadata":{}}), "m").is_err());
}

#[test]
fn an_error_body_is_an_error_with_its_message() {
    let body = error_body(429, "quota exceeded");
    assert_eq!(
        response_to_openai(&body, "m"),
        Err("quota exceeded".to_string())
    );
    let mut stream = StreamToOpenAi::new("m");
    assert_eq!(
        stream.push(&body.to_string()),
        Err("quota exceeded".to_string())
    );
}

#[test]
fn ids_gemini_does_not_give_are_deterministic() {
    let response = |text: &str| json!({"candidates":[{"content":{"parts":[{"text":text}]},"finishReason":"STOP"}]});
    let id = |body: &Value| response_to_openai(body, "m").expect("translates")["id"].clone();
    let first = id(&response("a"));
    assert!(first.as_str().is_some_and(|id| id.starts_with("gemini-")));
    assert_eq!(first, id(&response("a")));
    assert_ne!(first, id(&response("b")));
}

#[test]
fn created_is_the_current_time() {
    let body = json!({"candidates":[{"content":{"parts":[{"text":"a"}]}}]});
    let created = response_to_openai(&body, "m").expect("translates")["created"].as_u64();
    assert!(created.is_some_and(|c| c > 1_700_000_000));
    assert!(StreamToOpenAi::new("m").created > 1_700_000_000);
}

#[test]
fn total_tokens_fall_back_to_the_sum() {
    let usage = usage_to_openai(
        &json!({"promptTokenCount":5,"candidatesTokenCount":2,"thoughtsTokenCount":1}),
    );
    assert_eq!(
        usage,
        Some(
            json!({"prompt_tokens":5,"completion_tokens":3,"total_tokens":8,
                    "completion_tokens_details":{"reasoning_tokens":1}})
        )
    );
}

#[test]
fn logprobs_translate_both_ways() {
    let gemini = json!({
        "candidates":[{"content":{"parts":[{"text":"Hi"}]},"finishReason":"STOP","logprobsResult":{
            "topCandidates":[{"candidates":[{"token":"Hi","logProbability":-0.1},{"token":"Yo","logProbability":-2.5}]}],
            "chosenCandidates":[{"token":"Hi","logProbability":-0.1}]
        }}],
        "responseId":"r"
    });
    let openai = response_to_openai_at(&gemini, "m", 0).expect("translates");
    assert_eq!(
        openai["choices"][0]["logprobs"],
        json!({"content":[{"token":"Hi","logprob":-0.1,"bytes":[72,105],"top_logprobs":[
            {"token":"Hi","logprob":-0.1,"bytes":[72,105]},
            {"token":"Yo","logprob":-2.5,"bytes":[89,111]}
        ]}],"refusal":null})
    );
    let back = response_from_openai(&openai);
    assert_eq!(
        back["candidates"][0]["logprobsResult"],
        gemini["candidates"][0]["logprobsResult"]
    );
}

// ---- stream details ----

#[test]
fn a_stream_that_ends_without_a_finish_reason_is_cut_short() {
    let (mut stream, _) = stream_chunks(
        "m",
        &[json!({"candidates":[{"content":{"parts":[{"text":"a"}]}}]})],
    );
    assert_eq!(
        stream.finish(),
        Err("the stream ended before a finish reason".to_string())
    );
    assert!(StreamToOpenAi::new("m").finish().is_err());
}

#[test]
fn a_payload_that_is_no_response_breaks_the_stream() {
    let mut stream = StreamToOpenAi::new("m");
    assert!(stream.push("not json").is_err());
    assert!(stream.push("[1]").is_err());
    assert!(stream.push("{\"candidates\":5}").is_err());
    assert_eq!(stream.push("  "), Ok(Vec::new()));
}

#[test]
fn a_stream_is_done_once_finished() {
    let done = json!({"candidates":[{"content":{"parts":[{"text":"a"}]},"finishReason":"STOP"}]});
    let (mut stream, _) = stream_chunks("m", std::slice::from_ref(&done));
    assert_eq!(stream.finish(), Ok(vec!["[DONE]".to_string()]));
    assert_eq!(stream.finish(), Ok(Vec::new()));
    assert!(stream.push(&done.to_string()).is_err());
}

#[test]
fn thoughts_are_not_streamed() {
    let (_, chunks) = stream_chunks(
        "m",
        &[json!({"candidates":[{"content":{"parts":[{"text":"hmm","thought":true}]}}]})],
    );
    assert_eq!(chunks[0].len(), 1, "only the role chunk: {:?}", chunks[0]);
}

// ---- fuzz ----

/// Keys the translations look for, so that arbitrary objects reach deep into them.
const KEYS: &[&str] = &[
    "messages",
    "role",
    "content",
    "type",
    "text",
    "image_url",
    "url",
    "tool_calls",
    "id",
    "function",
    "name",
    "arguments",
    "tool_call_id",
    "tools",
    "tool_choice",
    "response_format",
    "json_schema",
    "schema",
    "stop",
    "temperature",
    "max_tokens",
    "seed",
    "n",
    "logprobs",
    "top_logprobs",
    "contents",
    "parts",
    "systemInstruction",
    "system_instruction",
    "inlineData",
    "mimeType",
    "data",
    "fileData",
    "fileUri",
    "functionCall",
    "args",
    "functionResponse",
    "response",
    "generationConfig",
    "toolConfig",
    "functionCallingConfig",
    "mode",
    "allowedFunctionNames",
    "functionDeclarations",
    "parameters",
    "candidates",
    "finishReason",
    "index",
    "usageMetadata",
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "totalTokenCount",
    "cachedContentTokenCount",
    "promptFeedback",
    "blockReason",
    "error",
    "message",
    "modelVersion",
    "responseId",
    "thought",
    "choices",
    "delta",
    "finish_reason",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "logprobsResult",
    "chosenCandidates",
    "topCandidates",
    "token",
    "logProbability",
    "logprob",
    "responseMimeType",
    "responseJsonSchema",
    "stopSequences",
    "maxOutputTokens",
    "prompt_tokens_details",
    "cached_tokens",
    "completion_tokens_details",
    "reasoning_tokens",
];

/// String values the translations branch on.
const WORDS: &[&str] = &[
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "model",
    "function",
    "text",
    "image_url",
    "auto",
    "none",
    "required",
    "ANY",
    "AUTO",
    "NONE",
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "json_object",
    "json_schema",
    "application/json",
    "image/png",
    "text/plain",
    "data:image/png;base64,AAAA",
    "https://x.test/a.png",
    "{}",
    "{\"a\":1}",
    "[1]",
    "call_0",
    "c1",
    "f",
    "stop",
    "length",
    "tool_calls",
    "[DONE]",
    "",
];

/// Any JSON leaf, biased to the words the translations look for.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        prop::sample::select(WORDS).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

/// Arbitrary JSON, depth at most 4, objects keyed mostly by the keys the translations read.
fn arb_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![4 => prop::sample::select(KEYS).prop_map(String::from), 1 => any::<String>()];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// An object with some of the translations' keys, each holding arbitrary JSON.
fn arb_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(KEYS), arb_json()), 0..8).prop_map(|pairs| {
        Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    })
}

/// A request, response or chunk shape: a list of arbitrary objects under a top-level key,
/// next to other arbitrary fields.
fn arb_shaped() -> impl Strategy<Value = Value> {
    let list =
        prop::sample::select(&["messages", "contents", "candidates", "choices", "tools"][..]);
    (
        list,
        prop::collection::vec(arb_object(), 0..5),
        arb_object(),
    )
        .prop_map(|(key, items, rest)| {
            let mut object = match rest {
                Value::Object(object) => object,
                _ => Map::new(),
            };
            object.insert(key.to_string(), Value::Array(items));
            Value::Object(object)
        })
}

/// Any input worth fuzzing with.
fn arb_input() -> impl Strategy<Value = Value> {
    prop_oneof![arb_json(), arb_shaped()]
}

proptest! {
    #[test]
    fn no_translation_panics_on_arbitrary_json(value in arb_input()) {
        let _ = request_from_openai(&value);
        let _ = response_to_openai(&value, "m");
        let _ = request_to_openai(&value, "m");
        let _ = response_from_openai(&value);
        let _ = chunk_from_openai(&value);
    }

    #[test]
    fn translated_requests_translate_back(value in arb_shaped()) {
        if let Ok(gemini) = request_from_openai(&value) {
            prop_assert!(request_to_openai(&gemini, "m").is_ok(), "{gemini}");
        }
    }

    #[test]
    fn the_stream_never_panics_on_arbitrary_payloads(
        payloads in prop::collection::vec(prop_oneof![
            arb_input().prop_map(|v| v.to_string()),
            any::<String>(),
        ], 0..6)
    ) {
        let mut stream = StreamToOpenAi::new("m");
        for payload in &payloads {
            let _ = stream.push(payload);
        }
        let _ = stream.finish();
        let _ = stream.finish();
    }

    #[test]
    fn error_bodies_never_panic(status in any::<u16>(), message in any::<String>()) {
        let body = error_body(status, &message);
        prop_assert_eq!(response_to_openai(&body, "m"), Err(message));
    }
}
