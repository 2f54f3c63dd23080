//! `POST /v1/chat/completions`: the request as the simulator reads it, and the non-streamed
//! answer. Streaming lives in `stream`; what the answer says lives in `reply`.
//!
//! Parsing is lenient where OpenAI clients vary (unknown fields are ignored, `model` may be
//! absent, `content` may be a string, an array of parts or null) and strict where a real
//! provider is (the body must be JSON with a non-empty `messages` array; token limits ≥ 1;
//! `n` within 1..=[`MAX_CHOICES`]).
//!
//! A request the simulator accepts is billed at once ([`accept`]), as a provider bills a
//! request it started on: see `stats::Billed`.
//!
//! Tools: a request with a non-empty `tools` array, a `tool_choice` other than `"none"` and a
//! last message that is not a `tool` result is answered with one call of the function
//! `tool_choice` names, else of the first tool ([`ChatRequest::tool_name`]); after a tool
//! result the answer is text again, quoting it (see `reply`). So an agent loop through a
//! proxy takes exactly one round trip through its tool.

use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::clock::unix_secs;
use crate::sim::body::{self, SimBody};
use crate::sim::error::ApiError;
use crate::sim::faults::UsageFaults;
use crate::sim::reply::{PromptMessage, Reply};
use crate::sim::state::SimState;

/// The most choices (`n`) a request may ask for, as OpenAI allows.
pub const MAX_CHOICES: u32 = 128;

/// A chat request, reduced to what the simulator uses.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    /// The requested model, if any.
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<PromptMessage>,
    /// Whether to answer as server-sent events.
    pub stream: bool,
    /// `stream_options.include_usage`: add a usage chunk before `[DONE]`.
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    /// `n`: how many choices to answer, each the same reply (1 when absent).
    pub n: u32,
    /// The function the answer calls instead of answering text, if it does (see the module
    /// doc).
    pub tool_name: Option<String>,
    /// `response_format` asks for JSON (`json_object` or `json_schema`): the answer is
    /// `{"answer": "<the reply>"}` (unless the `invalid_json_first` fault says otherwise).
    pub json: bool,
}

/// The wire form of a chat request (only the fields the simulator reads).
#[derive(Deserialize)]
struct WireRequest {
    /// Requested model.
    model: Option<String>,
    /// The conversation.
    messages: Vec<WireMessage>,
    /// `true` for SSE.
    stream: Option<bool>,
    /// Streaming options.
    stream_options: Option<WireStreamOptions>,
    /// Legacy completion token limit.
    max_tokens: Option<u64>,
    /// Current completion token limit; wins over `max_tokens`.
    max_completion_tokens: Option<u64>,
    /// Choices to answer.
    n: Option<u64>,
    /// Tools offered to the model.
    tools: Option<Vec<WireTool>>,
    /// `"none"`, `"auto"`, `"required"` or `{"type": "function", "function": {"name"}}`.
    tool_choice: Option<serde_json::Value>,
    /// `{"type": "text" | "json_object" | "json_schema", ...}`.
    response_format: Option<serde_json::Value>,
}

/// One of `tools` (only function tools have a name the simulator can call).
#[derive(Deserialize)]
struct WireTool {
    /// The function, for a `function` tool.
    function: Option<WireFunction>,
}

/// A tool's `function`.
#[derive(Deserialize)]
struct WireFunction {
    /// Its name.
    name: String,
}

/// `stream_options`.
#[derive(Deserialize)]
struct WireStreamOptions {
    /// Whether to send a final usage chunk.
    include_usage: Option<bool>,
}

/// One message on the wire.
#[derive(Deserialize)]
struct WireMessage {
    /// Author role.
    role: String,
    /// Text, parts, or null (e.g. an assistant message with tool calls only).
    content: Option<WireContent>,
}

/// Message content: a string or an array of typed parts.
#[derive(Deserialize)]
#[serde(untagged)]
enum WireContent {
    /// Plain text.
    Text(String),
    /// Typed parts; only `text` parts carry text.
    Parts(Vec<WirePart>),
}

/// One content part (`{"type": "text", "text": ...}`, `{"type": "image_url", ...}`, ...).
#[derive(Deserialize)]
struct WirePart {
    /// The text of a text part; absent for other parts.
    text: Option<String>,
}

impl ChatRequest {
    /// Parses a request body; malformed JSON or a bad field is a 400.
    pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
        let wire: WireRequest = serde_json::from_slice(body).map_err(unparsable)?;
        ChatRequest::from_wire(wire)
    }

    /// Reads a request already parsed as JSON (a wire dialect's translation); a bad field is
    /// a 400.
    pub fn from_value(body: serde_json::Value) -> Result<ChatRequest, ApiError> {
        let wire: WireRequest = serde_json::from_value(body).map_err(unparsable)?;
        ChatRequest::from_wire(wire)
    }

    /// Checks and reduces the wire form.
    fn from_wire(wire: WireRequest) -> Result<ChatRequest, ApiError> {
        if wire.messages.is_empty() {
            return Err(ApiError::InvalidRequest(
                "'messages' must contain at least one message".into(),
            ));
        }
        let max_tokens = wire.max_completion_tokens.or(wire.max_tokens);
        if max_tokens == Some(0) {
            return Err(ApiError::InvalidRequest(
                "max_tokens / max_completion_tokens must be at least 1".into(),
            ));
        }
        let n = match wire.n {
            None => 1,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_CHOICES).contains(n))
                .ok_or_else(|| {
                    ApiError::InvalidRequest(format!(
                        "'n' must be between 1 and {MAX_CHOICES}, got {n}"
                    ))
                })?,
        };
        let last_is_tool = wire.messages.last().is_some_and(|m| m.role == "tool");
        let tool_name = if last_is_tool {
            None
        } else {
            tool_to_call(wire.tools.as_deref(), wire.tool_choice.as_ref())
        };
        let messages = wire
            .messages
            .into_iter()
            .map(|m| PromptMessage {
                role: m.role,
                text: match m.content {
                    None => String::new(),
                    Some(WireContent::Text(text)) => text,
                    Some(WireContent::Parts(parts)) => parts
                        .into_iter()
                        .filter_map(|p| p.text)
                        .collect::<Vec<_>>()
                        .join("\n"),
                },
            })
            .collect();
        Ok(ChatRequest {
            model: wire.model,
            messages,
            stream: wire.stream.unwrap_or(false),
            include_usage: wire
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            max_tokens,
            n,
            tool_name,
            json: wire
                .response_format
                .as_ref()
                .and_then(|f| f["type"].as_str())
                .is_some_and(|t| t == "json_object" || t == "json_schema"),
        })
    }
}

/// The 400 of a body that is not a chat request.
fn unparsable(e: serde_json::Error) -> ApiError {
    ApiError::InvalidRequest(format!("could not parse the chat request body: {e}"))
}

/// The function a request with `tools` gets called: the one `tool_choice` names, else the
/// first function tool's; none without function tools or with `tool_choice: "none"`.
fn tool_to_call(
    tools: Option<&[WireTool]>,
    tool_choice: Option<&serde_json::Value>,
) -> Option<String> {
    let mut names = tools?.iter().filter_map(|t| t.function.as_ref());
    let first = names.next()?;
    if tool_choice.and_then(serde_json::Value::as_str) == Some("none") {
        return None;
    }
    let chosen = tool_choice
        .and_then(|c| c.get("function"))
        .and_then(|f| f.get("name"))
        .and_then(serde_json::Value::as_str);
    Some(chosen.unwrap_or(&first.name).to_owned())
}

/// OpenAI `usage`.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u64,
    /// Tokens of the reply.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
    /// The prompt cache's share of the prompt, when the usage faults report one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptDetails>,
}

/// OpenAI `usage.prompt_tokens_details`, with weir's `cache_creation_tokens` beside
/// `cached_tokens` (what `providers::anthropic` makes of Anthropic's cache usage).
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct PromptDetails {
    /// Prompt tokens read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to it.
    pub cache_creation_tokens: u64,
}

impl Usage {
    /// The usage of `choices` copies of a reply.
    pub fn of(reply: &Reply, choices: u32) -> Usage {
        let completion_tokens = reply.completion_tokens.saturating_mul(u64::from(choices));
        Usage {
            prompt_tokens: reply.prompt_tokens,
            completion_tokens,
            // Saturating: `usage_prompt_tokens` may report any u64.
            total_tokens: reply.prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: (reply.cached_tokens > 0 || reply.cache_write_tokens > 0)
                .then_some(PromptDetails {
                    cached_tokens: reply.cached_tokens,
                    cache_creation_tokens: reply.cache_write_tokens,
                }),
        }
    }
}

/// `chat.completion` response body.
#[derive(Serialize)]
struct Completion<'a> {
    /// `chatcmpl-...`.
    id: &'a str,
    /// Always `chat.completion`.
    object: &'static str,
    /// Unix seconds.
    created: u64,
    /// Model named in the answer.
    model: &'a str,
    /// `n` choices.
    choices: Vec<Choice<'a>>,
    /// Token counts.
    usage: Usage,
}

/// One of `choices`.
#[derive(Serialize)]
struct Choice<'a> {
    /// Its position.
    index: u32,
    /// The assistant message.
    message: AssistantMessage<'a>,
    /// Always null.
    logprobs: Option<()>,
    /// `stop` or `length`.
    finish_reason: &'a str,
}

/// `choices[0].message`.
#[derive(Serialize)]
struct AssistantMessage<'a> {
    /// Always `assistant`.
    role: &'static str,
    /// The reply text; null for a tool call.
    content: Option<&'a str>,
    /// Always null.
    refusal: Option<()>,
    /// The tool call, when the reply is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[WireToolCall<'a>; 1]>,
}

/// An OpenAI tool call, as answered (whole in a message, or its first chunk in a stream).
#[derive(Serialize)]
pub struct WireToolCall<'a> {
    /// Its position among the calls (streams only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// `call_...`.
    pub id: &'a str,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The function and its arguments.
    pub function: WireFunctionCall<'a>,
}

/// A tool call's `function`.
#[derive(Serialize)]
pub struct WireFunctionCall<'a> {
    /// The function's name.
    pub name: &'a str,
    /// Its arguments as JSON text (empty in a stream's first tool-call chunk).
    pub arguments: &'a str,
}

/// Accepts a request the simulator will answer: its reply (reporting the usage faults'
/// counts instead of the real ones when given), billed now. A non-streamed answer is billed in full, so
/// a client that leaves before it arrives has still paid for it; a stream is billed its
/// prompt now and each content token as it is sent (`stream`).
pub fn accept(request: &ChatRequest, state: &SimState, usage: UsageFaults) -> Reply {
    let reply = match &request.tool_name {
        Some(name) => Reply::tool_call(&request.messages, name),
        None if request.json => {
            let served = (state.json_answers).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let invalid = state
                .faults()
                .invalid_json_first
                .is_some_and(|n| served < n);
            Reply::json(&request.messages, invalid)
        }
        None => Reply::for_prompt(&request.messages, request.max_tokens),
    }
    .with_usage(usage);
    let usage = Usage::of(&reply, request.n);
    // A stream bills each chunk as it goes; one answered whole (`json_for_streams`) at once.
    let completion = if request.stream && !state.faults().json_for_streams {
        0
    } else {
        usage.completion_tokens
    };
    state.stats.bill(usage.prompt_tokens, completion);
    reply
}

/// Answers a non-streamed chat request with its accepted `reply`, once per choice.
pub fn respond(request: &ChatRequest, reply: &Reply, state: &SimState) -> Response<SimBody> {
    let id = state.next_id("chatcmpl-");
    let completion = Completion {
        id: &id,
        object: "chat.completion",
        created: unix_secs(),
        model: state.response_model(request.model.as_deref()),
        choices: (0..request.n)
            .map(|index| Choice {
                index,
                message: AssistantMessage {
                    role: "assistant",
                    content: reply.tool_call.is_none().then_some(reply.text.as_str()),
                    refusal: None,
                    tool_calls: reply.tool_call.as_ref().map(|call| {
                        [WireToolCall {
                            index: None,
                            id: &call.id,
                            kind: "function",
                            function: WireFunctionCall {
                                name: &call.name,
                                arguments: &call.arguments,
                            },
                        }]
                    }),
                },
                logprobs: None,
                finish_reason: reply.finish_reason,
            })
            .collect(),
        usage: Usage::of(reply, request.n),
    };
    body::json(StatusCode::OK, &completion)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_string_and_part_contents() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]},
            {"role":"assistant","content":null,"tool_calls":[]}
        ],"stream":true,"stream_options":{"include_usage":true},"max_tokens":9,"temperature":0.2}"#;
        let r = ChatRequest::parse(body).expect("valid request");
        assert_eq!(r.model.as_deref(), Some("m"));
        assert_eq!(r.messages[1].text, "a\nb");
        assert_eq!(r.messages[2].text, "");
        assert!(r.stream && r.include_usage);
        assert_eq!(r.max_tokens, Some(9));
        assert_eq!(r.n, 1);
    }

    #[test]
    fn n_asks_for_that_many_choices_within_the_limit() {
        let with_n = |n: &str| {
            let body = format!(r#"{{"messages":[{{"role":"user","content":"x"}}],"n":{n}}}"#);
            ChatRequest::parse(body.as_bytes()).map(|r| r.n)
        };
        assert_eq!(with_n("2"), Ok(2));
        assert_eq!(with_n("128"), Ok(128));
        for bad in ["0", "129", "1000000000", "-1", "2.5", "\"2\""] {
            let err = with_n(bad).expect_err(bad);
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn tools_pick_the_function_to_call() {
        let tool_name = |extra: &str| {
            let body = format!(
                r#"{{"messages":[{{"role":"user","content":"x"}}],"tools":[
                    {{"type":"function","function":{{"name":"first"}}}},
                    {{"type":"function","function":{{"name":"second"}}}}]{extra}}}"#
            );
            ChatRequest::parse(body.as_bytes()).map(|r| r.tool_name)
        };
        assert_eq!(tool_name(""), Ok(Some("first".into())));
        assert_eq!(
            tool_name(r#","tool_choice":"auto""#),
            Ok(Some("first".into()))
        );
        assert_eq!(
            tool_name(r#","tool_choice":"required""#),
            Ok(Some("first".into()))
        );
        let named = r#","tool_choice":{"type":"function","function":{"name":"second"}}"#;
        assert_eq!(tool_name(named), Ok(Some("second".into())));
        assert_eq!(tool_name(r#","tool_choice":"none""#), Ok(None));
        let empty = br#"{"messages":[{"role":"user","content":"x"}],"tools":[]}"#;
        assert_eq!(ChatRequest::parse(empty).map(|r| r.tool_name), Ok(None));
        let after_tool = br#"{"messages":[{"role":"user","content":"x"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c","content":"42"}],
            "tools":[{"type":"function","function":{"name":"f"}}]}"#;
        assert_eq!(
            ChatRequest::parse(after_tool).map(|r| r.tool_name),
            Ok(None)
        );
    }

    #[test]
    fn a_tool_call_answer_has_null_content_and_one_call() {
        let state = SimState::new(&crate::sim::config::SimConfig::default());
        let body = br#"{"model":"m","messages":[{"role":"user","content":"look it up"}],
            "tools":[{"type":"function","function":{"name":"lookup"}}]}"#;
        let request = ChatRequest::parse(body).expect("valid request");
        let reply = accept(&request, &state, Default::default());
        let response = respond(&request, &reply, &state);
        let bytes = match response.into_body() {
            SimBody::Full(Some(bytes)) => bytes,
            _ => panic!("a complete body"),
        };
        let answer: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        let choice = &answer["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert!(choice["message"]["content"].is_null());
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(
            (&call["type"], &call["function"]["name"]),
            (&"function".into(), &"lookup".into())
        );
        assert!(
            call["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("call_"))
        );
        assert!(call.get("index").is_none());
        let arguments = call["function"]["arguments"].as_str().unwrap_or_default();
        assert_eq!(arguments, r#"{"input":"look it up"}"#);
        assert_eq!(
            answer["usage"]["completion_tokens"],
            crate::sim::tokens::count(arguments)
        );
    }

    #[test]
    fn max_completion_tokens_wins() {
        let body = br#"{"messages":[{"role":"user","content":"x"}],"max_tokens":9,"max_completion_tokens":4}"#;
        assert_eq!(ChatRequest::parse(body).map(|r| r.max_tokens), Ok(Some(4)));
    }

    #[test]
    fn rejects_bad_bodies_with_400() {
        for body in [
            &b"{not json"[..],
            br#"{"model":"m"}"#,
            br#"{"messages":[]}"#,
            br#"{"messages":"hi"}"#,
            br#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
        ] {
            let err = ChatRequest::parse(body).expect_err("must be rejected");
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        }
    }
}
