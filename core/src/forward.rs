//! The rules of the bidirectional byte copy that every runtime follows, so that they end sessions for the
//! same reasons and size their buffers alike.
//!
//! Semantics: both directions run concurrently. When a direction reads EOF, the write half of the other
//! socket is shut down and the other direction drains; the session ends when both are done, or at the first
//! error or timeout. The end reason is the first thing that happened, except that an error, a shutdown or
//! a write limit after a half-close is the reason instead of that close ([`Ending`]).

use crate::registry::EndReason;
use std::io;

/// Size of a copy buffer. Buffers are borrowed from a per-thread pool only while data is in flight, so an
/// idle session holds none and the size can favour throughput.
///
/// 32 KiB measured best (bench, bulk A/B runs in one run, session 7): against 64 KiB, one saturated
/// duplex session moved about a third more at a quarter less CPU per byte, 32 sessions the same within
/// noise; 16 KiB was slower at both.
pub const COPY_BUFFER_SIZE: usize = 32 * 1024;

/// Bytes one direction may move before it yields, so a saturated direction cannot starve the other.
pub const FAIR_SHARE_BYTES: usize = 256 * 1024;

/// Most idle buffers a thread keeps in its pool.
pub const POOL_MAX_IDLE: usize = 16;

/// One side of a forwarding session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The player.
    Client,
    /// The Minecraft server.
    Backend,
}

/// How one direction (reading from `Side`) stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The read side sent EOF (or reset the connection) and everything read was written; or, on a write
    /// (see [`Ending::record_direction`]'s `on_write`), the write side reset or closed its read half.
    Eof,
    /// No bytes arrived within `timeouts.read`, or a write made no progress within `timeouts.write` (also
    /// the kernel's `ETIMEDOUT`, and a blocking socket's timeout surfacing as `WouldBlock`).
    Timeout,
    /// Another socket error.
    Error,
    /// The proxy is shutting down.
    Shutdown,
}

/// Classifies a socket error: a reset, an abort or a broken pipe is the peer leaving abruptly ([`Stop::Eof`]),
/// a timeout [`Stop::Timeout`], anything else an error. Which side it is blamed on is the caller's
/// ([`Ending::record_direction`]).
pub fn classify_error(err: &io::Error) -> Stop {
    match err.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => Stop::Eof,
        // A blocking socket's read/write timeout surfaces as WouldBlock on Unix; async drivers never pass it.
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Stop::Timeout,
        _ => Stop::Error,
    }
}

/// Records how the directions stopped and gives the session's end reason: the first close, unless an
/// error, a shutdown or a stuck write then ended the session.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ending {
    first: Option<EndReason>,
    /// Per side (client, backend): the direction reading it stopped at a write.
    stopped_on_write: [bool; 2],
}

impl Ending {
    /// Notes that the direction reading from `side` stopped (at a read, or for a reason of its own).
    ///
    /// The first close decides between `ClientClosed` and `BackendClosed`, and a read idle limit that runs
    /// out after it leaves it so (the side that closed first is what ended the conversation). An error
    /// or a shutdown after a half-close is what ended the session, and it is the reason.
    pub fn record(&mut self, side: Side, stop: Stop) {
        self.note(side, stop, matches!(stop, Stop::Error | Stop::Shutdown));
    }

    /// Notes how the direction reading from `reading` stopped; a stop while writing (`on_write`) is the
    /// other side's doing. A write limit that runs out is the reason even after a half-close: a client
    /// that closes its write half and then never reads ends with `Timeout`, not `ClientClosed`.
    pub fn record_direction(&mut self, reading: Side, on_write: bool, stop: Stop) {
        self.stopped_on_write[reading as usize] |= on_write;
        let side = match (reading, on_write) {
            (Side::Client, true) => Side::Backend,
            (Side::Backend, true) => Side::Client,
            (side, false) => side,
        };
        let overrides = match stop {
            Stop::Eof => false,
            Stop::Timeout => on_write,
            Stop::Error | Stop::Shutdown => true,
        };
        self.note(side, stop, overrides);
    }

    fn note(&mut self, side: Side, stop: Stop, overrides_a_close: bool) {
        let reason = match (stop, side) {
            (Stop::Eof, Side::Client) => EndReason::ClientClosed,
            (Stop::Eof, Side::Backend) => EndReason::BackendClosed,
            (Stop::Timeout, _) => EndReason::Timeout,
            (Stop::Error, _) => EndReason::Error,
            (Stop::Shutdown, _) => EndReason::Shutdown,
        };
        match self.first {
            Some(EndReason::ClientClosed | EndReason::BackendClosed) if overrides_a_close => {
                self.first = Some(reason);
            }
            _ => {
                self.first.get_or_insert(reason);
            }
        }
    }

    /// Whether the session must end now, without waiting for the other direction to drain: anything but a
    /// clean EOF ends it.
    pub fn ends_session(stop: Stop) -> bool {
        stop != Stop::Eof
    }

    /// The end reason (ClientClosed if nothing was recorded).
    pub fn reason(&self) -> EndReason {
        self.first.unwrap_or(EndReason::ClientClosed)
    }

    /// Whether `side` may still be sending when the session ends with a close: the direction reading it
    /// stopped because the other side could not be written any more, so what it sent since is unread.
    /// Closing its socket now would make the kernel answer with a reset that destroys what is still
    /// queued for it; shut down its write half and drain it until it closes instead. After an error, a
    /// timeout or a shutdown the session ends at once.
    pub fn drain_before_close(&self, side: Side) -> bool {
        let closed = matches!(
            self.reason(),
            EndReason::ClientClosed | EndReason::BackendClosed
        );
        closed && self.stopped_on_write[side as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_event_decides_the_reason() {
        let mut e = Ending::default();
        e.record(Side::Backend, Stop::Eof);
        e.record(Side::Client, Stop::Timeout);
        assert_eq!(e.reason(), EndReason::BackendClosed);
    }

    #[test]
    fn what_ends_a_half_closed_session_is_its_reason() {
        // (how the remaining direction stopped, on a write, the reason)
        for (stop, on_write, reason) in [
            (Stop::Timeout, true, EndReason::Timeout),
            (Stop::Timeout, false, EndReason::ClientClosed),
            (Stop::Error, false, EndReason::Error),
            (Stop::Error, true, EndReason::Error),
            (Stop::Shutdown, false, EndReason::Shutdown),
            (Stop::Eof, false, EndReason::ClientClosed),
            (Stop::Eof, true, EndReason::ClientClosed),
        ] {
            let mut e = Ending::default();
            e.record(Side::Client, Stop::Eof);
            e.record_direction(Side::Backend, on_write, stop);
            assert_eq!(e.reason(), reason, "{stop:?} on_write {on_write}");
        }
        let mut e = Ending::default();
        e.record(Side::Backend, Stop::Eof);
        e.record(Side::Client, Stop::Shutdown);
        assert_eq!(e.reason(), EndReason::Shutdown);
        // The first of two session-ending stops stays (only one can happen: the first ends the copy).
        let mut e = Ending::default();
        e.record(Side::Client, Stop::Timeout);
        e.record(Side::Client, Stop::Shutdown);
        assert_eq!(e.reason(), EndReason::Timeout);
    }

    #[test]
    fn a_failed_write_is_blamed_on_the_written_side() {
        let mut e = Ending::default();
        e.record_direction(Side::Client, true, Stop::Eof);
        assert_eq!(e.reason(), EndReason::BackendClosed);
    }

    #[test]
    fn only_a_side_left_unread_by_a_close_is_drained() {
        // The backend could not be written (it reset) while the client sent; the backend's EOF followed.
        let mut e = Ending::default();
        e.record_direction(Side::Client, true, Stop::Eof);
        e.record_direction(Side::Backend, false, Stop::Eof);
        assert!(e.drain_before_close(Side::Client));
        assert!(!e.drain_before_close(Side::Backend));
        // Both read to the end: nothing is unread.
        let mut e = Ending::default();
        e.record_direction(Side::Client, false, Stop::Eof);
        e.record_direction(Side::Backend, false, Stop::Eof);
        assert!(!e.drain_before_close(Side::Client) && !e.drain_before_close(Side::Backend));
        // A stuck write ends the session at once.
        let mut e = Ending::default();
        e.record_direction(Side::Backend, true, Stop::Timeout);
        assert!(!e.drain_before_close(Side::Backend));
    }

    #[test]
    fn reset_counts_as_the_peer_closing() {
        let err = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(classify_error(&err), Stop::Eof);
        assert_eq!(classify_error(&io::Error::other("x")), Stop::Error);
        assert!(!Ending::ends_session(Stop::Eof));
        assert!(Ending::ends_session(Stop::Timeout));
    }
}
