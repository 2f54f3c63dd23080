//! Fleet-wide spend: every row a node writes to its ledger also lands in Redis, summed per
//! day, key, route and model, so `/admin/spend` on any node answers for the fleet (and, with
//! `?node=`, for one node's shipped rows).
//!
//! Keys (one hash tag `{spend}`):
//!
//! ```text
//! prefix:{spend}:d:<YYYY-MM-DD>           hash  key␟route␟model␟field -> integer
//! prefix:{spend}:n:<node>:d:<YYYY-MM-DD>  hash  the same, for one node
//! prefix:{spend}:shipped                  hash  <node>/<boot> -> last batch applied
//! ```
//!
//! Fields: `calls`, `hits`, `cost` (pico-dollars), `prompt`, `cached`, `completion`
//! (tokens): integers added with `HINCRBY`, so no Lua arithmetic touches them.
//!
//! A shipper task gathers rows for [`SHIP_INTERVAL`] and ships them in numbered batches, one
//! at a time, retrying a batch (same number) until Redis takes it; the script applies a
//! batch only if its number is past the last one applied for this node's boot, so a batch
//! retried after a lost answer is not counted twice. While Redis is away rows keep summing
//! in memory (one row per day, key, route and model: bounded by the traffic's variety) and
//! ship when it is back. Rows not yet shipped when the process is killed are in its ledger
//! only.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex, Weak};
use std::time::Duration;

use super::{Lane, Shared, StateError};
use crate::cost::{Entry, SpendRow, clock};
use crate::sync::lock;

/// How long the shipper gathers rows before shipping them.
pub const SHIP_INTERVAL: Duration = Duration::from_millis(200);

/// Rows per script call at most (each is 6 fields).
const ROWS_PER_BATCH: usize = 256;

/// The longest day range read back at once.
const MAX_DAYS: u32 = 400;

/// Fields of the aggregate hash (a row's six numbers).
const FIELDS: [&str; 6] = ["calls", "hits", "cost", "prompt", "cached", "completion"];

/// Separates the parts of a field name.
const SEP: char = '\u{1f}';

/// Ship: `KEYS` fleet day, node day, shipped; `ARGV` node/boot, batch number, then (field,
/// increment) pairs. Applied once per batch number: 1, or 0 when already applied.
const SHIP: &str = r#"
local last = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0') or 0
if tonumber(ARGV[2]) <= last then return 0 end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], 400 * 86400000)
redis.call('PEXPIRE', KEYS[2], 400 * 86400000)
return 1
"#;

static SHIP_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SHIP));

/// (day, key, route, model).
type RowKey = (u32, String, String, String);

/// A row's sums: calls, hits, cost (pico-dollars), prompt, cached and completion tokens.
type Sums = [u64; 6];

/// Rows waiting to be shipped, and the batch in flight.
#[derive(Debug, Default)]
struct Pending {
    /// Summed rows not yet taken by the shipper.
    rows: BTreeMap<RowKey, Sums>,
    /// Batches taken, not yet applied.
    in_flight: usize,
}

/// This node's spend shipper.
#[derive(Debug)]
pub struct Shipper {
    /// Rows waiting.
    pending: Mutex<Pending>,
    /// Wakes the shipper early (a flush).
    wake: tokio::sync::Notify,
    /// `<node>/<boot ms>`: batch numbers count from 1 per process start.
    boot: String,
}

impl Shipper {
    /// A shipper for `node`.
    pub fn new(node: &str) -> Shipper {
        Shipper {
            pending: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            boot: format!("{node}/{}", crate::clock::unix_ms()),
        }
    }

    /// Adds a ledger entry to what is shipped next (a lock and a map update).
    pub fn record(&self, e: &Entry) {
        let key = (
            clock::day_of(e.ts),
            e.key.clone(),
            e.route.clone(),
            e.model.clone(),
        );
        let mut pending = lock(&self.pending);
        e.add_to(pending.rows.entry(key).or_insert([0; 6]));
    }

    /// Waits (up to `timeout`) until everything recorded so far is in Redis; false if not.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let pending = lock(&self.pending);
                if pending.rows.is_empty() && pending.in_flight == 0 {
                    return true;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            self.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Ships `shared`'s rows until `shared` is dropped.
pub(super) async fn run(shared: Weak<Shared>) {
    let mut seq: u64 = 0;
    loop {
        let Some(this) = shared.upgrade() else { return };
        let shipper = &this.spend;
        let rows = {
            let mut pending = lock(&shipper.pending);
            let rows = std::mem::take(&mut pending.rows);
            pending.in_flight = usize::from(!rows.is_empty());
            rows
        };
        let mut batches: Vec<(u32, Vec<(RowKey, Sums)>)> = Vec::new();
        for (key, row) in rows {
            match batches.last_mut() {
                Some((day, batch)) if *day == key.0 && batch.len() < ROWS_PER_BATCH => {
                    batch.push((key, row))
                }
                _ => batches.push((key.0, vec![(key, row)])),
            }
        }
        for (day, batch) in batches {
            seq += 1;
            ship(&this, day, seq, &batch).await;
        }
        lock(&shipper.pending).in_flight = 0;
        drop(this);
        let Some(this) = shared.upgrade() else { return };
        let _ = tokio::time::timeout(SHIP_INTERVAL, this.spend.wake.notified()).await;
    }
}

/// Ships one batch, retrying (same number) until Redis applies it or the node goes away.
async fn ship(shared: &Shared, day: u32, seq: u64, batch: &[(RowKey, Sums)]) {
    let date = clock::date(day);
    let redis = &shared.redis;
    let mut invocation = SHIP_SCRIPT.prepare_invoke();
    invocation
        .key(redis.key("spend", &format!("d:{date}")))
        .key(redis.key("spend", &format!("n:{}:d:{date}", shared.node())))
        .key(redis.key("spend", "shipped"))
        .arg(&shared.spend.boot)
        .arg(seq);
    for ((_, key, route, model), row) in batch {
        for (field, value) in FIELDS.iter().zip(row) {
            if *value > 0 {
                invocation
                    .arg(format!("{key}{SEP}{route}{SEP}{model}{SEP}{field}"))
                    .arg(i64::try_from(*value).unwrap_or(i64::MAX));
            }
        }
    }
    let mut backoff = Duration::from_millis(100);
    loop {
        let answer: Result<i64, StateError> = redis
            .script("spend_ship", Lane::Background, &invocation)
            .await;
        match answer {
            Ok(_) => return,
            Err(err) => {
                metrics::counter!("weir_state_fallbacks_total", "feature" => "spend").increment(1);
                tracing::debug!(error = %err, "spend not shipped yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The fleet's rows (or `node`'s shipped rows) from day `from` to day `to`.
pub async fn rows(
    shared: &Shared,
    from: u32,
    to: u32,
    node: Option<&str>,
) -> Result<Vec<SpendRow>, StateError> {
    let to = to.min(from.saturating_add(MAX_DAYS));
    let mut pipe = redis::pipe();
    let mut days = Vec::new();
    for day in from..=to {
        let date = clock::date(day);
        let key = match node {
            Some(node) => shared.redis.key("spend", &format!("n:{node}:d:{date}")),
            None => shared.redis.key("spend", &format!("d:{date}")),
        };
        pipe.cmd("HGETALL").arg(key);
        days.push(date);
    }
    let maps: Vec<BTreeMap<String, String>> = shared
        .redis
        .pipe("spend_read", Lane::Background, &pipe)
        .await?;
    let mut out = Vec::new();
    for (date, map) in days.into_iter().zip(maps) {
        let mut rows: BTreeMap<(String, String, String), SpendRow> = BTreeMap::new();
        for (field, value) in map {
            let mut parts = field.split(SEP);
            let (Some(key), Some(route), Some(model), Some(name), None) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                continue;
            };
            let Ok(value) = value.parse::<i64>() else {
                continue;
            };
            let value = u64::try_from(value).unwrap_or(0);
            let row = rows
                .entry((key.to_owned(), route.to_owned(), model.to_owned()))
                .or_insert_with(|| SpendRow {
                    day: date.clone(),
                    key: key.to_owned(),
                    route: route.to_owned(),
                    model: model.to_owned(),
                    ..SpendRow::default()
                });
            let slot = match name {
                "calls" => &mut row.calls,
                "hits" => &mut row.cache_hits,
                "cost" => &mut row.cost_pico,
                "prompt" => &mut row.prompt_tokens,
                "cached" => &mut row.cached_tokens,
                "completion" => &mut row.completion_tokens,
                _ => continue,
            };
            *slot = value;
        }
        out.extend(rows.into_values());
    }
    Ok(out)
}
