//! Live reload of server files: add, change, break, fix, remove and conflict, with a live session that
//! survives every step. Runs against tokio and smol.

use nethergate_core::session::LOOP_WARNING;
use nethergate_e2e::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn still_alive(live: &mut TcpStream, step: &str) {
    live.write_all(step.as_bytes())
        .expect("live session writable");
    let mut back = vec![0u8; step.len()];
    live.read_exact(&mut back)
        .unwrap_or_else(|e| panic!("live session died at {step}: {e}"));
    assert_eq!(back, step.as_bytes());
}

/// Asserts that a log line holding every needle shows up within 10 s.
fn logged<F: Flavor>(needles: &[&str], what: &str) {
    let line = wait_for_log(needles, Duration::from_secs(10));
    assert!(line.is_some(), "[{}] {what}", F::NAME);
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
    logged::<F>(
        &["alpha.toml", "addresses", "previous version stays live"],
        "broken file reported",
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

    // A new file that is broken was never live: it is said to be not loaded, and routes nothing.
    layout.write_server(
        "delta",
        "domains = [\"delta.example.com\"]\naddresses = [\"nowhere\"]\n",
    );
    logged::<F>(
        &["delta.toml", "addresses", "server file invalid, not loaded"],
        "new broken file reported",
    );
    assert_eq!(routed_to(addr, "delta.example.com"), None);
    layout.remove_server("delta");

    // A conflict between files is rejected whole: the previous table stays.
    layout.write_server(
        "gamma",
        &server_toml(&["beta.example.com", "gamma.example.com"], &[a.addr()], ""),
    );
    logged::<F>(
        &["gamma.toml", "claimed by both", "previous routes stay live"],
        "conflict reported",
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

/// A file that stays broken is reported once per change: reading the files for a reload must not count as
/// a change (inotify reports the proxy's own opens), or the reload repeats itself every debounce period.
fn a_broken_file_is_reported_once<F: Flavor>() {
    capture_logs();
    let a = Backend::named();
    let layout = Layout::new().server(
        "alpha",
        &server_toml(&["alpha.example.com"], &[a.addr()], ""),
    );
    // A file that is no server's, linked into the directory (before the broken file comes, so that its
    // own appearance is not what reloads).
    let log = layout.dir().join("app.log");
    std::fs::write(&log, "").expect("log");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&log, layout.dir().join("servers").join("app.log")).expect("link");
    let proxy = F::start(layout.load(), nethergate_core::Plugins::new()).expect("start");
    layout.write_server("broken", "domains = [\"broken.example.com\"]\nbogus = 1\n");
    let file = layout.dir().join("servers").join("broken.toml");
    let file = file.display().to_string();
    assert!(
        wait_for_log(&[&file, "bogus"], Duration::from_secs(10)).is_some(),
        "[{}] broken file reported",
        F::NAME
    );
    // Several debounce periods, and a watch check of the links: a reload loop would have logged it again
    // by now. The linked file written all the while (a log) is no reason to reload either, nor are an
    // editor's swap file and a note written in the directory itself.
    let until =
        Instant::now() + nethergate_driver::reload::IDENTITY_CHECK + Duration::from_millis(1500);
    while Instant::now() < until {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("log");
        f.write_all(b"a line\n").expect("append");
        for other in [".alpha.toml.swp", "notes.txt"] {
            std::fs::write(layout.dir().join("servers").join(other), "x").expect("write");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let reported = captured_logs()
        .lines()
        .filter(|l| l.contains(&file) && l.contains("bogus"))
        .count();
    assert_eq!(reported, 1, "[{}] reported {reported} times", F::NAME);
    assert_eq!(
        routed_to(proxy.addr(), "alpha.example.com"),
        Some(a.addr().port())
    );
    // This proxy's line (the other runtime's test runs at the same time, into the same capture).
    let servers_dir = format!(
        "servers_dir={:?}",
        layout.dir().join("servers").display().to_string()
    );
    let over = ["configuration valid again", servers_dir.as_str()];
    assert!(
        !captured_logs()
            .lines()
            .any(|l| over.iter().all(|n| l.contains(n))),
        "[{}] the problem is not over yet",
        F::NAME
    );
    // Removing the broken file changes no route, but ends the problem: the admin is told.
    std::fs::remove_file(layout.dir().join("servers").join("broken.toml")).unwrap();
    assert!(
        wait_for_log(&over, Duration::from_secs(10)).is_some(),
        "[{}] the end of the problem was not logged",
        F::NAME
    );
    drop(proxy);
}

/// Two backends, and a proxy of flavour `F` whose one server file routes `alpha.example.com` to the first.
fn alpha_proxy<F: Flavor>() -> (Backend, Backend, Layout, Box<dyn Started>) {
    capture_logs();
    let (a, b) = (Backend::named(), Backend::named());
    let layout = Layout::new().server(
        "alpha",
        &server_toml(&["alpha.example.com"], &[a.addr()], ""),
    );
    let proxy = F::start(layout.load(), nethergate_core::Plugins::new()).expect("start");
    (a, b, layout, proxy)
}

/// A server file changed after the configuration was read and before the watch began (the proxy was still
/// binding) is live once the proxy runs: no event will ever report that change.
fn a_change_before_the_watch_begins_is_picked_up<F: Flavor>() {
    capture_logs();
    let (a, b) = (Backend::named(), Backend::named());
    let layout = Layout::new().server(
        "alpha",
        &server_toml(&["alpha.example.com"], &[a.addr()], ""),
    );
    let config = layout.load();
    layout.write_server(
        "alpha",
        &server_toml(&["alpha.example.com"], &[b.addr()], ""),
    );
    layout.write_server("beta", &server_toml(&["beta.example.com"], &[a.addr()], ""));
    let proxy = F::start(config, nethergate_core::Plugins::new()).expect("start");
    // At once, not eventually: the files are read again before the watch is handed over.
    let addr = proxy.addr();
    assert_eq!(
        routed_to(addr, "alpha.example.com"),
        Some(b.addr().port()),
        "[{}] alpha changed",
        F::NAME
    );
    assert_eq!(
        routed_to(addr, "beta.example.com"),
        Some(a.addr().port()),
        "[{}] beta added",
        F::NAME
    );
    drop(proxy);
}

/// A deploy that replaces `servers_dir` whole (`mv servers.new servers`) is picked up, and so is every
/// later change in the new directory.
fn a_replaced_server_directory_is_watched_again<F: Flavor>() {
    let (a, b, layout, proxy) = alpha_proxy::<F>();
    let addr = proxy.addr();
    assert_eq!(routed_to(addr, "alpha.example.com"), Some(a.addr().port()));

    let servers = layout.dir().join("servers");
    let staged = layout.dir().join("servers.new");
    std::fs::create_dir(&staged).expect("staging dir");
    std::fs::write(
        staged.join("beta.toml"),
        server_toml(&["beta.example.com"], &[b.addr()], ""),
    )
    .expect("staged file");
    std::fs::remove_dir_all(&servers).expect("remove servers");
    std::fs::rename(&staged, &servers).expect("swap in servers.new");
    eventually("the new directory is read", || {
        routed_to(addr, "beta.example.com") == Some(b.addr().port())
    });
    eventually("the old directory's server is gone", || {
        routed_to(addr, "alpha.example.com").is_none()
    });

    layout.write_server(
        "gamma",
        &server_toml(&["gamma.example.com"], &[a.addr()], ""),
    );
    eventually("a file added to the new directory is read", || {
        routed_to(addr, "gamma.example.com") == Some(a.addr().port())
    });
    drop(proxy);
}

/// `mv servers servers.old && mv servers.new servers`, then `rm -rf servers.old` some time later: the old
/// directory's deletion must not take the new directory's watch with it.
fn the_watch_survives_deleting_the_replaced_directory<F: Flavor>() {
    let (a, b, layout, proxy) = alpha_proxy::<F>();
    let addr = proxy.addr();
    let servers = layout.dir().join("servers");
    let (staged, old) = (
        layout.dir().join("servers.new"),
        layout.dir().join("servers.old"),
    );
    std::fs::create_dir(&staged).expect("staging dir");
    std::fs::write(
        staged.join("beta.toml"),
        server_toml(&["beta.example.com"], &[b.addr()], ""),
    )
    .expect("staged file");
    std::fs::rename(&servers, &old).expect("move servers away");
    std::fs::rename(&staged, &servers).expect("swap in servers.new");
    eventually("the new directory is read", || {
        routed_to(addr, "beta.example.com") == Some(b.addr().port())
    });
    std::fs::remove_dir_all(&old).expect("delete servers.old");
    // The old directory's watch went when the new one was added, so its deletion says nothing (a stale
    // watch would report it as the live directory's, and the watch would have to be mended).
    std::thread::sleep(Duration::from_secs(1));
    let rewatched = format!("dir={}", servers.display());
    assert_eq!(
        captured_logs()
            .lines()
            .filter(|l| l.contains("server directory watched again") && l.contains(&rewatched))
            .count(),
        0,
        "[{}] the deleted old directory disturbed the watch",
        F::NAME
    );
    layout.write_server(
        "gamma",
        &server_toml(&["gamma.example.com"], &[a.addr()], ""),
    );
    eventually(
        "a file added after the old directory was deleted is read",
        || routed_to(addr, "gamma.example.com") == Some(a.addr().port()),
    );
    drop(proxy);
}

/// `rm -rf servers && mkdir servers && cp ...`: on ext4 the new directory often gets the old one's inode
/// number, so only the deletion itself says that the watch is gone.
#[cfg(unix)]
fn a_server_directory_deleted_and_made_again_is_watched<F: Flavor>() {
    let (a, b, layout, proxy) = alpha_proxy::<F>();
    let addr = proxy.addr();
    let servers = layout.dir().join("servers");
    let inode = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&servers).map(|m| m.ino()).ok()
    };
    let before = inode();
    std::fs::remove_dir_all(&servers).expect("rm -rf servers");
    std::fs::create_dir(&servers).expect("mkdir servers");
    if inode() != before {
        // Then the 5 s identity check finds it anyway, and this test cannot fail for the bug it guards.
        eprintln!(
            "[{}] note: the file system gave the new directory a new inode (the case this test is for \
             is its reuse, as ext4 does)",
            F::NAME
        );
    }
    layout.write_server("beta", &server_toml(&["beta.example.com"], &[b.addr()], ""));
    eventually("the remade directory is read", || {
        routed_to(addr, "beta.example.com") == Some(b.addr().port())
            && routed_to(addr, "alpha.example.com").is_none()
    });
    layout.write_server(
        "gamma",
        &server_toml(&["gamma.example.com"], &[a.addr()], ""),
    );
    eventually("a file added to the remade directory is read", || {
        routed_to(addr, "gamma.example.com") == Some(a.addr().port())
    });
    drop(proxy);
}

/// A Kubernetes ConfigMap volume: `alpha.toml` is a symlink into `..data/`, and an update points the
/// `..data` symlink at a new directory (no `*.toml` entry changes at all).
#[cfg(unix)]
fn a_configmap_update_is_picked_up<F: Flavor>() {
    use std::os::unix::fs::symlink;
    capture_logs();
    let (a, b) = (Backend::named(), Backend::named());
    let layout = Layout::new();
    let servers = layout.dir().join("servers");
    let version = |name: &str, backend: std::net::SocketAddr| {
        let dir = servers.join(name);
        std::fs::create_dir(&dir).expect("version dir");
        std::fs::write(
            dir.join("alpha.toml"),
            server_toml(&["alpha.example.com"], &[backend], ""),
        )
        .expect("versioned file");
    };
    version("..v1", a.addr());
    symlink("..v1", servers.join("..data")).expect("..data");
    symlink("..data/alpha.toml", servers.join("alpha.toml")).expect("alpha.toml link");
    let proxy = F::start(layout.load(), nethergate_core::Plugins::new()).expect("start");
    let addr = proxy.addr();
    assert_eq!(routed_to(addr, "alpha.example.com"), Some(a.addr().port()));

    version("..v2", b.addr());
    symlink("..v2", servers.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(servers.join("..data_tmp"), servers.join("..data")).expect("swap ..data");
    eventually("the ConfigMap update is read", || {
        routed_to(addr, "alpha.example.com") == Some(b.addr().port())
    });
    drop(proxy);
}

/// A server file that is a symlink to a file kept elsewhere (with the server itself): an edit there is
/// outside what inotify watches, and is noticed by the watch's periodic check of what links lead to;
/// so is a link repointed to another file, and one whose file is removed.
#[cfg(unix)]
fn an_edit_behind_a_linked_server_file_is_picked_up<F: Flavor>() {
    use std::os::unix::fs::symlink;
    capture_logs();
    let (a, b) = (Backend::named(), Backend::named());
    let layout = Layout::new();
    let elsewhere = layout.dir().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("a directory of its own");
    let (target, other) = (elsewhere.join("proxy.toml"), elsewhere.join("other.toml"));
    std::fs::write(
        &target,
        server_toml(&["alpha.example.com"], &[a.addr()], ""),
    )
    .expect("target");
    let link = layout.dir().join("servers").join("alpha.toml");
    symlink(&target, &link).expect("alpha.toml -> elsewhere/proxy.toml");
    let proxy = F::start(layout.load(), nethergate_core::Plugins::new()).expect("start");
    let addr = proxy.addr();
    assert_eq!(routed_to(addr, "alpha.example.com"), Some(a.addr().port()));
    // Edited in place, as `sed -i` on the link would not (it replaces the link with a file).
    std::fs::write(
        &target,
        server_toml(&["alpha.example.com"], &[b.addr()], ""),
    )
    .expect("edit");
    eventually("the edit behind the link is read", || {
        routed_to(addr, "alpha.example.com") == Some(b.addr().port())
    });
    std::fs::write(&other, server_toml(&["beta.example.com"], &[a.addr()], "")).expect("other");
    std::fs::remove_file(&target).expect("the target goes");
    let gone = format!(
        "a symbolic link to {}, which does not exist",
        target.display()
    );
    eventually("the link to nowhere is reported", || {
        captured_logs().contains(&gone)
    });
    assert_eq!(
        routed_to(addr, "alpha.example.com"),
        Some(b.addr().port()),
        "[{}] a broken file's server stays live",
        F::NAME
    );
    std::fs::remove_file(&link).expect("the link goes");
    symlink(&other, &link).expect("alpha.toml -> elsewhere/other.toml");
    eventually("the repointed link is read", || {
        routed_to(addr, "beta.example.com") == Some(a.addr().port())
            && routed_to(addr, "alpha.example.com").is_none()
    });
    drop(proxy);
}

/// `servers_dir` as a symlink that a deploy points at a new directory (blue/green): noticed by the
/// watch's periodic check of which directory the path names (inotify follows the old one).
#[cfg(unix)]
fn a_repointed_server_directory_symlink_is_followed<F: Flavor>() {
    use std::os::unix::fs::symlink;
    capture_logs();
    let (a, b) = (Backend::named(), Backend::named());
    let layout = Layout::new();
    let root = layout.dir();
    for (name, backend) in [("v1", a.addr()), ("v2", b.addr())] {
        std::fs::create_dir(root.join(name)).expect("version dir");
        std::fs::write(
            root.join(name).join("alpha.toml"),
            server_toml(&["alpha.example.com"], &[backend], ""),
        )
        .expect("server file");
    }
    std::fs::remove_dir(root.join("servers")).expect("empty servers dir");
    symlink("v1", root.join("servers")).expect("servers -> v1");
    let proxy = F::start(layout.load(), nethergate_core::Plugins::new()).expect("start");
    let addr = proxy.addr();
    assert_eq!(routed_to(addr, "alpha.example.com"), Some(a.addr().port()));
    symlink("v2", root.join("servers.next")).expect("servers.next -> v2");
    std::fs::rename(root.join("servers.next"), root.join("servers")).expect("repoint servers");
    eventually("the repointed directory is read", || {
        routed_to(addr, "alpha.example.com") == Some(b.addr().port())
    });
    // And the new directory is the one watched now.
    std::fs::write(
        root.join("v2").join("beta.toml"),
        server_toml(&["beta.example.com"], &[a.addr()], ""),
    )
    .expect("new file");
    eventually("a file added to the new directory is read", || {
        routed_to(addr, "beta.example.com") == Some(a.addr().port())
    });
    drop(proxy);
}

/// A server file added live whose address is the proxy's own (startup refuses that, a reload does not
/// look): the proxy recognises its own backend connection arriving as a client and refuses it, so the
/// player is told the server's `disconnect_message` instead of the proxy dialling itself until its
/// connections run out.
fn a_server_leading_back_to_the_proxy_is_refused_not_looped<F: Flavor>() {
    leading_back::<F>("127.0.0.1:0", "one");
}

/// The same with the proxy on every address, dual-stack: its own connection arrives with IPv4-mapped
/// addresses, and its local end is asked of the socket.
fn a_server_leading_back_to_a_proxy_on_every_address_is_refused<F: Flavor>() {
    leading_back::<F>("[::]:0", "every");
}

fn leading_back<F: Flavor>(bind: &str, tag: &str) {
    capture_logs();
    let a = Backend::named();
    let layout = Layout::new().bind(bind).server(
        "alpha",
        &server_toml(&["alpha.example.com"], &[a.addr()], ""),
    );
    let proxy = F::start(layout.load(), nethergate_core::Plugins::new()).expect("start");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], proxy.addr().port()));
    let extra = "disconnect_message = \"Loop!\"";
    // Named per runtime and bind: every such test logs into one capture at once.
    let name = format!("loop-{}-{tag}", F::NAME);
    layout.write_server(&name, &server_toml(&["loop.example.com"], &[addr], extra));
    // Refused as an unknown host until the reload, then told the looping server's message.
    let told = |host: &str| {
        let mut c = connect(addr);
        c.write_all(&login_bytes(host, "Steve")).ok()?;
        let (_, json) = read_json_packet(&mut c).ok()?;
        Some(json["text"].as_str()?.to_owned())
    };
    eventually("the looping server is loaded", || {
        told("loop.example.com").as_deref() == Some("Loop!")
    });
    let refusals = || {
        let quoted = format!("server={name:?}");
        captured_logs()
            .lines()
            .filter(|l| l.contains(LOOP_WARNING) && l.contains(&quoted))
            .count()
    };
    assert_eq!(
        refusals(),
        1,
        "[{}] one refusal for the first login",
        F::NAME
    );
    for attempt in 2..=4 {
        let what = format!("[{}] login {attempt}", F::NAME);
        assert_login_refused(addr, "loop.example.com", "Steve", "Loop!", &what);
        assert_eq!(
            refusals(),
            attempt,
            "{what}: one refusal per login, no chain"
        );
    }
    let loop_closes = captured_logs()
        .lines()
        .filter(|l| {
            l.contains("connection closed before forwarding")
                && l.contains(&format!("server={name:?}"))
                && l.contains("reason=Loop")
        })
        .count();
    assert_eq!(
        loop_closes,
        4,
        "[{}] each refusal ends reason=Loop",
        F::NAME
    );
    // A server-list ping gets the offline status, from the session that dialled the proxy.
    let mut c = connect(addr);
    c.write_all(&status_bytes("loop.example.com")).unwrap();
    let (id, status) = read_json_packet(&mut c).expect("a status answer");
    assert_eq!(
        (id, status["description"]["text"].as_str()),
        (0, Some("Loop!"))
    );
    assert_eq!(refusals(), 5, "[{}] the ping was refused once", F::NAME);
    drop(c);
    // With `send_proxy_protocol`, the proxy's own connection opens with a PROXY header, which no
    // handshake starts with: refused as garbage, but said as the loop it is.
    layout.write_server(
        &format!("{name}-pp"),
        &server_toml(
            &["loop-pp.example.com"],
            &[addr],
            "disconnect_message = \"Loop!\"\nsend_proxy_protocol = true",
        ),
    );
    eventually("the looping PROXY-header server is loaded", || {
        told("loop-pp.example.com").as_deref() == Some("Loop!")
    });
    let port = format!("listener_port={}", addr.port());
    assert!(
        wait_for_log(&[LOOP_WARNING, "proxy_header=true", &port], IO_TIMEOUT).is_some(),
        "[{}] the PROXY-header loop is named",
        F::NAME
    );
    // Its ping is told too; and so are those of a server whose rewritten host (`from_backend`: the
    // proxy's own IP, which no server claims) routes nowhere on the way back in: the dialling session
    // answers with its own server's message.
    layout.write_server(
        &format!("{name}-rw"),
        &server_toml(
            &["loop-rw.example.com"],
            &[addr],
            "disconnect_message = \"Loop!\"\ndomain_rewrite = \"from_backend\"",
        ),
    );
    eventually("the looping rewritten server is loaded", || {
        told("loop-rw.example.com").as_deref() == Some("Loop!")
    });
    for host in ["loop-pp.example.com", "loop-rw.example.com"] {
        let mut c = connect(addr);
        c.write_all(&status_bytes(host)).unwrap();
        let (id, status) = read_json_packet(&mut c).expect("a status answer");
        assert_eq!(
            (id, status["description"]["text"].as_str()),
            (0, Some("Loop!")),
            "[{}] {host}",
            F::NAME
        );
    }
    // The warning names the server whose address loops, not what the connection coming back routes to
    // (nothing, for the rewritten host; the PROXY header is refused before any routing).
    for looping in [format!("{name}-pp"), format!("{name}-rw")] {
        let named = format!("server={looping:?}");
        assert!(
            captured_logs()
                .lines()
                .any(|l| l.contains(LOOP_WARNING) && l.contains(&named)),
            "[{}] no loop warning names {looping}",
            F::NAME
        );
    }
    assert_eq!(routed_to(addr, "alpha.example.com"), Some(a.addr().port()));
    eventually("every session ended", || proxy.registry().is_empty());
    drop(proxy);
}

/// Each scenario above, once per runtime: `<name>::tokio` and `<name>::smol`.
macro_rules! on_both_runtimes {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => { $(
        mod $name {
            $(#[$attr])*
            #[test]
            fn tokio() { super::$name::<super::Tokio>() }
            $(#[$attr])*
            #[test]
            fn smol() { super::$name::<super::Smol>() }
        }
    )* };
}

on_both_runtimes!(
    every_reload_step_keeps_live_sessions,
    a_broken_file_is_reported_once,
    a_change_before_the_watch_begins_is_picked_up,
    a_replaced_server_directory_is_watched_again,
    the_watch_survives_deleting_the_replaced_directory,
    #[cfg(unix)]
    a_server_directory_deleted_and_made_again_is_watched,
    #[cfg(unix)]
    a_configmap_update_is_picked_up,
    #[cfg(unix)]
    a_repointed_server_directory_symlink_is_followed,
    #[cfg(unix)]
    an_edit_behind_a_linked_server_file_is_picked_up,
    a_server_leading_back_to_the_proxy_is_refused_not_looped,
    a_server_leading_back_to_a_proxy_on_every_address_is_refused,
);
