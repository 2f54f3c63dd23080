//! The command line: `weir check`, `weir serve`, `weir sim`, `weir bench`, `weir cost`,
//! `weir key`, `weir loadtest`, `weir test-stage`, `weir new`, `weir build`.
//!
//! Owns: argument parsing (clap) and turning a command into calls on the library. `main`
//! only calls [`run`].

mod author;
mod bench;
mod check;
mod cost;
mod key;
mod loadtest;
mod push;
mod serve;
mod sim;
mod test_stage;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// weir: an edge runtime for production AI pipelines.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load stage component files, check them against the weir:stage world and print what
    /// each says about itself. Exits non-zero if any file is not a valid stage.
    Check(check::CheckArgs),
    /// Serve the OpenAI-compatible API with the pipelines of a config file.
    Serve(serve::ServeArgs),
    /// Run the OpenAI-compatible provider simulator (for demos and chaos tests).
    Sim(sim::SimArgs),
    /// Offer a fixed request rate to an endpoint (open loop) and report latency percentiles.
    Bench(bench::BenchArgs),
    /// Cost from recorded traffic: `weir cost project` replays a request log against the
    /// current prices (and a model mapping) and projects the daily and monthly spend.
    Cost(cost::CostArgs),
    /// API keys: `weir key new` makes one and prints its `[[keys]]` table; `weir key hash`
    /// hashes a key issued elsewhere.
    Key(key::KeyArgs),
    /// Run a load-test scenario: traffic through the pipeline under test, a fault timeline on
    /// the simulated upstreams, a report (HTML and JSON) and SLO gates (exit 1 when one fails).
    Loadtest(loadtest::LoadtestArgs),
    /// Run a stage's phases on a request (and a response) in the real sandbox and print the
    /// outcome, fuel and time of each, with the stage's log lines: a stage author's unit-test
    /// loop, no server needed.
    TestStage(test_stage::TestStageArgs),
    /// Make a new stage (`weir new stage NAME --lang rust|python|js`): a directory that builds,
    /// tests and serves, with a README.
    New(author::NewArgs),
    /// Build the stage in a directory (Rust, Python, or JavaScript / TypeScript) into a
    /// component; installs the pinned Python and JS toolchains on first use.
    Build(author::BuildArgs),
    /// Push a stage component to an OCI registry (`weir push STAGE.wasm
    /// oci://REGISTRY/REPO:TAG`) and print the digest to pin in `weir.toml`.
    Push(push::PushArgs),
}

/// Parses the command line and runs the command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Sim(args) => sim::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Cost(args) => cost::run(args),
        Command::Key(args) => key::run(args),
        Command::Loadtest(args) => loadtest::run(args),
        Command::TestStage(args) => test_stage::run(args),
        Command::New(args) => author::new::run(args),
        Command::Build(args) => author::build(args),
        Command::Push(args) => push::run(args),
    }
}

/// The multi-threaded runtime of the long-running commands; an error is printed. One worker
/// per CPU, or `TOKIO_WORKER_THREADS` of them.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match worker_threads(std::env::var_os(WORKER_THREADS_ENV)) {
        Ok(Some(workers)) => {
            builder.worker_threads(workers);
        }
        Ok(None) => {}
        Err(reason) => {
            eprintln!("error: {reason}");
            return Err(ExitCode::FAILURE);
        }
    }
    builder.enable_all().build().map_err(|err| {
        eprintln!("error: cannot start the async runtime: {err}");
        ExitCode::FAILURE
    })
}

/// The environment variable tokio reads for its worker count. Read here first: tokio panics
/// on a value that is not a positive number.
const WORKER_THREADS_ENV: &str = "TOKIO_WORKER_THREADS";

/// The most worker threads `TOKIO_WORKER_THREADS` may ask for.
const MAX_WORKER_THREADS: usize = 1024;

/// The worker count `value` (of [`WORKER_THREADS_ENV`]) asks for; `None` when it is unset
/// (one per CPU).
fn worker_threads(value: Option<std::ffi::OsString>) -> Result<Option<usize>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let workers = value
        .to_str()
        .and_then(|text| text.trim().parse::<usize>().ok());
    match workers {
        Some(workers @ 1..=MAX_WORKER_THREADS) => Ok(Some(workers)),
        _ => Err(format!(
            "{WORKER_THREADS_ENV} must be a whole number from 1 to {MAX_WORKER_THREADS}, got {:?}",
            value.to_string_lossy()
        )),
    }
}

/// The single-threaded runtime of the one-shot commands (`check`, `test-stage`); an error is
/// printed.
fn one_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            eprintln!("error: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        })
}

/// A `--header "name: value"` argument.
fn parse_header(header: &str) -> Option<(http::HeaderName, http::HeaderValue)> {
    let (name, value) = header.split_once(':')?;
    let name = http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
    let value = http::HeaderValue::from_str(value.trim()).ok()?;
    Some((name, value))
}

/// Logs to stderr, human-readable or JSON; `RUST_LOG` filters (default `info`).
fn init_logging(json: bool) {
    if let Err(err) = crate::telemetry::init(json, None) {
        eprintln!("warning: {err}");
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_count_is_a_bounded_positive_number_or_unset() {
        let of = |text: &str| worker_threads(Some(text.into()));
        assert_eq!(worker_threads(None), Ok(None));
        assert_eq!(of("1"), Ok(Some(1)));
        assert_eq!(of(" 4 "), Ok(Some(4)));
        assert_eq!(of("1024"), Ok(Some(1024)));
        for bad in [
            "0",
            "-1",
            "abc",
            "",
            "1025",
            "2.5",
            "99999999999999999999999",
        ] {
            let err = of(bad).unwrap_err();
            assert!(
                err.starts_with("TOKIO_WORKER_THREADS must be a whole number from 1 to 1024"),
                "{bad}: {err}"
            );
        }
    }
}
