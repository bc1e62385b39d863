//! # nethergate-bench
//!
//! Measures proxies the way players load them, against a direct connection to the same backend in the same
//! run. The binary (`cargo run --release -p nethergate-bench -- --help`) starts its own backend, starts
//! each proxy under test as a child process, and runs four scenarios in interleaved rounds:
//!
//! - [`scenario::game`]: many sessions exchanging small messages at 20 Hz; added round-trip latency and
//!   proxy CPU per message;
//! - [`scenario::bulk`]: saturated duplex streams; MiB/s per direction and CPU seconds per GiB;
//! - [`scenario::setup`]: connect + handshake + login start + first backend byte + close, in a loop;
//! - [`scenario::idle`]: thousands of idle sessions; proxy RSS per session.
//!
//! The library half also holds [`fixtures`], the route table and handshakes that the criterion
//! micro-benchmarks (`benches/core.rs`) and the allocation test (`tests/alloc.rs`) share:
//!
//! ```
//! use nethergate_bench::fixtures;
//! use nethergate_core::{handshake, hostname::{Host, ServerAddress}, Parsed};
//!
//! let table = fixtures::route_table();
//! let frame = fixtures::handshake_frame("Node07.Example.COM.\0FML2\0");
//! let Ok(Parsed::Complete(hs, _)) = handshake::parse(&frame) else { panic!("not a handshake") };
//! let host = Host::normalise(ServerAddress::split(hs.server_address).host).unwrap();
//! assert_eq!(table.route(host.as_str()).unwrap().name(), "server07");
//! ```

pub mod backend;
pub mod cli;
pub mod fixtures;
pub mod procfs;
pub mod reference;
pub mod report;
pub mod scenario;
#[cfg(target_os = "linux")]
pub mod splice_reference;
pub mod stats;
pub mod target;
pub mod wire;
