//! The fixed tables the filter is built from: syscalls always allowed,
//! descriptor syscalls with the right each needs, the fatal signals, the
//! socket options libslirp and std set.

use super::linux_abi;
use super::syscalls::Sys;
use crate::rights::Rights;

/// Syscalls allowed whatever the arguments, in every mode. Found by running
/// the tests and the example under `strace -f` (see the `linux` module docs).
pub const BASE_SYSCALLS: &[Sys] = &[
    Sys::EpollPwait,
    Sys::EpollPwait2,
    Sys::EpollCtl,
    Sys::TimerfdSettime,
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
/// sockets) are governed by the allowlist alone. `sendmsg` is not here:
/// nothing caploop runs needs it, and its `msg_name` could name any
/// destination (see [`seccomp_rules`](super::seccomp_rules)).
pub const FD_SYSCALLS: &[(Sys, Rights)] = &[
    (Sys::Read, Rights::READ),
    (Sys::Readv, Rights::READ),
    (Sys::Write, Rights::WRITE),
    (Sys::Writev, Rights::WRITE),
    (Sys::Recvfrom, Rights::RECV),
    (Sys::Recvmsg, Rights::RECV),
    (Sys::Sendto, Rights::SEND),
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
    // The size of a descriptor received after entry (vhost-user's guest
    // memory, checked before it is mapped). The raw syscall: glibc's
    // fstat() is newfstatat, which could also name paths.
    (Sys::Fstat, Rights::FSTAT),
];

/// The signals whose default action ends the process with a core: a fault
/// (`SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`, `SIGTRAP`, `SIGSYS`) or an
/// abort. A sandboxed process may reset their handlers and send `SIGABRT`
/// to itself, so that a crash ends it instead of spinning.
pub const FATAL_SIGNALS: &[u64] = &[
    linux_abi::SIGILL,
    linux_abi::SIGTRAP,
    linux_abi::SIGABRT,
    linux_abi::SIGBUS,
    linux_abi::SIGFPE,
    linux_abi::SIGSEGV,
    linux_abi::SIGSYS,
];

/// The socket options libslirp 4.7 and std set on sockets after entry
/// (`(level, option)`; read from libslirp's source: `SO_REUSEADDR` and
/// `SO_OOBINLINE` on TCP sockets, `TCP_NODELAY`, `IP_TTL`/`IPV6_UNICAST_HOPS`
/// before forwarding a datagram, `IP_RECVERR`/`IPV6_RECVERR` on UDP
/// sockets, `IPV6_V6ONLY` on IPv6 host forwards), and the own TCP path
/// (`crate::tcp`: `SO_LINGER` 0 so that a flow ending in a reset resets
/// its host peer too). Every other option is
/// refused: no `SO_MARK`, `SO_BINDTODEVICE`, `IP_TRANSPARENT`,
/// `SO_ATTACH_FILTER`...
pub const SOCKET_OPTIONS: &[(u64, u64)] = &[
    (linux_abi::SOL_SOCKET, linux_abi::SO_REUSEADDR),
    (linux_abi::SOL_SOCKET, linux_abi::SO_OOBINLINE),
    (linux_abi::SOL_SOCKET, linux_abi::SO_LINGER),
    (linux_abi::IPPROTO_TCP, linux_abi::TCP_NODELAY),
    (linux_abi::IPPROTO_IP, linux_abi::IP_TTL),
    (linux_abi::IPPROTO_IP, linux_abi::IP_RECVERR),
    (linux_abi::IPPROTO_IPV6, linux_abi::IPV6_UNICAST_HOPS),
    (linux_abi::IPPROTO_IPV6, linux_abi::IPV6_RECVERR),
    (linux_abi::IPPROTO_IPV6, linux_abi::IPV6_V6ONLY),
];
