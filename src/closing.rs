//! Descriptor numbers that keep their meaning while the sandbox is in
//! force.
//!
//! Linux's seccomp rules can name a descriptor only by its number: the
//! rules written for a planned descriptor (a tap may be read and written,
//! a socket may not be `fcntl`ed) hold for whatever file gets that number
//! next. Were a planned number freed after entry, the next socket libslirp
//! accepts could take it, and with it rules made for something else
//! (libslirp then aborts on a refused `fcntl`). So once the sandbox is
//! entered on Linux a planned number is never freed:
//!
//! - [`close`] (and the reactor's `delete_close`, and every net back end's
//!   `close`) puts a placeholder in its place with one `dup3`: the file
//!   behind it is released (a tap goes away, a socket's peer sees the
//!   hang-up), and the number holds the read end of an empty pipe whose
//!   writer is gone (reads give end of file, writes and ioctls fail);
//! - a plain `close()` of a planned number (an [`OwnedFd`] dropped) is
//!   refused by the filter with `EPERM`, which Rust ignores: the
//!   descriptor stays open, its number still means the same file.
//!
//! Descriptors made after entry (libslirp's sockets, thousands of them)
//! get other numbers. Descriptors planned with
//! [`Rights::EPHEMERAL`](crate::Rights::EPHEMERAL) have no rule naming
//! their number and close as usual. On FreeBSD Capsicum's rights follow
//! the open file, not the number, so a reused number carries nothing over
//! and [`close`] is a plain close; the same holds before entry and where
//! no sandbox is entered.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// What the Linux sandbox armed: the placeholder and the planned numbers.
struct Guard {
    placeholder: OwnedFd,
    /// Sorted.
    planned: Vec<RawFd>,
}

static GUARD: Mutex<Option<Guard>> = Mutex::new(None);

/// Arms the guard once the sandbox is in force (Linux): from now on the
/// `planned` numbers are retired, not freed. A second entry adds its
/// numbers.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn arm(placeholder: OwnedFd, planned: &[RawFd]) {
    let mut g = GUARD.lock().unwrap_or_else(|e| e.into_inner());
    let guard = g.get_or_insert_with(|| Guard {
        placeholder,
        planned: Vec::new(),
    });
    guard.planned.extend_from_slice(planned);
    guard.planned.sort_unstable();
    guard.planned.dedup();
}

/// The placeholder a planned number is retired to: the read end of a pipe
/// whose write end is closed.
#[cfg(target_os = "linux")]
pub(crate) fn placeholder() -> std::io::Result<OwnedFd> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    drop(w);
    Ok(r)
}

/// Whether `fd` is a planned number the guard retires (after entry).
pub fn is_guarded(fd: RawFd) -> bool {
    let g = GUARD.lock().unwrap_or_else(|e| e.into_inner());
    g.as_ref()
        .is_some_and(|g| g.planned.binary_search(&fd).is_ok())
}

/// Closes `fd`. After entry on Linux a planned number is retired instead:
/// the file is released and the number keeps a placeholder (see the
/// module docs); everything else is a plain close.
pub fn close(fd: OwnedFd) {
    let g = GUARD.lock().unwrap_or_else(|e| e.into_inner());
    let Some(guard) = g.as_ref() else {
        drop(fd);
        return;
    };
    let raw = fd.as_raw_fd();
    if guard.planned.binary_search(&raw).is_err() {
        drop(fd);
        return;
    }
    if let Err(e) = retire(guard.placeholder.as_raw_fd(), raw) {
        // Refused (the filter's rules allow it): the file stays open
        // rather than the number freed.
        log::warn!("retiring planned descriptor {raw}: {e}");
    }
    // The number now belongs to the placeholder (or still to the file).
    std::mem::forget(fd);
}

/// Puts `placeholder` at number `fd`, which closes the file there.
#[cfg(target_os = "linux")]
fn retire(placeholder: RawFd, fd: RawFd) -> std::io::Result<()> {
    // SAFETY: dup3 onto a number the caller owns: the kernel closes the
    // file behind it and installs the placeholder there in one step.
    if unsafe { libc::dup3(placeholder, fd, libc::O_CLOEXEC) } == fd {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Only Linux arms the guard.
#[cfg(not(target_os = "linux"))]
fn retire(_placeholder: RawFd, _fd: RawFd) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// An owned descriptor that, dropped, is closed through [`close`]: a
/// planned number is retired while the sandbox is in force.
#[derive(Debug)]
pub struct ClosingFd(Option<OwnedFd>);

impl ClosingFd {
    /// Takes `fd`.
    pub fn new(fd: OwnedFd) -> ClosingFd {
        ClosingFd(Some(fd))
    }

    /// Hands the descriptor back, unclosed.
    pub fn into_inner(mut self) -> OwnedFd {
        self.0.take().expect("held until drop")
    }
}

impl From<OwnedFd> for ClosingFd {
    fn from(fd: OwnedFd) -> ClosingFd {
        ClosingFd::new(fd)
    }
}

impl AsRawFd for ClosingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }
}

impl AsFd for ClosingFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_ref().expect("held until drop").as_fd()
    }
}

impl Drop for ClosingFd {
    fn drop(&mut self) {
        if let Some(fd) = self.0.take() {
            close(fd);
        }
    }
}
