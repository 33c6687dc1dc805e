//! QEMU's `-netdev stream,server=off,addr.type=unix,addr.path=PATH` peer
//! (the protocol passt speaks): the helper listens on PATH, QEMU connects,
//! and every frame in either direction is preceded by its length as a
//! 4-byte big-endian integer.
//!
//! The helper accepts QEMU's one connection and removes the socket file
//! before entering the sandbox, so the sandboxed loop holds no listener and
//! leaves nothing on the filesystem.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

use caploop::wire::stream::{Backlog, Decoder, DEFAULT_MAX_FRAME};

use crate::record::{RecordRx, RecordTx};
use crate::serve::{self, LinkCounters, Outcome, Rx, ServeError, Session, Tx};

/// Bytes queued toward QEMU before frames are refused (QEMU reads its
/// socket from its own loop; a stalled guest must not grow the helper
/// without bound).
const BACKLOG_CAP: usize = 16 << 20;

/// Listens on `path`, replacing a stale socket file but nothing else.
pub fn listen(path: &Path) -> Result<UnixListener, ServeError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| ServeError::Link {
                what: format!("removing the stale socket {}", path.display()),
                source: e,
            })?;
        }
        Ok(_) => {
            return Err(ServeError::Protocol(format!(
                "--qemu-stream {}: exists and is not a socket",
                path.display()
            )))
        }
        Err(_) => {}
    }
    UnixListener::bind(path).map_err(|e| ServeError::Link {
        what: format!("listening on {}", path.display()),
        source: e,
    })
}

/// Waits for QEMU's connection, then removes the socket file.
pub fn accept(listener: UnixListener, path: &Path) -> Result<OwnedFd, ServeError> {
    let (conn, _) = listener.accept().map_err(|e| ServeError::Link {
        what: format!("accepting on {}", path.display()),
        source: e,
    })?;
    drop(listener);
    if let Err(e) = std::fs::remove_file(path) {
        log::warn!("removing {}: {e}", path.display());
    }
    conn.set_nonblocking(true).map_err(|e| ServeError::Link {
        what: "making QEMU's connection non-blocking".into(),
        source: e,
    })?;
    Ok(conn.into())
}

/// Binds the datagram socket for `-netdev dgram` and waits for QEMU's first
/// frame, whose sender address it connects to (left queued, so the frame
/// is served). The socket file stays while QEMU sends to it; the helper
/// cannot remove it from inside the sandbox.
pub fn dgram(path: &Path) -> Result<OwnedFd, ServeError> {
    use std::os::unix::net::UnixDatagram;
    let link = |what: String| move |e| ServeError::Link { what, source: e };
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(ServeError::Protocol(format!(
                "--qemu-dgram {}: exists and is not a socket",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(link(format!("removing {}", path.display())))?;
    }
    let sock = UnixDatagram::bind(path).map_err(link(format!("binding {}", path.display())))?;
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
    let from = msg.address;
    let Some(peer) = from.as_ref().and_then(|a| a.path()).map(Path::to_path_buf) else {
        return Err(ServeError::Protocol(format!(
            "--qemu-dgram {}: the first datagram came from an unnamed socket; \
             give QEMU local.type=unix,local.path=...",
            path.display()
        )));
    };
    sock.connect(&peer)
        .map_err(link(format!("connecting to QEMU at {}", peer.display())))?;
    sock.set_nonblocking(true)
        .map_err(link("making the datagram socket non-blocking".into()))?;
    Ok(sock.into())
}

/// Serves QEMU's `-netdev dgram`: one frame per datagram.
pub fn serve_dgram(sock: OwnedFd, session: Session) -> Result<Outcome, ServeError> {
    let fd = sock.as_raw_fd();
    let (outcome, ..) = serve::run(
        session,
        sock,
        RecordRx::new(fd, "QEMU"),
        RecordTx::new(fd, DEFAULT_MAX_FRAME, "QEMU"),
    )?;
    Ok(outcome)
}

/// Serves QEMU on an accepted connection.
pub fn serve(conn: OwnedFd, session: Session) -> Result<Outcome, ServeError> {
    let fd = conn.as_raw_fd();
    let (outcome, ..) = serve::run(
        session,
        conn,
        StreamRx {
            fd,
            decoder: Decoder::new(DEFAULT_MAX_FRAME),
        },
        StreamTx {
            fd,
            backlog: Backlog::new(BACKLOG_CAP),
            counters: LinkCounters::default(),
        },
    )?;
    Ok(outcome)
}

/// Reads length-prefixed frames.
pub struct StreamRx {
    fd: RawFd,
    decoder: Decoder,
}

impl Rx for StreamRx {
    fn pull(&mut self, _hangup: bool, deliver: &mut dyn FnMut(&[u8])) -> Result<bool, ServeError> {
        for _ in 0..16 {
            let room = self.decoder.read_buf();
            // SAFETY: read writes at most room.len() bytes into room.
            let n = unsafe { libc::read(self.fd, room.as_mut_ptr().cast(), room.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(true),
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::ConnectionReset => Ok(false),
                    _ => Err(ServeError::Link {
                        what: "reading from QEMU".into(),
                        source: e,
                    }),
                };
            }
            if n == 0 {
                return Ok(false);
            }
            self.decoder.filled(n as usize);
            while let Some(frame) = self
                .decoder
                .next_frame()
                .map_err(|e| ServeError::Protocol(format!("QEMU stream: {e}")))?
            {
                deliver(frame);
            }
        }
        Ok(true)
    }
}

/// Writes length-prefixed frames, keeping what the socket cannot take.
pub struct StreamTx {
    fd: RawFd,
    backlog: Backlog,
    counters: LinkCounters,
}

impl Tx for StreamTx {
    fn push(&mut self, frame: &[u8]) {
        // Queued, not written: the loop flushes once per round, so a burst
        // of frames from libslirp costs one write, not one per frame.
        match self.backlog.push(frame) {
            Ok(()) => {
                self.counters.frames_out += 1;
                self.counters.bytes_out += frame.len() as u64;
            }
            Err(e) => {
                log::debug!("QEMU is not reading: {e}");
                self.counters.dropped += 1;
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        while !self.backlog.is_empty() {
            let pending = self.backlog.pending();
            // SAFETY: write reads pending.len() bytes from a live slice.
            let n = unsafe { libc::write(self.fd, pending.as_ptr().cast(), pending.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(()),
                    _ => return Err(e),
                }
            }
            self.backlog.consume(n as usize);
        }
        Ok(())
    }

    fn pending(&self) -> bool {
        !self.backlog.is_empty()
    }

    fn counters(&self) -> LinkCounters {
        self.counters
    }
}
