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
mod signal;
mod timer;
mod waker;

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use polling::{PollMode, Poller};

pub use error::{Error, Result};
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

/// A descriptor to register, and who keeps it open while it is registered.
///
/// - An [`OwnedFd`] hands the descriptor to the reactor: [`Reactor::delete`]
///   hands it back, [`Reactor::delete_close`] closes it.
/// - An `Rc<T>` (any `T: AsFd`, e.g. `Rc<UnixStream>`) is shared: the
///   registration holds a reference, so the descriptor cannot close while
///   it is registered, whatever the caller drops; deleting the registration
///   drops the reactor's reference.
/// - [`Source::borrow_raw`] (unsafe) registers a number the caller promises
///   to keep open until it deletes the registration (a C library's socket,
///   whose life that library rules).
///
/// There is no conversion from `&T`: a borrow cannot outlive the call, and a
/// registration that outlived its descriptor would watch whatever reused
/// the number.
#[derive(Debug)]
pub struct Source(SourceKind);

enum SourceKind {
    Owned(OwnedFd),
    Shared(std::rc::Rc<dyn AsFd>),
    Raw(RawFd),
}

impl std::fmt::Debug for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceKind::Owned(fd) => write!(f, "Owned({})", fd.as_raw_fd()),
            SourceKind::Shared(fd) => write!(f, "Shared({})", fd.as_fd().as_raw_fd()),
            SourceKind::Raw(fd) => write!(f, "Raw({fd})"),
        }
    }
}

impl From<OwnedFd> for Source {
    fn from(fd: OwnedFd) -> Source {
        Source(SourceKind::Owned(fd))
    }
}

impl<T: AsFd + 'static> From<std::rc::Rc<T>> for Source {
    fn from(fd: std::rc::Rc<T>) -> Source {
        Source(SourceKind::Shared(fd))
    }
}

impl Source {
    /// A descriptor number the caller keeps open.
    ///
    /// # Safety
    ///
    /// `fd` must stay open until the registration is deleted, queued for
    /// deletion with a [`Remover`] (the reactor deletes queued
    /// registrations before it registers, lists or dispatches anything
    /// else), or the reactor is dropped. Closing it otherwise would leave
    /// the number registered, and a descriptor that reuses it would get its
    /// events and its planned rights.
    pub unsafe fn borrow_raw(fd: RawFd) -> Source {
        Source(SourceKind::Raw(fd))
    }

    fn raw(&self) -> RawFd {
        match &self.0 {
            SourceKind::Owned(fd) => fd.as_raw_fd(),
            SourceKind::Shared(fd) => fd.as_fd().as_raw_fd(),
            SourceKind::Raw(fd) => *fd,
        }
    }
}

/// Deletes registrations from where the reactor is not at hand, such as a
/// `Drop` (a back end dropped without being closed). Made by
/// [`Reactor::remover`]; cheap to clone, not `Send`.
///
/// The registration stops getting events at once (before the next callback
/// runs) and is deleted then; its descriptor, held by the reactor
/// (owned or shared), is released with it, so the number is never left
/// registered after the descriptor closed.
#[derive(Clone)]
pub struct Remover {
    queue: std::rc::Rc<std::cell::RefCell<Vec<Handle>>>,
}

impl std::fmt::Debug for Remover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remover")
            .field("queued", &self.queue.borrow().len())
            .finish()
    }
}

impl Remover {
    /// Asks for `h` to be deleted.
    pub fn remove(&self, h: Handle) {
        self.queue.borrow_mut().push(h);
    }
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
    events: polling::Events,
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
            events: polling::Events::with_capacity(
                std::num::NonZeroUsize::new(256).expect("non-zero"),
            ),
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
            _not_send: std::marker::PhantomData,
        })
    }

    // ----- descriptors -------------------------------------------------

    /// Registers `fd` for `interest`, enabled, with the `rights` it needs.
    /// `cb` runs on the loop thread each round the descriptor is ready.
    ///
    /// Pass an [`OwnedFd`] to hand the descriptor to the reactor, or an
    /// `Rc` of a socket or file to share it (see [`Source`]).
    pub fn add<F>(
        &mut self,
        fd: impl Into<Source>,
        interest: Interest,
        rights: Rights,
        cb: F,
    ) -> Result<Handle>
    where
        F: FnMut(&mut Reactor<D>, &mut D, Event) + 'static,
    {
        self.insert(fd.into(), interest, rights, true, Box::new(cb))
    }

    /// Registers `fd` like [`add`](Reactor::add), but disabled: it gets no
    /// events until [`enable`](Reactor::enable).
    pub fn add_disabled<F>(
        &mut self,
        fd: impl Into<Source>,
        interest: Interest,
        rights: Rights,
        cb: F,
    ) -> Result<Handle>
    where
        F: FnMut(&mut Reactor<D>, &mut D, Event) + 'static,
    {
        self.insert(fd.into(), interest, rights, false, Box::new(cb))
    }

    fn insert(
        &mut self,
        source: Source,
        interest: Interest,
        rights: Rights,
        enabled: bool,
        cb: FdCb<D>,
    ) -> Result<Handle> {
        self.apply_removals();
        let fd = source.raw();
        if fd < 0 {
            return Err(Error::BadFd(fd));
        }
        if let Some(&index) = self.by_fd.get(&fd) {
            let existing = Handle {
                index,
                gen: self.gens[index as usize],
            };
            return Err(Error::AlreadyRegistered { fd, existing });
        }
        let index = match self.free.last() {
            Some(&i) => i,
            None => self.slots.len() as u32,
        };
        if enabled {
            self.poll_add(fd, index, interest)?;
        } else {
            check_open(fd)?;
        }
        if self.free.pop().is_none() {
            self.slots.push(None);
            self.gens.push(0);
        }
        let gen = self.gens[index as usize];
        self.slots[index as usize] = Some(FdEntry {
            gen,
            source,
            interest,
            enabled,
            rights,
            cb: Some(cb),
        });
        self.by_fd.insert(fd, index);
        Ok(Handle { index, gen })
    }

    fn entry(&mut self, h: Handle) -> Result<&mut FdEntry<D>> {
        match self.slots.get_mut(h.index as usize) {
            Some(Some(e)) if e.gen == h.gen => Ok(e),
            _ => Err(Error::UnknownHandle(h)),
        }
    }

    fn poll_add(&self, fd: RawFd, index: u32, interest: Interest) -> Result<()> {
        let ev = poll_event(index, interest);
        // SAFETY: `fd` was checked non-negative. On epoll and kqueue a
        // registration that outlives its descriptor cannot touch freed
        // memory: the kernel drops it when the descriptor closes, and the
        // reactor deletes it before closing descriptors it owns.
        let res = unsafe { self.poller.add_with_mode(fd, ev, PollMode::Level) };
        res.map_err(|e| classify(fd, "registering", e))
    }

    fn poll_delete(&self, fd: RawFd) {
        // SAFETY: only the descriptor number is used, to remove its
        // registration; a closed descriptor yields an error we ignore.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        if let Err(e) = self.poller.delete(fd) {
            log::debug!("removing fd {} from the event queue: {e}", fd.as_raw_fd());
        }
    }

    /// Starts delivering events to a disabled registration.
    pub fn enable(&mut self, h: Handle) -> Result<()> {
        let e = self.entry(h)?;
        if e.enabled {
            return Ok(());
        }
        let (fd, interest) = (e.source.raw(), e.interest);
        self.poll_add(fd, h.index, interest)?;
        self.entry(h)?.enabled = true;
        Ok(())
    }

    /// Stops delivering events, keeping the registration. Events already
    /// collected in this round are not delivered either.
    pub fn disable(&mut self, h: Handle) -> Result<()> {
        let e = self.entry(h)?;
        if !e.enabled {
            return Ok(());
        }
        e.enabled = false;
        let fd = e.source.raw();
        self.poll_delete(fd);
        Ok(())
    }

    /// Whether the registration is enabled.
    pub fn is_enabled(&mut self, h: Handle) -> Result<bool> {
        Ok(self.entry(h)?.enabled)
    }

    /// Changes what the registration waits for.
    pub fn set_interest(&mut self, h: Handle, interest: Interest) -> Result<()> {
        let e = self.entry(h)?;
        if e.interest == interest {
            return Ok(());
        }
        let (fd, enabled) = (e.source.raw(), e.enabled);
        if enabled {
            // SAFETY: the descriptor is registered and, by the `add`
            // contract, still open.
            let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
            self.poller
                .modify_with_mode(bfd, poll_event(h.index, interest), PollMode::Level)
                .map_err(|e| classify(fd, "changing interest of", e))?;
        }
        self.entry(h)?.interest = interest;
        Ok(())
    }

    /// The registration's interest.
    pub fn interest(&mut self, h: Handle) -> Result<Interest> {
        Ok(self.entry(h)?.interest)
    }

    /// Records new rights for the registration's descriptor.
    pub fn set_rights(&mut self, h: Handle, rights: Rights) -> Result<()> {
        self.entry(h)?.rights = rights;
        Ok(())
    }

    /// The registration's descriptor.
    pub fn fd(&mut self, h: Handle) -> Result<RawFd> {
        Ok(self.entry(h)?.source.raw())
    }

    /// Borrows the descriptor of a registration the reactor owns or borrows.
    pub fn borrow_fd(&mut self, h: Handle) -> Result<BorrowedFd<'_>> {
        let fd = self.entry(h)?.source.raw();
        // SAFETY: the descriptor stays open while registered (owned: the
        // reactor closes it only on delete_close; borrowed: by the `add`
        // contract), and the borrow ends before any `&mut self` call.
        Ok(unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// Deletes the registration, leaving the descriptor open. An owned
    /// descriptor is handed back. Its callback, if it is the one running,
    /// finishes and is then dropped.
    pub fn delete(&mut self, h: Handle) -> Result<Option<OwnedFd>> {
        self.entry(h)?;
        let e = self.slots[h.index as usize].take().expect("checked");
        let fd = e.source.raw();
        if e.enabled {
            self.poll_delete(fd);
        }
        self.by_fd.remove(&fd);
        self.gens[h.index as usize] = h.gen.wrapping_add(1);
        self.free.push(h.index);
        Ok(match e.source.0 {
            SourceKind::Owned(fd) => Some(fd),
            SourceKind::Shared(_) | SourceKind::Raw(_) => None,
        })
    }

    /// Deletes the registration and closes its descriptor, which the
    /// reactor must own; a shared one is released (closed when its last
    /// holder drops it); a raw borrowed one is refused, still registered.
    pub fn delete_close(&mut self, h: Handle) -> Result<()> {
        if let SourceKind::Raw(fd) = self.entry(h)?.source.0 {
            return Err(Error::NotOwned(fd));
        }
        drop(self.delete(h)?);
        Ok(())
    }

    /// A [`Remover`]: deletes registrations of this reactor from a `Drop`.
    pub fn remover(&self) -> Remover {
        Remover {
            queue: self.removals.clone(),
        }
    }

    /// Deletes what a [`Remover`] asked for.
    fn apply_removals(&mut self) {
        if self.removals.borrow().is_empty() {
            return;
        }
        let queued = std::mem::take(&mut *self.removals.borrow_mut());
        for h in queued {
            let _ = self.delete(h);
        }
    }

    /// Every live descriptor with the rights it needs: registrations, then
    /// the reactor's own. This is the plan the sandbox limits.
    pub fn fds(&self) -> Vec<FdInfo> {
        let removing = self.removals.borrow();
        let mut out: Vec<FdInfo> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let e = s.as_ref()?;
                let handle = Handle {
                    index: i as u32,
                    gen: e.gen,
                };
                (!removing.contains(&handle)).then_some(FdInfo {
                    fd: e.source.raw(),
                    rights: e.rights,
                    owner: FdOwner::Registration(handle),
                })
            })
            .collect();
        out.push(FdInfo {
            fd: self.poller.as_raw_fd(),
            rights: Rights::POLLER,
            owner: FdOwner::Internal("event queue"),
        });
        for fd in self.signals.fds() {
            out.push(FdInfo {
                fd,
                rights: Rights::READ_ONLY,
                owner: FdOwner::Internal("signalfd"),
            });
        }
        let known: Vec<RawFd> = out.iter().map(|i| i.fd).collect();
        out.extend(poller_internal_fds(self.poller.as_raw_fd(), &known));
        out
    }

    /// Number of descriptor registrations.
    pub fn len(&self) -> usize {
        self.by_fd.len()
    }

    /// Whether there are no descriptor registrations.
    pub fn is_empty(&self) -> bool {
        self.by_fd.is_empty()
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

    /// Asks [`run`](Reactor::run) to return after the current round.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Runs rounds until a callback calls [`stop`](Reactor::stop).
    pub fn run(&mut self, data: &mut D) -> Result<()> {
        while !std::mem::take(&mut self.stopped) {
            self.run_once(None, data)?;
        }
        Ok(())
    }

    /// Runs one round: prepare hooks, one wait of at most `timeout` (or
    /// until the next timer; `None` waits for an event), then every ready
    /// descriptor, signal and due timer. Returns how many callbacks ran.
    pub fn run_once(&mut self, timeout: Option<Duration>, data: &mut D) -> Result<usize> {
        if self.dispatching {
            return Err(Error::Reentrant);
        }
        self.dispatching = true;
        let res = self.round(timeout, data);
        self.dispatching = false;
        res
    }

    fn round(&mut self, timeout: Option<Duration>, data: &mut D) -> Result<usize> {
        let mut ran = 0;
        self.apply_removals();
        for i in 0..self.hooks.len() {
            let gen = self.hooks[i].gen;
            if let Some(mut cb) = self.hooks[i].cb.take() {
                cb(self, data);
                self.apply_removals();
                ran += 1;
                let slot = &mut self.hooks[i];
                if slot.gen == gen && slot.live && slot.cb.is_none() {
                    slot.cb = Some(cb);
                }
            }
        }

        let now = Instant::now();
        let mut deadline = timeout.map(|t| now.checked_add(t).unwrap_or(far_future(now)));
        if let Some(t) = self.timers.next_deadline() {
            deadline = Some(deadline.map_or(t, |d| d.min(t)));
        }
        if self.stopped {
            deadline = Some(now);
        }
        self.events.clear();
        let waited = match deadline {
            Some(d) if d <= now => self.poller.wait(&mut self.events, Some(Duration::ZERO)),
            Some(d) => self.poller.wait_deadline(&mut self.events, d),
            None => self.poller.wait(&mut self.events, None),
        };
        waited.map_err(|e| Error::io("waiting for events", e))?;

        self.pending.clear();
        for ev in self.events.iter() {
            let key = ev.key;
            if SignalSource::owns_key(key) {
                self.signals.drain(key, &mut self.signals_pending);
                continue;
            }
            if let Some(Some(e)) = self.slots.get(key) {
                self.pending.push(Pending {
                    index: key as u32,
                    gen: e.gen,
                    readable: ev.readable,
                    writable: ev.writable,
                    hangup: ev.is_interrupt(),
                    error: ev.is_err().unwrap_or(false),
                });
            }
        }

        if self.wake_flag.swap(false, Ordering::AcqRel) {
            if let Some(mut cb) = self.on_wake.take() {
                cb(self, data);
                ran += 1;
                if self.on_wake.is_none() {
                    self.on_wake = Some(cb);
                }
            }
        }

        for i in 0..self.pending.len() {
            let p = self.pending[i];
            ran += usize::from(self.dispatch_fd(p, data));
        }

        let mut sigs = std::mem::take(&mut self.signals_pending);
        for &signo in &sigs {
            ran += usize::from(self.dispatch_signal(signo, data));
        }
        sigs.clear();
        self.signals_pending = sigs;

        let now = Instant::now();
        let limit = self.timers.due_limit(now);
        while let Some(fired) = self.timers.pop_due(limit) {
            self.dispatch_timer(fired, now, data);
            ran += 1;
        }
        Ok(ran)
    }

    fn dispatch_fd(&mut self, p: Pending, data: &mut D) -> bool {
        let (mut cb, ev) = match self.slots.get_mut(p.index as usize) {
            Some(Some(e)) if e.gen == p.gen && e.enabled => {
                let readable = p.readable && e.interest.contains(Interest::READ);
                let writable = p.writable && e.interest.contains(Interest::WRITE);
                if !(readable || writable || p.hangup || p.error) {
                    return false;
                }
                let Some(cb) = e.cb.take() else {
                    return false;
                };
                let ev = Event {
                    handle: Handle {
                        index: p.index,
                        gen: p.gen,
                    },
                    fd: e.source.raw(),
                    readable,
                    writable,
                    hangup: p.hangup,
                    error: p.error,
                };
                (cb, ev)
            }
            _ => return false,
        };
        cb(self, data, ev);
        if let Some(Some(e)) = self.slots.get_mut(p.index as usize) {
            if e.gen == p.gen && e.cb.is_none() {
                e.cb = Some(cb);
            }
        }
        self.apply_removals();
        true
    }

    fn dispatch_signal(&mut self, signo: i32, data: &mut D) -> bool {
        let Some(e) = self.signal_cbs.get_mut(&signo) else {
            return false;
        };
        let gen = e.gen;
        let Some(mut cb) = e.cb.take() else {
            return false;
        };
        cb(self, data, signo);
        if let Some(e) = self.signal_cbs.get_mut(&signo) {
            if e.gen == gen && e.cb.is_none() {
                e.cb = Some(cb);
            }
        }
        self.apply_removals();
        true
    }

    fn dispatch_timer(&mut self, fired: timer::Fired<TimerCb<D>>, now: Instant, data: &mut D) {
        let timer::Fired {
            handle: h,
            mut cb,
            periodic,
        } = fired;
        if let Some((due, period)) = periodic {
            self.timers.arm(h, timer::next_period(due, period, now));
        }
        cb(self, data, h);
        self.timers.finish(h, cb);
        self.apply_removals();
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

/// The descriptors the `polling` crate keeps registered in its own event
/// queue (on Linux an eventfd to wake the wait and a timerfd for
/// sub-millisecond timeouts), found in the epoll descriptor's
/// `/proc/self/fdinfo` entry (`tfd:` lines): every registered descriptor
/// that is not one of `known`. Empty elsewhere, and once `/proc` cannot be
/// read (inside the sandbox): the plan is taken before entry.
#[cfg(target_os = "linux")]
fn poller_internal_fds(epfd: RawFd, known: &[RawFd]) -> Vec<FdInfo> {
    let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{epfd}")) else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.strip_prefix("tfd:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<RawFd>().ok())
        .filter(|fd| !known.contains(fd))
        .map(|fd| {
            let what = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default();
            let (rights, owner) = match what.to_string_lossy().as_ref() {
                "anon_inode:[eventfd]" => (
                    Rights::READ | Rights::WRITE | Rights::EVENT,
                    "polling's notifier (eventfd)",
                ),
                "anon_inode:[timerfd]" => (Rights::READ_ONLY, "polling's timer (timerfd)"),
                _ => (Rights::READ_ONLY, "polling's own descriptor"),
            };
            FdInfo {
                fd,
                rights,
                owner: FdOwner::Internal(owner),
            }
        })
        .collect()
}

/// kqueue keeps no descriptors of its own beside the queue.
#[cfg(not(target_os = "linux"))]
fn poller_internal_fds(_epfd: RawFd, _known: &[RawFd]) -> Vec<FdInfo> {
    Vec::new()
}

fn check_open(fd: RawFd) -> Result<()> {
    // SAFETY: F_GETFD only reads the descriptor table entry.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::BadFd(fd));
    }
    Ok(())
}

fn classify(fd: RawFd, what: &str, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EBADF) => Error::BadFd(fd),
        Some(libc::EPERM) => Error::NotPollable(fd),
        _ => Error::io(format!("{what} fd {fd}"), e),
    }
}
