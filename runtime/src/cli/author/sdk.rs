//! The stage SDKs and the WIT contract, carried inside the `weir` binary so that `weir new`
//! and `weir build` work outside this repository: they are written once per SDK version to
//! `<tools>/sdk-<hash>/`, laid out as in the repository (`wit/`, `plugin-sdk/`, `sdk/python/`,
//! `sdk/js/weir-stage/`), and the builds point at that copy.

use std::io;
use std::path::{Path, PathBuf};

/// Every file of the SDKs, by its path in the repository.
const FILES: &[(&str, &str)] = &[
    ("wit/stage.wit", include_str!("../../../../wit/stage.wit")),
    // Rust: weir-sdk and weir-tokens, with manifests of their own (no workspace).
    ("plugin-sdk/Cargo.toml", RUST_SDK_MANIFEST),
    (
        "plugin-sdk/src/lib.rs",
        include_str!("../../../../plugin-sdk/src/lib.rs"),
    ),
    (
        "plugin-sdk/src/build.rs",
        include_str!("../../../../plugin-sdk/src/build.rs"),
    ),
    (
        "plugin-sdk/src/cache.rs",
        include_str!("../../../../plugin-sdk/src/cache.rs"),
    ),
    (
        "plugin-sdk/src/config.rs",
        include_str!("../../../../plugin-sdk/src/config.rs"),
    ),
    (
        "plugin-sdk/src/llm.rs",
        include_str!("../../../../plugin-sdk/src/llm.rs"),
    ),
    (
        "plugin-sdk/src/log.rs",
        include_str!("../../../../plugin-sdk/src/log.rs"),
    ),
    (
        "plugin-sdk/src/response.rs",
        include_str!("../../../../plugin-sdk/src/response.rs"),
    ),
    (
        "plugin-sdk/src/service.rs",
        include_str!("../../../../plugin-sdk/src/service.rs"),
    ),
    (
        "plugin-sdk/src/service/error.rs",
        include_str!("../../../../plugin-sdk/src/service/error.rs"),
    ),
    (
        "plugin-sdk/src/service/host.rs",
        include_str!("../../../../plugin-sdk/src/service/host.rs"),
    ),
    (
        "plugin-sdk/src/service/reply.rs",
        include_str!("../../../../plugin-sdk/src/service/reply.rs"),
    ),
    (
        "plugin-sdk/src/service/wasi.rs",
        include_str!("../../../../plugin-sdk/src/service/wasi.rs"),
    ),
    (
        "plugin-sdk/src/stage.rs",
        include_str!("../../../../plugin-sdk/src/stage.rs"),
    ),
    (
        "plugin-sdk/src/testing.rs",
        include_str!("../../../../plugin-sdk/src/testing.rs"),
    ),
    (
        "plugin-sdk/src/tokens.rs",
        include_str!("../../../../plugin-sdk/src/tokens.rs"),
    ),
    ("plugin-sdk/tokens/Cargo.toml", RUST_TOKENS_MANIFEST),
    ("plugin-sdk/macros/Cargo.toml", RUST_MACROS_MANIFEST),
    (
        "plugin-sdk/macros/src/lib.rs",
        include_str!("../../../../plugin-sdk/macros/src/lib.rs"),
    ),
    (
        "plugin-sdk/tokens/src/lib.rs",
        include_str!("../../../../plugin-sdk/tokens/src/lib.rs"),
    ),
    // Python: the weir_stage package.
    (
        "sdk/python/weir_stage/__init__.py",
        include_str!("../../../../sdk/python/weir_stage/__init__.py"),
    ),
    (
        "sdk/python/weir_stage/cache.py",
        include_str!("../../../../sdk/python/weir_stage/cache.py"),
    ),
    (
        "sdk/python/weir_stage/config.py",
        include_str!("../../../../sdk/python/weir_stage/config.py"),
    ),
    (
        "sdk/python/weir_stage/llm.py",
        include_str!("../../../../sdk/python/weir_stage/llm.py"),
    ),
    (
        "sdk/python/weir_stage/log.py",
        include_str!("../../../../sdk/python/weir_stage/log.py"),
    ),
    (
        "sdk/python/weir_stage/service.py",
        include_str!("../../../../sdk/python/weir_stage/service.py"),
    ),
    ("sdk/python/weir_stage/py.typed", ""),
    (
        "sdk/python/pyproject.toml",
        include_str!("../../../../sdk/python/pyproject.toml"),
    ),
    // JavaScript / TypeScript: the weir-stage package.
    (
        "sdk/js/weir-stage/index.js",
        include_str!("../../../../sdk/js/weir-stage/index.js"),
    ),
    (
        "sdk/js/weir-stage/index.d.ts",
        include_str!("../../../../sdk/js/weir-stage/index.d.ts"),
    ),
    (
        "sdk/js/weir-stage/package.json",
        include_str!("../../../../sdk/js/weir-stage/package.json"),
    ),
];

/// weir-sdk's manifest outside the workspace (the workspace's dependency versions, inlined).
const RUST_SDK_MANIFEST: &str = r#"[package]
name = "weir-sdk"
description = "Write weir pipeline stages in Rust: a Stage trait, one export macro, and typed helpers."
version = "0.1.0"
edition = "2024"
rust-version = "1.95"
license = "Apache-2.0"

[dependencies]
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc", "std", "bitflags"] }
weir-tokens = { path = "tokens" }
weir-sdk-macros = { path = "macros" }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
postcard = { version = "1.2", default-features = false, features = ["alloc"] }
thiserror = "2"
wasip2 = "1.0.4"
"#;

/// weir-tokens' manifest outside the workspace.
const RUST_TOKENS_MANIFEST: &str = r#"[package]
name = "weir-tokens"
description = "How weir counts a chat prompt's tokens: the one formula the host and the stages share."
version = "0.1.0"
edition = "2024"
rust-version = "1.95"
license = "Apache-2.0"

[dependencies]
"#;

/// weir-sdk-macros' manifest outside the workspace.
const RUST_MACROS_MANIFEST: &str = r#"[package]
name = "weir-sdk-macros"
description = "weir-sdk's `#[stage]` attribute: a stage's phases inferred from the methods it implements."
version = "0.1.0"
edition = "2024"
rust-version = "1.95"
license = "Apache-2.0"

[lib]
proc-macro = true
"#;

/// Where weir keeps the tools and SDK copies it installs: `$WEIR_TOOLS`, else
/// `$HOME/.cache/weir-tools`.
pub fn tools_dir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("WEIR_TOOLS").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache/weir-tools")),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "neither WEIR_TOOLS nor HOME is set: no place for the build tools",
        )),
    }
}

/// The directory holding this binary's copy of the SDKs (written now when missing):
/// `<tools>/sdk-<first 12 hex of the blake3 of every file>`.
pub fn materialise() -> io::Result<PathBuf> {
    let mut hash = blake3::Hasher::new();
    for (path, text) in FILES {
        hash.update(&(path.len() as u64).to_le_bytes());
        hash.update(path.as_bytes());
        hash.update(&(text.len() as u64).to_le_bytes());
        hash.update(text.as_bytes());
    }
    let tools = tools_dir()?;
    let dir = tools.join(format!("sdk-{}", &hash.finalize().to_hex()[..12]));
    if dir.join(".complete").is_file() {
        return Ok(dir);
    }
    // Written next to its final place, then renamed: a reader sees all of it or none.
    let staging = tools.join(format!(".sdk-{}", rand::random::<u64>()));
    write_all(&staging)?;
    match std::fs::rename(&staging, &dir) {
        Ok(()) => Ok(dir),
        // Another build wrote it first.
        Err(_) if dir.join(".complete").is_file() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(dir)
        }
        Err(err) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(err)
        }
    }
}

fn write_all(root: &Path) -> io::Result<()> {
    for (path, text) in FILES {
        let file = root.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, text)?;
    }
    std::fs::write(root.join(".complete"), "")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every SDK source file in the repository is carried: a file added to an SDK without
    /// being added here would be missing from out-of-tree builds.
    #[test]
    fn every_sdk_source_file_is_carried() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let carried: std::collections::BTreeSet<&str> = FILES.iter().map(|(p, _)| *p).collect();
        let mut missing = Vec::new();
        for (dir, exts) in [
            ("plugin-sdk/src", &["rs"][..]),
            ("plugin-sdk/tokens/src", &["rs"][..]),
            ("plugin-sdk/macros/src", &["rs"][..]),
            ("sdk/python/weir_stage", &["py", "typed"][..]),
            ("sdk/js/weir-stage", &["js", "ts"][..]),
            ("wit", &["wit"][..]),
        ] {
            let mut stack = vec![root.join(dir)];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        if !path.ends_with("test") && !path.ends_with("__pycache__") {
                            stack.push(path);
                        }
                        continue;
                    }
                    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                    let rel = path
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    if exts.contains(&ext) && !carried.contains(rel.as_str()) {
                        missing.push(rel);
                    }
                }
            }
        }
        assert!(missing.is_empty(), "not carried by the binary: {missing:?}");
    }

    /// The carried manifest names every dependency of the workspace's weir-sdk: one added
    /// there and not here breaks out-of-tree builds (`weir new stage --lang rust`).
    #[test]
    fn the_carried_manifest_has_every_sdk_dependency() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let manifest = std::fs::read_to_string(root.join("plugin-sdk/Cargo.toml")).unwrap();
        let manifest: toml::Table = manifest.parse().unwrap();
        let carried: toml::Table = RUST_SDK_MANIFEST.parse().unwrap();
        let carried = carried["dependencies"].as_table().unwrap();
        let missing: Vec<&String> = manifest["dependencies"]
            .as_table()
            .unwrap()
            .keys()
            .filter(|name| !carried.contains_key(*name))
            .collect();
        assert!(missing.is_empty(), "not in RUST_SDK_MANIFEST: {missing:?}");
    }
}
