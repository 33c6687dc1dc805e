//! The UDP header: a checked view of a datagram.

use super::{bad, FrameError};

/// The header's length.
pub const UDP_HLEN: usize = 8;

/// A UDP datagram whose header is whole and whose length field lies
/// between the header's length and the buffer's; after
/// [`new_checked`](Udp::new_checked) no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Udp<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> Udp<T> {
    /// The view, or what is wrong with the header in `buf`.
    pub fn new_checked(buf: T) -> Result<Udp<T>, FrameError> {
        let b = buf.as_ref();
        if b.len() < UDP_HLEN {
            return Err(FrameError::Short {
                have: b.len(),
                need: UDP_HLEN,
            });
        }
        let len = usize::from(u16::from_be_bytes([b[4], b[5]]));
        if len < UDP_HLEN || len > b.len() {
            return Err(bad(format!("UDP length {len} in {} bytes", b.len())));
        }
        Ok(Udp(buf))
    }

    fn b(&self) -> &[u8] {
        self.0.as_ref()
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes([self.b()[0], self.b()[1]])
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.b()[2], self.b()[3]])
    }

    /// The length field: header and payload.
    pub fn len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.b()[4], self.b()[5]]))
    }

    /// Whether the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        self.len() == UDP_HLEN
    }

    /// The checksum field (zero: none, over IPv4).
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]])
    }

    /// What the length field covers after the header.
    pub fn payload(&self) -> &[u8] {
        &self.b()[UDP_HLEN..self.len()]
    }
}
