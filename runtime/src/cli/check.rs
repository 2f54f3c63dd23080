//! `weir check <file.wasm>...`: loads each stage as `weir serve` would (on-demand allocation)
//! and prints, escaped (a stage's name and version are its own bytes), per file: what the stage
//! says about itself, its size, lane and compile time, and the fuel and time one `on-request`
//! takes on a sample request (so an author can set `fuel` and `deadline_ms` with headroom).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::{Allocator, SandboxSettings};
use crate::host_api::{HostServices, NoLlm, log_line};
use crate::sandbox::{Origin, Sandbox};
use crate::stages::{LoadedStage, describe_line};

/// Arguments of `weir check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Stage component files (`.wasm`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Checks every file; prints one line per file; exit 0 only if all are valid stages.
pub fn run(args: CheckArgs) -> ExitCode {
    let runtime = match super::one_thread_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let settings = SandboxSettings {
        allocator: Allocator::OnDemand,
        pool_size: 4,
        ..SandboxSettings::default()
    };
    let sandbox = match Sandbox::new(settings) {
        Ok(sandbox) => sandbox,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let services = Arc::new(HostServices::new(
        Arc::new(NoLlm),
        sandbox.settings().log_line_max_bytes,
    ));
    let mut ok = true;
    for file in &args.files {
        // What a stage says about itself (and the file name) reaches the operator's terminal:
        // escaped, so no escape sequence or bidirectional control acts on it.
        match runtime.block_on(LoadedStage::load(&sandbox, &services, file)) {
            Ok(stage) => {
                println!("{}", log_line(&describe_line(&stage), usize::MAX));
                let size = std::fs::metadata(file).map_or(0, |m| m.len());
                println!("  {}", summary(&stage, &sandbox, size));
                let sample =
                    runtime.block_on(super::test_stage::sample(&sandbox, &services, &stage));
                println!("  {}", log_line(&sample, usize::MAX));
            }
            Err(err) => {
                eprintln!("error: {}", log_line(&err.to_string(), usize::MAX));
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// "size, lane, compiled in" of a loaded stage.
pub(super) fn summary(stage: &LoadedStage, sandbox: &Sandbox, size: u64) -> String {
    let lane = match sandbox.lane_for(size as usize) {
        Ok(lane) if lane.has_images() => "large-stage pool (copy-on-write memory images)",
        _ => "small-stage pool",
    };
    let how = match stage.origin {
        Origin::Compiled => "compiled",
        Origin::Cached => "loaded from the artifact cache",
    };
    format!(
        "{:.2} MiB, {lane}, {how} in {:.2} s",
        size as f64 / f64::from(1 << 20),
        stage.load_time.as_secs_f64()
    )
}
