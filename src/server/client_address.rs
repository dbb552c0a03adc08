//! Which address a request comes from: the TCP peer, or, when the peer is a reverse proxy
//! the operator trusts (`[server] trusted_proxies`), the address that proxy forwarded in
//! `X-Forwarded-For` or, when `[server] forwarded_header` says so, in RFC 7239 `Forwarded`
//! (its `for=` parameters; only the chosen header is read). On a listener in `[server] proxy_protocol`, a connection from a
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
//! Pure: no I/O. Imports `config` (the header choice).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::ForwardedHeader;

/// The reverse proxies whose forwarding header (and, on a listener that expects one, PROXY
/// header) is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Arc<[IpNet]>,
    /// The header they name the client in.
    header: ForwardedHeader,
    /// Connections from these proxies begin with a PROXY protocol header.
    proxy_protocol: bool,
}

impl TrustedProxies {
    /// Trust the proxies in `networks` (none: every request's client is its TCP peer),
    /// which name the client in `header`.
    pub fn new(networks: &[IpNet], header: ForwardedHeader) -> Self {
        TrustedProxies {
            networks: networks.into(),
            header,
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
        // Every field of the header, in order, as one list; walked from its last hop.
        let fields = headers
            .get_all(match self.header {
                ForwardedHeader::XForwardedFor => "x-forwarded-for",
                ForwardedHeader::Forwarded => "forwarded",
            })
            .iter()
            .filter_map(|value| value.to_str().ok());
        let hops: Vec<Option<IpAddr>> = match self.header {
            ForwardedHeader::XForwardedFor => fields
                .flat_map(|value| value.split(','))
                .map(|hop| parse_node(hop.trim()))
                .collect(),
            ForwardedHeader::Forwarded => fields
                .flat_map(|value| split_unquoted(value, ','))
                .map(forwarded_for)
                .collect(),
        };
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(address) = *hop else {
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

/// One hop's address, optionally with a port: `192.0.2.7`, `192.0.2.7:4711`, `2001:db8::7`,
/// `[2001:db8::7]`, `[2001:db8::7]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let bracketed = node.strip_prefix('[').and_then(|n| n.strip_suffix(']'));
    bracketed
        .unwrap_or(node)
        .parse::<IpAddr>()
        .or_else(|_| node.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|address| address.to_canonical())
}

/// `text` split at `separator` where it is not inside a quoted string (RFC 9110
/// quoted-string, with `\` escapes).
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (at, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ if c == separator && !quoted => {
                parts.push(&text[start..at]);
                start = at + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The address in one `Forwarded` element's `for=` parameter (RFC 7239 §4, §6); `None`
/// when it has none, or names no address (`unknown`, an obfuscated `_name`, garbage).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = split_unquoted(element, ';').into_iter().find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim())
    })?;
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(quoted) => {
            let mut node = String::with_capacity(quoted.len());
            let mut characters = quoted.chars();
            while let Some(c) = characters.next() {
                node.extend(if c == '\\' {
                    characters.next()
                } else {
                    Some(c)
                });
            }
            parse_node(&node)
        }
        None => parse_node(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn proxies(networks: &[&str]) -> TrustedProxies {
        let networks: Vec<IpNet> = networks.iter().map(|n| n.parse().unwrap()).collect();
        TrustedProxies::new(&networks, ForwardedHeader::XForwardedFor)
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
    fn forwarded_names_the_client_in_its_for_parameters() {
        let networks: Vec<IpNet> = ["10.0.0.0/24", "2001:db8:ffff::/48"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        let trusted = TrustedProxies::new(&networks, ForwardedHeader::Forwarded);
        let client = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("forwarded", value.parse().unwrap());
            }
            trusted.client(peer("10.0.0.2"), &headers).ip().to_string()
        };
        assert_eq!(client(&["for=203.0.113.9"]), "203.0.113.9");
        assert_eq!(
            client(&["For=\"203.0.113.9:5123\";proto=https;by=10.0.0.2"]),
            "203.0.113.9"
        );
        assert_eq!(client(&["for=\"[2001:db8::9]\""]), "2001:db8::9");
        // A client's own element is only the start of the list; trusted hops are walked
        // through, over several fields too; a comma inside quotes splits nothing.
        assert_eq!(
            client(&[
                "for=198.51.100.66;host=\"a,b\", for=203.0.113.9",
                "for=10.0.0.7, for=\"[2001:db8:ffff::1]:443\""
            ]),
            "203.0.113.9"
        );
        // An element naming no address ends the walk at the last good one.
        assert_eq!(client(&["for=203.0.113.9, for=unknown"]), "10.0.0.2");
        assert_eq!(client(&["for=203.0.113.9, for=\"_hidden\""]), "10.0.0.2");
        assert_eq!(client(&["for=203.0.113.9, proto=https"]), "10.0.0.2");
        // An escaped quote does not end a quoted string (which would join the elements).
        assert_eq!(
            client(&["for=203.0.113.9, for=\"_a\\\"b\", for=10.0.0.7"]),
            "10.0.0.7"
        );
        assert_eq!(client(&["for=\"203.0.113.9"]), "10.0.0.2");
        // Only the chosen header is read.
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "203.0.113.9".parse().unwrap());
        assert_eq!(trusted.client(peer("10.0.0.2"), &headers), peer("10.0.0.2"));
        let forwarded = {
            let mut headers = HeaderMap::new();
            headers.append("forwarded", "for=203.0.113.9".parse().unwrap());
            headers
        };
        let x_forwarded_for = proxies(&["10.0.0.0/24"]);
        assert_eq!(
            x_forwarded_for.client(peer("10.0.0.2"), &forwarded),
            peer("10.0.0.2")
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
