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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;
use tokio::time::Instant;

use super::{CacheKey, request_key};
use crate::sync::lock;
use crate::wit::ChatRequest;

/// Dimensions of a local embedding.
const DIMS: usize = 1024;
/// Entries compared per namespace at most (oldest dropped first).
const MAX_PER_NAMESPACE: usize = 256;
/// Namespaces kept at most.
const MAX_NAMESPACES: u64 = 10_000;

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

/// Embeddings by namespace.
#[derive(Clone)]
pub struct SemanticIndex {
    /// Namespace → remembered requests, newest last.
    namespaces: Cache<CacheKey, Arc<Mutex<Vec<Remembered>>>>,
}

impl Default for SemanticIndex {
    fn default() -> Self {
        SemanticIndex {
            namespaces: Cache::builder().max_capacity(MAX_NAMESPACES).build(),
        }
    }
}

impl SemanticIndex {
    /// The exact key of the most similar live entry in `namespace` at or above `threshold`,
    /// with its similarity.
    pub fn nearest(
        &self,
        namespace: &CacheKey,
        vector: &[f32],
        threshold: f32,
    ) -> Option<(CacheKey, f32)> {
        let entries = self.namespaces.get(namespace)?;
        let entries = lock(&entries);
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

    /// Remembers that `exact` answers the request probed as (`namespace`, `vector`).
    pub fn remember(&self, namespace: CacheKey, vector: Vec<f32>, exact: CacheKey, ttl: Duration) {
        let entries = self
            .namespaces
            .get_with(namespace, || Arc::new(Mutex::new(Vec::new())));
        let mut entries = lock(&entries);
        let now = Instant::now();
        entries.retain(|e| e.expires > now && e.exact != exact);
        if entries.len() >= MAX_PER_NAMESPACE {
            entries.remove(0);
        }
        entries.push(Remembered {
            vector,
            exact,
            expires: now + ttl,
        });
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
}
