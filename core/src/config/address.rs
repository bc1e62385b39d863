//! A backend address as configured: `host:port`, `[IPv6]:port`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A backend address as configured: a host (name or IP) and a port, resolved when dialled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendAddress {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl BackendAddress {
    /// Parses `host:port` (`[v6]:port` for IPv6 literals).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (host, port) = match s.strip_prefix('[') {
            Some(rest) => {
                let (inner, after) = rest
                    .split_once(']')
                    .ok_or_else(|| format!("{s:?} has an unclosed `[`"))?;
                if inner.contains('%') {
                    return Err(format!(
                        "{s:?}: an IPv6 address with a zone (`%`) cannot be dialled; use a global or \
                         unique-local address of the backend"
                    ));
                }
                if inner.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(format!(
                        "{s:?}: [{inner}] is not an IPv6 address (brackets are for IPv6 only)"
                    ));
                }
                let port = after.strip_prefix(':').ok_or_else(|| match after {
                    "" => format!(
                        "{s:?} is not [IPv6]:port (the port is missing, e.g. \"[{inner}]:25565\")"
                    ),
                    _ => format!("{s:?} is not [IPv6]:port ({after:?} after the `]`)"),
                })?;
                (inner, port)
            }
            None => {
                if let Some((scheme, rest)) = s.split_once("://") {
                    return Err(format!(
                        "{s:?}: an address is host:port, without a scheme (write {rest:?}, not \
                         {scheme}://)"
                    ));
                }
                let (host, port) = s
                    .rsplit_once(':')
                    .ok_or_else(|| format!("{s:?} is not host:port (the port is missing)"))?;
                if s.parse::<std::net::Ipv6Addr>().is_ok() {
                    return Err(format!("{s:?} is an IPv6 address without a port: write it in brackets with a port, e.g. \"[{s}]:25565\""));
                }
                if host.contains(':') {
                    return Err(format!("{s:?}: write IPv6 addresses as [addr]:port"));
                }
                (host, port)
            }
        };
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        // A host name (letters, digits, `-`, `.`, and `_` as Docker and SRV-style names have), an IPv4
        // address, or the IPv6 address checked above.
        let in_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if let Some(c) = host.chars().find(|&c| !in_name(c) && c != ':') {
            return Err(format!(
                "{s:?} has {c:?} in its host: a host is a name (letters, digits, `-`, `.`, `_`; an \
                 international name in its xn-- form) or an IP address"
            ));
        }
        if host.parse::<IpAddr>().is_err() {
            check_name_labels(s, host)?;
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?} has an invalid port {port:?} (1-65535)"))?;
        if port == 0 {
            return Err(format!("{s:?} has port 0"));
        }
        Ok(BackendAddress {
            host: host.to_owned(),
            port,
        })
    }

    /// Whether dialling this address reaches a proxy listening on `bind`: the same port, and the bind
    /// address itself, or a loopback or unspecified address when the proxy listens on every address. A
    /// backend that is the proxy makes every login dial the proxy again, in a loop that ends only when
    /// connections or file descriptors run out.
    pub fn is_bind(&self, bind: SocketAddr) -> bool {
        let local = bind.ip().to_canonical();
        let reaches = match self.host.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(ip) => {
                ip == local || (local.is_unspecified() && (ip.is_loopback() || ip.is_unspecified()))
            }
            // The one name that surely resolves to a loopback address.
            Err(_) => {
                let name = self.host.strip_suffix('.').unwrap_or(&self.host);
                name.eq_ignore_ascii_case("localhost")
                    && (local.is_unspecified() || local.is_loopback())
            }
        };
        self.port == bind.port() && reaches
    }
}

/// A host name's dot-separated labels: none empty (`a..b`, `.a`), none over 63 bytes, the name at most 253
/// (the limits of DNS, which a resolver would refuse only when the address is dialled). One trailing dot,
/// an absolute name, is allowed.
fn check_name_labels(s: &str, host: &str) -> Result<(), String> {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.split('.').any(str::is_empty) {
        return Err(format!(
            "{s:?} has an empty label in its host (a leading dot or two dots in a row)"
        ));
    }
    if let Some(label) = name.split('.').find(|l| l.len() > 63) {
        return Err(format!(
            "{s:?} has a label of {} characters in its host (at most 63): {label:?}",
            label.len()
        ));
    }
    if name.len() > 253 {
        return Err(format!(
            "{s:?} has a host of {} characters (at most 253)",
            name.len()
        ));
    }
    Ok(())
}

impl fmt::Display for BackendAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::*;

    #[test]
    fn bad_addresses_are_each_reported() {
        for bad in [
            "nohost",
            ":25565",
            "host:0",
            "host:99999",
            "::1:25565",
            "[::1:25565",
            "a b:1",
            "a]:1",
            "a\\u0007b:1", // a TOML escape: BEL
            "caf\u{e9}.example:1",
            "a/b:1",
            "[fe80::1%eth0]:1",
            "a..b:1",
            ".lobby:1",
            ".:1",
            "lobby..:1",
        ] {
            let e = server(&format!("domains = [\"a\"]\naddresses = [\"{bad}\"]")).unwrap_err();
            assert_eq!(keys(e), vec!["addresses"], "{bad}");
        }
        let e = BackendAddress::parse("lobby\u{1b}[2J:25565").unwrap_err();
        assert!(e.contains("has '\\u{1b}' in its host"), "{e}");
        let e = BackendAddress::parse("[fe80::1%eth0]:25565").unwrap_err();
        assert!(e.contains("with a zone (`%`)"), "{e}");
        let e = BackendAddress::parse("tcp://10.0.0.1:25565").unwrap_err();
        assert!(
            e.contains("without a scheme (write \"10.0.0.1:25565\""),
            "{e}"
        );
        let e = BackendAddress::parse("lobby..internal:25565").unwrap_err();
        assert!(e.contains("empty label"), "{e}");
        let long = "a".repeat(64);
        let e = BackendAddress::parse(&format!("{long}.internal:1")).unwrap_err();
        assert!(e.contains("a label of 64 characters"), "{e}");
        let e = BackendAddress::parse(&format!("{}aa:1", "a.".repeat(126))).unwrap_err();
        assert!(e.contains("a host of 254 characters"), "{e}");
        for good in [
            "lobby.internal.:25565",
            &format!("{}.internal:1", "a".repeat(63)),
            &format!("{}a:1", "a.".repeat(126)),
            "backend_1.internal:25565",
            "10.0.0.1:25565",
            "[::1]:1",
            "LOBBY-2:1",
        ] {
            assert!(BackendAddress::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn ipv6_addresses_are_bracketed_with_a_port() {
        let a = BackendAddress::parse("[::1]:25565").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 25565));
        for (bad, why) in [
            ("[::1]", "\"[::1]\" is not [IPv6]:port (the port is missing"),
            (
                "::1",
                "write it in brackets with a port, e.g. \"[::1]:25565\"",
            ),
            ("[::1", "\"[::1\" has an unclosed `[`"),
            ("[::1]:99999", "invalid port \"99999\""),
            ("[::1]:", "invalid port \"\""),
            ("[::1]25565", "\"25565\" after the `]`"),
        ] {
            let e = BackendAddress::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        // As a server file reports it.
        let e = server("domains = [\"a\"]\naddresses = [\"[::1]\"]").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["addresses"]);
        assert!(e.to_string().contains("the port is missing"), "{e}");
    }

    #[test]
    fn brackets_are_for_ipv6_addresses_only() {
        assert!(BackendAddress::parse("[::1]:25565").is_ok());
        let e = BackendAddress::parse("[zz]:1").unwrap_err();
        assert!(e.contains("not an IPv6 address"), "{e}");
    }
}
