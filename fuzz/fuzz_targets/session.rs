//! A whole `Session` driven by an adversarial runtime: arbitrary client bytes in arbitrary chunks,
//! arbitrary plugin answers (or the driver's loop refusal), backend outcomes, timeouts and EOF, in any
//! order, answered at once or late.
//!
//! Input layout: `[L][L control bytes][client bytes]`. The control bytes choose the configuration (2 or 3
//! servers, each with or without a domain rewrite, a PROXY header, `max_players`, 1-3 addresses), players
//! already on each server, the client and proxy addresses, the handshake timeout, then a script of driver
//! operations; when they run out every answer is the friendly one (Allow, connected), the remaining client
//! bytes are sent in one chunk and EOF is signalled. So a fixture capture with `L = 0` is a clean login.
//!
//! Checks (any failure panics, which libFuzzer reports as a crash):
//! - no panic inside the core, whatever the order of calls;
//! - the session never holds more than `MAX_BUFFERED` bytes, and closes with `BufferLimit` exactly when a
//!   chunk exceeds `read_budget()`;
//! - it ends with exactly one `Forward` or `Close`, after which it emits nothing, whatever is fed to it;
//! - calls that do not answer a pending action (late, duplicated, out of state) emit nothing;
//! - `handle_timeout` acts exactly when the instant passed `poll_timeout`: it answers a lone `FE`/`FE 01`
//!   (or a 1.6 ping cut before its protocol byte) as a legacy ping, and otherwise closes with
//!   `HandshakeTimeout`;
//! - the `PreConnect` event carries the normalised host, the routed server, the player, the protocol;
//! - `Connect` is never emitted for an unknown host when plugins Allow, a denial, a missing redirect, or
//!   a full server; it names the chosen server and, with failover, a different address each time;
//! - what is sent to the backend is the PROXY header (when configured) then the client's handshake, with
//!   only the host part replaced when a rewrite is configured (decoration kept), then every other client
//!   byte in order; `c2b_initial` counts exactly what was sent before forwarding;
//! - the close reason matches what happened; a refused login is told why with a Login Disconnect, and
//!   a connection the driver recognised as its own (`refuse_loop`) closes with `Loop`, answering nothing
//!   (the dialling session tells its client);
//! - a forward carries what its client is told if the backend says nothing: a login the server's
//!   `disconnect_message` as a Login Disconnect, a Status Request the offline status with that message,
//!   a ping forwarded on a bare Ping nothing;
//! - player slots are released: counts return to what they were when the session ends;
//! - the outcome does not depend on how the client's bytes were split: the bytes fed before the end, in
//!   one chunk into a fresh session with the same configuration (and a fresh route table, whose round
//!   robin starts over), with the run's answers given in the same order as the same questions come (a
//!   question the run had not answered when it ended stays unanswered), then the run's EOF or abort if
//!   one ended it, give the same pre-connect event, the same `Connect` requests, the same opening sent
//!   to the backend, the same bytes sent to the client and the same `Forward` (server, player,
//!   `c2b_initial`, what a silent backend's player is told) or close reason. Left out: a run ended by a
//!   timeout (what it decides depends on what had arrived by then: a lone `FE` is a legacy ping, a
//!   handshake cut short a timeout) or by a chunk over the read budget (`BufferLimit`; in one piece the
//!   bytes before it fit). Sound because, without them, the session only parses what it holds, in
//!   states that read bytes, and holds what comes in the others; each parser's answer on a prefix is
//!   `Incomplete` or its answer on more bytes (the `handshake` and `login_start` targets check it);
//!   everything fed before the end is held, so it fits one read; a timeout that does not act changes
//!   nothing but the clock, and a spurious answer is checked to do nothing;
//! - no verdict is premature: for a run that its bytes or answers ended, the bytes that came after its
//!   end (ignored, or passed on by the copy) added to that one chunk, when they fit one read, end the
//!   session the same way, the copy's bytes then part of the opening; the one exception is the name
//!   of a PROXY header's start (`PR`), which turns into a wrong packet id when the rest does not match.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nethergate_core::codec::{self, Reader};
use nethergate_core::config::ProxyProtocolVersion;
use nethergate_core::handshake::{self, HandshakeError, MAX_HANDSHAKE_FRAME};
use nethergate_core::hostname::ServerAddress;
use nethergate_core::rewrite::Rewrite;
use nethergate_core::session::{MAX_BUFFERED, SERVER_FULL_MESSAGE, UNKNOWN_HOST_MESSAGE};
use nethergate_core::{
    login, proxy_protocol, Action, CloseReason, ConnectRequest, Context, Decision, LiveSession,
    NextState, Parsed, PreConnectEvent, Registry, RouteTable, ServerConfig, Session,
};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The servers the session may be configured with: name, domains, candidate addresses.
const SERVERS: [(&str, &str, [&str; 3]); 3] = [
    (
        "lobby",
        r#"["mc.example.com", "lobby.example.com"]"#,
        [
            "lobby-a.internal:25566",
            "lobby-b.internal:25567",
            "10.0.0.3:25568",
        ],
    ),
    (
        "survival",
        r#"["*.play.example.net", "Survival.Example.com."]"#,
        [
            "[2001:db8::10]:25565",
            "survival.internal:25565",
            "10.0.0.4:1",
        ],
    ),
    (
        "minigames",
        r#"["mg?.example.org", "*.example.org"]"#,
        [
            "mg.internal:30000",
            "mg2.internal:30001",
            "mg3.internal:30002",
        ],
    ),
];

const CLIENTS: [&str; 3] = [
    "198.51.100.7:50000",
    "[2001:db8::7]:50000",
    "[::ffff:198.51.100.7]:50000",
];
const LOCALS: [&str; 2] = ["192.0.2.1:25565", "[2001:db8::1]:25565"];
const DENY_REASON: &str = "Denied by a fuzzed plugin";
/// The backend address reported as dialled (the core only records it).
const RESOLVED: &str = "10.9.9.9:25565";
/// Enough driver operations to interleave everything; bounds the time of one input.
const MAX_STEPS: usize = 96;
/// Largest frame a backend accepts (a 3-byte VarInt length).
const BACKEND_MAX_FRAME: usize = (1 << 21) - 1;

/// The control bytes, read one at a time; zero once exhausted.
struct Ctl<'a>(&'a [u8]);

impl Ctl<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Every configuration a server can have here, parsed once: parsing TOML for each input would dominate
/// the time of an execution.
fn server_config(index: usize, bits: u8) -> ServerConfig {
    static ALL: OnceLock<Vec<Vec<ServerConfig>>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        (0..SERVERS.len())
            .map(|i| (0..=u8::MAX).map(|b| parse_server_config(i, b)).collect())
            .collect()
    });
    all[index][usize::from(bits)].clone()
}

fn parse_server_config(index: usize, bits: u8) -> ServerConfig {
    let (name, domains, addrs) = SERVERS[index];
    let count = 1 + usize::from(bits >> 6) % 3;
    let addresses: Vec<String> = addrs[..count].iter().map(|a| format!("{a:?}")).collect();
    let mut text = format!(
        "domains = {domains}\naddresses = [{}]\n",
        addresses.join(", ")
    );
    match bits & 3 {
        1 => text.push_str("domain_rewrite = { explicit = \"rewritten.internal\" }\n"),
        2 => text.push_str("domain_rewrite = \"from_backend\"\n"),
        3 => text.push_str(
            "domain_rewrite = { explicit = \"a-much-longer-host-name-for-the-backend.internal\" }\n",
        ),
        _ => {}
    }
    if bits & 4 != 0 {
        text.push_str("send_proxy_protocol = true\n");
    }
    if bits & 8 != 0 {
        text.push_str("proxy_protocol_version = 1\n");
    }
    let max_players = (bits >> 4) & 3;
    if max_players > 0 {
        text.push_str(&format!("max_players = {max_players}\n"));
    }
    if index == 1 {
        text.push_str("disconnect_message = \"Survival is down \\\"for now\\\"\"\n");
    }
    match ServerConfig::from_toml(&format!("{name}.toml"), name, &text) {
        Ok(c) => c,
        Err(e) => panic!("the harness's own server file is invalid: {e}\n{text}"),
    }
}

/// The host as routing must see it, computed here without the core's hostname module; `Err` for a
/// non-ASCII host, which the core converts to punycode (not reimplemented here).
fn expected_host(address: &str) -> Result<Option<String>, ()> {
    let host = address.split('\0').next().unwrap_or("");
    if !host.is_ascii() {
        return Err(());
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    // A host with an empty label (`.a`, `a..b`) is no DNS name: routable by nothing.
    let routable = host.len() <= 253 && !host.split('.').any(str::is_empty);
    Ok(routable.then(|| host.to_ascii_lowercase()))
}

/// The client's handshake, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hs {
    protocol_version: i32,
    address: String,
    port: u16,
    next_state: NextState,
}

/// Reads a handshake frame the way a backend would: no client-side size limit on the address.
fn backend_handshake(buf: &[u8]) -> (Hs, usize) {
    let (frame, used) = match codec::read_frame(buf, BACKEND_MAX_FRAME) {
        Ok(Parsed::Complete(frame, used)) => (frame, used),
        other => panic!("backend stream does not start with a frame: {other:?}"),
    };
    assert_eq!(frame.id, 0, "first frame to the backend is not a handshake");
    let mut r = Reader::new(frame.body);
    let parse = |r: &mut Reader<'_>| -> Result<Hs, codec::CodecError> {
        let protocol_version = r.varint("protocol_version")?;
        let address = r.string("server_address", BACKEND_MAX_FRAME)?.to_owned();
        let port = r.u16("port")?;
        let next_state = match r.varint("next_state")? {
            1 => NextState::Status,
            2 => NextState::Login,
            3 => NextState::Transfer,
            other => panic!("next_state {other} sent to the backend"),
        };
        Ok(Hs {
            protocol_version,
            address,
            port,
            next_state,
        })
    };
    let hs = parse(&mut r).unwrap_or_else(|e| panic!("backend handshake is malformed: {e}"));
    assert!(
        r.rest().is_empty(),
        "bytes after the backend handshake's fields"
    );
    (hs, used)
}

/// Text of a Login Disconnect packet.
fn disconnect_text(bytes: &[u8]) -> String {
    let Ok(Parsed::Complete(frame, used)) = codec::read_frame(bytes, 1 << 20) else {
        panic!("login disconnect is not a frame: {bytes:?}")
    };
    assert_eq!(used, bytes.len());
    assert_eq!(frame.id, 0);
    let Ok(Parsed::Complete(json, _)) = codec::read_string(frame.body, 1 << 20) else {
        panic!("login disconnect does not hold a string")
    };
    let v: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
    v["text"].as_str().unwrap_or_default().to_owned()
}

#[derive(Debug)]
enum End {
    Forward,
    Close(CloseReason),
}

struct Run<'a> {
    ctl: Ctl<'a>,
    s: Session,
    routes: Arc<RouteTable>,
    registry: Arc<Registry>,
    prefill: Vec<u32>,
    client: SocketAddr,
    local: SocketAddr,
    now: Instant,
    /// When the remaining answers must be given at once (the script ran out).
    finishing: bool,
    eof: bool,
    /// Every byte handed to the session, then every byte a forwarding copy would pass on.
    fed: Vec<u8>,
    to_backend: Vec<u8>,
    to_client: Vec<Vec<u8>>,
    /// A pre-connect answer held back, with the event it answers.
    pending_pre: Option<Event>,
    pending_connect: Option<ConnectRequest>,
    /// The plugin answer the session acted on.
    decision: Option<Decision>,
    /// The server a `Connect` may name, from `decision`.
    target: Option<String>,
    /// The driver answered the pre-connect event with `refuse_loop` (its own backend connection).
    looped: bool,
    /// The server the answered pre-connect event named (the routed one).
    routed: Option<String>,
    pre_connects: usize,
    connects: Vec<String>,
    failures: usize,
    in_backend_connected: bool,
    buffer_overflowed: bool,
    /// The runtime cut the connection (shutdown).
    aborted: bool,
    actions: usize,
    end: Option<End>,
    ends: usize,
    live: Option<LiveSession>,
    /// For the chunking check: the event, the dials and the answers given before the end, what ended
    /// the run if not its bytes or answers, and how it ended.
    event: Option<Event>,
    dials: Vec<ConnectRequest>,
    answers: Vec<Answer>,
    cut: Option<Cut>,
    ending: Option<Ending>,
    /// `fed.len()` and `to_backend.len()` when the session ended.
    fed_at_end: usize,
    to_backend_at_end: usize,
    /// Every chunk fed before EOF, whether the session took it, ignored it or a copy passed it on.
    offered: Vec<u8>,
}

/// A pre-connect event copied out of the session (which lends it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    client: SocketAddr,
    host: String,
    server: Option<String>,
    player: Option<String>,
    protocol_version: i32,
    next_state: NextState,
}

impl Event {
    fn of(e: &PreConnectEvent<'_>) -> Event {
        Event {
            client: e.client,
            host: e.host.to_owned(),
            server: e.server.map(str::to_owned),
            player: e.player.map(str::to_owned),
            protocol_version: e.protocol_version,
            next_state: e.next_state,
        }
    }
}

/// An answer the run gave while the session was still going, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Plugins(Decision),
    Loop,
    /// A dial's outcome: connected or failed.
    Dial {
        connected: bool,
    },
}

/// What ended a run other than its bytes and its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Eof,
    Abort,
    /// `handle_timeout` at or after the deadline.
    Timeout,
    /// A chunk larger than `read_budget()`.
    Overflow,
}

/// How a session ended, as the chunking check compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    Forward {
        server: String,
        player: Option<String>,
        c2b_initial: u64,
        if_backend_silent: Vec<u8>,
    },
    Close(CloseReason),
}

/// Everything a session did before it ended, in the form two sessions can be compared in.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Outcome {
    event: Option<Event>,
    connects: Vec<ConnectRequest>,
    /// What reached the backend before forwarding (the opening).
    to_backend: Vec<u8>,
    to_client: Vec<Vec<u8>>,
    end: Option<Ending>,
}

/// The run's client bytes (those fed before its end) in one chunk into a fresh session with the same
/// configuration, the run's answers given in order as the same questions come, then the run's EOF or
/// abort if one ended it: what that session did.
fn replay(
    ctx: Context,
    (client, local, start): (SocketAddr, SocketAddr, Instant),
    bytes: &[u8],
    answers: &[Answer],
    cut: Option<Cut>,
) -> Outcome {
    let mut s = Session::new(ctx, client, local, start);
    // Before its end a session holds every byte fed to it, so they fit in one read.
    assert!(
        bytes.len() <= s.read_budget(),
        "{} bytes fed before the end, more than one read",
        bytes.len()
    );
    let mut answers = answers.iter().peekable();
    let mut out = Outcome::default();
    let mut live = None;
    let mut drain = |s: &mut Session, out: &mut Outcome| {
        while let Some(action) = s.poll_action() {
            match action {
                Action::PreConnect => {
                    out.event = Some(Event::of(&s.pre_connect_event()));
                    match answers.peek() {
                        Some(Answer::Plugins(decision)) => s.pre_connect_result(decision.clone()),
                        Some(Answer::Loop) => s.refuse_loop(),
                        // The run had no answer yet when it was cut.
                        _ => continue,
                    }
                    answers.next();
                }
                Action::Connect(req) => {
                    out.connects.push(req);
                    match answers.peek() {
                        Some(Answer::Dial { connected: true }) => {
                            s.backend_connected(RESOLVED.parse().expect("literal"), start)
                        }
                        Some(Answer::Dial { connected: false }) => s.backend_failed(start),
                        _ => continue,
                    }
                    answers.next();
                }
                Action::SendToBackend(b) => out.to_backend.extend_from_slice(&b),
                Action::SendToClient(b) => out.to_client.push(b.to_vec()),
                Action::Forward(f) => {
                    out.end = Some(Ending::Forward {
                        server: f.live.info().server.to_string(),
                        player: f.live.info().player.clone(),
                        c2b_initial: f.c2b_initial,
                        if_backend_silent: f.if_backend_silent.to_vec(),
                    });
                    live = Some(f.live);
                }
                Action::Close(reason) => out.end = Some(Ending::Close(reason)),
            }
        }
    };
    s.handle_client_data(bytes);
    drain(&mut s, &mut out);
    match cut {
        Some(Cut::Eof) => s.handle_client_eof(),
        Some(Cut::Abort) => s.abort(),
        Some(Cut::Timeout | Cut::Overflow) => unreachable!("not replayed"),
        None => {}
    }
    drain(&mut s, &mut out);
    let left: Vec<&Answer> = answers.collect();
    assert!(
        left.is_empty(),
        "the replay was not asked what the run answered with {left:?}; it did {out:#?}"
    );
    drop(live);
    out
}

impl Run<'_> {
    fn check_buffer(&self) {
        assert!(
            self.s.buffered() <= MAX_BUFFERED,
            "session holds {} bytes",
            self.s.buffered()
        );
    }

    fn client_handshake(&self) -> Option<Hs> {
        match handshake::parse(&self.fed) {
            Ok(Parsed::Complete(h, _)) => Some(Hs {
                protocol_version: h.protocol_version,
                address: h.server_address.to_owned(),
                port: h.port,
                next_state: h.next_state,
            }),
            _ => None,
        }
    }

    fn is_login(&self) -> bool {
        self.client_handshake()
            .is_some_and(|h| h.next_state.is_login())
    }

    fn is_full(&self, server: &str) -> bool {
        let Some(s) = self.routes.by_name(server) else {
            return false;
        };
        let i = self
            .routes
            .servers()
            .iter()
            .position(|x| x.name() == server)
            .unwrap_or(0);
        let max = s.config.max_players;
        max > 0 && self.prefill[i] >= max
    }

    fn drain(&mut self) {
        // Lent in any state, without panicking.
        let _ = self.s.pre_connect_event();
        while let Some(action) = self.s.poll_action() {
            assert!(
                self.end.is_none(),
                "action {action:?} after the session ended"
            );
            self.actions += 1;
            match action {
                Action::PreConnect => self.on_pre_connect(),
                Action::Connect(req) => self.on_connect(req),
                Action::SendToBackend(bytes) => {
                    assert!(
                        self.in_backend_connected,
                        "SendToBackend outside backend_connected"
                    );
                    self.to_backend.extend_from_slice(&bytes);
                }
                Action::SendToClient(bytes) => self.to_client.push(bytes.to_vec()),
                Action::Forward(f) => {
                    assert!(self.in_backend_connected, "Forward without a backend");
                    assert_eq!(
                        f.c2b_initial,
                        self.to_backend.len() as u64,
                        "c2b_initial must count what was sent"
                    );
                    let server = f.live.info().server.clone();
                    assert_eq!(self.target.as_deref(), Some(&*server));
                    let cfg = &self
                        .routes
                        .by_name(&server)
                        .expect("forwarded to a known server")
                        .config;
                    assert_eq!(f.mode, cfg.proxy_mode);
                    assert_eq!(f.timeouts, cfg.timeouts);
                    self.ending = Some(Ending::Forward {
                        server: server.to_string(),
                        player: f.live.info().player.clone(),
                        c2b_initial: f.c2b_initial,
                        if_backend_silent: f.if_backend_silent.to_vec(),
                    });
                    self.fed_at_end = self.fed.len();
                    self.to_backend_at_end = self.to_backend.len();
                    self.live = Some(f.live);
                    self.end = Some(End::Forward);
                    self.ends += 1;
                }
                Action::Close(reason) => {
                    self.ending = Some(Ending::Close(reason.clone()));
                    self.fed_at_end = self.fed.len();
                    self.to_backend_at_end = self.to_backend.len();
                    self.end = Some(End::Close(reason));
                    self.ends += 1;
                }
            }
        }
        self.check_buffer();
    }

    fn on_pre_connect(&mut self) {
        self.pre_connects += 1;
        assert_eq!(self.pre_connects, 1, "a second PreConnect");
        let hs = self
            .client_handshake()
            .expect("PreConnect before a handshake");
        let event = self.s.pre_connect_event();
        let host = match expected_host(&hs.address) {
            Ok(host) => {
                assert_eq!(event.host, host.clone().unwrap_or_default());
                host
            }
            Err(()) => {
                assert!(
                    event.host.is_ascii(),
                    "a Unicode host is routed as punycode"
                );
                (!event.host.is_empty()).then(|| event.host.to_owned())
            }
        };
        let routed = host
            .as_deref()
            .and_then(|h| self.routes.route(h))
            .map(|s| s.name());
        assert_eq!(event.server, routed);
        assert_eq!(event.client, self.client);
        assert_eq!(event.protocol_version, hs.protocol_version);
        assert_eq!(event.next_state, hs.next_state);
        if hs.next_state.is_login() {
            let player = event.player.expect("a login has a player");
            assert!(player.chars().count() <= 16);
            // The name the client sent in its login start.
            let Ok(Parsed::Complete(_, hs_used)) = handshake::parse(&self.fed) else {
                unreachable!("the handshake parsed above")
            };
            let Ok(Parsed::Complete(ls, _)) = login::parse(&self.fed[hs_used..]) else {
                panic!("PreConnect for a login before its login start")
            };
            assert_eq!(player, ls.name);
        } else {
            assert_eq!(event.player, None);
        }
        assert!(!self.s.wants_client_data() || self.s.is_done());
        let event = Event::of(&event);
        self.event = Some(event.clone());
        if !self.finishing && self.ctl.byte() & 1 == 1 {
            self.pending_pre = Some(event);
        } else {
            self.answer_pre_connect(event.server);
        }
    }

    /// `server`: what the event named.
    fn answer_pre_connect(&mut self, server: Option<String>) {
        let names: Vec<String> = self
            .routes
            .servers()
            .iter()
            .map(|s| s.name().to_owned())
            .collect();
        // One control byte, as before the loop refusal existed (the kept inputs still mean what they
        // did): half of the redirects to a missing server became loop refusals.
        let choice = self.ctl.byte();
        if choice % 16 == 15 {
            return self.refuse_loop();
        }
        let decision = match choice % 8 {
            4 => Decision::Deny(DENY_REASON.to_owned()),
            5 | 6 => Decision::Redirect(names[usize::from(self.ctl.byte()) % names.len()].clone()),
            7 => Decision::Redirect("nowhere".to_owned()),
            _ => Decision::Allow,
        };
        if self.end.is_none() {
            self.routed = server.clone();
            self.target = match &decision {
                Decision::Allow => server,
                Decision::Deny(_) => None,
                Decision::Redirect(n) => self.routes.by_name(n).map(|s| s.name().to_owned()),
            };
            self.decision = Some(decision.clone());
            self.answers.push(Answer::Plugins(decision.clone()));
        }
        let done = self.end.is_some();
        let before = self.actions;
        self.s.pre_connect_result(decision);
        self.drain();
        if done {
            assert_eq!(self.actions, before, "an answer after the end was acted on");
        }
    }

    /// The driver recognised the connection as one of its own backend dials, instead of asking plugins.
    fn refuse_loop(&mut self) {
        let done = self.end.is_some();
        if !done {
            self.looped = true;
            self.target = None;
            self.answers.push(Answer::Loop);
        }
        let before = self.actions;
        self.s.refuse_loop();
        self.drain();
        if done {
            assert_eq!(
                self.actions, before,
                "a loop refusal after the end was acted on"
            );
        } else {
            assert!(
                matches!(self.end, Some(End::Close(CloseReason::Loop))),
                "a loop refusal did not close the session: {:?}",
                self.end
            );
        }
    }

    fn on_connect(&mut self, req: ConnectRequest) {
        assert!(self.pending_pre.is_none());
        let decision = self
            .decision
            .as_ref()
            .expect("Connect before a plugin answer");
        let Some(target) = self.target.clone() else {
            panic!("Connect to {req:?} although the plugins answered {decision:?} (unknown host, denial or missing redirect)")
        };
        assert_eq!(&*req.server, target, "Connect names another server");
        if self.is_login() {
            assert!(!self.is_full(&target), "Connect to a full server");
        }
        let cfg = &self.routes.by_name(&target).expect("known").config;
        assert!(
            cfg.addresses.contains(&*req.address),
            "{} is not an address of {target}",
            req.address
        );
        assert_eq!(req.timeout, cfg.timeouts.connect);
        assert!(
            !self.connects.contains(&req.address.to_string()),
            "failover dialled {} twice",
            req.address
        );
        self.connects.push(req.address.to_string());
        assert!(self.connects.len() <= cfg.addresses.len());
        self.dials.push(req.clone());
        if !self.finishing && self.ctl.byte() & 1 == 1 {
            self.pending_connect = Some(req);
        } else {
            self.answer_connect();
        }
    }

    fn answer_connect(&mut self) {
        let before = self.actions;
        let done = self.end.is_some();
        let connected = self.ctl.byte() & 1 == 0;
        if !done {
            self.answers.push(Answer::Dial { connected });
        }
        if !connected {
            if !done {
                self.failures += 1;
            }
            self.s.backend_failed(self.now);
            self.drain();
        } else {
            self.in_backend_connected = !done;
            let resolved: SocketAddr = RESOLVED.parse().expect("literal");
            self.s.backend_connected(resolved, self.now);
            self.drain();
            self.in_backend_connected = false;
        }
        if done {
            assert_eq!(self.actions, before, "an answer after the end was acted on");
        }
    }

    fn answer_pending(&mut self) {
        if let Some(event) = self.pending_pre.take() {
            // Until it is answered the session lends the same event, whatever came in meanwhile (more
            // bytes, the client's end, an abort).
            assert_eq!(Event::of(&self.s.pre_connect_event()), event);
            self.answer_pre_connect(event.server);
        } else if self.pending_connect.take().is_some() {
            self.answer_connect();
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        if self.eof {
            return;
        }
        self.offered.extend_from_slice(chunk);
        if self.s.is_done() {
            if matches!(self.end, Some(End::Forward)) {
                // The runtime's copy passes it on.
                self.fed.extend_from_slice(chunk);
                self.to_backend.extend_from_slice(chunk);
            }
            let before = self.actions;
            self.s.handle_client_data(chunk);
            self.drain();
            assert_eq!(self.actions, before, "data after the end was acted on");
            return;
        }
        assert_eq!(self.s.read_budget() + self.s.buffered(), MAX_BUFFERED);
        let overflow = chunk.len() > self.s.read_budget();
        if overflow {
            self.buffer_overflowed = true;
            self.cut = Some(Cut::Overflow);
        } else {
            self.fed.extend_from_slice(chunk);
        }
        self.s.handle_client_data(chunk);
        self.drain();
        if overflow {
            assert!(
                matches!(self.end, Some(End::Close(CloseReason::BufferLimit))),
                "a chunk over the read budget was accepted"
            );
        }
    }

    fn timeout(&mut self, delta: Duration) {
        self.now += delta;
        let deadline = self.s.poll_timeout();
        if self.end.is_some() {
            assert_eq!(deadline, None, "a deadline after the end");
        }
        let before = self.actions;
        self.s.handle_timeout(self.now);
        self.drain();
        if deadline.is_some_and(|d| self.now >= d) {
            self.cut = Some(Cut::Timeout);
            if handshake::is_legacy_prefix(&self.fed) {
                // `FE` or `FE 01` (or a 1.6 ping cut short) and nothing more: an old client waiting for
                // its answer.
                assert_eq!(self.actions, before + 2);
                assert!(matches!(
                    self.end,
                    Some(End::Close(CloseReason::LegacyPing))
                ));
            } else {
                assert_eq!(self.actions, before + 1);
                // A status the proxy answered itself is served, however long the client then waits.
                assert!(matches!(
                    self.end,
                    Some(End::Close(
                        CloseReason::HandshakeTimeout | CloseReason::StatusServed
                    ))
                ));
            }
        } else {
            assert_eq!(
                self.actions, before,
                "handle_timeout acted before the deadline"
            );
        }
    }

    /// Delivers an event that ends a session still going, with one `Close` whose reason `expected`
    /// accepts, and that a finished session ignores.
    fn ending_event(
        &mut self,
        what: &str,
        event: impl FnOnce(&mut Session),
        expected: impl Fn(&CloseReason) -> bool,
    ) {
        let was_done = self.end.is_some();
        let before = self.actions;
        event(&mut self.s);
        self.drain();
        if was_done {
            assert_eq!(self.actions, before, "{what} after the end was acted on");
        } else {
            assert_eq!(self.actions, before + 1);
            assert!(
                matches!(&self.end, Some(End::Close(r)) if expected(r)),
                "{what} ended with {:?}",
                self.end
            );
        }
    }

    fn client_eof(&mut self) {
        self.eof = true;
        if self.end.is_none() {
            self.cut = Some(Cut::Eof);
        }
        // A status the proxy answered itself is served, however the client leaves.
        self.ending_event("EOF", Session::handle_client_eof, |r| {
            matches!(r, CloseReason::ClientClosed | CloseReason::StatusServed)
        });
    }

    /// The runtime cuts the connection (the proxy shuts down): a session not yet ended closes with
    /// `Shutdown`, and a dial or plugin call in flight is abandoned; an ended one does nothing.
    fn abort(&mut self) {
        self.aborted = true;
        if self.end.is_none() {
            self.cut = Some(Cut::Abort);
        }
        self.pending_pre = None;
        self.pending_connect = None;
        self.ending_event("abort", Session::abort, |r| *r == CloseReason::Shutdown);
        assert!(self.s.is_done());
    }

    /// Calls an answer that nothing asked for; the session must ignore it.
    fn spurious(&mut self, kind: u8) {
        if self.pending_pre.is_some() || self.pending_connect.is_some() {
            return;
        }
        let before = self.actions;
        match kind % 5 {
            0 => self.s.pre_connect_result(Decision::Allow),
            4 => self.s.refuse_loop(),
            1 => self
                .s
                .pre_connect_result(Decision::Redirect("lobby".into())),
            2 => self.s.backend_failed(self.now),
            _ => self
                .s
                .backend_connected(RESOLVED.parse().expect("literal"), self.now),
        }
        self.drain();
        assert_eq!(self.actions, before, "an unrequested answer was acted on");
    }

    fn check_forwarded(&self) {
        let hs = self
            .client_handshake()
            .expect("forwarded without a handshake");
        let Ok(Parsed::Complete(_, client_used)) = handshake::parse(&self.fed) else {
            unreachable!()
        };
        let server = &self.live.as_ref().expect("live").info().server;
        let cfg = &self.routes.by_name(server).expect("known").config;

        let mut stream = self.to_backend.as_slice();
        if cfg.send_proxy_protocol {
            let header =
                proxy_protocol::header(cfg.proxy_protocol_version, self.client, self.local);
            match cfg.proxy_protocol_version {
                ProxyProtocolVersion::V2 => {
                    assert!(header.starts_with(b"\r\n\r\n\0\r\nQUIT\n"), "{header:?}")
                }
                ProxyProtocolVersion::V1 => {
                    assert!(header.starts_with(b"PROXY TCP") && header.ends_with(b"\r\n"))
                }
            }
            assert!(
                stream.starts_with(&header),
                "the PROXY header does not come first"
            );
            stream = &stream[header.len()..];
        }

        let (sent, used) = backend_handshake(stream);
        assert_eq!(sent.protocol_version, hs.protocol_version);
        assert_eq!(sent.port, hs.port);
        assert_eq!(sent.next_state, hs.next_state);
        let original = ServerAddress::split(&hs.address);
        let forwarded = ServerAddress::split(&sent.address);
        match &cfg.domain_rewrite {
            Rewrite::None => assert_eq!(sent.address, hs.address),
            Rewrite::Host(h) => {
                assert_eq!(forwarded.host, h.as_str(), "rewrite must replace the host");
                assert_eq!(
                    forwarded.decoration, original.decoration,
                    "rewrite must keep the decoration"
                );
            }
        }
        if used <= MAX_HANDSHAKE_FRAME {
            let Ok(Parsed::Complete(h, n)) = handshake::parse(stream) else {
                panic!("the forwarded handshake does not parse")
            };
            assert_eq!(n, used);
            assert_eq!(h.server_address, sent.address);
        }
        assert_eq!(
            &stream[used..],
            &self.fed[client_used..],
            "bytes after the handshake must reach the backend untouched and in order"
        );
        if hs.next_state.is_login() {
            let Ok(Parsed::Complete(ls, _)) = login::parse(&stream[used..]) else {
                panic!("the login start does not follow the handshake")
            };
            // The session hands its buffer to the backend: the registry entry keeps the name.
            let live = self.live.as_ref().expect("live");
            assert_eq!(Some(ls.name), live.info().player.as_deref());
        }

        // What the client is told if the backend says nothing.
        let Some(Ending::Forward {
            if_backend_silent, ..
        }) = &self.ending
        else {
            unreachable!("checked on a forward")
        };
        let requested = matches!(
            codec::read_frame(&self.fed[client_used..], MAX_HANDSHAKE_FRAME),
            Ok(Parsed::Complete(f, _)) if f.id == 0x00
        );
        if hs.next_state.is_login() {
            assert_eq!(disconnect_text(if_backend_silent), cfg.disconnect_message);
        } else if requested {
            let Ok(Parsed::Complete(frame, used)) = codec::read_frame(if_backend_silent, 1 << 20)
            else {
                panic!("the offline status is not a frame: {if_backend_silent:?}")
            };
            assert_eq!((frame.id, used), (0x00, if_backend_silent.len()));
            let Ok(Parsed::Complete(json, _)) = codec::read_string(frame.body, 1 << 20) else {
                panic!("the offline status holds no string")
            };
            let v: serde_json::Value =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
            assert_eq!(v["description"]["text"], cfg.disconnect_message.as_str());
        } else {
            assert!(
                if_backend_silent.is_empty(),
                "a bare Ping has no request to answer"
            );
        }
    }

    fn check_close(&self, reason: &CloseReason) {
        let login = self.is_login();
        let refusal_sent = |expected: Option<&str>| {
            if login {
                let last = self.to_client.last().expect("a refused login is told why");
                let text = disconnect_text(last);
                if let Some(e) = expected {
                    assert_eq!(text, e);
                }
            } else {
                assert!(
                    self.to_client.is_empty(),
                    "a status ping got {:?}",
                    self.to_client
                );
            }
        };
        match reason {
            CloseReason::UnknownHost => {
                assert_eq!(self.decision, Some(Decision::Allow));
                assert_eq!(self.target, None);
                assert!(self.connects.is_empty());
                refusal_sent(Some(UNKNOWN_HOST_MESSAGE));
            }
            CloseReason::Denied => {
                assert_eq!(self.decision, Some(Decision::Deny(DENY_REASON.into())));
                assert!(self.connects.is_empty());
                refusal_sent(Some(DENY_REASON));
            }
            CloseReason::UnknownRedirect(name) => {
                assert_eq!(self.decision, Some(Decision::Redirect(name.clone())));
                assert!(self.routes.by_name(name).is_none());
                // What the routed server tells when it is down; an address that routed nowhere is
                // unknown.
                let routed = self.routed.as_deref().and_then(|n| self.routes.by_name(n));
                let message = routed.map_or(UNKNOWN_HOST_MESSAGE, |s| {
                    s.config.disconnect_message.as_str()
                });
                refusal_sent(Some(message));
            }
            CloseReason::ServerFull => {
                assert!(login, "a status ping refused as full");
                assert!(self.is_full(self.target.as_deref().expect("a target")));
                assert!(self.connects.is_empty());
                refusal_sent(Some(SERVER_FULL_MESSAGE));
            }
            CloseReason::BackendUnreachable => {
                let target = self.target.as_deref().expect("a target");
                let cfg = &self.routes.by_name(target).expect("known").config;
                assert!(login);
                assert_eq!(self.failures, cfg.addresses.len(), "gave up early");
                refusal_sent(Some(&cfg.disconnect_message));
            }
            CloseReason::StatusServed => {
                assert!(!login);
                let target = self.target.as_deref().expect("a target");
                let cfg = &self.routes.by_name(target).expect("known").config;
                assert_eq!(self.failures, cfg.addresses.len());
                assert!(!self.to_client.is_empty());
            }
            CloseReason::LegacyPing => {
                assert_eq!(self.fed.first(), Some(&0xFE));
                assert_eq!(self.to_client.len(), 1);
                assert_eq!(self.to_client[0].first(), Some(&0xFF));
            }
            CloseReason::LegacyFallback => {
                // A 1.7+ client's 1.6 ping (protocol 127 after "MC|PingHost"), unanswered.
                assert!(self
                    .fed
                    .starts_with(&[0xFE, 0x01, 0xFA, 0x00, 11, 0x00, b'M']));
                assert_eq!(self.fed.get(29), Some(&127));
                assert!(self.to_client.is_empty(), "{:?}", self.to_client);
                assert!(self.connects.is_empty() && self.decision.is_none());
            }
            CloseReason::LegacyLogin => {
                assert_eq!(self.fed.first(), Some(&0x02));
                assert_eq!(self.to_client.len(), 1);
                assert_eq!(self.to_client[0].first(), Some(&0xFF));
            }
            CloseReason::Loop => {
                assert!(self.looped);
                assert!(self.connects.is_empty());
                // Login or ping: the dialling session tells its own client.
                assert!(
                    self.to_client.is_empty(),
                    "a looping connection is refused without a word (login {login}): {:?}",
                    self.to_client
                );
            }
            CloseReason::BufferLimit => assert!(self.buffer_overflowed),
            CloseReason::Shutdown => assert!(self.aborted),
            CloseReason::HandshakeTimeout | CloseReason::ClientClosed => {}
            CloseReason::ProtocolError(e) => assert!(!e.is_empty()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let (control, mut bytes) = rest.split_at(usize::from(len).min(rest.len()));
    let mut ctl = Ctl(control);

    let bits = [ctl.byte(), ctl.byte(), ctl.byte()];
    let count = 2 + usize::from(ctl.byte() % 2);
    let configs: Vec<ServerConfig> = (0..count).map(|i| server_config(i, bits[i])).collect();
    let routes = match RouteTable::build(&configs) {
        Ok(t) => Arc::new(t),
        Err(e) => panic!("the harness's route table is invalid: {e}"),
    };
    let registry = Registry::new();
    let mut prefill = Vec::new();
    let mut held = Vec::new();
    // Always three bytes, so that the rest of the script does not shift with the server count.
    let slots = [ctl.byte(), ctl.byte(), ctl.byte()];
    for (c, slot) in configs.iter().zip(slots) {
        let n = u32::from(slot % 4);
        for _ in 0..n {
            held.push(registry.admit(&c.name, 0).expect("unlimited"));
        }
        prefill.push(n);
    }
    let who = ctl.byte();
    let client: SocketAddr = CLIENTS[usize::from(who) % 3].parse().expect("literal");
    let local: SocketAddr = LOCALS[usize::from(who >> 2) % 2].parse().expect("literal");
    // Mostly a few seconds; sometimes as long as a configuration may say (humantime accepts up to
    // u64::MAX seconds), which no deadline arithmetic may trip over.
    let handshake_timeout = match ctl.byte() {
        b @ 0xf0.. => Duration::from_secs(u64::MAX >> (b & 0x0f)),
        b => Duration::from_millis(500 + 500 * u64::from(b % 20)),
    };
    let now = Instant::now();
    let ctx = Context {
        routes: Arc::clone(&routes),
        registry: Arc::clone(&registry),
        handshake_timeout,
    };
    let s = Session::new(ctx.clone(), client, local, now);
    // A deadline too far to represent is no deadline.
    assert_eq!(s.poll_timeout(), now.checked_add(handshake_timeout));
    assert!(s.wants_client_data());

    let mut run = Run {
        ctl,
        s,
        routes,
        registry,
        prefill,
        client,
        local,
        now,
        finishing: false,
        eof: false,
        fed: Vec::new(),
        to_backend: Vec::new(),
        to_client: Vec::new(),
        pending_pre: None,
        pending_connect: None,
        decision: None,
        target: None,
        looped: false,
        routed: None,
        pre_connects: 0,
        connects: Vec::new(),
        failures: 0,
        in_backend_connected: false,
        buffer_overflowed: false,
        aborted: false,
        actions: 0,
        end: None,
        ends: 0,
        live: None,
        event: None,
        dials: Vec::new(),
        answers: Vec::new(),
        cut: None,
        ending: None,
        fed_at_end: 0,
        to_backend_at_end: 0,
        offered: Vec::new(),
    };

    let mut steps = 0;
    while !run.ctl.is_empty() && steps < MAX_STEPS {
        steps += 1;
        match run.ctl.byte() % 10 {
            0..=3 => {
                let n = (1 + usize::from(run.ctl.byte())).min(bytes.len());
                let (chunk, tail) = bytes.split_at(n);
                bytes = tail;
                run.feed(chunk);
            }
            4 => {
                // A burst the fuzzer cannot spell out byte by byte: up to 64 KiB of one byte.
                let n = usize::from(u16::from_be_bytes([run.ctl.byte(), run.ctl.byte()]));
                let fill = run.ctl.byte();
                run.feed(&vec![fill; n]);
            }
            5 => {
                let ms = 100 * u64::from(run.ctl.byte());
                run.timeout(Duration::from_millis(ms));
            }
            6 => run.client_eof(),
            7 | 8 => run.answer_pending(),
            _ => match run.ctl.byte() {
                // Rare, as it ends the session.
                0xff => run.abort(),
                kind => run.spurious(kind),
            },
        }
    }

    // The script ran out: every answer is given, the rest of the client's bytes arrive, then EOF.
    run.finishing = true;
    run.feed(bytes);
    while run.pending_pre.is_some() || run.pending_connect.is_some() {
        run.answer_pending();
    }
    run.client_eof();
    assert!(run.s.is_done(), "not done after EOF");
    assert_eq!(run.ends, 1, "exactly one Forward or Close");
    assert!(run.s.poll_action().is_none());
    assert_eq!(run.s.poll_timeout(), None);
    assert!(!run.s.wants_client_data());

    // Nothing revives a finished session.
    let before = run.actions;
    run.s.handle_client_data(&[0x00, 0x01, 0x02]);
    run.s.handle_timeout(run.now + Duration::from_secs(3600));
    run.s.pre_connect_result(Decision::Allow);
    run.s
        .backend_connected(RESOLVED.parse().expect("literal"), run.now);
    run.s.backend_failed(run.now);
    run.drain();
    assert_eq!(run.actions, before);

    match run.end.take() {
        Some(End::Forward) => {
            run.check_forwarded();
            let target = run.target.clone().expect("a target");
            let i = run
                .routes
                .servers()
                .iter()
                .position(|s| s.name() == target)
                .expect("known");
            let extra = u32::from(run.is_login());
            assert_eq!(run.registry.players_on(&target), run.prefill[i] + extra);
            assert_eq!(run.registry.len(), 1);
            drop(run.live.take());
            assert_eq!(run.registry.len(), 0);
        }
        Some(End::Close(reason)) => {
            run.check_close(&reason);
            assert_eq!(run.registry.len(), 0);
        }
        None => unreachable!("checked above"),
    }
    for (i, s) in run.routes.servers().iter().enumerate() {
        assert_eq!(
            run.registry.players_on(s.name()),
            run.prefill[i],
            "a player slot on {} was not released",
            s.name()
        );
    }

    // The same bytes in one chunk, answered the same way, end the same way: unless a timeout or a chunk
    // over the read budget ended the run, which depend on what had arrived by then.
    if !matches!(run.cut, Some(Cut::Timeout | Cut::Overflow)) {
        let seen = Outcome {
            event: run.event.take(),
            connects: std::mem::take(&mut run.dials),
            to_backend: run.to_backend[..run.to_backend_at_end].to_vec(),
            to_client: std::mem::take(&mut run.to_client),
            end: run.ending.take(),
        };
        // A route table of its own for each replay: servers take turns at their first address (round
        // robin).
        let fresh = || Context {
            routes: match RouteTable::build(&configs) {
                Ok(t) => Arc::new(t),
                Err(e) => panic!("the harness's route table is invalid: {e}"),
            },
            ..ctx.clone()
        };
        let fed = &run.fed[..run.fed_at_end];
        let replayed = replay(fresh(), (client, local, now), fed, &run.answers, run.cut);
        assert_eq!(
            replayed,
            seen,
            "the same {} bytes in one chunk, answered {:?} then cut by {:?}, end otherwise",
            fed.len(),
            run.answers,
            run.cut
        );

        // No verdict was premature: with the bytes that came after the end (ignored, or passed on by
        // the copy) in the same chunk, the session ends the same way, the copy's bytes in its opening.
        // Only for a run that its bytes or answers ended (after an EOF nothing more comes; what came
        // after an abort or a timeout would, in one chunk, have arrived before it), and within one read.
        let all = run.offered.as_slice();
        if run.cut.is_none() && all.len() > fed.len() && all.len() <= MAX_BUFFERED {
            assert!(all.starts_with(fed));
            let mut expected = seen;
            if let Some(Ending::Forward { c2b_initial, .. }) = &mut expected.end {
                assert_eq!(
                    run.to_backend.len() - run.to_backend_at_end,
                    all.len() - fed.len()
                );
                expected.to_backend.clone_from(&run.to_backend);
                *c2b_initial = run.to_backend.len() as u64;
            }
            // A start of a PROXY header is named as one only as far as it matches the signature.
            if let (Some(Ending::Close(CloseReason::ProtocolError(why))), Err(e)) =
                (&mut expected.end, handshake::parse_opening(all))
            {
                if *why == HandshakeError::ProxyHeader.to_string() {
                    *why = e.to_string();
                }
            }
            let replayed = replay(fresh(), (client, local, now), all, &run.answers, None);
            assert_eq!(
                replayed,
                expected,
                "{} bytes ended the run, with the {} after them in the same chunk the session ends \
                 otherwise (answered {:?})",
                fed.len(),
                all.len() - fed.len(),
                run.answers
            );
        }
        for (i, s) in run.routes.servers().iter().enumerate() {
            assert_eq!(run.registry.players_on(s.name()), run.prefill[i]);
        }
    }
    drop(held);
});
