//! The slirp4netns front end's way into the target: join its namespaces,
//! open the tap there, and bring the descriptor back.
//!
//! slirp4netns does this in a forked child, and so does [`open_tap_with`]:
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
//!    namespace, opens the tap ([`TapDevice::open`](caploop::net::tap::TapDevice::open): it attaches to a tap of
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
//!
//! By idea: [`target`] (what to join, checked), [`join`] (the forked
//! child and the descriptor passing), [`ifconfig`] (what `-c` sets).

mod ifconfig;
mod join;
mod target;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::{fork, ForkResult};

pub use ifconfig::{parse_mac, Configure};
pub use target::Target;

/// The offloads asked of a tap opened with `offload`: partial checksums
/// and TCP super-segments, IPv4 and IPv6.
pub const OFFLOADS: u32 = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

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
    #[error("{value:?} is an invalid MAC address: {reason}")]
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
#[cfg(test)]
pub fn open_tap(
    target: &Target,
    userns_path: Option<&Path>,
    tapname: &str,
    configure: Option<&Configure>,
) -> Result<OwnedFd, NetnsError> {
    open_tap_with(target, userns_path, tapname, configure, false)
}

/// `open_tap`, and with `offload` the tap is opened with a virtio-net
/// header on every frame and asked for checksum and TCP segmentation
/// offload ([`OFFLOADS`]); where the kernel refuses either, the tap comes
/// without (ask [`caploop::net::tap::has_vnet_hdr`] which it is).
pub fn open_tap_with(
    target: &Target,
    userns_path: Option<&Path>,
    tapname: &str,
    configure: Option<&Configure>,
    offload: bool,
) -> Result<OwnedFd, NetnsError> {
    if let Some(cfg) = configure {
        cfg.check()?;
    }
    let ns = target::namespace_fds(target, userns_path)?;
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
                join::child_main(&ns, tapname, configure, offload, child_sock.as_fd())
            }))
            .unwrap_or(2);
            // SAFETY: `_exit` ends the child at once, without running the
            // parent's atexit handlers or flushing its stdio buffers twice.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(child_sock);
            drop(ns);
            let got = join::receive(parent_sock.as_fd());
            let status = join::reap(child);
            join::finish(got, status, target, tapname)
        }
    }
}
