//! The Login Start packet: the player name, with the version-dependent tail kept as raw bytes.

use crate::codec::{self, CodecError, Parsed, Reader};
use thiserror::Error;

/// Largest Login Start frame accepted (length prefix excluded).
///
/// 1.19–1.19.2 clients append signature data (a public key of up to 512 bytes and a signature of up to
/// 4096); 8 KiB covers every version with room to spare.
pub const MAX_LOGIN_START_FRAME: usize = 8 * 1024;

/// Vanilla limits player names to 16 characters.
pub const MAX_NAME_CHARS: usize = 16;

/// A parsed Login Start (serverbound, login state, id 0x00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginStart<'a> {
    /// The player name.
    pub name: &'a str,
    /// Everything after the name (signature data, UUID), forwarded untouched.
    pub tail: &'a [u8],
}

/// Why the second packet of a login is not a valid Login Start.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoginStartError {
    /// The frame or the name is malformed.
    #[error("malformed login start: {0}")]
    Codec(#[from] CodecError),
    /// The packet is not Login Start.
    #[error("expected login start (packet 0x00), got packet {id:#04x}")]
    UnexpectedPacket {
        /// The packet id received.
        id: i32,
    },
    /// The name has more than 16 characters.
    #[error("player name has {chars} characters, more than {max}")]
    NameTooLong {
        /// Characters in the name.
        chars: usize,
        /// The limit.
        max: usize,
    },
}

/// Parses a Login Start frame at the start of `buf`.
///
/// The layout after the name differs between versions; it is returned raw, so the protocol version is
/// not needed.
pub fn parse(buf: &[u8]) -> Result<Parsed<LoginStart<'_>>, LoginStartError> {
    let (frame, used) = match codec::read_frame(buf, MAX_LOGIN_START_FRAME)? {
        Parsed::Complete(frame, used) => (frame, used),
        Parsed::Incomplete => return Ok(Parsed::Incomplete),
    };
    if frame.id != 0 {
        return Err(LoginStartError::UnexpectedPacket { id: frame.id });
    }
    let mut r = Reader::new(frame.body);
    let name = r.string("name", MAX_NAME_CHARS * 4)?;
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(LoginStartError::NameTooLong {
            chars,
            max: MAX_NAME_CHARS,
        });
    }
    Ok(Parsed::Complete(
        LoginStart {
            name,
            tail: r.rest(),
        },
        used,
    ))
}

impl LoginStart<'_> {
    /// Appends this packet as a frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(self.name.len() + self.tail.len() + 1);
        codec::write_string(&mut body, self.name);
        body.extend_from_slice(self.tail);
        codec::write_frame(out, 0, &body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seventeen_character_name_is_rejected() {
        let mut out = Vec::new();
        LoginStart {
            name: "abcdefghijklmnopq",
            tail: &[],
        }
        .encode(&mut out);
        assert_eq!(
            parse(&out),
            Err(LoginStartError::NameTooLong { chars: 17, max: 16 })
        );
    }

    proptest! {
        #[test]
        fn encode_then_parse_is_identity(
            name in "[a-zA-Z0-9_]{0,16}",
            tail in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let ls = LoginStart { name: &name, tail: &tail };
            let mut out = Vec::new();
            ls.encode(&mut out);
            prop_assert_eq!(parse(&out), Ok(Parsed::Complete(ls, out.len())));
            for cut in 0..out.len() {
                prop_assert_eq!(parse(&out[..cut]), Ok(Parsed::Incomplete));
            }
        }

        #[test]
        fn parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(Parsed::Complete(ls, used)) = parse(&bytes) {
                prop_assert!(used <= bytes.len());
                prop_assert!(ls.name.chars().count() <= MAX_NAME_CHARS);
            }
        }
    }
}
