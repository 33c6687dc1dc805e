//! The Ethernet header: a checked view of a frame (no VLAN tag).

use super::{FrameError, ETH_HLEN};

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// The length of an ARP packet for IPv4 over Ethernet.
pub const ARP_LEN: usize = 28;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// A frame at least [`ETH_HLEN`] bytes long; after
/// [`new_checked`](Ethernet::new_checked) no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Ethernet<T: AsRef<[u8]>>(T);

impl<T: AsRef<[u8]>> Ethernet<T> {
    /// The view, or why `buf` holds no Ethernet header.
    pub fn new_checked(buf: T) -> Result<Ethernet<T>, FrameError> {
        let have = buf.as_ref().len();
        if have < ETH_HLEN {
            return Err(FrameError::Short {
                have,
                need: ETH_HLEN,
            });
        }
        Ok(Ethernet(buf))
    }

    /// The destination address.
    pub fn dst(&self) -> [u8; 6] {
        let b = self.0.as_ref();
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }

    /// The source address.
    pub fn src(&self) -> [u8; 6] {
        let b = self.0.as_ref();
        [b[6], b[7], b[8], b[9], b[10], b[11]]
    }

    /// The EtherType.
    pub fn ethertype(&self) -> u16 {
        let b = self.0.as_ref();
        u16::from_be_bytes([b[12], b[13]])
    }

    /// What follows the header.
    pub fn payload(&self) -> &[u8] {
        &self.0.as_ref()[ETH_HLEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ethernet<T> {
    /// Sets the destination address.
    pub fn set_dst(&mut self, mac: [u8; 6]) {
        self.0.as_mut()[..6].copy_from_slice(&mac);
    }

    /// Sets the source address.
    pub fn set_src(&mut self, mac: [u8; 6]) {
        self.0.as_mut()[6..12].copy_from_slice(&mac);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, ethertype: u16) {
        self.0.as_mut()[12..14].copy_from_slice(&ethertype.to_be_bytes());
    }
}

impl<'a> Ethernet<&'a [u8]> {
    /// The payload, borrowed from the buffer rather than the view.
    pub fn into_payload(self) -> &'a [u8] {
        &self.0[ETH_HLEN..]
    }
}

/// An ARP request for IPv4 over Ethernet, broadcast: who has `target`,
/// tell `sender_ip` at `sender_mac` (RFC 826).
pub fn arp_request(sender_mac: [u8; 6], sender_ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; ETH_HLEN + ARP_LEN];
    if let Ok(mut eth) = Ethernet::new_checked(&mut f[..]) {
        eth.set_dst([0xff; 6]);
        eth.set_src(sender_mac);
        eth.set_ethertype(ETHERTYPE_ARP);
    }
    let arp = &mut f[ETH_HLEN..];
    // Ethernet, IPv4, their address lengths, request.
    arp[..8].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    arp[8..14].copy_from_slice(&sender_mac);
    arp[14..18].copy_from_slice(&sender_ip);
    arp[24..28].copy_from_slice(&target);
    f
}

/// The EtherType of `frame`, if it is long enough to have one.
pub fn ethertype(frame: &[u8]) -> Option<u16> {
    Ethernet::new_checked(frame).ok().map(|e| e.ethertype())
}
