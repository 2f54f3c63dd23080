//! An upstream SSE stream whose first event has been read.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::openai::SseParser;
use crate::providers::AttemptError;

/// A live upstream stream: yields the `data:` payloads of its events in order.
pub struct UpstreamStream {
    /// The target serving it.
    pub target: Arc<str>,
    /// The response body.
    body: Incoming,
    /// Incremental SSE parsing.
    parser: SseParser,
    /// Parsed events not yet taken.
    queue: VecDeque<String>,
    /// The body ended.
    ended: bool,
}

impl UpstreamStream {
    /// Reads until the first event arrives (within `timeout`), so a target that fails before
    /// its first byte can still be replaced by the next one.
    pub(crate) async fn open(
        target: Arc<str>,
        body: Incoming,
        timeout: Duration,
    ) -> Result<UpstreamStream, AttemptError> {
        let mut stream = UpstreamStream {
            target,
            body,
            parser: SseParser::default(),
            queue: VecDeque::new(),
            ended: false,
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
        Ok(stream)
    }

    /// The next event's payload; `None` at the end of the body; `Err` when the body broke.
    pub async fn next(&mut self) -> Option<Result<String, String>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            match self.read_more().await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(err) => return Some(Err(err.to_string())),
            }
        }
    }

    /// Reads one more frame; false at the end of the body.
    async fn read_more(&mut self) -> Result<bool, AttemptError> {
        loop {
            match self.body.frame().await {
                None => {
                    self.ended = true;
                    return Ok(false);
                }
                Some(Err(err)) => {
                    self.ended = true;
                    return Err(AttemptError::Protocol(format!("the stream broke: {err}")));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let events = self.parser.feed(&data).map_err(AttemptError::Protocol)?;
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
