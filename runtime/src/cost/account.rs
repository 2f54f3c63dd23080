//! One API key's live spend: its daily and monthly windows, what calls in flight have
//! reserved, and its per-minute request and token buckets (the fleet's, under `{k:<key>}`,
//! with a Redis backend: see `state::limits`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use tokio::time::Instant;

use super::clock::{self, Clock};
use super::{Admission, CostError};
use crate::config::{KeySettings, pico_to_usd};
use crate::rate::MinuteBucket;
use crate::state::Shared;
use crate::state::budget::{FleetBudget, FleetHold, KeyBudget, Refusal};
use crate::state::lease::{LeasedBudget, Ticket};
use crate::state::limits::{FleetLimits, Refused};
use crate::sync::lock;

/// Spend in the current windows.
#[derive(Debug, Default)]
struct Windows {
    /// The day `day_spent` belongs to.
    day: u32,
    /// Spent that day, pico-dollars.
    day_spent: u64,
    /// The month (`year * 12 + month - 1`) `month_spent` belongs to.
    month: u32,
    /// Spent that month, pico-dollars.
    month_spent: u64,
    /// Reserved by calls in flight, pico-dollars.
    reserved: u64,
}

impl Windows {
    /// Starts new windows when the day or month changed.
    fn roll(&mut self, now: u64) {
        let day = clock::day_of(now);
        if day != self.day {
            self.day = day;
            self.day_spent = 0;
        }
        let month = clock::month_of(day);
        if month != self.month {
            self.month = month;
            self.month_spent = 0;
        }
    }
}

/// One key's account.
#[derive(Debug)]
pub struct Account {
    /// Its settings.
    pub key: KeySettings,
    /// Where time comes from.
    clock: Clock,
    /// Spend and reservations.
    windows: Mutex<Windows>,
    /// Requests per minute.
    rpm: Option<Mutex<MinuteBucket>>,
    /// Tokens per minute.
    tpm: Option<Mutex<MinuteBucket>>,
    /// RPM and TPM shared by the fleet (they replace the two buckets), with a Redis backend.
    fleet_limits: Option<Arc<FleetLimits>>,
    /// The key's budget on the fleet's Redis (`[state] backend = "redis"`, strict mode):
    /// then the fleet, not this process, admits reservations; `None`: this process does.
    fleet: Option<KeyBudget>,
    /// Whether the key's last call was refused when it was opened (budget, limits).
    refused_last: AtomicBool,
}

fn seconds_up(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Account {
    /// An account for `key` that has already spent `day_spent` today and `month_spent` this
    /// month (from the ledger).
    pub fn new(key: KeySettings, clock: Clock, day_spent: u64, month_spent: u64) -> Account {
        let now = clock.unix_now();
        let day = clock::day_of(now);
        Account {
            rpm: key.rpm.map(MinuteBucket::new),
            tpm: key.tpm.map(MinuteBucket::new),
            fleet_limits: None,
            refused_last: AtomicBool::new(false),
            key,
            clock,
            windows: Mutex::new(Windows {
                day,
                day_spent,
                month: clock::month_of(day),
                month_spent,
                reserved: 0,
            }),
            fleet: None,
        }
    }

    /// Whether the key's last call was refused when it was opened: its next call's target
    /// admission waits for the key's answer instead of going ahead with it
    /// (`router::Start`), so that a key refused in a loop holds no provider permits.
    pub fn refused_last(&self) -> bool {
        self.refused_last.load(Ordering::Relaxed)
    }

    /// Notes whether a call of the key was admitted when it was opened.
    pub fn note_opened(&self, admitted: bool) {
        if self.refused_last() == admitted {
            self.refused_last.store(!admitted, Ordering::Relaxed);
        }
    }

    /// This account with its budget admitted by the fleet's Redis (strict mode).
    pub fn with_fleet(mut self, fleet: Option<KeyBudget>) -> Account {
        self.fleet = fleet;
        self
    }

    /// Gives back this key's unused budget slice and rate-limit permits (see
    /// [`super::Accounts::give_back`]).
    pub async fn give_back(&self) {
        if let Some(KeyBudget::Lease(budget)) = &self.fleet {
            budget.give_back_current();
        }
        if let Some(limits) = &self.fleet_limits {
            limits.give_back().await;
        }
    }

    /// Whether reserving a call for this key waits on the fleet's Redis: a budget in
    /// `strict` mode, or a TPM checked by one script per call (no leased permits). The LLM
    /// step then sends the reservation with its shared cache's round trip.
    pub fn reserves_on_redis(&self) -> bool {
        matches!(self.fleet, Some(KeyBudget::Strict(_)))
            || self
                .fleet_limits
                .as_ref()
                .is_some_and(|limits| limits.checks_tokens_per_call())
    }

    /// The key's windows as the fleet has them today (every node's spend and reservations,
    /// or `node`'s own spend), when its budget is the fleet's.
    pub async fn fleet_windows(
        &self,
        node: Option<&str>,
    ) -> Option<Result<crate::state::budget::FleetWindows, crate::state::StateError>> {
        let fleet = self.fleet_budget()?;
        let day = clock::day_of(self.clock.unix_now());
        Some(fleet.read(day, node).await)
    }

    /// The fleet budget behind this key's, on a fleet.
    pub fn fleet_budget(&self) -> Option<&Arc<crate::state::budget::FleetBudget>> {
        self.fleet.as_ref().map(KeyBudget::fleet)
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.key.name
    }

    fn limited(
        &self,
        limit: &'static str,
        per_minute: u32,
        wait: std::time::Duration,
    ) -> CostError {
        CostError::RateLimited {
            key: self.key.name.clone(),
            limit,
            per_minute,
            retry_after_s: seconds_up(wait).max(1),
        }
    }

    /// Makes the key's RPM and TPM fleet-wide when `shared` is the fleet's Redis.
    pub fn with_fleet_limits(&mut self, shared: Option<&Arc<Shared>>) {
        if let Some(shared) = shared {
            let tag = format!("k:{}", self.key.name);
            self.fleet_limits =
                FleetLimits::new(shared, &tag, self.key.rpm, self.key.tpm).map(Arc::new);
        }
    }

    /// A fleet refusal as the client sees it.
    fn refused(&self, refused: Refused) -> CostError {
        match refused {
            Refused::Limited {
                which,
                per_minute,
                wait,
            } => self.limited(which.name(), per_minute, wait),
            Refused::Unavailable => CostError::RateLimitsUnavailable {
                key: self.key.name.clone(),
            },
        }
    }

    /// Admits one request: takes one from the RPM bucket.
    pub async fn admit_request(&self) -> Result<(), CostError> {
        if let Some(fleet) = &self.fleet_limits {
            return fleet.take_request().await.map_err(|r| self.refused(r));
        }
        self.admit_here()
    }

    /// Admits one request against this node's own RPM bucket (no fleet limits).
    fn admit_here(&self) -> Result<(), CostError> {
        if let (Some(rpm), Some(per_minute)) = (&self.rpm, self.key.rpm)
            && let Err(wait) = lock(rpm).take(1.0, Instant::now())
        {
            return Err(self.limited("rpm", per_minute, wait));
        }
        Ok(())
    }

    /// Admits one request without waiting on the fleet's Redis: decided at once by the local
    /// bucket or a leased permit (`Ok(None)`), or asked of Redis and answered while the request
    /// runs (`Ok(Some)`: everything the request sends out waits for the answer, see
    /// [`super::Meter::admitted`]). The script is queued on the connection before this
    /// returns; the connection's task writes it out when it next runs (at the latest when the
    /// request first waits on anything). The answer is read by whoever polls the admission
    /// (the request's own task: no task of its own, which would wake another worker thread
    /// on every request).
    pub fn admit_ahead(self: &Arc<Self>) -> Result<Option<Admission>, CostError> {
        if self.fleet_limits.is_none() {
            return self.admit_here().map(|()| None);
        }
        let this = self.clone();
        let mut admit = async move { this.admit_request().await }.boxed();
        if let Some(decided) = (&mut admit).now_or_never() {
            return decided.map(|()| None);
        }
        Ok(Some(admit.shared()))
    }

    /// Checks the TPM bucket has room for a call's `prompt_tokens` (taken when the call is
    /// settled, with its completion).
    pub async fn check_tokens(&self, prompt_tokens: u32) -> Result<(), CostError> {
        if let Some(fleet) = &self.fleet_limits {
            return fleet
                .check(prompt_tokens)
                .await
                .map_err(|r| self.refused(r));
        }
        if let (Some(tpm), Some(per_minute)) = (&self.tpm, self.key.tpm)
            && let Err(wait) = lock(tpm).check(f64::from(prompt_tokens), Instant::now())
        {
            return Err(self.limited("tpm", per_minute, wait));
        }
        Ok(())
    }

    /// Counts `tokens` a call used against the TPM limit (at most one minute's worth: see
    /// [`MinuteBucket::debit`]).
    pub fn used_tokens(&self, tokens: u64) {
        if let Some(fleet) = &self.fleet_limits {
            fleet.debit(tokens);
            return;
        }
        if let Some(tpm) = &self.tpm {
            lock(tpm).debit(tokens as f64, Instant::now());
        }
    }

    /// Reserves `amount` pico-dollars against both windows, atomically: refused when the
    /// spend plus what is reserved plus `amount` would pass either budget.
    pub async fn reserve(self: &Arc<Self>, amount: u64) -> Result<Reservation, CostError> {
        if let Some(fleet) = &self.fleet {
            return self.reserve_in_fleet(fleet, amount).await;
        }
        let now = self.clock.unix_now();
        let mut w = lock(&self.windows);
        w.roll(now);
        let windows = [
            (
                "daily",
                w.day_spent,
                self.key.daily_budget,
                clock::next_day_start(w.day),
            ),
            (
                "monthly",
                w.month_spent,
                self.key.monthly_budget,
                clock::next_month_start(w.day),
            ),
        ];
        for (window, spent, budget, resets) in windows {
            let Some(budget) = budget else { continue };
            if spent.saturating_add(w.reserved).saturating_add(amount) > budget {
                return Err(CostError::BudgetExceeded {
                    key: self.key.name.clone(),
                    window,
                    spent: pico_to_usd(spent),
                    reserved: pico_to_usd(w.reserved),
                    budget: pico_to_usd(budget),
                    needed: pico_to_usd(amount),
                    resets_at: clock::rfc3339(resets),
                    retry_after_s: resets.saturating_sub(now).max(1),
                });
            }
        }
        w.reserved = w.reserved.saturating_add(amount);
        Ok(Reservation {
            account: self.clone(),
            amount,
            fleet: None,
        })
    }

    /// [`Account::reserve`] against the fleet's Redis: the fleet's spend and reservations
    /// decide (the local windows only mirror this node's share, for `/admin/spend`).
    async fn reserve_in_fleet(
        self: &Arc<Self>,
        fleet: &KeyBudget,
        amount: u64,
    ) -> Result<Reservation, CostError> {
        let now = self.clock.unix_now();
        let (day, local_spent) = {
            let mut w = lock(&self.windows);
            w.roll(now);
            let spent = crate::state::budget::Spent {
                day: w.day_spent,
                month: w.month_spent,
            };
            (w.day, spent)
        };
        let held = match fleet {
            KeyBudget::Strict(budget) => (budget.reserve(amount, day, local_spent).await)
                .map(|hold| FleetHeld::Strict(budget.clone(), hold)),
            KeyBudget::Lease(budget) => (budget.reserve(amount, day, local_spent).await)
                .map(|ticket| FleetHeld::Lease(budget.clone(), ticket)),
        };
        match held {
            Ok(held) => {
                let mut w = lock(&self.windows);
                w.roll(now);
                w.reserved = w.reserved.saturating_add(amount);
                Ok(Reservation {
                    account: self.clone(),
                    amount,
                    fleet: Some(held),
                })
            }
            Err(Refusal::Unavailable) => Err(CostError::StateUnavailable { feature: "budgets" }),
            // Not the budget's own numbers (Redis has them, and cannot be read): the share
            // this node may spend meanwhile is what ran out (fourth probe, R3: the refusal
            // said "$0.009525 left, less than $0.002580").
            Err(Refusal::ShareSpent { share }) => Err(CostError::ShareSpent {
                key: self.key.name.clone(),
                share: pico_to_usd(share),
            }),
            Err(Refusal::Budget {
                window,
                spent,
                reserved,
            }) => {
                let (budget, resets) = match window {
                    "monthly" => (self.key.monthly_budget, clock::next_month_start(day)),
                    _ => (self.key.daily_budget, clock::next_day_start(day)),
                };
                Err(CostError::BudgetExceeded {
                    key: self.key.name.clone(),
                    window,
                    spent: pico_to_usd(spent),
                    reserved: pico_to_usd(reserved),
                    budget: pico_to_usd(budget.unwrap_or(0)),
                    needed: pico_to_usd(amount),
                    resets_at: clock::rfc3339(resets),
                    retry_after_s: resets.saturating_sub(now).max(1),
                })
            }
        }
    }

    /// (spent today, spent this month, reserved now), pico-dollars.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        let mut w = lock(&self.windows);
        w.roll(self.clock.unix_now());
        (w.day_spent, w.month_spent, w.reserved)
    }

    /// Records `cost` spent without a reservation (stage compute).
    pub fn charge(&self, cost: u64) {
        self.release(0, cost);
        if cost > 0
            && let Some(fleet) = &self.fleet
        {
            let day = clock::day_of(self.clock.unix_now());
            fleet.fleet().charge(day, cost);
        }
    }

    fn release(&self, reserved: u64, spent: u64) {
        let mut w = lock(&self.windows);
        w.roll(self.clock.unix_now());
        w.reserved = w.reserved.saturating_sub(reserved);
        w.day_spent = w.day_spent.saturating_add(spent);
        w.month_spent = w.month_spent.saturating_add(spent);
    }
}

/// Money held for one call in flight. [`Reservation::settle`] replaces it with the real cost;
/// dropped unsettled (the call never happened), it is simply released.
#[derive(Debug)]
pub struct Reservation {
    /// Whose.
    account: Arc<Account>,
    /// How much, pico-dollars.
    amount: u64,
    /// The fleet's reservation (settled or released in Redis off the request path).
    fleet: Option<FleetHeld>,
}

/// What the fleet holds for one call.
#[derive(Debug)]
enum FleetHeld {
    /// A reservation in Redis.
    Strict(Arc<FleetBudget>, FleetHold),
    /// A part of this node's slice.
    Lease(Arc<LeasedBudget>, Ticket),
}

impl FleetHeld {
    /// Settles at `actual` pico-dollars (0: released), off the request path.
    fn settle(self, actual: u64) {
        match self {
            FleetHeld::Strict(budget, hold) => budget.settle_arc(hold, actual),
            FleetHeld::Lease(budget, ticket) => budget.settle(ticket, actual),
        }
    }
}

impl Reservation {
    /// Releases the reservation and records `actual` as spent.
    pub fn settle(mut self, actual: u64) {
        self.account.release(self.amount, actual);
        self.amount = 0;
        if let Some(held) = self.fleet.take() {
            held.settle(actual);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.amount > 0 {
            self.account.release(self.amount, 0);
        }
        if let Some(held) = self.fleet.take() {
            held.settle(0);
        }
    }
}

/// What this node's own ledger says the key spent, for a fleet budget re-seeding Redis.
impl crate::state::budget::LocalSpend for Account {
    fn local_spend(&self) -> (u32, crate::state::budget::Spent) {
        let mut w = lock(&self.windows);
        w.roll(self.clock.unix_now());
        let spent = crate::state::budget::Spent {
            day: w.day_spent,
            month: w.month_spent,
        };
        (w.day, spent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::usd_to_pico;

    fn key(daily: f64, monthly: f64) -> KeySettings {
        KeySettings {
            name: "team".into(),
            hash: [0; 32],
            daily_budget: Some(usd_to_pico(daily)),
            monthly_budget: Some(usd_to_pico(monthly)),
            rpm: Some(2),
            tpm: None,
            max_cost_per_request: None,
            max_llm_calls_per_request: None,
        }
    }

    /// Fourth probe, R3: with Redis away and `fail_open`, a key past its local share was
    /// refused with `budget_exceeded` quoting its own day ("$0.009525 left, less than
    /// $0.002580"); the refusal says what ran out: this node's share while Redis is away.
    #[tokio::test]
    async fn a_spent_local_share_is_a_state_refusal_naming_the_share() {
        let settings = crate::config::StateSettings {
            backend: crate::config::Backend::Redis,
            // Nothing listens on port 1.
            url: Some("redis://127.0.0.1:1".to_owned()),
            expected_nodes: 4,
            connect_timeout: std::time::Duration::from_millis(200),
            ..crate::config::StateSettings::default()
        };
        let shared = match Shared::open(&settings).await {
            Ok(Some(shared)) => shared,
            other => panic!("{other:?}"),
        };
        let key = key(1.0, 10.0);
        let fleet = shared.budget(&key);
        let account = Arc::new(Account::new(key, Clock::default(), 0, 0).with_fleet(fleet));
        // The share is $1 / 4 nodes: $0.20 fits, a second $0.20 does not.
        let held = account.reserve(usd_to_pico(0.2)).await;
        assert!(held.is_ok(), "{:?}", held.err());
        let refused = account.reserve(usd_to_pico(0.2)).await;
        drop(held);
        let Err(err) = refused else {
            panic!("admitted past the share");
        };
        assert_eq!(
            (err.status(), err.code()),
            (503, "state_unavailable"),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("$0.250000 this node may spend"), "{text}");
        assert_eq!(err.retry_after_s(), Some(5));
    }

    #[tokio::test]
    async fn reservations_count_against_the_budget_until_settled() {
        // 2026-11-26T21:12:01Z
        let clock = Clock::fixed(1_795_727_521);
        let account = Arc::new(Account::new(key(1.0, 10.0), clock.clone(), 0, 0));
        let a = account.reserve(usd_to_pico(0.6)).await;
        assert!(a.is_ok());
        // 0.6 reserved + 0.6 > 1.0.
        let refused = account.reserve(usd_to_pico(0.6)).await;
        // Not spent: this call's worst case does not fit what is left, and the text says so.
        let text = refused.as_ref().err().map(ToString::to_string);
        let text = text.unwrap_or_default();
        assert!(text.contains("has $0.400000 left"), "{text}");
        assert!(text.contains("may cost ($0.600000"), "{text}");
        let Err(CostError::BudgetExceeded {
            window, resets_at, ..
        }) = refused
        else {
            panic!("expected a refusal, got {refused:?}");
        };
        assert_eq!(
            (window, resets_at.as_str()),
            ("daily", "2026-11-27T00:00:00Z")
        );
        // Settling at the real cost frees the rest.
        a.map(|r| r.settle(usd_to_pico(0.1))).ok();
        assert_eq!(account.snapshot(), (usd_to_pico(0.1), usd_to_pico(0.1), 0));
        assert!(account.reserve(usd_to_pico(0.9)).await.is_ok());
        // Dropped unsettled: released, nothing spent.
        assert_eq!(account.snapshot().2, 0);
        // The next day the daily window starts again; the month keeps counting.
        clock.set(1_795_727_521 + 86_400);
        assert_eq!(account.snapshot(), (0, usd_to_pico(0.1), 0));
    }

    #[tokio::test]
    async fn the_monthly_window_holds_across_days() {
        let clock = Clock::fixed(1_795_727_521);
        let account = Arc::new(Account::new(key(5.0, 1.0), clock, 0, usd_to_pico(0.9)));
        let refused = account.reserve(usd_to_pico(0.2)).await;
        let text = refused.as_ref().err().map(ToString::to_string);
        let text = text.unwrap_or_default();
        assert!(text.contains("has $0.100000 left"), "{text}");
        let Err(CostError::BudgetExceeded {
            window, resets_at, ..
        }) = refused
        else {
            panic!("expected a refusal, got {refused:?}");
        };
        assert_eq!(
            (window, resets_at.as_str()),
            ("monthly", "2026-12-01T00:00:00Z")
        );
        // Spent to the last pico-dollar: the text says so.
        let spent = Arc::new(Account::new(
            key(5.0, 1.0),
            Clock::fixed(1_795_727_521),
            0,
            usd_to_pico(1.0),
        ));
        let text = spent.reserve(1).await.err().map(|e| e.to_string());
        assert!(
            text.unwrap_or_default()
                .contains("budget of key `team` is spent")
        );
    }

    #[tokio::test]
    async fn rpm_refuses_with_a_retry_after() {
        let account = Account::new(key(1.0, 1.0), Clock::default(), 0, 0);
        assert!(account.admit_request().await.is_ok());
        assert!(account.admit_request().await.is_ok());
        let refused = account.admit_request().await;
        assert!(
            matches!(refused, Err(CostError::RateLimited { limit: "rpm", retry_after_s, .. }) if retry_after_s >= 1),
            "{refused:?}"
        );
    }
}
