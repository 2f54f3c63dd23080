//! The response cache's shared tier on Redis (`state.shared_cache`), after each node's own
//! tiers, and coalescing of identical misses across nodes: a miss is one `FLIGHT` call that
//! reads the entry or takes the lease (streams and semantic routes read it with
//! [`SharedCache::get`] first, between memory and disk).
//!
//! Keys (`{c:<route>}` is the hash tag: an entry and its lease share one Cluster slot):
//!
//! ```text
//! prefix:{c:<route digest>}:<cache key hex>        string  the entry, PX = its TTL
//! prefix:{c:<route digest>}:<cache key hex>:lease  string  the node fetching it, NX PX lease
//! ```
//!
//! The route digest is the first 16 hex digits of blake3(route): any route name makes a safe,
//! bounded key, and `DELETE /admin/cache?route=` is one `SCAN MATCH` of it.
//!
//! An entry is `MAGIC · blake3(cache key · rest) · rest` with `rest = route length (u16 LE) ·
//! route · the response as OpenAI JSON`. Entries over `state.cache_max_entry_mib` are neither
//! stored nor read (the read script refuses them and deletes them). Data from Redis is
//! untrusted: a wrong checksum, a wrong route or unparsable JSON is a miss, counted in
//! `weir_state_cache_rejected_total` and deleted (only if it is still the value read).
//!
//! Reads are on the request path (`Lane::Request`); any Redis failure or timeout is a miss,
//! counted in `weir_state_fallbacks_total{feature="cache"}`, never an error for the client.
//! Writes run off the request path, on the background lane (`Shared::spawn`,
//! `Lane::Background`).
//!
//! Coalescing across nodes: a node that misses (its own single-flight leader for the key)
//! runs the `FLIGHT` script: the entry if it exists now, else the lease (`SET NX PX`) with
//! its node id, else "another node leads". The leader's lease is renewed while its call runs
//! (one task per node renews each lease held for a third of `cache_flight_lease_ms`, looking
//! every sixth), and its fill writes the entry and deletes its
//! lease in one script (so a waiting node never sees the lease gone before the entry is
//! there); a leader that fails or does not store deletes its lease only if it still owns it.
//! A waiting node polls `FLIGHT` with a growing pause (10 ms, ×1.5, at most 200 ms) until the
//! entry appears, for at most `cache_flight_wait_ms` and the request's deadline. When the
//! leader vanishes, its lease expires and the next poll takes it over (one new upstream call,
//! not one per node); when Redis fails or the wait runs out, the node calls upstream itself
//! (still coalescing its own identical requests). An upstream error is not shared across
//! nodes (the waiting nodes' clients are not the leader's), but it lets them go: the leader
//! replaces its lease with a failure mark for [`FAILED_MARK`], and a node that finds the mark
//! calls upstream at once, without the lease. Taking the lease in turn instead made the
//! Nth waiting node's client wait out N failures one after the other. A leader that ends
//! without calling (its client went away, its key was refused) deletes its lease, and the
//! next node to look takes it over.
//!
//! Streams follow the per-node single-flight: a streamed miss neither leads nor waits (it is
//! relayed as it comes); its answer is stored in the shared tier once it ended cleanly, and a
//! streamed request is answered from a shared entry like from memory.
//!
//! The semantic tier stays per node: its vectors live in each node's memory (Redis 7.0 has no
//! vector search, and a remote nearest-neighbour hop would cost more than it saves at the
//! edge); an exact entry it points to is still read through the shared tier.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};
use std::time::Duration;

use redis::Script;
use tokio::time::Instant;

use super::{Lane, Shared, StateError};
use crate::cache::{CacheKey, Invalidate};
use crate::openai::{parse_response, response_to_json};
use crate::sync::lock;
use crate::wit::ChatResponse;

/// The first bytes of every entry (the format's version).
const MAGIC: &[u8; 4] = b"wc1\0";
/// Bytes before `rest`: magic + checksum.
const HEADER: usize = MAGIC.len() + 32;

/// The first pause of a node waiting for another node's answer.
const FIRST_POLL: Duration = Duration::from_millis(10);
/// The longest pause between two polls.
const MAX_POLL: Duration = Duration::from_millis(200);
/// How long a failed leader's mark stays on its lease: longer than a waiting node's longest
/// pause between two looks ([`MAX_POLL`]), so every node waiting then sees it.
const FAILED_MARK: Duration = Duration::from_millis(500);
/// Keys asked for per `SCAN` of an invalidation.
const SCAN_COUNT: u64 = 1000;
/// `SCAN` calls an invalidation makes at most (a bound against a misbehaving server).
const MAX_SCANS: u32 = 100_000;

/// Reads an entry (`KEYS[1]`) no larger than `ARGV[1]` bytes (`STRLEN` is 0 for a missing
/// key, an error for one that is not a string); with a lease key (`KEYS[2]`)
/// and no entry, takes the lease for node `ARGV[2]` for `ARGV[3]` ms unless another node
/// holds it. Answers `{state, pttl, value}`: 0 absent, 1 entry, 2 another node leads,
/// 3 refused (too large or not a string: deleted), 4 this node leads, 5 the last leader's
/// call failed (its mark holds the lease: [`RELEASE`]).
static FLIGHT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local state = 0
local n = redis.pcall('STRLEN', KEYS[1])
if type(n) ~= 'number' or n > tonumber(ARGV[1]) then
  redis.call('UNLINK', KEYS[1])
  state = 3
elseif n > 0 then
  return {1, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[1])}
end
if #KEYS < 2 then return {state, 0, ''} end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {4, 0, ''} end
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[2] then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return {4, 0, ''}
end
if holder == '\0failed' then return {5, 0, ''} end
return {2, 0, ''}
",
    )
});

/// Stores entry `KEYS[1]` = `ARGV[1]` for `ARGV[2]` ms (nothing when `ARGV[1]` is empty) and
/// deletes lease `KEYS[2]` if node `ARGV[3]` holds it: one step, so a waiting node sees the
/// entry no later than the lease's end.
static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
",
    )
});

/// Ends lease `KEYS[1]` if node `ARGV[1]` holds it: deletes it, or with `ARGV[2]` (ms)
/// replaces it with the failure mark for that long.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] then return redis.call('SET', KEYS[1], '\0failed', 'PX', ARGV[2]) and 1 or 0 end
return redis.call('DEL', KEYS[1])
",
    )
});

/// Extends lease `KEYS[1]` to `ARGV[2]` ms if node `ARGV[1]` holds it.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
",
    )
});

/// Deletes entry `KEYS[1]` if it still holds `ARGV[1]` (a rejected value, not a newer one).
static DROP_IF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('UNLINK', KEYS[1]) end
return 0
",
    )
});

/// The shared tier: the fleet's connection and `[state]`'s cache settings.
#[derive(Clone, Debug)]
pub struct SharedCache {
    /// The connection and settings.
    shared: Arc<Shared>,
    /// The leases this node holds, renewed by one task for all of them.
    leases: Arc<Leases>,
}

/// The fleet leases a node holds, and the one task that renews them (started with the
/// first lease): a miss that leads registers its lease here instead of starting a task of
/// its own (a task per miss, and its abort, woke another worker thread on every miss).
#[derive(Debug, Default)]
struct Leases {
    /// Per lease (by a number of its own): its key and when it was taken or last renewed.
    held: Mutex<HashMap<u64, (String, Instant)>>,
    /// The next lease's number.
    next: AtomicU64,
    /// Set when the renewing task started.
    started: OnceLock<()>,
}

/// What a node that missed is to do about an identical request on other nodes.
pub enum Coalesce {
    /// Fetch it: this node holds the fleet's lease for the key until the [`Lease`] is
    /// filled or dropped.
    Lead(Lease),
    /// Another node's answer, with its remaining time to live; `waited` when this node
    /// waited for it (it shared another node's upstream call).
    Filled {
        /// The answer.
        response: ChatResponse,
        /// Its remaining time to live in Redis.
        ttl: Duration,
        /// Whether it came after waiting for another node.
        waited: bool,
    },
    /// Fetch it without the fleet (Redis failed, or waiting ran out).
    Alone,
}

/// This node's lease on a key: renewed while held (every third of
/// `cache_flight_lease_ms`, by the tier's renewing task), deleted on drop unless the fill
/// (which deletes it in the same script as it writes the entry) took it over.
pub struct Lease {
    /// The tier.
    cache: SharedCache,
    /// Its number in the tier's [`Leases`].
    id: u64,
    /// The lease key.
    key: String,
    /// How it ends when dropped.
    end: End,
}

/// How a [`Lease`] ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// Deleted: the next node to look takes it over.
    Released,
    /// Already ended by the fill that wrote the entry.
    Filled,
    /// Replaced by the failure mark: the nodes waiting call upstream themselves.
    Failed,
}

/// What one `FLIGHT` call found.
enum Found {
    /// An entry (after its checks) and its remaining time to live.
    Entry(ChatResponse, Duration),
    /// Nothing usable.
    Absent,
    /// Another node leads.
    Wait,
    /// The last leader's call failed: fetch it without the lease.
    Failed,
    /// This node leads.
    Lead,
}

impl SharedCache {
    /// The shared tier of `shared`, when `state.shared_cache` is on.
    pub fn new(shared: &Arc<Shared>) -> Option<SharedCache> {
        shared.settings.shared_cache.then(|| SharedCache {
            shared: Arc::clone(shared),
            leases: Arc::default(),
        })
    }

    /// The entry key of `key` for `route`.
    fn entry_key(&self, route: &str, key: &CacheKey) -> String {
        self.shared.redis.key(&route_tag(route), &key.to_hex())
    }

    /// The lease key of `key` for `route`.
    fn lease_key(&self, route: &str, key: &CacheKey) -> String {
        let rest = format!("{}:lease", key.to_hex());
        self.shared.redis.key(&route_tag(route), &rest)
    }

    /// The longest a node waits for another node's answer (`state.cache_flight_wait_ms`).
    pub fn flight_wait(&self) -> Duration {
        self.shared.settings.cache_flight_wait
    }

    /// The largest entry stored or read.
    fn max_entry(&self) -> u64 {
        self.shared.settings.cache_max_entry_bytes
    }

    /// The live entry for `key` of `route` and its remaining time to live; any failure is a
    /// miss.
    pub async fn get(&self, route: &str, key: &CacheKey) -> Option<(ChatResponse, Duration)> {
        match self.flight(route, key, false).await {
            Ok(Found::Entry(response, ttl)) => Some((response, ttl)),
            Ok(_) => None,
            Err(err) => {
                fallback(&err);
                None
            }
        }
    }

    /// Stores `response` for `ttl` off the request path (an entry over the bound is not
    /// stored), and ends this node's lease on the key, if it holds one.
    pub fn put(&self, route: &str, key: &CacheKey, response: &ChatResponse, ttl: Duration) {
        let mut value = encode(key, route, response);
        if value.len() as u64 > self.max_entry() {
            rejected("oversize");
            value.clear();
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let entry = self.entry_key(route, key);
        let lease = self.lease_key(route, key);
        let this = self.clone();
        self.shared.spawn(async move {
            let node = this.shared.redis.node().to_owned();
            let mut invocation = FILL.key(&entry);
            invocation.key(&lease).arg(value).arg(ttl_ms).arg(node);
            let done: Result<i64, _> = this
                .shared
                .redis
                .script("cache_fill", Lane::Background, &invocation)
                .await;
            if let Err(err) = done {
                fallback(&err);
                tracing::debug!(error = %err, "shared cache entry not stored");
            }
        });
    }

    /// Finds out whether this node should fetch `key` of `route` for the fleet, wait for
    /// another node's answer (at most `wait`), or fetch it alone.
    pub async fn lead_or_wait(&self, route: &str, key: &CacheKey, wait: Duration) -> Coalesce {
        if wait.is_zero() {
            // No waiting for other nodes: still a hit when the entry is there.
            return match self.get(route, key).await {
                Some((response, ttl)) => Coalesce::Filled {
                    response,
                    ttl,
                    waited: false,
                },
                None => Coalesce::Alone,
            };
        }
        let start = Instant::now();
        let mut pause = FIRST_POLL;
        let mut waited = false;
        loop {
            match self.flight(route, key, true).await {
                Ok(Found::Entry(response, ttl)) => {
                    return Coalesce::Filled {
                        response,
                        ttl,
                        waited,
                    };
                }
                Ok(Found::Lead) => return Coalesce::Lead(self.lease(route, key)),
                Ok(Found::Wait) => {}
                // A rejected entry: fetch a good one; a failed leader: do not wait for the
                // next one.
                Ok(Found::Absent | Found::Failed) => return Coalesce::Alone,
                Err(err) => {
                    fallback(&err);
                    return Coalesce::Alone;
                }
            }
            let left = wait.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Coalesce::Alone;
            }
            tokio::time::sleep(pause.min(left)).await;
            waited = true;
            pause = next_pause(pause);
        }
    }

    /// Registers the lease just taken on `key` of `route` for renewal.
    fn lease(&self, route: &str, key: &CacheKey) -> Lease {
        let lease_key = self.lease_key(route, key);
        let id = self.leases.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.leases.held).insert(id, (lease_key.clone(), Instant::now()));
        if self.leases.started.set(()).is_ok() {
            tokio::spawn(renew(
                Arc::downgrade(&self.shared),
                Arc::downgrade(&self.leases),
            ));
        }
        Lease {
            cache: self.clone(),
            id,
            key: lease_key,
            end: End::Released,
        }
    }

    /// One `FLIGHT` call: the entry (checked) or, with `lead`, the lease.
    async fn flight(&self, route: &str, key: &CacheKey, lead: bool) -> Result<Found, StateError> {
        let entry = self.entry_key(route, key);
        let redis = &self.shared.redis;
        let mut invocation = FLIGHT.key(&entry);
        invocation.arg(self.max_entry());
        if lead {
            let ms = self.shared.settings.cache_flight_lease.as_millis() as u64;
            invocation
                .key(self.lease_key(route, key))
                .arg(redis.node())
                .arg(ms);
        }
        let op = if lead { "cache_flight" } else { "cache_get" };
        let (state, pttl, value): (i64, i64, Vec<u8>) =
            redis.script(op, Lane::Request, &invocation).await?;
        Ok(match state {
            1 => match (decode(key, route, &value), u64::try_from(pttl)) {
                (Some(response), Ok(ms)) if ms > 0 => {
                    Found::Entry(response, Duration::from_millis(ms))
                }
                // Not ours (no expiry) or damaged: a miss, deleted if unchanged.
                _ => {
                    rejected("corrupt");
                    self.drop_if(entry, value);
                    Found::Absent
                }
            },
            2 => Found::Wait,
            3 => {
                rejected("oversize");
                Found::Absent
            }
            4 => Found::Lead,
            5 => Found::Failed,
            _ => Found::Absent,
        })
    }

    /// Deletes `entry` off the request path if it still holds `value`.
    fn drop_if(&self, entry: String, value: Vec<u8>) {
        let this = self.clone();
        self.shared.spawn(async move {
            let mut invocation = DROP_IF.key(&entry);
            invocation.arg(value);
            let _: Result<i64, _> = this
                .shared
                .redis
                .script("cache_drop", Lane::Background, &invocation)
                .await;
        });
    }

    /// Removes the shared entries of `scope` (leases are left to end by themselves); returns
    /// how many. Off the request path: a `SCAN` of the matching keys.
    pub async fn invalidate(&self, scope: &Invalidate) -> Result<u64, StateError> {
        let redis = &self.shared.redis;
        let pattern = match scope {
            Invalidate::All => redis.key("c:*", "*"),
            Invalidate::Route(route) => redis.key(&route_tag(route), "*"),
            Invalidate::Key(key) => redis.key("c:*", &key.to_hex()),
        };
        let mut cursor = 0u64;
        let mut removed = 0u64;
        for _ in 0..MAX_SCANS {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let (next, keys): (u64, Vec<String>) =
                redis.query("cache_scan", Lane::Background, &scan).await?;
            let entries: Vec<&String> = keys.iter().filter(|k| !k.ends_with(":lease")).collect();
            if !entries.is_empty() {
                let mut unlink = redis::cmd("UNLINK");
                unlink.arg(&entries);
                let n: u64 = redis
                    .query("cache_unlink", Lane::Background, &unlink)
                    .await?;
                removed += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(removed)
    }
}

impl Lease {
    /// The answer was handed to [`SharedCache::put`], whose fill ends the lease.
    pub fn filled(mut self) {
        self.end = End::Filled;
    }

    /// The call made for it failed upstream: the nodes waiting for it are let go at once
    /// (each calls upstream itself) rather than taking the lease one after the other.
    pub fn failed(mut self) {
        self.end = End::Failed;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let key = std::mem::take(&mut self.key);
        lock(&self.cache.leases.held).remove(&self.id);
        if self.end == End::Filled {
            return;
        }
        let cache = self.cache.clone();
        let failed = self.end == End::Failed;
        self.cache.shared.spawn(async move {
            let mut invocation = RELEASE.key(&key);
            invocation.arg(cache.shared.redis.node());
            if failed {
                invocation.arg(FAILED_MARK.as_millis() as u64);
            }
            let _: Result<i64, _> = cache
                .shared
                .redis
                .script("cache_lease_release", Lane::Background, &invocation)
                .await;
        });
    }
}

/// Renews every lease of `leases` held for a third of `cache_flight_lease_ms` since it was
/// taken or last renewed, checking every sixth; a lease found lost (expired, or the entry is
/// in) is no longer renewed. Ends with the tier.
async fn renew(shared: Weak<Shared>, leases: Weak<Leases>) {
    let Some(lease) = shared.upgrade().map(|s| s.settings.cache_flight_lease) else {
        return;
    };
    let period = lease / 3;
    let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::time::sleep(period / 2).await;
        let (Some(shared), Some(leases)) = (shared.upgrade(), leases.upgrade()) else {
            return;
        };
        let now = Instant::now();
        let due: Vec<(u64, String)> = lock(&leases.held)
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) >= period)
            .map(|(id, (key, _))| (*id, key.clone()))
            .collect();
        // All at once: one pipelined round trip.
        let renewals = due.into_iter().map(|(id, key)| {
            let shared = &shared;
            async move {
                let mut invocation = RENEW.key(&key);
                invocation.arg(shared.redis.node()).arg(ms);
                let held: Result<i64, _> = shared
                    .redis
                    .script("cache_lease_renew", Lane::Background, &invocation)
                    .await;
                (id, held)
            }
        });
        for (id, held) in futures_util::future::join_all(renewals).await {
            let mut map = lock(&leases.held);
            if matches!(held, Ok(0)) {
                // Lost: nothing to keep (its `Lease` deletes only a lease it still holds).
                map.remove(&id);
            } else if let Some((_, at)) = map.get_mut(&id) {
                *at = now;
            }
        }
    }
}

/// The hash tag of `route`'s keys: `c:` and 16 hex digits of blake3(route).
fn route_tag(route: &str) -> String {
    let hash = blake3::hash(route.as_bytes());
    format!("c:{}", &hash.to_hex()[..16])
}

/// The pause after `pause` between two polls.
fn next_pause(pause: Duration) -> Duration {
    (pause * 3 / 2).min(MAX_POLL)
}

/// Counts a cache call that fell back to this node's tiers.
fn fallback(err: &StateError) {
    tracing::debug!(error = %err, "shared cache unavailable: a miss");
    metrics::counter!("weir_state_fallbacks_total", "feature" => "cache").increment(1);
}

/// Counts an entry refused (`corrupt` or `oversize`).
fn rejected(reason: &'static str) {
    metrics::counter!("weir_state_cache_rejected_total", "reason" => reason).increment(1);
}

/// The stored form of `response` to `route` under `key`.
fn encode(key: &CacheKey, route: &str, response: &ChatResponse) -> Vec<u8> {
    let body = response_to_json(response).to_string();
    let route = &route.as_bytes()[..route.len().min(u16::MAX as usize)];
    let mut rest = Vec::with_capacity(2 + route.len() + body.len());
    rest.extend_from_slice(&(route.len() as u16).to_le_bytes());
    rest.extend_from_slice(route);
    rest.extend_from_slice(body.as_bytes());
    let mut value = Vec::with_capacity(HEADER + rest.len());
    value.extend_from_slice(MAGIC);
    value.extend_from_slice(checksum(key, &rest).as_bytes());
    value.extend_from_slice(&rest);
    value
}

/// The checksum of `rest` stored under `key` (so an entry copied to another key fails).
fn checksum(key: &CacheKey, rest: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&key.0);
    hasher.update(rest);
    hasher.finalize()
}

/// The response in `value` when it is intact, for `key` and `route`; `None` otherwise.
fn decode(key: &CacheKey, route: &str, value: &[u8]) -> Option<ChatResponse> {
    let magic = value.get(..MAGIC.len())?;
    let sum = value.get(MAGIC.len()..HEADER)?;
    let rest = value.get(HEADER..)?;
    if magic != MAGIC || sum != checksum(key, rest).as_bytes() {
        return None;
    }
    let len = usize::from(u16::from_le_bytes([*rest.first()?, *rest.get(1)?]));
    let stored = rest.get(2..2 + len)?;
    let json = rest.get(2 + len..)?;
    let expected = &route.as_bytes()[..route.len().min(u16::MAX as usize)];
    if stored != expected {
        return None;
    }
    parse_response(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(text: &str) -> ChatResponse {
        let body = serde_json::json!({
            "id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
        });
        parse_response(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn an_entry_reads_back_only_under_its_key_and_route_and_intact() {
        let key = CacheKey([7; 32]);
        let value = encode(&key, "demo", &response("hello"));
        let back = decode(&key, "demo", &value).expect("intact");
        assert_eq!(
            response_to_json(&back),
            response_to_json(&response("hello"))
        );
        assert!(
            decode(&CacheKey([8; 32]), "demo", &value).is_none(),
            "other key"
        );
        assert!(decode(&key, "other", &value).is_none(), "other route");
        for i in [0, 5, HEADER, value.len() - 1] {
            let mut flipped = value.clone();
            flipped[i] ^= 1;
            assert!(decode(&key, "demo", &flipped).is_none(), "bit {i} flipped");
        }
        for cut in [0, 3, HEADER, HEADER + 1, value.len() - 1] {
            assert!(
                decode(&key, "demo", &value[..cut]).is_none(),
                "cut at {cut}"
            );
        }
        assert!(decode(&key, "demo", b"garbage").is_none());
    }

    #[test]
    fn a_valid_checksum_over_bad_json_is_still_a_miss() {
        let key = CacheKey([1; 32]);
        let mut rest = vec![4, 0];
        rest.extend_from_slice(b"demo{not json");
        let mut value = MAGIC.to_vec();
        value.extend_from_slice(checksum(&key, &rest).as_bytes());
        value.extend_from_slice(&rest);
        assert!(decode(&key, "demo", &value).is_none());
    }

    #[test]
    fn route_tags_are_bounded_and_free_of_glob_and_brace_characters() {
        for route in ["demo", "a}b{c", "*?[x]", &"r".repeat(5000)] {
            let tag = route_tag(route);
            assert_eq!(tag.len(), 2 + 16, "{tag}");
            assert!(tag[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{tag}");
        }
        assert_ne!(route_tag("a"), route_tag("b"));
    }

    #[test]
    fn polls_back_off_to_a_bounded_pause() {
        let mut pause = FIRST_POLL;
        let mut schedule = vec![pause.as_millis()];
        for _ in 0..10 {
            pause = next_pause(pause);
            schedule.push(pause.as_millis());
        }
        assert_eq!(
            schedule,
            [10, 15, 22, 33, 50, 75, 113, 170, 200, 200, 200],
            "10 ms growing by half up to 200 ms"
        );
    }
}
