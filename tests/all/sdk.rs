//! The official OpenAI SDKs (Python and Node) and Anthropic's Python SDK against
//! `weir serve`, with only the base URL changed: plain and streaming calls, tools, typed
//! errors, models, embeddings, the Responses API and the Messages API (`tests/sdk/`).

use std::process::Command;

fn python_has_openai() -> bool {
    Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|out| out.status.success())
}

#[tokio::test]
async fn the_official_python_sdk_works_unchanged() {
    if !python_has_openai() {
        // CI installs the SDK (.ci/run); elsewhere say loudly what was not checked.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have the openai Python package installed"
        );
        eprintln!("SKIPPED: `pip install openai` to run the OpenAI SDK compatibility test");
        return;
    }
    let env = crate::server::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/sdk/openai_sdk.py");
    let base_url = format!("http://{}/v1", env.weir.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").args([script, &base_url]).output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "the OpenAI SDK check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn python_has_anthropic() -> bool {
    Command::new("python3")
        .args(["-c", "import anthropic"])
        .output()
        .is_ok_and(|out| out.status.success())
}

#[tokio::test]
async fn the_official_anthropic_python_sdk_works_unchanged() {
    if !python_has_anthropic() {
        // CI installs the SDK (.ci/run); elsewhere say loudly what was not checked.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have the anthropic Python package installed"
        );
        eprintln!("SKIPPED: `pip install anthropic` to run the Anthropic SDK compatibility test");
        return;
    }
    let env = crate::server::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/sdk/anthropic_sdk.py");
    let base_url = format!("http://{}", env.weir.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").args([script, &base_url]).output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "the Anthropic SDK check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
