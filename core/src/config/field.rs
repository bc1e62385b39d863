//! Reading one value: a [`Field`] of whatever type the file gave, the key it belongs to, the keys nothing
//! reads, and durations.

use super::ConfigIssue;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::time::Duration;

/// A configuration value that deserialises whatever its type: the `T` it should be, or why it is not.
pub(super) enum Field<T> {
    Ok(T),
    Bad(String),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(d)?;
        Ok(match value.clone().try_into() {
            Ok(v) => Field::Ok(v),
            Err(e) => match e.message().trim() {
                "" => Field::Bad("invalid value".to_owned()),
                reason => Field::Bad(plain_reason(reason, &value)),
            },
        })
    }
}

/// serde's reason for a value of the wrong type, in an admin's words: what it says it expected (`u32`,
/// `a sequence`) is a Rust type, so that part is said as a range or a list, with the fix for a lone
/// string where a list belongs (`domains = "mc.example.com"`).
fn plain_reason(reason: &str, value: &toml::Value) -> String {
    const WORDS: [(&str, &str); 7] = [
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number, 0 or more"),
        ("usize", "a whole number, 0 or more"),
        ("i64", "a whole number"),
        ("a sequence", "a list"),
    ];
    // serde's name for what TOML calls a table.
    let reason = &reason.replacen("invalid type: map,", "invalid type: table,", 1);
    let plain = WORDS.iter().find_map(|(rust, words)| {
        let head = reason.strip_suffix(rust)?.strip_suffix("expected ")?;
        Some(format!("{head}expected {words}"))
    });
    match (plain, value) {
        (Some(p), toml::Value::String(s)) if p.ends_with("a list") => {
            format!("{p} (write [{s:?}])")
        }
        (Some(p), _) => p,
        // An entry of the list is not a string (not the list itself where a string belongs).
        (None, toml::Value::Array(items))
            if reason.ends_with("expected a string")
                && !reason.starts_with("invalid type: sequence") =>
        {
            format!("{reason}{}", entry_hint(items))
        }
        (None, _) => reason.to_owned(),
    }
}

/// Which entry of a list of strings is not one, and, for another proxy's `{ host = …, port = … }` table,
/// the string to write instead.
fn entry_hint(items: &[toml::Value]) -> String {
    let Some((i, entry)) = items.iter().enumerate().find(|(_, v)| !v.is_str()) else {
        return String::new();
    };
    let host = entry.get("host").and_then(toml::Value::as_str);
    let port = entry
        .get("port")
        .and_then(toml::Value::as_integer)
        .filter(|p| (1..=65535).contains(p));
    // Only a string that is surely an address: a name or IPv4 address, or an IPv6 address to bracket
    // (not a host already bracketed or carrying a port of its own).
    let instead = match (host, port) {
        (Some(h), Some(p)) if h.parse::<std::net::Ipv6Addr>().is_ok() => {
            format!(", here \"[{h}]:{p}\"")
        }
        (Some(h), Some(p)) if !h.is_empty() && !h.contains([':', '[', ']']) => {
            format!(", here \"{h}:{p}\"")
        }
        _ => String::new(),
    };
    format!(
        " (entry {}: every entry is a quoted string{instead})",
        i + 1
    )
}

/// The value of an optional key; a value of the wrong type is an issue naming `key`, and `None`.
pub(super) fn field<T>(
    value: Option<Field<T>>,
    source: &str,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    match value? {
        Field::Ok(v) => Some(v),
        Field::Bad(reason) => {
            issues.push(ConfigIssue::new(source, key, reason));
            None
        }
    }
}

/// A table-valued key (`[timeouts]`), which must be a table.
pub(super) fn table<T>(
    value: Option<Field<T>>,
    source: &str,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    let value = value.map(|v| match v {
        Field::Bad(_) => Field::Bad(format!("must be a table (a `[{key}]` section)")),
        ok => ok,
    });
    field(value, source, key, issues)
}

/// Reports the keys a table had that nothing reads, the way serde's `deny_unknown_fields` words it.
pub(super) fn unknown_keys(
    unknown: &BTreeMap<String, toml::Value>,
    prefix: &str,
    expected: &[&str],
    source: &str,
    issues: &mut Vec<ConfigIssue>,
) {
    let expected = expected
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    for key in unknown.keys() {
        let path = format!("{prefix}{key}");
        let hint = migration_hint(&path).map_or(String::new(), |h| format!(" ({h})"));
        issues.push(ConfigIssue::new(
            source,
            path,
            format!("unknown field `{key}`, expected one of {expected}{hint}"),
        ));
    }
}

/// What to write instead of a key other proxies (Infrarust, Infrared, mc-router) have and nethergate
/// spells otherwise or does not have.
fn migration_hint(path: &str) -> Option<&'static str> {
    Some(match path {
        "connect_timeout" => "nethergate: `connect` in `[timeouts]`",
        "read_timeout" => "nethergate: `read` in `[timeouts]`",
        "write_timeout" => "nethergate: `write` in `[timeouts]`",
        "receive_proxy_protocol" | "proxy_protocol_receive" => {
            "nethergate does not accept PROXY protocol from what connects to it; it only sends it \
             (`send_proxy_protocol`)"
        }
        "ip_filter" => "`[ip_filter]` belongs in the main file",
        "ip_filter.whitelist" => "nethergate: `allow`",
        "ip_filter.blacklist" => "nethergate: `deny`",
        "worker_threads" => "nethergate: the `--threads` option",
        _ => return None,
    })
}

/// The longest duration a setting accepts: 10 years as humantime counts them (365.25 days each), so that
/// `"10years"` itself is accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 31_557_600);

pub(super) fn duration(
    source: &str,
    key: &str,
    value: Option<Field<String>>,
    default: Duration,
    issues: &mut Vec<ConfigIssue>,
) -> Duration {
    let value = match value {
        None => return default,
        Some(Field::Ok(v)) => v,
        Some(Field::Bad(reason)) => {
            issues.push(ConfigIssue::new(
                source,
                key,
                format!("{reason} (write a duration such as \"5s\", \"2m\", \"1h\")"),
            ));
            return default;
        }
    };
    let value = value.as_str();
    if value.trim_start().starts_with('-') {
        issues.push(ConfigIssue::new(
            source,
            key,
            format!("{value:?} is negative; a time limit must be greater than zero"),
        ));
        return default;
    }
    match humantime_serde::re::humantime::parse_duration(value) {
        Ok(d) if d.is_zero() => {
            issues.push(ConfigIssue::new(source, key, "must be greater than zero"));
            default
        }
        // Deadlines are `now + duration`; far beyond any useful limit, that overflows the clock.
        Ok(d) if d > MAX_DURATION => {
            issues.push(ConfigIssue::new(
                source,
                key,
                format!("{value:?} is longer than the maximum of 10 years"),
            ));
            default
        }
        Ok(d) => d,
        Err(e) => {
            issues.push(ConfigIssue::new(
                source,
                key,
                format!("invalid duration {value:?}: {e} (write e.g. \"5s\", \"2m\", \"1h\")"),
            ));
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::*;
    use crate::config::*;

    #[test]
    fn another_proxys_key_gets_the_nethergate_spelling() {
        let unknown = BTreeMap::from([
            ("connect_timeout".to_owned(), toml::Value::from("5s")),
            ("colour".to_owned(), toml::Value::from("red")),
        ]);
        let mut issues = Vec::new();
        unknown_keys(&unknown, "", &["name"], "s.toml", &mut issues);
        let reasons: Vec<&str> = issues.iter().map(|i| i.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "unknown field `colour`, expected one of `name`",
                "unknown field `connect_timeout`, expected one of `name` (nethergate: `connect` in \
                 `[timeouts]`)"
            ]
        );
    }

    #[test]
    fn bad_duration_names_key_and_value() {
        let e = server("domains = [\"a\"]\naddresses = [\"a:1\"]\n[timeouts]\nconnect = \"5 parsecs\"\nread = \"0s\"")
            .unwrap_err();
        assert_eq!(keys(e.clone()), vec!["timeouts.connect", "timeouts.read"]);
        assert!(e.0[0].reason.contains("\"5 parsecs\""), "{e}");
    }

    #[test]
    fn absurdly_long_durations_are_rejected() {
        let e = server(
            "domains = [\"a\"]\naddresses = [\"a:1\"]\n[timeouts]\nread = \"300000000000y\"",
        )
        .unwrap_err();
        assert_eq!(keys(e.clone()), vec!["timeouts.read"]);
        assert!(e.to_string().contains("maximum of 10 years"), "{e}");
        // The maximum itself, in any spelling, is allowed; a second more is not.
        let read = |value: &str| {
            server(&format!(
                "domains = [\"a\"]\naddresses = [\"a:1\"]\n[timeouts]\nread = \"{value}\""
            ))
            .map(|s| s.timeouts.read)
        };
        for value in ["10years", "10y", "3652days 12h", "87660h"] {
            assert_eq!(read(value).ok(), Some(MAX_DURATION), "{value}");
        }
        for value in ["10years 1s", "3653days"] {
            let e = read(value).unwrap_err();
            assert!(
                e.to_string().contains("maximum of 10 years"),
                "{value}: {e}"
            );
        }
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e =
            server("domains = [\"a\"]\naddresses = [\"a:1\"]\nmax_players = \"ten\"").unwrap_err();
        assert_eq!(keys(e), vec!["max_players"]);
    }

    #[test]
    fn wrong_types_are_named_in_plain_words() {
        for (text, key, reason) in [
            ("max_players = -1", "max_players", "invalid value: integer `-1`, expected a whole number from 0 to 4294967295"),
            ("max_players = 1.5", "max_players", "invalid type: floating point `1.5`, expected a whole number from 0 to 4294967295"),
            ("domains = \"mc.example.com\"", "domains", "invalid type: string \"mc.example.com\", expected a list (write [\"mc.example.com\"])"),
            ("addresses = 5", "addresses", "invalid type: integer `5`, expected a list"),
            // Another proxy's address tables, and a port alone.
            ("addresses = [\"a:1\", { host = \"10.0.0.1\", port = 25565 }]", "addresses", "invalid type: table, expected a string (entry 2: every entry is a quoted string, here \"10.0.0.1:25565\")"),
            ("addresses = [{ host = \"::1\", port = 25565 }]", "addresses", "invalid type: table, expected a string (entry 1: every entry is a quoted string, here \"[::1]:25565\")"),
            ("addresses = [25565]", "addresses", "invalid type: integer `25565`, expected a string (entry 1: every entry is a quoted string)"),
            ("domains = [{ name = \"mc.example.com\" }]", "domains", "invalid type: table, expected a string (entry 1: every entry is a quoted string)"),
            // No string offered that would be wrong too; no entry named where the list itself is wrong.
            ("addresses = [{ host = \"[::1]\", port = 1 }]", "addresses", "invalid type: table, expected a string (entry 1: every entry is a quoted string)"),
            ("addresses = [{ host = \"10.0.0.1:25565\", port = 25565 }]", "addresses", "invalid type: table, expected a string (entry 1: every entry is a quoted string)"),
            ("addresses = [{ host = \"10.0.0.1\", port = 99999 }]", "addresses", "invalid type: table, expected a string (entry 1: every entry is a quoted string)"),
            ("name = [\"a:1\"]", "name", "invalid type: sequence, expected a string"),
            ("proxy_protocol_version = \"v2\"", "proxy_protocol_version", "invalid type: string \"v2\", expected a whole number (1 or 2)"),
            ("proxy_protocol_version = 300", "proxy_protocol_version", "300 is not a PROXY protocol version (1 or 2)"),
            ("[timeouts]\nread = \"-1s\"", "timeouts.read", "\"-1s\" is negative; a time limit must be greater than zero"),
        ] {
            let e = server(text).unwrap_err();
            let issue = e.0.iter().find(|i| i.key == key);
            assert_eq!(issue.map(|i| i.reason.as_str()), Some(reason), "{text}: {e}");
        }
        let e = MainConfig::from_toml(Path::new("n.toml"), "max_connections = -5").unwrap_err();
        assert_eq!(
            e.0[0].reason,
            "invalid value: integer `-5`, expected a whole number, 0 or more"
        );
    }

    #[test]
    fn a_section_that_is_not_a_table_is_named() {
        let e = server("domains = [\"a\"]\naddresses = [\"a:1\"]\ntimeouts = 5").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["timeouts"]);
        assert!(e.to_string().contains("must be a table"), "{e}");
        let e = MainConfig::from_toml(
            Path::new("n.toml"),
            "ip_filter = \"all\"\nmax_connections = \"many\"",
        )
        .unwrap_err();
        assert_eq!(keys(e), vec!["max_connections", "ip_filter"]);
    }
}
