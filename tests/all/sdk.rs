//! The official OpenAI Python SDK against `weir serve`, with only the base URL changed:
//! plain and streaming calls, typed errors, model listing (`tests/sdk/openai_sdk.py`).

use std::process::Command;

use crate::procs::{serve, sim};

fn python_has_openai() -> bool {
    Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success())
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
    let primary = sim(&[]);
    let secondary = sim(&[]);
    let config = format!(
        r#"
[targets.primary]
base_url = "http://{}/v1"
[targets.secondary]
base_url = "http://{}/v1"
[[routes]]
model = "demo"
targets = ["primary", "secondary"]
[[routes.stages]]
name = "prompt-guard"
path = "{}"
[[routes.stages]]
name = "pii-redact"
path = "{}"
[[routes.stages]]
name = "system-prompt"
path = "{}"
config = {{ prompt = "You serve the {{{{team}}}} team." }}
"#,
        primary.addr,
        secondary.addr,
        weir_test_artifacts::PROMPT_GUARD,
        weir_test_artifacts::PII_REDACT,
        weir_test_artifacts::SYSTEM_PROMPT,
    );
    let weir = serve(&config);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/sdk/openai_sdk.py");
    let base_url = format!("http://{}/v1", weir.addr);
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
