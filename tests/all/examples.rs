//! The example config the demo runs stays valid and keeps the contract other checks rely on.

use weir::config::{Config, Strategy};

#[test]
fn the_demo_config_is_valid_and_keeps_its_contract() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/weir.toml");
    let config = Config::load(path.as_ref()).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.server.admin_listen.to_string(), "127.0.0.1:9901");
    let demo = config.routes.iter().find(|r| r.model == "demo").unwrap();
    let stages: Vec<&str> = demo.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        stages,
        [
            "prompt-guard",
            "context-trim",
            "pii-redact",
            "system-prompt"
        ]
    );
    let targets: Vec<&str> = demo
        .targets
        .iter()
        .map(|&i| config.targets[i].base_url.as_str())
        .collect();
    assert_eq!(
        targets,
        ["http://127.0.0.1:9101/v1", "http://127.0.0.1:9102/v1"]
    );
    // The fallback is another provider's wire format (the sim serves both).
    let secondary = &config.targets[demo.targets[1]];
    assert_eq!(secondary.kind, weir::config::ProviderKind::Anthropic);
    assert_eq!(demo.strategy, Strategy::Fallback);
    assert!(demo.policy.max_attempts >= 2, "the demo exercises fallback");
    // The demo shows real costs: every upstream model is priced; auth is off.
    for &i in &demo.targets {
        let model = config.targets[i].model.as_deref().unwrap();
        assert!(
            config.cost.prices.contains_key(model),
            "{model} has no price"
        );
    }
    assert!(config.cost.prices_date.is_some());
    assert!(config.keys.is_empty(), "the local demo runs without keys");
    // Background jobs are on for the demo route, bounded below the targets' concurrency.
    let jobs = demo.jobs.expect("the demo route takes jobs");
    assert!(jobs.concurrency <= config.jobs.workers);
    assert!(config.data_dir.is_some(), "jobs survive restarts");
}

#[test]
fn the_keys_example_is_valid_and_limits_its_keys() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/weir-keys.toml");
    let config = Config::load(path.as_ref()).unwrap_or_else(|err| panic!("{err}"));
    let team = config.keys.iter().find(|k| k.name == "team-a").unwrap();
    assert_eq!(
        team.hash,
        weir::config::hash_key("sk-weir-demo-team-a-CHANGE-ME")
    );
    assert!(team.daily_budget.is_some() && team.monthly_budget.is_some());
    assert!(team.rpm.is_some() && team.tpm.is_some());
    assert!(team.max_cost_per_request.is_some() && team.max_llm_calls_per_request.is_some());
    let demo = config.routes.iter().find(|r| r.model == "demo").unwrap();
    assert!(demo.cache.per_key);
}

#[test]
fn the_fleet_example_shares_state_on_redis() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/fleet/weir.toml");
    let config = Config::load(path.as_ref()).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config.state.backend, weir::config::Backend::Redis);
    assert_eq!(config.state.url.as_deref(), Some("redis://127.0.0.1:6390"));
    assert_eq!(config.state.expected_nodes, 3);
    let key = &config.keys[0];
    assert_eq!(
        key.hash,
        weir::config::hash_key("sk-weir-fleet-demo-CHANGE-ME")
    );
    assert!(key.daily_budget.is_some() && key.rpm.is_some());
    let demo = config.routes.iter().find(|r| r.model == "demo").unwrap();
    assert!(demo.cache.enabled && demo.jobs.is_some());
}

/// Every example load-test scenario, and the weir config they share, is valid; each runs
/// the pipeline it says it runs and sets gates.
#[test]
fn the_example_scenarios_are_valid_and_gated() {
    use weir::loadtest::scenario::{Scenario, TrafficSource};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/scenarios");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") || path.ends_with("weir.toml") {
            continue;
        }
        let scenario = Scenario::load(&path).unwrap_or_else(|err| panic!("{err}"));
        let config = scenario
            .weir
            .config
            .as_ref()
            .expect("the examples start weir");
        Config::load(config).unwrap_or_else(|err| panic!("{err}"));
        assert!(matches!(scenario.traffic, TrafficSource::Synthetic(_)));
        assert!(
            scenario.gates != Default::default(),
            "{} sets gates",
            path.display()
        );
        names.push(scenario.name);
    }
    names.sort();
    assert_eq!(names, ["3am Saturday", "cost spike", "deploy under load"]);
}
