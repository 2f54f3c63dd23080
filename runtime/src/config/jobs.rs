//! `[jobs]` (the background job queue: workers, bound, retries, callbacks) and a route's
//! `jobs = { concurrency = N }` (which routes take jobs, and how many may run at once):
//! validated data; the `queue` module gives it behaviour.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::check::Source;
use super::error::ConfigError;
use super::value::{Int, Ms, Val, env_var, mask, millis, ms, read_str, serde_default};

/// Any non-negative number: the static bound of a key whose range depends on another key.
const ANY: u64 = u64::MAX;

/// `[jobs]`: process-wide queue settings. Read at start; a reload that changes them says
/// they need a restart.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct JobsSettings {
    /// Jobs running at once across all routes.
    #[serde(with = "Int::<1, 1024>", default = "Val::<4>::int")]
    pub workers: u32,
    /// Jobs queued or running at most; beyond it `POST /v1/jobs` answers 429.
    #[serde(with = "Int::<1, 10_000_000>", default = "Val::<10_000>::int")]
    pub max_queued: u32,
    /// Jobs one API key may have queued or running at most: 1 to [`Self::max_queued`],
    /// default a quarter of it (rounded up), so one key cannot fill the queue for every
    /// other. Beyond it that key's `POST /v1/jobs` answers 429 `key_queue_full`. Without
    /// `[[keys]]` every job is the anonymous owner's and only `max_queued` bounds them.
    #[serde(with = "Int::<0, ANY>", default = "Val::<2_500>::int")]
    pub max_queued_per_key: u32,
    /// Attempts per job, the first included, before it is `dead`.
    #[serde(with = "Int::<1, 100>", default = "Val::<5>::int")]
    pub max_attempts: u32,
    /// Full-jitter backoff: retry `n` waits up to `min(backoff_max, backoff_base * 2^n)`.
    #[serde(rename = "backoff_base_ms", with = "Ms::<1, 3_600_000>")]
    #[serde(default = "ms::<1000>")]
    pub backoff_base: Duration,
    /// The longest backoff: [`Self::backoff_base`] to 1 day, default 5 min (or the base when
    /// longer).
    #[serde(rename = "backoff_max_ms", with = "Ms::<0, ANY>")]
    #[serde(default = "ms::<300_000>")]
    pub backoff_max: Duration,
    /// The HMAC-SHA256 key callbacks are signed with, read from
    /// [`Self::callback_secret_env`]; `None`: submissions with a `callback_url` are refused.
    #[serde(skip_deserializing, serialize_with = "mask")]
    pub callback_secret: Option<String>,
    /// Name of the environment variable holding [`Self::callback_secret`].
    #[serde(deserialize_with = "env_var", default)]
    pub callback_secret_env: Option<String>,
    /// Hosts (lowercase names or IP literals) a `callback_url` may name. Every address a
    /// host resolves to must still be public unless [`Self::callback_allow_private`].
    #[serde(deserialize_with = "callback_hosts", default)]
    pub callback_allow_hosts: Vec<String>,
    /// Whether callbacks may reach loopback, private (RFC 1918, CGNAT, unique-local) and other
    /// non-global addresses, and name `localhost` or such an IP literal without listing it
    /// (default false). Link-local (cloud metadata), unspecified, multicast and broadcast
    /// addresses and weir's own listeners stay refused.
    #[serde(default)]
    pub callback_allow_private: bool,
    /// Deliveries tried per callback before it is given up.
    #[serde(with = "Int::<1, 100>", default = "Val::<8>::int")]
    pub callback_max_attempts: u32,
    /// Bound on one whole delivery.
    #[serde(rename = "callback_timeout_ms", with = "Ms::<1, 600_000>")]
    #[serde(default = "ms::<10_000>")]
    pub callback_timeout: Duration,
    /// Bound on resolving the receiver's name and opening the connection: 1 ms to
    /// [`Self::callback_timeout`], default 5 s (or the delivery bound when shorter).
    #[serde(rename = "callback_connect_timeout_ms", with = "Ms::<0, ANY>")]
    #[serde(default = "ms::<5000>")]
    pub callback_connect_timeout: Duration,
    /// How long a finished job (succeeded, failed, dead or cancelled, its callback no longer
    /// pending) is kept after it finished: up to 10 years, default 7 days; 0 keeps finished
    /// jobs whatever their age. Its idempotency key is forgotten with it.
    #[serde(rename = "retention_ms", with = "Ms::<0, { 3650 * 86_400_000 }>")]
    #[serde(default = "ms::<604_800_000>")]
    pub retention: Duration,
    /// Finished jobs kept at most, the oldest deleted first: up to 100 million, default
    /// 100,000; 0 keeps any number.
    #[serde(with = "Int::<0, 100_000_000>", default = "Val::<100_000>::int")]
    pub retention_max_jobs: u64,
    /// How often the retention sweep runs (off the request path): 100 ms to 1 day, default
    /// 1 min.
    #[serde(rename = "retention_sweep_ms", with = "Ms::<100, 86_400_000>")]
    #[serde(default = "ms::<60_000>")]
    pub retention_sweep: Duration,
    /// Bytes of the receiver's answer read at most. The answer is not used; it is read so
    /// the connection can be reused, and a longer one closes the connection instead.
    #[serde(with = "Int::<0, { 16 << 20 }>", default = "Val::<{ 64 << 10 }>::int")]
    pub callback_max_response_bytes: u64,
    /// With `state.backend = "redis"`: how long a running job may go without its holder
    /// renewing its claim (every third of this) before another node takes it over and runs
    /// it again (at-least-once, counted as a duplicate execution): 100 ms to 1 hour, default
    /// 30 s. The longer, the later a dead node's jobs resume; the shorter, the likelier a
    /// node stalled that long (not dead) has its job run twice.
    #[serde(rename = "reclaim_idle_ms", with = "Ms::<100, 3_600_000>")]
    #[serde(default = "ms::<30_000>")]
    pub reclaim_idle: Duration,
}

impl fmt::Debug for JobsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::masked::debug(self, "JobsSettings", f)
    }
}

/// A route's `jobs` table: the route takes background jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RouteJobsSettings {
    /// `false` turns jobs off for the route while keeping the table (the route's `jobs` is
    /// then `None`, so this is always true).
    #[serde(default = "super::value::yes", skip_serializing)]
    pub enabled: bool,
    /// Jobs of this route running at once; keep it below what the route's targets bear so
    /// background work leaves room for interactive requests.
    #[serde(with = "Int::<1, 10_000>", default = "Val::<4>::int")]
    pub concurrency: u32,
}

serde_default!(JobsSettings);

fn callback_hosts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Host(String);
    impl<'de> Deserialize<'de> for Host {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            read_str(d, |host| {
                let name = host.trim().to_ascii_lowercase();
                let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-.:".contains(&b);
                match !name.is_empty() && name.len() <= 253 && name.bytes().all(allowed) {
                    true => Ok(Host(name)),
                    false => Err(format!(
                        "expected a host name like \"hooks.example.com\" (no scheme, port or \
                         path), got {host:?}"
                    )),
                }
            })
        }
    }
    Ok(Vec::<Host>::deserialize(d)?
        .into_iter()
        .map(|h| h.0)
        .collect())
}

/// The second pass over `[jobs]`: the bounds that depend on another key and the secret.
pub(crate) fn check(jobs: &mut JobsSettings, src: &Source<'_>) -> Result<(), ConfigError> {
    let per_key = jobs.max_queued.div_ceil(4);
    let range = (1, u64::from(jobs.max_queued));
    src.bounded(
        "jobs.max_queued_per_key",
        &mut jobs.max_queued_per_key,
        range,
        per_key,
    )?;
    let longest = jobs.backoff_max.max(jobs.backoff_base);
    let range = (millis(jobs.backoff_base), 86_400_000);
    src.bounded("jobs.backoff_max_ms", &mut jobs.backoff_max, range, longest)?;
    if let Some(var) = &jobs.callback_secret_env {
        let purpose = "the key callbacks are signed with (HMAC-SHA256)";
        jobs.callback_secret = Some(src.secret("jobs.callback_secret_env", var, purpose)?);
    }
    let (total, connect) = (jobs.callback_timeout, &mut jobs.callback_connect_timeout);
    let shorter = (*connect).min(total);
    src.bounded(
        "jobs.callback_connect_timeout_ms",
        connect,
        (1, millis(total)),
        shorter,
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::super::Config;

    const BASE: &str = r#"
[targets.up]
base_url = "http://127.0.0.1:9101/v1"

[[routes]]
model = "demo"
targets = ["up"]
jobs = { concurrency = 2 }

[[routes]]
model = "chat"
targets = ["up"]
"#;

    fn env(name: &str) -> Option<String> {
        (name == "HOOK_SECRET").then(|| "hook-s3cret".to_owned())
    }

    #[test]
    fn jobs_default_and_routes_opt_in() {
        let config = Config::parse(BASE, Path::new("w.toml"), &env);
        let Ok(config) = config else {
            panic!("rejected: {config:?}");
        };
        assert_eq!(config.jobs, super::JobsSettings::default());
        assert_eq!(
            config.routes[0].jobs,
            Some(super::RouteJobsSettings {
                enabled: true,
                concurrency: 2
            })
        );
        assert_eq!(config.routes[1].jobs, None);
    }

    #[test]
    fn the_callback_secret_comes_from_the_environment_and_is_masked() {
        let text = format!(
            "[jobs]\nworkers = 8\ncallback_secret_env = \"HOOK_SECRET\"\n\
             callback_allow_hosts = [\"Hooks.Example.com\"]\n{BASE}"
        );
        let config = Config::parse(&text, Path::new("w.toml"), &env);
        let Ok(config) = config else {
            panic!("rejected: {config:?}");
        };
        assert_eq!(config.jobs.workers, 8);
        assert_eq!(config.jobs.callback_secret.as_deref(), Some("hook-s3cret"));
        assert_eq!(config.jobs.callback_allow_hosts, ["hooks.example.com"]);
        assert!(!format!("{:?}", config.jobs).contains("s3cret"));
        let masked = config.to_masked_json();
        assert!(!masked.to_string().contains("s3cret"), "{masked}");
        assert_eq!(masked["jobs"]["callback_secret"], "***");
        assert_eq!(masked["routes"][0]["jobs"]["concurrency"], 2);
    }

    #[test]
    fn callbacks_stay_off_private_addresses_unless_opted_in_and_every_edge_is_bounded() {
        let config = Config::parse(BASE, Path::new("w.toml"), &env);
        let Ok(config) = config else {
            panic!("rejected: {config:?}");
        };
        assert!(!config.jobs.callback_allow_private);
        assert_eq!(
            config.jobs.callback_connect_timeout,
            std::time::Duration::from_secs(5)
        );
        assert_eq!(config.jobs.callback_max_response_bytes, 64 << 10);

        let text = format!(
            "[jobs]\ncallback_allow_private = true\ncallback_timeout_ms = 2000\n\
             callback_max_response_bytes = 0\n{BASE}"
        );
        let config = Config::parse(&text, Path::new("w.toml"), &env);
        let Ok(config) = config else {
            panic!("rejected: {config:?}");
        };
        assert!(config.jobs.callback_allow_private);
        // The connect bound defaults to the delivery bound when that is shorter.
        assert_eq!(
            config.jobs.callback_connect_timeout,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(config.jobs.callback_max_response_bytes, 0);
        let masked = config.to_masked_json();
        assert_eq!(masked["jobs"]["callback_allow_private"], true);
        assert_eq!(masked["jobs"]["callback_connect_timeout_ms"], 2000);

        let text = format!(
            "[jobs]\ncallback_timeout_ms = 1000\ncallback_connect_timeout_ms = 5000\n{BASE}"
        );
        let error = Config::parse(&text, Path::new("w.toml"), &env).map_err(|e| e.to_string());
        assert_eq!(
            error.err().as_deref(),
            Some(
                "w.toml:3:31: jobs.callback_connect_timeout_ms: must be between 1 and 1000, got \
                 5000"
            )
        );
    }

    #[test]
    fn each_key_gets_a_quarter_of_the_queue_unless_set_and_finished_jobs_are_kept_a_week() {
        let config = Config::parse(BASE, Path::new("w.toml"), &env);
        let Ok(config) = config else {
            panic!("rejected: {config:?}");
        };
        assert_eq!(config.jobs.max_queued_per_key, 2_500);
        assert_eq!(config.jobs.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(config.jobs.retention_max_jobs, 100_000);
        assert_eq!(config.jobs.retention_sweep, Duration::from_secs(60));

        let text = format!("[jobs]\nmax_queued = 10\n{BASE}");
        let config = Config::parse(&text, Path::new("w.toml"), &env);
        let Ok(config) = config else {
            panic!("rejected: {config:?}");
        };
        assert_eq!(config.jobs.max_queued_per_key, 3, "rounded up");

        let text = format!(
            "[jobs]\nmax_queued = 10\nmax_queued_per_key = 10\nretention_ms = 0\n\
             retention_max_jobs = 0\n{BASE}"
        );
        let config = Config::parse(&text, Path::new("w.toml"), &env);
        let Ok(config) = config else {
            panic!("rejected: {config:?}");
        };
        assert_eq!(config.jobs.max_queued_per_key, 10);
        assert_eq!(config.jobs.retention, Duration::ZERO);
        let masked = config.to_masked_json();
        assert_eq!(masked["jobs"]["max_queued_per_key"], 10);
        assert_eq!(masked["jobs"]["retention_ms"], 0);

        for (key, value, range) in [
            ("max_queued_per_key", "0", "1 and 10"),
            ("max_queued_per_key", "11", "1 and 10"),
            ("retention_sweep_ms", "10", "100 and 86400000"),
        ] {
            let text = format!("[jobs]\nmax_queued = 10\n{key} = {value}\n{BASE}");
            let error = Config::parse(&text, Path::new("w.toml"), &env).map_err(|e| e.to_string());
            let col = key.len() + 4;
            assert_eq!(
                error.err(),
                Some(format!(
                    "w.toml:3:{col}: jobs.{key}: must be between {range}, got {value}"
                ))
            );
        }
    }

    #[test]
    fn a_backoff_max_below_the_base_names_the_key() {
        let text = format!("[jobs]\nbackoff_base_ms = 500\nbackoff_max_ms = 100\n{BASE}");
        let error = Config::parse(&text, Path::new("w.toml"), &env).map_err(|e| e.to_string());
        assert_eq!(
            error.err().as_deref(),
            Some("w.toml:3:18: jobs.backoff_max_ms: must be between 500 and 86400000, got 100")
        );
    }
}
