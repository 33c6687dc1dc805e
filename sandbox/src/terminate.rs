//! SIGTERM and SIGINT, so that they always work: the first ends the
//! session through the loop (exit 0, counters logged), a second ends the
//! process at once by its signal, wherever it is.
//!
//! A signal routed through a signalfd stays blocked in the thread's mask:
//! were the loop ever held up in a system call, no number of SIGTERMs
//! would reach it. So the signals are not blocked here. A handler writes
//! the signal's number to a pipe the loop watches (the self-pipe trick)
//! and, installed with `SA_RESETHAND`, leaves the default action behind
//! it, which the next one takes. `SA_RESTART` keeps every other system
//! call as it was; `epoll_wait` returns early regardless, so the loop sees
//! the pipe at once.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The pipe's write end, for the handler (-1: none).
static WRITE_END: AtomicI32 = AtomicI32::new(-1);

/// The signals handled.
pub const SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// The pipe the handler writes to: (read end, write end), both
/// non-blocking, close-on-exec.
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((r, w))
}

extern "C" fn on_signal(sig: libc::c_int) {
    // errno is the interrupted code's: restored below.
    let errno = nix::errno::Errno::last_raw();
    let fd = WRITE_END.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = [sig as u8];
        // SAFETY: write is async-signal-safe; a full pipe (EAGAIN) already
        // holds a wake-up.
        unsafe { libc::write(fd, b.as_ptr().cast(), 1) };
    }
    nix::errno::Errno::set_raw(errno);
}

/// Installs the handler for [`SIGNALS`], writing to `write_end` (kept
/// open by the caller for the process's life).
pub fn install(write_end: &OwnedFd) -> std::io::Result<()> {
    WRITE_END.store(write_end.as_raw_fd(), Ordering::SeqCst);
    for sig in SIGNALS {
        // SAFETY: a zeroed sigaction with a handler that only calls
        // async-signal-safe functions.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    // A signal blocked by whoever started us would never arrive.
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGTERM);
    set.add(nix::sys::signal::Signal::SIGINT);
    set.thread_unblock()?;
    Ok(())
}

/// Empties the pipe; which signals came.
pub fn drain(read_end: RawFd) -> Vec<i32> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    loop {
        // SAFETY: read into a stack buffer of its length.
        let n = unsafe { libc::read(read_end, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        got.extend(buf[..n as usize].iter().map(|&b| i32::from(b)));
    }
    got
}
