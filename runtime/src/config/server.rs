//! `[server]`: the public and admin listeners (who may reach the admin one), request body
//! cap, client-connection bounds (`connections.rs`), shutdown drain, log format.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use toml::Spanned;

use super::check::{EnvLookup, Source};
use super::connections::{self, ConnectionLimits};
use super::error::ConfigError;
use super::hosts::HostName;
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
    /// Hosts the admin listener answers to (its requests' `Host`) besides `localhost`,
    /// loopback addresses and the listener's own address; empty by default.
    pub admin_allowed_hosts: Vec<HostName>,
    /// Cap on a request body in bytes, 1 to [`LARGEST_MAX_BODY_BYTES`] (default
    /// [`DEFAULT_MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
    /// Client-connection timeouts and the connection cap.
    pub connections: ConnectionLimits,
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
            admin_allowed_hosts: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            connections: ConnectionLimits::default(),
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
            .field("admin_allowed_hosts", &self.admin_allowed_hosts)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("connections", &self.connections)
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
    if admin_token.is_none()
        && let Some(addr) = &raw.admin_listen
        && !admin_listen.ip().is_loopback()
    {
        return Err(src.error(
            addr.span(),
            "server.admin_listen",
            exposed_admin_message(admin_listen),
        ));
    }
    let admin_allowed_hosts = allowed_hosts(src, raw.admin_allowed_hosts.as_ref())?;
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
        admin_allowed_hosts,
        max_body_bytes,
        connections: connections::build(src, raw)?,
        drain_timeout: Duration::from_millis(drain_timeout_ms),
        log_format,
    })
}

/// Why an admin listener on `addr` (not a loopback address) without a token is refused.
pub fn exposed_admin_message(addr: SocketAddr) -> String {
    format!(
        "{addr} is not a loopback address, and the admin API (reload, cache wipe, config, \
         traffic) has no token: set `server.admin_token_env` to the name of an environment \
         variable holding a bearer token, or listen on 127.0.0.1 / [::1]"
    )
}

/// `server.admin_allowed_hosts`: each a bare host name or IP address, no port or scheme.
fn allowed_hosts(
    src: Source<'_>,
    value: Option<&Spanned<Vec<Spanned<String>>>>,
) -> Result<Vec<HostName>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .get_ref()
        .iter()
        .map(|entry| {
            HostName::parse(entry.get_ref()).ok_or_else(|| {
                src.error(
                    entry.span(),
                    "server.admin_allowed_hosts",
                    format!(
                        "expected a host name like \"weir.internal\" or an IP address, without \
                         scheme, port or wildcard, got {:?}",
                        entry.get_ref()
                    ),
                )
            })
        })
        .collect()
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
    fn a_public_admin_listener_needs_a_token() {
        let token_env = |name: &str| (name == "ADMIN").then(|| "t0ken".to_owned());
        for addr in ["0.0.0.0:9901", "10.1.2.3:9901", "[::]:9901"] {
            let raw = RawServer {
                admin_listen: Some(Spanned::new(0..1, addr.to_owned())),
                ..RawServer::default()
            };
            let error = build(src("x"), &raw, &no_env).map_err(|e| (e.key, e.message));
            assert!(
                matches!(&error, Err((key, message)) if key == "server.admin_listen"
                    && message.contains("not a loopback address")
                    && message.contains("admin_token_env")),
                "{addr}: {error:?}"
            );
            let raw = RawServer {
                admin_token_env: Some(Spanned::new(0..1, "ADMIN".to_owned())),
                ..raw
            };
            assert!(build(src("x"), &raw, &token_env).is_ok(), "{addr}");
        }
        for addr in ["127.0.0.1:9901", "127.0.0.2:0", "[::1]:9901"] {
            let raw = RawServer {
                admin_listen: Some(Spanned::new(0..1, addr.to_owned())),
                ..RawServer::default()
            };
            assert!(build(src("x"), &raw, &no_env).is_ok(), "{addr}");
        }
    }

    #[test]
    fn admin_allowed_hosts_are_bare_hosts_in_normal_form() {
        let hosts = |entries: &[&str]| RawServer {
            admin_allowed_hosts: Some(Spanned::new(
                0..1,
                entries
                    .iter()
                    .map(|e| Spanned::new(0..1, (*e).to_owned()))
                    .collect(),
            )),
            ..RawServer::default()
        };
        let settings = build(
            src("x"),
            &hosts(&["Weir.Internal", "10.0.0.5", "[fd00::1]"]),
            &no_env,
        );
        let Ok(settings) = settings else {
            panic!("{settings:?}");
        };
        assert_eq!(
            settings.admin_allowed_hosts,
            [
                HostName::Name("weir.internal".to_owned()),
                HostName::Ip("10.0.0.5".parse().unwrap()),
                HostName::Ip("fd00::1".parse().unwrap()),
            ]
        );
        let error = build(src("x"), &hosts(&["weir.internal:9901"]), &no_env)
            .map_err(|e| (e.key, e.message));
        assert!(
            matches!(&error, Err((key, message)) if key == "server.admin_allowed_hosts"
                && message.contains("without scheme, port or wildcard")),
            "{error:?}"
        );
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
