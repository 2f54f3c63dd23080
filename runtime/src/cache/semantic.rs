//! The semantic tier (opt-in per route): a request whose last user message is *nearly* the
//! same as a cached one — a typo, other casing or punctuation — is answered with that entry.
//!
//! Safety first: everything except the last user message must match exactly. The namespace
//! is the exact cache key of the request with that message blanked, so the model, the system
//! prompt, every earlier turn, the sampling parameters and the tools are all part of it; only
//! the last user message is compared, by cosine similarity of its embedding against a
//! threshold. The embedder is the built-in local one (hashed character 3-grams: no network,
//! no model), which catches typos and re-casing but not true paraphrases, or a configured
//! OpenAI-compatible embeddings target (the `llm` step calls it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;
use tokio::time::Instant;

use super::{CacheKey, request_key, weigh};
use crate::sync::lock;
use crate::wit::ChatRequest;

/// Dimensions of a local embedding.
const DIMS: usize = 1024;
/// Dimensions an embeddings target's vector may have at most (the largest common models
/// have 3,072; a vector with more is a broken or hostile reply, refused rather than stored).
const MAX_DIMS: usize = 8192;
/// Entries compared per namespace at most (oldest dropped first).
const MAX_PER_NAMESPACE: usize = 256;
/// Bytes an entry is charged for on top of its vector's.
const ENTRY_OVERHEAD: usize = 64;

/// A local embedding of `text`: lowercased, punctuation dropped, whitespace collapsed, then
/// hashed character 3-grams, L2-normalised.
pub fn embed_local(text: &str) -> Vec<f32> {
    let normalised: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let padded = format!(
        " {} ",
        normalised.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    let chars: Vec<char> = padded.chars().collect();
    let mut v = vec![0f32; DIMS];
    for gram in chars.windows(3) {
        let mut buf = [0u8; 12];
        let mut len = 0;
        for c in gram {
            len += c.encode_utf8(&mut buf[len..]).len();
        }
        let hash = blake3::hash(&buf[..len]);
        let bucket = u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap_or([0; 8]));
        v[(bucket % DIMS as u64) as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The position and text of the last user message, if any.
fn last_user(request: &ChatRequest) -> Option<(usize, String)> {
    let (index, message) = request
        .messages
        .iter()
        .enumerate()
        .rev()
        .find(|(_, m)| m.role == "user")?;
    let text = message.content.as_ref()?.text().into_owned();
    Some((index, text))
}

/// Where a request would be looked up: its namespace and the text of its last user message
/// (to embed). `None` when it has no user message to compare. `embedder` names the embedding
/// space (`"local"`, or the embeddings target), so vectors of two embedders never meet.
pub fn probe(
    route: &str,
    tenant: Option<&str>,
    embedder: &str,
    request: &ChatRequest,
) -> Option<(CacheKey, String)> {
    let (index, text) = last_user(request)?;
    let mut blanked = request.clone();
    blanked.messages[index].content = None;
    // Mark the blank so a request that really had an empty message is another namespace.
    blanked.messages[index].extra =
        serde_json::json!({ "weir_semantic_slot": embedder }).to_string();
    Some((request_key(route, tenant, &blanked), text))
}

/// One remembered request: its embedding and the exact entry it points to.
#[derive(Debug)]
struct Remembered {
    /// Embedding of its last user message.
    vector: Vec<f32>,
    /// The exact cache key of the full request.
    exact: CacheKey,
    /// When it stops counting.
    expires: Instant,
}

impl Remembered {
    /// Bytes it is charged for.
    fn bytes(&self) -> usize {
        self.vector.len() * std::mem::size_of::<f32>() + ENTRY_OVERHEAD
    }
}

/// The requests remembered in one namespace, with what they weigh.
#[derive(Debug, Default)]
struct Namespace {
    /// Remembered requests, newest last; all their vectors have one dimension.
    entries: Mutex<Vec<Remembered>>,
    /// Bytes of `entries`, kept up to date under its lock and read by the weigher.
    bytes: AtomicUsize,
}

/// Why a vector is neither looked up nor remembered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
enum BadVector {
    /// It has no dimensions.
    #[error("an empty vector")]
    Empty,
    /// It has more than [`MAX_DIMS`].
    #[error("{0} dimensions (at most {MAX_DIMS})")]
    TooLong(usize),
    /// Its dimension differs from the namespace's vectors'.
    #[error("{got} dimensions where this namespace has {expected}")]
    Mismatched {
        /// The namespace's dimension.
        expected: usize,
        /// The vector's.
        got: usize,
    },
}

/// Checks a vector's dimension on its own: not empty, at most [`MAX_DIMS`].
fn check(vector: &[f32]) -> Result<(), BadVector> {
    match vector.len() {
        0 => Err(BadVector::Empty),
        n if n > MAX_DIMS => Err(BadVector::TooLong(n)),
        _ => Ok(()),
    }
}

/// Embeddings by namespace, bounded by bytes (vectors plus a small overhead per entry; least
/// recently used namespaces evicted first) and by 256 entries a namespace.
#[derive(Clone)]
pub struct SemanticIndex {
    /// Namespace → remembered requests.
    namespaces: Cache<CacheKey, Arc<Namespace>>,
}

impl Default for SemanticIndex {
    fn default() -> Self {
        SemanticIndex::new(crate::config::CacheSettings::default().semantic_max_bytes)
    }
}

impl SemanticIndex {
    /// An empty index holding at most `max_bytes`.
    pub fn new(max_bytes: u64) -> SemanticIndex {
        SemanticIndex {
            namespaces: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_key: &CacheKey, namespace: &Arc<Namespace>| {
                    weigh::as_weight(namespace.bytes.load(Ordering::Relaxed) + ENTRY_OVERHEAD)
                })
                .build(),
        }
    }

    /// The exact key of the most similar live entry in `namespace` at or above `threshold`,
    /// with its similarity. A vector that cannot be compared (empty, longer than 8,192
    /// dimensions, or of another dimension than the namespace's) is a miss, with a warning:
    /// a broken embeddings reply costs the lookup, never the answer.
    pub fn nearest(
        &self,
        namespace: &CacheKey,
        vector: &[f32],
        threshold: f32,
    ) -> Option<(CacheKey, f32)> {
        if let Err(bad) = check(vector) {
            tracing::warn!(reason = %bad, "embedding refused; semantic lookup skipped");
            return None;
        }
        let entries = self.namespaces.get(namespace)?;
        let entries = lock(&entries.entries);
        if let Some(first) = entries.first()
            && first.vector.len() != vector.len()
        {
            let bad = BadVector::Mismatched {
                expected: first.vector.len(),
                got: vector.len(),
            };
            tracing::warn!(reason = %bad, "embedding refused; semantic lookup skipped");
            return None;
        }
        let now = Instant::now();
        entries
            .iter()
            .filter(|e| e.expires > now)
            .map(|e| (e.exact, cosine(&e.vector, vector)))
            .filter(|(_, s)| *s >= threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.namespaces.invalidate_all();
    }

    /// Remembers that `exact` answers the request probed as (`namespace`, `vector`). A vector
    /// [`nearest`](Self::nearest) would refuse on its own is not stored; one of another
    /// dimension than the namespace's replaces its entries (they came from another
    /// embedding space, such as an embeddings target whose model changed).
    pub fn remember(&self, namespace: CacheKey, vector: Vec<f32>, exact: CacheKey, ttl: Duration) {
        if check(&vector).is_err() {
            return;
        }
        let slot = self.namespaces.get_with(namespace, Arc::default);
        {
            let mut entries = lock(&slot.entries);
            let now = Instant::now();
            let dims = vector.len();
            entries.retain(|e| e.expires > now && e.exact != exact && e.vector.len() == dims);
            if entries.len() >= MAX_PER_NAMESPACE {
                entries.remove(0);
            }
            entries.push(Remembered {
                vector,
                exact,
                expires: now + ttl,
            });
            let bytes = entries.iter().map(Remembered::bytes).sum();
            slot.bytes.store(bytes, Ordering::Relaxed);
        }
        // Insert again so the bound sees the namespace's new weight.
        self.namespaces.insert(namespace, slot);
    }

    /// Bytes held now, as the bound counts them (for tests).
    #[cfg(test)]
    fn weighted_size(&self) -> u64 {
        self.namespaces.run_pending_tasks();
        self.namespaces.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(a: &str, b: &str) -> f32 {
        cosine(&embed_local(a), &embed_local(b))
    }

    #[test]
    fn typos_and_casing_stay_close_and_other_questions_do_not() {
        let q = "What is the capital of France?";
        assert!(sim(q, "WHAT IS THE CAPITAL OF FRANCE") > 0.99);
        assert!(sim(q, "what is teh capital of france") > 0.85);
        assert!(sim(q, "What's the capital of France") > 0.85);
        assert!(sim(q, "What is the capital of Germany?") < 0.85);
        assert!(sim(q, "What is the population of France?") < 0.85);
        assert!(sim(q, "How tall is the Eiffel tower?") < 0.5);
    }

    fn key(n: u8) -> CacheKey {
        let request = ChatRequest::hi(&n.to_string());
        request_key("r", None, &request)
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn vectors_over_the_dimension_cap_or_of_another_dimension_are_misses() {
        let index = SemanticIndex::new(1 << 20);
        let v = embed_local("What is the capital of France?");
        index.remember(key(0), v.clone(), key(1), TTL);
        assert_eq!(
            index.nearest(&key(0), &v, 0.9).map(|(k, _)| k),
            Some(key(1))
        );
        // Another dimension: a miss, not a wrong similarity over the shorter prefix.
        assert_eq!(index.nearest(&key(0), &v[..512], 0.0), None);
        assert_eq!(index.nearest(&key(0), &[], 0.0), None);
        let huge = vec![0.5; MAX_DIMS + 1];
        assert_eq!(index.nearest(&key(0), &huge, 0.0), None);
        // Nor are such vectors stored.
        index.remember(key(2), huge.clone(), key(3), TTL);
        assert_eq!(
            index.weighted_size(),
            (v.len() * 4 + 2 * ENTRY_OVERHEAD) as u64
        );
        assert_eq!(check(&vec![0.5; MAX_DIMS]), Ok(()));
        assert_eq!(check(&huge), Err(BadVector::TooLong(MAX_DIMS + 1)));
    }

    #[test]
    fn a_vector_of_another_dimension_replaces_the_namespace() {
        let index = SemanticIndex::new(1 << 20);
        let v = embed_local("hello there");
        index.remember(key(0), v.clone(), key(1), TTL);
        let short = vec![1.0; 16];
        index.remember(key(0), short.clone(), key(2), TTL);
        assert_eq!(index.nearest(&key(0), &v, 0.0), None);
        assert_eq!(
            index.nearest(&key(0), &short, 0.9).map(|(k, _)| k),
            Some(key(2))
        );
    }

    #[test]
    fn the_index_is_bounded_by_bytes_across_namespaces() {
        // 64 KiB: room for about 15 local vectors of 4 KiB.
        let index = SemanticIndex::new(64 << 10);
        for n in 0..200u8 {
            let v = embed_local(&format!("question number {n}"));
            index.remember(key(n), v, key(n.wrapping_add(1)), TTL);
        }
        let held = index.weighted_size();
        assert!(held <= 64 << 10, "{held} bytes held");
        assert!(held > 0);
    }
}
