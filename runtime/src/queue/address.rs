//! Which IP addresses a callback may reach: every address falls in one class.
//!
//! - [`Class::Public`]: globally routable unicast; allowed (for an allow-listed host).
//! - [`Class::Private`]: loopback, RFC 1918, CGNAT, unique-local, benchmarking and other
//!   non-global unicast ranges; allowed only with `jobs.callback_allow_private`.
//! - [`Class::Forbidden`]: never a callback receiver, whatever the config: unspecified
//!   (`0.0.0.0/8`, `::`), link-local (`169.254/16`, `fe80::/10`: cloud metadata and
//!   credential endpoints live there), the IPv6 metadata address `fd00:ec2::254`,
//!   multicast, broadcast, the reserved `240/4` and the documentation ranges (never assigned
//!   to a host).
//!
//! Why classify rather than ask `is_global`: the standard library's `is_global` is unstable,
//! and the embedded-IPv4 forms (mapped `::ffff:a.b.c.d`, translated, NAT64 `64:ff9b::/96`,
//! 6to4 `2002::/16`) must take the class of the IPv4 address they carry, or
//! `::ffff:127.0.0.1` would pass as public. The rest of IPv6 tunnels (Teredo, the whole
//! `2001::/23` block) are private: their reach cannot be told from the address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a callback may do with an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Globally routable unicast.
    Public,
    /// Non-global unicast (the range named); needs `jobs.callback_allow_private`.
    Private(&'static str),
    /// Never a callback receiver (the range named).
    Forbidden(&'static str),
}

/// The class of `ip`.
pub fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// `ip` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) turned into its IPv4 address:
/// both reach the same host.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => Class::Forbidden("unspecified (0.0.0.0/8)"),
        (127, _, _) => Class::Private("loopback (127.0.0.0/8)"),
        (10, _, _) => Class::Private("private (10.0.0.0/8)"),
        (172, 16..=31, _) => Class::Private("private (172.16.0.0/12)"),
        (192, 168, _) => Class::Private("private (192.168.0.0/16)"),
        (100, 64..=127, _) => Class::Private("shared address space (100.64.0.0/10)"),
        (169, 254, _) => Class::Forbidden("link-local (169.254.0.0/16, cloud metadata)"),
        (192, 0, 0) => Class::Private("IETF protocol assignments (192.0.0.0/24)"),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => {
            Class::Forbidden("documentation (RFC 5737)")
        }
        (192, 88, 99) => Class::Private("6to4 relay anycast (192.88.99.0/24)"),
        (198, 18..=19, _) => Class::Private("benchmarking (198.18.0.0/15)"),
        (224..=239, _, _) => Class::Forbidden("multicast (224.0.0.0/4)"),
        _ if ip.is_broadcast() => Class::Forbidden("broadcast (255.255.255.255)"),
        (240..=255, _, _) => Class::Forbidden("reserved (240.0.0.0/4)"),
        _ => Class::Public,
    }
}

/// The AWS instance-metadata service's IPv6 address.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

fn classify_v6(ip: Ipv6Addr) -> Class {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if ip.is_unspecified() {
        return Class::Forbidden("unspecified (::)");
    }
    if ip.is_loopback() {
        return Class::Private("loopback (::1)");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if ip == METADATA_V6 {
        return Class::Forbidden("cloud metadata (fd00:ec2::254)");
    }
    match s {
        // IPv4-translated (::ffff:0:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) reach the IPv4
        // address they carry.
        [0, 0, 0, 0, 0xffff, 0, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            classify_v4(embedded(hi, lo))
        }
        // IPv4-compatible (::a.b.c.d), deprecated since 2006.
        [0, 0, 0, 0, 0, 0, _, _] => Class::Private("IPv4-compatible (::/96)"),
        [0x64, 0xff9b, 1, ..] => Class::Private("NAT64 local-use (64:ff9b:1::/48)"),
        [0x100, 0, 0, 0, ..] => Class::Private("discard-only (100::/64)"),
        // 6to4 (2002:aabb:ccdd::/48) reaches the IPv4 address aa.bb.cc.dd.
        [0x2002, hi, lo, ..] => match classify_v4(embedded(hi, lo)) {
            Class::Public => Class::Public,
            _ => Class::Private("6to4 of a non-public IPv4 address (2002::/16)"),
        },
        [0x2001, 0xdb8, ..] => Class::Forbidden("documentation (2001:db8::/32)"),
        [0x2001, 0..=0x1ff, ..] => Class::Private("IETF protocol assignments (2001::/23)"),
        [0x3fff, 0..=0x0fff, ..] => Class::Forbidden("documentation (3fff::/20)"),
        [first, ..] if first & 0xfe00 == 0xfc00 => Class::Private("unique local (fc00::/7)"),
        [first, ..] if first & 0xffc0 == 0xfe80 => Class::Forbidden("link-local (fe80::/10)"),
        [first, ..] if first & 0xffc0 == 0xfec0 => Class::Private("site-local (fec0::/10)"),
        [first, ..] if first & 0xff00 == 0xff00 => Class::Forbidden("multicast (ff00::/8)"),
        _ => Class::Public,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(text: &str) -> Class {
        classify(text.parse().unwrap())
    }

    fn is_private(text: &str) -> bool {
        matches!(class(text), Class::Private(_))
    }

    fn is_forbidden(text: &str) -> bool {
        matches!(class(text), Class::Forbidden(_))
    }

    #[test]
    fn public_unicast_is_public() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "169.255.0.1",
            "192.167.255.255",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:200::1",
        ] {
            assert_eq!(class(ip), Class::Public, "{ip}");
        }
    }

    #[test]
    fn loopback_private_and_other_non_global_unicast_need_the_opt_in() {
        for ip in [
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "192.168.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.170",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.255",
            "::1",
            "fc00::1",
            "fd12:3456:789a::1",
            "fec0::1",
            "2001::1",
            "2001:1ff::1",
            "100::1",
            "64:ff9b:1::1",
            "::7f00:1",
            "2002:7f00:1::1",
            "2002:a00:1::",
        ] {
            assert!(is_private(ip), "{ip}: {:?}", class(ip));
        }
    }

    #[test]
    fn unspecified_link_local_metadata_multicast_broadcast_reserved_and_documentation_are_forbidden()
     {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "169.254.0.1",
            "169.254.169.254",
            "169.254.170.2",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.2.10",
            "198.51.100.1",
            "203.0.113.7",
            "2001:db8::1",
            "3fff::1",
            "::",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "ff02::1",
            "ff0e::101",
        ] {
            assert!(is_forbidden(ip), "{ip}: {:?}", class(ip));
        }
    }

    #[test]
    fn embedded_ipv4_forms_take_the_class_of_their_ipv4_address() {
        for (v6, v4) in [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::ffff:10.1.2.3", "10.1.2.3"),
            ("::ffff:172.16.0.1", "172.16.0.1"),
            ("::ffff:192.168.1.1", "192.168.1.1"),
            ("::ffff:169.254.169.254", "169.254.169.254"),
            ("::ffff:100.64.0.1", "100.64.0.1"),
            ("::ffff:0.0.0.0", "0.0.0.0"),
            ("::ffff:224.0.0.1", "224.0.0.1"),
            ("::ffff:255.255.255.255", "255.255.255.255"),
            ("::ffff:0:127.0.0.1", "127.0.0.1"),
            ("::ffff:0:169.254.169.254", "169.254.169.254"),
            ("64:ff9b::127.0.0.1", "127.0.0.1"),
            ("64:ff9b::10.0.0.1", "10.0.0.1"),
            ("64:ff9b::169.254.169.254", "169.254.169.254"),
            ("::ffff:8.8.8.8", "8.8.8.8"),
        ] {
            assert_eq!(class(v6), class(v4), "{v6} vs {v4}");
        }
    }

    #[test]
    fn a_mapped_address_is_canonically_its_ipv4_address() {
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(canonical(v4), v4);
    }
}
