//! Backend connections that may lead back to the proxy itself.
//!
//! A server whose address is the proxy's own (`localhost:25565` behind a proxy on port 25565, a host name
//! or a container that resolves to it) makes every login dial the proxy again, which dials it again, until
//! connections or file descriptors run out. `Config::load` refuses the literal cases at startup, but not a
//! name that resolves to the proxy, a reloaded file or a Docker container. This catches all of them where
//! they happen: each backend connection to the proxy's port is remembered by its two ends while it is
//! open, and a client whose connection has those two ends (swapped) is one of them arriving.
//!
//! A TCP connection's two ends are unique on the host, so no other client can match: a local client that
//! happens to use the same source port towards the proxy has a different pair.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

/// The open backend connections to the proxy's port, by (local end, remote end).
#[derive(Debug)]
pub(crate) struct OwnDials {
    port: u16,
    open: Mutex<HashSet<(SocketAddr, SocketAddr)>>,
}

/// One backend connection in [`OwnDials`], until dropped. Its ends are boxed: a session holds the mark
/// (or its `None`) for its whole life, and a `None` costs two words instead of nine.
#[derive(Debug)]
pub(crate) struct OwnDial<'a> {
    dials: &'a OwnDials,
    ends: Box<(SocketAddr, SocketAddr)>,
}

/// `a` with an IPv4-mapped IPv6 address as plain IPv4: a dual-stack listener reports an IPv4 client so.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

impl OwnDials {
    /// For a proxy listening on `port`.
    pub(crate) fn new(port: u16) -> Self {
        OwnDials {
            port,
            open: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<(SocketAddr, SocketAddr)>> {
        // Each update is one call: a panic elsewhere cannot leave the set half-updated.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a backend connection to `remote` from its `local` end while the returned mark lives,
    /// when `remote` is on the proxy's port (only those can be the proxy; `local`, a `getsockname`, is
    /// asked only then). `local` gives `None` when the socket could not say: nothing is remembered.
    pub(crate) fn mark(
        &self,
        remote: SocketAddr,
        local: impl FnOnce() -> Option<SocketAddr>,
    ) -> Option<OwnDial<'_>> {
        if remote.port() != self.port {
            return None;
        }
        let ends = (canonical(local()?), canonical(remote));
        self.lock().insert(ends);
        Some(OwnDial {
            dials: self,
            ends: Box::new(ends),
        })
    }

    /// Whether a client connection from `peer` to `local` is one of the marked backend connections.
    ///
    /// Asked once the client's handshake is in: the dialling session marks its connection before it
    /// writes that handshake, so the mark is always there by then.
    pub(crate) fn is_own(&self, peer: SocketAddr, local: SocketAddr) -> bool {
        let ends = (canonical(peer), canonical(local));
        self.lock().contains(&ends)
    }
}

impl Drop for OwnDial<'_> {
    fn drop(&mut self) {
        self.dials.lock().remove(&*self.ends);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_marked_connection_is_known_from_its_other_end_until_dropped() {
        let dials = OwnDials::new(25565);
        let mark = dials.mark(addr("127.0.0.1:25565"), || Some(addr("127.0.0.1:40000")));
        assert!(mark.is_some());
        assert!(dials.is_own(addr("127.0.0.1:40000"), addr("127.0.0.1:25565")));
        // A dual-stack listener sees the same connection with mapped addresses.
        assert!(dials.is_own(
            addr("[::ffff:127.0.0.1]:40000"),
            addr("[::ffff:127.0.0.1]:25565")
        ));
        // The same source port towards another address is another connection.
        assert!(!dials.is_own(addr("127.0.0.1:40000"), addr("127.0.0.2:25565")));
        assert!(!dials.is_own(addr("127.0.0.1:40001"), addr("127.0.0.1:25565")));
        drop(mark);
        assert!(!dials.is_own(addr("127.0.0.1:40000"), addr("127.0.0.1:25565")));
    }

    #[test]
    fn no_mark_costs_two_words() {
        assert_eq!(
            std::mem::size_of::<Option<OwnDial<'_>>>(),
            2 * std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn only_connections_to_the_proxys_port_are_marked() {
        let dials = OwnDials::new(25565);
        let asked = std::cell::Cell::new(false);
        let other_port = dials.mark(addr("127.0.0.1:25566"), || {
            asked.set(true);
            Some(addr("127.0.0.1:40000"))
        });
        assert!(other_port.is_none());
        assert!(!asked.get(), "no getsockname for a backend on another port");
        assert!(dials.mark(addr("127.0.0.1:25565"), || None).is_none());
        assert!(dials.lock().is_empty());
    }
}
