//! Adapters that show how to put `nethergate-core` under a runtime of your own.
//!
//! [`blocking`] runs the whole proxy on plain `std::net` threads, with no async runtime at all.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod blocking;
