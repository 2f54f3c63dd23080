//! The effective config as JSON for `GET /admin/config`, with secrets masked.
//!
//! The shape mirrors `weir.toml` (same table and key names, durations in `_ms`, memory in
//! `_mib`) with every default filled in, so an operator can see what is actually running.
//! Secret values (API keys, the admin token) are replaced by `"***"`; the names of the
//! environment variables that hold them are kept, so it is clear where they come from. A
//! target's extra `headers` and a stage's `config` often hold secrets too (`api-key`,
//! `x-api-key`, tokens in a stage's table), so their values are masked and only their names
//! shown.

use serde_json::{Map, Value, json};

use super::limits::{Allocator, CallLimits};
use super::load::Config;
use super::route::OnErrorSetting;
use super::server::LogFormat;

/// What a secret is shown as.
pub const MASK: &str = "***";

impl Config {
    /// The effective config for `GET /admin/config`: every table with its defaults filled in,
    /// API keys, the admin token, target header values and stage config values replaced by
    /// `"***"` (variable, header and config key names kept). A `fuel` of `null` means
    /// unmetered.
    pub fn to_masked_json(&self) -> Value {
        let server = &self.server;
        let sandbox = &self.sandbox;
        let targets: Map<String, Value> = self
            .targets
            .iter()
            .map(|target| {
                let headers: Map<String, Value> = target
                    .headers
                    .iter()
                    .map(|(name, _)| (name.clone(), Value::from(MASK)))
                    .collect();
                let value = json!({
                    "base_url": target.base_url,
                    "api_key_env": target.api_key_env,
                    "api_key": target.api_key.as_ref().map(|_| MASK),
                    "model": target.model,
                    "timeout_ms": millis(target.timeout),
                    "headers": headers,
                    "ttft_timeout_ms": millis(target.ttft_timeout),
                    "max_concurrency": target.limits.max_concurrency,
                    "rpm": target.limits.rpm,
                    "tpm": target.limits.tpm,
                    "stream_idle_timeout_ms": millis(target.limits.stream_idle_timeout),
                    "max_stream_bytes": target.limits.max_stream_bytes,
                    "breaker": {
                        "consecutive_failures": target.limits.breaker.consecutive_failures,
                        "failure_rate_percent": target.limits.breaker.failure_rate_percent,
                        "window": target.limits.breaker.window,
                        "min_requests": target.limits.breaker.min_requests,
                        "ejection_ms": millis(target.limits.breaker.ejection),
                        "max_ejection_ms": millis(target.limits.breaker.max_ejection),
                    },
                });
                (target.name.clone(), value)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|route| {
                let target_names: Vec<&str> = route
                    .targets
                    .iter()
                    .filter_map(|&i| self.targets.get(i).map(|t| t.name.as_str()))
                    .collect();
                let stages: Vec<Value> = route
                    .stages
                    .iter()
                    .map(|stage| {
                        let mut value = json!({
                            "name": stage.name,
                            "path": stage.path.to_string_lossy(),
                            "on_error": match stage.on_error {
                                OnErrorSetting::Fail => "fail",
                                OnErrorSetting::Skip => "skip",
                            },
                            "config": stage
                                .config
                                .keys()
                                .map(|key| (key.clone(), Value::from(MASK)))
                                .collect::<Map<String, Value>>(),
                        });
                        insert_limits(&mut value, &stage.limits);
                        value
                    })
                    .collect();
                let p = &route.policy;
                json!({
                    "model": route.model,
                    "targets": target_names,
                    "stages": stages,
                    "strategy": match route.strategy {
                        super::Strategy::Fallback => "fallback",
                        super::Strategy::Weighted => "weighted",
                        super::Strategy::LeastLatency => "least-latency",
                    },
                    "weights": route.weights,
                    "cache": {
                        "enabled": route.cache.enabled,
                        "ttl_ms": millis(route.cache.ttl),
                        "cache_nonzero_temperature": route.cache.cache_nonzero_temperature,
                        "semantic_threshold_percent": route.cache.semantic_threshold.map(|t| t.0),
                        "per_key": route.cache.per_key,
                        "semantic_embeddings": route
                            .cache
                            .semantic_embeddings
                            .and_then(|i| self.targets.get(i))
                            .map(|t| t.name.as_str()),
                    },
                    "max_attempts": p.max_attempts,
                    "retry_on": p.retry_on.to_vec(),
                    "deadline_ms": millis(p.deadline),
                    "backoff_base_ms": millis(p.backoff_base),
                    "backoff_max_ms": millis(p.backoff_max),
                    "retry_after_max_ms": millis(p.retry_after_max),
                    "retry_budget_percent": p.retry_budget_percent,
                    "queue_size": p.queue_size,
                    "queue_timeout_ms": millis(p.queue_timeout),
                    "jobs": route.jobs.map(|jobs| json!({ "concurrency": jobs.concurrency })),
                })
            })
            .collect();
        let mut sandbox_json = json!({
            "pool_size": sandbox.pool_size,
            "allocator": match sandbox.allocator {
                Allocator::Auto => "auto",
                Allocator::Pooling => "pooling",
                Allocator::OnDemand => "on-demand",
            },
            "fuel_metering": sandbox.fuel_metering,
            "max_memory_mib": sandbox.max_memory_bytes >> 20,
            "epoch_tick_ms": millis(sandbox.epoch_tick),
            "log_line_max_bytes": sandbox.log_line_max_bytes,
            "output_max_bytes": sandbox.output_max_bytes,
            "artifact_key_file": sandbox.artifact_key_file.as_ref().map(|f| f.to_string_lossy()),
        });
        insert_limits(&mut sandbox_json, &sandbox.defaults);
        json!({
            "source": self.source.to_string_lossy(),
            "cache": {
                "max_memory_mib": self.cache.max_memory_bytes >> 20,
                "disk_dir": self.cache.disk_dir.as_ref().map(|d| d.to_string_lossy()),
                "disk_max_mib": self.cache.max_disk_bytes >> 20,
            },
            "server": {
                "listen": server.listen.to_string(),
                "admin_listen": server.admin_listen.to_string(),
                "admin_token_env": server.admin_token_env,
                "admin_token": server.admin_token.as_ref().map(|_| MASK),
                "admin_allowed_hosts": server.admin_allowed_hosts.iter().map(|host| match host {
                    super::HostName::Ip(ip) => ip.to_string(),
                    super::HostName::Name(name) => name.clone(),
                }).collect::<Vec<_>>(),
                "max_body_bytes": server.max_body_bytes,
                "header_read_timeout_ms": millis(server.connections.header_read_timeout),
                "body_read_timeout_ms": millis(server.connections.body_read_timeout),
                "idle_timeout_ms": millis(server.connections.idle_timeout),
                "write_timeout_ms": millis(server.connections.write_timeout),
                "max_connections": server.connections.max_connections,
                "drain_timeout_ms": millis(server.drain_timeout),
                "log_format": match server.log_format {
                    LogFormat::Human => "human",
                    LogFormat::Json => "json",
                },
            },
            "sandbox": sandbox_json,
            "targets": targets,
            "routes": routes,
            "cost": {
                "prices_file": self.cost.prices_file.as_ref().map(|p| p.to_string_lossy()),
                "prices_date": self.cost.prices_date,
                "default_max_tokens": self.cost.default_max_tokens,
                "count_failed_attempts": self.cost.count_failed_attempts,
                "request_log": self.cost.request_log.as_ref().map(|p| p.to_string_lossy()),
                "fuel_usd_per_billion": self.cost.fuel_pico_per_million as f64 / 1e9,
            },
            "prices": self.cost.prices.iter().map(|(model, price)| (model.clone(), json!({
                "input_per_mtok": price.input as f64 / 1e6,
                "cached_input_per_mtok": price.cached_input as f64 / 1e6,
                "output_per_mtok": price.output as f64 / 1e6,
            }))).collect::<Map<String, Value>>(),
            // Key hashes are not secrets, but there is no reason to show them either.
            "keys": self.keys.iter().map(|key| {
                let usd = |pico: Option<u64>| pico.map(super::pico_to_usd);
                json!({
                    "name": key.name,
                    "hash": MASK,
                    "daily_budget_usd": usd(key.daily_budget),
                    "monthly_budget_usd": usd(key.monthly_budget),
                    "rpm": key.rpm,
                    "tpm": key.tpm,
                    "max_cost_per_request_usd": usd(key.max_cost_per_request),
                    "max_llm_calls_per_request": key.max_llm_calls_per_request,
                })
            }).collect::<Vec<_>>(),
            "data_dir": self.data_dir.as_ref().map(|d| d.to_string_lossy()),
            "telemetry": {
                "metrics": self.telemetry.metrics,
                "recent_requests": self.telemetry.recent_requests,
                "log_inputs": self.telemetry.log_inputs,
                "otlp_endpoint": self.telemetry.otlp_endpoint,
                "service_name": self.telemetry.service_name,
            },
            "jobs": {
                "workers": self.jobs.workers,
                "max_queued": self.jobs.max_queued,
                "max_attempts": self.jobs.max_attempts,
                "backoff_base_ms": millis(self.jobs.backoff_base),
                "backoff_max_ms": millis(self.jobs.backoff_max),
                "callback_secret_env": self.jobs.callback_secret_env,
                "callback_secret": self.jobs.callback_secret.as_ref().map(|_| MASK),
                "callback_allow_hosts": self.jobs.callback_allow_hosts,
                "callback_allow_private": self.jobs.callback_allow_private,
                "callback_max_attempts": self.jobs.callback_max_attempts,
                "callback_timeout_ms": millis(self.jobs.callback_timeout),
                "callback_connect_timeout_ms": millis(self.jobs.callback_connect_timeout),
                "callback_max_response_bytes": self.jobs.callback_max_response_bytes,
            },
        })
    }
}

/// Adds `fuel`, `deadline_ms` and `memory_limit_mib` to a JSON object.
fn insert_limits(object: &mut Value, limits: &CallLimits) {
    if let Value::Object(map) = object {
        map.insert("fuel".to_owned(), json!(limits.fuel));
        map.insert("deadline_ms".to_owned(), json!(millis(limits.deadline)));
        map.insert(
            "memory_limit_mib".to_owned(),
            json!(limits.memory_bytes >> 20),
        );
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

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
