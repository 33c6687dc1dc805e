//! The sandbox: limit every descriptor, then give up ambient authority.
//!
//! A device back end reads untrusted input (guest frames, a peer's
//! records). Before it does, it should be unable to do anything but what
//! its loop does: read and write the descriptors it was given, with the
//! operations each one needs. This module is how a hypervisor (or the
//! `caploop-sandbox` harness) gets there.
//!
//! # Using it
//!
//! ```no_run
//! use caploop::sandbox::{Plan, Policy};
//! use caploop::{Reactor, Rights};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut reactor: Reactor<()> = Reactor::new()?;
//! // ... register every descriptor, with the Rights it needs; add host
//! // forwards and open every file you will need ...
//! let mut plan = Plan::from_reactor(&reactor);
//! plan.add(&std::io::stderr(), Rights::WRITE_ONLY, "stderr");
//! plan.before_entry("resolv.conf", || {
//!     // Read now what a library would read lazily after entry.
//!     std::fs::read("/etc/resolv.conf").map(drop)
//! });
//! let report = plan.apply_and_enter(&Policy::restricted())?;
//! log::info!("sandboxed: {report:?}");
//! reactor.run(&mut ())?;
//! # Ok(()) }
//! ```
//!
//! 1. Set up everything first: sockets, listeners (host forwards), the tap
//!    device, files. After entry nothing can be opened by name.
//! 2. Collect the [`Plan`]: [`Plan::from_reactor`] takes every registration
//!    with the [`Rights`](crate::Rights) it was registered with, plus the
//!    reactor's own event queue and signal descriptor. Add what the loop
//!    does not poll but still uses ([`Plan::add`]). A descriptor planned
//!    twice keeps the union of its rights.
//! 3. Say what must be read before entry ([`Plan::before_entry`]).
//! 4. Choose the [`Policy`] and call [`Plan::apply_and_enter`]. It returns a
//!    [`Report`] of what was applied, or an [`Error`] naming the descriptor
//!    or syscall that failed. Check [`status`] at any time.
//!
//! # Threads: the sandbox is the whole process
//!
//! Entering sandboxes the process, every thread of it, once:
//!
//! - Linux: the seccomp filter is installed on every thread at once,
//!   those already running included (`SECCOMP_FILTER_FLAG_TSYNC`), and
//!   threads started later inherit it. Landlock covers every thread from
//!   ABI 8 (`LANDLOCK_RESTRICT_SELF_TSYNC`); below that, the entering
//!   thread and the threads it starts, and the report warns that threads
//!   started before entry are held by seccomp alone.
//! - FreeBSD: capability mode is a property of the process.
//! - A second [`enter`], from any thread, is [`Error::AlreadyEntered`].
//! - New threads after entry need [`Policy::allow_threads`] (`clone` of a
//!   thread only, never of a process); without it `std::thread::spawn`
//!   fails (panics), `Builder::spawn` returns the error.
//! - [`status`] tells any thread the truth: before entry its own state,
//!   after entry the process's, which every thread shares.
//!
//! What that means for an embedding hypervisor: entering in the VMM's own
//! process applies the device's allowlist to its vCPU threads too, which
//! then cannot make their own syscalls (`ioctl(KVM_RUN)`, opening disks).
//! In-process mode fits a process that is only a device back end (a
//! vhost-user daemon, a jailed device process). For a VMM, the isolation
//! that holds is the process boundary: run the device in its own sandboxed
//! process (`caploop-sandbox -S` with the `slirp-helper` net back end).
//! Within one address space no sandbox protects one thread from another:
//! a compromised thread can rewrite the memory every other thread runs.
//!
//! # What is limited
//!
//! | | FreeBSD (Capsicum) | Linux (seccomp + Landlock) |
//! |---|---|---|
//! | Opening, creating, executing any path | refused (`ECAPMODE`) | refused by Landlock (`EACCES`) and seccomp (`EPERM`: no `openat`, `execve`) |
//! | A planned descriptor used beyond its rights | refused (`ENOTCAPABLE`) | refused (`EPERM`) for read/write, recv/send, accept, shutdown, get/setsockopt, get{sock,peer}name, connect, bind, listen, `fcntl(F_GETFL/F_SETFL)`, `ioctl(FIONREAD/FIONBIO)`, if the descriptor lives as long as the sandbox (see below) |
//! | New sockets | refused | refused in restricted mode; open mode: what libslirp makes (TCP and UDP over IPv4/IPv6, the ICMP ping socket), never raw, packet, netlink or unix sockets; with [`Policy::allow_bind`] in restricted mode: TCP only |
//! | `connect` | refused | refused in restricted mode (seccomp and Landlock); open mode: allowed, optionally only to [`Policy::connect_ports`] (Landlock, TCP) |
//! | `sendto` with an address | refused in capability mode | refused in restricted mode; allowed in open mode |
//! | `sendmsg` | as `sendto` | refused (`msg_name` could name any destination), except on planned descriptors given `Rights::SENDMSG` (vhost-user's connected unix stream socket) |
//! | TCP Fast Open (`MSG_FASTOPEN`: a connect without `connect`) | refused with `connect` | refused on every `sendto` |
//! | Socket options | `CAP_SETSOCKOPT` per descriptor | only those libslirp and std set ([`SOCKET_OPTIONS`]): no `SO_MARK`, `SO_BINDTODEVICE`, `IP_TRANSPARENT`, filters |
//! | `bind`, `listen` | refused | refused unless [`Policy::allow_bind`] |
//! | File metadata (`stat`, `fstat`, `statx`) | refused | refused, but for the raw `fstat` syscall on a descriptor (planned ones need `FSTAT`; vhost-user checks a received memory region's size before mapping it); open mode allows `stat` by path (`newfstatat(AT_FDCWD, path, buf, 0)`) for libslirp's DNS forwarder |
//! | Executable memory (`mmap`/`mprotect` with `PROT_EXEC`) | allowed | refused: code written at run time cannot run |
//! | Signals | only to itself | handlers only for the fatal signals, `tgkill` only of `SIGABRT` and the faults to its own threads |
//! | Everything else (`kill`, `ptrace`, `mount`, `setuid`, `clone`...) | refused | not in the allowlist: `EPERM` |
//!
//! A crash is not an escape hatch and not a hang: a fault (`SIGSEGV`,
//! `SIGBUS`, `SIGILL`, `SIGFPE`) or an `abort()` (a heap check, Rust's
//! out-of-memory handler, a panic across a C boundary) inside the sandbox
//! ends the process at once with that signal. On Linux the filter allows
//! exactly what that takes: resetting a fatal signal's handler
//! (`rt_sigaction`, which Rust's fault handler does before the fault
//! repeats) and `tgkill` of a fatal signal within the process (glibc's
//! `abort`). Refusing them would make a faulting process spin at 100% CPU
//! until killed.
//!
//! # What each layer enforces, and what it does not
//!
//! - **seccomp (Linux)** is the allowlist above, per thread. Rules keyed by
//!   descriptor number ("fd 5 may not be written") would follow the number
//!   to whatever file got it next, so a planned number is never freed
//!   while the sandbox is in force ([`closing`](crate::closing)): closing
//!   it through the reactor, a net back end or [`closing::close`](crate::closing::close)
//!   releases the file and leaves a placeholder at the number, and a plain
//!   `close()` of it is refused (the descriptor stays open). The embedder
//!   need not know the rule; sockets made after entry, thousands of them,
//!   get other numbers. Descriptors planned with
//!   [`Rights::EPHEMERAL`](crate::Rights::EPHEMERAL) (libslirp's sockets,
//!   a ready pipe) get no rules by number and close as usual, and neither
//!   get descriptors made after entry (accepted sockets, libslirp's
//!   sockets in open mode): they are held by the allowlist and Landlock
//!   alone. seccomp cannot read memory, so it cannot check a path, a
//!   socket address (beyond "none given") or a `sendmsg` header.
//! - **Landlock (Linux)** refuses every filesystem access and, from ABI 4,
//!   TCP bind and connect (open mode with [`Policy::connect_ports`]:
//!   connects to other ports); from ABI 6 it scopes signals and abstract
//!   unix sockets to the sandbox. It does not cover UDP before ABI 10 or
//!   named unix sockets before ABI 9: seccomp refuses unix sockets and, in
//!   restricted mode, addressed datagrams. What the running kernel enforces
//!   is in [`Report::landlock`] and [`status`]; a missing or partial
//!   Landlock is a warning in [`Report::warnings`]
//!   ([`LandlockReport::summary`]).
//! - **Capsicum (FreeBSD)** rights travel with the open file: a descriptor
//!   keeps its limits whatever its number (a number freed and reused
//!   carries nothing over, so closing is a plain close there), and an
//!   accepted socket inherits its listener's. Capability mode refuses every global namespace
//!   (paths, `connect`/`sendto` with an address, `bind`, pids).
//! - **No layer** limits CPU time, memory, or how much the process writes
//!   to descriptors it may write (a compromised process can still flood its
//!   own link), and none hides what is already in the process's memory.
//!
//! Descriptors opened **after** entry (sockets a listener accepts, sockets
//! libslirp makes in open mode) inherit the listener's rights on FreeBSD;
//! on Linux they are governed by the syscall allowlist only, since seccomp
//! cannot name them in advance. That is why per-descriptor checks on Linux
//! are deny rules ("this planned descriptor may not be written") rather
//! than allow rules: new descriptors must keep working.
//!
//! # Open mode gives up
//!
//! Open mode exists so a guest can reach the outside. On Linux it allows
//! `socket` (TCP and UDP over IPv4 and IPv6 and the ping socket; no
//! `AF_UNIX`, so no new connection to a named socket on the host),
//! `connect` and `sendto` anywhere UDP goes: Landlock covers TCP from ABI
//! 4 but UDP only from ABI 10 (the ABI in force is in the [`Report`]), so [`Policy::connect_ports`] narrows TCP connects
//! only. The filesystem stays closed, apart from `stat` by path (metadata,
//! not contents) for libslirp's DNS forwarder. On FreeBSD capability mode
//! makes `connect` and addressed `sendto` impossible, so **open mode on FreeBSD limits every planned
//! descriptor's rights but does not enter capability mode**: the process
//! keeps its ambient authority (the filesystem, new sockets), and a warning
//! is logged and put in the [`Report`]. Run it as an unprivileged user.
//!
//! # Platform differences
//!
//! - FreeBSD: each planned descriptor gets `cap_rights_limit` (plus
//!   `cap_ioctls_limit` and `cap_fcntls_limit` where it has `Fcntl`/`Ioctl`),
//!   computed by [`capsicum_limits`]; time zone data is cached
//!   (`localtime_r` before entry, as `caph_cache_tzdata` does); then
//!   `cap_enter` (restricted mode only). `RECV`/`SEND` are the same rights
//!   as `READ`/`WRITE` there. A listener's rights pass to every socket it
//!   accepts, which is why [`Rights::LISTENER`](crate::Rights::LISTENER)
//!   carries the accepted socket's needs. Runtime host forwards are not
//!   possible (no `bind` in capability mode).
//! - Linux: `PR_SET_NO_NEW_PRIVS`; Landlock (best effort, whatever ABI the
//!   kernel has; the effective ABI is in the report): all filesystem access
//!   handled with no rule, TCP bind (unless [`Policy::allow_bind`]) and
//!   connect handled, abstract unix sockets and signals scoped; then a
//!   seccomp-BPF allowlist, [`seccomp_rules`], whose refusals return
//!   `EPERM`. The measured syscall list and how it was found are in the
//!   `linux` module's source. x86_64 and aarch64.
//! - Elsewhere: [`Plan::apply_and_enter`] returns [`Error::Unsupported`].
//!
//! # FreeBSD: what has been checked, and how
//!
//! Nothing here has run on FreeBSD. Each point was checked by the compiler
//! (`.ci/cross`: type-checked and linted against FreeBSD's own `libc`,
//! `nix`, `polling` and `capsicum`), by a test on Linux of the portable
//! plan that FreeBSD's code applies, or by reading FreeBSD's sources:
//!
//! | what | how |
//! |---|---|
//! | every `cfg(target_os = "freebsd")` item (this module's Capsicum calls, kqueue signals, taps, netmap, the bhyve and QEMU front ends, process descriptors) | compiler |
//! | the rights, ioctls and fcntls each descriptor gets, per front end and mode ([`capsicum_limits`]; `sandbox/src/plan_table.rs` for every front end) | Linux test |
//! | libslirp's sockets leave kqueue while still open (polling 3.11 keeps a closed descriptor's number and refuses it later: `kqueue.rs`) | Linux test (`tests/slirp_closes.rs`: no removal fails) |
//! | open mode, libslirp's datagram sockets: `sendto` with an address needs `CAP_SEND` and `CAP_CONNECT` (`kern_sendit`), which they get | Linux test of the rights; reading |
//! | `--qemu-dgram`: an MTU whose frames exceed `net.local.dgram.maxdgram` (8 KiB by default, `uipc_usrreq.c`) is refused before serving | Linux test of the check given the limit; reading |
//! | the slirp helper spawned with `pdfork`, ended with `pdkill`, its status from `EVFILT_PROCDESC`/`NOTE_EXIT` (`sys_procdesc.c`), all allowed in capability mode | compiler; reading |
//! | kqueue's `EV_EOF` on a SEQPACKET peer's close (`filt_soread`) is dropped by polling, so an empty record ends the stream; `MSG_TRUNC` is ignored on SEQPACKET, harmless below `net.local.seqpacket.maxseqpacket` | reading |
//! | restricted mode: `cap_enter` leaves libslirp working on its planned sockets | reading only |
//!
//! Per front end and mode (C: compiler, T: a Linux test of the plan or
//! logic FreeBSD applies, R: reading FreeBSD's sources; none of it run):
//!
//! | front end | restricted (`cap_enter`) | open (rights only, no capability mode) |
//! |---|---|---|
//! | `caploop-sandbox -S` (bhyve) | C; T: the plan table, the empty-record end; R: EV_EOF, MSG_TRUNC, libslirp on planned sockets in capability mode | C; T: datagram sockets get CONNECT; R: `kern_sendit`, ping |
//! | `--qemu-stream` | C; T: the plan table | C; T, R: as above |
//! | `--qemu-dgram` | C; T: the plan table, the `maxdgram` check given a limit | C; T, R: as above |
//! | `--vhost-user`, slirp4netns | not built on FreeBSD (Linux-only crates, network namespaces): they say Unsupported | same |
//! | library `slirp` back end | C; T: libslirp's sockets leave the queue while open | C; T: CONNECT on datagram sockets |
//! | library `slirp-helper` back end | C (`pdfork`, `pdkill`, `EVFILT_PROCDESC`); R: `sys_procdesc.c` | same |
//! | library `tap`/`vmnet`, `netmap`/`vale` | C; T: the ring model for netmap, the ioctl plan | same |
//!
//! A guest's ping in open mode gets no answer from outside on FreeBSD:
//! there is no ICMP datagram socket, libslirp's raw-socket fallback needs
//! root (given up), and its last fallback, UDP to the echo port, reaches
//! only hosts that run an echo service; `caploop-sandbox` says so once at
//! start. Pings to the gateway and DNS addresses are answered by libslirp
//! itself on every platform. In restricted mode libslirp drops every UDP
//! datagram from the guest on every platform, so a UDP host forward is
//! one-way there (the stack warns when one is added).
//!
//! # Libraries running inside
//!
//! libslirp (4.7) is tested inside the sandbox by `tests/sandbox_slirp.rs`.
//! In restricted mode it accepts on host-forward listeners planned before
//! entry (`accept`, `fcntl F_GETFL/F_SETFL`, `setsockopt`, then
//! `recvfrom`/`sendto` without an address, `shutdown`), all allowed. In
//! open mode it also makes sockets and connects (`socket`, `setsockopt`
//! `SO_REUSEADDR`/`SO_OOBINLINE`/`TCP_NODELAY`/`IP_RECVERR`/`IP_TTL`,
//! `connect`, `getpeername`, `sendto` with an address, `recvmsg(MSG_ERRQUEUE)`,
//! `ioctl(FIONREAD)`), allowed in open mode; a `connect` to a port not in
//! [`Policy::connect_ports`] fails with `EACCES` and libslirp answers the
//! guest's SYN with ICMP unreachable.
//!
//! Its DNS forwarder (open mode only) needs care. libslirp reads
//! `/etc/resolv.conf` on the first query and keeps the first nameserver for
//! one second; after that every query `stat`s the file and reuses the
//! cached address if device, inode, size and mtime equal those of its
//! previous `stat`, else reads the file again. A failed `stat` or read
//! **drops the query**. The file cannot be opened after entry, so:
//!
//! - make the guest side send two DNS queries to the virtual nameserver
//!   more than a second apart before entering (from a [`Plan::before_entry`]
//!   hook, or before taking the plan): the first makes libslirp read the
//!   file, the second makes it record the `stat` it compares against later.
//!   With one query only, the first query after the cache second expires
//!   is dropped (its `stat` differs from the empty record, and the read is
//!   refused); later ones work.
//! - open mode allows `newfstatat(AT_FDCWD, path, buf, 0)` (what glibc's
//!   `stat` makes) for that `stat`. seccomp cannot check the path, so in
//!   open mode the process can learn any path's metadata, not its
//!   contents.
//! - if `/etc/resolv.conf` changes after entry, the first query that sees
//!   the change is dropped and libslirp keeps the old nameserver.

mod plan;
mod rules;

#[cfg(target_os = "freebsd")]
mod capsicum;
#[cfg(target_os = "linux")]
mod linux;

use std::os::fd::RawFd;
use std::sync::OnceLock;

pub use plan::{Mode, Plan, PlannedFd, Policy};
pub use rules::{
    capsicum_limits, landlock_missing, landlock_rules, landlock_rules_for, linux_abi,
    seccomp_rules, CapFcntl, CapIoctl, CapLimits, CapRight, Cmp, Cond, LandlockRules, ProcessFacts,
    SeccompRules, Sys, SysRule, BASE_SYSCALLS, FATAL_SIGNALS, FD_SYSCALLS, SOCKET_OPTIONS,
};

/// What went wrong while entering the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This platform has no sandbox implementation.
    #[error("sandboxing is not supported on {0}: caploop can enter a sandbox on FreeBSD (Capsicum) and Linux (seccomp + Landlock) only")]
    Unsupported(&'static str),
    /// The process already entered the sandbox.
    #[error("the sandbox was already entered")]
    AlreadyEntered,
    /// A planned descriptor is not open.
    #[error("fd {fd} ({label}) is not open")]
    BadFd {
        /// The descriptor.
        fd: RawFd,
        /// Who planned it.
        label: String,
    },
    /// Limiting a planned descriptor failed.
    #[error("limiting fd {fd} ({label}) with {call}: {source}")]
    Limit {
        /// The descriptor.
        fd: RawFd,
        /// Who planned it.
        label: String,
        /// The call that failed (`cap_rights_limit`...).
        call: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A syscall needed to enter failed.
    #[error("{syscall} failed: {source}")]
    Syscall {
        /// The syscall, with its arguments where that helps.
        syscall: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A [`Plan::before_entry`] hook failed.
    #[error("before-entry hook {name:?} failed: {source}")]
    Hook {
        /// The hook's name.
        name: String,
        /// Its error.
        source: std::io::Error,
    },
    /// Building or applying the Landlock ruleset failed.
    #[error("Landlock: {0}")]
    Landlock(String),
    /// Building or installing the seccomp filter failed.
    #[error("seccomp filter: {0}")]
    Seccomp(String),
}

/// Result of sandbox operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How completely Landlock enforces what caploop relies on it for (see
/// [`landlock_missing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Everything asked for is enforced.
    Full,
    /// Part of it (the kernel's ABI lacks some access rights).
    Partial,
    /// Nothing (Landlock missing or disabled).
    None,
}

/// What Landlock was asked for and what the kernel enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockReport {
    /// The ABI used: the lower of the kernel's and the `landlock` crate's
    /// (0: Landlock unavailable).
    pub abi: u32,
    /// How much of `rules` is enforced.
    pub enforcement: Enforcement,
    /// What was asked for.
    pub rules: LandlockRules,
}

impl LandlockReport {
    /// One plain sentence saying what Landlock enforces, for a log line or
    /// a warning.
    pub fn summary(&self) -> String {
        match self.enforcement {
            Enforcement::None => "Landlock is not available on this kernel (not built in, or \
                                  not enabled at boot): the filesystem and TCP rules rest on \
                                  seccomp alone"
                .to_string(),
            Enforcement::Partial => format!(
                "Landlock ABI {} does not enforce {}: that rests on seccomp alone",
                self.abi,
                landlock_missing(self.abi, &self.rules).join(" or ")
            ),
            Enforcement::Full => format!("Landlock ABI {} enforces every rule asked for", self.abi),
        }
    }
}

/// The seccomp filter that was installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompReport {
    /// The allowed syscalls (some with argument checks).
    pub syscalls: Vec<Sys>,
    /// Length of the BPF program.
    pub instructions: usize,
    /// Violations are logged rather than refused ([`Policy::audit`]).
    pub audit: bool,
}

/// What [`Plan::apply_and_enter`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The mode entered.
    pub mode: Mode,
    /// The descriptors limited, with their rights.
    pub limited: Vec<PlannedFd>,
    /// Open descriptors that were not in the plan. They keep full rights on
    /// FreeBSD; on Linux only the syscall allowlist applies to them.
    pub unplanned_fds: Vec<RawFd>,
    /// FreeBSD: capability mode was entered.
    pub capability_mode: bool,
    /// Linux: `PR_SET_NO_NEW_PRIVS` is set.
    pub no_new_privs: bool,
    /// Linux: Landlock.
    pub landlock: Option<LandlockReport>,
    /// Linux: the seccomp filter.
    pub seccomp: Option<SeccompReport>,
    /// What is weaker than asked, in words.
    pub warnings: Vec<String>,
}

impl Report {
    fn new(plan: &Plan, policy: &Policy) -> Report {
        Report {
            mode: policy.mode,
            limited: plan.fds.clone(),
            unplanned_fds: Vec::new(),
            capability_mode: false,
            no_new_privs: false,
            landlock: None,
            seccomp: None,
            warnings: Vec::new(),
        }
    }
}

/// The seccomp mode of the calling thread (`Seccomp:` in
/// `/proc/thread-self/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompMode {
    /// No seccomp.
    Disabled,
    /// Strict mode (read, write, exit only).
    Strict,
    /// A BPF filter.
    Filter,
}

/// The process's sandbox state, as the kernel and this module see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SandboxStatus {
    /// This module entered the sandbox, in this mode.
    pub entered: Option<Mode>,
    /// FreeBSD: the process is in capability mode (`cap_getmode`).
    pub capability_mode: Option<bool>,
    /// Linux: `NoNewPrivs` of the thread.
    pub no_new_privs: Option<bool>,
    /// Linux: `Seccomp` of the thread.
    pub seccomp: Option<SeccompMode>,
    /// Linux: `Seccomp_filters` of the thread (stacked filters).
    pub seccomp_filters: Option<u32>,
    /// Linux: the Landlock domain this module applied (the kernel does not
    /// show it in `/proc`).
    pub landlock: Option<LandlockReport>,
}

impl SandboxStatus {
    /// Whether any layer is active: capability mode, a seccomp filter, or a
    /// Landlock domain this module applied.
    pub fn is_sandboxed(&self) -> bool {
        self.capability_mode == Some(true)
            || matches!(
                self.seccomp,
                Some(SeccompMode::Filter | SeccompMode::Strict)
            )
            || self
                .landlock
                .as_ref()
                .is_some_and(|l| l.enforcement != Enforcement::None)
    }
}

/// What this module applied, recorded once entered.
#[derive(Debug)]
struct Entered {
    mode: Mode,
    landlock: Option<LandlockReport>,
}

static ENTERED: OnceLock<Entered> = OnceLock::new();

/// The sandbox state of the process (on Linux, of the calling thread: seccomp
/// and Landlock are per thread). Works before and after entry.
pub fn status() -> SandboxStatus {
    let mut st = SandboxStatus::default();
    if let Some(e) = ENTERED.get() {
        st.entered = Some(e.mode);
        st.landlock = e.landlock.clone();
    }
    platform_status(&mut st);
    st
}

#[cfg(target_os = "linux")]
fn platform_status(st: &mut SandboxStatus) {
    if let Some(text) = linux::read_status() {
        let (nnp, mode, filters) = parse_proc_status(&text);
        st.no_new_privs = nnp;
        st.seccomp = mode;
        st.seccomp_filters = filters;
    }
}

#[cfg(target_os = "freebsd")]
fn platform_status(st: &mut SandboxStatus) {
    st.capability_mode = ::capsicum::get_mode().ok();
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn platform_status(_st: &mut SandboxStatus) {}

/// Reads `NoNewPrivs`, `Seccomp` and `Seccomp_filters` from the text of a
/// Linux `/proc/<pid>/status` file.
pub fn parse_proc_status(text: &str) -> (Option<bool>, Option<SeccompMode>, Option<u32>) {
    let mut out = (None, None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "NoNewPrivs" => out.0 = value.parse::<u32>().ok().map(|v| v != 0),
            "Seccomp" => {
                out.1 = match value {
                    "0" => Some(SeccompMode::Disabled),
                    "1" => Some(SeccompMode::Strict),
                    "2" => Some(SeccompMode::Filter),
                    _ => None,
                }
            }
            "Seccomp_filters" => out.2 = value.parse().ok(),
            _ => {}
        }
    }
    out
}

impl Plan {
    /// Runs the hooks, limits every planned descriptor and enters the
    /// sandbox under `policy`. See the [module docs](self).
    pub fn apply_and_enter(self, policy: &Policy) -> Result<Report> {
        enter(self, policy)
    }
}

/// Runs `plan`'s hooks, limits every planned descriptor and enters the
/// sandbox under `policy` (the same as [`Plan::apply_and_enter`]).
pub fn enter(plan: Plan, policy: &Policy) -> Result<Report> {
    if !cfg!(any(target_os = "linux", target_os = "freebsd")) {
        return Err(Error::Unsupported(std::env::consts::OS));
    }
    if ENTERED.get().is_some() {
        return Err(Error::AlreadyEntered);
    }
    let Plan { fds, hooks } = plan;
    for (name, hook) in hooks {
        hook().map_err(|source| Error::Hook { name, source })?;
    }
    let plan = Plan {
        fds,
        hooks: Vec::new(),
    };
    for p in &plan.fds {
        if !is_open(p.fd) {
            return Err(Error::BadFd {
                fd: p.fd,
                label: p.label.clone(),
            });
        }
    }
    let mut report = Report::new(&plan, policy);
    report.unplanned_fds = open_fds()
        .into_iter()
        .filter(|fd| plan.rights_of(*fd).is_none())
        .collect();
    if !report.unplanned_fds.is_empty() {
        log::debug!(
            "descriptors open but not planned: {:?}",
            report.unplanned_fds
        );
    }
    cache_libc_data();
    let landlock = platform_enter(&plan, policy, &mut report)?;
    let _ = ENTERED.set(Entered {
        mode: policy.mode,
        landlock,
    });
    Ok(report)
}

#[cfg(target_os = "linux")]
fn platform_enter(
    plan: &Plan,
    policy: &Policy,
    report: &mut Report,
) -> Result<Option<LandlockReport>> {
    linux::enter(plan, policy, report)?;
    Ok(report.landlock.clone())
}

#[cfg(target_os = "freebsd")]
fn platform_enter(
    plan: &Plan,
    policy: &Policy,
    report: &mut Report,
) -> Result<Option<LandlockReport>> {
    self::capsicum::enter(plan, policy, report)?;
    Ok(None)
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn platform_enter(
    _plan: &Plan,
    _policy: &Policy,
    _report: &mut Report,
) -> Result<Option<LandlockReport>> {
    Err(Error::Unsupported(std::env::consts::OS))
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor table entry.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

/// Every open descriptor, found by probing up to the soft `RLIMIT_NOFILE`
/// (at most 65536).
fn open_fds() -> Vec<RawFd> {
    // SAFETY: sysconf has no memory effects.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    let max = if max <= 0 { 1024 } else { max.min(65536) } as RawFd;
    (0..max).filter(|&fd| is_open(fd)).collect()
}

/// Loads what libc reads lazily and could not read after entry: time zone
/// data (`caph_cache_tzdata` in FreeBSD's libcasper does the same).
fn cache_libc_data() {
    let t: libc::time_t = 0;
    // SAFETY: `tm` is a plain C struct for localtime_r to fill; both
    // pointers are valid for the call.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tx\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        assert_eq!(
            parse_proc_status(text),
            (Some(true), Some(SeccompMode::Filter), Some(1))
        );
        let text = "NoNewPrivs:\t0\nSeccomp:\t0\n";
        assert_eq!(
            parse_proc_status(text),
            (Some(false), Some(SeccompMode::Disabled), None)
        );
    }

    #[test]
    fn status_before_entry_is_not_sandboxed() {
        let st = status();
        assert_eq!(st.entered, None);
        #[cfg(target_os = "linux")]
        assert!(st.seccomp.is_some());
    }

    #[test]
    fn hook_errors_name_the_hook() {
        if ENTERED.get().is_some() {
            return;
        }
        let mut plan = Plan::new();
        plan.before_entry("boom", || Err(std::io::Error::other("no")));
        match enter(plan, &Policy::restricted()) {
            Err(Error::Hook { name, .. }) => assert_eq!(name, "boom"),
            #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
            Err(Error::Unsupported(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn closed_fd_is_refused_before_anything_applies() {
        let mut plan = Plan::new();
        plan.add_raw(1_000_000, crate::Rights::READ, "ghost");
        match enter(plan, &Policy::restricted()) {
            Err(Error::BadFd { fd, label }) => {
                assert_eq!(fd, 1_000_000);
                assert_eq!(label, "ghost");
            }
            #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
            Err(Error::Unsupported(_)) => {}
            other => panic!("{other:?}"),
        }
        assert!(!status().seccomp.is_some_and(|m| m == SeccompMode::Filter));
    }
}
