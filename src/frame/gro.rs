//! Receive coalescing in front of libslirp (GRO): a batch of a guest's
//! TCP/IPv4 segments of one flow, in sequence, becomes one super-segment
//! before it reaches the stack.
//!
//! libslirp writes every data segment it accepts to the host socket with
//! its own `send()` and acknowledges it with its own frame, so a guest
//! without segmentation offload (a QEMU stream or bhyve link, a tap
//! without `IFF_VNET_HDR`) costs a system call and an ACK per 1,448
//! bytes. [`Gro`] merges what one read of the link brought, with
//! [`Coalescer`]'s rules (same flow and headers, in sequence, equal
//! segments but the last, at most 64 KiB), finishes the merged checksum
//! and hands the super-segment on for `slirp::Stack::input_segment`, the
//! path a tap's TSO frames take. A segment whose checksum is wrong is
//! never merged: it goes on alone, for libslirp to drop.

use super::coalesce::{can_grow, Coalescer};
use super::tcp::{tcp4_checksum_ok, tcp4_payload};
use super::vnet_hdr::{self, Offloaded, VnetHdr, GSO_NONE};

/// Merges a batch of frames from a guest; see the module docs.
///
/// ```
/// # use caploop::frame::gro::Gro;
/// # use caploop::frame::vnet_hdr::Offloaded;
/// # fn batch(frames: &[Vec<u8>], stack: &mut Vec<(Offloaded, Vec<u8>)>) {
/// let mut gro = Gro::default();
/// for f in frames {
///     gro.push(f, &mut |kind, frame| stack.push((kind, frame.to_vec())));
/// }
/// // At the end of the batch: what is still held goes on.
/// gro.finish(&mut |kind, frame| stack.push((kind, frame.to_vec())));
/// # }
/// ```
#[derive(Debug, Default)]
pub struct Gro {
    co: Coalescer,
    /// Where a merged segment's checksum is finished (reused).
    scratch: Vec<u8>,
}

impl Gro {
    /// Takes one frame: hands it, or what it ends, to `deliver` as a frame
    /// ([`Offloaded::Frame`]) or a merged super-segment
    /// ([`Offloaded::TcpSegment`], checksums complete), or holds it.
    pub fn push(&mut self, frame: &[u8], deliver: &mut dyn FnMut(Offloaded, &[u8])) {
        let payload = tcp4_payload(frame).unwrap_or(0);
        // A segment too large to merge (MTU 65520's) goes on as it came:
        // no checksum pass and no copy here, libslirp checks it anyway.
        if payload > 0 && (!can_grow(frame.len(), payload) || !tcp4_checksum_ok(frame)) {
            self.finish(deliver);
            return deliver(Offloaded::Frame, frame);
        }
        let scratch = &mut self.scratch;
        self.co
            .push(frame, &mut |hdr, f| hand_on(hdr, f, scratch, deliver));
    }

    /// Ends the batch: hands on what is held.
    pub fn finish(&mut self, deliver: &mut dyn FnMut(Offloaded, &[u8])) {
        let scratch = &mut self.scratch;
        self.co
            .finish(&mut |hdr, f| hand_on(hdr, f, scratch, deliver));
    }

    /// Super-segments made so far (each of two or more segments).
    pub fn merged(&self) -> u64 {
        self.co.merged()
    }
}

/// A record from the coalescer (header, frame) as the stack takes it.
fn hand_on(
    hdr: &[u8],
    frame: &[u8],
    scratch: &mut Vec<u8>,
    deliver: &mut dyn FnMut(Offloaded, &[u8]),
) {
    let hdr = VnetHdr::parse(hdr).unwrap_or_default();
    if hdr.gso_type == GSO_NONE {
        return deliver(Offloaded::Frame, frame);
    }
    scratch.clear();
    scratch.extend_from_slice(frame);
    match vnet_hdr::finish(&hdr, scratch) {
        Ok(kind) => deliver(kind, scratch),
        // Cannot happen for what the coalescer makes; the frame is not
        // lost: it goes on as it is, for libslirp to judge.
        Err(_) => deliver(Offloaded::Frame, scratch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::checksum::{fold, sum_be};

    /// A TCP/IPv4 frame from the guest, seq `seq`, flags `flags`, checksums
    /// right.
    fn seg(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = (40 + payload.len()) as u16;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[20] = 0x40;
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 2, 15]);
        f[30..34].copy_from_slice(&[10, 0, 2, 2]);
        let c = !fold(sum_be(&f[14..34], 0));
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&5201u16.to_be_bytes());
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        f[42..46].copy_from_slice(&7u32.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = flags;
        f[48..50].copy_from_slice(&64240u16.to_be_bytes());
        f.extend_from_slice(payload);
        let pseudo = sum_be(&f[26..34], 0) + 6 + (f.len() - 34) as u64;
        let c = !fold(sum_be(&f[34..], pseudo));
        f[50..52].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn run(frames: &[Vec<u8>]) -> Vec<(Offloaded, Vec<u8>)> {
        let mut gro = Gro::default();
        let mut out = Vec::new();
        for f in frames {
            gro.push(f, &mut |k, b| out.push((k, b.to_vec())));
        }
        gro.finish(&mut |k, b| out.push((k, b.to_vec())));
        out
    }

    #[test]
    fn a_run_of_segments_becomes_the_segment_a_sender_with_tso_would_send() {
        let data: Vec<u8> = (0..1448 * 5 + 100).map(|i| (i % 251) as u8).collect();
        let mut frames = Vec::new();
        for (i, chunk) in data.chunks(1448).enumerate() {
            let last = (i + 1) * 1448 >= data.len();
            frames.push(seg(
                1000 + (i * 1448) as u32,
                if last { 0x18 } else { 0x10 },
                chunk,
            ));
        }
        let out = run(&frames);
        assert_eq!(out.len(), 1);
        let (kind, merged) = &out[0];
        assert_eq!(*kind, Offloaded::TcpSegment);
        // Exactly the one segment a sender would have sent: every checksum
        // right, PSH from the last.
        assert_eq!(merged, &seg(1000, 0x18, &data));
    }

    #[test]
    fn bad_checksums_gaps_and_other_frames_go_on_alone_in_order() {
        let a = seg(1000, 0x10, &[1; 100]);
        let mut bad = seg(1100, 0x10, &[2; 100]);
        bad[60] ^= 0xff;
        let c = seg(1200, 0x10, &[3; 100]);
        let out = run(&[a.clone(), bad.clone(), c.clone()]);
        let frames: Vec<_> = out.iter().map(|(_, f)| f.clone()).collect();
        assert_eq!(frames, vec![a.clone(), bad, c]);
        // Out of sequence: not merged.
        let gap = seg(5000, 0x10, &[4; 100]);
        let out = run(&[a.clone(), gap.clone()]);
        assert_eq!(out.len(), 2);
        // An ARP frame between segments ends the run and keeps its place.
        let arp = {
            let mut f = vec![0u8; 42];
            f[12..14].copy_from_slice(&[0x08, 0x06]);
            f
        };
        let b = seg(1100, 0x10, &[5; 100]);
        let out = run(&[a.clone(), arp.clone(), b.clone()]);
        let frames: Vec<_> = out.iter().map(|(_, f)| f.clone()).collect();
        assert_eq!(frames, vec![a, arp, b]);
        // Garbage passes untouched.
        let out = run(&[vec![], vec![0x08], vec![0u8; 60]]);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|(k, _)| *k == Offloaded::Frame));
    }
}
