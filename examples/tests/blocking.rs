//! The blocking adapter over real sockets on 127.0.0.1. Every socket has read and write timeouts, so a
//! bug fails a test instead of hanging it.

use nethergate_core::handshake::Handshake;
use nethergate_core::login::LoginStart;
use nethergate_core::session::UNKNOWN_HOST_MESSAGE;
use nethergate_core::{Config, NextState, Plugins};
use nethergate_examples::blocking::BlockingProxy;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// Limit on anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(10);

const MIB: usize = 1024 * 1024;

/// A proxy whose servers are `(name, domains, backend)`, from config files in a temp dir.
fn proxy(servers: &[(&str, &str, SocketAddr)], handshake_timeout: &str) -> BlockingProxy {
    proxy_reading(servers, handshake_timeout, "10s")
}

/// [`proxy`] with `read` as every server's `timeouts.read`, and `disconnect_message = "Lobby down"`.
fn proxy_reading(
    servers: &[(&str, &str, SocketAddr)],
    handshake_timeout: &str,
    read: &str,
) -> BlockingProxy {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("servers")).unwrap();
    let main = dir.path().join("nethergate.toml");
    std::fs::write(
        &main,
        format!("bind = \"127.0.0.1:0\"\nservers_dir = \"servers\"\nhandshake_timeout = \"{handshake_timeout}\"\n"),
    )
    .unwrap();
    for (name, domains, backend) in servers {
        std::fs::write(
            dir.path().join("servers").join(format!("{name}.toml")),
            format!("domains = {domains}\naddresses = [\"{backend}\"]\ndisconnect_message = \"Lobby down\"\n[timeouts]\nread = \"{read}\"\nwrite = \"10s\"\n"),
        )
        .unwrap();
    }
    let config = Config::load(&main).unwrap();
    BlockingProxy::start(config, Plugins::new()).unwrap()
}

/// A backend listener that never blocks in `accept`.
fn backend() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn with_timeouts(stream: TcpStream) -> TcpStream {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// The next connection to `listener`, if one comes within `limit`.
fn accept_within(listener: &TcpListener, limit: Duration) -> Option<TcpStream> {
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((stream, _)) => return Some(with_timeouts(stream)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return None,
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    with_timeouts(TcpStream::connect_timeout(&addr, PATIENCE).unwrap())
}

/// A 1.20.4 handshake (login) for `host` plus a login start for `name`.
fn login(host: &str, name: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    Handshake {
        protocol_version: 765,
        server_address: host,
        port: 25565,
        next_state: NextState::Login,
    }
    .encode(&mut bytes);
    LoginStart {
        name,
        tail: &[0x42; 16],
    }
    .encode(&mut bytes);
    bytes
}

/// Deterministic pseudo-random numbers (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Compares without printing megabytes on failure.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    let first_diff = got.iter().zip(want).position(|(a, b)| a != b);
    assert!(
        got.len() == want.len() && first_diff.is_none(),
        "{what}: got {} bytes, want {}, first difference at {first_diff:?}",
        got.len(),
        want.len()
    );
}

fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Waits for the backend thread, checks every session ended, and stops the proxy.
fn ends(proxy: BlockingProxy, server: thread::JoinHandle<()>) {
    server.join().unwrap();
    assert!(
        wait_until(|| proxy.registry().is_empty()),
        "session never ended"
    );
    proxy.shutdown();
}

#[test]
fn routed_login_reaches_its_backend_byte_for_byte() {
    let (lobby, lobby_addr) = backend();
    let (survival, survival_addr) = backend();
    let proxy = proxy(
        &[
            ("lobby", "[\"lobby.example.com\"]", lobby_addr),
            ("survival", "[\"*.survival.example.com\"]", survival_addr),
        ],
        "5s",
    );
    let mut sent = login("Play.Survival.example.com.\0FML2\0", "Steve");
    sent.extend_from_slice(b"bytes right after the login start");
    let expected = sent.clone();
    let server = thread::spawn(move || {
        let mut conn = accept_within(&survival, PATIENCE).expect("survival was dialled");
        let mut got = vec![0; expected.len()];
        conn.read_exact(&mut got).unwrap();
        assert_same(&got, &expected, "what the backend received");
        conn.write_all(b"welcome, Steve").unwrap();
        // Wait for the client to leave, then leave too.
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "unexpected extra bytes {rest:?}");
    });

    let mut client = connect(proxy.addr());
    client.write_all(&sent).unwrap();
    let mut reply = [0; 14];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"welcome, Steve");
    let sessions = proxy.registry().sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].player.as_deref(), Some("Steve"));
    assert_eq!(&*sessions[0].server, "survival");

    client.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(
        accept_within(&lobby, Duration::ZERO).is_none(),
        "lobby was dialled"
    );
    ends(proxy, server);
}

#[test]
fn unknown_host_is_closed_without_dialling() {
    let (lobby, lobby_addr) = backend();
    let proxy = proxy(&[("lobby", "[\"lobby.example.com\"]", lobby_addr)], "5s");
    let mut client = connect(proxy.addr());
    client
        .write_all(&login("elsewhere.example.org", "Steve"))
        .unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains(UNKNOWN_HOST_MESSAGE),
        "not a disconnect: {answer:?}"
    );
    assert!(accept_within(&lobby, Duration::from_millis(200)).is_none());
    assert!(proxy.registry().is_empty());

    let addr = proxy.addr();
    proxy.shutdown();
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn half_close_loses_no_byte_either_way() {
    let (listener, backend_addr) = backend();
    let proxy = proxy(&[("lobby", "[\"lobby.example.com\"]", backend_addr)], "5s");
    let opening = login("lobby.example.com", "Steve");
    let up = Rng(1).bytes(4 * MIB);
    let down = Rng(2).bytes(4 * MIB);

    let (up_want, down_send, opening_want) = (up.clone(), down.clone(), opening.clone());
    let server = thread::spawn(move || {
        let conn = accept_within(&listener, PATIENCE).expect("backend was dialled");
        let mut got = vec![0; opening_want.len()];
        (&conn).read_exact(&mut got).unwrap();
        assert_same(&got, &opening_want, "opening");
        thread::scope(|s| {
            let (first, second) = down_send.split_at(2 * MIB);
            let (saw_eof_tx, saw_eof) = std::sync::mpsc::channel();
            // Half of the reply goes while the client is still sending, half after its EOF.
            let mut conn = &conn;
            s.spawn(move || {
                conn.write_all(first).unwrap();
                saw_eof.recv_timeout(PATIENCE).unwrap();
                conn.write_all(second).unwrap();
                conn.shutdown(Shutdown::Write).unwrap();
            });
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            saw_eof_tx.send(()).unwrap();
            assert_same(&got, &up_want, "client to backend");
        });
    });

    let client = connect(proxy.addr());
    thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Rng(3);
            (&client).write_all(&opening).unwrap();
            let mut rest = up.as_slice();
            while !rest.is_empty() {
                let n = (1 + rng.next() as usize % (64 * 1024)).min(rest.len());
                (&client).write_all(&rest[..n]).unwrap();
                rest = &rest[n..];
            }
            client.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        (&client).read_to_end(&mut got).unwrap();
        assert_same(&got, &down, "backend to client");
    });
    ends(proxy, server);
}

#[test]
fn silent_client_is_closed_at_the_handshake_timeout() {
    let (_lobby, lobby_addr) = backend();
    let proxy = proxy(&[("lobby", "[\"lobby.example.com\"]", lobby_addr)], "300ms");
    let started = Instant::now();
    let mut client = connect(proxy.addr());
    client.write_all(&[0x10, 0x00]).unwrap(); // the start of a handshake frame, then nothing
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    let waited = started.elapsed();
    assert!(answer.is_empty(), "{answer:?}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    proxy.shutdown();
}

/// A backend that sends its last bytes and closes while the player is still sending: the proxy cannot
/// write the player's bytes any more, but everything the backend sent reaches the player, then a clean
/// end of stream. Closing the player's socket with its bytes unread would answer with a reset that
/// destroys what is still queued for a slow reader.
#[test]
fn a_backend_closing_on_a_sending_player_loses_none_of_its_bytes() {
    let (listener, backend_addr) = backend();
    let proxy = proxy(&[("lobby", "[\"lobby.example.com\"]", backend_addr)], "5s");
    let opening = login("lobby.example.com", "Steve");
    let down = Rng(4).bytes(2 * MIB);
    let (down_send, opening_len) = (down.clone(), opening.len());
    let server = thread::spawn(move || {
        let mut conn = accept_within(&listener, PATIENCE).expect("backend was dialled");
        let mut got = vec![0; opening_len];
        conn.read_exact(&mut got).unwrap();
        conn.write_all(&down_send).unwrap();
        // Time for the proxy to take it all in (it reads ahead of a slow player on loopback), then a
        // close with the player's chatter unread: a reset to the proxy.
        thread::sleep(Duration::from_millis(500));
    });
    let client = connect(proxy.addr());
    (&client).write_all(&opening).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (got, end) = thread::scope(|s| {
        // The player keeps talking (movement, keep-alives) until the end of the stream.
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if (&client).write_all(&[0x55; 20]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        // A slow reader: 4 KiB every 2 ms.
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        let end = loop {
            match (&client).read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
            thread::sleep(Duration::from_millis(2));
        };
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (got, end)
    });
    assert!(
        end.is_ok(),
        "the stream ended with {end:?} after {} bytes",
        got.len()
    );
    assert_same(&got, &down, "backend to client");
    drop(client);
    ends(proxy, server);
}

/// A backend that accepts and then says nothing until `timeouts.read` ends the session is as unreachable
/// to the player as one that closes at once: the player is told `disconnect_message`.
#[test]
fn a_backend_silent_until_the_idle_limit_gets_the_player_its_disconnect_message() {
    let (listener, backend_addr) = backend();
    let proxy = proxy_reading(
        &[("lobby", "[\"lobby.example.com\"]", backend_addr)],
        "5s",
        "1s",
    );
    // Many at once: both directions of a session time out together, and the message is told once.
    const PLAYERS: usize = 40;
    let server = thread::spawn(move || {
        let hung: Vec<_> = (0..PLAYERS)
            .map(|_| {
                let conn = accept_within(&listener, PATIENCE).expect("backend was dialled");
                // Hung: sends nothing; reads (and drops) until the proxy closes.
                thread::spawn(move || {
                    let _ = (&conn).read_to_end(&mut Vec::new());
                })
            })
            .collect();
        hung.into_iter().for_each(|h| h.join().unwrap());
    });
    let started = Instant::now();
    let players: Vec<_> = (0..PLAYERS)
        .map(|i| {
            let addr = proxy.addr();
            thread::spawn(move || {
                let mut client = connect(addr);
                client
                    .write_all(&login("lobby.example.com", &format!("Steve{i}")))
                    .unwrap();
                let mut answer = Vec::new();
                client.read_to_end(&mut answer).unwrap();
                answer
            })
        })
        .collect();
    for player in players {
        let answer = player.join().unwrap();
        let told = String::from_utf8_lossy(&answer)
            .matches("Lobby down")
            .count();
        assert_eq!(told, 1, "the player got {answer:?}");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    ends(proxy, server);
}
