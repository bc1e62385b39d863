//! The end-to-end suite: every test runs against every runtime (see the `suite!` invocation at the end).

use nethergate_core::{Decision, NextState, Plugins, PreConnect, PreConnectEvent};
use nethergate_e2e::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

/// What a log line of the connection from `c` holds: `client=<its address> ` (the port alone would also
/// match a longer port, or an address field of another line).
fn client_needle(c: &std::net::TcpStream) -> String {
    format!("client={} ", c.local_addr().expect("local address"))
}

fn start<F: Flavor>(layout: &Layout) -> Box<dyn Started> {
    capture_logs();
    F::start(layout.load(), Plugins::new()).expect("proxy starts")
}

/// Logs in as `player` at `host` and checks the backend echoes the login back (so it was forwarded).
fn login_echoed(proxy: SocketAddr, host: &str, player: &str) -> std::net::TcpStream {
    let mut c = connect(proxy);
    let bytes = login_bytes(host, player);
    c.write_all(&bytes).expect("send login");
    let mut back = vec![0u8; bytes.len()];
    c.read_exact(&mut back).expect("echo of the login");
    assert_eq!(back, bytes);
    c
}

fn routing_by_exact_and_wildcard_domain<F: Flavor>() {
    let (a, rx_a) = Backend::recording(false);
    let (b, rx_b) = Backend::recording(false);
    let layout = Layout::new()
        .server(
            "exact",
            &server_toml(&["play.example.com"], &[a.addr()], ""),
        )
        .server("wild", &server_toml(&["*.example.com"], &[b.addr()], ""));
    let proxy = start::<F>(&layout);
    login_echoed(proxy.addr(), "play.example.com", "Alice");
    login_echoed(proxy.addr(), "eu.example.com", "Bob");
    let ra = rx_a
        .recv_timeout(IO_TIMEOUT)
        .expect("exact backend saw a login");
    let rb = rx_b
        .recv_timeout(IO_TIMEOUT)
        .expect("wildcard backend saw a login");
    assert_eq!(
        (ra.player.as_deref(), ra.server_address.as_str()),
        (Some("Alice"), "play.example.com")
    );
    assert_eq!(
        (rb.player.as_deref(), rb.server_address.as_str()),
        (Some("Bob"), "eu.example.com")
    );
    assert_eq!((a.connections(), b.connections()), (1, 1), "[{}]", F::NAME);
    drop(proxy);
}

fn unknown_host_is_refused_without_touching_a_backend<F: Flavor>() {
    let a = Backend::echo();
    let layout = Layout::new().server("a", &server_toml(&["a.example.com"], &[a.addr()], ""));
    let proxy = start::<F>(&layout);
    let mut c = connect(proxy.addr());
    c.write_all(&login_bytes("nobody.example.org", "Eve"))
        .unwrap();
    let (id, json) = read_json_packet(&mut c).expect("a login disconnect");
    assert_eq!(id, 0);
    assert!(
        json["text"].as_str().unwrap_or("").contains("Unknown"),
        "{json}"
    );
    assert!(
        reads_eof(&mut c),
        "[{}] closed after the disconnect",
        F::NAME
    );
    // Status for an unknown host: closed, no answer.
    let mut c = connect(proxy.addr());
    c.write_all(&status_bytes("nobody.example.org")).unwrap();
    assert!(reads_eof(&mut c));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(a.connections(), 0, "[{}] no backend was contacted", F::NAME);
    drop(proxy);
}

/// Starts a proxy whose one server claims `domains`, and checks a login at each of `hosts` reaches it
/// with its host forwarded untouched.
fn each_is_forwarded_untouched<F: Flavor>(domains: &[&str], hosts: &[&str]) -> Box<dyn Started> {
    let (a, rx) = Backend::recording(false);
    let layout = Layout::new().server("a", &server_toml(domains, &[a.addr()], ""));
    let proxy = start::<F>(&layout);
    for host in hosts {
        login_echoed(proxy.addr(), host, "Steve");
        let r = rx.recv_timeout(IO_TIMEOUT).expect("routed");
        assert_eq!(r.server_address, *host, "[{}] forwarded untouched", F::NAME);
    }
    proxy
}

fn forge_marker_trailing_dot_and_case_are_routed<F: Flavor>() {
    let hosts = [
        "mc.example.com\0FML2\0",
        "MC.Example.COM.",
        "mc.example.com.\0FORGE",
        "mc.example.com\0FML\0",
    ];
    drop(each_is_forwarded_untouched::<F>(
        &["mc.example.com"],
        &hosts,
    ));
}

fn ipv6_address_hosts_are_routed_in_any_spelling<F: Flavor>() {
    // A player who connects by IPv6 address sends it as the host, in whatever spelling was typed.
    let hosts = [
        "2001:db8::5",
        "2001:DB8:0:0:0:0:0:5",
        "[2001:db8::5]",
        "::1",
        "0:0:0:0:0:0:0:1",
        "::1\0FML3\0",
    ];
    let proxy = each_is_forwarded_untouched::<F>(&["2001:db8::5", "[::1]"], &hosts);
    for unknown in ["2001:db8::6", "[::1]:25565"] {
        let mut c = connect(proxy.addr());
        c.write_all(&login_bytes(unknown, "Eve"))
            .expect("send login");
        let (_, json) = read_json_packet(&mut c).expect("a login disconnect");
        assert!(
            json["text"].as_str().unwrap_or("").contains("Unknown"),
            "[{}] {unknown}: {json}",
            F::NAME
        );
    }
    drop(proxy);
}

fn domain_rewrite_modes_change_only_the_host<F: Flavor>() {
    let (a, rx_a) = Backend::recording(false);
    let (b, rx_b) = Backend::recording(false);
    let (c, rx_c) = Backend::recording(false);
    let from_backend = format!("localhost:{}", b.addr().port());
    let layout = Layout::new()
        .server("explicit", &server_toml(&["x.example.com"], &[a.addr()], "domain_rewrite = { explicit = \"internal.lobby\" }"))
        .server(
            "frombackend",
            &format!("domains = [\"y.example.com\"]\naddresses = [\"{from_backend}\"]\ndomain_rewrite = \"from_backend\"\n"),
        )
        .server("none", &server_toml(&["z.example.com"], &[c.addr()], "domain_rewrite = \"none\""));
    let proxy = start::<F>(&layout);

    let bytes = login_bytes("X.example.com.\0FML3\0", "Steve");
    let mut s = connect(proxy.addr());
    s.write_all(&bytes).unwrap();
    let r = rx_a.recv_timeout(IO_TIMEOUT).expect("explicit");
    assert_eq!(r.server_address, "internal.lobby\0FML3\0");
    assert_eq!(r.protocol_version, 765);
    assert_eq!(r.player.as_deref(), Some("Steve"));

    let mut s2 = connect(proxy.addr());
    s2.write_all(&login_bytes("y.example.com", "Alex")).unwrap();
    let r = rx_b.recv_timeout(IO_TIMEOUT).expect("from_backend");
    assert_eq!(r.server_address, "localhost");

    let raw = login_bytes("z.example.com\0FML2\0", "Sam");
    let mut s3 = connect(proxy.addr());
    s3.write_all(&raw).unwrap();
    let r = rx_c.recv_timeout(IO_TIMEOUT).expect("none");
    assert_eq!(
        r.handshake_frame,
        raw[..r.handshake_frame.len()],
        "[{}] untouched bytes",
        F::NAME
    );
    drop((s, s2, s3));
    drop(proxy);
}

fn proxy_protocol_carries_the_real_client_address<F: Flavor>() {
    for version in [2, 1] {
        let (a, rx) = Backend::recording(true);
        let layout = Layout::new().server(
            "a",
            &server_toml(
                &["mc.example.com"],
                &[a.addr()],
                &format!("send_proxy_protocol = true\nproxy_protocol_version = {version}"),
            ),
        );
        let proxy = start::<F>(&layout);
        let c = login_echoed(proxy.addr(), "mc.example.com", "Steve");
        let r = rx
            .recv_timeout(IO_TIMEOUT)
            .expect("backend got a PROXY header");
        assert_eq!(
            r.proxied_client,
            Some(c.local_addr().unwrap()),
            "[{}] v{version}",
            F::NAME
        );
        if version == 1 {
            assert!(r
                .proxy_header
                .starts_with(b"PROXY TCP4 127.0.0.1 127.0.0.1 "));
        } else {
            assert_eq!(&r.proxy_header[..12], b"\r\n\r\n\0\r\nQUIT\n");
        }
        drop(proxy);
    }
}

fn failover_to_the_next_address<F: Flavor>() {
    let (a, rx) = Backend::recording(false);
    let layout = Layout::new().server(
        "a",
        &server_toml(
            &["mc.example.com"],
            &[refused_addr(), a.addr()],
            "[timeouts]\nconnect = \"2s\"",
        ),
    );
    let proxy = start::<F>(&layout);
    for _ in 0..3 {
        login_echoed(proxy.addr(), "mc.example.com", "Steve");
        rx.recv_timeout(IO_TIMEOUT)
            .expect("the live backend got every login");
    }
    drop(proxy);
}

fn disconnect_message_when_every_backend_is_down<F: Flavor>() {
    let layout = Layout::new().main("handshake_timeout = \"1s\"").server(
        "a",
        &server_toml(
            &["mc.example.com"],
            &[refused_addr(), refused_addr()],
            "disconnect_message = \"Down for maintenance\"\nmax_players = 20",
        ),
    );
    let proxy = start::<F>(&layout);
    assert_login_refused(
        proxy.addr(),
        "mc.example.com",
        "Steve",
        "Down for maintenance",
        &format!("[{}]", F::NAME),
    );

    let mut c = connect(proxy.addr());
    c.write_all(&status_bytes("mc.example.com")).unwrap();
    let (id, json) = read_json_packet(&mut c).expect("status response");
    assert_eq!(id, 0);
    assert_eq!(json["description"]["text"], "Down for maintenance");
    assert_eq!(json["version"]["protocol"], 765);
    assert_eq!(json["players"]["max"], 20);
    let mut ping = Vec::new();
    nethergate_core::codec::write_frame(&mut ping, 0x01, &0x1234_5678_9abc_def0u64.to_be_bytes());
    c.write_all(&ping).unwrap();
    let (id, body) = read_packet(&mut c).expect("pong");
    assert_eq!(
        (id, body.as_slice()),
        (1, &0x1234_5678_9abc_def0u64.to_be_bytes()[..])
    );
    assert!(reads_eof(&mut c));

    // A client that reads its status and never pings was served all the same (not a handshake timeout).
    let mut c = connect(proxy.addr());
    c.write_all(&status_bytes("mc.example.com")).unwrap();
    read_json_packet(&mut c).expect("status response");
    let port = client_needle(&c);
    assert!(
        reads_eof(&mut c),
        "[{}] closed at the handshake timeout",
        F::NAME
    );
    let served = [
        "connection closed before forwarding",
        "reason=StatusServed",
        &port,
    ];
    assert!(wait_for_log(&served, IO_TIMEOUT).is_some(), "[{}]", F::NAME);
    drop(proxy);
}

/// A backend that takes the connection and closes or resets it before sending a byte (crashed, still
/// starting, full accept backlog of a dying process): the player gets the server's `disconnect_message`
/// as a Login Disconnect instead of a bare "end of stream", and a server-list ping the offline status
/// (the message as MOTD, as when no backend answers), then the close without a pong. A backend that
/// answered first is passed through untouched.
fn silent_backend_close_sends_the_disconnect_message_in<F: Flavor>(mode: &str) {
    let backend = Backend::start(move |mut s| {
        // The handshake, then the login start (or status request).
        let (Ok(_), Ok(head)) = (read_frame_bytes(&mut s), read_frame_bytes(&mut s)) else {
            return;
        };
        let player = |name: &[u8]| head.windows(name.len()).any(|w| w == name);
        // Player "Reset": an abortive close (RST); "Spoke": one byte first; anyone else: FIN.
        if player(b"Reset") {
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        } else if player(b"Spoke") {
            let _ = s.write_all(&[0x42]);
        }
    });
    let layout = Layout::new().server(
        "a",
        &server_toml(
            &["mc.example.com"],
            &[backend.addr()],
            &format!("proxy_mode = \"{mode}\"\ndisconnect_message = \"Back in 5 minutes\""),
        ),
    );
    let proxy = start::<F>(&layout);
    for player in ["Steve", "Reset"] {
        let what = format!("[{}] {mode} {player}", F::NAME);
        assert_login_refused(
            proxy.addr(),
            "mc.example.com",
            player,
            "Back in 5 minutes",
            &what,
        );
    }
    // The backend spoke first: its byte, then its close, nothing of the proxy's own.
    let mut c = connect(proxy.addr());
    c.write_all(&login_bytes("mc.example.com", "Spoke"))
        .unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, [0x42], "[{}] {mode}", F::NAME);
    // A status ping is not a login: the offline status, not a Login Disconnect; then no pong.
    for host in ["mc.example.com", "MC.example.com."] {
        let mut c = connect(proxy.addr());
        c.write_all(&status_bytes(host)).unwrap();
        let (id, json) = read_json_packet(&mut c).expect("the offline status");
        assert_eq!(id, 0, "[{}] {mode}", F::NAME);
        assert_eq!(json["description"]["text"], "Back in 5 minutes");
        assert_eq!(json["version"]["protocol"], 765);
        let mut ping = Vec::new();
        nethergate_core::codec::write_frame(&mut ping, 0x01, &7u64.to_be_bytes());
        let _ = c.write_all(&ping); // may find the connection closed already
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "[{}] {mode}: {rest:?} after the status",
            F::NAME
        );
    }
    drop(proxy);
}

/// A backend that accepts and then says nothing (one still starting, or hung) gets the player the
/// `disconnect_message` when the read timeout ends the session, as a backend that closes does (a server-list
/// ping the offline status).
fn hung_backend_times_out_with_the_disconnect_message_in<F: Flavor>(mode: &str) {
    let backend = Backend::start(|mut s| {
        let (_, head) = (read_frame_bytes(&mut s), read_frame_bytes(&mut s));
        if head.is_ok_and(|h| h.windows(7).any(|w| w == b"Flooder")) {
            // Hung for good: reads nothing more, so what its player sends piles up in the proxy.
            std::thread::sleep(Duration::from_secs(4));
            return;
        }
        // Hold the connection, silent, until the proxy closes it.
        let _ = s.read_to_end(&mut Vec::new());
    });
    let layout = Layout::new().server(
        "a",
        &server_toml(
            &["mc.example.com"],
            &[backend.addr()],
            &format!(
                "proxy_mode = \"{mode}\"\ndisconnect_message = \"Still starting\"\n[timeouts]\nread = \"1s\""
            ),
        ),
    );
    let proxy = start::<F>(&layout);
    let started = Instant::now();
    let what = format!("[{}] {mode}", F::NAME);
    assert_login_refused(
        proxy.addr(),
        "mc.example.com",
        "Waiter",
        "Still starting",
        &what,
    );
    assert!(started.elapsed() >= Duration::from_millis(900), "{what}");
    // This test's line: its backend is its own.
    let backend_needle = format!("backend={} ", backend.addr());
    let ended = ["session ended", "b2c=0", "reason=Timeout", &backend_needle];
    assert!(wait_for_log(&ended, IO_TIMEOUT).is_some(), "{what}");
    // A player who keeps sending meanwhile (a modded client, say): its bytes lie unread in the proxy when
    // the session times out, and a close then would answer with a reset, which can destroy the kick.
    let mut c = connect(proxy.addr());
    c.write_all(&login_bytes("mc.example.com", "Flooder"))
        .unwrap();
    let mut writer = c.try_clone().expect("clone");
    let flood = std::thread::spawn(move || {
        // 8 MiB: more than the buffers on the way to a backend that reads nothing hold, less than the
        // proxy drains from a kicked client.
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..128 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let (id, json) = read_json_packet(&mut c).expect("the kick, despite the unread bytes");
    assert_eq!(
        (id, json["text"].as_str()),
        (0, Some("Still starting")),
        "{what}"
    );
    // Then a FIN, not a reset (which destroys what the client has not read yet on some systems).
    let mut rest = [0u8; 4096];
    match c.read(&mut rest) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: {n} more bytes after the kick"),
        Err(e) => panic!("{what}: {e} instead of a FIN after the kick"),
    }
    drop(c);
    flood.join().expect("the flood ends");
    // A status ping is not a login: the offline status, at the same timeout.
    let started = Instant::now();
    let mut c = connect(proxy.addr());
    c.write_all(&status_bytes("mc.example.com")).unwrap();
    let (id, json) = read_json_packet(&mut c).expect("the offline status");
    assert!(started.elapsed() >= Duration::from_millis(900), "{what}");
    assert_eq!(
        (id, json["description"]["text"].as_str()),
        (0, Some("Still starting")),
        "{what}"
    );
    drop(proxy);
}

fn status_is_answered_by_a_live_backend<F: Flavor>() {
    let backend = Backend::start(|mut s| {
        let Ok(_hs) = read_frame_bytes(&mut s) else {
            return;
        };
        let Ok((0, _)) = read_packet(&mut s) else {
            return;
        };
        let mut out = Vec::new();
        let mut body = Vec::new();
        nethergate_core::codec::write_string(
            &mut body,
            r#"{"description":{"text":"Backend MOTD"},"players":{"max":50,"online":3},"version":{"name":"1.20.4","protocol":765}}"#,
        );
        nethergate_core::codec::write_frame(&mut out, 0, &body);
        let _ = s.write_all(&out);
        if let Ok((1, payload)) = read_packet(&mut s) {
            let mut pong = Vec::new();
            nethergate_core::codec::write_frame(&mut pong, 1, &payload);
            let _ = s.write_all(&pong);
        }
    });
    let layout = Layout::new().server(
        "a",
        &server_toml(&["mc.example.com"], &[backend.addr()], ""),
    );
    let proxy = start::<F>(&layout);
    let mut c = connect(proxy.addr());
    c.write_all(&status_bytes("mc.example.com")).unwrap();
    let (_, json) = read_json_packet(&mut c).expect("status");
    assert_eq!(json["description"]["text"], "Backend MOTD", "[{}]", F::NAME);
    assert_eq!(json["players"]["online"], 3);
    let mut ping = Vec::new();
    nethergate_core::codec::write_frame(&mut ping, 1, &7u64.to_be_bytes());
    c.write_all(&ping).unwrap();
    assert_eq!(read_packet(&mut c).expect("pong").1, 7u64.to_be_bytes());
    drop(proxy);
}

fn max_players_refuses_the_third_and_keeps_the_first_two<F: Flavor>() {
    let a = Backend::echo();
    let layout = Layout::new().server(
        "a",
        &server_toml(&["mc.example.com"], &[a.addr()], "max_players = 2"),
    );
    let proxy = start::<F>(&layout);
    let mut one = login_echoed(proxy.addr(), "mc.example.com", "One");
    let mut two = login_echoed(proxy.addr(), "mc.example.com", "Two");
    let mut three = connect(proxy.addr());
    three
        .write_all(&login_bytes("mc.example.com", "Three"))
        .unwrap();
    let (_, json) = read_json_packet(&mut three).expect("refusal");
    assert!(
        json["text"].as_str().unwrap_or("").contains("full"),
        "[{}] {json}",
        F::NAME
    );
    assert!(reads_eof(&mut three));
    for c in [&mut one, &mut two] {
        c.write_all(b"still playing").unwrap();
        let mut buf = [0u8; 13];
        c.read_exact(&mut buf).expect("first two keep working");
        assert_eq!(&buf, b"still playing");
    }
    assert_eq!(a.connections(), 2);
    // A player leaving frees a slot.
    drop(one);
    assert!(wait_until(IO_TIMEOUT, || proxy.registry().players_on("a") == 1));
    login_echoed(proxy.addr(), "mc.example.com", "Four");
    drop(proxy);
}

/// One server `a` for `mc.example.com` in proxy mode `mode`, forwarding to `backend`.
fn in_mode(mode: &str, backend: std::net::SocketAddr) -> Layout {
    Layout::new().server(
        "a",
        &server_toml(
            &["mc.example.com"],
            &[backend],
            &format!("proxy_mode = \"{mode}\""),
        ),
    )
}

fn half_close_loses_no_byte_in<F: Flavor>(mode: &str) {
    const TOTAL: usize = 8 * 1024 * 1024;
    let login = login_bytes("mc.example.com", "Steve");
    let login_len = login.len();
    let backend = Backend::start(move |mut s| {
        let mut head = vec![0u8; login_len];
        if s.read_exact(&mut head).is_err() {
            return;
        }
        let mut reader = s.try_clone().expect("clone");
        let check = std::thread::spawn(move || expect_noise(&mut reader, 1, TOTAL));
        send_noise(&mut s, 2, TOTAL).expect("backend sends");
        check
            .join()
            .expect("join")
            .expect("backend received every byte");
    });
    let layout = in_mode(mode, backend.addr());
    let proxy = start::<F>(&layout);
    let mut c = connect(proxy.addr());
    c.write_all(&login).unwrap();
    let mut reader = c.try_clone().unwrap();
    let check = std::thread::spawn(move || expect_noise(&mut reader, 2, TOTAL));
    if let Err(e) = send_noise(&mut c, 1, TOTAL) {
        panic!("[{}] client sends: {e}\n{}", F::NAME, captured_logs());
    }
    check
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("[{}] client side: {e}", F::NAME));
    let port = client_needle(&c);
    let line = wait_for_log(
        &[
            "session ended",
            &format!("c2b={}", TOTAL + login_len),
            &format!("b2c={TOTAL}"),
            &port,
        ],
        IO_TIMEOUT,
    );
    assert!(
        line.is_some(),
        "[{}] session-end line with exact byte counts",
        F::NAME
    );
    drop(proxy);
}

fn backend_half_close_reaches_the_client_and_client_can_still_send_in<F: Flavor>(mode: &str) {
    // The backend says goodbye and closes its write half; the client keeps sending, the backend reads it.
    let (tx, rx) = std::sync::mpsc::channel();
    let login_len = login_bytes("mc.example.com", "Steve").len();
    let backend = Backend::start(move |mut s| {
        let mut head = vec![0u8; login_len];
        let _ = s.read_exact(&mut head);
        let _ = s.write_all(b"bye");
        let _ = s.shutdown(Shutdown::Write);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        let _ = tx.send(rest);
    });
    let layout = in_mode(mode, backend.addr());
    let proxy = start::<F>(&layout);
    let mut c = connect(proxy.addr());
    c.write_all(&login_bytes("mc.example.com", "Steve"))
        .unwrap();
    let mut bye = Vec::new();
    c.read_to_end(&mut bye).expect("EOF after bye");
    assert_eq!(bye, b"bye");
    c.write_all(b"late words").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).expect("backend drained"),
        b"late words",
        "[{}]",
        F::NAME
    );
    let port = client_needle(&c);
    assert!(wait_for_log(
        &["session ended", "reason=BackendClosed", &port],
        IO_TIMEOUT
    )
    .is_some());
    drop(proxy);
}

fn idle_session_ends_with_reason_timeout_in<F: Flavor>(mode: &str) {
    let a = Backend::echo();
    let layout = Layout::new().server(
        "a",
        &server_toml(
            &["mc.example.com"],
            &[a.addr()],
            &format!("proxy_mode = \"{mode}\"\n[timeouts]\nread = \"1s\""),
        ),
    );
    let proxy = start::<F>(&layout);
    let started = Instant::now();
    let mut c = login_echoed(proxy.addr(), "mc.example.com", "Idler");
    assert!(reads_eof(&mut c), "[{}] idle session closed", F::NAME);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let port = client_needle(&c);
    assert!(wait_for_log(&["session ended", "reason=Timeout", &port], IO_TIMEOUT).is_some());
    drop(proxy);
}

fn client_that_never_reads_hits_the_write_timeout<F: Flavor>() {
    let login_len = login_bytes("mc.example.com", "Steve").len();
    // The backend floods until the proxy gives up on the client and closes the backend connection.
    let backend = Backend::start(move |mut s| {
        let mut head = vec![0u8; login_len];
        if s.read_exact(&mut head).is_err() {
            return;
        }
        let chunk = vec![7u8; 64 * 1024];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) && s.write_all(&chunk).is_ok() {}
    });
    let layout = Layout::new().server(
        "a",
        &server_toml(
            &["mc.example.com"],
            &[backend.addr()],
            "[timeouts]\nwrite = \"1s\"\nread = \"30s\"",
        ),
    );
    let proxy = start::<F>(&layout);
    // Also after the client closed its write half: the timeout, not the earlier close, ended the session.
    for half_close in [false, true] {
        let c = connect(proxy.addr());
        (&c).write_all(&login_bytes("mc.example.com", "Steve"))
            .unwrap();
        if half_close {
            c.shutdown(std::net::Shutdown::Write).unwrap();
        }
        // This session's line: its client address and this test's backend (the log holds every test's
        // lines, and a client port is reused).
        let client = format!("client={} ", c.local_addr().unwrap());
        let backend = format!("backend={}", backend.addr());
        // Never read: the kernel buffers fill, the proxy's writes stop making progress.
        let line = wait_for_log(
            &["session ended", &client, &backend],
            Duration::from_secs(15),
        );
        assert!(
            line.as_deref()
                .is_some_and(|l| l.contains("reason=Timeout")),
            "[{}] half_close {half_close}: write timeout ended the session: {line:?}",
            F::NAME
        );
        assert!(wait_until(IO_TIMEOUT, || proxy.registry().is_empty()));
        drop(c);
    }
    drop(proxy);
}

/// However the opening arrives — whole with early game bytes behind it, after a pause, split mid-packet
/// or between the two packets — the session is routed and every byte comes back from an echo backend, in
/// order. (The first read of a session reads what is already in the socket without waiting for the
/// reactor; the later ones wait.)
fn opening_in_any_pieces_is_routed_and_loses_nothing<F: Flavor>() {
    let a = Backend::echo();
    let layout = Layout::new().server("a", &server_toml(&["mc.example.com"], &[a.addr()], ""));
    let proxy = start::<F>(&layout);
    let login = login_bytes("mc.example.com", "Steve");
    let handshake_len = usize::from(login[0]) + 1; // a one-byte length prefix: the handshake is short
    let early: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    let pause = Duration::from_millis(200);
    let cases: [(&str, Vec<usize>, bool); 4] = [
        ("whole, with early bytes", vec![], false),
        ("after a pause", vec![0], false),
        ("split mid-packet", vec![3], false),
        ("handshake, pause, login start", vec![handshake_len], true),
    ];
    for (case, cuts, early_too) in cases {
        let mut sent = login.clone();
        if !early_too {
            sent.extend_from_slice(&early);
        }
        let mut c = connect(proxy.addr());
        let mut at = 0;
        for cut in cuts {
            c.write_all(&sent[at..cut]).unwrap();
            std::thread::sleep(pause);
            at = cut;
        }
        c.write_all(&sent[at..]).unwrap();
        if early_too {
            c.write_all(&early).unwrap();
            sent.extend_from_slice(&early);
        }
        let mut back = vec![0u8; sent.len()];
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        if let Err(e) = c.read_exact(&mut back) {
            panic!("[{}] {case}: {e}\n{}", F::NAME, captured_logs());
        }
        assert!(
            back == sent,
            "[{}] {case}: bytes changed on the way",
            F::NAME
        );
    }
    assert_eq!(a.connections(), 4);
    drop(proxy);
}

/// `layout` with one server, `mc.example.com` → `backend`, and a proxy started on it.
fn proxy_to<F: Flavor>(layout: Layout, backend: &Backend) -> (Layout, Box<dyn Started>) {
    let layout = layout.server(
        "a",
        &server_toml(&["mc.example.com"], &[backend.addr()], ""),
    );
    let proxy = start::<F>(&layout);
    (layout, proxy)
}

fn slow_handshake_is_closed<F: Flavor>() {
    let a = Backend::echo();
    let (_layout, proxy) = proxy_to::<F>(Layout::new().main("handshake_timeout = \"1s\""), &a);
    let started = Instant::now();
    let mut c = connect(proxy.addr());
    c.write_all(&login_bytes("mc.example.com", "Steve")[..5])
        .unwrap();
    assert!(reads_eof(&mut c), "[{}] trickling client closed", F::NAME);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let mut silent = connect(proxy.addr());
    assert!(reads_eof(&mut silent), "silent client closed");
    assert_eq!(a.connections(), 0);
    drop(proxy);
}

fn garbage_and_legacy_pings_are_closed_cleanly<F: Flavor>() {
    let a = Backend::echo();
    let layout = Layout::new()
        .main("handshake_timeout = \"1s\"")
        .server("a", &server_toml(&["mc.example.com"], &[a.addr()], ""));
    let proxy = start::<F>(&layout);
    let mut c = connect(proxy.addr());
    c.write_all(&[0xFE, 0x01, 0xFA]).unwrap();
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    assert_eq!(answer.first(), Some(&0xFF), "[{}] legacy kick", F::NAME);
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xff, 0xff, 0xff, 0xff, 0x0f],
        &[0x05, 0x01, 1, 2, 3, 4],
    ] {
        let mut c = connect(proxy.addr());
        c.write_all(junk).unwrap();
        assert!(reads_eof(&mut c), "junk {junk:?} closed");
    }
    assert_eq!(a.connections(), 0);
    drop(proxy);
}

struct Rules;
impl PreConnect for Rules {
    fn pre_connect(&self, e: &PreConnectEvent<'_>) -> Decision {
        match e.player {
            Some("Banned") => Decision::Deny("You are banned".into()),
            Some("Lost") => Decision::Redirect("limbo".into()),
            Some("Bug") => panic!("plugin bug for {:?}", e.player),
            _ => Decision::Allow,
        }
    }
}

fn plugins_deny_and_redirect<F: Flavor>() {
    let (lobby, rx_lobby) = Backend::recording(false);
    let (limbo, rx_limbo) = Backend::recording(false);
    let layout = Layout::new()
        .server(
            "lobby",
            &server_toml(&["mc.example.com"], &[lobby.addr()], ""),
        )
        .server(
            "limbo",
            &server_toml(&["limbo.internal"], &[limbo.addr()], ""),
        );
    capture_logs();
    let proxy = F::start(layout.load(), Plugins::new().with(Rules)).expect("start");
    let mut c = connect(proxy.addr());
    c.write_all(&login_bytes("mc.example.com", "Banned"))
        .unwrap();
    let (_, json) = read_json_packet(&mut c).expect("deny");
    assert_eq!(json["text"], "You are banned", "[{}]", F::NAME);
    assert!(reads_eof(&mut c));
    // A plugin that panics refuses the player with a message and an error line (not a shutdown), and
    // the proxy goes on.
    let mut c = connect(proxy.addr());
    c.write_all(&login_bytes("mc.example.com", "Bug")).unwrap();
    let (_, json) = read_json_packet(&mut c).expect("a refusal after a panic");
    assert_eq!(
        json["text"],
        "The server could not check your connection. Please try again later.",
        "[{}]",
        F::NAME
    );
    assert!(reads_eof(&mut c));
    let port = format!(":{}", c.local_addr().unwrap().port());
    for needles in [
        &[
            "ERROR",
            "pre-connect plugin panicked",
            "plugin bug for Some(",
            &port,
        ][..],
        &["reason=Denied", "player=\"Bug\"", &port],
    ] {
        assert!(
            wait_for_log(needles, IO_TIMEOUT).is_some(),
            "[{}] {needles:?}",
            F::NAME
        );
    }
    login_echoed(proxy.addr(), "mc.example.com", "Lost");
    let r = rx_limbo
        .recv_timeout(IO_TIMEOUT)
        .expect("redirected to limbo");
    assert_eq!(r.player.as_deref(), Some("Lost"));
    login_echoed(proxy.addr(), "mc.example.com", "Fine");
    assert_eq!(
        rx_lobby
            .recv_timeout(IO_TIMEOUT)
            .expect("lobby")
            .player
            .as_deref(),
        Some("Fine")
    );
    assert_eq!(lobby.connections(), 1);
    drop(proxy);
}

fn ip_filter_from_the_main_file<F: Flavor>() {
    let a = Backend::echo();
    let layout = Layout::new()
        .main("[ip_filter]\ndeny = [\"127.0.0.0/8\"]\nmessage = \"Not from here\"")
        .server("a", &server_toml(&["mc.example.com"], &[a.addr()], ""));
    capture_logs();
    let config = layout.load();
    let proxy = F::start(config.clone(), nethergate_driver::cli::plugins(&config)).expect("start");
    let mut c = connect(proxy.addr());
    c.write_all(&login_bytes("mc.example.com", "Steve"))
        .unwrap();
    let (_, json) = read_json_packet(&mut c).expect("deny");
    assert_eq!(json["text"], "Not from here", "[{}]", F::NAME);
    assert_eq!(a.connections(), 0);
    drop(proxy);
}

fn max_connections_is_enforced<F: Flavor>() {
    let a = Backend::echo();
    let layout = Layout::new()
        .main("max_connections = 2")
        .server("a", &server_toml(&["mc.example.com"], &[a.addr()], ""));
    let proxy = start::<F>(&layout);
    let _one = login_echoed(proxy.addr(), "mc.example.com", "One");
    let _two = login_echoed(proxy.addr(), "mc.example.com", "Two");
    let mut three = connect(proxy.addr());
    let _ = three.write_all(&login_bytes("mc.example.com", "Three"));
    assert!(
        reads_eof(&mut three),
        "[{}] over the limit: closed",
        F::NAME
    );
    drop(_one);
    assert!(wait_until(IO_TIMEOUT, || proxy.registry().len() == 1));
    login_echoed(proxy.addr(), "mc.example.com", "Four");
    drop(proxy);
}

/// An IPv4 client of a dual-stack `[::]` listener is an IPv4 address everywhere: the registry and the log
/// line show `127.0.0.1`, not `::ffff:127.0.0.1`.
fn ipv4_clients_of_a_dual_stack_listener_are_ipv4<F: Flavor>() {
    let a = Backend::echo();
    let (_layout, proxy) = proxy_to::<F>(Layout::new().bind("[::]:0"), &a);
    let v4 = SocketAddr::from(([127, 0, 0, 1], proxy.addr().port()));
    let c = login_echoed(v4, "mc.example.com", "Dual");
    let port = c.local_addr().unwrap().port();
    assert!(wait_until(IO_TIMEOUT, || proxy.registry().len() == 1));
    let clients: Vec<SocketAddr> = proxy
        .registry()
        .sessions()
        .iter()
        .map(|s| s.client)
        .collect();
    assert_eq!(
        clients,
        vec![SocketAddr::from(([127, 0, 0, 1], port))],
        "[{}]",
        F::NAME
    );
    drop(c);
    let line = format!("client=127.0.0.1:{port}");
    assert!(
        wait_for_log(&["session ended", &line], IO_TIMEOUT).is_some(),
        "[{}] {line} not logged",
        F::NAME
    );
    drop(proxy);
}

/// A connection closed for a handshake timeout was sent nothing, so it does not linger: its
/// `max_connections` slot is free as soon as the client sees the close (a kick lingers up to 2 s).
fn a_timed_out_handshake_frees_its_slot_at_once<F: Flavor>() {
    let a = Backend::echo();
    let main = "max_connections = 1\nhandshake_timeout = \"1s\"";
    let (_layout, proxy) = proxy_to::<F>(Layout::new().main(main), &a);
    let mut silent = connect(proxy.addr());
    assert!(reads_eof(&mut silent), "[{}] silent client closed", F::NAME);
    // `silent` stays open on our side: a lingering proxy would wait for its EOF.
    // Well under the 2 s a lingering close would take, with room for a loaded machine.
    let deadline = Instant::now() + Duration::from_millis(1500);
    let bytes = login_bytes("mc.example.com", "Next");
    loop {
        let mut c = connect(proxy.addr());
        let mut back = vec![0u8; bytes.len()];
        let forwarded = c.write_all(&bytes).is_ok() && c.read_exact(&mut back).is_ok();
        if forwarded && back == bytes {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "[{}] the slot of the timed-out connection was still held",
            F::NAME
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(silent);
    drop(proxy);
}

fn five_hundred_concurrent_sessions_in<F: Flavor>(mode: &str) {
    raise_fd_limit();
    let a = Backend::echo();
    let layout = in_mode(mode, a.addr());
    let proxy = start::<F>(&layout);
    let mut clients = Vec::new();
    for i in 0..500 {
        let mut c = connect(proxy.addr());
        c.write_all(&login_bytes("mc.example.com", &format!("p{i}")))
            .unwrap();
        clients.push(c);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let expected = login_bytes("mc.example.com", &format!("p{i}"));
        let mut back = vec![0u8; expected.len()];
        c.read_exact(&mut back).expect("login echoed");
        assert_eq!(back, expected);
    }
    assert!(
        wait_until(IO_TIMEOUT, || proxy.registry().len() == 500),
        "[{}] 500 live sessions",
        F::NAME
    );
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(format!("ping {i:04}").as_bytes()).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut buf = [0u8; 9];
        c.read_exact(&mut buf).expect("echo");
        assert_eq!(&buf, format!("ping {i:04}").as_bytes());
    }
    drop(clients);
    assert!(wait_until(IO_TIMEOUT, || proxy.registry().is_empty()));
    drop(proxy);
}

fn graceful_shutdown_lets_sessions_finish<F: Flavor>() {
    let a = Backend::echo();
    let layout = Layout::new()
        .main("shutdown_timeout = \"20s\"")
        .server("a", &server_toml(&["mc.example.com"], &[a.addr()], ""));
    let proxy = start::<F>(&layout);
    let addr = proxy.addr();
    let mut live = login_echoed(addr, "mc.example.com", "Stayer");
    let stopper = std::thread::spawn(move || {
        let t = Instant::now();
        proxy.shutdown();
        t.elapsed()
    });
    // New connections are refused once the listener is closed...
    assert!(
        wait_until(IO_TIMEOUT, || std::net::TcpStream::connect(addr).is_err()),
        "[{}] listener closed",
        F::NAME
    );
    // ...while the live session still works.
    live.write_all(b"after shutdown").unwrap();
    let mut buf = [0u8; 14];
    live.read_exact(&mut buf)
        .expect("live session still forwards");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !stopper.is_finished(),
        "shutdown waits for the live session"
    );
    drop(live);
    let took = stopper.join().unwrap();
    assert!(took < Duration::from_secs(10), "{took:?}");
}

fn shutdown_deadline_closes_sessions_with_reason_shutdown<F: Flavor>() {
    let a = Backend::echo();
    let layout = Layout::new()
        .main("shutdown_timeout = \"1s\"\nhandshake_timeout = \"30s\"")
        .server("a", &server_toml(&["mc.example.com"], &[a.addr()], ""));
    let proxy = start::<F>(&layout);
    let mut live = login_echoed(proxy.addr(), "mc.example.com", "Stayer");
    let port = client_needle(&live);
    // A client still in its handshake when the deadline comes is cut too, and logged.
    let mut slow = connect(proxy.addr());
    let opening = login_bytes("mc.example.com", "Slowpoke");
    slow.write_all(&opening[..opening.len() / 2]).unwrap();
    let slow_port = client_needle(&slow);
    // Time for the proxy to accept it (a connection still in the backlog is reset with the listener).
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    proxy.shutdown();
    assert!(t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(5));
    assert!(
        reads_eof(&mut live),
        "[{}] session closed at the deadline",
        F::NAME
    );
    assert!(wait_for_log(&["session ended", "reason=Shutdown", &port], IO_TIMEOUT).is_some());
    assert!(reads_eof(&mut slow), "[{}] handshake cut", F::NAME);
    let closed = [
        "connection closed before forwarding",
        "reason=Shutdown",
        &slow_port,
    ];
    assert!(
        wait_for_log(&closed, IO_TIMEOUT).is_some(),
        "[{}] no line for the cut handshake",
        F::NAME
    );
}

fn transfer_intent_is_routed_like_login<F: Flavor>() {
    let (a, rx) = Backend::recording(false);
    let layout = Layout::new().server("a", &server_toml(&["mc.example.com"], &[a.addr()], ""));
    let proxy = start::<F>(&layout);
    let mut c = connect(proxy.addr());
    let bytes = login_bytes_with("mc.example.com", "Traveler", 766, NextState::Transfer);
    c.write_all(&bytes).unwrap();
    let r = rx.recv_timeout(IO_TIMEOUT).expect("transfer forwarded");
    assert_eq!(
        (r.next_state, r.player.as_deref()),
        (NextState::Transfer, Some("Traveler"))
    );
    drop(proxy);
}

/// The forwarding tests run in both proxy modes: `$name` in passthrough, `$zero_copy` with splice(2).
macro_rules! in_both_modes {
    ($($name:ident, $zero_copy:ident => $body:ident;)*) => { $(
        fn $name<F: Flavor>() { $body::<F>("passthrough") }
        fn $zero_copy<F: Flavor>() { $body::<F>("zero_copy") }
    )* };
}

in_both_modes! {
    half_close_loses_no_byte, half_close_loses_no_byte_zero_copy => half_close_loses_no_byte_in;
    backend_half_close_reaches_the_client_and_client_can_still_send, backend_half_close_reaches_the_client_and_client_can_still_send_zero_copy => backend_half_close_reaches_the_client_and_client_can_still_send_in;
    idle_session_ends_with_reason_timeout, idle_session_ends_with_reason_timeout_zero_copy => idle_session_ends_with_reason_timeout_in;
    silent_backend_close_sends_the_disconnect_message, silent_backend_close_sends_the_disconnect_message_zero_copy => silent_backend_close_sends_the_disconnect_message_in;
    hung_backend_times_out_with_the_disconnect_message, hung_backend_times_out_with_the_disconnect_message_zero_copy => hung_backend_times_out_with_the_disconnect_message_in;
    five_hundred_concurrent_sessions, five_hundred_concurrent_sessions_zero_copy => five_hundred_concurrent_sessions_in;
}

macro_rules! suite {
    ($module:ident: $flavor:ty => $($test:ident),* $(,)?) => {
        mod $module { $( #[test] fn $test() { super::$test::<$flavor>() } )* }
    };
}

// The blocking example adapter runs the routing, forwarding and half-close tests: the parts a third
// runtime must get right; graceful shutdown and connection limits are the production binaries' job.
suite!(blocking_example: nethergate_e2e::BlockingThreads =>
    routing_by_exact_and_wildcard_domain,
    unknown_host_is_refused_without_touching_a_backend,
    forge_marker_trailing_dot_and_case_are_routed,
    ipv6_address_hosts_are_routed_in_any_spelling,
    domain_rewrite_modes_change_only_the_host,
    proxy_protocol_carries_the_real_client_address,
    failover_to_the_next_address,
    disconnect_message_when_every_backend_is_down,
    silent_backend_close_sends_the_disconnect_message,
    max_players_refuses_the_third_and_keeps_the_first_two,
    half_close_loses_no_byte,
    backend_half_close_reaches_the_client_and_client_can_still_send,
    idle_session_ends_with_reason_timeout,
    slow_handshake_is_closed,
    plugins_deny_and_redirect,
);

macro_rules! full_suite {
    ($($test:ident),* $(,)?) => {
        suite!(tokio_runtime: nethergate_e2e::Tokio => $($test),*);
        suite!(smol_runtime: nethergate_e2e::Smol => $($test),*);
    };
}

full_suite!(
    routing_by_exact_and_wildcard_domain,
    unknown_host_is_refused_without_touching_a_backend,
    forge_marker_trailing_dot_and_case_are_routed,
    ipv6_address_hosts_are_routed_in_any_spelling,
    domain_rewrite_modes_change_only_the_host,
    proxy_protocol_carries_the_real_client_address,
    failover_to_the_next_address,
    disconnect_message_when_every_backend_is_down,
    silent_backend_close_sends_the_disconnect_message,
    silent_backend_close_sends_the_disconnect_message_zero_copy,
    hung_backend_times_out_with_the_disconnect_message,
    hung_backend_times_out_with_the_disconnect_message_zero_copy,
    status_is_answered_by_a_live_backend,
    max_players_refuses_the_third_and_keeps_the_first_two,
    half_close_loses_no_byte,
    backend_half_close_reaches_the_client_and_client_can_still_send,
    idle_session_ends_with_reason_timeout,
    client_that_never_reads_hits_the_write_timeout,
    slow_handshake_is_closed,
    opening_in_any_pieces_is_routed_and_loses_nothing,
    garbage_and_legacy_pings_are_closed_cleanly,
    plugins_deny_and_redirect,
    ip_filter_from_the_main_file,
    max_connections_is_enforced,
    a_timed_out_handshake_frees_its_slot_at_once,
    ipv4_clients_of_a_dual_stack_listener_are_ipv4,
    five_hundred_concurrent_sessions,
    graceful_shutdown_lets_sessions_finish,
    shutdown_deadline_closes_sessions_with_reason_shutdown,
    transfer_intent_is_routed_like_login,
    half_close_loses_no_byte_zero_copy,
    backend_half_close_reaches_the_client_and_client_can_still_send_zero_copy,
    idle_session_ends_with_reason_timeout_zero_copy,
    five_hundred_concurrent_sessions_zero_copy,
);
