//! What differs between the kinds of upstream call the attempt loop makes: the URL and the
//! body (in the target's own wire format), the model asked for, the per-attempt timeout, how
//! a reply is read (and translated back to OpenAI's shape), and what a reply keeps of its
//! target's slot. Chat completions ([`Chat`]) and embeddings ([`Embeddings`]) go
//! through the same loop; everything else (pick, slot, deadline, breaker, backoff, budget,
//! record) is the loop's.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http::header::{HeaderName, HeaderValue};
use hyper::body::Incoming;

use super::Reply;
use super::stream::{StreamLimits, UpstreamStream};
use super::target::{Slot, TargetState};
use crate::openai::{
    StreamAccumulator, parse_cache_writes, parse_response, parse_response_value, parse_usage,
    request_json,
};
use crate::providers::translate::ToOpenAiStream;
use crate::providers::{AttemptError, Dialect, Upstream, anthropic, gemini, read_body};
use crate::wit::{ChatRequest, Usage};

/// One kind of upstream call, as the attempt loop sees it.
pub(super) trait Exchange: Sync {
    /// What a successful attempt yields.
    type Output: Send;
    /// The operation, for the attempt's span (`gen_ai.operation.name`).
    const OPERATION: &'static str;

    /// Headers sent along with every attempt.
    fn forward(&self) -> &[(HeaderName, HeaderValue)];
    /// Tokens the call may use on `chain`, for target TPM limits (0 when none counts).
    fn tokens(&self, targets: &[Arc<TargetState>], chain: &[usize]) -> u32;
    /// The HTTP method of every attempt (POST unless the exchange says otherwise).
    fn method(&self) -> http::Method {
        http::Method::POST
    }
    /// A failure status (and its bounded body) this exchange takes as its answer rather than
    /// as a failed attempt: a service's 404 is the service's answer. None by default.
    fn answer_status(&self, status: u16, body: &Bytes) -> Option<Self::Output> {
        let _ = (status, body);
        None
    }
    /// The upstream model asked of `target` (for the record and the span).
    fn model(&self, target: &Upstream) -> String;
    /// The URL and the body sent to `target`, in its wire format; `Err` (nothing sent) when
    /// the request holds what that format cannot carry.
    fn request(&self, target: &Upstream) -> Result<(String, Bytes), AttemptError>;
    /// `target`'s own per-attempt timeout, before the deadline cuts it.
    fn timeout(&self, target: &Upstream) -> Duration;
    /// How long `target` may take to start answering (headers and, for a stream, its first
    /// event): the whole [`Exchange::timeout`] unless the reply streams.
    fn first_timeout(&self, target: &Upstream) -> Duration {
        self.timeout(target)
    }
    /// Reads a successful response: its start within `left.first`, all of it within
    /// `left.whole`.
    async fn read(
        &self,
        state: &TargetState,
        response: Response<Incoming>,
        left: Left,
    ) -> Result<Self::Output, AttemptError>;
    /// The usage `output` reported, for the attempt record.
    fn usage(output: &Self::Output) -> Option<Usage>;
    /// Of that usage's prompt tokens, those written to the provider's prompt cache.
    fn cache_writes(output: &Self::Output) -> u32 {
        let _ = output;
        0
    }
    /// Gives `output` the attempt's slot to keep, or drops it (the default): a live stream
    /// holds its target's slot until it ends.
    fn keep(output: &mut Self::Output, slot: Slot) {
        let _ = output;
        drop(slot);
    }
}

/// What is left of an attempt's time when its headers have come.
#[derive(Clone, Copy, Debug)]
pub(super) struct Left {
    /// For the start of the reply (a stream's first event).
    pub first: Duration,
    /// For the whole reply.
    pub whole: Duration,
}

/// A chat completion.
pub(super) struct Chat<'a> {
    /// The request.
    pub request: &'a ChatRequest,
    /// Headers forwarded from the client.
    pub forward: &'a [(HeaderName, HeaderValue)],
}

impl Exchange for Chat<'_> {
    type Output = Reply;
    const OPERATION: &'static str = "chat";

    fn forward(&self) -> &[(HeaderName, HeaderValue)] {
        self.forward
    }

    fn tokens(&self, targets: &[Arc<TargetState>], chain: &[usize]) -> u32 {
        estimate_tokens(targets, chain, self.request)
    }

    fn model(&self, target: &Upstream) -> String {
        target
            .model
            .clone()
            .unwrap_or_else(|| self.request.model.clone())
    }

    fn request(&self, target: &Upstream) -> Result<(String, Bytes), AttemptError> {
        let stream = self.request.stream || target.stream_json;
        let mut json = request_json(self.request, target.model.as_deref(), stream);
        let model = target.model.as_deref().unwrap_or(&self.request.model);
        let body = match &target.dialect {
            Dialect::OpenAi | Dialect::Azure { .. } => {
                strip_anthropic_marks(&mut json);
                json
            }
            Dialect::Anthropic { .. } => anthropic::request_from_openai(&json, model)
                .map_err(AttemptError::Untranslatable)?,
            Dialect::Gemini => {
                gemini::request_from_openai(&json).map_err(AttemptError::Untranslatable)?
            }
        };
        let url = target.dialect.chat_url(&target.base_url, model, stream);
        Ok((url, Bytes::from(crate::openai::to_bytes(&body))))
    }

    /// A stream waits at most `ttft_timeout` for its headers and first event; a JSON reply
    /// `timeout` for headers and body.
    fn timeout(&self, target: &Upstream) -> Duration {
        if self.request.stream {
            target.ttft_timeout
        } else {
            target.timeout
        }
    }

    /// A JSON request asked of the target as a stream (`stream_json`) must start within
    /// `ttft_timeout` too: an upstream that never answers is left then, not at `timeout`.
    fn first_timeout(&self, target: &Upstream) -> Duration {
        if self.request.stream || target.stream_json {
            target.ttft_timeout
        } else {
            target.timeout
        }
    }

    async fn read(
        &self,
        state: &TargetState,
        response: Response<Incoming>,
        left: Left,
    ) -> Result<Reply, AttemptError> {
        let streamed = self.request.stream || state.upstream.stream_json;
        // A provider that answered a stream request with JSON is read as JSON (a provider or
        // proxy that ignores `stream`).
        let json = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let dialect = &state.upstream.dialect;
        // For a stream client too: its answer goes out as events, charged with its usage
        // (refusing it made the same answer a 200 or a 502 by how the client asked).
        if !streamed || json {
            let bytes = read_body(response.into_body(), left.whole).await?;
            return answer(dialect, &bytes, &self.model(&state.upstream));
        }
        let limits = StreamLimits {
            idle_timeout: state.limits.stream_idle_timeout,
            max_bytes: state.limits.max_stream_bytes,
            max_duration: state.limits.max_stream,
        };
        let body = http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(
            response.into_body(),
            Into::into,
        ));
        let name = state.upstream.name.clone();
        let translate: Option<Box<dyn ToOpenAiStream>> = match dialect {
            Dialect::OpenAi | Dialect::Azure { .. } => None,
            Dialect::Anthropic { .. } => Some(Box::new(anthropic::StreamToOpenAi::new())),
            Dialect::Gemini => Some(Box::new(gemini::StreamToOpenAi::new(
                &self.model(&state.upstream),
            ))),
        };
        let stream = UpstreamStream::open(name, body, left.first, limits, translate).await?;
        if self.request.stream {
            return Ok(Reply::Stream(stream));
        }
        // The client asked for JSON: the whole stream within the attempt's timeout.
        tokio::time::timeout(left.whole, assemble(stream))
            .await
            .map_err(|_| AttemptError::Timeout(left.whole))?
    }

    fn usage(reply: &Reply) -> Option<Usage> {
        match reply {
            Reply::Json { response, .. } => response.usage,
            Reply::Stream(_) => None,
        }
    }

    fn cache_writes(reply: &Reply) -> u32 {
        match reply {
            Reply::Json { cache_writes, .. } => *cache_writes,
            Reply::Stream(_) => 0,
        }
    }

    /// A live stream keeps the slot until it ends: streams in progress count against the
    /// target's `max_concurrency`.
    fn keep(reply: &mut Reply, slot: Slot) {
        if let Reply::Stream(stream) = reply {
            stream.hold(slot);
        }
    }
}

/// Fields an Anthropic client's request carries through `/v1/messages` that OpenAI has no
/// place for: prompt-caching marks (`cache_control`, on messages, content parts and tools;
/// Claude Code sends them on every turn) and a tool result's `is_error`. OpenAI-shaped
/// upstreams may refuse fields they do not know inside messages, so they never get them
/// (LiteLLM does the same); an Anthropic target gets them back from the translation. Neither
/// changes what the answer says. Each message, part and tool is checked for the two keys
/// (no allocation); only an object that holds one is changed.
fn strip_anthropic_marks(json: &mut serde_json::Value) {
    const MARKS: [&str; 2] = ["cache_control", "is_error"];
    fn strip(value: &mut serde_json::Value) {
        if let Some(obj) = value.as_object_mut() {
            for mark in MARKS {
                obj.remove(mark);
            }
        }
    }
    let marked = |v: &serde_json::Value| {
        v.as_object()
            .is_some_and(|o| MARKS.iter().any(|m| o.contains_key(*m)))
    };
    for key in ["messages", "tools"] {
        let Some(items) = json.get_mut(key).and_then(serde_json::Value::as_array_mut) else {
            continue;
        };
        for item in items {
            if marked(item) {
                strip(item);
            }
            if let Some(parts) = item
                .get_mut("content")
                .and_then(serde_json::Value::as_array_mut)
            {
                parts.iter_mut().filter(|p| marked(p)).for_each(strip);
            }
        }
    }
}

/// A JSON answer in `dialect`'s shape, as a chat completion (`model`: the model asked for,
/// for a provider whose answer may not name it).
fn answer(dialect: &Dialect, bytes: &[u8], model: &str) -> Result<Reply, AttemptError> {
    let not_an_answer = || AttemptError::Protocol("the reply is not a chat completion".to_string());
    // An answer with no choice is broken (third probe, A2: a 200 with `choices: []` was
    // passed on, and stored by a cached route), retried on the next target.
    let no_choice = || AttemptError::Protocol("the reply has no choices".to_string());
    let translated = match dialect {
        Dialect::OpenAi | Dialect::Azure { .. } => {
            let response = parse_response(bytes).ok_or_else(not_an_answer)?;
            if response.choices.is_empty() {
                return Err(no_choice());
            }
            return Ok(Reply::Json {
                response,
                cache_writes: 0,
            });
        }
        Dialect::Anthropic { .. } => serde_json::from_slice(bytes)
            .map_err(|err| err.to_string())
            .and_then(|value| anthropic::response_to_openai(&value)),
        Dialect::Gemini => serde_json::from_slice(bytes)
            .map_err(|err| err.to_string())
            .and_then(|value| gemini::response_to_openai(&value, model)),
    };
    let value = translated.map_err(|err| {
        AttemptError::Protocol(format!(
            "the reply is not a {} answer: {err}",
            dialect.kind().as_str()
        ))
    })?;
    // Anthropic's cache writes, which the translation keeps in `prompt_tokens_details`.
    let cache_writes = parse_cache_writes(&value["usage"]);
    let response = parse_response_value(value).ok_or_else(not_an_answer)?;
    if response.choices.is_empty() {
        return Err(no_choice());
    }
    Ok(Reply::Json {
        response,
        cache_writes,
    })
}

/// The answer a stream asked for a JSON request carries, once it ended with `[DONE]` (a
/// stream that broke off, or ended without it, is a failed attempt, as a cut JSON body is).
async fn assemble(mut stream: UpstreamStream) -> Result<Reply, AttemptError> {
    let mut assembled = StreamAccumulator::default();
    loop {
        match stream.next().await {
            Some(Ok(data)) if data == "[DONE]" => {
                let cache_writes = assembled.cache_writes();
                return Ok(Reply::Json {
                    response: assembled.finish(),
                    cache_writes,
                });
            }
            Some(Ok(data)) => {
                if let Err(detail) = assembled.push_data(&data) {
                    return Err(broken_off(detail, &assembled));
                }
            }
            Some(Err(detail)) => return Err(broken_off(detail, &assembled)),
            None => {
                let detail = "the stream ended without [DONE]".to_string();
                return Err(broken_off(detail, &assembled));
            }
        }
    }
}

/// A stream asked for a JSON answer that broke off with `detail`, after the text `assembled`
/// holds (what the upstream generated, and bills, though no answer came of it).
fn broken_off(detail: String, assembled: &StreamAccumulator) -> AttemptError {
    AttemptError::BrokenOff {
        detail,
        received: assembled.text().into_owned(),
    }
}

/// Tokens a request may use on `chain`, for target TPM limits: the prompt counted with the
/// real tokenizer (as budgets count it), plus `max_tokens` (or
/// [`DEFAULT_COMPLETION_ESTIMATE`] when the client set none). 0 when no target of the chain
/// has a TPM limit, so requests that need no count pay nothing for it.
pub(super) fn estimate_tokens(
    targets: &[Arc<TargetState>],
    chain: &[usize],
    request: &ChatRequest,
) -> u32 {
    let limited = chain
        .iter()
        .filter_map(|&i| targets.get(i))
        .find(|t| t.limits.tpm.is_some());
    let Some(target) = limited else {
        return 0;
    };
    let model = target.upstream.model.as_deref().unwrap_or(&request.model);
    crate::cost::tokens::count_prompt(model, request)
        .saturating_add(request.max_tokens.unwrap_or(DEFAULT_COMPLETION_ESTIMATE))
}

/// Completion tokens assumed for a TPM limit when the request sets no `max_tokens`.
const DEFAULT_COMPLETION_ESTIMATE: u32 = 256;

/// An embeddings call with an OpenAI-shaped body; the reply is the raw OpenAI body.
pub(super) struct Embeddings {
    /// The body; a target's `model` replaces its `model`, as for chat completions (the
    /// operator's pin wins over what a stage asked for).
    pub body: serde_json::Value,
}

impl Exchange for Embeddings {
    type Output = serde_json::Value;
    const OPERATION: &'static str = "embeddings";

    fn forward(&self) -> &[(HeaderName, HeaderValue)] {
        &[]
    }

    /// Embedding inputs are not counted against TPM limits.
    fn tokens(&self, _: &[Arc<TargetState>], _: &[usize]) -> u32 {
        0
    }

    fn model(&self, target: &Upstream) -> String {
        match (&target.model, self.body.get("model")) {
            (Some(pinned), _) => pinned.clone(),
            (None, Some(model)) => model.as_str().unwrap_or_default().to_string(),
            (None, None) => String::new(),
        }
    }

    fn request(&self, target: &Upstream) -> Result<(String, Bytes), AttemptError> {
        let Some(url) = target.dialect.embeddings_url(&target.base_url) else {
            return Err(AttemptError::Untranslatable(
                crate::providers::translate::Untranslatable::new(
                    "input",
                    format!(
                        "target `{}` ({}) has no embeddings endpoint",
                        target.name,
                        target.dialect.kind().as_str()
                    ),
                ),
            ));
        };
        let mut body = self.body.clone();
        if let Some(model) = &target.model
            && let Some(fields) = body.as_object_mut()
        {
            fields.insert("model".into(), serde_json::Value::String(model.clone()));
        }
        Ok((url, Bytes::from(crate::openai::to_bytes(&body))))
    }

    /// One timeout for the whole attempt, the body included.
    fn timeout(&self, target: &Upstream) -> Duration {
        target.timeout
    }

    async fn read(
        &self,
        _: &TargetState,
        response: Response<Incoming>,
        left: Left,
    ) -> Result<serde_json::Value, AttemptError> {
        let bytes = read_body(response.into_body(), left.whole).await?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|err| AttemptError::Protocol(err.to_string()))?;
        check_vectors(&value, expected_vectors(&self.body)).map_err(AttemptError::Protocol)?;
        Ok(value)
    }

    fn usage(value: &serde_json::Value) -> Option<Usage> {
        parse_usage(&value["usage"])
    }
}

/// How many vectors an embeddings request asks for: one per string or token array of its
/// `input`, one for a string or a single token array; `None` when it cannot tell.
fn expected_vectors(body: &serde_json::Value) -> Option<usize> {
    match body.get("input")? {
        serde_json::Value::String(_) => Some(1),
        serde_json::Value::Array(items) if items.iter().all(serde_json::Value::is_number) => {
            Some(1)
        }
        serde_json::Value::Array(items) => Some(items.len()),
        _ => None,
    }
}

/// An embeddings answer is broken unless `data` holds one non-empty vector (a list, or a
/// base64 string) per input (third probe, A10: one vector for three inputs was a 200, and a
/// client that zips inputs with `data` lost rows).
fn check_vectors(value: &serde_json::Value, expected: Option<usize>) -> Result<(), String> {
    let data = value
        .get("data")
        .and_then(serde_json::Value::as_array)
        .ok_or("the reply has no `data` list of embeddings")?;
    if let Some(expected) = expected
        && data.len() != expected
    {
        return Err(format!(
            "the reply has {} embeddings for {expected} inputs",
            data.len()
        ));
    }
    let usable = |item: &serde_json::Value| match item.get("embedding") {
        Some(serde_json::Value::Array(v)) => !v.is_empty() && v.iter().all(|x| x.is_number()),
        Some(serde_json::Value::String(s)) => !s.is_empty(),
        _ => false,
    };
    if !data.iter().all(usable) {
        return Err("the reply has an empty or unreadable embedding".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_embeddings_answer_needs_one_usable_vector_per_input() {
        let reply = |vectors: &[serde_json::Value]| {
            let data: Vec<_> = (vectors.iter().enumerate())
                .map(
                    |(i, v)| serde_json::json!({"object": "embedding", "index": i, "embedding": v}),
                )
                .collect();
            serde_json::json!({"object": "list", "data": data})
        };
        let three = serde_json::json!({"input": ["a", "b", "c"]});
        let one = serde_json::json!({"input": "a"});
        let tokens = serde_json::json!({"input": [1, 2, 3]});
        let v = serde_json::json!([0.1, 0.2]);
        assert_eq!(expected_vectors(&three), Some(3));
        assert_eq!(expected_vectors(&one), Some(1));
        assert_eq!(expected_vectors(&tokens), Some(1));
        assert!(check_vectors(&reply(&[v.clone(), v.clone(), v.clone()]), Some(3)).is_ok());
        assert!(check_vectors(&reply(&[serde_json::json!("AAAA")]), Some(1)).is_ok());
        let err = check_vectors(&reply(std::slice::from_ref(&v)), Some(3)).unwrap_err();
        assert!(err.contains("1 embeddings for 3 inputs"), "{err}");
        for bad in [
            serde_json::json!([]),
            serde_json::json!(["x"]),
            serde_json::json!(null),
        ] {
            assert!(
                check_vectors(&reply(std::slice::from_ref(&bad)), Some(1)).is_err(),
                "{bad}"
            );
        }
        assert!(check_vectors(&serde_json::json!({"object": "list"}), Some(1)).is_err());
    }

    #[test]
    fn an_answer_without_choices_is_a_broken_reply() {
        let empty =
            br#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[]}"#;
        match answer(&Dialect::OpenAi, empty, "m") {
            Err(AttemptError::Protocol(message)) => assert!(message.contains("no choices")),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    fn upstream(model: Option<&str>) -> Upstream {
        Upstream {
            name: "e".into(),
            base_url: "http://h/v1".into(),
            dialect: crate::providers::Dialect::OpenAi,
            signing: Vec::new(),
            model: model.map(str::to_string),
            timeout: Duration::from_secs(1),
            ttft_timeout: Duration::from_secs(1),
            stream_json: false,
            headers: Vec::new(),
        }
    }

    #[test]
    fn openai_shaped_targets_never_get_anthropics_cache_marks() {
        let mut json = serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": [
                    {"type": "text", "text": "rules", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
                ]},
                {"role": "tool", "tool_call_id": "t", "content": "boom", "is_error": true},
                {"role": "user", "content": "hi", "cache_control": {"type": "ephemeral"}}
            ],
            "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": {"type": "ephemeral"}}]
        });
        strip_anthropic_marks(&mut json);
        let text = json.to_string();
        assert!(
            !text.contains("cache_control") && !text.contains("is_error"),
            "{text}"
        );
        assert_eq!(json["messages"][0]["content"][0]["text"], "rules");
        assert_eq!(json["messages"][1]["content"], "boom");
        assert_eq!(json["tools"][0]["function"]["name"], "f");
    }

    #[test]
    fn an_embeddings_targets_model_pin_wins_over_the_callers_model() {
        let probe = Embeddings {
            body: serde_json::json!({"input": ["x"]}),
        };
        let pinned = upstream(Some("sim-embed"));
        let sent: serde_json::Value =
            serde_json::from_slice(&probe.request(&pinned).unwrap().1).unwrap();
        assert_eq!(sent["model"], "sim-embed");
        assert_eq!(probe.model(&pinned), "sim-embed");
        assert_eq!(probe.model(&upstream(None)), "");
        // A stage's embed() names a model: the operator's pin still decides what is billed.
        let stage = Embeddings {
            body: serde_json::json!({"model": "mine", "input": ["x"]}),
        };
        let sent: serde_json::Value =
            serde_json::from_slice(&stage.request(&pinned).unwrap().1).unwrap();
        assert_eq!(sent["model"], "sim-embed");
        assert_eq!(stage.model(&pinned), "sim-embed");
        // Without a pin, the caller's model goes as it is.
        let unpinned = upstream(None);
        let sent: serde_json::Value =
            serde_json::from_slice(&stage.request(&unpinned).unwrap().1).unwrap();
        assert_eq!(sent["model"], "mine");
        assert_eq!(stage.model(&unpinned), "mine");
    }
}
