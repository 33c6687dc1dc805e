//! Arbitrary guest frames, and sequences of them, through a real libslirp
//! `Stack` on a real reactor, the way every front end hands them in:
//! `Stack::input` per frame, then a reactor round. Nothing may crash,
//! hang or panic, and every frame libslirp sends back must fit the link
//! (14 to MTU + 14 bytes).
//!
//! Input: one byte choosing the network (MTU 1500, 576 or 65520; IPv6 on or
//! off), then records: a length (2 bytes, little endian, masked to the MRU
//! plus some) and a kind byte: kind 0 takes the bytes as a whole Ethernet
//! frame; kinds 1 to 3 prepend an Ethernet header (to the gateway's MAC,
//! from the guest's) for ARP, IPv4 or IPv6, so the fuzzer spends its time
//! in the protocols. Bit 2 of the kind byte hands the frame over as a TCP
//! super-segment (`Stack::input_segment`, up to 64 KiB, as from a tap with
//! segmentation offload), an IPv4 one with its lengths and checksums made
//! right, an IPv6 one with its length right (cut to the MTU there); bit 5
//! hands it over with its TCP checksum left partial
//! (`Stack::input_partial`: the own path takes it as it is, libslirp
//! after the sum is finished), bit 6 with a checksum field anywhere, even
//! past its end. Every input frame also goes through an ACK thinner
//! (`caploop::net::acks`), which must hand on or count each once, and
//! into the stack through receive coalescing (`caploop::net::gro`), as the
//! helper does; bit 3 of the kind byte puts a frame in one batch with the
//! next (an IPv4 one made a valid TCP segment), so runs can merge. Bit 3
//! of the first byte makes the stack open with the own TCP path
//! (`TcpMode::Own`), so SYNs open flows and segments reach smoltcp; else
//! it is restricted; bit 4 has the link take offloads
//! (`Stack::set_offload`), and every frame the path hands it with a
//! virtio-net header must complete (`offload::complete`) into frames that
//! fit the link. The target runs in a network namespace of its own
//! with only a loopback that is down (made at start, as root): nothing
//! leaves the machine, and every connect the path makes fails, which it
//! answers with a RST. The stack is made afresh for each input, so a
//! crash reproduces from its input; the reactor is kept (the stack
//! removes all it added when closed).
#![no_main]

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use caploop::net::acks::AckThinner;
use caploop::net::gro::Gro;
use caploop::net::offload::{complete, Offloaded, Partial, VnetHdr};
use caploop::slirp::{Config, Stack, TcpMode};
use caploop::Reactor;
use libfuzzer_sys::fuzz_target;

const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

thread_local! {
    static REACTOR: RefCell<Reactor<()>> = RefCell::new({
        // SAFETY: unshare changes only this process's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "guest_frames runs as root, in a network namespace of its own");
        Reactor::new().expect("reactor")
    });
}

fuzz_target!(|data: &[u8]| REACTOR.with(|r| run(&mut r.borrow_mut(), data)));

fn run(reactor: &mut Reactor<()>, data: &[u8]) {
    let Some((&choice, mut rest)) = data.split_first() else {
        return;
    };
    let mtu = [1500, 576, 65520][usize::from(choice & 3) % 3];
    let own = choice & 8 != 0;
    let config = Config {
        mtu,
        mru: mtu,
        ipv6: choice & 4 == 0,
        restricted: !own,
        tcp: if own { TcpMode::Own } else { TcpMode::Slirp },
        ..Config::default()
    };
    let bad = Rc::new(Cell::new(None::<usize>));
    let sink_bad = bad.clone();
    let stack = Stack::new(reactor, config, move |frame: &[u8]| {
        if frame.len() < 14 || frame.len() > mtu + 14 {
            sink_bad.set(Some(frame.len()));
        }
    })
    .expect("stack");
    if choice & 16 != 0 {
        let off_bad = bad.clone();
        stack.set_offload(
            || (true, true),
            move |hdr, frame| {
                let mut f = frame.to_vec();
                let done = VnetHdr::parse(hdr).and_then(|h| {
                    complete(&h, &mut f, &mut |piece| {
                        if piece.len() < 14 || piece.len() > mtu + 14 {
                            off_bad.set(Some(piece.len()));
                        }
                    })
                });
                if done.is_err() {
                    off_bad.set(Some(frame.len()));
                }
            },
        );
    }
    let mut frame = Vec::with_capacity(mtu + 64);
    let mut frames = 0;
    let mut thin = AckThinner::default();
    let mut gro = Gro::default();
    let (mut pushed, mut emitted) = (0u64, 0u64);
    while rest.len() >= 3 && frames < 64 {
        // Bit 2 of the kind byte: a TCP super-segment from an offloading
        // tap (`Stack::input_segment`), up to 64 KiB whatever the MTU.
        let segment = rest[2] & 4 != 0;
        let limit = if segment { 65_600 } else { mtu + 64 };
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])) % limit;
        let kind = rest[2] & 3;
        let rest_kind = rest[2];
        rest = &rest[3..];
        let len = len.min(rest.len());
        let (body, tail) = rest.split_at(len);
        rest = tail;
        frame.clear();
        if kind != 0 {
            frame.extend_from_slice(&GATEWAY_MAC);
            frame.extend_from_slice(&GUEST_MAC);
            frame.extend_from_slice(match kind {
                1 => &[0x08, 0x06],
                2 => &[0x08, 0x00],
                _ => &[0x86, 0xdd],
            });
        }
        frame.extend_from_slice(body);
        // The ACK thinner parses what it is handed: hostile bytes too.
        let mut out = 0u64;
        thin.push(&frame, &mut |_| out += 1);
        pushed += 1;
        emitted += out;
        // Bit 3: the frame is in one batch with the next (no round
        // between), so runs of segments can merge.
        let batched = rest_kind & 8 != 0;
        let mut input = |kind: Offloaded, bytes: &[u8]| match kind {
            Offloaded::Frame => stack.input(bytes),
            Offloaded::TcpSegment => stack.input_segment(bytes),
        };
        if segment {
            match kind {
                2 => as_tcp4_segment(&mut frame),
                3 => as_tcp6_segment(&mut frame),
                _ => {}
            }
            gro.finish(&mut input);
            // Bit 5: its TCP checksum left partial (`Stack::input_partial`),
            // where the TCP header is, or (bit 6) anywhere, even past it.
            if rest_kind & 0x20 != 0 {
                let start = if kind == 3 { 54 } else { 34 };
                let partial = if rest_kind & 0x40 != 0 {
                    Partial { start: frame.len(), offset: usize::from(rest_kind) }
                } else {
                    Partial { start, offset: 16 }
                };
                stack.input_partial(&mut frame, partial);
            } else {
                stack.input_segment(&frame);
            }
        } else {
            if kind == 2 && batched {
                as_tcp4_segment(&mut frame);
            }
            // As the serve core does: through receive coalescing.
            gro.push(&frame, &mut input);
        }
        if !batched {
            gro.finish(&mut input);
            reactor
                .run_once(Some(Duration::ZERO), &mut ())
                .expect("reactor round");
        }
        frames += 1;
    }
    gro.finish(&mut |kind, bytes| match kind {
        Offloaded::Frame => stack.input(bytes),
        Offloaded::TcpSegment => stack.input_segment(bytes),
    });
    stack.close(reactor);
    thin.finish(&mut |_| emitted += 1);
    // Every frame goes out or is counted as superseded, once.
    assert_eq!(
        emitted + thin.thinned(),
        pushed,
        "the ACK thinner lost or doubled a frame"
    );
    if let Some(len) = bad.get() {
        panic!("libslirp sent a {len}-byte frame on a link with MTU {mtu}");
    }
}

/// Makes an IPv4 frame look like what an offloading tap hands over: TCP,
/// not a fragment, the total length the frame's, the header checksum
/// right, so that the fuzzer spends its time past libslirp's IP checks.
fn as_tcp4_segment(frame: &mut [u8]) {
    let Some(ip) = frame.get_mut(14..) else {
        return;
    };
    if ip.len() < 40 || ip.len() > 65_535 {
        return;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 || ihl + 20 > ip.len() {
        return;
    }
    ip[0] = 0x40 | (ip[0] & 0x0f);
    let total = ip.len() as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] &= 0x40;
    ip[7] = 0;
    ip[9] = 6;
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&ip[..ihl], 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    // And the TCP checksum, over the pseudo-header and the segment.
    ip[ihl + 16..ihl + 18].copy_from_slice(&[0, 0]);
    let pseudo = checksum_sum(&ip[12..20]) + 6 + (ip.len() - ihl) as u64;
    let c = checksum(&ip[ihl..], pseudo);
    ip[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
}

/// Makes an IPv6 frame a TCP segment without extension headers whose
/// payload length is the frame's, so that `Stack::input_segment` cuts it
/// to the MTU (`offload::segment`) and libslirp's TCP takes the pieces.
fn as_tcp6_segment(frame: &mut [u8]) {
    let Some(ip) = frame.get_mut(14..) else {
        return;
    };
    if ip.len() < 60 || ip.len() > 65_535 + 40 {
        return;
    }
    ip[0] = 0x60 | (ip[0] & 0x0f);
    let payload = (ip.len() - 40) as u16;
    ip[4..6].copy_from_slice(&payload.to_be_bytes());
    ip[6] = 6;
    ip[40 + 12] = (ip[40 + 12] & 0xf0).max(0x50);
}

/// The one's complement sum of `data` as big-endian 16-bit words.
fn checksum_sum(data: &[u8]) -> u64 {
    data.chunks(2)
        .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum()
}

/// The Internet checksum of `data`, starting from `acc`.
fn checksum(data: &[u8], acc: u64) -> u16 {
    let mut sum = acc + checksum_sum(data);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
