//! The Linux seccomp filter as data: which syscalls are allowed, with which
//! argument checks, for a plan and a policy. Platform-independent and
//! unit-tested; `super::super::linux` turns it into BPF. The vocabulary
//! is in `syscalls.rs`, the condition model in `condition.rs`, the fixed
//! tables in `tables.rs`.

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use super::condition::{Cmp, Cond, SeccompRules, SysRule};
use super::linux_abi;
use super::syscalls::Sys;
use super::tables::{BASE_SYSCALLS, FATAL_SIGNALS, FD_SYSCALLS, SOCKET_OPTIONS};
use crate::rights::Rights;
use crate::sandbox::plan::{Mode, PlannedFd, Policy};

/// Facts about the entering process that rules are keyed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessFacts {
    /// The process id: `tgkill` may target this process only (glibc's
    /// `abort` sends `SIGABRT` with it). `None`: no `tgkill` at all.
    pub pid: Option<u32>,
    /// The one descriptor `pread64` may read: the kept
    /// `/proc/thread-self/status`, so [`status`](crate::sandbox::status)
    /// works after entry.
    pub status_fd: Option<RawFd>,
    /// The placeholder planned numbers are retired to
    /// ([`closing`](crate::closing)): the one descriptor `dup3` may copy,
    /// and only onto a planned number. `None`: no `dup3` at all.
    pub placeholder: Option<RawFd>,
}

/// Builds the Linux seccomp rules for `fds` under `policy`: one concern
/// per step, each step's reasons beside it.
pub fn seccomp_rules(fds: &[PlannedFd], policy: &Policy, process: ProcessFacts) -> SeccompRules {
    let mut b = Builder {
        fds,
        policy,
        process,
        open: policy.mode == Mode::Open,
        allow: BTreeMap::new(),
        enosys: Vec::new(),
    };
    for &s in BASE_SYSCALLS {
        b.allow.insert(s, SysRule::Any);
    }
    b.descriptor_calls();
    b.closing();
    b.processes();
    b.sendmsg();
    b.fcntl_and_ioctl();
    b.sockets();
    b.memory();
    b.crashes();
    b.files_and_names();
    b.threads();
    SeccompRules {
        allow: b.allow,
        enosys: b.enosys,
    }
}

/// `base` and then `extra`: one AND group.
fn with(mut base: Vec<Cond>, extra: &[Cond]) -> Vec<Cond> {
    base.extend_from_slice(extra);
    base
}

/// Always if `conds` is empty, else when they all hold.
fn rule(conds: Vec<Cond>) -> SysRule {
    if conds.is_empty() {
        SysRule::Any
    } else {
        SysRule::AnyOf(vec![conds])
    }
}

/// The rules as they are built.
struct Builder<'a> {
    fds: &'a [PlannedFd],
    policy: &'a Policy,
    process: ProcessFacts,
    open: bool,
    allow: BTreeMap<Sys, SysRule>,
    enosys: Vec<Sys>,
}

impl Builder<'_> {
    /// Checks that keep planned descriptors lacking `need` out (argument
    /// `arg` is none of them).
    fn lacking(&self, need: Rights, arg: u8) -> Vec<Cond> {
        let mut v: Vec<Cond> = self
            .fds
            .iter()
            .filter(|p| !p.rights.contains(need) && !p.rights.contains(Rights::EPHEMERAL))
            .map(|p| Cond::fd_ne(arg, p.fd))
            .collect();
        v.dedup();
        v
    }

    /// The planned descriptors that keep their number (not EPHEMERAL).
    fn kept(&self) -> impl Iterator<Item = &PlannedFd> + '_ {
        self.fds
            .iter()
            .filter(|p| !p.rights.contains(Rights::EPHEMERAL))
    }

    /// The descriptor syscalls ([`FD_SYSCALLS`]): refused on a planned
    /// descriptor without the right.
    fn descriptor_calls(&mut self) {
        use linux_abi::MSG_FASTOPEN;
        for &(sys, need) in FD_SYSCALLS {
            let wanted = match sys {
                Sys::Connect => self.open,
                Sys::Bind | Sys::Listen => self.policy.allow_bind,
                _ => true,
            };
            if !wanted {
                continue;
            }
            let mut conds = self.lacking(need, 0);
            match sys {
                Sys::Sendto => {
                    // TCP Fast Open connects without connect(): never.
                    conds.push(Cond::dword(3, Cmp::MaskedEq(MSG_FASTOPEN), 0));
                    if !self.open {
                        // Restricted: no destination address (arg 4 is
                        // NULL), as capability mode refuses sendto with an
                        // address on FreeBSD.
                        conds.push(Cond {
                            arg: 4,
                            cmp: Cmp::Eq,
                            value: 0,
                            wide: true,
                        });
                    }
                }
                Sys::Setsockopt => {
                    // Only the options libslirp and std set.
                    let groups = SOCKET_OPTIONS
                        .iter()
                        .map(|&(level, name)| {
                            with(
                                conds.clone(),
                                &[
                                    Cond::dword(1, Cmp::Eq, level),
                                    Cond::dword(2, Cmp::Eq, name),
                                ],
                            )
                        })
                        .collect();
                    self.allow.insert(sys, SysRule::AnyOf(groups));
                    continue;
                }
                _ => {}
            }
            self.allow.insert(sys, rule(conds));
        }
    }

    /// close: never of a planned number (or the placeholder), which would
    /// free the number for a later socket to take with these rules; the
    /// library retires such a number with dup3 instead (crate::closing).
    /// Refused, the descriptor stays open. EPHEMERAL ones close as usual.
    fn closing(&mut self) {
        let mut kept: Vec<Cond> = self.kept().map(|p| Cond::fd_ne(0, p.fd)).collect();
        kept.extend(self.process.placeholder.map(|fd| Cond::fd_ne(0, fd)));
        kept.sort_by_key(|c| c.value);
        kept.dedup();
        self.allow.insert(Sys::Close, rule(kept));
        if let Some(ph) = self.process.placeholder {
            let groups: Vec<Vec<Cond>> = self
                .kept()
                .map(|p| vec![Cond::fd_eq(0, ph), Cond::fd_eq(1, p.fd)])
                .collect();
            if !groups.is_empty() {
                self.allow.insert(Sys::Dup3, SysRule::AnyOf(groups));
            }
        }
    }

    /// Process descriptors (PROCESS): waitid(P_PIDFD, fd) to reap, and
    /// pidfd_send_signal(fd, SIGTERM or SIGKILL) to end, the child each
    /// names; never a pid (wait4, kill).
    fn processes(&mut self) {
        use linux_abi::{P_PIDFD, SIGKILL, SIGTERM};
        let procs: Vec<RawFd> = self
            .fds
            .iter()
            .filter(|p| p.rights.contains(Rights::PROCESS))
            .map(|p| p.fd)
            .collect();
        if procs.is_empty() {
            return;
        }
        let wait = procs
            .iter()
            .map(|&fd| vec![Cond::dword(0, Cmp::Eq, P_PIDFD), Cond::fd_eq(1, fd)])
            .collect();
        self.allow.insert(Sys::Waitid, SysRule::AnyOf(wait));
        let kill = procs
            .iter()
            .flat_map(|&fd| {
                [SIGTERM, SIGKILL].map(|sig| vec![Cond::fd_eq(0, fd), Cond::dword(1, Cmp::Eq, sig)])
            })
            .collect();
        self.allow
            .insert(Sys::PidfdSendSignal, SysRule::AnyOf(kill));
    }

    /// sendmsg: only on the planned descriptors given SENDMSG (vhost-user's
    /// connected unix stream sockets, which carry descriptors); never on a
    /// socket made after entry, where `msg_name` could name any
    /// destination.
    fn sendmsg(&mut self) {
        let groups: Vec<Vec<Cond>> = self
            .kept()
            .filter(|p| p.rights.contains(Rights::SENDMSG))
            .map(|p| vec![Cond::fd_eq(0, p.fd)])
            .collect();
        if !groups.is_empty() {
            self.allow.insert(Sys::Sendmsg, SysRule::AnyOf(groups));
        }
    }

    /// fcntl: F_GETFD always (debug builds check a descriptor before
    /// closing it); F_GETFL/F_SETFL only on descriptors with FCNTL_FLAGS.
    /// ioctl: FIONREAD on descriptors with IOCTL_FIONREAD, FIONBIO where
    /// FCNTL_FLAGS (it is what std's set_nonblocking calls), the tap
    /// offload and netmap ioctls only on the planned descriptors of those
    /// kinds.
    fn fcntl_and_ioctl(&mut self) {
        use linux_abi::{
            FIONBIO, FIONREAD, F_GETFD, F_GETFL, F_SETFL, NIOCCTRL, NIOCRXSYNC, NIOCTXSYNC,
            TUNSETOFFLOAD, TUNSETVNETHDRSZ,
        };
        let no_flags = self.lacking(Rights::FCNTL_FLAGS, 0);
        self.allow.insert(
            Sys::Fcntl,
            SysRule::AnyOf(vec![
                vec![Cond::dword(1, Cmp::Eq, F_GETFD)],
                with(no_flags.clone(), &[Cond::dword(1, Cmp::Eq, F_GETFL)]),
                with(no_flags.clone(), &[Cond::dword(1, Cmp::Eq, F_SETFL)]),
            ]),
        );
        let mut ioctl = vec![
            with(
                self.lacking(Rights::IOCTL_FIONREAD, 0),
                &[Cond::dword(1, Cmp::Eq, FIONREAD)],
            ),
            with(no_flags, &[Cond::dword(1, Cmp::Eq, FIONBIO)]),
        ];
        let planned = |right: Rights, reqs: &[u64]| -> Vec<Vec<Cond>> {
            self.fds
                .iter()
                .filter(|p| p.rights.contains(right))
                .flat_map(|p| {
                    reqs.iter()
                        .map(|&req| vec![Cond::fd_eq(0, p.fd), Cond::dword(1, Cmp::Eq, req)])
                })
                .collect()
        };
        ioctl.extend(planned(
            Rights::IOCTL_TAP,
            &[TUNSETOFFLOAD, TUNSETVNETHDRSZ],
        ));
        ioctl.extend(planned(
            Rights::IOCTL_NETMAP,
            &[NIOCTXSYNC, NIOCRXSYNC, NIOCCTRL],
        ));
        self.allow.insert(Sys::Ioctl, SysRule::AnyOf(ioctl));
    }

    /// socket: open mode makes what libslirp makes: TCP and UDP over IPv4
    /// and IPv6 (protocol 0) and the unprivileged ICMP "ping" socket; never
    /// a raw, packet, netlink or unix socket. Restricted mode with bind:
    /// TCP only (a datagram socket could reach anywhere).
    fn sockets(&mut self) {
        use linux_abi::{
            AF_INET, AF_INET6, IPPROTO_ICMP, IPPROTO_IP, SOCK_DGRAM, SOCK_STREAM, SOCK_TYPE_MASK,
        };
        if !(self.open || self.policy.allow_bind) {
            return;
        }
        let kind = |af: u64, ty: u64, proto: u64| {
            vec![
                Cond::dword(0, Cmp::Eq, af),
                Cond::dword(1, Cmp::MaskedEq(SOCK_TYPE_MASK), ty),
                Cond::dword(2, Cmp::Eq, proto),
            ]
        };
        let mut groups = vec![
            kind(AF_INET, SOCK_STREAM, IPPROTO_IP),
            kind(AF_INET6, SOCK_STREAM, IPPROTO_IP),
        ];
        if self.open {
            groups.push(kind(AF_INET, SOCK_DGRAM, IPPROTO_IP));
            groups.push(kind(AF_INET6, SOCK_DGRAM, IPPROTO_IP));
            groups.push(kind(AF_INET, SOCK_DGRAM, IPPROTO_ICMP));
        }
        self.allow.insert(Sys::Socket, SysRule::AnyOf(groups));
    }

    /// mmap and mprotect: never to make memory executable. glibc grows a
    /// thread's malloc arena (any thread but the main one) with
    /// mprotect(PROT_READ|PROT_WRITE); refused, every allocation that
    /// needs more arena falls back to its own mmap/munmap.
    fn memory(&mut self) {
        use linux_abi::PROT_EXEC;
        for sys in [Sys::Mmap, Sys::Mprotect] {
            self.allow.insert(
                sys,
                SysRule::AnyOf(vec![vec![Cond::dword(2, Cmp::MaskedEq(PROT_EXEC), 0)]]),
            );
        }
    }

    /// A crash must end the process, not spin: Rust's SIGSEGV/SIGBUS
    /// handler restores the default action and returns so the fault
    /// repeats and kills; glibc's abort() sends SIGABRT to its own thread
    /// with tgkill and, should that return, resets the handler and tries
    /// again. Both are allowed for the fatal signals only, and tgkill only
    /// within this process.
    fn crashes(&mut self) {
        let fatal = |arg: u8| -> Vec<Vec<Cond>> {
            FATAL_SIGNALS
                .iter()
                .map(|&s| vec![Cond::dword(arg, Cmp::Eq, s)])
                .collect()
        };
        self.allow
            .insert(Sys::RtSigaction, SysRule::AnyOf(fatal(0)));
        if let Some(pid) = self.process.pid {
            let groups = fatal(2)
                .into_iter()
                .map(|g| with(vec![Cond::dword(0, Cmp::Eq, u64::from(pid))], &g))
                .collect();
            self.allow.insert(Sys::Tgkill, SysRule::AnyOf(groups));
        }
    }

    /// newfstatat, open mode only: libslirp's DNS forwarder `stat`s
    /// /etc/resolv.conf on a query once its 1 s cache has expired and
    /// drops the query if the stat fails (it reuses the cached nameserver
    /// when the file is unchanged). Only what glibc's stat() passes: a
    /// path relative to AT_FDCWD (absolute in practice) and no flags.
    /// seccomp cannot see the path, so this lets the process learn any
    /// path's metadata (not its contents: Landlock and the missing openat
    /// keep files closed). pread64 on the kept status file; naming a
    /// thread (std names the threads it spawns) harms no one.
    fn files_and_names(&mut self) {
        use linux_abi::{AT_FDCWD, PR_GET_NAME, PR_SET_NAME};
        if self.open {
            self.allow.insert(
                Sys::Newfstatat,
                SysRule::AnyOf(vec![vec![
                    Cond::dword(0, Cmp::Eq, AT_FDCWD),
                    Cond::dword(3, Cmp::Eq, 0),
                ]]),
            );
        }
        if let Some(fd) = self.process.status_fd {
            self.allow
                .insert(Sys::Pread64, SysRule::AnyOf(vec![vec![Cond::fd_eq(0, fd)]]));
        }
        self.allow.insert(
            Sys::Prctl,
            SysRule::AnyOf(vec![
                vec![Cond::dword(0, Cmp::Eq, PR_SET_NAME)],
                vec![Cond::dword(0, Cmp::Eq, PR_GET_NAME)],
            ]),
        );
    }

    /// Threads after entry, if asked for: `clone` with CLONE_THREAD only
    /// (never a new process), and what a new thread does first (glibc's
    /// robust futex list and rseq, std's affinity read). `clone3` answers
    /// ENOSYS so glibc falls back to `clone`, whose flags can be checked.
    fn threads(&mut self) {
        use linux_abi::CLONE_THREAD;
        if !self.policy.allow_threads {
            return;
        }
        self.allow.insert(
            Sys::Clone,
            SysRule::AnyOf(vec![vec![Cond::dword(
                0,
                Cmp::MaskedEq(CLONE_THREAD),
                CLONE_THREAD,
            )]]),
        );
        for sys in [Sys::SetRobustList, Sys::Rseq, Sys::SchedGetaffinity] {
            self.allow.insert(sys, SysRule::Any);
        }
        self.enosys.push(Sys::Clone3);
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

    fn status(fd: RawFd) -> ProcessFacts {
        ProcessFacts {
            status_fd: Some(fd),
            ..ProcessFacts::default()
        }
    }

    #[test]
    fn read_only_fd_cannot_write_or_send() {
        let plan = [fd(5, Rights::READ_ONLY), fd(6, Rights::SOCKET)];
        let r = seccomp_rules(&plan, &Policy::restricted(), ProcessFacts::default());
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
        let r = seccomp_rules(
            &[fd(7, Rights::WRITE_ONLY)],
            &Policy::restricted(),
            ProcessFacts::default(),
        );
        assert!(!r.permits(Sys::Read, args(7, 0)));
        assert!(!r.permits(Sys::Readv, args(7, 0)));
        assert!(r.permits(Sys::Write, args(7, 0)));
    }

    #[test]
    fn restricted_has_no_connect_socket_bind_and_no_addressed_sendto() {
        let r = seccomp_rules(&[], &Policy::restricted(), ProcessFacts::default());
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
        let r = seccomp_rules(&[], &p, ProcessFacts::default());
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
        let r = seccomp_rules(
            &[fd(4, Rights::READ_ONLY)],
            &Policy::open(),
            ProcessFacts::default(),
        );
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
        let r = seccomp_rules(&plan, &Policy::restricted(), ProcessFacts::default());
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
        let r = seccomp_rules(
            &[fd(8, tap)],
            &Policy::restricted(),
            ProcessFacts::default(),
        );
        assert!(r.permits(Sys::Ioctl, args(8, TUNSETOFFLOAD)));
        assert!(r.permits(Sys::Ioctl, args(8, TUNSETVNETHDRSZ)));
        assert!(!r.permits(Sys::Ioctl, args(9, TUNSETOFFLOAD)));
    }

    #[test]
    fn mprotect_never_executable() {
        let r = seccomp_rules(&[], &Policy::restricted(), ProcessFacts::default());
        let call = |prot: u64| [0x7f00_0000_0000, 135_168, prot, 0, 0, 0];
        assert!(r.permits(Sys::Mprotect, call(3)), "PROT_READ|PROT_WRITE");
        assert!(r.permits(Sys::Mprotect, call(0)), "PROT_NONE");
        assert!(!r.permits(Sys::Mprotect, call(5)), "PROT_READ|PROT_EXEC");
        assert!(!r.permits(Sys::Mprotect, call(7)));
    }

    #[test]
    fn stat_only_in_open_mode_and_only_as_stat() {
        use linux_abi::*;
        let r = seccomp_rules(&[], &Policy::restricted(), ProcessFacts::default());
        assert!(!r.allows(Sys::Newfstatat));
        let r = seccomp_rules(&[], &Policy::open(), ProcessFacts::default());
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
        let r = seccomp_rules(&[], &Policy::restricted(), status(11));
        assert!(r.permits(Sys::Pread64, args(11, 0)));
        assert!(!r.permits(Sys::Pread64, args(12, 0)));
    }

    #[test]
    fn rules_have_no_empty_groups() {
        let plan = [fd(3, Rights::READ_ONLY), fd(4, Rights::SOCKET)];
        for p in [Policy::restricted(), Policy::open()] {
            for rule in seccomp_rules(&plan, &p, status(5)).allow.values() {
                if let SysRule::AnyOf(g) = rule {
                    assert!(!g.is_empty() && g.iter().all(|c| !c.is_empty()));
                }
            }
        }
    }

    #[test]
    fn mmap_never_executable() {
        for p in [Policy::restricted(), Policy::open()] {
            let r = seccomp_rules(&[], &p, ProcessFacts::default());
            // mmap(NULL, len, prot, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)
            let call = |prot: u64| [0, 4096, prot, 0x22, u64::MAX, 0];
            assert!(r.permits(Sys::Mmap, call(3)), "PROT_READ|PROT_WRITE");
            assert!(r.permits(Sys::Mmap, call(0)), "PROT_NONE");
            assert!(!r.permits(Sys::Mmap, call(4)), "PROT_EXEC");
            assert!(!r.permits(Sys::Mmap, call(7)), "PROT_READ|WRITE|EXEC");
        }
    }

    #[test]
    fn sendmsg_only_where_planned() {
        let plan = [
            fd(6, Rights::SOCKET),
            fd(7, Rights::SOCKET | Rights::SENDMSG),
        ];
        for p in [Policy::restricted(), Policy::open()] {
            let r = seccomp_rules(&plan, &p, ProcessFacts::default());
            assert!(r.permits(Sys::Sendmsg, args(7, 0)), "{p:?}");
            for fd in [6, 9] {
                assert!(!r.permits(Sys::Sendmsg, args(fd, 0)), "{fd} {p:?}");
            }
        }
    }

    #[test]
    fn sendmsg_never_and_fast_open_never() {
        use linux_abi::MSG_FASTOPEN;
        let plan = [fd(6, Rights::SOCKET)];
        for p in [
            Policy::restricted(),
            Policy::open(),
            Policy {
                allow_bind: true,
                ..Policy::restricted()
            },
        ] {
            let r = seccomp_rules(&plan, &p, ProcessFacts::default());
            assert!(!r.allows(Sys::Sendmsg), "{p:?}");
            for fd in [6, 9] {
                assert!(r.permits(Sys::Sendto, [fd, 0, 1, 0, 0, 0]));
                assert!(
                    r.permits(Sys::Sendto, [fd, 0, 1, 0x4040, 0, 0]),
                    "MSG_DONTWAIT|MSG_NOSIGNAL"
                );
                assert!(!r.permits(Sys::Sendto, [fd, 0, 1, MSG_FASTOPEN, 0, 0]));
                assert!(!r.permits(
                    Sys::Sendto,
                    [fd, 0, 1, MSG_FASTOPEN | 0x40, 0x7fff_0000_1000, 16]
                ));
            }
        }
    }

    #[test]
    fn setsockopt_only_what_libslirp_sets() {
        let plan = [fd(3, Rights::READ_ONLY), fd(4, Rights::LISTENER)];
        for p in [Policy::restricted(), Policy::open()] {
            let r = seccomp_rules(&plan, &p, ProcessFacts::default());
            let set = |fd: u64, level: u64, name: u64| [fd, level, name, 0, 4, 0];
            for &(level, name) in SOCKET_OPTIONS {
                assert!(r.permits(Sys::Setsockopt, set(9, level, name)));
                assert!(r.permits(Sys::Setsockopt, set(4, level, name)));
                assert!(
                    !r.permits(Sys::Setsockopt, set(3, level, name)),
                    "planned without the right"
                );
            }
            // SO_MARK, SO_BINDTODEVICE, IP_TRANSPARENT, SO_ATTACH_FILTER,
            // SO_SNDBUFFORCE, IP_HDRINCL.
            for (level, name) in [(1, 36), (1, 25), (0, 19), (1, 26), (1, 32), (0, 3)] {
                assert!(
                    !r.permits(Sys::Setsockopt, set(9, level, name)),
                    "{level}/{name}"
                );
            }
        }
    }

    #[test]
    fn open_mode_sockets_are_what_libslirp_makes() {
        use linux_abi::*;
        let r = seccomp_rules(&[], &Policy::open(), ProcessFacts::default());
        let sock = |af, ty, proto| [af, ty, proto, 0, 0, 0];
        assert!(r.permits(Sys::Socket, sock(AF_INET, SOCK_STREAM | 0o2000000, 0)));
        assert!(r.permits(Sys::Socket, sock(AF_INET6, SOCK_DGRAM, 0)));
        assert!(r.permits(Sys::Socket, sock(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)));
        assert!(
            !r.permits(Sys::Socket, sock(AF_INET, 3, 1)),
            "SOCK_RAW/ICMP"
        );
        assert!(
            !r.permits(Sys::Socket, sock(AF_INET, 3, 255)),
            "SOCK_RAW/RAW"
        );
        assert!(
            !r.permits(Sys::Socket, sock(AF_INET6, 3, 58)),
            "SOCK_RAW/ICMPv6"
        );
        assert!(!r.permits(Sys::Socket, sock(17, 3, 0x300)), "AF_PACKET");
        assert!(
            !r.permits(Sys::Socket, sock(AF_INET, SOCK_STREAM, 132)),
            "SCTP"
        );
        assert!(!r.permits(Sys::Socket, sock(AF_INET6, SOCK_DGRAM, IPPROTO_ICMP)));
    }

    #[test]
    fn a_process_descriptor_may_be_reaped_and_killed_and_nothing_else() {
        use linux_abi::{P_PIDFD, SIGKILL, SIGTERM};
        let plan = [fd(5, Rights::PROCESS), fd(6, Rights::SOCKET)];
        for p in [Policy::restricted(), Policy::open()] {
            let r = seccomp_rules(&plan, &p, ProcessFacts::default());
            assert!(r.permits(Sys::Waitid, [P_PIDFD, 5, 0x1000, 4, 0, 0]));
            assert!(!r.permits(Sys::Waitid, [P_PIDFD, 6, 0x1000, 4, 0, 0]));
            assert!(!r.permits(Sys::Waitid, [1, 5, 0x1000, 4, 0, 0]), "P_PID");
            assert!(!r.permits(Sys::Waitid, [0, 0, 0x1000, 4, 0, 0]), "P_ALL");
            assert!(r.permits(Sys::PidfdSendSignal, [5, SIGKILL, 0, 0, 0, 0]));
            assert!(r.permits(Sys::PidfdSendSignal, [5, SIGTERM, 0, 0, 0, 0]));
            assert!(!r.permits(Sys::PidfdSendSignal, [5, 10, 0, 0, 0, 0]));
            assert!(!r.permits(Sys::PidfdSendSignal, [6, SIGKILL, 0, 0, 0, 0]));
        }
        let r = seccomp_rules(&plan[1..], &Policy::restricted(), ProcessFacts::default());
        assert!(!r.allows(Sys::Waitid) && !r.allows(Sys::PidfdSendSignal));
    }

    #[test]
    fn planned_numbers_are_retired_never_closed() {
        let plan = [
            fd(5, Rights::SOCKET),
            fd(6, Rights::READ | Rights::WRITE | Rights::EVENT),
            fd(7, Rights::LISTENER | Rights::EPHEMERAL),
        ];
        let facts = ProcessFacts {
            placeholder: Some(9),
            ..ProcessFacts::default()
        };
        for p in [Policy::restricted(), Policy::open()] {
            let r = seccomp_rules(&plan, &p, facts);
            assert!(!r.permits(Sys::Close, args(5, 0)), "a planned socket");
            assert!(!r.permits(Sys::Close, args(6, 0)), "a planned tap");
            assert!(!r.permits(Sys::Close, args(9, 0)), "the placeholder");
            assert!(r.permits(Sys::Close, args(7, 0)), "an ephemeral one");
            assert!(r.permits(Sys::Close, args(100, 0)), "one made after entry");
            assert!(r.permits(Sys::Dup3, [9, 5, 0x80000, 0, 0, 0]));
            assert!(r.permits(Sys::Dup3, [9, 6, 0x80000, 0, 0, 0]));
            assert!(!r.permits(Sys::Dup3, [9, 7, 0, 0, 0, 0]), "not planned");
            assert!(!r.permits(Sys::Dup3, [9, 100, 0, 0, 0, 0]), "not planned");
            assert!(
                !r.permits(Sys::Dup3, [5, 6, 0, 0, 0, 0]),
                "not the placeholder"
            );
        }
        let r = seccomp_rules(&plan, &Policy::restricted(), ProcessFacts::default());
        assert!(!r.allows(Sys::Dup3), "no placeholder, no dup3");
    }

    #[test]
    fn crashes_may_reset_fatal_handlers_and_abort_only_this_process() {
        let facts = ProcessFacts {
            pid: Some(4242),
            ..ProcessFacts::default()
        };
        for p in [Policy::restricted(), Policy::open()] {
            let r = seccomp_rules(&[], &p, facts);
            for &sig in FATAL_SIGNALS {
                assert!(r.permits(Sys::RtSigaction, [sig, 0x1000, 0, 8, 0, 0]));
                assert!(r.permits(Sys::Tgkill, [4242, 4243, sig, 0, 0, 0]));
                assert!(
                    !r.permits(Sys::Tgkill, [1, 1, sig, 0, 0, 0]),
                    "another process"
                );
            }
            // SIGTERM, SIGUSR1, SIGCHLD: no handlers, no signals to self.
            for sig in [15, 10, 17] {
                assert!(!r.permits(Sys::RtSigaction, [sig, 0x1000, 0, 8, 0, 0]));
                assert!(!r.permits(Sys::Tgkill, [4242, 4242, sig, 0, 0, 0]));
            }
            assert!(!r.permits(Sys::Tgkill, [4242, 4242, 9, 0, 0, 0]), "SIGKILL");
        }
        let r = seccomp_rules(&[], &Policy::restricted(), ProcessFacts::default());
        assert!(!r.allows(Sys::Tgkill), "no pid, no tgkill");
    }

    #[test]
    fn threads_only_when_asked_and_never_processes() {
        use linux_abi::*;
        let r = seccomp_rules(&[], &Policy::restricted(), ProcessFacts::default());
        assert!(!r.allows(Sys::Clone) && !r.allows(Sys::Clone3));
        assert!(r.enosys.is_empty());
        let p = Policy {
            allow_threads: true,
            ..Policy::restricted()
        };
        let r = seccomp_rules(&[], &p, ProcessFacts::default());
        // glibc's pthread_create flags, then fork's and vfork's.
        assert!(r.permits(Sys::Clone, [0x003d_0f00, 0, 0, 0, 0, 0]));
        assert!(!r.permits(Sys::Clone, [0x0120_0011, 0, 0, 0, 0, 0]), "fork");
        assert!(
            !r.permits(Sys::Clone, [0x0000_4111, 0, 0, 0, 0, 0]),
            "vfork"
        );
        assert!(!r.allows(Sys::Clone3));
        assert_eq!(r.enosys, vec![Sys::Clone3]);
        assert!(r.permits(Sys::Prctl, [PR_SET_NAME, 0, 0, 0, 0, 0]));
        assert!(
            !r.permits(Sys::Prctl, [22, 2, 0, 0, 0, 0]),
            "PR_SET_SECCOMP"
        );
    }
}
