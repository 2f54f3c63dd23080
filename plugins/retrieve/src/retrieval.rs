//! One retrieval: embed the question, query the service, add the passages that fit.
//!
//! Written against [`Backend`] (the host calls it needs) rather than the SDK's functions, so
//! the whole flow, its failures included, runs in native tests. Every failure is
//! [`StageError::Fail`] with a message that says which step failed, so the stage's
//! `on_error` policy (`fail`, `skip`, `degrade`) decides what the client sees.

use weir_sdk::service::{ServiceError, ServiceResponse};
use weir_sdk::{ChatRequest, LlmError, StageError};

use crate::chroma::{self, Query};
use crate::context;
use crate::settings::Settings;

/// Longest excerpt of a failed answer's body quoted in an error, characters.
const MAX_QUOTED_BODY: usize = 200;

/// The host calls a retrieval makes.
pub trait Backend {
    /// Embeds `inputs` with `model` (the host's `embed`).
    fn embed(&mut self, model: &str, inputs: &[String]) -> Result<Vec<Vec<f32>>, LlmError>;
    /// POSTs `query` as JSON to `path` on `service`.
    fn query(
        &mut self,
        service: &str,
        path: &str,
        query: &Query<'_>,
    ) -> Result<ServiceResponse, ServiceError>;
    /// Tokens `text` takes for `model` (the host's `count-tokens`).
    fn count_tokens(&mut self, model: &str, text: &str) -> u32;
}

/// What a retrieval added to the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Added {
    /// Passages the service returned (with text).
    pub found: usize,
    /// Passages added (those within the token budget).
    pub added: usize,
}

/// Adds to `request` the passages the service finds for its last user message. `Ok(None)`
/// when nothing was added: no user text to search with, or no passage (found, or within the
/// budget).
pub fn augment(
    request: &mut ChatRequest,
    settings: &Settings,
    backend: &mut impl Backend,
) -> Result<Option<Added>, StageError> {
    let Some(question) = context::question(&request.messages) else {
        return Ok(None);
    };
    let embedding = embed(settings, backend, question)?;
    let passages = search(settings, backend, &embedding)?;
    let model = settings.count_model(&request.model).to_string();
    let chosen = context::select(&passages, settings.max_context_tokens, |text| {
        backend.count_tokens(&model, text)
    });
    if chosen.is_empty() {
        return Ok(None);
    }
    let added = Added {
        found: passages.len(),
        added: chosen.len(),
    };
    context::insert(&mut request.messages, context::render(&chosen));
    Ok(Some(added))
}

/// The question's embedding.
fn embed(
    settings: &Settings,
    backend: &mut impl Backend,
    question: String,
) -> Result<Vec<f32>, StageError> {
    let model = &settings.embed_model;
    let vectors = backend.embed(model, &[question]).map_err(|err| {
        StageError::fail(format!(
            "retrieve: embedding the question with `{model}` failed: {} {}: {}",
            err.status, err.code, err.message
        ))
    })?;
    vectors
        .into_iter()
        .next()
        .filter(|vector| !vector.is_empty())
        .ok_or_else(|| StageError::fail(format!("retrieve: `{model}` returned no embedding")))
}

/// The passages the service finds nearest to `embedding`.
fn search(
    settings: &Settings,
    backend: &mut impl Backend,
    embedding: &[f32],
) -> Result<Vec<chroma::Passage>, StageError> {
    let service = &settings.service;
    let query = Query::new(embedding, settings.top_k);
    let answer = backend
        .query(service, &settings.path, &query)
        .map_err(|err| StageError::fail(format!("retrieve: {err}")))?;
    if !answer.is_success() {
        return Err(StageError::fail(format!(
            "retrieve: service `{service}` answered {}: {}",
            answer.status,
            failure_message(&answer)
        )));
    }
    chroma::passages(&answer.body).map_err(|err| {
        StageError::fail(format!(
            "retrieve: the answer of service `{service}` is not a Chroma query result: {err}"
        ))
    })
}

/// What a failed answer says: the host's OpenAI-shaped `error.message`, Chroma's own
/// `message`, or the start of the body.
fn failure_message(answer: &ServiceResponse) -> String {
    if let Some(message) = answer.error_message() {
        return message;
    }
    let chroma = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|body| body.get("message")?.as_str().map(str::to_string));
    if let Some(message) = chroma {
        return message;
    }
    let text = answer.text();
    let text = text.trim();
    match text.char_indices().nth(MAX_QUOTED_BODY) {
        _ if text.is_empty() => "(empty body)".to_string(),
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use weir_sdk::Message;
    use weir_sdk::testing::fail_message;

    use super::*;

    /// A backend with canned answers that records what it was asked.
    struct Fake {
        embedding: Result<Vec<Vec<f32>>, LlmError>,
        answer: Result<ServiceResponse, ServiceError>,
        embedded: Vec<(String, Vec<String>)>,
        queried: Vec<(String, String, Value)>,
        counted_with: Vec<String>,
    }

    impl Fake {
        fn answering(status: u16, body: Value) -> Fake {
            Fake {
                embedding: Ok(vec![vec![0.25, 0.5]]),
                answer: Ok(ServiceResponse {
                    status,
                    headers: Vec::new(),
                    body: body.to_string().into_bytes(),
                }),
                embedded: Vec::new(),
                queried: Vec::new(),
                counted_with: Vec::new(),
            }
        }
    }

    impl Backend for Fake {
        fn embed(&mut self, model: &str, inputs: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
            self.embedded.push((model.to_string(), inputs.to_vec()));
            self.embedding.clone()
        }

        fn query(
            &mut self,
            service: &str,
            path: &str,
            query: &Query<'_>,
        ) -> Result<ServiceResponse, ServiceError> {
            let body = serde_json::to_value(query).unwrap_or_default();
            self.queried
                .push((service.to_string(), path.to_string(), body));
            self.answer.clone()
        }

        /// One token per word.
        fn count_tokens(&mut self, model: &str, text: &str) -> u32 {
            self.counted_with.push(model.to_string());
            text.split_whitespace().count() as u32
        }
    }

    fn settings() -> Settings {
        Settings {
            service: "chroma".to_string(),
            path: "/api/v2/collections/c1/query".to_string(),
            embed_model: "embedder".to_string(),
            top_k: 2,
            max_context_tokens: 6,
            count_model: None,
        }
    }

    fn request() -> ChatRequest {
        ChatRequest::new(
            "gpt-x",
            vec![
                Message::system("Be brief."),
                Message::user("How long do refunds take?"),
            ],
        )
    }

    fn found(documents: Value) -> Value {
        json!({"ids": [["a", "b", "c"]], "documents": [documents], "distances": [[0.1, 0.2, 0.3]]})
    }

    #[test]
    fn passages_reach_the_request_before_the_question() {
        let mut fake = Fake::answering(
            200,
            found(json!([
                "Refunds take 5 days.",
                "Ask support.",
                "Too far down to fit."
            ])),
        );
        let mut request = request();
        let added = augment(&mut request, &settings(), &mut fake);
        assert_eq!(added.ok(), Some(Some(Added { found: 3, added: 2 })));
        assert_eq!(
            fake.embedded,
            [(
                "embedder".to_string(),
                vec!["How long do refunds take?".to_string()]
            )]
        );
        assert_eq!(
            fake.queried,
            [(
                "chroma".to_string(),
                "/api/v2/collections/c1/query".to_string(),
                json!({"query_embeddings": [[0.25, 0.5]], "n_results": 2, "include": ["documents", "distances"]}),
            )]
        );
        assert!(fake.counted_with.iter().all(|model| model == "gpt-x"));
        let texts: Vec<String> = request.messages.iter().map(Message::text).collect();
        assert_eq!(
            texts,
            [
                "Be brief.",
                "Use the following retrieved passages to answer.\n\n[1] Refunds take 5 days.\n\n[2] Ask support.",
                "How long do refunds take?",
            ]
        );
        assert_eq!(request.messages[1].role, "system");
    }

    #[test]
    fn the_count_model_is_configurable() {
        let mut fake = Fake::answering(200, found(json!(["short"])));
        let settings = Settings {
            count_model: Some("gpt-4o".to_string()),
            ..settings()
        };
        assert!(augment(&mut request(), &settings, &mut fake).is_ok());
        assert_eq!(fake.counted_with, ["gpt-4o"]);
    }

    #[test]
    fn nothing_to_add_leaves_the_request_alone() {
        for documents in [
            json!([]),
            json!([null, null]),
            json!(["far too many words for it"]),
        ] {
            let mut fake = Fake::answering(200, found(documents.clone()));
            let mut request = request();
            let settings = Settings {
                max_context_tokens: 3,
                ..settings()
            };
            assert_eq!(augment(&mut request, &settings, &mut fake).ok(), Some(None));
            assert_eq!(request.messages.len(), 2, "{documents}");
        }
        // No user text: no embedding, no query.
        let mut fake = Fake::answering(200, found(json!(["x"])));
        let mut request = ChatRequest::new("gpt-x", vec![Message::system("rules")]);
        assert_eq!(
            augment(&mut request, &settings(), &mut fake).ok(),
            Some(None)
        );
        assert!(fake.embedded.is_empty() && fake.queried.is_empty());
    }

    #[test]
    fn an_embedding_error_fails_the_stage() {
        let mut fake = Fake::answering(200, found(json!(["x"])));
        fake.embedding = Err(LlmError {
            status: 429,
            code: "budget_exceeded".to_string(),
            message: "the budget is spent".to_string(),
        });
        assert_eq!(
            fail_message(augment(&mut request(), &settings(), &mut fake)),
            "retrieve: embedding the question with `embedder` failed: 429 budget_exceeded: the \
             budget is spent"
        );
        assert!(fake.queried.is_empty());
        fake.embedding = Ok(vec![]);
        assert_eq!(
            fail_message(augment(&mut request(), &settings(), &mut fake)),
            "retrieve: `embedder` returned no embedding"
        );
    }

    #[test]
    fn a_transport_error_fails_the_stage() {
        let mut fake = Fake::answering(200, json!({}));
        fake.answer = Err(ServiceError::Denied {
            service: "chroma".to_string(),
        });
        assert_eq!(
            fail_message(augment(&mut request(), &settings(), &mut fake)),
            "retrieve: service `chroma` is not granted to this stage (HTTP-request-denied)"
        );
        fake.answer = Err(ServiceError::Timeout {
            service: "chroma".to_string(),
            detail: "connection-timeout".to_string(),
        });
        assert_eq!(
            fail_message(augment(&mut request(), &settings(), &mut fake)),
            "retrieve: service `chroma` timed out (connection-timeout)"
        );
    }

    #[test]
    fn an_error_status_fails_the_stage_with_what_the_answer_says() {
        let host_error = json!({"error": {
            "message": "service chroma: every upstream failed",
            "type": "server_error",
            "code": "upstream_error",
        }});
        let mut fake = Fake::answering(503, host_error);
        assert_eq!(
            fail_message(augment(&mut request(), &settings(), &mut fake)),
            "retrieve: service `chroma` answered 503: service chroma: every upstream failed"
        );
        let chroma_error =
            json!({"error": "NotFoundError", "message": "Collection c1 does not exist."});
        let mut fake = Fake::answering(404, chroma_error);
        assert_eq!(
            fail_message(augment(&mut request(), &settings(), &mut fake)),
            "retrieve: service `chroma` answered 404: Collection c1 does not exist."
        );
        let mut fake = Fake::answering(500, json!("x".repeat(500)));
        let message = fail_message(augment(&mut request(), &settings(), &mut fake));
        assert!(message.ends_with('…') && message.len() < 300, "{message}");
    }

    #[test]
    fn a_malformed_answer_fails_the_stage() {
        let mut fake = Fake::answering(200, json!({"documents": "not lists"}));
        let message = fail_message(augment(&mut request(), &settings(), &mut fake));
        assert!(
            message.starts_with(
                "retrieve: the answer of service `chroma` is not a Chroma query result: "
            ),
            "{message}"
        );
    }
}
