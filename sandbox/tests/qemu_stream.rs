//! The QEMU stream front end against the built binary, with the test
//! playing QEMU: frames split across writes, several frames in one write,
//! an oversize length refused, hangup and SIGTERM ending the helper.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caploop::wire::stream::{header, Decoder};
use common::frames::{arp_reply, arp_request, dhcp_discover, dhcp_reply};
use common::guest::Scratch;
use common::helper::{
    fd_targets, free_port, status_field, stderr_of, wait_exit, wait_for_path, Reaper, BIN,
};

struct Qemu {
    helper: Reaper,
    conn: UnixStream,
    decoder: Decoder,
    _scratch: Scratch,
    hostfwd_port: u16,
}

fn start(extra: &[&str]) -> Qemu {
    let scratch = Scratch::new("qstream");
    let path: PathBuf = scratch.0.join("q.sock");
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.arg("--qemu-stream")
        .arg(&path)
        .arg("--hostfwd")
        .arg(format!("tcp:127.0.0.1:{port}-:80"))
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn caploop-sandbox");
    let helper = Reaper(child);
    assert!(
        wait_for_path(&path, Duration::from_secs(10)),
        "the helper never made its socket"
    );
    let conn = UnixStream::connect(&path).expect("connect like QEMU");
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    Qemu {
        helper,
        conn,
        decoder: Decoder::new(70_000),
        _scratch: scratch,
        hostfwd_port: port,
    }
}

impl Qemu {
    fn framed(frame: &[u8]) -> Vec<u8> {
        let mut v = header(frame.len()).unwrap().to_vec();
        v.extend_from_slice(frame);
        v
    }

    /// Reads frames until `pick` returns something or the time is up.
    fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(&[u8]) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            while let Some(f) = self.decoder.next_frame().expect("helper's framing") {
                if let Some(t) = pick(f) {
                    return t;
                }
            }
            let room = self.decoder.read_buf();
            match self.conn.read(room) {
                Ok(0) => panic!("the helper closed the stream while waiting for {what}"),
                Ok(n) => self.decoder.filled(n),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("reading from the helper: {e}"),
            }
        }
        panic!("no {what} from the helper within 10 s")
    }
}

#[test]
fn dhcp_and_arp_over_split_and_joined_frames() {
    let mut q = start(&[]);
    let pid = q.helper.0.id();

    // One frame split across three writes, mid-header and mid-body.
    let wire = Qemu::framed(&dhcp_discover(0x1234_5678));
    for piece in [&wire[..2], &wire[2..100], &wire[100..]] {
        q.conn.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let (kind, addr) = q.expect("a DHCP offer", |f| dhcp_reply(f, 0x1234_5678));
    assert_eq!((kind, addr), (2, [10, 0, 2, 15]), "DHCPOFFER of 10.0.2.15");

    // Two frames in one write.
    let mut both = Qemu::framed(&arp_request([10, 0, 2, 2]));
    both.extend(Qemu::framed(&dhcp_discover(0x0bad_cafe)));
    q.conn.write_all(&both).unwrap();
    let mut seen_arp = None;
    let mut seen_offer = None;
    q.expect("an ARP reply and a second offer", |f| {
        if let Some(mac) = arp_reply(f, [10, 0, 2, 2]) {
            seen_arp = Some(mac);
        }
        if let Some(r) = dhcp_reply(f, 0x0bad_cafe) {
            seen_offer = Some(r);
        }
        (seen_arp.is_some() && seen_offer.is_some()).then_some(())
    });
    assert_eq!(
        seen_arp.unwrap(),
        [0x52, 0x55, 10, 0, 2, 2],
        "libslirp's gateway MAC"
    );

    // The running helper is sandboxed, unprivileged, with few descriptors.
    assert_eq!(status_field(pid, "Seccomp").as_deref(), Some("2"));
    assert_eq!(status_field(pid, "NoNewPrivs").as_deref(), Some("1"));
    let uid = status_field(pid, "Uid").unwrap();
    assert!(uid.starts_with("65534"), "dropped to nobody: Uid {uid}");
    let fds = fd_targets(pid);
    assert!(fds.len() <= 12, "too many descriptors: {fds:?}");
    assert!(
        !fds.iter()
            .any(|f| f.contains(".sock") || f.contains("/tmp")),
        "no listener or file left open: {fds:?}"
    );

    // The host forward listens.
    let tcp = TcpStream::connect(("127.0.0.1", q.hostfwd_port)).expect("hostfwd listens");
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    drop(tcp);

    // QEMU hanging up ends the helper with exit 0.
    drop(q.conn);
    let status = wait_exit(&mut q.helper.0, Duration::from_secs(10)).expect("exit on hangup");
    assert!(
        status.success(),
        "{status:?}: {}",
        stderr_of(&mut q.helper.0)
    );
}

#[test]
fn an_oversize_length_is_refused_with_a_clear_error() {
    let mut q = start(&[]);
    q.conn.write_all(&0x00ff_ffffu32.to_be_bytes()).unwrap();
    q.conn.write_all(&[0u8; 64]).unwrap();
    let status = wait_exit(&mut q.helper.0, Duration::from_secs(10)).expect("helper exits");
    assert_eq!(status.code(), Some(1));
    let err = stderr_of(&mut q.helper.0);
    assert!(
        err.contains("16777215") && err.contains("limit"),
        "the error names the length: {err}"
    );
}

#[test]
fn sigterm_is_a_clean_exit() {
    let mut q = start(&[]);
    // Make sure the loop runs (an answered frame) before signalling.
    q.conn
        .write_all(&Qemu::framed(&arp_request([10, 0, 2, 2])))
        .unwrap();
    q.expect("an ARP reply", |f| arp_reply(f, [10, 0, 2, 2]));
    // SAFETY: kill with the helper's pid, which is alive (we hold its Child).
    unsafe { libc::kill(q.helper.0.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut q.helper.0, Duration::from_secs(10)).expect("exit on SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// libslirp 4.7 has no window scaling: a VM guest at MTU 65,520 stalls
/// one download in four for seconds. With `--tcp=slirp` the helper says
/// so, once, at start, and only above 16 KiB; the own TCP path (the
/// default) has no such limit, and no warning.
#[test]
fn a_vm_mtu_above_16_kib_warns_of_download_stalls_with_libslirps_tcp() {
    let cases = [
        ("65520", "--tcp=slirp", true),
        ("65520", "--tcp=own", false),
        ("16384", "--tcp=slirp", false),
        ("1500", "--tcp=slirp", false),
    ];
    for (mtu, tcp, warned) in cases {
        let mut q = start(&["--mtu", mtu, tcp]);
        q.conn
            .write_all(&Qemu::framed(&arp_request([10, 0, 2, 2])))
            .unwrap();
        q.expect("an ARP reply", |f| arp_reply(f, [10, 0, 2, 2]));
        // SAFETY: kill with the helper's pid, which is alive.
        unsafe { libc::kill(q.helper.0.id() as i32, libc::SIGTERM) };
        wait_exit(&mut q.helper.0, Duration::from_secs(10)).expect("exit on SIGTERM");
        let err = stderr_of(&mut q.helper.0);
        let lines = err.lines().filter(|l| l.contains("window scaling")).count();
        assert_eq!(lines, usize::from(warned), "MTU {mtu} {tcp}: {err}");
        if warned {
            assert!(err.contains("--mtu 16384"), "{err}");
        }
    }
}

#[test]
fn bad_flags_exit_non_zero_with_one_line() {
    for (args, needle) in [
        (
            vec![
                "--hostfwd",
                "tcp:127.0.0.1:99999-:22",
                "--qemu-stream",
                "/nonexistent/x",
            ],
            "99999",
        ),
        (vec!["--mtu", "70000", "--qemu-stream", "/tmp/x"], "70000"),
        (
            vec!["--tcp-fin-timeout", "0", "--qemu-stream", "/tmp/x"],
            "TCP FIN timeout 0ns is out of range (1 ms to 30 days)",
        ),
        (
            vec!["--tcp-idle-timeout=99999999999", "--qemu-stream", "/tmp/x"],
            "TCP idle timeout 99999999999s is out of range",
        ),
        (
            vec!["--tcp-idle-timeout=soon", "--qemu-stream", "/tmp/x"],
            "soon",
        ),
        (vec!["--frobnicate"], "--frobnicate"),
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--qemu-stream"));
}

#[test]
fn dgram_front_end_serves_one_frame_per_datagram() {
    use std::os::unix::net::UnixDatagram;
    let scratch = Scratch::new("qdgram");
    let ours = scratch.0.join("qemu.sock");
    let theirs = scratch.0.join("helper.sock");
    let child = Command::new(BIN)
        .arg("--qemu-dgram")
        .arg(&theirs)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut helper = Reaper(child);
    assert!(wait_for_path(&theirs, Duration::from_secs(10)));
    let q = UnixDatagram::bind(&ours).unwrap();
    q.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    q.send_to(&dhcp_discover(0xd6_0001), &theirs).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 70_000];
    let offer = loop {
        assert!(Instant::now() < deadline, "no offer over dgram");
        if let Ok(n) = q.recv(&mut buf) {
            if let Some(r) = dhcp_reply(&buf[..n], 0xd6_0001) {
                break r;
            }
        }
    };
    assert_eq!(offer, (2, [10, 0, 2, 15]));
    let pid = helper.0.id();
    assert_eq!(status_field(pid, "Seccomp").as_deref(), Some("2"));
    // SAFETY: kill with the helper's pid, which is alive (we hold its Child).
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = wait_exit(&mut helper.0, Duration::from_secs(10)).expect("exit on SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// Restricted mode with `--tcp=own`: a host forward's connection reaches
/// the guest through the own path. The helper has seen no unicast frame
/// of the guest's, so it asks the guest's Ethernet address by ARP first;
/// then its SYN offers a window scale (libslirp's never does), and its
/// listener accepted inside the sandbox.
#[test]
fn a_restricted_forward_goes_through_the_own_path_with_a_window_scale() {
    use caploop::frame::ethernet::{Ethernet, ETHERTYPE_IPV4};
    use caploop::frame::ipv4::Ipv4;
    use caploop::frame::tcp::{Tcp, ACK, SYN};

    let mut q = start(&["--tcp=own"]);
    let _client = connect_until_arp(&mut q);
    let gateway = [0x52, 0x55, 10, 0, 2, 2];
    let guest_mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    let mut reply = gateway.to_vec();
    reply.extend_from_slice(&guest_mac);
    reply.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    reply.extend_from_slice(&guest_mac);
    reply.extend_from_slice(&[10, 0, 2, 15]);
    reply.extend_from_slice(&gateway);
    reply.extend_from_slice(&[10, 0, 2, 2]);
    q.conn.write_all(&Qemu::framed(&reply)).unwrap();
    let options = q.expect("a SYN to 10.0.2.15:80", |f| {
        let eth = Ethernet::new_checked(f).ok()?;
        if eth.ethertype() != ETHERTYPE_IPV4 || eth.dst() != guest_mac {
            return None;
        }
        let ip = Ipv4::new_checked(eth.payload()).ok()?;
        let tcp = Tcp::new_checked(ip.payload()).ok()?;
        (ip.dst() == [10, 0, 2, 15] && tcp.dst_port() == 80 && tcp.flags() & (SYN | ACK) == SYN)
            .then(|| tcp.options().to_vec())
    });
    // Options: kind 3 is the window scale.
    let mut o = &options[..];
    let mut scaled = false;
    while let Some(&kind) = o.first() {
        match kind {
            0 => break,
            1 => o = &o[1..],
            _ => {
                scaled |= kind == 3;
                let len = usize::from(*o.get(1).unwrap_or(&2)).max(2);
                o = o.get(len..).unwrap_or(&[]);
            }
        }
    }
    assert!(scaled, "no window scale in the SYN's options {options:?}");
}

/// Connects to the forward of a `--tcp=own` helper whose guest has sent
/// nothing, and waits for the ARP request for 10.0.2.15 it makes.
fn connect_until_arp(q: &mut Qemu) -> TcpStream {
    use caploop::frame::ethernet::{Ethernet, ETHERTYPE_ARP};
    // The forward listens once the helper has set up its session.
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = loop {
        match TcpStream::connect(("127.0.0.1", q.hostfwd_port)) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the forward never listened: {e}"),
        }
    };
    let gateway = [0x52, 0x55, 10, 0, 2, 2];
    q.expect("an ARP request for 10.0.2.15", |f| {
        let eth = Ethernet::new_checked(f).ok()?;
        let arp = eth.payload();
        (eth.ethertype() == ETHERTYPE_ARP
            && eth.src() == gateway
            && arp.get(6..8) == Some(&[0, 1])
            && arp.get(24..28) == Some(&[10, 0, 2, 15]))
        .then_some(())
    });
    client
}

/// SIGTERM ends a `--tcp=own` helper while a forwarded connection waits
/// for the guest's Ethernet address.
#[test]
fn sigterm_ends_the_helper_while_a_forward_waits_for_arp() {
    let mut q = start(&["--tcp=own"]);
    let _client = connect_until_arp(&mut q);
    // SAFETY: kill with the helper's pid, which is alive (we hold its Child).
    unsafe { libc::kill(q.helper.0.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut q.helper.0, Duration::from_secs(5)).expect("exit on SIGTERM");
    assert!(status.success(), "{status:?}");
}
