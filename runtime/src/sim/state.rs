//! What every connection of one simulator shares: its faults, counters, request ring and
//! pacing. Built once by `Sim::bind` and handed to each connection behind an `Arc`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::sim::config::SimConfig;
use crate::sim::faults::Faults;
use crate::sim::minute::MinuteWindow;
use crate::sim::ring::RequestRing;
use crate::sim::stats::Stats;
use crate::sync::unpoisoned;

/// Model named in responses when neither the request nor the config names one.
pub const DEFAULT_MODEL: &str = "weir-sim";

/// Shared state of one simulator.
#[derive(Debug)]
pub struct SimState {
    /// Faults in force. Each request takes a cheap `Arc` clone under a read lock held for a few
    /// nanoseconds; `POST /sim/faults` swaps the `Arc`.
    faults: RwLock<Arc<Faults>>,
    /// Request and fault counters.
    pub stats: Stats,
    /// Last requests received.
    pub ring: RequestRing,
    /// The `rpm_limit` fault's sliding window.
    pub minute: MinuteWindow,
    /// Delay before the first chunk of a stream.
    pub ttft: Duration,
    /// Delay between content chunks of a stream.
    pub inter_token: Duration,
    /// Model named in every response, when set.
    pub model_name: Option<String>,
    /// Sequence number making response ids unique.
    next_id: AtomicU64,
    /// JSON-mode answers served since the faults were set (the `invalid_json_first` fault).
    pub json_answers: AtomicU64,
}

impl SimState {
    /// State for a validated config.
    pub fn new(config: &SimConfig) -> SimState {
        SimState {
            faults: RwLock::new(Arc::new(config.faults.clone())),
            stats: Stats::default(),
            ring: RequestRing::default(),
            minute: MinuteWindow::default(),
            ttft: Duration::from_millis(config.ttft_ms),
            inter_token: Duration::from_millis(config.inter_token_ms),
            model_name: config.model_name.clone(),
            json_answers: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
        }
    }

    /// The faults in force now.
    pub fn faults(&self) -> Arc<Faults> {
        let faults = unpoisoned(self.faults.read());
        Arc::clone(&faults)
    }

    /// Replaces the faults (already validated).
    pub fn set_faults(&self, faults: Faults) {
        *unpoisoned(self.faults.write()) = Arc::new(faults);
        self.json_answers.store(0, Ordering::Relaxed);
    }

    /// The model a response names: the configured override, else the request's, else
    /// `DEFAULT_MODEL`.
    pub fn response_model<'a>(&'a self, requested: Option<&'a str>) -> &'a str {
        self.model_name
            .as_deref()
            .or(requested)
            .unwrap_or(DEFAULT_MODEL)
    }

    /// A fresh response id such as `chatcmpl-3f2a...`: 24 hex digits, unique per simulator.
    pub fn next_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let hash = blake3::hash(&n.to_le_bytes());
        let hex = hash.to_hex();
        format!("{prefix}{}", &hex.as_str()[..24])
    }
}
