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

use common::guest::{
    available, blob, build_initrd, host_listener, host_listener_on, http_get, try_http_get, Guest,
    Scratch,
};
use common::helper::{free_port, wait_exit, wait_for_path, Reaper, BIN};

const BOOT: Duration = Duration::from_secs(120);

/// Starts the helper on `scratch`'s vhost-user socket, its log in `log`,
/// and waits for the socket.
fn start_helper(scratch: &Scratch, log: &str, helper_args: &[String]) -> Reaper {
    let sock = scratch.0.join("vu.sock");
    let log = std::fs::File::create(scratch.0.join(log)).unwrap();
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
    helper
}

/// Starts the helper and boots the guest against it, its memory a shared
/// memfd; `chardev` is appended to QEMU's `-chardev socket` options.
fn boot(
    scratch: &Scratch,
    script: &str,
    files: &[(&str, &[u8])],
    helper_args: &[String],
    chardev: &str,
) -> (Reaper, Guest) {
    let helper = start_helper(scratch, "helper.log", helper_args);
    let initrd = build_initrd(scratch, script, files);
    let chardev = format!(
        "socket,id=c,path={}{chardev}",
        scratch.0.join("vu.sock").display()
    );
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

/// Ends QEMU, checks that the helper then exits 0, and returns its log
/// and two counts from its exit line ("link in N frames / B bytes (O
/// offloaded, M merged, A ACKs thinned), out N frames / B bytes (M
/// merged, ..."): super-segments in, merged frames out.
fn end_and_count(guest: Guest, mut helper: Reaper, scratch: &Scratch) -> (String, u64, u64) {
    drop(guest);
    let status = wait_exit(&mut helper.0, Duration::from_secs(10)).expect("helper exits");
    let log = helper_log(&scratch.0, "helper.log");
    assert!(status.success(), "{status:?}\n{log}");
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
    let counts = (count(inbound, " offloaded"), count(outbound, " merged"));
    (log, counts.0, counts.1)
}

fn helper_log(scratch: &Path, name: &str) -> String {
    std::fs::read_to_string(scratch.join(name)).unwrap_or_default()
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
    let (helper, mut guest) = boot(
        &scratch,
        &script,
        &[("www/blob", &down), ("up", &up)],
        &[format!(
            "--hostfwd=tcp:127.0.0.1:{fwd_http}-:80;tcp:127.0.0.1:{fwd_up}-:81"
        )],
        "",
    );
    let ctx = |g: &Guest| {
        format!(
            "{}\n--- helper ---\n{}",
            g.dump(),
            helper_log(&scratch.0, "helper.log")
        )
    };

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

    // QEMU going away ends the helper cleanly. Offloads both ways: the
    // guest's TSO super-segments came in (HOST_TSO4), and the upload
    // reached the guest as super-segments the own TCP path built for its
    // GUEST_TSO4, written to its ring as they were made.
    let (log, offloaded, _) = end_and_count(guest, helper, &scratch);
    assert!(log.contains("sandbox entered"), "{log}");
    assert!(offloaded > 0, "no super-segment in\n{log}");
    assert!(
        gso_frames(&log) > Some(0),
        "no super-segment for the guest\n{log}"
    );
}

/// The own TCP path's super-segments for the guest, from the helper's
/// exit line.
fn gso_frames(log: &str) -> Option<u64> {
    log.split("gso_frames: ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The back end restarts under a running guest: QEMU (`-chardev
/// socket,reconnect=1`) connects to the new helper, hands over the same
/// memory and rings with the indices it kept, and the guest's server is
/// reachable again through the new helper's forward, byte-exact.
#[test]
fn a_restarted_helper_serves_the_running_guest_again() {
    if !available() {
        return;
    }
    let scratch = Scratch::new("vureconnect");
    let down = blob(0x5851_f42d_4c95_7f2d, 300_000);
    let fwd = free_port();
    let args = [format!("--hostfwd=tcp:127.0.0.1:{fwd}-:80")];
    let script = "httpd -p 80 -h /www && echo HTTPD-UP\nsleep 300\n";
    let (mut first, mut guest) = boot(
        &scratch,
        script,
        &[("www/blob", &down)],
        &args,
        ",reconnect=1",
    );
    let ctx = |g: &Guest| {
        format!(
            "{}\n--- first helper ---\n{}\n--- second helper ---\n{}",
            g.dump(),
            helper_log(&scratch.0, "helper.log"),
            helper_log(&scratch.0, "helper2.log")
        )
    };
    assert!(
        guest.wait_for("HTTPD-UP", BOOT).is_some(),
        "{}",
        ctx(&guest)
    );
    assert!(
        http_get(fwd, "/blob", Duration::from_secs(60)) == down,
        "first helper: file differs\n{}",
        ctx(&guest)
    );

    // The first helper stops (SIGTERM: exit 0); QEMU keeps running.
    // SAFETY: kill of our own child.
    unsafe { libc::kill(first.0.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut first.0, Duration::from_secs(10)).expect("first helper exits");
    assert!(status.success(), "{status:?}\n{}", ctx(&guest));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        guest.running(),
        "QEMU exited with its back end\n{}",
        ctx(&guest)
    );

    let _second = start_helper(&scratch, "helper2.log", &args);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut last;
    loop {
        match try_http_get(fwd, "/blob", Duration::from_secs(10)) {
            Ok(body) if body == down => break,
            Ok(body) => last = format!("{} bytes, not the file", body.len()),
            Err(e) => last = e.to_string(),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the guest is not served after the restart (last: {last})\n{}",
            ctx(&guest)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        helper_log(&scratch.0, "helper2.log").contains("sandbox entered"),
        "{}",
        ctx(&guest)
    );
}

/// IPv6 with offloads both ways: the guest's TCP/IPv6 super-segments
/// (HOST_TSO6) come in, and the own TCP path's reach the guest as
/// super-segments for its GUEST_TSO6. A file each way between the guest
/// and a host listener on [::1], byte-exact.
#[test]
fn vhost_user_guest_moves_files_both_ways_over_ipv6_with_tso6() {
    if !available() {
        return;
    }
    let scratch = Scratch::new("vuipv6");
    let up = blob(0x2545_f491_4f6c_dd1d, 400_000);
    let down = blob(0x9e37_79b9_7f4a_7c15, 400_000);
    // One listener takes the guest's upload, one sends it the download.
    let (sink_port, got_up) = host_listener_on("[::1]:0");
    let source = std::net::TcpListener::bind("[::1]:0").unwrap();
    let source_port = source.local_addr().unwrap().port();
    let sent = down.clone();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = source.accept() {
            let _ = s.write_all(&sent);
        }
    });
    let script = format!(
        "i=0; while ! ip -6 addr show dev eth0 scope global | grep -q fd00; do\n\
           i=$((i+1)); [ $i -gt 30 ] && break; sleep 1; done\n\
         ip -6 addr show dev eth0 scope global | grep -q fd00 && echo V6-UP\n\
         if nc fd00::2 {sink_port} < /up; then echo SENT; else echo SEND-FAILED; fi\n\
         nc fd00::2 {source_port} < /dev/null > /tmp/down\n\
         if cmp /tmp/down /down; then echo DOWN-OK; else echo DOWN-DIFFERS; fi\n\
         sleep 120\n"
    );
    let (helper, mut guest) = boot(
        &scratch,
        &script,
        &[("up", &up), ("down", &down)],
        &["--open".into(), "-6".into()],
        "",
    );
    let ctx = |g: &Guest| {
        format!(
            "{}\n--- helper ---\n{}",
            g.dump(),
            helper_log(&scratch.0, "helper.log")
        )
    };
    assert!(guest.wait_for("V6-UP", BOOT).is_some(), "{}", ctx(&guest));
    assert_eq!(
        guest.wait_for("SEN", BOOT).as_deref(),
        Some("SENT"),
        "{}",
        ctx(&guest)
    );
    let got = got_up.recv_timeout(BOOT).expect("the upload arrives");
    assert!(
        got == up,
        "upload differs: {} bytes\n{}",
        got.len(),
        ctx(&guest)
    );
    assert_eq!(
        guest.wait_for("DOWN-", BOOT).as_deref(),
        Some("DOWN-OK"),
        "{}",
        ctx(&guest)
    );
    // Only IPv6 carried TCP here: the super-segments in are TSO6's, and
    // the own TCP path built the ones out for the guest's GUEST_TSO6.
    let (log, offloaded, _) = end_and_count(guest, helper, &scratch);
    assert!(offloaded > 0, "no TSO6 super-segment in\n{log}");
    assert!(
        gso_frames(&log) > Some(0),
        "no super-segment for the guest\n{log}"
    );
}
