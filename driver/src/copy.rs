//! The bidirectional copy with half-close, idle and write limits, byte counters and fairness.
//!
//! Each direction waits for readiness holding nothing, then borrows a carrier only while bytes are in
//! flight: a buffer from the per-thread pool (passthrough) or a kernel pipe (zero copy, Linux), and gives it
//! back once everything read was written. An idle session holds neither. A direction yields after
//! [`FAIR_SHARE_BYTES`] so a saturated one cannot starve the other, which runs in the same task.

use crate::pool::Buffer;
use crate::runtime::{Interest, Runtime, Stream};
use crate::signal::Watch;
use futures_lite::future;
use nethergate_core::forward::{
    classify_error, Ending, Side, Stop, COPY_BUFFER_SIZE, FAIR_SHARE_BYTES,
};
use nethergate_core::{EndReason, ProxyMode, Timeouts};
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

/// Shuts down the write half of a stream; errors mean the peer is gone already, which is what we wanted.
pub fn shutdown_write<S: Stream>(s: &S) {
    let _ = socket2::SockRef::from(s).shutdown(Shutdown::Write);
}

/// How often a long wait for writability reads the peer's progress (a shorter wait costs nothing).
const PROGRESS_SAMPLE: Duration = Duration::from_millis(250);

/// Bytes written to `s` that its peer has not acknowledged yet (`SIOCOUTQ`); `None` where that cannot be
/// read.
fn unacknowledged<S: Stream>(s: &S) -> Option<u64> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::fd::AsRawFd;
        let mut queued: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (= TIOCOUTQ) on a socket we hold writes one int through the pointer given.
        let done = unsafe { libc::ioctl(s.as_fd().as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        (done == 0).then(|| u64::try_from(queued).ok()).flatten()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = s;
        None
    }
}

/// Waits until `to` may be writable, giving up when its peer makes no progress for `limit`.
///
/// Linux reports a TCP socket writable again only once its send queue is down to about two thirds of
/// the send buffer, which grows to megabytes on a fast link: a player reading steadily but slowly drains
/// less than that in `limit`, and was cut although it never stalled. So a wait that outlasts a sample
/// interval (min(`limit` / 8, [`PROGRESS_SAMPLE`])) reads, once per interval, what the peer has yet to
/// acknowledge: a count that got shorter is progress. The wait ends with a timeout once `limit` has
/// passed since the last progress seen (since the wait began, if none), so a peer is cut at most one
/// interval more than `limit` after the last byte it took. Where the count cannot be read, any wait of
/// `limit` is a timeout, as before.
async fn writable_within<R: Runtime, S: Stream>(
    rt: &R,
    to: &S,
    limit: Duration,
) -> Result<(), Stop> {
    let interval = (limit / 8).clamp(Duration::from_millis(1), PROGRESS_SAMPLE);
    let mut progress = Instant::now();
    let mut sample = progress + interval;
    // What the peer had not acknowledged at the last sample.
    let mut queued: Option<u64> = None;
    loop {
        let deadline = sample.min(progress + limit);
        let ready = future::or(async { Some(to.writable().await) }, async {
            rt.sleep_until(deadline).await;
            None
        })
        .await;
        match ready {
            Some(Err(e)) => return Err(classify_error(&e)),
            Some(Ok(())) => return Ok(()),
            None => {
                let now = Instant::now();
                let count = unacknowledged(to);
                if let (Some(before), Some(count)) = (queued, count) {
                    if count < before {
                        progress = now;
                    }
                }
                queued = count;
                if now >= progress + limit {
                    return Err(Stop::Timeout);
                }
                sample = now + interval;
            }
        }
    }
}

/// Writes all of `data`, waiting at most `limit` each time the socket makes no progress.
pub async fn write_all<R: Runtime, S: Stream>(
    rt: &R,
    to: &S,
    data: &[u8],
    limit: Duration,
) -> Result<(), Stop> {
    write_all_counted(rt, to, data, limit, &AtomicU64::new(0)).await
}

/// [`write_all`], adding to `count` what the socket takes as it takes it: a write that stops part way
/// (a timeout, a reset) leaves `count` at what was written.
async fn write_all_counted<R: Runtime, S: Stream>(
    rt: &R,
    to: &S,
    mut data: &[u8],
    limit: Duration,
    count: &AtomicU64,
) -> Result<(), Stop> {
    loop {
        let done = write_now(to, data)?;
        count.fetch_add(done as u64, Ordering::Relaxed);
        data = &data[done..];
        if data.is_empty() {
            return Ok(());
        }
        writable_within(rt, to, limit).await?;
    }
}

/// Writes all of `data` to a socket the reactor may not have reported writable yet (a new connection, whose
/// runtime may cache "not writable" until its first event): the first attempt goes straight to the socket,
/// so a socket with room takes the bytes without a trip through the reactor; the rest goes as in
/// [`write_all`].
pub async fn write_all_fresh<R: Runtime, S: Stream>(
    rt: &R,
    to: &S,
    data: &[u8],
    limit: Duration,
) -> Result<(), Stop> {
    let sock = socket2::SockRef::from(to);
    // As the runtimes' own writes do: a peer that is gone gives `EPIPE`, not a `SIGPIPE` that would kill a
    // process embedding the driver with the default signal disposition.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let done = write_with(data, |rest| sock.send_with_flags(rest, libc::MSG_NOSIGNAL))?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let done = write_with(data, |rest| io::Write::write(&mut &*sock, rest))?;
    write_all(rt, to, &data[done..], limit).await
}

/// Writes as much of `data` as the socket takes now; the number written, or why it cannot go on.
fn write_now<S: Stream>(to: &S, data: &[u8]) -> Result<usize, Stop> {
    write_with(data, |rest| to.try_write(rest))
}

/// [`write_now`] with the write given: what `write` takes of `data` until it says `WouldBlock`.
fn write_with(
    data: &[u8],
    mut write: impl FnMut(&[u8]) -> io::Result<usize>,
) -> Result<usize, Stop> {
    let mut done = 0;
    while done < data.len() {
        match write(&data[done..]) {
            Ok(0) => return Err(Stop::Error),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(classify_error(&e)),
        }
    }
    Ok(done)
}

/// A burst this small is packets, not a stream: in zero copy the next burst starts with a buffer again.
const SMALL_BURST: usize = 4096;

/// How a direction stopped, and whether it was writing (the stop is then the other side's doing).
type Pumped = (Stop, bool);

/// What one step of a direction did.
enum Step {
    /// Moved this many bytes (all written); `true` when the read was short: the socket had nothing more,
    /// so the direction can wait for readiness without another read that would only say `WouldBlock`.
    Moved(usize, bool),
    /// Nothing to read right now.
    WouldBlock,
    /// The read side sent EOF.
    Eof,
    /// The direction must stop.
    Stopped(Pumped),
}

/// Holds the bytes in flight of one direction.
enum Carrier {
    Buffer(Buffer),
    #[cfg(target_os = "linux")]
    Pipe(crate::splice::Pipe),
}

impl Carrier {
    /// A pipe when `splice` (zero copy) and one can be had, else a buffer.
    fn take(splice: bool) -> Carrier {
        #[cfg(target_os = "linux")]
        if splice {
            // Out of file descriptors for a pipe: this chunk goes through a buffer instead.
            if let Ok(pipe) = crate::splice::Pipe::take() {
                return Carrier::Pipe(pipe);
            }
        }
        let _ = splice;
        Carrier::Buffer(Buffer::take())
    }

    fn is_pipe(&self) -> bool {
        !matches!(self, Carrier::Buffer(_))
    }

    /// Reads one chunk from `from` and writes all of it to `to`, adding to `count` what was written as it
    /// is written (so a write cut part way is counted as far as it went).
    async fn step<R: Runtime, S: Stream>(
        &mut self,
        rt: &R,
        from: &S,
        to: &S,
        limit: Duration,
        count: &AtomicU64,
    ) -> Step {
        match self {
            Carrier::Buffer(buf) => match read_chunk(from, buf) {
                Ok((0, _)) => Step::Eof,
                // Usually the socket takes everything at once; only a blocked write pays for the
                // (boxed, so it takes no room in an idle session's task) wait with its timer.
                Ok((n, drained)) => {
                    let written = match write_now(to, &buf[..n]) {
                        Ok(done) => {
                            count.fetch_add(done as u64, Ordering::Relaxed);
                            if done == n {
                                Ok(())
                            } else {
                                let rest = &buf[done..n];
                                Box::pin(write_all_counted(rt, to, rest, limit, count)).await
                            }
                        }
                        Err(stop) => Err(stop),
                    };
                    match written {
                        Err(stop) => Step::Stopped((stop, true)),
                        Ok(()) => Step::Moved(n, drained),
                    }
                }
                Err(e) => read_error(&e),
            },
            #[cfg(target_os = "linux")]
            Carrier::Pipe(pipe) => {
                let n = match from.try_io(Interest::Read, || pipe.fill(from)) {
                    Ok(0) => return Step::Eof,
                    Ok(n) => n,
                    Err(e) => return read_error(&e),
                };
                while pipe.pending > 0 {
                    match to.try_io(Interest::Write, || pipe.drain(to)) {
                        Ok(0) => return Step::Stopped((Stop::Error, true)),
                        Ok(done) => {
                            count.fetch_add(done as u64, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if let Err(stop) = Box::pin(writable_within(rt, to, limit)).await {
                                return Step::Stopped((stop, true));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Step::Stopped((classify_error(&e), true)),
                    }
                }
                Step::Moved(n, false)
            }
        }
    }
}

/// Reads what `from` has into `buf`: the count, and whether the read was short (`0 < n < buf.len()`).
///
/// A short read shows the socket's receive queue was emptied, so the readiness the runtime cached is
/// cleared as if the read had said `WouldBlock` (tokio does the same in its own `poll_read`): the next
/// wait then needs a fresh event, and the read that would only have said `WouldBlock` is saved. Data that
/// arrives in between is a new event, which the runtime never loses (tokio only clears readiness that no
/// newer event has set; async-io re-arms its one-shot registration, which reports a socket that is
/// already readable). An EOF stays visible: the closed state is never cleared.
pub(crate) fn read_chunk<S: Stream>(from: &S, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    let len = buf.len();
    let mut short = None;
    let read = from.try_io(Interest::Read, || match from.try_read(buf) {
        Ok(n) if n > 0 && n < len => {
            short = Some(n);
            Err(io::ErrorKind::WouldBlock.into())
        }
        other => other,
    });
    match (read, short) {
        (_, Some(n)) => Ok((n, true)),
        (Ok(n), None) => Ok((n, false)),
        (Err(e), None) => Err(e),
    }
}

fn read_error(e: &io::Error) -> Step {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Step::WouldBlock,
        // A reset is the peer leaving: pass it on like an EOF so the other side learns of it.
        _ => match classify_error(e) {
            Stop::Eof => Step::Eof,
            stop => Step::Stopped((stop, false)),
        },
    }
}

/// Copies `from` → `to` until EOF (then shuts down `to`'s write half), an error, or a limit.
///
/// When the other direction has finished already, the session ends with this EOF and both sockets are
/// closed at once: `to` then gets no `shutdown` of its own, as closing a socket whose input was read to
/// the end sends the same FIN after the same queued bytes (one syscall less per session).
///
/// Zero copy splices bulk and copies small packets. Two splices through a pipe cost more than one `recv`
/// and one `send` of a few hundred bytes, and game traffic is mostly that, so in `zero_copy` a burst
/// (what one readiness lets through) starts with a buffer, and moves on to a pipe as soon as a read fills
/// the whole buffer; after a burst that did, bursts start with the pipe until one moves less than
/// [`SMALL_BURST`]. A resource pack or a world download is spliced, chat and movement packets are not.
async fn pump<R: Runtime, S: Stream>(copy: &Shared<'_, R, S>, way: Way) -> Pumped {
    // Everything both directions share is behind one reference: the future of every idle session holds
    // two of these, so each word here is memory per session.
    let (rt, (from, to)) = (copy.rt, copy.ends(way));
    let count = &copy.counts[way as usize];
    let (mode, timeouts) = (copy.mode, &copy.timeouts);
    let zero_copy = cfg!(target_os = "linux") && mode == ProxyMode::ZeroCopy;
    let mut splice_first = false;
    let mut last_read = Instant::now();
    let mut idle: Pin<&mut R::Sleep> = pin!(rt.sleep_until(last_read + timeouts.read));
    loop {
        // Wait for readiness or the idle limit, holding nothing. The timer is re-armed lazily: only when it
        // fires do we look at when the last byte came.
        let ready = future::or(async { Some(from.readable().await) }, async {
            idle.as_mut().await;
            None
        });
        match ready.await {
            Some(Ok(())) => {}
            Some(Err(e)) => return (classify_error(&e), false),
            None => {
                if last_read.elapsed() >= timeouts.read {
                    return (Stop::Timeout, false);
                }
                idle.set(rt.sleep_until(last_read + timeouts.read));
                continue;
            }
        }
        let mut carrier = Carrier::take(zero_copy && splice_first);
        let mut moved = 0usize;
        loop {
            match carrier.step(rt, from, to, timeouts.write, count).await {
                Step::Moved(n, drained) => {
                    last_read = Instant::now();
                    moved += n;
                    if drained {
                        break;
                    }
                    if zero_copy && !carrier.is_pipe() {
                        // The read filled the whole buffer: this is bulk, splice the rest.
                        carrier = Carrier::take(true);
                    }
                    if moved >= FAIR_SHARE_BYTES {
                        drop(carrier);
                        rt.yield_now().await;
                        break;
                    }
                }
                Step::WouldBlock => break,
                Step::Eof => {
                    let if_silent = copy.if_silent(way);
                    if !if_silent.is_empty() && count.load(Ordering::Relaxed) == 0 {
                        // Best effort: the session ends with this EOF whether the client takes it or not.
                        // Boxed: a rare path, kept out of the future every idle session holds.
                        let _ = Box::pin(write_all(rt, to, if_silent, timeouts.write)).await;
                    }
                    if !copy.done[way.other() as usize].load(Ordering::Relaxed) {
                        shutdown_write(to);
                    }
                    return (Stop::Eof, false);
                }
                Step::Stopped(p) => return p,
            }
        }
        // A burst of a whole buffer or more was bulk: the next one likely is too. Only a burst of a few
        // packets goes back to buffers, as a bulk stream's bursts vary in size.
        if moved >= COPY_BUFFER_SIZE {
            splice_first = true;
        } else if moved < SMALL_BURST {
            splice_first = false;
        }
    }
}

/// A direction of [`bidirectional`]: client → backend (`Up`) or backend → client (`Down`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Up = 0,
    Down = 1,
}

impl Way {
    fn other(self) -> Way {
        match self {
            Way::Up => Way::Down,
            Way::Down => Way::Up,
        }
    }
}

/// What the two directions of [`bidirectional`] share.
struct Shared<'a, R, S> {
    rt: &'a R,
    client: &'a S,
    backend: &'a S,
    mode: ProxyMode,
    timeouts: Timeouts,
    /// Bytes moved each way.
    counts: [AtomicU64; 2],
    /// Whether each way has finished.
    done: [AtomicBool; 2],
    /// Written to the client if the backend ends before sending a byte (not counted).
    if_backend_silent: &'a [u8],
}

impl<R, S> Shared<'_, R, S> {
    /// (from, to) of `way`.
    fn ends(&self, way: Way) -> (&S, &S) {
        match way {
            Way::Up => (self.client, self.backend),
            Way::Down => (self.backend, self.client),
        }
    }

    /// What `way` writes to its destination if its source ends before sending a byte.
    fn if_silent(&self, way: Way) -> &[u8] {
        match way {
            Way::Up => &[],
            Way::Down => self.if_backend_silent,
        }
    }
}

/// Byte counts and end reason of a finished copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Client → backend.
    pub c2b: u64,
    /// Backend → client.
    pub b2c: u64,
    /// Why it ended.
    pub reason: EndReason,
    /// Drain the client before closing it ([`Ending::drain_before_close`]): it may still be sending, and a
    /// reset would destroy the backend's last bytes still queued for it.
    pub client_unread: bool,
    /// The same for the backend.
    pub backend_unread: bool,
    /// `if_backend_silent` was written after the session timed out: the client may have sent more
    /// meanwhile, unread when the backend took nothing, and closing on unread bytes answers with a reset,
    /// which may destroy the kick before the client reads it.
    pub kicked: bool,
}

/// Copies both ways until both directions are done, one fails, or `stop` is set (reason Shutdown).
///
/// If the backend ends the connection before it sent a byte, or the session times out before the backend
/// sent one, `if_backend_silent` (the core's [`nethergate_core::Forward::if_backend_silent`]; empty for
/// nothing) is written to the client first.
///
/// `stop` watches the flag that ends it (one atomic load per wake-up, no shared lock); a session passes
/// the watch it used during its handshake, so its task registers with the flag once.
pub async fn bidirectional<R: Runtime, S: Stream>(
    rt: &R,
    client: &S,
    backend: &S,
    mode: ProxyMode,
    timeouts: Timeouts,
    if_backend_silent: &[u8],
    stop: &mut Watch<'_>,
) -> Copied {
    // Everything the copy needs is moved into `copy` before the first await, and what the rare write at
    // the end needs is taken back out of it after: an argument used on both sides of an await would be
    // held for the whole session, and every idle session holds this future.
    let copy = Shared {
        rt,
        client,
        backend,
        mode,
        timeouts,
        counts: [AtomicU64::new(0), AtomicU64::new(0)],
        done: [AtomicBool::new(false), AtomicBool::new(false)],
        if_backend_silent,
    };
    let mut ending = Ending::default();
    {
        let (up_done, down_done) = (&copy.done[Way::Up as usize], &copy.done[Way::Down as usize]);
        let mut up = pin!(pump(&copy, Way::Up));
        let mut down = pin!(pump(&copy, Way::Down));
        future::poll_fn(|cx| {
            for (done, fut, reading) in [
                (up_done, up.as_mut(), Side::Client),
                (down_done, down.as_mut(), Side::Backend),
            ] {
                if !done.load(Ordering::Relaxed) {
                    if let Poll::Ready((s, on_write)) = fut.poll(cx) {
                        tracing::debug!(reading = ?reading, stop = ?s, on_write, "direction finished");
                        done.store(true, Ordering::Relaxed);
                        ending.record_direction(reading, on_write, s);
                        if Ending::ends_session(s) {
                            return Poll::Ready(());
                        }
                    }
                }
            }
            if up_done.load(Ordering::Relaxed) && down_done.load(Ordering::Relaxed) {
                return Poll::Ready(());
            }
            if stop.poll_set(cx) {
                ending.record(Side::Client, Stop::Shutdown);
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
    }
    let mut copied = Copied {
        c2b: copy.counts[Way::Up as usize].load(Ordering::Relaxed),
        b2c: copy.counts[Way::Down as usize].load(Ordering::Relaxed),
        reason: ending.reason(),
        client_unread: ending.drain_before_close(Side::Client),
        backend_unread: ending.drain_before_close(Side::Backend),
        kicked: false,
    };
    let (rt, client, kick, limit) = (
        copy.rt,
        copy.client,
        copy.if_backend_silent,
        copy.timeouts.write,
    );
    if copied.reason == EndReason::Timeout && copied.b2c == 0 && !kick.is_empty() {
        // A backend that accepted and then said nothing for the idle limit (one still starting, or hung)
        // is as unreachable to the player as one that closed at once. Best effort, and boxed: a rare path.
        let _ = Box::pin(write_all(rt, client, kick, limit)).await;
        copied.kicked = true;
    }
    copied
}

/// For the runtime crates' tests of the write limit (1 s): a peer that reads steadily for a while, then
/// stops, is cut about the limit after it stopped taking bytes (plus at most one 125 ms sample), not a
/// whole window later; while it reads, the wait goes on although the socket is not writable.
#[doc(hidden)]
#[cfg(any(target_os = "linux", target_os = "android"))]
pub async fn check_write_limit_follows_progress<R: Runtime>(rt: &R) -> io::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    // Inherited by the accepted socket: a small window that reopens every few hundred milliseconds.
    socket2::SockRef::from(&listener).set_recv_buffer_size(64 * 1024)?;
    let stream = rt.connect(listener.local_addr()?).await?;
    let (peer, _) = listener.accept()?;
    // Filled as the copy fills it, so the runtime has seen it not writable.
    let chunk = vec![0u8; 1 << 20];
    stream.writable().await?;
    let fill = || write_now(&stream, &chunk).map_err(|s| io::Error::other(format!("{s:?}")));
    while fill()? == chunk.len() {}
    peer.set_read_timeout(Some(Duration::from_secs(5)))?;
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        let until = Instant::now() + Duration::from_millis(1300);
        while Instant::now() < until {
            let _ = io::Read::read(&mut &peer, &mut buf);
            std::thread::sleep(Duration::from_millis(50));
        }
        (peer, Instant::now()) // kept open: a closed peer would end the wait with an error
    });
    let waited = writable_within(rt, &stream, Duration::from_secs(1)).await;
    let cut = Instant::now();
    let (_peer, stopped) = reader
        .join()
        .map_err(|_| io::Error::other("reader panicked"))?;
    assert_eq!(waited, Err(Stop::Timeout), "the socket became writable");
    let after = cut.saturating_duration_since(stopped);
    assert!(
        after >= Duration::from_millis(700) && after < Duration::from_millis(1500),
        "cut {after:?} after the reader stopped"
    );
    Ok(())
}
