//! Linux ABI constants the rules compare against. They are the same on
//! x86_64 and aarch64 (asm-generic ioctls, generic fcntl commands); the
//! Linux back end checks them against `libc` in its tests.

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
/// netmap's `NIOCTXSYNC` (`_IO('i', 148)`).
pub const NIOCTXSYNC: u64 = 0x6994;
/// netmap's `NIOCRXSYNC` (`_IO('i', 149)`).
pub const NIOCRXSYNC: u64 = 0x6995;
/// netmap's `NIOCCTRL` (`_IOWR('i', 151, struct nmreq_header)`).
pub const NIOCCTRL: u64 = 0xc058_6997;
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
/// `SOCK_DGRAM`.
pub const SOCK_DGRAM: u64 = 2;
/// `IPPROTO_IP`, also the "default protocol" argument of `socket`.
pub const IPPROTO_IP: u64 = 0;
/// `IPPROTO_ICMP`: `socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)` is an
/// unprivileged ping socket.
pub const IPPROTO_ICMP: u64 = 1;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u64 = 6;
/// `IPPROTO_IPV6`.
pub const IPPROTO_IPV6: u64 = 41;
/// `SOL_SOCKET` (1 on x86_64 and aarch64; other values elsewhere).
pub const SOL_SOCKET: u64 = 1;
/// `SO_REUSEADDR`.
pub const SO_REUSEADDR: u64 = 2;
/// `SO_OOBINLINE`.
pub const SO_OOBINLINE: u64 = 10;
/// `SO_LINGER`.
pub const SO_LINGER: u64 = 13;
/// `TCP_NODELAY`.
pub const TCP_NODELAY: u64 = 1;
/// `IP_TTL`.
pub const IP_TTL: u64 = 2;
/// `IP_RECVERR`.
pub const IP_RECVERR: u64 = 11;
/// `IPV6_UNICAST_HOPS`.
pub const IPV6_UNICAST_HOPS: u64 = 16;
/// `IPV6_RECVERR`.
pub const IPV6_RECVERR: u64 = 25;
/// `IPV6_V6ONLY`.
pub const IPV6_V6ONLY: u64 = 26;
/// `MSG_FASTOPEN`: a `sendto`/`sendmsg` flag that connects a TCP
/// socket (TCP Fast Open) without `connect`.
pub const MSG_FASTOPEN: u64 = 0x2000_0000;
/// `SIGILL`.
pub const SIGILL: u64 = 4;
/// `SIGTRAP`.
pub const SIGTRAP: u64 = 5;
/// `SIGABRT`.
pub const SIGABRT: u64 = 6;
/// `SIGBUS`.
pub const SIGBUS: u64 = 7;
/// `SIGFPE`.
pub const SIGFPE: u64 = 8;
/// `SIGSEGV`.
pub const SIGSEGV: u64 = 11;
/// `SIGSYS`.
pub const SIGSYS: u64 = 31;
/// `SIGKILL`.
pub const SIGKILL: u64 = 9;
/// `SIGTERM`.
pub const SIGTERM: u64 = 15;
/// `P_PIDFD`: `waitid`'s id is a pidfd.
pub const P_PIDFD: u64 = 3;
/// `CLONE_THREAD`: a `clone` that makes a thread, not a process.
pub const CLONE_THREAD: u64 = 0x0001_0000;
/// `PR_SET_NAME`.
pub const PR_SET_NAME: u64 = 15;
/// `PR_GET_NAME`.
pub const PR_GET_NAME: u64 = 16;
