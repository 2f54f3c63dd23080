//! What a scenario starts: `weir sim` upstreams (in this process, on a runtime of their own so
//! their work does not delay the client's schedule) and `weir serve` (a child process, the
//! real binary, so a `kill` is a real SIGKILL). Everything started is stopped on drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

use super::scenario::SimSettings;
use crate::sim::{Sim, SimConfig};

/// The sims a scenario starts, by name, and how to stop each.
pub struct Sims {
    runtime: Option<tokio::runtime::Runtime>,
    running: BTreeMap<String, Running>,
    settings: BTreeMap<String, SimSettings>,
}

struct Running {
    stop: Option<oneshot::Sender<()>>,
}

impl Sims {
    /// Starts every sim of `settings` that has `listen` (the others are already running).
    pub async fn start(settings: &BTreeMap<String, SimSettings>) -> Result<Sims, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("loadtest-sims")
            .enable_all()
            .build()
            .map_err(|err| format!("cannot start the sims' runtime: {err}"))?;
        let mut sims = Sims {
            runtime: Some(runtime),
            running: BTreeMap::new(),
            settings: settings.clone(),
        };
        for name in settings.keys() {
            sims.start_one(name).await?;
        }
        Ok(sims)
    }

    /// Starts (or restarts) the sim `name` if the scenario starts it.
    pub async fn start_one(&mut self, name: &str) -> Result<(), String> {
        let Some(sim) = self.settings.get(name) else {
            return Err(format!("no sim named {name:?}"));
        };
        let Some(listen) = sim.listen else {
            return Ok(());
        };
        let Some(runtime) = &self.runtime else {
            return Err("the sims have stopped".into());
        };
        let mut config = SimConfig::new(listen);
        config.faults = sim.faults.clone();
        config.ttft_ms = sim.ttft_ms;
        config.inter_token_ms = sim.inter_token_ms;
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound_tx, bound_rx) = oneshot::channel();
        runtime.spawn(async move {
            // A port just released may still be closing: try for a while.
            let mut tries = 0;
            let sim = loop {
                match Sim::bind(config.clone()).await {
                    Ok(sim) => break sim,
                    Err(err) if tries >= 50 => {
                        let _ = bound_tx.send(Err(err.to_string()));
                        return;
                    }
                    Err(_) => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            let _ = bound_tx.send(Ok(()));
            let _ = sim
                .serve(async {
                    let _ = stopped.await;
                })
                .await;
        });
        match bound_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(format!("sims.{name}: cannot listen on {listen}: {err}")),
            Err(_) => return Err(format!("sims.{name}: the sim stopped while starting")),
        }
        self.running
            .insert(name.to_owned(), Running { stop: Some(stop) });
        Ok(())
    }

    /// Stops the sim `name`: its port refuses connections from now on.
    pub fn stop_one(&mut self, name: &str) {
        if let Some(running) = self.running.get_mut(name)
            && let Some(stop) = running.stop.take()
        {
            let _ = stop.send(());
        }
    }

    /// The base URL of the sim `name`.
    pub fn url(&self, name: &str) -> Option<String> {
        let sim = self.settings.get(name)?;
        match (&sim.url, sim.listen) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(listen)) => Some(format!("http://{listen}")),
            (None, None) => None,
        }
    }
}

impl Drop for Sims {
    fn drop(&mut self) {
        for running in self.running.values_mut() {
            if let Some(stop) = running.stop.take() {
                let _ = stop.send(());
            }
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A `weir serve` child process.
pub struct WeirProcess {
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl WeirProcess {
    /// Starts `weir serve --config CONFIG` (this very binary), its output appended to `log`.
    pub fn spawn(config: &Path, log: &Path) -> Result<WeirProcess, String> {
        let mut process = WeirProcess {
            config: config.to_path_buf(),
            log: log.to_path_buf(),
            child: None,
        };
        process.restart()?;
        Ok(process)
    }

    /// Starts the process again (after a kill).
    pub fn restart(&mut self) -> Result<(), String> {
        let exe =
            std::env::current_exe().map_err(|err| format!("cannot find the weir binary: {err}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|err| format!("{}: {err}", self.log.display()))?;
        let err_log = log
            .try_clone()
            .map_err(|err| format!("{}: {err}", self.log.display()))?;
        let child = Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|err| format!("cannot start weir serve: {err}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process has exited (and how).
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// The last lines of its log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits until `url`/readyz answers 200, the process exits, or `timeout` passes.
    pub async fn wait_ready(&mut self, url: &str, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let ready = format!("{url}/readyz");
        loop {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "weir serve exited ({status}) before it was ready; its log ends:\n{}",
                    self.log_tail()
                ));
            }
            if get(&ready, None)
                .await
                .is_ok_and(|(status, _)| status == 200)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "weir serve was not ready within {} ms ({ready}); its log ends:\n{}",
                    timeout.as_millis(),
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM first, so it drains and flushes; SIGKILL if it takes too long.
            let pid = child.id();
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Most bytes of a control-plane answer read (`/metrics`, `/admin/*`, `/sim/*`).
pub const MAX_CONTROL_BYTES: usize = 8 << 20;

/// How long a control-plane call may take.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET url` with an optional bearer token: status and body (bounded).
pub async fn get(url: &str, token: Option<&str>) -> Result<(u16, Vec<u8>), String> {
    call(http::Method::GET, url, token, None).await
}

/// `POST url` with a JSON body.
pub async fn post(url: &str, token: Option<&str>, body: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
    call(http::Method::POST, url, token, Some(body)).await
}

async fn call(
    method: http::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<(u16, Vec<u8>), String> {
    let client: Client<_, http_body_util::Full<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.unwrap_or_default(),
        )))
        .map_err(|err| format!("{url}: {err}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|err| format!("{url}: {err}"))?;
        let status = response.status().as_u16();
        let limited = http_body_util::Limited::new(response.into_body(), MAX_CONTROL_BYTES);
        let bytes = limited
            .collect()
            .await
            .map_err(|err| format!("{url}: {err}"))?
            .to_bytes();
        Ok((status, bytes.to_vec()))
    };
    match tokio::time::timeout(CONTROL_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("{url}: no answer within {CONTROL_TIMEOUT:?}")),
    }
}
