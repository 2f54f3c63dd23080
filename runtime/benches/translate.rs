//! `translate`: what a provider translation adds to one request in process — the request
//! body built for the upstream and its answer read back — for an Anthropic and a Gemini
//! target against the OpenAI passthrough (the same body serialised, the same answer parsed),
//! and a streamed answer's chunks through the Anthropic stream translator.
//!
//! Run: `cargo bench -p weir --bench translate`.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use weir::openai::{parse_response, parse_response_value, request_json};
use weir::providers::translate::ToOpenAiStream;
use weir::providers::{anthropic, gemini};
use weir::wit::{ChatRequest, Message};

fn request() -> ChatRequest {
    ChatRequest {
        model: "demo".into(),
        messages: vec![
            Message::text(
                "system",
                "You are the assistant of the edge team. Be brief.",
            ),
            Message::text("user", "What is a weir, and how does it differ from a dam?"),
        ],
        temperature: Some(0.2),
        top_p: None,
        max_tokens: Some(256),
        stream: false,
        user: None,
        metadata: Vec::new(),
        extra: "{}".into(),
    }
}

const TEXT: &str = "A weir is a low barrier across a river that raises the water level upstream \
                    while letting it flow over the top; a dam holds the water back.";

fn openai_answer() -> Vec<u8> {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 30, "total_tokens": 61}
    })
    .to_string()
    .into_bytes()
}

fn anthropic_answer() -> Vec<u8> {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "text", "text": TEXT}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 31, "output_tokens": 30}
    })
    .to_string()
    .into_bytes()
}

fn gemini_answer() -> Vec<u8> {
    json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": TEXT}]},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 31, "candidatesTokenCount": 30,
                          "totalTokenCount": 61},
        "modelVersion": "m", "responseId": "r1"
    })
    .to_string()
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let req = request();
    let (openai, anthropic_body, gemini_body) =
        (openai_answer(), anthropic_answer(), gemini_answer());
    let mut group = c.benchmark_group("translate");
    group.bench_function("openai_passthrough", |b| {
        b.iter(|| {
            let body = request_json(&req, Some("m"), false).to_string();
            let answer = parse_response(&openai).unwrap();
            (body, answer)
        })
    });
    group.bench_function("anthropic", |b| {
        b.iter(|| {
            let json = request_json(&req, Some("m"), false);
            let body = anthropic::request_from_openai(&json, "m")
                .unwrap()
                .to_string();
            let value: Value = serde_json::from_slice(&anthropic_body).unwrap();
            let answer = parse_response_value(anthropic::response_to_openai(&value).unwrap());
            (body, answer.unwrap())
        })
    });
    group.bench_function("gemini", |b| {
        b.iter(|| {
            let json = request_json(&req, Some("m"), false);
            let body = gemini::request_from_openai(&json).unwrap().to_string();
            let value: Value = serde_json::from_slice(&gemini_body).unwrap();
            let answer = parse_response_value(gemini::response_to_openai(&value, "m").unwrap());
            (body, answer.unwrap())
        })
    });
    // A 30-token answer as Anthropic streams it: start, one block, 30 deltas, the end.
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "model": "m", "content": [], "stop_reason": null,
            "usage": {"input_tokens": 31, "output_tokens": 1}}})
        .to_string(),
        json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}})
        .to_string(),
    ];
    for word in TEXT.split_inclusive(' ') {
        events.push(
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": word}})
            .to_string(),
        );
    }
    events.push(json!({"type": "content_block_stop", "index": 0}).to_string());
    events.push(
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 30}})
        .to_string(),
    );
    events.push(json!({"type": "message_stop"}).to_string());
    group.bench_function("anthropic_stream_30_tokens", |b| {
        b.iter(|| {
            let mut stream = anthropic::StreamToOpenAi::new();
            let mut out = 0;
            for event in &events {
                out += stream.push(event).unwrap().len();
            }
            out
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
