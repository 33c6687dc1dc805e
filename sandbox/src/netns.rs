//! The slirp4netns front end's way into the target: join its namespaces,
//! open the tap there, and bring the descriptor back.
//!
//! slirp4netns does this in a forked child, and so does [`open_tap`]:
//!
//! 1. The parent opens the namespace files: `/proc/PID/ns/net` (or the path
//!    given with `--netns-type=path`), and a user namespace to join, if any:
//!    the one given with `--userns-path`, or else `/proc/PID/ns/user` when it
//!    is not the one we are in (rootlesskit's child lives in a new user
//!    namespace; Podman's netns path comes without one). Each file is
//!    checked to be a namespace of the right kind (`NS_GET_NSTYPE`), so a
//!    wrong PID or path is reported here, naming it.
//! 2. The child joins the user namespace (`setns(CLONE_NEWUSER)`, which needs
//!    a single-threaded caller: a forked child always is), then the network
//!    namespace, opens the tap ([`TapDevice::open`]: it attaches to a tap of
//!    that name, as rootlesskit pre-creates `tap0`, or makes one) and, with
//!    `-c` ([`Configure`]), sets it up with ioctls on an `AF_INET` datagram
//!    socket made inside the namespace: MTU, MAC, cidr+100 with its netmask,
//!    the tap and `lo` up, and a default route via the gateway. No `ip`
//!    command runs. With `--enable-ipv6` nothing more is needed: the guest
//!    kernel configures itself by SLAAC from slirp's router advertisement
//!    once the tap is up.
//! 3. The child sends the descriptor back over a `SOCK_SEQPACKET` socketpair
//!    (`SCM_RIGHTS`, one `\0` byte of payload) and exits 0; on any failure it
//!    sends one line saying what went wrong instead and exits 1. The parent
//!    receives, reaps the child and returns the descriptor or the child's
//!    message as a [`NetnsError`].
//!
//! Only the child changes namespaces: the caller stays where it was, so the
//! slirp stack's host sockets are made in the host's network namespace.

use std::ffi::CString;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use caploop::net::TapDevice;
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// The network namespace to serve: slirp4netns's `PID|PATH` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A process whose network namespace (`/proc/PID/ns/net`) is the target;
    /// its user namespace is joined too when it is not ours.
    Pid(i32),
    /// A network namespace file (`--netns-type=path`), such as Podman's
    /// `/run/netns/netns-<uuid>`.
    Path(PathBuf),
}

impl Target {
    /// Reads slirp4netns's target argument: a PID unless `netns_type` is
    /// `"path"` (`None` and `"pid"` mean a PID).
    pub fn parse(target: &str, netns_type: Option<&str>) -> Result<Target, NetnsError> {
        match netns_type.unwrap_or("pid") {
            "pid" => match target.parse::<i32>() {
                Ok(pid) if pid > 0 => Ok(Target::Pid(pid)),
                _ => Err(NetnsError::BadPid(target.to_owned())),
            },
            "path" => {
                if target.is_empty() {
                    Err(NetnsError::EmptyPath)
                } else {
                    Ok(Target::Path(PathBuf::from(target)))
                }
            }
            other => Err(NetnsError::BadNetnsType(other.to_owned())),
        }
    }

    /// The network namespace file this target names.
    fn netns_path(&self) -> PathBuf {
        match self {
            Target::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            Target::Path(p) => p.clone(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Pid(pid) => write!(f, "the network namespace of PID {pid}"),
            Target::Path(p) => write!(f, "the network namespace at {}", p.display()),
        }
    }
}

/// What `-c` / `--configure` sets on the tap, as slirp4netns does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configure {
    /// The guest's address (cidr+100, 10.0.2.100 by default).
    pub addr: Ipv4Addr,
    /// The network's prefix length (24 by default), 0 to 32.
    pub prefix: u8,
    /// The default route's gateway (cidr+2, 10.0.2.2 by default).
    pub gateway: Ipv4Addr,
    /// The tap's MTU.
    pub mtu: u32,
    /// The tap's MAC address (`--macaddress`); the kernel's random one if
    /// `None`.
    pub mac: Option<[u8; 6]>,
}

impl Configure {
    /// The netmask of [`prefix`](Self::prefix).
    fn netmask(&self) -> Ipv4Addr {
        match self.prefix {
            0 => Ipv4Addr::UNSPECIFIED,
            p => Ipv4Addr::from(u32::MAX << (32 - u32::from(p.min(32)))),
        }
    }

    fn check(&self) -> Result<(), NetnsError> {
        if self.prefix > 32 {
            return Err(NetnsError::BadConfigure(format!(
                "prefix length {} is more than 32",
                self.prefix
            )));
        }
        if self.mtu == 0 || self.mtu > i32::MAX as u32 {
            return Err(NetnsError::BadConfigure(format!(
                "MTU {} is out of range",
                self.mtu
            )));
        }
        Ok(())
    }
}

/// Reads a MAC address written as six colon-separated hex pairs
/// (`02:00:00:00:00:01`). Multicast and all-zero addresses are refused: the
/// kernel will not give them to an Ethernet device.
pub fn parse_mac(s: &str) -> Result<[u8; 6], NetnsError> {
    let bad = |reason: &'static str| NetnsError::BadMac {
        value: s.to_owned(),
        reason,
    };
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in mac.iter_mut() {
        let part = parts
            .next()
            .ok_or_else(|| bad("it has fewer than six parts"))?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("each of the six parts must be two hex digits"));
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad("a part is not hex"))?;
    }
    if parts.next().is_some() {
        return Err(bad("it has more than six parts"));
    }
    if mac[0] & 1 != 0 {
        return Err(bad("it is a multicast address (the first byte is odd)"));
    }
    if mac == [0; 6] {
        return Err(bad("it is all zeroes"));
    }
    Ok(mac)
}

/// What went wrong getting the tap out of the target namespace. Each names
/// the target, path, device or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The target is not a PID (and `--netns-type=path` was not given).
    #[error("{0:?} is not a PID (a positive number); for a path give --netns-type=path")]
    BadPid(String),
    /// `--netns-type=path` with an empty path.
    #[error("the network namespace path is empty")]
    EmptyPath,
    /// A `--netns-type` other than `pid` and `path`.
    #[error("unknown netns type {0:?} (expected pid or path)")]
    BadNetnsType(String),
    /// A MAC address that cannot be read or used.
    #[error("invalid MAC address {value:?}: {reason}")]
    BadMac {
        /// The text given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A [`Configure`] that cannot be applied.
    #[error("cannot configure the tap: {0}")]
    BadConfigure(String),
    /// A namespace file could not be opened or inspected.
    #[error("cannot open {what}: {source}{hint}")]
    Open {
        /// Which namespace, of what, with its path.
        what: String,
        /// The file.
        path: PathBuf,
        /// The kernel's error.
        #[source]
        source: io::Error,
        /// More words for the usual cases (the process does not exist).
        hint: &'static str,
    },
    /// The file is not a namespace of the kind needed.
    #[error("{path} is not a {expected} namespace: it is {found}", path = path.display())]
    NotNamespace {
        /// The file.
        path: PathBuf,
        /// What it is.
        found: String,
        /// `network` or `user`.
        expected: &'static str,
    },
    /// A system call in the parent (socketpair, fork, recvmsg, waitpid).
    #[error("{op} (opening tap {tap:?} in {target}) failed: {source}")]
    Sys {
        /// The call.
        op: &'static str,
        /// The tap.
        tap: String,
        /// The target.
        target: String,
        /// The kernel's error.
        #[source]
        source: Errno,
    },
    /// The child reported a failure.
    #[error("opening tap {tap:?} in {target}: {message}")]
    Child {
        /// The tap.
        tap: String,
        /// The target.
        target: String,
        /// The child's one line.
        message: String,
    },
    /// The child ended without sending a descriptor or a message.
    #[error("opening tap {tap:?} in {target}: the child process {status} without a word")]
    ChildDied {
        /// The tap.
        tap: String,
        /// The target.
        target: String,
        /// How it ended.
        status: String,
    },
}

/// The namespace files to join, opened in the parent.
#[derive(Debug)]
struct NsFds {
    /// The user namespace to join first, if any.
    user: Option<OwnedFd>,
    /// The network namespace.
    net: OwnedFd,
}

/// Opens a namespace file read-only and close-on-exec.
fn open_ns(path: &Path, what: impl FnOnce() -> String) -> Result<OwnedFd, NetnsError> {
    open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
        let hint = match (e, path.starts_with("/proc")) {
            (Errno::ENOENT, true) => "; the process does not exist",
            (Errno::EACCES | Errno::EPERM, _) => "; it is not ours to join",
            _ => "",
        };
        NetnsError::Open {
            what: what(),
            path: path.to_owned(),
            source: e.into(),
            hint,
        }
    })
}

/// Checks that `fd` is a namespace of the kind `flag` (`NS_GET_NSTYPE`).
fn check_ns_type(
    fd: BorrowedFd<'_>,
    path: &Path,
    flag: CloneFlags,
    expected: &'static str,
) -> Result<(), NetnsError> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns a value; `fd`
    // is open for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::NS_GET_NSTYPE) };
    let found = if rc < 0 {
        match Errno::last() {
            Errno::ENOTTY | Errno::EINVAL => "not a namespace file at all".to_owned(),
            e => format!("not usable as a namespace ({e})"),
        }
    } else if rc == flag.bits() {
        return Ok(());
    } else {
        let kind = match rc {
            libc::CLONE_NEWNET => "network",
            libc::CLONE_NEWUSER => "user",
            libc::CLONE_NEWNS => "mount",
            libc::CLONE_NEWPID => "PID",
            libc::CLONE_NEWUTS => "UTS",
            libc::CLONE_NEWIPC => "IPC",
            libc::CLONE_NEWCGROUP => "cgroup",
            libc::CLONE_NEWTIME => "time",
            _ => "some other",
        };
        format!("a {kind} namespace")
    };
    Err(NetnsError::NotNamespace {
        path: path.to_owned(),
        found,
        expected,
    })
}

/// Opens the namespaces `open_tap` joins (see the module docs for which).
fn namespace_fds(target: &Target, userns_path: Option<&Path>) -> Result<NsFds, NetnsError> {
    let net_path = target.netns_path();
    let net = open_ns(&net_path, || match target {
        Target::Pid(pid) => format!(
            "the network namespace of PID {pid} ({})",
            net_path.display()
        ),
        Target::Path(p) => format!("the network namespace file {}", p.display()),
    })?;
    check_ns_type(net.as_fd(), &net_path, CloneFlags::CLONE_NEWNET, "network")?;

    let user = match (userns_path, target) {
        (Some(path), _) => {
            let fd = open_ns(path, || {
                format!("the user namespace file {} (--userns-path)", path.display())
            })?;
            check_ns_type(fd.as_fd(), path, CloneFlags::CLONE_NEWUSER, "user")?;
            Some(fd)
        }
        (None, Target::Pid(pid)) => {
            let path = PathBuf::from(format!("/proc/{pid}/ns/user"));
            let what = || format!("the user namespace of PID {pid} ({})", path.display());
            let fd = open_ns(&path, what)?;
            let theirs = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| NetnsError::Open {
                what: what(),
                path: path.clone(),
                source: e.into(),
                hint: "",
            })?;
            let own = Path::new("/proc/self/ns/user");
            let ours = std::fs::metadata(own).map_err(|e| NetnsError::Open {
                what: "our own user namespace (/proc/self/ns/user)".to_owned(),
                path: own.to_owned(),
                source: e,
                hint: "",
            })?;
            if theirs.st_dev == ours.dev() && theirs.st_ino == ours.ino() {
                None
            } else {
                Some(fd)
            }
        }
        (None, Target::Path(_)) => None,
    };
    Ok(NsFds { user, net })
}

/// Opens the tap `tapname` inside `target`'s network namespace, as
/// slirp4netns does, and configures it if `configure` is given; returns
/// the tap's descriptor (non-blocking, close-on-exec), usable from the
/// caller's own namespaces.
///
/// A user namespace is joined first when `userns_path` is given or the
/// target PID's user namespace is not ours.
///
/// Precondition: call this while the process is single-threaded, as the
/// helper is at startup, before any thread is made. The work is done in a
/// forked child, which is always single-threaded (so `setns(CLONE_NEWUSER)`
/// works there), but it allocates and runs ordinary Rust code after the
/// fork, which is only sound when no other thread can hold a lock at the
/// moment of the fork (glibc's `malloc` guards itself across `fork`; log
/// and stdio locks do not, and the child uses neither). SIGCHLD must not
/// be ignored, so the child can be reaped.
pub fn open_tap(
    target: &Target,
    userns_path: Option<&Path>,
    tapname: &str,
    configure: Option<&Configure>,
) -> Result<OwnedFd, NetnsError> {
    if let Some(cfg) = configure {
        cfg.check()?;
    }
    let ns = namespace_fds(target, userns_path)?;
    let sys = |op: &'static str| {
        move |source: Errno| NetnsError::Sys {
            op,
            tap: tapname.to_owned(),
            target: target.to_string(),
            source,
        }
    };
    let (parent_sock, child_sock) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(sys("socketpair"))?;

    // SAFETY: the child runs only `child_main`, which joins namespaces,
    // opens and configures the tap and sends on a socket, then `_exit`s; it
    // never returns into the caller's code. The caller is single-threaded
    // (the precondition above); where it is not (the tests), the child
    // takes no lock but malloc's, which glibc re-initialises in the child.
    match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop(parent_sock);
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                child_main(&ns, tapname, configure, child_sock.as_fd())
            }))
            .unwrap_or(2);
            // SAFETY: `_exit` ends the child at once, without running the
            // parent's atexit handlers or flushing its stdio buffers twice.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(child_sock);
            drop(ns);
            let got = receive(parent_sock.as_fd());
            let status = reap(child);
            finish(got, status, target, tapname)
        }
    }
}

/// What the parent got over the socket.
enum Received {
    Fd(OwnedFd),
    Message(String),
    Nothing,
}

/// Receives the child's one record: a `\0` byte with the descriptor, or
/// a message.
fn receive(sock: BorrowedFd<'_>) -> Result<Received, Errno> {
    let mut buf = [0u8; 4096];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(msg) => msg,
        };
        let len = msg.bytes;
        let mut fds: Vec<OwnedFd> = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    for fd in raw {
                        // SAFETY: SCM_RIGHTS installed `fd` in this process
                        // just now; nothing else owns it.
                        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
        }
        if len == 0 && fds.is_empty() {
            return Ok(Received::Nothing);
        }
        if len == 1 && buf[0] == 0 && fds.len() == 1 {
            if let Some(fd) = fds.pop() {
                return Ok(Received::Fd(fd));
            }
        }
        let text = String::from_utf8_lossy(&buf[..len]).trim_end().to_owned();
        return Ok(Received::Message(if text.is_empty() {
            "the child sent an unexpected reply".to_owned()
        } else {
            text
        }));
    }
}

/// Waits for the child.
fn reap(child: Pid) -> Result<WaitStatus, Errno> {
    loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

fn finish(
    got: Result<Received, Errno>,
    status: Result<WaitStatus, Errno>,
    target: &Target,
    tap: &str,
) -> Result<OwnedFd, NetnsError> {
    let tap = tap.to_owned();
    let target = target.to_string();
    match got {
        Ok(Received::Fd(fd)) => match status {
            Ok(WaitStatus::Exited(_, 0)) | Err(Errno::ECHILD) => Ok(fd),
            Ok(st) => Err(NetnsError::ChildDied {
                tap,
                target,
                status: format!("sent the tap but then {}", describe(st)),
            }),
            Err(source) => Err(NetnsError::Sys {
                op: "waitpid",
                tap,
                target,
                source,
            }),
        },
        Ok(Received::Message(message)) => Err(NetnsError::Child {
            tap,
            target,
            message,
        }),
        Ok(Received::Nothing) => Err(NetnsError::ChildDied {
            tap,
            target,
            status: match status {
                Ok(st) => describe(st),
                Err(e) => format!("could not be waited for ({e})"),
            },
        }),
        Err(source) => Err(NetnsError::Sys {
            op: "recvmsg",
            tap,
            target,
            source,
        }),
    }
}

fn describe(st: WaitStatus) -> String {
    match st {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("was killed by {sig}"),
        other => format!("ended oddly ({other:?})"),
    }
}

// ----- the child -----

/// The child's whole life: returns its exit status.
fn child_main(ns: &NsFds, tapname: &str, cfg: Option<&Configure>, sock: BorrowedFd<'_>) -> i32 {
    match child_work(ns, tapname, cfg) {
        Ok(tap) => {
            let fds = [tap.as_raw_fd()];
            let iov = [IoSlice::new(&[0u8])];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None) {
                Ok(_) => 0,
                Err(e) => {
                    let _ = send_text(sock, &format!("sending the tap's descriptor: {e}"));
                    1
                }
            }
        }
        Err(message) => {
            let _ = send_text(sock, &message);
            1
        }
    }
}

fn send_text(sock: BorrowedFd<'_>, text: &str) -> nix::Result<usize> {
    let mut line = text.replace('\n', " ");
    if line.is_empty() {
        line.push_str("unknown failure");
    }
    line.truncate(4000);
    let iov = [IoSlice::new(line.as_bytes())];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &[], MsgFlags::empty(), None)
}

/// Joins the namespaces, opens and configures the tap.
fn child_work(ns: &NsFds, tapname: &str, cfg: Option<&Configure>) -> Result<OwnedFd, String> {
    if let Some(user) = &ns.user {
        setns(user, CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("joining the user namespace (setns CLONE_NEWUSER): {e}"))?;
    }
    setns(&ns.net, CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("joining the network namespace (setns CLONE_NEWNET): {e}"))?;
    let tap = TapDevice::open(tapname).map_err(|e| e.to_string())?;
    if let Some(cfg) = cfg {
        configure(tapname, cfg)?;
    }
    Ok(tap.into_fd())
}

/// An `ifreq` for `name`, with its union zeroed.
fn ifreq(name: &str) -> Result<libc::ifreq, String> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(format!("invalid interface name {name:?}"));
    }
    // SAFETY: `ifreq` is plain old data (a name array and a union of
    // integers, addresses and a pointer), for which all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// An `AF_INET` `sockaddr` holding `addr`.
fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sockaddr_in` and `sockaddr` are both 16 bytes of plain data;
    // this is the cast every SIOCSIFADDR caller makes.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Runs one interface ioctl on `sock`.
fn ifr_ioctl(
    sock: BorrowedFd<'_>,
    req: libc::Ioctl,
    ifr: &mut libc::ifreq,
    what: &str,
) -> Result<(), String> {
    // SAFETY: every request used here (SIOC[GS]IF*) reads or writes one
    // `ifreq`, which `ifr` is and which outlives the call; `sock` is open.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req, ifr as *mut libc::ifreq) };
    if rc < 0 {
        Err(format!("{what}: {}", io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

/// Sets `IFF_UP` on `name`.
fn bring_up(sock: BorrowedFd<'_>, name: &str) -> Result<(), String> {
    let mut ifr = ifreq(name)?;
    ifr_ioctl(
        sock,
        libc::SIOCGIFFLAGS,
        &mut ifr,
        &format!("reading the flags of {name} (SIOCGIFFLAGS)"),
    )?;
    // SAFETY: SIOCGIFFLAGS has just filled `ifru_flags`, a plain integer.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ifr_ioctl(
        sock,
        libc::SIOCSIFFLAGS,
        &mut ifr,
        &format!("bringing {name} up (SIOCSIFFLAGS)"),
    )
}

/// What `-c` does: MTU, MAC, address and netmask, the tap and `lo` up, and
/// the default route, in slirp4netns's order.
fn configure(tap: &str, cfg: &Configure) -> Result<(), String> {
    let sock = nix::sys::socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("making an AF_INET socket in the namespace: {e}"))?;
    let s = sock.as_fd();

    bring_up(s, "lo")?;

    let mut ifr = ifreq(tap)?;
    ifr.ifr_ifru.ifru_mtu = cfg.mtu as libc::c_int;
    ifr_ioctl(
        s,
        libc::SIOCSIFMTU,
        &mut ifr,
        &format!("setting the MTU of {tap} to {} (SIOCSIFMTU)", cfg.mtu),
    )?;

    if let Some(mac) = cfg.mac {
        let mut ifr = ifreq(tap)?;
        // SAFETY: `sockaddr` is plain data, for which all zeroes is valid.
        let mut hw: libc::sockaddr = unsafe { std::mem::zeroed() };
        hw.sa_family = libc::ARPHRD_ETHER;
        for (dst, &src) in hw.sa_data.iter_mut().zip(mac.iter()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_hwaddr = hw;
        ifr_ioctl(
            s,
            libc::SIOCSIFHWADDR,
            &mut ifr,
            &format!("setting the MAC address of {tap} (SIOCSIFHWADDR)"),
        )?;
    }

    bring_up(s, tap)?;

    let mut ifr = ifreq(tap)?;
    ifr.ifr_ifru.ifru_addr = sockaddr_in(cfg.addr);
    ifr_ioctl(
        s,
        libc::SIOCSIFADDR,
        &mut ifr,
        &format!("giving {tap} the address {} (SIOCSIFADDR)", cfg.addr),
    )?;

    let mut ifr = ifreq(tap)?;
    ifr.ifr_ifru.ifru_netmask = sockaddr_in(cfg.netmask());
    ifr_ioctl(
        s,
        libc::SIOCSIFNETMASK,
        &mut ifr,
        &format!(
            "setting the netmask of {tap} to {} (SIOCSIFNETMASK)",
            cfg.netmask()
        ),
    )?;

    let dev = CString::new(tap).map_err(|_| format!("invalid interface name {tap:?}"))?;
    // SAFETY: `rtentry` is plain data plus one pointer, for which all
    // zeroes (a null `rt_dev`) is valid.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr_in(cfg.gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    rt.rt_dev = dev.as_ptr() as *mut libc::c_char;
    // SAFETY: SIOCADDRT reads one `rtentry`, which `rt` is; its `rt_dev`
    // points at `dev`, a NUL-terminated string that outlives the call (the
    // kernel only reads it); `s` is open.
    let rc = unsafe {
        libc::ioctl(
            s.as_raw_fd(),
            libc::SIOCADDRT,
            &mut rt as *mut libc::rtentry,
        )
    };
    if rc < 0 {
        return Err(format!(
            "adding the default route via {} on {tap} (SIOCADDRT): {}",
            cfg.gateway,
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    macro_rules! require_root {
        () => {
            if !is_root() {
                eprintln!("skipped: this test needs root (namespaces, /dev/net/tun)");
                return;
            }
        };
    }

    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    /// A named network namespace (`ip netns add`), deleted on drop.
    struct NamedNetns {
        name: String,
    }

    impl NamedNetns {
        fn new() -> NamedNetns {
            let name = format!(
                "caploop-nt-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst)
            );
            run(&["ip", "netns", "add", &name]);
            NamedNetns { name }
        }

        fn path(&self) -> PathBuf {
            PathBuf::from(format!("/var/run/netns/{}", self.name))
        }

        fn ip(&self, args: &[&str]) -> String {
            let mut all = vec!["ip", "-n", &self.name];
            all.extend_from_slice(args);
            run(&all)
        }
    }

    impl Drop for NamedNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.name])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// A `sleep` in new namespaces made by `unshare`, killed on drop.
    struct NsProcess {
        child: Child,
    }

    impl NsProcess {
        fn spawn(unshare_args: &[&str]) -> NsProcess {
            let child = Command::new("unshare")
                .args(unshare_args)
                .args(["sleep", "30"])
                .stdin(Stdio::null())
                .spawn()
                .expect("running unshare");
            let p = NsProcess { child };
            // unshare makes the namespaces, then execs sleep: wait for that.
            let deadline = Instant::now() + Duration::from_secs(10);
            let comm = format!("/proc/{}/comm", p.pid());
            while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
                assert!(Instant::now() < deadline, "unshare did not exec sleep");
                std::thread::sleep(Duration::from_millis(10));
            }
            p
        }

        fn pid(&self) -> i32 {
            self.child.id() as i32
        }

        fn nsenter(&self, ns: &[&str], args: &[&str]) -> String {
            let pid = self.pid().to_string();
            let mut all = vec!["nsenter", "-t", &pid];
            all.extend_from_slice(ns);
            all.extend_from_slice(args);
            run(&all)
        }
    }

    impl Drop for NsProcess {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn run(args: &[&str]) -> String {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    fn cfg(mtu: u32, mac: Option<[u8; 6]>) -> Configure {
        Configure {
            addr: Ipv4Addr::new(10, 0, 2, 100),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            mtu,
            mac,
        }
    }

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const PEER_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

    /// Checks `ip -j addr show` / `ip -j route` output for what `-c` sets.
    fn check_configured(addr_json: &str, lo_json: &str, route_json: &str, mtu: u64, mac: &str) {
        let addr: serde_json::Value = serde_json::from_str(addr_json).expect("ip -j addr");
        let link = &addr[0];
        assert_eq!(link["ifname"], "tap0", "{addr_json}");
        assert_eq!(link["mtu"].as_u64(), Some(mtu), "{addr_json}");
        assert_eq!(link["address"], mac, "{addr_json}");
        let flags: Vec<&str> = link["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .filter_map(|f| f.as_str())
            .collect();
        assert!(flags.contains(&"UP"), "tap0 not up: {addr_json}");
        let v4: Vec<&serde_json::Value> = link["addr_info"]
            .as_array()
            .expect("addr_info")
            .iter()
            .filter(|a| a["family"] == "inet")
            .collect();
        assert_eq!(v4.len(), 1, "{addr_json}");
        assert_eq!(v4[0]["local"], "10.0.2.100", "{addr_json}");
        assert_eq!(v4[0]["prefixlen"].as_u64(), Some(24), "{addr_json}");

        let lo: serde_json::Value = serde_json::from_str(lo_json).expect("ip -j link lo");
        let lo_flags = lo[0]["flags"].as_array().expect("lo flags");
        assert!(lo_flags.iter().any(|f| f == "UP"), "lo not up: {lo_json}");

        let routes: serde_json::Value = serde_json::from_str(route_json).expect("ip -j route");
        let default = routes
            .as_array()
            .expect("routes")
            .iter()
            .find(|r| r["dst"] == "default")
            .unwrap_or_else(|| panic!("no default route: {route_json}"));
        assert_eq!(default["gateway"], "10.0.2.2", "{route_json}");
        assert_eq!(default["dev"], "tap0", "{route_json}");
    }

    /// The interface name a tap descriptor is attached to (TUNGETIFF).
    fn tap_name(fd: BorrowedFd<'_>) -> String {
        let mut req = ifreq("x").unwrap();
        req.ifr_name = [0; libc::IFNAMSIZ];
        // SAFETY: TUNGETIFF fills one `ifreq`, which `req` is; `fd` is open.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut req) };
        assert!(rc >= 0, "TUNGETIFF: {}", io::Error::last_os_error());
        let bytes: Vec<u8> = req
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    /// Sends an ARP request for 10.0.2.100 from 10.0.2.2 into the tap and
    /// checks the kernel's reply, byte by byte.
    fn check_arp(fd: BorrowedFd<'_>, tap_mac: [u8; 6]) {
        let mut req = Vec::new();
        req.extend_from_slice(&[0xff; 6]);
        req.extend_from_slice(&PEER_MAC);
        req.extend_from_slice(&[0x08, 0x06]); // ARP
        req.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
        req.extend_from_slice(&PEER_MAC);
        req.extend_from_slice(&[10, 0, 2, 2]);
        req.extend_from_slice(&[0; 6]);
        req.extend_from_slice(&[10, 0, 2, 100]);
        let n = nix::unistd::write(fd, &req).expect("writing the ARP request");
        assert_eq!(n, req.len());

        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no ARP reply within 5 s");
            let mut pfd = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            match nix::poll::poll(&mut pfd, ms) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => panic!("poll: {e}"),
            }
            let len = match nix::unistd::read(fd, &mut buf) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => continue,
                Err(e) => panic!("reading the tap: {e}"),
            };
            let f = &buf[..len];
            // Skip IPv6 router solicitations, MLD and the like.
            if len < 42 || f[12..14] != [0x08, 0x06] || f[20..22] != [0, 2] {
                continue;
            }
            assert_eq!(&f[0..6], &PEER_MAC, "reply's destination");
            assert_eq!(&f[6..12], &tap_mac, "reply's source");
            assert_eq!(&f[14..20], &[0, 1, 0x08, 0x00, 6, 4], "ARP header");
            assert_eq!(&f[22..28], &tap_mac, "sender MAC");
            assert_eq!(&f[28..32], &[10, 0, 2, 100], "sender IP");
            assert_eq!(&f[32..38], &PEER_MAC, "target MAC");
            assert_eq!(&f[38..42], &[10, 0, 2, 2], "target IP");
            return;
        }
    }

    fn mac_text(mac: [u8; 6]) -> String {
        mac.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    // ----- pure -----

    #[test]
    fn parse_targets() {
        assert_eq!(Target::parse("1234", None).unwrap(), Target::Pid(1234));
        assert_eq!(
            Target::parse("1234", Some("pid")).unwrap(),
            Target::Pid(1234)
        );
        assert_eq!(
            Target::parse("/run/netns/x", Some("path")).unwrap(),
            Target::Path("/run/netns/x".into())
        );
        for bad in ["/run/netns/x", "abc", "0", "-5", "", "12a"] {
            let e = Target::parse(bad, None).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains("not a PID"), "{e}");
        }
        let e = Target::parse("1", Some("bess")).unwrap_err().to_string();
        assert!(e.contains("\"bess\""), "{e}");
        assert!(Target::parse("", Some("path")).is_err());
    }

    #[test]
    fn parse_macs() {
        assert_eq!(parse_mac("02:00:00:00:00:01").unwrap(), MAC);
        assert_eq!(
            parse_mac("52:55:0A:00:02:02").unwrap(),
            [0x52, 0x55, 0x0a, 0, 2, 2]
        );
        for (bad, why) in [
            ("02:00:00:00:00", "fewer than six"),
            ("02:00:00:00:00:01:02", "more than six"),
            ("02:00:00:00:00:1", "two hex digits"),
            ("02:00:00:00:00:0g", "two hex digits"),
            ("02-00-00-00-00-01", "two hex digits"),
            ("", "two hex digits"),
            ("01:00:5e:00:00:01", "multicast"),
            ("00:00:00:00:00:00", "zeroes"),
        ] {
            let e = parse_mac(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn netmasks() {
        let mut c = cfg(1500, None);
        for (p, m) in [
            (0, "0.0.0.0"),
            (8, "255.0.0.0"),
            (24, "255.255.255.0"),
            (25, "255.255.255.128"),
            (32, "255.255.255.255"),
        ] {
            c.prefix = p;
            assert_eq!(c.netmask().to_string(), m);
        }
        c.prefix = 33;
        assert!(c.check().unwrap_err().to_string().contains("33"));
    }

    // ----- as root -----

    fn path_target_configured(mtu: u32) {
        let ns = NamedNetns::new();
        let fd = open_tap(
            &Target::Path(ns.path()),
            None,
            "tap0",
            Some(&cfg(mtu, Some(MAC))),
        )
        .expect("open_tap");
        assert_eq!(tap_name(fd.as_fd()), "tap0");
        check_configured(
            &ns.ip(&["-j", "addr", "show", "tap0"]),
            &ns.ip(&["-j", "link", "show", "lo"]),
            &ns.ip(&["-j", "route"]),
            u64::from(mtu),
            "02:00:00:00:00:01",
        );
        check_arp(fd.as_fd(), MAC);
    }

    #[test]
    fn path_target_configures_mtu_1500() {
        require_root!();
        path_target_configured(1500);
    }

    #[test]
    fn path_target_configures_mtu_65520() {
        require_root!();
        path_target_configured(65520);
    }

    #[test]
    fn path_target_random_mac() {
        require_root!();
        let ns = NamedNetns::new();
        let fd = open_tap(
            &Target::Path(ns.path()),
            None,
            "tap0",
            Some(&cfg(1500, None)),
        )
        .expect("open_tap");
        let addr = ns.ip(&["-j", "addr", "show", "tap0"]);
        let v: serde_json::Value = serde_json::from_str(&addr).unwrap();
        let mac = parse_mac(v[0]["address"].as_str().unwrap()).expect("the kernel's MAC");
        check_configured(
            &addr,
            &ns.ip(&["-j", "link", "show", "lo"]),
            &ns.ip(&["-j", "route"]),
            1500,
            &mac_text(mac),
        );
        check_arp(fd.as_fd(), mac);
    }

    #[test]
    fn path_target_attaches_to_existing_tap() {
        require_root!();
        let ns = NamedNetns::new();
        ns.ip(&["tuntap", "add", "tap0", "mode", "tap"]);
        let before = ns.ip(&["-j", "link", "show", "tap0"]);
        let fd = open_tap(&Target::Path(ns.path()), None, "tap0", None).expect("open_tap");
        assert_eq!(tap_name(fd.as_fd()), "tap0");
        let after = ns.ip(&["-j", "link", "show", "tap0"]);
        let ifindex =
            |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()[0]["ifindex"].as_u64();
        assert_eq!(ifindex(&before), ifindex(&after), "a new tap0 was made");
        // Not configured: no IPv4 address, still down.
        let addr = ns.ip(&["-j", "-4", "addr", "show", "tap0"]);
        assert!(!addr.contains("10.0.2.100"), "{addr}");
        // Only lo and tap0 there.
        let links: serde_json::Value = serde_json::from_str(&ns.ip(&["-j", "link"])).unwrap();
        assert_eq!(links.as_array().unwrap().len(), 2, "{links}");
        // The tap is persistent: it outlives the descriptor.
        drop(fd);
        ns.ip(&["link", "show", "tap0"]);
    }

    #[test]
    fn path_target_makes_tap_without_configure() {
        require_root!();
        let ns = NamedNetns::new();
        let fd = open_tap(&Target::Path(ns.path()), None, "tap7", None).expect("open_tap");
        assert_eq!(tap_name(fd.as_fd()), "tap7");
        ns.ip(&["link", "show", "tap7"]);
        // Made by the open, not persistent: it goes with the descriptor.
        drop(fd);
        let links = ns.ip(&["-j", "link"]);
        assert!(!links.contains("tap7"), "{links}");
    }

    #[test]
    fn pid_target_net_only() {
        require_root!();
        let p = NsProcess::spawn(&["--net"]);
        let target = Target::Pid(p.pid());
        let fds = namespace_fds(&target, None).expect("namespace fds");
        assert!(fds.user.is_none(), "same user namespace: nothing to join");
        drop(fds);
        let fd = open_tap(&target, None, "tap0", Some(&cfg(1500, Some(MAC)))).expect("open_tap");
        check_configured(
            &p.nsenter(&["-n"], &["ip", "-j", "addr", "show", "tap0"]),
            &p.nsenter(&["-n"], &["ip", "-j", "link", "show", "lo"]),
            &p.nsenter(&["-n"], &["ip", "-j", "route"]),
            1500,
            "02:00:00:00:00:01",
        );
        check_arp(fd.as_fd(), MAC);
    }

    /// Runs `f` in a forked, single-threaded child of the test process and
    /// returns what it printed into a pipe, or panics with it.
    fn in_forked_child(f: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
        // Close-on-exec, so that no process another test spawns meanwhile
        // keeps the write end open.
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        // SAFETY: the child runs `f` (which forks again and runs `ip`-free
        // code), writes to a pipe and `_exit`s; it never returns into the
        // test harness.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                drop(r);
                let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                    .unwrap_or_else(|_| Err("panicked".into()));
                let (code, text) = match res {
                    Ok(t) => (0, t),
                    Err(t) => (1, t),
                };
                let _ = nix::unistd::write(&w, text.as_bytes());
                // SAFETY: ends the forked test child at once.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(w);
                let mut out = Vec::new();
                let mut file = std::fs::File::from(r);
                std::io::Read::read_to_end(&mut file, &mut out).unwrap();
                let st = waitpid(child, None).unwrap();
                let text = String::from_utf8_lossy(&out).into_owned();
                match st {
                    WaitStatus::Exited(_, 0) => Ok(text),
                    _ => Err(format!("{st:?}: {text}")),
                }
            }
        }
    }

    #[test]
    fn pid_target_in_user_namespace_like_rootlesskit() {
        require_root!();
        let p = NsProcess::spawn(&["--user", "--map-root-user", "--net"]);
        // rootlesskit pre-creates tap0 from inside the child's namespaces.
        p.nsenter(
            &["-U", "-n"],
            &["ip", "tuntap", "add", "tap0", "mode", "tap"],
        );
        let target = Target::Pid(p.pid());
        let fds = namespace_fds(&target, None).expect("namespace fds");
        assert!(
            fds.user.is_some(),
            "another user namespace: it must be joined"
        );
        drop(fds);

        let t = target.clone();
        let res = in_forked_child(move || {
            let fd = open_tap(&t, None, "tap0", Some(&cfg(65520, Some(MAC))))
                .map_err(|e| e.to_string())?;
            Ok(tap_name(fd.as_fd()))
        });
        assert_eq!(res, Ok("tap0".to_owned()));
        // The tap0 rootlesskit made, now configured (the forked child's
        // descriptor is gone, the persistent tap stays, so no ARP here).
        let addr = p.nsenter(&["-n"], &["ip", "-j", "addr", "show", "tap0"]);
        assert!(addr.contains("\"local\":\"10.0.2.100\""), "{addr}");
        assert!(addr.contains("\"mtu\":65520"), "{addr}");
        let route = p.nsenter(&["-n"], &["ip", "-j", "route"]);
        assert!(route.contains("\"gateway\":\"10.0.2.2\""), "{route}");

        // And straight from this multithreaded test process: the forked
        // child is single-threaded, so it can join the user namespace too;
        // here with --userns-path and a path target, on a second tap.
        p.nsenter(
            &["-U", "-n"],
            &["ip", "tuntap", "add", "tap1", "mode", "tap"],
        );
        let userns = PathBuf::from(format!("/proc/{}/ns/user", p.pid()));
        let netns = Target::Path(PathBuf::from(format!("/proc/{}/ns/net", p.pid())));
        let fd = open_tap(&netns, Some(&userns), "tap1", None).expect("open_tap with userns");
        assert_eq!(tap_name(fd.as_fd()), "tap1");
    }

    #[test]
    fn errors_name_the_value() {
        require_root!();
        // A PID that does not exist (beyond any pid_max).
        let e = open_tap(&Target::Pid(i32::MAX), None, "tap0", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2147483647"), "{e}");
        assert!(e.contains("the process does not exist"), "{e}");

        // A path that does not exist.
        let e = open_tap(
            &Target::Path("/nonexistent/caploop-netns".into()),
            None,
            "tap0",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/caploop-netns"), "{e}");

        // A file that is no namespace.
        let file = std::env::temp_dir().join(format!("caploop-nt-file-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let e = open_tap(&Target::Path(file.clone()), None, "tap0", None)
            .unwrap_err()
            .to_string();
        let _ = std::fs::remove_file(&file);
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert!(
            e.contains("is not a network namespace: it is not a namespace file"),
            "{e}"
        );

        // A namespace of the wrong kind, both ways round.
        let e = open_tap(
            &Target::Path("/proc/self/ns/user".into()),
            None,
            "tap0",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/proc/self/ns/user is not a network namespace: it is a user namespace"),
            "{e}"
        );
        let ns = NamedNetns::new();
        let e = open_tap(&Target::Path(ns.path()), Some(&ns.path()), "tap0", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is not a user namespace: it is a network namespace"),
            "{e}"
        );

        // A bad tap name: reported by the child, naming it and the target.
        let e = open_tap(&Target::Path(ns.path()), None, "bad/name", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad/name"), "{e}");
        assert!(e.contains(&ns.name), "{e}");

        // A gateway off the network: the route fails, and says so.
        let mut c = cfg(1500, None);
        c.gateway = Ipv4Addr::new(192, 168, 77, 1);
        let e = open_tap(&Target::Path(ns.path()), None, "tap0", Some(&c))
            .unwrap_err()
            .to_string();
        assert!(e.contains("192.168.77.1") && e.contains("SIOCADDRT"), "{e}");

        // A bad MAC.
        let e = parse_mac("zz:00:00:00:00:01").unwrap_err().to_string();
        assert!(e.contains("\"zz:00:00:00:00:01\""), "{e}");
    }
}
