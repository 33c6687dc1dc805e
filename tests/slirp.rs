//! libslirp on the reactor, end to end: a real guest stack (smoltcp) in the
//! same process talks through a caploop slirp `Stack` to real host sockets.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use caploop::slirp::{parse_rules, Config, Proto, Rule, Stack};
use caploop::{Reactor, Rights};
use common::guest::{free_port, pattern, Net};
use smoltcp::socket::tcp;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, IpAddress, IpEndpoint, Ipv4Cidr,
};

const MIB: usize = 1 << 20;

fn gateway() -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 2, 2)
}

#[test]
fn dhcp_lease_and_gateway_arp() {
    let mut net = Net::new(Config::open());
    let lease = net.dhcp();
    assert_eq!(
        lease.address,
        Ipv4Cidr::new(Ipv4Addr::new(10, 0, 2, 15), 24)
    );
    assert_eq!(lease.router, Some(gateway()));
    assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);

    // Sending to the gateway makes the guest ARP for it.
    let u = net.guest.udp_bind(40000);
    net.guest
        .udp(u)
        .send_slice(b"x", IpEndpoint::new(IpAddress::Ipv4(gateway()), 9))
        .unwrap();
    let arp = net.arp.clone();
    let resolved = net.run_until(Duration::from_secs(3), |_| {
        arp.borrow().iter().any(|f| {
            let Ok(eth) = EthernetFrame::new_checked(&f[..]) else {
                return false;
            };
            let Ok(pkt) = ArpPacket::new_checked(eth.payload()) else {
                return false;
            };
            matches!(
                ArpRepr::parse(&pkt),
                Ok(ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Reply,
                    source_protocol_addr,
                    target_protocol_addr,
                    ..
                }) if source_protocol_addr == gateway()
                    && target_protocol_addr == Ipv4Addr::new(10, 0, 2, 15)
            )
        })
    });
    assert!(resolved, "no ARP reply from the gateway");
    let c = net.stack.counters();
    assert!(c.frames_in >= 3 && c.frames_out >= 3, "{c:?}");
}

/// libslirp offers no router and no DNS server in restricted mode (the guest
/// cannot reach them anyway); the address is the same.
#[test]
fn restricted_lease_has_no_router() {
    let mut net = Net::new(Config::default());
    let lease = net.dhcp();
    assert_eq!(
        lease.address,
        Ipv4Cidr::new(Ipv4Addr::new(10, 0, 2, 15), 24)
    );
    assert_eq!(lease.router, None);
}

#[test]
fn dhcp_disabled_is_honoured() {
    // Config version 4's last field: libslirp must not answer DHCP.
    let mut net = Net::new(Config {
        dhcp: false,
        ..Config::default()
    });
    let got = net.run_until(Duration::from_millis(1500), |n| n.guest.lease.is_some());
    assert!(!got, "DHCP answered although disabled");
    let c = net.stack.counters();
    assert!(c.frames_in >= 1, "the guest sent no DISCOVER: {c:?}");
}

#[test]
fn tcp_hostfwd_one_mib_each_way() {
    let mut net = Net::new(Config::default());
    net.dhcp();
    let port = net.forward(Proto::Tcp, 22);
    let listen = net.guest.tcp_listen(22, 256 * 1024);

    // The listener is registered with listener rights on the next round.
    net.step(Duration::ZERO);
    assert!(net
        .reactor
        .fds()
        .iter()
        .any(|f| f.rights == Rights::LISTENER | Rights::EPHEMERAL));

    let to_guest = pattern(MIB, 1);
    let to_host = pattern(MIB, 2);
    let (send, expect) = (to_guest.clone(), to_host.clone());
    let host = thread::spawn(move || {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = thread::spawn(move || {
            w.write_all(&send).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::with_capacity(MIB);
        s.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        got == expect
    });

    let mut received = Vec::with_capacity(MIB);
    let mut sent = 0;
    let mut closed = false;
    let done = net.run_until(Duration::from_secs(10), |n| {
        let s = n.guest.tcp(listen);
        while s.can_recv() {
            s.recv(|b| {
                received.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        while sent < to_host.len() && s.can_send() {
            let k = s.send_slice(&to_host[sent..]).unwrap();
            if k == 0 {
                break;
            }
            sent += k;
        }
        if sent == to_host.len() && !closed {
            s.close();
            closed = true;
        }
        received.len() == MIB && !s.may_recv() && host.is_finished()
    });
    assert!(
        done,
        "timed out: guest got {} bytes, sent {sent}",
        received.len()
    );
    assert!(received == to_guest, "host-to-guest data differs");
    assert!(host.join().unwrap(), "guest-to-host data differs");
    let c = net.stack.counters();
    assert!(c.bytes_in > MIB as u64 && c.bytes_out > MIB as u64, "{c:?}");
}

/// libslirp listens with a backlog of 1 and accepts one connection per
/// poll, so a burst of connects overflows the kernel's accept queue and
/// costs SYN retransmits (1 s, 3 s, ...). The host therefore opens the
/// connections one after another (each echo proves it was accepted), keeps
/// all 200 open, and then talks on all of them at once.
#[test]
fn two_hundred_concurrent_forwarded_connections() {
    const N: usize = 200;
    let mut net = Net::new(Config::default());
    net.dhcp();
    let port = net.forward(Proto::Tcp, 7);
    let socks: Vec<_> = (0..N).map(|_| net.guest.tcp_listen(7, 2048)).collect();

    let host = thread::spawn(move || {
        let mut streams = Vec::new();
        let mut ok = 0;
        for i in 0..N {
            let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let msg = format!("hello {i:03}\n");
            s.write_all(msg.as_bytes()).unwrap();
            let mut buf = [0u8; 10];
            s.read_exact(&mut buf).unwrap();
            ok += usize::from(buf == *msg.as_bytes());
            streams.push(s);
        }
        // All open at once: a second exchange on every connection.
        for (i, s) in streams.iter_mut().enumerate() {
            s.write_all(format!("bye   {i:03}\n").as_bytes()).unwrap();
        }
        for (i, s) in streams.iter_mut().enumerate() {
            let mut buf = [0u8; 10];
            s.read_exact(&mut buf).unwrap();
            ok += usize::from(buf == *format!("bye   {i:03}\n").as_bytes());
        }
        ok
    });

    let mut echoed = 0;
    let mut pending: Vec<Vec<u8>> = vec![Vec::new(); N];
    let done = net.run_until(Duration::from_secs(10), |n| {
        for (k, &h) in socks.iter().enumerate() {
            let s = n.guest.tcp(h);
            if s.can_recv() {
                s.recv(|b| {
                    pending[k].extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
            if !pending[k].is_empty() && s.can_send() {
                let m = s.send_slice(&pending[k]).unwrap();
                pending[k].drain(..m);
                echoed += m;
            }
        }
        host.is_finished()
    });
    assert!(done, "timed out after {echoed} bytes echoed");
    assert_eq!(host.join().unwrap(), 2 * N);
    assert_eq!(echoed, 20 * N);
    assert_eq!(net.stack.registrations(), N + 1);
}

/// A datagram to a UDP host forward reaches the guest, and the guest's
/// reply reaches the sender. Returns the reply, if any came within `bound`.
fn udp_round_trip(config: Config, bound: Duration) -> (bool, Option<Vec<u8>>) {
    let mut net = Net::new(config);
    net.dhcp();
    let port = net.forward(Proto::Udp, 5353);
    let u = net.guest.udp_bind(5353);
    let host = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    host.set_nonblocking(true).unwrap();
    host.send_to(b"ping over slirp", (Ipv4Addr::LOCALHOST, port))
        .unwrap();
    let mut guest_got = false;
    let mut reply = None;
    net.run_until(bound, |n| {
        let s = n.guest.udp(u);
        if let Ok((data, meta)) = s.recv() {
            assert_eq!(data, b"ping over slirp");
            assert_eq!(meta.endpoint.addr, IpAddress::Ipv4(gateway()));
            guest_got = true;
            let mut back = data.to_vec();
            back.extend_from_slice(b" -> pong");
            s.send_slice(&back, meta.endpoint).unwrap();
        }
        let mut buf = [0u8; 64];
        if let Ok((k, from)) = host.recv_from(&mut buf) {
            assert_eq!(from.port(), port);
            reply = Some(buf[..k].to_vec());
        }
        reply.is_some()
    });
    (guest_got, reply)
}

#[test]
fn udp_hostfwd_round_trip() {
    let (guest_got, reply) = udp_round_trip(Config::open(), Duration::from_secs(5));
    assert!(guest_got);
    assert_eq!(reply.as_deref(), Some(&b"ping over slirp -> pong"[..]));
}

/// libslirp 4.7 drops every UDP datagram from the guest in restricted mode
/// (`udp_input`: `if (slirp->restricted) goto bad`), replies to a UDP host
/// forward included: the forward works one way only.
#[test]
fn udp_hostfwd_restricted_is_one_way() {
    let (guest_got, reply) = udp_round_trip(Config::default(), Duration::from_millis(500));
    assert!(guest_got);
    assert_eq!(reply, None);
}

/// The guest connects to a listener on host 127.0.0.1 through 10.0.2.2.
/// Returns whether the connection was established within `bound`, and
/// the data the host got and sent when it was.
fn guest_to_host(config: Config, bound: Duration) -> (bool, Option<Vec<u8>>) {
    let mut net = Net::new(config);
    net.dhcp();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let h = net.guest.tcp_socket(8192);
    let cx = net.guest.iface.context();
    net.guest
        .sockets
        .get_mut::<tcp::Socket>(h)
        .connect(cx, (IpAddress::Ipv4(gateway()), port), 49152)
        .unwrap();
    let mut established = false;
    let mut accepted: Option<TcpStream> = None;
    let mut host_got = Vec::new();
    let mut guest_got = Vec::new();
    let start = Instant::now();
    let ok = net.run_until(bound, |n| {
        if accepted.is_none() {
            if let Ok((s, _)) = listener.accept() {
                s.set_nonblocking(true).unwrap();
                accepted = Some(s);
            }
        }
        let s = n.guest.tcp(h);
        if s.state() == tcp::State::Established && !established {
            established = true;
            s.send_slice(b"hello host").unwrap();
        }
        if s.can_recv() {
            s.recv(|b| {
                guest_got.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        if let Some(a) = accepted.as_mut() {
            let mut buf = [0u8; 64];
            if let Ok(k) = a.read(&mut buf) {
                if k > 0 {
                    host_got.extend_from_slice(&buf[..k]);
                    if host_got == b"hello host" {
                        a.write_all(b"hello guest").unwrap();
                    }
                }
            }
        }
        guest_got == b"hello guest"
    });
    if !ok {
        assert!(start.elapsed() >= bound);
        return (established, None);
    }
    assert_eq!(host_got, b"hello host");
    (established, Some(guest_got))
}

#[test]
fn open_mode_reaches_host_loopback() {
    let (established, got) = guest_to_host(Config::open(), Duration::from_secs(5));
    assert!(established);
    assert_eq!(got.as_deref(), Some(&b"hello guest"[..]));
}

#[test]
fn restricted_mode_blocks_host_loopback() {
    let (established, got) = guest_to_host(Config::default(), Duration::from_millis(1500));
    assert!(!established, "restricted guest connected to the host");
    assert!(got.is_none());
}

#[test]
fn runt_oversize_and_malformed_frames_are_dropped() {
    let mut net = Net::new(Config::default());
    net.stack.input(&[0u8; 10]);
    net.stack.input(&[]);
    net.stack.input(&vec![0xffu8; 1500 + 14 + 1]);
    let mut short_ip = vec![0u8; 20];
    short_ip[12] = 0x08;
    short_ip[13] = 0x00;
    net.stack.input(&short_ip);
    let mut short_arp = vec![0xffu8; 30];
    short_arp[12] = 0x08;
    short_arp[13] = 0x06;
    net.stack.input(&short_arp);
    // IP headers whose length fields claim more than the frame holds
    // (libslirp's IPv6 input would trust the payload length).
    let mut long_v4 = vec![0u8; 14 + 40];
    long_v4[12..16].copy_from_slice(&[0x08, 0x00, 0x45, 0]);
    long_v4[16..18].copy_from_slice(&1000u16.to_be_bytes());
    net.stack.input(&long_v4);
    let mut long_v6 = vec![0u8; 14 + 60];
    long_v6[12..15].copy_from_slice(&[0x86, 0xdd, 0x60]);
    long_v6[18..20].copy_from_slice(&1000u16.to_be_bytes());
    long_v6[20] = 6;
    net.stack.input(&long_v6);
    // A minimal frame of an unknown type goes to libslirp, which ignores it.
    net.stack.input(&[0u8; 14]);
    let c = net.stack.counters();
    assert_eq!(c.dropped_runt, 2, "{c:?}");
    assert_eq!(c.dropped_oversize, 1, "{c:?}");
    assert_eq!(c.dropped_malformed, 4, "{c:?}");
    assert_eq!(c.frames_in, 1, "{c:?}");
    // The stack still works.
    let lease = net.dhcp();
    assert_eq!(lease.address.address(), Ipv4Addr::new(10, 0, 2, 15));
}

#[test]
fn hostfwd_rule_errors() {
    let e = "tcp:127.0.0.1:99999-:22".parse::<Rule>().unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"rule "tcp:127.0.0.1:99999-:22": host port "99999" is not a port number"#
    );
    let e = parse_rules("tcp::2222-:22;icmp::1-:1").unwrap_err();
    assert_eq!(e.rule, "icmp::1-:1");
    assert!(e.problem.contains("\"icmp\""), "{e}");

    // A rule that parses but cannot be bound names itself.
    let mut net = Net::new(Config::default());
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let rule: Rule = format!("tcp:127.0.0.1:{port}-:22").parse().unwrap();
    let e = net
        .stack
        .add_hostfwd(&mut net.reactor, &rule)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&format!("host forward {rule}:")), "{e}");
    // libslirp 4.7 forwards within one address family.
    let mixed: Rule = "tcp:[::1]:2222-:22".parse().unwrap();
    let e = net
        .stack
        .add_hostfwd(&mut net.reactor, &mixed)
        .unwrap_err()
        .to_string();
    assert!(e.contains("different families"), "{e}");
    // Removing what was never added is an error too.
    assert!(net.stack.remove_hostfwd(&mut net.reactor, &rule).is_err());
}

#[test]
fn hostfwd_remove_and_drop_clean_up_the_reactor() {
    let mut reactor: Reactor<()> = Reactor::new().unwrap();
    let stack = Stack::new(&mut reactor, Config::default(), |_| {}).unwrap();
    let port = free_port(Proto::Tcp);
    let rule: Rule = format!("tcp:127.0.0.1:{port}-:22").parse().unwrap();
    stack.add_hostfwd(&mut reactor, &rule).unwrap();
    // Registered at once: a plan taken now limits the listener.
    assert_eq!(reactor.len(), 1);
    assert_eq!(stack.registrations(), 1);

    stack.remove_hostfwd(&mut reactor, &rule).unwrap();
    assert_eq!(reactor.len(), 0, "unregistered at once");
    // The port is free again.
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();

    stack.add_hostfwd(&mut reactor, &rule).unwrap();
    assert_eq!(reactor.len(), 1);
    drop(stack);
    reactor.run_once(Some(Duration::ZERO), &mut ()).unwrap();
    assert_eq!(reactor.len(), 0);
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    // Nothing of the stack is left to run.
    assert_eq!(reactor.run_once(Some(Duration::ZERO), &mut ()).unwrap(), 0);
}

#[test]
fn close_cleans_up_at_once() {
    let mut reactor: Reactor<()> = Reactor::new().unwrap();
    let stack = Stack::new(&mut reactor, Config::default(), |_| {}).unwrap();
    let rule: Rule = format!("udp:127.0.0.1:{}-:53", free_port(Proto::Udp))
        .parse()
        .unwrap();
    stack.add_hostfwd(&mut reactor, &rule).unwrap();
    assert_eq!(reactor.len(), 1);
    stack.close(&mut reactor);
    assert_eq!(reactor.len(), 0);
    assert_eq!(reactor.run_once(Some(Duration::ZERO), &mut ()).unwrap(), 0);
}

/// IPv6 all the way: host [::1] to the guest's fd00::15 (set statically:
/// smoltcp does no SLAAC), if the host has ::1.
#[test]
fn ipv6_hostfwd() {
    if TcpListener::bind("[::1]:0").is_err() {
        return;
    }
    let mut net = Net::new(Config::default());
    net.dhcp();
    let port = net.forward6("fd00::15".parse().unwrap(), 80);
    let h = net.guest.tcp_listen(80, 8192);
    let host = thread::spawn(move || {
        let mut s = TcpStream::connect(("::1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"v6!").unwrap();
        let mut b = [0u8; 3];
        s.read_exact(&mut b).map(|_| b)
    });
    let done = net.run_until(Duration::from_secs(5), |n| {
        let s = n.guest.tcp(h);
        if s.can_recv() {
            let mut b = [0u8; 16];
            let k = s.recv_slice(&mut b).unwrap();
            s.send_slice(&b[..k]).unwrap();
        }
        host.is_finished()
    });
    assert!(done);
    assert_eq!(&host.join().unwrap().unwrap(), b"v6!");
}

/// The way a device back end uses the stack: it lives in the reactor's user
/// data, frames arrive through a descriptor callback (a datagram socket pair
/// stands in for a tap), host forwards are added and the stack is dropped
/// from inside callbacks.
#[test]
fn driven_from_reactor_callbacks() {
    use caploop::Interest;
    use common::guest::Guest;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::os::unix::net::UnixDatagram;
    use std::rc::Rc;

    struct Ctx {
        stack: Option<Stack>,
        port: Option<u16>,
    }
    let (host_end, guest_end) = UnixDatagram::pair().unwrap();
    host_end.set_nonblocking(true).unwrap();
    guest_end.set_nonblocking(true).unwrap();
    let mut reactor: Reactor<Ctx> = Reactor::new().unwrap();
    let out = host_end.try_clone().unwrap();
    let stack = Stack::new(&mut reactor, Config::default(), move |f: &[u8]| {
        let _ = out.send(f);
    })
    .unwrap();
    let mut ctx = Ctx {
        stack: Some(stack),
        port: None,
    };
    let tap = host_end.try_clone().unwrap();
    reactor
        .add(
            Rc::new(host_end),
            Interest::READ,
            Rights::SOCKET,
            move |_, c: &mut Ctx, _| {
                let mut buf = [0u8; 2048];
                while let Ok(k) = tap.recv(&mut buf) {
                    if let Some(s) = c.stack.as_ref() {
                        s.input(&buf[..k]);
                    }
                }
            },
        )
        .unwrap();
    reactor.add_timer(Duration::ZERO, |r, c: &mut Ctx, _| {
        let s = c.stack.as_ref().unwrap();
        for _ in 0..20 {
            let port = free_port(Proto::Tcp);
            let rule: Rule = format!("tcp:127.0.0.1:{port}-:7").parse().unwrap();
            if s.add_hostfwd(r, &rule).is_ok() {
                c.port = Some(port);
                return;
            }
        }
    });

    let rx: Rc<RefCell<VecDeque<Vec<u8>>>> = Rc::default();
    let mut guest = Guest::new(rx.clone(), 1500);
    let echo = guest.tcp_listen(7, 4096);
    let step = |reactor: &mut Reactor<Ctx>, ctx: &mut Ctx, guest: &mut Guest| {
        guest.poll();
        while let Some(f) = guest.wire.tx.pop_front() {
            guest_end.send(&f).unwrap();
        }
        reactor
            .run_once(Some(Duration::from_millis(2)), ctx)
            .unwrap();
        let mut buf = [0u8; 2048];
        while let Ok(k) = guest_end.recv(&mut buf) {
            rx.borrow_mut().push_back(buf[..k].to_vec());
        }
        guest.poll();
    };
    let end = Instant::now() + Duration::from_secs(5);
    while guest.lease.is_none() && Instant::now() < end {
        step(&mut reactor, &mut ctx, &mut guest);
    }
    assert!(guest.lease.is_some(), "no lease");
    let port = ctx.port.expect("forward added from a timer callback");

    let host = thread::spawn(move || {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"through a callback").unwrap();
        let mut b = [0u8; 18];
        s.read_exact(&mut b).map(|_| b)
    });
    while !host.is_finished() && Instant::now() < end + Duration::from_secs(5) {
        let s = guest.tcp(echo);
        if s.can_recv() {
            let mut b = [0u8; 64];
            let k = s.recv_slice(&mut b).unwrap();
            s.send_slice(&b[..k]).unwrap();
        }
        step(&mut reactor, &mut ctx, &mut guest);
    }
    assert_eq!(&host.join().unwrap().unwrap(), b"through a callback");

    // Dropped from inside a callback: the next round removes the rest.
    assert!(reactor.len() > 1);
    reactor.add_timer(Duration::ZERO, |_, c: &mut Ctx, _| c.stack = None);
    reactor.run_once(Some(Duration::ZERO), &mut ctx).unwrap();
    reactor.run_once(Some(Duration::ZERO), &mut ctx).unwrap();
    assert_eq!(reactor.len(), 1, "only the socket pair is left");
}

/// With a listener and an idle connection, the loop sleeps: no
/// level-triggered spinning, only libslirp's own timeouts (at most every
/// 2 ms briefly for delayed ACKs, then every 500 ms to 1 s).
#[test]
fn idle_stack_sleeps() {
    let mut net = Net::new(Config::default());
    net.dhcp();
    let port = net.forward(Proto::Tcp, 7);
    let h = net.guest.tcp_listen(7, 4096);
    let mut host = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    host.write_all(b"x").unwrap();
    assert!(net.run_until(Duration::from_secs(5), |n| n.guest.tcp(h).recv_queue() == 1));
    // Let delayed ACKs and the like settle.
    for _ in 0..20 {
        net.step(Duration::from_millis(10));
    }
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < Duration::from_secs(1) {
        net.reactor
            .run_once(Some(Duration::from_secs(5)), &mut ())
            .unwrap();
        rounds += 1;
    }
    assert!(rounds <= 10, "{rounds} rounds in an idle second");
    drop(host);
}
