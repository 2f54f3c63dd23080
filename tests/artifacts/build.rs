//! Builds every guest component the tests run — the first-party plugins, `hello-stage` and
//! the guest test programs — for `wasm32-wasip2`, and writes their paths into
//! `$OUT_DIR/artifacts.rs`.
//!
//! Guests get their own target directory next to the host's (`<target>/guests`), so the
//! nested cargo never waits on the outer one's lock and rebuilds are incremental. The build
//! fails if a mode of the chaos test program has no host test (`chaos("<mode>")` in
//! `tests/all/`), so a guest behaviour cannot go untested.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, const name) of every guest built here.
const GUESTS: &[(&str, &str)] = &[
    ("pii-redact", "PII_REDACT"),
    ("prompt-guard", "PROMPT_GUARD"),
    ("system-prompt", "SYSTEM_PROMPT"),
    ("context-trim", "CONTEXT_TRIM"),
    ("json-guard", "JSON_GUARD"),
    ("retrieve", "RETRIEVE"),
    ("hello-stage", "HELLO_STAGE"),
    ("example-stage", "EXAMPLE_RUST"),
    ("weir-test-chaos", "CHAOS"),
    ("weir-test-other-world", "OTHER_WORLD"),
    ("weir-test-outbound", "OUTBOUND"),
    ("weir-test-passthrough", "PASSTHROUGH"),
    ("weir-test-v1-stage", "V1_STAGE"),
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .expect("tests/artifacts sits two levels below the workspace root")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR = <target>/<profile>/build/<pkg>-<hash>/out
    let target_root = out_dir
        .ancestors()
        .nth(4)
        .expect("OUT_DIR is four levels below the target directory")
        .to_path_buf();
    let guest_target = target_root.join("guests");

    for dir in [
        "wit",
        "plugin-sdk",
        "plugins",
        "examples/hello-stage",
        "examples/stages/rust",
        "tests/programs",
        "tests/all",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    // The guests' rustflags (stack size) live here.
    println!(
        "cargo:rerun-if-changed={}",
        root.join(".cargo/config.toml").display()
    );

    check_chaos_modes_are_tested(&root);
    ensure_wasm_target();

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"])
        .env("CARGO_TARGET_DIR", &guest_target);
    for (package, _) in GUESTS {
        cmd.args(["-p", package]);
    }
    // What the outer build sets for the host must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the guest components");
    assert!(
        status.success(),
        "building the guest components failed ({status})"
    );

    let wasm_dir = guest_target.join("wasm32-wasip2").join("release");
    let mut consts = String::new();
    for (package, name) in GUESTS {
        let file = wasm_dir.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(
            file.exists(),
            "guest {package} was not built at {}",
            file.display()
        );
        consts.push_str(&format!(
            "/// The `{package}` component.\npub const {name}: &str = {:?};\n",
            file.display().to_string()
        ));
    }
    fs::write(out_dir.join("artifacts.rs"), consts).expect("cannot write artifacts.rs");
}

/// The guest target, which rustup does not add to an already-installed toolchain even though
/// `rust-toolchain.toml` names it: add it here (idempotent) so `cargo test --workspace` works on
/// a fresh machine, or fail with the one command that fixes it.
fn ensure_wasm_target() {
    const TARGET: &str = "wasm32-wasip2";
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let installed = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .is_some_and(|dir| dir.is_dir());
    if installed {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup (one time)");
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        added,
        "the {TARGET} target is not installed and `rustup target add {TARGET}` failed: run it by hand"
    );
}

/// Every mode in the chaos program's `MODES` must be exercised by a host test.
fn check_chaos_modes_are_tested(root: &Path) {
    let program = fs::read_to_string(root.join("tests/programs/chaos/src/lib.rs"))
        .expect("cannot read the chaos test program");
    let Some(start) = program.find("pub const MODES") else {
        panic!("tests/programs/chaos/src/lib.rs has no MODES list");
    };
    let list = &program[start..];
    let list = &list[..list.find("];").unwrap_or(list.len())];
    let modes: Vec<&str> = list.split('"').skip(1).step_by(2).collect();

    let mut tests = String::new();
    collect_rs(&root.join("tests/all"), &mut tests);
    let untested: Vec<&&str> = modes
        .iter()
        .filter(|mode| !tests.contains(&format!("chaos(\"{mode}\"")))
        .collect();
    assert!(
        untested.is_empty(),
        "chaos modes without a host test in tests/all (use chaos(\"<mode>\")): {untested:?}"
    );
}

fn collect_rs(dir: &Path, into: &mut String) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push_str(&fs::read_to_string(&path).unwrap_or_default());
        }
    }
}
