//! Session setup: workers that open a session and close it, in a loop.
//!
//! Each worker connects, sends the handshake and login start, waits for the backend's first byte, closes,
//! and starts over, for the measured duration. Latency is from `connect` to the first byte.

use super::{cpu_between, open, Measured, Meter};
use crate::report::{fmt_opt, fmt_ratio, Table};
use crate::stats::{nanos, Percentiles};
use crate::wire::Mode;
use serde::Serialize;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// One setup case.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SetupConfig {
    /// Concurrent workers.
    pub workers: usize,
    /// Measured time per round.
    #[serde(serialize_with = "crate::report::secs")]
    pub duration: Duration,
}

/// One round against one target.
#[derive(Debug)]
pub struct SetupSample {
    latencies: Vec<u64>,
    failed: u64,
    elapsed: Duration,
    cpu: Option<Duration>,
}

/// Runs one round.
pub async fn measure(addr: SocketAddr, meter: Meter, cfg: SetupConfig) -> io::Result<SetupSample> {
    let (start, cpu_before) = (Instant::now(), meter.cpu_time());
    let end = start + cfg.duration;
    let workers: Vec<_> = (0..cfg.workers)
        .map(|_| tokio::spawn(worker(addr, end)))
        .collect();
    let mut sample = SetupSample {
        latencies: Vec::new(),
        failed: 0,
        elapsed: Duration::ZERO,
        cpu: None,
    };
    let mut first_error = None;
    for w in workers {
        let (latencies, failed, error) = w.await.map_err(io::Error::other)?;
        sample.latencies.extend(latencies);
        sample.failed += failed;
        first_error = first_error.or(error);
    }
    sample.elapsed = start.elapsed();
    sample.cpu = cpu_between(cpu_before, meter.cpu_time());
    match first_error {
        // A few failures under load are a figure; nothing but failures is a broken target.
        Some(e) if sample.latencies.is_empty() => Err(e),
        _ => Ok(sample),
    }
}

async fn worker(addr: SocketAddr, end: Instant) -> (Vec<u64>, u64, Option<io::Error>) {
    let (mut latencies, mut failed, mut first_error) = (Vec::new(), 0, None);
    while Instant::now() < end {
        let t = Instant::now();
        match open(addr, Mode::Echo).await {
            Ok(stream) => {
                latencies.push(nanos(t.elapsed()));
                drop(stream);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
                // Do not spin on a refused port.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    (latencies, failed, first_error)
}

/// One target's figures over all rounds.
#[derive(Debug, Serialize)]
pub struct SetupRow {
    /// The target.
    pub name: String,
    /// Sessions opened per second.
    pub sessions_per_s: Option<f64>,
    /// Against the direct connection.
    pub vs_direct: Option<f64>,
    /// Setup latency percentiles.
    pub latency: Option<Percentiles>,
    /// Sessions that failed to open.
    pub failed: u64,
    /// Proxy CPU per session, in µs.
    pub cpu_us_per_session: Option<f64>,
    /// Why the target was not (fully) measured.
    pub error: Option<String>,
}

/// Summarises every target; the direct connection must be first.
pub fn summarise(measured: Vec<Measured<SetupSample>>) -> Vec<SetupRow> {
    let mut rows: Vec<SetupRow> = measured
        .into_iter()
        .map(|m| {
            let elapsed: f64 = m.samples.iter().map(|s| s.elapsed.as_secs_f64()).sum();
            let mut latencies: Vec<u64> = m
                .samples
                .iter()
                .flat_map(|s| s.latencies.iter().copied())
                .collect();
            let sessions = latencies.len();
            let cpu: Option<Duration> = m.samples.iter().map(|s| s.cpu).sum();
            SetupRow {
                name: m.name,
                sessions_per_s: (elapsed > 0.0).then(|| sessions as f64 / elapsed),
                vs_direct: None,
                latency: Percentiles::of(&mut latencies),
                failed: m.samples.iter().map(|s| s.failed).sum(),
                cpu_us_per_session: cpu
                    .filter(|_| sessions > 0)
                    .map(|c| c.as_secs_f64() * 1e6 / sessions as f64),
                error: m.error,
            }
        })
        .collect();
    let direct = rows.first().and_then(|r| r.sessions_per_s);
    for row in &mut rows {
        row.vs_direct = row.sessions_per_s.zip(direct).map(|(s, d)| s / d);
    }
    rows
}

/// The table of one case.
pub fn table(cfg: &SetupConfig, rows: &[SetupRow]) -> Table {
    let mut t = Table::new(
        format!(
            "setup: {} workers, connect + handshake + login start + first backend byte + close, {:?} per round",
            cfg.workers, cfg.duration
        ),
        &[
            "target",
            "sessions/s",
            "× direct",
            "p50 µs",
            "p99 µs",
            "failed",
            "CPU µs/session",
        ],
    );
    for r in rows {
        t.row(
            vec![
                r.name.clone(),
                fmt_opt(r.sessions_per_s, 0),
                fmt_ratio(r.vs_direct),
                fmt_opt(r.latency.map(|l| l.p50_us), 0),
                fmt_opt(r.latency.map(|l| l.p99_us), 0),
                r.failed.to_string(),
                fmt_opt(r.cpu_us_per_session, 1),
            ],
            r.error.as_deref(),
        );
    }
    t.note("latency = connect to first backend byte; CPU = proxy utime+stime / sessions".into());
    t
}
