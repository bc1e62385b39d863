//! Runs the third-party Minecraft client/server suite (`tests/node`, node-minecraft-protocol) against both
//! binaries. Skipped, loudly, when Node.js is not installed.

use nethergate_e2e::{binary, workspace};
use std::process::Command;

fn node_available() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The suites start many clients and servers each; two at once on a small machine only measure contention.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_suite(name: &str, label: &str) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !node_available() {
        eprintln!("\n!!!!! SKIPPED: Node.js is not installed; the third-party Minecraft client/server suite (tests/node) did not run !!!!!\n");
        return;
    }
    let path = binary(name);
    let out = Command::new("node")
        .current_dir(workspace())
        .args(["tests/node/run.js", "--binary"])
        .arg(&path)
        .args(["--label", label, "--jobs", "3"])
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "node suite failed against {label}:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.ends_with(" 0 failed") && !l.starts_with("0 passed")),
        "node suite ran no scenario:\n{stdout}"
    );
}

#[test]
fn real_minecraft_clients_and_servers_through_tokio() {
    run_suite("nethergate", "tokio");
}

#[test]
fn real_minecraft_clients_and_servers_through_smol() {
    run_suite("nethergate-smol", "smol");
}
