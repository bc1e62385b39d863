//! Live reload of server files: add, change, break, fix, remove and conflict, with a live session that
//! survives every step. Runs against tokio and smol.

use nethergate_e2e::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Which backend a login for `host` reaches now: `Some(port)` of the backend, `None` when refused.
fn routed_to(proxy: SocketAddr, host: &str) -> Option<u16> {
    let mut c = connect(proxy);
    c.write_all(&login_bytes(host, "Probe")).ok()?;
    let mut answer = [0u8; 4];
    c.read_exact(&mut answer).ok()?;
    // A refused login gets a disconnect packet instead of the backend's "BE" + port.
    (answer[..2] == *b"BE").then(|| u16::from_be_bytes([answer[2], answer[3]]))
}

/// A backend that answers every login with its own port, then echoes.
fn named_backend() -> Backend {
    let port = std::sync::Arc::new(std::sync::OnceLock::new());
    let p = port.clone();
    let b = Backend::start(move |mut s: TcpStream| {
        let Ok(_) = read_frame_bytes(&mut s) else {
            return;
        };
        let Ok(_) = read_frame_bytes(&mut s) else {
            return;
        };
        let me: u16 = *p.get().unwrap_or(&0);
        let mut hello = b"BE".to_vec();
        hello.extend_from_slice(&me.to_be_bytes());
        if s.write_all(&hello).is_err() {
            return;
        }
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let _ = port.set(b.addr().port());
    b
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    assert!(
        wait_until(Duration::from_secs(10), &mut check),
        "never happened: {what}"
    );
}

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
    let (a, b) = (named_backend(), named_backend());
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
