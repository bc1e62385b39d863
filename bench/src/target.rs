//! What is measured: the direct connection, or a proxy started as a child process for one measurement.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The proxies the tool knows by name, in the default order.
pub const BUILTIN: [&str; 5] = [
    "nethergate",
    "nethergate-zero-copy",
    "nethergate-smol",
    "reference",
    "haproxy",
];

/// Proxies the tool knows by name that only run when asked for with `--proxies`.
pub const OPTIONAL: [&str; 1] = ["splice-reference"];

/// Where HAProxy is expected (Debian package `haproxy`).
pub const HAPROXY: &str = "/usr/sbin/haproxy";

/// How long a proxy may take to accept connections after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How a target is reached.
#[derive(Debug, Clone)]
pub enum Kind {
    /// No proxy: clients connect to the backend itself.
    Direct,
    /// A nethergate binary with a generated configuration.
    Nethergate {
        /// The binary.
        binary: PathBuf,
        /// Whether the server file says `proxy_mode = "zero_copy"`.
        zero_copy: bool,
    },
    /// The copy_bidirectional proxy in this binary (`--serve-reference`).
    Reference,
    /// The blocking splice proxy in this binary (`--serve-splice-reference`).
    SpliceReference,
    /// HAProxy in TCP mode with a generated configuration.
    Haproxy {
        /// The binary.
        binary: PathBuf,
    },
    /// Any command; `{listen}` and `{backend}` are replaced by `ip:port`, `{listen_port}` by the port alone.
    Command {
        /// The command line, run with `sh -c "exec ..."`.
        template: String,
    },
}

/// A named target.
#[derive(Debug, Clone)]
pub struct Target {
    /// The name shown in reports.
    pub name: String,
    /// How it is reached.
    pub kind: Kind,
}

/// What every proxy start needs.
#[derive(Debug)]
pub struct Env {
    /// The backend's address.
    pub backend: SocketAddr,
    /// Where configurations and logs go.
    pub workdir: PathBuf,
    /// This binary, for `--serve-reference`.
    pub self_exe: PathBuf,
    /// The soft limit on open files that proxies inherit.
    pub file_limit: u64,
}

impl Target {
    /// The direct connection, the reference every figure is compared with.
    pub fn direct() -> Target {
        Target {
            name: "direct".into(),
            kind: Kind::Direct,
        }
    }

    /// A built-in proxy by name, with nethergate binaries looked up in `bin_dir`.
    pub fn builtin(name: &str, bin_dir: &Path) -> Result<Target, String> {
        let nethergate = |binary: &str, zero_copy: bool| {
            let binary = bin_dir.join(binary);
            if binary.is_file() {
                Ok(Kind::Nethergate { binary, zero_copy })
            } else {
                Err(format!(
                    "{} not found; build it with `cargo build --release -j2 -p nethergate-tokio -p nethergate-smol` \
                     or pass --bin-dir",
                    binary.display()
                ))
            }
        };
        let kind = match name {
            "nethergate" => nethergate("nethergate", false)?,
            "nethergate-zero-copy" => nethergate("nethergate", true)?,
            "nethergate-smol" => nethergate("nethergate-smol", false)?,
            "reference" => Kind::Reference,
            "splice-reference" => Kind::SpliceReference,
            "haproxy" if Path::new(HAPROXY).is_file() => Kind::Haproxy {
                binary: HAPROXY.into(),
            },
            "haproxy" => {
                return Err(format!(
                    "{HAPROXY} not found; install it with `apt-get install -y haproxy`"
                ))
            }
            other => {
                return Err(format!(
                    "unknown proxy {other:?}; known: {}, {}, or add one with --extra NAME=COMMAND",
                    BUILTIN.join(", "),
                    OPTIONAL.join(", ")
                ))
            }
        };
        Ok(Target {
            name: name.to_owned(),
            kind,
        })
    }

    /// An `--extra NAME=COMMAND` target.
    pub fn extra(spec: &str) -> Result<Target, String> {
        let (name, template) = spec
            .split_once('=')
            .filter(|(n, t)| !n.trim().is_empty() && !t.trim().is_empty())
            .ok_or_else(|| format!("--extra {spec:?}: expected NAME=COMMAND"))?;
        if !(template.contains("{listen}") || template.contains("{listen_port}"))
            || !template.contains("{backend}")
        {
            return Err(format!(
                "--extra {spec:?}: the command needs a {{listen}} (or {{listen_port}}) and a {{backend}} placeholder"
            ));
        }
        Ok(Target {
            name: name.trim().to_owned(),
            kind: Kind::Command {
                template: template.trim().to_owned(),
            },
        })
    }

    /// Whether this is the direct connection.
    pub fn is_direct(&self) -> bool {
        matches!(self.kind, Kind::Direct)
    }

    /// Starts the target (a no-op for the direct connection) and waits until it accepts connections.
    pub fn start(&self, env: &Env) -> io::Result<Running> {
        let listen = match self.kind {
            Kind::Direct => {
                return Ok(Running {
                    addr: env.backend,
                    process: None,
                })
            }
            _ => free_port()?,
        };
        let dir = env.workdir.join(&self.name);
        fs::create_dir_all(&dir)?;
        let mut command = match &self.kind {
            Kind::Direct => unreachable!("handled above"),
            Kind::Nethergate { binary, zero_copy } => {
                let config = write_nethergate_config(&dir, listen, env.backend, *zero_copy)?;
                let mut c = Command::new(binary);
                c.arg("--config").arg(config);
                c
            }
            Kind::Reference | Kind::SpliceReference => {
                let flag = match self.kind {
                    Kind::SpliceReference => "--serve-splice-reference",
                    _ => "--serve-reference",
                };
                let mut c = Command::new(&env.self_exe);
                c.arg(flag)
                    .arg(listen.to_string())
                    .arg("--backend")
                    .arg(env.backend.to_string());
                c
            }
            Kind::Haproxy { binary } => {
                let config = dir.join("haproxy.cfg");
                fs::write(&config, haproxy_config(listen, env.backend, env.file_limit))?;
                let mut c = Command::new(binary);
                c.arg("-db").arg("-f").arg(config);
                c
            }
            Kind::Command { template } => {
                let line = template
                    .replace("{listen_port}", &listen.port().to_string())
                    .replace("{listen}", &listen.to_string())
                    .replace("{backend}", &env.backend.to_string());
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!("exec {line}"));
                c
            }
        };
        let mut process = Process::spawn(&mut command, &dir.join("output.log"), true)?;
        process.wait_for_port(listen)?;
        Ok(Running {
            addr: listen,
            process: Some(process),
        })
    }
}

/// A started target.
#[derive(Debug)]
pub struct Running {
    /// Where clients connect.
    pub addr: SocketAddr,
    process: Option<Process>,
}

impl Running {
    /// The proxy's CPU time so far (whole process tree); `None` for the direct connection.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.process
            .as_ref()
            .map(|p| crate::procfs::cpu_time(p.pid()))
    }

    /// The proxy's resident memory in KiB (whole process tree); `None` for the direct connection.
    pub fn rss_kib(&self) -> Option<u64> {
        self.process
            .as_ref()
            .map(|p| crate::procfs::rss_kib(p.pid()))
    }

    /// The proxy's process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }
}

/// A child process that is killed, with its descendants, when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Spawns `command` with stdout and stderr to `log`; the child dies with this process. A proxy
    /// (`unpinned`) may run on every CPU even when the load generator is pinned.
    pub fn spawn(command: &mut Command, log: &Path, unpinned: bool) -> io::Result<Process> {
        let out = fs::File::create(log)?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child if we die first, so
        // an interrupted benchmark leaves no proxy behind.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if unpinned {
                    crate::procfs::set_affinity(&[])?;
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        Ok(Process {
            child,
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `addr` accepts a connection; fails with the end of the log if the process exits first.
    pub fn wait_for_port(&mut self, addr: SocketAddr) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "exited ({status}) before listening on {addr}; its output:\n{}",
                    self.log_tail()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "not listening on {addr} after {START_TIMEOUT:?}; its output:\n{}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Descendants first (a wrapper script's children), then the process itself.
        let tree = crate::procfs::tree(self.pid());
        for &pid in tree.iter().skip(1).rev() {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill has no memory-safety preconditions; the pid was a live descendant.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port nobody listens on right now.
pub fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn write_nethergate_config(
    dir: &Path,
    listen: SocketAddr,
    backend: SocketAddr,
    zero_copy: bool,
) -> io::Result<PathBuf> {
    let servers = dir.join("servers");
    fs::create_dir_all(&servers)?;
    let main = dir.join("nethergate.toml");
    fs::write(
        &main,
        format!("bind = \"{listen}\"\nservers_dir = \"servers\"\nmax_connections = 0\n"),
    )?;
    let mut server = format!(
        "domains = [\"{}\"]\naddresses = [\"{backend}\"]\n",
        crate::wire::HOST
    );
    if zero_copy {
        server.push_str("proxy_mode = \"zero_copy\"\n");
    }
    server.push_str("\n[timeouts]\nread = \"1h\"\n");
    fs::write(servers.join("bench.toml"), server)?;
    Ok(main)
}

/// Most connections HAProxy is configured for, when the file limit allows.
pub const HAPROXY_MAXCONN: u64 = 30_000;

/// HAProxy in plain TCP mode, one `listen` section, two threads, timeouts long enough for idle sessions.
///
/// HAProxy refuses to start when `maxconn` needs more descriptors (two per connection, plus a few) than
/// `file_limit`, and a hard limit cannot be raised here, so `maxconn` is capped to what fits.
pub fn haproxy_config(listen: SocketAddr, backend: SocketAddr, file_limit: u64) -> String {
    let maxconn = HAPROXY_MAXCONN
        .min(file_limit.saturating_sub(100) / 2)
        .max(1);
    let mut c = String::new();
    let _ = writeln!(c, "global\n    nbthread 2\n    maxconn {maxconn}\n");
    let _ = writeln!(
        c,
        "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n"
    );
    let _ = writeln!(
        c,
        "listen bench\n    bind {listen}\n    server backend {backend}"
    );
    c
}
