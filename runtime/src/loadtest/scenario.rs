//! The scenario file: what to start, what traffic to send, which faults to apply when, and
//! the gates the run must pass. Read as strictly as `weir.toml` and with its machinery
//! (`config::document`, `config::value`): an unknown key, a wrong type or a value out of range
//! is an error naming `file:line:column: key`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::ConfigError;
use crate::config::check::Source;
use crate::config::document;
use crate::config::value::{Int, Ms, choices, env_var, ms, name, path, read_str};
use crate::sim::Faults;

/// Longest run a scenario may ask for, in seconds (an hour: a soak test belongs elsewhere).
pub const MAX_DURATION_S: u64 = 3_600;

/// Most requests one run may schedule (each keeps a 32-byte sample until the report).
pub const MAX_REQUESTS: u64 = 5_000_000;

/// A validated scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The file it was read from.
    pub source: PathBuf,
    /// A title for the report.
    pub name: String,
    /// What the scenario shows, for the report.
    pub about: String,
    /// How long the load runs.
    pub duration: Duration,
    /// Seeds arrivals, prompt sizes and the stream mix: the same seed sends the same traffic.
    pub seed: u64,
    /// The system under test.
    pub weir: WeirSettings,
    /// Simulated upstreams, by name.
    pub sims: BTreeMap<String, SimSettings>,
    /// Where requests come from.
    pub traffic: TrafficSource,
    /// Faults and other events, in time order.
    pub timeline: Vec<Event>,
    /// What the run must achieve.
    pub gates: Gates,
}

/// The system under test: a weir config the tool starts, or a running endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct WeirSettings {
    /// A weir config file: `weir loadtest` starts `weir serve --config` on it (relative to the
    /// scenario file), and talks to its `server.listen` and `server.admin_listen`.
    #[serde(default, deserialize_with = "some_path")]
    pub config: Option<PathBuf>,
    /// Or a fleet: weir nodes by name, each started on its own config (`{ a = "node-a.toml",
    /// b = "node-b.toml" }`). Requests go round-robin across them, like a load balancer that
    /// tries the next node when one refuses the connection; `kill = "a"` kills one.
    #[serde(default)]
    pub nodes: BTreeMap<String, PathBuf>,
    /// Or the base URL of a running endpoint (weir, or any OpenAI-compatible proxy), like
    /// `http://127.0.0.1:8080`.
    #[serde(default, deserialize_with = "some_url")]
    pub url: Option<String>,
    /// Base URL of weir's admin listener, scraped for `/metrics` during the run (default: the
    /// config's `admin_listen` when `config` is given; none for `url`, and then breaker states
    /// and cost are left out of the report).
    #[serde(default, deserialize_with = "some_url")]
    pub admin_url: Option<String>,
    /// Environment variable holding the admin token, when the admin listener needs one.
    #[serde(default, deserialize_with = "env_var")]
    pub admin_token_env: Option<String>,
    /// Environment variable holding the API key sent as `Authorization: Bearer`.
    #[serde(default, deserialize_with = "env_var")]
    pub api_key_env: Option<String>,
    /// An API key written in the scenario itself: only for test keys that are public anyway
    /// (examples/weir-keys.toml's); a real key goes in `api_key_env`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// How long a started weir may take to answer `/readyz` (ms, default 60 000).
    #[serde(
        rename = "ready_timeout_ms",
        with = "Ms::<100, 600_000>",
        default = "ms::<60_000>"
    )]
    pub ready_timeout: Duration,
}

/// One simulated upstream: started by the tool (`listen`) or already running (`url`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct SimSettings {
    /// Start a `weir sim` on this address (the weir config's targets point at it).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Or the base URL of a running `weir sim`, like `http://127.0.0.1:9101`.
    #[serde(default, deserialize_with = "some_url")]
    pub url: Option<String>,
    /// Faults in force outside fault windows (default: none), as `POST /sim/faults` takes them.
    #[serde(default)]
    pub faults: Faults,
    /// Streamed answers: milliseconds before the first chunk.
    #[serde(with = "Int::<0, 60_000>", default)]
    pub ttft_ms: u64,
    /// Streamed answers: milliseconds between chunks.
    #[serde(with = "Int::<0, 10_000>", default)]
    pub inter_token_ms: u64,
}

/// Where the requests come from.
#[derive(Clone, Debug)]
pub enum TrafficSource {
    /// Generated from distributions.
    Synthetic(Traffic),
    /// Replayed from a file, keeping its inter-arrival times.
    Replay(Replay),
}

choices! {
    /// How synthetic requests arrive.
    pub enum Arrival {
        /// Evenly spaced at `rate`.
        Constant = "constant",
        /// A Poisson process of mean `rate` (exponential gaps).
        Poisson = "poisson",
        /// From `rate` to `rate_end`, linearly over the run.
        Ramp = "ramp",
        /// `rate`, and `spike_rate` from `spike_at_s` for `spike_for_s` seconds.
        Spike = "spike",
        /// Closed loop, for comparison only: `max_in_flight` users each send a request as
        /// soon as their last one is answered, so a slow server slows the load down and its
        /// stalls hide from the percentiles (coordinated omission).
        Closed = "closed",
    }
}

/// `[traffic]`: synthetic requests.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct Traffic {
    /// The arrival process (default `constant`).
    #[serde(default)]
    pub arrival: Arrival,
    /// Requests per second (the start rate of a ramp, the base rate of a spike); not used by
    /// `closed`.
    #[serde(with = "Int::<1, 100_000>", default)]
    pub rate: Option<u32>,
    /// A ramp's rate at the end of the run.
    #[serde(with = "Int::<1, 100_000>", default)]
    pub rate_end: Option<u32>,
    /// A spike's rate.
    #[serde(with = "Int::<1, 100_000>", default)]
    pub spike_rate: Option<u32>,
    /// When the spike starts, seconds into the run.
    #[serde(with = "Int::<0, MAX_DURATION_S>", default)]
    pub spike_at_s: Option<u64>,
    /// How long the spike lasts, seconds.
    #[serde(with = "Int::<1, MAX_DURATION_S>", default)]
    pub spike_for_s: Option<u64>,
    /// Requests in flight at most, like concurrent users (default 256). A request due while
    /// this many are in flight waits for one to finish, and its latency counts the wait: the
    /// schedule is kept, the load stays open-loop.
    #[serde(with = "Int::<1, 100_000>", default = "default_in_flight")]
    pub max_in_flight: usize,
    /// The `model` of every request (default `demo`).
    #[serde(default = "default_model")]
    pub model: String,
    /// Or a mix of models by weight, like `{ demo = 7, rag = 3 }`.
    #[serde(default)]
    pub models: BTreeMap<String, u32>,
    /// The path requests are POSTed to (default `/v1/chat/completions`).
    #[serde(default = "default_path")]
    pub path: String,
    /// Fraction (0..=1) of requests that ask for a stream.
    #[serde(default, deserialize_with = "fraction")]
    pub stream_fraction: f64,
    /// Fewest words in a prompt (drawn uniformly up to `prompt_words_max`; default 8).
    #[serde(with = "Int::<1, 100_000>", default = "default_words_min")]
    pub prompt_words_min: u32,
    /// Most words in a prompt (default 64).
    #[serde(with = "Int::<1, 100_000>", default = "default_words_max")]
    pub prompt_words_max: u32,
    /// Draw prompts from this many distinct ones, so repeats can be cache hits (default:
    /// every prompt is distinct).
    #[serde(with = "Int::<1, 1_000_000>", default)]
    pub distinct_prompts: Option<u32>,
    /// `max_tokens` of every request (default: not sent).
    #[serde(with = "Int::<1, 1_000_000>", default)]
    pub max_tokens: Option<u32>,
    /// `temperature` of every request (default: not sent). weir caches only answers to
    /// `temperature = 0` unless a route sets `cache_nonzero_temperature`.
    #[serde(default, deserialize_with = "temperature")]
    pub temperature: Option<f64>,
    /// The client's timeout per request, ms (default 60 000): a request still unanswered then
    /// counts as an error with status 0.
    #[serde(
        rename = "timeout_ms",
        with = "Ms::<1, 600_000>",
        default = "ms::<60_000>"
    )]
    pub timeout: Duration,
}

choices! {
    /// What a replayed file holds.
    pub enum ReplayFormat {
        /// weir's `cost.request_log` lines: `ts`, `route`, `prompt_tokens`,
        /// `completion_tokens`; each becomes a request of that size to that route.
        RequestLog = "request_log",
        /// One chat body per line (`{"model": ..., "messages": [...]}`), or
        /// `{"ts": SECONDS, "body": {...}}` to keep its time.
        Bodies = "bodies",
    }
}

/// `[replay]`: requests replayed from a file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct Replay {
    /// The file (relative to the scenario file).
    #[serde(deserialize_with = "path")]
    pub file: PathBuf,
    /// What it holds (default `request_log`).
    #[serde(default)]
    pub format: ReplayFormat,
    /// Time runs this many times faster than recorded (default 1).
    #[serde(default = "one", deserialize_with = "speed")]
    pub speed: f64,
    /// Requests per second for lines without a time (default 10).
    #[serde(with = "Int::<1, 100_000>", default = "default_replay_rate")]
    pub rate: u32,
    /// Send every request to this model instead of the recorded one.
    #[serde(default)]
    pub model: Option<String>,
    /// The path requests are POSTed to (default `/v1/chat/completions`).
    #[serde(default = "default_path")]
    pub path: String,
    /// Requests in flight at most (default 256), as in `[traffic]`.
    #[serde(with = "Int::<1, 100_000>", default = "default_in_flight")]
    pub max_in_flight: usize,
    /// The client's timeout per request, ms (default 60 000).
    #[serde(
        rename = "timeout_ms",
        with = "Ms::<1, 600_000>",
        default = "ms::<60_000>"
    )]
    pub timeout: Duration,
}

/// One `[[timeline]]` entry: at `at_s`, do one thing.
#[derive(Clone, Debug)]
pub struct Event {
    /// When, from the start of the load.
    pub at: Duration,
    /// What.
    pub action: Action,
}

/// What an event does.
#[derive(Clone, Debug)]
pub enum Action {
    /// Set a sim's faults for a window, then put its base faults back.
    Faults {
        /// The sim, by name.
        sim: String,
        /// The faults in force during the window.
        faults: Faults,
        /// How long the window lasts.
        window: Duration,
    },
    /// Stop a started sim (its port refuses connections) or kill weir (SIGKILL), and start it
    /// again after `down` when given.
    Kill {
        /// A sim's name, or `weir`.
        what: String,
        /// How long it stays down (`None`: for the rest of the run).
        down: Option<Duration>,
    },
    /// Copy a file over another (a new stage build over the file weir watches): a deploy
    /// under load.
    Copy {
        /// The new file.
        from: PathBuf,
        /// The file replaced (atomically, by rename).
        to: PathBuf,
    },
    /// A new build of the stage file at this path: the same code with a fresh custom section
    /// appended (so a new content hash), written atomically. weir compiles it off the request
    /// path and swaps the new version in under load.
    Deploy(PathBuf),
    /// `POST /admin/reload` on weir.
    Reload,
}

impl Action {
    /// A short label for the report and the progress line.
    pub fn label(&self) -> String {
        match self {
            Action::Faults { sim, faults, .. } => {
                let json = serde_json::to_string(faults).unwrap_or_default();
                format!("{sim}: faults {}", compact_faults(&json))
            }
            Action::Kill { what, down: None } => format!("kill {what}"),
            Action::Kill {
                what,
                down: Some(down),
            } => format!("kill {what} for {}s", down.as_secs_f64()),
            Action::Copy { from, to } => format!("copy {} over {}", file_name(from), file_name(to)),
            Action::Deploy(path) => format!("deploy a new build of {}", file_name(path)),
            Action::Reload => "POST /admin/reload".to_owned(),
        }
    }

    /// How long the event lasts (zero for a one-off).
    pub fn window(&self) -> Duration {
        match self {
            Action::Faults { window, .. } => *window,
            Action::Kill { down, .. } => down.unwrap_or(Duration::ZERO),
            _ => Duration::ZERO,
        }
    }
}

/// The faults' JSON without its fields at their defaults.
fn compact_faults(json: &str) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(json) else {
        return json.to_owned();
    };
    let kept: Vec<String> = map
        .iter()
        .filter(|(_, v)| !matches!(v, serde_json::Value::Null) && **v != 0 && **v != 0.0)
        .filter(|(_, v)| **v != serde_json::Value::Bool(false))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    kept.join(" ")
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// `[gates]`: each one set must hold, or the run exits 1 naming it.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct Gates {
    /// Most client-visible errors (non-2xx, or no answer), as a fraction of requests sent.
    #[serde(default, deserialize_with = "some_fraction")]
    pub error_rate_max: Option<f64>,
    /// Highest median latency, ms (from each request's scheduled send time).
    #[serde(default, deserialize_with = "some_positive")]
    pub p50_ms_max: Option<f64>,
    /// Highest 99th-percentile latency, ms.
    #[serde(default, deserialize_with = "some_positive")]
    pub p99_ms_max: Option<f64>,
    /// Highest 99th-percentile time to first token of streamed requests, ms.
    #[serde(default, deserialize_with = "some_positive")]
    pub ttft_p99_ms_max: Option<f64>,
    /// Most spend per 1,000 requests sent, USD (from weir's `weir_cost_picodollars_total`).
    #[serde(default, deserialize_with = "some_positive")]
    pub cost_per_1k_usd_max: Option<f64>,
    /// Fewest cache hits, as a fraction of answered requests (`x-weir-cache`).
    #[serde(default, deserialize_with = "some_fraction")]
    pub cache_hit_rate_min: Option<f64>,
    /// Most requests refused for a budget (`budget_exceeded`).
    #[serde(default, deserialize_with = "some_count")]
    pub budget_refusals_max: Option<f64>,
    /// Fewest budget refusals (a scenario that must show the budget biting).
    #[serde(default, deserialize_with = "some_count")]
    pub budget_refusals_min: Option<f64>,
}

fn default_in_flight() -> usize {
    256
}
fn default_model() -> String {
    "demo".to_owned()
}
fn default_path() -> String {
    "/v1/chat/completions".to_owned()
}
fn default_words_min() -> u32 {
    8
}
fn default_words_max() -> u32 {
    64
}
fn default_replay_rate() -> u32 {
    10
}
fn one() -> f64 {
    1.0
}

fn some_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    path(d).map(Some)
}

fn some_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    read_str(d, |url| {
        let parsed: http::Uri = url
            .parse()
            .map_err(|err| format!("expected an http:// URL, got {url:?}: {err}"))?;
        match (parsed.scheme_str(), parsed.authority()) {
            (Some("http"), Some(_)) => Ok(Some(url.trim_end_matches('/').to_owned())),
            _ => Err(format!(
                "expected an http:// URL with a host, like http://127.0.0.1:8080, got {url:?}"
            )),
        }
    })
}

/// A number read as `f64` (TOML integers too) and checked.
fn number<'de, D: Deserializer<'de>>(
    d: D,
    check: impl FnOnce(f64) -> Result<f64, String>,
) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(i64),
        Float(f64),
    }
    let value = match Num::deserialize(d)? {
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    };
    check(value).map_err(serde::de::Error::custom)
}

fn fraction<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    number(d, |v| match (0.0..=1.0).contains(&v) {
        true => Ok(v),
        false => Err(format!("must be a fraction between 0 and 1, got {v}")),
    })
}

fn temperature<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    number(d, |v| match (0.0..=2.0).contains(&v) {
        true => Ok(v),
        false => Err(format!("must be between 0 and 2, got {v}")),
    })
    .map(Some)
}

fn some_fraction<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    fraction(d).map(Some)
}

fn some_positive<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    number(d, |v| match v.is_finite() && v > 0.0 {
        true => Ok(v),
        false => Err(format!("must be a number above 0, got {v}")),
    })
    .map(Some)
}

fn some_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    number(d, |v| match v.is_finite() && v >= 0.0 {
        true => Ok(v),
        false => Err(format!("must be a count of 0 or more, got {v}")),
    })
    .map(Some)
}

fn speed<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    number(d, |v| match (0.01..=1000.0).contains(&v) {
        true => Ok(v),
        false => Err(format!("must be between 0.01 and 1000, got {v}")),
    })
}

/// The file as serde reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct File {
    #[serde(deserialize_with = "title")]
    name: String,
    #[serde(default)]
    about: String,
    #[serde(with = "Int::<1, MAX_DURATION_S>")]
    duration_s: u64,
    #[serde(default)]
    seed: u64,
    weir: WeirSettings,
    #[serde(default)]
    sims: BTreeMap<SimName, SimSettings>,
    #[serde(default)]
    traffic: Option<Traffic>,
    #[serde(default)]
    replay: Option<Replay>,
    #[serde(default)]
    timeline: Vec<RawEvent>,
    #[serde(default)]
    gates: Gates,
}

/// A sim's name, checked like a target's.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SimName(String);

impl<'de> Deserialize<'de> for SimName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        name(d).map(SimName)
    }
}

fn title<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    read_str(d, |title| {
        match title.trim().is_empty() || title.len() > 200 {
            false => Ok(title.to_owned()),
            true => Err("expected a title of 1 to 200 characters".to_owned()),
        }
    })
}

/// A `[[timeline]]` entry as written: `at_s` and one action.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawEvent {
    /// Seconds from the start of the load (fractions allowed).
    #[serde(deserialize_with = "seconds")]
    at_s: f64,
    /// The window of a `faults` event, or how long a `kill` lasts.
    #[serde(default, deserialize_with = "some_seconds")]
    for_s: Option<f64>,
    /// With `faults`: the sim whose faults change.
    #[serde(default)]
    sim: Option<String>,
    /// The faults during the window.
    #[serde(default)]
    faults: Option<Faults>,
    /// A sim's name or `weir`: stop it (and start it again after `for_s`).
    #[serde(default)]
    kill: Option<String>,
    /// With `to`: the file copied over `to`.
    #[serde(default, deserialize_with = "some_path")]
    copy: Option<PathBuf>,
    /// The file `copy` replaces.
    #[serde(default, deserialize_with = "some_path")]
    to: Option<PathBuf>,
    /// A stage file to rebuild in place (a new content hash, same code).
    #[serde(default, deserialize_with = "some_path")]
    deploy: Option<PathBuf>,
    /// `POST /admin/reload`.
    #[serde(default)]
    reload: bool,
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    number(d, |v| match (0.0..=MAX_DURATION_S as f64).contains(&v) {
        true => Ok(v),
        false => Err(format!(
            "must be seconds between 0 and {MAX_DURATION_S}, got {v}"
        )),
    })
}

fn some_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    number(d, |v| match v > 0.0 && v <= MAX_DURATION_S as f64 {
        true => Ok(v),
        false => Err(format!(
            "must be seconds above 0 and at most {MAX_DURATION_S}, got {v}"
        )),
    })
    .map(Some)
}

impl Scenario {
    /// Reads and validates the scenario at `path`; relative paths in it are resolved against
    /// its directory.
    pub fn load(path: &Path) -> Result<Scenario, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            key: crate::config::NO_KEY.to_owned(),
            message: format!("cannot read the scenario file: {err}"),
        })?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Scenario::parse(&text, path, &dir)
    }

    /// Validates `text`, the contents of the scenario file `source`, with relative paths
    /// joined to `base_dir`.
    pub fn parse(text: &str, source: &Path, base_dir: &Path) -> Result<Scenario, ConfigError> {
        let doc = document::parse(source, text)?;
        let keys = document::index(&doc);
        let file: File = document::read(source, text, doc.clone())?;
        let env = |_: &str| None;
        let src = Source {
            file: source,
            text,
            keys: &keys,
            base_dir,
            env: &env,
        };
        let mut weir = file.weir;
        let ways = [
            weir.config.is_some(),
            weir.url.is_some(),
            !weir.nodes.is_empty(),
        ];
        match ways.iter().filter(|set| **set).count() {
            1 => {}
            0 => {
                return Err(src.error(
                    "weir",
                    "expected `config` (a weir.toml to start), `nodes` (a fleet to start) or \
                     `url` (a running endpoint)",
                ));
            }
            _ => {
                return Err(src.error(
                    "weir",
                    "set one of `config`, `nodes` and `url`, not several",
                ));
            }
        }
        let node_names: Vec<String> = weir.nodes.keys().cloned().collect();
        for name in node_names {
            let key = format!("weir.nodes.{name}");
            src.ensure(
                crate::config::is_valid_name(&name) && name != "weir",
                &key,
                "a node's name is 1 to 64 characters from `a-z`, `0-9`, `_` and `-`, and not `weir`",
            )?;
            src.ensure(
                !file.sims.contains_key(&SimName(name.clone())),
                &key,
                "a node cannot have the name of a sim (`kill` names either)",
            )?;
            if let Some(path) = weir.nodes.get_mut(&name) {
                *path = src.resolve(path);
            }
        }
        src.path("weir.config", &mut weir.config, "the config path is empty")?;
        if weir.api_key.is_some() && weir.api_key_env.is_some() {
            return Err(src.error("weir.api_key", "set `api_key` or `api_key_env`, not both"));
        }
        let mut sims = BTreeMap::new();
        for (SimName(name), sim) in file.sims {
            let key = format!("sims.{name}");
            match (&sim.listen, &sim.url) {
                (Some(_), Some(_)) => {
                    return Err(src.error(
                        &format!("{key}.url"),
                        "set `listen` (the sim is started) or `url` (a running sim), not both",
                    ));
                }
                (None, None) => {
                    return Err(src.error(
                        &key,
                        "expected `listen` (start a sim there) or `url` (a running sim)",
                    ));
                }
                _ => {}
            }
            if let Err(err) = sim.faults.validate() {
                return Err(src.error(&format!("{key}.faults"), err.to_string()));
            }
            sims.insert(name, sim);
        }
        let traffic = match (file.traffic, file.replay) {
            (Some(_), Some(_)) => {
                return Err(src.error("replay", "set `[traffic]` or `[replay]`, not both"));
            }
            (None, None) => {
                return Err(src.error(
                    "",
                    "missing `[traffic]` (synthetic requests) or `[replay]` (requests from a file)",
                ));
            }
            (Some(traffic), None) => TrafficSource::Synthetic(check_traffic(traffic, &src)?),
            (None, Some(mut replay)) => {
                replay.file = src.resolve(&replay.file);
                check_path(&replay.path, "replay.path", &src)?;
                TrafficSource::Replay(replay)
            }
        };
        let duration = Duration::from_secs(file.duration_s);
        let mut timeline = Vec::new();
        for (i, raw) in file.timeline.into_iter().enumerate() {
            timeline.push(check_event(raw, i, &sims, &weir.nodes, duration, &src)?);
        }
        timeline.sort_by_key(|event| event.at);
        let scenario = Scenario {
            source: source.to_path_buf(),
            name: file.name,
            about: file.about,
            duration,
            seed: file.seed,
            weir,
            sims,
            traffic,
            timeline,
            gates: file.gates,
        };
        if let TrafficSource::Synthetic(traffic) = &scenario.traffic {
            let most = match traffic.arrival {
                // A closed loop sends as fast as it is answered: the sample cap bounds it.
                Arrival::Closed => 0,
                _ => traffic.peak_rate() as u64 * file.duration_s,
            };
            if most > MAX_REQUESTS {
                return Err(src.error(
                    "traffic.rate",
                    format!(
                        "the run would send up to {most} requests; at most {MAX_REQUESTS} \
                         (lower the rate or the duration)"
                    ),
                ));
            }
        }
        Ok(scenario)
    }

    /// Whether the run starts weir (one node or a fleet).
    pub fn needs_weir_started(&self) -> bool {
        self.weir.config.is_some() || !self.weir.nodes.is_empty()
    }
}

impl Traffic {
    /// The highest rate the arrival process reaches.
    pub fn peak_rate(&self) -> u32 {
        let extra = match self.arrival {
            Arrival::Ramp => self.rate_end.unwrap_or(0),
            Arrival::Spike => self.spike_rate.unwrap_or(0),
            _ => 0,
        };
        self.rate.unwrap_or(0).max(extra)
    }
}

fn check_path(path: &str, key: &str, src: &Source<'_>) -> Result<(), ConfigError> {
    src.ensure(
        path.starts_with('/') && path.parse::<http::uri::PathAndQuery>().is_ok(),
        key,
        "expected a path starting with `/`, like /v1/chat/completions",
    )
}

fn check_traffic(traffic: Traffic, src: &Source<'_>) -> Result<Traffic, ConfigError> {
    check_path(&traffic.path, "traffic.path", src)?;
    if !traffic.models.is_empty() {
        src.ensure(
            !src.written("traffic.model"),
            "traffic.models",
            "set `model` or `models`, not both",
        )?;
        src.ensure(
            traffic.models.values().any(|w| *w > 0),
            "traffic.models",
            "at least one weight must be above 0",
        )?;
    }
    src.ensure(
        traffic.prompt_words_min <= traffic.prompt_words_max,
        "traffic.prompt_words_max",
        "must be at least prompt_words_min",
    )?;
    let needs = |key: &str, set: bool, arrival: &str| {
        src.ensure(
            set,
            "traffic.arrival",
            &format!("`{arrival}` needs `{key}`"),
        )
    };
    if traffic.arrival != Arrival::Closed {
        needs("rate", traffic.rate.is_some(), "an open-loop arrival")?;
    }
    match traffic.arrival {
        Arrival::Ramp => needs("rate_end", traffic.rate_end.is_some(), "ramp")?,
        Arrival::Spike => {
            needs("spike_rate", traffic.spike_rate.is_some(), "spike")?;
            needs("spike_at_s", traffic.spike_at_s.is_some(), "spike")?;
            needs("spike_for_s", traffic.spike_for_s.is_some(), "spike")?;
        }
        _ => {}
    }
    let stray = [
        (
            "traffic.rate_end",
            traffic.rate_end.is_some(),
            Arrival::Ramp,
        ),
        (
            "traffic.spike_rate",
            traffic.spike_rate.is_some(),
            Arrival::Spike,
        ),
        (
            "traffic.spike_at_s",
            traffic.spike_at_s.is_some(),
            Arrival::Spike,
        ),
        (
            "traffic.spike_for_s",
            traffic.spike_for_s.is_some(),
            Arrival::Spike,
        ),
    ];
    for (key, set, arrival) in stray {
        if set && traffic.arrival != arrival {
            return Err(src.error(
                key,
                "only a `ramp` (rate_end) or a `spike` (spike_*) uses this key",
            ));
        }
    }
    Ok(traffic)
}

fn check_event(
    raw: RawEvent,
    i: usize,
    sims: &BTreeMap<String, SimSettings>,
    nodes: &BTreeMap<String, PathBuf>,
    duration: Duration,
    src: &Source<'_>,
) -> Result<Event, ConfigError> {
    let key = |k: &str| format!("timeline[{i}].{k}");
    let at = Duration::from_secs_f64(raw.at_s);
    src.ensure(
        at < duration,
        &key("at_s"),
        &format!(
            "must fall within the run's duration_s ({}s)",
            duration.as_secs()
        ),
    )?;
    let actions = [
        raw.faults.is_some(),
        raw.kill.is_some(),
        raw.copy.is_some(),
        raw.deploy.is_some(),
        raw.reload,
    ];
    if actions.iter().filter(|set| **set).count() != 1 {
        return Err(src.error(
            &format!("timeline[{i}]"),
            "expected exactly one of `faults` (with `sim`), `kill`, `copy` (with `to`), \
             `deploy` or `reload = true`",
        ));
    }
    let started = |name: &str, k: &str| -> Result<(), ConfigError> {
        match sims.get(name) {
            Some(_) => Ok(()),
            None => Err(src.error(
                &key(k),
                format!(
                    "no {} named {name:?} (sims: {})",
                    if k == "kill" {
                        "sim or weir node"
                    } else {
                        "sim"
                    },
                    sims.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    };
    let window = raw.for_s.map(Duration::from_secs_f64);
    let names_sim = raw.sim.is_some();
    let action = if let Some(faults) = raw.faults {
        let Some(sim) = raw.sim else {
            return Err(src.error(
                &key("faults"),
                "a `faults` event needs `sim`, the sim to change",
            ));
        };
        started(&sim, "sim")?;
        if let Err(err) = faults.validate() {
            return Err(src.error(&key("faults"), err.to_string()));
        }
        let Some(window) = window else {
            return Err(src.error(&key("faults"), "a `faults` event needs `for_s`, its window"));
        };
        Action::Faults {
            sim,
            faults,
            window,
        }
    } else if let Some(what) = raw.kill {
        if what != "weir" && !nodes.contains_key(&what) {
            started(&what, "kill")?;
            src.ensure(
                sims.get(&what).is_some_and(|s| s.listen.is_some()),
                &key("kill"),
                "only a sim the scenario starts (`listen`) can be killed",
            )?;
        }
        Action::Kill { what, down: window }
    } else if let Some(from) = raw.copy {
        let Some(to) = raw.to else {
            return Err(src.error(
                &key("copy"),
                "a `copy` event needs `to`, the file it replaces",
            ));
        };
        Action::Copy {
            from: src.resolve(&from),
            to: src.resolve(&to),
        }
    } else if let Some(path) = raw.deploy {
        Action::Deploy(src.resolve(&path))
    } else {
        Action::Reload
    };
    if !matches!(action, Action::Faults { .. } | Action::Kill { .. }) && window.is_some() {
        return Err(src.error(
            &key("for_s"),
            "only a `faults` or `kill` event has a window",
        ));
    }
    if names_sim && !matches!(action, Action::Faults { .. }) {
        return Err(src.error(&key("sim"), "only a `faults` event names a `sim`"));
    }
    Ok(Event { at, action })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, String> {
        Scenario::parse(text, Path::new("s.toml"), Path::new("/x")).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
name = "short"
duration_s = 10

[weir]
config = "weir.toml"

[sims.primary]
listen = "127.0.0.1:9101"
faults = { latency_ms = 5 }

[traffic]
arrival = "poisson"
rate = 50
stream_fraction = 0.25

[[timeline]]
at_s = 3
for_s = 2
sim = "primary"
faults = { error_rate = 1.0, error_status = 503 }

[gates]
error_rate_max = 0.5
p99_ms_max = 200
"#;

    #[test]
    fn a_good_scenario_reads_whole() {
        let scenario = parse(GOOD).expect("valid");
        assert_eq!(scenario.duration, Duration::from_secs(10));
        assert_eq!(scenario.weir.config, Some(PathBuf::from("/x/weir.toml")));
        let TrafficSource::Synthetic(traffic) = &scenario.traffic else {
            panic!("synthetic")
        };
        assert_eq!(traffic.arrival, Arrival::Poisson);
        assert_eq!(traffic.max_in_flight, 256);
        assert_eq!(scenario.timeline.len(), 1);
        assert_eq!(scenario.timeline[0].action.window(), Duration::from_secs(2));
        assert_eq!(scenario.gates.p99_ms_max, Some(200.0));
        assert!(
            scenario.timeline[0]
                .action
                .label()
                .contains("error_rate=1.0")
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                GOOD.replace("rate = 50", "rate = 50\nrat = 1"),
                "s.toml:15:1: traffic: unknown field `rat`",
            ),
            (
                GOOD.replace("p99_ms_max = 200", "p99_ms_max = -1"),
                "s.toml:25:14: gates.p99_ms_max: must be a number above 0",
            ),
            (
                GOOD.replace("stream_fraction = 0.25", "stream_fraction = 2"),
                "s.toml:15:19: traffic.stream_fraction: must be a fraction",
            ),
            (
                GOOD.replace("error_rate = 1.0,", "error_rate = 7.0,"),
                "s.toml:21:10: timeline[0].faults: error_rate must be a probability",
            ),
            (
                GOOD.replace("sim = \"primary\"", "sim = \"primry\""),
                "s.toml:20:7: timeline[0].sim: no sim named \"primry\"",
            ),
            (
                GOOD.replace("at_s = 3", "at_s = 30"),
                "s.toml:18:8: timeline[0].at_s: must fall within",
            ),
            (
                GOOD.replace("for_s = 2\n", ""),
                "timeline[0].faults: a `faults` event needs `for_s`",
            ),
            (
                GOOD.replace("config = \"weir.toml\"", "url = \"ftp://x\""),
                "s.toml:6:7: weir.url: expected an http:// URL",
            ),
            (
                GOOD.replace("arrival = \"poisson\"", "arrival = \"ramp\""),
                "traffic.arrival: `ramp` needs `rate_end`",
            ),
            (
                GOOD.replace("latency_ms = 5", "latency_ms = 5, bogus = 1"),
                "s.toml:10:28: sims.primary.faults: unknown field `bogus`",
            ),
            (
                GOOD.replace("duration_s = 10", "duration_s = 0"),
                "s.toml:3:14: duration_s: must be between 1 and 3600, got 0",
            ),
        ];
        let mut wrong = Vec::new();
        for (text, expected) in cases {
            match parse(&text) {
                Ok(_) => wrong.push(format!("accepted; expected {expected}")),
                Err(err) if !err.contains(expected) => {
                    wrong.push(format!("{err}\n  expected {expected}"))
                }
                Err(_) => {}
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn one_action_per_event() {
        let text = GOOD.replace("sim = \"primary\"", "sim = \"primary\"\nreload = true");
        let err = parse(&text).expect_err("two actions");
        assert!(
            err.contains("timeline[0]: expected exactly one of"),
            "{err}"
        );
    }
}
