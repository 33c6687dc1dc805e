//! The slirp4netns front end's test support: network namespaces, the
//! helper started as rootlesskit and Podman start it (ready and exit fds),
//! streams between a namespace and host loopback, and the API socket as
//! each client speaks it. Needs root; `python3` runs in the namespaces.
#![allow(dead_code)]

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::guest::Scratch;
use super::helper::{Reaper, BIN};

// ---------------------------------------------------------------------------
// Namespaces and processes

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: needs root (network namespaces, /dev/net/tun)");
    }
    root
}

/// A network namespace `caploop-s4-<pid>-<n>`, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new() -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "caploop-s4-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip");
        assert!(ok.success(), "ip netns add {name}");
        Netns(name)
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    /// `ip -n NAME ARGS`, its stdout; fails the test if `ip` fails.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.0])
            .args(args)
            .output()
            .expect("ip");
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.0,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `args` in the namespace, bounded by `timeout 20`.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0, "timeout", "20"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec")
    }

    /// Runs a python3 script in the namespace; its stdout, trimmed.
    pub fn py(&self, script: &str) -> String {
        let out = self.exec(&["python3", "-c", script]);
        assert!(
            out.status.success(),
            "python3 in {}: {:?}: {}",
            self.0,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A pipe, both ends close-on-exec.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

/// A started helper: the process (killed on drop), the read end of its
/// ready fd and the write end of its exit fd.
pub struct Started {
    pub helper: Reaper,
    pub ready: Option<File>,
    pub exit: Option<OwnedFd>,
}

impl Started {
    pub fn pid(&self) -> u32 {
        self.helper.0.id()
    }

    /// Everything the ready fd gives until end of file; fails the test
    /// (with the helper's stderr) if that takes longer than `timeout`.
    pub fn read_ready(&mut self, timeout: Duration) -> Vec<u8> {
        let mut f = self.ready.take().expect("started with a ready fd");
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.fail(&format!(
                    "no end of file on the ready fd after {timeout:?} (got {got:?})"
                ));
            }
            let mut pfd = libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd, valid for the call.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
            if n <= 0 {
                continue;
            }
            let mut buf = [0u8; 64];
            match f.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => self.fail(&format!("reading the ready fd: {e}")),
            }
        }
    }

    /// Waits for exactly "1" then end of file on the ready fd.
    pub fn ready(&mut self) {
        let got = self.read_ready(Duration::from_secs(10));
        if got != b"1" {
            self.fail(&format!("the ready fd gave {got:?}, not \"1\""));
        }
    }

    /// Kills the helper and fails the test with its stderr.
    pub fn fail(&mut self, what: &str) -> ! {
        let _ = self.helper.0.kill();
        let status = self.helper.0.wait();
        let mut err = String::new();
        if let Some(mut e) = self.helper.0.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        panic!("{what}; helper {status:?}, stderr: {err}");
    }
}

/// Spawns `cmd` with a fresh pipe's write end as fd `ready_at` and another
/// pipe's read end as fd `exit_at`, as rootlesskit and Podman pass them.
pub fn start(cmd: Command, ready_at: Option<RawFd>, exit_at: Option<RawFd>) -> Started {
    start_with(cmd, ready_at, exit_at, false)
}

/// [`start`], with the ready pipe already full when `full_ready`: a reader
/// that never reads, as far as the helper can tell.
pub fn start_with(
    mut cmd: Command,
    ready_at: Option<RawFd>,
    exit_at: Option<RawFd>,
    full_ready: bool,
) -> Started {
    let ready = ready_at.map(|_| pipe());
    if let (true, Some((_, w))) = (full_ready, &ready) {
        let raw = w.as_raw_fd();
        let chunk = [0u8; 4096];
        // SAFETY: fcntl on our own pipe end, then writes from a stack
        // buffer until the pipe is full, then blocking again.
        unsafe {
            let fl = libc::fcntl(raw, libc::F_GETFL);
            libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK);
            while libc::write(raw, chunk.as_ptr().cast(), chunk.len()) > 0 {}
            libc::fcntl(raw, libc::F_SETFL, fl);
        }
    }
    let exit = exit_at.map(|_| pipe());
    let mut map: [(RawFd, RawFd); 2] = [(-1, -1); 2];
    if let (Some(at), Some((_, w))) = (ready_at, &ready) {
        map[0] = (w.as_raw_fd(), at);
    }
    if let (Some(at), Some((r, _))) = (exit_at, &exit) {
        map[1] = (r.as_raw_fd(), at);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only fcntl and dup2 (async-signal-safe) between fork and exec,
    // over a fixed array. The ends are first copied above every target
    // number, so a source that happens to sit on another's target is not
    // overwritten before it is placed; dup2 clears close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [-1; 2];
            for (i, &(src, _)) in map.iter().enumerate() {
                if src >= 0 {
                    high[i] = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 100);
                    if high[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            for (i, &(_, dst)) in map.iter().enumerate() {
                if high[i] >= 0 && libc::dup2(high[i], dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let helper = Reaper(cmd.spawn().expect("spawn the helper"));
    Started {
        helper,
        ready: ready.map(|(r, _w)| File::from(r)),
        exit: exit.map(|(_r, w)| w),
    }
}

/// `caploop-sandbox ARGS` with "-r 5" and the path target `ns`/tap0,
/// waited for until ready.
pub fn helper(ns: &Netns, args: &[&str]) -> Started {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .args(["-r", "5", "--netns-type=path", &ns.path(), "tap0"]);
    let mut s = start(cmd, Some(5), None);
    s.ready();
    s
}

// ---------------------------------------------------------------------------
// The tap as `ip -j` shows it

pub struct Tap {
    pub mtu: u64,
    pub mac: String,
    /// "addr/prefixlen" for each IPv4 address.
    pub addrs: Vec<String>,
    pub up: bool,
}

pub fn tap_from_json(json: &str) -> Tap {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let link = &v[0];
    let addrs = link["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| i["family"] == "inet")
                .map(|i| format!("{}/{}", i["local"].as_str().unwrap(), i["prefixlen"]))
                .collect()
        })
        .unwrap_or_default();
    Tap {
        mtu: link["mtu"].as_u64().expect("mtu"),
        mac: link["address"].as_str().expect("address").to_string(),
        addrs,
        up: link["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP")),
    }
}

// ---------------------------------------------------------------------------
// Traffic

/// SHA-256 of `data`, hex, by the host's python3.
pub fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys,hashlib;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// 1 MiB that repeats at no short period.
pub fn pattern(seed: u64) -> Vec<u8> {
    pattern_of(seed, 1 << 20)
}

/// `len` bytes that repeat at no short period.
pub fn pattern_of(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

/// Accepts one connection within `timeout`.
pub fn accept_within(l: &TcpListener, timeout: Duration) -> Option<TcpStream> {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return Some(s);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    None
}

/// A host listener that reads one connection to its end, then sends
/// `back` and closes; the thread returns what it read.
pub fn host_sink(listener: TcpListener, back: Vec<u8>) -> JoinHandle<Option<Vec<u8>>> {
    std::thread::spawn(move || {
        let mut s = accept_within(&listener, Duration::from_secs(15))?;
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).ok()?;
        s.write_all(&back).ok()?;
        s.shutdown(Shutdown::Write).ok()?;
        Some(got)
    })
}

/// 1 MiB from the namespace to `listener` (on host loopback) through
/// `via`, then 1 MiB back, each compared by SHA-256.
pub fn stream_mib(ns: &Netns, via: &str, listener: TcpListener) {
    stream_each_way(ns, via, listener, 1 << 20);
}

/// `len` bytes from the namespace to `listener` (on host loopback) through
/// `via`, then `len` bytes back, each compared by SHA-256.
pub fn stream_each_way(ns: &Netns, via: &str, listener: TcpListener, len: usize) {
    let port = listener.local_addr().unwrap().port();
    let back = pattern_of(u64::from(port), len);
    let host = host_sink(listener, back.clone());
    let script = format!(
        "import socket,hashlib,os\n\
         d=os.urandom({len})\n\
         s=socket.create_connection(('{via}',{port}),timeout=10)\n\
         s.sendall(d)\n\
         s.shutdown(socket.SHUT_WR)\n\
         r=bytearray()\n\
         while True:\n\
         \x20   b=s.recv(65536)\n\
         \x20   if not b: break\n\
         \x20   r+=b\n\
         print(hashlib.sha256(d).hexdigest(), len(r), hashlib.sha256(r).hexdigest())\n"
    );
    let out = ns.py(&script);
    let got = host
        .join()
        .unwrap()
        .expect("the host listener got the whole stream");
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "{out}");
    assert_eq!(got.len(), len, "namespace -> host length");
    assert_eq!(sha256_hex(&got), fields[0], "namespace -> host bytes");
    assert_eq!(fields[1], len.to_string(), "host -> namespace length");
    assert_eq!(fields[2], sha256_hex(&back), "host -> namespace bytes");
}

/// Connects from the namespace to `addr`:`port` with a 3 s timeout:
/// "ok:<reply>" after a round trip, or the error's class name and errno.
pub fn try_connect(ns: &Netns, addr: &str, port: u16) -> String {
    ns.py(&format!(
        "import socket\n\
         try:\n\
         \x20   s=socket.create_connection(('{addr}',{port}),timeout=3)\n\
         \x20   s.sendall(b'hello')\n\
         \x20   print('ok:'+s.recv(100).decode())\n\
         except Exception as e:\n\
         \x20   print(type(e).__name__+':'+str(getattr(e,'errno',None)))\n"
    ))
}

/// A host listener that answers each connection's first read with
/// "echo:" and what it read, until the test ends.
pub fn host_echo(listener: TcpListener) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut buf = [0u8; 100];
                if let Ok(n) = s.read(&mut buf) {
                    let _ = s.write_all(&[b"echo:", &buf[..n]].concat());
                }
            });
        }
    });
}

// ---------------------------------------------------------------------------
// The API

/// One request the way rootlesskit sends it: JSON and a newline, shut down
/// the write side, read to the end (what arrives before an error counts).
pub fn api_raw(path: &Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(path).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let _ = s.shutdown(Shutdown::Write);
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("no end of the reply within 5 s (got {reply:?})")
            }
            Err(_) => break,
        }
    }
    String::from_utf8(reply).unwrap()
}

pub fn api(path: &Path, request: &str) -> String {
    api_raw(path, format!("{request}\n").as_bytes())
}

/// One request the way Podman sends it: JSON and a newline, shut down the
/// write side, one read(2048).
pub fn api_podman(path: &Path, request: &str) -> String {
    let mut s = UnixStream::connect(path).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{request}\n").as_bytes()).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

pub fn add_hostfwd(proto: &str, host_port: u16, guest_port: u16) -> String {
    format!(
        r#"{{"execute":"add_hostfwd","arguments":{{"proto":"{proto}","host_addr":"127.0.0.1","host_port":{host_port},"guest_addr":"","guest_port":{guest_port}}}}}"#
    )
}

pub fn entry(id: u64, proto: &str, host_port: u16, guest_port: u16) -> String {
    format!(
        r#"{{"id":{id},"proto":"{proto}","host_addr":"127.0.0.1","host_port":{host_port},"guest_addr":"10.0.2.100","guest_port":{guest_port}}}"#
    )
}

pub const LIST: &str = r#"{"execute":"list_hostfwd"}"#;

pub fn api_sock(scratch: &Scratch) -> PathBuf {
    scratch.0.join("api.sock")
}

/// Turns off duplicate address detection in `ns`, so that an address
/// made by SLAAC is usable at once (call before the helper starts).
pub fn no_dad(ns: &Netns) {
    let out = ns.exec(&[
        "sysctl",
        "-w",
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
    ]);
    assert!(out.status.success(), "sysctl");
}

/// Waits up to 10 s for tap0 in `ns` to get an fd00:: address by SLAAC.
pub fn wait_slaac(ns: &Netns) {
    let mut last = String::new();
    let slaac = super::helper::wait_until(Duration::from_secs(10), || {
        last = ns.ip(&["-6", "-o", "addr", "show", "dev", "tap0", "scope", "global"]);
        last.contains("inet6 fd00::")
    });
    assert!(slaac, "no fd00:: address by SLAAC within 10 s: {last}");
}

/// Starts the helper on `ns` with `args`, logging at info level.
pub fn helper_logging(ns: &Netns, args: &[&str]) -> Started {
    let mut cmd = Command::new(BIN);
    cmd.env("RUST_LOG", "info").args(args).args([
        "-r",
        "5",
        "--netns-type=path",
        &ns.path(),
        "tap0",
    ]);
    let mut s = start(cmd, Some(5), None);
    s.ready();
    s
}

/// Ends the helper with SIGTERM and returns its log.
pub fn finish(mut s: Started) -> String {
    // SAFETY: kill sends a signal to our own child, which is alive.
    unsafe { libc::kill(s.pid() as i32, libc::SIGTERM) };
    let status = s.helper.0.wait().unwrap();
    let mut log = String::new();
    s.helper
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "helper {status:?}: {log}");
    log
}

/// Runs `nft` with `ruleset` in `ns`, which must take it.
pub fn nft(ns: &Netns, ruleset: &str) {
    let out = ns.exec(&["nft", ruleset]);
    assert!(
        out.status.success(),
        "nft {ruleset}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `script` with python3 in `ns` in the background, once it printed
/// "listening": the process (killed when dropped) and its output after.
pub fn ns_server(ns: &Netns, script: &str) -> (Reaper, std::process::ChildStdout) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0, "python3", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut out = child.stdout.take().unwrap();
    let mut line = [0u8; 10];
    out.read_exact(&mut line)
        .expect("the namespace's server starts");
    assert_eq!(&line, b"listening\n");
    (Reaper(child), out)
}

/// Drops, in `ns`, every 20th TCP data packet it sends to the tap and one
/// in `in_every` it receives from it.
pub fn lose_packets(ns: &Netns, in_every: u32) {
    nft(
        ns,
        &format!(
            "add table inet loss; \
             add chain inet loss out {{ type filter hook output priority 0; }}; \
             add chain inet loss in {{ type filter hook input priority 0; }}; \
             add rule inet loss out oif tap0 meta l4proto tcp meta length > 1000 numgen inc mod 20 == 7 counter drop; \
             add rule inet loss in iif tap0 meta l4proto tcp meta length > 1000 numgen inc mod {in_every} == 5 counter drop"
        ),
    );
}

/// Both rules of [`lose_packets`] dropped something: a loss test that
/// lost nothing proves little.
pub fn assert_lost(ns: &Netns) {
    let rules = String::from_utf8(ns.exec(&["nft", "list", "ruleset"]).stdout).unwrap();
    let drops: Vec<u64> = rules
        .split("counter packets ")
        .skip(1)
        .map(|t| t.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(drops.len(), 2, "{rules}");
    assert!(drops.iter().all(|&n| n > 0), "nothing dropped: {rules}");
}
