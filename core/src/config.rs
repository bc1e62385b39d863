//! Configuration: the main file and one file per server, as plain data, plus validation that reports every
//! problem at once, each naming the file, the key and the reason.
//!
//! Parsing goes through loosely typed `Raw*` structs (strings for durations and addresses) so that a bad
//! value is reported with its key and a precise reason instead of a generic deserialisation error. Every
//! value in them is a [`Field`], and unknown keys are collected rather than refused, so a value of the
//! wrong type or a misspelt key does not stop the checks of the rest of the file: an admin sees every
//! problem of a file in one run. Only a file that is not TOML at all stops at its first syntax error.

use crate::rewrite::Rewrite;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration value that deserialises whatever its type: the `T` it should be, or why it is not.
enum Field<T> {
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
    let plain = WORDS.iter().find_map(|(rust, words)| {
        let head = reason.strip_suffix(rust)?.strip_suffix("expected ")?;
        Some(format!("{head}expected {words}"))
    });
    match (plain, value) {
        (Some(p), toml::Value::String(s)) if p.ends_with("a list") => {
            format!("{p} (write [{s:?}])")
        }
        (Some(p), _) => p,
        (None, _) => reason.to_owned(),
    }
}

/// The value of an optional key; a value of the wrong type is an issue naming `key`, and `None`.
fn field<T>(
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
fn table<T>(
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
fn unknown_keys(
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
        issues.push(ConfigIssue::new(
            source,
            format!("{prefix}{key}"),
            format!("unknown field `{key}`, expected one of {expected}"),
        ));
    }
}

/// Default `disconnect_message`.
pub const DEFAULT_DISCONNECT_MESSAGE: &str =
    "Server is currently unreachable. Please try again later.";

/// One problem found in a configuration source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The file (or other source, such as a Docker container) the problem is in.
    pub source: String,
    /// The key, dotted for nested keys (`timeouts.connect`); empty when the whole file is unreadable.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigIssue {
    fn new(source: &str, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigIssue {
            source: source.to_owned(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.reason)
        } else {
            write!(f, "{}: `{}`: {}", self.source, self.key, self.reason)
        }
    }
}

/// Every problem found, in the order found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

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

/// A time limit shorter than this is valid but almost surely a mistake (a unit slip, `"1ms"` for
/// `"1m"`): it would close players who did nothing wrong. Such a value is warned about, not refused.
struct Floor {
    key: &'static str,
    floor: Duration,
    why: &'static str,
}

const HANDSHAKE_FLOOR: Floor = Floor {
    key: "handshake_timeout",
    floor: Duration::from_secs(1),
    why:
        "a handshake held up by one lost packet (a resend takes at least 200 ms) or by a slow link \
          arrives after it, and that player is closed before logging in",
};

const TIMEOUT_FLOORS: [Floor; 3] = [
    Floor {
        key: "timeouts.connect",
        floor: Duration::from_millis(100),
        why: "the limit covers resolving the backend's name and dialling each of its addresses in \
              turn, and a dial across a network takes at least a round trip, so dials to a distant \
              backend time out and the player is told the server is unreachable",
    },
    Floor {
        key: "timeouts.read",
        floor: Duration::from_secs(20),
        why: "a vanilla server sends a keep-alive only every 15 s (later when it lags), and a client is \
              silent while it logs in with Mojang or sits on a loading screen, so sessions in a quiet \
              moment are cut off with reason Timeout",
    },
    Floor {
        key: "timeouts.write",
        floor: Duration::from_secs(1),
        why: "a player whose connection stalls for a moment (Wi-Fi, a world download filling the \
              socket) is cut off",
    },
];

impl Floor {
    /// A warning when `value` is under the floor; `default` is the key's default, named as the way out.
    /// The key is named as `key_prefix` + the file's key (`nethergate.timeouts.read` for a label).
    fn check(
        &self,
        source: &str,
        key_prefix: &str,
        value: Duration,
        default: Duration,
    ) -> Option<ConfigIssue> {
        (value < self.floor).then(|| {
            ConfigIssue::new(
                source,
                format!("{key_prefix}{}", self.key),
                format!(
                    "{} is very short: {} (the default is {}; under {} is warned about)",
                    humantime_serde::re::humantime::format_duration(value),
                    self.why,
                    humantime_serde::re::humantime::format_duration(default),
                    humantime_serde::re::humantime::format_duration(self.floor),
                ),
            )
        })
    }
}

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
        if host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!("{s:?} has an invalid host"));
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

/// Where the Docker Engine API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerEndpoint {
    /// A unix socket (`unix:///var/run/docker.sock`).
    Unix(PathBuf),
    /// Plain HTTP over TCP (`tcp://host:port`).
    Tcp(BackendAddress),
}

impl fmt::Display for DockerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerEndpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            DockerEndpoint::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// Default `[docker] endpoint`.
pub const DEFAULT_DOCKER_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// Default `[docker] label_prefix`.
pub const DEFAULT_LABEL_PREFIX: &str = "nethergate";

/// The `[docker]` section: where the daemon is and how container labels are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// The Engine API endpoint.
    pub endpoint: DockerEndpoint,
    /// Labels are read under `<label_prefix>.` (`nethergate.enable`, `infrarust.domains`...).
    pub label_prefix: String,
    /// The network whose container IP is preferred as the backend address.
    pub network: Option<String>,
    /// How often the container list is re-read even without events.
    pub poll_interval: Duration,
    /// How long to wait before reconnecting after the daemon went away.
    pub reconnect_delay: Duration,
}

impl DockerConfig {
    /// The defaults of an empty `[docker]` section.
    pub fn new(endpoint: DockerEndpoint) -> DockerConfig {
        DockerConfig {
            endpoint,
            label_prefix: DEFAULT_LABEL_PREFIX.to_owned(),
            network: None,
            poll_interval: Duration::from_secs(30),
            reconnect_delay: Duration::from_secs(5),
        }
    }
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
struct RawDocker {
    endpoint: Option<Field<String>>,
    label_prefix: Option<Field<String>>,
    network: Option<Field<String>>,
    poll_interval: Option<Field<String>>,
    reconnect_delay: Option<Field<String>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

const DOCKER_KEYS: &[&str] = &[
    "endpoint",
    "label_prefix",
    "network",
    "poll_interval",
    "reconnect_delay",
];

fn docker_endpoint(source: &str, value: &str, issues: &mut Vec<ConfigIssue>) -> DockerEndpoint {
    let key = "docker.endpoint";
    if let Some(path) = value.strip_prefix("unix://") {
        if !path.starts_with('/') {
            issues.push(ConfigIssue::new(
                source,
                key,
                format!(
                    "{value:?}: the socket path must be absolute (unix:///var/run/docker.sock)"
                ),
            ));
        }
        return DockerEndpoint::Unix(PathBuf::from(path));
    }
    if let Some(addr) = value.strip_prefix("tcp://") {
        match BackendAddress::parse(addr.trim_end_matches('/')) {
            Ok(addr) => return DockerEndpoint::Tcp(addr),
            Err(reason) => issues.push(ConfigIssue::new(source, key, reason)),
        }
    } else {
        issues.push(ConfigIssue::new(
            source,
            key,
            format!("{value:?} is not unix:///path/to/docker.sock or tcp://host:port"),
        ));
    }
    DockerEndpoint::Unix(PathBuf::from("/var/run/docker.sock"))
}

fn docker(source: &str, raw: RawDocker, issues: &mut Vec<ConfigIssue>) -> DockerConfig {
    unknown_keys(&raw.unknown, "docker.", DOCKER_KEYS, source, issues);
    let endpoint = field(raw.endpoint, source, "docker.endpoint", issues);
    let endpoint = docker_endpoint(
        source,
        endpoint
            .as_deref()
            .unwrap_or(DEFAULT_DOCKER_ENDPOINT)
            .trim(),
        issues,
    );
    let mut config = DockerConfig::new(endpoint);
    if let Some(prefix) = field(raw.label_prefix, source, "docker.label_prefix", issues) {
        let trimmed = prefix.trim().trim_end_matches('.');
        if trimmed.is_empty()
            || trimmed
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '=')
        {
            issues.push(ConfigIssue::new(
                source,
                "docker.label_prefix",
                format!("{prefix:?} is not a label prefix (e.g. \"nethergate\" or \"infrarust\")"),
            ));
        } else {
            config.label_prefix = trimmed.to_owned();
        }
    }
    if let Some(network) = field(raw.network, source, "docker.network", issues) {
        if network.trim().is_empty() {
            issues.push(ConfigIssue::new(
                source,
                "docker.network",
                "must not be empty (leave it out to use each container's first network)",
            ));
        } else {
            config.network = Some(network.trim().to_owned());
        }
    }
    config.poll_interval = duration(
        source,
        "docker.poll_interval",
        raw.poll_interval,
        config.poll_interval,
        issues,
    );
    config.reconnect_delay = duration(
        source,
        "docker.reconnect_delay",
        raw.reconnect_delay,
        config.reconnect_delay,
        issues,
    );
    config
}

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
                Ok(n) => Some(n),
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
    "network",
];

/// Where `offset` is in `text`: (line, column, where the line starts), 1-based as editors count.
fn place(text: &str, offset: usize) -> Option<(usize, usize, usize)> {
    let before = text.get(..offset.min(text.len()))?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..)?.chars().count() + 1;
    Some((before.matches('\n').count() + 1, column, line_start))
}

/// The key `line` assigns (`key = value`), and where its `=` is; `None` when it is not an assignment.
fn assignment(line: &str) -> Option<(String, usize)> {
    let equals = line.find('=')?;
    let key = line.get(..equals)?.trim();
    let plain =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '"' | '\'');
    if key.is_empty() || !key.chars().all(plain) {
        return None;
    }
    Some((key.trim_matches(['"', '\'']).to_owned(), equals))
}

/// The starts of the lines of `text` before `end`, last first.
fn line_starts_before(text: &str, end: usize) -> impl Iterator<Item = usize> + '_ {
    let before = text.get(..end).unwrap_or("");
    let starts: Vec<usize> = std::iter::once(0)
        .chain(before.match_indices('\n').map(|(i, _)| i + 1))
        .filter(|&i| i < end)
        .collect();
    starts.into_iter().rev()
}

/// The key whose value a syntax error at `offset` (on the line starting at `line_start`) is in, when that
/// can be told for sure; `None` otherwise. The line the parser stopped at is not enough: an unclosed array
/// is only noticed on the next line, which has a key of its own. So the statement that is open is found by
/// parsing what comes before: text up to the start of a statement parses on its own, text that ends inside
/// one (an open array or string) does not.
fn syntax_error_key(text: &str, offset: usize, line_start: usize) -> Option<String> {
    let parses = |end: usize| {
        text.get(..end)
            .is_some_and(|t| t.parse::<toml::Table>().is_ok())
    };
    let line_at = |start: usize| {
        text.get(start..)
            .and_then(|t| t.lines().next())
            .unwrap_or("")
    };
    let start = if parses(line_start) {
        // The statement starts on the error line: its key, if the error is in the value, not the key.
        let (_, equals) = assignment(line_at(line_start))?;
        if offset <= line_start + equals {
            return None;
        }
        line_start
    } else {
        // A statement begun on an earlier line is still open: the nearest earlier line that looks like the
        // start of one, if text up to it parses (otherwise it is part of the open value, and it is unclear
        // which statement is open).
        let start = line_starts_before(text, line_start).find(|&start| {
            let line = line_at(start).trim();
            !line.is_empty()
                && !line.starts_with('#')
                && (line.contains('=') || line.starts_with('['))
        })?;
        if !parses(start) {
            return None;
        }
        start
    };
    let (key, _) = assignment(line_at(start))?;
    // Inside a `[section]`, the key is dotted with it.
    let section = line_starts_before(text, start).find_map(|s| {
        let line = line_at(s).trim();
        let name = line.strip_prefix('[')?.split_once(']')?.0.trim();
        let ok = !name.is_empty() && !name.starts_with('[') && parses(s);
        Some(ok.then(|| name.trim_matches(['"', '\'']).to_owned()))
    });
    match section {
        None => Some(key),
        Some(Some(section)) => Some(format!("{section}.{key}")),
        Some(None) => None,
    }
}

/// Turns a toml error into an issue. A syntax error (the text is not TOML) says where it is, and names
/// the key only when the value it is in is certain ([`syntax_error_key`]); an error in a value names the
/// key on its line.
fn toml_issue(source: &str, text: &str, err: &toml::de::Error) -> ConfigIssue {
    let syntax = text.parse::<toml::Table>().err();
    let err = syntax.as_ref().unwrap_or(err);
    let place = err.span().and_then(|span| place(text, span.start));
    // Some messages take several lines ("invalid array\nexpected `]`"); an issue is one line.
    let message = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    if syntax.is_some() {
        let key = err
            .span()
            .zip(place)
            .and_then(|(span, (_, _, line_start))| syntax_error_key(text, span.start, line_start))
            .unwrap_or_default();
        let reason = match (message.as_str(), place) {
            // toml has no message for some syntax errors (a value missing at the end of the text).
            ("", Some((line, column, _))) => {
                format!("syntax error at line {line}, column {column}")
            }
            (message, Some((line, column, _))) => {
                format!("syntax error at line {line}, column {column}: {message}")
            }
            ("", None) => "syntax error".to_owned(),
            (message, None) => format!("syntax error: {message}"),
        };
        return ConfigIssue::new(source, key, reason);
    }
    let key = place
        .and_then(|(_, _, line_start)| text.get(line_start..)?.lines().next())
        .and_then(|line| line.split_once('='))
        .map(|(key, _)| key.trim().trim_matches('"').to_owned())
        .unwrap_or_default();
    let reason = match (message.as_str(), place) {
        ("", _) => {
            let first = err.to_string();
            match first.lines().next().map(str::trim) {
                Some(line) if !line.is_empty() => line.to_owned(),
                _ => "invalid TOML".to_owned(),
            }
        }
        (message, Some((line, column, _))) => format!("{message} (line {line}, column {column})"),
        (message, None) => message.to_owned(),
    };
    ConfigIssue::new(source, key, reason)
}

/// The longest duration a setting accepts: 10 years as humantime counts them (365.25 days each), so that
/// `"10years"` itself is accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 31_557_600);

fn duration(
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

/// The text of the main file at `path`.
fn read_main_file(path: &Path) -> Result<String, ConfigErrors> {
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
    /// Valid settings that are almost surely mistakes (see [`ServerConfig::warnings`]); `source` names
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
    fn check(path: &Path, text: &str) -> Result<CheckedMain, ConfigErrors> {
        let source = path.display().to_string();
        let raw: RawMain =
            toml::from_str(text).map_err(|e| ConfigErrors(vec![toml_issue(&source, text, &e)]))?;
        let mut issues = Vec::new();
        unknown_keys(&raw.unknown, "", MAIN_KEYS, &source, &mut issues);
        let bind_text = field(raw.bind, &source, "bind", &mut issues);
        let bind_text = bind_text.as_deref().unwrap_or("0.0.0.0:25565");
        let bind = bind_text.parse().unwrap_or_else(|_| {
            issues.push(ConfigIssue::new(
                &source,
                "bind",
                format!("{bind_text:?} is not an IP:port address (e.g. \"0.0.0.0:25565\")"),
            ));
            SocketAddr::from(([0, 0, 0, 0], 25565))
        });
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
            issues,
        })
    }
}

/// The main file as read, with its problems.
struct CheckedMain {
    /// Valid when `issues` is empty; otherwise wrong values have their defaults.
    main: MainConfig,
    /// `servers_dir` is the configured directory (or the default): its server files can be checked.
    servers_dir_known: bool,
    issues: Vec<ConfigIssue>,
}

/// The characters UTS-46 (how domains are stored) and IDNA2003 (Java's `IDN.toASCII`, which vanilla clients
/// use for the host they send) convert differently, and what IDNA2003 makes of each.
const IDNA_DEVIATIONS: [(char, &str); 4] =
    [('ß', "ss"), ('ς', "σ"), ('\u{200C}', ""), ('\u{200D}', "")];

/// `domain` (as stored: punycode labels) as it is written, for messages.
fn domain_for_people(domain: &str) -> String {
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
fn vanilla_spelling(domain: &str) -> Option<String> {
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
fn domain(source: &str, value: &str, issues: &mut Vec<ConfigIssue>) -> Option<String> {
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
    fn check(
        source: &str,
        stem: &str,
        text: &str,
    ) -> Result<(ServerConfig, Vec<ConfigIssue>), ConfigErrors> {
        let raw: RawServer =
            toml::from_str(text).map_err(|e| ConfigErrors(vec![toml_issue(source, text, &e)]))?;
        let mut issues = Vec::new();
        unknown_keys(&raw.unknown, "", SERVER_KEYS, source, &mut issues);

        let mut name =
            field(raw.name, source, "name", &mut issues).unwrap_or_else(|| stem.to_owned());
        if name.trim().is_empty() {
            issues.push(ConfigIssue::new(source, "name", "must not be empty"));
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
                // What `addresses` refuses in a host, and control characters.
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

/// Whether `path` is a symbolic link whose target does not exist.
fn dangling(path: &Path) -> bool {
    path.is_symlink() && !path.exists()
}

/// The server files of a directory, each parsed on its own: one broken file does not hide the others.
#[derive(Debug, Default)]
pub struct ServerFiles {
    /// Each `*.toml` file, sorted by path, with its parse result.
    pub files: Vec<(PathBuf, Result<ServerConfig, ConfigErrors>)>,
    /// Per file that failed but is TOML, what it says as far as it could be read (see
    /// [`ServerFiles::claims`]).
    pub partial: BTreeMap<PathBuf, ServerConfig>,
}

impl ServerFiles {
    /// Reads every `*.toml` file directly in `dir` (sorted by name, so errors are reported in a stable order).
    ///
    /// Hidden files (a name starting with `.`) are not server files: editors keep their lock files and
    /// swap files there (Emacs' `.#lobby.toml` is a link to nowhere while `lobby.toml` is open). Nor is
    /// `main_file`, when `servers_dir` is the main file's own directory.
    ///
    /// A directory that cannot be read is a problem of `main_file`'s `servers_dir` key (of the directory
    /// itself without a main file).
    pub fn read_dir(dir: &Path, main_file: Option<&Path>) -> Result<ServerFiles, ConfigErrors> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            ConfigErrors(vec![ConfigIssue::new(
                &main_file.unwrap_or(dir).display().to_string(),
                "servers_dir",
                format!("cannot read the directory {}: {e}", dir.display()),
            )])
        })?;
        let main_file = main_file.and_then(|m| m.canonicalize().ok());
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| !n.as_encoded_bytes().starts_with(b"."))
            })
            // A link to nowhere is listed too, so that reading it reports the missing target instead of
            // the server quietly vanishing; directories, sockets and FIFOs named `*.toml` are not.
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("toml"))
                    && (p.is_file() || dangling(p))
            })
            .filter(|p| main_file.is_none() || p.canonicalize().ok() != main_file)
            .collect();
        paths.sort();
        let mut fresh = ServerFiles::default();
        for path in paths {
            let result = match read_server(&path) {
                Ok((server, issues)) if issues.is_empty() => Ok(server),
                Ok((server, issues)) => {
                    fresh.partial.insert(path.clone(), server);
                    Err(ConfigErrors(issues))
                }
                Err(unreadable) => Err(unreadable),
            };
            fresh.files.push((path, result));
        }
        Ok(fresh)
    }

    /// What every file claims, in file order: a valid file's server, and what a file with problems says as
    /// far as it could be read (its name, and the domains that are valid). Checked for conflicts (a domain
    /// or a name taken twice) at startup, so that a conflict is reported with the other problems at once
    /// instead of after they are fixed; never routed to.
    pub fn claims(&self) -> Vec<ServerConfig> {
        self.files
            .iter()
            .filter_map(|(path, result)| result.as_ref().ok().or(self.partial.get(path)))
            .cloned()
            .collect()
    }

    /// Every problem of every file.
    pub fn issues(&self) -> Vec<ConfigIssue> {
        self.files
            .iter()
            .filter_map(|(_, r)| r.as_ref().err())
            .flat_map(|e| e.0.iter().cloned())
            .collect()
    }

    /// The servers that parsed.
    pub fn servers(&self) -> impl Iterator<Item = &ServerConfig> {
        self.files.iter().filter_map(|(_, r)| r.as_ref().ok())
    }
}

/// Reads and parses one server file.
pub fn read_server_file(path: &Path) -> Result<ServerConfig, ConfigErrors> {
    read_server(path).and_then(valid)
}

/// A checked server ([`ServerConfig::check`]) if it has no problems, else its problems.
fn valid((server, issues): (ServerConfig, Vec<ConfigIssue>)) -> Result<ServerConfig, ConfigErrors> {
    match issues.is_empty() {
        true => Ok(server),
        false => Err(ConfigErrors(issues)),
    }
}

/// Reads one server file as [`ServerConfig::check`] parses it; `Err` when it cannot be read or is not TOML.
fn read_server(path: &Path) -> Result<(ServerConfig, Vec<ConfigIssue>), ConfigErrors> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let why = match std::fs::read_link(path) {
            Ok(target) if dangling(path) => format!(
                "cannot read: it is a symbolic link to {}, which does not exist",
                target.display()
            ),
            _ => format!("cannot read: {e}"),
        };
        ConfigErrors(vec![ConfigIssue::new(&source, "", why)])
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    ServerConfig::check(&source, &stem, &text)
}

/// The servers currently live, by where they come from: server files, and providers such as Docker.
///
/// Reloading is all or nothing per source: a file that no longer parses keeps its previous version live, a
/// removed file removes its server; a provider's set is replaced whole. [`Catalog::route_table`] then either
/// builds a new table or reports why not (a domain conflict), and the caller keeps the previous table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    files: std::collections::BTreeMap<String, ServerConfig>,
    providers: std::collections::BTreeMap<String, Vec<ServerConfig>>,
}

impl Catalog {
    /// A catalog of already validated servers (as loaded at startup), keyed by their source.
    pub fn new(servers: &[ServerConfig]) -> Catalog {
        Catalog {
            files: servers
                .iter()
                .map(|s| (s.source.clone(), s.clone()))
                .collect(),
            providers: Default::default(),
        }
    }

    /// Applies a fresh read of the server directory and returns the problems of files that failed, each
    /// with whether its file's previous version stays live (`false` for a file that never loaded).
    pub fn update_files(&mut self, fresh: ServerFiles) -> Vec<(ConfigIssue, bool)> {
        let mut issues = Vec::new();
        let mut files = std::collections::BTreeMap::new();
        for (path, result) in fresh.files {
            let source = path.display().to_string();
            match result {
                Ok(server) => {
                    files.insert(source, server);
                }
                Err(errors) => {
                    let kept = match self.files.remove(&source) {
                        Some(previous) => files.insert(source, previous).is_none(),
                        None => false,
                    };
                    issues.extend(errors.0.into_iter().map(|issue| (issue, kept)));
                }
            }
        }
        self.files = files;
        issues
    }

    /// Replaces every server of `provider` (e.g. `"docker"`).
    pub fn set_provider(&mut self, provider: &str, servers: Vec<ServerConfig>) {
        // A provider with no servers is one that never had any: its first, empty list changes nothing.
        if servers.is_empty() {
            self.providers.remove(provider);
        } else {
            self.providers.insert(provider.to_owned(), servers);
        }
    }

    /// Every server, files first (by path), then providers (by name).
    pub fn servers(&self) -> Vec<ServerConfig> {
        self.all().cloned().collect()
    }

    /// Builds the route table of every server.
    pub fn route_table(&self) -> Result<crate::route::RouteTable, ConfigErrors> {
        crate::route::RouteTable::build(&self.servers())
    }

    /// Builds the route table of every server, as [`Catalog::route_table`]; when it cannot be built, each
    /// conflict is reported against a server that is new or changed since `previous` (the catalog whose
    /// table is live), not against one that was already live unchanged. The reason names both sides.
    pub fn route_table_since(
        &self,
        previous: &Catalog,
    ) -> Result<crate::route::RouteTable, ConfigErrors> {
        let servers = self.servers();
        let built = crate::route::RouteTable::build(&servers);
        if built.is_ok() {
            return built;
        }
        // A conflict is reported against the later of the two servers: put the unchanged ones first.
        let changed = self.new_or_changed(previous);
        let (mut ordered, changed): (Vec<ServerConfig>, Vec<ServerConfig>) =
            servers.into_iter().partition(|s| !changed.contains(&s));
        ordered.extend(changed);
        crate::route::RouteTable::build(&ordered).and(built)
    }

    /// The servers that are new or changed since `previous`: not in it, from the same source, as they are.
    pub fn new_or_changed(&self, previous: &Catalog) -> Vec<&ServerConfig> {
        let before: std::collections::HashMap<&str, Vec<&ServerConfig>> =
            previous
                .all()
                .fold(std::collections::HashMap::new(), |mut by_source, s| {
                    by_source.entry(s.source.as_str()).or_default().push(s);
                    by_source
                });
        self.all()
            .filter(|s| {
                !before
                    .get(s.source.as_str())
                    .is_some_and(|old| old.contains(s))
            })
            .collect()
    }

    /// Every server, in the order of [`Catalog::servers`].
    fn all(&self) -> impl Iterator<Item = &ServerConfig> {
        self.files.values().chain(self.providers.values().flatten())
    }
}

/// A whole configuration: the main file and its servers, every server valid and the route table buildable.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main file.
    pub main: MainConfig,
    /// The servers, in file order.
    pub servers: Vec<ServerConfig>,
}

impl Config {
    /// The warnings of the main file at `main_file` and of every server ([`ServerConfig::warnings`]).
    pub fn warnings(&self, main_file: &Path) -> Vec<ConfigIssue> {
        let mut warnings = self.main.warnings(&main_file.display().to_string());
        warnings.extend(self.servers.iter().flat_map(ServerConfig::warnings));
        warnings
    }

    /// Loads the main file at `path` and every server file of its `servers_dir`; reports every problem.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = read_main_file(path)?;
        // A main file with wrong values still names a server directory (unless `servers_dir` is the wrong
        // value): its files are checked too, so that every problem is reported at once.
        let CheckedMain {
            main,
            servers_dir_known,
            mut issues,
        } = MainConfig::check(path, &text)?;
        let mut servers = Vec::new();
        if servers_dir_known {
            match ServerFiles::read_dir(&main.servers_dir, Some(path)) {
                Ok(files) => {
                    issues.extend(files.issues());
                    servers = files.servers().cloned().collect();
                    // Conflicts with what a broken file claims too: every problem is reported at once.
                    if let Err(e) = crate::route::RouteTable::build(&files.claims()) {
                        issues.extend(e.0);
                    }
                }
                Err(e) => issues.extend(e.0),
            }
        }
        if !issues.is_empty() {
            return Err(ConfigErrors(issues));
        }
        Ok(Config { main, servers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(text: &str) -> Result<ServerConfig, ConfigErrors> {
        ServerConfig::from_toml("servers/lobby.toml", "lobby", text)
    }

    fn keys(e: ConfigErrors) -> Vec<String> {
        e.0.into_iter().map(|i| i.key).collect()
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
    fn a_time_limit_under_its_floor_is_a_warning_naming_key_and_value() {
        let with = |timeouts: &str| {
            server(&format!(
                "domains = [\"a.example\"]\naddresses = [\"10.0.0.1:25565\"]\n[timeouts]\n{timeouts}"
            ))
            .unwrap()
            .warnings()
        };
        assert!(with("").is_empty(), "the defaults are not warned about");
        // At each floor: still plausible.
        assert!(with("connect = \"100ms\"\nread = \"20s\"\nwrite = \"1s\"").is_empty());
        // A read limit of exactly the keep-alive interval still cuts a direction that carries only those.
        let warned = with("connect = \"99ms\"\nread = \"15s\"\nwrite = \"999ms\"");
        let keys: Vec<&str> = warned.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(
            keys,
            ["timeouts.connect", "timeouts.read", "timeouts.write"]
        );
        assert!(warned.iter().all(|w| w.source == "servers/lobby.toml"));
        assert!(
            warned[1].reason.starts_with("15s is very short")
                && warned[1].reason.contains("keep-alive")
                && warned[1]
                    .reason
                    .ends_with("(the default is 30s; under 20s is warned about)"),
            "{}",
            warned[1]
        );

        let main = |text: &str| {
            MainConfig::from_toml(Path::new("nethergate.toml"), text)
                .unwrap()
                .warnings("nethergate.toml")
        };
        assert!(main("").is_empty() && main("handshake_timeout = \"1s\"").is_empty());
        let warned = main("handshake_timeout = \"1ms\"");
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert_eq!(
            warned[0].to_string().split(" (the default").next(),
            Some(
                "nethergate.toml: `handshake_timeout`: 1ms is very short: a handshake held up by one \
                 lost packet (a resend takes at least 200 ms) or by a slow link arrives after it, and \
                 that player is closed before logging in"
            )
        );
    }

    #[test]
    fn new_or_changed_servers_are_those_not_live_as_they_are() {
        let at = |source: &str, domain: &str| {
            let mut s = server(&format!(
                "domains = [\"{domain}\"]\naddresses = [\"10.0.0.1:25565\"]"
            ))
            .unwrap();
            s.source = source.to_owned();
            s
        };
        let live = Catalog::new(&[at("a.toml", "a.example"), at("b.toml", "b.example")]);
        let mut next = live.clone();
        assert!(next.new_or_changed(&live).is_empty());
        next.set_provider("docker", vec![at("container x", "x.example")]);
        let changed = Catalog::new(&[at("a.toml", "a.example"), at("b.toml", "b2.example")]);
        let names = |c: Vec<&ServerConfig>| -> Vec<String> {
            c.iter().map(|s| s.domains.join(",")).collect()
        };
        assert_eq!(names(next.new_or_changed(&live)), ["x.example"]);
        assert_eq!(names(changed.new_or_changed(&live)), ["b2.example"]);
        // A change of a time limit alone is a change.
        let mut slower = at("b.toml", "b.example");
        slower.timeouts.read = Duration::from_secs(3);
        let retimed = Catalog::new(&[at("a.toml", "a.example"), slower]);
        assert_eq!(names(retimed.new_or_changed(&live)), ["b.example"]);
        // A removed server is not new or changed.
        assert!(live.new_or_changed(&next).is_empty());
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
    fn missing_domains_and_addresses_are_both_reported() {
        let e = server("name = \"x\"").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["domains", "addresses"]);
        assert!(e
            .to_string()
            .contains("servers/lobby.toml: `domains`: at least one domain"));
    }

    #[test]
    fn bad_duration_names_key_and_value() {
        let e = server("domains = [\"a\"]\naddresses = [\"a:1\"]\n[timeouts]\nconnect = \"5 parsecs\"\nread = \"0s\"")
            .unwrap_err();
        assert_eq!(keys(e.clone()), vec!["timeouts.connect", "timeouts.read"]);
        assert!(e.0[0].reason.contains("\"5 parsecs\""), "{e}");
    }

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
    fn bad_addresses_are_each_reported() {
        for bad in [
            "nohost",
            ":25565",
            "host:0",
            "host:99999",
            "::1:25565",
            "[::1:25565",
            "a b:1",
        ] {
            let e = server(&format!("domains = [\"a\"]\naddresses = [\"{bad}\"]")).unwrap_err();
            assert_eq!(keys(e), vec!["addresses"], "{bad}");
        }
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
    fn wrong_type_names_the_key() {
        let e =
            server("domains = [\"a\"]\naddresses = [\"a:1\"]\nmax_players = \"ten\"").unwrap_err();
        assert_eq!(keys(e), vec!["max_players"]);
    }

    #[test]
    fn a_syntax_error_says_where() {
        let e = server("domains = [\"a\"]\nthis is [not toml\n").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(keys(e.clone()), vec![""], "no key on that line: {e}");
        assert!(
            e.0[0]
                .reason
                .starts_with("syntax error at line 2, column 6: "),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("servers/lobby.toml: syntax error at line 2"),
            "{e}"
        );
        let e = server("domains = [\"é\", ]\naddresses = [\"a:1\"\n").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["addresses"]);
        assert_eq!(
            e.0[0].reason, "syntax error at line 3, column 1: invalid array: expected `]`",
            "{e}"
        );
    }

    #[test]
    fn a_syntax_error_names_the_key_whose_value_is_open_not_the_next_line() {
        // The unclosed array is noticed on the next line, which has a key of its own.
        let e = server("domains = [\"b.test\"\naddresses = 5\n").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["domains"], "{e}");
        assert_eq!(
            e.0[0].reason, "syntax error at line 2, column 1: invalid array: expected `]`",
            "{e}"
        );
        // Over several lines, and in a section.
        let e = server("domains = [\n  \"a.test\",\n  \"b.test\"\n\naddresses = [\"a:1\"]\n")
            .unwrap_err();
        assert_eq!(keys(e.clone()), vec!["domains"], "{e}");
        let e = server(
            "domains = [\"a\"]\naddresses = [\"a:1\"]\n[timeouts]\nconnect = [\"5s\"\nread = \"1s\"\n",
        )
        .unwrap_err();
        assert_eq!(keys(e.clone()), vec!["timeouts.connect"], "{e}");
        // Not sure which value is open (a line of an unclosed string looks like an assignment): no key.
        let e = server("disconnect_message = \"\"\"\nmax_players = 3\n").unwrap_err();
        assert_eq!(keys(e.clone()), vec![""], "{e}");
        assert!(e.0[0].reason.starts_with("syntax error at line "), "{e}");
        // The error in the key itself, not in a value.
        let e = server("domains = [\"a\"]\nmax players = 3\n").unwrap_err();
        assert_eq!(keys(e.clone()), vec![""], "{e}");
        let e = server("domains = [\"a\"]\n        max players = 3\n").unwrap_err();
        assert_eq!(keys(e.clone()), vec![""], "indented: {e}");
        // An indented key whose value is open.
        let e = server("[timeouts]\n  connect = \"5s\n").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["timeouts.connect"], "{e}");
    }

    #[test]
    fn an_error_in_a_value_names_its_key() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Strict {
            domains: Vec<String>,
            max_players: u32,
        }
        let text = "domains = [\"a\"]\nmax_players = \"ten\"\n";
        let err = toml::from_str::<Strict>(text).unwrap_err();
        let issue = toml_issue("s.toml", text, &err);
        assert_eq!(issue.key, "max_players", "{issue}");
        assert!(
            issue.reason.ends_with("(line 2, column 15)") && !issue.reason.contains("syntax"),
            "{issue}"
        );
    }

    #[test]
    fn value_missing_at_the_end_is_reported_with_a_reason() {
        // Found by the `config` fuzz target: toml gives an empty message for this one.
        let e = server("domains = [\"a\"]\naddresses = [\"a:1\"]\nmax_players =").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["max_players"]);
        assert_eq!(e.0[0].reason, "syntax error at line 3, column 14");
        let e = MainConfig::from_toml(Path::new("n.toml"), "[ip_filter]\nallow = ").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["ip_filter.allow"]);
        assert!(e.0[0].reason.contains("line 2"), "{e}");
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

    fn files(entries: &[(&str, &str)]) -> ServerFiles {
        ServerFiles {
            files: entries
                .iter()
                .map(|(name, text)| {
                    let path = PathBuf::from(format!("servers/{name}.toml"));
                    let result = ServerConfig::from_toml(&path.display().to_string(), name, text);
                    (path, result)
                })
                .collect(),
            partial: Default::default(),
        }
    }

    #[test]
    fn reload_keeps_a_broken_file_live_and_drops_a_removed_one() {
        let good_a = "domains = [\"a.example.com\"]\naddresses = [\"10.0.0.1:1\"]";
        let good_b = "domains = [\"b.example.com\"]\naddresses = [\"10.0.0.2:1\"]";
        let mut catalog = Catalog::default();
        assert!(catalog
            .update_files(files(&[("a", good_a), ("b", good_b)]))
            .is_empty());
        assert_eq!(catalog.servers().len(), 2);
        // a breaks, b disappears, c appears.
        let good_c = "domains = [\"c.example.com\"]\naddresses = [\"10.0.0.3:1\"]";
        let issues = catalog.update_files(files(&[
            ("a", "domains = 3"),
            ("c", good_c),
            ("d", "domains = 4"),
        ]));
        let keys: Vec<_> = issues
            .iter()
            .map(|(i, kept)| (i.source.as_str(), i.key.as_str(), *kept))
            .collect();
        // a had a version that stays live; d never loaded.
        assert_eq!(
            keys,
            [
                ("servers/a.toml", "domains", true),
                ("servers/a.toml", "addresses", true),
                ("servers/d.toml", "domains", false),
                ("servers/d.toml", "addresses", false)
            ]
        );
        let names: Vec<String> = catalog.servers().into_iter().map(|s| s.name).collect();
        assert_eq!(names, vec!["a", "c"]);
        let table = catalog.route_table().unwrap();
        assert_eq!(table.route("a.example.com").map(|s| s.name()), Some("a"));
        assert!(table.route("b.example.com").is_none());
    }

    #[test]
    fn provider_servers_join_the_table_and_conflicts_are_reported() {
        let mut catalog = Catalog::default();
        catalog.update_files(files(&[(
            "a",
            "domains = [\"a.example.com\"]\naddresses = [\"10.0.0.1:1\"]",
        )]));
        let docker = ServerConfig::from_toml(
            "docker container web",
            "web",
            "domains = [\"a.example.com\"]\naddresses = [\"172.17.0.2:25565\"]",
        )
        .unwrap();
        catalog.set_provider("docker", vec![docker]);
        let e = catalog.route_table().unwrap_err();
        assert!(e.to_string().contains("docker container web"), "{e}");
        catalog.set_provider("docker", Vec::new());
        assert!(catalog.route_table().is_ok());
        // A provider's empty list is the same catalog as none: nothing to reload.
        let mut with_empty = Catalog::default();
        with_empty.set_provider("docker", Vec::new());
        assert!(with_empty == Catalog::default());
    }

    /// A main file and its `servers` directory in a fresh temporary directory; the main file's path.
    fn layout(name: &str, main: &str, servers: &[(&str, &str)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nethergate-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("servers")).unwrap();
        for (file, text) in servers {
            std::fs::write(dir.join("servers").join(file), text).unwrap();
        }
        let path = dir.join("nethergate.toml");
        std::fs::write(&path, main).unwrap();
        path
    }

    /// Loads the layout at `path`, then removes it.
    fn load_once(path: &Path) -> Result<Config, ConfigErrors> {
        let loaded = Config::load(path);
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        loaded
    }

    /// (file name, key) of each problem.
    fn places(e: &ConfigErrors) -> Vec<(String, String)> {
        e.0.iter()
            .map(|i| {
                let file = Path::new(&i.source).file_name().unwrap_or_default();
                (file.to_string_lossy().into_owned(), i.key.clone())
            })
            .collect()
    }

    #[test]
    fn a_bad_main_file_does_not_hide_the_server_files_problems() {
        let good = "domains = [\"a.test\"]\naddresses = [\"10.0.0.1:1\"]";
        let clash = "domains = [\"a.test\"]\naddresses = [\"10.0.0.2:1\"]";
        let path = layout(
            "main-and-servers",
            "handshake_timeout = \"abc\"\n",
            &[
                ("a.toml", good),
                ("b.toml", clash),
                ("c.toml", "domains = []\naddresses = [\"10.0.0.3:1\"]"),
            ],
        );
        let e = load_once(&path).unwrap_err();
        let found = places(&e);
        for expected in [
            ("nethergate.toml", "handshake_timeout"),
            ("c.toml", "domains"),
            ("b.toml", "domains"),
        ] {
            let expected = (expected.0.to_owned(), expected.1.to_owned());
            assert!(
                found.contains(&expected),
                "{expected:?} missing in {found:?}"
            );
        }
        assert_eq!(found.len(), 3, "{e}");
        // An unreadable `servers_dir` is reported with the main file's problems.
        let path = layout(
            "main-and-missing-dir",
            "servers_dir = \"nowhere\"\nbind = \"x\"\n",
            &[],
        );
        let e = load_once(&path).unwrap_err();
        let found = places(&e);
        assert_eq!(found.len(), 2, "{e}");
        assert_eq!(found[0], ("nethergate.toml".to_owned(), "bind".to_owned()));
        // It is the main file's key: the problem names the main file, and the reason the directory.
        assert_eq!(
            found[1],
            ("nethergate.toml".to_owned(), "servers_dir".to_owned())
        );
        assert!(
            e.0[1].reason.starts_with("cannot read the directory ")
                && e.0[1].reason.contains("nowhere"),
            "{e}"
        );
        // A bad `servers_dir` names no directory: the server files are not guessed at.
        let path = layout(
            "bad-servers-dir",
            "servers_dir = 5\nhandshake_timeout = \"abc\"\n",
            &[("c.toml", "domains = []")],
        );
        let e = load_once(&path).unwrap_err();
        assert_eq!(
            places(&e),
            vec![
                ("nethergate.toml".to_owned(), "servers_dir".to_owned()),
                ("nethergate.toml".to_owned(), "handshake_timeout".to_owned())
            ],
            "{e}"
        );
        // A good main file with good servers loads.
        let path = layout("all-good", "", &[("a.toml", good)]);
        let config = load_once(&path).unwrap();
        assert_eq!(config.servers.len(), 1);
    }

    #[test]
    fn a_conflict_with_a_broken_file_is_reported_with_its_problems() {
        // README's example: lobby has two problems of its own and claims the domain survival claims too.
        let lobby = "domains = [\"mc.example.com\", \"*..bad\"]\naddresses = [\"10.0.0.1:1\"]\n\
                     network = \"main\"\n[timeouts]\nconnect = \"5 sex\"\n";
        let survival = "domains = [\"MC.example.com\"]\naddresses = [\"10.0.0.2:1\"]";
        let path = layout(
            "broken-and-conflict",
            "",
            &[("lobby.toml", lobby), ("survival.toml", survival)],
        );
        let e = load_once(&path).unwrap_err();
        assert_eq!(
            places(&e),
            [
                ("lobby.toml", "domains"),
                ("lobby.toml", "network"),
                ("lobby.toml", "timeouts.connect"),
                ("survival.toml", "domains"),
            ]
            .map(|(f, k)| (f.to_owned(), k.to_owned())),
            "{e}"
        );
        assert!(e.0[3].reason.contains("claimed by both"), "{e}");
        // A broken file's empty name takes the file's, so it clashes with nothing by that alone.
        let path = layout(
            "broken-names",
            "",
            &[
                ("a.toml", "name = \"\"\ndomains = [\"a.test\"]"),
                ("b.toml", "name = \"\"\ndomains = [\"b.test\"]"),
            ],
        );
        let e = load_once(&path).unwrap_err();
        assert!(!e.to_string().contains("already used"), "{e}");
        assert_eq!(places(&e).len(), 4, "{e}");
    }

    #[test]
    fn wrong_types_are_named_in_plain_words() {
        for (text, key, reason) in [
            ("max_players = -1", "max_players", "invalid value: integer `-1`, expected a whole number from 0 to 4294967295"),
            ("max_players = 1.5", "max_players", "invalid type: floating point `1.5`, expected a whole number from 0 to 4294967295"),
            ("domains = \"mc.example.com\"", "domains", "invalid type: string \"mc.example.com\", expected a list (write [\"mc.example.com\"])"),
            ("addresses = 5", "addresses", "invalid type: integer `5`, expected a list"),
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
    fn a_server_file_linked_to_nowhere_is_an_error_not_a_missing_server() {
        let path = layout(
            "dangling",
            "",
            &[(
                "a.toml",
                "domains = [\"a.example.com\"]\naddresses = [\"10.0.0.1:1\"]",
            )],
        );
        let servers = path.with_file_name("servers");
        std::os::unix::fs::symlink(servers.join("gone.txt"), servers.join("b.toml")).unwrap();
        // A directory named like a server file is not one.
        std::fs::create_dir(servers.join("c.toml")).unwrap();
        let e = load_once(&path).unwrap_err();
        assert_eq!(
            places(&e),
            vec![("b.toml".to_owned(), String::new())],
            "{e}"
        );
        assert!(e.to_string().contains("symbolic link to"), "{e}");
        assert!(
            e.to_string().contains("gone.txt, which does not exist"),
            "{e}"
        );
    }

    #[test]
    fn hidden_files_are_not_server_files() {
        let good = "domains = [\"a.example.com\"]\naddresses = [\"10.0.0.1:1\"]";
        let other = "domains = [\"b.example.com\"]\naddresses = [\"10.0.0.1:1\"]";
        let path = layout(
            "hidden",
            "",
            &[("a.toml", good), (".hidden.toml", ""), ("B.TOML", other)],
        );
        let servers = path.with_file_name("servers");
        // Emacs' lock file while a.toml is being edited.
        std::os::unix::fs::symlink("root@host.1234:1700000000", servers.join(".#a.toml")).unwrap();
        let config = load_once(&path).unwrap();
        let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["B", "a"]);
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
    fn a_main_file_in_its_own_servers_dir_is_not_a_server_file() {
        let good = "domains = [\"a.example.com\"]\naddresses = [\"10.0.0.1:1\"]";
        let path = layout(
            "same-dir",
            "servers_dir = \".\"\nmax_connections = 5\n",
            &[],
        );
        std::fs::write(path.with_file_name("lobby.toml"), good).unwrap();
        let config = load_once(&path).unwrap();
        let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["lobby"]);
        assert_eq!(config.main.max_connections, 5);
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
    fn docker_section_is_off_when_absent_and_has_documented_defaults() {
        let m = MainConfig::from_toml(Path::new("n.toml"), "bind = \"127.0.0.1:1\"").unwrap();
        assert_eq!(m.docker, None);
        let m = MainConfig::from_toml(Path::new("n.toml"), "[docker]").unwrap();
        let d = m.docker.unwrap();
        assert_eq!(
            d.endpoint,
            DockerEndpoint::Unix(PathBuf::from("/var/run/docker.sock"))
        );
        assert_eq!(d.endpoint.to_string(), DEFAULT_DOCKER_ENDPOINT);
        assert_eq!(d.label_prefix, "nethergate");
        assert_eq!(d.network, None);
        assert_eq!(d.poll_interval, Duration::from_secs(30));
        assert_eq!(d.reconnect_delay, Duration::from_secs(5));
    }

    #[test]
    fn docker_section_reads_every_key() {
        let m = MainConfig::from_toml(
            Path::new("n.toml"),
            "[docker]\nendpoint = \"tcp://docker.internal:2375\"\nlabel_prefix = \"infrarust.\"\n\
             network = \"minecraft\"\npoll_interval = \"1m\"\nreconnect_delay = \"250ms\"",
        )
        .unwrap();
        let d = m.docker.unwrap();
        assert_eq!(
            d.endpoint,
            DockerEndpoint::Tcp(BackendAddress {
                host: "docker.internal".into(),
                port: 2375
            })
        );
        assert_eq!(d.endpoint.to_string(), "tcp://docker.internal:2375");
        assert_eq!(d.label_prefix, "infrarust", "a trailing dot is dropped");
        assert_eq!(d.network.as_deref(), Some("minecraft"));
        assert_eq!(d.poll_interval, Duration::from_secs(60));
        assert_eq!(d.reconnect_delay, Duration::from_millis(250));
    }

    #[test]
    fn docker_section_errors_name_file_key_and_reason() {
        let e = MainConfig::from_toml(
            Path::new("/etc/ng/nethergate.toml"),
            "[docker]\nendpoint = \"http://x:1\"\nlabel_prefix = \" \"\nnetwork = \"\"\n\
             poll_interval = \"often\"\nreconnect_delay = \"0s\"",
        )
        .unwrap_err();
        assert_eq!(
            keys(e.clone()),
            vec![
                "docker.endpoint",
                "docker.label_prefix",
                "docker.network",
                "docker.poll_interval",
                "docker.reconnect_delay"
            ]
        );
        let text = e.to_string();
        assert!(
            text.contains(
                "/etc/ng/nethergate.toml: `docker.endpoint`: \"http://x:1\" is not unix:///"
            ),
            "{text}"
        );
        assert!(text.contains("\"often\""), "{text}");
        assert!(text.contains("must be greater than zero"), "{text}");
    }

    #[test]
    fn docker_endpoint_must_be_an_absolute_socket_or_host_port() {
        for bad in [
            "unix://docker.sock",
            "tcp://nohost",
            "tcp://:2375",
            "tcp://h:0",
            "/var/run/docker.sock",
        ] {
            let e = MainConfig::from_toml(
                Path::new("n.toml"),
                &format!("[docker]\nendpoint = {bad:?}"),
            )
            .unwrap_err();
            assert_eq!(keys(e), vec!["docker.endpoint"], "{bad}");
        }
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
            "`timeouts.idle`: unknown field `idle`, expected one of `connect`, `read`, `write`",
        ] {
            assert!(text.contains(reason), "missing {reason:?} in:\n{text}");
        }
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

    #[test]
    fn docker_section_rejects_unknown_keys() {
        let e = MainConfig::from_toml(Path::new("n.toml"), "[docker]\npoll = \"5s\"").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["docker.poll"]);
        assert!(e.to_string().contains("unknown field `poll`"), "{e}");
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
        // Over what 1.7–1.12 clients read: a warning; over what any client reads: refused.
        assert!(with(&"x".repeat(32_760)).is_ok_and(|m| warned(&m)));
        let e = with(&"x".repeat(262_200)).unwrap_err();
        assert_eq!(keys(e.clone()), vec!["ip_filter.message"]);
        assert!(e.to_string().contains("the kick it is sent in"), "{e}");
    }
}
