//! Fleet-wide rate limits: one key's or one target's RPM and TPM, shared by every node on
//! Redis, so a provider account's 120 requests per minute stays 120 for the fleet, not 120
//! per node.
//!
//! # Algorithm: a sliding-window log
//!
//! Each limit is a sorted set of the admissions of the last 60 s (`member` = `weight:id`,
//! `score` = Redis's `TIME` in ms at admission) and a running total of their weights. One
//! Lua script drops what left the window, checks `total + weight <= limit` for every limit
//! of the call and adds the admission to all of them, or to none (a refusal writes nothing).
//! Unlike a token bucket of capacity N refilling N per minute, which admits up to 2N in
//! some 60-second window, the log admits **at most `limit` in any 60-second window** of
//! Redis time: when the last admission of a window was made, every earlier admission of that
//! window was still in the log. Bound stated: 0 overshoot in Redis time. The provider sees
//! a request a few ms after its admission, so its own window sees at most `limit` plus the
//! admissions whose delivery took longer than the gap to the window's edge (none in
//! practice: the gap is the whole window in a burst).
//!
//! # Why one script per admission, not leases
//!
//! A lease (a node takes k permits per trip) saves round trips but, with a per-minute limit,
//! a permit leased and not used still occupies the window: at a low rate most of each lease
//! expires unused and the fleet refuses far below its limit, and the lease size would have
//! to adapt to each node's rate. One `EVALSHA` on the request lane costs one Redis round
//! trip before the upstream call (its latency is `/admin/state`'s and
//! `weir_state_call_seconds{op="limit_take"}`; not yet benchmarked), small next to an LLM
//! call of hundreds of ms, and the bound stays exact. Key and target are
//! two calls: their keys have different hash tags (`{k:<key>}`, `{t:<target>}`) and a
//! script must stay within one Cluster slot. A target's RPM and TPM are one call.
//!
//! # TPM
//!
//! A target's TPM takes the call's estimate (prompt + `max_tokens`) at admission, as the
//! local bucket does. A key's TPM checks the prompt before the call ([`FleetLimits::check`])
//! and is debited with the tokens the call really used after it ([`FleetLimits::debit`], off
//! the request path). One admission or debit weighs at most the limit (a debit of
//! 4294967295 tokens blocks the key for at most one window).
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

/// Most expired entries one call removes (the rest go on the next calls; until then the
/// total counts them, which refuses more, never less).
const PRUNE_BATCH: u32 = 256;

/// Most entries a refusal reads to say how long until there is room (beyond: a whole
/// window).
const WAIT_SCAN: u32 = 512;

/// `KEYS`: per limit, its log (sorted set) and its total (string). `ARGV`: the window in ms,
/// a unique id for the admission, the mode (`take`: check and add; `check`: check only;
/// `debit`: add without checking), then per limit its limit and the weight of this call.
/// Returns `{0, 0}` when admitted, `{i, wait_ms}` when limit `i` (1-based) refused.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local id = ARGV[2] .. ':' .. t[1] .. '.' .. t[2]
local mode = ARGV[3]
local prune = tonumber(ARGV[4])
local scan = tonumber(ARGV[5])
local n = #KEYS / 2
local function weight_of(member)
  return tonumber(string.match(member, '^(%d+):')) or 0
end
local totals = {}
for i = 1, n do
  local log, total = KEYS[2 * i - 1], KEYS[2 * i]
  local sum = tonumber(redis.call('GET', total) or '0') or 0
  local old = redis.call('ZRANGEBYSCORE', log, '-inf', now - window, 'LIMIT', 0, prune)
  if #old > 0 then
    for _, m in ipairs(old) do sum = sum - weight_of(m) end
    redis.call('ZREM', log, unpack(old))
  end
  if sum < 0 or redis.call('ZCARD', log) == 0 then sum = 0 end
  totals[i] = sum
end
if mode ~= 'debit' then
  for i = 1, n do
    local limit = tonumber(ARGV[4 + 2 * i])
    local w = math.min(tonumber(ARGV[5 + 2 * i]), limit)
    if totals[i] + w > limit then
      local need = totals[i] + w - limit
      local entries = redis.call('ZRANGE', KEYS[2 * i - 1], 0, scan - 1, 'WITHSCORES')
      local freed, wait = 0, window
      for j = 1, #entries, 2 do
        freed = freed + weight_of(entries[j])
        if freed >= need then
          wait = tonumber(entries[j + 1]) + window - now
          break
        end
      end
      for k = 1, n do redis.call('SET', KEYS[2 * k], totals[k], 'PX', window + 1000) end
      return {i, math.max(wait, 1)}
    end
  end
end
for i = 1, n do
  local log, total = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = tonumber(ARGV[4 + 2 * i])
  local w = math.min(tonumber(ARGV[5 + 2 * i]), limit)
  if mode ~= 'check' and w > 0 then
    redis.call('ZADD', log, now, string.format('%d', w) .. ':' .. id)
    totals[i] = totals[i] + w
  end
  redis.call('SET', total, string.format('%d', totals[i]), 'PX', window + 1000)
  redis.call('PEXPIRE', log, window + 1000)
end
return {0, 0}
";

/// The script, loaded once per process (`EVALSHA`, reloaded on `NOSCRIPT`).
fn script() -> &'static redis::Script {
    static SCRIPT_CELL: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT_CELL.get_or_init(|| redis::Script::new(SCRIPT))
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
}

/// What to do with a call's weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Check every limit and add to all of them, or refuse.
    Take,
    /// Check only.
    Check,
    /// Add without checking.
    Debit,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Take => "take",
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
            }
        };
        Some(FleetLimits {
            shared: shared.clone(),
            rpm: rpm.map(|n| limit("rpm", n)),
            tpm: tpm.map(|n| limit("tpm", n)),
            next: AtomicU64::new(0),
        })
    }

    /// Admits one request of about `tokens` tokens against both limits, or neither.
    pub async fn take(&self, tokens: u32) -> Result<(), Refused> {
        self.call(Mode::Take, &[(Which::Rpm, 1), (Which::Tpm, tokens)])
            .await
    }

    /// Admits one request against the RPM limit only.
    pub async fn take_request(&self) -> Result<(), Refused> {
        self.call(Mode::Take, &[(Which::Rpm, 1)]).await
    }

    /// Whether the TPM limit has room for `tokens` now; takes nothing.
    pub async fn check(&self, tokens: u32) -> Result<(), Refused> {
        self.call(Mode::Check, &[(Which::Tpm, tokens)]).await
    }

    /// Counts `tokens` a call used against the TPM limit, off the request path (a task on
    /// the background lane; while Redis is away, the local share is debited).
    pub fn debit(self: &Arc<Self>, tokens: u64) {
        if self.tpm.is_none() || tokens == 0 {
            return;
        }
        let tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
        let this = self.clone();
        tokio::spawn(async move {
            let _ = this.call(Mode::Debit, &[(Which::Tpm, tokens)]).await;
        });
    }

    fn limit(&self, which: Which) -> Option<&Limit> {
        match which {
            Which::Rpm => self.rpm.as_ref(),
            Which::Tpm => self.tpm.as_ref(),
        }
    }

    /// One script call for the limits of `weights` that exist and weigh something; the
    /// local share when Redis fails and the policy is `fail_open`.
    async fn call(&self, mode: Mode, weights: &[(Which, u32)]) -> Result<(), Refused> {
        let parts: Vec<(Which, &Limit, u32)> = weights
            .iter()
            .filter(|(_, w)| *w > 0)
            .filter_map(|&(which, w)| Some((which, self.limit(which)?, w)))
            .collect();
        if parts.is_empty() {
            return Ok(());
        }
        let lane = match mode {
            Mode::Debit => Lane::Background,
            _ => Lane::Request,
        };
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}:{n}", self.shared.node());
        let mut invocation = script().prepare_invoke();
        invocation
            .arg(WINDOW_MS)
            .arg(id)
            .arg(mode.arg())
            .arg(PRUNE_BATCH)
            .arg(WAIT_SCAN);
        for (_, limit, weight) in &parts {
            invocation
                .key(&limit.log)
                .key(&limit.total)
                .arg(limit.per_minute)
                .arg(*weight);
        }
        let op = match mode {
            Mode::Take => "limit_take",
            Mode::Check => "limit_check",
            Mode::Debit => "limit_debit",
        };
        match self
            .shared
            .redis
            .script::<Vec<i64>>(op, lane, &invocation)
            .await
        {
            Ok(answer) => verdict(&answer, &parts),
            Err(err) => self.fallback(mode, &parts, &err),
        }
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
    if mode == Mode::Take {
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
}
