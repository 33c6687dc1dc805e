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

    proptest! {
        #[test]
        fn finish_never_panics(hdr in proptest::array::uniform10(any::<u8>()),
                               frame in proptest::collection::vec(any::<u8>(), 0..200)) {
            let h = VnetHdr::parse(&hdr).unwrap();
            let mut f = frame;
            let _ = finish(&h, &mut f);
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
