//! # nethergate-core
//!
//! The sans-IO heart of nethergate, a Minecraft reverse proxy that routes players by the hostname in the
//! handshake. This crate knows the wire format, the configuration, routing and the life of one connection
//! up to "start forwarding". It never touches a socket, a timer or a thread: a runtime adapter feeds it
//! bytes and events and performs the [`Action`]s it asks for.
//!
//! ```
//! use nethergate_core::{Action, Context, Decision, RouteTable, Registry, Session, ServerConfig};
//! use std::{sync::Arc, time::{Duration, Instant}};
//!
//! let lobby = ServerConfig::from_toml("lobby.toml", "lobby",
//!     "domains = [\"mc.example.com\"]\naddresses = [\"127.0.0.1:25566\"]").unwrap();
//! let ctx = Context {
//!     routes: Arc::new(RouteTable::build(&[lobby]).unwrap()),
//!     registry: Registry::new(),
//!     handshake_timeout: Duration::from_secs(5),
//! };
//! let now = Instant::now();
//! let mut session = Session::new(ctx, "198.51.100.7:50000".parse().unwrap(),
//!     "192.0.2.1:25565".parse().unwrap(), now);
//!
//! // A 1.20.4 client: handshake (login) + login start for "Steve".
//! let mut bytes = Vec::new();
//! nethergate_core::handshake::Handshake { protocol_version: 765, server_address: "MC.example.com.",
//!     port: 25565, next_state: nethergate_core::NextState::Login }.encode(&mut bytes);
//! nethergate_core::login::LoginStart { name: "Steve", tail: &[0; 16] }.encode(&mut bytes);
//! session.handle_client_data(&bytes);
//!
//! // The driving loop: the same few lines in every runtime.
//! let plugins = nethergate_core::Plugins::new(); // none: everything is allowed
//! let mut sent_to_backend = Vec::new();
//! while let Some(action) = session.poll_action() {
//!     match action {
//!         Action::PreConnect => {
//!             let decision = plugins.decide(&session.pre_connect_event());
//!             session.pre_connect_result(decision)
//!         }
//!         Action::Connect(req) => {
//!             // dial req.address within req.timeout, then:
//!             session.backend_connected("127.0.0.1:25566".parse().unwrap(), now)
//!         }
//!         Action::SendToBackend(b) => sent_to_backend.extend_from_slice(&b),
//!         Action::SendToClient(_b) => { /* write to the client */ }
//!         Action::Forward(fwd) => {
//!             // copy both ways until both sides are done, counting bytes, then:
//!             fwd.live.finish(fwd.c2b_initial, 0, nethergate_core::EndReason::ClientClosed, now);
//!         }
//!         Action::Close(_reason) => { /* flush writes to the client, close both sockets */ }
//!     }
//! }
//! assert_eq!(sent_to_backend, bytes); // no rewrite configured: forwarded byte for byte
//! ```
//!
//! Until forwarding starts, a driver reads from the client only while [`Session::wants_client_data`] and
//! calls [`Session::handle_timeout`] at [`Session::poll_timeout`].
//!
//! Modules follow the design notes: [`codec`] (VarInt, strings, frames), [`handshake`], [`login`],
//! [`hostname`], [`rewrite`], [`route`], [`config`], [`proxy_protocol`], [`response`], [`plugin`],
//! [`registry`], [`session`] and [`forward`] (the rules of the byte copy that every runtime shares);
//! [`labels`] reads servers from Docker container labels for the driver's Docker provider.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod config;
pub mod forward;
pub mod handshake;
pub mod hostname;
pub mod labels;
pub mod login;
pub mod plugin;
pub mod proxy_protocol;
pub mod registry;
pub mod response;
pub mod rewrite;
pub mod route;
pub mod session;

pub use codec::{CodecError, Parsed};
pub use config::{
    BackendAddress, Config, ConfigErrors, ConfigIssue, MainConfig, ProxyMode, ProxyProtocolVersion,
    ServerConfig, Timeouts,
};
pub use handshake::{Handshake, NextState};
pub use plugin::{Decision, IpFilter, Plugins, PreConnect, PreConnectEvent, PLUGIN_FAILED};
pub use registry::{EndReason, EndReport, LiveSession, Registry, SessionInfo};
pub use route::{RouteTable, Server};
pub use session::{Action, CloseReason, ConnectRequest, Context, Forward, Session};
