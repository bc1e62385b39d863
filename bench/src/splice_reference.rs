//! The splice reference (`nethergate-bench --serve-splice-reference`, proxy name `splice-reference`):
//! what zero-copy forwarding costs when written the simplest way, as a floor for `proxy_mode = "zero_copy"`.
//!
//! Two blocking threads per connection, each moving one direction with splice(2) through its own 1 MiB
//! pipe (socket → pipe, then pipe → socket until the pipe is empty), then shutting down the other side's
//! write half. There is no reactor and no readiness bookkeeping, so its CPU per GiB is what the kernel's
//! splice path costs. Threads make it unfit for thousands of sessions: it is not in the default proxies.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::thread;

/// Pipe capacity asked for (the default `/proc/sys/fs/pipe-max-size`).
const PIPE_SIZE: usize = 1 << 20;

/// Proxies `listen` to `backend` until the process is killed.
pub fn serve(listen: SocketAddr, backend: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    loop {
        let Ok((client, _)) = listener.accept() else {
            thread::sleep(std::time::Duration::from_millis(10));
            continue;
        };
        let _ = thread::Builder::new().spawn(move || session(client, backend));
    }
}

fn session(client: TcpStream, backend: SocketAddr) -> io::Result<()> {
    let server = TcpStream::connect(backend)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (c, s) = (client.try_clone()?, server.try_clone()?);
    let up = thread::Builder::new().spawn(move || pump(&c, &s))?;
    let down = pump(&server, &client);
    let _ = up.join();
    down
}

/// Moves `from` → `to` until EOF or an error, then shuts down `to`'s write half.
fn pump(from: &TcpStream, to: &TcpStream) -> io::Result<()> {
    let (read, write) = pipe()?;
    let result = (|| loop {
        let n = splice(from.as_raw_fd(), write.as_raw_fd(), PIPE_SIZE)?;
        if n == 0 {
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            match splice(read.as_raw_fd(), to.as_raw_fd(), left)? {
                0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                m => left -= m,
            }
        }
    })();
    let _ = to.shutdown(Shutdown::Write);
    result
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two new fds into the array; we take ownership of both.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fds were just created and belong to nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a pipe we own; failure leaves the default size, which still works.
    unsafe {
        libc::fcntl(
            write.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            PIPE_SIZE as libc::c_int,
        )
    };
    Ok((read, write))
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: a blocking splice between fds owned by live objects, with no offsets.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE,
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
