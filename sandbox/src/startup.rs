//! Process start-up shared by every front end: close every descriptor the
//! helper was not given, take the inherited ones, make its socket files
//! private, point stdin and stdout at /dev/null, and give up root or its
//! capabilities, all before the sandbox is entered (bhyve's slirp helper
//! drops root too, but closes nothing and keeps every capability it has).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Why start-up failed, naming the flag, path or descriptor at fault.
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
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// An inherited descriptor (`-S`, `--exit-fd`, `--ready-fd`) is not
    /// what it must be.
    #[error("{flag} {fd}: {why}")]
    Descriptor {
        /// The flag that named it.
        flag: &'static str,
        /// The descriptor.
        fd: RawFd,
        /// What is wrong.
        why: String,
    },
    /// A socket path (`--qemu-stream`, `--qemu-dgram`, `--api-socket`)
    /// names something that is not a socket.
    #[error("{flag} {}: exists and is not a socket", path.display())]
    NotASocket {
        /// The flag that named it.
        flag: &'static str,
        /// The path.
        path: PathBuf,
    },
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> StartupError {
    let what = what.into();
    move |source| StartupError::Sys { what, source }
}

/// Points stdin and stdout at /dev/null, so nothing the helper prints can
/// reach a peer that handed it a terminal or a pipe it did not expect
/// output on. Stderr stays: warnings and fatal errors go there, one line
/// each (it is pointed at /dev/null too only if it was closed, so the
/// number cannot be taken by another descriptor).
pub fn quiet_stdio() -> Result<(), StartupError> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let null = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(sys("opening /dev/null"))?;
    for fd in [0, 1, 2] {
        if fd == 2 && is_open(2) {
            continue;
        }
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

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Takes ownership of a descriptor the helper was handed on its command
/// line (`flag FD`): it must be open and not standard input, output or
/// error (those are pointed at /dev/null or used for messages).
pub fn inherited_fd(fd: RawFd, flag: &'static str) -> Result<OwnedFd, StartupError> {
    let bad = |why: &str| StartupError::Descriptor {
        flag,
        fd,
        why: why.to_owned(),
    };
    match fd {
        0 => return Err(bad("is standard input; pass a descriptor above 2")),
        1 => return Err(bad("is standard output; pass a descriptor above 2")),
        2 => return Err(bad("is standard error; pass a descriptor above 2")),
        _ if fd < 0 || !is_open(fd) => return Err(bad("not an open descriptor")),
        _ => {}
    }
    // SAFETY: the descriptor is open (checked above) and was handed to this
    // process on its command line for this purpose; nothing else in the
    // process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes way for a socket file at `path` (named by `flag`): a stale socket
/// a killed instance left behind is removed; anything else is refused.
pub fn clear_socket_path(path: &Path, flag: &'static str) -> Result<(), StartupError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| StartupError::Io {
                what: format!("removing the stale socket {}", path.display()),
                source: e,
            })
        }
        Ok(_) => Err(StartupError::NotASocket {
            flag,
            path: path.to_owned(),
        }),
        Err(_) => Ok(()),
    }
}

/// Runs `bind` with the umask at 0177, so the socket file it makes is
/// readable and writable by the helper's user only (0600), whatever the
/// umask was: whoever can connect can drive the helper.
pub fn bind_private<T>(bind: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    // SAFETY: umask only swaps the process's file mode mask; the helper is
    // single-threaded at start-up, so no other thread creates files
    // meanwhile.
    let old = unsafe { libc::umask(0o177) };
    let r = bind();
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    r
}

/// Listens on a private (0600) unix socket at `path` that appears only
/// once it accepts connections: it is bound and listening under a sibling
/// name first, then renamed into place. A VMM or script that starts as soon
/// as the path exists (QEMU's `-chardev socket`, a test's wait loop) would
/// otherwise meet `ECONNREFUSED` between `bind` and `listen`. Falls back to
/// binding `path` itself when the sibling name would not fit in a socket
/// address.
pub fn listen_private(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::net::UnixListener;
    // Bound under a short sibling name and renamed, a path too long for a
    // socket address would be served where no client can connect.
    let max = sun_path_len();
    if path.as_os_str().len() >= max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} bytes: a unix socket's path must be shorter than {max} bytes",
                path.as_os_str().len()
            ),
        ));
    }
    let name = format!(".caploop-{}.sock", std::process::id());
    let staged = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(name),
        _ => PathBuf::from(name),
    };
    let _ = std::fs::remove_file(&staged);
    let listener = match bind_private(|| UnixListener::bind(&staged)) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return bind_private(|| UnixListener::bind(path));
        }
        Err(e) => return Err(e),
    };
    std::fs::rename(&staged, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&staged);
    })?;
    Ok(listener)
}

/// The size of a unix socket address's path (108 on Linux, 104 on
/// FreeBSD), its terminating NUL included.
pub fn sun_path_len() -> usize {
    // SAFETY: an all-zero sockaddr_un is valid; only its field's size is
    // read.
    let a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_path.len()
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

    #[test]
    fn a_listening_socket_appears_private_and_ready_with_nothing_left_over() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("caploop-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vm.sock");
        let l = listen_private(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "socket mode {mode:o}");
        std::os::unix::net::UnixStream::connect(&path).expect("connect at once");
        assert!(l.accept().is_ok());
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("vm.sock")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
