//! Backend connections that may lead back to the proxy itself.
//!
//! A server whose address is the proxy's own (`localhost:25565` behind a proxy on port 25565, a host name
//! or a container that resolves to it) makes every login dial the proxy again, which dials it again, until
//! connections or file descriptors run out. `Config::load` refuses the literal cases at startup, but not a
//! name that resolves to the proxy, a reloaded file or a Docker container. This catches those where they
//! happen: each backend connection that can reach the proxy's own listener is remembered by its two ends
//! while it is open, and a client whose connection has those two ends (swapped) is one of them arriving.
//!
//! A TCP connection's two ends are unique on the host, so no other client can match: a local client that
//! happens to use the same source port towards the proxy has a different pair.
//!
//! Only a connection to the proxy's port on an address of this host can reach the listener: its own
//! address when it listens on one, else a loopback address or one whose local end has the same address
//! (for a destination on the host itself, the kernel takes the destination as the source). Backends
//! elsewhere on the same port (a Docker default) are not remembered: beside a proxy on every address
//! they cost two system calls (the socket's ends) and no lock, beside a proxy on one address nothing. A loop through address translation (a
//! published Docker port, a cloud address not on the interface, a port redirect, two proxies pointing
//! at each other) has other ends on each side and is not caught.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The open backend connections to the proxy's port, by (local end, remote end), each with the server it
/// was dialled for.
#[derive(Debug)]
pub(crate) struct OwnDials {
    /// The listener's address: with a specified IP, only that address reaches it.
    listener: SocketAddr,
    open: Mutex<HashMap<(SocketAddr, SocketAddr), Arc<str>>>,
    /// How many are in `open`: with none (nearly always), a client is checked without the lock.
    count: AtomicUsize,
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
    /// For a proxy listening on `listener`.
    pub(crate) fn new(listener: SocketAddr) -> Self {
        OwnDials {
            listener: canonical(listener),
            open: Mutex::default(),
            count: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(SocketAddr, SocketAddr), Arc<str>>> {
        // Each update is one call: a panic elsewhere cannot leave the set half-updated.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a backend connection dialled at `dialled` for `server` while the returned mark lives, when it can
    /// reach the proxy's listener: at the listener's own address, or, for a listener on every address,
    /// on its port at a loopback address or at the address of the connection's own local end. `ends`
    /// gives the socket's (local, remote) ends, asked only when the dial may reach the listener (two
    /// system calls; the remote end is not always what was dialled: `0.0.0.0` reaches 127.0.0.1), or
    /// `None` when the socket could not say: nothing is remembered.
    pub(crate) fn mark(
        &self,
        dialled: SocketAddr,
        server: &Arc<str>,
        ends: impl FnOnce() -> Option<(SocketAddr, SocketAddr)>,
    ) -> Option<OwnDial<'_>> {
        if dialled.port() != self.listener.port() {
            return None;
        }
        // A listener on one address: a dial to another specified address is its own remote end, and
        // not the listener's, without asking the socket.
        let one_address = !self.listener.ip().is_unspecified();
        if one_address && !dialled.ip().is_unspecified() && canonical(dialled) != self.listener {
            return None;
        }
        let (local, remote) = ends()?;
        let ends = (canonical(local), canonical(remote));
        let reaches = if one_address {
            ends.1 == self.listener // a backend on 127.0.0.1 beside a proxy on a public address is not it
        } else {
            // Every address of the host: loopback, or one the kernel dials from itself.
            ends.1.ip().is_loopback() || ends.0.ip() == ends.1.ip()
        };
        if !reaches {
            return None;
        }
        let mut open = self.lock();
        if open.insert(ends, Arc::clone(server)).is_none() {
            // Under the lock: the count is the set's size whenever the lock is free.
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Some(OwnDial {
            dials: self,
            ends: Box::new(ends),
        })
    }

    /// The server a client connection from `peer` to `local` was dialled for, when it is one of the marked
    /// backend connections (the server whose address leads back here).
    ///
    /// Asked once the client's handshake is in: the dialling session marks its connection before it
    /// writes that handshake, so the mark is always there by then.
    pub(crate) fn dialled_for(&self, peer: SocketAddr, local: SocketAddr) -> Option<Arc<str>> {
        // A mark is counted before its dial writes a byte, and so before its client can get here (the
        // socket write and read order them): seeing zero means no mark can match.
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let ends = (canonical(peer), canonical(local));
        self.lock().get(&ends).cloned()
    }
}

impl Drop for OwnDial<'_> {
    fn drop(&mut self) {
        let mut open = self.dials.lock();
        if open.remove(&*self.ends).is_some() {
            self.dials.count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A dial to `to` whose socket reports the ends `from` → `to`.
    fn dial<'a>(dials: &'a OwnDials, from: &str, to: &str) -> Option<OwnDial<'a>> {
        dials.mark(addr(to), &Arc::from("lobby"), || {
            Some((addr(from), addr(to)))
        })
    }

    #[test]
    fn a_marked_connection_is_known_from_its_other_end_until_dropped() {
        let dials = OwnDials::new(addr("0.0.0.0:25565"));
        let mark = dial(&dials, "127.0.0.1:40000", "127.0.0.1:25565");
        assert!(mark.is_some());
        assert_eq!(
            dials
                .dialled_for(addr("127.0.0.1:40000"), addr("127.0.0.1:25565"))
                .as_deref(),
            Some("lobby"),
            "known, with the server it was dialled for"
        );
        // A dual-stack listener sees the same connection with mapped addresses.
        assert!(dials
            .dialled_for(
                addr("[::ffff:127.0.0.1]:40000"),
                addr("[::ffff:127.0.0.1]:25565")
            )
            .is_some());
        // The same source port towards another address is another connection.
        assert!(dials
            .dialled_for(addr("127.0.0.1:40000"), addr("127.0.0.2:25565"))
            .is_none());
        assert!(dials
            .dialled_for(addr("127.0.0.1:40001"), addr("127.0.0.1:25565"))
            .is_none());
        drop(mark);
        assert!(dials
            .dialled_for(addr("127.0.0.1:40000"), addr("127.0.0.1:25565"))
            .is_none());
    }

    #[test]
    fn a_proxy_on_one_address_is_reached_only_there() {
        let dials = OwnDials::new(addr("203.0.113.5:25565"));
        // A Minecraft server on 127.0.0.1:25565 beside the proxy: not the proxy, no lock, no entry.
        let beside = dial(&dials, "127.0.0.1:40000", "127.0.0.1:25565");
        assert!(beside.is_none());
        let asked = std::cell::Cell::new(false);
        let beside = dials.mark(addr("127.0.0.1:25565"), &Arc::from("lobby"), || {
            asked.set(true);
            None
        });
        assert!(
            beside.is_none() && !asked.get(),
            "no system call for it either"
        );
        let own = dial(&dials, "203.0.113.5:40000", "203.0.113.5:25565");
        assert!(own.is_some());
        assert_eq!(dials.count.load(Ordering::Relaxed), 1);
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
        let dials = OwnDials::new(addr("0.0.0.0:25565"));
        let asked = std::cell::Cell::new(false);
        let other_port = dials.mark(addr("127.0.0.1:25566"), &Arc::from("lobby"), || {
            asked.set(true);
            Some((addr("127.0.0.1:40000"), addr("127.0.0.1:25566")))
        });
        assert!(other_port.is_none());
        assert!(!asked.get(), "no getsockname for a backend on another port");
        assert!(dials
            .mark(addr("127.0.0.1:25565"), &Arc::from("lobby"), || None)
            .is_none());
        // Another host on the same port (a backend container on 25565): not the proxy.
        let elsewhere = dial(&dials, "172.17.0.1:40000", "172.17.0.2:25565");
        assert!(elsewhere.is_none());
        assert!(dials.lock().is_empty());
        assert_eq!(dials.count.load(Ordering::Relaxed), 0);
        // Dialled at 0.0.0.0, which Linux takes for 127.0.0.1: the socket's own ends are kept.
        let own = dials.mark(addr("0.0.0.0:25565"), &Arc::from("lobby"), || {
            Some((addr("127.0.0.1:40001"), addr("127.0.0.1:25565")))
        });
        assert!(dials
            .dialled_for(addr("127.0.0.1:40001"), addr("127.0.0.1:25565"))
            .is_some());
        drop(own);
        // An address of this host, not loopback: the kernel dials it from itself.
        let own = dial(&dials, "10.0.0.5:40000", "10.0.0.5:25565");
        assert!(own.is_some());
        assert!(dials
            .dialled_for(addr("10.0.0.5:40000"), addr("10.0.0.5:25565"))
            .is_some());
        drop(own);
        assert_eq!(dials.count.load(Ordering::Relaxed), 0);
    }
}
