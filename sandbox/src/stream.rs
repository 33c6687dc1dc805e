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
    /// The socket refused bytes since the backlog was last empty.
    blocked: bool,
}

impl StreamTx {
    /// A writer on the (non-blocking) socket `fd`.
    pub fn new(fd: RawFd) -> StreamTx {
        StreamTx {
            fd,
            backlog: Backlog::new(BACKLOG_CAP),
            counters: LinkCounters::default(),
            blocked: false,
        }
    }
}

impl Tx for StreamTx {
    fn push(&mut self, frame: &[u8]) {
        // Queued, not written: the loop flushes once per round, so a burst
        // of frames costs one write, not one per frame. Writing the own
        // path's large segments one by one as they were made saved a copy
        // but cost more than it saved: QEMU woke and handed a TCG guest
        // each one on its own (vm_net.sh at MTU 65520: 0.86x the
        // throughput, twice the guest's interrupts per GB), and even a
        // kernel peer took them slower (qemu_stream.sh: 0.87x).
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
                    io::ErrorKind::WouldBlock => {
                        self.blocked = true;
                        return Ok(());
                    }
                    _ => return Err(e),
                }
            }
            self.backlog.consume(n as usize);
        }
        self.blocked = false;
        Ok(())
    }

    fn pending(&self) -> bool {
        !self.backlog.is_empty()
    }

    fn full(&self) -> bool {
        self.blocked && self.pending()
    }

    fn counters(&self) -> LinkCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// Frames wait for the round's write; once the socket is full the
    /// rest waits (the link says so), and a flush after the peer read
    /// sends it all, each frame whole and in order.
    #[test]
    fn frames_wait_for_the_flush_and_a_full_socket_is_reported_then_drained() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut tx = StreamTx::new(ours.as_raw_fd());
        let frames: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 60_000]).collect();
        let mut pushed = 0;
        for f in &frames {
            tx.push(f);
            assert!(tx.pending(), "a frame went out before the flush");
            tx.flush().unwrap();
            pushed += 1;
            if tx.full() {
                break;
            }
        }
        assert!(tx.full(), "{pushed} frames of 60,000 bytes fit the socket");
        assert!(pushed > 1, "the first flush left its frame waiting");
        for f in &frames[pushed..] {
            tx.push(f);
        }
        let mut wire = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        theirs
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let want: usize = frames.iter().map(|f| f.len() + 4).sum();
        while wire.len() < want {
            tx.flush().unwrap();
            let n = theirs.read(&mut buf).unwrap();
            wire.extend_from_slice(&buf[..n]);
        }
        tx.flush().unwrap();
        assert!(!tx.full() && !tx.pending());
        let mut d = Decoder::new(65_536);
        let mut at = 0;
        let mut got = Vec::new();
        while at < wire.len() {
            let room = d.read_buf();
            let k = room.len().min(wire.len() - at);
            room[..k].copy_from_slice(&wire[at..at + k]);
            d.filled(k);
            at += k;
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f.to_vec());
            }
        }
        assert_eq!(got.len(), frames.len());
        assert!(got == frames, "frames changed on the way");
        assert_eq!(tx.counters().frames_out, frames.len() as u64);
    }
}
