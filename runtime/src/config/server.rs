//! `[server]`: the public and admin listeners, request body cap, shutdown drain, log format.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use toml::Spanned;

use super::check::{EnvLookup, Source};
use super::error::ConfigError;
use super::raw::RawServer;

/// Default public listener (`server.listen`): loopback only, so nothing is exposed by accident.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8080));
/// Default admin listener (`server.admin_listen`): loopback only.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 9901));
/// Default cap on a request body (`server.max_body_bytes`): 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Largest accepted `server.max_body_bytes`: 64 MiB.
pub const LARGEST_MAX_BODY_BYTES: usize = 64 << 20;
/// Default graceful-shutdown drain (`server.drain_timeout_ms`): 10 s for in-flight requests.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted `server.drain_timeout_ms`: 10 minutes. 0 stops without draining.
pub const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line per event. The default.
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The validated `[server]` table.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Where the public OpenAI-compatible API listens (default [`DEFAULT_LISTEN`]).
    pub listen: SocketAddr,
    /// Where `/admin/*` and `/metrics` listen (default [`DEFAULT_ADMIN_LISTEN`]); never the
    /// same address as [`Self::listen`].
    pub admin_listen: SocketAddr,
    /// The bearer token the admin listener requires, read from [`Self::admin_token_env`] at
    /// load time; `None` when no variable is configured. Redacted in `Debug`.
    pub admin_token: Option<String>,
    /// Name of the environment variable holding [`Self::admin_token`].
    pub admin_token_env: Option<String>,
    /// Cap on a request body in bytes, 1 to [`LARGEST_MAX_BODY_BYTES`] (default
    /// [`DEFAULT_MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
    /// How long shutdown waits for in-flight requests, up to [`MAX_DRAIN_TIMEOUT`] (default
    /// [`DEFAULT_DRAIN_TIMEOUT`]).
    pub drain_timeout: Duration,
    /// Log line format (default [`LogFormat::Human`]).
    pub log_format: LogFormat,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: DEFAULT_LISTEN,
            admin_listen: DEFAULT_ADMIN_LISTEN,
            admin_token: None,
            admin_token_env: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            log_format: LogFormat::Human,
        }
    }
}

impl fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSettings")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("admin_token_env", &self.admin_token_env)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("drain_timeout", &self.drain_timeout)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// Validates `[server]`.
pub(crate) fn build(
    src: Source<'_>,
    raw: &RawServer,
    env: EnvLookup<'_>,
) -> Result<ServerSettings, ConfigError> {
    let listen = socket_addr(src, raw.listen.as_ref(), DEFAULT_LISTEN, "server.listen")?;
    let admin_listen = socket_addr(
        src,
        raw.admin_listen.as_ref(),
        DEFAULT_ADMIN_LISTEN,
        "server.admin_listen",
    )?;
    if admin_listen == listen && listen.port() != 0 {
        // Both defaults differ, so at least one of the two was written: point at it.
        let span = raw
            .admin_listen
            .as_ref()
            .or(raw.listen.as_ref())
            .map_or(0..0, Spanned::span);
        return Err(src.error(
            span,
            "server.admin_listen",
            format!(
                "expected an address other than `server.listen`; both are {listen}, and the \
                 admin API needs a listener of its own"
            ),
        ));
    }
    let (admin_token, admin_token_env) = match &raw.admin_token_env {
        Some(var) => {
            let token = src.secret(
                var,
                "server.admin_token_env",
                "the bearer token for the admin listener",
                env,
            )?;
            (Some(token), Some(var.get_ref().clone()))
        }
        None => (None, None),
    };
    let max_body_bytes = src.in_range_or(
        raw.max_body_bytes.as_ref(),
        1..=LARGEST_MAX_BODY_BYTES as u64,
        DEFAULT_MAX_BODY_BYTES as u64,
        "server.max_body_bytes",
    )? as usize;
    let drain_timeout_ms = src.in_range_or(
        raw.drain_timeout_ms.as_ref(),
        0..=MAX_DRAIN_TIMEOUT.as_millis() as u64,
        DEFAULT_DRAIN_TIMEOUT.as_millis() as u64,
        "server.drain_timeout_ms",
    )?;
    let log_format = src.choice(
        raw.log_format.as_ref(),
        &[("human", LogFormat::Human), ("json", LogFormat::Json)],
        LogFormat::Human,
        "server.log_format",
    )?;
    Ok(ServerSettings {
        listen,
        admin_listen,
        admin_token,
        admin_token_env,
        max_body_bytes,
        drain_timeout: Duration::from_millis(drain_timeout_ms),
        log_format,
    })
}

fn socket_addr(
    src: Source<'_>,
    value: Option<&Spanned<String>>,
    default: SocketAddr,
    key: &str,
) -> Result<SocketAddr, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    value.get_ref().parse().map_err(|_| {
        src.error(
            value.span(),
            key,
            format!(
                "expected a socket address like 127.0.0.1:8080 or [::1]:8080, got `{}`",
                value.get_ref()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn src(text: &str) -> Source<'_> {
        Source {
            file: Path::new("w.toml"),
            text,
        }
    }

    #[test]
    fn an_empty_table_gives_the_defaults() {
        let settings = build(src(""), &RawServer::default(), &no_env);
        assert_eq!(settings, Ok(ServerSettings::default()));
        let settings = ServerSettings::default();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.admin_listen.to_string(), "127.0.0.1:9901");
        assert_eq!(settings.max_body_bytes, 1_048_576);
        assert_eq!(settings.drain_timeout, Duration::from_secs(10));
    }

    #[test]
    fn listen_and_admin_listen_must_differ() {
        let raw = RawServer {
            admin_listen: Some(Spanned::new(0..1, "127.0.0.1:8080".to_owned())),
            ..RawServer::default()
        };
        let error = build(src("x"), &raw, &no_env).map_err(|e| (e.key, e.message));
        assert!(
            matches!(&error, Err((key, message)) if key == "server.admin_listen"
                && message.contains("both are 127.0.0.1:8080")),
            "{error:?}"
        );
        // Port 0 asks the OS for a free port each time, so the two never clash.
        let raw = RawServer {
            listen: Some(Spanned::new(0..1, "127.0.0.1:0".to_owned())),
            admin_listen: Some(Spanned::new(0..1, "127.0.0.1:0".to_owned())),
            ..RawServer::default()
        };
        assert!(build(src("x"), &raw, &no_env).is_ok());
    }

    #[test]
    fn debug_redacts_the_admin_token() {
        let settings = ServerSettings {
            admin_token: Some("s3cret".to_owned()),
            admin_token_env: Some("WEIR_ADMIN_TOKEN".to_owned()),
            ..ServerSettings::default()
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("WEIR_ADMIN_TOKEN"), "{debug}");
    }
}
