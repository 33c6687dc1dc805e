//! Linux: `PR_SET_NO_NEW_PRIVS`, Landlock, then a seccomp-BPF allowlist.
//!
//! Everything decided here comes from [`super::plan`]; this file only turns
//! the data into `prctl`, `landlock` and `seccompiler` calls.
//!
//! # How the syscall list was found
//!
//! Every test in `tests/sandbox.rs` and the `sandboxed_echo` example (both
//! the `--demo` socketpair round trip and the unix-listener mode with a
//! client) were run under `strace -f -qq`, in debug and release builds, and
//! every syscall the sandboxed thread made after its
//! `seccomp(SECCOMP_SET_MODE_FILTER)` was counted, with the ones that came
//! back `EPERM`/`EACCES` (which is how `signalfd4` was found missing: the
//! reactor narrows its signalfd's mask when a signal route is dropped):
//!
//! ```text
//! strace -f -qq -o t.log target/{debug,release}/deps/sandbox-HASH --test-threads=1
//! strace -f -qq -o e.log target/{debug,release}/examples/sandboxed_echo --demo
//! strace -f -qq -o l.log target/release/examples/sandboxed_echo /tmp/e.sock 2
//! ```
//!
//! Seen after entry, allowed: `epoll_pwait`, `epoll_ctl`, `timerfd_settime`
//! (polling's wait); `read` (signalfd, sockets), `write`, `recvfrom` (std's
//! `UnixStream::read`), `sendto` without an address (std's
//! `UnixStream::write` on sockets), `close`; `fcntl(F_GETFD)` before each
//! `OwnedFd` close in debug builds only; `munmap` + `sigaltstack` +
//! `exit_group` from `std::process::exit`; `rt_sigprocmask` and `signalfd4`
//! (signal routes); `pread64` on the kept status file; `accept4` +
//! `ioctl(FIONBIO)` (std's `accept` and `set_nonblocking`) in listener
//! mode; with `allow_bind`: `socket`, `setsockopt(SO_REUSEADDR)`, `bind`,
//! `listen`, `getsockname`; in open mode: `socket`, `connect`.
//! Refused as intended: `openat`, `execve`, `socket` and `socketpair` in
//! restricted mode, `connect`, `bind`, `statx`, `write`/`writev`/`sendto`/
//! `recvfrom` on a descriptor planned without the right.
//!
//! libslirp inside the sandbox: the three tests of `tests/sandbox_slirp.rs`
//! (a restricted-mode host forward accepted after entry moving 1 MiB each
//! way; open mode, the guest connecting to a listed and an unlisted host
//! port; open mode, DNS forwarding after entry, in a mount namespace with
//! its own `/etc/resolv.conf`) were run the same way, debug and release:
//!
//! ```text
//! strace -f -qq -o s.log target/{debug,release}/deps/sandbox_slirp-HASH --exact TEST --test-threads=1
//! ```
//!
//! Seen after entry, allowed: `accept` (not `accept4`) on the hostfwd
//! listener, `fcntl(F_GETFL/F_SETFL)`, `setsockopt` (`SO_REUSEADDR`,
//! `SO_OOBINLINE`, `TCP_NODELAY`, `SO_LINGER` (the own TCP path's resets);
//! open mode also `IP_RECVERR`, `IP_TTL`),
//! `recvfrom`, `sendto` (with an address only in open mode), `shutdown`,
//! `getsockopt(SO_ACCEPTCONN/SO_TYPE)` (the stack's own check of a new
//! descriptor's kind); open mode: `socket(AF_INET, SOCK_STREAM|SOCK_DGRAM)`,
//! `connect`, `getpeername`, `recvmsg(MSG_ERRQUEUE)`, `ioctl(FIONREAD)`.
//! Refused as intended: `openat`; in open mode `connect` to an unlisted
//! port (`EACCES`, Landlock). Refused and then allowed, from these runs:
//!
//! - `mprotect(addr, 135168, PROT_READ|PROT_WRITE) = -1 EPERM`, hundreds of
//!   times: glibc makes a malloc arena for each thread but the main one
//!   (the test body runs on libtest's thread, as a back end may run on
//!   any thread) and grows it with `mprotect`. Refused, malloc falls back
//!   to one `mmap`/`munmap` per allocation. Now allowed unless the
//!   protection has `PROT_EXEC`.
//! - `newfstatat(AT_FDCWD, "/etc/resolv.conf", .., 0) = -1 EPERM`, after
//!   which libslirp dropped the DNS query (it `stat`s the file once its
//!   1 s cache has expired, see the module docs). Now allowed in open mode
//!   with exactly glibc `stat`'s arguments (`AT_FDCWD`, flags 0).
//! - `setsockopt(6, SOL_IP, IP_TTL, [63], 4) = -1 EPERM` on a libslirp UDP
//!   socket made and registered before entry (so planned): libslirp sets
//!   the TTL before every datagram it forwards and ignores the error. The
//!   fix was in the rights the slirp stack records for datagram sockets
//!   (`SETSOCKOPT` added), not in the allowlist.
//!
//! Not seen in these runs, allowed because libslirp, glibc's allocator or
//! std need them (FACTS.md, libslirp's source): `mremap`, `madvise`, `brk`
//! (the allocator; libslirp maps 135168 bytes per socket), `futex` (std's
//! locks), `readv`, `writev`, `getsockname`, `clock_gettime` (vDSO
//! fallback), `clock_nanosleep`, `exit`, `rt_sigreturn`, `restart_syscall`,
//! `sched_yield`, `getrandom`, `getpid`, `gettid`, `epoll_pwait2`.
//!
//! Allowed so a crash ends the process (found by injecting a `SIGSEGV`, a
//! `SIGBUS` and an `abort()` after entry, `tests/sandbox_escape.rs`):
//! `rt_sigaction` for the fatal signals (Rust's fault handler restores the
//! default action, then the fault repeats and kills; refused, it returned
//! and the fault repeated forever at 100% CPU) and `tgkill` of a fatal
//! signal to this process (glibc's `abort`).
//!
//! Refused since they were found open (the same test file knocks on each):
//! `mmap` with `PROT_EXEC`, `sendmsg` (a destination in `msg_name`),
//! `MSG_FASTOPEN` on `sendto` (a TCP connect without `connect`), sockets
//! other than libslirp's kinds, socket options other than libslirp's.
//!
//! `fstat`, `statx` and `newfstatat` other than open mode's `stat` by path
//! are deliberately absent: seccomp cannot see the path argument, so
//! allowing them lets the sandbox probe the filesystem's metadata (open
//! mode accepts that for libslirp's DNS forwarder). Code that needs a
//! file's metadata must take it before entry.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, LandlockStatus, NetPort,
    RestrictSelfAttr, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use super::rules::{
    landlock_missing, landlock_rules_for, seccomp_rules, Cmp, ProcessFacts, SeccompRules, Sys,
    SysRule,
};
use super::{Enforcement, Error, LandlockReport, Plan, Policy, Report, Result, SeccompReport};

/// `/proc/thread-self/status` of the thread that entered, opened before
/// entry so [`super::status`] can still read it (with `pread64`).
static STATUS_FD: OnceLock<OwnedFd> = OnceLock::new();

/// The newest Landlock ABI the `landlock` crate knows; the crate lowers it
/// to what the kernel has (best effort).
const LANDLOCK_LATEST: ABI = ABI::V10;

/// Applies the plan (see [`enter`]); the Landlock report for the status.
pub(super) fn apply(
    plan: &Plan,
    policy: &Policy,
    report: &mut Report,
) -> Result<Option<LandlockReport>> {
    enter(plan, policy, report)?;
    Ok(report.landlock.clone())
}

/// The kernel's view of the calling thread: no_new_privs, seccomp.
pub(super) fn fill_status(st: &mut super::SandboxStatus) {
    if let Some(text) = read_status() {
        let (nnp, mode, filters) = super::parse_proc_status(&text);
        st.no_new_privs = nnp;
        st.seccomp = mode;
        st.seccomp_filters = filters;
    }
}

pub(super) fn enter(plan: &Plan, policy: &Policy, report: &mut Report) -> Result<()> {
    let arch = target_arch()?;

    let status_fd = match std::fs::File::open("/proc/thread-self/status") {
        Ok(f) => Some(OwnedFd::from(f)),
        Err(e) => {
            report
                .warnings
                .push(format!("/proc/thread-self/status not kept: {e}"));
            None
        }
    };
    // Planned numbers are retired to it after entry, never freed
    // (crate::closing).
    let placeholder = crate::closing::placeholder().map_err(|source| Error::Syscall {
        syscall: "pipe2 (the placeholder for retired descriptors)",
        source,
    })?;
    let facts = ProcessFacts {
        pid: Some(std::process::id()),
        status_fd: status_fd.as_ref().map(|f| f.as_raw_fd()),
        placeholder: Some(placeholder.as_raw_fd()),
    };
    let rules = seccomp_rules(&plan.fds, policy, facts);
    // Built before anything is applied: building allocates and can fail.
    // Stacked filters: the kernel takes the strictest answer, so the
    // ENOSYS filter goes in first and the allowlist lets its syscalls
    // through (installing it second would need `seccomp`, which the
    // allowlist refuses, and EPERM would win over ENOSYS).
    let enosys = build_enosys_filter(&rules.enosys, arch)?;
    let mut main = rules.clone();
    for &sys in &rules.enosys {
        main.allow.insert(sys, SysRule::Any);
    }
    let program = build_filter(&main, policy.audit, arch)?;
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());

    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::Syscall {
            syscall: "prctl(PR_SET_NO_NEW_PRIVS)",
            source: io::Error::last_os_error(),
        });
    }
    report.no_new_privs = true;

    let (landlock, all_threads) = apply_landlock(plan, policy)?;
    if landlock.enforcement != Enforcement::Full {
        report.warnings.push(landlock.summary());
    }
    if threads > 1 && !all_threads && landlock.enforcement != Enforcement::None {
        report.warnings.push(format!(
            "Landlock covers the entering thread and the threads it starts, not the {} \
             threads started before entry (that needs Landlock ABI 8); seccomp covers them all",
            threads - 1
        ));
    }
    report.landlock = Some(landlock);

    if let Some(fd) = status_fd {
        let _ = STATUS_FD.set(fd);
    }
    let instructions = program.len();
    // Every thread of the process, those running already included (TSYNC).
    if let Some(enosys) = &enosys {
        seccompiler::apply_filter_all_threads(enosys)
            .map_err(|e| Error::Seccomp(format!("installing the ENOSYS filter: {e}")))?;
    }
    seccompiler::apply_filter_all_threads(&program).map_err(|e| Error::Seccomp(e.to_string()))?;
    let planned: Vec<_> = plan
        .fds
        .iter()
        .filter(|p| !p.rights.contains(crate::Rights::EPHEMERAL))
        .map(|p| p.fd)
        .collect();
    crate::closing::arm(placeholder, &planned);
    report.seccomp = Some(SeccompReport {
        syscalls: rules.allow.keys().copied().collect(),
        instructions,
        audit: policy.audit,
    });
    if policy.audit {
        report
            .warnings
            .push("seccomp audit mode: violations are logged, not refused".into());
    }
    Ok(())
}

fn target_arch() -> Result<seccompiler::TargetArch> {
    #[cfg(target_arch = "x86_64")]
    return Ok(seccompiler::TargetArch::x86_64);
    #[cfg(target_arch = "aarch64")]
    return Ok(seccompiler::TargetArch::aarch64);
    #[allow(unreachable_code)]
    Err(Error::Unsupported(
        "this Linux architecture (seccomp rules exist for x86_64 and aarch64)",
    ))
}

/// A filter answering `syscalls` with `ENOSYS` and allowing everything
/// else, or `None` when there are none.
fn build_enosys_filter(
    syscalls: &[Sys],
    arch: seccompiler::TargetArch,
) -> Result<Option<BpfProgram>> {
    if syscalls.is_empty() {
        return Ok(None);
    }
    let map = syscalls.iter().map(|&s| (number(s), Vec::new())).collect();
    let filter = SeccompFilter::new(
        map,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| Error::Seccomp(e.to_string()))?;
    let program = BpfProgram::try_from(filter).map_err(|e| Error::Seccomp(e.to_string()))?;
    Ok(Some(program))
}

/// Applies Landlock; says whether it covers every thread (ABI 8).
fn apply_landlock(plan: &Plan, policy: &Policy) -> Result<(LandlockReport, bool)> {
    let process_descriptors = plan
        .fds
        .iter()
        .any(|p| p.rights.contains(crate::Rights::PROCESS));
    let want = landlock_rules_for(policy, process_descriptors);
    let err = |e: landlock::RulesetError| Error::Landlock(e.to_string());

    let mut ruleset = Ruleset::default().set_compatibility(CompatLevel::BestEffort);
    if want.handle_fs {
        ruleset = ruleset
            .handle_access(AccessFs::from_all(LANDLOCK_LATEST))
            .map_err(err)?;
    }
    let mut net: BitFlags<AccessNet> = BitFlags::empty();
    if want.handle_bind_tcp {
        net |= AccessNet::BindTcp;
    }
    if want.handle_connect_tcp {
        net |= AccessNet::ConnectTcp;
    }
    if !net.is_empty() {
        ruleset = ruleset.handle_access(net).map_err(err)?;
    }
    if want.scope {
        let scope = if want.scope_signals {
            Scope::AbstractUnixSocket | Scope::Signal
        } else {
            Scope::AbstractUnixSocket.into()
        };
        ruleset = ruleset.scope(scope).map_err(err)?;
    }
    let mut created = ruleset.create().map_err(err)?;
    if want.handle_connect_tcp {
        for &port in &want.connect_ports {
            created = created
                .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
                .map_err(err)?;
        }
    }
    let st = created
        .no_new_privs(true)
        .all_threads(true)
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    let abi = match st.landlock {
        LandlockStatus::Available { effective_abi, .. } => effective_abi as u32,
        LandlockStatus::NotEnabled | LandlockStatus::NotImplemented => 0,
    };
    // The crate calls anything below its newest ABI "partial"; what
    // matters is whether what caploop relies on Landlock for is enforced.
    let enforcement = if abi == 0 || st.ruleset == RulesetStatus::NotEnforced {
        Enforcement::None
    } else if landlock_missing(abi, &want).is_empty() {
        Enforcement::Full
    } else {
        Enforcement::Partial
    };
    Ok((
        LandlockReport {
            abi,
            enforcement,
            rules: want,
        },
        st.all_threads,
    ))
}

/// The syscall number of `sys` on the target architecture.
pub(super) fn number(sys: Sys) -> i64 {
    use Sys::*;
    match sys {
        Read => libc::SYS_read,
        Readv => libc::SYS_readv,
        Pread64 => libc::SYS_pread64,
        Write => libc::SYS_write,
        Writev => libc::SYS_writev,
        Recvfrom => libc::SYS_recvfrom,
        Recvmsg => libc::SYS_recvmsg,
        Sendto => libc::SYS_sendto,
        Sendmsg => libc::SYS_sendmsg,
        Fstat => libc::SYS_fstat,
        Accept => libc::SYS_accept,
        Accept4 => libc::SYS_accept4,
        Connect => libc::SYS_connect,
        Bind => libc::SYS_bind,
        Listen => libc::SYS_listen,
        Socket => libc::SYS_socket,
        Shutdown => libc::SYS_shutdown,
        Getsockopt => libc::SYS_getsockopt,
        Setsockopt => libc::SYS_setsockopt,
        Getsockname => libc::SYS_getsockname,
        Getpeername => libc::SYS_getpeername,
        Fcntl => libc::SYS_fcntl,
        Ioctl => libc::SYS_ioctl,
        Close => libc::SYS_close,
        Dup3 => libc::SYS_dup3,
        Waitid => libc::SYS_waitid,
        PidfdSendSignal => libc::SYS_pidfd_send_signal,
        EpollPwait => libc::SYS_epoll_pwait,
        EpollPwait2 => libc::SYS_epoll_pwait2,
        EpollCtl => libc::SYS_epoll_ctl,
        TimerfdSettime => libc::SYS_timerfd_settime,
        Mmap => libc::SYS_mmap,
        Munmap => libc::SYS_munmap,
        Mremap => libc::SYS_mremap,
        Madvise => libc::SYS_madvise,
        Mprotect => libc::SYS_mprotect,
        Brk => libc::SYS_brk,
        ClockGettime => libc::SYS_clock_gettime,
        ClockNanosleep => libc::SYS_clock_nanosleep,
        Exit => libc::SYS_exit,
        ExitGroup => libc::SYS_exit_group,
        Sigaltstack => libc::SYS_sigaltstack,
        RtSigreturn => libc::SYS_rt_sigreturn,
        RtSigprocmask => libc::SYS_rt_sigprocmask,
        RtSigaction => libc::SYS_rt_sigaction,
        Tgkill => libc::SYS_tgkill,
        Signalfd4 => libc::SYS_signalfd4,
        Clone => libc::SYS_clone,
        Clone3 => libc::SYS_clone3,
        SetRobustList => libc::SYS_set_robust_list,
        Rseq => libc::SYS_rseq,
        Prctl => libc::SYS_prctl,
        SchedGetaffinity => libc::SYS_sched_getaffinity,
        Futex => libc::SYS_futex,
        Getrandom => libc::SYS_getrandom,
        RestartSyscall => libc::SYS_restart_syscall,
        SchedYield => libc::SYS_sched_yield,
        Getpid => libc::SYS_getpid,
        Gettid => libc::SYS_gettid,
        Newfstatat => libc::SYS_newfstatat,
    }
}

fn build_filter(
    rules: &SeccompRules,
    audit: bool,
    arch: seccompiler::TargetArch,
) -> Result<BpfProgram> {
    let serr =
        |sys: Sys, e: seccompiler::BackendError| Error::Seccomp(format!("rule for {sys}: {e}"));
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (&sys, rule) in &rules.allow {
        let chain = match rule {
            SysRule::Any => Vec::new(),
            SysRule::AnyOf(groups) => {
                let mut chain = Vec::with_capacity(groups.len());
                for g in groups {
                    let mut conds = Vec::with_capacity(g.len());
                    for c in g {
                        let len = if c.wide {
                            SeccompCmpArgLen::Qword
                        } else {
                            SeccompCmpArgLen::Dword
                        };
                        let op = match c.cmp {
                            Cmp::Eq => SeccompCmpOp::Eq,
                            Cmp::Ne => SeccompCmpOp::Ne,
                            Cmp::MaskedEq(m) => SeccompCmpOp::MaskedEq(m),
                        };
                        let value = if c.wide {
                            c.value
                        } else {
                            c.value & 0xffff_ffff
                        };
                        conds.push(
                            SeccompCondition::new(c.arg, len, op, value)
                                .map_err(|e| serr(sys, e))?,
                        );
                    }
                    chain.push(SeccompRule::new(conds).map_err(|e| serr(sys, e))?);
                }
                chain
            }
        };
        map.insert(number(sys), chain);
    }
    let mismatch = if audit {
        SeccompAction::Log
    } else {
        SeccompAction::Errno(libc::EPERM as u32)
    };
    let filter = SeccompFilter::new(map, mismatch, SeccompAction::Allow, arch)
        .map_err(|e| Error::Seccomp(e.to_string()))?;
    let program = BpfProgram::try_from(filter).map_err(|e| Error::Seccomp(e.to_string()))?;
    // BPF_MAXINSNS: the kernel refuses longer programs.
    if program.len() > 4096 {
        return Err(Error::Seccomp(format!(
            "the filter has {} instructions, more than the kernel's 4096; plan fewer \
             descriptors with narrowed rights",
            program.len()
        )));
    }
    Ok(program)
}

/// The text of the entering thread's `/proc/thread-self/status`, read from
/// the descriptor kept at entry (opening is refused afterwards), or of the
/// calling thread's before entry.
pub(super) fn read_status() -> Option<String> {
    match STATUS_FD.get() {
        Some(fd) => {
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            while len < buf.len() {
                // SAFETY: the buffer is valid for `buf.len() - len` bytes
                // from `len`; the descriptor is kept open in STATUS_FD.
                let n = unsafe {
                    libc::pread(
                        fd.as_raw_fd(),
                        buf[len..].as_mut_ptr().cast(),
                        buf.len() - len,
                        len as libc::off_t,
                    )
                };
                if n <= 0 {
                    break;
                }
                len += n as usize;
            }
            buf.truncate(len);
            String::from_utf8(buf).ok()
        }
        None => std::fs::read_to_string("/proc/thread-self/status").ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::{Mode, PlannedFd};
    use super::super::rules::linux_abi;
    use super::*;
    use crate::Rights;

    #[test]
    #[allow(clippy::unnecessary_cast)] // the types differ between libc targets
    fn abi_constants_match_libc() {
        assert_eq!(linux_abi::F_GETFD, libc::F_GETFD as u64);
        assert_eq!(linux_abi::F_SETFD, libc::F_SETFD as u64);
        assert_eq!(linux_abi::F_GETFL, libc::F_GETFL as u64);
        assert_eq!(linux_abi::F_SETFL, libc::F_SETFL as u64);
        assert_eq!(linux_abi::FIONREAD, libc::FIONREAD as u64);
        assert_eq!(linux_abi::FIONBIO, libc::FIONBIO as u64);
        assert_eq!(linux_abi::TUNSETOFFLOAD, libc::TUNSETOFFLOAD as u64);
        assert_eq!(linux_abi::TUNSETVNETHDRSZ, libc::TUNSETVNETHDRSZ as u64);
        assert_eq!(
            linux_abi::NIOCTXSYNC,
            crate::net::netmap::abi::NIOCTXSYNC as u64
        );
        assert_eq!(
            linux_abi::NIOCRXSYNC,
            crate::net::netmap::abi::NIOCRXSYNC as u64
        );
        assert_eq!(
            linux_abi::NIOCCTRL,
            crate::net::netmap::abi::NIOCCTRL as u64
        );
        assert_eq!(linux_abi::SO_LINGER, libc::SO_LINGER as u64);
        assert_eq!(linux_abi::SO_OOBINLINE, libc::SO_OOBINLINE as u64);
        assert_eq!(linux_abi::AF_INET, libc::AF_INET as u64);
        assert_eq!(linux_abi::AF_INET6, libc::AF_INET6 as u64);
        assert_eq!(linux_abi::SOCK_STREAM, libc::SOCK_STREAM as u64);
        assert_eq!(linux_abi::PROT_EXEC, libc::PROT_EXEC as u64);
        assert_eq!(linux_abi::AT_FDCWD, libc::AT_FDCWD as u32 as u64);
    }

    #[test]
    fn filters_build_for_both_modes() {
        let fds = vec![
            PlannedFd {
                fd: 3,
                rights: Rights::READ_ONLY,
                label: "r".into(),
            },
            PlannedFd {
                fd: 4,
                rights: Rights::LISTENER,
                label: "l".into(),
            },
        ];
        for mode in [Mode::Restricted, Mode::Open] {
            let p = Policy {
                mode,
                allow_bind: true,
                ..Policy::default()
            };
            let rules = seccomp_rules(
                &fds,
                &p,
                ProcessFacts {
                    pid: Some(1),
                    status_fd: Some(9),
                    placeholder: Some(10),
                },
            );
            let prog = build_filter(&rules, false, target_arch().unwrap()).unwrap();
            assert!(prog.len() > rules.allow.len());
            assert!(prog.len() < 4096);
        }
    }

    #[test]
    fn a_huge_plan_is_refused_not_truncated() {
        let fds: Vec<PlannedFd> = (3..1500)
            .map(|fd| PlannedFd {
                fd,
                rights: Rights::EVENT,
                label: String::new(),
            })
            .collect();
        let rules = seccomp_rules(&fds, &Policy::restricted(), ProcessFacts::default());
        assert!(matches!(
            build_filter(&rules, false, target_arch().unwrap()),
            Err(Error::Seccomp(_))
        ));
    }
}
