//! The listener: accept loop, connection limit, shutdown phases, and the handle that controls it.

use crate::connection;
use crate::loops::OwnDials;
use crate::runtime::{Listener, Runtime};
use crate::signal::{Flag, Tasks};
use arc_swap::ArcSwap;
use futures_lite::future;
use nethergate_core::{Config, MainConfig, Plugins, Registry, RouteTable};
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// State shared by the listener, its connections and its [`Handle`]s; independent of the runtime.
#[derive(Debug)]
pub struct Control {
    /// The route table new connections use; swapped whole on reload.
    pub routes: ArcSwap<RouteTable>,
    /// Live sessions and player counts.
    pub registry: Arc<Registry>,
    /// Set to stop accepting and let sessions finish.
    pub stopping: Flag,
    /// Set to end every session now (reason Shutdown).
    pub abort: Flag,
    tasks: Tasks,
}

impl AsRef<Tasks> for Arc<Control> {
    fn as_ref(&self) -> &Tasks {
        &self.tasks
    }
}

/// Controls a running proxy from any thread.
#[derive(Debug, Clone)]
pub struct Handle {
    control: Arc<Control>,
}

impl Handle {
    /// Stops accepting; live sessions may finish until the shutdown timeout, then are closed.
    pub fn shutdown(&self) {
        self.control.stopping.set();
    }

    /// Stops accepting and closes every live session now.
    pub fn abort(&self) {
        self.control.stopping.set();
        self.control.abort.set();
    }

    /// Live sessions and player counts.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.control.registry
    }

    /// Client connections being served (handshaking or forwarding).
    pub fn connections(&self) -> usize {
        self.control.tasks.live()
    }

    /// Replaces the route table for new connections; live sessions keep the one they started with.
    pub fn set_routes(&self, routes: RouteTable) {
        self.control.routes.store(Arc::new(routes));
        self.control.registry.forget_idle_servers();
    }

    /// The route table new connections use.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.control.routes.load_full()
    }
}

/// What connections of one listener share.
pub(crate) struct Shared<R: Runtime> {
    pub(crate) rt: R,
    pub(crate) control: Arc<Control>,
    pub(crate) plugins: Plugins,
    pub(crate) main: MainConfig,
    /// The listener's address when it names one interface: every client connection has it as its local
    /// address, so no `getsockname` is needed per connection. `None` for a wildcard bind.
    pub(crate) fixed_local: Option<SocketAddr>,
    /// Backend connections to the proxy's own port, to recognise one arriving as a client.
    pub(crate) own_dials: OwnDials,
    /// Refusals (`max_connections`) and accept errors come in floods: one line per second at most for
    /// the whole proxy, whichever thread's listener they hit.
    refusals: Flood,
    accept_errors: Flood,
    /// The OS error code of the latest failed accept (0: none or none known), for the held-back line.
    last_accept_error: std::sync::atomic::AtomicI32,
    /// Failed backend dials, a flood per server and address.
    pub(crate) dial_failures: DialFailures,
}

/// A bound proxy, ready to [`Proxy::run`].
pub struct Proxy<R: Runtime> {
    shared: Arc<Shared<R>>,
    /// One per session thread (Linux), or one for all: registered with a reactor by the task that
    /// accepts on it, on the thread it serves.
    listeners: Vec<std::net::TcpListener>,
    local_addr: SocketAddr,
}

/// Binds a listening socket the way a server should: address reuse, dual-stack on `[::]`, a deep backlog;
/// with `shared_port`, `SO_REUSEPORT`, so that several sockets (one per thread) share the address.
fn bind_std(addr: SocketAddr, shared_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    #[cfg(target_os = "linux")]
    if shared_port {
        socket.set_reuse_port(true)?;
    }
    let _ = shared_port;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux (one setsockopt per connection less).
    #[cfg(target_os = "linux")]
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds `addr` for `threads` session threads: on Linux one `SO_REUSEPORT` socket per thread (the kernel
/// spreads new connections over them), elsewhere one socket whose clients are dealt to the threads.
///
/// A port already in use must still be an error, also when its holder is another nethergate (which sets
/// `SO_REUSEPORT` too, and would otherwise silently share the players): a plain bind of the address is
/// tried first and closed again before the group is bound. Once the group holds the port, a plain bind
/// (the next instance's check) fails.
fn bind_listeners(addr: SocketAddr, threads: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if !cfg!(target_os = "linux") || threads <= 1 {
        return Ok(vec![bind_std(addr, false)?]);
    }
    if addr.port() != 0 {
        drop(bind_std(addr, false)?);
    }
    let first = bind_std(addr, true)?;
    let addr = first.local_addr()?; // the port the kernel chose for port 0
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(bind_std(addr, true)?);
    }
    Ok(listeners)
}

impl<R: Runtime> Proxy<R> {
    /// Binds `config.main.bind` and prepares to serve `config`'s servers with `plugins`.
    pub fn bind(rt: R, config: Config, plugins: Plugins) -> io::Result<Proxy<R>> {
        let routes = RouteTable::build(&config.servers)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        if !cfg!(target_os = "linux")
            && config
                .servers
                .iter()
                .any(|s| s.proxy_mode == nethergate_core::ProxyMode::ZeroCopy)
        {
            tracing::warn!(
                "proxy_mode = \"zero_copy\" needs Linux splice(2); those servers use passthrough"
            );
        }
        let listeners = bind_listeners(config.main.bind, rt.threads()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", config.main.bind),
            )
        })?;
        let local_addr = listeners[0].local_addr()?;
        let control = Arc::new(Control {
            routes: ArcSwap::from_pointee(routes),
            registry: Registry::new(),
            stopping: Flag::default(),
            abort: Flag::default(),
            tasks: Tasks::default(),
        });
        Ok(Proxy {
            shared: Arc::new(Shared {
                rt,
                control,
                plugins,
                main: config.main,
                fixed_local: (!local_addr.ip().is_unspecified()).then_some(local_addr),
                own_dials: OwnDials::new(local_addr),
                refusals: Flood::default(),
                accept_errors: Flood::default(),
                last_accept_error: std::sync::atomic::AtomicI32::new(0),
                dial_failures: DialFailures::default(),
            }),
            listeners,
            local_addr,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to control it.
    pub fn handle(&self) -> Handle {
        Handle {
            control: self.shared.control.clone(),
        }
    }

    /// Accepts and serves clients until [`Handle::shutdown`]; then stops accepting, lets sessions finish
    /// for up to `shutdown_timeout`, closes the rest with reason Shutdown, and returns.
    ///
    /// Each listener is accepted on by a task on the session thread it belongs to. A listener that
    /// cannot be registered with its thread's reactor stops the proxy, and `run` returns that error.
    pub async fn run(self) -> io::Result<()> {
        let Proxy {
            shared,
            listeners,
            local_addr,
        } = self;
        let control = &shared.control;
        let servers = control.routes.load().servers().len();
        tracing::info!(bind = %local_addr, servers, "listening");
        // Docker discovery brings its servers a moment later (or warns that the daemon is unreachable).
        if servers == 0 && shared.main.docker.is_none() {
            tracing::warn!("no servers configured: every player is told \"Unknown server address\" until a server file appears");
        }
        let accepting = Arc::new(Accepting::default());
        let per_thread = listeners.len() > 1;
        for (i, std) in listeners.into_iter().enumerate() {
            let Some(guard) = Tasks::try_enter(accepting.clone(), 0) else {
                continue; // unlimited: cannot happen
            };
            let (shared, accepting) = (shared.clone(), accepting.clone());
            shared.rt.clone().spawn_on(i, async move {
                if let Err(e) = accept_loop(&shared, std, i, per_thread).await {
                    tracing::error!(bind = %local_addr, error = %e, "cannot accept connections");
                    if let Ok(mut failed) = accepting.failed.lock() {
                        failed.get_or_insert(e);
                    }
                    shared.control.stopping.set();
                }
                drop(guard);
            });
        }
        shared
            .rt
            .clone()
            .spawn_on(0, report_dial_failures_when_due(shared.clone()));
        accepting.tasks.idle().await;
        let live = control.tasks.live();
        tracing::info!(
            connections = live,
            timeout_s = shared.main.shutdown_timeout.as_secs_f64(),
            "shutting down: no longer accepting, waiting for live sessions"
        );
        let deadline = Instant::now() + shared.main.shutdown_timeout;
        future::or(control.tasks.idle(), shared.rt.sleep_until(deadline)).await;
        if control.tasks.live() > 0 {
            tracing::info!(
                connections = control.tasks.live(),
                "shutdown timeout reached, closing sessions"
            );
        }
        control.abort.set();
        control.tasks.idle().await;
        // Dials that failed after the abort (sessions cut in their handshakes).
        report_dial_failures(&shared, true);
        tracing::info!("shut down");
        match accepting.failed.lock().ok().and_then(|mut f| f.take()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The accept loops of one proxy: how many still run, and the first error that stopped one.
#[derive(Debug, Default)]
struct Accepting {
    tasks: Tasks,
    failed: std::sync::Mutex<Option<io::Error>>,
}

impl AsRef<Tasks> for Arc<Accepting> {
    fn as_ref(&self) -> &Tasks {
        &self.tasks
    }
}

/// Accepts on `std` (listener number `index`) until the proxy stops accepting. With a listener per
/// thread (`per_thread`), starts on thread `index` and spawns its clients' sessions on thread `index` (on
/// smol, on whichever thread the loop runs at that moment: see [`Runtime::spawn_on`]); otherwise deals
/// them to the threads in turn.
async fn accept_loop<R: Runtime>(
    shared: &Arc<Shared<R>>,
    std: std::net::TcpListener,
    index: usize,
    per_thread: bool,
) -> io::Result<()> {
    let listener = shared.rt.listener(std)?;
    let control = &shared.control;
    let mut stopping = control.stopping.watch();
    let mut next = index;
    loop {
        // The watch below polls the accept first, and a listener that always has a connection or an error
        // ready (a flood; out of file descriptors, the connection staying in the backlog) never lets it
        // look at the flag: so look here, once per accept.
        if control.stopping.is_set() {
            report_held_floods(shared, true);
            return Ok(());
        }
        // While a flood's count is held back, also wake when it is due, so it is not left unreported.
        let due = match (shared.refusals.due(), shared.accept_errors.due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let accepted = async {
            match due {
                None => Some(listener.accept().await),
                Some(at) => {
                    future::or(async { Some(listener.accept().await) }, async {
                        shared.rt.sleep_until(at).await;
                        None
                    })
                    .await
                }
            }
        };
        match stopping.unless_set(accepted).await {
            None => {
                report_held_floods(shared, true);
                return Ok(());
            }
            Some(None) => report_held_floods(shared, false),
            Some(Some(Ok((accepted, peer)))) => {
                // An IPv4 client of a dual-stack (`[::]`) listener is `::ffff:a.b.c.d`: logged, filtered
                // and passed on in PROXY headers as the IPv4 address it is.
                let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                let Some(guard) = Tasks::try_enter(control.clone(), shared.main.max_connections)
                else {
                    if let Some(count) = shared.refusals.hit(Instant::now()) {
                        tracing::warn!(client = %peer, limit = shared.main.max_connections, refused = count,
                            "connection refused: max_connections reached");
                    }
                    continue;
                };
                let thread = if per_thread {
                    index
                } else {
                    next = next.wrapping_add(1);
                    next
                };
                let task_shared = shared.clone();
                shared.rt.spawn_on(thread, async move {
                    let _guard = guard;
                    match <R::Listener as Listener>::register(accepted) {
                        Ok(stream) => connection::serve(&task_shared, stream, peer).await,
                        Err(e) => tracing::warn!(client = %peer, error = %e,
                            "cannot register the connection with the reactor"),
                    }
                });
            }
            Some(Some(Err(e))) => {
                shared.last_accept_error.store(
                    e.raw_os_error().unwrap_or(0),
                    std::sync::atomic::Ordering::Relaxed,
                );
                if let Some(count) = shared.accept_errors.hit(Instant::now()) {
                    tracing::warn!(error = %e, failures = count, "accept failed");
                }
                // Out of file descriptors and similar: back off instead of spinning.
                shared
                    .rt
                    .sleep_until(Instant::now() + Duration::from_millis(50))
                    .await;
            }
        }
    }
}

/// Logs the occurrences of a flood that its last second held back, once due (or all of them, at the end).
fn report_held_floods<R: Runtime>(shared: &Shared<R>, all: bool) {
    let now = Instant::now();
    if let Some(count) = shared.refusals.flush(now, all) {
        tracing::warn!(
            limit = shared.main.max_connections,
            refused = count,
            "connection refused: max_connections reached"
        );
    }
    if let Some(count) = shared.accept_errors.flush(now, all) {
        // The latest error stands for the ones held back (out of descriptors, as a rule, all alike).
        match shared
            .last_accept_error
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => tracing::warn!(failures = count, "accept failed"),
            code => tracing::warn!(error = %io::Error::from_raw_os_error(code), failures = count,
                "accept failed"),
        }
    }
}

/// Logs the failed dials held back that are due (all of them with `all`).
fn report_dial_failures<R: Runtime>(shared: &Shared<R>, all: bool) {
    shared
        .dial_failures
        .flush(Instant::now(), all, |(server, backend), error, count| {
            tracing::warn!(server = &**server, backend = %backend, error, failures = count,
                "backend unreachable");
        });
}

/// Reports held-back dial failures once due, until the proxy aborts its sessions (what fails after that
/// is reported by [`Proxy::run`] at its end). One task per proxy, off the accept path: it sleeps until a
/// session starts holding a count back.
async fn report_dial_failures_when_due<R: Runtime>(shared: Arc<Shared<R>>) {
    let mut aborted = shared.control.abort.watch();
    loop {
        let due = async {
            // Listening first: a count held back meanwhile is seen by `due` or wakes the listener.
            let held = shared.dial_failures.listen();
            match shared.dial_failures.due() {
                // Or earlier, for an address whose count is due sooner.
                Some(at) => future::or(shared.rt.sleep_until(at), held).await,
                None => held.await,
            }
        };
        if aborted.unless_set(due).await.is_none() {
            return;
        }
        report_dial_failures(&shared, false);
    }
}

/// Which backend a dial failure is about: its server and address.
type DialKey = (Arc<str>, Arc<nethergate_core::config::BackendAddress>);

/// Failed backend dials, a [`Flood`] per server and address: a backend that is down (and a client that
/// knows its server's host name and connects in a loop, even just pinging) is said at most once a second
/// per address, with the count of failures since the line before, instead of a line per dial.
#[derive(Debug, Default)]
pub(crate) struct DialFailures {
    dials: std::sync::Mutex<std::collections::HashMap<DialKey, Dials>>,
    /// Notified when an address starts holding back a count, for the reporting task to report it when due.
    held: event_listener::Event,
}

#[derive(Debug, Default)]
struct Dials {
    flood: Flood,
    /// The latest failure's error, for the held-back line.
    error: String,
}

impl Dials {
    /// Nothing held back, and no line in the last second: forgetting it changes nothing.
    fn is_quiet(&self, now: Instant) -> bool {
        self.flood.due().is_none()
            && self
                .flood
                .last()
                .is_none_or(|t| now.saturating_duration_since(t) >= FLOOD_INTERVAL)
    }
}

impl DialFailures {
    /// Counts a failed dial; `Some(failures since the last line)` when a line is due now.
    pub(crate) fn hit(
        &self,
        server: &Arc<str>,
        backend: &Arc<nethergate_core::config::BackendAddress>,
        error: &io::Error,
        now: Instant,
    ) -> Option<u64> {
        let mut dials = self.lock();
        let key = (Arc::clone(server), Arc::clone(backend));
        let entry = dials.entry(key).or_default();
        let was_held = entry.flood.due().is_some();
        let due = entry.flood.hit(now);
        if due.is_some() {
            // At most once a second per address: forget the addresses quiet for a second (a reload or a
            // re-created container may have removed them; one failing again is said at once either way).
            dials.retain(|_, d| !d.is_quiet(now));
        } else {
            entry.error = error.to_string();
            if !was_held {
                drop(dials);
                self.held.notify(1);
            }
        }
        due
    }

    /// Resolves when an address starts holding back a count after this call.
    fn listen(&self) -> event_listener::EventListener {
        self.held.listen()
    }

    /// When the earliest held-back count is due, if any is held.
    fn due(&self) -> Option<Instant> {
        self.lock().values().filter_map(|d| d.flood.due()).min()
    }

    /// Reports each held-back count that is due at `now` (all of them with `all`) to `report`, and forgets
    /// the addresses quiet for a second (a reload may have removed them; one failing again is said at
    /// once either way).
    fn flush(&self, now: Instant, all: bool, mut report: impl FnMut(&DialKey, &str, u64)) {
        self.lock().retain(|key, d| {
            if let Some(count) = d.flood.flush(now, all) {
                report(key, &d.error, count);
            }
            !d.is_quiet(now)
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<DialKey, Dials>> {
        self.dials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Lets a repeated event through to the log at most once a second, counting what it held back; a held
/// back count is reported once its second is over, not only with the next occurrence (which may be hours
/// later, or never).
#[derive(Debug, Default)]
struct Flood {
    /// Occurrences not logged yet; read without the lock on every accept.
    held: std::sync::atomic::AtomicU64,
    /// When the last line was logged.
    last: std::sync::Mutex<Option<Instant>>,
}

/// At most one line per this long.
const FLOOD_INTERVAL: Duration = Duration::from_secs(1);

impl Flood {
    /// Counts an occurrence; `Some(occurrences since the last line)` when a line is due now.
    fn hit(&self, now: Instant) -> Option<u64> {
        self.held.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.flush(now, false)
    }

    /// When the held-back occurrences are due to be logged, if there are any.
    fn due(&self) -> Option<Instant> {
        if self.held.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return None;
        }
        Some(self.last().map_or(Instant::now(), |t| t + FLOOD_INTERVAL))
    }

    /// The held-back occurrences, if due at `now` (or at once with `all`).
    fn flush(&self, now: Instant, all: bool) -> Option<u64> {
        let mut last = self.last();
        if !all && last.is_some_and(|t| now.saturating_duration_since(t) < FLOOD_INTERVAL) {
            return None;
        }
        let count = self.held.swap(0, std::sync::atomic::Ordering::AcqRel);
        if count == 0 {
            return None;
        }
        *last = Some(now);
        Some(count)
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A proxy running on its own thread (for tests and embedding); aborted and joined when dropped.
pub struct Running {
    addr: SocketAddr,
    handle: Handle,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Running {
    /// Runs `body` (which must drive the proxy to completion) on a new thread.
    pub fn spawn(
        addr: SocketAddr,
        handle: Handle,
        body: impl FnOnce() -> io::Result<()> + Send + 'static,
    ) -> io::Result<Running> {
        let thread = std::thread::Builder::new()
            .name("nethergate".into())
            .spawn(body)?;
        Ok(Running {
            addr,
            handle,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its control handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Graceful shutdown, waiting for the proxy to finish.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.handle.shutdown();
        self.join()
    }

    fn join(&mut self) -> io::Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| io::Error::other("proxy thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.abort();
        let _ = self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn accepted_sockets_have_nodelay_from_the_listener() {
        let listener = bind_std(SocketAddr::from(([127, 0, 0, 1], 0)), false).unwrap();
        listener.set_nonblocking(false).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    /// One line per second for a flood, and what a second held back is reported once it is over, not
    /// with the next occurrence.
    #[test]
    fn a_flood_is_logged_once_a_second_and_its_tail_when_due() {
        let flood = Flood::default();
        let t0 = Instant::now();
        assert_eq!(flood.due(), None);
        assert_eq!(
            flood.hit(t0),
            Some(1),
            "the first occurrence is logged at once"
        );
        assert_eq!(flood.due(), None, "nothing held back");
        for i in 1..=5 {
            assert_eq!(flood.hit(t0 + Duration::from_millis(100 * i)), None);
        }
        assert_eq!(flood.due(), Some(t0 + FLOOD_INTERVAL));
        assert_eq!(
            flood.flush(t0 + Duration::from_millis(900), false),
            None,
            "not due yet"
        );
        assert_eq!(flood.flush(t0 + FLOOD_INTERVAL, false), Some(5));
        assert_eq!(flood.due(), None);
        // The next occurrence within the interval of that line is held again, and `all` flushes it.
        assert_eq!(flood.hit(t0 + Duration::from_millis(1200)), None);
        assert_eq!(flood.flush(t0 + Duration::from_millis(1300), true), Some(1));
        assert_eq!(flood.flush(t0 + Duration::from_secs(5), true), None);
    }

    fn local() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// One socket per thread on one port, and the kernel spreads new connections over them.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_listener_per_thread_shares_one_port_and_each_gets_connections() {
        let listeners = bind_listeners(local(), 2).unwrap();
        assert_eq!(listeners.len(), 2);
        let addr = listeners[0].local_addr().unwrap();
        assert_eq!(listeners[1].local_addr().unwrap(), addr);
        let clients: Vec<_> = (0..64)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let accepted: Vec<usize> = listeners
            .iter()
            .map(|l| std::iter::from_fn(|| l.accept().ok()).count())
            .collect();
        assert_eq!(
            accepted.iter().sum::<usize>(),
            clients.len(),
            "{accepted:?}"
        );
        assert!(
            accepted.iter().all(|&n| n > 0),
            "one listener got nothing: {accepted:?}"
        );
    }

    /// `SO_REUSEPORT` must not let a second proxy (which sets it too) share the port of a running one.
    #[test]
    fn a_port_in_use_is_an_error_also_for_a_second_proxy() {
        let first = bind_listeners(local(), 2).unwrap();
        let addr = first[0].local_addr().unwrap();
        for threads in [1, 2] {
            let err = bind_listeners(addr, threads).map(|_| ()).unwrap_err();
            assert_eq!(
                err.kind(),
                io::ErrorKind::AddrInUse,
                "threads = {threads}: {err}"
            );
        }
        let plain = std::net::TcpListener::bind(local()).unwrap();
        let err = bind_listeners(plain.local_addr().unwrap(), 2)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    }

    /// Without a listener per thread there is one socket, whatever the thread count.
    #[test]
    fn one_thread_binds_one_plain_listener() {
        let listeners = bind_listeners(local(), 1).unwrap();
        assert_eq!(listeners.len(), 1);
        let addr = listeners[0].local_addr().unwrap();
        let err = bind_std(addr, true).map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    }
}
