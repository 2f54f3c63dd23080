//! The maths of `weir cost project`: what recorded traffic costs at today's prices, and what
//! it would cost with some models swapped for others.
//!
//! Owns: checking a request-log line ([`TrafficLine`]) into a [`LoggedRequest`], summing the
//! lines under the current and the mapped prices ([`Tally`]), and the resulting
//! [`Projection`] (daily and monthly figures, cache savings, unpriced models). Reading the
//! files and printing belong to the CLI (`cli::cost`).
//!
//! Every line is re-priced from its tokens with [`cost_of`] rather than summed from its
//! `cost_usd`, so a price change or a `--map` shows; the log's own figure is kept alongside as
//! "recorded". Money stays in integer pico-dollars until it is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use super::{PriceTable, TrafficLine, clock, cost_of, day_of};
use crate::config::{pico_to_usd, usd_to_pico};
use crate::wit::Usage;

/// Days in the month the monthly projection assumes.
pub const MONTH_DAYS: u64 = 30;

/// One checked line of the log.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    /// Its UTC day.
    pub day: u32,
    /// The upstream model as recorded.
    pub model: String,
    /// Its tokens (for a hit: the cached answer's).
    pub usage: Usage,
    /// Of its prompt tokens, those written to the provider's prompt cache.
    pub cache_writes: u32,
    /// Whether it was answered without a paid call.
    pub hit: bool,
    /// The log's `cost_usd`, pico-dollars.
    pub recorded: u64,
}

/// Parses and checks line `number` of a request log; an error is (`line` or `line:column`,
/// message).
pub fn parse_line(text: &str, number: usize) -> Result<LoggedRequest, (String, String)> {
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
    let cache_writes = tokens(line.cache_write_tokens, "cache_write_tokens")?;
    Ok(LoggedRequest {
        day: day_of(line.ts),
        model: line.model,
        usage,
        cache_writes,
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
    /// Its lines.
    requests: u64,
    /// Of those, cache hits.
    cache_hits: u64,
    /// Prompt tokens (hits included).
    prompt_tokens: u64,
    /// Of those, cached by the provider.
    cached_tokens: u64,
    /// Completion tokens (hits included).
    completion_tokens: u64,
    /// At the recorded model's price.
    current: Money,
    /// At the mapped model's price.
    mapped: Money,
}

/// The running sums while the log is read: [`add`](Self::add) each line, then
/// [`finish`](Self::finish).
pub struct Tally<'a> {
    /// The price table every line is priced with.
    prices: &'a PriceTable,
    /// FROM → TO.
    map: BTreeMap<String, String>,
    /// The distinct UTC days seen.
    days: BTreeSet<u32>,
    /// The sum of the lines' own `cost_usd`, pico-dollars.
    recorded: u64,
    /// By recorded model.
    models: BTreeMap<String, ModelTally>,
}

impl<'a> Tally<'a> {
    /// Nothing counted yet; `map` prices FROM's requests as TO's.
    pub fn new(prices: &'a PriceTable, map: BTreeMap<String, String>) -> Tally<'a> {
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

    /// Counts one line.
    pub fn add(&mut self, request: LoggedRequest) {
        let price = |model: &str| {
            self.prices.get(model).map_or(0, |price| {
                cost_of(price, &request.usage, request.cache_writes)
            })
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

    /// The projection of everything counted; `traffic`, `config` and `prices_date` say where
    /// the lines and the prices came from.
    pub fn finish(self, traffic: &Path, config: &Path, prices_date: Option<String>) -> Projection {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CostSettings, ModelPrice};

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

    fn request(day: u32, model: &str, prompt: u32, completion: u32, hit: bool) -> LoggedRequest {
        LoggedRequest {
            day,
            model: model.into(),
            usage: Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
                cached_tokens: 0,
            },
            cache_writes: 0,
            hit,
            recorded: 7,
        }
    }

    #[test]
    fn lines_are_repriced_per_scenario_and_projected_over_the_days_seen() {
        let price = |input, output| ModelPrice {
            input,
            cached_input: input,
            cache_write: input,
            output,
        };
        // "a" costs $1/M in and $2/M out, "b" half that; "c" has no price.
        let prices = PriceTable::new(&CostSettings {
            prices: BTreeMap::from([
                ("a".to_string(), price(1_000_000, 2_000_000)),
                ("b".to_string(), price(500_000, 1_000_000)),
            ]),
            ..CostSettings::default()
        });
        let map = BTreeMap::from([
            ("a".to_string(), "b".to_string()),
            ("x".to_string(), "y".to_string()),
        ]);
        let mut tally = Tally::new(&prices, map);
        tally.add(request(20_000, "a", 100, 10, false));
        tally.add(request(20_001, "a", 100, 10, true));
        tally.add(request(20_001, "c", 50, 5, false));
        let p = tally.finish(Path::new("t.jsonl"), Path::new("w.toml"), None);

        // One "a" call: 100 × 1e6 + 10 × 2e6 = 120e6 pico at a's price, 60e6 at b's.
        assert_eq!((p.requests, p.cache_hits, p.days), (3, 1, 2));
        assert_eq!(p.first_day.as_deref(), Some("2024-10-04"));
        assert_eq!(p.last_day.as_deref(), Some("2024-10-05"));
        assert_eq!(p.recorded_pico, 21);
        assert_eq!(p.current.actual_pico, 120_000_000);
        assert_eq!(p.current.without_cache_pico, 240_000_000);
        assert_eq!(p.current.saved_pico, 120_000_000);
        assert_eq!(p.current.cache_saving_share, 0.5);
        assert_eq!(p.current.daily_pico, 60_000_000);
        assert_eq!(p.current.monthly_pico, 60_000_000 * MONTH_DAYS);
        let mapped = p.mapped.as_ref().expect("--map gives a mapped scenario");
        assert_eq!(mapped.actual_pico, 60_000_000);
        assert_eq!(mapped.without_cache_pico, 120_000_000);
        assert_eq!(mapped.daily_pico, 30_000_000);
        // The unpriced model is counted at $0 and listed in both scenarios.
        for scenario in [&p.current, mapped] {
            let unpriced: Vec<_> = scenario
                .unpriced
                .iter()
                .map(|u| (u.model.as_str(), u.requests))
                .collect();
            assert_eq!(unpriced, [("c", 1)]);
        }
        let a = &p.models[0];
        assert_eq!((a.model.as_str(), a.requests, a.cache_hits), ("a", 2, 1));
        assert_eq!((a.prompt_tokens, a.completion_tokens), (200, 20));
        assert_eq!(a.current.actual_pico, 120_000_000);
        let a_mapped = a.mapped.as_ref().expect("mapped row");
        assert_eq!((a_mapped.priced_as.as_str(), a_mapped.priced), ("b", true));
        assert_eq!(a_mapped.actual_pico, 60_000_000);
        assert!(!p.models[1].current.priced);
        // A mapping no line used is reported.
        assert_eq!(p.unmatched_maps, ["x"]);
    }

    #[test]
    fn without_a_map_there_is_no_mapped_scenario_and_an_empty_log_is_one_day() {
        let prices = PriceTable::new(&CostSettings::default());
        let p = Tally::new(&prices, BTreeMap::new()).finish(
            Path::new("t.jsonl"),
            Path::new("w.toml"),
            None,
        );
        assert!(p.mapped.is_none());
        assert_eq!((p.requests, p.days), (0, 1));
        assert_eq!(p.current.cache_saving_share, 0.0);
        assert!(p.first_day.is_none());
    }
}
