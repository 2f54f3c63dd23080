//! `[jobs]` (the background job queue: workers, bound, retries, callbacks) and a route's
//! `jobs = { concurrency = N }` (which routes take jobs, and how many may run at once):
//! validated data; the `queue` module gives it behaviour.

use std::fmt;
use std::time::Duration;

use super::check::{EnvLookup, Source};
use super::error::ConfigError;
use super::raw::{RawJobs, RawRouteJobs};

/// Default workers (`jobs.workers`): jobs run at once across all routes.
pub const DEFAULT_JOB_WORKERS: u32 = 4;
/// Default bound on jobs queued or running (`jobs.max_queued`); beyond it `POST /v1/jobs`
/// answers 429.
pub const DEFAULT_MAX_QUEUED: u32 = 10_000;
/// Default attempts per job, the first included (`jobs.max_attempts`).
pub const DEFAULT_JOB_MAX_ATTEMPTS: u32 = 5;
/// Default bound of the first retry's backoff (`jobs.backoff_base_ms`): 1 s.
pub const DEFAULT_JOB_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Default longest backoff (`jobs.backoff_max_ms`): 5 minutes.
pub const DEFAULT_JOB_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Default deliveries tried per callback (`jobs.callback_max_attempts`).
pub const DEFAULT_CALLBACK_MAX_ATTEMPTS: u32 = 8;
/// Default bound on one callback delivery (`jobs.callback_timeout_ms`): 10 s.
pub const DEFAULT_CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on resolving a callback receiver's name and connecting to it
/// (`jobs.callback_connect_timeout_ms`): 5 s, or the delivery bound when that is shorter.
pub const DEFAULT_CALLBACK_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bytes of a callback receiver's answer read (`jobs.callback_max_response_bytes`):
/// 64 KiB. The answer is not used; it is read so the connection can be reused, and a longer
/// one closes the connection instead.
pub const DEFAULT_CALLBACK_MAX_RESPONSE_BYTES: u64 = 64 << 10;
/// Default jobs of one route running at once (`routes.jobs.concurrency`).
pub const DEFAULT_ROUTE_JOB_CONCURRENCY: u32 = 4;

/// `[jobs]`: process-wide queue settings. Read at start; a reload that changes them says
/// they need a restart.
#[derive(Clone, PartialEq, Eq)]
pub struct JobsSettings {
    /// Jobs running at once across all routes, 1 to 1,024 (default [`DEFAULT_JOB_WORKERS`]).
    pub workers: u32,
    /// Jobs queued or running at most, 1 to 10,000,000 (default [`DEFAULT_MAX_QUEUED`]).
    pub max_queued: u32,
    /// Attempts per job before it is `dead`, 1 to 100 (default
    /// [`DEFAULT_JOB_MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// Full-jitter backoff: retry `n` waits up to `min(backoff_max, backoff_base * 2^n)`.
    pub backoff_base: Duration,
    /// The longest backoff; at least [`Self::backoff_base`].
    pub backoff_max: Duration,
    /// The HMAC-SHA256 key callbacks are signed with, read from
    /// [`Self::callback_secret_env`]; `None`: submissions with a `callback_url` are refused.
    /// Redacted in `Debug`.
    pub callback_secret: Option<String>,
    /// Name of the environment variable holding [`Self::callback_secret`].
    pub callback_secret_env: Option<String>,
    /// Hosts (lowercase names or IP literals) a `callback_url` may name. Every address a
    /// host resolves to must still be public unless [`Self::callback_allow_private`].
    pub callback_allow_hosts: Vec<String>,
    /// Whether callbacks may reach loopback, private (RFC 1918, CGNAT, unique-local) and other
    /// non-global addresses, and name `localhost` or such an IP literal without listing it
    /// (default false). Link-local (cloud metadata), unspecified, multicast and broadcast
    /// addresses and weir's own listeners stay refused.
    pub callback_allow_private: bool,
    /// Deliveries tried per callback before it is given up, 1 to 100 (default
    /// [`DEFAULT_CALLBACK_MAX_ATTEMPTS`]).
    pub callback_max_attempts: u32,
    /// Bound on one whole delivery, 1 ms to 10 min (default [`DEFAULT_CALLBACK_TIMEOUT`]).
    pub callback_timeout: Duration,
    /// Bound on resolving the receiver's name and opening the connection, 1 ms to
    /// [`Self::callback_timeout`] (default [`DEFAULT_CALLBACK_CONNECT_TIMEOUT`]).
    pub callback_connect_timeout: Duration,
    /// Bytes of the receiver's answer read at most, 0 to 16 MiB (default
    /// [`DEFAULT_CALLBACK_MAX_RESPONSE_BYTES`]).
    pub callback_max_response_bytes: u64,
}

impl Default for JobsSettings {
    fn default() -> Self {
        JobsSettings {
            workers: DEFAULT_JOB_WORKERS,
            max_queued: DEFAULT_MAX_QUEUED,
            max_attempts: DEFAULT_JOB_MAX_ATTEMPTS,
            backoff_base: DEFAULT_JOB_BACKOFF_BASE,
            backoff_max: DEFAULT_JOB_BACKOFF_MAX,
            callback_secret: None,
            callback_secret_env: None,
            callback_allow_hosts: Vec::new(),
            callback_allow_private: false,
            callback_max_attempts: DEFAULT_CALLBACK_MAX_ATTEMPTS,
            callback_timeout: DEFAULT_CALLBACK_TIMEOUT,
            callback_connect_timeout: DEFAULT_CALLBACK_CONNECT_TIMEOUT,
            callback_max_response_bytes: DEFAULT_CALLBACK_MAX_RESPONSE_BYTES,
        }
    }
}

impl fmt::Debug for JobsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobsSettings")
            .field("workers", &self.workers)
            .field("max_queued", &self.max_queued)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field(
                "callback_secret",
                &self.callback_secret.as_ref().map(|_| "***"),
            )
            .field("callback_secret_env", &self.callback_secret_env)
            .field("callback_allow_hosts", &self.callback_allow_hosts)
            .field("callback_allow_private", &self.callback_allow_private)
            .field("callback_max_attempts", &self.callback_max_attempts)
            .field("callback_timeout", &self.callback_timeout)
            .field("callback_connect_timeout", &self.callback_connect_timeout)
            .field(
                "callback_max_response_bytes",
                &self.callback_max_response_bytes,
            )
            .finish()
    }
}

/// A route's `jobs` table: the route takes background jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteJobsSettings {
    /// Jobs of this route running at once, 1 to 10,000 (default
    /// [`DEFAULT_ROUTE_JOB_CONCURRENCY`]); keep it below what the route's targets bear so
    /// background work leaves room for interactive requests.
    pub concurrency: u32,
}

/// Validates `[jobs]`.
pub(crate) fn build(
    src: Source<'_>,
    raw: &RawJobs,
    env: EnvLookup<'_>,
) -> Result<JobsSettings, ConfigError> {
    let d = JobsSettings::default();
    let ms = |v: Duration| v.as_millis() as u64;
    let backoff_base_ms = src.in_range_or(
        raw.backoff_base_ms.as_ref(),
        1..=3_600_000,
        ms(d.backoff_base),
        "jobs.backoff_base_ms",
    )?;
    let backoff_max_ms = src.in_range_or(
        raw.backoff_max_ms.as_ref(),
        backoff_base_ms..=86_400_000,
        ms(d.backoff_max).max(backoff_base_ms),
        "jobs.backoff_max_ms",
    )?;
    let (callback_secret, callback_secret_env) = match &raw.callback_secret_env {
        Some(var) => {
            let secret = src.secret(
                var,
                "jobs.callback_secret_env",
                "the key callbacks are signed with (HMAC-SHA256)",
                env,
            )?;
            (Some(secret), Some(var.get_ref().clone()))
        }
        None => (None, None),
    };
    let mut callback_allow_hosts = Vec::new();
    if let Some(hosts) = &raw.callback_allow_hosts {
        for (i, host) in hosts.get_ref().iter().enumerate() {
            let name = host.get_ref().trim().to_ascii_lowercase();
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
            if !valid {
                return Err(src.error(
                    host.span(),
                    format!("jobs.callback_allow_hosts[{i}]"),
                    format!(
                        "expected a host name like \"hooks.example.com\" (no scheme, port or \
                         path), got {:?}",
                        host.get_ref()
                    ),
                ));
            }
            callback_allow_hosts.push(name);
        }
    }
    let callback_timeout_ms = src.in_range_or(
        raw.callback_timeout_ms.as_ref(),
        1..=600_000,
        ms(d.callback_timeout),
        "jobs.callback_timeout_ms",
    )?;
    let callback_connect_timeout_ms = src.in_range_or(
        raw.callback_connect_timeout_ms.as_ref(),
        1..=callback_timeout_ms,
        ms(d.callback_connect_timeout).min(callback_timeout_ms),
        "jobs.callback_connect_timeout_ms",
    )?;
    Ok(JobsSettings {
        workers: src.in_range_or(
            raw.workers.as_ref(),
            1..=1024,
            u64::from(d.workers),
            "jobs.workers",
        )? as u32,
        max_queued: src.in_range_or(
            raw.max_queued.as_ref(),
            1..=10_000_000,
            u64::from(d.max_queued),
            "jobs.max_queued",
        )? as u32,
        max_attempts: src.in_range_or(
            raw.max_attempts.as_ref(),
            1..=100,
            u64::from(d.max_attempts),
            "jobs.max_attempts",
        )? as u32,
        backoff_base: Duration::from_millis(backoff_base_ms),
        backoff_max: Duration::from_millis(backoff_max_ms),
        callback_secret,
        callback_secret_env,
        callback_allow_hosts,
        callback_allow_private: raw
            .callback_allow_private
            .unwrap_or(d.callback_allow_private),
        callback_max_attempts: src.in_range_or(
            raw.callback_max_attempts.as_ref(),
            1..=100,
            u64::from(d.callback_max_attempts),
            "jobs.callback_max_attempts",
        )? as u32,
        callback_timeout: Duration::from_millis(callback_timeout_ms),
        callback_connect_timeout: Duration::from_millis(callback_connect_timeout_ms),
        callback_max_response_bytes: src.in_range_or(
            raw.callback_max_response_bytes.as_ref(),
            0..=16 << 20,
            d.callback_max_response_bytes,
            "jobs.callback_max_response_bytes",
        )?,
    })
}

/// Validates a route's `jobs` table (`key` is the route's, like `routes[0]`).
pub(crate) fn build_route(
    src: Source<'_>,
    raw: Option<&RawRouteJobs>,
    key: &str,
) -> Result<Option<RouteJobsSettings>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    Ok(Some(RouteJobsSettings {
        concurrency: src.in_range_or(
            raw.concurrency.as_ref(),
            1..=10_000,
            u64::from(DEFAULT_ROUTE_JOB_CONCURRENCY),
            &format!("{key}.jobs.concurrency"),
        )? as u32,
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

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
            Some(super::RouteJobsSettings { concurrency: 2 })
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
            super::DEFAULT_CALLBACK_CONNECT_TIMEOUT
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
    fn a_backoff_max_below_the_base_names_the_key() {
        let text = format!("[jobs]\nbackoff_base_ms = 500\nbackoff_max_ms = 100\n{BASE}");
        let error = Config::parse(&text, Path::new("w.toml"), &env).map_err(|e| e.to_string());
        assert_eq!(
            error.err().as_deref(),
            Some("w.toml:3:18: jobs.backoff_max_ms: must be between 500 and 86400000, got 100")
        );
    }
}
