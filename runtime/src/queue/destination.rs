//! Where a callback may go, checked at submission and again at every delivery, after DNS.
//!
//! A `callback_url` passes four gates:
//!
//! 1. **Form**: an absolute `http://` or `https://` URL without credentials.
//! 2. **Host**: the host is named in `jobs.callback_allow_hosts`; or, with
//!    `jobs.callback_allow_private`, it is `localhost` or an IP literal in a private range.
//!    A public IP literal or any other name must be listed.
//! 3. **Address**: every address the host resolves to is [`Class::Public`], or
//!    [`Class::Private`] with `jobs.callback_allow_private`; [`Class::Forbidden`] never
//!    (see [`super::address`]). A listed name is no exception: `localhost` in the allow-list
//!    still needs the opt-in, and a name that starts resolving to an internal address
//!    (DNS rebinding) is refused at delivery.
//! 4. **Not weir itself**: no address may be one of weir's own listeners (public or admin,
//!    as bound, so port 0 means the port the OS chose), whatever the opt-in. A wildcard bind
//!    (`0.0.0.0` / `::`) covers every local address on its port.
//!
//! Why resolve once here rather than let the HTTP client resolve: a name checked and then
//! resolved again by the client can answer differently the second time (time of check to
//! time of use). [`Destinations::resolve`] resolves once, checks every address, and the
//! deliverer connects to exactly those addresses.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;

use super::address::{Class, canonical, classify};
use crate::config::JobsSettings;

/// What a [`Lookup`] returns: the addresses of a host name and port.
pub type LookupFuture = BoxFuture<'static, io::Result<Vec<SocketAddr>>>;

/// Resolves a host name and port to socket addresses (DNS; tests substitute their own).
pub type Lookup = Arc<dyn Fn(String, u16) -> LookupFuture + Send + Sync>;

/// Why a `callback_url` (or one address it resolves to) is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallbackUrlError {
    /// Not an absolute `http://` or `https://` URL.
    #[error("`callback_url` must be an absolute http:// or https:// URL")]
    NotHttp,
    /// Credentials in the URL.
    #[error("`callback_url` must not carry credentials")]
    Credentials,
    /// Neither allow-listed nor (with the opt-in) a private literal or `localhost`.
    #[error(
        "`callback_url` host `{0}` is not in jobs.callback_allow_hosts (a private address or \
         `localhost` also needs jobs.callback_allow_private = true)"
    )]
    HostNotAllowed(String),
    /// A private address without the opt-in.
    #[error(
        "`callback_url` reaches {addr}, a {range} address: set jobs.callback_allow_private = \
         true to allow private addresses"
    )]
    Private {
        /// The address.
        addr: IpAddr,
        /// Its range.
        range: &'static str,
    },
    /// An address no callback may reach.
    #[error("`callback_url` reaches {addr}, a {range} address, which is never allowed")]
    Forbidden {
        /// The address.
        addr: IpAddr,
        /// Its range.
        range: &'static str,
    },
    /// One of weir's own listeners.
    #[error("`callback_url` reaches {0}, one of weir's own listeners, which is never allowed")]
    OwnListener(SocketAddr),
}

/// Why a host could not be turned into addresses to connect to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The URL, the host or an address it resolves to is refused.
    #[error(transparent)]
    Refused(#[from] CallbackUrlError),
    /// The name does not resolve (now).
    #[error("cannot resolve `{host}`: {source}")]
    Lookup {
        /// The host.
        host: String,
        /// Why.
        source: io::Error,
    },
}

/// A `callback_url`'s host and port, past the form and host gates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Lowercase, IPv6 brackets removed.
    pub host: String,
    /// The URL's port, or the scheme's.
    pub port: u16,
    /// The address, when the host is an IP literal.
    pub literal: Option<IpAddr>,
}

/// The callback destination policy: the `[jobs]` settings plus weir's bound listeners.
pub struct Destinations {
    /// Lowercase host names (or IP literals) a callback may name.
    allow_hosts: Vec<String>,
    /// `jobs.callback_allow_private`.
    allow_private: bool,
    /// weir's listeners as bound; empty until the server has bound them.
    listeners: OnceLock<Vec<SocketAddr>>,
    /// DNS.
    lookup: Lookup,
}

impl std::fmt::Debug for Destinations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destinations")
            .field("allow_hosts", &self.allow_hosts)
            .field("allow_private", &self.allow_private)
            .field("listeners", &self.listeners.get())
            .finish_non_exhaustive()
    }
}

/// The system resolver (through tokio's blocking pool).
fn system_lookup() -> Lookup {
    Arc::new(|host: String, port: u16| -> LookupFuture {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), port)).await?;
            Ok(addrs.collect())
        })
    })
}

impl Destinations {
    /// The policy of `settings`, resolving names with the system resolver.
    pub fn new(settings: &JobsSettings) -> Destinations {
        Destinations::with_lookup(settings, system_lookup())
    }

    /// The policy of `settings`, resolving names with `lookup`.
    pub fn with_lookup(settings: &JobsSettings, lookup: Lookup) -> Destinations {
        Destinations {
            allow_hosts: settings.callback_allow_hosts.clone(),
            allow_private: settings.callback_allow_private,
            listeners: OnceLock::new(),
            lookup,
        }
    }

    /// Records weir's listeners as bound (once; later calls are ignored).
    pub fn set_listeners(&self, listeners: &[SocketAddr]) {
        let _ = self.listeners.set(listeners.to_vec());
    }

    /// The form and host gates for `url`, and for an IP literal the address gates too.
    pub fn check_url(&self, url: &str) -> Result<Target, CallbackUrlError> {
        let uri: http::Uri = url.parse().map_err(|_| CallbackUrlError::NotHttp)?;
        self.check_uri(&uri)
    }

    /// [`Self::check_url`] of a parsed URL.
    pub fn check_uri(&self, uri: &http::Uri) -> Result<Target, CallbackUrlError> {
        let default_port = match uri.scheme_str() {
            Some("http") => 80,
            Some("https") => 443,
            _ => return Err(CallbackUrlError::NotHttp),
        };
        let authority = uri.authority().ok_or(CallbackUrlError::NotHttp)?;
        if authority.as_str().contains('@') {
            return Err(CallbackUrlError::Credentials);
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = authority.port_u16().unwrap_or(default_port);
        let literal = host.parse::<IpAddr>().ok();
        // With the opt-in, a host that can only be private passes without being listed.
        let private_by_name = match literal {
            Some(ip) => {
                self.check_addr(SocketAddr::new(ip, port))?;
                !matches!(classify(ip), Class::Public)
            }
            None => host == "localhost",
        };
        let allowed = self.allow_hosts.contains(&host) || (self.allow_private && private_by_name);
        if !allowed {
            return Err(CallbackUrlError::HostNotAllowed(host));
        }
        Ok(Target {
            host,
            port,
            literal,
        })
    }

    /// The address gates for one address a callback would connect to.
    pub fn check_addr(&self, addr: SocketAddr) -> Result<(), CallbackUrlError> {
        let ip = canonical(addr.ip());
        if self.is_own_listener(ip, addr.port()) {
            return Err(CallbackUrlError::OwnListener(addr));
        }
        match classify(ip) {
            Class::Public => Ok(()),
            Class::Private(_) if self.allow_private => Ok(()),
            Class::Private(range) => Err(CallbackUrlError::Private { addr: ip, range }),
            Class::Forbidden(range) => Err(CallbackUrlError::Forbidden { addr: ip, range }),
        }
    }

    /// Resolves `target` once and checks every address: all of them pass, or the target is
    /// refused. The addresses returned are the ones to connect to.
    pub async fn resolve(&self, target: &Target) -> Result<Vec<SocketAddr>, ResolveError> {
        let addrs = match target.literal {
            Some(ip) => vec![SocketAddr::new(ip, target.port)],
            None => (self.lookup)(target.host.clone(), target.port)
                .await
                .map_err(|source| ResolveError::Lookup {
                    host: target.host.clone(),
                    source,
                })?,
        };
        if addrs.is_empty() {
            return Err(ResolveError::Lookup {
                host: target.host.clone(),
                source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
            });
        }
        for addr in &addrs {
            self.check_addr(*addr)?;
        }
        Ok(addrs)
    }

    /// Whether `ip:port` reaches one of weir's listeners.
    fn is_own_listener(&self, ip: IpAddr, port: u16) -> bool {
        let Some(listeners) = self.listeners.get() else {
            return false;
        };
        listeners.iter().any(|listener| {
            if listener.port() != port {
                return false;
            }
            let bound = canonical(listener.ip());
            // Connecting to 0.0.0.0 or :: reaches the local host, so any listener on the port.
            if bound == ip || ip.is_unspecified() {
                return true;
            }
            bound.is_unspecified() && is_local(ip)
        })
    }
}

/// Whether `ip` is an address of this host: loopback, or one a socket can bind to.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow_private: bool, hosts: &[&str]) -> Destinations {
        let settings = JobsSettings {
            callback_allow_private: allow_private,
            callback_allow_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..JobsSettings::default()
        };
        Destinations::with_lookup(&settings, fake_dns())
    }

    /// `localhost` → 127.0.0.1 and ::1; `hooks.example.com` → a public address;
    /// `rebind.example.com` → one public and one private address; anything else fails.
    fn fake_dns() -> Lookup {
        Arc::new(|host: String, port: u16| -> LookupFuture {
            Box::pin(async move {
                let ips: &[&str] = match host.as_str() {
                    "localhost" => &["127.0.0.1", "::1"],
                    "hooks.example.com" => &["93.184.216.34"],
                    "rebind.example.com" => &["93.184.216.34", "10.0.0.7"],
                    _ => return Err(io::Error::new(io::ErrorKind::NotFound, "nxdomain")),
                };
                Ok(ips
                    .iter()
                    .map(|ip| SocketAddr::new(ip.parse().unwrap(), port))
                    .collect())
            })
        })
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_form_gate_wants_http_without_credentials() {
        let p = policy(true, &["hooks.example.com"]);
        assert_eq!(
            p.check_url("ftp://127.0.0.1/x"),
            Err(CallbackUrlError::NotHttp)
        );
        assert_eq!(p.check_url("/relative"), Err(CallbackUrlError::NotHttp));
        assert_eq!(p.check_url("not a url"), Err(CallbackUrlError::NotHttp));
        assert_eq!(
            p.check_url("http://user:pw@127.0.0.1/"),
            Err(CallbackUrlError::Credentials)
        );
    }

    #[test]
    fn without_the_opt_in_only_listed_hosts_and_public_addresses_pass() {
        let p = policy(false, &["hooks.example.com", "93.184.216.34"]);
        let target = p.check_url("https://HOOKS.example.com/weir").unwrap();
        assert_eq!(
            target,
            Target {
                host: "hooks.example.com".into(),
                port: 443,
                literal: None
            }
        );
        assert_eq!(
            p.check_url("http://93.184.216.34:8080/x").unwrap().port,
            8080
        );
        assert_eq!(
            p.check_url("http://1.1.1.1/x"),
            Err(CallbackUrlError::HostNotAllowed("1.1.1.1".into()))
        );
        assert_eq!(
            p.check_url("http://hooks.example.com.evil.test/"),
            Err(CallbackUrlError::HostNotAllowed(
                "hooks.example.com.evil.test".into()
            ))
        );
        assert_eq!(
            p.check_url("http://localhost:9000/x"),
            Err(CallbackUrlError::HostNotAllowed("localhost".into()))
        );
        for (url, ip) in [
            ("http://127.0.0.1:9000/hook", "127.0.0.1"),
            ("https://[::1]:8443/", "::1"),
            ("http://[::ffff:127.0.0.1]/", "127.0.0.1"),
            ("http://10.0.0.1/x", "10.0.0.1"),
        ] {
            assert!(
                matches!(p.check_url(url), Err(CallbackUrlError::Private { addr, .. }) if addr == ip.parse::<IpAddr>().unwrap()),
                "{url}: {:?}",
                p.check_url(url)
            );
        }
    }

    #[test]
    fn the_opt_in_admits_private_literals_and_localhost_but_never_forbidden_ranges() {
        let p = policy(true, &[]);
        for url in [
            "http://127.0.0.1:9000/hook",
            "https://[::1]:8443/",
            "http://localhost/x",
            "http://10.1.2.3/x",
            "http://[fd00::1]/x",
            "http://100.64.0.1/x",
        ] {
            assert!(p.check_url(url).is_ok(), "{url}: {:?}", p.check_url(url));
        }
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:169.254.169.254]/",
            "http://0.0.0.0:9000/",
            "http://[::]:9000/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[fe80::1]/",
        ] {
            assert!(
                matches!(p.check_url(url), Err(CallbackUrlError::Forbidden { .. })),
                "{url}: {:?}",
                p.check_url(url)
            );
        }
        // A public literal still has to be listed.
        assert_eq!(
            p.check_url("http://8.8.8.8/"),
            Err(CallbackUrlError::HostNotAllowed("8.8.8.8".into()))
        );
    }

    #[test]
    fn weir_s_own_listeners_are_refused_even_with_the_opt_in() {
        let p = policy(true, &["localhost"]);
        p.set_listeners(&[addr("127.0.0.1:8080"), addr("[::1]:9901")]);
        for url in [
            "http://127.0.0.1:8080/v1/jobs",
            "http://[::ffff:127.0.0.1]:8080/",
            "http://[::1]:9901/admin/reload",
        ] {
            assert!(
                matches!(p.check_url(url), Err(CallbackUrlError::OwnListener(_))),
                "{url}: {:?}",
                p.check_url(url)
            );
        }
        // Another loopback address on the port is another socket; another port is fine.
        assert!(p.check_url("http://127.0.0.2:8080/").is_ok());
        assert!(p.check_url("http://127.0.0.1:8081/").is_ok());
        assert!(p.check_url("http://[::1]:8080/").is_ok());
        // 0.0.0.0 reaches the local host: refused as unspecified and as the listener.
        assert_eq!(
            p.check_addr(addr("0.0.0.0:8080")),
            Err(CallbackUrlError::OwnListener(addr("0.0.0.0:8080")))
        );
    }

    #[test]
    fn a_wildcard_listener_covers_every_local_address_on_its_port() {
        let p = policy(true, &[]);
        p.set_listeners(&[addr("0.0.0.0:8080"), addr("[::]:9901")]);
        for target in [
            "127.0.0.1:8080",
            "127.0.0.5:8080",
            "[::1]:8080",
            "127.0.0.1:9901",
            "[::1]:9901",
            "[::ffff:127.0.0.1]:9901",
        ] {
            assert!(
                matches!(
                    p.check_addr(addr(target)),
                    Err(CallbackUrlError::OwnListener(_))
                ),
                "{target}"
            );
        }
        // Not an address of this host: another host, on the same port.
        assert!(p.check_addr(addr("93.184.216.34:8080")).is_ok());
        assert!(p.check_addr(addr("10.200.200.200:8080")).is_ok());
        assert!(p.check_addr(addr("127.0.0.1:8081")).is_ok());
    }

    #[tokio::test]
    async fn every_resolved_address_is_checked_after_dns() {
        let listed = policy(
            false,
            &["localhost", "hooks.example.com", "rebind.example.com"],
        );
        let target = listed.check_url("http://localhost:9000/").unwrap();
        assert!(matches!(
            listed.resolve(&target).await,
            Err(ResolveError::Refused(CallbackUrlError::Private { .. }))
        ));
        let target = listed.check_url("https://hooks.example.com/").unwrap();
        assert_eq!(
            listed.resolve(&target).await.unwrap(),
            [addr("93.184.216.34:443")]
        );
        // One bad address among good ones refuses the name.
        let target = listed.check_url("https://rebind.example.com/").unwrap();
        assert!(matches!(
            listed.resolve(&target).await,
            Err(ResolveError::Refused(CallbackUrlError::Private { .. }))
        ));
        let opted = policy(true, &[]);
        opted.set_listeners(&[addr("127.0.0.1:9901")]);
        let target = opted.check_url("http://localhost:9000/").unwrap();
        assert_eq!(
            opted.resolve(&target).await.unwrap(),
            [addr("127.0.0.1:9000"), addr("[::1]:9000")]
        );
        let target = opted
            .check_url("http://localhost:9901/admin/reload")
            .unwrap();
        assert!(matches!(
            opted.resolve(&target).await,
            Err(ResolveError::Refused(CallbackUrlError::OwnListener(_)))
        ));
        let unknown = policy(false, &["nowhere.example"]);
        let target = unknown.check_url("http://nowhere.example/").unwrap();
        assert!(matches!(
            unknown.resolve(&target).await,
            Err(ResolveError::Lookup { .. })
        ));
    }
}
