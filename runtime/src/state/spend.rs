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
//! The rows come from the node's ledger (`cost::ledger`): each commit also adds its rows to
//! the ledger's on-disk outbox, in the same transaction. A shipper task takes them every
//! [`SHIP_INTERVAL`] as numbered batches (also stored in the ledger) and ships them one at a
//! time, retrying a batch (same number) until Redis takes it, then deletes it from the
//! outbox. The script applies a batch only if its number is past the last one applied for
//! that batch's process start (`<node>/<boot>`), so a batch retried after a lost answer, or
//! shipped again after a crash between Redis's answer and the delete, is counted once. While
//! Redis is away rows keep summing in the ledger (one row per day, key, route and model:
//! bounded by the traffic's variety); a node killed (`kill -9`) before its rows reached Redis
//! ships them at its next start, under their first batch numbers.

use std::collections::BTreeMap;
use std::sync::{LazyLock, OnceLock, Weak};
use std::time::Duration;

use super::{Lane, Shared, StateError};
use crate::cost::{Ledger, ShipBatch, SpendRow, clock};

/// How long the shipper gathers rows before shipping them.
pub const SHIP_INTERVAL: Duration = Duration::from_millis(200);

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

/// This node's spend shipper.
#[derive(Debug)]
pub struct Shipper {
    /// The ledger whose outbox it ships ([`Shipper::attach`]).
    ledger: OnceLock<Ledger>,
    /// Wakes the shipper early (a flush).
    wake: tokio::sync::Notify,
    /// `<node>/<boot ms>`: batch numbers count from 1 per process start.
    boot: String,
}

impl Shipper {
    /// A shipper for `node`.
    pub fn new(node: &str) -> Shipper {
        Shipper {
            ledger: OnceLock::new(),
            wake: tokio::sync::Notify::new(),
            boot: format!("{node}/{}", crate::clock::unix_ms()),
        }
    }

    /// Ships the rows `ledger` commits from now on, and what an earlier start left in its
    /// outbox (once; later calls are ignored).
    pub fn attach(&self, ledger: &Ledger) {
        ledger.ship();
        let _ = self.ledger.set(ledger.clone());
        self.wake.notify_one();
    }

    /// Waits (up to `timeout`) until everything the ledger has committed is in Redis; false
    /// if not. Flush the ledger first for what was recorded but not yet committed.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let Some(ledger) = self.ledger.get() else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if ledger.all_shipped().unwrap_or(false) {
                return true;
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
        if let Some(ledger) = this.spend.ledger.get() {
            let (taker, boot) = (ledger.clone(), this.spend.boot.clone());
            let taken = tokio::task::spawn_blocking(move || {
                let batches = taker.outbox(&boot, &mut seq);
                (batches, seq)
            })
            .await;
            match taken {
                Ok((Ok(batches), next)) => {
                    seq = next;
                    for batch in batches {
                        ship(&this, &batch).await;
                        let clearer = ledger.clone();
                        let cleared = tokio::task::spawn_blocking(move || {
                            clearer.shipped(&batch.boot, batch.seq)
                        })
                        .await;
                        // Left in the outbox, it is shipped again and applied no second time.
                        if let Ok(Err(err)) = cleared {
                            tracing::warn!(error = %err, "cannot clear a shipped spend batch");
                        }
                    }
                }
                Ok((Err(err), _)) => {
                    tracing::warn!(error = %err, "cannot read the spend outbox; retrying");
                }
                Err(_) => {}
            }
        }
        drop(this);
        let Some(this) = shared.upgrade() else { return };
        let _ = tokio::time::timeout(SHIP_INTERVAL, this.spend.wake.notified()).await;
    }
}

/// Ships one batch, retrying (same number) until Redis applies it or the node goes away.
async fn ship(shared: &Shared, batch: &ShipBatch) {
    let date = clock::date(batch.day);
    let redis = &shared.redis;
    let mut invocation = SHIP_SCRIPT.prepare_invoke();
    invocation
        .key(redis.key("spend", &format!("d:{date}")))
        .key(redis.key("spend", &format!("n:{}:d:{date}", shared.node())))
        .key(redis.key("spend", "shipped"))
        .arg(&batch.boot)
        .arg(batch.seq);
    for (key, route, model, row) in &batch.rows {
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
