//! The stage's config, read once per request and validated: which granted service to query
//! and where (`service`, `path`), how to embed the question (`embed_model`), how many passages
//! to ask for (`top_k`) and how many tokens of them to add (`max_context_tokens`, counted for
//! `count_model`). Takes the raw lookup as a function so that it can be tested without the
//! host.

use std::ops::RangeInclusive;

use weir_sdk::StageError;
use weir_sdk::config::{ConfigError, parse_value};

/// The embedding model when `embed_model` is not set.
pub const DEFAULT_EMBED_MODEL: &str = "text-embedding-3-small";
/// Passages asked for when `top_k` is not set.
pub const DEFAULT_TOP_K: u32 = 3;
/// The range `top_k` must be in.
pub const TOP_K_RANGE: RangeInclusive<u32> = 1..=50;
/// Tokens of passages added when `max_context_tokens` is not set.
pub const DEFAULT_MAX_CONTEXT_TOKENS: u32 = 1000;

/// The validated config of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The granted service to query (`service`, required): the authority of the call.
    pub service: String,
    /// The query path on it, starting with `/` (`path`, required), for example
    /// `/api/v2/tenants/default_tenant/databases/default_database/collections/<id>/query`.
    pub path: String,
    /// The model that embeds the question (`embed_model`; default
    /// [`DEFAULT_EMBED_MODEL`]). It must be the model the collection was embedded with.
    pub embed_model: String,
    /// Passages asked of the service (`top_k`; default [`DEFAULT_TOP_K`], in
    /// [`TOP_K_RANGE`]).
    pub top_k: u32,
    /// Most tokens of passage text added to the request (`max_context_tokens`; default
    /// [`DEFAULT_MAX_CONTEXT_TOKENS`], at least 1).
    pub max_context_tokens: u32,
    /// The model whose tokenizer counts passages (`count_model`; default: the request's).
    pub count_model: Option<String>,
}

impl Settings {
    /// Reads the config through `get` (the host's `config-get` in production). A missing
    /// `service` or `path`, or a value that is set but does not parse or is out of range,
    /// fails the stage with a message naming the key.
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<Settings, StageError> {
        let required = |key: &str| {
            get(key).filter(|value| !value.is_empty()).ok_or_else(|| {
                StageError::fail(format!("retrieve: config key `{key}` is required"))
            })
        };
        let service = required("service")?;
        let path = required("path")?;
        if !path.starts_with('/') {
            return Err(invalid("path", &path, "a path starting with `/`", "not absolute").into());
        }
        let embed_model = parse_value::<String>("embed_model", get("embed_model"))?
            .unwrap_or_else(|| DEFAULT_EMBED_MODEL.to_string());
        let top_k = parse_value::<u32>("top_k", get("top_k"))?.unwrap_or(DEFAULT_TOP_K);
        if !TOP_K_RANGE.contains(&top_k) {
            let expected = format!(
                "a number from {} to {}",
                TOP_K_RANGE.start(),
                TOP_K_RANGE.end()
            );
            return Err(invalid("top_k", &top_k.to_string(), &expected, "out of range").into());
        }
        let max_context_tokens =
            parse_value::<u32>("max_context_tokens", get("max_context_tokens"))?
                .unwrap_or(DEFAULT_MAX_CONTEXT_TOKENS);
        if max_context_tokens == 0 {
            return Err(invalid("max_context_tokens", "0", "at least 1", "out of range").into());
        }
        let count_model = parse_value::<String>("count_model", get("count_model"))?;
        Ok(Settings {
            service,
            path,
            embed_model,
            top_k,
            max_context_tokens,
            count_model,
        })
    }

    /// The model that counts passage tokens for a request to `request_model`.
    pub fn count_model<'a>(&'a self, request_model: &'a str) -> &'a str {
        self.count_model.as_deref().unwrap_or(request_model)
    }
}

fn invalid(key: &str, value: &str, expected: &str, reason: &str) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        expected: expected.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use weir_sdk::testing::{config, fail_message};

    use super::*;

    const PATH: &str = "/api/v2/tenants/t/databases/d/collections/c1/query";

    #[test]
    fn defaults() {
        let settings = Settings::load(config(&[("service", "chroma"), ("path", PATH)])).ok();
        assert_eq!(
            settings,
            Some(Settings {
                service: "chroma".to_string(),
                path: PATH.to_string(),
                embed_model: DEFAULT_EMBED_MODEL.to_string(),
                top_k: DEFAULT_TOP_K,
                max_context_tokens: DEFAULT_MAX_CONTEXT_TOKENS,
                count_model: None,
            })
        );
        let settings = settings.as_ref();
        assert_eq!(settings.map(|s| s.count_model("gpt-4o")), Some("gpt-4o"));
    }

    #[test]
    fn explicit_values() {
        let settings = Settings::load(config(&[
            ("service", "docs"),
            ("path", "/query"),
            ("embed_model", "nomic-embed"),
            ("top_k", "50"),
            ("max_context_tokens", "1"),
            ("count_model", "gpt-4o-mini"),
        ]))
        .ok();
        let settings = settings.as_ref();
        assert_eq!(
            settings.map(|s| s.embed_model.as_str()),
            Some("nomic-embed")
        );
        assert_eq!(settings.map(|s| s.top_k), Some(50));
        assert_eq!(settings.map(|s| s.max_context_tokens), Some(1));
        assert_eq!(
            settings.map(|s| s.count_model("gpt-4o")),
            Some("gpt-4o-mini")
        );
    }

    #[test]
    fn service_and_path_are_required() {
        assert_eq!(
            fail_message(Settings::load(config(&[("path", PATH)]))),
            "retrieve: config key `service` is required"
        );
        assert_eq!(
            fail_message(Settings::load(config(&[("service", "chroma")]))),
            "retrieve: config key `path` is required"
        );
        assert_eq!(
            fail_message(Settings::load(config(&[("service", ""), ("path", PATH)]))),
            "retrieve: config key `service` is required"
        );
    }

    #[test]
    fn out_of_range_and_malformed_values_fail_clearly() {
        let load = |key: &str, value: &str| {
            // The first pair with a key wins: the one under test comes first.
            fail_message(Settings::load(config(&[
                (key, value),
                ("service", "chroma"),
                ("path", PATH),
            ])))
        };
        assert_eq!(
            load("path", "query"),
            "stage config `path`: expected a path starting with `/`, got `query` (not absolute)"
        );
        assert_eq!(
            load("top_k", "0"),
            "stage config `top_k`: expected a number from 1 to 50, got `0` (out of range)"
        );
        assert_eq!(
            load("top_k", "51"),
            "stage config `top_k`: expected a number from 1 to 50, got `51` (out of range)"
        );
        assert!(load("top_k", "three").starts_with("stage config `top_k`: expected u32"));
        assert_eq!(
            load("max_context_tokens", "0"),
            "stage config `max_context_tokens`: expected at least 1, got `0` (out of range)"
        );
        assert!(
            load("max_context_tokens", "-5")
                .starts_with("stage config `max_context_tokens`: expected u32")
        );
    }
}
