//! The little a driver needs from an async runtime. Each runtime crate implements it in one short file.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Instant;

/// Which readiness a raw operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Reading.
    Read,
    /// Writing.
    Write,
}

/// A connected, non-blocking TCP stream registered with the runtime's reactor.
///
/// Readiness-based on purpose: the copy loop waits for readiness without holding a buffer, then borrows one
/// from a per-thread pool only while bytes are in flight.
pub trait Stream: AsFd + Send + Sync + 'static {
    /// Resolves when the stream may be readable (a following `try_read` can still say `WouldBlock`).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
    /// Resolves when the stream may be writable.
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
    /// Reads without blocking; `WouldBlock` clears the readiness.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes without blocking; `WouldBlock` clears the readiness.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Runs a raw non-blocking operation on the socket (splice); `WouldBlock` clears `interest`'s readiness.
    fn try_io<T>(&self, interest: Interest, op: impl FnOnce() -> io::Result<T>) -> io::Result<T>;
}

/// A listening socket.
pub trait Listener: Send + Sync + 'static {
    /// The stream type accepted.
    type Stream: Stream;
    /// A client as accepted, before [`Listener::register`] makes it a [`Listener::Stream`].
    type Accepted: Send + 'static;
    /// Accepts the next client.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Accepted, SocketAddr)>> + Send + '_;
    /// Registers an accepted client with the reactor of the thread that runs it. Called first thing in the
    /// client's own task, so a runtime with a reactor per thread keeps all of a session's I/O on one thread.
    fn register(accepted: Self::Accepted) -> io::Result<Self::Stream>;
}

/// An async runtime: sockets, timers, tasks.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// Its TCP stream.
    type Stream: Stream;
    /// Its TCP listener.
    type Listener: Listener<Stream = Self::Stream>;
    /// Its timer future.
    type Sleep: Future<Output = ()> + Send;

    /// Registers a bound, non-blocking std listener with the reactor of the calling thread (the proxy calls
    /// it from the task that accepts on it).
    fn listener(&self, std: std::net::TcpListener) -> io::Result<Self::Listener>;
    /// Connects to `addr`.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Resolves a host name.
    fn resolve(
        &self,
        host: String,
        port: u16,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;
    /// A timer firing at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep;
    /// Threads that run sessions, numbered `0..threads()`. The proxy binds a listener per thread (with
    /// `SO_REUSEPORT` on Linux) and accepts on each from a task on that thread, so a session is accepted,
    /// registered and served by one thread and no thread wakes another for it.
    fn threads(&self) -> usize {
        1
    }
    /// Runs a task in the background on session thread `thread` (taken modulo [`Runtime::threads`]); the
    /// task stays on it. Spawning on the calling thread's own number wakes no other thread.
    fn spawn_on<F: Future<Output = ()> + Send + 'static>(&self, thread: usize, future: F);
    /// Lets other tasks run before this one goes on (a saturated session gives up its turn).
    ///
    /// The default wakes the task at once; a runtime that can defer the wake until it has polled its
    /// reactor (tokio) should, so that sessions whose sockets just became ready run first.
    fn yield_now(&self) -> impl Future<Output = ()> + Send {
        futures_lite::future::yield_now()
    }
}

/// A connection to `addr` as a runtime crate's [`Runtime::connect`] starts it: a non-blocking socket whose
/// `connect` has been issued, and whether it is established already.
///
/// On loopback and on a fast network the kernel completes the handshake within the `connect` call, which
/// still says `EINPROGRESS`; one `getpeername` then tells, so the caller need not wait for the reactor to
/// report the socket writable (a trip through it, often a sleep and a wake, per backend connection). When
/// this says `false`, wait for writability and check `SO_ERROR`, as a plain non-blocking connect does.
pub fn start_connect(addr: SocketAddr) -> io::Result<(std::net::TcpStream, bool)> {
    use socket2::{Domain, Protocol, Socket, Type};
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let socket = {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_nonblocking(true)?;
        s
    };
    let established = match socket.connect(&addr.into()) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => socket.peer_addr().is_ok(),
        Err(e) => return Err(e),
    };
    Ok((socket.into(), established))
}

/// For the runtime crates' tests of the slow path of [`start_connect`]: a loopback listener whose accept
/// queue is full (backlog 0, one connection waiting, returned with it), so the kernel drops the next
/// SYN and that connect completes only after a retransmission (about 1 s) once the waiting one is taken.
#[doc(hidden)]
pub fn listener_with_a_full_queue() -> io::Result<(std::net::TcpListener, std::net::TcpStream)> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(0)?;
    let listener: std::net::TcpListener = socket.into();
    let waiting = std::net::TcpStream::connect(listener.local_addr()?)?;
    Ok((listener, waiting))
}

/// For the runtime crates' tests of [`Runtime::spawn_on`] with two threads: `seen` holds, per task `i`,
/// the thread it started on and the one it finished on. Panics unless every task stayed on its thread and
/// the even and the odd tasks each ran on one thread, a different one.
#[doc(hidden)]
pub fn assert_tasks_kept_to_two_threads(
    seen: &[(usize, std::thread::ThreadId, std::thread::ThreadId)],
) {
    assert!(
        seen.iter().all(|(_, before, after)| before == after),
        "{seen:?}"
    );
    let thread_of = |n: usize| -> std::collections::HashSet<_> {
        seen.iter()
            .filter(|(i, ..)| i % 2 == n)
            .map(|(_, t, _)| *t)
            .collect()
    };
    let (even, odd) = (thread_of(0), thread_of(1));
    assert_eq!((even.len(), odd.len()), (1, 1), "{seen:?}");
    assert!(even.is_disjoint(&odd), "{seen:?}");
}
