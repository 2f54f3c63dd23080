//! Pricing and limiting the LLM step's calls: reserve the worst case before a call, turn the
//! attempts' usage into charges after it, settle the reservation, write the ledger.

use std::sync::Arc;

use crate::cache::CacheStatus;
use crate::config::ModelPrice;
use crate::cost::{Charge, CostError, Entry, Hold, Ledger, Meter, PriceTable, tokens};
use crate::router::{Attempt, Router};
use crate::wit::{ChatRequest, ChatResponse, Usage};

/// How the LLM step prices and limits calls.
pub struct Costing {
    /// Prices by upstream model.
    pub prices: PriceTable,
    /// Where spend is recorded.
    pub ledger: Ledger,
    /// Completion tokens reserved for a request without `max_tokens`.
    pub default_max_tokens: u32,
    /// Whether failed attempts that reported usage are charged.
    pub count_failed_attempts: bool,
    /// Pico-dollars per million units of stage fuel (0: fuel is not priced).
    pub fuel_pico_per_million: u64,
}

/// Where a call is accounted: its request's meter, its route and how the cache was involved.
#[derive(Clone, Copy)]
pub struct CallSite<'a> {
    /// The request's meter.
    pub meter: &'a Arc<Meter>,
    /// The route (alias).
    pub route: &'a str,
    /// `x-weir-cache` of the call.
    pub cache: CacheStatus,
}

/// Usage counted locally: the prompt of `request` and the completion `text` on `model`.
pub fn estimate_usage(model: &str, request: &ChatRequest, text: &str) -> Usage {
    let prompt_tokens = tokens::count_prompt(model, request);
    let completion_tokens = tokens::count_text(model, text);
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens.saturating_add(completion_tokens),
        cached_tokens: 0,
    }
}

impl Costing {
    /// The most expensive price (input and output separately) among `chain`'s targets, and
    /// the model to count prompt tokens with.
    fn worst_price(
        &self,
        router: &Router,
        chain: &[usize],
        request: &ChatRequest,
    ) -> (ModelPrice, String) {
        self.worst_price_of(router, chain, &request.model)
    }

    /// [`Costing::worst_price`] of a call asking for `requested` (a target's `model` pin
    /// replaces it).
    pub(super) fn worst_price_of(
        &self,
        router: &Router,
        chain: &[usize],
        requested: &str,
    ) -> (ModelPrice, String) {
        let mut worst = ModelPrice::default();
        let mut model = requested.to_string();
        for &index in chain {
            let Some(target) = router.targets().get(index) else {
                continue;
            };
            let name = target.upstream.model.as_deref().unwrap_or(requested);
            if let Some(price) = self.prices.get(name) {
                if price.input >= worst.input {
                    model = name.to_string();
                }
                worst.input = worst.input.max(price.input);
                worst.output = worst.output.max(price.output);
            }
        }
        (worst, model)
    }

    /// Counts the call against the request's limits and reserves its worst case against the
    /// key's budgets. Without a key nothing is reserved (and no tokens are counted).
    pub fn open(
        &self,
        router: &Router,
        chain: &[usize],
        request: &ChatRequest,
        meter: &Arc<Meter>,
    ) -> Result<Hold, CostError> {
        meter.begin_call()?;
        let worst = match &meter.account {
            Some(account) => {
                let key = &account.key;
                let limited = key.daily_budget.is_some()
                    || key.monthly_budget.is_some()
                    || key.max_cost_per_request.is_some()
                    || key.tpm.is_some();
                if limited {
                    let (price, model) = self.worst_price(router, chain, request);
                    let prompt = tokens::count_prompt(&model, request);
                    account.check_tokens(prompt)?;
                    let completion = request.max_tokens.unwrap_or(self.default_max_tokens);
                    u64::from(prompt)
                        .saturating_mul(price.input)
                        .saturating_add(u64::from(completion).saturating_mul(price.output))
                } else {
                    0
                }
            }
            None => 0,
        };
        meter.reserve(worst)
    }

    /// The charges of `attempts`: every attempt that reported usage (failed ones when
    /// configured), and for a successful `answer` without usage, a local count.
    pub fn charges(
        &self,
        request: &ChatRequest,
        attempts: &[Attempt],
        answer: Option<&ChatResponse>,
    ) -> Vec<Charge> {
        let mut charges = Vec::new();
        for attempt in attempts {
            let ok = attempt.outcome.is_ok();
            if !ok && !self.count_failed_attempts {
                continue;
            }
            let (usage, estimated) = match (attempt.usage, ok, answer) {
                (Some(usage), _, _) => (usage, false),
                (None, true, Some(answer)) => (
                    estimate_usage(&attempt.model, request, &answer.text()),
                    true,
                ),
                _ => continue,
            };
            charges.push(Charge {
                cost: self.prices.cost(&attempt.model, &usage),
                model: attempt.model.clone(),
                usage,
                estimated,
            });
        }
        charges
    }

    /// Settles `hold` with `charges` and records them; returns their cost.
    pub fn close(&self, hold: Hold, charges: Vec<Charge>, site: CallSite<'_>) -> u64 {
        let now = crate::clock::unix_secs();
        for charge in &charges {
            self.ledger.record(Entry {
                ts: now,
                key: site.meter.key_name().to_string(),
                route: site.route.to_string(),
                model: charge.model.clone(),
                usage: charge.usage,
                cost: charge.cost,
                cache: site.cache.as_str(),
                estimated: charge.estimated,
            });
        }
        hold.settle(charges)
    }

    /// Charges `fuel` burned by a request's stages, when fuel is priced (recorded in the
    /// ledger under the model name `stage-fuel`).
    pub fn charge_fuel(&self, meter: &Meter, route: &str, fuel: u64) {
        if self.fuel_pico_per_million == 0 || fuel == 0 {
            return;
        }
        let cost =
            u64::try_from(u128::from(fuel) * u128::from(self.fuel_pico_per_million) / 1_000_000)
                .unwrap_or(u64::MAX);
        meter.add_compute(cost);
        self.ledger.record(Entry {
            ts: crate::clock::unix_secs(),
            key: meter.key_name().to_string(),
            route: route.to_string(),
            model: "stage-fuel".to_string(),
            usage: Usage {
                prompt_tokens: 0,
                completion_tokens: 0,
                total_tokens: 0,
                cached_tokens: 0,
            },
            cost,
            cache: "bypass",
            estimated: false,
        });
    }

    /// Records an answer that cost nothing (a cache hit, or a coalesced follower), with the
    /// usage it would have cost, for `weir cost project`.
    pub fn record_free(&self, response: &ChatResponse, site: CallSite<'_>) {
        self.ledger.record(Entry {
            ts: crate::clock::unix_secs(),
            key: site.meter.key_name().to_string(),
            route: site.route.to_string(),
            model: response.model.clone(),
            usage: response.usage.unwrap_or(Usage {
                prompt_tokens: 0,
                completion_tokens: 0,
                total_tokens: 0,
                cached_tokens: 0,
            }),
            cost: 0,
            cache: site.cache.as_str(),
            estimated: false,
        });
    }
}

/// The charge of a stream still being read, held by its [`AnswerStream`](super::AnswerStream):
/// settled with [`StreamCharge::finish`] when it ends (with the usage chunk, or a local
/// count of what was streamed), or, should it ever be dropped unsettled, with the prompt
/// counted locally, since the provider bills it either way.
pub(super) struct StreamCharge {
    /// The step's costing.
    pub(super) costing: Arc<Costing>,
    /// The reservation.
    pub(super) hold: Option<Hold>,
    /// Charges of attempts before the stream (failed ones with usage).
    pub(super) earlier: Vec<Charge>,
    /// The model streaming.
    pub(super) model: String,
    /// The request, to count its prompt.
    pub(super) request: ChatRequest,
    /// The request's meter.
    pub(super) meter: Arc<Meter>,
    /// The route.
    pub(super) route: String,
    /// `x-weir-cache` of the call.
    pub(super) cache: CacheStatus,
}

impl StreamCharge {
    /// Settles with the stream's `usage` (or, without one, a local count of `text`);
    /// returns the request's total cost so far, pico-dollars.
    pub(super) fn finish(mut self, usage: Option<Usage>, text: &str) -> u64 {
        self.settle(usage, text);
        self.meter.total()
    }

    fn settle(&mut self, usage: Option<Usage>, text: &str) {
        let Some(hold) = self.hold.take() else { return };
        let (usage, estimated) = match usage {
            Some(usage) => (usage, false),
            None => (estimate_usage(&self.model, &self.request, text), true),
        };
        let mut charges = std::mem::take(&mut self.earlier);
        charges.push(Charge {
            cost: self.costing.prices.cost(&self.model, &usage),
            model: self.model.clone(),
            usage,
            estimated,
        });
        let site = CallSite {
            meter: &self.meter,
            route: &self.route,
            cache: self.cache,
        };
        self.costing.close(hold, charges, site);
    }
}

impl Drop for StreamCharge {
    fn drop(&mut self) {
        self.settle(None, "");
    }
}
