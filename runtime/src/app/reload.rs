//! Hot reload: read the config file and the stage files again, prepare a complete new
//! [`Snapshot`](super::Snapshot) off the request path, and swap it in atomically.
//!
//! Triggers: a change to the config file or a stage file (watched with `notify`, debounced),
//! `POST /admin/reload`, and SIGHUP. A stage file that fails to load (a truncated write, not a
//! component, the wrong world, a trap in `describe()`) keeps its previous version serving and
//! is reported in `GET /admin/stages`; a config that fails to validate keeps the whole old
//! snapshot. Requests in flight finish on the snapshot they started with; old stage versions
//! are freed when their last request ends.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::App;
use crate::config::Config;

/// Quiet time after the last file event before reloading: coalesces the several events one
/// write makes, and a write done in pieces.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Longest a reload waits for the watched files to go quiet.
const MAX_DELAY: Duration = Duration::from_millis(500);

/// Changes to watched files that wait for the watcher's task at most (more are dropped: those
/// waiting already lead to a reload once the task gets to them).
const PENDING_CHANGES: usize = 64;

/// First wait before a reload retries the OCI pulls that failed (a registry down while a new
/// digest rolls out); it doubles up to [`PULL_RETRY_MAX`] while they keep failing.
pub const PULL_RETRY_FIRST: Duration = Duration::from_secs(5);

/// Longest wait between two retries of failed OCI pulls.
pub const PULL_RETRY_MAX: Duration = Duration::from_secs(300);

/// Reloads kept in the history `GET /admin/stages` shows.
pub const RELOAD_HISTORY: usize = 32;

/// What one reload did.
#[derive(Debug)]
pub struct ReloadOutcome {
    /// What asked for it (`watch`, `admin`, `SIGHUP`).
    pub trigger: &'static str,
    /// The generation serving afterwards.
    pub generation: u64,
    /// Whether a new snapshot was swapped in.
    pub swapped: bool,
    /// Stage files loaded anew.
    pub fresh: Vec<PathBuf>,
    /// Stage files rejected (their previous version kept serving), with why.
    pub failed: Vec<(PathBuf, String)>,
    /// Why nothing was swapped in, when nothing was (an invalid config, a new stage that
    /// does not load).
    pub error: Option<String>,
    /// How long preparing and swapping took.
    pub elapsed: Duration,
}

impl ReloadOutcome {
    /// True when everything asked for is serving.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.failed.is_empty()
    }

    /// The JSON form (`POST /admin/reload`).
    pub fn to_json(&self) -> Value {
        json!({
            "ok": self.ok(),
            "trigger": self.trigger,
            "generation": self.generation,
            "swapped": self.swapped,
            "loaded": self.fresh.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "rejected": self.failed.iter().map(|(p, e)| json!({
                "path": p.display().to_string(),
                "error": e,
            })).collect::<Vec<_>>(),
            "error": self.error,
            "elapsed_ms": self.elapsed.as_secs_f64() * 1e3,
        })
    }
}

/// Settings that only take effect at a restart, and their names.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.server.listen != new.server.listen || old.server.admin_listen != new.server.admin_listen
    {
        changed.push("server.listen / server.admin_listen");
    }
    // The connection timeouts apply at a reload (to connections accepted after it); the cap
    // is a semaphore sized at start.
    if old.server.connections.max_connections != new.server.connections.max_connections {
        changed.push("server.max_connections");
    }
    // Per-stage limits (the defaults, each stage's caps) apply at a reload; the pool does not.
    let pool = |c: &Config| crate::config::SandboxSettings {
        max_memory_bytes: 0,
        defaults: old.sandbox.defaults,
        ..c.sandbox.clone()
    };
    if pool(old) != pool(new) {
        changed.push(
            "[sandbox] pool_size, allocator, epoch_tick_ms, log_line_max_bytes, output_max_bytes, \
             artifact_key_file",
        );
    }
    if old.cache != new.cache {
        changed.push("[cache]");
    }
    if old.state != new.state {
        changed.push("[state]");
    }
    if old.data_dir != new.data_dir || old.cost.request_log != new.cost.request_log {
        changed.push("server.data_dir / cost.request_log");
    }
    let restart_telemetry = |c: &Config| crate::config::TelemetrySettings {
        log_inputs: false,
        ..c.telemetry.clone()
    };
    if restart_telemetry(old) != restart_telemetry(new) {
        changed.push("[telemetry] metrics, recent_requests, otlp_endpoint, service_name");
    }
    let route_jobs =
        |c: &Config| -> Vec<_> { c.routes.iter().map(|r| (r.model.clone(), r.jobs)).collect() };
    if old.jobs != new.jobs || route_jobs(old) != route_jobs(new) {
        changed.push("[jobs] / routes' jobs tables");
    }
    changed
}

impl App {
    /// Reads the config file and every stage file again and swaps in the result. Never
    /// leaves the host without a working snapshot. The outcome is kept in the reload history
    /// (`GET /admin/stages`).
    pub async fn reload(&self, trigger: &'static str) -> ReloadOutcome {
        let outcome = self.reload_once(trigger).await;
        let mut entry = outcome.to_json();
        entry["at_ms"] = json!(crate::clock::unix_ms());
        let mut history = crate::sync::lock(&self.reload_history);
        if history.len() >= RELOAD_HISTORY {
            history.pop_front();
        }
        history.push_back(entry);
        drop(history);
        outcome
    }

    /// The last [`RELOAD_HISTORY`] reloads, oldest first.
    pub fn reload_history(&self) -> Vec<Value> {
        crate::sync::lock(&self.reload_history)
            .iter()
            .cloned()
            .collect()
    }

    async fn reload_once(&self, trigger: &'static str) -> ReloadOutcome {
        let _one_at_a_time = self.reload_lock.lock().await;
        self.reloads_attempted.fetch_add(1, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let previous = self.snapshot();
        let mut outcome = ReloadOutcome {
            trigger,
            generation: previous.generation,
            swapped: false,
            fresh: Vec::new(),
            failed: Vec::new(),
            error: None,
            elapsed: Duration::ZERO,
        };
        // Off the async threads: a config or price file on a slow disk (or a FIFO, refused
        // but only once opened) froze every listener (third probe, B3).
        let loaded = match self.config_path.clone() {
            Some(path) => tokio::task::spawn_blocking(move || Config::load(&path))
                .await
                .map_err(|join| join.to_string())
                .and_then(|loaded| loaded.map_err(|err| err.to_string())),
            None => Err("this host was started without a config file".to_string()),
        };
        // The instance pool was sized at start for the largest memory cap; a stage cannot
        // be given more without a new pool.
        let pool_bytes = self.env.sandbox.settings().max_memory_bytes;
        let loaded = loaded.and_then(|config| {
            if config.sandbox.fuel_metering != self.env.sandbox.settings().fuel_metering {
                Err("turning fuel metering on or off (sandbox.fuel = 0) needs a restart".into())
            } else if config.sandbox.max_memory_bytes > pool_bytes {
                Err(format!(
                    "a stage's memory_limit_mib ({} MiB) is above what the instance pool was \
                     sized for at start ({} MiB); that change needs a restart",
                    config.sandbox.max_memory_bytes >> 20,
                    pool_bytes >> 20
                ))
            } else {
                Ok(config)
            }
        });
        let mut config = match loaded {
            Ok(config) => config,
            Err(err) => {
                tracing::error!(trigger, error = %err, "reload: config rejected; the previous config keeps serving");
                *crate::sync::lock(&self.config_error) = Some(err.clone());
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                crate::telemetry::reload(false);
                outcome.error = Some(err);
                outcome.elapsed = started.elapsed();
                return outcome;
            }
        };
        // The node's id defaults, at start, to hostname:port of the listener it bound; a file
        // that names none keeps that one.
        if config.state.node_id.is_none() {
            config.state.node_id = previous.config.state.node_id.clone();
        }
        for setting in restart_only(&previous.config, &config) {
            tracing::warn!(
                setting,
                "reload: this setting changed but takes effect only at a restart"
            );
        }
        let same_config = *previous.config == config;
        match self.assemble(config, Some(&previous)).await {
            Err(err) => {
                tracing::error!(trigger, error = %err, "reload rejected; the previous snapshot keeps serving");
                // The new config cannot be served as written (a stage it adds does not load, a
                // stage's config sets a key the stage does not have): the operator sees why in
                // `/admin/stages` until a reload succeeds.
                *crate::sync::lock(&self.config_error) = Some(err.to_string());
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                crate::telemetry::reload(false);
                outcome.error = Some(err.to_string());
            }
            Ok(assembled) => {
                *crate::sync::lock(&self.config_error) = None;
                outcome.fresh = assembled.fresh.clone();
                outcome.failed = assembled.failed.clone();
                if !outcome.failed.is_empty() {
                    self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                    crate::telemetry::reload(false);
                }
                if same_config && assembled.fresh.is_empty() {
                    // Nothing new: keep the snapshot (and its generation), note any errors; a
                    // file that loads again as the version serving (a bad write undone) has
                    // none any more.
                    let mut files = crate::sync::lock(&self.stage_files);
                    for (path, file) in files.iter_mut() {
                        if !assembled.failed.iter().any(|(failed, _)| failed == path) {
                            file.last_error = None;
                        }
                    }
                    for (path, error) in &assembled.failed {
                        files.entry(path.clone()).or_default().last_error = Some(error.clone());
                    }
                } else {
                    outcome.generation = assembled.snapshot.generation;
                    self.install(assembled);
                    // One outcome per reload, the same in /admin/stages and the metrics: one
                    // that swapped in some files and rejected others is a failed one (fourth
                    // probe, C5: it counted as both, and ok + failed > attempted).
                    if outcome.failed.is_empty() {
                        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                        crate::telemetry::reload(true);
                    }
                    outcome.swapped = true;
                }
            }
        }
        outcome.elapsed = started.elapsed();
        if outcome.swapped {
            tracing::info!(
                trigger,
                generation = outcome.generation,
                loaded = outcome.fresh.len(),
                rejected = outcome.failed.len(),
                elapsed_ms = outcome.elapsed.as_secs_f64() * 1e3,
                "reloaded"
            );
        }
        outcome
    }

    /// True when some `oci://` stage of the config serving now is not what serves: its new
    /// digest could not be fetched, and the previous version keeps serving.
    pub fn pulls_pending(&self) -> bool {
        let snap = self.snapshot();
        let specs = snap.config.routes.iter().flat_map(|r| &r.stages);
        specs.filter(|spec| spec.oci.is_some()).any(|spec| {
            snap.stages
                .get(&spec.path)
                .is_none_or(|s| s.path != spec.path)
        })
    }

    /// The files a reload reads: the config file, its price file and every stage file
    /// serving now (not the `oci://` stages: a new version of one is a new digest in the
    /// config file).
    fn watched_files(&self) -> BTreeSet<PathBuf> {
        let snap = self.snapshot();
        let specs = snap.config.routes.iter().flat_map(|r| &r.stages);
        let mut files: BTreeSet<PathBuf> = specs
            .filter(|spec| spec.oci.is_none())
            .map(|spec| spec.path.clone())
            .collect();
        files.extend(snap.config.cost.prices_file.clone());
        if let Some(path) = &self.config_path {
            files.insert(path.clone());
        }
        files
    }
}

/// The directory a file lives in (watched instead of the file, so a file replaced by a
/// rename is still seen).
fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Retries, with backoff, the reload of a config whose new OCI digests could not be fetched
/// (the previous versions keep serving meanwhile), so a fleet rolled out while its registry
/// was down converges once the registry is back, with no one to reload it by hand.
fn spawn_pull_retry(app: std::sync::Weak<App>) {
    tokio::spawn(async move {
        let mut wait = PULL_RETRY_FIRST;
        loop {
            tokio::time::sleep(wait).await;
            let Some(app) = app.upgrade() else { return };
            if !app.pulls_pending() {
                wait = PULL_RETRY_FIRST;
                continue;
            }
            app.reload("pull-retry").await;
            wait = match app.pulls_pending() {
                true => (wait * 2).min(PULL_RETRY_MAX),
                false => PULL_RETRY_FIRST,
            };
        }
    });
}

/// Watches the config file and the stage files and reloads, debounced, when one changes.
/// Runs until the app is dropped; a watcher that cannot start is logged, not fatal
/// (`POST /admin/reload` and SIGHUP still work). Also retries failed OCI pulls
/// ([`PULL_RETRY_FIRST`]).
pub fn spawn_watcher(app: Arc<App>) {
    spawn_pull_retry(Arc::downgrade(&app));
    let (tx, mut rx) = mpsc::channel::<Vec<PathBuf>>(PENDING_CHANGES);
    // The files of the last (re)watch, read by the watcher's own thread.
    let watching: Arc<std::sync::Mutex<BTreeSet<PathBuf>>> = Arc::default();
    let filter = watching.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            forward(event, &filter, &tx);
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch files; reload with POST /admin/reload or SIGHUP");
            return;
        }
    };
    // Watching starts before this returns, so no change made after it is missed.
    let mut files = app.watched_files();
    let mut dirs = BTreeSet::new();
    *crate::sync::lock(&watching) = files.clone();
    rewatch(&mut watcher, &files, &mut dirs);
    tokio::spawn(async move {
        while let Some(paths) = rx.recv().await {
            // Other files in the same directories (logs, editors' swap files) are ignored, and
            // never delay a reload.
            if !paths.iter().any(|p| files.contains(p)) {
                continue;
            }
            settle(&mut rx, &files).await;
            app.reload("watch").await;
            files = app.watched_files();
            *crate::sync::lock(&watching) = files.clone();
            rewatch(&mut watcher, &files, &mut dirs);
        }
    });
}

/// Passes a change to a watched file on to the watcher's task, on the watcher's thread.
/// Events of other files in the watched directories (a log written nonstop beside the
/// config) stop here, and the queue is bounded: while the task is busy reloading, a file
/// written nonstop cannot pile events up in memory (one waiting change is enough to reload
/// again).
fn forward(
    event: notify::Event,
    watching: &std::sync::Mutex<BTreeSet<PathBuf>>,
    tx: &mpsc::Sender<Vec<PathBuf>>,
) {
    if matches!(event.kind, notify::EventKind::Access(_)) {
        return;
    }
    let watched = crate::sync::lock(watching);
    if event.paths.iter().any(|p| watched.contains(p)) {
        drop(watched);
        let _ = tx.try_send(event.paths);
    }
}

/// The debounce after a change to a watched file: returns once the watched files have been
/// quiet for [`DEBOUNCE`], and at the latest [`MAX_DELAY`] after it began (or when the
/// watcher is gone). Changes to other files in the same directories (logs, editors' swap
/// files) neither reset the quiet period nor delay the reload.
async fn settle(rx: &mut mpsc::Receiver<Vec<PathBuf>>, files: &BTreeSet<PathBuf>) {
    let give_up = tokio::time::Instant::now() + MAX_DELAY;
    let mut quiet_until = tokio::time::Instant::now() + DEBOUNCE;
    loop {
        match tokio::time::timeout_at(quiet_until.min(give_up), rx.recv()).await {
            Ok(Some(more)) if more.iter().any(|p| files.contains(p)) => {
                quiet_until = tokio::time::Instant::now() + DEBOUNCE;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// Watches the directories of `files` (and stops watching those no longer needed).
fn rewatch(
    watcher: &mut notify::RecommendedWatcher,
    files: &BTreeSet<PathBuf>,
    dirs: &mut BTreeSet<PathBuf>,
) {
    let wanted: BTreeSet<PathBuf> = files.iter().map(|f| dir_of(f)).collect();
    for dir in dirs.difference(&wanted) {
        let _ = watcher.unwatch(dir);
    }
    for dir in wanted.difference(dirs) {
        if let Err(err) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot watch a directory");
        }
    }
    *dirs = wanted;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// The watched files of the tests, and a channel standing in for the watcher.
    fn watched() -> (
        BTreeSet<PathBuf>,
        mpsc::Sender<Vec<PathBuf>>,
        mpsc::Receiver<Vec<PathBuf>>,
    ) {
        let files = BTreeSet::from([PathBuf::from("/plugins/stage.wasm")]);
        let (tx, rx) = mpsc::channel(PENDING_CHANGES);
        (files, tx, rx)
    }

    /// Sends `paths` every `every` until `until` (from now).
    fn keep_sending(
        tx: mpsc::Sender<Vec<PathBuf>>,
        paths: Vec<PathBuf>,
        every: Duration,
        until: Duration,
    ) {
        tokio::spawn(async move {
            let end = Instant::now() + until;
            while Instant::now() < end {
                tokio::time::sleep(every).await;
                let _ = tx.send(paths.clone()).await;
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn one_change_reloads_after_the_debounce() {
        let (files, _tx, mut rx) = watched();
        let started = Instant::now();
        settle(&mut rx, &files).await;
        assert_eq!(started.elapsed(), DEBOUNCE);
    }

    #[tokio::test(start_paused = true)]
    async fn other_files_written_nonstop_in_the_same_directory_never_delay_the_reload() {
        let (files, tx, mut rx) = watched();
        // A log beside the plugin, written every 10 ms for two seconds.
        let noise = vec![PathBuf::from("/plugins/weir.log")];
        keep_sending(tx, noise, Duration::from_millis(10), Duration::from_secs(2));
        let started = Instant::now();
        settle(&mut rx, &files).await;
        assert_eq!(
            started.elapsed(),
            DEBOUNCE,
            "noise must not reset the quiet period"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_watched_file_written_nonstop_reloads_at_the_latest_after_max_delay() {
        let (files, tx, mut rx) = watched();
        let plugin = vec![PathBuf::from("/plugins/stage.wasm")];
        keep_sending(
            tx,
            plugin,
            Duration::from_millis(20),
            Duration::from_secs(2),
        );
        let started = Instant::now();
        settle(&mut rx, &files).await;
        assert_eq!(started.elapsed(), MAX_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_writes_reloads_once_the_file_is_quiet() {
        let (files, tx, mut rx) = watched();
        let plugin = vec![PathBuf::from("/plugins/stage.wasm")];
        // Written every 20 ms for 100 ms: quiet from the last write (at 100 ms) on. The
        // watcher stays (a closed channel would end the wait at once).
        let _watcher = tx.clone();
        keep_sending(
            tx,
            plugin,
            Duration::from_millis(20),
            Duration::from_millis(100),
        );
        let started = Instant::now();
        settle(&mut rx, &files).await;
        assert_eq!(started.elapsed(), Duration::from_millis(100) + DEBOUNCE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_that_is_gone_ends_the_wait() {
        let (files, tx, mut rx) = watched();
        drop(tx);
        let started = Instant::now();
        settle(&mut rx, &files).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    /// A change event of kind `kind` to `paths`.
    fn event(kind: notify::EventKind, paths: &[&str]) -> notify::Event {
        let mut event = notify::Event::new(kind);
        event.paths = paths.iter().map(PathBuf::from).collect();
        event
    }

    #[test]
    fn only_changes_to_watched_files_are_queued_and_the_queue_is_bounded() {
        let (files, tx, mut rx) = watched();
        let watching = std::sync::Mutex::new(files);
        let write = notify::EventKind::Modify(notify::event::ModifyKind::Any);
        let read = notify::EventKind::Access(notify::event::AccessKind::Any);
        // A log beside the plugin, written nonstop: nothing reaches the task.
        for _ in 0..10_000 {
            forward(event(write, &["/plugins/weir.log"]), &watching, &tx);
        }
        forward(event(read, &["/plugins/stage.wasm"]), &watching, &tx);
        assert!(rx.try_recv().is_err(), "other files and reads are dropped");
        // The plugin written nonstop while the task is busy: at most PENDING_CHANGES wait.
        for _ in 0..10_000 {
            forward(event(write, &["/plugins/stage.wasm"]), &watching, &tx);
        }
        let mut queued = 0;
        while let Ok(paths) = rx.try_recv() {
            assert_eq!(paths, vec![PathBuf::from("/plugins/stage.wasm")]);
            queued += 1;
        }
        assert_eq!(queued, PENDING_CHANGES);
    }
}
