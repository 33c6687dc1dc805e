//! Entering: the plan's hooks run, every planned descriptor is checked
//! open, what libc reads lazily is read, and the platform applies the
//! plan (`linux.rs`, `capsicum.rs`; elsewhere `Unsupported`).

use std::os::fd::RawFd;

use super::status::{Entered, ENTERED};
use super::{Error, Plan, Policy, Report, Result};

impl Plan {
    /// Runs the hooks, limits every planned descriptor and enters the
    /// sandbox under `policy`. See the [module docs](crate::sandbox).
    pub fn apply_and_enter(self, policy: &Policy) -> Result<Report> {
        enter(self, policy)
    }
}

/// Runs `plan`'s hooks, limits every planned descriptor and enters the
/// sandbox under `policy` (the same as [`Plan::apply_and_enter`]).
pub fn enter(plan: Plan, policy: &Policy) -> Result<Report> {
    if !cfg!(any(target_os = "linux", target_os = "freebsd")) {
        return Err(Error::Unsupported(std::env::consts::OS));
    }
    if ENTERED.get().is_some() {
        return Err(Error::AlreadyEntered);
    }
    let Plan { fds, hooks } = plan;
    for (name, hook) in hooks {
        hook().map_err(|source| Error::Hook { name, source })?;
    }
    let plan = Plan {
        fds,
        hooks: Vec::new(),
    };
    for p in &plan.fds {
        if !is_open(p.fd) {
            return Err(Error::BadFd {
                fd: p.fd,
                label: p.label.clone(),
            });
        }
    }
    let mut report = Report::new(&plan, policy);
    report.unplanned_fds = open_fds()
        .into_iter()
        .filter(|fd| plan.rights_of(*fd).is_none())
        .collect();
    if !report.unplanned_fds.is_empty() {
        log::debug!(
            "descriptors open but not planned: {:?}",
            report.unplanned_fds
        );
    }
    cache_libc_data();
    let landlock = super::sys::apply(&plan, policy, &mut report)?;
    let _ = ENTERED.set(Entered {
        mode: policy.mode,
        landlock,
    });
    Ok(report)
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor table entry.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

/// Every open descriptor, found by probing up to the soft `RLIMIT_NOFILE`
/// (at most 65536).
fn open_fds() -> Vec<RawFd> {
    // SAFETY: sysconf has no memory effects.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    let max = if max <= 0 { 1024 } else { max.min(65536) } as RawFd;
    (0..max).filter(|&fd| is_open(fd)).collect()
}

/// Loads what libc reads lazily and could not read after entry: time zone
/// data (`caph_cache_tzdata` in FreeBSD's libcasper does the same).
fn cache_libc_data() {
    let t: libc::time_t = 0;
    // SAFETY: `tm` is a plain C struct for localtime_r to fill; both
    // pointers are valid for the call.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{status, SeccompMode};
    use super::*;

    #[test]
    fn hook_errors_name_the_hook() {
        if ENTERED.get().is_some() {
            return;
        }
        let mut plan = Plan::new();
        plan.before_entry("boom", || Err(std::io::Error::other("no")));
        match enter(plan, &Policy::restricted()) {
            Err(Error::Hook { name, .. }) => assert_eq!(name, "boom"),
            #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
            Err(Error::Unsupported(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn closed_fd_is_refused_before_anything_applies() {
        let mut plan = Plan::new();
        plan.add_raw(1_000_000, crate::Rights::READ, "ghost");
        match enter(plan, &Policy::restricted()) {
            Err(Error::BadFd { fd, label }) => {
                assert_eq!(fd, 1_000_000);
                assert_eq!(label, "ghost");
            }
            #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
            Err(Error::Unsupported(_)) => {}
            other => panic!("{other:?}"),
        }
        assert!(!status().seccomp.is_some_and(|m| m == SeccompMode::Filter));
    }
}
