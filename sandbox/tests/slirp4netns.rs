//! The slirp4netns front end as rootlesskit and Podman use it, against the
//! built binary, each test in a network namespace of its own: `-c` with a
//! path and a PID target, TCP and UDP to host loopback through 10.0.2.2,
//! IPv6 through [fd00::2], `--disable-host-loopback`, DNS through 10.0.2.3,
//! the ready and exit fds, the API socket word for word, a slow API client
//! while a stream flows, bad flags, the sandbox, and a restart after
//! SIGKILL.
//!
//! Needs root (network namespaces, /dev/net/tun), `ip`, `unshare`,
//! `nsenter`, `timeout` and `python3`; without root each test is skipped.
//! Linux only.

#![cfg(target_os = "linux")]

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::guest::Scratch;
use common::helper::{free_port, status_field, wait_exit, wait_until, Reaper, BIN};
use common::s4nn::*;

// ---------------------------------------------------------------------------
// 1. -c with a path target and a PID target, and with --cidr/--mtu/--macaddress

#[test]
fn configure_path_target() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let _h = helper(&ns, &["-c"]);
    let tap = tap_from_json(&ns.ip(&["-j", "addr", "show", "tap0"]));
    assert_eq!(tap.addrs, ["10.0.2.100/24"]);
    assert_eq!(tap.mtu, 1500);
    assert!(tap.up, "tap0 is down");
    let route = ns.ip(&["route"]);
    assert!(route.contains("default via 10.0.2.2 dev tap0"), "{route}");
}

#[test]
fn configure_pid_target() {
    if !is_root() {
        return;
    }
    let holder = Reaper(
        Command::new("unshare")
            .args(["--net", "sleep", "60"])
            .spawn()
            .expect("unshare"),
    );
    let pid = holder.0.id().to_string();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_link(format!(
            "/proc/{pid}/ns/net"
        ))
        .is_ok_and(|n| n != ours)),
        "unshare --net did not take effect"
    );
    let mut cmd = Command::new(BIN);
    cmd.args(["-c", "--mtu", "65520", "-r", "5", &pid, "tap0"]);
    let mut h = start(cmd, Some(5), None);
    h.ready();
    let nsenter = |args: &[&str]| {
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-n", "ip"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "nsenter ip {args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let tap = tap_from_json(&nsenter(&["-j", "addr", "show", "tap0"]));
    assert_eq!(tap.addrs, ["10.0.2.100/24"]);
    assert_eq!(tap.mtu, 65520);
    assert!(tap.up);
    let route = nsenter(&["route"]);
    assert!(route.contains("default via 10.0.2.2 dev tap0"), "{route}");
}

#[test]
fn configure_cidr_mtu_macaddress() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let _h = helper(
        &ns,
        &[
            "-c",
            "--cidr",
            "10.0.3.0/24",
            "--mtu",
            "65520",
            "--macaddress",
            "02:00:00:00:00:42",
        ],
    );
    let tap = tap_from_json(&ns.ip(&["-j", "addr", "show", "tap0"]));
    assert_eq!(tap.addrs, ["10.0.3.100/24"]);
    assert_eq!(tap.mtu, 65520);
    assert_eq!(tap.mac, "02:00:00:00:00:42");
    let route = ns.ip(&["route"]);
    assert!(route.contains("default via 10.0.3.2 dev tap0"), "{route}");
    // And the gateway answers there.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    host_echo(l);
    assert_eq!(try_connect(&ns, "10.0.3.2", port), "ok:echo:hello");
}

// ---------------------------------------------------------------------------
// 2. A 1 MiB stream each way

#[test]
fn tcp_mib_each_way_through_gateway() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let _h = helper(&ns, &["-c", "--mtu", "65520"]);
    stream_mib(&ns, "10.0.2.2", TcpListener::bind("127.0.0.1:0").unwrap());
}

// ---------------------------------------------------------------------------
// 3. UDP

#[test]
fn udp_datagram_and_reply_through_gateway() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let _h = helper(&ns, &["-c"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let host = std::thread::spawn(move || {
        let mut seen = 0;
        let mut buf = [0u8; 2048];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                seen += 1;
                let _ = sock.send_to(&[b"pong:", &buf[..n]].concat(), from);
            }
        }
        seen
    });
    let out = ns.py(&format!(
        "import socket\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.settimeout(1)\n\
         for i in range(5):\n\
         \x20   s.sendto(b'ping-%d'%i,('10.0.2.2',{port}))\n\
         \x20   try:\n\
         \x20       d,a=s.recvfrom(2048)\n\
         \x20       print(d.decode(),a[0],a[1])\n\
         \x20       break\n\
         \x20   except socket.timeout:\n\
         \x20       pass\n\
         else:\n\
         \x20   print('no reply')\n"
    ));
    stop.store(true, Ordering::Relaxed);
    let seen = host.join().unwrap();
    assert!(seen >= 1, "the host saw no datagram ({out})");
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f.len(), 3, "{out}");
    assert!(f[0].starts_with("pong:ping-"), "{out}");
    assert_eq!(
        (f[1], f[2]),
        ("10.0.2.2", port.to_string().as_str()),
        "{out}"
    );
}

// ---------------------------------------------------------------------------
// 4. IPv6, and --disable-host-loopback

#[test]
fn ipv6_slaac_and_tcp_to_host_loopback_via_fd00_2() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    no_dad(&ns);
    let _h = helper(&ns, &["-c", "-6"]);
    wait_slaac(&ns);
    let l = TcpListener::bind("[::1]:0").unwrap();
    let port = l.local_addr().unwrap().port();
    host_echo(l);
    assert_eq!(try_connect(&ns, "fd00::2", port), "ok:echo:hello");
}

#[test]
fn disable_host_loopback_refuses_gateway() {
    if !is_root() {
        return;
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    host_echo(l);

    let ns = Netns::new();
    let _h = helper(&ns, &["-c", "--disable-host-loopback"]);
    let t = Instant::now();
    let r = try_connect(&ns, "10.0.2.2", port);
    // Refused at once (libslirp answers ICMP net unreachable), not left to
    // time out: ENETUNREACH, ECONNREFUSED or EHOSTUNREACH.
    assert!(
        ["OSError:101", "ConnectionRefusedError:111", "OSError:113"].contains(&r.as_str()),
        "10.0.2.2 with --disable-host-loopback: {r}"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    let ns2 = Netns::new();
    let _h2 = helper(&ns2, &["-c"]);
    assert_eq!(try_connect(&ns2, "10.0.2.2", port), "ok:echo:hello");
}

// ---------------------------------------------------------------------------
// 5. DNS through 10.0.2.3 to a resolver on host loopback

/// A DNS responder on `sock` answering every A query with 192.0.2.55;
/// returns how many it answered once `stop` is set.
fn dns_responder(sock: UdpSocket, stop: Arc<AtomicBool>, count: Arc<AtomicUsize>) {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if n < 12 {
                continue;
            }
            let q = &buf[..n];
            let mut r = Vec::with_capacity(n + 16);
            r.extend_from_slice(&q[..2]); // id
            r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
            r.extend_from_slice(&q[12..]); // the question
            r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 55]);
            let _ = sock.send_to(&r, from);
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
}

#[test]
fn dns_via_10_0_2_3_twice_across_the_resolv_conf_recheck() {
    if !is_root() {
        return;
    }
    // A loopback address of this run's own, so parallel runs don't collide.
    let pid = std::process::id();
    let (sock, resolver) = (0..20)
        .find_map(|i| {
            let a = format!("127.0.{}.{}", 10 + (pid / 250 + i) % 200, 2 + pid % 250);
            UdpSocket::bind(format!("{a}:53")).ok().map(|s| (s, a))
        })
        .expect("a loopback address with port 53 free");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    dns_responder(sock, stop.clone(), count.clone());
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop = Stop(stop);

    let scratch = Scratch::new("s4dns");
    let resolv = scratch.0.join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {resolver}\n")).unwrap();
    let ns = Netns::new();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "sh",
        "-c",
        "mount --bind \"$1\" /etc/resolv.conf && shift && exec \"$@\"",
        "sh",
    ])
    .arg(&resolv)
    .arg(BIN)
    .args(["-c", "-r", "5", "--netns-type=path", &ns.path(), "tap0"]);
    let mut h = start(cmd, Some(5), None);
    h.ready();

    let out = ns.py(
        "import socket,struct,time\n\
         def q(i):\n\
         \x20   qid=0x1200+i\n\
         \x20   pkt=struct.pack('>HHHHHH',qid,0x0100,1,0,0,0)+b'\\x07caploop\\x04test\\x00'+struct.pack('>HH',1,1)\n\
         \x20   s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         \x20   s.settimeout(1)\n\
         \x20   for t in range(3):\n\
         \x20       s.sendto(pkt,('10.0.2.3',53))\n\
         \x20       try:\n\
         \x20           d,a=s.recvfrom(512)\n\
         \x20       except socket.timeout:\n\
         \x20           continue\n\
         \x20       if struct.unpack('>H',d[:2])[0]==qid:\n\
         \x20           return '%s:%s' % (a[0],socket.inet_ntoa(d[-4:]))\n\
         \x20   return 'timeout'\n\
         print(q(1))\n\
         time.sleep(2)\n\
         print(q(2))\n",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["10.0.2.3:192.0.2.55", "10.0.2.3:192.0.2.55"],
        "first answer, then the one 2 s later"
    );
    assert!(count.load(Ordering::Relaxed) >= 2);
}

// ---------------------------------------------------------------------------
// 6. Ready and exit fds

#[test]
fn ready_fd_gives_1_then_eof_after_configuring() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let mut cmd = Command::new(BIN);
    cmd.args(["-c", "-r", "5", "--netns-type=path", &ns.path(), "tap0"]);
    let mut h = start(cmd, Some(5), None);
    assert_eq!(h.read_ready(Duration::from_secs(10)), b"1");
    // Ready means served: the tap is already configured.
    let tap = tap_from_json(&ns.ip(&["-j", "addr", "show", "tap0"]));
    assert_eq!(tap.addrs, ["10.0.2.100/24"]);
    assert!(h.helper.0.try_wait().unwrap().is_none(), "still running");
}

fn exit_fd_case(how: &str) {
    let ns = Netns::new();
    let mut cmd = Command::new(BIN);
    cmd.args(["-c", "-e", "3", "-r", "5", "--netns-type=path", &ns.path()]);
    cmd.arg("tap0");
    let mut h = start(cmd, Some(5), Some(3));
    h.ready();
    let exit = h.exit.take().unwrap();
    let t = Instant::now();
    // After a byte the write end stays open: the byte alone must do it.
    let _kept = match how {
        "close" => {
            drop(exit);
            None
        }
        _ => {
            let mut f = File::from(exit);
            f.write_all(b"x").unwrap();
            Some(f)
        }
    };
    let status = wait_exit(&mut h.helper.0, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no exit within 5 s after the exit fd ({how})"));
    assert_eq!(status.code(), Some(0), "{how}: {status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "{how}: {:?}",
        t.elapsed()
    );
}

#[test]
fn exit_fd_hangup_exits_0() {
    if !is_root() {
        return;
    }
    exit_fd_case("close");
}

#[test]
fn exit_fd_byte_exits_0() {
    if !is_root() {
        return;
    }
    exit_fd_case("write");
}

#[test]
fn podman_form_c_e3_r4() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--mtu=65520",
        "--enable-sandbox",
        "--enable-seccomp",
        "-c",
        "-e",
        "3",
        "-r",
        "4",
        "--netns-type=path",
        &ns.path(),
        "tap0",
    ]);
    let mut h = start(cmd, Some(4), Some(3));
    assert_eq!(h.read_ready(Duration::from_secs(10)), b"1");
    let tap = tap_from_json(&ns.ip(&["-j", "addr", "show", "tap0"]));
    assert_eq!(
        (tap.addrs, tap.mtu),
        (vec!["10.0.2.100/24".to_string()], 65520)
    );
    drop(h.exit.take());
    let status = wait_exit(&mut h.helper.0, Duration::from_secs(5)).expect("exit on HUP");
    assert_eq!(status.code(), Some(0));
}

// ---------------------------------------------------------------------------
// 7. The API

/// A listener inside the namespace on TCP `tcp` and UDP `udp`: the TCP
/// connection gets "guest:" and its first read back, each datagram
/// "guest-udp:" and itself. Prints "listening" when bound.
fn guest_server(ns: &Netns, tcp: u16, udp: u16) -> Reaper {
    let script = format!(
        "import socket,threading,sys\n\
         t=socket.socket(); t.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         t.bind(('0.0.0.0',{tcp})); t.listen(8)\n\
         u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind(('0.0.0.0',{udp}))\n\
         def udp():\n\
         \x20   while True:\n\
         \x20       d,a=u.recvfrom(2048); u.sendto(b'guest-udp:'+d,a)\n\
         threading.Thread(target=udp,daemon=True).start()\n\
         print('listening',flush=True)\n\
         while True:\n\
         \x20   c,a=t.accept(); c.settimeout(5)\n\
         \x20   try:\n\
         \x20       c.sendall(b'guest:'+c.recv(100))\n\
         \x20   except Exception: pass\n\
         \x20   c.close()\n"
    );
    ns_server(ns, &script).0
}

fn host_to_guest_tcp(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(3),
    )
    .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"hi").map_err(|e| e.to_string())?;
    let mut r = String::new();
    s.read_to_string(&mut r).map_err(|e| e.to_string())?;
    Ok(r)
}

#[test]
fn api_forwards_list_remove_and_errors_word_for_word() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let scratch = Scratch::new("s4api");
    let sock = api_sock(&scratch);
    let _h = helper(&ns, &["-c", "--api-socket", sock.to_str().unwrap()]);
    let _guest = guest_server(&ns, 8080, 8085);

    // add_hostfwd tcp, guest_addr "": id 1, and it reaches the namespace.
    let tcp = free_port();
    assert_eq!(
        api_podman(&sock, &add_hostfwd("tcp", tcp, 8080)),
        r#"{"return":{"id":1}}"#
    );
    assert_eq!(host_to_guest_tcp(tcp).as_deref(), Ok("guest:hi"));

    // add_hostfwd udp: id 2, and a datagram makes the round trip.
    let udp = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    assert_eq!(
        api(&sock, &add_hostfwd("udp", udp, 8085)),
        r#"{"return":{"id":2}}"#
    );
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut reply = None;
    for _ in 0..5 {
        u.send_to(b"dgram", ("127.0.0.1", udp)).unwrap();
        let mut buf = [0u8; 100];
        if let Ok((n, _)) = u.recv_from(&mut buf) {
            reply = Some(buf[..n].to_vec());
            break;
        }
    }
    assert_eq!(reply.as_deref(), Some(&b"guest-udp:dgram"[..]));

    // list_hostfwd, exact.
    let both = format!(
        r#"{{"entries":[{},{}]}}"#,
        entry(1, "tcp", tcp, 8080),
        entry(2, "udp", udp, 8085)
    );
    assert_eq!(api(&sock, LIST), both);
    assert_eq!(api_podman(&sock, LIST), both);

    // A port already bound: an "error" (all Podman checks for), with
    // slirp4netns's words first.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let e = api(&sock, &add_hostfwd("tcp", taken_port, 8080));
    assert!(
        e.starts_with(r#"{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"#),
        "{e}"
    );
    let v: serde_json::Value = serde_json::from_str(&e).expect("the error is JSON");
    assert!(v["error"]["desc"].is_string(), "{e}");
    // The same port twice.
    let e = api_podman(&sock, &add_hostfwd("tcp", tcp, 8080));
    assert!(
        e.starts_with(r#"{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"#),
        "{e}"
    );
    drop(taken);
    // A failed add takes no id.
    assert_eq!(api(&sock, LIST), both);

    // remove_hostfwd 1: {"return":{}} and the port closes.
    assert_eq!(
        api(
            &sock,
            r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#
        ),
        r#"{"return":{}}"#
    );
    assert!(
        wait_until(Duration::from_secs(3), || TcpStream::connect((
            "127.0.0.1",
            tcp
        ))
        .is_err()),
        "the removed forward still listens"
    );
    assert_eq!(
        api(&sock, LIST),
        format!(r#"{{"entries":[{}]}}"#, entry(2, "udp", udp, 8085))
    );
    // Ids are not reused.
    let tcp2 = free_port();
    assert_eq!(
        api(&sock, &add_hostfwd("tcp", tcp2, 8080)),
        r#"{"return":{"id":3}}"#
    );
    assert_eq!(host_to_guest_tcp(tcp2).as_deref(), Ok("guest:hi"));

    // Errors, word for word.
    for (req, desc) in [
        (
            r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#,
            "bad request: remove_hostfwd: bad arguments.id",
        ),
        (
            r#"{"execute":"remove_hostfwd","arguments":{"id":99}}"#,
            "bad request: remove_hostfwd: bad arguments.id",
        ),
        (r#"{"execute":"bogus"}"#, "bad request: unknown execute"),
        ("not json", "bad request: cannot parse JSON"),
    ] {
        let want = format!(r#"{{"error":{{"desc":"{desc}"}}}}"#);
        assert_eq!(api(&sock, req), want, "{req}");
        assert_eq!(api_podman(&sock, req), want, "{req}");
    }

    // 4095 bytes (newline included) is a request; 4096 and more are not.
    let padded = |len: usize| {
        let mut r = LIST.as_bytes().to_vec();
        r.resize(len - 1, b' ');
        r.push(b'\n');
        r
    };
    let one = format!(
        r#"{{"entries":[{},{}]}}"#,
        entry(2, "udp", udp, 8085),
        entry(3, "tcp", tcp2, 8080)
    );
    assert_eq!(api_raw(&sock, &padded(4095)), one);
    let too_large = r#"{"error":{"desc":"bad request: too large message"}}"#;
    assert_eq!(api_raw(&sock, &padded(4096)), too_large);
    assert_eq!(api_raw(&sock, &padded(20000)), too_large);

    // Still serving.
    assert_eq!(api(&sock, LIST), one);
}

// ---------------------------------------------------------------------------
// 8. A slow API client while a stream flows

#[test]
fn slow_api_client_neither_blocks_traffic_nor_lingers() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let scratch = Scratch::new("s4slow");
    let sock = api_sock(&scratch);
    let _h = helper(&ns, &["-c", "--api-socket", sock.to_str().unwrap()]);

    let mut slow = UnixStream::connect(&sock).unwrap();
    let t0 = Instant::now();
    slow.write_all(br#"{"execute":"list_"#).unwrap();

    stream_mib(&ns, "10.0.2.2", TcpListener::bind("127.0.0.1:0").unwrap());
    // Other clients are served meanwhile.
    assert_eq!(api(&sock, LIST), r#"{"entries":[]}"#);
    let during = t0.elapsed();
    assert!(
        during < Duration::from_millis(4500),
        "the stream and a request took {during:?} while a client was slow"
    );

    slow.set_read_timeout(Some(Duration::from_secs(9))).unwrap();
    let mut got = Vec::new();
    let r = slow.read_to_end(&mut got);
    let dropped = t0.elapsed();
    assert!(
        r.is_ok(),
        "the slow client was not closed: {r:?} after {dropped:?}"
    );
    assert!(got.is_empty(), "the slow client got a reply: {got:?}");
    assert!(
        dropped >= Duration::from_millis(4500) && dropped < Duration::from_millis(7000),
        "the slow client was dropped after {dropped:?}, not 5 s"
    );
    assert_eq!(api(&sock, LIST), r#"{"entries":[]}"#);
}

// ---------------------------------------------------------------------------
// 9. Bad flags and --help

#[test]
fn bad_flags_exit_1_with_one_line() {
    // Longer than a unix socket address holds (108 bytes with its NUL).
    // (A PID that does not exist: were a check missing, nothing is joined.)
    let long = format!("/tmp/{}", "s".repeat(110));
    for (args, needle) in [
        (
            &["--cidr", "10.0.2.100/24", "999999", "tap0"][..],
            "CIDR needs to be a network address like 10.0.2.0/24, not like 10.0.2.100/24",
        ),
        (
            &["--api-socket", &long, "999999", "tap0"][..],
            "the specified API socket path is too long (>= 108)",
        ),
        (&["--target-type=bess", "1", "tap0"][..], "bess"),
        (&["--mtu", "70000", "1", "tap0"][..], "70000"),
        (
            &["--tcp-fin-timeout=0", "1", "tap0"][..],
            "TCP FIN timeout 0ns is out of range",
        ),
        (&["--netns-type=foo", "1"][..], "foo"),
        (&["--cidr", "10.0.2.0/33", "1"][..], "10.0.2.0/33"),
        (&["--macaddress", "zz:zz", "1"][..], "zz:zz"),
        (&["999999", "tap0"][..], "999999"),
    ] {
        if args[0] == "999999" && Path::new("/proc/999999").exists() {
            continue;
        }
        let out = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn help_exits_0_naming_what_the_clients_look_for() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--netns-type",
        "--disable-host-loopback",
        "--api-socket",
        "--enable-sandbox",
        "--enable-seccomp",
        "--mtu",
        "--cidr",
        "--outbound-addr",
        "--enable-ipv6",
    ] {
        assert!(text.contains(opt), "--help lacks {opt}");
    }
}

// ---------------------------------------------------------------------------
// 10. The sandbox

#[test]
fn running_helper_is_seccomp_filtered_with_no_new_privs() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let scratch = Scratch::new("s4sec");
    let sock = api_sock(&scratch);
    let h = helper(&ns, &["-c", "--api-socket", sock.to_str().unwrap()]);
    assert_eq!(status_field(h.pid(), "Seccomp").as_deref(), Some("2"));
    assert_eq!(status_field(h.pid(), "NoNewPrivs").as_deref(), Some("1"));
}

// ---------------------------------------------------------------------------
// 11. SIGKILL, then a restart on the same socket and tap

#[test]
fn restart_after_sigkill_same_socket_same_tap() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    // rootlesskit's way: the tap exists and is configured; no -c.
    ns.ip(&["tuntap", "add", "tap0", "mode", "tap"]);
    ns.ip(&["addr", "add", "10.0.2.100/24", "dev", "tap0"]);
    ns.ip(&["link", "set", "tap0", "up"]);
    ns.ip(&["route", "add", "default", "via", "10.0.2.2"]);
    // A PID target, as rootlesskit gives.
    let holder = Reaper(
        Command::new("ip")
            .args(["netns", "exec", &ns.0, "sleep", "60"])
            .spawn()
            .unwrap(),
    );
    let pid = holder.0.id().to_string();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(wait_until(Duration::from_secs(5), || std::fs::read_link(
        format!("/proc/{pid}/ns/net")
    )
    .is_ok_and(|n| n != ours)));
    let scratch = Scratch::new("s4kill");
    let sock = api_sock(&scratch);
    let run = || {
        let mut cmd = Command::new(BIN);
        cmd.args(["--mtu", "1500", "-r", "3", "--api-socket"])
            .arg(&sock)
            .args([&pid, "tap0"]);
        let mut h = start(cmd, Some(3), None);
        h.ready();
        h
    };
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    host_echo(l);
    let fwd = free_port();

    let mut first = run();
    assert_eq!(try_connect(&ns, "10.0.2.2", port), "ok:echo:hello");
    assert_eq!(
        api(&sock, &add_hostfwd("tcp", fwd, 8080)),
        r#"{"return":{"id":1}}"#
    );
    first.helper.0.kill().unwrap();
    first.helper.0.wait().unwrap();
    assert!(
        sock.exists(),
        "the killed helper's socket file stays behind"
    );

    let _second = run();
    assert_eq!(api(&sock, LIST), r#"{"entries":[]}"#);
    // The killed helper's forward port is free again.
    assert_eq!(
        api(&sock, &add_hostfwd("tcp", fwd, 8080)),
        r#"{"return":{"id":1}}"#
    );
    assert_eq!(try_connect(&ns, "10.0.2.2", port), "ok:echo:hello");
    let tap = tap_from_json(&ns.ip(&["-j", "addr", "show", "tap0"]));
    assert_eq!(tap.addrs, ["10.0.2.100/24"]);
}
