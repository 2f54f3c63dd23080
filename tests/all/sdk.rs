//! The official OpenAI SDKs (Python and Node) and Anthropic's Python SDK against
//! `weir serve`, with only the base URL changed: plain and streaming calls, tools, typed
//! errors, models, embeddings, the Responses API and the Messages API (`tests/sdk/`).

use std::process::Command;

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Runs `python3 tests/sdk/SCRIPT BASE_URL` against a fresh `weir serve` (the server tests'
/// config) when the Python package `module` is installed; in CI a missing package fails.
async fn python_sdk_check(module: &str, script: &str, base_path: &str) {
    if !python_has(module) {
        // CI installs the SDK (.ci/run); elsewhere say loudly what was not checked.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have the {module} Python package installed"
        );
        eprintln!("SKIPPED: `pip install {module}` to run the {module} SDK compatibility test");
        return;
    }
    let env = crate::server::start();
    let script = format!("{}/../tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let base_url = format!("http://{}{base_path}", env.weir.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").args([&script, &base_url]).output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "the {module} SDK check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_official_python_sdk_works_unchanged() {
    python_sdk_check("openai", "openai_sdk.py", "/v1").await;
}

#[tokio::test]
async fn the_official_anthropic_python_sdk_works_unchanged() {
    python_sdk_check("anthropic", "anthropic_sdk.py", "").await;
}

fn node_has_openai() -> bool {
    let sdk = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/sdk/node_modules/openai"
    );
    std::path::Path::new(sdk).exists()
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
}

#[tokio::test]
async fn the_official_node_sdk_works_unchanged() {
    if !node_has_openai() {
        // CI installs the SDK (.ci/run); elsewhere say loudly what was not checked.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have run `npm install --prefix tests/sdk openai`"
        );
        eprintln!("SKIPPED: `npm install --prefix tests/sdk openai` to run the Node SDK test");
        return;
    }
    let env = crate::server::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/sdk/openai_sdk.mjs");
    let base_url = format!("http://{}/v1", env.weir.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node").args([script, &base_url]).output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "the OpenAI Node SDK check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
