//! `weir check` on the real binary: exit 0 and a description for valid stages, one clear line
//! and a non-zero exit for anything else.

use std::path::PathBuf;
use std::process::Command;

fn weir_check(file: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["check", file])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn passes_for_every_first_party_stage_and_hello_stage() {
    for (file, name) in [
        (weir_test_artifacts::PII_REDACT, "pii-redact"),
        (weir_test_artifacts::PROMPT_GUARD, "prompt-guard"),
        (weir_test_artifacts::SYSTEM_PROMPT, "system-prompt"),
        (weir_test_artifacts::HELLO_STAGE, "hello-stage"),
    ] {
        let (ok, stdout, stderr) = weir_check(file);
        assert!(ok, "{file}: {stderr}");
        assert!(stdout.contains(&format!("ok: stage {name} ")), "{stdout}");
    }
}

fn assert_refused(file: &str, expected: &str) {
    let (ok, stdout, stderr) = weir_check(file);
    assert!(!ok, "{file} was accepted: {stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].contains(file), "the line names the file: {stderr}");
    assert!(
        lines[0].contains(expected),
        "expected {expected:?} in {stderr}"
    );
}

#[test]
fn fails_with_one_clear_line_for_a_core_module() {
    let path = scratch_file("core.wasm", b"\0asm\x01\0\0\0");
    assert_refused(
        path.to_str().unwrap(),
        "a core WebAssembly module, not a component",
    );
}

#[test]
fn fails_with_one_clear_line_for_a_random_file() {
    let path = scratch_file("random.wasm", b"this is not wasm at all, just text\n");
    assert_refused(path.to_str().unwrap(), "not a WebAssembly file");
}

#[test]
fn fails_with_one_clear_line_for_a_component_of_another_world() {
    assert_refused(weir_test_artifacts::OTHER_WORLD, "not a weir stage");
}

#[test]
fn fails_for_a_missing_file() {
    assert_refused("/nonexistent/stage.wasm", "cannot read");
}

/// Third probe, B5: `weir check ... | head -c 10` panicked ("failed printing to stdout:
/// Broken pipe", a backtrace, exit 101). A reader that goes away ends it quietly, as it ends
/// other Unix tools (SIGPIPE).
#[test]
fn a_reader_that_closes_the_pipe_ends_it_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "check",
            weir_test_artifacts::PII_REDACT,
            weir_test_artifacts::PROMPT_GUARD,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's read end is closed here; the rest of the output has nowhere to go.
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        status.success() || status.signal() == Some(13),
        "{status}: {stderr}"
    );
}
