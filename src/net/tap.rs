//! The tap back end: Ethernet frames through a kernel tap device.
//!
//! - Linux: `/dev/net/tun`, `TUNSETIFF` with `IFF_TAP | IFF_NO_PI`. A tap of
//!   that name in the calling thread's network namespace is attached to; if
//!   there is none, one is made, and it goes away when the descriptor is
//!   closed.
//! - FreeBSD: `/dev/tapN` or `/dev/vmnetN`, set non-blocking with `FIONBIO`.
//!
//! Opening ([`TapDevice::open`]) needs the tap ioctls
//! ([`Rights::IOCTL_TAP`]) and happens before the sandbox is entered; the
//! descriptor is then registered with [`TAP_RIGHTS`] only. A [`TapDevice`]
//! is `Send`, so it can be opened on another thread (one that has joined a
//! network namespace, say) and registered on the loop thread with
//! [`TapBackend::register`].
//!
//! The tap takes no virtio-net header: [`get_cap`](NetBackend::get_cap) is
//! 0 and [`set_cap`](NetBackend::set_cap) accepts only `(0, 0)`, as bhyve's
//! tap does; [`Netbe`](super::Netbe) adapts a front end's header.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::backend::{live_handle, refuse_offloads, NetBackend, RxCallback};
use super::pending::Pending;
use super::vnet;
use super::{Error, MAX_FRAME_LEN};
use crate::reactor::{Handle, Interest, Reactor, Registration};
use crate::rights::Rights;

/// What the loop does with a tap descriptor once it is set up.
pub const TAP_RIGHTS: Rights = Rights::READ
    .union(Rights::WRITE)
    .union(Rights::EVENT)
    .union(Rights::FSTAT);

/// What opening a tap needs, before the sandbox is entered.
pub const TAP_SETUP_RIGHTS: Rights = TAP_RIGHTS.union(Rights::IOCTL_TAP);

/// An open, non-blocking tap descriptor, not yet registered anywhere.
#[derive(Debug)]
pub struct TapDevice {
    fd: OwnedFd,
    name: String,
}

impl TapDevice {
    /// Opens the tap `name` (`tap0`; on FreeBSD also `vmnet0`) in the calling
    /// thread's network namespace, non-blocking and close-on-exec.
    pub fn open(name: &str) -> Result<TapDevice, Error> {
        check_name(name)?;
        sys::open(name)
    }

    /// Linux: opens the tap `name` like [`open`](Self::open), but with
    /// `IFF_VNET_HDR`: every read and write on it carries a 10-byte
    /// virtio-net header ([`offload::VnetHdr`](super::offload::VnetHdr)).
    /// Offloads are then asked for with [`set_offload`](Self::set_offload).
    #[cfg(target_os = "linux")]
    pub fn open_vnet(name: &str) -> Result<TapDevice, Error> {
        check_name(name)?;
        sys::open_flags(name, libc::IFF_VNET_HDR)
    }

    /// Linux: which offloads the kernel may hand this tap's reader
    /// (`TUNSETOFFLOAD`, `TUN_F_*` flags; 0 for none). Only for a tap opened
    /// with [`open_vnet`](Self::open_vnet): with `TUN_F_CSUM` frames may
    /// come with a partial checksum, with `TUN_F_TSO4` as TCP/IPv4
    /// super-segments ([`offload::finish`](super::offload::finish)).
    #[cfg(target_os = "linux")]
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

    /// The interface name (on Linux, as the kernel reports it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The descriptor, handed over.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// Linux: whether the tap behind `fd` carries a virtio-net header on every
/// frame (`IFF_VNET_HDR`, asked with `TUNGETIFF`).
#[cfg(target_os = "linux")]
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

impl AsFd for TapDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Checks what Linux's `dev_valid_name` checks (FreeBSD device names are
/// no looser): 1 to 15 bytes, not `.` or `..`, no `/`, `:`, whitespace or
/// NUL.
fn check_name(name: &str) -> Result<(), Error> {
    let bad = |reason| Error::BadName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() >= IFNAMSIZ {
        return Err(bad("it is longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(bad("it is . or .."));
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return Err(bad("it contains '/', ':', whitespace or NUL"));
    }
    Ok(())
}

const IFNAMSIZ: usize = 16;

#[cfg(target_os = "linux")]
mod sys {
    use super::{Error, TapDevice, IFNAMSIZ};
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
        Ok(TapDevice { fd, name })
    }
}

#[cfg(target_os = "freebsd")]
mod sys {
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
            fd,
            name: name.to_owned(),
        })
    }
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
mod sys {
    use super::{Error, TapDevice};

    pub(super) fn open(name: &str) -> Result<TapDevice, Error> {
        Err(Error::Unsupported {
            name: name.to_owned(),
            reason: "tap devices are supported on Linux and FreeBSD only",
        })
    }
}

/// The tap back end: a [`TapDevice`] registered on a reactor.
///
/// The back end shares the descriptor with its reactor registration:
/// [`close`](NetBackend::close) deletes the registration at once, a drop
/// queues its deletion, and the descriptor closes with the registration.
pub struct TapBackend<D> {
    /// Shared with the reactor's registration, which keeps it open.
    dev: std::rc::Rc<TapDevice>,
    reg: Registration,
    /// A frame read by `peek_recvlen`, handed out by the next `recv`; also
    /// where `recv` spills a frame too long for the caller's buffers.
    pending: Pending,
    _loop: std::marker::PhantomData<fn(&mut D)>,
}

impl<D> std::fmt::Debug for TapBackend<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapBackend")
            .field("dev", &self.dev)
            .field("handle", &self.reg.handle())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl<D: 'static> TapBackend<D> {
    /// Opens the tap `name` and registers it, as [`register`](Self::register).
    pub fn open(name: &str, reactor: &mut Reactor<D>, cb: RxCallback<D>) -> Result<Self, Error> {
        TapBackend::register(TapDevice::open(name)?, reactor, cb)
    }

    /// Registers an open tap on `reactor` for reading, disabled, with
    /// [`TAP_RIGHTS`]; `cb` runs each round a frame is pending while receive
    /// is enabled.
    pub fn register(
        dev: TapDevice,
        reactor: &mut Reactor<D>,
        mut cb: RxCallback<D>,
    ) -> Result<Self, Error> {
        let dev = std::rc::Rc::new(dev);
        let handle = reactor.add_disabled(
            std::rc::Rc::clone(&dev),
            Interest::READ,
            TAP_RIGHTS,
            move |r, d, _ev| cb(r, d),
        )?;
        Ok(TapBackend {
            dev,
            reg: Registration::new(reactor, handle),
            pending: Pending::default(),
            _loop: std::marker::PhantomData,
        })
    }
}

impl<D> TapBackend<D> {
    /// The device.
    pub fn device(&self) -> &TapDevice {
        &self.dev
    }

    /// The reactor registration, until [`close`](NetBackend::close).
    pub fn handle(&self) -> Option<Handle> {
        self.reg.handle()
    }
}

impl<D> NetBackend<D> for TapBackend<D> {
    fn name(&self) -> &str {
        &self.dev.name
    }

    fn send(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(nix::sys::uio::writev(&self.dev.fd, iov)?)
    }

    fn recv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<Option<usize>> {
        if let Some(held) = self.pending.take(iov) {
            return held.map(Some);
        }
        // The tap cuts a frame longer than the buffers without a word; a
        // spill buffer behind them shows when that would happen.
        let room = vnet::iov_len_mut(iov);
        let res = if room < MAX_FRAME_LEN {
            nix::sys::uio::readv(&self.dev.fd, &mut vnet::with_spill(iov, self.pending.buf()))
        } else {
            nix::sys::uio::readv(&self.dev.fd, iov)
        };
        match res {
            Ok(0) => Ok(None),
            Ok(len) if len > room => Err(self.pending.keep_split(iov, len, false)),
            Ok(len) => Ok(Some(len)),
            Err(nix::errno::Errno::EAGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn peek_recvlen(&mut self) -> io::Result<usize> {
        if self.pending.len() > 0 {
            return Ok(self.pending.len());
        }
        match nix::unistd::read(&self.dev.fd, self.pending.buf()) {
            Ok(len) => self.pending.hold(len, false),
            Err(nix::errno::Errno::EAGAIN) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    fn recv_enable(&mut self, reactor: &mut Reactor<D>) -> Result<(), Error> {
        let h = live_handle(&self.reg, || format!("tap {:?}", self.dev.name))?;
        Ok(reactor.enable(h)?)
    }

    fn recv_disable(&mut self, reactor: &mut Reactor<D>) -> Result<(), Error> {
        let h = live_handle(&self.reg, || format!("tap {:?}", self.dev.name))?;
        Ok(reactor.disable(h)?)
    }

    fn get_cap(&self) -> u64 {
        0
    }

    fn set_cap(&mut self, features: u64, vnet_hdr_len: usize) -> Result<(), Error> {
        refuse_offloads(&self.dev.name, features, vnet_hdr_len)
    }

    fn close(mut self: Box<Self>, reactor: &mut Reactor<D>) -> Result<(), Error> {
        self.reg.delete(reactor)?;
        Ok(())
    }
}
