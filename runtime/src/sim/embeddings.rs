//! `POST /v1/embeddings`: deterministic unit vectors derived from the text.
//!
//! Each vector is blake3's extendable output over the *normalised* text (lowercased, runs of
//! whitespace collapsed, trimmed), so texts that differ only in case or spacing embed
//! identically and any other change gives an unrelated vector — what a semantic cache test
//! needs from an embedding model without shipping one.

use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sim::base64;
use crate::sim::body::{self, SimBody};
use crate::sim::error::ApiError;
use crate::sim::state::SimState;
use crate::sim::tokens;

/// Vector length when the request gives no `dimensions`.
pub const DEFAULT_DIMENSIONS: usize = 64;

/// Largest `dimensions` accepted.
pub const MAX_DIMENSIONS: usize = 4096;

/// Most inputs in one request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// Most numbers in one response (inputs × dimensions, 4 Mi, about 45 MB of JSON).
pub const MAX_VALUES: usize = 4 * 1024 * 1024;

/// Domain separation for the vectors' hash, so they are unrelated to other sim digests.
const CONTEXT: &str = "weir sim embeddings v1";

/// An embeddings request, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingsRequest {
    /// The requested model, if any.
    pub model: Option<String>,
    /// The texts, in order.
    pub inputs: Vec<String>,
    /// Vector length.
    pub dimensions: usize,
    /// Whether to answer base64 little-endian f32 instead of JSON numbers.
    pub base64: bool,
}

/// The wire form.
#[derive(Deserialize)]
struct WireRequest {
    /// Requested model.
    model: Option<String>,
    /// A string or an array of strings.
    input: Value,
    /// Requested vector length.
    dimensions: Option<u64>,
    /// `float` (default) or `base64`.
    encoding_format: Option<String>,
}

impl EmbeddingsRequest {
    /// Parses and validates a request body; any problem is a 400.
    pub fn parse(body: &[u8]) -> Result<EmbeddingsRequest, ApiError> {
        let invalid = |m: String| ApiError::InvalidRequest(m);
        let wire: WireRequest = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("could not parse the embeddings request body: {e}")))?;
        let inputs = match wire.input {
            Value::String(s) => vec![s],
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(invalid(
                        "the sim embeds strings only ('input' items)".into(),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                return Err(invalid(
                    "'input' must be a string or an array of strings".into(),
                ));
            }
        };
        if inputs.is_empty() || inputs.len() > MAX_INPUTS {
            return Err(invalid(format!(
                "'input' must hold 1 to {MAX_INPUTS} strings"
            )));
        }
        let dimensions = match wire.dimensions {
            None => DEFAULT_DIMENSIONS,
            Some(d) => usize::try_from(d)
                .ok()
                .filter(|d| (1..=MAX_DIMENSIONS).contains(d))
                .ok_or_else(|| invalid(format!("'dimensions' must be 1 to {MAX_DIMENSIONS}")))?,
        };
        if inputs.len() * dimensions > MAX_VALUES {
            return Err(invalid(format!(
                "inputs × dimensions must be at most {MAX_VALUES}"
            )));
        }
        let base64 = match wire.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(invalid(format!(
                    "'encoding_format' must be float or base64, got {other}"
                )));
            }
        };
        Ok(EmbeddingsRequest {
            model: wire.model,
            inputs,
            dimensions,
            base64,
        })
    }
}

/// Lowercases, collapses whitespace runs to one space and trims.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// The unit-length vector of `text`.
pub fn embed(text: &str, dimensions: usize) -> Vec<f32> {
    let mut hasher = blake3::Hasher::new_derive_key(CONTEXT);
    hasher.update(normalize(text).as_bytes());
    let mut bytes = vec![0u8; dimensions * 4];
    hasher.finalize_xof().fill(&mut bytes);
    let mut v: Vec<f64> = bytes
        .chunks_exact(4)
        .map(|c| f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])) / f64::from(u32::MAX))
        .map(|x| x * 2.0 - 1.0)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else if let Some(first) = v.first_mut() {
        *first = 1.0;
    }
    v.into_iter().map(|x| x as f32).collect()
}

/// Answers an embeddings request.
pub fn respond(request: &EmbeddingsRequest, state: &SimState) -> Response<SimBody> {
    let data: Vec<Value> = request
        .inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = embed(text, request.dimensions);
            let embedding = if request.base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::from(base64::encode(&bytes))
            } else {
                Value::from(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let prompt_tokens: u64 = request.inputs.iter().map(|t| tokens::count(t)).sum();
    let prompt_tokens = prompt_tokens.max(1);
    state.stats.bill_embeddings(prompt_tokens);
    let response = json!({
        "object": "list",
        "data": data,
        "model": state.response_model(request.model.as_deref()),
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    });
    body::json(StatusCode::OK, &response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_unit_length_and_deterministic() {
        let a = embed("Hello world", 64);
        assert_eq!(a.len(), 64);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        assert_eq!(a, embed("Hello world", 64));
    }

    #[test]
    fn case_and_spacing_do_not_matter_but_words_do() {
        assert_eq!(embed("Hello   World\n", 32), embed(" hello world", 32));
        assert_ne!(embed("hello world", 32), embed("hello worlds", 32));
        assert_eq!(normalize("  A\tB  c "), "a b c");
    }

    #[test]
    fn parses_string_or_array_and_options() {
        let one = EmbeddingsRequest::parse(br#"{"model":"e","input":"x"}"#).expect("valid");
        assert_eq!(
            (one.inputs.len(), one.dimensions, one.base64),
            (1, 64, false)
        );
        let many = EmbeddingsRequest::parse(
            br#"{"input":["a","b"],"dimensions":8,"encoding_format":"base64"}"#,
        )
        .expect("valid");
        assert_eq!(
            (many.inputs.len(), many.dimensions, many.base64),
            (2, 8, true)
        );
    }

    #[test]
    fn rejects_bad_requests() {
        for body in [
            &b"nope"[..],
            br#"{"input":[]}"#,
            br#"{"input":[1,2,3]}"#,
            br#"{"input":"x","dimensions":0}"#,
            br#"{"input":"x","dimensions":4097}"#,
            br#"{"input":"x","encoding_format":"hex"}"#,
            br#"{"model":"e"}"#,
        ] {
            assert!(EmbeddingsRequest::parse(body).is_err());
        }
    }
}
