//! IPv4 fragments from the guest through a real libslirp `Stack`: the frame
//! that crashes libslirp 4.7.0's reassembly does nothing, and fragmented
//! datagrams still arrive whole, in order or not.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::thread;
use std::time::Duration;

use caploop::slirp::Config;
use common::fragments::{crash_frames, udp_fragments};
use common::guest::{pattern, Net, Upload};
use smoltcp::wire::IpAddress;

const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// Streams `len` bytes from the guest to a listener on the host's loopback
/// (the gateway in open mode) and returns what the host received.
fn guest_to_host_stream(net: &mut Net, len: usize) -> Vec<u8> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let data = pattern(len, 11);
    let h = net.guest.tcp_socket(256 * 1024);
    let cx = net.guest.iface.context();
    net.guest
        .sockets
        .get_mut::<smoltcp::socket::tcp::Socket>(h)
        .connect(cx, (IpAddress::Ipv4(GATEWAY), port), 49153)
        .unwrap();
    let mut up = Upload::new(data.clone());
    let done = net.run_until(Duration::from_secs(20), |n| {
        up.step(n.guest.tcp(h));
        host.is_finished()
    });
    assert!(done, "the stream did not finish: {} of {len} sent", up.sent);
    let got = host.join().unwrap();
    assert!(
        got == data,
        "{} bytes arrived, not the {len} sent",
        got.len()
    );
    got
}

#[test]
fn the_fragments_that_crash_libslirp_do_nothing() {
    let mut net = Net::new(Config::open());
    net.dhcp();
    for f in crash_frames() {
        net.stack.input(&f);
        net.step(Duration::ZERO);
    }
    let c = net.stack.counters();
    assert_eq!(c.fragments_in, crash_frames().len() as u64, "{c:?}");
    assert_eq!(c.dropped_fragments, 0, "{c:?}");
    // The last two made a datagram (a last fragment first, then the first):
    // it went to libslirp whole.
    assert_eq!(c.reassembled, 1, "{c:?}");
    guest_to_host_stream(&mut net, 512 * 1024);
}

#[test]
fn a_fragmented_udp_datagram_arrives_whole_in_order_or_not() {
    let mut net = Net::new(Config::open());
    net.dhcp();
    let host = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = host.local_addr().unwrap().port();
    let data = pattern(4000, 5);
    let frags = udp_fragments(GUEST, GATEWAY, 40_000, port, 77, &data, 1500);
    assert_eq!(frags.len(), 3);
    let orders: [[usize; 3]; 3] = [[0, 1, 2], [2, 0, 1], [1, 2, 0]];
    for (n, order) in orders.iter().enumerate() {
        let frags = udp_fragments(GUEST, GATEWAY, 40_000, port, 77 + n as u16, &data, 1500);
        for &i in order {
            net.stack.input(&frags[i]);
        }
        let mut buf = vec![0u8; 8192];
        let mut got = None;
        net.run_until(Duration::from_secs(5), |_| {
            if let Ok((k, _)) = host.recv_from(&mut buf) {
                got = Some(buf[..k].to_vec());
            }
            got.is_some()
        });
        let got = got.unwrap_or_else(|| panic!("order {order:?}: nothing arrived"));
        assert_eq!(got.len(), 4000, "order {order:?}");
        assert!(got == data, "order {order:?}: the datagram differs");
    }
    let c = net.stack.counters();
    assert_eq!((c.fragments_in, c.reassembled), (9, 3), "{c:?}");
    assert_eq!(c.dropped_fragments, 0, "{c:?}");
}

#[test]
fn overlapping_fragments_drop_their_datagram() {
    let mut net = Net::new(Config::open());
    net.dhcp();
    let host = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    host.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let port = host.local_addr().unwrap().port();
    let data = pattern(3000, 6);
    let mut frags = udp_fragments(GUEST, GATEWAY, 40_001, port, 99, &data, 1500);
    // A second copy of the middle fragment moved 8 bytes back: it overlaps.
    let mut evil = frags[1].clone();
    let off = u16::from_be_bytes([evil[20], evil[21]]);
    evil[20..22].copy_from_slice(&(off - 1).to_be_bytes());
    evil[24..26].copy_from_slice(&[0, 0]);
    let sum = common::fragments::checksum(&evil[14..34]);
    evil[24..26].copy_from_slice(&sum.to_be_bytes());
    frags.insert(1, evil);
    for f in &frags {
        net.stack.input(f);
    }
    net.step(Duration::from_millis(50));
    let mut buf = [0u8; 4096];
    assert!(
        host.recv_from(&mut buf).is_err(),
        "an overlapped datagram arrived"
    );
    let c = net.stack.counters();
    assert!(c.dropped_fragments >= 1, "{c:?}");
}
