//! The `nethergate-smol` binary.

use nethergate_driver::{cli, Proxy};
use nethergate_smol::Smol;
use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main(env!("CARGO_BIN_NAME"), |launch| {
        let rt = Smol::with_threads(launch.threads);
        let proxy = Proxy::bind(rt.clone(), launch.config.clone(), launch.plugins.clone())?;
        let _supervision = launch.supervise(proxy.handle())?;
        rt.block_on(proxy.run())
    })
}
