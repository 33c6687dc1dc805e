//! The TCP header: a checked view of a segment, and telling one TCP
//! segment from other frames for IPv4 without options (unfragmented) and
//! IPv6 without extension headers, the only segments anything here
//! merges, cuts or thins.

use super::checksum::{fold, sum_be};
use super::ethernet::{Ethernet, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use super::ipv4::{Ipv4, PROTO_TCP};
use super::ipv6::Ipv6;
use super::{bad, FrameError, ETH_HLEN as ETH};

pub use super::ipv4::IP4;
pub use super::ipv6::IP6;

/// The header's length without options.
pub const TCP_HLEN: usize = 20;
/// Where the TCP header starts behind Ethernet and IPv4 (no options).
pub const TCP: usize = ETH + IP4;
/// Where the TCP header starts behind Ethernet and IPv6.
pub const TCP6: usize = ETH + IP6;
/// TCP's FIN flag.
pub const FIN: u8 = 0x01;
/// TCP's SYN flag.
pub const SYN: u8 = 0x02;
/// TCP's RST flag.
pub const RST: u8 = 0x04;
/// TCP's PSH flag.
pub const PSH: u8 = 0x08;
/// TCP's ACK flag.
pub const ACK: u8 = 0x10;
/// TCP's URG flag.
pub const URG: u8 = 0x20;
/// TCP's CWR flag.
pub const CWR: u8 = 0x80;

/// Where each field sits in the header, for code that compares or copies
/// header ranges (the coalescer matching a flow's segments).
pub mod field {
    use std::ops::Range;
    /// Source and destination ports.
    pub const PORTS: Range<usize> = 0..4;
    /// The sequence number.
    pub const SEQ: Range<usize> = 4..8;
    /// The acknowledgment number.
    pub const ACK: Range<usize> = 8..12;
    /// The data offset (high nibble).
    pub const DOFF: usize = 12;
    /// The flags.
    pub const FLAGS: usize = 13;
    /// The window.
    pub const WINDOW: Range<usize> = 14..16;
    /// The checksum.
    pub const CHECKSUM: Range<usize> = 16..18;
    /// The urgent pointer.
    pub const URGENT: Range<usize> = 18..20;
}

/// A TCP segment whose header (options included) is whole; after
/// [`new_checked`](Tcp::new_checked) no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Tcp<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> Tcp<T> {
    /// The view, or what is wrong with the header in `buf` (the whole
    /// segment: header, options and payload).
    pub fn new_checked(buf: T) -> Result<Tcp<T>, FrameError> {
        let b = buf.as_ref();
        if b.len() < TCP_HLEN {
            return Err(FrameError::Short {
                have: b.len(),
                need: TCP_HLEN,
            });
        }
        let doff = usize::from(b[field::DOFF] >> 4) * 4;
        if doff < TCP_HLEN || doff > b.len() {
            return Err(bad(format!(
                "TCP data offset {doff} in a {}-byte segment",
                b.len()
            )));
        }
        Ok(Tcp(buf))
    }

    fn b(&self) -> &[u8] {
        self.0.as_ref()
    }

    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        u16::from_be_bytes([self.b()[r.start], self.b()[r.start + 1]])
    }

    fn u32_at(&self, r: std::ops::Range<usize>) -> u32 {
        let b = &self.b()[r];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        self.u16_at(0..2)
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        self.u16_at(2..4)
    }

    /// Both ports, as the header holds them.
    pub fn ports(&self) -> &[u8] {
        &self.b()[field::PORTS]
    }

    /// The sequence number.
    pub fn seq(&self) -> u32 {
        self.u32_at(field::SEQ)
    }

    /// The acknowledgment number.
    pub fn ack(&self) -> u32 {
        self.u32_at(field::ACK)
    }

    /// The header's length, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::DOFF] >> 4) * 4
    }

    /// The flags byte (FIN to CWR).
    pub fn flags(&self) -> u8 {
        self.b()[field::FLAGS]
    }

    /// The window, unscaled.
    pub fn window(&self) -> u16 {
        self.u16_at(field::WINDOW)
    }

    /// The urgent pointer.
    pub fn urgent_ptr(&self) -> u16 {
        self.u16_at(field::URGENT)
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    /// Whether it carries urgent data: the URG flag, or an urgent pointer.
    pub fn is_urgent(&self) -> bool {
        self.flags() & URG != 0 || self.urgent_ptr() != 0
    }

    /// The options.
    pub fn options(&self) -> &[u8] {
        &self.b()[TCP_HLEN..self.header_len()]
    }

    /// The maximum segment size its options announce (kind 2), if any;
    /// options cut short end the search.
    pub fn mss(&self) -> Option<u16> {
        let mut o = self.options();
        while let Some((&kind, rest)) = o.split_first() {
            match kind {
                0 => return None,
                1 => o = rest,
                _ => {
                    let len = usize::from(*rest.first()?);
                    if len < 2 || len > o.len() {
                        return None;
                    }
                    if kind == 2 && len == 4 {
                        return Some(u16::from_be_bytes([o[2], o[3]]));
                    }
                    o = &o[len..];
                }
            }
        }
        None
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }

    /// Whether the checksum adds up, given the pseudo-header's sum.
    pub fn checksum_ok(&self, pseudo: u64) -> bool {
        fold(sum_be(self.b(), pseudo)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Tcp<T> {
    /// Sets the sequence number.
    pub fn set_seq(&mut self, seq: u32) {
        self.0.as_mut()[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    }

    /// Sets the flags byte.
    pub fn set_flags(&mut self, flags: u8) {
        self.0.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_ptr(&mut self, ptr: u16) {
        self.0.as_mut()[field::URGENT].copy_from_slice(&ptr.to_be_bytes());
    }

    /// Sets the checksum field as it is (a partial sum for an offload, or
    /// a finished one).
    pub fn set_checksum(&mut self, sum: u16) {
        self.0.as_mut()[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }

    /// Computes and stores the checksum, given the pseudo-header's sum.
    pub fn fill_checksum(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let c = !fold(sum_be(self.0.as_ref(), pseudo));
        self.set_checksum(c);
    }
}

/// Where the TCP header starts and how long the payload is, for a frame
/// that is one TCP segment with no padding after it, over IPv4 without
/// options and unfragmented or IPv6 without extension headers; `None`
/// otherwise.
pub fn tcp_segment(frame: &[u8]) -> Option<(usize, usize)> {
    let eth = Ethernet::new_checked(frame).ok()?;
    let ip = eth.payload();
    let (tcp, segment) = match eth.ethertype() {
        ETHERTYPE_IPV4 => {
            let v4 = Ipv4::new_checked(ip).ok()?;
            let whole = v4.header_len() == IP4 && v4.total_len() == ip.len();
            if !whole || v4.protocol() != PROTO_TCP || v4.is_fragment() {
                return None;
            }
            (TCP, v4.into_payload())
        }
        ETHERTYPE_IPV6 => {
            let v6 = Ipv6::new_checked(ip).ok()?;
            if v6.next_header() != PROTO_TCP || IP6 + v6.payload_len() != ip.len() {
                return None;
            }
            (TCP6, v6.into_payload())
        }
        _ => return None,
    };
    let t = Tcp::new_checked(segment).ok()?;
    Some((tcp, t.payload().len()))
}

/// The TCP view of a frame [`tcp_segment`] accepted, whose TCP header
/// starts at `tcp`.
///
/// # Panics
/// If the frame was not accepted by [`tcp_segment`] with that offset.
pub fn tcp_at(frame: &[u8], tcp: usize) -> Tcp<&[u8]> {
    Tcp::new_checked(&frame[tcp..]).expect("a frame tcp_segment accepted")
}

/// The TCP payload length of a frame that is one TCP/IPv4 segment without
/// IPv4 options, unfragmented, with no padding after it; `None` otherwise.
pub fn tcp4_payload(frame: &[u8]) -> Option<usize> {
    tcp_segment(frame).and_then(|(tcp, p)| (tcp == TCP).then_some(p))
}

/// Whether the TCP checksum of a frame [`tcp4_payload`] accepted adds up.
pub fn tcp4_checksum_ok(frame: &[u8]) -> bool {
    let (Ok(ip), Ok(tcp)) = (
        Ipv4::new_checked(&frame[ETH..]),
        Tcp::new_checked(&frame[TCP..]),
    ) else {
        return false;
    };
    tcp.checksum_ok(ip.pseudo_sum(frame.len() - TCP))
}
