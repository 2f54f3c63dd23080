//! `[server]`: the public and admin listeners (who may reach the admin one), request body
//! cap, client-connection bounds (`connections.rs`), shutdown drain, state directory, log
//! format.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use toml::de::DeValue;

use super::check::Source;
use super::connections::ConnectionLimits;
use super::error::ConfigError;
use super::hosts::HostName;
use super::value::{Int, Ms, Val, choices, env_var, mask, ms, path, read_str, serde_default};

/// Default public listener (`server.listen`): loopback only, so nothing is exposed by accident.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8080));

choices! {
    /// How log lines are written.
    pub enum LogFormat {
        /// One readable line per event. The default.
        Human = "human",
        /// One JSON object per line, for log shippers.
        Json = "json",
    }
}

/// The validated `[server]` table.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct ServerSettings {
    /// Where the public OpenAI-compatible API listens.
    #[serde(deserialize_with = "socket_addr", default = "listen")]
    pub listen: SocketAddr,
    /// Where `/admin/*` and `/metrics` listen (loopback by default); never the same address
    /// as [`Self::listen`].
    #[serde(deserialize_with = "socket_addr", default = "admin_listen")]
    pub admin_listen: SocketAddr,
    /// The bearer token the admin listener requires, read from [`Self::admin_token_env`] at
    /// load time; `None` when no variable is configured.
    #[serde(skip_deserializing, serialize_with = "mask")]
    pub admin_token: Option<String>,
    /// Name of the environment variable holding [`Self::admin_token`].
    #[serde(deserialize_with = "env_var", default)]
    pub admin_token_env: Option<String>,
    /// Hosts the admin listener answers to (its requests' `Host`) besides `localhost`,
    /// loopback addresses and the listener's own address.
    #[serde(deserialize_with = "host_names", default)]
    pub admin_allowed_hosts: Vec<HostName>,
    /// Cap on a request body, in bytes.
    #[serde(with = "Int::<1, { 64 << 20 }>", default = "Val::<{ 1 << 20 }>::int")]
    pub max_body_bytes: usize,
    /// Client-connection timeouts and the connection cap.
    #[serde(rename = "(connections)", default)]
    pub connections: ConnectionLimits,
    /// How long shutdown waits for in-flight requests (0: stop without draining).
    #[serde(rename = "drain_timeout_ms", with = "Ms::<0, 600_000>")]
    #[serde(default = "ms::<10_000>")]
    pub drain_timeout: Duration,
    /// Where durable state (the spend ledger, the job queue) lives, resolved; `None` keeps it
    /// in memory. Shown as [`Config::data_dir`](super::Config::data_dir).
    #[serde(deserialize_with = "path", skip_serializing, default)]
    pub data_dir: Option<PathBuf>,
    /// Log line format.
    #[serde(default)]
    pub log_format: LogFormat,
}

serde_default!(ServerSettings);

impl fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::masked::debug(self, "ServerSettings", f)
    }
}

fn listen() -> SocketAddr {
    DEFAULT_LISTEN
}

fn admin_listen() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 9901))
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    read_str(d, |text| {
        let expected = "expected a socket address like 127.0.0.1:8080 or [::1]:8080";
        text.parse()
            .map_err(|_| format!("{expected}, got `{text}`"))
    })
}

/// The hosts that parse; [`check`] reports the first that does not, at its position.
fn host_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HostName>, D::Error> {
    let hosts = Vec::<String>::deserialize(d)?;
    Ok(hosts.iter().filter_map(|h| HostName::parse(h)).collect())
}

/// The second pass over `[server]`: the two listeners, the admin token, the admin hosts and
/// the state directory.
pub(crate) fn check(server: &mut ServerSettings, src: &Source<'_>) -> Result<(), ConfigError> {
    let (listen, admin_listen) = (server.listen, server.admin_listen);
    if admin_listen == listen && listen.port() != 0 {
        // Both defaults differ, so at least one of the two was written: point at it.
        let written = ["server.admin_listen", "server.listen"].map(|k| src.written(k));
        let at = if written[0] {
            "server.admin_listen"
        } else {
            "server.listen"
        };
        let message = format!(
            "expected an address other than `server.listen`; both are {listen}, and the admin \
             API needs a listener of its own"
        );
        return Err(src.error_at(src.span(at), "server.admin_listen", message));
    }
    if let Some(var) = &server.admin_token_env {
        let purpose = "the bearer token for the admin listener";
        server.admin_token = Some(src.secret("server.admin_token_env", var, purpose)?);
    }
    let exposed = !admin_listen.ip().is_loopback() && src.written("server.admin_listen");
    if server.admin_token.is_none() && exposed {
        return Err(src.error("server.admin_listen", exposed_admin_message(admin_listen)));
    }
    let hosts = match src.find("server.admin_allowed_hosts") {
        Some(DeValue::Array(hosts)) => hosts.as_ref(),
        _ => &[],
    };
    for host in hosts {
        let text = host.get_ref().as_str().unwrap_or_default();
        if HostName::parse(text).is_none() {
            let message = format!(
                "expected a host name like \"weir.internal\" or an IP address, without scheme, \
                 port or wildcard, got {text:?}"
            );
            return Err(src.error_at(host.span(), "server.admin_allowed_hosts", message));
        }
    }
    let empty = "expected a directory path, got an empty string; leave the key out to keep \
                 state in memory";
    src.path("server.data_dir", &mut server.data_dir, empty)
}

/// Why an admin listener on `addr` (not a loopback address) without a token is refused.
pub fn exposed_admin_message(addr: SocketAddr) -> String {
    format!(
        "{addr} is not a loopback address, and the admin API (reload, cache wipe, config, \
         traffic) has no token: set `server.admin_token_env` to the name of an environment \
         variable holding a bearer token, or listen on 127.0.0.1 / [::1]"
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    const ROUTE: &str = "[targets.t]\nbase_url = \"http://h\"\n[[routes]]\nmodel = \"m\"\n\
                         targets = [\"t\"]\n";

    fn server(table: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ServerSettings, String> {
        let text = format!("[server]\n{table}\n{ROUTE}");
        Config::parse(&text, Path::new("w.toml"), env)
            .map(|c| c.server)
            .map_err(|e| e.to_string())
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn an_empty_table_gives_the_defaults() {
        assert_eq!(server("", &no_env), Ok(ServerSettings::default()));
        let settings = ServerSettings::default();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.admin_listen.to_string(), "127.0.0.1:9901");
        assert_eq!(settings.max_body_bytes, 1_048_576);
        assert_eq!(settings.drain_timeout, Duration::from_secs(10));
        assert_eq!(settings.log_format, LogFormat::Human);
    }

    #[test]
    fn listen_and_admin_listen_must_differ() {
        let error = server("admin_listen = \"127.0.0.1:8080\"", &no_env);
        assert_eq!(
            error.err().as_deref(),
            Some(
                "w.toml:2:16: server.admin_listen: expected an address other than \
                 `server.listen`; both are 127.0.0.1:8080, and the admin API needs a listener \
                 of its own"
            )
        );
        // Port 0 asks the OS for a free port each time, so the two never clash.
        let zero = server(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"",
            &no_env,
        );
        assert!(zero.is_ok(), "{zero:?}");
    }

    #[test]
    fn a_public_admin_listener_needs_a_token() {
        let token_env = |name: &str| (name == "ADMIN").then(|| "t0ken".to_owned());
        for addr in ["0.0.0.0:9901", "10.1.2.3:9901", "[::]:9901"] {
            let table = format!("admin_listen = \"{addr}\"");
            let error = server(&table, &no_env).err().unwrap_or_default();
            assert!(
                error.contains("server.admin_listen: ")
                    && error.contains("not a loopback address")
                    && error.contains("admin_token_env"),
                "{addr}: {error}"
            );
            let table = format!("{table}\nadmin_token_env = \"ADMIN\"");
            assert!(server(&table, &token_env).is_ok(), "{addr}");
        }
        for addr in ["127.0.0.1:9901", "127.0.0.2:0", "[::1]:9901"] {
            let table = format!("admin_listen = \"{addr}\"");
            assert!(server(&table, &no_env).is_ok(), "{addr}");
        }
    }

    #[test]
    fn admin_allowed_hosts_are_bare_hosts_in_normal_form() {
        let table = "admin_allowed_hosts = [\"Weir.Internal\", \"10.0.0.5\", \"[fd00::1]\"]";
        let hosts = server(table, &no_env).map(|s| s.admin_allowed_hosts);
        let v4 = std::net::Ipv4Addr::new(10, 0, 0, 5);
        let v6 = std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
        assert_eq!(
            hosts,
            Ok(vec![
                HostName::Name("weir.internal".to_owned()),
                HostName::Ip(v4.into()),
                HostName::Ip(v6.into()),
            ])
        );
        let error = server("admin_allowed_hosts = [\"weir.internal:9901\"]", &no_env);
        let error = error.err().unwrap_or_default();
        assert!(
            error.starts_with("w.toml:2:24: server.admin_allowed_hosts: ")
                && error.contains("without scheme, port or wildcard"),
            "{error}"
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
