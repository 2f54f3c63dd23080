//! [`RedisServer`]: a real `redis-server` on a free loopback port, killed on drop; [`Fleet`]:
//! N `weir serve` nodes sharing it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::procs::{Proc, get, serve_file_logged};

/// A `redis-server` child on 127.0.0.1, killed (and its directory removed) on drop.
pub struct RedisServer {
    pub child: Child,
    pub port: u16,
    /// `requirepass`, when it has one.
    pub password: Option<String>,
    dir: PathBuf,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free a moment ago, below the kernel's ephemeral range: while the server
/// is down for [`RedisServer::restart`], no outgoing connection (the other tests', a node
/// reconnecting) can be given it as its local port, which would fail the restart's bind.
fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral.max(10_001));
    for _ in 0..1000 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let port = low + (hasher.finish() % u64::from(high - low)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

impl RedisServer {
    /// Starts `redis-server` without persistence; panics with the reason if it cannot.
    pub fn start() -> RedisServer {
        RedisServer::start_with(None)
    }

    /// [`RedisServer::start`] requiring `password`.
    pub fn start_with(password: Option<&str>) -> RedisServer {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weir-tests-{}/redis-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let mut server = RedisServer {
            child: spawn_redis(port, password, &dir),
            port,
            password: password.map(str::to_owned),
            dir,
        };
        server.wait_ready();
        server
    }

    /// `redis://…` for weir's config (with the password, when it has one).
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Runs `redis-cli` against this server; its stdout, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(password) = &self.password {
            cmd.args(["--no-auth-warning", "-a", password]);
        }
        let out = cmd.args(args).output().expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Sends `signal` (`-STOP`, `-CONT`, `-KILL`) to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} redis-server");
    }

    /// Kills the server (SIGKILL) and starts a fresh one on the same port (empty: no
    /// persistence).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_redis(self.port, self.password.as_deref(), &self.dir);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                panic!("redis-server exited ({status}) before it was ready:\n{log}");
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.cli(&["PING"]) == "PONG"
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn_redis(port: u16, password: Option<&str>, dir: &std::path::Path) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        dir.to_str().unwrap(),
        "--logfile",
        "redis.log",
    ]);
    if let Some(password) = password {
        cmd.args(["--requirepass", password]);
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    cmd.spawn().unwrap_or_else(|err| {
        panic!("cannot start redis-server ({err}); tests/run installs it (apt-get install redis-server)")
    })
}

/// N `weir serve` nodes on one Redis; each has its own data dir, ports and log.
pub struct Fleet {
    pub nodes: Vec<Proc>,
    pub logs: Vec<PathBuf>,
    pub configs: Vec<PathBuf>,
}

impl Fleet {
    /// Starts `n` nodes, node `i` with `config(i, data_dir)`.
    pub fn start(n: usize, config: impl Fn(usize, &str) -> String) -> Fleet {
        let base = std::env::temp_dir().join(format!(
            "weir-tests-{}/fleet-{}",
            std::process::id(),
            free_port()
        ));
        let mut fleet = Fleet {
            nodes: Vec::new(),
            logs: Vec::new(),
            configs: Vec::new(),
        };
        for i in 0..n {
            let dir = base.join(format!("node-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("weir.toml");
            std::fs::write(&path, config(i, dir.join("data").to_str().unwrap())).unwrap();
            let log = dir.join("weir.log");
            fleet.nodes.push(serve_file_logged(&path, &log));
            fleet.logs.push(log);
            fleet.configs.push(path);
        }
        fleet
    }

    /// Restarts node `i` (after it was killed) with its config, data dir and log.
    pub fn restart(&mut self, i: usize) {
        let _ = self.nodes[i].child.kill();
        let _ = self.nodes[i].child.wait();
        self.nodes[i] = serve_file_logged(&self.configs[i], &self.logs[i].with_extension("log2"));
    }

    /// The public address of node `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr
    }

    /// `/admin/state` of node `i`.
    pub async fn state(&self, i: usize) -> serde_json::Value {
        get(self.nodes[i].admin.expect("admin listener"), "/admin/state")
            .await
            .json()
    }
}

/// The `[state]` table of a node on `redis`, with extra lines.
pub fn state_table(redis: &RedisServer, extra: &str) -> String {
    format!(
        "[state]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"t{}\"\n{extra}\n",
        redis.url(),
        redis.port
    )
}
