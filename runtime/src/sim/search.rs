//! `POST /api/v2/.../collections/{id}/query`: a vector search in Chroma's v2 wire shape, so a
//! retrieval stage can be tested against the simulator's fault injection (the same dice as the
//! model endpoints: error rates, hangs, resets, latency) and against a real Chroma server with
//! one config.
//!
//! The answer is deterministic: `n_results` passages (default 10, at most
//! [`MAX_RESULTS`]) named after the collection path and the query, at distances 0.1, 0.2, ...:
//! `sim passage 1 for <8 hex of blake3(query_embeddings)>`.

use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sim::body::{self, SimBody};
use crate::sim::error::ApiError;

/// Most results one query returns.
pub const MAX_RESULTS: usize = 100;

/// The wire form (fields the sim reads).
#[derive(Deserialize)]
struct Query {
    /// One vector per query.
    query_embeddings: Vec<Vec<f32>>,
    /// Results per query.
    n_results: Option<u64>,
}

/// Whether `path` is a Chroma v2 query path.
pub fn is_query_path(path: &str) -> bool {
    path.starts_with("/api/v2/") && path.ends_with("/query")
}

/// Answers a received query body.
pub fn respond(bytes: &[u8]) -> Response<SimBody> {
    let query: Query = match serde_json::from_slice(bytes) {
        Ok(query) => query,
        Err(err) => {
            return body::error(&ApiError::InvalidRequest(format!(
                "could not parse the query body: {err}"
            )));
        }
    };
    if query.query_embeddings.is_empty() {
        return body::error(&ApiError::InvalidRequest(
            "`query_embeddings` must hold at least one vector".into(),
        ));
    }
    let n = query
        .n_results
        .map_or(10, |n| n.clamp(1, MAX_RESULTS as u64)) as usize;
    let (mut ids, mut documents, mut distances) = (Vec::new(), Vec::new(), Vec::new());
    for vector in &query.query_embeddings {
        let mut hasher = blake3::Hasher::new();
        for x in vector {
            hasher.update(&x.to_le_bytes());
        }
        let tag = hasher.finalize().to_hex();
        let tag = &tag.as_str()[..8];
        ids.push(
            (1..=n)
                .map(|i| format!("sim-{tag}-{i}"))
                .collect::<Vec<_>>(),
        );
        documents.push(
            (1..=n)
                .map(|i| format!("sim passage {i} for {tag}"))
                .collect::<Vec<_>>(),
        );
        distances.push((1..=n).map(|i| i as f64 / 10.0).collect::<Vec<_>>());
    }
    body::json(
        StatusCode::OK,
        &json!({
            "ids": ids,
            "documents": documents,
            "distances": distances,
            "embeddings": Value::Null,
            "metadatas": Value::Null,
            "uris": Value::Null,
            "include": ["documents", "distances"],
        }),
    )
}
