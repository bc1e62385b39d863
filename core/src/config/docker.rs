//! The `[docker]` section of the main file: where the Engine API is and how container labels are read.

use super::field::{duration, field, unknown_keys, Field};
use super::{BackendAddress, ConfigIssue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

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

/// `[docker] poll_interval` when not set.
pub(super) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// `[docker] reconnect_delay` when not set.
pub(super) const DEFAULT_RECONNECT_DELAY: Duration = Duration::from_secs(5);

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
            poll_interval: DEFAULT_POLL_INTERVAL,
            reconnect_delay: DEFAULT_RECONNECT_DELAY,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct RawDocker {
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

pub(super) fn docker(source: &str, raw: RawDocker, issues: &mut Vec<ConfigIssue>) -> DockerConfig {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::*;
    use crate::config::*;

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
    fn docker_section_rejects_unknown_keys() {
        let e = MainConfig::from_toml(Path::new("n.toml"), "[docker]\npoll = \"5s\"").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["docker.poll"]);
        assert!(e.to_string().contains("unknown field `poll`"), "{e}");
    }
}
