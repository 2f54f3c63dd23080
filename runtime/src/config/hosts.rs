//! Host names the admin listener answers to: the loopback ones always, others only when
//! listed in `server.admin_allowed_hosts`. One parser serves the config entries and the
//! `Host` headers of admin requests, so both compare in the same normal form.
//!
//! Why: a web page can point a name it controls at 127.0.0.1 (DNS rebinding) and then read
//! the admin API from the victim's browser as a same-origin site. The browser still sends the
//! attacker's name in `Host`, so accepting only known names stops it.

use std::net::IpAddr;

/// Longest host name accepted (the DNS limit).
const MAX_HOST_NAME_LEN: usize = 253;

/// A host in normal form: an IP address, or a lowercase DNS name without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum HostName {
    /// An IP literal (`127.0.0.1`, `[::1]`).
    Ip(IpAddr),
    /// A DNS name, lowercase, without a trailing dot.
    Name(String),
}

impl HostName {
    /// Parses a host without a port: an IPv4 address, an IPv6 address with or without
    /// brackets, or a DNS name (letters, digits, `-` and dots; any case, one trailing dot
    /// allowed). `None` for anything else.
    pub fn parse(text: &str) -> Option<HostName> {
        let unbracketed = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Some(HostName::Ip(ip));
        }
        let name = text.strip_suffix('.').unwrap_or(text);
        let valid = !name.is_empty()
            && name.len() <= MAX_HOST_NAME_LEN
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        valid.then(|| HostName::Name(name.to_ascii_lowercase()))
    }

    /// Parses the value of a `Host` header (or a URI authority): a host as in
    /// [`HostName::parse`] with an optional `:port`, which is ignored. An IPv6 address needs
    /// its brackets here (`[::1]:9901`).
    pub fn from_authority(value: &str) -> Option<HostName> {
        let host = if value.starts_with('[') {
            let end = value.find(']')?;
            let (host, rest) = value.split_at(end + 1);
            if !(rest.is_empty() || is_port(rest.strip_prefix(':')?)) {
                return None;
            }
            host
        } else {
            match value.rsplit_once(':') {
                Some((host, port)) if is_port(port) => host,
                Some(_) => return None,
                None => value,
            }
        };
        match HostName::parse(host)? {
            // An IPv6 literal without brackets cannot carry a port; `::1` alone is not valid
            // here (its last group would read as a port).
            HostName::Ip(IpAddr::V6(_)) if !host.starts_with('[') => None,
            parsed => Some(parsed),
        }
    }

    /// Whether this names the local machine by itself: `localhost` (and names under
    /// `.localhost`, which resolve to loopback by RFC 6761), 127.0.0.0/8 or `::1` (also in
    /// its IPv4-mapped form).
    pub fn is_loopback(&self) -> bool {
        match self {
            HostName::Ip(ip) => ip.to_canonical().is_loopback(),
            HostName::Name(name) => name == "localhost" || name.ends_with(".localhost"),
        }
    }
}

/// A port: 1 to 5 digits (an empty port, as in `host:`, is allowed by RFC 3986).
fn is_port(text: &str) -> bool {
    text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn name(text: &str) -> Option<HostName> {
        Some(HostName::Name(text.to_owned()))
    }

    #[test]
    fn host_headers_lose_their_port_and_keep_ipv6_brackets_apart() {
        let v4 = Some(HostName::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let v6 = Some(HostName::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(HostName::from_authority("127.0.0.1:9901"), v4);
        assert_eq!(HostName::from_authority("127.0.0.1"), v4);
        assert_eq!(HostName::from_authority("[::1]:9901"), v6);
        assert_eq!(HostName::from_authority("[::1]"), v6);
        assert_eq!(HostName::from_authority("::1"), None);
        assert_eq!(HostName::from_authority("[::1]x"), None);
        assert_eq!(HostName::from_authority("LocalHost.:80"), name("localhost"));
        assert_eq!(
            HostName::from_authority("evil.example"),
            name("evil.example")
        );
        assert_eq!(HostName::from_authority("evil.example:x"), None);
        assert_eq!(HostName::from_authority("a@b"), None);
        assert_eq!(HostName::from_authority(""), None);
    }

    #[test]
    fn loopback_names_and_addresses() {
        for host in [
            "localhost",
            "app.localhost",
            "127.0.0.1",
            "127.9.9.9",
            "[::1]",
            "::ffff:127.0.0.1",
        ] {
            assert!(
                HostName::parse(host).is_some_and(|h| h.is_loopback()),
                "{host}"
            );
        }
        for host in [
            "localhost.evil.example",
            "10.0.0.1",
            "0.0.0.0",
            "::",
            "weir",
        ] {
            assert!(
                !HostName::parse(host).is_some_and(|h| h.is_loopback()),
                "{host}"
            );
        }
    }

    #[test]
    fn config_entries_must_be_bare_hosts() {
        assert_eq!(HostName::parse("Weir.Internal"), name("weir.internal"));
        for bad in ["http://x", "x:80", "*.example", "a..b", "-a", "a b", ""] {
            assert_eq!(HostName::parse(bad), None, "{bad}");
        }
    }
}
