//! A stage's `config` table as the guest sees it through `config-get`: one string per key.
//!
//! TOML strings are passed as they are; every other value is rendered as compact JSON
//! (`8000`, `true`, `["a","b"]`, `{"k":1}`), so a guest parses non-string values with any JSON
//! library. A datetime has no JSON type: at the top level it is passed as its TOML text, like
//! a string, and inside an array or table it becomes a JSON string.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, de};
use serde_json::Value as Json;
use toml::Value;

/// `deserialize_with = "render_all"`: every entry of a stage's `config` table, rendered (a
/// value that cannot be is an error at its own key).
pub(crate) fn render_all<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Rendered(String);
    impl<'de> Deserialize<'de> for Rendered {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let value = Value::deserialize(d)?;
            render(&value).map(Rendered).map_err(de::Error::custom)
        }
    }
    let table = BTreeMap::<String, Rendered>::deserialize(d)?;
    Ok(table.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// One value as the guest sees it.
pub(crate) fn render(value: &Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Datetime(datetime) => Ok(datetime.to_string()),
        other => Ok(to_json(other)?.to_string()),
    }
}

fn to_json(value: &Value) -> Result<Json, String> {
    Ok(match value {
        Value::String(text) => Json::String(text.clone()),
        Value::Integer(n) => Json::from(*n),
        Value::Float(x) => match serde_json::Number::from_f64(*x) {
            Some(number) => Json::Number(number),
            None => {
                return Err(format!(
                    "expected a finite number, got {x}; nan and inf have no JSON form for the \
                     stage to read"
                ));
            }
        },
        Value::Boolean(b) => Json::Bool(*b),
        Value::Datetime(datetime) => Json::String(datetime.to_string()),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Value::Table(table) => Json::Object(
            table
                .iter()
                .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(toml_value: &str) -> Result<String, String> {
        let table: toml::Table = toml::from_str(&format!("v = {toml_value}"))
            .map_err(|e| format!("test input is not TOML: {e}"))?;
        match table.get("v") {
            Some(value) => render(value),
            None => Err("no value".to_owned()),
        }
    }

    #[test]
    fn strings_pass_through_and_the_rest_is_json() {
        for (toml_value, expected) in [
            (r#""plain text""#, "plain text"),
            (r#""with \"quotes\"""#, r#"with "quotes""#),
            (r#""""#, ""),
            ("8000", "8000"),
            ("-3", "-3"),
            ("1.5", "1.5"),
            ("true", "true"),
            (r#"["x", "y"]"#, r#"["x","y"]"#),
            ("[]", "[]"),
            ("{ k = 1 }", r#"{"k":1}"#),
            (
                r#"{ deny = ["a"], nested = { on = false } }"#,
                r#"{"deny":["a"],"nested":{"on":false}}"#,
            ),
            ("1979-05-27T07:32:00Z", "1979-05-27T07:32:00Z"),
            ("[1979-05-27]", r#"["1979-05-27"]"#),
        ] {
            assert_eq!(
                rendered(toml_value).as_deref(),
                Ok(expected),
                "{toml_value}"
            );
        }
    }

    #[test]
    fn non_finite_floats_are_rejected() {
        for toml_value in ["nan", "inf", "[-inf]", "{ x = nan }"] {
            let error = rendered(toml_value).err().unwrap_or_default();
            assert!(
                error.contains("expected a finite number"),
                "{toml_value}: {error}"
            );
        }
    }
}
