//! The frame layer's tests: the header codec, checksums, merging and
//! cutting (proptests that a sender's segments merged then cut back come
//! out byte-identical).

use super::checksum::*;
use super::coalesce::*;
use super::ethernet::*;
use super::ipv4::*;
use super::ipv6::*;
use super::segment::*;
use super::tcp::*;
use super::udp::*;
use super::vnet_hdr::*;
use super::ETH_HLEN as ETH;
use proptest::prelude::*;

/// A TCP/IPv4 frame from 10.0.2.100:40000 to 10.0.2.2:5201 with
/// `payload`, checksums complete.
fn tcp4(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let total = (20 + 20 + payload.len()) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 0, 2, 100]);
    ip[16..20].copy_from_slice(&[10, 0, 2, 2]);
    let c = !fold(sum_be(ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    f.extend_from_slice(payload);
    let c = !fold(sum_be(&f[34..], pseudo(&f)));
    f[50..52].copy_from_slice(&c.to_be_bytes());
    f
}

fn pseudo(f: &[u8]) -> u64 {
    let len = (f.len() - 34) as u64;
    sum_be(&f[26..34], 0) + 6 + len
}

/// `f` as a sender with checksum offload leaves it: the TCP checksum
/// field holds the folded pseudo-header sum, not complemented.
fn partial(f: &[u8]) -> Vec<u8> {
    let mut p = f.to_vec();
    let s = fold(pseudo(&p));
    p[50..52].copy_from_slice(&s.to_be_bytes());
    p
}

fn needs_csum() -> VnetHdr {
    VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..VnetHdr::default()
    }
}

#[test]
fn a_record_shorter_than_its_header_is_an_error_not_a_panic() {
    assert!(unwrap_record(&mut [0u8; 5], VNET_HDR_SIZE).is_err());
    let mut rec = vec![0u8; 12 + 60];
    let (kind, frame) = unwrap_record(&mut rec, 12).unwrap();
    assert_eq!((kind, frame.len()), (Offloaded::Frame, 60));
}

#[test]
fn a_header_reads_back_what_was_written() {
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4 | GSO_ECN,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    assert_eq!(VnetHdr::parse(&h.to_bytes()).unwrap(), h);
    assert!(VnetHdr::parse(&[0u8; 9]).is_err());
}

#[test]
fn a_partial_checksum_is_finished_as_the_sender_would_have() {
    for len in [0, 1, 2, 3, 1448, 1449, 65495] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let whole = tcp4(&payload);
        let mut p = partial(&whole);
        let h = needs_csum();
        let kind = finish(&h, &mut p).unwrap();
        assert_eq!(p, whole, "payload of {len}");
        assert_eq!(kind, Offloaded::Frame);
    }
}

#[test]
fn a_super_segment_is_told_from_a_frame() {
    let whole = tcp4(&vec![0x5a; 60_000]);
    let mut p = partial(&whole);
    let h = VnetHdr {
        gso_type: GSO_TCPV4,
        gso_size: 1448,
        ..needs_csum()
    };
    assert_eq!(finish(&h, &mut p).unwrap(), Offloaded::TcpSegment);
    assert_eq!(p, whole);
}

#[test]
fn a_lazy_unwrap_leaves_only_a_super_segments_checksum_partial() {
    let record = |h: VnetHdr, frame: &[u8]| [h.to_bytes().to_vec(), frame.to_vec()].concat();
    let whole = tcp4(&vec![0x5a; 60_000]);
    let gso = VnetHdr {
        gso_type: GSO_TCPV4,
        gso_size: 1448,
        ..needs_csum()
    };
    // A super-segment: as it came, and where its checksum goes.
    let mut rec = record(gso, &partial(&whole));
    let (kind, p, frame) = unwrap_record_lazily(&mut rec, VNET_HDR_SIZE).unwrap();
    assert_eq!(
        (kind, p),
        (
            Offloaded::TcpSegment,
            Some(Partial {
                start: 34,
                offset: 16
            })
        )
    );
    assert_eq!(frame, &partial(&whole)[..]);
    p.unwrap().finish(frame).unwrap();
    assert_eq!(frame, &whole[..]);
    // A large frame (a segment at a large MTU): the same, as a frame.
    let mut rec = record(needs_csum(), &partial(&whole));
    let (kind, p, frame) = unwrap_record_lazily(&mut rec, VNET_HDR_SIZE).unwrap();
    assert_eq!(
        (kind, p),
        (
            Offloaded::Frame,
            Some(Partial {
                start: 34,
                offset: 16
            })
        )
    );
    assert_eq!(frame, &partial(&whole)[..]);
    // A small one: finished at once.
    let small = tcp4(b"hello");
    let mut rec = record(needs_csum(), &partial(&small));
    let (kind, p, frame) = unwrap_record_lazily(&mut rec, VNET_HDR_SIZE).unwrap();
    assert_eq!((kind, p, &*frame), (Offloaded::Frame, None, &small[..]));
    // A checksum field past the end, and a short record: errors naming them.
    let mut rec = record(
        VnetHdr {
            csum_offset: 61_000,
            ..gso
        },
        &partial(&whole),
    );
    let e = unwrap_record_lazily(&mut rec, VNET_HDR_SIZE).unwrap_err();
    assert!(e.to_string().contains("csum_offset 61000"), "{e}");
    assert!(unwrap_record_lazily(&mut [0u8; 5], VNET_HDR_SIZE).is_err());
}

#[test]
fn offsets_beyond_the_frame_and_gso_types_not_offered_are_refused() {
    let mut f = tcp4(b"x");
    for (start, offset) in [(55, 0), (54, 0), (34, 20), (53, 1), (u16::MAX, u16::MAX)] {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: start,
            csum_offset: offset,
            ..VnetHdr::default()
        };
        let before = f.clone();
        let e = finish(&h, &mut f).unwrap_err().to_string();
        assert!(e.contains(&format!("csum_start {start}")), "{e}");
        assert_eq!(f, before, "nothing written");
    }
    for t in [GSO_UDP, GSO_UDP_L4, 9] {
        let h = VnetHdr {
            gso_type: t,
            ..VnetHdr::default()
        };
        let e = finish(&h, &mut f).unwrap_err().to_string();
        assert!(e.contains(&format!("GSO type {t}")), "{e}");
    }
}

/// A TCP/IPv4 segment with sequence number `seq` and `flags`.
fn seg(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = tcp4(payload);
    f[38..42].copy_from_slice(&seq.to_be_bytes());
    f[47] = flags;
    let c = !fold(sum_be(
        &{
            let mut t = f[34..].to_vec();
            t[16..18].copy_from_slice(&[0, 0]);
            t
        },
        pseudo(&f),
    ));
    f[50..52].copy_from_slice(&c.to_be_bytes());
    f
}

fn run(frames: &[Vec<u8>]) -> (Vec<Vec<u8>>, u64) {
    let mut c = Coalescer::default();
    let mut out = Vec::new();
    for f in frames {
        c.push(f, &mut |h, f| out.push([h, f].concat()));
    }
    c.finish(&mut |h, f| out.push([h, f].concat()));
    (out, c.merged())
}

#[test]
fn segments_in_sequence_become_one_gso_frame() {
    let data: Vec<u8> = (0..3896u32).map(|i| (i * 13) as u8).collect();
    let frames = [
        seg(1000, ACK, &data[..1448]),
        seg(2448, ACK, &data[1448..2896]),
        seg(3896, ACK | PSH, &data[2896..]),
    ];
    let (out, merged) = run(&frames);
    assert_eq!((out.len(), merged), (1, 1));
    let rec = &out[0];
    let h = VnetHdr::parse(rec).unwrap();
    assert_eq!(h.gso_type, GSO_TCPV4);
    assert_eq!(h.flags, F_NEEDS_CSUM);
    assert_eq!(
        (h.gso_size, h.hdr_len, h.csum_start, h.csum_offset),
        (1448, 54, 34, 16)
    );
    // What the kernel makes of it: one segment of all the data, from
    // the first sequence number, its checksums right once finished.
    let mut frame = rec[VNET_HDR_SIZE..].to_vec();
    finish(&h, &mut frame).unwrap();
    assert_eq!(frame, seg(1000, ACK | PSH, &data));
}

#[test]
fn what_cannot_merge_goes_alone_in_order() {
    let p = [7u8; 1448];
    let udp = {
        let mut f = tcp4(b"x");
        f[14 + 9] = 17;
        f
    };
    let other_port = {
        let mut f = seg(2448, ACK, &p);
        f[34] ^= 1;
        f
    };
    let frames = [
        seg(1000, ACK, &p),
        udp.clone(), // not TCP: ends the run
        seg(2448, ACK, &p),
        seg(9999, ACK, &p),       // a gap
        other_port.clone(),       // another flow
        seg(1, ACK, &[]),         // a pure ACK
        seg(5000, ACK | PSH, &p), // PSH cannot start a run
        seg(6448, ACK, &p),
    ];
    let (out, merged) = run(&frames);
    assert_eq!(merged, 0);
    assert_eq!(out.len(), frames.len());
    for (rec, f) in out.iter().zip(&frames) {
        assert_eq!(&rec[..VNET_HDR_SIZE], &[0u8; VNET_HDR_SIZE]);
        assert_eq!(&rec[VNET_HDR_SIZE..], &f[..]);
    }
}

#[test]
fn a_short_or_pushed_segment_ends_the_run_and_64_kib_is_the_limit() {
    let p = [1u8; 1448];
    let (out, _) = run(&[
        seg(0, ACK, &p),
        seg(1448, ACK, &p[..100]),
        seg(1548, ACK, &p),
    ]);
    assert_eq!(out.len(), 2, "nothing joins after a short segment");
    let (out, _) = run(&[
        seg(0, ACK, &p),
        seg(1448, ACK | PSH, &p),
        seg(2896, ACK, &p),
    ]);
    assert_eq!(out.len(), 2, "nothing joins after PSH");
    let frames: Vec<Vec<u8>> = (0..60).map(|i| seg(i * 1448, ACK, &p)).collect();
    let (out, merged) = run(&frames);
    assert_eq!(merged, 2);
    for rec in &out {
        assert!(rec.len() - VNET_HDR_SIZE - 14 <= 65_535);
    }
    let total: usize = out.iter().map(|r| r.len() - VNET_HDR_SIZE - 54).sum();
    assert_eq!(total, 60 * 1448);
}

/// A TCP segment from [fd00::100]:40000 to [fd00::2]:5201 (or the
/// IPv4 `seg`'s addresses, with IPv4 identification `id`), checksums
/// complete.
fn seg_ip(v6: bool, id: u16, seq_no: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    if !v6 {
        let mut f = seg(seq_no, flags, payload);
        f[18..20].copy_from_slice(&id.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = !fold(sum_be(&f[14..34], 0));
        f[24..26].copy_from_slice(&c.to_be_bytes());
        return f;
    }
    let mut f = vec![0u8; 14 + 40 + 20];
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    let ip = &mut f[14..54];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    ip[6] = 6;
    ip[7] = 64;
    ip[8..10].copy_from_slice(&[0xfd, 0]);
    ip[23] = 0x100u16 as u8;
    ip[22] = 1;
    ip[24..26].copy_from_slice(&[0xfd, 0]);
    ip[39] = 2;
    let tcp = &mut f[54..74];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq_no.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    f.extend_from_slice(payload);
    let l4 = (f.len() - 54) as u64;
    let c = !fold(sum_be(&f[54..], sum_be(&f[22..54], 0) + 6 + l4));
    f[70..72].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn ipv6_segments_in_sequence_become_one_tcpv6_gso_frame() {
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 11) as u8).collect();
    let frames = [
        seg_ip(true, 0, 7, ACK, &data[..1428]),
        seg_ip(true, 0, 7 + 1428, ACK, &data[1428..2856]),
        seg_ip(true, 0, 7 + 2856, ACK | PSH, &data[2856..]),
    ];
    let (out, merged) = run(&frames);
    assert_eq!((out.len(), merged), (1, 1));
    let h = VnetHdr::parse(&out[0]).unwrap();
    assert_eq!(
        (
            h.gso_type,
            h.flags,
            h.gso_size,
            h.hdr_len,
            h.csum_start,
            h.csum_offset
        ),
        (GSO_TCPV6, F_NEEDS_CSUM, 1428, 74, 54, 16)
    );
    let mut frame = out[0][VNET_HDR_SIZE..].to_vec();
    assert_eq!(finish(&h, &mut frame).unwrap(), Offloaded::TcpSegment);
    assert_eq!(frame, seg_ip(true, 0, 7, ACK | PSH, &data));
    // An IPv4 and an IPv6 segment of the same ports never join.
    let mixed = [
        seg_ip(true, 0, 0, ACK, &data[..100]),
        seg(100, ACK, &data[..100]),
    ];
    assert_eq!(run(&mixed).1, 0);
    // A guest that accepted GUEST_TSO4 only gets IPv6 segments as
    // they were, IPv4 ones merged.
    let mut c = Coalescer::new(true, false);
    let mut out = Vec::new();
    let v4 = [seg(0, ACK, &data[..1000]), seg(1000, ACK, &data[..1000])];
    for f in frames.iter().chain(&v4) {
        c.push(f, &mut |h, f| out.push([h, f].concat()));
    }
    c.finish(&mut |h, f| out.push([h, f].concat()));
    assert_eq!((out.len(), c.merged()), (4, 1));
    for (rec, f) in out.iter().zip(&frames) {
        assert_eq!(&rec[..VNET_HDR_SIZE], &[0u8; VNET_HDR_SIZE]);
        assert_eq!(&rec[VNET_HDR_SIZE..], &f[..]);
    }
}

#[test]
fn segmenting_refuses_what_is_not_one_tcp_segment_or_leaves_no_room() {
    let mut udp = tcp4(b"abc");
    udp[14 + 9] = 17;
    let e = segment(&udp, 1500, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("not one TCP/IP segment"), "{e}");
    let e = segment(&seg_ip(true, 0, 0, ACK, b"abc"), 60, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("MTU of 60"), "{e}");
    // No payload: the one segment as it is.
    let pure = seg_ip(true, 0, 5, ACK, b"");
    let mut got = Vec::new();
    assert_eq!(
        segment(&pure, 1500, &mut |f| got.push(f.to_vec())).unwrap(),
        1
    );
    assert_eq!(got, vec![pure]);
}

proptest! {
    /// What a sender's segments become through the coalescer and back
    /// through software segmentation is those segments, byte for byte:
    /// headers, flags, IPv4 identifications and checksums.
    #[test]
    fn merging_then_segmenting_gives_back_the_segments(
        v6 in any::<bool>(),
        mss in 1usize..1500,
        full in 1usize..12,
        tail in 0usize..1500,
        fin in any::<bool>(),
        seq0 in any::<u32>(),
        id0 in any::<u16>(),
    ) {
        let tail = tail % mss;
        let sizes: Vec<usize> = std::iter::repeat_n(mss, full).chain((tail > 0).then_some(tail)).collect();
        let mut frames = Vec::new();
        let mut at = seq0;
        for (i, &n) in sizes.iter().enumerate() {
            let last = i + 1 == sizes.len();
            let flags = if last { ACK | PSH } else { ACK };
            let payload: Vec<u8> = (0..n).map(|k| (k * 31 + i) as u8).collect();
            frames.push(seg_ip(v6, id0.wrapping_add(i as u16), at, flags, &payload));
            at = at.wrapping_add(n as u32);
        }
        let (out, _) = run(&frames);
        prop_assert_eq!(out.len(), 1);
        let h = VnetHdr::parse(&out[0]).unwrap();
        let mut frame = out[0][VNET_HDR_SIZE..].to_vec();
        finish(&h, &mut frame).unwrap();
        let hdr = if v6 { 74 } else { 54 };
        let mtu = hdr - 14 + mss;
        let mut back = Vec::new();
        let n = segment(&frame, mtu, &mut |f| back.push(f.to_vec())).unwrap();
        prop_assert_eq!(n, frames.len());
        if fin {
            // A FIN on the whole lands on the last segment only.
            let mut with_fin = frame.clone();
            with_fin[hdr - 20 + 13] |= 0x01;
            let mut last = Vec::new();
            segment(&with_fin, mtu, &mut |f| last = f.to_vec()).unwrap();
            prop_assert_eq!(last[hdr - 20 + 13], ACK | PSH | 0x01);
        }
        prop_assert_eq!(back, frames.to_vec());
    }

    /// Whatever a hostile guest puts in a super-segment's headers,
    /// segmenting it never panics and never emits more than the MTU.
    #[test]
    fn segmenting_a_scribbled_frame_never_panics_or_exceeds_the_mtu(
        v6 in any::<bool>(),
        len in 0usize..5000,
        pokes in proptest::collection::vec((0usize..80, any::<u8>()), 0..6),
        cut in 0usize..100,
        mtu in 0usize..2000,
    ) {
        let payload: Vec<u8> = (0..len).map(|k| k as u8).collect();
        let mut f = seg_ip(v6, 1, 2, ACK, &payload);
        for (at, b) in pokes {
            if at < f.len() {
                f[at] = b;
            }
        }
        f.truncate(f.len().saturating_sub(cut));
        let _ = segment(&f, mtu, &mut |s| assert!(s.len() <= mtu + ETH));
    }

    #[test]
    fn finish_never_panics(hdr in proptest::array::uniform10(any::<u8>()),
                           frame in proptest::collection::vec(any::<u8>(), 0..200)) {
        let h = VnetHdr::parse(&hdr).unwrap();
        let mut f = frame;
        let _ = finish(&h, &mut f);
    }

    #[test]
    fn coalescing_keeps_every_byte_in_order(
        sizes in proptest::collection::vec(0usize..1600, 0..40),
        gaps in proptest::collection::vec(any::<bool>(), 40),
    ) {
        let mut frames = Vec::new();
        let mut seq_no = 0u32;
        for (i, &n) in sizes.iter().enumerate() {
            if gaps[i] { seq_no += 7; }
            let payload: Vec<u8> = (0..n).map(|k| (k + i) as u8).collect();
            frames.push(seg(seq_no, ACK, &payload));
            seq_no += n as u32;
        }
        let (out, _) = run(&frames);
        // The payload of every record, in order, is the payload of
        // every frame, in order.
        let want: Vec<u8> = frames.iter().flat_map(|f| f[54..].to_vec()).collect();
        let got: Vec<u8> = out.iter().flat_map(|r| r[VNET_HDR_SIZE + 54..].to_vec()).collect();
        prop_assert_eq!(got, want);
        prop_assert!(out.len() <= frames.len());
    }

    #[test]
    fn wide_sums_are_the_sum_of_words(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut acc = 0u64;
        for pair in data.chunks(2) {
            let w = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            acc += u64::from(w);
        }
        prop_assert_eq!(fold(sum_be(&data, 0)), fold(acc));
    }
}

#[test]
fn segments_too_large_to_merge_go_on_as_they_came() {
    // MTU 65520's segments: no second one would fit beside the first.
    let data: Vec<u8> = (0..80_000u32).map(|i| (i * 7) as u8).collect();
    let frames = [
        seg(0, ACK, &data[..40_000]),
        seg(40_000, ACK, &data[40_000..]),
    ];
    let (out, merged) = run(&frames);
    assert_eq!((out.len(), merged), (2, 0));
    for (rec, f) in out.iter().zip(&frames) {
        assert_eq!(&rec[..VNET_HDR_SIZE], &EMPTY_HDR);
        assert_eq!(&rec[VNET_HDR_SIZE..], &f[..]);
    }
    // Half that merges, as before.
    let small = [
        seg(0, ACK, &data[..30_000]),
        seg(30_000, ACK, &data[30_000..60_000]),
    ];
    assert_eq!(run(&small).1, 1);
    // The receive side hands them on whole, in order, after what it held.
    let mut gro = crate::frame::gro::Gro::default();
    let mut got = Vec::new();
    let ack_only = seg(0, ACK, &data[..100]);
    for f in [&ack_only, &frames[0], &frames[1]] {
        gro.push(f, &mut |k, b| got.push((k, b.to_vec())));
    }
    gro.finish(&mut |k, b| got.push((k, b.to_vec())));
    let want: Vec<_> = [&ack_only, &frames[0], &frames[1]]
        .iter()
        .map(|f| (Offloaded::Frame, f.to_vec()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn the_views_read_a_segment_field_by_field() {
    let f = tcp4(b"hello");
    let eth = Ethernet::new_checked(&f[..]).unwrap();
    assert_eq!(eth.ethertype(), ETHERTYPE_IPV4);
    let ip = Ipv4::new_checked(eth.payload()).unwrap();
    assert_eq!(
        (ip.header_len(), ip.total_len(), ip.protocol()),
        (20, 45, PROTO_TCP)
    );
    assert_eq!((ip.src(), ip.dst()), ([10, 0, 2, 100], [10, 0, 2, 2]));
    assert!(ip.checksum_ok() && !ip.is_fragment());
    let tcp = Tcp::new_checked(ip.payload()).unwrap();
    assert_eq!((tcp.src_port(), tcp.dst_port()), (40000, 5201));
    assert_eq!(
        (tcp.flags(), tcp.window(), tcp.header_len()),
        (0x18, 64240, 20)
    );
    assert_eq!(tcp.payload(), b"hello");
    assert!(tcp.checksum_ok(ip.pseudo_sum(25)));
    assert!(!tcp.checksum_ok(ip.pseudo_sum(24)));
    assert_eq!(tcp_segment(&f), Some((TCP, 5)));
}

#[test]
fn the_views_refuse_what_they_cannot_hold_and_say_why() {
    let f = tcp4(b"hello");
    assert_eq!(
        Ethernet::new_checked(&f[..13]).unwrap_err(),
        super::FrameError::Short { have: 13, need: 14 }
    );
    let mut ip = f[ETH..].to_vec();
    ip[2..4].copy_from_slice(&100u16.to_be_bytes());
    let e = Ipv4::new_checked(&ip[..]).unwrap_err().to_string();
    assert!(e.contains("total length 100 in 45 bytes"), "{e}");
    ip[0] = 0x65;
    let e = Ipv4::new_checked(&ip[..]).unwrap_err().to_string();
    assert!(e.contains("IP version 6"), "{e}");
    let mut v6 = [0u8; 48];
    v6[0] = 0x60;
    v6[4..6].copy_from_slice(&9u16.to_be_bytes());
    let e = Ipv6::new_checked(&v6[..]).unwrap_err().to_string();
    assert!(e.contains("payload length 9 in 48 bytes"), "{e}");
    v6[5] = 8;
    assert_eq!(Ipv6::new_checked(&v6[..]).unwrap().payload().len(), 8);
    let mut seg = f[TCP..].to_vec();
    seg[12] = 15 << 4;
    let e = Tcp::new_checked(&seg[..]).unwrap_err().to_string();
    assert!(e.contains("data offset 60 in a 25-byte segment"), "{e}");
    let udp = [0, 53, 0, 54, 0, 9, 0, 0];
    let e = Udp::new_checked(&udp[..]).unwrap_err().to_string();
    assert!(e.contains("UDP length 9 in 8 bytes"), "{e}");
    let udp = [0, 53, 0, 54, 0, 8, 0, 0, 0xaa];
    let u = Udp::new_checked(&udp[..]).unwrap();
    assert_eq!((u.src_port(), u.dst_port(), u.payload()), (53, 54, &[][..]));
}

proptest! {
    /// Whatever the bytes, a view either refuses them or every accessor
    /// answers without a panic.
    #[test]
    fn a_view_of_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        if let Ok(e) = Ethernet::new_checked(&bytes[..]) {
            let _ = (e.dst(), e.src(), e.ethertype(), e.payload());
        }
        for ip in [Ipv4::new_checked(&bytes[..]), Ipv4::new_header(&bytes[..])].into_iter().flatten() {
            let _ = (ip.header_len(), ip.ident(), ip.is_fragment(), ip.protocol(), ip.src(), ip.dst());
            let _ = (ip.header(), ip.checksum_ok(), ip.payload(), ip.pseudo_sum(1), ip.into_payload());
        }
        for ip in [Ipv6::new_checked(&bytes[..]), Ipv6::new_header(&bytes[..])].into_iter().flatten() {
            let _ = (ip.payload_len(), ip.next_header(), ip.addrs(), ip.payload(), ip.into_payload());
        }
        if let Ok(t) = Tcp::new_checked(&bytes[..]) {
            let _ = (t.seq(), t.ack(), t.flags(), t.window(), t.urgent_ptr(), t.is_urgent());
            let _ = (t.options(), t.payload(), t.checksum_ok(0), t.ports());
        }
        if let Ok(u) = Udp::new_checked(&bytes[..]) {
            let _ = (u.len(), u.checksum(), u.payload(), u.is_empty());
        }
        let _ = (tcp_segment(&bytes), ethertype(&bytes));
    }
}

#[test]
fn a_neighbour_solicitation_is_one_smoltcp_reads_with_its_checksum() {
    use smoltcp::wire::{EthernetFrame, Icmpv6Packet, Icmpv6Repr, Ipv6Packet, NdiscRepr};
    let mac = [0x52, 0x55, 10, 0, 2, 2];
    let me: std::net::Ipv6Addr = "fd00::2".parse().unwrap();
    let target: std::net::Ipv6Addr = "fd00::abcd:1234".parse().unwrap();
    let f = neighbour_solicitation(mac, me.octets(), target.octets());
    let eth = EthernetFrame::new_checked(&f[..]).unwrap();
    assert_eq!(eth.dst_addr().0, [0x33, 0x33, 0xff, 0xcd, 0x12, 0x34]);
    let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.hop_limit(), 255);
    let group: std::net::Ipv6Addr = "ff02::1:ffcd:1234".parse().unwrap();
    assert_eq!(ip.dst_addr(), group);
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    let repr = Icmpv6Repr::parse(
        &me,
        &group,
        &icmp,
        &smoltcp::phy::ChecksumCapabilities::default(),
    )
    .expect("a valid checksum");
    match repr {
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
            target_addr,
            lladdr,
        }) => {
            assert_eq!(target_addr, target);
            assert_eq!(lladdr.unwrap().as_bytes(), &mac);
        }
        other => panic!("not a solicitation: {other:?}"),
    }
}

/// What a link without offloads gets from a super-segment made for one
/// with them: the segments it was built from (their TCP bytes, sequence
/// numbers and flags, checksums complete); a plain frame with a partial
/// checksum gets it finished; a header that lies is an error, nothing
/// emitted.
#[test]
fn completing_a_record_gives_back_what_a_peer_without_offloads_takes() {
    let data: Vec<u8> = (0..3896u32).map(|i| (i * 7) as u8).collect();
    let frames = [
        seg(1000, ACK, &data[..1448]),
        seg(2448, ACK, &data[1448..2896]),
        seg(3896, ACK | PSH, &data[2896..]),
    ];
    let (out, _) = run(&frames);
    let h = VnetHdr::parse(&out[0]).unwrap();
    let mut rec = out[0][VNET_HDR_SIZE..].to_vec();
    let mut pieces = Vec::new();
    let n = complete(&h, &mut rec, &mut |f| pieces.push(f.to_vec())).unwrap();
    assert_eq!(n, 3);
    for (piece, want) in pieces.iter().zip(&frames) {
        assert!(tcp4_checksum_ok(piece));
        assert_eq!(piece[TCP..], want[TCP..], "TCP header and payload");
    }

    // One segment with a partial checksum: finished, nothing cut.
    let mut partial = seg(1000, ACK, &data[..100]);
    let whole = partial.clone();
    let pseudo = Ipv4::new_checked(&partial[ETH..]).unwrap().pseudo_sum(120);
    partial[TCP + 16..TCP + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
    let plain = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_NONE,
        hdr_len: 54,
        gso_size: 0,
        csum_start: TCP as u16,
        csum_offset: 16,
    };
    let mut got = Vec::new();
    assert_eq!(
        complete(&plain, &mut partial, &mut |f| got.push(f.to_vec())),
        Ok(1)
    );
    assert_eq!(got, [whole]);

    // A segment size of 0, and a GSO header on a frame that is not TCP.
    let zero = VnetHdr { gso_size: 0, ..h };
    let mut r = out[0][VNET_HDR_SIZE..].to_vec();
    let e = complete(&zero, &mut r, &mut |_| panic!("emitted")).unwrap_err();
    assert!(e.to_string().contains("segment size of 0"), "{e}");
    let mut udp = tcp4(b"x");
    udp[ETH + 9] = 17;
    let e = complete(&h, &mut udp, &mut |_| panic!("emitted")).unwrap_err();
    assert!(e.to_string().contains("not one TCP/IP segment"), "{e}");
}

/// The MSS option read from a SYN's options: found after NOPs and other
/// options; options cut short, a length below 2 or past the header, or an
/// end-of-list before it give none (never a panic).
#[test]
fn the_mss_option_is_read_or_not_found() {
    let with = |opts: &[u8]| {
        let mut h = vec![0u8; 20];
        h[12] = (((20 + opts.len()) / 4) << 4) as u8;
        h.extend_from_slice(opts);
        Tcp::new_checked(h).unwrap().mss()
    };
    assert_eq!(with(&[2, 4, 0x05, 0xb4]), Some(1460));
    assert_eq!(
        with(&[1, 1, 3, 3, 7, 1, 2, 4, 0x05, 0xa0, 0, 0]),
        Some(1440)
    );
    assert_eq!(with(&[4, 2, 2, 4, 0xff, 0xd7, 1, 1]), Some(65495));
    assert_eq!(with(&[0, 0, 2, 4, 5, 180, 0, 0]), None);
    assert_eq!(with(&[3, 0, 2, 4]), None);
    assert_eq!(with(&[3, 9, 2, 4]), None);
    assert_eq!(with(&[1, 1, 1, 2]), None);
    assert_eq!(with(&[]), None);
}
