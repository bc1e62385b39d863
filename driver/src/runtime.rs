//! The little a driver needs from an async runtime. Each runtime crate implements it in a short file (smol's
//! crate also has its own executor, `exec.rs`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

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
    /// Threads that run sessions, numbered `0..threads()`. On Linux the proxy binds a listener per thread
    /// (`SO_REUSEPORT`) and accepts on each from a task started on that thread: with a reactor per thread
    /// (tokio) a session is then accepted, registered and served by one thread and no thread wakes another
    /// for it. Elsewhere there is one listener, and its accept loop deals the clients to the threads in
    /// turn.
    fn threads(&self) -> usize {
        1
    }
    /// Runs a task in the background, started on session thread `thread` (taken modulo
    /// [`Runtime::threads`]). A runtime with a reactor per thread keeps the task there (tokio), and
    /// spawning on the calling thread's own number wakes no other thread. One with a reactor for the
    /// process (smol) runs a task wherever its wake-up is taken: it starts a task spawned from one of its
    /// threads on that thread, and uses `thread` only for tasks spawned from outside.
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

/// For the runtime crates' tests of [`Runtime::connect`] (run it inside the runtime): on loopback the
/// kernel completes a connect within the `connect` call, so the connection is ready at the first poll,
/// without a trip through the reactor, and takes a write at once; a closed port is still refused.
#[doc(hidden)]
pub async fn check_loopback_connect_is_ready_at_once<R: Runtime>(rt: &R) -> io::Result<()> {
    use futures_lite::future::poll_once;
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let Some(connected) = poll_once(rt.connect(addr)).await else {
        panic!("the connect waited for the reactor");
    };
    let stream = connected?;
    assert_eq!(
        socket2::SockRef::from(&stream).peer_addr()?.as_socket(),
        Some(addr)
    );
    let (mut accepted, _) = listener.accept()?;
    let wrote = crate::copy::write_all_fresh(rt, &stream, b"ping", Duration::from_secs(5));
    assert!(
        poll_once(wrote).await.is_some_and(|w| w.is_ok()),
        "the write waited"
    );
    let mut got = [0u8; 4];
    accepted.read_exact(&mut got)?;
    assert_eq!(&got, b"ping");
    drop(listener);
    match rt.connect(addr).await {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("a closed port accepted"),
    }
    Ok(())
}

/// For the runtime crates' tests of [`Runtime::connect`] (run it inside the runtime): a connect the kernel
/// has not completed when `connect()` returns waits for the reactor, then succeeds with the right peer.
/// The listener's accept queue is full (backlog 0, one connection waiting), so the kernel drops the SYN;
/// once the waiting connection is taken, the retransmission (about 1 s later) gets through.
#[doc(hidden)]
pub async fn check_connect_in_progress_completes_through_the_reactor<R: Runtime>(
    rt: &R,
) -> io::Result<()> {
    use futures_lite::future::{or, poll_once};
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(0)?;
    let listener: std::net::TcpListener = socket.into();
    let addr = listener.local_addr()?;
    let _waiting = std::net::TcpStream::connect(addr)?;
    let mut connect = std::pin::pin!(rt.connect(addr));
    assert!(
        poll_once(connect.as_mut()).await.is_none(),
        "connected although the queue was full"
    );
    let _taken = listener.accept()?; // room for the retransmitted SYN
    let timeout = async {
        rt.sleep_until(Instant::now() + Duration::from_secs(10))
            .await;
        Err(io::Error::other("the connect never completed"))
    };
    let stream = or(connect, timeout).await?;
    assert_eq!(
        socket2::SockRef::from(&stream).peer_addr()?.as_socket(),
        Some(addr)
    );
    Ok(())
}

/// For the runtime crates' tests of [`Runtime::spawn_on`] with two threads: `seen` holds, per task `i`,
/// the thread it started on and the one it finished on. Panics unless the even and the odd tasks each
/// started on one thread, a different one, and (when `kept`) every task finished where it started.
#[doc(hidden)]
pub fn assert_tasks_started_on_two_threads(
    seen: &[(usize, std::thread::ThreadId, std::thread::ThreadId)],
    kept: bool,
) {
    assert!(
        !kept || seen.iter().all(|(_, before, after)| before == after),
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
