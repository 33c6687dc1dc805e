//! Signals as loop events.
//!
//! A routed signal is blocked in the loop thread's mask, so it is never
//! delivered asynchronously there, and its arrival is read from the kernel as
//! an ordinary event: a `signalfd` on Linux, `EVFILT_SIGNAL` on kqueue
//! platforms. Threads started after the signal was added inherit the blocked
//! mask; a thread that unblocks it may take the signal instead of the loop,
//! which is the usual `signalfd` rule.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use polling::Poller;

use super::error::{Error, Result};

/// The polling key of Linux's signalfd; kqueue uses one key per signal below it.
pub(crate) const SIGNAL_KEY: usize = usize::MAX - 1;

/// Checks that `signo` names a signal the loop can take.
pub(crate) fn validate(signo: i32) -> Result<Signal> {
    match Signal::try_from(signo) {
        Ok(Signal::SIGKILL) | Ok(Signal::SIGSTOP) | Err(_) => Err(Error::BadSignal(signo)),
        Ok(s) => Ok(s),
    }
}

/// The kernel side of signal routing: the blocked mask and the source.
pub(crate) struct SignalSource {
    /// Signals routed to the loop.
    routed: SigSet,
    /// Signals that were already blocked before we blocked them; they stay
    /// blocked when their route is removed.
    were_blocked: SigSet,
    #[cfg(target_os = "linux")]
    fd: Option<nix::sys::signalfd::SignalFd>,
}

impl SignalSource {
    pub fn new() -> Self {
        SignalSource {
            routed: SigSet::empty(),
            were_blocked: SigSet::empty(),
            #[cfg(target_os = "linux")]
            fd: None,
        }
    }

    fn block(&mut self, sig: Signal) -> Result<()> {
        let current = SigSet::thread_get_mask()
            .map_err(|e| Error::io(format!("reading the signal mask for {sig}"), e.into()))?;
        if current.contains(sig) {
            self.were_blocked.add(sig);
        }
        let mut one = SigSet::empty();
        one.add(sig);
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&one), None)
            .map_err(|e| Error::io(format!("blocking {sig}"), e.into()))
    }

    fn unblock(&mut self, sig: Signal) {
        if self.were_blocked.contains(sig) {
            self.were_blocked.remove(sig);
            return;
        }
        let mut one = SigSet::empty();
        one.add(sig);
        if let Err(e) = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&one), None)
        {
            log::warn!("unblocking {sig} failed: {e}");
        }
    }

    /// Descriptors this source holds, for the sandbox's rights plan.
    pub fn fds(&self) -> Vec<std::os::fd::RawFd> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            self.fd.iter().map(|f| f.as_raw_fd()).collect()
        }
        #[cfg(not(target_os = "linux"))]
        {
            Vec::new()
        }
    }
}

#[cfg(target_os = "linux")]
impl SignalSource {
    /// Routes `sig` to the loop.
    pub fn add(&mut self, poller: &Poller, sig: Signal) -> Result<()> {
        use nix::sys::signalfd::{SfdFlags, SignalFd};
        self.block(sig)?;
        let mut routed = self.routed;
        routed.add(sig);
        let res = match &self.fd {
            Some(fd) => fd.set_mask(&routed),
            None => SignalFd::with_flags(&routed, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
                .and_then(|fd| {
                    // SAFETY: the signalfd lives in `self.fd` and is deleted
                    // from the poller in `remove` before it is dropped.
                    unsafe {
                        poller.add_with_mode(
                            &fd,
                            polling::Event::readable(SIGNAL_KEY),
                            polling::PollMode::Level,
                        )
                    }
                    .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
                    self.fd = Some(fd);
                    Ok(())
                }),
        };
        if let Err(e) = res {
            self.unblock(sig);
            return Err(Error::io(format!("routing {sig} to a signalfd"), e.into()));
        }
        self.routed = routed;
        Ok(())
    }

    /// Stops routing `sig`, restoring its blocked state.
    pub fn remove(&mut self, poller: &Poller, sig: Signal) {
        self.routed.remove(sig);
        if let Some(fd) = &self.fd {
            if self.routed.iter().next().is_none() {
                let _ = poller.delete(fd);
                self.fd = None;
            } else if let Err(e) = fd.set_mask(&self.routed) {
                log::warn!("narrowing the signalfd mask failed: {e}");
            }
        }
        self.unblock(sig);
    }

    /// Reads every pending signal after an event on `key`, appending their
    /// numbers to `out`.
    pub fn drain(&mut self, key: usize, out: &mut Vec<i32>) {
        if key != SIGNAL_KEY {
            return;
        }
        let Some(fd) = &self.fd else { return };
        loop {
            match fd.read_signal() {
                Ok(Some(info)) => out.push(info.ssi_signo as i32),
                Ok(None) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("reading the signalfd failed: {e}");
                    break;
                }
            }
        }
    }

    /// Whether `key` belongs to the signal source.
    pub fn owns_key(key: usize) -> bool {
        key == SIGNAL_KEY
    }
}

#[cfg(any(
    target_os = "freebsd",
    target_os = "macos",
    target_os = "ios",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
impl SignalSource {
    fn key(sig: Signal) -> usize {
        SIGNAL_KEY - 1 - sig as usize
    }

    /// Routes `sig` to the loop with an `EVFILT_SIGNAL` filter.
    pub fn add(&mut self, poller: &Poller, sig: Signal) -> Result<()> {
        use polling::os::kqueue::{PollerKqueueExt, Signal as KqSignal};
        self.block(sig)?;
        if let Err(e) = poller.add_filter(
            KqSignal(sig as i32),
            Self::key(sig),
            polling::PollMode::Level,
        ) {
            self.unblock(sig);
            return Err(Error::io(format!("adding an EVFILT_SIGNAL for {sig}"), e));
        }
        self.routed.add(sig);
        Ok(())
    }

    /// Stops routing `sig`.
    pub fn remove(&mut self, poller: &Poller, sig: Signal) {
        use polling::os::kqueue::{PollerKqueueExt, Signal as KqSignal};
        self.routed.remove(sig);
        if let Err(e) = poller.delete_filter(KqSignal(sig as i32)) {
            log::warn!("deleting the EVFILT_SIGNAL for {sig} failed: {e}");
        }
        self.unblock(sig);
    }

    /// Translates an event on `key` into the signal it stands for, taking
    /// the signal off the pending set: `EVFILT_SIGNAL` only observes a
    /// signal, which stays pending (it is blocked) and would be delivered
    /// with its default action once unblocked, when the route is removed
    /// or the reactor dropped (a SIGTERM the loop handled would then kill
    /// the process).
    pub fn drain(&mut self, key: usize, out: &mut Vec<i32>) {
        if Self::owns_key(key) {
            let signo = (SIGNAL_KEY - 1 - key) as i32;
            consume_pending(signo);
            out.push(signo);
        }
    }

    /// Whether `key` belongs to the signal source.
    pub fn owns_key(key: usize) -> bool {
        (SIGNAL_KEY - 1 - 128..SIGNAL_KEY).contains(&key)
    }
}

/// Takes `signo` off this thread's (or the process's) pending signals, if
/// it is there, without waiting.
#[cfg(target_os = "freebsd")]
fn consume_pending(signo: i32) {
    // SAFETY: sigset calls on a local set; sigtimedwait with a zero timeout
    // returns at once (EAGAIN when nothing is pending) and writes nothing
    // through the null info pointer.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signo);
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
    }
}

/// Takes `signo` off this thread's (or the process's) pending signals, if
/// it is there. No `sigtimedwait` here: `sigwait` only after `sigpending`
/// shows the signal, so it returns at once.
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
fn consume_pending(signo: i32) {
    // SAFETY: sigset calls on local sets; sigwait is called only for a
    // signal that is pending for this thread or the process, so it does
    // not block.
    unsafe {
        let mut pending: libc::sigset_t = std::mem::zeroed();
        if libc::sigpending(&mut pending) != 0 || libc::sigismember(&pending, signo) != 1 {
            return;
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signo);
        let mut got = 0;
        libc::sigwait(&set, &mut got);
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "freebsd",
    target_os = "macos",
    target_os = "ios",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)))]
impl SignalSource {
    /// Signals have no event source on this platform.
    pub fn add(&mut self, _poller: &Poller, _sig: Signal) -> Result<()> {
        Err(Error::Unsupported("routing signals to the loop"))
    }

    /// Nothing is ever routed here.
    pub fn remove(&mut self, _poller: &Poller, _sig: Signal) {}

    /// Nothing is ever routed here.
    pub fn drain(&mut self, _key: usize, _out: &mut Vec<i32>) {}

    /// No key belongs to signals here.
    pub fn owns_key(_key: usize) -> bool {
        false
    }
}
