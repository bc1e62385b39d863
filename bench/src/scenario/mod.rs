//! The scenarios, and what they share: opening sessions and running every target in interleaved rounds.

pub mod bulk;
pub mod game;
pub mod idle;
pub mod setup;

use crate::procfs::CpuTimes;
use crate::target::{Env, Running, Target};
use crate::wire::{self, Mode, READY};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How long a session may take to open (connect, login, first backend byte) before it counts as failed.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How many sessions are opened at once when a scenario opens many.
pub const OPEN_CONCURRENCY: usize = 64;

/// Connects to `addr`, sends the handshake and login start for `mode`, and waits for the backend's first
/// byte.
pub async fn open(addr: SocketAddr, mode: Mode) -> io::Result<TcpStream> {
    open_from(None, addr, mode).await
}

/// [`open`] from a chosen local address, or the kernel's choice with `None`.
pub async fn open_from(
    from: Option<IpAddr>,
    addr: SocketAddr,
    mode: Mode,
) -> io::Result<TcpStream> {
    let open = async {
        let mut stream = match from {
            None => TcpStream::connect(addr).await?,
            Some(ip) => connect_from(ip, addr).await?,
        };
        stream.set_nodelay(true)?;
        stream
            .write_all(&wire::login_bytes(mode, addr.port()))
            .await?;
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await?;
        if first[0] != READY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("first backend byte is {:#04x}, not READY", first[0]),
            ));
        }
        Ok(stream)
    };
    tokio::time::timeout(OPEN_TIMEOUT, open)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "session did not open in time"))?
}

/// Connects from `ip`, its port chosen by `connect` for the whole four-tuple (`IP_BIND_ADDRESS_NO_PORT`),
/// as it is without a `bind`: a port is then shared by connections to different addresses, and a port
/// in TIME_WAIT toward this one can be reused.
async fn connect_from(ip: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    use std::os::fd::AsRawFd;
    let socket = if ip.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

/// Opens `n` sessions, [`OPEN_CONCURRENCY`] at a time, passing each through `then`. Returns the sessions
/// that opened and the first error of those that did not.
pub async fn open_many<F, Fut>(
    addr: SocketAddr,
    mode: Mode,
    n: usize,
    then: F,
) -> (Vec<TcpStream>, usize, Option<io::Error>)
where
    F: Fn(TcpStream) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = io::Result<TcpStream>> + Send,
{
    let permits = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let permits = Arc::clone(&permits);
        let then = then.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            then(open(addr, mode).await?).await
        });
    }
    let mut opened = Vec::with_capacity(n);
    let (mut failed, mut first_error) = (0, None);
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(io::Error::other).and_then(|r| r) {
            Ok(stream) => opened.push(stream),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    (opened, failed, first_error)
}

/// Reads a proxy's CPU time and memory; for the direct connection every reading is `None`.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    pid: Option<u32>,
}

impl Meter {
    /// The meter of a started target.
    pub fn of(running: &Running) -> Meter {
        Meter { pid: running.pid() }
    }

    /// CPU time used so far by the proxy's process tree.
    pub fn cpu_time(self) -> Option<Duration> {
        self.pid.map(crate::procfs::cpu_time)
    }

    /// Resident memory of the proxy's process tree in KiB.
    pub fn rss_kib(self) -> Option<u64> {
        self.pid.map(crate::procfs::rss_kib)
    }
}

/// CPU used between two readings.
pub fn cpu_between(before: Option<Duration>, after: Option<Duration>) -> Option<Duration> {
    Some(after?.saturating_sub(before?))
}

/// What one target gave over all rounds of one scenario case.
#[derive(Debug)]
pub struct Measured<S> {
    /// The target's name.
    pub name: String,
    /// One sample per round that succeeded.
    pub samples: Vec<S>,
    /// Why the target stopped being measured, if it did.
    pub error: Option<String>,
}

/// Runs one scenario case against every target.
pub struct Runner<'a> {
    /// Where proxies find the backend and put their files.
    pub env: &'a Env,
    /// The targets, direct first.
    pub targets: &'a [Target],
    /// How many rounds.
    pub rounds: usize,
    /// The load generator's runtime.
    pub rt: &'a tokio::runtime::Runtime,
}

impl Runner<'_> {
    /// Measures every target once per round, starting each proxy fresh for each measurement. The order of
    /// targets rotates from round to round so that no target always runs right after the same neighbour.
    /// A target that fails is reported and left out of later rounds.
    pub fn run<S, F, Fut>(
        &self,
        case: &str,
        include_direct: bool,
        mut measure: F,
    ) -> Vec<Measured<S>>
    where
        F: FnMut(SocketAddr, Meter) -> Fut,
        Fut: Future<Output = io::Result<S>>,
    {
        let targets: Vec<&Target> = self
            .targets
            .iter()
            .filter(|t| include_direct || !t.is_direct())
            .collect();
        let mut measured: Vec<Measured<S>> = targets
            .iter()
            .map(|t| Measured {
                name: t.name.clone(),
                samples: Vec::new(),
                error: None,
            })
            .collect();
        for round in 0..self.rounds {
            for k in 0..targets.len() {
                let i = (k + round) % targets.len();
                if measured[i].error.is_some() {
                    continue;
                }
                eprint!(
                    "  {case}: round {}/{} {:<22}",
                    round + 1,
                    self.rounds,
                    targets[i].name
                );
                let before = CpuTimes::now();
                let result = targets[i].start(self.env).and_then(|running| {
                    let sample = self.rt.block_on(measure(running.addr, Meter::of(&running)));
                    drop(running);
                    sample
                });
                match result {
                    Ok(sample) => {
                        match before
                            .zip(CpuTimes::now())
                            .and_then(|(b, a)| b.steal_percent_until(a))
                        {
                            Some(steal) => eprintln!(" done (steal {steal:.1} %)"),
                            None => eprintln!(" done"),
                        }
                        measured[i].samples.push(sample);
                    }
                    Err(e) => {
                        eprintln!(" FAILED: {e}");
                        measured[i].error = Some(e.to_string());
                    }
                }
                // Let the kernel finish closing the last round's sockets before the next one starts.
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        measured
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_from_uses_the_chosen_address_and_a_port_of_the_kernels_choice() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let from = IpAddr::from([127, 0, 0, 7]);
        let (client, accepted) = tokio::join!(connect_from(from, target), listener.accept());
        let (client, (_, peer)) = (client.unwrap(), accepted.unwrap());
        assert_eq!(client.local_addr().unwrap().ip(), from);
        assert_ne!(client.local_addr().unwrap().port(), 0);
        assert_eq!(peer, client.local_addr().unwrap());
    }
}
