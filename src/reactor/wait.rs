//! One wait for readiness.
//!
//! On Linux it is a single `epoll_pwait` on the poller's epoll descriptor.
//! polling's own wait makes four more syscalls around each (arming its
//! timerfd and re-arming it, clearing its notifier and re-arming it, both
//! oneshot), which an idle helper would pay on every wakeup. polling still
//! registers every descriptor (with our keys, level-triggered) and is what
//! a [`Waker`](super::Waker) notifies: when its notifier shows up among
//! the events, the wait is redone through polling, which clears and
//! re-arms it, and since every registration is level-triggered, whatever
//! was ready is reported again by that wait. Elsewhere (kqueue) polling's
//! wait is used as it is.

use std::io;
use std::time::{Duration, Instant};

use polling::Poller;

/// The key polling gives its own notifier (and timer) on epoll.
#[cfg(any(target_os = "linux", target_os = "android"))]
const POLLING_NOTIFY_KEY: u64 = usize::MAX as u64;

/// One registration's readiness, as the wait reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ready {
    pub key: usize,
    pub readable: bool,
    pub writable: bool,
    pub hangup: bool,
    pub error: bool,
}

/// What a wait needs between rounds: its buffers.
pub(super) struct Waiter {
    events: polling::Events,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    epoll: Vec<libc::epoll_event>,
    /// What the last wait reported.
    pub ready: Vec<Ready>,
}

const CAPACITY: usize = 256;

impl Waiter {
    pub fn new() -> Waiter {
        Waiter {
            events: polling::Events::with_capacity(
                std::num::NonZeroUsize::new(CAPACITY).expect("non-zero"),
            ),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            epoll: Vec::with_capacity(CAPACITY),
            ready: Vec::with_capacity(CAPACITY),
        }
    }

    /// Waits until a registration is ready, `deadline` passes (`None`: no
    /// deadline) or the poller is notified, and fills [`ready`](Self::ready).
    pub fn wait(&mut self, poller: &Poller, deadline: Option<Instant>) -> io::Result<()> {
        self.ready.clear();
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let deadline = {
            if self.wait_epoll(poller, deadline)? {
                return Ok(());
            }
            // Notified: polling's wait (at once) clears its notifier and
            // re-arms it, and reports again what is ready.
            self.ready.clear();
            Some(Instant::now())
        };
        self.wait_polling(poller, deadline)
    }

    fn wait_polling(&mut self, poller: &Poller, deadline: Option<Instant>) -> io::Result<()> {
        self.events.clear();
        let now = Instant::now();
        match deadline {
            Some(d) if d <= now => poller.wait(&mut self.events, Some(Duration::ZERO)),
            Some(d) => poller.wait_deadline(&mut self.events, d),
            None => poller.wait(&mut self.events, None),
        }?;
        self.ready.extend(self.events.iter().map(|ev| Ready {
            key: ev.key,
            readable: ev.readable,
            writable: ev.writable,
            hangup: ev.is_interrupt(),
            error: ev.is_err().unwrap_or(false),
        }));
        Ok(())
    }

    /// `Ok(false)` when polling's notifier fired.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn wait_epoll(&mut self, poller: &Poller, deadline: Option<Instant>) -> io::Result<bool> {
        use std::os::fd::AsRawFd;

        let timeout = timeout_ms(deadline, Instant::now());
        self.epoll.clear();
        // SAFETY: the buffer has room for `CAPACITY` events, as passed; the
        // poller's epoll descriptor is open while `poller` is borrowed; a
        // null signal mask is allowed (no mask change).
        let n = unsafe {
            libc::epoll_pwait(
                poller.as_raw_fd(),
                self.epoll.as_mut_ptr(),
                CAPACITY as libc::c_int,
                timeout,
                std::ptr::null(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok(true),
                _ => Err(e),
            };
        }
        // SAFETY: the kernel wrote `n` (at most CAPACITY) events.
        unsafe { self.epoll.set_len(n as usize) };
        let mut notified = false;
        for ev in &self.epoll {
            let (flags, key) = (ev.events as libc::c_int, ev.u64);
            if key == POLLING_NOTIFY_KEY {
                notified = true;
                continue;
            }
            self.ready.push(from_epoll(key as usize, flags));
        }
        Ok(!notified)
    }
}

/// An epoll event as polling reports it: readable on `IN | HUP | ERR |
/// PRI`, writable on `OUT | HUP | ERR`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn from_epoll(key: usize, flags: libc::c_int) -> Ready {
    let has = |f: libc::c_int| flags & f != 0;
    Ready {
        key,
        readable: has(libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLPRI),
        writable: has(libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR),
        hangup: has(libc::EPOLLHUP),
        error: has(libc::EPOLLERR),
    }
}

/// epoll's timeout for `deadline`: -1 for none, else milliseconds rounded
/// up, so that a timer is never woken for early.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
fn timeout_ms(deadline: Option<Instant>, now: Instant) -> libc::c_int {
    match deadline {
        None => -1,
        Some(d) if d <= now => 0,
        Some(d) => {
            let ns = (d - now).as_nanos();
            let ms = ns.div_ceil(1_000_000);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        let now = Instant::now();
        assert_eq!(timeout_ms(None, now), -1);
        assert_eq!(timeout_ms(Some(now), now), 0);
        assert_eq!(timeout_ms(Some(now - Duration::from_secs(1)), now), 0);
        assert_eq!(timeout_ms(Some(now + Duration::from_nanos(1)), now), 1);
        assert_eq!(timeout_ms(Some(now + Duration::from_millis(5)), now), 5);
        assert_eq!(timeout_ms(Some(now + Duration::from_micros(5001)), now), 6);
        assert_eq!(
            timeout_ms(Some(now + Duration::from_secs(100 * 86_400)), now),
            libc::c_int::MAX
        );
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn epoll_flags_read_as_polling_reads_them() {
        let r = from_epoll(7, libc::EPOLLIN);
        assert!(r.readable && !r.writable && !r.hangup && !r.error);
        let r = from_epoll(7, libc::EPOLLOUT);
        assert!(!r.readable && r.writable);
        let r = from_epoll(7, libc::EPOLLHUP);
        assert!(r.readable && r.writable && r.hangup && !r.error);
        let r = from_epoll(7, libc::EPOLLERR);
        assert!(r.readable && r.writable && r.error && !r.hangup);
    }
}
