//! Linux: `/dev/net/tun`, `TUNSETIFF` with `IFF_TAP | IFF_NO_PI`, and the
//! virtio-net header's ioctls (`IFF_VNET_HDR`, `TUNSETOFFLOAD`,
//! `TUNSETVNETHDRSZ`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use super::{check_name, tun_offload_flags, Error, TapDevice, IFNAMSIZ};

use nix::fcntl::{open as nix_open, OFlag};
use nix::sys::stat::Mode;
use std::os::fd::AsRawFd;

pub(super) fn open(name: &str) -> Result<TapDevice, Error> {
    open_flags(name, 0)
}

/// Opens with `IFF_TAP | IFF_NO_PI | extra`.
pub(super) fn open_flags(name: &str, extra: libc::c_int) -> Result<TapDevice, Error> {
    let fd = nix_open(
        "/dev/net/tun",
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("opening /dev/net/tun for tap {name:?}"), e))?;

    // SAFETY: `ifreq` is plain old data (a name array and a union of
    // integers, addresses and a pointer), for which all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | extra) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one `ifreq`, which `req` is and
    // which outlives the call; `fd` is open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        let hint = match err.raw_os_error() {
            Some(libc::EBUSY) => " (another process has it open)",
            Some(libc::EINVAL) => " (an interface of that name exists and is not a tap)",
            Some(libc::EPERM) => " (needs CAP_NET_ADMIN, or the tap's owner)",
            _ => "",
        };
        return Err(Error::io(
            format!("attaching tap {name:?} (TUNSETIFF){hint}"),
            err,
        ));
    }
    let len = req
        .ifr_name
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(IFNAMSIZ);
    let bytes: Vec<u8> = req.ifr_name[..len].iter().map(|&c| c as u8).collect();
    let name = String::from_utf8(bytes).unwrap_or_else(|_| name.to_owned());
    Ok(TapDevice {
        fd: fd.into(),
        name,
    })
}

/// A back end's tap: with the virtio-net header, so offloads can be
/// offered.
pub(super) fn open_for_backend(name: &str) -> Result<TapDevice, Error> {
    open_flags(name, libc::IFF_VNET_HDR)
}

/// Whether `dev` carries a virtio-net header; if so it is set to a
/// `hdr`-byte header and no offloads.
pub(super) fn prepare_vnet(dev: &TapDevice, hdr: usize) -> Result<bool, Error> {
    let vnet = has_vnet_hdr(dev.as_fd())?;
    if vnet {
        dev.set_offload(0)?;
        dev.set_vnet_hdr_len(hdr)?;
    }
    Ok(vnet)
}

/// Asks for `features`' offloads and a `len`-byte header; on error puts
/// back the offloads of `before`.
pub(super) fn apply(dev: &TapDevice, features: u64, before: u64, len: usize) -> Result<(), Error> {
    dev.set_offload(tun_offload_flags(features))?;
    if let Err(e) = dev.set_vnet_hdr_len(len) {
        let _ = dev.set_offload(tun_offload_flags(before));
        return Err(e);
    }
    Ok(())
}

/// Linux: whether the tap behind `fd` carries a virtio-net header on every
/// frame (`IFF_VNET_HDR`, asked with `TUNGETIFF`).
pub fn has_vnet_hdr(fd: BorrowedFd<'_>) -> Result<bool, Error> {
    use std::os::fd::AsRawFd;
    // SAFETY: `ifreq` is plain old data, for which all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: TUNGETIFF writes one `ifreq`, which `req` is and which
    // outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut req) };
    if rc < 0 {
        return Err(Error::io(
            "asking a tap for its flags (TUNGETIFF)",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: TUNGETIFF filled in the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok(flags & libc::IFF_VNET_HDR as libc::c_short != 0)
}

impl TapDevice {
    /// Linux: opens the tap `name` (made if it does not exist) inside the
    /// network namespace whose file is `netns` (`/var/run/netns/NAME`,
    /// `/proc/PID/ns/net`), from a thread that joins that namespace and
    /// ends once the tap is open: the process stays in its own. Needs
    /// `CAP_SYS_ADMIN` over the namespace and `CAP_NET_ADMIN` in it.
    pub fn open_in_netns(netns: &std::path::Path, name: &str) -> Result<TapDevice, Error> {
        check_name(name)?;
        let ns = std::fs::File::open(netns)
            .map_err(|e| Error::io(format!("opening the namespace {}", netns.display()), e))?;
        let name = name.to_owned();
        let what = netns.display().to_string();
        std::thread::spawn(move || -> Result<TapDevice, Error> {
            // SAFETY: setns takes a descriptor, open for the call, and a
            // flag; it moves only this thread, which ends once the tap is
            // open.
            if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) } != 0
            {
                return Err(Error::io(
                    format!("joining the network namespace {what}"),
                    std::io::Error::last_os_error(),
                ));
            }
            open(&name)
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::io(
                "opening a tap in a namespace",
                std::io::Error::other("the thread panicked"),
            ))
        })
    }

    /// Linux: opens the tap `name` like [`open`](Self::open), but with
    /// `IFF_VNET_HDR`: every read and write on it carries a 10-byte
    /// virtio-net header ([`VnetHdr`](super::offload::VnetHdr)).
    /// Offloads are then asked for with [`set_offload`](Self::set_offload).
    pub fn open_vnet(name: &str) -> Result<TapDevice, Error> {
        check_name(name)?;
        open_flags(name, libc::IFF_VNET_HDR)
    }

    /// Linux: which offloads the kernel may hand this tap's reader
    /// (`TUNSETOFFLOAD`, `TUN_F_*` flags; 0 for none). Only for a tap opened
    /// with [`open_vnet`](Self::open_vnet): with `TUN_F_CSUM` frames may
    /// come with a partial checksum, with `TUN_F_TSO4` as TCP/IPv4
    /// super-segments ([`finish`](super::offload::finish)).
    pub fn set_offload(&self, flags: u32) -> Result<(), Error> {
        use std::os::fd::AsRawFd;
        // SAFETY: TUNSETOFFLOAD takes its flags by value; `fd` is open.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                flags as libc::c_ulong,
            )
        };
        if rc < 0 {
            return Err(Error::io(
                format!(
                    "setting offloads {flags:#x} on tap {:?} (TUNSETOFFLOAD)",
                    self.name
                ),
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Linux: the length of the virtio-net header the tap reads and writes
    /// (`TUNSETVNETHDRSZ`; 10 or 12). Only for a tap opened with
    /// [`open_vnet`](Self::open_vnet).
    pub fn set_vnet_hdr_len(&self, len: usize) -> Result<(), Error> {
        use std::os::fd::AsRawFd;
        let size = len as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one `int`, which `size` is and which
        // outlives the call; `fd` is open.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) };
        if rc < 0 {
            return Err(Error::io(
                format!(
                    "setting a {len}-byte virtio-net header on tap {:?} (TUNSETVNETHDRSZ)",
                    self.name
                ),
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}
