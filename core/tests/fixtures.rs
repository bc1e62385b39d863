//! Real-format captures of what clients of each Minecraft version send first (see fixtures/README.md),
//! parsed and driven through a whole session.

use nethergate_core::handshake::{self, Opening};
use nethergate_core::hostname::{Host, ServerAddress};
use nethergate_core::{
    login, Action, Context, Decision, NextState, Parsed, Registry, RouteTable, ServerConfig,
    Session,
};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Deserialize)]
struct Index {
    fixture: Vec<Fixture>,
}

#[derive(Deserialize)]
struct Fixture {
    file: String,
    protocol: i32,
    next_state: toml::Value,
    host: String,
    port: u16,
    player: Option<String>,
    handshake_len: usize,
    login_len: Option<usize>,
    total_len: usize,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixtures() -> Vec<(Fixture, Vec<u8>)> {
    let text = std::fs::read_to_string(dir().join("index.toml")).expect("index.toml");
    let index: Index = toml::from_str(&text).expect("index.toml parses");
    index
        .fixture
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(dir().join(&f.file)).expect("fixture file");
            assert_eq!(bytes.len(), f.total_len, "{}", f.file);
            (f, bytes)
        })
        .collect()
}

#[test]
fn every_version_parses_as_documented() {
    let all = fixtures();
    assert!(all.len() >= 20, "fixtures missing");
    for (f, bytes) in &all {
        let opening = handshake::parse_opening(bytes).unwrap_or_else(|e| panic!("{}: {e}", f.file));
        if f.next_state.as_str() == Some("legacy") {
            // 1.6 pings are recognised from their bytes; older ones (FE, FE 01) once no more bytes come.
            let recognised = matches!(opening, Parsed::Complete(Opening::LegacyPing, _))
                || handshake::is_legacy_prefix(bytes);
            assert!(recognised, "{}", f.file);
            continue;
        }
        let Parsed::Complete(Opening::Handshake(hs), used) = opening else {
            panic!("{}: incomplete", f.file)
        };
        assert_eq!(used, f.handshake_len, "{}", f.file);
        assert_eq!(hs.protocol_version, f.protocol, "{}", f.file);
        assert_eq!(hs.server_address, f.host, "{}", f.file);
        assert_eq!(hs.port, f.port, "{}", f.file);
        assert_eq!(
            i64::from(hs.next_state.to_wire()),
            f.next_state.as_integer().unwrap_or(-1),
            "{}",
            f.file
        );
        if let Some(login_len) = f.login_len {
            let Ok(Parsed::Complete(ls, used)) = login::parse(&bytes[f.handshake_len..]) else {
                panic!("{}: login start does not parse", f.file)
            };
            assert_eq!(used, login_len, "{}", f.file);
            assert_eq!(Some(ls.name), f.player.as_deref(), "{}", f.file);
        }
        // Every decoration is seen through for routing.
        let host = Host::normalise(ServerAddress::split(hs.server_address).host).expect("host");
        assert_eq!(host.as_str(), "mc.example.com", "{}", f.file);
    }
}

fn drive(bytes: &[u8], rewrite: &str) -> (Vec<u8>, bool) {
    let cfg = ServerConfig::from_toml(
        "mc.toml",
        "mc",
        &format!("domains = [\"mc.example.com\"]\naddresses = [\"127.0.0.1:1\"]\n{rewrite}"),
    )
    .expect("config");
    let ctx = Context {
        routes: Arc::new(RouteTable::build(&[cfg]).expect("routes")),
        registry: Registry::new(),
        handshake_timeout: Duration::from_secs(5),
    };
    let now = Instant::now();
    let mut s = Session::new(
        ctx,
        "127.0.0.1:5".parse().unwrap(),
        "127.0.0.1:6".parse().unwrap(),
        now,
    );
    s.handle_client_data(bytes);
    let mut sent = Vec::new();
    let mut forwarded = false;
    while let Some(a) = s.poll_action() {
        match a {
            Action::PreConnect => s.pre_connect_result(Decision::Allow),
            Action::Connect(_) => s.backend_connected("127.0.0.1:1".parse().unwrap(), now),
            Action::SendToBackend(b) => sent.extend_from_slice(&b),
            Action::Forward(_) => forwarded = true,
            Action::SendToClient(_) | Action::Close(_) => {}
        }
    }
    (sent, forwarded)
}

#[test]
fn every_version_is_forwarded_untouched_or_rewritten_keeping_decorations() {
    for (f, bytes) in fixtures() {
        if f.next_state.as_str() == Some("legacy") {
            assert!(
                !drive(&bytes, "").1,
                "{}: legacy ping must not be forwarded",
                f.file
            );
            continue;
        }
        let (sent, forwarded) = drive(&bytes, "");
        assert!(forwarded, "{}", f.file);
        assert_eq!(sent, bytes, "{}: bytes changed without a rewrite", f.file);

        let (sent, _) = drive(
            &bytes,
            "domain_rewrite = { explicit = \"backend.internal\" }",
        );
        let Ok(Parsed::Complete(hs, used)) = handshake::parse(&sent) else {
            panic!("{}: rewritten handshake does not parse", f.file)
        };
        let decoration = ServerAddress::split(&f.host).decoration;
        assert_eq!(
            hs.server_address,
            format!("backend.internal{decoration}"),
            "{}",
            f.file
        );
        assert_eq!(hs.protocol_version, f.protocol);
        assert_eq!(hs.next_state == NextState::Status, f.login_len.is_none());
        assert_eq!(
            &sent[used..],
            &bytes[f.handshake_len..],
            "{}: bytes after the handshake changed",
            f.file
        );
    }
}
