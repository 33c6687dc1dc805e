//! Waking the loop from another thread.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use polling::Poller;

/// Interrupts the reactor's wait from any thread (a vCPU thread that queued
/// work for the device, say). Cheap to clone; `Send` and `Sync`.
///
/// A wake that arrives while the loop is not waiting makes its next wait
/// return at once. The reactor's wake callback, if set, runs on the loop
/// thread once per wait that was interrupted, however many wakes it took.
#[derive(Clone)]
pub struct Waker {
    pub(crate) poller: Arc<Poller>,
    pub(crate) flag: Arc<AtomicBool>,
}

impl Waker {
    /// Makes the loop's current or next wait return.
    pub fn wake(&self) -> io::Result<()> {
        self.flag.store(true, Ordering::Release);
        self.poller.notify()
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker")
            .field("pending", &self.flag.load(Ordering::Relaxed))
            .finish()
    }
}
