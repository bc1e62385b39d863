//! Arbitrary bytes as a Login Start frame: `login::parse`.
//!
//! Input: 4 bytes of protocol version (big endian; the parser does not need it, but the session sees it
//! next to the frame, so the checks that compose both use it), then the frame bytes.
//!
//! Checks: no panic; a complete parse never claims more bytes than given; the name is at most 16
//! characters; every shorter prefix is `Incomplete`; `Incomplete` only below the documented bound;
//! encode -> parse is the identity; a handshake followed by this frame parses back to both; no verdict
//! is premature: the first prefix not answered `Incomplete` (scanning from the empty one) already gives
//! the whole input's answer, the same error or the same login start and length, so an error is never one
//! that more bytes turn into `Ok` or into another error, and `Incomplete` for the whole input means
//! `Incomplete` for every prefix (over all inputs: the answer for a prefix is `Incomplete` or the answer
//! for every longer input); an error stays the same error with more bytes appended (the input again,
//! then zeros up to the end of the frame it announces).

#![no_main]

use libfuzzer_sys::fuzz_target;
use nethergate_core::handshake::{self, Handshake};
use nethergate_core::login::{
    self, LoginStart, LoginStartError, MAX_LOGIN_START_FRAME, MAX_NAME_CHARS,
};
use nethergate_core::{codec, NextState, Parsed};

/// A VarInt length prefix of a frame up to the limit takes at most this many bytes.
const MAX_PREFIX: usize = 3;

fn check_login(buf: &[u8], protocol_version: i32, ls: &LoginStart<'_>, used: usize) {
    assert!(used <= buf.len(), "used {used} of {} bytes", buf.len());
    assert!(used <= MAX_LOGIN_START_FRAME + MAX_PREFIX);
    assert!(
        ls.name.chars().count() <= MAX_NAME_CHARS,
        "name {:?}",
        ls.name
    );

    for cut in 0..used {
        assert_eq!(
            login::parse(&buf[..cut]),
            Ok(Parsed::Incomplete),
            "prefix of {cut} of {used} bytes"
        );
    }

    let mut encoded = Vec::new();
    ls.encode(&mut encoded);
    assert!(
        encoded.len() <= used,
        "re-encoding is longer than the original"
    );
    assert_eq!(
        login::parse(&encoded),
        Ok(Parsed::Complete(*ls, encoded.len()))
    );

    // What a session sees: handshake (login) then this login start, then whatever follows.
    let hs = Handshake {
        protocol_version,
        server_address: "mc.example.com",
        port: 25565,
        next_state: NextState::Login,
    };
    let mut stream = Vec::new();
    hs.encode(&mut stream);
    let hs_len = stream.len();
    stream.extend_from_slice(buf);
    assert_eq!(handshake::parse(&stream), Ok(Parsed::Complete(hs, hs_len)));
    assert_eq!(
        login::parse(&stream[hs_len..]),
        Ok(Parsed::Complete(*ls, used))
    );
}

/// The first prefix of `buf` that is not `Incomplete` decides: it gives the answer for all of `buf`.
///
/// Scanning stops at that prefix; the prefixes before it are `Incomplete` in constant time, so the scan
/// is linear. A longer prefix that answered otherwise is another input of the fuzzer, whose scan stops
/// at the same first verdict: over all inputs, this checks every pair of a prefix and a longer input.
fn check_first_verdict(buf: &[u8], whole: &Result<Parsed<LoginStart<'_>>, LoginStartError>) {
    for cut in 0..buf.len() {
        let early = login::parse(&buf[..cut]);
        if early != Ok(Parsed::Incomplete) {
            assert_eq!(
                &early,
                whole,
                "answered after {cut} of {} bytes, otherwise with all of them",
                buf.len()
            );
            return;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let protocol_version = i32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let buf = &data[4..];
    let whole = login::parse(buf);
    check_first_verdict(buf, &whole);
    match whole {
        Ok(Parsed::Complete(ls, used)) => check_login(buf, protocol_version, &ls, used),
        Ok(Parsed::Incomplete) => assert!(
            buf.len() < MAX_LOGIN_START_FRAME + MAX_PREFIX,
            "still waiting after {} bytes",
            buf.len()
        ),
        Err(e) => {
            let _ = e.to_string();
            // More bytes do not take an error back: the input again, then zeros up to the end of the
            // frame its length prefix announces (which complete a frame that had only begun).
            let announced_end = match codec::read_varint(buf) {
                Ok(Parsed::Complete(len, n)) => {
                    n + usize::try_from(len).unwrap_or(0).min(MAX_LOGIN_START_FRAME)
                }
                _ => 0,
            };
            let mut longer = buf.repeat(2);
            longer.resize(longer.len().max(announced_end), 0);
            assert_eq!(
                login::parse(&longer),
                Err(e),
                "an error undone by more bytes"
            );
        }
    }
});
