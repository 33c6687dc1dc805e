//! Offloads on a virtio-net header (a tap opened with `IFF_VNET_HDR`): the
//! header's fields, finishing a checksum the sender left partial
//! (`VIRTIO_NET_HDR_F_NEEDS_CSUM`), and telling a TCP super-segment (TSO,
//! up to 64 KiB) from a frame.
//!
//! With `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)` the kernel
//! hands a tap's reader frames whose TCP or UDP checksum is only the
//! pseudo-header's sum, and whole TCP super-segments of up to 64 KiB: for
//! IPv4 one read, one libslirp input and one host `send` for what would be
//! some forty frames ([`segment`] cuts IPv6 ones for libslirp). libslirp verifies checksums, so they are finished here first.
//! The rules are the kernel's (`virtio_net_hdr_to_skb`,
//! `skb_checksum_help`) and the virtio spec's (5.1.6.2).

use super::Error;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start +
/// csum_offset` covers only the pseudo-header; finish it over
/// `csum_start..`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was checked already.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO).
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: a flag on the GSO type.
pub const GSO_ECN: u8 = 0x80;

/// The 10-byte `virtio_net_hdr`, in the host's byte order (a tap's
/// default, as for legacy virtio).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`, with `GSO_ECN` possibly set.
    pub gso_type: u8,
    /// Length of the headers before the payload (a hint).
    pub hdr_len: u16,
    /// The segment size a super-segment is cut to.
    pub gso_size: u16,
    /// Where the checksummed part starts, from the Ethernet header.
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

/// Length of [`VnetHdr`] on the wire.
pub const VNET_HDR_SIZE: usize = 10;

impl VnetHdr {
    /// Reads the header from the first 10 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<VnetHdr, Error> {
        let b = bytes.get(..VNET_HDR_SIZE).ok_or(Error::ShortIov {
            have: bytes.len(),
            need: VNET_HDR_SIZE,
        })?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// The header's 10 bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_SIZE] {
        let mut b = [0u8; VNET_HDR_SIZE];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// What a frame from an offloading tap is, once [`finish`]ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offloaded {
    /// An ordinary frame (no longer than the MTU allows).
    Frame,
    /// A TCP super-segment (TSO): one IPv4 or IPv6 datagram of up to 64
    /// KiB that the sender would have cut into `gso_size` segments.
    TcpSegment,
}

fn bad(what: String) -> Error {
    Error::BadOffload(what)
}

/// Finishes what the header says was left undone in `frame` (the Ethernet
/// frame after the header): the checksum, if `F_NEEDS_CSUM`. Accepts GSO
/// type TCPV4, TCPV6 and none; any other (UFO, USO: not offered) is an
/// error naming it. Whether a super-segment is what it claims is for its
/// consumer to check (`slirp::Stack::input_segment` does).
pub fn finish(hdr: &VnetHdr, frame: &mut [u8]) -> Result<Offloaded, Error> {
    let kind = match hdr.gso_type & !GSO_ECN {
        GSO_NONE => Offloaded::Frame,
        GSO_TCPV4 | GSO_TCPV6 => Offloaded::TcpSegment,
        other => return Err(bad(format!("GSO type {other} was not offered"))),
    };
    if hdr.flags & F_NEEDS_CSUM != 0 {
        finish_checksum(frame, hdr.csum_start.into(), hdr.csum_offset.into())?;
    }
    Ok(kind)
}

/// Splits a record (a `hdr_len`-byte virtio-net header, 10 or 12 bytes,
/// then the frame) and [`finish`]es what its header asks of the frame.
pub fn unwrap_record(record: &mut [u8], hdr_len: usize) -> Result<(Offloaded, &mut [u8]), Error> {
    if record.len() < hdr_len {
        return Err(Error::ShortIov {
            have: record.len(),
            need: hdr_len,
        });
    }
    let (hdr, frame) = record.split_at_mut(hdr_len);
    let kind = finish(&VnetHdr::parse(hdr)?, frame)?;
    Ok((kind, frame))
}

/// Stores at `start + offset` the Internet checksum of `frame[start..]`,
/// whose checksum field holds the pseudo-header's sum (virtio 5.1.6.2).
pub fn finish_checksum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), Error> {
    let at = start + offset;
    if start >= frame.len() || at + 2 > frame.len() {
        return Err(bad(format!(
            "csum_start {start} + csum_offset {offset} is beyond the {}-byte frame",
            frame.len()
        )));
    }
    let sum = !fold(sum_be(&frame[start..], 0));
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// The one's complement sum of `data` as big-endian 16-bit words (an odd
/// last byte padded with zero), added to `acc`, not yet folded.
pub fn sum_be(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

/// Folds a sum of 16-bit words into 16 bits.
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
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

const ETH: usize = 14;
const IP4: usize = 20;
const IP6: usize = 40;
const TCP: usize = ETH + IP4;
const TCP6: usize = ETH + IP6;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
/// TCP's URG flag.
const URG: u8 = 0x20;

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
    /// a whole record (header, then frame).
    pub fn push(&mut self, frame: &[u8], emit: &mut dyn FnMut(&[u8])) {
        let wanted = |tcp: usize| if tcp == TCP { !self.no_v4 } else { !self.no_v6 };
        if let Some((tcp, payload)) = tcp_segment(frame).filter(|&(t, p)| p > 0 && wanted(t)) {
            if self.segs > 0 && self.joins(frame, tcp, payload) {
                self.append(frame, payload);
                return;
            }
            self.finish(emit);
            if frame[tcp + 13] == ACK {
                self.start(frame, tcp, payload);
                return;
            }
        } else {
            self.finish(emit);
        }
        self.rec.clear();
        self.rec.extend_from_slice(&[0u8; VNET_HDR_SIZE]);
        self.rec.extend_from_slice(frame);
        emit(&self.rec);
        self.rec.clear();
    }

    /// Hands on what is pending.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        if self.segs == 0 {
            return;
        }
        if self.segs > 1 {
            self.seal();
            self.merged += 1;
        }
        // A lone segment goes as it came, behind the empty header.
        emit(&self.rec);
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
        self.next_seq = seq(frame, tcp).wrapping_add(payload as u32);
    }

    fn joins(&self, frame: &[u8], tcp: usize, payload: usize) -> bool {
        let first = &self.rec[VNET_HDR_SIZE..];
        if self.closed || tcp != self.tcp {
            return false;
        }
        let hdr = tcp + tcp_hdr_len(first, tcp);
        let flags = frame[tcp + 13];
        // The IP header but for what differs segment to segment: IPv4's
        // length, identification and checksum; IPv6's payload length.
        let ip_same = if tcp == TCP {
            frame[..ETH + 2] == first[..ETH + 2]
                && frame[ETH + 6..ETH + 10] == first[ETH + 6..ETH + 10]
                && frame[ETH + 12..TCP] == first[ETH + 12..TCP]
        } else {
            frame[..ETH + 4] == first[..ETH + 4] && frame[ETH + 6..tcp] == first[ETH + 6..tcp]
        };
        frame.len() - payload == hdr
            && (flags == ACK || flags == ACK | PSH)
            && payload <= self.gso_size
            && seq(frame, tcp) == self.next_seq
            && self.rec.len() - VNET_HDR_SIZE - ETH + payload <= usize::from(u16::MAX)
            && ip_same
            // TCP: ports; ack, offset; window; urgent pointer, options.
            && frame[tcp..tcp + 4] == first[tcp..tcp + 4]
            && frame[tcp + 8..tcp + 13] == first[tcp + 8..tcp + 13]
            && frame[tcp + 14..tcp + 16] == first[tcp + 14..tcp + 16]
            && frame[tcp + 18..hdr] == first[tcp + 18..hdr]
    }

    fn append(&mut self, frame: &[u8], payload: usize) {
        let (tcp, hdr) = (self.tcp, frame.len() - payload);
        self.rec.extend_from_slice(&frame[hdr..]);
        // The last segment's flags (PSH) stand for the whole.
        self.rec[VNET_HDR_SIZE + tcp + 13] = frame[tcp + 13];
        self.segs += 1;
        self.next_seq = self.next_seq.wrapping_add(payload as u32);
        self.closed = payload < self.gso_size || frame[tcp + 13] != ACK;
    }

    /// Writes the header, the IP lengths (and IPv4's header checksum) and
    /// the TCP checksum field (the pseudo-header's sum, for the kernel to
    /// finish) of a merged record.
    fn seal(&mut self) {
        let tcp = self.tcp;
        let (hdr, frame) = self.rec.split_at_mut(VNET_HDR_SIZE);
        let tcp_len = tcp_hdr_len(frame, tcp);
        let ip = &mut frame[ETH..];
        let ip_len = ip.len();
        let l4_len = (ip_len - (tcp - ETH)) as u64;
        let (gso_type, pseudo) = if tcp == TCP {
            ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            ip[10..12].copy_from_slice(&[0, 0]);
            let c = !fold(sum_be(&ip[..IP4], 0));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            (GSO_TCPV4, fold(sum_be(&ip[12..IP4], 0) + 6 + l4_len))
        } else {
            ip[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            (GSO_TCPV6, fold(sum_be(&ip[8..IP6], 0) + 6 + l4_len))
        };
        let at = tcp - ETH + 16;
        ip[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
            hdr_len: (tcp + tcp_len) as u16,
            gso_size: self.gso_size as u16,
            csum_start: tcp as u16,
            csum_offset: 16,
        };
        hdr.copy_from_slice(&h.to_bytes());
    }
}

/// Cuts a TCP super-segment (IPv4 or IPv6, from a TSO sender or a
/// [`Coalescer`]) into IP datagrams of at most `mtu` bytes with complete
/// checksums, as a NIC doing TSO would: each with the first one's headers,
/// its sequence number advanced, IPv4's identification counted up, CWR
/// only on the first, FIN and PSH only on the last, and no urgent data on
/// any (URG off, urgent pointer zero). Returns how many it
/// handed to `emit`; a frame that is not one TCP segment, or an `mtu` that
/// leaves no room for payload, is an error naming it.
pub fn segment(frame: &[u8], mtu: usize, emit: &mut dyn FnMut(&[u8])) -> Result<usize, Error> {
    let Some((tcp, payload)) = tcp_segment(frame) else {
        return Err(bad(format!(
            "a {}-byte frame to segment is not one TCP/IP segment",
            frame.len()
        )));
    };
    let hdr = frame.len() - payload;
    let mss = (mtu + ETH).saturating_sub(hdr);
    if mss == 0 {
        return Err(bad(format!(
            "an MTU of {mtu} leaves no room for payload after {} bytes of headers",
            hdr - ETH
        )));
    }
    let (flags, seq0) = (frame[tcp + 13], seq(frame, tcp));
    let id0 = u16::from_be_bytes([frame[ETH + 4], frame[ETH + 5]]);
    let mut out = Vec::with_capacity(hdr + mss.min(payload));
    let n = payload.div_ceil(mss).max(1);
    for i in 0..n {
        let last = i + 1 == n;
        out.clear();
        out.extend_from_slice(&frame[..hdr]);
        out.extend_from_slice(&frame[hdr + i * mss..frame.len().min(hdr + (i + 1) * mss)]);
        let ip_len = out.len() - ETH;
        let l4_len = ip_len - (tcp - ETH);
        if tcp == TCP {
            let ip = &mut out[ETH..TCP];
            ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            ip[10..12].copy_from_slice(&[0, 0]);
            let c = !fold(sum_be(ip, 0));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            out[ETH + 4..ETH + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        let seq_i = seq0.wrapping_add((i * mss) as u32);
        out[tcp + 4..tcp + 8].copy_from_slice(&seq_i.to_be_bytes());
        let mut f = flags;
        if i > 0 {
            f &= !0x80; // CWR
        }
        if !last {
            f &= !(0x01 | PSH); // FIN, PSH
        }
        // Never urgent data: a pointer copied onto every piece would point
        // past most of them (libslirp then invents bytes).
        out[tcp + 13] = f & !URG;
        out[tcp + 18..tcp + 20].copy_from_slice(&[0, 0]);
        out[tcp + 16..tcp + 18].copy_from_slice(&[0, 0]);
        let addrs = if tcp == TCP {
            &out[ETH + 12..TCP]
        } else {
            &out[ETH + 8..TCP6]
        };
        let pseudo = sum_be(addrs, 0) + 6 + l4_len as u64;
        let c = !fold(sum_be(&out[tcp..], pseudo));
        out[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
        emit(&out);
    }
    Ok(n)
}

/// Whether the TCP checksum of a frame [`tcp4_payload`] accepted adds up.
pub(crate) fn tcp4_checksum_ok(frame: &[u8]) -> bool {
    let tcp = &frame[TCP..];
    let pseudo = sum_be(&frame[ETH + 12..TCP], 0) + 6 + tcp.len() as u64;
    fold(sum_be(tcp, pseudo)) == 0xffff
}

/// The TCP header length of a frame whose TCP header starts at `tcp`.
fn tcp_hdr_len(frame: &[u8], tcp: usize) -> usize {
    usize::from(frame[tcp + 12] >> 4) * 4
}

fn seq(frame: &[u8], tcp: usize) -> u32 {
    u32::from_be_bytes([
        frame[tcp + 4],
        frame[tcp + 5],
        frame[tcp + 6],
        frame[tcp + 7],
    ])
}

/// The TCP payload length of a frame that is one TCP/IPv4 segment without
/// IPv4 options, unfragmented, with no padding after it; `None` otherwise.
pub(crate) fn tcp4_payload(frame: &[u8]) -> Option<usize> {
    tcp_segment(frame).and_then(|(tcp, p)| (tcp == TCP).then_some(p))
}

/// Where the TCP header starts and how long the payload is, for a frame
/// that is one TCP segment with no padding after it, over IPv4 without
/// options and unfragmented or IPv6 without extension headers; `None`
/// otherwise.
pub(crate) fn tcp_segment(frame: &[u8]) -> Option<(usize, usize)> {
    let (tcp, ip_len) = match frame.get(12..14)? {
        [0x08, 0x00] if frame.len() >= TCP + 20 => {
            let ip = &frame[ETH..];
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
            if ip[0] != 0x45 || ip[9] != 6 || frag != 0 || total != ip.len() {
                return None;
            }
            (TCP, total)
        }
        [0x86, 0xdd] if frame.len() >= TCP6 + 20 => {
            let ip = &frame[ETH..];
            let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if ip[0] >> 4 != 6 || ip[6] != 6 || IP6 + payload != ip.len() {
                return None;
            }
            (TCP6, ip.len())
        }
        _ => return None,
    };
    let tcp_len = tcp_hdr_len(frame, tcp);
    if tcp_len < 20 || tcp - ETH + tcp_len > ip_len {
        return None;
    }
    Some((tcp, ip_len - (tcp - ETH) - tcp_len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A TCP/IPv4 frame from 10.0.2.100:40000 to 10.0.2.2:5201 with
    /// `payload`, checksums complete.
    fn tcp4(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = (20 + 20 + payload.len()) as u16;
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 2, 100]);
        ip[16..20].copy_from_slice(&[10, 0, 2, 2]);
        let c = !fold(sum_be(ip, 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let tcp = &mut f[34..54];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = 0x18;
        tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
        f.extend_from_slice(payload);
        let c = !fold(sum_be(&f[34..], pseudo(&f)));
        f[50..52].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn pseudo(f: &[u8]) -> u64 {
        let len = (f.len() - 34) as u64;
        sum_be(&f[26..34], 0) + 6 + len
    }

    /// `f` as a sender with checksum offload leaves it: the TCP checksum
    /// field holds the folded pseudo-header sum, not complemented.
    fn partial(f: &[u8]) -> Vec<u8> {
        let mut p = f.to_vec();
        let s = fold(pseudo(&p));
        p[50..52].copy_from_slice(&s.to_be_bytes());
        p
    }

    fn needs_csum() -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..VnetHdr::default()
        }
    }

    #[test]
    fn a_record_shorter_than_its_header_is_an_error_not_a_panic() {
        assert!(unwrap_record(&mut [0u8; 5], VNET_HDR_SIZE).is_err());
        let mut rec = vec![0u8; 12 + 60];
        let (kind, frame) = unwrap_record(&mut rec, 12).unwrap();
        assert_eq!((kind, frame.len()), (Offloaded::Frame, 60));
    }

    #[test]
    fn a_header_reads_back_what_was_written() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.to_bytes()).unwrap(), h);
        assert!(VnetHdr::parse(&[0u8; 9]).is_err());
    }

    #[test]
    fn a_partial_checksum_is_finished_as_the_sender_would_have() {
        for len in [0, 1, 2, 3, 1448, 1449, 65495] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let whole = tcp4(&payload);
            let mut p = partial(&whole);
            let h = needs_csum();
            let kind = finish(&h, &mut p).unwrap();
            assert_eq!(p, whole, "payload of {len}");
            assert_eq!(kind, Offloaded::Frame);
        }
    }

    #[test]
    fn a_super_segment_is_told_from_a_frame() {
        let whole = tcp4(&vec![0x5a; 60_000]);
        let mut p = partial(&whole);
        let h = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1448,
            ..needs_csum()
        };
        assert_eq!(finish(&h, &mut p).unwrap(), Offloaded::TcpSegment);
        assert_eq!(p, whole);
    }

    #[test]
    fn offsets_beyond_the_frame_and_gso_types_not_offered_are_refused() {
        let mut f = tcp4(b"x");
        for (start, offset) in [(55, 0), (54, 0), (34, 20), (53, 1), (u16::MAX, u16::MAX)] {
            let h = VnetHdr {
                flags: F_NEEDS_CSUM,
                csum_start: start,
                csum_offset: offset,
                ..VnetHdr::default()
            };
            let before = f.clone();
            let e = finish(&h, &mut f).unwrap_err().to_string();
            assert!(e.contains(&format!("csum_start {start}")), "{e}");
            assert_eq!(f, before, "nothing written");
        }
        for t in [GSO_UDP, GSO_UDP_L4, 9] {
            let h = VnetHdr {
                gso_type: t,
                ..VnetHdr::default()
            };
            let e = finish(&h, &mut f).unwrap_err().to_string();
            assert!(e.contains(&format!("GSO type {t}")), "{e}");
        }
    }

    /// A TCP/IPv4 segment with sequence number `seq` and `flags`.
    fn seg(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = tcp4(payload);
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        f[47] = flags;
        let c = !fold(sum_be(
            &{
                let mut t = f[34..].to_vec();
                t[16..18].copy_from_slice(&[0, 0]);
                t
            },
            pseudo(&f),
        ));
        f[50..52].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn run(frames: &[Vec<u8>]) -> (Vec<Vec<u8>>, u64) {
        let mut c = Coalescer::default();
        let mut out = Vec::new();
        for f in frames {
            c.push(f, &mut |r| out.push(r.to_vec()));
        }
        c.finish(&mut |r| out.push(r.to_vec()));
        (out, c.merged())
    }

    #[test]
    fn segments_in_sequence_become_one_gso_frame() {
        let data: Vec<u8> = (0..3896u32).map(|i| (i * 13) as u8).collect();
        let frames = [
            seg(1000, ACK, &data[..1448]),
            seg(2448, ACK, &data[1448..2896]),
            seg(3896, ACK | PSH, &data[2896..]),
        ];
        let (out, merged) = run(&frames);
        assert_eq!((out.len(), merged), (1, 1));
        let rec = &out[0];
        let h = VnetHdr::parse(rec).unwrap();
        assert_eq!(h.gso_type, GSO_TCPV4);
        assert_eq!(h.flags, F_NEEDS_CSUM);
        assert_eq!(
            (h.gso_size, h.hdr_len, h.csum_start, h.csum_offset),
            (1448, 54, 34, 16)
        );
        // What the kernel makes of it: one segment of all the data, from
        // the first sequence number, its checksums right once finished.
        let mut frame = rec[VNET_HDR_SIZE..].to_vec();
        finish(&h, &mut frame).unwrap();
        assert_eq!(frame, seg(1000, ACK | PSH, &data));
    }

    #[test]
    fn what_cannot_merge_goes_alone_in_order() {
        let p = [7u8; 1448];
        let udp = {
            let mut f = tcp4(b"x");
            f[14 + 9] = 17;
            f
        };
        let other_port = {
            let mut f = seg(2448, ACK, &p);
            f[34] ^= 1;
            f
        };
        let frames = [
            seg(1000, ACK, &p),
            udp.clone(), // not TCP: ends the run
            seg(2448, ACK, &p),
            seg(9999, ACK, &p),       // a gap
            other_port.clone(),       // another flow
            seg(1, ACK, &[]),         // a pure ACK
            seg(5000, ACK | PSH, &p), // PSH cannot start a run
            seg(6448, ACK, &p),
        ];
        let (out, merged) = run(&frames);
        assert_eq!(merged, 0);
        assert_eq!(out.len(), frames.len());
        for (rec, f) in out.iter().zip(&frames) {
            assert_eq!(&rec[..VNET_HDR_SIZE], &[0u8; VNET_HDR_SIZE]);
            assert_eq!(&rec[VNET_HDR_SIZE..], &f[..]);
        }
    }

    #[test]
    fn a_short_or_pushed_segment_ends_the_run_and_64_kib_is_the_limit() {
        let p = [1u8; 1448];
        let (out, _) = run(&[
            seg(0, ACK, &p),
            seg(1448, ACK, &p[..100]),
            seg(1548, ACK, &p),
        ]);
        assert_eq!(out.len(), 2, "nothing joins after a short segment");
        let (out, _) = run(&[
            seg(0, ACK, &p),
            seg(1448, ACK | PSH, &p),
            seg(2896, ACK, &p),
        ]);
        assert_eq!(out.len(), 2, "nothing joins after PSH");
        let frames: Vec<Vec<u8>> = (0..60).map(|i| seg(i * 1448, ACK, &p)).collect();
        let (out, merged) = run(&frames);
        assert_eq!(merged, 2);
        for rec in &out {
            assert!(rec.len() - VNET_HDR_SIZE - 14 <= 65_535);
        }
        let total: usize = out.iter().map(|r| r.len() - VNET_HDR_SIZE - 54).sum();
        assert_eq!(total, 60 * 1448);
    }

    /// A TCP segment from [fd00::100]:40000 to [fd00::2]:5201 (or the
    /// IPv4 `seg`'s addresses, with IPv4 identification `id`), checksums
    /// complete.
    fn seg_ip(v6: bool, id: u16, seq_no: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        if !v6 {
            let mut f = seg(seq_no, flags, payload);
            f[18..20].copy_from_slice(&id.to_be_bytes());
            f[24..26].copy_from_slice(&[0, 0]);
            let c = !fold(sum_be(&f[14..34], 0));
            f[24..26].copy_from_slice(&c.to_be_bytes());
            return f;
        }
        let mut f = vec![0u8; 14 + 40 + 20];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        let ip = &mut f[14..54];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        ip[6] = 6;
        ip[7] = 64;
        ip[8..10].copy_from_slice(&[0xfd, 0]);
        ip[23] = 0x100u16 as u8;
        ip[22] = 1;
        ip[24..26].copy_from_slice(&[0xfd, 0]);
        ip[39] = 2;
        let tcp = &mut f[54..74];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq_no.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
        f.extend_from_slice(payload);
        let l4 = (f.len() - 54) as u64;
        let c = !fold(sum_be(&f[54..], sum_be(&f[22..54], 0) + 6 + l4));
        f[70..72].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn ipv6_segments_in_sequence_become_one_tcpv6_gso_frame() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 11) as u8).collect();
        let frames = [
            seg_ip(true, 0, 7, ACK, &data[..1428]),
            seg_ip(true, 0, 7 + 1428, ACK, &data[1428..2856]),
            seg_ip(true, 0, 7 + 2856, ACK | PSH, &data[2856..]),
        ];
        let (out, merged) = run(&frames);
        assert_eq!((out.len(), merged), (1, 1));
        let h = VnetHdr::parse(&out[0]).unwrap();
        assert_eq!(
            (
                h.gso_type,
                h.flags,
                h.gso_size,
                h.hdr_len,
                h.csum_start,
                h.csum_offset
            ),
            (GSO_TCPV6, F_NEEDS_CSUM, 1428, 74, 54, 16)
        );
        let mut frame = out[0][VNET_HDR_SIZE..].to_vec();
        assert_eq!(finish(&h, &mut frame).unwrap(), Offloaded::TcpSegment);
        assert_eq!(frame, seg_ip(true, 0, 7, ACK | PSH, &data));
        // An IPv4 and an IPv6 segment of the same ports never join.
        let mixed = [
            seg_ip(true, 0, 0, ACK, &data[..100]),
            seg(100, ACK, &data[..100]),
        ];
        assert_eq!(run(&mixed).1, 0);
        // A guest that accepted GUEST_TSO4 only gets IPv6 segments as
        // they were, IPv4 ones merged.
        let mut c = Coalescer::new(true, false);
        let mut out = Vec::new();
        let v4 = [seg(0, ACK, &data[..1000]), seg(1000, ACK, &data[..1000])];
        for f in frames.iter().chain(&v4) {
            c.push(f, &mut |r| out.push(r.to_vec()));
        }
        c.finish(&mut |r| out.push(r.to_vec()));
        assert_eq!((out.len(), c.merged()), (4, 1));
        for (rec, f) in out.iter().zip(&frames) {
            assert_eq!(&rec[..VNET_HDR_SIZE], &[0u8; VNET_HDR_SIZE]);
            assert_eq!(&rec[VNET_HDR_SIZE..], &f[..]);
        }
    }

    #[test]
    fn segmenting_refuses_what_is_not_one_tcp_segment_or_leaves_no_room() {
        let mut udp = tcp4(b"abc");
        udp[14 + 9] = 17;
        let e = segment(&udp, 1500, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("not one TCP/IP segment"), "{e}");
        let e = segment(&seg_ip(true, 0, 0, ACK, b"abc"), 60, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("MTU of 60"), "{e}");
        // No payload: the one segment as it is.
        let pure = seg_ip(true, 0, 5, ACK, b"");
        let mut got = Vec::new();
        assert_eq!(
            segment(&pure, 1500, &mut |f| got.push(f.to_vec())).unwrap(),
            1
        );
        assert_eq!(got, vec![pure]);
    }

    proptest! {
        /// What a sender's segments become through the coalescer and back
        /// through software segmentation is those segments, byte for byte:
        /// headers, flags, IPv4 identifications and checksums.
        #[test]
        fn merging_then_segmenting_gives_back_the_segments(
            v6 in any::<bool>(),
            mss in 1usize..1500,
            full in 1usize..12,
            tail in 0usize..1500,
            fin in any::<bool>(),
            seq0 in any::<u32>(),
            id0 in any::<u16>(),
        ) {
            let tail = tail % mss;
            let sizes: Vec<usize> = std::iter::repeat_n(mss, full).chain((tail > 0).then_some(tail)).collect();
            let mut frames = Vec::new();
            let mut at = seq0;
            for (i, &n) in sizes.iter().enumerate() {
                let last = i + 1 == sizes.len();
                let flags = if last { ACK | PSH } else { ACK };
                let payload: Vec<u8> = (0..n).map(|k| (k * 31 + i) as u8).collect();
                frames.push(seg_ip(v6, id0.wrapping_add(i as u16), at, flags, &payload));
                at = at.wrapping_add(n as u32);
            }
            let (out, _) = run(&frames);
            prop_assert_eq!(out.len(), 1);
            let h = VnetHdr::parse(&out[0]).unwrap();
            let mut frame = out[0][VNET_HDR_SIZE..].to_vec();
            finish(&h, &mut frame).unwrap();
            let hdr = if v6 { 74 } else { 54 };
            let mtu = hdr - 14 + mss;
            let mut back = Vec::new();
            let n = segment(&frame, mtu, &mut |f| back.push(f.to_vec())).unwrap();
            prop_assert_eq!(n, frames.len());
            if fin {
                // A FIN on the whole lands on the last segment only.
                let mut with_fin = frame.clone();
                with_fin[hdr - 20 + 13] |= 0x01;
                let mut last = Vec::new();
                segment(&with_fin, mtu, &mut |f| last = f.to_vec()).unwrap();
                prop_assert_eq!(last[hdr - 20 + 13], ACK | PSH | 0x01);
            }
            prop_assert_eq!(back, frames.to_vec());
        }

        /// Whatever a hostile guest puts in a super-segment's headers,
        /// segmenting it never panics and never emits more than the MTU.
        #[test]
        fn segmenting_a_scribbled_frame_never_panics_or_exceeds_the_mtu(
            v6 in any::<bool>(),
            len in 0usize..5000,
            pokes in proptest::collection::vec((0usize..80, any::<u8>()), 0..6),
            cut in 0usize..100,
            mtu in 0usize..2000,
        ) {
            let payload: Vec<u8> = (0..len).map(|k| k as u8).collect();
            let mut f = seg_ip(v6, 1, 2, ACK, &payload);
            for (at, b) in pokes {
                if at < f.len() {
                    f[at] = b;
                }
            }
            f.truncate(f.len().saturating_sub(cut));
            let _ = segment(&f, mtu, &mut |s| assert!(s.len() <= mtu + ETH));
        }

        #[test]
        fn finish_never_panics(hdr in proptest::array::uniform10(any::<u8>()),
                               frame in proptest::collection::vec(any::<u8>(), 0..200)) {
            let h = VnetHdr::parse(&hdr).unwrap();
            let mut f = frame;
            let _ = finish(&h, &mut f);
        }

        #[test]
        fn coalescing_keeps_every_byte_in_order(
            sizes in proptest::collection::vec(0usize..1600, 0..40),
            gaps in proptest::collection::vec(any::<bool>(), 40),
        ) {
            let mut frames = Vec::new();
            let mut seq_no = 0u32;
            for (i, &n) in sizes.iter().enumerate() {
                if gaps[i] { seq_no += 7; }
                let payload: Vec<u8> = (0..n).map(|k| (k + i) as u8).collect();
                frames.push(seg(seq_no, ACK, &payload));
                seq_no += n as u32;
            }
            let (out, _) = run(&frames);
            // The payload of every record, in order, is the payload of
            // every frame, in order.
            let want: Vec<u8> = frames.iter().flat_map(|f| f[54..].to_vec()).collect();
            let got: Vec<u8> = out.iter().flat_map(|r| r[VNET_HDR_SIZE + 54..].to_vec()).collect();
            prop_assert_eq!(got, want);
            prop_assert!(out.len() <= frames.len());
        }

        #[test]
        fn wide_sums_are_the_sum_of_words(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut acc = 0u64;
            for pair in data.chunks(2) {
                let w = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
                acc += u64::from(w);
            }
            prop_assert_eq!(fold(sum_be(&data, 0)), fold(acc));
        }
    }
}
