//! A real QEMU guest (TCG, virtio-net, Debian's kernel, busybox) on
//! caploop-sandbox's vhost-user-net back end: the guest's memory is a
//! shared memfd the helper maps, frames go through the virtio rings. DHCP,
//! ping, a file byte-exact both ways through host forwards, and the
//! guest's reach to the host refused in restricted mode.

#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::guest::{available, blob, build_initrd, host_listener, http_get, Guest, Scratch};
use common::helper::{free_port, wait_exit, wait_for_path, Reaper, BIN};

const BOOT: Duration = Duration::from_secs(120);

/// Starts the helper on a fresh vhost-user socket and boots the guest
/// against it, its memory a shared memfd.
fn boot(
    scratch: &Scratch,
    script: &str,
    files: &[(&str, &[u8])],
    helper_args: &[String],
) -> (Reaper, Guest) {
    let sock = scratch.0.join("vu.sock");
    let log = std::fs::File::create(scratch.0.join("helper.log")).unwrap();
    let helper = Command::new(BIN)
        .arg("--vhost-user")
        .arg(&sock)
        .args(helper_args)
        .env(
            "RUST_LOG",
            std::env::var("VHOST_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn caploop-sandbox");
    let helper = Reaper(helper);
    assert!(wait_for_path(&sock, Duration::from_secs(10)));
    let initrd = build_initrd(scratch, script, files);
    let chardev = format!("socket,id=c,path={}", sock.display());
    let guest = Guest::boot_with(
        &initrd,
        "vhost-user,id=n0,chardev=c",
        // QEMU 7.2 under TCG crashes in msix_set_vector_notifiers when
        // vhost_net_start unmasks MSI-X vectors of a vhost-user device:
        // INTx only.
        "virtio-net-pci,netdev=n0,vectors=0",
        &[
            "-object",
            "memory-backend-memfd,id=mem,size=256M,share=on",
            "-numa",
            "node,memdev=mem",
            "-chardev",
            &chardev,
        ],
    );
    (helper, guest)
}

fn helper_log(scratch: &Path) -> String {
    std::fs::read_to_string(scratch.join("helper.log")).unwrap_or_default()
}

#[test]
fn vhost_user_guest_gets_a_lease_pings_moves_files_both_ways_and_cannot_reach_the_host() {
    if !available() {
        return;
    }
    let scratch = Scratch::new("vuguest");
    let down = blob(0x2545_f491_4f6c_dd1d, 400_000);
    let up = blob(0x9e37_79b9_7f4a_7c15, 300_000);
    let (fwd_http, fwd_up) = (free_port(), free_port());
    let (host_port, host_rx) = host_listener();
    let script = format!(
        "ping -c1 -W3 10.0.2.2 && echo PING-OK\n\
         httpd -p 80 -h /www && echo HTTPD-UP\n\
         (nc -l -p 81 < /dev/null > /tmp/up; if cmp /tmp/up /up; then echo UP-OK; else echo UP-DIFFERS; fi) &\n\
         echo NC-UP\n\
         if echo hello | nc -w 3 10.0.2.2 {host_port}; then echo CONNECT-OK; else echo CONNECT-FAILED; fi\n\
         sleep 120\n"
    );
    let (mut helper, mut guest) = boot(
        &scratch,
        &script,
        &[("www/blob", &down), ("up", &up)],
        &[format!(
            "--hostfwd=tcp:127.0.0.1:{fwd_http}-:80;tcp:127.0.0.1:{fwd_up}-:81"
        )],
    );
    let ctx = |g: &Guest| format!("{}\n--- helper ---\n{}", g.dump(), helper_log(&scratch.0));

    let lease = guest.wait_for("LEASE", BOOT);
    assert!(
        lease.as_deref().is_some_and(|l| l.contains("ip=10.0.2.15")),
        "no lease: {lease:?}\n{}",
        ctx(&guest)
    );
    assert!(guest.wait_for("PING-OK", BOOT).is_some(), "{}", ctx(&guest));
    assert!(
        guest.wait_for("HTTPD-UP", BOOT).is_some(),
        "{}",
        ctx(&guest)
    );
    assert!(guest.wait_for("NC-UP", BOOT).is_some(), "{}", ctx(&guest));

    // Guest to host.
    let body = http_get(fwd_http, "/blob", Duration::from_secs(60));
    assert!(
        body == down,
        "file through hostfwd differs: {} bytes\n{}",
        body.len(),
        ctx(&guest)
    );

    // Restricted: the guest cannot reach the host.
    let reach = guest.wait_for("CONNECT-", BOOT);
    assert_eq!(reach.as_deref(), Some("CONNECT-FAILED"), "{}", ctx(&guest));
    assert!(host_rx.try_recv().is_err(), "the host listener was reached");

    // Host to guest.
    let mut s = TcpStream::connect(("127.0.0.1", fwd_up)).expect("hostfwd connect");
    s.write_all(&up).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = s.read_to_end(&mut Vec::new());
    assert_eq!(
        guest.wait_for("UP-", BOOT).as_deref(),
        Some("UP-OK"),
        "{}",
        ctx(&guest)
    );

    // QEMU going away ends the helper cleanly.
    drop(guest);
    let status = wait_exit(&mut helper.0, Duration::from_secs(10)).expect("helper exits");
    let log = helper_log(&scratch.0);
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("sandbox entered"), "{log}");
    // Offloads both ways: the guest's TSO super-segments went into
    // libslirp whole (HOST_TSO4), and runs of libslirp's segments reached
    // the guest merged (GUEST_TSO4).
    // The exit line: "link in N frames / B bytes (O offloaded, M merged,
    // A ACKs thinned), out N frames / B bytes (M merged, ...".
    let line = log
        .lines()
        .find(|l| l.contains(": link in "))
        .unwrap_or_else(|| panic!("no link counters in\n{log}"));
    let (inbound, outbound) = line.split_once("), out ").unwrap();
    let count = |part: &str, what: &str| -> u64 {
        let at = part
            .find(what)
            .unwrap_or_else(|| panic!("no {what} in {line}"));
        part[..at]
            .trim_end()
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number before {what} in {line}"))
    };
    assert!(
        count(inbound, " offloaded") > 0,
        "no super-segment in\n{log}"
    );
    let merged = count(outbound, " merged");
    assert!(merged > 0, "nothing merged for the guest\n{log}");
}
