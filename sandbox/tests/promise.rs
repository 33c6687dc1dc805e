//! The sandbox promise, tried against the built helper on every front end
//! as an attacker in the guest (or a crashing libslirp) would: a crash ends
//! the helper at once with its signal; the one frame that crashes libslirp
//! 4.7.0 does nothing and a stream then flows byte-exact; stdio descriptors
//! are not links; slirp4netns mode gives up its capabilities; a missing
//! Landlock and a fatal error are said on stderr without `RUST_LOG`.

#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use caploop::wire::nvlist::{Endian, NvList, Value};
use common::fragments::crash_frames;
use common::guest::Scratch;
use common::helper::{free_port, status_field, stderr_of, wait_exit, wait_for_path, Reaper, BIN};
use common::link_guest::{Framing, LinkGuest};
use common::s4nn::{helper as s4nn_helper, start, stream_mib, Netns};
use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

const FAULT_ENV: &str = "CAPLOOP_SANDBOX_TEST_FAULT";

/// A fresh name in `dir` (helpers of one test must not share socket paths:
/// a dead helper's file would be taken for the next one's).
fn fresh(dir: &Path, stem: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("{stem}-{n}.sock"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// bhyve's configuration record with a forward from 127.0.0.1:`port` to
/// the guest's port 22.
fn bhyve_config(port: u16) -> Vec<u8> {
    let mut l = NvList::new();
    for (k, v) in [
        ("hostfwd", format!("tcp:127.0.0.1:{port}-:22")),
        ("vmname", "promise".to_string()),
    ] {
        l.push(k, Value::String(v));
    }
    l.pack(Endian::Little).unwrap()
}

/// Starts `-S 3` with `envs`, the other end of the socketpair kept here.
fn spawn_bhyve(envs: &[(&str, &str)]) -> (Reaper, OwnedFd) {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let child_end = theirs.as_raw_fd();
    let mut cmd = Command::new(BIN);
    cmd.args(["-S", "3"])
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: dup2 is async-signal-safe; it moves our socket end to fd 3
    // (clearing CLOEXEC) in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(child_end, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn");
    drop(theirs);
    (Reaper(child), ours)
}

/// Starts `--qemu-stream PATH` and connects to it like QEMU.
fn spawn_stream(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> (Reaper, UnixStream) {
    let path = fresh(dir, "q");
    let child = Command::new(BIN)
        .arg("--qemu-stream")
        .arg(&path)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let helper = Reaper(child);
    assert!(wait_for_path(&path, Duration::from_secs(10)), "no socket");
    // The file appears at bind(), a moment before listen().
    let deadline = Instant::now() + Duration::from_secs(5);
    let conn = loop {
        match UnixStream::connect(&path) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("connect like QEMU: {e}"),
        }
    };
    (helper, conn)
}

/// Starts `--qemu-dgram PATH` and a datagram socket of QEMU's, bound and
/// connected; the helper serves it once it sent its first frame.
fn spawn_dgram(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> (Reaper, UnixDatagram) {
    let path = fresh(dir, "d");
    let ours = fresh(dir, "qemu");
    let child = Command::new(BIN)
        .arg("--qemu-dgram")
        .arg(&path)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let helper = Reaper(child);
    assert!(wait_for_path(&path, Duration::from_secs(10)), "no socket");
    let sock = UnixDatagram::bind(&ours).unwrap();
    sock.connect(&path).unwrap();
    (helper, sock)
}

/// Fails the test if the helper is no longer running.
fn alive(h: &mut Reaper, what: &str) {
    if let Some(st) = h.0.try_wait().unwrap() {
        panic!("{what}: the helper ended ({st:?}): {}", stderr_of(&mut h.0));
    }
}

fn ended_by(status: Option<ExitStatus>, signal: i32, what: &str, helper: &mut Child) {
    let status = status.unwrap_or_else(|| {
        panic!(
            "{what}: still running after the fault (killed): {}",
            stderr_of(helper)
        )
    });
    assert_eq!(
        status.signal(),
        Some(signal),
        "{what}: ended with {status:?}: {}",
        stderr_of(helper)
    );
}

// ----- 1. a crash ends the helper ------------------------------------------

#[test]
fn a_fault_after_entry_ends_the_helper_with_its_signal_on_every_front_end() {
    let scratch = Scratch::new("fault");
    for (fault, signal) in [
        ("segv", libc::SIGSEGV),
        ("bus", libc::SIGBUS),
        ("abort", libc::SIGABRT),
    ] {
        let env = [(FAULT_ENV, fault)];

        let (mut h, sock) = spawn_bhyve(&env);
        nix::sys::socket::send(
            sock.as_raw_fd(),
            &bhyve_config(free_port()),
            MsgFlags::MSG_EOR,
        )
        .unwrap();
        let st = wait_exit(&mut h.0, Duration::from_secs(5));
        ended_by(st, signal, &format!("bhyve {fault}"), &mut h.0);

        let (mut h, _conn) = spawn_stream(&scratch.0, &[], &env);
        let st = wait_exit(&mut h.0, Duration::from_secs(5));
        ended_by(st, signal, &format!("qemu-stream {fault}"), &mut h.0);

        let (mut h, sock) = spawn_dgram(&scratch.0, &[], &env);
        sock.send(&common::frames::dhcp_discover(1)).unwrap();
        let st = wait_exit(&mut h.0, Duration::from_secs(5));
        ended_by(st, signal, &format!("qemu-dgram {fault}"), &mut h.0);

        // vhost-user handles SIGBUS in guest memory only: a fault
        // anywhere else still kills.
        let path = fresh(&scratch.0, "vu");
        let child = Command::new(BIN)
            .arg("--vhost-user")
            .arg(&path)
            .env(FAULT_ENV, fault)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut h = Reaper(child);
        assert!(wait_for_path(&path, Duration::from_secs(10)), "no socket");
        let _vmm = UnixStream::connect(&path).expect("connect like a VMM");
        let st = wait_exit(&mut h.0, Duration::from_secs(5));
        ended_by(st, signal, &format!("vhost-user {fault}"), &mut h.0);

        if is_root() {
            // slirp4netns: the fault follows "ready" at once.
            let ns = Netns::new();
            let mut cmd = Command::new(BIN);
            cmd.args(["-c", "-r", "5", "--netns-type=path", &ns.path(), "tap0"])
                .env(FAULT_ENV, fault);
            let mut s = start(cmd, Some(5), None);
            s.ready();
            let readied = Instant::now();
            let st = wait_exit(&mut s.helper.0, Duration::from_secs(1));
            ended_by(st, signal, &format!("slirp4netns {fault}"), &mut s.helper.0);
            assert!(readied.elapsed() < Duration::from_secs(1));
        }
    }
}

// ----- 2. the frame that crashes libslirp ----------------------------------

/// DHCP, the crash frames, then a 1 MiB echo through a host forward; the
/// guest is handed back (dropping it hangs up the link).
fn crash_frames_then_stream(mut g: LinkGuest, hostfwd: u16, what: &str) -> LinkGuest {
    g.dhcp();
    for f in crash_frames() {
        g.send_raw(&f);
        g.step(Duration::from_millis(1));
    }
    assert!(
        g.echo_through_hostfwd(22, hostfwd, 1 << 20),
        "{what}: the stream after the crash frames was not byte-exact"
    );
    g
}

#[test]
fn the_frame_that_crashes_libslirp_does_nothing_on_every_front_end() {
    let scratch = Scratch::new("frag");

    let port = free_port();
    let (mut h, sock) = spawn_bhyve(&[]);
    nix::sys::socket::send(sock.as_raw_fd(), &bhyve_config(port), MsgFlags::MSG_EOR).unwrap();
    let g = crash_frames_then_stream(LinkGuest::new(sock, Framing::Record, 1500), port, "bhyve");
    alive(&mut h, "bhyve");
    drop(g);

    let port = free_port();
    let fwd = format!("tcp:127.0.0.1:{port}-:22");
    let (mut h, conn) = spawn_stream(&scratch.0, &["--hostfwd", &fwd], &[]);
    let g = LinkGuest::new(OwnedFd::from(conn), Framing::Stream, 1500);
    let g = crash_frames_then_stream(g, port, "qemu-stream");
    alive(&mut h, "qemu-stream");
    drop(g);

    let port = free_port();
    let fwd = format!("tcp:127.0.0.1:{port}-:22");
    let (mut h, sock) = spawn_dgram(&scratch.0, &["--hostfwd", &fwd], &[]);
    let g = LinkGuest::new(OwnedFd::from(sock), Framing::Record, 1500);
    let g = crash_frames_then_stream(g, port, "qemu-dgram");
    alive(&mut h, "qemu-dgram");
    drop(g);

    if is_root() {
        // From inside the namespace, on tap0's wire (AF_PACKET), as a
        // container could.
        let ns = Netns::new();
        let mut s = s4nn_helper(&ns, &["-c"]);
        send_in_netns(&ns, "tap0", &crash_frames());
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            s.helper.0.try_wait().unwrap().is_none(),
            "slirp4netns mode died"
        );
        stream_mib(&ns, "10.0.2.2", TcpListener::bind("127.0.0.1:0").unwrap());
        let _ = s.helper.0.kill();
    }
}

/// Sends `frames` as they are on interface `ifname` inside `ns`, from an
/// AF_PACKET socket made by a thread that joined the namespace.
fn send_in_netns(ns: &Netns, ifname: &str, frames: &[Vec<u8>]) {
    let path = ns.path();
    let ifname = std::ffi::CString::new(ifname).unwrap();
    let frames = frames.to_vec();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        // SAFETY: plain socket calls on descriptors this thread owns; the
        // sockaddr_ll and frames live for each call.
        unsafe {
            let s = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(s >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = libc::if_nametoindex(ifname.as_ptr()) as i32;
            assert!(addr.sll_ifindex > 0);
            addr.sll_halen = 6;
            for f in &frames {
                let n = libc::sendto(
                    s,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(n, f.len() as isize, "{}", std::io::Error::last_os_error());
            }
            libc::close(s);
        }
    })
    .join()
    .unwrap();
}

// ----- 3. standard descriptors are not links -------------------------------

#[test]
fn standard_descriptors_are_refused_as_links() {
    for fd in ["0", "1", "2"] {
        let out = Command::new(BIN)
            .args(["-S", fd])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "-S {fd}: {err}");
        assert!(err.contains(&format!("-S {fd}:")), "{err}");
        assert!(err.contains("above 2"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

// ----- 4. slirp4netns mode gives up its capabilities -----------------------

#[test]
fn slirp4netns_mode_keeps_no_capability_but_bind_for_the_api() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let scratch = Scratch::new("caps");
    let api = scratch.0.join("api.sock");
    for (args, want) in [
        (vec![], "0000000000000000"),
        (
            vec!["--api-socket", api.to_str().unwrap()],
            "0000000000000400",
        ),
    ] {
        let ns = Netns::new();
        let mut args: Vec<&str> = args;
        args.push("-c");
        let s = s4nn_helper(&ns, &args);
        let pid = s.pid();
        assert_eq!(
            status_field(pid, "CapEff").as_deref(),
            Some(want),
            "{args:?}"
        );
        assert_eq!(
            status_field(pid, "CapPrm").as_deref(),
            Some(want),
            "{args:?}"
        );
        assert_eq!(
            status_field(pid, "CapInh").as_deref(),
            Some("0000000000000000")
        );
        assert_eq!(
            status_field(pid, "CapAmb").as_deref(),
            Some("0000000000000000")
        );
        assert_eq!(
            status_field(pid, "CapBnd").as_deref(),
            Some(want),
            "{args:?}"
        );
        drop(s);
    }
}

// ----- 5. said on stderr without RUST_LOG ----------------------------------

/// Makes the Landlock syscalls fail with ENOSYS in the spawned helper, as
/// on a kernel without Landlock.
fn without_landlock(cmd: &mut Command) {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let rules = [
        libc::SYS_landlock_create_ruleset,
        libc::SYS_landlock_add_rule,
        libc::SYS_landlock_restrict_self,
    ]
    .into_iter()
    .map(|n| (n, vec![]))
    .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .unwrap();
    let program: BpfProgram = filter.try_into().unwrap();
    // SAFETY: seccompiler::apply_filter makes prctl and seccomp calls on a
    // program built before the fork; nothing is allocated in the child.
    unsafe {
        cmd.pre_exec(move || seccompiler::apply_filter(&program).map_err(std::io::Error::other));
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn a_missing_landlock_is_one_warning_line_on_every_front_end() {
    let scratch = Scratch::new("noll");
    let path = scratch.0.join("q.sock");
    let mut cmd = Command::new(BIN);
    cmd.arg("--qemu-stream")
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    without_landlock(&mut cmd);
    let mut h = Reaper(cmd.spawn().unwrap());
    assert!(wait_for_path(&path, Duration::from_secs(10)));
    let conn = UnixStream::connect(&path).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(h.0.try_wait().unwrap().is_none(), "the helper runs on");
    assert_eq!(status_field(h.0.id(), "Seccomp").as_deref(), Some("2"));
    drop(conn);
    wait_exit(&mut h.0, Duration::from_secs(5)).expect("exit on hangup");
    let err = stderr_of(&mut h.0);
    let warned: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("Landlock is not available"))
        .collect();
    assert_eq!(warned.len(), 1, "{err}");
    assert!(warned[0].starts_with("caploop-sandbox: warning: "), "{err}");

    if is_root() {
        let ns = Netns::new();
        let mut cmd = Command::new(BIN);
        cmd.args(["-c", "-r", "5", "--netns-type=path", &ns.path(), "tap0"])
            .env_remove("RUST_LOG");
        without_landlock(&mut cmd);
        let mut s = start(cmd, Some(5), None);
        s.ready();
        let _ = s.helper.0.kill();
        let _ = s.helper.0.wait();
        let err = stderr_of(&mut s.helper.0);
        assert_eq!(
            err.lines()
                .filter(|l| l.contains("Landlock is not available"))
                .count(),
            1,
            "slirp4netns: {err}"
        );
    }
}

#[test]
fn a_fatal_error_after_start_up_reaches_stderr_without_rust_log() {
    let scratch = Scratch::new("fatal");
    let (mut h, mut conn) = spawn_stream(&scratch.0, &[], &[]);
    // An oversize length after the sandbox is entered.
    std::thread::sleep(Duration::from_millis(200));
    conn.write_all(&0x00ff_ffffu32.to_be_bytes()).unwrap();
    let st = wait_exit(&mut h.0, Duration::from_secs(10)).expect("exits");
    assert_eq!(st.code(), Some(1));
    let err = stderr_of(&mut h.0);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("caploop-sandbox: ") && last.contains("16777215"),
        "{err}"
    );
}

// ----- 6. socket files are private -----------------------------------------

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn socket_files_are_0600_whatever_the_umask() {
    let scratch = Scratch::new("umask");
    let with_umask_000 = |cmd: &mut Command| {
        // SAFETY: umask is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
    };
    let path = scratch.0.join("s.sock");
    let mut cmd = Command::new(BIN);
    cmd.arg("--qemu-stream").arg(&path).stderr(Stdio::null());
    with_umask_000(&mut cmd);
    let _h = Reaper(cmd.spawn().unwrap());
    assert!(wait_for_path(&path, Duration::from_secs(10)));
    assert_eq!(mode(&path), 0o600, "--qemu-stream");

    let path = scratch.0.join("d.sock");
    let mut cmd = Command::new(BIN);
    cmd.arg("--qemu-dgram").arg(&path).stderr(Stdio::null());
    with_umask_000(&mut cmd);
    let _h = Reaper(cmd.spawn().unwrap());
    assert!(wait_for_path(&path, Duration::from_secs(10)));
    assert_eq!(mode(&path), 0o600, "--qemu-dgram");

    if is_root() {
        let ns = Netns::new();
        let api: PathBuf = scratch.0.join("api.sock");
        let mut cmd = Command::new(BIN);
        cmd.args(["-c", "--api-socket", api.to_str().unwrap()])
            .args(["-r", "5", "--netns-type=path", &ns.path(), "tap0"]);
        with_umask_000(&mut cmd);
        let mut s = start(cmd, Some(5), None);
        s.ready();
        assert_eq!(mode(&api), 0o600, "--api-socket");
        let mut c = UnixStream::connect(&api).unwrap();
        c.write_all(b"{\"execute\":\"list_hostfwd\"}\n").unwrap();
        let mut r = String::new();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.read_to_string(&mut r);
        assert_eq!(r, "{\"entries\":[]}");
    }
}

// ----- urgent data from the namespace --------------------------------------

/// The kernel in the namespace sends urgent data (`MSG_OOB`) in the middle
/// of a stream, over IPv4 and IPv6, with the tap's offloads on: the host
/// reads every byte in order as ordinary data, the urgent one included,
/// and nothing the namespace did not send.
#[test]
fn urgent_data_from_the_namespace_reaches_the_host_as_ordinary_bytes() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    // Through libslirp (urgent data cleared in front of it) and through
    // the own TCP path (smoltcp never reads the urgent pointer).
    for tcp in ["--tcp=slirp", "--tcp=own"] {
        urgent_data_reaches_the_host_as_ordinary_bytes(tcp);
    }
}

fn urgent_data_reaches_the_host_as_ordinary_bytes(tcp: &str) {
    let ns = Netns::new();
    common::s4nn::no_dad(&ns);
    let mut s = s4nn_helper(&ns, &["-c", "--enable-ipv6", tcp]);
    common::s4nn::wait_slaac(&ns);
    for (via, bind) in [("10.0.2.2", "127.0.0.1:0"), ("fd00::2", "[::1]:0")] {
        let listener = TcpListener::bind(bind).unwrap();
        let port = listener.local_addr().unwrap().port();
        let host = common::s4nn::host_sink(listener, Vec::new());
        // 200 KB, one urgent byte, 200 KB; the urgent pointer of the
        // segments before it points up to 64 KiB ahead.
        let out = ns.py(&format!(
            "import socket,hashlib,time\n\
             a=bytes(i*7%251 for i in range(200000))\n\
             b=bytes(i*13%241 for i in range(200000))\n\
             s=socket.create_connection(('{via}',{port}),timeout=10)\n\
             s.sendall(a)\n\
             s.send(b'!',socket.MSG_OOB)\n\
             s.sendall(b)\n\
             s.shutdown(socket.SHUT_WR)\n\
             s.recv(1)\n\
             print(hashlib.sha256(a+b'!'+b).hexdigest())\n"
        ));
        let got = host.join().unwrap().expect("the host read the stream");
        assert_eq!(
            got.len(),
            400_001,
            "{via} {tcp}: the host read {} bytes",
            got.len()
        );
        assert_eq!(
            common::s4nn::sha256_hex(&got),
            out.trim(),
            "{via} {tcp}: the bytes differ"
        );
    }
    alive(&mut s.helper, "after urgent data");
    let _ = s.helper.0.kill();
}

// ----- SIGTERM in every state ----------------------------------------------

/// Waits until `pid` has entered its seccomp filter.
fn entered(pid: u32) -> bool {
    common::helper::wait_until(Duration::from_secs(10), || {
        status_field(pid, "Seccomp").as_deref() == Some("2")
    })
}

fn sigterm(h: &Reaper) {
    // SAFETY: kill of our own child.
    unsafe { libc::kill(h.0.id() as i32, libc::SIGTERM) };
}

/// SIGTERM ends the helper within a second, with exit 0.
fn sigterm_ends(h: &mut Reaper, what: &str) {
    sigterm(h);
    let status = wait_exit(&mut h.0, Duration::from_secs(1));
    let Some(status) = status else {
        panic!("{what}: SIGTERM did not end the helper within a second");
    };
    assert_eq!(
        status.code(),
        Some(0),
        "{what}: {status:?}: {}",
        stderr_of(&mut h.0)
    );
}

/// Sends `frame` on `send` until the peer stops taking them (its buffers
/// and the helper's are full because nothing reads the helper's
/// answers), or `max` were sent.
fn flood(send: &mut dyn FnMut() -> bool, max: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut n, mut stuck) = (0, 0);
    while n < max && Instant::now() < deadline {
        if send() {
            n += 1;
            stuck = 0;
        } else {
            stuck += 1;
            if stuck > 200 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    n
}

#[test]
fn sigterm_ends_a_helper_whose_qemu_or_bhyve_peer_stops_reading() {
    let scratch = Scratch::new("stopread");
    let arp = common::frames::arp_request([10, 0, 2, 2]);

    let (mut h, conn) = spawn_stream(&scratch.0, &[], &[]);
    conn.set_nonblocking(true).unwrap();
    let mut rec = (arp.len() as u32).to_be_bytes().to_vec();
    rec.extend_from_slice(&arp);
    let mut at = 0;
    let n = flood(
        &mut || {
            // A record cut by a full socket is finished before the next.
            if let Ok(k) = (&conn).write(&rec[at..]) {
                at += k;
            }
            let whole = at == rec.len();
            if whole {
                at = 0;
            }
            whole
        },
        200_000,
    );
    alive(&mut h, "qemu-stream");
    sigterm_ends(&mut h, &format!("qemu-stream, {n} ARP requests unanswered"));

    let (mut h, sock) = spawn_bhyve(&[]);
    nix::sys::socket::send(
        sock.as_raw_fd(),
        &bhyve_config(free_port()),
        MsgFlags::MSG_EOR,
    )
    .unwrap();
    let n = flood(
        &mut || {
            nix::sys::socket::send(
                sock.as_raw_fd(),
                &arp,
                MsgFlags::MSG_EOR | MsgFlags::MSG_DONTWAIT,
            )
            .is_ok()
        },
        200_000,
    );
    alive(&mut h, "bhyve");
    sigterm_ends(&mut h, &format!("bhyve, {n} ARP requests unanswered"));
}

#[test]
fn sigterm_ends_a_helper_whose_ready_fd_nobody_reads_and_the_1_comes_once_read() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let args = |ns: &Netns| {
        let mut cmd = Command::new(BIN);
        cmd.args(["-c", "-r", "5", "--netns-type=path", &ns.path(), "tap0"]);
        cmd
    };
    // Nobody reads: SIGTERM still ends it.
    let ns = Netns::new();
    let mut s = common::s4nn::start_with(args(&ns), Some(5), None, true);
    assert!(entered(s.pid()), "the helper did not enter its sandbox");
    std::thread::sleep(Duration::from_millis(200));
    alive(&mut s.helper, "a full ready fd");
    sigterm_ends(&mut s.helper, "a full ready fd");

    // The reader reads at last: "1" follows what filled the pipe.
    let ns = Netns::new();
    let mut s = common::s4nn::start_with(args(&ns), Some(5), None, true);
    assert!(entered(s.pid()), "the helper did not enter its sandbox");
    std::thread::sleep(Duration::from_millis(200));
    let got = s.read_ready(Duration::from_secs(10));
    assert_eq!(
        got.last(),
        Some(&b'1'),
        "the ready fd gave {} bytes",
        got.len()
    );
    assert!(got[..got.len() - 1].iter().all(|&b| b == 0));
    alive(&mut s.helper, "after the ready fd was read");
    sigterm_ends(&mut s.helper, "serving");
}

#[test]
fn a_second_sigterm_ends_a_helper_stuck_where_the_first_cannot_reach_the_loop() {
    let scratch = Scratch::new("hang");
    let env = [(FAULT_ENV, "hang")];
    let (h1, _sock) = spawn_bhyve(&env);
    nix::sys::socket::send(
        _sock.as_raw_fd(),
        &bhyve_config(free_port()),
        MsgFlags::MSG_EOR,
    )
    .unwrap();
    let (h2, _conn) = spawn_stream(&scratch.0, &[], &env);
    for (mut h, what) in [(h1, "bhyve"), (h2, "qemu-stream")] {
        assert!(entered(h.0.id()), "{what}: no sandbox");
        std::thread::sleep(Duration::from_millis(100));
        sigterm(&h);
        std::thread::sleep(Duration::from_millis(500));
        alive(&mut h, &format!("{what}: stuck, after one SIGTERM"));
        sigterm(&h);
        let status = wait_exit(&mut h.0, Duration::from_secs(1));
        ended_by(status, libc::SIGTERM, what, &mut h.0);
    }
}
