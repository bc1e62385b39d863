//! One client connection: feed the core, do what it says, then copy.

use crate::copy::{self, write_all_fresh};
use crate::loops::OwnDial;
use crate::pool::Buffer;
use crate::proxy::Shared;
use crate::runtime::{Runtime, Stream};
use bytes::Bytes;
use futures_lite::future;
use nethergate_core::forward::{Ending, Side};
use nethergate_core::{Action, CloseReason, ConnectRequest, Context, EndReason, Forward, Session};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a closing connection is drained so the client reads our last packet instead of a reset.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Most bytes drained from a closing connection.
const CLOSE_DRAIN_BYTES: usize = 64 * 1024;

/// Most bytes drained from a client kicked after forwarding began: what it sent while its backend took
/// nothing lies unread, as much as the socket buffers on the way held (megabytes), all of it read before
/// a close that would otherwise reset; a client that sends more for [`CLOSE_LINGER`] is reset anyway.
const KICKED_DRAIN_BYTES: usize = 16 << 20;

fn local_addr<S: Stream>(s: &S) -> Option<SocketAddr> {
    socket2::SockRef::from(s).local_addr().ok()?.as_socket()
}

fn peer_addr<S: Stream>(s: &S) -> Option<SocketAddr> {
    socket2::SockRef::from(s).peer_addr().ok()?.as_socket()
}

fn set_nodelay<S: Stream>(s: &S) {
    let _ = socket2::SockRef::from(s).set_nodelay(true);
}

/// Whether a socket dialled to `port` has its peer's address as its own (see `dial`). The peer's port is
/// the dialled one; its address is the dialled one too, or loopback for `0.0.0.0` and `::`.
fn from_its_own_address<S: Stream>(s: &S, port: u16) -> bool {
    local_addr(s).is_some_and(|own| own.port() == port && peer_addr(s) == Some(own))
}

/// Resolves and dials one configured backend address within its connect timeout.
async fn dial<R: Runtime>(rt: &R, req: &ConnectRequest) -> io::Result<(R::Stream, SocketAddr)> {
    let attempt = async {
        let host = req.address.host.as_str();
        // An IP address (the common case) needs neither the resolver nor a list.
        let (literal, resolved);
        let addrs: &[SocketAddr] = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                literal = SocketAddr::new(ip, req.address.port);
                std::slice::from_ref(&literal)
            }
            Err(_) => {
                resolved = rt.resolve(host.to_owned(), req.address.port).await?;
                &resolved
            }
        };
        let mut last = None;
        for &addr in addrs {
            let mut attempt = rt.connect(addr).await;
            if matches!(&attempt, Ok(s) if from_its_own_address(s, addr.port())) {
                // The kernel picked the dialled address and port as the source (it picks ports from the
                // range a local backend's port may be in: a Docker port published at random). Either
                // nothing listens there and TCP's simultaneous open connected the socket to itself,
                // echoing every byte, or address translation sends the port elsewhere (Docker without its
                // userland proxy) and the connection is real. A second dial, made while the first holds
                // that address and port, gets another source port and tells which: a refusal, or the
                // backend.
                attempt = rt.connect(addr).await;
            }
            match attempt {
                Ok(s) => {
                    set_nodelay(&s);
                    return Ok((s, addr));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "host resolved to no address")
        }))
    };
    let deadline = Instant::now() + req.timeout;
    future::or(attempt, async {
        rt.sleep_until(deadline).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
    })
    .await
}

/// Feeds the session what the client sent, waiting first for the socket to be readable (or EOF, or the
/// session's deadline). Abort is watched by `serve` around the whole handshake.
///
/// `first`: the client has just been accepted. A client sends its handshake as soon as it connects, so the
/// bytes are usually in the socket already: they are read at once, without a trip through the reactor (and
/// without arming the deadline's timer), and only a socket still empty waits.
async fn read_client<R: Runtime>(rt: &R, client: &R::Stream, session: &mut Session, first: bool) {
    if first && feed_client(session, |buf| read_now(client, buf)) {
        return;
    }
    let deadline = session.poll_timeout();
    let readable = future::or(async { Some(client.readable().await) }, async {
        match deadline {
            Some(d) => rt.sleep_until(d).await,
            None => future::pending::<()>().await,
        }
        None
    });
    match readable.await {
        None => session.handle_timeout(Instant::now()),
        Some(Err(_)) => session.handle_client_eof(),
        Some(Ok(())) => {
            feed_client(session, |buf| copy::read_chunk(client, buf));
        }
    }
}

/// Reads from the client and feeds the session until the socket is empty or the session wants no more;
/// `false` when the very first read found nothing (`WouldBlock`), so nothing happened.
///
/// `read` gives the bytes read and whether the read was short (the socket is now empty).
fn feed_client(
    session: &mut Session,
    mut read: impl FnMut(&mut [u8]) -> io::Result<(usize, bool)>,
) -> bool {
    let mut buf = Buffer::take();
    let mut fed = false;
    loop {
        // Read no more than the session takes: later bytes wait in the socket for the copy.
        // A short read emptied the socket, so neither this loop nor the copy that follows reads again only to
        // hear `WouldBlock`: `read_chunk` clears the runtime's cached readiness; `read_now` leaves it alone,
        // and the reactor reports no readiness for a socket that is empty by the time it looks.
        let limit = session.read_budget().clamp(1, buf.len());
        match read(&mut buf[..limit]) {
            Ok((0, _)) => {
                session.handle_client_eof();
                return true;
            }
            Ok((n, short)) => {
                session.handle_client_data(&buf[..n]);
                fed = true;
                if short || !session.wants_client_data() {
                    return true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return fed,
            Err(_) => {
                session.handle_client_eof();
                return true;
            }
        }
    }
}

/// Reads straight from the socket, whatever readiness the reactor has seen so far (see `read_client`).
fn read_now<S: Stream>(s: &S, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    let n = io::Read::read(&mut &*socket2::SockRef::from(s), buf)?;
    Ok((n, n < buf.len()))
}

/// Ends a connection we told nothing, without waiting: our FIN first, then what the client sent and we did
/// not read is taken out of the socket, so that closing it sends no reset after the FIN (a client reading
/// then sees a clean end of stream).
fn close_at_once<S: Stream>(client: &S) {
    copy::shutdown_write(client);
    let mut buf = [0u8; 512];
    let mut drained = 0;
    while drained < CLOSE_DRAIN_BYTES {
        match read_now(client, &mut buf) {
            Ok((0, _)) | Err(_) => return,
            Ok((n, _)) => drained += n,
        }
    }
}

/// Closes a client we refused: our last packet is already written; shut down our side and read what the
/// client still sends for a moment, so the kernel does not answer with a reset that would destroy it.
async fn linger<R: Runtime>(rt: &R, client: &R::Stream) {
    close_gently(rt, client, Instant::now() + CLOSE_LINGER, CLOSE_DRAIN_BYTES).await;
}

/// Shuts down our write half of `s` (its peer gets a FIN after every byte queued for it), then reads and
/// drops what the peer still sends until it closes, `deadline` passes or `cap` bytes came: closing a
/// socket whose input was not read makes the kernel answer with a reset, which destroys what is still
/// queued for the peer.
async fn close_gently<R: Runtime>(rt: &R, s: &R::Stream, deadline: Instant, cap: usize) {
    copy::shutdown_write(s);
    let drain = async {
        let mut drained = 0;
        while drained < cap {
            if s.readable().await.is_err() {
                return;
            }
            // A buffer only while bytes are there (most closes get none), as the copy does; a peer that
            // keeps sending gets its turn like a saturated direction: after a fair share, the other tasks
            // on this thread (and the deadline) come first.
            let mut buf = crate::pool::Buffer::take();
            let mut moved = 0;
            loop {
                let room = buf.len().min(cap - drained);
                match s.try_read(&mut buf[..room]) {
                    Ok(0) => return,
                    Ok(n) => {
                        drained += n;
                        moved += n;
                        if drained >= cap {
                            return;
                        }
                        if moved >= nethergate_core::forward::FAIR_SHARE_BYTES {
                            drop(buf);
                            rt.yield_now().await;
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return,
                }
            }
        }
    };
    future::or(drain, rt.sleep_until(deadline)).await;
}

/// Serves one accepted client until its session is forwarded and finished, or closed.
///
/// The handshake phase runs in its own boxed future: its state (the session, dial and resolver futures,
/// timers) is freed when forwarding starts, so a long-lived session's task holds only the copy's state.
pub(crate) async fn serve<R: Runtime>(shared: &Shared<R>, client: R::Stream, peer: SocketAddr) {
    // Abort (second signal, shutdown deadline) also cuts a handshake waiting on a slow dial. One watch for
    // the handshake and the copy: the task registers with the shared flag once.
    let mut abort = shared.control.abort.watch();
    let prepared = abort
        .unless_set(Box::pin(handshake(shared, &client, peer)))
        .await;
    let Some(Some((backend, fwd, _own_dial))) = prepared else {
        return;
    };
    let copied = copy::bidirectional(
        &shared.rt,
        &client,
        &backend,
        fwd.mode,
        fwd.timeouts,
        &fwd.if_backend_silent,
        &mut abort,
    )
    .await;
    fwd.live.finish(
        fwd.c2b_initial + copied.c2b,
        copied.b2c,
        copied.reason,
        Instant::now(),
    );
    if copied.kicked {
        // Told `disconnect_message` (a backend silent until the idle limit): closed as a refusal is.
        let deadline = Instant::now() + CLOSE_LINGER;
        let gently = close_gently(&shared.rt, &client, deadline, KICKED_DRAIN_BYTES);
        let _ = abort.unless_set(Box::pin(gently)).await;
    } else if copied.client_unread || copied.backend_unread {
        // A side that may still be sending (its bytes had nowhere to go once the other side closed) gets
        // everything queued for it and a FIN, not a reset that would destroy the last bytes: it has up to
        // the idle limit to read them and close. Boxed: a rare path, kept out of every session's task.
        let rt = &shared.rt;
        let deadline = Instant::now() + fwd.timeouts.read;
        let gently = future::zip(
            async {
                if copied.client_unread {
                    close_gently(rt, &client, deadline, usize::MAX).await;
                }
            },
            async {
                if copied.backend_unread {
                    close_gently(rt, &backend, deadline, usize::MAX).await;
                }
            },
        );
        let _ = abort.unless_set(Box::pin(gently)).await;
    }
}

/// A session in its handshake phase. Dropped before it forwarded or closed, it was cut by an abort (see
/// `serve`): it logs its close with reason `Shutdown`, as every connection that ends gets a line.
struct Handshaking(Session);

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A forwarded session's backend, what the copy needs, and its mark while its backend is on the proxy's
/// port (see [`crate::loops`]).
type Forwarded<'s, R> = (<R as Runtime>::Stream, Forward, Option<OwnDial<'s>>);

/// Drives the session until it forwards (returning the backend, with the first bytes already written to it)
/// or closes (returning `None`).
async fn handshake<'s, R: Runtime>(
    shared: &'s Shared<R>,
    client: &R::Stream,
    peer: SocketAddr,
) -> Option<Forwarded<'s, R>> {
    let rt = &shared.rt;
    #[cfg(not(target_os = "linux"))] // on Linux the listener passed it on (see bind_std)
    set_nodelay(client);
    let local = shared
        .fixed_local
        .or_else(|| local_addr(client))
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let ctx = Context {
        routes: shared.control.routes.load_full(),
        registry: shared.control.registry.clone(),
        handshake_timeout: shared.main.handshake_timeout,
    };
    let handshake_timeout = shared.main.handshake_timeout;
    let mut session = Handshaking(Session::new(ctx, peer, local, Instant::now()));
    let session = &mut session.0;
    let mut backend: Option<R::Stream> = None;
    let mut own_dial = None;
    // What goes to the backend before the copy starts (the core sends it in one piece).
    let mut opening = Bytes::new();
    let mut first = true;
    // Whether we wrote the client anything (a kick, a status answer): only then does a close linger.
    let mut answered = false;
    loop {
        while let Some(action) = session.poll_action() {
            match action {
                Action::PreConnect => match shared.own_dials.dialled_for(peer, local) {
                    // One of our own backend connections (its mark is in before it sends a byte): named
                    // by the server it was dialled for, whose address leads here (this session's own
                    // route may differ: a rewritten host).
                    Some(looping) => {
                        tracing::warn!(
                            server = &*looping,
                            host = session.pre_connect_event().host,
                            "{}",
                            nethergate_core::session::LOOP_WARNING
                        );
                        session.refuse_loop();
                    }
                    None => {
                        let decision = shared.plugins.decide(&session.pre_connect_event());
                        session.pre_connect_result(decision);
                    }
                },
                Action::Connect(req) => match dial(rt, &req).await {
                    Ok((stream, addr)) => {
                        own_dial = shared.own_dials.mark(addr, &req.server, || {
                            Some((local_addr(&stream)?, peer_addr(&stream)?))
                        });
                        backend = Some(stream);
                        session.backend_connected(addr, Instant::now());
                    }
                    Err(e) => {
                        let now = Instant::now();
                        let failures = shared.dial_failures.hit(&req.server, &req.address, &e, now);
                        if let Some(failures) = failures {
                            tracing::warn!(server = &*req.server, backend = %req.address,
                                client = %peer, error = %e, failures, "backend unreachable");
                        }
                        session.backend_failed(now);
                    }
                },
                Action::SendToBackend(bytes) if opening.is_empty() => opening = bytes,
                Action::SendToBackend(bytes) => {
                    opening = [&opening[..], &bytes[..]].concat().into()
                }
                Action::SendToClient(bytes) => {
                    // A client that does not read our answer is closed by the next action anyway.
                    answered = true;
                    let _ = write_all_fresh(rt, client, &bytes, handshake_timeout).await;
                }
                Action::Forward(fwd) => {
                    // The stream stays in `backend` (declared before the mark) while the opening is
                    // written: an abort at that write drops the mark before the socket, as everywhere.
                    let Some(stream) = backend.as_ref() else {
                        fwd.live.finish(0, 0, EndReason::Error, Instant::now());
                        return None;
                    };
                    if let Err(stop) =
                        write_all_fresh(rt, stream, &opening, fwd.timeouts.write).await
                    {
                        // The opening could not be written (the backend closed, reset or stopped
                        // reading): it has sent nothing. The session ends here (its line, its slot);
                        // then tell the player and close as a refusal does (drain what the client
                        // sent, so no reset destroys the message), which an abort may cut.
                        // Unmarked before the socket closes, as every mark is (its ends are free then).
                        drop(own_dial);
                        drop(backend);
                        let mut ending = Ending::default();
                        ending.record(Side::Backend, stop);
                        fwd.live.finish(0, 0, ending.reason(), Instant::now());
                        let silent = &fwd.if_backend_silent;
                        let _ = write_all_fresh(rt, client, silent, fwd.timeouts.write).await;
                        linger(rt, client).await;
                        return None;
                    }
                    let backend = backend.take()?;
                    return Some((backend, fwd, own_dial));
                }
                Action::Close(reason) => {
                    let looping = match reason {
                        CloseReason::ProtocolError(_) => shared.own_dials.dialled_for(peer, local),
                        _ => None,
                    };
                    if let Some(looping) = looping {
                        // A PROXY header (`send_proxy_protocol`) from our own dial: refused before any
                        // PreConnect, as the garbage it is to a Minecraft handshake. Said as the loop it is.
                        tracing::warn!(
                            server = &*looping,
                            listener_port = local.port(),
                            proxy_header = true,
                            "{}",
                            nethergate_core::session::LOOP_WARNING
                        );
                    }
                    if answered {
                        linger(rt, client).await; // abort: see `serve`
                    } else {
                        // Nothing of ours to protect (a handshake timeout, garbage): no waiting, so the
                        // socket's `max_connections` slot is free at once.
                        close_at_once(client);
                    }
                    return None;
                }
            }
        }
        if session.is_done() || !session.wants_client_data() {
            return None;
        }
        read_client(rt, client, session, first).await;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Interest, Listener};
    use nethergate_core::handshake::Handshake;
    use nethergate_core::login::LoginStart;
    use nethergate_core::{NextState, Registry, RouteTable};
    use std::future::{pending, Future, Pending};
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsFd, BorrowedFd};
    use std::sync::Arc;

    /// A runtime whose reactor never reports anything and whose timers never fire: whatever a session
    /// does with it, it does without waiting. Its first dial binds the socket to the address it dials, so
    /// the socket connects to itself, as a dial to a port nobody listens on does when the kernel happens
    /// to pick that port as its source; later dials are plain connects, to `translated` when set (as
    /// address translation would send them) or else to the address dialled.
    #[derive(Clone, Default)]
    struct Stalled {
        translated: Option<SocketAddr>,
        dials: Arc<std::sync::atomic::AtomicUsize>,
    }

    struct Socket(TcpStream);

    impl AsFd for Socket {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.0.as_fd()
        }
    }

    impl Stream for Socket {
        fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
            pending()
        }
        fn writable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
            pending()
        }
        fn try_read(&self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into()) // no readiness seen yet, like tokio's cache
        }
        fn try_write(&self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn try_io<T>(&self, _: Interest, _: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    struct NoListener;

    impl Listener for NoListener {
        type Stream = Socket;
        type Accepted = TcpStream;
        fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send + '_ {
            pending()
        }
        fn register(accepted: TcpStream) -> io::Result<Socket> {
            Ok(Socket(accepted))
        }
    }

    impl Runtime for Stalled {
        type Stream = Socket;
        type Listener = NoListener;
        type Sleep = Pending<()>;
        fn listener(&self, _: TcpListener) -> io::Result<NoListener> {
            Ok(NoListener)
        }
        fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Socket>> + Send {
            let first = self.dials.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            let connect = || {
                use socket2::{Domain, Protocol, Type};
                let s = socket2::Socket::new(
                    Domain::for_address(addr),
                    Type::STREAM,
                    Some(Protocol::TCP),
                )?;
                if first {
                    s.set_reuse_address(true)?;
                    s.bind(&addr.into())?;
                }
                s.connect(&self.translated.filter(|_| !first).unwrap_or(addr).into())?;
                s.set_nonblocking(true)?;
                Ok(Socket(s.into()))
            };
            std::future::ready(connect())
        }
        fn resolve(
            &self,
            _: String,
            _: u16,
        ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send {
            pending()
        }
        fn sleep_until(&self, _: Instant) -> Pending<()> {
            pending()
        }
        fn spawn_on<F: Future<Output = ()> + Send + 'static>(&self, _: usize, _: F) {}
    }

    /// A connected pair: the client end, and the proxy's end wrapped for [`Stalled`].
    fn pair() -> io::Result<(TcpStream, Socket)> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (accepted, _) = listener.accept()?;
        accepted.set_nonblocking(true)?;
        Ok((client, Socket(accepted)))
    }

    fn session() -> Session {
        let ctx = Context {
            routes: Arc::new(RouteTable::build(&[]).unwrap_or_default()),
            registry: Registry::new(),
            handshake_timeout: Duration::from_secs(5),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        Session::new(ctx, addr, addr, Instant::now())
    }

    /// Polls `read_client` once: `Some` when it finished without waiting.
    fn read_once(proxy_end: &Socket, session: &mut Session, first: bool) -> Option<()> {
        future::block_on(future::poll_once(read_client(
            &Stalled::default(),
            proxy_end,
            session,
            first,
        )))
    }

    fn login_bytes() -> Vec<u8> {
        let mut bytes = Vec::new();
        Handshake {
            protocol_version: 765,
            server_address: "mc.example.com",
            port: 25565,
            next_state: NextState::Login,
        }
        .encode(&mut bytes);
        LoginStart {
            name: "Steve",
            tail: &[0; 16],
        }
        .encode(&mut bytes);
        bytes
    }

    /// A dial that connects the socket to itself (nothing listens on the port) is refused, not taken for
    /// the backend: the player is told the server is unreachable instead of getting their bytes back.
    #[test]
    fn a_dial_connected_to_itself_is_refused() -> io::Result<()> {
        // The fake's first dial really is connected to itself: what it sends comes back.
        let port = free_port()?;
        let rt = Stalled::default();
        let mut itself = future::block_on(rt.connect(SocketAddr::from(([127, 0, 0, 1], port))))?;
        itself.0.write_all(b"echo")?;
        std::thread::sleep(Duration::from_millis(20));
        let mut back = [0u8; 4];
        std::io::Read::read_exact(&mut itself.0, &mut back)?;
        assert_eq!(&back, b"echo");

        match future::block_on(dial(
            &Stalled::default(),
            &request("127.0.0.1", free_port()?),
        )) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}"),
            Ok((_, addr)) => panic!("took a socket connected to itself for the backend at {addr}"),
        }
        // `0.0.0.0` is dialled as loopback: the socket's own address is not the one dialled. And IPv6,
        // where the machine has a loopback address for it.
        let mut hosts = vec![("0.0.0.0", free_port()?)];
        if let Ok(v6) = TcpListener::bind("[::1]:0") {
            hosts.push(("::1", v6.local_addr()?.port()));
        }
        for (host, port) in hosts {
            match future::block_on(dial(&Stalled::default(), &request(host, port))) {
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{host}: {e}"),
                Ok((_, addr)) => {
                    panic!("took a socket connected to itself for the backend at {addr}")
                }
            }
        }
        Ok(())
    }

    /// A dial that got the dialled port as its source, where address translation takes the port to a
    /// real backend (a published Docker port without the userland proxy), is dialled again, and reaches
    /// the backend: not refused for looking like a socket connected to itself.
    #[test]
    fn a_translated_dial_that_got_its_own_port_reaches_the_backend() -> io::Result<()> {
        let backend = TcpListener::bind("127.0.0.1:0")?;
        let rt = Stalled {
            translated: Some(backend.local_addr()?),
            ..Stalled::default()
        };
        let (stream, _) = future::block_on(dial(&rt, &request("127.0.0.1", free_port()?)))?;
        // The dial's socket is the backend's connection (not the first, connected to itself): it is
        // there to accept, and what is sent on it arrives.
        backend.set_nonblocking(true)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut accepted = loop {
            match backend.accept() {
                Ok((accepted, _)) => break accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        };
        accepted.set_nonblocking(false)?;
        accepted.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.0.set_nonblocking(false)?;
        (&stream.0).write_all(b"hi")?;
        let mut got = [0u8; 2];
        std::io::Read::read_exact(&mut accepted, &mut got)?;
        assert_eq!(&got, b"hi");
        Ok(())
    }

    fn free_port() -> io::Result<u16> {
        Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
    }

    /// A dial of `<host>:<port>` for the server `lobby`.
    fn request(host: &str, port: u16) -> ConnectRequest {
        ConnectRequest {
            server: "lobby".into(),
            address: Arc::new(nethergate_core::config::BackendAddress {
                host: host.into(),
                port,
            }),
            timeout: Duration::from_secs(5),
        }
    }

    /// The handshake a client sent right after connecting is read at once: the first read of a session
    /// does not wait for the reactor, so it finishes in one poll although this reactor never reports.
    #[test]
    fn a_handshake_already_in_the_socket_is_read_without_the_reactor() -> io::Result<()> {
        let (mut client, proxy_end) = pair()?;
        client.write_all(&login_bytes())?;
        std::thread::sleep(Duration::from_millis(50)); // loopback delivery
        let mut session = session();
        let read = read_once(&proxy_end, &mut session, true);
        assert_eq!(read, Some(()), "the first read waited for readiness");
        assert!(
            !session.wants_client_data(),
            "the handshake and login start were not both read"
        );
        assert_eq!(session.buffered(), login_bytes().len(), "bytes were lost");
        assert!(
            matches!(session.poll_action(), Some(Action::PreConnect)),
            "the session did not move on to its pre-connect event"
        );
        Ok(())
    }

    /// What the handshake phase writes (a status answer, a kick, the opening to a new backend) goes
    /// straight to the socket first: a new connection has room, though its runtime may not have reported
    /// it writable yet (tokio caches "not writable" until the first event; `Stalled` never reports).
    #[test]
    fn a_new_connection_is_written_without_the_reactor() -> io::Result<()> {
        use std::io::Read;
        let (mut client, proxy_end) = pair()?;
        let wrote = future::block_on(future::poll_once(copy::write_all_fresh(
            &Stalled::default(),
            &proxy_end,
            b"hello",
            Duration::from_secs(5),
        )));
        assert!(
            matches!(wrote, Some(Ok(()))),
            "the write waited for readiness"
        );
        let mut got = [0u8; 5];
        client.read_exact(&mut got)?;
        assert_eq!(&got, b"hello");
        Ok(())
    }

    /// Later reads, and a first read that finds the socket empty, wait for the reactor (here: forever).
    #[test]
    fn an_empty_socket_and_later_reads_wait_for_readiness() -> io::Result<()> {
        let (mut client, proxy_end) = pair()?;
        let mut session = session();
        let empty = read_once(&proxy_end, &mut session, true);
        assert_eq!(empty, None, "an empty socket did not wait");
        client.write_all(&login_bytes())?;
        std::thread::sleep(Duration::from_millis(50));
        let later = read_once(&proxy_end, &mut session, false);
        assert_eq!(later, None, "a later read did not wait for readiness");
        assert!(session.wants_client_data());
        Ok(())
    }
}
