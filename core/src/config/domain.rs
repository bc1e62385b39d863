//! A `domains` entry: exact names, wildcard patterns and IP addresses, internationalised names stored as
//! punycode, and how vanilla clients spell them.

use super::ConfigIssue;

/// The characters UTS-46 (how domains are stored) and IDNA2003 (Java's `IDN.toASCII`, which vanilla clients
/// use for the host they send) convert differently, and what IDNA2003 makes of each.
const IDNA_DEVIATIONS: [(char, &str); 4] =
    [('ß', "ss"), ('ς', "σ"), ('\u{200C}', ""), ('\u{200D}', "")];

/// `domain` (as stored: punycode labels) as it is written, for messages.
pub(super) fn domain_for_people(domain: &str) -> String {
    domain
        .split('.')
        .map(|label| match label.starts_with("xn--") {
            true => idna::domain_to_unicode(label).0,
            false => label.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// How a vanilla client spells the stored `domain` in its handshake, when that differs: a label holding
/// one of [`IDNA_DEVIATIONS`] (`straße` is `xn--strae-oqa` here, `strasse` from a vanilla client).
pub(super) fn vanilla_spelling(domain: &str) -> Option<String> {
    let written = domain_for_people(domain);
    let deviation = |c: char| IDNA_DEVIATIONS.iter().find(|&&(d, _)| d == c);
    if !written.chars().any(|c| deviation(c).is_some()) {
        return None;
    }
    let mapped: String = written
        .chars()
        .map(|c| deviation(c).map_or_else(|| c.to_string(), |(_, to)| (*to).to_owned()))
        .collect();
    to_punycode(&mapped).ok()
}

/// `domain` as stored: ASCII labels lower-cased, the others converted to punycode (`xn--...`), which is
/// how clients send internationalised names. Label by label, so that a wildcard label stays as written.
fn to_punycode(domain: &str) -> Result<String, idna::Errors> {
    let labels: Result<Vec<String>, _> = domain
        .split('.')
        .map(|label| match label.is_ascii() {
            true => Ok(label.to_ascii_lowercase()),
            false => idna::domain_to_ascii(label),
        })
        .collect();
    labels.map(|l| l.join("."))
}

/// Checks a `domains` entry and normalises it (lower case, no trailing dot).
pub(super) fn domain(source: &str, value: &str, issues: &mut Vec<ConfigIssue>) -> Option<String> {
    // An IPv6 address (`2001:db8::1`, `[2001:db8::1]`), for players who connect by address: stored in the
    // one spelling a connecting host is normalised to.
    if let Some(ip) = crate::hostname::ipv6_literal(value.trim()) {
        return Some(ip.to_string());
    }
    let d = value.trim().strip_suffix('.').unwrap_or(value.trim());
    let bad = d.is_empty()
        || d.len() > crate::hostname::MAX_HOST_LEN
        || d.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | ':' | '@'));
    if bad {
        let hint = if d.contains(':') {
            " (a domain has no port, and an IPv6 address is written like `2001:db8::1`)"
        } else {
            ""
        };
        issues.push(ConfigIssue::new(
            source,
            "domains",
            format!("{value:?} is not a domain name or `*.` pattern{hint}"),
        ));
        return None;
    }
    if d == "*" && value.trim() != "*" {
        // `*.` with its domain left out (a template with an empty variable, say) must not quietly become
        // the catch-all.
        issues.push(ConfigIssue::new(
            source,
            "domains",
            format!("{value:?} has no domain after `*.`: write `*.example.com`, or `*` to catch every host"),
        ));
        return None;
    }
    let checked = |d: String, issues: &mut Vec<ConfigIssue>| {
        // A DNS name has no empty label and none over 63 bytes: such a name could never be asked for.
        // Patterns are globs (`*` may span dots, so their labels may be longer), but an empty label
        // matches nothing a client can send there either.
        let exact = !crate::route::is_wildcard(&d);
        if d.len() > crate::hostname::MAX_HOST_LEN {
            // Only an internationalised name gets here: its punycode is longer than what was written.
            issues.push(ConfigIssue::new(
                source,
                "domains",
                format!(
                    "{value:?} is {} characters as clients send it ({d}), over the {} a host name may have",
                    d.len(),
                    crate::hostname::MAX_HOST_LEN
                ),
            ));
            return None;
        }
        match d
            .split('.')
            .find(|l| l.is_empty() || (exact && l.len() > 63))
        {
            None => Some(d),
            Some(label) => {
                let why = if label.is_empty() {
                    "has an empty label (two dots in a row, or a leading dot)"
                } else {
                    "has a label over 63 characters"
                };
                issues.push(ConfigIssue::new(
                    source,
                    "domains",
                    format!("{value:?} {why}"),
                ));
                None
            }
        }
    };
    if d.is_ascii() {
        return checked(d.to_ascii_lowercase(), issues);
    }
    // Checked on each label as converted too: fullwidth `＊` and `？` become `*` and `?`.
    if d.split('.').any(|l| {
        !l.is_ascii()
            && (crate::route::is_wildcard(l)
                || idna::domain_to_ascii(l).is_ok_and(|a| crate::route::is_wildcard(&a)))
    }) {
        issues.push(ConfigIssue::new(
            source,
            "domains",
            format!(
                "{value:?} has a wildcard inside an internationalised label, which can never match: clients \
                 send that label as punycode (`xn--...`); give the wildcard a label of its own \
                 (`*.münchen.example.com`)"
            ),
        ));
        return None;
    }
    match to_punycode(d) {
        Ok(d) => checked(d, issues),
        Err(_) => {
            issues.push(ConfigIssue::new(
                source,
                "domains",
                format!("{value:?} is not a valid internationalised domain name"),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::*;

    #[test]
    fn unicode_domains_are_stored_as_punycode() {
        let s = server(
            "domains = [\"München.Example.com\", \"*.bücher.example\"]\naddresses = [\"a:1\"]",
        )
        .unwrap();
        assert_eq!(
            s.domains,
            vec!["xn--mnchen-3ya.example.com", "*.xn--bcher-kva.example"]
        );
    }

    #[test]
    fn a_domain_listed_twice_is_kept_once() {
        let cfg = server(
            "domains = [\"mc.example.com\", \"MC.example.com.\", \"*.example.com\", \"mc.example.com\"]\naddresses = [\"a:1\"]",
        )
        .unwrap();
        assert_eq!(cfg.domains, ["mc.example.com", "*.example.com"]);
    }

    #[test]
    fn ipv6_address_domains_are_stored_in_one_spelling() {
        let cfg = server(
            "domains = [\"[2001:DB8:0::5]\", \"0:0:0:0:0:0:0:1\", \"::1\", \" ::ffff:203.0.113.7 \"]\naddresses = [\"a:1\"]",
        )
        .unwrap();
        assert_eq!(cfg.domains, ["2001:db8::5", "::1", "::ffff:203.0.113.7"]);
        for bad in ["mc.example.com:25565", "fe80::1%eth0", "[::1]:25565"] {
            let e = server(&format!("domains = [{bad:?}]\naddresses = [\"a:1\"]")).unwrap_err();
            assert!(
                e.to_string()
                    .contains("a domain has no port, and an IPv6 address is written like"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn domains_that_no_client_can_send_are_refused() {
        for bad in [
            "a..example.com",
            ".lead.example.com",
            &format!("{}.example.com", "x".repeat(64)),
            "*.",
            " *. ",
            "*..example.com",
            "*.example..com",
            ".*.example.com",
        ] {
            let e = server(&format!("domains = [{bad:?}]\naddresses = [\"a:1\"]")).unwrap_err();
            assert_eq!(keys(e.clone()), vec!["domains"], "{bad}: {e}");
        }
        let ok = format!("{}.example.com", "x".repeat(63));
        for good in [
            "*",
            "*.example.com.",
            "*.example.com",
            "mc?.example.com",
            "-odd-.example.com",
            ok.as_str(),
        ] {
            assert!(
                server(&format!("domains = [{good:?}]\naddresses = [\"a:1\"]")).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn a_domain_vanilla_clients_spell_otherwise_is_warned_about() {
        let warned = |domains: &str| {
            let s = server(&format!("domains = [{domains}]\naddresses = [\"a:1\"]"))
                .unwrap_or_else(|e| panic!("{e}"));
            s.warnings()
                .into_iter()
                .map(|w| w.reason)
                .collect::<Vec<_>>()
        };
        let w = warned("\"straße.example.com\", \"*.ς.example.com\"");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("\"straße.example.com\" as \"strasse.example.com\""),
            "{w:?}"
        );
        assert!(
            w[1].contains(&format!("as {:?}", "*.xn--4xa.example.com")),
            "{w:?}"
        );
        // Listed both ways, or with nothing that differs: no warning.
        assert!(warned("\"straße.example.com\", \"strasse.example.com\"").is_empty());
        assert!(warned("\"münchen.example.com\", \"plain.example.com\"").is_empty());
        // A wildcard inside an internationalised label could never match.
        let e = server("domains = [\"mü*.example.com\"]\naddresses = [\"a:1\"]").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["domains"]);
        assert!(e.to_string().contains("punycode"), "{e}");
        assert!(server("domains = [\"*.mü.example.com\"]\naddresses = [\"a:1\"]").is_ok());
        let e =
            server("domains = [\"mü\u{FF0A}.example.com\"]\naddresses = [\"a:1\"]").unwrap_err();
        assert!(e.to_string().contains("punycode"), "{e}");
    }

    #[test]
    fn an_international_domain_too_long_as_punycode_is_refused() {
        // 252 bytes as written, 436 as punycode: no client host that long is routed.
        let long = ["\u{121}\u{165}\u{573}\u{437}\u{15d}"; 23].join(".");
        assert!(long.len() <= crate::hostname::MAX_HOST_LEN);
        let e = server(&format!("domains = [{long:?}]\naddresses = [\"a:1\"]")).unwrap_err();
        assert_eq!(keys(e.clone()), vec!["domains"]);
        assert!(
            e.to_string().contains("436 characters as clients send it"),
            "{e}"
        );
        // Half as long fits, and routes what a client sends.
        let short = ["\u{121}\u{165}\u{573}\u{437}\u{15d}"; 11].join(".");
        let s = server(&format!("domains = [{short:?}]\naddresses = [\"a:1\"]")).unwrap();
        let table = crate::route::RouteTable::build(std::slice::from_ref(&s)).unwrap();
        let sent = crate::hostname::Host::normalise(&s.domains[0]).expect("a host");
        assert!(table.route(sent.as_str()).is_some(), "{}", s.domains[0]);
    }
}
