//! Request and fault counters, served by `GET /sim/stats`.
//!
//! Plain relaxed atomics: every request bumps one or two of them, so they must cost no lock.
//! Counters are independent, so a snapshot taken while requests run may be a few increments
//! apart between fields; a test reads them after its requests have completed.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Completion and embedding requests received (whatever their outcome).
    pub requests: AtomicU64,
    /// `POST /v1/chat/completions` requests received.
    pub chat_completions: AtomicU64,
    /// `POST /v1/embeddings` requests received.
    pub embeddings: AtomicU64,
    /// Prompt tokens of the embeddings requests answered: what a provider would bill.
    pub embedding_tokens: AtomicU64,
    /// Well-formed chat requests that asked for `"stream": true`.
    pub streams: AtomicU64,
    /// Requests answered with an injected error status.
    pub errors: AtomicU64,
    /// Requests answered with an injected 429.
    pub rate_limited: AtomicU64,
    /// Requests left hanging.
    pub hangs: AtomicU64,
    /// Connections reset instead of answering.
    pub resets: AtomicU64,
    /// Streams cut before `[DONE]`.
    pub stream_cuts: AtomicU64,
}

/// What `GET /sim/stats` returns.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// See `Stats::requests`.
    pub requests: u64,
    /// See `Stats::chat_completions`.
    pub chat_completions: u64,
    /// See `Stats::embeddings`.
    pub embeddings: u64,
    /// See `Stats::embedding_tokens`.
    pub embedding_tokens: u64,
    /// See `Stats::streams`.
    pub streams: u64,
    /// Injected faults by kind.
    pub faults: FaultCounts,
}

/// The fault part of `StatsSnapshot`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FaultCounts {
    /// See `Stats::errors`.
    pub errors: u64,
    /// See `Stats::rate_limited`.
    pub rate_limited: u64,
    /// See `Stats::hangs`.
    pub hangs: u64,
    /// See `Stats::resets`.
    pub resets: u64,
    /// See `Stats::stream_cuts`.
    pub stream_cuts: u64,
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: get(&self.requests),
            chat_completions: get(&self.chat_completions),
            embeddings: get(&self.embeddings),
            embedding_tokens: get(&self.embedding_tokens),
            streams: get(&self.streams),
            faults: FaultCounts {
                errors: get(&self.errors),
                rate_limited: get(&self.rate_limited),
                hangs: get(&self.hangs),
                resets: get(&self.resets),
                stream_cuts: get(&self.stream_cuts),
            },
        }
    }

    /// Sets every counter back to zero.
    pub fn reset(&self) {
        let all = [
            &self.requests,
            &self.chat_completions,
            &self.embeddings,
            &self.embedding_tokens,
            &self.streams,
            &self.errors,
            &self.rate_limited,
            &self.hangs,
            &self.resets,
            &self.stream_cuts,
        ];
        for c in all {
            c.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_has_the_documented_shape() {
        let stats = Stats::default();
        bump(&stats.requests);
        bump(&stats.stream_cuts);
        let json = serde_json::to_value(stats.snapshot()).expect("serializes");
        let expected = serde_json::json!({
            "requests": 1, "chat_completions": 0, "embeddings": 0, "embedding_tokens": 0,
            "streams": 0,
            "faults": {"errors": 0, "rate_limited": 0, "hangs": 0, "resets": 0, "stream_cuts": 1}
        });
        assert_eq!(json, expected);
        stats.reset();
        assert_eq!(stats.snapshot(), StatsSnapshot::default());
    }
}
