//! `json-guard`: a weir stage that holds the model to the JSON the client asked for, and has
//! the host ask again when the answer is not.
//!
//! Response phase only (it needs the whole response, so a stream is buffered for it); not
//! deterministic. What the answer must be comes from the request's `response_format`
//! (`json_schema` → match that schema, `json_object` → be a JSON object) or else from the
//! config's `schema`; with neither the response passes untouched. The first choice's text is
//! judged; when it falls short the stage calls [`weir_sdk::response::retry`] with a bounded
//! list of what is wrong, and the host asks the model again with that feedback (up to the
//! route's `max_output_retries`, then 502 `invalid_model_output`). A choice without content
//! (only tool calls, or a refusal) passes: there is no JSON to judge. A `response_format`
//! whose schema is not a valid JSON schema is refused with 400 `invalid_response_format`; an
//! invalid configured schema fails the stage. See `README.md` for the config keys.
//!
//! # Layout
//!
//! - [`settings`]: the validated config.
//! - [`expect`]: what the answer must be, from the request and the config.
//! - [`schema`]: a compiled JSON schema and the violations of a value.
//! - [`verdict`]: judging the answer, and the bounded reason and feedback of a retry.
//! - this file: the [`Stage`] implementation, the only code that talks to the host.

pub mod expect;
pub mod schema;
pub mod settings;
pub mod verdict;

use weir_sdk::{ChatRequest, ChatResponse, RequestContext, Stage, StageError, StageInfo};

use crate::expect::{BadResponseFormat, Origin, expectation};
use crate::settings::Settings;
use crate::verdict::{Check, Verdict};

/// The code of the 400 refusal for a `response_format` the stage cannot use.
pub const INVALID_RESPONSE_FORMAT: &str = "invalid_response_format";

/// The stage (it keeps no state between phases).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct JsonGuard;

impl Stage for JsonGuard {
    // A key not listed here (a misspelling) is refused when the host loads the config.
    const CONFIG_KEYS: Option<&'static [&'static str]> = Some(&["schema"]);

    fn info() -> StageInfo {
        StageInfo::new("json-guard", env!("CARGO_PKG_VERSION")).on_response()
    }

    fn on_response(
        &mut self,
        ctx: &RequestContext,
        request: &ChatRequest,
        response: ChatResponse,
    ) -> Result<ChatResponse, StageError> {
        let settings = Settings::load(weir_sdk::config::get)?;
        if let Verdict::Retry { reason, feedback } = review(request, &response, &settings)? {
            weir_sdk::info!("request {}: asking again: {reason}", ctx.request_id);
            weir_sdk::response::retry(&reason, Some(&feedback));
        }
        // On a retry the host discards what this returns; either way it is the answer as is.
        Ok(response)
    }
}

/// What to do with `response` to `request` under `settings`.
pub fn review(
    request: &ChatRequest,
    response: &ChatResponse,
    settings: &Settings,
) -> Result<Verdict, StageError> {
    let Some(text) = answer_text(response) else {
        return Ok(Verdict::Pass);
    };
    let expected = expectation(&request.extra, settings.schema.as_ref())
        .map_err(|BadResponseFormat(message)| invalid_response_format(message))?;
    let Some(expected) = expected else {
        return Ok(Verdict::Pass);
    };
    let origin = match &expected {
        expect::Expectation::Schema { origin, .. } => Some(*origin),
        expect::Expectation::JsonObject => None,
    };
    let check = Check::new(expected).map_err(|err| match origin {
        Some(Origin::Config) => StageError::fail(format!(
            "json-guard: config key `schema` is not a valid JSON schema: {err}"
        )),
        _ => invalid_response_format(format!(
            "response_format.json_schema.schema is not a valid JSON schema: {err}"
        )),
    })?;
    Ok(check.judge(&text))
}

/// The text of the first choice, or `None` when there is nothing to judge (no choice, or a
/// message without content: tool calls only, or a refusal).
fn answer_text(response: &ChatResponse) -> Option<String> {
    let message = &response.choices.first()?.message;
    message.content.as_ref()?;
    Some(message.text())
}

/// The client's error: 400 `invalid_response_format`, the message cut to 1,000 characters.
fn invalid_response_format(message: String) -> StageError {
    let message = match message.char_indices().nth(1000) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message,
    };
    StageError::reject(400, INVALID_RESPONSE_FORMAT, message)
}

weir_sdk::export_stage!(JsonGuard);

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use weir_sdk::testing::fail_message;
    use weir_sdk::{Message, Phases};

    use super::*;

    fn request(extra: Value) -> ChatRequest {
        let mut request = ChatRequest::new("gpt-x", vec![Message::user("Who?")]);
        request.extra = extra.to_string();
        request
    }

    fn with_schema(schema: Value) -> ChatRequest {
        request(json!({"response_format": {
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema},
        }}))
    }

    fn person() -> Value {
        json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        })
    }

    fn answer(text: &str) -> ChatResponse {
        ChatResponse::from_text("gpt-x", text)
    }

    fn reason(verdict: Result<Verdict, StageError>) -> String {
        match verdict {
            Ok(Verdict::Retry { reason, .. }) => reason,
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    fn rejection(verdict: Result<Verdict, StageError>) -> weir_sdk::Rejection {
        match verdict {
            Err(StageError::Reject(rejection)) => rejection,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn info_declares_a_response_stage_that_needs_the_whole_response() {
        let info = JsonGuard::info();
        assert_eq!(info.name, "json-guard");
        assert_eq!(info.phases, Phases::RESPONSE);
        assert!(
            !info.phases.contains(Phases::RESPONSE_CHUNK),
            "a stream is buffered for it"
        );
        assert!(!info.deterministic);
    }

    #[test]
    fn valid_answers_pass() {
        let settings = Settings::default();
        let verdict = review(
            &with_schema(person()),
            &answer(r#"{"name":"Ada","age":36}"#),
            &settings,
        );
        assert_eq!(verdict.ok(), Some(Verdict::Pass));
    }

    #[test]
    fn invalid_type_and_missing_required_ask_again() {
        let settings = Settings::default();
        let verdict = review(
            &with_schema(person()),
            &answer(r#"{"name":"Ada","age":"x"}"#),
            &settings,
        );
        assert_eq!(
            reason(verdict),
            "output does not match the response_format schema: /age: \"x\" is not of type \"integer\""
        );
        let verdict = review(&with_schema(person()), &answer(r#"{"age":3}"#), &settings);
        assert_eq!(
            reason(verdict),
            "output does not match the response_format schema: (root): \"name\" is a required property"
        );
    }

    #[test]
    fn non_json_asks_again() {
        let verdict = review(
            &with_schema(person()),
            &answer("Ada, 36"),
            &Settings::default(),
        );
        assert!(reason(verdict).starts_with("output is not JSON: "));
    }

    #[test]
    fn json_object_mode() {
        let json_object = request(json!({"response_format": {"type": "json_object"}}));
        let settings = Settings::default();
        assert_eq!(
            review(&json_object, &answer(r#"{"a":1}"#), &settings).ok(),
            Some(Verdict::Pass)
        );
        assert_eq!(
            reason(review(&json_object, &answer("[1]"), &settings)),
            "output is not a JSON object (it is an array)"
        );
    }

    #[test]
    fn the_configured_schema_applies_without_a_response_format() {
        let settings = Settings {
            schema: Some(json!({"type": "array"})),
        };
        assert_eq!(
            review(&request(json!({})), &answer("[1]"), &settings).ok(),
            Some(Verdict::Pass)
        );
        assert!(
            reason(review(&request(json!({})), &answer("{}"), &settings))
                .starts_with("output does not match the configured schema: ")
        );
    }

    #[test]
    fn nothing_asked_means_passthrough() {
        let settings = Settings::default();
        for extra in [
            json!({}),
            json!({"response_format": {"type": "text"}}),
            json!({"seed": 1}),
        ] {
            assert_eq!(
                review(&request(extra.clone()), &answer("plain prose"), &settings).ok(),
                Some(Verdict::Pass),
                "{extra}"
            );
        }
    }

    #[test]
    fn answers_without_content_pass() {
        let mut tool_call = answer("");
        tool_call.choices[0].message.content = None;
        tool_call.choices[0].message.extra =
            r#"{"tool_calls":[{"id":"c1","type":"function"}]}"#.to_string();
        let settings = Settings::default();
        assert_eq!(
            review(&with_schema(person()), &tool_call, &settings).ok(),
            Some(Verdict::Pass)
        );
        let mut empty = answer("");
        empty.choices.clear();
        assert_eq!(
            review(&with_schema(person()), &empty, &settings).ok(),
            Some(Verdict::Pass)
        );
    }

    #[test]
    fn a_bad_request_schema_is_the_clients_error() {
        let settings = Settings::default();
        let refused = rejection(review(
            &with_schema(json!({"type": "integr"})),
            &answer("{}"),
            &settings,
        ));
        assert_eq!(refused.status, 400);
        assert_eq!(refused.code, INVALID_RESPONSE_FORMAT);
        assert!(
            refused
                .message
                .starts_with("response_format.json_schema.schema is not a valid JSON schema: "),
            "{}",
            refused.message
        );
        let refused = rejection(review(
            &request(json!({"response_format": {"type": "json_schema"}})),
            &answer("{}"),
            &settings,
        ));
        assert_eq!(
            refused.message,
            "response_format.json_schema must be an object"
        );
    }

    #[test]
    fn a_bad_configured_schema_fails_the_stage() {
        let settings = Settings {
            schema: Some(json!({"type": "integr"})),
        };
        let message = fail_message(review(&request(json!({})), &answer("{}"), &settings));
        assert!(
            message.starts_with("json-guard: config key `schema` is not a valid JSON schema: "),
            "{message}"
        );
    }
}
