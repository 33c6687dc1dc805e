//! The link between smoltcp and the guest: IP packets in (taken from the
//! guest's Ethernet frames), Ethernet frames out (smoltcp's IP packets
//! behind the guest's and the gateway's addresses).

use std::collections::VecDeque;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::frame::ethernet::{Ethernet, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::frame::ETH_HLEN;

/// The Ethernet addresses of frames to the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Macs {
    /// The guest's (the source of its frames).
    pub guest: [u8; 6],
    /// The gateway's (where the guest sent them).
    pub gateway: [u8; 6],
}

/// Frames for the guest, and spent buffers to build the next ones in (a
/// fresh buffer would be zeroed first: 7% of a download's time at MTU
/// 65520, measured). smoltcp writes every byte of the packets it emits
/// (headers, option padding, payload); and a spent buffer only ever held
/// a frame already sent to this same guest, so even a byte left over
/// would tell it nothing new.
#[derive(Debug, Default)]
pub struct Frames {
    /// Made, for the sink.
    pub list: Vec<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    /// Frames made so far.
    pub made: u64,
}

/// Spent buffers kept for reuse, at most.
const SPARE: usize = 256;

impl Frames {
    /// Hands each frame made so far to `sink`, oldest first, and keeps
    /// their buffers (and the list's) for the next ones.
    pub fn hand_over(&mut self, mut sink: impl FnMut(&[u8])) {
        let mut list = std::mem::take(&mut self.list);
        for frame in list.drain(..) {
            sink(&frame);
            if self.spare.len() < SPARE {
                self.spare.push(frame);
            }
        }
        self.list = list;
    }

    /// A buffer of `len` bytes whose contents are unspecified (the caller
    /// writes every byte).
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_default();
        if b.len() >= len {
            b.truncate(len);
        } else {
            b.resize(len, 0);
        }
        b
    }

    /// Adds a frame for the sink.
    pub(crate) fn push(&mut self, frame: Vec<u8>) {
        self.list.push(frame);
        self.made += 1;
    }

    /// Whether no frame is waiting for the sink.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Frames waiting for the sink.
    pub fn len(&self) -> usize {
        self.list.len()
    }
}

/// One flow's side of the link, lent to smoltcp for one poll: the packets
/// the guest sent it, and where its answers go.
pub(crate) struct Wire<'a> {
    pub rx: Incoming<'a>,
    pub out: &'a mut Frames,
    pub macs: Macs,
    /// The largest IP packet toward the guest.
    pub mtu: usize,
}

/// The guest's packets for smoltcp: queued ones, or the one segment just
/// taken from the link, borrowed (no copy before smoltcp's own).
pub(crate) enum Incoming<'a> {
    Queue(&'a mut VecDeque<Vec<u8>>),
    One(Option<&'a [u8]>),
}

pub(crate) enum Rx<'a> {
    Owned(Vec<u8>),
    Borrowed(&'a [u8]),
}

pub(crate) struct Tx<'a> {
    out: &'a mut Frames,
    macs: Macs,
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match self {
            Rx::Owned(p) => f(&p),
            Rx::Borrowed(p) => f(p),
        }
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // smoltcp writes every byte of the packet; the header is ours.
        let mut frame = self.out.buffer(ETH_HLEN + len);
        let r = f(&mut frame[ETH_HLEN..]);
        let ethertype = if frame.get(ETH_HLEN).is_some_and(|b| b >> 4 == 6) {
            ETHERTYPE_IPV6
        } else {
            ETHERTYPE_IPV4
        };
        if let Ok(mut eth) = Ethernet::new_checked(&mut frame[..]) {
            eth.set_dst(self.macs.guest);
            eth.set_src(self.macs.gateway);
            eth.set_ethertype(ethertype);
        }
        self.out.push(frame);
        r
    }
}

impl Device for Wire<'_> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let packet = match &mut self.rx {
            Incoming::Queue(q) => Rx::Owned(q.pop_front()?),
            Incoming::One(p) => Rx::Borrowed(p.take()?),
        };
        Some((
            packet,
            Tx {
                out: self.out,
                macs: self.macs,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx {
            out: self.out,
            macs: self.macs,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = self.mtu;
        c
    }
}
