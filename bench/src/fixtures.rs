//! Inputs shared by the core micro-benchmarks (`benches/core.rs`) and the allocation test
//! (`tests/alloc.rs`), so both measure exactly the same path.

use nethergate_core::hostname::{Host, ServerAddress};
use nethergate_core::login::LoginStart;
use nethergate_core::{
    handshake, Action, Context, Parsed, Plugins, Registry, RouteTable, Server, ServerConfig,
};
use nethergate_core::{Handshake, NextState, Session};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Servers in [`route_table`].
pub const SERVERS: usize = 50;

/// A route table of [`SERVERS`] servers; server `serverNN` claims `nodeNN.example.com`,
/// `playNN.example.org` and the wildcard `*.nodeNN.example.com`, so there are 100 exact names and 50
/// wildcards (a host that matches no exact name is tried against the wildcards in order).
pub fn route_table() -> RouteTable {
    let configs: Vec<ServerConfig> = (0..SERVERS)
        .map(|i| {
            let text = format!(
                "domains = [\"node{i:02}.example.com\", \"play{i:02}.example.org\", \"*.node{i:02}.example.com\"]\n\
                 addresses = [\"127.0.0.1:{}\"]\n",
                30_000 + i
            );
            ServerConfig::from_toml(&format!("servers/server{i:02}.toml"), &format!("server{i:02}"), &text)
                .expect("the fixture's server files are valid")
        })
        .collect();
    RouteTable::build(&configs).expect("the fixture's domains are distinct")
}

/// A handshake frame (1.20.4, login) for `address`.
pub fn handshake_frame(address: &str) -> Vec<u8> {
    let mut out = Vec::new();
    Handshake {
        protocol_version: 765,
        server_address: address,
        port: 25565,
        next_state: NextState::Login,
    }
    .encode(&mut out);
    out
}

/// A handshake for `address` followed by a 1.20.2+ login start for "Steve".
pub fn login_bytes(address: &str) -> Vec<u8> {
    let mut out = handshake_frame(address);
    LoginStart {
        name: "Steve",
        tail: &[0x11; 16],
    }
    .encode(&mut out);
    out
}

/// Addresses that exercise each kind of lookup, with the server each routes to.
pub const CASES: [(&str, &str, Option<&str>); 4] = [
    ("exact", "node42.example.com", Some("server42")),
    (
        "exact, decorated",
        "Node07.Example.COM.\0FML3\0",
        Some("server07"),
    ),
    ("wildcard", "eu.node31.example.com", Some("server31")),
    ("unknown", "nobody.example.net", None),
];

/// What the proxy does with a connection's first packet before it dials: parse the handshake, split the
/// decorations off the host, normalise it, and look it up. Allocates nothing.
pub fn route_connection<'t>(table: &'t RouteTable, bytes: &[u8]) -> Option<&'t Arc<Server>> {
    let Ok(Parsed::Complete(hs, _)) = handshake::parse(bytes) else {
        return None;
    };
    let host = Host::normalise(ServerAddress::split(hs.server_address).host)?;
    table.route(host.as_str())
}

/// A session context over `table`.
pub fn context(table: Arc<RouteTable>) -> Context {
    Context {
        routes: table,
        registry: Registry::new(),
        handshake_timeout: Duration::from_secs(5),
    }
}

/// Runs one [`Session`] from its first byte to [`Action::Forward`] (plugins allow, asked as the binaries
/// ask them; the first dial succeeds) and returns the bytes it asked to send to the backend; `None` if it
/// did not reach Forward.
pub fn session_to_forward(ctx: &Context, bytes: &[u8]) -> Option<usize> {
    let client: SocketAddr = SocketAddr::from(([198, 51, 100, 7], 50_000));
    let local: SocketAddr = SocketAddr::from(([192, 0, 2, 1], 25_565));
    let now = Instant::now();
    let mut session = Session::new(ctx.clone(), client, local, now);
    session.handle_client_data(bytes);
    let mut sent = 0;
    while let Some(action) = session.poll_action() {
        match action {
            Action::PreConnect => {
                // As the binaries do with no plugin configured.
                let decision = Plugins::new().decide(&session.pre_connect_event());
                session.pre_connect_result(decision)
            }
            Action::Connect(_) => {
                session.backend_connected(SocketAddr::from(([127, 0, 0, 1], 30_000)), now)
            }
            Action::SendToBackend(b) => sent += b.len(),
            // Dropping the live session unregisters it, as a finished copy would.
            Action::Forward(_) => return Some(sent),
            Action::SendToClient(_) | Action::Close(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_routes_where_it_says() {
        let table = route_table();
        for (label, address, server) in CASES {
            let routed = route_connection(&table, &handshake_frame(address));
            assert_eq!(routed.map(|s| s.name()), server, "{label}");
        }
    }

    #[test]
    fn session_reaches_forward_with_every_byte() {
        let ctx = context(Arc::new(route_table()));
        let bytes = login_bytes("node42.example.com");
        assert_eq!(session_to_forward(&ctx, &bytes), Some(bytes.len()));
        assert_eq!(
            session_to_forward(&ctx, &login_bytes("nobody.example.net")),
            None
        );
        assert!(ctx.registry.is_empty());
    }
}
