//! `weir cost project`: what recorded traffic costs at today's prices, and what it would cost
//! with some models swapped for others.
//!
//! Owns: reading a request log (`[cost] request_log`, one [`TrafficLine`] per line), pricing
//! each line with the config's price table, and printing the projection as a table or JSON.
//! Must not write anything nor reach an upstream: it reads two files and prints.
//!
//! Every line is re-priced from its tokens with [`cost_of`] rather than summed from its
//! `cost_usd`, so a price change or a `--map` shows; the log's own figure is kept alongside as
//! "recorded". Money stays in integer pico-dollars until it is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::config::{Config, ConfigError, pico_to_usd, usd_to_pico};
use crate::cost::{PriceTable, TrafficLine, clock, cost_of, day_of};
use crate::wit::Usage;

/// Days in the month the monthly projection assumes.
const MONTH_DAYS: u64 = 30;

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
    for warning in projection.warnings() {
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
        print!("{}", projection.table());
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

/// One checked line of the log.
struct Request {
    /// Its UTC day.
    day: u32,
    /// The upstream model as recorded.
    model: String,
    /// Its tokens (for a hit: the cached answer's).
    usage: Usage,
    /// Whether it was answered without a paid call.
    hit: bool,
    /// The log's `cost_usd`, pico-dollars.
    recorded: u64,
}

/// Parses line `number`; an error is (`line` or `line:column`, message).
fn parse_line(text: &str, number: usize) -> Result<Request, (String, String)> {
    let at = number.to_string();
    if !text.trim_start().starts_with('{') {
        let start: String = text.trim().chars().take(40).collect();
        return Err((at, format!("expected a JSON object, got {start:?}")));
    }
    let mut json = serde_json::Deserializer::from_str(text);
    let line: TrafficLine = serde_path_to_error::deserialize(&mut json)
        .map_err(|err| json_error(number, &err.path().to_string(), err.inner()))?;
    json.end().map_err(|err| json_error(number, ".", &err))?;
    let hit = match line.cache.as_str() {
        "miss" | "bypass" => false,
        "hit" | "semantic-hit" | "coalesced" => true,
        other => {
            return Err((
                at,
                format!(
                    "cache: expected miss, bypass, hit, semantic-hit or coalesced, got {other:?}"
                ),
            ));
        }
    };
    if line.model.trim().is_empty() {
        return Err((at, "model: expected a model name, got an empty one".into()));
    }
    if !line.cost_usd.is_finite() || line.cost_usd < 0.0 {
        return Err((
            at,
            format!("cost_usd: expected 0 or more, got {}", line.cost_usd),
        ));
    }
    let tokens = |value: u64, field: &str| {
        u32::try_from(value).map_err(|_| {
            (
                at.clone(),
                format!("{field}: {value} is more than one request can use"),
            )
        })
    };
    let prompt_tokens = tokens(line.prompt_tokens, "prompt_tokens")?;
    let completion_tokens = tokens(line.completion_tokens, "completion_tokens")?;
    let usage = Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens.saturating_add(completion_tokens),
        cached_tokens: tokens(line.cached_tokens, "cached_tokens")?,
    };
    Ok(Request {
        day: day_of(line.ts),
        model: line.model,
        usage,
        hit,
        recorded: usd_to_pico(line.cost_usd),
    })
}

/// (`line:column`, message) of a JSON error at `path` (`.` for the whole line).
fn json_error(number: usize, path: &str, err: &serde_json::Error) -> (String, String) {
    // serde_json appends " at line 1 column N"; the column goes into the location instead.
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    let message = if err.is_syntax() || err.is_eof() {
        format!("invalid JSON: {message}")
    } else if path == "." {
        message.to_string()
    } else {
        format!("{path}: {message}")
    };
    (format!("{number}:{}", err.column()), message)
}

/// Pico-dollar sums of a set of requests under one price table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Money {
    /// Paid calls only (hits cost nothing).
    actual: u64,
    /// Every request as if paid for.
    without_cache: u64,
}

impl Money {
    fn add(&mut self, cost: u64, hit: bool) {
        self.without_cache = self.without_cache.saturating_add(cost);
        if !hit {
            self.actual = self.actual.saturating_add(cost);
        }
    }

    fn sum(&mut self, other: Money) {
        self.actual = self.actual.saturating_add(other.actual);
        self.without_cache = self.without_cache.saturating_add(other.without_cache);
    }
}

/// Sums for the requests of one recorded model.
#[derive(Default)]
struct ModelTally {
    requests: u64,
    cache_hits: u64,
    prompt_tokens: u64,
    cached_tokens: u64,
    completion_tokens: u64,
    /// At the recorded model's price.
    current: Money,
    /// At the mapped model's price.
    mapped: Money,
}

/// The running sums while the log is read.
struct Tally<'a> {
    prices: &'a PriceTable,
    /// FROM → TO.
    map: BTreeMap<String, String>,
    days: BTreeSet<u32>,
    recorded: u64,
    /// By recorded model.
    models: BTreeMap<String, ModelTally>,
}

impl<'a> Tally<'a> {
    fn new(prices: &'a PriceTable, map: BTreeMap<String, String>) -> Tally<'a> {
        Tally {
            prices,
            map,
            days: BTreeSet::new(),
            recorded: 0,
            models: BTreeMap::new(),
        }
    }

    /// The model `model`'s requests are priced as under the mapping.
    fn mapped_model<'m>(&'m self, model: &'m str) -> &'m str {
        self.map.get(model).map_or(model, String::as_str)
    }

    fn add(&mut self, request: Request) {
        let price = |model: &str| {
            self.prices
                .get(model)
                .map_or(0, |price| cost_of(price, &request.usage))
        };
        let current = price(&request.model);
        let mapped = price(self.mapped_model(&request.model));
        self.days.insert(request.day);
        self.recorded = self.recorded.saturating_add(request.recorded);
        let tally = self.models.entry(request.model).or_default();
        tally.requests += 1;
        tally.cache_hits += u64::from(request.hit);
        tally.prompt_tokens += u64::from(request.usage.prompt_tokens);
        tally.cached_tokens += u64::from(request.usage.cached_tokens);
        tally.completion_tokens += u64::from(request.usage.completion_tokens);
        tally.current.add(current, request.hit);
        tally.mapped.add(mapped, request.hit);
    }

    fn finish(self, traffic: &Path, config: &Path, prices_date: Option<String>) -> Projection {
        let days = (self.days.len() as u64).max(1);
        let mapping = !self.map.is_empty();
        let mut current = Money::default();
        let mut mapped = Money::default();
        let mut unpriced_current = BTreeMap::<String, u64>::new();
        let mut unpriced_mapped = BTreeMap::<String, u64>::new();
        let mut models = Vec::with_capacity(self.models.len());
        for (model, tally) in &self.models {
            current.sum(tally.current);
            mapped.sum(tally.mapped);
            let current_row = self.priced(model, tally.current);
            let mapped_row = self.priced(self.mapped_model(model), tally.mapped);
            if !current_row.priced {
                *unpriced_current.entry(model.clone()).or_default() += tally.requests;
            }
            if !mapped_row.priced {
                *unpriced_mapped
                    .entry(mapped_row.priced_as.clone())
                    .or_default() += tally.requests;
            }
            models.push(ModelRow {
                model: model.clone(),
                requests: tally.requests,
                cache_hits: tally.cache_hits,
                prompt_tokens: tally.prompt_tokens,
                cached_tokens: tally.cached_tokens,
                completion_tokens: tally.completion_tokens,
                current: current_row,
                mapped: mapping.then_some(mapped_row),
            });
        }
        let unmatched_maps = self
            .map
            .keys()
            .filter(|from| !self.models.contains_key(*from))
            .cloned()
            .collect();
        Projection {
            traffic: traffic.display().to_string(),
            config: config.display().to_string(),
            prices_date,
            requests: models.iter().map(|m| m.requests).sum(),
            cache_hits: models.iter().map(|m| m.cache_hits).sum(),
            days,
            first_day: self.days.first().map(|&d| clock::date(d)),
            last_day: self.days.last().map(|&d| clock::date(d)),
            month_days: MONTH_DAYS,
            recorded_pico: self.recorded,
            recorded_usd: pico_to_usd(self.recorded),
            current: Scenario::new(current, days, unpriced_current),
            mapped: mapping.then(|| Scenario::new(mapped, days, unpriced_mapped)),
            map: self.map,
            models,
            unmatched_maps,
        }
    }

    fn priced(&self, model: &str, money: Money) -> Priced {
        Priced {
            priced_as: model.to_string(),
            priced: self.prices.get(model).is_some(),
            actual_pico: money.actual,
            actual_usd: pico_to_usd(money.actual),
            without_cache_pico: money.without_cache,
            without_cache_usd: pico_to_usd(money.without_cache),
        }
    }
}

/// The result of `weir cost project` (its `--json` form; the shape is in the command's help).
#[derive(Clone, Debug, Serialize)]
pub struct Projection {
    /// The traffic file.
    pub traffic: String,
    /// The config file the prices came from.
    pub config: String,
    /// The `date` of the price file, when prices came from one.
    pub prices_date: Option<String>,
    /// Lines (LLM calls and cache hits).
    pub requests: u64,
    /// Of those, answered from the cache (`hit`, `semantic-hit`, `coalesced`).
    pub cache_hits: u64,
    /// Distinct UTC days in the log (at least 1).
    pub days: u64,
    /// The first day in the log.
    pub first_day: Option<String>,
    /// The last day in the log.
    pub last_day: Option<String>,
    /// Days in the projected month.
    pub month_days: u64,
    /// The sum of the log's own `cost_usd`, pico-dollars.
    pub recorded_pico: u64,
    /// The same, USD.
    pub recorded_usd: f64,
    /// `--map`: FROM → TO.
    pub map: BTreeMap<String, String>,
    /// At the prices of the models as recorded.
    pub current: Scenario,
    /// With `--map` applied (`None` without it).
    pub mapped: Option<Scenario>,
    /// By recorded model, sorted by name.
    pub models: Vec<ModelRow>,
    /// `--map` models that no line of the log used (a warning, not in the JSON).
    #[serde(skip)]
    pub unmatched_maps: Vec<String>,
}

/// The totals under one price assignment.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    /// Paid calls (hits at $0), pico-dollars.
    pub actual_pico: u64,
    /// The same, USD.
    pub actual_usd: f64,
    /// Every request as if paid for, pico-dollars.
    pub without_cache_pico: u64,
    /// The same, USD.
    pub without_cache_usd: f64,
    /// What the cache saved (`without_cache - actual`), pico-dollars.
    pub saved_pico: u64,
    /// The same, USD.
    pub saved_usd: f64,
    /// `saved / without_cache` (0 when nothing would have been paid).
    pub cache_saving_share: f64,
    /// `actual / days`, pico-dollars (rounded down).
    pub daily_pico: u64,
    /// The same, USD.
    pub daily_usd: f64,
    /// `daily × month_days`, pico-dollars.
    pub monthly_pico: u64,
    /// The same, USD.
    pub monthly_usd: f64,
    /// Models with no price (counted at $0) and their requests.
    pub unpriced: Vec<Unpriced>,
}

impl Scenario {
    fn new(money: Money, days: u64, unpriced: BTreeMap<String, u64>) -> Scenario {
        let saved = money.without_cache.saturating_sub(money.actual);
        let daily = money.actual / days;
        let monthly = daily.saturating_mul(MONTH_DAYS);
        Scenario {
            actual_pico: money.actual,
            actual_usd: pico_to_usd(money.actual),
            without_cache_pico: money.without_cache,
            without_cache_usd: pico_to_usd(money.without_cache),
            saved_pico: saved,
            saved_usd: pico_to_usd(saved),
            cache_saving_share: if money.without_cache == 0 {
                0.0
            } else {
                saved as f64 / money.without_cache as f64
            },
            daily_pico: daily,
            daily_usd: pico_to_usd(daily),
            monthly_pico: monthly,
            monthly_usd: pico_to_usd(monthly),
            unpriced: unpriced
                .into_iter()
                .map(|(model, requests)| Unpriced { model, requests })
                .collect(),
        }
    }
}

/// A model without a price.
#[derive(Clone, Debug, Serialize)]
pub struct Unpriced {
    /// The model (as priced: after `--map` in the mapped scenario).
    pub model: String,
    /// Its requests, counted at $0.
    pub requests: u64,
}

/// One recorded model's requests.
#[derive(Clone, Debug, Serialize)]
pub struct ModelRow {
    /// The upstream model as recorded.
    pub model: String,
    /// Its lines.
    pub requests: u64,
    /// Of those, cache hits.
    pub cache_hits: u64,
    /// Prompt tokens (hits included).
    pub prompt_tokens: u64,
    /// Of those, cached by the provider.
    pub cached_tokens: u64,
    /// Completion tokens (hits included).
    pub completion_tokens: u64,
    /// At its own price.
    pub current: Priced,
    /// At its mapped model's price (`None` without `--map`).
    pub mapped: Option<Priced>,
}

/// A model's requests priced as one model.
#[derive(Clone, Debug, Serialize)]
pub struct Priced {
    /// The model whose price was used.
    pub priced_as: String,
    /// Whether that model has a price (if not, the figures are 0).
    pub priced: bool,
    /// Paid calls, pico-dollars.
    pub actual_pico: u64,
    /// The same, USD.
    pub actual_usd: f64,
    /// Every request as if paid for, pico-dollars.
    pub without_cache_pico: u64,
    /// The same, USD.
    pub without_cache_usd: f64,
}

impl Projection {
    /// What the operator should know that the figures do not say.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.requests == 0 {
            out.push(format!("{}: no requests in the traffic file", self.traffic));
        }
        let unpriced = |list: Vec<&Unpriced>, what: &str| {
            let list: Vec<String> = list
                .iter()
                .map(|u| format!("{} ({})", u.model, plural(u.requests, "request")))
                .collect();
            format!(
                "unpriced models{what}, counted at $0: {}; add [prices.MODEL] to {}",
                list.join(", "),
                self.config
            )
        };
        if !self.current.unpriced.is_empty() {
            out.push(unpriced(self.current.unpriced.iter().collect(), ""));
        }
        // Under the mapping, only the models the mapping made unpriced are news.
        if let Some(mapped) = &self.mapped {
            let new: Vec<&Unpriced> = mapped
                .unpriced
                .iter()
                .filter(|u| !self.current.unpriced.iter().any(|c| c.model == u.model))
                .collect();
            if !new.is_empty() {
                out.push(unpriced(new, " (--map targets)"));
            }
        }
        for from in &self.unmatched_maps {
            out.push(format!(
                "--map {from}=...: no request in the log used {from}"
            ));
        }
        out
    }

    /// The human-readable report.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let period = match (&self.first_day, &self.last_day) {
            (Some(first), Some(last)) if first != last => format!(" ({first} to {last})"),
            (Some(first), _) => format!(" ({first})"),
            _ => String::new(),
        };
        out += &format!(
            "{}: {} ({}), {} observed{period}\n",
            self.traffic,
            plural(self.requests, "request"),
            plural(self.cache_hits, "cache hit"),
            plural(self.days, "day"),
        );
        let dated = self
            .prices_date
            .as_ref()
            .map(|d| format!(" (price file dated {d})"))
            .unwrap_or_default();
        out += &format!("prices: {}{dated}\n\n", self.config);

        let scenarios: Vec<&Scenario> = std::iter::once(&self.current)
            .chain(self.mapped.as_ref())
            .collect();
        let mut rows: Vec<Vec<String>> = vec![
            std::iter::once(String::new())
                .chain(std::iter::once("recorded models".to_string()))
                .chain(self.mapped.as_ref().map(|_| "with --map".to_string()))
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
            &format!("projected monthly ({MONTH_DAYS}-day month)"),
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
            usd(self.recorded_pico)
        );

        if !self.models.is_empty() {
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
                .chain(self.mapped.as_ref().map(|_| "with --map".to_string()))
                .collect(),
            ];
            for m in &self.models {
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
    fn a_bad_line_says_where_and_what() {
        let err = |text: &str| parse_line(text, 7).err().unwrap_or_default();
        let (at, message) = err(r#"{"ts": 1, "model": "m", "prompt_tokens": 1}"#);
        assert!(at.starts_with("7:"), "{at}");
        assert_eq!(message, "missing field `completion_tokens`");
        let (at, message) =
            err(r#"{"ts":1,"model":"m","prompt_tokens":1,"completion_tokens":1,"cache":"warm"}"#);
        assert_eq!(at, "7");
        assert!(message.starts_with("cache: expected miss"), "{message}");
        let (_, message) = err(
            r#"{"ts":1,"model":"m","prompt_tokens":5000000000,"completion_tokens":1,"cache":"miss"}"#,
        );
        assert!(
            message.starts_with("prompt_tokens: 5000000000"),
            "{message}"
        );
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
