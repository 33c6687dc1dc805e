//! Platform-neutral descriptor rights.
//!
//! Every registration in the [`Reactor`](crate::reactor::Reactor) records the
//! [`Rights`] its descriptor needs. The sandbox turns them into
//! `cap_rights_t` plus ioctl and fcntl limits on FreeBSD, and into seccomp
//! argument checks on Linux, so that a descriptor can do exactly what the loop
//! does with it and nothing more.

bitflags::bitflags! {
    /// What a descriptor may be used for once the sandbox is entered.
    ///
    /// The set is portable: each flag names an operation, not a platform
    /// constant. `RECV` and `SEND` are kept apart from `READ` and `WRITE` so
    /// Linux can tell `recvfrom`/`sendto` from `read`/`write`; on FreeBSD they
    /// map to the same capability rights (`CAP_RECV` is `CAP_READ`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Rights: u32 {
        /// `read`, `readv`.
        const READ = 1 << 0;
        /// `write`, `writev`.
        const WRITE = 1 << 1;
        /// Polling for readiness (`CAP_EVENT`).
        const EVENT = 1 << 2;
        /// `recv`, `recvfrom`, `recvmsg`.
        const RECV = 1 << 3;
        /// `send`, `sendto` (without an address), `sendmsg`.
        const SEND = 1 << 4;
        /// `accept` on a listening socket.
        const ACCEPT = 1 << 5;
        /// `connect`.
        const CONNECT = 1 << 6;
        /// `bind`.
        const BIND = 1 << 7;
        /// `listen`.
        const LISTEN = 1 << 8;
        /// `shutdown`.
        const SHUTDOWN = 1 << 9;
        /// `getsockopt`.
        const GETSOCKOPT = 1 << 10;
        /// `setsockopt`.
        const SETSOCKOPT = 1 << 11;
        /// `getpeername`.
        const GETPEERNAME = 1 << 12;
        /// `getsockname`.
        const GETSOCKNAME = 1 << 13;
        /// `fstat`.
        const FSTAT = 1 << 14;
        /// `fcntl(F_GETFL)` and `fcntl(F_SETFL)` (non-blocking mode).
        const FCNTL_FLAGS = 1 << 15;
        /// `ioctl(FIONREAD)`.
        const IOCTL_FIONREAD = 1 << 16;
        /// The ioctls of a tap device (`TUNSETIFF` and friends on Linux).
        const IOCTL_TAP = 1 << 17;
        /// Waiting on and changing an event queue (kqueue or epoll).
        const POLLER = 1 << 18;
        /// `lseek`.
        const SEEK = 1 << 19;
        /// The descriptor may be closed while the sandbox is in force and
        /// its number freed (a library's socket, a ready pipe written
        /// once), after which the number can come back as a descriptor of
        /// another kind. Linux's seccomp rules can only name descriptor
        /// numbers, so none are made for it (the syscall allowlist still
        /// applies); FreeBSD's capability rights follow the open file and
        /// apply as usual. Without it a planned number is never freed
        /// after entry ([`closing`](crate::closing)).
        const EPHEMERAL = 1 << 20;
        /// The netmap ioctls: `NIOCTXSYNC`, `NIOCRXSYNC` and `NIOCCTRL`
        /// (a port's virtio-net header length).
        const IOCTL_NETMAP = 1 << 21;
        /// `sendmsg`, on a connected unix stream socket only (vhost-user's
        /// replies; a stream socket ignores `msg_name`). Unlike the other
        /// socket rights, Linux allows `sendmsg` on the planned
        /// descriptors that carry it and on no other descriptor.
        const SENDMSG = 1 << 22;
        /// A process descriptor (Linux's pidfd, FreeBSD's process
        /// descriptor): waiting for the process's exit and killing it
        /// (`waitid(P_PIDFD)` and `pidfd_send_signal` of SIGTERM or
        /// SIGKILL; `CAP_PDWAIT` and `CAP_PDKILL`), so a sandboxed VMM
        /// can still reap and end the helper it spawned.
        const PROCESS = 1 << 23;
    }
}

impl Rights {
    /// A descriptor the loop only reads and polls (a pipe's read end,
    /// a signalfd, an eventfd).
    pub const READ_ONLY: Rights = Rights::READ.union(Rights::EVENT).union(Rights::FSTAT);

    /// A descriptor the loop only writes and polls.
    pub const WRITE_ONLY: Rights = Rights::WRITE.union(Rights::EVENT).union(Rights::FSTAT);

    /// A connected stream or datagram socket used for both directions.
    pub const SOCKET: Rights = Rights::READ
        .union(Rights::WRITE)
        .union(Rights::EVENT)
        .union(Rights::RECV)
        .union(Rights::SEND)
        .union(Rights::SHUTDOWN)
        .union(Rights::GETSOCKOPT)
        .union(Rights::GETSOCKNAME)
        .union(Rights::GETPEERNAME)
        .union(Rights::FSTAT);

    /// A listening socket. On FreeBSD `accept` hands the listener's rights to
    /// every accepted socket, so a listener also carries what the loop does
    /// to those sockets.
    pub const LISTENER: Rights = Rights::SOCKET
        .union(Rights::ACCEPT)
        .union(Rights::SETSOCKOPT)
        .union(Rights::FCNTL_FLAGS)
        .union(Rights::IOCTL_FIONREAD);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compound_rights() {
        assert!(Rights::LISTENER.contains(Rights::ACCEPT | Rights::SETSOCKOPT));
        assert!(!Rights::READ_ONLY.contains(Rights::WRITE));
    }
}
