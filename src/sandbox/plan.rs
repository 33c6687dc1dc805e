//! The sandbox plan as plain data.
//!
//! Everything here is platform-independent and unit-tested on any host:
//! which descriptors get which [`Rights`], what those rights become as
//! Capsicum rights, ioctl and fcntl limits on FreeBSD ([`capsicum_limits`]),
//! and which syscalls, with which argument checks, the Linux seccomp filter
//! allows ([`seccomp_rules`]) next to what Landlock handles
//! ([`landlock_rules`]). The platform files only turn this data into calls.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use crate::reactor::{FdOwner, Reactor};
use crate::rights::Rights;

/// How much the process keeps once the sandbox is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// No new connections to the outside: no `connect`, no `sendto` with an
    /// address, no new sockets (unless [`Policy::allow_bind`]). On FreeBSD
    /// the process enters capability mode.
    #[default]
    Restricted,
    /// The guest may reach the outside: `socket` (IPv4 and IPv6 only),
    /// `connect` and `sendto` with an address are allowed, and on Linux
    /// `stat` by path (libslirp's DNS forwarder checks `/etc/resolv.conf`).
    /// On Linux TCP connects can be narrowed to [`Policy::connect_ports`]. On FreeBSD
    /// capability mode forbids both calls, so open mode limits descriptor
    /// rights but does **not** enter capability mode.
    Open,
}

/// What the sandbox allows beyond the planned descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Restricted (default) or open.
    pub mode: Mode,
    /// Linux, open mode: the only TCP ports `connect` may reach (Landlock
    /// `NetPort` rules). Empty means any port. Ignored in restricted mode,
    /// where no connect is allowed at all, and on FreeBSD.
    pub connect_ports: Vec<u16>,
    /// Allow `socket` + `bind` + `listen` after entry, for host forwards
    /// added at run time (the slirp4netns API). Default false: forwards must
    /// be set up before entering. In restricted mode only TCP sockets may be
    /// made. On FreeBSD capability mode forbids `bind` to an address, so
    /// this has no effect there (add forwards before entering).
    pub allow_bind: bool,
    /// Linux: log seccomp violations through the kernel audit log instead of
    /// refusing them with `EPERM` (for finding a missing syscall; never in
    /// production). Landlock still refuses.
    pub audit: bool,
}

impl Policy {
    /// Restricted mode, no bind: the default.
    pub fn restricted() -> Policy {
        Policy::default()
    }

    /// Open mode, any port, no bind.
    pub fn open() -> Policy {
        Policy {
            mode: Mode::Open,
            ..Policy::default()
        }
    }
}

/// One descriptor the plan limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFd {
    /// The descriptor.
    pub fd: RawFd,
    /// Everything the process may do with it after entry.
    pub rights: Rights,
    /// Who asked for it (for errors and the report).
    pub label: String,
}

type Hook = Box<dyn FnOnce() -> std::io::Result<()>>;

/// The descriptors to limit and the work to do before entering.
///
/// Collect it with [`Plan::from_reactor`], add the caller's own descriptors
/// with [`Plan::add`], then call [`Plan::apply_and_enter`]. A descriptor
/// added twice keeps the union of the rights asked for.
#[derive(Default)]
pub struct Plan {
    pub(crate) fds: Vec<PlannedFd>,
    pub(crate) hooks: Vec<(String, Hook)>,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("fds", &self.fds)
            .field(
                "hooks",
                &self.hooks.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Plan {
    /// An empty plan.
    pub fn new() -> Plan {
        Plan::default()
    }

    /// Every live descriptor of `reactor` with the rights its registration
    /// recorded, the reactor's own event queue and signal descriptor
    /// included.
    pub fn from_reactor<D>(reactor: &Reactor<D>) -> Plan {
        let mut plan = Plan::new();
        plan.add_reactor(reactor);
        plan
    }

    /// Adds every live descriptor of `reactor` (see [`Plan::from_reactor`]).
    pub fn add_reactor<D>(&mut self, reactor: &Reactor<D>) -> &mut Plan {
        for info in reactor.fds() {
            let label = match info.owner {
                FdOwner::Registration(h) => format!("registration {h:?}"),
                FdOwner::Internal(what) => format!("reactor {what}"),
            };
            self.add_raw(info.fd, info.rights, label);
        }
        self
    }

    /// Adds a descriptor the caller holds, with the rights it needs.
    pub fn add(&mut self, fd: &impl AsFd, rights: Rights, label: &str) -> &mut Plan {
        self.add_raw(fd.as_fd().as_raw_fd(), rights, label.to_owned())
    }

    /// Adds a descriptor by number. It must stay open until entry, where it
    /// is checked.
    pub fn add_raw(&mut self, fd: RawFd, rights: Rights, label: impl Into<String>) -> &mut Plan {
        match self.fds.iter_mut().find(|p| p.fd == fd) {
            Some(p) => p.rights |= rights,
            None => self.fds.push(PlannedFd {
                fd,
                rights,
                label: label.into(),
            }),
        }
        self
    }

    /// Runs `hook` just before any limit is applied, while the process still
    /// has its full authority: read what a library would otherwise read
    /// lazily after entry (libslirp's `/etc/resolv.conf` on the first DNS
    /// query in open mode: see the [module docs](super) for the two
    /// queries it takes), open files, warm caches. Hooks run in the order
    /// added; the first error aborts entry with [`Error::Hook`](super::Error::Hook).
    pub fn before_entry(
        &mut self,
        name: &str,
        hook: impl FnOnce() -> std::io::Result<()> + 'static,
    ) -> &mut Plan {
        self.hooks.push((name.to_owned(), Box::new(hook)));
        self
    }

    /// The planned descriptors, in the order added.
    pub fn fds(&self) -> &[PlannedFd] {
        &self.fds
    }

    /// The rights planned for `fd`, if it is planned.
    pub fn rights_of(&self, fd: RawFd) -> Option<Rights> {
        self.fds.iter().find(|p| p.fd == fd).map(|p| p.rights)
    }
}

// ----- FreeBSD: Capsicum ----------------------------------------------------

/// A Capsicum capability right (the `capsicum` crate's `Right` variant of the
/// same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CapRight {
    /// `CAP_READ` (also `CAP_RECV`).
    Read,
    /// `CAP_WRITE` (also `CAP_SEND`).
    Write,
    /// `CAP_SEEK`.
    Seek,
    /// `CAP_EVENT`: poll, select, kevent on the descriptor.
    Event,
    /// `CAP_ACCEPT`.
    Accept,
    /// `CAP_CONNECT`.
    Connect,
    /// `CAP_BIND`.
    Bind,
    /// `CAP_LISTEN`.
    Listen,
    /// `CAP_SHUTDOWN`.
    Shutdown,
    /// `CAP_GETSOCKOPT`.
    Getsockopt,
    /// `CAP_SETSOCKOPT`.
    Setsockopt,
    /// `CAP_GETPEERNAME`.
    Getpeername,
    /// `CAP_GETSOCKNAME`.
    Getsockname,
    /// `CAP_FSTAT`.
    Fstat,
    /// `CAP_FCNTL`, narrowed by the fcntl list.
    Fcntl,
    /// `CAP_IOCTL`, narrowed by the ioctl list.
    Ioctl,
    /// `CAP_KQUEUE_EVENT`: wait on a kqueue.
    KqueueEvent,
    /// `CAP_KQUEUE_CHANGE`: change a kqueue's filters.
    KqueueChange,
}

/// An fcntl command left to a descriptor that has [`CapRight::Fcntl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CapFcntl {
    /// `F_GETFL`.
    GetFL,
    /// `F_SETFL`.
    SetFL,
}

/// An ioctl left to a descriptor that has [`CapRight::Ioctl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CapIoctl {
    /// `FIONREAD`: bytes waiting to be read.
    Fionread,
    /// `FIONBIO`: set non-blocking mode (tap devices).
    Fionbio,
}

/// The complete Capsicum limit of one descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapLimits {
    /// `cap_rights_limit`.
    pub rights: Vec<CapRight>,
    /// `cap_ioctls_limit`, applied when `rights` has [`CapRight::Ioctl`].
    pub ioctls: Vec<CapIoctl>,
    /// `cap_fcntls_limit`, applied when `rights` has [`CapRight::Fcntl`].
    pub fcntls: Vec<CapFcntl>,
}

/// Maps portable rights to Capsicum rights, ioctls and fcntls.
///
/// `RECV` and `SEND` are `CAP_READ` and `CAP_WRITE` on FreeBSD. `POLLER`
/// (the reactor's kqueue) becomes `CAP_KQUEUE_EVENT` + `CAP_KQUEUE_CHANGE`.
/// `IOCTL_TAP` keeps only `FIONBIO`: the tap device is configured before
/// entry.
pub fn capsicum_limits(rights: Rights) -> CapLimits {
    const MAP: &[(Rights, CapRight)] = &[
        (Rights::READ, CapRight::Read),
        (Rights::RECV, CapRight::Read),
        (Rights::WRITE, CapRight::Write),
        (Rights::SEND, CapRight::Write),
        (Rights::SEEK, CapRight::Seek),
        (Rights::EVENT, CapRight::Event),
        (Rights::ACCEPT, CapRight::Accept),
        (Rights::CONNECT, CapRight::Connect),
        (Rights::BIND, CapRight::Bind),
        (Rights::LISTEN, CapRight::Listen),
        (Rights::SHUTDOWN, CapRight::Shutdown),
        (Rights::GETSOCKOPT, CapRight::Getsockopt),
        (Rights::SETSOCKOPT, CapRight::Setsockopt),
        (Rights::GETPEERNAME, CapRight::Getpeername),
        (Rights::GETSOCKNAME, CapRight::Getsockname),
        (Rights::FSTAT, CapRight::Fstat),
        (Rights::FCNTL_FLAGS, CapRight::Fcntl),
        (Rights::IOCTL_FIONREAD, CapRight::Ioctl),
        (Rights::IOCTL_TAP, CapRight::Ioctl),
        (Rights::POLLER, CapRight::KqueueEvent),
        (Rights::POLLER, CapRight::KqueueChange),
    ];
    let mut out = CapLimits::default();
    for &(r, c) in MAP {
        if rights.contains(r) && !out.rights.contains(&c) {
            out.rights.push(c);
        }
    }
    if rights.contains(Rights::IOCTL_FIONREAD) {
        out.ioctls.push(CapIoctl::Fionread);
    }
    if rights.contains(Rights::IOCTL_TAP) {
        out.ioctls.push(CapIoctl::Fionbio);
    }
    if rights.contains(Rights::FCNTL_FLAGS) {
        out.fcntls = vec![CapFcntl::GetFL, CapFcntl::SetFL];
    }
    out
}

// ----- Linux: seccomp and Landlock -----------------------------------------

/// Linux ABI constants the rules compare against. They are the same on
/// x86_64 and aarch64 (asm-generic ioctls, generic fcntl commands); the
/// Linux back end checks them against `libc` in its tests.
pub mod linux_abi {
    /// `F_GETFD`.
    pub const F_GETFD: u64 = 1;
    /// `F_SETFD`.
    pub const F_SETFD: u64 = 2;
    /// `F_GETFL`.
    pub const F_GETFL: u64 = 3;
    /// `F_SETFL`.
    pub const F_SETFL: u64 = 4;
    /// `FIONREAD`.
    pub const FIONREAD: u64 = 0x541B;
    /// `FIONBIO`.
    pub const FIONBIO: u64 = 0x5421;
    /// `TUNSETOFFLOAD`.
    pub const TUNSETOFFLOAD: u64 = 0x4004_54d0;
    /// `TUNSETVNETHDRSZ`.
    pub const TUNSETVNETHDRSZ: u64 = 0x4004_54d8;
    /// `AF_INET`.
    pub const AF_INET: u64 = 2;
    /// `AF_INET6`.
    pub const AF_INET6: u64 = 10;
    /// `SOCK_STREAM`.
    pub const SOCK_STREAM: u64 = 1;
    /// The socket type bits of `socket`'s second argument (without
    /// `SOCK_NONBLOCK` and `SOCK_CLOEXEC`).
    pub const SOCK_TYPE_MASK: u64 = 0xf;
    /// `PROT_EXEC`.
    pub const PROT_EXEC: u64 = 4;
    /// `AT_FDCWD` (-100) as the 32-bit descriptor argument the filter
    /// compares.
    pub const AT_FDCWD: u64 = 0xffff_ff9c;
}

/// A syscall the Linux filter may allow. Names are the kernel's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Sys {
    Read,
    Readv,
    Pread64,
    Write,
    Writev,
    Recvfrom,
    Recvmsg,
    Sendto,
    Sendmsg,
    Accept,
    Accept4,
    Connect,
    Bind,
    Listen,
    Socket,
    Shutdown,
    Getsockopt,
    Setsockopt,
    Getsockname,
    Getpeername,
    Fcntl,
    Ioctl,
    Close,
    EpollPwait,
    EpollPwait2,
    EpollCtl,
    TimerfdSettime,
    Mmap,
    Munmap,
    Mremap,
    Madvise,
    Mprotect,
    Brk,
    ClockGettime,
    ClockNanosleep,
    Exit,
    ExitGroup,
    Sigaltstack,
    RtSigreturn,
    RtSigprocmask,
    Signalfd4,
    Futex,
    Getrandom,
    RestartSyscall,
    SchedYield,
    Getpid,
    Gettid,
    Newfstatat,
}

impl Sys {
    /// The kernel's name for the syscall.
    pub fn name(self) -> &'static str {
        use Sys::*;
        match self {
            Read => "read",
            Readv => "readv",
            Pread64 => "pread64",
            Write => "write",
            Writev => "writev",
            Recvfrom => "recvfrom",
            Recvmsg => "recvmsg",
            Sendto => "sendto",
            Sendmsg => "sendmsg",
            Accept => "accept",
            Accept4 => "accept4",
            Connect => "connect",
            Bind => "bind",
            Listen => "listen",
            Socket => "socket",
            Shutdown => "shutdown",
            Getsockopt => "getsockopt",
            Setsockopt => "setsockopt",
            Getsockname => "getsockname",
            Getpeername => "getpeername",
            Fcntl => "fcntl",
            Ioctl => "ioctl",
            Close => "close",
            EpollPwait => "epoll_pwait",
            EpollPwait2 => "epoll_pwait2",
            EpollCtl => "epoll_ctl",
            TimerfdSettime => "timerfd_settime",
            Mmap => "mmap",
            Munmap => "munmap",
            Mremap => "mremap",
            Madvise => "madvise",
            Mprotect => "mprotect",
            Brk => "brk",
            ClockGettime => "clock_gettime",
            ClockNanosleep => "clock_nanosleep",
            Exit => "exit",
            ExitGroup => "exit_group",
            Sigaltstack => "sigaltstack",
            RtSigreturn => "rt_sigreturn",
            RtSigprocmask => "rt_sigprocmask",
            Signalfd4 => "signalfd4",
            Futex => "futex",
            Getrandom => "getrandom",
            RestartSyscall => "restart_syscall",
            SchedYield => "sched_yield",
            Getpid => "getpid",
            Gettid => "gettid",
            Newfstatat => "newfstatat",
        }
    }
}

impl fmt::Display for Sys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How an argument is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// `(arg & mask) == value`.
    MaskedEq(u64),
}

/// One argument check. `wide` compares all 64 bits (pointers); otherwise
/// the low 32 bits (descriptors, commands, flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    /// Argument index, 0 to 5.
    pub arg: u8,
    /// Comparison.
    pub cmp: Cmp,
    /// Value compared with.
    pub value: u64,
    /// Compare 64 bits rather than 32.
    pub wide: bool,
}

impl Cond {
    fn dword(arg: u8, cmp: Cmp, value: u64) -> Cond {
        Cond {
            arg,
            cmp,
            value,
            wide: false,
        }
    }

    /// `fd` argument `arg` is not `fd`.
    pub fn fd_ne(arg: u8, fd: RawFd) -> Cond {
        Cond::dword(arg, Cmp::Ne, fd as u32 as u64)
    }

    /// `fd` argument `arg` is `fd`.
    pub fn fd_eq(arg: u8, fd: RawFd) -> Cond {
        Cond::dword(arg, Cmp::Eq, fd as u32 as u64)
    }
}

/// When an allowed syscall matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SysRule {
    /// Always.
    Any,
    /// When every check of at least one group holds (OR of ANDs). Never
    /// empty, and no group is empty.
    AnyOf(Vec<Vec<Cond>>),
}

/// The seccomp filter as data: the allowed syscalls, each with its
/// argument checks. Everything else fails with `EPERM`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeccompRules {
    /// Allowed syscalls.
    pub allow: BTreeMap<Sys, SysRule>,
}

impl SeccompRules {
    /// Whether `sys` is allowed at all (for some arguments).
    pub fn allows(&self, sys: Sys) -> bool {
        self.allow.contains_key(&sys)
    }

    /// Evaluates the filter for a call, as the kernel would: whether
    /// `sys(args)` is allowed. For tests and for explaining a refusal.
    pub fn permits(&self, sys: Sys, args: [u64; 6]) -> bool {
        match self.allow.get(&sys) {
            None => false,
            Some(SysRule::Any) => true,
            Some(SysRule::AnyOf(groups)) => groups.iter().any(|g| {
                g.iter().all(|c| {
                    let mut a = args[c.arg as usize];
                    let mut v = c.value;
                    if !c.wide {
                        a &= 0xffff_ffff;
                        v &= 0xffff_ffff;
                    }
                    match c.cmp {
                        Cmp::Eq => a == v,
                        Cmp::Ne => a != v,
                        Cmp::MaskedEq(m) => a & m == v & m,
                    }
                })
            }),
        }
    }
}

/// Syscalls allowed whatever the arguments, in every mode. Found by running
/// the tests and the example under `strace -f` (see the `linux` module docs).
pub const BASE_SYSCALLS: &[Sys] = &[
    Sys::Close,
    Sys::EpollPwait,
    Sys::EpollPwait2,
    Sys::EpollCtl,
    Sys::TimerfdSettime,
    Sys::Mmap,
    Sys::Munmap,
    Sys::Mremap,
    Sys::Madvise,
    Sys::Brk,
    Sys::ClockGettime,
    Sys::ClockNanosleep,
    Sys::Exit,
    Sys::ExitGroup,
    Sys::Sigaltstack,
    Sys::RtSigreturn,
    Sys::RtSigprocmask,
    Sys::Signalfd4,
    Sys::Futex,
    Sys::Getrandom,
    Sys::RestartSyscall,
    Sys::SchedYield,
    Sys::Getpid,
    Sys::Gettid,
];

/// Syscalls whose first argument is a descriptor, with the right a planned
/// descriptor needs for them. A planned descriptor without the right is
/// refused; descriptors made after entry (accepted sockets, libslirp's
/// sockets) are governed by the allowlist alone.
pub const FD_SYSCALLS: &[(Sys, Rights)] = &[
    (Sys::Read, Rights::READ),
    (Sys::Readv, Rights::READ),
    (Sys::Write, Rights::WRITE),
    (Sys::Writev, Rights::WRITE),
    (Sys::Recvfrom, Rights::RECV),
    (Sys::Recvmsg, Rights::RECV),
    (Sys::Sendto, Rights::SEND),
    (Sys::Sendmsg, Rights::SEND),
    (Sys::Accept, Rights::ACCEPT),
    (Sys::Accept4, Rights::ACCEPT),
    (Sys::Shutdown, Rights::SHUTDOWN),
    (Sys::Getsockopt, Rights::GETSOCKOPT),
    (Sys::Setsockopt, Rights::SETSOCKOPT),
    (Sys::Getsockname, Rights::GETSOCKNAME),
    (Sys::Getpeername, Rights::GETPEERNAME),
    (Sys::Connect, Rights::CONNECT),
    (Sys::Bind, Rights::BIND),
    (Sys::Listen, Rights::LISTEN),
];

/// Builds the Linux seccomp rules for `fds` under `policy`.
///
/// `status_fd`, if given, is the one descriptor `pread64` may read (the
/// kept `/proc/thread-self/status`, so [`status`](super::status) works
/// after entry).
pub fn seccomp_rules(fds: &[PlannedFd], policy: &Policy, status_fd: Option<RawFd>) -> SeccompRules {
    use linux_abi::*;
    let open = policy.mode == Mode::Open;
    let mut allow = BTreeMap::new();
    for &s in BASE_SYSCALLS {
        allow.insert(s, SysRule::Any);
    }
    // Checks that keep planned descriptors lacking `need` out.
    let lacking = |need: Rights, arg: u8| -> Vec<Cond> {
        let mut v: Vec<Cond> = fds
            .iter()
            .filter(|p| !p.rights.contains(need) && !p.rights.contains(Rights::EPHEMERAL))
            .map(|p| Cond::fd_ne(arg, p.fd))
            .collect();
        v.dedup();
        v
    };
    let with = |mut base: Vec<Cond>, extra: &[Cond]| -> Vec<Cond> {
        base.extend_from_slice(extra);
        base
    };
    let rule = |conds: Vec<Cond>| -> SysRule {
        if conds.is_empty() {
            SysRule::Any
        } else {
            SysRule::AnyOf(vec![conds])
        }
    };

    for &(sys, need) in FD_SYSCALLS {
        let wanted = match sys {
            Sys::Connect => open,
            Sys::Bind | Sys::Listen => policy.allow_bind,
            _ => true,
        };
        if !wanted {
            continue;
        }
        let mut conds = lacking(need, 0);
        if sys == Sys::Sendto && !open {
            // Restricted: no destination address (arg 4 is NULL), as
            // capability mode refuses sendto with an address on FreeBSD.
            conds.push(Cond {
                arg: 4,
                cmp: Cmp::Eq,
                value: 0,
                wide: true,
            });
        }
        allow.insert(sys, rule(conds));
    }

    // fcntl: F_GETFD always (debug builds check a descriptor before closing
    // it); F_GETFL/F_SETFL only on descriptors with FCNTL_FLAGS.
    let no_flags = lacking(Rights::FCNTL_FLAGS, 0);
    allow.insert(
        Sys::Fcntl,
        SysRule::AnyOf(vec![
            vec![Cond::dword(1, Cmp::Eq, F_GETFD)],
            with(no_flags.clone(), &[Cond::dword(1, Cmp::Eq, F_GETFL)]),
            with(no_flags.clone(), &[Cond::dword(1, Cmp::Eq, F_SETFL)]),
        ]),
    );

    // ioctl: FIONREAD on descriptors with IOCTL_FIONREAD, FIONBIO where
    // FCNTL_FLAGS (it is what std's set_nonblocking calls), the tap offload
    // ioctls only on planned tap descriptors.
    let mut ioctl = vec![
        with(
            lacking(Rights::IOCTL_FIONREAD, 0),
            &[Cond::dword(1, Cmp::Eq, FIONREAD)],
        ),
        with(no_flags, &[Cond::dword(1, Cmp::Eq, FIONBIO)]),
    ];
    for p in fds.iter().filter(|p| p.rights.contains(Rights::IOCTL_TAP)) {
        for req in [TUNSETOFFLOAD, TUNSETVNETHDRSZ] {
            ioctl.push(vec![Cond::fd_eq(0, p.fd), Cond::dword(1, Cmp::Eq, req)]);
        }
    }
    allow.insert(Sys::Ioctl, SysRule::AnyOf(ioctl));

    // socket: open mode any IPv4/IPv6 socket; restricted mode with bind
    // only TCP (a datagram socket could send anywhere with sendmsg).
    if open || policy.allow_bind {
        let groups = [AF_INET, AF_INET6]
            .iter()
            .map(|&af| {
                let mut g = vec![Cond::dword(0, Cmp::Eq, af)];
                if !open {
                    g.push(Cond::dword(1, Cmp::MaskedEq(SOCK_TYPE_MASK), SOCK_STREAM));
                }
                g
            })
            .collect();
        allow.insert(Sys::Socket, SysRule::AnyOf(groups));
    }

    // mprotect: never to make memory executable. glibc grows a thread's
    // malloc arena (any thread but the main one) with
    // mprotect(PROT_READ|PROT_WRITE); refused, every allocation that needs
    // more arena falls back to its own mmap/munmap.
    allow.insert(
        Sys::Mprotect,
        SysRule::AnyOf(vec![vec![Cond::dword(2, Cmp::MaskedEq(PROT_EXEC), 0)]]),
    );

    // newfstatat, open mode only: libslirp's DNS forwarder `stat`s
    // /etc/resolv.conf on a query once its 1 s cache has expired and drops
    // the query if the stat fails (it reuses the cached nameserver when
    // the file is unchanged). Only what glibc's stat() passes: a path
    // relative to AT_FDCWD (absolute in practice) and no flags. seccomp
    // cannot see the path, so this lets the process learn any path's
    // metadata (not its contents: Landlock and the missing openat keep
    // files closed).
    if open {
        allow.insert(
            Sys::Newfstatat,
            SysRule::AnyOf(vec![vec![
                Cond::dword(0, Cmp::Eq, AT_FDCWD),
                Cond::dword(3, Cmp::Eq, 0),
            ]]),
        );
    }

    if let Some(fd) = status_fd {
        allow.insert(Sys::Pread64, SysRule::AnyOf(vec![vec![Cond::fd_eq(0, fd)]]));
    }
    SeccompRules { allow }
}

/// What Landlock handles (refuses unless a rule allows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockRules {
    /// Every filesystem access, with no rule: no path can be opened,
    /// created, removed or executed.
    pub handle_fs: bool,
    /// TCP `bind`, with no rule.
    pub handle_bind_tcp: bool,
    /// TCP `connect`, allowed only to `connect_ports`.
    pub handle_connect_tcp: bool,
    /// Ports `connect` may reach when `handle_connect_tcp`.
    pub connect_ports: Vec<u16>,
    /// Scope abstract unix sockets and signals to the sandbox (ABI 6).
    pub scope: bool,
}

/// What Landlock handles under `policy`.
pub fn landlock_rules(policy: &Policy) -> LandlockRules {
    let open = policy.mode == Mode::Open;
    LandlockRules {
        handle_fs: true,
        handle_bind_tcp: !policy.allow_bind,
        handle_connect_tcp: !open || !policy.connect_ports.is_empty(),
        connect_ports: if open {
            policy.connect_ports.clone()
        } else {
            Vec::new()
        },
        scope: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd(fd: RawFd, rights: Rights) -> PlannedFd {
        PlannedFd {
            fd,
            rights,
            label: format!("fd {fd}"),
        }
    }

    fn args(a0: u64, a1: u64) -> [u64; 6] {
        [a0, a1, 0, 0, 0, 0]
    }

    #[test]
    fn capsicum_read_only() {
        let l = capsicum_limits(Rights::READ_ONLY);
        assert_eq!(
            l.rights,
            vec![CapRight::Read, CapRight::Event, CapRight::Fstat]
        );
        assert!(l.ioctls.is_empty());
        assert!(l.fcntls.is_empty());
    }

    #[test]
    fn capsicum_listener_carries_accepted_socket_rights() {
        let l = capsicum_limits(Rights::LISTENER);
        for r in [
            CapRight::Read,
            CapRight::Write,
            CapRight::Event,
            CapRight::Accept,
            CapRight::Setsockopt,
            CapRight::Shutdown,
            CapRight::Fcntl,
            CapRight::Ioctl,
        ] {
            assert!(l.rights.contains(&r), "{r:?} missing");
        }
        assert!(!l.rights.contains(&CapRight::Connect));
        assert!(!l.rights.contains(&CapRight::Bind));
        assert_eq!(l.ioctls, vec![CapIoctl::Fionread]);
        assert_eq!(l.fcntls, vec![CapFcntl::GetFL, CapFcntl::SetFL]);
        // RECV/SEND fold into READ/WRITE: no duplicates.
        let mut sorted = l.rights.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), l.rights.len());
    }

    #[test]
    fn capsicum_poller_and_tap() {
        let l = capsicum_limits(Rights::POLLER);
        assert_eq!(
            l.rights,
            vec![CapRight::KqueueEvent, CapRight::KqueueChange]
        );
        let l = capsicum_limits(Rights::READ | Rights::WRITE | Rights::EVENT | Rights::IOCTL_TAP);
        assert!(l.rights.contains(&CapRight::Ioctl));
        assert_eq!(l.ioctls, vec![CapIoctl::Fionbio]);
        assert!(capsicum_limits(Rights::empty()).rights.is_empty());
    }

    #[test]
    fn read_only_fd_cannot_write_or_send() {
        let plan = [fd(5, Rights::READ_ONLY), fd(6, Rights::SOCKET)];
        let r = seccomp_rules(&plan, &Policy::restricted(), None);
        assert!(r.permits(Sys::Read, args(5, 0)));
        assert!(!r.permits(Sys::Write, args(5, 0)));
        assert!(!r.permits(Sys::Writev, args(5, 0)));
        assert!(!r.permits(Sys::Sendto, args(5, 0)));
        assert!(!r.permits(Sys::Sendmsg, args(5, 0)));
        assert!(!r.permits(Sys::Recvfrom, args(5, 0)));
        assert!(r.permits(Sys::Write, args(6, 0)));
        assert!(r.permits(Sys::Sendto, args(6, 0)));
        assert!(r.permits(Sys::Recvmsg, args(6, 0)));
        // Unplanned descriptors (stderr, sockets made later) keep working.
        assert!(r.permits(Sys::Write, args(2, 0)));
        assert!(r.permits(Sys::Accept, args(9, 0)));
        assert!(!r.permits(Sys::Accept, args(6, 0)));
    }

    #[test]
    fn write_only_fd_cannot_read() {
        let r = seccomp_rules(&[fd(7, Rights::WRITE_ONLY)], &Policy::restricted(), None);
        assert!(!r.permits(Sys::Read, args(7, 0)));
        assert!(!r.permits(Sys::Readv, args(7, 0)));
        assert!(r.permits(Sys::Write, args(7, 0)));
    }

    #[test]
    fn restricted_has_no_connect_socket_bind_and_no_addressed_sendto() {
        let r = seccomp_rules(&[], &Policy::restricted(), None);
        for s in [
            Sys::Connect,
            Sys::Socket,
            Sys::Bind,
            Sys::Listen,
            Sys::Pread64,
        ] {
            assert!(!r.allows(s), "{s} allowed");
        }
        assert!(r.permits(Sys::Sendto, [3, 0, 0, 0, 0, 0]));
        assert!(!r.permits(Sys::Sendto, [3, 0, 0, 0, 0x7fff_0000_1000, 16]));
        assert!(!r.permits(Sys::Sendto, [3, 0, 0, 0, 0x1_0000_0000, 16]));
    }

    #[test]
    fn restricted_bind_allows_only_tcp_sockets() {
        let p = Policy {
            allow_bind: true,
            ..Policy::restricted()
        };
        let r = seccomp_rules(&[], &p, None);
        assert!(r.allows(Sys::Bind) && r.allows(Sys::Listen));
        assert!(!r.allows(Sys::Connect));
        use linux_abi::*;
        assert!(r.permits(Sys::Socket, args(AF_INET, SOCK_STREAM | 0o4000)));
        assert!(r.permits(Sys::Socket, args(AF_INET6, SOCK_STREAM)));
        assert!(!r.permits(Sys::Socket, args(AF_INET, 2)));
        assert!(!r.permits(Sys::Socket, args(1, SOCK_STREAM)));
    }

    #[test]
    fn open_mode_allows_inet_sockets_and_connect() {
        let r = seccomp_rules(&[fd(4, Rights::READ_ONLY)], &Policy::open(), None);
        use linux_abi::*;
        assert!(r.permits(Sys::Socket, args(AF_INET, 2)));
        assert!(r.permits(Sys::Socket, args(AF_INET6, 1)));
        assert!(!r.permits(Sys::Socket, args(1, 1)), "AF_UNIX");
        assert!(!r.permits(Sys::Socket, args(16, 3)), "AF_NETLINK");
        assert!(r.permits(Sys::Connect, args(9, 0)));
        assert!(!r.permits(Sys::Connect, args(4, 0)));
        assert!(r.permits(Sys::Sendto, [9, 0, 0, 0, 0x7fff_0000_1000, 16]));
        assert!(!r.allows(Sys::Bind));
    }

    #[test]
    fn fcntl_and_ioctl_checks() {
        use linux_abi::*;
        let plan = [fd(3, Rights::READ_ONLY), fd(4, Rights::LISTENER)];
        let r = seccomp_rules(&plan, &Policy::restricted(), None);
        assert!(r.permits(Sys::Fcntl, args(3, F_GETFD)));
        assert!(!r.permits(Sys::Fcntl, args(3, F_GETFL)));
        assert!(!r.permits(Sys::Fcntl, args(3, F_SETFL)));
        assert!(r.permits(Sys::Fcntl, args(4, F_SETFL)));
        assert!(r.permits(Sys::Fcntl, args(9, F_GETFL)));
        assert!(!r.permits(Sys::Fcntl, args(4, F_SETFD)));
        assert!(!r.permits(Sys::Fcntl, args(4, 0)), "F_DUPFD");
        assert!(r.permits(Sys::Ioctl, args(4, FIONREAD)));
        assert!(!r.permits(Sys::Ioctl, args(3, FIONREAD)));
        assert!(r.permits(Sys::Ioctl, args(4, FIONBIO)));
        assert!(!r.permits(Sys::Ioctl, args(4, TUNSETOFFLOAD)));
        assert!(!r.permits(Sys::Ioctl, args(4, 0x5401)), "TCGETS");
    }

    #[test]
    fn tap_ioctls_only_on_tap() {
        use linux_abi::*;
        let tap = Rights::READ | Rights::WRITE | Rights::EVENT | Rights::IOCTL_TAP;
        let r = seccomp_rules(&[fd(8, tap)], &Policy::restricted(), None);
        assert!(r.permits(Sys::Ioctl, args(8, TUNSETOFFLOAD)));
        assert!(r.permits(Sys::Ioctl, args(8, TUNSETVNETHDRSZ)));
        assert!(!r.permits(Sys::Ioctl, args(9, TUNSETOFFLOAD)));
    }

    #[test]
    fn mprotect_never_executable() {
        let r = seccomp_rules(&[], &Policy::restricted(), None);
        let call = |prot: u64| [0x7f00_0000_0000, 135_168, prot, 0, 0, 0];
        assert!(r.permits(Sys::Mprotect, call(3)), "PROT_READ|PROT_WRITE");
        assert!(r.permits(Sys::Mprotect, call(0)), "PROT_NONE");
        assert!(!r.permits(Sys::Mprotect, call(5)), "PROT_READ|PROT_EXEC");
        assert!(!r.permits(Sys::Mprotect, call(7)));
    }

    #[test]
    fn stat_only_in_open_mode_and_only_as_stat() {
        use linux_abi::*;
        let r = seccomp_rules(&[], &Policy::restricted(), None);
        assert!(!r.allows(Sys::Newfstatat));
        let r = seccomp_rules(&[], &Policy::open(), None);
        // stat("/etc/resolv.conf", &st) as glibc makes it.
        let stat = [
            AT_FDCWD | 0xffff_ffff_0000_0000,
            0x7f00_0000_1000,
            0x7ffc_0000_0000,
            0,
            0,
            0,
        ];
        assert!(r.permits(Sys::Newfstatat, stat));
        let mut fstat = stat;
        fstat[0] = 3;
        fstat[3] = 0x1000; // AT_EMPTY_PATH: fstat of a descriptor
        assert!(!r.permits(Sys::Newfstatat, fstat));
        let mut lstat = stat;
        lstat[3] = 0x100; // AT_SYMLINK_NOFOLLOW
        assert!(!r.permits(Sys::Newfstatat, lstat));
    }

    #[test]
    fn status_fd_is_the_only_pread() {
        let r = seccomp_rules(&[], &Policy::restricted(), Some(11));
        assert!(r.permits(Sys::Pread64, args(11, 0)));
        assert!(!r.permits(Sys::Pread64, args(12, 0)));
    }

    #[test]
    fn rules_have_no_empty_groups() {
        let plan = [fd(3, Rights::READ_ONLY), fd(4, Rights::SOCKET)];
        for p in [Policy::restricted(), Policy::open()] {
            for rule in seccomp_rules(&plan, &p, Some(5)).allow.values() {
                if let SysRule::AnyOf(g) = rule {
                    assert!(!g.is_empty() && g.iter().all(|c| !c.is_empty()));
                }
            }
        }
    }

    #[test]
    fn landlock_by_policy() {
        let r = landlock_rules(&Policy::restricted());
        assert!(r.handle_fs && r.handle_bind_tcp && r.handle_connect_tcp);
        assert!(r.connect_ports.is_empty());
        let r = landlock_rules(&Policy::open());
        assert!(!r.handle_connect_tcp && r.handle_bind_tcp);
        let r = landlock_rules(&Policy {
            connect_ports: vec![53, 443],
            allow_bind: true,
            ..Policy::open()
        });
        assert!(r.handle_connect_tcp && !r.handle_bind_tcp);
        assert_eq!(r.connect_ports, vec![53, 443]);
        // Ports are ignored in restricted mode: nothing may connect.
        let r = landlock_rules(&Policy {
            connect_ports: vec![53],
            ..Policy::restricted()
        });
        assert!(r.handle_connect_tcp && r.connect_ports.is_empty());
    }

    #[test]
    fn plan_merges_duplicates() {
        let mut p = Plan::new();
        p.add_raw(3, Rights::READ, "a")
            .add_raw(3, Rights::EVENT, "b");
        assert_eq!(p.fds().len(), 1);
        assert_eq!(p.rights_of(3), Some(Rights::READ | Rights::EVENT));
        assert_eq!(p.rights_of(4), None);
    }
}
