//! The command line: `weir check`, `weir serve`, `weir sim`.
//!
//! Owns: argument parsing (clap) and turning a command into calls on the library. `main`
//! only calls [`run`].

mod check;

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
}

/// Parses the command line and runs the command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(args),
    }
}
