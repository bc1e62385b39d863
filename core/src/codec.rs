//! The Minecraft wire primitives used before login completes: VarInt, strings and length-prefixed frames.
//!
//! Every reader takes a byte slice and returns [`Parsed::Complete`] (value and bytes used),
//! [`Parsed::Incomplete`] (the slice is a valid prefix, more bytes are needed) or a typed [`CodecError`].
//! Readers borrow from the input and never allocate.

use thiserror::Error;

/// A VarInt never takes more than this many bytes.
pub const VARINT_MAX_LEN: usize = 5;

/// A VarLong never takes more than this many bytes.
pub const VARLONG_MAX_LEN: usize = 10;

/// A frame's length prefix never takes more than this many bytes: vanilla reads frame lengths of at
/// most 21 bits and refuses a wider prefix, even one that spells a small number with padding bytes.
pub const FRAME_LENGTH_MAX_LEN: usize = 3;

/// Outcome of a parser that succeeded so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<T> {
    /// A whole value and the number of input bytes it used.
    Complete(T, usize),
    /// The input is a valid prefix; more bytes are needed.
    Incomplete,
}

impl<T> Parsed<T> {
    /// Applies `f` to a complete value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Parsed<U> {
        match self {
            Parsed::Complete(v, n) => Parsed::Complete(f(v), n),
            Parsed::Incomplete => Parsed::Incomplete,
        }
    }
}

/// Why bytes could not be read as a wire primitive.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// A VarInt or VarLong ran past its maximum width.
    #[error("VarInt longer than {max} bytes")]
    VarIntTooLong {
        /// The maximum width in bytes.
        max: usize,
    },
    /// A frame's length prefix ran past [`FRAME_LENGTH_MAX_LEN`] bytes.
    #[error(
        "frame length prefix longer than {FRAME_LENGTH_MAX_LEN} bytes (over 21 bits, or padded)"
    )]
    FrameLengthTooLong,
    /// A length prefix was negative.
    #[error("negative length {len}")]
    NegativeLength {
        /// The length as read.
        len: i32,
    },
    /// A frame announced more bytes than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame's length prefix says zero bytes: no room for a packet id.
    #[error("empty frame")]
    EmptyFrame,
    /// A string's byte length exceeded its limit.
    #[error("string of {len} bytes exceeds the limit of {max}")]
    StringTooLong {
        /// The announced byte length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string was not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A field ran past the end of its frame.
    #[error("field `{field}` runs past the end of its packet")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
}

/// Reads a VarInt.
pub fn read_varint(buf: &[u8]) -> Result<Parsed<i32>, CodecError> {
    // At most 5 bytes: bits past the 32nd are dropped, as the protocol's reference decoder does.
    Ok(read_var(buf, VARINT_MAX_LEN)?.map(|v| v as u32 as i32))
}

/// Reads a VarLong.
pub fn read_varlong(buf: &[u8]) -> Result<Parsed<i64>, CodecError> {
    Ok(read_var(buf, VARLONG_MAX_LEN)?.map(|v| v as i64))
}

/// Reads a little-endian base-128 number of at most `max` bytes (5 for a VarInt, 10 for a VarLong).
fn read_var(buf: &[u8], max: usize) -> Result<Parsed<u64>, CodecError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(max) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Parsed::Complete(value, i + 1));
        }
    }
    if buf.len() >= max {
        Err(CodecError::VarIntTooLong { max })
    } else {
        Ok(Parsed::Incomplete)
    }
}

/// Appends a VarInt.
pub fn write_varint(out: &mut Vec<u8>, value: i32) {
    write_var(out, u64::from(value as u32));
}

/// Appends a VarLong.
pub fn write_varlong(out: &mut Vec<u8>, value: i64) {
    write_var(out, value as u64);
}

/// Appends `v` in little-endian base 128.
fn write_var(out: &mut Vec<u8>, mut v: u64) {
    while v & !0x7f != 0 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The number of bytes `value` takes as a VarInt.
pub fn varint_len(value: i32) -> usize {
    let v = value as u32;
    match v {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0xfff_ffff => 4,
        _ => 5,
    }
}

/// Reads a length-prefixed UTF-8 string whose byte length is at most `max_bytes`.
///
/// A length larger than `max_bytes` is an error even before the bytes arrive.
pub fn read_string(buf: &[u8], max_bytes: usize) -> Result<Parsed<&str>, CodecError> {
    let (len, used) = match read_varint(buf)? {
        Parsed::Complete(len, used) => (len, used),
        Parsed::Incomplete => return Ok(Parsed::Incomplete),
    };
    let len = usize::try_from(len).map_err(|_| CodecError::NegativeLength { len })?;
    if len > max_bytes {
        return Err(CodecError::StringTooLong {
            len,
            max: max_bytes,
        });
    }
    let Some(bytes) = buf.get(used..used + len) else {
        return Ok(Parsed::Incomplete);
    };
    let s = std::str::from_utf8(bytes).map_err(|_| CodecError::InvalidUtf8)?;
    Ok(Parsed::Complete(s, used + len))
}

/// Appends a length-prefixed UTF-8 string.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    write_varint(out, s.len() as i32);
    out.extend_from_slice(s.as_bytes());
}

/// One uncompressed packet: its id and body, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The packet id.
    pub id: i32,
    /// The bytes after the packet id.
    pub body: &'a [u8],
}

/// The length of the frame at the start of `buf` (checked against `max_len`), and the bytes its prefix
/// takes (at most [`FRAME_LENGTH_MAX_LEN`]).
fn read_frame_length(buf: &[u8], max_len: usize) -> Result<Parsed<usize>, CodecError> {
    let prefix = read_var(buf, FRAME_LENGTH_MAX_LEN).map_err(|_| CodecError::FrameLengthTooLong)?;
    let (len, prefix) = match prefix {
        Parsed::Complete(len, used) => (len, used),
        Parsed::Incomplete => return Ok(Parsed::Incomplete),
    };
    // Three bytes hold 21 bits: never negative, always a usize.
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max_len {
        return Err(CodecError::FrameTooLarge { len, max: max_len });
    }
    if len == 0 {
        return Err(CodecError::EmptyFrame);
    }
    Ok(Parsed::Complete(len, prefix))
}

/// Reads one uncompressed frame (`VarInt length`, `VarInt id`, body) whose length is at most `max_len`.
///
/// A length over `max_len` is an error as soon as the prefix is read, so a hostile length is never waited for.
pub fn read_frame(buf: &[u8], max_len: usize) -> Result<Parsed<Frame<'_>>, CodecError> {
    let (len, prefix) = match read_frame_length(buf, max_len)? {
        Parsed::Complete(len, prefix) => (len, prefix),
        Parsed::Incomplete => return Ok(Parsed::Incomplete),
    };
    let Some(content) = buf.get(prefix..prefix + len) else {
        return Ok(Parsed::Incomplete);
    };
    let (id, id_len) = match read_varint(content)? {
        Parsed::Complete(id, used) => (id, used),
        Parsed::Incomplete => return Err(CodecError::Truncated { field: "packet id" }),
    };
    Ok(Parsed::Complete(
        Frame {
            id,
            body: &content[id_len..],
        },
        prefix + len,
    ))
}

/// The packet id of the frame at the start of `buf`, as soon as its bytes are in (the rest of the frame
/// may still be missing), with the bytes the length prefix and the id take. Errors are those of the length
/// prefix in [`read_frame`]; an id that is malformed or cut by the frame's end is `Incomplete` here, and
/// [`read_frame`] reports it once the frame is whole: call this only while [`read_frame`] says
/// `Incomplete`, to learn the id early.
pub fn read_frame_id(buf: &[u8], max_len: usize) -> Result<Parsed<i32>, CodecError> {
    let (len, prefix) = match read_frame_length(buf, max_len)? {
        Parsed::Complete(len, prefix) => (len, prefix),
        Parsed::Incomplete => return Ok(Parsed::Incomplete),
    };
    let end = buf.len().min(prefix + len);
    Ok(
        match read_varint(buf.get(prefix..end).unwrap_or_default()) {
            Ok(Parsed::Complete(id, used)) => Parsed::Complete(id, prefix + used),
            // A VarInt cut by the frame's end or malformed: read_frame reports it once the frame is whole.
            Ok(Parsed::Incomplete) | Err(_) => Parsed::Incomplete,
        },
    )
}

/// Appends a frame with the given id and body.
pub fn write_frame(out: &mut Vec<u8>, id: i32, body: &[u8]) {
    write_varint(out, (varint_len(id) + body.len()) as i32);
    write_varint(out, id);
    out.extend_from_slice(body);
}

/// A cursor over a complete packet body, for fields that must be present.
///
/// Running out of bytes inside a complete frame is an error ([`CodecError::Truncated`]), not a wait.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// The bytes not yet read.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Reads a VarInt.
    pub fn varint(&mut self, field: &'static str) -> Result<i32, CodecError> {
        match read_varint(self.rest())? {
            Parsed::Complete(v, n) => {
                self.pos += n;
                Ok(v)
            }
            Parsed::Incomplete => Err(CodecError::Truncated { field }),
        }
    }

    /// Reads a string of at most `max_bytes` bytes.
    pub fn string(&mut self, field: &'static str, max_bytes: usize) -> Result<&'a str, CodecError> {
        match read_string(self.rest(), max_bytes)? {
            Parsed::Complete(s, n) => {
                self.pos += n;
                Ok(s)
            }
            Parsed::Incomplete => Err(CodecError::Truncated { field }),
        }
    }

    /// Reads `n` raw bytes.
    pub fn bytes(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], CodecError> {
        let out = self
            .rest()
            .get(..n)
            .ok_or(CodecError::Truncated { field })?;
        self.pos += n;
        Ok(out)
    }

    /// Reads a big-endian u16.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, CodecError> {
        let b = self.bytes(field, 2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a big-endian i64.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, CodecError> {
        let b = self.bytes(field, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_known_values() {
        let cases: &[(i32, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (255, &[0xff, 0x01]),
            (25565, &[0xdd, 0xc7, 0x01]),
            (2_097_151, &[0xff, 0xff, 0x7f]),
            (i32::MAX, &[0xff, 0xff, 0xff, 0xff, 0x07]),
            (-1, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN, &[0x80, 0x80, 0x80, 0x80, 0x08]),
        ];
        for &(value, bytes) in cases {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            assert_eq!(out, bytes, "encoding {value}");
            assert_eq!(read_varint(bytes), Ok(Parsed::Complete(value, bytes.len())));
            assert_eq!(varint_len(value), bytes.len());
        }
    }

    #[test]
    fn six_byte_varint_is_an_error_not_a_wait() {
        assert_eq!(
            read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80]),
            Err(CodecError::VarIntTooLong { max: 5 })
        );
        assert_eq!(read_varint(&[0x80, 0x80]), Ok(Parsed::Incomplete));
        assert_eq!(read_varint(&[]), Ok(Parsed::Incomplete));
    }

    #[test]
    fn oversized_frame_is_rejected_from_its_prefix_alone() {
        // 0xff 0xff 0x7f = 2 MiB announced, no body yet.
        assert_eq!(
            read_frame(&[0xff, 0xff, 0x7f], 1024),
            Err(CodecError::FrameTooLarge {
                len: 2_097_151,
                max: 1024
            })
        );
    }

    #[test]
    fn frame_length_prefix_wider_than_three_bytes_is_an_error() {
        // 5 spelt in four bytes: a small length, but wider than vanilla reads.
        assert_eq!(
            read_frame(&[0x85, 0x80, 0x80, 0x00, 0x00], 1024),
            Err(CodecError::FrameLengthTooLong)
        );
        assert_eq!(
            read_frame_id(&[0x85, 0x80, 0x80], 1024),
            Err(CodecError::FrameLengthTooLong)
        );
        // Two padded bytes are still a valid prefix (vanilla reads them), and a cut prefix waits.
        assert_eq!(
            read_frame(&[0x82, 0x80, 0x00, 0x07, 0x09], 1024),
            Ok(Parsed::Complete(Frame { id: 7, body: &[9] }, 5))
        );
        assert_eq!(read_frame(&[0x85, 0x80], 1024), Ok(Parsed::Incomplete));
    }

    #[test]
    fn negative_string_length_is_an_error() {
        assert_eq!(
            read_string(&[0xff, 0xff, 0xff, 0xff, 0x0f], 10),
            Err(CodecError::NegativeLength { len: -1 })
        );
    }

    #[test]
    fn frame_with_truncated_id_is_an_error() {
        assert_eq!(
            read_frame(&[0x01, 0x80], 10),
            Err(CodecError::Truncated { field: "packet id" })
        );
        assert_eq!(read_frame(&[0x00], 10), Err(CodecError::EmptyFrame));
    }

    proptest! {
        #[test]
        fn varint_round_trips(v in any::<i32>()) {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            prop_assert_eq!(read_varint(&out), Ok(Parsed::Complete(v, out.len())));
            for cut in 0..out.len() {
                prop_assert_eq!(read_varint(&out[..cut]), Ok(Parsed::Incomplete));
            }
        }

        #[test]
        fn varlong_round_trips(v in any::<i64>()) {
            let mut out = Vec::new();
            write_varlong(&mut out, v);
            prop_assert_eq!(read_varlong(&out), Ok(Parsed::Complete(v, out.len())));
        }

        #[test]
        fn string_round_trips(s in ".{0,64}") {
            let mut out = Vec::new();
            write_string(&mut out, &s);
            prop_assert_eq!(read_string(&out, 1024), Ok(Parsed::Complete(s.as_str(), out.len())));
        }

        #[test]
        fn frame_round_trips(id in 0..0x200i32, body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            write_frame(&mut out, id, &body);
            prop_assert_eq!(read_frame(&out, 4096), Ok(Parsed::Complete(Frame { id, body: &body }, out.len())));
            for cut in 0..out.len() {
                prop_assert_eq!(read_frame(&out[..cut], 4096), Ok(Parsed::Incomplete));
            }
        }

        #[test]
        fn readers_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..100) {
            let _ = read_varint(&bytes);
            let _ = read_varlong(&bytes);
            let _ = read_string(&bytes, max);
            if let Ok(Parsed::Complete(_, used)) = read_frame(&bytes, max) {
                prop_assert!(used <= bytes.len());
            }
        }
    }
}
