//! Which address a request comes from: the TCP peer, or, when the peer is a reverse proxy
//! the operator trusts (`[server] trusted_proxies`), the address that proxy forwarded in
//! `X-Forwarded-For`. On a listener in `[server] proxy_protocol`, a connection from a
//! trusted proxy begins with a PROXY protocol header (see `proxy_protocol`): the client it
//! names takes the TCP peer's place.
//!
//! The answer is what the per-client rate limit counts and what the audit records
//! (`details.client`). A header from a peer not in the list is ignored: anyone can send
//! one. Through a chain of trusted proxies, each appending the address it received from,
//! the client is the rightmost address not itself trusted; an entry that is not an address
//! ends the walk at the last good one, so a client cannot push a made-up address past a
//! proxy by sending its own header first.
//!
//! Pure: no I/O. Imports nothing of the crate.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The header a proxy appends the address it received from to (a list, oldest hop first).
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The reverse proxies whose `X-Forwarded-For` (and, on a listener that expects one, PROXY
/// header) is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Arc<[IpNet]>,
    /// Connections from these proxies begin with a PROXY protocol header.
    proxy_protocol: bool,
}

impl TrustedProxies {
    /// Trust the proxies in `networks` (none: every request's client is its TCP peer).
    pub fn new(networks: &[IpNet]) -> Self {
        TrustedProxies {
            networks: networks.into(),
            proxy_protocol: false,
        }
    }

    /// The same proxies, on a listener where their connections begin with a PROXY header
    /// when `expected`.
    pub fn with_proxy_protocol(mut self, expected: bool) -> Self {
        self.proxy_protocol = expected;
        self
    }

    /// Whether a connection from `peer` must begin with a PROXY header.
    pub fn expects_proxy_header(&self, peer: IpAddr) -> bool {
        self.proxy_protocol && self.trusts(peer.to_canonical())
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.networks
            .iter()
            .any(|network| network.contains(&address))
    }

    /// The client of a request from TCP peer `peer` with `headers`. A forwarded address
    /// comes without a port (0).
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        if self.networks.is_empty() || !self.trusts(peer.ip()) {
            return peer;
        }
        // Every X-Forwarded-For field, in order, as one list; walked from its last hop.
        let hops: Vec<&str> = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(address) = parse_hop(hop.trim()) else {
                break;
            };
            client = SocketAddr::new(address, 0);
            if !self.trusts(address) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`192.0.2.7:4711`,
/// `[2001:db8::7]:4711`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|address| address.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR, value.parse().unwrap());
        }
        headers
    }

    fn proxies(networks: &[&str]) -> TrustedProxies {
        let networks: Vec<IpNet> = networks.iter().map(|n| n.parse().unwrap()).collect();
        TrustedProxies::new(&networks)
    }

    fn peer(address: &str) -> SocketAddr {
        SocketAddr::new(address.parse().unwrap(), 40000)
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let forwarded = headers(&["203.0.113.9"]);
        let client = TrustedProxies::default().client(peer("10.0.0.2"), &forwarded);
        assert_eq!(client, peer("10.0.0.2"));
        // Nor from a peer outside the list.
        let client = proxies(&["10.0.0.0/24"]).client(peer("198.51.100.1"), &forwarded);
        assert_eq!(client, peer("198.51.100.1"));
    }

    #[test]
    fn the_client_is_the_last_address_not_a_trusted_proxy() {
        let trusted = proxies(&["10.0.0.0/24", "2001:db8:ffff::/48"]);
        let client = |values: &[&str]| trusted.client(peer("10.0.0.2"), &headers(values)).ip();
        assert_eq!(
            client(&["203.0.113.9"]),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // A client's own header is only the start of the list: the proxy's entry wins.
        assert_eq!(
            client(&["198.51.100.66, 203.0.113.9"]),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // A chain of trusted proxies is walked through, over several fields too.
        assert_eq!(
            client(&[
                "198.51.100.66, 203.0.113.9",
                "10.0.0.7, [2001:db8:ffff::1]:443"
            ]),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client(&["203.0.113.9:5123"]),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // All hops trusted: the first.
        assert_eq!(
            client(&["10.0.0.9, 10.0.0.8"]),
            "10.0.0.9".parse::<IpAddr>().unwrap()
        );
        // No header: the proxy itself.
        assert_eq!(client(&[]), "10.0.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_malformed_entry_ends_the_walk_at_the_last_good_one() {
        let trusted = proxies(&["10.0.0.0/24"]);
        let client = |values: &[&str]| trusted.client(peer("10.0.0.2"), &headers(values)).ip();
        assert_eq!(client(&["unknown"]), "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            client(&["203.0.113.9, unknown, 10.0.0.5"]),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn only_trusted_peers_on_a_proxy_protocol_listener_send_a_header() {
        let trusted = proxies(&["10.0.0.0/24"]);
        assert!(!trusted.expects_proxy_header(peer("10.0.0.2").ip()));
        let trusted = trusted.with_proxy_protocol(true);
        assert!(trusted.expects_proxy_header(peer("10.0.0.2").ip()));
        assert!(trusted.expects_proxy_header(peer("::ffff:10.0.0.2").ip()));
        assert!(!trusted.expects_proxy_header(peer("198.51.100.1").ip()));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let trusted = proxies(&["10.0.0.0/24"]);
        let mapped = peer("::ffff:10.0.0.2");
        assert_eq!(
            trusted.client(mapped, &headers(&["203.0.113.9"])).ip(),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }
}
