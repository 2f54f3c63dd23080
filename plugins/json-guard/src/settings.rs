//! The stage's config: an optional default JSON schema (`schema`), for requests that do not
//! say what shape they want. Read once per request through a getter, so it can be tested
//! without the host.

use serde_json::Value;
use weir_sdk::StageError;
use weir_sdk::config::ConfigError;

/// The validated config of one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    /// The schema every answer must match when the request has no JSON `response_format`
    /// (`schema`; default none: such answers pass untouched). A JSON object or boolean.
    pub schema: Option<Value>,
}

impl Settings {
    /// Reads the config through `get` (the host's `config-get` in production). `schema` may be
    /// a TOML table (the host renders it as JSON) or a string holding JSON; anything that is
    /// not a JSON object or boolean fails the stage with a message naming the key. Whether it
    /// is a valid schema is checked when it is used.
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<Settings, StageError> {
        let schema = match get("schema") {
            None => None,
            Some(raw) => Some(parse_schema(raw)?),
        };
        Ok(Settings { schema })
    }
}

/// Parses `schema`: JSON text that is an object or a boolean.
fn parse_schema(raw: String) -> Result<Value, ConfigError> {
    let error = |reason: String, value: String| ConfigError {
        key: "schema".to_string(),
        expected: "a JSON schema (a table, or a string holding a JSON object)".to_string(),
        value,
        reason,
    };
    match serde_json::from_str::<Value>(&raw) {
        Ok(schema @ (Value::Object(_) | Value::Bool(_))) => Ok(schema),
        Ok(_) => Err(error("not an object".to_string(), raw)),
        Err(err) => Err(error(err.to_string(), raw)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weir_sdk::testing::{config, fail_message};

    use super::*;

    #[test]
    fn no_schema_by_default() {
        assert_eq!(Settings::load(config(&[])).ok(), Some(Settings::default()));
    }

    #[test]
    fn a_table_or_a_json_string() {
        // What config-get answers for `schema = { type = "object" }` and for
        // `schema = '{"type": "object"}'` alike.
        let settings = Settings::load(config(&[("schema", r#"{"type":"object"}"#)])).ok();
        assert_eq!(
            settings.and_then(|s| s.schema),
            Some(json!({"type": "object"}))
        );
        let settings = Settings::load(config(&[("schema", "true")])).ok();
        assert_eq!(settings.and_then(|s| s.schema), Some(json!(true)));
    }

    #[test]
    fn anything_else_fails_naming_the_key() {
        let message = fail_message(Settings::load(config(&[("schema", "{type = object}")])));
        assert!(
            message.starts_with("stage config `schema`: expected a JSON schema"),
            "{message}"
        );
        let message = fail_message(Settings::load(config(&[("schema", "[1, 2]")])));
        assert!(message.ends_with("(not an object)"), "{message}");
        let message = fail_message(Settings::load(config(&[("schema", "object")])));
        assert!(message.contains("got `object`"), "{message}");
    }
}
