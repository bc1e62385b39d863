//! The backend every scenario talks to, run in its own process (`nethergate-bench --serve-backend`).
//!
//! A separate process keeps its sockets out of the load generator's file limit (both hold one socket per
//! idle session) and its CPU out of the load generator's runtime. It speaks [`crate::wire`].

use crate::wire::{split_message, Mode, READY};
use nethergate_core::{handshake, login, Parsed};
use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Most bytes read before the login start is complete; more is not a client of ours.
const MAX_OPENING: usize = 32 * 1024;

/// Size of one bulk write and read.
pub const BULK_CHUNK: usize = 64 * 1024;

/// Serves `listen` on `threads` worker threads until the process is killed.
pub fn serve(listen: SocketAddr, threads: usize) -> io::Result<()> {
    let rt = crate::cli::runtime(threads)?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of file descriptors or a connection reset before accept: keep serving the others.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                // A session ends when the client goes away; how it ends does not matter here.
                let _ = session(stream).await;
            });
        }
    })
}

async fn session(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (mode, early) = read_opening(&mut stream).await?;
    stream.write_all(&[READY]).await?;
    match mode {
        Mode::Echo => echo(stream, early).await,
        Mode::Bulk => bulk(stream).await,
    }
}

/// Reads the handshake and the login start; returns the mode and any bytes that came after them.
async fn read_opening(stream: &mut TcpStream) -> io::Result<(Mode, Vec<u8>)> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some((mode, used)) = parse_opening(&buf)? {
            return Ok((mode, buf.split_off(used)));
        }
        if buf.len() > MAX_OPENING {
            return Err(invalid("no login start within 32 KiB"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_opening(buf: &[u8]) -> io::Result<Option<(Mode, usize)>> {
    let hs_len = match handshake::parse(buf).map_err(|e| invalid(&e.to_string()))? {
        Parsed::Complete(_, used) => used,
        Parsed::Incomplete => return Ok(None),
    };
    match login::parse(&buf[hs_len..]).map_err(|e| invalid(&e.to_string()))? {
        Parsed::Complete(start, used) => {
            let mode = Mode::from_player_name(start.name)
                .ok_or_else(|| invalid("player name is not a bench mode"))?;
            Ok(Some((mode, hs_len + used)))
        }
        Parsed::Incomplete => Ok(None),
    }
}

fn invalid(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.to_owned())
}

/// Writes back every whole message; a message is written once all of it has arrived.
async fn echo(mut stream: TcpStream, early: Vec<u8>) -> io::Result<()> {
    let mut pending = early;
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let whole = whole_messages(&pending);
        if whole > 0 {
            stream.write_all(&pending[..whole]).await?;
            pending.drain(..whole);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return stream.shutdown().await;
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// Length of the longest prefix of `buf` made of whole messages.
fn whole_messages(buf: &[u8]) -> usize {
    let mut at = 0;
    while let Some((_, used)) = split_message(&buf[at..]) {
        at += used;
    }
    at
}

/// Writes and reads as fast as possible until the client goes away.
async fn bulk(mut stream: TcpStream) -> io::Result<()> {
    let (mut rd, mut wr) = stream.split();
    let out = vec![0x42u8; BULK_CHUNK];
    let write = async {
        loop {
            wr.write_all(&out).await?;
        }
    };
    let read = async {
        let mut buf = vec![0u8; BULK_CHUNK];
        while rd.read(&mut buf).await? > 0 {}
        Ok::<(), io::Error>(())
    };
    tokio::select! {
        r = write => r,
        r = read => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_messages_stops_before_a_partial_one() {
        let mut buf = vec![0, 3, 1, 2, 3, 0, 1, 9];
        assert_eq!(whole_messages(&buf), 8);
        buf.extend_from_slice(&[0, 5, 1]);
        assert_eq!(whole_messages(&buf), 8);
        assert_eq!(whole_messages(&[0]), 0);
    }
}
