//! The slirp4netns API socket under pressure, against the built helper:
//! a request answered before the client shuts down its side, a reply far
//! larger than a socket buffer delivered whole while traffic flows, at
//! most 64 clients at once, and no busy loop when `accept` runs out of
//! descriptors. Needs root (a network namespace and a tap).
#![cfg(target_os = "linux")]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::guest::Scratch;
use common::helper::{cpu_ticks, free_port, BIN};
use common::s4nn::{add_hostfwd, api, start, stream_mib, try_connect, Netns, Started, LIST};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: needs root (network namespaces, /dev/net/tun)");
    }
    root
}

/// The helper with an API socket, `-c`, and at most `nofile` descriptors.
fn helper_with_api(ns: &Netns, api: &Path, nofile: u64) -> Started {
    let mut cmd = Command::new(BIN);
    cmd.args(["-c", "--api-socket", api.to_str().unwrap()])
        .args(["-r", "5", "--netns-type=path", &ns.path(), "tap0"]);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut s = start(cmd, Some(5), None);
    s.ready();
    s
}

/// Reads one whole reply (to end of file) within `timeout`, or `None`.
fn reply_within(c: &mut UnixStream, timeout: Duration) -> Option<String> {
    c.set_read_timeout(Some(timeout)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8(got).unwrap()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

#[test]
fn a_request_is_answered_before_the_client_shuts_down() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let scratch = Scratch::new("api-early");
    let path = scratch.0.join("api.sock");
    let _s = helper_with_api(&ns, &path, 1024);
    let mut c = UnixStream::connect(&path).unwrap();
    c.write_all(format!("{LIST}\n").as_bytes()).unwrap();
    // No shutdown(SHUT_WR): slirp4netns answers what it read at once.
    let t = Instant::now();
    let r = reply_within(&mut c, Duration::from_secs(2)).expect("a reply without shutdown");
    assert_eq!(r, r#"{"entries":[]}"#);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn a_huge_reply_arrives_whole_while_traffic_flows() {
    if !is_root() {
        return;
    }
    const N: usize = 2500;
    let ns = Netns::new();
    let scratch = Scratch::new("api-huge");
    let path = scratch.0.join("api.sock");
    let _s = helper_with_api(&ns, &path, 8192);
    let mut ports = Vec::with_capacity(N);
    while ports.len() < N {
        let p = free_port();
        let r = api(&path, &add_hostfwd("udp", p, 7000));
        if r.starts_with(r#"{"return""#) {
            ports.push(p);
        }
    }
    // A reader that takes its time: the reply (~300 KB) is larger than the
    // socket's buffer, so it goes out in pieces as it is read.
    let mut slow = UnixStream::connect(&path).unwrap();
    slow.write_all(format!("{LIST}\n").as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile other clients are answered and a stream flows.
    assert!(api(&path, LIST).len() > 250_000);
    stream_mib(&ns, "10.0.2.2", TcpListener::bind("127.0.0.1:0").unwrap());
    let r = reply_within(&mut slow, Duration::from_secs(10)).expect("the whole reply");
    let v: serde_json::Value = serde_json::from_str(&r).expect("whole JSON");
    let entries = v["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), N);
    assert_eq!(
        entries[N - 1]["host_port"].as_u64(),
        Some(u64::from(ports[N - 1]))
    );
}

#[test]
fn at_most_64_clients_at_once_and_the_rest_wait() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let scratch = Scratch::new("api-64");
    let path = scratch.0.join("api.sock");
    let _s = helper_with_api(&ns, &path, 1024);
    // 64 clients that send nothing yet.
    let mut idle: Vec<UnixStream> = (0..64)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut waiting = UnixStream::connect(&path).unwrap();
    waiting.write_all(format!("{LIST}\n").as_bytes()).unwrap();
    assert_eq!(
        reply_within(&mut waiting, Duration::from_millis(700)),
        None,
        "a 65th client was served"
    );
    // One idle client finishes: the waiting one is served.
    let mut first = idle.remove(0);
    first.write_all(format!("{LIST}\n").as_bytes()).unwrap();
    assert!(reply_within(&mut first, Duration::from_secs(2)).is_some());
    assert_eq!(
        reply_within(&mut waiting, Duration::from_secs(2)).as_deref(),
        Some(r#"{"entries":[]}"#)
    );
    drop(idle);
}

#[test]
fn running_out_of_descriptors_does_not_spin() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let scratch = Scratch::new("api-emfile");
    let path = scratch.0.join("api.sock");
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    common::s4nn::host_echo(host);
    let s = helper_with_api(&ns, &path, 1024);
    let pid = s.pid();
    // Leave the running helper four descriptors to spare.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let lim = libc::rlimit {
        rlim_cur: open + 4,
        rlim_max: open + 4,
    };
    // SAFETY: prlimit reads one rlimit that lives for the call.
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    // Clients until the helper cannot accept any more (its descriptors
    // are gone); they wait in the backlog.
    let clients: Vec<UnixStream> = (0..40)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    assert!(used < 20, "{used} ticks of CPU in 2 s: the helper spins");
    // Descriptors come back: the API and the guest's connections work.
    drop(clients);
    std::thread::sleep(Duration::from_millis(600));
    let mut c = UnixStream::connect(&path).unwrap();
    c.write_all(format!("{LIST}\n").as_bytes()).unwrap();
    assert_eq!(
        reply_within(&mut c, Duration::from_secs(3)).as_deref(),
        Some(r#"{"entries":[]}"#)
    );
    assert_eq!(try_connect(&ns, "10.0.2.2", port), "ok:echo:hello");
}
