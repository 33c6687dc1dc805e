//! The C side of the ownership split: the callback table handed to
//! `slirp_new` and the small [`Shared`] record those callbacks write to.
//!
//! libslirp calls back only from inside our own calls into it, while Rust
//! code up the stack may hold `&mut Reactor`. So the callbacks never touch
//! the reactor or the stack's state: they append to queues in [`Shared`]
//! (frames for the guest, socket and timer operations) and set flags, each
//! through a short `try_borrow_mut` that cannot fail because no Rust code
//! holds a borrow of `Shared` across a libslirp call. The stack drains
//! those queues right after each call returns.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::os::raw::{c_char, c_int, c_void};
use std::time::{Duration, Instant};

use super::ffi;

/// libslirp treats a zero clock reading as "timer unset", so our clock
/// starts one second after the stack's epoch.
const CLOCK_OFFSET_NS: u64 = 1_000_000_000;

/// Most buffers kept for reuse by the frame queue.
const SPARE_FRAMES: usize = 256;

/// How a libslirp timer is fired.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TimerKind {
    /// Made by `timer_new_opaque`: fire with `slirp_handle_timer`.
    Opaque {
        id: ffi::SlirpTimerId,
        cb_opaque: *mut c_void,
    },
    /// Made by `timer_new`: fire by calling `cb(cb_opaque)`.
    Callback {
        cb: ffi::SlirpTimerCb,
        cb_opaque: *mut c_void,
    },
}

/// Something libslirp asked for that needs the reactor.
#[derive(Debug)]
pub(crate) enum Op {
    /// A socket was opened (and will show up in the next fill).
    Register(RawFd),
    /// A socket is being closed: drop its registration.
    Unregister(RawFd),
    /// A timer was made; `id` is the value handed back to libslirp.
    TimerNew { id: usize, kind: TimerKind },
    /// A timer was armed for `expire_ms` on our clock.
    TimerMod { id: usize, expire_ms: i64 },
    /// A timer was freed.
    TimerFree { id: usize },
}

/// What the C callbacks may touch: reached through libslirp's `opaque`
/// pointer, which is the address of a boxed `Shared` owned by the stack and
/// freed only after `slirp_cleanup` has returned.
pub(crate) struct Shared {
    epoch: Cell<Instant>,
    frames: RefCell<VecDeque<Vec<u8>>>,
    spare: RefCell<Vec<Vec<u8>>>,
    ops: RefCell<Vec<Op>>,
    /// The socket set may have changed since the last fill.
    pub dirty: Cell<bool>,
    /// A guest frame went in since the last poll: poll this round, so what
    /// libslirp queued behind it (packets waiting for the guest's ARP
    /// reply, which it sends only from `slirp_pollfds_poll` and drops
    /// after a second) goes out now.
    pub want_poll: Cell<bool>,
    next_timer: Cell<usize>,
    /// `guest_error` calls.
    pub guest_errors: Cell<u64>,
    /// Callback records lost to a busy cell (never expected; counted to be
    /// sure instead of panicking across the FFI boundary).
    pub lost: Cell<u64>,
    /// Takes a socket libslirp is about to close out of the reactor's event
    /// queue at once (kqueue forgets only an open descriptor).
    pub detacher: RefCell<Option<crate::reactor::Detacher>>,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            epoch: Cell::new(Instant::now()),
            frames: RefCell::new(VecDeque::new()),
            spare: RefCell::new(Vec::new()),
            ops: RefCell::new(Vec::new()),
            dirty: Cell::new(true),
            want_poll: Cell::new(false),
            next_timer: Cell::new(1),
            guest_errors: Cell::new(0),
            lost: Cell::new(0),
            detacher: RefCell::new(None),
        }
    }

    /// Our clock in nanoseconds (what `clock_get_ns` reports).
    pub fn now_ns(&self) -> i64 {
        let ns = self.epoch.get().elapsed().as_nanos() as u64;
        i64::try_from(ns.saturating_add(CLOCK_OFFSET_NS)).unwrap_or(i64::MAX)
    }

    /// Our clock in milliseconds (the unit of `timer_mod`).
    pub fn now_ms(&self) -> i64 {
        self.now_ns() / 1_000_000
    }

    /// The instant at which our clock reads `ms` milliseconds.
    pub fn deadline(&self, ms: i64) -> Instant {
        let ns = u64::try_from(ms)
            .unwrap_or(0)
            .saturating_mul(1_000_000)
            .saturating_sub(CLOCK_OFFSET_NS);
        // About 30 years at most, so the addition cannot overflow.
        let ns = ns.min(86_400 * 365 * 30 * 1_000_000_000);
        self.epoch.get() + Duration::from_nanos(ns)
    }

    /// Moves our clock forward by `d` (libslirp sees `d` pass at once).
    pub fn skip(&self, d: Duration) {
        let e = self.epoch.get();
        self.epoch.set(e.checked_sub(d).unwrap_or(e));
    }

    /// Queues an operation for the reactor side.
    pub fn push_op(&self, op: Op) {
        match self.ops.try_borrow_mut() {
            Ok(mut ops) => ops.push(op),
            Err(_) => self.lost.set(self.lost.get() + 1),
        }
        self.dirty.set(true);
    }

    /// Takes the queued operations.
    pub fn take_ops(&self) -> Vec<Op> {
        self.ops
            .try_borrow_mut()
            .map(|mut o| std::mem::take(&mut *o))
            .unwrap_or_default()
    }

    /// The oldest frame for the guest, if any.
    pub fn pop_frame(&self) -> Option<Vec<u8>> {
        self.frames.try_borrow_mut().ok()?.pop_front()
    }

    /// Gives a sent frame's buffer back for reuse.
    pub fn recycle(&self, mut buf: Vec<u8>) {
        if let Ok(mut spare) = self.spare.try_borrow_mut() {
            if spare.len() < SPARE_FRAMES {
                buf.clear();
                spare.push(buf);
            }
        }
    }

    /// Drops queued frames (after cleanup).
    pub fn clear_frames(&self) {
        if let Ok(mut f) = self.frames.try_borrow_mut() {
            f.clear();
        }
    }

    fn push_frame(&self, data: &[u8]) {
        let mut buf = self
            .spare
            .try_borrow_mut()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_default();
        buf.extend_from_slice(data);
        match self.frames.try_borrow_mut() {
            Ok(mut f) => f.push_back(buf),
            Err(_) => self.lost.set(self.lost.get() + 1),
        }
    }

    fn new_timer(&self, kind: TimerKind) -> *mut c_void {
        let id = self.next_timer.get();
        self.next_timer.set(id.wrapping_add(1).max(1));
        self.push_op(Op::TimerNew { id, kind });
        // The id, never 0, stands in for the timer pointer: libslirp only
        // hands it back to timer_mod and timer_free.
        id as *mut c_void
    }
}

/// The callback table. libslirp keeps a pointer to it, hence a static.
pub(crate) static CALLBACKS: ffi::SlirpCb = ffi::SlirpCb {
    send_packet: Some(send_packet),
    guest_error: Some(guest_error),
    clock_get_ns: Some(clock_get_ns),
    timer_new: Some(timer_new),
    timer_free: Some(timer_free),
    timer_mod: Some(timer_mod),
    register_poll_fd: Some(register_poll_fd),
    unregister_poll_fd: Some(unregister_poll_fd),
    notify: Some(notify),
    init_completed: None,
    timer_new_opaque: Some(timer_new_opaque),
};

/// # Safety
/// `opaque` must be the pointer given to `slirp_new`: a live `Shared`.
unsafe fn shared<'a>(opaque: *mut c_void) -> &'a Shared {
    // SAFETY: by the caller's contract `opaque` points to the stack's boxed
    // Shared, which outlives the libslirp instance; only shared references
    // are ever made to it (all its mutability is in cells).
    unsafe { &*(opaque as *const Shared) }
}

unsafe extern "C" fn send_packet(buf: *const c_void, len: usize, opaque: *mut c_void) -> isize {
    // SAFETY: libslirp passes back the opaque pointer given to slirp_new.
    let sh = unsafe { shared(opaque) };
    if !buf.is_null() && len > 0 {
        // SAFETY: libslirp hands a frame of `len` readable bytes at `buf`,
        // valid for the duration of this call.
        let data = unsafe { std::slice::from_raw_parts(buf as *const u8, len) };
        sh.push_frame(data);
    }
    isize::try_from(len).unwrap_or(isize::MAX)
}

unsafe extern "C" fn guest_error(msg: *const c_char, opaque: *mut c_void) {
    // SAFETY: libslirp passes back the opaque pointer given to slirp_new.
    let sh = unsafe { shared(opaque) };
    sh.guest_errors.set(sh.guest_errors.get() + 1);
    if !msg.is_null() {
        // SAFETY: libslirp passes a NUL-terminated message valid for the call.
        let m = unsafe { std::ffi::CStr::from_ptr(msg) };
        log::warn!("slirp: guest error: {}", m.to_string_lossy());
    }
}

unsafe extern "C" fn clock_get_ns(opaque: *mut c_void) -> i64 {
    // SAFETY: libslirp passes back the opaque pointer given to slirp_new.
    unsafe { shared(opaque) }.now_ns()
}

unsafe extern "C" fn timer_new(
    cb: Option<ffi::SlirpTimerCb>,
    cb_opaque: *mut c_void,
    opaque: *mut c_void,
) -> *mut c_void {
    // SAFETY: libslirp passes back the opaque pointer given to slirp_new.
    let sh = unsafe { shared(opaque) };
    match cb {
        Some(cb) => sh.new_timer(TimerKind::Callback { cb, cb_opaque }),
        None => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn timer_new_opaque(
    id: ffi::SlirpTimerId,
    cb_opaque: *mut c_void,
    opaque: *mut c_void,
) -> *mut c_void {
    // SAFETY: libslirp passes back the opaque pointer given to slirp_new.
    let sh = unsafe { shared(opaque) };
    sh.new_timer(TimerKind::Opaque { id, cb_opaque })
}

unsafe extern "C" fn timer_free(timer: *mut c_void, opaque: *mut c_void) {
    // SAFETY: libslirp passes back the opaque pointer given to slirp_new.
    let sh = unsafe { shared(opaque) };
    if !timer.is_null() {
        sh.push_op(Op::TimerFree { id: timer as usize });
    }
}

unsafe extern "C" fn timer_mod(timer: *mut c_void, expire_time: i64, opaque: *mut c_void) {
    // SAFETY: libslirp passes back the opaque pointer given to slirp_new.
    let sh = unsafe { shared(opaque) };
    if !timer.is_null() {
        sh.push_op(Op::TimerMod {
            id: timer as usize,
            expire_ms: expire_time,
        });
    }
}

unsafe extern "C" fn register_poll_fd(fd: c_int, opaque: *mut c_void) {
    // SAFETY: libslirp passes back the opaque pointer given to slirp_new.
    let sh = unsafe { shared(opaque) };
    #[cfg(any(target_os = "freebsd", target_os = "macos"))]
    {
        // As bhyve does: a write to a socket the peer closed must fail with
        // EPIPE, not kill the process. (Linux has no SO_NOSIGPIPE; Rust
        // programs ignore SIGPIPE by default.)
        let one: c_int = 1;
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&one`;
        // on a bad descriptor it only fails.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_NOSIGPIPE,
                (&one as *const c_int).cast(),
                std::mem::size_of::<c_int>() as libc::socklen_t,
            )
        };
    }
    sh.push_op(Op::Register(fd));
}

unsafe extern "C" fn unregister_poll_fd(fd: c_int, opaque: *mut c_void) {
    // SAFETY: libslirp passes back the opaque pointer given to slirp_new.
    let sh = unsafe { shared(opaque) };
    // libslirp closes `fd` right after this: out of the event queue now,
    // while it is open (on kqueue a closed one could not be, and polling
    // would refuse its number to the next socket that gets it); the
    // registration itself goes when the op is applied.
    if let Ok(d) = sh.detacher.try_borrow() {
        if let Some(d) = d.as_ref() {
            d.detach(fd);
        }
    }
    sh.push_op(Op::Unregister(fd));
}

unsafe extern "C" fn notify(opaque: *mut c_void) {
    // SAFETY: libslirp passes back the opaque pointer given to slirp_new.
    unsafe { shared(opaque) }.dirty.set(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_and_deadlines_agree() {
        let sh = Shared::new();
        let now = sh.now_ms();
        assert!(now >= 1000);
        let d = sh.deadline(now + 50);
        let ahead = d.duration_since(Instant::now());
        assert!(ahead <= Duration::from_millis(50), "{ahead:?}");
        assert!(sh.deadline(-5) <= Instant::now());
        // Far future does not overflow.
        let _ = sh.deadline(i64::MAX);
    }
}
