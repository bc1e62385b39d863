//! The player-session registry and per-server admission: plain shared data, no IO.
//!
//! Admission for `max_players` is a compare-and-swap on a per-server counter, so concurrent logins can
//! never overshoot; the counter is keyed by server name and outlives configuration reloads while anyone
//! holds a slot on it ([`Registry::forget_idle_servers`]).

use crate::config::ProxyMode;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why a forwarding session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The client closed its side first.
    ClientClosed,
    /// The backend closed its side first.
    BackendClosed,
    /// A read idle limit or a write limit ran out.
    Timeout,
    /// A socket error.
    Error,
    /// The proxy shut down.
    Shutdown,
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One live session as the registry shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Registry-unique id.
    pub id: u64,
    /// The player name, when the client logged in.
    pub player: Option<String>,
    /// The server it was routed to.
    pub server: Arc<str>,
    /// The client's address.
    pub client: SocketAddr,
    /// The backend's address.
    pub backend: SocketAddr,
    /// Whether packets can be injected into the session; always false for forwarding modes, which
    /// never decrypt or parse game traffic.
    pub active: bool,
    /// How the bytes are copied.
    pub mode: ProxyMode,
    /// When forwarding started.
    pub started: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<u64, Arc<SessionInfo>>,
    players: HashMap<String, Arc<AtomicU32>>,
}

/// Live sessions and player counts, shared by every connection.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
}

/// A player slot on a server, released when dropped.
#[derive(Debug)]
pub struct Admission {
    count: Arc<AtomicU32>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the session-end log line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndReport {
    /// Bytes written to the backend: the opening as sent (a PROXY header and a rewritten handshake
    /// included), then what was copied from the client.
    pub c2b: u64,
    /// Bytes copied from backend to client.
    pub b2c: u64,
    /// Why it ended.
    pub reason: EndReason,
    /// How long it was forwarding.
    pub duration: Duration,
}

impl fmt::Display for EndReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session ended c2b={} b2c={} reason={}",
            self.c2b, self.b2c, self.reason
        )
    }
}

/// A socket address for a log line: the same text as its `Display`, an IPv4 address written in one piece
/// (std's `Display` formats each of its five numbers through the formatting machinery, which was a
/// sixth of the session-end line's cost).
pub(crate) struct LoggedAddr(pub(crate) SocketAddr);

impl fmt::Display for LoggedAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SocketAddr::V4(v4) = self.0 else {
            return self.0.fmt(f);
        };
        if f.width().is_some() || f.precision().is_some() {
            return self.0.fmt(f); // padding: std's own
        }
        let mut text = [0u8; 21]; // 255.255.255.255:65535
        let mut len = 0;
        let mut digits = itoa::Buffer::new();
        let [a, b, c, d] = v4.ip().octets();
        let numbers = [a, b, c, d].map(u16::from).into_iter().chain([v4.port()]);
        for (i, n) in numbers.enumerate() {
            if i > 0 {
                text[len] = if i == 4 { b':' } else { b'.' };
                len += 1;
            }
            let part = digits.format(n).as_bytes();
            text[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
        // Digits, dots and a colon: ASCII.
        f.write_str(std::str::from_utf8(&text[..len]).unwrap_or_default())
    }
}

/// A session's entry in the registry, removed when dropped; [`LiveSession::finish`] logs the end line.
#[derive(Debug)]
pub struct LiveSession {
    registry: Arc<Registry>,
    /// Shared with the registry's map: registering copies no string.
    info: Arc<SessionInfo>,
    _admission: Option<Admission>,
}

impl LiveSession {
    /// The registry entry.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// Ends the session: unregisters it, releases its player slot and logs
    /// `session ended c2b=<n> b2c=<n> reason=<Reason>` with player, server, client, backend and duration.
    pub fn finish(self, c2b: u64, b2c: u64, reason: EndReason, now: Instant) -> EndReport {
        let report = EndReport {
            c2b,
            b2c,
            reason,
            duration: now.saturating_duration_since(self.info.started),
        };
        // Fields in this order make the human format read `session ended c2b=… b2c=… reason=… player=…`.
        tracing::info!(
            c2b,
            b2c,
            reason = %reason,
            player = self.info.player.as_deref().unwrap_or("-"),
            // A `&str`, quoted and escaped as `player` is: a server name with a space cannot forge fields.
            server = &*self.info.server,
            client = %LoggedAddr(self.info.client),
            backend = %LoggedAddr(self.info.backend),
            duration_ms = report.duration.as_millis() as u64,
            "session ended"
        );
        report
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.registry.lock().sessions.remove(&self.info.id);
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated (each update is one call).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a player slot on `server` if fewer than `max` are taken (`max` = 0: unlimited).
    pub fn admit(&self, server: &str, max: u32) -> Option<Admission> {
        let count = {
            let mut inner = self.lock();
            match inner.players.get(server) {
                Some(c) => Arc::clone(c),
                None => {
                    let c = Arc::new(AtomicU32::new(0));
                    inner.players.insert(server.to_owned(), Arc::clone(&c));
                    c
                }
            }
        };
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Admission { count })
    }

    /// Forgets the player counters of servers no one holds a slot on or is being admitted to, so that
    /// servers that come and go (reloads, Docker containers) do not leave a counter each behind. Call
    /// when the servers change; a server that comes back starts a new counter at zero, which is what the
    /// forgotten one held.
    pub fn forget_idle_servers(&self) {
        // Every clone of a counter is made under this lock (`admit`) and held by a slot or an admission
        // in progress: a counter with no clone but the map's is not in use, and none can be taken now.
        self.lock()
            .players
            .retain(|_, count| Arc::strong_count(count) > 1);
    }

    /// Players holding a slot on `server`.
    pub fn players_on(&self, server: &str) -> u32 {
        self.lock()
            .players
            .get(server)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Registers a session that starts forwarding; it stays listed until the returned value is dropped.
    pub fn register(
        self: &Arc<Self>,
        mut info: SessionInfo,
        admission: Option<Admission>,
    ) -> LiveSession {
        info.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(info);
        self.lock().sessions.insert(info.id, Arc::clone(&info));
        LiveSession {
            registry: Arc::clone(self),
            info,
            _admission: admission,
        }
    }

    /// A snapshot of the live sessions.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .lock()
            .sessions
            .values()
            .map(|s| SessionInfo::clone(s))
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The log line's address is std's text, for every IPv4 and IPv6 address and port, padded or not.
        #[test]
        fn a_logged_address_reads_as_std_writes_it(ip in any::<std::net::IpAddr>(), port in any::<u16>()) {
            let addr = SocketAddr::new(ip, port);
            prop_assert_eq!(LoggedAddr(addr).to_string(), addr.to_string());
            prop_assert_eq!(format!("{:>30}", LoggedAddr(addr)), format!("{addr:>30}"));
        }
    }

    #[test]
    fn a_logged_address_has_every_digit() {
        for (addr, text) in [
            ("0.0.0.0:0", "0.0.0.0:0"),
            ("255.255.255.255:65535", "255.255.255.255:65535"),
            ("10.200.3.40:25565", "10.200.3.40:25565"),
            ("[::1]:80", "[::1]:80"),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(LoggedAddr(addr).to_string(), text);
        }
    }

    fn info() -> SessionInfo {
        SessionInfo {
            id: 0,
            player: Some("Steve".into()),
            server: "lobby".into(),
            client: "127.0.0.1:5000".parse().unwrap(),
            backend: "127.0.0.1:25566".parse().unwrap(),
            active: false,
            mode: ProxyMode::Passthrough,
            started: Instant::now(),
        }
    }

    #[test]
    fn admission_never_overshoots_under_contention() {
        let registry = Registry::new();
        let admitted: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| s.spawn(|| registry.admit("lobby", 5)))
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok().flatten())
                .collect()
        });
        assert_eq!(admitted.len(), 5);
        assert_eq!(registry.players_on("lobby"), 5);
        drop(admitted);
        assert_eq!(registry.players_on("lobby"), 0);
        assert!(registry.admit("lobby", 5).is_some());
    }

    #[test]
    fn idle_servers_counters_are_forgotten_and_busy_ones_kept() {
        let registry = Registry::new();
        let slot = registry.admit("lobby", 2);
        drop(registry.admit("gone", 2));
        registry.forget_idle_servers();
        assert_eq!(
            registry.lock().players.keys().collect::<Vec<_>>(),
            ["lobby"]
        );
        assert_eq!(registry.players_on("lobby"), 1);
        // The kept counter still counts the slot taken before.
        let second = registry.admit("lobby", 2);
        assert!(second.is_some());
        assert!(registry.admit("lobby", 2).is_none());
        drop((slot, second));
        registry.forget_idle_servers();
        assert!(registry.lock().players.is_empty());
        assert!(registry.admit("lobby", 2).is_some());
    }

    #[test]
    fn zero_max_players_is_unlimited() {
        let registry = Registry::new();
        let slots: Vec<_> = (0..1000).filter_map(|_| registry.admit("x", 0)).collect();
        assert_eq!(slots.len(), 1000);
    }

    #[test]
    fn finished_session_leaves_the_registry_and_frees_its_slot() {
        let registry = Registry::new();
        let slot = registry.admit("lobby", 1);
        let live = registry.register(info(), slot);
        assert_eq!(registry.len(), 1);
        assert!(!registry.sessions()[0].active);
        assert!(registry.admit("lobby", 1).is_none());
        let report = live.finish(10, 20, EndReason::ClientClosed, Instant::now());
        assert_eq!(
            report.to_string(),
            "session ended c2b=10 b2c=20 reason=ClientClosed"
        );
        assert!(registry.is_empty());
        assert!(registry.admit("lobby", 1).is_some());
    }
}
