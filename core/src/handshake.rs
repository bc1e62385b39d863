//! The first packet of every modern connection, and detection of the pre-1.7 legacy ping.

use crate::codec::{self, CodecError, Parsed, Reader};
use thiserror::Error;

/// Largest handshake frame accepted (length prefix excluded).
///
/// Vanilla caps the address at 255 characters, but BungeeCord-style forwarded data (IP, UUID and the
/// signed skin properties) makes real handshakes a few KiB long; 16 KiB leaves room and still fits the
/// 3-byte length prefix the protocol allows.
pub const MAX_HANDSHAKE_FRAME: usize = 16 * 1024;

/// What the client wants after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextState {
    /// Server list ping (1).
    Status,
    /// Log in (2).
    Login,
    /// Log in after a transfer from another server (3, since 1.20.5); routed like a login.
    Transfer,
}

impl NextState {
    /// The wire value.
    pub fn to_wire(self) -> i32 {
        match self {
            NextState::Status => 1,
            NextState::Login => 2,
            NextState::Transfer => 3,
        }
    }

    /// Whether the connection goes on to log a player in.
    pub fn is_login(self) -> bool {
        !matches!(self, NextState::Status)
    }
}

/// A parsed Handshake packet (id 0x00), borrowing the address from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake<'a> {
    /// The client's protocol version number.
    pub protocol_version: i32,
    /// The server address as sent, decorations included.
    pub server_address: &'a str,
    /// The server port as sent.
    pub port: u16,
    /// What follows the handshake.
    pub next_state: NextState,
}

/// Why the first packet is not a valid handshake.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    /// The frame or a field is malformed.
    #[error("malformed handshake: {0}")]
    Codec(#[from] CodecError),
    /// The first packet is not the handshake.
    #[error("expected the handshake (packet 0x00), got packet {id:#04x}")]
    UnexpectedPacket {
        /// The packet id received.
        id: i32,
    },
    /// The connection opens with a PROXY protocol header (v1 `PROXY `, or the v2 signature), which a load
    /// balancer in front of the proxy adds: nethergate takes Minecraft clients, not PROXY headers.
    #[error(
        "a PROXY protocol header, not a Minecraft handshake: nethergate does not accept PROXY protocol \
         from whatever connects to it (turn it off in the load balancer in front, or let players connect \
         directly)"
    )]
    ProxyHeader,
    /// `next_state` is not 1, 2 or 3.
    #[error("unknown next state {0}")]
    UnknownNextState(i32),
    /// The frame has bytes after `next_state`.
    #[error("{extra} unexpected bytes after the handshake fields")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

/// How a connection opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening<'a> {
    /// A pre-1.7 server list ping (first byte 0xFE); not a VarInt-framed packet.
    LegacyPing,
    /// The 1.6 ping a 1.7+ client sends when its modern status ping got no answer (the server is down,
    /// starting, or closed the ping): `FE 01 FA` "MC|PingHost" with protocol 127. Its answer would be
    /// shown as the server's MOTD, marked incompatible, instead of "Can't connect to server".
    LegacyFallback,
    /// A pre-1.7 login (first byte 0x02); not a VarInt-framed packet.
    LegacyLogin,
    /// A modern handshake.
    Handshake(Handshake<'a>),
}

/// The first byte of a legacy (pre-1.7) server list ping.
pub const LEGACY_PING: u8 = 0xFE;

/// The first byte of a legacy (pre-1.7) login: the old protocol's handshake packet, 0x02.
pub const LEGACY_LOGIN: u8 = 0x02;

/// How a 1.6 ping opens, up to its protocol byte: `FE 01 FA`, then "MC|PingHost" as a legacy string (its
/// UTF-16 length, 11, and its UTF-16BE units), then the payload's length (2 bytes, any value).
#[rustfmt::skip]
const PING_HOST_HEADER: [u8; 27] = [
    LEGACY_PING, 0x01, 0xFA, 0x00, 0x0B, 0, b'M', 0, b'C', 0, b'|', 0, b'P', 0, b'i', 0, b'n', 0, b'g',
    0, b'H', 0, b'o', 0, b's', 0, b't',
];

/// The protocol byte of the 1.6 ping a 1.7+ client falls back to (vanilla's `LegacyServerPinger`); 1.6
/// clients and status tools send their own protocol, 73 to 78.
pub const FALLBACK_PROTOCOL: u8 = 127;

/// Where a 1.6 ping's protocol byte is: after the header and the payload length.
const PING_HOST_PROTOCOL_AT: usize = PING_HOST_HEADER.len() + 2;

/// Detects a legacy ping or parses the handshake frame at the start of `buf`.
///
/// 0xFE starts both a legacy ping and any modern handshake frame of 254, 382, 510... bytes (a long host or
/// forwarded data), so the bytes after it decide, as vanilla servers do: `FE 01 FA` is a 1.6 ping; `FE 01`
/// followed by the handshake's packet id 0x00, or `FE` followed by anything but `01`, is a modern frame.
/// `FE` and `FE 01` alone are what pre-1.6 clients send and then wait: they are [`Parsed::Incomplete`]
/// here, and [`is_legacy_prefix`] lets the caller answer them once no more bytes come. So is a 1.6 ping
/// until its protocol byte is in, which tells a 1.7+ client's fallback ([`Opening::LegacyFallback`]) from
/// an old client's ping (clients send the whole ping at once).
///
/// 0x02 is the first byte of every pre-1.7 login (1.3 to 1.6: protocol, name, host and port; before:
/// `name;host:port`). As a modern frame it would announce a 2-byte packet, too short for any handshake
/// (at least 6 bytes), so it is a legacy login from its first byte on.
pub fn parse_opening(buf: &[u8]) -> Result<Parsed<Opening<'_>>, HandshakeError> {
    match buf {
        // `FE`, `FE 01` and the start of a 1.6 ping wait for more.
        _ if buf.is_empty() || is_legacy_prefix(buf) => Ok(Parsed::Incomplete),
        [LEGACY_PING, 0x01, 0xFA, ..] => {
            let fallback = buf.starts_with(&PING_HOST_HEADER)
                && buf.get(PING_HOST_PROTOCOL_AT) == Some(&FALLBACK_PROTOCOL);
            let opening = if fallback {
                Opening::LegacyFallback
            } else {
                Opening::LegacyPing
            };
            Ok(Parsed::Complete(opening, buf.len()))
        }
        [LEGACY_LOGIN, ..] => Ok(Parsed::Complete(Opening::LegacyLogin, buf.len())),
        _ => match parse(buf) {
            // `PROXY ` is a frame of 80 bytes with id `R`, the v2 signature one of 13 with id `\n`.
            Err(HandshakeError::UnexpectedPacket { .. }) if is_proxy_header_start(buf) => {
                Err(HandshakeError::ProxyHeader)
            }
            parsed => Ok(parsed?.map(Opening::Handshake)),
        },
    }
}

/// Whether `buf` starts like a PROXY protocol header, as far as it goes.
fn is_proxy_header_start(buf: &[u8]) -> bool {
    [
        ppp::v1::PROTOCOL_PREFIX.as_bytes(),
        ppp::v2::PROTOCOL_PREFIX,
    ]
    .iter()
    .any(|sig| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    })
}

/// Whether `buf` is exactly what a pre-1.6 legacy pinger sends before waiting for the answer (`FE` or
/// `FE 01`), or the start of a 1.6 ping that stops before its protocol byte: a modern client sends the
/// rest of its handshake at once, and a 1.6 client its whole ping.
pub fn is_legacy_prefix(buf: &[u8]) -> bool {
    match buf {
        [LEGACY_PING] | [LEGACY_PING, 0x01] => true,
        [LEGACY_PING, 0x01, 0xFA, ..] if buf.len() < PING_HOST_PROTOCOL_AT + 1 => {
            let header = buf.len().min(PING_HOST_HEADER.len());
            buf[..header] == PING_HOST_HEADER[..header]
        }
        _ => false,
    }
}

/// A 1.6 ping (`FE 01 FA`, "MC|PingHost", the payload's length, then protocol, host and port), for tests.
#[cfg(test)]
pub(crate) fn ping_host(protocol: u8) -> Vec<u8> {
    use crate::response::write_legacy_string;
    let mut payload = vec![protocol];
    write_legacy_string(&mut payload, "mc.example.com");
    payload.extend(25565i32.to_be_bytes());
    let mut ping = vec![LEGACY_PING, 0x01, 0xFA];
    write_legacy_string(&mut ping, "MC|PingHost");
    ping.extend((payload.len() as u16).to_be_bytes());
    ping.extend(payload);
    ping
}

/// Parses a handshake frame at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed<Handshake<'_>>, HandshakeError> {
    let (frame, used) = match codec::read_frame(buf, MAX_HANDSHAKE_FRAME)? {
        Parsed::Complete(frame, used) => (frame, used),
        Parsed::Incomplete => {
            // The packet id is known before the frame is whole: an HTTP request (`GET ` is a 71-byte
            // frame of id 0x45), an SSH banner and the like are refused at once instead of being held
            // until the handshake timeout.
            return match codec::read_frame_id(buf, MAX_HANDSHAKE_FRAME)? {
                Parsed::Complete(id, _) if id != 0 => Err(HandshakeError::UnexpectedPacket { id }),
                _ => Ok(Parsed::Incomplete),
            };
        }
    };
    if frame.id != 0 {
        return Err(HandshakeError::UnexpectedPacket { id: frame.id });
    }
    let mut r = Reader::new(frame.body);
    let protocol_version = r.varint("protocol_version")?;
    let server_address = r.string("server_address", MAX_HANDSHAKE_FRAME)?;
    let port = r.u16("port")?;
    let next_state = match r.varint("next_state")? {
        1 => NextState::Status,
        2 => NextState::Login,
        3 => NextState::Transfer,
        other => return Err(HandshakeError::UnknownNextState(other)),
    };
    if !r.rest().is_empty() {
        return Err(HandshakeError::TrailingBytes {
            extra: r.rest().len(),
        });
    }
    Ok(Parsed::Complete(
        Handshake {
            protocol_version,
            server_address,
            port,
            next_state,
        },
        used,
    ))
}

impl Handshake<'_> {
    /// Appends this handshake as a frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_with_address(self.server_address, out);
    }

    /// Appends this handshake as a frame, with `server_address` in place of the original one.
    pub fn encode_with_address(&self, server_address: &str, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(server_address.len() + 16);
        codec::write_varint(&mut body, self.protocol_version);
        codec::write_string(&mut body, server_address);
        body.extend_from_slice(&self.port.to_be_bytes());
        codec::write_varint(&mut body, self.next_state.to_wire());
        codec::write_frame(out, 0, &body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn next_state() -> impl Strategy<Value = NextState> {
        prop_oneof![
            Just(NextState::Status),
            Just(NextState::Login),
            Just(NextState::Transfer)
        ]
    }

    #[test]
    fn legacy_ping_is_detected_before_framing() {
        assert_eq!(
            parse_opening(&[0xFE, 0x01, 0xFA, 0x00, 0x0C]),
            Ok(Parsed::Complete(Opening::LegacyPing, 5))
        );
        assert_eq!(parse_opening(&[]), Ok(Parsed::Incomplete));
        assert_eq!(parse_opening(&[0xFE]), Ok(Parsed::Incomplete));
        assert_eq!(parse_opening(&[0xFE, 0x01]), Ok(Parsed::Incomplete));
        assert!(is_legacy_prefix(&[0xFE, 0x01]));
        assert!(!is_legacy_prefix(&[0xFE, 0x01, 0x00]));
    }

    #[test]
    fn a_proxy_protocol_header_is_named() {
        let v2 = crate::proxy_protocol::header(
            crate::config::ProxyProtocolVersion::V2,
            "203.0.113.7:50000".parse().unwrap(),
            "192.0.2.1:25565".parse().unwrap(),
        );
        for header in [
            &b"PROXY TCP4 203.0.113.7 192.0.2.1 50000 25565\r\n"[..],
            &v2,
            b"PR",
        ] {
            assert_eq!(
                parse_opening(header),
                Err(HandshakeError::ProxyHeader),
                "{header:02x?}"
            );
        }
        // Another packet id stays what it was.
        assert_eq!(
            parse_opening(b"GET / HTTP/1.1\r\n"),
            Err(HandshakeError::UnexpectedPacket { id: 0x45 })
        );
    }

    #[test]
    fn a_modern_clients_legacy_fallback_is_told_from_an_old_clients_ping() {
        let fallback = ping_host(FALLBACK_PROTOCOL);
        assert_eq!(
            parse_opening(&fallback),
            Ok(Parsed::Complete(Opening::LegacyFallback, fallback.len()))
        );
        for protocol in [73, 74, 78] {
            let old = ping_host(protocol);
            assert_eq!(
                parse_opening(&old),
                Ok(Parsed::Complete(Opening::LegacyPing, old.len()))
            );
        }
        // Until the protocol byte is in, either may come: incomplete, and answered as a legacy ping if
        // nothing more arrives.
        for end in 3..=PING_HOST_PROTOCOL_AT {
            assert_eq!(
                parse_opening(&fallback[..end]),
                Ok(Parsed::Incomplete),
                "{end}"
            );
            assert!(is_legacy_prefix(&fallback[..end]), "{end}");
        }
        assert!(!is_legacy_prefix(&fallback[..=PING_HOST_PROTOCOL_AT]));
        // A 1.6 ping with another channel is an old client's ping, at once.
        let mut other = fallback.clone();
        other[6] = b'X';
        assert_eq!(
            parse_opening(&other[..8]),
            Ok(Parsed::Complete(Opening::LegacyPing, 8))
        );
    }

    #[test]
    fn legacy_login_is_detected_from_its_first_byte() {
        for bytes in [&[0x02][..], &[0x02, 78, 0x00, 0x05], &[0x02, 0x00, 0x2f]] {
            assert_eq!(
                parse_opening(bytes),
                Ok(Parsed::Complete(Opening::LegacyLogin, bytes.len()))
            );
        }
    }

    #[test]
    fn handshake_of_254_bytes_is_not_a_legacy_ping() {
        // A 254-byte frame's length VarInt is FE 01: a long host must still route.
        for host_len in [246, 246 + 128, 246 + 256] {
            let host = "a".repeat(host_len);
            let hs = Handshake {
                protocol_version: 765,
                server_address: &host,
                port: 25565,
                next_state: NextState::Login,
            };
            let mut out = Vec::new();
            hs.encode(&mut out);
            assert_eq!(out[0], 0xFE, "the frame length starts with 0xFE");
            assert_eq!(
                parse_opening(&out),
                Ok(Parsed::Complete(Opening::Handshake(hs), out.len()))
            );
        }
    }

    #[test]
    fn unknown_next_state_is_rejected() {
        let mut out = Vec::new();
        let mut body = Vec::new();
        codec::write_varint(&mut body, 47);
        codec::write_string(&mut body, "a");
        body.extend_from_slice(&25565u16.to_be_bytes());
        codec::write_varint(&mut body, 7);
        codec::write_frame(&mut out, 0, &body);
        assert_eq!(parse(&out), Err(HandshakeError::UnknownNextState(7)));
    }

    #[test]
    fn non_handshake_first_packet_is_rejected() {
        let mut out = Vec::new();
        codec::write_frame(&mut out, 0x01, &[0; 8]);
        assert_eq!(parse(&out), Err(HandshakeError::UnexpectedPacket { id: 1 }));
    }

    #[test]
    fn a_wrong_packet_id_is_refused_before_the_frame_is_whole() {
        for opening in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"POST /",
        ] {
            assert_eq!(
                parse_opening(opening),
                Err(HandshakeError::UnexpectedPacket {
                    id: i32::from(opening[1])
                }),
                "{opening:?}"
            );
        }
        // Id 0, whether encoded in one byte or (non-canonically) in two, waits for the rest.
        for partial in [
            &[0x10, 0x00][..],
            &[0x10, 0x80],
            &[0x10, 0x80, 0x00],
            &[0x10],
        ] {
            assert_eq!(parse(partial), Ok(Parsed::Incomplete), "{partial:?}");
        }
    }

    #[test]
    fn fields_past_the_frame_end_are_an_error() {
        // A frame of 3 bytes: id 0, protocol 47, then nothing: the address is missing.
        assert_eq!(
            parse(&[0x02, 0x00, 0x2f]),
            Err(HandshakeError::Codec(CodecError::Truncated {
                field: "server_address"
            }))
        );
    }

    proptest! {
        #[test]
        fn encode_then_parse_is_identity(
            protocol_version in any::<i32>(),
            server_address in "[a-zA-Z0-9.\\-\u{0}]{0,300}",
            port in any::<u16>(),
            next_state in next_state(),
        ) {
            let hs = Handshake { protocol_version, server_address: &server_address, port, next_state };
            let mut out = Vec::new();
            hs.encode(&mut out);
            prop_assert_eq!(parse(&out), Ok(Parsed::Complete(hs, out.len())));
            // No handshake frame starts like a legacy login.
            prop_assert_ne!(out[0], LEGACY_LOGIN);
            for cut in 0..out.len() {
                prop_assert_eq!(parse(&out[..cut]), Ok(Parsed::Incomplete));
            }
        }

        #[test]
        fn an_early_error_is_the_error_of_the_whole_frame(
            bytes in proptest::collection::vec(any::<u8>(), 1..300),
            cut in any::<prop::sample::Index>(),
        ) {
            // Whatever a prefix is refused for, the whole input is refused for too: deciding early never
            // turns a handshake away that would have parsed.
            let prefix = &bytes[..cut.index(bytes.len())];
            if let Err(early) = parse(prefix) {
                prop_assert_eq!(parse(&bytes), Err(early));
            }
        }

        #[test]
        fn parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            match parse_opening(&bytes) {
                Ok(Parsed::Complete(_, used)) => prop_assert!(used <= bytes.len()),
                Ok(Parsed::Incomplete) => prop_assert!(bytes.len() < MAX_HANDSHAKE_FRAME + 3),
                Err(_) => {}
            }
        }
    }
}
