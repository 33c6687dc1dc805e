//! The sandbox on Linux, each test in a child process.
//!
//! Entering the sandbox cannot be undone, so every test re-executes this
//! test binary for itself alone (`--exact NAME`) with `CAPLOOP_SANDBOX_CHILD`
//! set; the child runs the sandboxed body, prints `CHILD OK` and exits, and
//! the parent checks its exit code and output.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

mod common;

use caploop::sandbox::{self, Enforcement, Mode, Plan, Policy, SeccompMode};
use caploop::{Interest, Reactor, Rights};

const CHILD_ENV: &str = "CAPLOOP_SANDBOX_CHILD";

fn is_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(name)
}

fn run_child(name: &str, env: &[(&str, String)]) -> String {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("spawning the child");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("CHILD OK"),
        "child {name} failed ({:?})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

/// Ends the child: everything checked.
fn child_ok() -> ! {
    let mut out = std::io::stdout();
    let _ = out.write_all(b"CHILD OK\n");
    let _ = out.flush();
    std::process::exit(0)
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn assert_refused(what: &str, r: std::io::Result<impl std::fmt::Debug>, allowed: &[i32]) {
    match r {
        Ok(v) => panic!("{what} succeeded inside the sandbox: {v:?}"),
        Err(e) => assert!(
            allowed.contains(&errno(&e)),
            "{what}: unexpected error {e} (want one of {allowed:?})"
        ),
    }
}

fn env_port(key: &str) -> u16 {
    std::env::var(key).expect(key).parse().expect("port")
}

fn enter(plan: Plan, policy: &Policy) -> sandbox::Report {
    plan.apply_and_enter(policy).expect("entering the sandbox")
}

fn try_exec() -> nix::Result<std::convert::Infallible> {
    let prog = c"/bin/true";
    nix::unistd::execv(prog, &[prog])
}

#[test]
fn restricted_refuses_files_exec_and_network() {
    if is_child("restricted_refuses_files_exec_and_network") {
        let port = env_port("PORT");
        let report = enter(Plan::new(), &Policy::restricted());
        assert_eq!(report.mode, Mode::Restricted);
        assert!(report.no_new_privs);
        let perm = [libc::EACCES, libc::EPERM];
        assert_refused("open(/etc/passwd)", File::open("/etc/passwd"), &perm);
        assert_refused(
            "create(/tmp/x)",
            File::create("/tmp/caploop-sandbox-test"),
            &perm,
        );
        let e = try_exec().expect_err("execve succeeded");
        assert!(perm.contains(&(e as i32)), "execve: {e}");
        assert_refused(
            "connect(127.0.0.1)",
            TcpStream::connect(("127.0.0.1", port)),
            &perm,
        );
        assert_refused("bind tcp", TcpListener::bind("127.0.0.1:0"), &perm);
        assert_refused("bind udp", UdpSocket::bind("127.0.0.1:0"), &perm);
        assert_refused("socketpair", UnixStream::pair(), &perm);
        child_ok();
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    run_child(
        "restricted_refuses_files_exec_and_network",
        &[("PORT", port.to_string())],
    );
    // Nothing reached the parent's listener.
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err());
}

#[test]
fn landlock_alone_refuses_files_and_tcp() {
    // Audit mode: seccomp logs instead of refusing, so what is refused here
    // is refused by Landlock (EACCES).
    if is_child("landlock_alone_refuses_files_and_tcp") {
        let port = env_port("PORT");
        let policy = Policy {
            audit: true,
            ..Policy::restricted()
        };
        let report = enter(Plan::new(), &policy);
        let ll = report.landlock.expect("landlock report");
        println!("landlock abi {} {:?}", ll.abi, ll.enforcement);
        if ll.abi == 0 {
            println!("no Landlock on this kernel: skipped");
            child_ok();
        }
        assert_refused("open", File::open("/etc/passwd"), &[libc::EACCES]);
        if ll.abi >= 4 {
            assert_refused(
                "connect",
                TcpStream::connect(("127.0.0.1", port)),
                &[libc::EACCES],
            );
            assert_refused("bind", TcpListener::bind("127.0.0.1:0"), &[libc::EACCES]);
        }
        child_ok();
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    run_child(
        "landlock_alone_refuses_files_and_tcp",
        &[("PORT", port.to_string())],
    );
}

#[test]
fn read_limited_fd_refuses_write_and_send() {
    if is_child("read_limited_fd_refuses_write_and_send") {
        let (a, b) = UnixStream::pair().unwrap();
        let mut plan = Plan::new();
        plan.add(&a, Rights::READ_ONLY, "read-only end")
            .add(&b, Rights::SOCKET, "peer");
        enter(plan, &Policy::restricted());

        let mut a_ref = &a; // std's write on a UnixStream is write(2)
        let mut b_ref = &b;
        assert_refused("write(read-only)", a_ref.write(b"x"), &[libc::EPERM]);
        let r = nix::sys::socket::send(a.as_raw_fd(), b"x", nix::sys::socket::MsgFlags::empty());
        assert_eq!(r, Err(nix::errno::Errno::EPERM), "send on read-only");
        let r = nix::sys::uio::writev(a.as_fd(), &[std::io::IoSlice::new(b"x")]);
        assert_eq!(r, Err(nix::errno::Errno::EPERM), "writev on read-only");

        // The peer may write, and the read-only end may read(2) (std's
        // UnixStream::read is recv(2), which needs RECV).
        b_ref.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        assert_eq!(nix::unistd::read(a.as_fd(), &mut buf), Ok(5));
        assert_eq!(&buf, b"hello");
        // recv needs RECV, which READ_ONLY lacks.
        b_ref.write_all(b"again").unwrap();
        let r =
            nix::sys::socket::recv(a.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::empty());
        assert_eq!(r, Err(nix::errno::Errno::EPERM), "recv on read-only");
        // Unplanned descriptors (stdout) keep working.
        println!("stdout still writable");
        child_ok();
    }
    run_child("read_limited_fd_refuses_write_and_send", &[]);
}

#[test]
fn an_ephemeral_descriptor_number_can_be_reused_after_entry() {
    // A planned descriptor closed after entry gives its number to the next
    // one. Rules tied to the number would then refuse the newcomer (libslirp
    // aborts when fcntl(F_GETFL) on a fresh socket fails), so EPHEMERAL
    // descriptors get none.
    if is_child("an_ephemeral_descriptor_number_can_be_reused_after_entry") {
        let (a, _b) = UnixStream::pair().unwrap();
        let number = a.as_raw_fd();
        let mut plan = Plan::new();
        plan.add(&a, Rights::READ_ONLY | Rights::EPHEMERAL, "ephemeral");
        enter(plan, &Policy::open());
        let mut a_ref = &a;
        // Still limited by the allowlist, not by number: write is allowed.
        assert!(a_ref.write(b"x").is_ok());
        drop(a);
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
        let s = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::empty(),
            None,
        )
        .expect("socket in open mode");
        assert_eq!(s.as_raw_fd(), number, "the number came back");
        // SAFETY: fcntl(F_GETFL) on an open descriptor.
        let fl = unsafe { libc::fcntl(number, libc::F_GETFL) };
        assert!(
            fl >= 0,
            "F_GETFL on the reused number: {}",
            std::io::Error::last_os_error()
        );
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 9u16.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sendto reads 2 bytes and a sockaddr_in that live for the call.
        let n = unsafe {
            libc::sendto(
                number,
                b"ok".as_ptr().cast(),
                2,
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(
            n,
            2,
            "sendto on the reused number: {}",
            std::io::Error::last_os_error()
        );
        child_ok();
    }
    run_child(
        "an_ephemeral_descriptor_number_can_be_reused_after_entry",
        &[],
    );
}

#[derive(Default)]
struct Seen {
    fd: bool,
    timer: bool,
    signal: bool,
}

#[test]
fn reactor_dispatches_after_entry() {
    if is_child("reactor_dispatches_after_entry") {
        let mut reactor: Reactor<Seen> = Reactor::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        reactor
            .add(
                OwnedFd::from(a),
                Interest::READ,
                Rights::SOCKET,
                |r, seen, ev| {
                    let mut buf = [0u8; 16];
                    // SAFETY: the reactor owns the fd and keeps it open while the
                    // callback runs.
                    let n = unsafe { libc::read(ev.fd, buf.as_mut_ptr().cast(), buf.len()) };
                    assert_eq!(n, 4, "read in callback");
                    seen.fd = true;
                    if seen.timer && seen.signal {
                        r.stop();
                    }
                },
            )
            .unwrap();
        reactor.add_timer(Duration::from_millis(20), |r, seen: &mut Seen, _| {
            seen.timer = true;
            if seen.fd && seen.signal {
                r.stop();
            }
        });
        reactor
            .add_signal(libc::SIGUSR1, |r, seen: &mut Seen, signo| {
                assert_eq!(signo, libc::SIGUSR1);
                seen.signal = true;
                if seen.fd && seen.timer {
                    r.stop();
                }
            })
            .unwrap();
        reactor.add_timer(Duration::from_secs(10), |_, _, _| {
            panic!("timed out waiting for fd, timer and signal")
        });
        let mut plan = Plan::from_reactor(&reactor);
        plan.add(&b, Rights::SOCKET, "peer");

        // A helper started before entry (sandboxed too, since seccomp
        // covers every thread) writes after entry; the signal comes from
        // outside, from the test's parent, once the child says it entered.
        let helper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            (&b).write_all(b"ping").unwrap();
            b
        });

        enter(plan, &Policy::restricted());
        // SAFETY: gettid has no memory effects.
        let tid = unsafe { libc::gettid() };
        common::child::announce(&format!("entered {tid}"));
        let mut seen = Seen::default();
        reactor.run(&mut seen).unwrap();
        assert!(seen.fd && seen.timer && seen.signal);
        // Timers keep working: a second round.
        reactor.add_timer(Duration::from_millis(5), |r, _, _| r.stop());
        reactor.run(&mut seen).unwrap();
        let b = helper.join().unwrap();
        drop(b);
        drop(reactor);
        child_ok();
    }
    let mut child = common::child::Child::spawn("reactor_dispatches_after_entry", &[]);
    let tid: i32 = child
        .wait_line("entered ", Duration::from_secs(10))
        .trim()
        .parse()
        .unwrap();
    let pid = child.pid() as i32;
    // SAFETY: tgkill with integer arguments, to the loop thread of the
    // test's own child (the one thread that blocks SIGUSR1).
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1) };
    assert_eq!(rc, 0);
    child.finish();
}

#[test]
fn status_shows_seccomp_and_no_new_privs() {
    if is_child("status_shows_seccomp_and_no_new_privs") {
        let before = sandbox::status();
        assert_eq!(before.entered, None);
        assert_eq!(before.seccomp, Some(SeccompMode::Disabled));
        assert!(!before.is_sandboxed());
        // Opened before entry: opening is refused afterwards.
        let mut status = File::open("/proc/thread-self/status").unwrap();

        let report = enter(Plan::new(), &Policy::restricted());
        assert!(report.seccomp.as_ref().unwrap().instructions > 0);

        let mut text = String::new();
        status.read_to_string(&mut text).unwrap();
        assert!(text.contains("Seccomp:\t2"), "{text}");
        assert!(text.contains("NoNewPrivs:\t1"), "{text}");
        assert_refused(
            "open /proc",
            File::open("/proc/thread-self/status"),
            &[libc::EACCES, libc::EPERM],
        );

        let st = sandbox::status();
        assert_eq!(st.entered, Some(Mode::Restricted));
        assert_eq!(st.seccomp, Some(SeccompMode::Filter));
        assert_eq!(st.no_new_privs, Some(true));
        assert_eq!(st.seccomp_filters, Some(1));
        assert!(st.is_sandboxed());
        let ll = st.landlock.expect("landlock recorded");
        assert_eq!(ll, report.landlock.unwrap());
        println!("landlock abi {} {:?}", ll.abi, ll.enforcement);
        if ll.abi > 0 {
            assert_ne!(ll.enforcement, Enforcement::None);
        }
        assert!(matches!(
            Plan::new().apply_and_enter(&Policy::restricted()),
            Err(sandbox::Error::AlreadyEntered)
        ));
        child_ok();
    }
    run_child("status_shows_seccomp_and_no_new_privs", &[]);
}

#[test]
fn open_mode_connects_only_to_listed_ports() {
    if is_child("open_mode_connects_only_to_listed_ports") {
        let (p1, p2) = (env_port("P1"), env_port("P2"));
        let policy = Policy {
            connect_ports: vec![p1],
            ..Policy::open()
        };
        let report = enter(Plan::new(), &policy);
        let abi = report.landlock.as_ref().map_or(0, |l| l.abi);
        let mut s = TcpStream::connect(("127.0.0.1", p1)).expect("listed port");
        s.write_all(b"hi").unwrap();
        if abi >= 4 {
            assert_refused(
                "unlisted port",
                TcpStream::connect(("127.0.0.1", p2)),
                &[libc::EACCES],
            );
        }
        // bind needs allow_bind, whatever the protocol.
        let u = UdpSocket::bind("0.0.0.0:0");
        assert_refused("udp bind", u, &[libc::EPERM, libc::EACCES]);
        assert_refused(
            "open",
            File::open("/etc/hostname"),
            &[libc::EACCES, libc::EPERM],
        );
        assert_refused(
            "bind",
            TcpListener::bind("127.0.0.1:0"),
            &[libc::EACCES, libc::EPERM],
        );
        assert_refused("unix socket", UnixStream::connect("/run/x"), &[libc::EPERM]);
        child_ok();
    }
    let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
    run_child(
        "open_mode_connects_only_to_listed_ports",
        &[
            ("P1", l1.local_addr().unwrap().port().to_string()),
            ("P2", l2.local_addr().unwrap().port().to_string()),
        ],
    );
    let (mut c, _) = l1.accept().unwrap();
    let mut buf = [0u8; 2];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
    l2.set_nonblocking(true).unwrap();
    assert!(l2.accept().is_err(), "unlisted port reached");
}

#[test]
fn allow_bind_permits_tcp_listeners_only() {
    if is_child("allow_bind_permits_tcp_listeners_only") {
        let port = env_port("PORT");
        let policy = Policy {
            allow_bind: true,
            ..Policy::restricted()
        };
        enter(Plan::new(), &policy);
        let l = TcpListener::bind("127.0.0.1:0").expect("bind with allow_bind");
        let mine = l.local_addr().unwrap().port();
        assert_ne!(mine, 0);
        assert_refused("udp", UdpSocket::bind("127.0.0.1:0"), &[libc::EPERM]);
        assert_refused(
            "connect",
            TcpStream::connect(("127.0.0.1", port)),
            &[libc::EPERM, libc::EACCES],
        );
        child_ok();
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    run_child(
        "allow_bind_permits_tcp_listeners_only",
        &[("PORT", port.to_string())],
    );
}

#[test]
fn example_reports_refusals() {
    // The example is built by `cargo test`; run it when present.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let example = dir.join("examples").join("sandboxed_echo");
    if !example.exists() {
        return;
    }
    let out = Command::new(example).arg("--demo").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("open(/etc/passwd): refused"), "{text}");
    assert!(text.contains("execve(/bin/true): refused"), "{text}");
    assert!(text.contains("connect(127.0.0.1:9): refused"), "{text}");
    assert!(
        text.contains("echoed: \"ping through the sandbox\""),
        "{text}"
    );
}

#[test]
#[cfg(target_arch = "x86_64")]
fn a_missing_landlock_is_reported_in_the_report_and_status() {
    // A kernel without Landlock, as a seccomp filter fakes it: the
    // landlock syscalls fail with ENOSYS.
    if is_child("a_missing_landlock_is_reported_in_the_report_and_status") {
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
        seccompiler::apply_filter(&program).unwrap();
        let report = enter(Plan::new(), &Policy::restricted());
        let ll = report.landlock.clone().expect("a Landlock report");
        assert_eq!((ll.abi, ll.enforcement), (0, Enforcement::None));
        let line = ll.summary();
        assert!(line.starts_with("Landlock is not available"), "{line}");
        assert!(!line.contains('\n'));
        assert!(report.warnings.contains(&line), "{:?}", report.warnings);
        assert_eq!(sandbox::status().landlock, Some(ll));
        // seccomp still refuses what Landlock would have.
        assert_refused(
            "open(/etc/passwd)",
            File::open("/etc/passwd"),
            &[libc::EPERM],
        );
        child_ok();
    }
    run_child(
        "a_missing_landlock_is_reported_in_the_report_and_status",
        &[],
    );
}

#[test]
fn every_thread_is_sandboxed_those_started_before_entry_too() {
    const NAME: &str = "every_thread_is_sandboxed_those_started_before_entry_too";
    if is_child(NAME) {
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let vcpu = std::thread::spawn(move || {
            // Before entry: this thread is free, and says so.
            let before = sandbox::status();
            assert_eq!(before.seccomp, Some(SeccompMode::Disabled));
            assert_eq!(before.entered, None);
            go_rx.recv().unwrap();
            let after = sandbox::status();
            (File::open("/etc/passwd").map(drop), after)
        });
        std::thread::sleep(Duration::from_millis(50));
        let report = enter(Plan::new(), &Policy::restricted());
        if report
            .landlock
            .as_ref()
            .is_some_and(|l| l.abi < 8 && l.abi > 0)
        {
            assert!(
                report
                    .warnings
                    .iter()
                    .any(|w| w.contains("threads started before entry")),
                "{:?}",
                report.warnings
            );
        }
        go_tx.send(()).unwrap();
        let (open, after) = vcpu.join().unwrap();
        assert_refused(
            "open in a thread started before entry",
            open,
            &[libc::EPERM],
        );
        assert_eq!(
            after.seccomp,
            Some(SeccompMode::Filter),
            "status on that thread"
        );
        assert_eq!(after.entered, Some(Mode::Restricted));
        // One sandbox per process: a second entry, from any thread, is
        // refused (the process already is sandboxed).
        assert!(matches!(
            Plan::new().apply_and_enter(&Policy::open()),
            Err(sandbox::Error::AlreadyEntered)
        ));
        // And without allow_threads no thread can even start.
        assert!(std::thread::Builder::new().spawn(|| ()).is_err());
        child_ok();
    }
    run_child(NAME, &[]);
}

#[test]
fn threads_after_entry_only_when_allowed_and_never_processes() {
    const NAME: &str = "threads_after_entry_only_when_allowed_and_never_processes";
    if is_child(NAME) {
        let allow = std::env::var("ALLOW").unwrap() == "1";
        let policy = Policy {
            allow_threads: allow,
            ..Policy::restricted()
        };
        enter(Plan::new(), &policy);
        let spawned = std::thread::Builder::new().name("helper".into()).spawn(|| {
            let open = File::open("/etc/passwd").map(drop);
            // SAFETY: fork in a test child; the child side exits at once.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: ends the forked child immediately.
                unsafe { libc::_exit(0) };
            }
            (open, pid, std::io::Error::last_os_error().raw_os_error())
        });
        if !allow {
            assert!(spawned.is_err(), "a thread started without allow_threads");
            child_ok();
        }
        let (open, pid, errno) = spawned
            .expect("a thread with allow_threads")
            .join()
            .unwrap();
        assert_refused("open in a thread started after entry", open, &[libc::EPERM]);
        assert_eq!(
            (pid, errno),
            (-1, Some(libc::EPERM)),
            "fork from the sandbox"
        );
        child_ok();
    }
    run_child(NAME, &[("ALLOW", "0".into())]);
    run_child(NAME, &[("ALLOW", "1".into())]);
}
