//! A real QEMU guest (TCG, virtio-net, Debian's kernel, busybox) on
//! caploop-sandbox's QEMU stream front end: DHCP, ping, a file served by
//! the guest through a host forward arriving byte-exact, and the guest's
//! reach to the host refused in restricted mode but allowed in open mode.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::guest::{available, blob, build_initrd, host_listener, http_get, Guest, Scratch};
use common::helper::{free_port, wait_exit, wait_for_path, Reaper, BIN};

const BOOT: Duration = Duration::from_secs(90);

/// The file the guest serves: deterministic, incompressible-looking.
fn served() -> Vec<u8> {
    blob(0x2545_f491_4f6c_dd1d, 400_000)
}

/// Starts the helper on a fresh socket and boots the guest against it.
fn boot(script: &str, helper_args: &[String]) -> (Reaper, Guest, Scratch) {
    let scratch = Scratch::new("qguest");
    let sock = scratch.0.join("q.sock");
    let helper = Command::new(BIN)
        .arg("--qemu-stream")
        .arg(&sock)
        .args(helper_args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn caploop-sandbox");
    let helper = Reaper(helper);
    assert!(wait_for_path(&sock, Duration::from_secs(10)));
    let initrd = build_initrd(&scratch, script, &[("www/blob", &served())]);
    let guest = Guest::boot(
        &initrd,
        &format!(
            "stream,id=n0,server=off,addr.type=unix,addr.path={}",
            sock.display()
        ),
    );
    (helper, guest, scratch)
}

#[test]
fn restricted_guest_gets_a_lease_serves_a_file_and_cannot_reach_the_host() {
    if !available() {
        return;
    }
    let fwd = free_port();
    let (host_port, host_rx) = host_listener();
    let script = format!(
        "ping -c1 -W3 10.0.2.2 && echo PING-OK\n\
         httpd -p 80 -h /www && echo HTTPD-UP\n\
         if echo hello | nc -w 3 10.0.2.2 {host_port}; then echo CONNECT-OK; else echo CONNECT-FAILED; fi\n\
         sleep 60\n"
    );
    let (mut helper, mut guest, _s) =
        boot(&script, &[format!("--hostfwd=tcp:127.0.0.1:{fwd}-:80")]);

    let lease = guest.wait_for("LEASE", BOOT);
    assert!(
        lease.as_deref().is_some_and(|l| l.contains("ip=10.0.2.15")),
        "no lease: {lease:?}\n{}",
        guest.dump()
    );
    assert!(
        guest.wait_for("PING-OK", BOOT).is_some(),
        "{}",
        guest.dump()
    );
    assert!(
        guest.wait_for("HTTPD-UP", BOOT).is_some(),
        "{}",
        guest.dump()
    );
    let body = http_get(fwd, "/blob", Duration::from_secs(30));
    assert!(
        body == served(),
        "file through hostfwd differs: {} bytes",
        body.len()
    );

    let reach = guest.wait_for("CONNECT-", BOOT);
    assert_eq!(reach.as_deref(), Some("CONNECT-FAILED"), "{}", guest.dump());
    assert!(host_rx.try_recv().is_err(), "the host listener was reached");

    // QEMU going away ends the helper cleanly.
    drop(guest);
    let status = wait_exit(&mut helper.0, Duration::from_secs(10)).expect("helper exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn open_guest_reaches_a_host_listener() {
    if !available() {
        return;
    }
    let (host_port, host_rx) = host_listener();
    let script = format!(
        "if echo hello-from-guest | nc -w 3 10.0.2.2 {host_port}; then echo CONNECT-OK; else echo CONNECT-FAILED; fi\n"
    );
    let (_helper, mut guest, _s) = boot(&script, &["--open".to_string()]);
    let lease = guest.wait_for("LEASE", BOOT);
    assert!(
        lease
            .as_deref()
            .is_some_and(|l| l.contains("router=10.0.2.2")),
        "open mode leases a router: {lease:?}\n{}",
        guest.dump()
    );
    let got = host_rx
        .recv_timeout(BOOT)
        .unwrap_or_else(|_| panic!("no connection reached the host\n{}", guest.dump()));
    assert_eq!(got, b"hello-from-guest\n");
    assert_eq!(
        guest.wait_for("CONNECT-", BOOT).as_deref(),
        Some("CONNECT-OK"),
        "{}",
        guest.dump()
    );
}

#[test]
fn dgram_guest_gets_a_lease_and_pings_the_gateway() {
    if !available() {
        return;
    }
    let scratch = Scratch::new("qdguest");
    let helper_sock = scratch.0.join("helper.sock");
    let qemu_sock = scratch.0.join("qemu.sock");
    let helper = Command::new(BIN)
        .arg("--qemu-dgram")
        .arg(&helper_sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn caploop-sandbox");
    let _helper = Reaper(helper);
    assert!(wait_for_path(&helper_sock, Duration::from_secs(10)));
    let initrd = build_initrd(&scratch, "ping -c1 -W3 10.0.2.2 && echo PING-OK\n", &[]);
    let mut guest = Guest::boot(
        &initrd,
        &format!(
            "dgram,id=n0,local.type=unix,local.path={},remote.type=unix,remote.path={}",
            qemu_sock.display(),
            helper_sock.display()
        ),
    );
    let lease = guest.wait_for("LEASE", BOOT);
    assert!(
        lease.as_deref().is_some_and(|l| l.contains("ip=10.0.2.15")),
        "no lease over dgram: {lease:?}\n{}",
        guest.dump()
    );
    assert!(
        guest.wait_for("PING-OK", BOOT).is_some(),
        "{}",
        guest.dump()
    );
}
