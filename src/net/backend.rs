//! The net back-end API: bhyve's `net_backends.h` as a trait. Back ends
//! implement it; front ends use it through [`Netbe`](super::Netbe), and
//! [`open`](super::open()) picks one by name.

use std::io::{self, IoSlice, IoSliceMut};

use super::vnet::VnetHdrLen;
use super::Error;
use crate::reactor::{Handle, Reactor, Registration};

/// The callback a back end runs on the loop thread when received frames
/// are ready (bhyve's `net_be_rxeof_t` with its `param`). The front end
/// usually lives in `D` and drains the back end with
/// [`recv`](NetBackend::recv) until it returns `Ok(None)`; frames it leaves
/// pending bring the callback back on the next round.
pub type RxCallback<D> = Box<dyn FnMut(&mut Reactor<D>, &mut D)>;

/// One net back end: a source and sink of Ethernet frames, registered on a
/// [`Reactor`] (bhyve's `struct net_backend`).
///
/// Frames carry a virtio-net header of the length last accepted by
/// [`set_cap`](NetBackend::set_cap) (none at first). Front ends normally go
/// through [`Netbe`](super::Netbe), which strips or adds the front end's
/// header when the back end takes none.
pub trait NetBackend<D> {
    /// The name it was opened with (`tap0`, `slirp`, ...).
    fn name(&self) -> &str;

    /// Sends one frame gathered from `iov`. Returns the bytes taken.
    /// A full transmit queue is an error of kind `WouldBlock`; the caller
    /// drops the frame or retries.
    fn send(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Receives one frame into `iov` without blocking: `Ok(Some(len))`,
    /// or `Ok(None)` when nothing is pending. A frame longer than `iov` is
    /// kept and reported as [`Error::FrameTooBig`] (kind `InvalidInput`)
    /// with its length; [`peek_recvlen`](NetBackend::peek_recvlen) tells
    /// the length first. Only a frame longer than
    /// [`MAX_FRAME_LEN`](super::MAX_FRAME_LEN), which no caller could
    /// take, is dropped ([`Error::FrameDropped`]).
    fn recv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<Option<usize>>;

    /// The length of the next frame [`recv`](NetBackend::recv) would
    /// return, without consuming it; 0 when nothing is pending.
    fn peek_recvlen(&mut self) -> io::Result<usize>;

    /// Starts calling the receive callback when frames are ready. Back ends
    /// start with receive disabled, as bhyve's do.
    fn recv_enable(&mut self, reactor: &mut Reactor<D>) -> Result<(), Error>;

    /// Stops calling the receive callback; on return it will not run until
    /// [`recv_enable`](NetBackend::recv_enable), even for events already
    /// collected in the current round.
    fn recv_disable(&mut self, reactor: &mut Reactor<D>) -> Result<(), Error>;

    /// The virtio-net features (checksum and segmentation offloads) the back
    /// end can support.
    fn get_cap(&self) -> u64;

    /// Enables `features` (a subset of [`get_cap`](NetBackend::get_cap))
    /// with a `vnet_hdr_len`-byte header on every frame, or refuses with
    /// [`Error::CapRefused`] and changes nothing.
    fn set_cap(&mut self, features: u64, vnet_hdr_len: usize) -> Result<(), Error>;

    /// Deletes the back end's registrations and closes its descriptors
    /// (bhyve's `netbe_cleanup`). Dropping a back end without closing it
    /// closes its descriptors but leaves stale entries in the reactor.
    fn close(self: Box<Self>, reactor: &mut Reactor<D>) -> Result<(), Error>;

    /// The longest frame the back end carries, Ethernet header included
    /// and virtio-net header left out: `send` refuses a longer one with
    /// [`Error::FrameTooLong`]. By default whatever a front end can take
    /// ([`MAX_FRAME_LEN`](super::MAX_FRAME_LEN)).
    fn max_frame_len(&self) -> usize {
        super::MAX_FRAME_LEN
    }

    /// The process id of the helper process the back end runs, if it runs
    /// one (`slirp-helper`), for the VMM's logs and monitoring.
    fn helper_pid(&self) -> Option<u32> {
        None
    }
}

/// The header lengths a back end with no offloads takes: none. What
/// [`set_cap`](NetBackend::set_cap) of such a back end (tap, slirp) does:
/// no features and no header, or [`Error::CapRefused`].
pub fn refuse_offloads(backend: &str, features: u64, vnet_hdr_len: usize) -> Result<(), Error> {
    VnetHdrLen::new(vnet_hdr_len)?;
    if features == 0 && vnet_hdr_len == 0 {
        Ok(())
    } else {
        Err(Error::CapRefused {
            backend: backend.to_owned(),
            features,
            vnet_hdr_len,
        })
    }
}

/// The registration of a back end that is still open; once it is closed,
/// an error saying so, about `what` ("tap \"tap0\"").
pub(crate) fn live_handle(
    reg: &Registration,
    what: impl FnOnce() -> String,
) -> Result<Handle, Error> {
    reg.handle().ok_or_else(|| {
        Error::io(
            format!("using {}", what()),
            io::Error::new(io::ErrorKind::NotConnected, "the back end is closed"),
        )
    })
}
