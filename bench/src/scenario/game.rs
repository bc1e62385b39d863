//! Game traffic: many sessions, each sending small messages at a fixed rate while the backend echoes them.
//!
//! Every session sends one message (a random size between the configured bounds, length-prefixed) every
//! `1 / rate` seconds for the measured duration, starting at a random phase so the load is spread evenly.
//! The backend writes each whole message back, so both directions carry `rate` messages per second. The
//! client stamps each message with its send time and measures the round trip when the echo arrives. After
//! the last send, sessions wait up to [`DRAIN`] for outstanding echoes; any still missing are lost.
//!
//! Proxy CPU is read from `/proc` at the first and last send; "per message" divides it by every message
//! sent and echoed (each direction counts once).

use super::{cpu_between, open_many, Measured, Meter};
use crate::report::{fmt_f, fmt_opt, fmt_signed, Table};
use crate::stats::{nanos, Percentiles};
use crate::wire::{self, Mode};
use serde::Serialize;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};

/// How long sessions wait for echoes after the last send.
pub const DRAIN: Duration = Duration::from_secs(2);

/// One game case.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GameConfig {
    /// Concurrent sessions.
    pub sessions: usize,
    /// Measured time per round.
    #[serde(serialize_with = "crate::report::secs")]
    pub duration: Duration,
    /// Messages per second per direction per session.
    pub rate_hz: u32,
    /// Smallest message in bytes, length prefix included.
    pub min_size: usize,
    /// Largest message in bytes, length prefix included.
    pub max_size: usize,
}

/// One round against one target.
#[derive(Debug)]
pub struct GameSample {
    rtts: Vec<u64>,
    sent: u64,
    received: u64,
    cpu: Option<Duration>,
}

/// Runs one round.
pub async fn measure(addr: SocketAddr, meter: Meter, cfg: GameConfig) -> io::Result<GameSample> {
    let (streams, failed, error) =
        open_many(addr, Mode::Echo, cfg.sessions, |s| async { Ok(s) }).await;
    if let Some(e) = error {
        return Err(io::Error::new(
            e.kind(),
            format!("{failed} of {} sessions did not open: {e}", cfg.sessions),
        ));
    }
    let base = Instant::now();
    let start = base + Duration::from_millis(200);
    let end = start + cfg.duration;
    let period = Duration::from_secs(1) / cfg.rate_hz.max(1);
    let mut tasks = Vec::with_capacity(streams.len());
    for (i, stream) in streams.into_iter().enumerate() {
        let mut rng = fastrand::Rng::with_seed(i as u64);
        let phase = period.mul_f64(rng.f64());
        let first = start + phase;
        tasks.push(tokio::spawn(session(
            stream, base, first, end, period, cfg, rng,
        )));
    }
    tokio::time::sleep_until(start).await;
    let cpu_before = meter.cpu_time();
    tokio::time::sleep_until(end).await;
    let cpu = cpu_between(cpu_before, meter.cpu_time());
    let mut sample = GameSample {
        rtts: Vec::with_capacity(cfg.sessions * (cfg.duration.as_secs() as usize + 1) * 20),
        sent: 0,
        received: 0,
        cpu,
    };
    for task in tasks {
        let (sent, rtts) = task.await.map_err(io::Error::other)?;
        sample.sent += sent;
        sample.received += rtts.len() as u64;
        sample.rtts.extend(rtts);
    }
    Ok(sample)
}

/// One session: sends until `end`, reads echoes until all came back or [`DRAIN`] ran out. Returns the
/// number sent and the round trips (nanoseconds) of those that came back.
///
/// One loop does both: a message is written whole when its tick comes (a small write to a socket with room
/// completes at once), and reading a TcpStream and ticking are cancel-safe, so `select!` loses nothing.
async fn session(
    mut stream: TcpStream,
    base: Instant,
    first: Instant,
    end: Instant,
    period: Duration,
    cfg: GameConfig,
    mut rng: fastrand::Rng,
) -> (u64, Vec<u64>) {
    let mut ticks = tokio::time::interval_at(first, period);
    // Keep the rate: a late tick is made up for, not skipped.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let drain = tokio::time::sleep_until(end + DRAIN);
    tokio::pin!(drain);
    let mut rtts =
        Vec::with_capacity((cfg.duration.as_secs_f64() * f64::from(cfg.rate_hz)) as usize + 8);
    let (mut msg, mut pending) = (Vec::with_capacity(cfg.max_size), Vec::with_capacity(4096));
    let mut chunk = vec![0u8; 16 * 1024];
    let (mut sent, mut sending) = (0u64, true);
    while sending || (rtts.len() as u64) < sent {
        tokio::select! {
            at = ticks.tick(), if sending => {
                if at >= end {
                    sending = false;
                    continue;
                }
                let size = rng.usize(cfg.min_size..=cfg.max_size);
                wire::encode_message(&mut msg, size, nanos(base.elapsed()), sent as u32);
                if stream.write_all(&msg).await.is_err() {
                    break;
                }
                sent += 1;
            }
            read = stream.read(&mut chunk) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let now = nanos(base.elapsed());
                pending.extend_from_slice(&chunk[..n]);
                let mut at = 0;
                while let Some((body, used)) = wire::split_message(&pending[at..]) {
                    if let Some((sent_nanos, _seq)) = wire::decode_message(body) {
                        rtts.push(now.saturating_sub(sent_nanos));
                    }
                    at += used;
                }
                pending.drain(..at);
            }
            () = &mut drain, if !sending => break,
        }
    }
    (sent, rtts)
}

/// One target's figures over all rounds.
#[derive(Debug, Serialize)]
pub struct GameRow {
    /// The target.
    pub name: String,
    /// Round trip percentiles over all rounds.
    pub rtt: Option<Percentiles>,
    /// Round trip added over the direct connection (p50, p99, p99.9), in µs.
    pub added_us: Option<[f64; 3]>,
    /// Messages sent by the clients.
    pub sent: u64,
    /// Messages whose echo never came back.
    pub lost: u64,
    /// Proxy CPU per message (each direction counts), in µs.
    pub cpu_us_per_msg: Option<f64>,
    /// Why the target was not (fully) measured.
    pub error: Option<String>,
}

/// Summarises every target; the direct connection must be first.
pub fn summarise(measured: Vec<Measured<GameSample>>) -> Vec<GameRow> {
    let mut rows: Vec<GameRow> = measured
        .into_iter()
        .map(|m| {
            let mut rtts: Vec<u64> = m
                .samples
                .iter()
                .flat_map(|s| s.rtts.iter().copied())
                .collect();
            let sent: u64 = m.samples.iter().map(|s| s.sent).sum();
            let received: u64 = m.samples.iter().map(|s| s.received).sum();
            let cpu: Option<Duration> = m.samples.iter().map(|s| s.cpu).sum();
            GameRow {
                name: m.name,
                rtt: Percentiles::of(&mut rtts),
                added_us: None,
                sent,
                lost: sent - received.min(sent),
                cpu_us_per_msg: cpu
                    .filter(|_| sent + received > 0)
                    .map(|c| c.as_secs_f64() * 1e6 / (sent + received) as f64),
                error: m.error,
            }
        })
        .collect();
    let direct = rows.first().and_then(|r| r.rtt);
    for row in rows.iter_mut().skip(1) {
        if let (Some(d), Some(p)) = (direct, row.rtt) {
            row.added_us = Some([
                p.p50_us - d.p50_us,
                p.p99_us - d.p99_us,
                p.p999_us - d.p999_us,
            ]);
        }
    }
    rows
}

/// The table of one case.
pub fn table(cfg: &GameConfig, rows: &[GameRow]) -> Table {
    let mut t = Table::new(
        format!(
            "game: {} sessions × {} msg/s each way, {}–{} B, {:?} per round",
            cfg.sessions, cfg.rate_hz, cfg.min_size, cfg.max_size, cfg.duration
        ),
        &[
            "target",
            "RTT p50 µs",
            "p99 µs",
            "p99.9 µs",
            "added p50",
            "added p99",
            "added p99.9",
            "msgs",
            "lost",
            "CPU µs/msg",
        ],
    );
    for r in rows {
        let p = |f: fn(&Percentiles) -> f64| fmt_opt(r.rtt.as_ref().map(f), 0);
        let added = |i: usize| {
            r.added_us
                .map_or_else(|| "—".into(), |a| fmt_signed(a[i], 0))
        };
        t.row(
            vec![
                r.name.clone(),
                p(|p| p.p50_us),
                p(|p| p.p99_us),
                p(|p| p.p999_us),
                added(0),
                added(1),
                added(2),
                r.sent.to_string(),
                r.lost.to_string(),
                fmt_opt(r.cpu_us_per_msg, 2),
            ],
            r.error.as_deref(),
        );
    }
    t.note(format!(
        "added = this target's percentile minus direct's; CPU = proxy utime+stime over the sending window / (sent + echoed); {}",
        fmt_f(cfg.duration.as_secs_f64(), 0) + " s rounds"
    ));
    t
}
