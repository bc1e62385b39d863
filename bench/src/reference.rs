//! The reference proxy (`nethergate-bench --serve-reference`): what a proxy costs when written the
//! obvious way with tokio.
//!
//! Per connection it dials the backend and runs `tokio::io::copy_bidirectional`, with `TCP_NODELAY` on
//! both sides. It reads nothing itself: the handshake and login start reach the backend through the copy.

use std::io;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

/// Proxies `listen` to `backend` until the process is killed.
pub fn serve(listen: SocketAddr, backend: SocketAddr) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (client, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let _ = session(client, backend).await;
            });
        }
    })
}

async fn session(mut client: TcpStream, backend: SocketAddr) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut server = TcpStream::connect(backend).await?;
    server.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}
