//! Cost accounting and control: the price table, usage → money, per-key budgets with
//! reservations, per-key rate limits, and the durable spend ledger.
//!
//! Owns: what a token costs, what a request cost, and whether a key may spend more. Must not
//! know about HTTP: refusals are a typed [`CostError`] whose `status()` the server maps.
//!
//! Money is integer pico-dollars (10⁻¹² USD) everywhere, so totals are exact whatever order
//! requests finish in.
//!
//! A budget cannot be raced: before an LLM call, its worst-case cost (counted prompt tokens
//! plus `max_tokens`, or the configured default, at the priciest target of the chain) is
//! reserved against every window of the key under one lock; the call goes ahead only if
//! spent + reserved + this reservation fits. Afterwards the reservation is replaced by the
//! real cost. So concurrent requests can overspend only by what a reservation underestimated.

mod account;
#[cfg(test)]
mod call_limit_tests;
pub mod clock;
mod ledger;
mod meter;
pub mod projection;
pub mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use account::{Account, Reservation};
pub use clock::{Clock, day_of};
pub use ledger::{Entry, Ledger, LedgerError, ShipBatch, SpendRow, TrafficLine};
pub use meter::{Admission, CallLimiter, Charge, Hold, Meter};

use crate::config::{CostSettings, KeySettings, ModelPrice, hash_key, pico_to_usd};
use crate::wit::Usage;

/// The text of [`CostError::BudgetExceeded`]: a window that is spent, or one with room left
/// that this call's worst case does not fit (then a smaller `max_tokens` may).
fn budget_text(
    key: &str,
    window: &str,
    spent: f64,
    reserved: f64,
    budget: f64,
    needed: f64,
    resets_at: &str,
) -> String {
    let left = budget - spent - reserved;
    if left > 0.0 {
        format!(
            "the {window} budget of key `{key}` has ${left:.6} left (${spent:.6} spent of \
             ${budget:.6}, ${reserved:.6} reserved by calls in flight), less than this request \
             may cost (${needed:.6}, its prompt and max_tokens at the model's price): ask for \
             fewer max_tokens, or wait for calls in flight to settle; it resets at {resets_at}"
        )
    } else {
        format!(
            "the {window} budget of key `{key}` is spent (${spent:.6} of ${budget:.6}, with \
             ${reserved:.6} reserved by calls in flight); it resets at {resets_at}"
        )
    }
}

/// Why a request may not spend (more).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CostError {
    /// No `Authorization: Bearer` key, or one that matches no configured key.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A budget window of the key has no room for this call.
    #[error("{}", budget_text(key, window, *spent, *reserved, *budget, *needed, resets_at))]
    BudgetExceeded {
        /// The key's name.
        key: String,
        /// `daily` or `monthly`.
        window: &'static str,
        /// Spent in the window, USD.
        spent: f64,
        /// Reserved by calls in flight, USD.
        reserved: f64,
        /// The window's budget, USD.
        budget: f64,
        /// What this call may cost at most (its reservation), USD.
        needed: f64,
        /// When the window resets (RFC 3339, UTC).
        resets_at: String,
        /// Seconds until then.
        retry_after_s: u64,
    },
    /// The key's requests-per-minute or tokens-per-minute limit.
    #[error(
        "key `{key}` is over its {limit} limit of {per_minute} per minute; retry after {retry_after_s} s"
    )]
    RateLimited {
        /// The key's name.
        key: String,
        /// `rpm` or `tpm`.
        limit: &'static str,
        /// The limit.
        per_minute: u32,
        /// Seconds until there is room.
        retry_after_s: u64,
    },
    /// This request would cost more than the key allows one request to.
    #[error(
        "this request may cost up to ${worst:.6} more (${spent:.6} so far), over the \
         ${max:.6} key `{key}` allows one request; lower max_tokens"
    )]
    RequestCostExceeded {
        /// The key's name.
        key: String,
        /// Spent by the request so far, USD.
        spent: f64,
        /// The worst case of the next call, USD.
        worst: f64,
        /// The key's limit, USD.
        max: f64,
    },
    /// This request made as many LLM calls as its key, its route or the server allows one
    /// request.
    #[error("this request already made {max} LLM calls, the most {limit} allows one request")]
    TooManyCalls {
        /// Who set the limit: ``key `a` ``, ``route `demo` `` or the server.
        limit: String,
        /// The limit.
        max: u32,
    },
    /// The key's fleet-wide RPM/TPM cannot be read (Redis unavailable, with
    /// `state.on_unavailable.rate_limits = "fail_closed"`).
    #[error("the rate limits of key `{key}` are unavailable (Redis); retry later")]
    RateLimitsUnavailable {
        /// The key's name.
        key: String,
    },
    /// A stage made as many LLM calls in this request as its `max_llm_calls` allows.
    #[error(
        "stage {stage} already made {max} LLM calls in this request, the most its \
         `max_llm_calls` allows"
    )]
    StageTooManyCalls {
        /// The stage's label (`name@abcd1234`).
        stage: String,
        /// The limit.
        max: u32,
    },
    /// The fleet's shared state (Redis) is unavailable and `state.on_unavailable` for this
    /// feature is `fail_closed`.
    #[error(
        "the fleet's shared {feature} state is unavailable (Redis cannot be reached); retry shortly"
    )]
    StateUnavailable {
        /// `budgets`.
        feature: &'static str,
    },
    /// The fleet's budget state (Redis) cannot be read, `state.on_unavailable.budgets` is
    /// `fail_open`, and this node's share of the key's remaining budget is spent.
    #[error(
        "the budget of key `{key}` cannot be read from the fleet's shared state (Redis), and \
         the ${share:.6} this node may spend of it meanwhile is spent; retry shortly"
    )]
    ShareSpent {
        /// The key's name.
        key: String,
        /// This node's share while Redis cannot be read, USD.
        share: f64,
    },
}

impl CostError {
    /// The HTTP status for the client.
    pub fn status(&self) -> u16 {
        match self {
            CostError::Unauthorized(_) => 401,
            CostError::BudgetExceeded { .. } | CostError::RateLimited { .. } => 429,
            CostError::RateLimitsUnavailable { .. } => 503,
            CostError::RequestCostExceeded { .. }
            | CostError::TooManyCalls { .. }
            | CostError::StageTooManyCalls { .. } => 400,
            CostError::StateUnavailable { .. } | CostError::ShareSpent { .. } => 503,
        }
    }

    /// The OpenAI-style error code.
    pub fn code(&self) -> &'static str {
        match self {
            CostError::Unauthorized(_) => "invalid_api_key",
            CostError::BudgetExceeded { .. } => "budget_exceeded",
            CostError::RateLimited { .. } => "rate_limit_exceeded",
            CostError::RateLimitsUnavailable { .. } => "state_unavailable",
            CostError::RequestCostExceeded { .. } => "request_cost_exceeded",
            CostError::TooManyCalls { .. } | CostError::StageTooManyCalls { .. } => {
                "llm_calls_exceeded"
            }
            CostError::StateUnavailable { .. } | CostError::ShareSpent { .. } => {
                "state_unavailable"
            }
        }
    }

    /// Seconds the client should wait before retrying, when waiting helps.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            CostError::BudgetExceeded { retry_after_s, .. }
            | CostError::RateLimited { retry_after_s, .. } => Some(*retry_after_s),
            CostError::RateLimitsUnavailable { .. } => Some(1),
            CostError::StateUnavailable { .. } => Some(1),
            CostError::ShareSpent { .. } => Some(5),
            _ => None,
        }
    }
}

/// A cost refusal as the client sees it: 401 for a missing or unknown key, 429 with
/// `Retry-After` for a spent budget or a rate limit (both shed, to protect spend), 400 for a
/// request that may never cost that much.
impl crate::error::ClientFacing for CostError {
    fn status(&self) -> u16 {
        CostError::status(self)
    }

    fn error_type(&self) -> &str {
        match self {
            CostError::Unauthorized(_) => "authentication_error",
            CostError::BudgetExceeded { .. } => "insufficient_quota",
            CostError::RateLimited { .. } => "rate_limit_error",
            CostError::RateLimitsUnavailable { .. } => "server_error",
            CostError::StateUnavailable { .. } | CostError::ShareSpent { .. } => "server_error",
            _ => "invalid_request_error",
        }
    }

    fn code(&self) -> &str {
        CostError::code(self)
    }

    fn client_message(&self) -> String {
        self.to_string()
    }

    fn retry_after_s(&self) -> Option<u64> {
        CostError::retry_after_s(self)
    }

    fn shed(&self) -> Option<crate::error::ShedReason> {
        match self {
            CostError::BudgetExceeded { .. } => Some(crate::error::ShedReason::BudgetExceeded),
            CostError::RateLimited { .. } => Some(crate::error::ShedReason::RateLimited),
            _ => None,
        }
    }
}

/// Prices by upstream model.
#[derive(Clone, Debug, Default)]
pub struct PriceTable {
    /// Model → price.
    prices: BTreeMap<String, ModelPrice>,
}

impl PriceTable {
    /// The table of `settings`.
    pub fn new(settings: &CostSettings) -> PriceTable {
        PriceTable {
            prices: settings.prices.clone(),
        }
    }

    /// The price of `model`, when it has one.
    pub fn get(&self, model: &str) -> Option<ModelPrice> {
        self.prices.get(model).copied()
    }

    /// What `usage` cost on `model` (0 for a model without a price), `cache_writes` of its
    /// prompt tokens having been written to the provider's prompt cache.
    pub fn cost(&self, model: &str, usage: &Usage, cache_writes: u32) -> u64 {
        let Some(price) = self.get(model) else {
            return 0;
        };
        cost_of(price, usage, cache_writes)
    }
}

/// What `usage` costs at `price`, in pico-dollars: of its prompt tokens, the cached ones at
/// the cached-input price, `cache_writes` at the cache-write price (never more than the
/// prompt tokens left), the rest at the input price.
pub fn cost_of(price: ModelPrice, usage: &Usage, cache_writes: u32) -> u64 {
    let cached = usage.cached_tokens.min(usage.prompt_tokens);
    let writes = cache_writes.min(usage.prompt_tokens - cached);
    let fresh = u64::from(usage.prompt_tokens - cached - writes);
    fresh
        .saturating_mul(price.input)
        .saturating_add(u64::from(cached).saturating_mul(price.cached_input))
        .saturating_add(u64::from(writes).saturating_mul(price.cache_write))
        .saturating_add(u64::from(usage.completion_tokens).saturating_mul(price.output))
}

/// Pico-dollars as a USD string for headers and logs (up to 10 decimals, no trailing zeros).
pub fn format_usd(pico: u64) -> String {
    let text = format!("{:.10}", pico_to_usd(pico));
    let text = text.trim_end_matches('0');
    text.strip_suffix('.').unwrap_or(text).to_string()
}

/// The configured keys, by hash.
#[derive(Default)]
pub struct Accounts {
    /// blake3 of the key → its account.
    by_hash: HashMap<[u8; 32], Arc<Account>>,
}

impl Accounts {
    /// Gives the fleet back what the keys' leases (budget slices, rate-limit permits) hold
    /// unused: at shutdown, after the drain.
    pub async fn give_back(&self) {
        for account in self.by_hash.values() {
            account.give_back().await;
        }
    }

    /// Accounts for `keys`, with spend already recorded in `ledger` for this day and month.
    pub fn new(
        keys: &[KeySettings],
        ledger: &Ledger,
        clock: &Clock,
        state: Option<&Arc<crate::state::Shared>>,
    ) -> Accounts {
        Accounts::rebuild(keys, &Accounts::default(), ledger, clock, state)
    }

    /// Accounts for `keys` after a config reload: a key whose settings did not change keeps
    /// its live account (windows, reservations in flight, rate buckets); a new or changed key
    /// starts from what the ledger holds (flush it first, so that includes what the old
    /// account settled). With the fleet's `state` on Redis, budgets are the fleet's
    /// ([`crate::state::Shared::budget`]).
    pub fn rebuild(
        keys: &[KeySettings],
        previous: &Accounts,
        ledger: &Ledger,
        clock: &Clock,
        state: Option<&Arc<crate::state::Shared>>,
    ) -> Accounts {
        let now = clock.unix_now();
        let by_hash = keys
            .iter()
            .map(|key| {
                if let Some(account) = previous.by_hash.get(&key.hash)
                    && account.key == *key
                {
                    return (key.hash, account.clone());
                }
                let (day, month) = ledger.spent_by_key(&key.name, now).unwrap_or_else(|err| {
                    tracing::warn!(key = %key.name, error = %err, "cannot read spend from the ledger; starting from 0");
                    (0, 0)
                });
                let fleet = state.and_then(|state| state.budget(key));
                let account = Account::new(key.clone(), clock.clone(), day, month).with_fleet(fleet);
                (key.hash, Arc::new(account))
            })
            .collect();
        Accounts { by_hash }
    }

    /// Makes each new account's RPM and TPM fleet-wide when `shared` is the fleet's Redis
    /// (see [`Account::with_fleet_limits`]); accounts kept from before a reload keep theirs.
    pub fn with_fleet_limits(mut self, shared: Option<&Arc<crate::state::Shared>>) -> Accounts {
        if shared.is_some() {
            for account in self.by_hash.values_mut() {
                if let Some(fresh) = Arc::get_mut(account) {
                    fresh.with_fleet_limits(shared);
                }
            }
            // Last (`Arc::get_mut` above needs no weak reference yet): each fleet budget
            // can read its account's own spend, to put it back into a Redis that lost it.
            for account in self.by_hash.values() {
                if let Some(fleet) = account.fleet_budget() {
                    let source: std::sync::Weak<Account> = Arc::downgrade(account);
                    fleet.attach(source);
                }
            }
        }
        self
    }

    /// Whether keys are required (any key configured).
    pub fn auth_required(&self) -> bool {
        !self.by_hash.is_empty()
    }

    /// The account of `bearer`, the secret a client presented.
    pub fn authenticate(&self, bearer: &str) -> Option<Arc<Account>> {
        self.by_hash.get(&hash_key(bearer)).cloned()
    }

    /// Every account, for `/admin/spend`.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Account>> {
        self.by_hash.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_counts_cached_prompt_tokens_at_their_price() {
        let price = ModelPrice {
            input: 2_500_000,
            cached_input: 1_250_000,
            cache_write: 3_125_000,
            output: 10_000_000,
        };
        let usage = Usage {
            prompt_tokens: 1000,
            completion_tokens: 100,
            total_tokens: 1100,
            cached_tokens: 400,
        };
        // 600 × $2.50/M + 400 × $1.25/M + 100 × $10/M = $0.0015 + $0.0005 + $0.001.
        assert_eq!(cost_of(price, &usage, 0), 3_000_000_000);
        // 200 of the 600 uncached tokens were cache writes, at $3.125/M instead of $2.50/M.
        assert_eq!(cost_of(price, &usage, 200), 3_125_000_000);
        // Cache writes beyond the uncached prompt tokens are not billed twice.
        assert_eq!(
            cost_of(price, &usage, u32::MAX),
            3_000_000_000 + 600 * 625_000
        );
        assert_eq!(format_usd(3_000_000_000), "0.003");
        assert_eq!(format_usd(0), "0");
    }
}
