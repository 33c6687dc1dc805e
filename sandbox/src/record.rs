//! Links that carry one Ethernet frame per record: bhyve's SOCK_SEQPACKET
//! socket, QEMU's `-netdev dgram` (a connected unix datagram socket) and a
//! tap device (one frame per `read`/`write`), with or without a virtio-net
//! header in front of each (a tap with offloads: checksums finished and
//! TCP super-segments told apart on the way in, an empty header on the way
//! out).

use std::io;
use std::os::fd::RawFd;

use caploop::frame::queue::{FrameQueue, Limits, WhenFull};
use caploop::net::offload::{self, Coalescer, VNET_HDR_SIZE};
use caploop::net::MAX_FRAME_LEN;

use crate::error::ServeError;
use crate::link::{peer_gone, Arrival, LinkCounters, Rx, Tx};

/// Frames queued toward the peer before the oldest are dropped (it reads
/// from its own event loop; a stalled guest must not make the helper grow
/// without bound).
const MAX_QUEUED: usize = 1024;

/// Frames read per round: a bounded batch keeps one busy guest from
/// starving libslirp's sockets.
const BATCH: usize = 64;

/// How records are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// A SOCK_SEQPACKET socket (bhyve): `recv`/`send`; an empty record is
    /// the end of the stream. bhyve never sends one, and the loop cannot
    /// tell the two apart on FreeBSD: kqueue does report the peer's close
    /// (`EV_EOF` from `filt_soread`), but polling 3.11 drops `EV_EOF` from
    /// read events, so all the loop sees is a readable socket whose `recv`
    /// gives 0 bytes, as an empty record would.
    Seqpacket,
    /// A connected datagram socket (QEMU's dgram): `recv`/`send`; an empty
    /// datagram is skipped (a datagram peer never hangs up).
    Datagram,
    /// A tap device: `read`/`write`, one frame each.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // slirp4netns only
    Tap,
    /// A tap opened with `IFF_VNET_HDR`: a 10-byte virtio-net header before
    /// every frame, each way.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // slirp4netns only
    TapVnet,
}

/// Reads one frame per record.
pub struct RecordRx {
    fd: RawFd,
    medium: Medium,
    buf: Vec<u8>,
    peer: &'static str,
}

impl RecordRx {
    /// A receiver on the (non-blocking) descriptor `fd`, from `peer` (for
    /// logs).
    pub fn new(fd: RawFd, medium: Medium, peer: &'static str) -> RecordRx {
        RecordRx {
            fd,
            medium,
            buf: vec![0u8; MAX_FRAME_LEN],
            peer,
        }
    }

    fn read(&mut self) -> isize {
        match self.medium {
            // MSG_TRUNC makes Linux return a record's full length, so one
            // longer than the buffer is caught. FreeBSD ignores MSG_TRUNC
            // on SEQPACKET sockets (bhyve's own backend says so) and
            // returns what fit: the check never fires there, which is
            // harmless since net.local.seqpacket.maxseqpacket (8 KiB) is
            // far below the buffer.
            // SAFETY: recv writes at most buf.len() bytes into buf.
            Medium::Seqpacket | Medium::Datagram => unsafe {
                libc::recv(
                    self.fd,
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            },
            // SAFETY: read writes at most buf.len() bytes into buf.
            Medium::Tap | Medium::TapVnet => unsafe {
                libc::read(self.fd, self.buf.as_mut_ptr().cast(), self.buf.len())
            },
        }
    }
}

impl Rx for RecordRx {
    fn pull(
        &mut self,
        hangup: bool,
        deliver: &mut dyn FnMut(Arrival<'_>),
    ) -> Result<bool, ServeError> {
        for _ in 0..BATCH {
            let n = self.read();
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(!hangup),
                    io::ErrorKind::Interrupted => continue,
                    // A peer gone, or a tap whose namespace went.
                    _ if peer_gone(&e) => Ok(false),
                    _ => Err(ServeError::Link {
                        what: format!("reading a frame from {}", self.peer),
                        source: e,
                    }),
                };
            }
            let n = n as usize;
            if n == 0 {
                // End of stream on a seqpacket socket; an empty datagram
                // (or, with a hangup, the end) otherwise.
                if hangup || self.medium == Medium::Seqpacket {
                    return Ok(false);
                }
                continue;
            }
            if n > self.buf.len() {
                log::debug!(
                    "dropping a {n}-byte record from {}: larger than any frame",
                    self.peer
                );
                continue;
            }
            if self.medium != Medium::TapVnet {
                deliver(Arrival::Frame(&self.buf[..n]));
                continue;
            }
            match offload::unwrap_record_lazily(&mut self.buf[..n], VNET_HDR_SIZE) {
                Ok((kind, partial, frame)) => deliver(Arrival::offloaded(kind, partial, frame)),
                Err(e) => log::debug!("dropping a {n}-byte frame from {}: {e}", self.peer),
            }
        }
        Ok(true)
    }
}

/// Sends one frame per record, queueing what the link cannot take.
pub struct RecordTx {
    max_record: usize,
    out: Out,
    /// For `TapVnet`: merges a round's TCP segments into GSO frames.
    gso: Coalescer,
}

/// The writing end: records go out at once while nothing is queued.
struct Out {
    sender: Sender,
    peer: &'static str,
    queue: FrameQueue,
}

/// Writes one record to the descriptor, and counts it.
struct Sender {
    fd: RawFd,
    medium: Medium,
    counters: LinkCounters,
    gone: bool,
}

impl RecordTx {
    /// A sender on the (non-blocking) descriptor `fd` whose peer reads
    /// records of at most `max_record` bytes.
    pub fn new(fd: RawFd, medium: Medium, max_record: usize, peer: &'static str) -> RecordTx {
        RecordTx {
            max_record,
            out: Out {
                sender: Sender {
                    fd,
                    medium,
                    counters: LinkCounters::default(),
                    gone: false,
                },
                peer,
                queue: FrameQueue::new(Limits {
                    frames: MAX_QUEUED,
                    bytes: usize::MAX,
                    when_full: WhenFull::DropOldest,
                }),
            },
            gso: Coalescer::default(),
        }
    }
}

impl Sender {
    /// Writes one record, given as its parts (for `TapVnet`, the
    /// virtio-net header, then the frame: one `writev`, no copy).
    fn write(&self, parts: &[&[u8]]) -> io::Result<()> {
        let n = match (self.medium, parts) {
            // SAFETY: send reads rec.len() bytes from rec.
            (Medium::Seqpacket | Medium::Datagram, [rec]) => unsafe {
                libc::send(
                    self.fd,
                    rec.as_ptr().cast(),
                    rec.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | libc::MSG_EOR,
                )
            },
            // SAFETY: write reads rec.len() bytes from rec.
            (Medium::Tap | Medium::TapVnet, [rec]) => unsafe {
                libc::write(self.fd, rec.as_ptr().cast(), rec.len())
            },
            (Medium::Tap | Medium::TapVnet, [a, b]) => crate::link::writev2(self.fd, a, b),
            // A record link's records are one part; a tap's at most two.
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Writes one record: `Ok(false)` if the link cannot take it now.
    fn send(&mut self, parts: &[&[u8]]) -> io::Result<bool> {
        loop {
            let Err(e) = self.write(parts) else {
                let header = match self.medium {
                    Medium::TapVnet => VNET_HDR_SIZE,
                    _ => 0,
                };
                let len: usize = parts.iter().map(|p| p.len()).sum();
                self.counters.frames_out += 1;
                self.counters.bytes_out += (len - header) as u64;
                return Ok(true);
            };
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(false),
                _ => {
                    // A datagram peer that went away shows only here.
                    if peer_gone(&e) {
                        self.gone = true;
                    }
                    return Err(e);
                }
            }
        }
    }
}

impl Out {
    /// Sends a record (its `parts`) at once if nothing is queued before
    /// it, else queues it (dropping the oldest beyond [`MAX_QUEUED`]).
    fn offer(&mut self, parts: &[&[u8]]) {
        if self.queue.is_empty() {
            match self.sender.send(parts) {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    log::debug!("sending a frame to {}: {e}", self.peer);
                    self.sender.counters.dropped += 1;
                    return;
                }
            }
        }
        self.queue.push(parts);
    }

    /// Writes queued records until the link is full.
    fn flush(&mut self) -> io::Result<()> {
        while let Some(rec) = self.queue.front() {
            if !self.sender.send(&[rec])? {
                break;
            }
            self.queue.pop_front();
        }
        Ok(())
    }

    fn counters(&self) -> LinkCounters {
        let mut c = self.sender.counters;
        c.dropped += self.queue.dropped();
        c
    }
}

impl Tx for RecordTx {
    fn push(&mut self, frame: &[u8]) {
        if frame.len() > self.max_record {
            self.out.sender.counters.dropped += 1;
            return;
        }
        if self.out.sender.medium == Medium::TapVnet {
            // A TCP segment may wait in the coalescer for the next one, or
            // for the flush at the end of the round; the rest goes out now.
            let out = &mut self.out;
            self.gso.push(frame, &mut |hdr, f| out.offer(&[hdr, f]));
            return;
        }
        self.out.offer(&[frame]);
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.out.sender.medium == Medium::TapVnet {
            let out = &mut self.out;
            self.gso.finish(&mut |hdr, f| out.offer(&[hdr, f]));
            self.out.sender.counters.merged = self.gso.merged();
        }
        self.out.flush()
    }

    fn pending(&self) -> bool {
        !self.out.queue.is_empty()
    }

    fn offloads(&self) -> (bool, bool) {
        let vnet = self.out.sender.medium == Medium::TapVnet;
        (vnet, vnet)
    }

    fn push_offloaded(&mut self, hdr: &[u8], frame: &[u8]) {
        // Segments the coalescer holds go first, in order; then the
        // super-segment behind its header, in one writev.
        let out = &mut self.out;
        self.gso.finish(&mut |h, f| out.offer(&[h, f]));
        self.out.offer(&[hdr, frame]);
    }

    fn full(&self) -> bool {
        self.pending()
    }

    fn gone(&self) -> bool {
        self.out.sender.gone
    }

    fn counters(&self) -> LinkCounters {
        self.out.counters()
    }
}
