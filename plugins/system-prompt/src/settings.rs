//! The stage's config, read once per request and validated: the prompt template, where it
//! goes (`mode`), and what an unknown `{{variable}}` becomes (`missing`, `default_value`).
//! Takes the raw lookup as a function so that it can be tested without the host.

use weir_sdk::StageError;
use weir_sdk::config::{ConfigError, parse_value};

/// Where the prompt goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Insert a new system message before everything (the default).
    Prepend,
    /// Drop every `system` and `developer` message, then insert the new one first.
    Replace,
    /// Put the prompt, and a blank line, at the start of the first `system` message; insert
    /// a new one first when there is none.
    Merge,
}

impl Mode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Prepend => "prepend",
            Mode::Replace => "replace",
            Mode::Merge => "merge",
        }
    }
}

/// What a `{{name}}` that is not found becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// The `default_value` text (empty unless configured); the default.
    Empty,
    /// The stage fails, naming the variable.
    Fail,
}

/// The validated config of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The prompt template (`prompt`, required).
    pub prompt: String,
    /// Where it goes (`mode`; default `prepend`).
    pub mode: Mode,
    /// What a missing variable becomes when `missing = "empty"` (`default_value`; default
    /// empty).
    pub default_value: String,
    /// The policy for missing variables (`missing`; default `empty`).
    pub missing: Missing,
    /// The longest metadata value used, in characters (`max_value_chars`; default
    /// [`DEFAULT_MAX_VALUE_CHARS`]): a longer one is treated as missing.
    pub max_value_chars: usize,
}

/// The default `max_value_chars`: a name, a team, a language; not a paragraph of
/// instructions a client slips into the system prompt.
pub const DEFAULT_MAX_VALUE_CHARS: usize = 64;

impl Settings {
    /// Reads the config through `get` (the host's `config-get` in production). A missing
    /// `prompt`, or a value that is set but does not parse, fails the stage with a message
    /// naming the key.
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<Settings, StageError> {
        let prompt = get("prompt")
            .ok_or_else(|| StageError::fail("system-prompt: config key `prompt` is required"))?;
        let mode = match get("mode") {
            None => Mode::Prepend,
            Some(raw) => parse_mode(raw)?,
        };
        let missing = match get("missing") {
            None => Missing::Empty,
            Some(raw) => parse_missing(raw)?,
        };
        let default_value =
            parse_value::<String>("default_value", get("default_value"))?.unwrap_or_default();
        let max_value_chars = parse_value::<usize>("max_value_chars", get("max_value_chars"))?
            .unwrap_or(DEFAULT_MAX_VALUE_CHARS);
        Ok(Settings {
            prompt,
            mode,
            default_value,
            missing,
            max_value_chars,
        })
    }

    /// The text for a missing variable, or `None` when a missing variable is an error.
    pub fn fallback(&self) -> Option<&str> {
        match self.missing {
            Missing::Empty => Some(&self.default_value),
            Missing::Fail => None,
        }
    }
}

/// Parses `mode`.
fn parse_mode(raw: String) -> Result<Mode, ConfigError> {
    match raw.as_str() {
        "prepend" => Ok(Mode::Prepend),
        "replace" => Ok(Mode::Replace),
        "merge" => Ok(Mode::Merge),
        _ => Err(ConfigError {
            key: "mode".to_string(),
            expected: "one of `prepend`, `replace`, `merge`".to_string(),
            value: raw,
            reason: "unknown mode".to_string(),
        }),
    }
}

/// Parses `missing`.
fn parse_missing(raw: String) -> Result<Missing, ConfigError> {
    match raw.as_str() {
        "empty" => Ok(Missing::Empty),
        "fail" => Ok(Missing::Fail),
        _ => Err(ConfigError {
            key: "missing".to_string(),
            expected: "one of `empty`, `fail`".to_string(),
            value: raw,
            reason: "unknown policy".to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use weir_sdk::testing::{config, fail_message};

    use super::*;

    #[test]
    fn defaults() {
        let settings = Settings::load(config(&[("prompt", "Be terse.")])).ok();
        assert_eq!(
            settings,
            Some(Settings {
                prompt: "Be terse.".to_string(),
                mode: Mode::Prepend,
                default_value: String::new(),
                missing: Missing::Empty,
                max_value_chars: DEFAULT_MAX_VALUE_CHARS,
            })
        );
        assert_eq!(settings.as_ref().and_then(Settings::fallback), Some(""));
    }

    #[test]
    fn explicit_values() {
        let settings = Settings::load(config(&[
            ("prompt", "Hi {{user}}"),
            ("mode", "merge"),
            ("default_value", "there"),
            ("missing", "fail"),
            ("max_value_chars", "8"),
        ]))
        .ok();
        let settings = settings.as_ref();
        assert_eq!(settings.map(|s| s.max_value_chars), Some(8));
        assert_eq!(settings.map(|s| s.mode), Some(Mode::Merge));
        assert_eq!(settings.map(|s| s.default_value.as_str()), Some("there"));
        assert_eq!(settings.and_then(Settings::fallback), None);
        for mode in [Mode::Prepend, Mode::Replace, Mode::Merge] {
            let parsed = Settings::load(config(&[("prompt", "x"), ("mode", mode.as_str())])).ok();
            assert_eq!(parsed.map(|s| s.mode), Some(mode));
        }
    }

    #[test]
    fn prompt_is_required() {
        assert_eq!(
            fail_message(Settings::load(config(&[("mode", "merge")]))),
            "system-prompt: config key `prompt` is required"
        );
    }

    #[test]
    fn unknown_values_fail_clearly() {
        assert_eq!(
            fail_message(Settings::load(config(&[
                ("prompt", "x"),
                ("mode", "append")
            ]))),
            "stage config `mode`: expected one of `prepend`, `replace`, `merge`, got `append` \
             (unknown mode)"
        );
        assert_eq!(
            fail_message(Settings::load(config(&[
                ("prompt", "x"),
                ("missing", "ignore")
            ]))),
            "stage config `missing`: expected one of `empty`, `fail`, got `ignore` \
             (unknown policy)"
        );
    }
}
