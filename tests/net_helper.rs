//! The `slirp-helper` back end against a hostile helper: a shell script in
//! the helper's place writes what a compromised libslirp could make the
//! real helper write (a record longer than any frame, a runt, a frame that
//! fits) and the hypervisor's side must come through each with an error
//! naming it, keep the frames that are frames, and never panic.
//!
//! The real helper is met in `sandbox/tests/helper_backend.rs`.

#![cfg(target_os = "linux")]

use std::io::{IoSlice, IoSliceMut, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use caploop::net::{Error, Netbe, MAX_FRAME_LEN};
use caploop::Reactor;

/// The loop's data: nothing, these tests receive by hand.
struct Vm;

/// Writes `script` as an executable helper in a fresh directory, which
/// first acknowledges its configuration as caploop-sandbox does (one
/// record, before any frame).
fn fake_helper(name: &str, script: &str) -> std::path::PathBuf {
    let (shebang, rest) = script.split_once('\n').expect("a script");
    fake_helper_raw(
        name,
        &format!(
            "{shebang}\nprintf '\\000caploop-sandbox ack\\000ok' | dd bs=64 count=1 status=none >&3\n{rest}"
        ),
    )
}

/// Writes `script` as an executable helper, as it is.
fn fake_helper_raw(name: &str, script: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("caploop-fake-helper-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("helper");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(script.as_bytes()).unwrap();
    drop(f);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Receives into a `room`-byte buffer until something other than "nothing
/// yet" comes, or a few seconds pass.
fn recv_one(net: &mut Netbe<Vm>, room: usize) -> std::io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; room];
    loop {
        match net.recv(&mut [IoSliceMut::new(&mut buf)]) {
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => return Ok(None),
            Ok(Some(n)) => return Ok(Some(buf[..n].to_vec())),
            Err(e) => return Err(e),
        }
    }
}

fn frame_error(e: &std::io::Error) -> Option<&Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<Error>())
}

#[test]
fn an_oversize_record_from_the_helper_is_dropped_not_a_panic() {
    // One write each (dd), so one record each: 70,000 bytes of zeros (more
    // than MAX_FRAME_LEN), then a 100-byte frame of 0x5a.
    let helper = fake_helper(
        "oversize",
        "#!/bin/sh\n\
         dd if=/dev/zero bs=70000 count=1 status=none >&3\n\
         head -c 100 /dev/zero | tr '\\0' Z | dd bs=100 count=1 status=none >&3\n\
         cat <&3 >/dev/null\n",
    );
    let mut r: Reactor<Vm> = Reactor::new().unwrap();
    let name = format!("slirp-helper,helper={}", helper.display());
    let mut net = Netbe::open(&name, &mut r, |_, _| {}).unwrap();
    // A front end's usual buffer, smaller than the record: the rest of it
    // would once have been kept "whole" in a buffer it does not fit.
    let e = recv_one(&mut net, 2048).unwrap_err();
    match frame_error(&e) {
        Some(Error::FrameDropped { len, max }) => {
            assert!(*len > MAX_FRAME_LEN, "{e}");
            assert_eq!(*max, MAX_FRAME_LEN);
        }
        other => panic!("not FrameDropped: {other:?} ({e})"),
    }
    // The frame after it is delivered, byte-exact.
    let f = recv_one(&mut net, 2048)
        .unwrap()
        .expect("the frame after it");
    assert_eq!(f, vec![b'Z'; 100]);
    // The same record into buffers big enough for any frame.
    let helper = fake_helper(
        "oversize-big",
        "#!/bin/sh\ndd if=/dev/zero bs=70000 count=1 status=none >&3\ncat <&3 >/dev/null\n",
    );
    let name = format!("slirp-helper,helper={}", helper.display());
    let mut net2 = Netbe::open(&name, &mut r, |_, _| {}).unwrap();
    let e = recv_one(&mut net2, MAX_FRAME_LEN).unwrap_err();
    assert!(
        matches!(frame_error(&e), Some(Error::FrameDropped { .. })),
        "{e}"
    );
    // And when it is looked at first (peek_recvlen): dropped, not cut to a
    // frame of the buffer's length.
    let helper = fake_helper(
        "oversize-peek",
        "#!/bin/sh\ndd if=/dev/zero bs=70000 count=1 status=none >&3\ncat <&3 >/dev/null\n",
    );
    let name = format!("slirp-helper,helper={}", helper.display());
    let mut net3 = Netbe::open(&name, &mut r, |_, _| {}).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let e = loop {
        match net3.peek_recvlen() {
            Ok(0) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(n) => panic!("peek_recvlen said {n}"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(frame_error(&e), Some(Error::FrameDropped { .. })),
        "{e}"
    );
    net3.close(&mut r).unwrap();
    net.close(&mut r).unwrap();
    net2.close(&mut r).unwrap();
    assert!(r.is_empty());
}

#[test]
fn a_frame_too_long_for_the_buffers_is_kept_whole_for_bigger_ones() {
    let helper = fake_helper(
        "toolong",
        "#!/bin/sh\n\
         head -c 3000 /dev/zero | tr '\\0' Q | dd bs=3000 count=1 status=none >&3\n\
         head -c 3000 /dev/zero | tr '\\0' R | dd bs=3000 count=1 status=none >&3\n\
         cat <&3 >/dev/null\n",
    );
    let mut r: Reactor<Vm> = Reactor::new().unwrap();
    let name = format!("slirp-helper,helper={}", helper.display());
    let mut net = Netbe::open(&name, &mut r, |_, _| {}).unwrap();
    let e = recv_one(&mut net, 1000).unwrap_err();
    assert!(
        matches!(
            frame_error(&e),
            Some(Error::FrameTooBig {
                len: 3000,
                room: 1000
            })
        ),
        "{e}"
    );
    assert_eq!(net.peek_recvlen().unwrap(), 3000);
    let f = recv_one(&mut net, 4096).unwrap().unwrap();
    assert_eq!(f, vec![b'Q'; 3000]);
    // Behind the front end's 12-byte header, the error counts the header
    // as peek_recvlen does: 3,012 bytes do not fit in 1,000.
    net.set_cap(0, 12).unwrap();
    let e = recv_one(&mut net, 1000).unwrap_err();
    assert!(
        matches!(
            frame_error(&e),
            Some(Error::FrameTooBig {
                len: 3012,
                room: 1000
            })
        ),
        "{e}"
    );
    assert_eq!(net.peek_recvlen().unwrap(), 3012);
    let f = recv_one(&mut net, 4096).unwrap().unwrap();
    assert_eq!(&f[12..], &vec![b'R'; 3000][..]);
    net.close(&mut r).unwrap();
}

#[test]
fn a_frame_longer_than_the_helper_carries_is_refused_with_both_lengths() {
    let helper = fake_helper("mtu", "#!/bin/sh\ncat <&3 >/dev/null\n");
    let mut r: Reactor<Vm> = Reactor::new().unwrap();
    let name = format!("slirp-helper,helper={}", helper.display());
    let mut net = Netbe::open(&name, &mut r, |_, _| {}).unwrap();
    assert_eq!((net.mtu(), net.max_frame_len()), (1500, 1514));
    for len in [1515, 9000, 70_000] {
        let e = net.send(&[IoSlice::new(&vec![0u8; len])]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        assert!(
            matches!(frame_error(&e), Some(&Error::FrameTooLong { len: l, max: 1514 }) if l == len),
            "{len}: {e}"
        );
        assert!(e.to_string().contains(&format!("{len}-byte")), "{e}");
    }
    assert_eq!(net.send(&[IoSlice::new(&[0u8; 1514])]).unwrap(), 1514);
    net.close(&mut r).unwrap();
}

// ----- the helper after the VMM entered its sandbox ------------------------

mod common;

use caploop::sandbox::{Plan, Policy};
use common::child::{announce, child_ok, is_child, Child};

/// Whether process `pid` is gone for good (not running, not a zombie).
fn reaped(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A child of this test's process: a fake helper that never exits on
/// hang-up, opened, the sandbox entered, its pid announced.
fn sandboxed_with_helper(name: &str) -> (Reactor<Vm>, Netbe<Vm>, u32) {
    // Its stderr not kept: a helper left behind must not hold the test's.
    let helper = fake_helper(name, "#!/bin/sh\nexec sleep 1000 2>/dev/null\n");
    let mut r: Reactor<Vm> = Reactor::new().unwrap();
    let net = Netbe::open(
        &format!("slirp-helper,helper={}", helper.display()),
        &mut r,
        |_, _| {},
    )
    .expect("spawning the fake helper");
    let pid = net.helper_pid().expect("a helper pid");
    Plan::from_reactor(&r)
        .apply_and_enter(&Policy::restricted())
        .expect("entering the sandbox");
    announce(&format!("PID {pid}"));
    (r, net, pid)
}

#[test]
fn a_helper_killed_after_entry_is_reaped_and_reported_with_its_signal() {
    const NAME: &str = "a_helper_killed_after_entry_is_reaped_and_reported_with_its_signal";
    if is_child(NAME) {
        let (mut r, mut net, _pid) = sandboxed_with_helper("killed");
        let e = recv_one(&mut net, 2048).expect_err("the helper's death");
        announce(&format!("ERROR {e}"));
        net.close(&mut r).unwrap();
        announce("CLOSED");
        child_ok();
    }
    let mut child = Child::spawn(NAME, &[]);
    let pid: u32 = child
        .wait_line("PID ", Duration::from_secs(10))
        .parse()
        .unwrap();
    // SAFETY: kill with integer arguments, of the helper the child spawned.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let err = child.wait_line("ERROR ", Duration::from_secs(10));
    child.wait_line("CLOSED", Duration::from_secs(10));
    child.finish();
    assert!(
        err.contains(&format!("(pid {pid}) exited (signal: 9 (SIGKILL))")),
        "{err}"
    );
    assert!(reaped(pid), "the helper {pid} was left a zombie");
}

#[test]
fn closing_a_helper_that_ignores_the_hangup_kills_and_reaps_it_within_a_bound() {
    const NAME: &str = "closing_a_helper_that_ignores_the_hangup_kills_and_reaps_it_within_a_bound";
    if is_child(NAME) {
        let (mut r, net, _pid) = sandboxed_with_helper("stubborn");
        let start = Instant::now();
        net.close(&mut r).unwrap();
        announce(&format!("CLOSED {}", start.elapsed().as_millis()));
        assert!(r.is_empty(), "registrations left behind");
        child_ok();
    }
    let mut child = Child::spawn(NAME, &[]);
    let pid: u32 = child
        .wait_line("PID ", Duration::from_secs(10))
        .parse()
        .unwrap();
    let ms: u128 = child
        .wait_line("CLOSED ", Duration::from_secs(10))
        .parse()
        .unwrap();
    child.finish();
    assert!(ms < 5000, "close took {ms} ms");
    assert!(reaped(pid), "the helper {pid} is still there");
}

#[test]
fn a_helper_that_does_not_acknowledge_is_served_as_it_is_its_first_frame_kept() {
    // bhyve's own helper never sends the acknowledgement: a frame first.
    let helper = fake_helper_raw(
        "noack",
        "#!/bin/sh\n\
         head -c 60 /dev/zero | tr '\\0' F | dd bs=60 count=1 status=none >&3\n\
         cat <&3 >/dev/null\n",
    );
    let mut r: Reactor<Vm> = Reactor::new().unwrap();
    let start = Instant::now();
    let name = format!("slirp-helper,helper={}", helper.display());
    let mut net = Netbe::open(&name, &mut r, |_, _| {}).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(recv_one(&mut net, 2048).unwrap().unwrap(), vec![b'F'; 60]);
    net.close(&mut r).unwrap();
}
