//! The client-connection bounds of `[server]`: how long a client may take to send a request
//! head and a body, how long an idle keep-alive connection is kept, how long a response write
//! may make no progress, and how many connections each listener holds at once.
//!
//! Without them a client that opens connections and then stalls (a half-sent head, a body
//! that never finishes, a stream it never reads) holds a file descriptor, buffers and, for a
//! stream, an upstream connection and a budget reservation forever: Envoy's
//! `request_headers_timeout`, `request_timeout`, `idle_timeout` and `max_connections` are the
//! checklist. Each applies to both listeners (the admin listener has its own connection cap).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::value::{Int, Ms, Val, ms, serde_default};

/// Largest accepted value of each of the four timeouts: 1 hour, in ms.
const HOUR_MS: u64 = 3_600_000;

/// The validated connection bounds of `[server]` (its keys are written in `[server]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimits {
    /// A request head must arrive whole within this time, counted from the connection's
    /// accept (first request) or from the first byte of the head (later requests); else the
    /// connection is closed.
    #[serde(rename = "header_read_timeout_ms", with = "Ms::<1, HOUR_MS>")]
    #[serde(default = "ms::<10_000>")]
    pub header_read_timeout: Duration,
    /// A request body must arrive whole within this time once weir starts reading it (the
    /// default allows 1 MiB at 35 KB/s); else the request gets 408 and the connection is
    /// closed.
    #[serde(rename = "body_read_timeout_ms", with = "Ms::<1, HOUR_MS>")]
    #[serde(default = "ms::<30_000>")]
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after this time.
    #[serde(rename = "idle_timeout_ms", with = "Ms::<1, HOUR_MS>")]
    #[serde(default = "ms::<60_000>")]
    pub idle_timeout: Duration,
    /// A response write (a stream's chunk included) that makes no progress for this long (the
    /// client stopped reading) closes the connection, which ends the request and releases
    /// what it holds.
    #[serde(rename = "write_timeout_ms", with = "Ms::<1, HOUR_MS>")]
    #[serde(default = "ms::<30_000>")]
    pub write_timeout: Duration,
    /// Connections each listener holds at once; beyond it a new connection is closed as soon
    /// as it is accepted.
    #[serde(with = "Int::<1, 1_000_000>", default = "Val::<10_000>::int")]
    pub max_connections: usize,
}

serde_default!(ConnectionLimits);

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    const ROUTE: &str = "[targets.t]\nbase_url = \"http://h\"\n[[routes]]\nmodel = \"m\"\n\
                         targets = [\"t\"]\n";

    fn server(table: &str) -> Result<ConnectionLimits, String> {
        let text = format!("[server]\n{table}\n{ROUTE}");
        Config::parse(&text, Path::new("w.toml"), &|_| None)
            .map(|c| c.server.connections)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn nothing_set_gives_the_defaults() {
        assert_eq!(server(""), Ok(ConnectionLimits::default()));
        let limits = ConnectionLimits::default();
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.body_read_timeout, Duration::from_secs(30));
        assert_eq!(limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(limits.write_timeout, Duration::from_secs(30));
        assert_eq!(limits.max_connections, 10_000);
    }

    #[test]
    fn each_bound_is_range_checked_under_its_own_key() {
        for (table, error) in [
            (
                "header_read_timeout_ms = 0",
                "2:26: server.header_read_timeout_ms: must be between 1 and 3600000, got 0",
            ),
            (
                "body_read_timeout_ms = 3600001",
                "2:24: server.body_read_timeout_ms: must be between 1 and 3600000, got 3600001",
            ),
            (
                "idle_timeout_ms = 0",
                "2:19: server.idle_timeout_ms: must be between 1 and 3600000, got 0",
            ),
            (
                "write_timeout_ms = 0",
                "2:20: server.write_timeout_ms: must be between 1 and 3600000, got 0",
            ),
            (
                "max_connections = 0",
                "2:19: server.max_connections: must be between 1 and 1000000, got 0",
            ),
        ] {
            assert_eq!(server(table), Err(format!("w.toml:{error}")), "{table}");
        }
        assert_eq!(
            server("header_read_timeout_ms = 1500\nmax_connections = 3"),
            Ok(ConnectionLimits {
                header_read_timeout: Duration::from_millis(1500),
                max_connections: 3,
                ..ConnectionLimits::default()
            })
        );
    }
}
