//! Arbitrary bytes as the first bytes of a connection: `handshake::parse_opening` and `handshake::parse`.
//!
//! Checks: no panic; a complete parse never claims more bytes than it was given; every shorter prefix of a
//! complete handshake is `Incomplete` (never an error, never a different value); `Incomplete` is only
//! answered while the input is shorter than the documented bound; re-encoding a parsed handshake and
//! parsing it again gives the same fields, in no more bytes than the original (non-minimal VarInts make the
//! original longer; like vanilla, the excess bits of a 5th VarInt byte are ignored, so the same length does
//! not mean the same bytes); bytes after the frame never change the result; a rewrite of the host part
//! keeps the decoration; no verdict is premature, for `parse` and for `parse_opening`: every prefix of
//! the first 32 bytes and each of the 8 longest (unless the input is a complete handshake, whose
//! prefixes are checked above) is `Incomplete` or gives the whole input's answer — the
//! same error (an early one: a wrong packet id seen before the frame is whole, a bad length prefix), the
//! same handshake and length, or the same kind of legacy opening (which takes every byte given) — except
//! that a start of a PROXY header is named as one only as far as it matches (`PR` is, `PRX` is a wrong
//! packet id); so an error is never one that more bytes turn into `Ok` or another error (over all
//! inputs this is the law: the answer for a prefix is `Incomplete` or the answer for every longer
//! input); an error stays the same error with more bytes appended (the input again, then zeros up to
//! the end of the frame it announces).

#![no_main]

use libfuzzer_sys::fuzz_target;
use nethergate_core::handshake::{
    self, Handshake, HandshakeError, Opening, LEGACY_LOGIN, LEGACY_PING, MAX_HANDSHAKE_FRAME,
};
use nethergate_core::hostname::ServerAddress;
use nethergate_core::{codec, Parsed};

/// A VarInt length prefix of a frame up to the limit takes at most this many bytes.
const MAX_PREFIX: usize = 3;

/// Whether `data` opens like the 1.6 ping a 1.7+ client falls back to: `FE 01 FA`, "MC|PingHost" as a
/// legacy string (UTF-16 length, then UTF-16BE), the payload length (any), then protocol 127.
fn is_fallback(data: &[u8]) -> bool {
    let mut expected = vec![LEGACY_PING, 0x01, 0xFA, 0x00, 11];
    expected.extend("MC|PingHost".encode_utf16().flat_map(u16::to_be_bytes));
    data.starts_with(&expected)
        && data.get(expected.len() + 2) == Some(&handshake::FALLBACK_PROTOCOL)
}

fn check_handshake(buf: &[u8], hs: &Handshake<'_>, used: usize) {
    assert!(used <= buf.len(), "used {used} of {} bytes", buf.len());
    assert!(
        used <= MAX_HANDSHAKE_FRAME + MAX_PREFIX,
        "frame of {used} bytes accepted"
    );

    // Every prefix of a complete handshake is a valid prefix: the parser waits instead of failing.
    for cut in 0..used {
        assert_eq!(
            handshake::parse(&buf[..cut]),
            Ok(Parsed::Incomplete),
            "prefix of {cut} of {used} bytes"
        );
    }

    // Bytes after the frame (the login start, a status request) never change the handshake.
    let mut longer = buf[..used].to_vec();
    longer.extend_from_slice(&[0x00, 0xff, 0x10]);
    assert_eq!(handshake::parse(&longer), Ok(Parsed::Complete(*hs, used)));

    // Encode -> parse is the identity on fields.
    let mut encoded = Vec::new();
    hs.encode(&mut encoded);
    assert!(
        encoded.len() <= used,
        "re-encoded handshake is longer ({} > {used}): the encoder is not minimal",
        encoded.len()
    );
    assert_eq!(
        handshake::parse(&encoded),
        Ok(Parsed::Complete(*hs, encoded.len()))
    );

    // A rewrite of the host part keeps the decoration (what the session sends to a backend).
    let split = ServerAddress::split(hs.server_address);
    let rewritten = format!("backend.internal{}", split.decoration);
    let mut out = Vec::new();
    hs.encode_with_address(&rewritten, &mut out);
    // The rewrite may grow the frame past the client-side limit; only a frame within it must parse here.
    if out.len() <= MAX_HANDSHAKE_FRAME {
        match handshake::parse(&out) {
            Ok(Parsed::Complete(back, n)) => {
                assert_eq!(n, out.len());
                assert_eq!(back.protocol_version, hs.protocol_version);
                assert_eq!(back.port, hs.port);
                assert_eq!(back.next_state, hs.next_state);
                let back_split = ServerAddress::split(back.server_address);
                assert_eq!(back_split.host, "backend.internal");
                assert_eq!(back_split.decoration, split.decoration);
            }
            other => panic!("rewritten handshake does not parse: {other:?}"),
        }
    }
}

/// The prefixes checked against the whole input: every one of the first 32 bytes (the length prefix and
/// the packet id take at most 8, a 1.6 ping's header is decided by its 30th byte, a PROXY signature by
/// its 12th) and, unless the whole input is a complete handshake, the 8 longest.
///
/// All prefixes would cost a parse per byte for both parsers (each comparison traced by libFuzzer), on
/// inputs of up to 17 000 bytes, and the smoke run must stay short; a complete handshake's longer
/// prefixes each parse the whole frame, and `check_handshake` already covers them (every prefix shorter than the frame is `Incomplete`, bytes
/// after it change nothing). Nothing is lost over all inputs: the answer for an input one byte shorter
/// being `Incomplete` or the answer for the input is the whole law, by induction on the length.
fn prefix_cuts(len: usize, complete: bool) -> impl Iterator<Item = usize> {
    let tail = if complete { len } else { len.saturating_sub(8) };
    (0..len.min(32)).chain(tail.max(32)..len)
}

/// Every checked prefix of `data` is `Incomplete` or gives the answer for all of it.
fn check_prefix_verdicts(data: &[u8], whole: &Result<Parsed<Handshake<'_>>, HandshakeError>) {
    let complete = matches!(whole, Ok(Parsed::Complete(..)));
    for cut in prefix_cuts(data.len(), complete) {
        let early = handshake::parse(&data[..cut]);
        assert!(
            early == Ok(Parsed::Incomplete) || early == *whole,
            "answered {early:?} after {cut} of {} bytes, {whole:?} with all of them",
            data.len()
        );
    }
}

/// The same for `parse_opening`, whose legacy openings take every byte given, and whose PROXY header is
/// named only while the bytes match its signature.
fn check_prefix_openings(data: &[u8], whole: &Result<Parsed<Opening<'_>>, HandshakeError>) {
    let complete = matches!(whole, Ok(Parsed::Complete(Opening::Handshake(_), _)));
    for cut in prefix_cuts(data.len(), complete) {
        let early = handshake::parse_opening(&data[..cut]);
        let same = match (&early, whole) {
            (Ok(Parsed::Incomplete), _) => true,
            (
                Err(HandshakeError::ProxyHeader),
                Err(HandshakeError::ProxyHeader | HandshakeError::UnexpectedPacket { .. }),
            ) => true,
            (Ok(Parsed::Complete(Opening::Handshake(_), _)), _) | (Err(_), _) => early == *whole,
            (Ok(Parsed::Complete(kind, n)), Ok(Parsed::Complete(whole_kind, whole_n))) => {
                kind == whole_kind && *n == cut && *whole_n == data.len()
            }
            (Ok(Parsed::Complete(..)), _) => false,
        };
        assert!(
            same,
            "opening answered {early:?} after {cut} of {} bytes, {whole:?} with all of them",
            data.len()
        );
    }
}

/// `data` twice, then zeros up to the end of the frame its length prefix announces (within the frame
/// limit): more bytes, which complete a frame that had only begun.
fn with_more_bytes(data: &[u8], max_frame: usize) -> Vec<u8> {
    let announced_end = match codec::read_varint(data) {
        Ok(Parsed::Complete(len, n)) => n + usize::try_from(len).unwrap_or(0).min(max_frame),
        _ => 0,
    };
    let mut longer = data.repeat(2);
    longer.resize(longer.len().max(announced_end), 0);
    longer
}

fuzz_target!(|data: &[u8]| {
    let parsed = handshake::parse(data);
    check_prefix_verdicts(data, &parsed);
    if let Err(e) = &parsed {
        // More bytes do not take an error back.
        let longer = with_more_bytes(data, MAX_HANDSHAKE_FRAME);
        assert_eq!(
            handshake::parse(&longer).as_ref(),
            Err(e),
            "an error undone by more bytes"
        );
    }
    let opening = handshake::parse_opening(data);
    check_prefix_openings(data, &opening);
    match &parsed {
        Ok(Parsed::Complete(hs, used)) => check_handshake(data, hs, *used),
        Ok(Parsed::Incomplete) => assert!(
            data.len() < MAX_HANDSHAKE_FRAME + MAX_PREFIX,
            "still waiting after {} bytes",
            data.len()
        ),
        Err(e) => {
            // Errors display without panicking.
            let _ = e.to_string();
        }
    }

    match opening {
        Ok(Parsed::Complete(Opening::LegacyPing, used)) => {
            // Only the 1.6 form is certain from the bytes alone: FE 01 FA, and not a modern client's
            // fallback, nor a start of a 1.6 ping that may still become one.
            assert!(data.starts_with(&[LEGACY_PING, 0x01, 0xFA]));
            assert!(!is_fallback(data) && !handshake::is_legacy_prefix(data));
            assert_eq!(used, data.len());
        }
        Ok(Parsed::Complete(Opening::LegacyFallback, used)) => {
            assert!(is_fallback(data));
            assert_eq!(used, data.len());
        }
        Ok(Parsed::Complete(Opening::LegacyLogin, used)) => {
            // 0x02 would announce a 2-byte frame: too short for a handshake.
            assert_eq!(data.first(), Some(&LEGACY_LOGIN));
            assert_eq!(used, data.len());
            assert!(!matches!(parsed, Ok(Parsed::Complete(..))));
        }
        Ok(Parsed::Complete(Opening::Handshake(hs), used)) => {
            // 0xFE may start a modern frame of 254+ bytes.
            assert_eq!(parsed, Ok(Parsed::Complete(hs, used)));
        }
        Ok(Parsed::Incomplete) => {
            assert!(
                data.is_empty()
                    || handshake::is_legacy_prefix(data)
                    || parsed == Ok(Parsed::Incomplete)
            );
        }
        Err(HandshakeError::ProxyHeader) => {
            // Named for what it is; the modern parser saw a wrong packet id.
            assert!(matches!(
                parsed,
                Err(HandshakeError::UnexpectedPacket { .. })
            ));
            assert!(data.starts_with(b"PR") || data.starts_with(b"\r\n"));
        }
        Err(e) => {
            // An error is the modern parser's, whatever the first byte.
            assert_eq!(parsed, Err(e));
        }
    }
});
