//! The stage's config, read once per request and validated: the prompt budget, how many of
//! the latest turns are never dropped, and whose tokenizer counts. Takes the raw lookup as a
//! function so that it can be tested without the host.

use weir_sdk::StageError;
use weir_sdk::config::{ConfigError, parse_value};

/// Default `keep_last_turns`: the latest question and a few exchanges of context.
pub const DEFAULT_KEEP_LAST_TURNS: usize = 4;

/// The validated config of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Most prompt tokens the request may reach the model with, counted as the host counts
    /// them (`max_tokens`; required, at least 1).
    pub max_tokens: u32,
    /// How many of the latest turns are never dropped (`keep_last_turns`; default
    /// [`DEFAULT_KEEP_LAST_TURNS`], at least 1 so the latest user message always survives).
    pub keep_last_turns: usize,
    /// The model whose tokenizer counts (`model`); `None` counts with the request's model.
    pub model: Option<String>,
}

impl Settings {
    /// Reads the config through `get` (the host's `config-get` in production). A missing
    /// `max_tokens`, or a value that is set but does not parse or is 0, fails the stage with
    /// a message naming the key.
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<Settings, StageError> {
        let max_tokens = parse_value::<u32>("max_tokens", get("max_tokens"))?
            .ok_or_else(|| StageError::fail("context-trim: config key `max_tokens` is required"))?;
        let max_tokens = at_least_one("max_tokens", max_tokens)?;
        let keep_last_turns = match parse_value::<usize>("keep_last_turns", get("keep_last_turns"))?
        {
            None => DEFAULT_KEEP_LAST_TURNS,
            Some(turns) => at_least_one("keep_last_turns", turns)?,
        };
        let model = parse_value::<String>("model", get("model"))?;
        Ok(Settings {
            max_tokens,
            keep_last_turns,
            model,
        })
    }

    /// The model whose tokenizer counts for a request that asks for `request_model`.
    pub fn model<'a>(&'a self, request_model: &'a str) -> &'a str {
        self.model.as_deref().unwrap_or(request_model)
    }
}

/// `value` when it is not zero; zero is an error naming `key`.
fn at_least_one<T: PartialEq + Default + ToString>(key: &str, value: T) -> Result<T, ConfigError> {
    if value != T::default() {
        return Ok(value);
    }
    Err(ConfigError {
        key: key.to_string(),
        expected: "an integer of at least 1".to_string(),
        value: value.to_string(),
        reason: "zero would leave nothing to send".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use weir_sdk::testing::{config, fail_message};

    use super::*;

    #[test]
    fn defaults() {
        let settings = Settings::load(config(&[("max_tokens", "4000")])).ok();
        assert_eq!(
            settings,
            Some(Settings {
                max_tokens: 4000,
                keep_last_turns: DEFAULT_KEEP_LAST_TURNS,
                model: None,
            })
        );
        assert_eq!(
            settings.as_ref().map(|s| s.model("gpt-4o-mini")),
            Some("gpt-4o-mini")
        );
    }

    #[test]
    fn explicit_values() {
        let settings = Settings::load(config(&[
            ("max_tokens", "1"),
            ("keep_last_turns", "12"),
            ("model", "gpt-4"),
        ]))
        .ok();
        assert_eq!(
            settings,
            Some(Settings {
                max_tokens: 1,
                keep_last_turns: 12,
                model: Some("gpt-4".to_string()),
            })
        );
        assert_eq!(
            settings.as_ref().map(|s| s.model("my-alias")),
            Some("gpt-4")
        );
        let largest = Settings::load(config(&[("max_tokens", "4294967295")])).ok();
        assert_eq!(largest.map(|s| s.max_tokens), Some(u32::MAX));
    }

    #[test]
    fn max_tokens_is_required() {
        assert_eq!(
            fail_message(Settings::load(config(&[("keep_last_turns", "2")]))),
            "context-trim: config key `max_tokens` is required"
        );
    }

    #[test]
    fn zero_is_refused_naming_the_key() {
        assert_eq!(
            fail_message(Settings::load(config(&[("max_tokens", "0")]))),
            "stage config `max_tokens`: expected an integer of at least 1, got `0` \
             (zero would leave nothing to send)"
        );
        assert_eq!(
            fail_message(Settings::load(config(&[
                ("max_tokens", "10"),
                ("keep_last_turns", "0")
            ]))),
            "stage config `keep_last_turns`: expected an integer of at least 1, got `0` \
             (zero would leave nothing to send)"
        );
    }

    #[test]
    fn values_that_do_not_parse_name_the_key() {
        for (key, value) in [
            ("max_tokens", "lots"),
            ("max_tokens", "-1"),
            ("max_tokens", "1.5"),
            ("max_tokens", "4294967296"),
            ("keep_last_turns", "two"),
            ("keep_last_turns", "-3"),
        ] {
            let mut pairs = vec![(key, value)];
            if key != "max_tokens" {
                pairs.push(("max_tokens", "100"));
            }
            let message = fail_message(Settings::load(config(&pairs)));
            assert!(
                message.starts_with(&format!("stage config `{key}`: expected ")),
                "{key} = {value}: {message}"
            );
            assert!(message.contains(&format!("got `{value}`")), "{message}");
        }
    }
}
