//! nethergate on tokio: the [`Runtime`] implementation, the [`Runtimes`] the binary runs on (a reactor per
//! thread), and [`spawn`] to run a proxy on its own threads.

use nethergate_core::{Config, Plugins};
use nethergate_driver::signal::Flag;
use nethergate_driver::{Interest, Proxy, Running, Runtime};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::unix::AsyncFd;

/// The tokio runtime, for the driver: session threads, each a single-threaded tokio runtime with its own
/// reactor; a session is accepted, registered and served on one of them and stays there.
///
/// A multi-threaded tokio runtime shares one reactor between its workers: a worker woken by a socket
/// wakes another one (a futex) to look for more work, about once per game message at low load. Here a
/// session's sockets, timers and task all belong to one thread, as in HAProxy.
#[derive(Debug, Clone)]
pub struct Tokio {
    threads: Arc<[tokio::runtime::Handle]>,
}

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

/// A listening socket watched by the reactor of the session thread that accepts on it; what it accepts
/// is registered by the thread that serves it.
#[derive(Debug)]
pub struct Listener(AsyncFd<mio::net::TcpListener>);

impl nethergate_driver::Listener for Listener {
    type Stream = Stream;
    /// Not registered with any reactor yet: the session thread's reactor takes it (mio's accept sets
    /// `SOCK_NONBLOCK`, as tokio needs).
    type Accepted = std::net::TcpStream;
    async fn accept(&self) -> io::Result<(std::net::TcpStream, SocketAddr)> {
        let (s, peer) = self
            .0
            .async_io(tokio::io::Interest::READABLE, |l| l.accept())
            .await?;
        Ok((s.into(), peer))
    }
    fn register(accepted: std::net::TcpStream) -> io::Result<Stream> {
        tokio::net::TcpStream::from_std(accepted).map(Stream)
    }
}

impl Runtime for Tokio {
    type Stream = Stream;
    type Listener = Listener;
    type Sleep = tokio::time::Sleep;

    fn listener(&self, std: std::net::TcpListener) -> io::Result<Listener> {
        // Non-blocking already (the trait's contract).
        let listener = mio::net::TcpListener::from_std(std);
        // SAFETY: the listener owns its descriptor, which stays open and the same until the AsyncFd (which
        // owns the listener) is dropped.
        unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) }
            .map(Listener)
            .map_err(|e| e.into_parts().1)
    }
    async fn connect(&self, addr: SocketAddr) -> io::Result<Stream> {
        let (std, established) = nethergate_driver::runtime::start_connect(addr)?;
        let stream = tokio::net::TcpStream::from_std(std)?;
        if !established {
            stream.writable().await?;
            if let Some(e) = stream.take_error()? {
                return Err(e);
            }
        }
        Ok(Stream(stream))
    }
    async fn resolve(&self, host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host.as_str(), port))
            .await?
            .collect())
    }
    fn sleep_until(&self, deadline: Instant) -> tokio::time::Sleep {
        tokio::time::sleep_until(deadline.into())
    }
    fn threads(&self) -> usize {
        self.threads.len()
    }
    fn spawn_on<F: Future<Output = ()> + Send + 'static>(&self, thread: usize, future: F) {
        // From a task of that same thread, tokio queues it locally without waking anything.
        self.threads[thread % self.threads.len()].spawn(future);
    }
    async fn yield_now(&self) {
        // Deferred: woken only once the thread has polled its reactor, so other sessions' I/O comes first.
        tokio::task::yield_now().await
    }
}

/// The runtimes the binary runs on: `threads` session threads ("nethergate-worker"), each a
/// single-threaded tokio runtime. The first one also runs the future given to [`Runtimes::block_on`].
/// Dropping it stops them.
#[derive(Debug)]
pub struct Runtimes {
    tokio: Tokio,
    stop: Arc<Flag>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Builds the [`Runtimes`] with `threads` session threads (at least one).
pub fn runtime(threads: usize) -> io::Result<Runtimes> {
    let count = threads.max(1);
    let build = |i: usize| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start session thread {} of {count}: {e}", i + 1),
                )
            })
    };
    // Built up in place: on an error, dropping it stops the threads already started.
    let mut rts = Runtimes {
        tokio: Tokio {
            threads: Arc::new([]),
        },
        stop: Arc::new(Flag::default()),
        threads: Vec::new(),
    };
    let mut handles = Vec::new();
    for i in 0..count {
        let (rt, stop) = (build(i)?, rts.stop.clone());
        handles.push(rt.handle().clone());
        rts.threads.push(
            std::thread::Builder::new()
                .name("nethergate-worker".into())
                .spawn(move || {
                    rt.block_on(stop.wait());
                    // Not waiting for blocking jobs: a name lookup (`getaddrinfo`, which a session's
                    // abort cannot cancel) against a silent resolver would hold the exit for up to 30 s.
                    rt.shutdown_background();
                })
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot start session thread {} of {count}: {e}", i + 1),
                    )
                })?,
        );
    }
    rts.tokio.threads = handles.into();
    Ok(rts)
}

impl Runtimes {
    /// The driver's runtime over these threads.
    pub fn tokio(&self) -> Tokio {
        self.tokio.clone()
    }

    /// Runs `future` (the proxy) on the first session thread and waits for it on this one.
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match futures_lite::future::block_on(self.tokio.threads[0].spawn(future)) {
            Ok(out) => out,
            // Cancelled cannot happen while `self` keeps the runtime; a panic goes on in the caller.
            Err(e) => std::panic::resume_unwind(
                e.try_into_panic()
                    .unwrap_or_else(|e| Box::new(e.to_string())),
            ),
        }
    }
}

impl Drop for Runtimes {
    fn drop(&mut self) {
        self.stop.set();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Binds and runs a proxy for `config` on new threads with their own tokio runtimes.
pub fn spawn(config: Config, plugins: Plugins) -> io::Result<Running> {
    let rt = runtime(nethergate_driver::cli::threads(None))?;
    let proxy = Proxy::bind(rt.tokio(), config, plugins)?;
    let (addr, handle) = (proxy.local_addr(), proxy.handle());
    Running::spawn(addr, handle, move || rt.block_on(proxy.run()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    /// Runs `test` on a current-thread tokio runtime of the test's own, with the driver's runtime handle of
    /// a one-thread [`runtime`].
    fn on_a_test_runtime<T, F: std::future::Future<Output = io::Result<T>>>(
        test: impl FnOnce(Tokio) -> F,
    ) -> io::Result<T> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let tokio = runtime(1)?.tokio();
        rt.block_on(test(tokio))
    }

    /// `spawn_on(i)` runs a task on session thread `i % threads`, and the task stays on that thread (its
    /// timers and sockets belong to that thread's reactor).
    #[test]
    fn spawn_on_runs_a_task_on_its_thread_and_it_stays_there() -> io::Result<()> {
        let rts = runtime(2)?;
        let (tx, rx) = mpsc::channel();
        for i in 0..4 {
            let tx = tx.clone();
            rts.tokio().spawn_on(i, async move {
                let before = std::thread::current().id();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                let _ = tx.send((i, before, std::thread::current().id()));
            });
        }
        let seen: Vec<_> = (0..4)
            .filter_map(|_| rx.recv_timeout(std::time::Duration::from_secs(5)).ok())
            .collect();
        assert_eq!(seen.len(), 4, "{seen:?}");
        nethergate_driver::runtime::assert_tasks_started_on_two_threads(&seen, true);
        Ok(())
    }

    /// A name lookup runs as a blocking job that nothing can cancel; a stuck one must not hold the exit.
    #[test]
    fn stopping_does_not_wait_for_a_blocking_job() -> io::Result<()> {
        let rts = runtime(1)?;
        let (tx, rx) = mpsc::channel();
        rts.tokio().spawn_on(0, async move {
            let _ = tokio::task::spawn_blocking(move || {
                let _ = tx.send(()); // running, no longer a queued job that stopping could drop
                std::thread::sleep(Duration::from_secs(20));
            })
            .await;
        });
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|e| io::Error::other(e.to_string()))?;
        let started = std::time::Instant::now();
        drop(rts);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        Ok(())
    }

    /// A loopback connect is ready at the first poll; one still in progress goes through the reactor (the
    /// checks are the driver's, shared with the smol runtime).
    #[test]
    fn connect_is_ready_at_once_on_loopback_and_waits_otherwise() -> io::Result<()> {
        use nethergate_driver::runtime::{
            check_connect_in_progress_completes_through_the_reactor as in_progress,
            check_loopback_connect_is_ready_at_once as at_once,
        };
        on_a_test_runtime(|tokio| async move {
            at_once(&tokio).await?;
            in_progress(&tokio).await
        })
    }

    /// The write limit counts what the peer acknowledges, and cuts it a limit after it stopped (the
    /// check is the driver's, shared with the smol runtime).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_write_limit_follows_the_peers_progress() -> io::Result<()> {
        on_a_test_runtime(|tokio| async move {
            nethergate_driver::copy::check_write_limit_follows_progress(&tokio).await
        })
    }

    /// `zero_copy` splices bulk transfers but copies small packets through a buffer (two splices and a
    /// pipe cost more than one read and one write of a few hundred bytes); every byte arrives either way.
    #[cfg(target_os = "linux")]
    #[test]
    fn zero_copy_splices_bulk_and_copies_small_packets() -> io::Result<()> {
        use nethergate_core::{ProxyMode, Timeouts};
        use nethergate_driver::splice::idle_pipes;
        use tokio::io::AsyncReadExt;

        async fn pair() -> io::Result<(tokio::net::TcpStream, tokio::net::TcpStream)> {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let near = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
            Ok((near, listener.accept().await?.0))
        }

        on_a_test_runtime(|driver_rt| async move {
            let (mut client, near) = pair().await?;
            let (far, mut backend) = pair().await?;
            let (near, far, stop) = (Stream(near), Stream(far), Flag::default());
            let mut watch = stop.watch();
            let copy = nethergate_driver::copy::bidirectional(
                &driver_rt,
                &near,
                &far,
                ProxyMode::ZeroCopy,
                Timeouts::default(),
                &[],
                &mut watch,
            );
            // Every idle session holds this future: its size is memory per session (1,184 bytes with
            // rustc 1.95, the session's abort watch held outside it, by the caller; an inlined rare-path
            // write and a field in each direction once cost 0.75 KiB per session in the benchmark's idle
            // figure). Raise the bound only knowing that.
            let size = std::mem::size_of_val(&copy);
            assert!(size <= 1_248, "the copy future grew to {size} bytes");
            let talk = async {
                let mut buf = vec![0u8; 300];
                for i in 0..50u8 {
                    client.write_all(&[i; 300]).await?;
                    backend.read_exact(&mut buf).await?;
                    assert!(buf.iter().all(|&b| b == i));
                    backend.write_all(&buf).await?;
                    client.read_exact(&mut buf).await?;
                    assert!(buf.iter().all(|&b| b == i));
                }
                assert_eq!(idle_pipes(), 0, "small packets went through a pipe");
                let bulk: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
                let mut received = vec![0u8; bulk.len()];
                let (sent, read) = futures_lite::future::zip(
                    async {
                        client.write_all(&bulk).await?;
                        client.shutdown().await
                    },
                    backend.read_exact(&mut received),
                )
                .await;
                sent?;
                read?;
                assert!(received == bulk, "bulk bytes differ");
                assert!(idle_pipes() >= 1, "bulk was not spliced");
                drop(backend);
                io::Result::Ok(())
            };
            let (copied, talked) = futures_lite::future::zip(copy, talk).await;
            talked?;
            assert_eq!(copied.c2b, 50 * 300 + (4 << 20));
            assert_eq!(copied.b2c, 50 * 300);
            Ok(())
        })
    }

    /// A saturated session gives up its turn with `yield_now`; the worker must look at the reactor before
    /// it resumes it. Otherwise a session whose socket has just become readable waits behind dozens of
    /// turns of the saturated one (tokio polls the reactor only every 61 tasks while tasks are queued).
    #[test]
    fn a_yield_lets_the_reactor_run_before_the_task_resumes() -> io::Result<()> {
        on_a_test_runtime(|tokio| async move {
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
                let (turns, tokio) = (turns.clone(), tokio.clone());
                async move {
                    while turns.load(Ordering::Relaxed) < 1_000 {
                        tokio.yield_now().await;
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
