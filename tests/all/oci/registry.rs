//! [`Registry`]: a real `docker-registry serve` (CNCF distribution, Debian's package) on a free
//! loopback port with a scratch storage directory, killed on drop; `weir push` and `wkg`
//! through the real binaries.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// A registry child on 127.0.0.1, killed (and its directory removed) on drop.
pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    /// Whether it requires [`USER`] / [`PASSWORD`] (htpasswd).
    auth: bool,
}

/// The user of a registry started with [`Registry::start_with_auth`].
pub const USER: &str = "testuser";
/// Their password.
pub const PASSWORD: &str = "testpassword";
/// `USER:bcrypt(PASSWORD)`, as distribution's htpasswd file wants it (the pair oci-client's
/// own tests use).
const HTPASSWD: &str = "testuser:$2y$05$8/q2bfRcX74EuxGf0qOcSuhWDQJXrgWiy6Fi73/JM2tKC66qSrLve";

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weir-tests-{}/oci-{name}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Registry {
    /// Starts a registry; panics with the reason if it cannot.
    pub fn start() -> Registry {
        Registry::start_as(false)
    }

    /// Starts a registry that requires [`USER`] and [`PASSWORD`] (HTTP basic auth).
    pub fn start_with_auth() -> Registry {
        Registry::start_as(true)
    }

    fn start_as(auth: bool) -> Registry {
        let dir = scratch("registry");
        let mut registry = Registry {
            child: None,
            port: free_port(),
            dir,
            auth,
        };
        registry.restart();
        registry
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGKILL); its storage stays for [`Registry::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts it on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        let config = self.dir.join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{}\n",
            self.dir.join("data").display(),
            self.port
        );
        if self.auth {
            let htpasswd = self.dir.join("htpasswd");
            std::fs::write(&htpasswd, format!("{HTPASSWD}\n")).unwrap();
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: weir-tests\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(self.dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot start docker-registry ({err}); tests/run installs it (tests/install-registry)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let log =
                    std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
                panic!("docker-registry exited ({status}) before it was ready:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The file holding the blob `digest` (`sha256:…`) in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// What `weir push` printed: the pinned reference and the layer's digest.
pub struct Pushed {
    /// `oci://…@sha256:…`, from the `path = "…"` line.
    pub pinned: String,
    /// `sha256:…` of the component.
    pub layer: String,
}

/// `weir push FILE REFERENCE`; panics with its output when it fails.
pub fn push(file: &Path, reference: &str) -> Pushed {
    push_with_env(file, reference, &[])
}

/// `weir SUBCOMMAND` with no registry credentials in its environment: neither
/// `WEIR_REGISTRY_*` nor a Docker config.
pub fn weir_without_credentials(subcommand: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .arg(subcommand)
        .env_remove("WEIR_REGISTRY_USERNAME")
        .env_remove("WEIR_REGISTRY_PASSWORD")
        .env(
            "DOCKER_CONFIG",
            std::env::temp_dir().join("weir-tests-no-docker-config"),
        );
    command
}

/// `weir push FILE REFERENCE` with its output, and extra environment variables.
pub fn push_output(file: &Path, reference: &str, env: &[(&str, &str)]) -> std::process::Output {
    weir_without_credentials("push")
        .arg(file)
        .arg(reference)
        .envs(env.iter().copied())
        .output()
        .expect("weir push runs")
}

/// [`push`] with extra environment variables.
pub fn push_with_env(file: &Path, reference: &str, env: &[(&str, &str)]) -> Pushed {
    let out = push_output(file, reference, env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "weir push failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pinned = stdout
        .lines()
        .find_map(|l| l.strip_prefix("path = \"")?.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no `path = ` line in:\n{stdout}"))
        .to_owned();
    let layer = stdout
        .split("layer ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no layer digest in:\n{stdout}"))
        .to_owned();
    Pushed { pinned, layer }
}

/// `component` with a custom section appended: the same code, other bytes (a new version),
/// `padding` bytes longer.
pub fn rebuilt(component: &[u8], tag: &str, padding: usize) -> Vec<u8> {
    let name = b"weir-test-build";
    let mut section = Vec::new();
    leb128(&mut section, name.len() as u64);
    section.extend_from_slice(name);
    section.extend_from_slice(tag.as_bytes());
    section.resize(section.len() + padding, b'.');
    let mut bytes = component.to_vec();
    bytes.push(0);
    leb128(&mut bytes, section.len() as u64);
    bytes.extend_from_slice(&section);
    bytes
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

/// The `wkg` binary (`tests/install-wkg`, found through `WEIR_WKG` or its install root).
pub fn wkg() -> PathBuf {
    if let Some(path) = std::env::var_os("WEIR_WKG") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let path = home.join(".cache/weir-tools/wkg-0.16.1/bin/wkg");
    assert!(
        path.exists(),
        "wkg is not installed; tests/run installs it (tests/install-wkg)"
    );
    path
}

/// `weir serve` of `config` that must fail to start: its stderr. Panics if it is still up
/// after 60 s.
pub fn serve_fails(config: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(crate::procs::serve_args(config))
        .env("XDG_STATE_HOME", crate::procs::state_home())
        .env(
            "DOCKER_CONFIG",
            std::env::temp_dir().join("weir-tests-no-docker-config"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            use std::io::Read;
            let _ = child
                .stderr
                .take()
                .map(|mut e| e.read_to_string(&mut stderr));
            assert!(!status.success(), "weir serve exited 0:\n{stderr}");
            return stderr;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("weir serve {} did not fail within 60 s", config.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
