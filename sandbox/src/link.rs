//! A link's two halves as the serve loop and the stack see them: what a
//! read brings ([`Arrival`]), the reader of one descriptor ([`Rx`]), the
//! sender with its out-queue ([`Tx`]), and the one test of "the peer is
//! gone" ([`peer_gone`]). How a link registers its descriptors and hands
//! frames to the session is [`crate::source`].
//!
//! The halves are separate because a frame read from the link goes into
//! libslirp, which may answer at once through the stack's sink, which
//! pushes to the sending half: the two must never be borrowed together.

use std::io;

use crate::error::ServeError;
use caploop::frame::acks::AckThinner;
use caploop::net::offload::{Offloaded, Partial};

/// Link traffic counts, logged on exit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkCounters {
    /// Frames read from the peer.
    pub frames_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Frames written to the peer.
    pub frames_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Frames not delivered: the link's queue was full or the frame could
    /// not be represented.
    pub dropped: u64,
    /// Frames written that carried several TCP segments merged (a tap with
    /// offloads).
    pub merged: u64,
    /// TCP super-segments the link itself delivered (a tap with TSO).
    pub offloaded_in: u64,
    /// Super-segments libslirp got from several of the guest's TCP
    /// segments merged (`caploop::net::gro`).
    pub merged_in: u64,
    /// The guest's pure ACKs libslirp did not get because a later one of
    /// the same read superseded them.
    pub acks_thinned_in: u64,
    /// Pure TCP ACKs not sent because a later one of the round superseded
    /// them ([`Thinned`]).
    pub acks_thinned: u64,
}

/// One thing a link read for the stack.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival<'a> {
    /// An Ethernet frame.
    Frame(&'a [u8]),
    /// A TCP super-segment of up to 64 KiB from a tap with
    /// segmentation offload (`Stack::input_segment`).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // the offloading tap
    Segment(&'a mut [u8]),
    /// A super-segment or a large frame (which of them) whose checksum
    /// the guest left partial (`Stack::input_partial`).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // the offloading tap
    Partial(&'a mut [u8], Partial, Offloaded),
}

impl Arrival<'_> {
    /// Its bytes, from the Ethernet header on.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Arrival::Frame(b) => b,
            Arrival::Segment(b) | Arrival::Partial(b, ..) => b,
        }
    }

    /// What a link with a virtio-net header read, as
    /// `unwrap_record_lazily` told it.
    pub fn offloaded(kind: Offloaded, partial: Option<Partial>, frame: &mut [u8]) -> Arrival<'_> {
        match (kind, partial) {
            (kind, Some(p)) => Arrival::Partial(frame, p, kind),
            (Offloaded::TcpSegment, None) => Arrival::Segment(frame),
            (Offloaded::Frame, None) => Arrival::Frame(frame),
        }
    }
}

/// Reads a link's one descriptor ([`Link::polled`](crate::source::Link::polled)).
pub trait Rx {
    /// Reads what the link has now (a bounded amount), handing each whole
    /// frame to `deliver`. `Ok(false)` once the peer has hung up.
    fn pull(
        &mut self,
        hangup: bool,
        deliver: &mut dyn FnMut(Arrival<'_>),
    ) -> Result<bool, ServeError>;
}

/// Whether an error means the peer is gone (a socket reset or closed, a
/// tap whose namespace went): the session ends as a hang-up, not an error.
/// The one list every link uses.
pub fn peer_gone(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    if e.raw_os_error() == Some(libc::EBADFD) {
        return true;
    }
    matches!(
        e.raw_os_error(),
        Some(libc::EPIPE | libc::ECONNRESET | libc::ECONNREFUSED | libc::ENOTCONN | libc::EIO)
    )
}

/// `writev` of two slices to `fd` (a header and a frame: one system call,
/// no copy); the raw return value.
pub fn writev2(fd: std::os::fd::RawFd, a: &[u8], b: &[u8]) -> isize {
    let iov = [
        libc::iovec {
            iov_base: a.as_ptr() as *mut libc::c_void,
            iov_len: a.len(),
        },
        libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        },
    ];
    // SAFETY: writev reads the two live slices iov describes.
    unsafe { libc::writev(fd, iov.as_ptr(), 2) }
}

/// The sending half of a link.
pub trait Tx {
    /// Sends a frame, or queues it for the flush that runs once per round.
    fn push(&mut self, frame: &[u8]);
    /// Writes queued frames; `Ok(())` also when some remain queued.
    fn flush(&mut self) -> io::Result<()>;
    /// Whether frames are queued.
    fn pending(&self) -> bool;
    /// Whether frames wait because the peer is not taking them (not just
    /// held for the round's merging): the own TCP path sends nothing new
    /// while so. A link that never queues says no.
    fn full(&self) -> bool {
        false
    }
    /// Whether sending showed the peer is gone (a datagram peer gives no
    /// hangup otherwise).
    fn gone(&self) -> bool {
        false
    }
    /// Whether the link takes TCP super-segments with partial checksums
    /// behind a virtio-net header now ([`Tx::push_offloaded`]), for IPv4
    /// and for IPv6: a tap opened with one, a vhost-user guest that
    /// accepted `GUEST_TSO4` / `GUEST_TSO6`.
    fn offloads(&self) -> (bool, bool) {
        (false, false)
    }
    /// Sends `frame` behind its 10-byte virtio-net header `hdr`, as it is.
    /// Called only while [`Tx::offloads`] says yes for its family; a link
    /// that does not take offloads cuts and checksums it first.
    fn push_offloaded(&mut self, hdr: &[u8], frame: &[u8]) {
        let mut f = frame.to_vec();
        let done = caploop::net::offload::VnetHdr::parse(hdr).and_then(|h| {
            caploop::net::offload::complete(&h, &mut f, &mut |piece| self.push(piece))
        });
        if let Err(e) = done {
            log::debug!("a frame for the guest: {e}");
        }
    }
    /// Traffic so far (frames out, drops).
    fn counters(&self) -> LinkCounters;
    /// A failure found while flushing that must end the session with an
    /// error (a vhost-user guest's malformed receive ring), taken once.
    fn failure(&mut self) -> Option<ServeError> {
        None
    }
}

/// A sending half that sends only the last of each flow's pure TCP ACKs
/// in a round (`caploop::net::acks`): every front end's, so each guest
/// processes, and each record link writes, fewer frames.
pub struct Thinned {
    inner: Box<dyn Tx>,
    acks: AckThinner,
}

impl Thinned {
    /// Thins what goes to `inner`.
    pub fn new(inner: Box<dyn Tx>) -> Thinned {
        Thinned {
            inner,
            acks: AckThinner::default(),
        }
    }
}

impl Tx for Thinned {
    fn push(&mut self, frame: &[u8]) {
        let inner = &mut self.inner;
        self.acks.push(frame, &mut |f| inner.push(f));
    }

    fn flush(&mut self) -> io::Result<()> {
        let inner = &mut self.inner;
        self.acks.finish(&mut |f| inner.push(f));
        self.inner.flush()
    }

    fn pending(&self) -> bool {
        self.acks.holding() || self.inner.pending()
    }

    fn offloads(&self) -> (bool, bool) {
        self.inner.offloads()
    }

    fn push_offloaded(&mut self, hdr: &[u8], frame: &[u8]) {
        // ACKs held so far go first, in order.
        let inner = &mut self.inner;
        self.acks.finish(&mut |f| inner.push(f));
        self.inner.push_offloaded(hdr, frame);
    }

    fn full(&self) -> bool {
        self.inner.full()
    }

    fn gone(&self) -> bool {
        self.inner.gone()
    }

    fn counters(&self) -> LinkCounters {
        LinkCounters {
            acks_thinned: self.acks.thinned(),
            ..self.inner.counters()
        }
    }

    fn failure(&mut self) -> Option<ServeError> {
        self.inner.failure()
    }
}

/// The kind of descriptor a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A connected socket (bhyve's SOCK_SEQPACKET, QEMU's stream or
    /// datagram socket).
    Socket,
    /// A tap device (read and write only).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // slirp4netns only
    Tap,
}
