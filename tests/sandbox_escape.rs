//! The sandbox tried as an attacker inside it would (as if libslirp were
//! compromised or crashing): every door a test knocks on here was found
//! open once. Each test body runs in a child process that enters the
//! sandbox; the parent checks what reached the outside and how the child
//! ended.
#![cfg(target_os = "linux")]

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use caploop::sandbox::{Mode, Plan, Policy};
use caploop::Rights;
use common::child::{announce, child_ok, is_child, Child};

/// The policies the harness uses: restricted (QEMU, bhyve), open, and open
/// with bind (slirp4netns with an API socket).
fn policy(name: &str) -> Policy {
    match name {
        "restricted" => Policy::restricted(),
        "open" => Policy::open(),
        "open+bind" => Policy {
            allow_bind: true,
            ..Policy::open()
        },
        "restricted+bind" => Policy {
            allow_bind: true,
            ..Policy::restricted()
        },
        other => panic!("no policy {other}"),
    }
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} not set"))
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn sockaddr(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

const SOCKADDR_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

fn socket(domain: i32, ty: i32, proto: i32) -> Result<OwnedFd, i32> {
    // SAFETY: socket takes integers and returns a new descriptor or -1.
    let fd = unsafe { libc::socket(domain, ty, proto) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sendto(fd: RawFd, data: &[u8], flags: i32, port: u16) -> Result<usize, i32> {
    let to = sockaddr(port);
    // SAFETY: the buffer and the address live for the call.
    let n = unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            flags,
            (&to as *const libc::sockaddr_in).cast(),
            SOCKADDR_LEN,
        )
    };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

fn setsockopt(fd: RawFd, level: i32, name: i32, value: &[u8]) -> Result<(), i32> {
    // SAFETY: setsockopt reads value.len() bytes from a live slice.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

// ----- a crash ends the process ---------------------------------------------

/// Makes the fault named `what` happen. Never returns.
fn crash(what: &str, bus_page: *mut u8) -> ! {
    match what {
        // SAFETY: none; the point is the fault. Volatile so it is not
        // optimised away.
        "segv" => unsafe { std::ptr::write_volatile(16 as *mut u8, 1) },
        // SAFETY: as above: a page of a memfd with no pages behind it.
        "bus" => unsafe { std::ptr::write_volatile(bus_page, 1) },
        // glibc's abort(), as a heap check, Rust's OOM or a panic across
        // the C boundary make it.
        "abort" => unsafe { libc::abort() },
        other => panic!("no fault {other}"),
    }
    unreachable!("{what} did not fault")
}

/// A page mapped from an empty memfd: touching it is a SIGBUS.
fn bus_page() -> *mut u8 {
    // SAFETY: memfd_create with a static name; mmap of one page of it, kept
    // for the child's life.
    unsafe {
        let fd = libc::memfd_create(c"caploop-bus".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        p.cast()
    }
}

#[test]
fn a_fault_or_abort_after_entry_ends_the_process_with_its_signal() {
    const NAME: &str = "a_fault_or_abort_after_entry_ends_the_process_with_its_signal";
    if is_child(NAME) {
        let page = bus_page();
        let report = Plan::new()
            .apply_and_enter(&policy(&env("POLICY")))
            .expect("entering");
        assert!(report.seccomp.is_some());
        announce("entered");
        crash(&env("FAULT"), page);
    }
    for p in ["restricted", "open", "open+bind"] {
        for (fault, signal) in [
            ("segv", libc::SIGSEGV),
            ("bus", libc::SIGBUS),
            ("abort", libc::SIGABRT),
        ] {
            let mut child = Child::spawn(
                NAME,
                &[("POLICY", p.to_string()), ("FAULT", fault.to_string())],
            );
            child.wait_line("entered", Duration::from_secs(10));
            let (status, out) = child.wait_exit(Duration::from_secs(1));
            let status = status.unwrap_or_else(|| {
                panic!("{p}/{fault}: still running a second after the fault (killed)\n{out}")
            });
            assert_eq!(
                status.signal(),
                Some(signal),
                "{p}/{fault}: ended with {status:?}\n{out}"
            );
        }
    }
}

// ----- no executable memory -------------------------------------------------

#[test]
fn no_memory_becomes_executable_after_entry() {
    const NAME: &str = "no_memory_becomes_executable_after_entry";
    if is_child(NAME) {
        Plan::new()
            .apply_and_enter(&policy(&env("POLICY")))
            .expect("entering");
        let map = |prot: i32| {
            // SAFETY: an anonymous private mapping, unmapped below if made.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    prot,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            (p != libc::MAP_FAILED).then_some(p).ok_or_else(errno)
        };
        for prot in [
            libc::PROT_READ | libc::PROT_EXEC,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::PROT_EXEC,
        ] {
            assert_eq!(map(prot), Err(libc::EPERM), "mmap prot {prot:#x}");
        }
        let p = map(libc::PROT_READ | libc::PROT_WRITE).expect("a plain mapping");
        // SAFETY: mprotect and munmap of the page just mapped.
        unsafe {
            assert_eq!(
                libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC),
                -1
            );
            assert_eq!(errno(), libc::EPERM, "mprotect to PROT_EXEC");
            assert_eq!(libc::mprotect(p, 4096, libc::PROT_READ), 0);
            libc::munmap(p, 4096);
        }
        child_ok();
    }
    for p in ["restricted", "open"] {
        Child::spawn(NAME, &[("POLICY", p.to_string())]).finish();
    }
}

// ----- no new destinations --------------------------------------------------

#[test]
fn sendmsg_cannot_name_a_destination() {
    // A UDP host forward gives libslirp a UDP socket before entry; in
    // restricted mode it may answer its peer but reach no one new.
    const NAME: &str = "sendmsg_cannot_name_a_destination";
    if is_child(NAME) {
        let port: u16 = env("PORT").parse().unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut plan = Plan::new();
        plan.add(&udp, Rights::SOCKET | Rights::EPHEMERAL, "udp hostfwd");
        plan.apply_and_enter(&policy(&env("POLICY")))
            .expect("entering");
        let mut to = sockaddr(port);
        let mut data = *b"escape";
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: an all-zero msghdr is valid; the fields set point at live
        // data for the call.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = (&mut to as *mut libc::sockaddr_in).cast();
            msg.msg_namelen = SOCKADDR_LEN;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            libc::sendmsg(udp.as_raw_fd(), &msg, 0)
        };
        assert_eq!((n, errno()), (-1, libc::EPERM), "sendmsg with msg_name");
        if env("POLICY") == "restricted" {
            assert_eq!(
                sendto(udp.as_raw_fd(), b"escape", 0, port),
                Err(libc::EPERM),
                "sendto with an address"
            );
        }
        child_ok();
    }
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sink.local_addr().unwrap().port();
    for p in ["restricted", "open"] {
        Child::spawn(
            NAME,
            &[("POLICY", p.to_string()), ("PORT", port.to_string())],
        )
        .finish();
    }
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(sink.recv(&mut buf).is_err(), "a datagram got out");
}

#[test]
fn tcp_fast_open_cannot_connect() {
    // sendto(MSG_FASTOPEN) connects a TCP socket without connect(): with
    // bind allowed (a socket may be made) in restricted mode, and to a port
    // outside connect_ports in open mode.
    const NAME: &str = "tcp_fast_open_cannot_connect";
    if is_child(NAME) {
        let port: u16 = env("PORT").parse().unwrap();
        let mut p = policy(&env("POLICY"));
        if p.mode == Mode::Open {
            p.connect_ports = vec![1];
        }
        Plan::new().apply_and_enter(&p).expect("entering");
        let s = socket(libc::AF_INET, libc::SOCK_STREAM, 0).expect("a TCP socket");
        let r = sendto(s.as_raw_fd(), b"escape", libc::MSG_FASTOPEN, port);
        assert_eq!(r, Err(libc::EPERM), "sendto(MSG_FASTOPEN)");
        child_ok();
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    for p in ["restricted+bind", "open+bind", "open"] {
        Child::spawn(
            NAME,
            &[("POLICY", p.to_string()), ("PORT", port.to_string())],
        )
        .finish();
    }
    listener.set_nonblocking(true).unwrap();
    if let Ok((mut c, from)) = listener.accept() {
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        panic!("a connection got out from {from}: {got:?}");
    }
}

// ----- open mode: only libslirp's sockets and options -----------------------

#[test]
fn open_mode_makes_only_the_sockets_and_options_libslirp_uses() {
    const NAME: &str = "open_mode_makes_only_the_sockets_and_options_libslirp_uses";
    if is_child(NAME) {
        Plan::new()
            .apply_and_enter(&policy(&env("POLICY")))
            .expect("entering");
        // Raw and packet sockets would spoof any source (the harness may
        // run as root in slirp4netns mode).
        for (domain, ty, proto, what) in [
            (
                libc::AF_INET,
                libc::SOCK_RAW,
                libc::IPPROTO_ICMP,
                "raw ICMP",
            ),
            (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW, "raw IP"),
            (
                libc::AF_INET6,
                libc::SOCK_RAW,
                libc::IPPROTO_ICMPV6,
                "raw ICMPv6",
            ),
            (libc::AF_PACKET, libc::SOCK_RAW, 0x0300, "packet"),
            (libc::AF_NETLINK, libc::SOCK_RAW, 0, "netlink"),
            (libc::AF_UNIX, libc::SOCK_STREAM, 0, "unix"),
            (libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP, "SCTP"),
        ] {
            assert_eq!(
                socket(domain, ty, proto).map(drop),
                Err(libc::EPERM),
                "socket {what}"
            );
        }
        let udp = socket(libc::AF_INET, libc::SOCK_DGRAM, 0).expect("UDP, as libslirp makes");
        let tcp = socket(libc::AF_INET6, libc::SOCK_STREAM, 0).expect("TCP, as libslirp makes");
        // The ping socket may be refused by net.ipv4.ping_group_range
        // (EACCES), never by the sandbox.
        if let Err(e) = socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP) {
            assert_ne!(e, libc::EPERM, "ping socket refused by the sandbox");
        }
        let one = 1i32.to_ne_bytes();
        let (u, t) = (udp.as_raw_fd(), tcp.as_raw_fd());
        // What libslirp sets works.
        assert_eq!(
            setsockopt(u, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one),
            Ok(())
        );
        assert_eq!(setsockopt(u, libc::IPPROTO_IP, libc::IP_TTL, &one), Ok(()));
        assert_eq!(
            setsockopt(u, libc::IPPROTO_IP, libc::IP_RECVERR, &one),
            Ok(())
        );
        assert_eq!(
            setsockopt(t, libc::IPPROTO_TCP, libc::TCP_NODELAY, &one),
            Ok(())
        );
        assert_eq!(
            setsockopt(t, libc::SOL_SOCKET, libc::SO_OOBINLINE, &one),
            Ok(())
        );
        // The own TCP path's reset of a host peer: SO_LINGER 0.
        let linger = [1u8, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            setsockopt(t, libc::SOL_SOCKET, libc::SO_LINGER, &linger),
            Ok(())
        );
        // What routes, marks or intercepts traffic does not.
        assert_eq!(
            setsockopt(u, libc::SOL_SOCKET, libc::SO_MARK, &one),
            Err(libc::EPERM)
        );
        assert_eq!(
            setsockopt(u, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, b"lo\0"),
            Err(libc::EPERM)
        );
        assert_eq!(
            setsockopt(t, libc::IPPROTO_IP, libc::IP_TRANSPARENT, &one),
            Err(libc::EPERM)
        );
        assert_eq!(
            setsockopt(u, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &one),
            Err(libc::EPERM)
        );
        child_ok();
    }
    for p in ["open", "open+bind"] {
        Child::spawn(NAME, &[("POLICY", p.to_string())]).finish();
    }
}

// ----- descriptors that arrive after entry (vhost-user) ----------------------

/// Sends `fds` over `sock` in one SCM_RIGHTS message (a byte of data).
fn send_fds(sock: RawFd, fds: &[RawFd]) -> Result<(), i32> {
    let mut data = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let payload = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE only computes a length.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: an all-zero msghdr is valid; its pointers go to `iov` and
    // `cbuf`, which outlive the call; the one control message fits `cbuf`
    // (CMSG_SPACE) and CMSG_DATA points inside it.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(payload) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast(), fds.len());
        libc::sendmsg(sock, &msg, 0)
    };
    if n == 1 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Receives up to `max` descriptors sent by [`send_fds`].
fn recv_fds(sock: RawFd, max: usize) -> Vec<OwnedFd> {
    let mut data = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE only computes a length.
    let space = unsafe { libc::CMSG_SPACE((max * 4) as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut out = Vec::new();
    // SAFETY: as in send_fds; the kernel wrote the control messages read
    // back here, each descriptor in them now this process's to own.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        assert_eq!(
            libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC),
            1,
            "recvmsg"
        );
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
            let p = libc::CMSG_DATA(c).cast::<RawFd>();
            for i in 0..n {
                out.push(OwnedFd::from_raw_fd(*p.add(i)));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    out
}

#[test]
fn descriptors_received_after_entry_map_shared_never_executable() {
    // What the vhost-user back end does with what the VMM hands it after
    // entry: guest memory (a memfd) mapped shared, read and write, never
    // executable; eventfds read and written; replies with sendmsg on its
    // socket only.
    const NAME: &str = "descriptors_received_after_entry_map_shared_never_executable";
    if is_child(NAME) {
        let mut pair = [0; 2];
        // SAFETY: socketpair writes two descriptors into `pair`.
        assert_eq!(
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) },
            0
        );
        // SAFETY: both are new descriptors this process owns.
        let (ours, vmm) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
        // SAFETY: memfd_create and eventfd make new descriptors, owned
        // below; ftruncate sizes the memfd.
        let (mem, ev) = unsafe {
            let m = libc::memfd_create(c"guest-ram".as_ptr(), libc::MFD_CLOEXEC);
            assert!(m >= 0 && libc::ftruncate(m, 65536) == 0);
            let e = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
            assert!(e >= 0);
            (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(e))
        };
        // Queued before entry, received after it: the numbers they get
        // then are unknown to the plan.
        send_fds(vmm.as_raw_fd(), &[mem.as_raw_fd(), ev.as_raw_fd()]).expect("sending");
        drop((mem, ev));
        let mut plan = Plan::new();
        plan.add(&ours, Rights::SOCKET | Rights::SENDMSG, "vhost-user socket");
        plan.add(&vmm, Rights::SOCKET, "the VMM's end");
        plan.apply_and_enter(&policy(&env("POLICY")))
            .expect("entering");

        let got = recv_fds(ours.as_raw_fd(), 4);
        assert_eq!(got.len(), 2, "two descriptors received");
        let (mem, ev) = (got[0].as_raw_fd(), got[1].as_raw_fd());
        // Its size may be read (raw fstat) before it is mapped.
        // SAFETY: fstat writes one `stat` into `st`.
        let size = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            assert_eq!(
                libc::syscall(libc::SYS_fstat, mem, &mut st as *mut libc::stat),
                0
            );
            st.st_size
        };
        assert_eq!(size, 65536, "fstat of the received memfd");
        let map = |prot: i32| {
            // SAFETY: a shared mapping of the received memfd, unmapped
            // below if made.
            let p =
                unsafe { libc::mmap(std::ptr::null_mut(), 65536, prot, libc::MAP_SHARED, mem, 0) };
            (p != libc::MAP_FAILED).then_some(p).ok_or_else(errno)
        };
        for prot in [
            libc::PROT_READ | libc::PROT_EXEC,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
        ] {
            assert_eq!(
                map(prot),
                Err(libc::EPERM),
                "mmap of guest memory, prot {prot:#x}"
            );
        }
        let p = map(libc::PROT_READ | libc::PROT_WRITE).expect("guest memory mapped");
        // SAFETY: the 64 KiB mapping just made; mprotect and munmap of it.
        unsafe {
            p.cast::<u8>().write_volatile(0x5a);
            assert_eq!(p.cast::<u8>().read_volatile(), 0x5a);
            assert_eq!(
                libc::mprotect(p, 65536, libc::PROT_READ | libc::PROT_EXEC),
                -1
            );
            assert_eq!(
                errno(),
                libc::EPERM,
                "mprotect of guest memory to PROT_EXEC"
            );
            libc::munmap(p, 65536);
        }
        let one = 1u64.to_ne_bytes();
        let mut back = [0u8; 8];
        // SAFETY: 8-byte reads and writes on the received eventfd.
        unsafe {
            assert_eq!(
                libc::write(ev, one.as_ptr().cast(), 8),
                8,
                "call eventfd write"
            );
            assert_eq!(
                libc::read(ev, back.as_mut_ptr().cast(), 8),
                8,
                "kick eventfd read"
            );
        }
        assert_eq!(back, one);
        // Replies (with descriptors) go out on the vhost-user socket only.
        assert_eq!(
            send_fds(ours.as_raw_fd(), &[ev]),
            Ok(()),
            "sendmsg on the socket"
        );
        assert_eq!(
            send_fds(vmm.as_raw_fd(), &[ev]),
            Err(libc::EPERM),
            "sendmsg on a socket without SENDMSG"
        );
        child_ok();
    }
    for p in ["restricted", "open"] {
        Child::spawn(NAME, &[("POLICY", p.to_string())]).finish();
    }
}
