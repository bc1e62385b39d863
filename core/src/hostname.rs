//! The host part of a handshake's server address: splitting off decorations and normalising for routing.
//!
//! Decorations are everything from the first NUL byte: Forge markers (`\0FML\0`, `\0FML2\0`, `\0FML3\0`,
//! `\0FORGE`) and BungeeCord-style forwarded data (`host\0ip\0uuid\0props`). Routing looks only at the
//! host; the decoration reaches the backend unchanged.

/// Longest host name that can be routed (the DNS limit).
pub const MAX_HOST_LEN: usize = 253;

/// Longest label of a non-ASCII host that is converted to punycode, in characters.
const MAX_UNICODE_LABEL: usize = 63;

/// Whether `host` (not ASCII) is short enough to be converted: at most [`MAX_UNICODE_LABEL`] characters in
/// a label and one more than [`MAX_HOST_LEN`] in all (a trailing dot), which also bounds it to 1,016
/// bytes. A character takes at least one byte of the converted name, so only hosts padded with characters
/// the conversion drops (soft hyphens, variation selectors) or composes could convert to a routable name
/// past these bounds, and no client sends those. The bounds come before the conversion because it costs
/// time in a label's length times its number of distinct characters: a 15 KiB host of long CJK labels took
/// about 6 ms of CPU per connection. Labels are split where the conversion splits them (`.` and the
/// ideographic and fullwidth full stops).
fn convertible(host: &str) -> bool {
    let (mut label, mut total) = (0usize, 0usize);
    for c in host.chars() {
        total += 1;
        label = match c {
            '.' | '\u{3002}' | '\u{FF0E}' | '\u{FF61}' => 0,
            _ => label + 1,
        };
        if label > MAX_UNICODE_LABEL || total > MAX_HOST_LEN + 1 {
            return false;
        }
    }
    true
}

/// A server address split into its host and its decoration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerAddress<'a> {
    /// The host as sent, before normalisation.
    pub host: &'a str,
    /// Everything from the first NUL byte (empty when there is none).
    pub decoration: &'a str,
}

impl<'a> ServerAddress<'a> {
    /// Splits `address` at its first NUL byte.
    pub fn split(address: &'a str) -> Self {
        // A byte search: NUL is never part of a longer UTF-8 sequence, and this is much cheaper than
        // `str::find` for a char on strings this short.
        match address.bytes().position(|b| b == 0) {
            Some(i) => ServerAddress {
                host: &address[..i],
                decoration: &address[i..],
            },
            None => ServerAddress {
                host: address,
                decoration: "",
            },
        }
    }
}

/// A host normalised for routing: ASCII lower case, one trailing dot removed. Lives on the stack, and
/// borrows the host as sent when that is already normal (the common case: nothing is copied).
#[derive(Clone, Copy)]
pub struct Host<'a>(Repr<'a>);

#[derive(Clone, Copy)]
#[allow(clippy::large_enum_variant)] // on the stack on purpose: a boxed copy would allocate per connection
enum Repr<'a> {
    /// The host as sent, already lower case ASCII without a trailing dot.
    Sent(&'a str),
    /// A normalised copy: ASCII, so any prefix of it is valid UTF-8.
    Copied { buf: [u8; MAX_HOST_LEN], len: u8 },
}

impl<'a> Host<'a> {
    /// Normalises `host`; `None` when it is empty, longer than [`MAX_HOST_LEN`], or has an empty label
    /// (`.a.com`, `a..com`: no DNS name looks like that, and no pattern may match it). A host with
    /// non-ASCII characters (vanilla clients send punycode, some others do not) is converted to punycode
    /// first, unless it has over 63 characters in a label or 254 in all: converting a host that long could
    /// cost milliseconds of CPU, and such a host is refused unconverted.
    pub fn normalise(host: &'a str) -> Option<Host<'a>> {
        if !host.is_ascii() {
            if !convertible(host) {
                return None;
            }
            let ascii = idna::domain_to_ascii(host).ok()?;
            let host = ascii.strip_suffix('.').unwrap_or(&ascii);
            return (ascii.is_ascii() && scan(host).is_some())
                .then(|| Host::copy(host))
                .flatten();
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        let upper = scan(host)?;
        if maybe_ipv6(host) {
            if let Some(normal) = Host::ipv6(host) {
                return Some(normal);
            }
        }
        match upper {
            true => Host::copy(host),
            false => Some(Host(Repr::Sent(host))),
        }
    }

    /// `host` in the one spelling IPv6 addresses are stored in (lower case, zeros compressed: `::1`),
    /// written on the stack; `None` when it is no IPv6 address. Out of line: most hosts are names.
    #[cold]
    #[inline(never)]
    fn ipv6(host: &str) -> Option<Host<'static>> {
        use std::io::Write;
        let ip = ipv6_literal(host)?;
        let mut buf = [0u8; MAX_HOST_LEN];
        let mut rest = &mut buf[..];
        write!(rest, "{ip}").ok()?;
        let len = MAX_HOST_LEN - rest.len();
        Some(Host(Repr::Copied {
            buf,
            len: u8::try_from(len).ok()?,
        }))
    }

    /// A lower-cased copy of the ASCII `host`, which [`scan`] accepted.
    fn copy(host: &str) -> Option<Host<'static>> {
        if host.len() > MAX_HOST_LEN {
            return None;
        }
        let mut buf = [0u8; MAX_HOST_LEN];
        buf[..host.len()].copy_from_slice(host.as_bytes());
        buf[..host.len()].make_ascii_lowercase();
        Some(Host(Repr::Copied {
            buf,
            len: u8::try_from(host.len()).ok()?,
        }))
    }

    /// The host as sent, when it was normal already (then nothing was copied).
    pub fn as_sent(&self) -> Option<&'a str> {
        match self.0 {
            Repr::Sent(host) => Some(host),
            Repr::Copied { .. } => None,
        }
    }

    /// The normalised host.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Sent(host) => host,
            // Lower-casing ASCII bytes keeps them valid UTF-8.
            Repr::Copied { buf, len } => {
                std::str::from_utf8(&buf[..usize::from(*len)]).unwrap_or("")
            }
        }
    }
}

/// An IPv6 address written as a host: `2001:db8::1` or `[2001:db8::1]`, in any spelling (a player who
/// connects by IPv6 address sends it so).
pub fn ipv6_literal(host: &str) -> Option<std::net::Ipv6Addr> {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

/// Whether `host` could be an IPv6 address: one starts with `[` or has a colon within its first five
/// bytes (a group is at most four digits). A few compares, so a DNS name pays nearly nothing for it.
fn maybe_ipv6(host: &str) -> bool {
    let b = host.as_bytes();
    b.first() == Some(&b'[') || b.iter().take(5).any(|&c| c == b':')
}

/// One pass over an ASCII host, its trailing dot removed: `None` when it cannot be routed (empty, longer
/// than [`MAX_HOST_LEN`], or with an empty label), otherwise whether it has upper-case letters (and so
/// needs a lower-cased copy).
fn scan(host: &str) -> Option<bool> {
    if host.len() > MAX_HOST_LEN {
        return None;
    }
    let mut upper = false;
    let mut label_empty = true;
    for b in host.bytes() {
        if b == b'.' {
            if label_empty {
                return None;
            }
            label_empty = true;
        } else {
            label_empty = false;
            upper |= b.is_ascii_uppercase();
        }
    }
    (!label_empty).then_some(upper)
}

impl std::fmt::Debug for Host<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Host").field(&self.as_str()).finish()
    }
}

impl PartialEq for Host<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Host<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forge_markers_are_decorations() {
        for marker in ["\0FML\0", "\0FML2\0", "\0FML3\0", "\0FORGE"] {
            let address = format!("mc.example.com{marker}");
            let split = ServerAddress::split(&address);
            assert_eq!(split.host, "mc.example.com");
            assert_eq!(split.decoration, marker);
        }
    }

    #[test]
    fn bungeecord_forwarding_is_a_decoration() {
        let address = "mc.example.com\x00203.0.113.7\x00069a79f4\x00[]";
        let split = ServerAddress::split(address);
        assert_eq!(split.host, "mc.example.com");
        assert_eq!(split.decoration, "\x00203.0.113.7\x00069a79f4\x00[]");
    }

    #[test]
    fn unicode_host_is_routed_as_punycode() {
        assert_eq!(
            Host::normalise("München.example.com").map(|h| h.as_str().to_owned()),
            Some("xn--mnchen-3ya.example.com".to_owned())
        );
    }

    #[test]
    fn a_unicode_host_too_long_to_convert_to_a_routable_one_is_refused_before_converting() {
        // The most UTF-8 bytes the bounds let through: four per character.
        const MAX_UNICODE_HOST_LEN: usize = 4 * (MAX_HOST_LEN + 1);
        // The longest routable name in four-byte characters: 50 of them per 63-byte label.
        let label = "\u{1F600}".repeat(50);
        let host = [label.as_str(); 3].join(".");
        let converted = Host::normalise(&host).map(|h| h.as_str().len());
        assert!(
            converted.is_some_and(|n| n <= MAX_HOST_LEN),
            "{converted:?}"
        );
        // Soft hyphens are dropped by the conversion, so this converts to `a.com`: proof that the length
        // is checked before converting (five labels of 999 distinct CJK characters, which take
        // milliseconds to convert, are refused the same way).
        let padded = format!("a{}.com", "\u{AD}".repeat(MAX_UNICODE_HOST_LEN / 2));
        assert!(padded.len() > MAX_UNICODE_HOST_LEN);
        assert!(Host::normalise(&padded).is_none());
        // So is a label's length in characters: 508 distinct two-byte letters fit the byte bound, and
        // would cost their length times their number to convert.
        let letters: String = ('\u{100}'..='\u{7FF}')
            .filter(|c| c.is_alphabetic() && c.is_lowercase())
            .take(MAX_UNICODE_HOST_LEN / 2)
            .collect();
        assert!(letters.len() <= MAX_UNICODE_HOST_LEN, "{}", letters.len());
        assert!(Host::normalise(&letters).is_none());
        assert!(!convertible(&letters));
        // Up to 63 characters in a label and 254 in the host are converted.
        let label = "\u{e9}".repeat(63);
        let longest = format!("{}.{}", [label.as_str(); 3].join("."), "\u{e9}".repeat(62));
        assert_eq!(longest.chars().count(), MAX_HOST_LEN + 1);
        assert!(convertible(&longest));
        assert!(!convertible(&format!("{longest}\u{e9}")));
        assert!(!convertible(&format!("{label}\u{e9}")));
        assert!(!convertible(&format!("{label}\u{3002}{label}\u{e9}")));
        assert!(convertible(&format!("{label}\u{3002}{label}")));
    }

    #[test]
    fn trailing_dot_and_case_are_normalised() {
        assert_eq!(
            Host::normalise("MC.Example.COM.").map(|h| h.as_str().to_owned()),
            Some("mc.example.com".to_owned())
        );
        assert!(Host::normalise(".").is_none());
        assert!(Host::normalise("").is_none());
        assert!(Host::normalise(&"a".repeat(254)).is_none());
        assert!(Host::normalise(&"a".repeat(253)).is_some());
    }

    #[test]
    fn a_host_with_an_empty_label_is_not_routable() {
        for host in [
            ".mc.example.com",
            "mc..example.com",
            "mc.example.com..",
            "..",
            ".Mc.example.com",
        ] {
            assert!(Host::normalise(host).is_none(), "{host:?}");
        }
        assert!(Host::normalise(".münchen.example.com").is_none());
    }

    #[test]
    fn ipv6_literals_are_normalised_to_one_spelling() {
        for (sent, normal) in [
            ("::1", "::1"),
            ("0:0:0:0:0:0:0:1", "::1"),
            ("[::1]", "::1"),
            ("2001:DB8:0:0::5", "2001:db8::5"),
            ("[2001:db8::5]", "2001:db8::5"),
            ("::FFFF:203.0.113.7", "::ffff:203.0.113.7"),
            (
                "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
            // Not addresses: routed as sent (lower case), as before. (A group has at most four
            // digits, which `maybe_ipv6` relies on: `00001::1` is no address.)
            ("00001::1", "00001::1"),
            ("mc.example.com:25565", "mc.example.com:25565"),
            ("FE80::1%eth0", "fe80::1%eth0"),
            ("[::1]:25565", "[::1]:25565"),
            ("::1::", "::1::"),
        ] {
            assert_eq!(
                Host::normalise(sent)
                    .map(|h| h.as_str().to_owned())
                    .as_deref(),
                Some(normal),
                "{sent:?}"
            );
        }
    }

    #[test]
    fn a_host_already_normal_is_borrowed_not_copied() {
        for sent in ["mc.example.com", "mc.example.com."] {
            let host = Host::normalise(sent).map(|h| h.as_str().as_ptr());
            assert_eq!(host, Some(sent.as_ptr()), "{sent:?} was copied");
        }
        let copied = Host::normalise("Mc.example.com").map(|h| h.as_str().as_ptr());
        assert_ne!(copied, Some("Mc.example.com".as_ptr()));
    }

    proptest! {
        #[test]
        fn split_then_join_is_identity(host in "[^\u{0}]{0,40}", decoration in "(\u{0}[^\u{0}]{0,10}){0,4}") {
            let address = format!("{host}{decoration}");
            let split = ServerAddress::split(&address);
            prop_assert_eq!(split.host, host.as_str());
            prop_assert_eq!(split.decoration, decoration.as_str());
        }

        #[test]
        fn ascii_hosts_are_lower_cased_without_one_trailing_dot(host in "[A-Za-z0-9.-]{0,260}") {
            let expected = host.strip_suffix('.').unwrap_or(&host).to_ascii_lowercase();
            let valid = !expected.is_empty()
                && expected.len() <= MAX_HOST_LEN
                && expected.split('.').all(|l| !l.is_empty());
            let normalised = Host::normalise(&host).map(|h| h.as_str().to_owned());
            prop_assert_eq!(normalised, valid.then_some(expected));
        }

        #[test]
        fn ipv6_addresses_route_as_one_spelling(ip in any::<[u16; 8]>(), upper: bool, brackets: bool) {
            let ip = std::net::Ipv6Addr::from(ip);
            // The longest spelling: no compression, every group four digits.
            let seg = ip.segments();
            let mut sent = seg.iter().map(|g| format!("{g:04x}")).collect::<Vec<_>>().join(":");
            if upper {
                sent = sent.to_ascii_uppercase();
            }
            if brackets {
                sent = format!("[{sent}]");
            }
            let normalised = Host::normalise(&sent).map(|h| h.as_str().to_owned());
            prop_assert_eq!(normalised, Some(ip.to_string()));
        }

        #[test]
        fn normalise_never_panics(host in ".{0,300}") {
            if let Some(h) = Host::normalise(&host) {
                let trimmed = host.strip_suffix('.').unwrap_or(&host);
                if let Some(ip) = ipv6_literal(trimmed) {
                    prop_assert_eq!(h.as_str(), ip.to_string());
                } else if host.is_ascii() {
                    prop_assert_eq!(h.as_str(), trimmed.to_ascii_lowercase());
                } else {
                    prop_assert!(h.as_str().is_ascii());
                }
            }
        }
    }
}
