//! The disk tier: one file per entry under the cache directory, named by the key, verified on
//! every read (a corrupted entry is a miss and is removed), bounded by total size with the
//! least recently written evicted first, and found again after a restart.
//!
//! File layout: `blake3(rest)` (32 bytes) · expiry in Unix ms (8 bytes, LE) · route length
//! (2 bytes, LE) · the route · the response as OpenAI JSON. Writes go to a temporary file
//! renamed into place, off the async threads.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::CacheKey;
use crate::clock::unix_ms;
use crate::openai::{parse_response, response_to_json};
use crate::sync::lock;
use crate::wit::ChatResponse;

/// Bytes before the JSON: hash + expiry.
const HEADER: usize = 32 + 8;

/// Which entries exist and in what order they were written.
#[derive(Debug, Default)]
struct Index {
    /// Key → (file size, write sequence).
    entries: HashMap<CacheKey, (u64, u64)>,
    /// Write sequence → key, oldest first.
    order: BTreeMap<u64, CacheKey>,
    /// Sum of the file sizes.
    total: u64,
    /// Next write sequence.
    next: u64,
}

impl Index {
    fn insert(&mut self, key: CacheKey, size: u64) {
        self.remove(&key);
        let seq = self.next;
        self.next += 1;
        self.entries.insert(key, (size, seq));
        self.order.insert(seq, key);
        self.total += size;
    }

    fn remove(&mut self, key: &CacheKey) -> bool {
        match self.entries.remove(key) {
            Some((size, seq)) => {
                self.order.remove(&seq);
                self.total -= size;
                true
            }
            None => false,
        }
    }

    /// Keys to evict so that `total` fits `max`, oldest first.
    fn over(&mut self, max: u64) -> Vec<CacheKey> {
        let mut out = Vec::new();
        while self.total > max {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            if let Some((size, _)) = self.entries.remove(&key) {
                self.total -= size;
            }
            out.push(key);
        }
        out
    }
}

/// The disk tier.
#[derive(Clone, Debug)]
pub struct DiskTier {
    /// The cache directory.
    dir: Arc<PathBuf>,
    /// Bytes of files kept at most.
    max_bytes: u64,
    /// What is on disk.
    index: Arc<Mutex<Index>>,
}

impl DiskTier {
    /// Opens (creating, mode 0700) `dir` and indexes the entries already there, oldest
    /// first. The entries hold answers, so the directory, its shards and its files are made
    /// private to weir's user (looser modes tightened); temporary files orphaned by a crash
    /// are removed.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<DiskTier> {
        crate::fsutil::private_dir(dir)?;
        let now = SystemTime::now();
        let mut found: Vec<(SystemTime, CacheKey, u64)> = Vec::new();
        crate::fsutil::tidy(dir);
        for shard in std::fs::read_dir(dir)?.flatten() {
            // Not following a link: a shard is a directory of ours.
            if !shard.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let shard = shard.path();
            crate::fsutil::private_dir(&shard)?;
            let mut tidied = crate::fsutil::Tidied::default();
            for file in std::fs::read_dir(&shard)?.flatten() {
                let Ok(meta) = file.metadata() else {
                    continue;
                };
                let path = file.path();
                if !tidied.entry(&path, &meta, now) {
                    continue; // a temporary file, removed if orphaned
                }
                let name = file.file_name();
                let Some(key) = name.to_str().and_then(parse_key) else {
                    continue; // a stranger: not ours to index
                };
                let written = meta.modified().unwrap_or(UNIX_EPOCH);
                found.push((written, key, meta.len()));
            }
            tidied.log(&shard);
        }
        found.sort();
        let mut index = Index::default();
        for (_, key, size) in found {
            index.insert(key, size);
        }
        let tier = DiskTier {
            dir: Arc::new(dir.to_path_buf()),
            max_bytes,
            index: Arc::new(Mutex::new(index)),
        };
        let evicted = lock(&tier.index).over(max_bytes);
        for key in evicted {
            let _ = std::fs::remove_file(tier.path(&key));
        }
        Ok(tier)
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        let hex = key.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Entries on disk now.
    pub fn len(&self) -> usize {
        lock(&self.index).entries.len()
    }

    /// True when the tier holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live entry for `key` and its remaining time to live. A file that fails its
    /// checksum, does not parse or has expired is removed and reads as a miss.
    pub async fn get(&self, key: &CacheKey) -> Option<(ChatResponse, Duration, String)> {
        if !lock(&self.index).entries.contains_key(key) {
            return None;
        }
        let path = self.path(key);
        let bytes = tokio::fs::read(&path).await.ok();
        let entry = bytes.as_deref().and_then(decode);
        let now = unix_ms();
        match entry {
            Some((expires, route, response)) if expires > now => {
                Some((response, remaining(expires, now), route))
            }
            other => {
                if other.is_none() {
                    tracing::warn!(path = %path.display(), "corrupted cache entry removed");
                }
                lock(&self.index).remove(key);
                let _ = tokio::fs::remove_file(&path).await;
                None
            }
        }
    }

    /// Stores `response` for `ttl`, off the async threads; evicts the oldest entries beyond
    /// the size bound.
    pub fn put(&self, key: CacheKey, route: &str, response: &ChatResponse, ttl: Duration) {
        let body = response_to_json(response).to_string();
        let expires = unix_ms().saturating_add(ttl.as_millis() as u64);
        let route = &route.as_bytes()[..route.len().min(u16::MAX as usize)];
        let mut rest = Vec::with_capacity(10 + route.len() + body.len());
        rest.extend_from_slice(&expires.to_le_bytes());
        rest.extend_from_slice(&(route.len() as u16).to_le_bytes());
        rest.extend_from_slice(route);
        rest.extend_from_slice(body.as_bytes());
        let mut file = Vec::with_capacity(HEADER + body.len());
        file.extend_from_slice(blake3::hash(&rest).as_bytes());
        file.extend_from_slice(&rest);
        let tier = self.clone();
        tokio::task::spawn_blocking(move || {
            let path = tier.path(&key);
            if let Err(err) = crate::fsutil::write_atomically(&path, &file) {
                tracing::warn!(path = %path.display(), error = %err, "cache entry not written");
                return;
            }
            let evicted = {
                let mut index = lock(&tier.index);
                index.insert(key, file.len() as u64);
                index.over(tier.max_bytes)
            };
            for key in evicted {
                let _ = std::fs::remove_file(tier.path(&key));
            }
        });
    }
}

impl DiskTier {
    /// Removes the entry for `key`; true when there was one.
    pub fn remove(&self, key: &CacheKey) -> bool {
        let had = lock(&self.index).remove(key);
        if had {
            let _ = std::fs::remove_file(self.path(key));
        }
        had
    }

    /// Removes every entry (of `route` only, when given: each file's route is read);
    /// returns how many. Blocking: call off the async threads.
    pub fn remove_all(&self, route: Option<&str>) -> usize {
        let keys: Vec<CacheKey> = lock(&self.index).entries.keys().copied().collect();
        let mut removed = 0;
        for key in keys {
            let path = self.path(&key);
            let matches = match route {
                None => true,
                Some(route) => std::fs::read(&path)
                    .ok()
                    .and_then(|bytes| decode_head(&bytes).map(|(_, r, _)| r == route))
                    // Unreadable or corrupted: not knowable, and useless anyway.
                    .unwrap_or(true),
            };
            if matches && self.remove(&key) {
                removed += 1;
            }
        }
        removed
    }
}

/// Checks and parses a file: (expiry, route, response), `None` when it is corrupted.
fn decode(bytes: &[u8]) -> Option<(u64, String, ChatResponse)> {
    let (expires, route, json) = decode_head(bytes)?;
    let response = parse_response(json)?;
    Some((expires, route, response))
}

/// Checks a file's hash and splits it into (expiry, route, JSON).
fn decode_head(bytes: &[u8]) -> Option<(u64, String, &[u8])> {
    if bytes.len() < HEADER + 2 {
        return None;
    }
    let (hash, rest) = bytes.split_at(32);
    if blake3::hash(rest).as_bytes() != hash {
        return None;
    }
    let expires = u64::from_le_bytes(rest[..8].try_into().ok()?);
    let len = usize::from(u16::from_le_bytes(rest[8..10].try_into().ok()?));
    let route = std::str::from_utf8(rest.get(10..10 + len)?)
        .ok()?
        .to_string();
    Some((expires, route, rest.get(10 + len..)?))
}

/// Time to live left at `now` of an entry that expires at `expires` (Unix ms; zero once
/// expired): one reading of the clock, so an entry expiring meanwhile cannot underflow.
fn remaining(expires: u64, now: u64) -> Duration {
    Duration::from_millis(expires.saturating_sub(now))
}

fn parse_key(name: &str) -> Option<CacheKey> {
    if name.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in name.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(CacheKey(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::{Choice, Content, Message};

    fn response(text: &str) -> ChatResponse {
        ChatResponse {
            id: "c".into(),
            model: "m".into(),
            created: 1,
            choices: vec![Choice {
                index: 0,
                message: Message {
                    role: "assistant".into(),
                    content: Some(Content::Text(text.into())),
                    name: None,
                    extra: "{}".into(),
                },
                finish_reason: Some("stop".into()),
                extra: "{}".into(),
            }],
            usage: None,
            extra: "{}".into(),
        }
    }

    #[test]
    fn the_remaining_ttl_reads_one_clock_and_never_underflows() {
        assert_eq!(remaining(1_500, 1_000), Duration::from_millis(500));
        assert_eq!(remaining(1_000, 1_000), Duration::ZERO);
        assert_eq!(remaining(1_000, 1_001), Duration::ZERO);
        assert_eq!(remaining(0, u64::MAX), Duration::ZERO);
    }

    #[tokio::test]
    async fn files_are_private_and_orphaned_temporaries_are_swept_at_open() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = std::env::temp_dir().join(format!("weir-disk-modes-{}", rand::random::<u64>()));
        let tier = DiskTier::open(&dir, 1 << 20).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let key = CacheKey([7; 32]);
        tier.put(key, "demo", &response("hi"), Duration::from_secs(60));
        for _ in 0..200 {
            if lock(&tier.index).entries.contains_key(&key) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let file = tier.path(&key);
        let shard = file.parent().unwrap().to_path_buf();
        assert_eq!((mode(&shard), mode(&file)), (0o700, 0o600));

        // An older weir's modes, and a temporary file orphaned by a crash an hour ago.
        let loose = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        loose(&file, 0o644);
        loose(&shard, 0o755);
        loose(&dir, 0o755);
        let orphan = file.with_extension("tmp42");
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::create(&orphan)
            .unwrap()
            .set_modified(old)
            .unwrap();

        let reopened = DiskTier::open(&dir, 1 << 20).unwrap();
        assert_eq!(reopened.len(), 1, "the orphan is not an entry");
        assert!(!orphan.exists(), "the orphan is removed");
        assert_eq!(
            (mode(&dir), mode(&shard), mode(&file)),
            (0o700, 0o700, 0o600)
        );
        assert!(reopened.get(&key).await.is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_size_bound_evicts_the_oldest_and_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("weir-disk-unit-{}", rand::random::<u64>()));
        let text = "x".repeat(1000);
        let tier = DiskTier::open(&dir, 3_500).unwrap();
        for i in 0..6u8 {
            tier.put(
                CacheKey([i; 32]),
                "demo",
                &response(&text),
                Duration::from_secs(60),
            );
            // Writes run on the blocking pool; let each land before the next.
            for _ in 0..100 {
                if lock(&tier.index).entries.contains_key(&CacheKey([i; 32])) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        assert!(lock(&tier.index).total <= 3_500);
        assert!(
            tier.get(&CacheKey([0; 32])).await.is_none(),
            "the oldest went first"
        );
        assert!(
            tier.get(&CacheKey([5; 32])).await.is_some(),
            "the newest stays"
        );
        let kept = tier.len();
        let reopened = DiskTier::open(&dir, 3_500).unwrap();
        assert_eq!(reopened.len(), kept);
        let (found, ttl, route) = reopened.get(&CacheKey([5; 32])).await.unwrap();
        assert_eq!(route, "demo");
        assert!(matches!(&found.choices[0].message.content, Some(Content::Text(t)) if *t == text));
        assert!(ttl <= Duration::from_secs(60));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
