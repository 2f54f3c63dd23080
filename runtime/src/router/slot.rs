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

use std::sync::Arc;

use tokio::time::Instant;

use super::policy::{MIN_ATTEMPT_TIME, RoutePolicy};
use super::target::{Slot, TargetState, Unavailable};

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
            let (busy, soonest) = match self.pick(start, now) {
                Pick::Got(taken) => return Ok(taken),
                Pick::Wait { busy, soonest } => (busy, soonest),
            };
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

    /// The target at chain position `position`.
    fn target(&self, position: usize) -> Option<&'a TargetState> {
        let index = *self.chain.get(position)?;
        self.targets.get(index).map(|t| &**t)
    }

    /// The first target from `start` (wrapping) that takes the attempt now. If every breaker
    /// is open, the chain's last target is tried anyway.
    fn pick(&self, start: usize, now: Instant) -> Pick<'a> {
        let chain = self.chain;
        let mut busy = None;
        let mut soonest: Option<Instant> = None;
        let mut all_open = true;
        for offset in 0..chain.len() {
            let position = (start + offset) % chain.len();
            let Some(target) = self.target(position) else {
                continue;
            };
            match target.try_slot(now, self.tokens, false) {
                Ok(slot) => {
                    return Pick::Got(Taken {
                        position,
                        target,
                        slot,
                    });
                }
                Err(Unavailable::Open) => {}
                Err(Unavailable::Busy) => {
                    all_open = false;
                    busy.get_or_insert(position);
                }
                Err(Unavailable::CoolingDown(at) | Unavailable::RateLimited(at)) => {
                    all_open = false;
                    soonest = Some(soonest.map_or(at, |s| s.min(at)));
                }
            }
        }
        if all_open && !chain.is_empty() {
            let position = chain.len() - 1;
            if let Some(target) = self.target(position) {
                match target.try_slot(now, self.tokens, true) {
                    Ok(slot) => {
                        return Pick::Got(Taken {
                            position,
                            target,
                            slot,
                        });
                    }
                    Err(_) => busy = Some(position),
                }
            }
        }
        Pick::Wait { busy, soonest }
    }
}
