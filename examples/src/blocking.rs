//! nethergate on plain blocking `std::net` threads: a complete adapter in one file, no async runtime.
//!
//! The core never touches a socket, a clock or a thread, so putting it under any runtime takes only what
//! a runtime is for:
//!
//! 1. **Accept** connections and give each a [`Session`] built from a shared [`Context`].
//! 2. **Drive** the session: feed client bytes to [`Session::handle_client_data`] while
//!    [`Session::wants_client_data`], call [`Session::handle_timeout`] once [`Session::poll_timeout`] has
//!    passed, and execute every [`Action`] from [`Session::poll_action`] in order.
//! 3. **Copy** on [`Action::Forward`]: both directions at once, under the rules of
//!    [`nethergate_core::forward`], then report the byte counts to `LiveSession::finish`.
//!
//! Routing, rewrites, PROXY headers, failover, player limits and disconnect messages are decided by the
//! core; nothing here knows Minecraft. In this adapter the "runtime" is a thread per connection (and one
//! more per forwarding session) and every timer is a socket timeout; an async adapter swaps those for
//! tasks and timers (see `nethergate-driver`), an event loop for readiness callbacks.
//!
//! ```no_run
//! use nethergate_examples::blocking::BlockingProxy;
//!
//! let config = nethergate_core::Config::load("nethergate.toml".as_ref())?;
//! let proxy = BlockingProxy::start(config, nethergate_core::Plugins::new())?;
//! println!("listening on {}", proxy.addr());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use nethergate_core::forward::{classify_error, Ending, Side, Stop, COPY_BUFFER_SIZE};
use nethergate_core::{
    Action, Config, ConnectRequest, Context, EndReason, Forward, Plugins, Registry, RouteTable,
    Session,
};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a refused client is drained after our last packet, so it reads that packet, not a reset.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Most bytes drained from a refused client.
const CLOSE_DRAIN_BYTES: usize = 64 * 1024;

/// A running proxy: one accept thread, one thread per connection.
#[derive(Debug)]
pub struct BlockingProxy {
    addr: SocketAddr,
    registry: Arc<Registry>,
    stopping: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

/// What every connection thread shares.
struct Shared {
    ctx: Context,
    plugins: Plugins,
    max_connections: usize,
    connections: AtomicUsize,
}

impl BlockingProxy {
    /// Binds `config.main.bind` and serves on background threads.
    pub fn start(config: Config, plugins: Plugins) -> io::Result<BlockingProxy> {
        let routes = RouteTable::build(&config.servers)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(config.main.bind)?;
        let addr = listener.local_addr()?;
        let registry = Registry::new();
        let shared = Arc::new(Shared {
            ctx: Context {
                routes: Arc::new(routes),
                registry: Arc::clone(&registry),
                handshake_timeout: config.main.handshake_timeout,
            },
            plugins,
            max_connections: config.main.max_connections,
            connections: AtomicUsize::new(0),
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let accept = thread::Builder::new()
            .name("nethergate-accept".into())
            .spawn(move || accept_loop(&listener, &shared, &stop))?;
        tracing::info!(bind = %addr, servers = config.servers.len(), "listening");
        Ok(BlockingProxy {
            addr,
            registry,
            stopping,
            accept,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The live sessions and player counts.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Stops accepting and returns once the accept thread has ended (live sessions may continue).
    pub fn shutdown(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // std's `accept` has no timeout: wake it with a connection of our own, which it drops.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        while !self.accept.is_finished() {
            if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.accept.join();
    }
}

/// A place under `max_connections`, given back when the connection's thread ends.
struct Slot(Arc<Shared>);

impl Slot {
    fn take(shared: &Arc<Shared>) -> Option<Slot> {
        let max = shared.max_connections;
        shared
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Slot(Arc::clone(shared)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, stopping: &AtomicBool) {
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        match accepted {
            Ok((client, peer)) => {
                let Some(slot) = Slot::take(shared) else {
                    tracing::debug!(client = %peer, "connection refused: max_connections reached");
                    continue;
                };
                // `thread::spawn` would panic when the OS refuses a thread; a flood must not kill us.
                let spawned = thread::Builder::new().spawn(move || serve(&slot.0, client, peer));
                if let Err(e) = spawned {
                    tracing::warn!(client = %peer, error = %e, "cannot start a connection thread");
                }
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
    tracing::info!(bind = ?listener.local_addr().ok(), "no longer accepting");
}

/// Serves one client: drives its session, then forwards or closes.
fn serve(shared: &Shared, client: TcpStream, peer: SocketAddr) {
    let _ = client.set_nodelay(true);
    let local = client
        .local_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut session = Session::new(shared.ctx.clone(), peer, local, Instant::now());
    let mut backend = None;
    let mut to_backend = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(action) = session.poll_action() {
            match action {
                Action::PreConnect => {
                    let decision = shared.plugins.decide(&session.pre_connect_event());
                    session.pre_connect_result(decision);
                }
                Action::Connect(req) => match dial(&req) {
                    Ok((stream, addr)) => {
                        backend = Some(stream);
                        session.backend_connected(addr, Instant::now());
                    }
                    Err(e) => {
                        tracing::warn!(server = %req.server, backend = %req.address, client = %peer,
                            error = %e, "backend unreachable");
                        session.backend_failed(Instant::now());
                    }
                },
                Action::SendToBackend(bytes) => to_backend.extend_from_slice(&bytes),
                Action::SendToClient(bytes) => {
                    // A client that does not read our answer is closed by the next action anyway.
                    let _ = client.set_write_timeout(Some(shared.ctx.handshake_timeout));
                    let _ = (&client).write_all(&bytes);
                }
                Action::Forward(fwd) => return forward(client, backend, &to_backend, fwd),
                Action::Close(_) => return linger(client),
            }
        }
        if !session.wants_client_data() {
            return;
        }
        read_client(&client, &mut session, &mut buf);
    }
}

/// Reads once from the client into the session, waiting no longer than the session's deadline.
fn read_client(client: &TcpStream, session: &mut Session, buf: &mut [u8]) {
    let wait = session
        .poll_timeout()
        .map(|d| d.saturating_duration_since(Instant::now()));
    // std refuses a zero timeout (it would mean "block forever" to the OS): the deadline is simply due.
    if wait.is_some_and(|w| w.is_zero()) {
        return session.handle_timeout(Instant::now());
    }
    if client.set_read_timeout(wait).is_err() {
        return session.handle_client_eof();
    }
    // Read no more than the session takes, so bytes sent early stay in the socket for the copy; at least
    // one, or a full buffer would read as EOF instead of overflowing.
    let budget = session.read_budget().clamp(1, buf.len());
    match (&*client).read(&mut buf[..budget]) {
        Ok(0) => session.handle_client_eof(),
        Ok(n) => session.handle_client_data(&buf[..n]),
        Err(e) if classify_error(&e) == Stop::Timeout => session.handle_timeout(Instant::now()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(_) => session.handle_client_eof(),
    }
}

/// Resolves one backend address (without a limit, see below), then dials it within its connect timeout.
fn dial(req: &ConnectRequest) -> io::Result<(TcpStream, SocketAddr)> {
    let deadline = Instant::now() + req.timeout;
    // Name resolution blocks without a limit: std has no way to bound getaddrinfo.
    let addrs = (req.address.host.as_str(), req.address.port).to_socket_addrs()?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host resolved to no address");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
        let mut attempt = TcpStream::connect_timeout(&addr, left);
        let own = |s: &TcpStream| {
            s.local_addr()
                .ok()
                .is_some_and(|a| s.peer_addr().ok() == Some(a))
        };
        if attempt.as_ref().is_ok_and(own) {
            // Its own address as the source: connected to itself (nothing listens there), or translated
            // elsewhere. Dialled again while this one holds it, it tells (see the driver's `dial`).
            let left = deadline.saturating_duration_since(Instant::now());
            attempt = match left.is_zero() {
                true => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
                false => TcpStream::connect_timeout(&addr, left),
            };
        }
        match attempt {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, addr));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Closes a refused client. Our last packet is written (writes are unbuffered, nothing to flush); shut
/// down our side and read what the client still sends for a moment, so the kernel does not answer with a
/// reset that would destroy that packet.
fn linger(client: TcpStream) {
    let _ = client.shutdown(Shutdown::Write);
    drain(&client, Instant::now() + CLOSE_LINGER, CLOSE_DRAIN_BYTES);
}

/// Writes the first packets to the backend, copies both ways until the session ends, and logs its end.
fn forward(client: TcpStream, backend: Option<TcpStream>, initial: &[u8], fwd: Forward) {
    let Some(backend) = backend else {
        // The core forwards only after `backend_connected`; not worth a panic all the same.
        fwd.live.finish(0, 0, EndReason::Error, Instant::now());
        return;
    };
    for socket in [&client, &backend] {
        // The read timeout is the side's idle limit; the write timeout bounds a write making no progress.
        // Both are non-zero (validated config), which std requires.
        let _ = socket.set_read_timeout(Some(fwd.timeouts.read));
        let _ = socket.set_write_timeout(Some(fwd.timeouts.write));
    }
    if let Err(e) = (&backend).write_all(initial) {
        let _ = (&client).write_all(&fwd.if_backend_silent);
        let mut ending = Ending::default();
        ending.record(Side::Backend, classify_error(&e));
        fwd.live.finish(0, 0, ending.reason(), Instant::now());
        return;
    }
    let copy = Copy {
        client: &client,
        backend: &backend,
        if_backend_silent: &fwd.if_backend_silent,
        client_got: AtomicU8::new(NOTHING),
        ending: Mutex::new(Ending::default()),
    };
    let (c2b, b2c) = thread::scope(|scope| {
        let up = thread::Builder::new().spawn_scoped(scope, || copy.pump(Side::Client));
        match up {
            Ok(up) => {
                let b2c = copy.pump(Side::Backend);
                (up.join().unwrap_or(0), b2c)
            }
            Err(_) => {
                lock(&copy.ending).record(Side::Client, Stop::Error);
                (0, 0)
            }
        }
    });
    let ending = *lock(&copy.ending);
    fwd.live
        .finish(fwd.c2b_initial + c2b, b2c, ending.reason(), Instant::now());
    // A side still sending when the other closed has unread bytes here: closing its socket now would
    // answer with a reset that destroys what is still queued for it. Its write half is already shut down
    // (the other direction's EOF was passed on); read and drop what it sends until it closes too, for
    // up to the idle limit.
    let deadline = Instant::now() + fwd.timeouts.read;
    for (side, socket) in [(Side::Client, &client), (Side::Backend, &backend)] {
        if ending.drain_before_close(side) {
            drain(socket, deadline, usize::MAX);
        }
    }
}

/// The two sockets of a forwarding session and what its two directions share.
struct Copy<'a> {
    client: &'a TcpStream,
    backend: &'a TcpStream,
    /// `Forward::if_backend_silent`: told to the client if the session ends before the backend sent a
    /// byte.
    if_backend_silent: &'a [u8],
    /// What the client is sent: [`NOTHING`] yet, [`BACKEND_BYTES`] or [`THE_KICK`], decided once, so both
    /// directions timing out together tell it once, and never after (or amid) the backend's bytes.
    client_got: AtomicU8,
    ending: Mutex<Ending>,
}

const NOTHING: u8 = 0;
const BACKEND_BYTES: u8 = 1;
const THE_KICK: u8 = 2;

impl Copy<'_> {
    /// Copies from `side` to the other until this direction stops, records how, and returns the bytes
    /// copied.
    fn pump(&self, side: Side) -> u64 {
        let (from, to) = match side {
            Side::Client => (self.client, self.backend),
            Side::Backend => (self.backend, self.client),
        };
        let mut buf = vec![0u8; COPY_BUFFER_SIZE];
        let mut copied = 0u64;
        let (on_write, stop) = loop {
            let n = match (&*from).read(&mut buf) {
                Ok(0) => break (false, Stop::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break (false, classify_error(&e)),
            };
            if side == Side::Backend && !self.decide(BACKEND_BYTES) {
                // The player was told the backend is silent: nothing of the backend's follows it.
                break (true, Stop::Eof);
            }
            // A failed write is the fault of the side written to.
            if let Err(e) = (&*to).write_all(&buf[..n]) {
                break (true, classify_error(&e));
            }
            copied += n as u64;
        };
        // The backend closed, or a limit ran out (either way), before the backend sent a byte: the
        // player reads the disconnect message instead of a bare end of stream. Written before the
        // shutdowns below take the client's write half.
        let backend_ended = side == Side::Backend && !on_write && stop == Stop::Eof;
        if (backend_ended || stop == Stop::Timeout) && self.decide(THE_KICK) {
            let _ = (&*self.client).write_all(self.if_backend_silent);
        }
        lock(&self.ending).record_direction(side, on_write, stop);
        if Ending::ends_session(stop) {
            // Wake the other direction, which may be blocked in a read or a write.
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        } else {
            // Half-close: pass the EOF on and let the other direction drain.
            let _ = to.shutdown(Shutdown::Write);
        }
        copied
    }

    /// Whether the client gets `what`: the first decision stands, and the kick is told once.
    fn decide(&self, what: u8) -> bool {
        match self
            .client_got
            .compare_exchange(NOTHING, what, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => true,
            Err(got) => got == what && what == BACKEND_BYTES,
        }
    }
}

/// Reads and drops what `socket` sends until it closes, fails, `deadline` passes or `cap` bytes came.
fn drain(socket: &TcpStream, deadline: Instant, cap: usize) {
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < cap {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*socket).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn lock(ending: &Mutex<Ending>) -> std::sync::MutexGuard<'_, Ending> {
    ending.lock().unwrap_or_else(PoisonError::into_inner)
}
