//! `weir push STAGE.wasm oci://REGISTRY/REPO:TAG`: uploads a stage component as a Wasm OCI
//! artifact (`wkg`'s layout) and prints the digest to pin, with the `path = …` line to paste
//! into `weir.toml`.
//!
//! Credentials: `WEIR_REGISTRY_USERNAME` and `WEIR_REGISTRY_PASSWORD`, else the Docker config
//! (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`), else none. Plain HTTP only for
//! loopback registries and those given with `--insecure`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::oci::Reference;

/// Longest a component pushed is, bytes (the pull side's largest `max_blob_mib`).
const MAX_COMPONENT_BYTES: u64 = 2048 << 20;

/// `weir push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The stage component (`.wasm`).
    pub file: PathBuf,
    /// Where to push it: `oci://REGISTRY/REPOSITORY:TAG` (or `@sha256:…` to check the digest).
    pub reference: String,
    /// A registry (`host[:port]`) to reach over plain HTTP; loopback registries always are.
    #[arg(long = "insecure", value_name = "REGISTRY")]
    pub insecure: Vec<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
}

/// Runs `weir push`: 0 when pushed, 1 when the push failed, 2 for bad arguments.
pub fn run(args: PushArgs) -> ExitCode {
    let reference = match Reference::parse(&args.reference) {
        Ok(reference) => reference,
        Err(err) => {
            eprintln!("error: {}: {err}", args.reference);
            return ExitCode::from(2);
        }
    };
    for registry in &args.insecure {
        if let Err(err) = crate::oci::check_registry(registry) {
            eprintln!("error: --insecure {registry}: {err}");
            return ExitCode::from(2);
        }
    }
    let component = match read(&args.file) {
        Ok(bytes) => bytes,
        Err(err) => {
            eprintln!("error: {}: {err}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let title = (args.file.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stage.wasm".to_owned());
    let runtime = match super::one_thread_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let pushed = runtime.block_on(async {
        let auth = crate::oci::auth::for_push(&reference.registry).await;
        let timeout = Duration::from_secs(args.timeout_s.max(1));
        crate::oci::push::push(
            &component,
            &title,
            &reference,
            &auth,
            &args.insecure,
            timeout,
        )
        .await
    });
    match pushed {
        Ok(pushed) => {
            println!(
                "pushed {} ({} bytes, layer {})",
                reference, pushed.bytes, pushed.layer_digest
            );
            println!("digest: {}", pushed.manifest_digest);
            println!("pin it in weir.toml, in the stage's table:");
            println!("path = \"{}\"", pushed.pinned);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The component's bytes: a regular file, at most [`MAX_COMPONENT_BYTES`].
fn read(file: &std::path::Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(file).map_err(|err| format!("cannot read: {err}"))?;
    if !meta.is_file() {
        return Err("not a file".to_owned());
    }
    if meta.len() > MAX_COMPONENT_BYTES {
        return Err(format!(
            "{} bytes, above the {} MiB a stage may be",
            meta.len(),
            MAX_COMPONENT_BYTES >> 20
        ));
    }
    std::fs::read(file).map_err(|err| format!("cannot read: {err}"))
}
