//! The response cache of the LLM step — exact entries keyed by content (blake3), a bounded
//! memory tier over an optional disk tier, single-flight so concurrent identical misses share
//! one upstream call — and the output cache of deterministic stages.
//!
//! Owns: [`CacheKey`] construction, the stored entries and their TTLs, and the in-flight
//! table. Must not know about HTTP: the caller says what the client allowed
//! ([`CacheControl`]) and reports back a [`CacheStatus`] for the `x-weir-cache` header.
//! With `state.shared_cache` on a Redis backend, a shared tier (`state::SharedCache`) is read
//! after this node's memory and disk, in the same Redis call that takes the fleet's lease on
//! a miss (streams and routes with a semantic tier read it between memory and disk); the
//! semantic index stays per node.
//!
//! A cache that serves a wrong answer is worse than none, so only fields proven not to change
//! the answer are left out of the key (see `key.rs`).

mod disk;
mod flight;
mod key;
mod semantic;
mod stage;
pub mod weigh;

use std::sync::Arc;
use std::time::Duration;

use moka::Expiry;
use moka::sync::Cache;

pub use disk::DiskTier;
pub use flight::{Flight, Flights, Outcome};
pub use key::{CacheKey, embeddings_key, request_key, stage_input_key};
pub use semantic::{SemanticIndex, embed_local, probe};
pub use stage::{StageOutput, StageOutputCache};

use crate::state::{SharedCache, StateError};
use crate::wit::ChatResponse;

/// What the client's `Cache-Control` allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-cache`: do not answer from the cache (but the answer may be stored).
    pub no_cache: bool,
    /// `no-store`: neither answer from nor store into the cache.
    pub no_store: bool,
}

impl CacheControl {
    /// Parses a `Cache-Control` header value.
    pub fn parse(value: &str) -> CacheControl {
        let mut control = CacheControl::default();
        for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            match directive.as_str() {
                "no-cache" => control.no_cache = true,
                "no-store" => control.no_store = true,
                _ => {}
            }
        }
        control
    }
}

/// How a response was served, for `x-weir-cache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// From the cache; no upstream call.
    Hit,
    /// Not in the cache; fetched (and stored when storable).
    Miss,
    /// Shared the upstream call of an identical request in flight.
    Coalesced,
    /// Served from a cached answer to a nearly identical last user message.
    SemanticHit,
    /// The cache was not consulted (off for the route, the client's `Cache-Control`, or a
    /// sampling temperature the route does not cache).
    Bypass,
}

impl CacheStatus {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::SemanticHit => "semantic-hit",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// What `DELETE /admin/cache` removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidate {
    /// Everything.
    All,
    /// The entries of one route.
    Route(String),
    /// One entry.
    Key(CacheKey),
}

/// What [`ResponseCache::invalidate`] removed.
#[derive(Debug)]
pub struct Removed {
    /// Entries removed from this node's memory.
    pub memory: u64,
    /// Entries removed from this node's disk.
    pub disk: u64,
    /// Entries removed from the fleet's tier (`None`: there is none).
    pub shared: Option<Result<u64, StateError>>,
}

/// A stored response and how long it lives.
#[derive(Debug)]
pub struct Entry {
    /// The response as the LLM step produced it.
    pub response: ChatResponse,
    /// The route it answered (for invalidation by route).
    route: Arc<str>,
    /// Its time to live from insertion.
    ttl: Duration,
    /// Bytes it is charged for in the memory bound.
    weight: u32,
}

/// Per-entry expiry from the route's TTL.
struct EntryExpiry;

// moka's `Expiry` API passes its own clock's `std::time::Instant`; it is not read here.
#[allow(clippy::disallowed_types)]
impl Expiry<CacheKey, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        entry: &Arc<Entry>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// The cache: a memory tier bounded by total bytes (least recently used evicted first) over
/// an optional disk tier that survives restarts.
#[derive(Clone)]
pub struct ResponseCache {
    /// Key → entry.
    memory: Cache<CacheKey, Arc<Entry>>,
    /// Entries on disk, when configured.
    disk: Option<DiskTier>,
    /// The fleet's tier on Redis, when `state.shared_cache` is on.
    shared: Option<SharedCache>,
    /// Identical misses in flight.
    pub flights: Flights,
    /// Last-user-message embeddings by namespace, for routes with a semantic threshold.
    pub semantic: SemanticIndex,
}

impl ResponseCache {
    /// A cache holding at most `max_bytes` of responses (approximate: text and fields).
    pub fn new(max_bytes: u64) -> ResponseCache {
        ResponseCache {
            memory: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_key: &CacheKey, entry: &Arc<Entry>| entry.weight)
                .expire_after(EntryExpiry)
                .build(),
            disk: None,
            shared: None,
            flights: Flights::default(),
            semantic: SemanticIndex::default(),
        }
    }

    /// The same cache with a semantic index of at most `max_bytes`.
    pub fn with_semantic_bytes(mut self, max_bytes: u64) -> ResponseCache {
        self.semantic = SemanticIndex::new(max_bytes);
        self
    }

    /// The same cache backed by `disk`.
    pub fn with_disk(mut self, disk: DiskTier) -> ResponseCache {
        self.disk = Some(disk);
        self
    }

    /// The same cache with the fleet's `shared` tier after memory (before disk).
    pub fn with_shared(mut self, shared: SharedCache) -> ResponseCache {
        self.shared = Some(shared);
        self
    }

    /// The fleet's tier, when there is one.
    pub fn shared(&self) -> Option<&SharedCache> {
        self.shared.as_ref()
    }

    /// The live response for `key` of `route`: from memory, else from the fleet's tier,
    /// else from disk (a hit below memory is kept in memory too). A shared tier that fails
    /// is a miss.
    pub async fn lookup(&self, key: &CacheKey, route: &str) -> Option<ChatResponse> {
        if let Some(entry) = self.memory.get(key) {
            return Some(entry.response.clone());
        }
        if let Some(shared) = &self.shared
            && let Some((response, ttl)) = shared.get(route, key).await
        {
            self.keep(*key, route, response.clone(), ttl);
            return Some(response);
        }
        self.get(key).await
    }

    /// The live response for `key` in this node's tiers: from memory, else from disk (then
    /// kept in memory too).
    pub async fn get(&self, key: &CacheKey) -> Option<ChatResponse> {
        if let Some(entry) = self.memory.get(key) {
            return Some(entry.response.clone());
        }
        let (response, ttl, route) = self.disk.as_ref()?.get(key).await?;
        self.remember(*key, route.into(), response.clone(), ttl);
        Some(response)
    }

    /// Stores `response` to a request of `route` under `key` for `ttl`, in memory, in the
    /// fleet's tier (off the request path; it also ends this node's lease on the key) and on
    /// disk.
    pub fn put(&self, key: CacheKey, route: &str, response: ChatResponse, ttl: Duration) {
        if let Some(shared) = &self.shared {
            shared.put(route, &key, &response, ttl);
        }
        if let Some(disk) = &self.disk {
            disk.put(key, route, &response, ttl);
        }
        self.remember(key, route.into(), response, ttl);
    }

    /// Keeps `response` (read from the fleet's tier) in memory only, for `ttl`.
    pub fn keep(&self, key: CacheKey, route: &str, response: ChatResponse, ttl: Duration) {
        self.remember(key, route.into(), response, ttl);
    }

    fn remember(&self, key: CacheKey, route: Arc<str>, response: ChatResponse, ttl: Duration) {
        let weight = weigh::as_weight(weigh::response(&response));
        self.memory.insert(
            key,
            Arc::new(Entry {
                response,
                route,
                ttl,
                weight,
            }),
        );
    }

    /// Removes entries from every tier: every one, those of `scope`'s route, or one key.
    /// Returns the entries removed from memory, from disk and from the fleet's tier (`None`
    /// without one; an error when Redis could not be reached, then other nodes may still
    /// serve them until their TTL).
    pub async fn invalidate(&self, scope: Invalidate) -> Removed {
        let shared = match &self.shared {
            Some(shared) => Some(shared.invalidate(&scope).await),
            None => None,
        };
        let memory = match &scope {
            Invalidate::All => {
                self.memory.run_pending_tasks();
                let count = self.memory.entry_count();
                self.memory.invalidate_all();
                self.semantic.clear();
                count
            }
            Invalidate::Route(route) => {
                let keys: Vec<CacheKey> = self
                    .memory
                    .iter()
                    .filter(|(_, entry)| &*entry.route == route.as_str())
                    .map(|(key, _)| *key)
                    .collect();
                for key in &keys {
                    self.memory.invalidate(key);
                }
                keys.len() as u64
            }
            Invalidate::Key(key) => u64::from(self.memory.remove(key).is_some()),
        };
        self.memory.run_pending_tasks();
        let disk = match &self.disk {
            None => 0,
            Some(disk) => {
                let disk = disk.clone();
                tokio::task::spawn_blocking(move || match scope {
                    Invalidate::All => disk.remove_all(None),
                    Invalidate::Route(route) => disk.remove_all(Some(&route)),
                    Invalidate::Key(key) => usize::from(disk.remove(&key)),
                })
                .await
                .unwrap_or(0) as u64
            }
        };
        Removed {
            memory,
            disk,
            shared,
        }
    }

    /// Entries held now (approximate; for metrics and tests).
    pub fn entry_count(&self) -> u64 {
        self.memory.run_pending_tasks();
        self.memory.entry_count()
    }
}
