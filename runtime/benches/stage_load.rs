//! `stage_load`: start-up time of the four first-party plugins plus `hello-stage`, loaded one
//! after the other through `LoadedStage::load` as `weir serve` does, three ways:
//!
//! - `no cache`: a sandbox without an artifact directory (compile every stage);
//! - `cold`: a fresh, empty artifact directory (compile, then write each artifact);
//! - `warm`: a new sandbox on the same directory, as after a restart (deserialize).
//!
//! Each round uses a new sandbox per pass and a new directory; the median over the rounds is
//! printed, total and per stage. Building the sandbox is not counted.
//!
//! Run: `cargo bench -p weir --bench stage_load`.

// Benchmarks measure wall time: std's clock (clippy.toml bans it elsewhere).
#![allow(missing_docs, clippy::unwrap_used, clippy::disallowed_types)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::config::SandboxSettings;
use weir::host_api::{HostServices, NoLlm};
use weir::sandbox::{ArtifactKey, Origin, Sandbox};
use weir::stages::LoadedStage;

/// Rounds of (no cache, cold, warm) under `cargo bench`; the median is reported.
const ROUNDS: usize = 5;

const STAGES: [(&str, &str); 5] = [
    ("prompt-guard", weir_test_artifacts::PROMPT_GUARD),
    ("pii-redact", weir_test_artifacts::PII_REDACT),
    ("system-prompt", weir_test_artifacts::SYSTEM_PROMPT),
    ("context-trim", weir_test_artifacts::CONTEXT_TRIM),
    ("hello-stage", weir_test_artifacts::HELLO_STAGE),
];

/// One pass: a new sandbox (with `dir` as its artifact directory, if given) loading every
/// stage in turn. Returns the wall time per stage, and checks every stage came by `expect`.
fn pass(
    runtime: &tokio::runtime::Runtime,
    dir: Option<(&Path, &ArtifactKey)>,
    expect: Origin,
) -> Vec<Duration> {
    let settings = SandboxSettings {
        pool_size: 16,
        ..SandboxSettings::default()
    };
    let sandbox = Sandbox::new(settings).unwrap();
    if let Some((dir, key)) = dir {
        sandbox.set_artifact_dir(dir, key.clone()).unwrap();
    }
    let services = Arc::new(HostServices::new(Arc::new(NoLlm), 4096));
    runtime.block_on(async {
        let mut times = Vec::new();
        for (name, path) in STAGES {
            let start = Instant::now();
            let stage = LoadedStage::load(&sandbox, &services, path.as_ref())
                .await
                .unwrap();
            times.push(start.elapsed());
            assert_eq!(stage.origin, expect, "{name}");
        }
        times
    })
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and gets one round as
    // a smoke test (as criterion runs each benchmark once there).
    let rounds = if std::env::args().any(|arg| arg == "--bench") {
        ROUNDS
    } else {
        1
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let variants = ["no cache", "cold", "warm"];
    // samples[variant][round][stage]
    let mut samples: Vec<Vec<Vec<Duration>>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        let dir = std::env::temp_dir().join(format!(
            "weir-bench-artifacts-{}-{round}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        samples[0].push(pass(&runtime, None, Origin::Compiled));
        // One key for the round, as a restart reads the same key file.
        let key = ArtifactKey::ephemeral();
        samples[1].push(pass(&runtime, Some((&dir, &key)), Origin::Compiled));
        samples[2].push(pass(&runtime, Some((&dir, &key)), Origin::Cached));
        if round == 0 {
            let bytes: u64 = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter_map(|entry| entry.metadata().ok())
                .map(|meta| meta.len())
                .sum();
            println!(
                "stage_load: {} artifacts, {:.1} MiB on disk",
                STAGES.len(),
                bytes as f64 / (1 << 20) as f64
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "stage_load: {} stages loaded in turn, median of {rounds} rounds",
        STAGES.len()
    );
    for (variant, rounds) in variants.iter().zip(&samples) {
        let total = median(rounds.iter().map(|r| r.iter().sum()).collect());
        let per_stage: Vec<String> = STAGES
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let each = median(rounds.iter().map(|r| r[i]).collect());
                format!("{name} {:.1}", ms(each))
            })
            .collect();
        println!(
            "stage_load/{variant:<8}: total {:>7.1} ms  ({} ms)",
            ms(total),
            per_stage.join(", ")
        );
    }
}
