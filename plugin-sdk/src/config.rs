//! Typed reading of the stage's own config table.
//!
//! The host config gives each stage of a pipeline a table:
//!
//! ```toml
//! [[routes.stages]]
//! name = "prompt-guard"
//! config = { max_chars = 8000, deny = ["(?i)ignore previous"] }
//! ```
//!
//! Inside the stage, [`get`] returns a value as a string (strings as they are, everything else
//! as JSON), and the typed readers parse it with an error that names the key and says what was
//! expected. A [`ConfigError`] converts into [`StageError::Fail`](crate::StageError), so `?`
//! works inside a phase.
//!
//! ```no_run
//! # fn demo() -> Result<(), weir_sdk::config::ConfigError> {
//! let max_chars: usize = weir_sdk::config::get_or("max_chars", 8000)?;
//! let deny: Vec<String> = weir_sdk::config::get_json_or("deny", Vec::new())?;
//! let greeting: Option<String> = weir_sdk::config::get("greeting");
//! # Ok(()) }
//! ```

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;

use crate::StageError;

/// A config value that is present but does not parse as the stage expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key in the stage's config table.
    pub key: String,
    /// What the stage expected (a type name or a description).
    pub expected: String,
    /// The raw value as the host rendered it.
    pub value: String,
    /// The parser's own message.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stage config `{}`: expected {}, got `{}` ({})",
            self.key, self.expected, self.value, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for StageError {
    fn from(err: ConfigError) -> Self {
        StageError::Fail(err.to_string())
    }
}

/// The raw value of `key`, or `None` when the stage config does not set it.
pub fn get(key: &str) -> Option<String> {
    crate::bindings::weir::stage0_1_0::host::config_get(key)
}

/// `key` parsed with [`FromStr`] (numbers, booleans, plain strings); `None` when unset.
pub fn get_parsed<T>(key: &str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    parse_value(key, get(key))
}

/// `key` parsed with [`FromStr`], or `default` when unset.
pub fn get_or<T>(key: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    Ok(get_parsed(key)?.unwrap_or(default))
}

/// `key` deserialized from JSON (lists, tables, ...); `None` when unset.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, ConfigError> {
    parse_json(key, get(key))
}

/// `key` deserialized from JSON, or `default` when unset.
pub fn get_json_or<T: DeserializeOwned>(key: &str, default: T) -> Result<T, ConfigError> {
    Ok(get_json(key)?.unwrap_or(default))
}

/// Parses a raw value with [`FromStr`]; split out so it can be tested off-host.
pub fn parse_value<T>(key: &str, raw: Option<String>) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    let Some(raw) = raw else { return Ok(None) };
    raw.parse::<T>().map(Some).map_err(|err| ConfigError {
        key: key.to_string(),
        expected: short_type_name::<T>(),
        value: raw.clone(),
        reason: err.to_string(),
    })
}

/// Deserializes a raw value from JSON; a bare string that is not JSON is tried as a JSON
/// string, so `greeting = "hi"` reads as `String` either way.
pub fn parse_json<T: DeserializeOwned>(
    key: &str,
    raw: Option<String>,
) -> Result<Option<T>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    match serde_json::from_str::<T>(&raw) {
        Ok(value) => Ok(Some(value)),
        Err(first) => serde_json::from_value::<T>(serde_json::Value::String(raw.clone()))
            .map(Some)
            .map_err(|_| ConfigError {
                key: key.to_string(),
                expected: short_type_name::<T>(),
                value: raw,
                reason: first.to_string(),
            }),
    }
}

fn short_type_name<T>() -> String {
    let full = std::any::type_name::<T>();
    // `alloc::vec::Vec<alloc::string::String>` -> `Vec<String>`
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    for ch in full.chars() {
        if ch.is_alphanumeric() || ch == '_' || ch == ':' {
            segment.push(ch);
        } else {
            out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
            segment.clear();
            out.push(ch);
        }
    }
    out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_and_names_the_key_on_error() {
        assert_eq!(parse_value::<u32>("n", Some("12".into())), Ok(Some(12)));
        assert_eq!(parse_value::<u32>("n", None), Ok(None));
        let err = parse_value::<u32>("max_chars", Some("lots".into())).unwrap_err();
        assert_eq!(err.key, "max_chars");
        assert_eq!(err.expected, "u32");
        assert!(
            err.to_string()
                .starts_with("stage config `max_chars`: expected u32, got `lots`")
        );
    }

    #[test]
    fn json_lists_and_bare_strings() {
        let list: Option<Vec<String>> = parse_json("deny", Some(r#"["a","b"]"#.into())).unwrap();
        assert_eq!(list, Some(vec!["a".to_string(), "b".to_string()]));
        let bare: Option<String> = parse_json("greeting", Some("hello".into())).unwrap();
        assert_eq!(bare.as_deref(), Some("hello"));
        let err = parse_json::<Vec<u32>>("ids", Some("[1, \"x\"]".into())).unwrap_err();
        assert_eq!(err.expected, "Vec<u32>");
    }
}
