//! The pre-connect event: plugins see who connects where and may allow, deny or redirect the connection.

use crate::handshake::NextState;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// What plugins are told before any backend is contacted. Borrowed from the connection's session
/// ([`crate::Session::pre_connect_event`]): building it copies nothing. A plugin that keeps something of it
/// copies that part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreConnectEvent<'a> {
    /// The client's address.
    pub client: SocketAddr,
    /// The normalised host the client asked for (empty when it could not be normalised).
    pub host: &'a str,
    /// The server the route table picked, if any.
    pub server: Option<&'a str>,
    /// The player name (logins only).
    pub player: Option<&'a str>,
    /// The client's protocol version.
    pub protocol_version: i32,
    /// Status, login or transfer.
    pub next_state: NextState,
}

/// A plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on with the routed server.
    Allow,
    /// Refuse; a login is told this reason.
    Deny(String),
    /// Send the connection to the server with this name instead.
    Redirect(String),
}

/// A pre-connect plugin. Called on the connection's task before the backend is dialled, so it must be
/// quick and must not block.
pub trait PreConnect: Send + Sync {
    /// Decides about one connection.
    fn pre_connect(&self, event: &PreConnectEvent<'_>) -> Decision;
}

/// Plugins in order; the first answer that is not [`Decision::Allow`] wins.
#[derive(Clone, Default)]
pub struct Plugins(Vec<Arc<dyn PreConnect>>);

impl Plugins {
    /// No plugins: everything is allowed.
    pub fn new() -> Self {
        Plugins(Vec::new())
    }

    /// Adds a plugin after the existing ones.
    pub fn with(mut self, plugin: impl PreConnect + 'static) -> Self {
        self.0.push(Arc::new(plugin));
        self
    }

    /// Asks each plugin in turn. A plugin that panics refuses the connection (the player is told
    /// [`PLUGIN_FAILED`]), with an error line naming the panic, instead of unwinding the connection's
    /// thread or task (which closed it as if the proxy were shutting down); the proxy goes on.
    pub fn decide(&self, event: &PreConnectEvent<'_>) -> Decision {
        self.0
            .iter()
            .map(|p| ask(p.as_ref(), event))
            .find(|d| *d != Decision::Allow)
            .unwrap_or(Decision::Allow)
    }

    /// Whether there are no plugins.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a player is told when a pre-connect plugin failed.
pub const PLUGIN_FAILED: &str =
    "The server could not check your connection. Please try again later.";

fn ask(plugin: &dyn PreConnect, event: &PreConnectEvent<'_>) -> Decision {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| plugin.pre_connect(event))) {
        Ok(decision) => decision,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            tracing::error!(client = %event.client, host = ?event.host, player = ?event.player,
                panic = ?message, "pre-connect plugin panicked; the connection is refused");
            Decision::Deny(PLUGIN_FAILED.into())
        }
    }
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plugins({})", self.0.len())
    }
}

/// An IP network in CIDR notation.
pub type IpNet = ipnet::IpNet;

/// Allows or denies clients by address: a client in `deny` is refused; when `allow` is not empty, a client
/// outside it is refused too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpFilter {
    /// Networks allowed (empty = everyone not denied).
    pub allow: Vec<IpNet>,
    /// Networks refused.
    pub deny: Vec<IpNet>,
    /// What a refused player is told.
    pub message: String,
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl PreConnect for IpFilter {
    fn pre_connect(&self, event: &PreConnectEvent<'_>) -> Decision {
        let ip = canonical(event.client.ip());
        let denied = self.deny.iter().any(|n| n.contains(&ip))
            || (!self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)));
        if denied {
            Decision::Deny(self.message.clone())
        } else {
            Decision::Allow
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(client: &str) -> PreConnectEvent<'static> {
        PreConnectEvent {
            client: client.parse().unwrap(),
            host: "mc.example.com",
            server: Some("lobby"),
            player: Some("Steve"),
            protocol_version: 765,
            next_state: NextState::Login,
        }
    }

    #[test]
    fn deny_list_refuses_matching_clients_only() {
        let f = IpFilter {
            deny: vec!["203.0.113.0/24".parse().unwrap()],
            message: "banned".into(),
            ..IpFilter::default()
        };
        assert_eq!(
            f.pre_connect(&event("203.0.113.9:1")),
            Decision::Deny("banned".into())
        );
        assert_eq!(
            f.pre_connect(&event("[::ffff:203.0.113.9]:1")),
            Decision::Deny("banned".into())
        );
        assert_eq!(f.pre_connect(&event("198.51.100.1:1")), Decision::Allow);
    }

    #[test]
    fn allow_list_refuses_everyone_else() {
        let f = IpFilter {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            message: "no".into(),
            ..IpFilter::default()
        };
        assert_eq!(f.pre_connect(&event("127.0.0.1:1")), Decision::Allow);
        assert_eq!(
            f.pre_connect(&event("10.1.1.1:1")),
            Decision::Deny("no".into())
        );
    }

    #[test]
    fn first_non_allow_answer_wins() {
        struct Fixed(Decision);
        impl PreConnect for Fixed {
            fn pre_connect(&self, _: &PreConnectEvent<'_>) -> Decision {
                self.0.clone()
            }
        }
        let p = Plugins::new()
            .with(Fixed(Decision::Allow))
            .with(Fixed(Decision::Redirect("b".into())))
            .with(Fixed(Decision::Deny("x".into())));
        assert_eq!(
            p.decide(&event("127.0.0.1:1")),
            Decision::Redirect("b".into())
        );
        assert_eq!(
            Plugins::new().decide(&event("127.0.0.1:1")),
            Decision::Allow
        );
    }

    #[test]
    fn a_panicking_plugin_refuses_the_connection_and_later_ones_still_answer() {
        struct Panics;
        impl PreConnect for Panics {
            fn pre_connect(&self, e: &PreConnectEvent<'_>) -> Decision {
                match e.client.port() {
                    1 => panic!("a plugin bug"),
                    2 => std::panic::panic_any(7u8), // not a string
                    _ => Decision::Allow,
                }
            }
        }
        let p = Plugins::new().with(Panics);
        let refused = Decision::Deny(PLUGIN_FAILED.into());
        assert_eq!(p.decide(&event("127.0.0.1:1")), refused);
        assert_eq!(p.decide(&event("127.0.0.1:2")), refused);
        assert_eq!(p.decide(&event("127.0.0.1:3")), Decision::Allow);
    }
}
