//! Where a chat call starts: its first target, picked before the router runs, and that
//! target's fleet-wide admission sent ahead.
//!
//! With `[state] backend = "redis"` and exact fleet limits (no `rate_limit_lease_ms`), a
//! target's admission is a Redis script of its own, and the router asks for it when it
//! reaches the target: a round trip after the one that carried the key's admission and the
//! call's reservation. Instead, the LLM step picks the first target when it opens the call
//! ([`Router::start_ahead`], the route's strategy as the router would apply it) and sends
//! that target's admission in the same pipelined batch; the router takes the answer when it
//! reaches that target ([`Ahead::take`]), after the target's local checks, as it would have
//! asked.
//!
//! Nothing is sent ahead for a target this node would not try now (breaker not closed,
//! cooling down after a `Retry-After`, at its concurrency limit). A permit taken ahead that
//! no attempt uses is given back (out of the fleet's log, on the background lane): the
//! request was refused (budget, key limits, call limit), the fleet's cache had the answer,
//! the router took its first slot on another target (the first had no room by then), or it
//! reached the target more than [`FRESH`] after the admission (then the target is admitted
//! again, so a send still leaves within that long of its admission). Until it is
//! given back, an unused permit counts in the fleet's window: the limit refuses more for a
//! round trip, never less. A call whose opening is cancelled midway may leave its permit
//! in the log until it ages out, as an admission cancelled in the router does. A key whose
//! last call was refused does not send ahead (`cost::Account::refused_last`): a flood from
//! a key out of budget cannot hold a provider's permits.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::exchange::estimate_tokens;
use super::target::{TargetState, Unavailable};
use super::{RoutePlan, Router};
use crate::state::limits::Permit;
use crate::wit::ChatRequest;

/// The longest an admission taken ahead is used after it was asked for.
pub const FRESH: Duration = Duration::from_millis(100);

/// Where a chat call along a route starts ([`Router::start`], [`Router::start_ahead`]).
pub struct Start<'a> {
    /// The route.
    pub(super) plan: &'a RoutePlan,
    /// The chain position of the first attempt's target.
    pub(super) position: usize,
    /// That target's fleet admission, when it was sent ahead.
    pub(super) ahead: Option<Ahead>,
}

/// A target's fleet admission taken before the router reached it.
pub(super) struct Ahead {
    /// The target's chain position.
    position: usize,
    /// The target.
    target: Arc<TargetState>,
    /// The tokens it was admitted for (the router's estimate for the call).
    tokens: u32,
    /// When it was asked for.
    asked: Instant,
    /// Its answer, until an attempt takes it.
    verdict: Option<Result<Permit, Unavailable>>,
}

impl Ahead {
    /// The tokens it was admitted for: the router's estimate for the call, counted once.
    pub(super) fn tokens(&self) -> u32 {
        self.tokens
    }

    /// The answer for chain position `position` of a call of `tokens`, if this admission was
    /// taken for it and is still fresh at `now`; it is the attempt's from now on. A stale
    /// one is given back, and `None` says the target must be admitted again.
    pub(super) fn take(
        &mut self,
        position: usize,
        tokens: u32,
        now: Instant,
    ) -> Option<Result<(), Unavailable>> {
        if position != self.position || tokens != self.tokens {
            return None;
        }
        let verdict = self.verdict.take()?;
        if now.saturating_duration_since(self.asked) > FRESH {
            if let Ok(permit) = verdict {
                give_back(&self.target, permit);
            }
            return None;
        }
        Some(verdict.map(drop))
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        if let Some(Ok(permit)) = self.verdict.take() {
            give_back(&self.target, permit);
        }
    }
}

/// Gives `permit` back to `target`'s fleet limits off the request path.
fn give_back(target: &Arc<TargetState>, permit: Permit) {
    if permit.is_empty() {
        return;
    }
    target.give_back_permit_later(permit);
}

impl Router {
    /// Where a call along `plan` starts: its first target by the route's strategy, nothing
    /// sent ahead.
    pub fn start<'a>(&self, plan: &'a RoutePlan) -> Start<'a> {
        Start {
            plan,
            position: plan.first(&self.targets),
            ahead: None,
        }
    }

    /// [`Router::start`], and when the first target's fleet admission is a Redis call of its
    /// own, that admission for `request`, taken now (to go in the same round trip as what
    /// the caller joins it with).
    pub async fn start_ahead<'a>(&self, plan: &'a RoutePlan, request: &ChatRequest) -> Start<'a> {
        let mut start = self.start(plan);
        let first = plan
            .chain
            .get(start.position)
            .and_then(|&index| self.targets.get(index))
            .filter(|target| target.admits_on_redis() && target.ready_now(Instant::now()));
        if let Some(target) = first {
            let tokens = estimate_tokens(&self.targets, &plan.chain, request);
            let asked = Instant::now();
            let verdict = target.admit_fleet_returnable(tokens).await;
            start.ahead = Some(Ahead {
                position: start.position,
                target: target.clone(),
                tokens,
                asked,
                verdict: Some(verdict),
            });
        }
        start
    }
}
