//! The VMM author's example (`examples/vmm_device.rs`) runs as documented:
//! two NICs, one through the sandboxed `caploop-sandbox` helper and one
//! in process, the example's own process sandboxed, each guest answering
//! an HTTP request through its host forward.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::helper::{wait_exit, Reaper, BIN};

fn get(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to a forward");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

#[test]
fn the_vmm_example_serves_through_both_back_ends_sandboxed() {
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
    let mut child = Reaper(
        Command::new(&example)
            .args(["--helper", BIN])
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
    assert!(get(ports[0]).ends_with("hello from nic0/helper\n"));
    assert!(get(ports[1]).ends_with("hello from nic1/in-process\n"));
    let status = wait_exit(&mut child.0, Duration::from_secs(30)).expect("the example ends");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{status:?}: {rest}");
    assert!(rest.contains("nic0/helper: served 1"), "{rest}");
    assert!(rest.contains("nic1/in-process: served 1"), "{rest}");
}
