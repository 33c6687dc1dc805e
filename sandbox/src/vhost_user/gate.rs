//! The gate between the VMM's vhost-user socket and the `vhost` crate:
//! whole messages in, replies out, and no system call that waits for the
//! VMM.
//!
//! The crate reads a message with blocking calls and retries a short read
//! in a loop, so it must never see the VMM's socket: a VMM that sends half
//! a message, more descriptors than fit the crate's buffer, or never reads
//! its replies would hold the helper in `recvmsg` or `sendmsg` (SIGTERM
//! behind it). Instead the VMM's socket is non-blocking and read here, a
//! header and then exactly its body, with room for every descriptor a
//! message can carry; a message is checked (its body within the
//! protocol's 4 KiB, its descriptors no more than its type carries) and
//! only then passed whole, with its descriptors, over a socketpair whose
//! other end the crate reads. The crate's replies come back over the same
//! pair and wait in a bounded queue until the VMM's socket takes them.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};

/// The header's length: request, flags, body size (3 × u32, little endian).
pub const HEADER_LEN: usize = 12;
/// The largest body the protocol allows (the vhost crate's `MAX_MSG_SIZE`).
pub const MAX_BODY: usize = 0x1000;
/// The most memory regions one `SET_MEM_TABLE` may describe (QEMU's
/// `VHOST_MEMORY_BASELINE_NREGIONS`).
pub const MAX_REGIONS: usize = 8;
/// The most descriptors one `recvmsg` can bring (Linux's `SCM_MAX_FD`): the
/// control buffer has room for all of them, so none is cut off unseen.
const MAX_PASSED_FDS: usize = 253;
/// Reply bytes the VMM may leave unread before it is dropped.
pub const MAX_REPLY_BACKLOG: usize = 64 * 1024;
/// How long replies may wait for the VMM to read them.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(5);

const SET_MEM_TABLE: u32 = 5;
/// The version bits of the header's flags: always 1.
const VERSION_MASK: u32 = 0x3;

/// The request's name, for errors.
pub fn request_name(req: u32) -> &'static str {
    const NAMES: [&str; 45] = [
        "request 0",
        "GET_FEATURES",
        "SET_FEATURES",
        "SET_OWNER",
        "RESET_OWNER",
        "SET_MEM_TABLE",
        "SET_LOG_BASE",
        "SET_LOG_FD",
        "SET_VRING_NUM",
        "SET_VRING_ADDR",
        "SET_VRING_BASE",
        "GET_VRING_BASE",
        "SET_VRING_KICK",
        "SET_VRING_CALL",
        "SET_VRING_ERR",
        "GET_PROTOCOL_FEATURES",
        "SET_PROTOCOL_FEATURES",
        "GET_QUEUE_NUM",
        "SET_VRING_ENABLE",
        "SEND_RARP",
        "NET_SET_MTU",
        "SET_BACKEND_REQ_FD",
        "IOTLB_MSG",
        "SET_VRING_ENDIAN",
        "GET_CONFIG",
        "SET_CONFIG",
        "CREATE_CRYPTO_SESSION",
        "CLOSE_CRYPTO_SESSION",
        "POSTCOPY_ADVISE",
        "POSTCOPY_LISTEN",
        "POSTCOPY_END",
        "GET_INFLIGHT_FD",
        "SET_INFLIGHT_FD",
        "GPU_SET_SOCKET",
        "RESET_DEVICE",
        "VRING_KICK",
        "GET_MAX_MEM_SLOTS",
        "ADD_MEM_REG",
        "REM_MEM_REG",
        "SET_STATUS",
        "GET_STATUS",
        "GET_SHARED_OBJECT",
        "SET_DEVICE_STATE_FD",
        "CHECK_DEVICE_STATE",
        "GET_SHMEM_CONFIG",
    ];
    NAMES
        .get(req as usize)
        .copied()
        .unwrap_or("an unknown request")
}

/// How many descriptors a message of type `req` may carry: one per memory
/// region on `SET_MEM_TABLE` (`body` holds their count), one on the
/// messages that hand over a descriptor (the kick, call and error
/// eventfds among them; the spec lets `REM_MEM_REG` carry a stray one),
/// none on the rest.
pub fn fds_allowed(req: u32, body: &[u8]) -> usize {
    match req {
        SET_MEM_TABLE => body
            .get(..4)
            .map_or(0, |n| u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize)
            .min(MAX_REGIONS),
        // SET_LOG_BASE, SET_LOG_FD, SET_VRING_KICK, SET_VRING_CALL,
        // SET_VRING_ERR, SET_BACKEND_REQ_FD, SET_INFLIGHT_FD,
        // GPU_SET_SOCKET, ADD_MEM_REG, REM_MEM_REG, SET_DEVICE_STATE_FD.
        6 | 7 | 12 | 13 | 14 | 21 | 32 | 33 | 37 | 38 | 42 => 1,
        _ => 0,
    }
}

/// Why the gate ends the session: the VMM broke the protocol or stopped
/// reading. Each names the message or the amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateError {
    /// The header's version bits are not 1.
    Version { req: u32, flags: u32 },
    /// The body is longer than the protocol allows.
    BodyTooLong { req: u32, size: usize },
    /// More descriptors than the message's type carries.
    TooManyFds {
        req: u32,
        got: usize,
        allowed: usize,
    },
    /// The kernel cut descriptors off (`MSG_CTRUNC`).
    FdsCutOff { req: Option<u32> },
    /// The VMM left more replies unread than the queue holds.
    RepliesPiledUp { bytes: usize },
    /// The VMM read no reply for [`REPLY_DEADLINE`].
    RepliesUnread { bytes: usize, waited: Duration },
    /// The socket failed.
    Io(String),
}

impl fmt::Display for GateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateError::Version { req, flags } => write!(
                f,
                "{} ({req}): header flags {flags:#x}, version {} (only 1 exists)",
                request_name(*req),
                flags & VERSION_MASK
            ),
            GateError::BodyTooLong { req, size } => write!(
                f,
                "{} ({req}) says its body is {size} bytes; the protocol allows {MAX_BODY}",
                request_name(*req)
            ),
            GateError::TooManyFds { req, got, allowed } => write!(
                f,
                "{} ({req}) carried {}; it carries at most {allowed}",
                request_name(*req),
                descriptors(*got)
            ),
            GateError::FdsCutOff { req: Some(req) } => write!(
                f,
                "{} ({req}): descriptors were cut off (MSG_CTRUNC)",
                request_name(*req)
            ),
            GateError::FdsCutOff { req: None } => {
                write!(f, "a message header: descriptors were cut off (MSG_CTRUNC)")
            }
            GateError::RepliesPiledUp { bytes } => write!(
                f,
                "the VMM left {bytes} bytes of replies unread (at most {MAX_REPLY_BACKLOG})"
            ),
            GateError::RepliesUnread { bytes, waited } => write!(
                f,
                "the VMM read none of {bytes} bytes of replies for {:.1} s",
                waited.as_secs_f64()
            ),
            GateError::Io(e) => f.write_str(e),
        }
    }
}

/// "1 descriptor", "33 descriptors".
fn descriptors(n: usize) -> String {
    if n == 1 {
        "1 descriptor".into()
    } else {
        format!("{n} descriptors")
    }
}

/// What [`Gate::next_message`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A whole message went to the crate's end; its request code.
    Passed(u32),
    /// Part of a message (or nothing) is in; wait for the socket.
    Wait,
    /// The VMM closed its end.
    HungUp,
}

/// The message being read.
#[derive(Default)]
struct Partial {
    header: [u8; HEADER_LEN],
    header_got: usize,
    body: Vec<u8>,
    body_got: usize,
    fds: Vec<OwnedFd>,
}

impl Partial {
    fn req(&self) -> u32 {
        u32::from_le_bytes([
            self.header[0],
            self.header[1],
            self.header[2],
            self.header[3],
        ])
    }
    fn flags(&self) -> u32 {
        u32::from_le_bytes([
            self.header[4],
            self.header[5],
            self.header[6],
            self.header[7],
        ])
    }
    fn size(&self) -> usize {
        u32::from_le_bytes([
            self.header[8],
            self.header[9],
            self.header[10],
            self.header[11],
        ]) as usize
    }
}

/// See the module docs.
pub struct Gate {
    /// The VMM's socket, non-blocking.
    vmm: UnixStream,
    /// Our end of the pair whose other end the crate reads.
    inner: UnixStream,
    partial: Partial,
    replies: VecDeque<u8>,
    /// Since when replies have waited, with nothing read by the VMM.
    waiting_since: Option<Instant>,
}

impl Gate {
    /// A gate on `vmm` (made non-blocking), and the end the crate reads.
    pub fn new(vmm: UnixStream) -> io::Result<(Gate, UnixStream)> {
        vmm.set_nonblocking(true)?;
        let (inner, crate_end) = UnixStream::pair()?;
        inner.set_nonblocking(true)?;
        Ok((
            Gate {
                vmm,
                inner,
                partial: Partial::default(),
                replies: VecDeque::new(),
                waiting_since: None,
            },
            crate_end,
        ))
    }

    /// The VMM's socket (read and written with `recvmsg` and `send`).
    pub fn vmm_fd(&self) -> RawFd {
        self.vmm.as_raw_fd()
    }

    /// Our end of the inner pair (`sendmsg` with descriptors, `recv`).
    pub fn inner_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }

    /// Reads what the socket has toward the next message, without waiting;
    /// once it is whole and checked, passes it to the crate's end.
    pub fn next_message(&mut self) -> Result<Step, GateError> {
        let p = &mut self.partial;
        while p.header_got < HEADER_LEN {
            let (n, cut) = recv_some(&self.vmm, &mut p.header[p.header_got..], &mut p.fds)?;
            if cut {
                return Err(GateError::FdsCutOff { req: None });
            }
            match n {
                None => return Ok(Step::Wait),
                Some(0) => return Ok(Step::HungUp),
                Some(n) => p.header_got += n,
            }
        }
        let (req, flags, size) = (p.req(), p.flags(), p.size());
        if flags & VERSION_MASK != 1 {
            return Err(GateError::Version { req, flags });
        }
        if size > MAX_BODY {
            return Err(GateError::BodyTooLong { req, size });
        }
        if p.body.len() != size {
            p.body.resize(size, 0);
        }
        while p.body_got < size {
            let (n, cut) = recv_some(&self.vmm, &mut p.body[p.body_got..], &mut p.fds)?;
            if cut {
                return Err(GateError::FdsCutOff { req: Some(req) });
            }
            match n {
                None => return Ok(Step::Wait),
                Some(0) => return Ok(Step::HungUp),
                Some(n) => p.body_got += n,
            }
        }
        let allowed = fds_allowed(req, &p.body);
        if p.fds.len() > allowed {
            return Err(GateError::TooManyFds {
                req,
                got: p.fds.len(),
                allowed,
            });
        }
        let msg = std::mem::take(&mut self.partial);
        let raw: Vec<RawFd> = msg.fds.iter().map(AsRawFd::as_raw_fd).collect();
        let iov = [IoSlice::new(&msg.header), IoSlice::new(&msg.body)];
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
        // The crate has read every earlier message whole, so the pair is
        // empty and takes these 4 KiB at once; our copies of the
        // descriptors close when `msg` drops.
        let sent = socket::sendmsg::<()>(
            self.inner.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| GateError::Io(format!("passing {} on: {e}", request_name(req))))?;
        if sent != HEADER_LEN + msg.body.len() {
            return Err(GateError::Io(format!(
                "passing {} on: {sent} of {} bytes",
                request_name(req),
                HEADER_LEN + msg.body.len()
            )));
        }
        Ok(Step::Passed(req))
    }

    /// Takes what the crate wrote back (replies) into the queue, then
    /// writes what the VMM's socket takes.
    pub fn take_replies(&mut self) -> Result<(), GateError> {
        let mut buf = [0u8; 4096];
        loop {
            match socket::recv(self.inner.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) | Err(Errno::EAGAIN) => break,
                Ok(n) => self.replies.extend(&buf[..n]),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(GateError::Io(format!("reading the replies: {e}"))),
            }
        }
        if self.replies.len() > MAX_REPLY_BACKLOG {
            return Err(GateError::RepliesPiledUp {
                bytes: self.replies.len(),
            });
        }
        self.flush()
            .map_err(|e| GateError::Io(format!("sending a reply: {e}")))
    }

    /// Writes queued replies until the socket is full. Once the VMM is
    /// gone they are dropped (reading the socket finds the hang-up).
    pub fn flush(&mut self) -> io::Result<()> {
        while !self.replies.is_empty() {
            let (a, _) = self.replies.as_slices();
            match socket::send(
                self.vmm.as_raw_fd(),
                a,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => {
                    self.replies.drain(..n);
                    self.waiting_since = None;
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                // The VMM is gone: reading finds its hang-up.
                Err(Errno::EPIPE | Errno::ECONNRESET) => self.replies.clear(),
                Err(e) => return Err(e.into()),
            }
        }
        if self.replies.is_empty() {
            self.waiting_since = None;
        } else if self.waiting_since.is_none() {
            self.waiting_since = Some(Instant::now());
        }
        Ok(())
    }

    /// Whether replies wait for the VMM.
    pub fn pending(&self) -> bool {
        !self.replies.is_empty()
    }

    /// The error once replies have waited past the deadline at `now`.
    pub fn overdue(&self, now: Instant) -> Option<GateError> {
        let waited = now.saturating_duration_since(self.waiting_since?);
        (waited >= REPLY_DEADLINE).then_some(GateError::RepliesUnread {
            bytes: self.replies.len(),
            waited,
        })
    }
}

/// One non-blocking `recvmsg` into `buf`, descriptors appended to `fds`:
/// `None` when nothing is there, and whether descriptors were cut off.
fn recv_some(
    sock: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<(Option<usize>, bool), GateError> {
    let mut space = nix::cmsg_space!([RawFd; MAX_PASSED_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let msg = loop {
        match socket::recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags) {
            Ok(m) => break m,
            Err(Errno::EAGAIN) => return Ok((None, false)),
            Err(Errno::EINTR) => {}
            Err(Errno::ECONNRESET) => return Ok((Some(0), false)),
            Err(e) => return Err(GateError::Io(format!("reading the socket: {e}"))),
        }
    };
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(got) = c {
                // SAFETY: the kernel just installed these descriptors for
                // us; nothing else owns them.
                fds.extend(
                    got.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
    }
    let cut = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    Ok((Some(msg.bytes), cut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn header(req: u32, size: u32) -> Vec<u8> {
        [req.to_le_bytes(), 1u32.to_le_bytes(), size.to_le_bytes()].concat()
    }

    fn eventfd() -> OwnedFd {
        // SAFETY: eventfd makes a descriptor owned here.
        unsafe { OwnedFd::from_raw_fd(libc::eventfd(0, libc::EFD_CLOEXEC)) }
    }

    fn send_fds(s: &UnixStream, bytes: &[u8], fds: &[RawFd]) {
        let iov = [IoSlice::new(bytes)];
        let c = [ControlMessage::ScmRights(fds)];
        socket::sendmsg::<()>(s.as_raw_fd(), &iov, &c, MsgFlags::empty(), None).unwrap();
    }

    #[test]
    fn a_message_in_pieces_is_passed_whole_once_complete() {
        let (mut vmm, ours) = UnixStream::pair().unwrap();
        let (mut gate, crate_end) = Gate::new(ours).unwrap();
        let msg = [header(2, 8), 7u64.to_le_bytes().to_vec()].concat();
        assert_eq!(gate.next_message(), Ok(Step::Wait));
        for piece in msg.chunks(5) {
            vmm.write_all(piece).unwrap();
            let step = gate.next_message().unwrap();
            if piece.as_ptr_range().end == msg.as_ptr_range().end {
                assert_eq!(step, Step::Passed(2));
            } else {
                assert_eq!(step, Step::Wait);
            }
        }
        let mut got = vec![0u8; msg.len()];
        std::io::Read::read_exact(&mut &crate_end, &mut got).unwrap();
        assert_eq!(got, msg);
        drop(vmm);
        assert_eq!(gate.next_message(), Ok(Step::HungUp));
    }

    #[test]
    fn descriptors_beyond_what_a_message_carries_end_it() {
        let (vmm, ours) = UnixStream::pair().unwrap();
        let (mut gate, _crate_end) = Gate::new(ours).unwrap();
        let evs: Vec<OwnedFd> = (0..40).map(|_| eventfd()).collect();
        let raw: Vec<RawFd> = evs.iter().map(AsRawFd::as_raw_fd).collect();
        // 40 on a kick (one allowed).
        send_fds(
            &vmm,
            &[header(12, 8), 0u64.to_le_bytes().to_vec()].concat(),
            &raw,
        );
        let e = gate.next_message().unwrap_err();
        assert_eq!(
            e,
            GateError::TooManyFds {
                req: 12,
                got: 40,
                allowed: 1
            }
        );
        assert!(e.to_string().contains("SET_VRING_KICK"), "{e}");
    }

    #[test]
    fn a_memory_table_carries_one_descriptor_per_region() {
        let (vmm, ours) = UnixStream::pair().unwrap();
        let (mut gate, _crate_end) = Gate::new(ours).unwrap();
        let evs: Vec<OwnedFd> = (0..3).map(|_| eventfd()).collect();
        let raw: Vec<RawFd> = evs.iter().map(AsRawFd::as_raw_fd).collect();
        let mut body = 2u32.to_le_bytes().to_vec();
        body.resize(8 + 2 * 32, 0);
        let msg = [header(5, body.len() as u32), body].concat();
        send_fds(&vmm, &msg, &raw[..2]);
        assert_eq!(gate.next_message(), Ok(Step::Passed(5)));
        send_fds(&vmm, &msg, &raw);
        assert!(matches!(
            gate.next_message(),
            Err(GateError::TooManyFds {
                req: 5,
                got: 3,
                allowed: 2
            })
        ));
    }

    #[test]
    fn a_body_over_4_kib_or_a_bad_version_is_refused_before_it_is_read() {
        let (mut vmm, ours) = UnixStream::pair().unwrap();
        let (mut gate, _c) = Gate::new(ours).unwrap();
        vmm.write_all(&header(5, 1 << 20)).unwrap();
        assert_eq!(
            gate.next_message(),
            Err(GateError::BodyTooLong {
                req: 5,
                size: 1 << 20
            })
        );
        let (mut vmm, ours) = UnixStream::pair().unwrap();
        let (mut gate, _c) = Gate::new(ours).unwrap();
        vmm.write_all(&[1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0])
            .unwrap();
        assert!(matches!(
            gate.next_message(),
            Err(GateError::Version { req: 1, flags: 2 })
        ));
    }

    #[test]
    fn replies_the_vmm_does_not_read_are_queued_then_overdue() {
        let (vmm, ours) = UnixStream::pair().unwrap();
        let (mut gate, mut crate_end) = Gate::new(ours).unwrap();
        // Fill the VMM's receive buffer, then one more reply.
        let chunk = vec![0u8; 4096];
        let mut queued = 0;
        while !gate.pending() {
            crate_end.write_all(&chunk).unwrap();
            gate.take_replies().unwrap();
            queued += chunk.len();
            assert!(queued < 16 << 20, "the socket never filled");
        }
        assert!(gate.overdue(Instant::now()).is_none());
        let later = Instant::now() + REPLY_DEADLINE;
        let e = gate.overdue(later).expect("overdue");
        assert!(e.to_string().contains("read none"), "{e}");
        // Reading makes room: the queue drains, nothing is overdue.
        vmm.set_nonblocking(true).unwrap();
        let mut sink = vec![0u8; 1 << 16];
        while std::io::Read::read(&mut &vmm, &mut sink).is_ok() {}
        gate.flush().unwrap();
        assert!(!gate.pending());
        assert!(gate.overdue(later).is_none());
        // Past the backlog bound, the session ends.
        let big = vec![0u8; MAX_REPLY_BACKLOG];
        let mut res = Ok(());
        for _ in 0..1024 {
            crate_end.write_all(&big[..4096]).unwrap();
            res = gate.take_replies();
            if res.is_err() {
                break;
            }
        }
        assert!(
            matches!(res, Err(GateError::RepliesPiledUp { .. })),
            "{res:?}"
        );
    }
}
