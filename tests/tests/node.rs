//! Runs the third-party Minecraft client/server suite (`tests/node`, node-minecraft-protocol) against both
//! binaries. Skipped, loudly, when Node.js is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The directory cargo puts binaries of this profile in (…/target/debug), from this test's own path
/// (…/target/debug/deps/node-<hash>).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

fn node_available() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Builds the binaries the suite runs (a no-op when they are up to date), with the same profile.
fn build_binaries() {
    let release = bin_dir().ends_with("release");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace())
        .args(["build", "--bin", "nethergate", "--bin", "nethergate-smol"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "building the binaries failed");
}

/// The suites start many clients and servers each; two at once on a small machine only measure contention.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_suite(binary: &str, label: &str) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !node_available() {
        eprintln!("\n!!!!! SKIPPED: Node.js is not installed; the third-party Minecraft client/server suite (tests/node) did not run !!!!!\n");
        return;
    }
    build_binaries();
    let path = bin_dir().join(binary);
    assert!(path.exists(), "{} missing", path.display());
    let out = Command::new("node")
        .current_dir(workspace())
        .args(["tests/node/run.js", "--binary"])
        .arg(&path)
        .args(["--label", label])
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
