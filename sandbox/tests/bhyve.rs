//! The bhyve front end against the built binary, with the test playing
//! bhyve: a SOCK_SEQPACKET socketpair, the configuration as a packed nvlist
//! first, then one Ethernet frame per record.

mod common;

use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use caploop::wire::nvlist::{Endian, NvList, Value};
use common::frames::{arp_reply, arp_request, dhcp_discover, dhcp_reply};
use common::helper::{fd_targets, free_port, status_field, stderr_of, wait_exit, Reaper, BIN};
use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

/// Spawns the helper as bhyve does, `-S 3`, with the other end kept here.
fn spawn(extra: &[&str]) -> (Reaper, OwnedFd) {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let child_end = theirs.as_raw_fd();
    let mut cmd = Command::new(BIN);
    cmd.args(["-S", "3"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: dup2 is async-signal-safe; it runs in the forked child
    // before exec and only moves our socket end to fd 3 (clearing CLOEXEC).
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(child_end, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child: Child = cmd.spawn().expect("spawn caploop-sandbox");
    drop(theirs);
    (Reaper(child), ours)
}

fn send(sock: &OwnedFd, record: &[u8]) {
    nix::sys::socket::send(sock.as_raw_fd(), record, MsgFlags::MSG_EOR).unwrap();
}

/// Reads records until `pick` returns something.
fn expect<T>(sock: &OwnedFd, what: &str, mut pick: impl FnMut(&[u8]) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        match nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => panic!("the helper hung up while waiting for {what}"),
            Ok(n) => {
                assert!(
                    n <= 2048,
                    "a {n}-byte record: bhyve asserts records fit 2048"
                );
                if let Some(t) = pick(&buf[..n]) {
                    return t;
                }
            }
            Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("recv: {e}"),
        }
    }
    panic!("no {what} within 10 s")
}

fn packed(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut l = NvList::new();
    for (k, v) in pairs {
        l.push(*k, Value::String(v.to_string()));
    }
    l.pack(Endian::Little).unwrap()
}

fn config(port: u16) -> Vec<u8> {
    packed(&[
        ("device", "virtio-net"),
        ("backend", "slirp"),
        ("hostfwd", &format!("tcp:127.0.0.1:{port}-:22")),
        ("open", "false"),
        ("vmname", "testvm"),
    ])
}

#[test]
fn bhyve_session_dhcp_arp_hostfwd_sandbox_and_hangup() {
    let port = free_port();
    let (mut helper, sock) = spawn(&[]);
    let pid = helper.0.id();
    send(&sock, &config(port));

    send(&sock, &dhcp_discover(0xb4e0_0001));
    let (kind, addr) = expect(&sock, "a DHCP offer", |f| dhcp_reply(f, 0xb4e0_0001));
    assert_eq!((kind, addr), (2, [10, 0, 2, 15]));

    send(&sock, &arp_request([10, 0, 2, 2]));
    let mac = expect(&sock, "an ARP reply", |f| arp_reply(f, [10, 0, 2, 2]));
    assert_eq!(mac, [0x52, 0x55, 10, 0, 2, 2]);

    // The forward from the configuration record listens.
    TcpStream::connect(("127.0.0.1", port)).expect("hostfwd from the nvlist listens");

    assert_eq!(status_field(pid, "Seccomp").as_deref(), Some("2"));
    assert_eq!(status_field(pid, "NoNewPrivs").as_deref(), Some("1"));
    let fds = fd_targets(pid);
    // stdio, bhyve's socket, the forward's listener and its connection,
    // the reactor's three, the signal pipe's two ends, the kept status
    // file, the placeholder retired descriptors get (a pipe).
    assert!(fds.len() <= 14, "only its own few descriptors: {fds:?}");
    let sockets = fds.iter().filter(|f| f.contains("socket:")).count();
    assert!(
        sockets <= 3,
        "bhyve's socket and the forward's listener: {fds:?}"
    );

    drop(sock);
    let status = wait_exit(&mut helper.0, Duration::from_secs(10)).expect("exit on hangup");
    assert!(status.success(), "{status:?}: {}", stderr_of(&mut helper.0));
}

#[test]
fn a_malformed_nvlist_is_refused_with_a_clear_error() {
    for (record, needle) in [
        (b"\x6dnot an nvlist at all".to_vec(), "magic 0x6d"),
        (config(2222)[..30].to_vec(), "announces 183 bytes"),
        (packed(&[("open", "perhaps")]), "perhaps"),
        (packed(&[("hostfwd", "tcp:1.2.3.4:70000-:22")]), "70000"),
    ] {
        let (mut helper, sock) = spawn(&[]);
        send(&sock, &record);
        let status = wait_exit(&mut helper.0, Duration::from_secs(10)).expect("helper exits");
        assert_eq!(status.code(), Some(1), "record {record:?}");
        let err = stderr_of(&mut helper.0);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
        drop(sock);
    }
}

#[test]
fn a_descriptor_that_is_not_a_seqpacket_socket_is_refused() {
    let out = Command::new(BIN)
        .args(["-S", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("-S 0"), "{err}");
}

#[test]
fn bhyve_frames_stay_within_its_record_size() {
    let out = Command::new(BIN)
        .args(["-S", "3", "--mtu", "4000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn an_empty_record_ends_the_session_as_a_hangup_does() {
    // On FreeBSD the loop sees no hangup on a SOCK_SEQPACKET socket
    // (kqueue's EV_EOF, which polling drops): the end of the stream shows
    // only as a read of 0 bytes, which an empty record also gives. bhyve
    // never sends one, so both mean the end.
    let (mut helper, sock) = spawn(&[]);
    send(&sock, &config(free_port()));
    send(&sock, &dhcp_discover(7));
    expect(&sock, "a DHCP offer", |f| dhcp_reply(f, 7));
    send(&sock, &[]);
    let status = wait_exit(&mut helper.0, Duration::from_secs(5)).expect("exit on an empty record");
    assert!(status.success(), "{status:?}: {}", stderr_of(&mut helper.0));
}

/// Every record the helper sent until `quiet` passes with none.
fn records_until_quiet(sock: &OwnedFd, quiet: Duration) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        match nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) if n > 0 => {
                out.push(buf[..n].to_vec());
                last = Instant::now();
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    out
}

#[test]
fn the_start_up_acknowledgement_comes_only_when_asked_and_bhyve_never_asks() {
    use caploop::wire::nvlist::{parse_ack, ACK_KEY};
    // bhyve's own record: only frames ever come back, the first the
    // answer to the first frame sent.
    let (_h, sock) = spawn(&[]);
    send(&sock, &config(free_port()));
    send(&sock, &dhcp_discover(0xac00_0001));
    let got = records_until_quiet(&sock, Duration::from_millis(500));
    assert!(!got.is_empty(), "no DHCP answer");
    assert!(
        dhcp_reply(&got[0], 0xac00_0001).is_some(),
        "the first record is the offer"
    );
    assert!(
        got.iter().all(|r| parse_ack(r).is_none()),
        "bhyve got an acknowledgement"
    );

    // caploop's back end asks: the acknowledgement first, then frames.
    let (_h, sock) = spawn(&[]);
    let port = free_port();
    let rule = format!("tcp:127.0.0.1:{port}-:22");
    send(&sock, &packed(&[("hostfwd", &rule), (ACK_KEY, "1")]));
    let first = expect(&sock, "the acknowledgement", |r| Some(r.to_vec()));
    assert_eq!(parse_ack(&first), Some(Ok(())));
    TcpStream::connect(("127.0.0.1", port)).expect("the forward is bound by then");

    // A forward it cannot bind: the acknowledgement says why, then exit 1.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let (mut h, sock) = spawn(&[]);
    let rule = format!("tcp:127.0.0.1:{port}-:22");
    send(&sock, &packed(&[("hostfwd", &rule), (ACK_KEY, "1")]));
    let first = expect(&sock, "the acknowledgement", |r| Some(r.to_vec()));
    let why = parse_ack(&first).expect("an acknowledgement").unwrap_err();
    assert!(why.contains(&port.to_string()), "{why}");
    assert!(why.to_lowercase().contains("in use"), "{why}");
    let status = wait_exit(&mut h.0, Duration::from_secs(5)).expect("exit");
    assert_eq!(status.code(), Some(1), "{}", stderr_of(&mut h.0));
}
