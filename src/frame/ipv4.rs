//! The IPv4 header: a checked view of a datagram.

use super::checksum::{fold, sum_be};
use super::{bad, FrameError};

/// The header's length without options.
pub const IP4: usize = 20;
/// Protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// Protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// The "more fragments" flag in the flags-and-offset word.
pub const MF: u16 = 0x2000;
/// The fragment offset (in 8-byte units) in the flags-and-offset word.
pub const OFFSET_MASK: u16 = 0x1fff;

/// An IPv4 datagram whose header is whole, version 4, its header length
/// at least 20, and its total length between the header length and the
/// buffer's (padding after it is allowed); after
/// [`new_checked`](Ipv4::new_checked) no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> Ipv4<T> {
    /// The view, or what is wrong with the header in `buf`.
    pub fn new_checked(buf: T) -> Result<Ipv4<T>, FrameError> {
        let ip = Ipv4::new_header(buf)?;
        let (ihl, total, have) = (ip.header_len(), ip.total_len(), ip.b().len());
        if total < ihl || total > have {
            return Err(bad(format!(
                "IPv4 header length {ihl} and total length {total} in {have} bytes"
            )));
        }
        Ok(ip)
    }

    /// A view of a header about to be rewritten, whose total length need
    /// not match `buf` yet: only the version and a header length that
    /// fits are checked ([`payload`](Ipv4::payload) is then cut to `buf`).
    pub fn new_header(buf: T) -> Result<Ipv4<T>, FrameError> {
        let b = buf.as_ref();
        if b.len() < IP4 {
            return Err(FrameError::Short {
                have: b.len(),
                need: IP4,
            });
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        if b[0] >> 4 != 4 || ihl < IP4 || ihl > b.len() {
            return Err(bad(format!(
                "IP version {} and header length {ihl} in {} bytes",
                b[0] >> 4,
                b.len()
            )));
        }
        Ok(Ipv4(buf))
    }

    fn b(&self) -> &[u8] {
        self.0.as_ref()
    }

    /// The header's length, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[0] & 0x0f) * 4
    }

    /// The total length field: header and payload.
    pub fn total_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.b()[2], self.b()[3]]))
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.b()[4], self.b()[5]])
    }

    /// The flags-and-offset word.
    pub fn flags_offset(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]])
    }

    /// Whether this is a fragment (more follow, or not the first).
    pub fn is_fragment(&self) -> bool {
        self.flags_offset() & (MF | OFFSET_MASK) != 0
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.b()[9]
    }

    /// The source and destination addresses, as the header holds them.
    pub fn addrs(&self) -> &[u8] {
        &self.b()[12..20]
    }

    /// The source address.
    pub fn src(&self) -> [u8; 4] {
        let b = self.b();
        [b[12], b[13], b[14], b[15]]
    }

    /// The destination address.
    pub fn dst(&self) -> [u8; 4] {
        let b = self.b();
        [b[16], b[17], b[18], b[19]]
    }

    /// The header, options included.
    pub fn header(&self) -> &[u8] {
        &self.b()[..self.header_len()]
    }

    /// Whether the header checksum adds up.
    pub fn checksum_ok(&self) -> bool {
        fold(sum_be(self.header(), 0)) == 0xffff
    }

    /// What the total length covers after the header (no padding).
    pub fn payload(&self) -> &[u8] {
        let (b, hl) = (self.b(), self.header_len());
        &b[hl..self.total_len().clamp(hl, b.len())]
    }

    /// The pseudo-header's sum for a `len`-byte transport segment.
    pub fn pseudo_sum(&self, len: usize) -> u64 {
        sum_be(self.addrs(), 0) + u64::from(self.protocol()) + len as u64
    }

    /// Whether `other`'s header (options included) is this one's but for
    /// what differs datagram to datagram in one flow: the total length,
    /// the identification and the header checksum.
    pub fn same_flow_header<U: AsRef<[u8]>>(&self, other: &Ipv4<U>) -> bool {
        let (a, b) = (self.header(), other.header());
        a.len() == b.len() && a[..2] == b[..2] && a[6..10] == b[6..10] && a[12..] == b[12..]
    }
}

impl<'a> Ipv4<&'a [u8]> {
    /// The payload, borrowed from the buffer rather than the view.
    pub fn into_payload(self) -> &'a [u8] {
        let (hl, total) = (self.header_len(), self.total_len());
        &self.0[hl..total.clamp(hl, self.0.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4<T> {
    /// Sets the total length field.
    pub fn set_total_len(&mut self, len: u16) {
        self.0.as_mut()[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, id: u16) {
        self.0.as_mut()[4..6].copy_from_slice(&id.to_be_bytes());
    }

    /// Sets the flags-and-offset word.
    pub fn set_flags_offset(&mut self, word: u16) {
        self.0.as_mut()[6..8].copy_from_slice(&word.to_be_bytes());
    }

    /// Recomputes the header checksum.
    pub fn fill_checksum(&mut self) {
        let hlen = self.header_len();
        let b = self.0.as_mut();
        b[10..12].copy_from_slice(&[0, 0]);
        let c = !fold(sum_be(&b[..hlen], 0));
        b[10..12].copy_from_slice(&c.to_be_bytes());
    }
}
