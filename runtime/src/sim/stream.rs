//! Streamed chat answers: OpenAI's server-sent-events framing, paced by `ttft_ms` and
//! `inter_token_ms`, and the `stream_cut_after` and `stream_stall_after` faults.
//!
//! The frames are planned up front (a role chunk per choice, then for each reply token one
//! chunk per choice, a finish chunk per choice, optional usage chunk, `[DONE]`) and then
//! released one by one with their delays, so the chunk layout can be tested without a network
//! and the pacing without a tokenizer. Each content chunk is billed as it is released.
//!
//! A tool call streams as OpenAI streams one: after the role chunk, a chunk opening the call
//! (`id`, `type`, `function.name`, empty `arguments`), then one chunk per token of its
//! arguments. Those argument chunks are the content chunks the stream faults count and the
//! stream bills.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use serde::Serialize;

use crate::clock::unix_secs;
use crate::sim::body::{self, SimBody, StreamCut};
use crate::sim::chat::{ChatRequest, Usage, WireFunctionCall, WireToolCall};
use crate::sim::reply::Reply;
use crate::sim::state::SimState;
use crate::sim::stats::bump;
use crate::sim::tokens;

/// One planned SSE frame.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedFrame {
    /// Wait before sending it.
    pub delay: Duration,
    /// `data: ...\n\n`.
    pub bytes: Bytes,
    /// What it carries.
    pub kind: FrameKind,
}

/// What a frame carries; `stream_cut_after` and `stream_stall_after` count `Content` frames
/// and never act before `Role` or `ToolCallStart`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// The first chunk, `delta.role = "assistant"`.
    Role,
    /// The chunk that opens a tool call (its id and name; no arguments yet).
    ToolCallStart,
    /// One token of the reply (of the tool call's arguments, for a tool call).
    Content,
    /// Finish chunk, usage chunk or `[DONE]`.
    Trailer,
}

/// `chat.completion.chunk`.
#[derive(Serialize)]
struct Chunk<'a> {
    /// Same id on every chunk of a stream.
    id: &'a str,
    /// Always `chat.completion.chunk`.
    object: &'static str,
    /// Unix seconds.
    created: u64,
    /// Model named in the answer.
    model: &'a str,
    /// One choice, or none for the usage chunk.
    choices: Vec<ChunkChoice<'a>>,
    /// Absent unless `include_usage`; then null on every chunk but the usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

/// The one choice of a chunk.
#[derive(Serialize)]
struct ChunkChoice<'a> {
    /// Which of the `n` choices it adds to.
    index: u32,
    /// What this chunk adds.
    delta: Delta<'a>,
    /// Always null.
    logprobs: Option<()>,
    /// Null except on the finish chunk.
    finish_reason: Option<&'a str>,
}

/// A chunk's `delta`.
#[derive(Serialize, Default)]
struct Delta<'a> {
    /// `assistant` on the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    /// A piece of the reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    /// The opening of the tool call, or a piece of its arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

/// A piece of a streamed tool call.
#[derive(Serialize)]
#[serde(untagged)]
enum ToolCallDelta<'a> {
    /// The first: index, id, type, name and empty arguments.
    Start(WireToolCall<'a>),
    /// Each next: a piece of the arguments.
    Arguments {
        /// Always 0: the reply has one call.
        index: u32,
        /// `{"arguments": piece}`.
        function: ArgumentsPiece<'a>,
    },
}

/// `function` of an argument piece.
#[derive(Serialize)]
struct ArgumentsPiece<'a> {
    /// A token of the arguments.
    arguments: &'a str,
}

/// Plans the frames of a stream: a role chunk per choice after `ttft`, each token `inter_token`
/// apart (one chunk per choice), a finish chunk per choice, the usage chunk if asked, `[DONE]`.
pub fn plan(
    request: &ChatRequest,
    reply: &Reply,
    id: &str,
    model: &str,
    ttft: Duration,
    inter_token: Duration,
) -> Vec<PlannedFrame> {
    let created = unix_secs();
    let usage_field = request.include_usage.then_some(None);
    let frame = |delay, choices, usage, kind| PlannedFrame {
        delay,
        bytes: sse(&Chunk {
            id,
            object: "chat.completion.chunk",
            created,
            model,
            choices,
            usage,
        }),
        kind,
    };
    let choice = |index, delta, finish_reason| ChunkChoice {
        index,
        delta,
        logprobs: None,
        finish_reason,
    };
    let call = reply.tool_call.as_ref();
    let pieces = tokens::split(call.map_or(&reply.text, |c| &c.arguments));
    let n = request.n.max(1);
    let per_choice = pieces.len() + 3;
    let mut frames = Vec::with_capacity(per_choice * n as usize + 2);
    for index in 0..n {
        let role = Delta {
            role: Some("assistant"),
            // OpenAI opens a tool call's message without content.
            content: call.is_none().then_some(""),
            tool_calls: None,
        };
        let delay = if index == 0 { ttft } else { Duration::ZERO };
        let first = vec![choice(index, role, None)];
        frames.push(frame(delay, first, usage_field, FrameKind::Role));
    }
    if let Some(call) = call {
        for index in 0..n {
            let start = Delta {
                tool_calls: Some([ToolCallDelta::Start(WireToolCall {
                    index: Some(0),
                    id: &call.id,
                    kind: "function",
                    function: WireFunctionCall {
                        name: &call.name,
                        arguments: "",
                    },
                })]),
                ..Delta::default()
            };
            let opening = vec![choice(index, start, None)];
            frames.push(frame(
                Duration::ZERO,
                opening,
                usage_field,
                FrameKind::ToolCallStart,
            ));
        }
    }
    for (i, piece) in pieces.iter().enumerate() {
        for index in 0..n {
            let delay = if i == 0 || index > 0 {
                Duration::ZERO
            } else {
                inter_token
            };
            let delta = match call {
                None => Delta {
                    content: Some(piece),
                    ..Delta::default()
                },
                Some(_) => Delta {
                    tool_calls: Some([ToolCallDelta::Arguments {
                        index: 0,
                        function: ArgumentsPiece { arguments: piece },
                    }]),
                    ..Delta::default()
                },
            };
            let content = vec![choice(index, delta, None)];
            frames.push(frame(delay, content, usage_field, FrameKind::Content));
        }
    }
    for index in 0..n {
        let finish = choice(index, Delta::default(), Some(reply.finish_reason));
        frames.push(frame(
            Duration::ZERO,
            vec![finish],
            usage_field,
            FrameKind::Trailer,
        ));
    }
    if request.include_usage {
        let usage = Some(Some(Usage::of(reply, n)));
        frames.push(frame(Duration::ZERO, Vec::new(), usage, FrameKind::Trailer));
    }
    frames.push(PlannedFrame {
        delay: Duration::ZERO,
        bytes: Bytes::from_static(b"data: [DONE]\n\n"),
        kind: FrameKind::Trailer,
    });
    frames
}

/// `data: <json>\n\n`.
fn sse(chunk: &Chunk<'_>) -> Bytes {
    let mut out = b"data: ".to_vec();
    // A chunk is plain strings and numbers; serializing it cannot fail.
    if serde_json::to_writer(&mut out, chunk).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// How a stream ends early, if it does.
pub enum EarlyEnd {
    /// Whole: every frame is sent.
    None,
    /// `stream_cut_after`: the connection is dropped after this many content chunks.
    Cut(u32),
    /// `stream_stall_after`: nothing more is sent after this many content chunks until the
    /// future (the simulator's shutdown) resolves; then the connection is dropped.
    Stall(u32, Pin<Box<dyn Future<Output = ()> + Send>>),
}

/// Where a stream is in its frames.
struct Cursor {
    /// Frames not yet sent.
    frames: VecDeque<PlannedFrame>,
    /// How it ends early, if it does.
    early: EarlyEnd,
    /// Content frames sent so far.
    content_sent: u32,
    /// Whether the stream has ended (sent `[DONE]` or been cut).
    ended: bool,
    /// For counting cuts and billing what is sent.
    state: Arc<SimState>,
}

/// Answers a streamed chat request with its accepted `reply`. With `EarlyEnd::Cut(n)`, at
/// most `n` content chunks are sent and the connection is then dropped before the finish chunk
/// and `[DONE]` (also when the reply has fewer than `n` tokens, so every stream fails while the
/// fault is on); with `EarlyEnd::Stall(n, _)` the stream goes quiet there instead, with the
/// connection open. Each content chunk is billed as one completion token when it is sent.
pub fn respond(
    request: &ChatRequest,
    reply: &Reply,
    state: Arc<SimState>,
    early: EarlyEnd,
) -> Response<SimBody> {
    let id = state.next_id("chatcmpl-");
    let model = state.response_model(request.model.as_deref());
    let frames = plan(request, reply, &id, model, state.ttft, state.inter_token);
    let cursor = Cursor {
        frames: frames.into(),
        early,
        content_sent: 0,
        ended: false,
        state,
    };
    let stream = futures_util::stream::unfold(cursor, next_frame);
    body::event_stream(Box::pin(stream))
}

/// Releases the next frame after its delay, or cuts the stream.
async fn next_frame(mut cursor: Cursor) -> Option<(Result<Bytes, StreamCut>, Cursor)> {
    if cursor.ended {
        return None;
    }
    let frame = cursor.frames.pop_front()?;
    let early = match &cursor.early {
        EarlyEnd::Cut(n) | EarlyEnd::Stall(n, _) => {
            cursor.content_sent >= *n
                && matches!(frame.kind, FrameKind::Content | FrameKind::Trailer)
        }
        EarlyEnd::None => false,
    };
    if early {
        cursor.ended = true;
        let fault = match &mut cursor.early {
            EarlyEnd::Stall(_, until_shutdown) => {
                until_shutdown.as_mut().await;
                "stream_stall_after"
            }
            _ => {
                bump(&cursor.state.stats.stream_cuts);
                // Let hyper flush the chunks already queued before the error drops the
                // connection.
                tokio::task::yield_now().await;
                "stream_cut_after"
            }
        };
        return Some((
            Err(StreamCut {
                chunks: cursor.content_sent,
                fault,
            }),
            cursor,
        ));
    }
    if !frame.delay.is_zero() {
        tokio::time::sleep(frame.delay).await;
    }
    if frame.kind == FrameKind::Content {
        cursor.content_sent += 1;
        cursor.state.stats.bill_completion(1);
    }
    Some((Ok(frame.bytes), cursor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::reply::PromptMessage;

    fn request(include_usage: bool) -> ChatRequest {
        ChatRequest {
            model: Some("m".into()),
            messages: vec![PromptMessage {
                role: "user".into(),
                text: "hello there".into(),
            }],
            stream: true,
            include_usage,
            max_tokens: None,
            n: 1,
            tool_name: None,
            json: false,
        }
    }

    fn parse(frame: &PlannedFrame) -> serde_json::Value {
        let text = std::str::from_utf8(&frame.bytes).expect("utf-8");
        let json = text
            .strip_prefix("data: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .expect("sse framing");
        serde_json::from_str(json).expect("json chunk")
    }

    #[test]
    fn frames_follow_openai_layout() {
        let req = request(false);
        let reply = Reply::for_prompt(&req.messages, None);
        let ms = Duration::from_millis;
        let frames = plan(&req, &reply, "chatcmpl-x", "m", ms(50), ms(5));
        let n = frames.len();
        let content: Vec<_> = frames
            .iter()
            .filter(|f| f.kind == FrameKind::Content)
            .collect();
        assert_eq!(content.len() as u64, reply.completion_tokens);
        assert_eq!(n, content.len() + 3);
        let first = parse(&frames[0]);
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert!(first.get("usage").is_none());
        assert_eq!(frames[0].delay, ms(50));
        assert_eq!(frames[1].delay, Duration::ZERO);
        assert_eq!(frames[2].delay, ms(5));
        let text: String = content
            .iter()
            .map(|f| {
                parse(f)["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        assert_eq!(text, reply.text);
        assert_eq!(parse(&frames[n - 2])["choices"][0]["finish_reason"], "stop");
        assert_eq!(&frames[n - 1].bytes[..], b"data: [DONE]\n\n");
    }

    #[test]
    fn include_usage_adds_a_usage_chunk() {
        let req = request(true);
        let reply = Reply::for_prompt(&req.messages, None);
        let frames = plan(&req, &reply, "id", "m", Duration::ZERO, Duration::ZERO);
        let n = frames.len();
        let usage = parse(&frames[n - 2]);
        assert_eq!(usage["choices"], serde_json::json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], reply.completion_tokens);
        assert_eq!(
            usage["usage"]["total_tokens"],
            reply.completion_tokens + reply.prompt_tokens
        );
        assert!(parse(&frames[0])["usage"].is_null());
        assert_eq!(parse(&frames[n - 3])["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn n_choices_stream_side_by_side_and_their_usage_counts_them_all() {
        let req = ChatRequest {
            n: 2,
            ..request(true)
        };
        let reply = Reply::for_prompt(&req.messages, None);
        let ms = Duration::from_millis;
        let frames = plan(&req, &reply, "id", "m", ms(50), ms(5));
        let index = |f: &PlannedFrame| parse(f)["choices"][0]["index"].as_u64();
        let roles: Vec<_> = frames
            .iter()
            .filter(|f| f.kind == FrameKind::Role)
            .collect();
        assert_eq!(
            roles.iter().map(|f| index(f)).collect::<Vec<_>>(),
            [Some(0), Some(1)]
        );
        assert_eq!((roles[0].delay, roles[1].delay), (ms(50), Duration::ZERO));
        let content: Vec<_> = frames
            .iter()
            .filter(|f| f.kind == FrameKind::Content)
            .collect();
        assert_eq!(content.len() as u64, 2 * reply.completion_tokens);
        for choice in 0..2 {
            let text: String = content
                .iter()
                .filter(|f| index(f) == Some(choice))
                .map(|f| {
                    parse(f)["choices"][0]["delta"]["content"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned()
                })
                .collect();
            assert_eq!(text, reply.text, "choice {choice}");
        }
        // One token apart for both choices: the second choice's chunk follows at once.
        assert_eq!(
            (content[2].delay, content[3].delay),
            (ms(5), Duration::ZERO)
        );
        let usage = parse(&frames[frames.len() - 2]);
        assert_eq!(
            usage["usage"]["completion_tokens"],
            2 * reply.completion_tokens
        );
    }

    #[test]
    fn a_tool_call_streams_its_opening_then_its_arguments() {
        let req = ChatRequest {
            tool_name: Some("lookup".into()),
            ..request(true)
        };
        let reply = Reply::tool_call(&req.messages, "lookup");
        let call = reply.tool_call.clone().expect("a tool call");
        let frames = plan(&req, &reply, "id", "m", Duration::ZERO, Duration::ZERO);
        let kinds: Vec<_> = frames.iter().map(|f| f.kind).collect();
        let args = tokens::split(&call.arguments).len();
        assert_eq!(kinds[..2], [FrameKind::Role, FrameKind::ToolCallStart]);
        assert!(kinds[2..2 + args].iter().all(|k| *k == FrameKind::Content));
        assert_eq!(frames.len(), 2 + args + 3, "finish, usage, [DONE]");
        let role = parse(&frames[0]);
        assert_eq!(
            role["choices"][0]["delta"],
            serde_json::json!({"role": "assistant"})
        );
        let opening = &parse(&frames[1])["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(
            opening,
            &serde_json::json!({"index": 0, "id": call.id, "type": "function",
                "function": {"name": "lookup", "arguments": ""}})
        );
        let joined: String = frames[2..2 + args]
            .iter()
            .map(|f| {
                let piece = &parse(f)["choices"][0]["delta"]["tool_calls"][0];
                assert_eq!(piece["index"], 0);
                assert!(piece.get("id").is_none());
                piece["function"]["arguments"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        assert_eq!(joined, call.arguments);
        let finish = parse(&frames[2 + args]);
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
        let usage = parse(&frames[3 + args]);
        assert_eq!(usage["usage"]["completion_tokens"], args);
    }
}
