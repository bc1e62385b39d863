//! Zero-copy forwarding with splice(2) through a kernel pipe (Linux).
//!
//! Pipes are borrowed from a per-thread pool only while bytes are in flight and given back empty, so an idle
//! session holds no pipe. The pipe is always drained before the next splice into it, so it is never full:
//! a splice that cannot proceed is blocked by the socket alone, and only sockets need reactor readiness.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// The pipe capacity asked for with `F_SETPIPE_SZ` (the default `/proc/sys/fs/pipe-max-size`, the most an
/// unprivileged process may ask for). One splice then moves up to this much: with the default 64 KiB the
/// proxy spent 0.51 CPU s/GiB at 32 bulk sessions, with 1 MiB 0.42 (bench/RESULTS.md). Bigger pipes cost
/// no memory while empty, and pipes are only held while bytes are in flight.
const PIPE_SIZE: usize = 1 << 20;

/// What a pipe holds when `F_SETPIPE_SZ` and `F_GETPIPE_SZ` both fail (the kernel default). A smaller
/// pipe (an unprivileged user over `/proc/sys/fs/pipe-user-pages-soft` gets two pages) still works: a
/// splice moves what fits.
const DEFAULT_PIPE_SIZE: usize = 64 * 1024;

/// Most idle pipes a thread keeps.
const POOL_MAX_IDLE: usize = 16;

/// A non-blocking pipe.
#[derive(Debug)]
struct RawPipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes the pipe holds at most.
    capacity: usize,
}

thread_local! {
    static POOL: RefCell<Vec<RawPipe>> = const { RefCell::new(Vec::new()) };
}

/// Makes sure a splice into a socket whose peer is gone fails with `EPIPE` instead of raising `SIGPIPE`.
///
/// A socket write can say `MSG_NOSIGNAL` (the buffer path does); `splice` has no such flag, and the kernel
/// raises `SIGPIPE` for it. Rust programs ignore `SIGPIPE` from their start, but a program embedding the
/// driver may not (a C or Python host, a Rust one built with `-Zon-broken-pipe=kill`): the first player to
/// leave during a zero-copy transfer would kill it, and every other session with it. So before the first
/// pipe exists, a `SIGPIPE` still at its default disposition (terminate) is set to ignored; a handler or
/// an ignore the program installed itself is left as it is.
fn ignore_sigpipe_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sigaction with a null new action only reads the current one into `old`, which is a
        // zeroed, valid sigaction; `signal` with SIG_IGN installs no handler code.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_DFL
            {
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            }
        }
    });
}

fn new_pipe() -> io::Result<RawPipe> {
    ignore_sigpipe_once();
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array we pass; we own them from here on.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ / F_GETPIPE_SZ on a pipe we own; each returns the capacity or -1 and changes
    // nothing else.
    let capacity = unsafe {
        match libc::fcntl(
            write.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            PIPE_SIZE as libc::c_int,
        ) {
            -1 => libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ),
            size => size,
        }
    };
    let capacity = usize::try_from(capacity)
        .ok()
        .filter(|&c| c > 0)
        .unwrap_or(DEFAULT_PIPE_SIZE);
    Ok(RawPipe {
        read,
        write,
        capacity,
    })
}

/// Idle pipes in the calling thread's pool (each the leftover of a splice that ran on this thread).
pub fn idle_pipes() -> usize {
    POOL.try_with(|p| p.borrow().len()).unwrap_or(0)
}

/// A pipe borrowed from the pool; returned to it on drop only if it was left empty.
#[derive(Debug)]
pub struct Pipe {
    raw: Option<RawPipe>,
    /// Bytes spliced in and not yet spliced out.
    pub pending: usize,
}

impl Pipe {
    /// Takes an empty pipe from this thread's pool, or creates one.
    pub fn take() -> io::Result<Pipe> {
        let pooled = POOL.try_with(|p| p.borrow_mut().pop()).ok().flatten();
        let raw = match pooled {
            Some(p) => p,
            None => new_pipe()?,
        };
        Ok(Pipe {
            raw: Some(raw),
            pending: 0,
        })
    }

    /// Moves what `from` has (up to the pipe's capacity) into the empty pipe.
    pub fn fill(&mut self, from: &impl AsFd) -> io::Result<usize> {
        let Some(raw) = &self.raw else {
            return Err(io::Error::other("pipe already closed"));
        };
        let n = splice(
            from.as_fd().as_raw_fd(),
            raw.write.as_raw_fd(),
            raw.capacity,
        )?;
        self.pending += n;
        Ok(n)
    }

    /// Moves pending bytes from the pipe into `to`.
    pub fn drain(&mut self, to: &impl AsFd) -> io::Result<usize> {
        let Some(raw) = &self.raw else {
            return Err(io::Error::other("pipe already closed"));
        };
        let n = splice(raw.read.as_raw_fd(), to.as_fd().as_raw_fd(), self.pending)?;
        self.pending -= n;
        Ok(n)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if self.pending > 0 {
            return; // bytes stranded by an error: close the pipe with them
        }
        if let Some(raw) = self.raw.take() {
            let _ = POOL.try_with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOL_MAX_IDLE {
                    p.push(raw);
                }
            });
        }
    }
}

fn splice(from: libc::c_int, to: libc::c_int, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: plain syscall on fds owned by live objects; null offsets mean "use the file position",
        // which is what sockets and pipes require.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// Set for the child process of the test below.
    const CHILD: &str = "NETHERGATE_SPLICE_SIGPIPE_CHILD";

    /// Splices bytes into a socket whose peer has closed until the kernel refuses them (past the reset it
    /// reports first); the error it gave.
    fn splice_into_a_closed_peer() -> io::Result<io::Error> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let mut sender = TcpStream::connect(listener.local_addr()?)?;
        let (from, _) = listener.accept()?;
        let to = TcpStream::connect(listener.local_addr()?)?;
        drop(listener.accept()?.0); // the player is gone: the first write gets a reset, the next EPIPE
        from.set_nonblocking(true)?;
        to.set_nonblocking(true)?;
        let mut pipe = Pipe::take()?;
        for _ in 0..50 {
            sender.write_all(&[7; 1000])?;
            std::thread::sleep(Duration::from_millis(10));
            if pipe.pending == 0 {
                match pipe.fill(&from) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            match pipe.drain(&to) {
                // The reset is reported once; the next write is the one that raises SIGPIPE.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                Err(e) => return Ok(e),
                Ok(_) => {}
            }
        }
        Err(io::Error::other("the closed peer took every byte"))
    }

    /// What the child process runs: with `SIGPIPE` at its default disposition, as in a program that does
    /// not ignore it, the splice must fail with an error and the process must live to report it.
    #[test]
    #[ignore = "run in a child process by the test below"]
    fn sigpipe_child() {
        if std::env::var_os(CHILD).is_none() {
            return; // `--ignored` by hand: the test below is the one to run
        }
        // SAFETY: restores the default disposition; no handler code is installed.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let code = match splice_into_a_closed_peer() {
            Ok(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
            Ok(e) => {
                eprintln!("unexpected error: {e}");
                2
            }
            Err(e) => {
                eprintln!("no refusal: {e}");
                3
            }
        };
        std::process::exit(code);
    }

    /// A zero-copy session whose player leaves mid-transfer gets `EPIPE`, not a `SIGPIPE` that kills a
    /// process embedding the driver with the default disposition (checked in a child process, since a test
    /// binary ignores `SIGPIPE` like every Rust program).
    #[test]
    fn a_splice_into_a_gone_peer_fails_with_epipe_instead_of_killing_the_process() -> io::Result<()>
    {
        let status = std::process::Command::new(std::env::current_exe()?)
            .args([
                "--exact",
                "splice::tests::sigpipe_child",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .status()?;
        assert!(status.success(), "child: {status:?}");
        Ok(())
    }
}
