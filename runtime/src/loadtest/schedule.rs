//! What to send and when: the scenario's traffic turned into a stream of planned requests,
//! each with its send time (from the start of the load) and its body.
//!
//! Synthetic traffic is generated lazily from a seeded RNG (the same seed sends the same
//! bodies at the same times); replayed traffic is read from its file up front, bounded.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::scenario::{Arrival, MAX_REQUESTS, Replay, ReplayFormat, Traffic};
use crate::cost::TrafficLine;

/// Largest replay file read (bytes).
pub const MAX_REPLAY_BYTES: u64 = 512 << 20;

/// One request to send.
#[derive(Clone, Debug)]
pub struct Planned {
    /// When, from the start of the load.
    pub at: Duration,
    /// The JSON body.
    pub body: Bytes,
    /// Whether it asks for a stream.
    pub stream: bool,
}

/// The words prompts are made of.
const WORDS: &[&str] = &[
    "the",
    "river",
    "weir",
    "water",
    "flows",
    "over",
    "a",
    "low",
    "dam",
    "and",
    "raises",
    "level",
    "upstream",
    "mill",
    "fish",
    "ladder",
    "stone",
    "wooden",
    "gate",
    "spring",
    "flood",
    "summer",
    "drought",
    "measure",
    "flow",
    "rate",
    "crest",
    "sharp",
    "broad",
    "notch",
    "why",
    "how",
    "explain",
    "briefly",
    "email",
    "me",
    "at",
    "jane@example.com",
    "please",
    "summarise",
];

/// Mixed into a prompt's id to seed its words, so they differ from what the run's own seed
/// draws.
const PROMPT_SALT: u64 = 0x5eed_0f1e;

/// Synthetic requests: an arrival process and a body per request.
pub struct Synthetic {
    traffic: Traffic,
    duration: Duration,
    rng: StdRng,
    /// The next send time, seconds.
    next_at: f64,
    /// Requests planned so far.
    n: u64,
}

impl Synthetic {
    /// The requests of `traffic` over `duration`, seeded by `seed`.
    pub fn new(traffic: Traffic, duration: Duration, seed: u64) -> Synthetic {
        Synthetic {
            traffic,
            duration,
            rng: StdRng::seed_from_u64(seed),
            next_at: 0.0,
            n: 0,
        }
    }

    /// The rate at `t` seconds.
    fn rate_at(&self, t: f64) -> f64 {
        let traffic = &self.traffic;
        let base = f64::from(traffic.rate.unwrap_or(1));
        match traffic.arrival {
            Arrival::Ramp => {
                let end = f64::from(traffic.rate_end.unwrap_or(1));
                base + (end - base) * (t / self.duration.as_secs_f64()).min(1.0)
            }
            Arrival::Spike => {
                let from = traffic.spike_at_s.unwrap_or(0) as f64;
                let to = from + traffic.spike_for_s.unwrap_or(0) as f64;
                match (from..to).contains(&t) {
                    true => f64::from(traffic.spike_rate.unwrap_or(1)),
                    false => base,
                }
            }
            _ => base,
        }
    }

    /// A body for request `n`: its prompt is one of `distinct_prompts` (so repeats are
    /// byte-identical) or its own.
    pub fn body(&mut self) -> (Bytes, bool) {
        let traffic = &self.traffic;
        let prompt_id = match traffic.distinct_prompts {
            Some(distinct) => self.rng.random_range(0..u64::from(distinct)),
            None => self.n,
        };
        let stream = traffic.stream_fraction > 0.0 && self.rng.random_bool(traffic.stream_fraction);
        let mut words = StdRng::seed_from_u64(prompt_id ^ PROMPT_SALT);
        let count = words.random_range(traffic.prompt_words_min..=traffic.prompt_words_max);
        let mut text = format!("#{prompt_id}");
        for _ in 0..count {
            text.push(' ');
            text.push_str(WORDS[words.random_range(0..WORDS.len())]);
        }
        let model = match traffic.models.is_empty() {
            true => traffic.model.as_str(),
            false => {
                let total: u64 = traffic.models.values().map(|w| u64::from(*w)).sum();
                let mut pick = self.rng.random_range(0..total.max(1));
                let mut chosen = traffic.model.as_str();
                for (name, weight) in &traffic.models {
                    if pick < u64::from(*weight) {
                        chosen = name;
                        break;
                    }
                    pick -= u64::from(*weight);
                }
                chosen
            }
        };
        let mut body = json!({
            "model": model,
            "messages": [{"role": "user", "content": text}],
        });
        if let Some(max_tokens) = traffic.max_tokens {
            body["max_tokens"] = json!(max_tokens);
        }
        if let Some(temperature) = traffic.temperature {
            body["temperature"] = json!(temperature);
        }
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        (Bytes::from(body.to_string()), stream)
    }
}

impl Iterator for Synthetic {
    type Item = Planned;

    fn next(&mut self) -> Option<Planned> {
        if self.traffic.arrival == Arrival::Closed
            || self.next_at >= self.duration.as_secs_f64()
            || self.n >= MAX_REQUESTS
        {
            return None;
        }
        let at = self.next_at;
        let rate = self.rate_at(at);
        let gap = match self.traffic.arrival {
            Arrival::Poisson => {
                let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
                -u.ln() / rate
            }
            _ => 1.0 / rate,
        };
        self.next_at += gap;
        let (body, stream) = self.body();
        self.n += 1;
        Some(Planned {
            at: Duration::from_secs_f64(at),
            body,
            stream,
        })
    }
}

/// Reads a replay file into planned requests (sorted by time, cut at `duration`). Errors name
/// the file and line.
pub fn replay(replay: &Replay, duration: Duration) -> Result<Vec<Planned>, String> {
    let name = replay.file.display().to_string();
    let text = read_bounded(&replay.file).map_err(|err| format!("{name}: {err}"))?;
    let mut planned = Vec::new();
    let mut first_ts: Option<f64> = None;
    // Request-log times are whole seconds: requests of one second are spread over it.
    let mut per_second: Vec<(f64, usize)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if planned.len() as u64 >= MAX_REQUESTS {
            break;
        }
        let at_line = |message: String| format!("{name}:{}: {message}", i + 1);
        let (ts, body) = match replay.format {
            ReplayFormat::RequestLog => {
                let line: TrafficLine = serde_json::from_str(line)
                    .map_err(|err| at_line(format!("not a request-log line: {err}")))?;
                let model = replay.model.clone().unwrap_or(match line.route.as_str() {
                    "" | "-" => line.model.clone(),
                    route => route.to_owned(),
                });
                let words = (line.prompt_tokens * 3 / 4).clamp(1, 100_000);
                let mut text = format!("#{i}");
                for w in 0..words {
                    text.push(' ');
                    text.push_str(WORDS[w as usize % WORDS.len()]);
                }
                let body = json!({
                    "model": model,
                    "messages": [{"role": "user", "content": text}],
                    "max_tokens": line.completion_tokens.max(1),
                });
                (Some(line.ts as f64), body)
            }
            ReplayFormat::Bodies => {
                let value: Value = serde_json::from_str(line)
                    .map_err(|err| at_line(format!("not a JSON object: {err}")))?;
                let (ts, mut body) = match value.get("body") {
                    Some(body) => {
                        let ts = value.get("ts").and_then(Value::as_f64);
                        if value.get("ts").is_some() && ts.is_none() {
                            return Err(at_line("`ts` must be a number of seconds".into()));
                        }
                        (ts, body.clone())
                    }
                    None => (None, value),
                };
                if !body.is_object() {
                    return Err(at_line("expected a chat body (a JSON object)".into()));
                }
                if let Some(model) = &replay.model {
                    body["model"] = json!(model);
                }
                (ts, body)
            }
        };
        let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
        let at = match ts {
            Some(ts) => {
                let first = *first_ts.get_or_insert(ts);
                if ts < first {
                    return Err(at_line("times must not go backwards".into()));
                }
                if matches!(replay.format, ReplayFormat::RequestLog) {
                    match per_second.last_mut() {
                        Some((second, count)) if *second == ts => *count += 1,
                        _ => per_second.push((ts, 1)),
                    }
                }
                (ts - first) / replay.speed
            }
            None => planned.len() as f64 / f64::from(replay.rate),
        };
        planned.push(Planned {
            at: Duration::from_secs_f64(at),
            body: Bytes::from(body.to_string()),
            stream,
        });
    }
    if matches!(replay.format, ReplayFormat::RequestLog) {
        let mut i = 0;
        for (_, count) in per_second {
            for k in 0..count {
                let spread = k as f64 / count as f64 / replay.speed;
                planned[i].at += Duration::from_secs_f64(spread);
                i += 1;
            }
        }
    }
    planned.sort_by_key(|p| p.at);
    planned.retain(|p| p.at < duration);
    if planned.is_empty() {
        return Err(format!(
            "{name}: no requests to replay within the run's duration"
        ));
    }
    Ok(planned)
}

fn read_bounded(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_REPLAY_BYTES {
        return Err(format!(
            "{} bytes; a replay file may hold at most {MAX_REPLAY_BYTES}",
            meta.len()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::scenario::{Scenario, TrafficSource};

    fn traffic(extra: &str) -> Traffic {
        let text = format!(
            "name = \"t\"\nduration_s = 10\n[weir]\nurl = \"http://127.0.0.1:1\"\n[traffic]\n{extra}\n"
        );
        let scenario = Scenario::parse(&text, Path::new("t.toml"), Path::new(".")).expect("valid");
        match scenario.traffic {
            TrafficSource::Synthetic(traffic) => traffic,
            TrafficSource::Replay(_) => panic!("synthetic"),
        }
    }

    #[test]
    fn constant_arrivals_are_evenly_spaced_and_seeded() {
        let plan: Vec<_> =
            Synthetic::new(traffic("rate = 20"), Duration::from_secs(10), 1).collect();
        assert_eq!(plan.len(), 200);
        assert_eq!(plan[1].at, Duration::from_millis(50));
        let again: Vec<_> =
            Synthetic::new(traffic("rate = 20"), Duration::from_secs(10), 1).collect();
        assert_eq!(plan[7].body, again[7].body);
        assert_ne!(
            plan[7].body, plan[8].body,
            "prompts are distinct by default"
        );
    }

    #[test]
    fn poisson_keeps_its_mean_and_spike_its_window() {
        let n = Synthetic::new(
            traffic("arrival = \"poisson\"\nrate = 100"),
            Duration::from_secs(10),
            3,
        )
        .count();
        assert!((800..1200).contains(&n), "{n} arrivals for a mean of 1000");
        let spike =
            "arrival = \"spike\"\nrate = 10\nspike_rate = 100\nspike_at_s = 2\nspike_for_s = 3";
        let plan: Vec<_> = Synthetic::new(traffic(spike), Duration::from_secs(10), 3).collect();
        let inside = plan
            .iter()
            .filter(|p| (2.0..5.0).contains(&p.at.as_secs_f64()))
            .count();
        assert!((295..=305).contains(&inside), "{inside} in the spike");
        assert!((360..=375).contains(&plan.len()), "{}", plan.len());
    }

    #[test]
    fn distinct_prompts_repeat_and_streams_follow_the_fraction() {
        let plan: Vec<_> = Synthetic::new(
            traffic("rate = 100\ndistinct_prompts = 3\nstream_fraction = 0.5"),
            Duration::from_secs(10),
            9,
        )
        .collect();
        let bodies: std::collections::HashSet<_> = plan
            .iter()
            .map(|p| {
                let v: Value = serde_json::from_slice(&p.body).expect("json");
                v["messages"][0]["content"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        assert_eq!(bodies.len(), 3);
        let streams = plan.iter().filter(|p| p.stream).count();
        assert!((400..600).contains(&streams), "{streams} streams of 1000");
    }

    #[test]
    fn a_model_mix_follows_its_weights() {
        let plan: Vec<_> = Synthetic::new(
            traffic("rate = 100\nmodels = { demo = 3, rag = 1 }"),
            Duration::from_secs(10),
            5,
        )
        .collect();
        let rag = plan
            .iter()
            .filter(|p| {
                let v: Value = serde_json::from_slice(&p.body).expect("json");
                v["model"] == "rag"
            })
            .count();
        assert!((200..300).contains(&rag), "{rag} of 1000 to rag");
    }

    #[test]
    fn replay_keeps_gaps_scaled_by_speed_and_names_bad_lines() {
        let dir = std::env::temp_dir().join(format!("weir-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("log.jsonl");
        let line = |ts: u64| {
            format!(
                "{{\"ts\":{ts},\"route\":\"demo\",\"model\":\"m\",\"prompt_tokens\":8,\"completion_tokens\":4,\"cache\":\"miss\"}}\n"
            )
        };
        std::fs::write(&file, format!("{}{}{}", line(100), line(100), line(104))).expect("write");
        let replay = Replay {
            file: file.clone(),
            format: ReplayFormat::RequestLog,
            speed: 2.0,
            rate: 10,
            model: None,
            path: "/v1/chat/completions".into(),
            max_in_flight: 8,
            timeout: Duration::from_secs(1),
        };
        let plan = super::replay(&replay, Duration::from_secs(60)).expect("replays");
        let at: Vec<f64> = plan.iter().map(|p| p.at.as_secs_f64()).collect();
        assert_eq!(at, vec![0.0, 0.25, 2.0]);
        let body: Value = serde_json::from_slice(&plan[0].body).expect("json");
        assert_eq!(body["model"], "demo");
        assert_eq!(body["max_tokens"], 4);
        std::fs::write(&file, format!("{}not json\n", line(1))).expect("write");
        let err = super::replay(&replay, Duration::from_secs(60)).expect_err("bad line");
        assert!(err.contains("log.jsonl:2: not a request-log line"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
