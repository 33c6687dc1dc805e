//! FreeBSD: `/dev/tapN` or `/dev/vmnetN`, set non-blocking with `FIONBIO`;
//! no virtio-net header, so no offloads.

use super::{Error, TapDevice};

use nix::fcntl::{open as nix_open, OFlag};
use nix::sys::stat::Mode;
use std::os::fd::AsRawFd;

pub(super) fn open(name: &str) -> Result<TapDevice, Error> {
    let path = format!("/dev/{name}");
    let fd = nix_open(
        path.as_str(),
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("opening {path}"), e))?;
    let mut on: libc::c_int = 1;
    // SAFETY: FIONBIO reads one `int`, which `on` is and which outlives
    // the call; `fd` is open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONBIO, &mut on) };
    if rc < 0 {
        return Err(Error::io(
            format!("making {path} non-blocking (FIONBIO)"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(TapDevice {
        fd: fd.into(),
        name: name.to_owned(),
    })
}

/// A back end's tap: as any other.
pub(super) fn open_for_backend(name: &str) -> Result<TapDevice, Error> {
    open(name)
}

/// FreeBSD's taps carry no virtio-net header.
pub(super) fn prepare_vnet(_dev: &TapDevice, _hdr: usize) -> Result<bool, Error> {
    Ok(false)
}

/// Nothing to ask of the kernel.
pub(super) fn apply(_dev: &TapDevice, _f: u64, _before: u64, _len: usize) -> Result<(), Error> {
    Ok(())
}
