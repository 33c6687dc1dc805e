//! A TCP super-segment cut back into segments of an MTU, as a NIC doing
//! TSO would (libslirp's IPv6 input takes no more than its MTU).

use super::ipv4::Ipv4;
use super::ipv6::Ipv6;
use super::tcp::{tcp_at, tcp_segment, Tcp, CWR, FIN, PSH, TCP, URG};
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
    let first = tcp_at(frame, tcp);
    let (flags, seq0) = (first.flags(), first.seq());
    let id0 = if tcp == TCP {
        Ipv4::new_checked(&frame[ETH..]).map_or(0, |ip| ip.ident())
    } else {
        0
    };
    let mut out = Vec::with_capacity(hdr + mss.min(payload));
    let n = payload.div_ceil(mss).max(1);
    for i in 0..n {
        let last = i + 1 == n;
        out.clear();
        out.extend_from_slice(&frame[..hdr]);
        out.extend_from_slice(&frame[hdr + i * mss..frame.len().min(hdr + (i + 1) * mss)]);
        let ip_len = out.len() - ETH;
        let l4_len = ip_len - (tcp - ETH);
        // Each piece keeps the accepted headers and has a payload length
        // that fits it: the views hold.
        let (ip, seg) = out.split_at_mut(tcp);
        let pseudo = if tcp == TCP {
            let mut v4 = Ipv4::new_header(&mut ip[ETH..]).expect("accepted headers");
            v4.set_total_len(ip_len as u16);
            v4.set_ident(id0.wrapping_add(i as u16));
            v4.fill_checksum();
            v4.pseudo_sum(l4_len)
        } else {
            let mut v6 = Ipv6::new_header(&mut ip[ETH..]).expect("accepted headers");
            v6.set_payload_len(l4_len as u16);
            v6.pseudo_sum(l4_len)
        };
        let mut t = Tcp::new_checked(seg).expect("accepted headers");
        t.set_seq(seq0.wrapping_add((i * mss) as u32));
        let mut f = flags;
        if i > 0 {
            f &= !CWR;
        }
        if !last {
            f &= !(FIN | PSH);
        }
        // Never urgent data: a pointer copied onto every piece would point
        // past most of them (libslirp then invents bytes).
        t.set_flags(f & !URG);
        t.set_urgent_ptr(0);
        t.fill_checksum(pseudo);
        emit(&out);
    }
    Ok(n)
}
