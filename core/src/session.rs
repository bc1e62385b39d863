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
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes a session buffers before forwarding starts: the largest handshake and login start, plus room
/// for what a client sends right after them. A client that sends more is closed.
pub const MAX_BUFFERED: usize = 32 * 1024;

/// Largest frame accepted while the proxy itself answers a status ping.
const MAX_STATUS_FRAME: usize = 256;

/// What legacy (pre-1.7) pingers are shown.
pub const LEGACY_PING_MOTD: &str = "Use Minecraft 1.7 or newer";

/// What a login is told when its server is full.
pub const SERVER_FULL_MESSAGE: &str = "The server is full. Please try again later.";

/// What a login is told when its host matches no server.
pub const UNKNOWN_HOST_MESSAGE: &str = "Unknown server address";

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
    /// The client sent more than [`MAX_BUFFERED`] bytes before forwarding.
    BufferLimit,
    /// A legacy ping was answered.
    LegacyPing,
    /// A status ping was answered by the proxy (its backend was unreachable).
    StatusServed,
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
    pub server: String,
    /// `host:port` to resolve and dial.
    pub address: crate::config::BackendAddress,
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
    /// Bytes already counted towards client-to-backend (the initial packets and anything after them).
    pub c2b_initial: u64,
    /// The registry entry; call [`LiveSession::finish`] with the byte counts when the copy ends.
    pub live: LiveSession,
}

/// What the driver must do next, in order.
#[derive(Debug)]
pub enum Action {
    /// Ask the plugins, then call [`Session::pre_connect_result`].
    PreConnect(PreConnectEvent),
    /// Dial, then call [`Session::backend_connected`] or [`Session::backend_failed`].
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
    deadline: Option<Instant>,
    buf: Vec<u8>,
    handshake: Option<HandshakeInfo>,
    player: Option<(usize, usize)>,
    /// End of the bytes consumed by parsing (handshake, login start, answered status frames).
    parsed: usize,
    server: Option<Arc<Server>>,
    admission: Option<Admission>,
    first_address: usize,
    attempts: usize,
    status_answered: bool,
    actions: VecDeque<Action>,
}

impl Session {
    /// A session for a client at `client` that connected to the proxy's `local` address at `now`.
    pub fn new(ctx: Context, client: SocketAddr, local: SocketAddr, now: Instant) -> Session {
        let deadline = Some(now + ctx.handshake_timeout);
        Session {
            ctx,
            client,
            local,
            state: State::Handshake,
            deadline,
            buf: Vec::new(),
            handshake: None,
            player: None,
            parsed: 0,
            server: None,
            admission: None,
            first_address: 0,
            attempts: 0,
            status_answered: false,
            actions: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called if nothing else happens first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Handshake | State::LoginStart | State::OfflineStatus => self.deadline,
            _ => None,
        }
    }

    /// Whether the session wants more bytes from the client (otherwise the driver need not read).
    pub fn wants_client_data(&self) -> bool {
        matches!(
            self.state,
            State::Handshake | State::LoginStart | State::OfflineStatus
        )
    }

    /// Whether the session has forwarded or closed; no more actions will come.
    pub fn is_done(&self) -> bool {
        self.state == State::Done && self.actions.is_empty()
    }

    /// The player name, once the login start has been read.
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
    }

    /// The client closed its side before forwarding started.
    pub fn handle_client_eof(&mut self) {
        if self.state != State::Done {
            self.close(CloseReason::ClientClosed);
        }
    }

    /// Time has passed; closes the session when the client is too slow.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|d| now >= d) {
            self.close(CloseReason::HandshakeTimeout);
        }
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
                    self.send_login_disconnect(UNKNOWN_HOST_MESSAGE);
                    return self.close(CloseReason::UnknownRedirect(name));
                }
            },
            Decision::Allow => match self.route() {
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

    /// The backend at the last [`Action::Connect`] accepted the connection from the proxy; `backend` is its
    /// resolved address.
    pub fn backend_connected(&mut self, backend: SocketAddr, now: Instant) {
        if self.state != State::Connecting {
            return;
        }
        let (Some(server), Some(hs)) = (self.server.clone(), self.handshake) else {
            return;
        };
        let cfg = &server.config;
        let mut out = Vec::with_capacity(self.buf.len() + 64);
        if cfg.send_proxy_protocol {
            out.extend(proxy_protocol::header(
                cfg.proxy_protocol_version,
                self.client,
                self.local,
            ));
        }
        match cfg.domain_rewrite.apply(self.server_address()) {
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
        let c2b_initial = out.len() as u64;
        let info = SessionInfo {
            id: 0,
            player: self.player().map(str::to_owned),
            server: server.name().to_owned(),
            client: self.client,
            backend,
            active: false,
            mode: cfg.proxy_mode,
            started: now,
        };
        let live = self.ctx.registry.register(info, self.admission.take());
        tracing::debug!(client = %self.client, backend = %backend, server = %server.name(),
            player = self.player().unwrap_or("-"), "forwarding");
        self.actions
            .push_back(Action::SendToBackend(Bytes::from(out)));
        self.actions.push_back(Action::Forward(Forward {
            mode: cfg.proxy_mode,
            timeouts: cfg.timeouts,
            c2b_initial,
            live,
        }));
        self.state = State::Done;
    }

    /// The dial of the last [`Action::Connect`] failed or timed out; the next address is proposed, or the
    /// client is told the server is unreachable.
    pub fn backend_failed(&mut self, now: Instant) {
        if self.state != State::Connecting {
            return;
        }
        self.attempts += 1;
        let Some(server) = self.server.clone() else {
            return;
        };
        if self.attempts < server.config.addresses.len() {
            return self.connect_next();
        }
        self.admission = None;
        let message = server.config.disconnect_message.as_str();
        if self.is_login() {
            self.send_login_disconnect(message);
            self.close(CloseReason::BackendUnreachable);
        } else {
            tracing::debug!(client = %self.client, server = %server.name(), "backend unreachable, answering status");
            self.state = State::OfflineStatus;
            self.deadline = Some(now + self.ctx.handshake_timeout);
            self.advance();
        }
    }

    fn connect_next(&mut self) {
        let Some(server) = &self.server else { return };
        let addrs = &server.config.addresses;
        if addrs.is_empty() {
            return self.close(CloseReason::BackendUnreachable);
        }
        let address = addrs[(self.first_address + self.attempts) % addrs.len()].clone();
        self.actions.push_back(Action::Connect(ConnectRequest {
            server: server.name().to_owned(),
            address,
            timeout: server.config.timeouts.connect,
        }));
    }

    fn is_login(&self) -> bool {
        self.handshake.is_some_and(|h| h.next_state.is_login())
    }

    fn route(&self) -> Option<Arc<Server>> {
        let host = Host::normalise(ServerAddress::split(self.server_address()).host)?;
        self.ctx.routes.route(host.as_str()).cloned()
    }

    fn send_login_disconnect(&mut self, reason: &str) {
        if self.is_login() {
            self.actions.push_back(Action::SendToClient(
                response::login_disconnect(reason).into(),
            ));
        }
    }

    fn close(&mut self, reason: CloseReason) {
        self.admission = None;
        tracing::info!(
            client = %self.client,
            host = %ServerAddress::split(self.server_address()).host.escape_debug(),
            player = self.player().unwrap_or("-"),
            server = self.server().unwrap_or("-"),
            reason = %reason,
            "connection closed before forwarding"
        );
        self.actions.push_back(Action::Close(reason));
        self.state = State::Done;
    }

    fn advance(&mut self) {
        loop {
            match self.state {
                State::Handshake => match handshake::parse_opening(&self.buf) {
                    Ok(Parsed::Incomplete) => return,
                    Ok(Parsed::Complete(Opening::LegacyPing, _)) => {
                        self.actions.push_back(Action::SendToClient(
                            response::legacy_ping_answer(LEGACY_PING_MOTD).into(),
                        ));
                        return self.close(CloseReason::LegacyPing);
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
                        if hs.next_state.is_login() {
                            self.state = State::LoginStart;
                        } else {
                            return self.request_pre_connect();
                        }
                    }
                    Err(e) => return self.close(CloseReason::ProtocolError(e.to_string())),
                },
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
                        (0x00, 0) if !self.status_answered => {
                            self.status_answered = true;
                            let bytes = self.offline_status();
                            self.actions.push_back(Action::SendToClient(bytes.into()));
                        }
                        (0x01, 8) => {
                            let pong = response::pong(frame.body);
                            self.actions.push_back(Action::SendToClient(pong.into()));
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
        let Some(hs) = self.handshake else { return };
        let host = Host::normalise(ServerAddress::split(self.server_address()).host);
        let server = self.route().map(|s| s.name().to_owned());
        self.state = State::PreConnect;
        self.actions.push_back(Action::PreConnect(PreConnectEvent {
            client: self.client,
            host: host.map(|h| h.as_str().to_owned()).unwrap_or_default(),
            server,
            player: self.player().map(str::to_owned),
            protocol_version: hs.protocol_version,
            next_state: hs.next_state,
        }));
    }
}
