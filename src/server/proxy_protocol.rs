//! The PROXY protocol header (HAProxy's, versions 1 and 2) a TCP-level proxy sends before
//! the connection's own bytes, naming the client it accepted the connection from. A proxy
//! that forwards TLS untouched (as EST's client certificates and channel binding need) can
//! say who the client is only so; `[server] proxy_protocol` names the listeners whose
//! connections from `trusted_proxies` begin with one.
//!
//! [`read_source`] reads exactly the header, never a byte of what follows (the TLS
//! handshake), and leaves parsing to the `ppp` crate.
//!
//! Imports nothing of the crate.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Version 2's fixed signature, its first 12 bytes.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Version 1's first bytes.
const V1_PREFIX: &[u8] = b"PROXY ";

/// Version 1's longest header, CRLF included (the specification's figure).
const V1_MAX_LEN: usize = 107;

/// The longest version 2 address block and TLVs accepted (the wire allows 65,535; proxies
/// send addresses and a few TLVs, well under this).
const V2_MAX_PAYLOAD: usize = 4096;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection failed or closed before the header was complete.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// The connection does not begin with a PROXY header.
    #[error("the connection does not begin with a PROXY protocol header")]
    Missing,
    /// A version 1 header without its CRLF within 107 bytes.
    #[error("the PROXY v1 header is longer than 107 bytes")]
    V1TooLong,
    /// A version 2 header announcing more than [`V2_MAX_PAYLOAD`] bytes.
    #[error("the PROXY v2 header announces {0} bytes (at most {V2_MAX_PAYLOAD} are accepted)")]
    V2TooLong(usize),
    /// The header is not well-formed.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
}

/// Read the PROXY header at the start of `stream`: the client's address when the proxy
/// names one (a TCP over IPv4 or IPv6 connection it relayed), `None` when it says nothing
/// about a client (version 1 `UNKNOWN`, version 2 `LOCAL` — the proxy's own health checks —
/// or an address family other than IP).
pub async fn read_source<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    // Both versions are at least 12 bytes long (version 1's shortest, `PROXY UNKNOWN\r\n`,
    // is 15), so the first 12 can be read at once.
    let mut header = vec![0u8; V2_SIGNATURE.len()];
    stream.read_exact(&mut header).await?;
    if header == V2_SIGNATURE {
        let mut rest = [0u8; 4];
        stream.read_exact(&mut rest).await?;
        let length = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if length > V2_MAX_PAYLOAD {
            return Err(ProxyHeaderError::V2TooLong(length));
        }
        header.extend_from_slice(&rest);
        let start = header.len();
        header.resize(start + length, 0);
        stream.read_exact(&mut header[start..]).await?;
        let parsed = ppp::v2::Header::try_from(header.as_slice())
            .map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
        return Ok(match (parsed.command, parsed.addresses) {
            (ppp::v2::Command::Local, _) => None,
            (_, ppp::v2::Addresses::IPv4(a)) => Some(socket(a.source_address, a.source_port)),
            (_, ppp::v2::Addresses::IPv6(a)) => Some(socket(a.source_address, a.source_port)),
            (_, ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_)) => None,
        });
    }
    if !header.starts_with(V1_PREFIX) {
        return Err(ProxyHeaderError::Missing);
    }
    // Version 1 ends at its CRLF: read a byte at a time so nothing after it is consumed.
    while !header.ends_with(b"\r\n") {
        if header.len() == V1_MAX_LEN {
            return Err(ProxyHeaderError::V1TooLong);
        }
        header.push(stream.read_u8().await?);
    }
    let parsed = ppp::v1::Header::try_from(header.as_slice())
        .map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
    Ok(match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(socket(a.source_address, a.source_port)),
        ppp::v1::Addresses::Tcp6(a) => Some(socket(a.source_address, a.source_port)),
        ppp::v1::Addresses::Unknown => None,
    })
}

fn socket(address: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(address.into().to_canonical(), port)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `header` then `after` as a stream: the source read, and what is left unread.
    async fn read(header: &[u8], after: &[u8]) -> (Result<Option<SocketAddr>, String>, Vec<u8>) {
        let bytes = [header, after].concat();
        let mut stream = bytes.as_slice();
        let source = read_source(&mut stream).await.map_err(|e| e.to_string());
        (source, stream.to_vec())
    }

    fn v2(command: ppp::v2::Command, source: &str, destination: &str) -> Vec<u8> {
        let addresses: (SocketAddr, SocketAddr) =
            (source.parse().unwrap(), destination.parse().unwrap());
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | command,
            ppp::v2::Protocol::Stream,
            addresses,
        )
        .write_tlv(ppp::v2::Type::NoOp, &[0u8; 5])
        .unwrap()
        .build()
        .unwrap()
    }

    #[tokio::test]
    async fn version_1_names_the_client_and_nothing_after_it_is_read() {
        let tls = b"\x16\x03\x01\x00\x05hello";
        let (source, rest) = read(b"PROXY TCP4 203.0.113.9 10.0.0.1 51234 8443\r\n", tls).await;
        assert_eq!(source.unwrap(), Some("203.0.113.9:51234".parse().unwrap()));
        assert_eq!(rest, tls);
        let (source, rest) = read(b"PROXY TCP6 2001:db8::9 2001:db8::1 51234 8443\r\n", tls).await;
        assert_eq!(
            source.unwrap(),
            Some("[2001:db8::9]:51234".parse().unwrap())
        );
        assert_eq!(rest, tls);
        let (source, rest) = read(b"PROXY UNKNOWN\r\n", tls).await;
        assert_eq!(source.unwrap(), None);
        assert_eq!(rest, tls);
    }

    #[tokio::test]
    async fn version_2_names_the_client_with_tlvs_and_nothing_after_it_is_read() {
        let tls = b"\x16\x03\x01\x00\x05hello";
        let header = v2(
            ppp::v2::Command::Proxy,
            "203.0.113.9:51234",
            "10.0.0.1:8443",
        );
        let (source, rest) = read(&header, tls).await;
        assert_eq!(source.unwrap(), Some("203.0.113.9:51234".parse().unwrap()));
        assert_eq!(rest, tls);
        let header = v2(
            ppp::v2::Command::Proxy,
            "[::ffff:203.0.113.9]:5",
            "[::1]:8443",
        );
        let (source, _) = read(&header, tls).await;
        assert_eq!(source.unwrap(), Some("203.0.113.9:5".parse().unwrap()));
        // LOCAL: the proxy's own connection (a health check); no client named.
        let header = v2(
            ppp::v2::Command::Local,
            "203.0.113.9:51234",
            "10.0.0.1:8443",
        );
        let (source, rest) = read(&header, tls).await;
        assert_eq!(source.unwrap(), None);
        assert_eq!(rest, tls);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        // A TLS ClientHello where the header should be.
        let (source, _) = read(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00", b"").await;
        assert!(source.unwrap_err().contains("does not begin"));
        let (source, _) = read(b"GET / HTTP/1.1\r\n", b"").await;
        assert!(source.unwrap_err().contains("does not begin"));
        // Version 1 without its CRLF in 107 bytes, or with a bad address.
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        let (source, _) = read(&long, b"").await;
        assert!(source.unwrap_err().contains("longer than 107"));
        let (source, _) = read(b"PROXY TCP4 203.0.113.999 10.0.0.1 1 2\r\n", b"").await;
        assert!(source.unwrap_err().contains("malformed"));
        // Version 2 announcing more than accepted; cut short.
        let mut header = V2_SIGNATURE.to_vec();
        header.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let (source, _) = read(&header, b"").await;
        assert!(source.unwrap_err().contains("65535 bytes"));
        let full = v2(
            ppp::v2::Command::Proxy,
            "203.0.113.9:51234",
            "10.0.0.1:8443",
        );
        let (source, _) = read(&full[..full.len() - 1], b"").await;
        assert!(source.unwrap_err().contains("reading the PROXY header"));
        // A version 2 header whose addresses do not fit its family.
        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4]);
        let (source, _) = read(&bad, b"").await;
        assert!(source.unwrap_err().contains("malformed"));
    }
}
