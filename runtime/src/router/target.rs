//! The live state of one upstream target: its breaker, its concurrency limit, its
//! requests-per-minute bucket and a cool-down set by `Retry-After`.
//!
//! With `[state] backend = "redis"` a target's RPM and TPM are the fleet's
//! ([`FleetLimits`], admitted by [`TargetState::admit_fleet`] after the local checks of
//! [`TargetState::try_slot`], or ahead of them for a chat call's first target: `Start`);
//! breakers, cool-downs and concurrency stay per node.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::breaker::{Admit, Breaker, State};
use crate::config::TargetLimits;
use crate::providers::Upstream;
use crate::rate::MinuteBucket;
use crate::state::Shared;
use crate::state::limits::{FleetLimits, Permit, Refused};
use crate::sync::lock;

/// Why a target could not take a request now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// Its breaker is open (or its probe is out).
    Open,
    /// In `Retry-After` cool-down until then.
    CoolingDown(Instant),
    /// Its RPM bucket is empty until then.
    RateLimited(Instant),
    /// At its concurrency limit.
    Busy,
    /// Its fleet-wide limits cannot be read (Redis unavailable, `fail_closed`).
    SharedLimitsDown,
}

/// A fleet refusal as the router sees it.
fn unavailable(refused: Refused) -> Unavailable {
    match refused {
        Refused::Limited { wait, .. } => Unavailable::RateLimited(Instant::now() + wait),
        Refused::Unavailable => Unavailable::SharedLimitsDown,
    }
}

/// A granted slot on a target: hold it for the attempt, then report the outcome with
/// [`TargetState::finish`]. A slot dropped without an outcome (the client went away
/// mid-attempt) gives everything back, a probe included, so a breaker never stays half-open.
pub struct Slot {
    /// The concurrency permit.
    _permit: OwnedSemaphorePermit,
    /// Whether this attempt is the breaker's probe.
    pub probe: bool,
    /// The target's breaker, to give an unfinished probe back.
    breaker: Arc<Mutex<Breaker>>,
    /// The target's in-flight count.
    in_flight: Arc<AtomicU32>,
    /// Set by `finish`.
    finished: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.finished && self.probe {
            lock(&self.breaker).release_probe(Instant::now());
        }
    }
}

/// One target's live state.
pub struct TargetState {
    /// Where and how to reach it.
    pub upstream: Arc<Upstream>,
    /// The limits it was built with.
    pub limits: TargetLimits,
    /// Its breaker.
    breaker: Arc<Mutex<Breaker>>,
    /// Its concurrency limit.
    permits: Arc<Semaphore>,
    /// Its RPM bucket, when it has a limit.
    rpm: Option<Mutex<MinuteBucket>>,
    /// Its TPM bucket, when it has a limit.
    tpm: Option<Mutex<MinuteBucket>>,
    /// Its RPM and TPM shared by the fleet (they replace the two buckets), with a Redis
    /// backend.
    fleet: Option<FleetLimits>,
    /// `Retry-After` cool-down end.
    cooldown: Mutex<Option<Instant>>,
    /// Attempts in flight (for `/admin/targets`).
    in_flight: Arc<AtomicU32>,
    /// Latency EWMA of successful attempts, µs (0 until the first one).
    ewma_us: AtomicU64,
    /// Latencies of the last successful attempts, for a hedge's delay.
    recent: Mutex<Recent>,
}

/// Latencies of the last [`RECENT`] successful attempts of a target, µs, oldest overwritten.
struct Recent {
    samples: [u32; RECENT],
    /// Samples taken so far, at most [`RECENT`].
    len: usize,
    /// Where the next one goes.
    next: usize,
}

/// Successful attempts a target's p95 is taken over.
const RECENT: usize = 128;

impl TargetState {
    /// Gives back the rate-limit permits this node leased for the target and did not use
    /// (at shutdown).
    pub async fn give_back(&self) {
        if let Some(fleet) = &self.fleet {
            fleet.give_back().await;
        }
    }

    /// A target with `limits`, closed breaker, full buckets.
    pub fn new(upstream: Arc<Upstream>, limits: TargetLimits) -> TargetState {
        TargetState {
            upstream,
            breaker: Arc::new(Mutex::new(Breaker::new(limits.breaker))),
            permits: Arc::new(Semaphore::new(limits.max_concurrency as usize)),
            rpm: limits.rpm.map(MinuteBucket::new),
            tpm: limits.tpm.map(MinuteBucket::new),
            fleet: None,
            cooldown: Mutex::new(None),
            in_flight: Arc::new(AtomicU32::new(0)),
            ewma_us: AtomicU64::new(0),
            recent: Mutex::new(Recent {
                samples: [0; RECENT],
                len: 0,
                next: 0,
            }),
            limits,
        }
    }

    /// Makes the target's RPM and TPM fleet-wide when `shared` is the fleet's Redis (keys
    /// under `{t:<name>}`); unchanged for the local backend.
    pub fn with_fleet(mut self, shared: Option<&Arc<Shared>>) -> TargetState {
        if let Some(shared) = shared {
            let tag = format!("t:{}", self.upstream.name);
            self.fleet = FleetLimits::new(shared, &tag, self.limits.rpm, self.limits.tpm);
        }
        self
    }

    /// Admits a request of about `tokens` tokens against the fleet's RPM and TPM of the
    /// target (one Redis script on the request lane), after [`Self::try_slot`] took the
    /// slot; nothing to do without a Redis backend.
    pub async fn admit_fleet(&self, tokens: u32) -> Result<(), Unavailable> {
        let Some(fleet) = &self.fleet else {
            return Ok(());
        };
        fleet.take(tokens).await.map_err(unavailable)
    }

    /// Whether each fleet admission of this target is a Redis call of its own (fleet limits
    /// without leases): the LLM step then sends it ahead, with the call's reservation
    /// ([`super::Start`]).
    pub fn admits_on_redis(&self) -> bool {
        self.fleet
            .as_ref()
            .is_some_and(FleetLimits::admits_per_call)
    }

    /// Whether the target would take an attempt now as far as this node knows: its breaker
    /// closed, no cool-down, room under its concurrency limit. Reads only (the slot is
    /// [`Self::try_slot`]'s).
    pub fn ready_now(&self, now: Instant) -> bool {
        let cooling = lock(&self.cooldown).is_some_and(|until| now < until);
        !cooling
            && lock(&self.breaker).state() == State::Closed
            && self.permits.available_permits() > 0
    }

    /// [`Self::admit_fleet`] before the slot is taken, for a call that may not be made: the
    /// permit can be given back ([`Self::give_back_permit`]).
    pub(super) async fn admit_fleet_returnable(&self, tokens: u32) -> Result<Permit, Unavailable> {
        let Some(fleet) = &self.fleet else {
            return Ok(Permit::default());
        };
        fleet.take_returnable(tokens).await.map_err(unavailable)
    }

    /// Gives back a permit of [`Self::admit_fleet_returnable`] no call used.
    pub(super) async fn give_back_permit(&self, permit: Permit) {
        if let Some(fleet) = &self.fleet {
            fleet.give_back_permit(permit).await;
        }
    }

    /// [`Self::give_back_permit`] off the request path (the fleet's background lane).
    pub(super) fn give_back_permit_later(self: &Arc<Self>, permit: Permit) {
        if let Some(fleet) = &self.fleet {
            let this = self.clone();
            fleet.spawn(async move { this.give_back_permit(permit).await });
        }
    }

    /// Tries to take a slot now for a request of about `tokens` tokens. `force` ignores an
    /// open breaker and a cool-down (the last resort of a route is never skipped entirely)
    /// but never the concurrency, RPM or TPM limits.
    pub fn try_slot(&self, now: Instant, tokens: u32, force: bool) -> Result<Slot, Unavailable> {
        if !force
            && let Some(until) = *lock(&self.cooldown)
            && now < until
        {
            return Err(Unavailable::CoolingDown(until));
        }
        let probe = match lock(&self.breaker).admit(now) {
            Admit::Yes => false,
            Admit::Probe => true,
            Admit::No if force => false,
            Admit::No => return Err(Unavailable::Open),
        };
        let give_back = |breaker: &Mutex<Breaker>| {
            if probe {
                lock(breaker).release_probe(now);
            }
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            give_back(&self.breaker);
            return Err(Unavailable::Busy);
        };
        // Fleet-wide limits are admitted by `admit_fleet`, not by this node's buckets.
        let local = self.fleet.is_none();
        if local
            && let Some(bucket) = &self.rpm
            && let Err(wait) = lock(bucket).take(1.0, now)
        {
            give_back(&self.breaker);
            return Err(Unavailable::RateLimited(now + wait));
        }
        if local
            && let Some(bucket) = &self.tpm
            && let Err(wait) = lock(bucket).take(f64::from(tokens), now)
        {
            if let Some(rpm) = &self.rpm {
                lock(rpm).give_back(1.0);
            }
            give_back(&self.breaker);
            return Err(Unavailable::RateLimited(now + wait));
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            _permit: permit,
            probe,
            breaker: self.breaker.clone(),
            in_flight: self.in_flight.clone(),
            finished: false,
        })
    }

    /// Reports an attempt's outcome (`success` false for retryable failures only) and, for a
    /// success, its latency, and gives the slot back.
    pub fn finish(
        &self,
        mut slot: Slot,
        success: bool,
        retry_after: Option<Duration>,
        latency: Duration,
        now: Instant,
    ) {
        self.record(&mut slot, success, retry_after, latency, now);
        drop(slot);
    }

    /// Reports an attempt's outcome like [`Self::finish`] but keeps the slot: a live stream
    /// holds it (its concurrency permit and in-flight count) until the stream is done.
    pub fn record(
        &self,
        slot: &mut Slot,
        success: bool,
        retry_after: Option<Duration>,
        latency: Duration,
        now: Instant,
    ) {
        slot.finished = true;
        if success {
            let sample = latency.as_micros().min(u128::from(u64::MAX)) as u64;
            let old = self.ewma_us.load(Ordering::Relaxed);
            // EWMA with weight 1/5 for the newest sample; the first sample seeds it.
            let new = if old == 0 {
                sample.max(1)
            } else {
                (old * 4 + sample) / 5
            };
            self.ewma_us.store(new, Ordering::Relaxed);
            self.remember(sample);
        }
        lock(&self.breaker).record(success, now);
        if let Some(wait) = retry_after {
            *lock(&self.cooldown) = Some(now + wait);
        }
    }

    /// Keeps a successful attempt's latency (µs) for [`Self::p95`].
    fn remember(&self, sample: u64) {
        let mut recent = lock(&self.recent);
        let at = recent.next;
        recent.samples[at] = u32::try_from(sample).unwrap_or(u32::MAX);
        recent.next = (at + 1) % RECENT;
        recent.len = (recent.len + 1).min(RECENT);
    }

    /// Keeps `latency` as if an attempt had succeeded in it (tests of what depends on p95).
    #[cfg(test)]
    pub(crate) fn learn(&self, latency: Duration) {
        self.remember(latency.as_micros() as u64);
    }

    /// The 95th percentile latency of the target's last (up to 128) successful attempts;
    /// `None` before `min_samples` of them.
    pub fn p95(&self, min_samples: usize) -> Option<Duration> {
        let (mut samples, len) = {
            let recent = lock(&self.recent);
            (recent.samples, recent.len)
        };
        if len < min_samples.max(1) {
            return None;
        }
        let known = &mut samples[..len];
        let at = (len * 95 / 100).min(len - 1);
        let (_, p95, _) = known.select_nth_unstable(at);
        Some(Duration::from_micros(u64::from(*p95)))
    }

    /// Latency EWMA of successful attempts, µs; 0 when none yet (then preferred, to learn).
    pub fn ewma_us(&self) -> u64 {
        self.ewma_us.load(Ordering::Relaxed)
    }

    /// Waits until the concurrency limit has room (the permit is given back at once).
    pub async fn wait_for_room(&self) {
        if let Ok(permit) = self.permits.acquire().await {
            drop(permit);
        }
    }

    /// The breaker's state as the `weir_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn breaker_gauge(&self) -> u8 {
        match lock(&self.breaker).state() {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open { .. } => 2,
        }
    }

    /// A JSON view for `/admin/targets`.
    pub fn snapshot(&self, now: Instant) -> serde_json::Value {
        let breaker = lock(&self.breaker);
        let (state, open_for_ms) = match breaker.state() {
            State::Closed => ("closed", None),
            State::HalfOpen => ("half_open", None),
            State::Open { until } => (
                "open",
                Some(until.saturating_duration_since(now).as_millis() as u64),
            ),
        };
        serde_json::json!({
            "name": &*self.upstream.name,
            "base_url": self.upstream.base_url,
            "breaker": state,
            "open_for_ms": open_for_ms,
            "trips": breaker.trips(),
            "consecutive_failures": breaker.consecutive_failures(),
            "in_flight": self.in_flight.load(Ordering::Relaxed),
            "latency_ewma_ms": self.ewma_us() as f64 / 1000.0,
            "max_concurrency": self.limits.max_concurrency,
            "rpm": self.limits.rpm,
            "tpm": self.limits.tpm,
            "limits": if self.fleet.is_some() { "fleet" } else { "node" },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BreakerSettings;

    fn state() -> TargetState {
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
                max_concurrency: 2,
                rpm: None,
                tpm: None,
                breaker: BreakerSettings {
                    consecutive_failures: 1,
                    ejection: Duration::from_secs(1),
                    ..BreakerSettings::default()
                },
                ..TargetLimits::default()
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_without_an_outcome_is_given_back() {
        let target = state();
        let slot = target.try_slot(Instant::now(), 1, false).unwrap();
        target.finish(slot, false, None, Duration::ZERO, Instant::now());
        assert_eq!(
            target.try_slot(Instant::now(), 1, false).err(),
            Some(Unavailable::Open)
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = target.try_slot(Instant::now(), 1, false).unwrap();
        assert!(probe.probe);
        drop(probe); // the client went away mid-attempt
        let again = target.try_slot(Instant::now(), 1, false).unwrap();
        assert!(again.probe, "the probe slot came back");
        assert_eq!(target.snapshot(Instant::now())["in_flight"], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_concurrency_limit_holds() {
        let target = state();
        let a = target.try_slot(Instant::now(), 1, false).unwrap();
        let _b = target.try_slot(Instant::now(), 1, false).unwrap();
        assert_eq!(
            target.try_slot(Instant::now(), 1, false).err(),
            Some(Unavailable::Busy)
        );
        target.finish(a, true, None, Duration::from_millis(5), Instant::now());
        assert!(target.try_slot(Instant::now(), 1, false).is_ok());
    }
}
