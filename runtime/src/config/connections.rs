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

use super::check::Source;
use super::error::ConfigError;
use super::raw::RawServer;

/// Default `server.header_read_timeout_ms`: 10 s for a whole request head.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `server.body_read_timeout_ms`: 30 s for a whole request body (1 MiB at 35 KB/s).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `server.idle_timeout_ms`: 60 s of keep-alive between two requests.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `server.write_timeout_ms`: 30 s without any progress writing a response.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `server.max_connections`: open connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Largest accepted value of each of the four timeouts: 1 hour.
pub const MAX_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);
/// Largest accepted `server.max_connections`.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;

/// The validated connection bounds of `[server]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request head must arrive whole within this time, counted from the connection's
    /// accept (first request) or from the first byte of the head (later requests); else the
    /// connection is closed. Default [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// A request body must arrive whole within this time once weir starts reading it; else
    /// the request gets 408 and the connection is closed. Default
    /// [`DEFAULT_BODY_READ_TIMEOUT`].
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after this time.
    /// Default [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// A response write (a stream's chunk included) that makes no progress for this long (the
    /// client stopped reading) closes the connection, which ends the request and releases
    /// what it holds. Default [`DEFAULT_WRITE_TIMEOUT`].
    pub write_timeout: Duration,
    /// Connections each listener holds at once; beyond it a new connection is closed as soon
    /// as it is accepted. Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Validates the connection bounds of `[server]`.
pub(crate) fn build(src: Source<'_>, raw: &RawServer) -> Result<ConnectionLimits, ConfigError> {
    let timeout = |value, default: Duration, key| -> Result<Duration, ConfigError> {
        src.in_range_or(
            value,
            1..=MAX_CONNECTION_TIMEOUT.as_millis() as u64,
            default.as_millis() as u64,
            key,
        )
        .map(Duration::from_millis)
    };
    Ok(ConnectionLimits {
        header_read_timeout: timeout(
            raw.header_read_timeout_ms.as_ref(),
            DEFAULT_HEADER_READ_TIMEOUT,
            "server.header_read_timeout_ms",
        )?,
        body_read_timeout: timeout(
            raw.body_read_timeout_ms.as_ref(),
            DEFAULT_BODY_READ_TIMEOUT,
            "server.body_read_timeout_ms",
        )?,
        idle_timeout: timeout(
            raw.idle_timeout_ms.as_ref(),
            DEFAULT_IDLE_TIMEOUT,
            "server.idle_timeout_ms",
        )?,
        write_timeout: timeout(
            raw.write_timeout_ms.as_ref(),
            DEFAULT_WRITE_TIMEOUT,
            "server.write_timeout_ms",
        )?,
        max_connections: src.in_range_or(
            raw.max_connections.as_ref(),
            1..=MAX_MAX_CONNECTIONS as u64,
            DEFAULT_MAX_CONNECTIONS as u64,
            "server.max_connections",
        )? as usize,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use toml::Spanned;

    use super::*;

    fn src(text: &str) -> Source<'_> {
        Source {
            file: Path::new("w.toml"),
            text,
        }
    }

    #[test]
    fn nothing_set_gives_the_defaults() {
        let limits = build(src(""), &RawServer::default());
        assert_eq!(limits, Ok(ConnectionLimits::default()));
        let limits = ConnectionLimits::default();
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.body_read_timeout, Duration::from_secs(30));
        assert_eq!(limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(limits.write_timeout, Duration::from_secs(30));
        assert_eq!(limits.max_connections, 10_000);
    }

    #[test]
    fn each_bound_is_range_checked_under_its_own_key() {
        let bad = |v| Some(Spanned::new(0..1, v));
        let cases = [
            (
                RawServer {
                    header_read_timeout_ms: bad(0),
                    ..RawServer::default()
                },
                "server.header_read_timeout_ms",
            ),
            (
                RawServer {
                    body_read_timeout_ms: bad(3_600_001),
                    ..RawServer::default()
                },
                "server.body_read_timeout_ms",
            ),
            (
                RawServer {
                    idle_timeout_ms: bad(0),
                    ..RawServer::default()
                },
                "server.idle_timeout_ms",
            ),
            (
                RawServer {
                    write_timeout_ms: bad(0),
                    ..RawServer::default()
                },
                "server.write_timeout_ms",
            ),
            (
                RawServer {
                    max_connections: bad(0),
                    ..RawServer::default()
                },
                "server.max_connections",
            ),
        ];
        for (raw, key) in cases {
            let error = build(src("x"), &raw).map_err(|e| (e.key, e.message));
            assert!(
                matches!(&error, Err((k, m)) if k == key && m.contains("must be between")),
                "{key}: {error:?}"
            );
        }
        let raw = RawServer {
            header_read_timeout_ms: Some(Spanned::new(0..1, 1500)),
            max_connections: Some(Spanned::new(0..1, 3)),
            ..RawServer::default()
        };
        let limits = build(src("x"), &raw);
        assert_eq!(
            limits,
            Ok(ConnectionLimits {
                header_read_timeout: Duration::from_millis(1500),
                max_connections: 3,
                ..ConnectionLimits::default()
            })
        );
    }
}
