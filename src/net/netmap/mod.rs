//! The netmap back ends: `netmap:IFNAME` (all hardware rings of a NIC in
//! netmap mode) and `valeX:Y` (port `Y` of the VALE software switch
//! `valeX`), bhyve's `netmap` and `vale` back ends, through netmap's "new"
//! control API.
//!
//! Opening ([`NetmapBackend::open`]) opens `/dev/netmap`, binds the port
//! with `NIOCCTRL` / `NETMAP_REQ_REGISTER` (`NR_REG_ALL_NIC`,
//! `NR_NO_TX_POLL`), maps the shared region of `nr_memsize` bytes and finds
//! the `netmap_if` at `nr_offset`, its first TX ring and its NIC RX rings.
//! Frames go out on TX ring 0 followed by `NIOCTXSYNC` (as bhyve does); they
//! come in from the RX rings, round robin, with `NIOCRXSYNC` when none has a
//! complete frame. Frames longer than a slot span several slots flagged
//! `NS_MOREFRAG`, at most `NETMAP_MAX_FRAGS` (64) on send, which is what
//! VALE's forwarding tables are sized for. The descriptor is registered on
//! the reactor for reading (netmap's poll reports RX frames), disabled
//! until [`recv_enable`](NetBackend::recv_enable).
//!
//! Differences from the tap back end and from bhyve:
//!
//! - A TX ring without room for the whole frame, even after a txsync, drops
//!   it and reports [`WouldBlock`](std::io::ErrorKind::WouldBlock) (bhyve
//!   drops silently); no slot of a dropped frame reaches the kernel.
//! - A received frame longer than the caller's buffers is not lost: the
//!   error ([`RingError::DoesNotFit`], kind `InvalidInput`) carries its
//!   length, it stays in the ring, and
//!   [`peek_recvlen`](NetBackend::peek_recvlen) tells the length first. Only
//!   a frame longer than [`MAX_FRAME_LEN`], which no caller can take, is
//!   dropped and reported as [`Error::FrameTooBig`], so
//!   [`Netbe::recv_discard`](super::Netbe::recv_discard) always makes progress.
//! - Virtio-net headers: [`get_cap`](NetBackend::get_cap) offers bhyve's
//!   netmap features when the port takes a 12-byte header, found out at
//!   open as bhyve's `netmap_has_vnet_hdr_len` does (set the length with
//!   `NETMAP_REQ_PORT_HDR_SET`, then set it back to 0). In practice only VALE
//!   ports do; a NIC port offers none and [`Netbe`](super::Netbe) adapts.
//!   [`set_cap`](NetBackend::set_cap) sets the port's header length (0, 10
//!   or 12).
//!
//! The ring logic lives in [`ring`], apart from the ioctls, and works on
//! any memory shaped like netmap's; every offset, index and length read
//! from the shared memory is checked against the region and the ring, so a
//! corrupt ring is an error ([`RingError::Corrupt`], kind `InvalidData`),
//! never an access out of bounds or a panic. The layouts and request
//! numbers are in [`abi`].
//!
//! **What is and is not verified.** The ring logic is tested against an
//! in-process model of the kernel side on real shared memory (a memfd
//! mapped twice; `tests/net_netmap.rs`), not against netmap. The structure
//! layouts, constants and ioctl request numbers are checked against the
//! netmap headers (unit tests pin every size and offset), but this code has
//! not met a real netmap kernel: no netmap module is available where it was
//! written.
//!
//! **Sandbox.** The descriptor is registered with [`NETMAP_RIGHTS`]:
//! polling and the three ioctls the back end makes after opening
//! (`NIOCTXSYNC`, `NIOCRXSYNC`, `NIOCCTRL`), as `cap_ioctls_limit` on
//! FreeBSD and a per-descriptor seccomp rule on Linux. The shared memory is
//! mapped before entry. Not tried inside a sandbox against a real netmap
//! kernel either.

pub mod abi;
mod region;
pub mod ring;
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
mod sys;

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd};

use super::backend::{live_handle, NetBackend, RxCallback};
use super::vnet::{VnetHdrLen, VNET_HDR_LEN};
use super::{Error, MAX_FRAME_LEN};
use crate::reactor::{Handle, Interest, Reactor, Registration, Source};
use crate::rights::Rights;

pub use ring::{Kernel, Port, Region, RingError};

/// The netmap control device.
pub const DEVICE: &str = "/dev/netmap";

/// What the loop does with the netmap descriptor: poll it, sync its rings
/// and set its virtio-net header length (`NIOCTXSYNC`, `NIOCRXSYNC`,
/// `NIOCCTRL`; nothing else, on FreeBSD and in the Linux seccomp filter).
pub const NETMAP_RIGHTS: Rights = Rights::EVENT.union(Rights::IOCTL_NETMAP);

/// The virtio-net features offered when the port takes a header: bhyve's
/// `NETMAP_FEATURES` (`VIRTIO_NET_F_CSUM`, `GUEST_CSUM`, `GUEST_TSO4`,
/// `GUEST_TSO6`, `GUEST_UFO`, `HOST_TSO4`, `HOST_TSO6`, `HOST_UFO`,
/// `MRG_RXBUF`: bits 0, 1, 7, 8, 10, 11, 12, 14 and 15 of the virtio spec).
pub const NETMAP_FEATURES: u64 =
    1 << 0 | 1 << 1 | 1 << 7 | 1 << 8 | 1 << 10 | 1 << 11 | 1 << 12 | 1 << 14 | 1 << 15;

/// Longest interface or VALE name part: `IFNAMSIZ - 1`.
const NAME_MAX: usize = abi::IFNAMSIZ - 1;

/// A netmap back-end name, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortName {
    /// `netmap:IFNAME`: all hardware rings of interface `IFNAME`.
    Nic(String),
    /// `valeX:Y`: port `port` of VALE switch `switch` (`valeX`).
    Vale {
        /// The switch, `vale` included.
        switch: String,
        /// The port on it.
        port: String,
    },
}

fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl PortName {
    /// Parses `netmap:IFNAME` or `valeX:Y`.
    ///
    /// `IFNAME` is 1 to 15 letters, digits, `_` or `.`; netmap's ring and
    /// option suffixes (`-N`, `^`, `*`, `{N`, `}N`, `@`, `/`) are not
    /// supported. `X` is letters, digits or `_` (possibly none) with
    /// `valeX` at most 15 bytes, and `Y` 1 to 15 of the same, as the VALE
    /// switch's `nm_bdg_name_validate` takes them.
    pub fn parse(name: &str) -> Result<PortName, Error> {
        let bad = |reason| Error::BadName {
            name: name.to_owned(),
            reason,
        };
        if let Some(ifname) = name.strip_prefix("netmap:") {
            if ifname.is_empty() {
                return Err(bad("netmap: needs an interface name, as in netmap:em0"));
            }
            if ifname.len() > NAME_MAX {
                return Err(bad("the interface name is longer than 15 bytes"));
            }
            if !ifname.bytes().all(|b| is_id_char(b) || b == b'.') {
                return Err(bad(
                    "the interface name may hold letters, digits, '_' and '.' only \
                     (netmap ring and option suffixes are not supported)",
                ));
            }
            return Ok(PortName::Nic(ifname.to_owned()));
        }
        if name.starts_with(abi::NM_BDG_NAME) {
            let Some((switch, port)) = name.split_once(':') else {
                return Err(bad("a VALE port is named valeX:Y"));
            };
            if switch.len() > NAME_MAX || port.len() > NAME_MAX {
                return Err(bad(
                    "the VALE switch and port names are at most 15 bytes each",
                ));
            }
            if port.is_empty() {
                return Err(bad("a VALE port is named valeX:Y, and Y is empty"));
            }
            if !switch.bytes().chain(port.bytes()).all(is_id_char) {
                return Err(bad(
                    "VALE switch and port names may hold letters, digits and '_' only",
                ));
            }
            return Ok(PortName::Vale {
                switch: switch.to_owned(),
                port: port.to_owned(),
            });
        }
        Err(bad("a netmap back end is named netmap:IFNAME or valeX:Y"))
    }

    /// The name the kernel is given: `IFNAME` or `valeX:Y`.
    pub fn kernel_name(&self) -> String {
        match self {
            PortName::Nic(ifname) => ifname.clone(),
            PortName::Vale { switch, port } => format!("{switch}:{port}"),
        }
    }

    /// "interface" or "VALE port", for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            PortName::Nic(_) => "interface",
            PortName::Vale { .. } => "VALE port",
        }
    }
}

/// A bound netmap port as the back end uses it: a pollable descriptor, the
/// shared region, the syncs and the header-length control.
///
/// `/dev/netmap` is the real one; tests plug in a model.
///
/// # Safety
///
/// [`region`](NetmapDevice::region) must describe memory that stays
/// mapped, readable and writable for as long as the implementor lives, and
/// [`nifp_offset`](NetmapDevice::nifp_offset) must be stable.
pub unsafe trait NetmapDevice: Kernel + AsFd {
    /// The shared region.
    fn region(&self) -> Region;
    /// Where the `netmap_if` is in it.
    fn nifp_offset(&self) -> usize;
    /// `NETMAP_REQ_PORT_HDR_SET`: the virtio-net header length (0, 10, 12)
    /// on every frame from now on.
    fn set_vnet_hdr_len(&mut self, len: usize) -> io::Result<()>;
}

/// The netmap back end: a bound port registered on a reactor.
pub struct NetmapBackend<D> {
    /// First, so that it is dropped (its deletion queued) before `dev`
    /// closes.
    reg: Registration,
    name: String,
    port: Port,
    dev: Box<dyn NetmapDevice>,
    cap: u64,
    hdr: VnetHdrLen,
    _loop: std::marker::PhantomData<fn(&mut D)>,
}

impl<D> std::fmt::Debug for NetmapBackend<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetmapBackend")
            .field("name", &self.name)
            .field("rx_rings", &self.port.rx_rings())
            .field("handle", &self.reg.handle())
            .field("cap", &self.cap)
            .field("vnet_hdr_len", &self.hdr.len())
            .finish()
    }
}

impl<D: 'static> NetmapBackend<D> {
    /// Opens `netmap:IFNAME` or `valeX:Y` and registers it on `reactor`,
    /// receive disabled, with `cb` as its receive callback.
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    pub fn open(name: &str, reactor: &mut Reactor<D>, cb: RxCallback<D>) -> Result<Self, Error> {
        let port = PortName::parse(name)?;
        let dev = sys::NetmapFd::open(name, &port)?;
        NetmapBackend::with_device(name, Box::new(dev), reactor, cb)
    }

    /// Netmap exists on Linux and FreeBSD only.
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    pub fn open(name: &str, _: &mut Reactor<D>, _: RxCallback<D>) -> Result<Self, Error> {
        PortName::parse(name)?;
        Err(Error::Unsupported {
            name: name.to_owned(),
            reason: "netmap is supported on Linux and FreeBSD only",
        })
    }

    /// The back end on a bound port `dev`: reads its interface and rings,
    /// finds out whether it takes a virtio-net header, and registers its
    /// descriptor on `reactor` for reading, disabled, with
    /// [`NETMAP_RIGHTS`].
    pub fn with_device(
        name: &str,
        mut dev: Box<dyn NetmapDevice>,
        reactor: &mut Reactor<D>,
        mut cb: RxCallback<D>,
    ) -> Result<Self, Error> {
        let port = Port::from_if(dev.region(), dev.nifp_offset()).map_err(|e| {
            Error::io(
                format!("reading the netmap interface and rings of {name}"),
                io::Error::from(e),
            )
        })?;
        // bhyve's netmap_has_vnet_hdr_len(VNET_HDR_LEN): try, then restore.
        let cap = match dev.set_vnet_hdr_len(VNET_HDR_LEN) {
            Ok(()) => {
                dev.set_vnet_hdr_len(0).map_err(|e| {
                    Error::io(
                        format!(
                            "setting the virtio-net header length of {name} back to 0 \
                             (NETMAP_REQ_PORT_HDR_SET)"
                        ),
                        e,
                    )
                })?;
                NETMAP_FEATURES
            }
            Err(e) => {
                log::debug!("netmap {name}: takes no virtio-net header: {e}");
                0
            }
        };
        // SAFETY: the back end keeps `dev` open while the registration
        // lives: `close` deletes it first, and a drop queues its deletion
        // (the `reg` field, dropped first) before `dev` closes.
        let source = unsafe { Source::borrow_raw(dev.as_fd().as_raw_fd()) };
        let handle =
            reactor.add_disabled(source, Interest::READ, NETMAP_RIGHTS, move |r, d, _| {
                cb(r, d)
            })?;
        Ok(NetmapBackend {
            reg: Registration::new(reactor, handle),
            name: name.to_owned(),
            port,
            dev,
            cap,
            hdr: VnetHdrLen::None,
            _loop: std::marker::PhantomData,
        })
    }
}

impl<D> NetmapBackend<D> {
    /// The reactor registration, until [`close`](NetBackend::close).
    pub fn handle(&self) -> Option<Handle> {
        self.reg.handle()
    }

    /// The virtio-net header length frames carry now.
    pub fn vnet_hdr_len(&self) -> usize {
        self.hdr.len()
    }
}

impl<D> NetBackend<D> for NetmapBackend<D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(self.port.send(&mut *self.dev, iov)?)
    }

    fn recv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<Option<usize>> {
        match self.port.recv(&mut *self.dev, iov) {
            Err(RingError::DoesNotFit { len, .. }) if len > MAX_FRAME_LEN => {
                // No caller can take it: drop it.
                self.port.discard(&mut *self.dev)?;
                Err(Error::FrameDropped {
                    len,
                    max: MAX_FRAME_LEN,
                }
                .into())
            }
            // Kept in the ring for a receive with more room.
            Err(RingError::DoesNotFit { len, room }) => {
                Err(Error::FrameTooBig { len, room }.into())
            }
            other => Ok(other?),
        }
    }

    fn peek_recvlen(&mut self) -> io::Result<usize> {
        Ok(self.port.peek(&mut *self.dev)?)
    }

    fn recv_enable(&mut self, reactor: &mut Reactor<D>) -> Result<(), Error> {
        let h = live_handle(&self.reg, || format!("netmap {:?}", self.name))?;
        Ok(reactor.enable(h)?)
    }

    fn recv_disable(&mut self, reactor: &mut Reactor<D>) -> Result<(), Error> {
        let h = live_handle(&self.reg, || format!("netmap {:?}", self.name))?;
        Ok(reactor.disable(h)?)
    }

    fn get_cap(&self) -> u64 {
        self.cap
    }

    fn set_cap(&mut self, features: u64, vnet_hdr_len: usize) -> Result<(), Error> {
        let hdr = VnetHdrLen::new(vnet_hdr_len)?;
        let refused = || Error::CapRefused {
            backend: self.name.clone(),
            features,
            vnet_hdr_len,
        };
        // Offloads need a header to describe them, and must be offered.
        if features & !self.cap != 0 || (features != 0 && hdr.is_empty()) {
            return Err(refused());
        }
        if hdr == self.hdr {
            return Ok(());
        }
        if !hdr.is_empty() && self.cap == 0 {
            return Err(refused());
        }
        match self.dev.set_vnet_hdr_len(hdr.len()) {
            Ok(()) => {
                self.hdr = hdr;
                Ok(())
            }
            Err(e) => {
                log::debug!("netmap {}: header length {vnet_hdr_len}: {e}", self.name);
                Err(refused())
            }
        }
    }

    fn close(mut self: Box<Self>, reactor: &mut Reactor<D>) -> Result<(), Error> {
        self.reg.delete(reactor)?;
        Ok(())
    }
}

/// Opens a netmap back end for [`open`](super::open): `netmap:IFNAME` or
/// `valeX:Y`.
pub(crate) fn open_boxed<D: 'static>(
    name: &str,
    reactor: &mut Reactor<D>,
    cb: RxCallback<D>,
) -> Result<Box<dyn NetBackend<D>>, Error> {
    Ok(Box::new(NetmapBackend::open(name, reactor, cb)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(
            PortName::parse("netmap:em0").unwrap(),
            PortName::Nic("em0".into())
        );
        assert_eq!(
            PortName::parse("netmap:eth0.100").unwrap().kernel_name(),
            "eth0.100"
        );
        let v = PortName::parse("vale0:1").unwrap();
        assert_eq!(
            v,
            PortName::Vale {
                switch: "vale0".into(),
                port: "1".into()
            }
        );
        assert_eq!(v.kernel_name(), "vale0:1");
        assert_eq!(
            PortName::parse("vale:vm_a").unwrap().kernel_name(),
            "vale:vm_a"
        );
        assert_eq!(
            PortName::parse("valeswitch12345:p23456789012345")
                .unwrap()
                .kernel_name(),
            "valeswitch12345:p23456789012345"
        );
        for bad in [
            "netmap:",
            "netmap:em0-1",
            "netmap:em0^",
            "netmap:em0*",
            "netmap:em0{1",
            "netmap:em0/R",
            "netmap:em0@2",
            "netmap:a b",
            "netmap:../x",
            "netmap:1234567890123456",
            "netmapem0",
            "netmap",
            "vale",
            "vale0",
            "vale0:",
            "vale0:1:2",
            "vale0:a-b",
            "vale-0:1",
            "valeswitch123456:1",
            "vale0:p234567890123456",
            "tap0",
        ] {
            let e = PortName::parse(bad).unwrap_err();
            assert!(matches!(e, Error::BadName { .. }), "{bad}: {e}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn features_are_bhyves() {
        // VIRTIO_NET_F_CSUM | GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6 |
        // GUEST_UFO | HOST_TSO4 | HOST_TSO6 | HOST_UFO | MRG_RXBUF.
        assert_eq!(NETMAP_FEATURES, 0xdd83);
    }
}
