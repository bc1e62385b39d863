//! A one-shot, thread-safe flag that async code can wait for (shutdown phases).

use event_listener::{Event, EventListener};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

/// Set once, observed by any number of waiters on any runtime.
#[derive(Debug, Default)]
pub struct Flag {
    set: AtomicBool,
    event: Event,
}

impl Flag {
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        self.set.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    /// Whether it is set.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// A cheap way for a long-lived future to watch the flag (see [`Watch`]).
    pub fn watch(&self) -> Watch<'_> {
        Watch {
            flag: self,
            listener: None,
        }
    }

    /// Runs `fut` to its end (`Some`), or until the flag is set (`None`); `fut` is polled first.
    pub async fn unless_set<F: Future>(&self, fut: F) -> Option<F::Output> {
        self.watch().unless_set(fut).await
    }

    /// Resolves once the flag is set.
    pub async fn wait(&self) {
        loop {
            if self.is_set() {
                return;
            }
            let listener = self.event.listen();
            if self.is_set() {
                return;
            }
            listener.await;
        }
    }
}

/// Watches a [`Flag`] from inside another future's `poll`.
///
/// Every session watches the same few flags. Polling an `EventListener` takes the lock of the event's
/// waiter list, so polling one on every wake-up of every session made the worker threads contend for that
/// lock (a holder preempted by the scheduler stalled the other worker for a time slice, which showed in
/// the game benchmark's p99.9). A `Watch` registers its waker once and afterwards only reads the atomic
/// flag, unless the task's waker changes.
#[derive(Debug)]
pub struct Watch<'a> {
    flag: &'a Flag,
    listener: Option<(EventListener, Waker)>,
}

impl Watch<'_> {
    /// Runs `fut` to its end (`Some`), or until the flag is set (`None`); `fut` is polled first. The
    /// registration is kept for the next call (a loop that races each step against the flag).
    pub async fn unless_set<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if self.poll_set(cx) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Whether the flag is set; otherwise makes sure that setting it wakes `cx`'s task.
    pub fn poll_set(&mut self, cx: &mut Context<'_>) -> bool {
        if self.flag.is_set() {
            return true;
        }
        if let Some((_, waker)) = &self.listener {
            if waker.will_wake(cx.waker()) {
                return false;
            }
        }
        let mut listener = match self.listener.take() {
            Some((listener, _)) => listener,
            None => self.flag.event.listen(),
        };
        if self.flag.is_set() {
            return true;
        }
        match Pin::new(&mut listener).poll(cx) {
            // Only `set` notifies.
            Poll::Ready(()) => true,
            Poll::Pending => {
                self.listener = Some((listener, cx.waker().clone()));
                false
            }
        }
    }
}

/// Counts live tasks and lets one wait until none is left.
#[derive(Debug, Default)]
pub struct Tasks {
    live: std::sync::atomic::AtomicUsize,
    idle: Event,
}

/// Decrements the count when dropped.
#[derive(Debug)]
pub struct TaskGuard<T: AsRef<Tasks>>(T);

impl Tasks {
    /// Live tasks.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Adds a task to `owner`'s count if fewer than `max` are live (`max` = 0: unlimited).
    pub fn try_enter<T: AsRef<Tasks>>(owner: T, max: usize) -> Option<TaskGuard<T>> {
        owner
            .as_ref()
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .ok()?;
        Some(TaskGuard(owner))
    }

    /// Resolves when no task is live.
    pub async fn idle(&self) {
        loop {
            if self.live() == 0 {
                return;
            }
            let listener = self.idle.listen();
            if self.live() == 0 {
                return;
            }
            listener.await;
        }
    }
}

impl<T: AsRef<Tasks>> Drop for TaskGuard<T> {
    fn drop(&mut self) {
        let tasks = self.0.as_ref();
        if tasks.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            tasks.idle.notify(usize::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn unless_set_returns_the_output_or_none_once_set_from_another_thread() {
        let flag = Arc::new(Flag::default());
        assert_eq!(
            futures_lite::future::block_on(flag.unless_set(async { 7 })),
            Some(7)
        );
        let setter = {
            let flag = flag.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                flag.set();
            })
        };
        let out =
            futures_lite::future::block_on(flag.unless_set(futures_lite::future::pending::<()>()));
        assert_eq!(out, None);
        setter.join().unwrap();
        // Already set: the watched future still gets its first poll, then the flag wins.
        assert_eq!(
            futures_lite::future::block_on(flag.unless_set(futures_lite::future::pending::<()>())),
            None
        );
    }

    #[test]
    fn watch_wakes_a_new_waker_after_the_task_changed() {
        let flag = Arc::new(Flag::default());
        let mut watch = flag.watch();
        let (first, second) = (Arc::new(Counter::default()), Arc::new(Counter::default()));
        let w1 = Waker::from(first.clone());
        let w2 = Waker::from(second.clone());
        assert!(!watch.poll_set(&mut Context::from_waker(&w1)));
        assert!(!watch.poll_set(&mut Context::from_waker(&w2)));
        flag.set();
        assert_eq!(
            second.0.load(Ordering::SeqCst),
            1,
            "the current waker is woken"
        );
        assert!(watch.poll_set(&mut Context::from_waker(&w2)));
    }

    #[derive(Default)]
    struct Counter(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}
