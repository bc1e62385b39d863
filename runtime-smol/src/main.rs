//! The `nethergate-smol` binary.

use nethergate_driver::{cli, Proxy};
use nethergate_smol::Smol;
use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main(|config, plugins| {
        let rt = Smol::new();
        let proxy = Proxy::bind(rt.clone(), config, plugins)?;
        cli::install_signals(proxy.handle())?;
        rt.block_on(proxy.run())
    })
}
