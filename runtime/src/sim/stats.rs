//! Request and fault counters, served by `GET /sim/stats`.
//!
//! Plain relaxed atomics: every request bumps one or two of them, so they must cost no lock.
//! Besides what was received and injected, the `billed` counters say what the simulator
//! charged, the way a provider bills: see [`Billed`].
//! Counters are independent, so a snapshot taken while requests run may be a few increments
//! apart between fields; a test reads them after its requests have completed.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Completion, embedding and search requests received (whatever their outcome).
    pub requests: AtomicU64,
    /// Chat requests received, in any dialect (`/v1/chat/completions`, Anthropic, Gemini,
    /// Azure).
    pub chat_completions: AtomicU64,
    /// Embeddings requests received (`/v1/embeddings`, Azure).
    pub embeddings: AtomicU64,
    /// Vector searches received (`/api/v2/.../query`).
    pub searches: AtomicU64,
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
    /// See [`Billed::requests`].
    pub billed_requests: AtomicU64,
    /// See [`Billed::prompt_tokens`].
    pub billed_prompt_tokens: AtomicU64,
    /// See [`Billed::completion_tokens`].
    pub billed_completion_tokens: AtomicU64,
    /// See [`Billed::embedding_tokens`].
    pub billed_embedding_tokens: AtomicU64,
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
    /// See `Stats::searches`.
    pub searches: u64,
    /// See `Stats::streams`.
    pub streams: u64,
    /// Injected faults by kind.
    pub faults: FaultCounts,
    /// What the simulator billed.
    pub billed: Billed,
    /// The `rpm_limit` fault's window (left out until it has seen a request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<crate::sim::minute::RpmStats>,
}

/// What the simulator billed for chat completions, the way a provider does: a request it
/// accepted (no fault decided otherwise) is billed its prompt at once; a non-streamed answer
/// is billed all its completion tokens then too, even if the client leaves before the
/// answer; a stream is billed each content token as it is sent (a stream cut by a fault or by
/// its client pays only for what was sent). An injected error with `error_billed_tokens`
/// bills those prompt tokens. Hangs, resets and other errors bill nothing. Token counts are
/// the ones the answers' `usage` reports. An embeddings request it answers is billed its
/// input tokens.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Billed {
    /// Chat and embeddings requests billed anything.
    pub requests: u64,
    /// Prompt tokens billed.
    pub prompt_tokens: u64,
    /// Completion tokens billed.
    pub completion_tokens: u64,
    /// Input tokens of embeddings requests billed (not in `prompt_tokens`).
    pub embedding_tokens: u64,
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
    /// Bills one request `prompt_tokens` and `completion_tokens` (more of its completion
    /// may follow with [`Stats::bill_completion`]).
    pub fn bill(&self, prompt_tokens: u64, completion_tokens: u64) {
        bump(&self.billed_requests);
        self.billed_prompt_tokens
            .fetch_add(prompt_tokens, Ordering::Relaxed);
        self.bill_completion(completion_tokens);
    }

    /// Bills one embeddings request its `tokens` of input.
    pub fn bill_embeddings(&self, tokens: u64) {
        bump(&self.billed_requests);
        self.billed_embedding_tokens
            .fetch_add(tokens, Ordering::Relaxed);
    }

    /// Bills `tokens` more completion tokens of a request already billed (a stream's).
    pub fn bill_completion(&self, tokens: u64) {
        self.billed_completion_tokens
            .fetch_add(tokens, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: get(&self.requests),
            chat_completions: get(&self.chat_completions),
            embeddings: get(&self.embeddings),
            searches: get(&self.searches),
            streams: get(&self.streams),
            faults: FaultCounts {
                errors: get(&self.errors),
                rate_limited: get(&self.rate_limited),
                hangs: get(&self.hangs),
                resets: get(&self.resets),
                stream_cuts: get(&self.stream_cuts),
            },
            billed: Billed {
                requests: get(&self.billed_requests),
                prompt_tokens: get(&self.billed_prompt_tokens),
                completion_tokens: get(&self.billed_completion_tokens),
                embedding_tokens: get(&self.billed_embedding_tokens),
            },
            rpm: None,
        }
    }

    /// Sets every counter back to zero.
    pub fn reset(&self) {
        let all = [
            &self.requests,
            &self.chat_completions,
            &self.embeddings,
            &self.searches,
            &self.billed_embedding_tokens,
            &self.streams,
            &self.errors,
            &self.rate_limited,
            &self.hangs,
            &self.resets,
            &self.stream_cuts,
            &self.billed_requests,
            &self.billed_prompt_tokens,
            &self.billed_completion_tokens,
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
        bump(&stats.searches);
        bump(&stats.stream_cuts);
        stats.bill(7, 2);
        stats.bill_completion(3);
        let json = serde_json::to_value(stats.snapshot()).expect("serializes");
        let expected = serde_json::json!({
            "requests": 1, "chat_completions": 0, "embeddings": 0, "searches": 1, "streams": 0,
            "faults": {"errors": 0, "rate_limited": 0, "hangs": 0, "resets": 0, "stream_cuts": 1},
            "billed": {"requests": 1, "prompt_tokens": 7, "completion_tokens": 5, "embedding_tokens": 0}
        });
        assert_eq!(json, expected);
        stats.reset();
        assert_eq!(stats.snapshot(), StatsSnapshot::default());
    }
}
