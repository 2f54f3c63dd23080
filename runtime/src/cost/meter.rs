//! One request's spend: what the LLM calls it made (its own, retries and fallbacks included,
//! and its stages' `complete()`) cost and hold in reservations, and the per-request limits of
//! its key.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::{Account, CostError, Reservation};
use crate::config::pico_to_usd;
use crate::sync::lock;
use crate::wit::Usage;

/// One priced LLM call (or attempt that consumed tokens).
#[derive(Clone, Debug)]
pub struct Charge {
    /// The upstream model that was billed.
    pub model: String,
    /// Its usage.
    pub usage: Usage,
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

/// One request's meter, shared by the request path and its stages' calls.
#[derive(Debug)]
pub struct Meter {
    /// The key's account; `None` when auth is off (spend is recorded, nothing is limited).
    pub account: Option<Arc<Account>>,
    /// LLM calls begun.
    calls: AtomicU32,
    /// Spend.
    spend: Mutex<Spend>,
}

impl Meter {
    /// A meter for a request made with `account` (none: auth off).
    pub fn new(account: Option<Arc<Account>>) -> Arc<Meter> {
        Arc::new(Meter {
            account,
            calls: AtomicU32::new(0),
            spend: Mutex::default(),
        })
    }

    /// The key's name, or `-` without auth.
    pub fn key_name(&self) -> &str {
        self.account.as_ref().map_or("-", |a| a.name())
    }

    /// Counts one more LLM call; refused past the key's per-request limit.
    pub fn begin_call(&self) -> Result<(), CostError> {
        let made = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        match self
            .account
            .as_ref()
            .and_then(|a| a.key.max_llm_calls_per_request.map(|max| (a, max)))
        {
            Some((account, max)) if made > max => Err(CostError::TooManyCalls {
                key: account.key.name.clone(),
                max,
            }),
            _ => Ok(()),
        }
    }

    /// Reserves the worst case of one call against the request's own limit and the key's
    /// budgets.
    pub fn reserve(self: &Arc<Self>, worst: u64) -> Result<Hold, CostError> {
        let reservation = match &self.account {
            None => None,
            Some(account) => {
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
                let reservation = account.reserve(worst)?;
                spend.held = spend.held.saturating_add(worst);
                Some(reservation)
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
    pub fn settle(mut self, charges: Vec<Charge>) -> u64 {
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
        spend.charges.extend(charges);
        self.worst = 0;
        cost
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
