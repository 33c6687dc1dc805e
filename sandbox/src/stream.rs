//! QEMU's `-netdev stream` framing on a connected socket: every frame in
//! either direction is preceded by its length as a 4-byte big-endian
//! integer (the protocol passt speaks). What QEMU cannot take yet is kept
//! in a bounded backlog, and a round's frames go out in one write.

use std::io;
use std::os::fd::RawFd;

use caploop::wire::stream::{Backlog, Decoder};

use crate::error::ServeError;
use crate::link::{peer_gone, Arrival, LinkCounters, Rx, Tx};

/// Bytes queued toward QEMU before frames are refused (QEMU reads its
/// socket from its own loop; a stalled guest must not grow the helper
/// without bound).
pub const BACKLOG_CAP: usize = 16 << 20;

/// Reads length-prefixed frames.
pub struct StreamRx {
    fd: RawFd,
    decoder: Decoder,
}

impl StreamRx {
    /// A reader on the (non-blocking) socket `fd` accepting frames of up
    /// to `max_frame` bytes.
    pub fn new(fd: RawFd, max_frame: usize) -> StreamRx {
        StreamRx {
            fd,
            decoder: Decoder::new(max_frame),
        }
    }
}

impl Rx for StreamRx {
    fn pull(
        &mut self,
        _hangup: bool,
        deliver: &mut dyn FnMut(Arrival<'_>),
    ) -> Result<bool, ServeError> {
        for _ in 0..16 {
            let room = self.decoder.read_buf();
            // SAFETY: read writes at most room.len() bytes into room.
            let n = unsafe { libc::read(self.fd, room.as_mut_ptr().cast(), room.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(true),
                    io::ErrorKind::Interrupted => continue,
                    _ if peer_gone(&e) => Ok(false),
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
            while let Some(frame) = self.decoder.next_frame().map_err(ServeError::Stream)? {
                deliver(Arrival::Frame(frame));
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

impl StreamTx {
    /// A writer on the (non-blocking) socket `fd`.
    pub fn new(fd: RawFd) -> StreamTx {
        StreamTx {
            fd,
            backlog: Backlog::new(BACKLOG_CAP),
            counters: LinkCounters::default(),
        }
    }
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
