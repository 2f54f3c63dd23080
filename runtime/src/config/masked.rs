//! The effective config as JSON for `GET /admin/config`, with secrets masked: derived from
//! the config structs' `Serialize`.
//!
//! The shape mirrors `weir.toml` (same table and key names, durations in `_ms`, memory in
//! `_mib`) with every default filled in, so an operator can see what is actually running.
//! Secret values (API keys, the admin token, the callback secret) are replaced by `"***"`;
//! the names of the environment variables that hold them are kept, so it is clear where they
//! come from. A target's extra `headers` and a stage's `config` often hold secrets too
//! (`api-key`, `x-api-key`, tokens in a stage's table), so their values are masked and only
//! their names shown. The structs holding secrets print the same masked form as `Debug`.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::document::lift;
use super::{Config, TargetSettings};

impl Config {
    /// The effective config for `GET /admin/config`: every table with its defaults filled in,
    /// API keys, the admin token, target header values and stage config values replaced by
    /// `"***"` (variable, header and config key names kept). A `fuel` of `null` means
    /// unmetered.
    pub fn to_masked_json(&self) -> Value {
        let mut json = to_json(self);
        json["prices"] = to_json(&self.cost.prices);
        // The embeddings target is kept as an index; show its name, as the file writes it.
        if let Some(Value::Array(routes)) = json.get_mut("routes") {
            for (route, out) in self.routes.iter().zip(routes) {
                let target = route
                    .cache
                    .semantic_embeddings
                    .and_then(|i| self.targets.get(i));
                out["cache"]["semantic_embeddings"] = target.map(|t| t.name.as_str()).into();
            }
        }
        json
    }
}

/// `serialize_with = "by_name"`: the targets as the file writes them, a table by name.
pub(crate) fn by_name<S: Serializer>(targets: &[TargetSettings], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(targets.iter().map(|target| (&target.name, target)))
}

/// `value` as JSON, nested structs lifted into their tables as the file writes them.
fn to_json<T: Serialize>(value: &T) -> Value {
    let mut json = serde_json::to_value(value)
        .unwrap_or_else(|err| Value::String(format!("cannot show the config: {err}")));
    lift(&mut json);
    json
}

/// `Debug` for a table holding secrets: its masked JSON, after `name`.
pub(crate) fn debug<T: Serialize>(
    value: &T,
    name: &str,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    write!(f, "{name} {}", to_json(value))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    const TEXT: &str = r#"
[server]
admin_token_env = "ADMIN"

[targets.primary]
base_url = "http://h/v1"
api_key_env = "KEY"
headers = { "X-Team" = "edge", "api-key" = "hdr-s3cret" }

[targets.local]
base_url = "http://127.0.0.1:1"

[[routes]]
model = "demo"
targets = ["primary", "local"]

[[routes.stages]]
name = "guard"
path = "/p/guard.wasm"
on_error = "skip"
fuel = 0
config = { max = 3, token = "cfg-s3cret" }
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "ADMIN" => Some("admin-s3cret".to_owned()),
            "KEY" => Some("sk-s3cret".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn secrets_are_masked_and_their_variable_names_kept() {
        let config = Config::parse(TEXT, Path::new("weir.toml"), &env);
        let Ok(config) = config else {
            panic!("config rejected: {config:?}");
        };
        let json = config.to_masked_json();
        let text = json.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(json["server"]["admin_token"], "***");
        assert_eq!(json["server"]["admin_token_env"], "ADMIN");
        assert_eq!(json["targets"]["primary"]["api_key"], "***");
        assert_eq!(json["targets"]["primary"]["api_key_env"], "KEY");
        assert_eq!(json["targets"]["local"]["api_key"], Value::Null);
        assert_eq!(json["targets"]["local"]["api_key_env"], Value::Null);
    }

    #[test]
    fn the_effective_values_mirror_the_toml_keys() {
        let config = Config::parse(TEXT, Path::new("weir.toml"), &env);
        let Ok(config) = config else {
            panic!("config rejected: {config:?}");
        };
        let json = config.to_masked_json();
        assert_eq!(json["server"]["listen"], "127.0.0.1:8080");
        assert_eq!(json["server"]["drain_timeout_ms"], 10_000);
        assert_eq!(json["server"]["log_format"], "human");
        assert_eq!(json["server"]["header_read_timeout_ms"], 10_000);
        assert_eq!(json["server"]["body_read_timeout_ms"], 30_000);
        assert_eq!(json["server"]["idle_timeout_ms"], 60_000);
        assert_eq!(json["server"]["write_timeout_ms"], 30_000);
        assert_eq!(json["server"]["max_connections"], 10_000);
        assert_eq!(json["server"]["admin_allowed_hosts"], json!([]));
        assert_eq!(json["sandbox"]["fuel"], 100_000_000);
        assert_eq!(json["sandbox"]["deadline_ms"], 200);
        assert_eq!(json["sandbox"]["memory_limit_mib"], 64);
        assert_eq!(json["sandbox"]["max_memory_mib"], 64);
        assert_eq!(json["sandbox"]["allocator"], "auto");
        assert_eq!(json["targets"]["primary"]["timeout_ms"], 60_000);
        assert_eq!(
            json["targets"]["primary"]["headers"],
            json!({ "api-key": "***", "x-team": "***" }),
            "header names are shown, their values (often secrets) masked"
        );
        let route = &json["routes"][0];
        assert_eq!(route["targets"], json!(["primary", "local"]));
        let stage = &route["stages"][0];
        assert_eq!(stage["on_error"], "skip");
        assert_eq!(stage["fuel"], Value::Null, "fuel = 0 runs unmetered");
        assert_eq!(stage["deadline_ms"], 200);
        assert_eq!(
            stage["config"],
            json!({ "max": "***", "token": "***" }),
            "config keys are shown, their values masked"
        );
        assert_eq!(stage["path"], "/p/guard.wasm");
    }
}
