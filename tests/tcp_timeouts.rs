//! The own TCP path's time bounds, with a real guest stack (smoltcp) and
//! real host sockets through a host forward: a guest that goes silent is
//! reset after the idle timeout while a live idle one stays, a guest that
//! never answers a forwarded connection is given up, and a flow whose
//! guest never acknowledges the last FIN is reset after the FIN timeout.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::time::{Duration, Instant};

use caploop::slirp::{Config, Proto};
use common::guest::Net;
use smoltcp::iface::SocketHandle;

/// A stack with these timeouts, a guest with a lease listening on port 80
/// `listeners` times, and the forward's host port.
fn net(idle: Duration, fin: Duration, listeners: usize) -> (Net, Vec<SocketHandle>, u16) {
    let mut net = Net::new(Config {
        tcp_idle_timeout: idle,
        tcp_fin_timeout: fin,
        ..Config::default()
    });
    net.dhcp();
    let port = net.forward(Proto::Tcp, 80);
    let socks = (0..listeners)
        .map(|_| net.guest.tcp_listen(80, 16 * 1024))
        .collect();
    (net, socks, port)
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// What a non-blocking read of `s` says: bytes, end of file, or an error
/// other than "nothing yet".
fn poll_read(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<std::io::Result<usize>> {
    let mut b = [0u8; 256];
    match s.read(&mut b) {
        Ok(n) => {
            buf.extend_from_slice(&b[..n]);
            Some(Ok(n))
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => None,
        Err(e) => Some(Err(e)),
    }
}

/// Runs `net` (the guest echoing on `h`) until the host reads `want`
/// back from `s`.
fn echo(net: &mut Net, h: SocketHandle, s: &mut TcpStream, want: &[u8]) {
    s.write_all(want).unwrap();
    let mut got = Vec::new();
    let ok = net.run_until(Duration::from_secs(5), |n| {
        let g = n.guest.tcp(h);
        if g.can_recv() {
            let mut b = [0u8; 256];
            let k = g.recv_slice(&mut b).unwrap();
            g.send_slice(&b[..k]).unwrap();
        }
        let _ = poll_read(s, &mut got);
        got == want
    });
    assert!(ok, "no echo: got {got:?}");
}

fn flows(net: &Net) -> u64 {
    net.stack.tcp_counters().expect("the own path").flows
}

#[test]
fn a_live_idle_guest_stays_and_a_silent_one_is_reset_after_the_idle_timeout() {
    let idle = Duration::from_millis(800);
    let (mut net, socks, port) = net(idle, Duration::from_secs(60), 1);
    let mut a = connect(port);
    echo(&mut net, socks[0], &mut a, b"ping");

    // Idle but alive: three idle timeouts pass, the guest answers the
    // keep-alives, and the connection stays.
    let mut got = Vec::new();
    let mut ended = None;
    net.run_until(3 * idle, |_| {
        ended = poll_read(&mut a, &mut got).map(|r| format!("{r:?}"));
        ended.is_some()
    });
    assert_eq!(ended, None, "a live idle connection ended");
    assert_eq!(flows(&net), 1);
    echo(&mut net, socks[0], &mut a, b"still here");

    // Silent: every frame of the guest's is lost from now on.
    net.feed = Some(Box::new(|_, _| {}));
    let t0 = Instant::now();
    let mut end = None;
    let ended = net.run_until(Duration::from_secs(10), |_| {
        end = poll_read(&mut a, &mut got);
        end.is_some()
    });
    assert!(ended, "a silent guest's connection was kept");
    let waited = t0.elapsed();
    let e = end.unwrap().expect_err("a reset, not an end of file");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    assert!(
        waited >= idle / 2,
        "reset after {waited:?}, before the timeout"
    );
    assert_eq!(flows(&net), 0);

    // A connection the silent guest never answers is given up too.
    let mut b = connect(port);
    let mut end = None;
    let ended = net.run_until(Duration::from_secs(10), |_| {
        end = poll_read(&mut b, &mut got);
        end.is_some()
    });
    assert!(ended, "an unanswered forwarded connection was kept");
    let e = end.unwrap().expect_err("a reset");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    assert_eq!(flows(&net), 0);
}

#[test]
fn a_guest_that_never_acknowledges_the_last_fin_is_reset_after_the_fin_timeout() {
    let fin = Duration::from_millis(500);
    let (mut net, socks, port) = net(Duration::from_secs(3600), fin, 1);
    let mut a = connect(port);
    echo(&mut net, socks[0], &mut a, b"ping");
    // The guest closes first; the host reads the end of file and closes.
    net.guest.tcp(socks[0]).close();
    let mut got = Vec::new();
    let mut end = None;
    assert!(net.run_until(Duration::from_secs(5), |_| {
        end = poll_read(&mut a, &mut got);
        end.is_some()
    }));
    assert_eq!(
        end.unwrap().unwrap(),
        0,
        "the guest's FIN as an end of file"
    );
    // From here the guest's frames are lost: the host's FIN is never
    // acknowledged, and smoltcp would retransmit it until the idle timeout.
    net.feed = Some(Box::new(|_, _| {}));
    a.shutdown(Shutdown::Write).unwrap();
    drop(a);
    let t0 = Instant::now();
    assert!(
        net.run_until(Duration::from_secs(10), |n| flows(n) == 0),
        "the flow outlived the FIN timeout: {:?}",
        net.stack.tcp_counters()
    );
    assert!(t0.elapsed() >= fin, "gone after {:?}", t0.elapsed());
}

/// The FIN timeout bounds a close that stopped, not a transfer still
/// under way: the guest closes first (as `nc < /dev/null` does), the host
/// sends a file and closes, and the guest takes it slowly through a full
/// window, for many FIN timeouts after both FINs were seen. Every byte
/// arrives, then the end of file. Knocks on two mends: the FIN clock
/// counting only time without progress (else a reset one FIN timeout in),
/// and the host's FIN held until its data is acknowledged (else smoltcp's
/// LAST-ACK drops the guest's window updates and the flow wedges).
#[test]
fn a_slow_transfer_after_both_fins_outlives_the_fin_timeout() {
    let fin = Duration::from_millis(300);
    let (mut net, socks, port) = net(Duration::from_secs(3600), fin, 1);
    let mut a = connect(port);
    echo(&mut net, socks[0], &mut a, b"ping");
    net.guest.tcp(socks[0]).close();
    let data: Vec<u8> = (0..192 * 1024u32).map(|i| (i ^ (i >> 9)) as u8).collect();
    let (mut sent, mut got) = (0, Vec::new());
    let mut host = Some(a);
    let mut next_read = Instant::now();
    let t0 = Instant::now();
    let done = net.run_until(Duration::from_secs(30), |n| {
        if let Some(s) = host.as_mut() {
            match s.write(&data[sent..]) {
                Ok(k) => sent += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("host write: {e}"),
            }
            if sent == data.len() {
                s.shutdown(Shutdown::Write).unwrap();
                host = None;
            }
        }
        // 2 KiB every 25 ms: about 2.4 s for the file, 8 FIN timeouts.
        let g = n.guest.tcp(socks[0]);
        if Instant::now() >= next_read && g.can_recv() {
            let mut b = [0u8; 2048];
            let k = g.recv_slice(&mut b).unwrap();
            got.extend_from_slice(&b[..k]);
            next_read += Duration::from_millis(25);
        }
        !g.may_recv() && !g.can_recv()
    });
    assert!(
        done,
        "the transfer never ended: {} of {}",
        got.len(),
        data.len()
    );
    assert!(
        got.len() == data.len() && got == data,
        "{} of {} bytes, then the end (a reset after the FIN timeout cuts it)",
        got.len(),
        data.len()
    );
    assert!(
        t0.elapsed() > 4 * fin,
        "too fast to test: {:?}",
        t0.elapsed()
    );
}
