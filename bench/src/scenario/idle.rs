//! Idle memory: how much a proxy's resident memory grows per session that holds still.
//!
//! The proxy is started fresh and its RSS read; then the sessions are opened (connect, handshake, login
//! start, first backend byte, one small message each way) and left idle. After [`SETTLE`], RSS is read
//! again: the growth divided by the sessions held is the cost of an idle session.

use super::{open_many, Measured, Meter};
use crate::report::{fmt_opt, Table};
use crate::wire::{self, Mode};
use serde::Serialize;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long sessions sit idle before RSS is read.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Size of the one message each session sends and gets back.
const MESSAGE: usize = 64;

/// The idle case.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IdleConfig {
    /// Sessions to hold.
    pub sessions: usize,
}

/// One round against one proxy.
#[derive(Debug)]
pub struct IdleSample {
    held: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    first_error: Option<String>,
}

/// Runs one round.
pub async fn measure(addr: SocketAddr, meter: Meter, cfg: IdleConfig) -> io::Result<IdleSample> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = meter
        .rss_kib()
        .ok_or_else(|| io::Error::other("idle memory needs a proxy process"))?;
    let (streams, _failed, error) = open_many(addr, Mode::Echo, cfg.sessions, exchange_one).await;
    tokio::time::sleep(SETTLE).await;
    let after = meter.rss_kib().unwrap_or(0);
    let sample = IdleSample {
        held: streams.len(),
        rss_before_kib: before,
        rss_after_kib: after,
        first_error: error.map(|e| e.to_string()),
    };
    drop(streams);
    Ok(sample)
}

/// Sends one small message and reads its echo.
async fn exchange_one(mut stream: TcpStream) -> io::Result<TcpStream> {
    let mut msg = Vec::with_capacity(MESSAGE);
    wire::encode_message(&mut msg, MESSAGE, 0, 0);
    stream.write_all(&msg).await?;
    let mut echo = vec![0u8; MESSAGE];
    tokio::time::timeout(super::OPEN_TIMEOUT, stream.read_exact(&mut echo))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no echo in time"))??;
    Ok(stream)
}

/// One proxy's figures: the round with the median growth per session.
#[derive(Debug, Serialize)]
pub struct IdleRow {
    /// The target.
    pub name: String,
    /// Sessions asked for.
    pub requested: usize,
    /// Sessions that opened and were held.
    pub held: usize,
    /// RSS before the sessions, KiB.
    pub rss_before_kib: Option<u64>,
    /// RSS with every session idle, KiB.
    pub rss_after_kib: Option<u64>,
    /// Growth per held session, KiB.
    pub kib_per_session: Option<f64>,
    /// Why sessions failed, or the target was not measured.
    pub error: Option<String>,
}

/// Summarises every proxy.
pub fn summarise(cfg: &IdleConfig, measured: Vec<Measured<IdleSample>>) -> Vec<IdleRow> {
    measured
        .into_iter()
        .map(|m| {
            let per_session = |s: &IdleSample| {
                (s.held > 0).then(|| {
                    s.rss_after_kib.saturating_sub(s.rss_before_kib) as f64 / s.held as f64
                })
            };
            let mut samples = m.samples;
            samples.sort_by(|a, b| {
                per_session(a)
                    .unwrap_or(f64::MAX)
                    .total_cmp(&per_session(b).unwrap_or(f64::MAX))
            });
            let median = samples.get(samples.len() / 2);
            IdleRow {
                name: m.name,
                requested: cfg.sessions,
                held: median.map_or(0, |s| s.held),
                rss_before_kib: median.map(|s| s.rss_before_kib),
                rss_after_kib: median.map(|s| s.rss_after_kib),
                kib_per_session: median.and_then(per_session),
                error: m
                    .error
                    .or_else(|| median.and_then(|s| s.first_error.clone())),
            }
        })
        .collect()
}

/// The table.
pub fn table(cfg: &IdleConfig, rows: &[IdleRow]) -> Table {
    let mut t = Table::new(
        format!(
            "idle: {} sessions held idle after one small message each way",
            cfg.sessions
        ),
        &[
            "target",
            "held",
            "RSS before KiB",
            "RSS after KiB",
            "KiB/session",
        ],
    );
    for r in rows {
        t.row(
            vec![
                r.name.clone(),
                r.held.to_string(),
                fmt_opt(r.rss_before_kib.map(|v| v as f64), 0),
                fmt_opt(r.rss_after_kib.map(|v| v as f64), 0),
                fmt_opt(r.kib_per_session, 2),
            ],
            r.error.as_deref(),
        );
    }
    t.note("KiB/session = (RSS after − RSS before) / held, VmRSS of the proxy's process tree; median round".into());
    t
}
