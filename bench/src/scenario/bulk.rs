//! Bulk throughput: sessions that write and read as fast as they can, both ways at once.
//!
//! Client and backend each write 64 KiB chunks in a loop while reading and discarding everything. After a
//! warm-up, the bytes the clients wrote (up) and read (down) are counted over the measured duration,
//! together with the proxy's CPU time.

use super::{cpu_between, open_many, Measured, Meter};
use crate::backend::BULK_CHUNK;
use crate::report::{fmt_opt, fmt_ratio, Table};
use crate::wire::Mode;
use serde::Serialize;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// One bulk case.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BulkConfig {
    /// Concurrent sessions.
    pub sessions: usize,
    /// Measured time per round.
    #[serde(serialize_with = "crate::report::secs")]
    pub duration: Duration,
    /// Time streaming before counting starts.
    #[serde(serialize_with = "crate::report::secs")]
    pub warmup: Duration,
}

/// One round against one target.
#[derive(Debug)]
pub struct BulkSample {
    up: u64,
    down: u64,
    window: Duration,
    cpu: Option<Duration>,
}

#[derive(Default)]
struct Counters {
    up: AtomicU64,
    down: AtomicU64,
}

/// Runs one round.
pub async fn measure(addr: SocketAddr, meter: Meter, cfg: BulkConfig) -> io::Result<BulkSample> {
    let (streams, failed, error) =
        open_many(addr, Mode::Bulk, cfg.sessions, |s| async { Ok(s) }).await;
    if let Some(e) = error {
        return Err(io::Error::new(
            e.kind(),
            format!("{failed} of {} sessions did not open: {e}", cfg.sessions),
        ));
    }
    let counters = Arc::new(Counters::default());
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(stream(s, Arc::clone(&counters))))
        .collect();
    tokio::time::sleep(cfg.warmup).await;
    let at = |c: &Counters| (c.up.load(Ordering::Relaxed), c.down.load(Ordering::Relaxed));
    let (start, cpu_before) = (Instant::now(), meter.cpu_time());
    let (up0, down0) = at(&counters);
    tokio::time::sleep(cfg.duration).await;
    let (up1, down1) = at(&counters);
    let (window, cpu) = (start.elapsed(), cpu_between(cpu_before, meter.cpu_time()));
    for task in &tasks {
        task.abort();
    }
    let mut stopped_early = None;
    for task in tasks {
        match task.await {
            Err(e) if e.is_cancelled() => {}
            Err(e) => stopped_early = Some(e.to_string()),
            Ok(e) => stopped_early = Some(e.to_string()),
        }
    }
    if let Some(e) = stopped_early {
        return Err(io::Error::other(format!(
            "a session ended during the round: {e}"
        )));
    }
    Ok(BulkSample {
        up: up1 - up0,
        down: down1 - down0,
        window,
        cpu,
    })
}

/// Writes and reads until an error (which ends the round) or until aborted.
async fn stream(mut s: TcpStream, counters: Arc<Counters>) -> io::Error {
    let (mut rd, mut wr) = s.split();
    let out = vec![0x17u8; BULK_CHUNK];
    let write = async {
        loop {
            match wr.write(&out).await {
                Ok(0) => return io::Error::from(io::ErrorKind::WriteZero),
                Ok(n) => counters.up.fetch_add(n as u64, Ordering::Relaxed),
                Err(e) => return e,
            };
        }
    };
    let read = async {
        let mut buf = vec![0u8; BULK_CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => return io::Error::from(io::ErrorKind::UnexpectedEof),
                Ok(n) => counters.down.fetch_add(n as u64, Ordering::Relaxed),
                Err(e) => return e,
            };
        }
    };
    tokio::select! {
        e = write => e,
        e = read => e,
    }
}

/// One target's figures over all rounds.
#[derive(Debug, Serialize)]
pub struct BulkRow {
    /// The target.
    pub name: String,
    /// Client to backend, MiB/s.
    pub up_mib_s: Option<f64>,
    /// Backend to client, MiB/s.
    pub down_mib_s: Option<f64>,
    /// Up / down.
    pub up_down_ratio: Option<f64>,
    /// Both directions against the direct connection's.
    pub vs_direct: Option<f64>,
    /// Both directions against the reference proxy's.
    pub vs_reference: Option<f64>,
    /// Proxy CPU seconds per GiB moved (both directions).
    pub cpu_s_per_gib: Option<f64>,
    /// Why the target was not (fully) measured.
    pub error: Option<String>,
}

/// Summarises every target; the direct connection must be first.
pub fn summarise(measured: Vec<Measured<BulkSample>>) -> Vec<BulkRow> {
    let mut rows: Vec<BulkRow> = measured
        .into_iter()
        .map(|m| {
            let window: f64 = m.samples.iter().map(|s| s.window.as_secs_f64()).sum();
            let up: u64 = m.samples.iter().map(|s| s.up).sum();
            let down: u64 = m.samples.iter().map(|s| s.down).sum();
            let cpu: Option<Duration> = m.samples.iter().map(|s| s.cpu).sum();
            let measured = window > 0.0;
            BulkRow {
                name: m.name,
                up_mib_s: measured.then(|| up as f64 / MIB / window),
                down_mib_s: measured.then(|| down as f64 / MIB / window),
                up_down_ratio: (measured && down > 0).then(|| up as f64 / down as f64),
                vs_direct: None,
                vs_reference: None,
                cpu_s_per_gib: cpu
                    .filter(|_| up + down > 0)
                    .map(|c| c.as_secs_f64() / ((up + down) as f64 / GIB)),
                error: m.error,
            }
        })
        .collect();
    let total = |r: &BulkRow| Some(r.up_mib_s? + r.down_mib_s?);
    let direct = rows.first().and_then(total);
    let reference = rows.iter().find(|r| r.name == "reference").and_then(total);
    for row in &mut rows {
        let t = total(row);
        row.vs_direct = t.zip(direct).map(|(t, d)| t / d);
        row.vs_reference = t.zip(reference).map(|(t, r)| t / r);
    }
    rows
}

/// The table of one case.
pub fn table(cfg: &BulkConfig, rows: &[BulkRow]) -> Table {
    let mut t = Table::new(
        format!(
            "bulk: {} session(s) streaming both ways, {:?} per round after {:?} warm-up",
            cfg.sessions, cfg.duration, cfg.warmup
        ),
        &[
            "target",
            "up MiB/s",
            "down MiB/s",
            "up/down",
            "× direct",
            "× reference",
            "CPU s/GiB",
        ],
    );
    for r in rows {
        t.row(
            vec![
                r.name.clone(),
                fmt_opt(r.up_mib_s, 0),
                fmt_opt(r.down_mib_s, 0),
                fmt_opt(r.up_down_ratio, 2),
                fmt_ratio(r.vs_direct),
                fmt_ratio(r.vs_reference),
                fmt_opt(r.cpu_s_per_gib, 2),
            ],
            r.error.as_deref(),
        );
    }
    t.note(
        "× = (up + down) against that target's; CPU = proxy utime+stime / GiB moved both ways"
            .into(),
    );
    t
}
