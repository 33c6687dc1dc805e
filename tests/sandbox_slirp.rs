//! libslirp inside the sandbox, each test in a child process (entering
//! cannot be undone; see `common::child`).
//!
//! The child builds a slirp `Stack` with a smoltcp guest in the same
//! process (`common::guest`), plans the reactor's descriptors, enters the
//! sandbox, and only then moves data: host forwards accepted after entry
//! (restricted mode), guest connections to the host and DNS forwarding
//! (open mode). The parent, outside the sandbox, is the host side.
#![cfg(target_os = "linux")]

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use caploop::sandbox::{self, Mode, Plan, Policy, SeccompMode};
use caploop::slirp::{Config, Proto};
use caploop::Rights;
use common::child::{announce, child_ok, is_child, Child};
use common::guest::{pattern, Net};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint};

const MIB: usize = 1 << 20;
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const NAMESERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The A record the parent's DNS server answers with.
const ANSWER: [u8; 4] = [192, 0, 2, 77];

/// FNV-1a, 64 bits: enough to compare a megabyte across processes.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn env<T: std::str::FromStr>(key: &str) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} missing or malformed"))
}

fn assert_refused(what: &str, r: std::io::Result<impl std::fmt::Debug>) {
    match r {
        Ok(v) => panic!("{what} succeeded inside the sandbox: {v:?}"),
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)),
            "{what}: unexpected error {e}"
        ),
    }
}

/// What every child checks once inside: files are closed and the kernel
/// shows the seccomp filter.
fn assert_inside(mode: Mode) {
    assert_refused("open(/etc/hostname)", File::open("/etc/hostname"));
    let st = sandbox::status();
    assert_eq!(st.entered, Some(mode));
    assert_eq!(st.seccomp, Some(SeccompMode::Filter), "Seccomp: 2");
    assert_eq!(st.no_new_privs, Some(true));
}

fn enter(net: &Net, policy: &Policy) -> sandbox::Report {
    let report = Plan::from_reactor(&net.reactor)
        .apply_and_enter(policy)
        .expect("entering the sandbox");
    assert!(report.seccomp.is_some());
    report
}

/// Guest side of a stream: sends `to_send` on `h`, closes, and collects
/// what arrives until the peer closes. Returns what arrived, or `None` on
/// timeout.
fn guest_stream(net: &mut Net, h: SocketHandle, to_send: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut received = Vec::with_capacity(len);
    let mut sent = 0;
    let mut closed = false;
    let done = net.run_until(Duration::from_secs(10), |n| {
        let s = n.guest.tcp(h);
        while s.can_recv() {
            s.recv(|b| {
                received.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        while sent < to_send.len() && s.can_send() {
            let k = s.send_slice(&to_send[sent..]).unwrap();
            if k == 0 {
                break;
            }
            sent += k;
        }
        if sent == to_send.len() && !closed && s.may_send() {
            s.close();
            closed = true;
        }
        closed && received.len() >= len && !s.may_recv()
    });
    if !done {
        eprintln!(
            "guest stream timed out: got {} of {len}, sent {sent} of {}",
            received.len(),
            to_send.len()
        );
    }
    // The guest is done once its bytes are handed to its socket; the
    // stack still has to pass the last of them to the host. Keep serving
    // until the stack's connection is over, or the process would end
    // (and close the host socket) with them undelivered.
    let over = net.run_until(Duration::from_secs(15), |n| {
        n.stack.tcp_counters().is_none_or(|c| c.flows == 0)
    });
    done.then_some(received).filter(|_| over)
}

/// Host side of a stream: sends `send`, shuts down writing, and reads
/// until the guest closes.
fn host_stream(s: TcpStream, send: Vec<u8>) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        w.write_all(&send).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    (&s).read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    got
}

// ----- restricted mode: a host forward accepted after entry ----------------

#[test]
fn restricted_hostfwd_one_mib_each_way_after_entry() {
    const NAME: &str = "restricted_hostfwd_one_mib_each_way_after_entry";
    const GUEST_PORT: u16 = 2222;
    if is_child(NAME) {
        let mut net = Net::new(Config::default());
        net.dhcp();
        let port = net.forward(Proto::Tcp, GUEST_PORT);
        let listen = net.guest.tcp_listen(GUEST_PORT, 256 * 1024);
        // The forward's listener is registered on the next sync; plan it.
        net.stack.sync(&mut net.reactor);
        assert!(
            net.reactor
                .fds()
                .iter()
                .any(|f| f.rights == Rights::LISTENER | Rights::EPHEMERAL),
            "the hostfwd listener is not registered"
        );
        let report = enter(&net, &Policy::restricted());
        assert_eq!(report.mode, Mode::Restricted);
        assert_inside(Mode::Restricted);

        announce(&format!("READY {port}"));
        let got = guest_stream(&mut net, listen, &pattern(MIB, 2), MIB).expect("transfer");
        announce(&format!("GUEST GOT {} {:016x}", got.len(), fnv(&got)));
        // Still sandboxed after all that traffic.
        assert_inside(Mode::Restricted);
        child_ok();
    }
    let mut child = Child::spawn(NAME, &[]);
    let port: u16 = child
        .wait_line("READY ", Duration::from_secs(10))
        .parse()
        .unwrap();
    let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect to the hostfwd");
    let got = host_stream(s, pattern(MIB, 1));
    let guest = child.wait_line("GUEST GOT ", Duration::from_secs(15));
    child.finish();
    assert_eq!(
        guest,
        format!("{MIB} {:016x}", fnv(&pattern(MIB, 1))),
        "host-to-guest data differs"
    );
    assert_eq!(got.len(), MIB, "guest-to-host length");
    assert!(got == pattern(MIB, 2), "guest-to-host data differs");
}

// ----- open mode: guest to host, listed port only ---------------------------

/// The guest connects `h` from `local_port` to the host's `port` through
/// the gateway (libslirp maps 10.0.2.2 to 127.0.0.1).
fn guest_connect(net: &mut Net, h: SocketHandle, port: u16, local_port: u16) {
    let g = &mut net.guest;
    g.sockets
        .get_mut::<tcp::Socket>(h)
        .connect(
            g.iface.context(),
            (IpAddress::Ipv4(GATEWAY), port),
            local_port,
        )
        .unwrap();
}

#[test]
fn open_mode_guest_reaches_listed_port_only() {
    const NAME: &str = "open_mode_guest_reaches_listed_port_only";
    const LEN: usize = 256 * 1024;
    if is_child(NAME) {
        let (p1, p2): (u16, u16) = (env("P1"), env("P2"));
        let mut net = Net::new(Config::open());
        net.dhcp();
        let policy = Policy {
            connect_ports: vec![p1],
            ..Policy::open()
        };
        let report = enter(&net, &policy);
        assert_eq!(report.mode, Mode::Open);
        assert_inside(Mode::Open);

        // Listed port: libslirp's socket + connect from inside the sandbox.
        let h = net.guest.tcp_socket(64 * 1024);
        guest_connect(&mut net, h, p1, 49152);
        let got = guest_stream(&mut net, h, &pattern(LEN, 4), LEN).expect("transfer");
        announce(&format!("GUEST GOT {} {:016x}", got.len(), fnv(&got)));

        // Unlisted port: Landlock refuses libslirp's connect (EACCES), so
        // libslirp answers the SYN with ICMP unreachable and the guest
        // never gets a connection.
        if report.landlock.as_ref().is_some_and(|l| l.abi >= 4) {
            let h2 = net.guest.tcp_socket(8192);
            guest_connect(&mut net, h2, p2, 49153);
            let established = net.run_until(Duration::from_millis(1500), |n| {
                n.guest.tcp(h2).state() == tcp::State::Established
            });
            assert!(!established, "the guest reached an unlisted port");
            announce("UNLISTED REFUSED");
        } else {
            announce("UNLISTED SKIPPED (no Landlock network rules)");
        }
        assert_inside(Mode::Open);
        child_ok();
    }
    let l1 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let l2 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (p1, p2) = (
        l1.local_addr().unwrap().port(),
        l2.local_addr().unwrap().port(),
    );
    let mut child = Child::spawn(NAME, &[("P1", p1.to_string()), ("P2", p2.to_string())]);
    let host = thread::spawn(move || {
        let (s, _) = l1.accept().unwrap();
        host_stream(s, pattern(LEN, 3))
    });
    let guest = child.wait_line("GUEST GOT ", Duration::from_secs(15));
    let unlisted = child.wait_line("UNLISTED ", Duration::from_secs(10));
    child.finish();
    let got = host.join().unwrap();
    assert_eq!(guest, format!("{LEN} {:016x}", fnv(&pattern(LEN, 3))));
    assert!(got == pattern(LEN, 4), "guest-to-host data differs");
    if unlisted == "REFUSED" {
        l2.set_nonblocking(true).unwrap();
        assert!(l2.accept().is_err(), "the unlisted port was reached");
    }
}

// ----- open mode: DNS forwarding after entry -------------------------------

/// A DNS query for `caploop.test` A, id `id`.
fn dns_query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(b"\x07caploop\x04test\x00\x00\x01\x00\x01");
    q
}

/// The answer to `query`: the question plus one A record, [`ANSWER`].
fn dns_answer(query: &[u8]) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] = 0x81;
    r[3] = 0x80;
    r[6..8].copy_from_slice(&[0, 1]);
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    r.extend_from_slice(&ANSWER);
    r
}

/// The guest asks 10.0.2.3 for `caploop.test` with id `id` from UDP socket
/// `u`; returns the address answered within 3 s.
fn guest_resolve(net: &mut Net, u: SocketHandle, id: u16) -> Option<[u8; 4]> {
    net.guest
        .udp(u)
        .send_slice(
            &dns_query(id),
            IpEndpoint::new(IpAddress::Ipv4(NAMESERVER), 53),
        )
        .unwrap();
    let mut answer = None;
    net.run_until(Duration::from_secs(3), |n| {
        while let Ok((data, _)) = n.guest.udp(u).recv() {
            if data.len() >= 16 && data[..2] == id.to_be_bytes() && data[7] == 1 {
                answer = data[data.len() - 4..].try_into().ok();
            }
        }
        answer.is_some()
    });
    answer
}

/// Puts the calling thread in a mount namespace of its own where
/// `/etc/resolv.conf` reads `text`.
fn private_resolv_conf(text: &str) -> std::io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let path = std::env::temp_dir().join(format!("caploop-resolv-{}.conf", std::process::id()));
    std::fs::write(&path, text)?;
    let src = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: unshare and mount with valid NUL-terminated strings or NULL.
    let r = unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))
            .and_then(|()| {
                check(libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))
            })
            .and_then(|()| {
                check(libc::mount(
                    src.as_ptr(),
                    c"/etc/resolv.conf".as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))
            })
    };
    // The bind mount keeps the file alive.
    let _ = std::fs::remove_file(&path);
    r
}

/// libslirp 4.7 reads `/etc/resolv.conf` on the first DNS query and keeps
/// the first nameserver for 1 s of its clock; after that it `stat`s the
/// file on each query and reuses the cached address if the file's
/// device, inode, size and mtime are those of its last `stat`, else it
/// reads the file again. A failed `stat` or read drops the query.
///
/// `Stack::prime_dns` feeds two queries before entry with the stack's
/// clock moved past that second between them, so the file is read and its
/// `stat` recorded; after entry the sandbox allows only that `stat` (open
/// mode allows `newfstatat(AT_FDCWD, path, buf, 0)`), and the guest's
/// queries keep working, also after the cache's second has passed and
/// from a new socket libslirp makes inside.
#[test]
fn open_mode_dns_forwarding_after_entry() {
    const NAME: &str = "open_mode_dns_forwarding_after_entry";
    if is_child(NAME) {
        let ns: Ipv4Addr = env("NAMESERVER");
        private_resolv_conf(&format!("nameserver {ns}\n")).expect("private /etc/resolv.conf");
        let mut net = Net::new(Config::open());
        let lease = net.dhcp();
        assert_eq!(lease.dns, vec![NAMESERVER]);
        let u = net.guest.udp_bind(40053);
        net.stack.prime_dns(&mut net.reactor);
        // libslirp sets IP_TTL on its DNS socket before each datagram; in
        // open mode it sends to an address (CONNECT: FreeBSD's kern_sendit
        // asks CAP_CONNECT for that).
        let udp = Rights::SOCKET
            | Rights::SETSOCKOPT
            | Rights::IOCTL_FIONREAD
            | Rights::CONNECT
            | Rights::EPHEMERAL;
        assert!(
            net.reactor.fds().iter().any(|f| f.rights == udp),
            "libslirp's DNS socket is not registered with datagram rights"
        );
        let report = enter(&net, &Policy::open());
        assert_eq!(report.mode, Mode::Open);
        assert_inside(Mode::Open);

        let n = &mut net;
        let c = guest_resolve(n, u, 1);
        announce(&format!("AFTER ENTRY {c:?}"));
        // Past the cache: libslirp stats the file from inside.
        n.run_until(Duration::from_millis(1100), |_| false);
        let d = guest_resolve(n, u, 2);
        announce(&format!("AFTER CACHE {d:?}"));
        // A new guest socket: libslirp makes a new UDP socket inside.
        let u2 = n.guest.udp_bind(40054);
        let e = guest_resolve(n, u2, 3);
        announce(&format!("NEW SOCKET {e:?}"));
        assert_inside(Mode::Open);
        assert_eq!((c, d, e), (Some(ANSWER), Some(ANSWER), Some(ANSWER)));
        child_ok();
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{NAME}: skipped: needs root (mount namespace, port 53)");
        return;
    }
    // A DNS server on a loopback address other than 127.0.0.1, so an
    // answer proves libslirp used the nameserver from resolv.conf.
    let Some(server) =
        (2..=20).find_map(|i| UdpSocket::bind((Ipv4Addr::new(127, 0, 0, i), 53)).ok())
    else {
        eprintln!("{NAME}: skipped: no free loopback address for port 53");
        return;
    };
    let addr = server.local_addr().unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ids = Arc::new(Mutex::new(Vec::new()));
    let (stop2, ids2) = (stop.clone(), ids.clone());
    let dns = thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop2.load(Ordering::Relaxed) {
            let Ok((n, from)) = server.recv_from(&mut buf) else {
                continue;
            };
            if n < 12 {
                continue;
            }
            ids2.lock()
                .unwrap()
                .push(u16::from_be_bytes([buf[0], buf[1]]));
            let _ = server.send_to(&dns_answer(&buf[..n]), from);
        }
    });
    let child = Child::spawn(NAME, &[("NAMESERVER", addr.ip().to_string())]);
    let out = child.finish();
    stop.store(true, Ordering::Relaxed);
    dns.join().unwrap();
    let ids = ids.lock().unwrap().clone();
    // The two priming queries (id 0x636c), then the guest's three.
    assert_eq!(
        ids,
        vec![0x636c, 0x636c, 1, 2, 3],
        "queries the server saw\n{out}"
    );
}
