//! The tap back end against the kernel, in network namespaces of the tests'
//! own: frames the kernel sends arrive through `NetBackend::recv` from the
//! reactor callback, frames we send reach kernel sockets, and `Netbe` adapts
//! a 12- or 10-byte virtio-net header. Needs root and /dev/net/tun; skipped
//! (with a message) without them. Linux only (network namespaces).

#![cfg(target_os = "linux")]

#[path = "common/netns.rs"]
mod netns;

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use caploop::net::tap::{TapBackend, TapDevice, TAP_OFFLOADS, TAP_RIGHTS};
use caploop::net::{self, Error, NetBackend, Netbe};
use caploop::{Reactor, Rights};
use netns::Netns;

const TAP: &str = "tap0";
const TAP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x09, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x09, 0x02];
const TAP_IP: [u8; 4] = [10, 0, 9, 1];
const PEER_IP: [u8; 4] = [10, 0, 9, 2];

// ----- frames ----------------------------------------------------------

fn csum_add(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4_checksum(hdr: &[u8]) -> u16 {
    csum_fold(csum_add(0, hdr))
}

/// An Ethernet frame carrying a UDP datagram, every checksum right.
fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut ip = vec![
        0x45,
        0,
        (ip_len >> 8) as u8,
        ip_len as u8,
        0x12,
        0x34,
        0x40,
        0, // DF
        64,
        17,
        0,
        0,
    ];
    ip.extend_from_slice(&src.ip().octets());
    ip.extend_from_slice(&dst.ip().octets());
    let c = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());

    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    let mut c = csum_fold(csum_add(csum_add(0, &pseudo), &udp));
    if c == 0 {
        c = 0xffff;
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());

    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    f
}

/// An ARP reply: `PEER_IP` is at `PEER_MAC`, to the tap.
fn arp_reply() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&TAP_MAC);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&PEER_IP);
    f.extend_from_slice(&TAP_MAC);
    f.extend_from_slice(&TAP_IP);
    f
}

fn is_arp_request_for_peer(f: &[u8]) -> bool {
    f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1] && f[38..42] == PEER_IP
}

fn is_udp_to_peer(f: &[u8]) -> bool {
    f.len() >= 42 && f[12..14] == [0x08, 0x00] && f[23] == 17 && f[30..34] == PEER_IP
}

// ----- set-up ----------------------------------------------------------

/// The loop's state: the back end (in the front end's place) and what its
/// callback received.
#[derive(Default)]
struct St {
    be: Option<Box<dyn NetBackend<St>>>,
    netbe: Option<Netbe<St>>,
    frames: Vec<Vec<u8>>,
    errors: Vec<String>,
    calls: usize,
}

/// The receive callback: drains whichever of `be` or `netbe` is set.
fn drain(_r: &mut Reactor<St>, st: &mut St) {
    st.calls += 1;
    loop {
        let mut a = [0u8; 7];
        let mut b = vec![0u8; 4096];
        let res = if let Some(nb) = st.netbe.as_mut() {
            nb.recv(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)])
        } else if let Some(be) = st.be.as_mut() {
            be.recv(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)])
        } else {
            return;
        };
        match res {
            Ok(Some(n)) => {
                let mut f = a.to_vec();
                f.extend_from_slice(&b);
                f.truncate(n);
                st.frames.push(f);
            }
            Ok(None) => return,
            Err(e) => {
                st.errors.push(e.to_string());
                return;
            }
        }
    }
}

/// A namespace with `tap0` opened in it (by our back-end code, on a thread
/// inside it), given `TAP_MAC` and `TAP_IP`/24, and up.
fn setup(vnet: bool) -> (Netns, TapDevice) {
    let ns = Netns::new().expect("ip netns add");
    // No IPv6 in the namespace: no router solicitations or MLD reports
    // among the frames the tests look at.
    ns.run_in(|| {
        for conf in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
            // Without IPv6 in the kernel there is nothing to disable.
            let _ = std::fs::write(path, "1");
        }
    })
    .expect("thread in the namespace");
    let dev = ns
        .run_in(move || {
            if vnet {
                TapDevice::open_vnet(TAP)
            } else {
                TapDevice::open(TAP)
            }
        })
        .expect("thread in the namespace")
        .expect("opening the tap in the namespace");
    assert_eq!(dev.name(), TAP);
    let mac = TAP_MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    ns.ip(&["link", "set", TAP, "address", &mac]).unwrap();
    ns.ip(&["addr", "add", "10.0.9.1/24", "dev", TAP]).unwrap();
    ns.ip(&["link", "set", TAP, "up"]).unwrap();
    (ns, dev)
}

/// A UDP socket bound inside the namespace.
fn udp_in(ns: &Netns, addr: SocketAddrV4) -> UdpSocket {
    let s = ns
        .run_in(move || UdpSocket::bind(addr))
        .unwrap()
        .expect("binding a UDP socket in the namespace");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

/// Runs the loop until `done` holds or 5 s pass.
fn run_until(r: &mut Reactor<St>, st: &mut St, done: impl Fn(&St) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(st) {
        if Instant::now() >= deadline {
            return false;
        }
        r.run_once(Some(Duration::from_millis(50)), st).unwrap();
    }
    true
}

fn tap_addr(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(TAP_IP), port)
}

fn peer_addr(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(PEER_IP), port)
}

// ----- tests -----------------------------------------------------------

#[test]
fn kernel_frames_arrive_through_the_reactor_callback() {
    if netns::skip("kernel_frames_arrive_through_the_reactor_callback") {
        return;
    }
    // A plain tap, and one with a virtio-net header the back end adds and
    // strips (what `TapBackend::open` makes on Linux).
    for vnet in [false, true] {
        kernel_frames_arrive_through_the_reactor_callback_on(vnet);
    }
}

fn kernel_frames_arrive_through_the_reactor_callback_on(vnet: bool) {
    let (ns, dev) = setup(vnet);
    let mut r: Reactor<St> = Reactor::new().unwrap();
    let mut be = TapBackend::register(dev, &mut r, Box::new(drain)).unwrap();
    // Registered disabled, with exactly the rights the loop uses.
    let h = be.handle().unwrap();
    assert!(!r.is_enabled(h).unwrap());
    let fd = r.fd(h).unwrap();
    let info = r.fds().into_iter().find(|i| i.fd == fd).unwrap();
    if vnet {
        // The two ioctls that set the offloads stay: the guest negotiates
        // after the sandbox is entered.
        assert_eq!(info.rights, TAP_RIGHTS | Rights::IOCTL_TAP);
        assert_eq!(NetBackend::get_cap(&be), TAP_OFFLOADS);
    } else {
        assert_eq!(info.rights, TAP_RIGHTS);
        assert_eq!(NetBackend::get_cap(&be), 0);
    }
    NetBackend::recv_enable(&mut be, &mut r).unwrap();
    let mut st = St {
        be: Some(Box::new(be)),
        ..St::default()
    };

    // The kernel resolves 10.0.9.2 before it sends the datagram: an ARP
    // request out of the tap.
    let sock = udp_in(&ns, tap_addr(0));
    sock.send_to(b"to the peer", peer_addr(9)).unwrap();
    assert!(
        run_until(&mut r, &mut st, |st| st
            .frames
            .iter()
            .any(|f| is_arp_request_for_peer(f))),
        "no ARP request; got {:?} {:?}",
        st.frames,
        st.errors
    );
    assert!(st.errors.is_empty(), "{:?}", st.errors);
    let arp = st
        .frames
        .iter()
        .find(|f| is_arp_request_for_peer(f))
        .unwrap()
        .clone();
    let mut want = vec![0xff; 6];
    want.extend_from_slice(&TAP_MAC);
    want.extend_from_slice(&[0x08, 0x06]); // ARP
    want.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    want.extend_from_slice(&TAP_MAC);
    want.extend_from_slice(&TAP_IP);
    want.extend_from_slice(&[0; 6]);
    want.extend_from_slice(&PEER_IP);
    assert_eq!(arp, want);

    // Our ARP reply, sent through the back end, lets the kernel send the
    // datagram: proof the kernel took the frame.
    let reply = arp_reply();
    let be = st.be.as_mut().unwrap();
    assert_eq!(
        be.send(&[IoSlice::new(&reply[..14]), IoSlice::new(&reply[14..])])
            .unwrap(),
        42
    );
    assert!(
        run_until(&mut r, &mut st, |st| st
            .frames
            .iter()
            .any(|f| is_udp_to_peer(f))),
        "no UDP frame after the ARP reply; got {:?}",
        st.frames
    );
    let udp = st.frames.iter().find(|f| is_udp_to_peer(f)).unwrap();
    assert_eq!(&udp[..6], &PEER_MAC);
    assert_eq!(&udp[6..12], &TAP_MAC);
    assert_eq!(&udp[26..30], &TAP_IP);
    assert_eq!(ipv4_checksum(&udp[14..34]), 0);
    assert_eq!(&udp[36..38], &9u16.to_be_bytes());
    assert_eq!(&udp[42..], b"to the peer");

    st.be.take().unwrap().close(&mut r).unwrap();
    assert!(r.is_empty());
    drop(ns);
}

#[test]
fn frames_we_send_reach_a_kernel_socket() {
    if netns::skip("frames_we_send_reach_a_kernel_socket") {
        return;
    }
    // A plain tap, and one with a virtio-net header the back end adds and
    // strips (what `TapBackend::open` makes on Linux).
    for vnet in [false, true] {
        frames_we_send_reach_a_kernel_socket_on(vnet);
    }
}

fn frames_we_send_reach_a_kernel_socket_on(vnet: bool) {
    let (ns, dev) = setup(vnet);
    let mut r: Reactor<()> = Reactor::new().unwrap();
    let mut be = net::TapBackend::register(dev, &mut r, Box::new(|_, _| {})).unwrap();
    let sock = udp_in(&ns, tap_addr(7777));

    let payload = b"caploop says hi";
    let f = udp_frame(TAP_MAC, PEER_MAC, peer_addr(5555), tap_addr(7777), payload);
    // Ethernet header, IP+UDP headers and payload in three iovecs.
    let iov = [
        IoSlice::new(&f[..14]),
        IoSlice::new(&f[14..42]),
        IoSlice::new(&f[42..]),
    ];
    assert_eq!(NetBackend::send(&mut be, &iov).unwrap(), f.len());
    let mut buf = [0u8; 256];
    let (n, from) = sock.recv_from(&mut buf).expect("the datagram we sent");
    assert_eq!(&buf[..n], payload);
    assert_eq!(from, std::net::SocketAddr::V4(peer_addr(5555)));

    Box::new(be).close(&mut r).unwrap();
}

#[test]
fn netbe_adapts_front_end_headers_on_tap() {
    if netns::skip("netbe_adapts_front_end_headers_on_tap") {
        return;
    }
    // A plain tap, and one with a virtio-net header the back end adds and
    // strips (what `TapBackend::open` makes on Linux).
    for vnet in [false, true] {
        netbe_adapts_front_end_headers_on_tap_on(vnet);
    }
}

fn netbe_adapts_front_end_headers_on_tap_on(vnet: bool) {
    let (ns, dev) = setup(vnet);
    // Frames to 10.0.9.2 go straight out, no ARP first.
    ns.ip(&[
        "neigh",
        "add",
        "10.0.9.2",
        "lladdr",
        "02:00:00:00:09:02",
        "dev",
        TAP,
    ])
    .unwrap();
    let mut r: Reactor<St> = Reactor::new().unwrap();
    let be = TapBackend::register(dev, &mut r, Box::new(drain)).unwrap();
    let mut nb = Netbe::new(Box::new(be));
    if vnet {
        assert_eq!(nb.get_cap(), TAP_OFFLOADS);
        // Offloads travel in a header.
        let e = nb.backend_mut().set_cap(TAP_OFFLOADS, 0).unwrap_err();
        assert!(matches!(e, Error::CapRefused { .. }), "{e}");
    } else {
        assert_eq!(nb.get_cap(), 0);
        // The plain tap takes no header...
        let e = nb.backend_mut().set_cap(0, 12).unwrap_err();
        assert!(matches!(e, Error::CapRefused { .. }), "{e}");
    }
    let e = nb.set_cap(0, 11).unwrap_err();
    assert!(matches!(e, Error::BadVnetHdrLen(11)), "{e}");
    nb.recv_enable(&mut r).unwrap();
    let mut st = St {
        netbe: Some(nb),
        ..St::default()
    };
    let sock = udp_in(&ns, tap_addr(7777));

    for hlen in [12usize, 10] {
        // ...so Netbe strips and adds it; the vnet tap takes it as it is.
        let nb = st.netbe.as_mut().unwrap();
        nb.set_cap(1 << 15, hlen).unwrap(); // MRG_RXBUF: front-end business
        let be_len = if vnet { hlen } else { 0 };
        assert_eq!((nb.fe_vnet_hdr_len(), nb.be_vnet_hdr_len()), (hlen, be_len));

        // Send: a header split 5 + rest, the rest sharing an iovec with the
        // Ethernet header.
        let payload = format!("header {hlen}");
        let f = udp_frame(
            TAP_MAC,
            PEER_MAC,
            peer_addr(5555),
            tap_addr(7777),
            payload.as_bytes(),
        );
        let mut second = vec![0u8; hlen - 5];
        second.extend_from_slice(&f[..20]);
        let hdr = [0u8; 5];
        let iov = [
            IoSlice::new(&hdr),
            IoSlice::new(&second),
            IoSlice::new(&f[20..]),
        ];
        assert_eq!(nb.send(&iov).unwrap(), hlen + f.len());
        let mut buf = [0u8; 256];
        let (n, _) = sock.recv_from(&mut buf).expect("the datagram we sent");
        assert_eq!(&buf[..n], payload.as_bytes());

        // Receive: the zeroed header, num_buffers = 1 in the 12-byte form,
        // then the frame (the callback reads into a 7-byte and a 4096-byte
        // iovec, so the header is split too).
        st.frames.clear();
        sock.send_to(payload.as_bytes(), peer_addr(9)).unwrap();
        assert!(
            run_until(&mut r, &mut st, |st| st
                .frames
                .iter()
                .any(|f| f.len() > hlen && is_udp_to_peer(&f[hlen..]))),
            "no frame; got {:?} {:?}",
            st.frames,
            st.errors
        );
        assert!(st.errors.is_empty(), "{:?}", st.errors);
        let got = st
            .frames
            .iter()
            .find(|f| f.len() > hlen && is_udp_to_peer(&f[hlen..]))
            .unwrap();
        let mut want_hdr = vec![0u8; hlen];
        if hlen == 12 {
            want_hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
        }
        assert_eq!(&got[..hlen], &want_hdr[..]);
        let frame = &got[hlen..];
        assert_eq!(frame.len(), 42 + payload.len());
        assert_eq!(&frame[..6], &PEER_MAC);
        assert_eq!(&frame[6..12], &TAP_MAC);
        assert_eq!(&frame[42..], payload.as_bytes());
    }

    // peek_recvlen counts the header, and recv then returns that length.
    let nb = st.netbe.as_mut().unwrap();
    nb.recv_disable(&mut r).unwrap();
    nb.set_cap(0, 12).unwrap();
    sock.send_to(b"peek", peer_addr(9)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let nb = st.netbe.as_mut().unwrap();
    let len = loop {
        match nb.peek_recvlen().unwrap() {
            0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            n => break n,
        }
    };
    assert_eq!(len, 12 + 42 + 4);
    assert_eq!(nb.peek_recvlen().unwrap(), len);
    let mut buf = [0u8; 100];
    assert_eq!(
        nb.recv(&mut [IoSliceMut::new(&mut buf)]).unwrap(),
        Some(len)
    );
    assert_eq!(&buf[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(&buf[12 + 42..len], b"peek");
    assert_eq!(nb.peek_recvlen().unwrap(), 0);
    assert_eq!(nb.recv(&mut [IoSliceMut::new(&mut buf)]).unwrap(), None);

    st.netbe.take().unwrap().close(&mut r).unwrap();
    assert!(r.is_empty());
}

#[test]
fn disabled_receive_runs_no_callback_and_short_buffers_keep_the_frame() {
    if netns::skip("disabled_receive_runs_no_callback_and_short_buffers_keep_the_frame") {
        return;
    }
    // A plain tap, and one with a virtio-net header the back end adds and
    // strips (what `TapBackend::open` makes on Linux).
    for vnet in [false, true] {
        disabled_receive_runs_no_callback_and_short_buffers_keep_the_frame_on(vnet);
    }
}

fn disabled_receive_runs_no_callback_and_short_buffers_keep_the_frame_on(vnet: bool) {
    let (ns, dev) = setup(vnet);
    ns.ip(&[
        "neigh",
        "add",
        "10.0.9.2",
        "lladdr",
        "02:00:00:00:09:02",
        "dev",
        TAP,
    ])
    .unwrap();
    let mut r: Reactor<St> = Reactor::new().unwrap();
    let be = TapBackend::register(dev, &mut r, Box::new(drain)).unwrap();
    let mut st = St {
        be: Some(Box::new(be)),
        ..St::default()
    };
    let sock = udp_in(&ns, tap_addr(0));
    sock.send_to(&[0x5a; 100], peer_addr(9)).unwrap();
    // Receive starts disabled: the frame waits, no callback runs.
    for _ in 0..5 {
        r.run_once(Some(Duration::from_millis(20)), &mut st)
            .unwrap();
    }
    assert_eq!(st.calls, 0);

    // A buffer too short for the frame: an error, and the frame stays for
    // a receive with room (bhyve's semantics), byte-exact.
    let be = st.be.as_mut().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while be.peek_recvlen().unwrap() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut short = [0u8; 20];
    let e = be.recv(&mut [IoSliceMut::new(&mut short)]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("does not fit"), "{e}");
    assert!(e.to_string().contains("142-byte"), "{e}");
    let mut room = [0u8; 200];
    assert_eq!(
        be.recv(&mut [IoSliceMut::new(&mut room)]).unwrap(),
        Some(142)
    );
    assert_eq!(&room[42..142], &[0x5a; 100][..]);
    // The same without a peek first: readv straight from the tap, the
    // rest of the frame spilling behind the short buffers, then put back
    // together.
    let payload: Vec<u8> = (0..100u8).collect();
    sock.send_to(&payload, peer_addr(9)).unwrap();
    let mut n = 0;
    let (mut a, mut b) = ([0u8; 7], [0u8; 13]);
    let e = loop {
        match be.recv(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)]) {
            Ok(None) if n < 500 => {
                n += 1;
                std::thread::sleep(Duration::from_millis(10))
            }
            other => break other.unwrap_err(),
        }
    };
    assert!(e.to_string().contains("does not fit"), "{e}");
    let mut room = [0u8; 200];
    assert_eq!(
        be.recv(&mut [IoSliceMut::new(&mut room)]).unwrap(),
        Some(142)
    );
    assert_eq!(
        &room[..7],
        &a[..],
        "the part that landed in the short buffers"
    );
    assert_eq!(&room[42..142], &payload[..]);

    // Buffers of MAX_FRAME_LEN need no spill: readv straight into them.
    sock.send_to(b"big buffer", peer_addr(9)).unwrap();
    let mut big = vec![0u8; net::MAX_FRAME_LEN];
    let mut n = 0;
    let len = loop {
        match be.recv(&mut [IoSliceMut::new(&mut big)]).unwrap() {
            Some(len) if big[..len].ends_with(b"big buffer") => break len,
            _ if n < 500 => {
                n += 1;
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => panic!("no frame"),
        }
    };
    assert_eq!(len, 42 + 10);
    assert_eq!(&big[42..len], b"big buffer");

    // Enabled, the callback runs for the next frame.
    be.recv_enable(&mut r).unwrap();
    sock.send_to(b"later", peer_addr(9)).unwrap();
    assert!(run_until(&mut r, &mut st, |st| st
        .frames
        .iter()
        .any(|f| f.ends_with(b"later"))));
    assert!(st.calls >= 1);
    st.be.take().unwrap().close(&mut r).unwrap();
}

#[test]
fn open_by_name_attaches_to_an_existing_tap() {
    if netns::skip("open_by_name_attaches_to_an_existing_tap") {
        return;
    }
    let ns = Netns::new().unwrap();
    ns.ip(&["tuntap", "add", "dev", "tapkeep", "mode", "tap"])
        .unwrap();
    ns.ip(&["tuntap", "add", "dev", "tunkeep", "mode", "tun"])
        .unwrap();
    let res = ns
        .run_in(|| {
            let mut r: Reactor<()> = Reactor::new().unwrap();
            let mut be = net::open("tapkeep", &mut r, |_, _| {}).unwrap();
            assert_eq!(be.name(), "tapkeep");
            // Opened by name, a tap offers the offloads (Linux)...
            assert_eq!(be.get_cap(), TAP_OFFLOADS);
            be.set_cap(0, 0).unwrap();
            be.set_cap(TAP_OFFLOADS, 12).unwrap();
            be.set_cap(0, 10).unwrap();
            // ...in a header only, and nothing else.
            let e = be.set_cap(1, 0).unwrap_err();
            assert!(matches!(e, Error::CapRefused { features: 1, .. }), "{e}");
            assert!(e.to_string().contains("tapkeep"), "{e}");
            let e = be.set_cap(1 << 5, 12).unwrap_err(); // MAC
            assert!(matches!(e, Error::CapRefused { .. }), "{e}");
            let e = be.set_cap(0, 11).unwrap_err();
            assert!(matches!(e, Error::BadVnetHdrLen(11)), "{e}");
            assert_eq!(r.len(), 1);
            // A second open of the same tap is refused while it is held.
            let e = net::open("tapkeep", &mut r, |_, _| {}).err().unwrap();
            assert!(e.to_string().contains("TUNSETIFF"), "{e}");
            be.close(&mut r).unwrap();
            assert!(r.is_empty());
            // A tun device of the wanted name is not a tap.
            let e = TapDevice::open("tunkeep").unwrap_err();
            assert!(e.to_string().contains("not a tap"), "{e}");
            // Unknown and misspelt names say which.
            let e = net::open("tan0", &mut r, |_, _| {}).err().unwrap();
            assert!(e.to_string().contains("\"tan0\""), "{e}");
        })
        .err();
    assert!(res.is_none(), "{res:?}");
    // The persistent tap is still there, for the next user.
    ns.ip(&["link", "show", "tapkeep"]).unwrap();
}

#[test]
fn a_backend_dropped_without_close_leaves_no_registration_behind() {
    if netns::skip("a_backend_dropped_without_close_leaves_no_registration_behind") {
        return;
    }
    let ns = Netns::new().unwrap();
    let res = ns
        .run_in(|| {
            use std::os::fd::AsRawFd;
            let mut r: Reactor<()> = Reactor::new().unwrap();
            let be = net::open("tapdrop", &mut r, |_, _| {}).unwrap();
            assert_eq!(r.len(), 1);
            let listed = r.fds().len();
            // Dropped, not closed, as a front end that forgets or panics.
            drop(be);
            assert_eq!(r.fds().len(), listed - 1, "the plan still lists it");
            // A new descriptor takes the number and registers at once.
            let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            let a = std::rc::Rc::new(a);
            r.add(
                std::rc::Rc::clone(&a),
                caploop::Interest::READ,
                caploop::Rights::SOCKET,
                |_, _, _| {},
            )
            .expect("no stale registration in the way");
            assert_eq!(r.len(), 1, "fd {}", a.as_raw_fd());
            // The tap itself is gone with the last reference: a new open
            // of its name makes a fresh one. Another test thread spawning
            // a process copies our descriptors until its exec closes them,
            // so the last reference may take a moment to go: EBUSY is
            // retried for up to 2 s, anything else fails.
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut again = loop {
                match net::open("tapdrop", &mut r, |_, _| {}) {
                    Err(Error::Io { source, .. })
                        if source.raw_os_error() == Some(libc::EBUSY)
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    other => break other.unwrap(),
                }
            };
            again.recv_disable(&mut r).unwrap();
            again.close(&mut r).unwrap();
        })
        .err();
    assert!(res.is_none(), "{res:?}");
}

// ----- offloads ----------------------------------------------------------

/// `PEER_IP:PEER_PORT`, the hand-made TCP end of the offload test.
const PEER_PORT: u16 = 40000;

/// An Ethernet frame carrying one TCP/IPv4 segment from the peer to
/// `TAP_IP:port`, behind a 10-byte virtio-net header. With `gso_size` the
/// segment is a super-segment the kernel is to cut, and its checksum is
/// left partial (`NEEDS_CSUM`) for the kernel to finish.
fn tcp_record(port: u16, seq: u32, ack: u32, flags: u8, payload: &[u8], gso_size: u16) -> Vec<u8> {
    use caploop::net::offload::{self, VnetHdr, F_NEEDS_CSUM, GSO_TCPV4};
    let syn = flags & 0x02 != 0;
    let tcp_len = if syn { 24 } else { 20 };
    let ip_len = 20 + tcp_len + payload.len();
    let mut ip = vec![
        0x45,
        0,
        (ip_len >> 8) as u8,
        ip_len as u8,
        0,
        0,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ];
    ip.extend_from_slice(&PEER_IP);
    ip.extend_from_slice(&TAP_IP);
    let c = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&PEER_PORT.to_be_bytes());
    tcp.extend_from_slice(&port.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[((tcp_len / 4) << 4) as u8, flags, 0xff, 0xff, 0, 0, 0, 0]);
    if syn {
        tcp.extend_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
    }
    tcp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&PEER_IP);
    pseudo.extend_from_slice(&TAP_IP);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    let mut hdr = VnetHdr::default();
    if gso_size > 0 {
        // The pseudo-header's sum, not inverted: the rest is the kernel's.
        let partial = offload::fold(offload::sum_be(&pseudo, 0));
        tcp[16..18].copy_from_slice(&partial.to_be_bytes());
        hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: (14 + 20 + tcp_len) as u16,
            gso_size,
            csum_start: 34,
            csum_offset: 16,
        };
    } else {
        let sum = !offload::fold(offload::sum_be(&tcp, offload::sum_be(&pseudo, 0)));
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    }
    let mut rec = hdr.to_bytes().to_vec();
    rec.extend_from_slice(&TAP_MAC);
    rec.extend_from_slice(&PEER_MAC);
    rec.extend_from_slice(&[0x08, 0x00]);
    rec.extend_from_slice(&ip);
    rec.extend_from_slice(&tcp);
    rec
}

/// A TCP segment the kernel sent to the peer, its checksum finished and
/// checked.
struct Seg {
    seq: u32,
    ack: u32,
    flags: u8,
    payload: Vec<u8>,
    /// It came as one super-frame (`GSO_TCPV4`) longer than the MTU.
    gso: bool,
}

/// Reads the tap's records until one is a TCP segment to the peer (5 s).
fn next_seg(be: &mut dyn NetBackend<()>) -> Seg {
    use caploop::net::offload::{self, Offloaded, VnetHdr};
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; net::MAX_FRAME_LEN];
    loop {
        assert!(Instant::now() < deadline, "no TCP segment from the kernel");
        let n = match be.recv(&mut [IoSliceMut::new(&mut buf)]).unwrap() {
            Some(n) => n,
            None => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        let hdr = VnetHdr::parse(&buf[..n]).unwrap();
        let frame = &mut buf[10..n];
        let kind = offload::finish(&hdr, frame).unwrap();
        if frame.len() < 54 || frame[12..14] != [0x08, 0] || frame[23] != 6 {
            continue;
        }
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        let ip_len = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
        let tcp = &frame[14 + ihl..14 + ip_len];
        // The whole segment's checksum, pseudo-header included, adds up.
        let mut pseudo = frame[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        assert_eq!(
            offload::fold(offload::sum_be(tcp, offload::sum_be(&pseudo, 0))),
            0xffff,
            "a bad TCP checksum from the kernel (header {hdr:?})"
        );
        let doff = usize::from(tcp[12] >> 4) * 4;
        return Seg {
            seq: u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
            ack: u32::from_be_bytes(tcp[8..12].try_into().unwrap()),
            flags: tcp[13],
            payload: tcp[doff..].to_vec(),
            gso: kind == Offloaded::TcpSegment && frame.len() > 1514,
        };
    }
}

/// Reads `len` bytes the kernel's socket sends to the peer, in order,
/// acking each segment; returns them and whether any came as a
/// super-frame.
fn take_stream(
    be: &mut dyn NetBackend<()>,
    port: u16,
    mut ack: u32,
    seq: u32,
    len: usize,
) -> (Vec<u8>, bool, u32) {
    let mut got = Vec::new();
    let mut gso = false;
    while got.len() < len {
        let s = next_seg(be);
        if s.seq == ack && !s.payload.is_empty() {
            got.extend_from_slice(&s.payload);
            ack = ack.wrapping_add(s.payload.len() as u32);
            gso |= s.gso;
        }
        let rec = tcp_record(port, seq, ack, 0x10, &[], 0);
        be.send(&[IoSlice::new(&rec)]).unwrap();
    }
    (got, gso, ack)
}

#[test]
fn offloads_carry_tcp_super_frames_both_ways_and_switch_off() {
    use caploop::net::tap::features::{CSUM, GUEST_CSUM, GUEST_TSO4, HOST_TSO4};
    use std::io::{Read, Write};
    if netns::skip("offloads_carry_tcp_super_frames_both_ways_and_switch_off") {
        return;
    }
    let (ns, dev) = setup(true);
    ns.ip(&[
        "neigh",
        "add",
        "10.0.9.2",
        "lladdr",
        "02:00:00:00:09:02",
        "dev",
        TAP,
    ])
    .unwrap();
    let mut r: Reactor<()> = Reactor::new().unwrap();
    let mut be = TapBackend::register(dev, &mut r, Box::new(|_, _| {})).unwrap();
    be.set_cap(CSUM | GUEST_CSUM | GUEST_TSO4 | HOST_TSO4, 10)
        .unwrap();
    let port = 8000;
    let listener = ns
        .run_in(move || std::net::TcpListener::bind(tap_addr(port)))
        .unwrap()
        .unwrap();

    // The handshake, by hand.
    let isn = 1000u32;
    be.send(&[IoSlice::new(&tcp_record(port, isn, 0, 0x02, &[], 0))])
        .unwrap();
    let synack = next_seg(&mut be);
    assert_eq!(synack.flags & 0x12, 0x12, "not a SYN-ACK");
    assert_eq!(synack.ack, isn + 1);
    let mut ack = synack.seq.wrapping_add(1);
    let mut seq = isn + 1;
    be.send(&[IoSlice::new(&tcp_record(port, seq, ack, 0x10, &[], 0))])
        .unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    // Guest to kernel: one 20,000-byte super-segment with its checksum
    // left partial; the kernel cuts it and its socket reads it whole.
    let up: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let rec = tcp_record(port, seq, ack, 0x18, &up, 1460);
    assert_eq!(be.send(&[IoSlice::new(&rec)]).unwrap(), rec.len());
    seq = seq.wrapping_add(up.len() as u32);
    let mut got = vec![0u8; up.len()];
    conn.read_exact(&mut got).unwrap();
    assert!(got == up, "the super-segment arrived changed");

    // Kernel to guest: with GUEST_TSO4 the kernel may hand over
    // super-frames; they arrive whole, checksums finished right.
    let down: Vec<u8> = (0..60_000u32).map(|i| (i * 13 % 253) as u8).collect();
    conn.write_all(&down).unwrap();
    let (got, gso, next) = take_stream(&mut be, port, ack, seq, down.len());
    assert!(got == down, "the kernel's stream arrived changed");
    assert!(gso, "no super-frame with TSO on");
    ack = next;

    // Offloads off: only whole frames the MTU allows, checksums complete.
    be.set_cap(0, 10).unwrap();
    conn.write_all(&down).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut plain = Vec::new();
    let mut buf = vec![0u8; net::MAX_FRAME_LEN];
    while plain.len() < down.len() && Instant::now() < deadline {
        let Some(n) = be.recv(&mut [IoSliceMut::new(&mut buf)]).unwrap() else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let f = &buf[10..n];
        assert_eq!(&buf[..2], &[0, 0], "offload flags with offloads off");
        assert!(f.len() <= 1514, "a {}-byte frame with TSO off", f.len());
        if f.len() < 54 || f[23] != 6 {
            continue;
        }
        let tcp = &f[34..];
        let s = u32::from_be_bytes(tcp[4..8].try_into().unwrap());
        if s == ack && tcp.len() > 20 {
            plain.extend_from_slice(&tcp[20..]);
            ack = ack.wrapping_add((tcp.len() - 20) as u32);
        }
        let rec = tcp_record(port, seq, ack, 0x10, &[], 0);
        be.send(&[IoSlice::new(&rec)]).unwrap();
    }
    assert!(
        plain == down,
        "{} of {} bytes with offloads off",
        plain.len(),
        down.len()
    );
    Box::new(be).close(&mut r).unwrap();
}
