//! Offloads on a virtio-net header (a tap opened with `IFF_VNET_HDR`): the
//! header's fields, finishing a checksum the sender left partial
//! (`VIRTIO_NET_HDR_F_NEEDS_CSUM`), and telling a TCP super-segment (TSO,
//! up to 64 KiB) from a frame.
//!
//! With `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4)` the kernel hands a tap's
//! reader frames whose TCP or UDP checksum is only the pseudo-header's sum,
//! and whole TCP/IPv4 super-segments of up to 64 KiB: one read, one
//! libslirp input and one host `send` for what would be some forty
//! frames. libslirp verifies checksums, so they are finished here first.
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
    /// A TCP/IPv4 super-segment (TSO): one IPv4 datagram of up to 64 KiB
    /// that the sender would have cut into `gso_size` segments.
    TcpSegment,
}

fn bad(what: String) -> Error {
    Error::BadOffload(what)
}

/// Finishes what the header says was left undone in `frame` (the Ethernet
/// frame after the header): the checksum, if `F_NEEDS_CSUM`. Accepts GSO
/// type TCPV4 and none; any other (TCPv6, UFO, USO: not offered) is an
/// error naming it. Whether a super-segment is what it claims is for its
/// consumer to check (`slirp::Stack::input_segment` does).
pub fn finish(hdr: &VnetHdr, frame: &mut [u8]) -> Result<Offloaded, Error> {
    let kind = match hdr.gso_type & !GSO_ECN {
        GSO_NONE => Offloaded::Frame,
        GSO_TCPV4 => Offloaded::TcpSegment,
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

/// Merges consecutive TCP/IPv4 segments of one flow, in sequence, into
/// one GSO frame (`GSO_TCPV4`, `NEEDS_CSUM`) for a tap opened with a
/// virtio-net header, and hands every other frame on behind an empty
/// header: the way a round of libslirp's output reaches the namespace in
/// a few writes instead of one per segment. The kernel takes a merged
/// frame as if its NIC had coalesced the segments (GRO).
///
/// Merged: IPv4 without options and not fragmented; TCP segments with the
/// first one's headers but for the IPv4 identification, length and
/// checksum and the TCP sequence number (the same addresses, ports, ack,
/// window and options; flags ACK, the last one may add PSH), each carrying
/// as much payload as the first but the last, which may carry less; at
/// most 64 KiB in all.
#[derive(Debug, Default)]
pub struct Coalescer {
    /// The record being built: header, then the merged frame.
    rec: Vec<u8>,
    /// Segments in it (0: nothing pending).
    segs: usize,
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
const TCP: usize = ETH + IP4;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

impl Coalescer {
    /// Takes one frame; whatever can no longer grow is handed to `emit` as
    /// a whole record (header, then frame).
    pub fn push(&mut self, frame: &[u8], emit: &mut dyn FnMut(&[u8])) {
        if let Some(payload) = tcp4_payload(frame).filter(|&p| p > 0) {
            if self.segs > 0 && self.joins(frame, payload) {
                self.append(frame, payload);
                return;
            }
            self.finish(emit);
            if frame[TCP + 13] == ACK {
                self.start(frame, payload);
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

    fn start(&mut self, frame: &[u8], payload: usize) {
        self.rec.clear();
        self.rec.extend_from_slice(&[0u8; VNET_HDR_SIZE]);
        self.rec.extend_from_slice(frame);
        self.segs = 1;
        self.gso_size = payload;
        self.closed = false;
        self.next_seq = seq(frame).wrapping_add(payload as u32);
    }

    fn joins(&self, frame: &[u8], payload: usize) -> bool {
        let first = &self.rec[VNET_HDR_SIZE..];
        let hdr = TCP + tcp_hdr_len(first);
        let flags = frame[TCP + 13];
        !self.closed
            && frame.len() - payload == hdr
            && (flags == ACK || flags == ACK | PSH)
            && payload <= self.gso_size
            && seq(frame) == self.next_seq
            && self.rec.len() - VNET_HDR_SIZE - ETH + payload <= usize::from(u16::MAX)
            // Ethernet; IPv4 version to TOS, flags to protocol, addresses.
            && frame[..ETH + 2] == first[..ETH + 2]
            && frame[ETH + 6..ETH + 10] == first[ETH + 6..ETH + 10]
            && frame[ETH + 12..TCP] == first[ETH + 12..TCP]
            // TCP: ports; ack, offset; window; urgent pointer, options.
            && frame[TCP..TCP + 4] == first[TCP..TCP + 4]
            && frame[TCP + 8..TCP + 13] == first[TCP + 8..TCP + 13]
            && frame[TCP + 14..TCP + 16] == first[TCP + 14..TCP + 16]
            && frame[TCP + 18..hdr] == first[TCP + 18..hdr]
    }

    fn append(&mut self, frame: &[u8], payload: usize) {
        let hdr = frame.len() - payload;
        self.rec.extend_from_slice(&frame[hdr..]);
        // The last segment's flags (PSH) stand for the whole.
        self.rec[VNET_HDR_SIZE + TCP + 13] = frame[TCP + 13];
        self.segs += 1;
        self.next_seq = self.next_seq.wrapping_add(payload as u32);
        self.closed = payload < self.gso_size || frame[TCP + 13] != ACK;
    }

    /// Writes the header, and the IPv4 length and checksum and the TCP
    /// checksum field (the pseudo-header's sum, for the kernel to finish)
    /// of a merged record.
    fn seal(&mut self) {
        let (hdr, frame) = self.rec.split_at_mut(VNET_HDR_SIZE);
        let tcp_len = tcp_hdr_len(frame);
        let ip = &mut frame[ETH..];
        let ip_len = ip.len();
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = !fold(sum_be(&ip[..IP4], 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let pseudo = fold(sum_be(&ip[12..20], 0) + 6 + (ip_len - IP4) as u64);
        ip[IP4 + 16..IP4 + 18].copy_from_slice(&pseudo.to_be_bytes());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: (TCP + tcp_len) as u16,
            gso_size: self.gso_size as u16,
            csum_start: TCP as u16,
            csum_offset: 16,
        };
        hdr.copy_from_slice(&h.to_bytes());
    }
}

/// Whether the TCP checksum of a frame [`tcp4_payload`] accepted adds up.
pub(crate) fn tcp4_checksum_ok(frame: &[u8]) -> bool {
    let tcp = &frame[TCP..];
    let pseudo = sum_be(&frame[ETH + 12..TCP], 0) + 6 + tcp.len() as u64;
    fold(sum_be(tcp, pseudo)) == 0xffff
}

/// The TCP header length of a frame [`tcp4_payload`] accepted.
fn tcp_hdr_len(frame: &[u8]) -> usize {
    usize::from(frame[TCP + 12] >> 4) * 4
}

fn seq(frame: &[u8]) -> u32 {
    u32::from_be_bytes([
        frame[TCP + 4],
        frame[TCP + 5],
        frame[TCP + 6],
        frame[TCP + 7],
    ])
}

/// The TCP payload length of a frame that is one TCP/IPv4 segment without
/// IPv4 options, unfragmented, with no padding after it; `None` otherwise.
pub(crate) fn tcp4_payload(frame: &[u8]) -> Option<usize> {
    if frame.len() < TCP + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[ETH..];
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
    if ip[0] != 0x45 || ip[9] != 6 || frag != 0 || total != ip.len() {
        return None;
    }
    let tcp_len = tcp_hdr_len(frame);
    if tcp_len < 20 || IP4 + tcp_len > total {
        return None;
    }
    Some(total - IP4 - tcp_len)
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
        for t in [GSO_UDP, GSO_TCPV6, GSO_UDP_L4, 9] {
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

    proptest! {
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
