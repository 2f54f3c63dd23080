//! The wire dialects the simulator speaks besides OpenAI's: Anthropic's Messages API, Google's
//! Gemini API and Azure OpenAI. Each one translates its request into an OpenAI chat request,
//! runs the one OpenAI path (`api::answer_chat` / `api::answer_embeddings`: the same faults,
//! billing, counters, latency and stream faults) and translates the answer back, so a test of
//! weir's provider translations meets a provider with the simulator's whole chaos kit.
//!
//! The translations themselves are `crate::providers::{anthropic, gemini}`; this module owns
//! only the glue: keys from each dialect's header, bodies in and out, error shapes, and the
//! re-framing of the OpenAI event stream. What the glue keeps on purpose:
//! - every error status, injected or not, is answered with the same status and headers
//!   (`Retry-After` included) and the dialect's error body; a stalled error body stays stalled;
//! - a stream cut by the `stream_cut_after` fault stays a cut (the body ends in the same
//!   error, without the dialect's closing event), and a stall stays a stall, because the
//!   OpenAI frames are translated one by one as they are released.
//!
//! Must not decide anything the OpenAI path decides (faults, billing, replies).

mod anthropic;
mod azure;
mod gemini;

pub use anthropic::{count_tokens as anthropic_count_tokens, messages as anthropic_messages};
pub use azure::{AzureOperation, azure};
pub use gemini::gemini;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Response;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use serde_json::Value;

use crate::openai::SseParser;
use crate::providers::translate::Untranslatable;
use crate::sim::body::{self, ChunkStream, SimBody};
use crate::sim::chat::ChatRequest;
use crate::sim::conn::ConnControl;
use crate::sim::error::ApiError;

/// A dialect's request body → the OpenAI chat request it stands for; a body that is not JSON
/// or that the translation refuses is a 400 (answered after the fault dice, as an unparsable
/// OpenAI body is).
fn translate_request(
    bytes: &[u8],
    to_openai: impl FnOnce(&Value) -> Result<Value, Untranslatable>,
) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::InvalidRequest(format!("could not parse the request body: {e}")))?;
    to_openai(&value).map_err(|e| ApiError::InvalidRequest(e.to_string()))
}

/// [`translate_request`], then read as the OpenAI path reads a request.
fn chat_request(
    bytes: &[u8],
    to_openai: impl FnOnce(&Value) -> Result<Value, Untranslatable>,
) -> Result<ChatRequest, ApiError> {
    translate_request(bytes, to_openai).and_then(ChatRequest::from_value)
}

/// An error response of the OpenAI path → the same status and headers with the dialect's
/// error body (`render(status, message)`); a body that was stalling stalls again, halfway
/// through the new body.
fn error_response(
    response: Response<SimBody>,
    render: fn(u16, &str) -> Value,
    conn: &ConnControl,
) -> Response<SimBody> {
    let status = response.status();
    let (mut parts, old) = response.into_parts();
    let message = parts
        .extensions
        .get::<ApiError>()
        .map(ToString::to_string)
        .or_else(|| match &old {
            SimBody::Full(Some(bytes)) => openai_error_message(bytes),
            _ => None,
        })
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    // A `Value` always serializes.
    let bytes = serde_json::to_vec(&render(status.as_u16(), &message)).unwrap_or_default();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let whole = Response::from_parts(parts, SimBody::Full(Some(Bytes::from(bytes))));
    match old {
        SimBody::Stream(_) => body::stall_halfway(whole, conn.until_shutdown()),
        SimBody::Full(_) => whole,
    }
}

/// `error.message` of an OpenAI error body.
fn openai_error_message(bytes: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    Some(value.get("error")?.get("message")?.as_str()?.to_owned())
}

/// A complete OpenAI JSON answer → the dialect's (`translate`), same status and headers.
fn json_response(
    response: Response<SimBody>,
    translate: impl FnOnce(&Value) -> Value,
) -> Response<SimBody> {
    let (mut parts, old) = response.into_parts();
    let openai: Option<Value> = match &old {
        SimBody::Full(Some(bytes)) => serde_json::from_slice(bytes).ok(),
        _ => None,
    };
    // The OpenAI path's own answers are always JSON; anything else passes through untouched.
    let Some(openai) = openai else {
        return Response::from_parts(parts, old);
    };
    let bytes = serde_json::to_vec(&translate(&openai)).unwrap_or_default();
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, SimBody::Full(Some(Bytes::from(bytes))))
}

/// Re-frames an OpenAI SSE body: each `data:` payload (a chunk's JSON, or `[DONE]`) goes to
/// `on_payload`, which appends the dialect's frames to its buffer. Payloads are handled as
/// their frames are released, so pacing, cuts (the body's `StreamCut` error, passed through)
/// and stalls are the OpenAI stream's.
fn reframe(
    stream: ChunkStream,
    mut on_payload: impl FnMut(&str, &mut Vec<u8>) + Send + 'static,
) -> ChunkStream {
    let mut parser = SseParser::default();
    let reframed = stream.filter_map(move |item| {
        let out = match item {
            Err(cut) => Some(Err(cut)),
            Ok(bytes) => {
                let mut out = Vec::new();
                match parser.feed(&bytes) {
                    Ok(payloads) => {
                        for payload in payloads {
                            on_payload(&payload, &mut out);
                        }
                    }
                    // The simulator's own frames stay far below the parser's bounds.
                    Err(error) => tracing::debug!(%error, "sim: cannot re-frame a stream"),
                }
                // An empty chunk would read as the end of a chunked body.
                (!out.is_empty()).then(|| Ok(Bytes::from(out)))
            }
        };
        std::future::ready(out)
    });
    Box::pin(reframed)
}

/// `data: <json>\n\n`, appended to `out`.
fn push_data(out: &mut Vec<u8>, data: &Value) {
    out.extend_from_slice(b"data: ");
    // A `Value` always serializes.
    if serde_json::to_writer(&mut *out, data).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
}

/// The value of `name` in a URL query (`a=1&b=2`), percent-decoded; `None` when absent or
/// not valid percent-encoded UTF-8.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| percent_decode(value))
}

/// Decodes `%XX` escapes (a `+` stays a `+`); `None` for a bad escape or bytes that are not
/// UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::body::StreamCut;
    use http::StatusCode;
    use tokio::sync::watch;

    /// The bytes of a complete body.
    pub(super) fn full_body(response: Response<SimBody>) -> Bytes {
        match response.into_body() {
            SimBody::Full(Some(bytes)) => bytes,
            _ => panic!("a complete body"),
        }
    }

    /// Collects a streamed body: its chunks, and the cut that ended it, if any.
    pub(super) async fn collect(response: Response<SimBody>) -> (String, Option<StreamCut>) {
        let SimBody::Stream(mut stream) = response.into_body() else {
            panic!("a streamed body");
        };
        let mut text = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(bytes) => text.push_str(std::str::from_utf8(&bytes).expect("utf-8")),
                Err(cut) => return (text, Some(cut)),
            }
        }
        (text, None)
    }

    /// An OpenAI SSE body of `payloads`, one frame per chunk, optionally ending in a cut.
    pub(super) fn openai_stream(payloads: &[&str], cut: bool) -> ChunkStream {
        let mut items: Vec<Result<Bytes, StreamCut>> = payloads
            .iter()
            .map(|p| Ok(Bytes::from(format!("data: {p}\n\n"))))
            .collect();
        if cut {
            items.push(Err(StreamCut {
                chunks: 1,
                fault: "stream_cut_after",
            }));
        }
        Box::pin(futures_util::stream::iter(items))
    }

    /// A connection control that never shuts down.
    pub(super) fn conn() -> ConnControl {
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        ConnControl::new(rx)
    }

    #[test]
    fn untranslatable_and_unparsable_bodies_are_400s() {
        let refuse = |_: &Value| Err(Untranslatable::new("top_k", "no OpenAI equivalent"));
        let err = chat_request(br#"{"top_k": 3}"#, refuse).expect_err("refused");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("top_k"), "{err}");
        let err = chat_request(b"{nope", |v: &Value| Ok(v.clone())).expect_err("not JSON");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let ok = chat_request(
            br#"{"messages":[{"role":"user","content":"hi"}]}"#,
            |v: &Value| Ok(v.clone()),
        );
        assert_eq!(ok.map(|r| r.messages.len()), Ok(1));
    }

    #[test]
    fn errors_keep_status_and_headers_in_the_dialect_shape() {
        let limited = body::error(&ApiError::RateLimited { retry_after_s: 7 });
        let render = |status: u16, message: &str| serde_json::json!({"s": status, "m": message});
        let response = error_response(limited, render, &conn());
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "7");
        let body: Value = serde_json::from_slice(&full_body(response)).expect("JSON");
        assert_eq!(body["s"], 429);
        assert!(body["m"].as_str().is_some_and(|m| m.contains("Rate limit")));
    }

    #[tokio::test]
    async fn a_stalled_error_stalls_in_the_dialect_shape() {
        let (tx, rx) = watch::channel(false);
        let control = ConnControl::new(rx);
        let err = ApiError::Injected {
            status: 503,
            billed_tokens: 0,
        };
        let stalled = body::stalled_error(&err, control.until_shutdown());
        let render = |_: u16, _: &str| serde_json::json!({"dialect": "x".repeat(40)});
        let response = error_response(stalled, render, &control);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let SimBody::Stream(mut stream) = response.into_body() else {
            panic!("a stalled body");
        };
        let half = stream.next().await.expect("a first half").expect("data");
        assert!(half.starts_with(b"{\"dialect\""), "{half:?}");
        tx.send(true).expect("the control listens");
        assert!(matches!(stream.next().await, Some(Err(_))));
    }

    #[tokio::test]
    async fn reframing_passes_cuts_through_and_skips_empty_frames() {
        let source = openai_stream(&["{\"a\":1}", "{\"skip\":true}", "[DONE]"], true);
        let stream = reframe(source, |payload, out| {
            if !payload.contains("skip") {
                out.extend_from_slice(format!("<{payload}>").as_bytes());
            }
        });
        let response = body::event_stream(stream);
        let (text, cut) = collect(response).await;
        assert_eq!(text, "<{\"a\":1}><[DONE]>");
        assert_eq!(cut.map(|c| c.fault), Some("stream_cut_after"));
    }

    #[test]
    fn query_params_are_found_and_decoded() {
        let q = Some("alt=sse&key=k%20y+z&flag");
        assert_eq!(query_param(q, "alt").as_deref(), Some("sse"));
        assert_eq!(query_param(q, "key").as_deref(), Some("k y+z"));
        assert_eq!(query_param(q, "flag").as_deref(), Some(""));
        assert_eq!(query_param(q, "api-version"), None);
        assert_eq!(query_param(None, "alt"), None);
        assert_eq!(
            percent_decode("models%2Fgemini").as_deref(),
            Some("models/gemini")
        );
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("cut%4"), None);
    }
}
