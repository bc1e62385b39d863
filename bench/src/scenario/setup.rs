//! Session setup: workers that open a session and close it, in a loop.
//!
//! Each worker connects, sends the handshake and login start, waits for the backend's first byte, closes,
//! and starts over, for the measured duration. Latency is from `connect` to the first byte.
//!
//! Every closed connection leaves a TIME_WAIT socket on the side that closed first, holding its port
//! toward that one address and port for a minute; the kernel lets `connect` reuse it only after
//! `net.ipv4.tcp_tw_reuse_delay` (1 s), and creates none once `net.ipv4.tcp_max_tw_buckets` of them exist.
//! Tens of thousands of sessions a second from one address to one port run into that: the direct
//! connection measured 14,300 sessions/s with its ports held and 38,700 with the table full, on the same
//! machine a minute apart. So by default each worker connects from its own loopback address
//! ([`Source::Spread`]), and the table gives the TIME_WAIT count at the start of each target's rounds. A
//! proxy's own connections to the backend still come from one address, and can meet the same limit while
//! the table is not full: that column says which regime a target's rounds began in.

use super::{cpu_between, open_from, Measured, Meter};
use crate::procfs;
use crate::report::{fmt_opt, fmt_ratio, Table};
use crate::stats::{nanos, Percentiles};
use crate::wire::Mode;
use serde::Serialize;
use std::io;
use std::net::{IpAddr, SocketAddr};
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
    /// Where the workers connect from.
    pub source: Source,
}

/// Where the setup workers connect from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Worker i connects from 127.0.0.(2 + i % 250), its port chosen at `connect`, so that a worker's
    /// connects do not wait for ports held in TIME_WAIT (loopback IPv4 targets; others as `single`).
    /// A proxy's own connections to the backend still come from one address.
    Spread,
    /// Every worker connects from the address the kernel picks (127.0.0.1 for a loopback target), as a
    /// client normally does.
    Single,
}

impl Source {
    /// The address worker `i` connects from, to `target`.
    fn of_worker(self, i: usize, target: SocketAddr) -> Option<IpAddr> {
        match (self, target.ip()) {
            (Source::Spread, IpAddr::V4(ip)) if ip.is_loopback() => {
                Some(IpAddr::from([127, 0, 0, 2 + (i % 250) as u8]))
            }
            _ => None,
        }
    }
}

/// One round against one target.
#[derive(Debug)]
pub struct SetupSample {
    latencies: Vec<u64>,
    failed: u64,
    elapsed: Duration,
    cpu: Option<Duration>,
    time_wait_at_start: Option<u64>,
}

/// Runs one round.
pub async fn measure(addr: SocketAddr, meter: Meter, cfg: SetupConfig) -> io::Result<SetupSample> {
    let time_wait_at_start = procfs::time_wait_sockets();
    let (start, cpu_before) = (Instant::now(), meter.cpu_time());
    let end = start + cfg.duration;
    let workers: Vec<_> = (0..cfg.workers)
        .map(|i| tokio::spawn(worker(cfg.source.of_worker(i, addr), addr, end)))
        .collect();
    let mut sample = SetupSample {
        latencies: Vec::new(),
        failed: 0,
        elapsed: Duration::ZERO,
        cpu: None,
        time_wait_at_start,
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

async fn worker(
    from: Option<IpAddr>,
    addr: SocketAddr,
    end: Instant,
) -> (Vec<u64>, u64, Option<io::Error>) {
    let (mut latencies, mut failed, mut first_error) = (Vec::new(), 0, None);
    while Instant::now() < end {
        let t = Instant::now();
        match open_from(from, addr, Mode::Echo).await {
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
    /// TIME_WAIT sockets at the start of its rounds: fewest and most.
    pub time_wait_at_start: Option<(u64, u64)>,
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
            let time_wait = m.samples.iter().filter_map(|s| s.time_wait_at_start);
            let time_wait_at_start = time_wait.clone().min().zip(time_wait.max());
            SetupRow {
                name: m.name,
                sessions_per_s: (elapsed > 0.0).then(|| sessions as f64 / elapsed),
                vs_direct: None,
                latency: Percentiles::of(&mut latencies),
                failed: m.samples.iter().map(|s| s.failed).sum(),
                cpu_us_per_session: cpu
                    .filter(|_| sessions > 0)
                    .map(|c| c.as_secs_f64() * 1e6 / sessions as f64),
                time_wait_at_start,
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
            "TIME_WAIT at start",
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
                r.time_wait_at_start
                    .map_or_else(|| "—".to_string(), |(lo, hi)| format!("{lo}..{hi}")),
            ],
            r.error.as_deref(),
        );
    }
    t.note("latency = connect to first backend byte; CPU = proxy utime+stime / sessions".into());
    // Every target of this tool listens on 127.0.0.1, where `spread` applies.
    t.note(if cfg.source == Source::Spread {
        "worker i connects from 127.0.0.(2 + i), so its connects do not wait for its ports in \
         TIME_WAIT; a proxy's connects to the backend still come from one address"
            .to_string()
    } else {
        "every worker connects from 127.0.0.1: with ports toward one address held in TIME_WAIT, the \
         direct connection is limited by how fast the kernel lets them be reused, not by its CPU"
            .to_string()
    });
    t.note(time_wait_note());
    t
}

fn time_wait_note() -> String {
    let limit =
        procfs::max_time_wait_sockets().map_or_else(|| "unknown".to_string(), |n| n.to_string());
    format!(
        "TIME_WAIT at start = sockets in TIME_WAIT at the start of the target's rounds, fewest..most \
         (net.ipv4.tcp_max_tw_buckets {limit}: at the limit the kernel keeps no more, and ports free at once)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_gives_each_worker_its_own_loopback_address_and_single_none() {
        let target: SocketAddr = "127.0.0.1:25565".parse().unwrap();
        let spread: Vec<_> = (0..8)
            .map(|i| Source::Spread.of_worker(i, target))
            .collect();
        assert_eq!(spread[0], Some(IpAddr::from([127, 0, 0, 2])));
        assert_eq!(spread[7], Some(IpAddr::from([127, 0, 0, 9])));
        let distinct: std::collections::HashSet<_> = spread.iter().collect();
        assert_eq!(distinct.len(), 8);
        // Past 250 workers the addresses wrap around.
        assert_eq!(Source::Spread.of_worker(250, target), spread[0]);
        assert_eq!(Source::Single.of_worker(0, target), None);
        // Not loopback IPv4: connect as a client normally does.
        assert_eq!(
            Source::Spread.of_worker(0, "[::1]:25565".parse().unwrap()),
            None
        );
        assert_eq!(
            Source::Spread.of_worker(0, "10.0.0.1:25565".parse().unwrap()),
            None
        );
    }
}
