//! The `nethergate` binary (tokio).

use nethergate_driver::{cli, Proxy};
use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main(env!("CARGO_BIN_NAME"), |launch| {
        let rt = nethergate_tokio::runtime(launch.threads)?;
        let proxy = Proxy::bind(rt.tokio(), launch.config.clone(), launch.plugins.clone())?;
        let _supervision = launch.supervise(proxy.handle())?;
        rt.block_on(proxy.run())
    })
}
