//! Key budgets in `budget_mode = "lease"`: a node takes a slice of the key's remaining
//! budget from Redis (one reservation of the slice, the strict scripts), spends it locally
//! with no Redis call per request, and returns what it did not spend when the slice is
//! retired: used up, or [`RETIRE_AT`] of `lease_ttl_ms` after it was taken.
//!
//! Bounds: overspend 0 (slices come out of the budget atomically, and a call is admitted
//! only within its node's slice); false refusals up to the sum of the slices other nodes
//! hold (at most `expected_nodes` × the slice). A slice is `remaining / (4 × expected_nodes)`
//! (at least the call's worst case). A node that stops gracefully returns its slice after
//! the drain ([`crate::app::App::give_back_leases`]); one that dies holding a slice has it
//! charged in full when it expires in Redis (`lease_ttl_ms`), corrected if its return
//! arrives later. A
//! refusal is remembered for [`REFUSAL_MEMORY`], so a spent key does not cost a Redis call
//! per request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::budget::{FleetBudget, FleetHold, Refusal, Spent};
use crate::sync::lock;

/// A slice is retired (returned) after this share of `lease_ttl_ms`, before Redis expires it.
pub const RETIRE_AT: f64 = 0.8;

/// How long a refusal by the fleet is reused locally.
pub const REFUSAL_MEMORY: Duration = Duration::from_millis(250);

/// One slice taken from the fleet.
#[derive(Debug)]
struct Slice {
    /// Its reservation in Redis (taken when it is returned).
    hold: Mutex<Option<FleetHold>>,
    /// Granted, pico-dollars.
    granted: u64,
    /// Spent and reserved by calls on it, and whether it is retired.
    use_: Mutex<SliceUse>,
}

#[derive(Debug, Default)]
struct SliceUse {
    /// Reserved by calls in flight.
    reserved: u64,
    /// Spent by settled calls.
    spent: u64,
    /// No new call goes on it; returned once `reserved` is 0.
    retired: bool,
}

/// A key's slices on this node.
#[derive(Debug)]
pub struct LeasedBudget {
    /// The fleet budget slices come from.
    fleet: Arc<FleetBudget>,
    /// The slice new calls go on, and when it retires.
    current: Mutex<Option<(Arc<Slice>, Instant)>>,
    /// One slice is taken at a time.
    taking: tokio::sync::Mutex<()>,
    /// A refusal reused until then.
    refused_until: Mutex<Option<(Instant, Refusal)>>,
    /// `lease_ttl_ms`.
    ttl: Duration,
    /// `expected_nodes`.
    nodes: u64,
}

/// One call's part of a slice.
#[derive(Debug)]
pub struct Ticket {
    /// The slice.
    slice: Arc<Slice>,
    /// Reserved, pico-dollars.
    amount: u64,
}

impl LeasedBudget {
    /// Slices of `fleet`.
    pub fn new(fleet: Arc<FleetBudget>, ttl: Duration, nodes: u32) -> LeasedBudget {
        LeasedBudget {
            fleet,
            current: Mutex::new(None),
            taking: tokio::sync::Mutex::new(()),
            refused_until: Mutex::new(None),
            ttl,
            nodes: u64::from(nodes.max(1)),
        }
    }

    /// The fleet budget slices come from.
    pub fn fleet(&self) -> &Arc<FleetBudget> {
        &self.fleet
    }

    /// Puts `amount` on the current slice, when it has room.
    fn on_current(&self, amount: u64, now: Instant) -> Option<Ticket> {
        let current = lock(&self.current);
        let (slice, retire) = current.as_ref()?;
        if now >= *retire {
            return None;
        }
        let mut use_ = lock(&slice.use_);
        if use_.retired || use_.reserved + use_.spent + amount > slice.granted {
            return None;
        }
        use_.reserved += amount;
        Some(Ticket {
            slice: slice.clone(),
            amount,
        })
    }

    /// Admits a call of worst case `amount` in the windows of `day`.
    pub async fn reserve(
        self: &Arc<Self>,
        amount: u64,
        day: u32,
        local_spent: Spent,
    ) -> Result<Ticket, Refusal> {
        let now = Instant::now();
        if let Some(ticket) = self.on_current(amount, now) {
            return Ok(ticket);
        }
        let _taking = self.taking.lock().await;
        let now = Instant::now();
        if let Some(ticket) = self.on_current(amount, now) {
            return Ok(ticket);
        }
        if let Some((until, refusal)) = &*lock(&self.refused_until)
            && now < *until
        {
            return Err(refusal.clone());
        }
        // Retire the current slice (it returns once its calls settle) and take a new one.
        if let Some((old, _)) = lock(&self.current).take() {
            self.retire(&old);
        }
        let remaining = self.fleet.remaining();
        let slice = (remaining / (4 * self.nodes)).max(amount);
        let mut taken = self
            .fleet
            .reserve_for(slice, day, local_spent, self.ttl)
            .await;
        if matches!(taken, Err(Refusal::Budget { .. })) && slice > amount {
            // Not that much left: just this call's worst case.
            taken = self
                .fleet
                .reserve_for(amount, day, local_spent, self.ttl)
                .await;
        }
        match taken {
            Ok(hold) => {
                let granted = hold.amount();
                let slice = Arc::new(Slice {
                    hold: Mutex::new(Some(hold)),
                    granted,
                    use_: Mutex::new(SliceUse {
                        reserved: amount,
                        ..SliceUse::default()
                    }),
                });
                let retire = now + self.ttl.mul_f64(RETIRE_AT);
                *lock(&self.current) = Some((slice.clone(), retire));
                *lock(&self.refused_until) = None;
                // Return it at its time even if no call comes.
                let this = Arc::downgrade(self);
                let timed = slice.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(retire).await;
                    if let Some(this) = this.upgrade() {
                        let mut current = lock(&this.current);
                        if current
                            .as_ref()
                            .is_some_and(|(s, _)| Arc::ptr_eq(s, &timed))
                        {
                            *current = None;
                        }
                        drop(current);
                        this.retire(&timed);
                    }
                });
                Ok(Ticket { slice, amount })
            }
            Err(refusal) => {
                if matches!(refusal, Refusal::Budget { .. }) {
                    *lock(&self.refused_until) = Some((now + REFUSAL_MEMORY, refusal.clone()));
                }
                Err(refusal)
            }
        }
    }

    /// Retires the current slice (at shutdown, after the drain: it returns at once, its
    /// calls having settled).
    pub fn give_back_current(&self) {
        if let Some((slice, _)) = lock(&self.current).take() {
            self.retire(&slice);
        }
    }

    /// No new call goes on `slice`; it returns once its calls have settled.
    fn retire(&self, slice: &Arc<Slice>) {
        let done = {
            let mut use_ = lock(&slice.use_);
            use_.retired = true;
            (use_.reserved == 0).then_some(use_.spent)
        };
        if let Some(spent) = done {
            self.give_back(slice, spent);
        }
    }

    /// Settles `slice` in Redis at what its calls spent (once).
    fn give_back(&self, slice: &Slice, spent: u64) {
        if let Some(hold) = lock(&slice.hold).take() {
            self.fleet.settle_arc(hold, spent);
        }
    }

    /// Settles `ticket` at `actual` pico-dollars (0: released).
    pub fn settle(&self, ticket: Ticket, actual: u64) {
        let done = {
            let mut use_ = lock(&ticket.slice.use_);
            use_.reserved = use_.reserved.saturating_sub(ticket.amount);
            use_.spent = use_.spent.saturating_add(actual);
            (use_.retired && use_.reserved == 0).then_some(use_.spent)
        };
        if let Some(spent) = done {
            self.give_back(&ticket.slice, spent);
        }
    }
}
