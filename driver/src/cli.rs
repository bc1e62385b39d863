//! The command line shared by every nethergate binary: options, logging, config loading, `--check`,
//! signals.

use crate::proxy::Handle;
use crate::reload::Reloader;
use clap::{Parser, ValueEnum};
use nethergate_core::config::{ConfigErrors, MainConfig};
use nethergate_core::{Config, Plugins};
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// nethergate: a Minecraft reverse proxy that routes players by the hostname they connect to.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "nethergate: a Minecraft reverse proxy that routes players by the hostname they connect to",
    long_about = None
)]
pub struct Args {
    /// The main configuration file.
    #[arg(long, short, value_name = "PATH", default_value = "nethergate.toml")]
    pub config: PathBuf,
    /// Validate the configuration, print the routes, and exit (non-zero on errors).
    #[arg(long)]
    pub check: bool,
    /// Log format; the level comes from RUST_LOG (default "info,notify=warn").
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Threads that run sessions [default: one per CPU core].
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    pub threads: Option<std::num::NonZeroUsize>,
}

/// The most `--threads` allowed: far more than any machine has cores, far fewer than would exhaust it.
const MAX_THREADS: usize = 1024;

/// `--threads`: a whole number from 1 to [`MAX_THREADS`].
fn parse_threads(arg: &str) -> Result<std::num::NonZeroUsize, String> {
    match arg.trim().parse::<usize>() {
        Ok(n) if n > MAX_THREADS => Err(format!(
            "{n} is more than {MAX_THREADS} threads (one per CPU core is the default)"
        )),
        Ok(n) => std::num::NonZeroUsize::new(n)
            .ok_or_else(|| "must be at least 1 (0 threads could run no session)".to_owned()),
        Err(_) => Err(format!("{arg:?} is not a whole number of threads")),
    }
}

/// The number of session threads: `--threads`, or one per CPU core.
pub fn threads(requested: Option<std::num::NonZeroUsize>) -> usize {
    requested
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, std::num::NonZeroUsize::get)
}

/// Installs the tracing subscriber, writing to stdout through a [`crate::log::Output`] (batched, never
/// blocking a session). Keep the result until exit: dropping it writes out the last lines. `None` when
/// the writer thread cannot start; lines then go to stdout directly.
pub fn init_logging(format: LogFormat) -> Option<crate::log::Output> {
    match crate::log::Output::new(std::io::stdout()) {
        Ok(output) => {
            install_subscriber(format, output.lines());
            Some(output)
        }
        Err(e) => {
            install_subscriber(format, std::io::stdout);
            tracing::warn!(error = %e, "cannot start the log writer thread; logging directly");
            None
        }
    }
}

/// The log filter when `RUST_LOG` is not set.
const DEFAULT_LOG_FILTER: &str = "info,notify=warn";

fn install_subscriber<W>(format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    // Without RUST_LOG: `info`, except the `notify` crate's own info lines (e.g. "unable to remove watch
    // descriptor" when a watched directory is replaced), which say nothing an admin can act on: the
    // reload lines say what happened.
    // An invalid RUST_LOG is not dropped without a word: an admin who set `warn` to cut the volume would
    // get every info line and no reason.
    // An empty RUST_LOG (`RUST_LOG=`, or compose's `${RUST_LOG}` with nothing set) is unset, not "off".
    let value = std::env::var_os("RUST_LOG").filter(|v| !v.is_empty());
    let parsed = value.as_ref().map(|v| match v.to_str() {
        Some(s) => tracing_subscriber::EnvFilter::try_new(s).map_err(|e| e.to_string()),
        None => Err("not valid UTF-8".to_owned()),
    });
    let (filter, ignored) = match parsed {
        Some(Ok(filter)) => (filter, None),
        other => (
            tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER),
            other.and_then(Result::err),
        ),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_timer(crate::log::Time)
        .with_writer(writer);
    let _ = match format {
        // The same bytes as the default fields, written with fewer calls (see `log::HumanFields`).
        LogFormat::Human => builder.fmt_fields(crate::log::HumanFields).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Some(error) = ignored {
        let value = value.unwrap_or_default();
        tracing::warn!(value = ?value, %error, default = DEFAULT_LOG_FILTER,
            "RUST_LOG is invalid and was ignored; logging with the default filter");
    }
}

/// Writes `text` to `to` (stdout or stderr) in one go. A closed pipe (`--check | head -1`) or a full
/// disk is not worth a panic: what could be written was, and the exit code still says the outcome.
fn write_out(mut to: impl io::Write, text: &str) {
    let _ = to.write_all(text.as_bytes()).and_then(|()| to.flush());
}

/// The plugins configured in the main file.
pub fn plugins(config: &Config) -> Plugins {
    let mut plugins = Plugins::new();
    if let Some(filter) = &config.main.ip_filter {
        plugins = plugins.with(filter.clone());
    }
    plugins
}

/// What `--check` prints: every server with its domains and addresses.
fn routes_report(config: &Config, main_file: &Path) -> String {
    use nethergate_core::config::Escaped;
    use std::fmt::Write;
    let mut out = String::new();
    // A line of the report; writing to a `String` cannot fail.
    macro_rules! report {
        ($($arg:tt)*) => {{
            let _ = writeln!(out, $($arg)*);
        }};
    }
    report!(
        "configuration OK: listening on {}, {} server(s) from {}",
        config.main.bind,
        config.servers.len(),
        Escaped(&config.main.servers_dir.display().to_string())
    );
    let main = &config.main;
    report!(
        "  handshake_timeout {}, max_connections {}, shutdown_timeout {}",
        humantime::format_duration(main.handshake_timeout),
        match main.max_connections {
            0 => "unlimited".to_owned(),
            n => n.to_string(),
        },
        humantime::format_duration(main.shutdown_timeout),
    );
    if let Some(hard) = crate::limits::hard() {
        report!(
            "  open files: {hard} once started (the hard limit), about {} connections",
            crate::limits::connections_allowed(hard)
        );
        if let Some(why) = crate::limits::shortfall(hard, main.max_connections) {
            report!("  warning: {why}");
        }
    }
    if let Some(f) = &main.ip_filter {
        let nets = |list: &[nethergate_core::plugin::IpNet]| {
            let v: Vec<String> = list.iter().map(ToString::to_string).collect();
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(", ")
            }
        };
        report!(
            "  ip_filter: allow {}; deny {}; message {:?}",
            nets(&f.allow),
            nets(&f.deny),
            f.message
        );
    }
    // With Docker discovery, no server files is a setup of its own: its servers come from containers.
    if config.servers.is_empty() && config.main.docker.is_none() {
        report!("  warning: no server files: every player will be told \"Unknown server address\"");
    }
    for warning in config.warnings(main_file) {
        report!("  warning: {warning}");
    }
    for s in &config.servers {
        let addrs: Vec<String> = s.addresses.iter().map(ToString::to_string).collect();
        report!(
            "  {} ({}): {} -> {} [{:?}{}]",
            s.name,
            Escaped(&s.source),
            s.domains.join(", "),
            addrs.join(", "),
            s.proxy_mode,
            if s.send_proxy_protocol {
                match s.proxy_protocol_version {
                    nethergate_core::ProxyProtocolVersion::V1 => ", PROXY protocol v1",
                    nethergate_core::ProxyProtocolVersion::V2 => ", PROXY protocol v2",
                }
            } else {
                ""
            }
        );
        let t = &s.timeouts;
        report!("    disconnect_message {:?}", s.disconnect_message);
        report!(
            "    max_players {}, host sent to the backend: {}, timeouts connect {} / read {} / write {}",
            match s.max_players {
                0 => "unlimited".to_owned(),
                n => n.to_string(),
            },
            match &s.domain_rewrite {
                nethergate_core::rewrite::Rewrite::None => "as the client sent it".to_owned(),
                nethergate_core::rewrite::Rewrite::Host(h) => format!("{h:?}"),
            },
            humantime::format_duration(t.connect),
            humantime::format_duration(t.read),
            humantime::format_duration(t.write),
        );
    }
    if let Some(docker) = &config.main.docker {
        report!(
            "  docker: containers labelled {}.enable = \"true\" at {}, polled every {}",
            docker.label_prefix,
            docker.endpoint,
            humantime::format_duration(docker.poll_interval)
        );
    }
    out
}

/// Logs a valid setting that is almost surely a mistake ([`Config::warnings`]).
pub(crate) fn log_warning(warning: &nethergate_core::config::ConfigIssue) {
    use nethergate_core::config::Escaped;
    if warning.key.is_empty() {
        // About a whole file: one of another proxy's in `servers_dir`, or no file at all. The message
        // says it was not read already.
        let reason = warning
            .reason
            .strip_prefix("not read: ")
            .unwrap_or(&warning.reason);
        tracing::warn!(file = %Escaped(&warning.source), reason = %Escaped(reason),
            "file not read");
        return;
    }
    tracing::warn!(file = %Escaped(&warning.source), key = %Escaped(&warning.key),
        reason = %Escaped(&warning.reason), "setting looks wrong, used as configured");
}

/// Re-reads the main file on SIGHUP. It is read only at startup (it shapes the listeners, the threads and
/// the plugins), so an admin who edits it and reloads is told what did not take effect, or why the file
/// would not even start.
///
/// A `servers_dir` that names another directory is checked as a start would check it (the directory and
/// its server files): the live reload watches the running directory only, so a restart would otherwise
/// be the first to find that the new one is missing or broken.
///
/// Gives whether a start would fail; `was_invalid` is what the last report gave, so that the first
/// report after a fix says the file is valid again.
fn report_main_file(path: &Path, running: &MainConfig, was_invalid: bool) -> bool {
    let main_source = path.display().to_string();
    let invalid = |errors: ConfigErrors| {
        for issue in &errors.0 {
            let message = match issue.source == main_source {
                true => "main file invalid (read at startup only; the running settings stay)",
                // A server file of the new `servers_dir`: not live, but a restart would refuse it.
                false => {
                    "server file of the main file's new servers_dir invalid (a restart would refuse \
                     it; the running servers stay)"
                }
            };
            crate::reload::log_issue(issue, message);
        }
    };
    let main = match MainConfig::read(path) {
        Ok(main) => main,
        Err(errors) => {
            invalid(errors);
            return true;
        }
    };
    let mut failing = false;
    if main.servers_dir != running.servers_dir {
        if let Err(errors) = Config::load(path) {
            invalid(errors);
            failing = true;
        }
    }
    let changed = running.changed_keys(&main);
    if was_invalid && !failing {
        match changed.is_empty() {
            true => tracing::info!(file = %path.display(),
                "main file valid again; it matches the running settings"),
            false => tracing::info!(file = %path.display(), "main file valid again"),
        }
    }
    if !changed.is_empty() {
        tracing::warn!(file = %path.display(), keys = %changed.join(", "),
            "main file changed: its settings are read at startup only, restart to apply them");
    }
    failing
}

/// SIGHUP, caught from the start of [`main`] (its default action ends the process: a `systemctl reload`
/// right after `start` would kill a proxy still loading its files) and kept pending until
/// [`install_signals`] takes the set over.
static EARLY_SIGNALS: std::sync::Mutex<Option<signal_hook::iterator::Signals>> =
    std::sync::Mutex::new(None);

/// Catches SIGHUP from now on; one that comes before [`install_signals`] is a reload once it runs.
fn catch_early_sighup() {
    if let Ok(signals) = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]) {
        if let Ok(mut early) = EARLY_SIGNALS.lock() {
            *early = Some(signals);
        }
    }
}

/// SIGINT/SIGTERM: first graceful shutdown, a second one closes sessions at once. SIGHUP: reload.
fn install_signals(
    handle: Handle,
    reloader: Arc<Reloader>,
    main_file: PathBuf,
    running: MainConfig,
) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let early = EARLY_SIGNALS.lock().ok().and_then(|mut e| e.take());
    let mut signals = match early {
        Some(signals) => {
            signals.add_signal(SIGINT)?;
            signals.add_signal(SIGTERM)?;
            signals
        }
        None => signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?,
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let (mut stops, mut main_invalid) = (0, false);
            for signal in signals.forever() {
                if signal == SIGHUP {
                    tracing::info!("SIGHUP: reloading server files");
                    reloader.reload_files();
                    main_invalid = report_main_file(&main_file, &running, main_invalid);
                    continue;
                }
                stops += 1;
                if stops == 1 {
                    tracing::info!(signal, "shutdown requested");
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                    handle.shutdown();
                } else {
                    tracing::info!(signal, "second signal: closing every session now");
                    handle.abort();
                }
            }
        })?;
    Ok(())
}

/// What a binary's `serve` function gets: the validated configuration and the plugins.
pub struct Launch {
    /// The configuration loaded at startup.
    pub config: Config,
    /// The pre-connect plugins configured.
    pub plugins: Plugins,
    /// Threads that run sessions (`--threads`, or one per CPU core).
    pub threads: usize,
    /// The main file `config` was loaded from (re-checked on SIGHUP).
    pub main_file: PathBuf,
}

/// Keeps signal handling, the directory watch and the Docker provider alive while the proxy runs.
pub struct Supervision {
    /// Reloads server files and provider servers into the running proxy.
    pub reloader: Arc<Reloader>,
    _watch: Option<crate::reload::Watch>,
    _docker: Option<crate::docker::DockerProvider>,
}

impl Launch {
    /// Starts what runs beside a bound proxy: signal handling (shutdown, reload), the watch of
    /// `servers_dir` and, with `[docker]`, the Docker provider. Keep the result alive until the proxy stops.
    pub fn supervise(&self, handle: Handle) -> io::Result<Supervision> {
        let reloader = Reloader::new(
            &self.config.main.servers_dir,
            Some(&self.main_file),
            &self.config.servers,
            handle.clone(),
        );
        reloader.foreign_warned(&self.config.foreign);
        install_signals(
            handle,
            reloader.clone(),
            self.main_file.clone(),
            self.config.main.clone(),
        )?;
        let watch = match crate::reload::watch(reloader.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the server directory; reload with SIGHUP");
                None
            }
        };
        let docker = match &self.config.main.docker {
            Some(docker) => Some(crate::docker::DockerProvider::start(
                docker.clone(),
                reloader.clone(),
            )?),
            None => None,
        };
        // Bound (players can connect: the backlog holds them until the accept loops run) and supervised:
        // a `Type=notify` systemd unit is started now, and only now takes `systemctl reload`. Nothing to
        // do without a service manager (no NOTIFY_SOCKET).
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            tracing::warn!(error = %e, "cannot tell the service manager the proxy is ready");
        }
        Ok(Supervision {
            reloader,
            _watch: watch,
            _docker: docker,
        })
    }
}

/// The main function of the nethergate binary `name` (shown by `--version`, `--help` and in errors):
/// parses the command line, loads and validates the configuration, then calls `serve` with it (which
/// runs until shutdown).
pub fn main(name: &'static str, serve: impl FnOnce(Launch) -> io::Result<()>) -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    // First: a SIGHUP's default action ends the process, and `systemctl reload` can come right after
    // the start (a `--check` or `--help` run that catches one just finishes).
    catch_early_sighup();
    let matches = Args::command().name(name).bin_name(name).get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let _log = init_logging(args.log_format);
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            use std::fmt::Write;
            let mut report = format!("invalid configuration ({} problem(s)):\n", errors.0.len());
            for issue in &errors.0 {
                let _ = writeln!(report, "  {issue}"); // to a `String`: cannot fail
            }
            write_out(io::stderr(), &report);
            return ExitCode::from(2);
        }
    };
    if args.check {
        write_out(io::stdout(), &routes_report(&config, &args.config));
        return ExitCode::SUCCESS;
    }
    crate::limits::raise_and_report(config.main.max_connections);
    for warning in config.warnings(&args.config) {
        log_warning(&warning);
    }
    let plugins = plugins(&config);
    let threads = threads(args.threads);
    match serve(Launch {
        config,
        plugins,
        threads,
        main_file: args.config,
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "fatal");
            write_out(io::stderr(), &format!("{name}: {e}\n"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DEFAULT_LOG_FILTER;

    #[test]
    fn the_default_log_filter_is_valid() {
        // `EnvFilter::new` drops a directive it cannot parse without a word; the builder says so.
        let filter = tracing_subscriber::EnvFilter::builder().parse(DEFAULT_LOG_FILTER);
        assert!(filter.is_ok(), "{DEFAULT_LOG_FILTER:?}: {filter:?}");
        assert_eq!(
            filter.map(|f| f.to_string()).ok().as_deref(),
            Some("notify=warn,info")
        );
    }
}
