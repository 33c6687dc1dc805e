//! Debug builds only: `CAPLOOP_SANDBOX_TEST_FAULT=segv|bus|abort` makes
//! the helper fault right after it entered the sandbox, so the tests can
//! see a crash end it at once with that signal on every front end (a
//! crashing libslirp once spun at 100% CPU instead); `hang` makes it block
//! in a `read` that never returns (restarted after every signal handler),
//! so the tests can see that a second SIGTERM ends a helper stuck where
//! the first cannot reach the loop. Not compiled into release builds.

/// A fault to make after entry, if the environment asks for one.
pub struct Fault {
    kind: Option<String>,
    page: *mut u8,
    /// For `hang`: a pipe nobody writes to (both ends).
    pipe: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
}

/// Reads the environment and prepares what the fault needs (for `bus`, a
/// page of an empty memfd: nothing can be opened after entry).
pub fn prepare() -> Fault {
    let kind = std::env::var("CAPLOOP_SANDBOX_TEST_FAULT").ok();
    let mut page = std::ptr::null_mut();
    if kind.as_deref() == Some("bus") {
        // SAFETY: memfd_create with a static name, then mmap of one page of
        // it (the file is empty, so touching the page is a SIGBUS); the
        // mapping is kept for the process's life.
        unsafe {
            let fd = libc::memfd_create(c"caploop-fault".as_ptr(), libc::MFD_CLOEXEC);
            if fd >= 0 {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                );
                libc::close(fd);
                if p != libc::MAP_FAILED {
                    page = p.cast();
                }
            }
        }
    }
    let pipe = if kind.as_deref() == Some("hang") {
        nix::unistd::pipe().ok()
    } else {
        None
    };
    Fault { kind, page, pipe }
}

impl Fault {
    /// Makes the fault, if one was asked for.
    pub fn strike(self) {
        match self.kind.as_deref() {
            None => {}
            Some("segv") => {
                log::warn!("test fault: SIGSEGV");
                // SAFETY: none; the point is the fault (volatile, so it is
                // not optimised away).
                unsafe { std::ptr::write_volatile(16 as *mut u8, 1) }
            }
            Some("bus") if !self.page.is_null() => {
                log::warn!("test fault: SIGBUS");
                // SAFETY: as above: a page with no file behind it.
                unsafe { std::ptr::write_volatile(self.page, 1) }
            }
            Some("hang") if self.pipe.is_some() => {
                log::warn!("test fault: hang");
                let (r, _w) = self.pipe.as_ref().expect("checked");
                let mut b = [0u8; 1];
                loop {
                    // SAFETY: a blocking read into a stack byte; nothing is
                    // ever written, so it never returns.
                    unsafe {
                        libc::read(std::os::fd::AsRawFd::as_raw_fd(r), b.as_mut_ptr().cast(), 1)
                    };
                }
            }
            Some("abort") => {
                log::warn!("test fault: abort()");
                // SAFETY: abort has no preconditions.
                unsafe { libc::abort() }
            }
            Some(other) => log::warn!("CAPLOOP_SANDBOX_TEST_FAULT={other}: not a fault"),
        }
    }
}
