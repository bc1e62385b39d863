//! Servers described by Docker container labels: one container in, `Ok(None)` (not for us), a
//! [`ServerConfig`] or the problems found.
//!
//! No IO here: the Docker provider (in the driver) lists containers and hands each one over as a
//! [`Container`]. Label values go through the very validation of server files: the labels become the
//! equivalent TOML table, which [`ServerConfig::from_toml`] reads with the source `docker container <name>`,
//! and each problem's key is turned back into the label key (`nethergate.timeouts.connect`).
//!
//! | label (`<p>` = `label_prefix`) | file key | default |
//! |---|---|---|
//! | `<p>.enable` | - | required, `"true"` (`"false"` or absent: ignored; `"1"`/`"0"` also, for every yes/no label) |
//! | `<p>.domains` | `domains` | `<container name>.docker.local`; separated by commas or line breaks |
//! | `<p>.port` | `addresses` | 25565: the port the server listens on inside the container |
//! | `<p>.name` | `name` | the container name |
//! | `<p>.proxy_mode` | `proxy_mode` | `passthrough` |
//! | `<p>.send_proxy_protocol` | `send_proxy_protocol` | `false` |
//! | `<p>.proxy_protocol_version` | `proxy_protocol_version` | `2` |
//! | `<p>.domain_rewrite` | `domain_rewrite` | `none`; also `from_backend` or `explicit:<host>` |
//! | `<p>.domain_rewrite.explicit` | `domain_rewrite.explicit` | - (same as `explicit:<host>`) |
//! | `<p>.max_players` | `max_players` | `0` (unlimited) |
//! | `<p>.disconnect_message` | `disconnect_message` | the files' default |
//! | `<p>.timeouts.connect` / `.read` / `.write` | `timeouts.*` | `5s` / `30s` / `30s` |
//!
//! The backend address is the container's IP on the preferred network, else on its first network (by
//! name, the order the Engine API lists them in), else `127.0.0.1:<port>` for a container on the host
//! network, else the host port published for `<p>.port` (`127.0.0.1:<public port>` when published on every
//! interface). Any other label under `<p>.` is an error, as unknown keys are in files.
//!
//! `label_prefix = "mc-router"` ([`MC_ROUTER`]) reads mc-router's labels instead: `mc-router.host`,
//! `.port`, `.default` and `.network`.

use crate::config::{ConfigErrors, ConfigIssue, ServerConfig};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Default `<p>.port`: the port of a Minecraft server inside its container.
pub const DEFAULT_PORT: u16 = 25565;

/// Suffix of the default domain, `<container name>.docker.local`.
pub const DEFAULT_DOMAIN_SUFFIX: &str = "docker.local";

/// Every label read, without the prefix.
pub const KNOWN_LABELS: &[&str] = &[
    "enable",
    "domains",
    "port",
    "name",
    "proxy_mode",
    "send_proxy_protocol",
    "proxy_protocol_version",
    "domain_rewrite",
    "domain_rewrite.explicit",
    "max_players",
    "disconnect_message",
    "timeouts.connect",
    "timeouts.read",
    "timeouts.write",
];

/// The `label_prefix` that reads mc-router's labels (itzg/mc-router's Docker discovery) instead of
/// nethergate's: `mc-router.host` (domains separated by commas or line breaks; its presence makes the
/// container a server), `mc-router.port` (`0` is the default), `mc-router.default` (`true`: also every
/// host no other server claims, the `*` domain) and `mc-router.network` (the network whose IP is the
/// backend address, before `[docker] network`). Yes/no values as Go's `ParseBool` reads them.
pub const MC_ROUTER: &str = "mc-router";

/// Every mc-router label read, without the prefix.
pub const MC_ROUTER_LABELS: &[&str] = &["host", "port", "default", "network"];

/// The label a container must carry to be considered (the Engine filters the list by it):
/// `<p>.enable`, or `mc-router.host` for [`MC_ROUTER`].
pub fn selector(prefix: &str) -> String {
    match prefix {
        MC_ROUTER => format!("{MC_ROUTER}.host"),
        p => format!("{p}.enable"),
    }
}

/// A host port a container port is published on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    /// The port inside the container.
    pub private: u16,
    /// The port on the host.
    pub public: u16,
    /// The host address it is bound to; `None` or unspecified (`0.0.0.0`, `::`) for every interface.
    pub host_ip: Option<IpAddr>,
    /// TCP (a Minecraft server needs TCP; UDP publications are ignored).
    pub tcp: bool,
}

/// What the provider knows of one running container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    /// The container ID.
    pub id: String,
    /// The container name, without Docker's leading `/`.
    pub name: String,
    /// Every label of the container.
    pub labels: BTreeMap<String, String>,
    /// The networks the container is attached to, with its IP on each (`None` when it has none, as on
    /// the `host` network).
    pub networks: BTreeMap<String, Option<IpAddr>>,
    /// Published ports.
    pub ports: Vec<PublishedPort>,
}

impl Container {
    /// The source servers from this container are named by in errors and logs.
    pub fn source(&self) -> String {
        format!("docker container {}", self.name)
    }
}

/// How labels are read: the prefix and the preferred network (the `[docker]` section).
#[derive(Debug, Clone, Copy)]
pub struct LabelRules<'a> {
    /// Labels are `<prefix>.<key>`.
    pub prefix: &'a str,
    /// The network whose IP is preferred as the backend address.
    pub network: Option<&'a str>,
}

/// Which label a typed value comes from and what TOML type it must become.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Bool,
    Integer,
}

fn kind(key: &str) -> Kind {
    match key {
        "send_proxy_protocol" => Kind::Bool,
        "max_players" | "proxy_protocol_version" => Kind::Integer,
        _ => Kind::Text,
    }
}

/// A label value as the TOML value a file would hold: a boolean or an integer when it reads as one, a
/// string otherwise (so a wrong type gets the files' own "invalid type" message).
fn toml_value(kind: Kind, value: &str) -> toml::Value {
    let trimmed = value.trim();
    match (kind, label_bool(trimmed)) {
        (Kind::Bool, Some(b)) => toml::Value::Boolean(b),
        (Kind::Integer, _) => trimmed.parse::<i64>().map_or_else(
            |_| toml::Value::String(value.to_owned()),
            toml::Value::Integer,
        ),
        _ => toml::Value::String(value.to_owned()),
    }
}

/// A yes/no label: `true`/`false` in any case, or `1`/`0` as Compose files and Infrarust's labels often
/// write it.
fn label_bool(value: &str) -> Option<bool> {
    match value {
        "1" => Some(true),
        "0" => Some(false),
        v if v.eq_ignore_ascii_case("true") => Some(true),
        v if v.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Why a yes/no label's value `v` is an error.
fn neither_true_nor_false(v: &str) -> String {
    format!("{v:?} is neither \"true\" nor \"false\"")
}

/// A yes/no label of mc-router, read as its Go `strconv.ParseBool` reads it (after trimming): also `t`
/// and `f`, besides what [`label_bool`] takes.
fn go_bool(value: &str) -> Option<bool> {
    match value.trim() {
        "t" | "T" => Some(true),
        "f" | "F" => Some(false),
        v => label_bool(v),
    }
}

/// Inserts `value` at the dotted `key` of `table`.
fn insert(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        Some((head, rest)) => {
            let entry = table
                .entry(head.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(inner) = entry {
                insert(inner, rest, value);
            }
        }
        None => {
            table.insert(key.to_owned(), value);
        }
    }
}

/// The server this container describes: `Ok(None)` unless `<p>.enable = "true"`; otherwise the validated
/// server, or every problem found, each naming the container, the label key and the reason.
pub fn server_config(
    container: &Container,
    rules: LabelRules<'_>,
) -> Result<Option<ServerConfig>, ConfigErrors> {
    let source = container.source();
    let p = rules.prefix;
    let label = |key: &str| format!("{p}.{key}");
    let ours = under(container, p);
    if p == MC_ROUTER {
        return mc_router_server(container, rules, &ours);
    }

    let mut issues = Vec::new();
    match ours.get("enable").map(|v| (v, label_bool(v.trim()))) {
        Some((_, Some(true))) => {}
        None | Some((_, Some(false))) => return Ok(None),
        Some((v, None)) => {
            return Err(ConfigErrors(vec![ConfigIssue {
                source,
                key: label("enable"),
                reason: neither_true_nor_false(v),
            }]))
        }
    }

    for key in ours.keys() {
        if !KNOWN_LABELS.contains(key) {
            issues.push(ConfigIssue {
                source: source.clone(),
                key: label(key),
                reason: unknown_label(p, KNOWN_LABELS),
            });
        }
    }

    // Which label `domain_rewrite.explicit` problems come from.
    let mut explicit_label = label("domain_rewrite.explicit");
    let mut table = toml::Table::new();
    table.insert(
        "name".into(),
        toml::Value::String(
            ours.get("name")
                .map_or_else(|| container.name.clone(), |n| (*n).to_owned()),
        ),
    );
    let domains: Vec<toml::Value> = match ours.get("domains") {
        Some(list) => domain_list(list),
        None => vec![toml::Value::String(format!(
            "{}.{DEFAULT_DOMAIN_SUFFIX}",
            container.name
        ))],
    };
    table.insert("domains".into(), toml::Value::Array(domains));
    insert_address(
        &mut table,
        container,
        rules,
        &ours,
        &label("port"),
        &mut issues,
    );
    match (
        ours.get("domain_rewrite"),
        ours.get("domain_rewrite.explicit"),
    ) {
        (Some(_), Some(_)) => issues.push(ConfigIssue {
            source: source.clone(),
            key: label("domain_rewrite"),
            reason: format!(
                "set either `{p}.domain_rewrite` or `{p}.domain_rewrite.explicit`, not both"
            ),
        }),
        (Some(mode), None) => {
            let value = match mode.trim().strip_prefix("explicit:") {
                Some(host) => {
                    explicit_label = label("domain_rewrite");
                    let mut inner = toml::Table::new();
                    inner.insert("explicit".into(), toml::Value::String(host.to_owned()));
                    toml::Value::Table(inner)
                }
                None => toml::Value::String(mode.trim().to_owned()),
            };
            table.insert("domain_rewrite".into(), value);
        }
        (None, Some(host)) => insert(
            &mut table,
            "domain_rewrite.explicit",
            toml::Value::String((*host).to_owned()),
        ),
        (None, None) => {}
    }

    // Labels copied as they are. Each typed one is first checked alone, so a wrong type is reported with
    // the files' own message without hiding the other problems.
    for key in [
        "proxy_mode",
        "send_proxy_protocol",
        "proxy_protocol_version",
        "max_players",
        "disconnect_message",
        "timeouts.connect",
        "timeouts.read",
        "timeouts.write",
    ] {
        let Some(raw) = ours.get(key) else { continue };
        let kind = kind(key);
        let value = toml_value(kind, raw);
        if !matches!(kind, Kind::Text) {
            let mut alone = toml::Table::new();
            alone.insert(key.to_owned(), value.clone());
            if let Err(errors) = parse(&source, &container.name, &alone) {
                let wrong: Vec<ConfigIssue> =
                    errors.0.into_iter().filter(|i| i.key == key).collect();
                if !wrong.is_empty() {
                    issues.extend(wrong.into_iter().map(|i| relabel(i, p, &explicit_label)));
                    continue;
                }
            }
        }
        insert(&mut table, key, value);
    }

    finish(container, p, &table, issues, |i| {
        relabel(i, p, &explicit_label)
    })
}

/// Sets the `addresses` of `table` to the container's backend address on the port its `port` label gives
/// (`port_label`, [`DEFAULT_PORT`] without one), or reports on that label why it has none.
fn insert_address(
    table: &mut toml::Table,
    container: &Container,
    rules: LabelRules<'_>,
    ours: &BTreeMap<&str, &str>,
    port_label: &str,
    issues: &mut Vec<ConfigIssue>,
) {
    let Some(port) = port(ours, &container.source(), port_label, issues) else {
        return;
    };
    match backend_address(container, preferred_network(container, rules), port) {
        Some(address) => {
            table.insert(
                "addresses".into(),
                toml::Value::Array(vec![toml::Value::String(address)]),
            );
        }
        None => issues.push(ConfigIssue {
            source: container.source(),
            key: port_label.to_owned(),
            reason: format!(
                "no backend address: the container has no IP on any network and no host port published for {port}/tcp"
            ),
        }),
    }
}

/// Reads the server `table` describes; with the label problems found before (`issues`), and the file
/// problems turned into label problems by `relabel`.
fn finish(
    container: &Container,
    prefix: &str,
    table: &toml::Table,
    mut issues: Vec<ConfigIssue>,
    relabel: impl Fn(ConfigIssue) -> ConfigIssue,
) -> Result<Option<ServerConfig>, ConfigErrors> {
    match parse(&container.source(), &container.name, table) {
        Ok(server) if issues.is_empty() => Ok(Some(ServerConfig {
            key_prefix: format!("{prefix}."),
            ..server
        })),
        Ok(_) => Err(ConfigErrors(issues)),
        Err(errors) => {
            // Without an address the files' "at least one backend address" says again what the port
            // problem already said.
            let port_reported = issues.iter().any(|i| i.key == format!("{prefix}.port"));
            issues.extend(
                errors
                    .0
                    .into_iter()
                    .filter(|i| !(port_reported && i.key == "addresses"))
                    .map(relabel),
            );
            Err(ConfigErrors(issues))
        }
    }
}

/// Why a label under `prefix` is an error: it is none of `known`.
fn unknown_label(prefix: &str, known: &[&str]) -> String {
    let known: Vec<String> = known.iter().map(|k| format!("`{prefix}.{k}`")).collect();
    format!("unknown label; expected one of {}", known.join(", "))
}

/// A list of domains separated by commas or line breaks (a YAML block label, one per line, as mc-router
/// reads it too); empty items are left out.
fn domain_list(list: &str) -> Vec<toml::Value> {
    list.split([',', '\n'])
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| toml::Value::String(d.to_owned()))
        .collect()
}

/// The labels under `<prefix>.`, without it.
fn under<'a>(container: &'a Container, prefix: &str) -> BTreeMap<&'a str, &'a str> {
    container
        .labels
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.strip_prefix('.')?, v.as_str())))
        .collect()
}

/// The `port` label (`label` is its full name), [`DEFAULT_PORT`] without one; `None` and an issue when it
/// is not a port.
fn port(
    ours: &BTreeMap<&str, &str>,
    source: &str,
    label: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<u16> {
    let Some(v) = ours.get("port") else {
        return Some(DEFAULT_PORT);
    };
    match v.trim().parse::<u16>() {
        Ok(port) if port != 0 => Some(port),
        _ => {
            issues.push(ConfigIssue {
                source: source.to_owned(),
                key: label.to_owned(),
                reason: format!("{v:?} is not a port (1-65535)"),
            });
            None
        }
    }
}

/// The network whose IP is the backend address: the container's `mc-router.network` label under
/// [`MC_ROUTER`], else `[docker] network`.
fn preferred_network<'a>(container: &'a Container, rules: LabelRules<'a>) -> Option<&'a str> {
    let label = (rules.prefix == MC_ROUTER)
        .then(|| container.labels.get(&format!("{MC_ROUTER}.network")))
        .flatten()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty());
    label.or(rules.network)
}

/// A container described by mc-router's labels (see [`MC_ROUTER`]): `Ok(None)` without `mc-router.host`.
/// mc-router's auto-scaling labels (it starts a stopped container when a player joins) are errors:
/// nethergate routes running containers only, and the admin should know.
fn mc_router_server(
    container: &Container,
    rules: LabelRules<'_>,
    ours: &BTreeMap<&str, &str>,
) -> Result<Option<ServerConfig>, ConfigErrors> {
    let Some(hosts) = ours.get("host") else {
        return Ok(None);
    };
    let source = container.source();
    let label = |key: &str| format!("{MC_ROUTER}.{key}");
    let issue = |key: &str, reason: String| ConfigIssue {
        source: source.clone(),
        key: label(key),
        reason,
    };
    let mut issues = Vec::new();
    for (key, v) in ours.iter().filter(|(k, _)| !MC_ROUTER_LABELS.contains(k)) {
        let reason = match *key {
            // Scaling turned off is what nethergate does anyway; the sleeping server's MOTD has no use.
            "auto-scale-up" | "auto-scale-down" => match go_bool(v) {
                Some(false) => continue,
                Some(true) => {
                    "mc-router's auto scaling is not supported: nethergate routes running \
                               containers and never starts or stops one (remove the label)"
                        .to_owned()
                }
                None => neither_true_nor_false(v),
            },
            "auto-scale-asleep-motd" => continue,
            _ => unknown_label(MC_ROUTER, MC_ROUTER_LABELS),
        };
        issues.push(issue(key, reason));
    }
    let mut domains = domain_list(hosts);
    match ours.get("default").map(|v| (v, go_bool(v))) {
        None | Some((_, Some(false))) => {}
        Some((_, Some(true))) => domains.push(toml::Value::String("*".to_owned())),
        Some((v, None)) => issues.push(issue("default", neither_true_nor_false(v))),
    }
    // mc-router reads a port of 0 as its default.
    let mut ours = ours.clone();
    if ours.get("port").is_some_and(|p| p.trim() == "0") {
        ours.remove("port");
    }
    let ours = &ours;
    let mut table = toml::Table::new();
    table.insert("name".into(), toml::Value::String(container.name.clone()));
    table.insert("domains".into(), toml::Value::Array(domains));
    insert_address(
        &mut table,
        container,
        rules,
        ours,
        &label("port"),
        &mut issues,
    );
    finish(container, MC_ROUTER, &table, issues, |mut i| {
        i.key = match i.key.as_str() {
            "domains" => label("host"),
            "addresses" => label("port"),
            "name" => {
                // The container's own name: no label gives another.
                i.reason = format!("the container name: {}", i.reason);
                String::new()
            }
            _ => i.key,
        };
        i
    })
}

/// Turns the key of a server-file problem into the label it comes from.
fn relabel(mut issue: ConfigIssue, prefix: &str, explicit_label: &str) -> ConfigIssue {
    issue.key = match issue.key.as_str() {
        "" => String::new(),
        "addresses" => format!("{prefix}.port"),
        "domain_rewrite.explicit" => explicit_label.to_owned(),
        key => format!("{prefix}.{key}"),
    };
    issue
}

/// Reads `table` as a server file would be read.
fn parse(source: &str, name: &str, table: &toml::Table) -> Result<ServerConfig, ConfigErrors> {
    let text = toml::to_string(table).map_err(|e| {
        ConfigErrors(vec![ConfigIssue {
            source: source.to_owned(),
            key: String::new(),
            reason: format!("labels cannot be written as TOML: {e}"),
        }])
    })?;
    ServerConfig::from_toml(source, name, &text)
}

/// An enabled container whose backend address is not on the preferred network (`[docker] network`):
/// it is not attached to that network, or has no IP there, so its IP on another one is used, which the
/// proxy may not reach. Docker Compose names a network `<project>_<name>` unless the file gives it a
/// `name:`, so a `network` written as in the compose file is a common miss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFallback<'a> {
    /// The preferred network (`[docker] network`, or `mc-router.network`).
    pub wanted: &'a str,
    /// The network whose IP is used instead.
    pub used: &'a str,
    /// Every network the container is on, by name.
    pub networks: Vec<&'a str>,
}

/// Whether `container`'s backend address falls back from `rules.network` to another network's IP
/// (nothing to say without a preferred network, or when no network IP is used at all).
pub fn network_fallback<'a>(
    container: &'a Container,
    rules: LabelRules<'a>,
) -> Option<NetworkFallback<'a>> {
    let wanted = preferred_network(container, rules)?;
    if container.networks.get(wanted).copied().flatten().is_some() {
        return None;
    }
    let (used, _) = container.networks.iter().find(|(_, ip)| ip.is_some())?;
    Some(NetworkFallback {
        wanted,
        used,
        networks: container.networks.keys().map(String::as_str).collect(),
    })
}

/// `host:port` of the backend, by the preference documented in the module docs.
fn backend_address(container: &Container, network: Option<&str>, port: u16) -> Option<String> {
    let on = |ip: IpAddr| crate::config::BackendAddress {
        host: ip.to_string(),
        port,
    };
    let preferred = network
        .and_then(|n| container.networks.get(n).copied().flatten())
        .or_else(|| container.networks.values().find_map(|ip| *ip));
    if let Some(ip) = preferred {
        return Some(on(ip).to_string());
    }
    if container.networks.contains_key("host") {
        return Some(on(IpAddr::from([127, 0, 0, 1])).to_string());
    }
    let published = container
        .ports
        .iter()
        .filter(|p| p.tcp && p.private == port && p.public != 0)
        // A publication on one address beats one on every interface only when nothing else is left.
        .min_by_key(|p| p.host_ip.is_some_and(|ip| !ip.is_unspecified()))?;
    let host = match published.host_ip {
        Some(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::from([127, 0, 0, 1]),
    };
    Some(
        crate::config::BackendAddress {
            host: host.to_string(),
            port: published.public,
        }
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendAddress, ProxyMode, ProxyProtocolVersion, Timeouts};
    use crate::rewrite::Rewrite;
    use std::time::Duration;

    const RULES: LabelRules<'static> = LabelRules {
        prefix: "nethergate",
        network: None,
    };

    fn container(labels: &[(&str, &str)]) -> Container {
        Container {
            id: "0123456789ab".into(),
            name: "lobby".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            networks: [("bridge".to_owned(), Some(IpAddr::from([172, 17, 0, 2])))]
                .into_iter()
                .collect(),
            ports: Vec::new(),
        }
    }

    fn enabled(extra: &[(&str, &str)]) -> Container {
        let mut labels = vec![("nethergate.enable", "true")];
        labels.extend_from_slice(extra);
        container(&labels)
    }

    fn ok(c: &Container) -> ServerConfig {
        server_config(c, RULES)
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("enabled")
    }

    fn err(c: &Container) -> ConfigErrors {
        match server_config(c, RULES) {
            Err(e) => e,
            Ok(s) => panic!("expected an error, got {s:?}"),
        }
    }

    fn keys(e: &ConfigErrors) -> Vec<&str> {
        e.0.iter().map(|i| i.key.as_str()).collect()
    }

    fn address(c: &Container) -> String {
        ok(c).addresses[0].to_string()
    }

    #[test]
    fn container_without_enable_is_not_ours() {
        assert_eq!(server_config(&container(&[]), RULES), Ok(None));
        let c = container(&[("nethergate.domains", "a.example.com")]);
        assert_eq!(server_config(&c, RULES), Ok(None));
        let c = container(&[("nethergate.enable", "FALSE")]);
        assert_eq!(server_config(&c, RULES), Ok(None));
    }

    #[test]
    fn yes_and_no_labels_take_1_and_0() {
        let c = container(&[
            ("nethergate.enable", "1"),
            ("nethergate.send_proxy_protocol", " 1 "),
        ]);
        assert!(ok(&c).send_proxy_protocol);
        let c = container(&[("nethergate.enable", "0")]);
        assert_eq!(server_config(&c, RULES), Ok(None));
        let c = enabled(&[("nethergate.send_proxy_protocol", "yes")]);
        assert_eq!(keys(&err(&c)), ["nethergate.send_proxy_protocol"]);
    }

    #[test]
    fn warnings_name_the_label_the_admin_wrote() {
        let s = ok(&enabled(&[("nethergate.timeouts.read", "1s")]));
        let warned = s.warnings();
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert_eq!(warned[0].key, "nethergate.timeouts.read");
        assert_eq!(warned[0].source, "docker container lobby");
        assert!(ok(&enabled(&[])).warnings().is_empty());
    }

    #[test]
    fn enable_must_be_true_or_false() {
        let e = err(&container(&[("nethergate.enable", "yes")]));
        assert_eq!(keys(&e), vec!["nethergate.enable"]);
        assert_eq!(
            e.to_string(),
            "docker container lobby: `nethergate.enable`: \"yes\" is neither \"true\" nor \"false\""
        );
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let s = ok(&enabled(&[]));
        assert_eq!(s.name, "lobby");
        assert_eq!(s.source, "docker container lobby");
        assert_eq!(s.domains, vec!["lobby.docker.local"]);
        assert_eq!(
            s.addresses,
            vec![BackendAddress {
                host: "172.17.0.2".into(),
                port: 25565
            }]
        );
        assert_eq!(s.proxy_mode, ProxyMode::Passthrough);
        assert!(!s.send_proxy_protocol);
        assert_eq!(s.proxy_protocol_version, ProxyProtocolVersion::V2);
        assert_eq!(s.domain_rewrite, Rewrite::None);
        assert_eq!(s.max_players, 0);
        assert_eq!(
            s.disconnect_message,
            crate::config::DEFAULT_DISCONNECT_MESSAGE
        );
        assert_eq!(s.timeouts, Timeouts::default());
    }

    #[test]
    fn every_label_is_read() {
        let s = ok(&enabled(&[
            (
                "nethergate.domains",
                "Play.Example.com., *.play.example.com",
            ),
            ("nethergate.port", "25566"),
            ("nethergate.name", "survival"),
            ("nethergate.proxy_mode", "zero_copy"),
            ("nethergate.send_proxy_protocol", "true"),
            ("nethergate.proxy_protocol_version", "1"),
            ("nethergate.domain_rewrite", "from_backend"),
            ("nethergate.max_players", "20"),
            ("nethergate.disconnect_message", "Back soon"),
            ("nethergate.timeouts.connect", "2s"),
            ("nethergate.timeouts.read", "2m"),
            ("nethergate.timeouts.write", "1h"),
        ]));
        assert_eq!(s.name, "survival");
        assert_eq!(s.domains, vec!["play.example.com", "*.play.example.com"]);
        assert_eq!(s.addresses[0].to_string(), "172.17.0.2:25566");
        assert_eq!(s.proxy_mode, ProxyMode::ZeroCopy);
        assert!(s.send_proxy_protocol);
        assert_eq!(s.proxy_protocol_version, ProxyProtocolVersion::V1);
        assert_eq!(s.domain_rewrite, Rewrite::Host("172.17.0.2".into()));
        assert_eq!(s.max_players, 20);
        assert_eq!(s.disconnect_message, "Back soon");
        assert_eq!(
            s.timeouts,
            Timeouts {
                connect: Duration::from_secs(2),
                read: Duration::from_secs(120),
                write: Duration::from_secs(3600),
            }
        );
    }

    #[test]
    fn empty_domain_items_are_ignored_but_no_domain_is_an_error() {
        let s = ok(&enabled(&[(
            "nethergate.domains",
            "a.example.com,, b.example.com,",
        )]));
        assert_eq!(s.domains, vec!["a.example.com", "b.example.com"]);
        let e = err(&enabled(&[("nethergate.domains", " , ")]));
        assert_eq!(keys(&e), vec!["nethergate.domains"]);
        assert!(e.0[0].reason.contains("at least one domain"), "{e}");
    }

    #[test]
    fn bad_domain_names_the_label_and_the_value() {
        let e = err(&enabled(&[(
            "nethergate.domains",
            "ok.example.com, bad host",
        )]));
        assert_eq!(keys(&e), vec!["nethergate.domains"]);
        assert_eq!(
            e.to_string(),
            "docker container lobby: `nethergate.domains`: \"bad host\" is not a domain name or `*.` pattern"
        );
    }

    #[test]
    fn explicit_rewrite_in_either_form() {
        let a = ok(&enabled(&[(
            "nethergate.domain_rewrite",
            "explicit:internal.host",
        )]));
        let b = ok(&enabled(&[(
            "nethergate.domain_rewrite.explicit",
            "internal.host",
        )]));
        assert_eq!(a.domain_rewrite, Rewrite::Host("internal.host".into()));
        assert_eq!(a, b);
        let none = ok(&enabled(&[("nethergate.domain_rewrite", "none")]));
        assert_eq!(none.domain_rewrite, Rewrite::None);
    }

    #[test]
    fn rewrite_errors_name_the_label_used() {
        let e = err(&enabled(&[("nethergate.domain_rewrite", "explicit: ")]));
        assert_eq!(keys(&e), vec!["nethergate.domain_rewrite"]);
        assert!(e.0[0].reason.contains("is not a host name"), "{e}");
        let e = err(&enabled(&[("nethergate.domain_rewrite.explicit", "")]));
        assert_eq!(keys(&e), vec!["nethergate.domain_rewrite.explicit"]);
        let e = err(&enabled(&[("nethergate.domain_rewrite", "sometimes")]));
        assert_eq!(keys(&e), vec!["nethergate.domain_rewrite"]);
        assert!(e.0[0].reason.contains("unknown value \"sometimes\""), "{e}");
        let e = err(&enabled(&[
            ("nethergate.domain_rewrite", "none"),
            ("nethergate.domain_rewrite.explicit", "h"),
        ]));
        assert_eq!(keys(&e), vec!["nethergate.domain_rewrite"]);
        assert!(e.0[0].reason.contains("not both"), "{e}");
    }

    #[test]
    fn bad_port_is_named() {
        for bad in ["0", "65536", "http", "-1", ""] {
            let e = err(&enabled(&[("nethergate.port", bad)]));
            assert_eq!(keys(&e), vec!["nethergate.port"], "{bad}");
            assert_eq!(
                e.0[0].reason,
                format!("{bad:?} is not a port (1-65535)"),
                "{bad}"
            );
        }
    }

    #[test]
    fn typed_labels_get_the_files_messages_and_every_problem_is_reported() {
        let e = err(&enabled(&[
            ("nethergate.max_players", "ten"),
            ("nethergate.send_proxy_protocol", "yes"),
            ("nethergate.proxy_protocol_version", "3"),
            ("nethergate.timeouts.read", "soon"),
        ]));
        assert_eq!(
            keys(&e),
            vec![
                "nethergate.send_proxy_protocol",
                "nethergate.proxy_protocol_version",
                "nethergate.max_players",
                "nethergate.timeouts.read"
            ],
            "{e}"
        );
        // The same texts as the equivalent server file.
        let file = |text: &str| {
            ServerConfig::from_toml("docker container lobby", "lobby", text).unwrap_err()
        };
        let base = "domains = [\"a\"]\naddresses = [\"a:1\"]\n";
        assert_eq!(
            e.0[0].reason,
            file(&format!("{base}send_proxy_protocol = \"yes\"")).0[0].reason
        );
        assert_eq!(
            e.0[1].reason,
            file(&format!("{base}proxy_protocol_version = 3")).0[0].reason
        );
        assert_eq!(
            e.0[2].reason,
            file(&format!("{base}max_players = \"ten\"")).0[0].reason
        );
        assert_eq!(
            e.0[3].reason,
            file(&format!("{base}[timeouts]\nread = \"soon\"")).0[0].reason
        );
        assert!(e.0.iter().all(|i| i.source == "docker container lobby"));
    }

    #[test]
    fn negative_max_players_is_refused() {
        let e = err(&enabled(&[("nethergate.max_players", "-1")]));
        assert_eq!(keys(&e), vec!["nethergate.max_players"]);
        assert!(e.0[0].reason.contains("-1"), "{e}");
    }

    #[test]
    fn proxy_mode_and_name_errors_name_their_labels() {
        let e = err(&enabled(&[
            ("nethergate.proxy_mode", "offline"),
            ("nethergate.name", " "),
        ]));
        assert_eq!(keys(&e), vec!["nethergate.name", "nethergate.proxy_mode"]);
        assert!(e.0[1].reason.contains("not implemented"), "{e}");
    }

    #[test]
    fn each_timeout_label_is_validated() {
        for which in ["connect", "read", "write"] {
            let key = format!("nethergate.timeouts.{which}");
            let e = err(&enabled(&[(key.as_str(), "0s")]));
            assert_eq!(keys(&e), vec![key.as_str()]);
            assert_eq!(e.0[0].reason, "must be greater than zero");
        }
    }

    #[test]
    fn disconnect_message_keeps_quotes_and_unicode() {
        let s = ok(&enabled(&[(
            "nethergate.disconnect_message",
            "\"Wartung\" — bis gleich",
        )]));
        assert_eq!(s.disconnect_message, "\"Wartung\" — bis gleich");
    }

    #[test]
    fn unknown_label_under_the_prefix_is_an_error() {
        let e = err(&enabled(&[
            ("nethergate.max_player", "3"),
            ("nethergateway.x", "ignored: another prefix"),
            ("com.docker.compose.service", "lobby"),
        ]));
        assert_eq!(keys(&e), vec!["nethergate.max_player"]);
        assert!(e.0[0].reason.starts_with("unknown label"), "{e}");
        assert!(e.0[0].reason.contains("`nethergate.max_players`"), "{e}");
    }

    #[test]
    fn prefix_is_configurable() {
        let c = container(&[
            ("infrarust.enable", "true"),
            ("infrarust.domains", "mc.example.com"),
            ("nethergate.enable", "yes"),
        ]);
        let s = server_config(
            &c,
            LabelRules {
                prefix: "infrarust",
                network: None,
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.domains, vec!["mc.example.com"]);
    }

    #[test]
    fn preferred_network_wins_then_the_first_network() {
        let mut c = enabled(&[]);
        c.networks = [
            ("b_backend".to_owned(), Some(IpAddr::from([10, 0, 1, 5]))),
            ("a_front".to_owned(), Some(IpAddr::from([10, 0, 0, 5]))),
            ("c_empty".to_owned(), None),
        ]
        .into_iter()
        .collect();
        assert_eq!(address(&c), "10.0.0.5:25565", "first by name");
        let rules = |network| LabelRules {
            prefix: "nethergate",
            network: Some(network),
        };
        let on = |network| {
            server_config(&c, rules(network))
                .unwrap()
                .unwrap()
                .addresses[0]
                .to_string()
        };
        assert_eq!(on("b_backend"), "10.0.1.5:25565");
        assert_eq!(
            on("missing"),
            "10.0.0.5:25565",
            "not attached: first network"
        );
        assert_eq!(
            on("c_empty"),
            "10.0.0.5:25565",
            "no IP there: first network"
        );
        // A container whose address is not on the preferred network is told about, with where it is.
        assert_eq!(network_fallback(&c, rules("b_backend")), None);
        assert_eq!(network_fallback(&c, RULES), None, "no network preferred");
        let fell_back = |wanted| {
            Some(NetworkFallback {
                wanted,
                used: "a_front",
                networks: vec!["a_front", "b_backend", "c_empty"],
            })
        };
        assert_eq!(
            network_fallback(&c, rules("backend")),
            fell_back("backend"),
            "not on it"
        );
        assert_eq!(
            network_fallback(&c, rules("c_empty")),
            fell_back("c_empty"),
            "no IP on it"
        );
        c.networks = [("host".to_owned(), None)].into_iter().collect();
        assert_eq!(
            network_fallback(&c, rules("backend")),
            None,
            "no address taken from another network"
        );
    }

    #[test]
    fn ipv6_only_network_is_bracketed() {
        let mut c = enabled(&[("nethergate.port", "25570")]);
        c.networks = [("v6".to_owned(), Some("fd00::5".parse().unwrap()))]
            .into_iter()
            .collect();
        assert_eq!(address(&c), "[fd00::5]:25570");
    }

    #[test]
    fn host_network_uses_loopback() {
        let mut c = enabled(&[("nethergate.port", "25570")]);
        c.networks = [("host".to_owned(), None)].into_iter().collect();
        assert_eq!(address(&c), "127.0.0.1:25570");
    }

    #[test]
    fn published_port_is_the_last_resort() {
        let mut c = enabled(&[]);
        c.networks.clear();
        c.ports = vec![
            PublishedPort {
                private: 25565,
                public: 40000,
                host_ip: None,
                tcp: false,
            },
            PublishedPort {
                private: 8080,
                public: 40001,
                host_ip: None,
                tcp: true,
            },
            PublishedPort {
                private: 25565,
                public: 40002,
                host_ip: Some("::".parse().unwrap()),
                tcp: true,
            },
        ];
        assert_eq!(address(&c), "127.0.0.1:40002", "every interface: loopback");
        c.ports[2].host_ip = Some(IpAddr::from([192, 0, 2, 7]));
        assert_eq!(
            address(&c),
            "192.0.2.7:40002",
            "bound to one address: that one"
        );
        c.ports.push(PublishedPort {
            private: 25565,
            public: 40003,
            host_ip: Some(IpAddr::from([0, 0, 0, 0])),
            tcp: true,
        });
        assert_eq!(address(&c), "127.0.0.1:40003", "every interface preferred");
    }

    #[test]
    fn no_address_at_all_is_an_error_on_the_port_label() {
        let mut c = enabled(&[("nethergate.port", "25570")]);
        c.networks.clear();
        c.ports = vec![PublishedPort {
            private: 25565,
            public: 40000,
            host_ip: None,
            tcp: true,
        }];
        let e = err(&c);
        assert_eq!(keys(&e), vec!["nethergate.port"]);
        assert_eq!(
            e.to_string(),
            "docker container lobby: `nethergate.port`: no backend address: the container has no IP on any \
             network and no host port published for 25570/tcp"
        );
    }

    #[test]
    fn label_values_cannot_inject_toml() {
        let s = ok(&enabled(&[(
            "nethergate.disconnect_message",
            "x\"\nmax_players = 5\n[timeouts]\nread = \"1s",
        )]));
        assert_eq!(s.max_players, 0);
        assert_eq!(s.timeouts, Timeouts::default());
        let s = ok(&enabled(&[(
            "nethergate.name",
            "a\" proxy_mode = \"zero_copy",
        )]));
        assert_eq!(s.name, "a\" proxy_mode = \"zero_copy");
        assert_eq!(s.proxy_mode, ProxyMode::Passthrough);
        // With a line break it is refused (a control character in a name), not read as TOML.
        let e = err(&enabled(&[(
            "nethergate.name",
            "a\"\nproxy_mode = \"zero_copy",
        )]));
        assert_eq!(keys(&e), ["nethergate.name"]);
    }

    const MC: LabelRules<'static> = LabelRules {
        prefix: MC_ROUTER,
        network: None,
    };

    fn mc_router(labels: &[(&str, &str)]) -> Result<Option<ServerConfig>, ConfigErrors> {
        server_config(&container(labels), MC)
    }

    #[test]
    fn mc_router_labels_are_read_as_mc_router_reads_them() {
        assert_eq!(selector(MC_ROUTER), "mc-router.host");
        assert_eq!(selector("infrarust"), "infrarust.enable");
        // No host: not a server (mc-router needs no enable label, and reads none).
        assert_eq!(mc_router(&[("mc-router.port", "25566")]).ok(), Some(None));
        assert_eq!(mc_router(&[("nethergate.enable", "true")]).ok(), Some(None));
        let s = mc_router(&[
            ("mc-router.host", "survival.example.com, play.example.com"),
            ("mc-router.port", "25566"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.name, "lobby");
        assert_eq!(s.domains, vec!["survival.example.com", "play.example.com"]);
        assert_eq!(
            s.addresses,
            vec![BackendAddress {
                host: "172.17.0.2".into(),
                port: 25566
            }]
        );
        // `default`: also every host nobody else claims.
        let s = mc_router(&[
            ("mc-router.host", "lobby.example.com"),
            ("mc-router.default", "true"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.domains, vec!["lobby.example.com", "*"]);
        assert_eq!(s.addresses[0].port, DEFAULT_PORT);
        let s = mc_router(&[
            ("mc-router.host", "a.example.com"),
            ("mc-router.default", "0"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.domains, vec!["a.example.com"]);
        // As mc-router reads them: hosts one per line too (a YAML block label), Go's `t`/`f`, a port of
        // 0 as the default, scaling turned off, and the asleep MOTD that only scaling uses.
        let s = mc_router(&[
            (
                "mc-router.host",
                "a.example.com\nb.example.com,\nc.example.com\n",
            ),
            ("mc-router.default", "t"),
            ("mc-router.port", "0"),
            ("mc-router.auto-scale-up", "false"),
            ("mc-router.auto-scale-down", "F"),
            ("mc-router.auto-scale-asleep-motd", "zzz"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            s.domains,
            vec!["a.example.com", "b.example.com", "c.example.com", "*"]
        );
        assert_eq!(s.addresses[0].port, DEFAULT_PORT);
    }

    #[test]
    fn mc_router_network_label_picks_the_address() {
        let mut c = container(&[
            ("mc-router.host", "a.example.com"),
            ("mc-router.network", "backend"),
        ]);
        c.networks = [
            ("a_front".to_owned(), Some(IpAddr::from([10, 0, 0, 5]))),
            ("backend".to_owned(), Some(IpAddr::from([10, 0, 1, 5]))),
        ]
        .into_iter()
        .collect();
        let host = |c: &Container, rules| {
            server_config(c, rules).unwrap().unwrap().addresses[0]
                .host
                .clone()
        };
        assert_eq!(host(&c, MC), "10.0.1.5");
        // The label beats `[docker] network`.
        let front = LabelRules {
            network: Some("a_front"),
            ..MC
        };
        assert_eq!(host(&c, front), "10.0.1.5");
        assert_eq!(network_fallback(&c, front), None);
        // Not on it: the first network, told about as a fallback from the label's network.
        c.labels
            .insert("mc-router.network".into(), "elsewhere".into());
        assert_eq!(host(&c, front), "10.0.0.5");
        assert_eq!(
            network_fallback(&c, front).map(|f| f.wanted),
            Some("elsewhere")
        );
        // Under another prefix the label means nothing: `[docker] network` decides.
        c.labels.insert("nethergate.enable".into(), "true".into());
        let ours = LabelRules {
            prefix: "nethergate",
            network: Some("backend"),
        };
        assert_eq!(
            server_config(&c, ours).unwrap().unwrap().addresses[0].host,
            "10.0.1.5"
        );
    }

    #[test]
    fn mc_router_label_errors_name_mc_router_labels() {
        let e = mc_router(&[
            ("mc-router.host", "bad host, ok.example.com"),
            ("mc-router.port", "http"),
            ("mc-router.default", "maybe"),
            ("mc-router.auto-scale-up", "true"),
            ("mc-router.auto-scale-down", "sometimes"),
            ("mc-router.hosts", "typo.example.com"),
        ])
        .unwrap_err();
        let mut named = keys(&e);
        named.sort_unstable();
        assert_eq!(
            named,
            [
                "mc-router.auto-scale-down",
                "mc-router.auto-scale-up",
                "mc-router.default",
                "mc-router.host",
                "mc-router.hosts",
                "mc-router.port"
            ],
            "{e}"
        );
        let reason = |key: &str| {
            e.0.iter()
                .find(|i| i.key == key)
                .map_or("", |i| i.reason.as_str())
        };
        assert!(reason("mc-router.auto-scale-up").contains("auto scaling is not supported"));
        assert!(reason("mc-router.hosts").contains("expected one of `mc-router.host`"));
        assert!(reason("mc-router.port").contains("\"http\" is not a port"));
        assert!(
            reason("mc-router.host").contains("\"bad host\" is not a domain name"),
            "{e}"
        );
        // A host label with no domain in it is no domain at all.
        let e = mc_router(&[("mc-router.host", " , ")]).unwrap_err();
        assert_eq!(keys(&e), ["mc-router.host"], "{e}");
        // The name is the container's own: no label to blame.
        let mut c = container(&[("mc-router.host", "a.example.com")]);
        c.name = "lob\u{7}by".into();
        let e = server_config(&c, MC).unwrap_err();
        assert_eq!(keys(&e), [""], "{e}");
        assert!(
            e.0[0]
                .reason
                .starts_with("the container name: \"lob\\u{7}by\""),
            "{e}"
        );
    }
}
