//! [`App::embeddings`]: a client's `POST /v1/embeddings` through the route its `model`
//! names: admission (the key's RPM), the request's LLM-call limit, the exact cache, the
//! route's targets with fallback, cost reserved and settled against the key's budgets, and
//! the report the request record and the traces are made from. No stage runs: the stage
//! contract is about chats.

use serde_json::Value;

use super::chat::{client_deadline, llm_call_limit};
use super::{App, ChatCall, ChatError, Report, UnknownModel};
use crate::cost::Meter;
use crate::llm::ClientEmbeddings;
use crate::openai::ApiError;

/// The most inputs one `/v1/embeddings` request may carry (OpenAI's own bound).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

/// What [`App::embeddings`] came to, and the report of how.
pub struct EmbeddingsOutcome {
    /// The OpenAI body (`usage.cost` added), or why there is none.
    pub reply: Result<Value, ChatError>,
    /// What happened.
    pub report: Report,
}

impl App {
    /// Runs one embeddings call as `call.account`; `call.body` is the client's
    /// `/v1/embeddings` body.
    pub async fn embeddings(&self, call: ChatCall) -> EmbeddingsOutcome {
        let mut report = Report {
            trace: call.trace,
            parent: call.parent,
            ..Report::default()
        };
        if let Some(account) = &call.account {
            report.key = Some(account.name().to_string());
            if let Err(err) = account.admit_request().await {
                return EmbeddingsOutcome {
                    reply: Err(ChatError::Admission(err)),
                    report,
                };
            }
        }
        let meter = Meter::new(call.account.clone());
        let reply = self.embed(&call, &meter, &mut report).await;
        report.cost = Some(meter.total());
        if let Err(err) = &reply {
            report.shed = crate::error::ClientFacing::shed(err);
        }
        EmbeddingsOutcome { reply, report }
    }

    /// The admitted call: parse, route, the LLM step's embeddings.
    async fn embed(
        &self,
        call: &ChatCall,
        meter: &std::sync::Arc<Meter>,
        report: &mut Report,
    ) -> Result<Value, ChatError> {
        let snap = &call.snapshot;
        let (body, model, inputs) = parse(&call.body).map_err(ChatError::Invalid)?;
        let deadline = client_deadline(call.deadline.as_ref()).map_err(ChatError::Invalid)?;
        let Some(pipeline) = snap.routes.get(&model) else {
            return Err(ChatError::UnknownModel(UnknownModel::new(snap, &model)));
        };
        report.route = Some(pipeline.route.clone());
        let (max_calls, limiter) = llm_call_limit(&snap.config, &pipeline.route);
        meter.limit_calls(max_calls, limiter);
        let started = tokio::time::Instant::now();
        report.llm_call = Some((started, model.clone()));
        let step = snap
            .llm
            .client_embeddings(ClientEmbeddings {
                route: &pipeline.route,
                meter,
                body: &body,
                inputs: &inputs,
                control: call.cache_control,
                deadline,
            })
            .await;
        report.llm = Some(started.elapsed());
        report.attempts = step.attempts;
        report.cache = Some((step.cache, None));
        report.cache_key = step.key;
        let mut answer = step.result.map_err(ChatError::Step)?;
        if let Some(usage) = answer.get_mut("usage").and_then(Value::as_object_mut) {
            let cost = crate::config::pico_to_usd(meter.total());
            usage.insert("cost".into(), Value::from(cost));
        }
        Ok(answer)
    }
}

/// The body, its `model` and the texts of its `input` (a string or an array of strings);
/// token arrays are refused, since budgets count text.
fn parse(body: &[u8]) -> Result<(Value, String, Vec<String>), ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|err| ApiError::invalid_json(&err))?;
    if !value.is_object() {
        return Err(ApiError::invalid(
            "invalid_request",
            None,
            "the request body must be a JSON object",
        ));
    }
    let model = match value.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        _ => {
            return Err(ApiError::invalid(
                "missing_required_parameter",
                Some("model"),
                "`model` must be a non-empty string naming a route",
            ));
        }
    };
    let bad_input = || {
        ApiError::invalid(
            "invalid_type",
            Some("input"),
            format!(
                "`input` must be a non-empty string or an array of 1 to \
                 {MAX_EMBEDDING_INPUTS} strings (token arrays are not supported: send text)"
            ),
        )
    };
    let inputs = match value.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_EMBEDDING_INPUTS => {
            items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(bad_input)?
        }
        _ => return Err(bad_input()),
    };
    Ok((value, model, inputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_a_string_or_strings_and_the_model_names_a_route() {
        let (_, model, inputs) = parse(br#"{"model":"e","input":"a"}"#).unwrap();
        assert_eq!((model.as_str(), inputs), ("e", vec!["a".to_owned()]));
        let (_, _, inputs) = parse(br#"{"model":"e","input":["a","b"]}"#).unwrap();
        assert_eq!(inputs, ["a", "b"]);
        for (body, param) in [
            (&br#"{"input":"a"}"#[..], Some("model")),
            (br#"{"model":"e"}"#, Some("input")),
            (br#"{"model":"e","input":[]}"#, Some("input")),
            (br#"{"model":"e","input":[[1,2]]}"#, Some("input")),
            (br#"{"model":"e","input":7}"#, Some("input")),
            (b"[1]", None),
            (b"{", None),
        ] {
            let err = parse(body).unwrap_err();
            assert_eq!(err.status, 400);
            assert_eq!(
                err.param.as_deref(),
                param,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
