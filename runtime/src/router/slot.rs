//! The slot: a target with room for the next attempt, taken now, or waited for in the route's
//! bounded queue, or not at all (the request is shed).
//!
//! Targets are looked at in chain order from the one the loop asks for, skipping those whose
//! breaker is open, that cool down after a `Retry-After`, or that are at their RPM, TPM or
//! concurrency limit. If every breaker is open, the chain's last target is tried anyway
//! rather than failing without trying. When none has room, the request takes a place in the
//! route's wait queue ([`RoutePolicy::queue`]) and sleeps until the soonest change (a busy
//! target giving a slot back, a cool-down or rate limit ending), at most until `queue_timeout`
//! after the request started and never past its deadline. A full queue sheds at once: waiting
//! requests are bounded, so an overload is a quick 503, never a pile-up.
//!
//! When only rate limits stand in the way and the soonest of them frees up after the wait
//! could end, waiting cannot help: the request is refused at once with 429 and the time
//! until there is room (`NoSlot::RateLimited`). A target whose fleet-wide limits cannot be
//! read (`fail_closed`) is skipped; when that is all there is, `NoSlot::StateUnavailable`.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::ahead::Ahead;
use super::policy::{MIN_ATTEMPT_TIME, RoutePolicy};
use super::target::{Slot, TargetState, Unavailable};
use crate::sync::lock;

/// The outcome of looking for a target with room now.
enum Pick<'a> {
    /// This target took the attempt.
    Got(Taken<'a>),
    /// None could take it now; wait for the soonest change.
    Wait {
        /// A target at its concurrency limit to wait on, if any.
        busy: Option<usize>,
        /// When a cooling-down or rate-limited target frees up, if any.
        soonest: Option<Instant>,
        /// Whether every target that may free up is rate-limited (none busy or cooling
        /// down).
        only_limited: bool,
        /// Whether a target was skipped because its fleet-wide limits cannot be read.
        state_unavailable: bool,
    },
}

/// Why no slot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NoSlot {
    /// Every target is at its limit and the queue is full, or the wait passed the queue
    /// timeout: the request is shed.
    Shed,
    /// Less than [`MIN_ATTEMPT_TIME`] is left before the deadline.
    Deadline,
    /// Every target with room later is over its RPM or TPM until then, past the wait the
    /// request may take.
    RateLimited(Instant),
    /// The only targets left have fleet-wide limits that cannot be read (`fail_closed`).
    StateUnavailable,
}

/// A slot taken on a target.
pub(super) struct Taken<'a> {
    /// The target's position in the chain.
    pub position: usize,
    /// The target.
    pub target: &'a TargetState,
    /// The slot, held for the attempt.
    pub slot: Slot,
}

/// Where one call takes its slots.
pub(super) struct Slots<'a> {
    /// Every target of the router.
    pub targets: &'a [Arc<TargetState>],
    /// The call's chain (indexes into `targets`).
    pub chain: &'a [usize],
    /// The route's policy, for its wait queue.
    pub policy: &'a RoutePolicy,
    /// Tokens the call may use, for TPM limits.
    pub tokens: u32,
    /// The end of the call's wait in the queue (its start plus `queue_timeout`).
    pub queue_deadline: Instant,
    /// The first target's fleet admission, when the LLM step sent it ahead: used by the
    /// first slot taken if it is on that target, given back otherwise (or when the call ends
    /// without a slot).
    pub ahead: Mutex<Option<Ahead>>,
}

impl<'a> Slots<'a> {
    /// A slot on the first target from chain position `start` with room, waiting in the queue
    /// for one when none has room; no attempt starts with less than [`MIN_ATTEMPT_TIME`]
    /// left before `deadline`.
    pub async fn take(&self, start: usize, deadline: Instant) -> Result<Taken<'a>, NoSlot> {
        let mut queued = None;
        loop {
            let now = Instant::now();
            if deadline.saturating_duration_since(now) < MIN_ATTEMPT_TIME {
                return Err(NoSlot::Deadline);
            }
            let (busy, soonest) = match self.pick(start, now).await {
                Pick::Got(taken) => return Ok(taken),
                Pick::Wait {
                    busy: None,
                    soonest: None,
                    state_unavailable: true,
                    ..
                } => return Err(NoSlot::StateUnavailable),
                Pick::Wait {
                    busy: None,
                    soonest: Some(at),
                    only_limited: true,
                    ..
                } if at >= self.queue_deadline.min(deadline) => {
                    return Err(NoSlot::RateLimited(at));
                }
                Pick::Wait { busy, soonest, .. } => (busy, soonest),
            };
            let now = Instant::now();
            if queued.is_none() {
                match self.policy.queue.try_acquire() {
                    Ok(permit) => queued = Some(permit),
                    Err(_) => return Err(NoSlot::Shed),
                }
            }
            let until = self.queue_deadline.min(deadline);
            if now >= until {
                return Err(NoSlot::Shed);
            }
            let wake = soonest.map_or(until, |s| s.min(until));
            match busy.and_then(|position| self.target(position)) {
                Some(target) => {
                    let _ = tokio::time::timeout_at(wake, target.wait_for_room()).await;
                }
                None => tokio::time::sleep_until(wake).await,
            }
        }
    }

    /// A slot for a hedge beside the attempt on chain position `except`: the first other
    /// target from the one after it (wrapping) with room now. Never waits in the queue and
    /// never forces an open breaker: a hedge is extra, not a last resort.
    pub async fn for_hedge(&self, except: usize, now: Instant) -> Option<Taken<'a>> {
        let n = self.chain.len();
        let primary = self.chain.get(except);
        for offset in 1..n {
            let position = (except + offset) % n;
            if self.chain.get(position) == primary {
                continue;
            }
            let Some(target) = self.target(position) else {
                continue;
            };
            if let Ok(slot) = self.slot(position, target, now, false).await {
                return Some(Taken {
                    position,
                    target,
                    slot,
                });
            }
        }
        None
    }

    /// The target at chain position `position`.
    fn target(&self, position: usize) -> Option<&'a TargetState> {
        let index = *self.chain.get(position)?;
        self.targets.get(index).map(|t| &**t)
    }

    /// A slot on `target` (at chain position `position`): its local checks, then its
    /// fleet-wide limits (a Redis call with a Redis backend, unless the admission was sent
    /// ahead; the slot is given back when they refuse).
    async fn slot(
        &self,
        position: usize,
        target: &TargetState,
        now: Instant,
        force: bool,
    ) -> Result<Slot, Unavailable> {
        let slot = target.try_slot(now, self.tokens, force)?;
        // The first slot taken ends the admission sent ahead: it is this slot's, or it is
        // given back (its drop) rather than held for the rest of the call.
        let ahead = lock(&self.ahead).take();
        let ahead = ahead.and_then(|mut ahead| ahead.take(position, self.tokens, now));
        match ahead {
            Some(verdict) => verdict?,
            None => target.admit_fleet(self.tokens).await?,
        }
        Ok(slot)
    }

    /// The first target from `start` (wrapping) that takes the attempt now. If every breaker
    /// is open, the chain's last target is tried anyway.
    async fn pick(&self, start: usize, now: Instant) -> Pick<'a> {
        let chain = self.chain;
        let mut busy = None;
        let mut soonest: Option<Instant> = None;
        let mut only_limited = true;
        let mut state_unavailable = false;
        let mut all_open = true;
        for offset in 0..chain.len() {
            let position = (start + offset) % chain.len();
            let Some(target) = self.target(position) else {
                continue;
            };
            match self.slot(position, target, now, false).await {
                Ok(slot) => {
                    return Pick::Got(Taken {
                        position,
                        target,
                        slot,
                    });
                }
                Err(Unavailable::Open) => {}
                Err(Unavailable::SharedLimitsDown) => {
                    all_open = false;
                    state_unavailable = true;
                }
                Err(Unavailable::Busy) => {
                    all_open = false;
                    only_limited = false;
                    busy.get_or_insert(position);
                }
                Err(Unavailable::CoolingDown(at)) => {
                    all_open = false;
                    only_limited = false;
                    soonest = Some(soonest.map_or(at, |s| s.min(at)));
                }
                Err(Unavailable::RateLimited(at)) => {
                    all_open = false;
                    soonest = Some(soonest.map_or(at, |s| s.min(at)));
                }
            }
        }
        if all_open && !chain.is_empty() {
            let position = chain.len() - 1;
            if let Some(target) = self.target(position) {
                match self.slot(position, target, now, true).await {
                    Ok(slot) => {
                        return Pick::Got(Taken {
                            position,
                            target,
                            slot,
                        });
                    }
                    Err(Unavailable::RateLimited(at)) => soonest = Some(at),
                    Err(Unavailable::SharedLimitsDown) => state_unavailable = true,
                    Err(_) => {
                        only_limited = false;
                        busy = Some(position);
                    }
                }
            }
        }
        Pick::Wait {
            busy,
            soonest,
            only_limited,
            state_unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{BreakerSettings, PolicySettings, TargetLimits};
    use crate::router::testing::target_with;

    const NOWHERE: ([u8; 4], u16) = ([127, 0, 0, 1], 1);

    /// `n` targets of `max_concurrency` each.
    fn targets(n: usize, max_concurrency: u32) -> Vec<Arc<TargetState>> {
        let limits = TargetLimits {
            max_concurrency,
            breaker: BreakerSettings {
                consecutive_failures: 1,
                ..BreakerSettings::default()
            },
            ..TargetLimits::default()
        };
        (0..n)
            .map(|i| {
                target_with(
                    &format!("t{i}"),
                    NOWHERE.into(),
                    Duration::from_secs(1),
                    limits,
                )
            })
            .collect()
    }

    fn policy(queue_size: u32, queue_timeout: Duration) -> RoutePolicy {
        RoutePolicy::new(PolicySettings {
            queue_size,
            queue_timeout,
            ..PolicySettings::default()
        })
    }

    fn slots<'a>(
        targets: &'a [Arc<TargetState>],
        chain: &'a [usize],
        policy: &'a RoutePolicy,
    ) -> Slots<'a> {
        Slots {
            targets,
            chain,
            policy,
            tokens: 1,
            queue_deadline: Instant::now() + policy.settings.queue_timeout,
            ahead: Mutex::new(None),
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_target_with_room_from_the_start_is_taken_at_once() {
        let targets = targets(3, 1);
        let policy = policy(0, Duration::from_secs(1));
        let slots = slots(&targets, &[0, 1, 2], &policy);
        let started = Instant::now();
        let one = slots.take(1, far()).await.unwrap();
        assert_eq!(one.position, 1);
        // Target 1 is now at its limit: the next from 1 is 2, then round to 0.
        let two = slots.take(1, far()).await.unwrap();
        assert_eq!(two.position, 2);
        let zero = slots.take(1, far()).await.unwrap();
        assert_eq!(zero.position, 0);
        assert_eq!(started.elapsed(), Duration::ZERO);
        // All three busy and no queue: shed at once.
        assert_eq!(slots.take(0, far()).await.err(), Some(NoSlot::Shed));
        assert_eq!(started.elapsed(), Duration::ZERO);
        drop((one, two, zero));
        assert_eq!(targets[1].snapshot(Instant::now())["in_flight"], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_in_the_queue_until_a_slot_is_given_back() {
        let targets = targets(1, 1);
        let policy = policy(1, Duration::from_secs(1));
        let slots = slots(&targets, &[0], &policy);
        let held = slots.take(0, far()).await.unwrap();
        let started = Instant::now();
        let (taken, ()) = tokio::join!(slots.take(0, far()), async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(held);
        });
        assert_eq!(taken.unwrap().position, 0);
        assert_eq!(started.elapsed(), Duration::from_millis(30));
        assert_eq!(
            policy.queue.available_permits(),
            1,
            "the place is given back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_sheds_at_once_and_a_wait_ends_at_the_queue_timeout() {
        let targets = targets(1, 1);
        let policy = policy(1, Duration::from_millis(200));
        let slots = slots(&targets, &[0], &policy);
        let _held = slots.take(0, far()).await.unwrap();
        let started = Instant::now();
        let waiter = async {
            let result = slots.take(0, far()).await.err();
            (result, started.elapsed())
        };
        let latecomer = async {
            let result = slots.take(0, far()).await.err();
            (result, started.elapsed())
        };
        let (waited, shed) = tokio::join!(waiter, latecomer);
        assert_eq!(shed, (Some(NoSlot::Shed), Duration::ZERO));
        assert_eq!(waited, (Some(NoSlot::Shed), Duration::from_millis(200)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_never_passes_the_deadline() {
        let targets = targets(1, 1);
        let policy = policy(1, Duration::from_secs(2));
        let slots = slots(&targets, &[0], &policy);
        let _held = slots.take(0, far()).await.unwrap();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(100);
        assert_eq!(slots.take(0, deadline).await.err(), Some(NoSlot::Deadline));
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        // With less than the minimum attempt time left, nothing is even looked at.
        let targets = self::targets(1, 1);
        let slots = self::slots(&targets, &[0], &policy);
        let soon = Instant::now() + MIN_ATTEMPT_TIME - Duration::from_millis(1);
        assert_eq!(slots.take(0, soon).await.err(), Some(NoSlot::Deadline));
        assert_eq!(targets[0].snapshot(Instant::now())["in_flight"], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cooling_down_target_is_waited_for_until_its_cool_down_ends() {
        let targets = targets(1, 4);
        let policy = policy(1, Duration::from_secs(1));
        let slots = slots(&targets, &[0], &policy);
        let slot = slots.take(0, far()).await.unwrap().slot;
        // A 429 that asks for 250 ms (a refusal of the request: the breaker stays closed).
        let now = Instant::now();
        targets[0].finish(
            slot,
            true,
            Some(Duration::from_millis(250)),
            Duration::ZERO,
            now,
        );
        let taken = slots.take(0, far()).await.unwrap();
        assert_eq!(taken.position, 0);
        assert_eq!(now.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_longer_than_the_wait_is_refused_at_once_with_its_end() {
        let limits = TargetLimits {
            rpm: Some(1),
            ..TargetLimits::default()
        };
        let timeout = Duration::from_secs(1);
        let targets = vec![target_with("t0", NOWHERE.into(), timeout, limits)];
        let policy = policy(4, Duration::from_secs(2));
        let slots = slots(&targets, &[0], &policy);
        let started = Instant::now();
        drop(slots.take(0, far()).await.unwrap());
        // The minute's one request is spent: room again in 60 s, past the 2 s wait.
        assert_eq!(
            slots.take(0, far()).await.err(),
            Some(NoSlot::RateLimited(started + Duration::from_secs(60)))
        );
        assert_eq!(started.elapsed(), Duration::ZERO, "no pointless wait");
        // A limit that frees up within the wait is waited for.
        let limits = TargetLimits {
            rpm: Some(120),
            ..TargetLimits::default()
        };
        let targets = vec![target_with("t1", NOWHERE.into(), timeout, limits)];
        let slots = self::slots(&targets, &[0], &policy);
        for _ in 0..120 {
            drop(slots.take(0, far()).await.unwrap());
        }
        let waited = Instant::now();
        assert!(slots.take(0, far()).await.is_ok());
        assert_eq!(waited.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_breaker_is_open_the_last_target_is_tried_anyway() {
        let targets = targets(2, 4);
        let policy = policy(0, Duration::from_secs(1));
        let slots = slots(&targets, &[0, 1], &policy);
        for position in [0, 1] {
            let taken = slots.take(position, far()).await.unwrap();
            assert_eq!(taken.position, position);
            targets[position].finish(taken.slot, false, None, Duration::ZERO, Instant::now());
            assert_eq!(targets[position].breaker_gauge(), 2, "open");
        }
        let started = Instant::now();
        let taken = slots.take(0, far()).await.unwrap();
        assert_eq!(taken.position, 1);
        assert!(!taken.slot.probe);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
