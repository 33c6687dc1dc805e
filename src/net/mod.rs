//! Net back ends with bhyve's API, on the [`Reactor`](crate::reactor::Reactor).
//!
//! A back end ([`NetBackend`]) is a source and sink of Ethernet frames for a
//! virtio-net (or e1000) front end: it sends one frame gathered from iovecs,
//! receives one frame without blocking, tells the next frame's length, and
//! runs a callback the front end gives when frames are ready, between
//! [`recv_enable`](NetBackend::recv_enable) and
//! [`recv_disable`](NetBackend::recv_disable). [`open`] picks the back end by
//! the prefix of its name, as bhyve's `netbe_init` does:
//!
//! | prefix  | back end                                              |
//! |---------|-------------------------------------------------------|
//! | `tap`   | [`TapBackend`]: `/dev/net/tun` (Linux), `/dev/tapN` (FreeBSD) |
//! | `vmnet` | [`TapBackend`] on `/dev/vmnetN` (FreeBSD only)         |
//! | `slirp` | `SlirpBackend`: libslirp on the reactor, bhyve's options (feature `slirp`) |
//! | `netmap` | [`NetmapBackend`]: `netmap:IFNAME` through `/dev/netmap` |
//! | `vale`  | [`NetmapBackend`]: VALE switch port `valeX:Y`          |
//!
//! [`Netbe`] is what a front end holds: the back end plus the front end's
//! and back end's virtio-net header lengths (0, 10 or 12). When the back end
//! takes no header, [`Netbe`] strips the front end's on send and writes a
//! zeroed one (`num_buffers = 1` in the 12-byte form) on receive, without
//! copying frame bytes; the pieces are in [`vnet`].
//!
//! ```no_run
//! use std::io::IoSliceMut;
//! use caploop::net::Netbe;
//! use caploop::Reactor;
//!
//! struct Vm {
//!     net: Option<Netbe<Vm>>,
//! }
//!
//! let mut reactor: Reactor<Vm> = Reactor::new()?;
//! let mut net = Netbe::open("tap0", &mut reactor, |_r, vm: &mut Vm| {
//!     let Some(net) = vm.net.as_mut() else { return };
//!     let mut buf = [0u8; 2048];
//!     while let Ok(Some(len)) = net.recv(&mut [IoSliceMut::new(&mut buf)]) {
//!         // hand buf[..len] (12-byte header first) to the guest
//!         let _ = len;
//!     }
//! })?;
//! net.set_cap(0, 12)?;
//! net.recv_enable(&mut reactor)?;
//! let mut vm = Vm { net: Some(net) };
//! reactor.run(&mut vm)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod backend;
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
mod child;
mod error;
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub mod helper;
pub mod netbe;
pub mod netmap;
pub mod offload;
mod options;
mod pending;
pub mod registry;
pub mod relay;
#[cfg(feature = "slirp")]
#[cfg_attr(docsrs, doc(cfg(feature = "slirp")))]
pub mod slirp;
pub mod tap;
pub mod vnet;

pub use crate::frame::{acks, gro};
pub use backend::{NetBackend, RxCallback};
pub use error::Error;
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub use helper::SlirpHelperBackend;
pub use netbe::Netbe;
pub use netmap::NetmapBackend;
pub use registry::{open, BackendKind};
#[cfg(feature = "slirp")]
#[cfg_attr(docsrs, doc(cfg(feature = "slirp")))]
pub use slirp::{SlirpBackend, SlirpOptions};
pub use tap::{TapBackend, TapDevice};
pub use vnet::VnetHdrLen;

/// The longest frame a back end hands over, virtio-net header included
/// (bhyve's discard buffer: a 64 KiB segment and room for headers).
pub const MAX_FRAME_LEN: usize = 65536 + 64;

/// The shortest frame a back end takes: an Ethernet header.
pub const MIN_FRAME_LEN: usize = crate::frame::ETH_HLEN;
