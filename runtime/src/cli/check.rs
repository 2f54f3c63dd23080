//! `weir check <file.wasm | oci://…>...`: loads each stage as `weir serve` would (on-demand
//! allocation) and prints, escaped (a stage's name and version are its own bytes), per file:
//! what the stage says about itself, its size, lane and compile time, and the fuel and time one
//! `on-request` takes on a sample request (so an author can set `fuel` and `deadline_ms` with
//! headroom). An `oci://` reference is pulled first (digests verified, tags resolved and
//! printed pinned), so an operator can check an artifact before rolling it out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::{Allocator, OciSettings, SandboxSettings};
use crate::host_api::{HostServices, NoLlm, log_line};
use crate::oci::{Puller, Reference};
use crate::sandbox::{Origin, Sandbox};
use crate::stages::{LoadedStage, describe_line};

/// Arguments of `weir check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Stage component files (`.wasm`), or OCI references
    /// (`oci://REGISTRY/REPO@sha256:DIGEST`, or `:TAG`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// A registry (`host` or `host:port`) to reach over plain HTTP (loopback ones always are);
    /// repeatable.
    #[arg(long = "insecure", value_name = "REGISTRY")]
    pub insecure: Vec<String>,
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
    for registry in &args.insecure {
        if let Err(err) = crate::oci::check_registry(registry) {
            eprintln!("error: --insecure {registry}: {err}");
            return ExitCode::from(2);
        }
    }
    // Tags are accepted here (the pinned digest is printed); nothing is stored.
    let puller = Puller::new(
        OciSettings {
            allow_tags: true,
            insecure_registries: args.insecure.clone(),
            ..OciSettings::default()
        },
        None,
    );
    let mut ok = true;
    for file in &args.files {
        // What a stage says about itself (and the file name) reaches the operator's terminal:
        // escaped, so no escape sequence or bidirectional control acts on it.
        let loaded = runtime.block_on(async {
            let bytes = match file.to_str().filter(|f| f.starts_with("oci://")) {
                Some(reference) => pull(&puller, reference).await?,
                None => LoadedStage::read(file).await.map_err(|e| e.to_string())?,
            };
            let size = bytes.len() as u64;
            LoadedStage::from_bytes(&sandbox, &services, file, bytes)
                .await
                .map(|stage| (stage, size))
                .map_err(|err| err.to_string())
        });
        match loaded {
            Ok((stage, size)) => {
                println!("{}", log_line(&describe_line(&stage), usize::MAX));
                println!("  {}", summary(&stage, &sandbox, size));
                let sample =
                    runtime.block_on(super::test_stage::sample(&sandbox, &services, &stage));
                println!("  {}", log_line(&sample, usize::MAX));
            }
            Err(err) => {
                eprintln!("error: {}", log_line(&err, usize::MAX));
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

/// The component `reference` names, pulled and verified; prints what was pulled.
async fn pull(puller: &Puller, reference: &str) -> Result<Vec<u8>, String> {
    let parsed = Reference::parse(reference).map_err(|err| format!("{reference}: {err}"))?;
    let pulled = puller.fetch(&parsed).await.map_err(|err| err.to_string())?;
    let artifact = &pulled.artifact;
    let pinned = format!(
        "oci://{}/{}@{}",
        artifact.reference.registry, artifact.reference.repository, artifact.manifest_digest
    );
    println!(
        "{}",
        log_line(
            &format!(
                "{reference}: pulled {pinned} (layer {}, {})",
                artifact.layer_digest, artifact.media_type
            ),
            usize::MAX
        )
    );
    Ok(pulled.bytes)
}

/// "size, lane, compiled in" of a loaded stage.
pub(super) fn summary(stage: &LoadedStage, sandbox: &Sandbox, size: u64) -> String {
    let lane = match sandbox.lane_for(size as usize) {
        Ok(lane) if lane.is_large() => "large-stage pool (copy-on-write memory images)",
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
