//! Scenario folders for the config: `tests/config/invalid/NAME.toml` must fail with exactly
//! the error in `NAME.err`, and `tests/config/valid/weir.toml` (the full reference example)
//! must load with the values asserted here.
//!
//! Run with `UPDATE_SNAPSHOTS=1` to rewrite every `.err` file from the current output, then
//! review the diff. Secrets come from [`snapshot_env`], never from the real environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// `tests/config/` at the workspace root (the crate lives one level down).
const SNAPSHOT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/config");

/// The environment every case sees: these two variables are set, nothing else is.
fn snapshot_env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" => Some("sk-test-openai".to_owned()),
        "WEIR_ADMIN_TOKEN" => Some("admin-test-token".to_owned()),
        _ => None,
    }
}

/// Files in `dir` with extension `ext`, sorted.
fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => panic!("cannot read snapshot directory {}: {err}", dir.display()),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn every_invalid_config_fails_with_its_expected_error() {
    let dir = Path::new(SNAPSHOT_DIR).join("invalid");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1");
    let cases = files_with_extension(&dir, "toml");
    assert!(
        cases.len() >= 15,
        "expected at least 15 cases in {}, found {}",
        dir.display(),
        cases.len()
    );
    let mut failures: Vec<String> = Vec::new();
    for case in &cases {
        let name = file_name(case);
        let shown = Path::new("invalid").join(&name);
        let text = match std::fs::read_to_string(case) {
            Ok(text) => text,
            Err(err) => panic!("cannot read {}: {err}", case.display()),
        };
        let actual = match Config::parse(&text, &shown, &snapshot_env) {
            Ok(_) => {
                failures.push(format!("{}: parsed without an error", shown.display()));
                continue;
            }
            Err(err) => format!("{err}\n"),
        };
        let expected_file = case.with_extension("err");
        if update {
            if let Err(err) = std::fs::write(&expected_file, &actual) {
                panic!("cannot write {}: {err}", expected_file.display());
            }
            continue;
        }
        match std::fs::read_to_string(&expected_file) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{}:\n  - expected: {}\n  + actual:   {}",
                shown.display(),
                expected.trim_end(),
                actual.trim_end()
            )),
            Err(_) => failures.push(format!(
                "{}: no {} (actual: {})",
                shown.display(),
                file_name(&expected_file),
                actual.trim_end()
            )),
        }
    }
    for expected in files_with_extension(&dir, "err") {
        if !expected.with_extension("toml").exists() {
            failures.push(format!(
                "invalid/{}: no matching .toml case",
                file_name(&expected)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} config error snapshots differ (rerun with UPDATE_SNAPSHOTS=1 to accept the \
         actual output, then review the diff):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn the_full_reference_example_loads_with_every_value() {
    let file = Path::new(SNAPSHOT_DIR).join("valid/weir.toml");
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(err) => panic!("cannot read {}: {err}", file.display()),
    };
    let config = match Config::parse(&text, Path::new("valid/weir.toml"), &snapshot_env) {
        Ok(config) => config,
        Err(err) => panic!("the reference example is rejected: {err}"),
    };

    assert_eq!(config.source, Path::new("valid/weir.toml"));
    let server = &config.server;
    assert_eq!(server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(server.admin_listen.to_string(), "127.0.0.1:9901");
    assert_eq!(server.admin_token_env.as_deref(), Some("WEIR_ADMIN_TOKEN"));
    assert_eq!(server.admin_token.as_deref(), Some("admin-test-token"));
    assert_eq!(server.max_body_bytes, 1_048_576);
    assert_eq!(
        server.admin_allowed_hosts,
        [
            crate::config::HostName::Name("weir.internal".to_owned()),
            crate::config::HostName::Ip(std::net::Ipv4Addr::new(10, 0, 0, 5).into()),
        ]
    );
    assert_eq!(
        server.connections,
        crate::config::ConnectionLimits {
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(15),
            max_connections: 2048,
        }
    );
    assert_eq!(server.drain_timeout, Duration::from_secs(10));
    assert_eq!(server.log_format, LogFormat::Human);

    let defaults = CallLimits {
        fuel: Some(100_000_000),
        deadline: Duration::from_millis(200),
        memory_bytes: 64 << 20,
    };
    assert_eq!(
        config.sandbox,
        SandboxSettings {
            pool_size: 512,
            allocator: Allocator::Auto,
            epoch_tick: Duration::from_millis(5),
            fuel_metering: true,
            defaults,
            max_memory_bytes: 64 << 20,
            log_line_max_bytes: 4096,
            log_lines_per_call: 100,
            output_max_bytes: 16_384,
            stage_output_max_bytes: 1 << 20,
            core_instances_per_component: 64,
            memories_per_component: 4,
            tables_per_component: 8,
            large_stage_mib: 2,
            artifact_cache_max_bytes: 2048 << 20,
            artifact_key_file: None,
        }
    );

    let names: Vec<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["primary", "secondary"]);
    let primary = &config.targets[0];
    assert_eq!(primary.base_url, "http://127.0.0.1:9101/v1");
    assert_eq!(primary.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
    assert_eq!(primary.api_key.as_deref(), Some("sk-test-openai"));
    assert_eq!(primary.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(primary.timeout, Duration::from_secs(30));
    assert_eq!(primary.headers, [("x-team".to_owned(), "edge".to_owned())]);
    assert_eq!(primary.limits.stream_idle_timeout, Duration::from_secs(15));
    assert_eq!(primary.limits.max_stream_bytes, 8 << 20);
    let secondary = &config.targets[1];
    assert_eq!(
        secondary.base_url, "http://127.0.0.1:9102/v1",
        "trailing / is stripped"
    );
    assert_eq!(
        (secondary.api_key.as_deref(), secondary.model.as_deref()),
        (None, None)
    );
    assert_eq!(secondary.timeout, Duration::from_secs(60));
    assert!(secondary.headers.is_empty());
    assert_eq!(
        (
            secondary.limits.stream_idle_timeout,
            secondary.limits.max_stream_bytes
        ),
        (
            secondary.ttft_timeout,
            crate::config::TargetLimits::default().max_stream_bytes
        ),
        "a stream may pause between events as long as before its first one"
    );

    assert_eq!(config.routes.len(), 1);
    let route = &config.routes[0];
    assert_eq!(route.model, "demo");
    assert_eq!(route.targets, [0, 1]);
    assert_eq!(route.stages.len(), 3);
    assert_eq!(route.max_output_retries, 1);
    let guard = &route.stages[0];
    assert_eq!(guard.name, "prompt-guard");
    assert_eq!(guard.path, Path::new("valid/plugins/prompt_guard.wasm"));
    assert_eq!(guard.on_error, OnErrorSetting::Fail);
    assert_eq!(
        guard.limits,
        CallLimits {
            fuel: Some(5_000_000),
            deadline: Duration::from_millis(100),
            memory_bytes: 32 << 20,
        }
    );
    let config_of = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        guard.config,
        config_of(&[("deny", r#"["x"]"#), ("max_chars", "8000")])
    );
    let retrieve = &route.stages[1];
    assert_eq!(retrieve.on_error, OnErrorSetting::Degrade);
    assert_eq!(retrieve.services, ["search"]);
    assert!(guard.services.is_empty(), "no service unless granted");
    assert_eq!(config.services.len(), 1);
    let search = &config.services[0];
    assert_eq!(search.name, "search");
    assert_eq!(
        search.urls,
        ["http://127.0.0.1:8000", "http://127.0.0.1:8001"]
    );
    assert_eq!(search.timeout, Duration::from_millis(300));
    assert_eq!(search.policy.deadline, Duration::from_millis(1500));
    assert_eq!(search.policy.max_attempts, 4);
    assert!(search.policy.retry_on.contains(502) && !search.policy.retry_on.contains(504));
    assert_eq!(search.max_concurrency, 32);
    assert_eq!(search.cache_ttl_s, Some(60));
    assert_eq!(
        search.price_per_call,
        Some(500_000_000),
        "$0.0005 in pico-dollars"
    );
    assert_eq!(search.breaker.consecutive_failures, 3);
    assert_eq!(search.weights, [1, 1]);
    assert_eq!(search.max_response_bytes, 4 << 20);
    let redact = &route.stages[2];
    assert_eq!(redact.name, "pii-redact");
    assert_eq!(redact.path, Path::new("/opt/weir/pii_redact.wasm"));
    assert_eq!(redact.on_error, OnErrorSetting::Skip);
    assert_eq!(redact.limits, defaults);
    assert_eq!(
        redact.config,
        config_of(&[
            ("mode", "mask"),
            ("restore", "true"),
            ("kinds", r#"{"email":true,"phone":false}"#),
        ])
    );

    let masked = config.to_masked_json().to_string();
    assert!(!masked.contains("sk-test-openai"), "{masked}");
    assert!(!masked.contains("admin-test-token"), "{masked}");
}

/// `valid/every_key.toml` sets every key; `valid/every_key.json` is what `GET /admin/config`
/// shows for it (secrets masked). The file is read by a path relative to the crate, so the
/// paths it resolves (and shows) are the same on every machine.
#[test]
fn the_masked_config_of_every_key_matches_its_snapshot() {
    let file = Path::new("../tests/config/valid/every_key.toml");
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) => panic!("cannot read {}: {err}", file.display()),
    };
    let config = match Config::parse(&text, file, &snapshot_env) {
        Ok(config) => config,
        Err(err) => panic!("every_key.toml is rejected: {err}"),
    };
    let actual = match serde_json::to_string_pretty(&config.to_masked_json()) {
        Ok(json) => format!("{json}\n"),
        Err(err) => panic!("the masked config is not JSON: {err}"),
    };
    assert!(
        !actual.contains("s3cret") && !actual.contains("sk-test-openai"),
        "{actual}"
    );
    let expected_file = Path::new(SNAPSHOT_DIR).join("valid/every_key.json");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        if let Err(err) = std::fs::write(&expected_file, &actual) {
            panic!("cannot write {}: {err}", expected_file.display());
        }
        return;
    }
    let expected = std::fs::read_to_string(&expected_file).unwrap_or_default();
    assert!(
        expected == actual,
        "the masked config differs from {} (rerun with UPDATE_SNAPSHOTS=1 to accept, then \
         review the diff):\n{actual}",
        expected_file.display()
    );
}
