//! The Docker provider: servers discovered from container labels (`[docker]` in the main file), kept in
//! the route table beside the file servers.
//!
//! It lists the running containers at start, follows the Engine's `/events` stream (container `start`,
//! `stop`, `die`, `destroy`) for live updates, and re-lists every `poll_interval` as well in case an event
//! was missed. Each list becomes one `Reloader::set_provider("docker", servers)`: the Docker servers are
//! replaced whole, and a domain conflict (with a file or between containers) is reported by the reloader
//! while the previous table stays live. A container whose labels are wrong is skipped and reported once
//! (again only when its problems change), naming the container, the label and the reason; see
//! [`nethergate_core::labels`] for the labels.
//!
//! When the daemon goes away (restart, socket gone, a list that fails or stalls) the last known servers
//! stay routed, one warning is logged for the outage, and the provider reconnects every `reconnect_delay`
//! until the daemon answers again, then lists the containers afresh. When only the event stream fails
//! (a socket proxy that forbids `/events`) while lists work, one warning says so and the containers are
//! followed by polling every `poll_interval`, asking for the stream again at each poll. A stream that
//! served for `reconnect_delay` and then ends or breaks off is asked for again at once.
//!
//! # Why its own thread
//!
//! The Engine API client is [bollard], which needs tokio (hyper's tokio executor and tokio's unix and TCP
//! sockets). Rather than tie the provider to the tokio binary, [`DockerProvider::start`] runs it on a
//! thread of its own (`nethergate-docker`) with a current-thread tokio runtime, so the tokio and the smol
//! binaries run it the same way, and a slow or stuck daemon never takes a worker of the proxy. The thread
//! sleeps in epoll between events; dropping the [`DockerProvider`] stops it and waits for it.

use crate::reload::Reloader;
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum, PortSummaryTypeEnum};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_lite::StreamExt;
use nethergate_core::config::{ConfigErrors, DockerConfig, DockerEndpoint};
use nethergate_core::labels::{self, Container, LabelRules, PublishedPort};
use nethergate_core::ServerConfig;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

/// The name of the provider in the reloader (and in its log lines).
pub const PROVIDER: &str = "docker";

/// Limit, in seconds, on one Engine API request: on its response headers (bollard's), and on the whole
/// answer of a list or version request (the event stream's body is not limited).
const REQUEST_TIMEOUT_SECS: u64 = 20;

/// The container events that change which servers exist. A paused container cannot answer: it is no
/// server until unpaused.
const EVENTS: &[&str] = &["start", "stop", "die", "destroy", "pause", "unpause"];

/// Where the provider puts the servers it found (the reloader, in the binaries).
pub type Sink = Box<dyn FnMut(Vec<ServerConfig>) + Send>;

/// The running provider; dropping it stops its thread and waits for it.
pub struct DockerProvider {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for DockerProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerProvider").finish_non_exhaustive()
    }
}

impl DockerProvider {
    /// Starts the provider for `config`, feeding `reloader` under the provider name `"docker"`.
    pub fn start(config: DockerConfig, reloader: Arc<Reloader>) -> io::Result<DockerProvider> {
        DockerProvider::start_with(
            config,
            Box::new(move |servers| reloader.set_provider(PROVIDER, servers)),
        )
    }

    /// Starts the provider for `config`, handing every fresh list of servers to `sink`.
    pub fn start_with(config: DockerConfig, sink: Sink) -> io::Result<DockerProvider> {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("nethergate-docker".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "docker provider: cannot build its tokio runtime");
                        return;
                    }
                };
                runtime.block_on(run(config, sink, stopped));
                // Not waiting for a name lookup of the endpoint's host still in progress (a silent
                // resolver holds it for up to 30 s, and the proxy's exit waits for this thread).
                runtime.shutdown_background();
            })?;
        Ok(DockerProvider {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for DockerProvider {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why a connection to the daemon ended.
#[derive(Debug)]
enum Lost {
    Api(bollard::errors::Error),
    /// A request whose answer did not finish within [`REQUEST_TIMEOUT_SECS`] (headers came, the body
    /// stalled).
    Stalled(&'static str),
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::Api(e) => write!(f, "{e}"),
            Lost::Stalled(what) => {
                write!(f, "{what} did not finish within {REQUEST_TIMEOUT_SECS} s")
            }
        }
    }
}

impl From<bollard::errors::Error> for Lost {
    fn from(e: bollard::errors::Error) -> Self {
        Lost::Api(e)
    }
}

/// What the provider remembers across lists and reconnections.
struct State {
    config: DockerConfig,
    sink: Sink,
    /// Label problems already logged, by container ID, so each is reported once.
    reported: HashMap<String, ConfigErrors>,
    /// Containers whose address is not on `[docker] network` (logged once while they run).
    off_network: HashSet<String>,
    /// Whether the daemon is unreachable (the outage was logged).
    down: bool,
    /// Whether the event stream fails while the daemon answers lists (logged once): containers are then
    /// followed by polling alone.
    events_down: bool,
}

/// Connects, follows, and reconnects until `stopped` fires.
async fn run(config: DockerConfig, sink: Sink, mut stopped: tokio::sync::oneshot::Receiver<()>) {
    let delay = config.reconnect_delay;
    let mut state = State {
        config,
        sink,
        reported: HashMap::new(),
        off_network: HashSet::new(),
        down: false,
        events_down: false,
    };
    tracing::info!(endpoint = %state.config.endpoint, label_prefix = %state.config.label_prefix,
        "docker provider started");
    loop {
        let lost = tokio::select! {
            _ = &mut stopped => return,
            lost = follow(&mut state) => lost,
        };
        if !state.down {
            state.down = true;
            tracing::warn!(endpoint = %state.config.endpoint, error = %lost, retry_every = ?delay,
                "docker daemon unreachable; its servers stay as last seen until it is back");
        } else {
            tracing::debug!(error = %lost, "docker daemon still unreachable");
        }
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connection to the daemon: list, then follow events and the poll timer until something fails.
async fn follow(state: &mut State) -> Lost {
    match follow_inner(state).await {
        Ok(never) => match never {},
        Err(lost) => lost,
    }
}

async fn follow_inner(state: &mut State) -> Result<std::convert::Infallible, Lost> {
    let docker = within("the API version request", async {
        connect(&state.config.endpoint)?.negotiate_version().await
    })
    .await?;
    // Ask for the events from now on before listing, so a change between the list and the subscription
    // is replayed rather than missed.
    // `None` while a failed stream waits for the next poll to be asked for again.
    let mut events = Some(subscribe(&docker));
    sync(state, &docker).await?;
    if state.down {
        state.down = false;
        tracing::info!(endpoint = %state.config.endpoint, "docker daemon reachable again");
    }
    let poll = state.config.poll_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = next_event(&mut events) => match event {
                Some(Ok(event)) => {
                    if state.events_down {
                        state.events_down = false;
                        tracing::info!("docker event stream works again");
                    }
                    let actor = event.actor.as_ref();
                    tracing::debug!(
                        action = event.action.as_deref().unwrap_or(""),
                        container = actor
                            .and_then(|a| a.attributes.as_ref())
                            .and_then(|a| a.get("name"))
                            .map_or("", String::as_str),
                        "docker event"
                    );
                    sync(state, &docker).await?;
                }
                None
                | Some(Err(
                    bollard::errors::Error::IOError { .. }
                    | bollard::errors::Error::HyperResponseError { .. },
                )) if events
                    .as_ref()
                    .is_some_and(|e| e.opened.elapsed() >= state.config.reconnect_delay) =>
                {
                    // A stream that served a while and then ended or broke off (an idle timeout of a
                    // proxy between us and the daemon cuts it in the middle of its chunked body: bollard
                    // reports the body's error as an I/O error; a daemon stopping): a list says whether
                    // the daemon is still there, and the stream is asked for again at once. An answer
                    // that is no stream (a 403 or a 5xx, however slow) or none at all (bollard's request
                    // timeout) is a failed stream.
                    sync(state, &docker).await?;
                    events = Some(subscribe(&docker));
                }
                failed => {
                    // The daemon may be gone (then the list fails too, and the outage is logged), or only
                    // its event stream is: a socket proxy that forbids `/events` (403), a stream closed
                    // at once or garbled. Then the containers are followed by polling alone, the stream
                    // is asked for again at the next poll, and the warning is given once, not at every
                    // retry.
                    events = None;
                    if !state.events_down {
                        sync(state, &docker).await?;
                        state.events_down = true;
                        let error = match failed {
                            Some(Err(e)) => e.to_string(),
                            _ => "the daemon closed the event stream".to_owned(),
                        };
                        tracing::warn!(endpoint = %state.config.endpoint, %error, poll_interval = ?poll,
                            "docker event stream unavailable; containers are listed every poll_interval instead");
                    }
                }
            },
            _ = tick.tick() => {
                sync(state, &docker).await?;
                // Only a failed stream is asked for again: one that is open stays, quiet or not.
                if events.is_none() {
                    events = Some(subscribe(&docker));
                }
            }
        }
    }
}

/// An open stream of the daemon's container events, and when it was opened.
struct Subscription {
    stream: std::pin::Pin<
        Box<
            dyn futures_lite::Stream<
                    Item = Result<bollard::models::EventMessage, bollard::errors::Error>,
                > + Send,
        >,
    >,
    opened: std::time::Instant,
}

/// The next event of `events`; none ever while there is no stream.
async fn next_event(
    events: &mut Option<Subscription>,
) -> Option<Result<bollard::models::EventMessage, bollard::errors::Error>> {
    match events {
        Some(e) => e.stream.next().await,
        None => std::future::pending().await,
    }
}

/// The daemon's container events from now on (see [`EVENTS`]).
fn subscribe(docker: &Docker) -> Subscription {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        (
            "event".to_owned(),
            EVENTS.iter().map(|e| (*e).to_owned()).collect(),
        ),
    ]);
    let stream = docker.events(Some(EventsOptions {
        since: Some(since.to_string()),
        until: None,
        filters: Some(filters),
    }));
    Subscription {
        stream: Box::pin(stream),
        opened: std::time::Instant::now(),
    }
}

/// Runs `request`, failing it as [`Lost::Stalled`] when it takes longer than [`REQUEST_TIMEOUT_SECS`]:
/// bollard's own limit is on the response headers, and a body that stops half way would hold the
/// provider for good.
async fn within<T>(
    what: &'static str,
    request: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, Lost> {
    let limit = std::time::Duration::from_secs(REQUEST_TIMEOUT_SECS);
    match tokio::time::timeout(limit, request).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(Lost::Stalled(what)),
    }
}

/// A client for `endpoint` (a unix socket must exist to be connected to).
fn connect(endpoint: &DockerEndpoint) -> Result<Docker, bollard::errors::Error> {
    match endpoint {
        DockerEndpoint::Unix(path) => Docker::connect_with_unix(
            &path.to_string_lossy(),
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        ),
        DockerEndpoint::Tcp(addr) => Docker::connect_with_http(
            &format!("tcp://{addr}"),
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        ),
    }
}

/// Lists the running containers that carry `<p>.enable` (`mc-router.host`) and hands their servers to
/// the sink.
async fn sync(state: &mut State, docker: &Docker) -> Result<(), Lost> {
    let prefix = state.config.label_prefix.clone();
    let filters = HashMap::from([("label".to_owned(), vec![labels::selector(&prefix)])]);
    let list = within(
        "the container list",
        docker.list_containers(Some(ListContainersOptions {
            all: false,
            filters: Some(filters),
            ..Default::default()
        })),
    )
    .await?;
    let rules = LabelRules {
        prefix: &prefix,
        network: state.config.network.as_deref(),
    };
    let mut servers = Vec::new();
    let mut reported = HashMap::new();
    let mut off_network = HashSet::new();
    // The list holds running and paused containers; a paused one would accept a player's connection
    // and never answer it.
    let running = list
        .into_iter()
        .filter(|c| c.state != Some(ContainerSummaryStateEnum::PAUSED));
    for summary in running {
        let container = container(summary);
        match labels::server_config(&container, rules) {
            Ok(Some(server)) => {
                if let Some(fell_back) = labels::network_fallback(&container, rules) {
                    if !state.off_network.contains(&container.id) {
                        // Names as quoted fields: a network's name is whoever made it's to choose.
                        tracing::warn!(container = ?container.name, network = ?fell_back.wanted,
                            networks = ?fell_back.networks, used = ?fell_back.used,
                            "docker container has no address on [docker] network (or its \
                             mc-router.network), so its address on another network is used (Compose \
                             names a network <project>_<name> unless it has a name:)");
                    }
                    off_network.insert(container.id.clone());
                }
                servers.push(server);
            }
            Ok(None) => {}
            Err(errors) => {
                if state.reported.get(&container.id) != Some(&errors) {
                    for issue in &errors.0 {
                        tracing::error!(container = ?container.name, key = ?issue.key,
                            reason = %nethergate_core::config::Escaped(&issue.reason),
                            "docker container skipped: invalid label");
                    }
                }
                reported.insert(container.id, errors);
            }
        }
    }
    state.reported = reported;
    state.off_network = off_network;
    // A stable order, so an unchanged set of containers is an unchanged set of servers.
    servers.sort_by(|a, b| a.name.cmp(&b.name).then(a.source.cmp(&b.source)));
    (state.sink)(servers);
    Ok(())
}

/// What the labels need of a container, from the Engine's list entry.
fn container(summary: ContainerSummary) -> Container {
    let id = summary.id.unwrap_or_default();
    let name = summary
        .names
        .as_ref()
        .and_then(|names| names.first())
        .map(|n| n.trim_start_matches('/').to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| id.chars().take(12).collect());
    let networks = summary
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(network, endpoint)| {
            let ip = [endpoint.ip_address, endpoint.global_ipv6_address]
                .into_iter()
                .flatten()
                .find_map(|ip| ip.parse::<IpAddr>().ok());
            (network, ip)
        })
        .collect();
    let ports = summary
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(PublishedPort {
                private: p.private_port,
                public: p.public_port?,
                host_ip: p.ip.as_deref().and_then(|ip| ip.parse().ok()),
                tcp: matches!(
                    p.typ,
                    None | Some(PortSummaryTypeEnum::TCP | PortSummaryTypeEnum::EMPTY)
                ),
            })
        })
        .collect();
    Container {
        id,
        name,
        labels: summary
            .labels
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        networks,
        ports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_entry_becomes_a_container() {
        let summary: ContainerSummary = serde_json::from_str(
            r#"{
                "Id": "4f1c0ffee0123456789",
                "Names": ["/mc-lobby"],
                "Labels": {"nethergate.enable": "true"},
                "State": "running",
                "Ports": [
                    {"PrivatePort": 25565, "PublicPort": 40000, "Type": "tcp", "IP": "0.0.0.0"},
                    {"PrivatePort": 25565, "Type": "tcp"},
                    {"PrivatePort": 19132, "PublicPort": 19132, "Type": "udp", "IP": "::"}
                ],
                "NetworkSettings": {"Networks": {
                    "mc": {"IPAddress": "172.20.0.3"},
                    "v6only": {"IPAddress": "", "GlobalIPv6Address": "fd00::3"},
                    "host": {"IPAddress": ""}
                }}
            }"#,
        )
        .unwrap();
        let c = container(summary);
        assert_eq!(c.id, "4f1c0ffee0123456789");
        assert_eq!(c.name, "mc-lobby");
        assert_eq!(c.labels["nethergate.enable"], "true");
        assert_eq!(c.networks["mc"], Some(IpAddr::from([172, 20, 0, 3])));
        assert_eq!(c.networks["v6only"], Some("fd00::3".parse().unwrap()));
        assert_eq!(c.networks["host"], None);
        assert_eq!(c.ports.len(), 2, "unpublished ports are left out");
        assert!(c.ports[0].tcp && !c.ports[1].tcp);
        assert_eq!(c.ports[0].host_ip, Some(IpAddr::from([0, 0, 0, 0])));
    }

    #[test]
    fn nameless_entry_is_named_by_its_short_id() {
        let summary: ContainerSummary =
            serde_json::from_str(r#"{"Id": "4f1c0ffee0123456789", "Names": []}"#).unwrap();
        assert_eq!(container(summary).name, "4f1c0ffee012");
    }
}
