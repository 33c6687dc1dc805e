//! A TCP super-segment cut back into segments of an MTU, as a NIC doing
//! TSO would (libslirp's IPv6 input takes no more than its MTU).

use super::checksum::{fold, sum_be};
use super::tcp::{seq, tcp_segment, PSH, TCP, TCP6, URG};
use super::ETH_HLEN as ETH;
use super::{bad, FrameError};

/// Cuts a TCP super-segment (IPv4 or IPv6, from a TSO sender or a
/// [`Coalescer`](super::coalesce::Coalescer)) into IP datagrams of at most `mtu` bytes with complete
/// checksums, as a NIC doing TSO would: each with the first one's headers,
/// its sequence number advanced, IPv4's identification counted up, CWR
/// only on the first, FIN and PSH only on the last, and no urgent data on
/// any (URG off, urgent pointer zero). Returns how many it
/// handed to `emit`; a frame that is not one TCP segment, or an `mtu` that
/// leaves no room for payload, is an error naming it.
pub fn segment(frame: &[u8], mtu: usize, emit: &mut dyn FnMut(&[u8])) -> Result<usize, FrameError> {
    let Some((tcp, payload)) = tcp_segment(frame) else {
        return Err(bad(format!(
            "a {}-byte frame to segment is not one TCP/IP segment",
            frame.len()
        )));
    };
    let hdr = frame.len() - payload;
    let mss = (mtu + ETH).saturating_sub(hdr);
    if mss == 0 {
        return Err(bad(format!(
            "an MTU of {mtu} leaves no room for payload after {} bytes of headers",
            hdr - ETH
        )));
    }
    let (flags, seq0) = (frame[tcp + 13], seq(frame, tcp));
    let id0 = u16::from_be_bytes([frame[ETH + 4], frame[ETH + 5]]);
    let mut out = Vec::with_capacity(hdr + mss.min(payload));
    let n = payload.div_ceil(mss).max(1);
    for i in 0..n {
        let last = i + 1 == n;
        out.clear();
        out.extend_from_slice(&frame[..hdr]);
        out.extend_from_slice(&frame[hdr + i * mss..frame.len().min(hdr + (i + 1) * mss)]);
        let ip_len = out.len() - ETH;
        let l4_len = ip_len - (tcp - ETH);
        if tcp == TCP {
            let ip = &mut out[ETH..TCP];
            ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            ip[10..12].copy_from_slice(&[0, 0]);
            let c = !fold(sum_be(ip, 0));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            out[ETH + 4..ETH + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        let seq_i = seq0.wrapping_add((i * mss) as u32);
        out[tcp + 4..tcp + 8].copy_from_slice(&seq_i.to_be_bytes());
        let mut f = flags;
        if i > 0 {
            f &= !0x80; // CWR
        }
        if !last {
            f &= !(0x01 | PSH); // FIN, PSH
        }
        // Never urgent data: a pointer copied onto every piece would point
        // past most of them (libslirp then invents bytes).
        out[tcp + 13] = f & !URG;
        out[tcp + 18..tcp + 20].copy_from_slice(&[0, 0]);
        out[tcp + 16..tcp + 18].copy_from_slice(&[0, 0]);
        let addrs = if tcp == TCP {
            &out[ETH + 12..TCP]
        } else {
            &out[ETH + 8..TCP6]
        };
        let pseudo = sum_be(addrs, 0) + 6 + l4_len as u64;
        let c = !fold(sum_be(&out[tcp..], pseudo));
        out[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
        emit(&out);
    }
    Ok(n)
}
