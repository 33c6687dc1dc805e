//! TCP urgent data, cleared in front of libslirp.
//!
//! libslirp 4.x keeps an urgent count per socket and, with an urgent
//! pointer reaching past what it holds (0xFFFF, say), sends the host
//! peer bytes the guest never sent. Nobody needs urgent data (passt does
//! not implement it either), so every TCP segment from the guest loses it
//! on the way in: the URG flag off, the urgent pointer zero, the checksum
//! adjusted for both (RFC 1624), and the bytes go on in order as ordinary
//! data. A segment whose checksum was wrong stays wrong, and libslirp
//! drops it as before.

use crate::frame::ethernet::{Ethernet, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::frame::ipv4::{Ipv4, PROTO_TCP};
use crate::frame::ipv6::{Ipv6, IP6};
use crate::frame::tcp::{Tcp, URG};
use crate::frame::ETH_HLEN;

/// Where the TCP header of an unfragmented TCP/IPv4 or TCP/IPv6 (no
/// extension headers) frame starts, if it is one and its header is whole.
fn tcp_at(frame: &[u8]) -> Option<usize> {
    let eth = Ethernet::new_checked(frame).ok()?;
    let ip = eth.payload();
    let (at, segment) = match eth.ethertype() {
        ETHERTYPE_IPV4 => {
            let v4 = Ipv4::new_checked(ip).ok()?;
            if v4.protocol() != PROTO_TCP || v4.is_fragment() {
                return None;
            }
            (v4.header_len(), v4.into_payload())
        }
        ETHERTYPE_IPV6 => {
            let v6 = Ipv6::new_checked(ip).ok()?;
            if v6.next_header() != PROTO_TCP {
                return None;
            }
            (IP6, v6.into_payload())
        }
        _ => return None,
    };
    Tcp::new_checked(segment).ok()?;
    Some(ETH_HLEN + at)
}

/// One's-complement update of checksum `sum` for a 16-bit word changed
/// from `old` to `new` (RFC 1624, eqn. 3).
fn adjust(sum: u16, old: u16, new: u16) -> u16 {
    let mut s = u32::from(!sum) + u32::from(!old) + u32::from(new);
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Whether `frame` is a TCP segment that carries urgent data (the URG
/// flag, or an urgent pointer).
pub(crate) fn carries(frame: &[u8]) -> bool {
    tcp_at(frame).is_some_and(|t| Tcp::new_checked(&frame[t..]).is_ok_and(|t| t.is_urgent()))
}

/// A copy of `frame` without urgent data, if it is a TCP segment that
/// carries any (the URG flag, or an urgent pointer); `None` otherwise,
/// and the frame goes on as it is.
pub(crate) fn cleared(frame: &[u8]) -> Option<Vec<u8>> {
    let at = tcp_at(frame)?;
    let mut f = frame.to_vec();
    let mut tcp = Tcp::new_checked(&mut f[at..]).ok()?;
    if !tcp.is_urgent() {
        return None;
    }
    // The flags are the low byte of a 16-bit word whose high byte (the
    // data offset) stays: the update needs only the low byte's change.
    let (flags, urp, sum) = (tcp.flags(), tcp.urgent_ptr(), tcp.checksum());
    tcp.set_flags(flags & !URG);
    tcp.set_urgent_ptr(0);
    let sum = adjust(adjust(sum, flags.into(), (flags & !URG).into()), urp, 0);
    tcp.set_checksum(sum);
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One's-complement sum of `data` from `start`.
    fn sum(data: &[u8], start: u64) -> u64 {
        let mut s = start;
        for c in data.chunks(2) {
            s += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        s
    }

    fn fold(mut s: u64) -> u16 {
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// A TCP/IPv4 or TCP/IPv6 frame with `flags`, urgent pointer `urp`,
    /// `payload`, and a correct checksum.
    fn segment(v6: bool, flags: u8, urp: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        let ip_len = if v6 { 40 } else { 20 };
        if v6 {
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            ip[6] = 6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
            ip[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&ip);
        } else {
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&[10, 0, 2, 15]);
            ip[16..20].copy_from_slice(&[10, 0, 2, 2]);
            f.extend_from_slice(&ip);
        }
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
        tcp[18..20].copy_from_slice(&urp.to_be_bytes());
        f.extend_from_slice(&tcp);
        f.extend_from_slice(payload);
        let t = 14 + ip_len;
        let addrs = if v6 {
            &f[14 + 8..14 + 40]
        } else {
            &f[14 + 12..14 + 20]
        };
        let pseudo = sum(addrs, 0) + 6 + (f.len() - t) as u64;
        let c = !fold(sum(&f[t..], pseudo));
        f[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn checksum_ok(f: &[u8], v6: bool) -> bool {
        let t = if v6 { 54 } else { 34 };
        let addrs = if v6 { &f[14 + 8..54] } else { &f[14 + 12..34] };
        let pseudo = sum(addrs, 0) + 6 + (f.len() - t) as u64;
        fold(sum(&f[t..], pseudo)) == 0xffff
    }

    #[test]
    fn urgent_data_is_cleared_with_the_checksum_still_right() {
        for v6 in [false, true] {
            let f = segment(v6, 0x18 | URG, 0xffff, b"hello, urgent world");
            assert!(checksum_ok(&f, v6));
            let c = cleared(&f).expect("cleared");
            let t = if v6 { 54 } else { 34 };
            assert_eq!(c[t + 13], 0x18, "URG off, the rest kept");
            assert_eq!(&c[t + 18..t + 20], &[0, 0]);
            assert!(checksum_ok(&c, v6), "v6 {v6}: checksum after clearing");
            assert_eq!(&c[..t + 13], &f[..t + 13]);
            assert_eq!(&c[t + 20..], &f[t + 20..], "the bytes unchanged");
            // An urgent pointer without the flag goes too.
            let g = segment(v6, 0x10, 7, b"x");
            let c = cleared(&g).expect("cleared");
            assert_eq!(&c[t + 18..t + 20], &[0, 0]);
            assert!(checksum_ok(&c, v6));
            // Plain segments pass untouched.
            assert!(cleared(&segment(v6, 0x18, 0, b"plain")).is_none());
        }
    }

    #[test]
    fn a_wrong_checksum_stays_wrong_and_other_frames_pass() {
        let mut f = segment(false, URG | 0x10, 1, b"ab");
        f[40] ^= 0xff;
        assert!(!checksum_ok(&cleared(&f).unwrap(), false));
        // A fragment, UDP, a frame too short for its TCP header: untouched.
        let mut frag = segment(false, URG, 1, b"ab");
        frag[14 + 6] = 0x20;
        assert!(cleared(&frag).is_none());
        let mut udp = segment(false, URG, 1, b"ab");
        udp[14 + 9] = 17;
        assert!(cleared(&udp).is_none());
        let short = segment(false, URG, 1, b"");
        assert!(cleared(&short[..short.len() - 1]).is_none());
        assert!(cleared(&[]).is_none());
    }
}
