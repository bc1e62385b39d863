//! nethergate on smol: the [`Runtime`] implementation over async-io, one executor per thread (one thread
//! per core), and [`spawn`] to run a proxy on its own threads.

use nethergate_core::{Config, Plugins};
use nethergate_driver::signal::Flag;
use nethergate_driver::{Interest, Proxy, Running, Runtime};
use smol::{Async, Executor, Timer};
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The smol runtime, for the driver: async-io sockets and timers, and one executor per thread.
///
/// A task stays on the thread it was given. With one executor shared by every thread, the
/// thread that takes an I/O event from async-io's reactor (there is one for the process) wakes the task
/// and the executor also wakes a sleeping thread to run it: two threads wake for each packet. With an
/// executor per thread, an event for a task of the reacting thread costs no other wake-up.
#[derive(Clone)]
pub struct Smol {
    executors: Arc<[Executor<'static>]>,
    /// How many executors have a thread running them (the first ones); new tasks go only to those.
    running: Arc<AtomicUsize>,
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
    type Accepted = Stream; // async-io has one reactor: registered once, at accept
    async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let (s, peer) = self.0.accept().await?;
        Ok((Stream(s), peer))
    }
    fn register(accepted: Stream) -> io::Result<Stream> {
        Ok(accepted)
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
        let (std, established) = nethergate_driver::runtime::start_connect(addr)?;
        let stream = Async::new_nonblocking(std)?;
        if !established {
            stream.writable().await?;
            if let Some(e) = stream.get_ref().take_error()? {
                return Err(e);
            }
        }
        Ok(Stream(stream))
    }
    async fn resolve(&self, host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
        smol::unblock(move || Ok((host.as_str(), port).to_socket_addrs()?.collect())).await
    }
    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Sleep(Timer::at(deadline))
    }
    fn threads(&self) -> usize {
        self.executors.len()
    }
    fn spawn_on<F: Future<Output = ()> + Send + 'static>(&self, thread: usize, future: F) {
        // A thread that could not be started leaves its share to the running ones.
        let running = self.running.load(Ordering::Acquire).max(1);
        self.executors[thread % running].spawn(future).detach();
    }
}

impl Smol {
    /// A runtime with one thread per core (run it with [`Smol::block_on`]).
    pub fn new() -> Smol {
        Smol::with_threads(nethergate_driver::cli::threads(None))
    }

    /// A runtime with `threads` threads, each running its own executor.
    pub fn with_threads(threads: usize) -> Smol {
        Smol {
            executors: (0..threads.max(1)).map(|_| Executor::new()).collect(),
            running: Arc::new(AtomicUsize::new(1)),
        }
    }

    /// Runs `future` to completion on this thread's executor while the runtime's other threads run theirs.
    ///
    /// The future runs as a task of its own: the future given to an executor's `run` is polled again
    /// whenever the thread wakes for any task, and an accept loop polled that way calls `accept` (which
    /// says `EAGAIN`) and re-arms the listener with async-io's reactor each time.
    pub fn block_on<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let done = Arc::new(Flag::default());
        let mut workers = Vec::new();
        for i in 1..self.executors.len() {
            let (rt, done) = (self.clone(), done.clone());
            match std::thread::Builder::new()
                .name(format!("nethergate-smol-{i}"))
                .spawn(move || smol::block_on(rt.executors[i].run(done.wait())))
            {
                Ok(worker) => workers.push(worker),
                Err(e) => {
                    tracing::warn!(error = %e, threads = i, "could not start another thread");
                    break;
                }
            }
        }
        // Until now every task went to this thread's executor.
        self.running.store(workers.len() + 1, Ordering::Release);
        let out = smol::block_on(self.executors[0].run(self.executors[0].spawn(future)));
        self.running.store(1, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A loopback connect is ready at the first poll; one still in progress goes through the reactor (the
    /// checks are the driver's, shared with the tokio runtime).
    #[test]
    fn connect_is_ready_at_once_on_loopback_and_waits_otherwise() -> io::Result<()> {
        use nethergate_driver::runtime::{
            check_connect_in_progress_completes_through_the_reactor as in_progress,
            check_loopback_connect_is_ready_at_once as at_once,
        };
        let rt = Smol::with_threads(1);
        smol::block_on(async {
            at_once(&rt).await?;
            in_progress(&rt).await
        })
    }

    /// `spawn_on(i)` runs a task on thread `i % threads`, each of which runs only its own executor.
    #[test]
    fn spawn_on_runs_a_task_on_its_thread_and_it_stays_there() {
        let rt = Smol::with_threads(2);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let all_done = Arc::new(Flag::default());
        let spawner = rt.clone();
        let (tasks_seen, tasks_done) = (seen.clone(), all_done.clone());
        rt.block_on(async move {
            let left = Arc::new(AtomicUsize::new(4));
            for i in 0..4 {
                let (seen, left, done) = (tasks_seen.clone(), left.clone(), tasks_done.clone());
                spawner.spawn_on(i, async move {
                    let before = std::thread::current().id();
                    Timer::after(std::time::Duration::from_millis(5)).await;
                    if let Ok(mut seen) = seen.lock() {
                        seen.push((i, before, std::thread::current().id()));
                    }
                    if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                        done.set();
                    }
                });
            }
            tasks_done.wait().await;
        });
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(seen.len(), 4);
        nethergate_driver::runtime::assert_tasks_kept_to_two_threads(&seen);
    }
}
