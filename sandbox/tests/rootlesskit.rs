//! A real slirp4netns client: Debian's rootlesskit runs the built binary as
//! its `--slirp4netns-binary` with `--port-driver=slirp4netns`. A file
//! served inside the rootless namespace comes out byte-exact through the
//! `-p` forward; a forward added at run time with `rootlessctl add-ports`
//! (the API socket) works, is listed, and after `remove-ports` refuses
//! connections.
//!
//! Needs root (rootlesskit runs as root here, with a `root:` range it adds
//! to /etc/subuid and /etc/subgid for the test and removes after),
//! rootlesskit and rootlessctl (Debian package `rootlesskit`, which pulls
//! in `uidmap`), /dev/net/tun, and busybox (httpd) or python3 to serve the
//! file. Skipped with a message when not root; when anything else is
//! missing, skipped too, but a failure under CI (`CI` set). Linux only.

#![cfg(target_os = "linux")]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::guest::Scratch;
use common::helper::{free_port, wait_exit, wait_until, BIN};

/// Serializes everything that touches /etc/subuid and /etc/subgid.
static SUBID_LOCK: Mutex<()> = Mutex::new(());

const SUBID_FILES: [&str; 2] = ["/etc/subuid", "/etc/subgid"];
const ROOT_RANGE: &str = "root:100000:65536";

/// Adds a `root:` range to /etc/subuid and /etc/subgid where none is, and
/// puts back the original contents (or absence) on drop, panics included.
struct SubidGuard {
    saved: Vec<(&'static str, Option<Vec<u8>>)>,
}

impl SubidGuard {
    fn new() -> SubidGuard {
        let mut guard = SubidGuard { saved: Vec::new() };
        for path in SUBID_FILES {
            let old = match std::fs::read(path) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => panic!("reading {path}: {e}"),
            };
            let has_root = old.as_deref().is_some_and(|b| {
                String::from_utf8_lossy(b)
                    .lines()
                    .any(|l| l.trim_start().starts_with("root:"))
            });
            if has_root {
                continue;
            }
            let mut new = old.clone().unwrap_or_default();
            if !new.is_empty() && !new.ends_with(b"\n") {
                new.push(b'\n');
            }
            new.extend_from_slice(ROOT_RANGE.as_bytes());
            new.push(b'\n');
            // Saved before the write, so a failed write is still undone.
            guard.saved.push((path, old));
            std::fs::write(path, new).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        }
        guard
    }
}

impl Drop for SubidGuard {
    fn drop(&mut self) {
        for (path, old) in self.saved.drain(..) {
            let r = match old {
                Some(b) => std::fs::write(path, b),
                None => std::fs::remove_file(path),
            };
            if let Err(e) = r {
                eprintln!("could not restore {path}: {e}");
            }
        }
    }
}

/// rootlesskit in its own process group, killed with the group on drop
/// (its child, the namespace's processes and our binary with it).
struct Kit {
    child: Child,
    others: Vec<u32>,
}

impl Drop for Kit {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory effects; the group is rootlesskit's own.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        for &pid in &self.others {
            // SAFETY: as above; these pids were read while rootlesskit, their
            // parent, was alive and still unreaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let others = self.others.clone();
        let gone = wait_until(Duration::from_secs(5), || {
            others.iter().all(|&p| !alive(p)) && !group_has_members(pgid)
        });
        if !gone {
            eprintln!("processes of rootlesskit's group {pgid} outlived SIGKILL");
        }
    }
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|f| f.is_file())
    })
}

/// `/proc/PID/stat` split after the command name: state is field 0, ppid
/// field 1, pgrp field 2.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Running (exited and unreaped counts as gone).
fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f[0] != "Z" && f[0] != "X")
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn group_has_members(pgid: libc::pid_t) -> bool {
    all_pids().into_iter().any(|p| {
        stat_fields(p).is_some_and(|f| f[2] == pgid.to_string() && f[0] != "Z" && f[0] != "X")
    })
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What is missing to run the test here, if anything.
fn missing() -> Option<String> {
    for tool in ["rootlesskit", "rootlessctl", "newuidmap", "newgidmap"] {
        if which(tool).is_none() {
            return Some(format!(
                "{tool} is not installed (Debian packages rootlesskit and uidmap)"
            ));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    if server_command(Path::new("/")).is_none() {
        return Some("neither busybox (with httpd) nor python3 is installed".into());
    }
    None
}

/// A shell command serving `dir` over HTTP on 0.0.0.0:8080, in the
/// foreground.
fn server_command(dir: &Path) -> Option<String> {
    let dir = dir.display();
    if let Some(bb) = which("busybox") {
        let has_httpd = Command::new(&bb)
            .arg("--list")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l == "httpd")
            })
            .unwrap_or(false);
        if has_httpd {
            return Some(format!(
                "exec {} httpd -f -p 0.0.0.0:8080 -h '{dir}'",
                bb.display()
            ));
        }
    }
    which("python3").map(|py| {
        format!(
            "cd '{dir}' && exec {} -m http.server 8080 --bind 0.0.0.0",
            py.display()
        )
    })
}

/// One HTTP/1.0 GET of `/path` through 127.0.0.1:`port`: the body, if the
/// status was 200.
fn http_get(port: u16, path: &str) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP header in {} bytes", resp.len())))?;
    let head = String::from_utf8_lossy(&resp[..split]);
    if !head.lines().next().is_some_and(|l| l.contains(" 200")) {
        return Err(std::io::Error::other(format!("HTTP: {head}")));
    }
    Ok(resp[split + 4..].to_vec())
}

/// Retries `http_get` until it succeeds or `timeout` is up.
fn fetch(port: u16, path: &str, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    loop {
        match http_get(port, path) {
            Ok(body) => return body,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("fetching /{path} through 127.0.0.1:{port}: {e}"),
        }
    }
}

/// FNV-1a, 64 bits: enough to name the contents in a failure message.
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes (fnv {:016x}), want {} bytes (fnv {:016x}); first difference at {:?}",
            got.len(),
            fnv(got),
            want.len(),
            fnv(want),
            first
        );
    }
}

/// Runs `rootlessctl --socket SOCK args...` with a bound; its stdout.
fn rootlessctl(sock: &Path, args: &[&str]) -> String {
    let mut child = Command::new("rootlessctl")
        .arg("--socket")
        .arg(sock)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rootlessctl");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "rootlessctl {args:?}: {status:?}\nstdout: {out}\nstderr: {err}"
    );
    out
}

/// The rows of `rootlessctl list-ports` (header dropped) as columns.
fn list_ports(sock: &Path) -> Vec<Vec<String>> {
    rootlessctl(sock, &["list-ports"])
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .filter(|r: &Vec<String>| !r.is_empty())
        .collect()
}

fn refuses(port: u16) -> bool {
    matches!(
        TcpStream::connect(("127.0.0.1", port)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused
    )
}

/// Whether a TCP socket listens on `port` in `pid`'s network namespace
/// (its /proc/PID/net/tcp).
fn listens_in(pid: u32, port: u16) -> bool {
    let want = format!(":{port:04X}");
    std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
        })
    })
}

/// Our binary among rootlesskit's children, serving tap0: its pid and argv.
fn find_ours(kit: u32) -> Option<(u32, Vec<String>)> {
    all_pids().into_iter().find_map(|p| {
        let f = stat_fields(p)?;
        if f[1] != kit.to_string() {
            return None;
        }
        let exe = std::fs::read_link(format!("/proc/{p}/exe")).ok()?;
        if exe != Path::new(BIN).canonicalize().ok()? {
            return None;
        }
        // Not the `--help` probes rootlesskit runs first: the service.
        let argv = cmdline(p);
        argv.last()
            .is_some_and(|a| a == "tap0")
            .then_some((p, argv))
    })
}

fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn rootlesskit_port_driver_slirp4netns() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Even under CI: rootlesskit needs root here (/etc/subuid, and
        // /dev/net/tun is mode 0600).
        eprintln!("skipped: not root");
        return;
    }
    if let Some(why) = missing() {
        if std::env::var_os("CI").is_some() {
            panic!("rootlesskit test cannot run: {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let _lock = SUBID_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _subid = SubidGuard::new();

    let scratch = Scratch::new("rootlesskit");
    let www = scratch.0.join("www");
    let state = scratch.0.join("state");
    let log = scratch.0.join("rootlesskit.log");
    std::fs::create_dir_all(&www).unwrap();
    // 1 MiB of a simple generator's output: not compressible, not periodic
    // at any small stride.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(www.join("f.bin"), &data).unwrap();

    let port1 = free_port();
    let mut port2 = free_port();
    while port2 == port1 {
        port2 = free_port();
    }
    let serve = server_command(&www).unwrap();
    let logf = std::fs::File::create(&log).unwrap();
    let started = Instant::now();
    let child = Command::new("rootlesskit")
        .arg("--net=slirp4netns")
        .arg(format!("--slirp4netns-binary={BIN}"))
        .arg("--port-driver=slirp4netns")
        .arg("-p")
        .arg(format!("127.0.0.1:{port1}:8080/tcp"))
        .arg("--state-dir")
        .arg(&state)
        .args(["--", "sh", "-c", &serve])
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .process_group(0)
        .spawn()
        .expect("spawn rootlesskit");
    let mut kit = Kit {
        child,
        others: Vec::new(),
    };
    let kit_pid = kit.child.id();

    // rootlesskit writes child_pid once the namespaces exist and serves
    // its own API on api.sock; it starts our binary around the same time.
    let api = state.join("api.sock");
    let read_child_pid = || -> Option<u32> {
        std::fs::read_to_string(state.join("child_pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let mut found = None;
    let up = wait_until(Duration::from_secs(15), || {
        if let Ok(Some(st)) = kit.child.try_wait() {
            panic!("rootlesskit exited early: {st}\n{}", log_tail(&log));
        }
        found = find_ours(kit_pid);
        api.exists() && read_child_pid().is_some() && found.is_some()
    });
    assert!(
        up,
        "rootlesskit did not come up, or runs no caploop-sandbox (pid {kit_pid}):\n{}",
        log_tail(&log)
    );
    eprintln!("rootlesskit up after {:?}", started.elapsed());
    let child_pid = read_child_pid().unwrap();
    kit.others.push(child_pid);

    // Our binary is what rootlesskit runs, in slirp4netns's role, and it
    // serves the child's network namespace.
    let (ours, argv) = found.unwrap();
    kit.others.push(ours);
    assert!(
        argv.iter().any(|a| a == "--api-socket"),
        "unexpected argv from rootlesskit: {argv:?}"
    );
    assert_eq!(
        argv.get(argv.len().wrapping_sub(2)),
        Some(&child_pid.to_string()),
        "the target is rootlesskit's child: {argv:?}"
    );

    // rootlesskit's child configures tap0 and only then starts the
    // command: once the server listens, the namespace is ready. (A
    // connection forwarded earlier may have its SYN to the namespace lost
    // and wait for libslirp's retransmission, seconds later.)
    assert!(
        wait_until(Duration::from_secs(15), || listens_in(child_pid, 8080)),
        "the server in the namespace never listened:\n{}",
        log_tail(&log)
    );

    // The -p forward: the file, byte-exact.
    let body = fetch(port1, "f.bin", Duration::from_secs(15));
    assert_same(&body, &data, "through the -p forward");
    eprintln!(
        "fetched through the -p forward after {:?}",
        started.elapsed()
    );

    // A forward added at run time through the API socket.
    let added = rootlessctl(&api, &["add-ports", &format!("127.0.0.1:{port2}:8080/tcp")]);
    let id = added.trim().to_string();
    assert!(id.parse::<u32>().is_ok(), "add-ports printed {added:?}");
    let body = fetch(port2, "f.bin", Duration::from_secs(10));
    assert_same(&body, &data, "through the forward added with rootlessctl");

    let rows = list_ports(&api);
    let port2s = port2.to_string();
    let port1s = port1.to_string();
    assert!(
        rows.iter().any(|r| r[0] == id && r.contains(&port2s)),
        "list-ports lacks id {id} for port {port2}: {rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.contains(&port1s)),
        "list-ports lacks the -p forward on {port1}: {rows:?}"
    );

    // Removed: refused, no longer listed, and the -p forward still works.
    rootlessctl(&api, &["remove-ports", &id]);
    assert!(
        wait_until(Duration::from_secs(3), || refuses(port2)),
        "127.0.0.1:{port2} still accepts after remove-ports {id}"
    );
    let rows = list_ports(&api);
    assert!(
        !rows.iter().any(|r| r[0] == id || r.contains(&port2s)),
        "list-ports still shows id {id}: {rows:?}"
    );
    let body = fetch(port1, "f.bin", Duration::from_secs(5));
    assert_same(&body, &data, "through the -p forward after remove-ports");

    assert!(alive(ours), "caploop-sandbox died:\n{}", log_tail(&log));
    drop(kit);
    assert!(
        !alive(ours) && !alive(child_pid),
        "rootlesskit's processes survived the group kill"
    );
    eprintln!("rootlesskit test took {:?}", started.elapsed());
}
