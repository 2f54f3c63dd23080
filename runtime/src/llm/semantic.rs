//! The semantic probe: the namespace and the embedding of a request's last user message,
//! for the cache's semantic tier, and reading vectors out of an embeddings response.

use super::embedding::EmbedCall;
use super::{CallSite, LlmStep, RouteStep, StepError};
use crate::cache::{CacheKey, embed_local, probe};
use crate::wit::ChatRequest;

impl LlmStep {
    /// The semantic namespace of `request` and the embedding of its last user message, from
    /// the local embedder or the route's embeddings target. An embeddings target that fails
    /// costs the request its semantic lookup, never its answer. The target's call is billed
    /// to the request at `site` like any LLM call and counts against its limit on calls; it
    /// is skipped (a miss) when it would leave none for the request's own call.
    pub(super) async fn semantic_probe(
        &self,
        step: &RouteStep,
        site: CallSite<'_>,
        tenant: Option<&str>,
        target: Option<usize>,
        request: &ChatRequest,
    ) -> Option<(CacheKey, Vec<f32>)> {
        let route = site.route;
        let Some(index) = target else {
            let (namespace, text) = probe(route, tenant, "local", request)?;
            return Some((namespace, embed_local(&text)));
        };
        let name = self.router.targets().get(index)?.upstream.name.clone();
        let name: &str = &name;
        let (namespace, text) = probe(route, tenant, &format!("target:{name}"), request)?;
        let inputs = [text];
        let call = EmbedCall {
            site,
            model: None,
            inputs: &inputs,
            only: Some(index),
            spare: 1,
            body: None,
            deadline: None,
        };
        match self.embeddings(step, call).await {
            Ok(value) => match first_embedding(&value) {
                Some(vector) => Some((namespace, normalised(vector))),
                None => {
                    tracing::warn!(
                        route,
                        target = name,
                        "the embeddings target answered no vector; semantic lookup skipped"
                    );
                    None
                }
            },
            // The request's limits leave no room for the probe: a miss, not a failure.
            Err(StepError::Cost(err)) => {
                tracing::debug!(route, error = %err, "semantic lookup skipped");
                None
            }
            Err(err) => {
                tracing::warn!(route, target = name, error = %err, "the embeddings target failed; semantic lookup skipped");
                None
            }
        }
    }
}

/// The vectors of an OpenAI-shaped embeddings response, in order.
pub(super) fn embeddings_of(value: &serde_json::Value) -> Vec<Vec<f32>> {
    value["data"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    item["embedding"]
                        .as_array()
                        .map(|v| {
                            v.iter()
                                .filter_map(|x| x.as_f64())
                                .map(|x| x as f32)
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The first non-empty vector of an embeddings response.
fn first_embedding(value: &serde_json::Value) -> Option<Vec<f32>> {
    embeddings_of(value)
        .into_iter()
        .next()
        .filter(|v| !v.is_empty())
}

/// `vector` scaled to unit length, so a dot product is the cosine similarity.
fn normalised(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}
