//! `nethergate-blocking --config <main file>`: nethergate on plain blocking threads, until killed.

use nethergate_core::{Config, Plugins};
use nethergate_examples::blocking::BlockingProxy;
use std::path::Path;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage: nethergate-blocking --config <nethergate.toml>";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [flag, path] if flag == "--config" || flag == "-c" => path,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(Path::new(path)) {
        Ok(config) => config,
        Err(errors) => {
            for issue in &errors.0 {
                eprintln!("error: {issue}");
            }
            return ExitCode::from(2);
        }
    };
    let mut plugins = Plugins::new();
    if let Some(filter) = config.main.ip_filter.clone() {
        plugins = plugins.with(filter);
    }
    match BlockingProxy::start(config, plugins) {
        // Serve until the process is killed; the proxy runs on its own threads.
        Ok(_proxy) => loop {
            std::thread::park();
        },
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            ExitCode::FAILURE
        }
    }
}
