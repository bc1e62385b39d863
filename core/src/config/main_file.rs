//! The main file (`nethergate.toml`): where to listen, where the server files are, global limits and the
//! `[ip_filter]` section.

use super::docker::{
    docker, DockerConfig, RawDocker, DEFAULT_POLL_INTERVAL, DEFAULT_RECONNECT_DELAY,
};
use super::field::{duration, field, table, unknown_keys, Field};
use super::floor::{blank_message, DOCKER_FLOORS, HANDSHAKE_FLOOR};
use super::syntax::toml_issue;
use super::{ConfigErrors, ConfigIssue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The main file, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MainConfig {
    /// Where to listen.
    pub bind: SocketAddr,
    /// Directory of server files (resolved against the main file's directory).
    pub servers_dir: PathBuf,
    /// Limit for a client to send its handshake and login start.
    pub handshake_timeout: Duration,
    /// Concurrent client connections allowed; 0 = unlimited.
    pub max_connections: usize,
    /// How long live sessions may go on after a shutdown signal before they are closed.
    pub shutdown_timeout: Duration,
    /// The built-in pre-connect plugin refusing clients by address (`[ip_filter]`), if configured.
    pub ip_filter: Option<crate::plugin::IpFilter>,
    /// Discovery of servers from Docker container labels (`[docker]`); off when absent.
    pub docker: Option<DockerConfig>,
}

#[derive(Deserialize)]
struct RawMain {
    bind: Option<Field<String>>,
    servers_dir: Option<Field<String>>,
    handshake_timeout: Option<Field<String>>,
    max_connections: Option<Field<usize>>,
    shutdown_timeout: Option<Field<String>>,
    ip_filter: Option<Field<RawIpFilter>>,
    docker: Option<Field<RawDocker>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

const MAIN_KEYS: &[&str] = &[
    "bind",
    "servers_dir",
    "handshake_timeout",
    "max_connections",
    "shutdown_timeout",
    "ip_filter",
    "docker",
];

#[derive(Deserialize)]
struct RawIpFilter {
    allow: Option<Field<Vec<String>>>,
    deny: Option<Field<Vec<String>>>,
    message: Option<Field<String>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

/// Default message for clients refused by `[ip_filter]`.
pub const DEFAULT_IP_FILTER_MESSAGE: &str = "You are not allowed to join this server.";

fn ip_filter(
    source: &str,
    raw: RawIpFilter,
    issues: &mut Vec<ConfigIssue>,
) -> crate::plugin::IpFilter {
    unknown_keys(
        &raw.unknown,
        "ip_filter.",
        &["allow", "deny", "message"],
        source,
        issues,
    );
    let allow = field(raw.allow, source, "ip_filter.allow", issues).unwrap_or_default();
    let deny = field(raw.deny, source, "ip_filter.deny", issues).unwrap_or_default();
    let message = field(raw.message, source, "ip_filter.message", issues)
        .unwrap_or_else(|| DEFAULT_IP_FILTER_MESSAGE.to_owned());
    let n = crate::response::kick_length(&message);
    if n > crate::response::VANILLA_MAX_KICK {
        let limit = crate::response::VANILLA_MAX_KICK;
        let reason = crate::response::overflow_reason("kick", n, limit, "vanilla clients");
        issues.push(ConfigIssue::new(source, "ip_filter.message", reason));
    }
    crate::plugin::IpFilter {
        allow: networks(source, "ip_filter.allow", &allow, issues),
        deny: networks(source, "ip_filter.deny", &deny, issues),
        message,
    }
}

fn networks(
    source: &str,
    key: &str,
    values: &[String],
    issues: &mut Vec<ConfigIssue>,
) -> Vec<crate::plugin::IpNet> {
    values
        .iter()
        .filter_map(|v| {
            let v = v.trim();
            // A bare address means just that host.
            let parsed = v.parse::<crate::plugin::IpNet>().or_else(|_| {
                v.parse::<std::net::IpAddr>()
                    .map(crate::plugin::IpNet::from)
            });
            match parsed {
                Ok(n) => Some(unmapped(n)),
                Err(_) => {
                    issues.push(ConfigIssue::new(
                        source,
                        key,
                        format!("{v:?} is not an IP address or CIDR network (e.g. \"10.0.0.0/8\")"),
                    ));
                    None
                }
            }
        })
        .collect()
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`, `::ffff:192.0.2.7`) as the IPv4 network it is: a
/// client of a dual-stack listener is matched as the IPv4 address it is, which no IPv6 network contains,
/// so such an entry would otherwise never match anyone.
fn unmapped(net: crate::plugin::IpNet) -> crate::plugin::IpNet {
    use crate::plugin::IpNet;
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
            .addr()
            .to_ipv4_mapped()
            .and_then(|v4| ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
            .map_or(net, IpNet::V4),
        _ => net,
    }
}

/// The text of the main file at `path`.
pub(super) fn read_main_file(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigIssue::new(
            &path.display().to_string(),
            "",
            format!("cannot read the main config file: {e}"),
        )])
    })
}

/// `handshake_timeout` when the main file has none.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

impl MainConfig {
    /// Valid settings that are almost surely mistakes (see [`ServerConfig::warnings`](super::ServerConfig::warnings)); `source` names
    /// the main file.
    pub fn warnings(&self, source: &str) -> Vec<ConfigIssue> {
        let mut warnings: Vec<ConfigIssue> = HANDSHAKE_FLOOR
            .check(
                source,
                "",
                self.handshake_timeout,
                DEFAULT_HANDSHAKE_TIMEOUT,
            )
            .into_iter()
            .collect();
        if self.bind.port() == 0 {
            warnings.push(ConfigIssue::new(
                source,
                "bind",
                format!(
                    "port 0 in {} lets the system pick a free port at every start, so players cannot \
                     know where to connect (the startup log names the port it got); give a fixed port \
                     such as 25565",
                    self.bind
                ),
            ));
        }
        if let Some(docker) = &self.docker {
            let [poll, reconnect] = &DOCKER_FLOORS;
            warnings.extend(poll.check(source, "", docker.poll_interval, DEFAULT_POLL_INTERVAL));
            warnings.extend(reconnect.check(
                source,
                "",
                docker.reconnect_delay,
                DEFAULT_RECONNECT_DELAY,
            ));
        }
        // 1.13 and later read a kick eight times longer: refused only over that (see `ip_filter`).
        if let Some(filter) = &self.ip_filter {
            let (n, limit) = (
                crate::response::kick_length(&filter.message),
                crate::response::VANILLA_MAX_STRING,
            );
            if n > limit {
                let why = crate::response::overflow_reason("kick", n, limit, "1.7–1.12 clients");
                warnings.push(ConfigIssue::new(source, "ip_filter.message", why));
            }
            let who = "a refused player";
            warnings.extend(blank_message(
                source,
                "",
                "ip_filter.message",
                &filter.message,
                who,
            ));
        }
        warnings
    }

    /// Reads, parses and validates the main file at `path` alone (its server files are not read).
    pub fn read(path: &Path) -> Result<MainConfig, ConfigErrors> {
        MainConfig::from_toml(path, &read_main_file(path)?)
    }

    /// The keys whose values differ between `self` and `other`, in the file's order (`ip_filter` and
    /// `docker` stand for their whole sections).
    pub fn changed_keys(&self, other: &MainConfig) -> Vec<&'static str> {
        let MainConfig {
            bind,
            servers_dir,
            handshake_timeout,
            max_connections,
            shutdown_timeout,
            ip_filter,
            docker,
        } = self;
        [
            ("bind", *bind != other.bind),
            ("servers_dir", *servers_dir != other.servers_dir),
            (
                "handshake_timeout",
                *handshake_timeout != other.handshake_timeout,
            ),
            ("max_connections", *max_connections != other.max_connections),
            (
                "shutdown_timeout",
                *shutdown_timeout != other.shutdown_timeout,
            ),
            ("ip_filter", *ip_filter != other.ip_filter),
            ("docker", *docker != other.docker),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }

    /// Parses and validates the main file; `path` locates it so `servers_dir` can be resolved.
    pub fn from_toml(path: &Path, text: &str) -> Result<MainConfig, ConfigErrors> {
        let checked = MainConfig::check(path, text)?;
        if !checked.issues.is_empty() {
            return Err(ConfigErrors(checked.issues));
        }
        Ok(checked.main)
    }

    /// Parses and validates the main file, keeping what it could read even when some values are wrong
    /// (those have their defaults); `Err` only when the file is not TOML at all.
    pub(super) fn check(path: &Path, text: &str) -> Result<CheckedMain, ConfigErrors> {
        let source = path.display().to_string();
        let raw: RawMain =
            toml::from_str(text).map_err(|e| ConfigErrors(vec![toml_issue(&source, text, &e)]))?;
        let mut issues = Vec::new();
        unknown_keys(&raw.unknown, "", MAIN_KEYS, &source, &mut issues);
        let problems_before_bind = issues.len();
        let bind_text = field(raw.bind, &source, "bind", &mut issues);
        let bind_text = bind_text.as_deref().map_or("0.0.0.0:25565", str::trim);
        let bind = bind_text.parse().unwrap_or_else(|_| {
            issues.push(ConfigIssue::new(&source, "bind", bind_problem(bind_text)));
            SocketAddr::from(([0, 0, 0, 0], 25565))
        });
        let bind_known = issues.len() == problems_before_bind;
        let base = path.parent().unwrap_or(Path::new("."));
        let problems_before = issues.len();
        let servers_dir = field(raw.servers_dir, &source, "servers_dir", &mut issues);
        let servers_dir_known = issues.len() == problems_before;
        let servers_dir = base.join(servers_dir.as_deref().unwrap_or("servers"));
        // `servers_dir = ""` beside a main file given as a bare name: the current directory, as "." is.
        let servers_dir = match servers_dir.as_os_str().is_empty() {
            true => PathBuf::from("."),
            false => servers_dir,
        };
        let handshake_timeout = duration(
            &source,
            "handshake_timeout",
            raw.handshake_timeout,
            DEFAULT_HANDSHAKE_TIMEOUT,
            &mut issues,
        );
        let shutdown_timeout = duration(
            &source,
            "shutdown_timeout",
            raw.shutdown_timeout,
            Duration::from_secs(30),
            &mut issues,
        );
        let max_connections = field(raw.max_connections, &source, "max_connections", &mut issues);
        let ip_filter = table(raw.ip_filter, &source, "ip_filter", &mut issues)
            .map(|f| ip_filter(&source, f, &mut issues));
        let docker = table(raw.docker, &source, "docker", &mut issues)
            .map(|d| docker(&source, d, &mut issues));
        let main = MainConfig {
            bind,
            servers_dir,
            handshake_timeout,
            max_connections: max_connections.unwrap_or(0),
            shutdown_timeout,
            ip_filter,
            docker,
        };
        Ok(CheckedMain {
            main,
            servers_dir_known,
            bind_known,
            issues,
        })
    }
}

/// The main file as read, with its problems.
pub(super) struct CheckedMain {
    /// Valid when `issues` is empty; otherwise wrong values have their defaults.
    pub(super) main: MainConfig,
    /// `servers_dir` is the configured directory (or the default): its server files can be checked.
    pub(super) servers_dir_known: bool,
    /// `bind` is the configured address (or the default): server addresses can be checked against it.
    pub(super) bind_known: bool,
    pub(super) issues: Vec<ConfigIssue>,
}

/// Why `text` is no `bind` address, in words: empty, no port or an empty one, a port over 65535, an IPv6
/// address without brackets, or a host name where an IP address belongs; otherwise just that it is none.
fn bind_problem(text: &str) -> String {
    let example = "(e.g. \"0.0.0.0:25565\", or \"[::]:25565\" for IPv6 and IPv4)";
    let is_ip = |h: &str| h.parse::<std::net::IpAddr>().is_ok();
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    let host_name = |h: &str| {
        h.bytes().any(|b| b.is_ascii_alphabetic())
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    let why = match text.rsplit_once(':') {
        _ if text.is_empty() => "is empty".to_owned(),
        _ if bare.parse::<std::net::Ipv6Addr>().is_ok() => {
            "has no port (an IPv6 address with a port is written in brackets: \"[::1]:25565\")"
                .to_owned()
        }
        _ if is_ip(bare) => "has no port".to_owned(),
        None => "has no port".to_owned(),
        Some(("", _)) => "has no IP address (Go's \":25565\" is \"0.0.0.0:25565\" here)".to_owned(),
        Some((_, "")) => "has no port after its `:`".to_owned(),
        Some((host, port)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let digits = port.bytes().all(|b| b.is_ascii_digit());
            let over = port.trim_start_matches('0').len() > 5
                || port.parse::<u32>().is_ok_and(|p| p > 65535);
            if digits && over {
                format!("has port {port}, over 65535")
            } else if host.contains('%') && is_ip(host.split('%').next().unwrap_or_default()) {
                "has an IPv6 zone by name: write its number (`%2`, see `ip link`)".to_owned()
            } else if digits && host_name(host) {
                "is a host name and a port: `bind` takes an IP address (the address of one \
                 interface, or 0.0.0.0 for all)"
                    .to_owned()
            } else {
                "is not an IP:port address".to_owned()
            }
        }
    };
    format!("{text:?} {why} {example}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::*;

    #[test]
    fn a_bad_bind_says_what_is_wrong_with_it() {
        for (bind, why) in [
            ("127.0.0.1:99999", "has port 99999, over 65535"),
            (
                "[::1]:99999999999999999999999",
                "has port 99999999999999999999999, over",
            ),
            ("0.0.0.0", "has no port"),
            (
                "::1",
                "has no port (an IPv6 address with a port is written in brackets",
            ),
            (
                "::1:8080",
                "has no port (an IPv6 address with a port is written in brackets",
            ),
            ("[::1]", "has no port (an IPv6"),
            ("0.0.0.0:", "has no port after its `:`"),
            ("[::1]:", "has no port after its `:`"),
            (":25565", "has no IP address"),
            ("", "is empty"),
            (
                "localhost:25565",
                "is a host name and a port: `bind` takes an IP address",
            ),
            ("mc.example.com:25565", "is a host name and a port"),
            ("[fe80::1%eth0]:25565", "has an IPv6 zone by name"),
            ("1.2.3.4:25565:1", "is not an IP:port address"),
            ("1.2.3.4 :25565", "is not an IP:port address"),
            ("0.0.0.0:port", "is not an IP:port address"),
            ("nowhere", "has no port"),
        ] {
            let reason = bind_problem(bind);
            assert!(
                reason.starts_with(&format!("{bind:?} {why}")),
                "{bind}: {reason}"
            );
            assert!(reason.ends_with("for IPv6 and IPv4)"), "{reason}");
        }
    }

    #[test]
    fn an_empty_servers_dir_is_the_main_files_directory() {
        let main =
            MainConfig::from_toml(Path::new("nethergate.toml"), "servers_dir = \"\"").unwrap();
        assert_eq!(main.servers_dir, Path::new("."));
        let main =
            MainConfig::from_toml(Path::new("/etc/ng/n.toml"), "servers_dir = \"\"").unwrap();
        assert_eq!(main.servers_dir, Path::new("/etc/ng/"));
    }

    #[test]
    fn changed_main_keys_are_named() {
        let path = Path::new("/etc/nethergate/nethergate.toml");
        let before = MainConfig::from_toml(path, "max_connections = 10\n").unwrap();
        assert!(before.changed_keys(&before.clone()).is_empty());
        let after = MainConfig::from_toml(
            path,
            "max_connections = 20\nbind = \"127.0.0.1:1\"\n[ip_filter]\ndeny = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        assert_eq!(
            before.changed_keys(&after),
            ["bind", "max_connections", "ip_filter"]
        );
    }

    #[test]
    fn a_bind_on_port_0_is_warned_about() {
        let warned = |bind: &str| {
            MainConfig::from_toml(Path::new("n.toml"), &format!("bind = \"{bind}\""))
                .unwrap()
                .warnings("n.toml")
                .iter()
                .filter(|w| w.key == "bind")
                .count()
        };
        assert_eq!(warned("0.0.0.0:0"), 1);
        assert_eq!(warned("[::]:0"), 1);
        assert_eq!(warned("0.0.0.0:25565"), 0);
        assert_eq!(warned("127.0.0.1:1"), 0);
    }

    #[test]
    fn main_file_defaults_and_errors() {
        let m = MainConfig::from_toml(
            Path::new("/etc/ng/nethergate.toml"),
            "bind = \"127.0.0.1:25577\"",
        )
        .unwrap();
        assert_eq!(m.bind, "127.0.0.1:25577".parse().unwrap());
        assert_eq!(m.servers_dir, Path::new("/etc/ng/servers"));
        assert_eq!(m.handshake_timeout, Duration::from_secs(5));
        let e = MainConfig::from_toml(
            Path::new("n.toml"),
            "bind = \"nowhere\"\nhandshake_timeout = \"x\"",
        )
        .unwrap_err();
        assert_eq!(keys(e), vec!["bind", "handshake_timeout"]);
    }

    #[test]
    fn ip_filter_section_is_validated() {
        let m = MainConfig::from_toml(
            Path::new("n.toml"),
            "[ip_filter]\ndeny = [\"203.0.113.0/24\", \"198.51.100.9\"]",
        )
        .unwrap();
        let f = m.ip_filter.unwrap();
        assert_eq!(f.deny.len(), 2);
        assert_eq!(f.message, DEFAULT_IP_FILTER_MESSAGE);
        // IPv4-mapped entries are the IPv4 networks they name: clients are matched as IPv4 addresses.
        let m = MainConfig::from_toml(
            Path::new("n.toml"),
            "[ip_filter]\ndeny = [\"::ffff:127.0.0.1\", \"::ffff:10.0.0.0/104\", \"::ffff:0:0/80\", \"2001:db8::/32\"]",
        )
        .unwrap();
        let deny: Vec<String> = m
            .ip_filter
            .unwrap()
            .deny
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            deny,
            [
                "127.0.0.1/32",
                "10.0.0.0/8",
                "::ffff:0.0.0.0/80",
                "2001:db8::/32"
            ]
        );
        let e = MainConfig::from_toml(
            Path::new("n.toml"),
            "[ip_filter]\nallow = [\"10.0.0.0/33\"]",
        )
        .unwrap_err();
        assert_eq!(keys(e), vec!["ip_filter.allow"]);
        // A kick vanilla clients cannot read is refused like a `disconnect_message`.
        let with = |message: &str| {
            MainConfig::from_toml(
                Path::new("n.toml"),
                &format!("[ip_filter]\ndeny = [\"203.0.113.0/24\"]\nmessage = {message:?}"),
            )
        };
        let warned = |m: &MainConfig| {
            m.warnings("n.toml")
                .iter()
                .any(|w| w.key == "ip_filter.message" && w.reason.contains("1.7–1.12 clients"))
        };
        assert!(with(&"x".repeat(32_700)).is_ok_and(|m| !warned(&m)));
        // A blank one is valid, and warned about: the player would see no reason.
        for blank in ["", "  "] {
            let m = with(blank).expect("valid");
            let w = m.warnings("n.toml");
            assert!(
                w.iter()
                    .any(|w| w.key == "ip_filter.message" && w.reason.starts_with("is blank")),
                "{w:?}"
            );
        }
        assert!(with("Go away").is_ok_and(|m| m.warnings("n.toml").is_empty()));
        // Over what 1.7–1.12 clients read: a warning; over what any client reads: refused.
        assert!(with(&"x".repeat(32_760)).is_ok_and(|m| warned(&m)));
        let e = with(&"x".repeat(262_200)).unwrap_err();
        assert_eq!(keys(e.clone()), vec!["ip_filter.message"]);
        assert!(e.to_string().contains("the kick it is sent in"), "{e}");
    }
}
