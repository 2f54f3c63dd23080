//! Real processes for black-box tests: `weir sim` upstreams and `weir serve`, each on a port
//! the OS chose (read back from the line the process prints), killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use serde_json::Value;

use crate::sim::client::{Answer, exchange, full};

/// Bound on one exchange with weir in these tests.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A child process that is killed on drop.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `weir <args>` and waits for its "listening on http://ADDR" line.
fn spawn(args: &[&str]) -> Proc {
    spawn_with(args, &[], Stdio::null())
}

/// The state directory every weir under test sees (`XDG_STATE_HOME`, unless a test sets its
/// own), so the artifact key it generates lands in the scratch dir, never in the real HOME.
pub fn state_home() -> PathBuf {
    std::env::temp_dir().join(format!("weir-tests-{}/state", std::process::id()))
}

/// [`spawn`] with extra environment variables and stderr sent to `stderr`.
fn spawn_with(args: &[&str], envs: &[(&str, &str)], stderr: Stdio) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env("XDG_STATE_HOME", state_home())
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("weir starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("weir {args:?} printed no listening line"));
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let addrs: Vec<SocketAddr> = line
        .split("http://")
        .skip(1)
        .filter_map(|s| {
            s.trim_end_matches([')', ' '])
                .split([' ', ')'])
                .next()?
                .parse()
                .ok()
        })
        .collect();
    Proc {
        child,
        addr: addrs[0],
        admin: addrs.get(1).copied(),
    }
}

/// `weir sim` on a free port, with extra flags.
pub fn sim(flags: &[&str]) -> Proc {
    let mut args = vec!["sim", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    spawn(&args)
}

/// Writes `config` to a fresh scratch file and starts `weir serve` on free ports.
pub fn serve(config: &str) -> Proc {
    let path = scratch_config(config);
    serve_file(&path)
}

/// `weir serve` of `config` with extra environment variables, its log (stderr) written to
/// `log`.
pub fn serve_logged(config: &str, envs: &[(&str, &str)], log: &Path) -> Proc {
    let path = scratch_config(config);
    let file = std::fs::File::create(log).expect("log file");
    spawn_with(&serve_args(&path), envs, Stdio::from(file))
}

/// `weir serve` of the config at `path` on free ports.
pub fn serve_args(path: &Path) -> [&str; 7] {
    [
        "serve",
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]
}

pub fn serve_file(path: &Path) -> Proc {
    serve_file_with_env(path, &[])
}

/// [`serve_file`] with its log (stderr) written to `log`.
pub fn serve_file_logged(path: &Path, log: &Path) -> Proc {
    let file = std::fs::File::create(log).expect("log file");
    spawn_with(&serve_args(path), &[], Stdio::from(file))
}

/// [`serve_file_with_env`] with its log (stderr) written to `log`.
pub fn serve_file_with_env_logged(path: &Path, env: &[(&str, &str)], log: &Path) -> Proc {
    let file = std::fs::File::create(log).expect("log file");
    spawn_with(&serve_args(path), env, Stdio::from(file))
}

/// [`serve_file`] with extra environment variables.
pub fn serve_file_with_env(path: &Path, env: &[(&str, &str)]) -> Proc {
    spawn_with(&serve_args(path), env, Stdio::null())
}

pub fn scratch_config(config: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("weir-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("weir-{n}.toml"));
    std::fs::write(&path, config).unwrap();
    path
}

/// One request to `addr`.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Bytes>,
) -> Answer {
    let mut builder = Request::builder().method(method).uri(path);
    // The admin listener answers only to hosts that name the machine: the address is one.
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        builder = builder.header("host", addr.to_string());
    }
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(full(body.unwrap_or_default())).unwrap();
    exchange(addr, request, TIMEOUT)
        .await
        .unwrap_or_else(|err| panic!("{path}: {err}"))
}

pub async fn post(addr: SocketAddr, path: &str, body: &Value) -> Answer {
    call(
        addr,
        Method::POST,
        path,
        &[],
        Some(Bytes::from(body.to_string())),
    )
    .await
}

pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    call(addr, Method::GET, path, &[], None).await
}

/// The last `n` request bodies a simulator received.
pub async fn sim_requests(sim: &Proc, n: usize) -> Vec<Value> {
    let answer = get(sim.addr, &format!("/sim/requests?last={n}")).await;
    answer.json().as_array().cloned().unwrap_or_default()
}

/// The status of `GET path` on `addr`, or `None` when nothing answered (yet).
pub async fn try_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", addr.to_string())
        .body(full(Bytes::new()))
        .ok()?;
    let answer = exchange(addr, request, Duration::from_secs(2)).await.ok()?;
    Some(answer.status.as_u16())
}
