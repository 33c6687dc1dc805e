//! What the path reads from a guest frame: the flow a TCP segment
//! belongs to, its IP packet and flags, and the Ethernet addresses.

use std::net::{IpAddr, SocketAddr};

use super::wire::Macs;
use crate::frame::ethernet::{Ethernet, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::frame::ipv4::{Ipv4, PROTO_TCP};
use crate::frame::ipv6::Ipv6;
use crate::frame::tcp::Tcp;

/// A flow as the guest's segments name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub(super) guest: SocketAddr,
    pub(super) remote: SocketAddr,
}

/// One TCP segment from the guest, as the path needs it.
pub(super) struct Segment<'a> {
    pub(super) key: Key,
    /// The IP packet (header to its length).
    pub(super) packet: &'a [u8],
    pub(super) flags: u8,
    pub(super) macs: Macs,
    /// The MSS a SYN announces.
    pub(super) mss: Option<u16>,
}

/// Reads what the path needs from a guest frame: one TCP segment over
/// IPv4 (unfragmented) or IPv6 (no extension headers); `None` otherwise.
pub(super) fn segment(frame: &[u8]) -> Option<Segment<'_>> {
    let eth = Ethernet::new_checked(frame).ok()?;
    let macs = Macs {
        guest: eth.src(),
        gateway: eth.dst(),
    };
    let (src, dst, packet, payload): (IpAddr, IpAddr, &[u8], &[u8]) = match eth.ethertype() {
        ETHERTYPE_IPV4 => {
            let ip = Ipv4::new_checked(eth.into_payload()).ok()?;
            if ip.protocol() != PROTO_TCP || ip.is_fragment() {
                return None;
            }
            let packet = &eth.into_payload()[..ip.total_len()];
            (ip.src().into(), ip.dst().into(), packet, ip.into_payload())
        }
        ETHERTYPE_IPV6 => {
            let ip = Ipv6::new_checked(eth.into_payload()).ok()?;
            if ip.next_header() != PROTO_TCP {
                return None;
            }
            let (s, d) = ip.addrs().split_at(16);
            let s: [u8; 16] = s.try_into().ok()?;
            let d: [u8; 16] = d.try_into().ok()?;
            let packet = &eth.into_payload()[..crate::frame::ipv6::IP6 + ip.payload_len()];
            (s.into(), d.into(), packet, ip.into_payload())
        }
        _ => return None,
    };
    let tcp = Tcp::new_checked(payload).ok()?;
    Some(Segment {
        key: Key {
            guest: SocketAddr::new(src, tcp.src_port()),
            remote: SocketAddr::new(dst, tcp.dst_port()),
        },
        packet,
        flags: tcp.flags(),
        macs,
        mss: tcp.mss(),
    })
}
