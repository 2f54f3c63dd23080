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
    counted(prompt_tokens, tokens::count_text(model, text))
}

/// The usage of a locally counted prompt and completion.
fn counted(prompt_tokens: u32, completion_tokens: u32) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens.saturating_add(completion_tokens),
        cached_tokens: 0,
    }
}

/// The most completions a request is reserved for: far above any provider's limit (OpenAI
/// allows 128), so only a hostile `n` meets it, and its reservation then passes any budget.
const MAX_COMPLETIONS: u64 = 1 << 20;

/// How many completions `request` asks for: its `n` (passed through in `extra`), at least 1.
/// A fractional `n` rounds up, a numeric string counts as its number (lenient providers
/// accept one), and a huge one stops at [`MAX_COMPLETIONS`], so the reservation can only
/// grow with it, never wrap.
pub fn completions_asked(request: &ChatRequest) -> u64 {
    #[derive(serde::Deserialize)]
    struct Asked {
        #[serde(default)]
        n: Option<serde_json::Value>,
    }
    let n = match serde_json::from_str::<Asked>(&request.extra).map(|a| a.n) {
        Ok(Some(serde_json::Value::Number(n))) => n.as_f64(),
        Ok(Some(serde_json::Value::String(n))) => n.trim().parse::<f64>().ok(),
        _ => None,
    };
    match n {
        // `as` saturates (and infinity is caught by the bound).
        Some(n) if n > 1.0 => (n.ceil() as u64).min(MAX_COMPLETIONS),
        _ => 1,
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
    /// key's budgets; refused when the key did not admit the request. Without a key nothing
    /// is reserved (and no tokens are counted).
    pub async fn open(
        &self,
        router: &Router,
        chain: &[usize],
        request: &ChatRequest,
        meter: &Arc<Meter>,
    ) -> Result<Hold, CostError> {
        meter.begin_call()?;
        let account = match &meter.account {
            Some(account) if account.key.limits_spend() => account,
            _ => {
                meter.admitted().await?;
                return meter.reserve(0).await;
            }
        };
        let (price, model) = self.worst_price(router, chain, request);
        // Loaded before the config served; a model only a client named may load now.
        tokens::ready(&model).await;
        let prompt = tokens::count_prompt(&model, request);
        // Each of the `n` completions may run to `max_tokens`.
        let completion = u64::from(request.max_tokens.unwrap_or(self.default_max_tokens))
            .saturating_mul(completions_asked(request));
        let worst = u64::from(prompt)
            .saturating_mul(price.input)
            .saturating_add(completion.saturating_mul(price.output));
        // All at once: on a fleet they are one pipelined Redis round trip with the key's
        // admission when it is still on its way. A reservation made for a call the admission
        // or the TPM check refuses is released by its drop.
        let (admitted, tokens, hold) = tokio::join!(
            meter.admitted(),
            account.check_tokens(prompt),
            meter.reserve(worst)
        );
        admitted?;
        tokens?;
        hold
    }

    /// The charges of `attempts`: every attempt that reported usage (a failed one when
    /// `count_failed_attempts`), a successful `answer` without usage from a local count of
    /// its prompt and text, and every attempt the upstream received without a usable reply
    /// (timed out, cut by the client's deadline, broken or oversized, or still in flight when
    /// the call was dropped) from a local count of its prompt and of the text it received
    /// before it broke off, if any. Locally counted charges are marked estimated.
    pub fn charges<'a>(
        &self,
        request: &ChatRequest,
        attempts: &'a [Attempt],
        answer: Option<&ChatResponse>,
    ) -> Vec<Charge> {
        let mut charges = Vec::new();
        // A local count: the prompt once per model, however many attempts were cut.
        let mut prompts: Vec<(&str, u32)> = Vec::new();
        let mut estimate = |model: &'a str, text: &str| {
            let prompt = match prompts.iter().find(|(m, _)| *m == model) {
                Some(&(_, tokens)) => tokens,
                None => {
                    let tokens = tokens::count_prompt(model, request);
                    prompts.push((model, tokens));
                    tokens
                }
            };
            counted(prompt, tokens::count_text(model, text))
        };
        for attempt in attempts {
            let ok = attempt.outcome.is_ok();
            let (usage, estimated) = match (attempt.usage, ok, answer) {
                (Some(usage), true, _) => (usage, false),
                (Some(usage), false, _) if self.count_failed_attempts => (usage, false),
                (None, true, Some(answer)) => (estimate(&attempt.model, &answer.text()), true),
                (None, false, _) if attempt.outcome.billed_without_usage() => {
                    (estimate(&attempt.model, &attempt.received), true)
                }
                _ => continue,
            };
            // Cache writes only with the provider's own usage.
            let cache_writes = if estimated { 0 } else { attempt.cache_writes };
            charges.push(Charge {
                cost: self.prices.cost(&attempt.model, &usage, cache_writes),
                model: attempt.model.clone(),
                usage,
                cache_writes,
                estimated,
            });
        }
        charges
    }

    /// Settles `hold` with `charges` and records them; returns their cost. The key's account
    /// is settled first, so whoever sees the call in the ledger (`/admin/spend`) also sees it
    /// spent and no longer reserved.
    pub fn close(&self, hold: Hold, charges: Vec<Charge>, site: CallSite<'_>) -> u64 {
        let now = crate::clock::unix_secs();
        let cost = hold.settle(&charges);
        for charge in charges {
            self.ledger.record(Entry {
                ts: now,
                key: site.meter.key_name().to_string(),
                route: site.route.to_string(),
                model: charge.model,
                usage: charge.usage,
                cache_writes: charge.cache_writes,
                cost: charge.cost,
                cache: site.cache.as_str(),
                estimated: charge.estimated,
            });
        }
        cost
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
            cache_writes: 0,
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
            cache_writes: 0,
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
    /// What settling with `usage` (or a local count of `text`) would charge, without
    /// settling: the request's total cost so far with it, pico-dollars, and the usage.
    pub(super) fn quote(&self, usage: Option<(Usage, u32)>, text: &str) -> (u64, Usage) {
        let (usage, cache_writes) =
            usage.unwrap_or_else(|| (estimate_usage(&self.model, &self.request, text), 0));
        let this = self.costing.prices.cost(&self.model, &usage, cache_writes);
        let earlier = self
            .earlier
            .iter()
            .map(|c| c.cost)
            .fold(0u64, u64::saturating_add);
        let total = self
            .meter
            .total()
            .saturating_add(earlier)
            .saturating_add(this);
        (total, usage)
    }

    /// Settles with the stream's `usage` (or, without one, a local count of `text`);
    /// returns the request's total cost so far, pico-dollars, and the usage charged (`None`
    /// when it was settled already).
    /// `cache_writes` of the usage's prompt tokens were written to the provider's prompt
    /// cache.
    pub(super) fn finish(
        mut self,
        usage: Option<(Usage, u32)>,
        text: &str,
    ) -> (u64, Option<Usage>) {
        let charged = self.settle(usage, text);
        (self.meter.total(), charged)
    }

    fn settle(&mut self, usage: Option<(Usage, u32)>, text: &str) -> Option<Usage> {
        let hold = self.hold.take()?;
        let (usage, cache_writes, estimated) = match usage {
            Some((usage, cache_writes)) => (usage, cache_writes, false),
            None => (estimate_usage(&self.model, &self.request, text), 0, true),
        };
        let mut charges = std::mem::take(&mut self.earlier);
        charges.push(Charge {
            cost: self.costing.prices.cost(&self.model, &usage, cache_writes),
            model: self.model.clone(),
            usage,
            cache_writes,
            estimated,
        });
        let site = CallSite {
            meter: &self.meter,
            route: &self.route,
            cache: self.cache,
        };
        self.costing.close(hold, charges, site);
        Some(usage)
    }
}

impl Drop for StreamCharge {
    fn drop(&mut self) {
        self.settle(None, "");
    }
}
