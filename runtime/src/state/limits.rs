//! Fleet-wide rate limits: one key's or one target's RPM and TPM, shared by every node on
//! Redis, so a provider account's 120 requests per minute stays 120 for the fleet, not 120
//! per node.
//!
//! # Algorithm: a sliding-window log
//!
//! Each limit is a sorted set of the admissions of the last 60 s (`member` = `weight:id`,
//! `score` = Redis's `TIME` in ms at admission) and a running total of their weights. One
//! Lua script checks `total + weight <= limit` for every limit of the call and adds the
//! admission to all of them, or to none (a refusal writes nothing). What left the window is
//! dropped from the log and the total by one call in [`SWEEP_EVERY`], and by any call the
//! total would refuse: a total not swept yet counts more than the window, never less, so
//! every decision is the one the swept log gives.
//! Unlike a token bucket of capacity N refilling N per minute, which admits up to 2N in
//! some 60-second window, the log admits **at most `limit` in any 60-second window** of
//! Redis time: when the last admission of a window was made, every earlier admission of that
//! window was still in the log. Bound stated: 0 overshoot in Redis time. The provider sees
//! a request a few ms after its admission (at most 100 ms for a target admitted ahead of the
//! router, `router::AHEAD_FRESH`), so its own window sees at most `limit` plus the
//! admissions whose delivery took longer than the gap to the window's edge (none in
//! practice: the gap is the whole window in a burst). An admission given back was never
//! sent: the log still holds every admission that was.
//!
//! # One script per admission, or leases (`state.rate_limit_lease_ms`)
//!
//! By default (`rate_limit_lease_ms = 0`) every admission is one `EVALSHA` on the request
//! lane, and the bound is exact. Key and target are two calls: their keys have different
//! hash tags (`{k:<key>}`, `{t:<target>}`) and a script must stay within one Cluster slot. A
//! target's RPM and TPM are one call. The key's RPM is sent when the request arrives and its
//! TPM check with the call's reservation, so both ride the round trip the request makes anyway
//! (`cost::Account::admit_ahead`, `llm::Costing::open`). So does the admission of the target
//! the router will try first ([`FleetLimits::take_returnable`], `router::Start`): it is taken
//! before the router reaches the target, and given back ([`FleetLimits::give_back_permit`]:
//! out of the log, before any send) when no call uses it.
//!
//! With `rate_limit_lease_ms = L > 0`, a node takes a *lease* of k permits in one call and
//! admits from it locally for at most L; the next lease (the same call) gives back what the
//! previous one left unused. A lease is logged with the score `now + L`, so its permits
//! count in the fleet's window from the moment they are taken until L + 60 s later: every
//! request sent on a lease goes out within L of the lease, so any 60-second window of sends
//! only holds permits that were all in the log when the last of them was granted, and the
//! log still never holds more than the limit. Bound stated: **0 overshoot** in Redis time,
//! as without leases. The price is false refusals: permits leased and not yet used or
//! returned are unavailable to other nodes (at most one lease per node per limit, each at
//! most limit / (4 × `expected_nodes`) permits), and permits count L longer. The lease size
//! adapts to the node's rate: it starts at one call's weight, doubles when a lease runs out
//! before its end and falls to what was used when one ends unspent. Near the limit a lease
//! is granted whatever room is left, down to the call's own weight.
//!
//! # TPM
//!
//! A target's TPM takes the call's estimate (prompt + `max_tokens`) at admission, as the
//! local bucket does. A key's TPM checks the prompt before the call ([`FleetLimits::check`])
//! and is debited with the tokens the call really used after it ([`FleetLimits::debit`], off
//! the request path; a node sums its debits of [`DEBIT_BATCH`], 20 ms, into one call). One
//! admission or debit weighs at most the limit (a debit of 4294967295 tokens blocks the key
//! for at most one window).
//!
//! # When Redis is unavailable
//!
//! `on_unavailable.rate_limits = "fail_open"` (the default): the node falls back to a local
//! bucket of `limit / expected_nodes` per minute (at least 1) and counts
//! `weir_state_fallbacks_total{feature="rate_limits"}`; the next call goes to Redis again, so
//! the shared limit is back as soon as Redis answers. `"fail_closed"`: the call is refused
//! ([`Refused::Unavailable`], 503 `state_unavailable`).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{Lane, Shared, StateError};
use crate::config::OnUnavailable;
use crate::rate::MinuteBucket;
use crate::sync::lock;

/// The window of every limit, ms.
pub const WINDOW_MS: u64 = 60_000;

/// How long a key's TPM debits are summed before they go to Redis as one call. The debit comes
/// after the call anyway (a call in flight is not counted until it ends), so the limit sees a
/// call's tokens at most this much later.
pub const DEBIT_BATCH: Duration = Duration::from_millis(20);

/// One admission in this many (by Redis's clock, its microseconds) prunes its logs of what left
/// the window; the others read the total as it is. A total not pruned yet still counts entries
/// that left the window, so it can only refuse more, and a call it would refuse prunes first:
/// admissions and refusals are decided as on a pruned log, for two commands fewer (the range
/// read and the removal) on most admissions. The log holds about this many stale entries more.
const SWEEP_EVERY: u32 = 16;

/// Most expired entries one call removes (the rest go on the next calls; until then the
/// total counts them, which refuses more, never less).
const PRUNE_BATCH: u32 = 256;

/// Most entries a refusal reads to say how long until there is room (beyond: a whole
/// window).
const WAIT_SCAN: u32 = 512;

/// `KEYS`: per limit, its log (sorted set) and its total (string). `ARGV`: the window in ms,
/// a unique id for the admission, the prune batch, the wait scan, the mode (`take`: check
/// and add; `ahead`: the same, answering the id; `check`: check only; `debit`: add without
/// checking), then per limit its limit and the weight of this call.
/// Returns `{0, 0}` when admitted (`{0, 0, id}` for `ahead`: the members added are
/// `weight:id`), `{i, wait_ms}` when limit `i` (1-based) refused.
const SCRIPT: &str = r"
local mode = ARGV[5]
";

/// Gives back an admission that was never sent ([`FleetLimits::give_back_permit`]). `KEYS`:
/// per limit, its log and its total; `ARGV`: per limit, the admission's member. A member
/// still in the log leaves it and its weight leaves the total (the total's expiry is kept).
const GIVE_SOURCE: &str = r"
for i = 1, #KEYS / 2 do
  local log, total, member = KEYS[2 * i - 1], KEYS[2 * i], ARGV[i]
  if redis.call('ZREM', log, member) == 1 then
    local sum = redis.call('GET', total)
    if sum then
      local w = tonumber(string.match(member, '^(%d+):')) or 0
      local left = math.max((tonumber(sum) or 0) - w, 0)
      redis.call('SET', total, string.format('%d', left), 'KEEPTTL')
    end
  end
end
return 1
";

/// Both scripts' first arguments: the window, a unique id (made unique in the fleet with
/// Redis's time), the prune batch and the wait scan.
const HEAD_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local id = ARGV[2] .. ':' .. t[1] .. '.' .. t[2]
local prune = tonumber(ARGV[3])
local scan = tonumber(ARGV[4])
local n = #KEYS / 2
";

/// The script: [`SCRIPT`]'s arguments, [`WINDOW_LUA`]'s functions, then the admission.
const EXACT_BODY: &str = r"
local totals, pruned_any = {}, {}
local sweep = tonumber(t[2]) % SWEEP_EVERY == 0
for i = 1, n do
  if sweep then
    totals[i], pruned_any[i] = pruned(KEYS[2 * i - 1], KEYS[2 * i])
  else
    totals[i], pruned_any[i] = math.max(counted(KEYS[2 * i]), 0), false
  end
end
if mode ~= 'debit' then
  for i = 1, n do
    local limit = tonumber(ARGV[4 + 2 * i])
    local w = math.min(tonumber(ARGV[5 + 2 * i]), limit)
    if totals[i] + w > limit and not sweep then
      -- A refusal is decided on the pruned log, never on a total that still counts entries
      -- which left the window.
      local any
      totals[i], any = pruned(KEYS[2 * i - 1], KEYS[2 * i])
      pruned_any[i] = pruned_any[i] or any
    end
    if totals[i] + w > limit and emptied(KEYS[2 * i - 1]) then
      totals[i], pruned_any[i] = 0, true
    end
    if totals[i] + w > limit then
      return refuse(i, totals, totals[i] + w - limit)
    end
  end
end
for i = 1, n do
  local log, total = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = tonumber(ARGV[4 + 2 * i])
  local w = math.min(tonumber(ARGV[5 + 2 * i]), limit)
  if mode ~= 'check' and w > 0 then
    redis.call('ZADD', log, now, string.format('%d', w) .. ':' .. id)
    keep(log, total, totals[i] + w)
  elseif pruned_any[i] then
    -- A check adds nothing: only the total of what is left is written.
    redis.call('SET', total, string.format('%d', totals[i]), 'PX', window + 11000)
  end
end
if mode == 'ahead' then return {0, 0, id} end
return {0, 0}
";

/// What both scripts share, after their own arguments (`now`, `window`, `prune`, `scan`, `n`):
/// a member's weight, a limit's total as stored, a log pruned of what left the window (its
/// total, and whether anything left), whether a log is empty, a refusal with the wait until
/// limit `i` has `need` more room, and the keys' expiry (the window, the longest lease, 1 s).
///
/// The total is checked against its log (`ZCARD`) only when it would refuse: a total whose log
/// was lost (evicted, say) would otherwise refuse until both expire, and a total that does not
/// refuse only counts more than the log, never less. One call less on every admission.
const WINDOW_LUA: &str = r"
local function weight_of(member)
  return tonumber(string.match(member, '^(%d+):')) or 0
end
local function counted(total)
  return tonumber(redis.call('GET', total) or '0') or 0
end
local function pruned(log, total)
  local sum = counted(total)
  local old = redis.call('ZRANGEBYSCORE', log, '-inf', now - window, 'LIMIT', 0, prune)
  if #old > 0 then
    for _, m in ipairs(old) do sum = sum - weight_of(m) end
    redis.call('ZREM', log, unpack(old))
  end
  return math.max(sum, 0), #old > 0
end
local function emptied(log)
  return redis.call('ZCARD', log) == 0
end
local function keep(log, total, sum)
  redis.call('SET', total, string.format('%d', sum), 'PX', window + 11000)
  redis.call('PEXPIRE', log, window + 11000)
end
local function refuse(i, totals, need)
  local entries = redis.call('ZRANGE', KEYS[2 * i - 1], 0, scan - 1, 'WITHSCORES')
  local freed, wait = 0, window
  for j = 1, #entries, 2 do
    freed = freed + weight_of(entries[j])
    if freed >= need then
      wait = tonumber(entries[j + 1]) + window - now
      break
    end
  end
  for k = 1, #totals do
    redis.call('SET', KEYS[2 * k], string.format('%d', totals[k]), 'PX', window + 11000)
  end
  return {i, math.max(wait, 1)}
end
";

/// The lease script. `KEYS`: per limit, its log and its total. `ARGV`: the window in ms, a
/// unique id, the prune batch, the wait scan, the lease in ms, then per limit: its limit,
/// the least it must grant (the call's weight), the most it may grant, the member of the
/// previous lease to give back (`''`: none) and how much of that lease was used. Gives back
/// first (always), then grants all limits or none. Answers `{'0', suffix, granted...}` (the
/// members are `granted:suffix`) or `{i, wait_ms}` when limit `i` refused.
const LEASE_SCRIPT: &str = r"
local lease = tonumber(ARGV[5])
";

/// The lease script: [`LEASE_SCRIPT`]'s arguments, [`WINDOW_LUA`]'s functions, then the
/// give-back and the grants.
const LEASE_BODY: &str = r"
local totals = {}
for i = 1, n do
  local log, total, a = KEYS[2 * i - 1], KEYS[2 * i], 5 * i
  local sum = pruned(log, total)
  local back = ARGV[a + 4]
  if back ~= '' then
    local score = redis.call('ZSCORE', log, back)
    if score then
      redis.call('ZREM', log, back)
      sum = sum - weight_of(back)
      local used = math.min(tonumber(ARGV[a + 5]) or 0, weight_of(back))
      if used > 0 then
        redis.call('ZADD', log, score, string.format('%d', used) .. ':' .. string.match(back, '^%d+:(.*)$'))
        sum = sum + used
      end
    end
  end
  if sum < 0 or redis.call('ZCARD', log) == 0 then sum = 0 end
  totals[i] = sum
end
local grants = {}
for i = 1, n do
  local a = 5 * i
  local limit = tonumber(ARGV[a + 1])
  local least = math.min(tonumber(ARGV[a + 2]), limit)
  local most = math.min(math.max(tonumber(ARGV[a + 3]), least), limit)
  local room = limit - totals[i]
  if room < least then
    local refused = refuse(i, totals, totals[i] + least - limit)
    return {tostring(refused[1]), tostring(refused[2])}
  end
  grants[i] = math.min(most, room)
end
local answer = {'0', id}
for i = 1, n do
  local log, total = KEYS[2 * i - 1], KEYS[2 * i]
  if grants[i] > 0 then
    redis.call('ZADD', log, now + lease, string.format('%d', grants[i]) .. ':' .. id)
  end
  keep(log, total, totals[i] + grants[i])
  answer[#answer + 1] = string.format('%d', grants[i])
end
return answer
";

/// The lease script, loaded once per process.
fn lease_script() -> &'static redis::Script {
    static CELL: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    CELL.get_or_init(|| {
        redis::Script::new(&format!("{HEAD_LUA}{LEASE_SCRIPT}{WINDOW_LUA}{LEASE_BODY}"))
    })
}

/// The give-back script, loaded once per process.
fn give_script() -> &'static redis::Script {
    static CELL: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    CELL.get_or_init(|| redis::Script::new(GIVE_SOURCE))
}

/// The script, loaded once per process (`EVALSHA`, reloaded on `NOSCRIPT`).
fn script() -> &'static redis::Script {
    static SCRIPT_CELL: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT_CELL.get_or_init(|| {
        let body = EXACT_BODY.replace("SWEEP_EVERY", &SWEEP_EVERY.to_string());
        redis::Script::new(&format!("{HEAD_LUA}{SCRIPT}{WINDOW_LUA}{body}"))
    })
}

/// Which limit of a [`FleetLimits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// Requests per minute.
    Rpm,
    /// Tokens per minute.
    Tpm,
}

impl Which {
    /// `rpm` or `tpm`.
    pub fn name(self) -> &'static str {
        match self {
            Which::Rpm => "rpm",
            Which::Tpm => "tpm",
        }
    }
}

/// An admission that can be given back ([`FleetLimits::take_returnable`]): the member it
/// added to each limit's log. Empty when there is nothing to give back.
#[derive(Debug, Default)]
pub struct Permit {
    members: Vec<(Which, String)>,
}

impl Permit {
    /// Whether there is something to give back.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// Why a call was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A limit has no room for it.
    Limited {
        /// Which.
        which: Which,
        /// Its limit per minute (the fleet's, or this node's share while Redis is away).
        per_minute: u32,
        /// How long until it has room.
        wait: Duration,
    },
    /// Redis is unavailable and the policy is `fail_closed`.
    Unavailable,
}

/// One limit: its Redis keys and its local fallback.
#[derive(Debug)]
struct Limit {
    /// The fleet-wide limit per minute.
    per_minute: u32,
    /// The log's key (sorted set).
    log: String,
    /// The total's key (string).
    total: String,
    /// This node's share while Redis is unavailable: `per_minute / expected_nodes`, at least 1.
    share: u32,
    /// The bucket of that share.
    fallback: Mutex<MinuteBucket>,
    /// This node's lease of permits (with `rate_limit_lease_ms`), locked across its renewal
    /// so that one call renews it for all.
    grant: tokio::sync::Mutex<Grant>,
}

/// A lease of permits of one limit held by this node.
#[derive(Debug, Default)]
struct Grant {
    /// Its member in the log (`granted:suffix`); `None` when there is none to give back.
    member: Option<String>,
    /// Permits granted.
    granted: u64,
    /// Permits used (admissions and debits).
    used: u64,
    /// Until when it admits (its sends must leave within the lease).
    until: Option<Instant>,
}

impl Grant {
    /// Permits left to admit with at `now`.
    fn left(&self, now: Instant) -> u64 {
        match self.until {
            Some(until) if now < until => self.granted.saturating_sub(self.used),
            _ => 0,
        }
    }

    /// The size of the next lease for a call of `weight`, at most `cap`: double the last one
    /// when it ran out before its end, what was used of it when it ended unspent.
    fn next_size(&self, weight: u64, cap: u64, now: Instant) -> u64 {
        let want = match self.until {
            None => weight,
            Some(until) if now < until => self.granted.saturating_mul(2),
            Some(_) => self.used,
        };
        want.clamp(weight, cap.max(weight))
    }
}

/// What to do with a call's weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Check every limit and add to all of them, or refuse.
    Take,
    /// [`Mode::Take`], answering the admission's id (so that it can be given back).
    Ahead,
    /// Check only.
    Check,
    /// Add without checking.
    Debit,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Take => "take",
            Mode::Ahead => "ahead",
            Mode::Check => "check",
            Mode::Debit => "debit",
        }
    }
}

/// The fleet-wide RPM and TPM of one key or one target.
#[derive(Debug)]
pub struct FleetLimits {
    /// The connection and `[state]`.
    shared: Arc<Shared>,
    /// Requests per minute.
    rpm: Option<Limit>,
    /// Tokens per minute.
    tpm: Option<Limit>,
    /// Makes admission ids unique within this process (with the node id and Redis time).
    next: AtomicU64,
    /// How long a lease of permits lasts (`state.rate_limit_lease_ms`); `None`: one call per
    /// admission.
    lease: Option<Duration>,
    /// Until when the fleet refused requests (without leases), and in which of Redis's lives
    /// ([`Shared::epoch`]): the log only loses entries as they age out of the window, so
    /// until then Redis would refuse every request too, and this node refuses them without
    /// asking (a refused client's flood costs Redis one call per node and wait, not one per
    /// request). A Redis that lost its data has an empty log: the refusal is forgotten.
    refused_until: Mutex<Option<(Instant, u64)>>,
    /// Tokens debited and not yet sent to Redis (without leases): the debits of
    /// [`DEBIT_BATCH`] go out as one call.
    debits: AtomicU64,
}

impl FleetLimits {
    /// The limits under hash tag `tag` (`t:<target>` or `k:<key>`); `None` when neither is set.
    pub fn new(
        shared: &Arc<Shared>,
        tag: &str,
        rpm: Option<u32>,
        tpm: Option<u32>,
    ) -> Option<FleetLimits> {
        if rpm.is_none() && tpm.is_none() {
            return None;
        }
        let nodes = shared.settings.expected_nodes.max(1);
        let limit = |name: &str, per_minute: u32| {
            let share = (per_minute / nodes).max(1);
            Limit {
                per_minute,
                log: shared.redis.key(tag, &format!("rl:{name}")),
                total: shared.redis.key(tag, &format!("rl:{name}:n")),
                share,
                fallback: MinuteBucket::new(share),
                grant: tokio::sync::Mutex::default(),
            }
        };
        let lease = shared.settings.rate_limit_lease;
        Some(FleetLimits {
            shared: shared.clone(),
            rpm: rpm.map(|n| limit("rpm", n)),
            tpm: tpm.map(|n| limit("tpm", n)),
            next: AtomicU64::new(0),
            lease: (!lease.is_zero()).then_some(lease),
            refused_until: Mutex::new(None),
            debits: AtomicU64::new(0),
        })
    }

    /// Admits one request of about `tokens` tokens against both limits, or neither.
    pub async fn take(&self, tokens: u32) -> Result<(), Refused> {
        self.call(Mode::Take, &[(Which::Rpm, 1), (Which::Tpm, tokens)])
            .await
    }

    /// [`Self::take`] for a call that may never be sent: without leases, the admission's
    /// members come back with it, so that [`Self::give_back_permit`] can take it out of the
    /// fleet's log if the call is not made. A lease's admission, or the local share's while
    /// Redis is away, has nothing to give back (an empty permit).
    pub async fn take_returnable(&self, tokens: u32) -> Result<Permit, Refused> {
        let parts = self.parts(&[(Which::Rpm, 1), (Which::Tpm, tokens)]);
        if parts.is_empty() {
            return Ok(Permit::default());
        }
        if let Some(lease) = self.lease {
            return self
                .leased(Mode::Take, &parts, lease)
                .await
                .map(|()| Permit::default());
        }
        let members = match self.exact_answer(Mode::Ahead, &parts).await? {
            Some(id) => parts
                .iter()
                .map(|(which, _, weight)| (*which, format!("{weight}:{id}")))
                .collect(),
            None => Vec::new(),
        };
        Ok(Permit { members })
    }

    /// Takes a permit of [`Self::take_returnable`] that no call used back out of the fleet's
    /// log, on the background lane. What Redis does not get back ages out of the window as
    /// an admission would: the limit refuses more for a while, never less.
    pub async fn give_back_permit(&self, permit: Permit) {
        if permit.members.is_empty() {
            return;
        }
        let mut invocation = give_script().prepare_invoke();
        for (which, member) in &permit.members {
            if let Some(limit) = self.limit(*which) {
                invocation.key(&limit.log).key(&limit.total).arg(member);
            }
        }
        let given: Result<i64, _> = self
            .shared
            .redis
            .script("limit_give", Lane::Background, &invocation)
            .await;
        match given {
            Ok(_) => metrics::counter!("weir_state_permits_returned_total").increment(1),
            Err(err) => tracing::debug!(error = %err, "an unused admission not given back"),
        }
    }

    /// Whether every admission is a Redis call (no leases).
    pub fn admits_per_call(&self) -> bool {
        self.lease.is_none()
    }

    /// Admits one request against the RPM limit only. Without leases, a refusal by the fleet
    /// is kept until the wait it named (counted from before it was asked, so never later
    /// than Redis's own), and requests until then are refused here.
    pub async fn take_request(&self) -> Result<(), Refused> {
        let asked = Instant::now();
        let epoch = self.shared.epoch();
        if let Some(rpm) = &self.rpm
            && let Some((until, then)) = *lock(&self.refused_until)
            && asked < until
            && then == epoch
        {
            return Err(Refused::Limited {
                which: Which::Rpm,
                per_minute: rpm.per_minute,
                wait: until - asked,
            });
        }
        let result = self.call(Mode::Take, &[(Which::Rpm, 1)]).await;
        if self.lease.is_none()
            && let (Some(rpm), Err(Refused::Limited { per_minute, wait, .. })) = (&self.rpm, &result)
            // The fleet's refusal, not the local share's while Redis is away.
            && *per_minute == rpm.per_minute
        {
            *lock(&self.refused_until) = Some((asked + *wait, epoch));
        }
        result
    }

    /// Whether the TPM limit has room for `tokens` now; takes nothing.
    pub async fn check(&self, tokens: u32) -> Result<(), Refused> {
        self.call(Mode::Check, &[(Which::Tpm, tokens)]).await
    }

    /// Whether [`Self::check`] is a Redis call every time: a TPM limit without leases.
    pub fn checks_tokens_per_call(&self) -> bool {
        self.tpm.is_some() && self.lease.is_none()
    }

    /// Counts `tokens` a call used against the TPM limit, off the request path (a task on
    /// the background lane; while Redis is away, the local share is debited). Without leases,
    /// the debits of one [`DEBIT_BATCH`] are summed into one call: one script per key and
    /// batch, not one per request.
    pub fn debit(self: &Arc<Self>, tokens: u64) {
        if self.tpm.is_none() || tokens == 0 {
            return;
        }
        // At most u32::MAX each: a batch's sum cannot wrap its u64.
        let tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
        if self.lease.is_some() {
            let this = self.clone();
            self.shared.spawn(async move {
                let _ = this.call(Mode::Debit, &[(Which::Tpm, tokens)]).await;
            });
            return;
        }
        // The first debit of a batch sends it; the others add to it.
        if self.debits.fetch_add(u64::from(tokens), Ordering::Relaxed) > 0 {
            return;
        }
        let this = self.clone();
        self.shared.spawn(async move {
            tokio::time::sleep(DEBIT_BATCH).await;
            this.flush_debits().await;
        });
    }

    /// Sends the debits summed so far as one call (none when a flush at shutdown took them).
    async fn flush_debits(&self) {
        let pending = self.debits.swap(0, Ordering::Relaxed);
        if pending > 0 {
            // At most the limit: a debit that large already fills a whole window.
            let tokens = u32::try_from(pending).unwrap_or(u32::MAX);
            let _ = self.call(Mode::Debit, &[(Which::Tpm, tokens)]).await;
        }
    }

    /// Runs `job` on the fleet's background lane ([`Shared::spawn`]).
    pub fn spawn(&self, job: impl Future<Output = ()> + Send + 'static) {
        self.shared.spawn(job);
    }

    /// Gives back what this node's leases have not used (at shutdown, after the drain), in
    /// one call on the background lane; the leases are gone afterwards. Debits still being
    /// summed go out first, rather than with a batch the shutdown may cut.
    pub async fn give_back(&self) {
        self.flush_debits().await;
        let Some(lease) = self.lease else { return };
        let mut held = Vec::new();
        for limit in [&self.rpm, &self.tpm].into_iter().flatten() {
            let mut grant = limit.grant.lock().await;
            let grant = std::mem::take(&mut *grant);
            if let Some(member) = grant.member
                && grant.used < grant.granted
            {
                held.push((limit, member, grant.used));
            }
        }
        if held.is_empty() {
            return;
        }
        let mut invocation = self.lease_call(lease);
        for (limit, member, used) in held {
            // Grants nothing (at least and at most 0): only the give-back.
            lease_limit(&mut invocation, limit, (0, 0), Some(&member), used);
        }
        let given: Result<Vec<String>, _> = self
            .shared
            .redis
            .script("limit_give_back", Lane::Background, &invocation)
            .await;
        if let Err(err) = given {
            tracing::debug!(error = %err, "unused rate-limit permits not given back");
        }
    }

    /// A call of the lease script with its first arguments.
    fn lease_call(&self, lease: Duration) -> redis::ScriptInvocation<'static> {
        let mut invocation = lease_script().prepare_invoke();
        invocation
            .arg(WINDOW_MS)
            .arg(self.id())
            .arg(PRUNE_BATCH)
            .arg(WAIT_SCAN)
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX));
        invocation
    }

    fn limit(&self, which: Which) -> Option<&Limit> {
        match which {
            Which::Rpm => self.rpm.as_ref(),
            Which::Tpm => self.tpm.as_ref(),
        }
    }

    /// The limits of `weights` that exist and weigh something, each weight at most its limit
    /// (the scripts clamp too; a lease must).
    fn parts(&self, weights: &[(Which, u32)]) -> Vec<(Which, &Limit, u32)> {
        weights
            .iter()
            .filter(|(_, w)| *w > 0)
            .filter_map(|&(which, w)| {
                let limit = self.limit(which)?;
                Some((which, limit, w.min(limit.per_minute)))
            })
            .collect()
    }

    /// One script call for the limits of `weights` that exist and weigh something; the
    /// local share when Redis fails and the policy is `fail_open`.
    async fn call(&self, mode: Mode, weights: &[(Which, u32)]) -> Result<(), Refused> {
        let parts = self.parts(weights);
        if parts.is_empty() {
            return Ok(());
        }
        if let Some(lease) = self.lease {
            return self.leased(mode, &parts, lease).await;
        }
        self.exact(mode, &parts).await
    }

    /// One id for an admission or a lease: unique within the fleet with Redis's time.
    fn id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}:{n}", self.shared.node())
    }

    /// [`Self::call`] without leases: one script call.
    async fn exact(&self, mode: Mode, parts: &[(Which, &Limit, u32)]) -> Result<(), Refused> {
        self.exact_answer(mode, parts).await.map(drop)
    }

    /// [`Self::exact`], with the admission's id when Redis admitted a [`Mode::Ahead`] call
    /// (`None`: another mode, or the local share admitted it).
    async fn exact_answer(
        &self,
        mode: Mode,
        parts: &[(Which, &Limit, u32)],
    ) -> Result<Option<String>, Refused> {
        let lane = match mode {
            Mode::Debit => Lane::Background,
            _ => Lane::Request,
        };
        let mut invocation = script().prepare_invoke();
        invocation
            .arg(WINDOW_MS)
            .arg(self.id())
            .arg(PRUNE_BATCH)
            .arg(WAIT_SCAN)
            .arg(mode.arg());
        for (_, limit, weight) in parts {
            invocation
                .key(&limit.log)
                .key(&limit.total)
                .arg(limit.per_minute)
                .arg(*weight);
        }
        let op = match mode {
            Mode::Take | Mode::Ahead => "limit_take",
            Mode::Check => "limit_check",
            Mode::Debit => "limit_debit",
        };
        match self
            .shared
            .redis
            .script::<Vec<String>>(op, lane, &invocation)
            .await
        {
            Ok(answer) => {
                let numbers: Vec<i64> = answer
                    .iter()
                    .take(2)
                    .map_while(|n| n.parse().ok())
                    .collect();
                verdict(&numbers, parts)?;
                Ok(answer.into_iter().nth(2).filter(|_| mode == Mode::Ahead))
            }
            Err(err) => self.fallback(mode, parts, &err).map(|()| None),
        }
    }

    /// [`Self::call`] on this node's leases: admitted locally while they have room; one
    /// script call renews every lease short of room (giving back what the old ones left).
    /// A debit is taken from the lease, and what it has no room for is debited in Redis.
    async fn leased(
        &self,
        mode: Mode,
        parts: &[(Which, &Limit, u32)],
        lease: Duration,
    ) -> Result<(), Refused> {
        // Locked in the order of `parts` (RPM before TPM) by every caller.
        let mut grants = Vec::with_capacity(parts.len());
        for (_, limit, _) in parts {
            grants.push(limit.grant.lock().await);
        }
        if mode == Mode::Debit {
            let mut over = Vec::new();
            for ((which, limit, weight), grant) in parts.iter().zip(&mut grants) {
                let weight = u64::from(*weight);
                // A debit counts tokens already sent: a lease past its end still has them.
                let room = grant.granted.saturating_sub(grant.used).min(weight);
                grant.used += room;
                if weight > room {
                    over.push((
                        *which,
                        *limit,
                        u32::try_from(weight - room).unwrap_or(u32::MAX),
                    ));
                }
            }
            drop(grants);
            return match over.is_empty() {
                true => Ok(()),
                false => self.exact(Mode::Debit, &over).await,
            };
        }
        let start = Instant::now();
        let short: Vec<usize> = (0..parts.len())
            .filter(|&i| grants[i].left(start) < u64::from(parts[i].2))
            .collect();
        if !short.is_empty() {
            let mut invocation = self.lease_call(lease);
            let nodes = u64::from(self.shared.settings.expected_nodes.max(1));
            for &i in &short {
                let (_, limit, weight) = parts[i];
                let grant = &grants[i];
                let cap = u64::from(limit.per_minute) / (4 * nodes);
                let size = grant.next_size(u64::from(weight), cap, start);
                let bounds = (u64::from(weight), size);
                lease_limit(
                    &mut invocation,
                    limit,
                    bounds,
                    grant.member.as_deref(),
                    grant.used,
                );
            }
            let answer = self
                .shared
                .redis
                .script::<Vec<String>>("limit_lease", Lane::Request, &invocation)
                .await;
            // Whatever the answer, the old leases were given back (or may have been): none
            // of their permits is used again.
            for &i in &short {
                *grants[i] = Grant::default();
            }
            let granted = match answer {
                Err(err) => return self.fallback(mode, parts, &err),
                Ok(answer) => lease_verdict(&answer, short.len()),
            };
            match granted {
                Err((index, wait)) => {
                    let i = short.get(index).copied().unwrap_or(short[0]);
                    let (which, limit, _) = parts[i];
                    return Err(Refused::Limited {
                        which,
                        per_minute: limit.per_minute,
                        wait,
                    });
                }
                Ok((suffix, amounts)) => {
                    for (&i, granted) in short.iter().zip(amounts) {
                        *grants[i] = Grant {
                            member: Some(format!("{granted}:{suffix}")),
                            granted,
                            used: 0,
                            until: Some(start + lease),
                        };
                    }
                }
            }
        }
        let now = Instant::now();
        if let Some(i) = (0..parts.len()).find(|&i| grants[i].left(now) < u64::from(parts[i].2)) {
            // Granted less than asked (an answer not of the script's shape): refuse briefly.
            let (which, limit, _) = parts[i];
            return Err(Refused::Limited {
                which,
                per_minute: limit.per_minute,
                wait: Duration::from_secs(1),
            });
        }
        if matches!(mode, Mode::Take | Mode::Ahead) {
            for ((_, _, weight), grant) in parts.iter().zip(&mut grants) {
                grant.used += u64::from(*weight);
            }
        }
        Ok(())
    }

    /// Redis failed: the policy decides.
    fn fallback(
        &self,
        mode: Mode,
        parts: &[(Which, &Limit, u32)],
        err: &StateError,
    ) -> Result<(), Refused> {
        metrics::counter!("weir_state_fallbacks_total", "feature" => "rate_limits").increment(1);
        if mode != Mode::Debit
            && self.shared.settings.on_unavailable.rate_limits == OnUnavailable::FailClosed
        {
            tracing::debug!(error = %err, "rate limits unavailable: refusing (fail_closed)");
            return Err(Refused::Unavailable);
        }
        tracing::debug!(error = %err, "rate limits unavailable: this node's local share");
        local(mode, parts, Instant::now())
    }
}

/// The script's answer as a verdict.
fn verdict(answer: &[i64], parts: &[(Which, &Limit, u32)]) -> Result<(), Refused> {
    match answer {
        [0, ..] => Ok(()),
        [i, wait, ..] => {
            let index = usize::try_from(*i).unwrap_or(0).saturating_sub(1);
            let (which, limit, _) =
                parts
                    .get(index)
                    .or(parts.first())
                    .copied()
                    .ok_or(Refused::Limited {
                        which: Which::Rpm,
                        per_minute: 0,
                        wait: Duration::from_secs(1),
                    })?;
            let wait = u64::try_from(*wait).unwrap_or(1).clamp(1, WINDOW_MS);
            Err(Refused::Limited {
                which,
                per_minute: limit.per_minute,
                wait: Duration::from_millis(wait),
            })
        }
        // Not the script's shape: admit (the answer cannot be trusted to refuse).
        _ => Ok(()),
    }
}

/// Adds `limit` to a lease call: grant between `bounds` (least, most) permits, after giving
/// back `member` (the last lease, of which `used` were used).
fn lease_limit(
    invocation: &mut redis::ScriptInvocation<'_>,
    limit: &Limit,
    bounds: (u64, u64),
    member: Option<&str>,
    used: u64,
) {
    invocation
        .key(&limit.log)
        .key(&limit.total)
        .arg(limit.per_minute)
        .arg(bounds.0)
        .arg(bounds.1)
        .arg(member.unwrap_or(""))
        .arg(used);
}

/// The lease script's answer: the members' suffix and the permits granted per limit, or the
/// index (0-based) of the limit that refused and the wait. Untrusted: a limit without an
/// amount gets 0 (the call is then refused), a wait is bounded to (0, window].
fn lease_verdict(
    answer: &[String],
    limits: usize,
) -> Result<(String, Vec<u64>), (usize, Duration)> {
    let number = |i: usize| answer.get(i).and_then(|v| v.parse::<u64>().ok());
    match number(0) {
        Some(0) => {
            let suffix = answer.get(1).cloned().unwrap_or_default();
            let amounts = (0..limits).map(|i| number(2 + i).unwrap_or(0)).collect();
            Ok((suffix, amounts))
        }
        Some(i) => {
            let wait = number(1).unwrap_or(1).clamp(1, WINDOW_MS);
            let index = usize::try_from(i - 1)
                .unwrap_or(0)
                .min(limits.saturating_sub(1));
            Err((index, Duration::from_millis(wait)))
        }
        None => Ok((String::new(), vec![0; limits])),
    }
}

/// The same call on this node's share (all or nothing, like the script).
fn local(mode: Mode, parts: &[(Which, &Limit, u32)], now: Instant) -> Result<(), Refused> {
    let mut buckets: Vec<_> = parts
        .iter()
        .map(|(which, limit, weight)| (*which, limit, lock(&limit.fallback), f64::from(*weight)))
        .collect();
    if mode == Mode::Debit {
        for (_, _, bucket, weight) in &mut buckets {
            bucket.debit(*weight, now);
        }
        return Ok(());
    }
    for (which, limit, bucket, weight) in &mut buckets {
        if let Err(wait) = bucket.check(*weight, now) {
            return Err(Refused::Limited {
                which: *which,
                per_minute: limit.share,
                wait,
            });
        }
    }
    if matches!(mode, Mode::Take | Mode::Ahead) {
        for (_, _, bucket, weight) in &mut buckets {
            let _ = bucket.take(*weight, now);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_minute: u32, share: u32) -> Limit {
        Limit {
            per_minute,
            log: "log".into(),
            total: "n".into(),
            share,
            fallback: MinuteBucket::new(share),
            grant: tokio::sync::Mutex::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_local_share_admits_all_or_nothing_and_refills() {
        // A fleet limit of 120 on 3 expected nodes: 40 here while Redis is away.
        let rpm = limit(120, 40);
        let tpm = limit(3000, 1000);
        let parts = [(Which::Rpm, &rpm, 1), (Which::Tpm, &tpm, 100)];
        for _ in 0..10 {
            assert_eq!(local(Mode::Take, &parts, Instant::now()), Ok(()));
        }
        // TPM is spent (10 × 100): refused, and the RPM bucket kept its token.
        let refused = local(Mode::Take, &parts, Instant::now());
        assert!(
            matches!(
                refused,
                Err(Refused::Limited {
                    which: Which::Tpm,
                    per_minute: 1000,
                    ..
                })
            ),
            "{refused:?}"
        );
        let rpm_only = [(Which::Rpm, &rpm, 1)];
        for _ in 0..30 {
            assert_eq!(local(Mode::Take, &rpm_only, Instant::now()), Ok(()));
        }
        let Err(Refused::Limited { wait, .. }) = local(Mode::Take, &rpm_only, Instant::now())
        else {
            panic!("the 41st request within the instant is refused");
        };
        // 40 per minute: one more every 1.5 s.
        assert_eq!(wait, Duration::from_millis(1500));
        tokio::time::advance(wait).await;
        assert_eq!(local(Mode::Take, &rpm_only, Instant::now()), Ok(()));
    }

    #[test]
    fn the_scripts_answer_names_the_limit_and_the_wait() {
        let rpm = limit(120, 40);
        let tpm = limit(3000, 1000);
        let parts = [(Which::Rpm, &rpm, 1), (Which::Tpm, &tpm, 100)];
        assert_eq!(verdict(&[0, 0], &parts), Ok(()));
        assert_eq!(
            verdict(&[2, 1500], &parts),
            Err(Refused::Limited {
                which: Which::Tpm,
                per_minute: 3000,
                wait: Duration::from_millis(1500)
            })
        );
        // Untrusted numbers are bounded: a wait within (0, window], an index that exists.
        assert_eq!(
            verdict(&[9, -5], &parts),
            Err(Refused::Limited {
                which: Which::Rpm,
                per_minute: 120,
                wait: Duration::from_millis(1)
            })
        );
        let Err(Refused::Limited { wait, .. }) = verdict(&[1, i64::MAX], &parts) else {
            panic!("refused");
        };
        assert_eq!(wait, Duration::from_millis(WINDOW_MS));
    }

    #[test]
    fn a_lease_grows_while_it_runs_out_and_shrinks_to_what_was_used() {
        let now = Instant::now();
        let fresh = Grant::default();
        assert_eq!(
            fresh.next_size(3, 100, now),
            3,
            "no history: the call's weight"
        );
        let ran_out = Grant {
            member: Some("8:x".into()),
            granted: 8,
            used: 8,
            until: Some(now + Duration::from_secs(1)),
        };
        assert_eq!(ran_out.left(now), 0);
        assert_eq!(ran_out.next_size(1, 100, now), 16, "ran out early: doubled");
        assert_eq!(ran_out.next_size(1, 10, now), 10, "capped");
        assert_eq!(
            ran_out.next_size(40, 10, now),
            40,
            "never below the call's weight"
        );
        let ended = Grant { used: 3, ..ran_out };
        let later = now + Duration::from_secs(2);
        assert_eq!(ended.left(now), 5);
        assert_eq!(ended.left(later), 0, "a lease past its end admits nothing");
        assert_eq!(
            ended.next_size(1, 100, later),
            3,
            "ended unspent: what was used"
        );
    }

    #[test]
    fn the_lease_scripts_answer_is_bounded() {
        let answer = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            lease_verdict(&answer(&["0", "n:1:5.6", "7", "300"]), 2),
            Ok(("n:1:5.6".into(), vec![7, 300]))
        );
        assert_eq!(
            lease_verdict(&answer(&["2", "1500"]), 2),
            Err((1, Duration::from_millis(1500)))
        );
        // Untrusted: an index that does not exist names the last limit, waits are bounded,
        // missing amounts are 0 (the call is then refused).
        assert_eq!(
            lease_verdict(&answer(&["9", "999999999"]), 2),
            Err((1, Duration::from_millis(WINDOW_MS)))
        );
        assert_eq!(
            lease_verdict(&answer(&["0", "s"]), 2),
            Ok(("s".into(), vec![0, 0]))
        );
        assert_eq!(
            lease_verdict(&answer(&["x"]), 1),
            Ok((String::new(), vec![0]))
        );
    }
}
