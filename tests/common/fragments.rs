//! Hand-built IPv4 fragments from the guest: the one frame that crashes
//! libslirp 4.7.0, and a UDP datagram cut into fragments. Shared by the
//! library's tests and the harness's (`#[path]`).
#![allow(dead_code)]

use std::net::Ipv4Addr;

/// The guest's MAC address in these frames.
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// The Internet checksum.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame (broadcast destination) carrying an IPv4 fragment:
/// `payload` at byte offset `offset` of datagram `id` (protocol `proto`),
/// MF as `more` says.
pub fn fragment(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    proto: u8,
    offset: usize,
    more: bool,
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(offset % 8, 0);
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    let off = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
    ip[6..8].copy_from_slice(&off.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(payload);
    f
}

/// The frame that crashes libslirp 4.7.0: a lone last fragment (offset 8
/// bytes, MF clear) of a UDP datagram, total length 240, from 10.0.2.15 to
/// the gateway 10.0.2.2.
pub fn lone_last_fragment(id: u16) -> Vec<u8> {
    fragment(
        Ipv4Addr::new(10, 0, 2, 15),
        Ipv4Addr::new(10, 0, 2, 2),
        id,
        17,
        8,
        false,
        &[0x5a; 220],
    )
}

/// Every way the crash is reached: the lone last fragment, again after
/// its datagram could not complete, and a last fragment sent before the
/// first of its datagram (whose first fragment then follows).
pub fn crash_frames() -> Vec<Vec<u8>> {
    let (src, dst) = (Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::new(10, 0, 2, 2));
    vec![
        lone_last_fragment(0x0b0b),
        lone_last_fragment(0x0b0b),
        lone_last_fragment(0x0c0c),
        fragment(src, dst, 0x0d0d, 17, 16, false, &[1; 8]),
        fragment(src, dst, 0x0d0d, 17, 0, true, &[2; 16]),
    ]
}

/// A UDP datagram (checksum 0: none, as IPv4 allows) from `src:sport` to
/// `dst:dport` carrying `data`, cut into fragments of at most `mtu` bytes
/// of IP packet each, in order.
pub fn udp_fragments(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    id: u16,
    data: &[u8],
    mtu: usize,
) -> Vec<Vec<u8>> {
    let mut udp = Vec::with_capacity(8 + data.len());
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(data);
    let step = (mtu - 20) / 8 * 8;
    udp.chunks(step)
        .enumerate()
        .map(|(i, chunk)| {
            let offset = i * step;
            let more = offset + chunk.len() < udp.len();
            fragment(src, dst, id, 17, offset, more, chunk)
        })
        .collect()
}
