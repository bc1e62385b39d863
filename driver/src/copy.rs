//! The bidirectional copy with half-close, idle and write limits, byte counters and fairness.
//!
//! Each direction waits for readiness holding no buffer, borrows one from the per-thread pool to read,
//! writes it all out, and gives it back; a session that is idle holds no buffer at all. A direction yields
//! after [`FAIR_SHARE_BYTES`] so a saturated one cannot starve the other, which runs in the same task.

use crate::pool::Buffer;
use crate::runtime::{Runtime, Stream};
use futures_lite::future;
use nethergate_core::forward::{classify_error, Ending, Side, Stop, FAIR_SHARE_BYTES};
use nethergate_core::{EndReason, Timeouts};
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

/// Shuts down the write half of a stream; errors mean the peer is gone already, which is what we wanted.
pub fn shutdown_write<S: Stream>(s: &S) {
    let _ = socket2::SockRef::from(s).shutdown(Shutdown::Write);
}

/// Writes all of `data`, waiting at most `limit` each time the socket makes no progress.
pub async fn write_all<R: Runtime, S: Stream>(
    rt: &R,
    to: &S,
    mut data: &[u8],
    limit: Duration,
) -> Result<(), Stop> {
    while !data.is_empty() {
        match to.try_write(data) {
            Ok(0) => return Err(Stop::Error),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let ready = future::or(async { Some(to.writable().await) }, async {
                    rt.sleep_until(Instant::now() + limit).await;
                    None
                })
                .await;
                match ready {
                    None => return Err(Stop::Timeout),
                    Some(Err(e)) => return Err(classify_error(&e)),
                    Some(Ok(())) => {}
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(classify_error(&e)),
        }
    }
    Ok(())
}

/// How a direction stopped, and whether it was writing (the stop is then the other side's doing).
type Pumped = (Stop, bool);

/// Copies `from` → `to` until EOF (then shuts down `to`'s write half), an error, or a limit.
async fn pump<R: Runtime, S: Stream>(
    rt: &R,
    from: &S,
    to: &S,
    timeouts: Timeouts,
    count: &AtomicU64,
) -> Pumped {
    let mut last_read = Instant::now();
    let mut idle = pin!(rt.sleep_until(last_read + timeouts.read));
    loop {
        // Wait for readiness or the idle limit, holding no buffer. The timer is re-armed lazily: only when
        // it fires do we look at when the last byte came.
        let ready = future::or(async { Some(from.readable().await) }, async {
            idle.as_mut().await;
            None
        });
        match ready.await {
            Some(Ok(())) => {}
            Some(Err(e)) => return (classify_error(&e), false),
            None => {
                let now = Instant::now();
                if now.duration_since(last_read) >= timeouts.read {
                    return (Stop::Timeout, false);
                }
                idle.set(rt.sleep_until(last_read + timeouts.read));
                continue;
            }
        }
        let mut buf = Buffer::take();
        let mut moved = 0usize;
        loop {
            match from.try_read(&mut buf) {
                Ok(0) => {
                    shutdown_write(to);
                    return (Stop::Eof, false);
                }
                Ok(n) => {
                    last_read = Instant::now();
                    if let Err(stop) = write_all(rt, to, &buf[..n], timeouts.write).await {
                        return (stop, true);
                    }
                    count.fetch_add(n as u64, Ordering::Relaxed);
                    moved += n;
                    if moved >= FAIR_SHARE_BYTES {
                        drop(buf);
                        future::yield_now().await;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (classify_error(&e), false),
            }
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
}

/// Copies both ways until both directions are done, one fails, or `stop` resolves (reason Shutdown).
pub async fn bidirectional<R: Runtime, S: Stream>(
    rt: &R,
    client: &S,
    backend: &S,
    timeouts: Timeouts,
    stop: impl Future<Output = ()>,
) -> Copied {
    let (c2b, b2c) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut ending = Ending::default();
    {
        let mut up = pin!(pump(rt, client, backend, timeouts, &c2b));
        let mut down = pin!(pump(rt, backend, client, timeouts, &b2c));
        let mut stop = pin!(stop);
        let (mut up_done, mut down_done) = (false, false);
        future::poll_fn(|cx| {
            for (done, fut, reading, writing) in [
                (&mut up_done, up.as_mut(), Side::Client, Side::Backend),
                (&mut down_done, down.as_mut(), Side::Backend, Side::Client),
            ] {
                if !*done {
                    if let Poll::Ready((s, on_write)) = fut.poll(cx) {
                        *done = true;
                        ending.record(if on_write { writing } else { reading }, s);
                        if Ending::ends_session(s) {
                            return Poll::Ready(());
                        }
                    }
                }
            }
            if up_done && down_done {
                return Poll::Ready(());
            }
            if stop.as_mut().poll(cx).is_ready() {
                ending.record(Side::Client, Stop::Shutdown);
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
    }
    Copied {
        c2b: c2b.load(Ordering::Relaxed),
        b2c: b2c.load(Ordering::Relaxed),
        reason: ending.reason(),
    }
}
