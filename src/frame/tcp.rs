//! Telling one TCP segment from other frames, and reading its fields,
//! for IPv4 without options (unfragmented) and IPv6 without extension
//! headers: the only segments anything here merges, cuts or thins.

use super::checksum::{fold, sum_be};
use super::ETH_HLEN as ETH;

/// IPv4's header length without options.
pub const IP4: usize = 20;
/// IPv6's fixed header length.
pub const IP6: usize = 40;
/// Where the TCP header starts behind Ethernet and IPv4 (no options).
pub const TCP: usize = ETH + IP4;
/// Where the TCP header starts behind Ethernet and IPv6.
pub const TCP6: usize = ETH + IP6;
/// TCP's ACK flag.
pub const ACK: u8 = 0x10;
/// TCP's PSH flag.
pub const PSH: u8 = 0x08;
/// TCP's URG flag.
pub const URG: u8 = 0x20;

/// Whether the TCP checksum of a frame [`tcp4_payload`] accepted adds up.
pub fn tcp4_checksum_ok(frame: &[u8]) -> bool {
    let tcp = &frame[TCP..];
    let pseudo = sum_be(&frame[ETH + 12..TCP], 0) + 6 + tcp.len() as u64;
    fold(sum_be(tcp, pseudo)) == 0xffff
}

/// The TCP header length of a frame whose TCP header starts at `tcp`.
pub fn tcp_hdr_len(frame: &[u8], tcp: usize) -> usize {
    usize::from(frame[tcp + 12] >> 4) * 4
}

/// The sequence number of the segment whose TCP header starts at `tcp`.
pub fn seq(frame: &[u8], tcp: usize) -> u32 {
    u32::from_be_bytes([
        frame[tcp + 4],
        frame[tcp + 5],
        frame[tcp + 6],
        frame[tcp + 7],
    ])
}

/// The TCP payload length of a frame that is one TCP/IPv4 segment without
/// IPv4 options, unfragmented, with no padding after it; `None` otherwise.
pub fn tcp4_payload(frame: &[u8]) -> Option<usize> {
    tcp_segment(frame).and_then(|(tcp, p)| (tcp == TCP).then_some(p))
}

/// Where the TCP header starts and how long the payload is, for a frame
/// that is one TCP segment with no padding after it, over IPv4 without
/// options and unfragmented or IPv6 without extension headers; `None`
/// otherwise.
pub fn tcp_segment(frame: &[u8]) -> Option<(usize, usize)> {
    let (tcp, ip_len) = match frame.get(12..14)? {
        [0x08, 0x00] if frame.len() >= TCP + 20 => {
            let ip = &frame[ETH..];
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
            if ip[0] != 0x45 || ip[9] != 6 || frag != 0 || total != ip.len() {
                return None;
            }
            (TCP, total)
        }
        [0x86, 0xdd] if frame.len() >= TCP6 + 20 => {
            let ip = &frame[ETH..];
            let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if ip[0] >> 4 != 6 || ip[6] != 6 || IP6 + payload != ip.len() {
                return None;
            }
            (TCP6, ip.len())
        }
        _ => return None,
    };
    let tcp_len = tcp_hdr_len(frame, tcp);
    if tcp_len < 20 || tcp - ETH + tcp_len > ip_len {
        return None;
    }
    Some((tcp, ip_len - (tcp - ETH) - tcp_len))
}
