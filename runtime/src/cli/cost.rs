//! `weir cost project`: what recorded traffic costs at today's prices, and what it would cost
//! with some models swapped for others.
//!
//! Owns: the arguments, reading the config's price table and the request log
//! (`[cost] request_log`, one line per LLM call or cache hit), and printing the projection as
//! a table or JSON. The maths (checking a line, pricing, the projection) is
//! [`crate::cost::projection`]'s. Must not write anything nor reach an upstream: it reads two
//! files and prints.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{Config, ConfigError};
use crate::cost::PriceTable;
use crate::cost::projection::{Priced, Projection, Scenario, Tally, Unpriced, parse_line};

/// The value given to secret-holding environment variables (`*_env` keys) that are unset:
/// this command reads only prices, so projecting must not need the production secrets.
const UNUSED_SECRET: &str = "unused-by-weir-cost-project";

/// Arguments of `weir cost`.
#[derive(Debug, clap::Args)]
pub struct CostArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CostCommand,
}

/// The `weir cost` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CostCommand {
    /// Project what recorded traffic costs at the current prices, per day and per month
    ///
    /// Reads a request log (`[cost] request_log` in weir.toml: one JSON object per LLM call
    /// or cache hit) and prices every line with the price table of --config ([prices.MODEL]
    /// and [cost] prices_file). Cached prompt tokens are priced at the cached-input price.
    /// Cache hits (`hit`, `semantic-hit`, `coalesced`) cost nothing; "without the cache"
    /// prices them as if they had been paid for. A model without a price is counted at $0
    /// and listed as unpriced. The period is the number of distinct UTC days in the log:
    /// daily = total / days, monthly = daily × 30 (a 30-day month).
    ///
    /// --map FROM=TO (repeatable) prices FROM's requests at TO's prices, with the same
    /// tokens, and shows those figures next to the current ones.
    ///
    /// Secrets named by `*_env` keys need not be set: only prices are read.
    ///
    /// --json prints one object. Money comes twice: exact integer pico-dollars (`*_pico`,
    /// 10⁻¹² USD) and USD floats (`*_usd`); shares are fractions in 0..=1.
    ///
    ///   { "traffic": PATH, "config": PATH,
    ///     "prices_date": "..." | null,              (the price file's `date`)
    ///     "requests": N, "cache_hits": N, "days": N,
    ///     "first_day": "YYYY-MM-DD" | null, "last_day": "YYYY-MM-DD" | null,
    ///     "month_days": 30,
    ///     "recorded_pico": N, "recorded_usd": X,    (sum of the log's cost_usd)
    ///     "map": { FROM: TO, ... },                  ({} without --map)
    ///     "current": SCENARIO,                       (models as recorded)
    ///     "mapped": SCENARIO | null,                 (with --map applied; null without)
    ///     "models": [ MODEL, ... ] }                 (by recorded model, sorted)
    ///   SCENARIO = { "actual_pico", "actual_usd",    (hits at $0)
    ///     "without_cache_pico", "without_cache_usd", (hits paid for)
    ///     "saved_pico", "saved_usd", "cache_saving_share",
    ///     "daily_pico", "daily_usd", "monthly_pico", "monthly_usd",
    ///     "unpriced": [ { "model", "requests" }, ... ] }
    ///   MODEL = { "model", "requests", "cache_hits",
    ///     "prompt_tokens", "cached_tokens", "completion_tokens",
    ///     "current": PRICED, "mapped": PRICED | null }
    ///   PRICED = { "priced_as", "priced", "actual_pico", "actual_usd",
    ///     "without_cache_pico", "without_cache_usd" }
    ///
    /// Exit status: 0 with a projection (unpriced models are a warning); 2 when the config,
    /// the log or a line of it cannot be used (the error names file:line).
    #[command(verbatim_doc_comment)]
    Project(ProjectArgs),
}

/// Arguments of `weir cost project`.
#[derive(Debug, clap::Args)]
pub struct ProjectArgs {
    /// The config file whose price table to use (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// The request log to replay (JSON lines).
    #[arg(long)]
    pub traffic: PathBuf,
    /// Price the requests of model FROM at the prices of model TO (repeatable).
    #[arg(long = "map", value_name = "FROM=TO", value_parser = parse_map)]
    pub maps: Vec<(String, String)>,
    /// Print one JSON object instead of the table (shape in `--help`).
    #[arg(long)]
    pub json: bool,
}

/// Runs `weir cost`.
pub fn run(args: CostArgs) -> ExitCode {
    match args.command {
        CostCommand::Project(args) => project_command(args),
    }
}

fn project_command(args: ProjectArgs) -> ExitCode {
    let projection = match project(&args) {
        Ok(projection) => projection,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    for warning in warnings(&projection) {
        eprintln!("warning: {warning}");
    }
    if args.json {
        match serde_json::to_string_pretty(&projection) {
            Ok(json) => println!("{json}"),
            Err(err) => {
                eprintln!("error: cannot write JSON: {err}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", table(&projection));
    }
    ExitCode::SUCCESS
}

/// Why no projection can be made.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The config is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The traffic file cannot be opened or read.
    #[error("{}: cannot read the traffic file: {source}", path.display())]
    Read {
        /// The traffic file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the traffic file is not a request-log line.
    #[error("{}:{at}: {message}", path.display())]
    Line {
        /// The traffic file.
        path: PathBuf,
        /// The 1-based line number, and `:column` when the JSON parser gave one.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// The same model was mapped twice.
    #[error("--map {from}={to}: {from} is already mapped to {first}")]
    MapTwice {
        /// The model mapped twice.
        from: String,
        /// The first mapping.
        first: String,
        /// The second one.
        to: String,
    },
}

/// `FROM=TO`, both non-empty.
fn parse_map(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((from, to)) if !from.trim().is_empty() && !to.trim().is_empty() => {
            Ok((from.trim().to_string(), to.trim().to_string()))
        }
        _ => Err(format!(
            "expected FROM=TO with two model names, like gpt-4o=gpt-4o-mini, got {text:?}"
        )),
    }
}

/// Loads the config at `path` like [`Config::load`], except that unset secret variables get
/// a placeholder (only the price table is used here).
fn load_prices(path: &Path) -> Result<Config, ConfigError> {
    let env = |name: &str| std::env::var(name).ok().or(Some(UNUSED_SECRET.to_owned()));
    Config::load_with(path, &env)
}

/// Reads the config and the traffic file and prices every line.
pub fn project(args: &ProjectArgs) -> Result<Projection, ProjectError> {
    let config = load_prices(&args.config)?;
    let prices = PriceTable::new(&config.cost);
    let mut map = BTreeMap::new();
    for (from, to) in &args.maps {
        if let Some(first) = map.insert(from.clone(), to.clone()) {
            return Err(ProjectError::MapTwice {
                from: from.clone(),
                first,
                to: to.clone(),
            });
        }
    }
    let read_error = |source| ProjectError::Read {
        path: args.traffic.clone(),
        source,
    };
    let file = std::fs::File::open(&args.traffic).map_err(read_error)?;
    let mut tally = Tally::new(&prices, map);
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line_error = |at: String, message: String| ProjectError::Line {
            path: args.traffic.clone(),
            at,
            message,
        };
        let line = line.map_err(|err| line_error((i + 1).to_string(), err.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let request = parse_line(&line, i + 1).map_err(|(at, message)| line_error(at, message))?;
        tally.add(request);
    }
    Ok(tally.finish(&args.traffic, &args.config, config.cost.prices_date))
}

/// What the operator should know that the figures of `projection` do not say.
pub fn warnings(projection: &Projection) -> Vec<String> {
    let mut out = Vec::new();
    if projection.requests == 0 {
        out.push(format!(
            "{}: no requests in the traffic file",
            projection.traffic
        ));
    }
    let unpriced = |list: Vec<&Unpriced>, what: &str| {
        let list: Vec<String> = list
            .iter()
            .map(|u| format!("{} ({})", u.model, plural(u.requests, "request")))
            .collect();
        format!(
            "unpriced models{what}, counted at $0: {}; add [prices.MODEL] to {}",
            list.join(", "),
            projection.config
        )
    };
    if !projection.current.unpriced.is_empty() {
        out.push(unpriced(projection.current.unpriced.iter().collect(), ""));
    }
    // Under the mapping, only the models the mapping made unpriced are news.
    if let Some(mapped) = &projection.mapped {
        let new: Vec<&Unpriced> = mapped
            .unpriced
            .iter()
            .filter(|u| {
                !projection
                    .current
                    .unpriced
                    .iter()
                    .any(|c| c.model == u.model)
            })
            .collect();
        if !new.is_empty() {
            out.push(unpriced(new, " (--map targets)"));
        }
    }
    for from in &projection.unmatched_maps {
        out.push(format!(
            "--map {from}=...: no request in the log used {from}"
        ));
    }
    out
}

/// The human-readable report of `projection`.
pub fn table(projection: &Projection) -> String {
    let mut out = String::new();
    let period = match (&projection.first_day, &projection.last_day) {
        (Some(first), Some(last)) if first != last => format!(" ({first} to {last})"),
        (Some(first), _) => format!(" ({first})"),
        _ => String::new(),
    };
    out += &format!(
        "{}: {} ({}), {} observed{period}\n",
        projection.traffic,
        plural(projection.requests, "request"),
        plural(projection.cache_hits, "cache hit"),
        plural(projection.days, "day"),
    );
    let dated = projection
        .prices_date
        .as_ref()
        .map(|d| format!(" (price file dated {d})"))
        .unwrap_or_default();
    out += &format!("prices: {}{dated}\n\n", projection.config);

    let scenarios: Vec<&Scenario> = std::iter::once(&projection.current)
        .chain(projection.mapped.as_ref())
        .collect();
    let mut rows: Vec<Vec<String>> = vec![
        std::iter::once(String::new())
            .chain(std::iter::once("recorded models".to_string()))
            .chain(projection.mapped.as_ref().map(|_| "with --map".to_string()))
            .collect(),
    ];
    let mut row = |label: &str, cell: &dyn Fn(&Scenario) -> String| {
        rows.push(
            std::iter::once(label.to_string())
                .chain(scenarios.iter().map(|s| cell(s)))
                .collect(),
        );
    };
    row("total (actual)", &|s| usd(s.actual_pico));
    row("projected daily", &|s| usd(s.daily_pico));
    row(
        &format!("projected monthly ({}-day month)", projection.month_days),
        &|s| usd(s.monthly_pico),
    );
    row("without the cache", &|s| usd(s.without_cache_pico));
    row("saved by the cache", &|s| usd(s.saved_pico));
    row("cache saving share", &|s| {
        format!("{:.1}%", s.cache_saving_share * 100.0)
    });
    out += &columns(&rows);
    out += &format!(
        "(billed when recorded, from the log's cost_usd: {})\n",
        usd(projection.recorded_pico)
    );

    if !projection.models.is_empty() {
        out += "\nby model\n";
        let mut rows: Vec<Vec<String>> = vec![
            [
                "model",
                "requests",
                "hits",
                "prompt",
                "cached",
                "completion",
                "recorded models",
            ]
            .into_iter()
            .map(String::from)
            .chain(projection.mapped.as_ref().map(|_| "with --map".to_string()))
            .collect(),
        ];
        for m in &projection.models {
            let priced = |p: &Priced| {
                if p.priced {
                    usd(p.actual_pico)
                } else {
                    "unpriced".to_string()
                }
            };
            let label = match &m.mapped {
                Some(mapped) if mapped.priced_as != m.model => {
                    format!("{} -> {}", m.model, mapped.priced_as)
                }
                _ => m.model.clone(),
            };
            rows.push(
                [
                    label,
                    m.requests.to_string(),
                    m.cache_hits.to_string(),
                    m.prompt_tokens.to_string(),
                    m.cached_tokens.to_string(),
                    m.completion_tokens.to_string(),
                    priced(&m.current),
                ]
                .into_iter()
                .chain(m.mapped.as_ref().map(priced))
                .collect(),
            );
        }
        out += &columns(&rows);
    }
    out
}

/// `1 day`, `2 days`.
fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Pico-dollars as `$D.DDDDDD` (rounded to the micro-dollar, in integers).
fn usd(pico: u64) -> String {
    let micro = pico / 1_000_000 + u64::from(pico % 1_000_000 >= 500_000);
    format!("${}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

/// Rows as aligned columns: the first left-aligned, the others right-aligned.
fn columns(rows: &[Vec<String>]) -> String {
    let count = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..count)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c == 0 {
                line += &format!("  {cell:<width$}", width = widths[0]);
            } else {
                line += &format!("  {cell:>width$}", width = widths[c]);
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_rounds_to_the_micro_dollar_without_floats() {
        assert_eq!(usd(0), "$0.000000");
        assert_eq!(usd(499_999), "$0.000000");
        assert_eq!(usd(500_000), "$0.000001");
        assert_eq!(usd(1_234_567_890_123_456), "$1234.567890");
        assert_eq!(usd(u64::MAX), "$18446744.073710");
    }

    #[test]
    fn a_map_needs_two_names() {
        assert_eq!(
            parse_map("gpt-4o = gpt-4o-mini"),
            Ok(("gpt-4o".to_string(), "gpt-4o-mini".to_string()))
        );
        assert!(parse_map("gpt-4o").is_err());
        assert!(parse_map("=gpt-4o").is_err());
        assert!(parse_map("gpt-4o=").is_err());
    }
}
