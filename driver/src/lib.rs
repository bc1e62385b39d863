//! # nethergate-driver
//!
//! Runs [`nethergate_core`] sessions over any async runtime that implements the small [`Runtime`] trait
//! (sockets with readiness, a timer, spawn). The tokio and smol crates are thin adapters on top of this crate
//! (smol's with an executor of its own); everything that is not "how does this runtime do IO" lives here or in the core.
//!
//! - [`Proxy`]: bind, accept loop, `max_connections`, graceful shutdown phases.
//! - `connection`: drives one [`nethergate_core::Session`] and executes its actions.
//! - [`copy`]: the bidirectional copy with half-close, idle/write limits, counters, fairness and pooled
//!   buffers (no buffer held by an idle session).
//! - [`reload`]: live reload of server files (watch + SIGHUP) and provider servers.
//! - [`docker`]: servers discovered from Docker container labels, on a thread of their own.
//! - [`cli`]: the command line, logging and signals every binary shares.
//! - [`limits`]: the open-file limit, raised at startup.

#![warn(missing_docs)]

pub mod cli;
mod connection;
pub mod copy;
pub mod docker;
pub mod limits;
pub mod log;
mod loops;
pub mod pool;
mod proxy;
pub mod reload;
pub mod runtime;
pub mod signal;
#[cfg(target_os = "linux")]
pub mod splice;

pub use proxy::{Control, Handle, Proxy, Running};
pub use runtime::{Interest, Listener, Runtime, Stream};
