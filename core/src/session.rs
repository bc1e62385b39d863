//! The life of one client connection up to "start forwarding", as a pure state machine.
//!
//! Feed it client bytes ([`Session::handle_client_data`]) and outcomes ([`Session::pre_connect_result`],
//! [`Session::backend_connected`], [`Session::backend_failed`], [`Session::handle_timeout`]); pull what to do
//! next with [`Session::poll_action`]. Time is always an argument. The same bytes give the same actions
//! however they are split into chunks.

use crate::codec::{self, Parsed};
use crate::config::{ProxyMode, Timeouts};
use crate::handshake::{self, NextState, Opening};
use crate::hostname::{Host, ServerAddress};
use crate::login;
use crate::plugin::{Decision, PreConnectEvent};
use crate::registry::{Admission, LiveSession, Registry, SessionInfo};
use crate::route::{RouteTable, Server};
use crate::{proxy_protocol, response};
use bytes::Bytes;
use smallvec::SmallVec;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes a session buffers before forwarding starts: the largest handshake and login start, plus room
/// for what a client sends right after them. A client whose first packets are still incomplete when the
/// buffer holds this much is closed ([`CloseReason::BufferLimit`]); what a client sends after its login
/// start or status request is not read into it ([`Session::read_budget`]) and goes to the copy.
pub const MAX_BUFFERED: usize = 32 * 1024;

/// Largest frame accepted while the proxy itself answers a status ping.
const MAX_STATUS_FRAME: usize = 256;

/// How long after the connection opened (not after the `FE` came) `FE` or `FE 01` alone waits for more
/// bytes before it is answered as a pre-1.6 legacy ping.
pub const LEGACY_WAIT: Duration = Duration::from_millis(500);

/// What legacy (pre-1.7) pingers are shown.
pub const LEGACY_PING_MOTD: &str = "Use Minecraft 1.7 or newer";

/// What a legacy (pre-1.7) client that tries to log in is told before it is closed.
pub const LEGACY_LOGIN_KICK: &str = "Outdated client! Use Minecraft 1.7 or newer";

/// What a login is told when its server is full.
pub const SERVER_FULL_MESSAGE: &str = "The server is full. Please try again later.";

/// Longest client host logged whole: no longer name can be routed (DNS names are at most 253 bytes).
const MAX_LOGGED_HOST: usize = 255;

/// `host` for a log line: a longer one (up to the 16 KiB a handshake may hold) is cut, with its length
/// noted, so a client cannot write a log byte for each byte it sends.
fn logged_host(host: &str) -> std::borrow::Cow<'_, str> {
    if host.len() <= MAX_LOGGED_HOST {
        return host.into();
    }
    let cut = (0..=MAX_LOGGED_HOST)
        .rev()
        .find(|&i| host.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}... ({} bytes)", &host[..cut], host.len()).into()
}

/// What a login is told when its host matches no server.
pub const UNKNOWN_HOST_MESSAGE: &str = "Unknown server address";

/// The warning a driver logs for its own backend connection arriving as a client, which it refuses with
/// [`Session::refuse_loop`] (or closes on its PROXY header, which no handshake starts with, so no session
/// reaches PreConnect), naming the server that connection was dialled for.
pub const LOOP_WARNING: &str = "a server's address leads back to this proxy: its own backend connection \
                                arrived as a client; refused (give the server its backend's address, not \
                                the proxy's)";

/// Settings shared by every session of a listener.
#[derive(Debug, Clone)]
pub struct Context {
    /// The routes at the time the connection was accepted.
    pub routes: Arc<RouteTable>,
    /// Live sessions and player counts.
    pub registry: Arc<Registry>,
    /// How long a client may take to send its handshake and login start.
    pub handshake_timeout: Duration,
}

/// Why a connection was closed before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The host matches no server.
    UnknownHost,
    /// A plugin refused the connection.
    Denied,
    /// The server has `max_players` players.
    ServerFull,
    /// No backend address answered.
    BackendUnreachable,
    /// A plugin redirected to a server that does not exist.
    UnknownRedirect(String),
    /// The client did not send its first packets in time.
    HandshakeTimeout,
    /// The client closed before forwarding.
    ClientClosed,
    /// The client sent something that is not the Minecraft protocol.
    ProtocolError(String),
    /// The session's buffer reached [`MAX_BUFFERED`] bytes with the first packets still incomplete, or more
    /// bytes than [`Session::read_budget`] were fed at once (a runtime that reads within the budget gets
    /// this only for the first case).
    BufferLimit,
    /// A legacy ping was answered.
    LegacyPing,
    /// A legacy (pre-1.7) login was told to use a newer client.
    LegacyLogin,
    /// The legacy ping a 1.7+ client sends when its status ping got no answer, closed unanswered: the
    /// server list then shows "Can't connect to server", where a legacy answer would be shown as the MOTD
    /// (a legacy ping's "Use Minecraft 1.7 or newer", marked incompatible).
    LegacyFallback,
    /// A status ping was answered by the proxy (its backend was unreachable).
    StatusServed,
    /// The proxy shut down (its shutdown deadline, or a second signal) before the session was forwarded.
    Shutdown,
    /// The connection came from the proxy itself: a server's address leads back to the proxy
    /// ([`Session::refuse_loop`]).
    Loop,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::UnknownRedirect(s) => write!(f, "UnknownRedirect({s})"),
            CloseReason::ProtocolError(s) => write!(f, "ProtocolError({s})"),
            other => fmt::Debug::fmt(other, f),
        }
    }
}

/// A backend address to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The server it belongs to.
    pub server: Arc<str>,
    /// `host:port` to resolve and dial.
    pub address: Arc<crate::config::BackendAddress>,
    /// Limit on the dial.
    pub timeout: Duration,
}

/// Everything the driver needs to start copying bytes.
#[derive(Debug)]
pub struct Forward {
    /// How to copy.
    pub mode: ProxyMode,
    /// Idle and write limits.
    pub timeouts: Timeouts,
    /// Bytes already counted towards client-to-backend: the opening as sent to the backend (the PROXY
    /// header, the handshake and login start as forwarded, rewritten or not, and what came after them).
    pub c2b_initial: u64,
    /// The registry entry; call [`LiveSession::finish`] with the byte counts when the copy ends.
    pub live: LiveSession,
    /// What to write to the client, before closing it, if the backend closes (or resets) the connection
    /// without having sent a single byte, or the session ends with [`EndReason::Timeout`](crate::EndReason)
    /// before the backend sent one (a backend that accepts and then says nothing, still starting or hung):
    /// a Login Disconnect with the server's `disconnect_message` for a login, so the player reads the
    /// message instead of a bare "end of stream"; for a server-list ping, the offline status a ping gets
    /// when no backend answers (the message as MOTD; no pong follows), or nothing for a ping forwarded on
    /// a bare Ping, which has no Status Request to answer.
    pub if_backend_silent: Bytes,
}

/// What the driver must do next, in order.
#[derive(Debug)]
pub enum Action {
    /// Ask the plugins about [`Session::pre_connect_event`], then call [`Session::pre_connect_result`].
    /// The answer is due by the handshake deadline: [`Session::poll_timeout`] covers this wait too, and
    /// [`Session::handle_timeout`] after it closes the session (`HandshakeTimeout`; a late answer is then
    /// ignored).
    PreConnect,
    /// Dial, then call [`Session::backend_connected`] or [`Session::backend_failed`], once: an outcome is
    /// taken only while a polled `Connect` waits for one. A runtime that gives up on a dial (its connect
    /// timer ran out) reports the failure and drops that dial: an outcome it reported later would be
    /// taken as the next `Connect`'s.
    Connect(ConnectRequest),
    /// Write these bytes to the backend.
    SendToBackend(Bytes),
    /// Write these bytes to the client.
    SendToClient(Bytes),
    /// Start the bidirectional copy; the session is done.
    Forward(Forward),
    /// Flush what was sent to the client, then close both sockets; the session is done.
    Close(CloseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshake,
    StatusRequest,
    LoginStart,
    PreConnect,
    Connecting,
    OfflineStatus,
    Done,
}

#[derive(Debug, Clone, Copy)]
struct HandshakeInfo {
    protocol_version: i32,
    port: u16,
    next_state: NextState,
    address: (usize, usize),
    frame_end: usize,
}

/// One client connection before forwarding.
#[derive(Debug)]
pub struct Session {
    ctx: Context,
    client: SocketAddr,
    local: SocketAddr,
    state: State,
    opened: Instant,
    deadline: Option<Instant>,
    buf: Vec<u8>,
    handshake: Option<HandshakeInfo>,
    player: Option<(usize, usize)>,
    /// End of the bytes consumed by parsing (handshake, login start, answered status frames).
    parsed: usize,
    /// The handshake's host normalised, once the pre-connect event is due.
    host: NormalHost,
    /// Where the handshake's host routes, found once for the pre-connect event and used if it allows.
    routed: Option<Arc<Server>>,
    server: Option<Arc<Server>>,
    admission: Option<Admission>,
    first_address: usize,
    attempts: usize,
    /// A polled [`Action::Connect`] waits for its outcome: only then are `backend_connected` and
    /// `backend_failed` taken (an early or a second outcome is ignored).
    dialing: bool,
    status_requested: bool,
    /// Rarely more than two at a time, so they live in the session (no allocation).
    actions: SmallVec<[Action; 2]>,
}

/// The normalised host of the pre-connect event: most hosts arrive normal, and are then a range of the
/// session's buffer; one that normalising changed (upper case, a trailing dot, an IPv6 spelling, Unicode)
/// is a copy.
#[derive(Debug)]
enum NormalHost {
    None,
    InBuf(usize, usize),
    Copied(String),
}

impl Session {
    /// A session for a client at `client` that connected to the proxy's `local` address at `now`.
    pub fn new(ctx: Context, client: SocketAddr, local: SocketAddr, now: Instant) -> Session {
        // A timeout too long to represent as an instant is no deadline (configs cap it at 10 years; a
        // Context can be built by hand).
        let deadline = now.checked_add(ctx.handshake_timeout);
        Session {
            ctx,
            client,
            local,
            state: State::Handshake,
            opened: now,
            deadline,
            buf: Vec::new(),
            handshake: None,
            player: None,
            parsed: 0,
            host: NormalHost::None,
            routed: None,
            server: None,
            admission: None,
            first_address: 0,
            attempts: 0,
            dialing: false,
            status_requested: false,
            actions: SmallVec::new(),
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        // Front first; the queue holds a handful at most, so shifting the rest costs nothing.
        let action = (!self.actions.is_empty()).then(|| self.actions.remove(0));
        if let Some(Action::Connect(_)) = action {
            self.dialing = true;
        }
        action
    }

    /// What the plugins are asked about at [`Action::PreConnect`]: borrowed from the session, so building
    /// it allocates nothing. It describes that event from when the action is polled until
    /// [`Session::pre_connect_result`] is called, whatever happens meanwhile; before, `host` is empty and
    /// `server` is `None`; after, it describes nothing (a driver that keeps the event copies it first).
    pub fn pre_connect_event(&self) -> PreConnectEvent<'_> {
        PreConnectEvent {
            client: self.client,
            host: match &self.host {
                NormalHost::None => "",
                NormalHost::InBuf(a, b) => self.str_at(*a, *b).unwrap_or(""),
                NormalHost::Copied(h) => h,
            },
            server: self.routed.as_deref().map(Server::name),
            player: self.player(),
            protocol_version: self.handshake.map_or(0, |h| h.protocol_version),
            next_state: self.handshake.map_or(NextState::Status, |h| h.next_state),
        }
    }

    /// When [`Session::handle_timeout`] must be called if nothing else happens first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Handshake if handshake::is_legacy_prefix(&self.buf) => {
                [self.opened.checked_add(LEGACY_WAIT), self.deadline]
                    .into_iter()
                    .flatten()
                    .min()
            }
            State::Handshake
            | State::StatusRequest
            | State::LoginStart
            | State::PreConnect
            | State::OfflineStatus => self.deadline,
            State::Connecting | State::Done => None,
        }
    }

    /// Whether the session wants more bytes from the client (otherwise the driver need not read).
    pub fn wants_client_data(&self) -> bool {
        matches!(
            self.state,
            State::Handshake | State::StatusRequest | State::LoginStart | State::OfflineStatus
        )
    }

    /// How many more bytes the session accepts before forwarding; a driver should read no more than this at
    /// once, so bytes a client sends early stay in the socket for the copy instead of overflowing the buffer.
    pub fn read_budget(&self) -> usize {
        MAX_BUFFERED.saturating_sub(self.buf.len())
    }

    /// Whether the session has forwarded or closed; no more actions will come.
    pub fn is_done(&self) -> bool {
        self.state == State::Done && self.actions.is_empty()
    }

    /// Bytes from the client held by the session (never more than [`MAX_BUFFERED`]). Once forwarded, none
    /// when the opening went to the backend as the client sent it; with a PROXY header or a rewritten host
    /// the opening is a new buffer and the client's bytes stay here until the session is dropped.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The player name, once the login start has been read, until forwarding starts (the buffer it is read
    /// from may then become the opening sent to the backend; it is still there with a PROXY header or a
    /// rewritten host, so do not rely on either answer after [`Action::Forward`]).
    pub fn player(&self) -> Option<&str> {
        self.player.and_then(|(a, b)| self.str_at(a, b))
    }

    /// The server picked, once routed.
    pub fn server(&self) -> Option<&str> {
        self.server.as_deref().map(Server::name)
    }

    fn str_at(&self, a: usize, b: usize) -> Option<&str> {
        self.buf.get(a..b).and_then(|s| std::str::from_utf8(s).ok())
    }

    fn server_address(&self) -> &str {
        self.handshake
            .and_then(|h| self.str_at(h.address.0, h.address.1))
            .unwrap_or("")
    }

    /// Bytes from the client.
    pub fn handle_client_data(&mut self, data: &[u8]) {
        if self.state == State::Done {
            return;
        }
        if self.buf.len() + data.len() > MAX_BUFFERED {
            self.close(CloseReason::BufferLimit);
            return;
        }
        self.buf.extend_from_slice(data);
        self.advance();
        if self.wants_client_data() && self.buf.len() >= MAX_BUFFERED {
            // Full and still incomplete: no valid client gets here.
            self.close(CloseReason::BufferLimit);
        }
    }

    /// The client closed its side before forwarding started.
    pub fn handle_client_eof(&mut self) {
        match self.state {
            State::Done => {}
            // Its status was answered; many server-list tools leave without the ping.
            State::OfflineStatus if self.status_requested => self.close(CloseReason::StatusServed),
            _ => self.close(CloseReason::ClientClosed),
        }
    }

    /// The runtime is cutting the connection because the proxy shuts down: closes the session with reason
    /// [`CloseReason::Shutdown`] (logged like every close) unless it has already forwarded or closed.
    pub fn abort(&mut self) {
        if self.state != State::Done {
            self.close(CloseReason::Shutdown);
        }
    }

    /// Time has passed; closes the session when the client is too slow.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_none_or(|d| now < d) {
            return;
        }
        if self.state == State::Handshake && handshake::is_legacy_prefix(&self.buf) {
            // An old client sent its ping and waits for the answer.
            self.answer_legacy_ping();
        } else if self.state == State::OfflineStatus && self.status_requested {
            // Its status was answered; a client that never pings is served all the same.
            self.close(CloseReason::StatusServed);
        } else {
            self.close(CloseReason::HandshakeTimeout);
        }
    }

    fn answer_legacy_ping(&mut self) {
        let ping = match self.buf.get(1) {
            Some(0x01) => response::LegacyPing::V1_4,
            _ => response::LegacyPing::Beta,
        };
        self.actions.push(Action::SendToClient(
            response::legacy_ping_answer(ping, LEGACY_PING_MOTD).into(),
        ));
        self.close(CloseReason::LegacyPing);
    }

    /// The plugins' answer to [`Action::PreConnect`].
    pub fn pre_connect_result(&mut self, decision: Decision) {
        if self.state != State::PreConnect {
            return;
        }
        let server = match decision {
            Decision::Deny(reason) => {
                self.send_login_disconnect(&reason);
                return self.close(CloseReason::Denied);
            }
            Decision::Redirect(name) => match self.ctx.routes.by_name(&name) {
                Some(s) => Arc::clone(s),
                None => {
                    // The server it was sent to is gone (a reload) or misspelt in the plugin. A player
                    // whose address routed is told what that server tells when it is down; one whose
                    // address routed nowhere, that the address is unknown.
                    let routed = self.routed.clone();
                    let message = routed.as_deref().map_or(UNKNOWN_HOST_MESSAGE, |s| {
                        s.config.disconnect_message.as_str()
                    });
                    self.send_login_disconnect(message);
                    return self.close(CloseReason::UnknownRedirect(name));
                }
            },
            Decision::Allow => match self.routed.take() {
                Some(s) => s,
                None => {
                    self.send_login_disconnect(UNKNOWN_HOST_MESSAGE);
                    return self.close(CloseReason::UnknownHost);
                }
            },
        };
        if self.is_login() {
            match self
                .ctx
                .registry
                .admit(server.name(), server.config.max_players)
            {
                Some(slot) => self.admission = Some(slot),
                None => {
                    self.server = Some(server);
                    self.send_login_disconnect(SERVER_FULL_MESSAGE);
                    return self.close(CloseReason::ServerFull);
                }
            }
        }
        self.first_address = server.first_address();
        self.attempts = 0;
        self.server = Some(server);
        self.state = State::Connecting;
        self.connect_next();
    }

    /// Instead of [`Session::pre_connect_result`]: the connection comes from the proxy itself, one of its
    /// own backend dials (the driver knows which connections those are), so the server's addresses lead
    /// back to the proxy and every login would dial it again until connections run out. It is closed
    /// without an answer: the dialling session sees its backend close without a byte and tells its client
    /// what its own server says then ([`Forward::if_backend_silent`]: the server's `disconnect_message`,
    /// as a Login Disconnect or as the offline status of a server-list ping). This session could not tell
    /// it: its handshake may have been rewritten to a host that routes elsewhere or nowhere.
    pub fn refuse_loop(&mut self) {
        if self.state != State::PreConnect {
            return;
        }
        // The driver logs the loop ([`LOOP_WARNING`]): it knows which server's dial came back.
        self.server = self.routed.take();
        self.close(CloseReason::Loop);
    }

    /// The backend at the last [`Action::Connect`] accepted the connection from the proxy; `backend` is its
    /// resolved address.
    ///
    /// Ignored unless a polled [`Action::Connect`] waits for its outcome (see there).
    pub fn backend_connected(&mut self, backend: SocketAddr, now: Instant) {
        if self.state != State::Connecting || !self.dialing {
            return;
        }
        self.dialing = false;
        let (Some(server), Some(hs)) = (self.server.clone(), self.handshake) else {
            return;
        };
        let cfg = &server.config;
        let rewritten = cfg.domain_rewrite.apply(self.server_address());
        let info = SessionInfo {
            id: 0,
            player: self.player().map(str::to_owned),
            server: server.shared_name(),
            client: self.client,
            backend,
            active: false,
            mode: cfg.proxy_mode,
            started: now,
        };
        let live = self.ctx.registry.register(info, self.admission.take());
        tracing::debug!(client = %self.client, backend = %backend, server = server.name(),
            player = self.player().unwrap_or("-"), "forwarding");
        let opening = if !cfg.send_proxy_protocol && rewritten.is_none() {
            // What the client sent is what the backend gets: the buffer itself, no copy (and, read in one
            // piece as it usually is, no allocation either).
            std::mem::take(&mut self.buf)
        } else {
            let mut out = Vec::with_capacity(self.buf.len() + 64);
            if cfg.send_proxy_protocol {
                out.extend(proxy_protocol::header(
                    cfg.proxy_protocol_version,
                    self.client,
                    self.local,
                ));
            }
            match rewritten {
                Some(address) => handshake::Handshake {
                    protocol_version: hs.protocol_version,
                    server_address: &address,
                    port: hs.port,
                    next_state: hs.next_state,
                }
                .encode(&mut out),
                None => out.extend_from_slice(&self.buf[..hs.frame_end]),
            }
            out.extend_from_slice(&self.buf[hs.frame_end..]);
            out
        };
        let c2b_initial = opening.len() as u64;
        let if_backend_silent = if self.is_login() {
            server.login_disconnect()
        } else if self.status_requested {
            self.offline_status().into()
        } else {
            Bytes::new()
        };
        self.actions
            .push(Action::SendToBackend(Bytes::from(opening)));
        self.actions.push(Action::Forward(Forward {
            mode: cfg.proxy_mode,
            timeouts: cfg.timeouts,
            c2b_initial,
            live,
            if_backend_silent,
        }));
        self.state = State::Done;
    }

    /// The dial of the last [`Action::Connect`] failed or timed out; the next address is proposed, or the
    /// client is told the server is unreachable.
    ///
    /// Ignored unless a polled [`Action::Connect`] waits for its outcome (see there).
    pub fn backend_failed(&mut self, now: Instant) {
        if self.state != State::Connecting || !self.dialing {
            return;
        }
        self.dialing = false;
        self.attempts += 1;
        let Some(server) = self.server.clone() else {
            return;
        };
        if self.attempts < server.address_count() {
            return self.connect_next();
        }
        self.admission = None;
        if self.is_login() {
            // Built once per server (also what a backend that closes silently gets the player).
            self.actions
                .push(Action::SendToClient(server.login_disconnect()));
            self.close(CloseReason::BackendUnreachable);
        } else {
            tracing::debug!(client = %self.client, server = server.name(), "backend unreachable, answering status");
            // A Status Request read before routing is answered now; then the ping.
            if self.status_requested {
                let status = self.offline_status();
                self.actions.push(Action::SendToClient(status.into()));
            }
            self.state = State::OfflineStatus;
            self.deadline = now.checked_add(self.ctx.handshake_timeout);
            self.advance();
        }
    }

    fn connect_next(&mut self) {
        let Some(server) = &self.server else { return };
        let Some(address) = server.address(self.first_address + self.attempts) else {
            return self.close(CloseReason::BackendUnreachable);
        };
        self.actions.push(Action::Connect(ConnectRequest {
            server: server.shared_name(),
            address,
            timeout: server.config.timeouts.connect,
        }));
    }

    fn is_login(&self) -> bool {
        self.handshake.is_some_and(|h| h.next_state.is_login())
    }

    /// Tells a login `reason`, cut to what its client reads (a plugin's reason has no bound of its own).
    fn send_login_disconnect(&mut self, reason: &str) {
        let Some(hs) = self.handshake.filter(|h| h.next_state.is_login()) else {
            return;
        };
        let reason = response::fit_kick(reason, response::kick_limit(hs.protocol_version));
        self.actions.push(Action::SendToClient(
            response::login_disconnect(reason).into(),
        ));
    }

    fn close(&mut self, reason: CloseReason) {
        self.admission = None;
        if self.state == State::PreConnect && self.server.is_none() {
            // Refused by the plugins (a denial, a redirect to nowhere) or cut while they decide (a
            // timeout, a shutdown): logged with the server the host routed to, so a server's refusals can
            // be found. A copy: the event describes itself until the plugins' answer (pre_connect_event).
            self.server.clone_from(&self.routed);
        }
        let host = logged_host(ServerAddress::split(self.server_address()).host);
        macro_rules! closed {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    client = %crate::registry::LoggedAddr(self.client),
                    // A `&str`: the human format quotes and escapes it (a client-chosen host cannot forge
                    // other fields of the line) and JSON gets the plain string.
                    host = &*host,
                    player = self.player().unwrap_or("-"),
                    server = self.server().unwrap_or("-"),
                    reason = %reason,
                    "connection closed before forwarding"
                )
            };
        }
        if reason == CloseReason::ClientClosed && self.buf.is_empty() {
            // Connected and left without a byte: a TCP health check or a port scan, not a player.
            closed!(tracing::Level::DEBUG);
        } else {
            closed!(tracing::Level::INFO);
        }
        self.actions.push(Action::Close(reason));
        self.state = State::Done;
    }

    fn advance(&mut self) {
        loop {
            match self.state {
                State::Handshake => match handshake::parse_opening(&self.buf) {
                    Ok(Parsed::Incomplete) => return,
                    Ok(Parsed::Complete(Opening::LegacyPing, _)) => {
                        return self.answer_legacy_ping();
                    }
                    Ok(Parsed::Complete(Opening::LegacyFallback, _)) => {
                        return self.close(CloseReason::LegacyFallback);
                    }
                    Ok(Parsed::Complete(Opening::LegacyLogin, _)) => {
                        self.actions.push(Action::SendToClient(
                            response::legacy_kick(LEGACY_LOGIN_KICK).into(),
                        ));
                        return self.close(CloseReason::LegacyLogin);
                    }
                    Ok(Parsed::Complete(Opening::Handshake(hs), used)) => {
                        let start =
                            hs.server_address.as_ptr() as usize - self.buf.as_ptr() as usize;
                        self.handshake = Some(HandshakeInfo {
                            protocol_version: hs.protocol_version,
                            port: hs.port,
                            next_state: hs.next_state,
                            address: (start, start + hs.server_address.len()),
                            frame_end: used,
                        });
                        self.parsed = used;
                        self.state = if hs.next_state.is_login() {
                            State::LoginStart
                        } else {
                            State::StatusRequest
                        };
                    }
                    Err(e) => return self.close(CloseReason::ProtocolError(e.to_string())),
                },
                // A server-list ping is routed once its Status Request is in: a client that sends only a
                // handshake costs no backend connection, and the handshake deadline covers it.
                State::StatusRequest => {
                    match codec::read_frame(&self.buf[self.parsed..], MAX_STATUS_FRAME) {
                        Ok(Parsed::Incomplete) => return,
                        Ok(Parsed::Complete(frame, used))
                            if frame.id == 0 && frame.body.is_empty() =>
                        {
                            self.parsed += used;
                            self.status_requested = true;
                            return self.request_pre_connect();
                        }
                        // A ping straight away (vanilla answers it with a pong): route on it too.
                        Ok(Parsed::Complete(frame, _))
                            if frame.id == 1 && frame.body.len() == 8 =>
                        {
                            return self.request_pre_connect();
                        }
                        Ok(Parsed::Complete(frame, _)) => {
                            let why = match frame.id {
                                0x00 => format!(
                                    "a status request has no body, this one has {} bytes",
                                    frame.body.len()
                                ),
                                0x01 => {
                                    format!("a ping carries 8 bytes, this one {}", frame.body.len())
                                }
                                id => format!("expected the status request, got packet {id:#04x}"),
                            };
                            return self.close(CloseReason::ProtocolError(why));
                        }
                        Err(e) => return self.close(CloseReason::ProtocolError(e.to_string())),
                    }
                }
                State::LoginStart => match login::parse(&self.buf[self.parsed..]) {
                    Ok(Parsed::Incomplete) => return,
                    Ok(Parsed::Complete(ls, used)) => {
                        let start = ls.name.as_ptr() as usize - self.buf.as_ptr() as usize;
                        self.player = Some((start, start + ls.name.len()));
                        self.parsed += used;
                        return self.request_pre_connect();
                    }
                    Err(e) => return self.close(CloseReason::ProtocolError(e.to_string())),
                },
                State::OfflineStatus => {
                    let frame = match codec::read_frame(&self.buf[self.parsed..], MAX_STATUS_FRAME)
                    {
                        Ok(Parsed::Incomplete) => return,
                        Ok(Parsed::Complete(frame, used)) => {
                            self.parsed += used;
                            frame
                        }
                        Err(e) => return self.close(CloseReason::ProtocolError(e.to_string())),
                    };
                    match (frame.id, frame.body.len()) {
                        (0x01, 8) => {
                            let pong = response::pong(frame.body);
                            self.actions.push(Action::SendToClient(pong.into()));
                            return self.close(CloseReason::StatusServed);
                        }
                        // A ping without its 8-byte payload (some status tools send one) gets no pong,
                        // as vanilla gives none; the status it asked for was answered all the same.
                        // (Without a Status Request the session was routed on an 8-byte ping, which is
                        // the packet read here.)
                        (0x01, _) if self.status_requested => {
                            return self.close(CloseReason::StatusServed);
                        }
                        (id, _) => {
                            return self.close(CloseReason::ProtocolError(format!(
                                "unexpected status packet {id:#04x}"
                            )))
                        }
                    }
                }
                State::PreConnect | State::Connecting | State::Done => return,
            }
        }
    }

    fn offline_status(&self) -> Vec<u8> {
        let (motd, max, online) = match &self.server {
            Some(s) => (
                s.config.disconnect_message.as_str(),
                s.config.max_players,
                self.ctx.registry.players_on(s.name()),
            ),
            None => (crate::config::DEFAULT_DISCONNECT_MESSAGE, 0, 0),
        };
        let protocol = self.handshake.map_or(0, |h| h.protocol_version);
        response::status_response(protocol, motd, online, max)
    }

    fn request_pre_connect(&mut self) {
        if self.handshake.is_none() {
            return;
        }
        // Normalised and routed once, for the event and for `pre_connect_result`.
        let (host, routed) = match Host::normalise(ServerAddress::split(self.server_address()).host)
        {
            Some(h) => {
                let routed = self.ctx.routes.route(h.as_str()).cloned();
                // The host as sent is a part of the handshake's address, so of `buf`.
                let in_buf = h.as_sent().and_then(|sent| {
                    let start = (sent.as_ptr() as usize).checked_sub(self.buf.as_ptr() as usize)?;
                    let end = start + sent.len();
                    (end <= self.buf.len()).then_some(NormalHost::InBuf(start, end))
                });
                let host = in_buf.unwrap_or_else(|| NormalHost::Copied(h.as_str().to_owned()));
                (host, routed)
            }
            None => (NormalHost::None, None),
        };
        self.host = host;
        self.routed = routed;
        self.state = State::PreConnect;
        self.actions.push(Action::PreConnect);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{read_frame, read_string};
    use crate::config::ServerConfig;
    use crate::handshake::Handshake;
    use crate::login::LoginStart;
    use crate::registry::EndReason;
    use proptest::prelude::*;

    const CLIENT: &str = "198.51.100.7:50000";
    const LOCAL: &str = "192.0.2.1:25565";

    #[test]
    fn a_long_host_is_cut_in_log_lines() {
        let host = "a".repeat(MAX_LOGGED_HOST);
        assert_eq!(logged_host(&host), host.as_str());
        let long = format!("{}é{}", "a".repeat(MAX_LOGGED_HOST - 1), "b".repeat(16_000));
        let logged = logged_host(&long);
        // Cut before the two-byte character that straddles the limit.
        assert_eq!(
            logged,
            format!(
                "{}... ({} bytes)",
                "a".repeat(MAX_LOGGED_HOST - 1),
                long.len()
            )
        );
    }

    fn server(name: &str, extra: &str) -> ServerConfig {
        ServerConfig::from_toml(
            &format!("{name}.toml"),
            name,
            &format!("domains = [\"{name}.example.com\", \"*.{name}.example.com\"]\naddresses = [\"10.0.0.1:1\", \"10.0.0.2:2\"]\n{extra}"),
        )
        .unwrap()
    }

    fn ctx(servers: &[ServerConfig]) -> Context {
        Context {
            routes: Arc::new(RouteTable::build(servers).unwrap()),
            registry: Registry::new(),
            handshake_timeout: Duration::from_secs(5),
        }
    }

    /// A handshake for lobby.example.com:25565.
    fn handshake_bytes(protocol_version: i32, next_state: NextState) -> Vec<u8> {
        let mut out = Vec::new();
        Handshake {
            protocol_version,
            server_address: "lobby.example.com",
            port: 25565,
            next_state,
        }
        .encode(&mut out);
        out
    }

    fn login_bytes(host: &str, name: &str, next_state: NextState) -> Vec<u8> {
        let mut out = Vec::new();
        Handshake {
            protocol_version: 765,
            server_address: host,
            port: 25565,
            next_state,
        }
        .encode(&mut out);
        LoginStart {
            name,
            tail: &[7; 16],
        }
        .encode(&mut out);
        out
    }

    fn status_bytes(host: &str) -> Vec<u8> {
        let mut out = Vec::new();
        Handshake {
            protocol_version: 47,
            server_address: host,
            port: 25565,
            next_state: NextState::Status,
        }
        .encode(&mut out);
        codec::write_frame(&mut out, 0x00, &[]);
        codec::write_frame(&mut out, 0x01, &42i64.to_be_bytes());
        out
    }

    /// A comparable record of what a driver did.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Did {
        /// The event's host, server and player.
        PreConnect(String, Option<String>, Option<String>),
        Connect(String),
        ToBackend(Vec<u8>),
        ToClient(Vec<u8>),
        Forward,
        Close(CloseReason),
    }

    /// Drives a session: plugins answer `decision`, the first `fail` dials fail, the rest succeed.
    struct Script {
        decision: Decision,
        fail: usize,
        live: Vec<LiveSession>,
        /// `Forward::if_backend_silent` of each forward.
        silent: Vec<Vec<u8>>,
    }

    impl Script {
        fn new(decision: Decision, fail: usize) -> Self {
            Script {
                decision,
                fail,
                live: Vec::new(),
                silent: Vec::new(),
            }
        }

        fn drain(&mut self, s: &mut Session, did: &mut Vec<Did>) {
            let now = Instant::now();
            while let Some(action) = s.poll_action() {
                match action {
                    Action::PreConnect => {
                        let e = s.pre_connect_event();
                        did.push(Did::PreConnect(
                            e.host.to_owned(),
                            e.server.map(str::to_owned),
                            e.player.map(str::to_owned),
                        ));
                        s.pre_connect_result(self.decision.clone());
                    }
                    Action::Connect(req) => {
                        did.push(Did::Connect(req.address.to_string()));
                        if self.fail > 0 {
                            self.fail -= 1;
                            s.backend_failed(now);
                        } else {
                            s.backend_connected("10.0.0.9:25565".parse().unwrap(), now);
                        }
                    }
                    Action::SendToBackend(b) => match did.last_mut() {
                        Some(Did::ToBackend(v)) => v.extend_from_slice(&b),
                        _ => did.push(Did::ToBackend(b.to_vec())),
                    },
                    Action::SendToClient(b) => did.push(Did::ToClient(b.to_vec())),
                    Action::Forward(f) => {
                        let sent: usize = did
                            .iter()
                            .map(|d| match d {
                                Did::ToBackend(b) => b.len(),
                                _ => 0,
                            })
                            .sum();
                        assert_eq!(f.c2b_initial, sent as u64, "initial bytes are counted");
                        did.push(Did::Forward);
                        self.silent.push(f.if_backend_silent.to_vec());
                        self.live.push(f.live);
                    }
                    Action::Close(r) => did.push(Did::Close(r)),
                }
            }
        }

        /// Feeds `chunks` one by one, draining after each; bytes after forwarding go straight to the
        /// backend, as a runtime's copy would send them.
        fn run(&mut self, s: &mut Session, chunks: &[&[u8]]) -> Vec<Did> {
            let mut did = Vec::new();
            for chunk in chunks {
                if s.is_done() {
                    if did.contains(&Did::Forward) {
                        did.push(Did::ToBackend(chunk.to_vec()));
                    }
                } else {
                    s.handle_client_data(chunk);
                }
                self.drain(s, &mut did);
            }
            // Merge adjacent backend bytes around the Forward marker into one stream.
            let mut merged: Vec<Did> = Vec::new();
            let mut stream = Vec::new();
            for d in did {
                match d {
                    Did::ToBackend(b) => stream.extend(b),
                    other => merged.push(other),
                }
            }
            if !stream.is_empty() {
                merged.push(Did::ToBackend(stream));
            }
            merged
        }
    }

    fn session(servers: &[ServerConfig]) -> Session {
        session_in(ctx(servers), Instant::now())
    }

    /// A session of the test client in `c`, opened at `now`.
    fn session_in(c: Context, now: Instant) -> Session {
        Session::new(c, CLIENT.parse().unwrap(), LOCAL.parse().unwrap(), now)
    }

    fn disconnect_text(bytes: &[u8]) -> String {
        let Ok(Parsed::Complete(frame, _)) = read_frame(bytes, 1 << 21) else {
            panic!("not a frame: {bytes:?}")
        };
        assert_eq!(frame.id, 0);
        let Ok(Parsed::Complete(json, _)) = read_string(frame.body, 1 << 21) else {
            panic!("not a string")
        };
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        v["text"].as_str().unwrap_or_default().to_owned()
    }

    #[test]
    fn login_is_forwarded_byte_for_byte_without_rewrite() {
        let mut s = session(&[server("lobby", "")]);
        let bytes = login_bytes("LOBBY.example.com.\0FML2\0", "Steve", NextState::Login);
        let did = Script::new(Decision::Allow, 0).run(&mut s, &[&bytes]);
        assert_eq!(
            did[0],
            Did::PreConnect(
                "lobby.example.com".into(), // normalised: a copy
                Some("lobby".into()),
                Some("Steve".into())
            )
        );
        assert_eq!(did[1], Did::Connect("10.0.0.1:1".into()));
        assert_eq!(did[2], Did::Forward);
        assert_eq!(did[3], Did::ToBackend(bytes.clone()));
    }

    /// A host sent in its normal spelling is lent from the session's buffer, decoration cut off; before
    /// the handshake the event has no host and no server.
    #[test]
    fn the_event_lends_a_normal_host_from_the_buffer() {
        let mut s = session(&[server("lobby", "")]);
        let early = s.pre_connect_event();
        assert_eq!((early.host, early.server, early.player), ("", None, None));
        let bytes = login_bytes("eu.lobby.example.com\0FML3\0", "Alex", NextState::Transfer);
        s.handle_client_data(&bytes);
        assert!(matches!(s.poll_action(), Some(Action::PreConnect)));
        let e = s.pre_connect_event();
        assert_eq!(e.host, "eu.lobby.example.com");
        assert_eq!((e.server, e.player), (Some("lobby"), Some("Alex")));
        assert_eq!(
            (e.protocol_version, e.next_state),
            (765, NextState::Transfer)
        );
        assert_eq!(e.client, CLIENT.parse().unwrap());
    }

    #[test]
    fn a_forward_carries_what_its_client_is_told_if_the_backend_is_silent() {
        let servers = [server(
            "lobby",
            "disconnect_message = \"Restarting\"\nmax_players = 9",
        )];
        let mut script = Script::new(Decision::Allow, 0);
        let mut bare_ping = handshake_bytes(765, NextState::Status);
        codec::write_frame(&mut bare_ping, 0x01, &7i64.to_be_bytes());
        for bytes in [
            login_bytes("lobby.example.com", "Steve", NextState::Login),
            login_bytes("lobby.example.com", "Steve", NextState::Transfer),
            status_bytes("lobby.example.com"),
            bare_ping,
        ] {
            let did = script.run(&mut session(&servers), &[&bytes]);
            assert!(did.contains(&Did::Forward), "{did:?}");
        }
        let login = response::login_disconnect("Restarting");
        // A ping's Status Request gets the offline status (the message, the limit, the ping's protocol),
        // a bare Ping nothing: there is no request to answer.
        let offline = response::status_response(47, "Restarting", 0, 9);
        assert_eq!(script.silent, [login.clone(), login, offline, Vec::new()]);
    }

    #[test]
    fn explicit_rewrite_replaces_only_the_host() {
        let mut s = session(&[server(
            "lobby",
            "domain_rewrite = { explicit = \"backend.internal\" }",
        )]);
        let bytes = login_bytes("lobby.example.com\0FML3\0", "Alex", NextState::Login);
        let did = Script::new(Decision::Allow, 0).run(&mut s, &[&bytes]);
        let Some(Did::ToBackend(sent)) = did.last() else {
            panic!("{did:?}")
        };
        let Ok(Parsed::Complete(hs, used)) = handshake::parse(sent) else {
            panic!()
        };
        assert_eq!(hs.server_address, "backend.internal\0FML3\0");
        assert_eq!(hs.protocol_version, 765);
        assert_eq!(hs.port, 25565);
        let Ok(Parsed::Complete(ls, _)) = login::parse(&sent[used..]) else {
            panic!()
        };
        assert_eq!(ls.name, "Alex");
        assert_eq!(ls.tail, &[7; 16]);
    }

    #[test]
    fn proxy_protocol_header_comes_first() {
        let mut s = session(&[server("lobby", "send_proxy_protocol = true")]);
        let bytes = login_bytes("lobby.example.com", "Steve", NextState::Login);
        let did = Script::new(Decision::Allow, 0).run(&mut s, &[&bytes]);
        let Some(Did::ToBackend(sent)) = did.last() else {
            panic!()
        };
        let header = crate::proxy_protocol::header(
            crate::config::ProxyProtocolVersion::V2,
            CLIENT.parse().unwrap(),
            LOCAL.parse().unwrap(),
        );
        assert_eq!(&sent[..header.len()], header.as_slice());
        assert_eq!(&sent[header.len()..], bytes.as_slice());
    }

    #[test]
    fn failover_tries_the_next_address_then_disconnects_with_the_message() {
        let mut s = session(&[server("lobby", "disconnect_message = \"Lobby is down\"")]);
        let bytes = login_bytes("lobby.example.com", "Steve", NextState::Login);
        let did = Script::new(Decision::Allow, 1).run(&mut s, &[&bytes]);
        assert_eq!(did[1], Did::Connect("10.0.0.1:1".into()));
        assert_eq!(did[2], Did::Connect("10.0.0.2:2".into()));
        assert!(matches!(did[3], Did::Forward));

        let mut s = session(&[server("lobby", "disconnect_message = \"Lobby is down\"")]);
        let did = Script::new(Decision::Allow, 2).run(&mut s, &[&bytes]);
        let Did::ToClient(packet) = &did[3] else {
            panic!("{did:?}")
        };
        assert_eq!(disconnect_text(packet), "Lobby is down");
        assert_eq!(did[4], Did::Close(CloseReason::BackendUnreachable));
        assert_eq!(did.len(), 5);
    }

    #[test]
    fn offline_status_answers_with_the_message_and_pong() {
        let mut s = session(&[server(
            "lobby",
            "disconnect_message = \"Maintenance\"\nmax_players = 7",
        )]);
        let did =
            Script::new(Decision::Allow, 2).run(&mut s, &[&status_bytes("lobby.example.com")]);
        let Did::ToClient(status) = &did[3] else {
            panic!("{did:?}")
        };
        let Ok(Parsed::Complete(frame, _)) = read_frame(status, 4096) else {
            panic!("{did:?}")
        };
        let Ok(Parsed::Complete(json, _)) = read_string(frame.body, 4096) else {
            panic!()
        };
        let v: serde_json::Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {did:?}"));
        assert_eq!(v["description"]["text"], "Maintenance");
        assert_eq!(v["players"]["max"], 7);
        assert_eq!(v["version"]["protocol"], 47);
        assert_eq!(did[4], Did::ToClient(response::pong(&42i64.to_be_bytes())));
        assert_eq!(did[5], Did::Close(CloseReason::StatusServed));
    }

    /// A status session whose backend is down, its Status Request answered by the proxy, no ping yet.
    fn status_answered_offline() -> (Session, Script) {
        let mut bytes = Vec::new();
        Handshake {
            protocol_version: 47,
            server_address: "lobby.example.com",
            port: 25565,
            next_state: NextState::Status,
        }
        .encode(&mut bytes);
        let mut s = session(&[server("lobby", "")]);
        let mut script = Script::new(Decision::Allow, 2);
        // The handshake alone is not routed yet; the Status Request is, and is answered offline.
        let did = script.run(&mut s, &[&bytes]);
        assert!(!did.iter().any(|d| matches!(d, Did::Connect(_))), "{did:?}");
        let mut request = Vec::new();
        codec::write_frame(&mut request, 0x00, &[]);
        let did = script.run(&mut s, &[&request]);
        assert!(matches!(did.last(), Some(Did::ToClient(_))), "{did:?}");
        (s, script)
    }

    #[test]
    fn offline_status_without_ping_is_served_when_the_client_leaves() {
        let (mut s, mut script) = status_answered_offline();
        s.handle_client_eof();
        let mut did = Vec::new();
        script.drain(&mut s, &mut did);
        assert_eq!(did, [Did::Close(CloseReason::StatusServed)]);
    }

    #[test]
    fn offline_status_without_ping_is_served_when_the_client_waits_too_long() {
        let (mut s, mut script) = status_answered_offline();
        let deadline = s.poll_timeout().expect("the ping is waited for");
        s.handle_timeout(deadline);
        let mut did = Vec::new();
        script.drain(&mut s, &mut did);
        assert_eq!(did, [Did::Close(CloseReason::StatusServed)]);
    }

    #[test]
    fn offline_status_with_a_ping_lacking_its_payload_is_served_without_a_pong() {
        for body in [&[][..], &[1, 2, 3][..]] {
            let (mut s, mut script) = status_answered_offline();
            let mut ping = Vec::new();
            codec::write_frame(&mut ping, 0x01, body);
            let did = script.run(&mut s, &[&ping]);
            assert_eq!(did, [Did::Close(CloseReason::StatusServed)], "{body:?}");
        }
        // Another packet after the answer is still a protocol error.
        let (mut s, mut script) = status_answered_offline();
        let mut again = Vec::new();
        codec::write_frame(&mut again, 0x00, &[]);
        let did = script.run(&mut s, &[&again]);
        assert!(
            matches!(&did[..], [Did::Close(CloseReason::ProtocolError(m))] if m.contains("0x00")),
            "{did:?}"
        );
    }

    #[test]
    fn abort_closes_a_session_still_in_its_handshake_and_nothing_else() {
        let bytes = login_bytes("lobby.example.com", "Steve", NextState::Login);
        let mut script = Script::new(Decision::Allow, 0);
        // Half a handshake: the session is waiting for the client.
        let mut s = session(&[server("lobby", "")]);
        script.run(&mut s, &[&bytes[..5]]);
        s.abort();
        let mut did = Vec::new();
        script.drain(&mut s, &mut did);
        assert_eq!(did, [Did::Close(CloseReason::Shutdown)]);
        assert!(s.is_done());
        s.abort();
        assert!(s.poll_action().is_none(), "a second abort acts again");
        // Forwarded, or closed for another reason: abort has nothing left to do.
        let mut s = session(&[server("lobby", "")]);
        assert!(script.run(&mut s, &[&bytes]).contains(&Did::Forward));
        s.abort();
        assert!(s.poll_action().is_none());
        let mut s = session(&[server("lobby", "")]);
        let did = script.run(&mut s, &[&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]]);
        assert!(
            matches!(did.last(), Some(Did::Close(CloseReason::ProtocolError(_)))),
            "{did:?}"
        );
        s.abort();
        assert!(s.poll_action().is_none());
    }

    #[test]
    fn unknown_host_never_dials() {
        let mut s = session(&[server("lobby", "")]);
        let bytes = login_bytes("elsewhere.example.org", "Steve", NextState::Login);
        let did = Script::new(Decision::Allow, 0).run(&mut s, &[&bytes]);
        assert!(!did.iter().any(|d| matches!(d, Did::Connect(_))), "{did:?}");
        assert_eq!(did.last(), Some(&Did::Close(CloseReason::UnknownHost)));
    }

    #[test]
    fn deny_tells_the_player_why() {
        let mut s = session(&[server("lobby", "")]);
        let bytes = login_bytes("lobby.example.com", "Steve", NextState::Login);
        let did = Script::new(Decision::Deny("Banned".into()), 0).run(&mut s, &[&bytes]);
        let Did::ToClient(p) = &did[1] else {
            panic!("{did:?}")
        };
        assert_eq!(disconnect_text(p), "Banned");
        assert_eq!(did[2], Did::Close(CloseReason::Denied));
        // The close is logged with the server the host routed to.
        assert_eq!(s.server(), Some("lobby"));
    }

    #[test]
    fn a_long_deny_reason_is_cut_to_what_the_client_reads() {
        let reason = "\u{e9}".repeat(300_000);
        for (protocol, limit) in [
            (340, response::VANILLA_MAX_STRING),
            (765, response::VANILLA_MAX_KICK),
        ] {
            let mut s = session(&[server("lobby", "")]);
            let mut bytes = handshake_bytes(protocol, NextState::Login);
            LoginStart {
                name: "Steve",
                tail: &[],
            }
            .encode(&mut bytes);
            let did = Script::new(Decision::Deny(reason.clone()), 0).run(&mut s, &[&bytes]);
            let Did::ToClient(p) = &did[1] else {
                panic!("{protocol}")
            };
            let text = disconnect_text(p);
            assert_eq!(response::kick_length(&text), limit, "{protocol}");
            assert!(reason.starts_with(&text));
            assert_eq!(did[2], Did::Close(CloseReason::Denied));
        }
    }

    #[test]
    fn a_malformed_status_request_or_ping_is_named_in_the_close() {
        for (id, body, why) in [
            (
                0x00,
                &[1u8, 2][..],
                "a status request has no body, this one has 2 bytes",
            ),
            (0x01, &[0; 4][..], "a ping carries 8 bytes, this one 4"),
            (
                0x02,
                &[][..],
                "expected the status request, got packet 0x02",
            ),
        ] {
            let mut bytes = handshake_bytes(765, NextState::Status);
            codec::write_frame(&mut bytes, id, body);
            let mut s = session(&[server("lobby", "")]);
            s.handle_client_data(&bytes);
            assert!(
                matches!(s.poll_action(), Some(Action::Close(CloseReason::ProtocolError(e))) if e == why),
                "{why}"
            );
        }
    }

    #[test]
    fn a_connection_from_the_proxy_itself_closes_without_an_answer() {
        // A login, and a server-list ping with or without its Status Request: the dialling session
        // answers its client (this one's host may have been rewritten to one routed elsewhere).
        let mut bare_ping = handshake_bytes(765, NextState::Status);
        codec::write_frame(&mut bare_ping, 0x01, &7i64.to_be_bytes());
        let login = login_bytes("lobby.example.com", "Steve", NextState::Login);
        for bytes in [login, status_bytes("lobby.example.com"), bare_ping] {
            let mut s = session(&[server("lobby", "disconnect_message = \"Looping\"")]);
            s.handle_client_data(&bytes);
            assert!(matches!(s.poll_action(), Some(Action::PreConnect)));
            s.refuse_loop();
            assert!(matches!(
                s.poll_action(),
                Some(Action::Close(CloseReason::Loop))
            ));
            assert!(s.poll_action().is_none());
            assert_eq!(s.server(), Some("lobby"));
            // Only a session waiting for its pre-connect answer can be refused so.
            s.refuse_loop();
            assert!(s.poll_action().is_none());
        }
    }

    #[test]
    fn redirect_goes_to_the_named_server() {
        let mut s = session(&[server("lobby", ""), server("limbo", "")]);
        let bytes = login_bytes("lobby.example.com", "Steve", NextState::Login);
        let mut script = Script::new(Decision::Redirect("limbo".into()), 0);
        let did = script.run(&mut s, &[&bytes]);
        assert!(matches!(did[2], Did::Forward));
        assert_eq!(&*script.live[0].info().server, "limbo");

        // To a server that does not exist: the player is told the routed server is down.
        let mut s = session(&[server("lobby", "disconnect_message = \"Lobby down\"")]);
        let did = Script::new(Decision::Redirect("nowhere".into()), 0).run(&mut s, &[&bytes]);
        let Did::ToClient(p) = &did[1] else {
            panic!("{did:?}")
        };
        assert_eq!(disconnect_text(p), "Lobby down");
        assert_eq!(
            did.last(),
            Some(&Did::Close(CloseReason::UnknownRedirect("nowhere".into())))
        );
        assert_eq!(
            s.server(),
            Some("lobby"),
            "logged with the server it routed to"
        );
    }

    #[test]
    fn third_login_is_refused_when_max_players_is_two() {
        let c = ctx(&[server("lobby", "max_players = 2")]);
        let bytes = login_bytes("lobby.example.com", "Steve", NextState::Login);
        let mut script = Script::new(Decision::Allow, 0);
        let mut outcomes = Vec::new();
        for _ in 0..3 {
            let mut s = session_in(c.clone(), Instant::now());
            outcomes.push(script.run(&mut s, &[&bytes]));
        }
        assert!(matches!(outcomes[0][2], Did::Forward));
        assert!(matches!(outcomes[1][2], Did::Forward));
        let Did::ToClient(p) = &outcomes[2][1] else {
            panic!("{:?}", outcomes[2])
        };
        assert_eq!(disconnect_text(p), SERVER_FULL_MESSAGE);
        assert_eq!(outcomes[2][2], Did::Close(CloseReason::ServerFull));
        // Status pings are not players and are never refused for fullness.
        let mut s = session_in(c.clone(), Instant::now());
        assert!(script
            .run(&mut s, &[&status_bytes("lobby.example.com")])
            .contains(&Did::Forward));
        // A finished session frees its slot.
        let live = script.live.remove(0);
        live.finish(0, 0, EndReason::ClientClosed, Instant::now());
        let mut s = session_in(c, Instant::now());
        assert!(script.run(&mut s, &[&bytes]).contains(&Did::Forward));
    }

    #[test]
    fn failed_backends_release_the_player_slot() {
        let c = ctx(&[server("lobby", "max_players = 1")]);
        let bytes = login_bytes("lobby.example.com", "Steve", NextState::Login);
        let mut s = session_in(c.clone(), Instant::now());
        Script::new(Decision::Allow, 2).run(&mut s, &[&bytes]);
        assert_eq!(c.registry.players_on("lobby"), 0);
    }

    #[test]
    fn transfer_is_routed_like_a_login() {
        let mut s = session(&[server("lobby", "")]);
        let bytes = login_bytes("lobby.example.com", "Steve", NextState::Transfer);
        let did = Script::new(Decision::Allow, 0).run(&mut s, &[&bytes]);
        assert!(matches!(did[2], Did::Forward));
    }

    #[test]
    fn legacy_ping_is_answered_and_closed() {
        let mut s = session(&[server("lobby", "")]);
        let ping = handshake::ping_host(74);
        let did = Script::new(Decision::Allow, 0).run(&mut s, &[&ping]);
        assert_eq!(
            did,
            [
                Did::ToClient(response::legacy_ping_answer(
                    response::LegacyPing::V1_4,
                    LEGACY_PING_MOTD
                )),
                Did::Close(CloseReason::LegacyPing)
            ]
        );
    }

    /// A 1.7+ client whose status ping got no answer pings again the 1.6 way: it is closed unanswered
    /// (whatever the host), or the server list would show the legacy answer as the server's MOTD.
    #[test]
    fn a_modern_clients_legacy_fallback_is_closed_unanswered() {
        let mut s = session(&[server("lobby", "")]);
        let ping = handshake::ping_host(handshake::FALLBACK_PROTOCOL);
        let did = Script::new(Decision::Allow, 0).run(&mut s, &[&ping[..20], &ping[20..]]);
        assert_eq!(did, [Did::Close(CloseReason::LegacyFallback)]);
    }

    /// A 1.6 login (0x02, protocol 78, name, host, port as UTF-16 strings) and a 1.2 one (0x02,
    /// "name;host:port") are told to use a newer client, from their first byte on.
    #[test]
    fn legacy_login_is_kicked_and_closed() {
        let mut v16 = vec![0x02, 78];
        response::write_legacy_string(&mut v16, "Steve");
        response::write_legacy_string(&mut v16, "lobby.example.com");
        v16.extend(25565i32.to_be_bytes());
        let mut v12 = vec![0x02];
        response::write_legacy_string(&mut v12, "Steve;lobby.example.com:25565");
        for bytes in [&v16[..], &v12[..], &[0x02]] {
            let mut s = session(&[server("lobby", "")]);
            let did = Script::new(Decision::Allow, 0).run(&mut s, &[bytes]);
            assert_eq!(
                did,
                [
                    Did::ToClient(response::legacy_kick(LEGACY_LOGIN_KICK)),
                    Did::Close(CloseReason::LegacyLogin)
                ],
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn old_legacy_ping_is_answered_when_no_more_bytes_come() {
        let start = Instant::now();
        for (bytes, ping) in [
            (&[0xFE][..], response::LegacyPing::Beta),
            (&[0xFE, 0x01], response::LegacyPing::V1_4),
            // A 1.6 ping cut before its protocol byte.
            (
                &[0xFE, 0x01, 0xFA, 0x00, 0x0B, 0x00, b'M'],
                response::LegacyPing::V1_4,
            ),
        ] {
            let mut s = session_in(ctx(&[server("lobby", "")]), start);
            s.handle_client_data(bytes);
            assert!(s.poll_action().is_none(), "waits for more bytes first");
            assert_eq!(s.poll_timeout(), Some(start + LEGACY_WAIT));
            s.handle_timeout(start + LEGACY_WAIT);
            let answer = response::legacy_ping_answer(ping, LEGACY_PING_MOTD);
            assert!(matches!(s.poll_action(), Some(Action::SendToClient(b)) if b == answer));
            assert!(matches!(
                s.poll_action(),
                Some(Action::Close(CloseReason::LegacyPing))
            ));
        }
    }

    #[test]
    fn status_handshake_alone_is_not_routed() {
        let mut s = session(&[server("lobby", "")]);
        let status = status_bytes("lobby.example.com");
        // Handshake only: no Status Request yet, so nothing is routed and the deadline still applies.
        let Ok(Parsed::Complete(_, hs_len)) = handshake::parse(&status) else {
            panic!("status bytes start with a handshake")
        };
        s.handle_client_data(&status[..hs_len]);
        assert!(s.poll_action().is_none());
        assert!(s.poll_timeout().is_some());
        s.handle_client_data(&status[hs_len..]);
        assert!(matches!(s.poll_action(), Some(Action::PreConnect)));
    }

    #[test]
    fn slow_client_times_out() {
        let start = Instant::now();
        let mut s = session_in(ctx(&[server("lobby", "")]), start);
        s.handle_client_data(&[0x10, 0x00]);
        assert_eq!(s.poll_timeout(), Some(start + Duration::from_secs(5)));
        s.handle_timeout(start + Duration::from_secs(4));
        assert!(s.poll_action().is_none());
        s.handle_timeout(start + Duration::from_secs(5));
        assert!(matches!(
            s.poll_action(),
            Some(Action::Close(CloseReason::HandshakeTimeout))
        ));
        assert!(s.is_done());
    }

    #[test]
    fn unrepresentable_handshake_timeout_is_no_deadline() {
        // Found by the `session` fuzz target: `handshake_timeout = "300000000000y"` passes validation, and
        // `now + timeout` overflowed Instant and panicked, at accept and again when a status ping's backend
        // was unreachable.
        let mut c = ctx(&[server("lobby", "")]);
        c.handshake_timeout = Duration::from_secs(u64::MAX);
        let now = Instant::now();
        let mut s = session_in(c, now);
        assert_eq!(s.poll_timeout(), None);
        s.handle_timeout(now + Duration::from_secs(3600));
        assert!(s.poll_action().is_none());
        let did =
            Script::new(Decision::Allow, 2).run(&mut s, &[&status_bytes("lobby.example.com")]);
        assert_eq!(did.last(), Some(&Did::Close(CloseReason::StatusServed)));
    }

    #[test]
    fn giant_length_is_refused_without_waiting() {
        let mut s = session(&[server("lobby", "")]);
        s.handle_client_data(&[0xff, 0xff, 0x7f]);
        assert!(matches!(
            s.poll_action(),
            Some(Action::Close(CloseReason::ProtocolError(_)))
        ));
    }

    #[test]
    fn flood_before_forwarding_is_bounded() {
        let mut s = session(&[server("lobby", "")]);
        let bytes = login_bytes("lobby.example.com", "Steve", NextState::Login);
        s.handle_client_data(&bytes);
        assert!(matches!(s.poll_action(), Some(Action::PreConnect)));
        for _ in 0..(MAX_BUFFERED / 1024 + 1) {
            s.handle_client_data(&[0u8; 1024]);
        }
        assert!(matches!(
            s.poll_action(),
            Some(Action::Close(CloseReason::BufferLimit))
        ));
    }

    #[test]
    fn eof_before_forwarding_closes() {
        let mut s = session(&[server("lobby", "")]);
        s.handle_client_eof();
        assert!(matches!(
            s.poll_action(),
            Some(Action::Close(CloseReason::ClientClosed))
        ));
    }

    fn splits(len: usize) -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(0..=len, 0..8).prop_map(|mut v| {
            v.sort_unstable();
            v
        })
    }

    /// The actions queued now, as the test's records (no outcome given).
    fn queued(s: &mut Session) -> Vec<String> {
        std::iter::from_fn(|| s.poll_action())
            .map(|a| match a {
                Action::Connect(req) => format!("Connect({})", req.address),
                Action::Close(r) => format!("Close({r})"),
                Action::Forward(_) => "Forward".into(),
                Action::SendToBackend(_) => "ToBackend".into(),
                Action::SendToClient(_) => "ToClient".into(),
                Action::PreConnect => "PreConnect".into(),
            })
            .collect()
    }

    /// A login for `lobby` (two addresses), allowed: its first `Connect` is queued, not yet polled.
    fn allowed_login() -> Session {
        let mut s = session(&[server("lobby", "")]);
        s.handle_client_data(&login_bytes("lobby.example.com", "Steve", NextState::Login));
        assert!(matches!(s.poll_action(), Some(Action::PreConnect)));
        s.pre_connect_result(Decision::Allow);
        s
    }

    #[test]
    fn a_dial_outcome_is_taken_only_for_the_connect_polled() {
        let backend: SocketAddr = "10.0.0.9:25565".parse().unwrap();
        let now = Instant::now();
        // Before the Connect is polled: no dial is out, so no outcome can answer it.
        let mut s = allowed_login();
        s.backend_connected(backend, now);
        s.backend_failed(now);
        assert_eq!(queued(&mut s), ["Connect(10.0.0.1:1)"]);
        // A second failure for one dial does not skip the next address (or tell the player it is down).
        s.backend_failed(now);
        s.backend_failed(now);
        assert_eq!(queued(&mut s), ["Connect(10.0.0.2:2)"]);
        s.backend_connected(backend, now);
        assert_eq!(queued(&mut s), ["ToBackend", "Forward"]);
        // A late success of a dial given up on, before the next Connect is polled, is ignored.
        let mut s = allowed_login();
        assert_eq!(queued(&mut s), ["Connect(10.0.0.1:1)"]);
        s.backend_failed(now);
        s.backend_connected(backend, now);
        assert_eq!(queued(&mut s), ["Connect(10.0.0.2:2)"]);
        s.backend_failed(now);
        assert_eq!(queued(&mut s), ["ToClient", "Close(BackendUnreachable)"]);
    }

    #[test]
    fn the_pre_connect_answer_is_due_by_the_handshake_deadline() {
        let opened = Instant::now();
        let mut s = session_in(ctx(&[server("lobby", "")]), opened);
        s.handle_client_data(&login_bytes("lobby.example.com", "Steve", NextState::Login));
        assert!(matches!(s.poll_action(), Some(Action::PreConnect)));
        let deadline = opened + Duration::from_secs(5);
        assert_eq!(s.poll_timeout(), Some(deadline));
        s.handle_timeout(deadline - Duration::from_millis(1));
        assert!(s.poll_action().is_none());
        s.handle_timeout(deadline);
        assert_eq!(queued(&mut s), ["Close(HandshakeTimeout)"]);
        assert_eq!(
            s.server(),
            Some("lobby"),
            "logged with the server it routed to"
        );
        // The plugin's late answer changes nothing, and no player slot is held.
        s.pre_connect_result(Decision::Allow);
        assert!(s.poll_action().is_none() && s.is_done());
        assert_eq!(s.ctx.registry.players_on("lobby"), 0);
    }

    fn chunked<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut prev = 0;
        for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
            out.push(&bytes[prev..c]);
            prev = c;
        }
        out
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_actions(
            cuts in splits(80),
            tail in proptest::collection::vec(any::<u8>(), 0..40),
            fail in 0usize..3,
            status in any::<bool>(),
            deny in any::<bool>(),
        ) {
            let mut bytes = if status { status_bytes("lobby.example.com") } else { login_bytes("Lobby.Example.com.\0FML\0", "Steve", NextState::Login) };
            if !status { bytes.extend_from_slice(&tail); }
            let decision = if deny { Decision::Deny("no".into()) } else { Decision::Allow };
            let cfg = [server("lobby", "domain_rewrite = \"from_backend\"\nsend_proxy_protocol = true")];
            let whole = Script::new(decision.clone(), fail).run(&mut session(&cfg), &[&bytes]);
            let cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            let split = Script::new(decision, fail).run(&mut session(&cfg), &chunked(&bytes, &cuts));
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            cuts in splits(2048),
        ) {
            let mut s = session(&[server("lobby", "")]);
            let cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            let mut script = Script::new(Decision::Allow, 0);
            script.run(&mut s, &chunked(&bytes, &cuts));
            prop_assert!(s.buf.len() <= MAX_BUFFERED);
        }
    }
}
