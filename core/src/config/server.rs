//! A server file (`servers/<name>.toml`): its keys, defaults and validation.

use super::domain::{domain, domain_for_people, vanilla_spelling};
use super::field::{duration, field, table, unknown_keys, Field};
use super::files::valid;
use super::floor::{blank_message, TIMEOUT_FLOORS};
use super::syntax::toml_issue;
use super::{BackendAddress, ConfigErrors, ConfigIssue};
use crate::rewrite::Rewrite;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::time::Duration;

/// Default `disconnect_message`.
pub const DEFAULT_DISCONNECT_MESSAGE: &str =
    "Server is currently unreachable. Please try again later.";

/// How a server's traffic is forwarded after the first packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// Copy bytes through user space.
    #[default]
    Passthrough,
    /// Copy bytes with splice(2) through a kernel pipe (Linux); same semantics as passthrough.
    ZeroCopy,
}

/// Which PROXY protocol header to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyProtocolVersion {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    #[default]
    V2,
}

/// Time limits of one server's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Limit on dialling one backend address.
    pub connect: Duration,
    /// Idle limit per side while forwarding.
    pub read: Duration,
    /// Limit on a write that makes no progress.
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(30),
            write: Duration::from_secs(30),
        }
    }
}

/// One validated server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Unique name; the file stem when `name` is absent.
    pub name: String,
    /// Where it was defined (a file path, a container).
    pub source: String,
    /// Exact names and wildcard patterns, normalised to lower case without a trailing dot.
    pub domains: Vec<String>,
    /// Backend addresses, tried round robin with failover.
    pub addresses: Vec<BackendAddress>,
    /// Forwarding mode.
    pub proxy_mode: ProxyMode,
    /// Send a PROXY protocol header to the backend first.
    pub send_proxy_protocol: bool,
    /// Which PROXY protocol header.
    pub proxy_protocol_version: ProxyProtocolVersion,
    /// The host the backend sees.
    pub domain_rewrite: Rewrite,
    /// Concurrent players allowed; 0 = unlimited.
    pub max_players: u32,
    /// What a player is told when no backend answers.
    pub disconnect_message: String,
    /// Time limits.
    pub timeouts: Timeouts,
    /// How its keys are spelt where it was defined, so that a message names the key the admin wrote:
    /// empty for a server file, `"<label_prefix>."` for Docker labels (`nethergate.timeouts.read`).
    pub key_prefix: String,
}

#[derive(Deserialize, Default)]
struct RawTimeouts {
    connect: Option<Field<String>>,
    read: Option<Field<String>>,
    write: Option<Field<String>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

/// `domain_rewrite`: a mode name, or `{ explicit = "host" }`.
enum RawRewrite {
    Mode(String),
    Explicit(String),
}

const REWRITE_EXPECTED: &str = "expected \"none\", \"from_backend\" or { explicit = \"host\" }";

impl<'de> Deserialize<'de> for RawRewrite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match toml::Value::deserialize(d)? {
            toml::Value::String(mode) => Ok(RawRewrite::Mode(mode)),
            toml::Value::Table(t) => {
                // A misspelt key is named, as everywhere else.
                if let Some(key) = t.keys().find(|k| *k != "explicit") {
                    return Err(D::Error::custom(format!(
                        "unknown key `{key}`; {REWRITE_EXPECTED}"
                    )));
                }
                match t.get("explicit") {
                    Some(toml::Value::String(host)) => Ok(RawRewrite::Explicit(host.clone())),
                    Some(_) => Err(D::Error::custom(
                        "`explicit` must be a string: the host name the backend sees",
                    )),
                    None => Err(D::Error::custom(REWRITE_EXPECTED)),
                }
            }
            _ => Err(D::Error::custom(REWRITE_EXPECTED)),
        }
    }
}

#[derive(Deserialize)]
struct RawServer {
    name: Option<Field<String>>,
    domains: Option<Field<Vec<String>>>,
    addresses: Option<Field<Vec<String>>>,
    proxy_mode: Option<Field<String>>,
    send_proxy_protocol: Option<Field<bool>>,
    proxy_protocol_version: Option<Field<i64>>,
    domain_rewrite: Option<Field<RawRewrite>>,
    max_players: Option<Field<u32>>,
    disconnect_message: Option<Field<String>>,
    timeouts: Option<Field<RawTimeouts>>,
    network: Option<toml::Value>,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

/// The keys an unknown key's message lists: every key a server file may set (`network` is read only to be
/// refused with its own message, so it is not offered).
const SERVER_KEYS: &[&str] = &[
    "name",
    "domains",
    "addresses",
    "proxy_mode",
    "send_proxy_protocol",
    "proxy_protocol_version",
    "domain_rewrite",
    "max_players",
    "disconnect_message",
    "timeouts",
];

impl ServerConfig {
    /// Valid settings that are almost surely mistakes: time limits so short they would close players
    /// who did nothing wrong (`read = "1s"`). Each names its key and says why; the server works as
    /// configured.
    pub fn warnings(&self) -> Vec<ConfigIssue> {
        let (t, default) = (&self.timeouts, Timeouts::default());
        let pairs = [
            (t.connect, default.connect),
            (t.read, default.read),
            (t.write, default.write),
        ];
        let mut warnings: Vec<ConfigIssue> = TIMEOUT_FLOORS
            .iter()
            .zip(pairs)
            .filter_map(|(floor, (value, default))| {
                floor.check(&self.source, &self.key_prefix, value, default)
            })
            .collect();
        for (domain, vanilla) in self.domains.iter().filter_map(|d| {
            vanilla_spelling(d)
                .filter(|v| !self.domains.contains(v))
                .map(|v| (d, v))
        }) {
            let shown = domain_for_people(domain);
            warnings.push(ConfigIssue::new(
                &self.source,
                format!("{}domains", self.key_prefix),
                format!(
                    "vanilla clients send {shown:?} as {vanilla:?} (Java's IDNA2003 maps ß to ss and ς to σ, \
                     and drops zero-width joiners), which is not listed: add it if those players should \
                     reach this server"
                ),
            ));
        }
        let who = "a player who cannot reach the server";
        warnings.extend(blank_message(
            &self.source,
            &self.key_prefix,
            "disconnect_message",
            &self.disconnect_message,
            who,
        ));
        warnings
    }

    /// Parses and validates one server file. `source` names it in errors; `stem` is the default name.
    pub fn from_toml(source: &str, stem: &str, text: &str) -> Result<ServerConfig, ConfigErrors> {
        ServerConfig::check(source, stem, text).and_then(valid)
    }

    /// Parses and validates one server file, keeping what it could read even when some values are wrong
    /// (those have their defaults, a bad `name` the file's): the server and its problems; `Err` only when
    /// the file is not TOML at all. A server with problems must not be routed to; its name and valid
    /// domains still take part in the checks between files.
    pub(super) fn check(
        source: &str,
        stem: &str,
        text: &str,
    ) -> Result<(ServerConfig, Vec<ConfigIssue>), ConfigErrors> {
        let raw: RawServer =
            toml::from_str(text).map_err(|e| ConfigErrors(vec![toml_issue(source, text, &e)]))?;
        let mut issues = Vec::new();
        unknown_keys(&raw.unknown, "", SERVER_KEYS, source, &mut issues);

        // Spaces around a name are a slip: `" lobby"` is the server `lobby` (plugins redirect by name).
        let written = field(raw.name, source, "name", &mut issues).map(|n| n.trim().to_owned());
        let mut name = written.clone().unwrap_or_else(|| stem.to_owned());
        if name.is_empty() {
            issues.push(ConfigIssue::new(source, "name", "must not be empty"));
            name = stem.to_owned();
        } else if name.chars().any(char::is_control) {
            let why = match written {
                Some(_) => format!("{name:?} has a control character"),
                None => format!(
                    "the file name {name:?} (the default name) has a control character; rename the \
                     file or set `name`"
                ),
            };
            issues.push(ConfigIssue::new(source, "name", why));
            name = stem.to_owned();
        }

        let mut domains: Vec<String> = field(raw.domains, source, "domains", &mut issues)
            .unwrap_or_default()
            .iter()
            .filter_map(|d| domain(source, d, &mut issues))
            .collect();
        // The same name twice (perhaps spelt differently: `MC.example.com` and `mc.example.com.`) is one.
        let mut seen = std::collections::HashSet::new();
        domains.retain(|d| seen.insert(d.clone()));
        if domains.is_empty() && !issues.iter().any(|i| i.key == "domains") {
            issues.push(ConfigIssue::new(
                source,
                "domains",
                "at least one domain is required",
            ));
        }

        let mut addresses = Vec::new();
        for a in field(raw.addresses, source, "addresses", &mut issues).unwrap_or_default() {
            match BackendAddress::parse(a.trim()) {
                Ok(addr) => addresses.push(addr),
                Err(reason) => issues.push(ConfigIssue::new(source, "addresses", reason)),
            }
        }
        if addresses.is_empty() && !issues.iter().any(|i| i.key == "addresses") {
            issues.push(ConfigIssue::new(
                source,
                "addresses",
                "at least one backend address (host:port) is required",
            ));
        }

        let proxy_mode = match field(raw.proxy_mode, source, "proxy_mode", &mut issues).as_deref() {
            None | Some("passthrough") => ProxyMode::Passthrough,
            Some("zero_copy") => ProxyMode::ZeroCopy,
            Some(other @ ("offline" | "client_only" | "server_only")) => {
                issues.push(ConfigIssue::new(
                    source,
                    "proxy_mode",
                    format!("{other:?} is not implemented by nethergate; use \"passthrough\" or \"zero_copy\""),
                ));
                ProxyMode::Passthrough
            }
            Some(other) => {
                issues.push(ConfigIssue::new(
                    source,
                    "proxy_mode",
                    format!("unknown mode {other:?}; expected \"passthrough\" or \"zero_copy\""),
                ));
                ProxyMode::Passthrough
            }
        };
        if raw.network.is_some() {
            issues.push(ConfigIssue::new(
                source,
                "network",
                "forwarding modes cannot belong to a network (passthrough and zero_copy never see game traffic)",
            ));
        }

        // Any whole number is read, so that 3 or 300 gets the same reason as 3; anything else is told the two
        // versions too.
        let version = raw.proxy_protocol_version.map(|v| match v {
            Field::Bad(reason) => Field::Bad(format!("{reason} (1 or 2)")),
            ok => ok,
        });
        let proxy_protocol_version =
            match field(version, source, "proxy_protocol_version", &mut issues) {
                None | Some(2) => ProxyProtocolVersion::V2,
                Some(1) => ProxyProtocolVersion::V1,
                Some(v) => {
                    issues.push(ConfigIssue::new(
                        source,
                        "proxy_protocol_version",
                        format!("{v} is not a PROXY protocol version (1 or 2)"),
                    ));
                    ProxyProtocolVersion::V2
                }
            };

        let domain_rewrite = match raw.domain_rewrite {
            None => Rewrite::None,
            Some(Field::Bad(reason)) => {
                issues.push(ConfigIssue::new(source, "domain_rewrite", reason));
                Rewrite::None
            }
            Some(Field::Ok(RawRewrite::Mode(m))) if m == "none" => Rewrite::None,
            Some(Field::Ok(RawRewrite::Mode(m))) if m == "from_backend" => {
                match addresses.first() {
                    Some(a) => Rewrite::Host(a.host.clone()),
                    None => Rewrite::None,
                }
            }
            Some(Field::Ok(RawRewrite::Mode(m))) => {
                issues.push(ConfigIssue::new(
                    source,
                    "domain_rewrite",
                    format!("unknown value {m:?}; {REWRITE_EXPECTED}"),
                ));
                Rewrite::None
            }
            Some(Field::Ok(RawRewrite::Explicit(explicit))) => {
                let host = explicit.trim();
                // Whitespace, `/` and control characters, which no host name has. Looser than a backend
                // host in `addresses`: this name is only told to the backend, never resolved.
                let bad = |c: char| c.is_whitespace() || c.is_control() || c == '/';
                if host.is_empty() || host.chars().any(bad) || host.len() > 255 {
                    issues.push(ConfigIssue::new(
                        source,
                        "domain_rewrite.explicit",
                        format!("{explicit:?} is not a host name"),
                    ));
                    Rewrite::None
                } else {
                    Rewrite::Host(host.to_owned())
                }
            }
        };

        let raw_t = table(raw.timeouts, source, "timeouts", &mut issues).unwrap_or_default();
        unknown_keys(
            &raw_t.unknown,
            "timeouts.",
            &["connect", "read", "write"],
            source,
            &mut issues,
        );
        let d = Timeouts::default();
        let timeouts = Timeouts {
            connect: duration(
                source,
                "timeouts.connect",
                raw_t.connect,
                d.connect,
                &mut issues,
            ),
            read: duration(source, "timeouts.read", raw_t.read, d.read, &mut issues),
            write: duration(source, "timeouts.write", raw_t.write, d.write, &mut issues),
        };

        let send_proxy_protocol = field(
            raw.send_proxy_protocol,
            source,
            "send_proxy_protocol",
            &mut issues,
        );
        let max_players = field(raw.max_players, source, "max_players", &mut issues);
        let disconnect_message = field(
            raw.disconnect_message,
            source,
            "disconnect_message",
            &mut issues,
        );
        if let Some(n) = disconnect_message
            .as_deref()
            .and_then(crate::response::status_overflow)
        {
            let reason = crate::response::overflow_reason(
                "status answer",
                n,
                crate::response::VANILLA_MAX_STRING,
                "vanilla clients",
            );
            issues.push(ConfigIssue::new(source, "disconnect_message", reason));
        }

        let server = ServerConfig {
            name,
            source: source.to_owned(),
            domains,
            addresses,
            proxy_mode,
            send_proxy_protocol: send_proxy_protocol.unwrap_or(false),
            proxy_protocol_version,
            domain_rewrite,
            max_players: max_players.unwrap_or(0),
            disconnect_message: disconnect_message
                .unwrap_or_else(|| DEFAULT_DISCONNECT_MESSAGE.to_owned()),
            timeouts,
            key_prefix: String::new(),
        };
        Ok((server, issues))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::*;

    #[test]
    fn a_blank_disconnect_message_is_warned_about() {
        let base = "domains = [\"a.example.com\"]\naddresses = [\"10.0.0.1:25565\"]\n";
        for (message, warned) in [
            ("\"\"", true),
            ("\" \\n \"", true),
            ("\"§r§l\\u200b \"", true),
            ("\"Back soon\"", false),
            ("\"§cBack\"", false),
        ] {
            let s = server(&format!("{base}disconnect_message = {message}")).unwrap();
            let blank = s
                .warnings()
                .iter()
                .any(|w| w.key == "disconnect_message" && w.reason.starts_with("is blank"));
            assert_eq!(blank, warned, "{message}");
        }
        assert!(server(base).unwrap().warnings().is_empty());
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let s =
            server("domains = [\"Play.Example.com.\"]\naddresses = [\"10.0.0.1:25565\"]").unwrap();
        assert_eq!(s.name, "lobby");
        assert_eq!(s.domains, vec!["play.example.com"]);
        assert_eq!(s.proxy_mode, ProxyMode::Passthrough);
        assert!(!s.send_proxy_protocol);
        assert_eq!(s.proxy_protocol_version, ProxyProtocolVersion::V2);
        assert_eq!(s.domain_rewrite, Rewrite::None);
        assert_eq!(s.max_players, 0);
        assert_eq!(s.disconnect_message, DEFAULT_DISCONNECT_MESSAGE);
        assert_eq!(s.timeouts, Timeouts::default());
        assert_eq!(s.timeouts.connect, Duration::from_secs(5));
    }

    #[test]
    fn every_key_is_read() {
        let s = server(
            r#"
            name = "survival"
            domains = ["mc.example.com", "*.mc.example.com"]
            addresses = ["backend-1:25566", "[::1]:25567"]
            proxy_mode = "zero_copy"
            send_proxy_protocol = true
            proxy_protocol_version = 1
            domain_rewrite = { explicit = "internal.host" }
            max_players = 20
            disconnect_message = "Down for maintenance"
            [timeouts]
            connect = "2s"
            read = "2m"
            write = "1h"
            "#,
        )
        .unwrap();
        assert_eq!(s.name, "survival");
        assert_eq!(s.addresses[1].host, "::1");
        assert_eq!(s.addresses[1].to_string(), "[::1]:25567");
        assert_eq!(s.proxy_mode, ProxyMode::ZeroCopy);
        assert_eq!(s.proxy_protocol_version, ProxyProtocolVersion::V1);
        assert_eq!(s.domain_rewrite, Rewrite::Host("internal.host".into()));
        assert_eq!(s.max_players, 20);
        assert_eq!(s.timeouts.read, Duration::from_secs(120));
        assert_eq!(s.timeouts.write, Duration::from_secs(3600));
    }

    #[test]
    fn from_backend_rewrite_uses_the_first_address_host() {
        let s = server(
            "domains = [\"a.b\"]\naddresses = [\"lobby.internal:25566\", \"x:1\"]\ndomain_rewrite = \"from_backend\"",
        )
        .unwrap();
        assert_eq!(s.domain_rewrite, Rewrite::Host("lobby.internal".into()));
    }

    #[test]
    fn a_name_is_trimmed_and_has_no_control_character() {
        let s =
            server("name = \" survival \"\ndomains = [\"a.b\"]\naddresses = [\"x:1\"]").unwrap();
        assert_eq!(s.name, "survival");
        for bad in ["\\n", "a\\u001b[31m"] {
            let e = server(&format!(
                "name = \"{bad}\"\ndomains = [\"a.b\"]\naddresses = [\"x:1\"]"
            ))
            .unwrap_err();
            assert_eq!(keys(e), vec!["name"], "{bad}");
        }
        // A file name is the default name: the message says which to change.
        let text = "domains = [\"a.b\"]\naddresses = [\"x:1\"]";
        let e = ServerConfig::from_toml("servers/a\tb.toml", "a\tb", text).unwrap_err();
        assert!(e.to_string().contains("the file name \"a\\tb\""), "{e}");
    }

    #[test]
    fn missing_domains_and_addresses_are_both_reported() {
        let e = server("name = \"x\"").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["domains", "addresses"]);
        assert!(e
            .to_string()
            .contains("servers/lobby.toml: `domains`: at least one domain"));
    }

    #[test]
    fn network_key_is_rejected_for_forwarding_modes() {
        let e = server("domains = [\"a\"]\naddresses = [\"a:1\"]\nnetwork = \"main\"").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["network"]);
        assert!(e
            .to_string()
            .contains("forwarding modes cannot belong to a network"));
    }

    #[test]
    fn unimplemented_proxy_mode_is_named() {
        let e = server("domains = [\"a\"]\naddresses = [\"a:1\"]\nproxy_mode = \"offline\"")
            .unwrap_err();
        assert!(
            e.to_string().contains("\"offline\" is not implemented"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = server("domains = [\"a\"]\naddresses = [\"a:1\"]\nmax_player = 3").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["max_player"]);
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn a_disconnect_message_vanilla_cannot_read_is_refused() {
        let with = |message: &str| {
            let text = format!(
                "domains = [\"a\"]\naddresses = [\"a:1\"]\ndisconnect_message = {:?}",
                message
            );
            server(&text)
        };
        assert!(with(&"x".repeat(32_000)).is_ok());
        let e = with(&"x".repeat(33_000)).unwrap_err();
        assert_eq!(keys(e.clone()), vec!["disconnect_message"]);
        // The budget is said in the units it is counted in: the answer's length and what to cut.
        let over = crate::response::status_overflow(&"x".repeat(33_000)).unwrap_or(0);
        assert!(over > 33_000, "{over}");
        assert!(
            e.0[0]
                .reason
                .contains(&format!("would be {over} characters"))
                && e.0[0]
                    .reason
                    .contains(&format!("shorten it by {} characters", over - 32_767)),
            "{e}"
        );
        // Escaping counts: each quote is two characters in the JSON.
        assert!(with(&"\"".repeat(17_000)).is_err());
        // Cutting what it says is enough.
        let fits = 33_000 - (over - 32_767);
        assert!(with(&"x".repeat(fits)).is_ok());
        assert!(with(&"x".repeat(fits + 1)).is_err());
    }

    #[test]
    fn bad_rewrite_value_is_an_error() {
        let e = server("domains = [\"a\"]\naddresses = [\"a:1\"]\ndomain_rewrite = \"sometimes\"")
            .unwrap_err();
        assert_eq!(keys(e), vec!["domain_rewrite"]);
        let reason = |rewrite: &str| {
            let text =
                format!("domains = [\"a\"]\naddresses = [\"a:1\"]\ndomain_rewrite = {rewrite}");
            server(&text).map_err(|e| (keys(e.clone()), e.0[0].reason.clone()))
        };
        let (at, why) = reason("{ explicti = \"x\" }").unwrap_err();
        assert_eq!(at, vec!["domain_rewrite"]);
        assert!(why.starts_with("unknown key `explicti`; expected"), "{why}");
        let (_, why) = reason("{ explicit = \"a\", foo = 1 }").unwrap_err();
        assert!(why.contains("`foo`"), "{why}");
        let (_, why) = reason("{ explicit = 5 }").unwrap_err();
        assert!(why.contains("must be a string"), "{why}");
        let (_, why) = reason("7").unwrap_err();
        assert!(why.starts_with("expected \"none\""), "{why}");
        for host in ["\"a b:25565/x\"", "\"a/b\"", "\"a\\tb\""] {
            let (at, why) = reason(&format!("{{ explicit = {host} }}")).unwrap_err();
            assert_eq!(at, vec!["domain_rewrite.explicit"], "{host}");
            assert!(why.ends_with("is not a host name"), "{why}");
        }
        assert!(reason("{ explicit = \"lobby.internal\" }").is_ok());
    }

    #[test]
    fn every_problem_of_a_file_is_reported_at_once_wrong_types_included() {
        let text = r#"
domains = []
addresses = ["nohost", "example.com:25565"]
proxy_mode = "offline"
max_players = -1
send_proxy_protocol = "yes"
domain_rewrite = 7
network = "x"
colour = "blue"

[timeouts]
connect = "abc"
read = "0s"
write = 5
idle = "1m"
"#;
        let e = server(text).unwrap_err();
        let mut found = keys(e.clone());
        found.sort();
        let mut expected = vec![
            "addresses",
            "colour",
            "domain_rewrite",
            "domains",
            "max_players",
            "network",
            "proxy_mode",
            "send_proxy_protocol",
            "timeouts.connect",
            "timeouts.idle",
            "timeouts.read",
            "timeouts.write",
        ];
        expected.sort();
        assert_eq!(found, expected, "{e}");
        let text = e.to_string();
        for reason in [
            "`max_players`: invalid value: integer `-1`, expected a whole number from 0 to 4294967295",
            "`send_proxy_protocol`: invalid type: string \"yes\", expected a boolean",
            "`timeouts.write`: invalid type: integer `5`, expected a string (write a duration",
            "`colour`: unknown field `colour`, expected one of `name`, `domains`",
            "`disconnect_message`, `timeouts`\n",
            "`timeouts.idle`: unknown field `idle`, expected one of `connect`, `read`, `write`",
        ] {
            assert!(text.contains(reason), "missing {reason:?} in:\n{text}");
        }
    }
}
