//! A planned descriptor closed after entry never lends its number, and
//! with it the seccomp rules written for it, to a descriptor made later.
//!
//! Before: a socket planned with `Rights::SOCKET` (no `F_SETFL`) closed
//! after entry freed its number; the next connection libslirp accepted on
//! a host forward got it, libslirp's `fcntl(F_SETFL)` was refused, and
//! libslirp aborted the whole process. Each test runs in a child process
//! (entering cannot be undone; see `common::child`).
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use caploop::sandbox::{Plan, Policy};
use caploop::slirp::{Config, Proto};
use caploop::{Interest, Rights};
use common::child::{announce, child_ok, is_child, Child};
use common::guest::Net;

/// What the descriptor at `fd` is: "socket", "fifo", "closed"...
fn kind(fd: RawFd) -> &'static str {
    // SAFETY: fstat writes one stat into `st`; `fd` is only looked at.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above (the raw syscall, which the sandbox allows).
    if unsafe { libc::syscall(libc::SYS_fstat, fd, &mut st as *mut libc::stat) } < 0 {
        return "closed";
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK => "socket",
        libc::S_IFIFO => "fifo",
        _ => "other",
    }
}

#[test]
fn a_planned_descriptor_closed_after_entry_keeps_its_number_from_later_sockets() {
    const NAME: &str =
        "a_planned_descriptor_closed_after_entry_keeps_its_number_from_later_sockets";
    const GUEST_PORT: u16 = 80;
    if is_child(NAME) {
        let mut net = Net::new(Config::default());
        net.dhcp();
        let port = net.forward(Proto::Tcp, GUEST_PORT);
        // One listener per connection the parent makes.
        let listeners: Vec<_> = (0..5)
            .map(|_| net.guest.tcp_listen(GUEST_PORT, 4096))
            .collect();
        net.stack.sync(&mut net.reactor);
        // Two sockets the VMM plans and later closes: one through the
        // reactor, one handed back and dropped (a plain close()).
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, mut b_peer) = UnixStream::pair().unwrap();
        let ha = net
            .reactor
            .add(
                OwnedFd::from(a),
                Interest::READ,
                Rights::SOCKET,
                |_, _, _| {},
            )
            .unwrap();
        let hb = net
            .reactor
            .add(
                OwnedFd::from(b),
                Interest::READ,
                Rights::SOCKET,
                |_, _, _| {},
            )
            .unwrap();
        let (fa, fb) = (net.reactor.fd(ha).unwrap(), net.reactor.fd(hb).unwrap());
        Plan::from_reactor(&net.reactor)
            .apply_and_enter(&Policy::restricted())
            .expect("entering the sandbox");

        net.reactor.delete_close(ha).unwrap();
        assert!(caploop::closing::is_guarded(fa));
        assert_eq!(kind(fa), "fifo", "the number holds the placeholder");
        let mut buf = [0u8; 1];
        assert_eq!(a_peer.read(&mut buf).unwrap(), 0, "the socket was released");
        drop(net.reactor.delete(hb).unwrap().expect("owned"));
        assert_eq!(kind(fb), "socket", "a plain close is refused: still open");
        b_peer.write_all(b"x").unwrap();

        announce(&format!("READY {port}"));
        // The parent connects several times; each connection libslirp
        // accepts gets a fresh number, and the guest echoes a byte on it.
        let mut echoed = 0;
        let done = net.run_until(Duration::from_secs(20), |n| {
            for f in n.reactor.fds() {
                assert!(
                    f.fd != fa && f.fd != fb,
                    "a later descriptor got planned number {}",
                    f.fd
                );
            }
            for &h in &listeners {
                let s = n.guest.tcp(h);
                if s.can_recv() && s.can_send() {
                    let mut b = [0u8; 16];
                    let k = s.recv_slice(&mut b).unwrap();
                    s.send_slice(&b[..k]).unwrap();
                    echoed += k;
                }
            }
            echoed >= 5
        });
        assert!(done, "echoed {echoed} of 5");
        // Until the last echo has reached the parent.
        net.run_until(Duration::from_millis(500), |_| false);
        assert_eq!(kind(fa), "fifo");
        assert_eq!(kind(fb), "socket");
        child_ok();
    }
    let mut child = Child::spawn(NAME, &[]);
    let port: u16 = child
        .wait_line("READY ", Duration::from_secs(10))
        .parse()
        .unwrap();
    let echo = |i: u8| -> std::io::Result<u8> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(&[i])?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        Ok(b[0])
    };
    let got: Vec<_> = (0..5u8).map(echo).collect();
    // The child's own verdict (and its stderr) first.
    child.finish();
    for (i, g) in got.into_iter().enumerate() {
        assert_eq!(g.unwrap_or_else(|e| panic!("echo {i}: {e}")), i as u8);
    }
}

#[test]
fn thousands_of_sockets_after_entry_never_take_a_planned_number() {
    const NAME: &str = "thousands_of_sockets_after_entry_never_take_a_planned_number";
    if is_child(NAME) {
        let lim = libc::rlimit {
            rlim_cur: 4096,
            rlim_max: 4096,
        };
        // SAFETY: setrlimit reads one rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
        let mut reactor: caploop::Reactor<()> = caploop::Reactor::new().unwrap();
        let mut planned = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..8 {
            let (a, _b) = UnixStream::pair().unwrap();
            std::mem::forget(_b);
            let h = reactor
                .add(
                    OwnedFd::from(a),
                    Interest::READ,
                    Rights::SOCKET,
                    |_, _, _| {},
                )
                .unwrap();
            planned.push(reactor.fd(h).unwrap());
            handles.push(h);
        }
        let policy = Policy {
            allow_bind: true,
            ..Policy::default()
        };
        Plan::from_reactor(&reactor)
            .apply_and_enter(&policy)
            .expect("entering the sandbox");
        // Every other planned socket closed, then 3,000 made.
        for h in handles.iter().step_by(2) {
            reactor.delete_close(*h).unwrap();
        }
        let mut made = Vec::new();
        for i in 0..3000 {
            // SAFETY: socket() makes a descriptor owned below.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            assert!(fd >= 0, "socket {i}: {}", std::io::Error::last_os_error());
            assert!(!planned.contains(&fd), "socket {i} got planned number {fd}");
            // SAFETY: fd was just made and is owned only here.
            made.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
        drop(made);
        announce(&format!(
            "MADE 3000, highest planned {}",
            planned.iter().max().unwrap()
        ));
        child_ok();
    }
    let mut child = Child::spawn(NAME, &[]);
    child.wait_line("MADE ", Duration::from_secs(20));
    child.finish();
}
