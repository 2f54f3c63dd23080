//! Chroma's query API (v2, `POST .../collections/<id>/query`) as far as this stage speaks it:
//! the body asking for the nearest documents to one embedding, and the passages read from the
//! answer.
//!
//! The answer holds one list per query embedding; this stage sends one, so it reads the first
//! list of each field:
//!
//! ```json
//! {"ids": [["a", "b"]], "documents": [["text a", null]], "distances": [[0.12, 0.4]]}
//! ```
//!
//! Chroma sorts each list nearest first; that order is kept. A document that is `null` (stored
//! without text) or blank is skipped. Other fields (`metadatas`, `embeddings`, `uris`,
//! `include`) are ignored.

use serde::{Deserialize, Serialize};

/// The fields asked of Chroma.
const INCLUDE: [&str; 2] = ["documents", "distances"];

/// The body of a query for the `n_results` documents nearest to `embedding`.
#[derive(Debug, Serialize)]
pub struct Query<'a> {
    /// One query embedding.
    pub query_embeddings: [&'a [f32]; 1],
    /// How many documents to return.
    pub n_results: u32,
    /// What to return of each: its text and its distance.
    pub include: [&'static str; 2],
}

impl<'a> Query<'a> {
    /// The query for the `top_k` documents nearest to `embedding`.
    pub fn new(embedding: &'a [f32], top_k: u32) -> Query<'a> {
        Query {
            query_embeddings: [embedding],
            n_results: top_k,
            include: INCLUDE,
        }
    }
}

/// One retrieved passage.
#[derive(Clone, Debug, PartialEq)]
pub struct Passage {
    /// The document's id in the collection, when the answer has it.
    pub id: Option<String>,
    /// The document's text.
    pub text: String,
    /// Its distance to the query (smaller is nearer), when the answer has it.
    pub distance: Option<f64>,
}

/// The fields of Chroma's answer this stage reads (each `null` when not included).
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    ids: Option<Vec<Vec<String>>>,
    #[serde(default)]
    documents: Option<Vec<Vec<Option<String>>>>,
    #[serde(default)]
    distances: Option<Vec<Vec<Option<f64>>>>,
}

/// The list of the first (the only) query embedding.
fn first<T>(lists: Option<Vec<Vec<T>>>) -> Option<Vec<T>> {
    lists.and_then(|lists| lists.into_iter().next())
}

/// The passages of Chroma's answer `body`, nearest first; the error is why it is not a query
/// answer (not JSON, or fields of the wrong shape).
pub fn passages(body: &[u8]) -> Result<Vec<Passage>, String> {
    let answer = match serde_json::from_slice(body).map_err(|err| err.to_string())? {
        object @ serde_json::Value::Object(_) => serde_json::from_value::<Answer>(object),
        _ => return Err("not a JSON object".to_string()),
    };
    let answer = answer.map_err(|err| err.to_string())?;
    let documents = first(answer.documents).unwrap_or_default();
    let ids = first(answer.ids).unwrap_or_default();
    let distances = first(answer.distances).unwrap_or_default();
    Ok(documents
        .into_iter()
        .enumerate()
        .filter_map(|(i, document)| {
            let text = document.filter(|text| !text.trim().is_empty())?;
            Some(Passage {
                id: ids.get(i).cloned(),
                text,
                distance: distances.get(i).copied().flatten(),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: serde_json::Value) -> Result<Vec<Passage>, String> {
        passages(value.to_string().as_bytes())
    }

    #[test]
    fn the_query_body_is_chromas() {
        let body = serde_json::to_value(Query::new(&[0.5, -1.0, 0.25], 3)).ok();
        assert_eq!(
            body,
            Some(json!({
                "query_embeddings": [[0.5, -1.0, 0.25]],
                "n_results": 3,
                "include": ["documents", "distances"],
            }))
        );
    }

    #[test]
    fn passages_in_order_with_ids_and_distances() {
        let answer = json!({
            "ids": [["a", "b", "c"]],
            "documents": [["Refunds take 5 days.", "Shipping is free.", "Call us."]],
            "distances": [[0.1, 0.2, 0.3]],
            "metadatas": [[null, {"k": "v"}, null]],
            "embeddings": null,
            "include": ["documents", "distances"],
        });
        let passages = parse(answer).unwrap_or_default();
        let texts: Vec<&str> = passages.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(
            texts,
            ["Refunds take 5 days.", "Shipping is free.", "Call us."]
        );
        assert_eq!(passages[1].id.as_deref(), Some("b"));
        assert_eq!(passages[2].distance, Some(0.3));
    }

    #[test]
    fn null_and_blank_documents_are_skipped() {
        let answer = json!({
            "ids": [["a", "b", "c", "d"]],
            "documents": [[null, "kept", "  ", "also kept"]],
            "distances": [[0.1, null, 0.3, 0.4]],
        });
        let passages = parse(answer).unwrap_or_default();
        assert_eq!(
            passages,
            [
                Passage {
                    id: Some("b".to_string()),
                    text: "kept".to_string(),
                    distance: None,
                },
                Passage {
                    id: Some("d".to_string()),
                    text: "also kept".to_string(),
                    distance: Some(0.4),
                },
            ]
        );
    }

    #[test]
    fn no_documents_is_no_passages() {
        for answer in [
            json!({"ids": [[]], "documents": [[]], "distances": [[]]}),
            json!({"ids": [["a"]], "documents": null, "distances": [[0.1]]}),
            json!({"ids": [["a"]]}),
            json!({"ids": [], "documents": [], "distances": []}),
            json!({}),
        ] {
            assert_eq!(parse(answer.clone()), Ok(Vec::new()), "{answer}");
        }
    }

    #[test]
    fn missing_ids_and_distances_do_not_matter() {
        let passages = parse(json!({"documents": [["only text"]]})).unwrap_or_default();
        assert_eq!(
            passages,
            [Passage {
                id: None,
                text: "only text".to_string(),
                distance: None,
            }]
        );
    }

    #[test]
    fn malformed_answers_are_errors() {
        assert!(passages(b"<html>502 Bad Gateway</html>").is_err());
        assert!(passages(b"").is_err());
        for answer in [
            json!([]),
            json!({"documents": "text"}),
            json!({"documents": ["flat", "list"]}),
            json!({"documents": [[1, 2]]}),
            json!({"documents": [["x"]], "ids": [[7]]}),
            json!({"documents": [["x"]], "distances": [["near"]]}),
        ] {
            assert!(parse(answer.clone()).is_err(), "{answer}");
        }
    }
}
