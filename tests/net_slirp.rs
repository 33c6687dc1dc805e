//! The slirp back end with real guest network stacks:
//!
//! - the Linux kernel in a network namespace of the test's own, behind a tap
//!   device relayed to a slirp [`Stack`] on one reactor, carries a TCP
//!   stream (1 MiB each way, byte-exact) to a listener on the host's
//!   127.0.0.1 through the slirp host address 10.0.2.2. Needs root,
//!   /dev/net/tun, `ip` and python3; skipped (with a message) without them.
//! - a smoltcp guest behind `Netbe::open("slirp,hostfwd=...")` with a
//!   12-byte virtio-net header gets a DHCP lease through the back end, and a
//!   host-forwarded TCP stream arrives byte-exact, both ways.

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use caploop::net::{Netbe, VnetHdrLen};
use caploop::slirp::Proto;
use caploop::Reactor;
use common::guest::{free_port, pattern, Guest};
use smoltcp::socket::tcp;
use smoltcp::wire::{IpCidr, Ipv4Address, Ipv4Cidr};

const MIB: usize = 1 << 20;

// ----- the kernel behind a tap -------------------------------------------

/// The kernel side needs network namespaces and a tap: Linux only.
#[cfg(target_os = "linux")]
mod kernel {
    use super::*;

    use std::net::{Shutdown, TcpListener};
    use std::os::fd::{AsFd, OwnedFd};
    use std::process::{Child, Command, Stdio};

    use caploop::net::slirp::SlirpBackend;
    use caploop::net::tap::{TapBackend, TapDevice};
    use caploop::net::NetBackend;
    use caploop::slirp::{Config, Stack};
    use common::netns::{self, Netns};

    /// The relay's loop state: the tap (the reactor callback reads it) and the
    /// stack its frames go to.
    struct Relay {
        tap: Option<TapBackend<Relay>>,
        stack: Option<Stack>,
        frames_in: u64,
        errors: Vec<String>,
    }

    /// Tap readable: every pending frame goes to the stack.
    fn tap_to_stack(_r: &mut Reactor<Relay>, st: &mut Relay) {
        let mut buf = vec![0u8; 65536];
        for _ in 0..256 {
            let Some(tap) = st.tap.as_mut() else { return };
            match tap.recv(&mut [IoSliceMut::new(&mut buf)]) {
                Ok(Some(n)) => {
                    st.frames_in += 1;
                    if let Some(stack) = st.stack.as_ref() {
                        stack.input(&buf[..n]);
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    st.errors.push(e.to_string());
                    return;
                }
            }
        }
    }

    /// Kills and reaps a child on drop (a failed test leaves none behind).
    struct Reap(Child);

    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A temporary file, removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(tag: &str) -> TempFile {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            TempFile(std::env::temp_dir().join(format!(
                "caploop-net-slirp-{}-{n}-{tag}",
                std::process::id()
            )))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const CLIENT: &str = r#"
import socket, sys
data = open(sys.argv[1], 'rb').read()
s = socket.create_connection(('10.0.2.2', int(sys.argv[2])), timeout=10)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
out = bytearray()
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
open(sys.argv[3], 'wb').write(out)
"#;

    fn python3() -> bool {
        Command::new("python3")
            .arg("-c")
            .arg("pass")
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A namespace with tap0 at 10.0.2.100/24, up, routed via 10.0.2.2,
    /// and the tap opened; `None` (with a message) where that cannot be.
    fn namespace_with_tap(test: &str) -> Option<(Netns, TapDevice)> {
        if netns::skip(test) {
            return None;
        }
        if !python3() {
            eprintln!("{test}: skipped: no python3");
            return None;
        }
        let ns = Netns::new().expect("ip netns add");
        let dev = ns
            .run_in(|| TapDevice::open("tap0"))
            .expect("thread in the namespace")
            .expect("opening the tap in the namespace");
        ns.ip(&["addr", "add", "10.0.2.100/24", "dev", "tap0"])
            .unwrap();
        ns.ip(&["link", "set", "tap0", "up"]).unwrap();
        ns.ip(&["route", "add", "default", "via", "10.0.2.2"])
            .unwrap();
        Some((ns, dev))
    }

    /// 1 MiB from a client in the namespace to a listener on the host's
    /// 127.0.0.1 (through 10.0.2.2) and 1 MiB back, byte-exact, while the
    /// relay runs on `r`; `describe` says what the relay saw, for a
    /// failure.
    fn exchange<S>(ns: &Netns, r: &mut Reactor<S>, st: &mut S, describe: impl Fn(&S) -> String) {
        let up = pattern(MIB, 1);
        let down = pattern(MIB, 2);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let down2 = down.clone();
        let host = std::thread::spawn(move || -> io::Result<Vec<u8>> {
            let (mut s, _) = listener.accept()?;
            s.set_read_timeout(Some(Duration::from_secs(12)))?;
            let mut got = Vec::new();
            s.read_to_end(&mut got)?;
            s.write_all(&down2)?;
            s.shutdown(Shutdown::Write)?;
            Ok(got)
        });
        let up_file = TempFile::new("up");
        let down_file = TempFile::new("down");
        std::fs::write(&up_file.0, &up).unwrap();
        let mut client = Reap(
            Command::new("ip")
                .args(["netns", "exec", ns.name(), "python3", "-c", CLIENT])
                .arg(&up_file.0)
                .arg(port.to_string())
                .arg(&down_file.0)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning the client"),
        );
        let deadline = Instant::now() + Duration::from_secs(14);
        let status = loop {
            r.run_once(Some(Duration::from_millis(20)), st).unwrap();
            if let Some(s) = client.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the transfer did not finish in time; {}",
                describe(st)
            );
        };
        let mut err = String::new();
        if let Some(mut e) = client.0.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        assert!(status.success(), "client failed: {status}: {err}");
        let got_up = host.join().expect("host thread").expect("host side I/O");
        assert_eq!(got_up.len(), MIB, "bytes the host received");
        assert!(got_up == up, "the host received different bytes");
        let got_down = std::fs::read(&down_file.0).unwrap();
        assert_eq!(got_down.len(), MIB, "bytes the guest received");
        assert!(got_down == down, "the guest received different bytes");
    }

    #[test]
    fn kernel_tcp_stream_through_tap_and_slirp_to_host_listener() {
        let test = "kernel_tcp_stream_through_tap_and_slirp_to_host_listener";
        let Some((ns, dev)) = namespace_with_tap(test) else {
            return;
        };
        // The relay: tap readable -> stack input; stack sink -> tap write.
        let mut r: Reactor<Relay> = Reactor::new().unwrap();
        let wfd: OwnedFd = dev.as_fd().try_clone_to_owned().unwrap();
        let sink_drops = Rc::new(RefCell::new(0u64));
        let drops = sink_drops.clone();
        let stack = Stack::new(&mut r, Config::open(), move |f: &[u8]| {
            if nix::unistd::write(&wfd, f).is_err() {
                *drops.borrow_mut() += 1;
            }
        })
        .unwrap();
        let mut tap = TapBackend::register(dev, &mut r, Box::new(tap_to_stack)).unwrap();
        tap.recv_enable(&mut r).unwrap();
        let mut st = Relay {
            tap: Some(tap),
            stack: Some(stack),
            frames_in: 0,
            errors: Vec::new(),
        };
        exchange(&ns, &mut r, &mut st, |st| {
            format!(
                "relay errors {:?}, frames in {}, stack {:?}",
                st.errors,
                st.frames_in,
                st.stack.as_ref().map(|s| s.counters())
            )
        });
        assert!(st.errors.is_empty(), "{:?}", st.errors);
        let c = st.stack.as_ref().unwrap().counters();
        assert!(c.bytes_in > MIB as u64 && c.bytes_out > MIB as u64, "{c:?}");
        eprintln!(
            "{test}: stack {c:?}, tap writes dropped {}",
            sink_drops.borrow()
        );
        let tap = st.tap.take().unwrap();
        Box::new(tap).close(&mut r).unwrap();
        st.stack.take().unwrap().close(&mut r);
        assert!(r.is_empty());
    }

    /// A VMM's device loop in miniature: the kernel's frames go to the
    /// slirp back end one `send` each, as a virtio-net device hands them
    /// over, and the back end's frames go back to the tap from its receive
    /// callback.
    struct BeRelay {
        tap: Option<TapBackend<BeRelay>>,
        be: Option<SlirpBackend<BeRelay>>,
        tap_drops: u64,
        errors: Vec<String>,
    }

    fn tap_to_backend(_r: &mut Reactor<BeRelay>, st: &mut BeRelay) {
        let mut buf = vec![0u8; 65536];
        for _ in 0..256 {
            let (Some(tap), Some(be)) = (st.tap.as_mut(), st.be.as_mut()) else {
                return;
            };
            match tap.recv(&mut [IoSliceMut::new(&mut buf)]) {
                Ok(Some(n)) => {
                    if let Err(e) = be.send(&[IoSlice::new(&buf[..n])]) {
                        st.errors.push(format!("send: {e}"));
                    }
                }
                Ok(None) => return,
                Err(e) => return st.errors.push(format!("tap: {e}")),
            }
        }
    }

    fn backend_to_tap(_r: &mut Reactor<BeRelay>, st: &mut BeRelay) {
        let mut buf = vec![0u8; 65536];
        loop {
            let (Some(tap), Some(be)) = (st.tap.as_mut(), st.be.as_mut()) else {
                return;
            };
            match be.recv(&mut [IoSliceMut::new(&mut buf)]) {
                Ok(Some(n)) => {
                    if tap.send(&[IoSlice::new(&buf[..n])]).is_err() {
                        st.tap_drops += 1;
                    }
                }
                Ok(None) => return,
                Err(e) => return st.errors.push(format!("recv: {e}")),
            }
        }
    }

    /// The in-process back end a VMM embeds coalesces the guest's frames
    /// the way the sandboxed helper does: a round's run of a flow's
    /// segments goes into libslirp as one; the stream stays byte-exact
    /// both ways.
    #[test]
    fn kernel_tcp_stream_through_the_slirp_backend_is_coalesced() {
        let test = "kernel_tcp_stream_through_the_slirp_backend_is_coalesced";
        let Some((ns, dev)) = namespace_with_tap(test) else {
            return;
        };
        let mut r: Reactor<BeRelay> = Reactor::new().unwrap();
        let mut be = SlirpBackend::new(
            "slirp",
            Config::open(),
            &[],
            &mut r,
            Box::new(backend_to_tap),
        )
        .unwrap();
        be.recv_enable(&mut r).unwrap();
        let mut tap = TapBackend::register(dev, &mut r, Box::new(tap_to_backend)).unwrap();
        tap.recv_enable(&mut r).unwrap();
        let mut st = BeRelay {
            tap: Some(tap),
            be: Some(be),
            tap_drops: 0,
            errors: Vec::new(),
        };
        exchange(&ns, &mut r, &mut st, |st| {
            format!(
                "relay errors {:?}, stack {:?}",
                st.errors,
                st.be.as_ref().and_then(|b| b.stack()).map(|s| s.counters())
            )
        });
        assert!(st.errors.is_empty(), "{:?}", st.errors);
        let be = st.be.take().unwrap();
        let c = be.stack().unwrap().counters();
        let merged = be.segments_merged();
        eprintln!(
            "{test}: {merged} runs merged, tap drops {}, stack {c:?}",
            st.tap_drops
        );
        assert!(merged > 0, "no run of segments was merged: {c:?}");
        assert!(
            c.segments_in >= merged,
            "merged runs went in as super-segments: {c:?}"
        );
        Box::new(be).close(&mut r).unwrap();
        Box::new(st.tap.take().unwrap()).close(&mut r).unwrap();
        assert!(r.is_empty());
    }
}

// ----- a smoltcp guest behind the slirp NetBackend -------------------------

/// The front end: the back end behind `Netbe`, and the guest's receive
/// queue its callback fills.
struct Fe {
    net: Option<Netbe<Fe>>,
    rx: Rc<RefCell<VecDeque<Vec<u8>>>>,
    bad_headers: usize,
    callbacks: usize,
    errors: Vec<String>,
}

/// The receive callback: drains the back end into the guest's queue,
/// checking the 12-byte header `Netbe` writes.
fn fe_rx(_r: &mut Reactor<Fe>, fe: &mut Fe) {
    fe.callbacks += 1;
    let mut hdr = [0xaau8; 12];
    let mut body = vec![0u8; 65536];
    loop {
        let Some(net) = fe.net.as_mut() else { return };
        let peek = net.peek_recvlen().unwrap_or(0);
        let res = net.recv(&mut [IoSliceMut::new(&mut hdr), IoSliceMut::new(&mut body)]);
        match res {
            Ok(Some(n)) => {
                assert_eq!(n, peek, "peek_recvlen counts the header");
                if hdr != VnetHdrLen::Mrg.rx_header() {
                    fe.bad_headers += 1;
                }
                fe.rx.borrow_mut().push_back(body[..n - 12].to_vec());
            }
            Ok(None) => return,
            Err(e) => {
                fe.errors.push(e.to_string());
                return;
            }
        }
    }
}

/// Sends what the guest queued, each frame behind a 12-byte header.
fn flush(guest: &mut Guest, fe: &mut Fe) {
    let net = fe.net.as_mut().unwrap();
    let hdr = [0u8; 12];
    while let Some(f) = guest.wire.tx.pop_front() {
        let n = net.send(&[IoSlice::new(&hdr), IoSlice::new(&f)]).unwrap();
        assert_eq!(n, 12 + f.len());
    }
}

/// One step: guest, back end, one reactor round.
fn step(r: &mut Reactor<Fe>, guest: &mut Guest, fe: &mut Fe) {
    guest.poll();
    flush(guest, fe);
    let wait = guest.delay().map_or(Duration::from_millis(5), |d| {
        d.min(Duration::from_millis(5))
    });
    r.run_once(Some(wait), fe).unwrap();
    guest.poll();
    flush(guest, fe);
}

#[test]
fn smoltcp_guest_through_the_slirp_netbackend() {
    let mut r: Reactor<Fe> = Reactor::new().unwrap();
    let rx: Rc<RefCell<VecDeque<Vec<u8>>>> = Rc::default();
    // A free host port for the forward (another test may take it first).
    let (net, port) = (0..20)
        .find_map(|_| {
            let port = free_port(Proto::Tcp);
            let name = format!("slirp,hostfwd=tcp:127.0.0.1:{port}-:80,open");
            Netbe::open(&name, &mut r, fe_rx).ok().map(|n| (n, port))
        })
        .expect("no free port for the forward");
    let mut fe = Fe {
        net: Some(net),
        rx: rx.clone(),
        bad_headers: 0,
        callbacks: 0,
        errors: Vec::new(),
    };
    {
        let net = fe.net.as_mut().unwrap();
        assert_eq!(net.backend().name(), "slirp");
        net.set_cap(0, 12).unwrap();
        assert_eq!((net.fe_vnet_hdr_len(), net.be_vnet_hdr_len()), (12, 0));
        net.recv_enable(&mut r).unwrap();
    }
    let mut guest = Guest::new(rx, 1500);

    // DHCP through the back end.
    let deadline = Instant::now() + Duration::from_secs(5);
    while guest.lease.is_none() {
        assert!(Instant::now() < deadline, "no DHCP lease within 5 s");
        step(&mut r, &mut guest, &mut fe);
    }
    let lease = guest.lease.clone().unwrap();
    assert_eq!(
        lease.address,
        Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24)
    );
    assert_eq!(lease.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
    assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
    assert!(guest
        .iface
        .ip_addrs()
        .contains(&IpCidr::Ipv4(lease.address)));

    // A stream from the host through the forward to the guest's port 80,
    // and one back.
    let sock = guest.tcp_listen(80, 256 * 1024);
    let up = pattern(MIB, 3);
    let down = pattern(MIB, 4);
    let up2 = up.clone();
    let host = std::thread::spawn(move || -> io::Result<Vec<u8>> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        s.set_read_timeout(Some(Duration::from_secs(12)))?;
        s.write_all(&up2)?;
        let mut got = Vec::new();
        s.read_to_end(&mut got)?;
        Ok(got)
    });

    let mut got = Vec::with_capacity(MIB);
    let mut sent = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(12);
    while !host.is_finished() {
        assert!(
            Instant::now() < deadline,
            "stream not done: guest got {} of {MIB}, sent {sent}; backend {:?}",
            got.len(),
            fe.net
        );
        step(&mut r, &mut guest, &mut fe);
        let s = guest.tcp(sock);
        while s.can_recv() {
            let n = s.recv_slice(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        if got.len() == MIB {
            while sent < down.len() && s.can_send() {
                sent += s.send_slice(&down[sent..]).unwrap();
            }
            if sent == down.len() && s.state() == tcp::State::Established {
                s.close();
            }
        }
    }
    let got_down = host.join().unwrap().expect("host side I/O");
    assert_eq!(got.len(), MIB, "bytes the guest received");
    assert!(got == up, "the guest received different bytes");
    assert_eq!(got_down.len(), MIB, "bytes the host received");
    assert!(got_down == down, "the host received different bytes");
    assert_eq!(fe.bad_headers, 0);
    assert!(fe.errors.is_empty(), "{:?}", fe.errors);
    assert!(fe.callbacks > 0);

    let net = fe.net.take().unwrap();
    net.close(&mut r).unwrap();
    assert!(r.is_empty());
}

/// The error an I/O error carries, if it is one of the net layer's.
fn net_error(e: &io::Error) -> Option<&caploop::net::Error> {
    e.get_ref().and_then(|i| i.downcast_ref())
}

#[test]
fn a_frame_longer_than_the_stack_carries_is_refused_with_both_lengths() {
    let mut r: Reactor<()> = Reactor::new().unwrap();
    let mut net = Netbe::open("slirp", &mut r, |_, _| {}).unwrap();
    assert_eq!((net.mtu(), net.max_frame_len()), (1500, 1514));
    // Behind a 12-byte header too: the header is not part of the frame.
    net.set_cap(0, 12).unwrap();
    for len in [1515, 9000, 70_000] {
        let rec = vec![0u8; 12 + len];
        let e = net.send(&[IoSlice::new(&rec)]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(
            matches!(net_error(&e), Some(&caploop::net::Error::FrameTooLong { len: l, max: 1514 }) if l == len),
            "{len}: {e}"
        );
    }
    let mut arp = vec![0u8; 12];
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x08, 0x06]);
    arp.resize(12 + 1514, 0);
    assert_eq!(net.send(&[IoSlice::new(&arp)]).unwrap(), 12 + 1514);
    net.close(&mut r).unwrap();
}

#[test]
fn both_slirp_back_ends_refuse_the_same_mistakes_the_same_way() {
    use caploop::net::Error;
    let mut r: Reactor<()> = Reactor::new().unwrap();
    for (options, option, says) in [
        ("hostfwd=tcp:bogus", "hostfwd", "bogus"),
        ("open=maybe", "open", "\"maybe\" is not a boolean"),
        ("open,open=no", "open", "given twice"),
        ("mac=52:54:00:12:34:56", "mac", "unknown"),
        (
            "vmname=a,hostfwd=tcp::1-:2,vmname=b",
            "vmname",
            "given twice",
        ),
    ] {
        for kind in ["slirp", "slirp-helper,helper=/nonexistent"] {
            let name = format!("{kind},{options}");
            let e = Netbe::open(&name, &mut r, |_, _| {}).unwrap_err();
            match &e {
                Error::BadOption {
                    backend,
                    option: o,
                    reason,
                } => {
                    assert_eq!(backend, &name);
                    assert_eq!(o, option, "{name}: {e}");
                    assert!(reason.contains(says), "{name}: {e}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }
    assert!(r.is_empty());
}
