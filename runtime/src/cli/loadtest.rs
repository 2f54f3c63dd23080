//! `weir loadtest SCENARIO.toml`: runs a scenario and exits 0 when every gate holds, 1 when
//! one fails (naming it), 2 when the scenario cannot be read or run.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::loadtest::scenario::Scenario;
use crate::loadtest::{self, Options};

/// Arguments of `weir loadtest`.
#[derive(Debug, clap::Args)]
pub struct LoadtestArgs {
    /// The scenario file (TOML; see examples/scenarios/).
    pub scenario: PathBuf,
    /// Where report.json, report.html and weir.log go (default: loadtest-out/ under the
    /// working directory).
    #[arg(long, default_value = "loadtest-out")]
    pub out: PathBuf,
    /// Send the load to this endpoint instead of what `[weir]` says (any OpenAI-compatible
    /// base URL, like http://127.0.0.1:4000 for a LiteLLM proxy): nothing is started but the
    /// sims.
    #[arg(long)]
    pub url: Option<String>,
    /// weir's admin listener to scrape, with `--url`.
    #[arg(long)]
    pub admin_url: Option<String>,
    /// A header sent with every request (`name: value`; repeatable), e.g. a peer gateway's
    /// routing headers.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Check the scenario (and its weir config) and exit.
    #[arg(long)]
    pub check: bool,
    /// No progress line.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs the command.
pub fn run(args: LoadtestArgs) -> ExitCode {
    let scenario = match Scenario::load(&args.scenario) {
        Ok(scenario) => scenario,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if let Some(config) = scenario.weir.config.as_ref().filter(|_| args.url.is_none())
        && let Err(err) = crate::config::Config::load(config)
    {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    if args.check {
        println!("{}: ok ({})", args.scenario.display(), scenario.name);
        return ExitCode::SUCCESS;
    }
    let mut headers = Vec::new();
    for header in &args.headers {
        match super::parse_header(header) {
            Some(header) => headers.push(header),
            None => {
                eprintln!("error: --header {header:?}: expected `name: value`");
                return ExitCode::from(2);
            }
        }
    }
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let options = Options {
        out_dir: args.out.clone(),
        url: args.url,
        admin_url: args.admin_url,
        headers,
        quiet: args.quiet,
    };
    // Ctrl-C drops the run, which stops the weir it started and the sims (their `Drop`).
    let run = async {
        tokio::select! {
            report = loadtest::run(&scenario, &options) => report,
            () = super::shutdown_signal() => Err("interrupted; the processes it started are stopped".to_owned()),
        }
    };
    let report = match runtime.block_on(run) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let t = &report.totals;
    println!(
        "{}: {} sent, {} ok, {} errors ({:.2}%), {:.1} req/s; latency ms p50 {:.1} p99 {:.1} max {:.1}; cache hits {:.1}%{}",
        report.scenario,
        t.sent,
        t.ok,
        t.errors,
        t.error_rate * 100.0,
        t.achieved_rps,
        t.latency_ms.p50,
        t.latency_ms.p99,
        t.latency_ms.max,
        t.cache_hit_rate * 100.0,
        t.cost_per_1k_usd
            .map(|c| format!("; ${c:.4} per 1k requests"))
            .unwrap_or_default()
    );
    for gate in &report.gates {
        let actual = gate
            .actual
            .map(|a| format!("{a:.4}"))
            .unwrap_or_else(|| "nothing measured".into());
        println!(
            "gate {}: {} (limit {}, measured {actual})",
            gate.gate,
            if gate.passed { "passed" } else { "FAILED" },
            gate.limit
        );
    }
    println!(
        "report: {} and {}",
        args.out.join("report.html").display(),
        args.out.join("report.json").display()
    );
    if report.passed {
        ExitCode::SUCCESS
    } else {
        let failed: Vec<&str> = (report.gates.iter())
            .filter(|g| !g.passed)
            .map(|g| g.gate.as_str())
            .collect();
        eprintln!("loadtest failed: gate {} did not hold", failed.join(", "));
        ExitCode::FAILURE
    }
}
