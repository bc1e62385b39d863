//! Live reload of server files: add, change, break, fix, remove and conflict, with a live session that
//! survives every step. Runs against tokio and smol.

use nethergate_e2e::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn still_alive(live: &mut TcpStream, step: &str) {
    live.write_all(step.as_bytes())
        .expect("live session writable");
    let mut back = vec![0u8; step.len()];
    live.read_exact(&mut back)
        .unwrap_or_else(|e| panic!("live session died at {step}: {e}"));
    assert_eq!(back, step.as_bytes());
}

fn every_reload_step_keeps_live_sessions<F: Flavor>() {
    capture_logs();
    let (a, b) = (Backend::named(), Backend::named());
    let (pa, pb) = (a.addr().port(), b.addr().port());
    let layout = Layout::new().server(
        "alpha",
        &server_toml(&["alpha.example.com"], &[a.addr()], ""),
    );
    let proxy = F::start(layout.load(), nethergate_core::Plugins::new()).expect("start");
    let addr = proxy.addr();
    assert_eq!(routed_to(addr, "alpha.example.com"), Some(pa));
    let mut live = connect(addr);
    live.write_all(&login_bytes("alpha.example.com", "Stayer"))
        .unwrap();
    let mut hello = [0u8; 4];
    live.read_exact(&mut hello).unwrap();

    // Add a server.
    layout.write_server("beta", &server_toml(&["beta.example.com"], &[b.addr()], ""));
    eventually("beta added", || {
        routed_to(addr, "beta.example.com") == Some(pb)
    });
    still_alive(&mut live, "after add");

    // Change a server: alpha now points at b.
    layout.write_server(
        "alpha",
        &server_toml(&["alpha.example.com"], &[b.addr()], ""),
    );
    eventually("alpha changed", || {
        routed_to(addr, "alpha.example.com") == Some(pb)
    });
    still_alive(&mut live, "after change");

    // Break it: the previous version stays live and the error names the file and key.
    layout.write_server(
        "alpha",
        "domains = [\"alpha.example.com\"]\naddresses = [\"nowhere\"]\n",
    );
    assert!(
        wait_for_log(
            &["alpha.toml", "addresses", "previous version stays live"],
            Duration::from_secs(10)
        )
        .is_some(),
        "[{}] broken file reported",
        F::NAME
    );
    assert_eq!(routed_to(addr, "alpha.example.com"), Some(pb));
    still_alive(&mut live, "after break");

    // Fix it, back to a.
    layout.write_server(
        "alpha",
        &server_toml(&["alpha.example.com"], &[a.addr()], ""),
    );
    eventually("alpha fixed", || {
        routed_to(addr, "alpha.example.com") == Some(pa)
    });
    still_alive(&mut live, "after fix");

    // A conflict between files is rejected whole: the previous table stays.
    layout.write_server(
        "gamma",
        &server_toml(&["beta.example.com", "gamma.example.com"], &[a.addr()], ""),
    );
    assert!(
        wait_for_log(
            &["gamma.toml", "claimed by both", "previous routes stay live"],
            Duration::from_secs(10)
        )
        .is_some(),
        "[{}] conflict reported",
        F::NAME
    );
    assert_eq!(
        routed_to(addr, "gamma.example.com"),
        None,
        "{}",
        captured_logs()
    );
    assert_eq!(routed_to(addr, "beta.example.com"), Some(pb));
    layout.remove_server("gamma");

    // Remove a server: its routes go.
    layout.remove_server("beta");
    eventually("beta removed", || {
        routed_to(addr, "beta.example.com").is_none()
    });
    still_alive(&mut live, "after remove");
    assert_eq!(proxy.registry().len(), 1, "only the live session is left");
    drop(live);
    drop(proxy);
}

#[test]
fn tokio_every_reload_step_keeps_live_sessions() {
    every_reload_step_keeps_live_sessions::<Tokio>();
}

#[test]
fn smol_every_reload_step_keeps_live_sessions() {
    every_reload_step_keeps_live_sessions::<Smol>();
}
