//! The upstream stream of the LLM step, handled whole or relayed: [`collect`] reads it into
//! one response for stages that rewrite the response, [`relay`] forwards it chunk by chunk
//! as server-sent events, settling its cost and filling the cache when it ends.
//!
//! Moved here verbatim from the server's chat handler (issue 15); the LLM step is to return
//! a stream that settles itself, which replaces this file.

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::llm::{Fill, StreamCharge};
use crate::openai::{ApiError, StreamAccumulator};
use crate::pipeline::Forwarded;
use crate::router::UpstreamStream;
use crate::wit::ChatResponse;

/// Chunks buffered between the upstream reader and a slow client.
const STREAM_CHANNEL_CHUNKS: usize = 64;

/// Reads a whole upstream stream into one response (for stages that rewrite the response).
pub(super) async fn collect(mut stream: UpstreamStream) -> Result<ChatResponse, ApiError> {
    let mut acc = StreamAccumulator::default();
    let mut done = false;
    while let Some(event) = stream.next().await {
        let data = event.map_err(|err| stream_error(&stream.target, &err))?;
        if data == "[DONE]" {
            done = true;
            break;
        }
        if let Ok(chunk) = serde_json::from_str::<Value>(&data) {
            acc.push(&chunk);
        }
    }
    if !done {
        return Err(stream_error(
            &stream.target,
            "the stream ended without [DONE]",
        ));
    }
    Ok(acc.finish())
}

fn stream_error(target: &str, detail: &str) -> ApiError {
    ApiError::new(
        502,
        "upstream_error",
        "stream_interrupted",
        format!("upstream {target} broke off the stream: {detail}"),
    )
}

/// Relays a live upstream stream to the client chunk by chunk. A failure after the first
/// byte ends the stream with an explicit error event, never a silent truncation. When the
/// stream ends, stages with a response phase see the assembled response (observe only: the
/// client already has the bytes).
///
/// The stream's cost is settled when its usage chunk arrives (and added to that chunk as
/// `usage.cost`), or at its end from a local count of what was streamed when the upstream
/// sent no usage; a stream cut short is charged for its prompt and what did arrive.
///
/// The relay task ends as soon as the client is gone, even while it waits for the upstream:
/// a client that disconnects, or stops reading until `server.write_timeout_ms` closes its
/// connection (see `server/conn.rs`), drops the response body, which closes the channel; the task
/// then settles the charge and drops the upstream stream and the stage instances it holds.
pub(super) fn relay(
    mut fwd: Forwarded,
    mut stream: UpstreamStream,
    include_usage: bool,
    fill: Option<Fill>,
    mut charge: Option<StreamCharge>,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_CHANNEL_CHUNKS);
    tokio::spawn(async move {
        let mut acc = StreamAccumulator::default();
        let mut done = false;
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = tx.closed() => {
                    // The client went away while the upstream was quiet.
                    if let Some(charge) = charge.take() {
                        charge.finish(None, acc.text());
                    }
                    return;
                }
            };
            let Some(event) = event else {
                break;
            };
            let data = match event {
                Ok(data) => data,
                Err(err) => {
                    if let Some(charge) = charge.take() {
                        charge.finish(None, acc.text());
                    }
                    let _ = tx
                        .send(error_event(&stream_error(&stream.target, &err)))
                        .await;
                    return;
                }
            };
            if data == "[DONE]" {
                done = true;
                break;
            }
            let out = match serde_json::from_str::<Value>(&data) {
                Ok(mut chunk) => {
                    acc.push(&chunk);
                    if let Some(usage) = chunk.get("usage").and_then(crate::openai::parse_usage)
                        && let Some(pending) = charge.take()
                    {
                        let total = pending.finish(Some(usage), acc.text());
                        chunk["usage"]["cost"] = json!(crate::config::pico_to_usd(total));
                    }
                    if !include_usage && strip_usage(&mut chunk) {
                        continue;
                    }
                    format!("data: {chunk}\n\n")
                }
                Err(_) => format!("data: {data}\n\n"),
            };
            if tx.send(Bytes::from(out)).await.is_err() {
                if let Some(charge) = charge.take() {
                    charge.finish(None, acc.text());
                }
                return; // the client went away
            }
        }
        if let Some(charge) = charge.take() {
            charge.finish(None, acc.text());
        }
        if !done {
            let err = stream_error(&stream.target, "the stream ended without [DONE]");
            let _ = tx.send(error_event(&err)).await;
            return;
        }
        // Stored before [DONE] is sent: a client's next request after [DONE] must hit.
        let assembled = acc.finish();
        if let Some(fill) = fill {
            fill.store(assembled.clone());
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
        drop(tx);
        if fwd.has_response_phase()
            && let Err(err) = fwd.on_response(assembled).await
        {
            tracing::warn!(error = %err, "response phase after a relayed stream failed");
        }
    });
    rx
}

/// Removes usage the client did not ask for; true when the whole chunk should be dropped
/// (the usage-only chunk weir requested for itself).
fn strip_usage(chunk: &mut Value) -> bool {
    let Some(obj) = chunk.as_object_mut() else {
        return false;
    };
    let usage_only = obj
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|c| c.is_empty())
        && obj.get("usage").is_some_and(|u| !u.is_null());
    obj.remove("usage");
    usage_only
}

fn error_event(err: &ApiError) -> Bytes {
    Bytes::from(format!("data: {}\n\n", err.to_json()))
}
