//! The event loop: bhyve's mevent, redone on the `polling` crate.
//!
//! One thread, one [`Reactor`]. It multiplexes descriptor registrations,
//! timers and signals, and can be woken from other threads through a
//! [`Waker`]. Descriptors are watched level-triggered (epoll on Linux,
//! kqueue on FreeBSD and macOS), so a callback that leaves data unread is
//! called again on the next round rather than losing the event.
//!
//! Callbacks receive `&mut Reactor<D>` and the caller's `&mut D`, so they can
//! add, change and delete any registration, their own included, while the
//! loop dispatches. Changes take effect at once, in the order made; a
//! registration deleted during a round never sees another event from it, and
//! one added during a round sees events only from the next wait on.
//!
//! Every registration records the [`Rights`] its descriptor needs, and
//! [`Reactor::fds`] lists them all, the reactor's own included, for the
//! sandbox to limit before it is entered.

mod error;
mod fds;
mod round;
mod signal;
mod source;
mod timer;
mod wait;
mod waker;

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use polling::Poller;

pub use error::{Error, Result};
#[cfg_attr(not(feature = "slirp"), allow(unused_imports))]
pub(crate) use fds::Detacher;
pub use source::{Registration, Remover, Source};
pub use timer::TimerHandle;
pub use waker::Waker;

use crate::rights::Rights;
use signal::SignalSource;
use timer::Timers;

bitflags::bitflags! {
    /// Which readiness a registration waits for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Interest: u8 {
        /// Readable (or hung up, or in error).
        const READ = 1;
        /// Writable.
        const WRITE = 2;
        /// Both.
        const BOTH = 3;
    }
}

/// Names one descriptor registration. Handles carry a generation, so a
/// handle to a deleted registration never reaches the slot's next occupant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle {
    index: u32,
    gen: u32,
}

/// Names one signal route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignalHandle {
    signo: i32,
    gen: u32,
}

/// Names one prepare hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrepareHandle {
    index: usize,
    gen: u32,
}

/// Readiness delivered to a descriptor callback, already narrowed to the
/// registration's interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The registration.
    pub handle: Handle,
    /// Its descriptor.
    pub fd: RawFd,
    /// Readable (data, end of file, or a pending error to read).
    pub readable: bool,
    /// Writable.
    pub writable: bool,
    /// The peer hung up (`EPOLLHUP`); reported on epoll only.
    pub hangup: bool,
    /// An error is pending on the descriptor (`EPOLLERR`); reported where the
    /// platform says so.
    pub error: bool,
}

/// Who holds a descriptor listed by [`Reactor::fds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdOwner {
    /// A registration.
    Registration(Handle),
    /// The reactor itself (its event queue, its signal descriptor, the
    /// `polling` crate's own notifier and timer descriptors).
    Internal(&'static str),
}

/// One live descriptor and the rights it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdInfo {
    /// The descriptor.
    pub fd: RawFd,
    /// What the loop does with it.
    pub rights: Rights,
    /// Who holds it.
    pub owner: FdOwner,
}

type FdCb<D> = Box<dyn FnMut(&mut Reactor<D>, &mut D, Event)>;
type TimerCb<D> = Box<dyn FnMut(&mut Reactor<D>, &mut D, TimerHandle)>;
type SignalCb<D> = Box<dyn FnMut(&mut Reactor<D>, &mut D, i32)>;
type HookCb<D> = Box<dyn FnMut(&mut Reactor<D>, &mut D)>;

struct FdEntry<D> {
    gen: u32,
    source: Source,
    interest: Interest,
    enabled: bool,
    rights: Rights,
    /// Taken out while the callback runs.
    cb: Option<FdCb<D>>,
}

struct HookSlot<D> {
    gen: u32,
    live: bool,
    /// Taken out while the hook runs.
    cb: Option<HookCb<D>>,
}

struct SignalEntry<D> {
    gen: u32,
    cb: Option<SignalCb<D>>,
}

/// An event from the last wait, waiting for dispatch.
#[derive(Clone, Copy)]
struct Pending {
    index: u32,
    gen: u32,
    readable: bool,
    writable: bool,
    hangup: bool,
    error: bool,
}

/// The single-threaded event loop. `D` is the caller's state, handed to every
/// callback by [`run`](Reactor::run) and [`run_once`](Reactor::run_once).
///
/// The reactor is deliberately `!Send`: it lives and runs on one thread.
pub struct Reactor<D = ()> {
    poller: Arc<Poller>,
    waiter: wait::Waiter,
    slots: Vec<Option<FdEntry<D>>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    by_fd: HashMap<RawFd, u32>,
    pending: Vec<Pending>,
    timers: Timers<TimerCb<D>>,
    signals: SignalSource,
    signal_cbs: HashMap<i32, SignalEntry<D>>,
    signal_gen: u32,
    signals_pending: Vec<i32>,
    hooks: Vec<HookSlot<D>>,
    wake_flag: Arc<AtomicBool>,
    on_wake: Option<HookCb<D>>,
    stopped: bool,
    dispatching: bool,
    removals: std::rc::Rc<std::cell::RefCell<Vec<Handle>>>,
    /// Descriptors taken out of the event queue by a `Detacher` while
    /// still open; their registration's delete does not touch the queue.
    detached: std::rc::Rc<std::cell::RefCell<std::collections::HashSet<RawFd>>>,
    /// Event-queue removals the kernel (or polling) refused.
    queue_errors: std::cell::Cell<u64>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl<D> std::fmt::Debug for Reactor<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("registrations", &self.by_fd.len())
            .field("timers", &self.timers.len())
            .field("signals", &self.signal_cbs.len())
            .finish()
    }
}

impl<D> Reactor<D> {
    /// Makes a reactor with its own event queue.
    pub fn new() -> Result<Self> {
        let poller = Poller::new().map_err(|e| Error::io("creating the event queue", e))?;
        Ok(Reactor {
            poller: Arc::new(poller),
            waiter: wait::Waiter::new(),
            slots: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            by_fd: HashMap::new(),
            pending: Vec::new(),
            timers: Timers::new(),
            signals: SignalSource::new(),
            signal_cbs: HashMap::new(),
            signal_gen: 0,
            signals_pending: Vec::new(),
            hooks: Vec::new(),
            wake_flag: Arc::new(AtomicBool::new(false)),
            on_wake: None,
            stopped: false,
            dispatching: false,
            removals: Default::default(),
            detached: Default::default(),
            queue_errors: std::cell::Cell::new(0),
            _not_send: std::marker::PhantomData,
        })
    }

    // ----- timers ------------------------------------------------------

    /// Adds a one-shot timer that fires once, `after` from now, and is then
    /// removed unless its callback re-arms it.
    pub fn add_timer<F>(&mut self, after: Duration, cb: F) -> TimerHandle
    where
        F: FnMut(&mut Reactor<D>, &mut D, TimerHandle) + 'static,
    {
        self.timers
            .insert_armed(None, false, Box::new(cb), deadline_after(after))
    }

    /// Adds a periodic timer, first due one `period` from now. Deadlines
    /// advance by whole periods from the first, so lateness never
    /// accumulates; ticks the loop was too late for are skipped, not bunched.
    pub fn add_periodic<F>(&mut self, period: Duration, cb: F) -> Result<TimerHandle>
    where
        F: FnMut(&mut Reactor<D>, &mut D, TimerHandle) + 'static,
    {
        if period.is_zero() {
            return Err(Error::ZeroPeriod);
        }
        Ok(self
            .timers
            .insert_armed(Some(period), true, Box::new(cb), deadline_after(period)))
    }

    /// Adds a timer that is not armed. It stays until cancelled, however
    /// often it is armed and fires (libslirp's timer model).
    pub fn add_timer_disarmed<F>(&mut self, cb: F) -> TimerHandle
    where
        F: FnMut(&mut Reactor<D>, &mut D, TimerHandle) + 'static,
    {
        self.timers.insert(None, true, Box::new(cb))
    }

    /// Arms (or re-arms) a timer to fire `after` from now. A periodic timer
    /// keeps its period from the new deadline on.
    pub fn rearm_timer(&mut self, h: TimerHandle, after: Duration) -> Result<()> {
        self.rearm_timer_at(h, deadline_after(after))
    }

    /// Arms (or re-arms) a timer to fire at `deadline`.
    pub fn rearm_timer_at(&mut self, h: TimerHandle, deadline: Instant) -> Result<()> {
        if self.timers.arm(h, deadline) {
            Ok(())
        } else {
            Err(Error::UnknownTimer(h))
        }
    }

    /// Disarms a timer without removing it.
    pub fn disarm_timer(&mut self, h: TimerHandle) -> Result<()> {
        if self.timers.disarm(h) {
            Ok(())
        } else {
            Err(Error::UnknownTimer(h))
        }
    }

    /// Removes a timer; it will not fire again. Its callback is dropped now,
    /// or, if it is the one running, when it returns.
    pub fn cancel_timer(&mut self, h: TimerHandle) -> Result<()> {
        if self.timers.remove(h) {
            Ok(())
        } else {
            Err(Error::UnknownTimer(h))
        }
    }

    /// When the timer is next due, if it is armed.
    pub fn timer_deadline(&mut self, h: TimerHandle) -> Result<Option<Instant>> {
        self.timers.deadline(h).ok_or(Error::UnknownTimer(h))
    }

    // ----- signals -----------------------------------------------------

    /// Routes signal `signo` to `cb` on the loop thread. The signal is
    /// blocked in this thread's mask; create the reactor and add signals
    /// before starting other threads so they inherit the mask.
    ///
    /// A blocked signal waits until the loop reads it: while the thread is
    /// held anywhere outside [`run`](Self::run) (a blocking call on a peer
    /// that stopped reading, a long computation), a routed SIGTERM does
    /// nothing, and no second one gets through either. A process that
    /// must always stop on SIGTERM handles it with a handler instead
    /// (`caploop-sandbox` writes to a pipe the loop watches, and resets
    /// the action so that a second SIGTERM kills), or never blocks outside
    /// the loop.
    pub fn add_signal<F>(&mut self, signo: i32, cb: F) -> Result<SignalHandle>
    where
        F: FnMut(&mut Reactor<D>, &mut D, i32) + 'static,
    {
        let sig = signal::validate(signo)?;
        if self.signal_cbs.contains_key(&signo) {
            return Err(Error::SignalTaken(signo));
        }
        self.signals.add(&self.poller, sig)?;
        self.signal_gen = self.signal_gen.wrapping_add(1);
        let gen = self.signal_gen;
        self.signal_cbs.insert(
            signo,
            SignalEntry {
                gen,
                cb: Some(Box::new(cb)),
            },
        );
        Ok(SignalHandle { signo, gen })
    }

    /// Stops routing the signal and restores its previous blocked state.
    pub fn delete_signal(&mut self, h: SignalHandle) -> Result<()> {
        match self.signal_cbs.get(&h.signo) {
            Some(e) if e.gen == h.gen => {}
            _ => return Err(Error::UnknownSignal(h)),
        }
        self.signal_cbs.remove(&h.signo);
        let sig = signal::validate(h.signo)?;
        self.signals.remove(&self.poller, sig);
        Ok(())
    }

    // ----- waking, hooks, running -------------------------------------

    /// A handle other threads use to interrupt the wait.
    pub fn waker(&self) -> Waker {
        Waker {
            poller: self.poller.clone(),
            flag: self.wake_flag.clone(),
        }
    }

    /// Sets the callback run on the loop thread after a wait that a
    /// [`Waker`] interrupted (once per wait, however many wakes).
    pub fn set_wake_callback<F>(&mut self, cb: F)
    where
        F: FnMut(&mut Reactor<D>, &mut D) + 'static,
    {
        self.on_wake = Some(Box::new(cb));
    }

    /// Adds a hook that runs at the start of every round, before the wait.
    /// Hooks may add timers and registrations that count for that wait
    /// (libslirp's pollfd sync runs here).
    pub fn add_prepare<F>(&mut self, cb: F) -> PrepareHandle
    where
        F: FnMut(&mut Reactor<D>, &mut D) + 'static,
    {
        let index = match self.hooks.iter().position(|h| !h.live) {
            Some(i) => i,
            None => {
                self.hooks.push(HookSlot {
                    gen: 0,
                    live: false,
                    cb: None,
                });
                self.hooks.len() - 1
            }
        };
        let slot = &mut self.hooks[index];
        slot.live = true;
        slot.cb = Some(Box::new(cb));
        PrepareHandle {
            index,
            gen: slot.gen,
        }
    }

    /// Removes a prepare hook. Removing one that is running takes effect
    /// when it returns.
    pub fn remove_prepare(&mut self, h: PrepareHandle) -> bool {
        match self.hooks.get_mut(h.index) {
            Some(slot) if slot.live && slot.gen == h.gen => {
                slot.live = false;
                slot.gen = slot.gen.wrapping_add(1);
                slot.cb = None;
                true
            }
            _ => false,
        }
    }
}

impl<D> Drop for Reactor<D> {
    fn drop(&mut self) {
        let routed: Vec<SignalHandle> = self
            .signal_cbs
            .iter()
            .map(|(&signo, e)| SignalHandle { signo, gen: e.gen })
            .collect();
        for h in routed {
            let _ = self.delete_signal(h);
        }
        for e in self.slots.iter().flatten() {
            if e.enabled {
                self.poll_delete(e.source.raw());
            }
        }
    }
}

fn poll_event(index: u32, interest: Interest) -> polling::Event {
    polling::Event::new(
        index as usize,
        interest.contains(Interest::READ),
        interest.contains(Interest::WRITE),
    )
}

fn deadline_after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after).unwrap_or(far_future(now))
}

fn far_future(now: Instant) -> Instant {
    // About 30 years: far enough to mean "never", near enough not to overflow.
    now + Duration::from_secs(86_400 * 365 * 30)
}
