//! What the answer must be, decided from the request's `response_format` and the config.
//!
//! In order: `{"type": "json_schema", "json_schema": {"schema": {...}}}` → JSON matching that
//! schema (no `schema`: any JSON); `{"type": "json_object"}` → a JSON object; anything else
//! (no `response_format`, `{"type": "text"}`, a type this stage does not know) → the config's
//! `schema` when there is one, else nothing to check. A `response_format` that is not the
//! shape OpenAI documents is the client's error ([`BadResponseFormat`]), not the stage's.

use serde_json::{Map, Value};

/// Where a schema came from, for the reason given to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The request's `response_format.json_schema.schema`.
    ResponseFormat,
    /// The stage config's `schema`.
    Config,
}

impl Origin {
    /// How the reason names the schema: "the response_format schema".
    pub fn describe(self) -> &'static str {
        match self {
            Origin::ResponseFormat => "the response_format schema",
            Origin::Config => "the configured schema",
        }
    }
}

/// What the answer must be.
#[derive(Clone, Debug, PartialEq)]
pub enum Expectation {
    /// A JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// JSON that matches `schema` (an object or a boolean).
    Schema {
        /// The JSON schema.
        schema: Value,
        /// Where it came from.
        origin: Origin,
    },
}

/// A `response_format` this stage cannot read: the client gets 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadResponseFormat(pub String);

/// What the answer to a request with `extra` (the request's JSON object of unmodelled fields)
/// must be, given the configured schema; `None` when nothing is asked of it.
pub fn expectation(
    extra: &str,
    configured: Option<&Value>,
) -> Result<Option<Expectation>, BadResponseFormat> {
    let from_config = || {
        configured.map(|schema| Expectation::Schema {
            schema: schema.clone(),
            origin: Origin::Config,
        })
    };
    // The host always sends a JSON object; anything else has no response_format in it.
    let Ok(Value::Object(extra)) = serde_json::from_str::<Value>(extra) else {
        return Ok(from_config());
    };
    match extra.get("response_format") {
        None | Some(Value::Null) => Ok(from_config()),
        Some(Value::Object(format)) => Ok(from_format(format)?.or_else(from_config)),
        Some(_) => Err(BadResponseFormat(
            "response_format must be an object".to_string(),
        )),
    }
}

/// The expectation a `response_format` object sets, if it sets one.
fn from_format(format: &Map<String, Value>) -> Result<Option<Expectation>, BadResponseFormat> {
    let bad = |message: &str| Err(BadResponseFormat(message.to_string()));
    match format.get("type") {
        Some(Value::String(kind)) if kind == "json_object" => Ok(Some(Expectation::JsonObject)),
        Some(Value::String(kind)) if kind == "json_schema" => {
            let Some(Value::Object(json_schema)) = format.get("json_schema") else {
                return bad("response_format.json_schema must be an object");
            };
            let schema = match json_schema.get("schema") {
                // OpenAI makes the schema optional: any JSON then.
                None => Value::Bool(true),
                Some(schema @ (Value::Object(_) | Value::Bool(_))) => schema.clone(),
                Some(_) => return bad("response_format.json_schema.schema must be an object"),
            };
            Ok(Some(Expectation::Schema {
                schema,
                origin: Origin::ResponseFormat,
            }))
        }
        Some(Value::String(_)) => Ok(None),
        _ => bad("response_format.type must be a string"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn extra(value: Value) -> String {
        value.to_string()
    }

    fn schema(value: Value, origin: Origin) -> Option<Expectation> {
        Some(Expectation::Schema {
            schema: value,
            origin,
        })
    }

    #[test]
    fn the_request_schema_comes_first() {
        let person = json!({"type": "object", "required": ["name"]});
        let request = extra(json!({"response_format": {
            "type": "json_schema",
            "json_schema": {"name": "person", "strict": true, "schema": person},
        }}));
        let configured = json!({"type": "array"});
        assert_eq!(
            expectation(&request, Some(&configured)),
            Ok(schema(person, Origin::ResponseFormat))
        );
    }

    #[test]
    fn a_json_schema_without_schema_asks_for_any_json() {
        let request = extra(json!({"response_format": {
            "type": "json_schema", "json_schema": {"name": "anything"}
        }}));
        assert_eq!(
            expectation(&request, None),
            Ok(schema(json!(true), Origin::ResponseFormat))
        );
    }

    #[test]
    fn json_object_asks_for_an_object() {
        let request = extra(json!({"response_format": {"type": "json_object"}, "seed": 7}));
        assert_eq!(
            expectation(&request, Some(&json!({"type": "array"}))),
            Ok(Some(Expectation::JsonObject))
        );
    }

    #[test]
    fn otherwise_the_configured_schema_or_nothing() {
        let configured = json!({"type": "object"});
        for request in [
            "{}".to_string(),
            extra(json!({"response_format": null})),
            extra(json!({"response_format": {"type": "text"}})),
            extra(json!({"response_format": {"type": "grammar", "grammar": "x"}})),
            "not json".to_string(),
        ] {
            assert_eq!(
                expectation(&request, Some(&configured)),
                Ok(schema(configured.clone(), Origin::Config)),
                "{request}"
            );
            assert_eq!(expectation(&request, None), Ok(None), "{request}");
        }
    }

    #[test]
    fn malformed_response_formats_are_the_clients_error() {
        for (format, message) in [
            (json!("json_object"), "response_format must be an object"),
            (
                json!({"json_schema": {}}),
                "response_format.type must be a string",
            ),
            (json!({"type": 3}), "response_format.type must be a string"),
            (
                json!({"type": "json_schema"}),
                "response_format.json_schema must be an object",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"schema": "object"}}),
                "response_format.json_schema.schema must be an object",
            ),
        ] {
            let request = extra(json!({ "response_format": format }));
            assert_eq!(
                expectation(&request, None),
                Err(BadResponseFormat(message.to_string())),
                "{request}"
            );
        }
    }
}
