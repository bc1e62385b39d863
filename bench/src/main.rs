//! `nethergate-bench`: see the crate docs and bench/README.md.

use clap::Parser;
use nethergate_bench::cli::{self, Args};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nethergate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
