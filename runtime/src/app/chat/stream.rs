//! A live answer relayed as server-sent events: [`relay`] forwards the LLM step's stream
//! ([`AnswerStream`], which settles its own cost and cache fill) event by event, and runs the
//! observe-only response phase once it ended.

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::llm::{AnswerStream, StreamEvent};
use crate::openai::ApiError;
use crate::pipeline::Forwarded;

/// Chunks buffered between the upstream reader and a slow client.
const STREAM_CHANNEL_CHUNKS: usize = 64;

/// Relays a live answer stream chunk by chunk. A failure after the first byte ends the
/// stream with an explicit error event, never a silent truncation. When the stream ends,
/// stages with a response phase see the assembled response (observe only: the client already
/// has the bytes).
///
/// The stream settles its own cost and cache fill ([`AnswerStream`]); here it is only read,
/// and the usage chunk the client did not ask for is left out.
///
/// The relay task ends as soon as the client is gone, even while it waits for the upstream:
/// a client that disconnects, or stops reading until `server.write_timeout_ms` closes its
/// connection (see `server/conn.rs`), drops the receiver, which closes the channel; the task
/// then drops the stream (which settles its charge from what was streamed) and the stage
/// instances it holds.
pub(super) fn relay(
    mut fwd: Forwarded,
    mut stream: Box<AnswerStream>,
    include_usage: bool,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_CHANNEL_CHUNKS);
    tokio::spawn(async move {
        let assembled = loop {
            let event = tokio::select! {
                event = stream.next() => event,
                // The client went away while the upstream was quiet.
                () = tx.closed() => return,
            };
            let out = match event {
                Some(Ok(StreamEvent::Done(assembled))) => break assembled,
                Some(Ok(StreamEvent::Chunk(mut chunk))) => {
                    if !include_usage && strip_usage(&mut chunk) {
                        continue;
                    }
                    format!("data: {chunk}\n\n")
                }
                Some(Ok(StreamEvent::Raw(data))) => format!("data: {data}\n\n"),
                Some(Err(err)) => {
                    let _ = tx.send(error_event(&ApiError::from_facing(&err))).await;
                    return;
                }
                // `next` hands out `[DONE]` or an error before it ends.
                None => return,
            };
            if tx.send(Bytes::from(out)).await.is_err() {
                return; // the client went away
            }
        };
        drop(stream);
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
        drop(tx);
        if fwd.has_response_phase()
            && let Err(err) = fwd.on_response(assembled, false, 0).await
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
