//! The identifier being validated, and the address policy applied to every peer a
//! validator connects to: unless private targets are allowed, anything that is not a
//! public unicast address (loopback, RFC 1918, ULA, link-local, CGNAT, multicast,
//! documentation and other special-purpose ranges, and IPv4-mapped forms) is refused.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ValidationError;

/// The identifier being validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A DNS name, never with a `*.` prefix (wildcards are validated on the base name).
    Dns(String),
    /// An IP address identifier (RFC 8738).
    Ip(IpAddr),
}

impl Target {
    /// The host as written in a URL authority (IPv6 literals in brackets).
    pub(crate) fn url_host(&self) -> String {
        match self {
            Self::Dns(name) => name.trim_end_matches('.').to_owned(),
            Self::Ip(IpAddr::V4(ip)) => ip.to_string(),
            Self::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Refuses `ip` with a [`ValidationError::Connection`] saying why, unless it is public
/// or `allow_private` is set.
pub(crate) fn check_address(ip: IpAddr, allow_private: bool) -> Result<(), ValidationError> {
    match refusal(ip, allow_private) {
        Some(message) => Err(ValidationError::Connection(message)),
        None => Ok(()),
    }
}

/// Why connecting to `ip` is refused under the policy, or `None` when it is allowed.
pub(crate) fn refusal(ip: IpAddr, allow_private: bool) -> Option<String> {
    if allow_private {
        return None;
    }
    non_public_reason(ip).map(|reason| format!("refusing to connect to {ip}: {reason} address"))
}

/// Why `ip` is not a public unicast address, or `None` when it is.
fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

/// Special-purpose IPv4 ranges (RFC 6890 and successors): network, prefix length, reason.
/// The first match wins, so narrower entries precede the ranges containing them.
const V4_RANGES: &[([u8; 4], u32, &str)] = &[
    ([0, 0, 0, 0], 8, "unspecified (\"this network\")"),
    ([10, 0, 0, 0], 8, "private (RFC 1918)"),
    ([100, 64, 0, 0], 10, "shared (CGNAT, RFC 6598)"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local"),
    ([172, 16, 0, 0], 12, "private (RFC 1918)"),
    ([192, 0, 0, 0], 24, "IETF protocol assignment"),
    ([192, 0, 2, 0], 24, "documentation"),
    ([192, 88, 99, 0], 24, "6to4 relay anycast"),
    ([192, 168, 0, 0], 16, "private (RFC 1918)"),
    ([198, 18, 0, 0], 15, "benchmarking"),
    ([198, 51, 100, 0], 24, "documentation"),
    ([203, 0, 113, 0], 24, "documentation"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([255, 255, 255, 255], 32, "broadcast"),
    ([240, 0, 0, 0], 4, "reserved"),
];

/// Special-purpose IPv6 ranges, as [`V4_RANGES`]. IPv4-mapped and NAT64 addresses are
/// handled separately (they are judged by the embedded IPv4 address).
const V6_RANGES: &[(u128, u32, &str)] = &[
    (0, 128, "unspecified"),
    (1, 128, "loopback"),
    (0, 96, "IPv4-compatible (deprecated)"),
    (0x0064_ff9b_0001 << 80, 48, "local-use NAT64"),
    (0x0100 << 112, 64, "discard-only"),
    (0x2001_0db8 << 96, 32, "documentation"),
    (0x2001 << 112, 23, "IETF protocol assignment"),
    (0x2002 << 112, 16, "6to4"),
    (0x3fff << 112, 20, "documentation"),
    (0xfc00 << 112, 7, "unique local (private)"),
    (0xfe80 << 112, 10, "link-local"),
    (0xfec0 << 112, 10, "site-local (deprecated)"),
    (0xff00 << 112, 8, "multicast"),
];

/// The NAT64 well-known prefix 64:ff9b::/96 (RFC 6052).
const NAT64_PREFIX: u128 = 0x0064_ff9b << 96;

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    V4_RANGES.iter().find_map(|&(net, len, reason)| {
        let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
        (bits & mask == u32::from_be_bytes(net) & mask).then_some(reason)
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4).map(|_| "IPv4-mapped non-public");
    }
    let bits = u128::from(ip);
    if bits >> 32 == NAT64_PREFIX >> 32 {
        // Truncation intended: the low 32 bits are the embedded IPv4 address.
        let embedded = Ipv4Addr::from(bits as u32);
        return v4_reason(embedded).map(|_| "NAT64-embedded non-public");
    }
    V6_RANGES.iter().find_map(|&(net, len, reason)| {
        let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
        (bits & mask == net & mask).then_some(reason)
    })
}

/// The reverse-mapping name of `ip` (RFC 8738 §6 SNI for tls-alpn-01), e.g.
/// `1.0.0.127.in-addr.arpa` or the nibble form under `ip6.arpa`, without trailing dot.
pub(crate) fn reverse_dns_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
            name.push_str("ip6.arpa");
            name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        non_public_reason(s.parse().unwrap()).is_some()
    }

    #[test]
    fn non_public_addresses_are_refused() {
        for s in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.2.5",
            "192.168.1.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::192.168.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(refused(s), "{s} should be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.3.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ] {
            assert!(!refused(s), "{s} should be allowed");
        }
    }

    #[test]
    fn check_address_honours_allow_private() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let err = check_address(lo, false).unwrap_err();
        assert!(matches!(&err, ValidationError::Connection(m) if m.contains("loopback")));
        assert!(check_address(lo, true).is_ok());
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_dns_name("127.0.0.1".parse().unwrap()),
            "1.0.0.127.in-addr.arpa"
        );
        assert_eq!(
            reverse_dns_name("2001:db8::567:89ab".parse().unwrap()),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn url_hosts() {
        assert_eq!(Target::Dns("example.com".into()).url_host(), "example.com");
        assert_eq!(Target::Ip("::1".parse().unwrap()).url_host(), "[::1]");
        assert_eq!(
            Target::Ip("10.0.0.1".parse().unwrap()).url_host(),
            "10.0.0.1"
        );
    }
}
