//! Joining the target's namespaces in a forked child and passing the tap
//! back: the child joins the user namespace (`setns(CLONE_NEWUSER)` needs a
//! single-threaded caller: a forked child always is), then the network
//! namespace, opens the tap and configures it, and sends the descriptor
//! over a `SOCK_SEQPACKET` socketpair (`SCM_RIGHTS`, one `\0` byte of
//! payload) and exits 0; on any failure it sends one line saying what went
//! wrong instead and exits 1. The parent receives, reaps the child and
//! returns the descriptor or the child's message.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use caploop::net::TapDevice;
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::ifconfig::{configure, Configure};
use super::target::{NsFds, Target};
use super::NetnsError;

/// What the parent got over the socket.
pub(super) enum Received {
    Fd(OwnedFd),
    Message(String),
    Nothing,
}

/// Receives the child's one record: a `\0` byte with the descriptor, or
/// a message.
pub(super) fn receive(sock: BorrowedFd<'_>) -> Result<Received, Errno> {
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
pub(super) fn reap(child: Pid) -> Result<WaitStatus, Errno> {
    loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

pub(super) fn finish(
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
pub(super) fn child_main(
    ns: &NsFds,
    tapname: &str,
    cfg: Option<&Configure>,
    offload: bool,
    sock: BorrowedFd<'_>,
) -> i32 {
    match child_work(ns, tapname, cfg, offload) {
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
fn child_work(
    ns: &NsFds,
    tapname: &str,
    cfg: Option<&Configure>,
    offload: bool,
) -> Result<OwnedFd, String> {
    if let Some(user) = &ns.user {
        setns(user, CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("joining the user namespace (setns CLONE_NEWUSER): {e}"))?;
    }
    setns(&ns.net, CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("joining the network namespace (setns CLONE_NEWNET): {e}"))?;
    let tap = match offload.then(|| TapDevice::open_vnet(tapname)) {
        Some(Ok(tap)) => {
            // Refused (an old kernel): frames keep their header, whole.
            let _ = tap.set_offload(super::OFFLOADS);
            tap
        }
        // No virtio-net header to be had: the plain tap.
        Some(Err(_)) | None => TapDevice::open(tapname).map_err(|e| e.to_string())?,
    };
    if let Some(cfg) = cfg {
        configure(tapname, cfg)?;
    }
    Ok(tap.into_fd())
}
