//! Process start-up shared by every front end: quiet stdio, close every
//! descriptor the helper was not given, and give up root, all before the
//! sandbox is entered (bhyve's slirp helper does the same, minus closing
//! stray descriptors).

use std::os::fd::RawFd;

/// Why start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        source: nix::Error,
    },
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> StartupError {
    let what = what.into();
    move |source| StartupError::Sys { what, source }
}

/// Points stdin and stdout (and stderr unless `keep_stderr`) at /dev/null,
/// so nothing the helper prints can reach a peer that handed it a terminal
/// or a pipe it did not expect output on.
pub fn quiet_stdio(keep_stderr: bool) -> Result<(), StartupError> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let null = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(sys("opening /dev/null"))?;
    let targets: &[RawFd] = if keep_stderr { &[0, 1] } else { &[0, 1, 2] };
    for &fd in targets {
        // SAFETY: dup2 onto a standard descriptor number; `null` stays open
        // for the duration of the call and the target is replaced atomically.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) } < 0 {
            return Err(StartupError::Sys {
                what: format!("pointing fd {fd} at /dev/null"),
                source: nix::Error::last(),
            });
        }
    }
    Ok(())
}

/// The descriptor ranges to close so that only stdio and `keep` stay open:
/// inclusive `(first, last)` pairs, the last one open-ended (`u32::MAX`).
pub fn ranges_to_close(keep: &[RawFd]) -> Vec<(u32, u32)> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&fd| fd > 2)
        .map(|&fd| fd as u32)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut out = Vec::new();
    let mut next = 3u32;
    for fd in keep {
        if fd > next {
            out.push((next, fd - 1));
        }
        next = fd + 1;
    }
    out.push((next, u32::MAX));
    out
}

/// Closes every descriptor above stderr except `keep`.
pub fn close_other_fds(keep: &[RawFd]) -> Result<(), StartupError> {
    for (first, last) in ranges_to_close(keep) {
        close_range(first, last)?;
    }
    Ok(())
}

#[cfg(any(all(target_os = "linux", target_env = "gnu"), target_os = "freebsd"))]
fn close_range(first: u32, last: u32) -> Result<(), StartupError> {
    // SAFETY: close_range only closes descriptors in the range, none of
    // which the helper still uses (the caller lists those it keeps).
    if unsafe { libc::close_range(first, last, 0) } < 0 {
        return Err(StartupError::Sys {
            what: format!("closing fds {first}..={last}"),
            source: nix::Error::last(),
        });
    }
    Ok(())
}

#[cfg(not(any(all(target_os = "linux", target_env = "gnu"), target_os = "freebsd")))]
fn close_range(first: u32, last: u32) -> Result<(), StartupError> {
    // SAFETY: sysconf has no preconditions.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    let max = if max <= 0 {
        1024
    } else {
        max.min(65_536) as u32
    };
    for fd in first..=last.min(max) {
        // SAFETY: closing descriptors the caller does not keep; EBADF for
        // unused numbers is expected and ignored.
        unsafe { libc::close(fd as i32) };
    }
    Ok(())
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on an open descriptor the caller holds.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What [`drop_root`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Not started as root: nothing to drop.
    Unprivileged,
    /// Now running as this user.
    Dropped {
        /// The user name.
        user: String,
        /// Its uid.
        uid: u32,
        /// Its gid.
        gid: u32,
    },
    /// Root, but the user does not exist (or is not mapped in this user
    /// namespace): stayed root, the sandbox is the only barrier.
    StayedRoot(String),
}

/// Drops to `user` (normally `nobody`) when running as root: supplementary
/// groups cleared, then gid, then uid. Must run before the sandbox, which
/// forbids reading /etc/passwd.
pub fn drop_root(user: &str) -> Result<Identity, StartupError> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid, User};
    if !Uid::effective().is_root() {
        return Ok(Identity::Unprivileged);
    }
    let Some(pw) = User::from_name(user).map_err(sys(format!("looking up user {user}")))? else {
        return Ok(Identity::StayedRoot(format!("no user {user}")));
    };
    if let Err(e) = setgroups(&[pw.gid]) {
        // In a user namespace without setgroups permission, this fails with
        // EPERM: the uid/gid switch below is still worth doing.
        log::debug!("setgroups: {e}");
    }
    if let Err(e) = setgid(pw.gid) {
        return Ok(Identity::StayedRoot(format!("setgid({}): {e}", pw.gid)));
    }
    setuid(pw.uid).map_err(sys(format!("setuid({})", pw.uid)))?;
    if setuid(Uid::from_raw(0)).is_ok() || setgid(Gid::from_raw(0)).is_ok() {
        return Err(StartupError::Sys {
            what: "root could be regained after dropping it".into(),
            source: nix::Error::EPERM,
        });
    }
    Ok(Identity::Dropped {
        user: user.to_string(),
        uid: pw.uid.as_raw(),
        gid: pw.gid.as_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_ranges_skip_kept_descriptors() {
        assert_eq!(ranges_to_close(&[]), vec![(3, u32::MAX)]);
        assert_eq!(ranges_to_close(&[3]), vec![(4, u32::MAX)]);
        assert_eq!(
            ranges_to_close(&[7, 4, 4, 1]),
            vec![(3, 3), (5, 6), (8, u32::MAX)]
        );
        assert_eq!(ranges_to_close(&[5, 6]), vec![(3, 4), (7, u32::MAX)]);
    }
}
