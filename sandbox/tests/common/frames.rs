//! Hand-built guest frames (DHCP DISCOVER, ARP request) and parsers for
//! the answers, for tests that play the hypervisor's side of a link.

#![allow(dead_code)]

/// The test guest's MAC address.
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn ip_checksum(header: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in header.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A DHCP DISCOVER broadcast from [`GUEST_MAC`] with transaction id `xid`.
pub fn dhcp_discover(xid: u32) -> Vec<u8> {
    let mut bootp = vec![0u8; 240];
    bootp[0] = 1; // op: request
    bootp[1] = 1; // htype: ethernet
    bootp[2] = 6; // hlen
    bootp[4..8].copy_from_slice(&xid.to_be_bytes());
    bootp[28..34].copy_from_slice(&GUEST_MAC);
    bootp[236..240].copy_from_slice(&[0x63, 0x82, 0x53, 0x63]);
    bootp.extend_from_slice(&[53, 1, 1, 255]); // DHCPDISCOVER, end
    bootp.resize(300, 0);

    let udp_len = 8 + bootp.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&68u16.to_be_bytes());
    udp.extend_from_slice(&67u16.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]); // no UDP checksum (allowed on IPv4)
    udp.extend_from_slice(&bootp);

    let mut ip = vec![
        0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
    ];
    let total = (20 + udp.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let c = ip_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());

    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&GUEST_MAC);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&udp);
    frame
}

/// An ARP request from 10.0.2.15 asking for `target`.
pub fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[10, 0, 2, 15]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// If `frame` is a DHCP reply, its message type (2 = OFFER) and the
/// offered address.
pub fn dhcp_reply(frame: &[u8], xid: u32) -> Option<(u8, [u8; 4])> {
    if frame.len() < 14 + 20 + 8 + 240 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let udp = &frame[14 + ihl..];
    if udp[0..2] != 67u16.to_be_bytes() || udp[2..4] != 68u16.to_be_bytes() {
        return None;
    }
    let bootp = &udp[8..];
    if bootp[0] != 2 || bootp[4..8] != xid.to_be_bytes() {
        return None;
    }
    let yiaddr = [bootp[16], bootp[17], bootp[18], bootp[19]];
    let mut opts = &bootp[240..];
    while opts.len() >= 2 && opts[0] != 255 {
        if opts[0] == 0 {
            opts = &opts[1..];
            continue;
        }
        let len = usize::from(opts[1]);
        if opts[0] == 53 && len == 1 && opts.len() > 2 {
            return Some((opts[2], yiaddr));
        }
        opts = opts.get(2 + len..)?;
    }
    None
}

/// If `frame` is an ARP reply for `ip`, the MAC address it gives.
pub fn arp_reply(frame: &[u8], ip: [u8; 4]) -> Option<[u8; 6]> {
    if frame.len() < 42 || frame[12..14] != [0x08, 0x06] || frame[20..22] != [0, 2] {
        return None;
    }
    if frame[28..32] != ip {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&frame[22..28]);
    Some(mac)
}
