//! QEMU's two socket netdevs. `-netdev stream,server=off,addr.type=unix,
//! addr.path=PATH`: the helper listens on PATH, QEMU connects, frames are
//! length-prefixed ([`crate::stream`]); the helper accepts the one
//! connection and removes the socket file before entering the sandbox, so
//! the sandboxed loop holds no listener and leaves nothing on the
//! filesystem. `-netdev dgram,...,remote.type=unix,remote.path=PATH`: one
//! frame per datagram on a socket the helper binds at PATH. Socket files
//! are made 0600 whatever the umask.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use caploop::wire::stream::DEFAULT_MAX_FRAME;

use crate::cli::UsageError;
use crate::error::ServeError;
use crate::link::LinkKind;
use crate::record::{Medium, RecordRx, RecordTx};
use crate::source::Link;
use crate::startup;
use crate::stream::{StreamRx, StreamTx};

fn link_err(what: String) -> impl FnOnce(io::Error) -> ServeError {
    move |source| ServeError::Link { what, source }
}

/// Listens on `path`, waits for QEMU's connection, removes the socket file
/// and returns the link.
pub fn open_stream(path: &Path) -> Result<Link, ServeError> {
    startup::close_other_fds(&[])?;
    startup::clear_socket_path(path, "--qemu-stream")?;
    let listener = startup::listen_private(path)
        .map_err(link_err(format!("listening on {}", path.display())))?;
    eprintln!(
        "caploop-sandbox: waiting for QEMU on {p}: qemu-system-x86_64 ... \
         -netdev stream,id=n0,server=off,addr.type=unix,addr.path={p} \
         -device virtio-net-pci,netdev=n0",
        p = path.display()
    );
    let (conn, _) = listener
        .accept()
        .map_err(link_err(format!("accepting on {}", path.display())))?;
    drop(listener);
    if let Err(e) = std::fs::remove_file(path) {
        log::warn!("removing {}: {e}", path.display());
    }
    conn.set_nonblocking(true)
        .map_err(link_err("making QEMU's connection non-blocking".into()))?;
    widen_buffers(&conn);
    let fd = OwnedFd::from(conn);
    let raw = fd.as_raw_fd();
    Ok(Link::polled(
        fd,
        LinkKind::Socket,
        Box::new(StreamRx::new(raw, DEFAULT_MAX_FRAME)),
        Box::new(StreamTx::new(raw)),
    ))
}

/// Bytes asked for each way of QEMU's stream socket; the kernel grants at
/// most `net.core.wmem_max` / `rmem_max` (Linux) or `kern.ipc.maxsockbuf`
/// (FreeBSD).
const STREAM_SOCKET_BUFFER: usize = 8 << 20;

/// Asks for large socket buffers both ways, as passt does on its own QEMU
/// socket: with the default (208 KiB on Linux, three frames at MTU 65520)
/// the loop stops for `EPOLLOUT` every few frames and QEMU finds the
/// socket empty between them. Best effort: a refusal only costs speed.
fn widen_buffers(conn: &impl AsFd) {
    use nix::sys::socket::{setsockopt, sockopt};
    let snd = setsockopt(conn, sockopt::SndBuf, &STREAM_SOCKET_BUFFER);
    let rcv = setsockopt(conn, sockopt::RcvBuf, &STREAM_SOCKET_BUFFER);
    if let Err(e) = snd.and(rcv) {
        log::debug!("QEMU's socket keeps its default buffers: {e}");
    }
}

/// Binds the datagram socket for `-netdev dgram` and waits for QEMU's first
/// frame, whose sender address it connects to (left queued, so the frame
/// is served). The socket file stays while QEMU sends to it; the helper
/// cannot remove it from inside the sandbox.
pub fn open_dgram(path: &Path, mtu: usize) -> Result<Link, ServeError> {
    startup::close_other_fds(&[])?;
    startup::clear_socket_path(path, "--qemu-dgram")?;
    let sock = startup::bind_private(|| UnixDatagram::bind(path))
        .map_err(link_err(format!("binding {}", path.display())))?;
    if let Some((limit, what)) = local_dgram_limit(&sock) {
        dgram_fits(mtu, limit, what)?;
    }
    eprintln!(
        "caploop-sandbox: waiting for QEMU on {p}: qemu-system-x86_64 ... \
         -netdev dgram,id=n0,local.type=unix,local.path=QEMU.sock,remote.type=unix,remote.path={p} \
         -device virtio-net-pci,netdev=n0",
        p = path.display()
    );
    let mut first = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut first)];
    let msg = nix::sys::socket::recvmsg::<nix::sys::socket::UnixAddr>(
        sock.as_raw_fd(),
        &mut iov,
        None,
        nix::sys::socket::MsgFlags::MSG_PEEK,
    )
    .map_err(|e| ServeError::Link {
        what: format!("waiting for QEMU on {}", path.display()),
        source: e.into(),
    })?;
    let Some(peer) = msg
        .address
        .as_ref()
        .and_then(|a| a.path())
        .map(Path::to_path_buf)
    else {
        return Err(ServeError::Link {
            what: format!("--qemu-dgram {}", path.display()),
            source: io::Error::other(
                "the first datagram came from an unnamed socket; give QEMU \
                 local.type=unix,local.path=...",
            ),
        });
    };
    sock.connect(&peer).map_err(link_err(format!(
        "connecting to QEMU at {}",
        peer.display()
    )))?;
    sock.set_nonblocking(true)
        .map_err(link_err("making the datagram socket non-blocking".into()))?;
    let fd = OwnedFd::from(sock);
    let raw = fd.as_raw_fd();
    Ok(Link::polled(
        fd,
        LinkKind::Socket,
        Box::new(RecordRx::new(raw, Medium::Datagram, "QEMU")),
        Box::new(RecordTx::new(
            raw,
            Medium::Datagram,
            DEFAULT_MAX_FRAME,
            "QEMU",
        )),
    ))
}

/// Refuses an MTU whose frames (MTU + 14) would not fit one local
/// datagram of at most `limit` bytes (`what` says where the limit comes
/// from): such frames would fail with `EMSGSIZE`, one by one, all session.
pub fn dgram_fits(mtu: usize, limit: usize, what: &str) -> Result<(), UsageError> {
    let frame = mtu + caploop::frame::ETH_HLEN;
    if frame <= limit {
        return Ok(());
    }
    Err(UsageError(format!(
        "--mtu {mtu}: its {frame}-byte frames do not fit a local datagram here \
         ({limit} bytes, {what}); use --mtu {} or less, or --qemu-stream",
        limit.saturating_sub(caploop::frame::ETH_HLEN)
    )))
}

/// The largest datagram a local socket carries here, and where that limit
/// comes from. FreeBSD: `net.local.dgram.maxdgram` (8 KiB by default;
/// uipc_usrreq.c refuses larger with EMSGSIZE). Linux: the socket's send
/// buffer less 32 bytes (af_unix.c: `len > sk->sk_sndbuf - 32`).
fn local_dgram_limit(sock: &UnixDatagram) -> Option<(usize, &'static str)> {
    #[cfg(target_os = "freebsd")]
    {
        let _ = sock;
        let mut v: libc::c_ulong = 0;
        let mut len = std::mem::size_of::<libc::c_ulong>();
        // SAFETY: sysctlbyname writes at most `len` bytes into `v` and
        // reads the NUL-terminated name.
        let rc = unsafe {
            libc::sysctlbyname(
                c"net.local.dgram.maxdgram".as_ptr(),
                (&mut v as *mut libc::c_ulong).cast(),
                &mut len,
                std::ptr::null(),
                0,
            )
        };
        (rc == 0).then_some((v as usize, "net.local.dgram.maxdgram"))
    }
    #[cfg(not(target_os = "freebsd"))]
    {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `v`.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (rc == 0 && v > 32).then_some(((v - 32) as usize, "the socket's send buffer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mtu_whose_frames_do_not_fit_a_local_datagram_is_refused_naming_both() {
        // FreeBSD's default net.local.dgram.maxdgram.
        let limit = 8192;
        assert!(dgram_fits(8178, limit, "net.local.dgram.maxdgram").is_ok());
        let e = dgram_fits(8179, limit, "net.local.dgram.maxdgram")
            .unwrap_err()
            .0;
        assert!(e.contains("--mtu 8179") && e.contains("8193-byte"), "{e}");
        assert!(e.contains("8192 bytes, net.local.dgram.maxdgram"), "{e}");
        assert!(e.contains("--mtu 8178 or less"), "{e}");
        assert!(!e.contains('\n'));
        assert!(dgram_fits(65520, limit, "x").is_err());
    }

    #[test]
    fn linux_local_datagrams_carry_the_largest_mtu() {
        let (a, _b) = UnixDatagram::pair().unwrap();
        let (limit, _) = local_dgram_limit(&a).expect("a limit");
        assert!(dgram_fits(65520, limit, "here").is_ok(), "{limit}");
    }
}
