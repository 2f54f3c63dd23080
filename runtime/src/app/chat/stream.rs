//! A live answer relayed as server-sent events: [`relay`] forwards the LLM step's stream
//! ([`AnswerStream`], which settles its own cost and cache fill) event by event, through the
//! stages' chunk hooks (`on-response-chunk`) when there are any, and runs the observe-only
//! response phase of 0.1 stages once it ended.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::error::ChatError;
use crate::cost::Meter;
use crate::llm::{AnswerStream, StreamEvent};
use crate::openai::ApiError;
use crate::pipeline::{Forwarded, PipelineError};
use crate::wit::ChatResponse;
use crate::wit::v2::TextDelta;

/// Chunks buffered between the upstream reader and a slow client.
const STREAM_CHANNEL_CHUNKS: usize = 64;

/// Relays a live answer stream chunk by chunk. A failure after the first byte ends the
/// stream with an explicit error event, never a silent truncation. Each chunk's text goes
/// through the chunk hooks of the stages that have one (0.2 `on-response-chunk`); what they
/// held back comes out at the latest in one extra chunk before `[DONE]`. When the stream ends,
/// 0.1 stages with a response phase see the assembled response (observe only: the client
/// already has the bytes).
///
/// The stream settles its own cost and cache fill ([`AnswerStream`]); here it is only read,
/// and the usage chunk the client did not ask for is left out.
///
/// The relay task ends as soon as the client is gone, even while it waits for the upstream:
/// a client that disconnects, or stops reading until `server.write_timeout_ms` closes its
/// connection (see `server/conn.rs`), drops the receiver, which closes the channel; the task
/// then drops the stream (which settles its charge from what was streamed) and the stage
/// instances it holds.
///
/// Once the stream is settled, however it ended, the second receiver gets how it ended (its
/// cost and error) for the request's record: the record of a stream is made at its end, not
/// when its headers went out.
pub(super) fn relay(
    mut fwd: Forwarded,
    mut stream: Box<AnswerStream>,
    include_usage: bool,
    meter: Arc<Meter>,
) -> (mpsc::Receiver<Bytes>, oneshot::Receiver<StreamEnd>) {
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_CHANNEL_CHUNKS);
    let (end_tx, end_rx) = oneshot::channel();
    tokio::spawn(async move {
        let ended = forward(&mut fwd, &mut stream, &tx, include_usage).await;
        // Settles the charge (at `[DONE]` already, else from what was streamed).
        drop(stream);
        let assembled = match ended {
            Ok(assembled) => assembled,
            Err(error) => {
                let _ = end_tx.send(StreamEnd::now(&meter, Some(error)));
                return;
            }
        };
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
        drop(tx);
        let _ = end_tx.send(StreamEnd::now(&meter, None));
        if fwd.has_response_phase()
            && let Err(err) = fwd.on_response(assembled, false, 0).await
        {
            tracing::warn!(error = %err, "response phase after a relayed stream failed");
        }
    });
    (rx, end_rx)
}

/// How a relayed stream ended, sent once its charge is settled.
#[derive(Debug)]
pub struct StreamEnd {
    /// What the request cost in the end, pico-dollars.
    pub cost: u64,
    /// Why it ended before `[DONE]`: the code and message of weir's error event, or the client
    /// going away.
    pub error: Option<(String, String)>,
}

impl StreamEnd {
    fn now(meter: &Meter, error: Option<(String, String)>) -> StreamEnd {
        StreamEnd {
            cost: meter.total(),
            error,
        }
    }
}

/// Relays `stream`'s events to `tx` through the chunk hooks until `[DONE]` (not sent: the
/// caller sends it once the stream is settled): the assembled response, or why the stream
/// ended first (its error event was sent, or the client went away).
async fn forward(
    fwd: &mut Forwarded,
    stream: &mut AnswerStream,
    tx: &mpsc::Sender<Bytes>,
    include_usage: bool,
) -> Result<ChatResponse, (String, String)> {
    let mut hooks = fwd.has_chunk_hooks().then(Hooks::default);
    let assembled = loop {
        let event = tokio::select! {
            event = stream.next() => event,
            // The client went away while the upstream was quiet.
            () = tx.closed() => return Err(client_gone()),
        };
        let out = match event {
            Some(Ok(StreamEvent::Done(assembled))) => break assembled,
            Some(Ok(StreamEvent::Chunk(mut chunk))) => {
                if !include_usage && strip_usage(&mut chunk) {
                    continue;
                }
                if let Some(hooks) = &mut hooks
                    && let Err(err) = hooks.apply(fwd, &mut chunk).await
                {
                    return Err(
                        send_error(tx, ApiError::from_facing(&ChatError::Pipeline(err))).await,
                    );
                }
                format!("data: {chunk}\n\n")
            }
            Some(Err(err)) => return Err(send_error(tx, ApiError::from_facing(&err)).await),
            // `next` hands out `[DONE]` or an error before it ends.
            None => return Err(client_gone()),
        };
        if tx.send(Bytes::from(out)).await.is_err() {
            return Err(client_gone());
        }
    };
    if let Some(hooks) = &mut hooks {
        match hooks.flush(fwd).await {
            Ok(Some(tail)) => {
                let _ = tx.send(Bytes::from(format!("data: {tail}\n\n"))).await;
            }
            Ok(None) => {}
            Err(err) => {
                return Err(send_error(tx, ApiError::from_facing(&ChatError::Pipeline(err))).await);
            }
        }
        fwd.end_chunks();
    }
    Ok(assembled)
}

/// The record's error for a stream whose client went away before its end.
fn client_gone() -> (String, String) {
    (
        "client_closed".to_string(),
        "the client went away before the stream ended".to_string(),
    )
}

/// Sends `err` as the stream's error event; its code and message.
async fn send_error(tx: &mpsc::Sender<Bytes>, err: ApiError) -> (String, String) {
    let _ = tx.send(error_event(&err)).await;
    (err.code, err.message)
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

/// What the chunk hooks need to know across chunks.
#[derive(Default)]
struct Hooks {
    /// Choices that carried text and have not ended: each gets one last call at the end.
    open: BTreeSet<u32>,
    /// `id`, `model` and `created` of the last chunk, for the chunk that flushes.
    template: Option<(Value, Value, Value)>,
}

impl Hooks {
    /// Runs `chunk`'s text through the chunk hooks and writes back what they return. A chunk
    /// with no text (the role chunk, tool-call deltas, usage) passes untouched.
    async fn apply(&mut self, fwd: &mut Forwarded, chunk: &mut Value) -> Result<(), PipelineError> {
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            return Ok(());
        };
        let mut deltas = Vec::new();
        for (position, choice) in choices.iter().enumerate() {
            let index = choice_index(choice, position);
            let text = choice.pointer("/delta/content").and_then(Value::as_str);
            let last = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            if text.is_none() && !(last && self.open.contains(&index)) {
                continue;
            }
            if last {
                self.open.remove(&index);
            } else {
                self.open.insert(index);
            }
            deltas.push(TextDelta {
                choice: index,
                text: text.unwrap_or_default().to_string(),
                last,
            });
        }
        if deltas.is_empty() {
            return Ok(());
        }
        self.template = Some((
            chunk.get("id").cloned().unwrap_or(Value::Null),
            chunk.get("model").cloned().unwrap_or(Value::Null),
            chunk.get("created").cloned().unwrap_or(Value::Null),
        ));
        let asked: BTreeSet<u32> = deltas.iter().map(|d| d.choice).collect();
        let mut out = fwd.on_chunk(deltas).await?;
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            return Ok(());
        };
        for (position, choice) in choices.iter_mut().enumerate() {
            let index = choice_index(choice, position);
            if !asked.contains(&index) {
                continue;
            }
            let text = take_text(&mut out, index);
            let had_content = choice.pointer("/delta/content").is_some();
            if (had_content || !text.is_empty())
                && let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut)
            {
                delta.insert("content".to_string(), Value::String(text));
            }
        }
        // Text for a choice this chunk does not carry: a choice entry of its own.
        while let Some(first) = out.first().map(|d| d.choice) {
            let text = take_text(&mut out, first);
            choices
                .push(json!({"index": first, "delta": {"content": text}, "finish_reason": null}));
        }
        Ok(())
    }

    /// The stream ended: every choice still open gets its last call; what comes back is one
    /// more chunk (`None` when it is all empty).
    async fn flush(&mut self, fwd: &mut Forwarded) -> Result<Option<Value>, PipelineError> {
        if self.open.is_empty() {
            return Ok(None);
        }
        let deltas = std::mem::take(&mut self.open)
            .into_iter()
            .map(|choice| TextDelta {
                choice,
                text: String::new(),
                last: true,
            })
            .collect();
        let out = fwd.on_chunk(deltas).await?;
        let choices: Vec<Value> = out
            .into_iter()
            .filter(|d| !d.text.is_empty())
            .map(
                |d| json!({"index": d.choice, "delta": {"content": d.text}, "finish_reason": null}),
            )
            .collect();
        if choices.is_empty() {
            return Ok(None);
        }
        let (id, model, created) = self.template.take().unwrap_or_default();
        Ok(Some(json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        })))
    }
}

/// A chunk choice's `index` (its position when it has none).
fn choice_index(choice: &Value, position: usize) -> u32 {
    choice
        .get("index")
        .and_then(Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
        .unwrap_or(u32::try_from(position).unwrap_or(u32::MAX))
}

/// Every text `out` has for `choice`, joined, taken out of `out`.
fn take_text(out: &mut Vec<TextDelta>, choice: u32) -> String {
    let mut text = String::new();
    out.retain(|d| {
        if d.choice == choice {
            text.push_str(&d.text);
            false
        } else {
            true
        }
    });
    text
}

fn error_event(err: &ApiError) -> Bytes {
    Bytes::from(format!("data: {}\n\n", err.to_json()))
}
