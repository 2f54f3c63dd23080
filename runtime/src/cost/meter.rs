//! One request's spend: what the LLM calls it made (its own, retries and fallbacks included,
//! its stages' `complete()` and `embed()`, the semantic tier's embedding call) cost and hold
//! in reservations, and the request's limits: how many LLM calls it may make (the route's or
//! the server's limit, lowered by its key's), how many each stage may make, and its key's
//! per-request cost.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, Shared};

use super::{Account, CostError, Reservation};
use crate::config::{DEFAULT_LLM_CALLS_PER_REQUEST, pico_to_usd};
use crate::sync::lock;
use crate::wit::Usage;

/// One priced LLM call (or attempt that consumed tokens).
#[derive(Clone, Debug)]
pub struct Charge {
    /// The upstream model that was billed.
    pub model: String,
    /// Its usage.
    pub usage: Usage,
    /// Of its prompt tokens, those written to the provider's prompt cache (priced apart).
    pub cache_writes: u32,
    /// What it cost, pico-dollars.
    pub cost: u64,
    /// Whether the usage was counted locally (the provider reported none).
    pub estimated: bool,
}

/// What the request has spent and holds.
#[derive(Debug, Default)]
struct Spend {
    /// Settled, pico-dollars.
    spent: u64,
    /// Reserved by its calls in flight.
    held: u64,
    /// Each priced call, in order: only tests read it (to check a call settles once).
    #[cfg(test)]
    charges: Vec<Charge>,
}

/// Who set a request's limit on LLM calls, before its key may lower it (the refusal names
/// whoever set the limit that held).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallLimiter {
    /// `cost.max_llm_calls_per_request` (or its default).
    Server,
    /// The route's `max_llm_calls_per_request`.
    Route(Arc<str>),
}

impl fmt::Display for CallLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallLimiter::Server => f.write_str("the server (cost.max_llm_calls_per_request)"),
            CallLimiter::Route(route) => write!(f, "route `{route}`"),
        }
    }
}

/// One request's meter, shared by the request path and its stages' calls.
#[derive(Debug)]
pub struct Meter {
    /// The key's account; `None` when auth is off (spend is recorded, nothing is limited).
    pub account: Option<Arc<Account>>,
    /// LLM calls begun.
    calls: AtomicU32,
    /// The most LLM calls the request may make.
    max_calls: AtomicU32,
    /// Who set [`Meter::max_calls`]; `None` when the key's own limit is the lower.
    limiter: Mutex<Option<CallLimiter>>,
    /// LLM calls begun by each stage (by label), against the stages' own limits.
    stage_calls: Mutex<Vec<(Arc<str>, u32)>>,
    /// Spend.
    spend: Mutex<Spend>,
    /// The calls its stages made to services, for its record (at most
    /// [`crate::telemetry::STEPS_MAX`]; later ones are counted in metrics only).
    services: Mutex<Vec<crate::telemetry::ServiceStep>>,
    /// The key's admission when it is still on its way (its fleet-wide RPM, asked of Redis
    /// when the request arrived): every call that leaves the node for the request waits for
    /// it ([`Meter::admitted`]).
    admission: Option<Admission>,
}

/// A key's admission on its way: the RPM script sent to the fleet's Redis, its answer shared
/// by whoever waits for it.
pub type Admission = Shared<BoxFuture<'static, Result<(), CostError>>>;

/// `max` set by `by`, or the key's limit when it is lower (`None`: the key's).
fn lowered_by_key(
    account: Option<&Arc<Account>>,
    max: u32,
    by: CallLimiter,
) -> (u32, Option<CallLimiter>) {
    match account.and_then(|a| a.key.max_llm_calls_per_request) {
        Some(key_max) if key_max < max => (key_max, None),
        _ => (max, Some(by)),
    }
}

impl Meter {
    /// A meter for a request made with `account` (none: auth off), allowed the default
    /// number of LLM calls (or fewer, by the key's limit) until [`Meter::limit_calls`] says
    /// what its route allows.
    pub fn new(account: Option<Arc<Account>>) -> Arc<Meter> {
        Meter::admitting(account, None)
    }

    /// [`Meter::new`] for a request whose key's admission is still on its way: its calls
    /// wait for it.
    pub fn admitting(account: Option<Arc<Account>>, admission: Option<Admission>) -> Arc<Meter> {
        let (max, limiter) = lowered_by_key(
            account.as_ref(),
            DEFAULT_LLM_CALLS_PER_REQUEST,
            CallLimiter::Server,
        );
        Arc::new(Meter {
            account,
            calls: AtomicU32::new(0),
            max_calls: AtomicU32::new(max),
            limiter: Mutex::new(limiter),
            stage_calls: Mutex::default(),
            spend: Mutex::default(),
            services: Mutex::default(),
            admission,
        })
    }

    /// Waits for the key's admission (at once when it was decided before the request ran):
    /// nothing that costs money leaves the node for a request its key did not admit.
    pub async fn admitted(&self) -> Result<(), CostError> {
        match &self.admission {
            None => Ok(()),
            Some(admission) => admission.clone().await,
        }
    }

    /// Limits the request to `max` LLM calls, as `by` (its route, or the server) says,
    /// lowered by its key's own limit: a key may only lower it.
    pub fn limit_calls(&self, max: u32, by: CallLimiter) {
        let (max, limiter) = lowered_by_key(self.account.as_ref(), max, by);
        *lock(&self.limiter) = limiter;
        self.max_calls.store(max, Ordering::Relaxed);
    }

    /// The key's name, or `-` without auth.
    pub fn key_name(&self) -> &str {
        self.account.as_ref().map_or("-", |a| a.name())
    }

    /// Whether the request may make one more LLM call now.
    pub fn has_call_left(&self) -> bool {
        self.calls.load(Ordering::Relaxed) < self.max_calls.load(Ordering::Relaxed)
    }

    /// Counts one more LLM call; refused past the request's limit (nothing is counted then).
    pub fn begin_call(&self) -> Result<(), CostError> {
        self.begin_call_leaving(0)
    }

    /// Counts one more LLM call if `spare` calls are still left after it (the semantic
    /// tier's probe leaves one for the request's own call); refused otherwise, uncounted.
    pub fn begin_call_leaving(&self, spare: u32) -> Result<(), CostError> {
        let max = self.max_calls.load(Ordering::Relaxed);
        let fits = |made: u32| {
            (u64::from(made) + 1 + u64::from(spare) <= u64::from(max)).then_some(made + 1)
        };
        match self
            .calls
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, fits)
        {
            Ok(_) => Ok(()),
            Err(_) => {
                let limit = match &*lock(&self.limiter) {
                    Some(limiter) => limiter.to_string(),
                    None => format!("key `{}`", self.key_name()),
                };
                Err(CostError::TooManyCalls { limit, max })
            }
        }
    }

    /// Counts one more LLM call of the stage `label` against its own limit of `max` per
    /// request (the call then counts against the request's limit as any call does); refused,
    /// uncounted, past it.
    pub fn begin_stage_call(&self, label: &Arc<str>, max: u32) -> Result<(), CostError> {
        let mut stages = lock(&self.stage_calls);
        let index = match stages.iter().position(|(l, _)| l == label) {
            Some(index) => index,
            None => {
                stages.push((label.clone(), 0));
                stages.len() - 1
            }
        };
        let made = &mut stages[index].1;
        if *made >= max {
            return Err(CostError::StageTooManyCalls {
                stage: label.to_string(),
                max,
            });
        }
        *made += 1;
        Ok(())
    }

    /// LLM calls begun so far.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Reserves the worst case of one call against the request's own limit and the key's
    /// budgets.
    pub async fn reserve(self: &Arc<Self>, worst: u64) -> Result<Hold, CostError> {
        let reservation = match &self.account {
            None => None,
            Some(account) => {
                {
                    // Held before the key's reservation is asked for (that may wait on the
                    // fleet's Redis), so two calls of one request cannot both pass the check.
                    let mut spend = lock(&self.spend);
                    if let Some(max) = account.key.max_cost_per_request {
                        let committed = spend.spent.saturating_add(spend.held);
                        if committed.saturating_add(worst) > max {
                            return Err(CostError::RequestCostExceeded {
                                key: account.key.name.clone(),
                                spent: pico_to_usd(committed),
                                worst: pico_to_usd(worst),
                                max: pico_to_usd(max),
                            });
                        }
                    }
                    spend.held = spend.held.saturating_add(worst);
                }
                match account.reserve(worst).await {
                    Ok(reservation) => Some(reservation),
                    Err(err) => {
                        let mut spend = lock(&self.spend);
                        spend.held = spend.held.saturating_sub(worst);
                        return Err(err);
                    }
                }
            }
        };
        Ok(Hold {
            meter: self.clone(),
            reservation,
            worst,
        })
    }

    /// Adds `cost` of stage compute (priced fuel) to the request and its key.
    pub fn add_compute(&self, cost: u64) {
        if let Some(account) = &self.account {
            account.charge(cost);
        }
        let mut spend = lock(&self.spend);
        spend.spent = spend.spent.saturating_add(cost);
    }

    /// Notes a service call its stages made (it rides on the meter, which every stage call of
    /// the request already shares, though it costs nothing here: its price is charged with
    /// [`Meter::add_compute`]).
    pub fn note_service(&self, step: crate::telemetry::ServiceStep) {
        let mut services = lock(&self.services);
        if services.len() < crate::telemetry::STEPS_MAX {
            services.push(step);
        }
    }

    /// The service calls noted so far, taken out.
    pub fn take_services(&self) -> Vec<crate::telemetry::ServiceStep> {
        std::mem::take(&mut *lock(&self.services))
    }

    /// Settled spend so far, pico-dollars.
    pub fn total(&self) -> u64 {
        lock(&self.spend).spent
    }

    /// Every priced call so far (tests check that a call settles exactly once).
    #[cfg(test)]
    pub fn charges(&self) -> Vec<Charge> {
        lock(&self.spend).charges.clone()
    }
}

/// A call's reservation, held until the call's real cost is known.
#[derive(Debug)]
pub struct Hold {
    /// The request's meter.
    meter: Arc<Meter>,
    /// The key's reservation (none without auth).
    reservation: Option<Reservation>,
    /// What was reserved.
    worst: u64,
}

impl Hold {
    /// Replaces the reservation with the real cost of `charges` (every attempt of the call
    /// that consumed tokens); returns that cost.
    pub fn settle(mut self, charges: &[Charge]) -> u64 {
        // Saturating: a charge's cost may already be saturated by absurd upstream usage.
        let cost = charges
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(c.cost));
        let tokens = charges.iter().fold(0u64, |sum, c| {
            sum.saturating_add(u64::from(c.usage.prompt_tokens))
                .saturating_add(u64::from(c.usage.completion_tokens))
        });
        if let Some(reservation) = self.reservation.take() {
            reservation.settle(cost);
        }
        if let Some(account) = &self.meter.account {
            account.used_tokens(tokens);
        }
        let mut spend = lock(&self.meter.spend);
        spend.held = spend.held.saturating_sub(self.worst);
        spend.spent = spend.spent.saturating_add(cost);
        #[cfg(test)]
        spend.charges.extend_from_slice(charges);
        self.worst = 0;
        cost
    }

    /// The call is not made after all (the cache answered while it was being reserved): the
    /// reservation is released and the call no longer counts against the request's limit.
    pub fn withdraw(self) {
        let _ = self
            .meter
            .calls
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.worst > 0 {
            let mut spend = lock(&self.meter.spend);
            spend.held = spend.held.saturating_sub(self.worst);
        }
    }
}
