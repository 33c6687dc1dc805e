//! The slirp4netns front end against the built binary, in a network
//! namespace of the test's own: `-c`, the ready and exit fds, a 1 MiB stream
//! each way between the namespace and a host loopback listener through
//! 10.0.2.2, the API socket's replies word for word, and the sandbox.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::guest::Scratch;
use common::helper::{free_port, status_field, wait_exit, wait_until, Reaper, BIN};

/// A network namespace deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("caploop-s4b-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        Netns(name)
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: needs root (network namespaces, /dev/net/tun)");
    }
    root
}

/// Asks the API one request the way rootlesskit does: JSON and a newline,
/// shut down the write side, read to the end.
fn api(path: &Path, request: &str) -> String {
    let mut s = UnixStream::connect(path).expect("API socket");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

/// A pipe, both ends close-on-exec.
fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

#[test]
fn configure_ready_stream_api_sandbox_and_exit_fd() {
    if !is_root() {
        return;
    }
    let ns = Netns::new("main");
    let scratch = Scratch::new("s4b");
    let sock = scratch.0.join("api.sock");
    let (ready_r, ready_w) = pipe();
    let (exit_r, exit_w) = pipe();
    let (ready_child, exit_child) = (ready_w.as_raw_fd(), exit_r.as_raw_fd());
    let mut cmd = Command::new(BIN);
    cmd.args(["-c", "-e", "3", "-r", "4", "--mtu=65520", "--api-socket"])
        .arg(&sock)
        .args(["--netns-type=path", &ns.path(), "tap0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only dup2 (async-signal-safe) between fork and exec: the exit
    // fd's read end becomes 3 and the ready fd's write end 4, as Podman does.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(exit_child, 3) < 0 || libc::dup2(ready_child, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut helper = Reaper(cmd.spawn().expect("spawn caploop-sandbox"));
    drop(ready_w);
    drop(exit_r);

    // Ready: exactly "1", then end of file.
    let mut ready = Vec::new();
    std::fs::File::from(ready_r)
        .read_to_end(&mut ready)
        .unwrap();
    assert_eq!(ready, b"1");

    // -c: address, MTU and default route in the namespace.
    let addr = String::from_utf8(ns.exec(&["ip", "-o", "addr", "show", "tap0"]).stdout).unwrap();
    assert!(addr.contains("inet 10.0.2.100/24"), "{addr}");
    let link = String::from_utf8(ns.exec(&["ip", "-o", "link", "show", "tap0"]).stdout).unwrap();
    assert!(link.contains("mtu 65520") && link.contains("UP"), "{link}");
    let route = String::from_utf8(ns.exec(&["ip", "route"]).stdout).unwrap();
    assert!(route.contains("default via 10.0.2.2 dev tap0"), "{route}");

    // Sandboxed.
    let pid = helper.0.id();
    assert_eq!(status_field(pid, "Seccomp").as_deref(), Some("2"));
    assert_eq!(status_field(pid, "NoNewPrivs").as_deref(), Some("1"));

    // 1 MiB each way between the namespace and a host loopback listener.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        let back: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 + 3) as u8).collect();
        s.write_all(&back).unwrap();
        got
    });
    let client = format!(
        "import socket,hashlib\n\
         s=socket.create_connection(('10.0.2.2',{port}),timeout=10)\n\
         s.sendall(bytes((i*13+5)%256 for i in range(1<<20)))\n\
         s.shutdown(socket.SHUT_WR)\n\
         d=b''\n\
         while True:\n\
         \x20   b=s.recv(65536)\n\
         \x20   if not b: break\n\
         \x20   d+=b\n\
         print(len(d), hashlib.sha256(d).hexdigest())\n"
    );
    let out = ns.exec(&["python3", "-c", &client]);
    let got = host.join().unwrap();
    let sent: Vec<u8> = (0..1u32 << 20).map(|i| (i * 13 + 5) as u8).collect();
    assert!(
        got == sent,
        "namespace -> host: {} bytes, differ",
        got.len()
    );
    let back: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + 3) as u8).collect();
    let expect = {
        use std::process::Command as C;
        let o = C::new("python3")
            .args([
                "-c",
                "import sys,hashlib;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(&back)?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("{} {expect}", 1 << 20),
        "host -> namespace: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The API, word for word.
    let fwd = free_port();
    let add = format!(
        r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_addr":"127.0.0.1","host_port":{fwd},"guest_addr":"","guest_port":8080}}}}"#
    );
    assert_eq!(api(&sock, &add), r#"{"return":{"id":1}}"#);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", fwd)).is_ok(),
        "forward listens"
    );
    assert_eq!(
        api(&sock, r#"{"execute":"list_hostfwd"}"#),
        format!(
            r#"{{"entries":[{{"id":1,"proto":"tcp","host_addr":"127.0.0.1","host_port":{fwd},"guest_addr":"10.0.2.100","guest_port":8080}}]}}"#
        )
    );
    let again = api(&sock, &add);
    assert!(
        again.starts_with(r#"{"error":{"desc":"bad request: add_hostfwd: "#),
        "{again}"
    );
    assert_eq!(
        api(
            &sock,
            r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#
        ),
        r#"{"return":{}}"#
    );
    assert!(
        wait_until(Duration::from_secs(3), || std::net::TcpStream::connect((
            "127.0.0.1",
            fwd
        ))
        .is_err()),
        "removed forward still listens"
    );
    assert_eq!(
        api(
            &sock,
            r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#
        ),
        r#"{"error":{"desc":"bad request: remove_hostfwd: bad arguments.id"}}"#
    );
    assert_eq!(
        api(&sock, r#"{"execute":"bogus"}"#),
        r#"{"error":{"desc":"bad request: unknown execute"}}"#
    );
    assert_eq!(
        api(&sock, "not json"),
        r#"{"error":{"desc":"bad request: cannot parse JSON"}}"#
    );

    // The exit fd hanging up ends the helper with 0.
    drop(exit_w);
    let status = wait_exit(&mut helper.0, Duration::from_secs(10)).expect("exit on exit-fd");
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_flags_exit_non_zero_with_one_line() {
    for (args, needle) in [
        (vec!["--target-type=bess", "1", "tap0"], "bess"),
        (vec!["--mtu", "70000", "1", "tap0"], "70000"),
        (vec!["--netns-type=foo", "1"], "foo"),
        (vec!["--cidr", "10.0.2.0/33", "1"], "10.0.2.0/33"),
        (vec!["--macaddress", "zz:zz", "1"], "zz:zz"),
        (vec!["999999999", "tap0"], "999999999"),
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
