//! TCP urgent data from the guest never makes the host peer receive a
//! byte the guest did not send. libslirp 4.7, given a segment with URG and
//! an urgent pointer of 0xFFFF, sends the host zeros it made up; the stack
//! clears urgent data in front of it. Tried with a real guest stack
//! (smoltcp) through a host forward, its frames rewritten on the way in:
//! plain segments and TSO super-segments (`Stack::input_segment`), IPv4
//! and IPv6. The own TCP path (the default) takes the same segments and
//! reads no urgent pointer at all: tried the same way.

mod common;

use std::io::Read;
use std::net::{IpAddr, Ipv6Addr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use caploop::slirp::{Config, Proto, Stack, TcpMode};
use common::guest::{pattern, Net, Upload};

const LEN: usize = 256 * 1024;
const GUEST6: &str = "fd00::15";

fn sum(data: &[u8], start: u64) -> u64 {
    data.chunks(2).fold(start, |s, c| {
        s + u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
    })
}

fn fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The TCP header's offset in a TCP/IPv4 or TCP/IPv6 frame, and the
/// payload's.
fn tcp_of(f: &[u8]) -> Option<(usize, usize)> {
    let t = match f.get(12..14)? {
        [0x08, 0x00] if *f.get(23)? == 6 => 14 + usize::from(f[14] & 0x0f) * 4,
        [0x86, 0xdd] if *f.get(20)? == 6 => 54,
        _ => return None,
    };
    let p = t + usize::from(*f.get(t + 12)? >> 4) * 4;
    (f.len() >= p).then_some((t, p))
}

/// Sets IP lengths and checksums, and the TCP checksum, from the bytes.
fn fix(f: &mut [u8]) {
    let (t, _) = tcp_of(f).unwrap();
    let v6 = f[12] == 0x86;
    if v6 {
        let n = (f.len() - 54) as u16;
        f[18..20].copy_from_slice(&n.to_be_bytes());
    } else {
        let n = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&n.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = !fold(sum(&f[14..t], 0));
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }
    f[t + 16..t + 18].copy_from_slice(&[0, 0]);
    let addrs = if v6 { &f[22..54] } else { &f[26..34] };
    let pseudo = sum(addrs, 0) + 6 + (f.len() - t) as u64;
    let c = !fold(sum(&f[t..], pseudo));
    f[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
}

/// Marks a data segment urgent, pointer 0xFFFF.
fn make_urgent(f: &mut [u8]) {
    let (t, _) = tcp_of(f).unwrap();
    f[t + 13] |= 0x20;
    f[t + 18..t + 20].copy_from_slice(&0xffffu16.to_be_bytes());
    fix(f);
}

fn seq(f: &[u8], t: usize) -> u32 {
    u32::from_be_bytes(f[t + 4..t + 8].try_into().unwrap())
}

/// How the guest's data segments are rewritten on their way in.
#[derive(Clone, Copy, Debug)]
enum Way {
    /// Every 7th data segment (the first among them) urgent, each on its
    /// own through `Stack::input`.
    Segments,
    /// Pairs of data segments merged into one urgent super-segment through
    /// `Stack::input_segment`, as a TSO guest sends them.
    SuperSegments,
}

/// A feed that rewrites the guest's TCP data segments `way`.
fn feed(way: Way) -> common::guest::Feed {
    let mut held: Option<Vec<u8>> = None;
    let mut n = 0u32;
    Box::new(move |stack: &Stack, mut f: Vec<u8>| {
        let data = tcp_of(&f).is_some_and(|(_, p)| f.len() > p);
        if !data {
            if let Some(h) = held.take() {
                stack.input(&h);
            }
            return stack.input(&f);
        }
        match way {
            Way::Segments => {
                if n.is_multiple_of(7) {
                    make_urgent(&mut f);
                }
                n += 1;
                stack.input(&f);
            }
            Way::SuperSegments => {
                let Some(mut h) = held.take() else {
                    held = Some(f);
                    return;
                };
                let ((t, p), (t2, p2)) = (tcp_of(&h).unwrap(), tcp_of(&f).unwrap());
                if seq(&h, t).wrapping_add((h.len() - p) as u32) != seq(&f, t2) {
                    stack.input(&h);
                    held = Some(f);
                    return;
                }
                h.extend_from_slice(&f[p2..]);
                h[t + 13] |= f[t2 + 13] & 0x09; // PSH, FIN
                make_urgent(&mut h);
                stack.input_segment(&h);
            }
        }
    })
}

/// The guest sends `LEN` bytes to a host client through a forward, its
/// frames rewritten `way`, to the stack's TCP in `tcp`; what the client
/// read, and how many segments the stack cleared of urgent data
/// (libslirp) or the own path took.
fn transfer(v6: bool, way: Way, tcp: TcpMode) -> (Vec<u8>, u64) {
    let mut net = Net::new(Config {
        tcp,
        ..Config::default()
    });
    net.dhcp();
    let port = if v6 {
        net.forward6(GUEST6.parse().unwrap(), 80)
    } else {
        net.forward(Proto::Tcp, 80)
    };
    net.feed = Some(feed(way));
    let listen = net.guest.tcp_listen(80, 64 * 1024);
    let host: IpAddr = if v6 {
        Ipv6Addr::LOCALHOST.into()
    } else {
        [127, 0, 0, 1].into()
    };
    let client = thread::spawn(move || {
        let mut s = TcpStream::connect((host, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    let mut up = Upload::new(pattern(LEN, 7));
    net.run_until(Duration::from_secs(15), |n| {
        up.step(n.guest.tcp(listen));
        client.is_finished()
    });
    let cleared = match tcp {
        TcpMode::Slirp => net.stack.counters().urgent_cleared,
        TcpMode::Own => net.stack.tcp_counters().map_or(0, |c| c.frames_in),
    };
    (client.join().unwrap(), cleared)
}

fn check(v6: bool, way: Way, tcp: TcpMode) {
    if v6 && TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let (got, cleared) = transfer(v6, way, tcp);
    let want = pattern(LEN, 7);
    let what = format!("{} {way:?} {tcp:?}", if v6 { "IPv6" } else { "IPv4" });
    assert!(cleared > 0, "{what}: no urgent segment reached the stack");
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: the host read {} bytes",
        got.len()
    );
    if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("{what}: the host read a byte the guest did not send at offset {at}");
    }
    eprintln!(
        "{what}: {} bytes byte-exact, {cleared} segments cleared or taken",
        got.len()
    );
}

#[test]
fn urgent_segments_deliver_only_the_guests_bytes_over_ipv4_through_libslirp() {
    check(false, Way::Segments, TcpMode::Slirp);
}

#[test]
fn urgent_segments_deliver_only_the_guests_bytes_over_ipv4_through_the_own_path() {
    check(false, Way::Segments, TcpMode::Own);
}

#[test]
fn urgent_segments_deliver_only_the_guests_bytes_over_ipv6_through_libslirp() {
    check(true, Way::Segments, TcpMode::Slirp);
}

#[test]
fn urgent_segments_deliver_only_the_guests_bytes_over_ipv6_through_the_own_path() {
    check(true, Way::Segments, TcpMode::Own);
}

#[test]
fn urgent_super_segments_deliver_only_the_guests_bytes_over_ipv4_through_libslirp() {
    check(false, Way::SuperSegments, TcpMode::Slirp);
}

#[test]
fn urgent_super_segments_deliver_only_the_guests_bytes_over_ipv4_through_the_own_path() {
    check(false, Way::SuperSegments, TcpMode::Own);
}

#[test]
fn urgent_super_segments_deliver_only_the_guests_bytes_over_ipv6_through_libslirp() {
    check(true, Way::SuperSegments, TcpMode::Slirp);
}

#[test]
fn urgent_super_segments_deliver_only_the_guests_bytes_over_ipv6_through_the_own_path() {
    check(true, Way::SuperSegments, TcpMode::Own);
}
