//! Hostile clients and hostile backends against both runtimes (see the `hostile!` invocation at the end).
//!
//! Every attack checks what an admin cares about: the proxy answers or closes within its documented limits
//! (`handshake_timeout`, `timeouts.read`, `timeouts.write`), says why in its log, loses and reorders no byte,
//! and gives everything back afterwards: no live connection task, no registry entry, no player slot.
//!
//! Tests marked `#[ignore = "bug: ..."]` pin bugs found by this suite; they fail until the bug is fixed.

use nethergate_core::codec::{self, Parsed};
use nethergate_core::{Config, NextState, Plugins};
use nethergate_driver::Running;
use nethergate_e2e::*;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------------------
// A proxy we can inspect: the harness's flavours, started through the runtime crates so the test sees the
// control handle (live connection tasks, not only forwarding sessions).

trait Rt: Flavor {
    /// The binary of this runtime.
    const BIN: &'static str;
    fn spawn(config: Config) -> io::Result<Running>;
}

impl Rt for Tokio {
    const BIN: &'static str = "nethergate";
    fn spawn(config: Config) -> io::Result<Running> {
        nethergate_tokio::spawn(config, Plugins::new())
    }
}

impl Rt for Smol {
    const BIN: &'static str = "nethergate-smol";
    fn spawn(config: Config) -> io::Result<Running> {
        nethergate_smol::spawn(config, Plugins::new())
    }
}

struct Px {
    run: Running,
    _layout: Layout,
}

impl Px {
    fn start<F: Rt>(layout: Layout) -> Px {
        capture_logs();
        let run = F::spawn(layout.load()).expect("proxy starts");
        Px {
            run,
            _layout: layout,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.run.addr()
    }

    /// Connection tasks alive (handshaking, forwarding or lingering).
    fn tasks(&self) -> usize {
        self.run.handle().connections()
    }

    fn sessions(&self) -> usize {
        self.run.handle().registry().len()
    }

    fn players_on(&self, server: &str) -> u32 {
        self.run.handle().registry().players_on(server)
    }

    /// Waits until nothing is left: no connection task, no registry entry.
    fn settles(&self, within: Duration) -> bool {
        wait_until(within, || self.tasks() == 0 && self.sessions() == 0)
    }

    /// Panics with the proxy's state unless it settles within `within`.
    fn assert_settles(&self, rt: &str, within: Duration) {
        assert!(
            self.settles(within),
            "[{rt}] leak: {} connection task(s), {} session(s) still live after {within:?}",
            self.tasks(),
            self.sessions()
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Raw wire bytes, including invalid ones.

fn varint(v: i32) -> Vec<u8> {
    let mut out = Vec::new();
    codec::write_varint(&mut out, v);
    out
}

fn frame(id: i32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    codec::write_frame(&mut out, id, body);
    out
}

fn raw_string(bytes: &[u8]) -> Vec<u8> {
    [varint(bytes.len() as i32), bytes.to_vec()].concat()
}

fn raw_handshake(protocol: i32, host: &[u8], port: u16, next_state: i32) -> Vec<u8> {
    let body = [
        varint(protocol),
        raw_string(host),
        port.to_be_bytes().to_vec(),
        varint(next_state),
    ]
    .concat();
    frame(0, &body)
}

fn raw_login(name: &[u8]) -> Vec<u8> {
    frame(0, &[raw_string(name), vec![0xAB; 16]].concat())
}

fn status_request() -> Vec<u8> {
    frame(0, &[])
}

fn ping(payload: u64) -> Vec<u8> {
    frame(1, &payload.to_be_bytes())
}

/// Splits bytes received from the proxy into (id, body) packets; `None` when they are not whole frames.
fn packets(mut bytes: &[u8]) -> Option<Vec<(i32, Vec<u8>)>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        match codec::read_frame(bytes, 1 << 20) {
            Ok(Parsed::Complete(f, used)) => {
                out.push((f.id, f.body.to_vec()));
                bytes = &bytes[used..];
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The text of a Login Disconnect packet.
fn disconnect_text(bytes: &[u8]) -> Option<String> {
    let p = packets(bytes)?;
    let [(0, body)] = p.as_slice() else {
        return None;
    };
    let Ok(Parsed::Complete(json, _)) = codec::read_string(body, usize::MAX) else {
        return None;
    };
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v["text"].as_str().map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------------------
// Client-side observation.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The proxy closed (FIN).
    Eof,
    /// The proxy reset the connection.
    Reset,
    /// Still open when we stopped watching.
    Open,
}

#[derive(Debug)]
struct Seen {
    bytes: Vec<u8>,
    end: End,
    after: Duration,
}

/// Reads everything the proxy sends until it closes, or `within` passes.
fn watch(s: &mut TcpStream, within: Duration) -> Seen {
    let start = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = within.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Seen {
                bytes,
                end: End::Open,
                after: start.elapsed(),
            };
        }
        let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        let end = match s.read(&mut buf) {
            Ok(0) => End::Eof,
            Ok(n) => {
                bytes.extend_from_slice(&buf[..n]);
                continue;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => End::Reset,
        };
        return Seen {
            bytes,
            end,
            after: start.elapsed(),
        };
    }
}

/// Sends `bytes` on a new connection and watches what happens.
fn attack(proxy: SocketAddr, bytes: &[u8], within: Duration) -> (Seen, Tag) {
    let (mut s, tag) = connect_tagged(proxy);
    s.write_all(bytes).expect("send");
    (watch(&mut s, within), tag)
}

/// A client connection as the proxy's log names it, and how long the log was before it connected: log
/// lines are matched only after that point, since a client port can be reused by a later connection (to
/// another proxy of another test).
#[derive(Debug, Clone, Copy)]
struct Tag {
    port: u16,
    mark: usize,
}

fn log_mark() -> usize {
    captured_logs().len()
}

fn tag(s: &TcpStream, mark: usize) -> Tag {
    Tag {
        port: s.local_addr().expect("local addr").port(),
        mark,
    }
}

/// Connects like [`connect`], and tags the connection for [`log_about`].
fn connect_tagged(proxy: SocketAddr) -> (TcpStream, Tag) {
    let mark = log_mark();
    let s = connect(proxy);
    let t = tag(&s, mark);
    (s, t)
}

/// Closes `s` with a TCP reset (SO_LINGER 0), as a crashed client or a middlebox does.
fn reset(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// A receive buffer that a flood fills at once, for clients that are not to read yet.
const SMALL_RECEIVE_BUFFER: libc::c_int = 4096;

/// Sets `SO_RCVBUF`. A receive buffer far under loopback's 64 KiB segment size never opens a window the
/// sender may use at once, so what is queued for it arrives only with the sender's persist probes, slowly:
/// a client that is to read everything afterwards needs a few segments' worth.
fn receive_buffer(s: &TcpStream, size: libc::c_int) {
    // SAFETY: setsockopt on a socket we own, with an int option.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The log line about the tagged client containing every needle, logged after it connected.
fn log_about(tag: Tag, needles: &[&str], within: Duration) -> Option<String> {
    log_line(tag, |l| needles.iter().all(|n| l.contains(n)), within)
}

/// The line that ends the tagged connection's story: its session ended, or it was closed before forwarding.
/// Connections are accepted in order, so once the last one of a burst has it, the proxy saw the whole burst.
fn final_line(tag: Tag, within: Duration) -> Option<String> {
    log_line(
        tag,
        |l| l.contains("session ended") || l.contains("connection closed before forwarding"),
        within,
    )
}

fn log_line(tag: Tag, matches: impl Fn(&str) -> bool, within: Duration) -> Option<String> {
    let client = format!("client=127.0.0.1:{} ", tag.port);
    let deadline = Instant::now() + within;
    loop {
        let logs = captured_logs();
        let found = logs.get(tag.mark..).and_then(|recent| {
            recent
                .lines()
                .find(|l| l.contains(&client) && matches(l))
                .map(str::to_owned)
        });
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Logs in through the proxy and checks the (echo or recording) backend sends the login back.
fn logs_in(proxy: SocketAddr, host: &str, player: &str) -> io::Result<TcpStream> {
    let mut c = connect(proxy);
    let bytes = login_bytes(host, player);
    c.write_all(&bytes)?;
    let mut back = vec![0u8; bytes.len()];
    c.read_exact(&mut back)?;
    if back != bytes {
        return Err(io::Error::other(format!(
            "login echoed wrongly: sent {bytes:02x?}, got back {back:02x?}"
        )));
    }
    Ok(c)
}

const SOON: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------------------
// Malformed openings

fn malformed_openings_are_closed_at_once_with_a_reason<F: Rt>() {
    let echo = Backend::echo();
    let px = Px::start::<F>(
        Layout::new()
            .main("handshake_timeout = \"5s\"")
            .server("a", &server_toml(&["mc.example.com"], &[echo.addr()], "")),
    );
    let host = b"mc.example.com";
    let hs = raw_handshake(765, host, 25565, 2);
    let tls_client_hello = [
        &[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ][..],
        &[0x42; 64],
    ]
    .concat();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "frame length prefix of five 0xff bytes (wider than 3)",
            vec![0xff; 5],
            "frame length prefix longer than 3 bytes",
        ),
        ("frame length 0", vec![0x00, 0x00], "empty frame"),
        (
            "frame length -1 (a 5-byte VarInt, wider than 3)",
            vec![0xff, 0xff, 0xff, 0xff, 0x0f],
            "frame length prefix longer than 3 bytes",
        ),
        (
            "frame length 5 padded to 4 bytes",
            vec![0x85, 0x80, 0x80, 0x00],
            "frame length prefix longer than 3 bytes",
        ),
        (
            "frame length of 2 MiB",
            [varint(2 << 20), vec![0x00]].concat(),
            "frame length prefix longer than 3 bytes",
        ),
        (
            "frame length of 2 MiB - 1",
            [varint((2 << 20) - 1), vec![0x00]].concat(),
            "frame of 2097151 bytes exceeds",
        ),
        (
            "frame length of 16 KiB + 1",
            [varint(16 * 1024 + 1), vec![0x00]].concat(),
            "frame of 16385 bytes exceeds",
        ),
        (
            "next_state 0",
            raw_handshake(765, host, 25565, 0),
            "unknown next state 0",
        ),
        (
            "next_state 4",
            raw_handshake(765, host, 25565, 4),
            "unknown next state 4",
        ),
        (
            "next_state -1",
            raw_handshake(765, host, 25565, -1),
            "unknown next state -1",
        ),
        (
            "address length larger than the frame",
            frame(
                0,
                &[varint(765), varint(200), host.to_vec(), vec![0x63, 0xdd, 2]].concat(),
            ),
            "runs past the end",
        ),
        (
            "negative address length",
            frame(
                0,
                &[varint(765), varint(-5), host.to_vec(), vec![0x63, 0xdd, 2]].concat(),
            ),
            "negative length -5",
        ),
        (
            "address not UTF-8",
            raw_handshake(765, b"\xff\xfe.example.com", 25565, 2),
            "not valid UTF-8",
        ),
        (
            "a byte after next_state",
            frame(
                0,
                &[
                    varint(765),
                    raw_string(host),
                    vec![0x63, 0xdd],
                    varint(2),
                    vec![0],
                ]
                .concat(),
            ),
            "1 unexpected bytes after the handshake",
        ),
        (
            "TLS ClientHello",
            tls_client_hello,
            "expected the handshake (packet 0x00), got packet 0x03",
        ),
        (
            "login start with a 17-character name",
            [hs.clone(), raw_login(b"ABCDEFGHIJKLMNOPQ")].concat(),
            "17 characters",
        ),
        (
            "login name not UTF-8",
            [hs.clone(), raw_login(b"\xff\xfe\xfd")].concat(),
            "not valid UTF-8",
        ),
        (
            "login name of 65 bytes",
            [hs.clone(), raw_login(&[b'a'; 65])].concat(),
            "string of 65 bytes exceeds",
        ),
        (
            "second packet is not login start",
            [hs.clone(), frame(1, &raw_string(b"Steve"))].concat(),
            "got packet 0x01",
        ),
        (
            "login start frame over 8 KiB",
            [hs.clone(), varint(8 * 1024 + 1), vec![0x00]].concat(),
            "frame of 8193 bytes exceeds",
        ),
    ];
    for (what, bytes, reason) in &cases {
        let (seen, port) = attack(px.addr(), bytes, Duration::from_secs(4));
        assert_eq!(
            (seen.end, seen.bytes.as_slice()),
            (End::Eof, &[][..]),
            "[{}] {what}: closed without an answer ({seen:?})",
            F::NAME
        );
        assert!(
            seen.after < SOON,
            "[{}] {what}: closed at once, not at the 5 s handshake timeout ({:?})",
            F::NAME,
            seen.after
        );
        assert!(
            log_about(port, &["reason=ProtocolError(", reason], IO_TIMEOUT).is_some(),
            "[{}] {what}: the log says why ({reason})",
            F::NAME
        );
    }
    assert_eq!(
        echo.connections(),
        0,
        "[{}] no backend was contacted",
        F::NAME
    );
    px.assert_settles(F::NAME, Duration::from_secs(5));
    logs_in(px.addr(), "mc.example.com", "Steve").expect("still serving players");
}

/// The answer to a legacy ping: 0xFF, a UTF-16 length, then that many UTF-16BE units.
fn legacy_answer_text(bytes: &[u8]) -> Option<String> {
    let (&0xFF, rest) = bytes.split_first()? else {
        return None;
    };
    let len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    let units: Vec<u16> = rest[2..]
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .collect();
    (units.len() == len).then(|| String::from_utf16_lossy(&units))
}

/// A proxy with one server for `mc.example.com` (an echo backend that must never be dialled) for the
/// legacy-opening tests.
fn legacy_proxy<F: Rt>() -> (Backend, Px) {
    let echo = Backend::echo();
    let px = Px::start::<F>(
        Layout::new()
            .main("handshake_timeout = \"5s\"")
            .server("a", &server_toml(&["mc.example.com"], &[echo.addr()], "")),
    );
    (echo, px)
}

/// Sends `bytes` as a whole connection's opening and checks the answer is one legacy kick, followed at
/// once by the close, logged with `reason`; the kick's text.
fn legacy_kick_text<F: Rt>(px: &Px, what: &str, bytes: &[u8], reason: &str) -> String {
    let (seen, port) = attack(px.addr(), bytes, Duration::from_secs(4));
    let text = legacy_answer_text(&seen.bytes)
        .unwrap_or_else(|| panic!("[{}] {what}: a legacy kick ({seen:?})", F::NAME));
    assert!(
        seen.end == End::Eof && seen.after < SOON,
        "[{}] {what}: closed at once ({seen:?})",
        F::NAME
    );
    assert!(log_about(port, &[reason], IO_TIMEOUT).is_some());
    text
}

/// A whole 1.6 ping: FE 01 FA, "MC|PingHost", the payload's length, then protocol, host and port.
fn ping_host(protocol: u8, host: &str) -> Vec<u8> {
    use nethergate_core::response::write_legacy_string;
    let mut data = vec![protocol];
    write_legacy_string(&mut data, host);
    data.extend(25565i32.to_be_bytes());
    let mut full = vec![0xFE, 0x01, 0xFA];
    write_legacy_string(&mut full, "MC|PingHost");
    full.extend((data.len() as u16).to_be_bytes());
    full.extend(&data);
    full
}

fn legacy_pings_get_a_legacy_answer_and_are_closed<F: Rt>() {
    let (echo, px) = legacy_proxy::<F>();
    let cases: [(&str, Vec<u8>); 4] = [
        ("0xFE alone (1.3)", vec![0xFE]),
        ("FE 01 (1.4-1.5)", vec![0xFE, 0x01]),
        (
            "FE 01 FA then a truncated MC|PingHost",
            vec![0xFE, 0x01, 0xFA, 0x00, 0x0b, 0x00, b'M'],
        ),
        ("a whole 1.6 ping", ping_host(74, "mc.example.com")),
    ];
    for (what, bytes) in &cases {
        let text = legacy_kick_text::<F>(&px, what, bytes, "reason=LegacyPing");
        // Beta 1.8-1.3 (a lone FE) read `motd§online§max`; 1.4+ the `§1` format.
        let expected_start = if bytes.len() == 1 {
            "Use Minecraft 1.7 or newer\u{a7}0\u{a7}0"
        } else {
            "\u{a7}1\0"
        };
        assert!(
            text.starts_with(expected_start) && text.contains("Use Minecraft 1.7 or newer"),
            "[{}] {what}: {text:?}",
            F::NAME
        );
    }
    assert_eq!(echo.connections(), 0);
    px.assert_settles(F::NAME, Duration::from_secs(5));
}

/// A 1.7+ client whose status ping got no answer (an unknown host, a backend that closed it) pings again
/// the 1.6 way, with protocol 127 (vanilla's `LegacyServerPinger`), and shows any answer as the server's
/// MOTD marked incompatible: it is closed unanswered, so the list says "Can't connect to server".
fn a_modern_clients_legacy_fallback_gets_no_answer<F: Rt>() {
    let (echo, px) = legacy_proxy::<F>();
    for host in ["mc.example.com", "typo.example.com"] {
        let (seen, tag) = attack(px.addr(), &ping_host(127, host), Duration::from_secs(4));
        assert!(
            seen.bytes.is_empty() && seen.end == End::Eof && seen.after < SOON,
            "[{}] {host}: closed at once without an answer ({seen:?})",
            F::NAME
        );
        assert!(log_about(tag, &["reason=LegacyFallback"], IO_TIMEOUT).is_some());
    }
    assert_eq!(echo.connections(), 0);
    px.assert_settles(F::NAME, Duration::from_secs(5));
}

/// A pre-1.7 client that tries to log in (1.6: 0x02, protocol, name, host, port; 1.2: 0x02 and
/// "name;host:port") is told in its own protocol to use a newer client, then closed; no backend is dialled.
fn legacy_logins_are_told_to_update_and_closed<F: Rt>() {
    use nethergate_core::response::write_legacy_string;
    let (echo, px) = legacy_proxy::<F>();
    let mut v16 = vec![0x02, 78];
    write_legacy_string(&mut v16, "Steve");
    write_legacy_string(&mut v16, "mc.example.com");
    v16.extend(25565i32.to_be_bytes());
    let mut v12 = vec![0x02];
    write_legacy_string(&mut v12, "Steve;mc.example.com:25565");
    for (what, bytes) in [("1.6 login", v16), ("1.2 login", v12)] {
        let text = legacy_kick_text::<F>(&px, what, &bytes, "reason=LegacyLogin");
        assert_eq!(
            text,
            "Outdated client! Use Minecraft 1.7 or newer",
            "[{}] {what}",
            F::NAME
        );
    }
    assert_eq!(echo.connections(), 0);
    px.assert_settles(F::NAME, Duration::from_secs(5));
}

/// A handshake whose frame length is `len` (≡ 126 mod 128, so its first byte is 0xFE), carrying
/// BungeeCord-style forwarded data after `host`.
fn handshake_with_frame_length(host: &str, len: usize) -> (String, Vec<u8>) {
    for pad in 0..1024 {
        let address = format!(
            "{host}\0203.0.113.7\0069a79f444e94726a5befca90e38aaf5\0{}",
            "p".repeat(pad)
        );
        let bytes = raw_handshake(765, address.as_bytes(), 25565, 2);
        let prefix = varint(len as i32);
        if bytes.starts_with(&prefix) && bytes.len() == prefix.len() + len {
            return (address, bytes);
        }
    }
    panic!("no padding gives a frame of {len} bytes");
}

fn modern_handshake_whose_length_starts_with_0xfe_is_routed<F: Rt>() {
    // Vanilla's LegacyQueryHandler only takes FE, FE 01, or FE 01 FA "MC|PingHost" as a legacy ping and hands
    // anything else to the modern pipeline; a handshake of 254, 382, 510... bytes starts FE 01 00 / FE 02 00...
    let (backend, rx) = Backend::recording(false);
    let px = Px::start::<F>(Layout::new().server(
        "a",
        &server_toml(&["mc.example.com"], &[backend.addr()], ""),
    ));
    for len in [254, 382, 510] {
        let (address, mut bytes) = handshake_with_frame_length("mc.example.com", len);
        assert_eq!(bytes[0], 0xFE);
        bytes.extend(raw_login(b"Steve"));
        let mut c = connect(px.addr());
        c.write_all(&bytes).expect("send");
        let got = rx.recv_timeout(Duration::from_secs(3));
        let seen = watch(&mut c, Duration::from_millis(300));
        let r = got.unwrap_or_else(|_| {
            panic!(
                "[{}] a valid {len}-byte handshake (first bytes {:02x?}) never reached the backend; the client got {:02x?}",
                F::NAME,
                &bytes[..3],
                &seen.bytes[..seen.bytes.len().min(8)]
            )
        });
        assert_eq!(r.server_address, address);
        assert_eq!(r.player.as_deref(), Some("Steve"));
    }
}

fn non_minecraft_protocols_are_closed_at_once_or_at_the_handshake_timeout<F: Rt>() {
    // HTTP and SSH look like the start of a long frame, but the byte after the length is the packet id,
    // and it is not the handshake's: refused at once. A lone byte can only wait for the deadline.
    let echo = Backend::echo();
    // A timeout well past the margin "at once" is given, so the two cannot be confused.
    let px = Px::start::<F>(
        Layout::new()
            .main("handshake_timeout = \"3s\"")
            .server("a", &server_toml(&["mc.example.com"], &[echo.addr()], "")),
    );
    // A load balancer that sends PROXY headers to a proxy that takes none: named in the log line.
    let pp = "a PROXY protocol header, not a Minecraft handshake";
    let cases: [(&str, &[u8], Option<&str>); 6] = [
        (
            "PROXY v1 header",
            b"PROXY TCP4 203.0.113.7 127.0.0.1 50000 25565\r\n",
            Some(pp),
        ),
        (
            "PROXY v2 header",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c",
            Some(pp),
        ),
        (
            "HTTP request",
            b"GET / HTTP/1.1\r\nHost: mc.example.com\r\n\r\n",
            Some("got packet 0x45"),
        ),
        (
            "SSH banner",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            Some("got packet 0x53"),
        ),
        ("one byte", &[0x10], None),
        ("nothing at all", &[], None),
    ];
    let addr = px.addr();
    let runs: Vec<_> = cases
        .iter()
        .map(|&(what, bytes, refused)| {
            std::thread::spawn(move || (what, refused, attack(addr, bytes, Duration::from_secs(6))))
        })
        .collect();
    for run in runs {
        let (what, refused, (seen, port)) = run.join().expect("attacker thread");
        let (earliest, latest) = match refused {
            Some(_) => (Duration::ZERO, SOON),
            None => (Duration::from_millis(2900), Duration::from_millis(4500)),
        };
        assert!(
            seen.end == End::Eof
                && seen.bytes.is_empty()
                && seen.after >= earliest
                && seen.after < latest,
            "[{}] {what}: closed after {earliest:?}..{latest:?} ({seen:?})",
            F::NAME
        );
        let reason = match refused {
            Some(packet) => vec!["reason=ProtocolError", packet],
            None => vec!["reason=HandshakeTimeout"],
        };
        assert!(
            log_about(port, &reason, IO_TIMEOUT).is_some(),
            "[{}] {what}: logged with {reason:?}",
            F::NAME
        );
    }
    assert_eq!(echo.connections(), 0);
    px.assert_settles(F::NAME, Duration::from_secs(5));
}

fn slowloris_and_trickled_frames_are_cut_at_the_handshake_timeout<F: Rt>() {
    let echo = Backend::echo();
    let px = Px::start::<F>(
        Layout::new()
            .main("handshake_timeout = \"1s\"")
            .server("a", &server_toml(&["mc.example.com"], &[echo.addr()], "")),
    );
    let login = login_bytes("mc.example.com", "Slowpoke");
    let big_frame = [varint(16 * 1024), vec![0x00; 64]].concat();
    for (what, bytes) in [
        ("a valid login, 1 byte every 100 ms", login.clone()),
        (
            "a 16 KiB frame announced, then 1 byte every 100 ms",
            big_frame,
        ),
    ] {
        let (mut c, port) = connect_tagged(px.addr());
        let mut w = c.try_clone().expect("clone");
        let stop = Arc::new(AtomicBool::new(false));
        let stop_w = stop.clone();
        let writer = std::thread::spawn(move || {
            for b in bytes {
                if stop_w.load(Ordering::Relaxed) || w.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let seen = watch(&mut c, Duration::from_secs(4));
        stop.store(true, Ordering::Relaxed);
        let _ = writer.join();
        assert!(
            seen.end == End::Eof
                && seen.bytes.is_empty()
                && seen.after >= Duration::from_millis(900)
                && seen.after < Duration::from_millis(2500),
            "[{}] {what}: the deadline is for the whole handshake, not per byte ({seen:?})",
            F::NAME
        );
        assert!(log_about(port, &["reason=HandshakeTimeout"], IO_TIMEOUT).is_some());
    }

    // 150 slowloris clients at once do not keep a real player out, and are all cut.
    let mut slow: Vec<TcpStream> = (0..150).map(|_| connect(px.addr())).collect();
    let started = Instant::now();
    let mut sent = 0;
    let mut player = None;
    while started.elapsed() < Duration::from_millis(700) {
        for s in &mut slow {
            let _ = s.write_all(&login[sent..=sent]);
        }
        sent += 1;
        if player.is_none() {
            let t = Instant::now();
            player = Some((logs_in(px.addr(), "mc.example.com", "Steve"), t.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (player, took) = player.expect("a player tried");
    let player = player.unwrap_or_else(|e| panic!("[{}] player starved: {e}", F::NAME));
    assert!(
        took < Duration::from_secs(2),
        "[{}] player took {took:?}",
        F::NAME
    );
    drop(player);
    for s in &mut slow {
        let seen = watch(s, Duration::from_secs(3));
        assert_eq!(
            seen.end,
            End::Eof,
            "[{}] every slowloris is cut ({seen:?})",
            F::NAME
        );
    }
    drop(slow);
    assert_eq!(
        echo.connections(),
        1,
        "[{}] only the player reached the backend",
        F::NAME
    );
    px.assert_settles(F::NAME, Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------------------------------
// Hosts and names

fn odd_hosts_are_refused_or_forwarded_untouched<F: Rt>() {
    let (backend, rx) = Backend::recording(false);
    let px = Px::start::<F>(
        Layout::new()
            .server(
                "a",
                &server_toml(
                    &["mc.example.com", "xn--mnchen-3ya.example.com"],
                    &[backend.addr()],
                    "max_players = 5",
                ),
            )
            .server(
                "w",
                &server_toml(&["*.wild.example.com"], &[backend.addr()], ""),
            ),
    );
    let long_decoration = format!("mc.example.com\0{}", "d".repeat(290));
    let unknown = [
        "a".repeat(300),
        "\0\0\0\0".into(),
        "....".into(),
        ".".into(),
        "\0".into(),
        String::new(),
        "mc.example.com..".into(),
        "mc.example.com ".into(),
        "mc.example.com:25565".into(),
        "\0mc.example.com".into(),
        // An empty label is no DNS name, and no wildcard may match one.
        ".wild.example.com".into(),
        "a..wild.example.com".into(),
        ".mc.example.com".into(),
    ];
    for host in &unknown {
        let (seen, port) = attack(
            px.addr(),
            &login_bytes(host, "Steve"),
            Duration::from_secs(4),
        );
        assert_eq!(
            disconnect_text(&seen.bytes).as_deref(),
            Some("Unknown server address"),
            "[{}] host {host:?}: told the address is unknown ({seen:?})",
            F::NAME
        );
        assert!(
            seen.end == End::Eof && seen.after < SOON,
            "[{}] {host:?}: {seen:?}",
            F::NAME
        );
        assert!(log_about(port, &["reason=UnknownHost"], IO_TIMEOUT).is_some());
    }
    // A server-list ping for an unknown host is closed without an answer.
    let (seen, _) = attack(
        px.addr(),
        &status_bytes("nowhere.example.org"),
        Duration::from_secs(4),
    );
    assert!(
        seen.end == End::Eof && seen.bytes.is_empty(),
        "[{}] {seen:?}",
        F::NAME
    );
    assert_eq!(
        backend.connections(),
        0,
        "[{}] no backend for unknown hosts",
        F::NAME
    );

    for host in [
        "mc.example.com\0",
        "MC.EXAMPLE.COM.",
        "XN--MNCHEN-3YA.example.com",
        // Raw Unicode (what non-vanilla clients may send) is routed by its punycode form.
        "münchen.example.com",
        "MÜNCHEN.EXAMPLE.COM",
        long_decoration.as_str(),
    ] {
        let c = logs_in(px.addr(), host, "Steve")
            .unwrap_or_else(|e| panic!("[{}] {host:?} routed: {e}", F::NAME));
        let r = rx.recv_timeout(IO_TIMEOUT).expect("backend saw it");
        assert_eq!(
            r.handshake_frame,
            login_bytes(host, "Steve")[..r.handshake_frame.len()],
            "[{}] {host:?} forwarded byte for byte",
            F::NAME
        );
        drop(c);
    }
    px.assert_settles(F::NAME, Duration::from_secs(5));
    assert_eq!(px.players_on("a"), 0);
}

fn unicode_domain_matches_what_vanilla_clients_send<F: Rt>() {
    // Vanilla clients send IDN.toASCII(host): an admin's `münchen.example.com` arrives as
    // `xn--mnchen-3ya.example.com`. Either convert the domain when loading, or refuse it with a clear error.
    let (backend, rx) = Backend::recording(false);
    let layout = Layout::new().server(
        "a",
        &server_toml(&["münchen.example.com"], &[backend.addr()], ""),
    );
    if let Err(e) = Config::load(&layout.path()) {
        assert!(e.to_string().contains("domains"), "{e}");
        return;
    }
    let px = Px::start::<F>(layout);
    let (seen, _) = attack(
        px.addr(),
        &login_bytes("xn--mnchen-3ya.example.com", "Steve"),
        Duration::from_secs(3),
    );
    assert!(
        rx.recv_timeout(Duration::from_secs(1)).is_ok(),
        "[{}] a Unicode domain is accepted by the config but never matches a vanilla client: {:?}",
        F::NAME,
        disconnect_text(&seen.bytes)
    );
}

fn odd_but_valid_player_names_pass_through_untouched<F: Rt>() {
    // Names are the backend's business in passthrough: forwarded byte for byte, shown in the registry.
    let (backend, rx) = Backend::recording(false);
    let px = Px::start::<F>(Layout::new().server(
        "a",
        &server_toml(&["mc.example.com"], &[backend.addr()], ""),
    ));
    let four_byte_chars = "\u{1d54a}".repeat(16);
    for name in [
        "",
        four_byte_chars.as_str(),
        "Robert'); --",
        "\u{202e}evetS",
    ] {
        let c = logs_in(px.addr(), "mc.example.com", name)
            .unwrap_or_else(|e| panic!("[{}] name {name:?}: {e}", F::NAME));
        let r = rx.recv_timeout(IO_TIMEOUT).expect("backend saw it");
        assert_eq!(r.player.as_deref(), Some(name));
        assert!(
            wait_until(IO_TIMEOUT, || px
                .run
                .handle()
                .registry()
                .sessions()
                .iter()
                .any(|s| s.player.as_deref() == Some(name))),
            "[{}] {name:?} listed",
            F::NAME
        );
        drop(c);
        px.assert_settles(F::NAME, Duration::from_secs(5));
    }
}

fn client_controlled_host_cannot_forge_log_fields<F: Rt>() {
    // The player name is quoted in log lines; the host is not, so a client can append `reason=...` (or any
    // field) to the human log line an admin greps.
    let echo = Backend::echo();
    let px = Px::start::<F>(
        Layout::new().server("a", &server_toml(&["mc.example.com"], &[echo.addr()], "")),
    );
    let forged = "nowhere.example.org reason=Denied server=lobby";
    let (_, port) = attack(
        px.addr(),
        &login_bytes(forged, "Steve"),
        Duration::from_secs(3),
    );
    let line =
        log_about(port, &["connection closed before forwarding"], IO_TIMEOUT).expect("close line");
    // Count fields outside quoted values: a quoted host may contain anything.
    let unquoted: String = line
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, part)| part)
        .collect();
    assert_eq!(
        unquoted.matches(" reason=").count(),
        1,
        "[{}] a forged field in the log line: {line}",
        F::NAME
    );
}

// ---------------------------------------------------------------------------------------------------------
// Server-list pings

fn status_handshake_alone_is_closed_at_the_handshake_timeout<F: Rt>() {
    // README: "a client must send its handshake and login start (or status request) within this".
    let echo = Backend::echo();
    let px = Px::start::<F>(Layout::new().main("handshake_timeout = \"1s\"").server(
        "a",
        &server_toml(
            &["mc.example.com"],
            &[echo.addr()],
            "[timeouts]\nread = \"20s\"",
        ),
    ));
    let mut hs = Vec::new();
    nethergate_core::Handshake {
        protocol_version: 765,
        server_address: "mc.example.com",
        port: 25565,
        next_state: NextState::Status,
    }
    .encode(&mut hs);
    let (seen, _) = attack(px.addr(), &hs, Duration::from_secs(4));
    assert!(
        seen.end != End::Open,
        "[{}] a status handshake without a status request holds a backend connection ({} accepted) \
         past the 1 s handshake_timeout, until timeouts.read ({seen:?})",
        F::NAME,
        echo.connections()
    );
}

fn offline_status_misuse_gets_one_answer_then_close<F: Rt>() {
    let px = Px::start::<F>(Layout::new().main("handshake_timeout = \"1s\"").server(
        "down",
        &server_toml(
            &["down.example.com"],
            &[refused_addr()],
            "disconnect_message = \"Down for maintenance\"",
        ),
    ));
    let hs = raw_handshake(765, b"down.example.com", 25565, 1);
    let req = status_request();
    struct Case {
        what: &'static str,
        bytes: Vec<u8>,
        /// Shut down our write half after sending.
        half_close: bool,
        /// The packet ids answered.
        ids: Vec<i32>,
        /// Closed by the handshake timeout rather than at once.
        by_deadline: bool,
    }
    let case = |what, bytes, half_close, ids, by_deadline| Case {
        what,
        bytes,
        half_close,
        ids,
        by_deadline,
    };
    let cases = vec![
        case(
            "junk instead of a ping",
            [hs.clone(), req.clone(), frame(0x07, &[7, 7, 7])].concat(),
            false,
            vec![0],
            false,
        ),
        case(
            "two pings",
            [hs.clone(), req.clone(), ping(1), ping(2)].concat(),
            false,
            vec![0, 1],
            false,
        ),
        case(
            "two status requests",
            [hs.clone(), req.clone(), req.clone()].concat(),
            false,
            vec![0],
            false,
        ),
        case(
            "a ping without a status request",
            [hs.clone(), ping(3)].concat(),
            false,
            vec![1],
            false,
        ),
        case(
            "a ping frame of 300 bytes",
            [hs.clone(), req.clone(), frame(1, &[0; 299])].concat(),
            false,
            vec![0],
            false,
        ),
        case(
            "a status request, then silence",
            [hs.clone(), req.clone()].concat(),
            false,
            vec![0],
            true,
        ),
        case(
            "a status request, then a half-close",
            [hs.clone(), req.clone()].concat(),
            true,
            vec![0],
            false,
        ),
    ];
    for Case {
        what,
        bytes,
        half_close,
        ids,
        by_deadline,
    } in cases
    {
        let mut c = connect(px.addr());
        c.write_all(&bytes).expect("send");
        if half_close {
            c.shutdown(Shutdown::Write).expect("half-close");
        }
        let seen = watch(&mut c, Duration::from_secs(4));
        let got = packets(&seen.bytes)
            .unwrap_or_else(|| panic!("[{}] {what}: whole frames ({seen:?})", F::NAME));
        assert_eq!(
            got.iter().map(|p| p.0).collect::<Vec<_>>(),
            ids,
            "[{}] {what}",
            F::NAME
        );
        if let Some((_, body)) = got.iter().find(|p| p.0 == 0) {
            let Ok(Parsed::Complete(json, _)) = codec::read_string(body, usize::MAX) else {
                panic!("status JSON")
            };
            let v: serde_json::Value = serde_json::from_str(json).expect("JSON");
            assert_eq!(v["description"]["text"], "Down for maintenance");
        }
        if let Some((_, body)) = got.iter().find(|p| p.0 == 1) {
            let first = bytes
                .windows(10)
                .find(|w| w[..2] == [9, 1])
                .expect("a ping sent");
            assert_eq!(
                body.as_slice(),
                &first[2..],
                "[{}] {what}: the first ping's payload",
                F::NAME
            );
        }
        let deadline_ok = if by_deadline {
            seen.after >= Duration::from_millis(900) && seen.after < Duration::from_millis(2500)
        } else {
            seen.after < SOON
        };
        assert!(
            seen.end == End::Eof && deadline_ok,
            "[{}] {what}: {seen:?}",
            F::NAME
        );
    }
    px.assert_settles(F::NAME, Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------------------------------
// Abrupt disconnects

fn resets_mid_handshake_and_mid_forward_leak_nothing<F: Rt>() {
    let echo = Backend::echo();
    let px = Px::start::<F>(Layout::new().server(
        "a",
        &server_toml(&["mc.example.com"], &[echo.addr()], "max_players = 2"),
    ));
    let login = login_bytes("mc.example.com", "Steve");
    // Mid-handshake: part of the handshake, then a reset.
    let mut ports = Vec::new();
    for cut in [0, 1, 5, login.len() - 3] {
        let (mut c, port) = connect_tagged(px.addr());
        if cut > 0 {
            // (One that sent nothing is a probe, logged at debug only.)
            ports.push(port);
        }
        c.write_all(&login[..cut]).expect("send");
        std::thread::sleep(Duration::from_millis(20));
        reset(c);
    }
    for port in ports {
        assert!(
            log_about(port, &["reason=ClientClosed"], IO_TIMEOUT).is_some(),
            "[{}] a reset mid-handshake is logged as ClientClosed",
            F::NAME
        );
    }
    px.assert_settles(F::NAME, Duration::from_secs(3));

    // Right after the login start, before the backend answered.
    let mut last = None;
    for _ in 0..10 {
        let (mut c, t) = connect_tagged(px.addr());
        c.write_all(&login).expect("send");
        reset(c);
        last = Some(t);
    }
    // The kernel keeps a reset connection's data readable: each of these logins may still be routed,
    // dialled and forwarded before the proxy reads the reset. Wait until the last one has been seen.
    assert!(last.is_some_and(|t| final_line(t, IO_TIMEOUT).is_some()));
    px.assert_settles(F::NAME, Duration::from_secs(5));
    assert_eq!(px.players_on("a"), 0, "[{}] slots released", F::NAME);

    // Mid-forward: both slots taken, both players reset; the slots come back at once.
    let mark = log_mark();
    let one = logs_in(px.addr(), "mc.example.com", "One").expect("one");
    let two = logs_in(px.addr(), "mc.example.com", "Two").expect("two");
    assert_eq!(px.players_on("a"), 2);
    let ports = [&one, &two].map(|c| tag(c, mark));
    let t = Instant::now();
    reset(one);
    reset(two);
    assert!(
        wait_until(Duration::from_secs(3), || px.players_on("a") == 0
            && px.sessions() == 0),
        "[{}] slots and sessions released after resets ({} players, {} sessions)",
        F::NAME,
        px.players_on("a"),
        px.sessions()
    );
    assert!(
        t.elapsed() < SOON,
        "[{}] released promptly: {:?}",
        F::NAME,
        t.elapsed()
    );
    for port in ports {
        assert!(log_about(port, &["session ended", "reason=ClientClosed"], IO_TIMEOUT).is_some());
    }
    let _three = logs_in(px.addr(), "mc.example.com", "Three").expect("slot one reusable");
    let _four = logs_in(px.addr(), "mc.example.com", "Four").expect("slot two reusable");
    let (seen, _) = attack(
        px.addr(),
        &login_bytes("mc.example.com", "Five"),
        Duration::from_secs(3),
    );
    assert_eq!(
        disconnect_text(&seen.bytes).as_deref(),
        Some(nethergate_core::session::SERVER_FULL_MESSAGE),
        "[{}] and the limit still holds",
        F::NAME
    );
}

fn reset_client_on_a_backend_that_ignores_eof_ends_by_the_read_timeout<F: Rt>() {
    // The proxy passes a client's reset on as a half-close; a backend that never closes then keeps the session
    // (and its player slot) until `timeouts.read`, the documented bound.
    let backend = Backend::start(|mut s| {
        let mut buf = [0u8; 4096];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        std::thread::sleep(Duration::from_secs(6));
    });
    let px = Px::start::<F>(Layout::new().server(
        "a",
        &server_toml(
            &["mc.example.com"],
            &[backend.addr()],
            "max_players = 1\n[timeouts]\nread = \"1s\"",
        ),
    ));
    let mut c = connect(px.addr());
    c.write_all(&login_bytes("mc.example.com", "Steve"))
        .expect("send");
    assert!(wait_until(IO_TIMEOUT, || px.sessions() == 1));
    let t = Instant::now();
    reset(c);
    assert!(
        wait_until(Duration::from_secs(4), || px.sessions() == 0
            && px.players_on("a") == 0),
        "[{}] session and slot released",
        F::NAME
    );
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "[{}] released by the 1 s read timeout: {:?}",
        F::NAME,
        t.elapsed()
    );
    px.assert_settles(F::NAME, Duration::from_secs(3));
}

// ---------------------------------------------------------------------------------------------------------
// Peers that stop reading

/// A backend that reads the login, then writes as fast as it can until the proxy stops taking bytes;
/// reports how it ended.
fn flooding_backend(login_len: usize) -> (Backend, mpsc::Receiver<(u64, Duration)>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let b = Backend::start(move |mut s| {
        let mut head = vec![0u8; login_len];
        if s.read_exact(&mut head).is_err() {
            return;
        }
        let _ = s.set_write_timeout(Some(Duration::from_secs(15)));
        let chunk = vec![0x5Au8; 64 * 1024];
        let (t, mut sent) = (Instant::now(), 0u64);
        while sent < 1 << 30 && t.elapsed() < Duration::from_secs(20) {
            match s.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(_) => break,
            }
        }
        if let Ok(tx) = tx.lock() {
            let _ = tx.send((sent, t.elapsed()));
        }
    });
    (b, rx)
}

/// A player logged in through a proxy in `mode` (`write = "1s"`) to a [`flooding_backend`], with a
/// receive buffer of `rcvbuf` bytes and reading nothing yet; the backend is held to keep it alive.
struct Flooded {
    client: TcpStream,
    tag: Tag,
    px: Px,
    flood: mpsc::Receiver<(u64, Duration)>,
    _backend: Backend,
}

fn flooded<F: Rt>(mode: &str, rcvbuf: libc::c_int) -> Flooded {
    let login = login_bytes("mc.example.com", "Sponge");
    let (backend, flood) = flooding_backend(login.len());
    let px = Px::start::<F>(Layout::new().server(
        "a",
        &server_toml(
            &["mc.example.com"],
            &[backend.addr()],
            &format!("proxy_mode = \"{mode}\"\n[timeouts]\nwrite = \"1s\"\nread = \"30s\""),
        ),
    ));
    let (client, tag) = connect_tagged(px.addr());
    receive_buffer(&client, rcvbuf);
    (&client).write_all(&login).expect("send");
    Flooded {
        client,
        tag,
        px,
        flood,
        _backend: backend,
    }
}

fn client_that_never_reads_is_cut_by_the_write_timeout<F: Rt>() {
    for mode in ["passthrough", "zero_copy"] {
        let Flooded {
            client: c,
            tag: port,
            px,
            flood: rx,
            _backend,
        } = flooded::<F>(mode, SMALL_RECEIVE_BUFFER);
        let line =
            log_about(port, &["session ended"], Duration::from_secs(8)).unwrap_or_else(|| {
                panic!(
                    "[{}] {mode}: a client that never reads is cut by the 1 s write timeout",
                    F::NAME
                )
            });
        assert!(
            line.contains("reason=Timeout"),
            "[{}] {mode}: {line}",
            F::NAME
        );
        let (sent, took) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the backend's flood was stopped");
        assert!(
            sent < 256 << 20 && took < Duration::from_secs(8),
            "[{}] {mode}: the proxy stopped taking bytes it cannot deliver ({sent} bytes in {took:?})",
            F::NAME
        );
        drop(c);
        px.assert_settles(F::NAME, Duration::from_secs(3));
    }
}

/// A player reading steadily but slowly (320 KiB/s) is not cut by the 1 s write limit: Linux reports the
/// proxy's socket writable only once about a third of its send buffer (megabytes on loopback) has
/// drained, which takes this reader over 3 s, but it acknowledges more every few hundred milliseconds
/// (its 64 KiB receive buffer reopens often). Once it stops reading, it is cut.
fn a_slow_but_steady_reader_is_not_cut_by_the_write_timeout<F: Rt>() {
    for mode in ["passthrough", "zero_copy"] {
        let flood = flooded::<F>(mode, 64 * 1024);
        let (mut c, port, px) = (flood.client, flood.tag, flood.px);
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = vec![0u8; 16 * 1024];
        let (start, mut got) = (Instant::now(), 0usize);
        while start.elapsed() < Duration::from_secs(4) {
            match c.read(&mut buf) {
                Ok(n) if n > 0 => got += n,
                other => panic!("[{}] {mode}: after {got} bytes: {other:?}", F::NAME),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            log_about(port, &["session ended"], Duration::ZERO),
            None,
            "[{}] {mode}: cut while reading {got} bytes in {:?}",
            F::NAME,
            start.elapsed()
        );
        // Stopped: cut about 1 s later (the limit, plus up to one 125 ms sample), not after a second
        // window of the limit.
        let stopped = Instant::now();
        let line = log_about(port, &["session ended"], Duration::from_secs(8));
        let took = stopped.elapsed();
        assert!(
            line.as_deref()
                .is_some_and(|l| l.contains("reason=Timeout"))
                && took < Duration::from_millis(1750),
            "[{}] {mode}: {took:?} after it stopped reading: {line:?}",
            F::NAME
        );
        drop(c);
        px.assert_settles(F::NAME, Duration::from_secs(3));
    }
}

/// The `b2c=` count of a `session ended` line.
fn logged_b2c(line: &str) -> Option<u64> {
    let digits = line.split("b2c=").nth(1)?;
    digits
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A write cut part way by the write limit still counts what it wrote: the client, reading after the
/// session ended, gets exactly the `b2c` the log line says (the count used to move only per whole chunk,
/// so a cut write of up to a buffer, or a pipe, was missing from it).
fn bytes_counted_are_the_bytes_delivered_when_a_write_is_cut<F: Rt>() {
    for mode in ["passthrough", "zero_copy"] {
        let Flooded {
            client: mut c,
            tag: port,
            px,
            _backend,
            ..
        } = flooded::<F>(mode, 256 * 1024);
        let line = log_about(
            port,
            &["session ended", "reason=Timeout"],
            Duration::from_secs(8),
        )
        .unwrap_or_else(|| panic!("[{}] {mode}: the write limit ends the session", F::NAME));
        let logged = logged_b2c(&line).unwrap_or_else(|| panic!("[{}] {mode}: {line}", F::NAME));
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut got = Vec::new();
        if let Err(e) = c.read_to_end(&mut got) {
            panic!(
                "[{}] {mode}: reading after {} bytes: {e}",
                F::NAME,
                got.len()
            );
        }
        assert_eq!(
            got.len() as u64,
            logged,
            "[{}] {mode}: delivered vs logged: {line}",
            F::NAME
        );
        px.assert_settles(F::NAME, Duration::from_secs(3));
    }
}

/// A backend that sends its last bytes, closes, and then resets (it had not read what the client sent
/// meanwhile, as a server that is shutting down does not): the client, still sending and reading only
/// later, gets every byte and a clean end. The proxy used to close the client's socket with the client's
/// last packets unread, so the kernel reset it and destroyed the backend's bytes still queued for it.
fn backend_closing_while_the_client_still_sends_loses_none_of_its_bytes<F: Rt>() {
    const TOTAL: usize = 1_000_000;
    for mode in ["passthrough", "zero_copy"] {
        let login = login_bytes("mc.example.com", "Sponge");
        let len = login.len();
        let backend = Backend::start(move |mut s| {
            let mut head = vec![0u8; len];
            if s.read_exact(&mut head).is_err() || send_noise(&mut s, 7, TOTAL).is_err() {
                return;
            }
            // Time for the proxy to take all of it in (a reset destroys what the backend's kernel
            // still holds), well before the client stops sending.
            std::thread::sleep(Duration::from_millis(1000));
            reset(s);
        });
        let px = Px::start::<F>(Layout::new().server(
            "a",
            &server_toml(
                &["mc.example.com"],
                &[backend.addr()],
                &format!("proxy_mode = \"{mode}\""),
            ),
        ));
        let (mut c, port) = connect_tagged(px.addr());
        c.write_all(&login).expect("send");
        let until = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < until {
            // Movement packets of a player who has not noticed yet; the backend is gone, so they go nowhere.
            let _ = c.write_all(&[0x42; 100]);
            std::thread::sleep(Duration::from_millis(10));
        }
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let read = expect_noise(&mut c, 7, TOTAL);
        assert!(
            read.is_ok(),
            "[{}] {mode}: the client got {read:?}",
            F::NAME
        );
        let line = log_about(port, &["session ended"], Duration::from_secs(5));
        assert!(
            line.as_deref().is_some_and(
                |l| l.contains("reason=BackendClosed") && logged_b2c(l) == Some(TOTAL as u64)
            ),
            "[{}] {mode}: {line:?}",
            F::NAME
        );
        drop(c);
        px.assert_settles(F::NAME, Duration::from_secs(3));
    }
}

fn backend_that_never_reads_is_cut_by_the_write_timeout<F: Rt>() {
    let login = login_bytes("mc.example.com", "Flooder");
    let login_len = login.len();
    let backend = Backend::start(move |mut s| {
        let mut head = vec![0u8; login_len];
        let _ = s.read_exact(&mut head);
        std::thread::sleep(Duration::from_secs(8));
    });
    let px = Px::start::<F>(Layout::new().server(
        "a",
        &server_toml(
            &["mc.example.com"],
            &[backend.addr()],
            "[timeouts]\nwrite = \"1s\"\nread = \"30s\"",
        ),
    ));
    let (mut c, port) = connect_tagged(px.addr());
    c.set_write_timeout(Some(Duration::from_secs(6)))
        .expect("timeout");
    c.write_all(&login).expect("send");
    let writer = std::thread::spawn(move || {
        let chunk = vec![0xA5u8; 64 * 1024];
        let t = Instant::now();
        let mut sent = 0u64;
        while sent < 1 << 30 && t.elapsed() < Duration::from_secs(10) {
            match c.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(_) => return (sent, t.elapsed(), true),
            }
        }
        (sent, t.elapsed(), false)
    });
    let line = log_about(port, &["session ended"], Duration::from_secs(8));
    let (sent, took, refused) = writer.join().expect("writer");
    let line = line.unwrap_or_else(|| {
        panic!(
            "[{}] a backend that never reads is cut by the write timeout ({sent} bytes sent in {took:?})",
            F::NAME
        )
    });
    assert!(line.contains("reason=Timeout"), "[{}] {line}", F::NAME);
    assert!(
        refused,
        "[{}] the client's writes fail once the session is cut",
        F::NAME
    );
    px.assert_settles(F::NAME, Duration::from_secs(3));
}

// ---------------------------------------------------------------------------------------------------------
// Hostile backends

fn hostile_backends_give_the_client_a_clear_end<F: Rt>() {
    let login_len = login_bytes("garbage.example.com", "Steve").len();
    let rst = Backend::start(reset);
    let closes = Backend::start(drop);
    let garbage = Backend::start(move |mut s| {
        let _ = s.write_all(b"\xde\xad\xbe\xef garbage first");
        let mut head = vec![0u8; login_len];
        if s.read_exact(&mut head).is_ok() {
            let _ = s.write_all(&head);
        }
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let mute = Backend::start(|mut s| {
        let mut buf = [0u8; 4096];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let server = |name: &str, b: &Backend| {
        let domain = format!("{name}.example.com");
        server_toml(
            &[domain.as_str()],
            &[b.addr()],
            "max_players = 1\n[timeouts]\nread = \"1s\"",
        )
    };
    let px = Px::start::<F>(
        Layout::new()
            .server("rst", &server("rst", &rst))
            .server("closes", &server("closes", &closes))
            .server("garbage", &server("garbage", &garbage))
            .server("mute", &server("mute", &mute)),
    );
    // (server, what the client must see, reason, by the read timeout)
    let mut expected_garbage = b"\xde\xad\xbe\xef garbage first".to_vec();
    expected_garbage.extend(login_bytes("garbage.example.com", "Steve"));
    // A backend that ends before its first byte, or says nothing until the read timeout: the player is
    // told `disconnect_message`.
    let told = nethergate_core::response::login_disconnect(
        nethergate_core::config::DEFAULT_DISCONNECT_MESSAGE,
    );
    let cases: [(&str, Vec<u8>, &str, bool); 4] = [
        ("rst", told.clone(), "reason=BackendClosed", false),
        ("closes", told.clone(), "reason=BackendClosed", false),
        ("garbage", expected_garbage, "reason=ClientClosed", false),
        ("mute", told, "reason=Timeout", true),
    ];
    for (name, want, reason, by_timeout) in cases {
        let by_reset = name == "rst";
        let host = format!("{name}.example.com");
        let (mut c, port) = connect_tagged(px.addr());
        c.write_all(&login_bytes(&host, "Steve")).expect("send");
        let seen = if name == "garbage" {
            let mut got = vec![0u8; want.len()];
            c.read_exact(&mut got).expect("garbage then echo");
            c.shutdown(Shutdown::Write).expect("leave");
            let mut seen = watch(&mut c, Duration::from_secs(3));
            got.extend(seen.bytes);
            seen.bytes = got;
            seen
        } else {
            watch(&mut c, Duration::from_secs(4))
        };
        assert_eq!(seen.bytes, want, "[{}] {name}: bytes in order", F::NAME);
        // A reset can reach the proxy before its dial completes (the dial fails: BackendUnreachable) or
        // after (forwarding started: BackendClosed). Which one is a race; the player is told the same.
        let reason = if by_reset
            && log_about(
                port,
                &["reason=BackendUnreachable"],
                Duration::from_millis(200),
            )
            .is_some()
        {
            "reason=BackendUnreachable"
        } else {
            reason
        };
        assert_ne!(
            seen.end,
            End::Open,
            "[{}] {name}: the client is not left hanging",
            F::NAME
        );
        let bound = if by_timeout {
            seen.after >= Duration::from_millis(900) && seen.after < Duration::from_millis(2500)
        } else {
            seen.after < SOON
        };
        assert!(bound, "[{}] {name}: {seen:?}", F::NAME);
        assert!(
            log_about(port, &[reason], IO_TIMEOUT).is_some(),
            "[{}] {name}: logged with {reason}: {:?}",
            F::NAME,
            final_line(port, Duration::ZERO)
        );
        assert!(
            wait_until(Duration::from_secs(3), || px.players_on(name) == 0),
            "[{}] {name}: player slot released",
            F::NAME
        );
    }
    px.assert_settles(F::NAME, Duration::from_secs(5));
}

/// A connection that closes without sending a byte (a TCP health check, a port scan) is logged at debug
/// only; one byte is enough to be a client worth a line.
fn probes_that_send_nothing_are_not_logged_at_info<F: Rt>() {
    let echo = Backend::echo();
    let px = Px::start::<F>(
        Layout::new().server("a", &server_toml(&["mc.example.com"], &[echo.addr()], "")),
    );
    let (probe, quiet) = connect_tagged(px.addr());
    drop(probe);
    let (mut c, loud) = connect_tagged(px.addr());
    c.write_all(&[0x05]).expect("send");
    drop(c);
    assert!(
        final_line(loud, IO_TIMEOUT).is_some_and(|l| l.contains("reason=ClientClosed")),
        "[{}] a client that sent a byte is logged",
        F::NAME
    );
    px.assert_settles(F::NAME, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        final_line(quiet, Duration::ZERO),
        None,
        "[{}] the probe is not logged at info",
        F::NAME
    );
}

fn timeouts_too_long_for_a_clock_are_rejected<F: Rt>() {
    // Deadlines are `now + timeout`; a timeout beyond any clock would overflow. The config refuses it with
    // a clear message instead of letting a session task panic later.
    for key in ["connect", "read", "write"] {
        let layout = Layout::new().server(
            "a",
            &format!("domains = [\"mc.example.com\"]\naddresses = [\"127.0.0.1:1\"]\n[timeouts]\n{key} = \"300000000000y\""),
        );
        let err = nethergate_core::Config::load(&layout.path()).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains(&format!("timeouts.{key}")) && text.contains("maximum of 10 years"),
            "[{}] {text}",
            F::NAME
        );
    }
}

fn max_connections_holds_under_a_flood_of_idle_connections<F: Rt>() {
    // Idle connections hold their slot for handshake_timeout, then up to 2 s more while the proxy lingers
    // so a refused client can read its last packet; after that players get in again.
    let echo = Backend::echo();
    let px = Px::start::<F>(
        Layout::new()
            .main("max_connections = 5\nhandshake_timeout = \"1s\"")
            .server("a", &server_toml(&["mc.example.com"], &[echo.addr()], "")),
    );
    let idle: Vec<TcpStream> = (0..5).map(|_| connect(px.addr())).collect();
    assert!(wait_until(IO_TIMEOUT, || px.tasks() == 5));
    let t = Instant::now();
    let (seen, _) = attack(
        px.addr(),
        &login_bytes("mc.example.com", "Steve"),
        Duration::from_secs(3),
    );
    assert!(
        seen.end != End::Open && seen.bytes.is_empty() && t.elapsed() < SOON,
        "[{}] over max_connections: closed at once ({seen:?})",
        F::NAME
    );
    assert!(
        wait_until(Duration::from_secs(5), || px.tasks() == 0),
        "[{}] the idle connections are let go ({} left)",
        F::NAME,
        px.tasks()
    );
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_millis(3800),
        "[{}] {waited:?}",
        F::NAME
    );
    logs_in(px.addr(), "mc.example.com", "Steve")
        .unwrap_or_else(|e| panic!("[{}] a player gets in afterwards: {e}", F::NAME));
    drop(idle);
}

fn max_connections_refusal_is_logged<F: Rt>() {
    // README: "Connections refused before forwarding get one line too, with their reason". Refusals at
    // max_connections are logged at debug only: under the default `info`, an admin whose players cannot
    // connect sees nothing.
    let echo = Backend::echo();
    let px = Px::start::<F>(
        Layout::new()
            .main("max_connections = 1")
            .server("a", &server_toml(&["mc.example.com"], &[echo.addr()], "")),
    );
    let _hold = logs_in(px.addr(), "mc.example.com", "One").expect("first");
    let (seen, tag) = attack(
        px.addr(),
        &login_bytes("mc.example.com", "Two"),
        Duration::from_secs(3),
    );
    assert_ne!(seen.end, End::Open);
    assert!(
        log_line(tag, |_| true, Duration::from_secs(1)).is_some(),
        "[{}] no info line about the client refused at max_connections",
        F::NAME
    );
}

fn a_refusal_flood_is_counted_whole_once_a_second<F: Rt>() {
    // Both threads' listeners refuse; the proxy logs one line a second for all of them, and what the
    // last second held back is reported when that second is over, not with some later refusal.
    // The log is the process's: a limit of its own tells this proxy's lines from the other flavour's.
    let limit = if F::BIN == "nethergate" { 3 } else { 4 };
    let echo = Backend::echo();
    let px = Px::start::<F>(
        Layout::new()
            .main(&format!("max_connections = {limit}"))
            .server("a", &server_toml(&["mc.example.com"], &[echo.addr()], "")),
    );
    let _held: Vec<_> = (0..limit)
        .map(|i| logs_in(px.addr(), "mc.example.com", &format!("Held{i}")).expect("held"))
        .collect();
    let mark = log_mark();
    const REFUSED: u64 = 40;
    for _ in 0..REFUSED {
        let (seen, _) = attack(px.addr(), b"", Duration::from_secs(2));
        assert_ne!(seen.end, End::Open, "[{}] refused at once", F::NAME);
        std::thread::sleep(Duration::from_millis(25));
    }
    let refusal_lines = || -> Vec<String> {
        captured_logs()
            .get(mark..)
            .unwrap_or("")
            .lines()
            .filter(|l| {
                l.contains("max_connections reached") && l.contains(&format!("limit={limit} "))
            })
            .map(str::to_owned)
            .collect()
    };
    let counted = |lines: &[String]| -> u64 {
        lines
            .iter()
            .filter_map(|l| {
                l.split("refused=")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    assert!(
        wait_until(Duration::from_secs(5), || counted(&refusal_lines())
            == REFUSED),
        "[{}] refusals counted: {:?}",
        F::NAME,
        refusal_lines()
    );
    // About 1.5 s of flood: a line at its start, one a second later, and the tail (each second at most).
    let lines = refusal_lines();
    assert!(
        lines.len() <= 3,
        "[{}] {} lines: {lines:?}",
        F::NAME,
        lines.len()
    );
}

/// A backend address whose SYNs are dropped (a listener with a full accept queue), like a firewalled or
/// frozen host: dials to it hang until their timeout. Keep the returned sockets alive.
fn blackhole() -> (std::net::TcpListener, TcpStream, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    // SAFETY: listen(2) again on our own listening socket only changes its backlog.
    unsafe {
        libc::listen(l.as_raw_fd(), 0);
    }
    let addr = l.local_addr().expect("addr");
    let filler = TcpStream::connect(addr).expect("fill the accept queue");
    (l, filler, addr)
}

/// The `failures=N` counts of the `backend unreachable` lines about `backend` after `mark`, and the lines.
fn dial_failures_logged(mark: usize, backend: SocketAddr) -> (u64, Vec<String>) {
    let lines: Vec<String> = captured_logs()
        .get(mark..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("backend unreachable") && l.contains(&format!("backend={backend} ")))
        .map(str::to_owned)
        .collect();
    let counted = lines
        .iter()
        .filter_map(|l| {
            l.split("failures=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    (counted, lines)
}

/// Anyone who knows the host name of a server that is down can make the proxy dial it in a loop, even
/// with server-list pings: each address's failures are said at most once a second, counted whole, and
/// what the last second held back is reported when it is over.
fn a_down_backend_is_said_once_a_second_per_address<F: Rt>() {
    let (a, b) = (refused_addr(), refused_addr());
    let px = Px::start::<F>(
        Layout::new().server("down", &server_toml(&["down.example.com"], &[a, b], "")),
    );
    let mark = log_mark();
    const PINGS: u64 = 30;
    let started = Instant::now();
    for _ in 0..PINGS {
        let mut c = connect(px.addr());
        c.write_all(&status_bytes("down.example.com"))
            .expect("send");
        read_json_packet(&mut c).expect("the offline status");
        std::thread::sleep(Duration::from_millis(40));
    }
    let elapsed = started.elapsed();
    for backend in [a, b] {
        assert!(
            wait_until(Duration::from_secs(5), || dial_failures_logged(
                mark, backend
            )
            .0 == PINGS),
            "[{}] {backend}: {:?}",
            F::NAME,
            dial_failures_logged(mark, backend)
        );
        // A line at the start, one a second while the pings go on (about 1.2 s), and the tail.
        let (_, lines) = dial_failures_logged(mark, backend);
        let most = elapsed.as_secs() as usize + 2;
        assert!(
            lines.len() <= most,
            "[{}] {} lines over {elapsed:?}: {lines:#?}",
            F::NAME,
            lines.len()
        );
    }
    px.assert_settles(F::NAME, Duration::from_secs(3));
}

/// A player whose backend closed on it (a kick) and who keeps sending is drained (so no reset destroys the
/// kick) for up to `timeouts.read`, and the drain is fair: the other sessions on its thread go on, and
/// the limit is kept.
fn a_drained_flood_holds_up_no_other_session<F: Rt>() {
    let echo = Backend::echo();
    let login = login_bytes("kick.example.com", "Flood");
    let len = login.len();
    let kicker = Backend::start(move |mut s| {
        let mut head = vec![0u8; len];
        if s.read_exact(&mut head).is_ok() && s.write_all(b"bye").is_ok() {
            std::thread::sleep(Duration::from_millis(300));
        }
        // Closed with the flood unread: a reset to the proxy.
    });
    let layout = Layout::new()
        .server("a", &server_toml(&["mc.example.com"], &[echo.addr()], ""))
        .server(
            "kick",
            &server_toml(
                &["kick.example.com"],
                &[kicker.addr()],
                "[timeouts]\nread = \"2s\"",
            ),
        );
    // One session thread: the probe and the flood share it.
    let proc = Proc::start_with(F::BIN, &layout, None, &["--threads", "1"]);
    let addr = proc.addr;
    let mut probe = logs_in(addr, "mc.example.com", "Probe").expect("probe logs in");
    probe
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let stop = AtomicBool::new(false);
    let (worst, cut) = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            let mut c = connect(addr);
            c.write_all(&login).expect("send");
            let started = Instant::now();
            let chunk = vec![0x42u8; 64 * 1024];
            // Until the proxy closes the connection (a write fails), for 8 s at most.
            while started.elapsed() < Duration::from_secs(8) {
                if c.write_all(&chunk).is_err() {
                    stop.store(true, Ordering::SeqCst);
                    return Some(started.elapsed());
                }
            }
            stop.store(true, Ordering::SeqCst);
            None
        });
        let mut worst = Duration::ZERO;
        let mut buf = [0u8; 8];
        while !stop.load(Ordering::SeqCst) {
            let t = Instant::now();
            probe.write_all(b"ping1234").expect("probe write");
            probe.read_exact(&mut buf).expect("probe echo");
            worst = worst.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(20));
        }
        (worst, flood.join().expect("flood thread"))
    });
    let (_, lines) = proc.stop();
    let cut = cut.unwrap_or_else(|| panic!("[{}] the flood was never cut: {lines:#?}", F::BIN));
    // The backend closed at about 0.3 s; the drain ends 2 s after the copy did.
    assert!(
        cut < Duration::from_millis(4500),
        "[{}] the flood was cut after {cut:?}",
        F::BIN
    );
    assert!(
        worst < Duration::from_millis(500),
        "[{}] the other session waited {worst:?} for an echo",
        F::BIN
    );
}

fn blackholed_backend_fails_over_at_the_connect_timeout<F: Rt>() {
    let (_l, _filler, hole) = blackhole();
    let echo = Backend::echo();
    let px = Px::start::<F>(
        Layout::new()
            .server(
                "a",
                &server_toml(
                    &["mc.example.com"],
                    &[hole, echo.addr()],
                    "max_players = 1\n[timeouts]\nconnect = \"1s\"",
                ),
            )
            .server(
                "hole",
                &server_toml(
                    &["hole.example.com"],
                    &[hole],
                    "disconnect_message = \"Frozen\"\n[timeouts]\nconnect = \"1s\"",
                ),
            ),
    );
    // The first connection starts at the black hole and fails over to the echo backend.
    let t = Instant::now();
    let c = logs_in(px.addr(), "mc.example.com", "Steve")
        .unwrap_or_else(|e| panic!("[{}] failed over: {e}", F::NAME));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "[{}] after the 1 s connect timeout: {took:?}",
        F::NAME
    );
    drop(c);
    // Only the black hole: a login is told the message, a ping sees it as the MOTD, both after 1 s.
    let (seen, _) = attack(
        px.addr(),
        &login_bytes("hole.example.com", "Steve"),
        Duration::from_secs(4),
    );
    assert_eq!(
        disconnect_text(&seen.bytes).as_deref(),
        Some("Frozen"),
        "[{}] {seen:?}",
        F::NAME
    );
    assert!(seen.after >= Duration::from_millis(900) && seen.after < Duration::from_millis(2500));
    let (seen, _) = attack(
        px.addr(),
        &[status_bytes("hole.example.com"), ping(11)].concat(),
        Duration::from_secs(4),
    );
    let got = packets(&seen.bytes).unwrap_or_default();
    assert_eq!(
        got.iter().map(|p| p.0).collect::<Vec<_>>(),
        [0, 1],
        "[{}] status and pong ({seen:?})",
        F::NAME
    );
    px.assert_settles(F::NAME, Duration::from_secs(5));
    assert_eq!(px.players_on("a"), 0);
}

fn abort_is_not_held_up_by_a_pending_dial<F: Rt>() {
    // The second SIGINT/SIGTERM "closes every session at once" (Handle::abort, also what dropping a Running
    // does). A connection still dialling a black-holed backend is not watching for it.
    let (_l, _filler, hole) = blackhole();
    let px = Px::start::<F>(Layout::new().server(
        "hole",
        &server_toml(
            &["hole.example.com"],
            &[hole, hole, hole],
            "[timeouts]\nconnect = \"3s\"",
        ),
    ));
    let mut c = connect(px.addr());
    c.write_all(&login_bytes("hole.example.com", "Steve"))
        .expect("send");
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(px);
        let _ = tx.send(());
    });
    let stopped = rx.recv_timeout(Duration::from_secs(12)).is_ok();
    let took = t.elapsed();
    assert!(
        stopped && took < Duration::from_millis(1500),
        "[{}] abort took {took:?} (stopped: {stopped}): a dial to 3 black-holed addresses (3 s connect timeout \
         each) delays it",
        F::NAME
    );
}

// ---------------------------------------------------------------------------------------------------------
// Churn, half-close, early bytes

fn thousand_connections_opened_and_closed_rapidly<F: Rt>() {
    raise_fd_limit();
    let echo = Backend::echo();
    let px = Px::start::<F>(Layout::new().main("handshake_timeout = \"2s\"").server(
        "a",
        &server_toml(&["mc.example.com"], &[echo.addr()], "max_players = 10"),
    ));
    let login = login_bytes("mc.example.com", "Churn");
    let t = Instant::now();
    let mut last = None;
    for i in 0..1000 {
        let (mut c, tag) = connect_tagged(px.addr());
        last = Some(tag);
        match i % 5 {
            0 => drop(c),
            1 => {
                let _ = c.write_all(&login[..7]);
                drop(c);
            }
            2 => reset(c),
            3 => {
                let _ = c.write_all(&login);
                drop(c);
            }
            _ => {
                let _ = c.write_all(&login);
                reset(c);
            }
        }
    }
    let churn = t.elapsed();
    assert!(
        last.is_some_and(|t| final_line(t, IO_TIMEOUT).is_some()),
        "[{}] the last connection of the churn was seen",
        F::NAME
    );
    px.assert_settles(F::NAME, Duration::from_secs(10));
    assert_eq!(px.players_on("a"), 0, "[{}] every slot released", F::NAME);
    assert!(
        echo.connections() <= 400,
        "[{}] at most the 400 logins reached the backend: {}",
        F::NAME,
        echo.connections()
    );
    let players: Vec<_> = (0..10)
        .map(|i| logs_in(px.addr(), "mc.example.com", &format!("p{i}")))
        .collect::<io::Result<_>>()
        .unwrap_or_else(|e| panic!("[{}] 10 players after the churn ({churn:?}): {e}", F::NAME));
    drop(players);
    px.assert_settles(F::NAME, Duration::from_secs(5));
}

fn half_close_after_login_start_and_early_bytes_lose_nothing<F: Rt>() {
    for mode in ["passthrough", "zero_copy"] {
        for early in [0usize, 200 * 1024] {
            let login = login_bytes("mc.example.com", "Steve");
            let mut sent = login.clone();
            let mut noise = vec![0u8; early];
            Noise::new(7).fill(&mut noise);
            sent.extend(&noise);
            let expected = sent.clone();
            let (tx, rx) = mpsc::channel();
            let tx = std::sync::Mutex::new(tx);
            let backend = Backend::start(move |mut s| {
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got);
                let mut reply = vec![0u8; 150 * 1024];
                Noise::new(9).fill(&mut reply);
                let _ = s.write_all(&reply);
                if let Ok(tx) = tx.lock() {
                    let _ = tx.send(got);
                }
            });
            let px = Px::start::<F>(Layout::new().server(
                "a",
                &server_toml(
                    &["mc.example.com"],
                    &[backend.addr()],
                    &format!("proxy_mode = \"{mode}\""),
                ),
            ));
            let mut c = connect(px.addr());
            c.write_all(&sent).expect("send");
            c.shutdown(Shutdown::Write).expect("half-close");
            let got = rx.recv_timeout(IO_TIMEOUT).unwrap_or_else(|_| {
                panic!("[{}] {mode}, {early} early bytes: backend saw EOF", F::NAME)
            });
            assert!(
                got == expected,
                "[{}] {mode}, {early} early bytes: backend got {} bytes, first difference at {:?}",
                F::NAME,
                got.len(),
                got.iter().zip(&expected).position(|(a, b)| a != b)
            );
            expect_noise(&mut c, 9, 150 * 1024).unwrap_or_else(|e| {
                panic!(
                    "[{}] {mode}, {early} early bytes: client got the reply: {e}",
                    F::NAME
                )
            });
            px.assert_settles(F::NAME, Duration::from_secs(3));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The binary under a barrage

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / hz.max(1) as f64)
}

/// A running binary, its address, and every line it printed (stdout and stderr).
struct Proc {
    child: std::process::Child,
    addr: SocketAddr,
    rx: mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Proc {
    /// Starts `bin` on `layout`, with the open-file limits `nofile` (soft, hard) if given, and waits for it
    /// to listen.
    fn start(bin: &str, layout: &Layout, nofile: Option<(u64, u64)>) -> Proc {
        Proc::start_with(bin, layout, nofile, &[])
    }

    /// [`Proc::start`] with `args` after `--config`.
    fn start_with(bin: &str, layout: &Layout, nofile: Option<(u64, u64)>, args: &[&str]) -> Proc {
        let mut cmd = std::process::Command::new(binary(bin));
        cmd.arg("--config")
            .arg(layout.path())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some((soft, hard)) = nofile {
            limit_open_files(&mut cmd, soft, hard);
        }
        let mut child = cmd.spawn().expect("spawn the binary");
        let (tx, rx) = mpsc::channel::<String>();
        let out: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        for pipe in out {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut lines = Vec::new();
        let deadline = Instant::now() + IO_TIMEOUT;
        let addr = loop {
            let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{bin}: no listening line in {lines:#?}");
            };
            let addr = line
                .contains("listening")
                .then(|| {
                    line.split([' ', '"'])
                        .find_map(|w| w.strip_prefix("bind=")?.parse().ok())
                })
                .flatten();
            lines.push(line);
            if let Some(a) = addr {
                break a;
            }
        };
        Proc {
            child,
            addr,
            rx,
            lines,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then waits (15 s at most, then kills); the exit status if it exited by itself, and every line.
    fn stop(mut self) -> (Option<std::process::ExitStatus>, Vec<String>) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.pid() as libc::pid_t, libc::SIGTERM);
        }
        let t = Instant::now();
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break Some(s);
            }
            if t.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(50));
        self.lines.extend(self.rx.try_iter());
        (status, self.lines)
    }
}

/// Runs `attack` against a started binary; whatever happens, stops it, then checks it never panicked and
/// exited 0 on SIGTERM.
fn against_binary(
    bin: &str,
    layout: &Layout,
    nofile: Option<(u64, u64)>,
    attack: impl FnOnce(&mut Proc),
) {
    let mut proc = Proc::start(bin, layout, nofile);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| attack(&mut proc)));
    let (status, lines) = proc.stop();
    if let Err(p) = result {
        eprintln!("{bin} printed:\n{}", lines.join("\n"));
        std::panic::resume_unwind(p);
    }
    let panics: Vec<&String> = lines.iter().filter(|l| l.contains("panicked")).collect();
    assert!(panics.is_empty(), "[{bin}] panics: {panics:#?}");
    assert!(
        status.is_some_and(|s| s.success()),
        "[{bin}] SIGTERM exits 0: {status:?}"
    );
}

fn binary_survives_a_barrage<F: Rt>() {
    let echo = Backend::echo();
    let login = login_bytes("flood.example.com", "Sponge");
    let (flood, _flood_rx) = flooding_backend(login.len());
    let layout = Layout::new()
        .main("handshake_timeout = \"1s\"")
        .server("a", &server_toml(&["mc.example.com"], &[echo.addr()], ""))
        .server(
            "flood",
            &server_toml(
                &["flood.example.com"],
                &[flood.addr()],
                "[timeouts]\nwrite = \"1s\"",
            ),
        )
        .server(
            "down",
            &server_toml(&["down.example.com"], &[refused_addr()], ""),
        );
    against_binary(F::BIN, &layout, None, |proc| {
        let addr = proc.addr;
        logs_in(addr, "mc.example.com", "Before").expect("serving before");
        let rss_before = rss_kib(proc.pid()).unwrap_or(0);
        let hs = raw_handshake(765, b"mc.example.com", 25565, 2);
        let openings: Vec<Vec<u8>> = vec![
            vec![0xff; 5],
            vec![0x00],
            vec![0xff, 0xff, 0xff, 0xff, 0x0f],
            [varint(2 << 20), vec![0]].concat(),
            raw_handshake(765, b"mc.example.com", 25565, -1),
            frame(0, &[varint(765), varint(200), b"x".to_vec()].concat()),
            [hs.clone(), raw_login(b"ABCDEFGHIJKLMNOPQ")].concat(),
            [hs.clone(), raw_login(b"\xff\xfe")].concat(),
            vec![0xFE],
            vec![0xFE, 0x01, 0xFA, 0x00],
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            login_bytes(&"a".repeat(300), "Steve"),
            login_bytes("down.example.com", "Steve"),
            [status_bytes("down.example.com"), ping(5), ping(6)].concat(),
            [hs.clone(), raw_login(b"")].concat(),
        ];
        let mut open = Vec::new();
        for round in 0..4 {
            for o in &openings {
                let mut c = connect(addr);
                let _ = c.write_all(o);
                match round {
                    0 => reset(c),
                    1 => drop(c),
                    _ => open.push(c),
                }
            }
        }
        // Never-reading clients on a flooding backend, and slowloris connections.
        for _ in 0..8 {
            let c = connect(addr);
            receive_buffer(&c, SMALL_RECEIVE_BUFFER);
            let _ = (&c).write_all(&login);
            open.push(c);
        }
        for _ in 0..40 {
            let mut c = connect(addr);
            let _ = c.write_all(&[0x10]);
            open.push(c);
        }
        std::thread::sleep(Duration::from_secs(3));
        assert!(proc.alive(), "[{}] the proxy process died", F::BIN);
        logs_in(addr, "mc.example.com", "After").expect("still serving after the barrage");
        let rss_after = rss_kib(proc.pid()).unwrap_or(0);
        assert!(
            rss_after < rss_before + 64 * 1024,
            "[{}] memory stays bounded: {rss_before} KiB -> {rss_after} KiB",
            F::BIN
        );
        drop(open);
    });
}

fn binary_out_of_file_descriptors_backs_off_and_recovers<F: Rt>() {
    // 48 open files: a few dozen idle connections exhaust them; accept fails with EMFILE (and keeps
    // failing: the handshake timeout frees none of them while the test looks).
    let echo = Backend::echo();
    let layout = Layout::new()
        .main("handshake_timeout = \"20s\"")
        .server("a", &server_toml(&["mc.example.com"], &[echo.addr()], ""));
    against_binary(F::BIN, &layout, Some((48, 48)), |proc| {
        let addr = proc.addr;
        let idle: Vec<TcpStream> = (0..80).map(|_| connect(addr)).collect();
        std::thread::sleep(Duration::from_millis(300));
        let cpu_before = cpu_seconds(proc.pid()).unwrap_or(0.0);
        std::thread::sleep(Duration::from_secs(1));
        let cpu = cpu_seconds(proc.pid()).unwrap_or(0.0) - cpu_before;
        assert!(
            cpu < 0.5,
            "[{}] out of descriptors, the accept loop backs off instead of spinning ({cpu:.2} s CPU in 1 s)",
            F::BIN
        );
        assert!(proc.alive(), "[{}] alive out of descriptors", F::BIN);
        drop(idle);
        let player = wait_until(Duration::from_secs(6), || {
            logs_in(addr, "mc.example.com", "Steve").is_ok()
        });
        assert!(
            player,
            "[{}] serves players again once descriptors are back",
            F::BIN
        );
        // The first failure at once, then the summary of those held back (within a second or so); both
        // say which error it was.
        let deadline = Instant::now() + Duration::from_secs(5);
        let warned = loop {
            let warned: Vec<String> = printed(proc)
                .into_iter()
                .filter(|l| l.contains("accept failed"))
                .collect();
            if warned.len() >= 2 || Instant::now() >= deadline {
                break warned;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            warned.len() >= 2,
            "[{}] the admin is told accept failed, then how often: {warned:?}",
            F::BIN
        );
        // The failures held back when they stopped are summarised once their second is over.
        std::thread::sleep(Duration::from_millis(1500));
        let warned: Vec<String> = printed(proc)
            .into_iter()
            .filter(|l| l.contains("accept failed"))
            .collect();
        assert!(
            warned.iter().all(|l| l.contains("error=")),
            "[{}] {warned:?}",
            F::BIN
        );
        // Out of descriptors again, a SIGTERM still stops the accepting: every accept fails at once then,
        // so the stop must not wait for one to block.
        let _idle: Vec<TcpStream> = (0..80).map(|_| connect(addr)).collect();
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(proc.pid() as libc::pid_t, libc::SIGTERM);
        }
        let stopped = wait_until(Duration::from_secs(3), || {
            printed(proc)
                .iter()
                .any(|l| l.contains("no longer accepting"))
        });
        assert!(
            stopped,
            "[{}] SIGTERM out of descriptors stops the accepting: {:#?}",
            F::BIN,
            printed(proc)
        );
    });
}

/// The soft and hard open-file limits of process `pid`, from `/proc/<pid>/limits`.
fn open_file_limits(pid: u32) -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .map(|w| w.parse::<u64>().ok());
    Some((numbers.next()??, numbers.next()??))
}

/// Every line `proc` printed so far.
fn printed(proc: &mut Proc) -> Vec<String> {
    proc.lines.extend(proc.rx.try_iter());
    proc.lines.clone()
}

/// Starts `F`'s binary with an echo backend for `mc.example.com`, `main` in the main file and the
/// open-file limits `soft` and `hard`, checks it raised its soft limit to `hard`, then runs `check`.
fn with_open_file_limits<F: Rt>(main: &str, soft: u64, hard: u64, check: impl FnOnce(&mut Proc)) {
    let echo = Backend::echo();
    let layout = Layout::new()
        .main(main)
        .server("a", &server_toml(&["mc.example.com"], &[echo.addr()], ""));
    against_binary(F::BIN, &layout, Some((soft, hard)), |proc| {
        assert_eq!(
            open_file_limits(proc.pid()),
            Some((hard, hard)),
            "[{}] soft limit {soft} raised to the hard limit",
            F::BIN
        );
        check(proc)
    });
}

fn binary_raises_its_open_file_limit_to_the_hard_limit<F: Rt>() {
    // Started as a service often is (soft 1,024, here 64; hard much higher): 100 players need 200
    // descriptors, which only the raised limit allows.
    with_open_file_limits::<F>("", 64, 8_192, |proc| {
        let mut players = Vec::new();
        for i in 0..100 {
            match logs_in(proc.addr, "mc.example.com", &format!("Player{i}")) {
                Ok(p) => players.push(p),
                Err(e) => panic!("[{}] player {i} of 100: {e}", F::BIN),
            }
        }
        for (i, p) in players.iter_mut().enumerate() {
            let msg = format!("still here {i}");
            p.write_all(msg.as_bytes()).expect("write");
            let mut back = vec![0u8; msg.len()];
            p.read_exact(&mut back).expect("echo");
            assert_eq!(back, msg.as_bytes(), "[{}] player {i}", F::BIN);
        }
        let lines = printed(proc);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("raised the open-file limit") && l.contains("to=8192")),
            "[{}] the raise is logged: {lines:#?}",
            F::BIN
        );
        assert!(
            !lines
                .iter()
                // (The test layout's `bind` on port 0 is warned about, rightly, and is not the point.)
                .any(|l| l.contains("accept failed")
                    || (l.contains("WARN") && !l.contains("key=bind"))),
            "[{}] no warning: {lines:#?}",
            F::BIN
        );
    });
}

fn binary_warns_when_the_hard_open_file_limit_is_too_low<F: Rt>() {
    with_open_file_limits::<F>("max_connections = 500", 64, 256, |proc| {
        assert!(
            logs_in(proc.addr, "mc.example.com", "Steve").is_ok(),
            "[{}] serves",
            F::BIN
        );
        let lines = printed(proc);
        assert!(
            lines.iter().any(|l| l.contains("WARN")
                && l.contains("max_connections is 500")
                && l.contains("open-file limit of 256 allows about 112 connections")),
            "[{}] the admin is told the limit is too low: {lines:#?}",
            F::BIN
        );
    });
}

// ---------------------------------------------------------------------------------------------------------

macro_rules! hostile {
    ($module:ident: $flavor:ty => $($test:ident),* $(,)?; ignored: $($bug:ident = $why:literal),* $(,)?) => {
        mod $module {
            $( #[test] fn $test() { super::$test::<$flavor>() } )*
            $( #[test] #[ignore = $why] fn $bug() { super::$bug::<$flavor>() } )*
        }
    };
}

macro_rules! both {
    ($($body:tt)*) => {
        hostile!(tokio_runtime: nethergate_e2e::Tokio => $($body)*);
        hostile!(smol_runtime: nethergate_e2e::Smol => $($body)*);
    };
}

both!(
    malformed_openings_are_closed_at_once_with_a_reason,
    legacy_pings_get_a_legacy_answer_and_are_closed,
    a_modern_clients_legacy_fallback_gets_no_answer,
    legacy_logins_are_told_to_update_and_closed,
    non_minecraft_protocols_are_closed_at_once_or_at_the_handshake_timeout,
    slowloris_and_trickled_frames_are_cut_at_the_handshake_timeout,
    odd_hosts_are_refused_or_forwarded_untouched,
    odd_but_valid_player_names_pass_through_untouched,
    offline_status_misuse_gets_one_answer_then_close,
    resets_mid_handshake_and_mid_forward_leak_nothing,
    reset_client_on_a_backend_that_ignores_eof_ends_by_the_read_timeout,
    client_that_never_reads_is_cut_by_the_write_timeout,
    a_slow_but_steady_reader_is_not_cut_by_the_write_timeout,
    bytes_counted_are_the_bytes_delivered_when_a_write_is_cut,
    backend_closing_while_the_client_still_sends_loses_none_of_its_bytes,
    backend_that_never_reads_is_cut_by_the_write_timeout,
    hostile_backends_give_the_client_a_clear_end,
    thousand_connections_opened_and_closed_rapidly,
    half_close_after_login_start_and_early_bytes_lose_nothing,
    binary_survives_a_barrage,
    binary_out_of_file_descriptors_backs_off_and_recovers,
    binary_raises_its_open_file_limit_to_the_hard_limit,
    binary_warns_when_the_hard_open_file_limit_is_too_low,
    blackholed_backend_fails_over_at_the_connect_timeout,
    max_connections_holds_under_a_flood_of_idle_connections,
    modern_handshake_whose_length_starts_with_0xfe_is_routed,
    status_handshake_alone_is_closed_at_the_handshake_timeout,
    unicode_domain_matches_what_vanilla_clients_send,
    timeouts_too_long_for_a_clock_are_rejected,
    abort_is_not_held_up_by_a_pending_dial,
    max_connections_refusal_is_logged,
    a_refusal_flood_is_counted_whole_once_a_second,
    a_down_backend_is_said_once_a_second_per_address,
    a_drained_flood_holds_up_no_other_session,
    client_controlled_host_cannot_forge_log_fields,
    probes_that_send_nothing_are_not_logged_at_info;
    ignored:
);
