//! Arbitrary text as configuration files: `ServerConfig::from_toml`, `MainConfig::from_toml` and
//! `RouteTable::build`.
//!
//! Input: UTF-8 text (other bytes are replaced, as a lossy reader would), cut at NUL bytes into up to three
//! documents: two server files and a main file (the main file defaults to the first document).
//!
//! Checks: errors, never panics; every error names its source and gives a reason; an accepted server is
//! usable (a name, at least one domain and one backend address that prints and parses back, domains
//! normalised the way handshake hosts are, non-zero ports and timeouts); one server always builds a table in which each of its exact domains routes to it; the same
//! server twice is refused; an accepted main file's timeouts can drive a session.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nethergate_core::hostname::Host;
use nethergate_core::{
    ConfigErrors, Context, MainConfig, Registry, RouteTable, ServerConfig, Session,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn check_errors(e: &ConfigErrors, source: &str) {
    assert!(!e.0.is_empty(), "an error without issues");
    for issue in &e.0 {
        assert_eq!(issue.source, source);
        assert!(
            !issue.reason.is_empty(),
            "an issue without a reason: {issue:?}"
        );
    }
    let _ = e.to_string();
}

fn check_server(text: &str, source: &str, stem: &str) -> Option<ServerConfig> {
    match ServerConfig::from_toml(source, stem, text) {
        Ok(s) => {
            assert!(!s.name.trim().is_empty());
            assert_eq!(s.source, source);
            assert!(!s.domains.is_empty());
            for d in &s.domains {
                assert!(!d.is_empty(), "empty domain");
                assert!(
                    d.len() <= 253,
                    "{d} is longer than any host a client can send"
                );
                assert_eq!(*d, d.to_ascii_lowercase());
                // Config and handshake hosts are normalised alike: a client sending the domain (upper case,
                // trailing dot) gets this exact string to route on. Only one trailing dot is removed on
                // both sides, so "a.." in a file is "a." and matches a client sending "a..".
                let sent = format!("{}.", d.to_ascii_uppercase());
                if let Some(h) = Host::normalise(&sent) {
                    assert_eq!(h.as_str(), d.as_str());
                }
            }
            assert!(!s.addresses.is_empty());
            for a in &s.addresses {
                assert!(a.port != 0 && !a.host.is_empty());
                // A name is dialable: no empty label, DNS's length limits (one trailing dot allowed).
                if a.host.parse::<std::net::IpAddr>().is_err() {
                    let name = a.host.strip_suffix('.').unwrap_or(&a.host);
                    assert!(name.len() <= 253, "{a}");
                    assert!(
                        name.split('.').all(|l| !l.is_empty() && l.len() <= 63),
                        "{a}"
                    );
                }
                // What the runtime dials must be what was configured.
                let again = nethergate_core::BackendAddress::parse(&a.to_string());
                assert_eq!(again.as_ref(), Ok(a), "{a} does not parse back");
            }
            assert!(!s.timeouts.connect.is_zero());
            assert!(!s.timeouts.read.is_zero());
            assert!(!s.timeouts.write.is_zero());
            Some(s)
        }
        Err(e) => {
            check_errors(&e, source);
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut docs = text.splitn(3, '\0');
    let first = docs.next().unwrap_or("");
    let second = docs.next().unwrap_or("");
    let main_text = docs.next().unwrap_or(first);

    let a = check_server(first, "servers/a.toml", "a");
    let b = check_server(second, "servers/b.toml", "b");

    if let Some(a) = &a {
        let table = RouteTable::build(std::slice::from_ref(a))
            .unwrap_or_else(|e| panic!("one valid server must build a table: {e}"));
        for d in a.domains.iter().filter(|d| !d.contains(['*', '?'])) {
            assert_eq!(
                table.route(d).map(|s| s.name()),
                Some(a.name.as_str()),
                "{d}"
            );
        }
        assert_eq!(
            table.by_name(&a.name).map(|s| s.name()),
            Some(a.name.as_str())
        );
        let twice = RouteTable::build(&[a.clone(), a.clone()]);
        assert!(twice.is_err(), "the same server twice was accepted");
        if let Some(b) = &b {
            match RouteTable::build(&[a.clone(), b.clone()]) {
                Ok(t) => {
                    assert_eq!(t.servers().len(), 2);
                    for (s, other) in [(a, b), (b, a)] {
                        for d in s.domains.iter().filter(|d| !d.contains(['*', '?'])) {
                            assert!(!other.domains.contains(d), "{d} claimed twice");
                            assert_eq!(t.route(d).map(|x| x.name()), Some(s.name.as_str()));
                        }
                    }
                }
                Err(e) => {
                    for issue in &e.0 {
                        assert!(issue.source == a.source || issue.source == b.source);
                    }
                    let _ = e.to_string();
                }
            }
        }
    }

    let path = Path::new("/etc/nethergate/nethergate.toml");
    match MainConfig::from_toml(path, main_text) {
        Ok(m) => {
            // Resolved against the main file's directory; an absolute `servers_dir` (e.g. "/33") stays as given.
            assert!(m.servers_dir.is_absolute());
            assert!(!m.handshake_timeout.is_zero());
            // An accepted handshake timeout must be usable by a session and its deadlines.
            let ctx = Context {
                routes: Arc::new(
                    a.map(|a| RouteTable::build(&[a]).expect("checked above"))
                        .unwrap_or_default(),
                ),
                registry: Registry::new(),
                handshake_timeout: m.handshake_timeout,
            };
            let now = Instant::now();
            let mut s = Session::new(
                ctx,
                "198.51.100.7:50000".parse().expect("literal"),
                "192.0.2.1:25565".parse().expect("literal"),
                now,
            );
            // A timeout too long to represent as an instant means no deadline.
            assert_eq!(s.poll_timeout(), now.checked_add(m.handshake_timeout));
            s.handle_timeout(now);
            assert!(s.poll_action().is_none());
        }
        Err(e) => check_errors(&e, &path.display().to_string()),
    }
});
