//! The VMM author's example (`examples/vmm_device.rs`) runs as documented:
//! two NICs, one through the sandboxed `caploop-sandbox` helper and one
//! in process, the example's own process sandboxed, each NIC's guest a tap
//! in a network namespace serving HTTP through its host forward.

#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::helper::{wait_exit, Reaper, BIN};
use common::s4nn::{is_root, Netns};

/// GET `path` from 127.0.0.1:`port`, retried for a while (the guest's
/// server may still be starting).
fn get(port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = || -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
            let mut resp = String::new();
            s.read_to_string(&mut resp)?;
            Ok(resp)
        };
        match attempt() {
            Ok(r) if r.starts_with("HTTP/1.0 200") => return r,
            other if Instant::now() >= deadline => panic!("GET {path} on {port}: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn the_vmm_example_serves_two_guests_through_both_back_ends_sandboxed() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    // cargo test builds the workspace's examples into target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("vmm_device"))
        .unwrap();
    if !example.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} was not built",
            example.display()
        );
        eprintln!("skipped: {} not built", example.display());
        return;
    }
    let nss = [Netns::new(), Netns::new()];
    let mut child = Reaper(
        Command::new(&example)
            .args(["--helper", BIN, &nss[0].path(), &nss[1].path()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut lines = Vec::new();
    let ports: Vec<u16> = loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "no ready line: {lines:?}"
        );
        if let Some(rest) = line.strip_prefix("ready ") {
            break rest
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect();
        }
        lines.push(line);
    };
    assert!(
        lines.iter().any(|l| l.contains("seccomp Some(Filter)")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("nic0/helper: helper pid ")),
        "{lines:?}"
    );
    // Each namespace as the README says, and a web server in it.
    let mut servers = Vec::new();
    for (i, ns) in nss.iter().enumerate() {
        ns.ip(&["addr", "add", "10.0.2.15/24", "dev", "tap0"]);
        ns.ip(&["link", "set", "tap0", "up"]);
        ns.ip(&["route", "add", "default", "via", "10.0.2.2"]);
        let dir = std::env::temp_dir().join(format!("caploop-vmm-{}-{i}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hello"), format!("hello from vm{i}\n")).unwrap();
        servers.push(Reaper(
            Command::new("ip")
                .args(["netns", "exec", &ns.0, "python3", "-m", "http.server", "80"])
                .args(["--bind", "10.0.2.15", "--directory"])
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
    }
    assert!(get(ports[0], "/hello").ends_with("hello from vm0\n"));
    assert!(get(ports[1], "/hello").ends_with("hello from vm1\n"));
    drop(servers);
    // SAFETY: kill of our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child.0, Duration::from_secs(30)).expect("the example ends");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{status:?}: {rest}");
    for nic in ["nic0/helper", "nic1/in-process"] {
        let line = rest.lines().find(|l| l.starts_with(nic)).unwrap_or("");
        assert!(
            line.contains("frames from the guest") && !line.contains("stopped"),
            "{rest}"
        );
    }
}
