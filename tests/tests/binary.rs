//! The binaries as an admin runs them: command line, config errors, logs, signals. Both runtimes.

use nethergate_e2e::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARIES: [&str; 2] = ["nethergate", "nethergate-smol"];

fn run(bin: &str, args: &[&str]) -> std::process::Output {
    Command::new(binary(bin))
        .args(args)
        .output()
        .expect("run binary")
}

/// `bin --check` on `layout`, which must pass; its standard output.
fn check_ok(bin: &str, layout: &Layout) -> String {
    let out = run(
        bin,
        &[
            "--config",
            layout.path().to_str().unwrap_or_default(),
            "--check",
        ],
    );
    assert!(out.status.success(), "{bin}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn check_accepts_the_bundled_example() {
    let example = workspace().join("examples/nethergate.toml");
    for bin in BINARIES {
        let out = run(
            bin,
            &["--config", example.to_str().unwrap_or_default(), "--check"],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{bin}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("configuration OK")
                && stdout.contains("lobby")
                && stdout.contains("survival")
                && stdout.contains("PROXY protocol v2")
                && stdout.contains("max_players 100, host sent to the backend: \"127.0.0.1\"")
                && stdout.contains("timeouts connect 5s / read 30s / write 30s")
                && stdout
                    .contains("handshake_timeout 5s, max_connections 5000, shutdown_timeout 30s")
                && stdout.contains("disconnect_message \"The lobby is restarting."),
            "{stdout}"
        );
    }
}

#[test]
fn check_reports_an_open_file_limit_too_low_for_max_connections() {
    let layout = Layout::new().main("max_connections = 500");
    for (hard, warned) in [(256u64, true), (8_192, false)] {
        for bin in BINARIES {
            let mut cmd = Command::new(binary(bin));
            cmd.arg("--config").arg(layout.path()).arg("--check");
            limit_open_files(&mut cmd, 64, hard);
            let out = cmd.output().expect("run binary");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let allowed = (hard - 32) / 2;
            assert!(
                out.status.success()
                    && stdout.contains(&format!(
                        "open files: {hard} once started (the hard limit), about {allowed} connections"
                    )),
                "{bin} hard {hard}: {out:?}"
            );
            assert_eq!(
                stdout.contains("warning: max_connections is 500"),
                warned,
                "{bin} hard {hard}: {stdout}"
            );
        }
    }
}

/// A time limit so short it would close innocent players is valid but warned about: by `--check`, at
/// startup, and on a reload for the server file that brings it (a file left unchanged is not warned
/// about again).
#[test]
fn implausibly_short_limits_are_warned_about_at_check_startup_and_reload() {
    for bin in BINARIES {
        let a = Backend::echo();
        let layout = Layout::new().main("handshake_timeout = \"1ms\"").server(
            "a",
            &server_toml(&["a.example.com"], &[a.addr()], "[timeouts]\nread = \"2s\""),
        );
        // Another proxy's server file, there from the start.
        std::fs::write(
            layout.dir().join("servers/old.yaml"),
            "domain: a.example.com\n",
        )
        .unwrap();
        let main_file = layout.path().display().to_string();
        let a_file = layout.dir().join("servers/a.toml").display().to_string();
        let stdout = check_ok(bin, &layout);
        assert!(
            stdout.contains("old.yaml: not read: server files are `*.toml`"),
            "{bin}: {stdout}"
        );
        for (file, key, value) in [
            (&main_file, "handshake_timeout", "1ms"),
            (&a_file, "timeouts.read", "2s"),
        ] {
            assert!(
                stdout.contains(&format!("warning: {file}: `{key}`: {value} is very short")),
                "{bin}: {key} not warned about: {stdout}"
            );
        }
        assert_eq!(
            stdout.matches("is very short").count(),
            2,
            "{bin}: {stdout}"
        );

        let ((_child, _, rx), startup) = spawn_with_startup(bin, &layout, &[]);
        for key in ["key=handshake_timeout", "key=timeouts.read"] {
            assert!(
                startup
                    .iter()
                    .any(|l| l.contains("setting looks wrong") && l.contains(key)),
                "{bin}: no startup warning for {key}: {startup:?}"
            );
        }
        assert!(
            startup
                .iter()
                .any(|l| l.contains("file not read") && l.contains("old.yaml")),
            "{bin}: no startup warning for old.yaml: {startup:?}"
        );

        // A new file with a short limit is warned about when it is loaded; `a`, unchanged, is not again.
        // Nor is `old.yaml`; a new foreign file is.
        std::fs::write(layout.dir().join("servers/new.json"), "{}").unwrap();
        layout.write_server(
            "b",
            &server_toml(
                &["b.example.com"],
                &[a.addr()],
                "[timeouts]\nconnect = \"10ms\"",
            ),
        );
        let mut reload = Vec::new();
        while !reload
            .last()
            .is_some_and(|l: &String| l.contains("configuration reloaded"))
        {
            match rx.recv_timeout(IO_TIMEOUT) {
                Ok(line) => reload.push(line),
                Err(_) => panic!("{bin}: no reload: {reload:?}"),
            }
        }
        let warned: Vec<&String> = reload
            .iter()
            .filter(|l| l.contains("setting looks wrong"))
            .collect();
        assert!(
            warned.len() == 1
                && warned[0].contains("key=timeouts.connect")
                && warned[0].contains("b.toml"),
            "{bin}: {reload:?}"
        );
        let not_read: Vec<&String> = reload
            .iter()
            .filter(|l| l.contains("file not read"))
            .collect();
        assert!(
            not_read.len() == 1 && not_read[0].contains("new.json"),
            "{bin}: {reload:?}"
        );
    }
}

/// Kills and reaps a child when dropped, also when an assertion fails: a child left running keeps the
/// test's output pipe open.
struct KillOnDrop(Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of `key=` in the systemd unit `unit` (the first such line).
fn unit_value<'u>(unit: &'u str, key: &str) -> Option<&'u str> {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

#[test]
fn the_systemd_example_runs_the_binary_as_it_is_documented() {
    let unit = std::fs::read_to_string(workspace().join("examples/systemd/nethergate.service"))
        .expect("examples/systemd/nethergate.service");
    let example = workspace().join("examples/nethergate.toml");
    let example = example.to_str().unwrap_or_default();
    // Both commands take flags the binary accepts: run them on the bundled example, with `--check` so
    // that the service command validates instead of serving.
    for key in ["ExecStartPre", "ExecStart"] {
        let command = unit_value(&unit, key).unwrap_or_else(|| panic!("{key}= in the unit"));
        let mut words = command.split_whitespace();
        assert_eq!(words.next(), Some("/usr/local/bin/nethergate"), "{key}");
        let mut args: Vec<&str> = words
            .map(|w| {
                if w == "/etc/nethergate/nethergate.toml" {
                    example
                } else {
                    w
                }
            })
            .collect();
        if !args.contains(&"--check") {
            args.push("--check");
        }
        let out = run("nethergate", &args);
        assert!(
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains("configuration OK"),
            "{key}={command}: {out:?}"
        );
    }
    // systemd must not kill the proxy before its graceful shutdown is over.
    let stop = unit_value(&unit, "TimeoutStopSec").and_then(|v| humantime::parse_duration(v).ok());
    let shutdown = nethergate_core::Config::load(std::path::Path::new(example))
        .map(|c| c.main.shutdown_timeout)
        .ok();
    assert!(
        stop.zip(shutdown)
            .is_some_and(|(stop, shutdown)| stop > shutdown),
        "TimeoutStopSec {stop:?} must exceed shutdown_timeout {shutdown:?}"
    );
    assert_eq!(
        unit_value(&unit, "ExecReload"),
        Some("/bin/kill -HUP $MAINPID")
    );
    assert_eq!(unit_value(&unit, "KillSignal"), Some("SIGTERM"));
    // The binary says READY=1 (a_service_manager_is_told_ready_and_stopping).
    assert_eq!(unit_value(&unit, "Type"), Some("notify"));
}

#[test]
fn invalid_config_lists_every_problem_and_exits_2() {
    let layout = Layout::new()
        .server("one", "domains = [\"mc.example.com\"]\naddresses = [\"nowhere\"]\n[timeouts]\nconnect = \"5 parsecs\"\n")
        .server("two", "addresses = [\"127.0.0.1:1\"]\nnetwork = \"x\"\n")
        .server("three", "domains = [\"a.example.com\"]\naddresses = [\"127.0.0.1:1\"]\nmax_player = 3\n")
        .server("four", "domains = [\"b.example.com\"\naddresses = 5\n")
        .server("five", "domains = [\"c.example.com\"]\naddresses = [\"[::1]\"]\n")
        // A broken file (one) does not hide the domain it shares with a good one.
        .server("six", "domains = [\"MC.example.com\"]\naddresses = [\"127.0.0.1:1\"]\n")
        // A problem of the main file does not hide those of the server files.
        .main("handshake_timeout = \"abc\"");
    let path = layout.path();
    for bin in BINARIES {
        for args in [
            vec!["--config", path.to_str().unwrap_or_default(), "--check"],
            vec!["--config", path.to_str().unwrap_or_default()],
        ] {
            let out = run(bin, &args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{bin} {args:?}: {stderr}");
            for needle in [
                "one.toml: `addresses`",
                "one.toml: `timeouts.connect`: invalid duration \"5 parsecs\"",
                "two.toml: `domains`: at least one domain is required",
                "two.toml: `network`: forwarding modes cannot belong to a network",
                "three.toml: `max_player`",
                // A syntax error names the key whose value is open, not the line the parser stopped at.
                "four.toml: `domains`: syntax error at line 2, column 1: invalid array: expected `]`",
                "five.toml: `addresses`: \"[::1]\" is not [IPv6]:port (the port is missing",
                "nethergate.toml: `handshake_timeout`: invalid duration \"abc\"",
                "six.toml: `domains`: domain \"mc.example.com\" is claimed by both",
                "invalid configuration (9 problem(s))",
            ] {
                assert!(
                    stderr.contains(needle),
                    "{bin}: missing {needle:?} in\n{stderr}"
                );
            }
        }
    }
}

#[test]
fn missing_main_file_is_a_clear_error() {
    for bin in BINARIES {
        let out = run(bin, &["--config", "/nonexistent/nethergate.toml"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the main config file"));
    }
}

#[test]
fn version_and_help() {
    for bin in BINARIES {
        let v = run(bin, &["--version"]);
        let version = String::from_utf8_lossy(&v.stdout);
        assert!(v.status.success(), "{bin}: {v:?}");
        assert_eq!(
            version.trim(),
            format!("{bin} {}", env!("CARGO_PKG_VERSION")),
            "the binary's own name and version"
        );
        let h = run(bin, &["--help"]);
        let text = String::from_utf8_lossy(&h.stdout);
        assert!(
            h.status.success()
                && text.contains("--config")
                && text.contains("--check")
                && text.contains("--log-format")
        );
    }
}

/// A second proxy on a port already served (by either binary) refuses to start, naming the address;
/// it never shares the port with the first (both set `SO_REUSEPORT` on Linux).
#[test]
fn a_port_in_use_is_refused_with_its_address() {
    let a = Backend::echo();
    for first in BINARIES {
        let layout = Layout::new().server("a", &server_toml(&["a.example.com"], &[a.addr()], ""));
        let (mut child, addr, _rx) = spawn(first, &layout, &[]);
        let second = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(second.path().join("servers")).expect("servers dir");
        std::fs::write(
            second.path().join("servers/a.toml"),
            server_toml(&["a.example.com"], &[a.addr()], ""),
        )
        .expect("server file");
        let main = second.path().join("nethergate.toml");
        std::fs::write(
            &main,
            format!("bind = \"{addr}\"\nservers_dir = \"servers\"\n"),
        )
        .expect("main file");
        for bin in BINARIES {
            let out = run(bin, &["--config", main.to_str().unwrap_or_default()]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{bin} after {first}: {stderr}");
            assert!(
                stderr.contains(&format!("{bin}: cannot listen on {addr}: ")),
                "{bin} after {first}: {stderr}"
            );
        }
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
    }
}

/// A started binary: the child, the address it listens on (read from its log), and its later log lines.
type Started = (
    KillOnDrop,
    std::net::SocketAddr,
    std::sync::mpsc::Receiver<String>,
);

/// Starts a binary on `layout`.
fn spawn(bin: &str, layout: &Layout, extra: &[&str]) -> Started {
    spawn_with_startup(bin, layout, extra).0
}

/// [`spawn`], also returning the lines logged before the listening line.
// The child is killed and reaped when its guard drops; a panic before that ends the test process.
#[allow(clippy::zombie_processes)]
fn spawn_with_startup(bin: &str, layout: &Layout, extra: &[&str]) -> (Started, Vec<String>) {
    spawn_logging(bin, layout, extra, "info")
}

/// Starts `bin` on `layout` with `rust_log` as `RUST_LOG`; its standard output comes line by line.
#[allow(clippy::zombie_processes)]
fn start_reading(
    bin: &str,
    layout: &Layout,
    extra: &[&str],
    rust_log: &str,
) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(binary(bin))
        .arg("--config")
        .arg(layout.path())
        .args(extra)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// [`spawn_with_startup`] with `rust_log` as `RUST_LOG`.
#[allow(clippy::zombie_processes)]
fn spawn_logging(
    bin: &str,
    layout: &Layout,
    extra: &[&str],
    rust_log: &str,
) -> (Started, Vec<String>) {
    let (child, rx) = start_reading(bin, layout, extra, rust_log);
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut startup = Vec::new();
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("listening line");
        if line.contains("listening") {
            let addr = line
                .split([' ', '"', ','])
                .filter_map(|w| w.strip_prefix("bind=").or(Some(w)))
                .find_map(|w| w.parse().ok())
                .expect("bind address in the listening line");
            return ((KillOnDrop(child), addr, rx), startup);
        }
        startup.push(line);
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Sends SIGTERM to `child` and waits up to 15 s for it to exit.
fn terminated(child: &mut Child, bin: &str) -> std::process::ExitStatus {
    signal(child, libc::SIGTERM);
    exited(child, bin)
}

/// Waits up to 15 s for `child` to exit.
fn exited(child: &mut Child, bin: &str) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "{bin} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_line(rx: &std::sync::mpsc::Receiver<String>, needles: &[&str]) -> String {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no log line with {needles:?}"));
        if needles.iter().all(|n| line.contains(n)) {
            return line;
        }
    }
}

#[test]
fn json_logs_sighup_reload_and_sigterm_exit_zero() {
    for bin in BINARIES {
        let a = Backend::echo();
        let layout = Layout::new()
            .main("shutdown_timeout = \"10s\"")
            .server("a", &server_toml(&["a.example.com"], &[a.addr()], ""));
        let (mut child, addr, rx) = spawn(bin, &layout, &["--log-format", "json"]);

        // A session, and its end line as JSON with the fields admins query.
        let mut c = connect(addr);
        c.write_all(&login_bytes("a.example.com", "Steve")).unwrap();
        let mut back = vec![0u8; login_bytes("a.example.com", "Steve").len()];
        c.read_exact(&mut back).unwrap();
        drop(c);
        let line = wait_line(&rx, &["session ended"]);
        let json: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{bin}: not JSON ({e}): {line}"));
        assert_eq!(json["fields"]["reason"], "ClientClosed", "{line}");
        assert_eq!(json["fields"]["player"], "Steve");
        assert_eq!(json["fields"]["c2b"], back.len() as u64);

        // A refusal names the host as the plain string the client sent (no extra quotes in JSON).
        let mut c = connect(addr);
        c.write_all(&login_bytes("Nope.Example.com", "Steve"))
            .unwrap();
        let line = wait_line(&rx, &["connection closed before forwarding", "UnknownHost"]);
        drop(c);
        let json: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{bin}: not JSON ({e}): {line}"));
        assert_eq!(json["fields"]["host"], "Nope.Example.com", "{line}");
        assert_eq!(json["fields"]["player"], "Steve", "{line}");

        // SIGHUP reloads (the watch may have reloaded already; either way the new server routes).
        layout.write_server("b", &server_toml(&["b.example.com"], &[a.addr()], ""));
        signal(&child, libc::SIGHUP);
        let login_b = login_bytes("b.example.com", "Alex");
        assert!(
            wait_until(IO_TIMEOUT, || {
                let mut c = connect(addr);
                let mut echo = vec![0u8; login_b.len()];
                c.write_all(&login_b).is_ok() && c.read_exact(&mut echo).is_ok() && echo == login_b
            }),
            "{bin}: b routed after reload"
        );

        // The main file is read at startup only: SIGHUP says what did not take effect, or why the file
        // would not start.
        let main_file = layout.dir().join("nethergate.toml");
        let text = std::fs::read_to_string(&main_file).expect("main file");
        std::fs::write(&main_file, format!("{text}max_connections = 7\n")).expect("main file");
        signal(&child, libc::SIGHUP);
        wait_line(&rx, &["main file changed", "restart", "max_connections"]);
        std::fs::write(&main_file, format!("{text}bind = 5\n")).expect("main file");
        signal(&child, libc::SIGHUP);
        wait_line(&rx, &["main file invalid", "bind"]);
        // A servers_dir naming a directory that is not there would not start either.
        let elsewhere = text.replace("servers_dir = \"servers\"", "servers_dir = \"nope\"");
        assert_ne!(elsewhere, text, "the layout's servers_dir line");
        std::fs::write(&main_file, elsewhere).expect("main file");
        signal(&child, libc::SIGHUP);
        let line = wait_line(
            &rx,
            &[
                "main file invalid",
                "servers_dir",
                "cannot read the directory",
            ],
        );
        assert!(line.contains("nope"), "{bin}: {line}");
        wait_line(&rx, &["main file changed", "restart", "servers_dir"]);
        // One whose server file is broken: said as that file's problem, not the main file's.
        let other = layout.dir().join("other");
        std::fs::create_dir(&other).expect("other servers_dir");
        std::fs::write(
            other.join("bad.toml"),
            "domains = [\"c.example.com\"]\nmax_players = \"20\"\n",
        )
        .expect("broken server file");
        let broken = text.replace("servers_dir = \"servers\"", "servers_dir = \"other\"");
        std::fs::write(&main_file, broken).expect("main file");
        signal(&child, libc::SIGHUP);
        let line = wait_line(&rx, &["new servers_dir invalid", "bad.toml", "max_players"]);
        assert!(!line.contains("main file invalid"), "{bin}: {line}");
        // Put back as it runs: said to be valid again, once.
        std::fs::write(&main_file, &text).expect("main file");
        signal(&child, libc::SIGHUP);
        wait_line(
            &rx,
            &["main file valid again", "matches the running settings"],
        );

        // SIGTERM: graceful, exit code 0.
        let status = terminated(&mut child, bin);
        assert!(status.success(), "{bin}: {status:?}");
    }
}

/// Names of the threads of process `pid` that run sessions (tokio workers, smol executor threads).
fn session_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                // comm is cut at 15 bytes: "nethergate-work", "nethergate-smol"; other threads
                // ("nethergate-watch", "nethergate-docker", "signals") run no sessions.
                .filter(|name| {
                    name.starts_with("nethergate-wor") || name.starts_with("nethergate-smo")
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn threads_flag_sets_the_session_threads_and_rejects_zero_and_too_many() {
    for bin in BINARIES {
        let a = Backend::echo();
        let layout = Layout::new().server("a", &server_toml(&["a.example.com"], &[a.addr()], ""));
        for n in [1usize, 3] {
            let (mut child, addr, _rx) = spawn(bin, &layout, &["--threads", &n.to_string()]);
            let mut c = connect(addr);
            let login = login_bytes("a.example.com", "Steve");
            c.write_all(&login).unwrap();
            let mut back = vec![0u8; login.len()];
            c.read_exact(&mut back).unwrap();
            assert_eq!(back, login, "{bin} --threads {n}: forwards");
            // tokio names its n workers "nethergate-worker"; smol runs the executor on its main thread
            // (named after the binary, "nethergate-smol") and n - 1 threads "nethergate-smol-<i>".
            // A thread just started carries its parent's name until it names itself (async-io's, the
            // blocking pool's, the watcher's): a count above n that settles is such a thread, not a session
            // thread, so the count is read until it settles.
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut threads = session_threads(child.id());
            while threads != n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                threads = session_threads(child.id());
            }
            assert_eq!(threads, n, "{bin} --threads {n}");
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let zero = run(
            bin,
            &[
                "--config",
                layout.path().to_str().unwrap_or_default(),
                "--threads",
                "0",
            ],
        );
        assert_eq!(
            zero.status.code(),
            Some(2),
            "{bin}: --threads 0 is a usage error"
        );
        let said = String::from_utf8_lossy(&zero.stderr);
        assert!(said.contains("must be at least 1"), "{bin}: {said}");
        // Too many is a usage error too, alike for both (smol's pool panicked on the largest).
        for many in ["1025", "18446744073709551615"] {
            let config = layout.path().display().to_string();
            let out = run(bin, &["--config", &config, "--threads", many]);
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.code() == Some(2) && said.contains("more than 1024 threads"),
                "{bin} --threads {many}: {out:?}"
            );
        }
    }
}

#[test]
fn a_log_reader_that_stops_reading_stalls_no_player_and_loses_no_line() {
    for bin in BINARIES {
        let a = Backend::echo();
        let layout = Layout::new().server("a", &server_toml(&["a.example.com"], &[a.addr()], ""));
        let mut child = Command::new(binary(bin))
            .arg("--config")
            .arg(layout.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let mut log = BufReader::new(child.stdout.take().expect("stdout"));
        // A watchdog: if the proxy stalls, killing it ends every read below with EOF (a failure).
        let pid = child.id() as libc::pid_t;
        let (done, watchdog) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if watchdog.recv_timeout(Duration::from_secs(60)).is_err() {
                // SAFETY: kill(2) on the test's own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        let mut line = String::new();
        let addr: std::net::SocketAddr = loop {
            line.clear();
            assert!(
                log.read_line(&mut line).expect("log") > 0,
                "{bin}: no listening line"
            );
            if line.contains("listening") {
                break line
                    .split([' ', '"', ','])
                    .filter_map(|w| w.strip_prefix("bind=").or(Some(w)))
                    .find_map(|w| w.parse().ok())
                    .expect("bind address in the listening line");
            }
        };
        // Nobody reads the log now: its pipe (64 KiB) fills after a few hundred session-end lines.
        // Every session must still be served in time.
        let login = login_bytes("a.example.com", "Steve");
        let serve = |sessions: usize| {
            for i in 0..sessions {
                let mut c = connect(addr);
                c.write_all(&login).unwrap();
                let mut back = vec![0u8; login.len()];
                c.read_exact(&mut back)
                    .unwrap_or_else(|e| panic!("{bin}: session {i} stalled behind the log: {e}"));
            }
        };
        let sessions = 1_500;
        serve(sessions);
        // Reading again, every line is there (1,500 lines are well under what may wait).
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut ended = 0;
        while ended < sessions {
            assert!(
                Instant::now() < deadline,
                "{bin}: {ended} of {sessions} lines"
            );
            line.clear();
            assert!(
                log.read_line(&mut line).expect("log") > 0,
                "{bin}: log closed"
            );
            assert!(!line.contains("dropped"), "{bin}: {line}");
            ended += usize::from(line.contains("session ended"));
        }

        // Unread again, for more lines than may wait (1 MiB): the proxy drops lines and keeps serving.
        // Stopped while the output is still stuck, it writes what waits and the warning with the count as
        // soon as the output moves, then exits.
        let sessions = 6_000;
        serve(sessions);
        signal(&child, libc::SIGTERM);
        let mut rest = String::new();
        log.read_to_string(&mut rest).expect("log");
        let ended = rest.matches("session ended").count();
        let dropped: usize = rest
            .lines()
            .find(|l| l.contains("log output fell behind"))
            .and_then(|l| l.split("dropped=").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{bin}: no dropped-lines warning after {ended} lines"));
        assert!(
            ended < sessions && ended + dropped >= sessions,
            "{bin}: {ended} lines written, {dropped} dropped, of {sessions}"
        );
        let _ = done.send(());
        assert!(child.wait().expect("wait").success(), "{bin}: exit status");
    }
}

/// No servers at all is warned about, by `--check` and at startup; with Docker discovery it is a setup of
/// its own (the servers come from containers), and neither warns.
#[test]
fn no_servers_is_warned_about_unless_docker_brings_them() {
    let socket = tempfile::tempdir().expect("temp dir");
    let endpoint = format!("unix://{}", socket.path().join("docker.sock").display());
    let plain = Layout::new();
    let docker = Layout::new().main(&format!("[docker]\nendpoint = {endpoint:?}"));
    for bin in BINARIES {
        for (layout, warned) in [(&plain, true), (&docker, false)] {
            let stdout = check_ok(bin, layout);
            assert_eq!(
                stdout.contains("warning: no server files"),
                warned,
                "{bin} --check: {stdout}"
            );
            let ((_child, _, rx), mut startup) = spawn_with_startup(bin, layout, &[]);
            // The warning comes right after the listening line: read what comes for 2 s (all of it,
            // when none is expected), or until it is there.
            let until = Instant::now() + Duration::from_secs(2);
            while !startup.iter().any(|l| l.contains("no servers configured")) {
                let left = until.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) => startup.push(line),
                    Err(_) => break,
                }
            }
            assert_eq!(
                startup.iter().any(|l| l.contains("no servers configured")),
                warned,
                "{bin} startup: {startup:#?}"
            );
        }
    }
}

/// An invalid `RUST_LOG` is said, not silently replaced by the default filter; a valid one is used.
#[test]
fn an_invalid_rust_log_is_warned_about() {
    for bin in BINARIES {
        let layout =
            Layout::new().server("a", &server_toml(&["a.example.com"], &[refused_addr()], ""));
        let (_proxy, startup) = spawn_logging(bin, &layout, &[], "warn,nethergate=bogus");
        let warned = startup
            .iter()
            .find(|l| l.contains("RUST_LOG is invalid and was ignored"))
            .unwrap_or_else(|| panic!("[{bin}] no warning in {startup:?}"));
        assert!(warned.contains("bogus"), "[{bin}] {warned}");
        // An empty one is no filter at all (which would log nothing): the default, without a warning.
        let (_proxy, startup) = spawn_logging(bin, &layout, &[], "");
        assert!(
            !startup.iter().any(|l| l.contains("RUST_LOG")),
            "[{bin}] {startup:?}"
        );
        // A valid filter is used as given, without the warning (the listening line is let through).
        let (_proxy, startup) =
            spawn_logging(bin, &layout, &[], "warn,nethergate_driver::proxy=info");
        assert!(
            !startup.iter().any(|l| l.contains("RUST_LOG")),
            "[{bin}] {startup:?}"
        );
    }
}

/// `--check` whose output cannot be written (a full disk; `--check | head -1` closes the pipe the same
/// way) still exits with its outcome, 0 or 2, instead of a panic (101).
#[test]
fn check_output_that_cannot_be_written_is_no_panic() {
    let good = Layout::new().server("a", &server_toml(&["a.example.com"], &[refused_addr()], ""));
    let bad = Layout::new().server("a", "domains = []");
    for bin in BINARIES {
        for (layout, code, stream) in [(&good, 0, "stdout"), (&bad, 2, "stderr")] {
            let full = || std::fs::File::create("/dev/full").expect("/dev/full");
            let mut cmd = Command::new(binary(bin));
            cmd.arg("--config").arg(layout.path()).arg("--check");
            if stream == "stdout" {
                cmd.stdout(full()).stderr(Stdio::piped());
            } else {
                cmd.stderr(full()).stdout(Stdio::piped());
            }
            let out = cmd.output().expect("run binary");
            let said = String::from_utf8_lossy(if stream == "stdout" {
                &out.stderr
            } else {
                &out.stdout
            })
            .into_owned();
            assert_eq!(
                out.status.code(),
                Some(code),
                "[{bin}] {stream} full: {said}"
            );
            assert!(!said.contains("panicked"), "[{bin}] {said}");
        }
    }
}

/// A SIGHUP while the proxy is still loading its files (`systemctl reload` right after `start`) is a
/// reload once it runs, not the end of the process (SIGHUP's default action).
#[cfg(unix)]
#[test]
fn a_sighup_during_startup_is_a_reload_not_the_end() {
    // Enough server files that loading them takes a while (about 0.2 s in a debug build).
    let mut layout = Layout::new();
    for i in 0..3000 {
        layout = layout.server(
            &format!("s{i}"),
            &server_toml(&[&format!("s{i}.example.com")], &[refused_addr()], ""),
        );
    }
    for bin in BINARIES {
        // An invalid RUST_LOG is warned about before the files are read: the moment to send it.
        let (child, rx) = start_reading(bin, &layout, &[], "info,nethergate=bogus");
        let mut child = KillOnDrop(child);
        wait_line(&rx, &["RUST_LOG is invalid"]);
        signal(&child, libc::SIGHUP);
        let t = Instant::now();
        // Both, in either order (the reload may run before the listener's line is logged).
        let (mut listening, mut reloaded) = (false, false);
        while !(listening && reloaded) {
            let line = rx.recv_timeout(IO_TIMEOUT.saturating_sub(t.elapsed()));
            let Ok(line) = line else {
                panic!(
                    "[{bin}] listening {listening}, reloaded {reloaded}: {:?}",
                    child.try_wait()
                );
            };
            listening |= line.contains("listening");
            reloaded |= line.contains("SIGHUP: reloading server files");
        }
        let status = terminated(&mut child, bin);
        assert!(status.success(), "[{bin}] {status:?}");
    }
}

/// Whoever writes a server file chooses its keys and its name: a newline or an escape sequence in them is
/// escaped in `--check`'s report and in the log, so it cannot start a line of its own.
#[test]
fn a_server_file_cannot_forge_a_line_of_output() {
    let forged = "\nFORGED INFO nethergate_core::registry: session ended reason=ClientClosed";
    let evil =
        format!("domains = [\"e.example.com\"]\naddresses = [\"127.0.0.1:1\"]\n{forged:?} = 1\n");
    let starts_a_line = |text: &str| text.lines().any(|l| l.starts_with("FORGED"));
    for bin in BINARIES {
        let layout = Layout::new().server("evil", &evil);
        let out = run(
            bin,
            &[
                "--config",
                layout.path().to_str().unwrap_or_default(),
                "--check",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(2) && stderr.contains("\\nFORGED") && !starts_a_line(&stderr),
            "[{bin}] {stderr}"
        );
        // A file added live is reported in the log the same way.
        let layout =
            Layout::new().server("a", &server_toml(&["a.example.com"], &[refused_addr()], ""));
        let (_child, _, rx) = spawn(bin, &layout, &[]);
        layout.write_server("evil", &evil);
        let line = wait_line(&rx, &["server file invalid", "evil.toml"]);
        assert!(line.contains("\\nFORGED"), "[{bin}] {line}");
        let later: Vec<String> = rx.try_iter().collect();
        assert!(!starts_a_line(&later.join("\n")), "[{bin}] {later:?}");
    }
}

/// Under a `Type=notify` systemd unit (the bundled one), the proxy says `READY=1` once it is bound, so
/// `systemctl start` returns (and `systemctl reload` is sent) only when players can connect and SIGHUP is
/// taken; and `STOPPING=1` when a shutdown starts.
#[test]
fn a_service_manager_is_told_ready_and_stopping() {
    for bin in BINARIES {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let manager = std::os::unix::net::UnixDatagram::bind(&path).expect("notify socket");
        manager.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let layout =
            Layout::new().server("a", &server_toml(&["a.example.com"], &[refused_addr()], ""));
        let mut child = Command::new(binary(bin))
            .arg("--config")
            .arg(layout.path())
            .env("NOTIFY_SOCKET", &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut buf = [0u8; 256];
        let n = manager.recv(&mut buf).expect("READY=1 within the limit");
        assert_eq!(&buf[..n], b"READY=1\n", "[{bin}]");
        // Ready means it takes a SIGHUP: one now is a reload, not the default action that ends it.
        signal(&child, libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            child.try_wait().expect("wait").is_none(),
            "[{bin}] died of a SIGHUP after READY"
        );
        signal(&child, libc::SIGTERM);
        let n = manager.recv(&mut buf).expect("STOPPING=1 within the limit");
        assert_eq!(&buf[..n], b"STOPPING=1\n", "[{bin}]");
        let status = exited(&mut child, bin);
        assert!(status.success(), "[{bin}] {status:?}");
    }
}
