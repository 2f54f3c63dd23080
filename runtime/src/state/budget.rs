//! Key budgets shared by the fleet (`budget_mode = "strict"`): one atomic reservation in
//! Redis before each upstream call, one settle after (off the request path).
//!
//! Keys (one hash tag per API key, so every script touches one Cluster slot):
//!
//! ```text
//! prefix:{k:<key>}:b:d:<YYYY-MM-DD>  hash  spent, reserved      (integer nanodollars)
//! prefix:{k:<key>}:b:m:<YYYY-MM>     hash  spent, reserved
//! prefix:{k:<key>}:resv              zset  <id> -> expiry ms; reaped:<id> -> forget-at ms
//! prefix:{k:<key>}:resv_amt          hash  <id> | reaped:<id> -> "nanos\nday key\nmonth key"
//! prefix:{k:<key>}:done:<id>         string  a settled reservation (idempotence), PX 2 × ttl
//! ```
//!
//! Money: weir's pico-dollars become nanodollars (exact under Lua's doubles up to ~$9M per
//! window). Both a reservation and a spend round *up* to the next nanodollar, so Redis never
//! shows less than the nodes' ledgers (by under one nanodollar per call).
//!
//! Windows: the day and month keys are named from the reserving node's clock at reserve time
//! and carried to the settle, so a call that starts at 23:59:59 settles into the day it
//! reserved in. Expiry is Redis's clock (`TIME`).
//!
//! Expiry: a reservation lives `reservation_ttl_ms`; the next reserve on the key after that
//! (any node) reaps up to 16 expired ones, charging each in full (a node died mid-call: the
//! conservative guess), and remembers it for another ttl so that a late settle corrects the
//! charge to the real cost. A settle is applied at most once (the `done:<id>` marker).
//!
//! When Redis is unavailable (`on_unavailable.budgets`): `fail_closed` refuses (503
//! `state_unavailable`); `fail_open` admits on a local share: the key's remaining budget at
//! the last successful reserve, divided by `expected_nodes`, tracked on this node until Redis
//! answers again. Calls admitted so are charged to Redis when it is back (their settle is
//! retried). Overspend bound while degraded: the sum of the nodes' shares, at most the
//! remaining budget at the last sync; 0 with `fail_closed`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use super::{Lane, Shared, StateError};
use crate::config::OnUnavailable;
use crate::sync::lock;

/// Reserve: `KEYS` day, month, resv, resv_amt; `ARGV` amount, day limit, month limit (-1:
/// none), id, ttl ms, day key, month key. Answers `{1, "", spent_d, reserved_d, spent_m,
/// reserved_m, fresh}` (after the reservation) or `{0, window, …, fresh}` (refused, nothing
/// written but the reaping); `fresh` has bit 1 when the day window had no reservation field
/// before (its first reservation, or a window Redis lost), bit 2 the same for the month.
pub const RESERVE_SOURCE: &str = r#"
local function s(x) return string.format('%.0f', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[5])
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 16)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[3], id)
  local v = redis.call('HGET', KEYS[4], id)
  redis.call('HDEL', KEYS[4], id)
  if v and string.sub(id, 1, 7) ~= 'reaped:' then
    local a, dk, mk = string.match(v, '^(%d+)\n([^\n]+)\n([^\n]+)$')
    if a then
      for _, w in ipairs({dk, mk}) do
        redis.call('HINCRBY', w, 'reserved', s(0 - tonumber(a)))
        redis.call('HINCRBY', w, 'spent', a)
      end
      redis.call('HSET', KEYS[4], 'reaped:' .. id, v)
      redis.call('ZADD', KEYS[3], now + ttl, 'reaped:' .. id)
    end
  end
end
local amount = tonumber(ARGV[1])
local function num(x) return tonumber(x or '0') or 0 end
local d = redis.call('HMGET', KEYS[1], 'spent', 'reserved')
local m = redis.call('HMGET', KEYS[2], 'spent', 'reserved')
local sd, rd, sm, rm = num(d[1]), num(d[2]), num(m[1]), num(m[2])
local dl, ml = tonumber(ARGV[2]), tonumber(ARGV[3])
local fresh = (d[2] and 0 or 1) + (m[2] and 0 or 2)
if dl >= 0 and sd + rd + amount > dl then return {0, 'daily', s(sd), s(rd), s(sm), s(rm), fresh} end
if ml >= 0 and sm + rm + amount > ml then return {0, 'monthly', s(sd), s(rd), s(sm), s(rm), fresh} end
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[1])
redis.call('HINCRBY', KEYS[2], 'reserved', ARGV[1])
-- A window's expiry is set by the reservation that creates its 'reserved' (the window's first).
if not d[2] then redis.call('PEXPIRE', KEYS[1], 3 * 86400000) end
if not m[2] then redis.call('PEXPIRE', KEYS[2], 63 * 86400000) end
redis.call('ZADD', KEYS[3], now + ttl, ARGV[4])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[1] .. '\n' .. ARGV[6] .. '\n' .. ARGV[7])
return {1, '', s(sd), s(rd + amount), s(sm), s(rm + amount), fresh}
"#;

/// What [`RESERVE_SOURCE`] answers: admitted, the refusing window, spent and reserved of
/// the day and of the month (nanodollars, as text), which windows were fresh.
type ReserveAnswer = (i64, String, String, String, String, String, i64);

/// Settle (and release, with actual 0): `KEYS` day, month, resv, resv_amt, done; `ARGV` id,
/// actual nanos, ttl ms, the settling node (its own spend is also kept in field
/// `n:<node>`, for [`RESEED_SOURCE`]). Moves an outstanding reservation to `spent` at the real cost;
/// corrects a reaped one (charged in full) to it; charges an unknown one (admitted while
/// Redis was away) the real cost. Applied once: 1, or 0 when it was already.
pub const SETTLE_SOURCE: &str = r#"
local function s(x) return string.format('%.0f', x) end
-- The settle's marker first: a settle applied already finds it and changes nothing.
if not redis.call('SET', KEYS[5], '1', 'PX', 2 * tonumber(ARGV[3]), 'NX') then return 0 end
local id, actual = ARGV[1], ARGV[2]
for i = 1, 2 do redis.call('HINCRBY', KEYS[i], 'n:' .. ARGV[4], actual) end
local v = redis.call('HGET', KEYS[4], id)
if v then
  local a = string.match(v, '^(%d+)\n')
  for i = 1, 2 do
    redis.call('HINCRBY', KEYS[i], 'reserved', s(0 - tonumber(a)))
    redis.call('HINCRBY', KEYS[i], 'spent', actual)
  end
  redis.call('HDEL', KEYS[4], id)
  redis.call('ZREM', KEYS[3], id)
else
  local r = redis.call('HGET', KEYS[4], 'reaped:' .. id)
  local a = r and string.match(r, '^(%d+)\n')
  for i = 1, 2 do
    if a then redis.call('HINCRBY', KEYS[i], 'spent', s(0 - tonumber(a))) end
    redis.call('HINCRBY', KEYS[i], 'spent', actual)
  end
  if r then
    redis.call('HDEL', KEYS[4], 'reaped:' .. id)
    redis.call('ZREM', KEYS[3], 'reaped:' .. id)
  else
    -- A call admitted while Redis was away may be the first of its windows.
    redis.call('PEXPIRE', KEYS[1], 3 * 86400000, 'NX')
    redis.call('PEXPIRE', KEYS[2], 63 * 86400000, 'NX')
  end
end
return 1
"#;

/// Reseed: `KEYS` day, month; `ARGV` node, its day spend, its month spend (nanos). Raises
/// the node's field `n:<node>` of each window to its spend, adding the difference to
/// `spent`.
pub const RESEED_SOURCE: &str = r#"
local function s(x) return string.format('%.0f', x) end
local f = 'n:' .. ARGV[1]
for i = 1, 2 do
  local have = tonumber(redis.call('HGET', KEYS[i], f) or '0') or 0
  local want = tonumber(ARGV[1 + i]) or 0
  if want > have then
    redis.call('HINCRBY', KEYS[i], 'spent', s(want - have))
    redis.call('HSET', KEYS[i], f, s(want))
  end
end
redis.call('PEXPIRE', KEYS[1], 3 * 86400000)
redis.call('PEXPIRE', KEYS[2], 63 * 86400000)
return 1
"#;

static RESEED_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RESEED_SOURCE));

static RESERVE_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(RESERVE_SOURCE));
static SETTLE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SETTLE_SOURCE));

/// Pico-dollars to nanodollars, rounded up.
pub fn nanos_up(pico: u64) -> u64 {
    pico.div_ceil(1000)
}

/// What this node's own ledger says a key spent, pico-dollars.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spent {
    /// In the current day.
    pub day: u64,
    /// In the current month.
    pub month: u64,
}

/// Where a fleet budget reads this node's own spend of its key (the key's account).
pub trait LocalSpend: Send + Sync {
    /// The current day (days since the epoch) and what this node spent in it and its month.
    fn local_spend(&self) -> (u32, Spent);
}

/// Settles in flight or waiting for Redis, in this process.
static PENDING_SETTLES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Waits until this process's settles have landed in Redis, at most `within` (at shutdown).
pub async fn settled(within: Duration) {
    let end = tokio::time::Instant::now() + within;
    while PENDING_SETTLES.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The most settles that may wait for Redis at once (each a small task).
const MAX_PENDING_SETTLES: usize = 65_536;

/// One key's budget on the fleet's Redis.
#[derive(Debug)]
pub struct FleetBudget {
    /// The connection and settings.
    shared: Arc<Shared>,
    /// The key's name (its hash tag `{k:<name>}`).
    key: String,
    /// The daily budget, pico-dollars.
    daily: Option<u64>,
    /// The monthly budget, pico-dollars.
    monthly: Option<u64>,
    /// The key's remaining budget (the smaller window's) after the last successful reserve,
    /// pico-dollars; `u64::MAX` before the first.
    remaining: AtomicU64,
    /// While Redis is unavailable (`fail_open`): this node's share and what it has used.
    degraded: Mutex<Option<Degraded>>,
    /// Reservation ids: this node's id, its boot time and a counter.
    next_id: AtomicU64,
    /// Unique per process start (ms), so ids do not repeat after a restart.
    boot: u64,
    /// The [`Shared::epoch`] this node's spend of the key is in Redis for; [`NOT_SEEDED`]
    /// at start and after an outage this node admitted calls through, so the next reserve
    /// (or the health check) puts this node's spend back first.
    seeded: AtomicU64,
    /// Nanodollars of this node's settles of the key not landed in Redis yet: a re-seed
    /// leaves them out, since they still add themselves when they land.
    pending_nanos: AtomicU64,
    /// This node's spend of the key (its account), read when Redis lost its data.
    local: std::sync::OnceLock<std::sync::Weak<dyn LocalSpend>>,
}

/// A node's local share while Redis is unavailable.
#[derive(Debug)]
struct Degraded {
    /// What this node may still commit, pico-dollars.
    allowance: u64,
    /// Committed (reserved or spent) since Redis went away.
    used: u64,
}

/// A call admitted by the fleet (or, degraded, by the local share).
#[derive(Debug)]
pub struct FleetHold {
    /// The reservation's id.
    id: String,
    /// The day window's key.
    day_key: String,
    /// The month window's key.
    month_key: String,
    /// Reserved, pico-dollars.
    amount: u64,
    /// Admitted on the local share (Redis unavailable): the settle charges Redis the cost.
    local: bool,
    /// The reserve was sent but its answer never came (a timeout or a broken connection):
    /// Redis may hold the reservation, so even a release (actual 0) goes to Redis.
    sent: bool,
}

impl FleetHold {
    /// Reserved, pico-dollars.
    pub fn amount(&self) -> u64 {
        self.amount
    }
}

/// Why the fleet refused a reservation.
#[derive(Clone, Debug)]
pub enum Refusal {
    /// A window has no room: `window`, spent and reserved in it (pico-dollars, from Redis's
    /// nanodollars).
    Budget {
        /// `daily` or `monthly`.
        window: &'static str,
        /// Spent in the window.
        spent: u64,
        /// Reserved in the window.
        reserved: u64,
    },
    /// Redis is unavailable and the policy is `fail_closed`.
    Unavailable,
    /// Redis is unavailable and this node's local share (pico-dollars) is used up.
    ShareSpent {
        /// The share: the key's remaining budget at the last sync over `expected_nodes`.
        share: u64,
    },
}

/// A key's windows as the fleet has them ([`FleetBudget::read`]), pico-dollars.
#[derive(Clone, Copy, Debug)]
pub struct FleetWindows {
    /// Spent in the day.
    pub day_spent: u64,
    /// Spent in the month.
    pub month_spent: u64,
    /// Reserved now by calls in flight (the larger window's); `None` for one node's view.
    pub reserved: Option<u64>,
}

/// A key's budget on the fleet, by `budget_mode`.
#[derive(Debug, Clone)]
pub enum KeyBudget {
    /// One reservation in Redis per call.
    Strict(Arc<FleetBudget>),
    /// Slices of the budget spent locally.
    Lease(Arc<super::lease::LeasedBudget>),
}

impl KeyBudget {
    /// The fleet budget under either mode.
    pub fn fleet(&self) -> &Arc<FleetBudget> {
        match self {
            KeyBudget::Strict(fleet) => fleet,
            KeyBudget::Lease(lease) => lease.fleet(),
        }
    }
}

/// How long a settle is retried while Redis is unavailable, at most.
const SETTLE_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// [`FleetBudget::seeded`] before this node's spend was put back in Redis.
const NOT_SEEDED: u64 = u64::MAX;

impl FleetBudget {
    /// The fleet budget of key `key` with these windows.
    pub fn new(
        shared: Arc<Shared>,
        key: &str,
        daily: Option<u64>,
        monthly: Option<u64>,
    ) -> FleetBudget {
        FleetBudget {
            shared,
            key: key.to_owned(),
            daily,
            monthly,
            remaining: AtomicU64::new(u64::MAX),
            degraded: Mutex::new(None),
            next_id: AtomicU64::new(0),
            boot: crate::clock::unix_ms(),
            // A node (re)started puts its ledger's spend back before its first reservation:
            // what it spent while Redis was away, and was killed before it could settle,
            // would be missing from the fleet's windows for good.
            seeded: AtomicU64::new(NOT_SEEDED),
            pending_nanos: AtomicU64::new(0),
            local: std::sync::OnceLock::new(),
        }
    }

    fn tag(&self) -> String {
        format!("k:{}", self.key)
    }

    /// The window keys for `day` (days since the epoch).
    fn windows(&self, day: u32) -> (String, String) {
        let date = crate::cost::clock::date(day);
        let month = date.get(..7).unwrap_or(&date);
        let redis = &self.shared.redis;
        (
            redis.key(&self.tag(), &format!("b:d:{date}")),
            redis.key(&self.tag(), &format!("b:m:{month}")),
        )
    }

    /// The key's remaining budget at the last successful reserve (the budget itself
    /// before one), pico-dollars.
    pub fn remaining(&self) -> u64 {
        match self.remaining.load(Ordering::Relaxed) {
            u64::MAX => (self.daily.unwrap_or(u64::MAX)).min(self.monthly.unwrap_or(u64::MAX)),
            remaining => remaining,
        }
    }

    /// Reserves `amount` pico-dollars in the windows of `day`; `local_spent` is what this
    /// node's own ledger says the key spent (the share before any sync, and what the node
    /// puts back into a Redis that lost its data).
    pub async fn reserve(
        self: &Arc<Self>,
        amount: u64,
        day: u32,
        local_spent: Spent,
    ) -> Result<FleetHold, Refusal> {
        let ttl = self.shared.settings.reservation_ttl;
        self.reserve_for(amount, day, local_spent, ttl).await
    }

    /// [`FleetBudget::reserve`] with an expiry of `ttl` (a lease's).
    pub async fn reserve_for(
        self: &Arc<Self>,
        amount: u64,
        day: u32,
        local_spent: Spent,
        ttl: Duration,
    ) -> Result<FleetHold, Refusal> {
        let (day_key, month_key) = self.windows(day);
        let epoch = self.shared.epoch();
        if self.seeded.load(Ordering::Relaxed) != epoch
            && self.reseed(&day_key, &month_key, local_spent).await.is_ok()
        {
            self.seeded.store(epoch, Ordering::Relaxed);
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}/{}/{n}", self.shared.node(), self.boot);
        let limit = |b: Option<u64>| b.map_or(-1, |b| i64::try_from(b / 1000).unwrap_or(i64::MAX));
        let ttl = ttl.as_millis() as u64;
        let mut invocation = RESERVE_SCRIPT.prepare_invoke();
        invocation
            .key(&day_key)
            .key(&month_key)
            .key(self.shared.redis.key(&self.tag(), "resv"))
            .key(self.shared.redis.key(&self.tag(), "resv_amt"))
            .arg(nanos_up(amount))
            .arg(limit(self.daily))
            .arg(limit(self.monthly))
            .arg(&id)
            .arg(ttl)
            .arg(&day_key)
            .arg(&month_key);
        let answer: Result<ReserveAnswer, StateError> = self
            .shared
            .redis
            .script("budget_reserve", Lane::Request, &invocation)
            .await;
        let mut hold = FleetHold {
            id,
            day_key,
            month_key,
            amount,
            local: false,
            sent: false,
        };
        match answer {
            Ok((admitted, window, sd, rd, sm, rm, fresh)) => {
                // A window with no reservation before this one, though this node's ledger
                // has spend in it: Redis lost it (evicted, deleted) while the fleet's token
                // stayed. Every node puts its spend back (see `Shared::data_lost`).
                if (fresh & 1 == 1 && local_spent.day > 0)
                    || (fresh & 2 == 2 && local_spent.month > 0)
                {
                    self.shared.data_lost(&self.key);
                }
                if lock(&self.degraded).take().is_some() {
                    // Calls were admitted on the local share while Redis was away: whatever of
                    // their spend did not land (a settle dropped or given up) goes back from
                    // this node's ledger before the next reservation.
                    self.seeded.store(NOT_SEEDED, Ordering::Relaxed);
                }
                let pico = |v: &str| v.parse::<u64>().unwrap_or(0).saturating_mul(1000);
                let (sd, rd, sm, rm) = (pico(&sd), pico(&rd), pico(&sm), pico(&rm));
                let left =
                    |b: Option<u64>, used: u64| b.map_or(u64::MAX, |b| b.saturating_sub(used));
                let remaining = left(self.daily, sd.saturating_add(rd))
                    .min(left(self.monthly, sm.saturating_add(rm)));
                self.remaining.store(remaining, Ordering::Relaxed);
                if admitted == 1 {
                    return Ok(hold);
                }
                let (window, spent, reserved) = match window.as_str() {
                    "monthly" => ("monthly", sm, rm),
                    _ => ("daily", sd, rd),
                };
                Err(Refusal::Budget {
                    window,
                    spent,
                    reserved,
                })
            }
            Err(err) => {
                metrics::counter!("weir_state_fallbacks_total", "feature" => "budgets")
                    .increment(1);
                tracing::debug!(key = %self.key, error = %err, "budget reserve fell back");
                // Not sent only when the breaker stopped it.
                hold.sent = !matches!(err, StateError::Unavailable);
                let refusal = match self.shared.settings.on_unavailable.budgets {
                    OnUnavailable::FailClosed => Refusal::Unavailable,
                    OnUnavailable::FailOpen => match self.admit_locally(&mut hold, local_spent.day)
                    {
                        Ok(()) => return Ok(hold),
                        Err(refusal) => refusal,
                    },
                };
                // Refused, but Redis may have made the reservation: release it, or it would
                // be charged in full at its expiry.
                if hold.sent {
                    self.settle_arc(hold, 0);
                }
                Err(refusal)
            }
        }
    }

    /// Puts this node's own spend back into the windows where Redis has less of it: at
    /// start, after an outage this node admitted calls through, and when Redis lost its data
    /// (restarted empty, flushed, or evicted the keys). Idempotent: each node's part is a
    /// field of its own, raised to what its ledger says less what its settles still carry
    /// ([`FleetBudget::pending_nanos`]: they add themselves when they land), never lowered.
    async fn reseed(&self, day_key: &str, month_key: &str, spent: Spent) -> Result<(), StateError> {
        let pending = self.pending_nanos.load(Ordering::Relaxed);
        let mut invocation = RESEED_SCRIPT.prepare_invoke();
        invocation
            .key(day_key)
            .key(month_key)
            .arg(self.shared.node())
            .arg(nanos_up(spent.day).saturating_sub(pending))
            .arg(nanos_up(spent.month).saturating_sub(pending));
        let _: i64 = self
            .shared
            .redis
            .script("budget_reseed", Lane::Request, &invocation)
            .await?;
        Ok(())
    }

    /// The key's windows for `day` as the fleet has them: spent and reserved by every node
    /// (pico-dollars, from Redis's nanodollars), or with `node` that node's settled spend
    /// (its field `n:<node>`) and no reservations. One pipelined read.
    pub async fn read(&self, day: u32, node: Option<&str>) -> Result<FleetWindows, StateError> {
        let (day_key, month_key) = self.windows(day);
        let fields: Vec<String> = match node {
            None => vec!["spent".into(), "reserved".into()],
            Some(node) => vec![format!("n:{node}")],
        };
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(&day_key).arg(&fields);
        pipe.cmd("HMGET").arg(&month_key).arg(&fields);
        let (d, m): (Vec<Option<String>>, Vec<Option<String>>) = self
            .shared
            .redis
            .pipe("budget_read", Lane::Background, &pipe)
            .await?;
        // Untrusted: anything unreadable counts as 0.
        let pico = |v: Option<&Option<String>>| {
            let nanos = v
                .and_then(Option::as_deref)
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(0);
            u64::try_from(nanos).unwrap_or(0).saturating_mul(1000)
        };
        Ok(FleetWindows {
            day_spent: pico(d.first()),
            month_spent: pico(m.first()),
            reserved: node.is_none().then(|| pico(d.get(1)).max(pico(m.get(1)))),
        })
    }

    /// Gives this budget its account's spend (see [`LocalSpend`]); the first call counts.
    pub fn attach(&self, source: std::sync::Weak<dyn LocalSpend>) {
        let _ = self.local.set(source);
    }

    /// Whether this node's spend is to be put back before the next reservation.
    pub fn needs_reseed(&self) -> bool {
        self.seeded.load(Ordering::Relaxed) != self.shared.epoch()
    }

    /// Puts this node's spend back in Redis now (at start, after an outage, or when Redis
    /// lost its data: see [`Shared::epoch`]), off the request path; a failure leaves it to
    /// the next reserve.
    pub async fn reseed_now(&self) {
        let epoch = self.shared.epoch();
        let Some(source) = self.local.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        let (day, spent) = source.local_spend();
        let (day_key, month_key) = self.windows(day);
        if self.reseed(&day_key, &month_key, spent).await.is_ok() {
            self.seeded.store(epoch, Ordering::Relaxed);
        }
    }

    /// `fail_open`: admits on this node's share of the remaining budget.
    fn admit_locally(&self, hold: &mut FleetHold, local_spent: u64) -> Result<(), Refusal> {
        let nodes = u64::from(self.shared.settings.expected_nodes.max(1));
        let mut degraded = lock(&self.degraded);
        let state = degraded.get_or_insert_with(|| {
            let remaining = match self.remaining.load(Ordering::Relaxed) {
                // Never synced: the budget less what this node itself spent.
                u64::MAX => {
                    let budget = self
                        .daily
                        .unwrap_or(u64::MAX)
                        .min(self.monthly.unwrap_or(u64::MAX));
                    budget.saturating_sub(local_spent)
                }
                remaining => remaining,
            };
            Degraded {
                allowance: remaining / nodes,
                used: 0,
            }
        });
        if state.used.saturating_add(hold.amount) > state.allowance {
            return Err(Refusal::ShareSpent {
                share: state.allowance,
            });
        }
        state.used = state.used.saturating_add(hold.amount);
        hold.local = true;
        Ok(())
    }

    /// Charges `cost` pico-dollars spent without a reservation (stage compute) to the
    /// windows of `day`, off the request path.
    pub fn charge(self: &Arc<Self>, day: u32, cost: u64) {
        let (day_key, month_key) = self.windows(day);
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let hold = FleetHold {
            id: format!("{}/{}/{n}", self.shared.node(), self.boot),
            day_key,
            month_key,
            amount: 0,
            local: true,
            sent: false,
        };
        self.settle_arc(hold, cost);
    }

    /// Settles `hold` at `actual` pico-dollars (0: released, the call never happened), off
    /// the request path (the background lane), retried with backoff while Redis is
    /// unavailable: for up to the reservation's ttl (after that a reservation is reaped and
    /// charged in full), and without end for a hold with no reservation in Redis (admitted
    /// on the local share, or stage compute). One dropped at the cap of waiting settles is
    /// put back by a re-seed of this node's spend when Redis answers.
    pub fn settle_arc(self: &Arc<Self>, hold: FleetHold, actual: u64) {
        if hold.local
            && let Some(state) = lock(&self.degraded).as_mut()
        {
            state.used = state
                .used
                .saturating_sub(hold.amount)
                .saturating_add(actual);
        }
        if hold.local && actual == 0 && !hold.sent {
            return;
        }
        let this = self.clone();
        // Settles waiting out an outage are bounded: past the cap a settle is dropped (its
        // reservation is charged in full when it expires, as a dead node's is), so a long
        // outage at a high rate cannot grow memory without bound.
        if PENDING_SETTLES.fetch_add(1, Ordering::Relaxed) >= MAX_PENDING_SETTLES {
            PENDING_SETTLES.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!("weir_state_settles_dropped_total").increment(1);
            if hold.local {
                // No reservation in Redis to charge at expiry: the spend goes back from the
                // ledger (a re-seed) once Redis answers.
                self.seeded.store(NOT_SEEDED, Ordering::Relaxed);
            }
            return;
        }
        let nanos = nanos_up(actual);
        self.pending_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.shared.spawn(async move {
            this.settle_now(hold, actual).await;
            this.pending_nanos.fetch_sub(nanos, Ordering::Relaxed);
            PENDING_SETTLES.fetch_sub(1, Ordering::Relaxed);
        });
    }

    async fn settle_now(&self, hold: FleetHold, actual: u64) {
        settle_in_redis(&self.shared, &self.tag(), &self.key, hold, actual).await;
    }
}

/// Settles `hold` of key `key` (hash tag `tag`) at `actual` in Redis, retried with backoff
/// for up to the reservation's ttl (a reservation is then reaped and charged in full); a
/// hold admitted on the local share, which has no reservation in Redis, until it lands or
/// the process ends (the next start's re-seed puts the spend back then).
async fn settle_in_redis(shared: &Shared, tag: &str, key: &str, hold: FleetHold, actual: u64) {
    let ttl = shared.settings.reservation_ttl;
    let mut invocation = SETTLE_SCRIPT.prepare_invoke();
    invocation
        .key(&hold.day_key)
        .key(&hold.month_key)
        .key(shared.redis.key(tag, "resv"))
        .key(shared.redis.key(tag, "resv_amt"))
        .key(shared.redis.key(tag, &format!("done:{}", hold.id)))
        .arg(&hold.id)
        .arg(nanos_up(actual))
        .arg(ttl.as_millis() as u64)
        .arg(shared.node());
    let start = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let answer: Result<i64, StateError> = shared
            .redis
            .script("budget_settle", Lane::Background, &invocation)
            .await;
        match answer {
            Ok(_) => return,
            Err(err) if !hold.local && start.elapsed() + backoff > ttl => {
                tracing::warn!(key = %key, id = %hold.id, error = %err, "cannot settle a fleet reservation; it is charged in full when it expires");
                return;
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(SETTLE_BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, StateSettings};

    /// Shared state on a Redis that is not there (nothing listens on port 1).
    async fn away(policy: OnUnavailable) -> Arc<Shared> {
        let mut settings = StateSettings {
            backend: Backend::Redis,
            url: Some("redis://127.0.0.1:1".to_owned()),
            expected_nodes: 4,
            connect_timeout: Duration::from_millis(200),
            ..StateSettings::default()
        };
        settings.on_unavailable.budgets = policy;
        match Shared::open(&settings).await {
            Ok(Some(shared)) => shared,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn while_redis_is_away_a_node_admits_on_its_share_of_the_remaining_budget() {
        let budget = Arc::new(FleetBudget::new(
            away(OnUnavailable::FailOpen).await,
            "team",
            Some(1_000_000),
            None,
        ));
        // Never synced: the share is (budget - this node's spend) / expected nodes.
        let held = budget
            .reserve(
                150_000,
                20_000,
                Spent {
                    day: 200_000,
                    month: 200_000,
                },
            )
            .await;
        let Ok(held) = held else { panic!("{held:?}") };
        assert!(held.local);
        // 150k + 100k > the 200k share.
        let refused = budget
            .reserve(
                100_000,
                20_000,
                Spent {
                    day: 200_000,
                    month: 200_000,
                },
            )
            .await;
        assert!(
            matches!(refused, Err(Refusal::ShareSpent { .. })),
            "{refused:?}"
        );
        // Settled at 50k: the rest of the share is free again.
        budget.settle_arc(held, 50_000);
        assert!(
            budget
                .reserve(
                    100_000,
                    20_000,
                    Spent {
                        day: 200_000,
                        month: 200_000
                    }
                )
                .await
                .is_ok()
        );
        assert!(matches!(
            budget
                .reserve(
                    60_000,
                    20_000,
                    Spent {
                        day: 200_000,
                        month: 200_000
                    }
                )
                .await,
            Err(Refusal::ShareSpent { .. })
        ));
    }

    #[tokio::test]
    async fn fail_closed_refuses_while_redis_is_away() {
        let budget = Arc::new(FleetBudget::new(
            away(OnUnavailable::FailClosed).await,
            "team",
            Some(1_000_000),
            None,
        ));
        let refused = budget.reserve(1, 20_000, Spent { day: 0, month: 0 }).await;
        assert!(matches!(refused, Err(Refusal::Unavailable)), "{refused:?}");
    }

    #[test]
    fn pico_dollars_round_up_to_nanodollars() {
        assert_eq!(nanos_up(0), 0);
        assert_eq!(nanos_up(1), 1);
        assert_eq!(nanos_up(1000), 1);
        assert_eq!(nanos_up(1001), 2);
    }
}
