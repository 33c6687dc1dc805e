//! A round's TCP segments of one flow merged into one GSO record, for a
//! peer that takes super-frames (a tap with offloads, a guest that
//! accepted `GUEST_TSO4/6`).

use super::checksum::fold;
use super::ipv4::Ipv4;
use super::ipv6::Ipv6;
use super::tcp::{field, tcp_at, tcp_segment, Tcp, ACK, PSH, TCP};
use super::vnet_hdr::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, VNET_HDR_SIZE};
use super::ETH_HLEN as ETH;

/// The virtio-net header of a frame that carries no offload.
pub const EMPTY_HDR: [u8; VNET_HDR_SIZE] = [0; VNET_HDR_SIZE];

/// Whether a TCP segment of `len` bytes (from the Ethernet header on)
/// carrying `payload` bytes could start a merged run: a second segment,
/// which carries at most as much, must fit within the 64 KiB IP datagram.
pub fn can_grow(len: usize, payload: usize) -> bool {
    len - ETH + payload <= usize::from(u16::MAX)
}

/// Merges consecutive TCP segments of one flow, in sequence, into one GSO
/// frame (`GSO_TCPV4` or `GSO_TCPV6`, `NEEDS_CSUM`) for a tap opened with
/// a virtio-net header (or a virtio-net guest that accepted
/// `GUEST_TSO4/6`), and hands every other frame on behind an empty
/// header: the way a round of libslirp's output reaches the namespace in
/// a few writes instead of one per segment. The kernel takes a merged
/// frame as if its NIC had coalesced the segments (GRO).
///
/// Merged: IPv4 without options and not fragmented, or IPv6 without
/// extension headers; TCP segments with the first one's headers but for
/// the IPv4 identification, length and checksum (the IPv6 payload length)
/// and the TCP sequence number (the same addresses, ports, ack, window and
/// options; flags ACK, the last one may add PSH), each carrying as much
/// payload as the first but the last, which may carry less; at most 64 KiB
/// in all. [`Coalescer::default`] merges both families (a tap takes both);
/// [`Coalescer::new`] only those a guest accepted.
#[derive(Debug, Default)]
pub struct Coalescer {
    /// IPv4 segments go on alone (the peer refused `GUEST_TSO4`).
    no_v4: bool,
    /// IPv6 segments go on alone (the peer refused `GUEST_TSO6`).
    no_v6: bool,
    /// The record being built: header, then the merged frame.
    rec: Vec<u8>,
    /// Segments in it (0: nothing pending).
    segs: usize,
    /// Where its TCP header starts (`ETH` + 20 for IPv4, + 40 for IPv6).
    tcp: usize,
    /// The first segment's payload length: the GSO segment size.
    gso_size: usize,
    /// A segment shorter than `gso_size` was added: the run is over.
    closed: bool,
    /// The sequence number the next segment must have.
    next_seq: u32,
    /// Records that carried more than one segment.
    merged: u64,
}

impl Coalescer {
    /// Merges TCP/IPv4 runs if `ipv4` (`GUEST_TSO4`), TCP/IPv6 runs if
    /// `ipv6` (`GUEST_TSO6`).
    pub fn new(ipv4: bool, ipv6: bool) -> Coalescer {
        Coalescer {
            no_v4: !ipv4,
            no_v6: !ipv6,
            ..Coalescer::default()
        }
    }

    /// Takes one frame; whatever can no longer grow is handed to `emit` as
    /// a whole record: its virtio-net header, then its frame. A frame that
    /// cannot be merged (not a TCP segment of a family merged, or one so
    /// large that no second segment would fit beside it: MTU 65520's) goes
    /// on at once behind [`EMPTY_HDR`], never copied.
    pub fn push(&mut self, frame: &[u8], emit: &mut dyn FnMut(&[u8], &[u8])) {
        let wanted = |tcp: usize| if tcp == TCP { !self.no_v4 } else { !self.no_v6 };
        if let Some((tcp, payload)) = tcp_segment(frame).filter(|&(t, p)| p > 0 && wanted(t)) {
            if self.segs > 0 && self.joins(frame, tcp, payload) {
                self.append(frame, payload);
                return;
            }
            self.finish(emit);
            if tcp_at(frame, tcp).flags() == ACK && can_grow(frame.len(), payload) {
                self.start(frame, tcp, payload);
                return;
            }
        } else {
            self.finish(emit);
        }
        emit(&EMPTY_HDR, frame);
    }

    /// Hands on what is pending.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8], &[u8])) {
        if self.segs == 0 {
            return;
        }
        if self.segs > 1 {
            self.seal();
            self.merged += 1;
        }
        // A lone segment goes as it came, behind the empty header.
        let (hdr, frame) = self.rec.split_at(VNET_HDR_SIZE);
        emit(hdr, frame);
        self.rec.clear();
        self.segs = 0;
    }

    /// How many records so far carried more than one segment.
    pub fn merged(&self) -> u64 {
        self.merged
    }

    fn start(&mut self, frame: &[u8], tcp: usize, payload: usize) {
        self.rec.clear();
        self.rec.extend_from_slice(&[0u8; VNET_HDR_SIZE]);
        self.rec.extend_from_slice(frame);
        self.segs = 1;
        self.tcp = tcp;
        self.gso_size = payload;
        self.closed = false;
        self.next_seq = tcp_at(frame, tcp).seq().wrapping_add(payload as u32);
    }

    fn joins(&self, frame: &[u8], tcp: usize, payload: usize) -> bool {
        let first = &self.rec[VNET_HDR_SIZE..];
        if self.closed || tcp != self.tcp {
            return false;
        }
        // Both were accepted by `tcp_segment` with this offset.
        let (a, b) = (tcp_at(first, tcp), tcp_at(frame, tcp));
        let hdr = a.header_len();
        // The IP header but for what differs segment to segment.
        let ip_same = frame[..ETH] == first[..ETH]
            && if tcp == TCP {
                same_v4(&first[ETH..], &frame[ETH..])
            } else {
                same_v6(&first[ETH..], &frame[ETH..])
            };
        let (ha, hb) = (&first[tcp..tcp + hdr], &frame[tcp..]);
        b.header_len() == hdr
            && (b.flags() == ACK || b.flags() == ACK | PSH)
            && payload <= self.gso_size
            && b.seq() == self.next_seq
            && self.rec.len() - VNET_HDR_SIZE - ETH + payload <= usize::from(u16::MAX)
            && ip_same
            // TCP: ports; ack, offset; window; urgent pointer, options.
            && hb[field::PORTS] == ha[field::PORTS]
            && hb[field::ACK.start..=field::DOFF] == ha[field::ACK.start..=field::DOFF]
            && hb[field::WINDOW] == ha[field::WINDOW]
            && hb[field::URGENT.start..hdr] == ha[field::URGENT.start..hdr]
    }

    fn append(&mut self, frame: &[u8], payload: usize) {
        let (tcp, hdr) = (self.tcp, frame.len() - payload);
        self.rec.extend_from_slice(&frame[hdr..]);
        // The last segment's flags (PSH) stand for the whole.
        let flags = tcp_at(frame, self.tcp).flags();
        self.rec[VNET_HDR_SIZE + tcp + field::FLAGS] = flags;
        self.segs += 1;
        self.next_seq = self.next_seq.wrapping_add(payload as u32);
        self.closed = payload < self.gso_size || flags != ACK;
    }

    /// Writes the header, the IP lengths (and IPv4's header checksum) and
    /// the TCP checksum field (the pseudo-header's sum, for the kernel to
    /// finish) of a merged record.
    fn seal(&mut self) {
        let tcp = self.tcp;
        let (hdr, frame) = self.rec.split_at_mut(VNET_HDR_SIZE);
        let ip_len = frame.len() - ETH;
        let l4_len = ip_len - (tcp - ETH);
        // The record holds its first segment's headers, which
        // `tcp_segment` accepted, and more payload: the views hold.
        let (gso_type, pseudo) = if tcp == TCP {
            let mut ip = Ipv4::new_checked(&mut frame[ETH..]).expect("accepted headers");
            ip.set_total_len(ip_len as u16);
            ip.fill_checksum();
            (GSO_TCPV4, ip.pseudo_sum(l4_len))
        } else {
            let mut ip = Ipv6::new_checked(&mut frame[ETH..]).expect("accepted headers");
            ip.set_payload_len(l4_len as u16);
            (GSO_TCPV6, ip.pseudo_sum(l4_len))
        };
        let mut t = Tcp::new_checked(&mut frame[tcp..]).expect("accepted headers");
        let h = gso_header(&mut t, tcp, pseudo, gso_type, self.gso_size as u16);
        hdr.copy_from_slice(&h.to_bytes());
    }
}

/// The virtio-net header that has the receiver cut the TCP super-segment
/// whose header `t` is (at `tcp` in its frame) into `gso_size`-byte
/// segments and finish their checksums (`NEEDS_CSUM`), with the checksum
/// field set to the pseudo-header's sum `pseudo` for it.
pub(crate) fn gso_header(
    t: &mut Tcp<&mut [u8]>,
    tcp: usize,
    pseudo: u64,
    gso_type: u8,
    gso_size: u16,
) -> VnetHdr {
    t.set_checksum(fold(pseudo));
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: (tcp + t.header_len()) as u16,
        gso_size,
        csum_start: tcp as u16,
        csum_offset: field::CHECKSUM.start as u16,
    }
}

/// Whether two IPv4 headers differ only where one flow's segments do.
fn same_v4(a: &[u8], b: &[u8]) -> bool {
    match (Ipv4::new_checked(a), Ipv4::new_checked(b)) {
        (Ok(a), Ok(b)) => a.same_flow_header(&b),
        _ => false,
    }
}

/// Whether two IPv6 headers differ only where one flow's segments do.
fn same_v6(a: &[u8], b: &[u8]) -> bool {
    match (Ipv6::new_checked(a), Ipv6::new_checked(b)) {
        (Ok(a), Ok(b)) => a.same_flow_header(&b),
        _ => false,
    }
}
