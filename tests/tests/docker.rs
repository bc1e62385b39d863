//! The Docker provider against a fake Docker Engine: real proxies (tokio and smol), real TCP backends, and
//! a small engine in this file that speaks the Engine HTTP API on a unix socket in a temp dir (or on TCP)
//! (`/_ping`, `/version`, `/containers/json` with label filters, `/containers/{id}/json`, and `/events` as
//! a chunked stream of JSON lines), with or without the `/v1.xx` prefix. It can stop and come back on the
//! same socket, as a restarted daemon does.

use nethergate_core::{Config, Plugins};
use nethergate_driver::docker::DockerProvider;
use nethergate_driver::reload::Reloader;
use nethergate_driver::Running;
use nethergate_e2e::*;
use serde_json::{json, Value};
use std::io;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------------------
// The fake engine

/// A container as the engine lists it.
#[derive(Clone)]
struct FakeContainer {
    id: String,
    name: String,
    labels: Vec<(String, String)>,
    /// (network, IPv4 address)
    networks: Vec<(String, String)>,
    /// (private, public) TCP ports published on every interface.
    published: Vec<(u16, u16)>,
    paused: bool,
}

impl FakeContainer {
    fn new(name: &str, labels: &[(&str, &str)]) -> FakeContainer {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        FakeContainer {
            id: format!("{:064x}", NEXT.fetch_add(1, Ordering::SeqCst) * 0x1f2e3d),
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            networks: Vec::new(),
            published: Vec::new(),
            paused: false,
        }
    }

    /// Attached to `network` with IP 127.0.0.1 (so the proxy reaches a backend of this test).
    fn on_network(mut self, network: &str) -> FakeContainer {
        self.networks
            .push((network.to_owned(), "127.0.0.1".to_owned()));
        self
    }

    fn publishing(mut self, private: u16, public: u16) -> FakeContainer {
        self.published.push((private, public));
        self
    }

    fn labels_json(&self) -> Value {
        Value::Object(
            self.labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }

    fn networks_json(&self) -> Value {
        Value::Object(
            self.networks
                .iter()
                .map(|(n, ip)| {
                    (
                        n.clone(),
                        json!({"NetworkID": format!("net-{n}"), "IPAddress": ip, "IPPrefixLen": 16,
                               "Gateway": "", "GlobalIPv6Address": "", "MacAddress": ""}),
                    )
                })
                .collect(),
        )
    }

    /// An entry of `GET /containers/json`.
    fn summary(&self) -> Value {
        let ports: Vec<Value> = self
            .published
            .iter()
            .map(|(private, public)| {
                json!({"IP": "0.0.0.0", "PrivatePort": private, "PublicPort": public, "Type": "tcp"})
            })
            .collect();
        json!({
            "Id": self.id, "Names": [format!("/{}", self.name)], "Image": "itzg/minecraft-server",
            "ImageID": "sha256:0", "Command": "/start", "Created": 1_700_000_000,
            "Ports": ports, "Labels": self.labels_json(),
            "State": if self.paused { "paused" } else { "running" }, "Status": "Up 2 seconds",
            "HostConfig": {"NetworkMode": "default"},
            "NetworkSettings": {"Networks": self.networks_json()}, "Mounts": []
        })
    }

    /// The answer of `GET /containers/{id}/json`.
    fn inspect(&self) -> Value {
        json!({
            "Id": self.id, "Name": format!("/{}", self.name), "Image": "sha256:0",
            "State": {"Status": "running", "Running": true},
            "Config": {"Image": "itzg/minecraft-server", "Labels": self.labels_json()},
            "NetworkSettings": {"Networks": self.networks_json()}
        })
    }
}

/// A connection to the fake daemon, over a unix socket or TCP.
trait Conn: Read + Write + Send + 'static {
    fn duplicate(&self) -> io::Result<Box<dyn Conn>>;
    fn close(&self);
    fn limit_reads(&self, limit: Duration);
}

/// Unix and TCP streams have the same inherent methods under the same names, but no shared trait.
macro_rules! impl_conn {
    ($($stream:ty),*) => {$(
        impl Conn for $stream {
            fn duplicate(&self) -> io::Result<Box<dyn Conn>> {
                Ok(Box::new(self.try_clone()?))
            }
            fn close(&self) {
                let _ = self.shutdown(Shutdown::Both);
            }
            fn limit_reads(&self, limit: Duration) {
                let _ = self.set_read_timeout(Some(limit));
            }
        }
    )*};
}

impl_conn!(UnixStream, TcpStream);

#[derive(Default)]
struct Events {
    /// (time in seconds, chunk) of every event so far.
    log: Vec<(u64, String)>,
    subscribers: Vec<Box<dyn Conn>>,
}

#[derive(Default)]
struct Shared {
    containers: Mutex<Vec<FakeContainer>>,
    /// The event log and the open `/events` streams, under one lock so that a new stream gets every
    /// event exactly once (replayed from `since`, or live).
    events: Mutex<Events>,
    /// Every connection, so a stopping daemon can close them all.
    connections: Mutex<Vec<Box<dyn Conn>>>,
    /// The request targets seen, in order.
    requests: Mutex<Vec<String>>,
    /// `/events` is answered 403, as a socket proxy that forbids it does.
    events_forbidden: AtomicBool,
    /// How many container lists still to answer with headers and a first byte, then nothing.
    stalled_lists: std::sync::atomic::AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The accept loop of a running daemon.
struct Serving {
    stopping: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Where the fake daemon listens.
enum Listen {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// A fake Docker daemon.
struct Engine {
    listen: Listen,
    shared: Arc<Shared>,
    serving: Option<Serving>,
}

/// Serves every connection from `conns` on a thread of its own, until `stop` is set.
fn accept<C: Conn>(
    conns: impl Iterator<Item = io::Result<C>>,
    stop: &AtomicBool,
    shared: &Arc<Shared>,
) {
    for conn in conns {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else { continue };
        if let Ok(c) = conn.duplicate() {
            lock(&shared.connections).push(c);
        }
        let shared = shared.clone();
        std::thread::spawn(move || serve(Box::new(conn), &shared));
    }
}

impl Engine {
    /// A daemon on the unix socket `socket`, not running yet.
    fn new(socket: &Path) -> Engine {
        Engine {
            listen: Listen::Unix(socket.to_path_buf()),
            shared: Arc::new(Shared::default()),
            serving: None,
        }
    }

    /// A daemon on a TCP port of 127.0.0.1 (`tcp://` endpoints), not running yet.
    fn tcp() -> Engine {
        Engine {
            listen: Listen::Tcp(refused_addr()),
            shared: Arc::new(Shared::default()),
            serving: None,
        }
    }

    /// The endpoint to configure.
    fn endpoint(&self) -> String {
        match &self.listen {
            Listen::Unix(path) => format!("unix://{}", path.display()),
            Listen::Tcp(addr) => format!("tcp://{addr}"),
        }
    }

    /// Starts listening.
    fn up(&mut self) {
        let stopping = Arc::new(AtomicBool::new(false));
        let (stop, shared) = (stopping.clone(), self.shared.clone());
        let thread = match &self.listen {
            Listen::Unix(path) => {
                let _ = std::fs::remove_file(path);
                let listener = UnixListener::bind(path).expect("bind the fake docker socket");
                std::thread::spawn(move || accept(listener.incoming(), &stop, &shared))
            }
            Listen::Tcp(addr) => {
                let listener =
                    std::net::TcpListener::bind(addr).expect("bind the fake docker port");
                std::thread::spawn(move || accept(listener.incoming(), &stop, &shared))
            }
        };
        self.serving = Some(Serving { stopping, thread });
    }

    /// Stops as a daemon does: every connection closed, the socket gone.
    fn down(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.stopping.store(true, Ordering::SeqCst);
            // Wakes the accept loop.
            match &self.listen {
                Listen::Unix(path) => drop(UnixStream::connect(path)),
                Listen::Tcp(addr) => drop(TcpStream::connect(addr)),
            }
            let _ = serving.thread.join();
        }
        for c in lock(&self.shared.connections).drain(..) {
            c.close();
        }
        lock(&self.shared.events).subscribers.clear();
        if let Listen::Unix(path) = &self.listen {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Starts a container: listed from now on, and a `start` event.
    fn run(&self, c: FakeContainer) {
        self.run_quietly(c.clone());
        self.event("start", &c);
    }

    /// Starts a container without any event (as if the event was lost).
    fn run_quietly(&self, c: FakeContainer) {
        lock(&self.shared.containers).push(c);
    }

    /// Stops a container: `die` and `stop` events, no longer listed.
    fn stop(&self, name: &str) {
        let removed: Vec<FakeContainer> = {
            let mut all = lock(&self.shared.containers);
            let (gone, kept) = all.drain(..).partition(|c| c.name == name);
            *all = kept;
            gone
        };
        for c in &removed {
            self.event("die", c);
            self.event("stop", c);
        }
    }

    /// Pauses (`true`) or unpauses a container: still listed (as paused), and a `pause` or `unpause`
    /// event.
    fn pause(&self, name: &str, paused: bool) {
        let changed: Vec<FakeContainer> = lock(&self.shared.containers)
            .iter_mut()
            .filter(|c| c.name == name)
            .map(|c| {
                c.paused = paused;
                c.clone()
            })
            .collect();
        for c in &changed {
            self.event(if paused { "pause" } else { "unpause" }, c);
        }
    }

    fn event(&self, action: &str, c: &FakeContainer) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let line = json!({
            "Type": "container", "Action": action, "status": action, "id": c.id,
            "Actor": {"ID": c.id, "Attributes": {"name": c.name, "image": "itzg/minecraft-server"}},
            "scope": "local", "time": now.as_secs(), "timeNano": now.as_nanos() as u64
        })
        .to_string()
            + "\n";
        let chunk = format!("{:x}\r\n{line}\r\n", line.len());
        let mut events = lock(&self.shared.events);
        events
            .subscribers
            .retain_mut(|s| s.write_all(chunk.as_bytes()).is_ok());
        events.log.push((now.as_secs(), chunk));
    }

    /// Cuts every open event stream in the middle of its chunked body (no last chunk), as a proxy's idle
    /// timeout between the client and the daemon does.
    fn cut_event_streams(&self) {
        for s in lock(&self.shared.events).subscribers.drain(..) {
            s.close();
        }
    }

    /// Request targets seen so far.
    fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }

    /// How many requests so far went to a target holding `path`.
    fn requests_to(&self, path: &str) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.contains(path))
            .count()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.down();
    }
}

/// Decodes `%XX` and `+` of a query string value.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `name` in a query string.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

/// Whether `c` passes a `label` filter of the Engine (`key` or `key=value`).
fn label_matches(c: &FakeContainer, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => c.labels.iter().any(|(ck, cv)| ck == k && cv == v),
        None => c.labels.iter().any(|(ck, _)| ck == filter),
    }
}

/// Answers requests on one connection until it closes or asks for the event stream.
fn serve(conn: Box<dyn Conn>, shared: &Arc<Shared>) {
    conn.limit_reads(Duration::from_secs(30));
    let Ok(mut out) = conn.duplicate() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        lock(&shared.requests).push(target.to_owned());
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        // The API version prefix is optional: /v1.53/containers/json and /containers/json are the same.
        let path = match path
            .strip_prefix("/v")
            .and_then(|rest| rest.split_once('/'))
        {
            Some((version, rest))
                if version
                    .split('.')
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
            {
                format!("/{rest}")
            }
            _ => path.to_owned(),
        };
        let containers = lock(&shared.containers).clone();
        let (status, content_type, body) = match (method, path.as_str()) {
            ("GET" | "HEAD", "/_ping") => (200, "text/plain", "OK".to_owned()),
            ("GET", "/version") => (
                200,
                "application/json",
                json!({"Version": "27.3.1", "ApiVersion": "1.47", "MinAPIVersion": "1.24",
                       "Os": "linux", "Arch": "amd64", "KernelVersion": "6.1.0", "GoVersion": "go1.22.7",
                       "GitCommit": "fake", "BuildTime": "2024-09-20T11:41:00.000000000+00:00"})
                .to_string(),
            ),
            ("GET", "/containers/json")
                if shared
                    .stalled_lists
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok() =>
            {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n[";
                if out.write_all(head.as_bytes()).is_ok() {
                    // The rest never comes; the connection stays open until the client gives up.
                    let mut rest = [0u8; 256];
                    while matches!(reader.read(&mut rest), Ok(n) if n > 0) {}
                }
                return;
            }
            ("GET", "/containers/json") => {
                let filters: Value = query_param(query, "filters")
                    .and_then(|f| serde_json::from_str(&f).ok())
                    .unwrap_or(Value::Null);
                let labels: Vec<String> = filters["label"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                let list: Vec<Value> = containers
                    .iter()
                    .filter(|c| labels.iter().all(|l| label_matches(c, l)))
                    .map(FakeContainer::summary)
                    .collect();
                (200, "application/json", Value::Array(list).to_string())
            }
            ("GET", "/events") if shared.events_forbidden.load(Ordering::SeqCst) => (
                403,
                "application/json",
                json!({"message": "forbidden"}).to_string(),
            ),
            ("GET", "/events") => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nServer: Docker/27.3.1 (linux)\r\n\
                            Api-Version: 1.47\r\nTransfer-Encoding: chunked\r\n\r\n";
                // As the daemon does, replay the events since `since` (seconds), then go on live.
                let since: Option<u64> = query_param(query, "since").and_then(|s| s.parse().ok());
                let mut events = lock(&shared.events);
                let mut ok = out.write_all(head.as_bytes()).is_ok();
                if let Some(since) = since {
                    for (_, chunk) in events.log.iter().filter(|(t, _)| *t >= since) {
                        ok = ok && out.write_all(chunk.as_bytes()).is_ok();
                    }
                }
                if ok {
                    events.subscribers.push(out);
                }
                drop(events);
                // The stream stays open until the client goes or the daemon stops.
                let mut rest = [0u8; 256];
                while matches!(reader.read(&mut rest), Ok(n) if n > 0) {}
                return;
            }
            ("GET", p) if p.starts_with("/containers/") && p.ends_with("/json") => {
                let id = &p["/containers/".len()..p.len() - "/json".len()];
                match containers
                    .iter()
                    .find(|c| c.id == id || c.id.starts_with(id) || c.name == id)
                {
                    Some(c) => (200, "application/json", c.inspect().to_string()),
                    None => (
                        404,
                        "application/json",
                        json!({"message": format!("No such container: {id}")}).to_string(),
                    ),
                }
            }
            _ => (
                404,
                "application/json",
                json!({"message": "page not found"}).to_string(),
            ),
        };
        let reason = match status {
            200 => "OK",
            403 => "Forbidden",
            _ => "Not Found",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nApi-Version: 1.47\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if out.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Proxies, backends and probes

#[derive(Clone, Copy)]
enum Rt {
    Tokio,
    Smol,
}

impl Rt {
    fn name(self) -> &'static str {
        match self {
            Rt::Tokio => "tokio",
            Rt::Smol => "smol",
        }
    }
}

/// A proxy with the Docker provider feeding its reloader, as `Launch::supervise` sets it up.
struct Proxy {
    provider: Option<DockerProvider>,
    running: Option<Running>,
}

impl Proxy {
    fn start(rt: Rt, config: Config) -> Proxy {
        let running = match rt {
            Rt::Tokio => nethergate_tokio::spawn(config.clone(), Plugins::new()),
            Rt::Smol => nethergate_smol::spawn(config.clone(), Plugins::new()),
        }
        .expect("proxy starts");
        let reloader = Reloader::new(
            &config.main.servers_dir,
            None,
            &config.servers,
            running.handle().clone(),
        );
        let docker = config.main.docker.clone().expect("[docker] configured");
        let provider = DockerProvider::start(docker, reloader).expect("provider starts");
        Proxy {
            provider: Some(provider),
            running: Some(running),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.running
            .as_ref()
            .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), Running::addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The provider first: its thread is joined, which must not hang.
        drop(self.provider.take());
        if let Some(r) = self.running.take() {
            let _ = r.shutdown();
        }
    }
}

/// A layout whose main file enables the provider on `endpoint`.
fn layout(endpoint: &str, extra: &str) -> Layout {
    Layout::new().main(&format!(
        "[docker]\nendpoint = \"{endpoint}\"\nnetwork = \"mcnet\"\nreconnect_delay = \"100ms\"\n{extra}"
    ))
}

/// Waits until the proxy has listed the containers `n` more times (each poll lists them), so that what is
/// checked next had that many polls to happen in, however slow the machine.
fn wait_polls(engine: &Engine, n: usize) {
    let lists = || engine.requests_to("/containers/json");
    let target = lists() + n;
    assert!(
        wait_until(Duration::from_secs(10), || lists() >= target),
        "{n} more polls never came ({} lists)",
        lists()
    );
}

fn log_lines(needles: &[&str]) -> usize {
    captured_logs()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

fn minecraft(name: &str, domains: &str, port: u16) -> FakeContainer {
    let port = port.to_string();
    FakeContainer::new(
        name,
        &[
            ("nethergate.enable", "true"),
            ("nethergate.domains", domains),
            ("nethergate.port", &port),
            ("com.docker.compose.service", name),
        ],
    )
    .on_network("mcnet")
}

// ---------------------------------------------------------------------------------------------------------
// Tests

/// Start → routed; label error → logged once, others unaffected; conflict with a file → reported, previous
/// table stays; stop → route gone.
fn containers_come_and_go_with_their_routes(rt: Rt) {
    capture_logs();
    let n = rt.name();
    let (a, b, f) = (Backend::named(), Backend::named(), Backend::named());
    let (pa, pb, pf) = (a.addr().port(), b.addr().port(), f.addr().port());
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("docker.sock");
    let mut engine = Engine::new(&socket);
    engine.up();
    let lobby = format!("lobby-{n}.example.com");
    engine.run(minecraft(&format!("lobby-{n}"), &lobby, pa));
    let layout = layout(&engine.endpoint(), "poll_interval = \"200ms\"").server(
        "files",
        &server_toml(&[&format!("files-{n}.example.com")], &[f.addr()], ""),
    );
    let proxy = Proxy::start(rt, layout.load());
    let addr = proxy.addr();

    // Listed at start.
    eventually("lobby routed", || routed_to(addr, &lobby) == Some(pa));
    let files = format!("files-{n}.example.com");
    assert_eq!(routed_to(addr, &files), Some(pf));

    // Started later, reachable only through a published port: the event brings it in.
    let survival = format!("survival-{n}.example.com");
    let mut published = minecraft(&format!("survival-{n}"), &survival, 25565);
    published.networks.clear();
    published = published.publishing(25565, pb);
    engine.run(published);
    eventually("survival routed", || routed_to(addr, &survival) == Some(pb));

    // A label error: reported once with the container, the label and the reason; the others stay.
    engine.run(
        FakeContainer::new(
            &format!("broken-{n}"),
            &[("nethergate.enable", "true"), ("nethergate.port", "http")],
        )
        .on_network("mcnet"),
    );
    // Quoted, as every value a container's owner writes is, so a label cannot start a log line of its own.
    let broken = format!("container=\"broken-{n}\"");
    assert!(
        wait_for_log(
            &[
                &broken,
                "key=\"nethergate.port\"",
                "\"http\" is not a port",
                "invalid label"
            ],
            Duration::from_secs(10)
        )
        .is_some(),
        "[{n}] label error reported\n{}",
        captured_logs()
    );
    wait_polls(&engine, 3);
    assert_eq!(
        log_lines(&[&broken, "invalid label"]),
        1,
        "[{n}] reported once, not at every poll"
    );
    assert_eq!(routed_to(addr, &lobby), Some(pa));
    assert_eq!(routed_to(addr, &survival), Some(pb));

    // Not on `[docker] network` (compose's `<project>_mcnet`): routed on the network it is on, and warned
    // about once while it runs.
    let stray = format!("stray-{n}.example.com");
    let mut off = minecraft(&format!("stray-{n}"), &stray, pa);
    off.networks.clear();
    engine.run(off.on_network("proj_mcnet"));
    eventually("stray routed", || routed_to(addr, &stray) == Some(pa));
    let warned = format!("container=\"stray-{n}\"");
    wait_polls(&engine, 3);
    assert_eq!(
        log_lines(&[
            &warned,
            "no address on [docker] network",
            "network=\"mcnet\"",
            "used=\"proj_mcnet\""
        ]),
        1,
        "[{n}] warned once, not at every poll\n{}",
        captured_logs()
    );
    assert_eq!(
        log_lines(&[
            &format!("container=\"lobby-{n}\""),
            "no address on [docker] network"
        ]),
        0
    );

    // A domain conflict with a file server: reported, the previous table stays.
    engine.run(minecraft(&format!("thief-{n}"), &files, pa));
    assert!(
        wait_for_log(
            &[
                &format!("docker container thief-{n}"),
                "claimed by both",
                "previous routes stay live"
            ],
            Duration::from_secs(10)
        )
        .is_some(),
        "[{n}] conflict reported\n{}",
        captured_logs()
    );
    assert_eq!(routed_to(addr, &files), Some(pf));
    assert_eq!(routed_to(addr, &lobby), Some(pa));
    wait_polls(&engine, 3); // several polls find the same conflict
    assert_eq!(
        log_lines(&[&format!("docker container thief-{n}"), "claimed by both"]),
        1,
        "[{n}] a lasting conflict is reported once, not at every poll"
    );
    // Another container while it lasts is held up by it too, and that is said again.
    engine.run(minecraft(
        &format!("held-{n}"),
        &format!("held-{n}.example.com"),
        pb,
    ));
    eventually("the held-up change reported", || {
        log_lines(&[&format!("docker container thief-{n}"), "claimed by both"]) == 2
    });
    engine.stop(&format!("held-{n}"));
    engine.stop(&format!("thief-{n}"));

    // Stopped: its route goes, the others stay.
    engine.stop(&format!("lobby-{n}"));
    eventually("lobby gone", || routed_to(addr, &lobby).is_none());
    assert_eq!(routed_to(addr, &survival), Some(pb));
    assert_eq!(routed_to(addr, &files), Some(pf));

    // The client spoke the real API: the version handshake first, a label filter on the list, a filtered
    // event stream. (bollard 0.21 sends unversioned paths such as `/containers/json`; the daemon then
    // answers with its newest API version. The fake takes `/v1.xx/...` as well.)
    let requests = engine.requests();
    let seen = |what: &str| requests.iter().any(|r| r.contains(what));
    assert!(
        requests.first().is_some_and(|r| r.ends_with("/version")),
        "{requests:?}"
    );
    assert!(seen("/containers/json?"), "{requests:?}");
    assert!(seen("nethergate.enable"), "{requests:?}");
    assert!(seen("/events?"), "{requests:?}");
    drop(proxy);
}

#[test]
fn tokio_containers_come_and_go_with_their_routes() {
    containers_come_and_go_with_their_routes(Rt::Tokio);
}

#[test]
fn smol_containers_come_and_go_with_their_routes() {
    containers_come_and_go_with_their_routes(Rt::Smol);
}

/// The daemon stops and comes back on the same socket: one warning for the outage, routes kept meanwhile,
/// then the changes made while it was down are picked up.
fn provider_reconnects_after_a_daemon_restart(rt: Rt) {
    capture_logs();
    let n = rt.name();
    let (a, b) = (Backend::named(), Backend::named());
    let (pa, pb) = (a.addr().port(), b.addr().port());
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("docker.sock");
    let mut engine = Engine::new(&socket);
    let endpoint = engine.endpoint();
    engine.up();
    let before = format!("before-{n}.example.com");
    let after = format!("after-{n}.example.com");
    engine.run(minecraft(&format!("before-{n}"), &before, pa));
    // A long poll: only the reconnection can pick up what changed during the outage.
    let proxy = Proxy::start(
        rt,
        layout(&engine.endpoint(), "poll_interval = \"1h\"").load(),
    );
    let addr = proxy.addr();
    eventually("first container routed", || {
        routed_to(addr, &before) == Some(pa)
    });

    engine.down();
    assert!(
        wait_for_log(
            &["docker daemon unreachable", &endpoint],
            Duration::from_secs(10)
        )
        .is_some(),
        "[{n}] outage reported\n{}",
        captured_logs()
    );
    engine.stop(&format!("before-{n}"));
    engine.run_quietly(minecraft(&format!("after-{n}"), &after, pb));
    std::thread::sleep(Duration::from_millis(600)); // several reconnection attempts
    assert_eq!(
        routed_to(addr, &before),
        Some(pa),
        "routes stay while the daemon is away"
    );

    engine.up();
    eventually("new container routed after the restart", || {
        routed_to(addr, &after) == Some(pb)
    });
    eventually("stopped container gone after the restart", || {
        routed_to(addr, &before).is_none()
    });
    assert!(
        wait_for_log(
            &["docker daemon reachable again", &endpoint],
            Duration::from_secs(10)
        )
        .is_some(),
        "[{n}] recovery reported"
    );
    assert_eq!(
        log_lines(&["docker daemon unreachable", &endpoint]),
        1,
        "[{n}] one warning per outage, not one per retry"
    );

    // Events flow on the new connection.
    engine.stop(&format!("after-{n}"));
    eventually("event after the restart", || {
        routed_to(addr, &after).is_none()
    });
    drop(proxy);
}

#[test]
fn tokio_provider_reconnects_after_a_daemon_restart() {
    provider_reconnects_after_a_daemon_restart(Rt::Tokio);
}

#[test]
fn smol_provider_reconnects_after_a_daemon_restart() {
    provider_reconnects_after_a_daemon_restart(Rt::Smol);
}

/// A daemon that is not there yet at start is waited for; a change whose event is lost is found by the
/// poll.
#[test]
fn late_daemon_and_lost_events_are_caught_up() {
    capture_logs();
    let (a, b) = (Backend::named(), Backend::named());
    let (pa, pb) = (a.addr().port(), b.addr().port());
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("docker.sock");
    let mut engine = Engine::new(&socket);
    let proxy = Proxy::start(
        Rt::Tokio,
        layout(&engine.endpoint(), "poll_interval = \"300ms\"").load(),
    );
    let addr = proxy.addr();
    assert!(
        wait_for_log(
            &["docker daemon unreachable", &socket.display().to_string()],
            Duration::from_secs(10)
        )
        .is_some(),
        "missing daemon reported"
    );

    engine.run_quietly(minecraft("early", "early.example.com", pa));
    engine.up();
    eventually("listed once the daemon is up", || {
        routed_to(addr, "early.example.com") == Some(pa)
    });

    engine.run_quietly(minecraft("quiet", "quiet.example.com", pb));
    eventually("found by the poll", || {
        routed_to(addr, "quiet.example.com") == Some(pb)
    });
    drop(proxy);
}

/// A backend, a temp dir and a fake daemon on `docker.sock` in it (not running yet), with logs captured.
fn one_backend_and_engine() -> (Backend, tempfile::TempDir, Engine) {
    capture_logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::new(&dir.path().join("docker.sock"));
    (Backend::named(), dir, engine)
}

/// A daemon whose `/events` is forbidden (a socket proxy with events off) but whose lists work: one warning,
/// no outage, and containers found by polling.
#[test]
fn a_forbidden_event_stream_falls_back_to_polling_with_one_warning() {
    let (a, dir, mut engine) = one_backend_and_engine();
    let (pa, socket) = (a.addr().port(), dir.path().join("docker.sock"));
    engine.shared.events_forbidden.store(true, Ordering::SeqCst);
    engine.up();
    let proxy = Proxy::start(
        Rt::Tokio,
        layout(&engine.endpoint(), "poll_interval = \"200ms\"").load(),
    );
    let addr = proxy.addr();
    engine.run_quietly(minecraft("polled", "polled.example.com", pa));
    eventually("found by polling", || {
        routed_to(addr, "polled.example.com") == Some(pa)
    });
    // Several polls, each asking for the stream again.
    wait_polls(&engine, 5);
    let path = socket.display().to_string();
    // Once at the connection and once per poll since (each poll lists the containers): not again
    // straight after each failure. The stream count is read first: a poll in between only adds a list.
    let (asked, lists) = (
        engine.requests_to("/events"),
        engine.requests_to("/containers/json"),
    );
    assert!(
        asked >= 3 && asked <= lists + 1,
        "the stream is asked for at each poll: {asked} times in {lists} polls"
    );
    assert_eq!(
        log_lines(&["docker event stream unavailable", &path, "403"]),
        1,
        "{}",
        captured_logs()
    );
    assert_eq!(log_lines(&["docker daemon unreachable", &path]), 0);
    drop(proxy);
}

/// A container list whose body stops after its headers is given up after the request limit (an outage,
/// logged), and the next connection lists the containers.
#[test]
fn a_stalled_list_is_given_up_and_retried() {
    let (a, dir, mut engine) = one_backend_and_engine();
    let (pa, socket) = (a.addr().port(), dir.path().join("docker.sock"));
    engine.shared.stalled_lists.store(1, Ordering::SeqCst);
    engine.run_quietly(minecraft("late", "late.example.com", pa));
    engine.up();
    let proxy = Proxy::start(Rt::Tokio, layout(&engine.endpoint(), "").load());
    let addr = proxy.addr();
    let path = socket.display().to_string();
    assert!(
        wait_for_log(
            &[
                "docker daemon unreachable",
                &path,
                "the container list did not finish within 20 s"
            ],
            Duration::from_secs(40)
        )
        .is_some(),
        "the stalled list is reported"
    );
    eventually("listed on the next connection", || {
        routed_to(addr, "late.example.com") == Some(pa)
    });
    drop(proxy);
}

/// Stopping the proxy stops the provider promptly, even while it waits for a daemon that never comes.
#[test]
fn provider_stops_promptly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("docker.sock");
    let mut docker = nethergate_core::config::DockerConfig::new(
        nethergate_core::config::DockerEndpoint::Unix(socket.clone()),
    );
    docker.reconnect_delay = Duration::from_secs(3600);
    let provider = DockerProvider::start_with(docker, Box::new(|_| {})).expect("start");
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    drop(provider);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stopping took {:?}",
        started.elapsed()
    );
}

/// The binaries' `Launch::supervise` starts the provider when `[docker]` is set. (It also installs the
/// binaries' SIGINT/SIGTERM/SIGHUP handling in this test process, which ends within seconds anyway.)
#[test]
fn supervise_starts_the_provider() {
    capture_logs();
    let a = Backend::named();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("docker.sock");
    let mut engine = Engine::new(&socket);
    engine.up();
    engine.run(minecraft(
        "supervised",
        "supervised.example.com",
        a.addr().port(),
    ));
    let layout = layout(&engine.endpoint(), "");
    let config = layout.load();
    let running = nethergate_smol::spawn(config.clone(), Plugins::new()).expect("proxy starts");
    let launch = nethergate_driver::cli::Launch {
        config,
        plugins: Plugins::new(),
        threads: 1,
        main_file: layout.path(),
    };
    let supervision = launch
        .supervise(running.handle().clone())
        .expect("supervise");
    let addr = running.addr();
    eventually("routed by the supervised provider", || {
        routed_to(addr, "supervised.example.com") == Some(a.addr().port())
    });
    drop(supervision);
    let _ = running.shutdown();
}

/// `tcp://host:port` endpoints speak the same API over plain HTTP.
#[test]
fn tcp_endpoint_works_too() {
    capture_logs();
    let a = Backend::named();
    let mut engine = Engine::tcp();
    engine.up();
    engine.run(minecraft("over-tcp", "tcp.example.com", a.addr().port()));
    let proxy = Proxy::start(Rt::Smol, layout(&engine.endpoint(), "").load());
    let addr = proxy.addr();
    eventually("routed through a tcp:// endpoint", || {
        routed_to(addr, "tcp.example.com") == Some(a.addr().port())
    });
    engine.stop("over-tcp");
    eventually("event through a tcp:// endpoint", || {
        routed_to(addr, "tcp.example.com").is_none()
    });
    drop(proxy);
}

/// A paused container accepts connections and never answers them: it is no server until unpaused (told by
/// its events; the poll interval is an hour, so only an event can do it).
#[test]
fn a_paused_container_is_no_server_until_unpaused() {
    capture_logs();
    let a = Backend::named();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut engine = Engine::new(&dir.path().join("docker.sock"));
    engine.up();
    engine.run(minecraft("sleepy", "sleepy.example.com", a.addr().port()));
    let proxy = Proxy::start(
        Rt::Tokio,
        layout(&engine.endpoint(), "poll_interval = \"1h\"").load(),
    );
    let addr = proxy.addr();
    eventually("routed while running", || {
        routed_to(addr, "sleepy.example.com") == Some(a.addr().port())
    });
    engine.pause("sleepy", true);
    eventually("unrouted while paused", || {
        routed_to(addr, "sleepy.example.com").is_none()
    });
    engine.pause("sleepy", false);
    eventually("routed again once unpaused", || {
        routed_to(addr, "sleepy.example.com") == Some(a.addr().port())
    });
    drop(proxy);
}

/// A tokio proxy on `layout` and a reloader of its servers that the test drives itself (no watch, no
/// provider): reloads and provider changes happen exactly when the test calls them.
fn reloading(layout: &Layout) -> (Running, Arc<Reloader>) {
    let config = layout.load();
    let running = nethergate_tokio::spawn(config.clone(), Plugins::new()).expect("proxy starts");
    let reloader = Reloader::new(
        &config.main.servers_dir,
        None,
        &config.servers,
        running.handle().clone(),
    );
    (running, reloader)
}

/// Each source of servers fails and recovers on its own: a provider's unchanged poll does not declare a
/// broken server file valid again, nor a server-file reload a provider's lasting conflict (whose report
/// is then not repeated by the provider's next poll either).
#[test]
fn a_source_is_valid_again_only_by_its_own_reload() {
    capture_logs();
    let a = Backend::named();
    let provider = "provider-under-test";
    let layout = Layout::new().server(
        "stable",
        &server_toml(&["stable-src.example.com"], &[a.addr()], ""),
    );
    let (running, reloader) = reloading(&layout);
    let again = |source: &str| valid_again(&layout, source);

    // A broken file; then the provider polls and finds nothing new.
    layout.write_server(
        "broken-src",
        "domains = [\"broken-src.example.com\"]\nbogus = 1\n",
    );
    reloader.reload_files();
    assert_eq!(log_lines(&["broken-src.toml", "bogus"]), 1);
    // (Its first list is a change, its second the same again.)
    reloader.set_provider(provider, Vec::new());
    reloader.set_provider(provider, Vec::new());
    assert_eq!(again(provider), 0, "{}", captured_logs());
    assert_eq!(again("files"), 0, "the file is still broken");
    // Removing it ends the files' problem.
    layout.remove_server("broken-src");
    reloader.reload_files();
    assert_eq!(again("files"), 1, "{}", captured_logs());

    // The provider brings a server claiming the file's domain: rejected and reported once.
    let thief = nethergate_core::ServerConfig::from_toml(
        "docker container thief-src",
        "thief-src",
        &server_toml(&["stable-src.example.com"], &[a.addr()], ""),
    )
    .expect("valid server");
    let conflict = ["docker container thief-src", "claimed by both"];
    reloader.set_provider(provider, vec![thief.clone()]);
    assert_eq!(log_lines(&conflict), 1, "{}", captured_logs());
    // A SIGHUP (files unchanged) neither ends the provider's problem nor makes its next poll news.
    reloader.reload_files();
    assert_eq!(again("files"), 1, "{}", captured_logs());
    reloader.set_provider(provider, vec![thief.clone()]);
    assert_eq!(log_lines(&conflict), 1, "{}", captured_logs());
    assert_eq!(again(provider), 0);
    // Nor does a file change rejected meanwhile (its own conflict, reported).
    layout.write_server(
        "copycat-src",
        &server_toml(&["stable-src.example.com"], &[a.addr()], ""),
    );
    reloader.reload_files();
    assert_eq!(log_lines(&["copycat-src.toml", "claimed by both"]), 1);
    reloader.set_provider(provider, vec![thief]);
    assert_eq!(log_lines(&conflict), 1, "{}", captured_logs());
    layout.remove_server("copycat-src");
    reloader.reload_files();
    // The container goes: the provider's problem is over.
    reloader.set_provider(provider, Vec::new());
    assert_eq!(again(provider), 1, "{}", captured_logs());
    assert_eq!(
        routed_to(running.addr(), "stable-src.example.com"),
        Some(a.addr().port())
    );
    let _ = running.shutdown();
}

/// An event stream cut in the middle of its body after serving a while (a proxy's idle timeout between
/// the proxy and the daemon) is asked for again at once, as one that ended cleanly is, and is not
/// reported as unavailable: the next container's event is not left to the poll.
#[test]
fn an_event_stream_cut_mid_body_is_reopened_at_once() {
    let (a, _dir, mut engine) = one_backend_and_engine();
    let endpoint = engine.endpoint();
    engine.up();
    let proxy = Proxy::start(
        Rt::Tokio,
        layout(&endpoint, "poll_interval = \"1h\"").load(),
    );
    let addr = proxy.addr();
    let streams = |e: &Engine| {
        e.requests()
            .iter()
            .filter(|r| r.contains("/events?"))
            .count()
    };
    eventually("event stream opened", || streams(&engine) == 1);
    std::thread::sleep(Duration::from_millis(300)); // longer than reconnect_delay
    engine.cut_event_streams();
    let unavailable = ["docker event stream unavailable", endpoint.as_str()];
    eventually("the cut seen", || {
        streams(&engine) == 2 || log_lines(&unavailable) > 0
    });
    engine.run(minecraft(
        "after-cut",
        "after-cut.example.com",
        a.addr().port(),
    ));
    eventually("routed by its event", || {
        routed_to(addr, "after-cut.example.com") == Some(a.addr().port())
    });
    assert_eq!(log_lines(&unavailable), 0, "{}", captured_logs());
    drop(proxy);
}

/// `label_prefix = "mc-router"` reads an mc-router setup's labels as they are: `mc-router.host` makes a
/// container a server (the list is asked for by that label), `mc-router.default` also takes every host no
/// other server claims, and `mc-router.network` picks the address, before `[docker] network`.
#[test]
fn an_mc_router_setup_is_read_as_it_is() {
    capture_logs();
    let (a, b, c) = (Backend::named(), Backend::named(), Backend::named());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut engine = Engine::new(&dir.path().join("docker.sock"));
    engine.up();
    let pa = a.addr().port().to_string();
    let mut survival = FakeContainer::new(
        "mc-survival",
        &[
            ("mc-router.host", "survival.example.com, play.example.com"),
            ("mc-router.port", &pa),
            ("mc-router.network", "zz_back"),
        ],
    );
    // The first network by name is one the backend cannot be reached on: only the label finds it.
    survival.networks = vec![
        ("a_front".to_owned(), "127.0.0.2".to_owned()),
        ("zz_back".to_owned(), "127.0.0.1".to_owned()),
    ];
    engine.run(survival);
    let pb = b.addr().port().to_string();
    engine.run(
        FakeContainer::new(
            "mc-lobby",
            &[
                ("mc-router.host", "lobby.example.com"),
                ("mc-router.default", "true"),
                ("mc-router.port", &pb),
            ],
        )
        .on_network("mcnet"),
    );
    // nethergate's own labels mean nothing under this prefix.
    engine.run(minecraft("theirs", "theirs.example.com", c.addr().port()));
    let proxy = Proxy::start(
        Rt::Tokio,
        layout(&engine.endpoint(), "label_prefix = \"mc-router\"").load(),
    );
    let addr = proxy.addr();
    let (pa, pb) = (a.addr().port(), b.addr().port());
    eventually("survival routed", || {
        routed_to(addr, "survival.example.com") == Some(pa)
    });
    assert_eq!(routed_to(addr, "play.example.com"), Some(pa));
    assert_eq!(routed_to(addr, "lobby.example.com"), Some(pb));
    assert_eq!(routed_to(addr, "anything.example.org"), Some(pb), "default");
    assert_eq!(
        routed_to(addr, "theirs.example.com"),
        Some(pb),
        "not a server"
    );
    let requests = engine.requests();
    assert!(
        requests.iter().any(|r| r.contains("mc-router.host")),
        "{requests:?}"
    );
    drop(proxy);
}

/// A change held up by a conflict with what was live is taken once that is gone, without waiting for its
/// own source to change again: a server file rejected for a domain a container claims goes live when the
/// container stops, and a container rejected for a file's domain when that file is removed.
#[test]
fn a_change_held_up_by_a_conflict_goes_live_once_the_conflict_is_gone() {
    capture_logs();
    let (a, b, c) = (Backend::named(), Backend::named(), Backend::named());
    let provider = "provider-held";
    let layout = Layout::new().server(
        "stable-held",
        &server_toml(&["stable-held.example.com"], &[a.addr()], ""),
    );
    let (running, reloader) = reloading(&layout);
    let container = |name: &str, domain: &str, to: SocketAddr| provided(name, &[domain], to);
    let addr = running.addr();

    // A container holds a domain; a file that claims it too is rejected.
    hold_and_claim(
        &layout,
        &reloader,
        addr,
        provider,
        "held",
        b.addr(),
        c.addr(),
    );
    // The container stops: the file goes live with it, no file event needed.
    reloader.set_provider(provider, Vec::new());
    assert_eq!(routed_to(addr, "held.example.com"), Some(c.addr().port()));
    assert_eq!(
        routed_to(addr, "held-late.example.com"),
        Some(c.addr().port())
    );

    // The other way round: a container claiming a file's domain waits for the file to go.
    reloader.set_provider(
        provider,
        vec![container("taker", "stable-held.example.com", b.addr())],
    );
    assert_eq!(
        log_lines(&["docker container taker", "claimed by both"]),
        1,
        "{}",
        captured_logs()
    );
    assert_eq!(
        routed_to(addr, "stable-held.example.com"),
        Some(a.addr().port())
    );
    layout.remove_server("stable-held");
    reloader.reload_files();
    assert_eq!(
        routed_to(addr, "stable-held.example.com"),
        Some(b.addr().port())
    );
    assert!(
        log_lines(&["held up by a conflict fits now", provider]) == 1,
        "{}",
        captured_logs()
    );
    // Still in conflict, a held change is not reported again: the taker's conflict was told once.
    assert_eq!(log_lines(&["docker container taker", "claimed by both"]), 1);
    let _ = running.shutdown();
}

/// How many times `source` of the proxy on `layout` was logged as valid again (by this layout's
/// `servers_dir`: tests running at once log into one capture).
fn valid_again(layout: &Layout, source: &str) -> usize {
    let dir = format!("{:?}", layout.dir().join("servers").display().to_string());
    log_lines(&[
        "configuration valid again",
        &format!("source=\"{source}\""),
        &dir,
    ])
}

/// `provider` brings a container holding `<tag>.example.com` (to `holder`); then a server file
/// `<tag>-late` claims it too, and `<tag>-late.example.com` (to `late`): the file is rejected, reported once.
fn hold_and_claim(
    layout: &Layout,
    reloader: &Reloader,
    addr: SocketAddr,
    provider: &str,
    tag: &str,
    holder: SocketAddr,
    late: SocketAddr,
) {
    let held = format!("{tag}.example.com");
    reloader.set_provider(
        provider,
        vec![provided(&format!("{tag}-holder"), &[&held], holder)],
    );
    assert_eq!(routed_to(addr, &held), Some(holder.port()));
    let late_domain = format!("{tag}-late.example.com");
    layout.write_server(
        &format!("{tag}-late"),
        &server_toml(&[&held, &late_domain], &[late], ""),
    );
    reloader.reload_files();
    assert_eq!(
        log_lines(&[&format!("{tag}-late.toml"), "claimed by both"]),
        1,
        "{}",
        captured_logs()
    );
    assert_eq!(routed_to(addr, &late_domain), None);
}

/// A provider's server: `docker container <name>` routing `domains` to `to`.
fn provided(name: &str, domains: &[&str], to: SocketAddr) -> nethergate_core::ServerConfig {
    nethergate_core::ServerConfig::from_toml(
        &format!("docker container {name}"),
        name,
        &server_toml(domains, &[to], ""),
    )
    .expect("valid server")
}

/// A held-up server file is tried again as the directory is now, not as it was read: a file removed
/// since (no reload in between: a SIGHUP-only setup, or a removal still in the watch's debounce) does
/// not come back when the conflict ends.
#[test]
fn a_held_up_file_removed_since_does_not_come_back() {
    capture_logs();
    let (a, b, c) = (Backend::named(), Backend::named(), Backend::named());
    let layout = Layout::new().server(
        "rmd-stable",
        &server_toml(&["rmd-stable.example.com"], &[a.addr()], ""),
    );
    let (running, reloader) = reloading(&layout);
    let addr = running.addr();
    hold_and_claim(&layout, &reloader, addr, "rmd", "rmd", b.addr(), c.addr());
    layout.remove_server("rmd-late");
    reloader.set_provider("rmd", Vec::new());
    assert_eq!(
        routed_to(addr, "rmd-late.example.com"),
        None,
        "{}",
        captured_logs()
    );
    assert_eq!(routed_to(addr, "rmd.example.com"), None);
    assert_eq!(
        routed_to(addr, "rmd-stable.example.com"),
        Some(a.addr().port())
    );
    let _ = running.shutdown();
}

/// A held-up change that goes live while another file is still broken leaves the files' problem open:
/// fixing that file later (no route changes) is still told as `configuration valid again`.
#[test]
fn a_held_up_change_going_live_keeps_a_broken_files_problem_open() {
    capture_logs();
    let (a, b, c) = (Backend::named(), Backend::named(), Backend::named());
    let stable = server_toml(&["brk-stable.example.com"], &[a.addr()], "");
    let layout = Layout::new().server("brk-stable", &stable);
    let (running, reloader) = reloading(&layout);
    reloader.set_provider(
        "brk",
        vec![provided("brk-holder", &["brk-held.example.com"], b.addr())],
    );
    layout.write_server(
        "brk-stable",
        "domains = [\"brk-stable.example.com\"]\naddresses = 5\n",
    );
    layout.write_server(
        "brk-late",
        &server_toml(&["brk-held.example.com"], &[c.addr()], ""),
    );
    reloader.reload_files();
    reloader.set_provider("brk", Vec::new());
    assert_eq!(
        routed_to(running.addr(), "brk-held.example.com"),
        Some(c.addr().port()),
        "{}",
        captured_logs()
    );
    let again = || valid_again(&layout, "files");
    assert_eq!(again(), 0, "the broken file is still broken");
    layout.write_server("brk-stable", &stable);
    reloader.reload_files();
    assert_eq!(again(), 1, "{}", captured_logs());
    let _ = running.shutdown();
}

/// A held-up change tried again and rejected for another conflict than the one reported is reported
/// anew: the container whose first conflict the admin fixed is not left unrouted unsaid.
#[test]
fn a_held_up_change_rejected_for_another_conflict_is_reported_again() {
    capture_logs();
    let (a, b) = (Backend::named(), Backend::named());
    let layout = Layout::new().server(
        "new-file",
        &server_toml(&["new-x.example.com"], &[a.addr()], ""),
    );
    let (running, reloader) = reloading(&layout);
    let both = vec![provided(
        "new-c",
        &["new-x.example.com", "new-y.example.com"],
        b.addr(),
    )];
    reloader.set_provider("new", both.clone());
    assert_eq!(log_lines(&["new-x.example.com", "claimed by both"]), 1);
    // The file lets go of x but takes y: live; the container, tried again, now conflicts on y.
    layout.write_server(
        "new-file",
        &server_toml(&["new-y.example.com"], &[a.addr()], ""),
    );
    reloader.reload_files();
    assert_eq!(
        log_lines(&["new-y.example.com", "claimed by both"]),
        1,
        "{}",
        captured_logs()
    );
    // The provider's next poll, the same servers: not news.
    reloader.set_provider("new", both);
    assert_eq!(log_lines(&["new-y.example.com", "claimed by both"]), 1);
    assert_eq!(routed_to(running.addr(), "new-x.example.com"), None);
    let _ = running.shutdown();
}

/// Asserts that `host` is routed to `to`, with the captured logs when it is not.
fn assert_routed(addr: SocketAddr, host: &str, to: &Backend) {
    assert_eq!(
        routed_to(addr, host),
        Some(to.addr().port()),
        "{host}\n{}",
        captured_logs()
    );
}

/// Four backends, and a proxy driven by [`reloading`] with one server file `<tag>-stable` routing
/// `<tag>-stable.example.com` to the first backend.
fn four_backends_and_a_file(tag: &str) -> ([Backend; 4], Layout, Running, Arc<Reloader>) {
    capture_logs();
    let backends = [(); 4].map(|()| Backend::named());
    let layout = Layout::new().server(
        &format!("{tag}-stable"),
        &server_toml(
            &[&format!("{tag}-stable.example.com")],
            &[backends[0].addr()],
            "",
        ),
    );
    let (running, reloader) = reloading(&layout);
    (backends, layout, running, reloader)
}

/// A held server file whose retry cannot read the directory (a moment of `EMFILE`, a remount) stays held
/// and goes live at the next change that frees anything, instead of being dropped unsaid.
#[test]
fn a_held_up_file_survives_an_unreadable_directory_at_its_retry() {
    let ([_a, b, c, d], layout, running, reloader) = four_backends_and_a_file("urd");
    let addr = running.addr();
    hold_and_claim(&layout, &reloader, addr, "urd", "urd", b.addr(), c.addr());
    let (servers, away) = (
        layout.dir().join("servers"),
        layout.dir().join("servers.away"),
    );
    std::fs::rename(&servers, &away).expect("hide servers_dir");
    reloader.set_provider("urd", Vec::new());
    std::fs::rename(&away, &servers).expect("bring servers_dir back");
    assert_eq!(
        routed_to(addr, "urd-late.example.com"),
        None,
        "not read yet"
    );
    reloader.set_provider(
        "urd",
        vec![provided("urd-other", &["urd-other.example.com"], d.addr())],
    );
    assert_routed(addr, "urd-late.example.com", &c);
    let _ = running.shutdown();
}

/// Retries go on while one goes live: a container let in when another lets go of its domain frees, in
/// turn, a domain a held server file wants (three sources, two providers).
#[test]
fn a_retry_that_goes_live_frees_the_next_held_change() {
    let ([_a, b, c, d], layout, running, reloader) = four_backends_and_a_file("ch");
    let addr = running.addr();
    reloader.set_provider(
        "docker-ch",
        vec![provided("ch-d", &["ch-d.example.com"], b.addr())],
    );
    reloader.set_provider(
        "a-kube-ch",
        vec![provided("ch-k", &["ch-y.example.com"], c.addr())],
    );
    // Held: the file wants y, which kube has; kube's next proposal wants d, which docker has. (Kube's
    // name sorts before "files", so the held changes are not tried in the order that frees them.)
    layout.write_server(
        "ch-late",
        &server_toml(&["ch-y.example.com"], &[d.addr()], ""),
    );
    reloader.reload_files();
    reloader.set_provider(
        "a-kube-ch",
        vec![provided("ch-k2", &["ch-d.example.com"], c.addr())],
    );
    assert_eq!(routed_to(addr, "ch-y.example.com"), Some(c.addr().port()));
    // Docker lets go of d: kube's change fits, which lets go of y, which the file's change wants.
    reloader.set_provider("docker-ch", Vec::new());
    assert_routed(addr, "ch-d.example.com", &c);
    assert_routed(addr, "ch-y.example.com", &d);
    let _ = running.shutdown();
}
