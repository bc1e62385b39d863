//! The smol runtime's executor: tasks run on the thread that takes their wake-up, leader/followers style.
//!
//! async-io has one reactor per process, and whichever thread is idle in `async_io::block_on` polls it.
//! With `async_executor`'s executors, a task woken by an I/O event still runs where it was queued: every
//! event for another thread's task costs a cross-thread wake-up, and a thread that only takes events for
//! others hands the reactor to async-io's own thread after 500 µs, which then wakes a worker for every
//! event.
//!
//! Here a task woken on a worker thread while its own thread (the one it last ran on) is idle is queued on
//! the waking thread, so the thread that polled the reactor runs what it woke and no other thread is
//! disturbed. A task whose thread is busy goes back to it, which will get to it without a wake-up and with
//! its buffers warm (running everything where it was woken cost 11–17 % of bulk throughput). A thread with
//! more than [`SPREAD_ABOVE`] tasks queued wakes an idle sibling, which takes half of them; a busy thread
//! leaves the reactor to the others, so under load the work spreads over every thread. A task spawned
//! from a worker thread starts on that thread.
//!
//! Built from smol's own parts: `async-task` tasks, `concurrent-queue` queues and `atomic-waker`, with
//! async-io's `block_on` and reactor.

use async_task::{ScheduleInfo, WithInfo};
use atomic_waker::AtomicWaker;
use concurrent_queue::ConcurrentQueue;
use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Tasks a thread runs before it lets `block_on` poll the reactor once without waiting.
const BUDGET: usize = 64;
/// A thread with more tasks queued than this wakes an idle sibling to take half of them. Waking on the
/// second task already spread game traffic (one small packet per wake-up) over both threads of a 2-core
/// machine and cost 24 % more CPU per message than tokio; above 4 the cost was level with tokio's, for
/// 3 % less throughput with 32 bulk sessions (one round each).
const SPREAD_ABOVE: usize = 4;
/// How often (in tasks run) a thread looks at the shared queue before its own.
const SHARED_EVERY: usize = 31;

/// The queues of every thread, shared by the runtime's clones and every task's scheduler.
pub(crate) struct Pool {
    workers: Box<[Worker]>,
    /// Tasks woken on threads that are not the pool's (async-io's thread, blocking threads).
    shared: ConcurrentQueue<Runnable>,
    /// How many workers have a thread (the first ones); new tasks go only to those.
    running: AtomicUsize,
    /// A [`Pool::enter`] is under way.
    entered: AtomicBool,
}

struct Worker {
    queue: ConcurrentQueue<Runnable>,
    /// Tasks that woke themselves while running (they yielded): queued again once the reactor was polled.
    yielded: ConcurrentQueue<Runnable>,
    /// The waker of the `block_on` running this worker.
    waker: AtomicWaker,
    /// The worker found nothing to run and waits to be woken.
    idle: AtomicBool,
}

/// A task, with the worker it last ran on (its home).
type Runnable = async_task::Runnable<AtomicUsize>;
/// The handle of a task spawned on the pool.
pub(crate) type Task<T> = async_task::Task<T, AtomicUsize>;

/// The worker the current thread runs, if any.
#[derive(Clone, Copy)]
struct Current {
    pool: *const Pool,
    index: usize,
    /// Inside [`Pool::poll_worker`], which looks at the queue again before it returns.
    running: bool,
}

thread_local! {
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
}

impl Pool {
    pub(crate) fn new(threads: usize) -> Arc<Pool> {
        Arc::new(Pool {
            workers: (0..threads.max(1))
                .map(|_| Worker {
                    queue: ConcurrentQueue::unbounded(),
                    yielded: ConcurrentQueue::unbounded(),
                    waker: AtomicWaker::new(),
                    idle: AtomicBool::new(false),
                })
                .collect(),
            shared: ConcurrentQueue::unbounded(),
            running: AtomicUsize::new(1),
            entered: AtomicBool::new(false),
        })
    }

    pub(crate) fn threads(&self) -> usize {
        self.workers.len()
    }

    pub(crate) fn set_running(&self, threads: usize) {
        self.running.store(threads.max(1), Ordering::Release);
    }

    /// Marks the pool as run by a `block_on`; says `false` if one is already under way.
    pub(crate) fn enter(&self) -> bool {
        !self.entered.swap(true, Ordering::AcqRel)
    }

    /// Spawns `future`: on this thread's worker when called from one of the pool's threads, otherwise
    /// first queued on worker `thread` (modulo the running ones).
    pub(crate) fn spawn<T: Send + 'static>(
        self: &Arc<Self>,
        thread: usize,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Task<T> {
        let pool = self.clone();
        let schedule = WithInfo(move |r, info| pool.schedule(r, info));
        let index = match self.current() {
            Some(current) => current.index,
            None => thread % self.running_workers().len(),
        };
        // A panicking task is caught in it (as async-executor does), not unwound through the worker.
        let (runnable, task) = async_task::Builder::new()
            .metadata(AtomicUsize::new(index))
            .propagate_panic(true)
            .spawn(move |_| future, schedule);
        let worker = &self.workers[index];
        // An unbounded queue refuses only once closed, and these are never closed.
        let _ = worker.queue.push(runnable);
        worker.wake();
        task
    }

    fn current(&self) -> Option<Current> {
        CURRENT
            .try_with(Cell::get)
            .ok()
            .flatten()
            .filter(|c| std::ptr::eq(c.pool, self))
    }

    fn schedule(&self, runnable: Runnable, info: ScheduleInfo) {
        let Some(current) = self.current() else {
            let _ = self.shared.push(runnable);
            self.wake_idle(None);
            return;
        };
        let worker = &self.workers[current.index];
        if current.running && info.woken_while_running {
            let _ = worker.yielded.push(runnable);
            return;
        }
        // A task whose home thread is busy goes back there (it will get to it without being woken, and
        // its buffers are warm there); one whose home is idle runs here, so no thread is woken for it.
        let home = runnable.metadata().load(Ordering::Relaxed);
        let busy = |w: &Worker| !w.idle.load(Ordering::SeqCst);
        let to = match self.running_workers().get(home) {
            Some(w) if home != current.index && busy(w) => home,
            _ => current.index,
        };
        let worker = &self.workers[to];
        let _ = worker.queue.push(runnable);
        // The home may have gone idle since it was looked at; this thread, if it was woken while it polled
        // the reactor, has its `block_on` poll the worker again.
        worker.wake();
        if worker.queue.len() > SPREAD_ABOVE {
            self.wake_idle(Some(to));
        }
    }

    /// The workers that have a thread.
    fn running_workers(&self) -> &[Worker] {
        let running = self.running.load(Ordering::Acquire);
        &self.workers[..running.clamp(1, self.workers.len())]
    }

    /// Wakes one idle worker other than `except`.
    fn wake_idle(&self, except: Option<usize>) {
        // Pairs with the fence in `poll_worker`: either that worker sees the task queued, or this sees it
        // idle.
        fence(Ordering::SeqCst);
        for (i, w) in self.running_workers().iter().enumerate() {
            if Some(i) != except && w.idle.load(Ordering::SeqCst) && w.wake() {
                return;
            }
        }
    }

    /// Runs worker `index`'s tasks on this thread; never completes. Await it inside `async_io::block_on`.
    pub(crate) fn run<T>(&self, index: usize) -> Run<'_, T> {
        let previous = CURRENT
            .try_with(|c| {
                c.replace(Some(Current {
                    pool: self,
                    index,
                    running: false,
                }))
            })
            .ok()
            .flatten();
        Run {
            pool: self,
            index,
            previous,
            output: std::marker::PhantomData,
        }
    }

    fn set_running_flag(&self, index: usize, running: bool) {
        let _ = CURRENT.try_with(|c| {
            c.set(Some(Current {
                pool: self,
                index,
                running,
            }))
        });
    }

    fn poll_worker(&self, index: usize, cx: &mut Context<'_>) {
        let w = &self.workers[index];
        w.waker.register(cx.waker());
        w.idle.store(false, Ordering::SeqCst);
        // Tasks that yielded in the last turn go on now that `block_on` has polled the reactor.
        while let Ok(r) = w.yielded.pop() {
            let _ = w.queue.push(r);
        }
        self.set_running_flag(index, true);
        for n in 0..BUDGET {
            let next = if n % SHARED_EVERY == SHARED_EVERY - 1 {
                self.shared.pop().or_else(|_| w.queue.pop()).ok()
            } else {
                w.queue.pop().or_else(|_| self.shared.pop()).ok()
            };
            match next.or_else(|| self.steal(index)) {
                Some(r) => {
                    r.metadata().store(index, Ordering::Relaxed);
                    r.run();
                }
                None => {
                    self.set_running_flag(index, false);
                    if !w.yielded.is_empty() {
                        cx.waker().wake_by_ref();
                        return;
                    }
                    // Idle first, then look again: a task queued after the look sees `idle` and wakes us.
                    w.idle.store(true, Ordering::SeqCst);
                    fence(Ordering::SeqCst);
                    if w.queue.is_empty() && self.shared.is_empty() && !self.backlog(index) {
                        return;
                    }
                    w.idle.store(false, Ordering::SeqCst);
                    self.set_running_flag(index, true);
                }
            }
        }
        self.set_running_flag(index, false);
        cx.waker().wake_by_ref();
    }

    /// Takes half of the queue of a sibling with more than [`SPREAD_ABOVE`] tasks queued, returning one to
    /// run. A shorter queue is left to its thread, which is awake or being woken: so a task spawned on a
    /// thread starts there.
    fn steal(&self, index: usize) -> Option<Runnable> {
        let own = &self.workers[index].queue;
        for (i, w) in self.running_workers().iter().enumerate() {
            if i == index || w.queue.len() <= SPREAD_ABOVE {
                continue;
            }
            let Ok(first) = w.queue.pop() else {
                continue;
            };
            for _ in 0..w.queue.len() / 2 {
                match w.queue.pop() {
                    Ok(r) => {
                        let _ = own.push(r);
                    }
                    Err(_) => break,
                }
            }
            return Some(first);
        }
        None
    }

    /// Worker `index` found nothing to run and waits to be woken.
    #[cfg(test)]
    pub(crate) fn is_idle(&self, index: usize) -> bool {
        self.workers[index].idle.load(Ordering::SeqCst)
    }

    /// A sibling of `index` has more than [`SPREAD_ABOVE`] tasks queued (its wake-up may have come before
    /// this worker went idle).
    fn backlog(&self, index: usize) -> bool {
        let workers = self.running_workers().iter().enumerate();
        workers
            .filter(|&(i, _)| i != index)
            .any(|(_, w)| w.queue.len() > SPREAD_ABOVE)
    }

    /// Ends a [`Pool::enter`] once the threads stopped (and [`Pool::set_running`] went back to 1): drops
    /// every queued task (their futures are dropped, not run). Dropping one may wake another, which is
    /// queued and dropped in turn.
    pub(crate) fn leave(&self) {
        let _ = CURRENT.try_with(|c| {
            if c.get().is_some_and(|c| std::ptr::eq(c.pool, self)) {
                c.set(None);
            }
        });
        loop {
            let mut dropped = false;
            for q in self
                .workers
                .iter()
                .flat_map(|w| [&w.queue, &w.yielded])
                .chain([&self.shared])
            {
                while q.pop().is_ok() {
                    dropped = true;
                }
            }
            if !dropped {
                break;
            }
        }
        self.entered.store(false, Ordering::Release);
    }
}

/// Worker `index` of a pool, run on the current thread: never completes. Dropping it (when its
/// `block_on` ends) requeues its yielded tasks, so that [`Pool::leave`] drops them, and restores the
/// thread's previous worker.
pub(crate) struct Run<'a, T> {
    pool: &'a Pool,
    index: usize,
    previous: Option<Current>,
    output: std::marker::PhantomData<fn() -> T>,
}

impl<T> Future for Run<'_, T> {
    type Output = T;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        self.pool.poll_worker(self.index, cx);
        Poll::Pending
    }
}

impl<T> Drop for Run<'_, T> {
    fn drop(&mut self) {
        let w = &self.pool.workers[self.index];
        while let Ok(r) = w.yielded.pop() {
            let _ = self.pool.shared.push(r);
        }
        let previous = self.previous;
        let _ = CURRENT.try_with(|c| c.set(previous));
    }
}

impl Worker {
    /// Wakes the worker if it is idle; says whether it was.
    fn wake(&self) -> bool {
        fence(Ordering::SeqCst);
        let was_idle = self.idle.swap(false, Ordering::SeqCst);
        if was_idle {
            self.waker.wake();
        }
        was_idle
    }
}
