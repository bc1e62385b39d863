//! What the load generator and the backend say to each other.
//!
//! Every session opens like a Minecraft login: a handshake (next state 2) for [`HOST`] and a login start
//! whose player name is the [`Mode`] the backend should serve. After reading both, the backend sends one
//! [`READY`] byte (the "first backend byte" of the setup scenario), then serves the mode:
//!
//! - [`Mode::Echo`]: messages framed as a big-endian `u16` length and that many bytes; each whole message is
//!   written back as soon as it has arrived;
//! - [`Mode::Bulk`]: write as fast as possible and discard everything read, both at once.

use nethergate_core::handshake::Handshake;
use nethergate_core::login::LoginStart;
use nethergate_core::NextState;

/// The host every session asks for; the proxies under test route it to the backend.
pub const HOST: &str = "bench.local";

/// The byte the backend sends once it has read the login start.
pub const READY: u8 = 0x01;

/// Size of a message's length prefix.
pub const LEN_PREFIX: usize = 2;

/// What the backend does after the login start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Echo length-prefixed messages whole.
    Echo,
    /// Stream both ways as fast as possible.
    Bulk,
}

impl Mode {
    /// The player name that asks for this mode.
    pub fn player_name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Bulk => "bulk",
        }
    }

    /// The mode a player name asks for.
    pub fn from_player_name(name: &str) -> Option<Mode> {
        match name {
            "echo" => Some(Mode::Echo),
            "bulk" => Some(Mode::Bulk),
            _ => None,
        }
    }
}

/// The handshake (1.20.4, login) and login start a client sends first.
pub fn login_bytes(mode: Mode, port: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    Handshake {
        protocol_version: 765,
        server_address: HOST,
        port,
        next_state: NextState::Login,
    }
    .encode(&mut out);
    let uuid = [0x5au8; 16];
    LoginStart {
        name: mode.player_name(),
        tail: &uuid,
    }
    .encode(&mut out);
    out
}

/// Fills `out` with one echo message of `size` bytes in total (prefix included, at least 14): the prefix, the
/// send time in nanoseconds and a sequence number, then padding.
pub fn encode_message(out: &mut Vec<u8>, size: usize, sent_nanos: u64, seq: u32) {
    let size = size.clamp(LEN_PREFIX + 12, LEN_PREFIX + usize::from(u16::MAX));
    out.clear();
    out.extend_from_slice(&((size - LEN_PREFIX) as u16).to_be_bytes());
    out.extend_from_slice(&sent_nanos.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.resize(size, 0xa5);
}

/// The body of the first whole message in `buf` and the bytes it takes, prefix included; `None` until all
/// of it has arrived.
pub fn split_message(buf: &[u8]) -> Option<(&[u8], usize)> {
    let prefix = buf.get(..LEN_PREFIX)?;
    let end = LEN_PREFIX + usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    Some((buf.get(LEN_PREFIX..end)?, end))
}

/// The send time and sequence number in a message body (the bytes after the prefix).
pub fn decode_message(body: &[u8]) -> Option<(u64, u32)> {
    let nanos = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    let seq = u32::from_be_bytes(body.get(8..12)?.try_into().ok()?);
    Some((nanos, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nethergate_core::{handshake, login, Parsed};

    #[test]
    fn login_bytes_parse_as_handshake_then_login_start() {
        let bytes = login_bytes(Mode::Bulk, 25565);
        let Ok(Parsed::Complete(hs, used)) = handshake::parse(&bytes) else {
            panic!("no handshake")
        };
        assert_eq!(hs.server_address, HOST);
        assert_eq!(hs.next_state, NextState::Login);
        let Ok(Parsed::Complete(ls, rest)) = login::parse(&bytes[used..]) else {
            panic!("no login start")
        };
        assert_eq!(Mode::from_player_name(ls.name), Some(Mode::Bulk));
        assert_eq!(used + rest, bytes.len());
    }

    #[test]
    fn message_round_trips_with_its_size() {
        let mut buf = Vec::new();
        encode_message(&mut buf, 77, 123_456_789, 42);
        assert_eq!(buf.len(), 77);
        assert_eq!(usize::from(u16::from_be_bytes([buf[0], buf[1]])), 75);
        assert_eq!(decode_message(&buf[2..]), Some((123_456_789, 42)));
        assert_eq!(split_message(&buf[..76]), None);
        buf.push(7);
        assert_eq!(split_message(&buf), Some((&buf[2..77], 77)));
    }
}
