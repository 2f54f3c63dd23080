//! Azure OpenAI: `POST /openai/deployments/{deployment}/chat/completions?api-version=V` and
//! `.../embeddings?api-version=V`.
//!
//! Azure's wire format is OpenAI's, so this is the OpenAI path with Azure's addressing: the key
//! in `api-key`, a required `api-version` query (without it Azure answers 404
//! `{"error":{"code":"404","message":"Resource not found"}}`, and so does the simulator), and
//! the deployment standing in for the body's `model` when the body names none.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::query_param;
use crate::sim::api;
use crate::sim::body::{self, SimBody};
use crate::sim::chat::ChatRequest;
use crate::sim::conn::ConnControl;
use crate::sim::state::SimState;

/// The header Azure reads the API key from.
const KEY_HEADER: &str = "api-key";

/// Which Azure operation a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AzureOperation {
    /// `.../chat/completions`.
    ChatCompletions,
    /// `.../embeddings`.
    Embeddings,
}

/// `POST /openai/deployments/{deployment}/{operation}?api-version=V`.
pub async fn azure(
    request: Request<Incoming>,
    state: Arc<SimState>,
    conn: &ConnControl,
    deployment: String,
    operation: AzureOperation,
) -> Response<SimBody> {
    let versioned =
        query_param(request.uri().query(), "api-version").is_some_and(|v| !v.is_empty());
    if !versioned {
        // Recorded, so a test sees what was sent; not a model request, so not counted.
        return match api::receive(request, &state).await {
            Ok(_) => resource_not_found(),
            Err(err) => body::error(&err),
        };
    }
    match operation {
        AzureOperation::ChatCompletions => api::count_chat(&state),
        AzureOperation::Embeddings => api::count_embeddings(&state),
    }
    let key = api::header(&request, KEY_HEADER);
    let bytes = match api::receive(request, &state).await {
        Ok(bytes) => with_model(bytes, &deployment),
        Err(err) => return body::error(&err),
    };
    match operation {
        AzureOperation::ChatCompletions => {
            api::answer_chat(ChatRequest::parse(&bytes), key.as_deref(), state, conn).await
        }
        AzureOperation::Embeddings => {
            api::answer_embeddings(&bytes, key.as_deref(), &state, conn).await
        }
    }
}

/// Azure's answer to a path it does not serve (here: one without `api-version`).
fn resource_not_found() -> Response<SimBody> {
    body::json(
        StatusCode::NOT_FOUND,
        &json!({"error": {"code": "404", "message": "Resource not found"}}),
    )
}

/// The body with `"model": <deployment>` when it is a JSON object without a model; any other
/// body as it came (the OpenAI path answers it).
fn with_model(bytes: Bytes, deployment: &str) -> Bytes {
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(&bytes) else {
        return bytes;
    };
    if object.get("model").is_some_and(|m| !m.is_null()) {
        return bytes;
    }
    object.insert("model".into(), deployment.into());
    match serde_json::to_vec(&Value::Object(object)) {
        Ok(with) => Bytes::from(with),
        Err(_) => bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::full_body;
    use super::*;

    #[test]
    fn the_deployment_stands_in_for_a_missing_model() {
        let model = |body: &str| {
            let bytes = with_model(Bytes::from(body.to_owned()), "my-deployment");
            serde_json::from_slice::<Value>(&bytes)
                .map(|v| v["model"].clone())
                .ok()
        };
        assert_eq!(model(r#"{"messages":[]}"#), Some(json!("my-deployment")));
        assert_eq!(model(r#"{"model":null}"#), Some(json!("my-deployment")));
        assert_eq!(model(r#"{"model":"gpt-4o"}"#), Some(json!("gpt-4o")));
        let not_json = with_model(Bytes::from_static(b"{nope"), "d");
        assert_eq!(&not_json[..], b"{nope");
    }

    #[test]
    fn a_missing_api_version_is_azures_404() {
        let response = resource_not_found();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: Value = serde_json::from_slice(&full_body(response)).expect("JSON");
        assert_eq!(
            body,
            json!({"error": {"code": "404", "message": "Resource not found"}})
        );
    }
}
