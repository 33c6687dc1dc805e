//! The link between smoltcp and the guest: IP packets in (taken from the
//! guest's Ethernet frames), Ethernet frames out (smoltcp's IP packets
//! behind the guest's and the gateway's addresses).

use std::collections::VecDeque;

use smoltcp::phy::{self, Checksum, Device, DeviceCapabilities, Medium, PacketMeta};
use smoltcp::time::Instant;

use crate::frame::coalesce::gso_header;
use crate::frame::ethernet::{Ethernet, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::frame::ipv4::{Ipv4, PROTO_TCP};
use crate::frame::ipv6::{Ipv6, IP6};
use crate::frame::tcp::Tcp;
use crate::frame::vnet_hdr::{VnetHdr, GSO_NONE, GSO_TCPV4, GSO_TCPV6, VNET_HDR_SIZE};
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
    /// Made, for the sink: each frame, with the virtio-net header of one
    /// made for a link that takes offloads (see [`Wire::offload`]).
    pub list: Vec<(Vec<u8>, Option<[u8; VNET_HDR_SIZE]>)>,
    spare: Vec<Vec<u8>>,
    /// Frames made so far.
    pub made: u64,
    /// Of them, super-segments (a GSO type in their header).
    pub gso: u64,
}

/// Spent buffers kept for reuse, at most.
const SPARE: usize = 256;

impl Frames {
    /// Hands each frame made so far to `sink`, oldest first, with its
    /// virtio-net header if it has one, and keeps their buffers (and the
    /// list's) for the next ones.
    pub fn hand_over(&mut self, mut sink: impl FnMut(&mut [u8], Option<&[u8; VNET_HDR_SIZE]>)) {
        let mut list = std::mem::take(&mut self.list);
        for (mut frame, hdr) in list.drain(..) {
            sink(&mut frame, hdr.as_ref());
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
    pub(crate) fn push(&mut self, frame: Vec<u8>, hdr: Option<[u8; VNET_HDR_SIZE]>) {
        if hdr.is_some_and(|h| VnetHdr::parse(&h).is_ok_and(|h| h.gso_type != GSO_NONE)) {
            self.gso += 1;
        }
        self.list.push((frame, hdr));
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
    /// The link takes this flow's TCP super-segments and partial checksums
    /// (a tap with a virtio-net header, a guest that accepted GUEST_TSO4 or
    /// GUEST_TSO6): smoltcp builds segments of up to 64 KiB and leaves the
    /// TCP checksum, and each super-segment goes with the header that has
    /// the guest's kernel cut it (no merging copy, no checksum pass here).
    pub offload: bool,
    /// For an offloading IPv6 flow, the segment size to cut at: smoltcp
    /// 0.14 passes no packet metadata for IPv6, so a packet longer than
    /// this is taken for the super-segment it is (see `Flow::learn_mss`).
    pub cut: Option<u16>,
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
    offload: bool,
    cut: Option<u16>,
    /// The segment size smoltcp asked the link to cut this packet to.
    gso_size: Option<u16>,
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
        let hdr = if self.offload {
            offload_header(&mut frame, self.gso_size, self.cut)
        } else {
            None
        };
        self.out.push(frame, hdr);
        r
    }

    fn set_meta(&mut self, meta: PacketMeta) {
        self.gso_size = meta.segmentation_offload_size.map(|s| s.get());
    }
}

/// For a TCP packet smoltcp built for a link that takes offloads (its TCP
/// checksum left zero): a super-segment (smoltcp asked for `gso_size`)
/// gets the pseudo-header's sum in its checksum field and the virtio-net
/// header that has the receiver cut it and finish the sums (`GSO_TCPV4`
/// or `GSO_TCPV6`, `NEEDS_CSUM`); any other segment gets its full
/// checksum here and no header, so it goes on as a plain frame (ACKs
/// thinned, short runs merged by the link as libslirp's are). `None` for
/// a plain frame.
fn offload_header(
    frame: &mut [u8],
    gso_size: Option<u16>,
    cut: Option<u16>,
) -> Option<[u8; VNET_HDR_SIZE]> {
    let ip = frame.get(ETH_HLEN..)?;
    let (tcp, end, pseudo, gso_type) = if ip.first()? >> 4 == 4 {
        let ip = Ipv4::new_checked(ip).ok()?;
        if ip.protocol() != PROTO_TCP || ip.is_fragment() {
            return None;
        }
        let l4_len = ip.total_len().checked_sub(ip.header_len())?;
        let tcp = ETH_HLEN + ip.header_len();
        (tcp, tcp + l4_len, ip.pseudo_sum(l4_len), GSO_TCPV4)
    } else {
        // smoltcp's IPv6 packets carry no extension headers.
        let ip = Ipv6::new_checked(ip).ok()?;
        if ip.next_header() != PROTO_TCP {
            return None;
        }
        let tcp = ETH_HLEN + IP6;
        (
            tcp,
            tcp + ip.payload_len(),
            ip.pseudo_sum(ip.payload_len()),
            GSO_TCPV6,
        )
    };
    let mut t = Tcp::new_checked(frame.get_mut(tcp..end)?).ok()?;
    // IPv6: no metadata from smoltcp; its length says.
    let payload = t.payload().len();
    let gso_size =
        gso_size.or_else(|| cut.filter(|&c| gso_type == GSO_TCPV6 && payload > usize::from(c)));
    let Some(gso_size) = gso_size else {
        t.fill_checksum(pseudo);
        return None;
    };
    Some(gso_header(&mut t, tcp, pseudo, gso_type, gso_size).to_bytes())
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
                offload: self.offload,
                cut: self.cut,
                gso_size: None,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx {
            out: self.out,
            macs: self.macs,
            offload: self.offload,
            cut: self.cut,
            gso_size: None,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = self.mtu;
        // The guest's TCP checksums are not verified: its link is memory,
        // not a wire, most of its segments come with the checksum left to
        // us (virtio's NEEDS_CSUM, finished by the link) or were merged
        // and summed by the stack, and a wrong one could only spoil the
        // guest's own stream (passt does not verify them either). That
        // pass was 6% of an upload's cycles at MTU 65520.
        c.checksum.tcp = Checksum::Tx;
        if self.offload {
            // The largest IP packet; no TCP checksum made here (`Tx`
            // writes the pseudo-header's sum or the whole one).
            let most = std::num::NonZeroUsize::new(usize::from(u16::MAX));
            c.segmentation.tcpv4 = most;
            c.segmentation.tcpv6 = most;
            c.checksum.tcp = Checksum::None;
        }
        c
    }
}
