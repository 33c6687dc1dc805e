//! The IPv6 fixed header: a checked view of a datagram.

use super::checksum::sum_be;
use super::{bad, FrameError};

/// The fixed header's length.
pub const IP6: usize = 40;

/// An IPv6 datagram whose fixed header is whole, version 6, and whose
/// payload length fits the buffer (padding after it is allowed); after
/// [`new_checked`](Ipv6::new_checked) no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> Ipv6<T> {
    /// The view, or what is wrong with the header in `buf`.
    pub fn new_checked(buf: T) -> Result<Ipv6<T>, FrameError> {
        let ip = Ipv6::new_header(buf)?;
        let (payload, have) = (ip.payload_len(), ip.b().len());
        if IP6 + payload > have {
            return Err(bad(format!(
                "IPv6 payload length {payload} in {have} bytes"
            )));
        }
        Ok(ip)
    }

    /// A view of a header about to be rewritten, whose payload length
    /// need not match `buf` yet: only the version and the fixed header's
    /// length are checked ([`payload`](Ipv6::payload) is then cut to `buf`).
    pub fn new_header(buf: T) -> Result<Ipv6<T>, FrameError> {
        let b = buf.as_ref();
        if b.len() < IP6 {
            return Err(FrameError::Short {
                have: b.len(),
                need: IP6,
            });
        }
        if b[0] >> 4 != 6 {
            return Err(bad(format!("IP version {} in an IPv6 header", b[0] >> 4)));
        }
        Ok(Ipv6(buf))
    }

    fn b(&self) -> &[u8] {
        self.0.as_ref()
    }

    /// The payload length field.
    pub fn payload_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.b()[4], self.b()[5]]))
    }

    /// The next header (the payload's protocol when there are no
    /// extension headers).
    pub fn next_header(&self) -> u8 {
        self.b()[6]
    }

    /// The source and destination addresses, as the header holds them.
    pub fn addrs(&self) -> &[u8] {
        &self.b()[8..40]
    }

    /// What the payload length covers after the fixed header.
    pub fn payload(&self) -> &[u8] {
        let b = self.b();
        &b[IP6..(IP6 + self.payload_len()).min(b.len())]
    }

    /// The pseudo-header's sum for a `len`-byte transport segment of
    /// protocol [`next_header`](Ipv6::next_header).
    pub fn pseudo_sum(&self, len: usize) -> u64 {
        sum_be(self.addrs(), 0) + u64::from(self.next_header()) + len as u64
    }

    /// Whether `other`'s fixed header is this one's but for the payload
    /// length (what differs datagram to datagram in one flow).
    pub fn same_flow_header<U: AsRef<[u8]>>(&self, other: &Ipv6<U>) -> bool {
        let (a, b) = (self.b(), other.0.as_ref());
        a[..4] == b[..4] && a[6..IP6] == b[6..IP6]
    }
}

impl<'a> Ipv6<&'a [u8]> {
    /// The payload, borrowed from the buffer rather than the view.
    pub fn into_payload(self) -> &'a [u8] {
        let end = (IP6 + self.payload_len()).min(self.0.len());
        &self.0[IP6..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6<T> {
    /// Sets the payload length field.
    pub fn set_payload_len(&mut self, len: u16) {
        self.0.as_mut()[4..6].copy_from_slice(&len.to_be_bytes());
    }
}

/// ICMPv6, as a next header.
pub const PROTO_ICMPV6: u8 = 58;

/// An IPv6 neighbour solicitation over Ethernet, to the target's
/// solicited-node group: who has `target`, tell `sender_ip` at
/// `sender_mac` (RFC 4861 4.3, with the source link-layer address option).
pub fn neighbour_solicitation(
    sender_mac: [u8; 6],
    sender_ip: [u8; 16],
    target: [u8; 16],
) -> Vec<u8> {
    use super::checksum::fold;
    use super::ethernet::{Ethernet, ETHERTYPE_IPV6};
    use super::ETH_HLEN;
    const ICMP_LEN: usize = 32;
    let mut group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    group[13..].copy_from_slice(&target[13..]);
    let mut f = vec![0u8; ETH_HLEN + IP6 + ICMP_LEN];
    if let Ok(mut eth) = Ethernet::new_checked(&mut f[..]) {
        eth.set_dst([0x33, 0x33, 0xff, target[13], target[14], target[15]]);
        eth.set_src(sender_mac);
        eth.set_ethertype(ETHERTYPE_IPV6);
    }
    let ip = &mut f[ETH_HLEN..];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(ICMP_LEN as u16).to_be_bytes());
    ip[6] = PROTO_ICMPV6;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&sender_ip);
    ip[24..40].copy_from_slice(&group);
    let icmp = &mut ip[IP6..];
    icmp[0] = 135;
    icmp[8..24].copy_from_slice(&target);
    // Source link-layer address: type 1, one 8-byte unit.
    icmp[24] = 1;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&sender_mac);
    let pseudo = sum_be(&sender_ip, sum_be(&group, 0)) + u64::from(PROTO_ICMPV6) + ICMP_LEN as u64;
    let sum = !fold(sum_be(icmp, pseudo));
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    f
}
