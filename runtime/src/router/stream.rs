//! An upstream SSE stream whose first event has been read.
//!
//! Every live stream is bounded four ways, so a broken or hostile upstream can neither pin
//! a relay forever nor fill memory: the wait for each next event
//! ([`StreamLimits::idle_timeout`], the target's `stream_idle_timeout_ms`), its whole length
//! in time ([`StreamLimits::max_duration`], `max_stream_ms`: an upstream sending empty events
//! forever would pass the idle bound), the bytes read in all ([`StreamLimits::max_bytes`],
//! `max_stream_bytes`) and the size of one line or event (the SSE parser's own caps). Passing
//! any of them is an `Err` from [`UpstreamStream::next`], which the relay turns into the
//! explicit `stream_interrupted` error event, never a silent truncation. A stream also holds
//! its target's concurrency slot until the upstream has finished (or failed, or the stream is
//! dropped), so live streams count against `max_concurrency`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;

use super::target::Slot;
use crate::openai::SseParser;
use crate::providers::AttemptError;
use crate::providers::translate::ToOpenAiStream;

/// An upstream response body as a stream reads it (boxed, so tests can feed one from memory).
pub(crate) type UpstreamBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The bounds of one upstream stream after its first event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// The longest wait for the next event.
    pub idle_timeout: Duration,
    /// The most bytes read from the stream's body, the first event included.
    pub max_bytes: u64,
    /// The longest the stream may last after its first event.
    pub max_duration: Duration,
}

/// A live upstream stream: yields the `data:` payloads of its events in order.
pub struct UpstreamStream {
    /// The target serving it.
    pub target: Arc<str>,
    /// The response body.
    body: UpstreamBody,
    /// Incremental SSE parsing.
    parser: SseParser,
    /// Parsed events not yet taken.
    queue: VecDeque<String>,
    /// The body ended, broke or passed a bound.
    ended: bool,
    /// Its bounds.
    limits: StreamLimits,
    /// When it passes `limits.max_duration` (set once the first event arrived).
    ends_by: tokio::time::Instant,
    /// Body bytes read so far.
    received: u64,
    /// The target's concurrency slot, held until the upstream is done.
    slot: Option<Slot>,
    /// For a provider whose stream is not OpenAI's: turns each of its events into OpenAI
    /// chunk payloads, so everything downstream reads one format.
    translate: Option<Box<dyn ToOpenAiStream>>,
}

impl UpstreamStream {
    /// Reads until the first event arrives (within `timeout`), so a target that fails before
    /// its first byte can still be replaced by the next one. A provider's own events go
    /// through `translate` (`None`: the upstream speaks OpenAI's stream).
    pub(crate) async fn open(
        target: Arc<str>,
        body: UpstreamBody,
        timeout: Duration,
        limits: StreamLimits,
        translate: Option<Box<dyn ToOpenAiStream>>,
    ) -> Result<UpstreamStream, AttemptError> {
        let mut stream = UpstreamStream {
            target,
            body,
            parser: SseParser::default(),
            queue: VecDeque::new(),
            ended: false,
            limits,
            ends_by: tokio::time::Instant::now(),
            received: 0,
            slot: None,
            translate,
        };
        tokio::time::timeout(timeout, async {
            while stream.queue.is_empty() {
                if !stream.read_more().await? {
                    return Err(AttemptError::Protocol(
                        "the stream ended before its first event".to_string(),
                    ));
                }
            }
            Ok(())
        })
        .await
        .map_err(|_| AttemptError::Timeout(timeout))??;
        stream.ends_by = tokio::time::Instant::now() + limits.max_duration;
        // The first event commits the answer to this target: an empty answer (`[DONE]`
        // first) or one that is not a JSON chunk is a broken reply, retried elsewhere, not
        // a 200 with nothing in it (which a cached route would then store).
        match stream.queue.front().map(String::as_str) {
            Some("[DONE]") => Err(AttemptError::Protocol(
                "the stream ended ([DONE]) before its first chunk".to_string(),
            )),
            Some(first) if serde_json::from_str::<serde::de::IgnoredAny>(first).is_err() => Err(
                AttemptError::Protocol("the stream's first event is not JSON".to_string()),
            ),
            _ => Ok(stream),
        }
    }

    /// Keeps the target's concurrency slot until the upstream is done with this stream.
    pub(super) fn hold(&mut self, slot: Slot) {
        if !self.ended {
            self.slot = Some(slot);
        }
    }

    /// The next event's payload; `None` at the end of the body; `Err` when the body broke or
    /// passed one of its bounds (then the stream is over).
    pub async fn next(&mut self) -> Option<Result<String, String>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                if event == "[DONE]" {
                    // The upstream has finished: its slot is free for the next request.
                    self.slot = None;
                }
                return Some(Ok(event));
            }
            if self.ended {
                self.slot = None;
                return None;
            }
            let idle = self.limits.idle_timeout;
            let left = self
                .ends_by
                .saturating_duration_since(tokio::time::Instant::now());
            let max = self.limits.max_duration;
            let too_long = || {
                AttemptError::Protocol(format!(
                    "the stream lasted {} ms (max_stream_ms)",
                    max.as_millis()
                ))
            };
            // Checked before reading: a read of data already there never times out.
            let result = if left.is_zero() {
                Err(too_long())
            } else {
                match tokio::time::timeout(idle.min(left), self.read_more()).await {
                    Ok(result) => result,
                    Err(_) if left <= idle => Err(too_long()),
                    Err(_) => Err(AttemptError::Protocol(format!(
                        "no event for {} ms (stream_idle_timeout_ms)",
                        idle.as_millis()
                    ))),
                }
            };
            match result {
                Ok(true) => {}
                Ok(false) => {
                    self.slot = None;
                    return None;
                }
                Err(err) => {
                    self.ended = true;
                    self.slot = None;
                    // The reader says what kind of failure it is ("protocol error: ..."):
                    // the detail alone, not the prefix twice.
                    return Some(Err(match err {
                        AttemptError::Protocol(detail) => detail,
                        other => other.to_string(),
                    }));
                }
            }
        }
    }

    /// Reads frames until at least one event is complete; false at the end of the body.
    async fn read_more(&mut self) -> Result<bool, AttemptError> {
        loop {
            match self.body.frame().await {
                None => {
                    self.ended = true;
                    // A translated stream may owe events at its end (Gemini's has no
                    // `[DONE]`), or learn there that the answer was cut.
                    let owed = match &mut self.translate {
                        Some(translate) => translate.finish().map_err(AttemptError::Protocol)?,
                        None => Vec::new(),
                    };
                    let got = !owed.is_empty();
                    self.queue.extend(owed);
                    return Ok(got);
                }
                Some(Err(err)) => {
                    self.ended = true;
                    return Err(AttemptError::Protocol(format!("the stream broke: {err}")));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.received = self.received.saturating_add(data.len() as u64);
                        if self.received > self.limits.max_bytes {
                            self.ended = true;
                            return Err(AttemptError::Protocol(format!(
                                "the stream passed {} bytes (max_stream_bytes)",
                                self.limits.max_bytes
                            )));
                        }
                        let mut events = self.parser.feed(&data).map_err(|err| {
                            self.ended = true;
                            AttemptError::Protocol(err)
                        })?;
                        if let Some(translate) = &mut self.translate {
                            events = translated(translate.as_mut(), events).map_err(|err| {
                                self.ended = true;
                                AttemptError::Protocol(err)
                            })?;
                        }
                        let got = !events.is_empty();
                        self.queue.extend(events);
                        if got {
                            return Ok(true);
                        }
                    }
                }
            }
        }
    }
}

/// A provider's events as OpenAI chunk payloads, in order.
fn translated(
    translate: &mut dyn ToOpenAiStream,
    events: Vec<String>,
) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        out.extend(translate.push(&event)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::*;
    use crate::config::TargetLimits;
    use crate::providers::Upstream;
    use crate::router::TargetState;

    type Chunk = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;

    /// A body fed from memory: what is sent arrives; while the sender lives, it never ends.
    fn feed() -> (mpsc::UnboundedSender<Chunk>, UpstreamBody) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let frames = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (tx, StreamBody::new(frames).boxed())
    }

    fn event(payload: &str) -> Chunk {
        Ok(Frame::data(Bytes::from(format!("data: {payload}\n\n"))))
    }

    const LIMITS: StreamLimits = StreamLimits {
        idle_timeout: Duration::from_millis(300),
        max_bytes: 1 << 20,
        max_duration: Duration::from_secs(60),
    };

    async fn open(body: UpstreamBody, limits: StreamLimits) -> UpstreamStream {
        UpstreamStream::open("t".into(), body, Duration::from_secs(1), limits, None)
            .await
            .unwrap()
    }

    /// Third probe, A2/A3: an upstream that answered `[DONE]` alone, or garbage first, was a
    /// 200 (stored by a cached route: an empty answer for the whole TTL); it is a broken
    /// reply, which the router retries on the next target.
    #[tokio::test(start_paused = true)]
    async fn an_empty_stream_or_one_that_starts_with_garbage_is_a_protocol_error() {
        for (first, says) in [("[DONE]", "[DONE]"), ("{broken", "not JSON")] {
            let (tx, body) = feed();
            tx.send(event(first)).unwrap();
            let opened =
                UpstreamStream::open("t".into(), body, Duration::from_secs(1), LIMITS, None).await;
            match opened {
                Err(AttemptError::Protocol(message)) => {
                    assert!(message.contains(says), "{message}")
                }
                Err(other) => panic!("{first}: {other}"),
                Ok(_) => panic!("{first}: opened"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_after_the_first_event_ends_the_stream_at_the_idle_timeout() {
        let (tx, body) = feed();
        tx.send(event("1")).unwrap();
        let mut stream = open(body, LIMITS).await;
        assert_eq!(stream.next().await, Some(Ok("1".to_string())));
        let started = Instant::now();
        // The sender stays alive: the upstream stalls without closing.
        let err = stream.next().await.unwrap().unwrap_err();
        let waited = started.elapsed();
        assert!(
            waited >= LIMITS.idle_timeout && waited < LIMITS.idle_timeout * 2,
            "{waited:?}"
        );
        assert!(err.contains("stream_idle_timeout_ms"), "{err}");
        assert_eq!(stream.next().await, None, "the stream is over");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn events_that_keep_coming_are_cut_only_at_max_stream_ms() {
        let (tx, body) = feed();
        tx.send(event("0")).unwrap();
        tokio::spawn(async move {
            // Each gap is shorter than the idle timeout; the whole is far longer.
            for i in 1..20 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                tx.send(event(&i.to_string())).unwrap();
            }
            tx.send(event("[DONE]")).unwrap();
        });
        let mut stream = open(body, LIMITS).await;
        let mut got = Vec::new();
        while let Some(event) = stream.next().await {
            got.push(event.unwrap());
        }
        assert_eq!(got.len(), 21);
        assert_eq!(got.last().map(String::as_str), Some("[DONE]"));
        // Third probe, A4: an upstream sending (empty) events forever, each within the idle
        // timeout, held its slot until max_stream_bytes; it ends at max_stream_ms.
        let (tx, body) = feed();
        tx.send(event("0")).unwrap();
        let feeding = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if tx.send(event("{}")).is_err() {
                    break;
                }
            }
        });
        let limits = StreamLimits {
            max_duration: Duration::from_secs(2),
            ..LIMITS
        };
        let mut stream = open(body, limits).await;
        let started = Instant::now();
        let err = loop {
            match stream.next().await {
                Some(Ok(_)) => {}
                Some(Err(err)) => break err,
                None => panic!("the stream ended without an error"),
            }
        };
        let lasted = started.elapsed();
        assert!(err.contains("max_stream_ms"), "{err}");
        assert!(
            lasted >= limits.max_duration && lasted < limits.max_duration + LIMITS.idle_timeout,
            "{lasted:?}"
        );
        assert_eq!(stream.next().await, None, "the stream is over");
        drop(stream);
        feeding.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_past_its_byte_cap_ends_with_an_error() {
        let (tx, body) = feed();
        // 100 bytes per event with its framing (a JSON string: a first event must be JSON).
        let payload = format!("\"{}\"", "x".repeat(88));
        for _ in 0..30 {
            tx.send(event(&payload)).unwrap();
        }
        let limits = StreamLimits {
            max_bytes: 1024,
            ..LIMITS
        };
        let mut stream = open(body, limits).await;
        let mut delivered = 0;
        let err = loop {
            match stream.next().await {
                Some(Ok(_)) => delivered += 1,
                Some(Err(err)) => break err,
                None => panic!("the stream ended without an error"),
            }
        };
        assert_eq!(delivered, 10, "10 events of 100 bytes fit in 1024");
        assert!(err.contains("max_stream_bytes"), "{err}");
        assert_eq!(stream.next().await, None);
    }

    fn target() -> TargetState {
        TargetState::new(
            Arc::new(Upstream {
                name: "t".into(),
                base_url: "http://127.0.0.1:1/v1".into(),
                dialect: crate::providers::Dialect::OpenAi,
                signing: Vec::new(),
                model: None,
                timeout: Duration::from_secs(1),
                ttft_timeout: Duration::from_secs(1),
                stream_json: false,
                headers: Vec::new(),
            }),
            TargetLimits {
                max_concurrency: 1,
                ..TargetLimits::default()
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_stream_holds_its_slot_until_done_failed_or_dropped() {
        let target = target();
        let busy = |target: &TargetState| target.try_slot(Instant::now(), 0, false).is_err();

        // Until [DONE].
        let (tx, body) = feed();
        tx.send(event("1")).unwrap();
        let mut stream = open(body, LIMITS).await;
        stream.hold(target.try_slot(Instant::now(), 0, false).unwrap());
        assert!(busy(&target));
        assert_eq!(target.snapshot(Instant::now())["in_flight"], 1);
        assert!(stream.next().await.unwrap().is_ok());
        assert!(busy(&target), "still streaming");
        tx.send(event("[DONE]")).unwrap();
        assert_eq!(stream.next().await, Some(Ok("[DONE]".to_string())));
        assert!(!busy(&target), "the upstream is done");
        drop(stream);

        // Until it fails (here: the idle timeout).
        let (tx, body) = feed();
        tx.send(event("1")).unwrap();
        let mut stream = open(body, LIMITS).await;
        stream.hold(target.try_slot(Instant::now(), 0, false).unwrap());
        assert!(stream.next().await.unwrap().is_ok());
        assert!(stream.next().await.unwrap().is_err());
        assert!(!busy(&target));
        drop((stream, tx));

        // Until the reader drops it (the client went away).
        let (tx, body) = feed();
        tx.send(event("1")).unwrap();
        let mut stream = open(body, LIMITS).await;
        stream.hold(target.try_slot(Instant::now(), 0, false).unwrap());
        assert!(busy(&target));
        drop(stream);
        assert!(!busy(&target));
        assert_eq!(target.snapshot(Instant::now())["in_flight"], 0);
        drop(tx);
    }
}
