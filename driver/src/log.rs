//! Log output that never stalls a session.
//!
//! `tracing_subscriber::fmt` writes each event with one `write` call on the thread that logged it. For a
//! proxy that is two problems: a write syscall per session-end line (about a fiftieth of the CPU a session
//! costs), and a session thread that blocks, with every session on it, when the log reader stops reading
//! (a paused terminal, a full pipe to a log shipper). [`Output`] instead appends each line to a shared
//! buffer, and one thread writes the buffer out in batches, at most [`Output::DELAY`] after a line was
//! logged. When the output does not keep up and [`Output::LIMIT`] bytes are waiting, further lines are
//! dropped and counted, and a warning says how many once the output accepts writes again. Nothing wakes
//! while nothing is logged.
//!
//! `tracing-appender`'s non-blocking writer moves the writes to a thread too, but writes every line on
//! its own as soon as it arrives, so it keeps the syscall per line; batching is the point here.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

mod format;
pub use format::{HumanFields, Time};

/// Batched, non-blocking log output: a [`tracing_subscriber::fmt::MakeWriter`] plus its writer thread.
/// Dropping it (or [`Output::finish`]) writes out what is waiting and stops the thread.
pub struct Output {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    /// Disconnected when the writer thread returns.
    exited: std::sync::mpsc::Receiver<()>,
}

/// The handle `tracing_subscriber` writes through: cheap to clone, shares the buffer of its [`Output`].
#[derive(Clone)]
pub struct Lines {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
    limit: usize,
    /// The writer thread: its own lines (the dropped-lines warning) pass the limit and `finish`.
    writer: std::sync::OnceLock<std::thread::ThreadId>,
}

#[derive(Default)]
struct State {
    waiting: Vec<u8>,
    dropped: u64,
    finished: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a single append or swap: a panic elsewhere cannot leave it half done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Output {
    /// How long the writer thread lets lines gather before it writes them.
    pub const DELAY: Duration = Duration::from_millis(10);
    /// Bytes that may wait for a slow output before lines are dropped.
    pub const LIMIT: usize = 1 << 20;
    /// How long [`Output::finish`] waits for the last lines to be written: an output that accepts
    /// nothing (a paused terminal) must not keep the process from exiting.
    pub const FINISH_WAIT: Duration = Duration::from_secs(2);

    /// Batches lines into `out` (the process's stdout in the binaries) with the default delay and limit.
    pub fn new(out: impl Write + Send + 'static) -> io::Result<Output> {
        Output::with(out, Output::DELAY, Output::LIMIT)
    }

    /// Batches lines into `out`, letting them gather for `delay` and holding at most `limit` bytes.
    pub fn with(
        mut out: impl Write + Send + 'static,
        delay: Duration,
        limit: usize,
    ) -> io::Result<Output> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            limit,
            writer: std::sync::OnceLock::new(),
        });
        let (exiting, exited) = std::sync::mpsc::channel::<()>();
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("log".into())
                .spawn(move || {
                    let _exiting = exiting;
                    let _ = shared.writer.set(std::thread::current().id());
                    write_batches(&shared, &mut out, delay);
                })?
        };
        Ok(Output {
            shared,
            writer: Some(writer),
            exited,
        })
    }

    /// The writer to give `tracing_subscriber::fmt().with_writer(..)`.
    pub fn lines(&self) -> Lines {
        Lines {
            shared: self.shared.clone(),
        }
    }

    /// Lines dropped so far because the output did not keep up (reset when the warning is written).
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }

    /// Writes out every line logged so far and stops the writer thread; later lines are dropped. Waits
    /// at most [`Output::FINISH_WAIT`] for an output that accepts nothing, then leaves the writer behind.
    pub fn finish(&mut self) {
        self.finish_within(Output::FINISH_WAIT);
    }

    fn finish_within(&mut self, wait: Duration) {
        self.shared.lock().finished = true;
        self.shared.ready.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = self.exited.recv_timeout(wait);
            if writer.is_finished() {
                let _ = writer.join();
            }
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The writer thread: waits for a first line, lets more gather, writes them all with one call.
fn write_batches(shared: &Shared, out: &mut impl Write, delay: Duration) {
    let mut batch = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.waiting.is_empty() && !state.finished {
            state = shared.ready.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if state.waiting.is_empty() {
            return; // finished, nothing left
        }
        if !state.finished {
            drop(state);
            std::thread::sleep(delay);
            state = shared.lock();
        }
        std::mem::swap(&mut batch, &mut state.waiting);
        let dropped = std::mem::take(&mut state.dropped);
        drop(state);
        // A failed write (stdout closed) loses this batch, as it would lose a line; the proxy goes on.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if dropped > 0 {
            // Logged through the subscriber, so it has the format of every other line; this thread's own
            // lines are taken even when finishing, so the warning is written before the thread returns.
            tracing::warn!(
                dropped,
                "log output fell behind: {dropped} log line(s) dropped"
            );
        }
    }
}

impl Write for Lines {
    /// `tracing_subscriber::fmt` hands over one whole line per call.
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let own = self.shared.writer.get() == Some(&std::thread::current().id());
        let mut state = self.shared.lock();
        if state.finished && !own {
            return Ok(line.len());
        }
        if state.waiting.len() + line.len() > self.shared.limit && !own {
            state.dropped += 1;
            return Ok(line.len());
        }
        let first = state.waiting.is_empty();
        state.waiting.extend_from_slice(line);
        drop(state);
        if first {
            self.shared.ready.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    /// An output that records every `write_all` batch, optionally blocking until released.
    #[derive(Clone, Default)]
    struct Recorder {
        batches: Arc<Mutex<Vec<Vec<u8>>>>,
        gate: Option<Arc<Mutex<mpsc::Receiver<()>>>>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some(gate) = &self.gate {
                let _ = gate.lock().unwrap().recv();
            }
            self.batches.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Recorder {
        fn text(&self) -> String {
            String::from_utf8(self.batches.lock().unwrap().concat()).unwrap()
        }
    }

    fn write_line(lines: &Lines, i: usize) {
        let mut w = lines.clone();
        w.write_all(format!("line {i}\n").as_bytes()).unwrap();
    }

    #[test]
    fn lines_arrive_whole_in_order_and_batched() {
        let out = Recorder::default();
        let mut output = Output::with(out.clone(), Duration::from_millis(50), 1 << 20).unwrap();
        let lines = output.lines();
        for i in 0..100 {
            write_line(&lines, i);
        }
        output.finish();
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(out.text(), expected);
        // 100 lines logged within the delay are written with a single call, not one per line.
        assert_eq!(out.batches.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_line_is_written_within_the_delay_without_finishing() {
        let out = Recorder::default();
        let output = Output::with(out.clone(), Duration::from_millis(5), 1 << 20).unwrap();
        write_line(&output.lines(), 7);
        let start = Instant::now();
        while out.text().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(5), "never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(out.text(), "line 7\n");
    }

    #[test]
    fn a_stalled_output_never_blocks_the_logging_thread_and_drops_are_counted() {
        let (release, gate) = mpsc::channel();
        let out = Recorder {
            gate: Some(Arc::new(Mutex::new(gate))),
            ..Recorder::default()
        };
        // Room for 10 lines of 7-8 bytes while the output is stuck.
        let mut output = Output::with(out.clone(), Duration::from_millis(1), 80).unwrap();
        let lines = output.lines();
        write_line(&lines, 0);
        // Let the writer thread take line 0 and block in the output.
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        for i in 1..1000 {
            write_line(&lines, i);
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "logging waited for the output"
        );
        let dropped = output.dropped();
        assert!((985..=990).contains(&dropped), "dropped {dropped}");
        // Release the output: what was kept is written, in order.
        for _ in 0..10 {
            let _ = release.send(());
        }
        drop(release);
        output.finish();
        let text = out.text();
        let kept: Vec<&str> = text.lines().collect();
        assert_eq!(kept[0], "line 0");
        assert_eq!(kept.len() as u64, 1000 - dropped);
        for pair in kept.windows(2) {
            let n = |s: &str| s.trim_start_matches("line ").parse::<usize>().unwrap();
            assert_eq!(n(pair[1]), n(pair[0]) + 1, "{pair:?}");
        }
    }

    #[test]
    fn finishing_gives_up_on_an_output_that_accepts_nothing() {
        let (_release, gate) = mpsc::channel::<()>();
        let out = Recorder {
            gate: Some(Arc::new(Mutex::new(gate))),
            ..Recorder::default()
        };
        let mut output = Output::with(out, Duration::from_millis(1), 1 << 20).unwrap();
        write_line(&output.lines(), 0);
        std::thread::sleep(Duration::from_millis(50)); // the writer is now stuck in the output
        let start = Instant::now();
        output.finish_within(Duration::from_millis(100));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "finish waited for the output"
        );
    }

    #[test]
    fn lines_after_finish_are_dropped_quietly() {
        let out = Recorder::default();
        let mut output = Output::with(out.clone(), Duration::from_millis(1), 1 << 20).unwrap();
        let lines = output.lines();
        write_line(&lines, 1);
        output.finish();
        write_line(&lines, 2);
        drop(output);
        assert_eq!(out.text(), "line 1\n");
    }
}
