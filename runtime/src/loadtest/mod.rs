//! `weir loadtest`: a scenario run before launch. Production-like traffic (synthetic or
//! replayed) through the pipeline under test, a fault timeline applied to the `weir sim`
//! upstreams, weir scraped while it runs, and a verdict against SLO gates, written as JSON
//! for machines and as a self-contained HTML page for people.
//!
//! # Layout
//!
//! | file | owns |
//! |---|---|
//! | `scenario.rs` | the scenario file: schema, strict parsing, file:line:key errors |
//! | `schedule.rs` | arrival processes and bodies; replay files |
//! | `drive.rs` | the client: open loop from scheduled times (and closed loop, to compare) |
//! | `procs.rs` | what is started: sims in this process, `weir serve` as a child |
//! | `scrape.rs` | weir's `/metrics` and `/admin/*` during and after the run |
//! | `report.rs` | totals, the per-second series, gates |
//! | `html.rs` | the HTML report with SVG charts |
//!
//! The order of a run: start the sims, start weir (or take the running URL), zero the sims'
//! counters, then from one start instant drive the load, apply the timeline and scrape once a
//! second; when the last request is answered, read the sims' counts and weir's admin state,
//! and judge.

pub mod drive;
pub mod html;
pub mod procs;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod scrape;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use drive::{Live, Target};
use procs::{Sims, WeirProcess};
use report::{Collected, EventRecord, Report};
use scenario::{Action, Arrival, Scenario, TrafficSource};
use schedule::Synthetic;

/// How a scenario is run, beyond its file.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Where `report.json`, `report.html` and `weir.log` go.
    pub out_dir: PathBuf,
    /// Send the load here instead of what `[weir]` says (no weir is started, none is scraped
    /// unless `admin_url` is given): any OpenAI-compatible endpoint.
    pub url: Option<String>,
    /// weir's admin listener, with `url`.
    pub admin_url: Option<String>,
    /// Extra headers sent with every request.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// No progress line.
    pub quiet: bool,
}

/// The system under test, as the run talks to it: one endpoint, or the nodes of a fleet.
struct Under {
    nodes: Vec<Node>,
    api_key: Option<String>,
}

/// One weir node (or the one endpoint).
#[derive(Clone)]
struct Node {
    /// `weir` for a single node; the scenario's name for a fleet's.
    name: String,
    /// Its public base URL.
    url: String,
    /// Its admin base URL and token, when it is scraped.
    admin: Option<(String, Option<String>)>,
    /// The process, when the run started it.
    process: Option<Arc<Mutex<WeirProcess>>>,
}

/// Runs `scenario`; the report is also written to `options.out_dir`. An `Err` is a run that
/// could not be made (nothing to judge), with the reason.
pub async fn run(scenario: &Scenario, options: &Options) -> Result<Report, String> {
    std::fs::create_dir_all(&options.out_dir)
        .map_err(|err| format!("{}: {err}", options.out_dir.display()))?;
    // A bad replay file fails the run before anything is started.
    let replayed = match &scenario.traffic {
        TrafficSource::Replay(replay) => Some(schedule::replay(replay, scenario.duration)?),
        TrafficSource::Synthetic(_) => None,
    };
    let sims = Arc::new(Mutex::new(Sims::start(&scenario.sims).await?));
    let under = start_under_test(scenario, options).await?;
    for name in scenario.sims.keys() {
        let Some(url) = sims.lock().await.url(name) else {
            continue;
        };
        let base = serde_json::to_vec(&scenario.sims[name].faults).unwrap_or_default();
        expect_ok(procs::post(&format!("{url}/sim/faults"), None, base).await)
            .map_err(|err| format!("sims.{name}: cannot set its faults: {err}"))?;
        expect_ok(procs::post(&format!("{url}/sim/reset"), None, Vec::new()).await)
            .map_err(|err| format!("sims.{name}: cannot zero its counters: {err}"))?;
    }
    let (path, max_in_flight, timeout) = match &scenario.traffic {
        TrafficSource::Synthetic(t) => (t.path.clone(), t.max_in_flight, t.timeout),
        TrafficSource::Replay(r) => (r.path.clone(), r.max_in_flight, r.timeout),
    };
    let uris = (under.nodes.iter())
        .map(|node| {
            format!("{}{path}", node.url)
                .parse::<http::Uri>()
                .map_err(|err| format!("{}{path}: {err}", node.url))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let authorization = match &under.api_key {
        Some(key) => Some(
            http::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| "the API key cannot go in a header".to_owned())?,
        ),
        None => None,
    };
    let target = Target {
        uris,
        next: Arc::default(),
        authorization,
        headers: options.headers.clone(),
        timeout,
    };

    let live = Arc::new(Live::default());
    let scrapes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let scraper = Arc::new(scrape::Scraper::new(
        (under.nodes.iter())
            .filter_map(|node| Some((node.name.clone(), node.admin.clone()?)))
            .collect(),
    ));
    if let Some(point) = scraper.scrape(Duration::ZERO).await {
        lock(&scrapes).push(point);
    }
    let started_at = unix_now();
    let start = Instant::now() + Duration::from_millis(50);
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut background = tokio::task::JoinSet::new();
    let world = Arc::new(World {
        sims: sims.clone(),
        nodes: under.nodes.clone(),
        ready: scenario.weir.ready_timeout,
        base: scenario.sims.clone(),
        start,
    });
    for event in scenario.timeline.clone() {
        let (world, events) = (world.clone(), events.clone());
        background.spawn(async move {
            tokio::time::sleep_until(start + event.at).await;
            let record = world.apply(&event.action).await;
            lock(&events).push(record);
        });
    }
    if scraper.any() {
        let (scraper, scrapes) = (scraper.clone(), scrapes.clone());
        background.spawn(async move {
            let mut tick =
                tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Some(point) = scraper.scrape(start.elapsed()).await {
                    lock(&scrapes).push(point);
                }
            }
        });
    }
    if !options.quiet {
        let live = live.clone();
        background.spawn(async move {
            let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
            loop {
                tick.tick().await;
                let elapsed = start.elapsed().as_secs_f64();
                let sent = live.sent.load(Ordering::Relaxed);
                eprintln!(
                    "[{elapsed:>6.1}s] sent {sent} ({:.0}/s)  done {}  errors {}  p99 so far {:.1} ms",
                    sent as f64 / elapsed.max(1e-3),
                    live.done.load(Ordering::Relaxed),
                    live.errors.load(Ordering::Relaxed),
                    live.p99_ms()
                );
            }
        });
    }

    let mode = match (&scenario.traffic, replayed) {
        (TrafficSource::Synthetic(traffic), _) if traffic.arrival == Arrival::Closed => {
            let mut generator = Synthetic::new(traffic.clone(), scenario.duration, scenario.seed);
            drive::closed_loop(
                move || generator.body(),
                target,
                max_in_flight,
                start,
                scenario.duration,
                live.clone(),
            )
            .await;
            "closed"
        }
        (TrafficSource::Synthetic(traffic), _) => {
            let plan = Synthetic::new(traffic.clone(), scenario.duration, scenario.seed);
            drive::open_loop(plan, target, max_in_flight, start, live.clone()).await;
            "open"
        }
        (TrafficSource::Replay(_), Some(plan)) => {
            drive::open_loop(plan.into_iter(), target, max_in_flight, start, live.clone()).await;
            "open"
        }
        (TrafficSource::Replay(_), None) => "open",
    };
    let elapsed = start.elapsed();
    background.abort_all();
    while background.join_next().await.is_some() {}
    // A fault window still open when the load ended is closed: a sim the run did not start
    // must not be left faulted.
    for (name, sim) in &scenario.sims {
        let Some(url) = sims.lock().await.url(name) else {
            continue;
        };
        let base = serde_json::to_vec(&sim.faults).unwrap_or_default();
        let _ = procs::post(&format!("{url}/sim/faults"), None, base).await;
    }
    let mut events = std::mem::take(&mut *lock(&events));
    events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    if let Some(point) = scraper.scrape(elapsed).await {
        lock(&scrapes).push(point);
    }
    let mut sim_stats = BTreeMap::new();
    for name in scenario.sims.keys() {
        let Some(url) = sims.lock().await.url(name) else {
            continue;
        };
        let stats = match procs::get(&format!("{url}/sim/stats"), None).await {
            Ok((200, body)) => serde_json::from_slice(&body).unwrap_or_default(),
            Ok((status, _)) => serde_json::json!({"error": format!("status {status}")}),
            Err(err) => serde_json::json!({"error": err}),
        };
        sim_stats.insert(name.clone(), stats);
    }
    let mut states = serde_json::Map::new();
    for node in &under.nodes {
        if let Some((admin, token)) = &node.admin {
            let state = scrape::admin_state(admin, token.as_deref()).await;
            states.insert(node.name.clone(), state);
        }
    }
    let weir_state = match (under.nodes.len(), states.len()) {
        (_, 0) => None,
        (1, _) => states.into_iter().next().map(|(_, state)| state),
        _ => Some(serde_json::Value::Object(states)),
    };
    let samples = std::mem::take(&mut *live.samples());
    let report = report::build(
        scenario,
        Collected {
            samples,
            scrapes: std::mem::take(&mut *lock(&scrapes)),
            events,
            sims: sim_stats,
            weir: weir_state,
            elapsed,
            started_at,
            url: (under.nodes.iter())
                .map(|node| format!("{}{path}", node.url))
                .collect::<Vec<_>>()
                .join(" "),
            mode: mode.to_owned(),
        },
    );
    write_report(&report, &options.out_dir)?;
    drop(under);
    drop(sims);
    Ok(report)
}

/// Writes `report.json` and `report.html` into `dir`.
pub fn write_report(report: &Report, dir: &Path) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(report).map_err(|err| err.to_string())?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|err| format!("{}: {err}", path.display()))
    };
    write("report.json", &json)?;
    write("report.html", html::render(report).as_bytes())
}

/// Starts weir from the scenario's config, or takes the running endpoint.
async fn start_under_test(scenario: &Scenario, options: &Options) -> Result<Under, String> {
    let env = |name: &Option<String>, what: &str| -> Result<Option<String>, String> {
        match name {
            None => Ok(None),
            Some(var) => match std::env::var(var) {
                Ok(value) if !value.is_empty() => Ok(Some(value)),
                _ => Err(format!(
                    "{}: weir.{what}: environment variable `{var}` is not set",
                    scenario.source.display()
                )),
            },
        }
    };
    let admin_token = env(&scenario.weir.admin_token_env, "admin_token_env")?;
    let api_key = env(&scenario.weir.api_key_env, "api_key_env")?.or(scenario.weir.api_key.clone());
    let endpoint = |url: &str, admin: Option<String>| Under {
        nodes: vec![Node {
            name: "weir".into(),
            url: url.trim_end_matches('/').to_owned(),
            admin: admin.map(|admin| (admin, admin_token.clone())),
            process: None,
        }],
        api_key: api_key.clone(),
    };
    if let Some(url) = &options.url {
        return Ok(endpoint(url, options.admin_url.clone()));
    }
    if let Some(url) = &scenario.weir.url {
        let admin = options
            .admin_url
            .clone()
            .or(scenario.weir.admin_url.clone());
        return Ok(endpoint(url, admin));
    }
    let configs: Vec<(String, PathBuf)> = match &scenario.weir.config {
        Some(config) => vec![("weir".to_owned(), config.clone())],
        None => scenario.weir.nodes.clone().into_iter().collect(),
    };
    let mut nodes = Vec::new();
    for (name, config_path) in configs {
        let config = crate::config::Config::load(&config_path).map_err(|err| err.to_string())?;
        let url = format!("http://{}", config.server.listen);
        let admin_url = match (&scenario.weir.admin_url, scenario.weir.config.is_some()) {
            (Some(admin), true) => admin.clone(),
            _ => format!("http://{}", config.server.admin_listen),
        };
        let token = admin_token.clone().or(config.server.admin_token.clone());
        let log = match name.as_str() {
            "weir" => options.out_dir.join("weir.log"),
            name => options.out_dir.join(format!("weir-{name}.log")),
        };
        let mut process = WeirProcess::spawn(&config_path, &log)?;
        process
            .wait_ready(&url, scenario.weir.ready_timeout)
            .await
            .map_err(|err| format!("node {name}: {err}"))?;
        nodes.push(Node {
            name,
            url,
            admin: Some((admin_url, token)),
            process: Some(Arc::new(Mutex::new(process))),
        });
    }
    Ok(Under { nodes, api_key })
}

/// What timeline events act on.
struct World {
    sims: Arc<Mutex<Sims>>,
    /// The weir nodes (their processes, URLs and admin listeners).
    nodes: Vec<Node>,
    /// How long a restarted node may take to be ready.
    ready: Duration,
    /// The sims' settings (their base faults).
    base: BTreeMap<String, scenario::SimSettings>,
    start: Instant,
}

impl World {
    /// Applies one timeline event; returns its record (the window's end filled in when it
    /// ends).
    async fn apply(&self, action: &Action) -> EventRecord {
        let World {
            sims,
            nodes,
            ready,
            base,
            start,
        } = self;
        let (ready, start) = (*ready, *start);
        let at_s = start.elapsed().as_secs_f64();
        let mut record = EventRecord {
            at_s,
            until_s: None,
            label: action.label(),
            result: "ok".into(),
        };
        let outcome: Result<(), String> = match action {
            Action::Faults {
                sim,
                faults,
                window,
            } => {
                let sim_url = sims.lock().await.url(sim);
                match sim_url {
                    None => Err(format!("no URL for sim {sim}")),
                    Some(sim_url) => {
                        let faults_url = format!("{sim_url}/sim/faults");
                        let body = serde_json::to_vec(faults).unwrap_or_default();
                        match expect_ok(procs::post(&faults_url, None, body).await) {
                            Err(err) => Err(err),
                            Ok(()) => {
                                tokio::time::sleep(*window).await;
                                let restore =
                                    serde_json::to_vec(&base[sim].faults).unwrap_or_default();
                                record.until_s = Some(start.elapsed().as_secs_f64());
                                expect_ok(procs::post(&faults_url, None, restore).await)
                            }
                        }
                    }
                }
            }
            Action::Kill { what, down }
                if what == "weir" || nodes.iter().any(|n| &n.name == what) =>
            {
                let killed: Vec<&Node> = (nodes.iter())
                    .filter(|n| n.process.is_some() && (what == "weir" || &n.name == what))
                    .collect();
                if killed.is_empty() {
                    Err("weir was not started by this run".into())
                } else {
                    for node in &killed {
                        if let Some(process) = &node.process {
                            process.lock().await.kill();
                        }
                    }
                    match down {
                        None => Ok(()),
                        Some(down) => {
                            tokio::time::sleep(*down).await;
                            record.until_s = Some(start.elapsed().as_secs_f64());
                            let mut outcome = Ok(());
                            for node in &killed {
                                let Some(process) = &node.process else {
                                    continue;
                                };
                                let mut process = process.lock().await;
                                let restarted = match process.restart() {
                                    Ok(()) => process.wait_ready(&node.url, ready).await,
                                    Err(err) => Err(err),
                                };
                                if let Err(err) = restarted {
                                    outcome = Err(format!("node {}: {err}", node.name));
                                }
                            }
                            outcome
                        }
                    }
                }
            }
            Action::Kill { what, down } => {
                sims.lock().await.stop_one(what);
                match down {
                    None => Ok(()),
                    Some(down) => {
                        tokio::time::sleep(*down).await;
                        record.until_s = Some(start.elapsed().as_secs_f64());
                        sims.lock().await.start_one(what).await
                    }
                }
            }
            Action::Copy { from, to } => std::fs::read(from)
                .and_then(|bytes| crate::fsutil::write_atomically(to, &bytes))
                .map_err(|err| format!("{} -> {}: {err}", from.display(), to.display())),
            Action::Deploy(path) => rebuild(path),
            Action::Reload => {
                let (mut reloaded, mut failure) = (false, None);
                for node in nodes {
                    let Some((admin, token)) = &node.admin else {
                        continue;
                    };
                    let url = format!("{admin}/admin/reload");
                    match expect_ok(procs::post(&url, token.as_deref(), Vec::new()).await) {
                        Ok(()) => reloaded = true,
                        Err(err) => {
                            failure = failure.or(Some(format!("node {}: {err}", node.name)))
                        }
                    }
                }
                match (failure, reloaded) {
                    (Some(err), _) => Err(err),
                    (None, true) => Ok(()),
                    (None, false) => Err("no admin URL to reload through".into()),
                }
            }
        };
        if let Err(err) = outcome {
            record.result = err;
        }
        record
    }
}

/// Appends a custom section naming this moment to the component at `path` (a valid
/// component stays valid: custom sections may come anywhere) and writes it back atomically.
fn rebuild(path: &Path) -> Result<(), String> {
    let mut bytes = std::fs::read(path).map_err(|err| format!("{}: {err}", path.display()))?;
    if !bytes.starts_with(b"\0asm") {
        return Err(format!("{}: not a WebAssembly file", path.display()));
    }
    let name = b"weir-loadtest-deploy";
    let payload = format!("{}", unix_nanos());
    let mut section = Vec::new();
    leb128(&mut section, name.len() as u64);
    section.extend_from_slice(name);
    section.extend_from_slice(payload.as_bytes());
    bytes.push(0);
    leb128(&mut bytes, section.len() as u64);
    bytes.extend_from_slice(&section);
    crate::fsutil::write_atomically(path, &bytes)
        .map_err(|err| format!("{}: {err}", path.display()))
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn expect_ok(result: Result<(u16, Vec<u8>), String>) -> Result<(), String> {
    match result {
        Ok((status, _)) if (200..300).contains(&status) => Ok(()),
        Ok((status, body)) => Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )),
        Err(err) => Err(err),
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
