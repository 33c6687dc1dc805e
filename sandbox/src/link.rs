//! A front end's link to its hypervisor or namespace, as the serve loop
//! sees it: a descriptor, a receiving half ([`Rx`]) and a sending half
//! ([`Tx`]).
//!
//! The halves are separate because a frame read from the link goes into
//! libslirp, which may answer at once through the stack's sink, which
//! pushes to the sending half: the two must never be borrowed together.
//! Frames the link cannot take now stay queued in the sending half, which
//! the loop flushes once per round.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

use caploop::reactor::Reactor;
use caploop::Rights;

use caploop::net::acks::AckThinner;

use crate::error::ServeError;
use crate::serve::Feed;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival<'a> {
    /// An Ethernet frame.
    Frame(&'a [u8]),
    /// A TCP super-segment of up to 64 KiB from a tap with
    /// segmentation offload (`Stack::input_segment`).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // the offloading tap
    Segment(&'a [u8]),
}

impl<'a> Arrival<'a> {
    /// Its bytes, from the Ethernet header on.
    pub fn bytes(&self) -> &'a [u8] {
        match *self {
            Arrival::Frame(b) | Arrival::Segment(b) => b,
        }
    }
}

/// The receiving half of a link.
pub trait Rx {
    /// Reads what the link has now (a bounded amount), handing each whole
    /// frame to `deliver`. `Ok(false)` once the peer has hung up.
    fn pull(
        &mut self,
        hangup: bool,
        deliver: &mut dyn FnMut(Arrival<'_>),
    ) -> Result<bool, ServeError>;

    /// For a link with sources of its own besides its descriptor, which
    /// appear while it runs (vhost-user's kick eventfds): called once while
    /// the session is set up, with the [`Feed`] those sources' callbacks
    /// hand their frames to. Other links ignore it.
    fn attach(&mut self, _feed: Feed) {}

    /// Descriptors the link uses that the reactor does not poll (the
    /// vhost-user socket as the vhost crate holds it), with their rights
    /// and a label, for the sandbox plan. They must live as long as the
    /// session.
    fn unpolled(&self) -> Vec<(RawFd, Rights, &'static str)> {
        Vec::new()
    }

    /// [`pull`](Rx::pull) with the reactor, so that a link can add or
    /// delete its own registrations as its peer hands it descriptors. The
    /// serve loop calls this one; the default is `pull`.
    fn pull_with(
        &mut self,
        _reactor: &mut Reactor<()>,
        hangup: bool,
        deliver: &mut dyn FnMut(Arrival<'_>),
    ) -> Result<bool, ServeError> {
        self.pull(hangup, deliver)
    }
}

/// The sending half of a link.
pub trait Tx {
    /// Sends a frame, or queues it for the flush that runs once per round.
    fn push(&mut self, frame: &[u8]);
    /// Writes queued frames; `Ok(())` also when some remain queued.
    fn flush(&mut self) -> io::Result<()>;
    /// Whether frames are queued.
    fn pending(&self) -> bool;
    /// Whether sending showed the peer is gone (a datagram peer gives no
    /// hangup otherwise).
    fn gone(&self) -> bool {
        false
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

/// What a front end hands the serve loop: the link's descriptor (polled,
/// and limited to socket or tap rights) and its two halves, which use it.
pub struct Link {
    /// The descriptor the halves read and write.
    pub fd: OwnedFd,
    /// What the descriptor is, for the sandbox plan.
    pub kind: LinkKind,
    /// Reads frames.
    pub rx: Box<dyn Rx>,
    /// Writes frames.
    pub tx: Box<dyn Tx>,
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
