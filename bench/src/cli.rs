//! The command line, and the run it describes.

use crate::procfs::{self, Machine};
use crate::report::{self, Case, Report, Section};
use crate::scenario::bulk::{self, BulkConfig};
use crate::scenario::game::{self, GameConfig};
use crate::scenario::idle::{self, IdleConfig};
use crate::scenario::setup::{self, SetupConfig};
use crate::scenario::Runner;
use crate::target::{self, Env, Process, Target};
use clap::{Parser, ValueEnum};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Many sessions exchanging small messages at 20 Hz: added latency, CPU per message, losses.
    Game,
    /// Saturated duplex streams: MiB/s per direction, CPU per GiB.
    Bulk,
    /// Connect + login + first backend byte + close in a loop: sessions/s, latency, CPU per session.
    Setup,
    /// Thousands of idle sessions: proxy RSS per session.
    Idle,
}

/// Measures proxies against a direct connection to the same backend, in interleaved rounds.
///
/// Durations take units: "500ms", "10s". Without --quick the defaults are the full suite (about 15
/// minutes with every proxy); --quick runs every scenario once, smaller and shorter (about 80 s).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Scenarios to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "game,bulk,setup,idle"
    )]
    pub scenario: Vec<Scenario>,
    /// Proxies to measure [default: nethergate, nethergate-zero-copy, nethergate-smol, reference, and
    /// haproxy when /usr/sbin/haproxy exists]; also known: splice-reference (blocking threads, bulk only).
    #[arg(long, value_delimiter = ',')]
    pub proxies: Option<Vec<String>>,
    /// Another proxy: NAME=COMMAND, where COMMAND has {listen} and {backend} placeholders (ip:port);
    /// {listen_port} is the listening port alone (the proxy must listen on 127.0.0.1).
    #[arg(long, value_name = "NAME=COMMAND")]
    pub extra: Vec<String>,
    /// A short preset: one round, fewer sessions, shorter durations.
    #[arg(long)]
    pub quick: bool,
    /// Rounds per case [default: 3, --quick 1].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Game: session counts, one case each [default: 100,1000, --quick 1000].
    #[arg(long, value_delimiter = ',')]
    pub game_sessions: Option<Vec<usize>>,
    /// Game: measured time per round [default: 10s, --quick 3s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub game_duration: Option<Duration>,
    /// Game: messages per second per direction per session.
    #[arg(long, default_value_t = 20)]
    pub game_rate: u32,
    /// Game: smallest message, bytes.
    #[arg(long, default_value_t = 50)]
    pub game_min_size: usize,
    /// Game: largest message, bytes.
    #[arg(long, default_value_t = 500)]
    pub game_max_size: usize,
    /// Bulk: session counts, one case each.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub bulk_sessions: Vec<usize>,
    /// Bulk: measured time per round [default: 5s, --quick 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub bulk_duration: Option<Duration>,
    /// Bulk: streaming time before counting starts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    pub bulk_warmup: Duration,
    /// Setup: concurrent workers.
    #[arg(long, default_value_t = 8)]
    pub setup_workers: usize,
    /// Setup: measured time per round [default: 5s, --quick 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub setup_duration: Option<Duration>,
    /// Setup: where the workers connect from. `spread` gives each worker its own loopback address, so
    /// the TIME_WAIT sockets of earlier sessions do not hold up a worker's connect (a proxy's connects to
    /// the backend still come from one address); `single` connects them all from 127.0.0.1, where at tens
    /// of thousands of sessions a second the direct connection is limited by port reuse instead (see
    /// bench/README.md).
    #[arg(long, value_enum, default_value_t = setup::Source::Spread)]
    pub setup_source: setup::Source,
    /// Idle: sessions to hold [default: 9000, --quick 2000]. A proxy holds two sockets per session
    /// under the same file limit as the tool's children (see bench/README.md).
    #[arg(long)]
    pub idle_sessions: Option<usize>,
    /// Worker threads of the load generator, and of the backend (1: a current-thread runtime each). On a
    /// small machine every extra busy thread queues behind the proxy's for a time slice, which shows up
    /// as milliseconds of latency that no proxy caused.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Pin the load generator and the backend to these CPUs (e.g. "0"); proxies still run on every CPU.
    /// Use it when other work shares the machine: a busy neighbour, even a niced one, can make the
    /// scheduler pack everything onto one core.
    #[arg(long, value_delimiter = ',', value_name = "CPUS")]
    pub pin_load: Vec<usize>,
    /// Where the nethergate binaries are [default: the directory of this binary].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Print the report as JSON on stdout instead of tables (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Internal: serve the bench backend on ADDR.
    #[arg(long, hide = true, value_name = "ADDR")]
    pub serve_backend: Option<SocketAddr>,
    /// Internal: run the reference proxy on ADDR (needs --backend).
    #[arg(long, hide = true, value_name = "ADDR", requires = "backend")]
    pub serve_reference: Option<SocketAddr>,
    /// Internal: run the splice reference proxy on ADDR (needs --backend).
    #[arg(long, hide = true, value_name = "ADDR", requires = "backend")]
    pub serve_splice_reference: Option<SocketAddr>,
    /// Internal: the reference proxy's backend.
    #[arg(long, hide = true, value_name = "ADDR")]
    pub backend: Option<SocketAddr>,
}

/// Runs what the arguments ask for.
pub fn run(args: Args) -> io::Result<()> {
    if let Some(listen) = args.serve_backend {
        procfs::raise_nofile_limit()?;
        return crate::backend::serve(listen, args.threads);
    }
    if let (Some(listen), Some(backend)) = (args.serve_reference, args.backend) {
        procfs::raise_nofile_limit()?;
        return crate::reference::serve(listen, backend);
    }
    #[cfg(target_os = "linux")]
    if let (Some(listen), Some(backend)) = (args.serve_splice_reference, args.backend) {
        procfs::raise_nofile_limit()?;
        return crate::splice_reference::serve(listen, backend);
    }
    Suite::new(args)?.run()
}

/// A resolved run: targets and cases.
struct Suite {
    args: Args,
    targets: Vec<Target>,
    rounds: usize,
    self_exe: PathBuf,
    file_limit: u64,
}

impl Suite {
    fn new(args: Args) -> io::Result<Suite> {
        let self_exe = std::env::current_exe()?;
        let bin_dir = match &args.bin_dir {
            Some(dir) => dir.clone(),
            None => self_exe.parent().map(PathBuf::from).unwrap_or_default(),
        };
        let mut targets = vec![Target::direct()];
        let explicit = args.proxies.is_some();
        let names: Vec<String> = args
            .proxies
            .clone()
            .unwrap_or_else(|| target::BUILTIN.iter().map(|s| (*s).to_owned()).collect());
        for name in names.iter().filter(|n| !n.is_empty()) {
            match Target::builtin(name, &bin_dir) {
                Ok(t) => targets.push(t),
                // The default list names HAProxy only if it is installed.
                Err(e) if !explicit && name == "haproxy" => eprintln!("skipping haproxy: {e}"),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidInput, e)),
            }
        }
        for spec in &args.extra {
            targets.push(
                Target::extra(spec).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            );
        }
        // Each process needs one descriptor per client or backend socket it holds.
        let file_limit = procfs::raise_nofile_limit()?;
        let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
        Ok(Suite {
            args,
            targets,
            rounds,
            self_exe,
            file_limit,
        })
    }

    fn run(self) -> io::Result<()> {
        if !self.args.pin_load.is_empty() {
            // Before any thread or child exists, so the runtime's threads and the backend inherit it.
            procfs::set_affinity(&self.args.pin_load)?;
        }
        let workdir = tempfile::Builder::new()
            .prefix("nethergate-bench-")
            .tempdir()?;
        let backend_addr = target::free_port()?;
        let mut backend = Process::spawn(
            Command::new(&self.self_exe)
                .arg("--serve-backend")
                .arg(backend_addr.to_string())
                .arg("--threads")
                .arg(self.args.threads.to_string()),
            &workdir.path().join("backend.log"),
            false,
        )?;
        backend.wait_for_port(backend_addr)?;
        let env = Env {
            backend: backend_addr,
            workdir: workdir.path().to_owned(),
            self_exe: self.self_exe.clone(),
            file_limit: self.file_limit,
        };
        let rt = runtime(self.args.threads)?;
        let runner = Runner {
            env: &env,
            targets: &self.targets,
            rounds: self.rounds,
            rt: &rt,
        };
        let mut report = Report {
            command: command_line(),
            date: report::utc_now(),
            machine: Machine::describe(),
            rounds: self.rounds,
            background: procfs::busy_processes(Duration::from_secs(1), 10.0),
            results: Vec::new(),
        };
        let header = report.header();
        if self.args.json {
            eprintln!("{header}");
        } else {
            println!("{header}");
        }
        for scenario in &self.args.scenario {
            for section in self.run_scenario(*scenario, &runner) {
                if !self.args.json {
                    println!("{}", section.table());
                }
                report.results.push(section);
            }
        }
        if self.args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).map_err(io::Error::other)?
            );
        }
        drop(backend);
        Ok(())
    }

    fn run_scenario(&self, scenario: Scenario, runner: &Runner<'_>) -> Vec<Case> {
        let a = &self.args;
        let quick = a.quick;
        match scenario {
            Scenario::Game => {
                let sessions = a.game_sessions.clone().unwrap_or(if quick {
                    vec![1000]
                } else {
                    vec![100, 1000]
                });
                sessions
                    .into_iter()
                    .map(|n| {
                        Case::measure(|| {
                            let config = GameConfig {
                                sessions: n,
                                duration: a.game_duration.unwrap_or(secs(if quick {
                                    3
                                } else {
                                    10
                                })),
                                rate_hz: a.game_rate,
                                min_size: a.game_min_size.min(a.game_max_size),
                                max_size: a.game_max_size,
                            };
                            let measured = runner.run(&format!("game {n}"), true, |addr, meter| {
                                game::measure(addr, meter, config)
                            });
                            Section::Game {
                                config,
                                rows: game::summarise(measured),
                            }
                        })
                    })
                    .collect()
            }
            Scenario::Bulk => a
                .bulk_sessions
                .iter()
                .map(|&n| {
                    Case::measure(|| {
                        let config = BulkConfig {
                            sessions: n,
                            duration: a.bulk_duration.unwrap_or(secs(if quick { 2 } else { 5 })),
                            warmup: a.bulk_warmup,
                        };
                        let measured = runner.run(&format!("bulk {n}"), true, |addr, meter| {
                            bulk::measure(addr, meter, config)
                        });
                        Section::Bulk {
                            config,
                            rows: bulk::summarise(measured),
                        }
                    })
                })
                .collect(),
            Scenario::Setup => {
                let config = SetupConfig {
                    workers: a.setup_workers,
                    duration: a.setup_duration.unwrap_or(secs(if quick { 2 } else { 5 })),
                    source: a.setup_source,
                };
                vec![Case::measure(|| {
                    let measured = runner.run("setup", true, |addr, meter| {
                        setup::measure(addr, meter, config)
                    });
                    Section::Setup {
                        config,
                        rows: setup::summarise(measured),
                    }
                })]
            }
            Scenario::Idle => {
                let config = IdleConfig {
                    sessions: a.idle_sessions.unwrap_or(if quick { 2000 } else { 9000 }),
                };
                // A proxy holds a client and a backend socket per session, plus a few of its own.
                let needed = 2 * config.sessions as u64 + 64;
                if needed > self.file_limit {
                    eprintln!(
                        "warning: {} idle sessions need about {needed} descriptors per proxy, the limit is {}; \
                         expect proxies to hold fewer",
                        config.sessions, self.file_limit
                    );
                }
                vec![Case::measure(|| {
                    let measured = runner.run("idle", false, |addr, meter| {
                        idle::measure(addr, meter, config)
                    });
                    Section::Idle {
                        config,
                        rows: idle::summarise(&config, measured),
                    }
                })]
            }
        }
    }
}

/// A tokio runtime with `threads` workers; one means a current-thread runtime (no cross-thread wake-ups).
pub fn runtime(threads: usize) -> io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// This process's command line, quoted where a shell would need it.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=,:".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
