//! nethergate on smol: the [`Runtime`] implementation over async-io, an executor run by one thread per
//! core, and [`spawn`] to run a proxy on its own threads.

use nethergate_core::{Config, Plugins};
use nethergate_driver::signal::Flag;
use nethergate_driver::{Interest, Proxy, Running, Runtime};
use smol::{Async, Executor, Timer};
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The smol runtime, for the driver: async-io sockets and timers, tasks on a shared executor.
#[derive(Clone)]
pub struct Smol {
    executor: Arc<Executor<'static>>,
    threads: usize,
}

/// A TCP stream registered with async-io.
#[derive(Debug)]
pub struct Stream(Async<TcpStream>);

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
        (&mut self.0.get_ref()).read(buf)
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        (&mut self.0.get_ref()).write(buf)
    }
    fn try_io<T>(&self, _: Interest, op: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        // async-io keeps no readiness cache: `readable()`/`writable()` always wait for a fresh event.
        op()
    }
}

/// A TCP listener registered with async-io.
#[derive(Debug)]
pub struct Listener(Async<TcpListener>);

impl nethergate_driver::Listener for Listener {
    type Stream = Stream;
    async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let (s, peer) = self.0.accept().await?;
        Ok((Stream(s), peer))
    }
}

/// An async-io timer that resolves to `()`.
#[derive(Debug)]
pub struct Sleep(Timer);

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Runtime for Smol {
    type Stream = Stream;
    type Listener = Listener;
    type Sleep = Sleep;

    fn listener(&self, std: TcpListener) -> io::Result<Listener> {
        Async::new(std).map(Listener)
    }
    async fn connect(&self, addr: SocketAddr) -> io::Result<Stream> {
        Async::<TcpStream>::connect(addr).await.map(Stream)
    }
    async fn resolve(&self, host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
        smol::unblock(move || Ok((host.as_str(), port).to_socket_addrs()?.collect())).await
    }
    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Sleep(Timer::at(deadline))
    }
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F) {
        self.executor.spawn(future).detach();
    }
}

impl Smol {
    /// A runtime with a fresh executor run by one thread per core (run it with [`Smol::block_on`]).
    pub fn new() -> Smol {
        Smol::with_threads(nethergate_driver::cli::threads(None))
    }

    /// A runtime with a fresh executor run by `threads` threads.
    pub fn with_threads(threads: usize) -> Smol {
        Smol {
            executor: Arc::new(Executor::new()),
            threads: threads.max(1),
        }
    }

    /// Runs `future` to completion while the runtime's threads (this one included) run the executor.
    pub fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        let threads = self.threads;
        let done = Arc::new(Flag::default());
        let workers: Vec<_> = (1..threads)
            .filter_map(|i| {
                let (ex, done) = (self.executor.clone(), done.clone());
                std::thread::Builder::new()
                    .name(format!("nethergate-smol-{i}"))
                    .spawn(move || smol::block_on(ex.run(done.wait())))
                    .ok()
            })
            .collect();
        let out = smol::block_on(self.executor.run(future));
        done.set();
        for w in workers {
            let _ = w.join();
        }
        out
    }
}

impl Default for Smol {
    fn default() -> Self {
        Smol::new()
    }
}

/// Binds and runs a proxy for `config` on new threads with their own smol executor.
pub fn spawn(config: Config, plugins: Plugins) -> io::Result<Running> {
    let rt = Smol::new();
    let proxy = Proxy::bind(rt.clone(), config, plugins)?;
    let (addr, handle) = (proxy.local_addr(), proxy.handle());
    Running::spawn(addr, handle, move || rt.block_on(proxy.run()))
}
