//! nethergate on smol: the [`Runtime`] implementation over async-io, with an executor built from smol's
//! parts that runs a task on the thread that polled the reactor for it (one thread per core), and [`spawn`]
//! to run a proxy on its own threads.

mod exec;

use nethergate_core::{Config, Plugins};
use nethergate_driver::signal::Flag;
use nethergate_driver::{Interest, Proxy, Running, Runtime};
use smol::{Async, Timer};
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The smol runtime, for the driver: async-io sockets and timers, and one worker thread per core whose
/// tasks run where their wake-up is taken (see the `exec` module).
#[derive(Clone)]
pub struct Smol {
    pool: Arc<exec::Pool>,
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
        // async-io's own accept makes the socket non-blocking with an `ioctl` per client, after an
        // `accept4` that could have done it: one system call of about forty per session saved.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
            let (s, peer) = self
                .0
                .read_with(|l| socket2::SockRef::from(l).accept4(flags))
                .await?;
            let peer = peer
                .as_socket()
                .ok_or_else(|| io::Error::other("accepted a peer that is not an IP address"))?;
            Ok((Stream(Async::new_nonblocking(TcpStream::from(s))?), peer))
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let (s, peer) = self.0.accept().await?;
            Ok((Stream(s), peer))
        }
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
        self.pool.threads()
    }
    fn spawn_on<F: Future<Output = ()> + Send + 'static>(&self, thread: usize, future: F) {
        // Placed among the threads that run (one that could not be started leaves its share to them).
        self.pool.spawn(thread, future).detach();
    }
}

impl Smol {
    /// A runtime with one thread per core (run it with [`Smol::block_on`]).
    pub fn new() -> Smol {
        Smol::with_threads(nethergate_driver::cli::threads(None))
    }

    /// A runtime with `threads` worker threads.
    pub fn with_threads(threads: usize) -> Smol {
        Smol {
            pool: exec::Pool::new(threads),
        }
    }

    /// Runs `future` to completion on this thread, as worker 0, while the runtime's other threads run the
    /// other workers. When it returns (or unwinds) the other threads stop, and tasks still queued are
    /// dropped.
    ///
    /// The future runs as a task of its own: it is polled only when it is woken, not whenever the thread
    /// wakes for any task.
    ///
    /// # Panics
    /// If another `block_on` of this runtime (or of a clone) is under way: the workers have one set of
    /// threads.
    pub fn block_on<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> T {
        assert!(
            self.pool.enter(),
            "Smol::block_on called while another block_on of the same runtime runs"
        );
        let mut threads = Threads {
            pool: &self.pool,
            done: Arc::new(Flag::default()),
            workers: Vec::new(),
        };
        for i in 1..self.pool.threads() {
            let (pool, done) = (self.pool.clone(), threads.done.clone());
            match std::thread::Builder::new()
                .name(format!("nethergate-smol-{i}"))
                .spawn(move || {
                    // A `Watch`: each wake-up of the worker reads an atomic, not a listener's lock.
                    smol::block_on(done.unless_set(pool.run::<()>(i)));
                }) {
                Ok(worker) => threads.workers.push(worker),
                Err(e) => {
                    tracing::warn!(error = %e, threads = i, "could not start another thread");
                    break;
                }
            }
        }
        // Until now every task went to worker 0, which this thread runs.
        self.pool.set_running(threads.workers.len() + 1);
        let task = self.pool.spawn(0, future);
        smol::block_on(smol::future::or(task, self.pool.run(0)))
    }
}

/// The worker threads of one [`Smol::block_on`]: stopped and joined when it ends, however it ends.
struct Threads<'a> {
    pool: &'a exec::Pool,
    done: Arc<Flag>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Threads<'_> {
    fn drop(&mut self) {
        self.pool.set_running(1);
        self.done.set();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.pool.leave();
    }
}

impl Default for Smol {
    fn default() -> Self {
        Smol::new()
    }
}

/// Binds and runs a proxy for `config` on the threads of a new smol runtime.
pub fn spawn(config: Config, plugins: Plugins) -> io::Result<Running> {
    let rt = Smol::new();
    let proxy = Proxy::bind(rt.clone(), config, plugins)?;
    let (addr, handle) = (proxy.local_addr(), proxy.handle());
    Running::spawn(addr, handle, move || rt.block_on(proxy.run()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

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

    /// The write limit counts what the peer acknowledges (the check is the driver's).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_write_limit_follows_the_peers_progress() -> io::Result<()> {
        let rt = Smol::with_threads(1);
        smol::block_on(nethergate_driver::copy::check_write_limit_follows_progress(
            &rt,
        ))
    }

    /// An accepted client is non-blocking (it is made so at `accept4`, not by async-io), so a read of a
    /// silent client says `WouldBlock` instead of stopping the thread; the peer address is the client's.
    #[test]
    fn an_accepted_client_is_non_blocking_with_its_address() -> io::Result<()> {
        use nethergate_driver::{Listener as _, Stream as _};
        let rt = Smol::with_threads(1);
        let std = TcpListener::bind("127.0.0.1:0")?;
        std.set_nonblocking(true)?;
        let addr = std.local_addr()?;
        let listener = rt.listener(std)?;
        let client = TcpStream::connect(addr)?;
        let (accepted, peer) = smol::block_on(listener.accept())?;
        assert_eq!(Some(peer), client.local_addr().ok());
        let accepted = Listener::register(accepted)?;
        assert!(socket2::SockRef::from(&accepted).nonblocking()?);
        let read = accepted.try_read(&mut [0u8; 8]);
        assert_eq!(read.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        Ok(())
    }

    /// Spawns 4 tasks (`spawn_on(i)` for i in 0..4, from a thread outside the runtime when `outside`,
    /// else from a task) that each note the thread they start and finish on.
    fn spawn_four(outside: bool) -> Vec<(usize, std::thread::ThreadId, std::thread::ThreadId)> {
        let rt = Smol::with_threads(2);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let all_done = Arc::new(Flag::default());
        let spawner = rt.clone();
        let (tasks_seen, tasks_done) = (seen.clone(), all_done.clone());
        rt.block_on(async move {
            let spawn_all = move || {
                let left = Arc::new(AtomicUsize::new(4));
                for i in 0..4 {
                    let (seen, left, done) = (tasks_seen.clone(), left.clone(), tasks_done.clone());
                    spawner.spawn_on(i, async move {
                        let before = std::thread::current().id();
                        Timer::after(Duration::from_millis(5)).await;
                        if let Ok(mut seen) = seen.lock() {
                            seen.push((i, before, std::thread::current().id()));
                        }
                        if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                            done.set();
                        }
                    });
                }
            };
            if outside {
                let _ = std::thread::spawn(spawn_all).join();
            } else {
                spawn_all();
            }
            all_done.wait().await;
        });
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(seen.len(), 4);
        seen
    }

    /// From outside the runtime, `spawn_on(i)` starts a task on thread `i % threads` (where it goes on
    /// afterwards depends on which thread takes its wake-up).
    #[test]
    fn spawn_on_from_outside_starts_a_task_on_its_thread() {
        nethergate_driver::runtime::assert_tasks_started_on_two_threads(&spawn_four(true), false);
    }

    /// From one of the runtime's threads, a task is spawned on that thread, whatever `i` says: it starts
    /// at once, with no other thread woken.
    #[test]
    fn spawn_on_from_a_task_starts_the_task_on_the_same_thread() {
        let seen = spawn_four(false);
        let starts: std::collections::HashSet<_> =
            seen.iter().map(|(_, before, _)| before).collect();
        assert_eq!(starts.len(), 1, "{seen:?}");
    }

    /// Runs `f` on a two-thread runtime on its own thread; fails the test if it does not finish in time
    /// (a lost wake-up shows as a hang).
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce(Smol) -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f(Smol::with_threads(2)));
        });
        match rx.recv_timeout(Duration::from_secs(secs)) {
            Ok(out) => out,
            Err(e) => panic!("the runtime did not finish within {secs} s: {e}"),
        }
    }

    /// Tokens passed around a ring of tasks on both threads, fed from a thread outside the runtime and
    /// mixed with timers and yields, all arrive: no wake-up is lost between the threads' queues, the queue
    /// for wake-ups from outside and the idle threads.
    #[test]
    fn no_wake_up_is_lost_between_threads() {
        const TASKS: usize = 8;
        const TOKENS: usize = 2_000;
        let delivered = within(60, |rt| {
            let spawner = rt.clone();
            rt.block_on(async move {
                let (txs, rxs): (Vec<_>, Vec<_>) = (0..=TASKS)
                    .map(|_| smol::channel::bounded::<usize>(1))
                    .unzip();
                for (i, rx) in rxs.iter().take(TASKS).cloned().enumerate() {
                    let tx = txs[i + 1].clone();
                    spawner.spawn_on(i, async move {
                        while let Ok(token) = rx.recv().await {
                            match token % 7 {
                                0 => {
                                    Timer::after(Duration::from_micros(50)).await;
                                }
                                1 => smol::future::yield_now().await,
                                _ => {}
                            }
                            if tx.send(token).await.is_err() {
                                break;
                            }
                        }
                    });
                }
                let first = txs[0].clone();
                drop(txs);
                std::thread::spawn(move || {
                    for token in 0..TOKENS {
                        if smol::block_on(first.send(token)).is_err() {
                            break;
                        }
                    }
                });
                let last = &rxs[TASKS];
                let mut got = Vec::new();
                while got.len() < TOKENS {
                    match last.recv().await {
                        Ok(token) => got.push(token),
                        Err(_) => break,
                    }
                }
                got
            })
        });
        assert_eq!(delivered, (0..TOKENS).collect::<Vec<_>>());
    }

    /// A task that yields goes on only after the tasks queued on its thread before it ran (a saturated
    /// session gives up its turn to the others).
    #[test]
    fn a_yielding_task_lets_the_queued_tasks_run_first() {
        let rt = Smol::with_threads(1);
        let spawner = rt.clone();
        let ran_before_first_resume = rt.block_on(async move {
            let ran = Arc::new(AtomicUsize::new(0));
            for _ in 0..3 {
                let ran = ran.clone();
                spawner.spawn_on(0, async move {
                    ran.fetch_add(1, Ordering::AcqRel);
                });
            }
            smol::future::yield_now().await;
            ran.load(Ordering::Acquire)
        });
        assert_eq!(ran_before_first_resume, 3);
    }

    /// Task T waits on worker 0; task C, on worker 1, wakes it. When `home_busy`, task B keeps worker 0
    /// busy until C has sent; otherwise C waits until worker 0 is idle. Returns (T's thread before, T's
    /// thread after, C's thread).
    fn wake_from_the_other_thread(
        home_busy: bool,
    ) -> (
        std::thread::ThreadId,
        std::thread::ThreadId,
        std::thread::ThreadId,
    ) {
        within(20, move |rt| {
            let spawner = rt.clone();
            let pool = rt.pool.clone();
            rt.block_on(async move {
                let (tx, rx) = smol::channel::bounded::<()>(1);
                let (t_seen, t_report) = smol::channel::bounded(1);
                let (c_seen, c_report) = smol::channel::bounded(1);
                let (started, sent) = (Arc::new(Flag::default()), Arc::new(Flag::default()));
                // Spins (keeping its thread busy) until `done` says so, for 10 s at most.
                let spin_until = |done: &dyn Fn() -> bool| {
                    let give_up = Instant::now() + Duration::from_secs(10);
                    while !done() && Instant::now() < give_up {
                        std::hint::spin_loop();
                    }
                };
                let t = async move {
                    let before = std::thread::current().id();
                    let _ = rx.recv().await;
                    let _ = t_seen.send((before, std::thread::current().id())).await;
                };
                let (b_started, b_sent) = (started.clone(), sent.clone());
                let b = async move {
                    if home_busy {
                        b_started.set();
                        spin_until(&|| b_sent.is_set());
                    }
                };
                let c = async move {
                    if home_busy {
                        spin_until(&|| started.is_set());
                    } else {
                        spin_until(&|| pool.is_idle(0));
                    }
                    let _ = tx.send(()).await;
                    sent.set();
                    let _ = c_seen.send(std::thread::current().id()).await;
                };
                let _ = std::thread::spawn(move || {
                    spawner.spawn_on(0, t);
                    spawner.spawn_on(0, b);
                    spawner.spawn_on(1, c);
                })
                .join();
                match (t_report.recv().await, c_report.recv().await) {
                    (Ok((before, after)), Ok(c)) => (before, after, c),
                    other => panic!("the tasks did not report: {other:?}"),
                }
            })
        })
    }

    /// A task woken while its home thread is idle runs on the waking thread (no thread is woken for it).
    #[test]
    fn a_task_woken_while_its_thread_is_idle_runs_where_it_was_woken() {
        let (before, after, waker) = wake_from_the_other_thread(false);
        assert_ne!(before, waker);
        assert_eq!(after, waker);
    }

    /// A task woken while its home thread is busy goes back to that thread.
    #[test]
    fn a_task_woken_while_its_thread_is_busy_goes_back_there() {
        let (before, after, waker) = wake_from_the_other_thread(true);
        assert_ne!(before, waker);
        assert_eq!(after, before);
    }

    /// A task that panics is dropped; the thread that ran it goes on running the others.
    #[test]
    fn a_panicking_task_leaves_the_runtime_running() {
        let after = within(20, |rt| {
            let spawner = rt.clone();
            rt.block_on(async move {
                for i in 0..4 {
                    spawner.spawn_on(i, async move { panic!("task {i} panics on purpose") });
                }
                let done = Arc::new(AtomicUsize::new(0));
                let finished = Arc::new(Flag::default());
                for i in 0..4 {
                    let (done, finished) = (done.clone(), finished.clone());
                    spawner.spawn_on(i, async move {
                        Timer::after(Duration::from_millis(1)).await;
                        if done.fetch_add(1, Ordering::AcqRel) == 3 {
                            finished.set();
                        }
                    });
                }
                finished.wait().await;
                done.load(Ordering::Acquire)
            })
        });
        assert_eq!(after, 4);
    }
}
