//! A streamed answer that settles itself: its cost and its cache fill.
//!
//! Whoever reads an [`AnswerStream`] (the server relaying it to a client, or a pipeline that
//! needs the whole response and calls [`AnswerStream::collect`]) only reads events; the
//! stream does the step's bookkeeping as they pass:
//!
//! - **cost**, exactly once: at `[DONE]`, with the *last* usage the stream carried (a
//!   provider may send usage on every chunk, running totals or a provisional figure first:
//!   vLLM's `continuous_usage_stats`), else from a local count of what was streamed (marked
//!   estimated); on a broken stream, or in `Drop` when the reader goes away midway, the larger
//!   of the last usage and the local count. Every chunk with usage shows what the request
//!   would cost if it were the last (`usage.cost` added, the figures as weir reads them); the
//!   last one shows what was charged. The reservation lives in this type, so no path can
//!   leak it.
//! - **framing**: a payload that is not JSON is dropped (official SDKs parse every `data:` as
//!   JSON and abort on one that is not), as the Anthropic and Responses fronts drop it.
//! - **cache fill**: the assembled response is stored *before* `[DONE]` is handed out, so a
//!   client that sends the same request right after its `[DONE]` finds it. A stream that
//!   broke or ended without `[DONE]` is never stored.

use serde_json::{Value, json};

use super::costing::StreamCharge;
use super::{Fill, StepError};
use crate::openai::{StreamAccumulator, parse_cache_writes, parse_usage};
use crate::router::UpstreamStream;
use crate::wit::{ChatResponse, Usage};

/// One event of an [`AnswerStream`].
#[derive(Debug)]
pub enum StreamEvent {
    /// A JSON chunk, as the upstream sent it (a chunk with usage with `usage.cost` added).
    Chunk(Value),
    /// `[DONE]`: the stream ended cleanly. Carries the assembled response; its cost is
    /// settled and its cache fill stored.
    Done(ChatResponse),
}

/// A live streamed answer of the LLM step, settling its cost and cache fill as it is read.
pub struct AnswerStream {
    /// The upstream's events.
    upstream: UpstreamStream,
    /// The response assembled from the chunks so far.
    assembled: StreamAccumulator,
    /// The call's reservation, until settled.
    charge: Option<StreamCharge>,
    /// Where the answer is stored once it ended cleanly, when the route caches it.
    fill: Option<Fill>,
    /// The last usage the stream carried: `Some(None)` when it could not be read (then the
    /// local count is charged).
    usage: Option<Option<(Usage, u32)>>,
    /// The last local count shown on a chunk with unreadable usage: the text's length then,
    /// and the quote.
    estimate: Option<(usize, (u64, Usage))>,
    /// `[DONE]` or a failure was handed out: nothing more comes.
    over: bool,
}

impl AnswerStream {
    /// A stream over `upstream`, settling `charge` as it is read.
    pub(super) fn new(upstream: UpstreamStream, charge: StreamCharge) -> AnswerStream {
        AnswerStream {
            upstream,
            assembled: StreamAccumulator::default(),
            charge: Some(charge),
            fill: None,
            usage: None,
            estimate: None,
            over: false,
        }
    }

    /// Stores the answer with `fill` once it ended cleanly.
    pub(super) fn fill_with(&mut self, fill: Fill) {
        self.fill = Some(fill);
    }

    /// The next event; `Err` (`StepError::Interrupted`) when the upstream broke off, passed
    /// one of its bounds or ended without `[DONE]`; `None` once `[DONE]` or an error was
    /// handed out.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, StepError>> {
        if self.over {
            return None;
        }
        let mut chunk = loop {
            let data = match self.upstream.next().await {
                Some(Ok(data)) => data,
                Some(Err(detail)) => return Some(Err(self.interrupted(detail))),
                None => {
                    let detail = "the stream ended without [DONE]".to_string();
                    return Some(Err(self.interrupted(detail)));
                }
            };
            if data == "[DONE]" {
                self.over = true;
                if let Some(charge) = self.charge.take() {
                    charge.finish(self.usage.take().flatten(), &self.assembled.text());
                }
                let response = std::mem::take(&mut self.assembled).finish();
                if let Some(fill) = self.fill.take() {
                    fill.store(response.clone());
                }
                return Some(Ok(StreamEvent::Done(response)));
            }
            match serde_json::from_str::<Value>(&data) {
                Ok(chunk) => break chunk,
                Err(_) => tracing::debug!(
                    target = &*self.upstream.target,
                    "a stream event that is not JSON was dropped"
                ),
            }
        };
        self.assembled.push(&chunk);
        if let Some(value) = chunk.get("usage").filter(|v| v.is_object())
            && let Some(charge) = &self.charge
        {
            // Each chunk with usage says what the request costs if it is the last: the
            // upstream's numbers as weir reads them (bounded, cached tokens at most the
            // prompt), or, when they are not numbers it can read, the local count it would
            // charge instead; never the raw figures. `[DONE]` settles with the last.
            let billed = parse_usage(value).map(|usage| (usage, parse_cache_writes(value)));
            self.usage = Some(billed);
            let (total, usage) = match billed {
                Some(billed) => charge.quote(Some(billed), ""),
                // A local count of all the text so far, for each such chunk, would be
                // quadratic in a hostile stream's length (unreadable usage on every chunk):
                // counted again only once the text has doubled. `[DONE]` counts it exactly.
                None => {
                    let len = self.assembled.text_len();
                    match self.estimate {
                        Some((counted, quote)) if len <= counted.saturating_mul(2).max(4096) => {
                            quote
                        }
                        _ => {
                            let quote = charge.quote(None, &self.assembled.text());
                            self.estimate = Some((len, quote));
                            quote
                        }
                    }
                }
            };
            let fields = &mut chunk["usage"];
            fields["cost"] = json!(crate::config::pico_to_usd(total));
            fields["prompt_tokens"] = json!(usage.prompt_tokens);
            fields["completion_tokens"] = json!(usage.completion_tokens);
            fields["total_tokens"] = json!(usage.total_tokens);
            if let Some(details) = fields
                .get_mut("prompt_tokens_details")
                .and_then(Value::as_object_mut)
            {
                details.insert("cached_tokens".into(), json!(usage.cached_tokens));
            }
        }
        Some(Ok(StreamEvent::Chunk(chunk)))
    }

    /// Reads the whole stream into one response (for stages that see or rewrite the whole
    /// response), settled and stored like a relayed one.
    pub async fn collect(mut self) -> Result<ChatResponse, StepError> {
        loop {
            match self.next().await {
                Some(Ok(StreamEvent::Done(response))) => return Ok(response),
                Some(Ok(StreamEvent::Chunk(_))) => {}
                Some(Err(err)) => return Err(err),
                // `next` hands out `[DONE]` or an error before it ends.
                None => {
                    let detail = "the stream ended without [DONE]".to_string();
                    return Err(self.interrupted(detail));
                }
            }
        }
    }

    /// Ends the stream on a failure: settles from what was streamed; no fill.
    fn interrupted(&mut self, detail: String) -> StepError {
        self.over = true;
        self.settle();
        self.fill = None;
        StepError::Interrupted {
            target: self.upstream.target.clone(),
            detail,
        }
    }

    /// Settles the charge of a stream cut short, if still open: the larger of its last usage
    /// (a running total, or a provisional figure) and a local count of what was streamed.
    fn settle(&mut self) {
        let Some(charge) = self.charge.take() else {
            return;
        };
        let text = self.assembled.text();
        let usage = self
            .usage
            .take()
            .flatten()
            .filter(|&usage| charge.quote(Some(usage), &text).0 >= charge.quote(None, &text).0);
        charge.finish(usage, &text);
    }
}

impl Drop for AnswerStream {
    /// The reader went away midway (a client that disconnected): the provider bills what
    /// it generated, so the call is charged for the prompt and what was streamed.
    fn drop(&mut self) {
        self.settle();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use tokio::sync::mpsc;

    use super::*;
    use crate::cache::{CacheStatus, ResponseCache, request_key};
    use crate::cost::{Ledger, Meter, PriceTable};
    use crate::llm::Costing;
    use crate::router::StreamLimits;
    use crate::wit::{ChatRequest, Content};

    type Chunk = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;

    /// An upstream fed from memory: what is sent arrives; while the sender lives, it never
    /// ends.
    async fn open_upstream(first: &str) -> (mpsc::UnboundedSender<Chunk>, UpstreamStream) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(event(first)).unwrap();
        let frames = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let limits = StreamLimits {
            idle_timeout: Duration::from_secs(30),
            max_bytes: 1 << 20,
            max_duration: Duration::from_secs(600),
        };
        let stream = UpstreamStream::open(
            "t".into(),
            StreamBody::new(frames).boxed(),
            Duration::from_secs(1),
            limits,
            None,
        )
        .await
        .unwrap();
        (tx, stream)
    }

    fn event(payload: &str) -> Chunk {
        Ok(Frame::data(Bytes::from(format!("data: {payload}\n\n"))))
    }

    fn delta(text: &str) -> String {
        json!({
            "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}],
        })
        .to_string()
    }

    fn usage_chunk() -> String {
        json!({
            "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        })
        .to_string()
    }

    /// The shared one-message request (see `ChatRequest::hi`).
    fn request() -> ChatRequest {
        ChatRequest {
            temperature: Some(0.0),
            stream: true,
            ..ChatRequest::hi("m")
        }
    }

    /// A stream over `upstream` holding a charge against `meter`.
    fn answer(upstream: UpstreamStream, meter: &Arc<Meter>) -> AnswerStream {
        let costing = Arc::new(Costing {
            prices: PriceTable::default(),
            ledger: Ledger::open(None, None).unwrap(),
            default_max_tokens: 256,
            count_failed_attempts: false,
            fuel_pico_per_million: 0,
        });
        let charge = StreamCharge {
            costing,
            // No account: the reservation is made without waiting on anything.
            hold: Some(
                futures_util::FutureExt::now_or_never(meter.reserve(0))
                    .unwrap()
                    .unwrap(),
            ),
            earlier: Vec::new(),
            model: "m".into(),
            request: request(),
            meter: meter.clone(),
            route: "r".into(),
            cache: CacheStatus::Miss,
        };
        AnswerStream::new(upstream, charge)
    }

    /// A fill into `cache` under the key of [`request`].
    fn fill_into(cache: &ResponseCache) -> (Fill, crate::cache::CacheKey) {
        let key = request_key("r", None, &request());
        let fill = Fill {
            cache: cache.clone(),
            key,
            route: "r".into(),
            ttl: Duration::from_secs(60),
            semantic: None,
        };
        (fill, key)
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_without_usage_settles_once_at_done_from_what_was_streamed() {
        let meter = Meter::new(None);
        let (tx, upstream) = open_upstream(&delta("hello world")).await;
        let mut stream = answer(upstream, &meter);
        assert!(matches!(
            stream.next().await,
            Some(Ok(StreamEvent::Chunk(_)))
        ));
        assert!(meter.charges().is_empty(), "not settled before the end");
        tx.send(event("[DONE]")).unwrap();
        let Some(Ok(StreamEvent::Done(response))) = stream.next().await else {
            panic!("expected [DONE]");
        };
        assert!(response.usage.is_none());
        let charges = meter.charges();
        assert_eq!(charges.len(), 1, "{charges:?}");
        assert!(charges[0].estimated);
        assert!(charges[0].usage.completion_tokens > 0, "{charges:?}");
        assert!(stream.next().await.is_none(), "nothing after [DONE]");
        drop(stream);
        assert_eq!(meter.charges().len(), 1, "exactly once: not again on drop");
    }

    #[tokio::test(start_paused = true)]
    async fn the_usage_chunk_settles_with_the_providers_usage_and_carries_the_cost() {
        let meter = Meter::new(None);
        let (tx, upstream) = open_upstream(&delta("hi")).await;
        let mut stream = answer(upstream, &meter);
        tx.send(event(&usage_chunk())).unwrap();
        tx.send(event("[DONE]")).unwrap();
        stream.next().await.unwrap().unwrap();
        let Some(Ok(StreamEvent::Chunk(chunk))) = stream.next().await else {
            panic!("expected the usage chunk");
        };
        assert_eq!(chunk["usage"]["cost"], json!(0.0));
        assert!(
            meter.charges().is_empty(),
            "settled at [DONE], with the last usage"
        );
        let response = stream.collect().await.unwrap();
        let charges = meter.charges();
        assert_eq!(charges.len(), 1);
        assert!(!charges[0].estimated);
        assert_eq!(
            (
                charges[0].usage.prompt_tokens,
                charges[0].usage.completion_tokens
            ),
            (7, 3)
        );
        assert_eq!(response.usage.map(|u| u.total_tokens), Some(10));
        assert_eq!(meter.charges().len(), 1, "exactly once");
    }

    #[tokio::test(start_paused = true)]
    async fn the_usage_chunk_shows_what_was_charged_never_the_upstreams_raw_figures() {
        // Past u32 (unreadable): charged from a local count, and the chunk says that count.
        let absurd = json!({
            "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": u64::MAX, "completion_tokens": 1, "total_tokens": u64::MAX},
        });
        // More cached tokens than the prompt: bounded by it, in the charge and the chunk.
        let cached = json!({
            "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
                      "prompt_tokens_details": {"cached_tokens": 1_000_000}},
        });
        for (usage, estimated) in [(absurd, true), (cached, false)] {
            let meter = Meter::new(None);
            let (tx, upstream) = open_upstream(&delta("hi")).await;
            let mut stream = answer(upstream, &meter);
            tx.send(event(&usage.to_string())).unwrap();
            tx.send(event("[DONE]")).unwrap();
            stream.next().await.unwrap().unwrap();
            let Some(Ok(StreamEvent::Chunk(chunk))) = stream.next().await else {
                panic!("expected the usage chunk");
            };
            let Some(Ok(StreamEvent::Done(_))) = stream.next().await else {
                panic!("expected [DONE]");
            };
            let charges = meter.charges();
            assert_eq!(charges.len(), 1, "{charges:?}");
            assert_eq!(charges[0].estimated, estimated);
            let charged = &charges[0].usage;
            let shown = &chunk["usage"];
            assert_eq!(
                shown["prompt_tokens"],
                json!(charged.prompt_tokens),
                "{shown}"
            );
            assert_eq!(shown["completion_tokens"], json!(charged.completion_tokens));
            assert_eq!(shown["total_tokens"], json!(charged.total_tokens));
            assert!(shown["cost"].is_number(), "{shown}");
            if !estimated {
                assert_eq!(shown["prompt_tokens_details"]["cached_tokens"], json!(7));
            }
        }
    }

    fn with_usage(text: &str, prompt: u32, completion: u32) -> String {
        json!({
            "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        })
        .to_string()
    }

    /// A stream priced at $1 per Mtok in and $2 out, for the figures of each chunk.
    fn priced(upstream: UpstreamStream, meter: &Arc<Meter>) -> AnswerStream {
        let mut stream = answer(upstream, meter);
        let charge = stream.charge.as_mut().unwrap();
        let price = crate::config::ModelPrice {
            input: 1_000_000,
            cached_input: 1_000_000,
            cache_write: 1_000_000,
            output: 2_000_000,
        };
        let settings = crate::config::CostSettings {
            prices: std::collections::BTreeMap::from([("m".to_string(), price)]),
            ..crate::config::CostSettings::default()
        };
        charge.costing = Arc::new(Costing {
            prices: PriceTable::new(&settings),
            ledger: Ledger::open(None, None).unwrap(),
            default_max_tokens: 256,
            count_failed_attempts: false,
            fuel_pico_per_million: 0,
        });
        stream
    }

    /// Third probe, A1: usage on every chunk (running totals, as vLLM sends with
    /// `continuous_usage_stats`) was charged at the first (100 of 600 completion tokens), and
    /// a provisional first usage (10 prompt, 0 completion) at that: 450 times under.
    #[tokio::test(start_paused = true)]
    async fn a_stream_with_usage_on_every_chunk_is_charged_the_last() {
        let meter = Meter::new(None);
        let (tx, upstream) = open_upstream(&with_usage("a", 100, 100)).await;
        let mut stream = priced(upstream, &meter);
        for n in 2..=6 {
            tx.send(event(&with_usage("b", 100, 100 * n))).unwrap();
        }
        tx.send(event("[DONE]")).unwrap();
        let mut shown = Vec::new();
        while let Some(Ok(StreamEvent::Chunk(chunk))) = stream.next().await {
            shown.push(chunk["usage"]["cost"].as_f64().unwrap());
        }
        assert!(meter.charges().len() == 1, "settled once, at [DONE]");
        let charged = meter.charges()[0].clone();
        assert_eq!(charged.usage.completion_tokens, 600, "{charged:?}");
        assert!(!charged.estimated);
        // Each chunk shows the cost if it were the last; the last shows what was charged.
        assert!(shown.windows(2).all(|w| w[0] < w[1]), "{shown:?}");
        let last = *shown.last().unwrap();
        assert!(
            (last - charged.cost as f64 / 1e12).abs() < 1e-12,
            "{shown:?}"
        );
        assert!((last - (100.0 + 1200.0) / 1e6).abs() < 1e-12, "{last}");

        // Cut after a provisional usage: the local count of what was streamed, the larger.
        let meter = Meter::new(None);
        let (tx, upstream) = open_upstream(&with_usage("", 10, 0)).await;
        let mut stream = priced(upstream, &meter);
        tx.send(event(&delta(&"a long answer ".repeat(50))))
            .unwrap();
        stream.next().await.unwrap().unwrap();
        stream.next().await.unwrap().unwrap();
        drop(tx);
        assert!(matches!(stream.next().await, Some(Err(_))));
        let charged = meter.charges()[0].clone();
        assert!(charged.estimated, "{charged:?}");
        assert!(charged.usage.completion_tokens >= 100, "{charged:?}");
    }

    /// Unreadable usage on every chunk (a hostile upstream): the local count shown is redone
    /// only when the text has doubled, not for every chunk (a count of the whole text per
    /// chunk is quadratic in the stream's length); `[DONE]` charges the exact count.
    #[tokio::test(start_paused = true)]
    async fn unreadable_usage_on_every_chunk_is_counted_a_bounded_number_of_times() {
        let meter = Meter::new(None);
        let unreadable = |text: &str| {
            json!({
                "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}],
                "usage": {"prompt_tokens": "many", "completion_tokens": -1},
            })
            .to_string()
        };
        let (tx, upstream) = open_upstream(&unreadable("word ")).await;
        let mut stream = answer(upstream, &meter);
        for _ in 0..2000 {
            tx.send(event(&unreadable("word "))).unwrap();
        }
        tx.send(event("[DONE]")).unwrap();
        let mut shown = Vec::new();
        while let Some(Ok(StreamEvent::Chunk(chunk))) = stream.next().await {
            let completion = chunk["usage"]["completion_tokens"].as_u64().unwrap();
            if shown.last() != Some(&completion) {
                shown.push(completion);
            }
        }
        assert!(shown.len() <= 8, "counted {} times: {shown:?}", shown.len());
        let charged = meter.charges()[0].clone();
        assert!(charged.estimated);
        assert!(charged.usage.completion_tokens >= 2000, "{charged:?}");
    }

    /// Third probe, A3: a payload that is not JSON reached OpenAI stream clients as it came
    /// (the official SDKs abort the stream on it); it is dropped.
    #[tokio::test(start_paused = true)]
    async fn a_payload_that_is_not_json_is_dropped() {
        let meter = Meter::new(None);
        let (tx, upstream) = open_upstream(&delta("one ")).await;
        let mut stream = answer(upstream, &meter);
        tx.send(event("this is not json")).unwrap();
        tx.send(event("{broken")).unwrap();
        tx.send(event(&delta("two"))).unwrap();
        tx.send(event("[DONE]")).unwrap();
        let mut chunks = 0;
        let response = loop {
            match stream.next().await {
                Some(Ok(StreamEvent::Chunk(chunk))) => {
                    assert!(chunk.is_object(), "{chunk}");
                    chunks += 1;
                }
                Some(Ok(StreamEvent::Done(response))) => break response,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(chunks, 2);
        match response.choices[0].message.content.clone() {
            Some(Content::Text(text)) => assert_eq!(text, "one two"),
            other => panic!("unexpected content {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_dropped_midway_settles_on_drop_from_what_was_streamed() {
        let meter = Meter::new(None);
        let (tx, upstream) = open_upstream(&delta("a long answer in the making")).await;
        let mut stream = answer(upstream, &meter);
        stream.next().await.unwrap().unwrap();
        // The upstream is quiet; the reader (a client) goes away while it waits.
        let waited = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
        assert!(waited.is_err(), "the upstream sent nothing more");
        assert!(meter.charges().is_empty());
        drop(stream);
        let charges = meter.charges();
        assert_eq!(charges.len(), 1, "{charges:?}");
        assert!(charges[0].estimated);
        assert!(
            charges[0].usage.completion_tokens > 0,
            "what was streamed is counted: {charges:?}"
        );
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn the_fill_is_stored_before_done_is_handed_out() {
        let meter = Meter::new(None);
        let cache = ResponseCache::new(1 << 20);
        let (fill, key) = fill_into(&cache);
        let (tx, upstream) = open_upstream(&delta("cached answer")).await;
        let mut stream = answer(upstream, &meter);
        stream.fill_with(fill);
        stream.next().await.unwrap().unwrap();
        assert!(cache.get(&key).await.is_none(), "nothing stored midway");
        tx.send(event("[DONE]")).unwrap();
        let Some(Ok(StreamEvent::Done(_))) = stream.next().await else {
            panic!("expected [DONE]");
        };
        // The reader has [DONE] in hand: the same request now must hit.
        let stored = cache.get(&key).await.expect("stored before [DONE]");
        match stored
            .choices
            .first()
            .and_then(|c| c.message.content.clone())
        {
            Some(Content::Text(text)) => assert_eq!(text, "cached answer"),
            other => panic!("unexpected content {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_without_done_is_never_stored_and_ends_with_an_error() {
        let meter = Meter::new(None);
        let cache = ResponseCache::new(1 << 20);
        let (fill, key) = fill_into(&cache);
        let (tx, upstream) = open_upstream(&delta("cut short")).await;
        let mut stream = answer(upstream, &meter);
        stream.fill_with(fill);
        stream.next().await.unwrap().unwrap();
        drop(tx); // the upstream closes without [DONE]
        let Some(Err(err)) = stream.next().await else {
            panic!("expected an error");
        };
        assert!(
            matches!(&err, StepError::Interrupted { detail, .. } if detail.contains("without [DONE]")),
            "{err}"
        );
        assert!(stream.next().await.is_none());
        assert_eq!(meter.charges().len(), 1, "settled at the failure");
        drop(stream);
        assert_eq!(meter.charges().len(), 1, "exactly once");
        assert!(
            cache.get(&key).await.is_none(),
            "a broken stream is not stored"
        );

        // The same through `collect`.
        let (tx, upstream) = open_upstream(&delta("cut short")).await;
        let (fill, key) = fill_into(&cache);
        let mut stream = answer(upstream, &meter);
        stream.fill_with(fill);
        drop(tx);
        let err = stream.collect().await.unwrap_err();
        assert!(matches!(err, StepError::Interrupted { .. }), "{err}");
        assert!(cache.get(&key).await.is_none());
    }
}
