//! The listener: accept loop, connection limit, shutdown phases, and the handle that controls it.

use crate::connection;
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
}

/// A bound proxy, ready to [`Proxy::run`].
pub struct Proxy<R: Runtime> {
    shared: Arc<Shared<R>>,
    listener: R::Listener,
    local_addr: SocketAddr,
}

/// Binds a listening socket the way a server should: address reuse, dual-stack on `[::]`, a deep backlog.
fn bind_std(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
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

impl<R: Runtime> Proxy<R> {
    /// Binds `config.main.bind` and prepares to serve `config`'s servers with `plugins`.
    ///
    /// Call from within the runtime when it needs a context to register sockets (tokio does).
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
        let std = bind_std(config.main.bind)?;
        let local_addr = std.local_addr()?;
        let listener = rt.listener(std)?;
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
            }),
            listener,
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
    pub async fn run(self) -> io::Result<()> {
        let Proxy {
            shared, listener, ..
        } = self;
        let control = &shared.control;
        tracing::info!(bind = %self.local_addr, servers = control.routes.load().servers().len(), "listening");
        // Refusals and accept errors come in floods: one line per second at most, with the count.
        let mut refusals = LogLimit::default();
        let mut accept_errors = LogLimit::default();
        let mut stopping = control.stopping.watch();
        loop {
            match stopping.unless_set(listener.accept()).await {
                None => break,
                Some(Ok((accepted, peer))) => {
                    let Some(guard) =
                        Tasks::try_enter(control.clone(), shared.main.max_connections)
                    else {
                        if let Some(count) = refusals.hit() {
                            tracing::warn!(client = %peer, limit = shared.main.max_connections, refused = count,
                                "connection refused: max_connections reached");
                        }
                        continue;
                    };
                    let task_shared = shared.clone();
                    shared.rt.spawn(async move {
                        let _guard = guard;
                        match <R::Listener as Listener>::register(accepted) {
                            Ok(stream) => connection::serve(&task_shared, stream, peer).await,
                            Err(e) => tracing::warn!(client = %peer, error = %e,
                                "cannot register the connection with the reactor"),
                        }
                    });
                }
                Some(Err(e)) => {
                    if let Some(count) = accept_errors.hit() {
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
        drop(listener);
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
        tracing::info!("shut down");
        Ok(())
    }
}

/// Lets a repeated event through to the log at most once a second, counting what it held back.
#[derive(Debug, Default)]
struct LogLimit {
    last: Option<Instant>,
    count: u64,
}

impl LogLimit {
    /// Counts an occurrence; `Some(occurrences since the last line)` when a line is due.
    fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
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
        let listener = bind_std(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        listener.set_nonblocking(false).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
