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
//! Offloads (Linux): [`TapBackend::open`] opens the tap with
//! `IFF_VNET_HDR`, so [`get_cap`](NetBackend::get_cap) offers the checksum
//! and TCP segmentation offloads ([`TAP_OFFLOADS`]) and
//! [`set_cap`](NetBackend::set_cap) passes the front end's 10- or 12-byte
//! header straight through (`TUNSETVNETHDRSZ`) and asks the kernel for the
//! offloads the guest accepts (`TUNSETOFFLOAD`): the guest then sends and
//! receives up to 64 KiB TCP super-frames. Until then, or with `(0, 0)`,
//! the back end adds and strips a zeroed header itself and the kernel
//! hands over only whole, checksummed frames. A tap without the header
//! (FreeBSD's, or one [registered](TapBackend::register) without it)
//! offers nothing and accepts only `(0, 0)`, as bhyve's tap does;
//! [`Netbe`](super::Netbe) adapts a front end's header.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::backend::{live_handle, refuse_offloads, NetBackend, RxCallback};
use super::offload;
use super::pending::Pending;
use super::vnet::{self, VnetHdrLen};
use super::{Error, MAX_FRAME_LEN};
use crate::reactor::{Handle, Interest, Reactor, Registration};
use crate::rights::Rights;

// The platform's half, chosen once.
#[cfg(target_os = "freebsd")]
mod freebsd;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
mod unsupported;
#[cfg(target_os = "freebsd")]
use freebsd as sys;
#[cfg(target_os = "linux")]
use linux as sys;
#[cfg(target_os = "linux")]
pub use linux::has_vnet_hdr;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
use unsupported as sys;

/// What the loop does with a tap descriptor once it is set up.
pub const TAP_RIGHTS: Rights = Rights::READ
    .union(Rights::WRITE)
    .union(Rights::EVENT)
    .union(Rights::FSTAT);

/// What opening a tap needs, before the sandbox is entered.
pub const TAP_SETUP_RIGHTS: Rights = TAP_RIGHTS.union(Rights::IOCTL_TAP);

/// The virtio-net features a tap with a virtio-net header offers (Linux):
/// `CSUM`, `GUEST_CSUM`, `GUEST_TSO4`, `GUEST_TSO6`, `GUEST_ECN`,
/// `HOST_TSO4`, `HOST_TSO6`, `HOST_ECN` (no UFO: Linux taps dropped it).
pub const TAP_OFFLOADS: u64 = features::CSUM
    | features::GUEST_CSUM
    | features::GUEST_TSO4
    | features::GUEST_TSO6
    | features::GUEST_ECN
    | features::HOST_TSO4
    | features::HOST_TSO6
    | features::HOST_ECN;

/// virtio-net feature bits (virtio 1.2, 5.1.3) a back end deals in.
pub mod features {
    /// The guest may send frames with a partial checksum.
    pub const CSUM: u64 = 1 << 0;
    /// The guest accepts frames with a partial checksum.
    pub const GUEST_CSUM: u64 = 1 << 1;
    /// The guest accepts TCP/IPv4 super-frames.
    pub const GUEST_TSO4: u64 = 1 << 7;
    /// The guest accepts TCP/IPv6 super-frames.
    pub const GUEST_TSO6: u64 = 1 << 8;
    /// The guest accepts super-frames with ECN.
    pub const GUEST_ECN: u64 = 1 << 9;
    /// The guest may send TCP/IPv4 super-frames.
    pub const HOST_TSO4: u64 = 1 << 11;
    /// The guest may send TCP/IPv6 super-frames.
    pub const HOST_TSO6: u64 = 1 << 12;
    /// The guest may send super-frames with ECN.
    pub const HOST_ECN: u64 = 1 << 13;
}

/// The `TUNSETOFFLOAD` flags for what a guest accepts (`GUEST_*`), as QEMU
/// maps them: what the kernel may hand the tap's reader.
pub fn tun_offload_flags(features: u64) -> u32 {
    let mut flags = 0;
    if features & features::GUEST_CSUM != 0 {
        flags |= TUN_F_CSUM;
        if features & features::GUEST_TSO4 != 0 {
            flags |= TUN_F_TSO4;
        }
        if features & features::GUEST_TSO6 != 0 {
            flags |= TUN_F_TSO6;
        }
        if features & features::GUEST_ECN != 0 {
            flags |= TUN_F_TSO_ECN;
        }
    }
    flags
}

// Linux's `TUN_F_*` values (if_tun.h), here for every OS so the mapping is
// tested everywhere.
const TUN_F_CSUM: u32 = 0x01;
const TUN_F_TSO4: u32 = 0x02;
const TUN_F_TSO6: u32 = 0x04;
const TUN_F_TSO_ECN: u32 = 0x08;

/// An open, non-blocking tap descriptor, not yet registered anywhere.
#[derive(Debug)]
pub struct TapDevice {
    /// Closed through `closing` (a sandbox in force retires the number).
    fd: crate::closing::ClosingFd,
    name: String,
}

impl TapDevice {
    /// Opens the tap `name` (`tap0`; on FreeBSD also `vmnet0`) in the calling
    /// thread's network namespace, non-blocking and close-on-exec.
    pub fn open(name: &str) -> Result<TapDevice, Error> {
        check_name(name)?;
        sys::open(name)
    }

    /// The interface name (on Linux, as the kernel reports it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The descriptor, handed over.
    pub fn into_fd(self) -> OwnedFd {
        self.fd.into_inner()
    }
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
    /// The device carries a virtio-net header on every frame.
    vnet: bool,
    /// The header the caller reads and writes (what `set_cap` was given);
    /// on a `vnet` device with none, a zeroed one is added and stripped
    /// here.
    hdr: VnetHdrLen,
    /// The offloads the kernel was asked for, as virtio-net features.
    features: u64,
    _loop: std::marker::PhantomData<fn(&mut D)>,
}

/// The header length a `vnet` tap is set to when the caller takes none.
const KERNEL_HDR: usize = offload::VNET_HDR_SIZE;

impl<D> std::fmt::Debug for TapBackend<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapBackend")
            .field("dev", &self.dev)
            .field("handle", &self.reg.handle())
            .field("pending", &self.pending.len())
            .field("vnet", &self.vnet)
            .field("vnet_hdr_len", &self.hdr.len())
            .field("features", &self.features)
            .finish()
    }
}

impl<D: 'static> TapBackend<D> {
    /// Opens the tap `name` and registers it, as [`register`](Self::register).
    /// On Linux the tap is opened with a virtio-net header, so the back end
    /// can offer offloads ([`TAP_OFFLOADS`]).
    pub fn open(name: &str, reactor: &mut Reactor<D>, cb: RxCallback<D>) -> Result<Self, Error> {
        check_name(name)?;
        TapBackend::register(sys::open_for_backend(name)?, reactor, cb)
    }

    /// Registers an open tap on `reactor` for reading, disabled; `cb` runs
    /// each round a frame is pending while receive is enabled. A tap with a
    /// virtio-net header (Linux `IFF_VNET_HDR`) is set to a 10-byte header
    /// and no offloads until [`set_cap`](NetBackend::set_cap) says
    /// otherwise, and keeps the two tap ioctls that do that
    /// ([`Rights::IOCTL_TAP`]: the guest negotiates after the sandbox is
    /// entered); any other is registered with [`TAP_RIGHTS`].
    pub fn register(
        dev: TapDevice,
        reactor: &mut Reactor<D>,
        mut cb: RxCallback<D>,
    ) -> Result<Self, Error> {
        let vnet = sys::prepare_vnet(&dev, KERNEL_HDR)?;
        let rights = if vnet {
            TAP_RIGHTS.union(Rights::IOCTL_TAP)
        } else {
            TAP_RIGHTS
        };
        let dev = std::rc::Rc::new(dev);
        let handle = reactor.add_disabled(
            std::rc::Rc::clone(&dev),
            Interest::READ,
            rights,
            move |r, d, _ev| cb(r, d),
        )?;
        Ok(TapBackend {
            dev,
            reg: Registration::new(reactor, handle),
            pending: Pending::default(),
            vnet,
            hdr: VnetHdrLen::None,
            features: 0,
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

    /// Whether this back end adds and strips the kernel's header itself.
    fn strips(&self) -> bool {
        self.vnet && self.hdr.is_empty()
    }

    /// Asks the kernel for `features`' offloads and a `len`-byte header;
    /// on error the tap is as it was.
    fn apply(&self, features: u64, len: usize) -> Result<(), Error> {
        sys::apply(&self.dev, features, self.features, len)
    }
}

impl<D> NetBackend<D> for TapBackend<D> {
    fn name(&self) -> &str {
        &self.dev.name
    }

    fn send(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.strips() {
            let zero = [0u8; KERNEL_HDR];
            let n = nix::sys::uio::writev(&self.dev.fd, &vnet::with_front(&zero, iov))?;
            return Ok(n.saturating_sub(KERNEL_HDR));
        }
        Ok(nix::sys::uio::writev(&self.dev.fd, iov)?)
    }

    fn recv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<Option<usize>> {
        if let Some(held) = self.pending.take(iov) {
            return held.map(Some);
        }
        // The tap cuts a frame longer than the buffers without a word; a
        // spill buffer behind them shows when that would happen.
        let room = vnet::iov_len_mut(iov);
        let spill = (room < MAX_FRAME_LEN).then(|| self.pending.buf());
        let mut hdr = [0u8; KERNEL_HDR];
        let front = if self.vnet && self.hdr.is_empty() {
            KERNEL_HDR
        } else {
            0
        };
        let res = match (front, spill) {
            (0, Some(spill)) => {
                nix::sys::uio::readv(&self.dev.fd, &mut vnet::with_spill(iov, spill))
            }
            (0, None) => nix::sys::uio::readv(&self.dev.fd, iov),
            (_, spill) => nix::sys::uio::readv(
                &self.dev.fd,
                &mut vnet::with_front_mut(&mut hdr, iov, spill),
            ),
        };
        match res {
            Ok(0) => Ok(None),
            // Only a header: nothing for the caller.
            Ok(len) if len <= front => Ok(None),
            Ok(len) if len - front > room => Err(self.pending.keep_split(iov, len - front, false)),
            Ok(len) => {
                if self.vnet && self.hdr == VnetHdrLen::Mrg {
                    // The kernel leaves num_buffers alone; one frame, one
                    // buffer, as Netbe says when it adapts.
                    vnet::put_at(iov, vnet::NUM_BUFFERS_OFFSET, &1u16.to_le_bytes());
                }
                Ok(Some(len - front))
            }
            Err(nix::errno::Errno::EAGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn peek_recvlen(&mut self) -> io::Result<usize> {
        if self.pending.len() > 0 {
            return Ok(self.pending.len());
        }
        let front = if self.strips() { KERNEL_HDR } else { 0 };
        let buf = self.pending.buf();
        match nix::unistd::read(&self.dev.fd, buf) {
            Ok(len) if len <= front => Ok(0),
            Ok(len) => {
                buf.copy_within(front..len, 0);
                if self.vnet && self.hdr == VnetHdrLen::Mrg && len >= vnet::VNET_HDR_LEN {
                    buf[vnet::NUM_BUFFERS_OFFSET..vnet::VNET_HDR_LEN]
                        .copy_from_slice(&1u16.to_le_bytes());
                }
                self.pending.hold(len - front, false)
            }
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
        if self.vnet {
            TAP_OFFLOADS
        } else {
            0
        }
    }

    fn set_cap(&mut self, features: u64, vnet_hdr_len: usize) -> Result<(), Error> {
        if !self.vnet {
            return refuse_offloads(&self.dev.name, features, vnet_hdr_len);
        }
        let hdr = VnetHdrLen::new(vnet_hdr_len)?;
        // Offloads need a header to travel in.
        if features & !TAP_OFFLOADS != 0 || (features != 0 && hdr.is_empty()) {
            return Err(Error::CapRefused {
                backend: self.dev.name.clone(),
                features,
                vnet_hdr_len,
            });
        }
        let len = if hdr.is_empty() {
            KERNEL_HDR
        } else {
            hdr.len()
        };
        self.apply(features, len)?;
        self.hdr = hdr;
        self.features = features;
        Ok(())
    }

    fn close(mut self: Box<Self>, reactor: &mut Reactor<D>) -> Result<(), Error> {
        self.reg.delete(reactor)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::features::*;
    use super::*;

    #[test]
    fn what_the_guest_accepts_is_what_the_kernel_may_hand_over() {
        assert_eq!(tun_offload_flags(0), 0);
        // What the guest may send needs nothing from the kernel.
        assert_eq!(tun_offload_flags(CSUM | HOST_TSO4 | HOST_TSO6), 0);
        assert_eq!(tun_offload_flags(GUEST_CSUM), TUN_F_CSUM);
        assert_eq!(
            tun_offload_flags(GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6 | GUEST_ECN),
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
        );
        // Segmentation without checksums is not a thing the kernel does.
        assert_eq!(tun_offload_flags(GUEST_TSO4 | GUEST_TSO6), 0);
        #[cfg(target_os = "linux")]
        assert_eq!(
            (TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN),
            (
                libc::TUN_F_CSUM,
                libc::TUN_F_TSO4,
                libc::TUN_F_TSO6,
                libc::TUN_F_TSO_ECN
            )
        );
        assert_eq!(TAP_OFFLOADS & !crate::net::netbe::BACKEND_FEATURES, 0);
    }
}
