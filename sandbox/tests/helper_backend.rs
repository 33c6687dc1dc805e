//! The library's `slirp-helper` back end (the hypervisor's half of bhyve's
//! helper protocol) against the real `caploop-sandbox`: a smoltcp guest
//! behind a `Netbe` gets a lease and serves a host forward byte-exact
//! through the spawned, sandboxed helper; the helper's death is an error,
//! not a hang or a spin.

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use caploop::net::Netbe;
use caploop::Reactor;
use common::helper::{free_port, status_field, BIN};
use common::link_guest::{pattern, Guest};

/// The VM side: the back end, and what it delivered for the guest.
struct Vm {
    net: Option<Netbe<Vm>>,
    rx: Rc<RefCell<VecDeque<Vec<u8>>>>,
    callbacks: u32,
    errors: Vec<String>,
}

fn drain(_: &mut Reactor<Vm>, vm: &mut Vm) {
    vm.callbacks += 1;
    let Some(net) = vm.net.as_mut() else { return };
    let mut buf = vec![0u8; 2048];
    loop {
        match net.recv(&mut [IoSliceMut::new(&mut buf)]) {
            Ok(Some(n)) => vm.rx.borrow_mut().push_back(buf[..n].to_vec()),
            Ok(None) => return,
            Err(e) => {
                vm.errors.push(e.to_string());
                return;
            }
        }
    }
}

/// One step: the reactor (frames from the helper), the guest, frames to
/// the helper.
fn step(r: &mut Reactor<Vm>, vm: &mut Vm, guest: &mut Guest) {
    r.run_once(Some(Duration::from_millis(2)), vm).unwrap();
    guest.poll();
    while let Some(f) = guest.wire.tx.pop_front() {
        if let Some(net) = vm.net.as_mut() {
            if let Err(e) = net.send(&[IoSlice::new(&f)]) {
                vm.errors.push(e.to_string());
            }
        }
    }
}

#[test]
fn a_guest_through_the_sandboxed_helper() {
    let port = free_port();
    let rx: Rc<RefCell<VecDeque<Vec<u8>>>> = Rc::default();
    let mut r: Reactor<Vm> = Reactor::new().unwrap();
    let name = format!("slirp-helper,helper={BIN},hostfwd=tcp:127.0.0.1:{port}-:22,vmname=t1");
    let mut net = Netbe::open(&name, &mut r, drain).expect("spawning the helper");
    net.set_cap(0, 0).unwrap();
    net.recv_enable(&mut r).unwrap();
    let mut vm = Vm {
        net: Some(net),
        rx: rx.clone(),
        callbacks: 0,
        errors: Vec::new(),
    };
    let mut guest = Guest::new(rx, 1500);

    // A lease from the helper's DHCP server.
    let deadline = Instant::now() + Duration::from_secs(10);
    while guest.lease.is_none() && Instant::now() < deadline {
        step(&mut r, &mut vm, &mut guest);
    }
    assert!(guest.lease.is_some(), "no lease: {:?}", vm.errors);

    // The helper is sandboxed and not root.
    let pid = helper_pid();
    assert_eq!(status_field(pid, "Seccomp").as_deref(), Some("2"));
    assert!(status_field(pid, "Uid").unwrap().starts_with("65534"));

    // 256 KiB through the forward, echoed by the guest.
    let listen = guest.tcp_listen(22, 64 * 1024);
    let data = pattern(256 * 1024, 9);
    let sent = data.clone();
    let host = std::thread::spawn(move || {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut w = s.try_clone().unwrap();
        let len = sent.len();
        let writer = std::thread::spawn(move || w.write_all(&sent).unwrap());
        let mut got = vec![0u8; len];
        let mut n = 0;
        while n < got.len() {
            match s.read(&mut got[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        got.truncate(n);
        writer.join().unwrap();
        let _ = s.shutdown(Shutdown::Both);
        got
    });
    let mut pending: Vec<u8> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !host.is_finished() && Instant::now() < deadline {
        step(&mut r, &mut vm, &mut guest);
        let s = guest.tcp(listen);
        while s.can_recv() {
            s.recv(|b| {
                pending.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        while !pending.is_empty() && s.can_send() {
            let k = s.send_slice(&pending).unwrap();
            pending.drain(..k);
            if k == 0 {
                break;
            }
        }
    }
    let got = host.join().unwrap();
    assert_eq!(got.len(), data.len(), "{:?}", vm.errors);
    assert!(got == data, "the echo through the helper differs");

    // The helper dies: an error saying so, and no spin.
    // SAFETY: kill with integer arguments, to the helper we spawned.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while vm.errors.is_empty() && Instant::now() < deadline {
        step(&mut r, &mut vm, &mut guest);
    }
    let err = vm.errors.first().cloned().unwrap_or_default();
    assert!(err.contains("slirp helper"), "{err}");
    assert!(err.contains("exited") || err.contains("closed"), "{err}");
    let calls = vm.callbacks;
    for _ in 0..50 {
        r.run_once(Some(Duration::from_millis(1)), &mut vm).unwrap();
    }
    assert!(
        vm.callbacks <= calls + 1,
        "the callback spins on a dead helper"
    );
    let e = vm
        .net
        .as_mut()
        .unwrap()
        .send(&[IoSlice::new(&[0u8; 60])])
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted, "{e}");
    vm.net.take().unwrap().close(&mut r).unwrap();
    assert!(r.is_empty());
}

/// The pid of the helper this test process spawned.
fn helper_pid() -> u32 {
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let ppid: u32 = after
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == me && cmd.starts_with(BIN.as_bytes()) {
            return pid;
        }
    }
    panic!("no helper among our children");
}

#[test]
fn a_helper_that_cannot_be_spawned_is_a_clear_error() {
    let mut r: Reactor<Vm> = Reactor::new().unwrap();
    let e = Netbe::open("slirp-helper,helper=/nonexistent/helper", &mut r, drain)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent/helper"), "{e}");
    let e = Netbe::open("slirp-helper,mtu=9000", &mut r, drain)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("mtu"), "{e}");
    assert!(r.is_empty());
}

#[test]
fn open_returns_once_the_helper_applied_its_configuration_or_with_its_error() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let mut r: Reactor<Vm> = Reactor::new().unwrap();
    let name = format!("slirp-helper,helper={BIN},hostfwd=tcp:127.0.0.1:{port}-:22");
    let e = Netbe::open(&name, &mut r, drain).expect_err("a forward on a busy port");
    match &e {
        caploop::net::Error::HelperFailed { helper, reason } => {
            assert_eq!(helper, BIN);
            assert!(reason.contains(&port.to_string()), "{e}");
            assert!(reason.to_lowercase().contains("in use"), "{e}");
            assert!(reason.contains("exit status: 1"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(r.is_empty(), "registrations left behind");
    drop(busy);
    // Free now: open returns with the forward bound.
    let net = Netbe::open(&name, &mut r, drain).expect("the helper starts");
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("bound when open returned");
    net.close(&mut r).unwrap();
}
