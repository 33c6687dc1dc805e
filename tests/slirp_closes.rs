//! Every socket libslirp closes leaves the reactor's event queue while it
//! is still open. libslirp calls `unregister_poll_fd` and then closes;
//! the stack once removed the registration later, after the close, which
//! epoll forgives and kqueue does not (polling keeps the number and
//! refuses the next socket that gets it: that connection hangs on
//! FreeBSD). Counted by `Reactor::event_queue_errors`, which must stay 0
//! through every way a libslirp socket ends: a host forward's client
//! resetting, a guest's connect refused by the host, a UDP socket's
//! expiry, and the guest resetting a connection.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use caploop::slirp::{Config, Proto};
use common::guest::Net;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// Runs the stack and the guest for `d`.
fn settle(net: &mut Net, d: Duration) {
    net.run_until(d, |_| false);
}

/// Closes `s` with a reset (SO_LINGER 0), as a client that gives up.
fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads one linger from `l`, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

fn assert_clean(net: &Net, what: &str) {
    assert_eq!(
        net.reactor.event_queue_errors(),
        0,
        "{what}: a libslirp socket was removed from the event queue after it closed"
    );
    assert_eq!(net.stack.counters().reactor_errors, 0, "{what}");
}

#[test]
fn every_libslirp_socket_leaves_the_event_queue_while_still_open() {
    let mut net = Net::new(Config::open());
    net.dhcp();
    let baseline = net.reactor.fds().len();

    // A host forward's clients reset their connections (SO_LINGER 0).
    let port = net.forward(Proto::Tcp, 80);
    let listeners: Vec<_> = (0..10).map(|_| net.guest.tcp_listen(80, 4096)).collect();
    for i in 0..10u8 {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        s.write_all(&[i]).unwrap();
        let h = listeners[usize::from(i)];
        assert!(
            net.run_until(Duration::from_secs(5), |n| n.guest.tcp(h).can_recv()),
            "connection {i} reached the guest"
        );
        reset(s);
        settle(&mut net, Duration::from_millis(50));
    }
    settle(&mut net, Duration::from_millis(300));
    assert_clean(&net, "clients resetting");

    // The guest resets connections the host made.
    let aborting: Vec<_> = (0..5).map(|_| net.guest.tcp_listen(80, 4096)).collect();
    for (i, &h) in aborting.iter().enumerate() {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        s.write_all(b"x").unwrap();
        assert!(
            net.run_until(Duration::from_secs(5), |n| n.guest.tcp(h).can_recv()),
            "connection {i} reached the guest"
        );
        net.guest.tcp(h).abort();
        settle(&mut net, Duration::from_millis(50));
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.read(&mut [0u8; 8]);
    }
    settle(&mut net, Duration::from_millis(300));
    assert_clean(&net, "the guest resetting");

    // The guest connects to a host port nobody listens on: refused.
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for i in 0..5u16 {
        let h = net.guest.tcp_socket(4096);
        let cx = net.guest.iface.context();
        net.guest
            .sockets
            .get_mut::<tcp::Socket>(h)
            .connect(cx, (IpAddress::Ipv4(GATEWAY), closed), 50_000 + i)
            .unwrap();
        assert!(
            net.run_until(Duration::from_secs(5), |n| !n.guest.tcp(h).is_open()),
            "connect {i} was refused"
        );
    }
    settle(&mut net, Duration::from_millis(300));
    assert_clean(&net, "refused connects");

    // The guest sends UDP to the host; libslirp's socket then expires.
    let host = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let to = IpEndpoint::new(IpAddress::Ipv4(GATEWAY), host.local_addr().unwrap().port());
    let u = net.guest.udp_bind(5353);
    net.guest.udp(u).send_slice(b"ping", to).unwrap();
    settle(&mut net, Duration::from_millis(100));
    let mut buf = [0u8; 16];
    assert_eq!(
        host.recv(&mut buf).unwrap(),
        4,
        "the datagram reached the host"
    );
    let with_udp = net.reactor.fds().len();
    net.stack.advance_clock(Duration::from_secs(600));
    settle(&mut net, Duration::from_millis(300));
    assert!(
        net.reactor.fds().len() < with_udp,
        "the UDP socket did not expire ({with_udp} descriptors)"
    );
    assert_clean(&net, "UDP expiry");

    // Everything libslirp opened is gone; the forward's listener stays.
    for &h in listeners.iter().chain(&aborting) {
        net.guest.tcp(h).abort();
    }
    net.stack.advance_clock(Duration::from_secs(600));
    settle(&mut net, Duration::from_millis(500));
    assert_clean(&net, "the end");
    assert!(
        net.reactor.fds().len() <= baseline + 1,
        "{} descriptors left, {baseline} before and a listener",
        net.reactor.fds().len()
    );
}
