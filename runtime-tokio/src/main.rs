//! The `nethergate` binary (tokio).

use nethergate_driver::{cli, Proxy};
use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main(|config, plugins| {
        let rt = nethergate_tokio::runtime()?;
        let proxy = {
            let _enter = rt.enter();
            Proxy::bind(nethergate_tokio::Tokio, config, plugins)?
        };
        cli::install_signals(proxy.handle())?;
        rt.block_on(proxy.run())
    })
}
