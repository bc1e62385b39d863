//! One client connection: feed the core, do what it says, then copy.

use crate::copy::{self, write_all};
use crate::pool::Buffer;
use crate::proxy::Shared;
use crate::runtime::{Runtime, Stream};
use futures_lite::future;
use nethergate_core::forward::{Ending, Side};
use nethergate_core::{Action, ConnectRequest, Context, EndReason, Forward, Session};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a closing connection is drained so the client reads our last packet instead of a reset.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Most bytes drained from a closing connection.
const CLOSE_DRAIN_BYTES: usize = 64 * 1024;

fn local_addr<S: Stream>(s: &S) -> Option<SocketAddr> {
    socket2::SockRef::from(s).local_addr().ok()?.as_socket()
}

fn set_nodelay<S: Stream>(s: &S) {
    let _ = socket2::SockRef::from(s).set_nodelay(true);
}

/// Resolves and dials one configured backend address within its connect timeout.
async fn dial<R: Runtime>(rt: &R, req: &ConnectRequest) -> io::Result<(R::Stream, SocketAddr)> {
    let attempt = async {
        let host = req.address.host.as_str();
        let addrs = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, req.address.port)],
            Err(_) => rt.resolve(host.to_owned(), req.address.port).await?,
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "host resolved to no address");
        for addr in addrs {
            match rt.connect(addr).await {
                Ok(s) => {
                    set_nodelay(&s);
                    return Ok((s, addr));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    let deadline = Instant::now() + req.timeout;
    future::or(attempt, async {
        rt.sleep_until(deadline).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
    })
    .await
}

/// Waits for what the client sends (or EOF, or the session's deadline) and feeds it to the session.
/// Abort is watched by `serve` around the whole handshake.
async fn read_client<R: Runtime>(rt: &R, client: &R::Stream, session: &mut Session) {
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
            let mut buf = Buffer::take();
            loop {
                // Read no more than the session takes: later bytes wait in the socket for the copy.
                // A short read emptied the socket: its cached readiness is cleared (see `read_chunk`), so
                // neither this loop nor the copy that follows reads again only to hear `WouldBlock`.
                let limit = session.read_budget().clamp(1, buf.len());
                match copy::read_chunk(client, &mut buf[..limit]) {
                    Ok((0, _)) => {
                        session.handle_client_eof();
                        break;
                    }
                    Ok((n, short)) => {
                        session.handle_client_data(&buf[..n]);
                        if short || !session.wants_client_data() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        session.handle_client_eof();
                        break;
                    }
                }
            }
        }
    }
}

/// Closes a client we refused: our last packet is already written; shut down our side and read what the
/// client still sends for a moment, so the kernel does not answer with a reset that would destroy it.
async fn linger<R: Runtime>(rt: &R, client: &R::Stream) {
    copy::shutdown_write(client);
    let deadline = Instant::now() + CLOSE_LINGER;
    let drain = async {
        let mut drained = 0;
        let mut buf = [0u8; 512];
        while drained < CLOSE_DRAIN_BYTES {
            if client.readable().await.is_err() {
                return;
            }
            match client.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => drained += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
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
    // Abort (second signal, shutdown deadline) also cuts a handshake waiting on a slow dial.
    let prepared = shared
        .control
        .abort
        .unless_set(Box::pin(handshake(shared, &client, peer)))
        .await;
    let Some(Some((backend, fwd))) = prepared else {
        return;
    };
    let abort = &shared.control.abort;
    let copied =
        copy::bidirectional(&shared.rt, &client, &backend, fwd.mode, fwd.timeouts, abort).await;
    fwd.live.finish(
        fwd.c2b_initial + copied.c2b,
        copied.b2c,
        copied.reason,
        Instant::now(),
    );
}

/// Drives the session until it forwards (returning the backend, with the first bytes already written to it)
/// or closes (returning `None`).
async fn handshake<R: Runtime>(
    shared: &Shared<R>,
    client: &R::Stream,
    peer: SocketAddr,
) -> Option<(R::Stream, Forward)> {
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
    let mut session = Session::new(ctx, peer, local, Instant::now());
    let mut backend: Option<R::Stream> = None;
    let mut to_backend = Vec::new();
    loop {
        while let Some(action) = session.poll_action() {
            match action {
                Action::PreConnect(event) => {
                    let decision = shared.plugins.decide(&event);
                    session.pre_connect_result(decision);
                }
                Action::Connect(req) => match dial(rt, &req).await {
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
                Action::SendToBackend(bytes) => to_backend.push(bytes),
                Action::SendToClient(bytes) => {
                    // A client that does not read our answer is closed by the next action anyway.
                    let _ = write_all(rt, client, &bytes, handshake_timeout).await;
                }
                Action::Forward(fwd) => {
                    let Some(backend) = backend.take() else {
                        fwd.live.finish(0, 0, EndReason::Error, Instant::now());
                        return None;
                    };
                    for bytes in &to_backend {
                        if let Err(stop) = write_all(rt, &backend, bytes, fwd.timeouts.write).await
                        {
                            let mut ending = Ending::default();
                            ending.record(Side::Backend, stop);
                            fwd.live.finish(0, 0, ending.reason(), Instant::now());
                            return None;
                        }
                    }
                    return Some((backend, fwd));
                }
                Action::Close(_) => {
                    linger(rt, client).await; // abort: see `serve`
                    return None;
                }
            }
        }
        if session.is_done() || !session.wants_client_data() {
            return None;
        }
        read_client(rt, client, &mut session).await;
    }
}
