//! A one-shot, thread-safe flag that async code can wait for (shutdown phases).

use event_listener::Event;
use std::sync::atomic::{AtomicBool, Ordering};

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
