//! A helper process the VMM spawned, which it can still reap and end
//! once it is sandboxed.
//!
//! `wait4` and `kill` name a process by pid, which a sandbox cannot limit
//! to one child (and FreeBSD's capability mode refuses outright); a
//! process descriptor can be planned like any other descriptor. It is
//! registered disabled, so that
//! [`Plan::from_reactor`](crate::sandbox::Plan::from_reactor) plans it
//! with [`Rights::PROCESS`] (and `EVENT`):
//!
//! - Linux: the child is spawned with std's `Command` and watched through
//!   a pidfd (`pidfd_open`); seccomp lets `waitid(P_PIDFD)` and
//!   `pidfd_send_signal` (SIGTERM, SIGKILL) through on it and on nothing
//!   else.
//! - FreeBSD: the child is spawned with `pdfork(2)`, which gives the
//!   process descriptor; `pdkill(2)` ends it (`CAP_PDKILL`), and its exit
//!   status comes from kqueue's `EVFILT_PROCDESC` with `NOTE_EXIT`, whose
//!   `data` is the status as `wait(2)` gives it (`CAP_EVENT`); closing the
//!   descriptor reaps it (`kern/sys_procdesc.c`, `procdesc_close`). All of
//!   these work in capability mode. Type-checked here, not run.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Error;
use crate::closing::ClosingFd;
use crate::reactor::{Interest, Reactor, Registration};
use crate::rights::Rights;

/// See the module docs.
pub(crate) struct Process {
    pid: u32,
    /// The pidfd (Linux) or process descriptor (FreeBSD).
    handle: Option<Rc<ClosingFd>>,
    reg: Option<Registration>,
    status: Option<ExitStatus>,
}

impl Process {
    /// Spawns `program -S 3` with `fd3` as its descriptor 3, stdin and
    /// stdout on `/dev/null`, stderr ours, and watches it; the process
    /// descriptor goes into `reactor`'s plan.
    pub(crate) fn spawn<D: 'static>(
        program: &str,
        fd3: &OwnedFd,
        reactor: &mut Reactor<D>,
    ) -> Result<Process, Error> {
        let (pid, handle) = sys::spawn(program, fd3)
            .map_err(|e| Error::io(format!("spawning the slirp helper {program:?}"), e))?;
        let handle = Rc::new(ClosingFd::new(handle));
        let h = reactor.add_disabled(
            Rc::clone(&handle),
            Interest::READ,
            Rights::PROCESS | Rights::EVENT,
            |_, _, _| {},
        )?;
        Ok(Process {
            pid,
            handle: Some(handle),
            reg: Some(Registration::new(reactor, h)),
            status: None,
        })
    }

    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.pid
    }

    /// Its exit status, reaping it if it has exited; never waits.
    pub(crate) fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            let fd = self.handle.as_ref()?.as_raw_fd();
            self.status = sys::try_reap(fd);
        }
        self.status
    }

    /// Waits up to `limit` for it to exit; its status if it did.
    pub(crate) fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.try_reap() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends it SIGKILL.
    pub(crate) fn kill(&mut self) {
        if let Some(fd) = &self.handle {
            sys::kill(fd.as_raw_fd());
        }
    }

    /// Stops watching it: its registration goes and its descriptor is
    /// closed through `closing` (on FreeBSD that reaps an exited child).
    pub(crate) fn forget<D>(&mut self, reactor: &mut Reactor<D>) {
        if let Some(mut reg) = self.reg.take() {
            let _ = reg.delete(reactor);
        }
        self.handle = None;
    }
}

/// "exited (exit status: 0)", "exited (signal: 9 (SIGKILL))", or what
/// is known short of that.
pub(crate) fn describe(status: Option<ExitStatus>, otherwise: &str) -> String {
    match status {
        Some(st) => format!("exited ({st})"),
        None => otherwise.to_owned(),
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Command, ExitStatus, Stdio};

    /// std's spawn, then `pidfd_open` of the child.
    pub(super) fn spawn(program: &str, fd3: &OwnedFd) -> io::Result<(u32, OwnedFd)> {
        let child_end = fd3.as_raw_fd();
        let mut cmd = Command::new(program);
        cmd.args(["-S", "3"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: between fork and exec only dup2, which is
        // async-signal-safe: it moves the helper's end to fd 3 (without
        // close-on-exec); every other descriptor of ours is close-on-exec
        // or closed by the helper at start-up.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(child_end, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child.id();
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor, owned below. The child cannot have been reaped (only
        // this pidfd or `child` could), so the pid is still ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just made, owned only here.
        Ok((pid, unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    /// `waitid(P_PIDFD, fd, WEXITED | WNOHANG)`.
    pub(super) fn try_reap(fd: RawFd) -> Option<ExitStatus> {
        // SAFETY: waitid writes one siginfo_t into `info`, which lives for
        // the call; P_PIDFD (3) names the child by its pidfd.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                3 as libc::idtype_t,
                fd as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        // SAFETY: waitid filled `info` (si_pid 0: not exited yet).
        if rc != 0 || unsafe { info.si_pid() } == 0 {
            return None;
        }
        // SAFETY: as above; si_status is the exit code or the signal.
        let status = unsafe { info.si_status() };
        let raw = match info.si_code {
            libc::CLD_EXITED => (status & 0xff) << 8,
            libc::CLD_DUMPED => status | 0x80,
            _ => status,
        };
        Some(ExitStatus::from_raw(raw))
    }

    /// `pidfd_send_signal(fd, SIGKILL)`.
    pub(super) fn kill(fd: RawFd) {
        // SAFETY: integer arguments; the pidfd names our child only.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

#[cfg(target_os = "freebsd")]
mod sys {
    use std::ffi::CString;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::ExitStatusExt;
    use std::path::PathBuf;
    use std::process::ExitStatus;

    /// `program` as execv needs it: a path, searched in `PATH` here, before
    /// the fork (the child only calls async-signal-safe functions).
    fn resolve(program: &str) -> io::Result<CString> {
        let path = if program.contains('/') {
            PathBuf::from(program)
        } else {
            std::env::var_os("PATH")
                .and_then(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(program))
                        .find(|c| c.is_file())
                })
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not found in PATH"))?
        };
        CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))
    }

    /// `pdfork(2)`, then in the child `fd3` moved to 3, stdin and stdout
    /// on /dev/null, and `execv`. The parent gets the pid and the process
    /// descriptor (close-on-exec).
    pub(super) fn spawn(program: &str, fd3: &OwnedFd) -> io::Result<(u32, OwnedFd)> {
        let path = resolve(program)?;
        let args = [path.clone(), CString::new("-S")?, CString::new("3")?];
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let devnull = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        let (null, child_end) = (devnull.as_raw_fd(), fd3.as_raw_fd());
        let mut pd: libc::c_int = -1;
        // SAFETY: pdfork returns twice. In the child only dup2, execv and
        // _exit run, all async-signal-safe, on memory prepared above.
        let pid = unsafe { libc::pdfork(&mut pd, libc::PD_CLOEXEC) };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: see above; _exit if anything fails.
            unsafe {
                if libc::dup2(null, 0) < 0
                    || libc::dup2(null, 1) < 0
                    || libc::dup2(child_end, 3) < 0
                {
                    libc::_exit(126);
                }
                libc::execv(path.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        // SAFETY: pdfork made `pd` for us alone.
        Ok((pid as u32, unsafe { OwnedFd::from_raw_fd(pd) }))
    }

    /// Whether the process descriptor's process exited, asked of a
    /// kqueue with `EVFILT_PROCDESC`/`NOTE_EXIT` and a zero timeout; its
    /// status is the event's `data`.
    pub(super) fn try_reap(fd: RawFd) -> Option<ExitStatus> {
        // SAFETY: kqueue makes a descriptor, owned below.
        let kq = unsafe { libc::kqueue() };
        if kq < 0 {
            return None;
        }
        // SAFETY: just made, owned here.
        let kq = unsafe { OwnedFd::from_raw_fd(kq) };
        // SAFETY: a zeroed kevent is valid; its fields are set below.
        let mut change: libc::kevent = unsafe { std::mem::zeroed() };
        change.ident = fd as libc::uintptr_t;
        change.filter = libc::EVFILT_PROCDESC;
        change.flags = libc::EV_ADD;
        change.fflags = libc::NOTE_EXIT;
        // SAFETY: as above.
        let mut out: libc::kevent = unsafe { std::mem::zeroed() };
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: one change in, at most one event out, both live for the
        // call; `zero` makes it return at once.
        let n = unsafe { libc::kevent(kq.as_raw_fd(), &change, 1, &mut out, 1, &zero) };
        if n == 1 && out.filter == libc::EVFILT_PROCDESC && out.fflags & libc::NOTE_EXIT != 0 {
            return Some(ExitStatus::from_raw(out.data as i32));
        }
        None
    }

    /// `pdkill(fd, SIGKILL)`.
    pub(super) fn kill(fd: RawFd) {
        // SAFETY: integer arguments; the descriptor names our child only.
        unsafe { libc::pdkill(fd, libc::SIGKILL) };
    }
}
