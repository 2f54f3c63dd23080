//! The verdict: totals, a per-second series, the events as applied, the sims' own counts and
//! the gates, as one serializable value (`report.json`; `html.rs` draws it).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::drive::Sample;
use super::scenario::{Gates, Scenario};
use super::scrape::Point;

/// Most distinct error codes kept; the rest are counted under [`OTHER_CODES`].
pub const MAX_CODES: usize = 32;

/// The code errors beyond [`MAX_CODES`] distinct ones are counted under.
pub const OTHER_CODES: &str = "other_codes";

/// Latency percentiles, ms.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of `values` (sorted in place); `None` when empty.
    pub fn of(values: &mut [Duration]) -> Option<Percentiles> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let at = |q: f64| {
            let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
            values[i].as_secs_f64() * 1000.0
        };
        Some(Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

/// The whole run's counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    /// Requests the schedule asked for and the client sent (or tried to).
    pub sent: u64,
    /// Requests counted as not sent: every user was busy and the backlog full.
    pub not_sent: u64,
    /// 2xx answers with no error (a stream that ended with `[DONE]`).
    pub ok: u64,
    /// Everything else.
    pub errors: u64,
    /// `errors / sent`.
    pub error_rate: f64,
    /// Answers by HTTP status (`0`: no answer).
    pub by_status: BTreeMap<String, u64>,
    /// Errors by code.
    pub by_code: BTreeMap<String, u64>,
    /// Requests that asked for a stream.
    pub streams: u64,
    /// Answers served from weir's cache.
    pub cache_hits: u64,
    /// `cache_hits / ok`.
    pub cache_hit_rate: f64,
    /// Requests refused with `budget_exceeded`.
    pub budget_refusals: u64,
    /// Latency from the scheduled send time, every request that got an answer or failed.
    pub latency_ms: Percentiles,
    /// Time to first byte of streamed requests.
    pub ttft_ms: Option<Percentiles>,
    /// Requests finished per second of the run.
    pub achieved_rps: f64,
    /// What weir spent during the run (from `/metrics`), USD.
    pub cost_usd: Option<f64>,
    /// `cost_usd` per 1,000 requests sent.
    pub cost_per_1k_usd: Option<f64>,
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Second {
    /// Seconds from the start (the bucket's start).
    pub t: u64,
    /// Requests scheduled in this second.
    pub sent: u64,
    /// Of those, answered well.
    pub ok: u64,
    /// Of those, failed.
    pub errors: u64,
    /// Failures by code.
    pub by_code: BTreeMap<String, u64>,
    /// Cache hits.
    pub cache_hits: u64,
    /// Latency percentiles of the requests scheduled in this second.
    pub latency_ms: Option<Percentiles>,
}

/// A timeline event as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct EventRecord {
    /// When it was applied, seconds from the start.
    pub at_s: f64,
    /// When its window ended (`None` for a one-off or a window still open at the end).
    pub until_s: Option<f64>,
    /// What it did.
    pub label: String,
    /// `ok`, or what went wrong applying it.
    pub result: String,
}

/// One gate's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct GateResult {
    /// Its key in `[gates]`.
    pub gate: String,
    /// The limit set.
    pub limit: f64,
    /// What the run measured (`None`: nothing to measure, which fails the gate).
    pub actual: Option<f64>,
    /// Whether it held.
    pub passed: bool,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// What it shows.
    pub about: String,
    /// The scenario file.
    pub file: String,
    /// Where requests went.
    pub url: String,
    /// Unix seconds when the load started.
    pub started_at: u64,
    /// The load's planned duration, s.
    pub duration_s: f64,
    /// How the load was driven (`open` or `closed`).
    pub mode: String,
    /// The counts.
    pub totals: Totals,
    /// Per second.
    pub series: Vec<Second>,
    /// weir's `/metrics`, once a second (empty when not scraped).
    pub scrapes: Vec<Point>,
    /// The timeline as applied.
    pub events: Vec<EventRecord>,
    /// Each sim's `/sim/stats` at the end (its counters were zeroed at the start).
    pub sims: BTreeMap<String, serde_json::Value>,
    /// weir's `/admin/targets` and `/admin/stages` at the end, when scraped.
    pub weir: Option<serde_json::Value>,
    /// Each gate set.
    pub gates: Vec<GateResult>,
    /// All gates held.
    pub passed: bool,
}

/// What the run collected, for [`build`].
pub struct Collected {
    /// Every request's sample.
    pub samples: Vec<Sample>,
    /// The scrapes.
    pub scrapes: Vec<Point>,
    /// The events.
    pub events: Vec<EventRecord>,
    /// The sims' stats.
    pub sims: BTreeMap<String, serde_json::Value>,
    /// weir's admin state.
    pub weir: Option<serde_json::Value>,
    /// Wall time from the start of the load to the last answer.
    pub elapsed: Duration,
    /// Unix seconds at the start.
    pub started_at: u64,
    /// The URL requests went to.
    pub url: String,
    /// `open` or `closed`.
    pub mode: String,
}

/// Aggregates what was collected and judges the gates.
pub fn build(scenario: &Scenario, collected: Collected) -> Report {
    let Collected {
        samples,
        scrapes,
        events,
        sims,
        weir,
        elapsed,
        started_at,
        url,
        mode,
    } = collected;
    let mut totals = Totals::default();
    let seconds = (scenario.duration.as_secs() as usize).max(1);
    let mut series: Vec<Second> = (0..seconds as u64)
        .map(|t| Second {
            t,
            ..Second::default()
        })
        .collect();
    let mut per_second: Vec<Vec<Duration>> = vec![Vec::new(); seconds];
    let mut latencies = Vec::with_capacity(samples.len());
    let mut ttfts = Vec::new();
    for sample in &samples {
        totals.sent += 1;
        let second = (sample.at.as_secs() as usize).min(seconds - 1);
        let bucket = &mut series[second];
        bucket.sent += 1;
        *totals
            .by_status
            .entry(sample.status.to_string())
            .or_default() += 1;
        if sample.stream {
            totals.streams += 1;
        }
        if sample.ok() {
            totals.ok += 1;
            bucket.ok += 1;
            if sample.cache_hit {
                totals.cache_hits += 1;
                bucket.cache_hits += 1;
            }
        } else {
            totals.errors += 1;
            bucket.errors += 1;
            let mut code = sample
                .code
                .as_deref()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("status_{}", sample.status));
            // Codes come from the endpoint: a hostile one could send a new one every time.
            if totals.by_code.len() >= MAX_CODES && !totals.by_code.contains_key(&code) {
                code = OTHER_CODES.to_owned();
            }
            if code == "not_sent" {
                totals.not_sent += 1;
            }
            if code == "budget_exceeded" {
                totals.budget_refusals += 1;
            }
            *bucket.by_code.entry(code.clone()).or_default() += 1;
            *totals.by_code.entry(code).or_default() += 1;
        }
        if sample.code.as_deref() != Some("not_sent") {
            latencies.push(sample.latency);
            per_second[second].push(sample.latency);
        }
        if let Some(ttft) = sample.ttft {
            ttfts.push(ttft);
        }
    }
    for (bucket, values) in series.iter_mut().zip(per_second.iter_mut()) {
        bucket.latency_ms = Percentiles::of(values);
    }
    totals.error_rate = ratio(totals.errors, totals.sent);
    totals.cache_hit_rate = ratio(totals.cache_hits, totals.ok);
    totals.latency_ms = Percentiles::of(&mut latencies).unwrap_or_default();
    totals.ttft_ms = Percentiles::of(&mut ttfts);
    totals.achieved_rps = totals.sent as f64 / elapsed.as_secs_f64().max(1e-9);
    if let (Some(first), Some(last)) = (scrapes.first(), scrapes.last()) {
        let cost = (last.cost_usd - first.cost_usd).max(0.0);
        totals.cost_usd = Some(cost);
        totals.cost_per_1k_usd = (totals.sent > 0).then(|| cost * 1000.0 / totals.sent as f64);
    }
    let gates = judge(&scenario.gates, &totals);
    Report {
        scenario: scenario.name.clone(),
        about: scenario.about.clone(),
        file: scenario.source.display().to_string(),
        url,
        started_at,
        duration_s: scenario.duration.as_secs_f64(),
        mode,
        passed: gates.iter().all(|g| g.passed),
        totals,
        series,
        scrapes,
        events,
        sims,
        weir,
        gates,
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    match whole {
        0 => 0.0,
        _ => part as f64 / whole as f64,
    }
}

/// Each gate set in `gates`, judged against `totals`.
pub fn judge(gates: &Gates, totals: &Totals) -> Vec<GateResult> {
    let Gates {
        error_rate_max,
        p50_ms_max,
        p99_ms_max,
        ttft_p99_ms_max,
        cost_per_1k_usd_max,
        cache_hit_rate_min,
        budget_refusals_max,
        budget_refusals_min,
    } = gates;
    let has_answers = totals.sent > totals.not_sent;
    let checks: [(&str, Option<f64>, Option<f64>, bool); 8] = [
        (
            "error_rate_max",
            *error_rate_max,
            Some(totals.error_rate),
            true,
        ),
        (
            "p50_ms_max",
            *p50_ms_max,
            has_answers.then_some(totals.latency_ms.p50),
            true,
        ),
        (
            "p99_ms_max",
            *p99_ms_max,
            has_answers.then_some(totals.latency_ms.p99),
            true,
        ),
        (
            "ttft_p99_ms_max",
            *ttft_p99_ms_max,
            totals.ttft_ms.as_ref().map(|t| t.p99),
            true,
        ),
        (
            "cost_per_1k_usd_max",
            *cost_per_1k_usd_max,
            totals.cost_per_1k_usd,
            true,
        ),
        (
            "cache_hit_rate_min",
            *cache_hit_rate_min,
            Some(totals.cache_hit_rate),
            false,
        ),
        (
            "budget_refusals_max",
            *budget_refusals_max,
            Some(totals.budget_refusals as f64),
            true,
        ),
        (
            "budget_refusals_min",
            *budget_refusals_min,
            Some(totals.budget_refusals as f64),
            false,
        ),
    ];
    checks
        .into_iter()
        .filter_map(|(gate, limit, actual, is_max)| {
            let limit = limit?;
            let passed = actual.is_some_and(|a| if is_max { a <= limit } else { a >= limit });
            Some(GateResult {
                gate: gate.to_owned(),
                limit,
                actual,
                passed,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, latency_ms: u64, status: u16, code: Option<&str>) -> Sample {
        Sample {
            at: Duration::from_millis(at_ms),
            latency: Duration::from_millis(latency_ms),
            ttft: None,
            status,
            code: code.map(Into::into),
            cache_hit: status == 200 && at_ms.is_multiple_of(2),
            stream: false,
        }
    }

    /// The report of `samples` from a run of `seconds` (an endpoint, no sims, no scrapes).
    fn build_from(seconds: u64, samples: Vec<Sample>) -> Report {
        let text = format!(
            "name = \"t\"\nduration_s = {seconds}\n[weir]\nurl = \"http://127.0.0.1:1\"\n\
             [traffic]\nrate = 1\n"
        );
        let scenario = Scenario::parse(
            &text,
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
        )
        .expect("valid");
        build(
            &scenario,
            Collected {
                samples,
                scrapes: Vec::new(),
                events: Vec::new(),
                sims: BTreeMap::new(),
                weir: None,
                elapsed: Duration::from_secs(seconds),
                started_at: 0,
                url: "u".into(),
                mode: "open".into(),
            },
        )
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut values).expect("some");
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert!(Percentiles::of(&mut []).is_none());
    }

    #[test]
    fn gates_hold_or_fail_by_name() {
        let totals = Totals {
            sent: 100,
            errors: 5,
            error_rate: 0.05,
            latency_ms: Percentiles {
                p50: 10.0,
                p90: 20.0,
                p99: 30.0,
                max: 40.0,
            },
            cache_hit_rate: 0.2,
            ..Totals::default()
        };
        let gates = Gates {
            error_rate_max: Some(0.1),
            p99_ms_max: Some(25.0),
            cache_hit_rate_min: Some(0.1),
            ttft_p99_ms_max: Some(100.0),
            ..Gates::default()
        };
        let results = judge(&gates, &totals);
        let verdicts: Vec<(&str, bool)> = results
            .iter()
            .map(|g| (g.gate.as_str(), g.passed))
            .collect();
        assert_eq!(
            verdicts,
            vec![
                ("error_rate_max", true),
                ("p99_ms_max", false),
                ("ttft_p99_ms_max", false),
                ("cache_hit_rate_min", true)
            ]
        );
        assert_eq!(
            results[2].actual, None,
            "no streams: nothing measured fails the gate"
        );
    }

    #[test]
    fn build_buckets_by_scheduled_second_and_counts_codes() {
        let samples = vec![
            sample(0, 10, 200, None),
            sample(500, 20, 200, None),
            sample(1200, 30, 429, Some("budget_exceeded")),
            sample(2500, 0, 0, Some("not_sent")),
            sample(2600, 50, 502, Some("upstream_failed")),
        ];
        let report = build_from(3, samples);
        let t = &report.totals;
        assert_eq!(
            (t.sent, t.ok, t.errors, t.not_sent, t.budget_refusals),
            (5, 2, 3, 1, 1)
        );
        assert_eq!(t.by_status.get("429"), Some(&1));
        assert_eq!(t.cache_hits, 2);
        assert_eq!(t.latency_ms.max, 50.0, "a request not sent has no latency");
        let sent: Vec<u64> = report.series.iter().map(|s| s.sent).collect();
        assert_eq!(sent, vec![2, 1, 2]);
        assert_eq!(report.series[2].by_code.get("upstream_failed"), Some(&1));
        assert!(t.cost_usd.is_none());
    }

    #[test]
    fn distinct_error_codes_are_capped() {
        let codes: Vec<String> = (0..100).map(|i| format!("code_{i}")).collect();
        let samples = codes.iter().map(|c| sample(0, 1, 500, Some(c))).collect();
        let report = build_from(1, samples);
        assert_eq!(report.totals.by_code.len(), MAX_CODES + 1);
        assert_eq!(
            report.totals.by_code.get(OTHER_CODES),
            Some(&(100 - MAX_CODES as u64))
        );
        assert_eq!(report.totals.errors, 100);
    }
}
