//! nethergate on tokio: the [`Runtime`] implementation, and [`spawn`] to run a proxy on its own thread.

use nethergate_core::{Config, Plugins};
use nethergate_driver::{Interest, Proxy, Running, Runtime};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

/// The tokio runtime, for the driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

/// A tokio TCP stream.
#[derive(Debug)]
pub struct Stream(tokio::net::TcpStream);

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl nethergate_driver::Stream for Stream {
    async fn readable(&self) -> io::Result<()> {
        self.0.readable().await
    }
    async fn writable(&self) -> io::Result<()> {
        self.0.writable().await
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn try_io<T>(&self, interest: Interest, op: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let interest = match interest {
            Interest::Read => tokio::io::Interest::READABLE,
            Interest::Write => tokio::io::Interest::WRITABLE,
        };
        self.0.try_io(interest, op)
    }
}

/// A tokio TCP listener.
#[derive(Debug)]
pub struct Listener(tokio::net::TcpListener);

impl nethergate_driver::Listener for Listener {
    type Stream = Stream;
    async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let (s, peer) = self.0.accept().await?;
        Ok((Stream(s), peer))
    }
}

impl Runtime for Tokio {
    type Stream = Stream;
    type Listener = Listener;
    type Sleep = tokio::time::Sleep;

    fn listener(&self, std: std::net::TcpListener) -> io::Result<Listener> {
        tokio::net::TcpListener::from_std(std).map(Listener)
    }
    async fn connect(&self, addr: SocketAddr) -> io::Result<Stream> {
        tokio::net::TcpStream::connect(addr).await.map(Stream)
    }
    async fn resolve(&self, host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host.as_str(), port))
            .await?
            .collect())
    }
    fn sleep_until(&self, deadline: Instant) -> tokio::time::Sleep {
        tokio::time::sleep_until(deadline.into())
    }
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F) {
        tokio::spawn(future);
    }
    async fn yield_now(&self) {
        // Deferred: woken once the worker has polled the driver, without pulling an idle worker out of sleep.
        tokio::task::yield_now().await
    }
}

/// Builds the multi-threaded tokio runtime the binary uses, with `threads` workers.
pub fn runtime(threads: usize) -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(threads.max(1))
        .thread_name("nethergate-worker")
        .build()
}

/// Binds and runs a proxy for `config` on a new thread with its own tokio runtime.
pub fn spawn(config: Config, plugins: Plugins) -> io::Result<Running> {
    let rt = runtime(nethergate_driver::cli::threads(None))?;
    let proxy = {
        let _enter = rt.enter();
        Proxy::bind(Tokio, config, plugins)?
    };
    let (addr, handle) = (proxy.local_addr(), proxy.handle());
    Running::spawn(addr, handle, move || rt.block_on(proxy.run()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

    /// A saturated session gives up its turn with `yield_now`; the worker must look at the reactor before
    /// it resumes it. Otherwise a session whose socket has just become readable waits behind dozens of
    /// turns of the saturated one (tokio polls the reactor only every 61 tasks while tasks are queued).
    #[test]
    fn a_yield_lets_the_reactor_run_before_the_task_resumes() -> io::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let mut client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
            let (server, _) = listener.accept().await?;
            let turns = Arc::new(AtomicUsize::new(0));
            let reader = tokio::spawn({
                let turns = turns.clone();
                async move {
                    server.readable().await?;
                    io::Result::Ok(turns.load(Ordering::Relaxed))
                }
            });
            let hog = tokio::spawn({
                let turns = turns.clone();
                async move {
                    while turns.load(Ordering::Relaxed) < 1_000 {
                        Tokio.yield_now().await;
                        turns.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            tokio::task::yield_now().await; // both tasks are waiting now
            let before = turns.load(Ordering::Relaxed);
            client.write_all(b"x").await?;
            let at_wake = reader.await??;
            hog.abort();
            assert!(
                at_wake - before <= 3,
                "the reader waited {} turns of the yielding task",
                at_wake - before
            );
            Ok(())
        })
    }
}
