//! OpenAI's Responses API (`POST /v1/responses`), front direction: a client's Responses request
//! becomes a chat-completions request for weir's pipeline, and the chat answer (whole or
//! streamed) becomes a Response object or Responses stream events.
//!
//! Owns: the stateless subset of the Responses API. weir has no response store yet, so
//! everything that needs one (`previous_response_id`, `store: true`, `conversation`,
//! `background: true`, `prompt`, `item_reference` input items, `include`) is refused with an
//! [`Untranslatable`](crate::providers::translate::Untranslatable) naming the field; the client is told to send the whole conversation in
//! `input`. Built-in tools (web search, file search, computer use, ...) and reasoning controls are
//! refused too: the chat pipeline cannot run or express them.
//!
//! Mapping decisions worth knowing:
//! - `instructions` becomes a leading `system` message; `developer` input messages stay
//!   `developer`.
//! - Consecutive assistant items (an assistant message followed by `function_call` items, or
//!   several `function_call`s) merge into one chat assistant message: chat carries one assistant
//!   turn as text plus `tool_calls`, while Responses lists them as separate items.
//! - `safety_identifier` (the newer name for the end-user id) becomes chat's `user`; both set
//!   to different values is refused, since chat carries one id.
//! - Function tools keep `strict` only when the client set it. (Responses documents `strict` as
//!   defaulting to true, chat to false; forcing `true` would reject every schema that is not
//!   strict-compatible, so weir leaves the upstream's default.)
//! - Item ids are deterministic: `msg_<chat id suffix>` for the message, `fc_<call id>` for a
//!   function call; the response id is `resp_<chat id>` unless the chat id already starts with
//!   `resp_`.
//! - Echoed fields the client did not set take OpenAI's defaults (`tool_choice: "auto"`,
//!   `tools: []`, `parallel_tool_calls: true`, `text.format: {type: "text"}`), except
//!   `temperature` and `top_p`, which are `null`: the upstream's default is not known here and
//!   the Response object allows `null`.
//! - A truncated answer (`finish_reason: "length"` or `"content_filter"`) is `status:
//!   "incomplete"`; its stream ends with `response.incomplete` (as OpenAI's does) instead of
//!   `response.completed`.
//!
//! Ignored request fields (hints with no effect on the answer):
//! - `metadata`: tags OpenAI stores with a response; weir stores nothing. Echoed back unchanged.
//! - `stream_options`: only `include_obfuscation`, padding on stream events weir does not add.
//! - `prompt_cache_key`: a cache-routing hint for OpenAI's prompt cache.
//! - `max_tool_calls`: limits built-in tool calls, and built-in tools are refused anyway.
//! - `service_tier` `"auto"` / `"default"`: the normal tier (other tiers are refused).
//! - On input items, `id` and `status`, and on output-text parts, `annotations` and `logprobs`:
//!   echoes of an earlier Response's output sent back as history.

mod output;
mod request;
mod request_messages;
mod request_tools;
mod response;
mod stream;

pub use request::request_to_openai;
pub use response::response_from_openai;
pub use stream::StreamFromOpenAi;

/// The reason every store-backed feature is refused with.
const NO_STORE: &str =
    "stored responses are not supported yet; send the whole conversation in `input`";

#[cfg(test)]
mod tests;
