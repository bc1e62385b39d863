//! The end-to-end harness: start a proxy on any runtime, real TCP backends and Minecraft-speaking clients on
//! 127.0.0.1, and a capture of the proxy's log lines.
//!
//! Clients and backends are plain blocking `std::net` code on threads, so the same tests run unchanged
//! against every runtime ([`Flavor`]).

use nethergate_core::codec::{self, Parsed};
use nethergate_core::handshake::{Handshake, NextState};
use nethergate_core::login::LoginStart;
use nethergate_core::{Config, Plugins, Registry};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// Every blocking read in a test gives up after this long, so a bug fails instead of hanging.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A proxy under test.
pub trait Started: Send {
    /// Where it listens.
    fn addr(&self) -> SocketAddr;
    /// Its session registry.
    fn registry(&self) -> Arc<Registry>;
    /// Graceful shutdown; returns when the proxy has stopped.
    fn shutdown(self: Box<Self>);
}

/// A runtime the suite runs against.
pub trait Flavor {
    /// Shown in failures.
    const NAME: &'static str;
    /// Starts a proxy for `config`.
    fn start(config: Config, plugins: Plugins) -> io::Result<Box<dyn Started>>;
}

/// A proxy of the driver, and the watch of its server directory (kept alive with it).
struct Driven(
    Option<nethergate_driver::Running>,
    #[allow(dead_code)] Option<nethergate_driver::reload::Watch>,
);

impl Driven {
    /// Runs like the binaries do: with the server directory watched for live reload.
    fn watched(config: &Config, running: nethergate_driver::Running) -> Box<dyn Started> {
        let reloader = nethergate_driver::reload::Reloader::new(
            &config.main.servers_dir,
            None,
            &config.servers,
            running.handle().clone(),
        );
        let watch = nethergate_driver::reload::watch(reloader).expect("watch servers_dir");
        Box::new(Driven(Some(running), Some(watch)))
    }
}

impl Started for Driven {
    fn addr(&self) -> SocketAddr {
        self.0
            .as_ref()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |r| r.addr())
    }
    fn registry(&self) -> Arc<Registry> {
        self.0
            .as_ref()
            .map_or_else(Registry::new, |r| r.handle().registry().clone())
    }
    fn shutdown(mut self: Box<Self>) {
        if let Some(r) = self.0.take() {
            r.shutdown().expect("proxy shut down cleanly");
        }
    }
}

/// nethergate-tokio.
pub struct Tokio;
impl Flavor for Tokio {
    const NAME: &'static str = "tokio";
    fn start(config: Config, plugins: Plugins) -> io::Result<Box<dyn Started>> {
        let running = nethergate_tokio::spawn(config.clone(), plugins)?;
        Ok(Driven::watched(&config, running))
    }
}

/// nethergate-smol.
pub struct Smol;
impl Flavor for Smol {
    const NAME: &'static str = "smol";
    fn start(config: Config, plugins: Plugins) -> io::Result<Box<dyn Started>> {
        let running = nethergate_smol::spawn(config.clone(), plugins)?;
        Ok(Driven::watched(&config, running))
    }
}

struct Blocking(Option<nethergate_examples::blocking::BlockingProxy>);

impl Started for Blocking {
    fn addr(&self) -> SocketAddr {
        self.0
            .as_ref()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.addr())
    }
    fn registry(&self) -> Arc<Registry> {
        self.0
            .as_ref()
            .map_or_else(Registry::new, |p| p.registry().clone())
    }
    fn shutdown(mut self: Box<Self>) {
        if let Some(p) = self.0.take() {
            p.shutdown();
        }
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            p.shutdown();
        }
    }
}

/// The blocking std::net example adapter (`examples/src/blocking.rs`): proof that the core runs under any
/// runtime. It implements forwarding but not graceful shutdown of live sessions.
pub struct BlockingThreads;
impl Flavor for BlockingThreads {
    const NAME: &'static str = "blocking";
    fn start(config: Config, plugins: Plugins) -> io::Result<Box<dyn Started>> {
        Ok(Box::new(Blocking(Some(
            nethergate_examples::blocking::BlockingProxy::start(config, plugins)?,
        ))))
    }
}

/// Raises the soft open-file limit to the hard one (tests with hundreds of sessions need a few thousand),
/// as the binaries do at startup.
pub fn raise_fd_limit() {
    let _ = nethergate_driver::limits::raise();
}

/// Starts `cmd` with the open-file limits `soft` and `hard`.
pub fn limit_open_files(cmd: &mut std::process::Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------------------
// Configuration on disk

/// A configuration written to a temporary directory, in the layout admins use.
pub struct Layout {
    dir: tempfile::TempDir,
    main: String,
}

impl Layout {
    /// An empty layout listening on an ephemeral port.
    pub fn new() -> Layout {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("servers")).expect("servers dir");
        Layout {
            dir,
            main: "bind = \"127.0.0.1:0\"\nservers_dir = \"servers\"\n".into(),
        }
    }

    /// Listens on `bind` instead of `127.0.0.1:0`.
    pub fn bind(mut self, bind: &str) -> Layout {
        self.main = self
            .main
            .replacen("bind = \"127.0.0.1:0\"", &format!("bind = {bind:?}"), 1);
        self
    }

    /// Adds lines to the main file.
    pub fn main(mut self, extra: &str) -> Layout {
        self.main.push_str(extra);
        self.main.push('\n');
        self
    }

    /// Writes `servers/<name>.toml`.
    pub fn server(self, name: &str, text: &str) -> Layout {
        self.write_server(name, text);
        self
    }

    /// Writes (or rewrites) `servers/<name>.toml` of a running layout.
    pub fn write_server(&self, name: &str, text: &str) {
        let dir = self.dir.path().join("servers");
        // Write then rename, as admins' tools and editors do, so a reload never sees half a file.
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("server file");
        std::fs::rename(&tmp, dir.join(format!("{name}.toml"))).expect("rename server file");
    }

    /// Removes `servers/<name>.toml`.
    pub fn remove_server(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join("servers").join(format!("{name}.toml")))
            .expect("remove server file");
    }

    /// The layout's directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The main file's path (written on demand).
    pub fn path(&self) -> PathBuf {
        let p = self.dir.path().join("nethergate.toml");
        std::fs::write(&p, &self.main).expect("main file");
        p
    }

    /// Loads the configuration the way the binaries do.
    pub fn load(&self) -> Config {
        Config::load(&self.path()).unwrap_or_else(|e| panic!("config invalid:\n{e}"))
    }
}

impl Default for Layout {
    fn default() -> Self {
        Layout::new()
    }
}

/// A server file body with `domains` and `addresses`.
pub fn server_toml(domains: &[&str], addresses: &[SocketAddr], extra: &str) -> String {
    let q = |v: Vec<String>| v.join(", ");
    format!(
        "domains = [{}]\naddresses = [{}]\n{extra}\n",
        q(domains.iter().map(|d| format!("{d:?}")).collect()),
        q(addresses.iter().map(|a| format!("\"{a}\"")).collect())
    )
}

/// An address nothing listens on (bound, then released).
pub fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

// ---------------------------------------------------------------------------------------------------------
// Backends

type Handler = dyn Fn(TcpStream) + Send + Sync;

/// A TCP backend on its own thread, one thread per connection.
pub struct Backend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Backend {
    /// A backend that runs `handler` for every connection.
    pub fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let h = handler.clone();
                let _ = std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        let _ = stream.set_read_timeout(Some(IO_TIMEOUT * 3));
                        h(stream)
                    });
            }
        });
        Backend { addr, connections }
    }

    /// A backend that echoes everything back and closes when the proxy closes.
    pub fn echo() -> Backend {
        Backend::start(|mut s| {
            echo_until_eof(&mut s);
            let _ = s.shutdown(Shutdown::Write);
        })
    }

    /// A backend that reads the first packets (PROXY header if any, handshake, and login start for logins),
    /// reports them on the returned channel, echoes those packets (not the PROXY header), then echoes
    /// everything else.
    pub fn recording(proxy_protocol: bool) -> (Backend, std::sync::mpsc::Receiver<Received>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Mutex::new(tx);
        let b = Backend::start(move |mut s| {
            let Ok(received) = Received::read(&mut s, proxy_protocol) else {
                return;
            };
            let mut echo = received.handshake_frame.clone();
            echo.extend_from_slice(&received.login_frame);
            let tx = tx.lock().map(|t| t.clone());
            if let Ok(tx) = tx {
                let _ = tx.send(received);
            }
            if s.write_all(&echo).is_ok() {
                echo_until_eof(&mut s);
            }
        });
        (b, rx)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// A backend that answers every login with `BE` and its own port (4 bytes), then echoes; see
    /// [`routed_to`].
    pub fn named() -> Backend {
        let port = Arc::new(std::sync::OnceLock::new());
        let p = port.clone();
        let b = Backend::start(move |mut s: TcpStream| {
            if read_frame_bytes(&mut s).is_err() || read_frame_bytes(&mut s).is_err() {
                return;
            }
            let me: u16 = *p.get().unwrap_or(&0);
            let mut hello = b"BE".to_vec();
            hello.extend_from_slice(&me.to_be_bytes());
            if s.write_all(&hello).is_ok() {
                echo_until_eof(&mut s);
            }
        });
        let _ = port.set(b.addr().port());
        b
    }
}

/// Writes back everything read from `s` until EOF or an error.
fn echo_until_eof(s: &mut TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Which [`Backend::named`] a login for `host` reaches now: `Some(port)` of the backend, `None` when the
/// proxy refuses it (a refused login gets a disconnect packet instead of `BE` + port).
pub fn routed_to(proxy: SocketAddr, host: &str) -> Option<u16> {
    let mut c = connect(proxy);
    c.write_all(&login_bytes(host, "Probe")).ok()?;
    let mut answer = [0u8; 4];
    c.read_exact(&mut answer).ok()?;
    (answer[..2] == *b"BE").then(|| u16::from_be_bytes([answer[2], answer[3]]))
}

/// Asserts that `check` becomes true within 10 s, showing the captured log otherwise.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    assert!(
        wait_until(Duration::from_secs(10), &mut check),
        "never happened: {what}\n--- log ---\n{}",
        captured_logs()
    );
}

/// What a recording backend read first.
#[derive(Debug, Clone)]
pub struct Received {
    /// The PROXY header's source address, if one was expected.
    pub proxied_client: Option<SocketAddr>,
    /// The raw PROXY header.
    pub proxy_header: Vec<u8>,
    /// The handshake's server address.
    pub server_address: String,
    /// Protocol version.
    pub protocol_version: i32,
    /// Next state.
    pub next_state: NextState,
    /// Player name, for logins.
    pub player: Option<String>,
    /// Raw bytes of the handshake frame.
    pub handshake_frame: Vec<u8>,
    /// Raw bytes of the login start frame (empty for status).
    pub login_frame: Vec<u8>,
}

impl Received {
    fn read(s: &mut TcpStream, proxy_protocol: bool) -> io::Result<Received> {
        let (proxied_client, proxy_header) = if proxy_protocol {
            read_proxy_header(s)?
        } else {
            (None, Vec::new())
        };
        let frame = read_frame_bytes(s)?;
        let Ok(Parsed::Complete(hs, _)) = nethergate_core::handshake::parse(&frame) else {
            return Err(io::Error::other("backend: bad handshake"));
        };
        let mut r = Received {
            proxied_client,
            proxy_header,
            server_address: hs.server_address.to_owned(),
            protocol_version: hs.protocol_version,
            next_state: hs.next_state,
            player: None,
            handshake_frame: frame.clone(),
            login_frame: Vec::new(),
        };
        if hs.next_state.is_login() {
            let login = read_frame_bytes(s)?;
            if let Ok(Parsed::Complete(ls, _)) = nethergate_core::login::parse(&login) {
                r.player = Some(ls.name.to_owned());
            }
            r.login_frame = login;
        }
        Ok(r)
    }
}

/// Reads a v1 or v2 PROXY header and returns the source address it carries.
pub fn read_proxy_header(s: &mut TcpStream) -> io::Result<(Option<SocketAddr>, Vec<u8>)> {
    let mut head = [0u8; 16];
    s.read_exact(&mut head[..5])?;
    if &head[..5] == b"PROXY" {
        let mut line = head[..5].to_vec();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") && line.len() < 108 {
            s.read_exact(&mut b)?;
            line.push(b[0]);
        }
        let header =
            ppp::v1::Header::try_from(std::str::from_utf8(&line).map_err(io::Error::other)?)
                .map_err(|e| io::Error::other(format!("{e:?}")))?;
        let src = match header.addresses {
            ppp::v1::Addresses::Tcp4(a) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            ppp::v1::Addresses::Tcp6(a) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            ppp::v1::Addresses::Unknown => None,
        };
        return Ok((src, line));
    }
    s.read_exact(&mut head[5..16])?;
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    let mut all = head.to_vec();
    all.resize(16 + len, 0);
    s.read_exact(&mut all[16..])?;
    let header = ppp::v2::Header::try_from(all.as_slice())
        .map_err(|e| io::Error::other(format!("{e:?}")))?;
    let src = match header.addresses {
        ppp::v2::Addresses::IPv4(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v2::Addresses::IPv6(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        _ => None,
    };
    Ok((src, all))
}

// ---------------------------------------------------------------------------------------------------------
// Clients

/// Connects to the proxy with read/write timeouts and TCP_NODELAY.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to proxy");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let _ = s.set_nodelay(true);
    s
}

/// Handshake (login) + login start bytes of a 1.20.4 client.
pub fn login_bytes(host: &str, player: &str) -> Vec<u8> {
    login_bytes_with(host, player, 765, NextState::Login)
}

/// Handshake + login start bytes for any protocol and next state.
pub fn login_bytes_with(host: &str, player: &str, protocol: i32, next: NextState) -> Vec<u8> {
    let mut out = Vec::new();
    Handshake {
        protocol_version: protocol,
        server_address: host,
        port: 25565,
        next_state: next,
    }
    .encode(&mut out);
    LoginStart {
        name: player,
        tail: &[0xAB; 16],
    }
    .encode(&mut out);
    out
}

/// Handshake (status) + status request bytes.
pub fn status_bytes(host: &str) -> Vec<u8> {
    let mut out = Vec::new();
    Handshake {
        protocol_version: 765,
        server_address: host,
        port: 25565,
        next_state: NextState::Status,
    }
    .encode(&mut out);
    codec::write_frame(&mut out, 0x00, &[]);
    out
}

/// Reads one whole frame (length prefix included) from a blocking stream.
pub fn read_frame_bytes(s: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut prefix = Vec::new();
    let mut b = [0u8; 1];
    let len = loop {
        s.read_exact(&mut b)?;
        prefix.push(b[0]);
        match codec::read_varint(&prefix) {
            Ok(Parsed::Complete(len, _)) => break len,
            Ok(Parsed::Incomplete) => {}
            Err(e) => return Err(io::Error::other(e)),
        }
    };
    let len = usize::try_from(len).map_err(io::Error::other)?;
    if len > 1 << 21 {
        return Err(io::Error::other("frame too large"));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    prefix.extend(body);
    Ok(prefix)
}

/// Reads one packet: (id, body).
pub fn read_packet(s: &mut impl Read) -> io::Result<(i32, Vec<u8>)> {
    let frame = read_frame_bytes(s)?;
    match codec::read_frame(&frame, usize::MAX) {
        Ok(Parsed::Complete(f, _)) => Ok((f.id, f.body.to_vec())),
        _ => Err(io::Error::other("bad frame")),
    }
}

/// Reads a packet holding one JSON string (login disconnect, status response) and parses the JSON.
pub fn read_json_packet(s: &mut impl Read) -> io::Result<(i32, serde_json::Value)> {
    let (id, body) = read_packet(s)?;
    let Ok(Parsed::Complete(text, _)) = codec::read_string(&body, usize::MAX) else {
        return Err(io::Error::other("not a string packet"));
    };
    Ok((id, serde_json::from_str(text).map_err(io::Error::other)?))
}

/// Logs in as `player` on `host` through `proxy` and checks that the one answer is a Login Disconnect
/// (packet 0) saying `text`, followed by the end of the connection; `what` names the case in a failure.
pub fn assert_login_refused(proxy: SocketAddr, host: &str, player: &str, text: &str, what: &str) {
    let refusal = (|| -> io::Result<(i32, String, bool)> {
        let mut c = connect(proxy);
        c.write_all(&login_bytes(host, player))?;
        let (id, json) = read_json_packet(&mut c)?;
        let said = json["text"].as_str().unwrap_or_default().to_owned();
        Ok((id, said, reads_eof(&mut c)))
    })();
    let (id, said, eof) = refusal.unwrap_or_else(|e| panic!("{what}: no disconnect: {e}"));
    assert_eq!((id, said.as_str()), (0, text), "{what}");
    assert!(eof, "{what}: the connection stayed open");
}

/// Reads until EOF (or the timeout); `true` when EOF came.
pub fn reads_eof(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A deterministic pseudo-random byte stream (xorshift), for lossless-transfer checks.
pub struct Noise(u64);

impl Noise {
    /// A stream seeded with `seed`.
    pub fn new(seed: u64) -> Noise {
        Noise(seed.max(1))
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Fills `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
}

/// Sends `total` noise bytes in random-sized chunks, then shuts down the write half.
pub fn send_noise(s: &mut TcpStream, seed: u64, total: usize) -> io::Result<()> {
    let mut data = Noise::new(seed);
    let mut sizes = Noise::new(seed ^ 0x5555);
    let mut sent = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while sent < total {
        let n = ((sizes.next_u64() % (64 * 1024) as u64) as usize + 1).min(total - sent);
        data.fill(&mut buf[..n]);
        s.write_all(&buf[..n])?;
        sent += n;
    }
    s.shutdown(Shutdown::Write)
}

/// Reads to EOF and checks the bytes are exactly `total` noise bytes of `seed`.
pub fn expect_noise(s: &mut TcpStream, seed: u64, total: usize) -> io::Result<()> {
    let mut expected = Noise::new(seed);
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        expected.fill(&mut want[..n]);
        if buf[..n] != want[..n] {
            return Err(io::Error::other(format!("byte mismatch after {got} bytes")));
        }
        got += n;
    }
    if got != total {
        return Err(io::Error::other(format!(
            "got {got} bytes, expected {total}"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Log capture

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Ok(mut l) = LOG.lock() {
            l.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Captures every log line of this test process (idempotent).
pub fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// Waits up to `timeout` for a captured log line containing every one of `needles`.
pub fn wait_for_log(needles: &[&str], timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(log) = LOG.lock() {
            let text = String::from_utf8_lossy(&log);
            if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return Some(line.to_owned());
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `cond` holds, up to `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Everything logged so far (printed by tests when they fail, to show what the proxy saw).
pub fn captured_logs() -> String {
    LOG.lock()
        .map(|l| String::from_utf8_lossy(&l).into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------------
// The built binaries

/// The workspace root.
pub fn workspace() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The directory cargo puts binaries of this profile in (…/target/debug), from the running test's path
/// (`…/target/debug/deps/<test>-<hash>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Builds `nethergate` and `nethergate-smol` with this profile (a no-op when up to date) and returns the
/// path of `name`.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: Once = Once::new();
    BUILT.call_once(|| {
        let mut cmd =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(workspace()).args([
            "build",
            "--bin",
            "nethergate",
            "--bin",
            "nethergate-smol",
        ]);
        if bin_dir().ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
    });
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} missing", path.display());
    path
}
