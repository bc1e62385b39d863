//! PROXY protocol headers sent to a backend before anything else, carrying the real client address.
//!
//! Encoding is done by the `ppp` crate (the HAProxy protocol implementation used across the Rust
//! ecosystem); this module only picks the version and normalises the address families.

use crate::config::ProxyProtocolVersion;
use std::net::{IpAddr, SocketAddr};

/// IPv4 clients of a dual-stack listener appear as IPv4-mapped IPv6 addresses; report them as IPv4.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// Gives both addresses the same family (a header carries one), preferring IPv4 when both can be.
fn same_family(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    let (c, l) = (unmap(client), unmap(local));
    let to_v6 = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        v6 => v6,
    };
    if c.is_ipv4() == l.is_ipv4() {
        (c, l)
    } else {
        (to_v6(c), to_v6(l))
    }
}

/// The header announcing a TCP connection from `client` to the proxy's `local` address.
pub fn header(version: ProxyProtocolVersion, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    match version {
        ProxyProtocolVersion::V1 => ppp::v1::Addresses::from((client, local))
            .to_string()
            .into_bytes(),
        ProxyProtocolVersion::V2 => {
            // Building only fails when a TLV payload overflows the length field; we add none.
            ppp::v2::Builder::with_addresses(
                ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                ppp::v2::Protocol::Stream,
                (client, local),
            )
            .build()
            .unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_header_names_client_and_proxy() {
        let h = header(
            ProxyProtocolVersion::V1,
            "203.0.113.7:51000".parse().unwrap(),
            "192.0.2.1:25565".parse().unwrap(),
        );
        assert_eq!(h, b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 25565\r\n");
    }

    #[test]
    fn v2_header_parses_back_to_the_client_address() {
        let client: SocketAddr = "203.0.113.7:51000".parse().unwrap();
        let h = header(
            ProxyProtocolVersion::V2,
            client,
            "[::ffff:192.0.2.1]:25565".parse().unwrap(),
        );
        assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
        let parsed = ppp::v2::Header::try_from(h.as_slice()).unwrap();
        match parsed.addresses {
            ppp::v2::Addresses::IPv4(a) => {
                assert_eq!(a.source_address.to_string(), "203.0.113.7");
                assert_eq!(a.source_port, 51000);
                assert_eq!(a.destination_address.to_string(), "192.0.2.1");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn mixed_families_become_ipv6() {
        let h = header(
            ProxyProtocolVersion::V2,
            "[2001:db8::1]:1".parse().unwrap(),
            "192.0.2.1:25565".parse().unwrap(),
        );
        let parsed = ppp::v2::Header::try_from(h.as_slice()).unwrap();
        assert!(matches!(parsed.addresses, ppp::v2::Addresses::IPv6(_)));
    }
}
