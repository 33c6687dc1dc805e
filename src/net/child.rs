//! A helper process the VMM spawned, which it can still reap and end
//! once it is sandboxed.
//!
//! `wait4` and `kill` name a process by pid, which a sandbox cannot limit
//! to one child; a process descriptor can be planned like any other. On
//! Linux the child is watched through a pidfd (`pidfd_open`), registered
//! disabled so that [`Plan::from_reactor`](crate::sandbox::Plan::from_reactor)
//! plans it with [`Rights::PROCESS`]: seccomp then lets `waitid(P_PIDFD)`
//! and `pidfd_send_signal` (SIGTERM, SIGKILL) through on it and on nothing
//! else. Elsewhere the pid is used, which works before entry only
//! (FreeBSD's capability mode refuses `wait4` and `kill` of another
//! process; its process descriptors are not used yet).

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use super::Error;
use crate::reactor::{Reactor, Registration};

/// See the module docs.
pub(crate) struct Process {
    child: Child,
    #[cfg(target_os = "linux")]
    pidfd: Option<std::rc::Rc<crate::closing::ClosingFd>>,
    reg: Option<Registration>,
    status: Option<ExitStatus>,
}

impl Process {
    /// Watches `child`; on Linux its pidfd goes into `reactor`'s plan.
    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
    pub(crate) fn new<D: 'static>(
        child: Child,
        reactor: &mut Reactor<D>,
    ) -> Result<Process, Error> {
        #[allow(unused_mut)]
        let mut p = Process {
            child,
            #[cfg(target_os = "linux")]
            pidfd: None,
            reg: None,
            status: None,
        };
        #[cfg(target_os = "linux")]
        {
            use crate::reactor::Interest;
            use crate::rights::Rights;
            use std::os::fd::FromRawFd;
            // SAFETY: pidfd_open takes a pid and flags and returns a new
            // descriptor, owned below.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.child.id() as libc::pid_t, 0) };
            if fd < 0 {
                return Err(Error::io(
                    format!("pidfd_open of the helper (pid {})", p.child.id()),
                    std::io::Error::last_os_error(),
                ));
            }
            // SAFETY: just made, owned only here.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
            let fd = std::rc::Rc::new(crate::closing::ClosingFd::new(fd));
            let h = reactor.add_disabled(
                std::rc::Rc::clone(&fd),
                Interest::READ,
                Rights::PROCESS,
                |_, _, _| {},
            )?;
            p.pidfd = Some(fd);
            p.reg = Some(Registration::new(reactor, h));
        }
        Ok(p)
    }

    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, reaping it if it has exited; never waits.
    pub(crate) fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.reap_now();
        }
        self.status
    }

    #[cfg(target_os = "linux")]
    fn reap_now(&mut self) -> Option<ExitStatus> {
        use std::os::fd::AsRawFd;
        let fd = self.pidfd.as_ref()?.as_raw_fd();
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
        Some(std::os::unix::process::ExitStatusExt::from_raw(raw))
    }

    #[cfg(not(target_os = "linux"))]
    fn reap_now(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
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
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.pidfd {
            use std::os::fd::AsRawFd;
            // SAFETY: integer arguments; the pidfd names our child only.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            return;
        }
        let _ = self.child.kill();
    }

    /// Stops watching it (its descriptor closed through `closing`).
    pub(crate) fn forget<D>(&mut self, reactor: &mut Reactor<D>) {
        if let Some(mut reg) = self.reg.take() {
            let _ = reg.delete(reactor);
        }
        #[cfg(target_os = "linux")]
        {
            self.pidfd = None;
        }
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
