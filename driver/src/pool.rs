//! A small per-thread pool of copy buffers, so an idle session holds no buffer.

use nethergate_core::forward::{COPY_BUFFER_SIZE, POOL_MAX_IDLE};
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer borrowed from the current thread's pool; returned to the pool of whichever thread drops it.
pub struct Buffer(Option<Box<[u8]>>);

impl Buffer {
    /// Takes a buffer from the pool, or allocates one.
    pub fn take() -> Buffer {
        let buf = POOL
            .try_with(|p| p.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| vec![0u8; COPY_BUFFER_SIZE].into_boxed_slice());
        Buffer(Some(buf))
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(buf) = self.0.take() {
            let _ = POOL.try_with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOL_MAX_IDLE {
                    p.push(buf);
                }
            });
        }
    }
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or(&mut [])
    }
}
